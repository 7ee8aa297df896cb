#!/usr/bin/env python3
"""A stand-in ComfyUI server: real aiohttp, ComfyUI's HTTP + WebSocket protocol.

Same server stack as ComfyUI (aiohttp ``AppRunner`` + ``TCPSite`` with aiohttp's
default keep-alive, WebSocket with ``heartbeat=None`` so the server never pings),
same routes (each also under ``/api``), same event order on the socket. Jobs are
simulated: no model, a tiny PNG as output.

Usage: comfyui_server.py [--host 127.0.0.1] [--port 8188] [--instance NAME]
       (or env PORT; 0: a free port, named in the first line it prints: "comfyui mock
       listening on http://HOST:PORT ...")

``--instance NAME`` (several stand-ins as one service, a test of sticky jobs): every HTTP
response carries ``X-Mock-Instance: NAME`` and every WebSocket event's ``data`` an
``"instance": NAME`` field, so a client can tell which machine served each part of a job.

Knobs a test can use, all optional, in the POST /prompt body:
  * node ``inputs.steps`` (int)         number of ``progress`` events (default 4)
  * ``extra_data.mock_step_seconds``    pause between progress events (default 0.1 s)
  * ``extra_data.mock_preview_bytes``   size of the binary preview frame payload
                                        (default: a tiny PNG; pad to test big frames)
  * a node with ``class_type: "MockError"`` makes the run end in ``execution_error``

``LoadImage`` as in ComfyUI: ``inputs.image`` names an image uploaded with
``POST /upload/image`` (``name``, ``subfolder/name``, or with a `` [input]`` / `` [output]`` /
`` [temp]`` annotation); a prompt naming one that was not uploaded is refused with ComfyUI's
400 (``prompt_outputs_failed_validation``, the node's ``custom_validation_failed`` error
``image - Invalid image file: NAME`` in ``node_errors``). Uploads are recorded by name and
hash, with ComfyUI's naming (``name (1).png`` for other bytes under a taken name, unless
``overwrite=true``); their bytes are kept up to 16 MiB each. Unlike the real node, the
stand-in's LoadImage reports the image it loaded as its output (``executed`` and the history),
so a test sees the upload was used.

The output node's image (``mock_<prompt id>.png``) is the first LoadImage's image when the
prompt has one (the stand-in's "model" gives its input back), else a tiny PNG. ``GET /view``
serves it, and uploaded images (``type=input``), as ComfyUI does, with their
``Content-Length``; a name it does not know gets the tiny PNG (ComfyUI: 404). An output node's
``inputs.mock_view_seconds`` (number) makes ``/view`` send that output over about that many
seconds, in pieces: a slow download, to cancel one.
"""

import argparse
import asyncio
import hashlib
import json
import logging
import mimetypes
import os
import platform
import posixpath
import struct
import sys
import time
import uuid
import zlib
from ipaddress import ip_address

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractAccessLogger

# Binary WebSocket frame types / image formats, as in ComfyUI's server.py.
BINARY_PREVIEW_IMAGE = 1
FORMAT_JPEG = 1
FORMAT_PNG = 2


