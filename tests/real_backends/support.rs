//! Helpers for `tests/real_backends.rs`: the servers `tests/backends/start.sh` started (their
//! URLs from `BACKEND_*` variables), their access logs, killing and restarting one of them on
//! its port, a capturing `log` logger, fd and socket-queue counters, WAV bodies.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use backend_pool::{ManagerConfig, PoolManager, PoolStats, ServiceConfig};

/// A required environment variable. Missing means the servers were not started or the env
/// file not sourced: under `--ignored` that is a failure, never a skip.
pub fn required(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set. These tests run against the real servers: run \
             `tests/backends/start.sh`, then `source ${{BACKENDS_DIR:-/tmp/backend-pool-backends}}/env`, \
             then `cargo test --test real_backends -- --ignored --test-threads=1` \
             (or run .ci/real_backends.sh, which does all three)"
        ),
    }
}

/// One server of `tests/backends/` (`litellm`, `gradio`, `gradio2`, `comfyui`, `rvc`).
#[derive(Clone, Debug)]
pub struct Backend {
    /// The name `start.sh` / `restart.sh` use.
    pub server: &'static str,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its log file (access log lines with the client's port).
    pub log: PathBuf,
}

impl Backend {
    pub fn get(server: &'static str) -> Backend {
        let upper = server.to_ascii_uppercase();
        Backend {
            server,
            url: required(&format!("BACKEND_{upper}_URL")),
            log: PathBuf::from(required(&format!("BACKEND_{upper}_LOG"))),
        }
    }

    /// Remembers the log's current length: [`LogMark::entries`] then reads only what the
    /// server wrote after this moment.
    pub fn mark(&self) -> LogMark {
        LogMark::at(&self.log)
    }

    /// Kills the server (SIGKILL to its process group: a crash).
    pub fn kill(&self) {
        backends_script(self, "kill");
    }

    /// Starts the server again on the same port (no-op if it is up); returns once it answers
    /// its health check.
    pub fn start(&self) {
        backends_script(self, "start");
    }
}

pub fn litellm_key() -> String {
    required("BACKEND_LITELLM_KEY")
}

fn backends_script(backend: &Backend, action: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/backends/restart.sh");
    // start.sh puts every log in its BACKENDS_DIR: the log's directory is that directory.
    let dir = backend.log.parent().expect("log file has a directory");
    let out = Command::new(&script)
        .arg(backend.server)
        .arg(action)
        .env("BACKENDS_DIR", dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    if !out.status.success() {
        panic!(
            "{} {} {action} failed ({}):\n{}{}",
            script.display(),
            backend.server,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Restarts the servers it names when dropped (also while a failed test unwinds), so a fault
/// test never leaves a server down for the tests after it.
pub struct RestoreOnDrop(pub Vec<Backend>);

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        for b in &self.0 {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/backends/restart.sh");
            let dir = b.log.parent().map(Path::to_path_buf).unwrap_or_default();
            match Command::new(&script)
                .arg(b.server)
                .arg("start")
                .env("BACKENDS_DIR", dir)
                .output()
            {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "RestoreOnDrop: restarting {} failed: {}",
                    b.server,
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("RestoreOnDrop: cannot run {}: {e}", script.display()),
            }
        }
    }
}

/// One access-log line: `127.0.0.1:54321 - "GET /models HTTP/1.1" 200 …` (uvicorn and the
/// aiohttp server write the same shape).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub port: u16,
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl Access {
    /// Parses a line; `None` for anything else (startup banners, tracebacks).
    pub fn parse(line: &str) -> Option<Access> {
        let (client, rest) = line.split_once(" - \"")?;
        let addr = client.split_whitespace().last()?;
        let (ip, port) = addr.rsplit_once(':')?;
        if ip.split('.').count() != 4 || !ip.split('.').all(|o| o.parse::<u8>().is_ok()) {
            return None;
        }
        let port = port.parse().ok()?;
        let (request, after) = rest.split_once('"')?;
        let mut parts = request.split(' ');
        let method = parts.next()?.to_string();
        let path = parts.next()?.to_string();
        if parts.next()? != "HTTP/1.1" {
            return None;
        }
        let status = after.split_whitespace().next()?.parse().ok()?;
        Some(Access {
            port,
            method,
            path,
            status,
        })
    }
}

/// A position in a log file.
#[derive(Clone, Debug)]
pub struct LogMark {
    path: PathBuf,
    offset: u64,
}

impl LogMark {
    pub fn at(path: &Path) -> LogMark {
        let offset = std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()))
            .len();
        LogMark {
            path: path.to_path_buf(),
            offset,
        }
    }

    /// Complete lines written since the mark.
    pub fn text(&self) -> String {
        self.text_until(None)
    }

    fn text_until(&self, end: Option<&LogMark>) -> String {
        let mut f = File::open(&self.path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.path.display()));
        f.seek(SeekFrom::Start(self.offset)).unwrap();
        let mut bytes = Vec::new();
        match end {
            Some(end) => {
                f.take(end.offset.saturating_sub(self.offset))
                    .read_to_end(&mut bytes)
                    .unwrap();
            }
            None => {
                f.read_to_end(&mut bytes).unwrap();
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        match text.rfind('\n') {
            Some(i) => text[..=i].to_string(),
            None => String::new(),
        }
    }

    /// Access-log entries written since the mark.
    pub fn entries(&self) -> Vec<Access> {
        self.text().lines().filter_map(Access::parse).collect()
    }

    /// Access-log entries written between this mark and `end`.
    pub fn entries_until(&self, end: &LogMark) -> Vec<Access> {
        self.text_until(Some(end))
            .lines()
            .filter_map(Access::parse)
            .collect()
    }
}

/// Distinct client ports: one per TCP connection the server saw.
pub fn ports<'a>(entries: impl IntoIterator<Item = &'a Access>) -> BTreeSet<u16> {
    entries.into_iter().map(|a| a.port).collect()
}

