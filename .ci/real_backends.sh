#!/usr/bin/env bash
# The suite against the real backend servers (tests/real_backends.rs): starts the servers
# (tests/backends/start.sh: venv + pip on first use), runs the ignored tests one at a time,
# and always stops the servers. A server that fails to start fails this script.
#
#   BACKENDS_DIR   run directory (default /tmp/backend-pool-backends)
#   BACKENDS_VENV  venv (default /tmp/backend-pool-venv)
#   extra arguments go to the test binary, e.g. `.ci/real_backends.sh gradio`
#
# Then the Python bindings against the same servers (bindings/python/tests/test_real_backends.py,
# which a plain pytest run skips): builds the wheel into the bindings' venv
# (bindings/python/build.sh; bindings/python/ci.sh reuses it). SKIP_PYTHON=1 skips this part.
set -euo pipefail
cd "$(dirname "$0")/.."
export BACKENDS_DIR="${BACKENDS_DIR:-/tmp/backend-pool-backends}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

stop_servers() { tests/backends/stop.sh || true; }
trap stop_servers EXIT

echo "=== real backends: start ==="
if ! tests/backends/start.sh; then
    echo "real backends: a server failed to start (logs in $BACKENDS_DIR)" >&2
    exit 1
fi
# shellcheck source=/dev/null
source "$BACKENDS_DIR/env"

echo "=== real backends: tests ==="
T0=$(date +%s)
cargo test --test real_backends -- --ignored --test-threads=1 --nocapture "$@"
echo "real backends: suite took $(($(date +%s) - T0)) s"

if [ "${SKIP_PYTHON:-0}" != 1 ]; then
    echo "=== real backends: Python bindings ==="
    bash bindings/python/build.sh
    VENV=${BACKEND_POOL_VENV:-$PWD/target/python-venv}
    # BACKEND_POOL_REAL_BACKENDS=1: a missing server address fails instead of skipping.
    (cd bindings/python && BACKEND_POOL_REAL_BACKENDS=1 "$VENV/bin/python" -m pytest \
        tests/test_real_backends.py -q -p no:cacheprovider)
fi
