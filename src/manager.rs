//! [`PoolManager`]: the entry point for checkouts, statistics and shutdown, over its services
//! (a [`Registry`] it shares with its maintenance threads); and the process-wide handle for
//! hosts such as a Blender add-on.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::config::ManagerConfig;

/// How long [`PoolManager::shutdown`] waits, after its deadline, for the calls it interrupted
/// to hand their connections back.
pub(crate) const ABORT_MARGIN: Duration = Duration::from_millis(50);
use crate::error::{ConfigError, Error, PoolKind};
use crate::health::HealthSnapshot;
use crate::http::{HttpClient, HttpPool};
use crate::maintenance;
use crate::registry::{Registry, Service};
use crate::service::ServiceContext;
use crate::stats::{ManagerStats, ServiceStats};
use crate::ws::{WsGuard, WsPool};

/// Owns every connection to every configured backend.
///
/// Create one per process (or use [`global`](crate::global)), share it by reference or in an
/// `Arc`; all methods take `&self` and are safe from any thread (it is `Send` and `Sync`). Its background threads: the
/// maintenance scheduler, one maintenance worker per service (at most 16, so a slow service
/// never delays another's health checks) and the worker that creates HTTP pool slots.
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
        let mut services = Vec::with_capacity(config.service.len());
        for sc in &config.service {
            let core = Arc::new(ServiceContext::new(sc)?);
            let http = sc
                .http
                .clone()
                .map(|hc| Arc::new(HttpPool::new(Arc::clone(&core), hc, Arc::clone(&threads))));
            let ws = sc
                .websocket
                .clone()
                .map(|wc| Arc::new(WsPool::new(Arc::clone(&core), wc)));
            services.push(Service::new(core, http, ws));
        }
        let registry = Arc::new(Registry::new(services));
        let maintenance = maintenance::Maintenance::start(&registry, config.maintenance_interval())
            .map_err(|e| {
                Error::Config(ConfigError::invalid(
                    "(manager)",
                    "maintenance thread",
                    &format!("could not be started: {e}"),
                ))
            })?;
        log::debug!(target: "backend_pool", "pool manager started with {} services", registry.services.len());
        Ok(PoolManager {
            registry,
            maintenance: Mutex::new(Some(maintenance)),
        })
    }

    fn service(&self, name: &str) -> Result<&Service, Error> {
        if self.registry.is_closed() {
            return Err(Error::ShuttingDown {
                service: Some(name.to_string()),
            });
        }
        self.registry
            .find(name)
            .ok_or_else(|| Error::UnknownService {
                name: name.to_string(),
                known: self.service_names().iter().map(|s| s.to_string()).collect(),
            })
    }

    /// The HTTP pool of `service`, as a cheap handle for building requests.
    ///
    /// # Errors
    /// [`Error::UnknownService`] (listing the known names), [`Error::NoSuchPool`],
    /// [`Error::ShuttingDown`].
    pub fn http(&self, service: &str) -> Result<HttpClient, Error> {
        let s = self.service(service)?;
        s.http
            .clone()
            .map(HttpClient::new)
            .ok_or(Error::NoSuchPool {
                service: service.to_string(),
                kind: PoolKind::Http,
            })
    }

    /// Checks out a WebSocket of `service`, waiting at most its `wait_timeout_ms`.
    ///
    /// # Errors
    /// As [`PoolManager::http`], plus [`Error::PoolTimeout`], [`Error::ServiceUnavailable`]
    /// and connect errors.
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

    fn ws_pool(&self, service: &str) -> Result<&Arc<WsPool>, Error> {
        self.service(service)?
            .ws
            .as_ref()
            .ok_or_else(|| Error::NoSuchPool {
                service: service.to_string(),
                kind: PoolKind::WebSocket,
            })
    }

    /// The configured service names, in order.
    pub fn service_names(&self) -> Vec<&str> {
        self.registry
            .services
            .iter()
            .map(|s| s.core.name.as_str())
            .collect()
    }

    /// The health of `service`.
    ///
    /// # Errors
    /// [`Error::UnknownService`].
    pub fn health(&self, service: &str) -> Result<HealthSnapshot, Error> {
        self.registry
            .find(service)
            .map(|s| s.core.health.snapshot())
            .ok_or_else(|| Error::UnknownService {
                name: service.to_string(),
                known: self.service_names().iter().map(|s| s.to_string()).collect(),
            })
    }

    /// A snapshot of every figure; render it with [`ManagerStats::to_json`] or
    /// [`ManagerStats::to_prometheus`].
    pub fn stats(&self) -> ManagerStats {
        ManagerStats::new(
            self.registry
                .services
                .iter()
                .map(|s| ServiceStats {
                    name: s.core.name.clone(),
                    health: s.core.health.snapshot(),
                    http: s.http.as_ref().map(|p| p.stats()),
                    websocket: s.ws.as_ref().map(|p| p.stats()),
                })
                .collect(),
        )
    }

    /// Shuts down gracefully within `deadline`: new checkouts and blocked waiters get
    /// [`Error::ShuttingDown`], idle connections close now, connections in use close when
    /// returned, the maintenance threads are joined. Idempotent; dropping the manager does the
    /// same without waiting for connections in use.
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
        for s in &self.registry.services {
            if let Some(p) = &s.http {
                p.close();
            }
            if let Some(p) = &s.ws {
                p.close();
            }
        }
        // After the pools closed: what an aborted step hands back is closed, not kept.
        for s in &self.registry.services {
            s.core.aborts.abort_all();
        }
        let mut joined = true;
        let maintenance = self.maintenance.lock().take();
        if let Some(m) = maintenance {
            joined = m.stop(end);
            if !joined {
                log::warn!(target: "backend_pool", "maintenance threads still busy at the shutdown deadline");
            }
        }
        // Wait (bounded) for connections in use to come back and close.
        let mut still = self.in_use();
        while wait_in_use && !still.is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2).min(end - Instant::now()));
            still = self.in_use();
        }
        if wait_in_use && !still.is_empty() {
            // The deadline passed: interrupt the calls still blocked on a connection, so
            // none outlives the shutdown by more than `ABORT_MARGIN`.
            for s in &self.registry.services {
                if let Some(p) = &s.http {
                    p.core.leases.interrupt_held();
                }
                if let Some(p) = &s.ws {
                    p.core.leases.interrupt_held();
                }
            }
            let margin = Instant::now() + ABORT_MARGIN;
            while !still.is_empty() && Instant::now() < margin {
                std::thread::sleep(Duration::from_millis(2));
                still = self.in_use();
            }
        }
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

    fn in_use(&self) -> Vec<InUse> {
        let mut out = Vec::new();
        for s in &self.registry.services {
            let counts = [
                (PoolKind::Http, s.http.as_ref().map_or(0, |p| p.in_use())),
                (PoolKind::WebSocket, s.ws.as_ref().map_or(0, |p| p.in_use())),
            ];
            for (kind, count) in counts {
                if count > 0 {
                    out.push(InUse {
                        service: s.core.name.clone(),
                        kind,
                        count,
                    });
                }
            }
        }
        out
    }

    /// Runs one maintenance pass on the calling thread with every health check due: idle
    /// sockets are pinged and health paths probed now, whatever their interval (the
    /// background threads probe each service once per `health_interval_ms`). For tests and
    /// hosts that want to force a check. Services are tended one after another, each step
    /// bounded by its own deadlines (a background step of the same service is waited for);
    /// a shutdown cuts the pass short.
    pub fn run_maintenance(&self) {
        maintenance::run_now(&self.registry);
    }
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
