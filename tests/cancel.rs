//! Cancellation from another thread (`CancelToken`, `WsGuard::abort_handle`) and shutdown
//! past its deadline: a call blocked in any phase returns soon after `cancel()` (or the
//! shutdown deadline), and leaves nothing behind. Each row of the cancellation matrix
//! (RELIABILITY.md) is one test here, 8 calls per row, checked by [`check_row`]: each call
//! returns `Cancelled` in its phase, the server sees its socket closed, the statistics agree
//! (the class `cancelled` counts exactly the cancelled calls; connections open and
//! `closed.broken` match what the server saw), health is untouched, the process's fds and
//! threads are back to their baseline, and capacity is back (a new call succeeds at once).

mod support;

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::{
    CancelToken, Error, ErrorClass, HttpClient, ManagerConfig, Phase, PoolKind, PoolManager,
    PoolStats, ServiceConfig, WsPoolConfig,
};
use backend_pool_testkit::{fd_count, thread_names, Blackhole, Response, TestServer};
use support::stall::StallServer;
use support::{eventually, manager, service, with_http_size};

/// One test at a time: they count the process's file descriptors and threads.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Generous: the figure the issue asks for is 50 ms; tests check behaviour, not timings.
const BOUND: Duration = Duration::from_secs(1);
/// The figure: how soon a cancelled connect's threads and fds are gone.
const FIGURE: Duration = Duration::from_millis(50);
const THREADS: usize = 8;

/// The process's open fds and threads ([`threads`]), to come back to.
#[derive(Clone, Copy, Debug)]
struct Baseline {
    fds: usize,
    threads: usize,
}

impl Baseline {
    /// Once the process is steady (two readings 10 ms apart agree, within a second): a test
    /// server or a manager just started may still be starting a thread.
    fn now() -> Baseline {
        let mut last = Baseline::read();
        for _ in 0..100 {
            thread::sleep(Duration::from_millis(10));
            let next = Baseline::read();
            if (next.fds, next.threads) == (last.fds, last.threads) {
                break;
            }
            last = next;
        }
        last
    }

    fn read() -> Baseline {
        Baseline {
            fds: fd_count(),
            threads: threads(),
        }
    }

    /// How long until the process is back to (or below) this baseline; panics, naming
    /// what is left, if it is not within `limit`.
    fn back_within(self, limit: Duration) -> Duration {
        let started = Instant::now();
        let back = || fd_count() <= self.fds && threads() <= self.threads;
        assert!(
            eventually(limit, back),
            "not back to the baseline {self:?} within {limit:?}: {:?}, threads {:?}",
            Baseline::read(),
            thread_names()
        );
        started.elapsed()
    }
}

/// The process's threads, less libtest's threads for the other tests: those queued behind
/// [`serial`] come and go at libtest's pace. libtest names a test's thread after the test
/// (every name here has an `_`); the crate's threads and the test servers' have none, and on
/// Linux a thread spawned unnamed carries its creator's name, so the current test's count
/// (on Windows its name is empty: counted too). (Linux keeps 15 bytes of a name: the tests'
/// names differ within them.)
fn threads() -> usize {
    let own = own_name();
    thread_names()
        .iter()
        .filter(|n| !n.contains('_') || **n == own)
        .count()
}

/// The current thread's name as [`thread_names`] reports it.
fn own_name() -> String {
    if cfg!(windows) {
        thread::current().name().unwrap_or_default().to_string()
    } else {
        let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
        comm.trim_end().to_string()
    }
}

/// Whether every other thread of the current test (those it spawned unnamed carry its name,
/// see [`threads`]) sleeps: its calls are blocked in the kernel, not still working their way
/// there (a debug build masks an 8 MiB WebSocket message for milliseconds before it sends).
#[cfg(target_os = "linux")]
fn others_asleep() -> bool {
    let own = own_name();
    let me = std::fs::read_link("/proc/thread-self").unwrap_or_default();
    let me = me.file_name().unwrap_or_default();
    let tasks = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten();
    tasks.filter(|t| t.file_name() != me).all(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // "tid (name) S ...": the state follows the name's closing parenthesis.
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        comm.trim_end() != own || state != Some(Some('R'))
    })
}

/// Elsewhere no thread states are read: a pause long enough for the other threads to reach
/// their blocking calls.
#[cfg(not(target_os = "linux"))]
fn others_asleep() -> bool {
    thread::sleep(Duration::from_millis(100));
    true
}

