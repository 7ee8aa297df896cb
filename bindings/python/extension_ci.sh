#!/usr/bin/env bash
# The Blender >= 4.2 extension route, end to end, without a Blender binary or a display:
# Blender 5.0 as a Python module (PyPI `bpy`, Python 3.11) runs Blender's own
# `extension validate` and `extension build` (bindings/python/blender_extension.py), then
# installs the zip with `bpy.ops.extensions.package_install_files`, enables it and makes
# requests through it against a loopback server (bindings/python/extension_test.py).
#
#   bash bindings/python/extension_ci.sh
#
# Idempotent: the venv (target/bpy-venv) and cargo's target/ are reused; the user folder
# (target/bpy-user) and the staging folder are made anew. Fails if the run changes or leaves
# any file outside target/, ignored files included (git status before and after). WHEEL=/path/to/wheel skips the
# maturin build. Needs: cargo, Python 3.11 (else Debian's python3 and python3-venv are
# installed), PyPI on a cold run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
START=$(date +%s)
VENV=$ROOT/target/bpy-venv
step() { echo; echo "=== extension: $* ($(( $(date +%s) - START )) s) ==="; }

status() {
    git -C "$ROOT" status --porcelain --ignored 2>/dev/null |
        grep -v '^!! target/' || true
}
BEFORE=$(status)

step "venv with bpy 5.0 (Python 3.11)"
if [ ! -x "$VENV/bin/python" ]; then
    PY311=$(command -v python3.11 || true)
    if [ -z "$PY311" ] || ! "$PY311" -c 'import ensurepip, venv' 2>/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            python3 python3-venv >/dev/null
        PY311=/usr/bin/python3.11
    fi
    "$PY311" -m venv "$VENV"
fi
# A no-op (no network) once installed. bpy 5.0.x is the newest for Python 3.11, the Python
# of Blender 4.2-5.0.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check 'bpy==5.0.*' 'maturin>=1.7,<2'
"$VENV/bin/python" -c 'import bpy; print("bpy", bpy.app.version_string)'

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

step "extension validate (the zip, as Install from Disk reads it)"
"$VENV/bin/python" bindings/python/blender_extension.py validate "$ZIP"
"$VENV/bin/python" - "$ZIP" "$(basename "$WHEEL")" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
for need in ("blender_manifest.toml", "__init__.py", "runtime.py", "wheels/" + sys.argv[2]):
    assert need in names, f"{need} missing from the zip: {names}"
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
