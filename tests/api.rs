//! The public API holds the crate's own types, so a tungstenite or ureq release cannot break a
//! caller: WebSocket messages are [`backend_pool::Message`] (pings, pongs and close frames stay
//! inside the pool), error classes are a slice, and the statistics say what they count
//! (`requests` is HTTP requests, absent for WebSocket pools, whose uses are checkouts).

mod support;

use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use backend_pool::{ErrorClass, Message, ServiceConfig, WsPoolConfig};
use support::{manager, service, ws_echo_server as echo_server};

fn ws_only(url: &str) -> ServiceConfig {
    ServiceConfig {
        http: None,
        websocket: Some(WsPoolConfig {
            max_connections: 1,
            min_connections: 0,
            ..WsPoolConfig::default()
        }),
        ..service("ws", url)
    }
}

#[test]
fn messages_round_trip_as_the_crates_own_type() {
    let server = echo_server();
    let m = manager(ws_only(&server.http_url()));
    let mut ws = m.websocket("ws").unwrap();
    let messages = [
        Message::text("héllo ✓"),
        Message::binary(vec![0u8, 159, 255, 10]),
        Message::Text(String::new()),
        Message::Binary(vec![7; 70_000]), // a 64-bit length on the wire
    ];
    for sent in &messages {
        ws.send(sent.clone()).unwrap();
        let back: Message = ws.read().unwrap();
        assert_eq!(&back, sent);
    }
    ws.send_binary(&[1, 2, 3]).unwrap();
    let back = ws.read_timeout(Duration::from_secs(2)).unwrap();
    assert_eq!(back.as_text(), None);
    assert_eq!((back.as_bytes(), back.len()), (&[1u8, 2, 3][..], 3));
    assert_eq!(back.into_bytes(), vec![1, 2, 3]);
    ws.send_text("plain").unwrap();
    let back = ws.read().unwrap();
    assert_eq!(back.as_text(), Some("plain"));
    assert_eq!(back.into_text().as_deref(), Some("plain"));
    ws.send_json(&serde_json::json!({"n": 1})).unwrap();
    let json: serde_json::Value = ws.read_json().unwrap();
    assert_eq!(json["n"], 1);
    assert!(ws.peer_addr().unwrap().ip().is_loopback());
    assert_eq!(ws.local_addr().unwrap().port() > 0, !ws.is_tls());
    ws.finish();
    assert_eq!(server.ws_accepted(), 1);
}

/// Pings are answered and pongs skipped inside the pool: `read` returns the next data message.
#[test]
fn control_frames_stay_inside_the_pool() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (pong_tx, pong_rx) = mpsc::channel();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        ws.send(tungstenite::Message::Ping(b"p".to_vec().into()))
            .unwrap();
        ws.send(tungstenite::Message::Pong(b"unasked".to_vec().into()))
            .unwrap();
        ws.send(tungstenite::Message::text("after")).unwrap();
        loop {
            match ws.read() {
                Ok(tungstenite::Message::Pong(p)) => {
                    let _ = pong_tx.send(p.to_vec());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let m = manager(ws_only(&url));
    let mut ws = m.websocket("ws").unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("after"));
    assert_eq!(
        pong_rx.recv_timeout(Duration::from_secs(2)).unwrap(),
        b"p".to_vec()
    );
    ws.discard();
    drop(m);
    server.join().unwrap();
}

#[test]
fn a_websocket_pool_counts_checkouts_not_requests() {
    let server = echo_server();
    let mut config = service("both", &server.http_url());
    config.websocket = Some(WsPoolConfig {
        max_connections: 1,
        min_connections: 0,
        ..WsPoolConfig::default()
    });
    let m = manager(config);
    let http = m.http("both").unwrap();
    for _ in 0..4 {
        http.get("/").call().unwrap();
    }
    for _ in 0..3 {
        drop(m.websocket("both").unwrap()); // quiet leases: the one socket is reused
    }
    let stats = m.stats();
    let s = stats.service("both").unwrap();
    let (h, w) = (s.http.as_ref().unwrap(), s.websocket.as_ref().unwrap());
    let sent = h.requests.expect("an HTTP pool counts requests");
    assert!(sent >= 4, "{sent}"); // + health probes
    assert_eq!(w.requests, None, "a WebSocket pool sends no requests");
    assert_eq!((w.acquisitions, w.connections_created), (3, 1));
    assert!(
        (w.reuse_rate() - 2.0 / 3.0).abs() < 1e-9,
        "{}",
        w.reuse_rate()
    );
    // Totals: requests are HTTP requests; the reuse rate counts each pool's uses.
    assert_eq!(stats.totals.requests, sent);
    let uses = sent + 3;
    let created = h.connections_created + 1;
    let expected = 1.0 - created as f64 / uses as f64;
    assert!((stats.totals.reuse_rate - expected).abs() < 1e-9);

    let json: serde_json::Value = serde_json::from_str(&stats.to_json()).unwrap();
    let pools = &json["services"][0];
    assert!(pools["websocket"]["requests"].is_null(), "{pools}");
    assert_eq!(pools["websocket"]["acquisitions"], 3);
    assert_eq!(pools["http"]["requests"], sent);
    let text = stats.to_prometheus();
    assert!(
        text.contains(&format!(
            "backend_pool_requests_total{{service=\"both\",pool=\"http\"}} {sent}\n"
        )),
        "{text}"
    );
    assert!(
        !text.contains("backend_pool_requests_total{service=\"both\",pool=\"websocket\"}"),
        "{text}"
    );
    assert!(
        text.contains("backend_pool_acquisitions_total{service=\"both\",pool=\"websocket\"} 3\n")
    );
}

#[test]
fn error_classes_are_a_slice_of_distinct_names() {
    let all: &'static [ErrorClass] = ErrorClass::ALL;
    let mut names: Vec<&str> = all.iter().map(|c| c.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len());
    assert!(all.contains(&ErrorClass::PoolTimeout) && all.contains(&ErrorClass::Other));
    assert!(all.contains(&ErrorClass::Cancelled));
    assert_eq!(ErrorClass::Cancelled.name(), "cancelled");
}
