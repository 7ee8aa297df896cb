//! [`StallServer`]: a loopback server that leaves its client blocked in one phase (waiting
//! for a response head, mid-body, between two SSE events, in a TLS or WebSocket handshake)
//! until the client hangs up, and counts the hang-ups: what a test of cancellation or shutdown
//! checks the server saw. Two scripts of the shared [`RawServer`].

use super::raw::RawServer;

/// See the module docs: a [`RawServer`] whose connections each wait for their client to hang
/// up (or for 8 s of silence from it).
pub type StallServer = RawServer;

impl RawServer {
    /// Reads a request head, writes `prefix` (nothing, a head and part of a body, a few
    /// events), then waits for the client to hang up.
    pub fn answering(prefix: &'static [u8]) -> StallServer {
        RawServer::start(move |mut p| {
            if p.read_request_head_only().is_some() {
                p.write(prefix);
                p.wait_for_hangup();
            }
        })
    }

    /// Reads whatever comes (a TLS ClientHello, a WebSocket upgrade request) and never
    /// answers, until the client hangs up.
    pub fn silent() -> StallServer {
        RawServer::start(|mut p| {
            p.wait_for_hangup();
        })
    }
}
