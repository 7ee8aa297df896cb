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
//! * **Jobs** ([`Session`], `PoolManager::session`): a job whose parts must meet on one
//!   machine (a ComfyUI prompt, its `client_id` WebSocket events, its `/view` outputs) pins
//!   every call to the endpoint chosen when the session begins: among the healthy ones (the
//!   degraded if none is; never an unhealthy one but when all are), the one with the least
//!   load, load being the sessions pinned to it plus the queue
//!   length its server reported at its last health probe (ComfyUI's
//!   `exec_info.queue_remaining`, when the `health_path` is `/prompt`). It is chosen once,
//!   never per request.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::cancel::CancelToken;
use crate::error::{Error, PoolKind};
use crate::health::HealthState;
use crate::http::{HttpClient, HttpPool};
use crate::registry::{Member, Service};
use crate::service::ServiceContext;
use crate::ws::{WsGuard, WsPool};

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

    /// Where a choice starts looking, turning with each choice (ties take turns).
    fn start(&self) -> usize {
        self.next.fetch_add(1, Relaxed)
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
        let start = self.start();
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

/// A job's handle on one endpoint of a service: every HTTP call and WebSocket lease taken
/// through it goes to that endpoint, chosen once when the session began (see
/// [`PoolManager::session`](crate::PoolManager::session)). Cheap to clone; the clones share
/// the pin, which ends when the last is dropped. Usable from any thread.
///
/// ```no_run
/// # fn main() -> Result<(), backend_pool::Error> {
/// # let manager = backend_pool::PoolManager::new(backend_pool::ManagerConfig::default())?;
/// let job = manager.session("comfyui")?; // one machine for the whole job
/// let mut events = job.websocket()?; // its client_id's events come from that machine
/// let body = serde_json::json!({"prompt": {}, "client_id": events.client_id()});
/// job.http()?.post("/prompt").send_json(&body)?;
/// // ... read events until the prompt is done, then fetch its outputs from the same machine:
/// let image = job.http()?.get("/view?filename=out.png").call()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    pin: Arc<Pin>,
}

/// The endpoint a session is pinned to; counted in its `sessions` while it lives.
struct Pin {
    core: Arc<ServiceContext>,
    http: Option<Arc<HttpPool>>,
    ws: Option<Arc<WsPool>>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.core.sessions.fetch_sub(1, Relaxed);
    }
}

impl Session {
    /// Pins a new session of `service` to its least loaded endpoint not unhealthy (see
    /// the module docs); with every endpoint unhealthy, to the first, whose calls then fail
    /// fast as a one-URL service's do.
    pub(crate) fn begin(service: &Service) -> Session {
        let n = service.endpoints.len();
        let start = service.route.as_ref().map_or(0, |r| r.start());
        // A degraded endpoint (a recent failure, below the threshold) only when no
        // endpoint is healthy: a job pinned to a dying machine would fail whole.
        let mut best: Option<(&Member, (bool, u64))> = None;
        for i in 0..n {
            let member = &service.endpoints[start.wrapping_add(i) % n];
            let state = member.core.health.state();
            if state == HealthState::Unhealthy {
                continue;
            }
            let load = (
                state != HealthState::Healthy,
                // Saturating: the queue length is the server's word, up to u64::MAX - 1.
                (member.core.sessions.load(Relaxed) as u64)
                    .saturating_add(member.core.queue_remaining().unwrap_or(0)),
            );
            if best.map_or(true, |(_, least)| load < least) {
                best = Some((member, load));
            }
        }
        // None healthy: the first endpoint (the service's `core`, `http`, `ws`).
        let (core, http, ws) = match best {
            Some((m, _)) => (&m.core, &m.http, &m.ws),
            None => (&service.core, &service.http, &service.ws),
        };
        core.sessions.fetch_add(1, Relaxed);
        Session {
            pin: Arc::new(Pin {
                core: Arc::clone(core),
                http: http.clone(),
                ws: ws.clone(),
            }),
        }
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.pin.core.name
    }

    /// The base URL of the endpoint the session is pinned to.
    pub fn endpoint(&self) -> &str {
        &self.pin.core.url
    }

    /// The pinned endpoint's HTTP pool, as a handle for building requests (they are never
    /// sent elsewhere, not even retried elsewhere).
    ///
    /// # Errors
    /// [`Error::NoSuchPool`] if the service has no HTTP pool.
    pub fn http(&self) -> Result<HttpClient, Error> {
        self.pin
            .http
            .clone()
            .map(|pool| HttpClient::routed(pool, None))
            .ok_or_else(|| self.no_pool(PoolKind::Http))
    }

    /// Checks out a WebSocket of the pinned endpoint, waiting at most the service's
    /// `wait_timeout_ms`.
    ///
    /// # Errors
    /// As [`PoolManager::websocket`](crate::PoolManager::websocket).
    pub fn websocket(&self) -> Result<WsGuard, Error> {
        let pool = self.ws_pool()?;
        pool.checkout(pool.core.timeouts.wait, None)
    }

    /// [`Session::websocket`] (waiting at most the service's `wait_timeout_ms`); `token`
    /// ends the wait with [`Error::Cancelled`].
    ///
    /// # Errors
    /// As [`Session::websocket`], plus [`Error::Cancelled`].
    pub fn websocket_cancellable(&self, token: &CancelToken) -> Result<WsGuard, Error> {
        let pool = self.ws_pool()?;
        pool.checkout(pool.core.timeouts.wait, Some(token))
    }

    /// [`Session::websocket`], waiting at most `wait` for a free socket; `token`, if given,
    /// ends the wait with [`Error::Cancelled`].
    ///
    /// # Errors
    /// As [`Session::websocket`], plus [`Error::Cancelled`].
    pub fn websocket_wait(
        &self,
        wait: Duration,
        token: Option<&CancelToken>,
    ) -> Result<WsGuard, Error> {
        self.ws_pool()?.checkout(wait, token)
    }

    fn ws_pool(&self) -> Result<&Arc<WsPool>, Error> {
        self.pin
            .ws
            .as_ref()
            .ok_or_else(|| self.no_pool(PoolKind::WebSocket))
    }

    fn no_pool(&self, kind: PoolKind) -> Error {
        Error::NoSuchPool {
            service: self.pin.core.name.clone(),
            kind,
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("service", &self.pin.core.name)
            .field("endpoint", &self.pin.core.url)
            .finish()
    }
}
