//! [`PoolConnector`]: connects TCP to the resolved addresses within the connect deadline,
//! completes the TLS handshake for `https`, and counts every real connect ([`CountedTcp`]).
//!
//! Each attempt's socket is registered with the agent's shutdown handles before it connects
//! (`crate::net`, "Ending a connect from another thread"), so `Agent::shutdown` ends a
//! connect or a TLS handshake in progress, as it ends a read: what a request's cancel token
//! and a shutdown past its deadline do to the item's agent.

use std::fmt;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};

use ureq::unversioned::transport::{ConnectionDetails, Connector, ShutdownHandle};

use super::super::buffers::PoolBuffers;
use super::super::Wire;
use super::{io_error, Armed, Deadline, PoolTransport, SocketIo};
use crate::net::SharedTcp;
use crate::stats::{CloseCause, PoolCounters};

/// Connects TCP (and TLS for `https`) and counts every real connect.
pub(in crate::http::transport) struct PoolConnector {
    counters: Arc<PoolCounters>,
    wire: Arc<Wire>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl PoolConnector {
    pub(in crate::http::transport) fn new(
        counters: &Arc<PoolCounters>,
        wire: &Arc<Wire>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> PoolConnector {
        PoolConnector {
            counters: Arc::clone(counters),
            wire: Arc::clone(wire),
            tls,
        }
    }
}

impl fmt::Debug for PoolConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PoolConnector")
    }
}

impl Connector<()> for PoolConnector {
    type Out = PoolTransport;

    fn connect(
        &self,
        details: &ConnectionDetails<'_>,
        _: Option<()>,
    ) -> Result<Option<PoolTransport>, ureq::Error> {
        let deadline = Deadline::new(details.timeout);
        let stream = connect_tcp(details, deadline)?;
        let _ = stream.set_nodelay(true);
        let mut socket = CountedTcp::opened(stream, &self.counters, &self.wire);
        let mut armed = Armed::default();
        let tls = if details.needs_tls() {
            match self.handshake(details, &socket.stream, &mut armed, deadline) {
                Ok(conn) => Some(Box::new(conn)),
                Err(e) => {
                    socket.broken = true;
                    return Err(e);
                }
            }
        } else {
            None
        };
        let config = details.config;
        Ok(Some(PoolTransport {
            socket,
            armed,
            tls,
            buffers: PoolBuffers::new(
                config.input_buffer_size(),
                config.output_buffer_size(),
                config.max_response_header_size(),
            ),
            wire: Arc::clone(&self.wire),
        }))
    }
}

impl PoolConnector {
    fn handshake(
        &self,
        details: &ConnectionDetails<'_>,
        stream: &SharedTcp,
        armed: &mut Armed,
        deadline: Deadline,
    ) -> Result<rustls::ClientConnection, ureq::Error> {
        let config = self.tls.clone().ok_or_else(|| {
            io::Error::other("https needs a TLS configuration and the service has none")
        })?;
        let host = details.uri.host().unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(bare.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{host}' is not a valid TLS server name: {e}"),
            )
        })?;
        let mut conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut io = SocketIo {
            stream,
            deadline,
            armed,
        };
        while conn.is_handshaking() {
            conn.complete_io(&mut io)
                .map_err(|e| io_error(e, deadline.reason))?;
        }
        Ok(conn)
    }
}

/// Connects to the first of the resolved addresses that answers by the deadline, through
/// the crate's one connect function (`crate::net::connect_tcp`), each attempt's socket
/// registered with the agent's shutdown handles before it connects (a shut-down agent
/// refuses the registration: the connect ends with that error).
fn connect_tcp(
    details: &ConnectionDetails<'_>,
    deadline: Deadline,
) -> Result<Arc<SharedTcp>, ureq::Error> {
    let register = |socket: &Arc<SharedTcp>| {
        (details.register_shutdown)(Arc::downgrade(socket) as Weak<dyn ShutdownHandle>).map_err(
            |e| match e {
                ureq::Error::Io(e) => e,
                other => io::Error::other(other),
            },
        )
    };
    crate::net::connect_tcp(&details.addrs, deadline.at, register)
        .map(|(stream, ())| stream)
        .map_err(|e| from_net(e, deadline.reason))
}

/// A `crate::net` error as ureq's: the deadline passing is ureq's timeout of this phase.
pub(super) fn from_net(e: io::Error, reason: ureq::Timeout) -> ureq::Error {
    match e.kind() {
        io::ErrorKind::TimedOut => ureq::Error::Timeout(reason),
        _ => ureq::Error::Io(e),
    }
}

/// A TCP connection, counted: opened when made, closed when dropped; closed as broken when
/// its TLS handshake failed or a cancel shut it down (once, whichever came).
pub(super) struct CountedTcp {
    pub(super) stream: Arc<SharedTcp>,
    counters: Arc<PoolCounters>,
    wire: Arc<Wire>,
    /// Its TLS handshake failed.
    broken: bool,
}

impl CountedTcp {
    fn opened(
        stream: Arc<SharedTcp>,
        counters: &Arc<PoolCounters>,
        wire: &Arc<Wire>,
    ) -> CountedTcp {
        counters.created.fetch_add(1, Relaxed);
        if wire.probing.load(Relaxed) {
            counters.probe_connects.fetch_add(1, Relaxed);
        }
        wire.sockets.fetch_add(1, Relaxed);
        CountedTcp {
            stream,
            counters: Arc::clone(counters),
            wire: Arc::clone(wire),
            broken: false,
        }
    }
}

impl Drop for CountedTcp {
    fn drop(&mut self) {
        self.wire.sockets.fetch_sub(1, Relaxed);
        self.counters.closed_total.fetch_add(1, Relaxed);
        if self.broken || self.wire.cancelled.load(Relaxed) {
            self.counters.closed(CloseCause::Broken, 1);
        }
    }
}
