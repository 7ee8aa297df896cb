"""timeout= as in httpx: a number bounds each phase, a Timeout sets them one by one, a
(connect, read) pair as in requests; wait_timeout= overrides the pool timeout."""

from __future__ import annotations

import time

import pytest

import backend_pool
from backend_pool import PoolTimeout, Timeout, TimeoutException
from conftest import config_for
from servers import Blackhole


@pytest.fixture
def one_connection(backends):
    """A manager with one connection, held by a stream: the next request waits in the pool."""
    m = backend_pool.PoolManager(config_for(backends, max_connections=1))
    held = m.stream("api", "GET", "/download?n=1000000")
    yield m
    held.close()
    m.shutdown(1)


def timed(call):
    t0 = time.monotonic()
    try:
        call()
    except Exception as e:  # noqa: BLE001
        return e, time.monotonic() - t0
    raise AssertionError("no exception")


@pytest.mark.parametrize(
    "timeout",
    [0.3, Timeout(0.3), Timeout(read=0.3), Timeout(total=0.3), Timeout(60, total=0.3), (0.3, 0.3)],
    ids=repr,
)
def test_a_server_that_never_answers_times_out(manager, backends, timeout):
    err, took = timed(lambda: manager.request("api", "GET", "/hang", params={"ms": 3000}, timeout=timeout))
    assert isinstance(err, TimeoutException) and isinstance(err, TimeoutError), err
    assert not isinstance(err, PoolTimeout)
    assert 0.25 <= took < 1.5, took
    assert err.service == "api" and err.phase in ("receive", "read") and "'api'" in str(err)


@pytest.mark.parametrize("timeout", [0.15, Timeout(0.15), Timeout(60, pool=0.15)], ids=repr)
def test_the_wait_for_a_pooled_connection_is_bounded_by_timeout(one_connection, timeout):
    err, took = timed(lambda: one_connection.request("api", "GET", "/ok", timeout=timeout))
    assert isinstance(err, PoolTimeout) and err.phase == "wait", err
    assert 0.1 <= took < 1.0, took


def test_wait_timeout_overrides_the_pool_timeout(one_connection):
    err, took = timed(
        lambda: one_connection.request("api", "GET", "/ok", timeout=Timeout(pool=30), wait_timeout=0.15)
    )
    assert isinstance(err, PoolTimeout) and took < 1.0


def test_a_number_does_not_end_a_stream_that_keeps_sending(manager):
    # 4 events 150 ms apart: 0.6 s in all, no gap near 0.5 s (httpx: read is per read).
    t0 = time.monotonic()
    with manager.stream("api", "GET", "/sse?n=4&gap_ms=150", timeout=0.5) as s:
        events = list(s.iter_sse())
    assert time.monotonic() - t0 > 0.5
    assert events[-1].data == "[DONE]"


def test_a_total_timeout_ends_a_stream(manager):
    t0 = time.monotonic()
    with manager.stream("api", "GET", "/sse?n=20&gap_ms=100", timeout=Timeout(total=0.5)) as s:
        with pytest.raises(TimeoutException) as e:
            list(s.iter_sse())
    assert 0.4 <= time.monotonic() - t0 < 1.5
    assert e.value.service == "api"


def test_a_connect_timeout_alone_does_not_bound_the_answer(manager):
    # connect bounds opening a connection only: never a deadline on a slow answer.
    r = manager.request("api", "GET", "/slow", params={"ms": 400}, timeout=Timeout(connect=0.1))
    assert r.status_code == 200


@pytest.mark.parametrize("timeout", [0.3, Timeout(connect=0.3), (0.3, 60)], ids=repr)
def test_a_connect_timeout_bounds_opening_a_connection(timeout):
    # The service allows 10 s to connect; the request's connect timeout replaces it.
    hole = Blackhole()
    m = backend_pool.PoolManager(
        {"service": [{"name": "hole", "url": hole.url, "connect_timeout_ms": 10_000, "http": {"min_connections": 0}}]}
    )
    try:
        err, took = timed(lambda: m.request("hole", "GET", "/", timeout=timeout))
        assert isinstance(err, TimeoutException) and err.phase == "connect", err
        assert err.error_class == "connect" and "300ms" in str(err), err
        assert took < 2.0, took
    finally:
        m.shutdown(1)
        hole.close()