/// HTTP entries only (aiohttp logs a WebSocket as `101` when it closes).
pub fn http_only(entries: &[Access]) -> Vec<Access> {
    entries
        .iter()
        .filter(|a| a.status != 101)
        .cloned()
        .collect()
}

/// Polls `cond` until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A service with timeouts that make a failure show within seconds, not minutes.
pub fn service(name: &str, url: &str) -> ServiceConfig {
    ServiceConfig {
        wait_timeout_ms: 10_000,
        connect_timeout_ms: 2_000,
        request_timeout_ms: 20_000,
        read_idle_timeout_ms: 20_000,
        health_timeout_ms: 2_000,
        ..ServiceConfig::new(name, url)
    }
}

pub fn with_http(mut s: ServiceConfig, max: u32, min: u32) -> ServiceConfig {
    let http = s.http.as_mut().expect("http pool");
    http.max_connections = max;
    http.min_connections = min;
    s
}

pub fn manager(interval_ms: u64, services: Vec<ServiceConfig>) -> PoolManager {
    PoolManager::new(ManagerConfig {
        maintenance_interval_ms: interval_ms,
        service: services,
    })
    .expect("valid config")
}

pub fn http_stats(m: &PoolManager, service: &str) -> PoolStats {
    m.stats()
        .service(service)
        .and_then(|s| s.http.clone())
        .unwrap_or_else(|| panic!("no HTTP pool for {service}"))
}

pub fn ws_stats(m: &PoolManager, service: &str) -> PoolStats {
    m.stats()
        .service(service)
        .and_then(|s| s.websocket.clone())
        .unwrap_or_else(|| panic!("no WebSocket pool for {service}"))
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Bytes waiting unread in the receive queue of the local TCP socket bound to `local_port`
/// (from /proc/net/tcp): what a server pushed that nobody read.
pub fn recv_queue(local_port: u16) -> Option<u64> {
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 {
                continue;
            }
            let port = f[1]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            // State 01 = ESTABLISHED.
            if port == Some(local_port) && f[3] == "01" {
                let rx = f[4].split_once(':')?.1;
                return u64::from_str_radix(rx, 16).ok();
            }
        }
    }
    None
}

/// This process's TCP sockets connected to 127.0.0.1:`remote_port` in CLOSE_WAIT: the server
/// closed them (its FIN arrived) and the client has not yet.
pub fn close_wait_to(remote_port: u16) -> usize {
    let own: BTreeSet<u64> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    let Ok(text) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    text.lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 9
                && f[2]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(remote_port)
                && f[3] == "08"
                && f[9].parse().is_ok_and(|inode: u64| own.contains(&inode))
        })
        .count()
}

/// The port of an `http://host:port` URL.
pub fn url_port(url: &str) -> u16 {
    url.rsplit_once(':')
        .and_then(|(_, p)| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// Every log record, from every crate, while capture is on.
pub struct Captured {
    records: Mutex<Vec<String>>,
}

impl Captured {
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.records.lock().unwrap())
    }
}

struct CaptureLogger(Arc<Captured>);

impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {} {}", record.level(), record.target(), record.args());
        self.0.records.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

/// Installs the capturing logger (once per process) and turns it on at `Trace`; call
/// `log::set_max_level(log::LevelFilter::Off)` when done.
pub fn capture_logs() -> Arc<Captured> {
    static CAPTURED: OnceLock<Arc<Captured>> = OnceLock::new();
    let captured = CAPTURED
        .get_or_init(|| {
            let c = Arc::new(Captured {
                records: Mutex::new(Vec::new()),
            });
            log::set_boxed_logger(Box::new(CaptureLogger(Arc::clone(&c))))
                .expect("no other logger in this test binary");
            c
        })
        .clone();
    captured.take();
    log::set_max_level(log::LevelFilter::Trace);
    captured
}

/// A 16-bit mono 16 kHz PCM WAV of `samples` samples.
pub fn wav(samples: usize) -> Vec<u8> {
    let data_len = (samples * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&16_000u32.to_le_bytes());
    out.extend_from_slice(&32_000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        // A saw wave of even values, so halving is exact.
        let s = ((i % 200) as i16 - 100) * 200;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A ComfyUI prompt: a sampler node with `steps` progress events and an output node.
pub fn comfy_prompt(client_id: &str, steps: u32, step_seconds: f64) -> serde_json::Value {
    serde_json::json!({
        "prompt": {
            "3": {"class_type": "KSampler", "inputs": {"steps": steps, "seed": 1}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0]}},
        },
        "client_id": client_id,
        "extra_data": {"mock_step_seconds": step_seconds},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_access_log_shapes() {
        let u = Access::parse(r#"INFO:     127.0.0.1:54321 - "GET /models HTTP/1.1" 200 OK"#);
        assert_eq!(
            u,
            Some(Access {
                port: 54321,
                method: "GET".into(),
                path: "/models".into(),
                status: 200
            })
        );
        let a = Access::parse(r#"127.0.0.1:40000 - "GET /ws?clientId=x HTTP/1.1" 101 0B 3.2s"#)
            .unwrap();
        assert_eq!(
            (a.port, a.status, a.path.as_str()),
            (40000, 101, "/ws?clientId=x")
        );
        assert!(Access::parse("INFO:     Application startup complete.").is_none());
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
    }
}
