//! The pool core ([`PoolCore`]): what the HTTP and the WebSocket pool do the same way, once.
//!
//! # Checkout, for both kinds
//!
//! [`PoolCore::checkout`]: the service's health gate (fail fast while it is unhealthy), then
//! a permit from [`Slots`] in arrival order by the caller's deadline (shutdown wakes every
//! waiter), then the pool kind's `open` (an idle item, or a new one), then the figures
//! (acquisitions, acquire time) and the item's lease begins (leak detection). Every failure
//! is counted by its class; a timeout carries the pool state as the waiter saw it and the
//! service's last connect error, so one line explains the incident. A permit whose `open`
//! fails or panics goes back ([`Permit`]). The path takes the `Slots` mutex once, allocates
//! only when it must wait, makes no system call but clock reads, and `open` is a generic
//! closure: nothing is boxed or dispatched at run time.
//!
//! Each pool kind says only what differs:
//!
//! | | HTTP (`http/mod.rs`) | WebSocket (`ws/mod.rs`) |
//! |---|---|---|
//! | item | `PooledAgent`: a ureq agent holding at most one keep-alive connection | `PooledSocket`: a tungstenite socket |
//! | idle items wait in | r2d2's stack | the `Slots` idle stack |
//! | opened by | r2d2, through `AgentFactory` (no I/O: the agent connects on its first request) | `WsPool::connect`: TCP (`crate::net`), TLS, handshake |
//! | closed by | r2d2, when an item marked `close` comes back (`has_broken` counts the cause) | `WsPool::close_conn`, off-lock |
//! | idle upkeep | `HttpPool::maintain`: lifetime, idle eviction, stale keep-alive sockets | `WsPool::maintain`: eviction, drain, pings, refill |
//!
//! The leak scan (`report_leaks`, one log line for both kinds), the pool state, the
//! timeout and shutdown errors and `close` are here.
//!
//! # HTTP: the gate in front of r2d2
//!
//! An HTTP pool is two pools in series: the `Slots` gate (permits only, `Slots<()>`), then
//! r2d2, which holds the items. r2d2 does what it does well:
//!
//! * it keeps idle items on a LIFO stack, so the item with the warmest socket is reused
//!   first and the cold ones sink to the bottom;
//! * it creates an item on its worker thread when none is idle (`get_timeout`);
//! * it drops an item marked to close when it comes back (`has_broken`).
//!
//! It is told not to do the rest, each for a reason:
//!
//! * `min_idle(Some(0))`: r2d2 pushes the items it creates for `min_idle` on top of its LIFO
//!   stack, above the warm ones, and an item holds no socket until its first request: the
//!   fresh items would be reused first and every socket opened anew.
//! * no `idle_timeout`, no `max_lifetime`: r2d2's reaper runs every 30 s (fixed in r2d2 0.8),
//!   ignores `min_connections` and cannot jitter lifetimes; nor can it see a keep-alive socket
//!   inside an item. Maintenance does all three at its own tick (`HttpPool::maintain`), and
//!   a returned item past its lifetime is closed at once.
//! * no `test_on_check_out`: ureq already checks a pooled socket before reusing it (a
//!   non-blocking read, no round trip); a test in r2d2 would cost every checkout.
//!
//! The gate adds what r2d2 lacks:
//!
//! * **FIFO hand-off.** r2d2's waiters share one condvar and a newcomer may take the item a
//!   waiter was woken for; `Slots` hands a returned permit to the oldest waiter.
//! * **Fail fast and say why.** The health gate, and a timeout that carries the pool state
//!   and the last connect error (r2d2's says "timed out").
//! * **Wake-ups on shutdown.** r2d2 has no close; waiters at the gate wake with
//!   [`Error::ShuttingDown`].
//! * **Exact caller counts.** In use, waiting, and maintenance's `tending` apart (r2d2 knows
//!   only connections and idle items).
//! * **Idle eviction at the maintenance tick**, above.
//! * **No caller ever waits inside r2d2.** A caller enters r2d2 only holding a permit, and
//!   every item out of r2d2 holds one too (a caller's, or a `tending` permit while
//!   maintenance borrows it: `Slots::try_tend`). So a permit holder always finds an idle item
//!   or room to create one, and never waits for another's item. This matters: r2d2 does not
//!   wake its waiters when it drops an item returned broken, so a caller waiting in
//!   `get_timeout` for a returned item could sleep until its timeout.
//! * **Reaching idle items.** r2d2 can neither list nor drain its idle items: maintenance
//!   borrows each with `try_get` under a tending permit, shutdown takes each with `try_get`
//!   and marks it to close (`HttpPool::close_idle`).
//!
//! A WebSocket pool has no second pool: its idle sockets wait in the `Slots` stack itself.

