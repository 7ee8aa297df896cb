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
//! Stale keep-alive connections: ureq probes a pooled socket (a non-blocking read, no round
//! trip) before reusing it and never reuses one idle longer than `keepalive_idle_ms`; if a
//! request still fails with the connection closed before any response byte, a GET or HEAD is
//! retried once on a fresh connection, anything else returns [`Error::ConnectionClosed`].

mod request;
mod response;
mod transport;
pub(crate) mod validate;

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{error_chain, Error, ErrorClass, PoolKind, PoolState};
use crate::lease::LeaseRegistry;
use crate::service::ServiceCore;
use crate::slots::{AcquireError, Slots};
use crate::stats::{CloseCause, PoolCounters, PoolStats};
use crate::HttpPoolConfig;

pub use request::{HttpClient, RequestBuilder};
pub use response::{Response, StreamingResponse};
use transport::{HttpConn, Manager, Shared, Wire};

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
