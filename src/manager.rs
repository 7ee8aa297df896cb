//! [`PoolManager`]: the entry point for checkouts, statistics, reconfiguration, readiness
//! probes and shutdown, over its services (a [`Registry`] it shares with its maintenance
//! threads); and the process-wide handle for hosts such as a Blender add-on.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::config::{ManagerConfig, ServiceConfig};
use crate::error::{ConfigError, Error, PoolKind};
use crate::health::HealthSnapshot;
use crate::http::HttpClient;
use crate::maintenance;
use crate::registry::{self, Registry, Service};
use crate::route::Session;
use crate::stats::ManagerStats;
use crate::ws::{WsGuard, WsPool};

/// How long [`PoolManager::shutdown`] (and a reconfiguration) waits, after its deadline, for
/// the calls it interrupted to hand their connections back.
pub(crate) const ABORT_MARGIN: Duration = Duration::from_millis(50);

/// Owns every connection to every configured backend.
///
/// Create one per process (or use [`global`](crate::global)), share it by reference or in an
/// `Arc`; all methods take `&self` and are safe from any thread (it is `Send` and `Sync`). Its
/// background threads: the maintenance scheduler, one maintenance worker per endpoint (at
/// most 16, so a slow service or machine never delays another's health checks) and the worker that
/// creates HTTP pool slots. Its services can change while it runs: [`PoolManager::apply`].
///
/// ```
/// # fn main() -> Result<(), backend_pool::Error> {
/// use std::time::Duration;
/// use backend_pool::{ManagerConfig, PoolManager, ServiceConfig};
///
/// // Nothing listens on port 9: the manager still starts (pools open lazily).
/// let config = ManagerConfig::empty().with_service(ServiceConfig::new("svc", "http://127.0.0.1:9"));
/// let manager = PoolManager::new(config)?;
/// let err = manager.http("svc")?.get("/").call().unwrap_err();
/// assert_eq!(err.service(), Some("svc"));
/// assert!(manager.http("nope").unwrap_err().to_string().contains("known: svc"));
/// manager.shutdown(Duration::from_secs(1))?;
/// # Ok(()) }
/// ```
pub struct PoolManager {
    registry: Arc<Registry>,
    maintenance: Mutex<Option<maintenance::Maintenance>>,
}

/// What `shutdown` found. Fields may be added: read them, don't build the struct.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// How long the shutdown took.
    pub elapsed_ms: u64,
    /// Connections still checked out when the deadline and the 50 ms margin after it had
    /// passed (they close when their guards drop).
    pub still_in_use: Vec<InUse>,
    /// False if the maintenance threads did not stop before the deadline (only a name lookup
    /// in progress can hold one: every other blocked step, a connect included, is cut short).
    pub maintenance_joined: bool,
}

/// What a reconfiguration ([`PoolManager::apply`], [`PoolManager::add_service`],
/// [`PoolManager::replace_service`], [`PoolManager::remove_service`]) changed. Fields may be
/// added: read them, don't build the struct.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ApplyReport {
    /// Services new to the manager (their pools open lazily).
    pub added: Vec<String>,
    /// Services whose configuration changed: new pools took their place; the old ones were
    /// drained and closed.
    pub replaced: Vec<String>,
    /// Services no longer configured: drained and closed.
    pub removed: Vec<String>,
    /// Services left as they were: same pools, connections, statistics and health.
    pub unchanged: Vec<String>,
    /// How long the call took (most of it: waiting for the retired services' calls).
    pub elapsed_ms: u64,
    /// Connections of retired services still checked out when the deadline and the 50 ms
    /// margin after it had passed (they close when their guards drop).
    pub still_in_use: Vec<InUse>,
}

/// What a readiness probe ([`PoolManager::probe`]) found. Fields may be added: read them,
/// don't build the struct.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProbeReport {
    /// The service.
    pub service: String,
    /// The check answered in time: the health path with a status under 500, or a TCP
    /// connection opened.
    pub reachable: bool,
    /// The check that ran: `GET /health/liveliness` (`HEAD /` for the root), or `TCP
    /// connect`.
    pub check: String,
    /// Why it failed (never holds secrets: messages come from the transport).
    pub error: Option<String>,
    /// How long it took.
    pub elapsed_ms: u64,
    /// The service's health after the probe was recorded.
    pub health: HealthSnapshot,
}

