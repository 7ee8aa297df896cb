//! Statistics: lock-free counters on the hot path, a bounded latency histogram, and plain
//! `Serialize` snapshots rendered as JSON or Prometheus text (`prometheus.rs`).
//!
//! Figures are a snapshot: counters are read one by one while traffic continues, so two
//! figures read together may differ by the operations that ran in between.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

use crate::error::{ErrorClass, PoolKind, PoolState};
use crate::health::HealthSnapshot;

mod prometheus;

/// Why a connection was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseCause {
    Idle,
    Lifetime,
    Broken,
    Health,
    Shutdown,
    /// A WebSocket lease ended while what it started may still be running.
    Abandoned,
}

/// The counters of one pool. All `Relaxed`: they are statistics, not synchronisation.
#[derive(Default)]
pub(crate) struct PoolCounters {
    pub acquisitions: AtomicU64,
    /// HTTP requests answered (an HTTP pool's only; see [`PoolStats::requests`]).
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub created: AtomicU64,
    pub connect_failures: AtomicU64,
    pub closed_total: AtomicU64,
    closed: [AtomicU64; 6],
    errors: [AtomicU64; ErrorClass::ALL.len()],
    pub leaks_detected: AtomicU64,
    pub acquire_time: Histogram,
}

impl PoolCounters {
    pub(crate) fn closed(&self, cause: CloseCause, n: u64) {
        self.closed[cause as usize].fetch_add(n, Relaxed);
    }

    /// A health probe's TCP connection: opened and closed at once.
    pub(crate) fn probe_connection(&self) {
        self.created.fetch_add(1, Relaxed);
        self.closed(CloseCause::Health, 1);
        self.closed_total.fetch_add(1, Relaxed);
    }

    /// Connections open now (created − closed).
    pub(crate) fn open(&self) -> usize {
        let created = self.created.load(Relaxed);
        created.saturating_sub(self.closed_total.load(Relaxed)) as usize
    }

    pub(crate) fn error(&self, class: ErrorClass) {
        let i = ErrorClass::ALL
            .iter()
            .position(|c| *c == class)
            .unwrap_or(0);
        self.errors[i].fetch_add(1, Relaxed);
    }

    /// Reads the counters into a snapshot; `occupancy` comes from the pool.
    pub(crate) fn snapshot(&self, kind: PoolKind, occ: PoolState) -> PoolStats {
        let created = self.created.load(Relaxed);
        let closed_total = self.closed_total.load(Relaxed);
        let c = |cause: CloseCause| self.closed[cause as usize].load(Relaxed);
        let by_cause = [
            c(CloseCause::Idle),
            c(CloseCause::Lifetime),
            c(CloseCause::Broken),
            c(CloseCause::Health),
            c(CloseCause::Shutdown),
            c(CloseCause::Abandoned),
        ];
        let errors = ErrorCounts(
            ErrorClass::ALL
                .iter()
                .zip(&self.errors)
                .map(|(class, n)| (class.name(), n.load(Relaxed)))
                .collect(),
        );
        PoolStats {
            kind,
            acquisitions: self.acquisitions.load(Relaxed),
            // A WebSocket pool sends no requests: its uses are its checkouts.
            requests: (kind == PoolKind::Http).then(|| self.requests.load(Relaxed)),
            retries: self.retries.load(Relaxed),
            connections_created: created,
            connect_failures: self.connect_failures.load(Relaxed),
            connections_open: created.saturating_sub(closed_total),
            closed: ClosedCounts {
                idle: by_cause[0],
                lifetime: by_cause[1],
                broken: by_cause[2],
                health: by_cause[3],
                shutdown: by_cause[4],
                abandoned: by_cause[5],
                // Closed by the server or dropped by the HTTP client (keep-alive expiry).
                other: closed_total.saturating_sub(by_cause.iter().sum()),
            },
            in_use: occ.in_use,
            idle: occ.idle,
            waiting: occ.waiting,
            max: occ.max,
            leaks_detected: self.leaks_detected.load(Relaxed),
            acquire_time: self.acquire_time.snapshot(),
            errors,
        }
    }
}

/// Sub-buckets per power of two: 4 gives ≤ 19 % relative error on percentiles.
const SUB: u32 = 4;
const BUCKETS: usize = 64 * SUB as usize;

