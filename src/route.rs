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
//!   never per request; it moves only if its endpoint could not be reached before anything
//!   of the job got there (a machine died and health has not noticed yet: see [`Session`]).

use std::fmt;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use std::sync::Arc;
use std::time::Duration;

use crate::cancel::CancelToken;
use crate::error::{Error, ErrorClass, PoolKind};
use crate::health::HealthState;
use crate::http::{HttpClient, HttpPool};
use crate::registry::{Member, Service};
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
/// **An endpoint found dead before the job reached it.** Health notices a dead machine at
/// its next probe; a session begun in between may be pinned to it. Until something of the
/// job has reached its endpoint, the session is not bound to it: a call whose connection
/// could not be opened there (refused, timed out: nothing was sent) or which that
/// endpoint's fail-fast gate turned away moves the session to the best other endpoint (the
/// same choice as when it began, without the endpoints that failed it) and is made there,
/// whatever its method, once per endpoint. The first call that reaches its server (a
/// response of any status, a WebSocket opened, or a failure after the request was sent)
/// binds the session for good: from then on it never moves, and a call failing on its dead
/// machine fails with its classified error (`Connect`, `Unavailable`), since the job's
/// state (a queued prompt, its outputs) lives there.
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
pub(crate) struct Pin {
    service: Arc<Service>,
    /// The endpoint's index in `service.endpoints`.
    at: AtomicUsize,
    /// Something of the job reached the endpoint: the session never moves again.
    bound: AtomicBool,
    /// Bit `i`: endpoint `i` failed this session before it was bound (a session never
    /// moves off an endpoint past the 64th); moving stops when none is left.
    failed: AtomicU64,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.member().core.sessions.fetch_sub(1, Relaxed);
    }
}

/// What a session's call did at its endpoint, for [`Pin::after`].
pub(crate) enum Outcome<'a> {
    /// It reached the server.
    Reached,
    /// It failed with this error.
    Failed(&'a Error),
}

impl Pin {
    fn member(&self) -> &Member {
        // `at` only ever holds an index of `endpoints` (never empty).
        &self.service.endpoints[self.at.load(Acquire) % self.service.endpoints.len()]
    }

    /// The HTTP pool the session's calls go to now.
    pub(crate) fn http(&self) -> Option<&Arc<HttpPool>> {
        self.member().http.as_ref()
    }

    /// Records a call's outcome at the endpoint of `pool`. Returns the pool to make the call
    /// again on when the session moved (see [`Session`]): it was not bound, and the call
    /// failed there before anything was sent.
    pub(crate) fn after_http(
        &self,
        pool: &Arc<HttpPool>,
        outcome: Outcome<'_>,
    ) -> Option<Arc<HttpPool>> {
        let from = self.index_of(|m| m.http.as_ref().is_some_and(|p| Arc::ptr_eq(p, pool)))?;
        self.after(from, outcome)
            .and_then(|to| self.service.endpoints[to].http.clone())
    }

    /// [`Pin::after_http`] for a WebSocket checkout at the endpoint of `pool`.
    fn after_ws(&self, pool: &Arc<WsPool>, outcome: Outcome<'_>) -> Option<Arc<WsPool>> {
        let from = self.index_of(|m| m.ws.as_ref().is_some_and(|p| Arc::ptr_eq(p, pool)))?;
        self.after(from, outcome)
            .and_then(|to| self.service.endpoints[to].ws.clone())
    }

    fn index_of(&self, is: impl Fn(&Member) -> bool) -> Option<usize> {
        self.service.endpoints.iter().position(is)
    }

    /// Binds the session, or moves it off endpoint `from`; `Some(to)`: make the call again
    /// at endpoint `to` (where the session is now).
    fn after(&self, from: usize, outcome: Outcome<'_>) -> Option<usize> {
        let err = match outcome {
            Outcome::Reached => {
                self.bind();
                return None;
            }
            Outcome::Failed(err) => err,
        };
        match err.class() {
            // Nothing reached the server: the session may leave it if not bound yet.
            ErrorClass::Connect | ErrorClass::Unavailable => {}
            // Nothing was sent either, through no fault of the endpoint: stay.
            ErrorClass::PoolTimeout
            | ErrorClass::Cancelled
            | ErrorClass::ShuttingDown
            | ErrorClass::InvalidRequest => return None,
            // Sent: the job may live there now.
            _ => {
                self.bind();
                return None;
            }
        }
        // Past the 64th endpoint, nothing records that it failed: stay (the call fails).
        if self.bound.load(Acquire) || from >= 64 {
            return None;
        }
        self.failed.fetch_or(1 << from, Relaxed);
        let to = choose(&self.service, self.failed.load(Relaxed))?;
        // Another clone may have moved the session meanwhile: follow it, don't move twice.
        match self.at.compare_exchange(from, to, AcqRel, Acquire) {
            Ok(_) => {
                let endpoints = &self.service.endpoints;
                endpoints[to].core.sessions.fetch_add(1, Relaxed);
                endpoints[from].core.sessions.fetch_sub(1, Relaxed);
                log::debug!(target: "backend_pool",
                    "service '{}': a session's first call could not reach {} ({err}); moved to {}",
                    self.service.core.name, endpoints[from].core.url, endpoints[to].core.url);
                Some(to)
            }
            Err(now) if now != from => Some(now),
            Err(_) => None,
        }
    }

