"""manager.client("svc"): get / post / put / delete / head / request / stream, as Rust's
manager.http(svc)."""

from __future__ import annotations

import json

import pytest

import backend_pool
from backend_pool import Client, ShuttingDown, UnknownService


def test_every_verb_reaches_the_service(manager):
    api = manager.client("api")
    assert isinstance(api, Client) and api.service == "api" and repr(api) == "<Client service='api'>"
    assert api.get("/echo", params={"a": "b c"}).json()["query"] == "a=b%20c"
    assert json.loads(api.post("/echo", json={"x": 1}).json()["body"]) == {"x": 1}
    assert api.put("/echo", data={"k": "v"}).json()["body"] == "k=v"
    assert api.delete("/echo").json()["method"] == "DELETE"
    head = api.head("/ok")
    assert head.status_code == 200 and head.content == b""
    assert api.request("POST", "/echo", data=b"raw").json()["body"] == "raw"
    with api.stream("GET", "/sse", params={"n": 1}) as s:
        assert [e.data for e in s.iter_sse()][-1] == "[DONE]"
    http = manager.stats()["services"][0]["http"]
    assert http["requests"] >= 7 and http["connections_created"] <= 2


def test_a_client_for_a_service_without_an_http_pool_is_unknown_service(manager):
    with pytest.raises(UnknownService, match="known: api, comfy, down"):
        manager.client("nope")
    with pytest.raises(UnknownService, match="has no HTTP pool"):
        manager.client("comfy")


def test_a_client_after_its_manager_shut_down_raises_shutting_down(config):
    m = backend_pool.PoolManager(config)
    api = m.client("api")
    assert api.get("/ok").ok
    m.shutdown(1)
    with pytest.raises(ShuttingDown):
        api.get("/ok")


def test_a_client_of_the_process_wide_manager(config):
    m = backend_pool.init(config)
    try:
        assert backend_pool.get().client("api").get("/ok").status_code == 200
    finally:
        backend_pool.shutdown(1)
    with pytest.raises(ShuttingDown):
        m.client("api")
