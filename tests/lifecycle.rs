//! Shutdown, the process-wide handle, leak detection and secret redaction.
//! fd and thread counts are process-wide, so the tests that count them live in
//! `tests/no_leaks.rs`, a binary of their own.

mod support;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::{global, Error, ManagerConfig, Secret, WsPoolConfig};
use backend_pool_testkit::{Response, TestServer};
use support::{capture_logs, eventually, manager, service, with_http_size};

fn server() -> TestServer {
    TestServer::builder()
        .http(|req| Response::text(200, &req.path))
        .websocket("/ws", |_| {})
        .build()
        .unwrap()
}

#[test]
fn shutdown_wakes_waiters_closes_idle_now_and_in_use_on_return() {
    let server = server();
    let mut cfg = with_http_size(service("svc", &server.http_url()), 1, 0);
    cfg.websocket = Some(WsPoolConfig {
        max_connections: 1,
        min_connections: 0,
        ..WsPoolConfig::default()
    });
    cfg.wait_timeout_ms = 30_000;
    let m = Arc::new(manager(cfg));
    let http = m.http("svc").unwrap();
    http.get("/warm").call().unwrap();
    let held = http.checkout().unwrap();
    let ws_held = m.websocket("svc").unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|i| {
            let m = Arc::clone(&m);
            thread::spawn(move || {
                if i == 0 {
                    m.http("svc").unwrap().get("/w").call().map(|_| ())
                } else {
                    m.websocket("svc").map(|_| ())
                }
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(2), || {
        let s = m.stats();
        let svc = &s.services[0];
        svc.http.as_ref().unwrap().waiting == 1 && svc.websocket.as_ref().unwrap().waiting == 1
    }));
    let started = Instant::now();
    let report = m.shutdown(Duration::from_millis(300)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    for w in waiters {
        let err = w.join().unwrap().unwrap_err();
        assert!(matches!(err, Error::ShuttingDown { .. }), "{err:?}");
    }
    // Both guards were still out at the deadline, and are reported.
    assert_eq!(report.still_in_use.len(), 2, "{report:?}");
    assert!(report.maintenance_joined);
    assert!(matches!(
        m.http("svc").unwrap_err(),
        Error::ShuttingDown { .. }
    ));
    drop(held);
    drop(ws_held);
    let stats = m.stats();
    let svc = &stats.services[0];
    assert_eq!(svc.http.as_ref().unwrap().connections_open, 0);
    assert_eq!(svc.websocket.as_ref().unwrap().connections_open, 0);
    assert_eq!(svc.websocket.as_ref().unwrap().closed.shutdown, 1);
    assert!(eventually(Duration::from_secs(2), || server.open() == 0));
    // Idempotent.
    let again = m.shutdown(Duration::from_millis(50)).unwrap();
    assert!(again.still_in_use.is_empty());
}

#[test]
fn the_global_handle_survives_enable_disable_cycles() {
    let server = server();
    for _ in 0..5 {
        let cfg = ManagerConfig::empty().with_service(service("svc", &server.http_url()));
        let m = global::init(cfg.clone()).unwrap();
        let again = global::init(ManagerConfig::empty()).unwrap();
        assert!(Arc::ptr_eq(&m, &again));
        assert_eq!(
            m.http("svc").unwrap().get("/g").call().unwrap().text(),
            "/g"
        );
        drop((m, again));
        let report = global::shutdown(Duration::from_secs(1)).unwrap().unwrap();
        assert!(report.still_in_use.is_empty());
        assert!(global::get().is_none());
    }
    assert!(global::shutdown(Duration::from_secs(1)).unwrap().is_none());
}

#[test]
fn a_connection_held_past_the_threshold_is_reported_with_its_thread() {
    let server = server();
    let mut cfg = service("svc", &server.http_url());
    cfg.leak_threshold_ms = 100;
    let m = Arc::new(manager(cfg));
    let logs = capture_logs();
    let holder = {
        let m = Arc::clone(&m);
        thread::Builder::new()
            .name("slow-worker".into())
            .spawn(move || {
                let conn = m.http("svc").unwrap().checkout().unwrap();
                thread::sleep(Duration::from_millis(400));
                drop(conn);
            })
            .unwrap()
    };
    holder.join().unwrap();
    let stats = m.stats();
    assert_eq!(stats.services[0].http.as_ref().unwrap().leaks_detected, 1);
    let text = logs.lock().unwrap().join("\n");
    assert!(
        text.contains("slow-worker") && text.contains("'svc'"),
        "{text}"
    );
}

#[test]
fn secrets_never_reach_debug_errors_stats_or_logs() {
    const KEY: &str = "sk-secret-abcdef123456";
    let logs = capture_logs();
    let server = TestServer::builder()
        .http(|req| {
            if req.header("authorization") == Some(&format!("Bearer {KEY}")) {
                Response::text(200, "ok")
            } else {
                Response::text(401, "no")
            }
        })
        .build()
        .unwrap();
    let mut cfg = service("llm", &server.http_url());
    cfg.bearer_token = Some(Secret::new(KEY));
    cfg.secret_headers
        .insert("X-Api-Key".into(), Secret::new("hdr-secret-987"));
    let m = manager(cfg.clone());
    let http = m.http("llm").unwrap();
    assert_eq!(http.get("/v1/models").call().unwrap().status(), 200);
    server.set_fault(backend_pool_testkit::Fault::CloseBeforeResponse);
    let err = http
        .post("/v1/chat/completions")
        .send_bytes(b"{}")
        .unwrap_err();
    server.set_fault(backend_pool_testkit::Fault::None);
    m.run_maintenance();
    let stats = m.stats();
    let texts = [
        format!("{cfg:?}"),
        format!("{m:?}"),
        format!("{http:?}"),
        format!("{err:?} {err}"),
        stats.to_json(),
        stats.to_prometheus(),
        serde_json::to_string(&cfg).unwrap(),
        logs.lock().unwrap().join("\n"),
    ];
    for text in &texts {
        assert!(!text.contains(KEY), "the bearer key leaked: {text}");
        assert!(
            !text.contains("hdr-secret-987"),
            "a secret header leaked: {text}"
        );
    }
    assert!(
        !logs.lock().unwrap().is_empty(),
        "nothing was logged: the check proves nothing"
    );
}
