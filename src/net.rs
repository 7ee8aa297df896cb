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
//! Shutdown cannot interrupt a lookup or a connect in progress (std gives no handle to
//! either, so there is nothing to register with `crate::abort`): both end by the deadline,
//! and on loopback or a reachable host they take microseconds to milliseconds.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cancel::{CancelToken, Hook};

/// The least time an address is given, however many are left to try.
const MIN_SHARE: Duration = Duration::from_millis(10);

/// Resolves `host` (brackets around an IPv6 literal allowed) and connects to one of its
/// addresses, all by `deadline`.
pub(crate) fn connect(host: &str, port: u16, deadline: Instant) -> io::Result<TcpStream> {
    let addrs = resolve(host, port, Some(deadline))?;
    connect_tcp(&addrs, Some(deadline))
}

/// [`connect`], abandoned when `cancel` is cancelled (`None`: as [`connect`]); see
/// [`connect_tcp_cancellable`]. (The name lookup is not abandoned: an IP literal needs none,
/// a name ends by the deadline.)
pub(crate) fn connect_cancellable(
    host: &str,
    port: u16,
    deadline: Instant,
    cancel: Option<&CancelToken>,
) -> io::Result<TcpStream> {
    let addrs = resolve(host, port, Some(deadline))?;
    connect_tcp_cancellable(&addrs, Some(deadline), cancel)
}

/// [`connect_tcp`], abandoned when `cancel` is cancelled (`None`: as [`connect_tcp`]). std
/// cannot interrupt a connect in progress, so with a token the attempt runs on a helper thread
/// and the caller waits for whichever comes first, the connection or the cancel; a connection
/// made after the cancel is closed by the helper, which ends by the deadline. A cancelled
/// call fails with [`io::ErrorKind::Interrupted`].
pub(crate) fn connect_tcp_cancellable(
    addrs: &[SocketAddr],
    deadline: Option<Instant>,
    cancel: Option<&CancelToken>,
) -> io::Result<TcpStream> {
    let Some(token) = cancel else {
        return connect_tcp(addrs, deadline);
    };
    let cancelled = || io::Error::new(io::ErrorKind::Interrupted, "the connect was cancelled");
    let (tx, rx) = mpsc::sync_channel::<Option<io::Result<TcpStream>>>(2);
    let wake = tx.clone();
    let _hook = token.register(Hook::Wake(Box::new(move || {
        let _ = wake.try_send(None);
    })));
    if token.is_cancelled() {
        return Err(cancelled());
    }
    let addrs = addrs.to_vec();
    std::thread::Builder::new()
        .name("connect".into())
        .spawn(move || {
            let _ = tx.send(Some(connect_tcp(&addrs, deadline)));
        })?;
    match rx.recv() {
        Ok(Some(result)) => result,
        Ok(None) | Err(_) => Err(cancelled()),
    }
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
pub(crate) fn connect_tcp(
    addrs: &[SocketAddr],
    deadline: Option<Instant>,
) -> io::Result<TcpStream> {
    let mut last = None;
    for (i, addr) in addrs.iter().enumerate() {
        let attempt = match deadline {
            None => TcpStream::connect(addr),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(last.unwrap_or_else(|| timed_out(addr)));
                }
                let share = (left / (addrs.len() - i) as u32).max(MIN_SHARE);
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
        let stream = connect_tcp(&addrs, Some(started + Duration::from_millis(900))).unwrap();
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
        let err = connect_tcp(&addrs, Some(started + Duration::from_millis(300))).unwrap_err();
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
        let err = connect_tcp(&addrs, Some(Instant::now() + Duration::from_secs(2))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        assert!(err.to_string().starts_with(&addrs[1].to_string()), "{err}");
        let none = connect_tcp(&[], None).unwrap_err();
        assert_eq!(none.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn names_resolve_within_the_deadline_and_literals_need_no_lookup() {
        let good = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = good.local_addr().unwrap().port();
        let deadline = Instant::now() + Duration::from_secs(2);
        assert!(connect("localhost", port, deadline).is_ok());
        assert!(connect("127.0.0.1", port, deadline).is_ok());
        assert_eq!(
            resolve("[::1]", 80, None).unwrap(),
            vec![SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 80))]
        );
        let err = resolve("localhost", port, Some(Instant::now())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("'localhost'"), "{err}");
    }
}
