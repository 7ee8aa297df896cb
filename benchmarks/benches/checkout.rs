//! Issue 3, benchmark 1: checkout + return overhead, with the connections already open and idle
//! (no I/O in the measured path).
//!
//! * `uncontended/*`: one thread, `HttpClient::checkout()` then drop, `manager.websocket()` then
//!   drop, and plain r2d2 (`pool.get()` then drop) on a no-op `ManageConnection` as baseline.
//! * `contended/{http,ws,r2d2}/pool{4,16}/threads{1,4,16,64,256}`: the same operation from T
//!   threads at once on a pool of P connections. One criterion "iteration" is one checkout +
//!   return anywhere in the pool, so the reported time is wall time divided by operations
//!   (the inverse of throughput), not the latency one caller sees.
//! * Before criterion runs, a percentile pass prints p50 / p99 / max of single uncontended
//!   checkouts (criterion reports means and medians of batches, not tail latency).
//! * `routing/{one_url,three_urls,session}`: the cost of choosing an endpoint (issue 14):
//!   `HttpClient::checkout()`+drop on a one-URL service, the same on a service with three
//!   `urls` (least in flight among three), and a session's pinned call
//!   (`session.http()` then `checkout()`+drop). Before criterion, the three are timed in
//!   alternating rounds and their median ratio to the one-URL checkout printed (`routing
//!   ratio ...`): on a noisy machine, compare within one run.
//!
//! Run: `cargo bench -p backend-pool-benchmarks --bench checkout` (about a minute on 2 cores).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use backend_pool::{HttpPoolConfig, ManagerConfig, PoolManager, ServiceConfig, WsPoolConfig};
use backend_pool_testkit::TestServer;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// r2d2 on a manager that does nothing: the floor for a pooled checkout.
struct Noop;

impl r2d2::ManageConnection for Noop {
    type Connection = ();
    type Error = std::io::Error;
    fn connect(&self) -> Result<(), std::io::Error> {
        Ok(())
    }
    fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> {
        Ok(())
    }
    fn has_broken(&self, _: &mut ()) -> bool {
        false
    }
}

fn noop_pool(size: u32) -> r2d2::Pool<Noop> {
    r2d2::Pool::builder()
        .max_size(size)
        .test_on_check_out(false)
        .connection_timeout(Duration::from_secs(30))
        .build(Noop)
        .expect("no-op pool")
}

/// A manager with one service "svc" (HTTP + WebSocket pools of `size`) on `server`, every
/// connection opened once and idle. Maintenance is parked (1 h tick) so it cannot interfere.
fn warm_manager(server: &TestServer, size: u32) -> PoolManager {
    let mut service = ServiceConfig::new("svc", server.http_url());
    service.http = Some(HttpPoolConfig {
        max_connections: size,
        min_connections: 0,
        ..HttpPoolConfig::default()
    });
    service.websocket = Some(WsPoolConfig {
        max_connections: size,
        min_connections: 0,
        ..WsPoolConfig::default()
    });
    let config = ManagerConfig {
        maintenance_interval_ms: 3_600_000,
        ..ManagerConfig::empty()
    }
    .with_service(service);
    let manager = PoolManager::new(config).expect("manager");
    let http = manager.http("svc").expect("http pool");
    // Hold `size` connections at once so every pool item exists and has a live socket.
    let held: Vec<_> = (0..size)
        .map(|_| http.checkout().expect("checkout"))
        .collect();
    for conn in &held {
        let url = format!("{}/warm", conn.base_url());
        let mut reply = conn.agent().get(&url).call().expect("warm-up GET");
        reply.body_mut().read_to_vec().expect("warm-up body");
    }
    drop(held);
    let sockets: Vec<_> = (0..size)
        .map(|_| manager.websocket("svc").expect("websocket"))
        .collect();
    drop(sockets);
    manager
}

fn server() -> TestServer {
    TestServer::builder()
        .websocket("/ws", |_| {})
        .build()
        .expect("test server")
}

/// Runs `op` `iters` times spread over `threads` threads started together; returns the wall
/// time from the first thread's start to the last thread's end.
fn spread<F>(threads: usize, iters: u64, op: F) -> Duration
where
    F: Fn() + Sync,
{
    let barrier = Barrier::new(threads);
    let per = iters.div_ceil(threads as u64).max(1);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                let op = &op;
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || {
                        barrier.wait();
                        let start = Instant::now();
                        for _ in 0..per {
                            op();
                        }
                        (start, Instant::now())
                    })
                    .expect("spawn")
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = spans.iter().map(|s| s.0).min().unwrap();
    let last = spans.iter().map(|s| s.1).max().unwrap();
    // Scale to exactly `iters` operations.
    (last - first).mul_f64(iters as f64 / (per * threads as u64) as f64)
}

/// p50 / p99 / p99.9 / max of `n` single timed operations (uncontended tail latency).
fn percentiles(name: &str, n: usize, mut op: impl FnMut()) {
    for _ in 0..n / 10 {
        op();
    }
    let mut samples: Vec<u64> = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        op();
        samples.push(t.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((n as f64 * q) as usize).min(n - 1)];
    println!(
        "latency {name:<24} p50 {:>6} ns  p99 {:>6} ns  p99.9 {:>7} ns  max {:>8} ns  (n = {n})",
        at(0.50),
        at(0.99),
        at(0.999),
        samples[n - 1]
    );
}

