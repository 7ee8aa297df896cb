//! HTTP pools: r2d2 over ureq, one pooled item per keep-alive TCP connection.
//!
//! Each pooled item is a `ureq::Agent` whose own pool holds at most one idle connection, and
//! an item is used by one caller at a time, so `max_connections` items mean at most
//! `max_connections` TCP connections. Under ureq sit this crate's own resolver, connector
//! and transport (`transport`): they count every real TCP connect and close, keep requests
//! on the service's origin, and run every socket operation against its deadline. In front
//! of r2d2 sits the pool core's gate (`crate::pool`, whose docs say what r2d2 does here and
//! what the gate adds): callers get permits in arrival order, wake on shutdown, and time out
//! with the pool state; holding a permit, r2d2 always has an idle item or room to create one.
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

mod body;
mod classify;
mod multipart;
mod request;
mod response;
mod send;
mod transport;
mod validate;

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::HttpPoolConfig;
use crate::error::{Error, ErrorClass, PoolKind, PoolState};
use crate::lease::Lease;
use crate::pool::{Admitted, Leased, PoolCore};
use crate::service::ServiceContext;
use crate::slots::Slots;
use crate::stats::{CloseCause, PoolCounters, PoolStats};

pub use multipart::{Form, Part};
pub use request::{HttpClient, RequestBuilder};
pub use response::{Download, Progress, Response, StreamingResponse};
use transport::{AgentFactory, AgentParts, PooledAgent, Wire};

/// A service's HTTP pool: the pool core's gate (permits only), then r2d2, which holds the
/// items.
pub(crate) struct HttpPool {
    pub(crate) core: PoolCore<()>,
    pub(crate) config: HttpPoolConfig,
    parts: Arc<AgentParts>,
    r2d2: r2d2::Pool<AgentFactory>,
    /// Stream turns: held by each [`StreamingResponse`] (and while it waits for a connection).
    streams: Slots<()>,
    base: String,
    service_headers: validate::ServiceHeaders,
}

