//! [`WsGuard`]: a socket checked out of a WebSocket pool, a lease that ends on drop.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::message::Message;
use super::{LeaseEnd, PooledSocket, WsPool};
use crate::cancel::CancelToken;
use crate::error::{Error, ErrorClass, Phase};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A WebSocket checked out of a pool: a lease. Everything goes through the guard's methods
/// (send, read, the addresses), so every error is seen: a socket that failed or was closed is
/// not returned to the pool. Messages are the crate's own [`Message`]; the socket underneath
/// is not reachable (its type belongs to a dependency that may change).
///
/// `WsGuard` is `Send` and `Sync`: a lease may move to another thread.
///
/// **Ending a lease.** A socket goes back to the pool only when its lease ended at a quiet
/// point: call [`WsGuard::finish`] once nothing the lease started is still running (for
/// ComfyUI: after `executing` with `node: null` and your prompt id). A lease that never
/// exposed its client id nor sent anything is quiet too. Any other lease is closed when
/// dropped (a TCP shutdown, nothing waited for) and the maintenance thread opens a
/// replacement, so a job you walk away from never sends its events to the next lessee.
///
/// ```no_run
/// # fn main() -> Result<(), backend_pool::Error> {
/// use backend_pool::{ManagerConfig, PoolManager};
///
/// let manager = PoolManager::new(ManagerConfig::default())?;
/// let mut ws = manager.websocket("comfyui")?;
/// let client_id = ws.client_id().unwrap_or_default().to_string();
/// // POST /prompt with this client_id (it answers with the prompt_id), then:
/// # let prompt_id = String::new();
/// loop {
///     let event: serde_json::Value = ws.read_json()?;
///     let data = &event["data"];
///     if event["type"] == "executing" && data["node"].is_null() && data["prompt_id"] == prompt_id.as_str() {
///         break;
///     }
/// }
/// ws.finish(); // the job is over: the socket can serve the next lease
/// # Ok(()) }
/// ```
#[must_use = "the lease ends when the guard is dropped"]
pub struct WsGuard {
    conn: Option<PooledSocket>,
    pool: Arc<WsPool>,
    broken: bool,
    /// The lease exposed its client id or sent: something it started may still be running.
    /// Atomic because [`WsGuard::client_id`] takes `&self`.
    started: AtomicBool,
    /// [`WsGuard::finish`] was called.
    finished: bool,
    /// The last read timed out inside a message: the rest of it would reach the next lease.
    /// (Bytes of a later message buffered behind one that was read whole are not this: the
    /// next lease reads that message whole.)
    cut_mid_message: bool,
    /// Cancels reads and sends: the checkout's token, or one made by
    /// [`WsGuard::abort_handle`]. Unset (no allocation, no system call) until one is asked
    /// for.
    cancel: OnceLock<CancelToken>,
}

/// Aborts the reads and sends of one [`WsGuard`] from another thread: cheap to clone,
/// `Send + Sync`. See [`WsGuard::abort_handle`].
#[derive(Clone, Debug)]
pub struct WsAbort(CancelToken);

impl WsAbort {
    /// Makes a read or send blocked on the guard return [`Error::Cancelled`] at once (its
    /// socket is shut down), and every later one fail the same way; the socket is closed
    /// when the guard drops, never returned to the pool. Idempotent.
    pub fn abort(&self) {
        self.0.cancel();
    }
}

impl WsGuard {
    pub(super) fn new(
        conn: PooledSocket,
        pool: Arc<WsPool>,
        cancel: Option<&CancelToken>,
    ) -> WsGuard {
        let guard = WsGuard {
            conn: Some(conn),
            pool,
            broken: false,
            started: AtomicBool::new(false),
            finished: false,
            cut_mid_message: false,
            cancel: OnceLock::new(),
        };
        if let Some(token) = cancel {
            let _ = guard.cancel.set(token.clone());
        }
        guard
    }

    /// A handle that aborts this guard's reads and sends from another thread (a Cancel
    /// button, an add-on being disabled): a blocked [`WsGuard::read`] or [`WsGuard::send`]
    /// returns [`Error::Cancelled`] at once. A guard checked out with
    /// [`crate::PoolManager::websocket_cancellable`] answers to that token too: the handle
    /// cancels it.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), backend_pool::Error> {
    /// # let manager = backend_pool::PoolManager::new(backend_pool::ManagerConfig::default())?;
    /// let mut ws = manager.websocket("comfyui")?;
    /// let abort = ws.abort_handle();
    /// std::thread::spawn(move || abort.abort()); // e.g. from the UI's Cancel button
    /// let err = ws.read().unwrap_err();
    /// assert_eq!(err.class(), backend_pool::ErrorClass::Cancelled);
    /// # Ok(()) }
    /// ```
    pub fn abort_handle(&self) -> WsAbort {
        WsAbort(self.cancel.get_or_init(CancelToken::new).clone())
    }

