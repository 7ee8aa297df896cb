//! The socket of one accepted connection, shared (in an `Arc`) between its thread, the
//! server handle ([`TestServer::kill_connections`](crate::TestServer::kill_connections),
//! [`TestServer::stop`](crate::TestServer::stop)) and its [`WsHandle`](crate::WsHandle)s,
//! with the flag that kills it.
//!
//! # Windows: reads and writes in slices
//!
//! On Windows, `shutdown` of a socket does not wake a call already blocked on it in another
//! thread (Rust's issue 121594; Wine does the same): a connection thread blocked in a read
//! while the client keeps the connection open would outlive `kill_connections`, and `stop`
//! would wait for ever joining it. So on Windows [`Sock::kill`] also sets a flag, and every
//! read and write waits in slices, checking it between them (as the crate's own sockets do):
//!
//! * a read: a one-byte peek with the socket's read timeout armed to the slice (a peek that
//!   times out took nothing, whereas Windows documents a receive that times out as leaving
//!   the socket in an indeterminate state), then the read once something (or the end of the
//!   stream) is there. The slices grow from 20 ms to 200 ms while nothing comes: data ends a
//!   peek at once whatever its slice, so the slice only bounds how late a kill is seen, and
//!   a thousand idle connections cost 5,000 peeks a second, not 50,000 (under Wine each is a
//!   round trip to its single-threaded wineserver). The idle timeout
//!   ([`Sock::set_read_timeout`]) is a deadline over the slices;
//! * a write: the socket non-blocking for the call, so a send takes what fits and says how
//!   much (a blocking send that times out may have sent part of its data without saying so),
//!   with naps of 1 ms doubling up to 20 ms while the client's window stays full. A thread
//!   reading meanwhile (a WebSocket's) sees `WouldBlock` from its peek then, and naps.
//!
//! A killed socket then behaves as on unix: a read returns the end of the stream, a write
//! fails with `BrokenPipe`. On unix every call blocks as one system call, as before.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// On Windows: the first slice of a blocked read, and the longest nap of a blocked write,
/// before it looks at the kill flag.
#[cfg(windows)]
const SLICE: Duration = Duration::from_millis(20);

/// On Windows: the longest slice of a read that has waited a while.
#[cfg(windows)]
const MAX_READ_SLICE: Duration = Duration::from_millis(200);

/// On Windows: the reading thread's timeouts.
#[cfg(windows)]
#[derive(Default)]
struct ReadTimeouts {
    /// How long a read waits for its first byte (`None`: for ever).
    idle: Option<Duration>,
    /// The socket's read timeout as last armed (re-armed only when a slice differs).
    armed: Option<Duration>,
}

/// The socket of one connection and its kill flag.
pub(crate) struct Sock {
    tcp: TcpStream,
    /// Set by [`Sock::kill`]: ends a connection thread parked on a fault or sleeping, and on
    /// Windows its reads and writes.
    killed: AtomicBool,
    /// The idle timeout of a read (the socket's own timeout is armed to each slice).
    #[cfg(windows)]
    read_timeouts: std::sync::Mutex<ReadTimeouts>,
}

impl Sock {
    pub fn new(tcp: TcpStream) -> Sock {
        Sock {
            tcp,
            killed: AtomicBool::new(false),
            #[cfg(windows)]
            read_timeouts: std::sync::Mutex::new(ReadTimeouts::default()),
        }
    }

    /// Sets the kill flag and shuts the socket down (both directions), as a crashing server
    /// would: every call blocked on it ends, and every later one. Idempotent.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

    /// The kill flag.
    pub fn killed(&self) -> &AtomicBool {
        &self.killed
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp.set_nodelay(on)
    }

    /// How long a read waits for its first byte (`None`: for ever) before failing.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        // Rejects a zero timeout, as on unix.
        self.tcp.set_read_timeout(timeout)?;
        #[cfg(windows)]
        {
            *super::shared::lock(&self.read_timeouts) = ReadTimeouts {
                idle: timeout,
                armed: timeout,
            };
        }
        Ok(())
    }
}

#[cfg(not(windows))]
impl Read for &Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.tcp).read(buf)
    }
}

#[cfg(not(windows))]
impl Write for &Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.tcp).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&self.tcp).flush()
    }
}

#[cfg(windows)]
impl Read for &Sock {
    /// The end of the stream once killed; `TimedOut` once the idle timeout passed.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::time::Instant;
        // Only this connection's reading thread reads, and sets the timeouts.
        let mut timeouts = super::shared::lock(&self.read_timeouts);
        let deadline = timeouts.idle.map(|t| Instant::now() + t);
        let mut next = SLICE;
        loop {
            if self.is_killed() {
                return Ok(0);
            }
            let slice = match deadline {
                None => next,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(next),
                    _ => return Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
                },
            };
            next = (next * 2).min(MAX_READ_SLICE);
            if timeouts.armed != Some(slice) {
                self.tcp.set_read_timeout(Some(slice))?;
                timeouts.armed = Some(slice);
            }
            match self.tcp.peek(&mut [0u8; 1]) {
                Ok(_) => break,
                // The slice ended, or a signal: the loop looks at the flag and the deadline.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                // A write on another thread made the socket non-blocking for its call.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
        if self.is_killed() {
            return Ok(0);
        }
        (&self.tcp).read(buf)
    }
}

#[cfg(windows)]
impl Write for &Sock {
    /// Some of `buf`, the socket non-blocking for the call; `BrokenPipe` once killed.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let broken_pipe = || io::Error::new(io::ErrorKind::BrokenPipe, "connection killed");
        if self.is_killed() {
            return Err(broken_pipe());
        }
        self.tcp.set_nonblocking(true)?;
        let mut nap = Duration::from_millis(1);
        let written = loop {
            match (&self.tcp).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                done => break done,
            }
            // The client's window is full: nap, unless killed.
            if self.is_killed() {
                break Err(broken_pipe());
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(SLICE);
        };
        let blocking = self.tcp.set_nonblocking(false);
        written.and_then(|n| blocking.map(|()| n))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
