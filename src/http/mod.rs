//! HTTP pools: r2d2 over ureq, one pooled item per keep-alive TCP connection.
//!
//! Each pooled item is a `ureq::Agent` whose own pool holds at most one idle connection, and
//! an item is used by one caller at a time, so `max_connections` items mean at most
//! `max_connections` TCP connections. Under ureq sit this crate's own resolver, connector
//! and transport (`transport`): they count every real TCP connect and close, keep requests
//! on the service's origin, and run every socket operation against its deadline. In front
//! of r2d2 sits a [`Slots`] gate: callers get permits in arrival order, wake on shutdown, and
//! time out with the pool state; holding a permit, r2d2 always has an idle item or room to
//! create one.
//!
//! Streams: a streaming response may hold its connection for minutes (a queued Gradio job's
//! SSE stream is open while the job waits its turn). A second `Slots` gate, sized
//! `stream_cap()`, admits streams before they queue for a connection, so streams hold at most
//! `stream_cap` connections and short calls always find the other `max - stream_cap`. Short
//! calls never touch that gate: their checkout costs the same.
//!
//! Stale keep-alive connections: ureq probes a pooled socket (a non-blocking read, no round
//! trip) before reusing it and never reuses one idle longer than `keepalive_idle_ms`; if a
//! request still fails with the connection closed before any response byte, a GET or HEAD is
//! retried once on a fresh connection, anything else returns [`Error::ConnectionClosed`].

mod classify;
mod request;
mod response;
mod transport;
mod validate;

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::HttpPoolConfig;
use crate::error::{Error, ErrorClass, PoolKind, PoolState};
use crate::lease::LeaseRegistry;
use crate::service::ServiceContext;
use crate::slots::{AcquireError, Permit, Slots};
use crate::stats::{CloseCause, PoolCounters, PoolStats};

pub use request::{HttpClient, RequestBuilder};
pub use response::{Response, StreamingResponse};
use transport::{AgentFactory, AgentParts, PooledAgent, Wire};

/// A service's HTTP pool.
pub(crate) struct HttpPool {
    pub(crate) core: Arc<ServiceContext>,
    pub(crate) config: HttpPoolConfig,
    parts: Arc<AgentParts>,
    r2d2: r2d2::Pool<AgentFactory>,
    slots: Slots<()>,
    /// Stream turns: held by each [`StreamingResponse`] (and while it waits for a connection).
    streams: Slots<()>,
    base: String,
    service_headers: validate::ServiceHeaders,
}

