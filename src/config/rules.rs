//! The rules a configuration must keep, checked once when it is loaded or a manager starts.
//!
//! Every size, count and duration has a bound well inside what the clients underneath can
//! take: r2d2 allocates `max_connections` idle slots up front, ureq asserts non-zero buffers
//! and keeps a whole response head in its read buffer and a whole request head in its write
//! buffer, tungstenite asserts its write buffer is below its cap and reserves a frame's
//! announced length before reading it. Every string that ends up in a request is checked for
//! what the request can carry.

use super::endpoint::{check_path, is_query_name, Endpoint};
use super::headers::{is_token, redacted_dump};
use super::presets::{unknown_preset, PRESETS};
use super::problem::{bad, Bad, Problem};
use super::service::REDACTED;
use super::{ManagerConfig, ServiceConfig};
use crate::error::ConfigError;

/// The longest duration a setting may hold (7 days): deadlines stay far from overflow.
pub(crate) const MAX_DURATION_MS: u64 = 7 * 24 * 3600 * 1000;
/// Cap on either pool's `max_connections`: room for 1000 concurrent callers and more, while
/// r2d2's up-front slot vector stays under a megabyte.
pub(crate) const MAX_CONNECTIONS: u32 = 4096;
/// Cap on `unhealthy_after`.
pub(crate) const MAX_UNHEALTHY_AFTER: u32 = 1000;
/// Cap on `max_body_bytes` (4 GiB).
pub(crate) const MAX_BODY_BYTES: u64 = 4 << 30;
/// Cap on per-connection buffers and the response head (16 MiB).
pub(crate) const MAX_BUFFER_BYTES: usize = 16 << 20;
/// Floor of the HTTP buffers and the response head limit: a head must fit.
pub(crate) const MIN_HTTP_BUFFER_BYTES: usize = 1024;
/// Cap on WebSocket message and frame sizes (1 GiB).
pub(crate) const MAX_MESSAGE_BYTES: usize = 1 << 30;

