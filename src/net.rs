//! Opening a TCP connection within one deadline: the one way this crate connects (WebSocket
//! connects, TCP health probes, the HTTP transport's resolver and connector).
//!
//! * [`resolve`]: an IP literal needs no lookup; a name is looked up on a helper thread (the
//!   system resolver blocks and knows no deadline), abandoned when the deadline passes.
//! * [`connect_tcp`]: tries the addresses in order, each with a fair share of the time left
//!   (the time left divided among the addresses not yet tried, at least 10 ms), so an address
//!   that drops SYNs cannot use up the whole deadline before the next one is tried.
//!
//! Errors are [`io::Error`]s, classified the same way for every caller: kind
//! [`io::ErrorKind::TimedOut`] means the deadline passed; an error that concerns one address
//! (refused, unreachable) moves on to the next, the last one is returned; any other (out of
//! file descriptors) ends the attempt at once. Messages name the address or the host.
//!
//! # Ending a connect from another thread
//!
//! Each attempt's socket is made before it connects and handed to the caller's `watch`,
//! which registers it wherever a cancel or a shutdown will find it (a `CancelToken`, the
//! service's `Aborts`, a ureq agent's shutdown handles) and may stop the attempt (a token
//! already cancelled). Shutting that socket down from any thread ends the connect at once,
//! on the connecting thread itself: no helper thread, and the descriptor closes when the
//! call returns. On Linux a connect in progress (`SYN_SENT`) then fails with
//! `ConnectionReset`, and one that had not yet begun fails as soon as it begins (checked by
//! `a_socket_shut_down_ends_its_connect_whenever_the_shutdown_comes`); BSD-derived kernels
//! close a connecting socket on shutdown too. The watch lives on with the connected socket,
//! so what it registered cuts the handshakes that follow short as well.
//!
//! A name lookup cannot be interrupted (the system resolver offers no handle): it ends by the
//! deadline, and an IP literal needs none.
//!
//! # Windows: a shut-down flag, and blocking calls in slices
//!
//! On Windows, `shutdown` of a socket does not wake a call already blocked on it in another
//! thread (Rust's issue 121594; Wine does the same), and does not end a connect in progress:
//! only `closesocket` does, and closing a handle another thread is about to use is unsound
//! (the handle's number may be reused by a new socket in between, whose bytes that thread
//! would then read or write). So [`SharedTcp::shut_down`] also sets a flag, and on Windows
//! every blocking step on a [`SharedTcp`] that can be shut down waits in slices of at most
//! [`windows::SLICE`], checking the flag between them (`windows`):
//!
//! * a connect: socket2's non-blocking connect and poll for a first slice, then the socket's
//!   state (`SO_ERROR`, `getpeername`) checked between naps;
//! * a read: a one-byte peek with the socket's read timeout armed to the slice, then the read
//!   once something (or the end of the stream) is there. A peek that times out took nothing,
//!   whereas Windows documents a receive that times out as leaving the socket in an
//!   indeterminate state;
//! * a write: made non-blocking for the call, so a send takes what fits and says how much
//!   (a blocking send that times out may have sent part of its data without saying so: the
//!   stream would be corrupt), with naps of 1 ms doubling up to the slice while the
//!   peer's window stays full; blocking again when it returns.
//!
//! A shut-down socket then behaves as on unix: a read returns the end of the stream, a write
//! fails with `BrokenPipe`, a connect with `ConnectionReset`. Unix pays nothing for this:
//! there the flag does not exist and every call blocks as one system call.

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Deref;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The least time an address is given, however many are left to try.
const MIN_SHARE: Duration = Duration::from_millis(10);

/// A connection's TCP socket, shared (in an `Arc`, no second descriptor) between the thread
/// doing its I/O and whatever may cut that I/O short from another thread: a cancel token,
/// the service's aborts, a lease's interrupt, a ureq agent's shutdown handles. Derefs to the
/// [`TcpStream`]. See the module docs, "Windows".
#[derive(Debug)]
pub(crate) struct SharedTcp {
    tcp: TcpStream,
    /// Set by [`SharedTcp::shut_down`]: the slices of a blocked call see it.
    #[cfg(windows)]
    shut: std::sync::atomic::AtomicBool,
}

impl SharedTcp {
    /// Ends every call blocked on the socket, from any thread, and every later one: a read
    /// sees the end of the stream, a write fails, a connect in progress fails. Idempotent.
    pub(crate) fn shut_down(&self) {
        #[cfg(windows)]
        self.shut.store(true, std::sync::atomic::Ordering::SeqCst);
        // An error means the socket is closed already, or not yet connected (on Windows: the
        // flag ends that connect).
        let _ = self.tcp.shutdown(Shutdown::Both);
    }
}

