"""Pooled HTTP and WebSocket connections to AI backends, for Blender add-ons.

A native (Rust) module: every call that waits on the network releases the GIL, so Blender's
UI and other Python threads keep running while requests are in flight.

    import backend_pool

    manager = backend_pool.PoolManager({"service": [{"name": "llm", "url": "http://127.0.0.1:4000"}]})
    reply = manager.request("llm", "POST", "/v1/chat/completions", json={...}, timeout=30)
    print(reply.status, reply.json())
    manager.shutdown(1.0)

For an add-on, use the process-wide manager: ``init(config)`` in ``register()``,
``get()`` anywhere, ``shutdown(timeout)`` in ``unregister()``.

To cancel a call from another thread (a Cancel button), give it a ``CancelToken``
(``request(..., cancel=token)``, ``stream``, ``websocket``) and call ``token.cancel()``, or call
``cancel()`` on a ``StreamingResponse`` or ``WebSocket``: the blocked call raises ``Cancelled``.
"""

from __future__ import annotations

from ._native import (
    CancelToken,
    PoolManager,
    Response,
    StreamingResponse,
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
    ServiceUnavailable,
    ShuttingDown,
    Timeout,
    TooLarge,
    UnknownService,
    WebSocketClosed,
)

__all__ = [
    "PoolManager",
    "CancelToken",
    "Response",
    "StreamingResponse",
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
    "Timeout",
    "PoolTimeout",
    "BackendConnectionError",
    "WebSocketClosed",
    "HTTPStatusError",
    "TooLarge",
    "JsonError",
    "__version__",
]
