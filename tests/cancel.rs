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
