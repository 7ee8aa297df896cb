//! Streaming responses (`RequestBuilder::stream`) against loopback servers that count the
//! connections they accept: the stream cap that keeps connections free for short calls, the
//! bounded drain of a dropped stream, and connections returned while the pool shuts down.

mod support;

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::{
    Error, ErrorClass, HttpClient, ManagerConfig, PoolManager, ServiceConfig, StreamingResponse,
};
use backend_pool_testkit::{Fault, Response, TestServer};
use support::{eventually, manager, service, with_http_size};

/// `/hold/*`: an event, then 3 s of silence, another, 3 s more (a queued Gradio job).
/// `/live`: an event every 5 ms for 10 s. `/done`: six events 5 ms apart, then the end.
/// `/big`: 4 MiB of events at once. `/missing`: 404. Anything else: a small JSON answer (a
/// short call).
fn stream_server() -> TestServer {
    TestServer::builder()
        .http(|req| {
            let ev = |n: usize, data: &str| -> Vec<(String, String)> {
                (0..n)
                    .map(|i| ("generating".to_string(), format!("[{i}] {data}")))
                    .collect()
            };
            if req.path.starts_with("/hold/") {
                Response::sse(ev(2, ""), Duration::from_secs(3))
            } else if req.path == "/live" {
                Response::sse(ev(2000, ""), Duration::from_millis(5))
            } else if req.path == "/done" {
                let mut events = ev(5, "");
                events.push(("complete".into(), "[\"done\"]".into()));
                Response::sse(events, Duration::from_millis(5))
            } else if req.path == "/missing" {
                Response::text(404, "no such thing")
            } else if req.path == "/big" {
                Response::sse(ev(64, &"x".repeat(64 * 1024)), Duration::ZERO)
            } else {
                Response::json(200, serde_json::json!({"path": req.path}))
            }
        })
        .build()
        .unwrap()
}

/// A service of `max` connections of which at most `cap` hold streams.
fn capped(server: &TestServer, max: u32, cap: u32) -> PoolManager {
    let mut s = with_http_size(service("svc", &server.http_url()), max, 0);
    s.http.as_mut().unwrap().max_stream_connections = Some(cap);
    manager(s)
}

fn waiting(m: &PoolManager) -> usize {
    m.stats().services[0].http.as_ref().unwrap().waiting
}

/// Stream requests the server has seen (`/hold/…`).
fn holds_seen(server: &TestServer) -> Vec<String> {
    server
        .request_log()
        .into_iter()
        .map(|(_, path)| path)
        .filter(|p| p.starts_with("/hold/"))
        .collect()
}

/// Opens a stream and reads its first line, so the server has answered.
fn open(http: &HttpClient, path: &str, wait: Duration) -> Result<StreamingResponse, Error> {
    let mut s = http.get(path).wait_timeout(wait).stream(b"")?;
    let mut line = String::new();
    s.read_line(&mut line).unwrap();
    assert!(line.starts_with("event:"), "{line:?}");
    Ok(s)
}

const LONG: Duration = Duration::from_secs(5);

// ---- the stream cap ------------------------------------------------------------------------

#[test]
fn short_calls_find_a_connection_while_streams_fill_their_cap_and_more_wait() {
    let server = stream_server();
    let m = capped(&server, 5, 4);
    let http = m.http("svc").unwrap();
    let held: Vec<_> = (0..4)
        .map(|i| open(&http, &format!("/hold/{i}"), LONG).unwrap())
        .collect();
    // Two more streams: over the cap, they wait (up to the wait timeout) for a turn.
    let (tx, rx) = mpsc::channel();
    let more: Vec<_> = (4..6)
        .map(|i| {
            let (http, tx) = (http.clone(), tx.clone());
            thread::spawn(move || tx.send(open(&http, &format!("/hold/{i}"), LONG)).unwrap())
        })
        .collect();
    thread::sleep(Duration::from_millis(150));
    // Six streams in flight, five connections: a short call still gets one at once.
    let t = Instant::now();
    let r = http
        .get("/gradio_api/info")
        .wait_timeout(Duration::from_secs(1))
        .call()
        .unwrap_or_else(|e| panic!("short call behind 6 streams on 5 connections: {e}"));
    let took = t.elapsed();
    assert_eq!(r.status(), 200);
    assert!(
        took < Duration::from_millis(500),
        "short call took {took:?}"
    );
    assert_eq!(holds_seen(&server).len(), 4, "{:?}", server.request_log());
    assert_eq!(waiting(&m), 2);
    drop(held);
    let later: Vec<_> = (0..2)
        .map(|_| rx.recv_timeout(LONG).unwrap().unwrap())
        .collect();
    assert_eq!(holds_seen(&server).len(), 6);
    drop(later);
    for t in more {
        t.join().unwrap();
    }
    let pool = m.stats().services[0].http.clone().unwrap();
    assert_eq!((pool.in_use, pool.waiting), (0, 0), "{pool:?}");
}

