//! The crate's error types: [`Error`] for pool operations, [`ConfigError`] for configuration.
//!
//! Every [`Error`] names the service and the phase it happened in. Source errors are kept and
//! reachable through [`std::error::Error::source`]; `Display` prints only this layer's words,
//! so a chain prints each cause once: [`ErrorChain`], the crate's one formatter of a whole
//! chain (`Error::chain`), prints them all on one line.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// What a pool was doing when an error happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Waiting for a pooled connection.
    Wait,
    /// Opening a connection: TCP, TLS, WebSocket handshake.
    Connect,
    /// Sending a request or a message.
    Send,
    /// Receiving a response head.
    Receive,
    /// Reading a body or a WebSocket message.
    Read,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Wait => "waiting for a connection",
            Phase::Connect => "connecting",
            Phase::Send => "sending",
            Phase::Receive => "receiving the response",
            Phase::Read => "reading",
        })
    }
}

/// Which of a service's pools. More kinds may come: match with a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PoolKind {
    /// The HTTP pool.
    Http,
    /// The WebSocket pool (`"websocket"` in JSON, as in the Prometheus labels).
    #[serde(rename = "websocket")]
    WebSocket,
}

impl fmt::Display for PoolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolKind::Http => "HTTP",
            PoolKind::WebSocket => "WebSocket",
        })
    }
}

/// A pool's occupancy at one moment, carried by timeout errors. Fields may be added: read
/// them, don't build the struct.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PoolState {
    /// Connections checked out.
    pub in_use: usize,
    /// Connections idle in the pool.
    pub idle: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
    /// The pool's cap.
    pub max: usize,
}

impl fmt::Display for PoolState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in use, {} idle, {} waiting, max {}",
            self.in_use, self.idle, self.waiting, self.max
        )
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// [`Error::TooLarge`]'s `what` for a response head with more header lines than the parser
/// reads: its limit is a count, not bytes.
pub(crate) const HEADER_LINES: &str = "number of header lines in the response head";

/// An error from a pool operation. Each variant names the service; the classification
/// ([`Error::class`]) is what the statistics count.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No service has this name.
    UnknownService {
        /// The name asked for.
        name: String,
        /// The names the manager knows.
        known: Vec<String>,
    },
    /// The service exists but has no pool of this kind.
    NoSuchPool {
        /// The service.
        service: String,
        /// The kind asked for.
        kind: PoolKind,
    },
    /// No connection became free before the wait timeout.
    PoolTimeout {
        /// The service.
        service: String,
        /// The pool.
        kind: PoolKind,
        /// How long the caller waited.
        waited: Duration,
        /// Occupancy when the wait ended.
        state: PoolState,
        /// The most recent connect failure, if any, so one line explains the incident.
        last_error: Option<String>,
    },
    /// The service is unhealthy: acquisitions fail fast instead of waiting.
    ServiceUnavailable {
        /// The service.
        service: String,
        /// Consecutive failed checks or connects.
        consecutive_failures: u32,
        /// Why the last check failed.
        last_error: String,
    },
    /// The manager is shutting down (or has shut down).
    ShuttingDown {
        /// The service, when the call named one.
        service: Option<String>,
    },
    /// A phase ran past its deadline.
    Timeout {
        /// The service.
        service: String,
        /// The phase that timed out.
        phase: Phase,
        /// The deadline that passed.
        after: Duration,
    },
    /// The connection closed or reset before a response arrived (a stale keep-alive
    /// connection, or a server restart). Not retried for requests that are not idempotent.
    ConnectionClosed {
        /// The service.
        service: String,
        /// The phase.
        phase: Phase,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A transport or protocol failure (refused, TLS, malformed response, WebSocket protocol).
    Transport {
        /// The service.
        service: String,
        /// The phase.
        phase: Phase,
        /// The underlying error.
        source: Source,
    },
    /// A response body or WebSocket message exceeded its configured limit.
    TooLarge {
        /// The service.
        service: String,
        /// What was too large.
        what: &'static str,
        /// The limit in bytes.
        limit: u64,
    },
    /// The WebSocket peer closed the connection.
    WebSocketClosed {
        /// The service.
        service: String,
    },
    /// A JSON body could not be encoded or decoded.
    Json {
        /// The service.
        service: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// The caller's request cannot be sent as asked (a path that is not an origin-form path
    /// on the service, an invalid header name or value). Rejected before checkout: it costs no
    /// connection and says nothing about the service's health.
    InvalidRequest {
        /// The service.
        service: String,
        /// What is wrong, naming the offending part.
        reason: String,
    },
    /// The configuration is invalid.
    Config(ConfigError),
}

/// The classes errors are counted under in the statistics. More may come: match with a
/// wildcard arm, and iterate [`ErrorClass::ALL`] rather than listing them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// Waiting for a connection timed out.
    PoolTimeout,
    /// Failed fast: the service is unhealthy.
    Unavailable,
    /// Refused: shutting down.
    ShuttingDown,
    /// Opening a connection failed or timed out.
    Connect,
    /// Sending, receiving or reading timed out.
    Timeout,
    /// The connection closed or reset.
    Closed,
    /// Transport or protocol failures.
    Protocol,
    /// A size limit was exceeded.
    TooLarge,
    /// The caller's request was invalid (rejected before checkout).
    InvalidRequest,
    /// Anything else (unknown service, JSON, config).
    Other,
}

