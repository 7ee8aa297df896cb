//! Mock ComfyUI: HTTP API plus the `/ws?clientId=` event stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{start, unix_time, uuid_like};
use crate::server::TaskCtx;
use crate::{Request, Response, ServerBuilder, TestServer, WsHandle};

/// How the mock "runs" a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComfyOptions {
    /// Number of `progress` events (`value` 1..=steps, `max` = steps). At least 1.
    pub steps: u32,
    /// Pause after each progress event.
    pub step_gap: Duration,
    /// Pause between answering `POST /prompt` and `execution_start`.
    pub start_delay: Duration,
}

impl Default for ComfyOptions {
    fn default() -> Self {
        ComfyOptions {
            steps: 4,
            step_gap: Duration::from_millis(5),
            start_delay: Duration::from_millis(5),
        }
    }
}

#[derive(Default)]
struct Queue {
    number: u64,
    /// `(number, prompt_id, client_id)` of prompts not yet finished.
    running: Vec<(u64, String, String)>,
    /// Finished prompts: id → history entry.
    history: HashMap<String, Value>,
}

struct Comfy {
    opts: ComfyOptions,
    /// clientId → socket; a new socket with the same clientId replaces the old one.
    clients: Mutex<HashMap<String, WsHandle>>,
    queue: Mutex<Queue>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running mock ComfyUI with [`ComfyOptions::default`] (a prompt takes ~30 ms).
///
/// HTTP (every route also under `/api/...`):
/// - `GET /prompt` → `{"exec_info":{"queue_remaining":n}}`
/// - `POST /prompt` `{"prompt":{..},"client_id":"X"[,"prompt_id":".."]}` →
///   `{"prompt_id","number","node_errors":{}}` (400 without a `prompt` object), then
///   on a background thread sends to the socket of client X: `status` (to all
///   sockets), `execution_start`, `executing` `{node:"1"}`, `progress` × steps
///   with one binary preview frame (BE u32 1, BE u32 2, PNG-ish bytes) after the
///   first, `executed`, `execution_success`, `executing` `{node:null,prompt_id}`,
///   and a final `status` to all sockets.
/// - `GET /queue`, `GET /history`, `GET /history/{id}` (`{}` until finished, then
///   `{id:{"status":{"completed":true,..},..}}`), `GET /system_stats`,
///   `GET /view?filename=` (PNG bytes), `POST /interrupt`, `POST /free`.
/// - 403 when an `Origin` header does not match `Host` (as ComfyUI on loopback).
///
/// WebSocket `/ws?clientId=X`: first message
/// `{"type":"status","data":{"status":{"exec_info":{"queue_remaining":n}},"sid":"X"}}`.
/// Never sends pings. No idle keep-alive timeout.
pub fn comfyui() -> TestServer {
    comfyui_with(ComfyOptions::default())
}

/// [`comfyui`] with custom timing.
pub fn comfyui_with(opts: ComfyOptions) -> TestServer {
    start(comfyui_builder(opts), "comfyui")
}

/// The builder behind [`comfyui_with`].
pub fn comfyui_builder(opts: ComfyOptions) -> ServerBuilder {
    let state = Arc::new(Comfy {
        opts,
        clients: Mutex::new(HashMap::new()),
        queue: Mutex::new(Queue::default()),
    });
    let http_state = Arc::clone(&state);
    TestServer::builder()
        .http(move |req| handle(&http_state, req))
        .websocket("/ws", move |ws| on_open(&state, ws))
}

fn on_open(state: &Arc<Comfy>, ws: &WsHandle) {
    let sid = ws
        .query_param("clientId")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| uuid_like().replace('-', ""));
    let remaining = lock(&state.queue).running.len();
    ws.send_text(&status_msg(remaining, Some(&sid)).to_string());
    let mut clients = lock(&state.clients);
    clients.retain(|_, h| h.is_open());
    clients.insert(sid, ws.clone());
}

fn status_msg(remaining: usize, sid: Option<&str>) -> Value {
    let mut data = json!({ "status": { "exec_info": { "queue_remaining": remaining } } });
    if let Some(sid) = sid {
        data["sid"] = json!(sid);
    }
    json!({ "type": "status", "data": data })
}

fn origin_mismatch(req: &Request) -> bool {
    let Some(origin) = req.header("origin") else {
        return false;
    };
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    Some(origin_host.trim_end_matches('/')) != req.header("host")
}