/// Connections of one pool still checked out when the shutdown deadline passed; they close
/// when their guards drop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct InUse {
    /// The service.
    pub service: String,
    /// The pool.
    pub kind: PoolKind,
    /// How many.
    pub count: usize,
}

/// The services a reconfiguration asks for.
enum Wanted<'a> {
    /// A whole configuration.
    All(ManagerConfig),
    /// One more service.
    Add(ServiceConfig),
    /// A running service's new configuration, rebuilt even if equal.
    Replace(ServiceConfig),
    /// A running service, to go.
    Remove(&'a str),
}

impl PoolManager {
    /// Builds every pool and starts the maintenance thread. No connection is opened here:
    /// a backend that is down does not delay or fail startup.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration (or an unreadable `ca_file`).
    pub fn new(config: ManagerConfig) -> Result<PoolManager, Error> {
        config.validate()?;
        let threads = Arc::new(
            scheduled_thread_pool::ScheduledThreadPool::builder()
                .num_threads(1)
                .thread_name_pattern("backend-pool-r2d2")
                .build(),
        );
        let services = config
            .service
            .iter()
            .map(|sc| Service::build(sc, &threads))
            .collect::<Result<Vec<_>, _>>()?;
        let interval = config.maintenance_interval();
        let registry = Arc::new(Registry::new(services, interval, threads));
        let maintenance = maintenance::Maintenance::start(&registry, interval)
            .map_err(|e| thread_refused("could not be started", &e))?;
        log::debug!(target: "backend_pool", "pool manager started with {} services", registry.current().len());
        Ok(PoolManager {
            registry,
            maintenance: Mutex::new(Some(maintenance)),
        })
    }

    /// `pick` applied to `name`'s service, under the registry's read lock (a clone of a pool:
    /// no allocation, no lock held after it).
    #[inline]
    fn lookup<T>(&self, name: &str, pick: impl FnOnce(&Service) -> T) -> Result<T, Error> {
        if self.registry.is_closed() {
            return Err(Error::ShuttingDown {
                service: Some(name.to_string()),
            });
        }
        self.registry
            .lookup(name, pick)
            .ok_or_else(|| self.unknown(name))
    }

    fn unknown(&self, name: &str) -> Error {
        Error::UnknownService {
            name: name.to_string(),
            known: self.service_names(),
        }
    }

    /// The HTTP pool of `service`, as a cheap handle for building requests. The handle keeps
    /// the pool it was given: after a reconfiguration replaced or removed the service, its
    /// new requests fail with [`Error::ServiceRetired`] (ask again for the new pool). With
    /// several endpoints (`urls`), each request goes to a healthy endpoint with the least
    /// work in flight (README, "Several endpoints per service").
    ///
    /// # Errors
    /// [`Error::UnknownService`] (listing the known names), [`Error::NoSuchPool`],
    /// [`Error::ShuttingDown`].
    pub fn http(&self, service: &str) -> Result<HttpClient, Error> {
        // One URL: `route` is `None`, and this is one `Arc` clone as it always was.
        let (pool, route) = self.lookup(service, |s| (s.http.clone(), s.route.clone()))?;
        pool.map(|pool| HttpClient::routed(pool, route))
            .ok_or(Error::NoSuchPool {
                service: service.to_string(),
                kind: PoolKind::Http,
            })
    }

    /// Checks out a WebSocket of `service`, waiting at most its `wait_timeout_ms`. With
    /// several endpoints, from the healthy one with the fewest leases out and waiting.
    ///
    /// # Errors
    /// As [`PoolManager::http`], plus [`Error::PoolTimeout`], [`Error::ServiceUnavailable`]
    /// and connect errors; [`Error::ServiceRetired`] if a reconfiguration retires the
    /// service while the checkout waits.
    pub fn websocket(&self, service: &str) -> Result<WsGuard, Error> {
        let pool = self.ws_pool(service)?;
        pool.checkout(pool.core.timeouts.wait, None)
    }

    /// Like [`PoolManager::websocket`], and the wait for a free socket ends with
    /// [`Error::Cancelled`] as soon as `token` is cancelled (from any thread), or at once if
    /// it already is.
    ///
    /// # Errors
    /// As [`PoolManager::websocket`], plus [`Error::Cancelled`].
    pub fn websocket_cancellable(
        &self,
        service: &str,
        token: &crate::CancelToken,
    ) -> Result<WsGuard, Error> {
        let pool = self.ws_pool(service)?;
        pool.checkout(pool.core.timeouts.wait, Some(token))
    }

