//! Helpers shared by the integration tests: one-service managers on loopback servers.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use backend_pool::{ManagerConfig, PoolManager, ServiceConfig};

/// A service config pointing at `url` with small, test-friendly timeouts.
pub fn service(name: &str, url: &str) -> ServiceConfig {
    ServiceConfig {
        wait_timeout_ms: 5_000,
        connect_timeout_ms: 2_000,
        request_timeout_ms: 5_000,
        read_idle_timeout_ms: 5_000,
        health_timeout_ms: 1_000,
        ..ServiceConfig::new(name, url)
    }
}

/// A manager with one service and a fast maintenance tick.
pub fn manager(service: ServiceConfig) -> PoolManager {
    PoolManager::new(ManagerConfig {
        maintenance_interval_ms: 50,
        service: vec![service],
    })
    .expect("valid config")
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Sets `max` (and `min`) of the HTTP pool.
pub fn with_http_size(mut s: ServiceConfig, max: u32, min: u32) -> ServiceConfig {
    let http = s.http.as_mut().expect("http pool");
    http.max_connections = max;
    http.min_connections = min;
    s
}

/// Threads of this crate still alive (named `backend-pool-*`).
pub fn pool_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .filter(|name| name.starts_with("backend-pool"))
                .count()
        })
        .unwrap_or(0)
}

/// Signal delivery to a blocked thread (EINTR).
#[cfg(unix)]
pub mod signals;
