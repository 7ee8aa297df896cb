//! A WebSocket handshake answered with a status (ComfyUI's 403 when an `Origin` header does
//! not match, a 404 on a wrong path, a 503 while a server warms up) is the server answering:
//! an `Error::Status` that keeps the status and the body (capped), class `status`, never
//! counted against the service's health (no fail-fast), its socket closed; the maintenance
//! refill that meets one backs off instead of retrying every tick.

mod support;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::{
    Error, ErrorClass, HealthState, Phase, PoolManager, PoolStats, ServiceConfig, StatusBody,
    WsPoolConfig,
};
use backend_pool_testkit::{Response, TestServer};
use serde_json::json;
use support::raw::{idle_until, Peer, RawServer};
use support::{capture_logs, eventually, manager, service};

/// A WebSocket-only service on `url`, its socket at `path`.
fn ws_only(name: &str, url: &str, path: &str, min: u32) -> ServiceConfig {
    ServiceConfig {
        http: None,
        websocket: Some(WsPoolConfig {
            path: path.into(),
            max_connections: 2,
            min_connections: min,
            ..WsPoolConfig::default()
        }),
        ..service(name, url)
    }
}

fn ws_stats(m: &PoolManager, name: &str) -> PoolStats {
    m.stats().service(name).unwrap().websocket.clone().unwrap()
}

/// What ComfyUI's origin check could say (it sends a 403; the body here is ours, as JSON, to
/// show the body reaches the caller whole).
fn origin_refusal() -> serde_json::Value {
    json!({"error": "Origin 'http://evil.test' does not match Host '127.0.0.1:8188'"})
}

/// Answers every upgrade by its path: `/forbidden` 403 with a JSON body, `/missing` 404 with
/// aiohttp's text, `/busy` 503 with a JSON body, `/plain` 200 (a web page, no upgrade).
fn refusing_server() -> TestServer {
    TestServer::builder()
        .http(|req| match req.path_only() {
            "/forbidden" => Response::json(403, origin_refusal()),
            "/missing" => Response::text(404, "404: Not Found"),
            "/busy" => Response::json(503, json!({"detail": "warming up"})),
            _ => Response::text(200, "<html>not a WebSocket</html>"),
        })
        .build()
        .unwrap()
}

#[test]
fn a_handshake_answered_403_404_or_503_is_a_status_error_with_its_body() {
    let server = refusing_server();
    let cases: [(&str, u16, &str, String); 4] = [
        ("/forbidden", 403, "Forbidden", origin_refusal().to_string()),
        ("/missing", 404, "Not Found", "404: Not Found".into()),
        (
            "/busy",
            503,
            "Service Unavailable",
            json!({"detail": "warming up"}).to_string(),
        ),
        ("/plain", 200, "OK", "<html>not a WebSocket</html>".into()),
    ];
    for (path, status, reason, body) in cases {
        let before = server.accepted();
        let mut cfg = ws_only("comfy", &server.http_url(), path, 0);
        cfg.unhealthy_after = 2;
        let m = manager(cfg);
        // More attempts than `unhealthy_after`: a status never trips the fail-fast gate.
        for attempt in 0..4 {
            let err = m.websocket("comfy").map(drop).unwrap_err();
            assert!(
                matches!(&err, Error::Status { status: s, .. } if *s == status),
                "{path} #{attempt}: {err:?}"
            );
            assert_eq!(err.class(), ErrorClass::Status, "{path}");
            assert_eq!(err.status(), Some(status));
            assert_eq!(err.phase(), Some(Phase::Connect), "{path}");
            assert_eq!(err.text().unwrap(), body, "{path}");
            assert!(!err.body().unwrap().is_truncated());
            let url = format!("ws://{}{path}", server.addr());
            let text = err.to_string();
            assert!(
                text.starts_with(&format!(
                    "service 'comfy': HTTP {status} {reason} while connecting to {url}"
                )),
                "names the service, the status, the phase and the URL: {text}"
            );
            let first_line = body.lines().next().unwrap();
            assert!(text.ends_with(first_line), "shows the body: {text}");
        }
        if status == 403 {
            let err = m.websocket("comfy").map(drop).unwrap_err();
            assert_eq!(err.json::<serde_json::Value>().unwrap(), origin_refusal());
        }
        let health = m.stats().service("comfy").unwrap().health.clone();
        assert_eq!(health.state, HealthState::Healthy, "{path}: {health:?}");
        assert_eq!(health.consecutive_failures, 0, "{path}");
        let stats = ws_stats(&m, "comfy");
        let attempts = if status == 403 { 5 } else { 4 };
        assert_eq!(
            stats.errors.get(ErrorClass::Status),
            attempts,
            "{path}: {:?}",
            stats.errors
        );
        assert_eq!(stats.errors.total(), attempts, "{path}: {:?}", stats.errors);
        assert_eq!(stats.connections_created, attempts, "{path}");
        assert_eq!(stats.connections_open, 0, "{path}: {stats:?}");
        assert_eq!(stats.in_use, 0, "{path}");
        let prometheus = m.stats().to_prometheus();
        assert!(
            prometheus.contains(&format!(
                "backend_pool_errors_total{{service=\"comfy\",pool=\"websocket\",class=\"status\"}} {attempts}"
            )),
            "{prometheus}"
        );
        // Each attempt was a connection of its own, and each is closed.
        assert_eq!(server.accepted() - before, attempts as usize, "{path}");
        assert!(
            eventually(Duration::from_secs(2), || server.open() == 0),
            "{path}: {} connections left open",
            server.open()
        );
    }
}

