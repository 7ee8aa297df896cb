"""A ComfyUI prompt as a cancellable job: queue it, follow it, stop it. No ``bpy`` here: these
functions run on worker threads and report through a callback.

The protocol (ComfyUI's ``server.py``; ``tests/backends/comfyui_server.py`` speaks it):

1. lease a pooled WebSocket (``/ws?clientId=<id>``) and take its client id;
2. ``POST /prompt`` with ``{"prompt": graph, "client_id": id, "prompt_id": id}`` (our own
   prompt id, so a Cancel clicked before the answer still knows which prompt to stop);
3. read events: ``progress`` (``value`` / ``max`` of the running node), ``executing`` (the
   node that runs), then ``execution_success``, ``execution_interrupted`` or
   ``execution_error``; the prompt is over when ``executing`` arrives with ``node: null`` and
   its prompt id. ``status`` is broadcast to every socket; another prompt's events can reach a
   socket too: both are skipped;
4. ``finish()`` the lease: nothing it started is still running, the socket goes back to the
   pool. A lease cancelled or failed is closed instead (its prompt may still send events).

Cancel (``stop_prompt``) is the caller's part: the pool can only stop *waiting*.
"""

from __future__ import annotations

import backend_pool as bp

HTTP_TIMEOUT_S = 30.0  # POST /prompt, and the calls of stop_prompt
# A node can run for minutes without an event (a video VAE decode): after this much silence
# the job asks GET /history/<id> whether the prompt ended while its events went missing.
SILENCE_S = 60.0


def txt2img_graph(text: str, steps: int, seed: int = 0,
                  checkpoint: str = "v1-5-pruned-emaonly.safetensors") -> dict:
    """ComfyUI's default text-to-image workflow, in the API format (*Save (API)* in ComfyUI)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "blender", "images": ["8", 0]}},
    }


def run_prompt(manager, service: str, graph: dict, prompt_id: str, token, report) -> None:
    """Queues ``graph`` and follows it to its end (worker thread). ``report(event, value)``:
    ("queued", prompt_id), ("node", node_id), ("progress", (value, max)), and last, always,
    ("end", (state, detail)) with state "done", "interrupted", "failed" or "cancelled"."""
    state, detail = "failed", ""
    try:
        with manager.websocket(service, cancel=token) as ws:
            body = {"prompt": graph, "client_id": ws.client_id, "prompt_id": prompt_id}
            r = manager.request(service, "POST", "/prompt", json=body, cancel=token,
                                timeout=HTTP_TIMEOUT_S)
            if not r.ok:  # rejected (validation): nothing runs, the socket can be reused
                ws.finish()
                state, detail = "failed", _rejection(r)
                return
            report("queued", prompt_id)
            state, detail = _follow(manager, service, ws, prompt_id, token, report)
            ws.finish()
    except (bp.Cancelled, bp.ShuttingDown):
        state, detail = "cancelled", ""
    except bp.BackendPoolError as e:
        state, detail = "failed", str(e)
    except (ValueError, TypeError, KeyError, AttributeError) as e:  # a reply of the wrong shape
        state, detail = "failed", f"unexpected reply from {service}: {e!r}"
    finally:
        report("end", (state, detail))


def _follow(manager, service, ws, prompt_id, token, report) -> tuple[str, str]:
    outcome = ("failed", "ComfyUI ended the prompt without saying how")
    while True:
        try:
            event = ws.recv_json(timeout=SILENCE_S)
        except bp.TimeoutException:
            ended = _ended_in_history(manager, service, prompt_id, token)
            if ended is not None:
                return ended
            continue
        if not isinstance(event, dict):
            continue
        kind, data = event.get("type"), event.get("data")
        if not isinstance(data, dict) or data.get("prompt_id", prompt_id) != prompt_id:
            continue  # another prompt's event
        if kind == "progress":
            report("progress", (int(data.get("value", 0)), int(data.get("max", 0))))
        elif kind == "executing":
            if data.get("node") is not None:
                report("node", str(data["node"]))
            elif data.get("prompt_id") == prompt_id:  # ComfyUI's end-of-prompt marker
                return outcome
        elif kind == "execution_success":
            outcome = ("done", "")
        elif kind == "execution_interrupted":
            outcome = ("interrupted", "interrupted on the server")
        elif kind == "execution_error":
            node, message = data.get("node_type", "a node"), data.get("exception_message", "error")
            outcome = ("failed", f"{node}: {message}")


def _ended_in_history(manager, service, prompt_id, token) -> tuple[str, str] | None:
    """The outcome recorded in ``GET /history/<id>`` if the prompt has ended (ComfyUI does not
    replay events a socket missed), else None."""
    r = manager.request(service, "GET", f"/history/{prompt_id}", cancel=token, timeout=HTTP_TIMEOUT_S)
    entry = r.json().get(prompt_id) if r.ok else None
    if not isinstance(entry, dict):
        return None
    status = entry.get("status") or {}
    if status.get("completed"):
        return ("done", "")
    messages = [m[0] for m in status.get("messages", []) if isinstance(m, list) and m]
    if "execution_interrupted" in messages:
        return ("interrupted", "interrupted on the server")
    return ("failed", f"ComfyUI: {status.get('status_str', 'error')}")


def _rejection(r) -> str:
    try:
        error = r.json().get("error") or {}
        return f"ComfyUI refused the prompt ({r.status}): {error.get('message', r.text[:200])}"
    except (bp.BackendPoolError, ValueError, AttributeError):
        return f"ComfyUI refused the prompt ({r.status}): {r.text[:200]}"


def stop_prompt(manager, service: str, prompt_id: str, token) -> str:
    """Stops the prompt on the server (helper thread): the caller's part of Cancel.

    Cancelling the job's token ends the wait on our side at once, but ComfyUI goes on running
    the prompt until told. Two calls, in this order:

    1. ``POST /queue {"delete": [id]}`` removes it if it is still queued (an interrupt does not
       touch a queued prompt);
    2. ``POST /interrupt {"prompt_id": id}`` stops it if it is the one running. ComfyUI
       ignores a prompt id that is not running, so this never stops someone else's prompt
       (ComfyUI before mid-2025 ignores the body: it stops whatever runs).

    The other order could miss a prompt that starts running between the two calls. Returns
    what happened, for the panel.
    """
    try:
        manager.request(service, "POST", "/queue", json={"delete": [prompt_id]}, cancel=token,
                        timeout=HTTP_TIMEOUT_S).raise_for_status()
        manager.request(service, "POST", "/interrupt", json={"prompt_id": prompt_id}, cancel=token,
                        timeout=HTTP_TIMEOUT_S).raise_for_status()
        return "stopped on the server"
    except (bp.Cancelled, bp.ShuttingDown):
        return "not stopped on the server: the add-on was disabled"
    except bp.BackendPoolError as e:
        return f"not stopped on the server: {e}"
