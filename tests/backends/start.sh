#!/usr/bin/env bash
# Start the real backend servers for the integration tests, on free loopback ports.
#
#   BACKENDS_VENV  venv to use / create        (default /tmp/backend-pool-venv)
#   BACKENDS_DIR   pids, ports, logs, env file (default /tmp/backend-pool-backends)
#   PYTHON         interpreter for a new venv   (default python3, needs >= 3.10)
#   BACKENDS_START_TIMEOUT  seconds each server gets to answer its health check (120)
#
# Idempotent: a server whose pid is alive and whose health check answers is kept;
# others are (re)started. Then `source "$BACKENDS_DIR/env"`. Stop with stop.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${BACKENDS_VENV:-/tmp/backend-pool-venv}"
DIR="${BACKENDS_DIR:-/tmp/backend-pool-backends}"
# shellcheck source=launch.sh
source "$HERE/launch.sh"
PY="${PYTHON:-python3}"
TIMEOUT="${BACKENDS_START_TIMEOUT:-120}"
SERVERS=(litellm gradio gradio2 comfyui rvc)

log() { echo "[backends] $*" >&2; }
die() { echo "[backends] ERROR: $*" >&2; exit 1; }

mkdir -p "$DIR"
T0=$(date +%s)

# ---- venv + requirements (pip only, skipped when already satisfied) ----------
REQ="$HERE/requirements.txt"
STAMP="$VENV/.backend-pool-requirements.sha256"
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV"
    "$PY" -m venv "$VENV"
fi
REQ_SUM="$(cat "$REQ" "$HERE/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$REQ_SUM" ]] &&
    "$VENV/bin/python" -c 'import importlib.metadata as m
for p in ("litellm", "gradio", "aiohttp", "fastapi", "uvicorn"): m.version(p)' 2>/dev/null; then
    log "requirements already installed in $VENV"
else
    log "installing requirements into $VENV (about a minute or two on a fresh machine)"
    # An old pip (23.x) downloads whole wheels while it backtracks: minutes. A current one
    # reads the metadata PyPI serves beside each wheel.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -U 'pip>=25' ||
        die "upgrading pip in $VENV failed"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ" ||
        die "pip install -r $REQ failed"
    echo "$REQ_SUM" >"$STAMP"
    log "installed in $(($(date +%s) - T0)) s"
fi

# ---- helpers ------------------------------------------------------------------
alive() { [[ -f "$DIR/$1.pid" ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

health_url() {
    local port; port="$(cat "$DIR/$1.port")"
    case "$1" in
        litellm) echo "http://127.0.0.1:$port/health/liveliness" ;;
        gradio | gradio2) echo "http://127.0.0.1:$port/config" ;;
        comfyui) echo "http://127.0.0.1:$port/prompt" ;;
        rvc) echo "http://127.0.0.1:$port/models" ;;
    esac
}

healthy() {
    [[ -f "$DIR/$1.port" ]] || return 1
    curl -fsS --noproxy '*' -o /dev/null --max-time 3 "$(health_url "$1")" 2>/dev/null
}

# N distinct free loopback ports: bind them all at once to port 0, then release.
free_ports() {
    "$VENV/bin/python" -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$1"
}

start_one() { # name port
    local name="$1" port="$2" logf="$DIR/$1.log"
    echo "$port" >"$DIR/$name.port"
    : >"$logf"
    launch "$name" "$port" "$logf"
    echo $! >"$DIR/$name.pid"
    log "started $name (pid $(cat "$DIR/$name.pid"), port $port, log $logf)"
}

# ---- start what is not already up ---------------------------------------------
to_start=()
for s in "${SERVERS[@]}"; do
    if alive "$s" && healthy "$s"; then
        log "$s already running (pid $(cat "$DIR/$s.pid"), port $(cat "$DIR/$s.port"))"
    else
        if alive "$s"; then # running but not answering: replace it
            log "$s (pid $(cat "$DIR/$s.pid")) does not answer its health check: restarting it"
            kill -TERM -- "-$(cat "$DIR/$s.pid")" 2>/dev/null || true
            sleep 1
            kill -KILL -- "-$(cat "$DIR/$s.pid")" 2>/dev/null || true
        fi
        rm -f "$DIR/$s.pid" "$DIR/$s.port"
        to_start+=("$s")
    fi
done

if ((${#to_start[@]})); then
    read -r -a ports <<<"$(free_ports "${#to_start[@]}")"
    for i in "${!to_start[@]}"; do
        start_one "${to_start[$i]}" "${ports[$i]}"
    done
fi

# ---- wait for each health check -------------------------------------------------
failed=()
for s in "${to_start[@]}"; do
    t_start=$(date +%s)
    until healthy "$s"; do
        if ! alive "$s"; then
            log "$s exited during startup; last lines of $DIR/$s.log:"
            tail -n 40 "$DIR/$s.log" >&2 || true
            failed+=("$s")
            break
        fi
        if (($(date +%s) - t_start >= TIMEOUT)); then
            log "$s did not answer $(health_url "$s") within ${TIMEOUT}s; last lines of $DIR/$s.log:"
            tail -n 40 "$DIR/$s.log" >&2 || true
            failed+=("$s")
            break
        fi
        sleep 0.5
    done
done

if ((${#failed[@]})); then
    log "FAILED to start: ${failed[*]} (logs in $DIR; stopping everything)"
    BACKENDS_DIR="$DIR" "$HERE/stop.sh" || true
    exit 1
fi

# ---- env file -------------------------------------------------------------------
url() { echo "http://127.0.0.1:$(cat "$DIR/$1.port")"; }
{
    echo "export BACKEND_LITELLM_URL=$(url litellm)"
    echo "export BACKEND_LITELLM_KEY=sk-test-1234"
    echo "export BACKEND_LITELLM_LOG=$DIR/litellm.log"
    echo "export BACKEND_GRADIO_URL=$(url gradio)"
    echo "export BACKEND_GRADIO_LOG=$DIR/gradio.log"
    echo "export BACKEND_GRADIO2_URL=$(url gradio2)"
    echo "export BACKEND_GRADIO2_LOG=$DIR/gradio2.log"
    echo "export BACKEND_COMFYUI_URL=$(url comfyui)"
    echo "export BACKEND_COMFYUI_LOG=$DIR/comfyui.log"
    echo "export BACKEND_RVC_URL=$(url rvc)"
    echo "export BACKEND_RVC_LOG=$DIR/rvc.log"
} >"$DIR/env.tmp"
mv "$DIR/env.tmp" "$DIR/env"
log "all backends up in $(($(date +%s) - T0)) s; source $DIR/env"
cat "$DIR/env"
