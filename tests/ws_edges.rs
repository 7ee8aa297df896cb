//! WebSocket pool edges: a send and a connect each bounded by one deadline, signals (EINTR)
//! resumed within it, leases that never hand an earlier lease's traffic to the next one,
//! partial frames. Servers here are scripts of the shared raw server (`support::raw`), which
//! counts the connections it accepts.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::{
    Error, ErrorClass, Message, Phase, PoolManager, ServiceConfig, WsGuard, WsPoolConfig,
};
use backend_pool_testkit::backends::{comfyui_with, ComfyOptions};
use serde_json::{json, Value};
use support::raw::{idle_until, RawServer};
#[cfg(unix)]
use support::signals;
use support::{eventually, manager, service};
use tungstenite::WebSocket;

/// The shared raw server (`support::raw`) running `serve` on every accepted connection's bare
/// socket, with a stop flag that is set when the server is dropped.
fn raw(serve: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static) -> RawServer {
    RawServer::start(move |peer| {
        let (stream, stop) = peer.into_parts();
        serve(stream, &stop)
    })
}

/// The server side of the WebSocket handshake, with frames up to 64 MiB.
fn accept(stream: TcpStream) -> WebSocket<TcpStream> {
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_frame_size(Some(64 << 20))
        .max_message_size(Some(64 << 20));
    let ws = tungstenite::accept_with_config(stream, Some(config)).unwrap();
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    ws
}

/// Echoes text until the client goes away or the server stops; a ping is answered after
/// `pong_delay`.
#[cfg(unix)]
fn echo(mut ws: WebSocket<TcpStream>, stop: &AtomicBool, pong_delay: Duration) {
    while !stop.load(SeqCst) {
        match ws.read() {
            Ok(tungstenite::Message::Ping(_)) => {
                thread::sleep(pong_delay);
                let _ = ws.flush();
            }
            Ok(m @ tungstenite::Message::Text(_)) => {
                if ws.send(m).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn ws_service(url: &str, f: impl FnOnce(&mut ServiceConfig, &mut WsPoolConfig)) -> ServiceConfig {
    let mut ws = WsPoolConfig {
        max_connections: 2,
        min_connections: 0,
        pong_timeout_ms: 500,
        ..WsPoolConfig::default()
    };
    let mut cfg = ServiceConfig {
        http: None,
        ..service("ws", url)
    };
    f(&mut cfg, &mut ws);
    cfg.websocket = Some(ws);
    cfg
}

fn ws_stats(m: &PoolManager) -> backend_pool::PoolStats {
    m.stats().services[0].websocket.clone().unwrap()
}

/// Runs `f` on another thread and waits at most `limit` for its result (so a test whose
/// call would block for a minute fails in seconds).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still running after {limit:?}"))
}

/// Far more than the loopback socket buffers hold.
const BIG: usize = 24 << 20;

// ---------------------------------------------------------------- sends: one deadline

#[test]
fn a_send_to_a_slow_reader_is_bounded_by_the_request_timeout() {
    // The reader takes 16 KiB every 20 ms: every write makes progress, so a per-write
    // timeout never fires and 24 MiB would take half a minute.
    let server = raw(|s, stop| {
        let mut ws = accept(s);
        let mut buf = vec![0; 16 << 10];
        while !stop.load(SeqCst) {
            if let Ok(0) = ws.get_mut().read(&mut buf) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    });
    let m = Arc::new(manager(ws_service(&server.url(), |s, _| {
        s.request_timeout_ms = 400;
    })));
    let mut ws = m.websocket("ws").unwrap();
    let started = Instant::now();
    let (err, ws) = within(Duration::from_secs(20), move || {
        let err = ws.send(Message::binary(vec![7u8; BIG])).unwrap_err();
        (err, ws)
    });
    // Unbounded, the send takes half a minute; bounded, 400 ms plus the time a debug build
    // takes to frame and mask 24 MiB on a loaded 2-core machine (seconds at worst).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::Send,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Timeout);
    drop(ws); // a partly sent frame: discarded, not returned
    let stats = ws_stats(&m);
    assert_eq!((stats.closed.broken, stats.idle), (1, 0), "{stats:?}");
    assert_eq!(stats.errors.get(ErrorClass::Timeout), 1);
}

#[test]
fn a_send_to_a_stopped_reader_times_out_as_send() {
    let server = raw(|s, stop| {
        let _ws = accept(s);
        idle_until(stop, Duration::from_secs(20));
    });
    let m = manager(ws_service(&server.url(), |s, _| {
        s.request_timeout_ms = 300;
    }));
    let mut ws = m.websocket("ws").unwrap();
    let started = Instant::now();
    let err = ws.send(Message::binary(vec![7u8; BIG])).unwrap_err();
    // 300 ms plus framing and masking 24 MiB in a debug build on a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::Send,
                ..
            }
        ),
        "{err:?}"
    );
    drop(ws);
    // The next lease gets a fresh socket.
    let _ws = m.websocket("ws").unwrap();
    assert_eq!(server.accepted(), 2);
}

// ---------------------------------------------------------------- connect: one deadline

/// Reads an HTTP request head byte by byte.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Writes `bytes` one at a time, `gap` apart, until done or stopped.
fn drip(s: &mut TcpStream, bytes: &[u8], gap: Duration, stop: &AtomicBool) {
    for b in bytes {
        if stop.load(SeqCst) || s.write_all(&[*b]).is_err() {
            return;
        }
        thread::sleep(gap);
    }
}

#[test]
fn a_handshake_answered_one_byte_at_a_time_times_out_at_connect_timeout() {
    let server = raw(|mut s, stop| {
        let head = read_head(&mut s);
        let key = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-key"))
            })
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let reply = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            tungstenite::handshake::derive_accept_key(key.as_bytes())
        );
        drip(&mut s, reply.as_bytes(), Duration::from_millis(60), stop);
    });
    let m = manager(ws_service(&server.url(), |s, _| {
        s.connect_timeout_ms = 500;
    }));
    let started = Instant::now();
    let err = m.websocket("ws").unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::Connect,
                ..
            }
        ),
        "{err:?} after {took:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(err.class(), ErrorClass::Connect);
    let stats = ws_stats(&m);
    assert_eq!((stats.in_use, stats.connections_open), (0, 0), "{stats:?}");
}

