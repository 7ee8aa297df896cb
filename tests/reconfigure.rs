//! Reconfiguration without a restart (`PoolManager::apply`, `add_service`, `replace_service`,
//! `remove_service`) and the readiness probe (`PoolManager::probe`).
//!
//! The tests take one lock each: they count the process's file descriptors and the servers'
//! connections, which a neighbour running at the same time would disturb.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backend_pool::{
    Error, ErrorClass, HealthState, ManagerConfig, PoolManager, ServiceConfig, WsPoolConfig,
};
use backend_pool_testkit::{fd_count, Blackhole, Response, TestServer};
use support::raw::RawServer;
use support::{eventually, service, with_http_size};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A server answering every request after `delay` (a call in flight that long).
fn slow_server(delay: Duration) -> TestServer {
    TestServer::builder()
        .http(move |_| {
            std::thread::sleep(delay);
            Response::text(200, "ok")
        })
        .build()
        .unwrap()
}

fn config(services: Vec<ServiceConfig>) -> ManagerConfig {
    ManagerConfig {
        maintenance_interval_ms: 50,
        service: services,
    }
}

/// Connections the pool closed so far.
fn closed(manager: &PoolManager, name: &str) -> u64 {
    let stats = manager.stats();
    let http = stats.service(name).unwrap().http.clone().unwrap();
    http.connections_created - http.connections_open
}

fn acquisitions(manager: &PoolManager, name: &str) -> u64 {
    manager
        .stats()
        .service(name)
        .unwrap()
        .http
        .clone()
        .unwrap()
        .acquisitions
}

#[test]
fn apply_under_load_replaces_only_the_changed_service() {
    let _serial = serial();
    let names = ["a", "b", "c", "d", "e"];
    let servers: Vec<TestServer> = names
        .iter()
        .map(|_| slow_server(Duration::from_millis(5)))
        .collect();
    let moved_to = slow_server(Duration::from_millis(5));
    let fds = fd_count();
    let services: Vec<ServiceConfig> = names
        .iter()
        .zip(&servers)
        .map(|(name, server)| with_http_size(service(name, &server.http_url()), 20, 2))
        .collect();
    let manager = Arc::new(PoolManager::new(config(services.clone())).unwrap());

    // 100 threads, 20 per service, each looking the service up for every call.
    let stop = Arc::new(AtomicBool::new(false));
    let errors: Arc<Mutex<Vec<(usize, Error)>>> = Arc::default();
    let calls: Arc<Vec<AtomicUsize>> =
        Arc::new(names.iter().map(|_| AtomicUsize::new(0)).collect());
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let (manager, stop, errors, calls) = (
                Arc::clone(&manager),
                Arc::clone(&stop),
                Arc::clone(&errors),
                Arc::clone(&calls),
            );
            std::thread::spawn(move || {
                let which = i % 5;
                while !stop.load(SeqCst) {
                    let result = manager
                        .http(names[which])
                        .and_then(|http| http.get("/work").call());
                    match result {
                        Ok(r) => {
                            assert_eq!(r.status(), 200);
                            calls[which].fetch_add(1, SeqCst);
                        }
                        Err(e) => errors.lock().unwrap().push((which, e)),
                    }
                }
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || calls
        .iter()
        .all(|c| c.load(SeqCst) >= 20)));
    let stale = manager.http("e").unwrap();
    let before: Vec<(u64, u64)> = names[..4]
        .iter()
        .map(|n| (closed(&manager, n), acquisitions(&manager, n)))
        .collect();

    let mut edited = services.clone();
    edited[4].url = moved_to.http_url();
    let report = manager
        .apply(config(edited), Duration::from_secs(5))
        .unwrap();
    assert_eq!(report.replaced, ["e"]);
    assert_eq!(report.unchanged, ["a", "b", "c", "d"]);
    assert!(report.added.is_empty() && report.removed.is_empty());
    // Every call in flight on the old pools finished within the deadline.
    assert!(report.still_in_use.is_empty(), "{report:?}");
    // The old server sees every connection closed, and no new one.
    let old = &servers[4];
    assert!(
        eventually(Duration::from_secs(3), || old.open() == 0),
        "{} still open on the old server",
        old.open()
    );
    let old_accepted = old.accepted();
    let moved_before = moved_to.requests();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        old.accepted(),
        old_accepted,
        "the old pools connected again"
    );
    assert!(
        moved_to.requests() > moved_before,
        "new calls go to the new URL"
    );
    // A handle taken before the change says why it no longer works.
    let err = stale.get("/work").call().unwrap_err();
    assert!(
        matches!(err, Error::ServiceRetired { ref service, removed: false } if service == "e"),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::ShuttingDown);
    assert!(err.to_string().contains("'e' was replaced"), "{err}");

    stop.store(true, SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    // Not one error on the other four; on the changed one, at most a caller that looked it
    // up just before the swap, told why.
    for (which, e) in errors.lock().unwrap().iter() {
        assert_eq!(*which, 4, "service {}: {e}", names[*which]);
        assert!(matches!(e, Error::ServiceRetired { .. }), "{e:?}");
    }
    // The unchanged services: the same pools (counters carry on), no connection closed.
    for (i, name) in names[..4].iter().enumerate() {
        assert_eq!(
            closed(&manager, name),
            before[i].0,
            "'{name}' closed a connection"
        );
        assert!(
            acquisitions(&manager, name) > before[i].1,
            "'{name}' was reset"
        );
    }
    // The replaced service's counters start fresh.
    let e = manager.stats().service("e").unwrap().http.clone().unwrap();
    assert!(e.acquisitions as usize <= calls[4].load(SeqCst));

    manager.shutdown(Duration::from_secs(2)).unwrap();
    drop(manager);
    assert!(
        eventually(Duration::from_secs(3), || fd_count() == fds),
        "fds: {} now, {fds} before",
        fd_count()
    );
}

