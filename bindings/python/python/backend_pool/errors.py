"""Exception classes raised by :mod:`backend_pool`.

Every exception carries ``service`` (the service name, or ``None``), ``phase`` (``"wait"``,
``"connect"``, ``"send"``, ``"receive"``, ``"read"`` or ``None``) and ``error_class`` (the
class the statistics count it under, e.g. ``"pool_timeout"``) as attributes; the message
names the service and the phase.

``Cancelled`` subclasses :class:`concurrent.futures.CancelledError`, what thread-based Python
code (a ``ThreadPoolExecutor`` job, ``Future.result()``) already catches for "this work was
cancelled", and not :class:`asyncio.CancelledError` (a ``BaseException`` that asyncio uses to
unwind a task: raising it from a blocking call would escape ``except Exception``). It is not a
``ConnectionError`` nor a ``TimeoutError``: nothing failed, the caller asked for it.

Hierarchy::

    BackendPoolError(Exception)
    ├── ConfigError(ValueError)
    ├── InvalidRequest(ValueError)       a request that cannot be sent as asked (bad path or
    │                                    header); rejected before any connection is used
    ├── UnknownService(LookupError)      unknown service, or no pool of that kind
    ├── ShuttingDown                     the manager is shutting down or shut down
    ├── Cancelled(concurrent.futures.CancelledError)   a CancelToken, or cancel() / close()
    │                                    from another thread, interrupted the call
    ├── ServiceUnavailable               unhealthy service: fails fast
    ├── TimeoutException(TimeoutError)   connect / send / receive / read ran past its deadline
    │   └── PoolTimeout                  no pooled connection became free in time
    ├── BackendConnectionError(ConnectionError)   refused, reset, closed, protocol failure
    │   └── WebSocketClosed              the peer closed the WebSocket
    ├── HTTPStatusError                  raise_for_status() on a 4xx / 5xx response; its
    │                                    .response holds the status, headers and body
    ├── TooLarge                         a body or message over its configured limit
    ├── SaveError(OSError)               download() could not make, write or rename its file
    └── JsonError(ValueError)            a body that is not valid JSON
"""

from __future__ import annotations

from concurrent.futures import CancelledError
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._native import Response

__all__ = [
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
]


class BackendPoolError(Exception):
    """Base class of every error raised by backend_pool."""

    service: str | None = None
    phase: str | None = None
    error_class: str | None = None


class ConfigError(BackendPoolError, ValueError):
    """The configuration is invalid (syntax, unknown key, bad value, unreadable file)."""


class InvalidRequest(BackendPoolError, ValueError):
    """The request cannot be sent as asked: a path that is not a path on the service, an
    invalid header name or value. Raised before checkout: no connection is used, and the
    service's health is not affected."""


class UnknownService(BackendPoolError, LookupError):
    """No service has this name, or the service has no pool of the requested kind."""


class ShuttingDown(BackendPoolError):
    """The pool manager is shutting down or has shut down, or the service's pool was retired
    by ``apply()`` (replaced or removed) while the call waited for it."""


class Cancelled(BackendPoolError, CancelledError):
    """The call was cancelled from another thread while it waited, connected, sent or read:
    by a ``CancelToken`` given to it, or by ``cancel()`` / ``close()`` on its stream or
    WebSocket. The connection involved was closed, never returned to its pool half-used;
    ``phase`` says where the call was. A call given a token already cancelled raises it at
    once, without taking a connection."""


class ServiceUnavailable(BackendPoolError):
    """The service is unhealthy; acquisitions fail fast until a health probe succeeds."""


class TimeoutException(BackendPoolError, TimeoutError):
    """A phase (connect, send, receive, read) ran past its deadline. (httpx's name: in
    ``backend_pool``, ``Timeout`` is the ``timeout=`` value, as in httpx.)"""


class PoolTimeout(TimeoutException):
    """No pooled connection became free before the wait timeout."""


class BackendConnectionError(BackendPoolError, ConnectionError):
    """Connecting failed, or the connection closed, reset or broke the protocol."""


class WebSocketClosed(BackendConnectionError):
    """The WebSocket peer closed the connection."""


class HTTPStatusError(BackendPoolError):
    """A 4xx or 5xx response, raised by ``raise_for_status()``.

    ``response`` is the whole ``Response``: ``.status_code``, ``.headers``, ``.text``,
    ``.json()`` (ComfyUI explains a rejected prompt in a 400's JSON body, under
    ``node_errors``). From a ``StreamingResponse``, it holds the body's first MiB.
    ``status_code`` (and its alias ``status``) is the code; ``error_class`` is ``"status"``.
    """

    response: Response
    status_code: int = 0
    status: int = 0


class TooLarge(BackendPoolError):
    """A response body or WebSocket message exceeded its configured limit."""


class SaveError(BackendPoolError, OSError):
    """``download()`` could not save the body: making, writing or renaming its file failed
    (the message names the file and the system's reason). Nothing is left under the
    destination's name."""


class JsonError(BackendPoolError, ValueError):
    """A body or message could not be encoded or decoded as JSON."""
