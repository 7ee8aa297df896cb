//! The classes the statistics count errors under.

use serde::Serialize;

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
    /// The caller cancelled the call (`CancelToken::cancel`, `WsAbort::abort`).
    Cancelled,
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
    /// The server answered with a status: an error status (4xx, 5xx) made an error by
    /// `error_for_status` or a download, or a WebSocket handshake answered with anything but
    /// `101` ([`Error::Status`](crate::Error::Status)).
    ///
    /// **The rule, for both pool kinds:** a status is the server answering, not an outage.
    /// It never counts against the service's health, 4xx and 5xx alike, so it never trips
    /// the fail-fast gate (a 503 from a server warming up reaches the caller as a 503, with
    /// its body, not as `unavailable`); an answer even clears earlier failures, as any
    /// answer does. Only a health probe judges a status: `health_path` answering 5xx fails
    /// the probe. An HTTP connection that carried a status is reused; a refused handshake's
    /// socket is closed, and a maintenance refill refused so backs off (500 ms, doubling
    /// up to 30 s) rather than retrying every tick.
    Status,
    /// Anything else (unknown service, JSON, config, saving a download, a request body whose reader failed).
    Other,
}

impl ErrorClass {
    /// Every class, in a fixed order (the statistics' order). A slice: its length grows with
    /// the classes.
    pub const ALL: &'static [ErrorClass] = &[
        ErrorClass::PoolTimeout,
        ErrorClass::Unavailable,
        ErrorClass::ShuttingDown,
        ErrorClass::Cancelled,
        ErrorClass::Connect,
        ErrorClass::Timeout,
        ErrorClass::Closed,
        ErrorClass::Protocol,
        ErrorClass::TooLarge,
        ErrorClass::InvalidRequest,
        ErrorClass::Status,
        ErrorClass::Other,
    ];

    /// The snake_case name used in JSON and Prometheus labels.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::PoolTimeout => "pool_timeout",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::ShuttingDown => "shutting_down",
            ErrorClass::Cancelled => "cancelled",
            ErrorClass::Connect => "connect",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Closed => "closed",
            ErrorClass::Protocol => "protocol",
            ErrorClass::TooLarge => "too_large",
            ErrorClass::InvalidRequest => "invalid_request",
            ErrorClass::Status => "status",
            ErrorClass::Other => "other",
        }
    }
}
