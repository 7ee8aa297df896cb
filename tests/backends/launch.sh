#!/usr/bin/env bash
# Sourced by start.sh and restart.sh: the one place that knows how each server is started.
# Needs HERE (this folder), DIR (run directory) and VENV set by the caller.

# launch NAME PORT LOGFILE: starts the server in the background in its own session and
# process group (setsid: pgid == pid, so stop.sh can end the whole group, and the server
# outlives the shell that started it). The caller reads its pid from $!.
launch() {
    local name="$1" port="$2" logf="$3"
    case "$name" in
        litellm)
            (cd "$DIR" && exec env LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False \
                NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost PATH="$VENV/bin:$PATH" \
                setsid "$VENV/bin/litellm" --config "$HERE/litellm.yaml" --host 127.0.0.1 --port "$port" \
                --num_workers 1 --telemetry False </dev/null >>"$logf" 2>&1) &
            ;;
        gradio | gradio2)
            (cd "$DIR" && exec env GRADIO_ANALYTICS_ENABLED=False NO_PROXY=127.0.0.1,localhost \
                no_proxy=127.0.0.1,localhost PYTHONUNBUFFERED=1 \
                setsid "$VENV/bin/python" "$HERE/gradio_app.py" "$port" </dev/null >>"$logf" 2>&1) &
            ;;
        comfyui)
            (cd "$DIR" && exec env PYTHONUNBUFFERED=1 \
                setsid "$VENV/bin/python" "$HERE/comfyui_server.py" --host 127.0.0.1 --port "$port" \
                </dev/null >>"$logf" 2>&1) &
            ;;
        rvc)
            (cd "$DIR" && exec env PYTHONUNBUFFERED=1 \
                setsid "$VENV/bin/python" "$HERE/rvc_server.py" --host 127.0.0.1 --port "$port" \
                </dev/null >>"$logf" 2>&1) &
            ;;
    esac
}
