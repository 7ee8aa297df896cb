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

/// Threads of this crate still alive (named `backend-pool-*`; Linux and Windows).
pub fn pool_threads() -> usize {
    backend_pool_testkit::thread_names()
        .iter()
        .filter(|name| name.starts_with("backend-pool"))
        .count()
}

/// Signal delivery to a blocked thread (EINTR).
#[cfg(unix)]
pub mod signals;

/// The one scripted loopback server of the tests, and what its scripts use.
pub mod raw;

/// A server that stalls its client in one phase and counts hang-ups.
pub mod stall;

/// A self-signed certificate for `names` (written as PEM to a temp file named with `tag`, for
/// a service's `ca_file`) and a rustls server configuration serving it.
pub fn self_signed(
    names: &[&str],
    tag: &str,
) -> (std::sync::Arc<rustls::ServerConfig>, std::path::PathBuf) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let cert =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let pem = std::env::temp_dir().join(format!("backend-pool-{tag}-{}.pem", std::process::id()));
    std::fs::write(&pem, cert.cert.pem()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der())),
    )
    .unwrap();
    (std::sync::Arc::new(config), pem)
}

/// Installs (once per test binary) a logger that records every record at every level, as
/// `LEVEL target message` lines.
pub fn capture_logs() -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::sync::OnceLock;
    use std::sync::{Arc, Mutex};
    static LOGS: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    struct Capture(Arc<Mutex<Vec<String>>>);
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            let line = format!("{} {} {}", record.level(), record.target(), record.args());
            self.0.lock().unwrap().push(line);
        }
        fn flush(&self) {}
    }
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        log::set_boxed_logger(Box::new(Capture(Arc::clone(&logs)))).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
        logs
    })
    .clone()
}

/// A loopback WebSocket echo server on `/ws`.
pub fn ws_echo_server() -> backend_pool_testkit::TestServer {
    backend_pool_testkit::TestServer::builder()
        .websocket("/ws", |_| {})
        .build()
        .unwrap()
}

/// A loopback HTTP server answering every request with its method and path.
pub fn http_echo_server() -> backend_pool_testkit::TestServer {
    use backend_pool_testkit::{Response, TestServer};
    TestServer::builder()
        .http(|req| Response::text(200, &format!("{} {}", req.method, req.path)))
        .build()
        .unwrap()
}

/// The first service's HTTP pool counted exactly one error, of `class`.
pub fn assert_one_error(m: &backend_pool::PoolManager, class: backend_pool::ErrorClass) {
    let stats = m.stats().services[0].http.clone().expect("an HTTP pool");
    assert_eq!(stats.errors.get(class), 1, "{:?}", stats.errors);
    assert_eq!(stats.errors.total(), 1, "{:?}", stats.errors);
}
