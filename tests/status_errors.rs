//! Status errors (`error_for_status` on whole and streamed responses) keep their evidence:
//! the status and the body (capped), their own class `status`, never counted against the
//! service's health, and the connection is reused.

mod support;

use std::io::Read;

use backend_pool::{ErrorClass, PoolManager, PoolStats};
use backend_pool_testkit::{Response, TestServer};
use support::{manager, service};

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
        assert_eq!(err.class().name(), "status", "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("'comfy'") && text.contains("400"),
            "names the service and the status: {text}"
        );
        assert!(
            text.contains("prompt_outputs_failed_validation"),
            "shows the body's first line: {text}"
        );
    }
    let stats = http_stats(&m);
    assert_eq!(stats.errors.get(ErrorClass::Protocol), 0);
    assert_eq!(stats.errors.total(), 3, "{:?}", stats.errors);
    assert_eq!(server.accepted(), 1, "a 400 is an answer: the connection is reused");
    assert_eq!(m.stats().services[0].health.consecutive_failures, 0);
}

#[test]
fn a_streamed_500_with_a_huge_body_is_a_status_error_and_reads_a_bounded_part() {
    let server = server();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    let mut stream = http.get("/huge").stream(b"").unwrap();
    assert_eq!(stream.status(), 500);
    let mut first = [0u8; 15];
    stream.read_exact(&mut first).unwrap();
    drop(stream);
    let err = http.get("/huge").call().unwrap().error_for_status().unwrap_err();
    assert_eq!(err.class().name(), "status", "{err:?}");
    let text = err.to_string();
    assert!(text.contains("500") && text.contains("traceback line"), "{text}");
    assert!(text.len() < 1024, "the message is bounded: {} bytes", text.len());
}
