//! Configuration: plain serde structs with defaults, validated once.
//!
//! A [`ManagerConfig`] lists services; each [`ServiceConfig`] names a backend, its base URL and
//! the pools it has (an HTTP pool, a WebSocket pool, or both). Durations carry their unit in the
//! field name (`wait_timeout_ms`). Files are TOML or JSON; unknown keys are rejected with the key
//! and its line.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The whole manager's configuration: the services and the maintenance cadence.
///
/// `ManagerConfig::default()` holds the four known backends (ComfyUI, LiteLLM, Wan2GP, RVC) on
/// their usual loopback ports.
///
/// ```
/// use backend_pool::ManagerConfig;
///
/// let config = ManagerConfig::from_toml_str(r#"
///     [[service]]
///     name = "llm"
///     url = "http://127.0.0.1:4000"
///     health_path = "/health/liveliness"
///     [service.http]
///     max_connections = 20
/// "#)?;
/// assert_eq!(config.service[0].http.as_ref().unwrap().max_connections, 20);
/// assert_eq!(config.service[0].wait_timeout_ms, 30_000);
/// # Ok::<(), backend_pool::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerConfig {
    /// How often the maintenance thread wakes (health checks are due on their own interval;
    /// eviction, leak detection and refills run every tick). Defaults to 1000 ms.
    pub maintenance_interval_ms: u64,
    /// The services, in the order they are reported. Defaults to the four known backends.
    pub service: Vec<ServiceConfig>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            maintenance_interval_ms: 1000,
            service: vec![
                ServiceConfig::comfyui(),
                ServiceConfig::litellm(),
                ServiceConfig::wan2gp(),
                ServiceConfig::rvc(),
            ],
        }
    }
}

impl ManagerConfig {
    /// A configuration with no services, to build up in code.
    pub fn empty() -> Self {
        ManagerConfig {
            service: Vec::new(),
            ..ManagerConfig::default()
        }
    }

    /// Adds a service (builder style).
    pub fn with_service(mut self, service: ServiceConfig) -> Self {
        self.service.push(service);
        self
    }

    /// Reads a TOML (`.toml`) or JSON (`.json`) file and validates it.
    ///
    /// # Errors
    /// [`ConfigError::Io`] if the file cannot be read, [`ConfigError::Parse`] with the line and
    /// key for a syntax error or an unknown key, or any validation error.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Self::from_json_str(&text),
            _ => Self::from_toml_str(&text),
        }
    }

    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] (with line and column) or a validation error.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: ManagerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            format: "TOML",
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates JSON text.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] (with line and column) or a validation error.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let config: ManagerConfig = serde_json::from_str(text).map_err(|e| ConfigError::Parse {
            format: "JSON",
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule a file cannot express: sizes, URLs, schemes, duplicate names.
    ///
    /// # Errors
    /// The first [`ConfigError`] found, naming the service and the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_DURATION_MS).contains(&self.maintenance_interval_ms) {
            return Err(ConfigError::invalid(
                "(manager)",
                "maintenance_interval_ms",
                "must be 1 ms to 7 days",
            ));
        }
        let mut seen = HashSet::new();
        for service in &self.service {
            service.validate()?;
            if !seen.insert(service.name.as_str()) {
                return Err(ConfigError::DuplicateService(service.name.clone()));
            }
        }
        Ok(())
    }

    /// The maintenance tick as a [`Duration`].
    pub fn maintenance_interval(&self) -> Duration {
        Duration::from_millis(self.maintenance_interval_ms)
    }
}

