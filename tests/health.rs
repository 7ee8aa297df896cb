//! Health checks: probes, fail-fast while unhealthy, recovery.

mod support;

use std::time::{Duration, Instant};

use backend_pool::{Error, HealthState};
use backend_pool_testkit::{Fault, Response, TestServer};
use support::{eventually, manager, service};

#[test]
fn a_connection_the_server_killed_is_cleaned_up_by_maintenance() {
    let server = TestServer::builder()
        .http(|_| Response::text(200, "ok"))
        .build()
        .unwrap();
    let mut cfg = service("svc", &server.http_url());
    cfg.http.as_mut().unwrap().keepalive_idle_ms = 100;
    let m = manager(cfg);
    m.http("svc").unwrap().get("/").call().unwrap();
    assert_eq!(server.open(), 1);
    server.kill_connections();
    // The pool notices the idle socket is past its keep-alive limit and closes it.
    assert!(eventually(Duration::from_secs(3), || m.stats().services[0]
        .http
        .as_ref()
        .unwrap()
        .connections_open
        == 0));
    assert_eq!(
        m.http("svc").unwrap().get("/").call().unwrap().status(),
        200
    );
    assert_eq!(server.accepted(), 2);
}

#[test]
fn an_unreachable_service_fails_fast_then_recovers() {
    let server = TestServer::builder()
        .http(|_| Response::text(200, "alive"))
        .build()
        .unwrap();
    let mut cfg = service("svc", &server.http_url());
    cfg.health_path = Some("/health/liveliness".into());
    cfg.health_interval_ms = 50;
    cfg.unhealthy_after = 2;
    let m = manager(cfg);
    assert!(eventually(Duration::from_secs(2), || m
        .health("svc")
        .unwrap()
        .last_check_unix_ms
        .is_some()));
    assert_eq!(m.health("svc").unwrap().state, HealthState::Healthy);

    server.set_fault(Fault::Refuse);
    server.kill_connections();
    assert!(eventually(Duration::from_secs(5), || m
        .health("svc")
        .unwrap()
        .state
        == HealthState::Unhealthy));
    let started = Instant::now();
    let err = m.http("svc").unwrap().get("/work").call().unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "did not fail fast"
    );
    match &err {
        Error::ServiceUnavailable { last_error, .. } => assert!(!last_error.is_empty()),
        other => panic!("expected ServiceUnavailable, got {other:?}"),
    }
    let prom = m.stats().to_prometheus();
    assert!(
        prom.contains("backend_pool_healthy{service=\"svc\"} 0"),
        "{prom}"
    );

    server.set_fault(Fault::None);
    assert!(eventually(Duration::from_secs(5), || m
        .health("svc")
        .unwrap()
        .state
        == HealthState::Healthy));
    assert_eq!(
        m.http("svc").unwrap().get("/work").call().unwrap().text(),
        "alive"
    );
    // The probe used the configured path, never anything else.
    assert!(server
        .request_log()
        .iter()
        .all(|(_, p)| p == "/health/liveliness" || p == "/work"));
}

#[test]
fn a_websocket_only_service_recovers_through_tcp_probes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = service("ws", &format!("http://127.0.0.1:{port}"));
    cfg.http = None;
    cfg.websocket = Some(backend_pool::WsPoolConfig {
        min_connections: 0,
        ..Default::default()
    });
    cfg.unhealthy_after = 2;
    let m = manager(cfg);
    for _ in 0..2 {
        assert!(m.websocket("ws").is_err());
    }
    assert_eq!(m.health("ws").unwrap().state, HealthState::Unhealthy);
    assert!(matches!(
        m.websocket("ws").unwrap_err(),
        Error::ServiceUnavailable { .. }
    ));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port));
    if let Ok(listener) = listener {
        // Something listens again: the TCP probe marks the service healthy.
        assert!(eventually(Duration::from_secs(3), || m
            .health("ws")
            .unwrap()
            .state
            == HealthState::Healthy));
        drop(listener);
    }
}
