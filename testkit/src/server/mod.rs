//! [`TestServer`]: a loopback server speaking HTTP/1.1 keep-alive and WebSocket
//! on the same port, with fault injection and connection accounting.
//!
//! Threading: one accept thread plus one thread per connection (small stacks, so
//! thousands of idle connections are fine), plus one thread per
//! [`Response::after`] job. [`TestServer::stop`] (or drop) joins all of them: it kills
//! every connection (`sock.rs`: on Windows, where a shutdown does not wake a thread
//! blocked on the socket, the connection threads read and write in slices and see the
//! kill flag).

mod conn;
mod fault;
mod request;
mod response;
mod shared;
mod sock;
mod task;
mod ws;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use fault::Fault;
pub use request::Request;
pub use response::Response;
pub use task::TaskCtx;
pub use ws::WsHandle;

use shared::{lock, Config, ConnEntry, HttpHandler, Shared, WsOpen, THREAD_STACK};
use sock::Sock;

/// Configures and starts a [`TestServer`]. Every setting is optional.
pub struct ServerBuilder {
    handler: Box<HttpHandler>,
    ws_routes: Vec<(String, Box<WsOpen>)>,
    idle_timeout: Option<Duration>,
    max_requests: Option<usize>,
    accept_delay: Option<Duration>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field(
                "ws_routes",
                &self.ws_routes.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .field("idle_timeout", &self.idle_timeout)
            .field("max_requests", &self.max_requests)
            .field("accept_delay", &self.accept_delay)
            .finish()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            handler: Box::new(|_| Response::json(200, serde_json::json!({"ok": true}))),
            ws_routes: Vec::new(),
            idle_timeout: None,
            max_requests: None,
            accept_delay: None,
        }
    }
}

impl ServerBuilder {
    /// Sets the HTTP handler (default: `200 {"ok":true}` for everything).
    pub fn http(mut self, handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Self {
        self.handler = Box::new(handler);
        self
    }

    /// Accepts WebSocket upgrades on `path` (matched without the query string).
    ///
    /// `on_open` runs on the connection's thread right after the handshake; the
    /// server then echoes text and binary messages, answers pings and closes.
    pub fn websocket(
        mut self,
        path: &str,
        on_open: impl Fn(&WsHandle) + Send + Sync + 'static,
    ) -> Self {
        self.ws_routes.push((path.to_string(), Box::new(on_open)));
        self
    }

    /// Silently closes a keep-alive connection idle this long (like uvicorn).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = Some(d);
        self
    }

    /// Closes a connection after `n` requests (the last one carries `Connection: close`).
    pub fn max_requests_per_connection(mut self, n: usize) -> Self {
        self.max_requests = Some(n.max(1));
        self
    }

    /// Waits this long after accepting a connection before serving it.
    pub fn accept_delay(mut self, d: Duration) -> Self {
        self.accept_delay = Some(d);
        self
    }

    /// Binds `127.0.0.1:0` and starts serving.
    pub fn build(self) -> std::io::Result<TestServer> {
        let listener = bind_loopback()?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(Config {
            handler: self.handler,
            ws_routes: self.ws_routes,
            idle_timeout: self.idle_timeout,
            max_requests: self.max_requests,
            accept_delay: self.accept_delay,
        }));
        let accept_shared = Arc::clone(&shared);
        let accept_thread = std::thread::Builder::new()
            .name(format!("testkit-accept-{}", addr.port()))
            .stack_size(THREAD_STACK)
            .spawn(move || accept_loop(accept_shared, listener))?;
        Ok(TestServer {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        })
    }
}

/// Binds `127.0.0.1:0` with a deep accept queue: std's `TcpListener::bind` uses a
/// backlog of 128, and a burst of connects beyond it makes clients wait for a 1 s
/// SYN retransmit.
fn bind_loopback() -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// A connection accepted and registered, waiting for its thread.
struct Accepted {
    id: u64,
    stream: Arc<Sock>,
}