impl ManagerConfig {
    /// The first broken rule, with where it is.
    pub(crate) fn problem(&self) -> Result<(), Problem> {
        if let Err(reason) = duration(self.maintenance_interval_ms) {
            return Err(Problem {
                service: None,
                path: vec!["maintenance_interval_ms".into()],
                error: Box::new(ConfigError::invalid(
                    "(manager)",
                    "maintenance_interval_ms",
                    &reason,
                )),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for (i, service) in self.service.iter().enumerate() {
            service.check().map_err(|b| Problem {
                service: Some(i),
                path: b
                    .field
                    .split('.')
                    .map(str::to_string)
                    .chain(b.key.clone())
                    .collect(),
                error: Box::new(b.into_error(service)),
            })?;
            if !seen.insert(service.name.as_str()) {
                return Err(Problem {
                    service: Some(i),
                    path: vec!["name".into()],
                    error: Box::new(ConfigError::DuplicateService {
                        name: service.name.clone(),
                        at: None,
                    }),
                });
            }
        }
        Ok(())
    }
}

impl ServiceConfig {
    /// Checks this service's settings: every bound in the field docs, the URL and paths, the
    /// headers and token, the pools.
    ///
    /// ```
    /// use backend_pool::{ConfigError, ServiceConfig};
    ///
    /// let mut s = ServiceConfig::new("llm", "http://127.0.0.1:4000");
    /// s.http.as_mut().unwrap().max_connections = 100_000;
    /// match s.validate() {
    ///     Err(ConfigError::Invalid { field, reason, .. }) => {
    ///         assert_eq!(field, "http.max_connections");
    ///         assert!(reason.contains("1 to 4096"), "{reason}");
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError::Invalid`] naming the service and the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|b| b.into_error(self))
    }

    fn check(&self) -> Result<(), Bad> {
        let name = self.name.as_str();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(
                "name",
                "must be non-empty and use only letters, digits, '-' and '_'",
            ));
        }
        if let Some(preset) = &self.preset {
            if !PRESETS.contains(&preset.as_str()) {
                return Err(bad("preset", unknown_preset(preset)));
            }
        }
        let endpoint = self.check_urls()?;
        if self.http.is_none() && self.websocket.is_none() {
            return Err(bad(
                "http",
                "is off and there is no websocket: a service needs an HTTP pool, a WebSocket \
                 pool or both",
            ));
        }
        if let Some(http) = &self.http {
            count(
                "http.max_connections",
                http.max_connections,
                1,
                MAX_CONNECTIONS,
            )?;
            at_most_max(
                "http.min_connections",
                http.min_connections,
                0,
                http.max_connections,
            )?;
            if let Some(n) = http.max_stream_connections {
                at_most_max("http.max_stream_connections", n, 1, http.max_connections)?;
            }
            duration(http.keepalive_idle_ms).map_err(|r| bad("http.keepalive_idle_ms", r))?;
            size(
                "http.max_body_bytes",
                http.max_body_bytes,
                1,
                MAX_BODY_BYTES,
            )?;
            let (lo, hi) = (MIN_HTTP_BUFFER_BYTES as u64, MAX_BUFFER_BYTES as u64);
            size(
                "http.input_buffer_bytes",
                http.input_buffer_bytes as u64,
                lo,
                hi,
            )?;
            size(
                "http.output_buffer_bytes",
                http.output_buffer_bytes as u64,
                lo,
                hi,
            )?;
            size(
                "http.max_header_bytes",
                http.max_header_bytes as u64,
                lo,
                hi,
            )?;
            let bearer = self.bearer_token.as_ref().map(|t| t.expose().len());
            self.check_head_fits(http.output_buffer_bytes, bearer, "")?;
        }
        if let Some(ws) = &self.websocket {
            count(
                "websocket.max_connections",
                ws.max_connections,
                1,
                MAX_CONNECTIONS,
            )?;
            at_most_max(
                "websocket.min_connections",
                ws.min_connections,
                0,
                ws.max_connections,
            )?;
            duration(ws.pong_timeout_ms).map_err(|r| bad("websocket.pong_timeout_ms", r))?;
            check_path(&ws.path).map_err(|why| bad("websocket.path", why))?;
            if let Some(param) = &ws.client_id_param {
                if !is_query_name(param) {
                    return Err(bad(
                        "websocket.client_id_param",
                        format!(
                            "'{param}' must be a query name: letters, digits, '-', '.', '_', '~'"
                        ),
                    ));
                }
            }
            size(
                "websocket.max_message_bytes",
                ws.max_message_bytes as u64,
                1,
                MAX_MESSAGE_BYTES as u64,
            )?;
            if !(1..=ws.max_message_bytes).contains(&ws.max_frame_bytes) {
                return Err(bad(
                    "websocket.max_frame_bytes",
                    format!(
                        "must be 1 to max_message_bytes ({}), not {}",
                        ws.max_message_bytes, ws.max_frame_bytes
                    ),
                ));
            }
            let hi = MAX_BUFFER_BYTES as u64;
            size(
                "websocket.read_buffer_bytes",
                ws.read_buffer_bytes as u64,
                1,
                hi,
            )?;
            size(
                "websocket.write_buffer_bytes",
                ws.write_buffer_bytes as u64,
                0,
                hi,
            )?;
        }
        if let Some(path) = &self.health_path {
            check_path(path).map_err(|why| bad("health_path", why))?;
            if self.http.is_none() {
                return Err(bad(
                    "health_path",
                    "is probed through the HTTP pool and the service has none (a WebSocket-only \
                     service is checked with pings)",
                ));
            }
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
            duration(value).map_err(|r| bad(field, r))?;
        }
        count(
            "unhealthy_after",
            self.unhealthy_after,
            1,
            MAX_UNHEALTHY_AFTER,
        )?;
        if let Some(token) = &self.bearer_token {
            if token.expose().trim() == REDACTED {
                return Err(bad(
                    "bearer_token",
                    redacted_dump(
                        "supply the token again, in bearer_token or through bearer_token_env",
                    ),
                ));
            }
            if !is_token(token.expose()) {
                return Err(bad(
                    "bearer_token",
                    "must be non-empty visible ASCII without spaces or line breaks (the value \
                     is not shown)",
                ));
            }
        }
        if let Some(var) = &self.bearer_token_env {
            if var.is_empty() || !var.bytes().all(|b| b.is_ascii_graphic() && b != b'=') {
                // Not echoed: a "name" with `=` or a space is most likely the token itself.
                return Err(bad(
                    "bearer_token_env",
                    "is not an environment variable name: it is empty or holds '=', a space or \
                     a character other than visible ASCII (the value is not shown, in case it \
                     is the token itself, which goes in bearer_token)",
                ));
            }
        }
        self.check_headers()?;
        if let Some(ca) = &self.ca_file {
            if ca.is_empty() {
                return Err(bad("ca_file", "is empty"));
            }
            if !endpoint.tls {
                return Err(bad(
                    "ca_file",
                    "is set but the url is http://: it applies to https:// (and wss://) only",
                ));
            }
        }
        Ok(())
    }

    /// `url`, or every entry of `urls` (not both, not an empty list, no URL twice); the
    /// first endpoint, or the first without TLS (what `ca_file` is checked against).
    fn check_urls(&self) -> Result<Endpoint, Bad> {
        let Some(urls) = &self.urls else {
            return Endpoint::parse(&self.url).map_err(|why| bad("url", why));
        };
        if !self.url.is_empty() {
            return Err(bad(
                "urls",
                "is given with url: list every endpoint in urls, or give the one url",
            ));
        }
        if urls.is_empty() {
            return Err(bad(
                "urls",
                "is empty: list at least one base URL (or give url)",
            ));
        }
        let mut first: Option<Endpoint> = None;
        let mut seen: Vec<Endpoint> = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let field = format!("urls[{i}]");
            let endpoint = Endpoint::parse(url).map_err(|why| bad(&field, why))?;
            // Compared parsed: a trailing slash, a default port spelled out or a host in
            // capitals name the same machine (its calls would be counted as two).
            if let Some(j) = seen.iter().position(|e| e.same_as(&endpoint)) {
                return Err(bad(
                    &field,
                    format!("'{url}' is the same endpoint as urls[{j}]: list each endpoint once"),
                ));
            }
            if first.as_ref().map_or(true, |f| f.tls && !endpoint.tls) {
                first = Some(endpoint.clone());
            }
            seen.push(endpoint);
        }
        first.ok_or_else(|| bad("urls", "is empty"))
    }
}

/// A count within `lo..=hi`.
fn count(field: &str, value: u32, lo: u32, hi: u32) -> Result<(), Bad> {
    if (lo..=hi).contains(&value) {
        return Ok(());
    }
    Err(bad(field, format!("must be {lo} to {hi}, not {value}")))
}

/// A count from `lo` to the pool's `max_connections`.
fn at_most_max(field: &str, value: u32, lo: u32, max: u32) -> Result<(), Bad> {
    if (lo..=max).contains(&value) {
        return Ok(());
    }
    let why = if value > max {
        format!("({value}) is above max_connections ({max})")
    } else {
        format!("must be {lo} to max_connections ({max}), not {value}")
    };
    Err(bad(field, why))
}

/// A size in bytes within `lo..=hi`.
fn size(field: &str, value: u64, lo: u64, hi: u64) -> Result<(), Bad> {
    if (lo..=hi).contains(&value) {
        return Ok(());
    }
    Err(bad(
        field,
        format!("must be {lo} to {hi} bytes ({}), not {value}", human(hi)),
    ))
}

/// A duration in milliseconds: 1 ms to 7 days.
fn duration(value: u64) -> Result<(), String> {
    if (1..=MAX_DURATION_MS).contains(&value) {
        return Ok(());
    }
    Err(format!(
        "must be 1 to {MAX_DURATION_MS} ms (7 days), not {value}"
    ))
}

/// `1 GiB`, `16 MiB`, `64 KiB` or bytes, for a bound.
fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}
