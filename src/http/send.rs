//! Sending one request: the checks before checkout, the checkout, the attempts, the retry
//! rule and the request's own deadlines (the mapping of ureq's errors onto this crate's
//! phases and classes is in `classify`; bodies from readers in `body`).
//!
//! A request is checked before it takes a connection (`validate`), then sent on a pooled
//! connection. It is sent a second time, on a fresh connection, only if it is a `GET`, `HEAD`
//! or `OPTIONS` with its body in memory (or none) and its connection closed before a single
//! byte of a response arrived (a stale keep-alive connection); the transport counts those
//! bytes, so a partial status line, a malformed or oversized head or a reset mid-body is
//! never answered by a resend. A retry runs within what is left of the total deadline.

use std::borrow::Cow;
use std::io::Read;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::body::{Exact, Fault, Progress, Upload};
use super::classify::{self, Limits, Stage};
use super::request::RequestBuilder;
use super::validate;
use super::HttpConnection;
use crate::cancel::Registration;
use crate::error::{Error, ErrorClass, Phase};
use crate::route::{Outcome, Pin};

/// What a request sends.
pub(super) enum Payload<'a> {
    /// Bytes in memory (possibly none): sent again as they are on a retry.
    Bytes(&'a [u8]),
    /// Exactly `len` bytes from a reader, read once: never sent twice. `what` names the
    /// reader in errors.
    Reader {
        reader: &'a mut dyn Read,
        len: u64,
        what: Cow<'static, str>,
    },
}

impl Payload<'_> {
    pub(super) fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) => b.len() as u64,
            Payload::Reader { len, .. } => *len,
        }
    }
}

/// A request sent: its connection, the response with its body unread, the cancel watch, and
/// what the body's read is held to.
pub(super) struct Sent {
    pub(super) conn: HttpConnection,
    pub(super) response: ureq::http::Response<ureq::Body>,
    pub(super) watch: Option<Registration>,
    /// The deadlines the request ran under: its body is read under them too.
    pub(super) limits: Limits,
}

/// How [`RequestBuilder::execute`] failed.
pub(super) enum Failed {
    /// For good: the caller gets this error.
    Done(Error),
    /// Before any response byte, on a request that may go to another endpoint.
    Elsewhere(Error),
}

impl From<Error> for Failed {
    fn from(e: Error) -> Failed {
        Failed::Done(e)
    }
}

impl From<Failed> for Error {
    fn from(f: Failed) -> Error {
        match f {
            Failed::Done(e) | Failed::Elsewhere(e) => e,
        }
    }
}

impl RequestBuilder {
    /// With several endpoints, chooses the one to send on (`crate::route`); with one URL,
    /// does nothing.
    pub(super) fn choose_endpoint(&mut self) {
        if let Some(pool) = self.route.as_ref().and_then(|r| r.pick_http()) {
            if !std::sync::Arc::ptr_eq(pool, &self.pool) {
                self.pool = std::sync::Arc::clone(pool);
            }
        }
    }

    /// [`RequestBuilder::execute`] on the endpoint chosen for it, and, for a repeatable
    /// request that failed there before any response byte, once more on another healthy
    /// endpoint (`crate::route`). With one URL: `execute` as it is.
    pub(super) fn execute_routed(
        &mut self,
        mut payload: Payload<'_>,
        mut progress: Option<&mut Progress>,
    ) -> Result<Sent, Error> {
        let Some(route) = self.route.clone() else {
            if let Some(pin) = self.session.clone() {
                return self.execute_pinned(&pin, payload, progress);
            }
            return Ok(self.execute(&mut payload, progress, false)?);
        };
        self.choose_endpoint();
        match self.execute(&mut payload, progress.as_deref_mut(), true) {
            Ok(sent) => Ok(sent),
            Err(Failed::Done(e)) => Err(e),
            Err(Failed::Elsewhere(e)) => {
                let Some(other) = route.other_http(&self.pool) else {
                    return Err(e);
                };
                log::debug!(target: "backend_pool",
                    "service '{}': {} {} failed before a response on {}; retried on {}",
                    self.pool.core.name, self.method, self.path, self.pool.core.url, other.core.url);
                self.pool = std::sync::Arc::clone(other);
                Ok(self.execute(&mut payload, progress, false)?)
            }
        }
    }
}

