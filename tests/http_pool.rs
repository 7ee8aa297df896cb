//! HTTP pool behaviour against loopback servers that count the connections they accept.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::{Error, ErrorClass, Phase};
use backend_pool_testkit::{Fault, Response, TestServer};
use support::{eventually, http_echo_server as echo_server, manager, service, with_http_size};

#[test]
fn sequential_requests_reuse_one_connection() {
    let server = echo_server();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    for i in 0..100 {
        let r = http.get(&format!("/n/{i}")).call().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text(), format!("GET /n/{i}"));
    }
    assert_eq!(
        server.accepted(),
        1,
        "the server saw more than one connection"
    );
    let stats = m.stats();
    let pool = stats.service("svc").unwrap().http.as_ref().unwrap();
    assert_eq!(pool.connections_created, server.accepted() as u64);
    assert_eq!(pool.requests, Some(100));
    assert!(pool.reuse_rate() >= 0.99, "{}", pool.reuse_rate());
}

#[test]
fn concurrency_never_exceeds_the_cap_200_threads_x_50_requests() {
    let server = echo_server();
    let m = Arc::new(manager(with_http_size(
        service("svc", &server.http_url()),
        10,
        2,
    )));
    let errors = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..200)
        .map(|t| {
            let m = Arc::clone(&m);
            let errors = Arc::clone(&errors);
            thread::spawn(move || {
                let http = m.http("svc").unwrap();
                for i in 0..50 {
                    match http.post(&format!("/t{t}/{i}")).send_bytes(b"x") {
                        Ok(r) if r.status() == 200 => {}
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    assert!(
        server.accepted() <= 10,
        "server accepted {}",
        server.accepted()
    );
    assert_eq!(server.requests(), 10_000);
    let stats = m.stats();
    let pool = stats.service("svc").unwrap().http.as_ref().unwrap();
    assert_eq!(pool.requests, Some(10_000));
    assert_eq!(pool.connections_created, server.accepted() as u64);
    assert_eq!(pool.in_use, 0);
}

#[test]
fn a_waiter_is_served_when_a_connection_returns() {
    let server = echo_server();
    let m = manager(with_http_size(service("svc", &server.http_url()), 1, 0));
    let http = m.http("svc").unwrap();
    let held = http.checkout().unwrap();
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let http = http.clone();
        thread::spawn(move || {
            let started = Instant::now();
            let r = http.get("/after").call();
            tx.send(()).unwrap();
            (r.map(|r| r.text()), started.elapsed())
        })
    };
    assert!(eventually(Duration::from_secs(2), || m.stats().services[0]
        .http
        .as_ref()
        .unwrap()
        .waiting
        == 1));
    assert!(rx.try_recv().is_err(), "the waiter did not wait");
    drop(held);
    let (text, _) = waiter.join().unwrap();
    assert_eq!(text.unwrap(), "GET /after");
}

#[test]
fn exhausted_pool_times_out_with_the_pool_state() {
    let server = echo_server();
    let mut cfg = with_http_size(service("svc", &server.http_url()), 2, 0);
    cfg.wait_timeout_ms = 100;
    let m = manager(cfg);
    let http = m.http("svc").unwrap();
    let _a = http.checkout().unwrap();
    let _b = http.checkout().unwrap();
    let started = Instant::now();
    let err = http.get("/").call().unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(100));
    match &err {
        Error::PoolTimeout { service, state, .. } => {
            assert_eq!(service, "svc");
            assert_eq!((state.in_use, state.waiting, state.max), (2, 1, 2));
        }
        other => panic!("expected a pool timeout, got {other:?}"),
    }
    assert_eq!(err.class(), ErrorClass::PoolTimeout);
    assert_eq!(err.phase(), Some(Phase::Wait));
    let stats = m.stats();
    let pool = stats.services[0].http.as_ref().unwrap();
    assert_eq!(pool.errors.get(ErrorClass::PoolTimeout), 1);
}

#[test]
fn idle_gaps_longer_than_the_server_keepalive_never_surface() {
    // uvicorn's 5 s keep-alive scaled down: the server closes idle connections after 1 s,
    // silently. The pool's keep-alive limit is left above it, so the socket is really stale.
    let server = TestServer::builder()
        .http(|_| Response::text(200, "ok"))
        .idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut cfg = service("svc", &server.http_url());
    cfg.http.as_mut().unwrap().keepalive_idle_ms = 60_000;
    let m = manager(cfg);
    let http = m.http("svc").unwrap();
    for round in 0..4 {
        if round > 0 {
            thread::sleep(Duration::from_millis(1500));
        }
        for method in ["GET", "POST", "HEAD"] {
            let r = http
                .request(method, "/x")
                .send_bytes(b"")
                .unwrap_or_else(|e| panic!("round {round} {method}: {e}"));
            assert_eq!(r.status(), 200);
        }
    }
    // One connection per gap, no reconnect loop.
    assert_eq!(server.accepted(), 4);
}

#[test]
fn a_post_on_a_connection_that_dies_is_a_classified_error_not_a_retry() {
    let server = echo_server();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    http.get("/warm").call().unwrap();
    server.set_fault(Fault::CloseBeforeResponse);
    let err = http.post("/prompt").send_bytes(b"{}").unwrap_err();
    assert_eq!(err.class(), ErrorClass::Closed, "{err:?}");
    assert!(matches!(err, Error::ConnectionClosed { .. }), "{err:?}");
    let posts = server
        .request_log()
        .iter()
        .filter(|(m, p)| m == "POST" && p == "/prompt")
        .count();
    assert_eq!(posts, 1, "the POST was sent more than once");
    // A GET is retried once on a fresh connection, then reported.
    let before = server.requests();
    let err = http.get("/again").call().unwrap_err();
    assert_eq!(err.class(), ErrorClass::Closed);
    assert_eq!(server.requests() - before, 2);
    let stats = m.stats();
    assert_eq!(stats.services[0].http.as_ref().unwrap().retries, 1);
    server.set_fault(Fault::None);
    assert_eq!(http.get("/fine").call().unwrap().status(), 200);
}

#[test]
fn a_body_over_the_limit_is_a_classified_error_and_the_connection_is_dropped() {
    let server = TestServer::builder()
        .http(|_| Response::bytes(200, "application/octet-stream", vec![7; 64 * 1024]))
        .build()
        .unwrap();
    let mut cfg = service("svc", &server.http_url());
    cfg.http.as_mut().unwrap().max_body_bytes = 1024;
    let m = manager(cfg);
    let http = m.http("svc").unwrap();
    let err = http.get("/big").call().unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit: 1024, .. }),
        "{err:?}"
    );
    // The connection with unread bytes was not reused: the next request opens another.
    let _ = http.get("/big").call();
    assert_eq!(server.accepted(), 2);
    let stats = m.stats();
    assert_eq!(
        stats.services[0]
            .http
            .as_ref()
            .unwrap()
            .errors
            .get(ErrorClass::TooLarge),
        2
    );
}

