//! Secrets never reach the examples' logger, even with `RUST_LOG=trace` and directives that
//! name the transport crates' modules: ureq-proto hex-dumps every byte it sends at TRACE (the
//! `Authorization` header in 16-byte rows) and tungstenite prints the whole handshake request
//! at TRACE. The logger the examples install (`examples/support/logging.rs`) caps those
//! targets at DEBUG whatever the filter says.
//!
//! The process has one logger: one test installs it.

#[path = "../examples/support/logging.rs"]
mod logging;
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use backend_pool::{Secret, ServiceConfig, WsPoolConfig};
use backend_pool_testkit::{Response, TestServer};
use support::{manager, service};

const TOKEN: &str = "sk-trace-7f3a9c21e4b0d865";
const HEADER_SECRET: &str = "hdr-trace-52e8b1d0c7a4";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The ASCII columns of ureq-proto's hex-dump rows (`4175 7468 … Authorization:.B`), joined:
/// what a reader of the log could rebuild from rows that each hold 16 bytes of the request.
fn rebuilt_from_hex_rows(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let Some(idx) = line.find("ureq_proto") else {
            continue;
        };
        let rest = line[idx..].split_once(' ').map_or("", |x| x.1).trim_start();
        let mut cols = rest.splitn(9, ' ');
        let hex: Vec<&str> = cols.by_ref().take(8).collect();
        if hex.len() == 8
            && hex
                .iter()
                .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        {
            // Non-printable bytes are dots: `Bearer sk-…` reads `Bearer.sk-…`.
            out.push_str(cols.next().unwrap_or("").trim_start());
        }
    }
    out
}

#[test]
fn trace_logging_never_prints_a_bearer_token_or_a_secret_header() {
    let buffer = Buffer::default();
    let mut builder = env_logger::Builder::new();
    // What a user chasing a bug would type, module paths of the dumps included.
    builder
        .parse_filters("trace,ureq_proto::util=trace,tungstenite::handshake::client=trace")
        .target(env_logger::Target::Pipe(Box::new(buffer.clone())))
        .write_style(env_logger::WriteStyle::Never);
    logging::install(builder);

    let server = TestServer::builder()
        .http(|req| {
            if req.header("authorization") == Some(&format!("Bearer {TOKEN}")) {
                Response::text(200, "ok")
            } else {
                Response::text(401, "no")
            }
        })
        .websocket("/ws", |_| {})
        .build()
        .unwrap();
    let mut cfg = ServiceConfig {
        websocket: Some(WsPoolConfig {
            min_connections: 0,
            ..WsPoolConfig::default()
        }),
        ..service("llm", &server.http_url())
    };
    cfg.bearer_token = Some(Secret::new(TOKEN));
    cfg.secret_headers
        .insert("X-Api-Key".into(), Secret::new(HEADER_SECRET));
    let m = manager(cfg);
    let http = m.http("llm").unwrap();
    assert_eq!(http.get("/v1/models").call().unwrap().status(), 200);
    let body = serde_json::json!({"model": "m", "messages": []});
    let reply = http.post("/v1/chat/completions").send_json(&body).unwrap();
    assert_eq!(reply.status(), 200);
    let mut ws = m.websocket("llm").unwrap();
    ws.send_text("hello").unwrap();
    assert_eq!(ws.read().unwrap().into_text().unwrap().as_str(), "hello");
    drop(ws);
    m.shutdown(std::time::Duration::from_secs(2)).unwrap();
    drop(m);
    log::logger().flush();

    let text = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    // The check can fail: TRACE was on, and the transport crates did log.
    assert!(text.contains("TRACE"), "no TRACE record: {text}");
    assert!(text.contains(" ureq"), "nothing from ureq: {text}");
    assert!(
        text.contains(" tungstenite"),
        "nothing from tungstenite: {text}"
    );
    let rebuilt = rebuilt_from_hex_rows(&text);
    for secret in [TOKEN, HEADER_SECRET] {
        assert!(
            !text.contains(secret),
            "'{secret}' in a log record:\n{text}"
        );
        assert!(
            !rebuilt.contains(secret),
            "'{secret}' can be rebuilt from ureq-proto's hex dump: {rebuilt}"
        );
    }
}

#[test]
fn only_the_head_dumping_targets_and_their_modules_are_capped() {
    use log::Level::{Debug, Trace};
    assert!(logging::may_print_secrets("ureq_proto", Trace));
    assert!(logging::may_print_secrets("ureq_proto::util", Trace));
    assert!(logging::may_print_secrets(
        "tungstenite::handshake::client",
        Trace
    ));
    assert!(!logging::may_print_secrets("ureq_proto::util", Debug));
    assert!(!logging::may_print_secrets("ureq_protocol", Trace));
    assert!(!logging::may_print_secrets("tungstenite::protocol", Trace));
    assert!(!logging::may_print_secrets("backend_pool::http", Trace));
}

#[test]
fn debug_of_configs_connections_guards_and_errors_shows_no_secret() {
    let ws_ok = TestServer::builder()
        .websocket("/ws", |_| {})
        .build()
        .unwrap();
    // Answers everything, the WebSocket upgrade included, with 401.
    let refusing = TestServer::builder()
        .http(|_| Response::text(401, "no"))
        .build()
        .unwrap();
    let with_secrets = |name: &str, url: &str| {
        let mut cfg = ServiceConfig {
            websocket: Some(WsPoolConfig {
                min_connections: 0,
                ..WsPoolConfig::default()
            }),
            ..service(name, url)
        };
        cfg.bearer_token = Some(Secret::new(TOKEN));
        cfg.secret_headers
            .insert("X-Api-Key".into(), Secret::new(HEADER_SECRET));
        cfg
    };
    let config = backend_pool::ManagerConfig {
        maintenance_interval_ms: 50,
        service: vec![
            with_secrets("ok", &ws_ok.http_url()),
            with_secrets("refusing", &refusing.http_url()),
        ],
    };
    let m = backend_pool::PoolManager::new(config.clone()).unwrap();
    let client = m.http("refusing").unwrap();
    let conn = client.checkout().unwrap();
    let mut texts = vec![
        format!("{config:?}"),
        format!("{:?}", config.service[0]),
        format!("{m:?}"),
        format!("{client:?}"),
        format!("{conn:?}"),
    ];
    drop(conn);
    let reply = client.get("/v1/models").call().unwrap();
    assert_eq!(reply.status(), 401);
    texts.push(format!("{reply:?}"));
    let err = reply.error_for_status().unwrap_err();
    texts.push(format!("{err:?} {err}"));
    let guard = m.websocket("ok").unwrap();
    texts.push(format!("{guard:?}"));
    drop(guard);
    let refused = m.websocket("refusing").unwrap_err();
    texts.push(format!("{refused:?} {refused}"));
    m.shutdown(std::time::Duration::from_secs(2)).unwrap();
    for text in &texts {
        for secret in [TOKEN, HEADER_SECRET] {
            assert!(!text.contains(secret), "'{secret}' shown: {text}");
        }
    }
    assert!(texts[0].contains("<redacted>"), "{}", texts[0]);
}