#[test]
fn a_tls_handshake_answered_one_byte_at_a_time_times_out_at_connect_timeout() {
    let server = raw(|mut s, stop| {
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = s.read(&mut [0u8; 4096]); // the ClientHello
                                          // A handshake record announcing 16 KiB, then its bytes one by one.
        let mut record = vec![0x16, 0x03, 0x03, 0x40, 0x00];
        record.extend(std::iter::repeat(0u8).take(200));
        drip(&mut s, &record, Duration::from_millis(30), stop);
    });
    let m = manager(ws_service(&server.https_url(), |s, _| {
        s.connect_timeout_ms = 500;
    }));
    let started = Instant::now();
    let err = m.websocket("ws").unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::Connect,
                ..
            }
        ),
        "{err:?} after {took:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
}

// ---------------------------------------------------------------- signals (EINTR)

#[cfg(unix)]
#[test]
fn a_read_interrupted_by_signals_resumes_within_its_deadline() {
    let server = raw(|s, stop| {
        let mut ws = accept(s);
        thread::sleep(Duration::from_millis(300));
        let _ = ws.send(tungstenite::Message::text("late"));
        echo(ws, stop, Duration::ZERO);
    });
    let m = manager(ws_service(&server.url(), |_, _| {}));
    let mut ws = m.websocket("ws").unwrap();
    let before = signals::DELIVERED.load(SeqCst);
    let interrupter =
        signals::Interrupter::start(signals::current_thread(), Duration::from_millis(2));
    let got = ws.read_timeout(Duration::from_secs(3));
    interrupter.stop();
    assert_eq!(got.unwrap().into_text().unwrap().as_str(), "late");
    assert!(signals::DELIVERED.load(SeqCst) > before + 20);
    // A deadline still holds under signals.
    let interrupter =
        signals::Interrupter::start(signals::current_thread(), Duration::from_millis(2));
    let started = Instant::now();
    let err = ws.read_timeout(Duration::from_millis(200)).unwrap_err();
    interrupter.stop();
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::Read,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(ws_stats(&m).closed.broken, 0);
}

