//! Service definitions and request helpers the tests share: each backend's `ServiceConfig`,
//! reading an SSE stream, following a ComfyUI prompt on its socket.

use std::io;
use std::time::{Duration, Instant};

use backend_pool::{
    Error, Message, PoolManager, Secret, ServiceConfig, StreamingResponse, WsGuard, WsPoolConfig,
};
use serde_json::{json, Value};

use crate::support::*;

// ---- service definitions -------------------------------------------------------------------

pub(crate) fn litellm_service(name: &str, b: &Backend, max: u32) -> ServiceConfig {
    ServiceConfig {
        bearer_token: Some(Secret::new(litellm_key())),
        health_path: Some("/health/liveliness".into()),
        ..with_http(service(name, &b.url), max, 1)
    }
}

pub(crate) fn gradio_service(name: &str, b: &Backend, max: u32) -> ServiceConfig {
    ServiceConfig {
        health_path: Some("/".into()),
        ..with_http(service(name, &b.url), max, 1)
    }
}

pub(crate) fn rvc_service(b: &Backend, max: u32) -> ServiceConfig {
    ServiceConfig {
        health_path: Some("/models".into()),
        ..with_http(service("rvc", &b.url), max, 1)
    }
}

pub(crate) fn comfy_service(b: &Backend, http_max: u32, ws_max: u32, ws_min: u32) -> ServiceConfig {
    ServiceConfig {
        health_path: Some("/prompt".into()),
        websocket: Some(WsPoolConfig {
            client_id_param: Some("clientId".into()),
            max_connections: ws_max,
            min_connections: ws_min,
            ..WsPoolConfig::default()
        }),
        ..with_http(service("comfyui", &b.url), http_max, 1)
    }
}

/// The five services of one manager: LiteLLM, Wan2GP (Gradio), a fifth service `upscaler`
/// (the second Gradio app), RVC and ComfyUI (HTTP + WebSocket).
pub(crate) struct Five {
    pub(crate) litellm: Backend,
    pub(crate) wan2gp: Backend,
    pub(crate) upscaler: Backend,
    pub(crate) rvc: Backend,
    pub(crate) comfyui: Backend,
}

impl Five {
    pub(crate) fn get() -> Five {
        Five {
            litellm: Backend::get("litellm"),
            wan2gp: Backend::get("gradio"),
            upscaler: Backend::get("gradio2"),
            rvc: Backend::get("rvc"),
            comfyui: Backend::get("comfyui"),
        }
    }

    /// (service name, its server), in configuration order.
    pub(crate) fn all(&self) -> [(&'static str, &Backend); 5] {
        [
            ("litellm", &self.litellm),
            ("wan2gp", &self.wan2gp),
            ("upscaler", &self.upscaler),
            ("rvc", &self.rvc),
            ("comfyui", &self.comfyui),
        ]
    }
}

// ---- request helpers -----------------------------------------------------------------------

/// `Ok` when the response has `status` and its body contains `needle`.
pub(crate) fn expect(
    r: Result<backend_pool::Response, Error>,
    status: u16,
    needle: &str,
) -> Result<(), String> {
    match r {
        Ok(r) if r.status() == status && r.text().contains(needle) => Ok(()),
        Ok(r) => Err(format!(
            "status {} body {:.200}",
            r.status(),
            r.text().replace('\n', " ")
        )),
        Err(e) => Err(format!("{:?}: {e}", e.class())),
    }
}

pub(crate) fn chat_body(stream: bool) -> Value {
    json!({"model": "mock-gpt", "stream": stream,
           "messages": [{"role": "user", "content": "hi"}]})
}

/// One server-sent event.
#[derive(Debug)]
pub(crate) struct Sse {
    pub(crate) event: String,
    pub(crate) data: String,
    pub(crate) at: Instant,
}

/// Reads events (the crate's parser: `StreamingResponse::events`) until `last` returns true
/// for one (inclusive), then the body to its end so the connection can be reused.
pub(crate) fn read_sse(
    body: &mut StreamingResponse,
    mut last: impl FnMut(&Sse) -> bool,
) -> io::Result<Vec<Sse>> {
    let (mut events, mut done) = (Vec::new(), false);
    for event in body.events() {
        let event = event?;
        let e = Sse {
            event: event.event,
            data: event.data,
            at: Instant::now(),
        };
        done = last(&e);
        events.push(e);
        if done {
            break;
        }
    }
    if !done {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("stream ended after {} events: {events:?}", events.len()),
        ));
    }
    io::copy(body, &mut io::sink())?;
    Ok(events)
}

