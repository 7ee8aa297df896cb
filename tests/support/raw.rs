//! [`RawServer`]: the one scripted loopback server of the tests. Each accepted connection runs
//! the test's script on its own thread with a [`Peer`] (read a request head, write any bytes,
//! reset, wait for the client to hang up, or take the bare socket for a WebSocket server);
//! the server counts what a test checks from the server's side: connections accepted,
//! request heads read, hang-ups seen.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a connection's reads wait for its client before the script gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(8);

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    requests: AtomicUsize,
    closed: AtomicUsize,
}

/// See the module docs. Stops accepting when dropped (and sets every [`Peer::stop_flag`]);
/// a connection's thread ends with its script.
pub struct RawServer {
    addr: SocketAddr,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl RawServer {
    /// Starts a server on 127.0.0.1 running `script` on each accepted connection.
    pub fn start(script: impl Fn(Peer) + Send + Sync + 'static) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(script);
        let (c, halt) = (Arc::clone(&counts), Arc::clone(&stop));
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if halt.load(SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                c.accepted.fetch_add(1, SeqCst);
                let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
                let peer = Peer::with(stream, Arc::clone(&c), Arc::clone(&halt));
                let script = Arc::clone(&script);
                thread::spawn(move || script(peer));
            }
        });
        RawServer {
            addr,
            counts,
            stop,
            accept: Some(accept),
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
        self.counts.accepted.load(SeqCst)
    }

    /// Request heads read so far ([`Peer::read_request`], [`Peer::read_request_head_only`]).
    pub fn requests(&self) -> usize {
        self.counts.requests.load(SeqCst)
    }

    /// Hang-ups seen so far ([`Peer::wait_for_hangup`] returned true).
    pub fn closed(&self) -> usize {
        self.counts.closed.load(SeqCst)
    }

    /// Connections accepted and not seen hung up (for scripts that end in
    /// [`Peer::wait_for_hangup`]).
    pub fn open(&self) -> usize {
        self.accepted() - self.closed()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// One accepted connection, as a script sees it.
pub struct Peer {
    reader: BufReader<TcpStream>,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

impl Peer {
    /// A peer for a connection accepted outside a [`RawServer`] (its counts go nowhere).
    pub fn new(stream: TcpStream) -> Peer {
        let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
        Peer::with(stream, Arc::default(), Arc::default())
    }

    fn with(stream: TcpStream, counts: Arc<Counts>, stop: Arc<AtomicBool>) -> Peer {
        Peer {
            reader: BufReader::new(stream),
            counts,
            stop,
        }
    }

    /// Reads one request head and its `Content-Length` body; `None` at EOF. Counts it.
    pub fn read_request(&mut self) -> Option<String> {
        let head = self.read_request_head_only()?;
        let _ = std::io::copy(
            &mut (&mut self.reader).take(content_length(&head) as u64),
            &mut std::io::sink(),
        );
        Some(head)
    }

    /// Reads one request head only (a body stays unread); `None` at EOF. Counts it.
    pub fn read_request_head_only(&mut self) -> Option<String> {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        self.counts.requests.fetch_add(1, SeqCst);
        Some(head)
    }

    /// Writes `bytes`; false if the client is gone.
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        let stream = self.reader.get_mut();
        stream
            .write_all(bytes)
            .and_then(|()| stream.flush())
            .is_ok()
    }

    /// Answers every request on the connection with `answer` until EOF.
    pub fn serve(&mut self, answer: &[u8]) {
        while self.read_request().is_some() {
            if !self.write(answer) {
                return;
            }
        }
    }

    /// Closes with a TCP reset (SO_LINGER 0) instead of a FIN.
    pub fn reset(&mut self) {
        let _ = socket2::SockRef::from(self.reader.get_ref()).set_linger(Some(Duration::ZERO));
        self.shutdown();
    }

    /// Shuts the connection down both ways (a FIN), the peer still held.
    pub fn shutdown(&self) {
        let _ = self.reader.get_ref().shutdown(std::net::Shutdown::Both);
    }

    /// Reads and drops whatever the client sends until it hangs up; true (and counted in
    /// [`RawServer::closed`]) when it did (EOF or reset), false after [`READ_TIMEOUT`] of
    /// silence.
    pub fn wait_for_hangup(&mut self) -> bool {
        let mut sink = [0u8; 1024];
        loop {
            match self.reader.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(_) => return false,
            }
        }
        self.counts.closed.fetch_add(1, SeqCst);
        true
    }

    /// True once the server is dropped.
    pub fn stopping(&self) -> bool {
        self.stop.load(SeqCst)
    }

    /// Sleeps in small steps until the server is dropped or `limit` passes.
    pub fn idle_until_stopped(&self, limit: Duration) {
        idle_until(&self.stop, limit);
    }

    /// The bare socket (for a WebSocket server, or byte-level scripts) and the server's stop
    /// flag. Bytes already read into the peer's buffer are lost: take it before reading.
    pub fn into_parts(self) -> (TcpStream, Arc<AtomicBool>) {
        assert!(self.reader.buffer().is_empty(), "bytes read would be lost");
        (self.reader.into_inner(), self.stop)
    }
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

/// Sleeps in small steps until `stop` is set or `limit` passes.
pub fn idle_until(stop: &AtomicBool, limit: Duration) {
    let end = Instant::now() + limit;
    while !stop.load(SeqCst) && Instant::now() < end {
        thread::sleep(Duration::from_millis(5));
    }
}

/// The `Content-Length` of a request or response head (0 without one).
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}