impl RequestBuilder {
    /// A session's request: sent at its endpoint, and, while the session is not bound to
    /// it, at the endpoint it moves to when nothing could be sent (`crate::route::Session`).
    fn execute_pinned(
        &mut self,
        pin: &Pin,
        mut payload: Payload<'_>,
        mut progress: Option<&mut Progress>,
    ) -> Result<Sent, Error> {
        if let Some(now) = pin.http() {
            if !std::sync::Arc::ptr_eq(now, &self.pool) {
                self.pool = std::sync::Arc::clone(now);
            }
        }
        loop {
            let result = self
                .execute(&mut payload, progress.as_deref_mut(), false)
                .map_err(Error::from);
            let outcome = match &result {
                Ok(_) => Outcome::Reached,
                Err(e) => Outcome::Failed(e),
            };
            match pin.after_http(&self.pool, outcome) {
                Some(next) => self.pool = next,
                None => return result,
            }
        }
    }
}

/// How one attempt failed: in the HTTP client, or on the caller's side of a streamed body.
enum Failure {
    Client(ureq::Error),
    Body { fault: Fault, sent: u64, len: u64 },
}

impl RequestBuilder {
    fn idempotent(&self) -> bool {
        matches!(&*self.method, "GET" | "HEAD" | "OPTIONS")
    }

    /// The deadlines this request runs under.
    fn limits(&self) -> Limits {
        let service = Limits::service(&self.pool);
        Limits {
            connect: self.connect.unwrap_or(service.connect),
            request: service.request,
            head: self.read.unwrap_or(service.head),
            read_idle: self.read.unwrap_or(service.read_idle),
            total: self.timeout,
        }
    }

