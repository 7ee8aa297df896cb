"""Configuration forms, stats, health, shutdown and the process-wide singleton."""

from __future__ import annotations

import json
import pathlib
import threading
import time

import pytest

import backend_pool
from backend_pool import ConfigError, PoolTimeout, ShuttingDown
from conftest import config_for, native_thread_ids, native_threads, wait_until

TOML = """
maintenance_interval_ms = 100

[[service]]
name = "llm"
url = "{url}"
health_path = "/ok"
[service.http]
max_connections = 4
"""


def test_config_from_dict_toml_path_and_default(backends, tmp_path):
    text = TOML.format(url=backends.http_url)
    toml_file = tmp_path / "services.toml"
    toml_file.write_text(text)
    json_file = tmp_path / "services.json"
    json_file.write_text(json.dumps(config_for(backends)))
    for cfg, names in [
        (text, ["llm"]),
        (str(toml_file), ["llm"]),
        (toml_file, ["llm"]),
        (json_file, ["api", "comfy", "down"]),
        (config_for(backends), ["api", "comfy", "down"]),
        (None, ["comfyui", "litellm", "wan2gp", "rvc"]),
    ]:
        m = backend_pool.PoolManager(cfg)
        try:
            assert m.services == names, cfg
        finally:
            m.shutdown(1)


def test_config_errors_are_value_errors():
    with pytest.raises(ConfigError) as e:
        backend_pool.PoolManager({"service": [{"name": "x", "url": "ftp://nope"}]})
    assert isinstance(e.value, ValueError)
    assert "'x'" in str(e.value) and "url" in str(e.value)
    with pytest.raises(ConfigError, match="unknown field"):
        backend_pool.PoolManager({"service": [{"name": "x", "url": "http://127.0.0.1:1", "bogus": 1}]})
    with pytest.raises(ConfigError, match="line"):
        backend_pool.PoolManager("[[service]]\nname = \n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        backend_pool.PoolManager("/nonexistent/services.toml")
    with pytest.raises(ConfigError, match="more than once"):
        backend_pool.PoolManager({"service": [{"name": "a", "url": "http://127.0.0.1:1"}] * 2})
    with pytest.raises(TypeError):
        backend_pool.PoolManager(42)


def test_stats_prometheus_and_health(backends):
    manager = backend_pool.PoolManager(config_for(backends, health_interval_ms=100))
    try:
        check_stats_and_health(manager)
    finally:
        manager.shutdown(1)


def check_stats_and_health(manager):
    for _ in range(5):
        manager.request("api", "GET", "/ok")
    with pytest.raises(Exception):
        manager.request("down", "GET", "/")
    # A health probe (every 100 ms) holds one of api's connections while it runs: in use,
    # though never counted as a request.
    assert wait_until(lambda: manager.stats()["services"][0]["http"]["in_use"] == 0)
    stats = manager.stats()
    assert [s["name"] for s in stats["services"]] == ["api", "comfy", "down"]
    api = stats["services"][0]
    assert api["http"]["requests"] == 5
    assert {"p50_us", "p99_us", "count"} <= set(api["http"]["acquire_time"])
    assert stats["services"][2]["http"]["errors"]["connect"] == 1
    assert stats["totals"]["requests"] >= 5
    text = manager.prometheus()
    assert 'backend_pool_requests_total{service="api",pool="http"} ' in text
    assert 'backend_pool_connections_created_total{service="comfy",pool="websocket"} 0' in text
    # The maintenance thread probes /ok every 100 ms.
    assert wait_until(lambda: manager.health("api")["last_check_unix_ms"] is not None)
    h = manager.health()
    assert set(h) == {"api", "comfy", "down"}
    assert h["api"]["state"] == "healthy"
    assert set(h["api"]) == {"state", "consecutive_failures", "last_check_unix_ms", "last_error"}
    with pytest.raises(backend_pool.UnknownService):
        manager.health("nope")


def test_shutdown_then_shutting_down(backends):
    m = backend_pool.PoolManager(config_for(backends))
    m.request("api", "GET", "/ok")
    assert not m.closed
    report = m.shutdown(1.0)
    assert report["maintenance_joined"] is True and report["still_in_use"] == []
    assert report["elapsed_ms"] < 200
    assert m.closed and "closed" in repr(m)
    with pytest.raises(ShuttingDown) as e:
        m.request("api", "GET", "/ok")
    assert "shutting down" in str(e.value)
    with pytest.raises(ShuttingDown):
        m.websocket("comfy")
    # The final snapshot stays readable; a second shutdown is a no-op.
    assert m.stats()["services"][0]["http"]["requests"] >= 1
    assert "backend_pool_requests_total" in m.prometheus()
    assert m.shutdown(1.0) is None


def test_shutdown_wakes_waiters_and_reports_leases(backends):
    m = backend_pool.PoolManager(config_for(backends, max_connections=1))
    held = m.stream("api", "GET", "/download?n=100000")
    errors = []

    def waiter():
        try:
            m.request("api", "GET", "/ok", wait_timeout=10)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    assert wait_until(lambda: m.stats()["services"][0]["http"]["waiting"] == 1)
    t0 = time.monotonic()
    report = m.shutdown(0.2)
    elapsed = time.monotonic() - t0
    t.join(2)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], (ShuttingDown, PoolTimeout))
    assert isinstance(errors[0], ShuttingDown), errors[0]
    assert elapsed < 0.5, elapsed
    assert report["still_in_use"] == [{"service": "api", "kind": "http", "count": 1}]
    held.close()


