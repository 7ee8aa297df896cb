//! HTTP pools: r2d2 over ureq, one pooled item per keep-alive TCP connection.
//!
//! Each pooled item is a `ureq::Agent` whose own pool holds at most one idle connection, and
//! an item is used by one caller at a time, so `max_connections` items mean at most
//! `max_connections` TCP connections. A counting connector at the end of ureq's connector
//! chain counts every real TCP connect and every close. In front of r2d2 sits a
//! [`Slots`] gate: callers get permits in arrival order, wake on shutdown, and time out with
//! the pool state; holding a permit, r2d2 always has an idle item or room to create one.
//!
//! Stale keep-alive connections: ureq probes a pooled socket (a non-blocking read, no round
//! trip) before reusing it and never reuses one idle longer than `keepalive_idle_ms`; if a
//! request still fails with the connection closed before any response byte, a GET or HEAD is
//! retried once on a fresh connection, anything else returns [`Error::ConnectionClosed`].

use std::fmt;
use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, DefaultConnector, NextTimeout, Transport,
};

use crate::error::{Error, ErrorClass, Phase, PoolKind, PoolState};
use crate::lease::{Lease, LeaseRegistry};
use crate::service::{jittered, ServiceCore};
use crate::slots::{AcquireError, Slots};
use crate::stats::{CloseCause, PoolCounters, PoolStats};
use crate::HttpPoolConfig;

/// What an agent's connector and its transports share with the pool item.
#[derive(Default)]
struct Wire {
    /// Open TCP connections of this agent (0 or 1).
    sockets: AtomicUsize,
    /// Set while a dropped stream drains its tail: reads then wait at most `DRAIN_WAIT`.
    draining: AtomicBool,
}

/// How long a dropped stream waits for the rest of its body before the socket is closed.
const DRAIN_WAIT: Duration = Duration::from_millis(20);
/// How much of a dropped stream's body is read to save its connection.
const DRAIN_BYTES: u64 = 64 * 1024;

/// One pooled item: an agent that holds at most one keep-alive connection.
pub(crate) struct HttpConn {
    agent: ureq::Agent,
    wire: Arc<Wire>,
    lease: Arc<Lease>,
    expires: Instant,
    last_used: Instant,
    /// Set to make r2d2 drop the item on return, with the cause to count.
    close: Option<CloseCause>,
}

impl fmt::Debug for HttpConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConn")
            .field("sockets", &self.wire.sockets.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// State the r2d2 manager and the connectors share with the pool.
struct Shared {
    agent_config: ureq::config::Config,
    counters: Arc<PoolCounters>,
    leases: LeaseRegistry,
    lifetime: Duration,
}

impl Shared {
    fn new_agent(&self, wire: &Arc<Wire>) -> ureq::Agent {
        let connector = DefaultConnector::default().chain(CountingConnector {
            counters: Arc::clone(&self.counters),
            wire: Arc::clone(wire),
        });
        ureq::Agent::with_parts(
            self.agent_config.clone(),
            connector,
            DefaultResolver::default(),
        )
    }
}

struct Manager(Arc<Shared>);

impl r2d2::ManageConnection for Manager {
    type Connection = HttpConn;
    type Error = io::Error;

    /// Creating an item does no I/O: the agent connects on first use. So this never fails
    /// and a backend that is down cannot make r2d2 retry in a loop.
    fn connect(&self) -> Result<HttpConn, io::Error> {
        let wire = Arc::new(Wire::default());
        let now = Instant::now();
        Ok(HttpConn {
            agent: self.0.new_agent(&wire),
            wire,
            lease: self.0.leases.register(),
            expires: now + jittered(self.0.lifetime),
            last_used: now,
            close: None,
        })
    }

    fn is_valid(&self, _: &mut HttpConn) -> Result<(), io::Error> {
        Ok(())
    }

    fn has_broken(&self, conn: &mut HttpConn) -> bool {
        match conn.close {
            Some(cause) => {
                self.0
                    .counters
                    .closed(cause, conn.wire.sockets.load(Relaxed) as u64);
                true
            }
            None => false,
        }
    }
}

/// Counts real TCP connects; the transport it wraps counts the close.
struct CountingConnector {
    counters: Arc<PoolCounters>,
    wire: Arc<Wire>,
}

impl fmt::Debug for CountingConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CountingConnector")
    }
}