use std::ops::Deref;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::error::{Error, Phase, PoolKind, PoolState};
use crate::lease::{Lease, LeaseRegistry};
use crate::service::ServiceContext;
use crate::slots::{AcquireError, Occupancy, Permit, Slots};
use crate::stats::{PoolCounters, PoolStats};

/// An item a checkout hands out: it carries the lease leak detection watches.
pub(crate) trait Leased {
    fn lease(&self) -> &Lease;
}

/// What a checkout's permit came with, for the pool kind's `open`.
pub(crate) struct Admitted<T> {
    /// The newest idle item the gate holds (always `None` for HTTP: its items wait in r2d2).
    pub idle: Option<T>,
    /// When the checkout began.
    pub start: Instant,
    /// When the caller's wait ends.
    pub deadline: Instant,
}

/// The core of one pool: its gate ([`Slots`]), figures, leases, and the service it serves.
/// Dereferences to the service's context (name, timeouts, health, aborts), which it shares
/// with the service's other pool.
pub(crate) struct PoolCore<T> {
    service: Arc<ServiceContext>,
    kind: PoolKind,
    pub(crate) slots: Slots<T>,
    /// Shared with what counts connections below the pool (the HTTP transport).
    pub(crate) counters: Arc<PoolCounters>,
    pub(crate) leases: LeaseRegistry,
}

impl<T> PoolCore<T> {
    pub(crate) fn new(service: Arc<ServiceContext>, kind: PoolKind, max: usize) -> Self {
        PoolCore {
            service,
            kind,
            slots: Slots::new(max),
            counters: Arc::new(PoolCounters::default()),
            leases: LeaseRegistry::default(),
        }
    }

    /// Checks out an item: health gate (skipped with `gate: false`, for health probes that
    /// must reach an unhealthy service), a permit in arrival order by `start + wait`, then
    /// `open` (an idle item, or a new one). See the module docs.
    ///
    /// The item returned holds a permit: wrap it in the pool kind's guard at once, whose
    /// drop gives the permit back ([`PoolCore::release`]).
    ///
    /// With a `cancel` token, the wait for a permit ends with [`Error::Cancelled`] when it
    /// is cancelled (`Slots::acquire_cancellable`).
    #[inline]
    pub(crate) fn checkout<I: Leased>(
        &self,
        wait: Duration,
        gate: bool,
        cancel: Option<&CancelToken>,
        open: impl FnOnce(Admitted<T>) -> Result<I, Error>,
    ) -> Result<I, Error>
    where
        T: Send + 'static,
    {
        let start = Instant::now();
        let result = self
            .wait_turn(&self.slots, start, wait, gate, cancel, |seen| PoolState {
                waiting: seen.waiting,
                ..self.state()
            })
            .and_then(|(idle, deadline)| {
                let permit = Permit::new(&self.slots);
                let item = open(Admitted {
                    idle,
                    start,
                    deadline,
                })
                .map_err(|e| match cancel {
                    // The cancel, or the shutdown, shut the connect's socket down.
                    Some(token) if token.is_cancelled() => self.cancelled(Phase::Connect),
                    _ if self.is_closed() => self.shutting_down(),
                    _ => e,
                })?;
                permit.keep();
                Ok(item)
            });
        match &result {
            Ok(item) => {
                // A health probe's checkout (`gate: false`) is not a caller's.
                if gate {
                    self.counters.acquisitions.fetch_add(1, Relaxed);
                    self.counters.acquire_time.record(start.elapsed());
                }
                item.lease().begin(start);
            }
            Err(e) => self.counters.error(e.class()),
        }
        result
    }

