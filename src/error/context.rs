//! Where an error happened: the pool's phase, its kind, its occupancy.

use std::fmt;

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
