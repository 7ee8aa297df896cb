//! Unit tests of the slots state machine.

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
            tending: 0,
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
    assert_eq!(slots.try_tend(), Some(None));
    assert_eq!(slots.try_tend(), None);
}

#[test]
fn maintenance_permits_are_reported_apart_from_callers() {
    let slots = Slots::new(3);
    slots.acquire(soon(10)).unwrap();
    slots.acquire(soon(10)).unwrap();
    slots.release(Some(1));
    // One caller holds a permit; maintenance borrows the idle connection and reserves one.
    let borrowed = slots.borrow_idle(|_| true);
    assert_eq!(borrowed.len(), 1);
    assert!(slots.reserve_below(3));
    let occ = slots.occupancy();
    assert_eq!((occ.in_use, occ.tending, occ.idle), (1, 2, 0), "{occ:?}");
    // Capacity is exact all the same: every permit is out.
    assert_eq!(slots.try_tend(), None);
    slots.release_tended(None);
    for idle in borrowed {
        assert_eq!(slots.restore_tended(idle.item, idle.since), None);
    }
    let occ = slots.occupancy();
    assert_eq!((occ.in_use, occ.tending, occ.idle), (1, 0, 1), "{occ:?}");
    slots.check().unwrap();
}

#[test]
fn a_maintenance_permit_handed_to_a_waiter_becomes_the_callers() {
    let slots = std::sync::Arc::new(Slots::new(1));
    assert_eq!(slots.try_tend(), Some(None));
    let waiter = {
        let slots = std::sync::Arc::clone(&slots);
        std::thread::spawn(move || slots.acquire(soon(5_000)))
    };
    while slots.occupancy().waiting == 0 {
        std::thread::yield_now();
    }
    slots.release_tended(Some(9));
    assert_eq!(waiter.join().unwrap(), Ok(Some(9)));
    let occ = slots.occupancy();
    assert_eq!((occ.in_use, occ.tending), (1, 0), "{occ:?}");
    slots.check().unwrap();
}

#[test]
fn a_cancelled_waiter_leaves_the_queue_and_the_next_one_is_served() {
    use crate::cancel::CancelToken;
    let slots = std::sync::Arc::new(Slots::<u32>::new(1));
    slots.acquire(Instant::now()).unwrap();
    let token = CancelToken::new();
    let far = Instant::now() + Duration::from_secs(10);
    std::thread::scope(|s| {
        let cancelled = s.spawn(|| slots.acquire_cancellable(far, Some(&token)));
        while slots.occupancy().waiting < 1 {
            std::thread::yield_now();
        }
        let next = s.spawn(|| slots.acquire(far));
        while slots.occupancy().waiting < 2 {
            std::thread::yield_now();
        }
        token.cancel();
        assert_eq!(cancelled.join().unwrap(), Err(AcquireError::Cancelled));
        assert_eq!(slots.occupancy().waiting, 1);
        slots.release(Some(3));
        assert_eq!(next.join().unwrap(), Ok(Some(3)));
    });
    slots.check().unwrap();
    assert_eq!(
        slots.acquire_cancellable(far, Some(&token)),
        Err(AcquireError::Cancelled),
        "a cancelled token fails at once"
    );
    assert_eq!(slots.occupancy().in_use, 1);
}