    /// Runs a blocking socket operation under the guard's token, if it has one: the socket
    /// is registered with the token while `op` runs (cancel shuts it down), and a token
    /// already cancelled fails the call at once. `op`'s failures consult the token
    /// ([`WsGuard::cancelled`]), so a failure the token caused is reported as such.
    fn cancellable<R>(
        &mut self,
        phase: Phase,
        op: impl FnOnce(&mut Self) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let Some(token) = self.cancel.get().cloned() else {
            return op(self);
        };
        let tcp = super::tcp_of(&self.conn().socket);
        let watch = token.watch_tcp(tcp);
        if let Some(err) = self.cancelled(phase) {
            return Err(err);
        }
        let result = op(self);
        // A cancel that fired while `op` ran shut the socket down even if `op` got its answer
        // first: that socket must not serve another lease. Checked once the watch is gone
        // (a cancel sets the flag before it fires what is registered), so none slips by.
        drop(watch);
        if token.is_cancelled() {
            self.broken = true;
        }
        result
    }

    /// If the guard's token is cancelled: the socket is discarded, the class `cancelled`
    /// counted, and the error to return. Checked before any other reading of a failure: a
    /// cancel shuts the socket down, which the read or write sees as a close or a reset.
    fn cancelled(&mut self, phase: Phase) -> Option<Error> {
        if !self.cancel.get().is_some_and(CancelToken::is_cancelled) {
            return None;
        }
        self.broken = true;
        self.pool.counters().error(ErrorClass::Cancelled);
        Some(self.pool.core.cancelled(phase))
    }

    fn conn(&mut self) -> &mut PooledSocket {
        self.conn.as_mut().expect("socket present until drop")
    }

    /// The client id this socket was opened with (`clientId` for ComfyUI), if the pool sets
    /// one.
    ///
    /// Asking for it marks the lease as started: once the id is out, a job may be running for
    /// it, so the socket is closed at the end of the lease unless [`WsGuard::finish`] says
    /// the job is over.
    pub fn client_id(&self) -> Option<&str> {
        let id = self.conn.as_ref().and_then(|c| c.client_id.as_deref());
        if id.is_some() {
            self.started.store(true, Relaxed);
        }
        id
    }

    /// Ends the lease at a quiet point: nothing it started is still running (for ComfyUI,
    /// every prompt it queued has ended with `executing` / `node: null`). The socket goes
    /// back to the pool unless it is broken or holds part of a message.
    pub fn finish(mut self) {
        self.finished = true;
    }

    /// Sends a message, within the service's `request_timeout_ms` as a whole (however
    /// slowly the server reads).
    ///
    /// Sending marks the lease as started (see [`WsGuard::finish`]).
    ///
    /// # Errors
    /// [`Error::Timeout`] (phase [`Phase::Send`]), [`Error::Transport`],
    /// [`Error::ConnectionClosed`]; the socket is then discarded (part of a frame may have
    /// gone out).
    pub fn send(&mut self, message: Message) -> Result<(), Error> {
        self.cancellable(Phase::Send, |guard| guard.send_now(message))
    }

    fn send_now(&mut self, message: Message) -> Result<(), Error> {
        *self.started.get_mut() = true;
        let wait = self.pool.core.timeouts.request;
        let conn = self.conn();
        conn.socket
            .get_mut()
            .set_deadline(crate::clock::deadline(Instant::now(), wait));
        let result = conn.socket.send(message.into_wire());
        result.map_err(|e| match e {
            tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::TimedOut => {
                self.broken = true;
                self.timed_out(Phase::Send, wait)
            }
            e => self.failed(e, Phase::Send),
        })
    }

