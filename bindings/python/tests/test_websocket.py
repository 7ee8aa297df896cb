"""WebSocket leases: ComfyUI-style clientId, send / recv, timeouts, peer close, reuse."""

from __future__ import annotations

import pytest

from backend_pool import BackendConnectionError, TimeoutException, WebSocketClosed


def test_status_first_then_echo(manager):
    with manager.websocket("comfy") as ws:
        assert ws.client_id  # the pool gives every socket its own id
        first = ws.recv_json(timeout=2)
        assert first["type"] == "status" and first["data"]["sid"] == ws.client_id
        ws.send_json({"type": "ping", "n": 1})
        assert ws.recv_json(timeout=2) == {"type": "ping", "n": 1}
        ws.send("plain text")
        assert ws.recv(timeout=2) == "plain text"
        ws.send(b"\x00\x01bin")
        assert ws.recv(timeout=2) == b"\x00\x01bin"
        # A ComfyUI-style preview frame: 4-byte type, 4-byte format, image bytes.
        ws.send("binary-please")
        frame = ws.recv(timeout=2)
        assert isinstance(frame, bytes) and frame[:8] == b"\x00\x00\x00\x01\x00\x00\x00\x02"
        ws.send("binary-please")
        ws.send_json({"after": "binary"})
        assert ws.recv_json(timeout=2) == {"after": "binary"}  # binary skipped
    assert ws.closed
    with pytest.raises(ValueError):
        ws.send("after close")


def test_recv_timeout_keeps_socket_usable(manager):
    with manager.websocket("comfy") as ws:
        ws.recv_json(timeout=2)  # status
        with pytest.raises(TimeoutException) as e:
            ws.recv(timeout=0.1)
        assert isinstance(e.value, TimeoutError)
        assert e.value.service == "comfy" and e.value.phase == "read"
        ws.send("still alive")
        assert ws.recv(timeout=2) == "still alive"


def test_returned_socket_is_reused(manager):
    with manager.websocket("comfy") as ws:
        first_id = ws.client_id
        ws.recv_json(timeout=2)
        ws.finish()  # nothing of this lease is still running
    with manager.websocket("comfy") as ws:
        assert ws.client_id == first_id
        ws.send("x")
        assert ws.recv(timeout=2) == "x"
    pool = manager.stats()["services"][1]["websocket"]
    assert pool["acquisitions"] == 2 and pool["connections_created"] == 1


def test_a_lease_ended_without_finish_is_not_reused(manager):
    with manager.websocket("comfy") as ws:
        first_id = ws.client_id  # a job may now run for this id
        ws.recv_json(timeout=2)
    with manager.websocket("comfy") as ws:
        assert ws.client_id != first_id
        ws.finish()  # this lease ends at a quiet point: its socket stays
    pool = manager.stats()["services"][1]["websocket"]
    assert pool["connections_created"] == 2 and pool["closed"]["abandoned"] == 1


def test_peer_close_discards_socket(manager):
    with manager.websocket("comfy") as ws:
        ws.recv_json(timeout=2)
        ws.send("close-please")
        with pytest.raises(WebSocketClosed) as e:
            ws.recv(timeout=2)
        assert isinstance(e.value, BackendConnectionError) and isinstance(e.value, ConnectionError)
        assert "'comfy'" in str(e.value)
    with manager.websocket("comfy") as ws2:
        ws2.recv_json(timeout=2)
    pool = manager.stats()["services"][1]["websocket"]
    assert pool["connections_created"] == 2 and pool["closed"]["broken"] >= 1


def test_discard(manager):
    ws = manager.websocket("comfy", wait_timeout=2)
    ws.discard()
    assert ws.closed
    assert manager.stats()["services"][1]["websocket"]["idle"] == 0


def test_the_wait_for_a_socket_is_wait_timeout_and_a_pool_counts_checkouts(manager):
    with pytest.raises(TypeError):
        manager.websocket("comfy", timeout=2)  # the wait for a socket is `wait_timeout`
    before = manager.stats()["services"][1]["websocket"]["acquisitions"]
    for _ in range(2):
        manager.websocket("comfy", wait_timeout=2).close()
    pool = manager.stats()["services"][1]["websocket"]
    assert pool["requests"] is None  # a WebSocket pool sends no requests
    assert pool["acquisitions"] == before + 2
    text = manager.prometheus()
    assert 'backend_pool_acquisitions_total{service="comfy",pool="websocket"}' in text
    assert 'backend_pool_requests_total{service="comfy",pool="websocket"}' not in text