impl Connector<Box<dyn Transport>> for CountingConnector {
    type Out = CountedTransport;

    fn connect(
        &self,
        _: &ConnectionDetails<'_>,
        chained: Option<Box<dyn Transport>>,
    ) -> Result<Option<CountedTransport>, ureq::Error> {
        Ok(chained.map(|inner| {
            self.counters.created.fetch_add(1, Relaxed);
            self.wire.sockets.fetch_add(1, Relaxed);
            CountedTransport {
                inner,
                counters: Arc::clone(&self.counters),
                wire: Arc::clone(&self.wire),
            }
        }))
    }
}

struct CountedTransport {
    inner: Box<dyn Transport>,
    counters: Arc<PoolCounters>,
    wire: Arc<Wire>,
}

impl fmt::Debug for CountedTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Drop for CountedTransport {
    fn drop(&mut self) {
        self.wire.sockets.fetch_sub(1, Relaxed);
        self.counters.closed_total.fetch_add(1, Relaxed);
    }
}

impl Transport for CountedTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }
    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.inner.transmit_output(amount, timeout)
    }
    fn await_input(&mut self, mut timeout: NextTimeout) -> Result<bool, ureq::Error> {
        if self.wire.draining.load(Relaxed) {
            timeout.after = DRAIN_WAIT.into();
            timeout.per_read = Some(DRAIN_WAIT.into());
        }
        self.inner.await_input(timeout)
    }
    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }
    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

/// A service's HTTP pool.
pub(crate) struct HttpPool {
    pub(crate) core: Arc<ServiceCore>,
    pub(crate) config: HttpPoolConfig,
    shared: Arc<Shared>,
    r2d2: r2d2::Pool<Manager>,
    slots: Slots<()>,
    base: String,
}

