//! Routing among a service's endpoints, when it lists several (`urls`).
//!
//! A service with one URL has no [`Route`]: its callers reach its pools exactly as before,
//! through the same `Arc` clone under the registry's read lock; nothing here runs. With
//! several endpoints, each has its own context (health, last connect error, blocked I/O)
//! and pools, and each call picks one:
//!
//! * **Stateless calls** ([`Route::pick_http`], [`Route::pick_ws`]): among the endpoints
//!   not unhealthy and not closed, the one with the least work in flight (connections
//!   checked out plus callers waiting); ties go round a rotating start, so an idle
//!   service spreads its calls too. Reading an endpoint's load takes its gate's mutex for
//!   a moment: the cost of choosing, paid only by services with several endpoints.
//! * **Every endpoint unhealthy**: the first is returned, and its health gate fails fast
//!   with [`Error::ServiceUnavailable`](crate::Error::ServiceUnavailable) naming the
//!   service and that endpoint's last error, as a one-URL service fails.
//! * **A retry elsewhere** ([`Route::other_http`]): a repeatable request (GET, HEAD,
//!   OPTIONS, a body in memory) whose connection failed before any response byte (refused,
//!   or closed without a byte) is sent once more, on another healthy endpoint; never a
//!   POST, and never after a response byte (`crate::http`'s send path).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crate::health::HealthState;
use crate::http::HttpPool;
use crate::ws::WsPool;

/// A service's pools, one per endpoint in configuration order, for picking per call.
pub(crate) struct Route {
    http: Box<[Arc<HttpPool>]>,
    ws: Box<[Arc<WsPool>]>,
    /// Where the next pick starts looking (ties go to the first seen).
    next: AtomicUsize,
}

impl Route {
    pub(crate) fn new(http: Vec<Arc<HttpPool>>, ws: Vec<Arc<WsPool>>) -> Route {
        Route {
            http: http.into(),
            ws: ws.into(),
            next: AtomicUsize::new(0),
        }
    }

    /// The HTTP pool for a stateless call (see the module docs).
    pub(crate) fn pick_http(&self) -> Option<&Arc<HttpPool>> {
        self.least(&self.http, None, http_load)
            .or_else(|| self.http.first())
    }

    /// Another endpoint's HTTP pool than `failed`'s, healthy, for a retry; `None` if none.
    pub(crate) fn other_http(&self, failed: &Arc<HttpPool>) -> Option<&Arc<HttpPool>> {
        self.least(&self.http, Some(failed), http_load)
    }

    /// The WebSocket pool for a lease (see the module docs).
    pub(crate) fn pick_ws(&self) -> Option<&Arc<WsPool>> {
        self.least(&self.ws, None, ws_load)
            .or_else(|| self.ws.first())
    }

    /// The pool of `pools` with the least load, `avoid` and those `load` rules out aside.
    fn least<'a, P>(
        &self,
        pools: &'a [Arc<P>],
        avoid: Option<&Arc<P>>,
        load: fn(&P) -> Option<usize>,
    ) -> Option<&'a Arc<P>> {
        let n = pools.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Relaxed);
        let mut best: Option<(&Arc<P>, usize)> = None;
        for i in 0..n {
            let pool = &pools[(start.wrapping_add(i)) % n];
            if avoid.is_some_and(|a| Arc::ptr_eq(a, pool)) {
                continue;
            }
            let Some(work) = load(pool) else { continue };
            if best.map_or(true, |(_, least)| work < least) {
                best = Some((pool, work));
            }
        }
        best.map(|(pool, _)| pool)
    }
}

/// Work in flight at an HTTP pool; `None` while its endpoint is unhealthy or it is closed.
fn http_load(pool: &HttpPool) -> Option<usize> {
    if pool.core.health.state() == HealthState::Unhealthy || pool.core.is_closed() {
        return None;
    }
    let occ = pool.core.slots.occupancy();
    Some(occ.in_use + occ.waiting)
}

/// Leases out and waiting at a WebSocket pool; `None` while unhealthy or closed.
fn ws_load(pool: &WsPool) -> Option<usize> {
    if pool.core.health.state() == HealthState::Unhealthy || pool.core.is_closed() {
        return None;
    }
    let occ = pool.core.slots.occupancy();
    Some(occ.in_use + occ.waiting)
}
