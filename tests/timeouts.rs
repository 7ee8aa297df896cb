//! Per-request timeouts by phase (issue 12): `total_timeout`, `connect_timeout` and
//! `read_timeout` override the service's for one request, and a timeout error names the phase
//! it happened in and the deadline that actually fired (a `.total_timeout(300 ms)` once
//! reported "after 5s", the service's request timeout).
//!
//! The service's own timeouts here are seconds long (`support::service`), the request's a few
//! hundred milliseconds: an error naming seconds names the wrong deadline.

mod support;

use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::{Error, ErrorClass, Phase, RequestBuilder};
use backend_pool_testkit::{Blackhole, Fault, Response, TestServer};
use support::{manager, service};

const MS_300: Duration = Duration::from_millis(300);

/// The error's phase and deadline, and its message naming both.
fn assert_timeout(err: &Error, phase: Phase, after: Duration) {
    match err {
        Error::Timeout {
            phase: p, after: a, ..
        } => {
            assert_eq!((*p, *a), (phase, after), "{err}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&format!("{after:?}")), "{msg}");
    assert!(msg.contains(&phase.to_string()), "{msg}");
}

/// A server that answers the head of every response at once and then trickles the body:
/// one SSE event, then silence for seconds.
fn slow_body_server() -> TestServer {
    TestServer::builder()
        .http(|_| {
            Response::sse(
                vec![("a".into(), "1".into()), ("b".into(), "2".into())],
                Duration::from_secs(3),
            )
        })
        .build()
        .unwrap()
}

#[test]
fn a_total_timeout_names_itself_and_the_phase_it_cut_short() {
    // Waiting for the response head.
    let server = TestServer::builder().build().unwrap();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    assert_eq!(http.get("/warm").call().unwrap().status(), 200);
    server.set_fault(Fault::Stall);
    let start = Instant::now();
    let err = http.get("/x").total_timeout(MS_300).call().unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3), "{err}");
    assert_timeout(&err, Phase::Receive, MS_300);
    assert_eq!(err.class(), ErrorClass::Timeout);
    server.set_fault(Fault::None);

    // Reading the body.
    let server = slow_body_server();
    let m = manager(service("svc", &server.http_url()));
    let err = m
        .http("svc")
        .unwrap()
        .get("/events")
        .total_timeout(MS_300)
        .call()
        .unwrap_err();
    assert_timeout(&err, Phase::Read, MS_300);
}

#[test]
fn a_total_timeout_while_sending_names_the_send_phase() {
    // Accepts, reads nothing: a large body fills the socket buffers and the send blocks.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (done, wait) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let _ = wait.recv_timeout(Duration::from_secs(5));
        drop(stream);
    });
    let m = manager(service("svc", &url));
    let body = vec![7u8; 32 << 20];
    let err = m
        .http("svc")
        .unwrap()
        .post("/upload")
        .total_timeout(MS_300)
        .send_bytes(&body)
        .unwrap_err();
    assert_timeout(&err, Phase::Send, MS_300);
    drop(done);
    holder.join().unwrap();
}

/// A GET to a listener that never accepts, with `limit` applied to the request: it fails
/// within the 300 ms the limit sets, as a connect failure naming that limit.
fn connect_to_a_blackhole(limit: impl FnOnce(RequestBuilder) -> RequestBuilder) {
    let hole = Blackhole::new().unwrap();
    let m = manager(service("svc", &format!("http://{}", hole.addr())));
    let start = Instant::now();
    let err = limit(m.http("svc").unwrap().get("/")).call().unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "{err}");
    assert_timeout(&err, Phase::Connect, MS_300);
    assert_eq!(err.class(), ErrorClass::Connect);
}

#[test]
fn a_total_timeout_while_connecting_is_a_connect_failure_naming_the_total() {
    connect_to_a_blackhole(|r| r.total_timeout(MS_300));
}

#[test]
fn a_connect_timeout_of_the_request_replaces_the_services() {
    connect_to_a_blackhole(|r| r.connect_timeout(MS_300));
}

#[test]
fn a_read_timeout_of_the_request_names_the_head_or_the_body() {
    // The body stalls after its first event.
    let server = slow_body_server();
    let m = manager(service("svc", &server.http_url()));
    let err = m
        .http("svc")
        .unwrap()
        .get("/events")
        .read_timeout(MS_300)
        .call()
        .unwrap_err();
    assert_timeout(&err, Phase::Read, MS_300);

    // No head at all: the read timeout runs from the request on.
    let server = TestServer::builder().build().unwrap();
    server.set_fault(Fault::Stall);
    let m = manager(service("svc", &server.http_url()));
    let err = m
        .http("svc")
        .unwrap()
        .get("/x")
        .read_timeout(MS_300)
        .call()
        .unwrap_err();
    assert_timeout(&err, Phase::Receive, MS_300);
    server.set_fault(Fault::None);
}

