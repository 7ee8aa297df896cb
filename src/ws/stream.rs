//! [`WsStream`]: the byte stream under a pooled WebSocket.
//!
//! Two jobs tungstenite cannot do for a blocking pool:
//!
//! * **Deadlines and signals** (at the bottom, on the TCP socket, under TLS). A socket timeout
//!   (`SO_RCVTIMEO` / `SO_SNDTIMEO`) bounds one system call, so a peer that trickles bytes
//!   (a handshake answered one byte at a time, a reader that takes a little at a time) keeps a
//!   call going indefinitely. With a deadline set, every read and write sets the socket
//!   timeout to what is left of it first, and ends with [`io::ErrorKind::TimedOut`] once it
//!   has passed. A signal landing in a blocked call (`EINTR`: a read with a socket timeout is
//!   never restarted by the kernel, even with `SA_RESTART`, and every child process that
//!   exits signals the process) is retried within the same deadline: tungstenite and rustls
//!   never see it. Without a deadline (idle sockets, worked on by the maintenance thread),
//!   the socket's own timeouts and blocking mode rule, and an interrupted call resumes within
//!   the timeout it started with. On Windows, a read or a write that waits does so in slices,
//!   so that a cancel or a shutdown (which shuts the socket down) ends it (`crate::net`,
//!   "Windows"); a write without a deadline (a ping or a pong of the maintenance thread, on
//!   an idle socket) is the one exception: one blocking call within the socket's timeout.
//! * **Frame boundaries** (at the top, on the plaintext). The stream follows the frame
//!   headers of both directions, so the pool knows whether a socket stopped between two
//!   messages or holds half a frame (a read that timed out mid-message, a partial frame that
//!   came in behind a whole one). Only the header bytes are looked at; payloads are skipped
//!   by count.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::net::SharedTcp;

use super::frames::Frames;

/// The byte stream of a pooled WebSocket: TCP (or TLS over TCP) with a deadline per
/// operation, signal-safe, and aware of where frames begin and end. Not public: callers see
/// its addresses through [`WsGuard`](super::WsGuard).
pub struct WsStream {
    io: Io,
    rx: Frames,
    tx: Frames,
}

enum Io {
    Plain(Timed),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Timed>>),
}

impl WsStream {
    /// Wraps a connected socket, with `deadline` for the TLS and WebSocket handshakes.
    pub(crate) fn open(
        tcp: Arc<SharedTcp>,
        tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
        deadline: Instant,
    ) -> Result<WsStream, rustls::Error> {
        let timed = Timed {
            tcp,
            deadline: Some(deadline),
            armed: [None, None],
        };
        let io = match tls {
            None => Io::Plain(timed),
            Some((config, name)) => Io::Tls(Box::new(rustls::StreamOwned::new(
                rustls::ClientConnection::new(config, name)?,
                timed,
            ))),
        };
        Ok(WsStream {
            io,
            rx: Frames::after_http_head(),
            tx: Frames::after_http_head(),
        })
    }

    /// The local address of the TCP connection.
    ///
    /// # Errors
    /// As [`TcpStream::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// The server's address.
    ///
    /// # Errors
    /// As [`TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// True for `wss`.
    pub fn is_tls(&self) -> bool {
        matches!(self.io, Io::Tls(_))
    }

    /// The TCP socket, shared: a clone of the `Arc` lets another thread shut it down (see
    /// `crate::abort`, `crate::cancel`) without a second descriptor.
    pub(crate) fn tcp(&self) -> &Arc<SharedTcp> {
        &self.timed().tcp
    }

    fn timed(&self) -> &Timed {
        match &self.io {
            Io::Plain(t) => t,
            Io::Tls(s) => s.get_ref(),
        }
    }

    fn timed_mut(&mut self) -> &mut Timed {
        match &mut self.io {
            Io::Plain(t) => t,
            Io::Tls(s) => s.get_mut(),
        }
    }

    /// Every read and write from now on ends by `deadline` (with
    /// [`io::ErrorKind::TimedOut`] once it has passed).
    pub(crate) fn set_deadline(&mut self, deadline: Instant) {
        self.timed_mut().deadline = Some(deadline);
    }

    /// Back to the socket's own timeouts and blocking mode (an idle socket). No system call.
    /// What was armed stays recorded: it is what the socket has until someone else sets a
    /// timeout, which goes through [`WsStream::set_timeouts`] (so the next lease's first
    /// message does not pay a system call per direction to set what is already set).
    pub(crate) fn clear_deadline(&mut self) {
        self.timed_mut().deadline = None;
    }

    /// Sets the socket's own read and write timeouts (an idle socket's: maintenance, connect)
    /// and records them as armed.
    pub(crate) fn set_timeouts(&mut self, read: Duration, write: Duration) -> io::Result<()> {
        let t = self.timed_mut();
        t.armed = [None, None];
        t.tcp.set_read_timeout(Some(read))?;
        t.tcp.set_write_timeout(Some(write))?;
        t.armed = [Some(read), Some(write)];
        Ok(())
    }

    /// True when the stream stopped between two messages: no partial frame or fragmented
    /// message received, no partial frame written.
    pub(crate) fn at_rest(&self) -> bool {
        self.rx.at_message_boundary() && self.tx.at_message_boundary()
    }
}