#[test]
fn a_stream_over_the_cap_waits_then_gets_its_turn_first_come_first_served() {
    let server = stream_server();
    let m = capped(&server, 5, 4);
    let http = m.http("svc").unwrap();
    let mut held: Vec<_> = (0..4)
        .map(|i| open(&http, &format!("/hold/{i}"), LONG).unwrap())
        .collect();
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for (n, name) in ["a", "b"].into_iter().enumerate() {
        let (http, tx) = (http.clone(), tx.clone());
        threads.push(thread::spawn(move || {
            let s = open(&http, &format!("/hold/{name}"), LONG).unwrap();
            tx.send((name, s)).unwrap();
        }));
        assert!(
            eventually(Duration::from_secs(2), || waiting(&m) == n + 1),
            "stream '{name}' should wait: {:?}",
            m.stats().services[0].http
        );
    }
    assert!(rx.try_recv().is_err());
    assert_eq!(holds_seen(&server).len(), 4);
    // Each stream that ends hands its turn to the oldest waiting stream.
    drop(held.remove(0));
    let (first, a) = rx.recv_timeout(LONG).unwrap();
    assert_eq!(first, "a");
    assert!(rx.try_recv().is_err(), "'b' must still wait");
    assert_eq!(waiting(&m), 1);
    drop(held.remove(0));
    let (second, b) = rx.recv_timeout(LONG).unwrap();
    assert_eq!(second, "b");
    let seen = holds_seen(&server);
    assert_eq!(&seen[4..], ["/hold/a", "/hold/b"], "{seen:?}");
    drop((a, b, held));
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn waiting_for_a_stream_turn_times_out_with_the_stream_figures_and_shutdown_wakes_it() {
    let server = stream_server();
    let m = capped(&server, 3, 2);
    let http = m.http("svc").unwrap();
    let held: Vec<_> = (0..2)
        .map(|i| open(&http, &format!("/hold/{i}"), LONG).unwrap())
        .collect();
    let t = Instant::now();
    let err = open(&http, "/hold/x", Duration::from_millis(200)).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(err.class(), ErrorClass::PoolTimeout, "{err}");
    match &err {
        Error::PoolTimeout { state, .. } => {
            assert_eq!((state.in_use, state.waiting, state.max), (2, 1, 2), "{err}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("max 2"), "{err}");
    // The short-call connection is still there.
    assert_eq!(http.get("/x").call().unwrap().status(), 200);
    // Shutdown wakes a stream waiting for its turn.
    let waiter = {
        let http = http.clone();
        thread::spawn(move || {
            let t = Instant::now();
            (open(&http, "/hold/y", LONG).map(|_| ()), t.elapsed())
        })
    };
    assert!(eventually(Duration::from_secs(2), || waiting(&m) == 1));
    m.shutdown(Duration::from_millis(50)).unwrap();
    let (result, took) = waiter.join().unwrap();
    assert_eq!(result.unwrap_err().class(), ErrorClass::ShuttingDown);
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(held);
    assert_eq!(m.stats().services[0].http.as_ref().unwrap().in_use, 0);
}

#[test]
fn a_stream_turn_is_given_back_on_every_path() {
    let server = stream_server();
    let m = capped(&server, 3, 2);
    let http = m.http("svc").unwrap();
    let quick = Duration::from_millis(300);
    // Both turns free: two streams at once, without waiting.
    let both_free = |what: &str| {
        let s: Vec<_> = (0..2)
            .map(|i| open(&http, &format!("/hold/{i}"), quick))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("after {what}: a stream turn was not given back: {e}"));
        drop(s);
    };
    both_free("the start");

    // Dropped in the middle (twice: both turns) and at its end.
    both_free("streams dropped mid-body");
    for _ in 0..2 {
        let s = http.get("/done").stream(b"").unwrap();
        assert!(s
            .lines()
            .map(|l| l.unwrap())
            .any(|l| l == "event: complete"));
    }
    both_free("streams read to the end");

    // The request fails (the server closes without answering).
    server.set_fault(Fault::CloseBeforeResponse);
    for _ in 0..2 {
        let err = http.get("/hold/f").stream(b"").unwrap_err();
        assert_eq!(err.class(), ErrorClass::Closed, "{err}");
    }
    server.set_fault(Fault::None);
    both_free("failed requests");

    // A turn taken, then no connection free before the wait timeout.
    let busy: Vec<_> = (0..3).map(|_| http.checkout().unwrap()).collect();
    for _ in 0..2 {
        let err = http
            .get("/hold/t")
            .wait_timeout(Duration::from_millis(100))
            .stream(b"")
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::PoolTimeout, "{err}");
    }
    drop(busy);
    both_free("connection wait timeouts");

    // The caller panics holding the stream.
    for _ in 0..2 {
        let http = http.clone();
        let r = thread::spawn(move || {
            let _s = open(&http, "/hold/p", LONG).unwrap();
            panic!("user code panics holding a stream");
        })
        .join();
        assert!(r.is_err());
    }
    both_free("panics");

    // A non-2xx answer is a stream too, and gives its turn back when dropped.
    let r = http.get("/missing").stream(b"").unwrap();
    assert_eq!(r.status(), 404);
    drop(r);
    both_free("a whole answer");
    let pool = m.stats().services[0].http.clone().unwrap();
    assert_eq!((pool.in_use, pool.waiting), (0, 0), "{pool:?}");
}

#[test]
fn a_cap_of_max_lets_streams_take_every_connection_and_short_calls_wait_their_turn() {
    // `max_stream_connections = max_connections` is the caller's explicit choice.
    let server = stream_server();
    let m = capped(&server, 2, 2);
    let http = m.http("svc").unwrap();
    let held: Vec<_> = (0..2)
        .map(|i| open(&http, &format!("/hold/{i}"), LONG).unwrap())
        .collect();
    let err = http
        .get("/x")
        .wait_timeout(Duration::from_millis(100))
        .call()
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::PoolTimeout);
    drop(held);
    assert_eq!(http.get("/x").call().unwrap().status(), 200);
}

#[test]
fn the_default_cap_leaves_a_fifth_of_the_connections_to_short_calls() {
    let server = stream_server();
    let m = manager(with_http_size(service("svc", &server.http_url()), 5, 0));
    let http = m.http("svc").unwrap();
    let held: Vec<_> = (0..4)
        .map(|i| open(&http, &format!("/hold/{i}"), LONG).unwrap())
        .collect();
    let err = open(&http, "/hold/4", Duration::from_millis(100)).unwrap_err();
    assert_eq!(err.class(), ErrorClass::PoolTimeout, "{err}");
    assert_eq!(http.get("/x").call().unwrap().status(), 200);
    drop(held);
}

// ---- dropping a stream -------------------------------------------------------------------

#[test]
fn dropping_a_live_stream_returns_within_the_drain_bound_and_closes_its_connection() {
    let server = stream_server();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    for (n, path) in ["/live", "/big"].into_iter().enumerate() {
        let s = open(&http, path, LONG).unwrap();
        thread::sleep(Duration::from_millis(30));
        let t = Instant::now();
        drop(s);
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(200),
            "dropping {path} took {took:?}"
        );
        // The server sees the close (its next write fails), and the connection is not reused.
        assert!(
            eventually(Duration::from_secs(3), || server.open() == 0),
            "{path}: the server still has {} connection(s) open",
            server.open()
        );
        assert_eq!(http.get("/x").call().unwrap().status(), 200);
        assert_eq!(server.accepted(), 2 * n + 2, "{path}");
        // Make the short call's connection go away too, so each round starts alike.
        http.checkout().unwrap().discard();
    }
    let pool = m.stats().services[0].http.clone().unwrap();
    assert_eq!(pool.connections_open, 0, "{pool:?}");
}