impl ErrorClass {
    /// Every class, in a fixed order (the statistics' order). A slice: its length grows with
    /// the classes.
    pub const ALL: &'static [ErrorClass] = &[
        ErrorClass::PoolTimeout,
        ErrorClass::Unavailable,
        ErrorClass::ShuttingDown,
        ErrorClass::Connect,
        ErrorClass::Timeout,
        ErrorClass::Closed,
        ErrorClass::Protocol,
        ErrorClass::TooLarge,
        ErrorClass::InvalidRequest,
        ErrorClass::Other,
    ];

    /// The snake_case name used in JSON and Prometheus labels.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::PoolTimeout => "pool_timeout",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::ShuttingDown => "shutting_down",
            ErrorClass::Connect => "connect",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Closed => "closed",
            ErrorClass::Protocol => "protocol",
            ErrorClass::TooLarge => "too_large",
            ErrorClass::InvalidRequest => "invalid_request",
            ErrorClass::Other => "other",
        }
    }
}

impl Error {
    /// The class this error is counted under.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::PoolTimeout { .. } => ErrorClass::PoolTimeout,
            Error::ServiceUnavailable { .. } => ErrorClass::Unavailable,
            Error::ShuttingDown { .. } => ErrorClass::ShuttingDown,
            Error::Timeout {
                phase: Phase::Connect,
                ..
            }
            | Error::Transport {
                phase: Phase::Connect,
                ..
            }
            | Error::ConnectionClosed {
                phase: Phase::Connect,
                ..
            } => ErrorClass::Connect,
            Error::Timeout { .. } => ErrorClass::Timeout,
            Error::ConnectionClosed { .. } | Error::WebSocketClosed { .. } => ErrorClass::Closed,
            Error::Transport { .. } => ErrorClass::Protocol,
            Error::TooLarge { .. } => ErrorClass::TooLarge,
            Error::InvalidRequest { .. } => ErrorClass::InvalidRequest,
            Error::UnknownService { .. }
            | Error::NoSuchPool { .. }
            | Error::Json { .. }
            | Error::Config(_) => ErrorClass::Other,
        }
    }

    /// The phase, where the error has one.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Error::PoolTimeout { .. } | Error::ServiceUnavailable { .. } => Some(Phase::Wait),
            Error::Timeout { phase, .. }
            | Error::ConnectionClosed { phase, .. }
            | Error::Transport { phase, .. } => Some(*phase),
            Error::TooLarge { .. } | Error::WebSocketClosed { .. } => Some(Phase::Read),
            _ => None,
        }
    }

    /// The service the error concerns, where there is one.
    pub fn service(&self) -> Option<&str> {
        match self {
            Error::UnknownService { .. } | Error::Config(_) => None,
            Error::ShuttingDown { service } => service.as_deref(),
            Error::NoSuchPool { service, .. }
            | Error::PoolTimeout { service, .. }
            | Error::ServiceUnavailable { service, .. }
            | Error::Timeout { service, .. }
            | Error::ConnectionClosed { service, .. }
            | Error::Transport { service, .. }
            | Error::TooLarge { service, .. }
            | Error::WebSocketClosed { service }
            | Error::InvalidRequest { service, .. }
            | Error::Json { service, .. } => Some(service),
        }
    }

    /// True for a timeout of any phase (waiting, connecting, reading).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::PoolTimeout { .. } | Error::Timeout { .. })
    }

    /// This error and its causes on one line (see [`ErrorChain`]).
    ///
    /// ```
    /// use backend_pool::{ManagerConfig, PoolManager, ServiceConfig};
    ///
    /// // Nothing listens on port 9.
    /// let config = ManagerConfig::empty().with_service(ServiceConfig::new("svc", "http://127.0.0.1:9"));
    /// let manager = PoolManager::new(config)?;
    /// let err = manager.http("svc")?.get("/").call().unwrap_err();
    /// let line = err.chain().to_string(); // what failed, then why, down to the OS's reason
    /// assert!(line.starts_with(&err.to_string()), "{line}");
    /// # Ok::<(), backend_pool::Error>(())
    /// ```
    pub fn chain(&self) -> ErrorChain<'_> {
        ErrorChain::new(self)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownService { name, known } => {
                write!(f, "unknown service '{name}' (known: {})", known.join(", "))
            }
            Error::NoSuchPool { service, kind } => {
                write!(f, "service '{service}' has no {kind} pool")
            }
            Error::PoolTimeout {
                service,
                kind,
                waited,
                state,
                last_error,
            } => {
                write!(
                    f,
                    "service '{service}': no {kind} connection free after {waited:?} ({state})"
                )?;
                if let Some(e) = last_error {
                    write!(f, "; last connect error: {e}")?;
                }
                Ok(())
            }
            Error::ServiceUnavailable {
                service,
                consecutive_failures,
                last_error,
            } => write!(
                f,
                "service '{service}' is unavailable after {consecutive_failures} consecutive \
                 failures; last error: {last_error}"
            ),
            Error::ShuttingDown { service: Some(s) } => {
                write!(f, "service '{s}': the pool manager is shutting down")
            }
            Error::ShuttingDown { service: None } => {
                f.write_str("the pool manager is shutting down")
            }
            Error::Timeout {
                service,
                phase,
                after,
            } => write!(f, "service '{service}': timed out {phase} after {after:?}"),
            Error::ConnectionClosed { service, phase, .. } => {
                write!(f, "service '{service}': connection closed while {phase}")
            }
            Error::Transport { service, phase, .. } => {
                write!(f, "service '{service}': failed while {phase}")
            }
            Error::TooLarge {
                service,
                what,
                limit,
            } => {
                let unit = if *what == HEADER_LINES { "" } else { " bytes" };
                write!(
                    f,
                    "service '{service}': {what} exceeds the limit of {limit}{unit}"
                )
            }
            Error::WebSocketClosed { service } => {
                write!(
                    f,
                    "service '{service}': the WebSocket was closed by the peer"
                )
            }
            Error::Json { service, .. } => write!(f, "service '{service}': invalid JSON"),
            Error::InvalidRequest { service, reason } => {
                write!(f, "service '{service}': invalid request: {reason}")
            }
            Error::Config(_) => f.write_str("invalid configuration"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ConnectionClosed { source, .. } => Some(source),
            Error::Transport { source, .. } => Some(source.as_ref()),
            Error::Json { source, .. } => Some(source),
            Error::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

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
                match at {
                    Some(at) => write!(f, " ({at})"),
                    None => Ok(()),
                }
            }
            ConfigError::Invalid {
                service,
                field,
                reason,
                at,
            } => {
                write!(f, "service '{service}': {field} {reason}")?;
                match at {
                    Some(at) => write!(f, " ({at})"),
                    None => Ok(()),
                }
            }
            ConfigError::DuplicateService { name, at } => {
                write!(f, "service '{name}' is defined more than once")?;
                match at {
                    Some(at) => write!(f, " ({at})"),
                    None => Ok(()),
                }
            }
        }
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

