//! The server ends its own connection threads, whatever they are blocked in, when a
//! connection is killed or the server stops, while the client keeps the connection open:
//! a thread blocked reading (an idle keep-alive connection, a WebSocket), sending into a
//! client that does not read (an HTTP body, a WebSocket message), on every platform (on
//! Windows shutting a socket down does not wake them: `sock.rs`, "Windows").

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::{Response, TestServer, WsHandle};

/// Polls `cond` every 5 ms for up to 3 s.
fn within_3s(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// `GET /huge` answers a 1 GiB body, `/ws` upgrades, anything else answers `hi`.
fn server() -> TestServer {
    TestServer::builder()
        .http(|req| match req.path.as_str() {
            "/huge" => {
                Response::generated(200, "application/octet-stream", 1 << 30, |_, b| b.fill(7))
            }
            _ => Response::text(200, "hi"),
        })
        .websocket("/ws", |_| {})
        .build()
        .unwrap()
}

/// A client that asks for the 1 GiB body, reads its first bytes and no more: the server's
/// thread is then blocked sending into a full window.
fn stuck_download(server: &TestServer) -> TcpStream {
    let mut c = TcpStream::connect(server.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /huge HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 16];
    c.read_exact(&mut first).unwrap();
    assert_eq!(&first[..12], b"HTTP/1.1 200");
    // Time for the server to fill the socket buffers and block.
    std::thread::sleep(Duration::from_millis(200));
    c
}

/// A WebSocket client that never reads, and the server's handle on it.
fn silent_websocket(server: &TestServer) -> (tungstenite::WebSocket<TcpStream>, WsHandle) {
    let c = TcpStream::connect(server.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ws = tungstenite::client(server.ws_url("/ws"), c).unwrap().0;
    assert!(within_3s(|| server.ws_clients().len() == 1));
    let handle = server.ws_clients().remove(0);
    (ws, handle)
}

/// Sends 1 MiB messages on `handle` from another thread until a send fails; the thread's
/// handle.
fn flood(handle: WsHandle) -> std::thread::JoinHandle<()> {
    let t = std::thread::spawn(move || while handle.send_binary(vec![1u8; 1 << 20]) {});
    // Time for the sends to fill the socket buffers and block.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.is_finished(), "the client reads nothing: a send blocks");
    t
}

#[test]
fn kill_connections_ends_threads_blocked_reading_and_sending() {
    let server = server();
    let mut idle = TcpStream::connect(server.addr()).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let _download = stuck_download(&server);
    let (_ws, handle) = silent_websocket(&server);
    let sender = flood(handle.clone());
    assert_eq!(server.open(), 3);

    server.kill_connections();
    assert!(within_3s(|| server.open() == 0), "{} open", server.open());
    assert!(
        within_3s(|| sender.is_finished()),
        "a WebSocket send still blocked"
    );
    assert!(!handle.send_text("gone"));
    // The server goes on serving.
    let mut again = TcpStream::connect(server.addr()).unwrap();
    again
        .write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut status = [0u8; 12];
    again.read_exact(&mut status).unwrap();
    assert_eq!(&status, b"HTTP/1.1 200");
}

#[test]
fn stop_ends_threads_blocked_reading_and_sending() {
    let server = server();
    let _idle = TcpStream::connect(server.addr()).unwrap();
    let _download = stuck_download(&server);
    let (_ws, handle) = silent_websocket(&server);
    let sender = flood(handle);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let stopper = std::thread::spawn(move || {
        server.stop();
        let _ = done_tx.send(());
    });
    assert!(
        done_rx.recv_timeout(Duration::from_secs(3)).is_ok(),
        "stop() still joining its threads"
    );
    stopper.join().unwrap();
    assert!(
        within_3s(|| sender.is_finished()),
        "a WebSocket send still blocked"
    );
}

#[test]
fn a_websocket_killed_by_its_handle_ends_its_thread() {
    let server = server();
    let (mut ws, handle) = silent_websocket(&server);
    assert_eq!(server.open(), 1);
    handle.kill();
    assert!(within_3s(|| server.open() == 0), "{} open", server.open());
    assert!(ws.read().is_err());
    assert!(!handle.send_text("gone"));
}