    /// Like [`PoolManager::websocket`], waiting at most `wait` for a free socket (instead of
    /// the service's `wait_timeout_ms`). `wait` bounds the checkout only: reads and sends on
    /// the socket keep their own timeouts.
    ///
    /// # Errors
    /// As [`PoolManager::websocket`].
    pub fn websocket_wait(&self, service: &str, wait: Duration) -> Result<WsGuard, Error> {
        self.ws_pool(service)?.checkout(wait, None)
    }

    /// [`PoolManager::websocket_wait`] and [`PoolManager::websocket_cancellable`] at once: a
    /// wait of at most `wait`, ended by `token` too (the Python binding's
    /// `websocket(wait_timeout=..., cancel=...)`).
    ///
    /// # Errors
    /// As [`PoolManager::websocket_cancellable`].
    pub fn websocket_wait_cancellable(
        &self,
        service: &str,
        wait: Duration,
        token: &crate::CancelToken,
    ) -> Result<WsGuard, Error> {
        self.ws_pool(service)?.checkout(wait, Some(token))
    }

    fn ws_pool(&self, service: &str) -> Result<Arc<WsPool>, Error> {
        // Several endpoints: the least busy healthy one's (`crate::route`).
        self.lookup(service, |s| match &s.route {
            None => s.ws.clone(),
            Some(route) => route.pick_ws().cloned(),
        })?
        .ok_or_else(|| Error::NoSuchPool {
            service: service.to_string(),
            kind: PoolKind::WebSocket,
        })
    }

    /// A session of `service`: a handle that pins every HTTP call and WebSocket lease
    /// taken through it to one endpoint, for a job whose parts must meet on one machine (a
    /// ComfyUI prompt, its WebSocket events, its outputs). With several endpoints (`urls`),
    /// the endpoint is chosen now, once: the healthy one with the fewest sessions pinned
    /// plus the shortest queue its server reported at its last health probe (ComfyUI's
    /// `exec_info.queue_remaining`, when its `health_path` is `/prompt`). With one URL, the
    /// session's calls are the service's.
    ///
    /// ```
    /// # fn main() -> Result<(), backend_pool::Error> {
    /// use backend_pool::{ManagerConfig, PoolManager, ServiceConfig};
    ///
    /// let mut gpu = ServiceConfig::new("gpu", "");
    /// gpu.url = String::new();
    /// gpu.urls = Some(vec!["http://127.0.0.1:9".into(), "http://127.0.0.2:9".into()]);
    /// let manager = PoolManager::new(ManagerConfig::empty().with_service(gpu))?;
    /// let job = manager.session("gpu")?;
    /// assert!(job.endpoint().starts_with("http://127.0.0."));
    /// assert_eq!(job.http()?.service(), "gpu");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownService`], [`Error::ShuttingDown`].
    pub fn session(&self, service: &str) -> Result<Session, Error> {
        if self.registry.is_closed() {
            return Err(Error::ShuttingDown {
                service: Some(service.to_string()),
            });
        }
        let s = self
            .registry
            .find(service)
            .ok_or_else(|| self.unknown(service))?;
        Ok(Session::begin(&s))
    }

    /// The configured service names, in order (as they are now: a reconfiguration changes
    /// them).
    pub fn service_names(&self) -> Vec<String> {
        self.registry.names()
    }

    /// The health of `service`: with several endpoints (`urls`), the healthiest
    /// endpoint's (each endpoint's own is in [`PoolManager::stats`]).
    ///
    /// # Errors
    /// [`Error::UnknownService`].
    pub fn health(&self, service: &str) -> Result<HealthSnapshot, Error> {
        self.registry
            .lookup(service, |s| s.health())
            .ok_or_else(|| self.unknown(service))
    }

    /// A snapshot of every figure; render it with [`ManagerStats::to_json`] or
    /// [`ManagerStats::to_prometheus`].
    ///
    /// After a reconfiguration: a replaced service's figures are its new pools' (they start
    /// from zero; the old pools' last figures are gone with them); a removed service is still
    /// listed while its calls drain, and disappears once it is closed.
    pub fn stats(&self) -> ManagerStats {
        let current = self.registry.current();
        let mut services: Vec<_> = current.iter().map(|s| s.stats()).collect();
        for s in self.registry.retiring() {
            if !current.iter().any(|c| c.core.name == s.core.name) {
                services.push(s.stats());
            }
        }
        ManagerStats::new(services)
    }

