#!/usr/bin/env bash
# The core crate's test suite (unit and integration tests, and the testkit's) built for
# x86_64-pc-windows-gnu and run under Wine: the pool's sockets, timeouts and shutdown with
# Windows' semantics (Winsock as Wine implements it), on this Linux machine.
#
#   bash .ci/windows_wine.sh [TEST-FILTER...]
#
# WINE_TEST_TIMEOUT (seconds, 900 by default) bounds the run of the tests (a hang ends there).
# Installs what is missing: Debian's gcc-mingw-w64-x86-64 (the linker) and wine64 (8.0 in
# Debian 12), Rust's x86_64-pc-windows-gnu target. The Wine prefix is target/wine, made anew.
# cargo runs each test binary through wine64 (CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER).
# Tests that cannot pass on Windows, or under Wine, are skipped by name below, each with its
# reason; RELIABILITY.md ("Windows under Wine") lists them. Doc tests are not run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)
TARGET=x86_64-pc-windows-gnu
WINE=/usr/lib/wine/wine64 # as in .ci/wine_prefix.sh
step() { echo; echo "=== windows (wine): $* ($(( $(date +%s) - START )) s) ==="; }

step "tools"
need=()
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need+=(gcc-mingw-w64-x86-64)
[ -x "$WINE" ] || need+=(wine64)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup target add "$TARGET" 2>&1 | grep -v 'is up to date' || true
"$WINE" --version

# Line tables only (backtraces keep file and line): full debug info makes each of the ~30
# test executables about 95 MB, and their links the slowest part of the build.
export CARGO_PROFILE_DEV_DEBUG=line-tables-only

step "build the tests for $TARGET"
cargo test --target "$TARGET" -p backend-pool -p backend-pool-testkit --lib --tests --no-run

step "Wine prefix (target/wine)"
# Made anew; the stand-in for bcryptprimitives.dll that Rust's std needs (.ci/wine_prefix.sh).
source .ci/wine_prefix.sh
wine_prefix "$ROOT/target/wine"

# Skipped, each with its reason (RELIABILITY.md, "Windows under Wine"). cargo's --skip
# matches a substring of a test's path.
SKIP=(
    # Wine 8.0's GetProcessHandleCount answers 0: no handle count to compare.
    a_pooled_socket_holds_one_descriptor
)
skip_args=()
for t in "${SKIP[@]}"; do skip_args+=(--skip "$t"); done

step "run under Wine"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=$WINE
run_tests() {
    timeout "${WINE_TEST_TIMEOUT:-900}" cargo test --target "$TARGET" -p backend-pool -p backend-pool-testkit --lib --tests \
        --no-fail-fast -- "${skip_args[@]}" "$@"
}
LOG=$ROOT/target/wine-tests.log
set +e
run_tests "$@" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
if [ "$status" != 0 ]; then
    # Wine schedules threads unlike Linux: a test that failed is run once more, alone. The
    # run fails if any fails again, or if the failure was not a test's (a build error, a
    # hang past the timeout).
    failed=$(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$LOG" | sort -u)
    binaries=$(grep -c '^test result: FAILED' "$LOG" || true)
    targets=$(sed -n 's/^error: \([0-9]*\) targets failed:$/\1/p' "$LOG")
    if [ "$status" = 124 ] || [ -z "$failed" ] || [ "${targets:-1}" != "$binaries" ]; then
        echo "cargo test failed ($status) and not only by failed tests (a build error, a" \
            "crashed binary or the 900 s timeout): nothing to retry" >&2
        exit 1
    fi
    for t in $failed; do
        step "once more, alone: $t"
        run_tests --exact "$t" 2>&1 | tee "$LOG.retry" || true
        grep -q '^test .* \.\.\. ok$' "$LOG.retry" || { echo "$t failed again" >&2; exit 1; }
        echo "flaky under Wine (failed, then passed alone): $t"
    done
fi

step "done"