    /// Sends a text message.
    ///
    /// # Errors
    /// As [`WsGuard::send`].
    pub fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.send(Message::text(text))
    }

    /// Sends a binary message.
    ///
    /// # Errors
    /// As [`WsGuard::send`].
    pub fn send_binary(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.send(Message::binary(bytes))
    }

    /// Sends `value` as a JSON text message.
    ///
    /// # Errors
    /// As [`WsGuard::send`], plus [`Error::Json`].
    pub fn send_json(&mut self, value: &impl Serialize) -> Result<(), Error> {
        let text = serde_json::to_string(value).map_err(|source| Error::Json {
            service: self.pool.core.name.clone(),
            source,
        })?;
        self.send(Message::Text(text))
    }

    /// Reads the next text or binary message (pings are answered, pongs skipped), waiting at
    /// most the service's `read_idle_timeout_ms`.
    ///
    /// # Errors
    /// [`Error::Timeout`] (the socket stays usable), [`Error::WebSocketClosed`],
    /// [`Error::TooLarge`], transport errors (the socket is then discarded).
    pub fn read(&mut self) -> Result<Message, Error> {
        let wait = self.pool.core.timeouts.read_idle;
        self.read_timeout(wait)
    }

    /// Like [`WsGuard::read`], returning within `wait` (signals delivered to the thread do
    /// not cut it short). A message already buffered is returned even with a zero `wait`.
    ///
    /// # Errors
    /// As [`WsGuard::read`].
    pub fn read_timeout(&mut self, wait: Duration) -> Result<Message, Error> {
        self.cancellable(Phase::Read, |guard| guard.read_now(wait))
    }

    fn read_now(&mut self, wait: Duration) -> Result<Message, Error> {
        self.conn()
            .socket
            .get_mut()
            .set_deadline(crate::clock::deadline(Instant::now(), wait));
        loop {
            let result = self.conn().socket.read();
            match result {
                Ok(tungstenite::Message::Close(_)) => {
                    if let Some(err) = self.cancelled(Phase::Read) {
                        return Err(err);
                    }
                    self.broken = true;
                    self.pool.counters().error(ErrorClass::Closed);
                    return Err(Error::WebSocketClosed {
                        service: self.pool.core.name.clone(),
                    });
                }
                // A ping (answered) or a pong is `None`: the deadline keeps running.
                Ok(wire) => {
                    if let Some(m) = Message::from_wire(wire) {
                        self.cut_mid_message = false;
                        return Ok(m);
                    }
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) =>
                {
                    self.cut_mid_message = !self.conn().socket.get_ref().at_rest();
                    return Err(self.timed_out(Phase::Read, wait));
                }
                Err(e) => return Err(self.failed(e, Phase::Read)),
            }
        }
    }

    /// Reads the next text message and decodes it as JSON (binary messages are skipped).
    ///
    /// # Errors
    /// As [`WsGuard::read`], plus [`Error::Json`].
    pub fn read_json<T: DeserializeOwned>(&mut self) -> Result<T, Error> {
        loop {
            if let Message::Text(text) = self.read()? {
                return serde_json::from_str(&text).map_err(|source| Error::Json {
                    service: self.pool.core.name.clone(),
                    source,
                });
            }
        }
    }

    /// Closes the socket instead of returning it.
    pub fn discard(mut self) {
        self.broken = true;
    }

    /// The local address of the socket's TCP connection (tells two pooled sockets apart).
    ///
    /// # Errors
    /// As [`std::net::TcpStream::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket_ref().get_ref().local_addr()
    }

    /// The server's address.
    ///
    /// # Errors
    /// As [`std::net::TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket_ref().get_ref().peer_addr()
    }

    /// True for a `wss://` socket (TLS).
    pub fn is_tls(&self) -> bool {
        self.socket_ref().get_ref().is_tls()
    }

    fn socket_ref(&self) -> &super::Socket {
        &self
            .conn
            .as_ref()
            .expect("socket present until drop")
            .socket
    }

    fn timed_out(&self, phase: Phase, after: Duration) -> Error {
        self.pool.counters().error(ErrorClass::Timeout);
        Error::Timeout {
            service: self.pool.core.name.clone(),
            phase,
            after,
        }
    }

    fn failed(&mut self, e: tungstenite::Error, phase: Phase) -> Error {
        if let Some(err) = self.cancelled(phase) {
            return err;
        }
        if self.pool.core.is_closed() {
            // Shutdown interrupted the call (its deadline passed).
            self.broken = true;
            let err = self.pool.core.shutting_down();
            self.pool.counters().error(err.class());
            return err;
        }
        self.broken = true;
        let service = self.pool.core.name.clone();
        let err = match e {
            tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed
            | tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ) => Error::WebSocketClosed { service },
            tungstenite::Error::Capacity(c) => Error::TooLarge {
                service,
                what: "WebSocket message",
                limit: match c {
                    tungstenite::error::CapacityError::MessageTooLong { max_size, .. } => {
                        max_size as u64
                    }
                    _ => self.pool.config.max_message_bytes as u64,
                },
            },
            tungstenite::Error::Io(io)
                if matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::UnexpectedEof
                ) =>
            {
                Error::ConnectionClosed {
                    service,
                    phase,
                    source: io,
                }
            }
            e => Error::Transport {
                service,
                phase,
                source: Box::new(e),
            },
        };
        self.pool.counters().error(err.class());
        if err.class() == ErrorClass::Closed {
            // The peer went away: counts against health like a failed connect.
            self.pool
                .core
                .connection_failed(ErrorClass::Closed, err.chain().to_string());
        }
        err
    }
}

impl fmt::Debug for WsGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsGuard")
            .field("service", &self.pool.core.name)
            .field(
                "client_id",
                &self.conn.as_ref().and_then(|c| c.client_id.as_deref()),
            )
            .finish_non_exhaustive()
    }
}

impl Drop for WsGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let end = if self.broken || std::thread::panicking() {
                LeaseEnd::Broken
            } else if self.cut_mid_message || (*self.started.get_mut() && !self.finished) {
                LeaseEnd::Abandoned
            } else {
                LeaseEnd::Quiet
            };
            self.pool.give_back(conn, end);
        }
    }
}