impl Read for WsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.io {
            Io::Plain(t) => t.read(buf),
            Io::Tls(s) => s.read(buf),
        }?;
        self.rx.feed(&buf[..n]);
        Ok(n)
    }
}

impl Write for WsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.io {
            Io::Plain(t) => t.write(buf),
            Io::Tls(s) => s.write(buf),
        }?;
        self.tx.feed(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.io {
            Io::Plain(t) => t.flush(),
            Io::Tls(s) => s.flush(),
        }
    }
}

impl fmt::Debug for WsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsStream")
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .field("tls", &self.is_tls())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Dir {
    Read = 0,
    Write = 1,
}

/// The TCP socket with an optional deadline. See the module docs.
struct Timed {
    tcp: Arc<SharedTcp>,
    /// `Some`: every call ends by then. `None`: the socket's own timeouts rule.
    deadline: Option<Instant>,
    /// The timeout this wrapper last set on the socket, per direction (`None`: unknown).
    armed: [Option<Duration>; 2],
}

impl Timed {
    fn io<T>(
        &mut self,
        dir: Dir,
        mut op: impl FnMut(&TcpStream) -> io::Result<T>,
    ) -> io::Result<T> {
        let Some(deadline) = self.deadline else {
            return self.io_own_timeout(dir, op);
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
            }
            self.arm(dir, left)?;
            match op(&self.tcp) {
                // A signal, or the socket timeout (armed with what was left) expired: the
                // loop decides against the deadline.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                    ) => {}
                other => return other,
            }
        }
    }

    /// Sets the socket timeout to `left`, unless the one armed is close to it (see [`arm`]).
    fn arm(&mut self, dir: Dir, left: Duration) -> io::Result<()> {
        arm(&mut self.armed, &self.tcp, dir, left)
    }

    fn set_timeout(&self, dir: Dir, t: Option<Duration>) -> io::Result<()> {
        set_timeout(&self.tcp, dir, t)
    }

    /// Windows: a read in slices (`crate::net`, "Windows"), by the deadline or, without
    /// one, within the socket's own read timeout (restored afterwards).
    #[cfg(windows)]
    fn read_in_slices(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use crate::net::windows;
        let (tcp, armed): (&SharedTcp, _) = (&self.tcp, &mut self.armed);
        if let Some(deadline) = self.deadline {
            return windows::read(tcp, buf, Some(deadline), |slice| {
                arm(armed, tcp, Dir::Read, slice)
            });
        }
        let own = tcp.read_timeout()?;
        let read = windows::read(tcp, buf, own.map(|t| Instant::now() + t), |slice| {
            tcp.set_read_timeout(Some(slice))
        });
        tcp.set_read_timeout(own)?;
        read
    }

    /// Without a deadline: the socket's own timeout bounds the call as a whole, interrupted
    /// or not. (A non-blocking socket is never interrupted.)
    fn io_own_timeout<T>(
        &mut self,
        dir: Dir,
        mut op: impl FnMut(&TcpStream) -> io::Result<T>,
    ) -> io::Result<T> {
        let start = Instant::now();
        // The socket's timeout, read at the first interruption.
        let mut own: Option<Option<Duration>> = None;
        let result = loop {
            match op(&self.tcp) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
            let base = match own {
                Some(base) => base,
                None => {
                    let base = match dir {
                        Dir::Read => self.tcp.read_timeout(),
                        Dir::Write => self.tcp.write_timeout(),
                    };
                    *own.insert(base?)
                }
            };
            if let Some(base) = base {
                let left = (start + base).saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // What the socket itself reports when its timeout expires.
                    break Err(io::Error::new(io::ErrorKind::WouldBlock, "timed out"));
                }
                if let Err(e) = self.set_timeout(dir, Some(left)) {
                    break Err(e);
                }
            }
        };
        if let Some(base @ Some(_)) = own {
            let _ = self.set_timeout(dir, base);
        }
        result
    }
}

/// Sets the socket timeout to `left`, unless the one `armed` is within a small slack of it
/// (a call may end that much past the deadline; saves a system call per message on a busy
/// socket).
fn arm(
    armed: &mut [Option<Duration>; 2],
    tcp: &TcpStream,
    dir: Dir,
    left: Duration,
) -> io::Result<()> {
    let slack = (left / 16).min(Duration::from_millis(10));
    if let Some(cur) = armed[dir as usize] {
        let off = if cur > left { cur - left } else { left - cur };
        if off <= slack {
            return Ok(());
        }
    }
    set_timeout(tcp, dir, Some(left))?;
    armed[dir as usize] = Some(left);
    Ok(())
}

fn set_timeout(tcp: &TcpStream, dir: Dir, t: Option<Duration>) -> io::Result<()> {
    match dir {
        Dir::Read => tcp.set_read_timeout(t),
        Dir::Write => tcp.set_write_timeout(t),
    }
}

impl Read for Timed {
    #[cfg(not(windows))]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.io(Dir::Read, |mut tcp| tcp.read(buf))
    }

    #[cfg(windows)]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_in_slices(buf)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        #[cfg(windows)]
        if let Some(deadline) = self.deadline {
            return crate::net::windows::write(&self.tcp, buf, Some(deadline));
        }
        self.io(Dir::Write, |mut tcp| tcp.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
