//! The figures a snapshot holds: plain `Serialize` types, rendered as JSON here and as
//! Prometheus text in `prometheus.rs`.

use serde::Serialize;

use crate::error::{ErrorClass, PoolKind};
use crate::health::HealthSnapshot;

/// Acquisition-time figures in microseconds (percentiles from the histogram's buckets).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LatencyStats {
    /// Samples recorded.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median (interpolated inside its histogram bucket: within 19 %).
    pub p50_us: f64,
    /// 99th percentile (interpolated inside its histogram bucket).
    pub p99_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

/// Connections closed, by cause. More causes may come.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ClosedCounts {
    /// Idle past `idle_timeout_ms` beyond the minimum.
    pub idle: u64,
    /// Past `max_lifetime_ms`.
    pub lifetime: u64,
    /// Saw an error, a close frame, or a panic while checked out.
    pub broken: u64,
    /// Failed a health ping.
    pub health: u64,
    /// Closed by shutdown.
    pub shutdown: u64,
    /// WebSocket: closed at the end of a lease that was not at a quiet point (it exposed its
    /// client id or sent, and ended without `WsGuard::finish`; or it stopped inside a
    /// message), so the next lease cannot receive its traffic.
    pub abandoned: u64,
    /// Closed by the server or by the HTTP client's keep-alive expiry.
    pub other: u64,
}

/// Error counts by class (see [`ErrorClass`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounts(pub(super) Vec<(&'static str, u64)>);

impl ErrorCounts {
    /// The count for one class.
    pub fn get(&self, class: ErrorClass) -> u64 {
        self.0
            .iter()
            .find(|(name, _)| *name == class.name())
            .map_or(0, |(_, n)| *n)
    }

    /// The sum over all classes.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().copied()
    }
}

impl Serialize for ErrorCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// One pool's figures (a snapshot).
///
/// A pool's *uses* are what its reuse rate counts: HTTP requests for an HTTP pool (a
/// checkout sends one request), checkouts (`acquisitions`) for a WebSocket pool (a lease
/// sends any number of messages).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PoolStats {
    /// HTTP or WebSocket.
    pub kind: PoolKind,
    /// Successful checkouts.
    pub acquisitions: u64,
    /// HTTP requests answered (a response head arrived): callers' requests, not the pool's
    /// health probes. `None` for
    /// a WebSocket pool, which sends no requests (`null` in JSON; no `requests_total` series
    /// in Prometheus): its uses are `acquisitions`.
    pub requests: Option<u64>,
    /// Idempotent requests retried once on a fresh connection after a stale one failed.
    pub retries: u64,
    /// Real connections opened (TCP connects for HTTP, handshakes for WebSocket).
    pub connections_created: u64,
    /// Of `connections_created`, those health probes opened: left out of the reuse rate,
    /// which measures callers' traffic.
    pub probe_connections: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Connections open now (created − closed).
    pub connections_open: u64,
    /// Connections closed, by cause.
    pub closed: ClosedCounts,
    /// Checked out now.
    pub in_use: usize,
    /// Idle now.
    pub idle: usize,
    /// Callers waiting now.
    pub waiting: usize,
    /// The pool's cap.
    pub max: usize,
    /// Connections held past the leak threshold (each counted once).
    pub leaks_detected: u64,
    /// Time to check a connection out.
    pub acquire_time: LatencyStats,
    /// Errors by class.
    pub errors: ErrorCounts,
}

impl PoolStats {
    /// The pool's uses: HTTP requests, or WebSocket checkouts.
    fn uses(&self) -> u64 {
        self.requests.unwrap_or(self.acquisitions)
    }

    /// Share of uses (HTTP requests, WebSocket checkouts) served without opening a
    /// connection: `1 − (connections_created − probe_connections) / uses`, 0 when nothing
    /// ran. Health probes are neither uses nor their connections counted here.
    pub fn reuse_rate(&self) -> f64 {
        reuse(self.callers_connections(), self.uses())
    }

    /// Connections opened for callers' traffic (not by health probes).
    fn callers_connections(&self) -> u64 {
        self.connections_created
            .saturating_sub(self.probe_connections)
    }

