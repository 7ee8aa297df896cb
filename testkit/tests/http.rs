//! HTTP behaviour of `TestServer`: keep-alive, timeouts, faults, framing.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use backend_pool_testkit::{Fault, Response, TestServer};
use common::{wait_until, Conn};

fn echo_server() -> TestServer {
    TestServer::builder()
        .http(|req| {
            Response::text(
                200,
                &format!("{} {} {}", req.method, req.path, req.body.len()),
            )
            .with_header("X-Conn", &req.conn_id.to_string())
        })
        .build()
        .unwrap()
}

#[test]
fn keep_alive_reuses_one_connection() {
    let server = echo_server();
    let mut c = Conn::open(server.addr());
    let a = c.request("GET", "/a?x=1");
    let b = c.request("GET", "/b");
    assert_eq!(a.text(), "GET /a?x=1 0");
    assert_eq!(b.text(), "GET /b 0");
    assert_eq!(a.header("x-conn"), b.header("x-conn"));
    assert!(a.header("connection").is_none());
    assert_eq!(server.accepted(), 1);
    assert_eq!(server.requests(), 2);
    assert_eq!(server.open(), 1);
    assert_eq!(
        server.request_log(),
        vec![
            ("GET".to_string(), "/a?x=1".to_string()),
            ("GET".to_string(), "/b".to_string())
        ]
    );
    drop(c);
    assert!(wait_until(Duration::from_secs(2), || server.open() == 0));
    server.stop();
}

#[test]
fn bodies_head_and_connection_close() {
    let server = echo_server();
    let mut c = Conn::open(server.addr());
    c.send("POST", "/p", "", b"hello");
    assert_eq!(c.read_response(false).unwrap().text(), "POST /p 5");
    // Chunked request body.
    c.stream
        .write_all(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response(false).unwrap().text(), "POST /c 7");
    // HEAD: Content-Length but no body.
    let h = c.request("HEAD", "/h");
    assert_eq!(h.header("content-length"), Some("9")); // "HEAD /h 0"
                                                       // The client's Connection: close is honoured.
    c.send("GET", "/last", "Connection: close\r\n", b"");
    let last = c.read_response(false).unwrap();
    assert_eq!(last.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(2)));
    assert_eq!(server.accepted(), 1);
}

#[test]
fn works_with_ureq_agent() {
    let server = echo_server();
    let agent = ureq::Agent::new_with_defaults();
    for i in 0..5 {
        let mut r = agent
            .post(&format!("{}/u/{i}", server.http_url()))
            .send("data")
            .unwrap();
        assert_eq!(
            r.body_mut().read_to_string().unwrap(),
            format!("POST /u/{i} 4")
        );
    }
    assert_eq!(server.accepted(), 1, "ureq should reuse its connection");
}

#[test]
fn idle_timeout_closes_silently() {
    let server = TestServer::builder()
        .idle_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut c = Conn::open(server.addr());
    let r = c.request("GET", "/");
    assert_eq!(r.status, 200);
    assert!(
        r.header("connection").is_none(),
        "no Connection: close warning"
    );
    let t = Instant::now();
    assert!(c.closed_within(Duration::from_secs(3)));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert!(wait_until(Duration::from_secs(2), || server.open() == 0));
}

#[test]
fn max_requests_per_connection() {
    let server = TestServer::builder()
        .max_requests_per_connection(2)
        .build()
        .unwrap();
    let mut c = Conn::open(server.addr());
    assert!(c.request("GET", "/1").header("connection").is_none());
    assert_eq!(c.request("GET", "/2").header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(2)));
}

#[test]
fn kill_connections_drops_every_socket() {
    let server = echo_server();
    let mut conns: Vec<Conn> = (0..5).map(|_| Conn::open(server.addr())).collect();
    for c in &mut conns {
        c.request("GET", "/");
    }
    assert_eq!(server.open(), 5);
    server.kill_connections();
    for c in &mut conns {
        assert!(c.closed_within(Duration::from_secs(2)));
    }
    assert!(wait_until(Duration::from_secs(2), || server.open() == 0));
    // The server itself keeps serving.
    assert_eq!(
        Conn::open(server.addr()).request("GET", "/again").status,
        200
    );
    assert_eq!(server.accepted(), 6);
}

