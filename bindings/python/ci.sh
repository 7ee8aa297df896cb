#!/usr/bin/env bash
# Builds the Python wheel (build.sh), runs the pytest suite, then the headless Blender test.
# The pytest suite skips tests/test_real_backends.py: .ci/real_backends.sh runs it with the
# real servers up.
# Idempotent: the venv, cargo's target/ and an installed Blender are reused on a second run.
#
#   bash bindings/python/ci.sh            # everything
#   SKIP_BLENDER=1 bash bindings/python/ci.sh
#   BLENDER_WHEEL=target/dist/backend_pool-*-manylinux_2_28_x86_64.whl bash bindings/python/ci.sh
#       # Blender gets the wheel users get (build_wheels.sh), not this machine's own build
#
# Needs: python3 (3.11+), cargo, network access to PyPI and Debian's archive on a cold run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
START=$(date +%s)
VENV=${BACKEND_POOL_VENV:-$ROOT/target/python-venv}
WHEELS=$ROOT/target/wheels

step() { echo; echo "=== python bindings: $* ($(( $(date +%s) - START )) s) ==="; }

# venv + release wheel, installed into the venv (also what .ci/real_backends.sh runs).
START=$START bash bindings/python/build.sh
WHEEL=$(ls "$WHEELS"/backend_pool-*.whl)

step "stubs (mypy.stubtest)"
# _native.pyi must match the module exactly: every name, signature, default and class flag,
# with no allowlist (stubtest sees every entry today; one it cannot see would go in an
# --allowlist file, with the reason). Run outside the source tree, so the installed package
# (with its .so) is the one imported.
(cd "$ROOT/target" && "$VENV/bin/python" -m mypy.stubtest backend_pool._native)
# The package's own Python (errors, types, headers) type-checks against the stubs.
(cd "$ROOT/target" && "$VENV/bin/python" -m mypy --strict --no-incremental -p backend_pool)

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
    --wheel "${BLENDER_WHEEL:-$WHEEL}" --pip-python "$VENV/bin/python" --addon "$ROOT/examples/blender_addon" \
    --screenshot "$ROOT/target/dashboard.png"

step "done"