    fn bind(&self) {
        if !self.bound.load(Relaxed) {
            self.bound.store(true, Release);
        }
    }
}

/// The endpoint of `service` a session takes: the least loaded among the healthy ones, the
/// degraded if none is (see the module docs), not one whose bit is set in `skip`; `None` if
/// every candidate is unhealthy or skipped.
fn choose(service: &Service, skip: u64) -> Option<usize> {
    let n = service.endpoints.len();
    let start = service.route.as_ref().map_or(0, |r| r.start());
    // A degraded endpoint (a recent failure, below the threshold) only when no
    // endpoint is healthy: a job pinned to a dying machine would fail whole.
    let mut best: Option<(usize, (bool, u64))> = None;
    for i in 0..n {
        let at = start.wrapping_add(i) % n;
        if at < 64 && skip & (1 << at) != 0 {
            continue;
        }
        let member = &service.endpoints[at];
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
            best = Some((at, load));
        }
    }
    best.map(|(at, _)| at)
}

impl Session {
    /// Pins a new session of `service` to its least loaded endpoint not unhealthy (see
    /// the module docs); with every endpoint unhealthy, to the first, whose calls then fail
    /// fast as a one-URL service's do.
    pub(crate) fn begin(service: &Arc<Service>) -> Session {
        // None healthy: the first endpoint (the service's `core`, `http`, `ws`).
        let at = choose(service, 0).unwrap_or(0);
        service.endpoints[at].core.sessions.fetch_add(1, Relaxed);
        Session {
            pin: Arc::new(Pin {
                service: Arc::clone(service),
                at: AtomicUsize::new(at),
                bound: AtomicBool::new(false),
                failed: AtomicU64::new(0),
            }),
        }
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.pin.service.core.name
    }

    /// The base URL of the endpoint the session is pinned to (it changes only before the
    /// job first reached an endpoint: see [`Session`]).
    pub fn endpoint(&self) -> &str {
        &self.pin.member().core.url
    }

    /// The pinned endpoint's HTTP pool, as a handle for building requests (they are never
    /// sent elsewhere, not even retried elsewhere, once the session is bound: see
    /// [`Session`]).
    ///
    /// # Errors
    /// [`Error::NoSuchPool`] if the service has no HTTP pool.
    pub fn http(&self) -> Result<HttpClient, Error> {
        self.pin
            .http()
            .map(|pool| HttpClient::pinned(Arc::clone(pool), Arc::clone(&self.pin)))
            .ok_or_else(|| self.no_pool(PoolKind::Http))
    }

    /// Checks out a WebSocket of the pinned endpoint, waiting at most the service's
    /// `wait_timeout_ms`.
    ///
    /// # Errors
    /// As [`PoolManager::websocket`](crate::PoolManager::websocket).
    pub fn websocket(&self) -> Result<WsGuard, Error> {
        self.checkout(None, None)
    }

    /// [`Session::websocket`] (waiting at most the service's `wait_timeout_ms`); `token`
    /// ends the wait with [`Error::Cancelled`].
    ///
    /// # Errors
    /// As [`Session::websocket`], plus [`Error::Cancelled`].
    pub fn websocket_cancellable(&self, token: &CancelToken) -> Result<WsGuard, Error> {
        self.checkout(None, Some(token))
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
        self.checkout(Some(wait), token)
    }

    /// A lease at the pinned endpoint, moving the session first if it is not bound and the
    /// socket could not be opened there (see [`Session`]).
    fn checkout(
        &self,
        wait: Option<Duration>,
        token: Option<&CancelToken>,
    ) -> Result<WsGuard, Error> {
        let mut pool = Arc::clone(
            self.pin
                .member()
                .ws
                .as_ref()
                .ok_or_else(|| self.no_pool(PoolKind::WebSocket))?,
        );
        loop {
            let result = pool.checkout(wait.unwrap_or(pool.core.timeouts.wait), token);
            let outcome = match &result {
                Ok(_) => Outcome::Reached,
                Err(e) => Outcome::Failed(e),
            };
            match self.pin.after_ws(&pool, outcome) {
                Some(next) => pool = next,
                None => return result,
            }
        }
    }

    fn no_pool(&self, kind: PoolKind) -> Error {
        Error::NoSuchPool {
            service: self.pin.service.core.name.clone(),
            kind,
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("service", &self.service())
            .field("endpoint", &self.endpoint())
            .field("bound", &self.pin.bound.load(Relaxed))
            .finish()
    }
}
