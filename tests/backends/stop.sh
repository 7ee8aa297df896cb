#!/usr/bin/env bash
# Stop the servers start.sh started (by the pid files in $BACKENDS_DIR) and wait for them.
# Each server runs in its own process group (setsid), so the whole group is signalled.
set -uo pipefail

DIR="${BACKENDS_DIR:-/tmp/backend-pool-backends}"
SERVERS=(litellm gradio gradio2 comfyui rvc)

group_alive() { kill -0 -- "-$1" 2>/dev/null || kill -0 "$1" 2>/dev/null; }

pids=()
for s in "${SERVERS[@]}"; do
    f="$DIR/$s.pid"
    [[ -f "$f" ]] || continue
    pid="$(cat "$f")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && group_alive "$pid"; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
        echo "[backends] stopping $s (pid $pid)" >&2
    fi
    rm -f "$f"
done

# Up to 15 s for a clean exit, then SIGKILL what is left.
for _ in $(seq 1 30); do
    left=()
    for pid in "${pids[@]}"; do group_alive "$pid" && left+=("$pid"); done
    ((${#left[@]})) || break
    sleep 0.5
done
for pid in "${pids[@]}"; do
    if group_alive "$pid"; then
        echo "[backends] pid $pid ignored SIGTERM: SIGKILL" >&2
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
done
for _ in $(seq 1 20); do
    left=()
    for pid in "${pids[@]}"; do group_alive "$pid" && left+=("$pid"); done
    ((${#left[@]})) || break
    sleep 0.25
done
rm -f "$DIR/env"
echo "[backends] stopped ${#pids[@]} server(s)" >&2
