//! Configuration: plain serde structs with defaults, loaded from TOML or JSON and validated once.
//!
//! A [`ManagerConfig`] lists services; each [`ServiceConfig`] names a backend, its base URL and
//! the pools it has (an HTTP pool, a WebSocket pool, or both). Durations carry their unit in the
//! field name (`wait_timeout_ms`). Every size, count and duration has a bound (in the field
//! docs and the README's tables), so no value reaches the clients underneath that could make
//! them panic or abort.
//!
//! Loading a text runs in four steps, each naming the line of what it rejects:
//! 1. parse into the typed structs (syntax, types and unknown keys: the parser's own line,
//!    its words without the values it quotes, [`redact`]);
//! 2. for entries with `preset = "…"`, overlay the entry's keys on the preset
//!    ([`presets`]);
//! 3. validate ([`rules`]); a broken rule is placed at its key's line ([`locate`]);
//! 4. check that a `ca_file` can be read (relative to the file's directory).
//!
//! * `service.rs`: the structs and their defaults; `presets.rs`: the known backends;
//!   `rules.rs`: the bounds; `endpoint.rs`: URLs and paths; `headers.rs`: headers and the
//!   bearer token; `problem.rs`: a broken rule and where it is, as every check reports it;
//!   `load.rs`: the four steps; `locate.rs`: lines and keys; `redact.rs`: parse messages without values.

mod endpoint;
mod headers;
mod load;
mod locate;
mod presets;
mod problem;
mod redact;
mod rules;
mod service;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
pub(crate) use endpoint::{check_path, quoted, Endpoint};
pub(crate) use headers::is_managed_header;
use load::{Format, Source};
use rules::MAX_DURATION_MS;
pub use service::{HttpPoolConfig, Secret, ServiceConfig, WsPoolConfig};

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
///
///     [[service]]
///     preset = "comfyui"               # the ComfyUI preset, on another port
///     url = "http://127.0.0.1:8189"
/// "#)?;
/// assert_eq!(config.service[0].http.as_ref().unwrap().max_connections, 20);
/// assert_eq!(config.service[0].wait_timeout_ms, 30_000);
/// let comfy = config.service[1].websocket.as_ref().unwrap();
/// assert_eq!(comfy.client_id_param.as_deref(), Some("clientId"));
/// # Ok::<(), backend_pool::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerConfig {
    /// How often the maintenance thread wakes (health checks are due on their own interval;
    /// eviction, leak detection and refills run every tick), 1 ms to 7 days. Defaults to
    /// 1000 ms.
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

    /// Reads a TOML (`.toml`) or JSON (`.json`) file and validates it. A relative `ca_file` is
    /// taken relative to the file's directory.
    ///
    /// # Errors
    /// [`ConfigError::Io`] if the file cannot be read; otherwise as
    /// [`ManagerConfig::from_toml_str`], with the file in the error's location.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            _ => Format::Toml,
        };
        Source {
            text: &text,
            format,
            file: Some(path),
        }
        .load()
    }

    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for a syntax error, a wrong type or an unknown key (at its line
    /// and column, naming the key and what was expected, never a value from the text: it may
    /// be a secret); [`ConfigError::Invalid`] or
    /// [`ConfigError::DuplicateService`] for a broken rule, located at the key's line (or its
    /// table's, when the key was left out); an unknown `preset` or an unreadable `ca_file`
    /// the same way.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Source {
            text,
            format: Format::Toml,
            file: None,
        }
        .load()
    }

    /// Parses and validates JSON text (what the Python bindings send for a dict).
    ///
    /// # Errors
    /// As [`ManagerConfig::from_toml_str`]; locations give the line and column in the text.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        Source {
            text,
            format: Format::Json,
            file: None,
        }
        .load()
    }

    /// Checks every rule a file cannot express: bounds, URLs, paths, headers, duplicate
    /// names (the rules are in the field docs).
    ///
    /// # Errors
    /// The first [`ConfigError`] found, naming the service and the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.problem().map_err(|p| *p.error)
    }

    /// The maintenance tick as a [`Duration`].
    pub fn maintenance_interval(&self) -> Duration {
        Duration::from_millis(self.maintenance_interval_ms.min(MAX_DURATION_MS))
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
        for name in presets::PRESETS {
            let s = ServiceConfig::from_preset(name).unwrap();
            assert_eq!((s.name.as_str(), s.preset.as_deref()), (name, Some(name)));
        }
    }

    #[test]
    fn the_default_config_reads_back_from_toml_and_json() {
        let config = ManagerConfig::default();
        let toml = toml::to_string(&config).unwrap();
        assert_eq!(ManagerConfig::from_toml_str(&toml).unwrap(), config);
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(ManagerConfig::from_json_str(&json).unwrap(), config);
    }

    #[test]
    fn secret_is_redacted_in_debug_display_and_serde() {
        let mut s = ServiceConfig::litellm();
        s.bearer_token = Some(Secret::new("sk-very-secret"));
        s.secret_headers
            .insert("X-Key".into(), Secret::new("hidden-value"));
        let debug = format!("{s:?}");
        let json = serde_json::to_string(&s).unwrap();
        let display = Secret::new("sk-very-secret").to_string();
        for text in [debug, json, display] {
            assert!(!text.contains("sk-very-secret"), "{text}");
            assert!(!text.contains("hidden-value"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }

    #[test]
    fn a_parse_error_in_a_file_names_the_file() {
        let dir = std::env::temp_dir().join(format!("backend-pool-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[[service]]\nname = 3\n").unwrap();
        let e = ManagerConfig::from_file(&path).unwrap_err();
        let at = e.location().unwrap();
        assert_eq!(
            (at.line, at.file.as_deref()),
            (2, Some(path.to_str().unwrap()))
        );
        assert!(e.to_string().contains("bad.toml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_relative_ca_file_is_relative_to_the_config_file() {
        let dir = std::env::temp_dir().join(format!("backend-pool-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), "not checked here").unwrap();
        let path = dir.join("services.toml");
        let text = "[[service]]\nname = \"a\"\nurl = \"https://h\"\nca_file = \"ca.pem\"\n";
        std::fs::write(&path, text).unwrap();
        let config = ManagerConfig::from_file(&path).unwrap();
        let ca = config.service[0].ca_file.as_deref().unwrap();
        assert_eq!(Path::new(ca), dir.join("ca.pem"));
        // Missing: named with its line.
        std::fs::write(&path, text.replace("ca.pem", "missing.pem")).unwrap();
        let e = ManagerConfig::from_file(&path).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        assert_eq!(e.location().unwrap().line, 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
