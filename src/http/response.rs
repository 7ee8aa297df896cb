//! Responses: [`Response`] read whole, [`StreamingResponse`] read as it arrives, and what
//! both turn an error status into ([`Error::Status`], its body capped at
//! [`StatusBody::LIMIT`]). Downloads to a file or a writer, with progress: `download.rs`.

mod download;

use std::fmt;
use std::io::{self, BufRead, Read};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use ureq::http::HeaderMap;

use super::classify::{self, classify, Limits};
use super::transport::{DRAIN_BYTES, DRAIN_WAIT};
use super::{HttpConnection, HttpPool, StreamTurn};
use crate::error::{Error, ErrorClass, Phase, StatusBody};
use crate::stats::PoolCounters;

pub use download::{Download, Progress};

/// The status and header accessors every response kind shares (their heads are the same
/// fields: `status` and `headers`).
macro_rules! head_accessors {
    () => {
        /// The status code.
        pub fn status(&self) -> u16 {
            self.status
        }

        /// The first header named `name` (case-insensitive).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name)
        }

        /// All headers, in order.
        pub fn headers(&self) -> &[(String, String)] {
            self.headers.pairs()
        }
    };
}
use head_accessors;

/// A whole response: status, headers and body, read into memory up to the service's
/// `max_body_bytes` (a larger body is [`Error::TooLarge`]: read it with
/// [`RequestBuilder::stream`](crate::RequestBuilder::stream) or
/// [`download_to`](crate::RequestBuilder::download_to)). A 4xx or 5xx status is a response
/// like any other until [`Response::error_for_status`]; only one whose body is over
/// `max_body_bytes` comes as an [`Error::Status`] at once (with the body's first 64 KiB):
/// the status says more than the size.
#[derive(Clone)]
pub struct Response {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
    service: String,
    /// The pool's counters, for the status error [`Response::error_for_status`] counts.
    counters: Arc<PoolCounters>,
}

impl Response {
    /// Reads a response's whole body (up to `max_body_bytes`; one announced larger fails
    /// before it is read). An error status whose body is over the limit is
    /// [`Error::Status`] with the body's first 64 KiB, not [`Error::TooLarge`]: the status is
    /// the news. A body cut short names what was announced and what arrived.
    ///
    /// A failure once `cancel` is cancelled is [`Error::Cancelled`] (the cancel shut the
    /// agent down), counted as such and not against health. A timeout names the deadline
    /// of `limits` (the request's) that fired.
    pub(super) fn read_whole(
        pool: &HttpPool,
        response: ureq::http::Response<ureq::Body>,
        limits: &Limits,
        cancel: Option<&crate::CancelToken>,
    ) -> Result<Response, Error> {
        let (parts, mut body) = response.into_parts();
        let status = parts.status.as_u16();
        let limit = pool.config.max_body_bytes;
        let declared = body.content_length();
        let mut bytes = Vec::new();
        let read = if declared.is_some_and(|n| n > limit) {
            if status >= 400 {
                // The evidence for the status error below; the rest is not read.
                let mut reader = body.with_config().reader();
                let _ = (&mut reader)
                    .take(StatusBody::LIMIT as u64)
                    .read_to_end(&mut bytes);
            }
            Err(ureq::Error::BodyExceedsLimit(limit))
        } else {
            // The announced length, within the limit, but not trusted beyond 1 MiB.
            bytes.reserve(declared.unwrap_or(0).min(1 << 20) as usize);
            let mut reader = body.with_config().limit(limit).reader();
            reader
                .read_to_end(&mut bytes)
                .map(drop)
                .map_err(ureq::Error::from)
        };
        let service = pool.core.name.clone();
        if let Err(e) = read {
            if pool.core.is_closed() {
                // Shutdown interrupted the read (its deadline passed).
                let err = pool.core.shutting_down();
                pool.counters().error(err.class());
                return Err(err);
            }
            if cancel.is_some_and(crate::CancelToken::is_cancelled) {
                let err = pool.core.cancelled(Phase::Read);
                pool.counters().error(err.class());
                return Err(err);
            }
            let err = match e {
                ureq::Error::BodyExceedsLimit(_) if status >= 400 => {
                    let err = Error::Status {
                        service,
                        status,
                        phase: Phase::Receive,
                        url: None,
                        body: StatusBody::new(bytes, true),
                    };
                    pool.counters().error(err.class());
                    return Err(err);
                }
                e if cut_short_kind(&e) => cut_short(service, declared, bytes.len() as u64),
                e => classify(pool, e, limits),
            };
            pool.failed(&err, true);
            return Err(err);
        }
        Ok(Response {
            status,
            headers: Headers::new(parts.headers),
            body: bytes,
            service,
            counters: Arc::clone(&pool.core.counters),
        })
    }

