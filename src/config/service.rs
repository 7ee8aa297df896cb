//! The per-service settings: [`ServiceConfig`] and its two pools, [`HttpPoolConfig`] and
//! [`WsPoolConfig`], with their defaults, and [`Secret`].

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// One backend service: where it is, which pools it has, its limits and timeouts by phase.
///
/// Every field but `name` and `url` has a default, so a file needs only what differs; with
/// `preset`, the preset's values are the defaults and `name` and `url` may be left out too.
/// The bounds each value must keep are in the field docs; [`ServiceConfig::validate`] checks
/// them.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// The name callers use (`manager.http("litellm")`). Required (unless a preset gives it);
    /// letters, digits, `-`, `_`.
    pub name: String,
    /// The preset this service starts from: `comfyui`, `litellm`, `wan2gp` or `rvc`. In a
    /// file or a dict (`preset = "comfyui"`), the preset's values are the defaults of every
    /// key the entry leaves out, nested tables included (`[service.websocket]
    /// max_connections = 3` keeps the preset's `client_id_param`). The preset constructors
    /// ([`ServiceConfig::comfyui`], …, [`ServiceConfig::from_preset`]) set it; on a struct
    /// built in code it is only a label. Defaults to none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Base URL, `http://` or `https://`, e.g. `http://127.0.0.1:8188`. Required (unless a
    /// preset gives it). The WebSocket pool derives its `ws://` / `wss://` URL from it. The
    /// host is an ASCII name (an internationalised name in its `xn--` form), an IPv4 address or
    /// a bracketed IPv6 address; no credentials, query or fragment; a path is kept as a prefix.
    pub url: String,
    /// Several base URLs for one service (machines serving the same backend), each in the
    /// form `url` takes; instead of `url`, never with it, and never empty. Each endpoint gets
    /// its own pools, health and statistics: stateless calls go to a healthy endpoint with
    /// the least work in flight (README, "Several endpoints per service"). Defaults to
    /// none (the service has the one `url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// The HTTP pool; `None` means the service has none. Defaults to an HTTP pool with
    /// [`HttpPoolConfig::default`]. In a file, `http = false` (JSON also `null`) says none and
    /// `http = true` the default pool.
    #[serde(with = "pool_switch")]
    pub http: Option<HttpPoolConfig>,
    /// The WebSocket pool; `None` means the service has none. Defaults to none. In a file,
    /// `websocket = true` (or an empty table) gives the default pool and `websocket = false`
    /// removes a preset's.
    #[serde(with = "pool_switch")]
    pub websocket: Option<WsPoolConfig>,
    /// Path probed by the health check with `GET` (`HEAD` for `/`): starts with `/`, may carry
    /// a query, and uses only the characters a URL path allows (`%`-encode the others). It
    /// needs the HTTP pool (a WebSocket-only service is checked with pings; a file that turns
    /// a preset's HTTP pool off drops the preset's health path with it). `None` probes nothing
    /// and relies on request outcomes. Defaults to none.
    pub health_path: Option<String>,
    /// Interval between health checks, 1 ms to 7 days. Defaults to 60 000 ms.
    pub health_interval_ms: u64,
    /// Deadline for one health probe, 1 ms to 7 days. Defaults to 2000 ms.
    pub health_timeout_ms: u64,
    /// Consecutive failures after which the service is unhealthy and acquisitions fail fast,
    /// 1 to 1000. Defaults to 3.
    pub unhealthy_after: u32,
    /// Waiting for a pooled connection (the connection timeout), 1 ms to 7 days. Defaults to
    /// 30 000 ms.
    pub wait_timeout_ms: u64,
    /// Connecting: TCP + TLS + WebSocket handshake, 1 ms to 7 days. Defaults to 10 000 ms.
    pub connect_timeout_ms: u64,
    /// Sending a request and receiving the response head, 1 ms to 7 days. Defaults to
    /// 60 000 ms.
    pub request_timeout_ms: u64,
    /// The longest silence while reading a body or a WebSocket (streams may run for minutes as
    /// long as bytes keep coming), 1 ms to 7 days. Defaults to 60 000 ms.
    pub read_idle_timeout_ms: u64,
    /// An idle pooled connection beyond `min_connections` is closed after this, 1 ms to 7
    /// days. Defaults to 300 000 ms.
    pub idle_timeout_ms: u64,
    /// A connection is closed after this age (minus up to 2.5 % jitter) once it is idle, 1 ms
    /// to 7 days. Defaults to 1 800 000 ms.
    pub max_lifetime_ms: u64,
    /// A connection held longer than this is reported as a possible leak, 1 ms to 7 days.
    /// Defaults to 300 000 ms.
    pub leak_threshold_ms: u64,
    /// Bearer token sent as `Authorization: Bearer …` on every HTTP request: visible ASCII,
    /// no spaces or line breaks. A secret: never logged, printed or serialised. Defaults to
    /// none.
    pub bearer_token: Option<Secret>,
    /// Environment variable holding the bearer token, read when the manager starts (used when
    /// `bearer_token` is unset; an unset or empty variable sends no token). A value a header
    /// cannot carry stops the manager with an error naming the variable, never the value.
    /// Defaults to none.
    pub bearer_token_env: Option<String>,
    /// Extra headers sent on every HTTP request and WebSocket handshake. Names are HTTP tokens
    /// (letters, digits, ``!#$%&'*+-.^_`|~``), each at most once ignoring case, and not one the
    /// pool sets itself (`Host`, `Connection`, `Content-Length`, `Transfer-Encoding`,
    /// `Upgrade`, `Sec-WebSocket-*`, …: the list a request is held to too, and `Authorization`
    /// when a bearer token is configured); values
    /// are visible ASCII, spaces and tabs. Defaults to none.
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are secrets (API keys): sent like `headers`, under the same rules,
    /// redacted everywhere else. Defaults to none.
    pub secret_headers: BTreeMap<String, Secret>,
    /// PEM file with the root certificates trusted for `https` / `wss`, instead of the
    /// webpki roots (for a self-signed or private CA); only for an `https://` URL. A relative
    /// path in a file is relative to that file's directory. Defaults to none (the webpki
    /// roots).
    pub ca_file: Option<String>,
}

