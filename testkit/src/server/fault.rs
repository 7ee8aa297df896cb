//! Injectable misbehaviour.

use std::time::Duration;

/// A misbehaviour injected with [`TestServer::set_fault`](crate::TestServer::set_fault).
///
/// The fault applies to requests read (and connections accepted) after it is set,
/// including requests on connections that were already open. WebSocket upgrade
/// requests are HTTP requests too: `Refuse`, `CloseBeforeResponse`, `Stall` and
/// `MalformedResponse` apply to the handshake (`SlowBytes` does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Behave normally.
    #[default]
    None,
    /// Accept TCP connections, then close them at once without reading.
    /// A request arriving on an already-open connection is read and the
    /// connection closed without an answer.
    Refuse,
    /// Read the request, then close the connection without answering.
    CloseBeforeResponse,
    /// Read the request and never answer, until the fault changes (the request is
    /// then answered normally), the connection is killed or the server stops.
    Stall,
    /// Answer with bytes that are not HTTP, then close.
    MalformedResponse,
    /// Answer normally but one byte at a time, sleeping this long before each byte.
    SlowBytes(Duration),
    /// WebSocket connections stop reading (so client pings get no pong and client
    /// messages are not echoed) until the fault changes. Server-initiated sends
    /// ([`WsHandle::send_text`](crate::WsHandle::send_text), broadcast) still work.
    WsIgnorePings,
}