    head_accessors!();

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body bytes, owned.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// Moves the body out, leaving it empty: for a caller that keeps the body elsewhere and
    /// the response for its head and [`Response::error_for_status`] (the status error it
    /// makes then has an empty body).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), backend_pool::Error> {
    /// # let manager = backend_pool::PoolManager::new(backend_pool::ManagerConfig::default())?;
    /// let mut reply = manager.http("comfyui")?.get("/history").call()?;
    /// let body = reply.take_body();
    /// assert!(reply.body().is_empty());
    /// if let Err(err) = reply.error_for_status() {
    ///     eprintln!("{err}: {} bytes", body.len()); // counted under `status`
    /// }
    /// # Ok(()) }
    /// ```
    pub fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded as JSON.
    ///
    /// # Errors
    /// [`Error::Json`] naming the service.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Json {
            service: self.service.clone(),
            source,
        })
    }

    /// `Ok(self)` for 1xx–3xx; for 4xx and 5xx an [`Error::Status`] carrying the status and
    /// the body's first 64 KiB ([`StatusBody`]), counted under the class `status` (not
    /// against the service's health: the server answered, and the connection was reused).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), backend_pool::Error> {
    /// # let manager = backend_pool::PoolManager::new(backend_pool::ManagerConfig::default())?;
    /// let err = manager.http("comfyui")?.post("/prompt").send_json(&serde_json::json!({}))?
    ///     .error_for_status()
    ///     .unwrap_err();
    /// assert_eq!(err.status(), Some(400));
    /// let why: serde_json::Value = err.json()?; // {"error": {...}, "node_errors": {...}}
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The status as an error, for callers that treat 4xx/5xx as failures.
    pub fn error_for_status(self) -> Result<Response, Error> {
        if self.status < 400 {
            return Ok(self);
        }
        self.counters.error(ErrorClass::Status);
        Err(Error::Status {
            service: self.service,
            status: self.status,
            phase: Phase::Receive,
            url: None,
            body: StatusBody::new(self.body, false),
        })
    }
}

/// A read error that means the server closed the connection before the body's end.
fn cut_short_kind(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Io(io) if matches!(
        io.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
    ))
}