#[test]
fn a_request_s_timeouts_stay_with_that_request() {
    // `/slow` answers after 400 ms, on the same keep-alive connection as the calls before.
    let server = TestServer::builder()
        .http(|req| {
            if req.path == "/slow" {
                thread::sleep(Duration::from_millis(400));
            }
            Response::text(200, "ok")
        })
        .build()
        .unwrap();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    let short = Duration::from_millis(200);
    let fast = http
        .get("/fast")
        .read_timeout(short)
        .connect_timeout(short)
        .total_timeout(short)
        .call()
        .unwrap();
    assert_eq!(fast.status(), 200);
    assert_eq!(http.get("/slow").call().unwrap().text(), "ok");
    assert_eq!(server.accepted(), 1, "one keep-alive connection for both");
    let err = http.get("/slow").read_timeout(short).call().unwrap_err();
    assert_timeout(&err, Phase::Receive, short);
}

#[test]
fn a_read_timeout_longer_than_the_services_request_timeout_lets_a_slow_head_arrive() {
    // The head comes after 400 ms; the service allows 200 ms for it, the request 2 s of
    // silence. The request's own limit is the one that applies (and the service's still
    // applies to calls without one).
    let server = TestServer::builder()
        .http(|_| {
            thread::sleep(Duration::from_millis(400));
            Response::text(200, "late")
        })
        .build()
        .unwrap();
    let mut config = service("svc", &server.http_url());
    config.request_timeout_ms = 200;
    let m = manager(config);
    let http = m.http("svc").unwrap();
    let slow = http.get("/x").read_timeout(Duration::from_secs(2)).call();
    assert_eq!(slow.map(|r| r.text()).unwrap(), "late");
    let err = http.get("/x").call().unwrap_err();
    assert_timeout(&err, Phase::Receive, Duration::from_millis(200));
}

// Body reads: streamed, server-sent events, downloads. Each names the deadline that
// governed it: the request's read timeout, its total, or the service's read-idle timeout.
// (These once named the service's limits whatever the request set: "after 5s".)

/// The pool error a failed read of a stream carries, with the I/O kind it came as.
fn stream_error(e: &std::io::Error) -> &Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .unwrap_or_else(|| panic!("a read error without the pool's error: {e:?}"))
}

/// Reads `stream` to its first failure (the slow body server stalls after one event).
fn read_until_failure(stream: &mut backend_pool::StreamingResponse) -> std::io::Error {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => panic!("the body ended instead of stalling"),
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

#[test]
fn a_download_names_the_request_s_read_timeout_when_the_body_stalls() {
    let server = slow_body_server();
    let m = manager(service("svc", &server.http_url()));
    let mut out = Vec::new();
    let start = Instant::now();
    let err = m
        .http("svc")
        .unwrap()
        .get("/events")
        .read_timeout(MS_300)
        .download_to_writer(&mut out, |_| {})
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "{err}");
    assert!(!out.is_empty(), "the body stalled before its first bytes");
    assert_timeout(&err, Phase::Read, MS_300);
    assert_eq!(err.class(), ErrorClass::Timeout);
    let stats = m.stats().services[0].http.clone().unwrap();
    assert_eq!(
        stats.errors.get(ErrorClass::Timeout),
        1,
        "{:?}",
        stats.errors
    );

    // To a file: the same.
    let dest = std::env::temp_dir().join(format!("bp-timeouts-{}.bin", std::process::id()));
    let err = m
        .http("svc")
        .unwrap()
        .get("/events")
        .read_timeout(MS_300)
        .download_to(&dest, |_| {})
        .unwrap_err();
    assert_timeout(&err, Phase::Read, MS_300);
    assert!(!dest.exists());
}

#[test]
fn a_stream_read_names_the_request_s_read_timeout_and_counts_it_once() {
    let server = slow_body_server();
    let m = manager(service("svc", &server.http_url()));
    let mut stream = m
        .http("svc")
        .unwrap()
        .get("/events")
        .read_timeout(MS_300)
        .stream(&[])
        .unwrap();
    let start = Instant::now();
    let e = read_until_failure(&mut stream);
    assert!(start.elapsed() < Duration::from_secs(2), "{e}");
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e:?}");
    assert_timeout(stream_error(&e), Phase::Read, MS_300);
    assert!(e.to_string().contains("300ms"), "{e}");
    // Read again: the same kind of failure, counted once for the stream.
    let again = read_until_failure(&mut stream);
    assert_eq!(again.kind(), std::io::ErrorKind::TimedOut, "{again:?}");
    drop(stream);
    support::assert_one_error(&m, ErrorClass::Timeout);
}

