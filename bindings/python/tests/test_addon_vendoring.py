"""The example add-on's wheel pick for a legacy add-on folder (examples/blender_addon/
vendoring.py): a folder holding every platform's wheel yields this platform's, and none
when no wheel fits."""

from __future__ import annotations

import importlib.util
import os
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location(
    "addon_vendoring", ROOT / "examples" / "blender_addon" / "vendoring.py"
)
assert _spec is not None and _spec.loader is not None
vendoring = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vendoring)

WHEELS = [
    "backend_pool-0.1.0-cp310-abi3-macosx_10_12_x86_64.whl",
    "backend_pool-0.1.0-cp310-abi3-macosx_11_0_arm64.whl",
    "backend_pool-0.1.0-cp310-abi3-manylinux_2_28_x86_64.whl",
    "backend_pool-0.1.0-cp310-abi3-win_amd64.whl",
]


@pytest.mark.parametrize(
    ("system", "machine", "expected"),
    [
        ("linux", "x86_64", "manylinux_2_28_x86_64"),
        ("win32", "AMD64", "win_amd64"),
        ("darwin", "arm64", "macosx_11_0_arm64"),
        ("darwin", "x86_64", "macosx_10_12_x86_64"),
    ],
)
def test_each_platform_gets_its_own_wheel_from_a_mixed_folder(
    system: str, machine: str, expected: str
) -> None:
    for order in (WHEELS, WHEELS[::-1]):
        picked = vendoring.wheel_for_platform([f"wheels/{w}" for w in order], system, machine)
        assert picked is not None and picked.endswith(f"-{expected}.whl"), (system, picked)


@pytest.mark.parametrize(
    ("system", "machine"), [("linux", "aarch64"), ("win32", "ARM64"), ("freebsd14", "amd64")]
)
def test_no_wheel_fits_an_unbuilt_platform(system: str, machine: str) -> None:
    assert vendoring.wheel_for_platform(WHEELS, system, machine) is None


def test_a_universal2_wheel_fits_both_macs_and_a_newer_version_wins() -> None:
    wheels = [
        "backend_pool-0.1.0-cp310-abi3-macosx_10_12_universal2.whl",
        "backend_pool-0.2.0-cp310-abi3-macosx_10_12_x86_64.macosx_11_0_arm64.whl",
    ]
    assert vendoring.wheel_for_platform(wheels, "darwin", "arm64") == wheels[1]
    assert vendoring.wheel_for_platform(wheels[:1], "darwin", "x86_64") == wheels[0]


def test_the_legacy_folder_unpacks_this_platforms_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder with a wheel for this platform and one for another: the right one is
    unpacked into _vendor/ (each fake wheel's module says which it is)."""
    import platform
    import sys

    this = vendoring.wheel_for_platform(WHEELS, sys.platform, platform.machine())
    if this is None:
        pytest.skip(f"no wheel is built for {sys.platform}/{platform.machine()}")
    (tmp_path / "wheels").mkdir()
    for name in WHEELS:
        with zipfile.ZipFile(tmp_path / "wheels" / name, "w") as z:
            z.writestr("backend_pool_vendoring_probe/__init__.py", f"WHEEL = {name!r}\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = vendoring.import_backend_pool(str(tmp_path), module="backend_pool_vendoring_probe")
    assert module.WHEEL == os.path.basename(this)
    assert (tmp_path / "_vendor" / "backend_pool_vendoring_probe").is_dir()
    sys.modules.pop("backend_pool_vendoring_probe", None)