/// The connection closed before the body's end: the error names the bytes announced
/// (`Content-Length`) and those received.
fn cut_short(service: String, expected: Option<u64>, received: u64) -> Error {
    let what = match expected {
        Some(n) => format!("the body ended after {received} of {n} bytes (Content-Length)"),
        None => format!("the body ended after {received} bytes, before its end"),
    };
    Error::ConnectionClosed {
        service,
        phase: Phase::Read,
        source: io::Error::new(io::ErrorKind::UnexpectedEof, what),
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("service", &self.service)
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// A response whose body is read as it arrives ([`Read`] and [`BufRead`], so `lines()` reads
/// server-sent events). Holds its pooled connection, and one of the service's
/// `max_stream_connections` stream turns, until dropped.
///
/// A stream is not subject to `max_body_bytes` (that limit is for bodies read into memory):
/// read bodies of any size with it, or save them with [`StreamingResponse::download_to`]. A
/// body cut short (the server closed the connection before its `Content-Length`, or before
/// a chunked body's end) is a read error of kind `UnexpectedEof` wrapping an
/// [`Error::ConnectionClosed`] that names the bytes announced and received.
///
/// The body's reads run under the request's deadlines: a read that waits past one is a read
/// error of kind `TimedOut` wrapping an [`Error::Timeout`] of phase `read` that names the
/// deadline that fired: the request's
/// [`read_timeout`](crate::RequestBuilder::read_timeout) or
/// [`total_timeout`](crate::RequestBuilder::total_timeout), else the service's
/// `read_idle_timeout_ms`. A cancel or a shutdown is kind `ConnectionAborted` wrapping
/// [`Error::Cancelled`] or the shutdown's error. The first failure of a stream's reads is
/// counted in the statistics; reading again after one is allowed.
///
/// ```no_run
/// # fn main() -> Result<(), backend_pool::Error> {
/// # let manager = backend_pool::PoolManager::new(backend_pool::ManagerConfig::default())?;
/// use std::io::Read;
/// use std::time::Duration;
///
/// let mut stream = manager.http("comfyui")?.get("/view?filename=a.png")
///     .read_timeout(Duration::from_millis(300))
///     .stream(&[])?;
/// let mut body = Vec::new();
/// if let Err(e) = stream.read_to_end(&mut body) {
///     if let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<backend_pool::Error>()) {
///         println!("{err}"); // "service 'comfyui': timed out reading after 300ms"
///     }
/// }
/// # Ok(()) }
/// ```
pub struct StreamingResponse {
    status: u16,
    headers: Headers,
    reader: io::BufReader<ureq::BodyReader<'static>>,
    service: String,
    /// The body's `Content-Length`, if it has one.
    content_length: Option<u64>,
    /// Body bytes handed to the caller so far.
    read: u64,
    /// The deadlines the request ran under, which its body's reads run under too: a read
    /// timeout names the one that fired.
    limits: Limits,
    /// How often a download calls its progress callback, at most.
    progress_every: Duration,
    /// The request's token, watching the agent while the body is read (cancel shuts it
    /// down).
    cancel: Option<crate::cancel::Registration>,
    /// Set once a read's failure has been counted (see [`StreamingResponse::read_failure`]).
    counted: bool,
    // Dropped after the reader: the socket is back in the agent before the item returns.
    conn: HttpConnection,
    // Dropped last: the next stream's turn comes once this connection is back.
    _turn: StreamTurn,
}

impl StreamingResponse {
    pub(super) fn new(
        service: String,
        conn: HttpConnection,
        turn: StreamTurn,
        response: ureq::http::Response<ureq::Body>,
        limits: Limits,
        cancel: Option<crate::cancel::Registration>,
    ) -> Self {
        let (parts, body) = response.into_parts();
        StreamingResponse {
            status: parts.status.as_u16(),
            headers: Headers::new(parts.headers),
            content_length: body.content_length(),
            reader: io::BufReader::with_capacity(8 * 1024, body.into_reader()),
            service,
            read: 0,
            limits,
            progress_every: download::PROGRESS_EVERY,
            cancel,
            counted: false,
            conn,
            _turn: turn,
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|w| w.token().is_cancelled())
    }

    /// [`Error::Cancelled`] for a read the request's token stopped; the connection closes
    /// when the stream drops. Counted (once per stream, as any failure of its reads).
    fn cancel_error(&mut self) -> Error {
        let err = self.conn.pool.core.cancelled(Phase::Read);
        self.conn.mark_broken();
        self.count_once(&err);
        err
    }

    /// Counts a failure of this stream's reads, the first only (a caller may read again
    /// after one): a body cut short also counts against health, as for a whole response.
    fn count_once(&mut self, err: &Error) {
        if !self.counted {
            self.counted = true;
            match err {
                Error::ConnectionClosed { .. } => self.conn.pool.failed(err, true),
                _ => self.conn.pool.counters().error(err.class()),
            }
        }
    }

    /// What a failed read means, if it is one of the pool's errors: shutdown interrupted it,
    /// the request's token cancelled it, a deadline of the request's passed (the error
    /// names the one that fired: see [`RequestBuilder::read_timeout`] and
    /// [`RequestBuilder::total_timeout`]), or the server closed the connection before the
    /// body's end (the error names the bytes announced and received); counted once.
    /// Otherwise the error itself, not counted.
    ///
    /// [`RequestBuilder::read_timeout`]: crate::RequestBuilder::read_timeout
    /// [`RequestBuilder::total_timeout`]: crate::RequestBuilder::total_timeout
    fn read_failure(&mut self, e: io::Error) -> Result<Error, io::Error> {
        let err = if self.conn.pool.core.is_closed() {
            // Shutdown interrupted the read (its deadline passed).
            self.conn.pool.core.shutting_down()
        } else if self.is_cancelled() {
            return Ok(self.cancel_error());
        } else if let Some(timeout) = classify::body_timeout(&self.conn.pool, &e, &self.limits) {
            timeout
        } else if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
        ) {
            cut_short(self.service.clone(), self.content_length, self.read)
        } else {
            return Err(e);
        };
        self.count_once(&err);
        Ok(err)
    }

    /// A read failed: a pool error (see [`StreamingResponse::read_failure`]) is wrapped in
    /// the I/O error, of kind `TimedOut` (a deadline passed), `UnexpectedEof` (cut short) or
    /// `ConnectionAborted` (shutdown, cancel).
    fn read_failed(&mut self, e: io::Error) -> io::Error {
        match self.read_failure(e) {
            Ok(err @ Error::ConnectionClosed { .. }) => {
                io::Error::new(io::ErrorKind::UnexpectedEof, err)
            }
            Ok(err @ Error::Timeout { .. }) => io::Error::new(io::ErrorKind::TimedOut, err),
            Ok(err) => io::Error::new(io::ErrorKind::ConnectionAborted, err),
            Err(e) => e,
        }
    }

    /// The body's length from its `Content-Length`; `None` for a chunked body, one that
    /// ends when the connection closes, or a response without a body (`HEAD`).
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Body bytes read so far (through [`Read`], [`BufRead`], events or a download).
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// `Ok(self)` for 1xx–3xx; for 4xx and 5xx an [`Error::Status`] carrying the status and
    /// the body's first 64 KiB ([`StatusBody`]), counted under the class `status` (not
    /// against the service's health).
    ///
    /// Reads at most 64 KiB (and one byte to know whether more follows) within the request's
    /// timeouts; a read that fails ends the evidence there (marked truncated). The stream
    /// is then dropped as any other: a body at its end leaves the connection for reuse; the
    /// rest of a longer one is drained for at most 20 ms and 64 KiB more, else the
    /// connection is closed.
    ///
    /// # Errors
    /// The status as an error, for callers that treat 4xx/5xx as failures.
    pub fn error_for_status(self) -> Result<StreamingResponse, Error> {
        if self.status < 400 {
            return Ok(self);
        }
        Err(self.into_status_error())
    }

    /// The status error of this response, with its body's first 64 KiB; counted once, as
    /// a status error: a failure to read the evidence (cut short, a timeout) only marks it
    /// truncated.
    fn into_status_error(mut self) -> Error {
        let mut bytes = Vec::new();
        let cap = StatusBody::LIMIT as u64;
        self.counted = true;
        let failed = (&mut self).take(cap + 1).read_to_end(&mut bytes).is_err();
        self.conn.pool.counters().error(ErrorClass::Status);
        Error::Status {
            service: self.service.clone(),
            status: self.status,
            phase: Phase::Receive,
            url: None,
            body: StatusBody::new(bytes, failed),
        }
    }

    head_accessors!();

    /// The body's server-sent events, read as they arrive: see [`crate::sse`] for the rules,
    /// the limit and the errors (a read timeout is `sse::Error::Io` of kind `TimedOut`,
    /// wrapping the [`Error::Timeout`] that names the deadline: see [`StreamingResponse`]). Reads from where the stream is; [`crate::sse::Events::new`]
    /// takes the stream itself instead of borrowing it.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let manager = backend_pool::PoolManager::new(backend_pool::ManagerConfig::default())?;
    /// let body = serde_json::json!({"model": "mock-gpt", "stream": true, "messages": []});
    /// let body = serde_json::to_vec(&body)?;
    /// let mut stream = manager.http("litellm")?.post("/v1/chat/completions").stream(&body)?;
    /// for event in stream.events() {
    ///     let event = event?;
    ///     if event.data == "[DONE]" {
    ///         break;
    ///     }
    ///     println!("{}", event.data);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn events(&mut self) -> crate::sse::Events<&mut StreamingResponse> {
        crate::sse::Events::new(self)
    }
}

