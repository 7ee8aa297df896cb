//! Issue 9: one slow service never stalls maintenance of the others, nor the shutdown.
//!
//! The slow services here: a WebSocket server that drips its handshake answer one byte every
//! 200 ms (so the refill that connects to it never finishes on its own), idle sockets whose
//! peer ignores pings, and an HTTP health path that never answers. Each test checks that a
//! healthy neighbour's health still follows its server, that shutdown and drop return within
//! their bounds with the maintenance workers joined, and that nothing leaks.
//!
//! Thread and fd counts are process-wide: the tests of this binary take turns (`serial`).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use backend_pool::{HealthState, ManagerConfig, PoolManager, ServiceConfig, WsPoolConfig};
use backend_pool_testkit::{fd_count, Fault, TestServer};
use support::{eventually, pool_threads, service};

/// One test at a time: they count the process's threads and fds.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A WebSocket server stuck mid-handshake: it reads the upgrade request, then writes its
/// `101 Switching Protocols` answer one byte every 200 ms (about 26 s for the whole head).
struct DripServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl DripServer {
    fn start() -> DripServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (accepted, stop, threads) = (accepted.clone(), stop.clone(), threads.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let stop = stop.clone();
                    let handle = thread::spawn(move || drip(stream, &stop));
                    threads.lock().unwrap().push(handle);
                }
            })
        };
        DripServer {
            addr,
            accepted,
            stop,
            threads,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for DripServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

fn drip(mut stream: TcpStream, stop: &AtomicBool) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let key = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("Sec-WebSocket-Key: ")
                .or(l.strip_prefix("sec-websocket-key: "))
        })
        .unwrap_or("")
        .trim()
        .to_string();
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        tungstenite::handshake::derive_accept_key(key.as_bytes())
    );
    for b in answer.bytes() {
        for _ in 0..4 {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        if stream.write_all(&[b]).is_err() {
            return; // the client gave up: close our end
        }
    }
}

/// A WebSocket-only service on `url` whose maintenance keeps one socket open (so the refill
/// connects), with a connect timeout far longer than any test.
fn drip_service(name: &str, url: &str) -> ServiceConfig {
    ServiceConfig {
        http: None,
        websocket: Some(WsPoolConfig {
            max_connections: 2,
            min_connections: 1,
            pong_timeout_ms: 300,
            ..WsPoolConfig::default()
        }),
        connect_timeout_ms: 20_000,
        health_interval_ms: 50,
        ..service(name, url)
    }
}

/// An HTTP service probed every 50 ms, unhealthy after two failed probes.
fn probed_service(name: &str, url: &str) -> ServiceConfig {
    ServiceConfig {
        health_path: Some("/health".into()),
        health_interval_ms: 50,
        health_timeout_ms: 300,
        unhealthy_after: 2,
        ..service(name, url)
    }
}

fn manager_of(services: Vec<ServiceConfig>) -> PoolManager {
    PoolManager::new(ManagerConfig {
        maintenance_interval_ms: 50,
        service: services,
    })
    .expect("valid config")
}

fn state(m: &PoolManager, service: &str) -> HealthState {
    m.health(service).unwrap().state
}

/// Waits until `service` has been probed and found healthy.
fn probed_healthy(m: &PoolManager, service: &str) -> bool {
    eventually(Duration::from_secs(3), || {
        let h = m.health(service).unwrap();
        h.last_check_unix_ms.is_some() && h.state == HealthState::Healthy
    })
}

/// How long after its server stops `api` is reported unhealthy (`None`: not within 3 s).
fn time_to_unhealthy(m: &PoolManager, api: TestServer) -> Option<Duration> {
    let started = Instant::now();
    api.stop();
    eventually(Duration::from_secs(3), || {
        state(m, "api") == HealthState::Unhealthy
    })
    .then(|| started.elapsed())
}

#[test]
fn a_dripping_handshake_does_not_stall_the_health_of_other_services() {
    let _serial = serial();
    let drip = DripServer::start();
    let api = TestServer::builder().build().unwrap();
    let m = manager_of(vec![
        drip_service("drip", &drip.url()),
        probed_service("api", &api.http_url()),
    ]);
    // The refill is connecting to the dripping server, and stays stuck there.
    assert!(eventually(Duration::from_secs(2), || drip.accepted() >= 1));
    assert!(probed_healthy(&m, "api"));
    let took = time_to_unhealthy(&m, api);
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(1500)),
        "the healthy service's health did not follow its server while another service \
         dripped its handshake (took {took:?})"
    );
    let report = m.shutdown(Duration::from_secs(1)).unwrap();
    assert!(report.maintenance_joined, "{report:?}");
}