    /// Changes the running manager to `config`, service by service, without a restart:
    ///
    /// * **Unchanged** services (an equal [`ServiceConfig`]; order does not matter) are not
    ///   touched: the same pools, connections, calls in flight, statistics and health.
    /// * **Changed** services are replaced: from this call on, `manager.http(name)` and
    ///   `manager.websocket(name)` get the new pools, which open lazily. The old pools take
    ///   no new work: a handle taken before (an [`HttpClient`]) and callers waiting for one
    ///   of their connections get [`Error::ServiceRetired`]. Their idle connections close
    ///   at once; calls in flight may finish until `deadline`, each connection closing as it
    ///   comes back; at the deadline the calls still blocked on one are interrupted (they
    ///   return [`Error::ServiceRetired`]), as [`PoolManager::shutdown`] does for every
    ///   service. The new pools' statistics and health start fresh.
    /// * **Removed** services are retired the same way; their names are unknown from this
    ///   call on. They stay in [`PoolManager::stats`] until closed.
    /// * **New** services start as at [`PoolManager::new`]: lazily, tended by maintenance
    ///   from its next tick. A new `maintenance_interval_ms` applies from now.
    ///
    /// The call returns when the retired services are closed: at once when no call of theirs
    /// is in flight, at the latest `deadline` plus 50 ms (a host name's lookup cannot be
    /// interrupted: see [`PoolManager::shutdown`]). To keep a UI thread free while a long
    /// call drains, call it from a worker thread; unchanged services serve meanwhile, and
    /// other reconfigurations may run.
    ///
    /// A service whose configuration is equal is kept as is, so a `bearer_token_env`
    /// variable or a `ca_file` is read again only for a service that changed: use
    /// [`PoolManager::replace_service`] to force it.
    ///
    /// ```
    /// # fn main() -> Result<(), backend_pool::Error> {
    /// use std::time::Duration;
    /// use backend_pool::{ManagerConfig, PoolManager, ServiceConfig};
    ///
    /// let a = ServiceConfig::new("a", "http://127.0.0.1:9");
    /// let manager = PoolManager::new(ManagerConfig::empty().with_service(a.clone()))?;
    /// let edited = ManagerConfig::empty()
    ///     .with_service(a)
    ///     .with_service(ServiceConfig::new("b", "http://127.0.0.1:10"));
    /// let report = manager.apply(edited, Duration::from_secs(5))?;
    /// assert_eq!((report.unchanged, report.added), (vec!["a".to_string()], vec!["b".to_string()]));
    /// assert_eq!(manager.service_names(), ["a", "b"]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration (as [`PoolManager::new`]: a broken
    /// rule, an unreadable `ca_file`); nothing has changed then. [`Error::ShuttingDown`]
    /// once the manager is shut down. [`Error::Config`] too if the system refuses a
    /// maintenance thread for a new service.
    pub fn apply(&self, config: ManagerConfig, deadline: Duration) -> Result<ApplyReport, Error> {
        self.reconfigure(Wanted::All(config), deadline)
    }

    /// Adds one service (as [`PoolManager::apply`] with it appended): it starts lazily.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid service, or a name already in use
    /// ([`ConfigError::DuplicateService`]); [`Error::ShuttingDown`].
    pub fn add_service(&self, config: ServiceConfig) -> Result<ApplyReport, Error> {
        self.reconfigure(Wanted::Add(config), Duration::ZERO)
    }

    /// Replaces the running service of `config.name` with new pools built from `config`,
    /// even when it is equal (so a `bearer_token_env` variable and a `ca_file` are read
    /// again). The old pools are retired as by [`PoolManager::apply`], within `deadline`.
    ///
    /// # Errors
    /// [`Error::UnknownService`] if no service has that name; otherwise as
    /// [`PoolManager::apply`].
    pub fn replace_service(
        &self,
        config: ServiceConfig,
        deadline: Duration,
    ) -> Result<ApplyReport, Error> {
        self.reconfigure(Wanted::Replace(config), deadline)
    }

