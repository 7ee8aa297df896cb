//! The services of one manager, as [`PoolManager`](crate::PoolManager) and its maintenance
//! threads both see them, and how a reconfiguration changes them. The manager owns the
//! [`Registry`] in an `Arc`; the maintenance threads hold only a `Weak` to it.
//!
//! # The snapshot
//!
//! The services in service are one `Arc<[Arc<Service>]>` behind a `parking_lot::RwLock`.
//! A call's lookup (`manager.http(name)`, `manager.websocket(name)`) holds the read lock for
//! a name comparison per service and one `Arc` clone of the pool it wants, then lets go: no
//! lock is held across the call, nothing is allocated. Maintenance, statistics and shutdown
//! clone the list's `Arc` and walk it unlocked. A reconfiguration builds the new list
//! off-lock and swaps it in under the write lock (a pointer store).
//!
//! # Reconfiguring
//!
//! 1. **Plan** ([`Registry::plan`]): each service of the new configuration whose
//!    [`ServiceConfig`] equals the running one's keeps its [`Service`] (the same `Arc`: pools,
//!    connections, statistics and health untouched); any other is built anew, which opens
//!    nothing (it may read a `ca_file` or a token's environment variable). A failure here
//!    changes nothing. A running service whose name is gone, or whose configuration changed,
//!    is to be retired.
//! 2. **Swap** ([`Registry::swap`], under [`Registry::changes`], which keeps reconfigurations
//!    apart and shutdown from slipping between them): new lookups see the new list at once;
//!    the retired services wait in `retiring` (shutdown and statistics still see them).
//! 3. **Retire** ([`Registry::retire`]): each is marked retired and its pools are closed,
//!    as shutdown closes them, for one service: new checkouts and blocked waiters get
//!    [`Error::ServiceRetired`](crate::Error::ServiceRetired), idle connections close now,
//!    connections in use when they come back; its blocked maintenance I/O is cut short. The
//!    calls in flight may finish until the deadline; then those still blocked on a
//!    connection are interrupted ([`drain`]). Its maintenance step (aborted, so ending at
//!    once) is waited for, and it leaves `retiring`.
//!
//! The unit a reconfiguration swaps is the service: when a service holds several
//! endpoints, each with its own pools, they are built, kept and retired with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard, RwLock};
use scheduled_thread_pool::ScheduledThreadPool;

use crate::config::ServiceConfig;
use crate::error::{ConfigError, PoolKind};
use crate::health::HealthSnapshot;
use crate::http::HttpPool;
use crate::manager::{InUse, ABORT_MARGIN};
use crate::route::Route;
use crate::service::{Retired, ServiceContext};
use crate::stats::{EndpointStats, PoolCounters, PoolStats, ServiceStats};
use crate::ws::WsPool;

/// Every service of one manager: those in service, in configuration order, and those a
/// reconfiguration is retiring.
pub(crate) struct Registry {
    current: RwLock<Arc<[Arc<Service>]>>,
    /// Taken out of `current` by a reconfiguration; in here until closed.
    retiring: Mutex<Vec<Arc<Service>>>,
    changes: Mutex<Changes>,
    closed: AtomicBool,
    /// The worker that creates HTTP pool slots (r2d2's), shared by every HTTP pool.
    pub threads: Arc<ScheduledThreadPool>,
}

/// What only a reconfiguration changes; its lock keeps reconfigurations apart.
pub(crate) struct Changes {
    /// The maintenance tick now.
    pub interval: Duration,
}

impl Registry {
    pub(crate) fn new(
        services: Vec<Arc<Service>>,
        interval: Duration,
        threads: Arc<ScheduledThreadPool>,
    ) -> Registry {
        Registry {
            current: RwLock::new(services.into()),
            retiring: Mutex::new(Vec::new()),
            changes: Mutex::new(Changes { interval }),
            closed: AtomicBool::new(false),
            threads,
        }
    }

    /// The services in service, in configuration order.
    pub(crate) fn current(&self) -> Arc<[Arc<Service>]> {
        Arc::clone(&self.current.read())
    }

    /// `pick` applied to the service called `name`, under the read lock: keep `pick` to a
    /// clone (the lock is held while it runs).
    #[inline]
    pub(crate) fn lookup<T>(&self, name: &str, pick: impl FnOnce(&Service) -> T) -> Option<T> {
        let current = self.current.read();
        current
            .iter()
            .find(|s| s.core.name == name)
            .map(|s| pick(s))
    }