/// One backend service: where it is, which pools it has, its limits and timeouts by phase.
///
/// Every field but `name` and `url` has a default, so a file needs only what differs.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// The name callers use (`manager.http("litellm")`). Required; letters, digits, `-`, `_`.
    pub name: String,
    /// Base URL, `http://` or `https://`, e.g. `http://127.0.0.1:8188`. Required. The WebSocket
    /// pool derives its `ws://` / `wss://` URL from it.
    pub url: String,
    /// The HTTP pool; absent means the service has none. Defaults to an HTTP pool with
    /// [`HttpPoolConfig::default`].
    pub http: Option<HttpPoolConfig>,
    /// The WebSocket pool; absent means the service has none. Defaults to none.
    pub websocket: Option<WsPoolConfig>,
    /// Path probed by the health check with `GET` (`HEAD` for `/`). `None` probes nothing and
    /// relies on request outcomes. Defaults to none.
    pub health_path: Option<String>,
    /// Interval between health checks. Defaults to 60 000 ms.
    pub health_interval_ms: u64,
    /// Deadline for one health probe. Defaults to 2000 ms.
    pub health_timeout_ms: u64,
    /// Consecutive failures after which the service is unhealthy and acquisitions fail fast.
    /// Defaults to 3.
    pub unhealthy_after: u32,
    /// Waiting for a pooled connection (the connection timeout). Defaults to 30 000 ms.
    pub wait_timeout_ms: u64,
    /// Connecting: TCP + TLS + WebSocket handshake. Defaults to 10 000 ms.
    pub connect_timeout_ms: u64,
    /// Sending a request and receiving the response head. Defaults to 60 000 ms.
    pub request_timeout_ms: u64,
    /// The longest silence while reading a body or a WebSocket (streams may run for minutes as
    /// long as bytes keep coming). Defaults to 60 000 ms.
    pub read_idle_timeout_ms: u64,
    /// An idle pooled connection beyond `min_connections` is closed after this. Defaults to
    /// 300 000 ms.
    pub idle_timeout_ms: u64,
    /// A connection is closed after this age (minus up to 2.5 % jitter) once it is idle.
    /// Defaults to 1 800 000 ms.
    pub max_lifetime_ms: u64,
    /// A connection held longer than this is reported as a possible leak. Defaults to
    /// 300 000 ms.
    pub leak_threshold_ms: u64,
    /// Bearer token sent as `Authorization: Bearer …` on every HTTP request. A secret: never
    /// logged, printed or serialised. Defaults to none.
    pub bearer_token: Option<Secret>,
    /// Environment variable holding the bearer token, read when the manager starts (used when
    /// `bearer_token` is unset). Defaults to none.
    pub bearer_token_env: Option<String>,
    /// Extra headers sent on every HTTP request and WebSocket handshake. Defaults to none.
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are secrets (API keys): sent like `headers`, redacted everywhere
    /// else. Defaults to none.
    pub secret_headers: BTreeMap<String, Secret>,
    /// PEM file with the root certificates trusted for `https` / `wss`, instead of the
    /// webpki roots (for a self-signed or private CA). Defaults to none (the webpki roots).
    pub ca_file: Option<String>,
}

/// Settings of a service's HTTP pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpPoolConfig {
    /// Cap on concurrent TCP connections to the service. Defaults to 10.
    pub max_connections: u32,
    /// Idle connections idle eviction keeps (TCP connections open on first use; uvicorn
    /// would close a pre-opened one after 5 s anyway). Defaults to 2.
    pub min_connections: u32,
    /// A keep-alive connection idle longer than this is not reused. Keep it under the server's
    /// keep-alive (uvicorn: 5 s). Defaults to 4000 ms.
    pub keepalive_idle_ms: u64,
    /// Largest response body read into memory; larger bodies need the streaming API.
    /// Defaults to 67 108 864 (64 MiB).
    pub max_body_bytes: u64,
    /// Read buffer per connection, 256 B to 16 MiB. It grows only while a response head longer
    /// than it arrives (up to `max_header_bytes`), then shrinks back. Defaults to 8192.
    pub input_buffer_bytes: usize,
    /// Write buffer per connection, 256 B to 16 MiB; the request line and each header line
    /// must fit in it. Defaults to 4096.
    pub output_buffer_bytes: usize,
    /// Largest response head accepted, 256 B to 16 MiB (a larger one, or one of more than 128
    /// header lines, is `too_large`). Defaults to 65 536.
    pub max_header_bytes: usize,
    /// Cap on connections held by streaming responses (`RequestBuilder::stream`: SSE, queued
    /// Gradio jobs, big downloads), so short calls always find capacity. `None` keeps a fifth
    /// of `max_connections` (rounded up) for short calls, at least one stream allowed: 8 of 10,
    /// 16 of 20, 1 of 1. Defaults to none.
    pub max_stream_connections: Option<u32>,
}

impl HttpPoolConfig {
    /// The stream cap in effect: `max_stream_connections`, or `max_connections` less a fifth
    /// (rounded up), at least 1.
    pub fn stream_cap(&self) -> u32 {
        let max = self.max_connections;
        self.max_stream_connections
            .unwrap_or_else(|| max.saturating_sub(max.div_ceil(5)))
            .clamp(1, max.max(1))
    }
}

