#!/usr/bin/env python3
"""A stand-in for rvc-python's API server: FastAPI on uvicorn, same contract.

Same stack and defaults as the real server (``uvicorn.run(app, host, port)``: 5 s
keep-alive, access log on, one line per request with the client's host:port), same
routes and JSON shapes. Conversion is simulated: the input WAV (16-bit PCM) comes
back with its samples scaled by ``RVC_GAIN`` (default 0.5), same rate and channels.

Usage: rvc_server.py [--host 127.0.0.1] [--port 5050]   (or env PORT)
Env: RVC_CONVERT_SECONDS (default 0): extra time a conversion takes, to hold a
connection busy in concurrency tests.
"""

import argparse
import array
import base64
import binascii
import io
import os
import sys
import time
import wave

import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

MODELS = ["mock-voice", "mock-voice-2"]
DEFAULT_PARAMS = {
    "f0method": "rmvpe",
    "f0up_key": 0,
    "index_rate": 0.5,
    "filter_radius": 3,
    "resample_sr": 0,
    "rms_mix_rate": 0.25,
    "protect": 0.33,
}


class ConvertAudioRequest(BaseModel):
    audio_data: str  # base64 WAV


class SetParamsRequest(BaseModel):
    params: dict


class State:
    current_model = "mock-voice"
    params = dict(DEFAULT_PARAMS)


def convert_wav(data: bytes, gain: float) -> bytes:
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            nchannels, sampwidth, framerate, nframes = (
                w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes())
            frames = w.readframes(nframes)
    except (wave.Error, EOFError) as e:
        raise HTTPException(status_code=400, detail=f"audio_data is not a WAV file: {e}")
    if sampwidth != 2:
        raise HTTPException(status_code=400, detail="only 16-bit PCM WAV is supported")
    samples = array.array("h")
    samples.frombytes(frames[: len(frames) - len(frames) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    for i, s in enumerate(samples):
        samples[i] = max(-32768, min(32767, int(s * gain)))
    if sys.byteorder == "big":
        samples.byteswap()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(nchannels)
        w.setsampwidth(2)
        w.setframerate(framerate)
        w.writeframes(samples.tobytes())
    return out.getvalue()


def create_app() -> FastAPI:
    app = FastAPI(title="rvc mock")
    state = State()

    @app.post("/convert")
    def rvc_convert(request: ConvertAudioRequest):
        if not state.current_model:
            raise HTTPException(status_code=400, detail="No model loaded. Please load a model first.")
        try:
            audio = base64.b64decode(request.audio_data, validate=True)
        except (binascii.Error, ValueError) as e:
            raise HTTPException(status_code=400, detail=f"audio_data is not valid base64: {e}")
        delay = float(os.environ.get("RVC_CONVERT_SECONDS", "0"))
        if delay > 0:
            time.sleep(delay)
        out = convert_wav(audio, float(os.environ.get("RVC_GAIN", "0.5")))
        return Response(content=out, media_type="audio/wav")

    @app.get("/models")
    def list_models():
        return JSONResponse(content={"models": MODELS})

    @app.post("/models/{model_name}")
    def load_model(model_name: str):
        if model_name not in MODELS:
            raise HTTPException(status_code=400, detail=f"Model {model_name} not found.")
        state.current_model = model_name
        return JSONResponse(content={"message": f"Model {model_name} loaded successfully"})

    @app.get("/params")
    def get_params():
        return JSONResponse(content=dict(state.params))

    @app.post("/params")
    def set_params(request: SetParamsRequest):
        unknown = set(request.params) - set(DEFAULT_PARAMS)
        if unknown:
            raise HTTPException(status_code=400, detail=f"unknown parameter(s): {sorted(unknown)}")
        state.params.update(request.params)
        return JSONResponse(content={"message": "Parameters updated successfully"})

    return app


app = create_app()

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5050")))
    args = parser.parse_args()
    # As rvc-python does: uvicorn defaults (timeout_keep_alive=5, access_log on).
    uvicorn.run(app, host=args.host, port=args.port)