    /// The service called `name`.
    pub(crate) fn find(&self, name: &str) -> Option<Arc<Service>> {
        let current = self.current.read();
        current.iter().find(|s| s.core.name == name).cloned()
    }

    /// The names of the services in service, in order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.current
            .read()
            .iter()
            .map(|s| s.core.name.clone())
            .collect()
    }

    /// The services being retired (not yet closed).
    pub(crate) fn retiring(&self) -> Vec<Arc<Service>> {
        self.retiring.lock().clone()
    }

    /// Every service: in service, then being retired.
    pub(crate) fn all(&self) -> Vec<Arc<Service>> {
        let mut all = self.current().to_vec();
        all.extend(self.retiring());
        all
    }

    /// Held by a reconfiguration from its plan to its swap, and by shutdown while it takes
    /// the list to close (so no swap slips in after it).
    pub(crate) fn changes(&self) -> MutexGuard<'_, Changes> {
        self.changes.lock()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the manager closed; true for the call that closed it.
    pub(crate) fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }

    /// Decides what `wanted` (a validated list of services) changes: see the module docs.
    /// `force` names a service to rebuild even when its configuration is equal
    /// (`replace_service`: a token's environment variable or a `ca_file` read again).
    ///
    /// # Errors
    /// A service that cannot be built (an unreadable `ca_file`, a token variable a header
    /// cannot carry); nothing has changed then.
    pub(crate) fn plan(
        &self,
        _changes: &Changes,
        wanted: &[ServiceConfig],
        force: Option<&str>,
    ) -> Result<Plan, ConfigError> {
        let current = self.current();
        let running = |name: &str| current.iter().find(|s| s.core.name == name);
        let mut plan = Plan::default();
        for config in wanted {
            let name = config.name.clone();
            match running(&name) {
                Some(old) if old.core.config == *config && force != Some(name.as_str()) => {
                    plan.services.push(Arc::clone(old));
                    plan.unchanged.push(name);
                }
                Some(old) => {
                    plan.services.push(Service::build(config, &self.threads)?);
                    plan.retire.push((Arc::clone(old), Retired::Replaced));
                    plan.replaced.push(name);
                }
                None => {
                    plan.services.push(Service::build(config, &self.threads)?);
                    plan.added.push(name);
                }
            }
        }
        for old in current.iter() {
            if !wanted.iter().any(|c| c.name == old.core.name) {
                plan.retire.push((Arc::clone(old), Retired::Removed));
                plan.removed.push(old.core.name.clone());
            }
        }
        Ok(plan)
    }

    /// Puts `plan`'s services in service: new lookups see them from now on. The services it
    /// retires wait in `retiring` until [`Registry::retire`] has closed them.
    pub(crate) fn swap(&self, _changes: &mut Changes, plan: &Plan) {
        self.retiring
            .lock()
            .extend(plan.retire.iter().map(|(s, _)| Arc::clone(s)));
        let services: Arc<[Arc<Service>]> = plan.services.iter().cloned().collect();
        let old = std::mem::replace(&mut *self.current.write(), services);
        drop(old); // off-lock: the last reference to a list may go here
    }

    /// Retires `services` (see the module docs): closed at once to new work, their calls in
    /// flight drained until `end`, then interrupted. Returns the connections still checked
    /// out after that and the margin (they close when their guards drop).
    pub(crate) fn retire(&self, services: &[(Arc<Service>, Retired)], end: Instant) -> Vec<InUse> {
        for (service, why) in services {
            service.retire(*why);
            service.close();
            // After the pools closed: what an aborted step hands back is closed, not kept.
            service.abort_all();
            log::debug!(target: "backend_pool", "service '{}': {} by a reconfiguration; draining",
                service.core.name, if *why == Retired::Removed { "removed" } else { "replaced" });
        }
        let list: Vec<Arc<Service>> = services.iter().map(|(s, _)| Arc::clone(s)).collect();
        let still = drain(&list, end);
        for member in list.iter().flat_map(|s| s.endpoints.iter()) {
            // Its maintenance step, if one runs, was aborted: it ends within moments and
            // closes what it had borrowed.
            let _step = member.step.running.try_lock_for(ABORT_MARGIN);
        }
        self.retiring
            .lock()
            .retain(|s| !list.iter().any(|r| Arc::ptr_eq(r, s)));
        for u in &still {
            log::warn!(target: "backend_pool",
                "service '{}': {} {} connection(s) still in use at the reconfiguration's deadline",
                u.service, u.count, u.kind);
        }
        still
    }
}

