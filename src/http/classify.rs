//! The mapping of ureq's errors onto this crate's phases and classes, for requests
//! ([`RequestBuilder`](super::RequestBuilder)), whole and streamed responses, and health
//! probes alike. An attempt that never reached a transport failed to connect, whatever its
//! I/O kind; after that, the error's own kind decides.
//!
//! A timeout names the phase it cut short and the deadline that fired, which is the
//! request's own where it set one ([`Limits`]): ureq says which of its timeouts fired; for
//! its total ("global") deadline, which holds across every phase, the phase is where the
//! attempt stood ([`Stage`]). A request's body is read under the same [`Limits`] as the
//! request (whole, streamed, server-sent events, downloads: the `Limits` travel with the
//! response), so a body's timeout names the request's deadline too.

use std::io;
use std::time::Duration;

use super::HttpPool;
use crate::error::{Error, Phase, HEADER_LINES};

/// The deadlines one request runs under: the service's, with the request's own overrides
/// (`connect_timeout`, `read_timeout`, `total_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Limits {
    /// Resolving and connecting (each).
    pub(super) connect: Duration,
    /// Sending the request head, sending a body (whole, or per stall for a streamed body).
    pub(super) request: Duration,
    /// Waiting for the response head: the service's request timeout, or the request's own
    /// read timeout (silence before the head is silence all the same).
    pub(super) head: Duration,
    /// The longest silence between two reads of the response.
    pub(super) read_idle: Duration,
    /// One deadline for the whole request, if set.
    pub(super) total: Option<Duration>,
}

impl Limits {
    /// The service's own.
    pub(super) fn service(pool: &HttpPool) -> Limits {
        let t = &pool.core.timeouts;
        Limits {
            connect: t.connect,
            request: t.request,
            head: t.request,
            read_idle: t.read_idle,
            total: None,
        }
    }
}

/// Where an attempt stood when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// No transport reached yet: resolving, connecting, the TLS handshake.
    Connect,
    /// Writing the request.
    Send,
    /// Waiting for, or reading, the response head.
    Receive,
    /// Reading the response body.
    Read,
}

impl Stage {
    /// The phase this stage is reported as.
    pub(super) fn phase(self) -> Phase {
        match self {
            Stage::Connect => Phase::Connect,
            Stage::Send => Phase::Send,
            Stage::Receive => Phase::Receive,
            Stage::Read => Phase::Read,
        }
    }
}

/// The timeout error for ureq's `which`, under `limits`, at `stage`.
pub(super) fn timeout(
    pool: &HttpPool,
    which: ureq::Timeout,
    limits: &Limits,
    stage: Stage,
) -> Error {
    use ureq::Timeout as T;
    let (phase, after) = match which {
        T::Resolve | T::Connect => (Phase::Connect, limits.connect),
        T::SendRequest | T::SendBody | T::Await100 | T::PerWrite => (Phase::Send, limits.request),
        T::RecvResponse => (Phase::Receive, limits.head),
        // The per-read limit holds from the first byte of the response head on.
        T::PerRead if stage == Stage::Receive => (Phase::Receive, limits.read_idle),
        T::RecvBody | T::PerRead => (Phase::Read, limits.read_idle),
        // The total deadline (ureq's `Global`, or a probe's): whatever phase was running.
        _ => (stage.phase(), limits.total.unwrap_or(limits.request)),
    };
    Error::Timeout {
        service: pool.core.name.clone(),
        phase,
        after,
    }
}

/// Maps a failure of a request attempt that stood at `stage`, under `limits`. Before any
/// transport was reached (`Stage::Connect`), resolving, connecting or the TLS handshake
/// failed (a connect failure, whatever its I/O kind: out of file descriptors, an unknown
/// host), or the HTTP client refused the request itself.
pub(super) fn classify_attempt(
    pool: &HttpPool,
    e: ureq::Error,
    limits: &Limits,
    stage: Stage,
) -> Error {
    if let ureq::Error::Timeout(which) = e {
        return timeout(pool, which, limits, stage);
    }
    if stage != Stage::Connect {
        return classify(pool, e, limits);
    }
    let service = pool.core.name.clone();
    match e {
        ureq::Error::Http(_) | ureq::Error::BadUri(_) | ureq::Error::Protocol(_) => {
            Error::InvalidRequest {
                service,
                reason: format!("the HTTP client refused the request: {e}"),
            }
        }
        e => Error::Transport {
            service,
            phase: Phase::Connect,
            source: Box::new(e),
        },
    }
}

/// Maps a ureq error onto this crate's phases and classes; a timeout as one while reading a
/// body under `limits`, the deadlines the request ran under (see [`classify_attempt`] for an
/// attempt that failed before its response head).
pub(super) fn classify(pool: &HttpPool, e: ureq::Error, limits: &Limits) -> Error {
    let service = pool.core.name.clone();
    match e {
        ureq::Error::Timeout(which) => timeout(pool, which, limits, Stage::Read),
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
                    after: limits.read_idle,
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

/// A timeout of a body read that came back as an I/O error (a streamed body's reader wraps
/// ureq's error in one), as the pool's error under `limits`; `None` for any other failure.
pub(super) fn body_timeout(pool: &HttpPool, e: &io::Error, limits: &Limits) -> Option<Error> {
    let which = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>());
    match which {
        Some(ureq::Error::Timeout(which)) => Some(timeout(pool, *which, limits, Stage::Read)),
        Some(_) => None,
        None => matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        )
        .then(|| Error::Timeout {
            service: pool.core.name.clone(),
            phase: Phase::Read,
            after: limits.read_idle,
        }),
    }
}
