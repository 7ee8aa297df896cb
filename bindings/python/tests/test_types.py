"""The dicts the module returns have the shapes ``backend_pool.types`` (and so the stubs) declare."""

from __future__ import annotations

import typing

import backend_pool
from backend_pool.types import Health, InUse, ShutdownReport


def check(value, shape) -> None:
    """`value` is a dict with exactly `shape`'s keys, each value of its declared type."""
    hints = typing.get_type_hints(shape)
    assert set(value) == set(hints), (sorted(value), sorted(hints))
    for key, hint in hints.items():
        v = value[key]
        if typing.get_origin(hint) is typing.Literal:
            assert v in typing.get_args(hint), f"{shape.__name__}.{key}: {v!r} is not one of {typing.get_args(hint)}"
        elif hint in (int, str, bool):
            assert isinstance(v, hint), (key, v)


def test_a_shutdown_report_with_a_websocket_still_leased_matches_its_type(config):
    m = backend_pool.PoolManager(config)
    ws = m.websocket("comfy", wait_timeout=2)
    held = m.stream("api", "GET", "/download?n=1000000")
    report = m.shutdown(0.05)
    ws.discard()
    held.close()
    check(report, ShutdownReport)
    kinds = sorted(entry["kind"] for entry in report["still_in_use"])
    assert kinds == ["http", "websocket"], report
    for entry in report["still_in_use"]:
        check(entry, InUse)


def test_health_matches_its_type(manager):
    manager.request("api", "GET", "/ok")
    check(manager.health("api"), Health)
    for health in manager.health().values():
        check(health, Health)
