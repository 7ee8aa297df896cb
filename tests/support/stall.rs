//! [`StallServer`]: a loopback server that leaves its client blocked in one phase (waiting
//! for a response head, mid-body, between two SSE events, in a TLS or WebSocket handshake)
//! until the client hangs up, and counts the hang-ups: what a test of cancellation or shutdown
//! checks the server saw.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// See the module docs. Stops accepting when dropped; a connection's thread ends when its
/// client hangs up (or after 5 s of silence from it).
pub struct StallServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl StallServer {
    /// Reads a request head, writes `prefix` (nothing, a head and part of a body, a few
    /// events), then waits for the client to hang up.
    pub fn answering(prefix: &'static [u8]) -> StallServer {
        StallServer::start(Some(prefix))
    }

    /// Reads whatever comes (a TLS ClientHello, a WebSocket upgrade request) and never
    /// answers, until the client hangs up.
    pub fn silent() -> StallServer {
        StallServer::start(None)
    }

    fn start(prefix: Option<&'static [u8]>) -> StallServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, c, halt) = (accepted.clone(), closed.clone(), stop.clone());
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                thread::spawn(move || {
                    if stall(stream, prefix) {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        StallServer {
            addr,
            accepted,
            closed,
            stop,
            accept: Some(accept),
        }
    }

    /// `http://` and its address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://` and its address.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections the client has hung up so far.
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// Connections accepted and not hung up.
    pub fn open(&self) -> usize {
        self.accepted() - self.closed()
    }
}

/// Serves one connection; true when the client hung up (EOF or reset).
fn stall(mut stream: TcpStream, prefix: Option<&[u8]>) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    if let Some(prefix) = prefix {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return false,
            }
        }
        let _ = stream.write_all(prefix);
    }
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

impl Drop for StallServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}
