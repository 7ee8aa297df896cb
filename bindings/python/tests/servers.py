"""Loopback test backends, standard library only: an HTTP/1.1 keep-alive server and a minimal
WebSocket server shaped like ComfyUI's (``/ws?clientId=``, a ``status`` message first, then an
echo of every message; a few messages ask for a binary frame, a close, or a reader that stops).

Used in-process by the pytest suite and as a subprocess by the Blender test:

    python3 servers.py --port-file PATH     # writes "HTTP_PORT WS_PORT", serves until killed
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import email.policy
import hashlib
import json
import os
import select
import socket
import socketserver
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


PROMPT_ERROR = {
    "error": {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": "",
        "extra_info": {},
    },
    "node_errors": {
        "3": {
            "errors": [{"type": "required_input_missing", "message": "Required input is missing", "details": "model"}],
            "dependent_outputs": ["9"],
            "class_type": "KSampler",
        }
    },
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body go out in separate writes: without this, Nagle + delayed ACK cost 40 ms
    # per keep-alive request.
    disable_nagle_algorithm = True
    server: "HttpServer"

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def _reply(self, status, body=b"", content_type="application/json", extra=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        if status in (204, 304):
            body = b""  # no body by definition: one would be read as the next response
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _hold(self, seconds: float) -> bool:
        """Sends nothing for `seconds`, or until the client hangs up (counted in
        ``server.hangups``; the handler then stops). True if the client is still there."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if not ready:
                continue
            try:
                gone = not self.connection.recv(1, socket.MSG_PEEK)
            except OSError:
                gone = True
            if gone:
                with self.server.lock:
                    self.server.hangups += 1
                self.close_connection = True
                return False
            time.sleep(0.05)  # the client sent more than its request: not ours to read
        return True

    def _chunked(self, parts, gap=0.0, content_type="text/event-stream"):
        """A chunked 200 whose body is `parts`, each written (and flushed) `gap` s apart."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, data in enumerate(parts):
            if i and gap and not self._hold(gap):
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _body(self):
        """The request body; None if the client stopped sending it before its length."""
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        return body if len(body) == n else None

    def _discard(self, gap=0.0):
        """Reads the body in 64 KiB pieces without keeping it, `gap` s apart (a slow reader):
        its length and SHA-256."""
        left = int(self.headers.get("Content-Length") or 0)
        digest, n = hashlib.sha256(), 0
        while left > 0:
            if gap and n:
                time.sleep(gap)
            piece = self.rfile.read(min(left, 65536))
            if not piece:
                break
            digest.update(piece)
            n += len(piece)
            left -= len(piece)
        return self._reply(200, {"received": n, "sha256": digest.hexdigest()})

    def _multipart(self, body: bytes):
        """The parts of a multipart/form-data body, parsed by the standard library's MIME
        parser (not by anything the client shares): name, filename, content type, size,
        SHA-256, and the text of a short part."""
        content_type = self.headers.get("Content-Type", "")
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        if not message.is_multipart():
            return self._reply(400, {"error": "not multipart", "content_type": content_type})
        parts = []
        for part in message.iter_parts():
            data = part.get_payload(decode=True) or b""
            parts.append(
                {
                    "name": part.get_param("name", header="content-disposition"),
                    "filename": part.get_filename(),
                    "content_type": part.get("Content-Type"),
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "text": data.decode("utf-8", "replace") if len(data) <= 1024 else None,
                }
            )
        return self._reply(
            200,
            {
                "content_type": content_type,
                "content_length": self.headers.get("Content-Length"),
                "transfer_encoding": self.headers.get("Transfer-Encoding"),
                "parts": parts,
            },
        )

    def _route(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/discard":
            with self.server.lock:
                self.server.requests += 1
            return self._discard(float(q.get("gap_ms", "0")) / 1000)
        body = self._body()
        if body is None:
            self.close_connection = True
            return None
        with self.server.lock:
            self.server.requests += 1
        p = url.path
        if p in ("/", "/ok", "/health"):
            return self._reply(200, {"ok": True, "path": p})
        if p in ("/health/liveliness", "/health/liveness"):  # LiteLLM's probe
            return self._reply(200, b'"I\'m alive!"')
        if p == "/slow":
            time.sleep(float(q.get("ms", "500")) / 1000)
            return self._reply(200, {"slept_ms": float(q.get("ms", "500"))})
        if p == "/hang":
            # No response head until `ms` pass or the client hangs up.
            if self._hold(float(q.get("ms", "5000")) / 1000):
                return self._reply(200, {"held_ms": float(q.get("ms", "5000"))})
            return None
        if p == "/echo":
            return self._reply(
                200,
                {
                    "method": self.command,
                    "path": p,
                    "query": url.query,
                    "args": parse_qs(url.query, keep_blank_values=True),
                    "body": body.decode("utf-8", "replace"),
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "header_list": [[k.lower(), v] for k, v in self.headers.items()],
                },
                extra=[
                    ("X-Echo", "1"),
                    ("X-Multi", "a"),
                    ("X-Multi", "b"),
                    ("Set-Cookie", "session=1; Path=/"),
                    ("Set-Cookie", "theme=dark, blue"),
                ],
            )
        if p == "/prompt-error":
            # ComfyUI's answer to a prompt that fails validation.
            return self._reply(400, PROMPT_ERROR)
        if p.startswith("/status/"):
            return self._reply(int(p.rsplit("/", 1)[1]), {"status": p})
        if p == "/text":
            return self._reply(200, "héllo wörld".encode(), "text/plain; charset=utf-8")
        if p == "/bad-json":
            return self._reply(200, b"{not json", "application/json")
        if p == "/sse":
            # Gradio / LiteLLM style: a comment, heartbeats, multi-line data, [DONE].
            n = int(q.get("n", "3"))
            gap = float(q.get("gap_ms", "0")) / 1000
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def chunk(data: bytes):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            chunk(b": keep-alive comment\n\n")
            for i in range(n):
                if gap and not self._hold(gap):
                    return None
                chunk(b"event: generating\nid: %d\ndata: {\"i\": %d}\n\n" % (i, i))
            chunk(b"event: heartbeat\ndata: null\n\n")
            chunk(b"data: line one\ndata: line two\n\n")
            chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            return None
        if p == "/lines":
            # LF, CRLF (one split across writes) and CR endings, an empty line, no final ending.
            self._chunked([b"one\ntwo\r\nthr", b"ee\r", b"\nfour\rfive\r\n", b"\nlast"], gap=0.02)
            return None
        if p == "/sse-spec":
            # The WHATWG cases a stream may mix: a BOM, CRLF / CR / LF endings (split across
            # writes), comments, retry, id (persisting, then reset by an empty id), multi-line
            # data, a field without a colon, an unterminated last event (dropped).
            self._chunked(
                [
                    b"\xef\xbb\xbf: heartbeat\r\n\r\n",
                    b"retry: 1500\r\nid: 7\r\nevent: progress\r\n",
                    b'data: {"step": 1,\r\ndata:  "of": 2}\r\n\r\n',
                    b"data: first line\rdata: second",
                    b" line\r\r",
                    b": still here\nid\ndata:no space\n\n",
                    b"event: done\ndata\n\n",
                    b"data: unterminated",
                ],
                gap=0.02,
            )
            return None
        if p == "/upload":
            return self._multipart(body)
        if p == "/slow-download":
            # `n` bytes (Content-Length) in `parts` writes `gap_ms` apart.
            n, parts = int(q.get("n", "1000000")), int(q.get("parts", "10"))
            gap = float(q.get("gap_ms", "50")) / 1000
            data = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            step = -(-n // parts)
            for i in range(0, n, step):
                if i and not self._hold(gap):
                    return None
                self.wfile.write(data[i : i + step])
                self.wfile.flush()
            return None
        if p == "/download":
            n = int(q.get("n", "1048576"))
            data = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
            return self._reply(200, data, "application/octet-stream")
        if p == "/repeat":
            # One byte `n` times: a line without end.
            return self._reply(200, bytes([int(q.get("byte", "120"))]) * int(q.get("n", "1024")), "text/plain")
        if p == "/stall":
            # Headers, then silence: a read that must time out.
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x")
            self.wfile.flush()
            self._hold(float(q.get("ms", "3000")) / 1000)
            self.close_connection = True
            return None
        return self._reply(404, {"error": "not found", "path": p})

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _route


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, addr=("127.0.0.1", 0)):
        super().__init__(addr, Handler)
        self.lock = threading.Lock()
        self.requests = 0
        self.connections = 0  # accepted
        self.hangups = 0  # clients that hung up while a handler held its answer (`_hold`)

    def process_request(self, request, client_address):
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that went away (a cancelled or aborted call): expected here
        super().handle_error(request, client_address)


# --- WebSocket -----------------------------------------------------------------------------

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("eof")
        buf += part
    return buf


def _read_frame(sock):
    b1, b2 = _recv_exact(sock, 2)
    opcode = b1 & 0x0F
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack("!H", _recv_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", _recv_exact(sock, 8))[0]
    mask = _recv_exact(sock, 4) if b2 & 0x80 else b"\0\0\0\0"
    data = bytearray(_recv_exact(sock, n))
    for i in range(n):
        data[i] ^= mask[i % 4]
    return opcode, bytes(data)


def _frame(opcode, data: bytes) -> bytes:
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + data


class WsHandler(socketserver.BaseRequestHandler):
    server: "WsServer"

    def handle(self):
        sock = self.request
        head = b""
        while b"\r\n\r\n" not in head:
            part = sock.recv(4096)
            if not part:
                return
            head += part
        lines = head.split(b"\r\n")
        target = lines[0].split()[1].decode()
        headers = {}
        for line in lines[1:]:
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.strip().lower().decode()] = v.strip().decode()
        key = headers.get("sec-websocket-key")
        if key is None:
            # A plain HTTP request: ComfyUI's health probe GET /prompt, a prompt queued with
            # POST /prompt, POST /interrupt (recorded). Answered, then closed.
            method = lines[0].split()[0]
            body = head.split(b"\r\n\r\n", 1)[1]
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                part = sock.recv(length - len(body))
                if not part:
                    return
                body += part
            path = urlparse(target).path
            if method == b"POST" and path == "/prompt":
                with self.server.lock:
                    self.server.prompts += 1
                    n = self.server.prompts
                reply = {"prompt_id": f"prompt-{n}", "number": n, "node_errors": {}}
            elif method == b"POST" and path == "/interrupt":
                with self.server.lock:
                    self.server.interrupts.append(json.loads(body or b"{}"))
                reply = {}
            else:
                if path == "/view":  # counted: a job's output fetched (never a health probe)
                    with self.server.lock:
                        self.server.views += 1
                reply = {"exec_info": {"queue_remaining": 0}}
            body = json.dumps(reply).encode()
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        sock.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        with self.server.lock:
            self.server.handshakes += 1
        q = parse_qs(urlparse(target).query)
        sid = q.get("clientId", [""])[0]
        status = {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": sid}}
        sock.sendall(_frame(1, json.dumps(status).encode()))
        try:
            while True:
                opcode, data = _read_frame(sock)
                if opcode == 8:  # close
                    sock.sendall(_frame(8, data[:2]))
                    return
                if opcode == 9:  # ping
                    sock.sendall(_frame(10, data))
                elif opcode == 1:
                    text = data.decode()
                    if text == "binary-please":
                        sock.sendall(_frame(2, struct.pack("!II", 1, 2) + b"\x89PNG"))
                    elif text == "close-please":
                        sock.sendall(_frame(8, struct.pack("!H", 1000)))
                        return
                    elif text == "stop-reading":
                        # A reader that stopped: the client's sends fill the socket buffers.
                        time.sleep(3)
                        return
                    else:
                        sock.sendall(_frame(1, data))
                elif opcode == 2:
                    sock.sendall(_frame(2, data))
        except (ConnectionError, OSError):
            # The client went away without a close frame (an aborted lease).
            with self.server.lock:
                self.server.hangups += 1
            return


class WsServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr=("127.0.0.1", 0)):
        super().__init__(addr, WsHandler)
        self.lock = threading.Lock()
        self.handshakes = 0
        self.hangups = 0  # sockets that ended without a close frame
        self.prompts = 0  # POST /prompt
        self.interrupts = []  # the JSON bodies of POST /interrupt
        self.views = 0  # GET /view


class Backends:
    """Both servers on 127.0.0.1, each on its own thread."""

    def __init__(self):
        self.http = HttpServer()
        self.ws = WsServer()
        self.threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for s in (self.http, self.ws)
        ]
        for t in self.threads:
            t.start()

    @property
    def http_url(self):
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    @property
    def ws_url(self):
        return f"http://127.0.0.1:{self.ws.server_address[1]}"

    def close(self):
        for s in (self.http, self.ws):
            s.shutdown()
            s.server_close()


class Blackhole:
    """A loopback listener whose accept queue is full and never accepted from: the kernel
    drops the SYN of every further connect, which waits until its own timeout."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.addr = self.listener.getsockname()
        self.fillers = []
        for _ in range(8):
            s = socket.socket()
            s.settimeout(0.1)
            try:
                s.connect(self.addr)
            except (TimeoutError, socket.timeout):
                s.close()
                return
            self.fillers.append(s)
        raise RuntimeError("the accept queue never filled: connects do not wait here")

    @property
    def url(self):
        return f"http://{self.addr[0]}:{self.addr[1]}"

    def close(self):
        for s in self.fillers:
            s.close()
        self.listener.close()


def closed_port() -> int:
    """A loopback port with nothing listening."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    args = ap.parse_args()
    b = Backends()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{b.http.server_address[1]} {b.ws.server_address[1]}\n")
    os.replace(tmp, args.port_file)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
