//! Statistics: lock-free counters on the hot path, a bounded latency histogram, and plain
//! `Serialize` snapshots rendered as JSON or Prometheus text (`prometheus.rs`).
//!
//! Figures are a snapshot: counters are read one by one while traffic continues, so two
//! figures read together may differ by the operations that ran in between.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::{ErrorClass, PoolKind, PoolState};

mod histogram;
mod prometheus;
mod snapshot;

pub(crate) use histogram::Histogram;
pub use snapshot::{
    ClosedCounts, EndpointStats, ErrorCounts, LatencyStats, ManagerStats, PoolStats, ServiceStats,
    Totals,
};

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
    /// Of `created`, the connections health probes opened: not callers' traffic, so left out
    /// of the reuse rate.
    pub probe_connects: AtomicU64,
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
        self.probe_connects.fetch_add(1, Relaxed);
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
            probe_connections: self.probe_connects.load(Relaxed),
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
