//! The fault matrix: each socket-level failure a backend can produce, against each pool kind.
//! For every case: the caller gets a classified error within its deadline or a transparent
//! recovery, the pool's capacity is back, the statistics count it under the right cause, and
//! the process's open fds return to their baseline.
//! One test walks the matrix in order, so the fd counts are not disturbed by other tests.

mod support;

use std::time::{Duration, Instant};

use backend_pool::{ErrorClass, PoolManager, ServiceConfig, WsPoolConfig};
use backend_pool_testkit::{fd_count, Fault, Response, TestServer};
use support::{eventually, manager, service};

/// What a case expects.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// The call succeeds anyway.
    Recovers,
    /// The call fails with this class.
    Fails(ErrorClass),
}

fn server() -> TestServer {
    TestServer::builder()
        .http(|req| match req.path.as_str() {
            "/big" => Response::bytes(200, "application/octet-stream", vec![1; 256 * 1024]),
            _ => Response::text(200, "ok"),
        })
        .websocket("/ws", |_| {})
        .max_requests_per_connection(50)
        .build()
        .unwrap()
}

fn config(url: &str) -> ServiceConfig {
    let mut cfg = service("svc", url);
    cfg.request_timeout_ms = 300;
    cfg.read_idle_timeout_ms = 300;
    cfg.connect_timeout_ms = 300;
    cfg.unhealthy_after = 1000; // keep fail-fast out of the matrix
    let http = cfg.http.as_mut().unwrap();
    http.max_connections = 2;
    http.max_body_bytes = 64 * 1024;
    cfg.websocket = Some(WsPoolConfig {
        max_connections: 2,
        min_connections: 0,
        pong_timeout_ms: 200,
        ..WsPoolConfig::default()
    });
    cfg
}

fn http_call(m: &PoolManager, path: &str) -> Result<(), backend_pool::Error> {
    m.http("svc")?.get(path).call().map(|_| ())
}

fn http_post(m: &PoolManager) -> Result<(), backend_pool::Error> {
    m.http("svc")?.post("/prompt").send_bytes(b"{}").map(|_| ())
}

fn ws_echo(m: &PoolManager) -> Result<(), backend_pool::Error> {
    let mut ws = m.websocket("svc")?;
    ws.send_text("echo")?;
    ws.read().map(|_| ())
}

