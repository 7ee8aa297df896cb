//! Why a configuration was rejected, and where in its text.

use std::fmt;

use super::ErrorChain;

/// Where in a configuration text a problem is: the file (when read with
/// [`ManagerConfig::from_file`](crate::ManagerConfig::from_file)), the line and the column.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigLocation {
    /// The file, when the configuration was read from one.
    pub file: Option<String>,
    /// The line, from 1.
    pub line: u32,
    /// The column, from 1, in characters.
    pub column: u32,
}

impl fmt::Display for ConfigLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}, ")?;
        }
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a configuration was rejected.
///
/// Errors found in a file or a text carry the [`ConfigLocation`] of the key (or of its table,
/// when the key was left out and its default breaks a rule); configurations built in code
/// have none. Secrets (`bearer_token`, `secret_headers`, the variable `bearer_token_env`
/// names) are never part of a message, nor of `Debug`: a [`ConfigError::Parse`] quotes no
/// value and no source line, whatever broke the text.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    Io {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Syntax error, wrong type or unknown key.
    Parse {
        /// `TOML` or `JSON`.
        format: &'static str,
        /// What is wrong, in the parser's words, after the key when it is known:
        /// ``key `service.secret_headers`: invalid type: string, expected a map``. Never a
        /// value from the text, nor its source line: a value may be a secret.
        message: String,
        /// Where, when the parser said.
        at: Option<ConfigLocation>,
    },
    /// A field has a value that breaks a rule.
    Invalid {
        /// The service (or `(manager)`).
        service: String,
        /// The field, dotted for nested tables (`http.min_connections`).
        field: String,
        /// What is wrong.
        reason: String,
        /// Where, for a configuration read from a file or a text.
        at: Option<ConfigLocation>,
    },
    /// Two services share a name.
    DuplicateService {
        /// The name.
        name: String,
        /// Where the second one is, for a configuration read from a file or a text.
        at: Option<ConfigLocation>,
    },
}

impl ConfigError {
    pub(crate) fn invalid(service: &str, field: &str, reason: &str) -> Self {
        ConfigError::Invalid {
            service: service.to_string(),
            field: field.to_string(),
            reason: reason.to_string(),
            at: None,
        }
    }

    /// This error and its cause on one line (see [`ErrorChain`]).
    pub fn chain(&self) -> ErrorChain<'_> {
        ErrorChain::new(self)
    }

    /// Where the problem is in the configuration text, when it came from one.
    pub fn location(&self) -> Option<&ConfigLocation> {
        match self {
            ConfigError::Parse { at, .. }
            | ConfigError::Invalid { at, .. }
            | ConfigError::DuplicateService { at, .. } => at.as_ref(),
            ConfigError::Io { .. } => None,
        }
    }

    /// The same error, placed at `location`.
    pub(crate) fn at(mut self, location: ConfigLocation) -> Self {
        match &mut self {
            ConfigError::Parse { at, .. }
            | ConfigError::Invalid { at, .. }
            | ConfigError::DuplicateService { at, .. } => *at = Some(location),
            ConfigError::Io { .. } => {}
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io { path, .. } => write!(f, "cannot read config file '{path}'"),
            ConfigError::Parse {
                format,
                message,
                at,
            } => {
                write!(f, "invalid {format} configuration: {message}")?;
                located(f, at)
            }
            ConfigError::Invalid {
                service,
                field,
                reason,
                at,
            } => {
                write!(f, "service '{service}': {field} {reason}")?;
                located(f, at)
            }
            ConfigError::DuplicateService { name, at } => {
                write!(f, "service '{name}' is defined more than once")?;
                located(f, at)
            }
        }
    }
}

/// Ends a message with where in the text the problem is, when known.
fn located(f: &mut fmt::Formatter<'_>, at: &Option<ConfigLocation>) -> fmt::Result {
    match at {
        Some(at) => write!(f, " ({at})"),
        None => Ok(()),
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
