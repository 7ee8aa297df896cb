"""manager.download(): a body saved to a file with progress on the calling thread, the GIL
released while bytes flow, cancelled from another thread, aborted by a callback that raises;
a status outside 2xx as HTTPStatusError."""

from __future__ import annotations

import os
import threading
import time

import pytest

import backend_pool
from backend_pool import Cancelled, Download, HTTPStatusError
from conftest import Ticker, config_for


def body(n: int) -> bytes:
    return bytes(range(256)) * (n // 256) + bytes(range(n % 256))


def leftovers(directory) -> list[str]:
    """Temporary files a download left beside its destination."""
    return [name for name in os.listdir(directory) if ".part-" in name]


def test_a_download_saves_the_body_with_monotonic_progress_ending_at_its_length(manager, tmp_path):
    n = 3_000_000
    dest = tmp_path / "video.mp4"
    calls = []
    saved = manager.download(
        "api",
        "/slow-download",
        dest,
        params={"n": n, "parts": 6, "gap_ms": 120},
        progress=lambda done, total: calls.append((done, total, threading.get_ident())),
    )
    assert isinstance(saved, Download)
    assert dest.read_bytes() == body(n)
    assert (saved.status_code, saved.status, saved.num_bytes_downloaded) == (200, 200, n)
    assert saved.path == str(dest) and saved.service == "api"
    assert saved.headers["content-length"] == str(n)
    assert len(calls) >= 3, calls  # every 100 ms at most while bytes flow, and at the end
    done = [c[0] for c in calls]
    assert done == sorted(done) and done[-1] == n
    assert {c[1] for c in calls} == {n}
    assert {c[2] for c in calls} == {threading.get_ident()}, "progress runs on the calling thread"
    assert leftovers(tmp_path) == []
    assert manager.stats()["services"][0]["http"]["in_use"] == 0


def test_the_gil_is_released_while_the_bytes_flow(manager, tmp_path):
    # About 1 s of body, 20 pieces 50 ms apart: a Python thread keeps running meanwhile.
    with Ticker() as ticker:
        t0 = time.monotonic()
        manager.download("api", "/slow-download?n=2000000&parts=20&gap_ms=50", tmp_path / "a.bin")
        took = time.monotonic() - t0
    assert took >= 0.9
    assert ticker.max_gap < 0.25, f"Python stalled {ticker.max_gap:.3f} s"
    assert ticker.ticks > 10_000


def test_a_download_cancelled_from_another_thread_leaves_no_file(manager, tmp_path):
    token = backend_pool.CancelToken()
    dest = tmp_path / "big.bin"
    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) == 1:  # the body is flowing: cancel from another thread
            threading.Thread(target=token.cancel).start()

    t0 = time.monotonic()
    with pytest.raises(Cancelled) as e:
        manager.download("api", "/slow-download?n=4000000&parts=40&gap_ms=50", dest, cancel=token, progress=progress)
    assert time.monotonic() - t0 < 1.5
    assert e.value.phase == "read" and e.value.service == "api"
    assert calls and calls[-1] < 4_000_000
    assert not dest.exists() and leftovers(tmp_path) == []
    http = manager.stats()["services"][0]["http"]
    assert http["in_use"] == 0 and http["errors"]["cancelled"] == 1


def test_a_callback_that_raises_aborts_the_download_and_its_exception_propagates(backends, tmp_path):
    m = backend_pool.PoolManager(config_for(backends, max_connections=1))
    try:
        assert m.request("api", "GET", "/ok").status_code == 200
        opened = backends.http.connections
        dest = tmp_path / "out.bin"
        calls = []

        def progress(done, total):
            calls.append(done)
            if len(calls) == 2:
                raise KeyError("the user closed the dialog")

        with pytest.raises(KeyError, match="the user closed the dialog"):
            m.download("api", "/slow-download?n=4000000&parts=40&gap_ms=30", dest, progress=progress)
        assert len(calls) == 2, "no call after the one that raised"
        assert not dest.exists() and leftovers(tmp_path) == []
        # The connection was closed mid-body, never reused: the next call opens another.
        assert m.request("api", "GET", "/ok").status_code == 200
        assert backends.http.connections == opened + 1
        assert m.stats()["services"][0]["http"]["in_use"] == 0
    finally:
        m.shutdown(1)


def test_a_callback_that_raises_at_the_end_raises_and_the_whole_file_stays(manager, tmp_path):
    dest = tmp_path / "small.bin"

    def progress(done, total):
        if done == total:
            raise RuntimeError("after the last byte")

    with pytest.raises(RuntimeError, match="after the last byte"):
        manager.download("api", "/download?n=1000", dest, progress=progress)
    assert dest.read_bytes() == body(1000)


def test_a_status_outside_2xx_is_an_http_status_error_with_the_response_and_no_file(manager, tmp_path):
    dest = tmp_path / "out.json"
    with pytest.raises(HTTPStatusError) as e:
        manager.download("api", "/prompt-error", dest, params={"x": 1})
    err = e.value
    assert err.status_code == err.status == 400 and err.error_class == "status"
    assert err.response.status_code == 400
    assert err.response.json()["node_errors"]["3"]["class_type"] == "KSampler"
    assert err.response.headers["content-type"] == "application/json"
    assert "GET /prompt-error?x=…" in str(err) and "400 Bad Request" in str(err)
    assert not dest.exists() and leftovers(tmp_path) == []
    with pytest.raises(HTTPStatusError) as e:
        manager.client("api").download("/status/503", dest)
    assert e.value.response.status_code == 503 and e.value.response.json() == {"status": "/status/503"}


def test_a_client_downloads_with_params_and_a_path_string(manager, tmp_path):
    dest = str(tmp_path / "x.bin")
    saved = manager.client("api").download("/download", dest, params={"n": 70_000})
    assert saved.num_bytes_downloaded == 70_000
    with open(dest, "rb") as f:
        assert f.read() == body(70_000)


def test_a_file_that_cannot_be_made_is_a_save_error_an_oserror_naming_it(manager, tmp_path):
    dest = tmp_path / "no such directory" / "out.bin"
    with pytest.raises(backend_pool.SaveError) as e:
        manager.download("api", "/download?n=1000", dest)
    err = e.value
    assert isinstance(err, OSError) and isinstance(err, backend_pool.BackendPoolError)
    assert "no such directory" in str(err) and err.service == "api", err
    assert manager.stats()["services"][0]["http"]["in_use"] == 0
