//! Building requests: [`HttpClient`] and [`RequestBuilder`]'s public API. How a request is
//! checked, sent and retried is in `send`; bodies from readers and files in `body`,
//! multipart forms in `multipart`.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::body::Progress;
use super::response::{Response, StreamingResponse};
use super::send::Payload;
use super::validate;
use super::{HttpConnection, HttpPool};
use crate::error::Error;
use crate::route::{Pin, Route};

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
///
/// For a service with several endpoints (`urls`), each request goes to a healthy endpoint
/// with the least work in flight, chosen when it is sent (see [`RequestBuilder::call`]).
#[derive(Clone)]
pub struct HttpClient {
    /// The service's pool (with several endpoints, the first's: the default choice).
    pool: Arc<HttpPool>,
    /// With several endpoints, every endpoint's pool; `None` for one URL.
    route: Option<Arc<Route>>,
    /// A session's pin (`crate::route::Session`): its requests follow it.
    session: Option<Arc<Pin>>,
}

impl HttpClient {
    pub(crate) fn routed(pool: Arc<HttpPool>, route: Option<Arc<Route>>) -> Self {
        HttpClient {
            pool,
            route,
            session: None,
        }
    }

    /// A session's handle: `pool` is its endpoint's now.
    pub(crate) fn pinned(pool: Arc<HttpPool>, session: Arc<Pin>) -> Self {
        HttpClient {
            pool,
            route: None,
            session: Some(session),
        }
    }

    /// A request with `method` (any case: `GET`, `HEAD`, `POST`, `PUT`, `DELETE`, `OPTIONS`,
    /// `PATCH`, `TRACE`) for `path`, an origin-form path (`/…` with an optional `?query`) that
    /// is appended to the service's base URL. See [`RequestBuilder`] for what is checked.
    pub fn request(&self, method: &str, path: &str) -> RequestBuilder {
        let mut builder = RequestBuilder::new(Arc::clone(&self.pool), method, path);
        builder.route = self.route.clone();
        builder.session = self.session.clone();
        builder
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
        let pool = match &self.route {
            None => &self.pool,
            Some(route) => route.pick_http().unwrap_or(&self.pool),
        };
        pool.checkout(pool.core.timeouts.wait, true)
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
    /// The pool it is sent on: with a `route`, chosen when it is sent.
    pub(super) pool: Arc<HttpPool>,
    /// With several endpoints, every endpoint's pool; `None` for one URL.
    pub(super) route: Option<Arc<Route>>,
    /// A session's pin: sent where the session is when sent (`crate::route::Session`).
    pub(super) session: Option<Arc<Pin>>,
    /// Upper case; a standard method's name is borrowed, not allocated.
    pub(super) method: Cow<'static, str>,
    pub(super) path: String,
    /// Query parameters, as given (encoded when the request is checked).
    pub(super) query: Vec<(String, String)>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) timeout: Option<Duration>,
    pub(super) connect: Option<Duration>,
    pub(super) read: Option<Duration>,
    pub(super) wait: Option<Duration>,
    pub(super) probe: bool,
    pub(super) cancel: Option<crate::CancelToken>,
    /// Behind a lock only so the builder stays `Sync`; taken out, not locked, when sent.
    pub(super) progress: Option<parking_lot::Mutex<Progress>>,
}

impl RequestBuilder {
    pub(super) fn new(pool: Arc<HttpPool>, method: &str, path: &str) -> Self {
        RequestBuilder {
            pool,
            route: None,
            session: None,
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
    /// head to the end of its body, overriding the service's `read_idle_timeout_ms` (and its
    /// `request_timeout_ms` for the wait for the head). A body
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
        let sent = self.execute_routed(payload, progress.as_mut())?;
        let cancel = sent.watch.as_ref().map(|w| w.token());
        let result = Response::read_whole(&self.pool, sent.response, &sent.limits, cancel);
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
    pub fn stream(self, body: &[u8]) -> Result<StreamingResponse, Error> {
        self.stream_payload(Payload::Bytes(body))
    }

    /// Sends `payload` and returns the response with its body unread (see
    /// [`RequestBuilder::stream`]).
    pub(super) fn stream_payload(
        mut self,
        mut payload: Payload<'_>,
    ) -> Result<StreamingResponse, Error> {
        let start = Instant::now();
        // A stream stays on the endpoint it starts on (no retry elsewhere).
        self.choose_endpoint();
        let wait = self.wait.unwrap_or(self.pool.core.timeouts.wait);
        let turn = self
            .pool
            .stream_turn(start, wait, !self.probe, self.cancel.as_ref())?;
        let service = self.pool.core.name.clone();
        self.wait = Some(wait.saturating_sub(start.elapsed()));
        let mut progress = self.progress.take().map(parking_lot::Mutex::into_inner);
        let sent = self.execute(&mut payload, progress.as_mut(), false)?;
        Ok(StreamingResponse::new(
            service,
            sent.conn,
            turn,
            sent.response,
            sent.limits,
            sent.watch,
        ))
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
