#!/usr/bin/env bash
# Builds the Python wheel (release) into target/wheels and installs it into the bindings' venv
# (BACKEND_POOL_VENV, default target/python-venv, made here with maturin, pytest and mypy).
# Idempotent; ci.sh and .ci/real_backends.sh start with it.
#
# Needs: python3 (3.11+), cargo, network access to PyPI on a cold run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
START=${START:-$(date +%s)}
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
"$VENV/bin/python" - "$WHEEL" <<'PYEOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
for need in ("backend_pool/__init__.py", "backend_pool/_native.pyi", "backend_pool/py.typed", "backend_pool/errors.py"):
    assert need in names, f"{need} missing from the wheel: {names}"
print("wheel contents ok:", len(names), "files")
PYEOF
