"""StreamingResponse: iter_bytes, iter_lines, iter_sse (the core's parser), raise_for_status,
num_bytes_downloaded, the GIL released while bytes flow."""

from __future__ import annotations

import pytest

import backend_pool
from backend_pool import Headers, HTTPStatusError, JsonError, ServerSentEvent, TooLarge
from conftest import Ticker, config_for


def test_iter_bytes_as_they_arrive_and_num_bytes_downloaded(manager):
    n = 1_000_000
    with manager.stream("api", "GET", "/download", params={"n": n}) as s:
        assert s.num_bytes_downloaded == 0
        seen, chunks = [], []
        for chunk in s.iter_bytes():
            assert 0 < len(chunk) <= 64 * 1024
            chunks.append(chunk)
            seen.append(s.num_bytes_downloaded)
        assert s.num_bytes_downloaded == n
    body = b"".join(chunks)
    assert body == bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    assert seen == sorted(seen) and seen[-1] == n
    assert seen == [sum(len(c) for c in chunks[: i + 1]) for i in range(len(chunks))]


def test_iter_bytes_with_a_chunk_size_gives_exact_chunks(manager):
    with manager.stream("api", "GET", "/download?n=2500") as s:
        assert [len(c) for c in s.iter_bytes(1000)] == [1000, 1000, 500]
    with manager.stream("api", "GET", "/lines") as s:  # 32 bytes in 4 writes 20 ms apart
        assert [len(c) for c in s.iter_bytes(7)] == [7, 7, 7, 7, 4]
    with manager.stream("api", "GET", "/ok") as s:
        with pytest.raises(ValueError):
            s.iter_bytes(0)


def test_iter_lines_splits_on_lf_crlf_and_cr(manager):
    with manager.stream("api", "GET", "/lines") as s:
        lines = list(s.iter_lines())
        assert s.num_bytes_downloaded == len(b"one\ntwo\r\nthree\r\nfour\rfive\r\n\nlast")
    # "three\r" then "\n" in the next write is one line ending, not two.
    assert lines == ["one", "two", "three", "four", "five", "", "last"]


def test_iter_sse_on_a_multi_line_event_stream(manager):
    with manager.stream("api", "GET", "/sse-spec") as s:
        assert s.headers["content-type"] == "text/event-stream"
        events = list(s.iter_sse())
    assert all(isinstance(e, ServerSentEvent) for e in events)
    assert [(e.event, e.data, e.id, e.retry) for e in events] == [
        ("progress", '{"step": 1,\n "of": 2}', "7", 1500),
        ("message", "first line\nsecond line", "7", None),
        ("message", "no space", "", None),
        ("done", "", "", None),
    ]
    assert events[0].json() == {"step": 1, "of": 2}
    with pytest.raises(JsonError) as e:
        events[1].json()
    assert isinstance(e.value, ValueError) and e.value.service == "api"
    assert repr(events[0]) == (
        "ServerSentEvent(event='progress', data='{\"step\": 1,\\n \"of\": 2}', id='7', retry=1500)"
    )


def test_iter_sse_shares_the_parser_between_iterators_of_one_stream(manager):
    with manager.stream("api", "GET", "/sse?n=3") as s:
        first = next(s.iter_sse())
        rest = list(s.iter_sse())  # a new iterator continues where the first stopped
    assert first.id == "0" and [e.id for e in rest] == ["1", "2", "2", "2", "2"]


def test_stream_head_and_raise_for_status_on_success(manager):
    with manager.stream("api", "GET", "/echo") as s:
        assert s.status_code == s.status == 200 and s.reason_phrase == "OK"
        assert isinstance(s.headers, Headers) and s.headers.get_list("x-multi") == ["a", "b"]
        assert s.raise_for_status() is s
        assert s.read()  # still unread until now


def test_a_streamed_400_raises_with_its_body_and_gives_the_connection_back(backends):
    m = backend_pool.PoolManager(config_for(backends, max_connections=1))
    try:
        before = backends.http.connections
        s = m.stream("api", "POST", "/prompt-error", json={"prompt": {}})
        assert s.status_code == 400
        with pytest.raises(HTTPStatusError) as e:
            s.raise_for_status()
        assert s.closed
        err = e.value
        assert err.status_code == 400 and err.response.status_code == 400
        assert err.response.json()["error"]["type"] == "prompt_outputs_failed_validation"
        assert "POST /prompt-error" in str(err)
        # The body was read to its end: the one connection is reused.
        assert m.request("api", "GET", "/ok", wait_timeout=1).status_code == 200
        assert backends.http.connections == before + 1
    finally:
        m.shutdown(1)


@pytest.mark.parametrize("how", ["iter_lines", "readline", "__next__"])
def test_a_line_over_8_mib_is_too_large(manager, how):
    with manager.stream("api", "GET", "/repeat", params={"n": 8 * 1024 * 1024 + 1}) as s:
        with pytest.raises(TooLarge) as e:
            getattr(s, how)() if how != "iter_lines" else next(s.iter_lines())
        assert e.value.service == "api" and e.value.error_class == "too_large"
        assert "8388608 bytes" in str(e.value)
    with manager.stream("api", "GET", "/repeat", params={"n": 8 * 1024 * 1024}) as s:
        assert len(next(s.iter_lines())) == 8 * 1024 * 1024  # the limit itself passes


@pytest.mark.parametrize("how", ["iter_sse", "iter_bytes", "iter_lines"])
def test_gil_released_while_waiting_for_stream_bytes(manager, how):
    with Ticker() as ticker:
        with manager.stream("api", "GET", "/sse?n=4&gap_ms=150") as s:
            items = list(getattr(s, how)())
    assert items
    assert ticker.max_gap < 0.25, f"Python stalled {ticker.max_gap:.3f} s"
