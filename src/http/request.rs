//! Building and sending requests: [`HttpClient`], [`RequestBuilder`] and the retry rule (the
//! mapping of ureq's errors onto this crate's phases and classes is in `classify`).
//!
//! A request is checked before it takes a connection (`validate`), then sent on a pooled
//! connection. It is sent a second time, on a fresh connection, only if it is a `GET`, `HEAD`
//! or `OPTIONS` and its connection closed before a single byte of a response arrived (a stale
//! keep-alive connection); the transport counts those bytes, so a partial status line, a
//! malformed or oversized head or a reset mid-body is never answered by a resend.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::body::{Exact, Fault, Progress, Upload};
use super::classify::{self, Limits, Stage};
use super::response::{Response, StreamingResponse};
use super::validate;
use super::{HttpConnection, HttpPool};
use crate::cancel::Registration;
use crate::error::{Error, Phase};

/// A handle on one service's HTTP pool; cheap to clone, usable from any thread.
///
/// ```no_run
/// # fn main() -> Result<(), backend_pool::Error> {
/// use backend_pool::{ManagerConfig, PoolManager};
///
/// let manager = PoolManager::new(ManagerConfig::default())?;
/// let models = manager.http("litellm")?.get("/v1/models").call()?;
/// println!("{} {}", models.status(), models.text());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpClient {
    pool: Arc<HttpPool>,
}

impl HttpClient {
    pub(crate) fn new(pool: Arc<HttpPool>) -> Self {
        HttpClient { pool }
    }

    /// A request with `method` (any case: `GET`, `HEAD`, `POST`, `PUT`, `DELETE`, `OPTIONS`,
    /// `PATCH`, `TRACE`) for `path`, an origin-form path (`/…` with an optional `?query`) that
    /// is appended to the service's base URL. See [`RequestBuilder`] for what is checked.
    pub fn request(&self, method: &str, path: &str) -> RequestBuilder {
        RequestBuilder::new(Arc::clone(&self.pool), method, path)
    }

    /// A `GET` request.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request("GET", path)
    }

    /// A `HEAD` request.
    pub fn head(&self, path: &str) -> RequestBuilder {
        self.request("HEAD", path)
    }

    /// A `POST` request.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request("POST", path)
    }

    /// A `PUT` request.
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request("PUT", path)
    }

    /// A `DELETE` request.
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request("DELETE", path)
    }

    /// Checks out one pooled connection for direct use of its [`ureq::Agent`].
    ///
    /// # Errors
    /// [`Error::PoolTimeout`] after the service's wait timeout, [`Error::ServiceUnavailable`]
    /// while the service is unhealthy, [`Error::ShuttingDown`].
    pub fn checkout(&self) -> Result<HttpConnection, Error> {
        self.pool.checkout(self.pool.core.timeouts.wait, true)
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.pool.core.name
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("service", &self.pool.core.name)
            .field("base", &self.pool.base)
            .finish()
    }
}

/// Header names and query parameter names only: a value may be a secret.
impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        let query: Vec<&str> = self.query.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("RequestBuilder")
            .field("service", &self.pool.core.name)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &query)
            .field("headers", &names)
            .field("total_timeout", &self.timeout)
            .field("connect_timeout", &self.connect)
            .field("read_timeout", &self.read)
            .field("wait", &self.wait)
            .field("upload_progress", &self.progress.is_some())
            .finish_non_exhaustive()
    }
}

