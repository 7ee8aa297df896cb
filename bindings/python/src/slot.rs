//! [`Slot`]: the Rust object a pyclass holds (a stream, a WebSocket lease), used by one
//! thread at a time and closed by any thread without waiting for the one using it.
//!
//! The object sits under a lock held across I/O by the thread using it. Closing must not
//! take that lock (the reader may be blocked for minutes): a second, short lock (never held
//! across I/O) counts the threads using the object and whether it is closed. `close` marks
//! it closed; if nobody is using it, the closer takes the object and ends it as asked; if a
//! thread is, the closer interrupts it (cancels the call's token) and returns, and the last
//! thread to stop using the object abandons it on its own thread: a connection interrupted
//! mid-read is closed there, never returned to its pool half-used. No thread starts using a
//! closed object.

use parking_lot::Mutex;

/// See the module docs.
pub(crate) struct Slot<T> {
    state: Mutex<State>,
    value: Mutex<Option<T>>,
    /// What the last user does with an object closed while in use (or whose call was
    /// cancelled): its connection must not go back to the pool.
    abandon: fn(T),
}

#[derive(Default)]
struct State {
    /// Threads between `use_with`'s start and end.
    users: usize,
    closed: bool,
}

impl<T> Slot<T> {
    /// `abandon` ends the object when it was closed while in use (or its call cancelled).
    pub(crate) fn new(value: T, abandon: fn(T)) -> Self {
        Slot {
            state: Mutex::new(State::default()),
            value: Mutex::new(Some(value)),
            abandon,
        }
    }

    /// Runs `f` on the object (waiting for another user to finish first), or returns None if
    /// it is closed. If `close_after()` is true once `f` returns (the call's token was
    /// cancelled), the object is closed too. The last user after a close ends the object
    /// with `abandon`.
    /// Blocks: call it with the interpreter detached.
    pub(crate) fn use_with<R>(
        &self,
        f: impl FnOnce(&mut T) -> R,
        close_after: impl FnOnce() -> bool,
    ) -> Option<R> {
        {
            let mut state = self.state.lock();
            if state.closed {
                return None;
            }
            state.users += 1;
        }
        let result = self.value.lock().as_mut().map(f);
        let close = result.is_none() || close_after();
        let last = {
            let mut state = self.state.lock();
            state.users -= 1;
            state.closed |= close;
            state.closed && state.users == 0
        };
        if last {
            // Nobody uses it, nobody can start to: the lock is free.
            let value = self.value.lock().take();
            if let Some(value) = value {
                (self.abandon)(value);
            }
        }
        result
    }

    /// Marks the object closed. Unused, it is taken and given to `end` here; in use,
    /// `interrupt` is called (the users' calls fail at once) and the last user abandons it.
    /// Never waits for a user. Idempotent: false if it was closed already.
    pub(crate) fn close(&self, end: impl FnOnce(T), interrupt: impl FnOnce()) -> bool {
        let unused = {
            let mut state = self.state.lock();
            if state.closed {
                return false;
            }
            state.closed = true;
            state.users == 0
        };
        if unused {
            // Taken first: `end` runs off the lock (it may do I/O).
            let value = self.value.lock().take();
            if let Some(value) = value {
                end(value);
            }
        } else {
            interrupt();
        }
        true
    }

    /// True once closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// The object, if nobody took it (the pyclass is being dropped: no user is left, but a
    /// cancel on another thread may be closing it: the lock, not `&mut`).
    pub(crate) fn take(&self) -> Option<T> {
        self.value.lock().take()
    }
}

/// `" closed"` for a closed object's `repr`, else nothing.
pub(crate) fn closed_suffix(closed: bool) -> &'static str {
    if closed {
        " closed"
    } else {
        ""
    }
}