    /// A turn at a second gate that holds no items (an HTTP pool's stream turns): the same
    /// health gate, order, errors and counting as a checkout. A timeout's state counts
    /// turns: taken (`in_use`), waiting, and the gate's size as `max`. Give the turn back
    /// with `turns.release(None)`.
    pub(crate) fn take_turn(
        &self,
        turns: &Slots<()>,
        start: Instant,
        wait: Duration,
        gate: bool,
        cancel: Option<&CancelToken>,
    ) -> Result<(), Error> {
        let result = self
            .wait_turn(turns, start, wait, gate, cancel, |seen| PoolState {
                in_use: seen.in_use,
                idle: 0,
                waiting: seen.waiting,
                max: turns.max(),
            })
            .map(|_| ());
        if let Err(e) = &result {
            self.counters.error(e.class());
        }
        result
    }

    /// The health gate, then a permit of `slots` by `start + wait`; on a timeout, `state`
    /// turns the occupancy the waiter saw into the error's pool state.
    #[inline]
    fn wait_turn<U: Send + 'static>(
        &self,
        slots: &Slots<U>,
        start: Instant,
        wait: Duration,
        gate: bool,
        cancel: Option<&CancelToken>,
        state: impl FnOnce(Occupancy) -> PoolState,
    ) -> Result<(Option<U>, Instant), Error> {
        if gate {
            self.service.health.gate()?;
        }
        let deadline = crate::clock::deadline(start, wait);
        match slots.acquire_cancellable(deadline, cancel) {
            Ok(idle) => Ok((idle, deadline)),
            Err(AcquireError::Cancelled) => Err(self.cancelled(Phase::Wait)),
            Err(AcquireError::Closed) => Err(self.shutting_down()),
            Err(AcquireError::Timeout(seen)) => Err(self.pool_timeout(start, state(seen))),
        }
    }

    /// Gives a checkout's permit back, with the item to keep idle (`None`: it was closed or
    /// waits elsewhere). Returns the item when the pool is closed, for the caller to close.
    pub(crate) fn release(&self, item: Option<T>) -> Option<T> {
        self.slots.release(item)
    }

    /// Occupancy in connections: `idle` counts open connections no caller holds (those
    /// maintenance is tending included).
    pub(crate) fn state(&self) -> PoolState {
        let occ = self.slots.occupancy();
        PoolState {
            in_use: occ.in_use,
            idle: self.counters.open().saturating_sub(occ.in_use),
            waiting: occ.waiting,
            max: self.slots.max(),
        }
    }

    /// The figures, with the pool state the pool kind reports.
    pub(crate) fn stats(&self, state: PoolState) -> PoolStats {
        self.counters.snapshot(self.kind, state)
    }

    pub(crate) fn in_use(&self) -> usize {
        self.slots.occupancy().in_use
    }

    /// Closes the gate: waiters and later callers get [`Error::ShuttingDown`]. Returns the
    /// idle items it held, for the caller to close.
    pub(crate) fn close(&self) -> Vec<T> {
        self.slots.close()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.slots.is_closed()
    }

    /// The wait for a permit ended at `start + wait` with the pool in `state`.
    pub(crate) fn pool_timeout(&self, start: Instant, state: PoolState) -> Error {
        Error::PoolTimeout {
            service: self.service.name.clone(),
            kind: self.kind,
            waited: start.elapsed(),
            state,
            last_error: self.service.last_connect_error(),
        }
    }

    /// The caller's token was cancelled while the call was in `phase`.
    pub(crate) fn cancelled(&self, phase: Phase) -> Error {
        Error::Cancelled {
            service: self.service.name.clone(),
            phase,
        }
    }

    /// The pool is closed: the manager is shutting down, or a reconfiguration retired the
    /// service ([`Error::ServiceRetired`]).
    pub(crate) fn shutting_down(&self) -> Error {
        self.service.closed_error()
    }

    /// Maintenance: counts and logs (once each) the items held past the leak threshold, with
    /// the holder's thread.
    pub(crate) fn report_leaks(&self, now: Instant) {
        let threshold = self.service.timeouts.leak;
        for leak in self.leases.scan(threshold, now) {
            self.counters.leaks_detected.fetch_add(1, Relaxed);
            log::warn!(target: "backend_pool",
                "service '{}': {} connection held for {:?} by thread '{}' (leak threshold {threshold:?})",
                self.service.name, self.kind, leak.held, leak.thread);
        }
    }
}

impl<T> Deref for PoolCore<T> {
    type Target = ServiceContext;

    fn deref(&self) -> &ServiceContext {
        &self.service
    }
}
