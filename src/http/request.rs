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
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::classify::{classify, classify_unreached};
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

/// Header names only: a value may be a secret.
impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("RequestBuilder")
            .field("service", &self.pool.core.name)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .field("wait", &self.wait)
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
    pool: Arc<HttpPool>,
    /// Upper case; a standard method's name is borrowed, not allocated.
    method: Cow<'static, str>,
    path: String,
    headers: Vec<(String, String)>,
    timeout: Option<Duration>,
    wait: Option<Duration>,
    probe: bool,
    cancel: Option<crate::CancelToken>,
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
            headers: Vec::new(),
            timeout: None,
            wait: None,
            probe: false,
            cancel: None,
        }
    }

    /// Adds a header (checked when the request is sent: see [`RequestBuilder`]). It replaces
    /// a configured header of the same name; adding a name twice sends both.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A total timeout: one deadline for the whole request (connect, send, response and
    /// body), overriding the per-phase timeouts' sum. The wait for a pooled connection is
    /// bounded apart, by [`RequestBuilder::wait_timeout`].
    pub fn total_timeout(mut self, total: Duration) -> Self {
        self.timeout = Some(total.min(crate::clock::FAR));
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
        let (conn, response, watch) = self.execute(body)?;
        let result = Response::read_whole(&self.pool, response, watch.as_ref().map(|w| w.token()));
        if result.is_err() {
            conn.discard();
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
    pub fn stream(self, body: &[u8]) -> Result<StreamingResponse, Error> {
        let start = std::time::Instant::now();
        let wait = self.wait.unwrap_or(self.pool.core.timeouts.wait);
        let turn = self
            .pool
            .stream_turn(start, wait, !self.probe, self.cancel.as_ref())?;
        let service = self.pool.core.name.clone();
        let rest = wait.saturating_sub(start.elapsed());
        let (conn, response, watch) = self.wait_timeout(rest).execute(body)?;
        Ok(StreamingResponse::new(service, conn, turn, response, watch))
    }

    fn idempotent(&self) -> bool {
        matches!(&*self.method, "GET" | "HEAD" | "OPTIONS")
    }

    /// Checks the request (before checkout: an invalid one costs no connection), checks out
    /// a connection and sends. A GET / HEAD / OPTIONS whose connection closed before any
    /// response byte arrived is sent once more on a fresh connection; nothing is resent once
    /// the server sent a byte of its response.
    fn execute(
        &self,
        body: &[u8],
    ) -> Result<
        (
            HttpConnection,
            ureq::http::Response<ureq::Body>,
            Option<Registration>,
        ),
        Error,
    > {
        let pool = &self.pool;
        let counters = pool.counters();
        let mut target = Some(self.target(body.len())?);
        let wait = self.wait.unwrap_or(pool.core.timeouts.wait);
        let conn = pool.checkout_cancellable(wait, !self.probe, self.cancel.as_ref())?;
        let wire = &conn.item().wire;
        // Cancel shuts the agent down: the request in flight (its connect and TLS handshake
        // too), its socket.
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
        let mut retried = false;
        loop {
            // The first attempt sends the checked request itself; a retry checks it again
            // (the same answer) rather than every request keeping a copy for a rare retry.
            let attempt = match target.take() {
                Some(target) => target,
                None => self.target(body.len())?,
            };
            wire.begin_attempt();
            if is_cancelled() {
                let reached = wire.reached();
                return cancelled(conn, reached);
            }
            let sent = self.send_once(&conn, attempt, body);
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
            match sent {
                Ok(response) => {
                    counters.requests.fetch_add(1, Relaxed);
                    if !self.probe {
                        pool.core.health.success();
                    }
                    return Ok((conn, response, watch));
                }
                Err(e) => {
                    let err = if wire.reached() {
                        classify(pool, e)
                    } else {
                        classify_unreached(pool, e)
                    };
                    // A resend only for a connection that closed before any byte of a
                    // response (counted by the transport, whatever the error says): a stale
                    // keep-alive connection. Any response byte means the server answered;
                    // and even a silent server may have acted, so only methods that may be
                    // repeated are resent.
                    let stale =
                        matches!(err, Error::ConnectionClosed { .. }) && wire.received() == 0;
                    if stale && !retried && self.idempotent() {
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
        }
    }

    /// The request checked and in the form it is sent (see [`RequestBuilder`], "What is
    /// checked"); an invalid one is counted and costs no connection.
    fn target(&self, body_len: usize) -> Result<validate::Target, Error> {
        let pool = &self.pool;
        validate::target(
            &pool.core.endpoint,
            &pool.base,
            &pool.service_headers,
            &self.method,
            &self.path,
            &self.headers,
            body_len,
            pool.config.output_buffer_bytes,
        )
        .map_err(|reason| {
            let err = Error::InvalidRequest {
                service: pool.core.name.clone(),
                reason,
            };
            pool.counters().error(err.class());
            err
        })
    }

    /// Sends one attempt. An empty body is sent as none where the method anticipates no
    /// content (RFC 9110 §8.6: then no `Content-Length: 0` either).
    fn send_once(
        &self,
        conn: &HttpConnection,
        target: validate::Target,
        body: &[u8],
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        use ureq::http::Method;
        let bodiless = body.is_empty()
            && matches!(
                target.method,
                Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
            );
        if bodiless {
            self.run(conn, target, ())
        } else {
            self.run(conn, target, body)
        }
    }

    fn run<B: ureq::AsSendBody>(
        &self,
        conn: &HttpConnection,
        target: validate::Target,
        body: B,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut request = ureq::http::Request::new(body);
        *request.method_mut() = target.method;
        *request.uri_mut() = target.uri;
        *request.headers_mut() = target.headers;
        let agent = conn.agent();
        match self.timeout {
            Some(total) => agent.run(
                agent
                    .configure_request(request)
                    .timeout_global(Some(total))
                    .build(),
            ),
            None => agent.run(request),
        }
    }

    /// Sends the request without a body and saves the response's body to the file `dest`,
    /// with progress: [`StreamingResponse::download_to`] (as a stream: `max_body_bytes` does
    /// not apply).
    ///
    /// # Errors
    /// As [`RequestBuilder::stream`], then [`StreamingResponse::download_to`].
    pub fn download_to(
        self,
        dest: impl AsRef<std::path::Path>,
        progress: impl FnMut(super::Progress),
    ) -> Result<super::Download, Error> {
        self.stream(&[])?.download_to(dest, progress)
    }

    /// As [`RequestBuilder::download_to`], into `out`: [`StreamingResponse::download_to_writer`].
    ///
    /// # Errors
    /// As [`RequestBuilder::stream`], then [`StreamingResponse::download_to_writer`].
    pub fn download_to_writer<W: std::io::Write + ?Sized>(
        self,
        out: &mut W,
        progress: impl FnMut(super::Progress),
    ) -> Result<super::Download, Error> {
        self.stream(&[])?.download_to_writer(out, progress)
    }
}
