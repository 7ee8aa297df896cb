"""Reconfiguration without a restart (`PoolManager.apply`) and the readiness probe
(`PoolManager.probe`)."""

from __future__ import annotations

import copy
import threading
import time

import pytest

import backend_pool
from backend_pool import ConfigError, UnknownService
from conftest import closed_port, config_for


def test_apply_keeps_unchanged_services_and_drains_a_changed_one(backends):
    cfg = config_for(backends)
    m = backend_pool.PoolManager(cfg)
    try:
        assert m.request("api", "GET", "/ok").status_code == 200
        # A long call on the service about to change, in flight during the apply.
        slow: dict = {}

        def long_call():
            slow["status"] = m.request("down2", "GET", "/slow?ms=400").status_code

        edited = copy.deepcopy(cfg)
        edited["service"].append({"name": "down2", "url": backends.http_url})
        report = m.apply(edited)
        assert report["added"] == ["down2"]
        assert report["unchanged"] == ["api", "comfy", "down"]
        caller = threading.Thread(target=long_call)
        caller.start()
        time.sleep(0.1)

        moved = copy.deepcopy(edited)
        moved["service"][3]["url"] = f"http://127.0.0.1:{closed_port()}"
        moved["service"][3]["connect_timeout_ms"] = 500
        start = time.monotonic()
        report = m.apply(moved, timeout=5.0)
        assert report["replaced"] == ["down2"]
        assert report["still_in_use"] == []
        assert time.monotonic() - start >= 0.2  # it waited for the call in flight
        caller.join()
        assert slow["status"] == 200
        # The unchanged service kept its pool: the same figures, going on.
        api = m.stats()["services"][0]
        assert api["name"] == "api" and api["http"]["acquisitions"] == 1
        assert m.request("api", "GET", "/ok").status_code == 200

        m.apply({"service": [cfg["service"][0]]})
        assert m.services == ["api"]
        with pytest.raises(UnknownService):
            m.request("down2", "GET", "/ok")
    finally:
        m.shutdown(2.0)


def test_an_invalid_configuration_changes_nothing(backends):
    cfg = config_for(backends)
    m = backend_pool.PoolManager(cfg)
    try:
        with pytest.raises(ConfigError, match="url"):
            m.apply({"service": [{"name": "api", "url": "ftp://nope"}]})
        assert m.services == ["api", "comfy", "down"]
        assert m.request("api", "GET", "/ok").status_code == 200
    finally:
        m.shutdown(2.0)


def test_probe_up_and_down_within_its_timeout(backends):
    m = backend_pool.PoolManager(config_for(backends))
    try:
        up = m.probe("api", timeout=2.0)
        assert up["reachable"] is True and up["check"] == "GET /ok"
        assert up["health"]["state"] == "healthy"
        assert m.stats()["services"][0]["http"]["requests"] == 0
        start = time.monotonic()
        down = m.probe("down", timeout=0.5)
        assert time.monotonic() - start < 2.0
        assert down["reachable"] is False and down["check"] == "TCP connect"
        assert "TCP probe" in down["error"]
        with pytest.raises(UnknownService):
            m.probe("nope")
    finally:
        m.shutdown(2.0)



def test_a_caller_waiting_on_a_replaced_service_raises_shutting_down(backends):
    # One connection, held by a slow call; a second caller waits for it. Replacing the
    # service retires the old pool: the waiter gets ShuttingDown (class shutting_down)
    # naming the service, the call in flight finishes, and new calls use the new pool.
    cfg = config_for(backends, max_connections=1)
    m = backend_pool.PoolManager(cfg)
    outcome: dict = {}

    def slow():
        outcome["slow"] = m.request("api", "GET", "/slow?ms=600").status_code

    def waiter():
        try:
            m.request("api", "GET", "/ok", wait_timeout=5.0)
            outcome["waiter"] = "served"
        except backend_pool.BackendPoolError as e:
            outcome["waiter"] = e

    try:
        threads = [threading.Thread(target=slow)]
        threads[0].start()
        time.sleep(0.1)
        threads.append(threading.Thread(target=waiter))
        threads[1].start()
        time.sleep(0.1)
        edited = copy.deepcopy(cfg)
        edited["service"][0]["connect_timeout_ms"] = 1500
        report = m.apply(edited, timeout=5.0)
        assert report["replaced"] == ["api"]
        for t in threads:
            t.join(5)
        assert outcome["slow"] == 200
        err = outcome["waiter"]
        assert isinstance(err, backend_pool.ShuttingDown), repr(err)
        assert err.error_class == "shutting_down" and err.service == "api"
        assert m.request("api", "GET", "/ok").status_code == 200
    finally:
        m.shutdown(2.0)