impl HttpPool {
    pub(crate) fn new(
        core: Arc<ServiceContext>,
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
        let parts = Arc::new(AgentParts {
            agent_config: builder.build(),
            counters: Arc::new(PoolCounters::default()),
            leases: LeaseRegistry::default(),
            lifetime: t.lifetime,
            origin: (core.endpoint.host.clone(), core.endpoint.port),
            tls: core.tls.as_ref().map(|tls| Arc::clone(&tls.rustls)),
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
            .build_unchecked(AgentFactory(Arc::clone(&parts)));
        HttpPool {
            base: core.endpoint.http_base(),
            service_headers: validate::ServiceHeaders::new(
                &core.headers,
                config.output_buffer_bytes,
            ),
            slots: Slots::new(config.max_connections as usize),
            streams: Slots::new(config.stream_cap() as usize),
            core,
            config,
            parts,
            r2d2,
        }
    }

    pub(crate) fn counters(&self) -> &PoolCounters {
        &self.parts.counters
    }

    /// Occupancy in TCP connections: `idle` counts open sockets not checked out (pool items
    /// without a socket are free to create and not counted); `waiting` counts callers waiting
    /// for a connection and streams waiting for their turn.
    pub(crate) fn state(&self) -> PoolState {
        let occ = self.slots.occupancy();
        let open = self.counters().open();
        PoolState {
            in_use: occ.in_use,
            idle: open.saturating_sub(occ.in_use),
            waiting: occ.waiting + self.streams.occupancy().waiting,
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
        let deadline = crate::clock::deadline(start, wait);
        match self.slots.acquire(deadline) {
            Ok(_) => {}
            Err(AcquireError::Closed) => return Err(self.shutting_down()),
            Err(AcquireError::Timeout(seen)) => {
                let mut state = self.state();
                state.waiting = seen.waiting;
                return Err(self.timeout(start, state));
            }
        }
        let permit = Permit::new(&self.slots);
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
            Ok(item) => {
                permit.keep();
                Ok(HttpConnection {
                    item: Some(item),
                    pool: Arc::clone(self),
                })
            }
            Err(_) => {
                drop(permit);
                Err(self.timeout(start, self.state()))
            }
        }
    }

    /// A stream's turn, before it checks out a connection: waits in arrival order until fewer
    /// than `stream_cap` streams are open, at most until `start + wait`. The wait timeout's
    /// state counts streams (open, waiting, the cap as `max`).
    pub(crate) fn stream_turn(
        self: &Arc<Self>,
        start: Instant,
        wait: Duration,
        gate: bool,
    ) -> Result<StreamTurn, Error> {
        let result = self.stream_turn_inner(start, wait, gate);
        if let Err(e) = &result {
            self.counters().error(e.class());
        }
        result
    }

    fn stream_turn_inner(
        self: &Arc<Self>,
        start: Instant,
        wait: Duration,
        gate: bool,
    ) -> Result<StreamTurn, Error> {
        if gate {
            self.core.health.gate()?;
        }
        match self.streams.acquire(crate::clock::deadline(start, wait)) {
            Ok(_) => Ok(StreamTurn {
                pool: Arc::clone(self),
            }),
            Err(AcquireError::Closed) => Err(self.shutting_down()),
            Err(AcquireError::Timeout(seen)) => Err(self.timeout(
                start,
                PoolState {
                    in_use: seen.in_use,
                    idle: 0,
                    waiting: seen.waiting,
                    max: self.streams.max(),
                },
            )),
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
            self.core.connection_failed(class, err.chain().to_string());
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
    /// maintenance permits, so it never takes a connection a caller is waiting for.
    pub(crate) fn maintain(&self, now: Instant) {
        let idle = self.r2d2.state().idle_connections as usize;
        let mut borrowed = Vec::with_capacity(idle);
        for _ in 0..idle {
            if self.slots.try_tend().is_none() {
                break;
            }
            match self.r2d2.try_get() {
                Some(item) => borrowed.push(item),
                None => {
                    self.slots.release_tended(None);
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
                let old = std::mem::replace(&mut item.agent, self.parts.new_agent(&wire));
                let old_wire = std::mem::replace(&mut item.wire, wire);
                self.counters()
                    .closed(CloseCause::Idle, old_wire.sockets.load(Relaxed) as u64);
                drop(old);
            }
        }
        // Return in reverse so r2d2's LIFO stack keeps its order (warm sockets on top).
        for item in borrowed.into_iter().rev() {
            drop(item);
            self.slots.release_tended(None);
        }
        // Shut down meanwhile: `close` drained r2d2's idle items without the ones borrowed
        // here. Checked after returning them (r2d2's lock orders the two), close them now.
        if self.slots.is_closed() {
            self.close_idle();
        }
        self.report_leaks(now);
    }

    fn report_leaks(&self, now: Instant) {
        for leak in self.parts.leases.scan(self.core.timeouts.leak, now) {
            self.counters().leaks_detected.fetch_add(1, Relaxed);
            log::warn!(target: "backend_pool",
                "service '{}': HTTP connection held for {:?} by thread '{}' (leak threshold {:?})",
                self.core.name, leak.held, leak.thread, self.core.timeouts.leak);
        }
    }

    /// Health probe: `GET` (or `HEAD` for `/`) the health path through a pooled connection,
    /// all within the probe's own deadline (the wait for the connection included). Skipped
    /// (`None`) when every connection is busy. Shutdown interrupts it: the connection's agent
    /// is registered with the service's `Aborts` while the request runs.
    pub(crate) fn probe(self: &Arc<Self>, path: &str) -> Option<Result<(), String>> {
        let t = self.core.timeouts.health;
        let deadline = Instant::now() + t;
        let _ = self.slots.try_tend()?;
        self.slots.release_tended(None);
        let conn = match self.checkout(t, false) {
            Ok(conn) => conn,
            Err(e) => return Some(Err(e.chain().to_string())),
        };
        let agent = conn.agent();
        let _abort = self.core.aborts.watch_agent(agent);
        let method = if path == "/" { "HEAD" } else { "GET" };
        let (mut retried, mut broken) = (false, false);
        let outcome = loop {
            let mut request = ureq::http::Request::builder()
                .method(method)
                .uri(format!("{}{path}", self.base));
            for h in &self.core.headers {
                request = request.header(h.name.as_str(), h.value.as_str());
            }
            let request = match request.body(()) {
                Ok(request) => request,
                Err(e) => break Err(format!("{method} {path}: {e}")),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let request = agent.configure_request(request).timeout_global(Some(left));
            let err = match agent.run(request.build()) {
                Ok(response) => {
                    self.counters().requests.fetch_add(1, Relaxed);
                    let status = response.status().as_u16();
                    // Read to the end, so the connection can be reused.
                    let mut body = response.into_body();
                    let read = body.with_config().limit(self.config.max_body_bytes);
                    match read.read_to_vec() {
                        Ok(_) if status < 500 => break Ok(()),
                        Ok(_) => break Err(format!("{method} {path} answered {status}")),
                        Err(e) => classify::classify(self, e),
                    }
                }
                Err(ureq::Error::Timeout(_)) => {
                    broken = true;
                    break Err(format!(
                        "{method} {path}: no answer within {t:?} (health_timeout_ms)"
                    ));
                }
                Err(e) => classify::classify(self, e),
            };
            // A keep-alive connection the server closed meanwhile: once more on a fresh one.
            if !retried && matches!(err, Error::ConnectionClosed { .. }) {
                retried = true;
                self.counters().retries.fetch_add(1, Relaxed);
                continue;
            }
            self.failed(&err, false);
            broken = true;
            break Err(err.chain().to_string());
        };
        if broken {
            conn.discard();
        }
        Some(outcome)
    }

    /// Shutdown: no new checkouts, waiters (streams waiting for their turn too) wake; idle
    /// sockets close now, busy ones when returned.
    pub(crate) fn close(&self) {
        self.slots.close();
        self.streams.close();
        self.close_idle();
    }

    /// Closes every item idle in r2d2 (after `close`). An item returned concurrently either
    /// is in r2d2's idle list when this looks, or its returner sees the closed flag
    /// afterwards and calls this again: both go through r2d2's lock, which orders them.
    fn close_idle(&self) {
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

/// A stream's turn (see [`HttpPool::stream_turn`]); given back when dropped, whatever the
/// path: stream ended or dropped, request failed, caller panicked.
pub(crate) struct StreamTurn {
    pool: Arc<HttpPool>,
}

impl Drop for StreamTurn {
    fn drop(&mut self) {
        self.pool.streams.release(None);
    }
}

/// A connection checked out of an HTTP pool. It returns on drop; after a panic, or once the
/// pool is shut down, it is closed instead.
#[must_use = "the connection returns to the pool when dropped"]
pub struct HttpConnection {
    item: Option<r2d2::PooledConnection<AgentFactory>>,
    pool: Arc<HttpPool>,
}

impl HttpConnection {
    fn item(&self) -> &PooledAgent {
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
            if self.pool.slots.is_closed() {
                // Shutdown may have emptied r2d2's idle list between the check above and
                // this return: close what is idle now, this item included.
                self.pool.close_idle();
            }
            self.pool.slots.release(None);
        }
    }
}
