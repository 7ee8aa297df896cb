//! A compressed day of use: many checkouts across five services with faults, panics, early
//! drops and idle periods, then proof that nothing leaked.
//!
//! `cargo run --release --example soak -- --seconds 600` (the full run: tens of millions of
//! checkouts); CI runs `--seconds 120`. `--ops N` stops earlier after N operations. Exits
//! non-zero if a check fails. Loopback only.
//!
//! Checks: open fds and threads back to the baseline after shutdown; live heap bytes (counted
//! by this program's allocator) after warm-up grow by ≤ 256 KiB, the leak check; resident
//! memory after warm-up grows by ≤ 4 MiB, a looser bound (RSS also moves with the allocator's
//! per-thread arenas and freed pages it keeps, and the loopback servers in this process start a
//! thread per connection: 80,000 of them in two minutes); for every pool, connections created = closed + open, open = 0
//! after shutdown, and the servers accepted exactly what the pools say they created.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::{ManagerConfig, PoolManager, ServiceConfig, WsPoolConfig};
use backend_pool_testkit::{
    fd_count, rss_kib, thread_count, thread_names, Fault, Response, TestServer,
};

/// The system allocator, counting live heap bytes: what a leak grows, whatever the
/// allocator does with freed pages.
struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counter is only arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size() as i64, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_kib() -> i64 {
    LIVE_BYTES.load(Relaxed) / 1024
}

struct Args {
    seconds: u64,
    ops: u64,
    threads: usize,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 600,
        ops: u64::MAX,
        threads: 16,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--seconds", Some(v)) => a.seconds = v,
            ("--ops", Some(v)) => a.ops = v,
            ("--threads", Some(v)) => a.threads = v as usize,
            _ => {
                eprintln!("usage: soak [--seconds N] [--ops N] [--threads N]");
                std::process::exit(2);
            }
        }
    }
    a
}

fn server(idle: Option<Duration>) -> TestServer {
    let mut b = TestServer::builder()
        .http(|req| match req.path.as_str() {
            "/stream" => Response::sse(
                (0..20)
                    .map(|i| ("generating".to_string(), format!("[{i}]")))
                    .collect(),
                Duration::ZERO,
            ),
            _ => Response::text(200, "ok"),
        })
        .websocket("/ws", |_| {});
    if let Some(idle) = idle {
        b = b.idle_timeout(idle);
    }
    b.build().expect("bind a loopback server")
}

fn config(servers: &[TestServer]) -> ManagerConfig {
    let names = ["comfyui", "litellm", "wan2gp", "rvc", "upscaler"];
    let mut config = ManagerConfig {
        maintenance_interval_ms: 100,
        service: Vec::new(),
    };
    for (name, s) in names.iter().zip(servers) {
        let mut svc = ServiceConfig::new(*name, s.http_url());
        svc.wait_timeout_ms = 5_000;
        svc.connect_timeout_ms = 1_000;
        svc.request_timeout_ms = 2_000;
        svc.read_idle_timeout_ms = 2_000;
        svc.health_timeout_ms = 500;
        svc.health_interval_ms = 1_000;
        svc.idle_timeout_ms = 1_000; // idle periods trigger eviction
        svc.leak_threshold_ms = 60_000;
        let http = svc.http.as_mut().expect("default HTTP pool");
        http.max_connections = 8;
        http.min_connections = 1;
        if *name == "comfyui" || *name == "upscaler" {
            svc.websocket = Some(WsPoolConfig {
                max_connections: 4,
                min_connections: 1,
                pong_timeout_ms: 500,
                ..WsPoolConfig::default()
            });
        }
        config.service.push(svc);
    }
    config
}

