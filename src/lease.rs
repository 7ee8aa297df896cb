//! Leak detection: every connection carries a [`Lease`] that records who holds it and since
//! when; the maintenance thread scans a service's leases and reports the ones held past the
//! threshold (once per checkout).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Who holds a connection and since when, and how to interrupt a call blocked on it.
#[derive(Default)]
pub(crate) struct Lease {
    holder: Mutex<Option<(Instant, Thread)>>,
    reported: AtomicBool,
    /// Set when the connection is made (never on checkout); fired by a shutdown whose
    /// deadline passed while the connection was still held.
    interrupt: Mutex<Option<Interrupt>>,
}

/// A way to cut a held connection's blocked I/O short.
pub(crate) enum Interrupt {
    /// The item's ureq agent (`Agent::shutdown` interrupts its request in flight).
    Agent(ureq::Agent),
    /// The WebSocket's TCP stream (shared with the socket: no second descriptor).
    Tcp(Arc<crate::net::SharedTcp>),
}

impl Lease {
    /// How to interrupt this connection (replacing what was set: an HTTP item's agent is
    /// replaced when its keep-alive socket is refreshed).
    pub(crate) fn set_interrupt(&self, interrupt: Interrupt) {
        *self.interrupt.lock() = Some(interrupt);
    }

    pub(crate) fn begin(&self, now: Instant) {
        *self.holder.lock() = Some((now, std::thread::current()));
        self.reported.store(false, Relaxed);
    }

    pub(crate) fn end(&self) {
        *self.holder.lock() = None;
    }
}

/// A held-too-long connection found by a scan.
#[derive(Debug)]
pub(crate) struct Leak {
    pub thread: String,
    pub held: Duration,
}

/// The leases of one pool. Registration happens when a connection is created (rare), never
/// on checkout. Clones share one registry (the pool core's, and the HTTP item factory's).
#[derive(Clone, Default)]
pub(crate) struct LeaseRegistry {
    leases: Arc<Mutex<Vec<Weak<Lease>>>>,
}

impl LeaseRegistry {
    pub(crate) fn register(&self) -> Arc<Lease> {
        let lease = Arc::new(Lease::default());
        let mut leases = self.leases.lock();
        if leases.len() >= 64 && leases.len().is_power_of_two() {
            leases.retain(|w| w.strong_count() > 0);
        }
        leases.push(Arc::downgrade(&lease));
        lease
    }

    /// Shutdown, past its deadline: interrupts every connection still held (its blocked
    /// read or write returns at once). Returns how many were.
    pub(crate) fn interrupt_held(&self) -> usize {
        let leases: Vec<Arc<Lease>> = {
            let mut all = self.leases.lock();
            all.retain(|w| w.strong_count() > 0);
            all.iter().filter_map(Weak::upgrade).collect()
        };
        let mut fired = 0;
        for lease in leases {
            if lease.holder.lock().is_none() {
                continue;
            }
            match lease.interrupt.lock().as_ref() {
                Some(Interrupt::Agent(agent)) => agent.clone().shutdown(),
                Some(Interrupt::Tcp(tcp)) => tcp.shut_down(),
                None => continue,
            }
            fired += 1;
        }
        fired
    }

    /// Leases held longer than `threshold` and not yet reported.
    pub(crate) fn scan(&self, threshold: Duration, now: Instant) -> Vec<Leak> {
        let leases: Vec<Arc<Lease>> = {
            let mut all = self.leases.lock();
            all.retain(|w| w.strong_count() > 0);
            all.iter().filter_map(Weak::upgrade).collect()
        };
        let mut found = Vec::new();
        for lease in leases {
            let holder = lease.holder.lock();
            if let Some((since, thread)) = holder.as_ref() {
                let held = now.saturating_duration_since(*since);
                if held >= threshold && !lease.reported.swap(true, Relaxed) {
                    found.push(Leak {
                        thread: thread
                            .name()
                            .map_or_else(|| format!("{:?}", thread.id()), str::to_string),
                        held,
                    });
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_long_lease_once_with_the_thread_name() {
        let registry = LeaseRegistry::default();
        let lease = registry.register();
        let start = Instant::now();
        std::thread::Builder::new()
            .name("holder".into())
            .spawn({
                let lease = Arc::clone(&lease);
                move || lease.begin(start)
            })
            .unwrap()
            .join()
            .unwrap();
        let later = start + Duration::from_secs(10);
        let leaks = registry.scan(Duration::from_secs(5), later);
        assert_eq!(leaks.len(), 1);
        assert_eq!(leaks[0].thread, "holder");
        assert!(registry.scan(Duration::from_secs(5), later).is_empty());
        lease.end();
        drop(lease);
        assert!(registry.scan(Duration::ZERO, later).is_empty());
    }
}