impl From<TcpStream> for SharedTcp {
    fn from(tcp: TcpStream) -> SharedTcp {
        SharedTcp {
            tcp,
            #[cfg(windows)]
            shut: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Deref for SharedTcp {
    type Target = TcpStream;

    fn deref(&self) -> &TcpStream {
        &self.tcp
    }
}

/// What `ureq::Agent::shutdown` calls on each socket the HTTP connector registered.
impl ureq::unversioned::transport::ShutdownHandle for SharedTcp {
    fn shutdown(&self) {
        self.shut_down();
    }
}

/// Resolves `host` (brackets around an IPv6 literal allowed) and connects to one of its
/// addresses, all by `deadline`; see [`connect_tcp`] for `watch`.
pub(crate) fn connect<W>(
    host: &str,
    port: u16,
    deadline: Instant,
    watch: impl FnMut(&Arc<SharedTcp>) -> io::Result<W>,
) -> io::Result<(Arc<SharedTcp>, W)> {
    let addrs = resolve(host, port, Some(deadline))?;
    connect_tcp(&addrs, Some(deadline), watch)
}

/// The addresses of `host:port`; by `deadline` if there is one.
pub(crate) fn resolve(
    host: &str,
    port: u16,
    deadline: Option<Instant>,
) -> io::Result<Vec<SocketAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = mpsc::sync_channel(1);
    let name = bare.to_string();
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let _ = tx.send((name.as_str(), port).to_socket_addrs());
        })
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot resolve '{bare}': no thread for the lookup: {e}"),
            )
        })?;
    let timed_out = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("cannot resolve '{bare}': no answer by the deadline"),
        )
    };
    let answer = match deadline {
        None => rx.recv().ok(),
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            match rx.recv_timeout(left) {
                Ok(answer) => Some(answer),
                Err(mpsc::RecvTimeoutError::Timeout) => return Err(timed_out()),
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            }
        }
    };
    match answer {
        Some(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("cannot resolve '{bare}': no address"),
                ));
            }
            Ok(addrs)
        }
        Some(Err(e)) => Err(io::Error::new(
            e.kind(),
            format!("cannot resolve '{bare}': {e}"),
        )),
        None => Err(io::Error::other(format!(
            "cannot resolve '{bare}': the lookup ended"
        ))),
    }
}

/// Connects to the first of `addrs` that answers by `deadline` (`None`: no deadline). See
/// the module docs for how the time is shared and errors are classified.
///
/// `watch` is given each attempt's socket before it connects (see "Ending a connect from
/// another thread"); what it returns stays with the attempt, and the connected socket comes
/// back with the successful attempt's. An error from `watch` ends the connect with that
/// error, as it is.
pub(crate) fn connect_tcp<W>(
    addrs: &[SocketAddr],
    deadline: Option<Instant>,
    mut watch: impl FnMut(&Arc<SharedTcp>) -> io::Result<W>,
) -> io::Result<(Arc<SharedTcp>, W)> {
    let mut last = None;
    for (i, addr) in addrs.iter().enumerate() {
        let share = match deadline {
            None => crate::clock::FAR,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(last.unwrap_or_else(|| timed_out(addr)));
                }
                (left / (addrs.len() - i) as u32).max(MIN_SHARE).min(left)
            }
        };
        match attempt(addr, share, &mut watch)? {
            Ok(connected) => return Ok(connected),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                last = Some(timed_out(addr));
            }
            Err(e) if concerns_one_address(e.kind()) => {
                last = Some(io::Error::new(e.kind(), format!("{addr}: {e}")));
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{addr}: {e}"))),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address to connect to")))
}

/// One attempt: the outer error is the watch's (it ends the connect), the inner result the
/// connect's (classified by [`connect_tcp`]).
type Attempt<W> = io::Result<io::Result<(Arc<SharedTcp>, W)>>;

/// Makes the socket, hands it to `watch`, then connects it within `share`.
fn attempt<W>(
    addr: &SocketAddr,
    share: Duration,
    watch: &mut impl FnMut(&Arc<SharedTcp>) -> io::Result<W>,
) -> Attempt<W> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = match Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    ) {
        Ok(socket) => Arc::new(SharedTcp::from(TcpStream::from(socket))),
        Err(e) => return Ok(Err(e)),
    };
    let watched = watch(&socket)?;
    #[cfg(not(windows))]
    // Non-blocking connect, then `poll` for the time given (resumed after a signal); the
    // socket is blocking again when it returns.
    let connected = socket2::SockRef::from(&**socket).connect_timeout(&(*addr).into(), share);
    #[cfg(windows)]
    let connected = windows::connect(&socket, addr, share);
    Ok(connected.map(|()| (socket, watched)))
}

fn timed_out(addr: &SocketAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{addr}: no answer by the connect deadline"),
    )
}

/// A failure that says something about one address only: the next one may still answer.
fn concerns_one_address(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::NetworkDown
            | io::ErrorKind::AddrNotAvailable
    )
}