/// A raw script: reads the upgrade request, runs `answer`, then waits for the client to hang
/// up (counted in `RawServer::closed`).
fn answering(answer: impl Fn(&mut Peer) + Send + Sync + 'static) -> RawServer {
    RawServer::start(move |mut p| {
        if p.read_request_head_only().is_some() {
            answer(&mut p);
            p.wait_for_hangup();
        }
    })
}

#[test]
fn the_body_is_read_past_the_head_capped_and_bounded_by_the_connect_deadline() {
    let pause = || thread::sleep(Duration::from_millis(50));
    let big = "x".repeat(200 * 1024);
    let big_head = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    // (what, the server's script, the body kept, truncated)
    type Case = (&'static str, RawServer, String, bool);
    let cases: Vec<Case> = vec![
        (
            "body after the head, in a later write",
            answering(move |p| {
                p.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 17\r\n\r\n");
                pause();
                p.write(b"{\"error\":\"late\"}\n");
            }),
            "{\"error\":\"late\"}\n".into(),
            false,
        ),
        (
            "a 200 KiB body",
            answering(move |p| {
                p.write(big_head.as_bytes());
                p.write(big.as_bytes());
            }),
            "x".repeat(StatusBody::LIMIT),
            true,
        ),
        (
            "chunked, across writes",
            answering(move |p| {
                p.write(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nno su");
                pause();
                p.write(b"\r\nB\r\nch path /ws\r\n0\r\n\r\n");
            }),
            "no such path /ws".into(),
            false,
        ),
        (
            "no length: the body ends when the server closes",
            answering(move |p| {
                p.write(b"HTTP/1.1 503 Service Unavailable\r\n\r\nstarting");
                pause();
                p.write(b" up");
                p.shutdown();
            }),
            "starting up".into(),
            false,
        ),
        (
            "announced 1000 bytes, sent 7, then silence",
            answering(move |p| {
                // Then waits for the client to hang up, sending nothing more.
                p.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 1000\r\n\r\npartial");
            }),
            "partial".into(),
            true,
        ),
    ];
    for (what, server, body, truncated) in cases {
        let mut cfg = ws_only("svc", &server.url(), "/ws", 0);
        cfg.connect_timeout_ms = 600;
        let m = manager(cfg);
        let start = Instant::now();
        let err = m.websocket("svc").map(drop).unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.class(), ErrorClass::Status, "{what}: {err:?}");
        let kept = err.body().unwrap();
        assert_eq!(kept.len(), body.len(), "{what}");
        assert_eq!(kept.text(), body, "{what}");
        assert_eq!(kept.is_truncated(), truncated, "{what}");
        assert!(err.to_string().len() < 400, "{what}: a bounded message");
        assert!(
            took < Duration::from_millis(1500),
            "{what}: within the connect deadline: {took:?}"
        );
        assert!(
            eventually(Duration::from_secs(2), || server.closed() == 1),
            "{what}: the client did not close its socket"
        );
        assert_eq!(server.accepted(), 1, "{what}");
        let stats = ws_stats(&m, "svc");
        assert_eq!(stats.connections_open, 0, "{what}: {stats:?}");
        assert_eq!(stats.errors.get(ErrorClass::Status), 1, "{what}");
    }
}

#[test]
fn a_wss_handshake_answered_with_a_status_keeps_its_body() {
    let (tls, pem) = support::self_signed(&["127.0.0.1"], "ws-status");
    let server = RawServer::start(move |peer| {
        use std::io::{BufRead, Write};
        let (tcp, _) = peer.into_parts();
        let Ok(conn) = rustls::ServerConnection::new(Arc::clone(&tls)) else {
            return;
        };
        let mut stream = std::io::BufReader::new(rustls::StreamOwned::new(conn, tcp));
        let mut line = String::new();
        while stream.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            line.clear();
        }
        let out = stream.get_mut();
        let _ = out.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 14\r\n\r\n");
        let _ = out.flush();
        thread::sleep(Duration::from_millis(50));
        let _ = out.write_all(b"origin refused");
        let _ = out.flush();
        let _ = stream.read_line(&mut line); // until the client hangs up
    });
    let mut cfg = ws_only("svc", &server.https_url(), "/ws", 0);
    cfg.ca_file = Some(pem.display().to_string());
    let m = manager(cfg);
    let err = m.websocket("svc").map(drop).unwrap_err();
    assert_eq!(err.status(), Some(403), "{err:?}");
    assert_eq!(err.text().unwrap(), "origin refused");
    let text = err.to_string();
    assert!(
        text.contains(&format!("while connecting to wss://{}/ws", server.addr())),
        "{text}"
    );
    assert_eq!(ws_stats(&m, "svc").connections_open, 0);
}