#[test]
fn a_stream_dropped_right_after_its_last_event_keeps_its_connection() {
    let server = stream_server();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    for _ in 0..5 {
        let mut s = http.get("/done").stream(b"").unwrap();
        let mut line = String::new();
        while !line.contains("complete") {
            line.clear();
            assert!(s.read_line(&mut line).unwrap() > 0);
        }
        // The terminator is still to come (5 ms later).
        drop(s);
    }
    assert_eq!(http.get("/x").call().unwrap().status(), 200);
    assert_eq!(server.accepted(), 1);
}

#[test]
fn events_reads_a_stream_as_server_sent_events_and_keeps_its_connection() {
    let server = stream_server();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    let read = |path: &str| -> Vec<backend_pool::sse::Event> {
        let mut s = http.get(path).stream(b"").unwrap();
        s.events().map(Result::unwrap).collect()
    };
    for _ in 0..3 {
        let events = read("/done");
        let types: Vec<_> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(types[..5], ["generating"; 5]);
        assert_eq!(types[5..], ["complete"]);
        assert_eq!(events[2].data, "[2] ");
        assert_eq!(events[5].data, "[\"done\"]");
    }
    // 64 events of 64 KiB, in chunks: all of them; a lower limit stops at the first.
    assert_eq!(read("/big").len(), 64);
    assert_eq!(
        server.accepted(),
        1,
        "streams read to their end keep the connection"
    );
    let mut s = http.get("/big").stream(b"").unwrap();
    let mut events = backend_pool::sse::Events::new(&mut s).max_event_bytes(16 * 1024);
    let err = events.next().unwrap().unwrap_err();
    assert!(err.to_string().contains("16384 bytes"), "{err}");
}

