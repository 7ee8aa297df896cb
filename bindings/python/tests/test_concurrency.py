"""Many Python threads at once, and the GIL released during every blocking call."""

from __future__ import annotations

import threading
import time

import backend_pool
from conftest import Ticker, config_for


def run_threads(n, target):
    errors = []

    def wrapped(i):
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    return time.monotonic() - t0


def test_32_threads(manager):
    per_thread = 50
    statuses = []
    lock = threading.Lock()

    def worker(i):
        for j in range(per_thread):
            r = manager.request("api", "POST", "/echo", json={"t": i, "j": j})
            assert r.status == 200
            with lock:
                statuses.append(r.status)

    run_threads(32, worker)
    assert len(statuses) == 32 * per_thread
    http = manager.stats()["services"][0]["http"]
    assert 32 * per_thread <= http["requests"] <= 32 * per_thread + 2  # + health probes
    assert http["connections_created"] <= 32  # the pool's cap, then reuse
    assert http["in_use"] == 0 and http["errors"] == {k: 0 for k in http["errors"]}


def test_gil_released_while_reading(manager):
    # 8 threads block ~1 s in the server's response; the ticker must keep ticking.
    with Ticker() as ticker:
        elapsed = run_threads(8, lambda i: manager.request("api", "GET", "/slow?ms=1000"))
    assert elapsed >= 0.9
    assert ticker.max_gap < 0.25, f"Python stalled {ticker.max_gap:.3f} s"
    assert ticker.ticks > 10_000


def test_gil_released_while_waiting_for_a_connection(backends):
    m = backend_pool.PoolManager(config_for(backends, max_connections=1))
    try:
        # One connection, 8 callers: 7 wait in the pool for up to ~1.4 s.
        with Ticker() as ticker:
            elapsed = run_threads(8, lambda i: m.request("api", "GET", "/slow?ms=200"))
        assert elapsed >= 1.5
        assert ticker.max_gap < 0.25, f"Python stalled {ticker.max_gap:.3f} s"
        assert m.stats()["services"][0]["http"]["connections_created"] == 1
    finally:
        m.shutdown(1)


def test_gil_released_while_connecting_and_streaming(manager):
    with Ticker() as ticker:

        def worker(i):
            with manager.stream("api", "GET", "/sse?n=5&gap_ms=150") as s:
                assert len(list(s.iter_sse())) == 8

        elapsed = run_threads(8, worker)
    assert elapsed >= 0.7
    assert ticker.max_gap < 0.25, f"Python stalled {ticker.max_gap:.3f} s"


def test_gil_released_in_websocket_recv(manager):
    with Ticker() as ticker:

        def worker(i):
            with manager.websocket("comfy", wait_timeout=5) as ws:
                ws.recv_json(timeout=2)
                try:
                    ws.recv(timeout=0.8)
                except backend_pool.TimeoutException:
                    pass

        elapsed = run_threads(4, worker)
    assert elapsed >= 0.7
    assert ticker.max_gap < 0.25, f"Python stalled {ticker.max_gap:.3f} s"


def test_shutdown_under_load(backends):
    m = backend_pool.PoolManager(config_for(backends))
    outcomes = {"ok": 0, "shutting_down": 0}
    lock = threading.Lock()
    # Each worker runs until its first ShuttingDown: a request that was in flight when
    # shutdown began may still succeed, the next one must not.
    give_up = time.monotonic() + 5

    def worker(i):
        while time.monotonic() < give_up:
            try:
                m.request("api", "GET", "/ok")
                key = "ok"
            except backend_pool.ShuttingDown:
                key = "shutting_down"
            with lock:
                outcomes[key] += 1
            if key == "shutting_down":
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    report = m.shutdown(1.0)
    took = time.monotonic() - t0
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)
    assert outcomes["ok"] > 0 and outcomes["shutting_down"] == 16
    assert report["maintenance_joined"] and took < 1.0