/// A stream that reads at most 64 KiB per call, 2 ms apart: a large message keeps the
/// sender blocked in many short waits.
#[cfg(unix)]
struct Throttled(TcpStream);

#[cfg(unix)]
impl Read for Throttled {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        thread::sleep(Duration::from_millis(2));
        let n = buf.len().min(64 << 10);
        self.0.read(&mut buf[..n])
    }
}

#[cfg(unix)]
impl Write for Throttled {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(unix)]
#[test]
fn a_send_interrupted_by_signals_completes() {
    // The server reads slowly and answers with the length of what it received.
    let server = raw(|s, _| {
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_frame_size(Some(64 << 20))
            .max_message_size(Some(64 << 20));
        let Ok(mut ws) = tungstenite::accept_with_config(Throttled(s), Some(config)) else {
            return;
        };
        while let Ok(m) = ws.read() {
            if m.is_binary() {
                let _ = ws.send(tungstenite::Message::text(m.len().to_string()));
            }
        }
    });
    let m = manager(ws_service(&server.url(), |_, _| {}));
    let mut ws = m.websocket("ws").unwrap();
    let interrupter =
        signals::Interrupter::start(signals::current_thread(), Duration::from_millis(2));
    let sent = ws.send(Message::binary(vec![1u8; 16 << 20]));
    let reply = sent.and_then(|()| ws.read_timeout(Duration::from_secs(5)));
    let delivered = interrupter.stop();
    assert!(delivered > 20, "{delivered}");
    assert_eq!(
        reply.unwrap().into_text().unwrap().as_str(),
        (16 << 20).to_string()
    );
}

#[cfg(unix)]
#[test]
fn a_handshake_interrupted_by_signals_completes() {
    let server = raw(|s, stop| {
        thread::sleep(Duration::from_millis(300));
        echo(accept(s), stop, Duration::ZERO);
    });
    let m = manager(ws_service(&server.url(), |_, _| {}));
    let interrupter =
        signals::Interrupter::start(signals::current_thread(), Duration::from_millis(2));
    let ws = m.websocket("ws");
    interrupter.stop();
    let mut ws = ws.unwrap();
    ws.send_text("hello").unwrap();
    assert_eq!(ws.read().unwrap().into_text().unwrap().as_str(), "hello");
}

#[cfg(unix)]
#[test]
fn health_pings_interrupted_by_signals_do_not_fail() {
    // Pongs come 20 ms late, so the maintenance thread waits in every ping while signals
    // land on it every 2 ms.
    let server = raw(|s, stop| echo(accept(s), stop, Duration::from_millis(20)));
    let before = signals::tasks_named("backend-pool-ma");
    let m = manager(ws_service(&server.url(), |s, _| {
        s.health_interval_ms = 50;
    }));
    // The new maintenance thread (it names itself once it runs).
    let mut ours = Vec::new();
    assert!(
        eventually(Duration::from_secs(2), || {
            ours = signals::tasks_named("backend-pool-ma");
            ours.retain(|t| !before.contains(t));
            !ours.is_empty()
        }),
        "the maintenance thread was not found"
    );
    drop(m.websocket("ws").unwrap()); // one idle socket to ping
    let interrupters: Vec<_> = ours
        .iter()
        .map(|t| signals::Interrupter::start_task(*t, Duration::from_millis(2)))
        .collect();
    thread::sleep(Duration::from_millis(1500));
    let delivered: u64 = interrupters.into_iter().map(|i| i.stop()).sum();
    assert!(delivered > 100, "{delivered}");
    let stats = ws_stats(&m);
    assert_eq!(stats.closed.health, 0, "{stats:?}");
    // Still the one socket (idle, or borrowed for a ping right now).
    assert_eq!(
        (stats.connections_open, server.accepted()),
        (1, 1),
        "{stats:?}"
    );
}

// ---------------------------------------------------------------- lease hygiene

fn comfy_service(url: &str) -> ServiceConfig {
    ServiceConfig {
        websocket: Some(WsPoolConfig {
            client_id_param: Some("clientId".into()),
            max_connections: 1,
            min_connections: 0,
            ..WsPoolConfig::default()
        }),
        ..service("comfy", url)
    }
}

