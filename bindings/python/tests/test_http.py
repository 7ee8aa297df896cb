"""Requests, responses, streaming and the error classes of the HTTP side."""

from __future__ import annotations

import json
import threading
import time

import pytest

import backend_pool
from backend_pool import (
    BackendConnectionError,
    BackendPoolError,
    HTTPStatusError,
    InvalidRequest,
    JsonError,
    PoolTimeout,
    TimeoutException,
    UnknownService,
)


def test_json_round_trip(manager):
    r = manager.request("api", "POST", "/echo", json={"prompt": {"1": "x"}, "n": [1, 2.5, None]})
    assert r.status == 200 and r.ok
    echoed = r.json()
    assert echoed["method"] == "POST"
    assert json.loads(echoed["body"]) == {"prompt": {"1": "x"}, "n": [1, 2.5, None]}
    assert echoed["headers"]["content-type"] == "application/json"
    assert "origin" not in echoed["headers"]  # ComfyUI answers 403 to a mismatched Origin


def test_data_and_headers(manager):
    r = manager.request("api", "PUT", "/echo", data=b"\x00\x01raw", headers={"X-Token": "t1"})
    assert r.json()["body"] == "\x00\x01raw"
    assert r.json()["headers"]["x-token"] == "t1"
    r = manager.request("api", "POST", "/echo", data="text é", headers=[("Content-Type", "text/plain")])
    assert r.json()["body"] == "text é"
    assert r.json()["headers"]["content-type"] == "text/plain"
    r = manager.request("api", "POST", "/echo", data=bytearray(b"ba"))
    assert r.json()["body"] == "ba"
    r = manager.request("api", "POST", "/echo", data=memoryview(b"mv"))
    assert r.json()["body"] == "mv"
    with pytest.raises(TypeError):
        manager.request("api", "POST", "/echo", json={}, data=b"")


def test_response_accessors(manager):
    r = manager.request("api", "GET", "/echo")
    assert r.headers["x-echo"] == "1"
    assert r.headers["x-multi"] == "a, b"
    assert r.header("X-ECHO") == "1"
    assert r.header("missing", "dflt") == "dflt"
    assert isinstance(r.content, bytes)
    assert r.service == "api"
    assert "Response [200]" in repr(r)
    t = manager.request("api", "GET", "/text")
    assert t.text == "héllo wörld"
    assert t.content == "héllo wörld".encode()
    h = manager.request("api", "HEAD", "/ok")
    assert h.status == 200 and h.content == b""


def test_status_is_a_response_until_raise_for_status(manager):
    r = manager.request("api", "GET", "/status/404")
    assert r.status == 404 and not r.ok
    with pytest.raises(HTTPStatusError) as e:
        r.raise_for_status()
    assert e.value.status == 404 and e.value.service == "api"
    assert "'api'" in str(e.value) and "404" in str(e.value)
    assert manager.request("api", "GET", "/ok").raise_for_status().status == 200


def test_bad_json_is_json_error_and_value_error(manager):
    r = manager.request("api", "GET", "/bad-json")
    with pytest.raises(JsonError) as e:
        r.json()
    assert isinstance(e.value, ValueError) and isinstance(e.value, BackendPoolError)
    assert "'api'" in str(e.value)


def test_unknown_service(manager):
    with pytest.raises(UnknownService) as e:
        manager.request("nope", "GET", "/")
    assert isinstance(e.value, LookupError)
    assert "known: api, comfy, down" in str(e.value)
    with pytest.raises(UnknownService, match="has no HTTP pool"):
        manager.request("comfy", "GET", "/")
    with pytest.raises(UnknownService, match="has no WebSocket pool"):
        manager.websocket("api")


def test_connection_refused_names_service_and_phase(manager):
    with pytest.raises(BackendConnectionError) as e:
        manager.request("down", "GET", "/")
    err = e.value
    assert isinstance(err, ConnectionError)
    assert err.service == "down" and err.phase == "connect" and err.error_class == "connect"
    assert "'down'" in str(err) and "connecting" in str(err)


def test_request_timeout_is_timeout_not_pool_timeout(manager):
    t0 = time.monotonic()
    with pytest.raises(TimeoutException) as e:
        manager.request("api", "GET", "/slow?ms=3000", timeout=0.3)
    assert time.monotonic() - t0 < 2.0
    assert not isinstance(e.value, PoolTimeout)
    assert isinstance(e.value, TimeoutError)
    assert e.value.service == "api" and e.value.phase in ("receive", "read", "send")
    assert "'api'" in str(e.value)