impl fmt::Debug for StreamingResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamingResponse")
            .field("service", &self.service)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Drop for StreamingResponse {
    /// A stream dropped just after its last event usually has a few bytes left (the chunked
    /// terminator). Read what comes within `DRAIN_WAIT` in all (not per read: a live stream
    /// keeps producing) and at most `DRAIN_BYTES`, so the connection can be reused; a body
    /// not at its end by then is closed (ureq closes a socket whose body was not read to
    /// the end).
    fn drop(&mut self) {
        if self.is_cancelled() {
            self.conn.mark_broken(); // its agent is shut down: nothing to drain
            return;
        }
        if std::thread::panicking() || self.conn.pool.core.is_closed() {
            return; // The connection is closed anyway.
        }
        let wire = Arc::clone(&self.conn.item().wire);
        let deadline = Instant::now() + DRAIN_WAIT;
        let mut left = DRAIN_BYTES;
        while left > 0 {
            let rest = deadline.saturating_duration_since(Instant::now());
            if rest.is_zero() {
                break;
            }
            // The transport waits at most `rest` for the next bytes.
            wire.drain_wait_us
                .store((rest.as_micros() as u64).max(1), Relaxed);
            match self.reader.fill_buf() {
                Ok([]) => break, // The end: ureq has put the socket back in the agent.
                Ok(buf) => {
                    let n = buf.len().min(left as usize);
                    self.reader.consume(n);
                    left -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        wire.drain_wait_us.store(0, Relaxed);
    }
}

impl Read for StreamingResponse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.reader.read(buf) {
            Ok(n) => {
                self.read += n as u64;
                Ok(n)
            }
            Err(e) => Err(self.read_failed(e)),
        }
    }
}

impl BufRead for StreamingResponse {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        // Checked first, so the buffer is borrowed only on success.
        if let Err(e) = self.reader.fill_buf() {
            return Err(self.read_failed(e));
        }
        self.reader.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.reader.buffer().len());
        self.read += amt as u64;
        self.reader.consume(amt)
    }
}

