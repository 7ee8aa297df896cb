#!/usr/bin/env bash
# Builds the Python wheel, runs the pytest suite, then the headless Blender test.
# Idempotent: the venv, cargo's target/ and an installed Blender are reused on a second run.
#
#   bash bindings/python/ci.sh            # everything
#   SKIP_BLENDER=1 bash bindings/python/ci.sh
#
# Needs: python3 (3.11+), cargo, network access to PyPI and Debian's archive on a cold run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
START=$(date +%s)
VENV=${BACKEND_POOL_VENV:-$ROOT/target/python-venv}
WHEELS=$ROOT/target/wheels
PY=${PYTHON:-python3}

step() { echo; echo "=== python bindings: $* ($(( $(date +%s) - START )) s) ==="; }

step "venv"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
# A no-op (no network) once both are installed.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check 'maturin>=1.7,<2' 'pytest>=7'
"$VENV/bin/python" --version

step "wheel (maturin build --release)"
rm -f "$WHEELS"/backend_pool-*.whl
"$VENV/bin/maturin" build --release -m bindings/python/Cargo.toml -i "$VENV/bin/python" --out "$WHEELS"
WHEEL=$(ls "$WHEELS"/backend_pool-*.whl)
echo "wheel: $WHEEL"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$WHEEL"
# The wheel carries the stubs and the marker file.
"$VENV/bin/python" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
for need in ("backend_pool/__init__.py", "backend_pool/_native.pyi", "backend_pool/py.typed", "backend_pool/errors.py"):
    assert need in names, f"{need} missing from the wheel: {names}"
print("wheel contents ok:", len(names), "files")
EOF

step "pytest"
(cd bindings/python && "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider)

if [ "${SKIP_BLENDER:-0}" = 1 ]; then
    echo "SKIP_BLENDER=1: Blender test skipped"
    exit 0
fi

step "blender"
# Blender's timers (the add-on's queue drain, the test's lateness probe) only run in the event
# loop of a window, never with -b: the test runs Blender in a virtual X server. The image
# already has Mesa's software OpenGL; xvfb and xauth (for xvfb-run) are installed here.
need=()
command -v blender >/dev/null 2>&1 || need+=(blender)
command -v xvfb-run >/dev/null 2>&1 || need+=(xvfb xauth)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need[@]}" libgl1-mesa-dri >/dev/null
fi
blender --version | head -1

step "blender test"
# The test starts the ComfyUI stand-in (tests/backends/comfyui_server.py) with the venv's
# Python: aiohttp at the version the real-backend tests pin. A no-op once installed.
AIOHTTP=$(grep -i '^aiohttp==' tests/backends/constraints.txt)
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c tests/backends/constraints.txt "$AIOHTTP"
# An isolated user scripts directory: the test installs the wheel into its modules/ and the
# example add-on into its addons/, the paths Blender itself searches. --enable-event-simulate
# lets the test pick the sidebar's tab with the mouse wheel (Blender 3.4 has no API for it);
# it writes the dashboard's screenshot to target/dashboard.png (docs/dashboard.png is a copy).
BLENDER_HOME=$ROOT/target/blender-user
rm -rf "$BLENDER_HOME"
mkdir -p "$BLENDER_HOME/config" "$BLENDER_HOME/scripts"
BLENDER_USER_CONFIG=$BLENDER_HOME/config BLENDER_USER_SCRIPTS=$BLENDER_HOME/scripts \
    timeout 600 xvfb-run -a -s "-screen 0 1280x800x24" \
    blender --factory-startup --enable-event-simulate -p 0 0 960 600 --python-exit-code 1 \
    --python bindings/python/blender_test.py -- \
    --wheel "$WHEEL" --pip-python "$VENV/bin/python" --addon "$ROOT/examples/blender_addon" \
    --screenshot "$ROOT/target/dashboard.png"

step "done"
