"""Type stubs for the native module ``backend_pool._native`` (re-exported by ``backend_pool``)."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any, final

from typing_extensions import Self

from backend_pool.types import Config, HeaderTypes, ServerSentEvent, ShutdownReport

__all__ = [
    "__version__",
    "PoolManager",
    "CancelToken",
    "Response",
    "StreamingResponse",
    "WebSocket",
    "init",
    "get",
    "shutdown",
]

__version__: str


@final
class CancelToken:
    """Cancels the calls given it (``cancel=token``) from any thread.

    ``cancel()`` makes a call blocked on the token (waiting for a pooled connection,
    connecting, waiting for a response head, reading a body, an event stream or a
    WebSocket, sending) raise ``Cancelled`` within milliseconds, on its own thread; every
    later call given the token raises it at once, without taking a connection. The
    connection involved is closed, never returned to its pool half-used; a stream or
    WebSocket given the token that no thread is using is closed at once. One token can
    serve every call of a job; it cannot be reset: make one per job. Cheap to make, safe to
    share between threads.
    """

    def __new__(cls) -> Self: ...
    def cancel(self) -> None:
        """Cancels every call given this token (idempotent); returns at once, without
        waiting for the calls to return."""
    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` was called."""

@final
class PoolManager:
    """Every connection to every configured backend.

    ``config`` is a dict (the TOML / JSON schema), a TOML string, a path to a ``.toml`` or
    ``.json`` file, or None for ComfyUI, LiteLLM, Wan2GP and RVC on their default ports.
    Raises ``ConfigError`` for an invalid configuration. No connection opens until first use.
    """

    def __new__(cls, config: Config = None) -> Self: ...
    def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | bytearray | memoryview | str | None = None,
        headers: HeaderTypes | None = None,
        timeout: float | None = None,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
    ) -> Response:
        """Sends a request and reads the whole response (the GIL is released meanwhile).

        ``timeout`` bounds the whole request in seconds; ``wait_timeout`` the wait for a pooled
        connection. Non-2xx statuses are responses (see ``Response.raise_for_status``).
        ``cancel.cancel()`` from another thread makes the call raise ``Cancelled``.
        Raises ``InvalidRequest`` (a bad path or header, before any connection is used),
        ``PoolTimeout``, ``ServiceUnavailable``, ``ShuttingDown``, ``Timeout``,
        ``BackendConnectionError``, ``TooLarge``, ``UnknownService``, ``Cancelled``.
        """
    def stream(
        self,
        service: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | bytearray | memoryview | str | None = None,
        headers: HeaderTypes | None = None,
        timeout: float | None = None,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
    ) -> StreamingResponse:
        """Like ``request`` with the body unread: for server-sent events and downloads.

        ``cancel`` cancels the request and every later read of its body; so does the
        stream's own ``cancel()``, which leaves ``cancel`` itself uncancelled."""
    def websocket(
        self,
        service: str,
        *,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
    ) -> WebSocket:
        """Checks out a pooled WebSocket, waiting at most ``wait_timeout`` seconds for a free
        socket (the service's ``wait_timeout_ms`` by default).

        ``cancel`` cancels the wait and every later read or send of the lease; so does the
        lease's own ``cancel()``, which leaves ``cancel`` itself uncancelled."""
    def stats(self) -> dict[str, Any]:
        """A snapshot of every figure (after shutdown: the final one)."""
    def prometheus(self) -> str:
        """The statistics in Prometheus text format."""
    def health(self, service: str | None = None) -> Any:
        """``Health`` of one service, or ``{name: Health}`` for all."""
    @property
    def services(self) -> list[str]: ...
    @property
    def closed(self) -> bool: ...
    def shutdown(self, timeout: float = 5.0) -> ShutdownReport | None:
        """Shuts down within ``timeout`` seconds; None if already shut down."""
    def __enter__(self) -> PoolManager: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

@final
class Response:
    @property
    def status(self) -> int: ...
    @property
    def ok(self) -> bool: ...
    @property
    def headers(self) -> dict[str, str]:
        """Lowercase names; repeated headers joined with ", "."""
    @property
    def content(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    @property
    def service(self) -> str: ...
    def header(self, name: str, default: str | None = None) -> str | None: ...
    def json(self) -> Any:
        """The body decoded as JSON; raises ``JsonError``."""
    def raise_for_status(self) -> Response:
        """Raises ``HTTPStatusError`` for 4xx / 5xx."""

@final
class StreamingResponse(Iterator[bytes]):
    @property
    def status(self) -> int: ...
    @property
    def ok(self) -> bool: ...
    @property
    def headers(self) -> dict[str, str]:
        """Lowercase names; repeated headers joined with ", "."""
    @property
    def service(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def header(self, name: str, default: str | None = None) -> str | None: ...
    def read(self, size: int = -1) -> bytes: ...
    def readline(self) -> bytes: ...
    def __iter__(self) -> StreamingResponse: ...
    def __next__(self) -> bytes: ...
    def iter_lines(self) -> Iterator[str]: ...
    def iter_chunks(self, chunk_size: int = 65536) -> Iterator[bytes]: ...
    def iter_events(self) -> Iterator[ServerSentEvent]: ...
    def close(self) -> None:
        """Closes the stream (the connection is reused if the body was read to its end).
        Never waits: a read blocked on another thread raises ``Cancelled``, and the
        connection is closed."""
    def cancel(self) -> None:
        """From any thread: a read blocked on the stream, and every later one, raises
        ``Cancelled``; the connection is closed. The token given to ``stream()`` is not
        cancelled."""
    def __enter__(self) -> StreamingResponse: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

@final
class WebSocket:
    @property
    def client_id(self) -> str | None: ...
    @property
    def service(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def send(self, data: str | bytes | bytearray) -> None: ...
    def send_json(self, value: Any) -> None: ...
    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next text or binary message; raises ``Timeout`` (the socket stays usable)."""
    def recv_json(self, timeout: float | None = None) -> Any:
        """The next text message decoded as JSON (binary messages skipped)."""
    def finish(self) -> None:
        """Ends the lease at a quiet point (nothing it started is still running): the socket
        goes back to its pool. A call blocked on another thread is cancelled instead, as by
        ``close()``."""
    def close(self) -> None:
        """Ends the lease: back to the pool if it never read ``client_id`` nor sent,
        closed otherwise. Never waits: a read or send blocked on another thread raises
        ``Cancelled``, and the socket is closed."""
    def discard(self) -> None:
        """Closes the socket instead of returning it. Never waits, as ``close()``."""
    def cancel(self) -> None:
        """From any thread: a read or send blocked on the lease, and every later one, raises
        ``Cancelled``; the socket is closed. The token given to ``websocket()`` is not
        cancelled."""
    def __enter__(self) -> WebSocket: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

def init(config: Config = None) -> PoolManager:
    """Starts the process-wide manager, or returns the running one (``config`` then ignored)."""

def get() -> PoolManager | None:
    """The process-wide manager, or None."""

def shutdown(timeout: float = 5.0) -> ShutdownReport | None:
    """Shuts the process-wide manager down; None if none was running."""
