"""Against the real servers of tests/backends/ (ComfyUI's protocol on aiohttp, Gradio 5.29):
an upload used by a prompt and by an event, a 400 read through HTTPStatusError, a download.

Skipped unless the servers' addresses are in the environment (`source
$BACKENDS_DIR/env` after tests/backends/start.sh); .ci/real_backends.sh runs this file with
them up and BACKEND_POOL_REAL_BACKENDS=1, which turns a missing address into a failure.
"""

from __future__ import annotations

import json
import os
import time
import zlib

import pytest

import backend_pool
from backend_pool import HTTPStatusError

NEEDED = ("BACKEND_COMFYUI_URL", "BACKEND_GRADIO_URL")
MISSING = [name for name in NEEDED if not os.environ.get(name)]

if MISSING and os.environ.get("BACKEND_POOL_REAL_BACKENDS") == "1":
    raise RuntimeError(f"BACKEND_POOL_REAL_BACKENDS=1 but {MISSING} not set: source $BACKENDS_DIR/env")
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"real backends not running ({', '.join(MISSING)} unset)")

# A valid 4×4 RGB PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000004000000040802000000269309290000001049444154789c63f8"
    "dfc000470cc471007ea217f15da160050000000049454e44ae426082"
)


@pytest.fixture(scope="module")
def real():
    m = backend_pool.PoolManager(
        {
            "maintenance_interval_ms": 100,
            "service": [
                {
                    "name": "comfyui",
                    "url": os.environ.get("BACKEND_COMFYUI_URL", "http://127.0.0.1:9"),
                    "health_path": "/prompt",
                    "http": {"max_connections": 2, "min_connections": 0},
                    "websocket": {"client_id_param": "clientId", "max_connections": 1, "min_connections": 0},
                },
                {
                    "name": "wan2gp",
                    "url": os.environ.get("BACKEND_GRADIO_URL", "http://127.0.0.1:9"),
                    "health_path": "/",
                    "http": {"max_connections": 2, "min_connections": 0},
                },
            ],
        }
    )
    yield m
    m.shutdown(2)


def graph(image: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bp"}},
    }


def test_comfyui_a_prompt_loads_an_uploaded_png_and_refuses_one_never_uploaded(real, tmp_path):
    comfy = real.client("comfyui")
    subfolder = f"bp-py-{os.getpid()}-{time.time_ns()}"
    image = f"{subfolder}/render.png"
    # Not uploaded yet: a 400 whose JSON body says why, read through HTTPStatusError.
    with pytest.raises(HTTPStatusError) as e:
        comfy.post("/prompt", json={"prompt": graph(image)}).raise_for_status()
    err = e.value
    assert err.status_code == 400 and err.error_class == "status" and "POST /prompt" in str(err)
    why = err.response.json()
    assert why["error"]["type"] == "prompt_outputs_failed_validation", why
    node = why["node_errors"]["1"]
    assert node["class_type"] == "LoadImage" and node["dependent_outputs"] == ["2"], why
    assert node["errors"][0]["details"] == f"image - Invalid image file: {image}", why

    # Uploaded from a path (streamed multipart), then the same prompt runs.
    path = tmp_path / "render.png"
    path.write_bytes(PNG)
    up = comfy.post("/upload/image", files={"image": path}, data={"subfolder": subfolder, "type": "input"})
    assert up.raise_for_status().json() == {"name": "render.png", "subfolder": subfolder, "type": "input", "size": len(PNG)}
    with real.websocket("comfyui") as ws:
        queued = comfy.post(
            "/prompt",
            json={"prompt": graph(image), "client_id": ws.client_id, "extra_data": {"mock_step_seconds": 0.01}},
        ).raise_for_status()
        prompt_id = queued.json()["prompt_id"]
        executed = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = ws.recv(timeout=15)
            if isinstance(msg, bytes):
                continue  # a preview image
            event = json.loads(msg)
            data = event["data"]
            if data.get("prompt_id") != prompt_id:
                continue
            if event["type"] == "executed":
                executed.append(data)
            if event["type"] == "executing" and data["node"] is None:
                break
        ws.finish()
    loaded = next(e for e in executed if e["node"] == "1")
    assert loaded["output"]["images"] == [{"filename": "render.png", "subfolder": subfolder, "type": "input"}]
    history = comfy.get(f"/history/{prompt_id}").json()[prompt_id]
    assert history["status"]["completed"] is True

    # An output fetched by query into a file, with progress.
    calls = []
    saved = real.download(
        "comfyui",
        "/view",
        tmp_path / "out.png",
        params={"filename": f"mock_{prompt_id}.png", "subfolder": "", "type": "output"},
        progress=lambda done, total: calls.append((done, total)),
    )
    assert saved.headers["content-type"] == "image/png"
    assert (tmp_path / "out.png").read_bytes().startswith(b"\x89PNG")
    assert calls[-1] == (saved.num_bytes_downloaded, saved.num_bytes_downloaded)
    errors = real.stats()["services"][0]["http"]["errors"]
    assert not any(n for kind, n in errors.items() if kind != "status"), errors


def test_gradio_a_file_uploaded_through_gradio_api_upload_is_passed_to_an_event(real):
    wan = real.client("wan2gp")
    data = bytes((i * 7 ^ (i >> 5)) & 0xFF for i in range(200_000))
    paths = wan.post("/gradio_api/upload", files=[("files", ("in put.bin", data))]).raise_for_status().json()
    assert len(paths) == 1, paths
    file = {"path": paths[0], "meta": {"_type": "gradio.FileData"}}
    event_id = wan.post("/gradio_api/call/inspect_file", json={"data": [file]}).raise_for_status().json()["event_id"]
    with real.stream("wan2gp", "GET", f"/gradio_api/call/inspect_file/{event_id}") as s:
        events = [e for e in s.iter_sse() if e.event in ("complete", "error")]
    assert [e.event for e in events] == ["complete"], events
    assert events[0].json() == [{"name": "in put.bin", "size": len(data), "adler32": zlib.adler32(data)}]
