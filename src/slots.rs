//! The capacity state machine both pool kinds share: permits, a LIFO idle stack and a FIFO
//! queue of waiters, all under one `parking_lot` mutex.
//!
//! A permit is the right to hold one connection. `acquire` hands out a permit and, when one is
//! idle, the newest idle connection (LIFO, so idle eviction can shrink the pool from the old
//! end); `Ok(None)` means "you hold a permit, open a connection". `release` puts a connection
//! back and hands the permit straight to the oldest waiter (first come, first served, one
//! targeted wake-up per release instead of a thundering herd). Nothing here does I/O: callers
//! connect and close after the guard is dropped.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

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
}

/// Permits held, idle connections and waiters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Occupancy {
    pub in_use: usize,
    pub idle: usize,
    pub waiting: usize,
}

struct Waiter {
    cond: Condvar,
    /// Set (under the slots lock) when a releaser hands this waiter its permit.
    granted: AtomicBool,
}

struct State<T> {
    idle: Vec<Idle<T>>,
    in_use: usize,
    queue: VecDeque<Arc<Waiter>>,
    closed: bool,
}

/// Permits + idle stack + FIFO waiters. See the module docs.
pub(crate) struct Slots<T> {
    max: usize,
    state: Mutex<State<T>>,
}

impl<T> Slots<T> {
    pub(crate) fn new(max: usize) -> Self {
        Slots {
            max,
            state: Mutex::new(State {
                idle: Vec::new(),
                in_use: 0,
                queue: VecDeque::new(),
                closed: false,
            }),
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Waits until a permit is free (or handed over) or `deadline` passes.
    ///
    /// Returns the newest idle connection with the permit, or `None` when the caller must open
    /// one. Callers are served in arrival order.
    pub(crate) fn acquire(&self, deadline: Instant) -> Result<Option<T>, AcquireError> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(AcquireError::Closed);
        }
        if st.queue.is_empty() && st.in_use < self.max {
            st.in_use += 1;
            return Ok(st.idle.pop().map(|i| i.item));
        }
        let me = Arc::new(Waiter {
            cond: Condvar::new(),
            granted: AtomicBool::new(false),
        });
        st.queue.push_back(Arc::clone(&me));
        loop {
            // `granted` is written under the lock by the releaser that hands over its permit.
            if me.granted.load(Ordering::Relaxed) {
                return Ok(st.idle.pop().map(|i| i.item));
            }
            if st.closed {
                return Err(AcquireError::Closed);
            }
            let (guard, timed_out) = wait_until(&me.cond, &self.state, st, deadline);
            st = guard;
            if timed_out && !me.granted.load(Ordering::Relaxed) && !st.closed {
                // Occupancy as this waiter saw it, itself included.
                let seen = Self::occupancy_of(&st);
                st.queue.retain(|w| !Arc::ptr_eq(w, &me));
                return Err(AcquireError::Timeout(seen));
            }
        }
    }

    /// Takes a permit without waiting and without jumping the queue (maintenance work:
    /// probing idle connections, refilling the minimum). Returns the newest idle connection,
    /// if any, with the permit.
    pub(crate) fn try_acquire(&self) -> Option<Option<T>> {
        let mut st = lock(&self.state);
        if st.closed || !st.queue.is_empty() || st.in_use >= self.max {
            return None;
        }
        st.in_use += 1;
        Some(st.idle.pop().map(|i| i.item))
    }

    /// Takes a permit to open one more connection while the total (in use + idle) is below
    /// `min`: the maintenance refill. Never ahead of waiting callers.
    pub(crate) fn reserve_below(&self, min: usize) -> bool {
        let mut st = lock(&self.state);
        let ok = !st.closed
            && st.queue.is_empty()
            && st.in_use < self.max
            && st.in_use + st.idle.len() < min;
        if ok {
            st.in_use += 1;
        }
        ok
    }

    /// Gives a permit back, with the connection to keep idle (`None`: it was closed).
    ///
    /// Returns the connection when the pool is closed, so the caller closes it (off-lock).
    pub(crate) fn release(&self, item: Option<T>) -> Option<T> {
        self.put_back(item, Instant::now())
    }

