#!/usr/bin/env bash
# The Blender >= 4.2 extension route, end to end, without a Blender binary or a display:
# Blender as a Python module (PyPI `bpy`) runs Blender's own `extension validate` and
# `extension build` (bindings/python/blender_extension.py), then installs the zip with
# `bpy.ops.extensions.package_install_files`, enables it and makes requests through it
# against a loopback server (bindings/python/extension_test.py).
#
#   bash bindings/python/extension_ci.sh
#   BPY=4.2 ZIP=target/dist/backend_pool_dashboard-0.1.0-linux_x64.zip bash bindings/python/extension_ci.sh
#
# BPY picks the Blender release (default 5.0), each in its own venv: 5.0 in target/bpy-venv,
# another in target/bpy<NN>-venv (4.2: target/bpy42-venv). bpy 4.2-5.0 run on Python 3.11,
# 5.1 and later on Python 3.13 (pyenv's). WHEEL=/path/to/wheel skips the maturin build;
# ZIP=/path/to/zip skips the wheel and package.sh and tests that zip (the linux_x64 zip
# bindings/python/build_wheels.sh made).
#
# Idempotent: the venv and cargo's target/ are reused; the user folder (target/bpy-user) and
# the staging folder are made anew. Fails if the run changes or leaves any file outside
# target/, ignored files included (git status before and after). Needs: cargo, Python 3.11
# (else Debian's python3 and python3-venv are installed), PyPI on a cold run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
START=$(date +%s)
BPY=${BPY:-5.0}
# 5.0's venv keeps its name: build_wheels.sh uses it too.
if [ "$BPY" = 5.0 ]; then VENV=$ROOT/target/bpy-venv; else VENV=$ROOT/target/bpy${BPY/./}-venv; fi
case "$BPY" in
    4.* | 5.0) PYV=3.11 ;;
    *) PYV=3.13 ;;
esac
step() { echo; echo "=== extension: $* ($(( $(date +%s) - START )) s) ==="; }

status() {
    git -C "$ROOT" status --porcelain --ignored 2>/dev/null |
        grep -v '^!! target/' || true
}
BEFORE=$(status)

step "venv with bpy $BPY (Python $PYV)"
if [ ! -x "$VENV/bin/python" ]; then
    PY=$(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/$PYV.*/bin/python$PYV 2>/dev/null |
        sort -V | tail -1 || true)
    [ -n "$PY" ] || PY=$(command -v "python$PYV" || true)
    if [ -z "$PY" ] || ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
        [ "$PYV" = 3.11 ] || { echo "Python $PYV not found (for bpy $BPY)" >&2; exit 1; }
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            python3 python3-venv >/dev/null
        PY=/usr/bin/python3.11
    fi
    "$PY" -m venv "$VENV"
fi
# A no-op (no network) once installed. bpy 5.0.x is the newest for Python 3.11, the Python
# of Blender 4.2-5.0.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "bpy==$BPY.*" 'maturin>=1.7,<2'
"$VENV/bin/python" -c 'import bpy, sys; print("bpy", bpy.app.version_string, "Python", sys.version.split()[0])'

if [ -n "${ZIP:-}" ]; then
    echo "zip: $ZIP"
else
    step "wheel"
    if [ -z "${WHEEL:-}" ]; then
        OUT=$ROOT/target/extension-wheel
        rm -rf "$OUT"
        "$VENV/bin/maturin" build --release -m bindings/python/Cargo.toml -i "$VENV/bin/python" --out "$OUT"
        WHEEL=$(ls "$OUT"/backend_pool-*.whl)
    fi
    echo "wheel: $WHEEL"

    step "package.sh (Blender's extension build on a staged copy)"
    rm -f "$ROOT"/target/backend_pool_dashboard-*.zip
    WHEEL=$WHEEL BPY_PYTHON=$VENV/bin/python bash examples/blender_addon/package.sh
    ZIP=$(ls "$ROOT"/target/backend_pool_dashboard-*.zip)
fi

step "extension validate (the zip, as Install from Disk reads it)"
"$VENV/bin/python" bindings/python/blender_extension.py validate "$ZIP"
"$VENV/bin/python" - "$ZIP" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
for need in ("blender_manifest.toml", "__init__.py", "runtime.py"):
    assert need in names, f"{need} missing from the zip: {names}"
wheels = [n for n in names if n.startswith("wheels/")]
assert len(wheels) == 1 and "linux" in wheels[0], f"not one Linux wheel: {wheels}"
for name in names:
    assert not name.startswith(("_vendor/", "package.sh", ".gitignore")) and "__pycache__" not in name, name
print("zip contents ok:", names)
EOF

step "install from disk, enable, requests, disable, uninstall (bpy)"
USER_DIR=$ROOT/target/bpy-user
rm -rf "$USER_DIR"
mkdir -p "$USER_DIR"
BLENDER_USER_RESOURCES=$USER_DIR timeout 300 \
    "$VENV/bin/python" bindings/python/extension_test.py --zip "$ZIP"

step "source tree unchanged"
AFTER=$(status)
if [ "$BEFORE" != "$AFTER" ]; then
    echo "the run changed the source tree:" >&2
    diff <(echo "$BEFORE") <(echo "$AFTER") >&2 || true
    exit 1
fi
echo "git status unchanged"