#[test]
fn idle_sockets_ignoring_pings_wait_under_one_pong_deadline() {
    let _serial = serial();
    const SOCKETS: usize = 5;
    const PONG_MS: u64 = 300;
    let deaf = TestServer::builder()
        .websocket("/ws", |_| {})
        .build()
        .unwrap();
    let api = TestServer::builder().build().unwrap();
    let mut deaf_cfg = drip_service("deaf", &deaf.http_url());
    deaf_cfg.websocket = Some(WsPoolConfig {
        max_connections: SOCKETS as u32,
        min_connections: 0,
        pong_timeout_ms: PONG_MS,
        ..WsPoolConfig::default()
    });
    deaf_cfg.unhealthy_after = 1_000; // keep pinging: the pool never fails fast here

    // One pass over the deaf sockets waits for their pongs together, not one after another.
    let m = PoolManager::new(ManagerConfig {
        maintenance_interval_ms: 3_600_000, // no background pass: only ours
        service: vec![deaf_cfg.clone()],
    })
    .unwrap();
    let held: Vec<_> = (0..SOCKETS).map(|_| m.websocket("deaf").unwrap()).collect();
    drop(held);
    deaf.set_fault(Fault::WsIgnorePings);
    let started = Instant::now();
    m.run_maintenance();
    let took = started.elapsed();
    let pool = m.stats().services[0].websocket.clone().unwrap();
    assert_eq!(pool.closed.health, SOCKETS as u64, "{pool:?}");
    assert!(
        took < Duration::from_millis(PONG_MS * 3),
        "{SOCKETS} deaf sockets took {took:?} (pong timeout {PONG_MS} ms each)"
    );
    m.shutdown(Duration::from_secs(1)).unwrap();
    deaf.set_fault(Fault::None);

    // In the background, deaf sockets (reopened by the refill every pass) do not delay a
    // neighbour's health checks.
    deaf_cfg.websocket.as_mut().unwrap().min_connections = SOCKETS as u32;
    let m = manager_of(vec![deaf_cfg, probed_service("api", &api.http_url())]);
    assert!(eventually(Duration::from_secs(2), || deaf.ws_accepted() >= 2 * SOCKETS));
    assert!(probed_healthy(&m, "api"));
    deaf.set_fault(Fault::WsIgnorePings);
    thread::sleep(Duration::from_millis(100)); // a pass is waiting for pongs
    let took = time_to_unhealthy(&m, api);
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(PONG_MS * SOCKETS as u64)),
        "a neighbour's health waited for {SOCKETS} unanswered pings (took {took:?})"
    );
    let report = m.shutdown(Duration::from_secs(1)).unwrap();
    assert!(report.maintenance_joined, "{report:?}");
}

#[test]
fn shutdown_during_a_dripping_handshake_joins_within_its_deadline() {
    let _serial = serial();
    let drip = DripServer::start();
    let api = TestServer::builder().build().unwrap();
    assert!(eventually(Duration::from_secs(3), || pool_threads() == 0));
    let fds = fd_count();
    let m = manager_of(vec![
        drip_service("drip", &drip.url()),
        probed_service("api", &api.http_url()),
    ]);
    assert!(eventually(Duration::from_secs(2), || drip.accepted() >= 1));
    thread::sleep(Duration::from_millis(100)); // well inside the handshake
    let started = Instant::now();
    let report = m.shutdown(Duration::from_secs(1)).unwrap();
    let took = started.elapsed();
    assert!(report.maintenance_joined, "{report:?}");
    assert!(took < Duration::from_millis(1200), "shutdown took {took:?}");
    assert!(report.still_in_use.is_empty(), "{report:?}");
    drop(m);
    assert!(
        eventually(Duration::from_secs(3), || pool_threads() == 0
            && fd_count() == fds),
        "threads {} (want 0), fds {} (want {fds})",
        pool_threads(),
        fd_count()
    );
    drop(api);
}

#[test]
fn dropping_the_manager_during_a_dripping_handshake_returns_at_once() {
    let _serial = serial();
    let drip = DripServer::start();
    let m = manager_of(vec![drip_service("drip", &drip.url())]);
    assert!(eventually(Duration::from_secs(2), || drip.accepted() >= 1));
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    drop(m);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(150),
        "drop blocked its caller for {took:?}"
    );
    assert!(eventually(Duration::from_secs(3), || pool_threads() == 0));
}

