"""Cancellation from another Python thread: a `CancelToken` given to a call, `cancel()` on a
stream or a WebSocket, and `close()` that never waits for the thread blocked reading.

Each blocked call runs on the test's thread; another thread cancels it after `DELAY`. The
latency printed (`pytest -s`) is from the `cancel()` call to the exception, asserted below
`BOUND` (generous: loopback, debug build, a busy machine).
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import threading
import time

import pytest

import backend_pool
from backend_pool import BackendPoolError, CancelToken, Cancelled
from conftest import config_for, wait_until

BOUND = 1.0  # seconds from cancel() to the exception
DELAY = 0.3  # seconds the call is blocked before the cancel


class Canceller:
    """Calls `action` on its own thread after `DELAY`, and records when."""

    def __init__(self, action):
        self.at = None
        self.returned_after = None
        self._thread = threading.Thread(target=self._run, args=(action,), daemon=True)
        self._thread.start()

    def _run(self, action):
        time.sleep(DELAY)
        self.at = time.monotonic()
        action()
        self.returned_after = time.monotonic() - self.at

    def latency(self) -> float:
        """Seconds from the cancel to now (call it where the exception is caught)."""
        now = time.monotonic()
        self._thread.join(5)
        assert self.at is not None, "the call returned before it was cancelled"
        return now - self.at


def http(manager):
    return manager.stats()["services"][0]["http"]


def ws_pool(manager):
    return manager.stats()["services"][1]["websocket"]


def closed(pool) -> int:
    """Connections the pool closed, whatever the cause (the HTTP pool counts a socket its
    client dropped after a cancel under "other")."""
    return sum(pool["closed"].values())


def report(what: str, seconds: float):
    print(f"\ncancel latency, {what}: {seconds * 1000:.1f} ms")


def test_cancelled_is_a_backend_pool_error_and_a_futures_cancelled_error():
    assert issubclass(Cancelled, BackendPoolError)
    assert issubclass(Cancelled, concurrent.futures.CancelledError)
    token = CancelToken()
    assert not token.cancelled and "cancelled=False" in repr(token)
    token.cancel()
    token.cancel()  # idempotent
    assert token.cancelled and "cancelled=True" in repr(token)


def test_a_request_waiting_for_its_response_head_is_cancelled(manager, backends):
    hangups, before = backends.http.hangups, http(manager)
    token = CancelToken()
    canceller = Canceller(token.cancel)
    with pytest.raises(Cancelled) as e:
        manager.request("api", "GET", "/hang?ms=5000", cancel=token)
    latency = canceller.latency()
    report("request waiting for its head", latency)
    assert latency < BOUND
    assert e.value.service == "api" and e.value.error_class == "cancelled"
    assert e.value.phase == "receive"
    stats = http(manager)
    assert stats["in_use"] == 0 and closed(stats) == closed(before) + 1
    assert stats["errors"]["cancelled"] == 1
    assert wait_until(lambda: backends.http.hangups == hangups + 1)  # the server saw it closed
    # A later call given the same (cancelled) token fails at once, without a connection.
    created = stats["connections_created"]
    with pytest.raises(Cancelled):
        manager.request("api", "GET", "/ok", cancel=token)
    assert http(manager)["connections_created"] == created
    # Capacity is back; a new token works.
    assert manager.request("api", "GET", "/ok", cancel=CancelToken()).status == 200
    assert http(manager)["in_use"] == 0


def test_a_stream_waiting_for_its_next_event_is_cancelled_by_its_token(manager, backends):
    hangups, before = backends.http.hangups, http(manager)
    token = CancelToken()
    stream = manager.stream("api", "GET", "/sse?n=2&gap_ms=5000", cancel=token)
    events = stream.iter_sse()
    canceller = Canceller(token.cancel)
    with pytest.raises(Cancelled) as e:
        next(events)  # the comment is skipped, the first event is 5 s away
    latency = canceller.latency()
    report("SSE stream, by the request's token", latency)
    assert latency < BOUND
    assert e.value.service == "api" and e.value.phase == "read"
    assert stream.closed  # the reader's thread closed it
    stats = http(manager)
    assert stats["in_use"] == 0 and closed(stats) == closed(before) + 1
    assert stats["errors"]["cancelled"] == 1
    assert wait_until(lambda: backends.http.hangups == hangups + 1)
    with pytest.raises(ValueError):
        stream.read()
    with manager.stream("api", "GET", "/sse?n=1") as again:
        assert [ev.data for ev in again.iter_sse()][-1] == "[DONE]"


def test_a_stream_waiting_for_body_bytes_is_cancelled_by_its_cancel_method(manager, backends):
    hangups, before = backends.http.hangups, http(manager)
    token = CancelToken()
    stream = manager.stream("api", "GET", "/stall?ms=5000", cancel=token)
    canceller = Canceller(stream.cancel)
    with pytest.raises(Cancelled):
        stream.read(100)  # one byte came, 99 never will
    latency = canceller.latency()
    report("body read, by StreamingResponse.cancel()", latency)
    assert latency < BOUND
    assert not token.cancelled  # the stream's cancel is its own: the job's token lives on
    assert stream.closed
    stats = http(manager)
    assert stats["in_use"] == 0 and closed(stats) == closed(before) + 1
    assert wait_until(lambda: backends.http.hangups == hangups + 1)
    assert manager.request("api", "GET", "/ok", cancel=token).status == 200


def test_a_stream_without_a_token_is_cancelled_by_its_cancel_method(manager):
    stream = manager.stream("api", "GET", "/sse?n=2&gap_ms=5000")
    lines = stream.iter_lines()
    assert [next(lines), next(lines)] == [": keep-alive comment", ""]
    canceller = Canceller(stream.cancel)
    with pytest.raises(Cancelled):
        next(lines)
    assert canceller.latency() < BOUND
    assert stream.closed and http(manager)["in_use"] == 0


def test_close_from_another_thread_never_waits_for_a_stream_reader(manager):
    before = http(manager)
    stream = manager.stream("api", "GET", "/stall?ms=5000")
    canceller = Canceller(stream.close)
    with pytest.raises(Cancelled):
        stream.read(100)
    latency = canceller.latency()
    report("body read, by StreamingResponse.close()", latency)
    report("StreamingResponse.close() returned after", canceller.returned_after)
    assert canceller.returned_after < 0.1 and latency < BOUND
    assert stream.closed
    stats = http(manager)
    assert stats["in_use"] == 0 and closed(stats) == closed(before) + 1


def test_a_websocket_read_on_a_silent_server_is_cancelled_by_its_token(manager, backends):
    hangups = backends.ws.hangups
    token = CancelToken()
    ws = manager.websocket("comfy", cancel=token)
    assert ws.recv_json(timeout=2)["type"] == "status"
    canceller = Canceller(token.cancel)
    with pytest.raises(Cancelled) as e:
        ws.recv(timeout=5)  # the server says nothing more
    latency = canceller.latency()
    report("WebSocket read, by the checkout's token", latency)
    assert latency < BOUND
    assert e.value.service == "comfy" and e.value.phase == "read"
    assert ws.closed
    pool = ws_pool(manager)
    assert pool["in_use"] == 0 and pool["closed"]["broken"] == 1
    assert pool["errors"]["cancelled"] == 1
    assert wait_until(lambda: backends.ws.hangups == hangups + 1)
    with pytest.raises(Cancelled):
        manager.websocket("comfy", cancel=token)  # already cancelled: fails at once
    with manager.websocket("comfy") as again:
        assert again.recv_json(timeout=2)["type"] == "status"


def test_a_websocket_read_is_cancelled_by_its_cancel_method(manager):
    token = CancelToken()
    ws = manager.websocket("comfy", cancel=token)
    ws.recv_json(timeout=2)
    canceller = Canceller(ws.cancel)
    with pytest.raises(Cancelled):
        ws.recv(timeout=5)
    latency = canceller.latency()
    report("WebSocket read, by WebSocket.cancel()", latency)
    assert latency < BOUND and not token.cancelled
    assert ws.closed and ws_pool(manager)["in_use"] == 0
    with pytest.raises(ValueError):
        ws.send("after cancel")


def test_close_from_another_thread_never_waits_for_a_websocket_reader(manager):
    ws = manager.websocket("comfy")
    ws.recv_json(timeout=2)
    canceller = Canceller(ws.close)
    with pytest.raises(Cancelled):
        ws.recv(timeout=5)
    latency = canceller.latency()
    report("WebSocket read, by WebSocket.close()", latency)
    report("WebSocket.close() returned after", canceller.returned_after)
    assert canceller.returned_after < 0.1 and latency < BOUND
    assert ws.closed
    pool = ws_pool(manager)
    assert pool["in_use"] == 0 and pool["closed"]["broken"] == 1
    with manager.websocket("comfy") as again:
        assert again.recv_json(timeout=2)["type"] == "status"  # a new socket
        again.send("x")
        assert again.recv(timeout=2) == "x"


def test_a_websocket_send_to_a_reader_that_stopped_is_cancelled(manager):
    ws = manager.websocket("comfy")
    ws.recv_json(timeout=2)
    ws.send("stop-reading")
    canceller = Canceller(ws.cancel)
    with pytest.raises(Cancelled) as e:
        ws.send(bytes(8 << 20))  # far more than the socket buffers hold
    latency = canceller.latency()
    report("WebSocket send, by WebSocket.cancel()", latency)
    assert latency < BOUND and e.value.phase == "send"
    assert ws.closed and ws_pool(manager)["in_use"] == 0


def test_an_http_request_waiting_for_a_pooled_connection_is_cancelled(backends):
    manager = backend_pool.PoolManager(config_for(backends, max_connections=1))
    try:
        holder_token, raised = CancelToken(), []

        def hold():
            try:
                manager.request("api", "GET", "/hang?ms=5000", cancel=holder_token)
            except Exception as e:  # noqa: BLE001 - checked below
                raised.append(e)

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        assert wait_until(lambda: http(manager)["in_use"] == 1)
        token = CancelToken()
        canceller = Canceller(token.cancel)
        with pytest.raises(Cancelled) as e:
            manager.request("api", "GET", "/ok", cancel=token)
        latency = canceller.latency()
        report("request waiting for a pooled connection", latency)
        assert latency < BOUND and e.value.phase == "wait"
        assert not holder_token.cancelled and http(manager)["in_use"] == 1
        holder_token.cancel()
        holder.join(BOUND)
        assert not holder.is_alive() and [type(e) for e in raised] == [Cancelled]
        assert http(manager)["in_use"] == 0
        assert manager.request("api", "GET", "/ok").status == 200
    finally:
        manager.shutdown(2.0)


@pytest.mark.parametrize("call", ["request", "stream"])
def test_a_call_waiting_for_its_response_head_is_cancelled_by_its_token(manager, call):
    token = CancelToken()
    canceller = Canceller(token.cancel)
    with pytest.raises(Cancelled) as e:
        getattr(manager, call)("api", "POST", "/hang?ms=5000", json={"a": 1}, cancel=token)
    assert canceller.latency() < BOUND and e.value.phase == "receive"
    assert http(manager)["in_use"] == 0


def test_a_websocket_checkout_waiting_for_a_free_socket_is_cancelled(manager):
    leases = [manager.websocket("comfy") for _ in range(4)]  # the pool's max
    try:
        for wait_timeout in (None, 5.0):
            token = CancelToken()
            canceller = Canceller(token.cancel)
            with pytest.raises(Cancelled) as e:
                manager.websocket("comfy", cancel=token, wait_timeout=wait_timeout)
            assert canceller.latency() < BOUND
            assert e.value.phase == "wait"
    finally:
        for ws in leases:
            ws.close()
    assert ws_pool(manager)["in_use"] == 0


def test_one_token_cancels_every_call_given_it(manager):
    token = CancelToken()
    stream = manager.stream("api", "GET", "/sse?n=2&gap_ms=5000", cancel=token)
    ws = manager.websocket("comfy", cancel=token)
    ws.recv_json(timeout=2)
    errors = []

    def read_stream():
        try:
            stream.read()
        except Cancelled as e:
            errors.append(e)

    reader = threading.Thread(target=read_stream)
    reader.start()
    canceller = Canceller(token.cancel)
    with pytest.raises(Cancelled):
        ws.recv(timeout=5)
    reader.join(BOUND + DELAY)
    assert canceller.latency() < BOUND and len(errors) == 1
    assert stream.closed and ws.closed
    assert http(manager)["in_use"] == 0 and ws_pool(manager)["in_use"] == 0


def test_closing_an_idle_stream_still_reuses_its_connection(manager):
    with manager.stream("api", "GET", "/sse?n=1", cancel=CancelToken()) as s:
        s.read()
    after = http(manager)
    assert manager.request("api", "GET", "/ok").status == 200
    stats = http(manager)
    assert stats["connections_created"] == after["connections_created"]  # reused
    assert closed(stats) == closed(after) and stats["errors"]["cancelled"] == 0


def readme_example(section: str) -> str:
    """The first Python block after `section` in bindings/python/README.md."""
    path = os.path.join(os.path.dirname(__file__), "..", "README.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    after = text[text.index(section) :]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


def test_the_readme_comfyui_cancel_flow(backends):
    """The README's example, run as written against the ComfyUI stand-in: the Cancel button
    returns at once, the worker's wait ends with Cancelled, ComfyUI gets the interrupt for
    the prompt, the socket is closed and the next job runs."""
    example = {}
    exec(readme_example("## Cancel from another thread"), example)  # noqa: S102 - our README
    manager = backend_pool.init(
        {
            "service": [
                {
                    "name": "comfyui",
                    "url": backends.ws_url,
                    "http": {"max_connections": 4, "min_connections": 0},
                    "websocket": {"client_id_param": "clientId", "min_connections": 0},
                }
            ]
        }
    )
    try:
        job, result = example["Job"](), []
        worker = threading.Thread(target=lambda: result.append(example["run"](job, {"1": {}})))
        worker.start()
        assert wait_until(lambda: job.prompt_id is not None)
        time.sleep(DELAY)  # the worker waits for its prompt's events
        started = time.monotonic()
        example["cancel"](job)
        button = time.monotonic() - started
        worker.join(BOUND)
        report("the README's ComfyUI flow, worker", time.monotonic() - started)
        assert button < 0.1 and not worker.is_alive() and result == ["cancelled"]
        assert wait_until(lambda: {"prompt_id": job.prompt_id} in backends.ws.interrupts)
        pool = manager.stats()["services"][0]["websocket"]
        assert pool["in_use"] == 0 and pool["closed"]["broken"] == 1
        # The next job runs: its prompt is queued on a fresh socket.
        again = example["Job"]()
        runner = threading.Thread(target=example["run"], args=(again, {}), daemon=True)
        runner.start()
        assert wait_until(lambda: again.prompt_id is not None)
        again.token.cancel()
        runner.join(BOUND)
        assert not runner.is_alive()
    finally:
        backend_pool.shutdown(2.0)


def test_a_stream_read_interrupted_by_shutdown_raises_shutting_down(backends):
    """The core wraps the pool's error in the stream's I/O error: it is raised as itself."""
    manager = backend_pool.PoolManager(config_for(backends))
    stream = manager.stream("api", "GET", "/stall?ms=5000")
    canceller = Canceller(lambda: manager.shutdown(0.1))
    with pytest.raises(backend_pool.ShuttingDown) as e:
        stream.read(100)
    assert canceller.latency() < BOUND and e.value.service == "api"
    stream.close()


def test_a_token_cancelled_while_nobody_reads_ends_the_stream_and_the_lease_at_once(manager):
    token = CancelToken()
    stream = manager.stream("api", "GET", "/sse?n=2&gap_ms=5000", cancel=token)
    ws = manager.websocket("comfy", cancel=token)
    ws.recv_json(timeout=2)
    token.cancel()  # no thread is reading either: their connections are released now
    assert stream.closed and ws.closed
    assert http(manager)["in_use"] == 0 and ws_pool(manager)["in_use"] == 0
    with pytest.raises(ValueError):
        stream.read()


@pytest.mark.parametrize("end", ["close", "cancel", "token"])
def test_ending_a_websocket_races_its_reader_without_a_leak(manager, end):
    """`ROUNDS` leases, each ended from another thread at a random moment of its reader's
    work (before, during or after a read): the reader returns or raises `Cancelled` /
    `ValueError` (ended before it began), never hangs; nothing stays checked out."""
    import random

    rounds = int(os.environ.get("ROUNDS", "25"))
    for i in range(rounds):
        token = CancelToken()
        ws = manager.websocket("comfy", cancel=token)
        outcome = []

        def read():
            try:
                ws.recv_json(timeout=2)  # the status message: may come before the end
                ws.recv(timeout=2)  # nothing more: only the end stops it
                outcome.append("timeout?")
            except (Cancelled, ValueError) as e:
                outcome.append(type(e).__name__)

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(random.random() * 0.005)
        {"close": ws.close, "cancel": ws.cancel, "token": token.cancel}[end]()
        reader.join(BOUND)
        assert not reader.is_alive(), f"round {i}: the reader hangs"
        assert outcome in (["Cancelled"], ["ValueError"]), f"round {i}: {outcome}"
        assert ws.closed
    assert wait_until(lambda: ws_pool(manager)["in_use"] == 0)