fn uncontended(c: &mut Criterion) {
    let server = server();
    let manager = warm_manager(&server, 4);
    let http = manager.http("svc").unwrap();
    let r2d2 = noop_pool(4);

    percentiles("http checkout+drop", 200_000, || {
        drop(http.checkout().unwrap());
    });
    percentiles("ws checkout+drop", 200_000, || {
        drop(manager.websocket("svc").unwrap());
    });
    percentiles("r2d2 no-op get+drop", 200_000, || {
        drop(r2d2.get().unwrap());
    });

    let mut group = c.benchmark_group("uncontended");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    group.bench_function("http_checkout_drop", |b| {
        b.iter(|| drop(http.checkout().unwrap()))
    });
    group.bench_function("ws_checkout_drop", |b| {
        b.iter(|| drop(manager.websocket("svc").unwrap()))
    });
    group.bench_function("r2d2_noop_get_drop", |b| {
        b.iter(|| drop(r2d2.get().unwrap()))
    });
    // The handle lookup a caller does before each request (`manager.http(name)`).
    group.bench_function("http_handle_lookup", |b| {
        b.iter(|| drop(manager.http("svc").unwrap()))
    });
    group.finish();
    drop(manager);
    server.stop();
}

/// A manager with one service "multi" over three `urls` (one server each), HTTP only, with
/// maintenance parked; every endpoint has had a connection.
fn three_url_manager(servers: &[TestServer]) -> PoolManager {
    let mut service = ServiceConfig::new("multi", "");
    service.url = String::new();
    service.urls = Some(servers.iter().map(TestServer::http_url).collect());
    service.http = Some(HttpPoolConfig {
        max_connections: 4,
        min_connections: 0,
        ..HttpPoolConfig::default()
    });
    let config = ManagerConfig {
        maintenance_interval_ms: 3_600_000,
        ..ManagerConfig::empty()
    }
    .with_service(service);
    let manager = PoolManager::new(config).expect("manager");
    let http = manager.http("multi").expect("http pool");
    // Three at once: the least-in-flight rule puts one on each endpoint.
    let held: Vec<_> = (0..3).map(|_| http.checkout().expect("checkout")).collect();
    drop(held);
    manager
}

/// Median ns per operation of each of `ops`, timed in alternating rounds of `n`, with its
/// ratio to the first.
fn ratios(rounds: usize, n: u32, ops: &mut [(&str, &mut dyn FnMut())]) {
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); ops.len()];
    for _ in 0..rounds {
        for (i, (_, op)) in ops.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..n {
                op();
            }
            per[i].push(t.elapsed().as_nanos() as f64 / f64::from(n));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<f64> = per.iter_mut().map(median).collect();
    for (i, (name, _)) in ops.iter().enumerate() {
        println!(
            "routing ratio {name:<12} {:>7.0} ns  {:.2}x of {}  ({rounds} rounds of {n})",
            medians[i],
            medians[i] / medians[0],
            ops[0].0
        );
    }
}

fn routing(c: &mut Criterion) {
    let one_server = server();
    let one = warm_manager(&one_server, 4);
    let servers: Vec<TestServer> = (0..3).map(|_| server()).collect();
    let three = three_url_manager(&servers);
    let one_http = one.http("svc").unwrap();
    let three_http = three.http("multi").unwrap();
    let session = three.session("multi").unwrap();

    let mut a = || drop(one_http.checkout().unwrap());
    let mut b = || drop(three_http.checkout().unwrap());
    let mut s = || drop(session.http().unwrap().checkout().unwrap());
    ratios(
        15,
        20_000,
        &mut [
            ("one_url", &mut a),
            ("three_urls", &mut b),
            ("session", &mut s),
        ],
    );

    let mut group = c.benchmark_group("routing");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    group.bench_function("one_url", |b| b.iter(|| drop(one_http.checkout().unwrap())));
    group.bench_function("three_urls", |b| {
        b.iter(|| drop(three_http.checkout().unwrap()))
    });
    group.bench_function("session", |b| {
        b.iter(|| drop(session.http().unwrap().checkout().unwrap()))
    });
    group.finish();
    drop((session, one, three));
    one_server.stop();
    for s in servers {
        s.stop();
    }
}

fn contended(c: &mut Criterion) {
    let server = server();
    let mut group = c.benchmark_group("contended");
    group
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_millis(400))
        .sample_size(10);
    for size in [4u32, 16] {
        let manager = Arc::new(warm_manager(&server, size));
        let http = manager.http("svc").unwrap();
        let r2d2 = noop_pool(size);
        for threads in [1usize, 4, 16, 64, 256] {
            let id = |kind: &str| BenchmarkId::new(kind, format!("pool{size}/threads{threads}"));
            group.bench_function(id("http"), |b| {
                b.iter_custom(|iters| spread(threads, iters, || drop(http.checkout().unwrap())))
            });
            group.bench_function(id("ws"), |b| {
                b.iter_custom(|iters| {
                    spread(threads, iters, || drop(manager.websocket("svc").unwrap()))
                })
            });
            group.bench_function(id("r2d2"), |b| {
                b.iter_custom(|iters| spread(threads, iters, || drop(r2d2.get().unwrap())))
            });
        }
        let stats = manager.stats();
        let svc = &stats.services[0];
        let http_stats = svc.http.as_ref().unwrap();
        let ws_stats = svc.websocket.as_ref().unwrap();
        println!(
            "pool{size}: http created {} / ws created {} connections during the matrix (expect {size} each)",
            http_stats.connections_created, ws_stats.connections_created
        );
    }
    group.finish();
    server.stop();
}

criterion_group!(benches, uncontended, routing, contended);
criterion_main!(benches);
