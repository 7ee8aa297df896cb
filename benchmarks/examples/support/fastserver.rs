//! A small, fast loopback server for the comparison example, run in a child process so its
//! CPU-light bookkeeping and its memory do not count against the client being measured.
//!
//! Three listeners on `127.0.0.1:0`, each thread-per-connection with blocking I/O (one `read`
//! and one `write` per request, no allocation per request, no logging, no locks):
//! * `http`: HTTP/1.1 keep-alive; every request (pipelining included) gets the same tiny JSON
//!   reply `{"ok":true}`;
//! * `slow`: the same, but the first response on each connection waits `SLOW_FIRST` (a 50 ms
//!   connect + handshake stand-in for the spike test);
//! * `ws`: WebSocket echo (text and binary echoed, pings answered by tungstenite).
//!
//! Protocol with the parent: the child prints `ports <http> <slow> <ws>` once; then for every
//! line `accepted` on stdin it prints `accepted <http> <slow> <ws>` (TCP connections accepted so
//! far per listener); it exits when stdin closes (so it never outlives the parent).

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Delay before the first response on a `slow` connection.
pub const SLOW_FIRST: Duration = Duration::from_millis(50);

const REPLY: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
const STACK: usize = 128 * 1024;

#[derive(Clone, Copy)]
enum Kind {
    Http,
    Slow,
    Ws,
}

/// Runs the server until stdin reaches EOF, then exits the process.
pub fn run() -> ! {
    let kinds = [Kind::Http, Kind::Slow, Kind::Ws];
    let counters: Vec<Arc<AtomicUsize>> = kinds.iter().map(|_| Arc::default()).collect();
    let mut ports = Vec::new();
    for (kind, counter) in kinds.iter().zip(&counters) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        ports.push(listener.local_addr().expect("addr").port());
        let (kind, counter) = (*kind, Arc::clone(counter));
        std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || accept_loop(listener, kind, counter))
            .expect("accept thread");
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ports {} {} {}", ports[0], ports[1], ports[2]).expect("stdout");
    out.flush().expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "accepted" {
            let n: Vec<usize> = counters.iter().map(|c| c.load(Ordering::SeqCst)).collect();
            writeln!(out, "accepted {} {} {}", n[0], n[1], n[2]).expect("stdout");
            out.flush().expect("stdout");
        }
    }
    std::process::exit(0)
}

fn accept_loop(listener: TcpListener, kind: Kind, accepted: Arc<AtomicUsize>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let spawned = std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || match kind {
                Kind::Http => serve_http(stream, None),
                Kind::Slow => serve_http(stream, Some(SLOW_FIRST)),
                Kind::Ws => serve_ws(stream),
            });
        if spawned.is_err() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn serve_http(mut stream: TcpStream, mut delay_first: Option<Duration>) {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    let mut out = Vec::with_capacity(REPLY.len() * 4);
    loop {
        // Answer every complete request in the buffer (pipelined ones included).
        while let Some(head_end) = find(&buf[..len], b"\r\n\r\n") {
            let end = head_end + 4 + content_length(&buf[..head_end]);
            if end > len {
                break;
            }
            if let Some(d) = delay_first.take() {
                std::thread::sleep(d);
            }
            out.extend_from_slice(REPLY);
            buf.copy_within(end..len, 0);
            len -= end;
        }
        if !out.is_empty() {
            if stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        if len == buf.len() {
            if buf.len() >= 1 << 20 {
                return; // a head or body this big is not what this server is for
            }
            buf.resize(buf.len() * 2, 0);
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> usize {
    head.split(|&b| b == b'\n')
        .find_map(|line| {
            let line = std::str::from_utf8(line).ok()?;
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

fn serve_ws(stream: TcpStream) {
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    loop {
        match ws.read() {
            Ok(m @ (tungstenite::Message::Text(_) | tungstenite::Message::Binary(_))) => {
                if ws.send(m).is_err() {
                    return;
                }
            }
            Ok(tungstenite::Message::Close(_)) => {
                let _ = ws.flush();
                return;
            }
            Ok(_) => {
                let _ = ws.flush(); // sends any queued pong
            }
            Err(_) => return,
        }
    }
}
