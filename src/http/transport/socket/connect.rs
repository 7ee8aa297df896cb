//! [`PoolConnector`]: connects TCP to the resolved addresses within the connect deadline,
//! completes the TLS handshake for `https`, and counts every real connect ([`CountedTcp`]).

use std::fmt;
use std::io;
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ureq::unversioned::resolver::ResolvedSocketAddrs;
use ureq::unversioned::transport::{ConnectionDetails, Connector, ShutdownHandle};

use super::super::buffers::PoolBuffers;
use super::super::Wire;
use super::{io_error, Armed, Deadline, PoolTransport, SocketIo};
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
        let stream = connect_tcp(&details.addrs, deadline)?;
        let _ = stream.set_nodelay(true);
        let socket = CountedTcp::opened(stream, &self.counters, &self.wire);
        (details.register_shutdown)(Arc::downgrade(&socket.stream) as Weak<dyn ShutdownHandle>)?;
        let mut armed = Armed::default();
        let tls = if details.needs_tls() {
            match self.handshake(details, &socket.stream, &mut armed, deadline) {
                Ok(conn) => Some(Box::new(conn)),
                Err(e) => {
                    self.counters.closed(CloseCause::Broken, 1);
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
        stream: &TcpStream,
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

/// Tries the resolved addresses in order, sharing the time left among those not yet tried.
/// Errors that concern one address (refused, unreachable) move on to the next; others (out
/// of file descriptors) end the attempt at once.
fn connect_tcp(addrs: &ResolvedSocketAddrs, deadline: Deadline) -> Result<TcpStream, ureq::Error> {
    let mut last = None;
    let count = addrs.len();
    for (i, addr) in addrs.iter().enumerate() {
        let left = deadline
            .left()
            .map_err(|_| ureq::Error::Timeout(deadline.reason))?;
        let attempt = match left {
            None => TcpStream::connect(addr),
            Some(left) => {
                let share = (left / (count - i) as u32).max(Duration::from_millis(10));
                TcpStream::connect_timeout(addr, share.min(left))
            }
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                last = Some(ureq::Error::Timeout(deadline.reason));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::HostUnreachable
                        | io::ErrorKind::NetworkUnreachable
                        | io::ErrorKind::NetworkDown
                        | io::ErrorKind::AddrNotAvailable
                ) =>
            {
                last = Some(io::Error::new(e.kind(), format!("{addr}: {e}")).into());
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{addr}: {e}")).into()),
        }
    }
    Err(last.unwrap_or(ureq::Error::HostNotFound))
}

/// A TCP connection, counted: opened when made, closed when dropped.
pub(super) struct CountedTcp {
    pub(super) stream: Arc<TcpStream>,
    counters: Arc<PoolCounters>,
    wire: Arc<Wire>,
}

impl CountedTcp {
    fn opened(stream: TcpStream, counters: &Arc<PoolCounters>, wire: &Arc<Wire>) -> CountedTcp {
        counters.created.fetch_add(1, Relaxed);
        wire.sockets.fetch_add(1, Relaxed);
        CountedTcp {
            stream: Arc::new(stream),
            counters: Arc::clone(counters),
            wire: Arc::clone(wire),
        }
    }
}

impl Drop for CountedTcp {
    fn drop(&mut self) {
        self.wire.sockets.fetch_sub(1, Relaxed);
        self.counters.closed_total.fetch_add(1, Relaxed);
    }
}
