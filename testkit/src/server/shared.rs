//! State shared between a [`TestServer`](crate::TestServer) handle and its threads.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::fault::Fault;
use super::request::Request;
use super::response::{AfterFn, Response};
use super::sock::Sock;
use super::task::TaskCtx;
use super::ws::WsHandle;

/// Requests kept by the request log.
const LOG_CAPACITY: usize = 10_000;
/// Stack size of every server thread (connections and background jobs).
pub(crate) const THREAD_STACK: usize = 256 * 1024;

pub(crate) type HttpHandler = dyn Fn(&Request) -> Response + Send + Sync + 'static;
pub(crate) type WsOpen = dyn Fn(&WsHandle) + Send + Sync + 'static;

/// Immutable configuration fixed by the builder.
pub(crate) struct Config {
    pub handler: Box<HttpHandler>,
    pub ws_routes: Vec<(String, Box<WsOpen>)>,
    pub idle_timeout: Option<Duration>,
    pub max_requests: Option<usize>,
    pub accept_delay: Option<Duration>,
}

/// Mutable control state, guarded by one mutex and signalled by one condvar.
struct Control {
    fault: Fault,
    stopping: bool,
}

/// One open TCP connection, as seen by the server handle.
pub(crate) struct ConnEntry {
    /// The socket (shared with the connection thread), to kill it from outside.
    pub stream: Arc<Sock>,
    /// Set once the connection became a WebSocket.
    pub ws: Option<WsHandle>,
}

pub(crate) struct Shared {
    pub config: Config,
    control: Mutex<Control>,
    cond: Condvar,
    stopping: AtomicBool,
    pub accepted: AtomicUsize,
    pub ws_accepted: AtomicUsize,
    pub open: AtomicUsize,
    pub requests: AtomicUsize,
    pub next_conn_id: AtomicU64,
    log: Mutex<VecDeque<(String, String)>>,
    pub conns: Mutex<HashMap<u64, ConnEntry>>,
    threads: Mutex<Threads>,
}

/// Adopted thread handles; finished ones are joined in batches.
#[derive(Default)]
struct Threads {
    handles: Vec<JoinHandle<()>>,
    /// Reap when `handles` grows past this (amortizes the scan).
    reap_at: usize,
}

/// Locks a mutex, ignoring poisoning (a panicking handler must not wedge the server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn new(config: Config) -> Shared {
        Shared {
            config,
            control: Mutex::new(Control {
                fault: Fault::None,
                stopping: false,
            }),
            cond: Condvar::new(),
            stopping: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            ws_accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            next_conn_id: AtomicU64::new(1),
            log: Mutex::new(VecDeque::new()),
            conns: Mutex::new(HashMap::new()),
            threads: Mutex::new(Threads::default()),
        }
    }

    pub fn fault(&self) -> Fault {
        lock(&self.control).fault
    }

    pub fn set_fault(&self, fault: Fault) {
        lock(&self.control).fault = fault;
        self.cond.notify_all();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        lock(&self.control).stopping = true;
        self.cond.notify_all();
    }

    /// Wakes every thread parked in [`Shared::sleep`] or [`Shared::wait_while_fault`].
    pub fn wake_all(&self) {
        let _g = lock(&self.control);
        self.cond.notify_all();
    }

    /// Sleeps up to `d`; returns `false` early if the server stops (or `killed` is set).
    pub fn sleep(&self, d: Duration, killed: Option<&AtomicBool>) -> bool {
        let deadline = Instant::now() + d;
        let mut guard = lock(&self.control);
        loop {
            if guard.stopping || killed.is_some_and(|k| k.load(Ordering::SeqCst)) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            guard = self
                .cond
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Blocks while `pred(current fault)` holds. Returns `false` if it gave up
    /// because the server is stopping or the connection was killed.
    pub fn wait_while_fault(&self, pred: impl Fn(Fault) -> bool, killed: &AtomicBool) -> bool {
        let mut guard = lock(&self.control);
        loop {
            if guard.stopping || killed.load(Ordering::SeqCst) {
                return false;
            }
            if !pred(guard.fault) {
                return true;
            }
            // The timeout only guards against a missed wake-up.
            guard = self
                .cond
                .wait_timeout(guard, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn log_request(&self, method: &str, path: &str) {
        let mut log = lock(&self.log);
        if log.len() >= LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back((method.to_string(), path.to_string()));
    }

    pub fn request_log(&self) -> Vec<(String, String)> {
        lock(&self.log).iter().cloned().collect()
    }

    /// Keeps a thread handle so that `stop` can join it; joins finished ones.
    pub fn adopt_thread(&self, handle: JoinHandle<()>) {
        let finished: Vec<JoinHandle<()>> = {
            let mut threads = lock(&self.threads);
            threads.handles.push(handle);
            if threads.handles.len() < threads.reap_at {
                return;
            }
            let (done, running): (Vec<_>, Vec<_>) =
                threads.handles.drain(..).partition(JoinHandle::is_finished);
            threads.reap_at = (running.len() * 2).max(64);
            threads.handles = running;
            done
        };
        for h in finished {
            let _ = h.join();
        }
    }

    /// Joins every adopted thread, including ones adopted while joining.
    pub fn join_all(&self) {
        loop {
            let batch: Vec<JoinHandle<()>> = std::mem::take(&mut lock(&self.threads).handles);
            if batch.is_empty() {
                return;
            }
            for h in batch {
                let _ = h.join();
            }
        }
    }

    /// Runs a [`Response::after`] job on a new server-owned thread.
    pub fn spawn_task(self: &Arc<Self>, job: AfterFn) {
        if self.is_stopping() {
            return;
        }
        let ctx = TaskCtx {
            shared: Arc::clone(self),
        };
        let spawned = std::thread::Builder::new()
            .name("testkit-task".to_string())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&ctx)));
            });
        match spawned {
            Ok(h) => self.adopt_thread(h),
            Err(e) => log::warn!("testkit: cannot spawn background task: {e}"),
        }
    }

    /// Shuts down every open connection (HTTP and WebSocket).
    pub fn kill_connections(&self) {
        for entry in lock(&self.conns).values() {
            entry.stream.kill();
        }
        self.wake_all();
    }

    pub fn ws_clients(&self) -> Vec<WsHandle> {
        let mut clients: Vec<WsHandle> = lock(&self.conns)
            .values()
            .filter_map(|e| e.ws.clone())
            .filter(WsHandle::is_open)
            .collect();
        clients.sort_by_key(WsHandle::id);
        clients
    }
}
