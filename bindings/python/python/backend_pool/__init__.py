"""Pooled HTTP and WebSocket connections to AI backends, for Blender add-ons.

A native (Rust) module: every call that waits on the network releases the GIL, so Blender's
UI and other Python threads keep running while requests are in flight.

    import backend_pool

    manager = backend_pool.PoolManager({"service": [{"name": "llm", "url": "http://127.0.0.1:4000"}]})
    llm = manager.client("llm")                 # or manager.request("llm", "POST", ...)
    reply = llm.post("/v1/chat/completions", json={...}, timeout=30).raise_for_status()
    print(reply.status_code, reply.headers["content-type"], reply.json())
    manager.shutdown(1.0)

Requests take the arguments of ``requests`` and ``httpx`` (``params=``, ``data=``, ``json=``,
``headers=``, ``timeout=`` a number or a ``Timeout``); streams read with ``iter_bytes()``,
``iter_lines()`` and ``iter_sse()``. The package README lists where they differ.

For an add-on, use the process-wide manager: ``init(config)`` in ``register()``,
``get()`` anywhere, ``shutdown(timeout)`` in ``unregister()``.

To cancel a call from another thread (a Cancel button), give it a ``CancelToken``
(``request(..., cancel=token)``, ``stream``, ``websocket``) and call ``token.cancel()``, or call
``cancel()`` on a ``StreamingResponse`` or ``WebSocket``: the blocked call raises ``Cancelled``.
"""

from __future__ import annotations

from ._native import (
    CancelToken,
    Client,
    Download,
    PoolManager,
    Response,
    ServerSentEvent,
    Session,
    StreamingResponse,
    Timeout,
    WebSocket,
    __version__,
    get,
    init,
    shutdown,
)
from .errors import (
    BackendConnectionError,
    BackendPoolError,
    Cancelled,
    ConfigError,
    HTTPStatusError,
    InvalidRequest,
    JsonError,
    PoolTimeout,
    SaveError,
    ServiceUnavailable,
    ShuttingDown,
    TimeoutException,
    TooLarge,
    UnknownService,
    WebSocketClosed,
)
from .headers import Headers

__all__ = [
    "PoolManager",
    "Client",
    "Session",
    "CancelToken",
    "Timeout",
    "Response",
    "StreamingResponse",
    "Download",
    "ServerSentEvent",
    "Headers",
    "WebSocket",
    "init",
    "get",
    "shutdown",
    "BackendPoolError",
    "ConfigError",
    "InvalidRequest",
    "UnknownService",
    "ShuttingDown",
    "Cancelled",
    "ServiceUnavailable",
    "TimeoutException",
    "PoolTimeout",
    "BackendConnectionError",
    "WebSocketClosed",
    "HTTPStatusError",
    "TooLarge",
    "SaveError",
    "JsonError",
    "__version__",
]