/// Windows: the blocking steps of a [`SharedTcp`] in slices, the shut-down flag checked
/// between them (see the module docs, "Windows").
#[cfg(windows)]
pub(crate) mod windows {
    use std::io::{self, Read, Write};
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::{Duration, Instant};

    use super::SharedTcp;

    /// The longest a blocked call waits before it looks at the flag: how late, at most, a
    /// cancel or a shutdown ends it.
    pub(crate) const SLICE: Duration = Duration::from_millis(20);

    /// The first nap of a write or connect that waits; doubled up to [`SLICE`].
    const FIRST_NAP: Duration = Duration::from_millis(1);

    fn is_shut(socket: &SharedTcp) -> bool {
        socket.shut.load(SeqCst)
    }

    fn broken_pipe() -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, "the socket was shut down")
    }

    /// The time left before `deadline` (`None`: a whole slice), at most a slice; `TimedOut`
    /// once it has passed.
    fn slice(deadline: Option<Instant>) -> io::Result<Duration> {
        match deadline {
            None => Ok(SLICE),
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Ok(left.min(SLICE)),
                _ => Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed")),
            },
        }
    }

    /// Connects `socket` to `addr` within `share`, or fails with `ConnectionReset` once it
    /// is shut down.
    pub(super) fn connect(
        socket: &SharedTcp,
        addr: &SocketAddr,
        share: Duration,
    ) -> io::Result<()> {
        let reset = || io::Error::new(io::ErrorKind::ConnectionReset, "the socket was shut down");
        if is_shut(socket) {
            return Err(reset());
        }
        let started = Instant::now();
        let sock = socket2::SockRef::from(&socket.tcp);
        // socket2's non-blocking connect and `WSAPoll`, for one slice: most connects end
        // within it. A connect still in progress goes on (the socket blocking again).
        let first = share.min(SLICE);
        match sock.connect_timeout(&(*addr).into(), first) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut && share > first => {}
            // `WSAPoll` reports a peer that accepted and closed at once as `POLLHUP`, which
            // socket2 takes for a failed connect; the connection was made (as a blocking
            // connect on unix would say): the read that follows meets the close.
            Err(e) if e.kind() != io::ErrorKind::TimedOut && connected(socket) => {
                log::trace!("connect to {addr}: made, then closed by the peer ({e})");
                return Ok(());
            }
            done => return done,
        }
        let mut nap = FIRST_NAP;
        loop {
            if is_shut(socket) {
                return Err(reset());
            }
            if let Some(e) = sock.take_error()? {
                return Err(e);
            }
            if connected(socket) {
                return Ok(());
            }
            let left = share.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            std::thread::sleep(nap.min(left));
            nap = (nap * 2).min(SLICE);
        }
    }

    /// The socket has a peer: its connect succeeded (a closed peer's FIN leaves it so).
    fn connected(socket: &SharedTcp) -> bool {
        socket.tcp.peer_addr().is_ok()
    }

    /// Reads into `buf` by `deadline` (`None`: no deadline): waits for something to read
    /// with a peek, `arm` setting the socket's read timeout to each slice. The end of the
    /// stream once the socket is shut down; `TimedOut` once the deadline passed. A
    /// non-blocking socket's `WouldBlock` is returned as it is.
    pub(crate) fn read(
        socket: &SharedTcp,
        buf: &mut [u8],
        deadline: Option<Instant>,
        mut arm: impl FnMut(Duration) -> io::Result<()>,
    ) -> io::Result<usize> {
        loop {
            if is_shut(socket) {
                return Ok(0);
            }
            arm(slice(deadline)?)?;
            match socket.tcp.peek(&mut [0u8; 1]) {
                Ok(_) => break,
                // The slice ended, or a signal: the loop looks at the flag and the deadline.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        if is_shut(socket) {
            return Ok(0);
        }
        (&socket.tcp).read(buf)
    }

    /// Writes some of `buf` by `deadline` (`None`: no deadline), the socket non-blocking for
    /// the call (blocking again when it returns). `BrokenPipe` once the socket is shut down;
    /// `TimedOut` once the deadline passed.
    pub(crate) fn write(
        socket: &SharedTcp,
        buf: &[u8],
        deadline: Option<Instant>,
    ) -> io::Result<usize> {
        if is_shut(socket) {
            return Err(broken_pipe());
        }
        socket.tcp.set_nonblocking(true)?;
        let mut nap = FIRST_NAP;
        let written = loop {
            match (&socket.tcp).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                done => break done,
            }
            // The peer's window is full: nap, unless shut down or out of time.
            if is_shut(socket) {
                break Err(broken_pipe());
            }
            match slice(deadline) {
                Ok(left) => std::thread::sleep(nap.min(left)),
                Err(e) => break Err(e),
            }
            nap = (nap * 2).min(SLICE);
        };
        let blocking = socket.tcp.set_nonblocking(false);
        written.and_then(|n| blocking.map(|()| n))
    }
}