impl Default for HttpPoolConfig {
    fn default() -> Self {
        HttpPoolConfig {
            max_connections: 10,
            min_connections: 2,
            keepalive_idle_ms: 4000,
            max_body_bytes: 64 << 20,
            input_buffer_bytes: 8 * 1024,
            output_buffer_bytes: 4 * 1024,
            max_header_bytes: 64 * 1024,
            max_stream_connections: None,
        }
    }
}

/// Settings of a service's WebSocket pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsPoolConfig {
    /// Path of the WebSocket endpoint. Defaults to `/ws`.
    pub path: String,
    /// Query parameter carrying a per-socket client id (ComfyUI: `clientId`); each pooled
    /// socket gets its own id. Defaults to none.
    pub client_id_param: Option<String>,
    /// Cap on open sockets. Defaults to 10.
    pub max_connections: u32,
    /// Sockets the maintenance thread keeps open. Defaults to 2.
    pub min_connections: u32,
    /// Deadline for the pong answering a health ping. Defaults to 5000 ms.
    pub pong_timeout_ms: u64,
    /// Largest message accepted. Defaults to 67 108 864 (64 MiB).
    pub max_message_bytes: usize,
    /// Largest frame accepted (ComfyUI's full-size PNG previews exceed 16 MiB). Defaults to
    /// 67 108 864.
    pub max_frame_bytes: usize,
    /// Read buffer per socket. Defaults to 4096.
    pub read_buffer_bytes: usize,
    /// Write buffer per socket (0 writes every message at once). Defaults to 0.
    pub write_buffer_bytes: usize,
}

impl Default for WsPoolConfig {
    fn default() -> Self {
        WsPoolConfig {
            path: "/ws".into(),
            client_id_param: None,
            max_connections: 10,
            min_connections: 2,
            pong_timeout_ms: 5000,
            max_message_bytes: 64 << 20,
            max_frame_bytes: 64 << 20,
            read_buffer_bytes: 4096,
            write_buffer_bytes: 0,
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            name: String::new(),
            url: String::new(),
            http: Some(HttpPoolConfig::default()),
            websocket: None,
            health_path: None,
            health_interval_ms: 60_000,
            health_timeout_ms: 2000,
            unhealthy_after: 3,
            wait_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            request_timeout_ms: 60_000,
            read_idle_timeout_ms: 60_000,
            idle_timeout_ms: 300_000,
            max_lifetime_ms: 1_800_000,
            leak_threshold_ms: 300_000,
            bearer_token: None,
            bearer_token_env: None,
            headers: BTreeMap::new(),
            secret_headers: BTreeMap::new(),
            ca_file: None,
        }
    }
}

