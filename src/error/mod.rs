//! The crate's error types: [`Error`] for pool operations, [`ConfigError`] for configuration.
//!
//! Every [`Error`] names the service and the phase it happened in. Source errors are kept and
//! reachable through [`std::error::Error::source`]; `Display` prints only this layer's words,
//! so a chain prints each cause once: [`ErrorChain`], the crate's one formatter of a whole
//! chain (`Error::chain`), prints them all on one line.
//!
//! Beside [`Error`] (this file): its context ([`Phase`], [`PoolKind`], [`PoolState`] in
//! `context.rs`), its classes (`class.rs`), [`ConfigError`] (`config.rs`), the chain
//! formatter (`chain.rs`) and a status error's evidence ([`StatusBody`], `status.rs`).

mod chain;
mod class;
mod config;
mod context;
mod status;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;

pub use chain::ErrorChain;
pub use class::ErrorClass;
pub use config::{ConfigError, ConfigLocation};
pub use context::{Phase, PoolKind, PoolState};
pub use status::StatusBody;

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// [`Error::TooLarge`]'s `what` for a response head with more header lines than the parser
/// reads: its limit is a count, not bytes.
pub(crate) const HEADER_LINES: &str = "number of header lines in the response head";

/// [`Error::TooLarge`]'s `what` for a body over `max_body_bytes`: its message points to the
/// ways of reading a larger one.
pub(crate) const RESPONSE_BODY: &str = "response body";

