//! [`WsGuard`]: a socket checked out of a WebSocket pool, returned on drop unless it broke.

use std::fmt;
use std::io;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tungstenite::Message;

use super::{tcp_of, Socket, WsConn, WsPool};
use crate::error::{Error, ErrorClass, Phase};

/// A WebSocket checked out of a pool. Dereferences to the tungstenite socket for inspection;
/// send and read through the guard so errors are seen: a socket that failed or was closed
/// is not returned to the pool.
///
/// ```no_run
/// # fn main() -> Result<(), backend_pool::Error> {
/// use backend_pool::{ManagerConfig, PoolManager};
///
/// let manager = PoolManager::new(ManagerConfig::default())?;
/// let mut ws = manager.websocket("comfyui")?;
/// let client_id = ws.client_id().unwrap_or_default().to_string();
/// // POST /prompt with this client_id, then read progress events:
/// let event: serde_json::Value = ws.read_json()?;
/// # Ok(()) }
/// ```
#[must_use = "the socket returns to the pool when dropped"]
pub struct WsGuard {
    pub(super) conn: Option<WsConn>,
    pub(super) pool: Arc<WsPool>,
    pub(super) broken: bool,
}

impl WsGuard {
    fn conn(&mut self) -> &mut WsConn {
        self.conn.as_mut().expect("socket present until drop")
    }

    /// The client id this socket was opened with (`clientId` for ComfyUI), if the pool sets
    /// one.
    pub fn client_id(&self) -> Option<&str> {
        self.conn.as_ref().and_then(|c| c.client_id.as_deref())
    }

    /// Sends a message.
    ///
    /// # Errors
    /// [`Error::Transport`] / [`Error::ConnectionClosed`] (the socket is then discarded).
    pub fn send(&mut self, message: Message) -> Result<(), Error> {
        let result = self.conn().socket.send(message);
        result.map_err(|e| self.failed(e, Phase::Send))
    }

    /// Sends a text message.
    ///
    /// # Errors
    /// As [`WsGuard::send`].
    pub fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.send(Message::text(text))
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
        self.send_text(&text)
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

    /// Like [`WsGuard::read`] with its own timeout.
    ///
    /// # Errors
    /// As [`WsGuard::read`].
    pub fn read_timeout(&mut self, wait: Duration) -> Result<Message, Error> {
        let deadline = Instant::now() + wait;
        let mut left = wait;
        loop {
            if left.is_zero() {
                return Err(self.timed_out(wait));
            }
            let conn = self.conn();
            // One system call saved per message: the socket usually has this timeout already.
            if conn.read_timeout != left {
                if let Err(e) = tcp_of(&conn.socket).set_read_timeout(Some(left)) {
                    return Err(self.failed(e.into(), Phase::Read));
                }
                conn.read_timeout = left;
            }
            match conn.socket.read() {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => return Ok(m),
                Ok(Message::Close(_)) => {
                    self.broken = true;
                    self.pool.counters.error(ErrorClass::Closed);
                    return Err(Error::WebSocketClosed {
                        service: self.pool.core.name.clone(),
                    });
                }
                Ok(_) => left = deadline.saturating_duration_since(Instant::now()),
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(self.timed_out(wait))
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

    fn timed_out(&self, after: Duration) -> Error {
        self.pool.counters.error(ErrorClass::Timeout);
        Error::Timeout {
            service: self.pool.core.name.clone(),
            phase: Phase::Read,
            after,
        }
    }

    fn failed(&mut self, e: tungstenite::Error, phase: Phase) -> Error {
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
        self.pool.counters.error(err.class());
        if err.class() == ErrorClass::Closed {
            // The peer went away: counts against health like a failed connect.
            self.pool
                .core
                .connection_failed(ErrorClass::Closed, crate::error::error_chain(&err));
        }
        err
    }
}

impl Deref for WsGuard {
    type Target = Socket;

    fn deref(&self) -> &Socket {
        &self
            .conn
            .as_ref()
            .expect("socket present until drop")
            .socket
    }
}

impl fmt::Debug for WsGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsGuard")
            .field("service", &self.pool.core.name)
            .field("client_id", &self.client_id())
            .finish_non_exhaustive()
    }
}

impl Drop for WsGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let broken = self.broken || std::thread::panicking();
            self.pool.give_back(conn, broken);
        }
    }
}