#[test]
fn shutdown_cuts_short_a_callers_dripping_handshake() {
    let _serial = serial();
    let drip = DripServer::start();
    let mut cfg = drip_service("drip", &drip.url());
    cfg.websocket.as_mut().unwrap().min_connections = 0;
    let m = Arc::new(manager_of(vec![cfg]));
    let caller = {
        let m = Arc::clone(&m);
        thread::spawn(move || {
            let started = Instant::now();
            (m.websocket("drip").map(drop), started.elapsed())
        })
    };
    assert!(eventually(Duration::from_secs(2), || drip.accepted() >= 1));
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let report = m.shutdown(Duration::from_secs(1)).unwrap();
    let took = started.elapsed();
    let (result, waited) = caller.join().unwrap();
    assert!(result.is_err(), "the handshake cannot have completed");
    assert!(
        waited < Duration::from_secs(2),
        "the caller waited {waited:?}"
    );
    assert!(
        report.still_in_use.is_empty() && took < Duration::from_millis(500),
        "{report:?} after {took:?}"
    );
}

#[test]
fn a_health_probe_that_never_answers_does_not_stall_others_or_the_shutdown() {
    let _serial = serial();
    let stalled = TestServer::builder().build().unwrap();
    let api = TestServer::builder().build().unwrap();
    let mut stalled_cfg = probed_service("stalled", &stalled.http_url());
    stalled_cfg.health_timeout_ms = 20_000;
    let m = manager_of(vec![stalled_cfg, probed_service("api", &api.http_url())]);
    assert!(probed_healthy(&m, "stalled"));
    assert!(probed_healthy(&m, "api"));
    stalled.set_fault(Fault::Stall);
    thread::sleep(Duration::from_millis(200)); // the next probe is waiting for its answer
    let took = time_to_unhealthy(&m, api);
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(1500)),
        "a neighbour's health waited for a probe that never answers (took {took:?})"
    );
    let started = Instant::now();
    let report = m.shutdown(Duration::from_secs(1)).unwrap();
    let took = started.elapsed();
    assert!(
        report.maintenance_joined && took < Duration::from_millis(1200),
        "{report:?} after {took:?}"
    );
    let open = m.stats().services[0]
        .http
        .as_ref()
        .unwrap()
        .connections_open;
    assert_eq!(open, 0, "the stalled probe's connection is still open");
    drop(m);
    stalled.set_fault(Fault::None); // the server notices the close once it reads again
    assert!(eventually(Duration::from_secs(3), || stalled.open() == 0));
}

#[test]
fn shutdown_racing_a_maintenance_pass_leaves_no_connection_open() {
    let _serial = serial();
    let server = TestServer::builder()
        .websocket("/ws", |_| {})
        .build()
        .unwrap();
    let mut cfg = service("svc", &server.http_url());
    cfg.http.as_mut().unwrap().max_connections = 4;
    cfg.http.as_mut().unwrap().max_stream_connections = Some(4);
    cfg.websocket = Some(WsPoolConfig {
        max_connections: 2,
        min_connections: 2,
        ..WsPoolConfig::default()
    });
    let rounds = std::env::var("BACKEND_POOL_RACE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    for round in 0..rounds {
        let m = Arc::new(
            PoolManager::new(ManagerConfig {
                maintenance_interval_ms: 3_600_000,
                service: vec![cfg.clone()],
            })
            .unwrap(),
        );
        // Four idle keep-alive connections and two idle sockets.
        let http = m.http("svc").unwrap();
        // Four streams open at once hold four connections; read to the end, they stay open.
        let held: Vec<_> = (0..4)
            .map(|_| http.get("/warm").stream(b"").unwrap())
            .collect();
        for mut stream in held {
            std::io::copy(&mut stream, &mut std::io::sink()).unwrap();
        }
        let warm = m.stats().services[0]
            .http
            .as_ref()
            .unwrap()
            .connections_open;
        assert_eq!(warm, 4, "round {round}: four keep-alive connections");
        let sockets: Vec<_> = (0..2).map(|_| m.websocket("svc").unwrap()).collect();
        drop(sockets);

        let start = Arc::new(Barrier::new(2));
        let done = Arc::new(AtomicBool::new(false));
        let maintainer = {
            let (m, start, done) = (m.clone(), start.clone(), done.clone());
            thread::spawn(move || {
                start.wait();
                while !done.load(Ordering::SeqCst) {
                    m.run_maintenance();
                }
            })
        };
        start.wait();
        thread::sleep(Duration::from_micros(50 * (round % 8)));
        let report = m.shutdown(Duration::from_secs(2)).unwrap();
        done.store(true, Ordering::SeqCst);
        maintainer.join().unwrap();
        assert!(report.maintenance_joined, "{report:?}");
        let stats = m.stats();
        let svc = &stats.services[0];
        for pool in [svc.http.as_ref().unwrap(), svc.websocket.as_ref().unwrap()] {
            assert_eq!(
                pool.connections_open, 0,
                "round {round}: a connection stayed open after shutdown: {pool:?}"
            );
        }
        assert!(
            eventually(Duration::from_secs(2), || server.open() == 0),
            "round {round}: the server still sees {} open connections",
            server.open()
        );
    }
}