/// A read on `socket` that blocks until something comes or the socket is shut down, as a
/// connection's I/O does on this platform (on Windows: in slices).
#[cfg(test)]
pub(crate) fn blocking_read(socket: &SharedTcp, buf: &mut [u8]) -> io::Result<usize> {
    #[cfg(windows)]
    {
        windows::read(socket, buf, None, |d| socket.set_read_timeout(Some(d)))
    }
    #[cfg(not(windows))]
    {
        use std::io::Read;
        (&**socket).read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend_pool_testkit::Blackhole;
    use std::net::TcpListener;

    fn no_watch(_: &Arc<SharedTcp>) -> io::Result<()> {
        Ok(())
    }

    /// An address where nothing listens: connects are refused at once.
    fn refused() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn an_address_that_drops_syns_leaves_the_next_one_its_share_of_the_deadline() {
        let hole = Blackhole::new().unwrap();
        let good = TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = [hole.addr(), refused(), good.local_addr().unwrap()];
        let started = Instant::now();
        let (stream, ()) =
            connect_tcp(&addrs, Some(started + Duration::from_millis(900)), no_watch).unwrap();
        assert_eq!(stream.peer_addr().unwrap(), good.local_addr().unwrap());
        let took = started.elapsed();
        // The blackhole got a third of the deadline, not all of it.
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(800),
            "{took:?}"
        );
    }

    #[test]
    fn several_silent_addresses_share_one_deadline() {
        let holes: Vec<Blackhole> = (0..3).map(|_| Blackhole::new().unwrap()).collect();
        let addrs: Vec<SocketAddr> = holes.iter().map(Blackhole::addr).collect();
        let started = Instant::now();
        let err =
            connect_tcp(&addrs, Some(started + Duration::from_millis(300)), no_watch).unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains(&addrs[2].to_string()), "{err}");
        assert!(
            took >= Duration::from_millis(280) && took < Duration::from_millis(700),
            "three addresses took {took:?} for one 300 ms deadline"
        );
    }

    #[test]
    fn refused_addresses_are_all_tried_and_the_last_is_named() {
        let addrs = [refused(), refused()];
        let deadline = Some(Instant::now() + Duration::from_secs(2));
        let err = connect_tcp(&addrs, deadline, no_watch).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        assert!(err.to_string().starts_with(&addrs[1].to_string()), "{err}");
        let none = connect_tcp(&[], None, no_watch).unwrap_err();
        assert_eq!(none.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn names_resolve_within_the_deadline_and_literals_need_no_lookup() {
        let good = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = good.local_addr().unwrap().port();
        let deadline = Instant::now() + Duration::from_secs(2);
        assert!(connect("localhost", port, deadline, no_watch).is_ok());
        assert!(connect("127.0.0.1", port, deadline, no_watch).is_ok());
        assert_eq!(
            resolve("[::1]", 80, None).unwrap(),
            vec![SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 80))]
        );
        let err = resolve("localhost", port, Some(Instant::now())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("'localhost'"), "{err}");
    }

    /// What ending a connect from another thread relies on (module docs): a shutdown of the
    /// socket ends its connect at once whether it comes while the connect waits or before it
    /// began, on the connecting thread, and a watch's error ends the connect as it is.
    #[test]
    fn a_socket_shut_down_ends_its_connect_whenever_the_shutdown_comes() {
        let hole = Blackhole::new().unwrap();
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        let started = Instant::now();
        let err = std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            s.spawn(move || {
                let socket: Arc<SharedTcp> = rx.recv().unwrap();
                std::thread::sleep(Duration::from_millis(50));
                socket.shut_down();
            });
            connect_tcp(&[hole.addr()], deadline, |socket| {
                tx.send(Arc::clone(socket)).unwrap();
                Ok(())
            })
            .unwrap_err()
        });
        let took = started.elapsed();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        assert!(
            took < Duration::from_secs(2),
            "the connect went on {took:?}"
        );

        let started = Instant::now();
        let err = connect_tcp(&[hole.addr()], deadline, |socket| {
            socket.shut_down(); // before the connect begins
            Ok(())
        })
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{err}");
        assert!(
            err.to_string().starts_with(&hole.addr().to_string()),
            "{err}"
        );

        let refused = refused();
        let err = connect_tcp(&[hole.addr(), refused], deadline, |_| -> io::Result<()> {
            Err(io::Error::new(io::ErrorKind::Interrupted, "stop"))
        })
        .unwrap_err();
        assert_eq!(
            (err.kind(), err.to_string()),
            (io::ErrorKind::Interrupted, "stop".into())
        );
    }
}