def test_context_manager_shuts_down(backends):
    with backend_pool.PoolManager(config_for(backends)) as m:
        assert m.request("api", "GET", "/ok").status == 200
    assert m.closed


def test_background_threads_stop(backends):
    # By thread id: threads of earlier tests' managers may still be ending (a manager shut
    # down with connections in use is released on a thread that waits for them), so a count
    # taken before could fall below its start.
    before = set(native_thread_ids())
    m = backend_pool.PoolManager(config_for(backends))
    m.request("api", "GET", "/ok")
    ours = lambda: {tid: name for tid, name in native_thread_ids().items() if tid not in before}  # noqa: E731
    assert len(ours()) >= 2, ours()  # maintenance + slot worker
    m.shutdown(1.0)
    assert wait_until(lambda: not ours()), ours()


def test_singleton_lifecycle(backends):
    assert backend_pool.get() is None
    assert backend_pool.shutdown(1.0) is None
    m = backend_pool.init(config_for(backends))
    try:
        assert backend_pool.get() is not None
        again = backend_pool.init({"service": []})  # running: config ignored
        assert again.services == ["api", "comfy", "down"]
        assert backend_pool.get().request("api", "GET", "/ok").status == 200
        assert "process-wide" in repr(m)
    finally:
        report = backend_pool.shutdown(1.0)
    assert report["maintenance_joined"] is True
    assert backend_pool.get() is None and m.closed
    assert m.stats()["services"][0]["http"]["requests"] >= 1  # final snapshot
    with pytest.raises(ShuttingDown):
        m.request("api", "GET", "/ok")
    fresh = backend_pool.init({"service": [{"name": "only", "url": backends.http_url}]})
    assert fresh.services == ["only"]
    assert m.services == ["only"]  # the handles follow the process-wide manager
    assert backend_pool.shutdown(1.0) is not None
    assert wait_until(lambda: native_threads() == []), native_threads()


def test_pathlike_config(backends, tmp_path):
    p = pathlib.Path(tmp_path) / "c.toml"
    p.write_text(TOML.format(url=backends.http_url))
    with backend_pool.PoolManager(p) as m:
        assert m.request("llm", "GET", "/ok").json() == {"ok": True, "path": "/ok"}
