//! Cancellation from another thread (`CancelToken`): a call blocked in a phase returns
//! `Cancelled` soon after `cancel()`, the capacity it waited for or held is back at once, and
//! the statistics count the class `cancelled`.

mod support;

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::WsPoolConfig;
use backend_pool::{CancelToken, Error, ErrorClass, Phase, PoolManager, PoolStats, ServiceConfig};
use backend_pool_testkit::{Response, TestServer};
use support::{eventually, manager, service, with_http_size};

/// One test at a time: they count the process's file descriptors, and a cancelled connect's
/// helper thread holds one until its deadline.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Generous: the figure the issue asks for is 50 ms; tests check behaviour, not timings.
const BOUND: Duration = Duration::from_secs(1);
const THREADS: usize = 8;

fn http_server() -> TestServer {
    TestServer::builder()
        .http(|_| Response::text(200, "ok"))
        .websocket("/ws", |_| {})
        .build()
        .unwrap()
}

fn both_pools(url: &str, max: u32) -> ServiceConfig {
    ServiceConfig {
        websocket: Some(WsPoolConfig {
            max_connections: max,
            min_connections: 0,
            path: "/ws".into(),
            ..WsPoolConfig::default()
        }),
        ..with_http_size(service("svc", url), max, 0)
    }
}

/// Runs `call` on [`THREADS`] threads with one token, waits until `blocked` says they all
/// block, cancels, and returns each call's error with how long after `cancel()` it came.
fn cancel_blocked(
    blocked: impl Fn() -> bool,
    call: impl Fn(&CancelToken) -> Result<(), Error> + Send + Sync,
) -> Vec<(Error, Duration)> {
    let token = CancelToken::new();
    let started = Barrier::new(THREADS + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (token, started, call) = (&token, &started, &call);
                s.spawn(move || {
                    started.wait();
                    let err = call(token).expect_err("a blocked call must fail once cancelled");
                    (err, Instant::now())
                })
            })
            .collect();
        started.wait();
        assert!(
            eventually(Duration::from_secs(3), &blocked),
            "the calls never all blocked"
        );
        thread::sleep(Duration::from_millis(20));
        let at = Instant::now();
        token.cancel();
        handles
            .into_iter()
            .map(|h| {
                let (err, when) = h.join().unwrap();
                (err, when.saturating_duration_since(at))
            })
            .collect()
    })
}

fn assert_cancelled(results: &[(Error, Duration)], phase: Phase) -> Duration {
    let mut worst = Duration::ZERO;
    for (err, took) in results {
        assert_eq!(err.class(), ErrorClass::Cancelled, "{err:?}");
        assert_eq!(err.phase(), Some(phase), "{err}");
        assert!(err.to_string().contains("cancelled"), "{err}");
        assert!(*took < BOUND, "returned {took:?} after cancel()");
        worst = worst.max(*took);
    }
    eprintln!(
        "cancel latency ({phase:?}, {} calls): worst {worst:?}",
        results.len()
    );
    worst
}

fn http_stats(m: &PoolManager) -> PoolStats {
    m.stats().services[0].http.clone().unwrap()
}

fn ws_stats(m: &PoolManager) -> PoolStats {
    m.stats().services[0].websocket.clone().unwrap()
}

#[test]
fn requests_waiting_for_a_full_http_pool_are_cancelled() {
    let _serial = serial();
    let server = http_server();
    let m = manager(both_pools(&server.http_url(), 1));
    let http = m.http("svc").unwrap();
    let holder = http.checkout().unwrap();
    let results = cancel_blocked(
        || http_stats(&m).waiting == THREADS,
        |token| http.get("/").cancel_on(token).call().map(drop),
    );
    assert_cancelled(&results, Phase::Wait);
    let stats = http_stats(&m);
    assert_eq!((stats.waiting, stats.in_use), (0, 1), "{stats:?}");
    assert_eq!(stats.errors.get(ErrorClass::Cancelled), THREADS as u64);
    drop(holder);
    let started = Instant::now();
    assert_eq!(http.get("/").call().unwrap().status(), 200);
    assert!(started.elapsed() < BOUND);
}