    /// Removes `service`: new work gets [`Error::UnknownService`] (a handle taken before,
    /// [`Error::ServiceRetired`]); its calls in flight may finish until `deadline`, then are
    /// interrupted; its connections close ([`PoolManager::apply`] says how).
    ///
    /// ```
    /// # fn main() -> Result<(), backend_pool::Error> {
    /// use std::time::Duration;
    /// use backend_pool::{ManagerConfig, PoolManager, ServiceConfig};
    ///
    /// let config = ManagerConfig::empty().with_service(ServiceConfig::new("a", "http://127.0.0.1:9"));
    /// let manager = PoolManager::new(config)?;
    /// let old = manager.http("a")?;
    /// let report = manager.remove_service("a", Duration::from_secs(1))?;
    /// assert_eq!(report.removed, ["a"]);
    /// assert!(manager.http("a").is_err());
    /// let err = old.get("/").call().unwrap_err();
    /// assert!(err.to_string().contains("removed"), "{err}");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownService`] if no service has that name; [`Error::ShuttingDown`].
    pub fn remove_service(&self, service: &str, deadline: Duration) -> Result<ApplyReport, Error> {
        self.reconfigure(Wanted::Remove(service), deadline)
    }

    /// Plans under the registry's `changes` lock, swaps, then retires outside it (so a
    /// drain never holds up another reconfiguration or a shutdown).
    fn reconfigure(&self, wanted: Wanted<'_>, deadline: Duration) -> Result<ApplyReport, Error> {
        let start = Instant::now();
        let end = crate::clock::deadline(start, deadline);
        let plan = {
            let mut changes = self.registry.changes();
            if self.registry.is_closed() {
                return Err(Error::ShuttingDown { service: None });
            }
            let mut config = ManagerConfig {
                maintenance_interval_ms: changes.interval.as_millis() as u64,
                service: self
                    .registry
                    .current()
                    .iter()
                    .map(|s| s.core.config.clone())
                    .collect(),
            };
            let mut force = None;
            match wanted {
                Wanted::All(all) => config = all,
                Wanted::Add(service) => config.service.push(service),
                Wanted::Replace(service) => {
                    let name = service.name.clone();
                    let Some(at) = config.service.iter().position(|s| s.name == name) else {
                        return Err(self.unknown(&name));
                    };
                    config.service[at] = service;
                    force = Some(name);
                }
                Wanted::Remove(name) => {
                    let Some(at) = config.service.iter().position(|s| s.name == name) else {
                        return Err(self.unknown(name));
                    };
                    config.service.remove(at);
                }
            }
            config.validate()?;
            let plan = self
                .registry
                .plan(&changes, &config.service, force.as_deref())?;
            let interval = config.maintenance_interval();
            if let Some(m) = self.maintenance.lock().as_mut() {
                m.grow(maintenance::steps(&plan.services))
                    .map_err(|e| thread_refused("could not be started for a new service", &e))?;
                if interval != changes.interval {
                    m.set_interval(interval);
                }
            }
            changes.interval = interval;
            self.registry.swap(&mut changes, &plan);
            plan
        };
        log::debug!(target: "backend_pool",
            "reconfigured: added {:?}, replaced {:?}, removed {:?}, unchanged {:?}",
            plan.added, plan.replaced, plan.removed, plan.unchanged);
        let still_in_use = self.registry.retire(&plan.retire, end);
        Ok(ApplyReport {
            added: plan.added,
            replaced: plan.replaced,
            removed: plan.removed,
            unchanged: plan.unchanged,
            elapsed_ms: start.elapsed().as_millis() as u64,
            still_in_use,
        })
    }

