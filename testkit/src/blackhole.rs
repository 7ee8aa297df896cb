//! [`Blackhole`]: a loopback address where a TCP connect neither succeeds nor fails, but
//! waits (a server whose SYNs are dropped), for tests of connect deadlines.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A listener on `127.0.0.1` with a backlog of one, kept full and never accepted from: the
/// kernel drops the SYN of every further connect, which then waits for its retransmissions
/// until its own timeout. Dropping it closes the listener.
pub struct Blackhole {
    listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    /// Opens one.
    ///
    /// # Errors
    /// When the socket cannot be made, or the backlog never fills (then a connect there
    /// would not wait, and a test built on it would prove nothing).
    pub fn new() -> io::Result<Blackhole> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        socket.listen(0)?;
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr()?;
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                Ok(s) => fillers.push(s),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Ok(Blackhole {
                        listener,
                        _fillers: fillers,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(
            "the accept queue never filled: connects do not wait here",
        ))
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }
}
