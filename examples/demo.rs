//! Load demo: one `PoolManager`, five services, 120 caller threads.
//!
//! ```text
//! cargo run --release --example demo                      # mock backends on loopback
//! cargo run --release --example demo -- --threads 200 --seconds 10
//! cargo run --release --example demo -- --json            # final stats as one JSON object
//! cargo run --release --example demo -- --endpoints 3   # 3 mock ComfyUI and LiteLLM machines
//! cargo run --release --example demo -- --config examples/services.toml   # real backends
//! ```
//!
//! A file's service may list several endpoints (`urls = [...]`, e.g. two ComfyUI machines):
//! stateless calls spread over them, each ComfyUI prompt runs in one session (its events
//! come from the machine that took it), and the table adds each endpoint's own figures.
//!
//! Without `--config` it starts the testkit's mock ComfyUI, LiteLLM (with a master key),
//! Gradio (standing in for Wan2GP), RVC and a generic fifth service ("upscaler") on
//! 127.0.0.1 ephemeral ports. Each caller thread drives one service, the real protocol of
//! each: chat completions (every third one streamed to `[DONE]`), Gradio's call API and its
//! SSE result, RVC `/convert` with a small WAV, a ComfyUI prompt followed on a pooled
//! WebSocket until `executing` with `node: null`, and `GET /echo` on the fifth service.
//! Progress goes to stderr once a second, the report to stdout. The exit status is 1 when
//! any operation failed.
//!
//! Logging: `RUST_LOG` (default `warn`), except that the transport crates' request-head dumps
//! (ureq-proto and tungstenite's handshake at TRACE) never print: they carry the bearer token
//! (see `support/logging.rs`).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backend_pool::{
    ErrorChain, ManagerConfig, ManagerStats, PoolManager, PoolStats, Secret, ServiceConfig,
    StreamingResponse,
};
use backend_pool_testkit::{backends, TestServer};

#[path = "support/logging.rs"]
mod logging;
use serde_json::{json, Value};

const USAGE: &str =
    "usage: demo [--threads N] [--seconds S] [--json] [--endpoints N] [--config FILE]";
/// The most mock machines `--endpoints` starts per service.
const MAX_ENDPOINTS: usize = 8;
const LITELLM_KEY: &str = "sk-demo-master-key";

struct Args {
    threads: usize,
    seconds: f64,
    json: bool,
    /// Mock machines per service for ComfyUI and LiteLLM (`urls` when more than one).
    endpoints: usize,
    config: Option<String>,
}

/// What a caller thread does with its service.
#[derive(Clone, Debug)]
enum Workload {
    ComfyPrompt,
    ChatCompletion,
    GradioCall,
    RvcConvert,
    Echo,
    /// Any other service from a config file: `GET` its health path.
    Get(String),
}

/// One service under load and what the callers observed.
struct Target {
    service: String,
    workload: Workload,
    ops: AtomicU64,
    failed: AtomicU64,
    /// Error message → count (messages carry no ids, so they group).
    errors: Mutex<BTreeMap<String, u64>>,
}

type Op = Result<(), String>;

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    logging::init("warn");
    match run(&args) {
        Ok(0) => {}
        Ok(failed) => {
            eprintln!("{failed} operation(s) failed");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::exit(2);
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        threads: 120,
        seconds: 5.0,
        json: false,
        endpoints: 1,
        config: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--threads" => {
                args.threads = value("--threads")?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--threads takes a positive integer")?
            }
            "--seconds" => {
                args.seconds = value("--seconds")?
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or("--seconds takes a positive number")?
            }
            "--json" => args.json = true,
            "--endpoints" => {
                args.endpoints = value("--endpoints")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_ENDPOINTS).contains(n))
                    .ok_or(format!(
                        "--endpoints takes an integer from 1 to {MAX_ENDPOINTS}"
                    ))?
            }
            "--config" => args.config = Some(value("--config")?),
            "-h" | "--help" => return Err("load demo for backend-pool".into()),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    if args.config.is_some() && args.endpoints > 1 {
        return Err("--endpoints starts mock machines: the file's `urls` name real ones".into());
    }
    Ok(args)
}