def tiny_png(width=2, height=2, rgb=(255, 0, 0)):
    """A valid RGB PNG built with the standard library only."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


PNG = tiny_png()
KEEP_BYTES = 16 * 1024 * 1024  # an upload's bytes are kept (for /view) up to this size


class PeerAccessLogger(AbstractAccessLogger):
    """One line per request, with the client's port, uvicorn-style:

    127.0.0.1:54321 - "GET /prompt HTTP/1.1" 200 45B 0.001s
    """

    def log(self, request, response, time):  # noqa: A002 - aiohttp's signature
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            client = f"{peer[0]}:{peer[1]}"
        else:
            client = f"{request.remote or '-'}:-"
        self.logger.info(
            '%s - "%s %s HTTP/%d.%d" %d %dB %.3fs',
            client,
            request.method,
            request.path_qs,
            request.version.major,
            request.version.minor,
            response.status,
            response.body_length,
            time,
        )


class Comfy:
    def __init__(self, instance=None):
        self.instance = instance
        self.sockets = {}  # client_id -> WebSocketResponse
        self.number = 0
        self.pending = []  # [number, prompt_id, prompt, extra_data, outputs]
        self.running = []
        self.history = {}
        self.jobs = asyncio.Queue()
        self.interrupt = asyncio.Event()
        self.current_client = None
        self.current_node = None
        # (type, "subfolder/name") -> SHA-256 of what POST /upload/image saved there.
        self.uploads = {}
        # (type, "subfolder/name") -> (bytes, seconds to send them over): what /view serves.
        # Uploads up to KEEP_BYTES, and the outputs of prompts.
        self.files = {}

    # ---- uploaded images (LoadImage) ------------------------------------------
    def uploaded(self, image):
        """The (type, subfolder, name) of an uploaded image named as LoadImage's ``image``
        input names it (ComfyUI's annotated file path), or None."""
        kind = "input"
        for annotation in ("output", "input", "temp"):
            if image.endswith(f" [{annotation}]"):
                kind, image = annotation, image[: -len(annotation) - 3]
                break
        key = posixpath.normpath(image.replace("\\", "/")).lstrip("/")
        if (kind, key) not in self.uploads:
            return None
        subfolder, _, name = key.rpartition("/")
        return kind, subfolder, name

    def load_image_errors(self, prompt):
        """ComfyUI's validation of LoadImage nodes: {node_id: [error]}."""
        errors = {}
        for node_id, spec in prompt.items():
            if spec.get("class_type") != "LoadImage":
                continue
            image = (spec.get("inputs") or {}).get("image")
            if image is None:
                errors[node_id] = [{"type": "required_input_missing", "message": "Required input is missing",
                                    "details": "image", "extra_info": {"input_name": "image"}}]
            elif not isinstance(image, str) or self.uploaded(image) is None:
                errors[node_id] = [{"type": "custom_validation_failed",
                                    "message": "Custom validation failed for node",
                                    "details": f"image - Invalid image file: {image}",
                                    "extra_info": {"input_name": "image"}}]
        return errors

    # ---- messaging -------------------------------------------------------
    def queue_info(self):
        return {"exec_info": {"queue_remaining": len(self.pending) + len(self.running)}}

    async def send_json(self, event, data, sid=None):
        if self.instance is not None:
            data = {**data, "instance": self.instance}
        msg = json.dumps({"type": event, "data": data})
        if sid is None:
            targets = list(self.sockets.values())
        else:
            ws = self.sockets.get(sid)
            targets = [ws] if ws is not None else []
        for ws in targets:
            try:
                await ws.send_str(msg)
            except Exception as e:  # a client went away: ComfyUI logs and carries on
                logging.getLogger("comfyui").warning("send_str to a socket failed: %s", e)

    async def send_bytes(self, event_type, data, sid):
        ws = self.sockets.get(sid)
        if ws is None:
            return
        try:
            await ws.send_bytes(struct.pack(">I", event_type) + data)
        except Exception as e:
            logging.getLogger("comfyui").warning("send_bytes failed: %s", e)

    async def broadcast_status(self):
        await self.send_json("status", {"status": self.queue_info()})

    # ---- execution -------------------------------------------------------
    async def worker(self):
        while True:
            item = await self.jobs.get()
            if item not in self.pending:  # deleted from the queue meanwhile
                continue
            self.pending.remove(item)
            self.running.append(item)
            try:
                await self.execute(item)
            except Exception:
                logging.getLogger("comfyui").exception("execution crashed")
            finally:
                self.running.remove(item)
                self.current_client = None
                self.current_node = None
                await self.broadcast_status()

    async def execute(self, item):
        number, prompt_id, prompt, extra_data, outputs = item
        sid = extra_data.get("client_id")
        self.current_client = sid
        self.interrupt.clear()
        step_seconds = float(extra_data.get("mock_step_seconds", 0.1))
        preview_size = extra_data.get("mock_preview_bytes")
        messages = []
        started = time.time()

        async def msg(event, data):
            data = dict(data)
            messages.append([event, {**data, "timestamp": int(time.time() * 1000)}])
            if sid is not None:
                await self.send_json(event, data, sid)

        await msg("execution_start", {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        await msg("execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})

        node_ids = list(prompt.keys())
        # The node that "samples": the first one whose class_type says so, else the last.
        sampler = next(
            (n for n in node_ids if "sampler" in str(prompt[n].get("class_type", "")).lower()),
            node_ids[-1],
        )
        outputs_by_node = {}
        status = "success"
        output_bytes = PNG  # the first LoadImage's image, else a tiny PNG
        executed_nodes = []
        for node in node_ids:
            spec = prompt[node]
            self.current_node = node
            if sid is not None:
                await self.send_json("executing", {"node": node, "display_node": node, "prompt_id": prompt_id}, sid)
            if spec.get("class_type") == "MockError":
                status = "error"
                await msg(
                    "execution_error",
                    {
                        "prompt_id": prompt_id,
                        "node_id": node,
                        "node_type": "MockError",
                        "executed": executed_nodes,
                        "exception_message": "mock failure requested by the prompt",
                        "exception_type": "RuntimeError",
                        "traceback": ["Traceback (most recent call last):\n", "RuntimeError: mock failure\n"],
                        "current_inputs": {},
                        "current_outputs": {},
                    },
                )
                break
            if node == sampler:
                steps = spec.get("inputs", {}).get("steps", 4)
                steps = steps if isinstance(steps, int) and steps > 0 else 4
                for value in range(1, steps + 1):
                    try:
                        await asyncio.wait_for(self.interrupt.wait(), timeout=step_seconds)
                    except asyncio.TimeoutError:
                        pass
                    if self.interrupt.is_set():
                        status = "interrupted"
                        break
                    if sid is not None:
                        await self.send_json(
                            "progress", {"value": value, "max": steps, "prompt_id": prompt_id, "node": node}, sid
                        )
                    if value == 1 and sid is not None:
                        payload = PNG
                        if isinstance(preview_size, int) and preview_size > len(PNG):
                            payload = PNG + b"\x00" * (preview_size - len(PNG))
                        await self.send_bytes(BINARY_PREVIEW_IMAGE, struct.pack(">I", FORMAT_PNG) + payload, sid)
                if status == "interrupted":
                    await msg(
                        "execution_interrupted",
                        {"prompt_id": prompt_id, "node_id": node, "node_type": spec.get("class_type"),
                         "executed": executed_nodes},
                    )
                    break
            if spec.get("class_type") == "LoadImage":
                kind, subfolder, name = self.uploaded(spec["inputs"]["image"])
                loaded = self.files.get((kind, posixpath.join(subfolder, name)))
                if loaded is not None and output_bytes is PNG:
                    output_bytes = loaded[0]
                output = {"images": [{"filename": name, "subfolder": subfolder, "type": kind}]}
                outputs_by_node[node] = output
                if sid is not None:
                    await self.send_json(
                        "executed", {"node": node, "display_node": node, "output": output, "prompt_id": prompt_id}, sid
                    )
            executed_nodes.append(node)
            if node == node_ids[-1]:  # the output node
                output = {"images": [{"filename": f"mock_{prompt_id}.png", "subfolder": "", "type": "output"}]}
                seconds = (spec.get("inputs") or {}).get("mock_view_seconds", 0)
                seconds = float(seconds) if isinstance(seconds, (int, float)) and seconds > 0 else 0.0
                self.files[("output", f"mock_{prompt_id}.png")] = (output_bytes, seconds)
                outputs_by_node[node] = output
                if sid is not None:
                    await self.send_json(
                        "executed", {"node": node, "display_node": node, "output": output, "prompt_id": prompt_id}, sid
                    )
        if status == "success":
            await msg("execution_success", {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        self.history[prompt_id] = {
            "prompt": [number, prompt_id, prompt, extra_data, outputs],
            "outputs": outputs_by_node,
            "status": {"status_str": "success" if status == "success" else "error",
                       "completed": status == "success", "messages": messages},
            "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
                     for n in outputs_by_node},
        }
        # ComfyUI's prompt_worker sends this after every run, success or not:
        # the end-of-prompt marker clients wait for.
        self.current_node = None
        if sid is not None:
            await self.send_json("executing", {"node": None, "prompt_id": prompt_id}, sid)
        logging.getLogger("comfyui").info("Prompt executed in %.2f seconds", time.time() - started)


def json_response(data, status=200):
    return web.json_response(data, status=status)


def build_app(instance=None):
    comfy = Comfy(instance)
    routes = web.RouteTableDef()

    @routes.get("/ws")
    async def websocket_handler(request):
        ws = web.WebSocketResponse()  # heartbeat=None: the server never pings
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            comfy.sockets.pop(sid, None)  # reusing a session: the new socket replaces the old
        else:
            sid = uuid.uuid4().hex
        comfy.sockets[sid] = ws
        try:
            await comfy.send_json("status", {"status": comfy.queue_info(), "sid": sid}, sid)
            if comfy.current_client == sid and comfy.current_node is not None:
                await comfy.send_json("executing", {"node": comfy.current_node}, sid)
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    logging.getLogger("comfyui").warning("ws closed with exception %s", ws.exception())
        finally:
            if comfy.sockets.get(sid) is ws:
                comfy.sockets.pop(sid, None)
        return ws

    @routes.get("/prompt")
    async def get_prompt(request):
        return json_response(comfy.queue_info())

    @routes.post("/prompt")
    async def post_prompt(request):
        try:
            body = await request.json()
        except Exception:
            return json_response({"error": {"type": "invalid_json", "message": "Invalid JSON body",
                                             "details": "", "extra_info": {}}, "node_errors": {}}, 400)
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(prompt, dict) or not prompt:
            return json_response({"error": {"type": "no_prompt", "message": "No prompt provided",
                                            "details": "No prompt provided", "extra_info": {}},
                                  "node_errors": {}}, 400)
        node_errors = {}
        for node_id, spec in prompt.items():
            if not isinstance(spec, dict) or "class_type" not in spec:
                node_errors[node_id] = {
                    "errors": [{"type": "missing_node_type", "message": "Node has no class_type",
                                "details": f"Node ID '#{node_id}'", "extra_info": {}}],
                    "dependent_outputs": [], "class_type": None,
                }
        if not node_errors:
            # As ComfyUI: the failing node's errors, the output that depends on it (the
            # stand-in's output is the last node); the top-level details list the output
            # node's own errors only.
            output_id = list(prompt.keys())[-1]
            loads = comfy.load_image_errors(prompt)
            for node_id, errors in loads.items():
                node_errors[node_id] = {"errors": errors, "dependent_outputs": [output_id],
                                        "class_type": "LoadImage"}
            if loads:
                details = "\n".join(f"{e['message']}: {e['details']}" for e in loads.get(output_id, []))
                return json_response({"error": {"type": "prompt_outputs_failed_validation",
                                                "message": "Prompt outputs failed validation",
                                                "details": details, "extra_info": {}},
                                      "node_errors": node_errors}, 400)
        if node_errors:
            return json_response({"error": {"type": "prompt_outputs_failed_validation",
                                            "message": "Prompt outputs failed validation", "details": "",
                                            "extra_info": {}}, "node_errors": node_errors}, 400)
        number = comfy.number
        if "front" in body and body["front"]:
            number = -number
        if isinstance(body.get("number"), (int, float)):
            number = float(body["number"])
        comfy.number += 1
        extra_data = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        item = [number, prompt_id, prompt, extra_data, [list(prompt.keys())[-1]]]
        comfy.pending.append(item)
        comfy.jobs.put_nowait(item)
        await comfy.broadcast_status()
        return json_response({"prompt_id": prompt_id, "number": number, "node_errors": {}})

    @routes.get("/queue")
    async def get_queue(request):
        return json_response({"queue_running": comfy.running, "queue_pending": comfy.pending})

    @routes.post("/queue")
    async def post_queue(request):
        body = await request.json()
        if body.get("clear"):
            while not comfy.jobs.empty():
                comfy.jobs.get_nowait()
            comfy.pending.clear()
        for pid in body.get("delete", []):
            for item in list(comfy.pending):
                if item[1] == pid:
                    comfy.pending.remove(item)
        return web.Response(status=200)

    @routes.get("/history")
    async def get_history(request):
        return json_response(comfy.history)

    @routes.get("/history/{prompt_id}")
    async def get_history_one(request):
        pid = request.match_info["prompt_id"]
        return json_response({pid: comfy.history[pid]} if pid in comfy.history else {})

    @routes.post("/history")
    async def post_history(request):
        body = await request.json()
        if body.get("clear"):
            comfy.history.clear()
        for pid in body.get("delete", []):
            comfy.history.pop(pid, None)
        return web.Response(status=200)

    @routes.post("/interrupt")
    async def interrupt(request):
        # As ComfyUI: {"prompt_id": id} interrupts that prompt only while it is the one
        # running (a queued one stays queued: POST /queue {"delete": [id]} removes it); no
        # prompt_id interrupts whatever runs.
        try:
            body = await request.json()
        except Exception:
            body = {}
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        if prompt_id is None or any(item[1] == prompt_id for item in comfy.running):
            comfy.interrupt.set()
        return web.Response(status=200)

    @routes.post("/free")
    async def free(request):
        return web.Response(status=200)

    @routes.get("/system_stats")
    async def system_stats(request):
        return json_response({
            "system": {
                "os": os.name,
                "ram_total": 24 * 1024**3,
                "ram_free": 16 * 1024**3,
                "comfyui_version": "0.0.0-mock",
                "python_version": sys.version,
                "pytorch_version": "none (mock)",
                "embedded_python": False,
                "argv": sys.argv,
            },
            "devices": [{
                "name": "cpu", "type": "cpu", "index": None,
                "vram_total": 0, "vram_free": 0, "torch_vram_total": 0, "torch_vram_free": 0,
            }],
        })

    @routes.get("/view")
    async def view(request):
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        kind = query.get("type") or "output"
        key = posixpath.normpath(posixpath.join(query.get("subfolder", ""), query["filename"])).lstrip("/")
        if (kind, key) not in comfy.files:
            return web.Response(body=PNG, content_type="image/png")
        data, seconds = comfy.files[(kind, key)]
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        if not seconds:
            return web.Response(body=data, content_type=content_type)
        # Slowly, in 50 pieces, with the length up front (a download's progress has a total).
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.content_length = len(data)
        await response.prepare(request)
        piece = max(1, -(-len(data) // 50))
        try:
            for at in range(0, len(data), piece):
                await response.write(data[at:at + piece])
                await asyncio.sleep(seconds / 50)
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):  # the client went away (a cancel)
            pass
        return response

    @routes.post("/upload/image")
    async def upload_image(request):
        post = await request.post()
        image = post.get("image")
        if image is None or not hasattr(image, "file"):
            return web.Response(status=400)
        data = image.file.read()
        kind = post.get("type") or "input"
        if kind not in ("input", "output", "temp") or not image.filename:
            return web.Response(status=400)
        subfolder = post.get("subfolder", "")
        folder = posixpath.normpath(subfolder.replace("\\", "/")).lstrip("/")
        folder = "" if folder == "." else folder
        if folder.startswith(".."):
            return web.Response(status=400)
        # ComfyUI's naming: another image under a taken name becomes "name (1).ext" unless
        # overwrite is "true" or "1"; the same bytes again keep the name.
        digest = hashlib.sha256(data).hexdigest()
        name = image.filename
        stem, ext = posixpath.splitext(name)
        i = 1
        while post.get("overwrite") not in ("true", "1"):
            held = comfy.uploads.get((kind, posixpath.join(folder, name)))
            if held is None or held == digest:
                break
            name = f"{stem} ({i}){ext}"
            i += 1
        comfy.uploads[(kind, posixpath.join(folder, name))] = digest
        if len(data) <= KEEP_BYTES:
            comfy.files[(kind, posixpath.join(folder, name))] = (data, 0.0)
        else:  # not kept: /view would serve stale bytes under this name
            comfy.files.pop((kind, posixpath.join(folder, name)), None)
        return json_response({"name": name, "subfolder": subfolder, "type": kind, "size": len(data)})

    @routes.get("/object_info")
    async def object_info(request):
        return json_response({"KSampler": {"name": "KSampler", "output_node": False},
                              "LoadImage": {"name": "LoadImage", "output_node": False},
                              "SaveImage": {"name": "SaveImage", "output_node": True}})

    @web.middleware
    async def origin_only_middleware(request, handler):
        # ComfyUI refuses cross-origin requests to a loopback server: Origin must match Host.
        origin = request.headers.get("Origin")
        host = request.headers.get("Host")
        if origin and host:
            from urllib.parse import urlparse
            o = urlparse(origin)
            origin_host = o.netloc
            try:
                loopback = ip_address(host.rsplit(":", 1)[0].strip("[]")).is_loopback
            except ValueError:
                loopback = host.startswith("localhost")
            if loopback and origin_host != host:
                return web.Response(status=403)
        return await handler(request)

    @web.middleware
    async def instance_middleware(request, handler):
        response = await handler(request)
        if instance is not None and not response.prepared:
            response.headers["X-Mock-Instance"] = instance
        return response

    app = web.Application(client_max_size=100 * 1024 * 1024,
                          middlewares=[origin_only_middleware, instance_middleware])
    # Every route twice, as in ComfyUI: /x and /api/x.
    api_routes = web.RouteTableDef()
    for route in routes:
        api_routes.route(route.method, "/api" + route.path)(route.handler)
    app.add_routes(api_routes)
    app.add_routes(routes)

    async def start_worker(app):
        app["worker"] = asyncio.create_task(comfy.worker())
        yield
        app["worker"].cancel()
        for ws in list(comfy.sockets.values()):
            await ws.close()

    app.cleanup_ctx.append(start_worker)
    return app


async def main(host, port, instance=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    app = build_app(instance)
    # Like ComfyUI: AppRunner + TCPSite, aiohttp's default keep-alive (no keepalive_timeout given).
    runner = web.AppRunner(app, access_log=logging.getLogger("aiohttp.access"), access_log_class=PeerAccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    port = runner.addresses[0][1]  # the bound port: --port 0 picks a free one
    print(f"comfyui mock listening on http://{host}:{port} (aiohttp, python {platform.python_version()})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8188")))
    parser.add_argument("--instance", default=None, help="name sent in X-Mock-Instance and in events")
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, args.instance))
