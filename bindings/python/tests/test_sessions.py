"""Sessions (`PoolManager.session`): one job's HTTP calls and WebSocket leases pinned to one
endpoint of a service that lists several (`urls`), while stateless calls spread. Counted on
the servers."""

from __future__ import annotations

import threading

import pytest

import backend_pool
from backend_pool import UnknownService
from servers import Backends


@pytest.fixture(scope="module")
def two():
    pair = (Backends(), Backends())
    yield pair
    for b in pair:
        b.close()


def config_two(two) -> dict:
    a, b = two
    return {
        "maintenance_interval_ms": 50,
        "service": [
            {
                "name": "api",
                "urls": [a.http_url, b.http_url],
                "health_path": "/ok",
                "health_interval_ms": 60_000,
                "http": {"max_connections": 16, "min_connections": 0},
            },
            {
                # ComfyUI-like: HTTP and WebSocket on each machine.
                "name": "comfy",
                "urls": [a.ws_url, b.ws_url],
                "health_path": "/prompt",
                "health_interval_ms": 60_000,
                "read_idle_timeout_ms": 2000,
                "http": {"max_connections": 8, "min_connections": 0},
                "websocket": {"client_id_param": "clientId", "max_connections": 4, "min_connections": 0},
            },
        ],
    }


def ws_counts(two):
    return [(b.ws.prompts, b.ws.views, b.ws.handshakes) for b in two]


def test_every_call_of_a_session_lands_on_its_endpoint(two, tmp_path):
    m = backend_pool.PoolManager(config_two(two))
    try:
        urls = [b.ws_url for b in two]
        seen = set()
        for i in range(6):
            before = ws_counts(two)
            with m.session("comfy") as job:
                assert isinstance(job, backend_pool.Client)
                assert job.service == "comfy" and job.endpoint in urls
                seen.add(job.endpoint)
                ws = job.websocket(wait_timeout=2.0)
                client_id = ws.client_id
                assert ws.recv_json(timeout=2.0)["data"]["sid"] == client_id
                r = job.post("/prompt", json={"prompt": {}, "client_id": client_id})
                assert r.json()["prompt_id"].startswith("prompt-")
                assert job.get("/view", params={"filename": "a.png"}).status_code == 200
                assert job.request("GET", "/view").status_code == 200
                with job.stream("GET", "/view") as s:
                    s.read()
                job.download("/view", tmp_path / f"out{i}.json")
                ws.close()  # a new socket (handshake) for the next job
            after = ws_counts(two)
            mine = urls.index(job.endpoint)
            other = 1 - mine
            assert after[other] == before[other], f"session {i} touched the other machine"
            p0, v0, h0 = before[mine]
            assert after[mine] == (p0 + 1, v0 + 4, h0 + 1)
        # Ties take turns: six jobs in a row (each closed before the next) use both machines.
        assert seen == set(urls)
    finally:
        m.shutdown(2.0)


def test_open_sessions_spread_and_closing_ends_the_pin(two):
    m = backend_pool.PoolManager(config_two(two))
    try:
        first = m.session("comfy")
        second = m.session("comfy")
        # The second goes where fewer sessions are pinned: the other machine.
        assert {first.endpoint, second.endpoint} == {b.ws_url for b in two}
        pins = {e["url"]: e["sessions"] for e in m.stats()["services"][1]["endpoints"]}
        assert sorted(pins.values()) == [1, 1]
        first.close()
        first.close()  # idempotent
        assert first.closed and not second.closed
        pins = {e["url"]: e["sessions"] for e in m.stats()["services"][1]["endpoints"]}
        assert pins[first.endpoint] == 0 and pins[second.endpoint] == 1
        with pytest.raises(ValueError, match="session of service 'comfy' is closed"):
            first.get("/view")
        with pytest.raises(ValueError, match="closed"):
            first.websocket()
        with pytest.raises(ValueError, match="closed"):
            first.stream("GET", "/view")
        with second:
            pass
        assert second.closed
        assert "closed" in repr(second)
        # Dropped without close(): the pin ends with the object.
        third = m.session("comfy")
        url = third.endpoint
        del third
        pins = {e["url"]: e["sessions"] for e in m.stats()["services"][1]["endpoints"]}
        assert pins[url] == 0
    finally:
        m.shutdown(2.0)


def test_stateless_calls_spread_while_a_session_stays(two):
    m = backend_pool.PoolManager(config_two(two))
    try:
        servers = [b.http for b in two]
        before = [s.requests for s in servers]
        api = m.client("api")
        errors: list[BaseException] = []

        def worker():
            try:
                for _ in range(5):
                    assert api.get("/slow", params={"ms": "20"}).status_code == 200
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert errors == []
        spread = [s.requests - b for s, b in zip(servers, before)]
        # (Each endpoint's first health probe, GET /ok, may be among them.)
        assert 30 <= sum(spread) <= 32 and min(spread) >= 5, spread

        with m.session("api") as job:
            mine = [b.http_url for b in two].index(job.endpoint)
            before = [s.requests for s in servers]
            for _ in range(20):
                assert job.get("/ok").status_code == 200
            job.post("/echo", json={"n": 1})
            after = [s.requests - b for s, b in zip(servers, before)]
            assert after[mine] == 21 and after[1 - mine] == 0, after
    finally:
        m.shutdown(2.0)


def test_session_errors(two):
    m = backend_pool.PoolManager(config_two(two))
    with pytest.raises(UnknownService):
        m.session("nope")
    job = m.session("api")
    with pytest.raises(backend_pool.UnknownService):
        job.websocket()  # the service has no WebSocket pool
    m.shutdown(2.0)
    with pytest.raises(backend_pool.ShuttingDown):
        m.session("api")
    with pytest.raises(backend_pool.ShuttingDown):
        job.get("/ok")
