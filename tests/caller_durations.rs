//! Durations a caller chooses may be anything up to `Duration::MAX` (a Python `timeout=1e18`
//! arrives as one): no call panics on them, each behaves as "no practical limit".

mod support;

use std::time::Duration;

use backend_pool::WsPoolConfig;
use backend_pool_testkit::{Response, TestServer};
use support::{manager, service};

#[test]
fn huge_caller_durations_never_panic() {
    let server = TestServer::builder()
        .http(|_| Response::text(200, "ok"))
        .websocket("/ws", |_| {})
        .build()
        .unwrap();
    let mut cfg = service("svc", &server.http_url());
    cfg.websocket = Some(WsPoolConfig {
        min_connections: 0,
        ..WsPoolConfig::default()
    });
    let m = manager(cfg);
    let http = m.http("svc").unwrap();
    for wait in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
        let r = http
            .get("/")
            .total_timeout(wait)
            .wait_timeout(wait)
            .call()
            .unwrap();
        assert_eq!(r.text(), "ok");
        let mut s = http
            .get("/")
            .total_timeout(wait)
            .wait_timeout(wait)
            .stream(b"")
            .unwrap();
        let mut body = String::new();
        std::io::Read::read_to_string(&mut s, &mut body).unwrap();
        assert_eq!(body, "ok");
        let mut ws = m.websocket_wait("svc", wait).unwrap();
        ws.send_text("echo").unwrap();
        assert_eq!(ws.read_timeout(wait).unwrap().into_text().unwrap(), "echo");
        ws.finish();
    }
    let report = m.shutdown(Duration::MAX).unwrap();
    assert!(report.still_in_use.is_empty() && report.maintenance_joined);
}