/// A server that refuses upgrades with 403 until `allow` is set, then accepts them (and
/// keeps the socket open until the server is dropped).
fn origin_checking_server(allow: Arc<AtomicBool>) -> RawServer {
    RawServer::start(move |peer| {
        if allow.load(SeqCst) {
            let (tcp, stop) = peer.into_parts();
            if let Ok(ws) = tungstenite::accept(tcp) {
                idle_until(&stop, Duration::from_secs(10));
                drop(ws);
            }
            return;
        }
        let mut p = peer;
        if p.read_request_head_only().is_some() {
            p.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nForbidden");
            p.wait_for_hangup();
        }
    })
}

#[test]
fn a_refill_answered_with_a_status_backs_off_and_says_so_once() {
    let logs = capture_logs();
    let allow = Arc::new(AtomicBool::new(false));
    let server = origin_checking_server(Arc::clone(&allow));
    // Maintenance every 50 ms; the pool wants one socket.
    let m = manager(ws_only("refused-refill", &server.url(), "/ws", 1));
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1200) {
        let health = m.stats().service("refused-refill").unwrap().health.clone();
        assert_eq!(health.state, HealthState::Healthy, "{health:?}");
        assert_eq!(health.consecutive_failures, 0, "{health:?}");
        thread::sleep(Duration::from_millis(20));
    }
    let attempts = server.accepted();
    assert!(
        (1..=3).contains(&attempts),
        "{attempts} refill handshakes in 1.2 s at a 50 ms tick: no backoff"
    );
    // A caller still gets the status at once, not a fail-fast `unavailable`.
    let err = m.websocket("refused-refill").map(drop).unwrap_err();
    assert_eq!(err.status(), Some(403), "{err:?}");
    let mine: Vec<String> = logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("'refused-refill'"))
        .cloned()
        .collect();
    let warnings: Vec<&String> = mine.iter().filter(|l| l.starts_with("WARN")).collect();
    assert_eq!(warnings.len(), 1, "one warning for the streak: {mine:#?}");
    assert!(
        warnings[0].contains("HTTP 403 Forbidden") && warnings[0].contains("/ws"),
        "{}",
        warnings[0]
    );
    assert!(
        mine.len() <= attempts + 1,
        "a line per attempt at most: {mine:#?}"
    );
    assert!(
        !mine
            .iter()
            .any(|l| l.contains("unhealthy") || l.contains("health check")),
        "{mine:#?}"
    );
    assert!(eventually(Duration::from_secs(2), || server.open() == 0));
    // Once the server accepts, the refill gets its socket (after the backoff).
    allow.store(true, SeqCst);
    assert!(
        eventually(Duration::from_secs(5), || ws_stats(&m, "refused-refill")
            .idle
            == 1),
        "not refilled after the server accepted: {:?}",
        ws_stats(&m, "refused-refill")
    );
}

#[test]
fn forced_maintenance_passes_keep_the_refill_pause() {
    let server = origin_checking_server(Arc::new(AtomicBool::new(false)));
    let m = PoolManager::new(backend_pool::ManagerConfig {
        maintenance_interval_ms: 3_600_000, // no background pass: only ours
        service: vec![ws_only("forced", &server.url(), "/ws", 1)],
    })
    .unwrap();
    // The first pass is refused; the next ones fall within its 500 ms pause.
    for _ in 0..10 {
        m.run_maintenance();
    }
    assert_eq!(server.accepted(), 1, "a pass ignored the refill's pause");
    assert_eq!(ws_stats(&m, "forced").connect_failures, 1);
    assert_eq!(
        m.stats().service("forced").unwrap().health.state,
        HealthState::Healthy
    );
    // After the pause, the next pass tries again.
    thread::sleep(Duration::from_millis(550));
    m.run_maintenance();
    assert_eq!(server.accepted(), 2);
}