    /// "Can I reach it now?" (a Test connection button): runs `service`'s health check on
    /// the calling thread, now, within `deadline`, without waiting for the maintenance tick;
    /// its outcome is recorded in the service's health as a maintenance probe's is (a
    /// success ends fail-fast at once; a failure counts towards `unhealthy_after`).
    ///
    /// The check is the service's `health_path` (`GET`, `HEAD` for `/`; a status under 500
    /// passes) on a pooled connection, even while the service is unhealthy; without a
    /// `health_path`, or with every connection busy (a wait would say nothing about the
    /// server), a TCP connect to its host. It is not callers' traffic: no request and no
    /// acquisition are counted, and a connection it opens counts in `probe_connections`.
    /// `deadline` bounds it all (a host name's lookup excepted: it ends by
    /// `connect_timeout_ms`); shutdown, or a reconfiguration retiring the service, cuts it
    /// short. A service with several endpoints (`urls`) has each checked at the same time,
    /// so a silent one does not delay the answer past `deadline`.
    ///
    /// ```
    /// # fn main() -> Result<(), backend_pool::Error> {
    /// use std::time::Duration;
    /// use backend_pool::{ManagerConfig, PoolManager, ServiceConfig};
    ///
    /// let config = ManagerConfig::empty().with_service(ServiceConfig::new("svc", "http://127.0.0.1:9"));
    /// let manager = PoolManager::new(config)?;
    /// let report = manager.probe("svc", Duration::from_secs(1))?; // nothing listens on 9
    /// assert!(!report.reachable);
    /// println!("{}: {}", report.check, report.error.unwrap_or_default());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Not for an unreachable service (that is the report's answer):
    /// [`Error::UnknownService`], [`Error::ShuttingDown`].
    pub fn probe(&self, service: &str, deadline: Duration) -> Result<ProbeReport, Error> {
        if self.registry.is_closed() {
            return Err(Error::ShuttingDown {
                service: Some(service.to_string()),
            });
        }
        let s = self
            .registry
            .find(service)
            .ok_or_else(|| self.unknown(service))?;
        let start = Instant::now();
        let probed = maintenance::probe_now(&s, deadline);
        Ok(ProbeReport {
            service: s.core.name.clone(),
            reachable: probed.outcome.is_ok(),
            check: probed.check,
            error: probed.outcome.err(),
            elapsed_ms: start.elapsed().as_millis() as u64,
            health: s.health(),
        })
    }

    /// Shuts down gracefully within `deadline`: new checkouts and blocked waiters get
    /// [`Error::ShuttingDown`], idle connections close now, connections in use close when
    /// returned, the maintenance threads are joined. Idempotent; dropping the manager does the
    /// same without waiting for connections in use. Services a reconfiguration is still
    /// retiring are shut down with the others.
    ///
    /// Maintenance blocked on a slow server (a connect to a host that drops SYNs, a handshake
    /// that drips, a pong or a health probe that never comes) is cut short first, and so is a
    /// WebSocket checkout still opening its socket (TCP connect, TLS, upgrade: that socket
    /// could only be closed again); they return [`Error::ShuttingDown`]. So the threads join
    /// within milliseconds and the call returns within `deadline` plus the time to close the
    /// idle connections (a close frame each, bounded by 100 ms; on loopback well under a
    /// millisecond).
    ///
    /// Calls still blocked on a connection when the deadline passes (a request connecting,
    /// in its TLS handshake, waiting for its head or reading its body; a WebSocket read or
    /// send) are interrupted then: their socket is shut down and they return
    /// [`Error::ShuttingDown`] on their own threads. The call waits at most 50 ms more for
    /// them to hand their connections back. So when it returns, no call is still blocked on
    /// a backend (measured with 8 calls blocked: `shutdown(100 ms)` returns in about 104 ms,
    /// every call by then). The one exception is a host name's lookup (the system resolver
    /// cannot be interrupted; an IP literal needs none), which ends by `connect_timeout_ms`.
    ///
    /// # Errors
    /// Never for a clean shutdown. The report lists connections still checked out after the
    /// deadline and the margin (they close when their guards drop).
    pub fn shutdown(&self, deadline: Duration) -> Result<ShutdownReport, Error> {
        self.shutdown_inner(deadline, true)
    }

    fn shutdown_inner(
        &self,
        deadline: Duration,
        wait_in_use: bool,
    ) -> Result<ShutdownReport, Error> {
        let start = Instant::now();
        let end = crate::clock::deadline(start, deadline);
        let first = self.registry.close();
        if first {
            log::debug!(target: "backend_pool", "pool manager shutting down");
        }
        // Taken under `changes`: a reconfiguration's swap is either in this list or refused.
        let services = {
            let _changes = self.registry.changes();
            self.registry.all()
        };
        for s in &services {
            s.close();
        }
        // After the pools closed: what an aborted step hands back is closed, not kept.
        for s in &services {
            s.abort_all();
        }
        let mut joined = true;
        let maintenance = self.maintenance.lock().take();
        if let Some(m) = maintenance {
            joined = m.stop(end);
            if !joined {
                log::warn!(target: "backend_pool", "maintenance threads still busy at the shutdown deadline");
            }
        }
        // Wait (bounded) for connections in use to come back and close; at the deadline,
        // interrupt the calls still blocked on a connection, so none outlives the shutdown
        // by more than `ABORT_MARGIN`.
        let still = if wait_in_use {
            registry::drain(&services, end)
        } else {
            let mut out = Vec::new();
            for s in &services {
                s.in_use(&mut out);
            }
            out
        };
        for u in &still {
            log::warn!(target: "backend_pool",
                "service '{}': {} {} connection(s) still in use at the shutdown deadline",
                u.service, u.count, u.kind);
        }
        Ok(ShutdownReport {
            elapsed_ms: start.elapsed().as_millis() as u64,
            still_in_use: still,
            maintenance_joined: joined,
        })
    }

