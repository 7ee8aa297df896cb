"""files= (multipart/form-data) as in requests: paths, file objects and bytes, with data='s
fields; parsed on the server side by the standard library's MIME parser and compared byte for
byte."""

from __future__ import annotations

import hashlib
import io
import os
import pathlib

import pytest

import backend_pool
from backend_pool import InvalidRequest
from conftest import config_for


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def render(tmp_path):
    """A binary "render": every byte value, CR / LF runs and a fake boundary inside."""
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 600 + b"\r\n--boundary\r\n\r\n" + os.urandom(50_000)
    path = tmp_path / "my render.png"
    path.write_bytes(data)
    return path, data


def upload(manager, **kwargs):
    r = manager.request("api", "POST", "/upload", **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_path_a_file_object_and_bytes_arrive_byte_for_byte_after_data_fields(manager, render):
    path, data = render
    with open(path, "rb") as f:
        got = upload(
            manager,
            data={"subfolder": "blender", "overwrite": True},
            files=[
                ("image", str(path)),
                ("pathlike", pathlib.Path(path)),
                ("mask", f),
                ("raw", b"\x00\r\n\xff raw bytes"),
            ],
        )
    assert got["content_type"].startswith("multipart/form-data; boundary=")
    assert got["transfer_encoding"] is None and int(got["content_length"]) > 3 * len(data)
    parts = [(p["name"], p["filename"], p["content_type"], p["size"], p["sha256"]) for p in got["parts"]]
    assert parts == [
        ("subfolder", None, None, 7, sha(b"blender")),
        ("overwrite", None, None, 4, sha(b"true")),
        ("image", "my render.png", "image/png", len(data), sha(data)),
        ("pathlike", "my render.png", "image/png", len(data), sha(data)),
        ("mask", "my render.png", "image/png", len(data), sha(data)),
        ("raw", "raw", "application/octet-stream", 14, sha(b"\x00\r\n\xff raw bytes")),
    ]


def test_tuples_name_the_file_and_its_type_and_text_is_utf8(manager):
    got = upload(
        manager,
        files={
            "image": ("render.exr", b"EXR", "image/x-exr"),
            "notes": ("notes.txt", "héllo\n"),
            "field": (None, "plain value"),
            "buffer": ("b.bin", io.BytesIO(b"from a BytesIO")),
            "view": ('a "quoted" name.json', memoryview(b'{"a": 1}')),
        },
    )
    parts = {p["name"]: p for p in got["parts"]}
    assert (parts["image"]["filename"], parts["image"]["content_type"], parts["image"]["text"]) == (
        "render.exr",
        "image/x-exr",
        "EXR",
    )
    assert (parts["notes"]["content_type"], parts["notes"]["text"]) == ("text/plain", "héllo\n")
    assert parts["field"]["filename"] is None and parts["field"]["text"] == "plain value"
    assert parts["buffer"]["text"] == "from a BytesIO"
    assert parts["view"]["content_type"] == "application/json" and parts["view"]["text"] == '{"a": 1}'
    # The core's encoding of a quote in a file name (WHATWG: %22), read back by the parser.
    assert parts["view"]["filename"] == "a %22quoted%22 name.json"


def test_a_file_object_is_sent_from_its_position_and_one_without_a_name_takes_the_field_s(manager, render):
    path, data = render
    with open(path, "rb") as f:
        f.seek(1000)
        got = upload(manager, files={"image": f, "anon": io.BytesIO(b"xyz")})
    image, anon = got["parts"]
    assert (image["size"], image["sha256"]) == (len(data) - 1000, sha(data[1000:]))
    assert (anon["filename"], anon["text"]) == ("anon", "xyz")


def test_a_client_verb_takes_files(manager):
    got = manager.client("api").post("/upload", files={"f": ("a.txt", b"abc")}).json()
    assert [(p["name"], p["filename"], p["text"]) for p in got["parts"]] == [("f", "a.txt", "abc")]


def test_files_and_json_or_raw_data_are_type_errors_before_anything_is_sent(manager, backends):
    before = backends.http.requests
    with pytest.raises(TypeError, match="json= or files="):
        manager.request("api", "POST", "/upload", json={}, files={"f": b"x"})
    with pytest.raises(TypeError, match="data= must be a dict"):
        manager.request("api", "POST", "/upload", data=b"raw", files={"f": b"x"})
    with pytest.raises(TypeError, match="must be a path, a binary file object, bytes"):
        manager.request("api", "POST", "/upload", files={"f": 42})
    with pytest.raises(TypeError, match="tuple of 4"):
        manager.request("api", "POST", "/upload", files={"f": ("a", b"x", "t/t", {})})
    with pytest.raises(TypeError, match="files must be a dict"):
        manager.request("api", "POST", "/upload", files=b"x")
    assert backends.http.requests == before


def test_an_unreadable_path_raises_oserror_naming_it_before_anything_is_sent(manager, backends, tmp_path):
    before = backends.http.requests
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError) as e:
        manager.request("api", "POST", "/upload", files={"image": missing})
    assert e.value.filename == str(missing) and e.value.errno == 2
    with pytest.raises(IsADirectoryError):
        manager.request("api", "POST", "/upload", files={"image": str(tmp_path)})
    assert backends.http.requests == before