/// A log-linear histogram of durations in nanoseconds: fixed memory (256 counters), lock-free.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub(crate) fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
        self.max_ns.fetch_max(ns, Relaxed);
    }

    fn snapshot(&self) -> LatencyStats {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        let max_ns = self.max_ns.load(Relaxed);
        let quantile = |q: f64| -> f64 {
            if count == 0 {
                return 0.0;
            }
            let rank = ((count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, &n) in counts.iter().enumerate() {
                if seen + n >= rank {
                    // Interpolate linearly inside the bucket.
                    let lower = if i == 0 { 0 } else { bucket_upper(i - 1) + 1 };
                    let upper = bucket_upper(i).min(max_ns).max(lower);
                    let within = (rank - seen) as f64 / n as f64;
                    return (lower as f64 + (upper - lower) as f64 * within) / 1000.0;
                }
                seen += n;
            }
            max_ns as f64 / 1000.0
        };
        LatencyStats {
            count,
            mean_us: if count == 0 {
                0.0
            } else {
                self.sum_ns.load(Relaxed) as f64 / count as f64 / 1000.0
            },
            p50_us: quantile(0.50),
            p99_us: quantile(0.99),
            max_us: max_ns as f64 / 1000.0,
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros(); // ns >= 4 so exp >= 2
    let sub = (ns >> (exp - 2)) & (SUB as u64 - 1);
    ((exp - 1) * SUB) as usize + sub as usize
}

fn bucket_upper(i: usize) -> u64 {
    if i < SUB as usize {
        return i as u64;
    }
    let exp = (i / SUB as usize) as u32 + 1;
    let sub = (i % SUB as usize) as u64;
    // Values in this bucket are [ (4+sub) << (exp-2), (5+sub) << (exp-2) ).
    let upper = (u128::from(SUB as u64 + sub + 1) << (exp - 2)) - 1;
    u64::try_from(upper).unwrap_or(u64::MAX)
}

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
pub struct ErrorCounts(Vec<(&'static str, u64)>);

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

    fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
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
    /// HTTP requests answered (a response head arrived), health probes included. `None` for
    /// a WebSocket pool, which sends no requests (`null` in JSON; no `requests_total` series
    /// in Prometheus): its uses are `acquisitions`.
    pub requests: Option<u64>,
    /// Idempotent requests retried once on a fresh connection after a stale one failed.
    pub retries: u64,
    /// Real connections opened (TCP connects for HTTP, handshakes for WebSocket).
    pub connections_created: u64,
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
    /// connection: `1 − connections_created / uses`, 0 when nothing ran.
    pub fn reuse_rate(&self) -> f64 {
        reuse(self.connections_created, self.uses())
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
}

impl ServiceStats {
    fn pools(&self) -> impl Iterator<Item = &PoolStats> {
        self.http.iter().chain(self.websocket.iter())
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
    /// `1 − connections_created / uses`, uses being HTTP requests plus WebSocket checkouts
    /// (see [`PoolStats`]).
    pub reuse_rate: f64,
}

impl ManagerStats {
    pub(crate) fn new(services: Vec<ServiceStats>) -> Self {
        let mut t = Totals::default();
        let mut uses = 0;
        for p in services.iter().flat_map(ServiceStats::pools) {
            t.acquisitions += p.acquisitions;
            t.requests += p.requests.unwrap_or(0);
            uses += p.uses();
            t.connections_created += p.connections_created;
            t.connections_open += p.connections_open;
            t.in_use += p.in_use;
            t.idle += p.idle;
            t.waiting += p.waiting;
            t.errors += p.errors.total();
            t.leaks_detected += p.leaks_detected;
        }
        t.reuse_rate = reuse(t.connections_created, uses);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut last = 0;
        for ns in (0..100_000u64).chain([1 << 40, u64::MAX]) {
            let b = bucket_of(ns);
            assert!(b >= last && b < BUCKETS, "{ns}");
            assert!(bucket_upper(b) >= ns, "{ns} above its bucket's bound");
            last = b;
        }
    }

    #[test]
    fn percentiles_are_close() {
        let h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 1000);
        assert!((450.0..=550.0).contains(&s.p50_us), "{}", s.p50_us);
        assert!((940.0..=1000.0).contains(&s.p99_us), "{}", s.p99_us);
        assert_eq!(s.max_us, 1000.0);
        assert!((s.mean_us - 500.5).abs() < 0.01);
    }
}