/// One caller operation; returns true if it ended in an error (expected under faults).
fn operation(m: &PoolManager, n: u64) -> bool {
    let service = ["comfyui", "litellm", "wan2gp", "rvc", "upscaler"][(n % 5) as usize];
    match n % 97 {
        // User code panics while holding a connection.
        13 => {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                let _conn = m.http(service).and_then(|h| h.checkout());
                panic!("soak: user code panicked holding a connection");
            }));
            false
        }
        // A stream dropped before its end.
        29 => match m.http(service).and_then(|h| h.get("/stream").stream(b"")) {
            Ok(mut s) => {
                let mut line = String::new();
                let _ = std::io::BufRead::read_line(&mut s, &mut line);
                false
            }
            Err(_) => true,
        },
        // A checkout dropped without use.
        41 => m.http(service).and_then(|h| h.checkout()).is_err(),
        // WebSocket round trip (services with a WebSocket pool).
        n if n % 7 == 0 && (service == "comfyui" || service == "upscaler") => {
            match m.websocket(service) {
                // The echo back means nothing is in flight: finish, and the socket is reused.
                Ok(mut ws) => match ws.send_text("ping").and_then(|_| ws.read()) {
                    Ok(_) => {
                        ws.finish();
                        false
                    }
                    Err(_) => true,
                },
                Err(_) => true,
            }
        }
        _ => match m.http(service).and_then(|h| h.get("/x").call()) {
            Ok(r) => r.status() != 200,
            Err(_) => true,
        },
    }
}

