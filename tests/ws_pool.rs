//! WebSocket pool behaviour against loopback servers that count upgrades.

mod support;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::{Error, ErrorClass, Message, ServiceConfig, WsPoolConfig};
use backend_pool_testkit::{Fault, TestServer};
use support::{eventually, manager, service, ws_echo_server as echo_server};

fn ws_service(url: &str, max: u32, min: u32) -> ServiceConfig {
    ServiceConfig {
        http: None,
        websocket: Some(WsPoolConfig {
            max_connections: max,
            min_connections: min,
            pong_timeout_ms: 300,
            ..WsPoolConfig::default()
        }),
        ..service("ws", url)
    }
}

fn text(m: Message) -> String {
    m.into_text().unwrap().to_string()
}

#[test]
fn a_returned_socket_is_reused() {
    let server = echo_server();
    let m = manager(ws_service(&server.http_url(), 2, 0));
    for i in 0..20 {
        let mut ws = m.websocket("ws").unwrap();
        ws.send_text(&format!("hello {i}")).unwrap();
        assert_eq!(text(ws.read().unwrap()), format!("hello {i}"));
        ws.finish(); // the echo came back: nothing of this lease is still in flight
    }
    assert_eq!(server.ws_accepted(), 1);
    let stats = m.stats();
    let pool = stats.services[0].websocket.as_ref().unwrap();
    assert_eq!((pool.acquisitions, pool.connections_created), (20, 1));
    assert!(pool.reuse_rate() > 0.9);
}

#[test]
fn the_newest_idle_socket_is_reused_first() {
    let server = echo_server();
    let m = manager(ws_service(&server.http_url(), 3, 0));
    let a = m.websocket("ws").unwrap();
    let b = m.websocket("ws").unwrap();
    let (a_id, b_id) = (tcp_port(&a), tcp_port(&b));
    drop(a);
    drop(b); // b went idle last
    let again = m.websocket("ws").unwrap();
    assert_eq!(tcp_port(&again), b_id);
    assert_ne!(a_id, b_id);
}

fn tcp_port(ws: &backend_pool::WsGuard) -> u16 {
    ws.local_addr().unwrap().port()
}

#[test]
fn a_socket_closed_by_the_peer_or_dropped_in_a_panic_is_not_returned() {
    let server = echo_server();
    let m = std::sync::Arc::new(manager(ws_service(&server.http_url(), 2, 0)));
    {
        let mut ws = m.websocket("ws").unwrap();
        server.kill_connections();
        let err = ws.read_timeout(Duration::from_secs(2)).unwrap_err();
        assert!(
            matches!(err.class(), ErrorClass::Closed | ErrorClass::Protocol),
            "{err:?}"
        );
    }
    let panicked = {
        let m = std::sync::Arc::clone(&m);
        thread::spawn(move || {
            let _ws = m.websocket("ws").unwrap();
            panic!("user code failed while holding a socket");
        })
        .join()
    };
    assert!(panicked.is_err());
    let stats = m.stats();
    let pool = stats.services[0].websocket.as_ref().unwrap();
    assert_eq!(pool.closed.broken, 2);
    assert_eq!((pool.in_use, pool.idle), (0, 0));
    // Capacity is intact: two sockets can still be held at once.
    let _a = m.websocket("ws").unwrap();
    let _b = m.websocket("ws").unwrap();
    assert!(eventually(Duration::from_secs(2), || server.ws_accepted() == 4));
}

