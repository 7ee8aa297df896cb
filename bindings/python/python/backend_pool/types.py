"""Types for annotations: the shapes of the dicts the module returns and of the arguments it
takes. Real classes at runtime (``TypedDict``), so they can be imported and checked against.

    from backend_pool.types import ShutdownReport

    report: ShutdownReport | None = manager.shutdown(2.0)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Literal, TypeAlias, TypedDict

from ._native import Timeout

__all__ = [
    "Config",
    "FileContent",
    "FileTypes",
    "HeaderTypes",
    "ProgressCallback",
    "PrimitiveData",
    "QueryParamTypes",
    "RequestData",
    "RequestFiles",
    "TimeoutTypes",
    "UploadProgressCallback",
    "Health",
    "InUse",
    "ShutdownReport",
]

#: A configuration: a path to a ``.toml`` or ``.json`` file, a TOML string, a dict in the
#: same schema, or None for the four known backends on their default ports.
Config: TypeAlias = str | os.PathLike[str] | Mapping[str, Any] | None

#: Request headers: a mapping, or ``(name, value)`` pairs (a name may repeat).
HeaderTypes: TypeAlias = Mapping[str, str] | Sequence[tuple[str, str]]

#: A query or form value: ``True`` / ``False`` are sent as ``true`` / ``false``, None as an
#: empty value, numbers as ``str()`` writes them (as httpx does).
PrimitiveData: TypeAlias = str | int | float | bool | None

#: ``params=`` (and a form in ``data=``): a mapping or ``(name, value)`` pairs; a list or tuple
#: value repeats its name for each item.
QueryParamTypes: TypeAlias = (
    Mapping[str, PrimitiveData | Sequence[PrimitiveData]]
    | Sequence[tuple[str, PrimitiveData | Sequence[PrimitiveData]]]
)

#: ``data=``: bytes or text sent as they are, or a form (``application/x-www-form-urlencoded``).
RequestData: TypeAlias = bytes | bytearray | memoryview | str | QueryParamTypes

#: What a part of ``files=`` holds: a path (``str`` or ``os.PathLike``, streamed from the file),
#: a binary file object (read from its position to its end as the body is sent), or bytes. In
#: a tuple, a ``str`` is text (sent as UTF-8), not a path.
FileContent: TypeAlias = str | os.PathLike[str] | IO[bytes] | bytes | bytearray | memoryview

#: One entry of ``files=``: its content, or ``(filename, content)`` or ``(filename, content,
#: content_type)`` (a filename of None makes it a plain field).
FileTypes: TypeAlias = (
    FileContent | tuple[str | None, FileContent] | tuple[str | None, FileContent, str | None]
)

#: ``files=``: a mapping or ``(name, file)`` pairs (a name may repeat).
RequestFiles: TypeAlias = Mapping[str, FileTypes] | Sequence[tuple[str, FileTypes]]

#: ``download(progress=)``: called as ``progress(downloaded, total)`` on the calling thread,
#: ``total`` being the body's length or None; what it raises stops the download.
ProgressCallback: TypeAlias = Callable[[int, int | None], object]

#: ``upload_progress=``: called as ``upload_progress(sent, total)`` on the calling thread while
#: a request body goes out (``total``: the body's length); what it raises stops the upload.
UploadProgressCallback: TypeAlias = Callable[[int, int], object]

#: ``timeout=``: seconds for each phase (connect, read, pool), a ``(connect, read)`` pair as in
#: requests, or a ``Timeout``; None leaves the service's configured timeouts.
TimeoutTypes: TypeAlias = float | tuple[float | None, float | None] | Timeout | None


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

