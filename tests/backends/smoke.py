#!/usr/bin/env python3
"""End-to-end smoke check of the servers start.sh started (run with the venv's python,
after `source $BACKENDS_DIR/env`). Exits non-zero on the first failure.

  $BACKENDS_VENV/bin/python tests/backends/smoke.py [--keepalive]

--keepalive also checks that uvicorn (rvc) closes an idle connection after ~5 s while
aiohttp (comfyui) keeps it (takes ~7 s more).
"""

import asyncio
import base64
import http.client
import io
import json
import os
import socket
import struct
import sys
import time
import uuid
import wave
from urllib.parse import urlparse

import aiohttp


def env(name):
    v = os.environ.get(name)
    if not v:
        sys.exit(f"{name} is not set: source $BACKENDS_DIR/env first")
    return v


def hostport(url):
    u = urlparse(url)
    return u.hostname, u.port


def request(url, method="GET", path="/", body=None, headers=None):
    host, port = hostport(url)
    c = http.client.HTTPConnection(host, port, timeout=30)
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    payload = r.read()
    c.close()
    return r.status, r.getheader("content-type", ""), payload


def check(cond, what):
    if not cond:
        sys.exit(f"FAIL: {what}")
    print(f"ok   {what}")


def litellm():
    url, key = env("BACKEND_LITELLM_URL"), env("BACKEND_LITELLM_KEY")
    s, _, b = request(url, path="/health/liveliness")
    check(s == 200 and b"alive" in b, "litellm GET /health/liveliness")
    auth = {"Authorization": f"Bearer {key}"}
    msg = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    s, _, b = request(url, "POST", "/v1/chat/completions", msg, auth)
    check(s == 200 and json.loads(b)["choices"][0]["message"]["content"] == "hello from mock",
          "litellm POST /v1/chat/completions")
    s, ct, b = request(url, "POST", "/chat/completions", {**msg, "stream": True}, auth)
    text = b.decode()
    check(s == 200 and ct.startswith("text/event-stream") and text.rstrip().endswith("data: [DONE]"),
          "litellm stream ends with data: [DONE]")
    s, _, _ = request(url, "POST", "/v1/chat/completions", msg)
    check(s == 401, "litellm without a key: 401")


def gradio(var):
    url = env(var)
    s, _, _ = request(url, "HEAD", "/")
    check(s == 200, f"{var} HEAD /")
    s, _, b = request(url, "POST", "/gradio_api/call/generate", {"data": ["smoke", 3, 0.2]})
    check(s == 200 and "event_id" in json.loads(b), f"{var} POST /gradio_api/call/generate")
    eid = json.loads(b)["event_id"]
    s, ct, b = request(url, path=f"/gradio_api/call/generate/{eid}")
    text = b.decode()
    check(s == 200 and ct.startswith("text/event-stream") and "event: complete" in text
          and text.count("event: generating") == 4, f"{var} SSE stream: 4 x generating, then complete")


async def comfyui_ws():
    url = env("BACKEND_COMFYUI_URL")
    cid = uuid.uuid4().hex
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{url}/ws?clientId={cid}", autoping=True) as ws:
            first = await ws.receive_json(timeout=10)
            check(first["type"] == "status" and first["data"]["sid"] == cid, "comfyui ws first message status+sid")
            prompt = {"3": {"class_type": "KSampler", "inputs": {"steps": 3}},
                      "9": {"class_type": "SaveImage", "inputs": {}}}
            async with s.post(f"{url}/prompt", json={"prompt": prompt, "client_id": cid}) as r:
                body = await r.json()
                check(r.status == 200 and {"prompt_id", "number", "node_errors"} <= set(body), "comfyui POST /prompt")
            pid = body["prompt_id"]
            types, binary = [], []
            while True:
                m = await ws.receive(timeout=20)
                if m.type == aiohttp.WSMsgType.BINARY:
                    binary.append(m.data)
                    types.append("<binary>")
                    continue
                msg = json.loads(m.data)
                types.append(msg["type"])
                d = msg["data"]
                if msg["type"] == "executing" and d.get("node") is None and d.get("prompt_id") == pid:
                    break
            # the status broadcast that follows the run
            m = await ws.receive_json(timeout=10)
            types.append(m["type"])
            print("     events:", " ".join(types))
            check(types[0] == "status" and "execution_start" in types and types.count("progress") == 3
                  and "executed" in types and types[-1] == "status", "comfyui ws event order")
            check(len(binary) == 1 and struct.unpack(">II", binary[0][:8]) == (1, 2)
                  and binary[0][8:16] == b"\x89PNG\r\n\x1a\n", "comfyui binary preview frame (type 1, PNG)")
        async with s.get(f"{url}/api/history/{pid}") as r:
            h = await r.json()
            check(h[pid]["status"]["status_str"] == "success", "comfyui GET /api/history/{id}")


def comfyui():
    url = env("BACKEND_COMFYUI_URL")
    for path in ("/prompt", "/api/prompt", "/queue", "/system_stats"):
        s, _, _ = request(url, path=path)
        check(s == 200, f"comfyui GET {path}")
    s, _, _ = request(url, path="/prompt", headers={"Origin": "http://evil.example"})
    check(s == 403, "comfyui 403 on a foreign Origin")
    asyncio.run(comfyui_ws())


def wav_bytes():
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(struct.pack("<4h", 1000, -1000, 2000, -2000))
    return out.getvalue()


def rvc():
    url = env("BACKEND_RVC_URL")
    s, _, b = request(url, path="/models")
    check(s == 200 and json.loads(b)["models"], "rvc GET /models")
    s, _, _ = request(url, "POST", "/models/mock-voice")
    check(s == 200, "rvc POST /models/mock-voice")
    s, _, b = request(url, path="/params")
    check(s == 200 and "f0method" in json.loads(b), "rvc GET /params")
    s, ct, b = request(url, "POST", "/convert", {"audio_data": base64.b64encode(wav_bytes()).decode()})
    with wave.open(io.BytesIO(b)) as w:
        frames = struct.unpack("<4h", w.readframes(4))
    check(s == 200 and ct == "audio/wav" and frames == (500, -500, 1000, -1000), "rvc POST /convert")
    s, _, _ = request(url, "POST", "/convert", {"audio_data": "not base64!!"})
    check(s == 400, "rvc 400 on bad base64")


def idle_close_after(url, path, idle):
    """Send one request on a raw socket, stay idle, report whether the server closed it."""
    host, port = hostport(url)
    sock = socket.create_connection((host, port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    sock.settimeout(5)
    sock.recv(65536)
    t0 = time.monotonic()
    sock.settimeout(idle)
    try:
        closed = sock.recv(1) == b""
    except socket.timeout:
        closed = False
    elapsed = time.monotonic() - t0
    sock.close()
    return closed, elapsed


def keepalive():
    closed, t = idle_close_after(env("BACKEND_RVC_URL"), "/models", 7)
    check(closed and 4.5 <= t <= 6.5, f"uvicorn (rvc) closed the idle connection after {t:.2f} s")
    closed, t = idle_close_after(env("BACKEND_COMFYUI_URL"), "/prompt", 7)
    check(not closed, f"aiohttp (comfyui) kept the idle connection {t:.2f} s")


if __name__ == "__main__":
    litellm()
    gradio("BACKEND_GRADIO_URL")
    gradio("BACKEND_GRADIO2_URL")
    comfyui()
    rvc()
    if "--keepalive" in sys.argv:
        keepalive()
    print("smoke: all checks passed")
