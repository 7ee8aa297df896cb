//! After shutdown the process holds none of the manager's sockets or threads.
//! Counts are process-wide: this binary holds one test only.

mod support;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use backend_pool::{ManagerConfig, PoolManager, WsPoolConfig};
use backend_pool_testkit::{fd_count, thread_count, Response, TestServer};
use support::{eventually, pool_threads, service};

#[test]
fn fds_and_threads_return_to_baseline_after_shutdown_cycles() {
    let server = TestServer::builder()
        .http(|_| Response::text(200, "ok"))
        .websocket("/ws", |_| {})
        .build()
        .unwrap();
    let mut svc = service("svc", &server.http_url());
    svc.websocket = Some(WsPoolConfig {
        max_connections: 4,
        min_connections: 2,
        ..WsPoolConfig::default()
    });
    let config = ManagerConfig {
        maintenance_interval_ms: 20,
        service: vec![svc],
    };
    // Warm up once so lazily initialised process state (resolver, TLS) is in the baseline.
    run_cycle(&config, &server);
    // The HTTP pools' worker exits once its last pool is dropped, a moment after shutdown.
    assert!(eventually(Duration::from_secs(2), || server.open() == 0
        && pool_threads() == 0));
    let (fds, threads) = (fd_count(), thread_count());
    for _ in 0..5 {
        run_cycle(&config, &server);
    }
    assert!(
        eventually(Duration::from_secs(3), || fd_count() == fds
            && thread_count() == threads),
        "fds {fds} -> {}, threads {threads} -> {}",
        fd_count(),
        thread_count()
    );
    assert!(eventually(Duration::from_secs(2), || server.open() == 0));
    assert_eq!(pool_threads(), 0);
}

/// Starts a manager, drives HTTP and WebSocket traffic from 16 threads, shuts it down.
fn run_cycle(config: &ManagerConfig, server: &TestServer) {
    let m = Arc::new(PoolManager::new(config.clone()).unwrap());
    let workers: Vec<_> = (0..16)
        .map(|i| {
            let m = Arc::clone(&m);
            thread::spawn(move || {
                for _ in 0..20 {
                    m.http("svc").unwrap().get("/").call().unwrap();
                    if i % 4 == 0 {
                        let mut ws = m.websocket("svc").unwrap();
                        ws.send_text("x").unwrap();
                        ws.read().unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert!(server.accepted() > 0);
    let report = m.shutdown(Duration::from_secs(2)).unwrap();
    assert!(report.still_in_use.is_empty() && report.maintenance_joined);
    let stats = m.stats();
    for pool in [&stats.services[0].http, &stats.services[0].websocket] {
        assert_eq!(pool.as_ref().unwrap().connections_open, 0, "{stats:?}");
    }
    drop(m);
}
