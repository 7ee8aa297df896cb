//! A broken rule, as the checks report it: [`Bad`] inside one service (its field and why),
//! [`Problem`] inside a whole [`ManagerConfig`](super::ManagerConfig) (which service, the key's path, the error), so
//! the loader can place it at its line. Every check (`rules`, `headers`, `presets`) reports
//! through these; they import nothing from the checks.

use super::ServiceConfig;
use crate::error::ConfigError;

/// A rule broken somewhere in a [`ManagerConfig`](super::ManagerConfig): the error, and where its key is (for
/// finding its line in a file).
#[derive(Debug)]
pub(crate) struct Problem {
    /// The service's index in `service`; `None` for the manager's own keys.
    pub service: Option<usize>,
    /// The key's path inside the service (or the manager): `["http", "max_connections"]`,
    /// `["headers", "X-Key"]`.
    pub path: Vec<String>,
    /// Boxed: the error is large and this is the cold path.
    pub error: Box<ConfigError>,
}

/// A rule broken in one service: the field (dotted), a key under it (a header name), why.
pub(super) struct Bad {
    pub(super) field: String,
    pub(super) key: Option<String>,
    pub(super) reason: String,
}

/// A broken rule of `field` (dotted), with no key under it.
pub(super) fn bad(field: &str, reason: impl Into<String>) -> Bad {
    Bad {
        field: field.to_string(),
        key: None,
        reason: reason.into(),
    }
}

impl Bad {
    /// The error, naming the service.
    pub(super) fn into_error(self, service: &ServiceConfig) -> ConfigError {
        ConfigError::invalid(label(&service.name), &self.field, &self.reason)
    }
}

/// The service's name for messages, `(unnamed)` when it has none yet.
pub(crate) fn label(name: &str) -> &str {
    if name.is_empty() {
        "(unnamed)"
    } else {
        name
    }
}
