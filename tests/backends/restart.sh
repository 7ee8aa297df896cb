#!/usr/bin/env bash
# Kill and/or start ONE backend server on the port it already has, for the fault tests.
#
#   restart.sh NAME [kill|start|restart]      NAME: litellm gradio gradio2 comfyui rvc
#
#   kill     SIGKILL the server's process group (a crash: no graceful shutdown, the kernel
#            closes its sockets) and wait until it is gone. The port file stays.
#   start    start it again on the port in $BACKENDS_DIR/NAME.port unless it is alive and
#            healthy, then wait for its health check (BACKENDS_START_TIMEOUT, 120 s).
#   restart  kill, then start (the default).
#
# start.sh picks new free ports for servers it (re)starts, which would change the URLs in the
# env file under a running test; this script keeps the port, so clients reconnect to the
# same address. The log is appended to (tests remember its length), with a marker line.
# The launch commands mirror start.sh's start_one: keep the two in step.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${BACKENDS_VENV:-/tmp/backend-pool-venv}"
DIR="${BACKENDS_DIR:-/tmp/backend-pool-backends}"
# shellcheck source=launch.sh
source "$HERE/launch.sh"
TIMEOUT="${BACKENDS_START_TIMEOUT:-120}"

log() { echo "[backends] $*" >&2; }
die() { echo "[backends] ERROR: $*" >&2; exit 1; }

name="${1:-}"
action="${2:-restart}"
case "$name" in
    litellm | gradio | gradio2 | comfyui | rvc) ;;
    *) die "usage: restart.sh litellm|gradio|gradio2|comfyui|rvc [kill|start|restart]" ;;
esac
[[ -f "$DIR/$name.port" ]] || die "no $DIR/$name.port: run start.sh first"
port="$(cat "$DIR/$name.port")"
logf="$DIR/$name.log"

alive() { [[ -f "$DIR/$name.pid" ]] && kill -0 -- "-$(cat "$DIR/$name.pid")" 2>/dev/null; }

# A live (non-zombie) process left in group $1. A server this script started is reparented
# to init when the script exits, and init may reap it late: a zombie is gone for our purpose.
group_running() { ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'; }

health_url() {
    case "$name" in
        litellm) echo "http://127.0.0.1:$port/health/liveliness" ;;
        gradio | gradio2) echo "http://127.0.0.1:$port/config" ;;
        comfyui) echo "http://127.0.0.1:$port/prompt" ;;
        rvc) echo "http://127.0.0.1:$port/models" ;;
    esac
}

healthy() { curl -fsS --noproxy '*' -o /dev/null --max-time 3 "$(health_url)" 2>/dev/null; }

do_kill() {
    if alive; then
        local pid; pid="$(cat "$DIR/$name.pid")"
        kill -KILL -- "-$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            group_running "$pid" || break
            sleep 0.05
        done
        group_running "$pid" && die "$name (pid $pid) survived SIGKILL"
        log "killed $name (pid $pid, port $port)"
    else
        log "$name is not running"
    fi
    rm -f "$DIR/$name.pid"
}

do_start() {
    if alive && healthy; then
        log "$name already running on port $port"
        return 0
    fi
    if alive; then do_kill; fi
    echo "[restart.sh] $(date -u +%FT%TZ) starting $name on port $port" >>"$logf"
    launch "$name" "$port" "$logf"
    echo $! >"$DIR/$name.pid"
    local t0; t0=$(date +%s)
    until healthy; do
        if ! alive; then
            tail -n 30 "$logf" >&2 || true
            die "$name exited while starting on port $port"
        fi
        if (($(date +%s) - t0 >= TIMEOUT)); then
            tail -n 30 "$logf" >&2 || true
            die "$name did not answer $(health_url) within ${TIMEOUT}s"
        fi
        sleep 0.2
    done
    log "started $name (pid $(cat "$DIR/$name.pid"), port $port) in $(($(date +%s) - t0)) s"
}

case "$action" in
    kill) do_kill ;;
    start) do_start ;;
    restart) do_kill; do_start ;;
    *) die "unknown action '$action' (kill, start or restart)" ;;
esac