/// Returns the number of failed operations.
fn run(args: &Args) -> Result<u64, String> {
    let (config, mocks) = match &args.config {
        Some(path) => (
            ManagerConfig::from_file(path).map_err(|e| e.chain().to_string())?,
            Vec::new(),
        ),
        None => start_mocks(args.endpoints),
    };
    let targets = pick_targets(&config, args.config.as_deref());
    if targets.is_empty() {
        return Err("no service to drive".into());
    }
    let manager = PoolManager::new(config).map_err(|e| e.chain().to_string())?;
    eprintln!(
        "driving {} service(s) with {} caller threads for {} s",
        targets.len(),
        args.threads,
        args.seconds
    );
    drive(
        &manager,
        &targets,
        args.threads,
        Duration::from_secs_f64(args.seconds),
    );

    let stats = manager.stats();
    if args.json {
        println!("{}", stats.to_json());
    } else {
        print_table(&stats, &targets, &mocks);
        print_errors(&targets);
    }
    match manager.shutdown(Duration::from_secs(5)) {
        Ok(report) => eprintln!(
            "shutdown: {} ms, maintenance thread joined: {}, still in use: {:?}",
            report.elapsed_ms, report.maintenance_joined, report.still_in_use
        ),
        Err(e) => eprintln!("shutdown failed: {}", e.chain()),
    }
    drop(mocks); // stops the servers after the pools have closed their connections
    Ok(targets.iter().map(|t| t.failed.load(Relaxed)).sum())
}

/// Starts the five mock servers (`machines` each of ComfyUI and LiteLLM) and a config
/// pointing the presets at them.
fn start_mocks(machines: usize) -> (ManagerConfig, Vec<(String, TestServer)>) {
    let mut mocks = Vec::new();
    for _ in 0..machines {
        mocks.push(("comfyui".to_string(), backends::comfyui()));
        mocks.push(("litellm".to_string(), backends::litellm(LITELLM_KEY)));
    }
    mocks.extend([
        ("wan2gp".to_string(), backends::gradio()),
        ("rvc".to_string(), backends::rvc()),
        ("upscaler".to_string(), backends::generic()),
    ]);
    let urls = |name: &str| -> Vec<String> {
        mocks
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, s)| s.http_url())
            .collect()
    };
    let url = |name: &str| urls(name).concat();
    // One machine: `url`; several: `urls` (and no `url`).
    let placed = |service: ServiceConfig| match urls(&service.name) {
        several if several.len() > 1 => ServiceConfig {
            url: String::new(),
            urls: Some(several),
            ..service
        },
        one => ServiceConfig {
            url: one.concat(),
            ..service
        },
    };
    let config = ManagerConfig::empty()
        .with_service(placed(ServiceConfig::comfyui()))
        .with_service(placed(ServiceConfig {
            bearer_token: Some(Secret::new(LITELLM_KEY)),
            ..ServiceConfig::litellm()
        }))
        .with_service(ServiceConfig {
            url: url("wan2gp"),
            ..ServiceConfig::wan2gp()
        })
        .with_service(ServiceConfig {
            url: url("rvc"),
            ..ServiceConfig::rvc()
        })
        .with_service(ServiceConfig {
            health_path: Some("/health".into()),
            ..ServiceConfig::new("upscaler", url("upscaler"))
        });
    (config, mocks)
}

/// One target per configured service; the five demo services missing from a file are noted.
fn pick_targets(config: &ManagerConfig, file: Option<&str>) -> Vec<Target> {
    if let Some(file) = file {
        for name in ["comfyui", "litellm", "wan2gp", "rvc", "upscaler"] {
            if !config.service.iter().any(|s| s.name == name) {
                eprintln!("note: service '{name}' is not in {file}: skipped");
            }
        }
    }
    let mut targets = Vec::new();
    for s in &config.service {
        let probe = || Workload::Get(s.health_path.clone().unwrap_or_else(|| "/".into()));
        let workload = match s.name.as_str() {
            _ if s.http.is_none() => {
                eprintln!("note: service '{}' has no HTTP pool: skipped", s.name);
                continue;
            }
            "comfyui" if s.websocket.is_some() => Workload::ComfyPrompt,
            "litellm" => Workload::ChatCompletion,
            "wan2gp" => Workload::GradioCall,
            "rvc" => Workload::RvcConvert,
            "upscaler" => Workload::Echo,
            _ => probe(),
        };
        targets.push(Target {
            service: s.name.clone(),
            workload,
            ops: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        });
    }
    targets
}