    /// Checks the request (before checkout: an invalid one costs no connection), checks out
    /// a connection and sends. A GET / HEAD / OPTIONS with a body in memory whose connection
    /// closed before any response byte arrived is sent once more on a fresh connection;
    /// nothing is resent once the server sent a byte of its response, and a body from a
    /// reader is never sent twice.
    ///
    /// With `elsewhere` (a service with several endpoints, on the first endpoint tried), a
    /// repeatable request whose connection failed before any response byte (refused, or
    /// closed without a byte) is not retried here: it returns `Err(Elsewhere)` for
    /// [`RequestBuilder::execute_routed`] to send it once on another endpoint. So does any
    /// request its endpoint's fail-fast gate turned away (it sent nothing).
    pub(super) fn execute(
        &self,
        payload: &mut Payload<'_>,
        mut progress: Option<&mut Progress>,
        elsewhere: bool,
    ) -> Result<Sent, Failed> {
        let pool = &self.pool;
        let counters = pool.counters();
        let mut target = Some(self.target(payload.len())?);
        let limits = self.limits();
        let wait = self.wait.unwrap_or(pool.core.timeouts.wait);
        let conn = pool
            .checkout_cancellable(wait, !self.probe, self.cancel.as_ref())
            .map_err(|e| match e {
                // The endpoint turned unhealthy since it was chosen: nothing was sent, so
                // another may take the call, whatever its method.
                Error::ServiceUnavailable { .. } if elsewhere => Failed::Elsewhere(e),
                e => Failed::Done(e),
            })?;
        let wire = &conn.item().wire;
        // Cancel shuts the agent down: the request in flight (its connect and TLS handshake
        // too), its socket.
        let watch = self
            .cancel
            .as_ref()
            .map(|token| token.register(wire.cancel_hook(conn.agent())));
        // Where the attempt stood when it stopped.
        let stage = || {
            if !wire.reached() {
                Stage::Connect
            } else if wire.writing() {
                Stage::Send
            } else {
                Stage::Receive
            }
        };
        let cancelled = |conn: HttpConnection, stage: Stage| {
            // The failure is the cancel's doing: not the server's, not the health's.
            let err = pool.core.cancelled(stage.phase());
            counters.error(err.class());
            conn.discard();
            err
        };
        let is_cancelled = || watch.as_ref().is_some_and(|w| w.token().is_cancelled());
        // The total deadline holds across a retry; the wait for a connection is apart.
        let started = Instant::now();
        let mut retried = false;
        loop {
            // The first attempt sends the checked request itself; a retry checks it again
            // (the same answer) rather than every request keeping a copy for a rare retry.
            let attempt = match target.take() {
                Some(target) => target,
                None => self.target(payload.len())?,
            };
            wire.begin_attempt();
            if is_cancelled() {
                let stage = stage();
                return Err(cancelled(conn, stage).into());
            }
            let total = limits.total.map(|t| t.saturating_sub(started.elapsed()));
            let sent = self.send_once(
                &conn,
                attempt,
                payload,
                progress.as_deref_mut(),
                &limits,
                total,
            );
            if sent.is_err() && is_cancelled() {
                let stage = stage();
                return Err(cancelled(conn, stage).into());
            }
            if sent.is_err() && pool.core.is_closed() {
                // Shutdown interrupted the call (its deadline passed).
                let err = pool.core.shutting_down();
                counters.error(err.class());
                conn.discard();
                return Err(err.into());
            }
            let e = match sent {
                Ok(response) => {
                    counters.requests.fetch_add(1, Relaxed);
                    if !self.probe {
                        pool.core.health.success();
                    }
                    return Ok(Sent {
                        conn,
                        response,
                        watch,
                        limits,
                    });
                }
                Err(Failure::Body { fault, sent, len }) => {
                    // The caller's reader, not the server: counted, not against health.
                    let service = pool.core.name.clone();
                    let err = match fault {
                        Fault::Reader(source) => Error::RequestBody {
                            service,
                            sent,
                            len,
                            source,
                        },
                        Fault::TimedOut { after } => Error::Timeout {
                            service,
                            phase: Phase::Send,
                            after,
                        },
                    };
                    pool.failed(&err, false);
                    conn.discard();
                    return Err(err.into());
                }
                Err(Failure::Client(e)) => e,
            };
            let err = classify::classify_attempt(pool, e, &limits, stage());
            // A resend only for a connection that closed before any byte of a response
            // (counted by the transport, whatever the error says): a stale keep-alive
            // connection. Any response byte means the server answered; and even a silent
            // server may have acted, so only methods that may be repeated are resent, only
            // with a body that can be (bytes in memory), and only within the total deadline.
            let stale = matches!(err, Error::ConnectionClosed { .. }) && wire.received() == 0;
            let repeatable = matches!(payload, Payload::Bytes(_)) && self.idempotent();
            let time_left = limits.total.map_or(true, |t| started.elapsed() < t);
            let refused = err.class() == ErrorClass::Connect && wire.received() == 0;
            if elsewhere && (stale || refused) && !retried && repeatable && time_left {
                // Another endpoint takes the one retry. A refused connect counts against
                // this endpoint's health; a stale keep-alive socket does not (as above).
                counters.retries.fetch_add(1, Relaxed);
                pool.failed(&err, refused && !self.probe);
                conn.discard();
                return Err(Failed::Elsewhere(err));
            }
            if stale && !retried && repeatable && time_left {
                // ureq dropped the dead socket: the next try connects afresh.
                retried = true;
                counters.retries.fetch_add(1, Relaxed);
                log::debug!(target: "backend_pool",
                    "service '{}': {} {} retried after a stale connection",
                    pool.core.name, self.method, self.path);
                continue;
            }
            pool.failed(&err, !self.probe);
            conn.discard();
            return Err(err.into());
        }
    }

    /// The request checked and in the form it is sent (see [`RequestBuilder`], "What is
    /// checked"); an invalid one is counted and costs no connection.
    fn target(&self, body_len: u64) -> Result<validate::Target, Error> {
        let pool = &self.pool;
        validate::target(
            &pool.core.endpoint,
            &pool.base,
            &pool.service_headers,
            &validate::Parts {
                method: &self.method,
                path: &self.path,
                query: &self.query,
                headers: &self.headers,
                body_len,
            },
            pool.config.output_buffer_bytes,
        )
        .map_err(|reason| self.invalid(reason))
    }

