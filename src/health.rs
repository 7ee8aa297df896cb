//! Per-service health: healthy / degraded / unhealthy, from health probes and from the
//! outcomes of real requests.
//!
//! The hot path only touches an atomic (a success reads one counter and writes nothing when
//! the service was already healthy). A service is unhealthy after `unhealthy_after`
//! consecutive failures; while it is, acquisitions fail fast with
//! [`Error::ServiceUnavailable`] and the maintenance thread probes it every tick until one
//! probe succeeds.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

use crate::error::Error;

/// A service's health state. More states may come: match with a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthState {
    /// The last check or request succeeded.
    Healthy,
    /// Some recent checks or connects failed, fewer than the threshold.
    Degraded,
    /// `unhealthy_after` consecutive failures: acquisitions fail fast.
    Unhealthy,
}

impl HealthState {
    /// 1 healthy, 0.5 degraded, 0 unhealthy (for a Prometheus gauge).
    pub fn as_gauge(self) -> f64 {
        match self {
            HealthState::Healthy => 1.0,
            HealthState::Degraded => 0.5,
            HealthState::Unhealthy => 0.0,
        }
    }
}

/// A service's health at one moment. Fields may be added: read them, don't build the
/// struct.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HealthSnapshot {
    /// The state.
    pub state: HealthState,
    /// Consecutive failed checks or connects.
    pub consecutive_failures: u32,
    /// When the last probe ran, as milliseconds since the Unix epoch (`None`: never).
    pub last_check_unix_ms: Option<u64>,
    /// Why the last failure happened (never holds secrets: messages come from the transport).
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Record {
    last_check: Option<SystemTime>,
    last_error: Option<String>,
}

pub(crate) struct Health {
    service: String,
    unhealthy_after: u32,
    failures: AtomicU32,
    record: Mutex<Record>,
}

impl Health {
    pub(crate) fn new(service: &str, unhealthy_after: u32) -> Self {
        Health {
            service: service.to_string(),
            unhealthy_after,
            failures: AtomicU32::new(0),
            record: Mutex::new(Record::default()),
        }
    }

    pub(crate) fn state(&self) -> HealthState {
        match self.failures.load(Relaxed) {
            0 => HealthState::Healthy,
            n if n < self.unhealthy_after => HealthState::Degraded,
            _ => HealthState::Unhealthy,
        }
    }

    /// Fails fast while unhealthy.
    pub(crate) fn gate(&self) -> Result<(), Error> {
        let failures = self.failures.load(Relaxed);
        if failures < self.unhealthy_after {
            return Ok(());
        }
        Err(Error::ServiceUnavailable {
            service: self.service.clone(),
            consecutive_failures: failures,
            last_error: self
                .record
                .lock()
                .last_error
                .clone()
                .unwrap_or_else(|| "unknown".into()),
        })
    }

    pub(crate) fn success(&self) {
        if self.failures.load(Relaxed) != 0 {
            let before = self.failures.swap(0, Relaxed);
            if before >= self.unhealthy_after {
                log::info!(target: "backend_pool", "service '{}': healthy again", self.service);
            }
        }
    }

    pub(crate) fn failure(&self, why: String) {
        let n = self.failures.fetch_add(1, Relaxed).saturating_add(1);
        if n == self.unhealthy_after {
            log::warn!(target: "backend_pool", "service '{}': unhealthy after {n} failures: {why}", self.service);
        }
        self.record.lock().last_error = Some(why);
    }

    /// Records a probe's outcome.
    pub(crate) fn probed(&self, outcome: Result<(), String>) {
        self.record.lock().last_check = Some(SystemTime::now());
        match outcome {
            Ok(()) => self.success(),
            Err(why) => {
                log::warn!(target: "backend_pool", "service '{}': health check failed: {why}", self.service);
                self.failure(why)
            }
        }
    }

    pub(crate) fn snapshot(&self) -> HealthSnapshot {
        let record = self.record.lock();
        HealthSnapshot {
            state: self.state(),
            consecutive_failures: self.failures.load(Relaxed),
            last_check_unix_ms: record.last_check.map(|t| {
                t.duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_millis() as u64
            }),
            last_error: record.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_consecutive_failures() {
        let h = Health::new("svc", 2);
        assert_eq!(h.state(), HealthState::Healthy);
        h.failure("refused".into());
        assert_eq!(h.state(), HealthState::Degraded);
        assert!(h.gate().is_ok());
        h.probed(Err("refused again".into()));
        assert_eq!(h.state(), HealthState::Unhealthy);
        let err = h.gate().unwrap_err().to_string();
        assert!(
            err.contains("refused again") && err.contains("'svc'"),
            "{err}"
        );
        h.probed(Ok(()));
        assert_eq!(h.state(), HealthState::Healthy);
        assert!(h.snapshot().last_check_unix_ms.is_some());
    }
}
