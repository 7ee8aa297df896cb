//! Issue 3, benchmark 6: the cost of one maintenance cycle (`PoolManager::run_maintenance`)
//! with 5 services whose pools hold their maximum of connections, all idle.
//!
//! Two measurements per case:
//! * `wall`: criterion's wall time of one `run_maintenance()` call;
//! * `cpu`: the calling thread's CPU time (from `/proc/thread-self/schedstat`, nanoseconds),
//!   reported through `iter_custom`, so waiting for pongs does not count.
//!
//! Cases:
//! * `http_only`: 5 services × HTTP max 10, all 50 keep-alive sockets idle;
//! * `http_ws`: 5 services × (HTTP max 10 + WebSocket max 10), 100 idle connections.
//!   `run_maintenance()` starts each call with every health check due, so every idle
//!   WebSocket is pinged and its pong awaited: this is the *probe* cycle. The background
//!   thread pings only when `health_interval_ms` has passed; its ordinary tick costs what
//!   `http_only` costs plus a non-blocking drain of each idle socket.
//!
//! Run: `cargo bench -p backend-pool-benchmarks --bench maintenance`.

use std::time::Duration;

use backend_pool::{HttpPoolConfig, ManagerConfig, PoolManager, ServiceConfig, WsPoolConfig};
use backend_pool_testkit::TestServer;
use criterion::{criterion_group, criterion_main, Criterion};

const SERVICES: usize = 5;
const MAX: u32 = 10;

/// CPU time of the calling thread, in nanoseconds (0 if unavailable).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn manager(server: &TestServer, websocket: bool) -> PoolManager {
    let mut config = ManagerConfig {
        maintenance_interval_ms: 3_600_000,
        ..ManagerConfig::empty()
    };
    for i in 0..SERVICES {
        let mut service = ServiceConfig::new(format!("svc{i}"), server.http_url());
        service.http = Some(HttpPoolConfig {
            max_connections: MAX,
            min_connections: 2,
            // The runs last longer than the default 4 s keep-alive limit, after which
            // maintenance would (rightly) release the sockets and measure empty items.
            keepalive_idle_ms: 3_600_000,
            ..HttpPoolConfig::default()
        });
        if websocket {
            service.websocket = Some(WsPoolConfig {
                max_connections: MAX,
                min_connections: 2,
                ..WsPoolConfig::default()
            });
        }
        config = config.with_service(service);
    }
    let manager = PoolManager::new(config).expect("manager");
    for i in 0..SERVICES {
        let name = format!("svc{i}");
        let http = manager.http(&name).unwrap();
        let held: Vec<_> = (0..MAX).map(|_| http.checkout().unwrap()).collect();
        for conn in &held {
            let url = format!("{}/warm", conn.base_url());
            let mut r = conn.agent().get(&url).call().unwrap();
            r.body_mut().read_to_vec().unwrap();
        }
        drop(held);
        if websocket {
            let held: Vec<_> = (0..MAX)
                .map(|_| manager.websocket(&name).unwrap())
                .collect();
            drop(held);
        }
    }
    manager
}

fn bench(c: &mut Criterion) {
    let server = TestServer::builder()
        .websocket("/ws", |_| {})
        .build()
        .expect("server");
    let mut group = c.benchmark_group("maintenance");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for (name, ws) in [("http_only", false), ("http_ws", true)] {
        let m = manager(&server, ws);
        group.bench_function(format!("{name}/wall"), |b| b.iter(|| m.run_maintenance()));
        group.bench_function(format!("{name}/cpu"), |b| {
            b.iter_custom(|iters| {
                let start = thread_cpu_ns();
                for _ in 0..iters {
                    m.run_maintenance();
                }
                Duration::from_nanos(thread_cpu_ns() - start)
            })
        });
        let stats = m.stats();
        let open: u64 = stats
            .services
            .iter()
            .flat_map(|s| [s.http.as_ref(), s.websocket.as_ref()])
            .flatten()
            .map(|p| p.connections_open)
            .sum();
        println!(
            "maintenance/{name}: {open} connections still open after the runs (nothing evicted)"
        );
    }
    group.finish();
    server.stop();
}

criterion_group!(benches, bench);
criterion_main!(benches);