def test_read_bounds_each_read_not_the_whole_request(manager):
    # 6 pieces 150 ms apart: 0.75 s in all, no silence near 0.5 s (httpx: read is per read).
    r = manager.request("api", "GET", "/slow-download?n=600000&parts=6&gap_ms=150", timeout=0.5)
    assert r.status_code == 200 and len(r.content) == 600_000


def test_read_bounds_the_silence_of_a_stream(manager):
    # Headers and one byte, then nothing: the service would wait 2 s, the request 0.3 s.
    with manager.stream("api", "GET", "/stall", params={"ms": 3000}, timeout=0.3) as s:
        err, took = timed(lambda: s.read())
    assert isinstance(err, TimeoutException) and err.phase == "read", err
    assert 0.25 <= took < 1.5, took


def test_client_calls_take_the_same_timeouts(manager):
    api = manager.client("api")
    err, took = timed(lambda: api.get("/hang", params={"ms": 3000}, timeout=Timeout(read=0.3)))
    assert isinstance(err, TimeoutException) and took < 1.5


def test_timeout_values():
    t = Timeout(5)
    assert (t.connect, t.read, t.pool, t.total) == (5.0, 5.0, 5.0, None)
    t = Timeout(5, connect=1, total=60)
    assert (t.connect, t.read, t.pool, t.total) == (1.0, 5.0, 5.0, 60.0)
    assert Timeout() == Timeout(None) and Timeout().connect is None
    assert Timeout(2) == Timeout(connect=2, read=2, pool=2) and Timeout(2) != Timeout(3)
    assert repr(Timeout(1.5, total=9)) == "Timeout(connect=1.5, read=1.5, pool=1.5, total=9.0)"


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_a_negative_or_non_finite_timeout_is_a_value_error(manager, bad):
    with pytest.raises(ValueError):
        Timeout(bad)
    with pytest.raises(ValueError):
        Timeout(total=bad)
    with pytest.raises(ValueError):
        manager.request("api", "GET", "/ok", timeout=bad)


@pytest.mark.parametrize("bad", ["5", (1, 2, 3), (1,), [1, 2], True, {"read": 1}])
def test_a_timeout_of_another_type_is_a_type_error(manager, bad):
    with pytest.raises(TypeError):
        manager.request("api", "GET", "/ok", timeout=bad)


@pytest.mark.parametrize(
    "timeout", [Timeout(read=0.3), 0.3, Timeout(60, total=0.3), Timeout(read=5, total=0.3)], ids=repr
)
def test_a_stalled_stream_names_the_deadline_that_fired(manager, timeout):
    # Headers and one byte, then silence: the error names the request's 300 ms (read or
    # total), not the service's 2 s of read-idle time.
    with manager.stream("api", "GET", "/stall", params={"ms": 3000}, timeout=timeout) as s:
        err, took = timed(lambda: s.read())
    assert isinstance(err, TimeoutException) and isinstance(err, TimeoutError), err
    assert err.phase == "read" and err.error_class == "timeout", err
    assert "300ms" in str(err) and "2s" not in str(err), err
    assert took < 1.5, took


def test_stalled_events_lines_and_downloads_name_the_read_timeout(manager, tmp_path):
    # /sse holds 3 s before its first event (after a comment).
    with manager.stream("api", "GET", "/sse?n=3&gap_ms=3000", timeout=Timeout(read=0.3)) as s:
        err, _ = timed(lambda: list(s.iter_sse()))
    assert isinstance(err, TimeoutException) and "300ms" in str(err), err
    with manager.stream("api", "GET", "/stall", params={"ms": 3000}, timeout=Timeout(read=0.3)) as s:
        err, _ = timed(lambda: list(s.iter_bytes()))
    assert isinstance(err, TimeoutException) and "300ms" in str(err), err
    api = manager.client("api")
    err, _ = timed(lambda: api.download("/stall?ms=3000", tmp_path / "x.bin", timeout=Timeout(read=0.3)))
    assert isinstance(err, TimeoutException) and "300ms" in str(err), err
    assert list(tmp_path.iterdir()) == []
