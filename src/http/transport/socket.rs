//! The socket layer under ureq: [`PoolResolver`] (in `resolve`), [`PoolConnector`] (in
//! `connect`) and, here, [`PoolTransport`] (see the parent module's docs), and [`SocketIo`],
//! which runs every read and write against one deadline and resumes it after a signal.

mod connect;
mod resolve;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::unversioned::transport::time::Duration as UreqDuration;
use ureq::unversioned::transport::{Buffers, NextTimeout, Transport};

use super::buffers::PoolBuffers;
use super::Wire;
use connect::CountedTcp;
pub(super) use connect::PoolConnector;
pub(super) use resolve::PoolResolver;

/// One connection: the socket, its TLS session if any, its buffers.
pub(super) struct PoolTransport {
    socket: CountedTcp,
    armed: Armed,
    tls: Option<Box<rustls::ClientConnection>>,
    buffers: PoolBuffers,
    wire: Arc<Wire>,
}

impl fmt::Debug for PoolTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolTransport")
            .field("peer", &self.socket.stream.peer_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Transport for PoolTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.wire.reached.store(true, Relaxed);
        let deadline = Deadline::new(timeout.for_write()).check()?;
        let data = &self.buffers.output()[..amount];
        let mut io = SocketIo {
            stream: &self.socket.stream,
            deadline,
            armed: &mut self.armed,
        };
        let sent = match &mut self.tls {
            None => io.write_all(data),
            Some(tls) => {
                let mut stream = rustls::Stream::new(&mut **tls, &mut io);
                stream.write_all(data).and_then(|()| stream.flush())
            }
        };
        sent.map_err(|e| io_error(e, deadline.reason))
    }

    fn await_input(&mut self, mut timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.wire.reached.store(true, Relaxed);
        let drain_us = self.wire.drain_wait_us.load(Relaxed);
        if drain_us != 0 {
            let wait = Duration::from_micros(drain_us);
            timeout.after = wait.into();
            timeout.per_read = Some(wait.into());
        }
        let deadline = Deadline::new(timeout.for_read()).check()?;
        let buf = self.buffers.input_append_buf();
        if buf.is_empty() {
            // At the growth cap: ureq reports the head as too large.
            return Ok(false);
        }
        let mut io = SocketIo {
            stream: &self.socket.stream,
            deadline,
            armed: &mut self.armed,
        };
        let read = match &mut self.tls {
            None => io.read(buf),
            Some(tls) => rustls::Stream::new(&mut **tls, &mut io).read(buf),
        };
        let n = read.map_err(|e| io_error(e, deadline.reason))?;
        self.buffers.input_appended(n);
        self.wire.received.fetch_add(n as u64, Relaxed);
        Ok(n > 0)
    }

    /// A pooled connection is reusable only if nothing is waiting on it: a byte (or EOF, or
    /// an error) there means the server closed it or sent something unasked.
    fn is_open(&mut self) -> bool {
        let stream = &*self.socket.stream;
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let quiet = matches!((&*stream).read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        stream.set_nonblocking(false).is_ok() && quiet
    }

    fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// A timeout that expired or the read/write timeouts a socket refused become ureq's timeout
/// with the phase's reason; anything else stays an I/O error.
fn io_error(e: io::Error, reason: ureq::Timeout) -> ureq::Error {
    if e.kind() == io::ErrorKind::TimedOut {
        ureq::Error::Timeout(reason)
    } else {
        ureq::Error::Io(e)
    }
}

/// One operation's deadline.
#[derive(Clone, Copy)]
struct Deadline {
    /// `None`: no deadline.
    at: Option<Instant>,
    reason: ureq::Timeout,
}

impl Deadline {
    fn new(timeout: NextTimeout) -> Deadline {
        let at = match timeout.after {
            UreqDuration::Exact(d) => Some(crate::clock::deadline(Instant::now(), d)),
            UreqDuration::NotHappening => None,
        };
        Deadline {
            at,
            reason: timeout.reason,
        }
    }

    /// Fails at once when no time is left (an I/O call cannot be given a zero timeout).
    fn check(self) -> Result<Deadline, ureq::Error> {
        match self.left() {
            Ok(_) => Ok(self),
            Err(_) => Err(ureq::Error::Timeout(self.reason)),
        }
    }

    /// The time left (`None`: unbounded), or `TimedOut` once it has passed.
    fn left(&self) -> io::Result<Option<Duration>> {
        match self.at {
            None => Ok(None),
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Ok(Some(left)),
                _ => Err(io::ErrorKind::TimedOut.into()),
            },
        }
    }
}

/// The timeouts currently set on a socket, so unchanged ones cost no system call.
#[derive(Default)]
struct Armed {
    read: Option<Duration>,
    write: Option<Duration>,
}

/// How far an armed socket timeout may lie past the deadline before it is re-armed: saves a
/// system call per read while a body flows under a steady per-read timeout.
const ARM_SLACK: Duration = Duration::from_millis(5);

fn arm(
    armed: &mut Option<Duration>,
    left: Option<Duration>,
    set: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let keep = match (*armed, left) {
        (None, None) => true,
        (Some(a), Some(l)) => a >= l && a - l <= ARM_SLACK,
        _ => false,
    };
    if !keep {
        set(left)?;
        *armed = left;
    }
    Ok(())
}

/// The socket seen as `Read + Write` under one deadline: a read or write interrupted by a
/// signal resumes with the time left; one that runs out of time fails with `TimedOut`.
struct SocketIo<'a> {
    stream: &'a TcpStream,
    deadline: Deadline,
    armed: &'a mut Armed,
}

impl SocketIo<'_> {
    /// Runs `op` until it completes: armed with the time left (`timeout` picks the direction's
    /// armed value, `set` sets it on the socket), resumed after a signal or after the socket
    /// timeout expired while the deadline has not.
    fn resume(
        &mut self,
        timeout: fn(&mut Armed) -> &mut Option<Duration>,
        set: fn(&TcpStream, Option<Duration>) -> io::Result<()>,
        mut op: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> io::Result<usize> {
        loop {
            let left = self.deadline.left()?;
            let stream = self.stream;
            arm(timeout(self.armed), left, |d| set(stream, d))?;
            match op(stream) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The socket timeout expired: loop to see whether the deadline has too.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && left.is_some() => {}
                result => return result,
            }
        }
    }
}

impl Read for SocketIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.resume(
            |a| &mut a.read,
            TcpStream::set_read_timeout,
            |mut s| s.read(buf),
        )
    }
}

impl Write for SocketIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.resume(
            |a| &mut a.write,
            TcpStream::set_write_timeout,
            |mut s| s.write(buf),
        )
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_timeout_is_kept_only_within_the_slack_above_the_time_left() {
        let ms = Duration::from_millis;
        let mut armed = Some(ms(1000));
        let mut calls = 0;
        let mut set = |_| {
            calls += 1;
            Ok(())
        };
        arm(&mut armed, Some(ms(998)), &mut set).unwrap();
        arm(&mut armed, Some(ms(900)), &mut set).unwrap();
        arm(&mut armed, Some(ms(901)), &mut set).unwrap();
        arm(&mut armed, None, &mut set).unwrap();
        assert_eq!(calls, 3);
        assert_eq!(armed, None);
    }
}
