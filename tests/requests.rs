//! What a request carries (issue 12): query parameters, checked before checkout; and what is
//! counted as a request: the callers' traffic only, never the pool's own health probes.
//!
//! Connections and requests are counted on the server side (`TestServer::accepted`,
//! `TestServer::request_log`).

mod support;

use std::time::Duration;

use backend_pool::{ManagerConfig, PoolManager, PoolStats};
use backend_pool_testkit::{Response, TestServer};
use support::{eventually, service};

fn http_stats(m: &PoolManager) -> PoolStats {
    m.stats().service("svc").unwrap().http.clone().unwrap()
}

/// Requests the server received on `path`.
fn received(server: &TestServer, path: &str) -> usize {
    server
        .request_log()
        .iter()
        .filter(|(_, p)| p == path)
        .count()
}

/// A manager whose maintenance probes `/health` every 20 ms.
fn probed(url: &str) -> PoolManager {
    let mut cfg = service("svc", url);
    cfg.health_path = Some("/health".into());
    cfg.health_interval_ms = 20;
    PoolManager::new(ManagerConfig {
        maintenance_interval_ms: 10,
        service: vec![cfg],
    })
    .unwrap()
}

#[test]
fn health_probes_are_not_counted_as_requests() {
    let server = TestServer::builder()
        .http(|_| Response::text(200, "ok"))
        .build()
        .unwrap();
    let m = probed(&server.http_url());
    assert!(eventually(Duration::from_secs(3), || received(
        &server, "/health"
    ) >= 3));
    let stats = http_stats(&m);
    assert_eq!(stats.requests, Some(0), "probes counted as requests");
    assert_eq!(stats.acquisitions, 0, "probes counted as checkouts");

    let http = m.http("svc").unwrap();
    for _ in 0..4 {
        assert_eq!(http.get("/work").call().unwrap().status(), 200);
    }
    assert_eq!(received(&server, "/work"), 4);
    assert_eq!(
        server.accepted(),
        1,
        "the probes and the calls share one connection"
    );
    let stats = http_stats(&m);
    assert_eq!(stats.requests, Some(4));
    assert_eq!(stats.acquisitions, 4);
    // The first probe opened the connection; the calls reused it.
    assert_eq!((stats.connections_created, stats.probe_connections), (1, 1));
    assert_eq!(stats.reuse_rate(), 1.0);
    assert_eq!(m.stats().totals.requests, 4);
}

#[test]
fn connections_health_probes_open_are_left_out_of_the_reuse_rate() {
    // The server closes a keep-alive connection idle for 10 ms: probes 20–30 ms apart keep
    // opening new ones. Ten calls in a row share one.
    let server = TestServer::builder()
        .http(|_| Response::text(200, "ok"))
        .idle_timeout(Duration::from_millis(10))
        .build()
        .unwrap();
    let m = probed(&server.http_url());
    assert!(eventually(Duration::from_secs(5), || server.accepted() >= 4));
    let http = m.http("svc").unwrap();
    let before = server.accepted();
    for _ in 0..10 {
        assert_eq!(http.get("/work").call().unwrap().status(), 200);
    }
    let opened_meanwhile = server.accepted() - before;
    let stats = http_stats(&m);
    assert_eq!(stats.requests, Some(10));
    assert!(
        stats.connections_created as usize >= before,
        "every connection the server accepted is counted: {stats:?}"
    );
    // The calls opened at most the connections opened while they ran (a probe among them
    // may have opened one of those).
    let floor = 1.0 - opened_meanwhile.max(1) as f64 / 10.0;
    assert!(
        stats.reuse_rate() >= floor,
        "reuse rate {} < {floor}: probes' connections counted against the calls",
        stats.reuse_rate()
    );
}

#[test]
fn query_parameters_arrive_as_given_after_the_path_s_own_query() {
    let server = TestServer::builder()
        .http(|req| {
            let decoded = ["filename", "a&b", "type", "é"]
                .map(|k| req.query_param(k).unwrap_or_else(|| "<none>".into()));
            Response::json(
                200,
                serde_json::json!({"path": req.path, "decoded": decoded}),
            )
        })
        .build()
        .unwrap();
    let m = support::manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    let reply: serde_json::Value = http
        .get("/view?type=output")
        .query("filename", "my render.png")
        .query("a&b", "c=d#e+f%20")
        .query("é", "日本")
        .call()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        reply["path"],
        "/view?type=output&filename=my%20render.png&a%26b=c%3Dd%23e%2Bf%2520&%C3%A9=%E6%97%A5%E6%9C%AC"
    );
    assert_eq!(
        reply["decoded"],
        serde_json::json!(["my render.png", "c=d#e+f%20", "output", "日本"])
    );
    let plain: serde_json::Value = http
        .get("/view")
        .query("filename", "x.png")
        .call()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(plain["path"], "/view?filename=x.png");
}

#[test]
fn an_invalid_query_is_rejected_before_checkout_and_keeps_the_connection() {
    use backend_pool::{Error, ErrorClass};
    let server = support::http_echo_server();
    let m = support::manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    assert_eq!(http.get("/warm").call().unwrap().status(), 200);
    let err = http.get("/x").query("", "v").call().unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    assert!(err.to_string().contains("empty name"), "{err}");
    // A query that makes the request line longer than the output buffer.
    let long = "v".repeat(64 * 1024);
    let err = http.get("/x").query("k", &long).call().unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidRequest, "{err}");
    assert_eq!(
        http.get("/after").query("k", "v").call().unwrap().text(),
        "GET /after?k=v"
    );
    assert_eq!(
        server.accepted(),
        1,
        "a rejected request disturbed the connection"
    );
    let stats = http_stats(&m);
    assert_eq!(stats.errors.get(ErrorClass::InvalidRequest), 2);
    assert_eq!(stats.errors.get(ErrorClass::Protocol), 0);
    assert_eq!(stats.closed.broken, 0);
}

#[test]
fn tcp_probes_of_a_websocket_only_service_are_left_out_of_its_reuse_rate() {
    use backend_pool::{HealthState, WsPoolConfig};
    use backend_pool_testkit::Fault;
    // The server accepts TCP and closes at once: handshakes fail, the TCP probe succeeds.
    let server = support::ws_echo_server();
    server.set_fault(Fault::Refuse);
    let mut cfg = service("svc", &server.http_url());
    cfg.http = None;
    cfg.websocket = Some(WsPoolConfig {
        min_connections: 0,
        ..WsPoolConfig::default()
    });
    cfg.unhealthy_after = 2;
    cfg.health_interval_ms = 20;
    let m = support::manager(cfg);
    for _ in 0..2 {
        assert!(m.websocket("svc").is_err());
    }
    // Unhealthy, then healthy again through a TCP probe (counted as a connection).
    assert!(eventually(Duration::from_secs(3), || {
        let ws = m.stats().service("svc").unwrap().websocket.clone().unwrap();
        ws.probe_connections > 0 && m.health("svc").unwrap().state == HealthState::Healthy
    }));
    server.set_fault(Fault::None);
    for _ in 0..4 {
        let mut ws = m.websocket("svc").unwrap();
        ws.send_text("echo").unwrap();
        ws.read().unwrap();
        ws.finish();
    }
    let ws = m.stats().service("svc").unwrap().websocket.clone().unwrap();
    assert_eq!(ws.connections_created as usize, server.accepted());
    assert_eq!(ws.acquisitions, 4);
    // Two failed handshakes and the socket the four leases shared: the probe is not one.
    assert_eq!(ws.connections_created - ws.probe_connections, 3);
    assert_eq!(ws.reuse_rate(), 0.25);
}
