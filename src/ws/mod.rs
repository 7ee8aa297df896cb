//! WebSocket pools: tungstenite sockets in the pool core's [`Slots`](crate::slots::Slots)
//! (parking_lot Mutex + Condvar, LIFO idle stack, FIFO waiters; see `crate::pool`), checked
//! out as a [`WsGuard`].
//!
//! Connect, send, read, ping, drain and close all run with no lock held, each within one
//! deadline: [`WsStream`] bounds a whole operation (not each system call), and a signal that
//! lands in a blocked call (`EINTR`) resumes it within the same deadline.
//!
//! # Leases
//!
//! A checkout is a lease on one socket, and **a new lease never sees traffic caused by an
//! earlier one**. Servers keep sending a job's events to the socket that started it for the
//! whole job (ComfyUI sends every event for a `clientId` to that socket, whoever holds it, and
//! has no unsubscribe; its binary previews carry no prompt id, so nothing could filter them).
//! So a socket goes back to the pool only when its lease ended at a quiet point:
//!
//! * the holder called [`WsGuard::finish`]: nothing the lease started is still running
//!   (ComfyUI: each prompt it queued has ended with `executing`, `node: null` and its prompt
//!   id), or the lease never exposed its client id ([`WsGuard::client_id`]) nor sent anything;
//! * and the stream stopped between two messages, not inside one (a read that timed out in
//!   the middle of a frame; part of a frame that came in behind a whole message).
//!
//! Any other socket is closed when its lease ends: a TCP shutdown, no close handshake waited
//! for on the caller's thread (`closed.abandoned`); the maintenance refill opens a replacement
//! off the caller's thread. A socket that saw an error or a close frame, or whose guard
//! dropped during a panic, is closed too (`closed.broken`).
//!
//! # Idle sockets
//!
//! The maintenance thread pings idle sockets (the wait for the pong is bounded, so a dead
//! peer cannot stall it) and drains what servers push at them: ComfyUI broadcasts `status` to
//! every socket, idle ones included. Draining runs on the maintenance tick while no caller is
//! waiting for a socket, not at checkout (checkout makes no system call), so a new lease may
//! first read the broadcasts pushed since the last drain (ComfyUI: up to a tick's worth of
//! `status` messages, dozens under load), never an earlier lease's events: filter events by
//! type and prompt id.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::config::WsPoolConfig;
use crate::error::{Error, ErrorClass, PoolKind, PoolState};
use crate::lease::Lease;
use crate::pool::{Leased, PoolCore};
use crate::service::ServiceContext;
use crate::stats::{CloseCause, PoolCounters, PoolStats};

mod connect;
mod frames;
mod guard;
mod handshake;
pub(crate) mod message;
mod stream;
#[cfg(test)]
mod tests;
pub use guard::{WsAbort, WsGuard};
pub use stream::WsStream;

/// The socket type the pool holds.
pub type Socket = WebSocket<WsStream>;

/// One pooled item: a socket with its client id, lease and lifetime. Callers hold it inside a
/// [`WsGuard`].
pub(crate) struct PooledSocket {
    socket: Socket,
    client_id: Option<String>,
    lease: Arc<Lease>,
    expires: Instant,
    last_ping: Instant,
}

impl Leased for PooledSocket {
    fn lease(&self) -> &Lease {
        &self.lease
    }
}

/// How a lease ended, which decides whether its socket may serve another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaseEnd {
    /// Nothing the lease started can still be running: it never exposed its client id nor
    /// sent, or it said so with [`WsGuard::finish`].
    Quiet,
    /// It started something (exposed its client id or sent) and ended without `finish`:
    /// the server may still be sending that job's events.
    Abandoned,
    /// An error, a close frame, a panic, or [`WsGuard::discard`].
    Broken,
}

/// A service's WebSocket pool: the pool core, whose gate holds the idle sockets too.
pub(crate) struct WsPool {
    pub(crate) core: PoolCore<PooledSocket>,
    pub(crate) config: WsPoolConfig,
    ws_config: WebSocketConfig,
    refill_backoff: parking_lot::Mutex<RefillBackoff>,
}