    /// Errors per use (HTTP request, WebSocket checkout) attempted.
    pub fn error_rate(&self) -> f64 {
        let errors = self.errors.total();
        let attempts = self.uses().max(self.acquisitions) + errors;
        if attempts == 0 {
            0.0
        } else {
            errors as f64 / attempts as f64
        }
    }
}

/// One service's figures.
///
/// With several endpoints (`urls`), `http` and `websocket` are the sums over the
/// endpoints (the acquire-time percentiles are the largest endpoint's, the mean is over all
/// samples), `health` is the healthiest endpoint's, and `endpoints` holds each endpoint's
/// own figures. With one URL, `endpoints` is empty (and left out of the JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ServiceStats {
    /// The service name.
    pub name: String,
    /// Health state and the last check.
    pub health: HealthSnapshot,
    /// The HTTP pool, if the service has one.
    pub http: Option<PoolStats>,
    /// The WebSocket pool, if the service has one.
    pub websocket: Option<PoolStats>,
    /// Each endpoint's figures, in configuration order, when the service has several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointStats>,
}

/// One endpoint's figures, in a service that lists several (`urls`). A snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EndpointStats {
    /// The endpoint's base URL, as configured.
    pub url: String,
    /// The endpoint's health.
    pub health: HealthSnapshot,
    /// Its HTTP pool, if the service has one.
    pub http: Option<PoolStats>,
    /// Its WebSocket pool, if the service has one.
    pub websocket: Option<PoolStats>,
    /// Sessions pinned to it now (`PoolManager::session`).
    pub sessions: usize,
    /// The queue length its server reported at its last health probe (ComfyUI's
    /// `exec_info.queue_remaining`, with `health_path = "/prompt"`); `None`: not reported.
    pub queue_remaining: Option<u64>,
}

impl EndpointStats {
    pub(crate) fn new(
        url: String,
        health: HealthSnapshot,
        http: Option<PoolStats>,
        websocket: Option<PoolStats>,
        (sessions, queue_remaining): (usize, Option<u64>),
    ) -> Self {
        EndpointStats {
            url,
            health,
            http,
            websocket,
            sessions,
            queue_remaining,
        }
    }
}

impl ServiceStats {
    pub(crate) fn new(
        name: String,
        health: HealthSnapshot,
        http: Option<PoolStats>,
        websocket: Option<PoolStats>,
        endpoints: Vec<EndpointStats>,
    ) -> Self {
        ServiceStats {
            name,
            health,
            http,
            websocket,
            endpoints,
        }
    }

    pub(super) fn pools(&self) -> impl Iterator<Item = &PoolStats> {
        self.http.iter().chain(self.websocket.iter())
    }

    /// The pools Prometheus lists: the service's own, or each endpoint's with its URL.
    pub(super) fn series(&self) -> Vec<(Option<&str>, &PoolStats)> {
        if self.endpoints.is_empty() {
            return self.pools().map(|p| (None, p)).collect();
        }
        self.endpoints
            .iter()
            .flat_map(|e| {
                let url = Some(e.url.as_str());
                e.http
                    .iter()
                    .chain(e.websocket.iter())
                    .map(move |p| (url, p))
            })
            .collect()
    }
}

impl PoolStats {
    /// The sum of several endpoints' pools of one kind (`None` if there are none).
    pub(crate) fn sum<'a>(pools: impl Iterator<Item = &'a PoolStats>) -> Option<PoolStats> {
        let mut total: Option<PoolStats> = None;
        for p in pools {
            let Some(t) = total.as_mut() else {
                total = Some(p.clone());
                continue;
            };
            t.acquisitions += p.acquisitions;
            t.requests = match (t.requests, p.requests) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            t.retries += p.retries;
            t.connections_created += p.connections_created;
            t.probe_connections += p.probe_connections;
            t.connect_failures += p.connect_failures;
            t.connections_open += p.connections_open;
            let (c, d) = (&mut t.closed, &p.closed);
            c.idle += d.idle;
            c.lifetime += d.lifetime;
            c.broken += d.broken;
            c.health += d.health;
            c.shutdown += d.shutdown;
            c.abandoned += d.abandoned;
            c.other += d.other;
            t.in_use += p.in_use;
            t.idle += p.idle;
            t.waiting += p.waiting;
            t.max += p.max;
            t.leaks_detected += p.leaks_detected;
            let (a, b) = (&mut t.acquire_time, &p.acquire_time);
            let count = a.count + b.count;
            if count > 0 {
                a.mean_us =
                    (a.mean_us * a.count as f64 + b.mean_us * b.count as f64) / count as f64;
            }
            a.count = count;
            a.p50_us = a.p50_us.max(b.p50_us);
            a.p99_us = a.p99_us.max(b.p99_us);
            a.max_us = a.max_us.max(b.max_us);
            for (slot, (_, n)) in t.errors.0.iter_mut().zip(p.errors.iter()) {
                slot.1 += n;
            }
        }
        total
    }
}

