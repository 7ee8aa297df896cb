"""Types for annotations: the shapes of the dicts the module returns and of the arguments it
takes. Real classes at runtime (``TypedDict``), so they can be imported and checked against.

    from backend_pool.types import ShutdownReport

    report: ShutdownReport | None = manager.shutdown(2.0)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

__all__ = ["Config", "HeaderTypes", "Health", "InUse", "ServerSentEvent", "ShutdownReport"]

#: A configuration: a path to a ``.toml`` or ``.json`` file, a TOML string, a dict in the
#: same schema, or None for the four known backends on their default ports.
Config = str | os.PathLike[str] | Mapping[str, Any] | None

#: Request headers: a mapping, or ``(name, value)`` pairs (a name may repeat).
HeaderTypes = Mapping[str, str] | Sequence[tuple[str, str]]


class Health(TypedDict):
    """``PoolManager.health(service)``."""

    state: Literal["healthy", "degraded", "unhealthy"]
    consecutive_failures: int
    last_check_unix_ms: int | None
    last_error: str | None


class InUse(TypedDict):
    """Connections of one pool still checked out when a shutdown's deadline passed."""

    service: str
    kind: Literal["http", "websocket"]
    count: int


class ShutdownReport(TypedDict):
    """``PoolManager.shutdown()`` and ``backend_pool.shutdown()``."""

    elapsed_ms: int
    still_in_use: list[InUse]
    maintenance_joined: bool


class ServerSentEvent(TypedDict):
    """One event of ``StreamingResponse.iter_events()``."""

    event: str
    data: str
    id: str | None
    retry: int | None
