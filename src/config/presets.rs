//! The known backends as presets: constructors for code, names for files.
//!
//! Each preset follows its backend (the facts are in the constructor docs and the README's
//! preset table). In a file, `preset = "comfyui"` makes the preset's values the defaults of
//! every key the entry leaves out; the merge happens on the parsed document, before the
//! entry is read into a [`ServiceConfig`], so nested tables merge key by key.

use serde_json::Value;

use super::problem::{label, Problem};
use super::{HttpPoolConfig, ServiceConfig, WsPoolConfig};
use crate::error::ConfigError;

/// The names a file may give as `preset`, in the order the docs list them.
pub(crate) const PRESETS: [&str; 4] = ["comfyui", "litellm", "wan2gp", "rvc"];

impl ServiceConfig {
    /// ComfyUI on 127.0.0.1:8188: HTTP API plus the `/ws?clientId=` progress stream
    /// (WebSocket pool max 5 / min 1), health `GET /prompt` (its cheapest route: the queue
    /// length) every 30 s.
    pub fn comfyui() -> Self {
        ServiceConfig {
            preset: Some("comfyui".into()),
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

    /// LiteLLM proxy on 127.0.0.1:4000: max 20 / min 5, idle connections kept 600 s, bearer
    /// key from `LITELLM_MASTER_KEY`, health `GET /health/liveliness` (never `/health`, which
    /// makes a billable call to every configured model).
    pub fn litellm() -> Self {
        ServiceConfig {
            preset: Some("litellm".into()),
            http: Some(HttpPoolConfig {
                max_connections: 20,
                min_connections: 5,
                ..HttpPoolConfig::default()
            }),
            idle_timeout_ms: 600_000,
            health_path: Some("/health/liveliness".into()),
            bearer_token_env: Some("LITELLM_MASTER_KEY".into()),
            ..ServiceConfig::new("litellm", "http://127.0.0.1:4000")
        }
    }

    /// Wan2GP (a Gradio app) on 127.0.0.1:7860: max 10 / min 2, wait timeout 60 s, health
    /// `HEAD /`, a read-idle timeout of 120 s, above Gradio's 15 s SSE heartbeat.
    pub fn wan2gp() -> Self {
        ServiceConfig {
            preset: Some("wan2gp".into()),
            health_path: Some("/".into()),
            wait_timeout_ms: 60_000,
            read_idle_timeout_ms: 120_000,
            ..ServiceConfig::new("wan2gp", "http://127.0.0.1:7860")
        }
    }

    /// RVC voice conversion (rvc-python API) on 127.0.0.1:5050, health `GET /models` (it has
    /// no health route).
    pub fn rvc() -> Self {
        ServiceConfig {
            preset: Some("rvc".into()),
            health_path: Some("/models".into()),
            ..ServiceConfig::new("rvc", "http://127.0.0.1:5050")
        }
    }

    /// The preset called `name` (`comfyui`, `litellm`, `wan2gp`, `rvc`), as a file's
    /// `preset = "…"` names it.
    ///
    /// ```
    /// use backend_pool::ServiceConfig;
    ///
    /// let comfy = ServiceConfig::from_preset("comfyui")?;
    /// assert_eq!(comfy, ServiceConfig::comfyui());
    /// assert!(ServiceConfig::from_preset("comfy").is_err());
    /// # Ok::<(), backend_pool::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] on `preset` for an unknown name, listing the known ones.
    pub fn from_preset(name: &str) -> Result<ServiceConfig, ConfigError> {
        Ok(match name {
            "comfyui" => ServiceConfig::comfyui(),
            "litellm" => ServiceConfig::litellm(),
            "wan2gp" => ServiceConfig::wan2gp(),
            "rvc" => ServiceConfig::rvc(),
            _ => {
                return Err(ConfigError::invalid(
                    "(unnamed)",
                    "preset",
                    &unknown_preset(name),
                ))
            }
        })
    }
}

/// The reason an unknown preset name is refused.
pub(crate) fn unknown_preset(name: &str) -> String {
    format!("'{name}' is not a preset (known: {})", PRESETS.join(", "))
}

/// Rebuilds every entry of `services` that names a preset: the preset's values, overlaid with
/// the entry's keys as the file wrote them (`raw`, the same document parsed untyped).
pub(crate) fn apply(raw: &Value, services: &mut [ServiceConfig]) -> Result<(), Problem> {
    let Some(entries) = raw.get("service").and_then(Value::as_array) else {
        return Ok(());
    };
    for (i, (service, entry)) in services.iter_mut().zip(entries).enumerate() {
        let Some(name) = service.preset.as_deref() else {
            continue;
        };
        let problem = |reason: String| Problem {
            service: Some(i),
            path: vec!["preset".into()],
            error: Box::new(ConfigError::invalid(
                label(&service.name),
                "preset",
                &reason,
            )),
        };
        let base = match ServiceConfig::from_preset(name) {
            Ok(base) => base,
            Err(_) => return Err(problem(unknown_preset(name))),
        };
        // Presets hold no secrets (tokens come from the environment), so nothing is lost to
        // `Secret`'s redacting serialisation here; the entry's own secrets come from `raw`.
        let mut merged = serde_json::to_value(&base).map_err(|e| problem(e.to_string()))?;
        // The preset's health probe goes with its HTTP pool, when the entry turns that off.
        let http_off = matches!(entry.get("http"), Some(Value::Bool(false) | Value::Null));
        if http_off && entry.get("health_path").is_none() {
            merged["health_path"] = Value::Null;
        }
        // An entry listing `urls` replaces the preset's `url`, not adds to it.
        if entry.get("urls").is_some() && entry.get("url").is_none() {
            merged["url"] = Value::String(String::new());
        }
        overlay(&mut merged, entry);
        // serde's words quote the value they reject: the entry's secrets are in `merged`.
        *service = serde_json::from_value(merged)
            .map_err(|e| problem(super::redact::parser_message(&e.to_string())))?;
    }
    Ok(())
}

/// `over`'s keys replace `base`'s; tables merge key by key. A pool switched on (`true`) keeps
/// the preset's table, or gets the default one where the preset has none.
fn overlay(base: &mut Value, over: &Value) {
    let (Value::Object(base), Value::Object(over)) = (base, over) else {
        return;
    };
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(b @ Value::Object(_)), Value::Object(_)) => overlay(b, value),
            (Some(b), Value::Bool(true)) if key == "http" || key == "websocket" => {
                if !b.is_object() {
                    *b = Value::Object(Default::default());
                }
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}
