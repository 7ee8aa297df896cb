"""Type stubs for the native module ``backend_pool._native`` (re-exported by ``backend_pool``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import TracebackType
from typing import Any, final

from typing_extensions import Self, disjoint_base

from backend_pool.headers import Headers
from backend_pool.types import (
    Config,
    HeaderTypes,
    ProgressCallback,
    QueryParamTypes,
    RequestData,
    RequestFiles,
    ShutdownReport,
    TimeoutTypes,
    UploadProgressCallback,
)

__all__ = [
    "__version__",
    "PoolManager",
    "CancelToken",
    "Client",
    "Session",
    "Timeout",
    "Response",
    "StreamingResponse",
    "Download",
    "ServerSentEvent",
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
        params: QueryParamTypes | None = None,
        data: RequestData | None = None,
        json: Any = None,
        files: RequestFiles | None = None,
        headers: HeaderTypes | None = None,
        timeout: TimeoutTypes = None,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
        upload_progress: UploadProgressCallback | None = None,
    ) -> Response:
        """Sends a request and reads the whole response (the GIL is released meanwhile).

        ``params`` is the query (percent-encoded, appended to ``path``'s); ``data`` bytes or
        text as they are, or a form (a dict or pairs, ``application/x-www-form-urlencoded``);
        ``json`` a value sent as JSON; ``files`` a ``multipart/form-data`` body (paths and file
        objects streamed, not read into memory; ``data``'s fields first); ``headers`` a
        mapping or pairs. ``timeout`` as in
        httpx: seconds for each phase (connect, read, pool), a ``(connect, read)`` pair, or a
        ``Timeout``; ``wait_timeout`` the wait for a pooled connection (over ``timeout``'s).
        Non-2xx statuses are responses (see ``Response.raise_for_status``).
        ``cancel.cancel()`` from another thread makes the call raise ``Cancelled``.
        ``upload_progress(sent, total)`` runs on the calling thread while a body goes out, at
        most every 100 ms and once at the end (``sent == total``), holding the GIL only for
        itself; what it raises stops the upload (the connection is closed, nothing is sent
        again, counted as ``cancelled``) and propagates.
        Raises ``InvalidRequest`` (a bad path or header, before any connection is used),
        ``PoolTimeout``, ``ServiceUnavailable``, ``ShuttingDown``, ``TimeoutException``,
        ``BackendConnectionError``, ``TooLarge``, ``UnknownService``, ``Cancelled``;
        ``TypeError`` / ``ValueError`` for arguments it cannot send; ``OSError`` for a path in
        ``files`` it cannot read, and what a file object's ``read()`` raises.
        """
    def stream(
        self,
        service: str,
        method: str,
        path: str,
        *,
        params: QueryParamTypes | None = None,
        data: RequestData | None = None,
        json: Any = None,
        files: RequestFiles | None = None,
        headers: HeaderTypes | None = None,
        timeout: TimeoutTypes = None,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
        upload_progress: UploadProgressCallback | None = None,
    ) -> StreamingResponse:
        """Like ``request`` with the body unread: for server-sent events and downloads.

        ``timeout``'s read bounds each wait for body bytes, not a stream that keeps sending;
        ``Timeout(total=)`` ends it. ``cancel`` cancels the request and every later read of its
        body; so does the stream's own ``cancel()``, which leaves ``cancel`` itself
        uncancelled. ``files`` and ``upload_progress`` as for ``request``: the form goes out
        once, then the answer streams."""
    def download(
        self,
        service: str,
        path: str,
        dest: str | os.PathLike[str],
        *,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        timeout: TimeoutTypes = None,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
        progress: ProgressCallback | None = None,
    ) -> Download:
        """Saves the body of ``GET path`` to the file ``dest``, the GIL released while bytes
        flow; memory stays flat whatever the size (``max_body_bytes`` does not apply).

        The body goes to a temporary file beside ``dest``, renamed to ``dest`` (replacing a
        file there) once whole: a failed, cancelled or aborted download leaves nothing.
        ``progress(downloaded, total)`` (``total``: the ``Content-Length``, or None) runs on the
        calling thread at most every 100 ms while bytes arrive, and once more when the file is
        in place (``downloaded == total`` when the length is known); what it raises stops the
        download (the connection is closed, the temporary file removed: counted as
        ``cancelled``) and propagates; raised by that last call, it propagates with the whole
        file in place. ``timeout`` and ``cancel`` as for
        ``stream``. Raises ``HTTPStatusError`` for a status outside 2xx (its ``.response``
        holds the headers and the body's first 64 KiB; no file is made), ``SaveError`` (an
        ``OSError``) naming the file if it cannot be made, written or renamed, and the errors
        of ``request``."""
    def client(self, service: str) -> Client:
        """The service's HTTP pool as a ``Client`` (``get``, ``post``, ...); raises
        ``UnknownService`` if it has none."""
    def session(self, service: str) -> Session:
        """A ``Session`` of the service: its HTTP calls and WebSocket leases all go to one
        endpoint, chosen now by health, sessions already pinned there and the queue length the
        server last reported (as Rust's ``manager.session(service)``); never another. Raises
        ``UnknownService``, ``ShuttingDown``."""
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
        """``Health`` of one service, or ``{name: Health}`` for all (``backend_pool.types``)."""
    @property
    def services(self) -> list[str]: ...
    @property
    def closed(self) -> bool: ...
    def shutdown(self, timeout: float = 5.0) -> ShutdownReport | None:
        """Shuts down within ``timeout`` seconds; None if already shut down."""
    def apply(self, config: Config, *, timeout: float = 30.0) -> dict[str, Any]:
        """Changes the running manager to ``config`` without a restart: unchanged services
        keep their pools and calls; changed and removed ones take no new work, their calls
        in flight finish within ``timeout`` seconds (then are interrupted) and they close;
        new ones start lazily. Returns when the old ones are closed, with ``added``,
        ``replaced``, ``removed``, ``unchanged``, ``elapsed_ms``, ``still_in_use``. Raises
        ``ConfigError`` for an invalid configuration, which changes nothing."""
    def probe(self, service: str, *, timeout: float = 5.0) -> dict[str, Any]:
        """Runs ``service``'s health check now, within ``timeout`` seconds (a "Test
        connection" button): ``reachable``, ``check``, ``error``, ``elapsed_ms``, ``health``.
        Counts no request; recorded in the service's health as a maintenance probe."""
    def __enter__(self) -> PoolManager: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

@disjoint_base
class Client:
    """One service's HTTP pool (``manager.client("comfyui")``), as Rust's
    ``manager.http(service)``: every method takes ``PoolManager.request``'s keyword
    arguments. A view on the manager: nothing to close; after its shutdown, calls raise
    ``ShuttingDown``."""

    @property
    def service(self) -> str: ...
    def request(
        self,
        method: str,
        path: str,
        *,
        params: QueryParamTypes | None = None,
        data: RequestData | None = None,
        json: Any = None,
        files: RequestFiles | None = None,
        headers: HeaderTypes | None = None,
        timeout: TimeoutTypes = None,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
        upload_progress: UploadProgressCallback | None = None,
    ) -> Response: ...
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: QueryParamTypes | None = None,
        data: RequestData | None = None,
        json: Any = None,
        files: RequestFiles | None = None,
        headers: HeaderTypes | None = None,
        timeout: TimeoutTypes = None,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
        upload_progress: UploadProgressCallback | None = None,
    ) -> StreamingResponse: ...
    def download(
        self,
        path: str,
        dest: str | os.PathLike[str],
        *,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        timeout: TimeoutTypes = None,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
        progress: ProgressCallback | None = None,
    ) -> Download:
        """``PoolManager.download`` on this service."""
    def get(
        self,
        path: str,
        *,
        params: QueryParamTypes | None = None,
        data: RequestData | None = None,
        json: Any = None,
        files: RequestFiles | None = None,
        headers: HeaderTypes | None = None,
        timeout: TimeoutTypes = None,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
        upload_progress: UploadProgressCallback | None = None,
    ) -> Response: ...
    def head(
        self,
        path: str,
        *,
        params: QueryParamTypes | None = None,
        data: RequestData | None = None,
        json: Any = None,
        files: RequestFiles | None = None,
        headers: HeaderTypes | None = None,
        timeout: TimeoutTypes = None,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
        upload_progress: UploadProgressCallback | None = None,
    ) -> Response: ...
    def post(
        self,
        path: str,
        *,
        params: QueryParamTypes | None = None,
        data: RequestData | None = None,
        json: Any = None,
        files: RequestFiles | None = None,
        headers: HeaderTypes | None = None,
        timeout: TimeoutTypes = None,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
        upload_progress: UploadProgressCallback | None = None,
    ) -> Response: ...
    def put(
        self,
        path: str,
        *,
        params: QueryParamTypes | None = None,
        data: RequestData | None = None,
        json: Any = None,
        files: RequestFiles | None = None,
        headers: HeaderTypes | None = None,
        timeout: TimeoutTypes = None,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
        upload_progress: UploadProgressCallback | None = None,
    ) -> Response: ...
    def delete(
        self,
        path: str,
        *,
        params: QueryParamTypes | None = None,
        data: RequestData | None = None,
        json: Any = None,
        files: RequestFiles | None = None,
        headers: HeaderTypes | None = None,
        timeout: TimeoutTypes = None,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
        upload_progress: UploadProgressCallback | None = None,
    ) -> Response: ...

@final
class Session(Client):
    """One job's affinity to one endpoint of a service (``manager.session("comfyui")``): a
    ``Client`` whose calls, and whose ``websocket()`` leases, all go to ``endpoint``, never
    elsewhere (not even a retried GET). Its pin ends with ``close()``, at the end of a ``with``
    block, or when it is garbage collected; calls after ``close()`` raise ``ValueError``.
    Responses, streams and leases taken before keep working."""

    @property
    def endpoint(self) -> str:
        """The base URL of the endpoint the session is pinned to."""
    @property
    def closed(self) -> bool: ...
    def websocket(
        self,
        *,
        wait_timeout: float | None = None,
        cancel: CancelToken | None = None,
    ) -> WebSocket:
        """Checks out a WebSocket of the session's endpoint (as ``PoolManager.websocket``)."""
    def close(self) -> None:
        """Ends the pin. Idempotent."""
    def __enter__(self) -> Session: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

@final
class Timeout:
    """Timeouts of one request, in seconds, as httpx's ``Timeout``: ``timeout`` is the default
    of ``connect``, ``read`` and ``pool``; ``total`` bounds the whole request, body included.
    A phase left at None takes the service's configured value (never "no timeout"). Raises
    ``ValueError`` for a negative or non-finite number."""

    def __new__(
        cls,
        timeout: float | None = None,
        *,
        connect: float | None = None,
        read: float | None = None,
        pool: float | None = None,
        total: float | None = None,
    ) -> Self: ...
    @property
    def connect(self) -> float | None:
        """Opening a connection; None: the service's ``connect_timeout_ms``."""
    @property
    def read(self) -> float | None:
        """The longest wait for each read of the response (its head, then each part of its
        body); None: the service's ``read_idle_timeout_ms``."""
    @property
    def pool(self) -> float | None:
        """Waiting for a pooled connection; None: the service's ``wait_timeout_ms``."""
    @property
    def total(self) -> float | None:
        """The whole request, its body included; None: no deadline but the phases'."""
    def __eq__(self, value: object, /) -> bool: ...

@final
class Response:
    """A whole response."""

    @property
    def status_code(self) -> int: ...
    @property
    def status(self) -> int:
        """``status_code``."""
    @property
    def reason_phrase(self) -> str:
        """``"Not Found"``; empty for a code Python's ``http.HTTPStatus`` does not know."""
    @property
    def ok(self) -> bool:
        """True for a status below 400."""
    @property
    def headers(self) -> Headers:
        """Read-only, case-insensitive; repeated headers joined with ", " (``get_list()``
        gives them one by one)."""
    @property
    def content(self) -> bytes: ...
    @property
    def text(self) -> str:
        """The body as UTF-8 (invalid bytes replaced), whatever charset the headers name."""
    @property
    def service(self) -> str: ...
    def header(self, name: str, default: str | None = None) -> str | None:
        """The first header called ``name`` (any case), or ``default``."""
    def json(self) -> Any:
        """The body decoded as JSON; raises ``JsonError`` (a ``ValueError``)."""
    def raise_for_status(self) -> Response:
        """Raises ``HTTPStatusError`` (``.response`` is this response) for 4xx / 5xx;
        returns the response otherwise. The statistics count the status error (class
        ``status``) once per response, as Rust's ``error_for_status``: raising it again is
        not a second failure."""

@final
class StreamingResponse(Iterator[bytes]):
    """A response whose body is read as it arrives; holds its pooled connection until closed.
    Every read releases the GIL."""

    @property
    def status_code(self) -> int: ...
    @property
    def status(self) -> int:
        """``status_code``."""
    @property
    def reason_phrase(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def headers(self) -> Headers:
        """Read-only, case-insensitive; repeated headers joined with ", "."""
    @property
    def service(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    @property
    def num_bytes_downloaded(self) -> int:
        """The bytes of the body read so far."""
    def header(self, name: str, default: str | None = None) -> str | None: ...
    def raise_for_status(self) -> StreamingResponse:
        """For 4xx / 5xx: reads the body's first MiB, closes the stream and raises
        ``HTTPStatusError`` whose ``.response`` is a ``Response`` with that body, counted
        (class ``status``) once, as the stream closes; raised again, or on a stream closed
        before, it has the status alone and is not counted. Returns the stream otherwise,
        unread."""
    def read(self, size: int = -1) -> bytes: ...
    def readline(self) -> bytes: ...
    def __iter__(self) -> StreamingResponse: ...
    def __next__(self) -> bytes: ...
    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """The body as it arrives (chunks of at most 64 KiB), or in chunks of exactly
        ``chunk_size`` bytes (the last may be shorter)."""
    def iter_lines(self) -> Iterator[str]:
        """Lines without their endings (LF, CRLF or CR); a line over 8 MiB raises
        ``TooLarge``."""
    def iter_sse(self) -> Iterator[ServerSentEvent]:
        """Server-sent events, read by the core's parser (the WHATWG rules)."""
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
class Download:
    """What ``download()`` saved: the response's status and headers, the file, its size."""

    @property
    def status_code(self) -> int: ...
    @property
    def status(self) -> int:
        """``status_code``."""
    @property
    def headers(self) -> Headers: ...
    @property
    def service(self) -> str: ...
    @property
    def path(self) -> str:
        """The file the body was saved to."""
    @property
    def num_bytes_downloaded(self) -> int:
        """The body's bytes saved (its ``Content-Length``, when the server sent one)."""

@final
class ServerSentEvent:
    """One server-sent event, as httpx-sse's."""

    @property
    def event(self) -> str:
        """The ``event`` field, or ``"message"``."""
    @property
    def data(self) -> str:
        """The ``data`` lines joined with ``"\\n"``."""
    @property
    def id(self) -> str:
        """The last event ID so far in the stream; ``""`` when none."""
    @property
    def retry(self) -> int | None:
        """The reconnection time in ms a ``retry`` field of this event set, or None."""
    def json(self) -> Any:
        """``data`` decoded as JSON; raises ``JsonError`` (a ``ValueError``)."""

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
