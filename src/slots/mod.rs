//! The capacity state machine both pool kinds share: permits, a LIFO idle stack and a FIFO
//! queue of waiters, all under one `parking_lot` mutex.
//!
//! A permit is the right to hold one connection. `acquire` hands out a permit and, when one is
//! idle, the newest idle connection (LIFO, so idle eviction can shrink the pool from the old
//! end); `Ok(None)` means "you hold a permit, open a connection". `release` puts a connection
//! back and hands the permit straight to the oldest waiter (first come, first served, one
//! targeted wake-up per release instead of a thundering herd). Nothing here does I/O: callers
//! connect and close after the guard is dropped.
//!
//! Maintenance takes permits too (to ping or check idle connections, to open the minimum),
//! through its own methods (`try_tend`, `borrow_idle`, `reserve_below`) and gives them back
//! through its own (`release_tended`, `restore_tended`). Those permits count against capacity
//! like any other but are reported as `tending`, not `in_use`: statistics show what callers
//! hold, not a maintenance pass that happened to run when they were read.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::cancel::{CancelToken, Hook};
use crate::sync::{lock, wait_until, Arc, AtomicBool, Condvar, Mutex};

/// An idle connection and when it went idle.
pub(crate) struct Idle<T> {
    pub item: T,
    pub since: Instant,
}

/// Why `acquire` gave up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AcquireError {
    /// The deadline passed; occupancy when it did.
    Timeout(Occupancy),
    /// `close` was called.
    Closed,
    /// The caller's token was cancelled (before or while it waited).
    Cancelled,
}

/// Permits held, idle connections and waiters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Occupancy {
    /// Permits held by callers.
    pub in_use: usize,
    pub idle: usize,
    pub waiting: usize,
    /// Permits held by maintenance (not in `in_use`).
    pub tending: usize,
}

struct Waiter {
    cond: Condvar,
    /// Set (under the slots lock) when a releaser hands this waiter its permit.
    granted: AtomicBool,
}

struct State<T> {
    idle: Vec<Idle<T>>,
    /// Permits out, maintenance's included.
    in_use: usize,
    /// Of those, held by maintenance.
    tending: usize,
    queue: VecDeque<Arc<Waiter>>,
    closed: bool,
}

/// Permits + idle stack + FIFO waiters. See the module docs.
pub(crate) struct Slots<T> {
    max: usize,
    /// In an `Arc` so a cancel hook can take the lock from another thread (the same lock
    /// the waiter sleeps under: no lost wake-up).
    state: Arc<Mutex<State<T>>>,
    /// Mirrors `State::closed` for lock-free reads on the return path.
    closed: std::sync::atomic::AtomicBool,
}