impl HttpPool {
    pub(crate) fn new(
        core: Arc<ServiceCore>,
        config: HttpPoolConfig,
        threads: Arc<scheduled_thread_pool::ScheduledThreadPool>,
    ) -> HttpPool {
        let t = core.timeouts;
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .user_agent(concat!("backend-pool/", env!("CARGO_PKG_VERSION")))
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .max_idle_age(Duration::from_millis(config.keepalive_idle_ms))
            .input_buffer_size(config.input_buffer_bytes)
            .output_buffer_size(config.output_buffer_bytes)
            .max_response_header_size(config.max_header_bytes)
            .max_redirects(0)
            .timeout_connect(Some(t.connect))
            .timeout_send_request(Some(t.request))
            .timeout_send_body(Some(t.request))
            .timeout_recv_response(Some(t.request))
            .timeout_per_read(Some(t.read_idle));
        if let Some(tls) = &core.tls {
            builder = builder.tls_config(tls.ureq.clone());
        }
        let shared = Arc::new(Shared {
            agent_config: builder.build(),
            counters: Arc::new(PoolCounters::default()),
            leases: LeaseRegistry::default(),
            lifetime: t.lifetime,
        });
        let r2d2 = r2d2::Pool::builder()
            .max_size(config.max_connections)
            // No proactive creation: r2d2 would push fresh (socketless) items above the
            // warm ones on its LIFO stack and defeat reuse. Items are created on demand.
            .min_idle(Some(0))
            .test_on_check_out(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connection_timeout(t.wait)
            .thread_pool(threads)
            .build_unchecked(Manager(Arc::clone(&shared)));
        HttpPool {
            base: core.endpoint.http_base(),
            slots: Slots::new(config.max_connections as usize),
            core,
            config,
            shared,
            r2d2,
        }
    }

    pub(crate) fn counters(&self) -> &PoolCounters {
        &self.shared.counters
    }

    /// Occupancy in TCP connections: `idle` counts open sockets not checked out (pool items
    /// without a socket are free to create and not counted).
    pub(crate) fn state(&self) -> PoolState {
        let occ = self.slots.occupancy();
        let open = self.counters().open();
        PoolState {
            in_use: occ.in_use,
            idle: open.saturating_sub(occ.in_use),
            waiting: occ.waiting,
            max: self.slots.max(),
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        self.counters().snapshot(PoolKind::Http, self.state())
    }

    /// Checks out a pooled connection: health gate, then a permit in arrival order, then the
    /// r2d2 item (idle, or created on r2d2's worker).
    /// `gate: false` skips the fail-fast check (health probes must reach an unhealthy
    /// service).
    pub(crate) fn checkout(
        self: &Arc<Self>,
        wait: Duration,
        gate: bool,
    ) -> Result<HttpConnection, Error> {
        let start = Instant::now();
        let counters = self.counters();
        let result = self.checkout_inner(start, wait, gate);
        match &result {
            Ok(conn) => {
                counters.acquisitions.fetch_add(1, Relaxed);
                counters.acquire_time.record(start.elapsed());
                conn.item().lease.begin(start);
            }
            Err(e) => counters.error(e.class()),
        }
        result
    }

    fn checkout_inner(
        self: &Arc<Self>,
        start: Instant,
        wait: Duration,
        gate: bool,
    ) -> Result<HttpConnection, Error> {
        if gate {
            self.core.health.gate()?;
        }
        let deadline = start + wait;
        match self.slots.acquire(deadline) {
            Ok(_) => {}
            Err(AcquireError::Closed) => return Err(self.shutting_down()),
            Err(AcquireError::Timeout(seen)) => {
                let mut state = self.state();
                state.waiting = seen.waiting;
                return Err(self.timeout(start, state));
            }
        }
        // Holding a permit, r2d2 has an idle item or room for one. An idle one is the common
        // case and needs no clock read; creating one waits briefly on r2d2's worker.
        let item = match self.r2d2.try_get() {
            Some(item) => Ok(item),
            None => {
                let remaining = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                self.r2d2.get_timeout(remaining)
            }
        };
        match item {
            Ok(item) => Ok(HttpConnection {
                item: Some(item),
                pool: Arc::clone(self),
            }),
            Err(_) => {
                self.slots.release(None);
                Err(self.timeout(start, self.state()))
            }
        }
    }

    /// Counts a failed request; connection-level failures also count against health.
    fn failed(&self, err: &Error, affects_health: bool) {
        let class = err.class();
        self.counters().error(class);
        if class == ErrorClass::Connect {
            self.counters().connect_failures.fetch_add(1, Relaxed);
        }
        if affects_health && matches!(class, ErrorClass::Connect | ErrorClass::Closed) {
            self.core.connection_failed(class, error_chain(err));
        }
    }

    fn timeout(&self, start: Instant, state: PoolState) -> Error {
        Error::PoolTimeout {
            service: self.core.name.clone(),
            kind: PoolKind::Http,
            waited: start.elapsed(),
            state,
            last_error: self.core.last_connect_error(),
        }
    }

    fn shutting_down(&self) -> Error {
        Error::ShuttingDown {
            service: Some(self.core.name.clone()),
        }
    }

    /// Maintenance: closes sockets idle past the keep-alive limit, drops items idle past
    /// `idle_timeout` beyond the minimum or past their lifetime. Borrows idle items with
    /// permits, so it never takes a connection a caller is waiting for.
    pub(crate) fn maintain(&self, now: Instant) {
        let idle = self.r2d2.state().idle_connections as usize;
        let mut borrowed = Vec::with_capacity(idle);
        for _ in 0..idle {
            if self.slots.try_acquire().is_none() {
                break;
            }
            match self.r2d2.try_get() {
                Some(item) => borrowed.push(item),
                None => {
                    self.slots.release(None);
                    break;
                }
            }
        }
        let keepalive = Duration::from_millis(self.config.keepalive_idle_ms);
        let mut total = self.r2d2.state().connections as usize;
        let min = self.config.min_connections as usize;
        for item in &mut borrowed {
            let idle_for = now.saturating_duration_since(item.last_used);
            if item.expires <= now {
                item.close = Some(CloseCause::Lifetime);
            } else if idle_for >= self.core.timeouts.idle && total > min {
                item.close = Some(CloseCause::Idle);
                total -= 1;
            } else if idle_for >= keepalive && item.wire.sockets.load(Relaxed) > 0 {
                // The server may already have closed it; release the socket now rather
                // than at the next use. The item stays.
                let wire = Arc::new(Wire::default());
                let old = std::mem::replace(&mut item.agent, self.shared.new_agent(&wire));
                let old_wire = std::mem::replace(&mut item.wire, wire);
                self.counters()
                    .closed(CloseCause::Idle, old_wire.sockets.load(Relaxed) as u64);
                drop(old);
            }
        }
        // Return in reverse so r2d2's LIFO stack keeps its order (warm sockets on top).
        for item in borrowed.into_iter().rev() {
            drop(item);
            self.slots.release(None);
        }
        self.report_leaks(now);
    }

    fn report_leaks(&self, now: Instant) {
        for leak in self.shared.leases.scan(self.core.timeouts.leak, now) {
            self.counters().leaks_detected.fetch_add(1, Relaxed);
            log::warn!(target: "backend_pool",
                "service '{}': HTTP connection held for {:?} by thread '{}' (leak threshold {:?})",
                self.core.name, leak.held, leak.thread, self.core.timeouts.leak);
        }
    }

    /// Health probe: `GET` (or `HEAD` for `/`) the health path through a pooled connection,
    /// with the probe's own deadline. Skipped (`None`) when every connection is busy.
    pub(crate) fn probe(self: &Arc<Self>, path: &str) -> Option<Result<(), String>> {
        let t = self.core.timeouts.health;
        let _ = self.slots.try_acquire()?;
        self.slots.release(None);
        let method = if path == "/" { "HEAD" } else { "GET" };
        let request = RequestBuilder::new(Arc::clone(self), method, path)
            .timeout(t)
            .probe();
        Some(match request.call() {
            Ok(r) if r.status() < 500 => Ok(()),
            Ok(r) => Err(format!("{method} {path} answered {}", r.status())),
            Err(e) => Err(error_chain(&e)),
        })
    }

    /// Shutdown: no new checkouts, waiters wake; idle sockets close now, busy ones when
    /// returned.
    pub(crate) fn close(&self) {
        self.slots.close();
        let idle = self.r2d2.state().idle_connections;
        for _ in 0..idle {
            match self.r2d2.try_get() {
                Some(mut item) => item.close = Some(CloseCause::Shutdown),
                None => break,
            }
        }
    }

    pub(crate) fn in_use(&self) -> usize {
        self.slots.occupancy().in_use
    }
}

/// A connection checked out of an HTTP pool. It returns on drop; after a panic, or once the
/// pool is shut down, it is closed instead.
#[must_use = "the connection returns to the pool when dropped"]
pub struct HttpConnection {
    item: Option<r2d2::PooledConnection<Manager>>,
    pool: Arc<HttpPool>,
}

impl HttpConnection {
    fn item(&self) -> &HttpConn {
        self.item.as_ref().expect("item present until drop")
    }

    /// The agent bound to this connection. Requests made with it reuse the pooled socket;
    /// run one at a time, and read each body to the end, or the socket is not reused.
    pub fn agent(&self) -> &ureq::Agent {
        &self.item().agent
    }

    /// The service's base URL (`http://host:port[/prefix]`).
    pub fn base_url(&self) -> &str {
        &self.pool.base
    }

    /// Closes the connection instead of returning it (after an error seen by the caller).
    pub fn discard(mut self) {
        if let Some(item) = self.item.as_mut() {
            item.close = Some(CloseCause::Broken);
        }
    }
}

impl fmt::Debug for HttpConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConnection")
            .field("service", &self.pool.core.name)
            .finish_non_exhaustive()
    }
}