impl HttpPool {
    pub(crate) fn new(
        service: Arc<ServiceContext>,
        config: HttpPoolConfig,
        threads: Arc<scheduled_thread_pool::ScheduledThreadPool>,
    ) -> HttpPool {
        let core = PoolCore::new(service, PoolKind::Http, config.max_connections as usize);
        let t = core.timeouts;
        let tls = core.tls.as_ref().map(|tls| tls.ureq.clone());
        let parts = Arc::new(AgentParts {
            agent_config: agent_config(&config, &t, tls),
            counters: Arc::clone(&core.counters),
            leases: core.leases.clone(),
            lifetime: t.lifetime,
            origin: (core.endpoint.host.clone(), core.endpoint.port),
            tls: core.tls.as_ref().map(|tls| Arc::clone(&tls.rustls)),
        });
        // What r2d2 is told not to do, and why: `crate::pool`'s docs.
        let r2d2 = r2d2::Pool::builder()
            .max_size(config.max_connections)
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
            streams: Slots::new(config.stream_cap() as usize),
            core,
            config,
            parts,
            r2d2,
        }
    }

    pub(crate) fn counters(&self) -> &PoolCounters {
        &self.core.counters
    }

    /// Occupancy in TCP connections: `idle` counts open sockets not checked out (pool items
    /// without a socket are free to create and not counted); `waiting` counts callers waiting
    /// for a connection and streams waiting for their turn.
    pub(crate) fn state(&self) -> PoolState {
        let mut state = self.core.state();
        state.waiting += self.streams.occupancy().waiting;
        state
    }

    pub(crate) fn stats(&self) -> PoolStats {
        self.core.stats(self.state())
    }

    /// Checks out a pooled connection through the pool core (health gate, a permit in
    /// arrival order), then takes the r2d2 item. `gate: false` skips the fail-fast check
    /// (health probes must reach an unhealthy service).
    pub(crate) fn checkout(
        self: &Arc<Self>,
        wait: Duration,
        gate: bool,
    ) -> Result<HttpConnection, Error> {
        self.checkout_cancellable(wait, gate, None)
    }

    /// [`HttpPool::checkout`] whose wait for a permit ends when `cancel` is cancelled.
    pub(crate) fn checkout_cancellable(
        self: &Arc<Self>,
        wait: Duration,
        gate: bool,
        cancel: Option<&crate::cancel::CancelToken>,
    ) -> Result<HttpConnection, Error> {
        let item = self
            .core
            .checkout(wait, gate, cancel, |admitted| self.take_item(admitted))?;
        Ok(HttpConnection {
            item: Some(item),
            pool: Arc::clone(self),
        })
    }

    /// Holding a permit, r2d2 has an idle item or room for one (`crate::pool`). An idle one
    /// is the common case and needs no clock read; creating one waits briefly on r2d2's
    /// worker.
    fn take_item(&self, admitted: Admitted<()>) -> Result<Item, Error> {
        if let Some(item) = self.r2d2.try_get() {
            return Ok(item);
        }
        let remaining = admitted
            .deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.r2d2
            .get_timeout(remaining)
            .map_err(|_| self.core.pool_timeout(admitted.start, self.state()))
    }

    /// A stream's turn, before it checks out a connection: waits in arrival order until fewer
    /// than `stream_cap` streams are open, at most until `start + wait`. The wait timeout's
    /// state counts streams (open, waiting, the cap as `max`).
    pub(crate) fn stream_turn(
        self: &Arc<Self>,
        start: Instant,
        wait: Duration,
        gate: bool,
        cancel: Option<&crate::cancel::CancelToken>,
    ) -> Result<StreamTurn, Error> {
        self.core
            .take_turn(&self.streams, start, wait, gate, cancel)?;
        Ok(StreamTurn {
            pool: Arc::clone(self),
        })
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

    /// Maintenance: closes sockets idle past the keep-alive limit, drops items idle past
    /// `idle_timeout` beyond the minimum or past their lifetime. Borrows idle items with
    /// maintenance permits, so it never takes a connection a caller is waiting for.
    pub(crate) fn maintain(&self, now: Instant) {
        let idle = self.r2d2.state().idle_connections as usize;
        let mut borrowed = Vec::with_capacity(idle);
        for _ in 0..idle {
            if self.core.slots.try_tend().is_none() {
                break;
            }
            match self.r2d2.try_get() {
                Some(item) => borrowed.push(item),
                None => {
                    self.core.slots.release_tended(None);
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
                item.lease
                    .set_interrupt(crate::lease::Interrupt::Agent(item.agent.clone()));
                let old_wire = std::mem::replace(&mut item.wire, wire);
                self.counters()
                    .closed(CloseCause::Idle, old_wire.sockets.load(Relaxed) as u64);
                drop(old);
            }
        }
        // Return in reverse so r2d2's LIFO stack keeps its order (warm sockets on top).
        for item in borrowed.into_iter().rev() {
            drop(item);
            self.core.slots.release_tended(None);
        }
        // Shut down meanwhile: `close` drained r2d2's idle items without the ones borrowed
        // here. Checked after returning them (r2d2's lock orders the two), close them now.
        if self.core.is_closed() {
            self.close_idle();
        }
        self.core.report_leaks(now);
    }

    /// Health probe: `GET` (or `HEAD` for `/`) the health path through a pooled connection,
    /// all within `t` (`health_timeout_ms` for maintenance; the wait for the connection
    /// included). Skipped (`None`) when every connection is busy. Shutdown interrupts it: the
    /// connection's agent is registered with the service's `Aborts` while the request runs.
    pub(crate) fn probe(self: &Arc<Self>, path: &str, t: Duration) -> Option<Result<(), String>> {
        let deadline = crate::clock::deadline(Instant::now(), t);
        let _ = self.core.slots.try_tend()?;
        self.core.slots.release_tended(None);
        let conn = match self.checkout(t, false) {
            Ok(conn) => conn,
            Err(e) => return Some(Err(e.chain().to_string())),
        };
        let agent = conn.agent();
        let _abort = self.core.aborts.watch_agent(agent);
        // Probes are not callers' traffic: no request counted, and a connection the probe
        // opens is counted apart (left out of the reuse rate).
        let wire = &conn.item().wire;
        wire.probing.store(true, Relaxed);
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
                    let status = response.status().as_u16();
                    // Read to the end, so the connection can be reused.
                    let mut body = response.into_body();
                    let read = body.with_config().limit(self.config.max_body_bytes);
                    match read.read_to_vec() {
                        Ok(body) if status < 500 => {
                            self.core.probed_body(path, &body);
                            break Ok(());
                        }
                        Ok(_) => break Err(format!("{method} {path} answered {status}")),
                        Err(e) => classify::classify(self, e, &classify::Limits::service(self)),
                    }
                }
                Err(ureq::Error::Timeout(_)) => {
                    broken = true;
                    let which = if t == self.core.timeouts.health {
                        "health_timeout_ms"
                    } else {
                        "the probe's deadline"
                    };
                    break Err(format!("{method} {path}: no answer within {t:?} ({which})"));
                }
                Err(e) => classify::classify(self, e, &classify::Limits::service(self)),
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
        wire.probing.store(false, Relaxed);
        if broken {
            conn.discard();
        }
        Some(outcome)
    }

    /// Shutdown: no new checkouts, waiters (streams waiting for their turn too) wake; idle
    /// sockets close now, busy ones when returned.
    pub(crate) fn close(&self) {
        self.core.close();
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
        self.core.in_use()
    }
}

