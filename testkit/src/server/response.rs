//! HTTP responses built by handlers, and how they are written to the socket.

use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

use super::task::TaskCtx;

/// A deferred job attached to a response; see [`Response::after`].
pub(crate) type AfterFn = Box<dyn FnOnce(&TaskCtx) + Send + 'static>;

/// What follows the head of a response.
pub(crate) enum Body {
    /// A fixed body sent with `Content-Length`.
    Fixed(Vec<u8>),
    /// Server-sent events, sent chunked, one event per chunk, `gap` after each.
    Sse {
        events: Vec<(String, String)>,
        gap: Duration,
    },
}

/// A response returned by an HTTP handler.
///
/// Fixed bodies are always sent with `Content-Length` and streams with
/// `Transfer-Encoding: chunked`, so the connection can stay alive.
pub struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Body,
    pub(crate) after: Option<AfterFn>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = match &self.body {
            Body::Fixed(b) => format!("{} bytes", b.len()),
            Body::Sse { events, gap } => format!("{} SSE events, gap {gap:?}", events.len()),
        };
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &body)
            .field("after", &self.after.is_some())
            .finish()
    }
}

impl Response {
    /// A JSON response (`application/json`).
    pub fn json(status: u16, value: serde_json::Value) -> Response {
        Response::bytes(status, "application/json", value.to_string().into_bytes())
    }

    /// A plain-text response (`text/plain; charset=utf-8`).
    pub fn text(status: u16, text: &str) -> Response {
        Response::bytes(
            status,
            "text/plain; charset=utf-8",
            text.as_bytes().to_vec(),
        )
    }

    /// A response with an arbitrary content type and body.
    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".to_string(), content_type.to_string())],
            body: Body::Fixed(body),
            after: None,
        }
    }

    /// A `200 text/event-stream` response sent with `Transfer-Encoding: chunked`.
    ///
    /// Each `(event, data)` pair becomes one chunk `event: <event>\ndata: <data>\n\n`
    /// (the `event:` line is left out when `event` is empty; multi-line data becomes
    /// several `data:` lines), and the server sleeps `gap` after writing each event.
    pub fn sse(events: Vec<(String, String)>, gap: Duration) -> Response {
        Response {
            status: 200,
            headers: vec![
                ("Content-Type".to_string(), "text/event-stream".to_string()),
                ("Cache-Control".to_string(), "no-cache".to_string()),
            ],
            body: Body::Sse { events, gap },
            after: None,
        }
    }

    /// Adds a header (or replaces `Content-Type` when `name` is `Content-Type`).
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        if name.eq_ignore_ascii_case("content-type") {
            self.headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
        }
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Runs `job` on a server-owned background thread once this response has been
    /// written (e.g. to push WebSocket events after answering `POST /prompt`).
    ///
    /// The thread is joined by [`TestServer::stop`](crate::TestServer::stop); use
    /// [`TaskCtx::sleep`] for delays so stopping does not wait for them.
    pub fn after(mut self, job: impl FnOnce(&TaskCtx) + Send + 'static) -> Response {
        self.after = Some(Box::new(job));
        self
    }

    /// Status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The serialized head (status line + headers + blank line).
    pub(crate) fn head_bytes(&self, keep_alive: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (n, v) in &self.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        match &self.body {
            Body::Fixed(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
            Body::Sse { .. } => head.push_str("Transfer-Encoding: chunked\r\n"),
        }
        if !keep_alive {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

/// Serializes one SSE event.
pub(crate) fn sse_event(event: &str, data: &str) -> Vec<u8> {
    let mut out = String::new();
    if !event.is_empty() {
        out.push_str(&format!("event: {event}\n"));
    }
    for line in data.split('\n') {
        out.push_str(&format!("data: {line}\n"));
    }
    out.push('\n');
    out.into_bytes()
}

/// Wraps `data` as one HTTP chunk.
pub(crate) fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:X}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A writer that sends one byte per `write` call with a delay before each
/// (used by [`Fault::SlowBytes`](crate::Fault::SlowBytes)).
pub(crate) struct SlowWriter<'a, W: Write> {
    pub inner: W,
    pub delay: Duration,
    /// Returns `false` when the server is stopping: writing is then abandoned.
    pub sleep: &'a dyn Fn(Duration) -> bool,
}

impl<W: Write> Write for SlowWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !(self.sleep)(self.delay) {
            // Not `Interrupted`: `write_all` retries that kind forever.
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection killed or server stopping",
            ));
        }
        self.inner.write_all(&buf[..1])?;
        self.inner.flush()?;
        Ok(1)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Standard reason phrase for the status codes the mocks use.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_has_length() {
        let r = Response::text(200, "hi").with_header("X-A", "1");
        let head = String::from_utf8(r.head_bytes(true)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("Content-Length: 2\r\n"));
        assert!(head.contains("X-A: 1\r\n"));
        assert!(!head.contains("Connection: close"));
    }

    #[test]
    fn sse_format() {
        assert_eq!(sse_event("", "x"), b"data: x\n\n");
        assert_eq!(sse_event("e", "a\nb"), b"event: e\ndata: a\ndata: b\n\n");
        assert_eq!(chunk(b"abc"), b"3\r\nabc\r\n");
    }
}
