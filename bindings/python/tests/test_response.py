"""Response: status_code (status an alias), case-insensitive headers with their repeats,
raise_for_status() and the HTTPStatusError that keeps the response."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from backend_pool import BackendPoolError, Headers, HTTPStatusError, Response


def test_status_code_status_reason_and_ok(manager):
    r = manager.request("api", "GET", "/ok")
    assert isinstance(r, Response)
    assert r.status_code == r.status == 200 and r.ok and r.reason_phrase == "OK"
    r = manager.request("api", "GET", "/status/404")
    assert r.status_code == 404 and not r.ok and r.reason_phrase == "Not Found"
    assert manager.request("api", "GET", "/status/599").reason_phrase == ""


def test_headers_are_a_case_insensitive_read_only_mapping_with_repeats(manager):
    h = manager.request("api", "GET", "/echo").headers
    assert isinstance(h, Headers) and isinstance(h, Mapping)
    assert h["X-ECHO"] == h["x-echo"] == h.get("X-Echo") == "1"
    assert "Content-Type" in h and "content-type" in h and "missing" not in h and 42 not in h
    assert h.get("missing") is None and h.get("missing", "d") == "d"
    with pytest.raises(KeyError):
        h["missing"]
    # Repeats: joined with ", " as httpx does, one by one through get_list / multi_items.
    assert h["x-multi"] == "a, b"
    assert h.get_list("X-Multi") == ["a", "b"]
    assert h.get_list("set-cookie") == ["session=1; Path=/", "theme=dark, blue"]
    assert h.get_list("missing") == []
    pairs = h.multi_items()
    assert ("x-multi", "a") in pairs and ("x-multi", "b") in pairs
    assert len([k for k, _ in pairs if k == "set-cookie"]) == 2
    # Keys are lowercase and unique; len counts names.
    assert list(h) == list(dict(h)) and all(k == k.lower() for k in h)
    assert len(h) == len(set(k for k, _ in pairs))
    assert h == {k.upper(): v for k, v in h.items()} and h != {"x-echo": "1"}
    with pytest.raises(TypeError):
        h["x-echo"] = "2"  # type: ignore[index]


def test_a_400_with_a_json_body_read_through_raise_for_status(manager):
    r = manager.request("api", "POST", "/prompt-error", json={"prompt": {}})
    with pytest.raises(HTTPStatusError) as e:
        r.raise_for_status()
    err = e.value
    assert isinstance(err, BackendPoolError)
    assert err.response is r and err.status_code == err.status == 400
    assert err.response.status_code == 400
    assert err.response.json()["node_errors"]["3"]["class_type"] == "KSampler"
    assert "prompt_outputs_failed_validation" in err.response.text
    assert err.response.headers["content-type"] == "application/json"
    assert err.service == "api" and err.error_class == "status" and err.phase == "receive"
    message = str(err)
    assert "'api'" in message and "POST /prompt-error" in message and "400 Bad Request" in message
    assert "client error" in message


def test_raise_for_status_names_a_server_error_and_passes_success_through(manager):
    with pytest.raises(HTTPStatusError, match="503 Service Unavailable .a server error") as e:
        manager.request("api", "GET", "/status/503", params={"x": 1}).raise_for_status()
    # params= by name only: a value may be a secret.
    assert "GET /status/503?x=…" in str(e.value)
    for status in (200, 204, 302):
        r = manager.request("api", "GET", f"/status/{status}")
        assert r.raise_for_status() is r


def status_errors(manager) -> int:
    return manager.stats()["services"][0]["http"]["errors"]["status"]


def test_raise_for_status_counts_a_status_error_once_per_response(manager, tmp_path):
    # As Rust's error_for_status(): a 4xx / 5xx counted under `status`, a 2xx not; one
    # response counts once however often it is raised (Rust's consumes the response).
    manager.request("api", "GET", "/ok").raise_for_status()
    assert status_errors(manager) == 0
    r = manager.request("api", "GET", "/status/404")
    assert status_errors(manager) == 0, "a status is a response until raised"
    for _ in range(2):
        with pytest.raises(HTTPStatusError):
            r.raise_for_status()
    assert status_errors(manager) == 1
    with pytest.raises(HTTPStatusError):
        manager.request("api", "GET", "/status/500").raise_for_status()
    assert status_errors(manager) == 2
    # A stream's, the same.
    with manager.stream("api", "GET", "/status/503") as s:
        for _ in range(2):
            with pytest.raises(HTTPStatusError):
                s.raise_for_status()
    assert status_errors(manager) == 3
    with manager.stream("api", "GET", "/ok") as s:
        assert s.raise_for_status() is s
    assert status_errors(manager) == 3
    # A download's status error is counted by the core; raising its response again is not
    # a second failure.
    with pytest.raises(HTTPStatusError) as e:
        manager.download("api", "/status/404", tmp_path / "x")
    assert status_errors(manager) == 4
    with pytest.raises(HTTPStatusError):
        e.value.response.raise_for_status()
    assert status_errors(manager) == 4
    assert manager.stats()["services"][0]["http"]["errors"]["closed"] == 0