#[test]
fn every_fault_is_classified_or_recovered_and_leaks_nothing() {
    let server = server();
    let m = manager(config(&server.http_url()));
    // Warm both pools so lazily created process state is in the fd baseline.
    http_call(&m, "/").unwrap();
    ws_echo(&m).unwrap();
    let baseline = fd_count();

    type Call = fn(&PoolManager) -> Result<(), backend_pool::Error>;
    let cases: Vec<(&str, Fault, Call, Outcome)> = vec![
        (
            "refuse / GET",
            Fault::Refuse,
            |m| http_call(m, "/"),
            Outcome::Fails(ErrorClass::Closed),
        ),
        (
            "close before response / POST",
            Fault::CloseBeforeResponse,
            http_post,
            Outcome::Fails(ErrorClass::Closed),
        ),
        (
            "close before response / GET",
            Fault::CloseBeforeResponse,
            |m| http_call(m, "/"),
            Outcome::Fails(ErrorClass::Closed),
        ),
        (
            "stall / GET",
            Fault::Stall,
            |m| http_call(m, "/"),
            Outcome::Fails(ErrorClass::Timeout),
        ),
        (
            "slow bytes / GET",
            Fault::SlowBytes(Duration::from_millis(400)),
            |m| http_call(m, "/"),
            Outcome::Fails(ErrorClass::Timeout),
        ),
        (
            "slow but in time / GET",
            Fault::SlowBytes(Duration::from_millis(1)),
            |m| http_call(m, "/"),
            Outcome::Recovers,
        ),
        (
            "malformed / GET",
            Fault::MalformedResponse,
            |m| http_call(m, "/"),
            Outcome::Fails(ErrorClass::Protocol),
        ),
        (
            "body over limit / GET",
            Fault::None,
            |m| http_call(m, "/big"),
            Outcome::Fails(ErrorClass::TooLarge),
        ),
        (
            "close after N requests / GET x120",
            Fault::None,
            |m| (0..120).try_for_each(|_| http_call(m, "/")),
            Outcome::Recovers,
        ),
        (
            "refuse / WebSocket",
            Fault::Refuse,
            ws_echo,
            Outcome::Fails(ErrorClass::Connect),
        ),
        (
            "stall handshake / WebSocket",
            Fault::Stall,
            ws_echo,
            Outcome::Fails(ErrorClass::Connect),
        ),
        (
            "ignore pings / WebSocket echo",
            Fault::WsIgnorePings,
            ws_echo,
            Outcome::Fails(ErrorClass::Timeout),
        ),
    ];

    for (name, fault, call, expected) in cases {
        eprintln!("case: {name}");
        // New connections for each case: the fault applies from the connection's start.
        server.kill_connections();
        let settled = eventually(Duration::from_secs(5), || server.open() == 0);
        assert!(
            settled,
            "{name}: {} server connections still open",
            server.open()
        );
        m.run_maintenance();
        let before = m.stats();
        server.set_fault(fault);
        let started = Instant::now();
        let result = call(&m);
        let took = started.elapsed();
        server.set_fault(Fault::None);
        match (expected, &result) {
            (Outcome::Recovers, Ok(())) => {}
            (Outcome::Fails(class), Err(e)) => {
                assert_eq!(e.class(), class, "{name}: {e:?}");
                // Within its deadline: the phase timeout (300 ms) plus one retry, not the
                // 5 s wait timeout.
                assert!(took < Duration::from_secs(2), "{name}: took {took:?}");
                let after = m.stats();
                let count = |s: &backend_pool::ManagerStats| {
                    let svc = &s.services[0];
                    svc.http.as_ref().unwrap().errors.get(class)
                        + svc.websocket.as_ref().unwrap().errors.get(class)
                };
                assert!(
                    count(&after) > count(&before),
                    "{name}: not counted as {class:?}"
                );
            }
            (expected, got) => panic!("{name}: expected {expected:?}, got {got:?}"),
        }
        // Capacity is back: both pools can hand out their full size again.
        let stats = m.stats();
        let svc = &stats.services[0];
        assert_eq!(
            svc.http.as_ref().unwrap().in_use,
            0,
            "{name}: HTTP slot lost"
        );
        assert_eq!(
            svc.websocket.as_ref().unwrap().in_use,
            0,
            "{name}: WebSocket slot lost"
        );
        let held: Vec<_> = (0..2)
            .map(|_| m.http("svc").unwrap().checkout().unwrap())
            .collect();
        drop(held);
        http_call(&m, "/").unwrap_or_else(|e| panic!("{name}: no recovery: {e:?}"));
        ws_echo(&m).unwrap_or_else(|e| panic!("{name}: no WebSocket recovery: {e:?}"));
    }

    // Every connection the cases opened is closed or accounted for in the pool.
    server.kill_connections();
    assert!(eventually(Duration::from_secs(3), || {
        m.run_maintenance();
        server.open() == 0 && fd_count() <= baseline
    }));
    let stats = m.stats();
    for pool in [&stats.services[0].http, &stats.services[0].websocket] {
        let p = pool.as_ref().unwrap();
        let c = &p.closed;
        let closed = c.idle + c.lifetime + c.broken + c.health + c.shutdown + c.abandoned + c.other;
        assert_eq!(p.connections_created, closed + p.connections_open, "{p:?}");
    }
    drop(m);
    assert!(eventually(Duration::from_secs(2), || fd_count() <= baseline));
}