#[test]
fn faults() {
    let server = echo_server();

    server.set_fault(Fault::Refuse);
    let mut c = Conn::open(server.addr());
    assert!(c.closed_within(Duration::from_secs(2)));

    server.set_fault(Fault::CloseBeforeResponse);
    let mut c = Conn::open(server.addr());
    c.send("GET", "/x", "", b"");
    assert!(c.read_response(false).is_none());

    server.set_fault(Fault::MalformedResponse);
    let mut c = Conn::open(server.addr());
    c.send("GET", "/x", "", b"");
    assert!(c.read_response(false).is_none());

    server.set_fault(Fault::SlowBytes(Duration::from_millis(1)));
    let mut c = Conn::open(server.addr());
    let t = Instant::now();
    assert_eq!(c.request("GET", "/slow").text(), "GET /slow 0");
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "{:?}",
        t.elapsed()
    );

    // Stall, then release: the stalled request is answered.
    server.set_fault(Fault::Stall);
    let mut c = Conn::open(server.addr());
    c.set_timeout(Duration::from_millis(200));
    c.send("GET", "/stalled", "", b"");
    assert!(c.read_response(false).is_none(), "stalled");
    server.set_fault(Fault::None);
    let mut c2 = Conn::open(server.addr());
    assert_eq!(c2.request("GET", "/ok").status, 200);
    // `c` timed out mid-read; its answer arrived but we gave up on it: fine.
    assert!(server
        .request_log()
        .contains(&("GET".into(), "/stalled".into())));
}

#[test]
fn stop_does_not_hang_on_stalled_connection() {
    let server = TestServer::builder()
        .accept_delay(Duration::from_millis(1))
        .build()
        .unwrap();
    server.set_fault(Fault::Stall);
    let mut c = Conn::open(server.addr());
    c.send("GET", "/never", "", b"");
    assert!(wait_until(Duration::from_secs(2), || server.requests() == 1));
    let t = Instant::now();
    server.stop();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(c.read_response(false).is_none());
}

#[test]
fn accept_delay_and_sse() {
    let server = TestServer::builder()
        .accept_delay(Duration::from_millis(150))
        .http(|_| {
            Response::sse(
                vec![
                    ("a".to_string(), "1".to_string()),
                    (String::new(), "two\nlines".to_string()),
                ],
                Duration::from_millis(5),
            )
        })
        .build()
        .unwrap();
    let t = Instant::now();
    let mut c = Conn::open(server.addr());
    let r = c.request("GET", "/events");
    assert!(t.elapsed() >= Duration::from_millis(150));
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.text(), "event: a\ndata: 1\n\ndata: two\ndata: lines\n\n");
    // Still keep-alive after a chunked stream.
    assert_eq!(c.request("GET", "/again").status, 200);
    assert_eq!(server.accepted(), 1);
}

#[test]
fn garbage_request_closes_only_that_connection() {
    let server = echo_server();
    let mut bad = Conn::open(server.addr());
    bad.stream
        .write_all(b"\x16\x03\x01\x00garbage\r\n\r\n")
        .unwrap();
    assert!(bad.closed_within(Duration::from_secs(2)));
    let mut bad = Conn::open(server.addr());
    bad.stream
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
        .unwrap();
    assert!(bad.closed_within(Duration::from_secs(2)));
    assert_eq!(Conn::open(server.addr()).request("GET", "/").status, 200);
}

#[test]
fn many_idle_connections() {
    let server = echo_server();
    let conns: Vec<Conn> = (0..1000).map(|_| Conn::open(server.addr())).collect();
    assert!(wait_until(Duration::from_secs(5), || server.open() == 1000));
    drop(conns);
    assert!(wait_until(Duration::from_secs(5), || server.open() == 0));
    server.stop();
}

#[test]
fn generated_bodies_are_made_as_written_and_a_cut_closes_mid_body() {
    let server = TestServer::builder()
        .http(|req| {
            let body = Response::generated(200, "application/octet-stream", 200_000, |at, buf| {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = ((at + i as u64) % 251) as u8;
                }
            });
            if req.path == "/cut" {
                body.cut_after(70_000)
            } else {
                body
            }
        })
        .build()
        .unwrap();
    let mut c = Conn::open(server.addr());
    let whole = c.request("GET", "/whole");
    assert_eq!(whole.header("content-length"), Some("200000"));
    assert!(whole
        .body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (i % 251) as u8));
    let again = c.request("GET", "/whole");
    assert_eq!(
        again.body.len(),
        200_000,
        "kept alive after a generated body"
    );
    c.send("GET", "/cut", "", b"");
    assert!(c.read_response(false).is_none(), "a cut body is short");
    assert!(c.closed_within(Duration::from_secs(2)));
    assert_eq!(server.accepted(), 1);
    server.stop();
}