#[test]
fn server_sent_events_name_the_request_s_read_timeout() {
    let server = slow_body_server();
    let m = manager(service("svc", &server.http_url()));
    let mut stream = m
        .http("svc")
        .unwrap()
        .get("/events")
        .read_timeout(MS_300)
        .stream(&[])
        .unwrap();
    let mut events = stream.events();
    assert_eq!(events.next().unwrap().unwrap().data, "1");
    let err = events.next().unwrap().unwrap_err();
    let backend_pool::sse::Error::Io(e) = &err else {
        panic!("expected a read failure, got {err:?}");
    };
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e:?}");
    assert_timeout(stream_error(e), Phase::Read, MS_300);
}

#[test]
fn a_total_timeout_that_fires_mid_body_is_named_by_streams_events_and_downloads() {
    let server = slow_body_server();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    // The read timeout is longer: the total fires first.
    let request = || {
        http.get("/events")
            .read_timeout(Duration::from_secs(2))
            .total_timeout(MS_300)
    };
    let mut stream = request().stream(&[]).unwrap();
    let e = read_until_failure(&mut stream);
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e:?}");
    assert_timeout(stream_error(&e), Phase::Read, MS_300);
    drop(stream);

    let mut stream = request().stream(&[]).unwrap();
    let err = stream.events().nth(1).unwrap().unwrap_err();
    let backend_pool::sse::Error::Io(e) = &err else {
        panic!("expected a read failure, got {err:?}");
    };
    assert_timeout(stream_error(e), Phase::Read, MS_300);
    drop(stream);

    let err = request()
        .download_to_writer(&mut Vec::new(), |_| {})
        .unwrap_err();
    assert_timeout(&err, Phase::Read, MS_300);
    let err = request().call().unwrap_err();
    assert_timeout(&err, Phase::Read, MS_300);
}

#[test]
fn a_body_read_without_the_request_s_limits_names_the_service_s_read_idle_timeout() {
    let server = slow_body_server();
    let mut config = service("svc", &server.http_url());
    config.read_idle_timeout_ms = 250;
    let m = manager(config);
    let http = m.http("svc").unwrap();
    let idle = Duration::from_millis(250);
    let mut stream = http.get("/events").stream(&[]).unwrap();
    let e = read_until_failure(&mut stream);
    assert_timeout(stream_error(&e), Phase::Read, idle);
    drop(stream);
    let err = http
        .get("/events")
        .download_to_writer(&mut Vec::new(), |_| {})
        .unwrap_err();
    assert_timeout(&err, Phase::Read, idle);
    assert_timeout(&http.get("/events").call().unwrap_err(), Phase::Read, idle);
}

#[test]
fn a_cancel_or_a_shutdown_during_a_body_read_with_request_limits_stays_what_it_is() {
    let server = slow_body_server();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    let token = backend_pool::CancelToken::new();
    let mut stream = http
        .get("/events")
        .read_timeout(Duration::from_secs(2))
        .total_timeout(Duration::from_secs(3))
        .cancel_on(&token)
        .stream(&[])
        .unwrap();
    let canceller = {
        let token = token.clone();
        thread::spawn(move || {
            thread::sleep(MS_300);
            token.cancel();
        })
    };
    let e = read_until_failure(&mut stream);
    canceller.join().unwrap();
    let err = stream_error(&e);
    assert!(matches!(err, Error::Cancelled { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Cancelled);
    drop(stream);

    // A download: the same.
    let token = backend_pool::CancelToken::new();
    let canceller = {
        let token = token.clone();
        thread::spawn(move || {
            thread::sleep(MS_300);
            token.cancel();
        })
    };
    let err = http
        .get("/events")
        .read_timeout(Duration::from_secs(2))
        .cancel_on(&token)
        .download_to_writer(&mut Vec::new(), |_| {})
        .unwrap_err();
    canceller.join().unwrap();
    assert_eq!(err.class(), ErrorClass::Cancelled, "{err:?}");

    // Shutdown while a stream with its own limits waits for body bytes.
    let mut stream = http
        .get("/events")
        .read_timeout(Duration::from_secs(2))
        .stream(&[])
        .unwrap();
    let e = thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(MS_300);
            m.shutdown(Duration::from_millis(100)).unwrap();
        });
        read_until_failure(&mut stream)
    });
    let err = stream_error(&e);
    assert_eq!(err.class(), ErrorClass::ShuttingDown, "{err:?}");
}
