//! [`PoolResolver`]: resolves the service's own host and refuses any other; a name is looked
//! up on a helper thread bounded by the connect deadline (`crate::net::resolve`).

use std::fmt;
use std::io;

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
        let deadline = Deadline::new(timeout);
        let found = crate::net::resolve(host, self.port, deadline.at)
            .map_err(|e| super::connect::from_net(e, deadline.reason))?;
        for addr in found {
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