#[test]
fn waiters_are_served_first_come_first_served() {
    let server = echo_server();
    let m = std::sync::Arc::new(manager(ws_service(&server.http_url(), 1, 0)));
    let held = m.websocket("ws").unwrap();
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for id in 0..4 {
        let shared = std::sync::Arc::clone(&m);
        let tx = tx.clone();
        handles.push(thread::spawn(move || {
            let ws = shared.websocket("ws").unwrap();
            tx.send(id).unwrap();
            thread::sleep(Duration::from_millis(5));
            drop(ws);
        }));
        assert!(eventually(Duration::from_secs(2), || m.stats().services[0]
            .websocket
            .as_ref()
            .unwrap()
            .waiting
            == id + 1));
    }
    drop(held);
    let order: Vec<_> = rx.iter().take(4).collect();
    assert_eq!(order, [0, 1, 2, 3]);
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn a_dead_peer_is_found_by_the_ping_and_dropped() {
    let server = echo_server();
    let mut cfg = ws_service(&server.http_url(), 2, 0);
    cfg.health_interval_ms = 50;
    let m = manager(cfg);
    drop(m.websocket("ws").unwrap());
    server.set_fault(Fault::WsIgnorePings);
    assert!(
        eventually(Duration::from_secs(5), || m.stats().services[0]
            .websocket
            .as_ref()
            .unwrap()
            .closed
            .health
            == 1),
        "the unanswered ping did not close the socket"
    );
    let stats = m.stats();
    assert_eq!(stats.services[0].websocket.as_ref().unwrap().idle, 0);
    assert!(stats.services[0].health.last_error.is_some());
    server.set_fault(Fault::None);
    let mut ws = m.websocket("ws").unwrap();
    ws.send_text("back").unwrap();
    assert_eq!(text(ws.read().unwrap()), "back");
}

#[test]
fn broadcasts_to_idle_sockets_are_drained() {
    let server = echo_server();
    let m = manager(ws_service(&server.http_url(), 2, 0));
    drop(m.websocket("ws").unwrap());
    for i in 0..50 {
        server.broadcast(&format!("{{\"type\":\"status\",\"n\":{i}}}"));
    }
    // Give the maintenance thread a few ticks to drain.
    thread::sleep(Duration::from_millis(300));
    let mut ws = m.websocket("ws").unwrap();
    ws.send_text("mine").unwrap();
    assert_eq!(
        text(ws.read().unwrap()),
        "mine",
        "a stale broadcast was left in the socket"
    );
}

#[test]
fn min_connections_are_opened_by_maintenance() {
    let server = echo_server();
    let m = manager(ws_service(&server.http_url(), 3, 2));
    assert!(eventually(Duration::from_secs(3), || server.ws_accepted() == 2));
    let stats = m.stats();
    assert_eq!(stats.services[0].websocket.as_ref().unwrap().idle, 2);
}

#[test]
fn connecting_happens_without_the_pool_lock() {
    // Every handshake takes 500 ms; while one caller is connecting, another caller takes
    // the idle socket at once.
    let server = TestServer::builder()
        .websocket("/ws", |_| {})
        .accept_delay(Duration::from_millis(500))
        .build()
        .unwrap();
    let m = std::sync::Arc::new(manager(ws_service(&server.http_url(), 2, 0)));
    drop(m.websocket("ws").unwrap()); // one idle socket
    let _hold = m.websocket("ws").unwrap(); // take it
    let connecting = {
        let m = std::sync::Arc::clone(&m);
        thread::spawn(move || m.websocket("ws").map(|_| ()))
    };
    thread::sleep(Duration::from_millis(100)); // the second caller is mid-handshake
    drop(_hold);
    let started = Instant::now();
    let quick = m.websocket_wait("ws", Duration::from_millis(200)).unwrap();
    assert!(started.elapsed() < Duration::from_millis(200));
    drop(quick);
    connecting.join().unwrap().unwrap();
}

#[test]
fn a_message_over_the_limit_is_classified_and_the_socket_dropped() {
    let server = TestServer::builder()
        .websocket("/ws", |h| {
            h.send_text(&"x".repeat(4096));
        })
        .build()
        .unwrap();
    let mut cfg = ws_service(&server.http_url(), 1, 0);
    let ws_cfg = cfg.websocket.as_mut().unwrap();
    ws_cfg.max_message_bytes = 1024;
    ws_cfg.max_frame_bytes = 1024;
    let m = manager(cfg);
    let mut ws = m.websocket("ws").unwrap();
    let err = ws.read().unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit: 1024, .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::TooLarge);
    drop(ws);
    assert_eq!(
        m.stats().services[0]
            .websocket
            .as_ref()
            .unwrap()
            .closed
            .broken,
        1
    );
}

#[test]
fn sockets_maintenance_is_pinging_are_not_reported_in_use() {
    let server = echo_server();
    let mut cfg = ws_service(&server.http_url(), 2, 2);
    cfg.unhealthy_after = 1_000; // keep pinging deaf sockets
    cfg.health_interval_ms = 50; // every pass pings
    let m = manager(cfg);
    let pool = |m: &backend_pool::PoolManager| m.stats().services[0].websocket.clone().unwrap();
    assert!(eventually(Duration::from_secs(2), || pool(&m).idle == 2));
    // Each maintenance pass now holds both sockets for the whole pong timeout (300 ms).
    server.set_fault(Fault::WsIgnorePings);
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        let p = pool(&m);
        assert_eq!(p.in_use, 0, "no caller holds a socket: {p:?}");
        thread::sleep(Duration::from_millis(5));
    }
    server.set_fault(Fault::None);
    // The pings did run (and failed): this was not a quiet second.
    assert!(pool(&m).closed.health > 0, "{:?}", pool(&m));
}

#[test]
fn a_pooled_socket_holds_one_descriptor() {
    // The server is a plain listener in this process: one descriptor per accepted socket.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = thread::spawn(move || {
        let sockets: Vec<_> = (0..4)
            .map(|_| {
                let (tcp, _) = listener.accept().unwrap();
                tungstenite::accept(tcp).unwrap()
            })
            .collect();
        (listener, sockets)
    });
    let port = listener_port(&url);
    let m = manager(ws_service(&url, 4, 0));
    let _warm = m.stats();
    // Only the sockets on this listener's port: other tests of this binary open and close
    // descriptors meanwhile (a process-wide count read 9 once).
    let before = backend_pool_testkit::socket_fds_on_port(port);
    let held: Vec<_> = (0..4).map(|_| m.websocket("ws").unwrap()).collect();
    let servers = accepted.join().unwrap();
    let after = backend_pool_testkit::socket_fds_on_port(port);
    // The listener, four client sockets and the four the server accepted; a second
    // descriptor per pooled socket (a clone for interrupting it) would make it thirteen.
    assert_eq!((before, after), (1, 9), "{before} -> {after}");
    drop((held, servers));
}

fn listener_port(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap()
}