def test_pool_timeout_carries_pool_state(backends):
    from conftest import config_for

    m = backend_pool.PoolManager(config_for(backends, max_connections=1))
    try:
        held = m.stream("api", "GET", "/download?n=1000000")  # keeps the only connection
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout) as e:
            m.request("api", "GET", "/ok", wait_timeout=0.15)
        waited = time.monotonic() - t0
        assert 0.1 <= waited < 1.5
        err = e.value
        assert isinstance(err, TimeoutError)
        assert err.service == "api" and err.phase == "wait" and err.error_class == "pool_timeout"
        assert "1 in use" in str(err) and "max 1" in str(err) and "'api'" in str(err)
        held.close()
        assert m.request("api", "GET", "/ok", wait_timeout=1).status == 200
    finally:
        m.shutdown(1)


def test_invalid_arguments(manager):
    with pytest.raises(ValueError):
        manager.request("api", "GET", "/ok", timeout=-1)
    with pytest.raises(TypeError):
        manager.request("api", "GET", "/ok", headers=42)


def test_stream_server_sent_events(manager):
    with manager.stream("api", "GET", "/sse?n=3") as s:
        assert s.status == 200
        assert s.headers["content-type"] == "text/event-stream"
        events = list(s.iter_sse())
    assert s.closed
    assert [e.event for e in events] == ["generating"] * 3 + ["heartbeat", "message", "message"]
    assert events[1].json() == {"i": 1} and events[1].id == "1"
    assert events[4].data == "line one\nline two"
    assert events[-1].data == "[DONE]"
    # The core's parser (WHATWG): the last event ID persists for the events after it.
    assert [e.id for e in events] == ["0", "1", "2", "2", "2", "2"]
    assert all(e.retry is None for e in events)
    with pytest.raises(ValueError):
        s.read()


def test_stream_lines_chunks_and_read(manager):
    with manager.stream("api", "GET", "/sse?n=2") as s:
        lines = list(s.iter_lines())
    assert lines[0] == ": keep-alive comment" and "data: [DONE]" in lines
    with manager.stream("api", "GET", "/sse?n=1") as s:
        raw = list(s)  # bytes lines, with their endings
    assert raw[0] == b": keep-alive comment\n"
    n = 3_000_000
    with manager.stream("api", "GET", f"/download?n={n}") as s:
        assert s.header("Content-Length") == str(n)
        sizes = [len(chunk) for chunk in s.iter_bytes(100_000)]
        assert sum(sizes) == n and set(sizes) == {100_000}
    with manager.stream("api", "GET", "/download?n=1000") as s:
        head = s.read(10)
        rest = s.read()
        assert head == bytes(range(10)) and len(rest) == 990 and s.read() == b""
        assert s.readline() == b""


def test_stream_idle_read_timeout(backends):
    from conftest import config_for

    cfg = config_for(backends)
    cfg["service"][0]["read_idle_timeout_ms"] = 200
    m = backend_pool.PoolManager(cfg)
    try:
        with m.stream("api", "GET", "/stall?ms=2000") as s:
            t0 = time.monotonic()
            with pytest.raises(TimeoutException) as e:
                s.read()
            assert time.monotonic() - t0 < 1.5
        assert e.value.service == "api" and e.value.phase == "read"
        assert "'api'" in str(e.value) and "timed out reading after 200ms" in str(e.value)
    finally:
        m.shutdown(1)


def test_stream_post_body(manager):
    with manager.stream("api", "POST", "/echo", json={"a": 1}) as s:
        body = json.loads(s.read())
    assert json.loads(body["body"]) == {"a": 1}


def test_keep_alive_reuse_in_stats(manager):
    for _ in range(20):
        assert manager.request("api", "GET", "/ok").status == 200
    http = manager.stats()["services"][0]["http"]
    assert 20 <= http["requests"] <= 21  # + the first health probe
    assert http["connections_created"] <= 2
    assert http["reuse_rate"] >= 0.9


def test_threads_do_not_share_a_response(manager):
    results = []

    def one(i):
        r = manager.request("api", "POST", "/echo", json={"i": i})
        results.append(json.loads(r.json()["body"])["i"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(16))


def test_invalid_request_is_a_value_error_exported_by_the_package():
    assert issubclass(InvalidRequest, BackendPoolError) and issubclass(InvalidRequest, ValueError)
    assert "InvalidRequest" in backend_pool.__all__
    assert "InvalidRequest" in backend_pool.errors.__all__


@pytest.mark.parametrize(
    "path,headers",
    [
        ("/ok", {"bad name": "x"}),
        ("/ok", {"X-Value": "a\nb"}),
        ("http://elsewhere.invalid/x", None),
        ("/a b", None),
    ],
)
def test_a_request_the_pool_rejects_maps_to_its_class(manager, path, headers):
    """Whatever the core classes ``invalid_request`` is ``InvalidRequest`` and nothing else is;
    every rejection is a ``BackendPoolError`` naming the service."""
    with pytest.raises(BackendPoolError) as e:
        manager.request("api", "GET", path, headers=headers, timeout=5)
    err = e.value
    assert err.service == "api" and "'api'" in str(err), err
    assert isinstance(err, InvalidRequest) == (err.error_class == "invalid_request"), (
        type(err).__name__,
        err.error_class,
        str(err),
    )