#[test]
fn an_invalid_configuration_changes_nothing() {
    let _serial = serial();
    let server = TestServer::builder().build().unwrap();
    let a = service("a", &server.http_url());
    let manager = PoolManager::new(config(vec![a.clone()])).unwrap();
    let http = manager.http("a").unwrap();
    assert_eq!(http.get("/").call().unwrap().status(), 200);

    let mut moved = a.clone();
    moved.url = "http://127.0.0.1:9".into();
    let mut broken = service("b", "http://127.0.0.1:9");
    broken.http.as_mut().unwrap().max_connections = 0;
    let mut no_ca = service("c", "https://127.0.0.1:9");
    no_ca.ca_file = Some("/nonexistent/backend-pool-ca.pem".into());
    let cases = [
        // A broken rule: found by validation.
        config(vec![moved.clone(), broken]),
        // Two services of one name.
        config(vec![moved.clone(), a.clone()]),
        // Valid, but a service cannot be built: found while planning.
        config(vec![moved, no_ca]),
    ];
    for bad in cases {
        let err = manager.apply(bad, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert_eq!(manager.service_names(), ["a"]);
        // The same pool, its connection kept.
        assert_eq!(http.get("/").call().unwrap().status(), 200);
    }
    assert_eq!(server.accepted(), 1);
    assert_eq!(acquisitions(&manager, "a"), 4);
    // The one-service forms too.
    let err = manager.add_service(a.clone()).unwrap_err();
    assert!(err.chain().to_string().contains("more than once"), "{err}");
    let err = manager
        .replace_service(service("zz", "http://127.0.0.1:9"), Duration::ZERO)
        .unwrap_err();
    assert!(matches!(err, Error::UnknownService { .. }), "{err:?}");
    let err = manager.remove_service("zz", Duration::ZERO).unwrap_err();
    assert!(err.to_string().contains("known: a"), "{err}");
    assert_eq!(http.get("/").call().unwrap().status(), 200);
    assert_eq!(server.accepted(), 1);
    // Once shut down, nothing changes any more.
    manager.shutdown(Duration::from_secs(1)).unwrap();
    let err = manager
        .apply(config(vec![a.clone()]), Duration::MAX)
        .unwrap_err();
    assert!(matches!(err, Error::ShuttingDown { .. }), "{err:?}");
    let err = manager
        .add_service(service("z", "http://127.0.0.1:9"))
        .unwrap_err();
    assert!(matches!(err, Error::ShuttingDown { .. }), "{err:?}");
}

#[test]
fn remove_lets_a_long_call_finish_then_closes_its_socket() {
    let _serial = serial();
    let server = slow_server(Duration::from_millis(400));
    let manager =
        Arc::new(PoolManager::new(config(vec![service("svc", &server.http_url())])).unwrap());
    let stale = manager.http("svc").unwrap();
    let call = {
        let manager = Arc::clone(&manager);
        std::thread::spawn(move || manager.http("svc").unwrap().get("/long").call())
    };
    assert!(eventually(Duration::from_secs(2), || server.requests() == 1));
    let start = Instant::now();
    let remove = {
        let manager = Arc::clone(&manager);
        std::thread::spawn(move || manager.remove_service("svc", Duration::from_secs(5)))
    };
    // While it drains: the name is gone for new work, the stats still show it.
    assert!(eventually(Duration::from_secs(1), || manager
        .http("svc")
        .is_err()));
    let err = manager.http("svc").unwrap_err();
    assert!(matches!(err, Error::UnknownService { .. }), "{err:?}");
    let err = stale.get("/").call().unwrap_err();
    assert!(
        matches!(err, Error::ServiceRetired { removed: true, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("'svc' was removed"), "{err}");
    assert!(manager.stats().service("svc").is_some());

    let report = remove.join().unwrap().unwrap();
    assert_eq!(report.removed, ["svc"]);
    assert!(report.still_in_use.is_empty(), "{report:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(call.join().unwrap().unwrap().text(), "ok");
    assert!(eventually(Duration::from_secs(2), || server.open() == 0));
    assert!(manager.stats().service("svc").is_none());
    assert_eq!(server.accepted(), 1);
}

#[test]
fn remove_interrupts_a_call_still_running_at_the_deadline() {
    let _serial = serial();
    // Reads the request, never answers, counts the hang-up.
    let server = RawServer::answering(b"");
    let manager = Arc::new(PoolManager::new(config(vec![service("svc", &server.url())])).unwrap());
    let call = {
        let manager = Arc::clone(&manager);
        std::thread::spawn(move || {
            let start = Instant::now();
            let result = manager.http("svc").unwrap().get("/never").call();
            (result, start.elapsed())
        })
    };
    assert!(eventually(Duration::from_secs(2), || server.requests() == 1));
    let start = Instant::now();
    let report = manager
        .remove_service("svc", Duration::from_millis(150))
        .unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(1),
        "{took:?}"
    );
    assert!(report.still_in_use.is_empty(), "{report:?}");
    let (result, call_took) = call.join().unwrap();
    assert!(call_took < Duration::from_secs(1), "{call_took:?}");
    let err = result.unwrap_err();
    assert!(
        matches!(err, Error::ServiceRetired { removed: true, .. }),
        "{err:?}"
    );
    assert!(eventually(Duration::from_secs(2), || server.open() == 0));
    assert_eq!(server.closed(), 1);
}

#[test]
fn a_websocket_lease_outlives_a_replace_and_a_blocked_read_is_cut_at_the_deadline() {
    let _serial = serial();
    let server = support::ws_echo_server();
    let ws = ServiceConfig {
        http: None,
        websocket: Some(WsPoolConfig {
            max_connections: 2,
            min_connections: 0,
            ..WsPoolConfig::default()
        }),
        ..service("ws", &server.http_url())
    };
    let manager = Arc::new(PoolManager::new(config(vec![ws.clone()])).unwrap());
    let mut held = manager.websocket("ws").unwrap();
    held.send_text("before").unwrap();
    assert_eq!(held.read().unwrap().into_text().unwrap(), "before");

    let mut changed = ws;
    changed.wait_timeout_ms = 4_000;
    let replace = {
        let manager = Arc::clone(&manager);
        std::thread::spawn(move || manager.replace_service(changed, Duration::from_secs(5)))
    };
    // New leases come from the new pool; the lease held goes on.
    assert!(eventually(Duration::from_secs(2), || manager
        .stats()
        .service("ws")
        .is_some_and(
            |s| s.websocket.as_ref().unwrap().acquisitions == 0
        )));
    let mut fresh = manager.websocket("ws").unwrap();
    fresh.send_text("new").unwrap();
    assert_eq!(fresh.read().unwrap().into_text().unwrap(), "new");
    assert_eq!(server.ws_accepted(), 2);
    held.send_text("during").unwrap();
    assert_eq!(held.read().unwrap().into_text().unwrap(), "during");
    assert!(
        !replace.is_finished(),
        "the replace did not wait for the lease"
    );
    held.finish(); // would go back idle; its pool is retired, so it closes
    let report = replace.join().unwrap().unwrap();
    assert_eq!(report.replaced, ["ws"]);
    assert!(report.still_in_use.is_empty(), "{report:?}");
    assert!(eventually(Duration::from_secs(2), || server.open() == 1));

    // A read blocked at the deadline is interrupted and told why.
    let reader = std::thread::spawn(move || fresh.read_timeout(Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    let report = manager
        .remove_service("ws", Duration::from_millis(100))
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(report.still_in_use.is_empty(), "{report:?}");
    let err = reader.join().unwrap().unwrap_err();
    assert!(
        matches!(err, Error::ServiceRetired { removed: true, .. }),
        "{err:?}"
    );
    assert!(eventually(Duration::from_secs(2), || server.open() == 0));
}

#[test]
fn an_added_service_is_used_and_tended() {
    let _serial = serial();
    let server = TestServer::builder().build().unwrap();
    // No service: no maintenance worker yet.
    let manager = PoolManager::new(config(Vec::new())).unwrap();
    let mut added = service("new", &server.http_url());
    added.health_path = Some("/health".into());
    added.health_interval_ms = 50;
    let report = manager.add_service(added.clone()).unwrap();
    assert_eq!(report.added, ["new"]);
    assert_eq!(server.accepted(), 0, "a new service starts lazily");
    let reply = manager.http("new").unwrap().get("/x").call().unwrap();
    assert_eq!(reply.status(), 200);
    // Maintenance took it up: its health path is probed.
    let probes = || {
        server
            .request_log()
            .iter()
            .filter(|(_, path)| path == "/health")
            .count()
    };
    assert!(
        eventually(Duration::from_secs(3), || probes() >= 2),
        "{:?}",
        server.request_log()
    );
    // Replaced with an equal configuration: rebuilt all the same (fresh counters).
    let report = manager
        .replace_service(added, Duration::from_secs(1))
        .unwrap();
    assert_eq!(report.replaced, ["new"]);
    assert_eq!(acquisitions(&manager, "new"), 0);
    // Removed: no more probes once it is closed.
    manager
        .remove_service("new", Duration::from_secs(1))
        .unwrap();
    let seen = probes();
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(probes(), seen, "a removed service is still probed");
    assert!(manager.service_names().is_empty());
    // The worker started for it is joined with the others.
    assert!(support::pool_threads() > 0);
    let report = manager.shutdown(Duration::from_secs(1)).unwrap();
    assert!(report.maintenance_joined);
    drop(manager);
    assert!(
        eventually(Duration::from_secs(2), || support::pool_threads() == 0),
        "{} backend-pool threads left",
        support::pool_threads()
    );
}

#[test]
fn a_new_maintenance_interval_applies_at_once() {
    let _serial = serial();
    let server = TestServer::builder().build().unwrap();
    let mut svc = service("svc", &server.http_url());
    svc.health_path = Some("/health".into());
    svc.health_interval_ms = 1;
    let slow = ManagerConfig {
        maintenance_interval_ms: 3_600_000,
        service: vec![svc.clone()],
    };
    let manager = PoolManager::new(slow).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.requests(), 0, "an hour's tick probed already");
    let report = manager
        .apply(config(vec![svc]), Duration::from_secs(1))
        .unwrap();
    assert_eq!(report.unchanged, ["svc"]);
    assert!(eventually(Duration::from_secs(2), || server.requests() >= 2));
}

#[test]
fn probe_answers_now_within_its_deadline_and_counts_no_request() {
    let _serial = serial();
    let server = TestServer::builder().build().unwrap();
    let mut up = service("up", &server.http_url());
    up.health_path = Some("/health".into());
    up.health_interval_ms = 3_600_000;
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut down = service("down", &format!("http://127.0.0.1:{port}"));
    down.unhealthy_after = 1;
    down.health_interval_ms = 3_600_000;
    // Accepts, reads the request, never answers.
    let stalled = RawServer::answering(b"");
    let mut mute = service("mute", &stalled.url());
    mute.health_path = Some("/health".into());
    mute.health_timeout_ms = 10_000;
    mute.health_interval_ms = 3_600_000;
    let hole = Blackhole::new().unwrap();
    let mut unreachable = service("hole", &format!("http://{}", hole.addr()));
    unreachable.health_timeout_ms = 10_000;
    unreachable.health_interval_ms = 3_600_000;
    let manager = PoolManager::new(ManagerConfig {
        maintenance_interval_ms: 3_600_000,
        service: vec![up, down, mute, unreachable],
    })
    .unwrap();

    let report = manager.probe("up", Duration::MAX).unwrap();
    assert!(report.reachable, "{report:?}");
    assert_eq!(report.check, "GET /health");
    assert_eq!(report.health.state, HealthState::Healthy);
    assert!(report.health.last_check_unix_ms.is_some());
    assert_eq!(
        server.request_log(),
        [("GET".to_string(), "/health".to_string())]
    );
    let http = manager.stats().service("up").unwrap().http.clone().unwrap();
    assert_eq!((http.requests, http.acquisitions), (Some(0), 0), "{http:?}");
    assert_eq!(http.probe_connections, 1);

    let report = manager.probe("down", Duration::from_secs(2)).unwrap();
    assert!(!report.reachable);
    assert_eq!(report.check, "TCP connect");
    assert!(
        report.error.as_deref().unwrap().contains("TCP probe"),
        "{report:?}"
    );
    // Recorded as a maintenance probe is: one failure makes it unhealthy here.
    assert_eq!(report.health.state, HealthState::Unhealthy);
    assert_eq!(
        manager.health("down").unwrap().state,
        HealthState::Unhealthy
    );

    // Bounded by its deadline, not by `health_timeout_ms` (10 s).
    for name in ["mute", "hole"] {
        let start = Instant::now();
        let report = manager.probe(name, Duration::from_millis(200)).unwrap();
        let took = start.elapsed();
        assert!(!report.reachable, "{report:?}");
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(1),
            "'{name}' took {took:?}"
        );
    }
    assert!(eventually(Duration::from_secs(2), || stalled.closed() == 1));
    let err = manager.probe("nope", Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, Error::UnknownService { .. }), "{err:?}");
    manager.shutdown(Duration::from_secs(1)).unwrap();
    let err = manager.probe("up", Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, Error::ShuttingDown { .. }), "{err:?}");
}