/// Waits until no connection of `services` is checked out, or `end`; then interrupts the
/// calls still blocked on one (a request connecting or reading, a WebSocket read or send:
/// they return the pools' closed error on their own threads) and waits [`ABORT_MARGIN`]
/// more for them to hand their connections back. The pools must be closed. Returns what is
/// still checked out.
pub(crate) fn drain(services: &[Arc<Service>], end: Instant) -> Vec<InUse> {
    let in_use = || {
        let mut out = Vec::new();
        for s in services {
            s.in_use(&mut out);
        }
        out
    };
    let mut still = in_use();
    while !still.is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(2).min(end - Instant::now()));
        still = in_use();
    }
    if !still.is_empty() {
        for s in services {
            s.interrupt_held();
        }
        let margin = Instant::now() + ABORT_MARGIN;
        while !still.is_empty() && Instant::now() < margin {
            std::thread::sleep(Duration::from_millis(2));
            still = in_use();
        }
    }
    still
}

/// What a reconfiguration changes ([`Registry::plan`]).
#[derive(Default)]
pub(crate) struct Plan {
    /// The services in service after it, in configuration order.
    pub services: Vec<Arc<Service>>,
    /// The running services it takes out of service.
    pub retire: Vec<(Arc<Service>, Retired)>,
    pub added: Vec<String>,
    pub replaced: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

/// One endpoint of a service: what its pools share (URL, health, blocked I/O), its pools
/// and its maintenance step (each endpoint's its own: a silent endpoint's probe holds back
/// no sibling's).
pub(crate) struct Member {
    pub core: Arc<ServiceContext>,
    pub http: Option<Arc<HttpPool>>,
    pub ws: Option<Arc<WsPool>>,
    pub step: MaintenanceStep,
}

impl Member {
    fn build(
        config: &ServiceConfig,
        url: &str,
        threads: &Arc<ScheduledThreadPool>,
    ) -> Result<Member, ConfigError> {
        let core = Arc::new(ServiceContext::new(config, url)?);
        let http = config
            .http
            .clone()
            .map(|hc| Arc::new(HttpPool::new(Arc::clone(&core), hc, Arc::clone(threads))));
        let ws = config
            .websocket
            .clone()
            .map(|wc| Arc::new(WsPool::new(Arc::clone(&core), wc)));
        Ok(Member {
            core,
            http,
            ws,
            step: MaintenanceStep::default(),
        })
    }

    /// The counters of the endpoint's first pool (HTTP, else WebSocket).
    pub(crate) fn counters(&self) -> Option<&PoolCounters> {
        match (&self.http, &self.ws) {
            (Some(http), _) => Some(http.counters()),
            (None, Some(ws)) => Some(ws.counters()),
            (None, None) => None,
        }
    }

    fn stats(&self) -> EndpointStats {
        EndpointStats::new(
            self.core.url.clone(),
            self.core.health.snapshot(),
            self.http.as_ref().map(|p| p.stats()),
            self.ws.as_ref().map(|p| p.stats()),
            (
                self.core
                    .sessions
                    .load(std::sync::atomic::Ordering::Relaxed),
                self.core.queue_remaining(),
            ),
        )
    }
}

/// One service: its endpoints (each with its context, pools and maintenance step), how
/// calls choose among them, when its health checks are due.
///
/// `core`, `http` and `ws` are the first endpoint's (the only one's, for a service with one
/// URL): what names, configures and retires the service, and what a one-URL service's
/// callers reach directly. `route` exists only with several endpoints (`crate::route`).
pub(crate) struct Service {
    pub core: Arc<ServiceContext>,
    pub http: Option<Arc<HttpPool>>,
    pub ws: Option<Arc<WsPool>>,
    /// Every endpoint, the first included, in configuration order.
    pub endpoints: Box<[Member]>,
    pub route: Option<Arc<Route>>,
    /// When its next health check is due (the scheduler's; `None`: at its first tick).
    pub next_probe: Mutex<Option<Instant>>,
}

impl Service {
    /// Builds a service's contexts and pools, one set per endpoint; no connection is opened.
    ///
    /// # Errors
    /// As [`ServiceContext::new`]: an invalid configuration, an unreadable `ca_file`.
    pub(crate) fn build(
        config: &ServiceConfig,
        threads: &Arc<ScheduledThreadPool>,
    ) -> Result<Arc<Service>, ConfigError> {
        let endpoints = config
            .endpoint_urls()
            .iter()
            .map(|url| Member::build(config, url, threads))
            .collect::<Result<Box<[Member]>, _>>()?;
        let Some(first) = endpoints.first() else {
            return Err(ConfigError::invalid(&config.name, "urls", "is empty"));
        };
        let route = (endpoints.len() > 1).then(|| {
            Arc::new(Route::new(
                endpoints.iter().filter_map(|m| m.http.clone()).collect(),
                endpoints.iter().filter_map(|m| m.ws.clone()).collect(),
            ))
        });
        Ok(Arc::new(Service {
            core: Arc::clone(&first.core),
            http: first.http.clone(),
            ws: first.ws.clone(),
            route,
            endpoints,
            next_probe: Mutex::new(None),
        }))
    }