impl<T> Slots<T> {
    pub(crate) fn new(max: usize) -> Self {
        Slots {
            max,
            state: Arc::new(Mutex::new(State {
                idle: Vec::new(),
                in_use: 0,
                tending: 0,
                queue: VecDeque::new(),
                closed: false,
            })),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Waits until a permit is free (or handed over) or `deadline` passes.
    ///
    /// Returns the newest idle connection with the permit, or `None` when the caller must open
    /// one. Callers are served in arrival order.
    #[cfg(any(test, backend_pool_loom))]
    pub(crate) fn acquire(&self, deadline: Instant) -> Result<Option<T>, AcquireError>
    where
        T: Send + 'static,
    {
        self.acquire_cancellable(deadline, None)
    }

    /// [`Slots::acquire`] that also ends, with [`AcquireError::Cancelled`], when `cancel` is
    /// cancelled: before it starts, or while it waits (the token wakes the waiter through a
    /// registered hook, no polling). A waiter granted a permit as it is cancelled passes the
    /// permit on (to the next waiter, or back to the free count): none is lost. Without a
    /// token nothing is registered: one branch more than a plain wait.
    pub(crate) fn acquire_cancellable(
        &self,
        deadline: Instant,
        cancel: Option<&CancelToken>,
    ) -> Result<Option<T>, AcquireError>
    where
        T: Send + 'static,
    {
        let cancelled = || cancel.is_some_and(CancelToken::is_cancelled);
        if cancelled() {
            return Err(AcquireError::Cancelled);
        }
        let mut st = lock(&self.state);
        if st.closed {
            return Err(AcquireError::Closed);
        }
        if st.queue.is_empty() && st.in_use < self.max {
            st.in_use += 1;
            return Ok(st.idle.pop().map(|i| i.item));
        }
        let me = Self::enqueue(&mut st);
        // Registered under the slots lock; the hook takes that lock before it notifies, so
        // it cannot fire between the check below and the wait.
        let _hook = cancel.map(|token| {
            let state = Arc::clone(&self.state);
            let waiter = Arc::clone(&me);
            token.register(Hook::Wake(Box::new(move || {
                drop(lock(&state));
                waiter.cond.notify_one();
            })))
        });
        loop {
            if cancelled() {
                if me.granted.load(Ordering::Relaxed) {
                    Self::pass_on(&mut st);
                } else if !st.closed {
                    st.queue.retain(|w| !Arc::ptr_eq(w, &me));
                }
                return Err(AcquireError::Cancelled);
            }
            // `granted` is written under the lock by the releaser that hands over its permit.
            if me.granted.load(Ordering::Relaxed) {
                return Ok(st.idle.pop().map(|i| i.item));
            }
            if st.closed {
                return Err(AcquireError::Closed);
            }
            let (guard, timed_out) = wait_until(&me.cond, &self.state, st, deadline);
            st = guard;
            if timed_out && !me.granted.load(Ordering::Relaxed) && !st.closed && !cancelled() {
                return Err(Self::time_out(&mut st, &me));
            }
        }
    }

    /// Queues a new waiter (the caller holds the lock).
    fn enqueue(st: &mut State<T>) -> Arc<Waiter> {
        let me = Arc::new(Waiter {
            cond: Condvar::new(),
            granted: AtomicBool::new(false),
        });
        st.queue.push_back(Arc::clone(&me));
        me
    }

    /// A waiter's deadline passed: it leaves the queue; the error carries the occupancy as
    /// it saw it, itself included.
    fn time_out(st: &mut State<T>, me: &Arc<Waiter>) -> AcquireError {
        let seen = Self::occupancy_of(st);
        st.queue.retain(|w| !Arc::ptr_eq(w, me));
        AcquireError::Timeout(seen)
    }

    /// Takes a maintenance permit without waiting and without jumping the queue (checking
    /// idle connections). Returns the newest idle connection, if any, with the permit; give
    /// it back with [`Slots::release_tended`].
    pub(crate) fn try_tend(&self) -> Option<Option<T>> {
        let mut st = lock(&self.state);
        if st.closed || !st.queue.is_empty() || st.in_use >= self.max {
            return None;
        }
        st.in_use += 1;
        st.tending += 1;
        Some(st.idle.pop().map(|i| i.item))
    }

    /// Takes a maintenance permit to open one more connection while the total (in use +
    /// idle) is below `min`: the refill. Never ahead of waiting callers. Give it back with
    /// [`Slots::release_tended`].
    pub(crate) fn reserve_below(&self, min: usize) -> bool {
        let mut st = lock(&self.state);
        let ok = !st.closed
            && st.queue.is_empty()
            && st.in_use < self.max
            && st.in_use + st.idle.len() < min;
        if ok {
            st.in_use += 1;
            st.tending += 1;
        }
        ok
    }

    /// Gives a permit back, with the connection to keep idle (`None`: it was closed).
    ///
    /// Returns the connection when the pool is closed, so the caller closes it (off-lock).
    pub(crate) fn release(&self, item: Option<T>) -> Option<T> {
        // The clock is read only when a connection comes back (it costs ~50 ns).
        self.put_back(item.map(|item| (item, Instant::now())), false)
    }

    /// Gives back a connection as idle since `since` (the fuzz test runs a virtual clock).
    #[cfg(all(test, not(backend_pool_loom)))]
    pub(crate) fn restore(&self, item: T, since: Instant) -> Option<T> {
        self.put_back(Some((item, since)), false)
    }

    /// [`Slots::release`] for a maintenance permit.
    pub(crate) fn release_tended(&self, item: Option<T>) -> Option<T> {
        self.put_back(item.map(|item| (item, Instant::now())), true)
    }

    /// `Slots::restore` for a connection maintenance borrowed ([`Slots::borrow_idle`],
    /// [`Slots::try_tend`]).
    pub(crate) fn restore_tended(&self, item: T, since: Instant) -> Option<T> {
        self.put_back(Some((item, since)), true)
    }

    fn put_back(&self, item: Option<(T, Instant)>, tended: bool) -> Option<T> {
        let mut st = lock(&self.state);
        if tended {
            st.tending -= 1;
        }
        let rejected = match item {
            Some((item, since)) if !st.closed => {
                // Keep the stack ordered by idle age: newest on top.
                let at = st.idle.partition_point(|i| i.since <= since);
                st.idle.insert(at, Idle { item, since });
                None
            }
            other => other.map(|(item, _)| item),
        };
        Self::pass_on(&mut st);
        rejected
    }

    /// A permit is free: to the oldest waiter, or back to the free count.
    fn pass_on(st: &mut State<T>) {
        match st.queue.pop_front() {
            Some(waiter) => {
                waiter.granted.store(true, Ordering::Relaxed);
                waiter.cond.notify_one();
            }
            None => st.in_use -= 1,
        }
    }

    /// Removes idle connections for which `expired` holds, oldest first, never taking the
    /// total (in use + idle) below `keep`. The caller closes what it gets, off-lock.
    pub(crate) fn evict(&self, keep: usize, mut expired: impl FnMut(&Idle<T>) -> bool) -> Vec<T> {
        let mut st = lock(&self.state);
        let mut total = st.in_use + st.idle.len();
        let mut out = Vec::new();
        let mut i = 0;
        // The stack's bottom holds the connections idle longest.
        while i < st.idle.len() && total > keep {
            if expired(&st.idle[i]) {
                out.push(st.idle.remove(i).item);
                total -= 1;
            } else {
                i += 1;
            }
        }
        out
    }

    /// Borrows idle connections for which `pick` holds (health pings, draining), each with a
    /// maintenance permit so capacity stays exact; give each back with
    /// [`Slots::restore_tended`] (or [`Slots::release_tended`] with `None` once closed).
    /// Borrows only while nobody waits.
    pub(crate) fn borrow_idle(&self, mut pick: impl FnMut(&Idle<T>) -> bool) -> Vec<Idle<T>> {
        let mut st = lock(&self.state);
        if st.closed || !st.queue.is_empty() {
            return Vec::new();
        }
        let room = self.max.saturating_sub(st.in_use);
        let mut out = Vec::new();
        let mut i = 0;
        while i < st.idle.len() && out.len() < room {
            if pick(&st.idle[i]) {
                out.push(st.idle.remove(i));
            } else {
                i += 1;
            }
        }
        st.in_use += out.len();
        st.tending += out.len();
        out
    }

    /// Closes the pool: waiters and later callers get `Closed`; returns the idle connections
    /// for the caller to close. Idempotent.
    pub(crate) fn close(&self) -> Vec<T> {
        let mut st = lock(&self.state);
        st.closed = true;
        self.closed.store(true, Ordering::Release);
        for waiter in st.queue.drain(..) {
            waiter.cond.notify_one();
        }
        st.idle.drain(..).map(|i| i.item).collect()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn occupancy(&self) -> Occupancy {
        Self::occupancy_of(&lock(&self.state))
    }

    /// The state machine's invariants; `Err` names the first one broken.
    #[cfg(any(test, backend_pool_loom))]
    pub(crate) fn check(&self) -> Result<(), String> {
        let st = lock(&self.state);
        if st.in_use + st.idle.len() > self.max {
            return Err(format!(
                "{} in use + {} idle exceed max {}",
                st.in_use,
                st.idle.len(),
                self.max
            ));
        }
        if !st.queue.is_empty() && st.in_use < self.max {
            return Err(format!(
                "{} waiting while only {} of {} permits are out (lost wake-up)",
                st.queue.len(),
                st.in_use,
                self.max
            ));
        }
        if st.closed && !(st.queue.is_empty() && st.idle.is_empty()) {
            return Err("closed with waiters or idle connections left".into());
        }
        if st.tending > st.in_use {
            return Err(format!(
                "{} maintenance permits but only {} permits out",
                st.tending, st.in_use
            ));
        }
        if st.idle.windows(2).any(|w| w[0].since > w[1].since) {
            return Err("idle stack out of age order".into());
        }
        Ok(())
    }

    fn occupancy_of(st: &State<T>) -> Occupancy {
        Occupancy {
            in_use: st.in_use - st.tending,
            idle: st.idle.len(),
            waiting: st.queue.len(),
            tending: st.tending,
        }
    }
}

/// A permit taken from [`Slots`] by a checkout: given back when dropped (an error, or a panic
/// while the connection is being opened or taken), kept when a guard takes it over.
pub(crate) struct Permit<'a, T>(&'a Slots<T>);

impl<'a, T> Permit<'a, T> {
    /// Holds a permit `slots` just handed out.
    pub(crate) fn new(slots: &'a Slots<T>) -> Self {
        Permit(slots)
    }

    /// The permit passes to the connection's guard, which releases it.
    pub(crate) fn keep(self) {
        std::mem::forget(self);
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        self.0.release(None);
    }
}

#[cfg(all(test, not(backend_pool_loom)))]
mod tests;

#[cfg(all(test, not(backend_pool_loom)))]
mod fuzz;

/// Model checking with loom: `RUSTFLAGS="--cfg backend_pool_loom" cargo test --lib slots::loom_tests`.
#[cfg(all(test, backend_pool_loom))]
mod loom_tests;