impl ServiceConfig {
    /// A service with an HTTP pool and every other setting at its default.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        ServiceConfig {
            name: name.into(),
            url: url.into(),
            ..ServiceConfig::default()
        }
    }

    /// ComfyUI on 127.0.0.1:8188: HTTP API plus the `/ws?clientId=` progress stream
    /// (WebSocket pool max 5 / min 1), health `GET /prompt` every 30 s.
    pub fn comfyui() -> Self {
        ServiceConfig {
            health_path: Some("/prompt".into()),
            health_interval_ms: 30_000,
            websocket: Some(WsPoolConfig {
                client_id_param: Some("clientId".into()),
                max_connections: 5,
                min_connections: 1,
                ..WsPoolConfig::default()
            }),
            ..ServiceConfig::new("comfyui", "http://127.0.0.1:8188")
        }
    }

    /// LiteLLM proxy on 127.0.0.1:4000: max 20 / min 5, bearer key from `LITELLM_MASTER_KEY`,
    /// health `GET /health/liveliness` (never `/health`, which calls every model).
    pub fn litellm() -> Self {
        ServiceConfig {
            http: Some(HttpPoolConfig {
                max_connections: 20,
                min_connections: 5,
                ..HttpPoolConfig::default()
            }),
            health_path: Some("/health/liveliness".into()),
            bearer_token_env: Some("LITELLM_MASTER_KEY".into()),
            ..ServiceConfig::new("litellm", "http://127.0.0.1:4000")
        }
    }

    /// Wan2GP (a Gradio app) on 127.0.0.1:7860: max 10 / min 2, wait timeout 60 s, health
    /// `HEAD /`, a read-idle timeout above Gradio's 15 s SSE heartbeat.
    pub fn wan2gp() -> Self {
        ServiceConfig {
            health_path: Some("/".into()),
            wait_timeout_ms: 60_000,
            read_idle_timeout_ms: 120_000,
            ..ServiceConfig::new("wan2gp", "http://127.0.0.1:7860")
        }
    }

    /// RVC voice conversion (rvc-python API) on 127.0.0.1:5050, health `GET /models`.
    pub fn rvc() -> Self {
        ServiceConfig {
            health_path: Some("/models".into()),
            ..ServiceConfig::new("rvc", "http://127.0.0.1:5050")
        }
    }

    /// Checks this service's settings.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the service and the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = self.name.as_str();
        let invalid = |field: &str, why: &str| Err(ConfigError::invalid(name, field, why));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::invalid(
                if name.is_empty() { "(unnamed)" } else { name },
                "name",
                "must be non-empty and use only letters, digits, '-' and '_'",
            ));
        }
        Endpoint::parse(&self.url).map_err(|why| ConfigError::invalid(name, "url", &why))?;
        if self.http.is_none() && self.websocket.is_none() {
            return invalid(
                "http",
                "a service needs an HTTP pool, a WebSocket pool or both",
            );
        }
        if let Some(http) = &self.http {
            check_sizes(name, "http", http.max_connections, http.min_connections)?;
            if !(1..=MAX_DURATION_MS).contains(&http.keepalive_idle_ms) {
                return invalid("http.keepalive_idle_ms", "must be 1 ms to 7 days");
            }
            if let Some(n) = http.max_stream_connections {
                if n == 0 || n > http.max_connections {
                    return invalid(
                        "http.max_stream_connections",
                        &format!("must be 1 to max_connections ({})", http.max_connections),
                    );
                }
            }
            if http.max_body_bytes == 0 {
                return invalid("http.max_body_bytes", "must be > 0");
            }
            for (field, value) in [
                ("http.input_buffer_bytes", http.input_buffer_bytes),
                ("http.output_buffer_bytes", http.output_buffer_bytes),
                ("http.max_header_bytes", http.max_header_bytes),
            ] {
                if !(256..=16 << 20).contains(&value) {
                    return invalid(field, "must be 256 bytes to 16 MiB");
                }
            }
        }
        if let Some(ws) = &self.websocket {
            check_sizes(name, "websocket", ws.max_connections, ws.min_connections)?;
            if !(1..=MAX_DURATION_MS).contains(&ws.pong_timeout_ms) {
                return invalid("websocket.pong_timeout_ms", "must be 1 ms to 7 days");
            }
            if !ws.path.starts_with('/') {
                return invalid("websocket.path", "must start with '/'");
            }
            if ws.max_frame_bytes == 0 || ws.max_message_bytes < ws.max_frame_bytes {
                return invalid(
                    "websocket.max_frame_bytes",
                    "must be > 0 and not above max_message_bytes",
                );
            }
        }
        if let Some(path) = &self.health_path {
            crate::http::validate::check_path(path)
                .map_err(|why| ConfigError::invalid(name, "health_path", &why))?;
        }
        for (field, value) in [
            ("health_interval_ms", self.health_interval_ms),
            ("health_timeout_ms", self.health_timeout_ms),
            ("wait_timeout_ms", self.wait_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("read_idle_timeout_ms", self.read_idle_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("max_lifetime_ms", self.max_lifetime_ms),
            ("leak_threshold_ms", self.leak_threshold_ms),
        ] {
            if value == 0 {
                return invalid(field, "must be at least 1 ms");
            }
            if value > MAX_DURATION_MS {
                return invalid(field, "must be at most 604800000 ms (7 days)");
            }
        }
        if self.unhealthy_after == 0 {
            return invalid("unhealthy_after", "must be at least 1");
        }
        // Sent on every request: checked here once (values unquoted: they may be secrets).
        let plain = self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let secret = self
            .secret_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()));
        for (header, value) in plain.chain(secret) {
            crate::http::validate::check_header(header, value)
                .map_err(|why| ConfigError::invalid(name, "headers", &why))?;
        }
        if let Some(token) = &self.bearer_token {
            crate::http::validate::check_header("Authorization", token.expose())
                .map_err(|why| ConfigError::invalid(name, "bearer_token", &why))?;
        }
        Ok(())
    }

    /// The bearer token: `bearer_token`, else the variable named by `bearer_token_env`.
    pub(crate) fn resolved_bearer(&self) -> Option<Secret> {
        self.bearer_token.clone().or_else(|| {
            let var = self.bearer_token_env.as_deref()?;
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret)
        })
    }
}