/// A request being built. Nothing is sent, and no connection is taken, until `call`,
/// `send_*` or `stream`.
///
/// # What is checked, before a connection is taken
///
/// A request that fails a check returns [`Error::InvalidRequest`] naming the offending part:
/// it costs no connection, leaves the pooled connections alone and does not count against the
/// service's health.
///
/// * **The path stays on the service's origin.** It must be an origin-form path: it starts
///   with a single `/`, and holds only RFC 3986 path and query characters (letters, digits,
///   `-._~!$&'()*+,;=:@/`, `?` for the query, `%` followed by two hex digits). Anything else
///   could re-target the request, and the service's bearer token, at another host or port
///   (`@host:9999/x`, `:9999/x`, `//host/x`, `.evil.test/x`), or smuggle a header (CR/LF).
///   Spaces, controls, `\`, `#` (a fragment is never sent), non-ASCII and `"<>[]^`{|}` must
///   be percent-encoded by the caller; dot segments (`/../`, also `%2e%2e`) are refused,
///   since servers resolve them out of the service URL's path prefix. The URI finally sent is
///   checked to name the service's scheme, host and port, and the pool's resolver refuses any
///   other host.
/// * **The method** is one of the eight above (`CONNECT` would open a tunnel elsewhere); a
///   `HEAD` request has no body.
/// * **Headers**: names are tokens, values are visible ASCII, spaces and tabs (no CR, LF or
///   other controls; non-ASCII must be encoded, e.g. RFC 8187). Values are never quoted in
///   errors: they may be secrets. `Host`, `Content-Length`, `Transfer-Encoding`,
///   `Connection`, `Keep-Alive`, `Upgrade`, `TE`, `Trailer` and `Proxy-Connection` are
///   refused: the pool sets `Host` and the framing from the service URL and the body, and a
///   caller's value would re-target the request (another virtual host), desynchronise the
///   keep-alive connection (request smuggling) or change its fate behind the pool's back. A
///   caller header replaces a configured header of the same name (e.g. `Authorization`);
///   a header added twice is sent twice.
/// * **Line lengths**: the request line and each header line fit in `output_buffer_bytes`
///   (the client writes each whole).
///
/// ```no_run
/// # fn main() -> Result<(), backend_pool::Error> {
/// use backend_pool::{ErrorClass, ManagerConfig, PoolManager};
///
/// let manager = PoolManager::new(ManagerConfig::default())?;
/// let http = manager.http("litellm")?;
/// let err = http.get("@127.0.0.1:9999/steal").call().unwrap_err();
/// assert_eq!(err.class(), ErrorClass::InvalidRequest); // nothing was sent anywhere
/// let models = http.get("/v1/models?limit=5").header("X-Trace", "abc").call()?;
/// # Ok(()) }
/// ```
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    pub(super) pool: Arc<HttpPool>,
    /// Upper case; a standard method's name is borrowed, not allocated.
    method: Cow<'static, str>,
    path: String,
    /// Query parameters, as given (encoded when the request is checked).
    query: Vec<(String, String)>,
    pub(super) headers: Vec<(String, String)>,
    timeout: Option<Duration>,
    connect: Option<Duration>,
    read: Option<Duration>,
    wait: Option<Duration>,
    probe: bool,
    cancel: Option<crate::CancelToken>,
    /// Behind a lock only so the builder stays `Sync`; taken out, not locked, when sent.
    pub(super) progress: Option<parking_lot::Mutex<Progress>>,
}

/// What a request sends.
pub(super) enum Payload<'a> {
    /// Bytes in memory (possibly none): sent again as they are on a retry.
    Bytes(&'a [u8]),
    /// Exactly `len` bytes from a reader, read once: never sent twice. `what` names the
    /// reader in errors.
    Reader {
        reader: &'a mut dyn Read,
        len: u64,
        what: Cow<'static, str>,
    },
}

impl Payload<'_> {
    fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) => b.len() as u64,
            Payload::Reader { len, .. } => *len,
        }
    }
}

/// A request sent: its connection, the response with its body unread, the cancel watch, and
/// what the body's read is held to.
pub(super) struct Sent {
    pub(super) conn: HttpConnection,
    pub(super) response: ureq::http::Response<ureq::Body>,
    pub(super) watch: Option<Registration>,
    limits: Limits,
    /// The total deadline of the attempt that answered, if the request has one.
    deadline: Option<Instant>,
}

/// How one attempt failed: in the HTTP client, or on the caller's side of a streamed body.
enum Failure {
    Client(ureq::Error),
    Body { fault: Fault, sent: u64, len: u64 },
}

impl RequestBuilder {
    pub(super) fn new(pool: Arc<HttpPool>, method: &str, path: &str) -> Self {
        RequestBuilder {
            pool,
            method: match validate::METHODS
                .iter()
                .find(|known| known.eq_ignore_ascii_case(method))
            {
                Some(known) => Cow::Borrowed(known),
                None => Cow::Owned(method.to_ascii_uppercase()),
            },
            path: path.to_string(),
            query: Vec::new(),
            headers: Vec::new(),
            timeout: None,
            connect: None,
            read: None,
            wait: None,
            probe: false,
            cancel: None,
            progress: None,
        }
    }

