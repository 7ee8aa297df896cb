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
//! so what it registered cuts the handshakes that follow short as well. Where the socket
//! cannot be made first (targets without `socket2`: not unix), the watch sees the socket
//! once connected, and the connect ends by its deadline.
//!
//! A name lookup cannot be interrupted (the system resolver offers no handle): it ends by the
//! deadline, and an IP literal needs none.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The least time an address is given, however many are left to try.
const MIN_SHARE: Duration = Duration::from_millis(10);

/// Resolves `host` (brackets around an IPv6 literal allowed) and connects to one of its
/// addresses, all by `deadline`; see [`connect_tcp`] for `watch`.
pub(crate) fn connect<W>(
    host: &str,
    port: u16,
    deadline: Instant,
    watch: impl FnMut(&Arc<TcpStream>) -> io::Result<W>,
) -> io::Result<(Arc<TcpStream>, W)> {
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
    mut watch: impl FnMut(&Arc<TcpStream>) -> io::Result<W>,
) -> io::Result<(Arc<TcpStream>, W)> {
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
type Attempt<W> = io::Result<io::Result<(Arc<TcpStream>, W)>>;

/// Makes the socket, hands it to `watch`, then connects it within `share`.
#[cfg(unix)]
fn attempt<W>(
    addr: &SocketAddr,
    share: Duration,
    watch: &mut impl FnMut(&Arc<TcpStream>) -> io::Result<W>,
) -> Attempt<W> {
    use socket2::{Domain, Protocol, SockRef, Socket, Type};
    let socket = match Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    ) {
        Ok(socket) => Arc::new(TcpStream::from(socket)),
        Err(e) => return Ok(Err(e)),
    };
    let watched = watch(&socket)?;
    // Non-blocking connect, then `poll` for the time given (resumed after a signal); the
    // socket is blocking again when it returns.
    let connected = SockRef::from(&*socket).connect_timeout(&(*addr).into(), share);
    Ok(connected.map(|()| (socket, watched)))
}

/// Connects within `share`, then hands the socket to `watch` (std makes and connects a
/// socket in one call: the connect itself cannot be ended from another thread).
#[cfg(not(unix))]
fn attempt<W>(
    addr: &SocketAddr,
    share: Duration,
    watch: &mut impl FnMut(&Arc<TcpStream>) -> io::Result<W>,
) -> Attempt<W> {
    let socket = match TcpStream::connect_timeout(addr, share) {
        Ok(socket) => Arc::new(socket),
        Err(e) => return Ok(Err(e)),
    };
    let watched = watch(&socket)?;
    Ok(Ok((socket, watched)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use backend_pool_testkit::Blackhole;
    use std::net::TcpListener;

    fn no_watch(_: &Arc<TcpStream>) -> io::Result<()> {
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
    #[cfg(unix)]
    #[test]
    fn a_socket_shut_down_ends_its_connect_whenever_the_shutdown_comes() {
        use std::net::Shutdown;
        let hole = Blackhole::new().unwrap();
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        let started = Instant::now();
        let err = std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            s.spawn(move || {
                let socket: Arc<TcpStream> = rx.recv().unwrap();
                std::thread::sleep(Duration::from_millis(50));
                socket.shutdown(Shutdown::Both).unwrap();
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
            let _ = socket.shutdown(Shutdown::Both); // before the connect begins
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
