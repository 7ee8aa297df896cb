"""Checks the wheels and the Blender extension zips that ``build_wheels.sh`` made, with the
standard library only (Python 3.11+, for ``tomllib``):

    python3 bindings/python/check_wheels.py wheels DIR       # every wheel the manifest lists
    python3 bindings/python/check_wheels.py zips DIR         # one extension zip per platform

A wheel: its file name and its ``WHEEL`` file carry the same ``cp310-abi3-<platform>`` tag;
it holds the package's Python files and one native library whose headers say what the
platform loads — ELF x86-64 (Linux), PE32+ x86-64 DLL (Windows), Mach-O 64-bit arm64 or
x86-64 (macOS) — and that needs nothing a user's machine lacks: a Windows DLL imports system
DLLs and ``python3.dll`` (the stable ABI, never ``python310.dll``) only, no MinGW runtime
(``libgcc_s_seh-1.dll``, ``libwinpthread-1.dll``); a Mach-O library loads ``libSystem`` only
and libiconv only (no ``libpython``, no framework) and its minimum macOS is not above the tag's. Linux's is
checked by ``auditwheel show`` (build_wheels.sh).

A zip (``extension build --split-platforms``): its manifest's generated part names one
platform and that platform's wheel only, and the zip holds that wheel and no other.

Exits non-zero, naming the file and what was wrong, on the first failure.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import tomllib
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(HERE, "..", "..", "examples", "blender_addon", "blender_manifest.toml")

# Wheel platform tag -> (Blender platform, native library format).
PLATFORMS = {
    "manylinux_2_28_x86_64": ("linux-x64", "elf-x86_64"),
    "win_amd64": ("windows-x64", "pe-x86_64"),
    "macosx_11_0_arm64": ("macos-arm64", "macho-arm64"),
    "macosx_10_12_x86_64": ("macos-x64", "macho-x86_64"),
}
PYTHON_FILES = ("__init__.py", "_native.pyi", "py.typed", "errors.py", "headers.py", "types.py")
# What every Windows 10+ has (the Universal CRT's api-ms-win-* forwarders included).
WINDOWS_DLLS = re.compile(
    r"(kernel32|advapi32|bcrypt|bcryptprimitives|msvcrt|ntdll|userenv|ws2_32|ucrtbase"
    r"|api-ms-win-[a-z0-9-]+)\.dll|python3\.dll"
)
# In every macOS (the dyld shared cache); Rust's standard library links libiconv.
MACOS_DYLIBS = {"/usr/lib/libSystem.B.dylib", "/usr/lib/libiconv.2.dylib", "/usr/lib/libcharset.1.dylib"}


class Bad(Exception):
    pass


def manifest_wheels() -> list[str]:
    with open(MANIFEST, "rb") as f:
        manifest = tomllib.load(f)
    return [os.path.basename(w) for w in manifest["wheels"]]


def wheel_tag(name: str) -> str:
    parts = name[: -len(".whl")].split("-")
    if len(parts) != 5 or parts[2:4] != ["cp310", "abi3"]:
        raise Bad(f"{name}: not a cp310-abi3 wheel name")
    return parts[4]


def same(got: str, want: str) -> str:
    if got != want:
        raise Bad(f"a {got} library, expected {want}")
    return got


def elf(data: bytes) -> str:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise Bad("not a 64-bit little-endian ELF file")
    (machine,) = struct.unpack_from("<H", data, 18)
    if machine != 0x3E:
        raise Bad(f"ELF machine {machine:#x}, not x86-64 (0x3e)")
    return "elf-x86_64"


def pe(data: bytes) -> tuple[str, list[str]]:
    if data[:2] != b"MZ":
        raise Bad("no MZ header")
    (pe_at,) = struct.unpack_from("<I", data, 0x3C)
    if data[pe_at : pe_at + 4] != b"PE\0\0":
        raise Bad("no PE signature")
    machine, nsections, _, _, _, opt_size, flags = struct.unpack_from("<HHIIIHH", data, pe_at + 4)
    opt = pe_at + 24
    (magic,) = struct.unpack_from("<H", data, opt)
    if machine != 0x8664 or magic != 0x20B:
        raise Bad(f"PE machine {machine:#x}, optional header {magic:#x}: not PE32+ x86-64")
    if not flags & 0x2000:
        raise Bad("a PE executable, not a DLL")
    (import_rva,) = struct.unpack_from("<I", data, opt + 112 + 8)  # data directory 1
    sections: list[tuple[int, int, int]] = []
    for i in range(nsections):
        at = opt + opt_size + 40 * i
        vsize, vaddr, rawsize, rawptr = struct.unpack_from("<IIII", data, at + 8)
        sections.append((vaddr, max(vsize, rawsize), rawptr))

    def offset(rva: int) -> int:
        for vaddr, size, rawptr in sections:
            if vaddr <= rva < vaddr + size:
                return rva - vaddr + rawptr
        raise Bad(f"PE: RVA {rva:#x} in no section")

    dlls, at = [], offset(import_rva)
    while True:
        name_rva = struct.unpack_from("<5I", data, at)[3]
        if name_rva == 0:
            break
        name_at = offset(name_rva)
        dlls.append(data[name_at : data.index(b"\0", name_at)].decode())
        at += 20
    return "pe-x86_64", dlls


def macho(data: bytes) -> tuple[str, list[str], tuple[int, int]]:
    magic, cputype, _, filetype, ncmds = struct.unpack_from("<IiiII", data, 0)
    if magic != 0xFEEDFACF:
        raise Bad("not a 64-bit little-endian Mach-O file (a fat or 32-bit one?)")
    arch = {0x0100000C: "arm64", 0x01000007: "x86_64"}.get(cputype)
    if arch is None or filetype not in (6, 8):  # MH_DYLIB, MH_BUNDLE
        raise Bad(f"Mach-O cputype {cputype:#x}, filetype {filetype}: not an arm64/x86-64 library")
    dylibs, minos, at = [], None, 32
    for _ in range(ncmds):
        cmd, size = struct.unpack_from("<II", data, at)
        if cmd in (0xC, 0x80000018):  # LC_LOAD_DYLIB, LC_LOAD_WEAK_DYLIB
            (name_at,) = struct.unpack_from("<I", data, at + 8)
            dylibs.append(data[at + name_at : data.index(b"\0", at + name_at)].decode())
        elif cmd == 0x32:  # LC_BUILD_VERSION: platform, minos (xxxx.yy.zz)
            (v,) = struct.unpack_from("<I", data, at + 12)
            minos = (v >> 16, (v >> 8) & 0xFF)
        elif cmd == 0x24:  # LC_VERSION_MIN_MACOSX
            (v,) = struct.unpack_from("<I", data, at + 8)
            minos = (v >> 16, (v >> 8) & 0xFF)
        at += size
    if minos is None:
        raise Bad("Mach-O: no minimum macOS version (LC_BUILD_VERSION)")
    return f"macho-{arch}", dylibs, minos


def check_wheel(path: str) -> str:
    name = os.path.basename(path)
    tag = wheel_tag(name)
    if tag not in PLATFORMS:
        raise Bad(f"{name}: platform tag {tag}, expected one of {sorted(PLATFORMS)}")
    blender, want = PLATFORMS[tag]
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        wheel_meta = [n for n in names if n.endswith(".dist-info/WHEEL")]
        tags = re.findall(r"^Tag: (\S+)$", z.read(wheel_meta[0]).decode(), re.M) if wheel_meta else []
        if tags != [f"cp310-abi3-{tag}"]:
            raise Bad(f"{name}: WHEEL file's tags {tags}, not the file name's cp310-abi3-{tag}")
        for py in PYTHON_FILES:
            if f"backend_pool/{py}" not in names:
                raise Bad(f"{name}: backend_pool/{py} missing")
        native = [n for n in names if re.fullmatch(r"backend_pool/_native[^/]*\.(so|pyd)", n)]
        expected = "backend_pool/_native.pyd" if tag == "win_amd64" else "backend_pool/_native.abi3.so"
        if native != [expected]:
            raise Bad(f"{name}: native library {native}, expected [{expected!r}]")
        data = z.read(native[0])
    detail = ""
    try:
        if want.startswith("elf"):
            got = same(elf(data), want)
        elif want.startswith("pe"):
            got, dlls = pe(data)
            same(got, want)
            foreign = [d for d in dlls if not WINDOWS_DLLS.fullmatch(d.lower())]
            if foreign or "python3.dll" not in dlls:
                raise Bad(f"imports {dlls}: {foreign or 'no python3.dll'}")
            detail = "imports " + " ".join(dlls)
        else:
            got, dylibs, minos = macho(data)
            same(got, want)
            tag_os = tuple(int(x) for x in tag.split("_")[1:3])
            if not set(dylibs) <= MACOS_DYLIBS or "/usr/lib/libSystem.B.dylib" not in dylibs or minos > tag_os:
                raise Bad(f"loads {dylibs}, minimum macOS {minos} (tag: {tag_os})")
            detail = f"loads {' '.join(dylibs)}, minimum macOS {minos[0]}.{minos[1]}"
    except (Bad, struct.error, ValueError) as e:
        raise Bad(f"{name}: {native[0]}: {e}") from None
    return f"{name}: {blender}, {native[0]} {got} ({len(data) // 1024} KiB){', ' if detail else ''}{detail}"


def check_zip(path: str, wheels: list[str]) -> str:
    name = os.path.basename(path)
    with zipfile.ZipFile(path) as z:
        manifest = tomllib.loads(z.read("blender_manifest.toml").decode())
        in_zip = sorted(n for n in z.namelist() if n.startswith("wheels/"))
    # Blender's build writes the platform's own lists under [build.generated], which Blender
    # reads in place of the top-level ones.
    generated = manifest.get("build", {}).get("generated", {})
    platforms = generated.get("platforms", [])
    if len(platforms) != 1:
        raise Bad(f"{name}: manifest build.generated.platforms {platforms}, expected one")
    mine = [w for w in wheels if PLATFORMS[wheel_tag(w)][0] == platforms[0]]
    listed = [os.path.basename(w) for w in generated.get("wheels", [])]
    if listed != mine or in_zip != [f"wheels/{w}" for w in mine]:
        raise Bad(f"{name} ({platforms[0]}): manifest wheels {listed}, zip {in_zip}, expected {mine}")
    if not name.endswith(f"-{platforms[0].replace('-', '_')}.zip"):
        raise Bad(f"{name}: file name does not end with its platform, {platforms[0]}")
    return f"{name}: {platforms[0]}, {mine[0]}"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("wheels", "zips"):
        sys.stderr.write(__doc__ or "")
        return 2
    what, folder = argv
    wheels = manifest_wheels()
    try:
        if sorted(PLATFORMS) != sorted(wheel_tag(w) for w in wheels):
            raise Bad(f"blender_manifest.toml lists {wheels}: one wheel per platform of {sorted(PLATFORMS)}")
        if what == "wheels":
            found = sorted(f for f in os.listdir(folder) if f.endswith(".whl"))
            if found != sorted(wheels):
                raise Bad(f"{folder}: wheels {found}, the manifest lists {sorted(wheels)}")
            lines = [check_wheel(os.path.join(folder, w)) for w in wheels]
        else:
            zips = sorted(f for f in os.listdir(folder) if f.endswith(".zip"))
            if len(zips) != len(PLATFORMS):
                raise Bad(f"{folder}: zips {zips}, expected one per platform")
            lines = [check_zip(os.path.join(folder, z), wheels) for z in zips]
    except Bad as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    for line in lines:
        print("ok:", line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
