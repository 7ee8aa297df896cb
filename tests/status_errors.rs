//! Status errors (`error_for_status` on whole and streamed responses) keep their evidence:
//! the status and the body (capped), their own class `status`, never counted against the
//! service's health, and the connection is reused.

mod support;

use std::time::{Duration, Instant};

use backend_pool::{Error, ErrorClass, PoolManager, PoolStats, StatusBody};
use backend_pool_testkit::{Response, TestServer};
use support::{eventually, manager, service};

/// What ComfyUI answers to a prompt that fails validation (`POST /prompt`, 400).
fn comfy_rejection() -> serde_json::Value {
    serde_json::json!({
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {}
        },
        "node_errors": {
            "4": {
                "errors": [{
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": "ckpt_name: 'missing.safetensors' not in []",
                    "extra_info": {"input_name": "ckpt_name"}
                }],
                "dependent_outputs": ["9"],
                "class_type": "CheckpointLoaderSimple"
            }
        }
    })
}

/// `/prompt`: ComfyUI's 400. `/huge`: a 500 whose body is 5 MiB of lines. `/empty`: 404
/// without a body. Anything else: 200.
fn server() -> TestServer {
    TestServer::builder()
        .http(|req| match req.path.as_str() {
            "/prompt" => Response::json(400, comfy_rejection()),
            "/huge" => {
                let line = format!("{}\n", "traceback line ".repeat(8));
                Response::text(500, &line.repeat(5 * 1024 * 1024 / line.len()))
            }
            "/empty" => Response::bytes(404, "text/plain", Vec::new()),
            _ => Response::json(200, serde_json::json!({"ok": true})),
        })
        .build()
        .unwrap()
}

/// A server answering one request with a 500 whose 5 MiB body of lines is sent chunked;
/// returns its URL.
fn chunked_500() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let _ = socket.read(&mut [0u8; 4096]);
        let line = format!("{}\n", "traceback line ".repeat(8));
        let chunk = line.repeat(100);
        let mut out =
            b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        while out.len() < 5 << 20 {
            out.extend(format!("{:X}\r\n{chunk}\r\n", chunk.len()).bytes());
        }
        out.extend(b"0\r\n\r\n");
        let _ = socket.write_all(&out); // the client stops reading at its limit
    });
    url
}

fn http_stats(m: &PoolManager) -> PoolStats {
    m.stats().services[0].http.clone().unwrap()
}

#[test]
fn a_400_is_a_status_error_with_its_body_not_a_protocol_error() {
    let server = server();
    let m = manager(service("comfy", &server.http_url()));
    let http = m.http("comfy").unwrap();
    for _ in 0..3 {
        let err = http
            .post("/prompt")
            .send_json(&serde_json::json!({"prompt": {}}))
            .unwrap()
            .error_for_status()
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Status, "{err:?}");
        assert_eq!(err.class().name(), "status");
        assert_eq!(err.status(), Some(400));
        assert_eq!(err.service(), Some("comfy"));
        // The evidence: ComfyUI's reasons, read as JSON.
        let why: serde_json::Value = err.json().unwrap();
        assert_eq!(why, comfy_rejection());
        assert_eq!(
            why["node_errors"]["4"]["errors"][0]["details"],
            "ckpt_name: 'missing.safetensors' not in []"
        );
        let body = err.body().unwrap();
        assert!(!body.is_truncated());
        assert_eq!(err.text().unwrap(), comfy_rejection().to_string());
        assert!(matches!(&err, Error::Status { status: 400, body, .. } if body.len() > 100));
        let text = err.to_string();
        assert!(
            text.starts_with("service 'comfy': HTTP 400 Bad Request: {"),
            "names the service and the status: {text}"
        );
        assert!(
            text.contains("prompt_outputs_failed_validation"),
            "shows the body's first line: {text}"
        );
    }
    let stats = http_stats(&m);
    assert_eq!(stats.errors.get(ErrorClass::Status), 3);
    assert_eq!(stats.errors.get(ErrorClass::Protocol), 0);
    assert_eq!(stats.errors.total(), 3, "{:?}", stats.errors);
    let prometheus = m.stats().to_prometheus();
    assert!(
        prometheus.contains(
            "backend_pool_errors_total{service=\"comfy\",pool=\"http\",class=\"status\"} 3"
        ),
        "{prometheus}"
    );
    assert!(m.stats().to_json().contains("\"status\":3"));
    assert_eq!(
        server.accepted(),
        1,
        "a 400 is an answer: the connection is reused"
    );
    assert_eq!(m.stats().services[0].health.consecutive_failures, 0);
    assert_eq!(stats.connect_failures, 0);
    assert_eq!(stats.closed.broken, 0);
}