/// What one ComfyUI prompt produced on its socket.
#[derive(Debug, Default)]
pub(crate) struct ComfyRun {
    /// Event types for this prompt, in order (plus `status` broadcasts).
    pub(crate) events: Vec<String>,
    pub(crate) progress: Vec<u64>,
    pub(crate) previews: usize,
}

/// Reads `ws` until `executing` with `node: null` for `prompt_id`.
pub(crate) fn follow_prompt(ws: &mut WsGuard, prompt_id: &str) -> Result<ComfyRun, String> {
    let mut run = ComfyRun::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match ws.read_timeout(Duration::from_secs(15)) {
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
                let kind = v["type"].as_str().unwrap_or_default().to_string();
                let data = &v["data"];
                let ours = data["prompt_id"].as_str() == Some(prompt_id);
                if ours || kind == "status" {
                    run.events.push(kind.clone());
                }
                match kind.as_str() {
                    "progress" if ours => run.progress.push(data["value"].as_u64().unwrap_or(0)),
                    "execution_error" | "execution_interrupted" if ours => {
                        return Err(format!("prompt ended with {kind}: {data}"))
                    }
                    "executing" if ours && data["node"].is_null() => return Ok(run),
                    _ => {}
                }
            }
            Ok(Message::Binary(b)) => {
                // 4-byte type 1 (preview), 4-byte format 2 (PNG), then the image.
                if b.len() > 16
                    && b[..8] == [0, 0, 0, 1, 0, 0, 0, 2]
                    && b[8..].starts_with(b"\x89PNG")
                {
                    run.previews += 1;
                }
            }
            Err(e) => return Err(format!("reading the socket: {:?}: {e}", e.class())),
        }
    }
    Err(format!("no end of prompt {prompt_id} within 60 s: {run:?}"))
}

/// One ComfyUI job: a socket from the pool, `POST /prompt` with its client id, events to the
/// end.
pub(crate) fn comfy_job(
    m: &PoolManager,
    steps: u32,
    step_seconds: f64,
) -> Result<ComfyRun, String> {
    let mut ws = m.websocket("comfyui").map_err(|e| format!("lease: {e}"))?;
    let client_id = ws.client_id().ok_or("no client id")?.to_string();
    let prompt_id = submit_prompt(m, &client_id, steps, step_seconds)?;
    let run = follow_prompt(&mut ws, &prompt_id)?;
    ws.finish(); // the prompt ended: the socket serves the next job
    Ok(run)
}

pub(crate) fn submit_prompt(
    m: &PoolManager,
    client_id: &str,
    steps: u32,
    step_seconds: f64,
) -> Result<String, String> {
    let reply = m
        .http("comfyui")
        .map_err(|e| e.to_string())?
        .post("/prompt")
        .send_json(&comfy_prompt(client_id, steps, step_seconds))
        .map_err(|e| format!("POST /prompt: {:?}: {e}", e.class()))?;
    if reply.status() != 200 {
        return Err(format!("POST /prompt: {} {}", reply.status(), reply.text()));
    }
    let v: Value = reply.json().map_err(|e| e.to_string())?;
    v["prompt_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no prompt_id in {v}"))
}

pub(crate) fn local_port(ws: &WsGuard) -> u16 {
    ws.local_addr().unwrap().port()
}