    /// Gives back a connection borrowed by [`Slots::borrow_idle`], keeping its idle age.
    pub(crate) fn restore(&self, item: T, since: Instant) -> Option<T> {
        self.put_back(Some(item), since)
    }

    fn put_back(&self, item: Option<T>, since: Instant) -> Option<T> {
        let mut st = lock(&self.state);
        let rejected = match item {
            Some(item) if !st.closed => {
                // Keep the stack ordered by idle age: newest on top.
                let at = st.idle.partition_point(|i| i.since <= since);
                st.idle.insert(at, Idle { item, since });
                None
            }
            other => other,
        };
        match st.queue.pop_front() {
            Some(waiter) => {
                waiter.granted.store(true, Ordering::Relaxed);
                waiter.cond.notify_one();
            }
            None => st.in_use -= 1,
        }
        rejected
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
    /// permit so capacity stays exact; give each back with [`Slots::restore`] (or
    /// [`Slots::release`] with `None` once closed). Borrows only while nobody waits.
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
        out
    }

    /// Closes the pool: waiters and later callers get `Closed`; returns the idle connections
    /// for the caller to close. Idempotent.
    pub(crate) fn close(&self) -> Vec<T> {
        let mut st = lock(&self.state);
        st.closed = true;
        for waiter in st.queue.drain(..) {
            waiter.cond.notify_one();
        }
        st.idle.drain(..).map(|i| i.item).collect()
    }

    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).closed
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
        if st.idle.windows(2).any(|w| w[0].since > w[1].since) {
            return Err("idle stack out of age order".into());
        }
        Ok(())
    }

    fn occupancy_of(st: &State<T>) -> Occupancy {
        Occupancy {
            in_use: st.in_use,
            idle: st.idle.len(),
            waiting: st.queue.len(),
        }
    }
}

#[cfg(all(test, not(backend_pool_loom)))]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn lifo_reuse_and_permits() {
        let slots = Slots::new(2);
        assert_eq!(slots.acquire(soon(10)), Ok(None));
        assert_eq!(slots.acquire(soon(10)), Ok(None));
        assert!(matches!(
            slots.acquire(soon(10)),
            Err(AcquireError::Timeout(Occupancy {
                in_use: 2,
                idle: 0,
                waiting: 1
            }))
        ));
        slots.release(Some("old"));
        slots.release(Some("new"));
        assert_eq!(slots.acquire(soon(10)), Ok(Some("new")));
        assert_eq!(slots.occupancy().in_use, 1);
    }

    #[test]
    fn waiters_are_served_in_arrival_order() {
        let slots = Arc::new(Slots::new(1));
        assert_eq!(slots.acquire(soon(10)), Ok(None));
        let (tx, rx) = mpsc::channel();
        let mut handles = Vec::new();
        for id in 0..5 {
            let shared = Arc::clone(&slots);
            let tx = tx.clone();
            handles.push(thread::spawn(move || {
                let got = shared.acquire(soon(5000)).unwrap();
                tx.send((id, got)).unwrap();
                shared.release(Some(id));
            }));
            // Let each thread enqueue before the next arrives.
            while slots.occupancy().waiting < id + 1 {
                thread::yield_now();
            }
        }
        slots.release(None);
        let order: Vec<_> = rx.iter().take(5).map(|(id, _)| id).collect();
        assert_eq!(order, [0, 1, 2, 3, 4]);
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn close_wakes_waiters_and_returns_idle() {
        let slots = Arc::new(Slots::new(1));
        slots.acquire(soon(10)).unwrap();
        let waiter = {
            let slots = Arc::clone(&slots);
            thread::spawn(move || slots.acquire(soon(10_000)))
        };
        while slots.occupancy().waiting == 0 {
            thread::yield_now();
        }
        assert!(slots.close().is_empty());
        assert_eq!(waiter.join().unwrap(), Err(AcquireError::Closed));
        // A connection returned after close comes back to be closed by the caller.
        assert_eq!(slots.release(Some(7)), Some(7));
        assert_eq!(slots.acquire(soon(10)), Err(AcquireError::Closed));
    }

    #[test]
    fn evict_keeps_the_minimum_and_takes_the_oldest() {
        let slots = Slots::new(4);
        for _ in 0..3 {
            slots.acquire(soon(10)).unwrap();
        }
        for i in 0..3 {
            slots.release(Some(i));
        }
        assert_eq!(slots.evict(1, |_| true), vec![0, 1]);
        assert_eq!(slots.occupancy().idle, 1);
    }

    #[test]
    fn borrow_counts_against_capacity() {
        let slots = Slots::new(2);
        slots.acquire(soon(10)).unwrap();
        slots.release(Some(1));
        let borrowed = slots.borrow_idle(|_| true);
        assert_eq!(borrowed.len(), 1);
        assert_eq!(slots.occupancy().in_use, 1);
        assert_eq!(slots.try_acquire(), Some(None));
        assert_eq!(slots.try_acquire(), None);
    }
}