/// Queues a prompt for `ws`'s client id; returns its prompt id.
fn queue_prompt(m: &PoolManager, ws: &WsGuard) -> String {
    let body = json!({
        "prompt": {"1": {"class_type": "KSampler", "inputs": {}}},
        "client_id": ws.client_id().unwrap(),
    });
    let reply: Value = m
        .http("comfy")
        .unwrap()
        .post("/prompt")
        .send_json(&body)
        .unwrap()
        .json()
        .unwrap();
    reply["prompt_id"].as_str().unwrap().to_string()
}

/// Everything `ws` receives within `wait`: JSON events, and `"<binary>"` for binary frames.
fn drain(ws: &mut WsGuard, wait: Duration) -> Vec<Value> {
    let end = Instant::now() + wait;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match ws.read_timeout(left) {
            Ok(Message::Text(t)) => seen.push(serde_json::from_str(&t).unwrap()),
            Ok(_) => seen.push(json!("<binary>")),
            Err(e) if e.is_timeout() => return seen,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn an_abandoned_job_never_reaches_the_next_lease() {
    let server = comfyui_with(ComfyOptions {
        steps: 10,
        step_gap: Duration::from_millis(30),
        start_delay: Duration::from_millis(5),
    });
    let m = manager(comfy_service(&server.http_url()));
    let mut a = m.websocket("comfy").unwrap();
    let prompt = queue_prompt(&m, &a);
    // Follow the job until its first progress event, then walk away from it.
    loop {
        let event: Value = a.read_json().unwrap();
        if event["type"] == "progress" {
            break;
        }
    }
    drop(a);
    let mut b = m.websocket("comfy").unwrap();
    let seen = drain(&mut b, Duration::from_millis(600));
    let leaked: Vec<_> = seen
        .iter()
        .filter(|e| e["data"]["prompt_id"] == prompt.as_str() || *e == "<binary>")
        .collect();
    assert!(
        leaked.is_empty(),
        "the next lease received the abandoned job's traffic: {leaked:?}"
    );
    assert_eq!(server.ws_accepted(), 2);
    drop(b);
    let stats = ws_stats(&m);
    assert_eq!(stats.closed.abandoned, 1, "{stats:?}");
}

#[test]
fn a_finished_lease_returns_its_socket_and_nothing_of_its_job_follows() {
    let server = comfyui_with(ComfyOptions::default());
    let m = manager(comfy_service(&server.http_url()));
    let mut prompts = Vec::new();
    for _ in 0..3 {
        let mut ws = m.websocket("comfy").unwrap();
        let seen = drain(&mut ws, Duration::from_millis(50));
        for earlier in &prompts {
            assert!(
                !seen.iter().any(|e| e["data"]["prompt_id"] == *earlier),
                "an earlier lease's event: {seen:?}"
            );
        }
        let prompt = queue_prompt(&m, &ws);
        loop {
            let e: Value = ws.read_json().unwrap();
            if e["type"] == "executing"
                && e["data"]["node"].is_null()
                && e["data"]["prompt_id"] == prompt.as_str()
            {
                break;
            }
        }
        prompts.push(prompt);
        ws.finish();
    }
    assert_eq!(server.ws_accepted(), 1);
    assert_eq!(ws_stats(&m).closed.abandoned, 0);
}

#[test]
fn an_abandoned_socket_is_replaced_by_maintenance() {
    let server = comfyui_with(ComfyOptions::default());
    let mut cfg = comfy_service(&server.http_url());
    cfg.websocket.as_mut().unwrap().min_connections = 1;
    let m = manager(cfg);
    assert!(eventually(Duration::from_secs(2), || ws_stats(&m).idle == 1));
    let ws = m.websocket("comfy").unwrap();
    assert!(ws.client_id().is_some()); // out: a job may run for it
    drop(ws);
    // The server counts an upgrade after writing its answer, so it may count the refill's
    // socket a moment after the pool holds it.
    assert!(
        eventually(Duration::from_secs(2), || ws_stats(&m).idle == 1
            && server.ws_accepted() == 2),
        "not refilled"
    );
    thread::sleep(Duration::from_millis(100)); // and no more than one refill
    assert_eq!(server.ws_accepted(), 2);
    assert!(m
        .stats()
        .to_prometheus()
        .contains("pool=\"websocket\",cause=\"abandoned\"} 1"));
}

#[test]
fn a_lease_that_started_nothing_returns_its_socket() {
    let server = comfyui_with(ComfyOptions::default());
    let m = manager(comfy_service(&server.http_url()));
    for _ in 0..3 {
        let mut ws = m.websocket("comfy").unwrap();
        let _ = drain(&mut ws, Duration::from_millis(50)); // reads only; no id, no send
    }
    assert_eq!(server.ws_accepted(), 1);
}

/// A text frame announcing 1000 bytes (with `before` ahead of it in the same write) and
/// only 10 of them; the rest never comes.
fn half_a_frame(before: &'static [u8]) -> RawServer {
    raw(move |s, stop| {
        let mut ws = accept(s);
        let mut bytes = before.to_vec();
        bytes.extend_from_slice(&[0x81, 126, 0x03, 0xE8]);
        bytes.extend_from_slice(&[b'x'; 10]);
        let _ = ws.get_mut().write_all(&bytes);
        idle_until(stop, Duration::from_secs(20));
    })
}

#[test]
fn a_read_timeout_in_the_middle_of_a_frame_does_not_return_the_socket() {
    let server = half_a_frame(b"");
    let m = manager(ws_service(&server.url(), |_, _| {}));
    let mut ws = m.websocket("ws").unwrap();
    let err = ws.read_timeout(Duration::from_millis(200)).unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    drop(ws);
    let _next = m.websocket("ws").unwrap();
    assert_eq!(
        server.accepted(),
        2,
        "the socket went back holding half a frame"
    );
}

/// "first" and the first half of "second" in one write; the rest of "second" 100 ms later.
fn split_second_message() -> RawServer {
    raw(move |s, stop| {
        let mut ws = accept(s);
        let _ = ws.get_mut().write_all(b"\x81\x05first\x81\x06sec");
        thread::sleep(Duration::from_millis(100));
        let _ = ws.get_mut().write_all(b"ond");
        idle_until(stop, Duration::from_secs(20));
    })
}

#[test]
fn bytes_of_a_later_message_behind_a_whole_one_do_not_close_a_finished_socket() {
    // Found against the real ComfyUI stand-in: the read that returns the job's last event
    // often takes in the start of the next broadcast. That is not half of this lease's
    // message: the next lease reads it whole, so the socket is reused.
    let server = split_second_message();
    let m = manager(ws_service(&server.url(), |_, _| {}));
    let mut ws = m.websocket("ws").unwrap();
    thread::sleep(Duration::from_millis(50)); // "first" and "sec" are in the socket buffer
    let first = ws.read_timeout(Duration::from_secs(2)).unwrap();
    assert_eq!(first.into_text().unwrap().as_str(), "first");
    ws.finish();
    let mut next = m.websocket("ws").unwrap();
    let second = next.read_timeout(Duration::from_secs(2)).unwrap();
    assert_eq!(second.into_text().unwrap().as_str(), "second");
    next.finish();
    assert_eq!(server.accepted(), 1, "a finished socket was not reused");
    assert_eq!(ws_stats(&m).closed.abandoned, 0);
}

#[test]
fn half_a_frame_behind_a_whole_message_does_not_return_the_socket() {
    // "first" and half of the next frame arrive in one segment: the read that returns
    // "first" has already taken the partial frame in.
    let server = half_a_frame(b"\x81\x05first");
    let m = manager(ws_service(&server.url(), |_, _| {}));
    let mut ws = m.websocket("ws").unwrap();
    thread::sleep(Duration::from_millis(50)); // both parts are in the socket buffer
    let first = ws.read_timeout(Duration::from_secs(2)).unwrap();
    assert_eq!(first.into_text().unwrap().as_str(), "first");
    assert!(ws.read_timeout(Duration::from_millis(200)).is_err());
    ws.finish(); // even a lease said to be over cannot hand on half a frame
    let _next = m.websocket("ws").unwrap();
    assert_eq!(
        server.accepted(),
        2,
        "the socket went back holding half a frame"
    );
    assert_eq!(ws_stats(&m).closed.abandoned, 1);
}