def test_a_text_or_unseekable_file_object_is_a_type_error(manager, render, tmp_path):
    path, _ = render
    with open(path, encoding="latin-1") as text:
        with pytest.raises(TypeError, match="binary mode"):
            manager.request("api", "POST", "/upload", files={"f": text})

    class Pipe(io.RawIOBase):
        def readable(self):
            return True

        def seekable(self):
            return False

    with pytest.raises(TypeError, match="seekable"):
        manager.request("api", "POST", "/upload", files={"f": Pipe()})


class Failing(io.RawIOBase):
    """A binary file of `size` bytes whose read() raises once `fail_at` bytes are read."""

    def __init__(self, size, fail_at):
        self.size, self.fail_at, self.pos = size, fail_at, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=0):
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def read(self, n=-1):
        if self.pos >= self.fail_at:
            raise OSError("the disk went away")
        n = min(n, self.size - self.pos, self.fail_at - self.pos)
        self.pos += n
        return b"x" * n


def test_a_file_object_that_raises_mid_body_raises_its_own_exception_and_the_connection_closes(backends):
    m = backend_pool.PoolManager(config_for(backends, max_connections=1))
    try:
        assert m.request("api", "GET", "/ok").status_code == 200
        opened = backends.http.connections
        with pytest.raises(OSError, match="the disk went away"):
            m.request("api", "POST", "/upload", files={"f": ("f.bin", Failing(2_000_000, 300_000))})
        assert m.request("api", "GET", "/ok").status_code == 200
        # The half-sent request's connection was closed, never reused.
        assert backends.http.connections == opened + 1
        http = m.stats()["services"][0]["http"]
        assert http["in_use"] == 0
    finally:
        m.shutdown(1)


def peak_rss_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak resident set
        return True
    except OSError:
        return False


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("kind", ["path", "file object"])
def test_a_large_file_is_streamed_not_read_whole_into_memory(manager, tmp_path, kind):
    size = 64 * 1024 * 1024
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: reading it costs no disk
    if not peak_rss_reset():
        pytest.skip("no /proc/self/clear_refs")
    base = peak_rss()
    with open(path, "rb") as f:
        value = str(path) if kind == "path" else f
        got = manager.request("api", "POST", "/discard", files={"big": value}).json()
    grown = peak_rss() - base
    assert got["received"] > size
    assert grown < 16 * 1024 * 1024, f"peak resident memory grew {grown / 2**20:.1f} MiB"


def test_an_empty_query_name_is_refused_by_the_core_before_anything_is_sent(manager, backends):
    before = backends.http.requests
    with pytest.raises(InvalidRequest, match="empty name"):
        manager.request("api", "GET", "/echo", params={"": "v"})
    assert backends.http.requests == before