impl WsPool {
    pub(crate) fn new(service: Arc<ServiceContext>, config: WsPoolConfig) -> WsPool {
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(config.read_buffer_bytes)
            .write_buffer_size(config.write_buffer_bytes)
            .max_message_size(Some(config.max_message_bytes))
            .max_frame_size(Some(config.max_frame_bytes));
        WsPool {
            core: PoolCore::new(
                service,
                PoolKind::WebSocket,
                config.max_connections as usize,
            ),
            ws_config,
            config,
            refill_backoff: parking_lot::Mutex::default(),
        }
    }

    /// Occupancy in sockets: `idle` counts open sockets no caller holds (those maintenance
    /// is pinging included).
    pub(crate) fn state(&self) -> PoolState {
        self.core.state()
    }

    pub(crate) fn stats(&self) -> PoolStats {
        self.core.stats(self.state())
    }

    pub(crate) fn counters(&self) -> &PoolCounters {
        &self.core.counters
    }

    /// Checks out a socket through the pool core (health gate, a permit in arrival order):
    /// the newest idle socket, or a new connection (opened off-lock).
    pub(crate) fn checkout(
        self: &Arc<Self>,
        wait: Duration,
        cancel: Option<&crate::cancel::CancelToken>,
    ) -> Result<WsGuard, Error> {
        let conn = self
            .core
            .checkout(wait, true, cancel, |admitted| match admitted.idle {
                Some(conn) => Ok(conn),
                None => self.connect(cancel),
            })?;
        Ok(WsGuard::new(conn, Arc::clone(self), cancel))
    }

    /// Closes a socket off-lock: a close frame (bounded by 100 ms) for a healthy one; a
    /// broken or abandoned one is only shut down (its peer may not be reading, and an
    /// abandoned lease is closed on its caller's thread).
    fn close_conn(&self, mut conn: PooledSocket, cause: CloseCause) {
        self.core.counters.closed(cause, 1);
        self.core.counters.closed_total.fetch_add(1, Relaxed);
        if !matches!(cause, CloseCause::Broken | CloseCause::Abandoned) {
            conn.socket
                .get_mut()
                .set_deadline(Instant::now() + Duration::from_millis(100));
            let _ = conn.socket.close(None);
            let _ = conn.socket.flush();
        }
        let _ = tcp_of(&conn.socket).shutdown(std::net::Shutdown::Both);
        log::debug!(target: "backend_pool", "service '{}': WebSocket closed ({cause:?})", self.core.name);
    }

    /// Returns a guard's socket: idle again only when its lease ended at a quiet point and
    /// the stream stopped between two messages; otherwise closed (broken, abandoned, expired,
    /// or the pool is shut down). The maintenance refill replaces what is closed.
    fn give_back(&self, mut conn: PooledSocket, end: LeaseEnd) {
        conn.lease.end();
        let cause = if end == LeaseEnd::Broken || !conn.socket.can_write() {
            Some(CloseCause::Broken)
        } else if end == LeaseEnd::Abandoned {
            Some(CloseCause::Abandoned)
        } else if conn.expires <= Instant::now() {
            Some(CloseCause::Lifetime)
        } else {
            None
        };
        match cause {
            Some(cause) => {
                self.core.release(None);
                self.close_conn(conn, cause);
            }
            None => {
                conn.socket.get_mut().clear_deadline();
                if let Some(conn) = self.core.release(Some(conn)) {
                    self.close_conn(conn, CloseCause::Shutdown);
                }
            }
        }
    }

