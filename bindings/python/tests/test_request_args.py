"""Request arguments in the conventions of requests and httpx: params=, data= (bytes, text,
forms), json=, headers=."""

from __future__ import annotations

import json

import pytest

from backend_pool import Headers


def echo(manager, method="POST", path="/echo", **kwargs):
    return manager.request("api", method, path, **kwargs).json()


def test_params_from_a_dict_are_percent_encoded(manager):
    # ComfyUI's /view?filename=…&subfolder=…&type=output, with a space in the name.
    e = echo(manager, "GET", params={"filename": "my render.png", "subfolder": "", "type": "output"})
    assert e["path"] == "/echo"
    assert e["query"] == "filename=my%20render.png&subfolder=&type=output"
    assert e["args"] == {"filename": ["my render.png"], "subfolder": [""], "type": ["output"]}


def test_params_from_pairs_keep_order_repeats_and_encode_every_reserved_byte(manager):
    params = [("q", "a&b=c/d?#+%"), ("q", "é 漢"), ("n", 3), ("f", 1.5), ("t", True), ("z", None)]
    e = echo(manager, "GET", params=params)
    assert e["query"] == (
        "q=a%26b%3Dc%2Fd%3F%23%2B%25&q=%C3%A9%20%E6%BC%A2&n=3&f=1.5&t=true&z="
    )
    assert e["args"]["q"] == ["a&b=c/d?#+%", "é 漢"]
    assert echo(manager, "GET", params={"id": [1, 2], "ok": False})["query"] == "id=1&id=2&ok=false"


def test_params_join_a_query_already_in_the_path(manager):
    assert echo(manager, "GET", "/echo?x=1", params={"y": "2"})["query"] == "x=1&y=2"
    assert echo(manager, "GET", "/echo?", params={"y": "2"})["query"] == "y=2"
    assert echo(manager, "GET", "/echo?x=1", params={})["query"] == "x=1"


@pytest.mark.parametrize("params", [42, "a=b", {"a": object()}, {"a": b"bytes"}, [("a",)], {1: "x"}])
def test_params_of_another_type_are_a_type_error_before_anything_is_sent(manager, backends, params):
    before = backends.http.requests
    with pytest.raises(TypeError):
        manager.request("api", "GET", "/echo", params=params)
    assert backends.http.requests == before


def test_data_as_a_dict_or_pairs_is_a_form(manager):
    e = echo(manager, data={"name": "my render", "n": 2, "tags": ["a", "é"]})
    assert e["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert e["body"] == "name=my+render&n=2&tags=a&tags=%C3%A9"
    e = echo(manager, data=[("b", "1"), ("a", "&=")])
    assert e["body"] == "b=1&a=%26%3D"
    # A content type the caller set is kept.
    e = echo(manager, data={"a": "1"}, headers={"content-type": "application/x-custom"})
    assert e["headers"]["content-type"] == "application/x-custom" and e["body"] == "a=1"


def test_data_bytes_and_text_are_sent_as_they_are_without_a_content_type(manager):
    e = echo(manager, data=b'{"raw": 1}')
    assert e["body"] == '{"raw": 1}' and "content-type" not in e["headers"]
    assert echo(manager, data="é")["body"] == "é"
    with pytest.raises(TypeError):
        manager.request("api", "POST", "/echo", data=object())


def test_json_is_compact_with_its_content_type_unless_one_is_given(manager):
    e = echo(manager, json={"a": [1, None], "b": "é"})
    assert e["headers"]["content-type"] == "application/json"
    assert json.loads(e["body"]) == {"a": [1, None], "b": "é"} and " " not in e["body"]
    e = echo(manager, json=[1], headers=[("Content-Type", "application/vnd.api+json")])
    assert e["headers"]["content-type"] == "application/vnd.api+json"
    with pytest.raises(TypeError, match="json= or data="):
        manager.request("api", "POST", "/echo", json={}, data={"a": "1"})


def test_headers_from_a_mapping_or_pairs_repeated_names_all_sent(manager):
    e = echo(manager, headers=[("X-Tag", "one"), ("X-Tag", "two"), ("X-Other", "3")])
    assert [v for k, v in e["header_list"] if k == "x-tag"] == ["one", "two"]
    e = echo(manager, headers=Headers({"X-From": "headers object"}))
    assert e["headers"]["x-from"] == "headers object"
    with pytest.raises(TypeError):
        manager.request("api", "GET", "/ok", headers={"X-Bad": 1})
