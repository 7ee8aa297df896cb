//! [`PoolResolver`]: resolves the service's own host and refuses any other; a name is looked
//! up on a helper thread bounded by the connect deadline.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;

use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

use super::Deadline;

/// Resolves the service's host only.
pub(in crate::http::transport) struct PoolResolver {
    host: String,
    port: u16,
}

impl PoolResolver {
    pub(in crate::http::transport) fn new(host: &str, port: u16) -> PoolResolver {
        PoolResolver {
            host: host.to_string(),
            port,
        }
    }
}

impl fmt::Debug for PoolResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PoolResolver({}:{})", self.host, self.port)
    }
}

impl Resolver for PoolResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        if !host.eq_ignore_ascii_case(&self.host) || port != Some(self.port) {
            return Err(ureq::Error::Io(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "refused to connect to '{host}:{}': this pool connects only to '{}:{}'",
                    port.unwrap_or(0),
                    self.host,
                    self.port
                ),
            )));
        }
        let mut addrs = self.empty();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            addrs.push(SocketAddr::new(ip, self.port));
            return Ok(addrs);
        }
        for addr in lookup(bare, self.port, Deadline::new(timeout))? {
            if addrs.try_push(addr).is_err() {
                break;
            }
        }
        if addrs.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(addrs)
    }
}

/// Looks `host` up on a helper thread (the system resolver blocks and knows no deadline).
/// A lookup past the deadline is abandoned; its thread ends with the lookup.
fn lookup(host: &str, port: u16, deadline: Deadline) -> Result<Vec<SocketAddr>, ureq::Error> {
    let (tx, rx) = mpsc::sync_channel(1);
    let name = host.to_string();
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let _ = tx.send((name.as_str(), port).to_socket_addrs());
        })
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot resolve '{host}': no thread for the lookup: {e}"),
            )
        })?;
    let answer = match deadline.left() {
        Ok(None) => rx.recv().ok(),
        Ok(Some(left)) => match rx.recv_timeout(left) {
            Ok(answer) => Some(answer),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(ureq::Error::Timeout(deadline.reason))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
        },
        Err(_) => return Err(ureq::Error::Timeout(deadline.reason)),
    };
    match answer {
        Some(Ok(addrs)) => Ok(addrs.collect()),
        Some(Err(e)) => {
            Err(io::Error::new(e.kind(), format!("cannot resolve '{host}': {e}")).into())
        }
        None => Err(io::Error::other(format!("cannot resolve '{host}': the lookup ended")).into()),
    }
}
