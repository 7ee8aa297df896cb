//! Responses: [`Response`] read whole, [`StreamingResponse`] read as it arrives.

use std::fmt;
use std::io::{self, BufRead, Read};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::de::DeserializeOwned;
use ureq::http::HeaderMap;

use super::classify::classify;
use super::transport::{DRAIN_BYTES, DRAIN_WAIT};
use super::{HttpConnection, HttpPool, StreamTurn};
use crate::error::{Error, Phase};

/// The status and header accessors both response kinds share (their heads are the same
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

/// A whole response: status, headers and body.
#[derive(Clone)]
pub struct Response {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
    service: String,
}

impl Response {
    /// Reads a response's whole body (up to `max_body_bytes`).
    ///
    /// A failure once `cancel` is cancelled is [`Error::Cancelled`] (the cancel shut the
    /// agent down), counted as such and not against health.
    pub(super) fn read_whole(
        pool: &HttpPool,
        response: ureq::http::Response<ureq::Body>,
        cancel: Option<&crate::CancelToken>,
    ) -> Result<Response, Error> {
        let (parts, mut body) = response.into_parts();
        let bytes = body
            .with_config()
            .limit(pool.config.max_body_bytes)
            .read_to_vec()
            .map_err(|e| {
                if pool.core.is_closed() {
                    // Shutdown interrupted the read (its deadline passed).
                    let err = pool.core.shutting_down();
                    pool.counters().error(err.class());
                    return err;
                }
                if cancel.is_some_and(crate::CancelToken::is_cancelled) {
                    let err = pool.core.cancelled(crate::Phase::Read);
                    pool.counters().error(err.class());
                    return err;
                }
                let err = classify(pool, e);
                pool.failed(&err, true);
                err
            })?;
        Ok(Response {
            status: parts.status.as_u16(),
            headers: Headers::new(parts.headers),
            body: bytes,
            service: pool.core.name.clone(),
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

    /// `Ok(self)` for 1xx–3xx; an [`Error::Transport`] carrying the status otherwise.
    ///
    /// # Errors
    /// The status as an error, for callers that treat 4xx/5xx as failures.
    pub fn error_for_status(self) -> Result<Response, Error> {
        if self.status < 400 {
            return Ok(self);
        }
        Err(Error::Transport {
            service: self.service.clone(),
            phase: Phase::Receive,
            source: format!("HTTP status {}", self.status).into(),
        })
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
pub struct StreamingResponse {
    status: u16,
    headers: Headers,
    reader: io::BufReader<ureq::BodyReader<'static>>,
    service: String,
    /// The request's token, watching the agent while the body is read (cancel shuts it
    /// down); `cancelled` once a read has reported it.
    cancel: Option<crate::cancel::Registration>,
    cancelled: bool,
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
        cancel: Option<crate::cancel::Registration>,
    ) -> Self {
        let (parts, body) = response.into_parts();
        StreamingResponse {
            status: parts.status.as_u16(),
            headers: Headers::new(parts.headers),
            reader: io::BufReader::with_capacity(8 * 1024, body.into_reader()),
            service,
            cancel,
            cancelled: false,
            conn,
            _turn: turn,
        }
    }

    /// A read failed: if the request's token is cancelled, the failure is its doing. Then
    /// the error wraps [`Error::Cancelled`] (kind `ConnectionAborted`; the first such
    /// failure is counted) and the connection closes when the stream drops.
    fn read_failed(&mut self, e: io::Error) -> io::Error {
        if self.conn.pool.core.is_closed() {
            // Shutdown interrupted the read (its deadline passed).
            return io::Error::new(
                io::ErrorKind::ConnectionAborted,
                self.conn.pool.core.shutting_down(),
            );
        }
        if !self
            .cancel
            .as_ref()
            .is_some_and(|w| w.token().is_cancelled())
        {
            return timed_out_kind(e);
        }
        let err = self.conn.pool.core.cancelled(crate::Phase::Read);
        if !self.cancelled {
            self.cancelled = true;
            self.conn.pool.counters().error(err.class());
            self.conn.mark_broken();
        }
        io::Error::new(io::ErrorKind::ConnectionAborted, err)
    }

    head_accessors!();

    /// The body's server-sent events, read as they arrive: see [`crate::sse`] for the rules,
    /// the limit and the errors (a read timeout is `sse::Error::Io` with
    /// `ErrorKind::TimedOut`). Reads from where the stream is; [`crate::sse::Events::new`]
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
        let cancelled = self
            .cancel
            .as_ref()
            .is_some_and(|w| w.token().is_cancelled());
        if cancelled {
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

/// A read timeout on the body surfaces as `ErrorKind::TimedOut` (ureq wraps it otherwise).
fn timed_out_kind(e: io::Error) -> io::Error {
    let timeout = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)));
    if timeout && e.kind() != io::ErrorKind::TimedOut {
        io::Error::new(io::ErrorKind::TimedOut, e)
    } else {
        e
    }
}

impl Read for StreamingResponse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.reader.read(buf) {
            Ok(n) => Ok(n),
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
