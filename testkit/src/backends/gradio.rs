//! Mock Gradio 5 app (what Wan2GP serves), with one endpoint `api_name="generate"`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{detail, hex_id, start, UVICORN_KEEP_ALIVE};
use crate::{Request, Response, ServerBuilder, TestServer};

/// A running mock Gradio app with uvicorn's 5 s idle keep-alive.
///
/// - `HEAD /`, `GET /` → 200 HTML; `GET /config` → JSON (`version` 5.29.0);
///   `GET /gradio_api/info` → the `/generate` endpoint's signature.
/// - `POST /gradio_api/call/generate` `{"data":[..]}` → `{"event_id":"<32 hex>"}`
///   (422 without a `data` array).
/// - `GET /gradio_api/call/generate/{event_id}` → SSE: three
///   `event: generating` / `data: ["step i/3"]`, then `event: complete` /
///   `data: ["generated: <first input>"]`. An unknown (or already streamed)
///   event id gets `event: error` / `data: null`.
pub fn gradio() -> TestServer {
    start(gradio_builder(), "gradio")
}

/// The builder behind [`gradio`].
pub fn gradio_builder() -> ServerBuilder {
    let events: Arc<Mutex<HashMap<String, Value>>> = Arc::new(Mutex::new(HashMap::new()));
    TestServer::builder()
        .idle_timeout(UVICORN_KEEP_ALIVE)
        .http(move |req| handle(&events, req))
}

const CALL_PREFIX: &str = "/gradio_api/call/generate/";

fn handle(events: &Mutex<HashMap<String, Value>>, req: &Request) -> Response {
    let path = req.path_only();
    match (req.method.as_str(), path) {
        ("GET", "/") | ("HEAD", "/") => Response::bytes(
            200,
            "text/html; charset=utf-8",
            b"<!doctype html><html><body>mock gradio</body></html>".to_vec(),
        ),
        ("GET", "/config") => Response::json(
            200,
            json!({
                "version": "5.29.0",
                "mode": "blocks",
                "protocol": "sse_v3",
                "api_prefix": "/gradio_api",
                "title": "Wan2GP (mock)",
                "components": [],
                "dependencies": [{"id": 0, "api_name": "generate", "queue": true}]
            }),
        ),
        ("GET", "/gradio_api/info") => {
            let text = |label: &str| {
                json!({"label": label, "parameter_name": label, "type": {"type": "string"},
                       "python_type": {"type": "str", "description": ""}, "component": "Textbox"})
            };
            Response::json(
                200,
                json!({
                    "named_endpoints": {"/generate": {
                        "parameters": [text("prompt")],
                        "returns": [text("output")]
                    }},
                    "unnamed_endpoints": {}
                }),
            )
        }
        ("POST", "/gradio_api/call/generate") => {
            let Some(data) = req
                .json()
                .and_then(|b| b.get("data").filter(|d| d.is_array()).cloned())
            else {
                return detail(422, "body must be {\"data\": [...]}");
            };
            let id = hex_id();
            lock(events).insert(id.clone(), data);
            Response::json(200, json!({ "event_id": id }))
        }
        ("GET", p) if p.starts_with(CALL_PREFIX) => {
            let id = &p[CALL_PREFIX.len()..];
            let Some(data) = lock(events).remove(id) else {
                return Response::sse(
                    vec![("error".to_string(), "null".to_string())],
                    Duration::ZERO,
                );
            };
            let input = match data.get(0) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            let mut out: Vec<(String, String)> = (1..=3)
                .map(|i| {
                    (
                        "generating".to_string(),
                        json!([format!("step {i}/3")]).to_string(),
                    )
                })
                .collect();
            out.push((
                "complete".to_string(),
                json!([format!("generated: {input}")]).to_string(),
            ));
            Response::sse(out, Duration::from_millis(5))
        }
        _ => detail(404, "Not Found"),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