fn http_server() -> TestServer {
    TestServer::builder()
        .http(|_| Response::text(200, "ok"))
        .websocket("/ws", |_| {})
        .build()
        .unwrap()
}

fn ws_pool(max: u32, min: u32) -> WsPoolConfig {
    WsPoolConfig {
        max_connections: max,
        min_connections: min,
        path: "/ws".into(),
        ..WsPoolConfig::default()
    }
}

fn both_pools(url: &str, max: u32) -> ServiceConfig {
    ServiceConfig {
        websocket: Some(ws_pool(max, 0)),
        ..with_http_size(service("svc", url), max, 0)
    }
}

fn ws_only(name: &str, url: &str, max: u32, min: u32) -> ServiceConfig {
    ServiceConfig {
        http: None,
        websocket: Some(ws_pool(max, min)),
        ..service(name, url)
    }
}

fn manager_of(services: Vec<ServiceConfig>) -> PoolManager {
    PoolManager::new(ManagerConfig {
        maintenance_interval_ms: 50,
        service: services,
    })
    .expect("valid config")
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
            eventually(Duration::from_secs(3), || blocked() && others_asleep()),
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
    worst
}

fn http_stats(m: &PoolManager) -> PoolStats {
    m.stats().services[0].http.clone().unwrap()
}

fn ws_stats(m: &PoolManager) -> PoolStats {
    m.stats().services[0].websocket.clone().unwrap()
}

/// What one row of the matrix leaves behind once its calls are cancelled.
struct Row {
    kind: PoolKind,
    phase: Phase,
    /// Connections the test holds checked out throughout (the pool is full).
    held: usize,
    /// Connections of the pool still open (and open at the server) afterwards: a holder's.
    open: u64,
    /// Connections the cancel closed (each counted `closed.broken`, each seen closed by the
    /// server).
    broken: u64,
}

/// The checks every row of the matrix shares (see the module docs). `server_open` is what
/// the server sees open; `capacity` makes a new call, which must succeed at once. Prints
/// the measured figures.
fn check_row(
    m: &PoolManager,
    row: Row,
    results: &[(Error, Duration)],
    baseline: Baseline,
    server_open: impl Fn() -> usize,
    capacity: impl FnOnce(),
) {
    let worst = assert_cancelled(results, row.phase);
    let calls = results.len() as u64;
    assert!(
        eventually(Duration::from_secs(3), || server_open() as u64 == row.open),
        "the server sees {} connections open, the pool kept {}",
        server_open(),
        row.open
    );
    let stats = match row.kind {
        PoolKind::Http => http_stats(m),
        _ => ws_stats(m),
    };
    assert_eq!((stats.in_use, stats.waiting), (row.held, 0), "{stats:?}");
    assert_eq!(stats.errors.get(ErrorClass::Cancelled), calls, "{stats:?}");
    assert_eq!(stats.errors.total(), calls, "counted once each: {stats:?}");
    assert_eq!(stats.connections_open, row.open, "{stats:?}");
    assert_eq!(stats.closed.broken, row.broken, "{stats:?}");
    assert_eq!(stats.connect_failures, 0, "{stats:?}");
    assert_eq!(m.health("svc").unwrap().consecutive_failures, 0);
    let settled = baseline.back_within(BOUND);
    let started = Instant::now();
    capacity();
    let again = started.elapsed();
    assert!(again < BOUND, "a new call took {again:?}");
    eprintln!(
        "{:?} {:?}, {calls} calls: the worst returned {worst:?} after cancel(); fds and \
         threads back {settled:?} later; a new call took {again:?}",
        row.kind, row.phase
    );
}