    /// Marks every endpoint retired (before the pools close).
    pub(crate) fn retire(&self, why: Retired) {
        for m in self.endpoints.iter() {
            m.core.retire(why);
        }
    }

    /// Cuts short every endpoint's blocked maintenance I/O (connects, pings, probes).
    pub(crate) fn abort_all(&self) {
        for m in self.endpoints.iter() {
            m.core.aborts.abort_all();
        }
    }

    /// The service's health: its endpoint's, or, with several, the healthiest endpoint's
    /// (the service can serve while one can).
    pub(crate) fn health(&self) -> HealthSnapshot {
        let mut best = self.core.health.snapshot();
        for m in self.endpoints.iter().skip(1) {
            let h = m.core.health.snapshot();
            if h.consecutive_failures < best.consecutive_failures {
                best = h;
            }
        }
        best
    }

    /// Closes every pool: waiters and new checkouts get the pools' closed error, idle
    /// connections close now, those in use when returned.
    pub(crate) fn close(&self) {
        for m in self.endpoints.iter() {
            if let Some(p) = &m.http {
                p.close();
            }
            if let Some(p) = &m.ws {
                p.close();
            }
        }
    }

    /// Appends the service's pools that have connections checked out (one entry per pool
    /// kind, summed over the endpoints).
    pub(crate) fn in_use(&self, out: &mut Vec<InUse>) {
        let sum = |f: fn(&Member) -> usize| self.endpoints.iter().map(f).sum::<usize>();
        let counts = [
            (
                PoolKind::Http,
                sum(|m| m.http.as_ref().map_or(0, |p| p.in_use())),
            ),
            (
                PoolKind::WebSocket,
                sum(|m| m.ws.as_ref().map_or(0, |p| p.in_use())),
            ),
        ];
        for (kind, count) in counts {
            if count > 0 {
                out.push(InUse {
                    service: self.core.name.clone(),
                    kind,
                    count,
                });
            }
        }
    }

    /// Interrupts every call blocked on one of the service's connections.
    pub(crate) fn interrupt_held(&self) {
        for m in self.endpoints.iter() {
            if let Some(p) = &m.http {
                p.core.leases.interrupt_held();
            }
            if let Some(p) = &m.ws {
                p.core.leases.interrupt_held();
            }
        }
    }

    /// The service's figures now: with several endpoints, each endpoint's and their sums.
    pub(crate) fn stats(&self) -> ServiceStats {
        if self.endpoints.len() == 1 {
            return ServiceStats::new(
                self.core.name.clone(),
                self.core.health.snapshot(),
                self.http.as_ref().map(|p| p.stats()),
                self.ws.as_ref().map(|p| p.stats()),
                Vec::new(),
            );
        }
        let endpoints: Vec<EndpointStats> = self.endpoints.iter().map(Member::stats).collect();
        ServiceStats::new(
            self.core.name.clone(),
            self.health(),
            PoolStats::sum(endpoints.iter().filter_map(|e| e.http.as_ref())),
            PoolStats::sum(endpoints.iter().filter_map(|e| e.websocket.as_ref())),
            endpoints,
        )
    }
}

/// The state of an endpoint's maintenance step (see `maintenance`): one at a time.
#[derive(Default)]
pub(crate) struct MaintenanceStep {
    /// A step of this endpoint is queued or running.
    pub scheduled: AtomicBool,
    /// Held while a step runs: keeps `run_now` and a background step apart.
    pub running: Mutex<()>,
}