fn main() {
    let a = args();
    let servers: Vec<TestServer> = (0..5)
        .map(|i| server((i % 2 == 1).then(|| Duration::from_secs(1))))
        .collect();
    // Silence the panics we cause on purpose.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !format!("{info}").contains("soak: user code panicked") {
            default_hook(info);
        }
    }));

    // Baseline after one short pass, so the servers' lazily started threads are in it.
    {
        let warm = PoolManager::new(config(&servers)).expect("valid config");
        for n in 0..50 {
            operation(&warm, n);
        }
        let _ = warm.shutdown(Duration::from_secs(2));
    }
    wait_for(Duration::from_secs(2), || {
        servers.iter().all(|s| s.open() == 0)
    });
    let accepted_before: usize = servers.iter().map(TestServer::accepted).sum();
    // A server's connection thread counts itself closed just before it ends: the baseline
    // waits for the counts to hold still (a CI run once took one such thread into it).
    let (base_fds, base_threads) = steady_counts();
    let base_names = thread_names();
    let m = Arc::new(PoolManager::new(config(&servers)).expect("valid config"));

    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let paused = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.seconds);

    let workers: Vec<_> = (0..a.threads)
        .map(|w| {
            let (m, ops, errors) = (Arc::clone(&m), Arc::clone(&ops), Arc::clone(&errors));
            let (paused, stop) = (Arc::clone(&paused), Arc::clone(&stop));
            thread::Builder::new()
                .name(format!("soak-worker-{w}"))
                .spawn(move || {
                    while !stop.load(Relaxed) {
                        if paused.load(Relaxed) {
                            thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                        let n = ops.fetch_add(1, Relaxed);
                        if operation(&m, n.wrapping_mul(31).wrapping_add(w as u64)) {
                            errors.fetch_add(1, Relaxed);
                        }
                    }
                })
                .expect("spawn a worker")
        })
        .collect();

    // A quarter of the run: long enough for the allocator's per-thread arenas to reach their
    // working size (the loopback servers run in this process, one thread per connection).
    let warmup = Duration::from_secs(a.seconds / 4).max(Duration::from_secs(2));
    let mut rss_after_warmup = None;
    let mut last_fault_at = 0;
    let mut next_idle = started + Duration::from_secs(15);
    let mut faults = 0u64;
    let mut next_report = started + Duration::from_secs(10);
    while Instant::now() < deadline && ops.load(Relaxed) < a.ops {
        thread::sleep(Duration::from_millis(5));
        let done = ops.load(Relaxed);
        // A fault about every thousand operations, on a rotating server, for a moment.
        if done / 1000 > last_fault_at {
            last_fault_at = done / 1000;
            faults += 1;
            let s = &servers[(faults % 5) as usize];
            match faults % 4 {
                0 => s.kill_connections(),
                1 => s.set_fault(Fault::CloseBeforeResponse),
                2 => s.set_fault(Fault::Refuse),
                _ => s.set_fault(Fault::WsIgnorePings),
            }
            thread::sleep(Duration::from_millis(2));
            s.set_fault(Fault::None);
        }
        if rss_after_warmup.is_none() && started.elapsed() >= warmup {
            rss_after_warmup = Some(quiet_rss(&paused));
        }
        // Idle periods: everything pauses long enough for keep-alive expiry and eviction.
        if Instant::now() >= next_idle {
            paused.store(true, Relaxed);
            thread::sleep(Duration::from_millis(2_500));
            paused.store(false, Relaxed);
            next_idle = Instant::now() + Duration::from_secs(30);
        }
        if Instant::now() >= next_report {
            eprintln!(
                "[{:>4}s] {} ops, {} errors, {} faults, rss {} KiB, heap {} KiB",
                started.elapsed().as_secs(),
                ops.load(Relaxed),
                errors.load(Relaxed),
                faults,
                rss_kib(),
                live_kib()
            );
            next_report += Duration::from_secs(10);
        }
    }
    let rss_end = quiet_rss(&paused);
    stop.store(true, Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let elapsed = started.elapsed();
    let stats = m.stats();
    let report = m.shutdown(Duration::from_secs(5)).expect("shutdown");
    let after = m.stats();
    drop(m);

    let mut failures = Vec::new();
    let settled = wait_for(Duration::from_secs(5), || {
        fd_count() == base_fds
            && thread_count() == base_threads
            && servers.iter().all(|s| s.open() == 0)
    });
    if !settled {
        eprintln!("threads at the baseline: {base_names:?}");
        eprintln!("threads now: {:?}", thread_names());
        failures.push(format!(
            "fds {base_fds} -> {}, threads {base_threads} -> {}",
            fd_count(),
            thread_count()
        ));
    }
    let (rss_warm, heap_warm) = rss_after_warmup.unwrap_or(rss_end);
    let rss_growth = rss_end.0.saturating_sub(rss_warm);
    let heap_growth = rss_end.1 - heap_warm;
    if heap_growth > 256 {
        failures.push(format!(
            "live heap grew {heap_growth} KiB after warm-up ({heap_warm} -> {} KiB)",
            rss_end.1
        ));
    }
    if rss_growth > 4 * 1024 {
        failures.push(format!(
            "resident memory grew {rss_growth} KiB after warm-up"
        ));
    }
    if !report.still_in_use.is_empty() {
        failures.push(format!(
            "still in use at shutdown: {:?}",
            report.still_in_use
        ));
    }
    let mut created = 0;
    for s in &after.services {
        for p in s.http.iter().chain(s.websocket.iter()) {
            created += p.connections_created;
            let c = &p.closed;
            let closed =
                c.idle + c.lifetime + c.broken + c.health + c.shutdown + c.abandoned + c.other;
            if p.connections_open != 0 || closed != p.connections_created {
                failures.push(format!(
                    "{} {:?}: created {}, closed {closed}, open {}",
                    s.name, p.kind, p.connections_created, p.connections_open
                ));
            }
        }
    }
    let accepted = servers.iter().map(TestServer::accepted).sum::<usize>() - accepted_before;
    if accepted as u64 != created {
        failures.push(format!(
            "servers accepted {accepted}, pools created {created}"
        ));
    }
    let total_ops = stats.totals.acquisitions;
    println!(
        "soak: {total_ops} checkouts in {:.0} s ({:.0}/s), {} errors under {faults} faults, \
         {created} connections created and closed, live heap growth {heap_growth} KiB, \
         rss growth {rss_growth} KiB, fds {base_fds}->{}, threads {base_threads}->{}",
        elapsed.as_secs_f64(),
        total_ops as f64 / elapsed.as_secs_f64(),
        errors.load(Relaxed),
        fd_count(),
        thread_count()
    );
    if failures.is_empty() {
        println!("soak: all checks passed");
    } else {
        for f in &failures {
            println!("soak: FAILED: {f}");
        }
        std::process::exit(1);
    }
}

/// Pauses the workers, lets the pools settle, reads VmRSS and the live heap (KiB).
fn quiet_rss(paused: &AtomicBool) -> (u64, i64) {
    paused.store(true, Relaxed);
    thread::sleep(Duration::from_millis(300));
    let sample = (rss_kib(), live_kib());
    paused.store(false, Relaxed);
    sample
}

/// Open fds and threads once both held still for 200 ms (at most 3 s of waiting).
fn steady_counts() -> (usize, usize) {
    let end = Instant::now() + Duration::from_secs(3);
    let mut last = (fd_count(), thread_count());
    let mut still_since = Instant::now();
    while Instant::now() < end && still_since.elapsed() < Duration::from_millis(200) {
        thread::sleep(Duration::from_millis(20));
        let now = (fd_count(), thread_count());
        if now != last {
            (last, still_since) = (now, Instant::now());
        }
    }
    last
}

fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    cond()
}
