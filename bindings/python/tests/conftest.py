from __future__ import annotations

import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from servers import Backends, closed_port  # noqa: E402

import backend_pool  # noqa: E402


@pytest.fixture(scope="session")
def backends():
    b = Backends()
    yield b
    b.close()


def config_for(b: Backends, health_interval_ms: int = 60_000, **http_overrides) -> dict:
    """Three services: `api` (HTTP), `comfy` (WebSocket, ComfyUI-style clientId), `down`
    (nothing listens)."""
    http = {"max_connections": 32, "min_connections": 0}
    http.update(http_overrides)
    return {
        "maintenance_interval_ms": 50,
        "service": [
            {
                "name": "api",
                "url": b.http_url,
                "health_path": "/ok",
                "health_interval_ms": health_interval_ms,
                "wait_timeout_ms": 5000,
                "read_idle_timeout_ms": 2000,
                "http": http,
            },
            {
                "name": "comfy",
                "url": b.ws_url,
                "http": None,
                "read_idle_timeout_ms": 2000,
                "websocket": {"client_id_param": "clientId", "max_connections": 4, "min_connections": 0},
            },
            {
                "name": "down",
                "url": f"http://127.0.0.1:{closed_port()}",
                "connect_timeout_ms": 1000,
                "unhealthy_after": 1000,
                "http": {"max_connections": 2, "min_connections": 0},
            },
        ],
    }


@pytest.fixture
def config(backends):
    return config_for(backends)


@pytest.fixture
def manager(config):
    m = backend_pool.PoolManager(config)
    # The first maintenance tick probes `api` (GET /ok), holding one of its connections
    # while it runs: tests that count `in_use` start once it is over (under Wine it could
    # still be running at a test's first check).
    assert wait_until(lambda: m.health("api")["last_check_unix_ms"] is not None, 5.0)
    yield m
    m.shutdown(2.0)


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def native_thread_ids() -> dict[str, str]:
    """This process's threads that belong to backend_pool, as {tid: name} (Linux)."""
    threads = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name.startswith("backend-pool"):
            threads[tid] = name
    return threads


def native_threads() -> list[str]:
    """Names of this process's threads that belong to backend_pool (Linux)."""
    return list(native_thread_ids().values())


def wait_until(pred, timeout=2.0, step=0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


class Ticker:
    """A pure-Python thread that counts as fast as it can and records its longest stall: if a
    native call held the GIL while blocked, the stall would be as long as that call."""

    def __init__(self):
        self.ticks = 0
        self.max_gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        last = time.perf_counter()
        while not self._stop.is_set():
            self.ticks += 1
            now = time.perf_counter()
            if now - last > self.max_gap:
                self.max_gap = now - last
            last = now

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


__all__ = [
    "config_for",
    "thread_count",
    "native_threads",
    "native_thread_ids",
    "wait_until",
    "threading",
    "Ticker",
]