fn handle(state: &Arc<Comfy>, req: &Request) -> Response {
    if origin_mismatch(req) {
        return Response::text(403, "Forbidden");
    }
    let full = req.path_only();
    let path = full
        .strip_prefix("/api")
        .filter(|p| p.starts_with('/'))
        .unwrap_or(full);
    match (req.method.as_str(), path) {
        ("GET", "/prompt") => {
            let remaining = lock(&state.queue).running.len();
            Response::json(
                200,
                json!({ "exec_info": { "queue_remaining": remaining } }),
            )
        }
        ("POST", "/prompt") => post_prompt(state, req),
        ("GET", "/queue") => {
            let q = lock(&state.queue);
            let running: Vec<Value> = q
                .running
                .iter()
                .map(|(n, id, client)| json!([n, id, {}, { "client_id": client }, []]))
                .collect();
            Response::json(
                200,
                json!({ "queue_running": running, "queue_pending": [] }),
            )
        }
        ("GET", "/history") => {
            let q = lock(&state.queue);
            Response::json(200, json!(q.history))
        }
        ("GET", p) if p.starts_with("/history/") => {
            let id = &p["/history/".len()..];
            let q = lock(&state.queue);
            match q.history.get(id) {
                Some(entry) => {
                    let mut one = serde_json::Map::new();
                    one.insert(id.to_string(), entry.clone());
                    Response::json(200, Value::Object(one))
                }
                None => Response::json(200, json!({})),
            }
        }
        ("GET", "/system_stats") => Response::json(200, system_stats()),
        ("GET", "/view") => match req.query_param("filename") {
            Some(_) => Response::bytes(200, "image/png", preview_png()),
            None => Response::text(404, "404: Not Found"),
        },
        ("POST", "/interrupt") | ("POST", "/free") => {
            Response::bytes(200, "application/octet-stream", Vec::new())
        }
        _ => Response::text(404, "404: Not Found"),
    }
}

fn post_prompt(state: &Arc<Comfy>, req: &Request) -> Response {
    let body = req.json().unwrap_or(Value::Null);
    if !body.get("prompt").is_some_and(Value::is_object) {
        return Response::json(
            400,
            json!({
                "error": {
                    "type": "no_prompt",
                    "message": "No prompt provided",
                    "details": "No prompt provided",
                    "extra_info": {}
                },
                "node_errors": {}
            }),
        );
    }
    let client_id = body
        .get("client_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let prompt_id = body
        .get("prompt_id")
        .and_then(Value::as_str)
        .map_or_else(uuid_like, str::to_string);
    let number = {
        let mut q = lock(&state.queue);
        let n = q.number;
        q.number += 1;
        q.running.push((n, prompt_id.clone(), client_id.clone()));
        n
    };
    let job_state = Arc::clone(state);
    let job_id = prompt_id.clone();
    Response::json(
        200,
        json!({ "prompt_id": prompt_id, "number": number, "node_errors": {} }),
    )
    .after(move |ctx| run_prompt(&job_state, ctx, &job_id, &client_id))
}

/// Sends the event sequence of one prompt, then records it in the history.
fn run_prompt(state: &Comfy, ctx: &TaskCtx, prompt_id: &str, client_id: &str) {
    let send = |msg: Value| {
        if let Some(ws) = lock(&state.clients).get(client_id) {
            ws.send_text(&msg.to_string());
        }
    };
    let broadcast_status = || {
        let remaining = lock(&state.queue).running.len();
        let text = status_msg(remaining, None).to_string();
        for ws in lock(&state.clients).values() {
            ws.send_text(&text);
        }
    };
    let opts = &state.opts;
    let steps = opts.steps.max(1);

    broadcast_status();
    if !ctx.sleep(opts.start_delay) {
        return;
    }
    let ts = unix_time() * 1000;
    send(json!({"type": "execution_start", "data": {"prompt_id": prompt_id, "timestamp": ts}}));
    send(
        json!({"type": "executing", "data": {"node": "1", "display_node": "1", "prompt_id": prompt_id}}),
    );
    for value in 1..=steps {
        send(json!({"type": "progress", "data": {
            "value": value, "max": steps, "prompt_id": prompt_id, "node": "1"
        }}));
        if value == 1 {
            if let Some(ws) = lock(&state.clients).get(client_id) {
                let mut frame = Vec::new();
                frame.extend_from_slice(&1u32.to_be_bytes());
                frame.extend_from_slice(&2u32.to_be_bytes());
                frame.extend_from_slice(&preview_png());
                ws.send_binary(frame);
            }
        }
        if !ctx.sleep(opts.step_gap) {
            return;
        }
    }
    let images = json!([{ "filename": "mock_00001_.png", "subfolder": "", "type": "output" }]);
    send(json!({"type": "executed", "data": {
        "node": "1", "display_node": "1", "output": {"images": images}, "prompt_id": prompt_id
    }}));
    send(
        json!({"type": "execution_success", "data": {"prompt_id": prompt_id, "timestamp": unix_time() * 1000}}),
    );
    {
        let mut q = lock(&state.queue);
        q.running.retain(|(_, id, _)| id != prompt_id);
        q.history.insert(
            prompt_id.to_string(),
            json!({
                "prompt": [],
                "outputs": { "1": { "images": images } },
                "status": { "status_str": "success", "completed": true, "messages": [] },
                "meta": {}
            }),
        );
    }
    send(
        json!({"type": "executing", "data": {"node": null, "display_node": null, "prompt_id": prompt_id}}),
    );
    broadcast_status();
}

fn system_stats() -> Value {
    json!({
        "system": {
            "os": "posix",
            "ram_total": 25_769_803_776u64,
            "ram_free": 17_179_869_184u64,
            "comfyui_version": "0.3.40-mock",
            "python_version": "3.11.2",
            "pytorch_version": "2.5.1+cpu",
            "embedded_python": false,
            "argv": ["main.py", "--cpu"]
        },
        "devices": [{
            "name": "cpu",
            "type": "cpu",
            "index": null,
            "vram_total": 0,
            "vram_free": 0,
            "torch_vram_total": 0,
            "torch_vram_free": 0
        }]
    })
}

/// A few bytes starting with the PNG signature (not a decodable image).
fn preview_png() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(b"\0\0\0\rIHDRmock");
    png
}