#[test]
fn http_requests_waiting_for_a_full_pool_are_cancelled() {
    let _serial = serial();
    let server = http_server();
    let m = manager(both_pools(&server.http_url(), 1));
    let http = m.http("svc").unwrap();
    let holder = http.checkout().unwrap();
    let baseline = Baseline::now();
    let results = cancel_blocked(
        || http_stats(&m).waiting == THREADS,
        |token| http.get("/").cancel_on(token).call().map(drop),
    );
    let row = Row {
        kind: PoolKind::Http,
        phase: Phase::Wait,
        held: 1,
        open: 0, // the holder has not connected
        broken: 0,
    };
    check_row(
        &m,
        row,
        &results,
        baseline,
        || server.open(),
        || {
            drop(holder);
            assert_eq!(http.get("/").call().unwrap().status(), 200);
        },
    );
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
    let baseline = Baseline::now();
    let results = cancel_blocked(
        || http_stats(&m).waiting == THREADS,
        |token| http.get("/").cancel_on(token).stream(&[]).map(drop),
    );
    let row = Row {
        kind: PoolKind::Http,
        phase: Phase::Wait,
        held: 1,
        open: 1,
        broken: 0,
    };
    check_row(
        &m,
        row,
        &results,
        baseline,
        || server.open(),
        || {
            drop(open);
            assert!(http.get("/").stream(&[]).is_ok(), "the turn is free again");
        },
    );
}

