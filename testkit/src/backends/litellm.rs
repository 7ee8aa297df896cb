//! Mock LiteLLM proxy: OpenAI-compatible chat completions behind a master key.

use std::time::Duration;

use serde_json::{json, Value};

use super::{detail, start, unix_time, uuid_like, UVICORN_KEEP_ALIVE};
use crate::{Request, Response, ServerBuilder, TestServer};

/// The completion text every request gets.
pub const MOCK_REPLY: &str = "hello from mock";
/// The only model listed.
pub const MOCK_MODEL: &str = "mock-gpt";

/// A running mock LiteLLM proxy requiring `Authorization: Bearer <master_key>`,
/// with uvicorn's 5 s idle keep-alive.
///
/// - `POST /v1/chat/completions`, `POST /chat/completions`: an OpenAI-shaped
///   `chat.completion` whose content is `"hello from mock"`; with `"stream": true`
///   an SSE stream of `data: {chat.completion.chunk}` events ending with
///   `data: [DONE]`. 400 on a body that is not a JSON object.
/// - `GET /v1/models`, `GET /models`: one model, `mock-gpt`.
/// - `GET /health` (auth): the billable health check of the real proxy — tests can
///   assert it is never called via [`TestServer::request_log`].
/// - No auth: `GET /health/liveliness` and `/health/liveness` → `"I'm alive!"`
///   (a JSON string), `GET /health/readiness` → `{"status":"healthy",..}`.
/// - 401 `{"error":{"type":"auth_error","code":"401",..}}` on a missing or wrong key
///   (the key is never echoed).
pub fn litellm(master_key: &str) -> TestServer {
    litellm_with_idle(master_key, UVICORN_KEEP_ALIVE)
}

/// [`litellm`] with another idle keep-alive timeout.
pub fn litellm_with_idle(master_key: &str, idle: Duration) -> TestServer {
    start(litellm_builder(master_key, idle), "litellm")
}

/// The builder behind [`litellm_with_idle`].
pub fn litellm_builder(master_key: &str, idle: Duration) -> ServerBuilder {
    let expected = format!("Bearer {master_key}");
    TestServer::builder()
        .idle_timeout(idle)
        .http(move |req| handle(&expected, req))
}

fn handle(expected_auth: &str, req: &Request) -> Response {
    let path = req.path_only();
    match (req.method.as_str(), path) {
        ("GET", "/health/liveliness") | ("GET", "/health/liveness") => {
            return Response::json(200, json!("I'm alive!"))
        }
        ("GET", "/health/readiness") => {
            return Response::json(
                200,
                json!({
                    "status": "healthy",
                    "db": "Not connected",
                    "cache": null,
                    "litellm_version": "1.0.0-mock",
                    "success_callbacks": []
                }),
            )
        }
        _ => {}
    }
    let known = matches!(
        path,
        "/v1/chat/completions" | "/chat/completions" | "/v1/models" | "/models" | "/health"
    );
    if !known {
        return detail(404, "Not Found");
    }
    if req.header("authorization").map(str::trim) != Some(expected_auth) {
        return Response::json(
            401,
            json!({"error": {
                "message": "Authentication Error, Invalid proxy server token passed.",
                "type": "auth_error",
                "param": "None",
                "code": "401"
            }}),
        );
    }
    match (req.method.as_str(), path) {
        ("POST", "/v1/chat/completions") | ("POST", "/chat/completions") => completion(req),
        ("GET", "/v1/models") | ("GET", "/models") => Response::json(
            200,
            json!({"object": "list", "data": [{
                "id": MOCK_MODEL, "object": "model", "created": 1_677_610_602, "owned_by": "openai"
            }]}),
        ),
        ("GET", "/health") => Response::json(
            200,
            json!({
                "healthy_endpoints": [{"model": format!("openai/{MOCK_MODEL}")}],
                "unhealthy_endpoints": [],
                "healthy_count": 1,
                "unhealthy_count": 0
            }),
        ),
        _ => detail(405, "Method Not Allowed"),
    }
}

fn completion(req: &Request) -> Response {
    let Some(body) = req.json().filter(Value::is_object) else {
        return Response::json(
            400,
            json!({"error": {
                "message": "Invalid JSON body",
                "type": "invalid_request_error",
                "param": null,
                "code": "400"
            }}),
        );
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(MOCK_MODEL)
        .to_string();
    let id = format!("chatcmpl-{}", uuid_like());
    let created = unix_time();
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let chunk = |delta: Value, finish: Value| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
            })
            .to_string()
        };
        let mut events = vec![(
            String::new(),
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        )];
        let words: Vec<&str> = MOCK_REPLY.split(' ').collect();
        for (i, word) in words.iter().enumerate() {
            let piece = if i == 0 {
                (*word).to_string()
            } else {
                format!(" {word}")
            };
            events.push((String::new(), chunk(json!({"content": piece}), Value::Null)));
        }
        events.push((String::new(), chunk(json!({}), json!("stop"))));
        events.push((String::new(), "[DONE]".to_string()));
        return Response::sse(events, Duration::from_millis(2));
    }
    Response::json(
        200,
        json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": MOCK_REPLY},
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
        }),
    )
}