    /// Runs one maintenance pass on the calling thread with every health check due: idle
    /// sockets are pinged and health paths probed now, whatever their interval (the
    /// background threads probe each service once per `health_interval_ms`). For tests and
    /// hosts that want to force a check. Services are tended one after another, each step
    /// bounded by its own deadlines (a background step of the same service is waited for);
    /// a shutdown cuts the pass short. For one service's reachability, within a deadline of
    /// your own, see [`PoolManager::probe`].
    pub fn run_maintenance(&self) {
        maintenance::run_now(&self.registry);
    }
}

/// The system refused a maintenance thread.
fn thread_refused(what: &str, e: &std::io::Error) -> Error {
    Error::Config(ConfigError::invalid(
        "(manager)",
        "maintenance thread",
        &format!("{what}: {e}"),
    ))
}

impl fmt::Debug for PoolManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolManager")
            .field("services", &self.service_names())
            .field("closed", &self.registry.is_closed())
            .finish()
    }
}

impl Drop for PoolManager {
    /// Shuts down without waiting for connections still checked out (they close when their
    /// guards drop); cuts blocked maintenance short and waits at most 50 ms for its threads
    /// (they normally exit within a millisecond; one held by a name lookup in progress
    /// finishes its bounded step on its own).
    fn drop(&mut self) {
        let _ = self.shutdown_inner(maintenance::DROP_JOIN, false);
    }
}

/// A process-wide manager for hosts that load and unload the crate's user repeatedly (a
/// Blender add-on's `register` / `unregister`).
///
/// ```
/// # fn main() -> Result<(), backend_pool::Error> {
/// use std::time::Duration;
/// use backend_pool::{global, ManagerConfig};
///
/// let first = global::init(ManagerConfig::empty())?;
/// let again = global::init(ManagerConfig::default())?; // idempotent: the same manager
/// assert!(std::sync::Arc::ptr_eq(&first, &again));
/// drop((first, again));
/// global::shutdown(Duration::from_secs(1))?;
/// assert!(global::get().is_none());
/// let _fresh = global::init(ManagerConfig::empty())?; // a new one after shutdown
/// global::shutdown(Duration::from_secs(1))?;
/// # Ok(()) }
/// ```
pub mod global {
    use super::*;

    static GLOBAL: Mutex<Option<Arc<PoolManager>>> = parking_lot::const_mutex(None);

    /// Starts the process-wide manager, or returns the running one (its configuration is kept;
    /// `config` is then ignored).
    ///
    /// # Errors
    /// As [`PoolManager::new`].
    pub fn init(config: ManagerConfig) -> Result<Arc<PoolManager>, Error> {
        let mut global = GLOBAL.lock();
        if let Some(m) = global.as_ref() {
            return Ok(Arc::clone(m));
        }
        let m = Arc::new(PoolManager::new(config)?);
        *global = Some(Arc::clone(&m));
        Ok(m)
    }

    /// The running process-wide manager, if any.
    pub fn get() -> Option<Arc<PoolManager>> {
        GLOBAL.lock().clone()
    }

    /// Shuts the process-wide manager down (see [`PoolManager::shutdown`]); afterwards
    /// [`init`] starts a new one. `Ok(None)` if none was running.
    ///
    /// # Errors
    /// As [`PoolManager::shutdown`].
    pub fn shutdown(deadline: Duration) -> Result<Option<ShutdownReport>, Error> {
        let taken = GLOBAL.lock().take();
        match taken {
            Some(m) => m.shutdown(deadline).map(Some),
            None => Ok(None),
        }
    }
}