    /// Adds a header (checked when the request is sent: see [`RequestBuilder`]). It replaces
    /// a configured header of the same name; adding a name twice sends both.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds a query parameter, after any query already in the path and the parameters added
    /// before it (a name added twice is sent twice). Name and value are percent-encoded as
    /// UTF-8: everything but letters, digits and `-._~` is escaped, a space as `%20` (never
    /// `+`), so `&`, `=`, `#`, `+`, `%` and `/` arrive as the characters they are. The name
    /// must not be empty (checked when the request is sent).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), backend_pool::Error> {
    /// # let manager = backend_pool::PoolManager::new(backend_pool::ManagerConfig::default())?;
    /// // GET /view?filename=my%20render.png&subfolder=&type=output
    /// let png = manager
    ///     .http("comfyui")?
    ///     .get("/view")
    ///     .query("filename", "my render.png")
    ///     .query("subfolder", "")
    ///     .query("type", "output")
    ///     .call()?;
    /// # Ok(()) }
    /// ```
    pub fn query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.to_string(), value.to_string()));
        self
    }

    /// A total timeout: one deadline for the whole request (connect, send, response and
    /// body), on top of the per-phase timeouts (the first to pass ends the request). The
    /// wait for a pooled connection is bounded apart, by [`RequestBuilder::wait_timeout`];
    /// a retry on a fresh connection (see the module docs) runs within the same deadline.
    /// A timeout error names the phase it cut short and this deadline.
    pub fn total_timeout(mut self, total: Duration) -> Self {
        self.timeout = Some(total.min(crate::clock::FAR));
        self
    }

    /// How long resolving the host and opening a connection may each take (TCP and TLS),
    /// overriding the service's `connect_timeout_ms`; only a request that opens a connection
    /// uses it. A timeout here is an [`Error::Timeout`] of phase `connect` naming this limit.
    pub fn connect_timeout(mut self, connect: Duration) -> Self {
        self.connect = Some(connect.min(crate::clock::FAR));
        self
    }

    /// The longest silence allowed between two reads of the response, from the wait for its
    /// head to the end of its body, overriding the service's `read_idle_timeout_ms`. A body
    /// that keeps coming may take any time (bound it with
    /// [`RequestBuilder::total_timeout`]). A timeout here names the phase (`receive` before
    /// the head arrived, `read` after) and this limit.
    pub fn read_timeout(mut self, read: Duration) -> Self {
        self.read = Some(read.min(crate::clock::FAR));
        self
    }

    /// How long to wait for a pooled connection, overriding the service's `wait_timeout_ms`.
    pub fn wait_timeout(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Cancels the call when `token` is cancelled, from any thread: the call returns
    /// [`Error::Cancelled`] (a call given a token already cancelled fails at once). Covers
    /// the wait for a pooled connection (and for a stream's turn).
    pub fn cancel_on(mut self, token: &crate::CancelToken) -> Self {
        self.cancel = Some(token.clone());
        self
    }

    /// Calls `progress(sent, total)` while the request body is sent: at most every 100 ms
    /// while bytes flow, and once at the end (`sent == total`), on the calling thread.
    /// `sent` counts the body bytes handed to the connection (the last piece of at most
    /// `output_buffer_bytes` may still be on its way). A body sent again on a fresh
    /// connection (a `GET`'s, see the module docs) starts again from 0. Not called for an
    /// empty body.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), backend_pool::Error> {
    /// # let manager = backend_pool::PoolManager::new(backend_pool::ManagerConfig::default())?;
    /// let reply = manager
    ///     .http("comfyui")?
    ///     .post("/upload/image")
    ///     .upload_progress(|sent, total| println!("{sent} of {total} bytes"))
    ///     .send_file("render.png")?;
    /// # Ok(()) }
    /// ```
    pub fn upload_progress(mut self, progress: impl FnMut(u64, u64) + Send + 'static) -> Self {
        self.progress = Some(parking_lot::Mutex::new(Progress::new(Box::new(progress))));
        self
    }

    /// Health probes bypass the fail-fast gate's statistics of normal traffic.
    #[allow(dead_code)] // `HttpPool::probe` runs on the checked-out agent (to abort it)
    pub(super) fn probe(mut self) -> Self {
        self.probe = true;
        self
    }

    /// Sends the request without a body and reads the whole response.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] before any connection is taken (see [`RequestBuilder`]);
    /// then any [`Error`] of waiting, connecting (an unknown host or running out of file
    /// descriptors included: class `connect`), sending, receiving, or a response head or body
    /// over its limit (`too_large`). Non-2xx statuses are responses, not errors
    /// ([`Response::error_for_status`] turns them into errors).
    pub fn call(self) -> Result<Response, Error> {
        self.send_bytes(&[])
    }

    /// Sends `body` as JSON (`Content-Type: application/json` unless the caller set a
    /// `Content-Type`) and reads the whole response.
    ///
    /// # Errors
    /// As [`RequestBuilder::call`], plus [`Error::Json`] if `body` cannot be encoded.
    pub fn send_json(self, body: &impl Serialize) -> Result<Response, Error> {
        let bytes = serde_json::to_vec(body).map_err(|source| Error::Json {
            service: self.pool.core.name.clone(),
            source,
        })?;
        let typed = self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        let this = if typed {
            self
        } else {
            self.header("Content-Type", "application/json")
        };
        this.send_bytes(&bytes)
    }

    /// Sends raw bytes and reads the whole response.
    ///
    /// # Errors
    /// As [`RequestBuilder::call`].
    pub fn send_bytes(self, body: &[u8]) -> Result<Response, Error> {
        self.send_payload(Payload::Bytes(body))
    }

    /// Sends `payload` and reads the whole response.
    pub(super) fn send_payload(mut self, payload: Payload<'_>) -> Result<Response, Error> {
        let mut progress = self.progress.take().map(parking_lot::Mutex::into_inner);
        let sent = self.execute(payload, progress.as_mut())?;
        let cancel = sent.watch.as_ref().map(|w| w.token());
        let result = Response::read_whole(&self.pool, sent.response, cancel)
            .map_err(|e| classify::restate_body_timeout(e, &sent.limits, sent.deadline));
        if result.is_err() {
            sent.conn.discard();
        }
        result
    }

    /// Sends the request (with `body`, possibly empty) and returns the response with its
    /// body unread, for server-sent events and large downloads. The connection stays checked
    /// out until the [`StreamingResponse`] is dropped; a body dropped before its end closes
    /// the socket instead of reusing it (after reading for at most 20 ms in all).
    ///
    /// At most `max_stream_connections` streams of a service are open at once (by default
    /// `max_connections` less a fifth: 8 of 10), so short calls always find a connection; a
    /// stream over the cap waits its turn, first come first served, within the same wait
    /// timeout.
    ///
    /// # Errors
    /// As [`RequestBuilder::call`]. An [`Error::PoolTimeout`] while waiting for a stream's
    /// turn counts streams in its state: open (`in_use`), waiting, and the cap as `max`.
    pub fn stream(mut self, body: &[u8]) -> Result<StreamingResponse, Error> {
        let start = Instant::now();
        let wait = self.wait.unwrap_or(self.pool.core.timeouts.wait);
        let turn = self
            .pool
            .stream_turn(start, wait, !self.probe, self.cancel.as_ref())?;
        let service = self.pool.core.name.clone();
        self.wait = Some(wait.saturating_sub(start.elapsed()));
        let mut progress = self.progress.take().map(parking_lot::Mutex::into_inner);
        let sent = self.execute(Payload::Bytes(body), progress.as_mut())?;
        Ok(StreamingResponse::new(
            service,
            sent.conn,
            turn,
            sent.response,
            sent.watch,
        ))
    }

    fn idempotent(&self) -> bool {
        matches!(&*self.method, "GET" | "HEAD" | "OPTIONS")
    }

    /// The deadlines this request runs under.
    fn limits(&self) -> Limits {
        let service = Limits::service(&self.pool);
        Limits {
            connect: self.connect.unwrap_or(service.connect),
            request: service.request,
            read_idle: self.read.unwrap_or(service.read_idle),
            total: self.timeout,
        }
    }

    /// Checks the request (before checkout: an invalid one costs no connection), checks out
    /// a connection and sends. A GET / HEAD / OPTIONS with a body in memory whose connection
    /// closed before any response byte arrived is sent once more on a fresh connection;
    /// nothing is resent once the server sent a byte of its response, and a body from a
    /// reader is never sent twice.
    fn execute(
        &self,
        mut payload: Payload<'_>,
        mut progress: Option<&mut Progress>,
    ) -> Result<Sent, Error> {
        let pool = &self.pool;
        let counters = pool.counters();
        let mut target = Some(self.target(payload.len())?);
        let limits = self.limits();
        let wait = self.wait.unwrap_or(pool.core.timeouts.wait);
        let conn = pool.checkout_cancellable(wait, !self.probe, self.cancel.as_ref())?;
        let wire = &conn.item().wire;
        // A connect this request starts is abandoned on cancel (see `Wire::cancel`).
        let _connects = self.cancel.as_ref().map(|t| wire.cancel_connects_on(t));
        // Cancel shuts the agent down: the request in flight, its socket.
        let watch = self
            .cancel
            .as_ref()
            .map(|token| token.register(wire.cancel_hook(conn.agent())));
        let cancelled = |conn: HttpConnection, reached: bool| {
            // The failure is the cancel's doing: not the server's, not the health's.
            let phase = if reached {
                Phase::Receive
            } else {
                Phase::Connect
            };
            let err = pool.core.cancelled(phase);
            counters.error(err.class());
            conn.discard();
            Err(err)
        };
        let is_cancelled = || watch.as_ref().is_some_and(|w| w.token().is_cancelled());
        // The total deadline holds across a retry; the wait for a connection is apart.
        let started = Instant::now();
        let mut retried = false;
        loop {
            // The first attempt sends the checked request itself; a retry checks it again
            // (the same answer) rather than every request keeping a copy for a rare retry.
            let attempt = match target.take() {
                Some(target) => target,
                None => self.target(payload.len())?,
            };
            wire.begin_attempt();
            if is_cancelled() {
                let reached = wire.reached();
                return cancelled(conn, reached);
            }
            let total = limits.total.map(|t| t.saturating_sub(started.elapsed()));
            let deadline = total.map(|left| crate::clock::deadline(Instant::now(), left));
            let sent = self.send_once(
                &conn,
                attempt,
                &mut payload,
                progress.as_deref_mut(),
                &limits,
                total,
            );
            if sent.is_err() && is_cancelled() {
                let reached = wire.reached();
                return cancelled(conn, reached);
            }
            if sent.is_err() && pool.core.is_closed() {
                // Shutdown interrupted the call (its deadline passed).
                let err = pool.core.shutting_down();
                counters.error(err.class());
                conn.discard();
                return Err(err);
            }
            let e = match sent {
                Ok(response) => {
                    counters.requests.fetch_add(1, Relaxed);
                    if !self.probe {
                        pool.core.health.success();
                    }
                    return Ok(Sent {
                        conn,
                        response,
                        watch,
                        limits,
                        deadline,
                    });
                }
                Err(Failure::Body { fault, sent, len }) => {
                    // The caller's reader, not the server: counted, not against health.
                    let service = pool.core.name.clone();
                    let err = match fault {
                        Fault::Reader(source) => Error::RequestBody {
                            service,
                            sent,
                            len,
                            source,
                        },
                        Fault::TimedOut { after } => Error::Timeout {
                            service,
                            phase: Phase::Send,
                            after,
                        },
                    };
                    pool.failed(&err, false);
                    conn.discard();
                    return Err(err);
                }
                Err(Failure::Client(e)) => e,
            };
            let stage = if !wire.reached() {
                Stage::Connect
            } else if wire.writing() {
                Stage::Send
            } else {
                Stage::Receive
            };
            let err = classify::classify_attempt(pool, e, &limits, stage);
            // A resend only for a connection that closed before any byte of a response
            // (counted by the transport, whatever the error says): a stale keep-alive
            // connection. Any response byte means the server answered; and even a silent
            // server may have acted, so only methods that may be repeated are resent, only
            // with a body that can be (bytes in memory), and only within the total deadline.
            let stale = matches!(err, Error::ConnectionClosed { .. }) && wire.received() == 0;
            let repeatable = matches!(payload, Payload::Bytes(_)) && self.idempotent();
            let time_left = limits.total.map_or(true, |t| started.elapsed() < t);
            if stale && !retried && repeatable && time_left {
                // ureq dropped the dead socket: the next try connects afresh.
                retried = true;
                counters.retries.fetch_add(1, Relaxed);
                log::debug!(target: "backend_pool",
                    "service '{}': {} {} retried after a stale connection",
                    pool.core.name, self.method, self.path);
                continue;
            }
            pool.failed(&err, !self.probe);
            conn.discard();
            return Err(err);
        }
    }

    /// The request checked and in the form it is sent (see [`RequestBuilder`], "What is
    /// checked"); an invalid one is counted and costs no connection.
    fn target(&self, body_len: u64) -> Result<validate::Target, Error> {
        let pool = &self.pool;
        validate::target(
            &pool.core.endpoint,
            &pool.base,
            &pool.service_headers,
            &validate::Parts {
                method: &self.method,
                path: &self.path,
                query: &self.query,
                headers: &self.headers,
                body_len,
            },
            pool.config.output_buffer_bytes,
        )
        .map_err(|reason| self.invalid(reason))
    }

    /// An [`Error::InvalidRequest`] for `reason`, counted (no connection was taken).
    pub(super) fn invalid(&self, reason: String) -> Error {
        let err = Error::InvalidRequest {
            service: self.pool.core.name.clone(),
            reason,
        };
        self.pool.counters().error(err.class());
        err
    }

    /// Sends one attempt with `total` left of the total deadline. An empty body is sent as
    /// none where the method anticipates no content (RFC 9110 §8.6: then no
    /// `Content-Length: 0` either). A body with progress, or from a reader, is streamed
    /// with `Content-Length` through an [`Upload`].
    fn send_once(
        &self,
        conn: &HttpConnection,
        target: validate::Target,
        payload: &mut Payload<'_>,
        progress: Option<&mut Progress>,
        limits: &Limits,
        total: Option<Duration>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        use ureq::http::Method;
        let mut bytes: &[u8];
        let body = match payload {
            Payload::Bytes(body) if body.is_empty() => {
                let bodiless = matches!(
                    target.method,
                    Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
                );
                let sent = if bodiless {
                    self.run(conn, target, (), total, false)
                } else {
                    self.run(conn, target, *body, total, false)
                };
                return sent.map_err(Failure::Client);
            }
            Payload::Bytes(body) if progress.is_none() => {
                return self
                    .run(conn, target, *body, total, false)
                    .map_err(Failure::Client);
            }
            Payload::Bytes(body) => {
                bytes = body;
                let len = bytes.len() as u64;
                Exact::new(&mut bytes as &mut dyn Read, len, "the body")
            }
            Payload::Reader { reader, len, what } => {
                Exact::new(&mut **reader as &mut dyn Read, *len, what.clone())
            }
        };
        let len = body.len();
        let deadline = total
            .zip(limits.total)
            .map(|(left, whole)| (crate::clock::deadline(Instant::now(), left), whole));
        let mut upload = Upload::new(body, progress, deadline, limits.request);
        let mut target = target;
        target
            .headers
            .insert(ureq::http::header::CONTENT_LENGTH, len.into());
        let sent = self.run(
            conn,
            target,
            ureq::SendBody::from_reader(&mut upload),
            total,
            true,
        );
        match (sent, upload.fault.take()) {
            (Ok(response), _) => Ok(response),
            (Err(_), Some(fault)) => {
                let (sent, len) = upload.sent_of();
                Err(Failure::Body { fault, sent, len })
            }
            (Err(e), None) => Err(Failure::Client(e)),
        }
    }

    /// Runs the request on the connection's agent. With the request's own timeouts, or for a
    /// streamed body, under a request-level configuration: a streamed body is bounded per
    /// write (`request_timeout_ms` of no progress) rather than as a whole, since a large
    /// upload may rightly take longer than any one phase.
    fn run<B: ureq::AsSendBody>(
        &self,
        conn: &HttpConnection,
        target: validate::Target,
        body: B,
        total: Option<Duration>,
        streamed: bool,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut request = ureq::http::Request::new(body);
        *request.method_mut() = target.method;
        *request.uri_mut() = target.uri;
        *request.headers_mut() = target.headers;
        let agent = conn.agent();
        if total.is_none() && self.connect.is_none() && self.read.is_none() && !streamed {
            return agent.run(request);
        }
        let mut config = agent.configure_request(request);
        if let Some(total) = total {
            config = config.timeout_global(Some(total));
        }
        if let Some(connect) = self.connect {
            config = config
                .timeout_resolve(Some(connect))
                .timeout_connect(Some(connect));
        }
        if let Some(read) = self.read {
            config = config.timeout_per_read(Some(read));
        }
        if streamed {
            let stall = self.pool.core.timeouts.request;
            config = config
                .timeout_send_body(None)
                .timeout_per_write(Some(stall));
        }
        agent.run(config.build())
    }
}