/// Settings of a service's HTTP pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpPoolConfig {
    /// Cap on concurrent TCP connections to the service, 1 to 4096. Defaults to 10.
    pub max_connections: u32,
    /// Idle connections idle eviction keeps, 0 to `max_connections` (TCP connections open on
    /// first use; uvicorn would close a pre-opened one after 5 s anyway). Defaults to 2.
    pub min_connections: u32,
    /// A keep-alive connection idle longer than this is not reused, 1 ms to 7 days. Keep it
    /// under the server's keep-alive (uvicorn: 5 s). Defaults to 4000 ms.
    pub keepalive_idle_ms: u64,
    /// Largest response body read into memory, 1 byte to 4 GiB; larger bodies need the
    /// streaming API. Defaults to 67 108 864 (64 MiB).
    pub max_body_bytes: u64,
    /// Read buffer per connection, 1024 bytes to 16 MiB. It grows only while a response head
    /// longer than it arrives (up to `max_header_bytes`), then shrinks back. Defaults to 8192.
    pub input_buffer_bytes: usize,
    /// Write buffer per connection, 1024 bytes to 16 MiB. A request head is written into it
    /// whole, so it must hold the configured headers plus 256 bytes for the request line,
    /// `Host` and `User-Agent`. Defaults to 4096.
    pub output_buffer_bytes: usize,
    /// Largest response head accepted, 1024 bytes to 16 MiB (a larger one, or one of more than
    /// 128 header lines, is `too_large` and never resent). Defaults to 65 536.
    pub max_header_bytes: usize,
    /// Cap on connections held by streaming responses (`RequestBuilder::stream`: SSE, queued
    /// Gradio jobs, big downloads), so short calls always find capacity, 1 to
    /// `max_connections`. `None` keeps a fifth of `max_connections` (rounded up) for short
    /// calls, at least one stream allowed: 8 of 10, 16 of 20, 1 of 1. Defaults to none.
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
    /// Path of the WebSocket endpoint: starts with `/`, may carry a query, and uses only the
    /// characters a URL path allows. Defaults to `/ws`.
    pub path: String,
    /// Query parameter carrying a per-socket client id (ComfyUI: `clientId`); each pooled
    /// socket gets its own id. Letters, digits, `-`, `.`, `_`, `~`. Defaults to none.
    pub client_id_param: Option<String>,
    /// Cap on open sockets, 1 to 4096. Defaults to 10.
    pub max_connections: u32,
    /// Sockets the maintenance thread keeps open, 0 to `max_connections`. Defaults to 2.
    pub min_connections: u32,
    /// Deadline for the pong answering a health ping, 1 ms to 7 days. Defaults to 5000 ms.
    pub pong_timeout_ms: u64,
    /// Largest message accepted, 1 byte to 1 GiB. Defaults to 67 108 864 (64 MiB).
    pub max_message_bytes: usize,
    /// Largest frame accepted, 1 byte to `max_message_bytes` (ComfyUI's full-size PNG
    /// previews exceed 16 MiB). tungstenite reserves a frame's announced length before reading
    /// it, so this is also the memory one frame header can claim. Defaults to 67 108 864.
    pub max_frame_bytes: usize,
    /// Read buffer per socket, 1 byte to 16 MiB. Defaults to 4096.
    pub read_buffer_bytes: usize,
    /// Write buffer per socket, 0 to 16 MiB (0 writes every message at once). Defaults to 0.
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
            preset: None,
            url: String::new(),
            urls: None,
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

    /// The service's base URLs: `urls`, or the one `url`.
    pub(crate) fn endpoint_urls(&self) -> &[String] {
        match &self.urls {
            Some(urls) => urls,
            None => std::slice::from_ref(&self.url),
        }
    }
}

impl fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("name", &self.name)
            .field("preset", &self.preset)
            .field("url", &self.url)
            .field("urls", &self.urls)
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

/// A pool setting as a file writes it: a table, `true` (the default pool), `false` or `null`
/// (no pool). `None` is written as `false`, so a configuration written out reads back the same.
mod pool_switch {
    use super::*;

    pub(super) fn serialize<S: Serializer, T: Serialize>(
        pool: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match pool {
            Some(pool) => pool.serialize(s),
            None => s.serialize_bool(false),
        }
    }

    pub(super) fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        d.deserialize_any(Switch(PhantomData))
    }

    struct Switch<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for Switch<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table, true (the default pool) or false (no pool)")
        }

        fn visit_bool<E: de::Error>(self, on: bool) -> Result<Option<T>, E> {
            Ok(on.then(T::default))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
}

/// What a [`Secret`] prints and serialises as.
pub(crate) const REDACTED: &str = "<redacted>";

/// A secret string (API key, token): `Debug` and `Display` print `<redacted>`, and it
/// serialises as `"<redacted>"`, so a config dump or a stats file cannot leak it. A dump read
/// back is refused (a `bearer_token` or `secret_headers` value of `<redacted>` fails
/// validation), rather than sending `<redacted>` as the secret.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub(super) String);

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
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}
