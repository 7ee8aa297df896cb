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
# A no-op (no network) once all are installed. mypy is pinned: each release of stubtest
# checks a little more, and CI should not start failing on its own.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check 'maturin>=1.7,<2' 'pytest>=7' 'mypy==2.4.1'
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
# An isolated user scripts directory: the test installs the wheel into its modules/ and the
# example add-on into its addons/, the paths Blender itself searches.
BLENDER_HOME=$ROOT/target/blender-user
rm -rf "$BLENDER_HOME"
mkdir -p "$BLENDER_HOME/config" "$BLENDER_HOME/scripts"
BLENDER_USER_CONFIG=$BLENDER_HOME/config BLENDER_USER_SCRIPTS=$BLENDER_HOME/scripts \
    timeout 600 xvfb-run -a -s "-screen 0 1280x800x24" \
    blender --factory-startup -p 0 0 960 540 --python-exit-code 1 \
    --python bindings/python/blender_test.py -- \
    --wheel "$WHEEL" --pip-python "$VENV/bin/python" --addon "$ROOT/examples/blender_addon"

step "done"