#[test]
fn streams_waiting_for_their_turn_are_cancelled() {
    let _serial = serial();
    let server = http_server();
    let mut config = both_pools(&server.http_url(), 2);
    config.http.as_mut().unwrap().max_stream_connections = Some(1);
    let m = manager(config);
    let http = m.http("svc").unwrap();
    let open = http.get("/").stream(&[]).unwrap();
    let results = cancel_blocked(
        // Threads queued at the stream gate do not show in the pool's `waiting`.
        || {
            thread::sleep(Duration::from_millis(100));
            true
        },
        |token| http.get("/").cancel_on(token).stream(&[]).map(drop),
    );
    assert_cancelled(&results, Phase::Wait);
    assert_eq!(
        http_stats(&m).errors.get(ErrorClass::Cancelled),
        THREADS as u64
    );
    drop(open);
    assert!(http.get("/").stream(&[]).is_ok(), "the turn is free again");
}

#[test]
fn websocket_checkouts_waiting_for_a_full_pool_are_cancelled() {
    let _serial = serial();
    let server = http_server();
    let m = manager(both_pools(&server.http_url(), 1));
    let holder = m.websocket("svc").unwrap();
    let results = cancel_blocked(
        || ws_stats(&m).waiting == THREADS,
        |token| m.websocket_cancellable("svc", token).map(drop),
    );
    assert_cancelled(&results, Phase::Wait);
    let stats = ws_stats(&m);
    assert_eq!((stats.waiting, stats.in_use), (0, 1), "{stats:?}");
    assert_eq!(stats.errors.get(ErrorClass::Cancelled), THREADS as u64);
    drop(holder);
    let started = Instant::now();
    drop(m.websocket("svc").unwrap());
    assert!(started.elapsed() < BOUND);
    assert_eq!(server.ws_accepted(), 1, "the idle socket was reused");
}

#[test]
fn a_token_cancelled_before_the_call_fails_it_at_once_without_a_connection() {
    let _serial = serial();
    let server = http_server();
    let m = manager(both_pools(&server.http_url(), 1));
    let token = CancelToken::new();
    token.cancel();
    let err = m
        .http("svc")
        .unwrap()
        .get("/")
        .cancel_on(&token)
        .call()
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Cancelled, "{err:?}");
    let err = m.websocket_cancellable("svc", &token).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Cancelled, "{err:?}");
    assert_eq!((server.accepted(), server.requests()), (0, 0));
}

#[test]
fn websocket_reads_are_cancelled_and_their_sockets_closed() {
    let _serial = serial();
    let server = http_server();
    let m = manager(both_pools(&server.http_url(), THREADS as u32));
    let fds = backend_pool_testkit::fd_count();
    let results = cancel_blocked(
        || {
            thread::sleep(Duration::from_millis(50));
            ws_stats(&m).in_use == THREADS
        },
        |token| {
            let mut ws = m.websocket_cancellable("svc", token)?;
            ws.read().map(drop)
        },
    );
    assert_cancelled(&results, Phase::Read);
    let stats = ws_stats(&m);
    assert_eq!(stats.in_use, 0, "{stats:?}");
    assert_eq!(stats.errors.get(ErrorClass::Cancelled), THREADS as u64);
    assert_eq!(
        stats.errors.total(),
        THREADS as u64,
        "counted once each: {stats:?}"
    );
    assert!(
        eventually(Duration::from_secs(3), || server.open() == 0),
        "the server still sees {} sockets open",
        server.open()
    );
    assert!(eventually(Duration::from_secs(3), || {
        backend_pool_testkit::fd_count() <= fds
    }));
    assert_eq!(
        m.stats().services[0].health.state,
        backend_pool::HealthState::Healthy
    );
    let started = Instant::now();
    drop(m.websocket("svc").unwrap());
    assert!(started.elapsed() < BOUND);
}