#[test]
fn the_comfyui_mock_refusing_a_prompt_reads_through_the_status_error() {
    let server = backend_pool_testkit::backends::comfyui();
    let m = manager(service("comfyui", &server.http_url()));
    let reply = m
        .http("comfyui")
        .unwrap()
        .post("/prompt")
        .send_json(&serde_json::json!({"client_id": "x"}))
        .unwrap();
    let err = reply.error_for_status().unwrap_err();
    let why: serde_json::Value = err.json().unwrap();
    assert_eq!(why["error"]["type"], "no_prompt", "{why}");
    assert!(why["node_errors"].is_object(), "{why}");
}

#[test]
fn a_streamed_400_is_a_status_error_and_its_connection_is_reused() {
    let server = server();
    let m = manager(service("comfy", &server.http_url()));
    let http = m.http("comfy").unwrap();
    for _ in 0..2 {
        let err = http
            .post("/prompt")
            .stream(b"{}")
            .unwrap()
            .error_for_status()
            .unwrap_err();
        assert_eq!(err.status(), Some(400));
        assert_eq!(err.json::<serde_json::Value>().unwrap(), comfy_rejection());
    }
    let ok = http.get("/ok").stream(b"").unwrap().error_for_status();
    assert_eq!(ok.unwrap().status(), 200);
    assert_eq!(
        server.accepted(),
        1,
        "the body was read: the connection is reused"
    );
    assert_eq!(http_stats(&m).errors.get(ErrorClass::Status), 2);
}

#[test]
fn a_500_with_a_huge_body_keeps_64_kib_and_a_bounded_message() {
    let server = server();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    let check = |err: &Error| {
        assert_eq!(err.class(), ErrorClass::Status, "{err:?}");
        assert_eq!(err.status(), Some(500));
        let body = err.body().unwrap();
        assert_eq!(body.len(), StatusBody::LIMIT);
        assert!(body.is_truncated());
        assert!(body.starts_with(b"traceback line traceback line"));
        assert!(err.json::<serde_json::Value>().is_err(), "not JSON");
        let text = err.to_string();
        assert!(
            text.contains("HTTP 500 Internal Server Error: traceback line"),
            "{text}"
        );
        assert!(
            text.len() < 400,
            "the message is bounded: {} bytes",
            text.len()
        );
        let debug = format!("{err:?}");
        assert!(debug.len() < 600, "Debug is bounded: {} bytes", debug.len());
    };
    // Read whole (5 MiB, under max_body_bytes), then capped.
    check(
        &http
            .get("/huge")
            .call()
            .unwrap()
            .error_for_status()
            .unwrap_err(),
    );
    assert_eq!(server.accepted(), 1);
    // Streamed: at most 64 KiB (and one byte) read, then the connection closed, not drained
    // for long.
    let start = Instant::now();
    let err = http
        .get("/huge")
        .stream(b"")
        .unwrap()
        .error_for_status()
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    check(&err);
    assert!(eventually(Duration::from_secs(2), || server.open() == 0));
    // Over max_body_bytes: the status error with its first 64 KiB, not `too_large`.
    let mut cfg = service("small", &server.http_url());
    cfg.http.as_mut().unwrap().max_body_bytes = 1 << 20;
    let small = manager(cfg);
    check(
        &small
            .http("small")
            .unwrap()
            .get("/huge")
            .call()
            .unwrap_err(),
    );
    // The same, sent chunked (no length announced: found over the limit while reading).
    let chunked = chunked_500();
    let mut cfg = service("chunked", &chunked);
    cfg.http.as_mut().unwrap().max_body_bytes = 1 << 20;
    let chunked = manager(cfg);
    check(
        &chunked
            .http("chunked")
            .unwrap()
            .get("/")
            .call()
            .unwrap_err(),
    );
    for m in [&small, &chunked] {
        support::assert_one_error(m, ErrorClass::Status);
    }
}

#[test]
fn a_status_error_without_a_body_and_the_accessors_of_other_errors() {
    let server = server();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    let err = http
        .get("/empty")
        .call()
        .unwrap()
        .error_for_status()
        .unwrap_err();
    assert_eq!(err.to_string(), "service 'svc': HTTP 404 Not Found");
    assert_eq!(err.body().map(|b| b.len()), Some(0));
    let ok = http.get("/ok").call().unwrap().error_for_status().unwrap();
    assert_eq!(ok.status(), 200);
    // Other errors have no status and no body; json() says so.
    let other = http.get("bad path").call().unwrap_err();
    assert_eq!(
        (other.status(), other.body(), other.text()),
        (None, None, None)
    );
    let json = other.json::<serde_json::Value>().unwrap_err();
    assert!(matches!(json, Error::Json { .. }), "{json:?}");
    assert!(
        json.chain().to_string().contains("not a status error"),
        "{}",
        json.chain()
    );
}
