#!/usr/bin/env bash
# Every wheel and every Blender extension zip, cross-compiled on one x86-64 Linux machine,
# into one folder (default target/dist/):
#
#   bash bindings/python/build_wheels.sh [OUT_DIR] [--test]
#
#   backend_pool-0.1.0-cp310-abi3-manylinux_2_28_x86_64.whl   maturin --zig (glibc 2.28)
#   backend_pool-0.1.0-cp310-abi3-win_amd64.whl               x86_64-pc-windows-gnu, MinGW-w64
#   backend_pool-0.1.0-cp310-abi3-macosx_11_0_arm64.whl       maturin --zig
#   backend_pool-0.1.0-cp310-abi3-macosx_10_12_x86_64.whl     maturin --zig
#   backend_pool_dashboard-0.1.0-{linux_x64,windows_x64,macos_arm64,macos_x64}.zip
#
# Each wheel is checked (check_wheels.py: tag, native library format and what it loads;
# `auditwheel show` for Linux's), the zips are made by Blender's own `extension build
# --split-platforms` (examples/blender_addon/package.sh), validated by Blender's
# `extension validate` and checked to hold their platform's wheel only. --test then installs
# the Linux wheel into Python 3.10, 3.11 and 3.13 (pyenv's, else python3.X on PATH) and runs
# the pytest suite under each.
#
# Installs what is missing: Rust's four targets (rustup), Debian's gcc-mingw-w64-x86-64 (as
# root, else it says what to install), and in venvs under target/: maturin, ziglang,
# cargo-zigbuild and auditwheel (wheels-venv), and Blender 5.0 as a Python module
# (bpy-venv, shared with extension_ci.sh) unless BPY_PYTHON or `blender` >= 4.2 on PATH is
# there. Network: PyPI, Debian's archive, Rust's toolchain server, on a cold run only.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
START=$(date +%s)
DIST=$ROOT/target/dist
TEST=0
for arg in "$@"; do
    case "$arg" in
        --test) TEST=1 ;;
        -*) echo "unknown option $arg (usage: build_wheels.sh [OUT_DIR] [--test])" >&2; exit 2 ;;
        *) DIST=$(mkdir -p "$arg" && cd "$arg" && pwd) ;;
    esac
done
TOOLS=$ROOT/target/wheels-venv
step() { echo; echo "=== wheels: $* ($(( $(date +%s) - START )) s) ==="; }
pip_install() { "$1/bin/python" -m pip install -q --disable-pip-version-check "${@:2}"; }

step "tools"
rustup target add x86_64-pc-windows-gnu aarch64-apple-darwin x86_64-apple-darwin 2>&1 |
    grep -v 'is up to date' || true
if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "x86_64-w64-mingw32-gcc missing: install MinGW-w64 (Debian: gcc-mingw-w64-x86-64)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        gcc-mingw-w64-x86-64 >/dev/null
fi
[ -x "$TOOLS/bin/python" ] || python3 -m venv "$TOOLS"
# Pinned: a new zig or cargo-zigbuild can change what links; CI should not change on its own.
pip_install "$TOOLS" 'maturin>=1.7,<2' 'ziglang==0.17.1' 'cargo-zigbuild==0.24.1' 'auditwheel==6.8.2'
export PATH=$TOOLS/bin:$PATH    # maturin --zig runs cargo-zigbuild, which runs python -m ziglang
BPY_PYTHON=${BPY_PYTHON:-}
if [ -z "$BPY_PYTHON" ] && ! blender --version 2>/dev/null | grep -Eq '^Blender (4\.([2-9]|[1-9][0-9])|[5-9])\.'; then
    BPY_PYTHON=$ROOT/target/bpy-venv/bin/python
    [ -x "$BPY_PYTHON" ] || python3.11 -m venv "$ROOT/target/bpy-venv"
    # bpy 5.0.x is the newest for Python 3.11 (as in extension_ci.sh).
    pip_install "$ROOT/target/bpy-venv" 'bpy==5.0.*'
fi
maturin --version
python -m ziglang version

mkdir -p "$DIST"
rm -f "$DIST"/backend_pool-*.whl "$DIST"/backend_pool_dashboard-*.zip
build() {
    step "wheel for $1"
    # Each target has its own folder under target/ (--target always given): the host's
    # target/release, which the demo and ci.sh's wheel build use, is left alone.
    maturin build --release -m bindings/python/Cargo.toml --out "$DIST" --target "$@"
}
# glibc 2.28, as official Blender builds for Linux: zig links against that glibc's symbols.
build x86_64-unknown-linux-gnu --zig --compatibility manylinux_2_28
# MinGW-w64's gcc links (rustc's default linker for the target): the DLL imports Windows' own
# DLLs and python3.dll only (check_wheels.py). zig (x86_64-pc-windows-gnullvm) would need a
# second Rust target and gains nothing here.
build x86_64-pc-windows-gnu
# No macOS SDK: zig ships libSystem's stubs, and nothing in the dependency tree links a
# framework. rustc warns that `xcrun` is missing; the link does not need it.
build aarch64-apple-darwin --zig
build x86_64-apple-darwin --zig

step "check the wheels"
"$TOOLS/bin/python" bindings/python/check_wheels.py wheels "$DIST"
LINUX_WHEEL=$DIST/$(cd "$DIST" && ls backend_pool-*-manylinux_2_28_x86_64.whl)
auditwheel show "$LINUX_WHEEL" | tee "$ROOT/target/auditwheel.txt"
tr '\n' ' ' <"$ROOT/target/auditwheel.txt" | grep -q 'consistent with the following platform tag: "manylinux_2_28_x86_64"' || {
    echo "auditwheel: $LINUX_WHEEL is not manylinux_2_28_x86_64" >&2
    exit 1
}

step "extension zips (Blender's extension build --split-platforms)"
WHEEL_DIR=$DIST OUT=$DIST BPY_PYTHON=$BPY_PYTHON bash examples/blender_addon/package.sh
for zip in "$DIST"/backend_pool_dashboard-*.zip; do
    if [ -n "$BPY_PYTHON" ]; then
        "$BPY_PYTHON" bindings/python/blender_extension.py validate "$zip"
    else
        blender --command extension validate "$zip"
    fi
done
"$TOOLS/bin/python" bindings/python/check_wheels.py zips "$DIST"

if [ "$TEST" = 1 ]; then
    PYENV_ROOT=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
    for v in 3.10 3.11 3.13; do
        step "pytest under Python $v (the Linux wheel)"
        py=$(ls -d "$PYENV_ROOT"/versions/$v.*/bin/python$v 2>/dev/null | sort -V | tail -1 || true)
        if [ -z "$py" ] || ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
            py=$(command -v "python$v" || true)
            if [ -z "$py" ] || ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
                echo "Python $v not found (pyenv's $PYENV_ROOT/versions/$v.*, python$v on PATH)" >&2
                exit 1
            fi
        fi
        venv=$ROOT/target/py${v/./}-venv
        [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
        pip_install "$venv" 'pytest>=7'
        pip_install "$venv" --force-reinstall --no-deps "$LINUX_WHEEL"
        "$venv/bin/python" -c 'import sys, backend_pool; print(sys.version.split()[0], backend_pool.__file__)'
        (cd bindings/python && "$venv/bin/python" -m pytest tests -q -p no:cacheprovider)
    done
fi

step "done: $DIST"
ls -l "$DIST"