#[test]
fn a_response_head_over_the_limit_is_a_classified_error() {
    let server = TestServer::builder()
        .http(|_| Response::text(200, "ok").with_header("X-Padding", &"p".repeat(16 * 1024)))
        .build()
        .unwrap();
    let mut cfg = service("svc", &server.http_url());
    cfg.http.as_mut().unwrap().max_header_bytes = 4096;
    let m = manager(cfg);
    let err = m.http("svc").unwrap().get("/").call().unwrap_err();
    assert_eq!(err.class(), ErrorClass::TooLarge, "{err:?}");
    assert!(err.to_string().contains("response head"), "{err}");
    assert_eq!(m.stats().services[0].http.as_ref().unwrap().in_use, 0);
}

#[test]
fn streaming_reads_server_sent_events_and_returns_the_connection() {
    use std::io::BufRead;
    let server = TestServer::builder()
        .http(|req| {
            let gap = if req.path == "/slow" { 200 } else { 5 };
            Response::sse(
                (0..5)
                    .map(|i| ("generating".to_string(), format!("[{i}]")))
                    .chain([("complete".to_string(), "[\"done\"]".to_string())])
                    .collect(),
                Duration::from_millis(gap),
            )
        })
        .build()
        .unwrap();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    for _ in 0..3 {
        let stream = http.get("/gradio_api/call/generate/1").stream(b"").unwrap();
        assert_eq!(stream.status(), 200);
        let lines: Vec<String> = stream.lines().map(|l| l.unwrap()).collect();
        assert!(lines.iter().any(|l| l == "event: complete"), "{lines:?}");
    }
    // A stream dropped right after its last event (its terminator still unread) keeps its
    // connection too.
    for _ in 0..3 {
        let mut stream = http.get("/gradio_api/call/generate/1").stream(b"").unwrap();
        let mut line = String::new();
        while stream.read_line(&mut line).unwrap() > 0 && !line.contains("complete") {}
        drop(stream);
    }
    assert_eq!(server.accepted(), 1);
    // One dropped in the middle is closed, not returned with unread bytes.
    let mut stream = http.get("/slow").stream(b"").unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).unwrap();
    drop(stream);
    assert_eq!(http.get("/next").call().unwrap().status(), 200);
    assert_eq!(server.accepted(), 2);
}

#[test]
fn a_refused_connection_is_a_connect_error_and_startup_does_not_need_the_backend() {
    // Bind and drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = manager(service("down", &format!("http://127.0.0.1:{port}")));
    let err = m.http("down").unwrap().get("/").call().unwrap_err();
    assert_eq!(err.class(), ErrorClass::Connect, "{err:?}");
    assert_eq!(err.phase(), Some(Phase::Connect));
    let pool_stats = m.stats();
    assert_eq!(
        pool_stats.services[0]
            .http
            .as_ref()
            .unwrap()
            .connect_failures,
        1
    );
}

#[test]
fn unknown_services_and_missing_pools_are_named() {
    let server = echo_server();
    let m = manager(service("svc", &server.http_url()));
    let err = m.http("nope").unwrap_err().to_string();
    assert!(err.contains("'nope'") && err.contains("svc"), "{err}");
    let err = m.websocket("svc").unwrap_err().to_string();
    assert!(err.contains("no WebSocket pool"), "{err}");
}

#[test]
fn bearer_token_and_headers_are_sent() {
    let server = TestServer::builder()
        .http(|req| {
            Response::text(
                200,
                &format!(
                    "{}|{}",
                    req.header("authorization").unwrap_or("-"),
                    req.header("x-extra").unwrap_or("-")
                ),
            )
        })
        .build()
        .unwrap();
    let mut cfg = service("svc", &server.http_url());
    cfg.bearer_token = Some(backend_pool::Secret::new("sk-test-1234"));
    cfg.headers.insert("X-Extra".into(), "yes".into());
    let m = manager(cfg);
    let r = m.http("svc").unwrap().get("/").call().unwrap();
    assert_eq!(r.text(), "Bearer sk-test-1234|yes");
}