// ---- shutdown ------------------------------------------------------------------------------

#[test]
fn connections_returned_while_the_pool_shuts_down_are_closed() {
    // Callers return connections at the moment shutdown closes the pool: each one must be
    // closed, none left idle with its socket open.
    let server = TestServer::builder().build().unwrap();
    let rounds = std::env::var("BACKEND_POOL_SHUTDOWN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    for round in 0..rounds {
        // No maintenance tick during the round: only callers return connections.
        let m = Arc::new(
            PoolManager::new(ManagerConfig {
                maintenance_interval_ms: 60_000,
                service: vec![with_http_size(service("svc", &server.http_url()), 4, 0)],
            })
            .unwrap(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (http, stop) = (m.http("svc").unwrap(), Arc::clone(&stop));
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Err(e) = http.get("/").call() {
                            assert_eq!(e.class(), ErrorClass::ShuttingDown, "{e}");
                            return;
                        }
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(2 + round % 5));
        m.shutdown(Duration::from_secs(2)).unwrap();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        let pool = m.stats().services[0].http.clone().unwrap();
        assert_eq!(
            (pool.in_use, pool.connections_open),
            (0, 0),
            "round {round}: a connection returned during shutdown stayed open: {pool:?}"
        );
    }
    assert!(eventually(Duration::from_secs(3), || server.open() == 0));
}

#[test]
fn stream_cap_config_is_checked() {
    let mut s = ServiceConfig::new("svc", "http://127.0.0.1:1");
    s.http.as_mut().unwrap().max_stream_connections = Some(11);
    let err = s.validate().unwrap_err().to_string();
    assert!(err.contains("max_stream_connections"), "{err}");
    for (max, cap) in [(1, 1), (2, 1), (5, 4), (10, 8), (20, 16)] {
        let mut s = ServiceConfig::new("svc", "http://127.0.0.1:1");
        s.http.as_mut().unwrap().max_connections = max;
        assert_eq!(s.http.unwrap().stream_cap(), cap, "max {max}");
    }
}

#[test]
fn a_huge_wait_timeout_does_not_panic() {
    let server = stream_server();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    let r = http.get("/x").wait_timeout(Duration::MAX).call().unwrap();
    assert_eq!(r.status(), 200);
    let s = http
        .get("/done")
        .wait_timeout(Duration::MAX)
        .stream(b"")
        .unwrap();
    assert_eq!(s.status(), 200);
    drop(s);
}

/// A status error of a stream is one failure, counted once under `status`, even when
/// reading its evidence (the body's first 64 KiB) fails: the server closes mid-body, or the
/// body stalls past the request's read timeout. (A cut once counted as `closed` too.)
#[test]
fn a_stream_s_status_error_counts_once_whatever_reading_its_evidence_met() {
    let server = TestServer::builder()
        .http(|_| {
            Response::generated(500, "text/plain", 1000, |_, buf| buf.fill(b'e')).cut_after(100)
        })
        .build()
        .unwrap();
    let m = manager(service("svc", &server.http_url()));
    let err = m
        .http("svc")
        .unwrap()
        .get("/x")
        .stream(b"")
        .unwrap()
        .error_for_status()
        .unwrap_err();
    assert_eq!(err.status(), Some(500), "{err:?}");
    assert_eq!(err.body().unwrap().len(), 100);
    assert!(err.body().unwrap().is_truncated());
    support::assert_one_error(&m, ErrorClass::Status);

    // A head, some bytes, then silence.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = mpsc::channel::<()>();
    let stalling = thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut socket, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request);
        let answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 1000\r\n\r\nbusy";
        socket.write_all(answer).unwrap();
        let _ = stopped.recv_timeout(Duration::from_secs(10));
    });
    let m = manager(service("stalling", &url));
    let err = m
        .http("stalling")
        .unwrap()
        .get("/x")
        .read_timeout(Duration::from_millis(200))
        .stream(b"")
        .unwrap()
        .error_for_status()
        .unwrap_err();
    stop.send(()).unwrap();
    stalling.join().unwrap();
    assert_eq!(err.status(), Some(503), "{err:?}");
    assert_eq!(&err.body().unwrap()[..], b"busy");
    support::assert_one_error(&m, ErrorClass::Status);
}