#[test]
fn a_websocket_send_to_a_reader_that_stopped_is_aborted() {
    let _serial = serial();
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let stopped = std::sync::Arc::clone(&stop);
    let server = TestServer::builder()
        .websocket("/ws", move |_| {
            // The server reads nothing until told to.
            let until = Instant::now() + Duration::from_secs(5);
            while !stopped.load(Ordering::SeqCst) && Instant::now() < until {
                thread::sleep(Duration::from_millis(5));
            }
        })
        .build()
        .unwrap();
    let m = manager(both_pools(&server.http_url(), 1));
    let mut ws = m.websocket("svc").unwrap();
    let abort = ws.abort_handle();
    let big = vec![7u8; 8 << 20]; // far more than the socket buffers hold
    let (err, took) = thread::scope(|s| {
        let sender = s.spawn(move || {
            let err = ws.send_binary(&big).unwrap_err();
            drop(ws);
            (err, Instant::now())
        });
        thread::sleep(Duration::from_millis(200));
        assert!(
            !sender.is_finished(),
            "the send should block on a full socket"
        );
        let at = Instant::now();
        abort.abort();
        let (err, when) = sender.join().unwrap();
        (err, when.saturating_duration_since(at))
    });
    assert_cancelled(&[(err, took)], Phase::Send);
    stop.store(true, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(3), || server.open() == 0),
        "the server still sees the socket open"
    );
    let stats = ws_stats(&m);
    assert_eq!(
        (stats.in_use, stats.errors.get(ErrorClass::Cancelled)),
        (0, 1)
    );
    assert!(m.websocket("svc").is_ok(), "capacity is back");
}

