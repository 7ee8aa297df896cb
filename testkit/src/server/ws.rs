//! The WebSocket side of a connection: handshake, echo loop and [`WsHandle`].
//!
//! The connection thread owns the tungstenite [`WebSocket`] and blocks in `read`.
//! Every write (its own echoes, pongs and close replies, and frames sent through a
//! [`WsHandle`] from any thread) goes through one mutex-guarded clone of the
//! socket, one whole buffer per `write` call, so frames never interleave.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::fault::Fault;
use super::request::{query_param, Head};
use super::shared::{lock, Shared, WsOpen};
use super::sock::Sock;

/// A handle on one open server-side WebSocket; cheap to clone and usable from
/// any thread.
#[derive(Clone)]
pub struct WsHandle {
    inner: Arc<WsInner>,
}

struct WsInner {
    id: u64,
    target: String,
    stream: Arc<Sock>,
    /// Serializes writes so that frames never interleave.
    write_lock: Mutex<()>,
    open: AtomicBool,
}

impl std::fmt::Debug for WsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsHandle")
            .field("id", &self.inner.id)
            .field("target", &self.inner.target)
            .field("open", &self.is_open())
            .finish()
    }
}

impl WsHandle {
    fn new(id: u64, target: String, stream: Arc<Sock>) -> WsHandle {
        WsHandle {
            inner: Arc::new(WsInner {
                id,
                target,
                stream,
                write_lock: Mutex::new(()),
                open: AtomicBool::new(true),
            }),
        }
    }

    /// Sends a text message. Returns `false` if the socket is closed or the write failed.
    pub fn send_text(&self, text: &str) -> bool {
        self.send_frame(Frame::message(
            text.as_bytes().to_vec(),
            OpCode::Data(Data::Text),
            true,
        ))
    }

    /// Sends a binary message. Returns `false` if the socket is closed or the write failed.
    pub fn send_binary(&self, data: Vec<u8>) -> bool {
        self.send_frame(Frame::message(data, OpCode::Data(Data::Binary), true))
    }

    /// First query parameter `name` of the upgrade URL (e.g. `clientId`), percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_param(&self.inner.target, name)
    }

    /// Path and query of the upgrade request.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// The connection id (same numbering as [`Request::conn_id`](crate::Request::conn_id)).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Whether the socket is still open.
    pub fn is_open(&self) -> bool {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// Shuts the socket down (no close frame), like a crashed server, and ends the
    /// connection's thread.
    pub fn kill(&self) {
        self.mark_closed();
        self.inner.stream.kill();
    }

    fn mark_closed(&self) {
        self.inner.open.store(false, Ordering::SeqCst);
    }

    /// Writes `buf` in one go, excluding every other writer meanwhile.
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let _guard = lock(&self.inner.write_lock);
        (&*self.inner.stream).write_all(buf)
    }

    fn send_frame(&self, frame: Frame) -> bool {
        if !self.is_open() {
            return false;
        }
        let mut buf = Vec::new();
        if frame.format(&mut buf).is_err() {
            return false;
        }
        let ok = self.write_all(&buf).is_ok();
        if !ok {
            self.mark_closed();
        }
        ok
    }
}

/// The stream tungstenite sees: reads straight from the socket (parked while
/// [`Fault::WsIgnorePings`] is set), writes through the shared writer.
struct WsIo {
    handle: WsHandle,
    shared: Arc<Shared>,
}

impl WsIo {
    fn gate(&self) -> io::Result<()> {
        if self.shared.wait_while_fault(
            |f| f == Fault::WsIgnorePings,
            self.handle.inner.stream.killed(),
        ) {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::ConnectionAborted, "stopped"))
        }
    }
}

impl Read for WsIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.gate()?;
        let n = (&*self.handle.inner.stream).read(buf)?;
        // Bytes that arrived while pings are ignored are held back until the fault clears.
        self.gate()?;
        Ok(n)
    }
}

impl Write for WsIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.handle.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether the head is a WebSocket upgrade request.
pub(crate) fn is_upgrade(head: &Head) -> bool {
    head.method == "GET" && head.has_token("upgrade", "websocket")
}

/// The registered `on_open` callback for the head's path, if any.
pub(crate) fn route<'a>(shared: &'a Shared, head: &Head) -> Option<&'a WsOpen> {
    let path = head.path.split('?').next().unwrap_or("");
    shared
        .config
        .ws_routes
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, f)| f.as_ref())
}

/// Completes the handshake and runs the echo loop until the socket closes.
pub(crate) fn serve(
    shared: &Arc<Shared>,
    stream: &Arc<Sock>,
    leftover: Vec<u8>,
    head: Head,
    conn_id: u64,
    on_open: &WsOpen,
) {
    let key = head.header("sec-websocket-key").map(str::to_string);
    let version_ok = head.header("sec-websocket-version").map(str::trim) == Some("13");
    let Some(key) = key.filter(|_| version_ok) else {
        let _ = (&**stream).write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    };
    let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if (&**stream).write_all(reply.as_bytes()).is_err() || stream.set_read_timeout(None).is_err() {
        return;
    }
    let handle = WsHandle::new(conn_id, head.path.clone(), Arc::clone(stream));
    if let Some(entry) = lock(&shared.conns).get_mut(&conn_id) {
        entry.ws = Some(handle.clone());
    }
    shared.ws_accepted.fetch_add(1, Ordering::SeqCst);

    let io = WsIo {
        handle: handle.clone(),
        shared: Arc::clone(shared),
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(None)
        .max_frame_size(None);
    let mut ws = WebSocket::from_partially_read(io, leftover, Role::Server, Some(config));

    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_open(&handle))).is_err() {
        log::warn!("testkit: websocket on_open callback panicked");
    }

    loop {
        match ws.read() {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(msg).is_err() {
                    break;
                }
            }
            Ok(Message::Ping(_)) => {
                if ws.flush().is_err() {
                    break;
                }
            }
            Ok(Message::Close(_)) => {
                // tungstenite queues the close reply; the next read flushes it and
                // then reports ConnectionClosed.
                handle.mark_closed();
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    handle.mark_closed();
}