/// A response's headers as they were parsed, and the owned `(name, value)` pairs that
/// `headers()` lends, made on its first call: most callers read one header or none, and the
/// pairs cost two allocations per header.
#[derive(Clone)]
struct Headers {
    map: HeaderMap,
    pairs: OnceLock<Vec<(String, String)>>,
}

impl Headers {
    fn new(map: HeaderMap) -> Headers {
        Headers {
            map,
            pairs: OnceLock::new(),
        }
    }

    /// The first value of `name` (any case). A value that is not visible ASCII is read as
    /// UTF-8 with invalid bytes replaced, as in [`Headers::pairs`].
    fn get(&self, name: &str) -> Option<&str> {
        let value = self.map.get(name)?;
        match value.to_str() {
            Ok(text) => Some(text),
            Err(_) => self
                .pairs()
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str()),
        }
    }

    /// Every header as owned text, in the map's order (a repeated name's values together).
    fn pairs(&self) -> &[(String, String)] {
        self.pairs.get_or_init(|| {
            self.map
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::http::HeaderValue;

    #[test]
    fn headers_read_from_the_map_match_the_pairs_whatever_the_case_or_bytes() {
        let mut map = HeaderMap::new();
        map.append("content-type", HeaderValue::from_static("application/json"));
        map.append("x-tag", HeaderValue::from_static("one"));
        map.append("x-tag", HeaderValue::from_static("two"));
        map.append("x-name", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        let headers = Headers::new(map);
        assert_eq!(headers.get("Content-Type"), Some("application/json"));
        assert_eq!(
            headers.get("X-TAG"),
            Some("one"),
            "the first of a repeated header"
        );
        assert_eq!(
            headers.get("x-name"),
            Some("café"),
            "read as UTF-8 like the pairs"
        );
        assert_eq!(headers.get("missing"), None);
        assert_eq!(headers.get("not a token"), None);
        let pairs: Vec<(&str, &str)> = headers
            .pairs()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("content-type", "application/json"),
                ("x-tag", "one"),
                ("x-tag", "two"),
                ("x-name", "café"),
            ]
        );
        for (name, value) in headers.pairs() {
            let first = headers.pairs().iter().find(|(k, _)| k == name).unwrap();
            assert_eq!(headers.get(name), Some(first.1.as_str()), "{name}: {value}");
        }
    }
}