/// A raw HTTP server for the phases after the request is sent: it reads a request head,
/// writes `prefix` (nothing, a head and part of a body, a few events) and then waits for
/// the client to close, counting the connections it saw closed.
struct RawServer {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    closed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl RawServer {
    fn start(prefix: &'static [u8]) -> RawServer {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let closed = std::sync::Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed.clone());
        thread::spawn(move || {
            for stream in listener.incoming().take(THREADS + 2) {
                let Ok(mut stream) = stream else { return };
                a.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                thread::spawn(move || {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let _ = stream.write_all(prefix);
                    // Until the client closes (EOF or reset), bounded by the read timeout.
                    let mut sink = [0u8; 1024];
                    loop {
                        match stream.read(&mut sink) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                            Err(_) => return,
                        }
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        RawServer {
            addr,
            accepted,
            closed,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The `backend_pool::Error` inside an I/O error from a stream's read.
fn pool_error(e: std::io::Error) -> Error {
    let inner = e
        .into_inner()
        .expect("a cancelled read carries the pool's error");
    *inner.downcast::<Error>().expect("a backend_pool::Error")
}

/// `THREADS` HTTP calls blocked after sending, cancelled: each returns `Cancelled` in
/// `phase`, the server sees every socket closed, capacity and fds are back.
fn http_phase_is_cancelled(
    prefix: &'static [u8],
    phase: Phase,
    call: impl Fn(&backend_pool::HttpClient, &CancelToken) -> Result<(), Error> + Send + Sync,
) {
    let server = RawServer::start(prefix);
    // Streams get 8 of 10 connections (`max_stream_connections`' default).
    let m = manager(with_http_size(
        service("svc", &server.url()),
        THREADS as u32 + 2,
        0,
    ));
    let http = m.http("svc").unwrap();
    let fds = backend_pool_testkit::fd_count();
    let results = cancel_blocked(
        || {
            thread::sleep(Duration::from_millis(50));
            server.accepted() == THREADS
        },
        |token| call(&http, token),
    );
    assert_cancelled(&results, phase);
    assert!(
        eventually(Duration::from_secs(3), || server.closed() == THREADS),
        "the server saw {} of {THREADS} sockets closed",
        server.closed()
    );
    let stats = http_stats(&m);
    assert_eq!(stats.in_use, 0, "{stats:?}");
    // Each cancelled connection is counted closed as broken, not as closed by the peer.
    assert_eq!(stats.closed.broken, THREADS as u64, "{stats:?}");
    assert_eq!(
        stats.errors.get(ErrorClass::Cancelled),
        THREADS as u64,
        "{stats:?}"
    );
    assert_eq!(
        stats.errors.total(),
        THREADS as u64,
        "counted once each: {stats:?}"
    );
    assert_eq!(
        m.stats().services[0].health.state,
        backend_pool::HealthState::Healthy
    );
    assert!(eventually(Duration::from_secs(3), || {
        backend_pool_testkit::fd_count() <= fds
    }));
    // Capacity is back: a new checkout succeeds at once.
    let started = Instant::now();
    let conns: Vec<_> = (0..THREADS).map(|_| http.checkout().unwrap()).collect();
    assert!(started.elapsed() < BOUND);
    drop(conns);
}

#[test]
fn requests_waiting_for_a_response_head_are_cancelled() {
    let _serial = serial();
    http_phase_is_cancelled(b"", Phase::Receive, |http, token| {
        http.get("/").cancel_on(token).call().map(drop)
    });
}

#[test]
fn a_body_stalled_midway_is_cancelled() {
    let _serial = serial();
    http_phase_is_cancelled(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nthe first bytes",
        Phase::Read,
        |http, token| http.get("/").cancel_on(token).call().map(drop),
    );
}

#[test]
fn an_sse_stream_waiting_for_its_next_event_is_cancelled() {
    let _serial = serial();
    http_phase_is_cancelled(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n",
        Phase::Read,
        |http, token| {
            let mut stream = http.get("/").cancel_on(token).stream(&[])?;
            let mut events = stream.events();
            assert_eq!(events.next().unwrap().unwrap().data, "1");
            match events.next() {
                Some(Err(backend_pool::sse::Error::Io(e))) => Err(pool_error(e)),
                other => panic!("expected a failed read, got {other:?}"),
            }
        },
    );
}

/// A manager whose one service is a [`backend_pool_testkit::Blackhole`] (a connect there
/// waits), with a 1.5 s connect timeout; `call` is cancelled 50 ms in. Checks that the call
/// ends as a cancelled connect well before the timeout, then returns the manager and the
/// process's descriptor count from before the call.
fn cancel_a_connect(
    call: impl FnOnce(&PoolManager, &CancelToken) -> Error,
) -> (PoolManager, usize) {
    let hole = backend_pool_testkit::Blackhole::new().unwrap();
    let mut config = both_pools(&format!("http://{}", hole.addr()), 1);
    config.connect_timeout_ms = 1_500;
    let m = manager(config);
    let fds = backend_pool_testkit::fd_count();
    let token = CancelToken::new();
    thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(50));
            token.cancel();
        });
        let started = Instant::now();
        let err = call(&m, &token);
        let took = started.elapsed();
        assert_eq!(
            (err.class(), err.phase()),
            (ErrorClass::Cancelled, Some(Phase::Connect)),
            "{err:?}"
        );
        assert!(
            took < Duration::from_secs(1),
            "took {took:?} (connect timeout 1.5 s)"
        );
    });
    (m, fds)
}

/// A WebSocket connect in progress is abandoned at once (it runs on a helper thread while the
/// caller waits for it or the cancel), and a cancelled connect is not the server's failure.
#[test]
fn a_websocket_connect_in_progress_is_abandoned_at_once() {
    let _serial = serial();
    let (m, fds) = cancel_a_connect(|m, token| m.websocket_cancellable("svc", token).unwrap_err());
    assert_eq!(ws_stats(&m).in_use, 0);
    assert_eq!(ws_stats(&m).connect_failures, 0);
    assert_eq!(m.health("svc").unwrap().consecutive_failures, 0);
    // The abandoned attempt's socket is closed by its helper at the connect deadline.
    assert!(eventually(Duration::from_secs(3), || {
        backend_pool_testkit::fd_count() <= fds
    }));
}

/// An HTTP connect in progress is abandoned at once, the same way.
#[test]
fn an_http_connect_in_progress_is_abandoned_at_once() {
    let _serial = serial();
    let (m, fds) = cancel_a_connect(|m, token| {
        let http = m.http("svc").unwrap();
        http.get("/").cancel_on(token).call().unwrap_err()
    });
    let stats = http_stats(&m);
    assert_eq!((stats.in_use, stats.connect_failures), (0, 0), "{stats:?}");
    assert_eq!(m.health("svc").unwrap().consecutive_failures, 0);
    assert!(eventually(Duration::from_secs(3), || {
        backend_pool_testkit::fd_count() <= fds
    }));
}
