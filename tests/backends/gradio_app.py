#!/usr/bin/env python3
"""A tiny Gradio 5 app standing in for Wan2GP (a queued, slow, generator job).

One queued generator event, ``api_name="generate"``: inputs ``prompt`` (text),
``steps`` (number, default 5) and ``step_seconds`` (number, default 0.6); it yields
one JSON progress value per step (~3 s in all with the defaults), then a final one
with ``done: true``. Gradio's default concurrency (1 job at a time per event) applies,
as in Wan2GP.

Usage: gradio_app.py [PORT]   (else env PORT, else GRADIO_SERVER_PORT, else 7860)
Start with GRADIO_ANALYTICS_ENABLED=False and NO_PROXY=127.0.0.1,localhost.
Call API: POST /gradio_api/call/generate {"data": [prompt, steps, step_seconds]} (all three:
Gradio 5.29 fills no defaults, a shorter list ends in ``event: error`` / ``data: null``).

A second queued event, ``api_name="slow"`` with ``concurrency_limit=1`` (its own queue, so it
never delays ``generate``): inputs ``prompt`` and ``step_seconds``; sleeps that long, then
returns one JSON value. Queued jobs pile up behind one another, each job's SSE stream held
open until its turn and for its run, as Wan2GP's video jobs do.

A third event, ``api_name="inspect_file"``: input one file (a ``FileData`` whose ``path`` is
what ``POST /gradio_api/upload`` returned), output its ``name``, ``size`` and ``adler32`` (``zlib.adler32``), so a
test sees the uploaded bytes reached the event.
"""

import logging
import os
import sys
import time
import zlib

import gradio as gr


def generate(prompt, steps=5, step_seconds=0.6):
    steps = max(1, int(steps if steps is not None else 5))
    step_seconds = max(0.0, float(step_seconds if step_seconds is not None else 0.6))
    for step in range(1, steps + 1):
        time.sleep(step_seconds)
        yield {"step": step, "total": steps, "progress": round(step / steps, 4), "prompt": prompt, "done": False}
    yield {"step": steps, "total": steps, "progress": 1.0, "prompt": prompt, "done": True,
           "video": f"mock_{zlib.crc32(str(prompt).encode()):08x}.mp4"}


def slow(prompt, seconds=1.0):
    seconds = max(0.0, float(seconds if seconds is not None else 1.0))
    time.sleep(seconds)
    return {"prompt": prompt, "slept": seconds, "done": True}


def inspect_file(path):
    with open(path, "rb") as f:
        data = f.read()
    return {"name": os.path.basename(path), "size": len(data), "adler32": zlib.adler32(data)}


def port_from_args():
    if len(sys.argv) > 1:
        return int(sys.argv[1])
    return int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)


with gr.Blocks(title="mock wan2gp", analytics_enabled=False) as demo:
    prompt = gr.Textbox(label="prompt")
    steps = gr.Number(label="steps", value=5, precision=0)
    step_seconds = gr.Number(label="step_seconds", value=0.6)
    out = gr.JSON(label="progress")
    button = gr.Button("Generate")
    button.click(generate, inputs=[prompt, steps, step_seconds], outputs=out, api_name="generate")
    slow_button = gr.Button("Slow")
    slow_button.click(slow, inputs=[prompt, step_seconds], outputs=out, api_name="slow",
                      concurrency_limit=1)
    upload = gr.File(label="file", type="filepath")
    inspect_button = gr.Button("Inspect")
    inspect_button.click(inspect_file, inputs=upload, outputs=out, api_name="inspect_file")


if __name__ == "__main__":
    demo.queue().launch(server_name="127.0.0.1", server_port=port_from_args(), prevent_thread_lock=True)
    # Gradio runs uvicorn at log_level "warning": turn uvicorn's access log back on, so the
    # log shows one line per request with the client's host:port (tests count connections).
    logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    demo.block_thread()