/// A multipart form sent with a streamed answer (`stream_multipart`): the form arrives with
/// its length and boundary, the answer is read as it comes, with upload progress; the stream
/// holds one of the stream turns; a form the encoder refuses costs no connection.
#[test]
fn a_multipart_form_can_be_sent_with_a_streamed_answer() {
    let server = TestServer::builder()
        .http(|req| {
            let summary = format!(
                "{} {} {}",
                req.header("content-type").unwrap_or(""),
                req.header("content-length").unwrap_or(""),
                req.body.windows(5).any(|w| w == b"hello")
            );
            Response::sse(vec![("got".into(), summary)], Duration::ZERO)
        })
        .build()
        .unwrap();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let form = backend_pool::Form::new()
        .text("field", "hello")
        .part("data", backend_pool::Part::bytes(vec![7u8; 100_000]));
    let mut stream = http
        .post("/convert")
        .header("Content-Type", "text/plain")
        .upload_progress(move |sent, total| seen.lock().unwrap().push((sent, total)))
        .stream_multipart(form)
        .unwrap();
    let event = stream.events().next().unwrap().unwrap();
    let mut words = event.data.split(' ');
    assert!(
        words.next().unwrap().starts_with("multipart/form-data;"),
        "{}",
        event.data
    );
    let len: u64 = words.nth(1).unwrap().parse().unwrap();
    assert!(len > 100_000, "{}", event.data);
    assert_eq!(words.next(), Some("true"), "{}", event.data);
    assert_eq!(calls.lock().unwrap().last(), Some(&(len, len)));
    drop(stream);
    assert_eq!(server.accepted(), 1);
    let bad = backend_pool::Form::new().part(
        "x",
        backend_pool::Part::bytes(vec![1]).content_type("bad\nvalue"),
    );
    let err = http.post("/convert").stream_multipart(bad).unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidRequest, "{err:?}");
    assert_eq!(server.accepted(), 1);
}