    /// An [`Error::InvalidRequest`] for `reason`, counted (no connection was taken).
    pub(super) fn invalid(&self, reason: String) -> Error {
        let err = Error::InvalidRequest {
            service: self.pool.core.name.clone(),
            reason,
        };
        self.pool.counters().error(err.class());
        err
    }

    /// Sends one attempt with `total` left of the total deadline. An empty body is sent as
    /// none where the method anticipates no content (RFC 9110 §8.6: then no
    /// `Content-Length: 0` either). A body with progress, or from a reader, is streamed
    /// with `Content-Length` through an [`Upload`].
    fn send_once(
        &self,
        conn: &HttpConnection,
        target: validate::Target,
        payload: &mut Payload<'_>,
        progress: Option<&mut Progress>,
        limits: &Limits,
        total: Option<Duration>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        use ureq::http::Method;
        let mut bytes: &[u8];
        let body = match payload {
            Payload::Bytes(body) if body.is_empty() => {
                let bodiless = matches!(
                    target.method,
                    Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
                );
                let sent = if bodiless {
                    self.run(conn, target, (), total, false)
                } else {
                    self.run(conn, target, *body, total, false)
                };
                return sent.map_err(Failure::Client);
            }
            Payload::Bytes(body) if progress.is_none() => {
                return self
                    .run(conn, target, *body, total, false)
                    .map_err(Failure::Client);
            }
            Payload::Bytes(body) => {
                bytes = body;
                let len = bytes.len() as u64;
                Exact::new(&mut bytes as &mut dyn Read, len, "the body")
            }
            Payload::Reader { reader, len, what } => {
                Exact::new(&mut **reader as &mut dyn Read, *len, what.clone())
            }
        };
        let len = body.len();
        let deadline = total
            .zip(limits.total)
            .map(|(left, whole)| (crate::clock::deadline(Instant::now(), left), whole));
        let mut upload = Upload::new(body, progress, deadline, limits.request);
        let mut target = target;
        target
            .headers
            .insert(ureq::http::header::CONTENT_LENGTH, len.into());
        let sent = self.run(
            conn,
            target,
            ureq::SendBody::from_reader(&mut upload),
            total,
            true,
        );
        match (sent, upload.fault.take()) {
            (Ok(response), _) => Ok(response),
            (Err(_), Some(fault)) => {
                let (sent, len) = upload.sent_of();
                Err(Failure::Body { fault, sent, len })
            }
            (Err(e), None) => Err(Failure::Client(e)),
        }
    }

    /// Runs the request on the connection's agent. With the request's own timeouts, or for a
    /// streamed body, under a request-level configuration: a streamed body is bounded per
    /// write (`request_timeout_ms` of no progress) rather than as a whole, since a large
    /// upload may rightly take longer than any one phase.
    fn run<B: ureq::AsSendBody>(
        &self,
        conn: &HttpConnection,
        target: validate::Target,
        body: B,
        total: Option<Duration>,
        streamed: bool,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut request = ureq::http::Request::new(body);
        *request.method_mut() = target.method;
        *request.uri_mut() = target.uri;
        *request.headers_mut() = target.headers;
        let agent = conn.agent();
        if total.is_none() && self.connect.is_none() && self.read.is_none() && !streamed {
            return agent.run(request);
        }
        let mut config = agent.configure_request(request);
        if let Some(total) = total {
            config = config.timeout_global(Some(total));
        }
        if let Some(connect) = self.connect {
            config = config
                .timeout_resolve(Some(connect))
                .timeout_connect(Some(connect));
        }
        if let Some(read) = self.read {
            // The wait for the head is a silence too: the request's limit replaces the
            // service's request timeout there.
            config = config
                .timeout_recv_response(Some(read))
                .timeout_per_read(Some(read));
        }
        if streamed {
            let stall = self.pool.core.timeouts.request;
            config = config
                .timeout_send_body(None)
                .timeout_per_write(Some(stall));
        }
        agent.run(config.build())
    }
}
