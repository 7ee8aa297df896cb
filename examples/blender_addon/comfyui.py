"""A ComfyUI prompt as a cancellable job: queue it, follow it, stop it; and the render job
around it: upload an image, run a prompt that loads it, download the result. No ``bpy`` here:
these functions run on worker threads and report through a callback.

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

Every call of a job goes through one ``backend_pool.Session`` of the service
(``manager.session("comfyui")``, the ``session`` argument below): with several ComfyUI
machines (``urls = [...]``), a prompt's WebSocket events, its ``/history`` record, its
``/view`` outputs, the image it loads and the ``/interrupt`` that stops it all live on the
machine that took the prompt, so none of them may go to another.

The render job (``run_render``) adds a phase on each side, with the same token:

* uploading: ``POST /upload/image``, multipart: field ``image`` (the file), ``subfolder``,
  ``type=input``, ``overwrite=true``; the answer ``{"name", "subfolder", "type"}`` names the
  file as ComfyUI saved it, which a ``LoadImage`` node takes as ``subfolder/name``;
* downloading: once the prompt succeeded, ``GET /history/<id>`` lists what each output node
  made, ``{"outputs": {node: {"images": [{"filename", "subfolder", "type"}]}}}`` (``type``
  "output" for ``SaveImage``, "temp" for ``PreviewImage``); ComfyUI writes that record before
  the end-of-prompt marker. ``GET /view?filename=&subfolder=&type=`` serves the file, with its
  ``Content-Length``.
"""

from __future__ import annotations

import os
import threading
import time

import backend_pool as bp

HTTP_TIMEOUT_S = 30.0  # POST /prompt, and the calls of stop_prompt
# A node can run for minutes without an event (a video VAE decode): after this much silence
# the job asks GET /history/<id> whether the prompt ended while its events went missing.
SILENCE_S = 60.0
# An upload or a download may take any time while bytes flow; this bounds each silence.
TRANSFER_TIMEOUT = bp.Timeout(HTTP_TIMEOUT_S, read=HTTP_TIMEOUT_S)
UPLOAD_SUBFOLDER = "blender"  # where the renders go in ComfyUI's input folder
PROGRESS_EVERY_S = 0.1  # the upload's progress reports, as the download's


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


