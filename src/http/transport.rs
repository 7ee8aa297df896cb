//! What one pooled item is: a `ureq::Agent` holding at most one keep-alive connection, and
//! the counting connector that sees every real TCP connect and close.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, DefaultConnector, NextTimeout, Transport,
};

use crate::lease::{Lease, LeaseRegistry};
use crate::service::jittered;
use crate::stats::{CloseCause, PoolCounters};

/// What an agent's connector and its transports share with the pool item.
#[derive(Default)]
pub(super) struct Wire {
    /// Open TCP connections of this agent (0 or 1).
    pub(super) sockets: AtomicUsize,
    /// Set while a dropped stream drains its tail: how long the next read may wait, in µs
    /// (what is left of `DRAIN_WAIT`); 0 otherwise.
    pub(super) drain_wait_us: AtomicU64,
}

/// How long, in all, a dropped stream reads the rest of its body before the socket is closed.
pub(super) const DRAIN_WAIT: Duration = Duration::from_millis(20);
/// How much of a dropped stream's body is read to save its connection.
pub(super) const DRAIN_BYTES: u64 = 64 * 1024;

/// One pooled item: an agent that holds at most one keep-alive connection.
pub(crate) struct HttpConn {
    pub(super) agent: ureq::Agent,
    pub(super) wire: Arc<Wire>,
    pub(super) lease: Arc<Lease>,
    pub(super) expires: Instant,
    pub(super) last_used: Instant,
    /// Set to make r2d2 drop the item on return, with the cause to count.
    pub(super) close: Option<CloseCause>,
}

impl fmt::Debug for HttpConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConn")
            .field("sockets", &self.wire.sockets.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// State the r2d2 manager and the connectors share with the pool.
pub(super) struct Shared {
    pub(super) agent_config: ureq::config::Config,
    pub(super) counters: Arc<PoolCounters>,
    pub(super) leases: LeaseRegistry,
    pub(super) lifetime: Duration,
}

impl Shared {
    pub(super) fn new_agent(&self, wire: &Arc<Wire>) -> ureq::Agent {
        let connector = DefaultConnector::default().chain(CountingConnector {
            counters: Arc::clone(&self.counters),
            wire: Arc::clone(wire),
        });
        ureq::Agent::with_parts(
            self.agent_config.clone(),
            connector,
            DefaultResolver::default(),
        )
    }
}

pub(super) struct Manager(pub(super) Arc<Shared>);

impl r2d2::ManageConnection for Manager {
    type Connection = HttpConn;
    type Error = io::Error;

    /// Creating an item does no I/O: the agent connects on first use. So this never fails
    /// and a backend that is down cannot make r2d2 retry in a loop.
    fn connect(&self) -> Result<HttpConn, io::Error> {
        let wire = Arc::new(Wire::default());
        let now = Instant::now();
        Ok(HttpConn {
            agent: self.0.new_agent(&wire),
            wire,
            lease: self.0.leases.register(),
            expires: now + jittered(self.0.lifetime),
            last_used: now,
            close: None,
        })
    }

    fn is_valid(&self, _: &mut HttpConn) -> Result<(), io::Error> {
        Ok(())
    }

    fn has_broken(&self, conn: &mut HttpConn) -> bool {
        match conn.close {
            Some(cause) => {
                self.0
                    .counters
                    .closed(cause, conn.wire.sockets.load(Relaxed) as u64);
                true
            }
            None => false,
        }
    }
}

/// Counts real TCP connects; the transport it wraps counts the close.
pub(super) struct CountingConnector {
    pub(super) counters: Arc<PoolCounters>,
    pub(super) wire: Arc<Wire>,
}

impl fmt::Debug for CountingConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CountingConnector")
    }
}

impl Connector<Box<dyn Transport>> for CountingConnector {
    type Out = CountedTransport;

    fn connect(
        &self,
        _: &ConnectionDetails<'_>,
        chained: Option<Box<dyn Transport>>,
    ) -> Result<Option<CountedTransport>, ureq::Error> {
        Ok(chained.map(|inner| {
            self.counters.created.fetch_add(1, Relaxed);
            self.wire.sockets.fetch_add(1, Relaxed);
            CountedTransport {
                inner,
                counters: Arc::clone(&self.counters),
                wire: Arc::clone(&self.wire),
            }
        }))
    }
}

pub(super) struct CountedTransport {
    pub(super) inner: Box<dyn Transport>,
    pub(super) counters: Arc<PoolCounters>,
    pub(super) wire: Arc<Wire>,
}

impl fmt::Debug for CountedTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Drop for CountedTransport {
    fn drop(&mut self) {
        self.wire.sockets.fetch_sub(1, Relaxed);
        self.counters.closed_total.fetch_add(1, Relaxed);
    }
}

impl Transport for CountedTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }
    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.inner.transmit_output(amount, timeout)
    }
    fn await_input(&mut self, mut timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let drain_us = self.wire.drain_wait_us.load(Relaxed);
        if drain_us != 0 {
            let wait = Duration::from_micros(drain_us);
            timeout.after = wait.into();
            timeout.per_read = Some(wait.into());
        }
        self.inner.await_input(timeout)
    }
    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }
    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}