/// The longest duration a setting may hold (7 days): deadlines stay far from overflow.
const MAX_DURATION_MS: u64 = 7 * 24 * 3600 * 1000;

fn check_sizes(service: &str, pool: &str, max: u32, min: u32) -> Result<(), ConfigError> {
    if max == 0 {
        return Err(ConfigError::invalid(
            service,
            &format!("{pool}.max_connections"),
            "must be at least 1",
        ));
    }
    if min > max {
        return Err(ConfigError::invalid(
            service,
            &format!("{pool}.min_connections"),
            &format!("{min} is above max_connections ({max})"),
        ));
    }
    Ok(())
}

impl fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("http", &self.http)
            .field("websocket", &self.websocket)
            .field("health_path", &self.health_path)
            .field("bearer_token", &self.bearer_token)
            .field("bearer_token_env", &self.bearer_token_env)
            .field("headers", &self.headers)
            .field("secret_headers", &self.secret_headers)
            .finish_non_exhaustive()
    }
}

/// A secret string (API key, token): `Debug` and `Display` print `<redacted>`, and it
/// serialises as `"<redacted>"`, so a config dump or a stats file cannot leak it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A parsed base URL: scheme, host and port (the path is kept as a prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl Endpoint {
    /// Parses `http(s)://host[:port][/prefix]`.
    pub(crate) fn parse(url: &str) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(format!(
                "'{url}' must start with http:// or https:// (the WebSocket URL is derived from it)"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') || path.contains(['?', '#']) {
            return Err(format!(
                "'{url}' must not carry credentials, a query or a fragment"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            match v6.split_once(']') {
                Some((h, p)) => (format!("[{h}]"), p.strip_prefix(':')),
                None => return Err(format!("'{url}' has an unclosed IPv6 bracket")),
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace()) {
            return Err(format!("'{url}' has no valid host"));
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("'{url}' has an invalid port '{p}'"))?,
        };
        Ok(Endpoint {
            tls,
            host,
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// `http(s)://host:port` followed by the prefix.
    pub(crate) fn http_base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}{}", self.host, self.port, self.prefix)
    }

    /// `ws(s)://host:port` followed by the prefix and `path`.
    pub(crate) fn ws_url(&self, path: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!(
            "{scheme}://{}:{}{}{path}",
            self.host, self.port, self.prefix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_cover_the_known_backends() {
        let config = ManagerConfig::default();
        config.validate().unwrap();
        let names: Vec<_> = config.service.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["comfyui", "litellm", "wan2gp", "rvc"]);
        let comfy = &config.service[0];
        let ws = comfy.websocket.as_ref().unwrap();
        assert_eq!((ws.max_connections, ws.min_connections), (5, 1));
        assert_eq!(comfy.health_interval_ms, 30_000);
        let llm = config.service[1].http.as_ref().unwrap();
        assert_eq!((llm.max_connections, llm.min_connections), (20, 5));
        assert_eq!(config.service[2].wait_timeout_ms, 60_000);
        assert_eq!(config.service[3].health_path.as_deref(), Some("/models"));
    }

    #[test]
    fn endpoint_parsing() {
        let e = Endpoint::parse("https://example.test/api/").unwrap();
        assert_eq!((e.tls, e.port, e.prefix.as_str()), (true, 443, "/api"));
        assert_eq!(e.ws_url("/ws"), "wss://example.test:443/api/ws");
        let e = Endpoint::parse("http://[::1]:8188").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("[::1]", 8188));
        for bad in [
            "ftp://x",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://u@h",
            "ws://h",
            "http://[::1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn secret_is_redacted_in_debug_and_serde() {
        let mut s = ServiceConfig::litellm();
        s.bearer_token = Some(Secret::new("sk-very-secret"));
        s.secret_headers
            .insert("X-Key".into(), Secret::new("hidden-value"));
        let debug = format!("{s:?}");
        let json = serde_json::to_string(&s).unwrap();
        for text in [debug, json] {
            assert!(!text.contains("sk-very-secret"), "{text}");
            assert!(!text.contains("hidden-value"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }
}