impl Drop for HttpConnection {
    fn drop(&mut self) {
        if let Some(mut item) = self.item.take() {
            item.lease.end();
            item.last_used = Instant::now();
            if item.close.is_none() {
                if std::thread::panicking() {
                    item.close = Some(CloseCause::Broken);
                } else if self.pool.slots.is_closed() {
                    item.close = Some(CloseCause::Shutdown);
                } else if item.expires <= item.last_used {
                    item.close = Some(CloseCause::Lifetime);
                }
            }
            drop(item);
            self.pool.slots.release(None);
        }
    }
}

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

    /// A request with any method; `path` is appended to the service's base URL.
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

/// A request being built. Nothing is sent, and no connection is taken, until `call`,
/// `send_*` or `stream`.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    pool: Arc<HttpPool>,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    timeout: Option<Duration>,
    wait: Option<Duration>,
    probe: bool,
}

impl RequestBuilder {
    fn new(pool: Arc<HttpPool>, method: &str, path: &str) -> Self {
        RequestBuilder {
            pool,
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            headers: Vec::new(),
            timeout: None,
            wait: None,
            probe: false,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A deadline for the whole request (connect, send, response and body), overriding the
    /// per-phase timeouts' sum.
    pub fn timeout(mut self, total: Duration) -> Self {
        self.timeout = Some(total);
        self
    }

    /// How long to wait for a pooled connection, overriding the service's `wait_timeout_ms`.
    pub fn wait_timeout(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Health probes bypass the fail-fast gate's statistics of normal traffic.
    fn probe(mut self) -> Self {
        self.probe = true;
        self
    }

    /// Sends the request without a body and reads the whole response.
    ///
    /// # Errors
    /// Any [`Error`]: waiting, connecting, sending, receiving, or a body over
    /// `max_body_bytes`. Non-2xx statuses are responses, not errors
    /// ([`Response::error_for_status`] turns them into errors).
    pub fn call(self) -> Result<Response, Error> {
        self.send_bytes(&[])
    }

    /// Sends `body` as JSON (`Content-Type: application/json`) and reads the whole response.
    ///
    /// # Errors
    /// As [`RequestBuilder::call`], plus [`Error::Json`] if `body` cannot be encoded.
    pub fn send_json(self, body: &impl Serialize) -> Result<Response, Error> {
        let bytes = serde_json::to_vec(body).map_err(|source| Error::Json {
            service: self.pool.core.name.clone(),
            source,
        })?;
        self.header("Content-Type", "application/json")
            .send_bytes(&bytes)
    }

    /// Sends raw bytes and reads the whole response.
    ///
    /// # Errors
    /// As [`RequestBuilder::call`].
    pub fn send_bytes(self, body: &[u8]) -> Result<Response, Error> {
        let pool = Arc::clone(&self.pool);
        let (conn, response) = self.execute(body)?;
        let result = read_whole(&pool, response);
        if result.is_err() {
            conn.discard();
        }
        result
    }

    /// Sends the request (with `body`, possibly empty) and returns the response with its
    /// body unread, for server-sent events and large downloads. The connection stays checked
    /// out until the [`StreamingResponse`] is dropped; a body dropped before its end closes
    /// the socket instead of reusing it.
    ///
    /// # Errors
    /// As [`RequestBuilder::call`].
    pub fn stream(self, body: &[u8]) -> Result<StreamingResponse, Error> {
        let service = self.pool.core.name.clone();
        let (conn, response) = self.execute(body)?;
        let (parts, body) = response.into_parts();
        Ok(StreamingResponse {
            status: parts.status.as_u16(),
            headers: header_pairs(&parts.headers),
            reader: io::BufReader::with_capacity(8 * 1024, body.into_reader()),
            service,
            _conn: conn,
        })
    }

    fn idempotent(&self) -> bool {
        matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }

    /// Checks out a connection and sends; retries a stale-connection failure once on a
    /// fresh connection when the method is idempotent.
    fn execute(
        self,
        body: &[u8],
    ) -> Result<(HttpConnection, ureq::http::Response<ureq::Body>), Error> {
        let pool = &self.pool;
        let wait = self.wait.unwrap_or(pool.core.timeouts.wait);
        let conn = pool.checkout(wait, !self.probe)?;
        let counters = pool.counters();
        let mut retried = false;
        loop {
            match self.send_once(&conn, body) {
                Ok(response) => {
                    counters.requests.fetch_add(1, Relaxed);
                    if !self.probe {
                        pool.core.health.success();
                    }
                    return Ok((conn, response));
                }
                Err(e) => {
                    let err = classify(pool, e);
                    let stale = matches!(
                        err,
                        Error::ConnectionClosed {
                            phase: Phase::Send | Phase::Receive,
                            ..
                        }
                    );
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

    fn send_once(
        &self,
        conn: &HttpConnection,
        body: &[u8],
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let pool = &self.pool;
        let mut request = ureq::http::Request::builder()
            .method(self.method.as_str())
            .uri(format!("{}{}", pool.base, self.path));
        for h in &pool.core.headers {
            request = request.header(h.name.as_str(), h.value.as_str());
        }
        for (k, v) in &self.headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let request = request.body(body)?;
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
}

fn read_whole(
    pool: &HttpPool,
    response: ureq::http::Response<ureq::Body>,
) -> Result<Response, Error> {
    let (parts, mut body) = response.into_parts();
    let bytes = body
        .with_config()
        .limit(pool.config.max_body_bytes)
        .read_to_vec()
        .map_err(|e| {
            let err = classify(pool, e);
            pool.failed(&err, true);
            err
        })?;
    Ok(Response {
        status: parts.status.as_u16(),
        headers: header_pairs(&parts.headers),
        body: bytes,
        service: pool.core.name.clone(),
    })
}

fn header_pairs(headers: &ureq::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Maps a ureq error onto this crate's phases and classes.
fn classify(pool: &HttpPool, e: ureq::Error) -> Error {
    use ureq::Timeout as T;
    let service = pool.core.name.clone();
    let t = pool.core.timeouts;
    match e {
        ureq::Error::Timeout(which) => {
            let (phase, after) = match which {
                T::Resolve | T::Connect => (Phase::Connect, t.connect),
                T::SendRequest | T::SendBody | T::Await100 | T::PerWrite => {
                    (Phase::Send, t.request)
                }
                T::RecvResponse => (Phase::Receive, t.request),
                T::RecvBody | T::PerRead => (Phase::Read, t.read_idle),
                _ => (Phase::Receive, t.request),
            };
            Error::Timeout {
                service,
                phase,
                after,
            }
        }
        ureq::Error::Io(io) if is_tls_failure(&io) => Error::Transport {
            // rustls handshakes lazily, on the first read or write: still the connect phase.
            service,
            phase: Phase::Connect,
            source: Box::new(io),
        },
        ureq::Error::Io(io) => {
            use io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused
                | K::AddrNotAvailable
                | K::HostUnreachable
                | K::NetworkUnreachable => Error::Transport {
                    service,
                    phase: Phase::Connect,
                    source: Box::new(io),
                },
                K::ConnectionReset
                | K::ConnectionAborted
                | K::UnexpectedEof
                | K::BrokenPipe
                | K::NotConnected => Error::ConnectionClosed {
                    service,
                    phase: Phase::Receive,
                    source: io,
                },
                K::TimedOut | K::WouldBlock => Error::Timeout {
                    service,
                    phase: Phase::Read,
                    after: t.read_idle,
                },
                _ => Error::Transport {
                    service,
                    phase: Phase::Receive,
                    source: Box::new(io),
                },
            }
        }
        ureq::Error::BodyExceedsLimit(limit) => Error::TooLarge {
            service,
            what: "response body",
            limit,
        },
        ureq::Error::LargeResponseHeader(_, limit) => Error::TooLarge {
            service,
            what: "response head",
            limit: limit as u64,
        },
        e @ (ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Tls(_)
        | ureq::Error::Pem(_)
        | ureq::Error::Rustls(_)) => Error::Transport {
            service,
            phase: Phase::Connect,
            source: Box::new(e),
        },
        e => Error::Transport {
            service,
            phase: Phase::Receive,
            source: Box::new(e),
        },
    }
}

/// An I/O error carrying a rustls error (certificate, name, handshake).
fn is_tls_failure(io: &io::Error) -> bool {
    io.get_ref()
        .is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some())
}

/// An error and its sources on one line (for health records and logs).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A whole response: status, headers and body.
#[derive(Clone)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    service: String,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All headers, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

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
/// server-sent events). Holds its pooled connection until dropped.
pub struct StreamingResponse {
    status: u16,
    headers: Vec<(String, String)>,
    reader: io::BufReader<ureq::BodyReader<'static>>,
    service: String,
    // Dropped after the reader: the socket is back in the agent before the item returns.
    _conn: HttpConnection,
}

impl StreamingResponse {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl StreamingResponse {
    /// All headers, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
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
    /// terminator). Read them, waiting at most `DRAIN_WAIT` per read, so the connection can
    /// be reused; a stream with more than that left is closed.
    fn drop(&mut self) {
        let wire = Arc::clone(&self._conn.item().wire);
        wire.draining.store(true, Relaxed);
        let _ = io::copy(&mut (&mut self.reader).take(DRAIN_BYTES), &mut io::sink());
        wire.draining.store(false, Relaxed);
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
        self.reader.read(buf).map_err(timed_out_kind)
    }
}

impl BufRead for StreamingResponse {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.reader.fill_buf().map_err(timed_out_kind)
    }
    fn consume(&mut self, amt: usize) {
        self.reader.consume(amt)
    }
}
