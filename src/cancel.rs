//! [`CancelToken`]: cancelling a blocked call from another thread.
//!
//! A token is a flag and a list of hooks. A blocked call registers a hook with the token for
//! as long as it blocks ([`CancelToken::register`]); [`CancelToken::cancel`] sets the flag,
//! then fires every hook registered, off the token's lock:
//!
//! * [`Hook::Wake`]: wakes a waiter (the wait for a permit in `Slots::acquire`: the hook
//!   takes the slots lock, so the wake-up cannot fall between the waiter's check of the flag
//!   and its sleep, and notifies that waiter's condvar);
//! * [`Hook::Tcp`]: shuts a socket down through a clone of it, so a blocked connect, read or
//!   write on it returns at once (as `crate::abort` does at shutdown; a connect's socket is
//!   registered before it connects: `crate::net`; on Windows within a slice: `crate::net`,
//!   "Windows"). The call then sees the token cancelled
//!   and reports [`crate::Error::Cancelled`], not the I/O error.
//!
//! A hook registered after `cancel` is not stored and never fires: a caller registers first,
//! then checks [`CancelToken::is_cancelled`] before it blocks.
//!
//! Lock order: a hook may be registered under the slots lock (slots, then token); `cancel`
//! releases the token's lock before it fires a hook (which may take the slots lock).

use std::fmt;
use std::sync::atomic::Ordering;

use crate::net::SharedTcp;

use crate::sync::{lock, Arc, AtomicBool, Mutex};

/// A cancellation token: cheap to clone (one `Arc`), `Send + Sync`; every clone cancels the
/// same calls. Pass it to a request ([`crate::RequestBuilder::cancel_on`]) or a WebSocket
/// checkout ([`crate::PoolManager::websocket_cancellable`]); [`CancelToken::cancel`] from any
/// thread makes a call blocked on it return [`crate::Error::Cancelled`], and every later call
/// given it fails at once. A token cannot be reset: make a new one per job.
///
/// ```
/// let token = backend_pool::CancelToken::new();
/// let for_the_ui = token.clone();
/// assert!(!token.is_cancelled());
/// for_the_ui.cancel(); // the user pressed Cancel
/// assert!(token.is_cancelled());
/// ```
#[derive(Clone)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

struct Inner {
    cancelled: AtomicBool,
    hooks: Mutex<Hooks>,
}

#[derive(Default)]
struct Hooks {
    next: u64,
    list: Vec<(u64, Hook)>,
}

/// What `cancel` does for one blocked call. See the module docs.
pub(crate) enum Hook {
    /// Shut this socket (the call's own, shared) down.
    Tcp(std::sync::Arc<SharedTcp>),
    /// Run this: wake a waiter, shut an HTTP item's agent down (see `Wire::cancel_hook`).
    Wake(Box<dyn Fn() + Send + Sync>),
}

impl Hook {
    fn fire(self) {
        match self {
            Hook::Tcp(stream) => stream.shut_down(),
            Hook::Wake(wake) => wake(),
        }
    }
}

impl Default for CancelToken {
    fn default() -> Self {
        CancelToken {
            inner: Arc::new(Inner {
                cancelled: AtomicBool::new(false),
                hooks: Mutex::new(Hooks::default()),
            }),
        }
    }
}

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every call blocked on this token (and every later one given it). Returns once
    /// each blocked call has been woken or its socket shut down; the calls themselves return
    /// on their own threads. Idempotent.
    pub fn cancel(&self) {
        if self.inner.cancelled.swap(true, Ordering::SeqCst) {
            return;
        }
        let hooks = std::mem::take(&mut lock(&self.inner.hooks).list);
        // Off-lock: a hook takes another lock or makes a system call.
        for (_, hook) in hooks {
            hook.fire();
        }
    }

    /// Has [`CancelToken::cancel`] been called?
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Registers `hook` until the returned registration drops. After `cancel`, nothing is
    /// registered (and the hook never fires): check [`CancelToken::is_cancelled`] after this.
    pub(crate) fn register(&self, hook: Hook) -> Registration {
        let mut hooks = lock(&self.inner.hooks);
        // Read under the lock: `cancel` sets the flag before it takes the list.
        if self.is_cancelled() {
            return Registration {
                token: self.clone(),
                id: None,
            };
        }
        hooks.next += 1;
        let id = hooks.next;
        hooks.list.push((id, hook));
        Registration {
            token: self.clone(),
            id: Some(id),
        }
    }

    /// Registers `stream` (the socket itself, shared: no second descriptor), shut down on
    /// `cancel`.
    pub(crate) fn watch_tcp(&self, stream: &std::sync::Arc<SharedTcp>) -> Registration {
        self.register(Hook::Tcp(std::sync::Arc::clone(stream)))
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// A registered hook; unregisters it (dropping a socket clone) when dropped. Holds the token
/// (a clone), so it can live in a response that outlives the call.
#[must_use = "the hook is registered only while this lives"]
pub(crate) struct Registration {
    token: CancelToken,
    id: Option<u64>,
}

impl Registration {
    /// The token this registration is with.
    pub(crate) fn token(&self) -> &CancelToken {
        &self.token
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let hook = {
            let mut hooks = lock(&self.token.inner.hooks);
            let at = hooks.list.iter().position(|(i, _)| *i == id);
            at.map(|at| hooks.list.swap_remove(at).1)
        };
        drop(hook); // closes a socket clone off-lock
    }
}

#[cfg(all(test, not(backend_pool_loom)))]
mod tests {
    use super::*;
    use crate::net::blocking_read;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    #[test]
    fn cancel_shuts_a_watched_socket_down_and_later_registrations_never_fire() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client: std::sync::Arc<SharedTcp> = std::sync::Arc::new(
            TcpStream::connect(listener.local_addr().unwrap())
                .unwrap()
                .into(),
        );
        let _server = listener.accept().unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let token = CancelToken::new();
        let started = Instant::now();
        std::thread::scope(|s| {
            let watch = token.watch_tcp(&client);
            let other = token.clone();
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                other.cancel();
            });
            assert_eq!(
                blocking_read(&client, &mut [0u8; 8]).unwrap(),
                0,
                "EOF after cancel"
            );
            drop(watch);
        });
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(token.is_cancelled());
        let fired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fired);
        let late = token.register(Hook::Wake(Box::new(move || {
            flag.store(true, Ordering::SeqCst)
        })));
        token.cancel();
        drop(late);
        assert!(!fired.load(Ordering::SeqCst));
        assert!(lock(&token.inner.hooks).list.is_empty());
        assert_eq!(format!("{token:?}"), "CancelToken { cancelled: true }");
    }
}