    /// Maintenance: evict idle and expired sockets, drain pushed messages from idle ones,
    /// ping those due and wait for all their pongs under one deadline (a missing pong closes
    /// the socket and counts against health), refill the minimum, report leaks. Every wait
    /// is bounded, and shutdown cuts the waits short (see `crate::abort`).
    pub(crate) fn maintain(self: &Arc<Self>, now: Instant, probe_due: bool) {
        let t = self.core.timeouts;
        let min = self.config.min_connections as usize;
        for conn in self
            .core
            .slots
            .evict(min, |i| now.saturating_duration_since(i.since) >= t.idle)
        {
            self.close_conn(conn, CloseCause::Idle);
        }
        for conn in self.core.slots.evict(0, |i| i.item.expires <= now) {
            self.close_conn(conn, CloseCause::Lifetime);
        }
        let mut batch: Vec<Tended> = self
            .core
            .slots
            .borrow_idle(|_| true)
            .into_iter()
            .map(|idle| Tended {
                ping: probe_due
                    || now.saturating_duration_since(idle.item.last_ping) >= t.health_interval,
                conn: idle.item,
                since: idle.since,
                outcome: Ok(()),
            })
            .collect();
        self.tend(&mut batch);
        let mut failure = None;
        let mut pinged = false;
        // Sockets that failed their check: closed once the failure is recorded, so whoever
        // reads `closed.health` going up finds the health state (`last_error`) that says why.
        let mut failed = Vec::new();
        for Tended {
            conn,
            since,
            ping,
            outcome,
        } in batch
        {
            match outcome {
                Ok(()) => {
                    pinged |= ping;
                    if let Some(conn) = self.core.slots.restore_tended(conn, since) {
                        self.close_conn(conn, CloseCause::Shutdown);
                    }
                }
                // Cut short by shutdown: not the server's fault.
                Err(_) if self.core.is_closed() => {
                    self.core.slots.release_tended(None);
                    self.close_conn(conn, CloseCause::Shutdown);
                }
                Err(why) => {
                    self.core.slots.release_tended(None);
                    failure = Some(why);
                    failed.push(conn);
                }
            }
        }
        if let Some(why) = failure {
            log::warn!(target: "backend_pool", "service '{}': WebSocket health check failed: {why}", self.core.name);
            self.core.health.probed(Err(why));
        } else if pinged {
            self.core.health.probed(Ok(()));
        }
        for conn in failed {
            self.close_conn(conn, CloseCause::Health);
        }
        self.refill(min, now);
        self.core.report_leaks(now);
    }

    /// Drains what the server pushed at each borrowed socket and pings those due, then waits
    /// for all their pongs under ONE deadline (`pong_timeout_ms` from the first ping): N dead
    /// peers cost one pong timeout, not N. Sets each socket's `outcome`; leaves every socket
    /// blocking, with its usual read and write timeouts.
    fn tend(&self, batch: &mut [Tended]) {
        let t = self.core.timeouts;
        let pong_timeout = Duration::from_millis(self.config.pong_timeout_ms);
        let deadline = Instant::now() + pong_timeout;
        let no_pong = || format!("no pong within {} ms", self.config.pong_timeout_ms);
        // Only pinged sockets block (a write, then the wait for the pong): shutdown may have
        // to cut those short.
        let _abort: Vec<_> = batch
            .iter()
            .filter(|s| s.ping)
            .map(|s| self.core.aborts.watch_tcp(tcp_of(&s.conn.socket)))
            .collect();
        for s in batch.iter_mut() {
            s.outcome = drain(&mut s.conn.socket, deadline).and_then(|()| {
                if !s.ping {
                    return Ok(());
                }
                let tcp = tcp_of(&s.conn.socket);
                let left = deadline.saturating_duration_since(Instant::now());
                tcp.set_nonblocking(false)
                    .and_then(|()| tcp.set_write_timeout(Some(left.max(Duration::from_millis(1)))))
                    .map_err(|e| e.to_string())?;
                s.conn.last_ping = Instant::now();
                s.conn
                    .socket
                    .send(Message::Ping(Default::default()))
                    .map_err(|e| format!("ping failed: {e}"))
            });
        }
        for s in batch.iter_mut().filter(|s| s.ping && s.outcome.is_ok()) {
            // Past the deadline, messages already buffered are still read (a pong may sit
            // behind them), but no more than this many: a flooding server cannot hold us.
            let mut late = LATE_MESSAGES;
            s.outcome = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                // Past the deadline, a pong already received still counts: read what is there.
                let tcp = tcp_of(&s.conn.socket);
                let set = if left.is_zero() {
                    tcp.set_nonblocking(true)
                } else {
                    tcp.set_read_timeout(Some(left))
                };
                if let Err(e) = set {
                    break Err(e.to_string());
                }
                match s.conn.socket.read() {
                    Ok(Message::Pong(_)) => break Ok(()),
                    Ok(Message::Close(_)) => break Err("the server closed the socket".into()),
                    // A pushed message: dropped to keep the buffer empty.
                    Ok(_) if left.is_zero() && late == 0 => break Err(no_pong()),
                    Ok(_) => late -= usize::from(left.is_zero()),
                    Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                        if left.is_zero() {
                            break Err(no_pong());
                        }
                    }
                    Err(e) => break Err(e.to_string()),
                }
            };
        }
        for s in batch.iter_mut() {
            let _ = tcp_of(&s.conn.socket).set_nonblocking(false);
            if s.ping {
                let _ = s.conn.socket.get_mut().set_timeouts(t.read_idle, t.request);
            }
        }
    }

    /// Opens sockets up to the minimum, one permit at a time, never ahead of waiting callers.
    /// Each connect is bounded by its own deadline and cut short by shutdown. Failed connects
    /// are paused by the health gate; a handshake answered with a status, which health does
    /// not count, pauses the refill itself ([`RefillBackoff`]), with one warning a streak.
    fn refill(&self, min: usize, now: Instant) {
        if self
            .refill_backoff
            .lock()
            .until
            .is_some_and(|until| now < until)
        {
            return;
        }
        while self.core.health.gate().is_ok() && self.core.slots.reserve_below(min) {
            match self.connect(None) {
                Ok(conn) => {
                    self.refill_backoff.lock().until = None;
                    if let Some(conn) = self.core.slots.release_tended(Some(conn)) {
                        self.close_conn(conn, CloseCause::Shutdown);
                    }
                }
                Err(e) => {
                    self.core.slots.release_tended(None);
                    if self.core.is_closed() {
                        return;
                    }
                    if e.class() != ErrorClass::Status {
                        log::debug!(target: "backend_pool", "service '{}': refill failed: {e}", self.core.name);
                        return;
                    }
                    let (pause, first) = self.refill_backoff.lock().pause(Instant::now());
                    if first {
                        log::warn!(target: "backend_pool", "{e}; the WebSocket refill pauses {pause:?}, then twice as long after each refusal (at most {REFILL_PAUSE_MAX:?})");
                    } else {
                        log::debug!(target: "backend_pool", "{e}; the WebSocket refill pauses {pause:?}");
                    }
                    return;
                }
            }
        }
    }

    pub(crate) fn close(&self) {
        for conn in self.core.close() {
            self.close_conn(conn, CloseCause::Shutdown);
        }
    }

    pub(crate) fn in_use(&self) -> usize {
        self.core.in_use()
    }
}

