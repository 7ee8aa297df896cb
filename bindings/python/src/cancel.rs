//! `CancelToken` for Python, and the per-call tokens linked to it.
//!
//! A Python token wraps the core's [`CancelToken`]. A request given it is cancelled by it
//! directly. A stream or a WebSocket gets a token of its own (so that its `cancel()` and
//! `close()` can interrupt its reader without cancelling the caller's job), *linked* to the
//! caller's token: cancelling the caller's token cancels every per-call token linked to it.
//! A link is undone when its call's object is dropped, so a long-lived token does not
//! collect the tokens of calls long finished. A per-call token also carries what ends its
//! object when the caller's token fires ([`CallToken::on_cancel`]): a stream or lease that no
//! thread is using at that moment is closed at once, its pool slot freed.
//!
//! Linking follows the core's rule for hooks: the link is stored under the list's lock
//! unless the token is cancelled already, in which case the new call's token is cancelled
//! at once; `cancel` sets the flag before it takes the list, and cancels off the lock.

use std::sync::{Arc, OnceLock};

use backend_pool::CancelToken;
use parking_lot::Mutex;
use pyo3::prelude::*;

/// A token and the per-call tokens linked to it.
struct Shared {
    token: CancelToken,
    links: Mutex<Links>,
}

#[derive(Default)]
struct Links {
    next: u64,
    list: Vec<(u64, Arc<Call>)>,
}

impl Shared {
    fn cancel(&self) {
        self.token.cancel();
        // `token.cancel` set the flag: `link` stores nothing more after this.
        let linked = std::mem::take(&mut self.links.lock().list);
        for (_, call) in linked {
            call.cancel();
        }
    }
}

/// A cancellation token: `cancel()` from any thread makes every call given it raise
/// `Cancelled`: one blocked now (waiting for a connection, for a response head, reading a
/// body, an event stream or a WebSocket, sending), and every later one at once. Cheap to
/// make; cannot be reset: make one per job.
#[pyclass(frozen, name = "CancelToken", module = "backend_pool")]
pub(crate) struct PyCancelToken {
    shared: Arc<Shared>,
}

impl PyCancelToken {
    /// The core's token, for a call that needs no token of its own (a whole request).
    pub(crate) fn token(&self) -> &CancelToken {
        &self.shared.token
    }
}

#[pymethods]
impl PyCancelToken {
    #[new]
    fn new() -> Self {
        PyCancelToken {
            shared: Arc::new(Shared {
                token: CancelToken::new(),
                links: Mutex::new(Links::default()),
            }),
        }
    }

    /// Cancels every call given this token; returns once each blocked call has been woken
    /// (the calls raise `Cancelled` on their own threads). Idempotent.
    fn cancel(&self, py: Python<'_>) {
        // Shutting sockets down and waking waiters takes locks: not with the GIL held.
        py.detach(|| self.shared.cancel());
    }

    /// True once `cancel()` was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.shared.token.is_cancelled()
    }

    fn __repr__(&self) -> String {
        let cancelled = if self.cancelled() { "True" } else { "False" };
        format!("<CancelToken cancelled={cancelled}>")
    }
}

/// What the caller's token cancels for one call.
struct Call {
    token: CancelToken,
    /// Ends the call's object (see [`CallToken::on_cancel`]).
    on_cancel: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Call {
    fn cancel(&self) {
        self.token.cancel();
        if let Some(end) = self.on_cancel.get() {
            end();
        }
    }
}

/// The token of one stream or WebSocket: its own, cancelled by its `cancel()` / `close()`,
/// and by the caller's token if one was given.
pub(crate) struct CallToken {
    call: Arc<Call>,
    _link: Option<Link>,
}

impl CallToken {
    /// A new token, linked to `caller` if given (cancelled at once if `caller` is).
    pub(crate) fn new(caller: Option<&PyCancelToken>) -> Self {
        let call = Arc::new(Call {
            token: CancelToken::new(),
            on_cancel: OnceLock::new(),
        });
        let link = caller.map(|c| link(&c.shared, &call));
        CallToken { call, _link: link }
    }

    /// The token to give the call.
    pub(crate) fn token(&self) -> &CancelToken {
        &self.call.token
    }

    /// Cancels this call only.
    pub(crate) fn cancel(&self) {
        self.call.token.cancel();
    }

    /// True once cancelled (by this call's `cancel()` or by the caller's token).
    pub(crate) fn is_cancelled(&self) -> bool {
        self.call.token.is_cancelled()
    }

    /// Sets what the caller's token does besides cancelling this call's token: end the
    /// call's object (close it if unused), on the cancelling thread. Must not block. Runs
    /// now if the token is cancelled already (and may then run twice: it must be
    /// idempotent). Set once.
    pub(crate) fn on_cancel(&self, end: impl Fn() + Send + Sync + 'static) {
        let _ = self.call.on_cancel.set(Box::new(end));
        // After the set: a cancel that came before it found nothing to run.
        if self.call.token.is_cancelled() {
            if let Some(end) = self.call.on_cancel.get() {
                end();
            }
        }
    }
}

/// `call` is cancelled with `parent` until the returned link drops.
fn link(parent: &Arc<Shared>, call: &Arc<Call>) -> Link {
    {
        let mut links = parent.links.lock();
        // Read under the lock: `Shared::cancel` sets the flag before it takes the list.
        if !parent.token.is_cancelled() {
            links.next += 1;
            let id = links.next;
            links.list.push((id, Arc::clone(call)));
            return Link {
                parent: Arc::clone(parent),
                id: Some(id),
            };
        }
    }
    call.cancel(); // off the lock, as `Shared::cancel` does
    Link {
        parent: Arc::clone(parent),
        id: None,
    }
}

/// A call in its parent's list; removed from it on drop.
struct Link {
    parent: Arc<Shared>,
    id: Option<u64>,
}

impl Drop for Link {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let removed = {
            let mut links = self.parent.links.lock();
            let at = links.list.iter().position(|(i, _)| *i == id);
            at.map(|at| links.list.swap_remove(at))
        };
        drop(removed); // off the lock: may hold the last reference to the call's end
    }
}