/// Model checking with loom: `RUSTFLAGS="--cfg backend_pool_loom" cargo test --lib slots::loom_tests`.
/// Every interleaving of three threads over two slots, with acquire, release, discard,
/// timeout and shutdown: no deadlock (loom reports one), no lost wake-up and no slot counted
/// twice (`Slots::check` after every run, and the permits all come back).
#[cfg(all(test, backend_pool_loom))]
mod loom_tests {
    use super::*;
    use loom::thread;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    fn past() -> Instant {
        Instant::now() - Duration::from_millis(1)
    }

    #[test]
    fn acquire_release_and_discard() {
        loom::model(|| {
            let slots = Arc::new(Slots::new(2));
            let threads: Vec<_> = (0..3)
                .map(|i| {
                    let slots = Arc::clone(&slots);
                    thread::spawn(move || {
                        let got = slots.acquire(far()).expect("no timeout, no close");
                        // Thread 2 discards its connection; the others return one.
                        let back = if i == 2 { None } else { Some(got.unwrap_or(i)) };
                        assert!(slots.release(back).is_none());
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            slots.check().unwrap();
            assert_eq!(slots.occupancy().in_use, 0);
            assert!(slots.occupancy().idle <= 2);
        });
    }

    #[test]
    fn a_timeout_racing_a_release() {
        loom::model(|| {
            let slots = Arc::new(Slots::<usize>::new(2));
            // Two permits out, held by the holder threads.
            let holders: Vec<_> = (0..2)
                .map(|i| {
                    slots.acquire(far()).unwrap();
                    let slots = Arc::clone(&slots);
                    thread::spawn(move || {
                        slots.release(Some(i));
                    })
                })
                .collect();
            let waiter = {
                let slots = Arc::clone(&slots);
                thread::spawn(move || match slots.acquire(past()) {
                    Ok(item) => {
                        slots.release(item);
                        true
                    }
                    Err(AcquireError::Timeout(_)) => false,
                    Err(AcquireError::Closed) => panic!("never closed"),
                })
            };
            for h in holders {
                h.join().unwrap();
            }
            let _served = waiter.join().unwrap();
            slots.check().unwrap();
            assert_eq!(slots.occupancy().in_use, 0, "a permit was lost");
            assert_eq!(slots.occupancy().waiting, 0);
        });
    }

    #[test]
    fn shutdown_wakes_every_waiter() {
        loom::model(|| {
            let slots = Arc::new(Slots::<usize>::new(2));
            slots.acquire(far()).unwrap();
            slots.acquire(far()).unwrap();
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let slots = Arc::clone(&slots);
                    thread::spawn(move || slots.acquire(far()))
                })
                .collect();
            let closer = {
                let slots = Arc::clone(&slots);
                thread::spawn(move || {
                    slots.close();
                })
            };
            closer.join().unwrap();
            for w in waiters {
                assert_eq!(w.join().unwrap(), Err(AcquireError::Closed));
            }
            // Connections returned after close come back to be closed by their holder.
            assert_eq!(slots.release(Some(1)), Some(1));
            assert_eq!(slots.release(None), None);
            slots.check().unwrap();
            assert_eq!(slots.occupancy().in_use, 0);
        });
    }
}