/// An idle socket borrowed by maintenance, and what tending it found.
struct Tended {
    conn: PooledSocket,
    since: Instant,
    ping: bool,
    outcome: Result<(), String>,
}

/// The maintenance refill's pause after a handshake answered with a status (ComfyUI's 403
/// for a refused `Origin`): such an answer is not counted against health, so the health gate
/// would let the refill retry at every tick. The pause starts at [`REFILL_PAUSE_FIRST`] and
/// doubles with each refusal up to [`REFILL_PAUSE_MAX`]; a refill that connects ends it.
/// Touched by maintenance only (whose steps of one service never overlap).
#[derive(Default)]
struct RefillBackoff {
    /// No refill before then; `None` outside a streak of refusals.
    until: Option<Instant>,
    /// The pause after the next refusal.
    next: Duration,
}

/// The first pause of the refill after a refusal.
const REFILL_PAUSE_FIRST: Duration = Duration::from_millis(500);
/// The longest pause of the refill after refusals.
const REFILL_PAUSE_MAX: Duration = Duration::from_secs(30);

impl RefillBackoff {
    /// A refusal at `now`: the pause it starts, and whether it began a streak.
    fn pause(&mut self, now: Instant) -> (Duration, bool) {
        let first = self.until.is_none();
        let pause = if first { REFILL_PAUSE_FIRST } else { self.next };
        self.next = (pause * 2).min(REFILL_PAUSE_MAX);
        self.until = Some(now + pause);
        (pause, first)
    }
}

/// Messages read from a pinged socket after the pong deadline, looking for its pong.
const LATE_MESSAGES: usize = 64;

/// Reads (and drops) what the server pushed at an idle socket, without waiting, until nothing
/// is left or `until` passes (a flood waits for the next pass); leaves the socket
/// non-blocking.
fn drain(socket: &mut Socket, until: Instant) -> Result<(), String> {
    tcp_of(socket)
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    loop {
        if Instant::now() >= until {
            return Ok(());
        }
        match socket.read() {
            Ok(Message::Close(_)) => return Err("the server closed the socket".into()),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A read that found nothing within its timeout (or nothing at all, non-blocking).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn tcp_of(socket: &Socket) -> &Arc<crate::net::SharedTcp> {
    socket.get_ref().tcp()
}
