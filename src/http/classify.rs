//! The mapping of ureq's errors onto this crate's phases and classes, for requests
//! ([`RequestBuilder`](super::RequestBuilder)), whole and streamed responses, and health
//! probes alike. An attempt that never reached a transport failed to connect, whatever its
//! I/O kind; after that, the error's own kind decides.

use std::io;

use super::HttpPool;
use crate::error::{Error, Phase, HEADER_LINES};

/// Maps a failure of an attempt that never reached a transport: resolving, connecting or the
/// TLS handshake failed (a connect failure, whatever its I/O kind: out of file descriptors,
/// an unknown host), or the HTTP client refused the request itself.
pub(super) fn classify_unreached(pool: &HttpPool, e: ureq::Error) -> Error {
    let service = pool.core.name.clone();
    match e {
        ureq::Error::Http(_) | ureq::Error::BadUri(_) | ureq::Error::Protocol(_) => {
            Error::InvalidRequest {
                service,
                reason: format!("the HTTP client refused the request: {e}"),
            }
        }
        ureq::Error::Timeout(_) => Error::Timeout {
            service,
            phase: Phase::Connect,
            after: pool.core.timeouts.connect,
        },
        e => Error::Transport {
            service,
            phase: Phase::Connect,
            source: Box::new(e),
        },
    }
}

/// Maps a ureq error onto this crate's phases and classes.
pub(super) fn classify(pool: &HttpPool, e: ureq::Error) -> Error {
    use ureq::Timeout as T;
    let service = pool.core.name.clone();
    let t = pool.core.timeouts;
    match e {
        ureq::Error::Timeout(which) => {
            let (phase, after) = match which {
                T::Resolve | T::Connect => (Phase::Connect, t.connect),
                T::SendRequest | T::SendBody | T::Await100 | T::PerWrite => {
                    (Phase::Send, t.request)
                }
                T::RecvResponse => (Phase::Receive, t.request),
                T::RecvBody | T::PerRead => (Phase::Read, t.read_idle),
                _ => (Phase::Receive, t.request),
            };
            Error::Timeout {
                service,
                phase,
                after,
            }
        }
        ureq::Error::Io(io) => {
            use io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused
                | K::AddrNotAvailable
                | K::HostUnreachable
                | K::NetworkUnreachable => Error::Transport {
                    service,
                    phase: Phase::Connect,
                    source: Box::new(io),
                },
                K::ConnectionReset
                | K::ConnectionAborted
                | K::UnexpectedEof
                | K::BrokenPipe
                | K::NotConnected => Error::ConnectionClosed {
                    service,
                    phase: Phase::Receive,
                    source: io,
                },
                K::TimedOut | K::WouldBlock => Error::Timeout {
                    service,
                    phase: Phase::Read,
                    after: t.read_idle,
                },
                _ => Error::Transport {
                    service,
                    phase: Phase::Receive,
                    source: Box::new(io),
                },
            }
        }
        ureq::Error::BodyExceedsLimit(limit) => Error::TooLarge {
            service,
            what: "response body",
            limit,
        },
        ureq::Error::LargeResponseHeader(_, limit) => Error::TooLarge {
            service,
            what: "response head",
            limit: limit as u64,
        },
        ureq::Error::Protocol(ureq_proto::Error::HttpParseTooManyHeaders) => Error::TooLarge {
            service,
            what: HEADER_LINES,
            limit: ureq_proto::client::MAX_RESPONSE_HEADERS as u64,
        },
        e @ (ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Tls(_)
        | ureq::Error::Pem(_)
        | ureq::Error::Rustls(_)) => Error::Transport {
            service,
            phase: Phase::Connect,
            source: Box::new(e),
        },
        e => Error::Transport {
            service,
            phase: Phase::Receive,
            source: Box::new(e),
        },
    }
}
