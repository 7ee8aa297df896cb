//! The locks under the pool state machine: `parking_lot` normally, loom's models when built
//! with `RUSTFLAGS="--cfg backend_pool_loom"` (the model-checking tests in `slots.rs`).

use std::time::Instant;

#[cfg(not(backend_pool_loom))]
pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};
#[cfg(not(backend_pool_loom))]
pub(crate) use std::sync::{atomic::AtomicBool, Arc};

#[cfg(backend_pool_loom)]
pub(crate) use loom::sync::{atomic::AtomicBool, Arc, Condvar, Mutex, MutexGuard};

#[cfg(not(backend_pool_loom))]
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock()
}

#[cfg(backend_pool_loom)]
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits on `cond` until notified or `deadline`; returns the guard and whether the deadline
/// passed.
#[cfg(not(backend_pool_loom))]
pub(crate) fn wait_until<'a, T>(
    cond: &Condvar,
    _mutex: &'a Mutex<T>,
    mut guard: MutexGuard<'a, T>,
    deadline: Instant,
) -> (MutexGuard<'a, T>, bool) {
    let timed_out = cond.wait_until(&mut guard, deadline).timed_out();
    (guard, timed_out)
}

/// loom does not model time. A deadline already passed releases the lock (so every other
/// thread may act in between, as it could before a real timeout fires) and reports a
/// timeout; any other deadline waits for a notification.
#[cfg(backend_pool_loom)]
pub(crate) fn wait_until<'a, T>(
    cond: &Condvar,
    mutex: &'a Mutex<T>,
    guard: MutexGuard<'a, T>,
    deadline: Instant,
) -> (MutexGuard<'a, T>, bool) {
    if deadline <= Instant::now() {
        drop(guard);
        loom::thread::yield_now();
        (lock(mutex), true)
    } else {
        let guard = cond
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (guard, false)
    }
}
