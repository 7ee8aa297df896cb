"""upload_progress=(sent, total) on requests with a body (files=, data=, json=), as Rust's
RequestBuilder::upload_progress: on the calling thread, at most every 100 ms and once at the
end, the GIL taken only for the call; an exception in it cancels the upload (the connection
closed, nothing sent again) and propagates. And files= on stream()."""

from __future__ import annotations

import json
import threading
import time

import pytest

import backend_pool
from backend_pool import HTTPStatusError
from conftest import config_for

# The server reads 64 KiB every 5 ms: 8 MiB take over a second, socket buffers aside.
SLOW = "/discard?gap_ms=5"
SIZE = 8 * 1024 * 1024


class Counter:
    """A pure-Python thread counting while the upload runs: it advances between two
    progress calls only if the GIL was free between them."""

    def __init__(self):
        self.n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.n += 1
            time.sleep(0.001)

    def stop(self):
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("body", ["files", "data"])
def test_progress_reports_sent_of_total_every_100_ms_and_at_the_end_without_holding_the_gil(
    manager, tmp_path, body
):
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        f.truncate(SIZE)
    calls = []
    counter = Counter()

    def progress(sent, total):
        calls.append((time.monotonic(), sent, total, counter.n, threading.get_ident()))

    kwargs = {"files": {"big": str(path)}} if body == "files" else {"data": b"\0" * SIZE}
    try:
        got = manager.request("api", "POST", SLOW, upload_progress=progress, **kwargs).json()
    finally:
        counter.stop()
    total = got["received"]
    assert total >= SIZE
    assert len(calls) >= 3, calls
    assert all(c[2] == total for c in calls), calls
    assert calls[-1][1] == total, "a last call at the end"
    sents = [c[1] for c in calls]
    assert sents == sorted(sents) and sents[0] < total
    assert {c[4] for c in calls} == {threading.get_ident()}, "on the calling thread"
    gaps = [b[0] - a[0] for a, b in zip(calls, calls[1:-1])]
    assert all(g >= 0.09 for g in gaps), gaps
    # The GIL was free between the calls: the other thread ran.
    assert all(b[3] > a[3] for a, b in zip(calls, calls[1:-1])), calls


def test_a_client_verb_and_json_take_upload_progress(manager):
    calls = []
    r = manager.client("api").post("/echo", json={"a": 1}, upload_progress=lambda s, t: calls.append((s, t)))
    assert r.status_code == 200
    n = len(b'{"a":1}')
    assert calls == [(n, n)]


def test_a_raising_callback_cancels_the_upload_closes_its_connection_and_sends_nothing_again(backends):
    m = backend_pool.PoolManager(config_for(backends, max_connections=1))
    try:
        assert m.request("api", "GET", "/ok").status_code == 200
        opened, requests = backends.http.connections, backends.http.requests
        seen = []

        def progress(sent, total):
            seen.append(sent)
            raise KeyError("stop the upload")

        t0 = time.monotonic()
        with pytest.raises(KeyError, match="stop the upload"):
            m.request("api", "POST", SLOW, data=b"\0" * SIZE, upload_progress=progress)
        assert time.monotonic() - t0 < 1.0
        assert len(seen) == 1, "no call after the one that raised"
        assert seen[0] < SIZE, "stopped mid-body"
        assert backends.http.requests == requests + 1, "sent once, never again"
        http = m.stats()["services"][0]["http"]
        assert http["in_use"] == 0 and http["errors"]["cancelled"] == 1, http
        # The half-sent request's connection was closed, never reused.
        assert m.request("api", "GET", "/ok").status_code == 200
        assert backends.http.connections == opened + 1
    finally:
        m.shutdown(1)


def test_upload_progress_must_be_callable(manager, backends):
    before = backends.http.requests
    with pytest.raises(TypeError, match="upload_progress"):
        manager.request("api", "POST", "/upload", data=b"x", upload_progress=42)  # type: ignore[arg-type]
    assert backends.http.requests == before


def test_files_on_a_stream_send_the_multipart_form_and_stream_the_answer(manager):
    calls = []
    with manager.stream(
        "api",
        "POST",
        "/upload",
        files={"f": ("a.txt", b"abc")},
        data={"field": "v"},
        upload_progress=lambda s, t: calls.append((s, t)),
    ) as s:
        assert s.status_code == 200
        got = json.loads(s.read())
    assert [(p["name"], p["filename"], p["text"]) for p in got["parts"]] == [
        ("field", None, "v"),
        ("f", "a.txt", "abc"),
    ]
    assert got["content_type"].startswith("multipart/form-data; boundary=")
    n = int(got["content_length"])
    assert calls[-1] == (n, n)
    with manager.client("api").stream("POST", "/status/500", files={"f": b"x"}) as s:
        with pytest.raises(HTTPStatusError):
            s.raise_for_status()