/// Accepts as fast as possible (the kernel's accept queue is only 128 long, and a
/// dropped SYN costs the client a 1 s retransmit); threads are spawned by
/// [`spawn_loop`].
fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let (tx, rx) = mpsc::channel::<Accepted>();
    let spawner_shared = Arc::clone(&shared);
    let spawner = std::thread::Builder::new()
        .name("testkit-spawner".to_string())
        .stack_size(THREAD_STACK)
        .spawn(move || spawn_loop(spawner_shared, rx));
    let spawner = match spawner {
        Ok(h) => h,
        Err(e) => {
            log::error!("testkit: cannot spawn the spawner thread: {e}");
            return;
        }
    };
    for stream in listener.incoming() {
        if shared.is_stopping() {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning.
                log::warn!("testkit: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let id = shared.next_conn_id.fetch_add(1, Ordering::SeqCst);
        if shared.fault() == Fault::Refuse {
            drop(stream);
            continue;
        }
        let stream = Arc::new(Sock::new(stream));
        let _ = stream.set_nodelay(true);
        lock(&shared.conns).insert(
            id,
            ConnEntry {
                stream: Arc::clone(&stream),
                ws: None,
            },
        );
        shared.open.fetch_add(1, Ordering::SeqCst);
        if tx.send(Accepted { id, stream }).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = spawner.join();
}

/// Starts one thread per accepted connection.
fn spawn_loop(shared: Arc<Shared>, rx: mpsc::Receiver<Accepted>) {
    for Accepted { id, stream } in rx {
        let conn_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("testkit-conn-{id}"))
            .stack_size(THREAD_STACK)
            .spawn(move || conn::serve(conn_shared, stream, id));
        match spawned {
            Ok(h) => shared.adopt_thread(h),
            Err(e) => {
                log::warn!("testkit: cannot spawn connection thread: {e}");
                if let Some(entry) = lock(&shared.conns).remove(&id) {
                    entry.stream.kill();
                }
                shared.open.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// A running loopback server; stops (joining all its threads) on [`TestServer::stop`] or drop.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .field("accepted", &self.accepted())
            .field("open", &self.open())
            .field("requests", &self.requests())
            .finish()
    }
}

impl TestServer {
    /// A builder with default settings.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The bound address (`127.0.0.1:<ephemeral port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT/path` (a missing leading `/` is added).
    pub fn ws_url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("ws://{}{slash}{path}", self.addr)
    }

    /// TCP connections accepted so far (HTTP and WebSocket, refused ones included).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// WebSocket handshakes completed so far.
    pub fn ws_accepted(&self) -> usize {
        self.shared.ws_accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open (being served).
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Complete HTTP requests received so far (WebSocket upgrades excluded;
    /// requests hit by a fault included).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// `(method, path-with-query)` of the last 10,000 requests, oldest first
    /// (WebSocket upgrade requests included).
    pub fn request_log(&self) -> Vec<(String, String)> {
        self.shared.request_log()
    }

    /// Injects a fault from now on ([`Fault::None`] restores normal behaviour).
    pub fn set_fault(&self, fault: Fault) {
        self.shared.set_fault(fault);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        self.shared.fault()
    }

    /// Shuts down (both directions) every open connection, HTTP and WebSocket,
    /// as a crashing or restarting backend would, and ends their threads, whatever they
    /// are blocked in (on Windows too, where a shutdown alone does not wake them).
    pub fn kill_connections(&self) {
        self.shared.kill_connections();
    }

    /// Sends `text` to every open WebSocket; returns how many sends succeeded.
    pub fn broadcast(&self, text: &str) -> usize {
        self.ws_clients()
            .iter()
            .filter(|c| c.send_text(text))
            .count()
    }

    /// Handles of the open WebSockets, by increasing id.
    pub fn ws_clients(&self) -> Vec<WsHandle> {
        self.shared.ws_clients()
    }

    /// Stops accepting, closes every connection and joins every thread.
    pub fn stop(self) {
        // Drop does the work.
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept_thread.take() else {
            return;
        };
        self.shared.begin_stop();
        // Wake the blocking accept() with a throw-away connection, and with another should
        // that one not reach it (a connect that failed or timed out on a loaded machine).
        while !accept.is_finished() {
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let until = Instant::now() + Duration::from_millis(500);
            while !accept.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let _ = accept.join();
        self.shared.kill_connections();
        self.shared.join_all();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