/// The manager's figures: every service and totals. A snapshot.
///
/// ```
/// # fn main() -> Result<(), backend_pool::Error> {
/// use backend_pool::{ManagerConfig, PoolManager, ServiceConfig};
///
/// let manager = PoolManager::new(
///     ManagerConfig::empty().with_service(ServiceConfig::new("svc", "http://127.0.0.1:9")),
/// )?;
/// let stats = manager.stats();
/// assert_eq!(stats.services[0].name, "svc");
/// assert!(stats.to_json().contains("\"reuse_rate\""));
/// assert!(stats.to_prometheus().contains("backend_pool_acquisitions_total{service=\"svc\",pool=\"http\"} 0"));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ManagerStats {
    /// Per service, in configuration order.
    pub services: Vec<ServiceStats>,
    /// Sums over every pool.
    pub totals: Totals,
}

/// Sums over every pool of every service.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Totals {
    /// Successful checkouts.
    pub acquisitions: u64,
    /// HTTP requests (WebSocket pools send none).
    pub requests: u64,
    /// Real connections opened.
    pub connections_created: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Checked out now.
    pub in_use: usize,
    /// Idle now.
    pub idle: usize,
    /// Waiting now.
    pub waiting: usize,
    /// Errors of every class.
    pub errors: u64,
    /// Connections held past their leak threshold.
    pub leaks_detected: u64,
    /// `1 − connections opened for callers / uses`, uses being HTTP requests plus WebSocket
    /// checkouts (see [`PoolStats::reuse_rate`]).
    pub reuse_rate: f64,
}

impl ManagerStats {
    pub(crate) fn new(services: Vec<ServiceStats>) -> Self {
        let mut t = Totals::default();
        let (mut uses, mut callers_connections) = (0, 0);
        for p in services.iter().flat_map(ServiceStats::pools) {
            t.acquisitions += p.acquisitions;
            t.requests += p.requests.unwrap_or(0);
            uses += p.uses();
            callers_connections += p.callers_connections();
            t.connections_created += p.connections_created;
            t.connections_open += p.connections_open;
            t.in_use += p.in_use;
            t.idle += p.idle;
            t.waiting += p.waiting;
            t.errors += p.errors.total();
            t.leaks_detected += p.leaks_detected;
        }
        t.reuse_rate = reuse(callers_connections, uses);
        ManagerStats {
            services,
            totals: t,
        }
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceStats> {
        self.services.iter().find(|s| s.name == name)
    }

    /// One JSON object, with the derived rates included per pool.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        for (service, stats) in self.services.iter().zip(
            value
                .get_mut("services")
                .and_then(|v| v.as_array_mut())
                .into_iter()
                .flatten(),
        ) {
            for (key, pool) in [("http", &service.http), ("websocket", &service.websocket)] {
                if let (Some(pool), Some(obj)) =
                    (pool, stats.get_mut(key).and_then(|v| v.as_object_mut()))
                {
                    obj.insert("reuse_rate".into(), pool.reuse_rate().into());
                    obj.insert("error_rate".into(), pool.error_rate().into());
                }
            }
        }
        value.to_string()
    }
}

/// `1 − created / uses`, 0 when nothing ran.
fn reuse(created: u64, uses: u64) -> f64 {
    if uses == 0 {
        return 0.0;
    }
    (1.0 - created as f64 / uses as f64).max(0.0)
}
