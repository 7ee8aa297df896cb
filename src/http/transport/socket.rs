//! The socket layer under ureq: [`PoolResolver`] (in `resolve`), [`PoolConnector`] (in
//! `connect`) and, here, [`PoolTransport`] (see the parent module's docs), and [`SocketIo`],
//! which runs every read and write against one deadline and resumes it after a signal (on
//! Windows, in slices that a cancel or a shutdown ends: `crate::net`, "Windows").

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
use crate::net::SharedTcp;
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
        self.wire.writing.store(true, Relaxed);
        self.armed.exchanged = true;
        let deadline = Deadline::start(timeout.for_write())?;
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
        self.wire.writing.store(false, Relaxed);
        self.armed.exchanged = true;
        let drain_us = self.wire.drain_wait_us.load(Relaxed);
        if drain_us != 0 {
            let wait = Duration::from_micros(drain_us);
            timeout.after = wait.into();
            timeout.per_read = Some(wait.into());
        }
        let deadline = Deadline::start(timeout.for_read())?;
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
    ///
    /// ureq 3.5's pool asks twice per request: when a response has been read to its end (the
    /// connection goes back to the agent) and when the next request takes it. The second
    /// check sees everything the first would, and whatever arrived in between, so the first
    /// (recognised by the I/O since the last check) is answered without looking.
    fn is_open(&mut self) -> bool {
        if std::mem::take(&mut self.armed.exchanged) {
            return true;
        }
        quiet(&self.socket.stream)
    }

    fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Whether nothing waits on the socket: no byte, no end of stream, no error. One `recv` that
/// peeks without waiting (ureq's own check costs three system calls: two `ioctl`s that make
/// the socket non-blocking and back around a `read`).
#[cfg(unix)]
fn quiet(stream: &TcpStream) -> bool {
    let socket = socket2::SockRef::from(stream);
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    loop {
        match socket.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            peeked => return matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
        }
    }
}

/// Whether nothing waits on the socket: a read made non-blocking for the occasion.
#[cfg(not(unix))]
fn quiet(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let quiet =
        matches!((&*stream).read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).is_ok() && quiet
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
    /// The time left as the deadline was set (by [`Deadline::start`]), for its first use
    /// ([`Deadline::next`]): a clock read saved per socket operation.
    fresh: Option<Duration>,
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
            fresh: None,
        }
    }

    /// A deadline for an operation that starts now: its first [`Deadline::next`] is the
    /// whole timeout, without reading the clock again. Fails at once when the timeout is
    /// zero (an I/O call cannot be given a zero timeout).
    fn start(timeout: NextTimeout) -> Result<Deadline, ureq::Error> {
        let mut deadline = Deadline {
            at: None,
            reason: timeout.reason,
            fresh: None,
        };
        if let UreqDuration::Exact(d) = timeout.after {
            let now = Instant::now();
            let at = crate::clock::deadline(now, d);
            let left = at.saturating_duration_since(now);
            if left.is_zero() {
                return Err(ureq::Error::Timeout(timeout.reason));
            }
            deadline.at = Some(at);
            deadline.fresh = Some(left);
        }
        Ok(deadline)
    }

    /// The time left, as [`Deadline::left`]; the first call after [`Deadline::start`] takes
    /// it from there.
    #[cfg_attr(windows, allow(dead_code))] // Windows reads and writes take `at` (`crate::net`)
    fn next(&mut self) -> io::Result<Option<Duration>> {
        match self.fresh.take() {
            Some(left) => Ok(Some(left)),
            None => self.left(),
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

/// What is known of a socket's state, so that calls which would not change it are skipped:
/// the timeouts currently set, and whether it did I/O since the last `is_open` check.
#[derive(Default)]
struct Armed {
    read: Option<Duration>,
    #[cfg_attr(windows, allow(dead_code))] // Windows writes are non-blocking (`crate::net`)
    write: Option<Duration>,
    /// Written or read since the last `is_open`: the next check is the one on return
    /// (see [`PoolTransport::is_open`]).
    exchanged: bool,
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
/// signal resumes with the time left; one that runs out of time fails with `TimedOut`. On
/// Windows, one that waits does so in slices, and ends once the socket is shut down.
struct SocketIo<'a> {
    stream: &'a SharedTcp,
    deadline: Deadline,
    armed: &'a mut Armed,
}

impl SocketIo<'_> {
    /// Runs `op` until it completes: armed with the time left (`timeout` picks the direction's
    /// armed value, `set` sets it on the socket), resumed after a signal or after the socket
    /// timeout expired while the deadline has not.
    #[cfg(not(windows))]
    fn resume(
        &mut self,
        timeout: fn(&mut Armed) -> &mut Option<Duration>,
        set: fn(&TcpStream, Option<Duration>) -> io::Result<()>,
        mut op: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> io::Result<usize> {
        loop {
            let left = self.deadline.next()?;
            let stream: &TcpStream = self.stream;
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
    #[cfg(not(windows))]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.resume(
            |a| &mut a.read,
            TcpStream::set_read_timeout,
            |mut s| s.read(buf),
        )
    }

    #[cfg(windows)]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (stream, armed) = (self.stream, &mut self.armed.read);
        crate::net::windows::read(stream, buf, self.deadline.at, |slice| {
            arm(armed, Some(slice), |d| stream.set_read_timeout(d))
        })
    }
}

impl Write for SocketIo<'_> {
    #[cfg(not(windows))]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.resume(
            |a| &mut a.write,
            TcpStream::set_write_timeout,
            |mut s| s.write(buf),
        )
    }

    #[cfg(windows)]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::net::windows::write(self.stream, buf, self.deadline.at)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_deadline_lends_its_whole_timeout_once_then_reads_the_clock() {
        let timeout = |after: UreqDuration| NextTimeout {
            after,
            reason: ureq::Timeout::RecvResponse,
            ..NextTimeout::default()
        };
        let mut deadline = Deadline::start(timeout(Duration::from_secs(60).into())).unwrap();
        assert_eq!(deadline.next().unwrap(), Some(Duration::from_secs(60)));
        let later = deadline.next().unwrap().unwrap();
        assert!(later <= Duration::from_secs(60) && later > Duration::from_secs(59));
        let mut unbounded = Deadline::start(timeout(UreqDuration::NotHappening)).unwrap();
        assert_eq!(unbounded.next().unwrap(), None);
        assert!(matches!(
            Deadline::start(timeout(Duration::ZERO.into())),
            Err(ureq::Error::Timeout(ureq::Timeout::RecvResponse))
        ));
        let huge = Deadline::start(timeout(Duration::MAX.into())).unwrap();
        assert!(huge.fresh.unwrap() >= crate::clock::FAR / 100);
    }

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