/// Runs `threads` callers (thread i drives target i mod n) until `duration` has passed,
/// printing one progress line a second.
fn drive(manager: &PoolManager, targets: &[Target], threads: usize, duration: Duration) {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..threads {
            let target = &targets[i % targets.len()];
            let stop = &stop;
            let spawned = std::thread::Builder::new()
                .name(format!("caller-{i}"))
                .stack_size(256 * 1024)
                .spawn_scoped(scope, move || caller(manager, target, i as u64, stop));
            if let Err(e) = spawned {
                eprintln!("could not start caller thread {i}: {e}");
                break;
            }
        }
        let mut last = (0u64, start);
        for second in 1u32.. {
            let tick = start + Duration::from_secs(u64::from(second));
            let end = start + duration;
            std::thread::sleep(tick.min(end).saturating_duration_since(Instant::now()));
            let requests = manager.stats().totals.requests;
            let errors: u64 = targets.iter().map(|t| t.failed.load(Relaxed)).sum();
            let now = Instant::now();
            let rate = (requests - last.0) as f64 / (now - last.1).as_secs_f64().max(1e-9);
            eprintln!(
                "[{:5.1} s] {requests:>8} requests, {errors} errors, {rate:>8.0} req/s",
                (now - start).as_secs_f64()
            );
            last = (requests, now);
            if now >= end {
                break;
            }
        }
        stop.store(true, Relaxed);
        eprintln!("time is up: waiting for the callers to finish their operation");
    });
}