/// The configuration of every agent of a pool: one keep-alive connection, no redirects, no
/// proxy, and a deadline for every phase (the resolver's too: without one, a DNS lookup
/// that never answers would hold the request forever).
fn agent_config(
    config: &HttpPoolConfig,
    t: &crate::service::Timeouts,
    tls: Option<ureq::tls::TlsConfig>,
) -> ureq::config::Config {
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
        .timeout_resolve(Some(t.connect))
        .timeout_connect(Some(t.connect))
        .timeout_send_request(Some(t.request))
        .timeout_send_body(Some(t.request))
        .timeout_recv_response(Some(t.request))
        .timeout_per_read(Some(t.read_idle));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls);
    }
    builder.build()
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
/// pool is shut down, it is closed instead. Holding one reserves a place under the pool's cap;
/// requests go through [`HttpClient`]'s builders.
#[must_use = "the connection returns to the pool when dropped"]
pub struct HttpConnection {
    item: Option<r2d2::PooledConnection<AgentFactory>>,
    pool: Arc<HttpPool>,
}

impl HttpConnection {
    fn item(&self) -> &PooledAgent {
        self.item.as_ref().expect("item present until drop")
    }

    /// **Unstable** (feature `unstable-raw`, outside semver: the type is ureq's and changes
    /// with it; see the crate docs, "Stability"). The ureq agent bound to this connection.
    /// Requests made with it reuse the pooled socket; run one at a time, and read each body
    /// to the end, or the socket is not reused. Don't keep a clone: used after the connection
    /// returns, it would share a pooled socket with the next caller, past the pool's cap.
    #[cfg(feature = "unstable-raw")]
    pub fn agent(&self) -> &ureq::Agent {
        &self.item().agent
    }

    /// The agent bound to this connection (public with the `unstable-raw` feature only).
    #[cfg(not(feature = "unstable-raw"))]
    pub(crate) fn agent(&self) -> &ureq::Agent {
        &self.item().agent
    }

    /// The service's base URL (`http://host:port[/prefix]`).
    pub fn base_url(&self) -> &str {
        &self.pool.base
    }

    /// Closes the connection instead of returning it (after an error seen by the caller).
    pub fn discard(mut self) {
        self.mark_broken();
    }

    /// Closes the connection when it comes back (a cancelled call left it half-used).
    pub(crate) fn mark_broken(&mut self) {
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
                } else if self.pool.core.is_closed() {
                    item.close = Some(CloseCause::Shutdown);
                } else if item.expires <= item.last_used {
                    item.close = Some(CloseCause::Lifetime);
                }
            }
            drop(item);
            if self.pool.core.is_closed() {
                // Shutdown may have emptied r2d2's idle list between the check above and
                // this return: close what is idle now, this item included.
                self.pool.close_idle();
            }
            self.pool.core.release(None);
        }
    }
}

/// An item out of r2d2.
type Item = r2d2::PooledConnection<AgentFactory>;

impl Leased for Item {
    fn lease(&self) -> &Lease {
        &self.lease
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_of_an_agent_has_a_deadline_resolving_included() {
        let config = crate::ServiceConfig::new("svc", "http://127.0.0.1:1");
        let t = crate::service::ServiceContext::new(&config, &config.url)
            .unwrap()
            .timeouts;
        let agent = agent_config(&HttpPoolConfig::default(), &t, None);
        let timeouts = agent.timeouts();
        assert_eq!(
            timeouts.resolve,
            Some(t.connect),
            "a DNS lookup without a deadline"
        );
        assert_eq!(timeouts.connect, Some(t.connect));
        assert_eq!(timeouts.send_request, Some(t.request));
        assert_eq!(timeouts.send_body, Some(t.request));
        assert_eq!(timeouts.recv_response, Some(t.request));
        assert_eq!(agent.timeout_per_read(), Some(t.read_idle));
    }
}