/// An error and every cause under it on one line, outermost first, joined by `": "` (for
/// logs, health records and messages to a user).
///
/// Each layer's `Display` prints only its own words and keeps its cause for
/// [`source`](std::error::Error::source), so `Display` alone drops the causes and this prints
/// each exactly once. [`Error::chain`] and [`ConfigError::chain`] make one; [`ErrorChain::new`]
/// takes any error (the I/O error of a [`StreamingResponse`](crate::StreamingResponse) read,
/// say).
///
/// ```
/// use backend_pool::{ConfigError, ErrorChain, ManagerConfig};
///
/// let err = ManagerConfig::from_file("/nonexistent/services.toml").unwrap_err();
/// assert!(matches!(err, ConfigError::Io { .. }));
/// let line = err.chain().to_string(); // the path, then the OS's reason
/// assert!(line.starts_with(&err.to_string()) && line.len() > err.to_string().len(), "{line}");
///
/// let io = std::io::Error::other("connection reset");
/// assert_eq!(ErrorChain::new(&io).to_string(), "connection reset");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ErrorChain<'a>(&'a (dyn std::error::Error + 'a));

impl<'a> ErrorChain<'a> {
    /// The chain of `error` and its sources.
    pub fn new(error: &'a (dyn std::error::Error + 'a)) -> Self {
        ErrorChain(error)
    }
}

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small() {
        // The largest variant is PoolTimeout (name, state, last error): keep it there.
        assert!(
            std::mem::size_of::<Error>() <= 112,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn errors_are_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Error>();
        check::<ConfigError>();
    }

    #[test]
    fn timeout_message_carries_state_and_last_error() {
        let e = Error::PoolTimeout {
            service: "rvc".into(),
            kind: PoolKind::Http,
            waited: Duration::from_millis(50),
            state: PoolState {
                in_use: 2,
                idle: 0,
                waiting: 3,
                max: 2,
            },
            last_error: Some("connection refused".into()),
        };
        let text = e.to_string();
        assert!(text.contains("'rvc'") && text.contains("2 in use") && text.contains("3 waiting"));
        assert!(text.contains("connection refused"));
        assert_eq!(e.class(), ErrorClass::PoolTimeout);
        assert_eq!(e.phase(), Some(Phase::Wait));
    }

    #[test]
    fn chain_prints_each_cause_once_on_one_line() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let config = ConfigError::Io {
            path: "services.toml".into(),
            source: io,
        };
        let config_text = config.to_string();
        assert_eq!(
            config.chain().to_string(),
            format!("{config_text}: no such file")
        );
        // Three layers: each printed once, outermost first.
        let e = Error::Transport {
            service: "rvc".into(),
            phase: Phase::Connect,
            source: Box::new(config),
        };
        let text = e.chain().to_string();
        assert_eq!(text, format!("{e}: {config_text}: no such file"));
        assert_eq!(text.matches("no such file").count(), 1, "{text}");
        // Any error, and one without a source is its own words.
        let plain = std::io::Error::other("refused");
        assert_eq!(ErrorChain::new(&plain).to_string(), "refused");
    }
}
