"""Where ``backend_pool`` comes from: an extension's bundled wheel or a wheel installed into
Blender's ``scripts/modules`` (then it simply imports); or, for a legacy add-on folder that
carries every platform's wheel in ``wheels/``, the one wheel built for this interpreter's
platform, unpacked into ``_vendor/`` next to the add-on. No ``bpy`` here: the test suite
imports this file on its own."""

from __future__ import annotations

import glob
import importlib
import os
import platform
import sys
import zipfile
from types import ModuleType

# A wheel file name's last field is its platform tag, possibly compressed (`a.b`).
_SYSTEM_PREFIXES = {"win32": ("win",), "darwin": ("macosx",)}
_LINUX_PREFIXES = ("manylinux", "linux")
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64"}


def wheel_for_platform(wheels: list[str], system: str, machine: str) -> str | None:
    """The newest (by name) of ``wheels`` whose platform tag fits ``system`` (``sys.platform``)
    and ``machine`` (``platform.machine()``), or None. A name sort alone would pick any
    platform's wheel from a folder that holds them all."""
    machine = machine.lower()
    arch = _ARCH_ALIASES.get(machine, machine)
    if system.startswith("win"):
        suffixes: tuple[str, ...] = ("win_amd64",) if arch == "x86_64" else ("win_" + arch,)
    elif system == "darwin":
        suffixes = ("_" + arch, "_universal2")
    else:  # Linux wheels spell the machine as the kernel does (x86_64, aarch64)
        suffixes = ("_" + machine,)
    prefixes = _SYSTEM_PREFIXES.get("win32" if system.startswith("win") else system, _LINUX_PREFIXES)

    def fits(path: str) -> bool:
        name = os.path.basename(path)
        if not name.endswith(".whl"):
            return False
        tag = name[: -len(".whl")].split("-")[-1]
        return any(p.startswith(prefixes) and p.endswith(suffixes) for p in tag.split("."))

    matching = sorted((w for w in wheels if fits(w)), key=os.path.basename)
    return matching[-1] if matching else None


def import_backend_pool(addon_dir: str, module: str = "backend_pool") -> ModuleType:
    """``backend_pool`` (or ``module``), importable as is or unpacked from
    ``addon_dir/wheels/`` (the wheel for this platform). Raises the original ImportError when
    no wheel fits."""
    try:
        return importlib.import_module(module)
    except ImportError:
        wheels = glob.glob(os.path.join(addon_dir, "wheels", "backend_pool-*.whl"))
        wheel = wheel_for_platform(wheels, sys.platform, platform.machine())
        if wheel is None:
            raise
        vendor = os.path.join(addon_dir, "_vendor")
        if not os.path.isdir(os.path.join(vendor, module)):
            with zipfile.ZipFile(wheel) as z:
                z.extractall(vendor)
        if vendor not in sys.path:
            sys.path.insert(0, vendor)
        return importlib.import_module(module)