def img2img_graph(text: str, steps: int, denoise: float, seed: int = 0,
                  checkpoint: str = "v1-5-pruned-emaonly.safetensors") -> dict:
    """ComfyUI's default image-to-image workflow, in the API format; its ``LoadImage`` node
    ("10") gets the render (``set_image``)."""
    return {
        "14": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "10": {"class_type": "LoadImage", "inputs": {"image": ""}},
        "12": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["14", 2]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["14", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["14", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": denoise, "model": ["14", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["12", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["14", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "blender", "images": ["8", 0]}},
    }


def load_image_node(graph: dict) -> str:
    """The id of the graph's first ``LoadImage`` node (the one that gets the render); raises
    ``ValueError`` if it has none."""
    for node_id, spec in graph.items():
        if isinstance(spec, dict) and spec.get("class_type") == "LoadImage":
            return node_id
    raise ValueError("the workflow has no LoadImage node to take the render")


def set_image(graph: dict, image: str) -> None:
    """Points the graph's first ``LoadImage`` node at ``image`` (``subfolder/name``)."""
    spec = graph[load_image_node(graph)]
    spec["inputs"] = dict(spec.get("inputs") or {}, image=image)


def run_prompt(session, graph: dict, prompt_id: str, token, report,
               sent: threading.Event | None = None, over: threading.Event | None = None) -> None:
    """Queues ``graph`` and follows it to its end (worker thread). ``report(event, value)``:
    ("queued", prompt_id), ("node", node_id), ("progress", (value, max)), and last, always,
    ("end", (state, detail)) with state "done", "interrupted", "failed" or "cancelled".
    ``sent`` is set before the prompt is sent, ``over`` once it has ended on the server:
    Cancel stops it on the server only in between (``stop_prompt``)."""
    state, detail = "failed", ""
    try:
        state, detail = queue_and_follow(session, graph, prompt_id, token, report, sent, over)
    except Exception as e:  # noqa: BLE001 - every failure is the job's state
        state, detail = _job_outcome(session.service, e)
    finally:
        report("end", (state, detail))


def _job_outcome(service: str, e: Exception) -> tuple[str, str]:
    """A job's (state, detail) for what one of its calls raised; re-raises what is no failure
    of a call (a bug)."""
    if isinstance(e, (bp.Cancelled, bp.ShuttingDown)):
        return "cancelled", ""
    if isinstance(e, bp.BackendPoolError):
        return "failed", str(e)
    if isinstance(e, OSError):  # a file: the render, the output folder, the download
        return "failed", str(e)
    if isinstance(e, (ValueError, TypeError, KeyError, AttributeError)):  # a reply of the wrong shape
        return "failed", f"unexpected reply from {service}: {e!r}"
    raise e


def queue_and_follow(session, graph: dict, prompt_id: str, token, report,
                     sent: threading.Event | None = None,
                     over: threading.Event | None = None) -> tuple[str, str]:
    """``run_prompt``'s work: (state, detail) of a prompt that ran; raises what a call raised."""
    with session.websocket(cancel=token) as ws:
        body = {"prompt": graph, "client_id": ws.client_id, "prompt_id": prompt_id}
        if sent is not None:
            # Before the request: a Cancel that finds this unset cancelled the token first,
            # so the request below raises Cancelled without sending anything.
            sent.set()
        r = session.request("POST", "/prompt", json=body, cancel=token,
                            timeout=HTTP_TIMEOUT_S)
        if not r.ok:  # rejected (validation): nothing runs, the socket can be reused
            if over is not None:
                over.set()
            ws.finish()
            return "failed", _rejection(r)
        report("queued", prompt_id)
        ended = _follow(session, ws, prompt_id, token, report)
        if over is not None:
            over.set()
        ws.finish()
        return ended


def run_render(session, render: str, graph: dict, prompt_id: str, out_dir: str,
               token, report, sent: threading.Event | None = None,
               over: threading.Event | None = None) -> None:
    """The render job (worker thread): uploads the PNG ``render``, runs ``graph`` with its
    first ``LoadImage`` node set to it, downloads the image the prompt made into
    ``out_dir``. Removes ``render`` when done with it, whatever happens.

    Reports ("phase", "uploading" | "running" | "downloading"); ("bytes", (done, total)) while
    uploading and downloading (``total`` 0 when unknown); what ``run_prompt`` reports while
    running; ("output", path) once the downloaded file is whole; and last, always,
    ("end", (state, detail)). A cancelled download leaves no file (``download``
    writes beside ``dest`` and renames once whole)."""
    state, detail = "failed", ""
    try:
        report("phase", "uploading")
        image = upload_image(session, render, token,
                             lambda done, total: report("bytes", (done, total)))
        _remove(render)
        set_image(graph, image)
        report("phase", "running")
        state, detail = queue_and_follow(session, graph, prompt_id, token, report, sent, over)
        if state != "done":
            return
        image = output_image(session, prompt_id, token)
        if image is None:
            state, detail = "failed", "the prompt made no image (no SaveImage or PreviewImage node?)"
            return
        report("phase", "downloading")
        os.makedirs(out_dir, exist_ok=True)
        # The prompt id makes the name unique: a second job never replaces a loaded image.
        name = os.path.basename(image["filename"].replace("\\", "/")) or "output.png"
        dest = os.path.join(out_dir, f"{prompt_id[:8]}_{name}")
        session.download("/view", dest, params=image, cancel=token, timeout=TRANSFER_TIMEOUT,
                         progress=lambda done, total: report("bytes", (done, total or 0)))
        report("output", dest)
    except Exception as e:  # noqa: BLE001 - every failure is the job's state
        state, detail = _job_outcome(session.service, e)
    finally:
        _remove(render)
        report("end", (state, detail))


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError:  # a temporary file: not worth failing the job for
        pass


class _ProgressFile:
    """A binary file read in pieces by ``files=`` (``request()`` asks a file object for its
    length first, then reads it while the body is sent), reporting the bytes read so far at
    most every ``PROGRESS_EVERY_S`` and at its end: the upload's progress."""

    def __init__(self, path: str, progress):
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._size = os.fstat(self._file.fileno()).st_size
        self._progress = progress
        self._last = 0.0  # when progress was last reported (time.monotonic())
        self._reported = -1  # and at which offset
        self.name = path

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def read(self, n: int = -1) -> bytes:
        data = self._file.read(n)
        now = time.monotonic()
        at = self._file.tell()
        if at != self._reported and (now - self._last >= PROGRESS_EVERY_S or at >= self._size):
            self._last, self._reported = now, at
            self._progress(at, self._size)
        return data

    def close(self) -> None:
        self._file.close()


def upload_image(session, path: str, token, progress) -> str:
    """Uploads the image file ``path`` (multipart, streamed from the file); returns the name
    a ``LoadImage`` node takes for it (``subfolder/name``). ``progress(done, total)``: bytes
    of the file sent so far."""
    f = _ProgressFile(path, progress)
    try:
        r = session.request(
            "POST", "/upload/image",
            files={"image": (os.path.basename(path), f, "image/png")},
            # overwrite: the name chosen here is the one used (ComfyUI would otherwise save
            # other bytes under a taken name as "name (1).png").
            data={"subfolder": UPLOAD_SUBFOLDER, "type": "input", "overwrite": "true"},
            cancel=token, timeout=TRANSFER_TIMEOUT,
        ).raise_for_status()
    finally:
        f.close()
    up = r.json()
    return f"{up['subfolder']}/{up['name']}" if up.get("subfolder") else up["name"]


def output_image(session, prompt_id: str, token) -> dict | None:
    """The first image the prompt saved (``type`` "output"), else the first it previewed
    ("temp"), as ``/view``'s query; None if it made none. An image a ``LoadImage`` node
    reports ("input") is not a result."""
    r = session.request("GET", f"/history/{prompt_id}", cancel=token, timeout=HTTP_TIMEOUT_S)
    entry = r.raise_for_status().json().get(prompt_id) or {}
    images = [image for output in (entry.get("outputs") or {}).values() if isinstance(output, dict)
              for image in output.get("images") or () if isinstance(image, dict) and image.get("filename")]
    for kind in ("output", "temp"):
        for image in images:
            if image.get("type", "output") == kind:
                return {"filename": image["filename"], "subfolder": image.get("subfolder", ""), "type": kind}
    return None


def _follow(session, ws, prompt_id, token, report) -> tuple[str, str]:
    outcome = ("failed", "ComfyUI ended the prompt without saying how")
    while True:
        try:
            event = ws.recv_json(timeout=SILENCE_S)
        except bp.TimeoutException:
            ended = _ended_in_history(session, prompt_id, token)
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


def _ended_in_history(session, prompt_id, token) -> tuple[str, str] | None:
    """The outcome recorded in ``GET /history/<id>`` if the prompt has ended (ComfyUI does not
    replay events a socket missed), else None."""
    r = session.request("GET", f"/history/{prompt_id}", cancel=token, timeout=HTTP_TIMEOUT_S)
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


def stop_prompt(session, prompt_id: str, token) -> str:
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
        session.request("POST", "/queue", json={"delete": [prompt_id]}, cancel=token,
                        timeout=HTTP_TIMEOUT_S).raise_for_status()
        session.request("POST", "/interrupt", json={"prompt_id": prompt_id}, cancel=token,
                        timeout=HTTP_TIMEOUT_S).raise_for_status()
        return "stopped on the server"
    except (bp.Cancelled, bp.ShuttingDown):
        return "not stopped on the server: the add-on was disabled"
    except bp.BackendPoolError as e:
        return f"not stopped on the server: {e}"