/// The most characters of a status error's body its message shows (its first line).
const STATUS_LINE_CHARS: usize = 200;

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
    /// The service was replaced or removed by a reconfiguration
    /// ([`PoolManager::apply`](crate::PoolManager::apply) and its one-service forms) while
    /// this handle was held: its old pools take no new work. Class `shutting_down`. A
    /// replaced service's new pools are one lookup away (`manager.http(name)` again); calls
    /// in flight when it was retired finish, or end with this error at the drain deadline.
    ServiceRetired {
        /// The service.
        service: String,
        /// Removed from the configuration (`false`: replaced by a new configuration).
        removed: bool,
    },
    /// The caller cancelled the call while it was in `phase` (or before it began: the
    /// phase it would have started with). The connection involved was closed, never
    /// returned to the pool half-used.
    Cancelled {
        /// The service.
        service: String,
        /// The phase the call was in.
        phase: Phase,
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
    /// The request body's reader failed, or ended before or after the length announced for
    /// it (`Content-Length`). The caller's doing, not the service's: it does not count
    /// against health. Sending stopped mid-body, so the connection was closed, never
    /// returned to the pool.
    RequestBody {
        /// The service.
        service: String,
        /// Body bytes read before the failure.
        sent: u64,
        /// The length announced.
        len: u64,
        /// What went wrong: the reader's own error, `UnexpectedEof` (it ended early) or
        /// `InvalidData` (it had more bytes).
        source: std::io::Error,
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
    /// The server answered with an error status: [`Response::error_for_status`],
    /// [`StreamingResponse::error_for_status`] or a download (whose status must be 2xx)
    /// made it an error, or a WebSocket handshake was answered with a status instead of
    /// `101 Switching Protocols` (ComfyUI's 403 for an `Origin` it refuses, a 404 on a wrong
    /// `websocket.path`). Carries the status and the body's first 64 KiB ([`StatusBody`]), for
    /// the server's reasons (ComfyUI's `node_errors`); the message shows the body's first line
    /// (at most 200 characters). Class `status` ([`ErrorClass::Status`]): never counted
    /// against the service's health. An HTTP connection is reused; a refused handshake's
    /// socket is closed.
    ///
    /// [`Response::error_for_status`]: crate::Response::error_for_status
    /// [`StreamingResponse::error_for_status`]: crate::StreamingResponse::error_for_status
    Status {
        /// The service.
        service: String,
        /// The status code (4xx, 5xx; a download's 1xx or 3xx too; any but 101 for a
        /// WebSocket handshake).
        status: u16,
        /// The phase the status came in: [`Phase::Receive`] for an HTTP response,
        /// [`Phase::Connect`] for a WebSocket handshake.
        phase: Phase,
        /// The URL that answered, where the pool chose it rather than the caller: a
        /// WebSocket handshake's (`ws://host:port/path`, without its query); `None` for an
        /// HTTP response (the caller named its path).
        url: Option<String>,
        /// The body, at most its first 64 KiB.
        body: StatusBody,
    },
    /// A download's body could not be saved: creating, writing or renaming its file, or
    /// writing to the caller's writer failed. A file download leaves nothing under the
    /// destination's name.
    Save {
        /// The service.
        service: String,
        /// The file being written (the temporary file beside the destination, or the
        /// destination for a failed rename); `None` for a caller's writer.
        path: Option<PathBuf>,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    Config(ConfigError),
}

impl Error {
    /// The class this error is counted under.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::PoolTimeout { .. } => ErrorClass::PoolTimeout,
            Error::ServiceUnavailable { .. } => ErrorClass::Unavailable,
            Error::ShuttingDown { .. } | Error::ServiceRetired { .. } => ErrorClass::ShuttingDown,
            Error::Cancelled { .. } => ErrorClass::Cancelled,
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
            Error::Status { .. } => ErrorClass::Status,
            Error::UnknownService { .. }
            | Error::NoSuchPool { .. }
            | Error::RequestBody { .. }
            | Error::Json { .. }
            | Error::Save { .. }
            | Error::Config(_) => ErrorClass::Other,
        }
    }

    /// The phase, where the error has one.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Error::PoolTimeout { .. } | Error::ServiceUnavailable { .. } => Some(Phase::Wait),
            Error::Timeout { phase, .. }
            | Error::Cancelled { phase, .. }
            | Error::ConnectionClosed { phase, .. }
            | Error::Transport { phase, .. } => Some(*phase),
            Error::TooLarge { .. } | Error::WebSocketClosed { .. } => Some(Phase::Read),
            Error::Status { phase, .. } => Some(*phase),
            Error::RequestBody { .. } => Some(Phase::Send),
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
            | Error::ServiceRetired { service, .. }
            | Error::Timeout { service, .. }
            | Error::Cancelled { service, .. }
            | Error::ConnectionClosed { service, .. }
            | Error::Transport { service, .. }
            | Error::TooLarge { service, .. }
            | Error::WebSocketClosed { service }
            | Error::InvalidRequest { service, .. }
            | Error::Status { service, .. }
            | Error::Save { service, .. }
            | Error::RequestBody { service, .. }
            | Error::Json { service, .. } => Some(service),
        }
    }

    /// The status code of a status error ([`Error::Status`]); `None` for any other error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The body of a status error (its first 64 KiB; derefs to `[u8]`); `None` for any other
    /// error.
    pub fn body(&self) -> Option<&StatusBody> {
        match self {
            Error::Status { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The body of a status error as text (invalid UTF-8 replaced); `None` for any other
    /// error.
    pub fn text(&self) -> Option<String> {
        self.body().map(StatusBody::text)
    }

    /// The body of a status error decoded as JSON: why ComfyUI refused a prompt.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), backend_pool::Error> {
    /// # let manager = backend_pool::PoolManager::new(backend_pool::ManagerConfig::default())?;
    /// let prompt = serde_json::json!({"prompt": {/* workflow */}});
    /// let reply = manager.http("comfyui")?.post("/prompt").send_json(&prompt)?;
    /// match reply.error_for_status() {
    ///     Ok(queued) => println!("{}", queued.text()),
    ///     Err(e) if e.status() == Some(400) => {
    ///         let why: serde_json::Value = e.json()?;
    ///         eprintln!("{}: {}", why["error"]["message"], why["node_errors"]);
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Json`] naming the service if the body is not JSON of type `T` (a body cut at
    /// 64 KiB is not: see [`StatusBody::is_truncated`]), or if this is not a status error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let service = self.service().unwrap_or_default().to_string();
        let source = match self {
            Error::Status { body, .. } => match serde_json::from_slice(body) {
                Ok(value) => return Ok(value),
                Err(e) => e,
            },
            other => <serde_json::Error as serde::de::Error>::custom(format_args!(
                "no response body: a {} error, not a status error",
                other.class().name()
            )),
        };
        Err(Error::Json { service, source })
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
            Error::ServiceRetired {
                service,
                removed: true,
            } => write!(f, "service '{service}' was removed from the configuration"),
            Error::ServiceRetired { service, .. } => write!(
                f,
                "service '{service}' was replaced by a new configuration: this handle is \
                 retired, ask the manager for the service again"
            ),
            Error::Timeout {
                service,
                phase,
                after,
            } => write!(f, "service '{service}': timed out {phase} after {after:?}"),
            Error::Cancelled { service, phase } => {
                write!(f, "service '{service}': cancelled while {phase}")
            }
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
                )?;
                if *what == RESPONSE_BODY {
                    f.write_str(
                        " (max_body_bytes; read a larger body with RequestBuilder::stream \
                         or download_to)",
                    )?;
                }
                Ok(())
            }
            Error::WebSocketClosed { service } => {
                write!(
                    f,
                    "service '{service}': the WebSocket was closed by the peer"
                )
            }
            Error::RequestBody {
                service, sent, len, ..
            } => write!(
                f,
                "service '{service}': the request body failed after {sent} of {len} bytes"
            ),
            Error::Json { service, .. } => write!(f, "service '{service}': invalid JSON"),
            Error::InvalidRequest { service, reason } => {
                write!(f, "service '{service}': invalid request: {reason}")
            }
            Error::Status {
                service,
                status,
                phase,
                url,
                body,
            } => {
                write!(f, "service '{service}': HTTP {status}")?;
                let reason = ureq::http::StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|code| code.canonical_reason());
                if let Some(reason) = reason {
                    write!(f, " {reason}")?;
                }
                if *phase != Phase::Receive {
                    write!(f, " while {phase}")?;
                }
                if let Some(url) = url {
                    write!(f, " to {url}")?;
                }
                let line = body.first_line(STATUS_LINE_CHARS);
                if !line.is_empty() {
                    write!(f, ": {line}")?;
                }
                Ok(())
            }
            Error::Save {
                service,
                path: Some(path),
                ..
            } => write!(
                f,
                "service '{service}': saving the body to '{}' failed",
                path.display()
            ),
            Error::Save { service, .. } => {
                write!(f, "service '{service}': writing the body failed")
            }
            Error::Config(_) => f.write_str("invalid configuration"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ConnectionClosed { source, .. } | Error::RequestBody { source, .. } => {
                Some(source)
            }
            Error::Transport { source, .. } => Some(source.as_ref()),
            Error::Json { source, .. } => Some(source),
            Error::Save { source, .. } => Some(source),
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