fn caller(manager: &PoolManager, target: &Target, seed: u64, stop: &AtomicBool) {
    let mut n = seed << 32;
    while !stop.load(Relaxed) {
        n += 1;
        let result = match &target.workload {
            Workload::ComfyPrompt => comfy_prompt(manager, &target.service, n),
            Workload::ChatCompletion => chat(manager, &target.service, n, n % 3 == 0),
            Workload::GradioCall => gradio_call(manager, &target.service, n),
            Workload::RvcConvert => rvc_convert(manager, &target.service),
            Workload::Echo => echo(manager, &target.service, n),
            Workload::Get(path) => get(manager, &target.service, path),
        };
        target.ops.fetch_add(1, Relaxed);
        if let Err(message) = result {
            target.failed.fetch_add(1, Relaxed);
            let mut errors = target.errors.lock().unwrap_or_else(|e| e.into_inner());
            *errors.entry(message).or_insert(0) += 1;
            drop(errors);
            // Back off: an unavailable service fails fast, and spinning on it helps no one.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// ComfyUI: lease a WebSocket, queue a prompt for its client id, follow it to the end, in
/// one session: with several ComfyUI machines (`urls`), the prompt's events come only from
/// the machine that took it.
fn comfy_prompt(manager: &PoolManager, service: &str, n: u64) -> Op {
    let job = manager
        .session(service)
        .map_err(|e| e.chain().to_string())?;
    let mut ws = job.websocket().map_err(|e| e.chain().to_string())?;
    let client_id = ws.client_id().unwrap_or_default().to_string();
    let body = json!({
        "prompt": {"1": {"class_type": "KSampler", "inputs": {"seed": n, "steps": 2}}},
        "client_id": client_id,
        "extra_data": {"mock_step_seconds": 0.0},
    });
    let reply = job
        .http()
        .and_then(|http| http.post("/prompt").send_json(&body))
        .map_err(|e| e.chain().to_string())?;
    check_status("POST /prompt", reply.status())?;
    let reply: Value = reply.json().map_err(|e| e.chain().to_string())?;
    let prompt_id = reply["prompt_id"]
        .as_str()
        .ok_or("POST /prompt: no prompt_id")?;
    loop {
        let event: Value = ws.read_json().map_err(|e| e.chain().to_string())?;
        let data = &event["data"];
        if data["prompt_id"].as_str() != Some(prompt_id) {
            continue; // `status` broadcasts and the like
        }
        match event["type"].as_str() {
            Some("executing") if data["node"].is_null() => {
                ws.finish(); // the prompt is over: the socket can serve the next lease
                return Ok(());
            }
            Some(kind @ ("execution_error" | "execution_interrupted")) => {
                return Err(format!("ComfyUI prompt ended with {kind}"))
            }
            _ => {}
        }
    }
}

/// LiteLLM: a chat completion, read whole or streamed to `[DONE]`.
fn chat(manager: &PoolManager, service: &str, n: u64, stream: bool) -> Op {
    let body = json!({
        "model": "mock-gpt",
        "messages": [{"role": "user", "content": format!("hello #{n}")}],
        "stream": stream,
    });
    if !stream {
        let reply: Value = post_json(manager, service, "/v1/chat/completions", &body)?;
        return match reply["choices"][0]["message"]["content"].as_str() {
            Some(_) => Ok(()),
            None => Err("chat completion without choices[0].message.content".into()),
        };
    }
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let mut sse = http(manager, service)?
        .post("/v1/chat/completions")
        .header("Content-Type", "application/json")
        .stream(&bytes)
        .map_err(|e| e.chain().to_string())?;
    check_status("streamed chat completion", sse.status())?;
    read_sse(&mut sse, |_, data| data == "[DONE]")
}

/// Gradio (Wan2GP): `POST /gradio_api/call/generate`, then its SSE result to `complete`.
fn gradio_call(manager: &PoolManager, service: &str, n: u64) -> Op {
    // [prompt, steps, step_seconds]: what the Wan2GP stand-in in tests/backends expects.
    let body = json!({"data": [format!("a fox #{n}"), 2, 0.0]});
    let reply: Value = post_json(manager, service, "/gradio_api/call/generate", &body)?;
    let id = reply["event_id"]
        .as_str()
        .ok_or("Gradio call: no event_id")?;
    let mut sse = http(manager, service)?
        .get(&format!("/gradio_api/call/generate/{id}"))
        .stream(&[])
        .map_err(|e| e.chain().to_string())?;
    check_status("Gradio result stream", sse.status())?;
    let mut failed = false;
    read_sse(&mut sse, |event, _| {
        failed = event == "error";
        event == "complete" || failed
    })?;
    if failed {
        return Err("Gradio result stream: event: error".into());
    }
    Ok(())
}

/// RVC: convert a 0.1 s WAV.
fn rvc_convert(manager: &PoolManager, service: &str) -> Op {
    thread_local! {
        static BODY: Value = json!({"audio_data": base64(&tone_wav())});
    }
    let body = BODY.with(Value::clone);
    let reply = http(manager, service)?
        .post("/convert")
        .send_json(&body)
        .map_err(|e| e.chain().to_string())?;
    check_status("POST /convert", reply.status())?;
    match reply.body().starts_with(b"RIFF") {
        true => Ok(()),
        false => Err("POST /convert: the reply is not a WAV".into()),
    }
}

/// The fifth service: `GET /echo?x=n` must answer `n`.
fn echo(manager: &PoolManager, service: &str, n: u64) -> Op {
    let reply = http(manager, service)?
        .get(&format!("/echo?x={n}"))
        .call()
        .map_err(|e| e.chain().to_string())?;
    check_status("GET /echo", reply.status())?;
    match reply.text() == n.to_string() {
        true => Ok(()),
        false => Err("GET /echo: wrong echo".into()),
    }
}

fn get(manager: &PoolManager, service: &str, path: &str) -> Op {
    let reply = http(manager, service)?
        .get(path)
        .call()
        .map_err(|e| e.chain().to_string())?;
    check_status(&format!("GET {path}"), reply.status())
}

fn http(manager: &PoolManager, service: &str) -> Result<backend_pool::HttpClient, String> {
    manager.http(service).map_err(|e| e.chain().to_string())
}

fn post_json(
    manager: &PoolManager,
    service: &str,
    path: &str,
    body: &Value,
) -> Result<Value, String> {
    let reply = http(manager, service)?
        .post(path)
        .send_json(body)
        .map_err(|e| e.chain().to_string())?;
    check_status(&format!("POST {path}"), reply.status())?;
    reply.json().map_err(|e| e.chain().to_string())
}

fn check_status(what: &str, status: u16) -> Op {
    match status {
        200..=299 => Ok(()),
        _ => Err(format!("{what}: HTTP {status}")),
    }
}

/// Reads server-sent events until `done(event, data)` holds, then drains the body to its end
/// (a body dropped early closes the connection instead of returning it to the pool).
fn read_sse(body: &mut StreamingResponse, mut done: impl FnMut(&str, &str) -> bool) -> Op {
    for event in body.events() {
        let event = event.map_err(|e| format!("reading SSE: {}", ErrorChain::new(&e)))?;
        if done(&event.event, &event.data) {
            return io::copy(&mut body.take(1 << 20), &mut io::sink())
                .map(drop)
                .map_err(|e| format!("draining SSE: {e}"));
        }
    }
    Err("SSE stream ended before its last event".into())
}

/// A 0.1 s, 16 kHz mono 16-bit WAV (a 440 Hz-ish triangle wave).
fn tone_wav() -> Vec<u8> {
    let samples: Vec<i16> = (0..1600i32)
        .map(|i| ((i * 36) % 1440 - 720).abs() as i16 * 20 - 7200)
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::with_capacity(44 + data_len as usize);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    for (value, size) in [
        (16, 4),
        (1, 2),
        (1, 2),
        (16_000, 4),
        (32_000, 4),
        (2, 2),
        (16, 2),
    ] {
        w.extend_from_slice(&u32::to_le_bytes(value)[..size]);
    }
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    samples
        .iter()
        .for_each(|s| w.extend_from_slice(&s.to_le_bytes()));
    w
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = b(0) << 16 | b(1) << 8 | b(2);
        for i in 0..4 {
            match i <= chunk.len() {
                true => out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char),
                false => out.push('='),
            }
        }
    }
    out
}

fn print_table(stats: &ManagerStats, targets: &[Target], mocks: &[(String, TestServer)]) {
    println!(
        "{:<10} {:<9} {:>8} {:>9} {:>7} {:>7} {:>9} {:>9} {:>6} {:<9} {:>7}",
        "service",
        "pool",
        "ops",
        "requests",
        "opened",
        "reuse%",
        "p50 µs",
        "p99 µs",
        "errors",
        "health",
        "server"
    );
    for s in &stats.services {
        let ops = targets
            .iter()
            .find(|t| t.service == s.name)
            .map_or("-".to_string(), |t| t.ops.load(Relaxed).to_string());
        let servers: Vec<&TestServer> = mocks
            .iter()
            .filter(|(n, _)| *n == s.name)
            .map(|(_, m)| m)
            .collect();
        let pools = s
            .http
            .iter()
            .map(|p| (p, "http"))
            .chain(s.websocket.iter().map(|p| (p, "websocket")));
        for (i, (p, kind)) in pools.enumerate() {
            // The server counts every TCP connection; WebSocket ones separately.
            let accepted = if servers.is_empty() {
                "-".to_string()
            } else {
                servers
                    .iter()
                    .map(|m| accepted(m, kind))
                    .sum::<usize>()
                    .to_string()
            };
            print_row(
                &s.name,
                kind,
                if i == 0 { &ops } else { "" },
                p,
                &format!("{:?}", s.health.state),
                &accepted,
            );
        }
        // Several endpoints (`urls`): each one's own pools below the service's sums.
        for (e, endpoint) in s.endpoints.iter().enumerate() {
            let pools = endpoint
                .http
                .iter()
                .map(|p| (p, "http"))
                .chain(endpoint.websocket.iter().map(|p| (p, "websocket")));
            let mock = servers.iter().find(|m| m.http_url() == endpoint.url);
            for (p, kind) in pools {
                print_row(
                    &format!(" #{e}"),
                    kind,
                    "",
                    p,
                    &format!("{:?}", endpoint.health.state),
                    &mock.map_or(endpoint.url.clone(), |m| accepted(m, kind).to_string()),
                );
            }
        }
    }
    let t = &stats.totals;
    println!(
        "{:<10} {:<9} {:>8} {:>9} {:>7} {:>7.2} {:>9} {:>9} {:>6}",
        "total",
        "",
        targets.iter().map(|t| t.ops.load(Relaxed)).sum::<u64>(),
        t.requests,
        t.connections_created,
        t.reuse_rate * 100.0,
        "",
        "",
        t.errors
    );
    if !mocks.is_empty() {
        println!("(opened: connections the pools opened; server: connections the mock accepted)");
    }
    if stats.services.iter().any(|s| !s.endpoints.is_empty()) {
        println!("(#n: endpoint n of a service with several urls, its own figures and server)");
    }
}

/// The connections mock `m` accepted for a pool of `kind`: the server counts every TCP
/// connection, WebSocket ones also apart.
fn accepted(m: &TestServer, kind: &str) -> usize {
    match kind {
        "http" => m.accepted() - m.ws_accepted(),
        _ => m.ws_accepted(),
    }
}

fn print_row(service: &str, kind: &str, ops: &str, p: &PoolStats, health: &str, server: &str) {
    println!(
        "{:<10} {:<9} {:>8} {:>9} {:>7} {:>7.2} {:>9.1} {:>9.1} {:>6} {:<9} {:>7}",
        service,
        kind,
        ops,
        // A WebSocket pool sends no requests: its reuse counts checkouts.
        p.requests.map_or("-".to_string(), |n| n.to_string()),
        p.connections_created,
        p.reuse_rate() * 100.0,
        p.acquire_time.p50_us,
        p.acquire_time.p99_us,
        p.errors.total(),
        health.to_lowercase(),
        server
    );
}

fn print_errors(targets: &[Target]) {
    for t in targets {
        let errors = t.errors.lock().unwrap_or_else(|e| e.into_inner());
        for (message, count) in errors.iter() {
            println!("error  {:<10} {count:>6} × {message}", t.service);
        }
    }
}
