//! What one pooled item ([`PooledAgent`], made by r2d2 through [`AgentFactory`]) is: a
//! `ureq::Agent` holding at most one keep-alive connection, over this crate's own resolver,
//! connector and transport. ureq keeps the HTTP/1.1 protocol, its keep-alive pool and the
//! phase timeouts; everything that touches a socket is here:
//!
//! * [`PoolResolver`] resolves only the service's own host (any other host is refused, so not
//!   even [`HttpConnection::agent`](super::HttpConnection::agent) leaves the origin). An IP
//!   literal needs no lookup; a name is looked up on a helper thread bounded by the connect
//!   deadline, and a failure names the host.
//! * [`PoolConnector`] connects TCP to the resolved addresses within the connect deadline,
//!   then completes the TLS handshake for `https`. It counts every real TCP connect; the
//!   socket counts its close.
//! * [`PoolTransport`](socket::PoolTransport) does all socket I/O against one deadline per operation: a signal
//!   (`EINTR`) resumes the operation with the time left, so it neither fails the call nor
//!   restarts its timeout (std's `write_all` alone would re-arm the full socket timeout
//!   after every signal and never time out under a steady stream of them). Its input buffer
//!   grows past `input_buffer_bytes` only while a response head needs it (up to
//!   `max_header_bytes`) and shrinks back once the head is consumed, so an idle connection
//!   holds `input_buffer_bytes + output_buffer_bytes`.
//! * [`Wire`] records, per request attempt, whether a transport was reached, whether it was
//!   last writing, and how many response bytes arrived: what the retry rule (nothing is
//!   resent once a response byte arrived), the connect classification (a failure before any
//!   transport is a connect failure, whatever its I/O kind) and the phase a total timeout
//!   names rely on.

mod buffers;
mod socket;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lease::{Lease, LeaseRegistry};
use crate::service::jittered;
use crate::stats::{CloseCause, PoolCounters};
use socket::{PoolConnector, PoolResolver};

/// What an agent's connector and its transports share with the pool item.
#[derive(Default)]
pub(super) struct Wire {
    /// Open TCP connections of this agent (0 or 1).
    pub(super) sockets: AtomicUsize,
    /// Set while a dropped stream drains its tail: how long the next read may wait, in µs
    /// (what is left of `DRAIN_WAIT`); 0 otherwise.
    pub(super) drain_wait_us: AtomicU64,
    /// The current request attempt reached a transport (a new or pooled connection did I/O).
    reached: AtomicBool,
    /// Response bytes the current request attempt received.
    received: AtomicU64,
    /// The current attempt's last socket operation was a write (it was sending the request).
    writing: AtomicBool,
    /// Set while a health probe runs on this item: a connection it opens is counted as the
    /// probe's (`PoolCounters::probe_connects`), not the callers'.
    pub(super) probing: AtomicBool,
    /// Set by a cancel that shut this item's agent down: its socket, closed by that, counts
    /// as `closed.broken` (not as closed by the peer).
    pub(super) cancelled: AtomicBool,
}

impl Wire {
    /// Starts a request attempt: nothing reached, nothing received.
    pub(super) fn begin_attempt(&self) {
        self.reached.store(false, Relaxed);
        self.received.store(0, Relaxed);
        self.writing.store(false, Relaxed);
    }

    /// Whether the current attempt was writing the request when it stopped.
    pub(super) fn writing(&self) -> bool {
        self.writing.load(Relaxed)
    }

    /// Whether the current attempt reached a transport.
    pub(super) fn reached(&self) -> bool {
        self.reached.load(Relaxed)
    }

    /// Response bytes the current attempt received.
    pub(super) fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }

    /// What a request's token does on cancel: marks the wire (see [`Wire::cancelled`]) and
    /// shuts `agent` down, which interrupts the request in flight, whatever its phase (a
    /// connect or a TLS handshake too: the connector registers each socket with the agent
    /// before it connects), and closes its socket.
    pub(super) fn cancel_hook(self: &Arc<Self>, agent: &ureq::Agent) -> crate::cancel::Hook {
        let (wire, agent) = (Arc::clone(self), agent.clone());
        crate::cancel::Hook::Wake(Box::new(move || {
            wire.cancelled.store(true, Relaxed);
            agent.clone().shutdown();
        }))
    }
}

/// How long, in all, a dropped stream reads the rest of its body before the socket is closed.
pub(super) const DRAIN_WAIT: Duration = Duration::from_millis(20);
/// How much of a dropped stream's body is read to save its connection.
pub(super) const DRAIN_BYTES: u64 = 64 * 1024;

/// One pooled item (r2d2's connection): an agent that holds at most one keep-alive
/// connection. Callers hold it inside an [`HttpConnection`](super::HttpConnection).
pub(crate) struct PooledAgent {
    pub(super) agent: ureq::Agent,
    pub(super) wire: Arc<Wire>,
    pub(super) lease: Arc<Lease>,
    pub(super) expires: Instant,
    pub(super) last_used: Instant,
    /// Set to make r2d2 drop the item on return, with the cause to count.
    pub(super) close: Option<CloseCause>,
}

impl fmt::Debug for PooledAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledAgent")
            .field("sockets", &self.wire.sockets.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// What every agent of one pool is made of (its configuration, the only origin, TLS, an
/// item's lifetime) and reports to (the pool's counters and lease registry): shared by the
/// [`AgentFactory`], the connectors and the pool.
pub(super) struct AgentParts {
    pub(super) agent_config: ureq::config::Config,
    pub(super) counters: Arc<PoolCounters>,
    pub(super) leases: LeaseRegistry,
    pub(super) lifetime: Duration,
    /// The service's host (as in its URL; IPv6 in brackets) and port: the only origin.
    pub(super) origin: (String, u16),
    /// TLS client configuration, for `https` services.
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
}

impl AgentParts {
    pub(super) fn new_agent(&self, wire: &Arc<Wire>) -> ureq::Agent {
        let connector = PoolConnector::new(&self.counters, wire, self.tls.clone());
        let resolver = PoolResolver::new(&self.origin.0, self.origin.1);
        ureq::Agent::with_parts(self.agent_config.clone(), connector, resolver)
    }
}

/// r2d2's `ManageConnection`: makes [`PooledAgent`]s and drops those marked to close.
pub(super) struct AgentFactory(pub(super) Arc<AgentParts>);

impl r2d2::ManageConnection for AgentFactory {
    type Connection = PooledAgent;
    type Error = io::Error;

    /// Creating an item does no I/O: the agent connects on first use. So this never fails
    /// and a backend that is down cannot make r2d2 retry in a loop.
    fn connect(&self) -> Result<PooledAgent, io::Error> {
        let wire = Arc::new(Wire::default());
        let now = Instant::now();
        let agent = self.0.new_agent(&wire);
        let lease = self.0.leases.register();
        lease.set_interrupt(crate::lease::Interrupt::Agent(agent.clone()));
        Ok(PooledAgent {
            agent,
            wire,
            lease,
            expires: now + jittered(self.0.lifetime),
            last_used: now,
            close: None,
        })
    }

    fn is_valid(&self, _: &mut PooledAgent) -> Result<(), io::Error> {
        Ok(())
    }

    fn has_broken(&self, item: &mut PooledAgent) -> bool {
        match item.close {
            Some(cause) => {
                self.0
                    .counters
                    .closed(cause, item.wire.sockets.load(Relaxed) as u64);
                true
            }
            None => false,
        }
    }
}