#[test]
fn websocket_checkouts_waiting_for_a_full_pool_are_cancelled() {
    let _serial = serial();
    let server = http_server();
    let m = manager(both_pools(&server.http_url(), 1));
    let holder = m.websocket("svc").unwrap();
    let baseline = Baseline::now();
    let results = cancel_blocked(
        || ws_stats(&m).waiting == THREADS,
        |token| m.websocket_cancellable("svc", token).map(drop),
    );
    let row = Row {
        kind: PoolKind::WebSocket,
        phase: Phase::Wait,
        held: 1,
        open: 1,
        broken: 0,
    };
    check_row(
        &m,
        row,
        &results,
        baseline,
        || server.open(),
        || {
            drop(holder);
            drop(m.websocket("svc").unwrap());
        },
    );
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

/// Where a connect stalls.
enum Stall {
    /// A listener that never accepts (a [`Blackhole`]): the TCP connect waits.
    Accept,
    /// A server that accepts and never answers (a [`StallServer::silent`]): the TLS handshake
    /// (`https`) or the WebSocket upgrade (`http`) waits.
    Answer { https: bool },
}

/// [`THREADS`] calls stalled in their connect (see [`Stall`]) with a 5 s connect timeout,
/// cancelled: the cancel ends each connect or handshake itself (no helper thread lives on),
/// so fds and threads are back within the 50 ms; a TCP connection made was closed
/// (`closed.broken`, seen closed by the server), none is counted against the server; the
/// pool's permits are back (as many new calls start connecting at once, and are cancelled
/// too).
fn connects_are_cancelled(
    kind: PoolKind,
    stall: Stall,
    call: impl Fn(&PoolManager, &CancelToken) -> Result<(), Error> + Send + Sync,
) {
    let hole = Blackhole::new().unwrap();
    let silent = StallServer::silent();
    let (url, made) = match stall {
        Stall::Accept => (format!("http://{}", hole.addr()), 0),
        Stall::Answer { https: false } => (silent.url(), THREADS),
        Stall::Answer { https: true } => (silent.https_url(), THREADS),
    };
    let mut config = both_pools(&url, THREADS as u32);
    config.connect_timeout_ms = 5_000;
    let m = manager(config);
    let stats = |m: &PoolManager| match kind {
        PoolKind::Http => http_stats(m),
        _ => ws_stats(m),
    };
    let connecting = || {
        thread::sleep(Duration::from_millis(30));
        stats(&m).in_use == THREADS && silent.open() == made
    };
    let baseline = Baseline::now();
    let results = cancel_blocked(connecting, |token| call(&m, token));
    let settled = baseline.back_within(FIGURE);
    eprintln!("{kind:?} connects: fds and threads back {settled:?} after the calls returned");
    let row = Row {
        kind,
        phase: Phase::Connect,
        held: 0,
        open: 0,
        broken: made as u64,
    };
    check_row(
        &m,
        row,
        &results,
        baseline,
        || silent.open(),
        || {
            let again = cancel_blocked(connecting, |token| call(&m, token));
            assert_cancelled(&again, Phase::Connect);
        },
    );
    let stats = stats(&m);
    assert_eq!(stats.connections_created, 2 * made as u64, "{stats:?}");
    assert_eq!(stats.connect_failures, 0, "{stats:?}");
}

fn http_call(m: &PoolManager, token: &CancelToken) -> Result<(), Error> {
    let http = m.http("svc").unwrap();
    http.get("/").cancel_on(token).call().map(drop)
}

fn websocket_call(m: &PoolManager, token: &CancelToken) -> Result<(), Error> {
    m.websocket_cancellable("svc", token).map(drop)
}

#[test]
fn http_connects_in_progress_are_cancelled_and_leave_no_thread() {
    let _serial = serial();
    connects_are_cancelled(PoolKind::Http, Stall::Accept, http_call);
}

#[test]
fn websocket_connects_in_progress_are_cancelled_and_leave_no_thread() {
    let _serial = serial();
    connects_are_cancelled(PoolKind::WebSocket, Stall::Accept, websocket_call);
}

#[test]
fn https_tls_handshakes_in_progress_are_cancelled() {
    let _serial = serial();
    connects_are_cancelled(PoolKind::Http, Stall::Answer { https: true }, http_call);
}

#[test]
fn wss_tls_handshakes_in_progress_are_cancelled() {
    let _serial = serial();
    connects_are_cancelled(
        PoolKind::WebSocket,
        Stall::Answer { https: true },
        websocket_call,
    );
}

#[test]
fn websocket_upgrades_in_progress_are_cancelled() {
    let _serial = serial();
    connects_are_cancelled(
        PoolKind::WebSocket,
        Stall::Answer { https: false },
        websocket_call,
    );
}

/// The `backend_pool::Error` inside an I/O error from a stream's read.
fn pool_error(e: std::io::Error) -> Error {
    let inner = e
        .into_inner()
        .expect("a cancelled read carries the pool's error");
    *inner.downcast::<Error>().expect("a backend_pool::Error")
}

/// [`THREADS`] HTTP calls blocked after sending (the server answers `prefix` and stalls),
/// cancelled: one row of the matrix.
fn http_phase_is_cancelled(
    prefix: &'static [u8],
    phase: Phase,
    call: impl Fn(&HttpClient, &CancelToken) -> Result<(), Error> + Send + Sync,
) {
    let server = StallServer::answering(prefix);
    // Streams get 8 of 10 connections (`max_stream_connections`' default).
    let m = manager(with_http_size(
        service("svc", &server.url()),
        THREADS as u32 + 2,
        0,
    ));
    let http = m.http("svc").unwrap();
    let baseline = Baseline::now();
    let results = cancel_blocked(
        || {
            thread::sleep(Duration::from_millis(50));
            server.accepted() == THREADS
        },
        |token| call(&http, token),
    );
    let row = Row {
        kind: PoolKind::Http,
        phase,
        held: 0,
        open: 0,
        broken: THREADS as u64,
    };
    check_row(
        &m,
        row,
        &results,
        baseline,
        || server.open(),
        || {
            let conns: Vec<_> = (0..THREADS).map(|_| http.checkout().unwrap()).collect();
            drop(conns);
        },
    );
    assert_eq!(server.closed(), THREADS);
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

#[test]
fn websocket_reads_are_cancelled_and_their_sockets_closed() {
    let _serial = serial();
    let server = http_server();
    let m = manager(both_pools(&server.http_url(), THREADS as u32));
    let baseline = Baseline::now();
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
    let row = Row {
        kind: PoolKind::WebSocket,
        phase: Phase::Read,
        held: 0,
        open: 0,
        broken: THREADS as u64,
    };
    check_row(
        &m,
        row,
        &results,
        baseline,
        || server.open(),
        || {
            drop(m.websocket("svc").unwrap());
        },
    );
}

/// A WebSocket server on `/ws` that reads nothing until `stop` is set (at most 5 s).
fn stopped_reader(stop: &std::sync::Arc<std::sync::atomic::AtomicBool>) -> TestServer {
    use std::sync::atomic::Ordering;
    let stopped = std::sync::Arc::clone(stop);
    TestServer::builder()
        .websocket("/ws", move |_| {
            let until = Instant::now() + Duration::from_secs(5);
            while !stopped.load(Ordering::SeqCst) && Instant::now() < until {
                thread::sleep(Duration::from_millis(5));
            }
        })
        .build()
        .unwrap()
}

/// Far more than the socket buffers of a connection whose reader stopped hold.
const BIG: usize = 8 << 20;

#[test]
fn websocket_sends_to_a_reader_that_stopped_are_cancelled() {
    let _serial = serial();
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let server = stopped_reader(&stop);
    let m = manager(both_pools(&server.http_url(), THREADS as u32));
    let big = vec![7u8; BIG];
    let baseline = Baseline::now();
    let results = cancel_blocked(
        || {
            thread::sleep(Duration::from_millis(200)); // every send has filled its socket
            ws_stats(&m).in_use == THREADS
        },
        |token| {
            let mut ws = m.websocket_cancellable("svc", token)?;
            ws.send_binary(&big)
        },
    );
    stop.store(true, Ordering::SeqCst);
    let row = Row {
        kind: PoolKind::WebSocket,
        phase: Phase::Send,
        held: 0,
        open: 0,
        broken: THREADS as u64,
    };
    check_row(
        &m,
        row,
        &results,
        baseline,
        || server.open(),
        || {
            drop(m.websocket("svc").unwrap());
        },
    );
}

/// `WsGuard::abort_handle` ends a blocked send as a token does (one guard).
#[test]
fn an_abort_handle_ends_a_send_to_a_reader_that_stopped() {
    let _serial = serial();
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let server = stopped_reader(&stop);
    let m = manager(both_pools(&server.http_url(), 1));
    let baseline = Baseline::now();
    let mut ws = m.websocket("svc").unwrap();
    let abort = ws.abort_handle();
    let big = vec![7u8; BIG];
    let result = thread::scope(|s| {
        let sender = s.spawn(move || {
            let err = ws.send_binary(&big).unwrap_err();
            drop(ws);
            (err, Instant::now())
        });
        thread::sleep(Duration::from_millis(200));
        assert!(eventually(Duration::from_secs(3), others_asleep));
        assert!(
            !sender.is_finished(),
            "the send should block on a full socket"
        );
        let at = Instant::now();
        abort.abort();
        let (err, when) = sender.join().unwrap();
        (err, when.saturating_duration_since(at))
    });
    stop.store(true, Ordering::SeqCst);
    let row = Row {
        kind: PoolKind::WebSocket,
        phase: Phase::Send,
        held: 0,
        open: 0,
        broken: 1,
    };
    check_row(
        &m,
        row,
        &[result],
        baseline,
        || server.open(),
        || {
            drop(m.websocket("svc").unwrap());
        },
    );
}

/// Joins `calls` (each returns its error and when), checks each is `ShuttingDown`, and
/// returns the latest return, counted from `started`.
fn all_shut_down(
    calls: Vec<thread::ScopedJoinHandle<'_, (Error, Instant)>>,
    started: Instant,
) -> Duration {
    let mut latest = Duration::ZERO;
    for call in calls {
        let (err, when) = call.join().unwrap();
        assert_eq!(err.class(), ErrorClass::ShuttingDown, "{err:?}");
        latest = latest.max(when.saturating_duration_since(started));
    }
    latest
}

/// The figures for `shutdown(100 ms)`: it returns within 150 ms, and every call it
/// interrupted has returned within 200 ms of its start.
fn assert_shutdown_figures(what: &str, took: Duration, latest: Duration) {
    eprintln!(
        "shutdown(100 ms), {what}: returned after {took:?}; the last call {latest:?} after \
         it began"
    );
    assert!(took <= Duration::from_millis(150), "shutdown took {took:?}");
    assert!(
        latest <= Duration::from_millis(200),
        "a call returned {latest:?} after the shutdown began"
    );
}

/// `shutdown(100 ms)` with 8 calls blocked on slow servers and no tokens (3 HTTP requests
/// waiting for a head, 3 mid-body, 2 WebSocket reads): at the deadline it interrupts them,
/// returns within 150 ms, every call returns `ShuttingDown` within 200 ms of its start, the
/// servers see every socket closed, and fds and threads are back to the baseline.
#[test]
fn shutdown_interrupts_calls_still_blocked_at_its_deadline() {
    let _serial = serial();
    let head = StallServer::answering(b"");
    let body = StallServer::answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nsome");
    let ws_server = http_server();
    let baseline = Baseline::now();
    let m = manager_of(vec![
        with_http_size(service("head", &head.url()), 3, 0),
        with_http_size(service("body", &body.url()), 3, 0),
        ws_only("ws", &ws_server.http_url(), 2, 0),
    ]);
    thread::scope(|s| {
        let m = &m;
        let mut calls = Vec::new();
        for (service, n) in [("head", 3), ("body", 3)] {
            for _ in 0..n {
                calls.push(s.spawn(move || {
                    let err = m.http(service).unwrap().get("/").call().unwrap_err();
                    (err, Instant::now())
                }));
            }
        }
        for _ in 0..2 {
            calls.push(s.spawn(move || {
                let mut ws = m.websocket("ws").unwrap();
                (ws.read().unwrap_err(), Instant::now())
            }));
        }
        assert!(eventually(Duration::from_secs(3), || {
            head.accepted() == 3 && body.accepted() == 3 && ws_server.ws_accepted() == 2
        }));
        thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        let report = m.shutdown(Duration::from_millis(100)).unwrap();
        let took = started.elapsed();
        assert!(report.still_in_use.is_empty(), "{report:?}");
        assert!(report.maintenance_joined, "{report:?}");
        assert_shutdown_figures("reads", took, all_shut_down(calls, started));
    });
    assert!(
        eventually(Duration::from_secs(3), || head.closed() == 3
            && body.closed() == 3
            && ws_server.open() == 0),
        "the servers still see sockets open: {} + {} + {}",
        head.open(),
        body.open(),
        ws_server.open()
    );
    drop(m);
    baseline.back_within(BOUND);
}

/// `shutdown(100 ms)` while calls connect to a listener that never accepts (HTTP and
/// WebSocket), wait in a TLS handshake (https, wss) or a WebSocket upgrade the server never
/// answers, and while maintenance is stuck in a refill's connect and a TCP health probe to
/// that listener: shutdown abandons every one of them, so it returns within 150 ms with its
/// maintenance joined, every call returns `ShuttingDown` within 200 ms of its start, the
/// server sees every socket closed, and fds and threads are back to the baseline.
#[test]
fn shutdown_abandons_connects_and_handshakes_in_progress() {
    let _serial = serial();
    let hole = Blackhole::new().unwrap();
    let silent = StallServer::silent();
    let bh = format!("http://{}", hole.addr());
    let slow = |mut s: ServiceConfig| {
        s.connect_timeout_ms = 5_000;
        s.health_timeout_ms = 5_000;
        s
    };
    let mut connect = slow(both_pools(&bh, 2));
    connect.name = "connect".into();
    let mut tls = slow(both_pools(&silent.https_url(), 2));
    tls.name = "tls".into();
    // Unhealthy after one failed connect, and without a health path: maintenance then
    // probes it with a TCP connect (to the listener that never accepts).
    let mut probe = slow(with_http_size(service("probe", &bh), 1, 0));
    probe.connect_timeout_ms = 100;
    probe.unhealthy_after = 1;
    probe.health_interval_ms = 50;
    let baseline = Baseline::now();
    let m = manager_of(vec![
        connect,
        tls,
        slow(ws_only("upgrade", &silent.url(), 1, 0)),
        slow(ws_only("refill", &bh, 1, 1)),
        probe,
    ]);
    let err = m.http("probe").unwrap().get("/").call().unwrap_err();
    assert_eq!(err.class(), ErrorClass::Connect, "{err:?}");
    thread::scope(|s| {
        let m = &m;
        let mut calls = Vec::new();
        for service in ["connect", "connect", "tls", "tls"] {
            calls.push(s.spawn(move || {
                let err = m.http(service).unwrap().get("/").call().unwrap_err();
                (err, Instant::now())
            }));
        }
        for service in ["connect", "connect", "tls", "upgrade"] {
            calls.push(s.spawn(move || (m.websocket(service).unwrap_err(), Instant::now())));
        }
        let in_use = |i: usize| {
            let stats = m.stats();
            let svc = &stats.services[i];
            svc.http.as_ref().unwrap().in_use + svc.websocket.as_ref().unwrap().in_use
        };
        assert!(eventually(Duration::from_secs(3), || {
            silent.accepted() == 4 && in_use(0) == 4 && in_use(1) == 3
        }));
        // The refill and the probe are connecting by now.
        thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let report = m.shutdown(Duration::from_millis(100)).unwrap();
        let took = started.elapsed();
        assert!(report.still_in_use.is_empty(), "{report:?}");
        assert!(report.maintenance_joined, "{report:?}");
        assert_shutdown_figures("connects", took, all_shut_down(calls, started));
    });
    assert!(
        eventually(Duration::from_secs(3), || silent.open() == 0),
        "the server still sees {} of {} sockets open",
        silent.open(),
        silent.accepted()
    );
    drop(m);
    baseline.back_within(BOUND);
}
