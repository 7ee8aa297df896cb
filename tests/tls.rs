//! https and wss to loopback servers with self-signed certificates: trusted through
//! `ca_file`, and a fast, classified error for an untrusted certificate or a wrong name.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::{CancelToken, ErrorClass, Message, Phase, ServiceConfig, WsPoolConfig};
use support::stall::StallServer;
use support::{manager, service};

struct TlsServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

/// A TLS server for `names` on 127.0.0.1 that answers HTTP/1.1 keep-alive requests with
/// `ok`, or (with `websocket`) echoes WebSocket messages. Writes the certificate's PEM to
/// a temporary file and returns its path.
fn tls_server(names: &[&str], websocket: bool) -> (TlsServer, String) {
    let tag = names.join("_").replace(['.', ':'], "-") + if websocket { "-ws" } else { "" };
    let (config, pem_path) = support::self_signed(names, &format!("test-{tag}"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    // The accept loop ends with the test process; each connection thread ends on EOF.
    thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::Relaxed);
            let config = Arc::clone(&config);
            thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let stream = rustls::StreamOwned::new(conn, tcp);
                if websocket {
                    if let Ok(mut ws) = tungstenite::accept(stream) {
                        while let Ok(m) = ws.read() {
                            if (m.is_text() || m.is_binary()) && ws.send(m).is_err() {
                                break;
                            }
                        }
                    }
                } else {
                    serve_http(stream);
                }
            });
        }
    });
    (TlsServer { port, accepted }, pem_path.display().to_string())
}

fn serve_http(stream: rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        // Read one request head (bodies are not sent by these tests).
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let out = reader.get_mut();
        if out
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

fn https_service(name: &str, port: u16, ca_file: Option<String>) -> ServiceConfig {
    ServiceConfig {
        ca_file,
        ..service(name, &format!("https://127.0.0.1:{port}"))
    }
}

#[test]
fn https_with_a_trusted_custom_root_works_and_reuses_its_connection() {
    let (server, pem) = tls_server(&["127.0.0.1"], false);
    let mut cfg = https_service("tls", server.port, Some(pem));
    // Reuse is what is checked: a loaded machine must not let the keep-alive limit lapse
    // between two requests.
    cfg.http.as_mut().unwrap().keepalive_idle_ms = 60_000;
    let m = manager(cfg);
    let http = m.http("tls").unwrap();
    for _ in 0..20 {
        assert_eq!(http.get("/").call().unwrap().text(), "ok");
    }
    assert_eq!(server.accepted.load(Ordering::Relaxed), 1);
}

#[test]
fn wss_with_a_trusted_custom_root_works() {
    let (server, pem) = tls_server(&["127.0.0.1"], true);
    let mut cfg = https_service("tls-ws", server.port, Some(pem));
    cfg.http = None;
    cfg.websocket = Some(WsPoolConfig {
        min_connections: 0,
        ..WsPoolConfig::default()
    });
    let m = manager(cfg);
    for i in 0..5 {
        let mut ws = m.websocket("tls-ws").unwrap();
        ws.send_text(&format!("secure {i}")).unwrap();
        let reply = ws.read().unwrap();
        assert_eq!(reply, Message::text(format!("secure {i}")));
        ws.finish();
    }
    assert_eq!(server.accepted.load(Ordering::Relaxed), 1);
}

#[test]
fn an_untrusted_certificate_fails_fast_with_a_connect_error() {
    let (server, _pem) = tls_server(&["127.0.0.1"], false);
    // No ca_file: the webpki roots do not know this self-signed certificate.
    let m = manager(https_service("tls", server.port, None));
    let started = Instant::now();
    let err = m.http("tls").unwrap().get("/").call().unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not fast: {err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Connect, "{err:?}");
    assert_eq!(err.phase(), Some(Phase::Connect));
    let chain = format!("{:?}", err);
    assert!(chain.to_lowercase().contains("cert"), "{chain}");

    let mut cfg = https_service("tls-ws", server.port, None);
    cfg.http = None;
    cfg.websocket = Some(WsPoolConfig {
        min_connections: 0,
        ..WsPoolConfig::default()
    });
    let m = manager(cfg);
    let started = Instant::now();
    let err = m.websocket("tls-ws").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(err.class(), ErrorClass::Connect, "{err:?}");
}

#[test]
fn a_certificate_for_another_name_fails_fast() {
    let (server, pem) = tls_server(&["backend.example"], false);
    let m = manager(https_service("tls", server.port, Some(pem)));
    let started = Instant::now();
    let err = m.http("tls").unwrap().get("/").call().unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(err.class(), ErrorClass::Connect, "{err:?}");
    let chain = format!("{err:?}");
    assert!(
        chain.contains("NotValidForName") || chain.to_lowercase().contains("name"),
        "{chain}"
    );
}

/// A token cancelled while the TLS handshake waits for a server that never answers the
/// ClientHello (https, then wss) ends the call at once with `Cancelled` in the connect phase
/// (not at `connect_timeout_ms`), not counted against health; the server sees the socket
/// closed.
#[test]
fn a_stalled_tls_handshake_is_cancelled_at_once() {
    let silent = StallServer::silent();
    let mut cfg = ServiceConfig {
        connect_timeout_ms: 5_000,
        websocket: Some(WsPoolConfig {
            min_connections: 0,
            ..WsPoolConfig::default()
        }),
        ..service("tls", &silent.https_url())
    };
    cfg.health_interval_ms = 60_000;
    let m = manager(cfg);
    let http = m.http("tls").unwrap();
    type Call<'a> = &'a (dyn Fn(&CancelToken) -> Result<(), backend_pool::Error> + Sync);
    let calls: [Call<'_>; 2] = [
        &|token| http.get("/").cancel_on(token).call().map(drop),
        &|token| m.websocket_cancellable("tls", token).map(drop),
    ];
    for (i, call) in calls.into_iter().enumerate() {
        let token = CancelToken::new();
        let (err, took) = thread::scope(|s| {
            let caller = s.spawn(|| call(&token).unwrap_err());
            assert!(support::eventually(Duration::from_secs(3), || {
                silent.accepted() == i + 1
            }));
            thread::sleep(Duration::from_millis(50)); // the ClientHello is sent
            let at = Instant::now();
            token.cancel();
            let err = caller.join().unwrap();
            (err, at.elapsed())
        });
        eprintln!("TLS handshake {i}: returned {took:?} after cancel()");
        assert_eq!(
            (err.class(), err.phase()),
            (ErrorClass::Cancelled, Some(Phase::Connect)),
            "{err:?}"
        );
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
    assert!(
        support::eventually(Duration::from_secs(3), || silent.open() == 0),
        "the server still sees {} sockets open",
        silent.open()
    );
    let health = m.health("tls").unwrap();
    assert_eq!(health.consecutive_failures, 0, "{health:?}");
}
