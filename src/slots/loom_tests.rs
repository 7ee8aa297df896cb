//! Model checking with loom: `RUSTFLAGS="--cfg backend_pool_loom" cargo test --lib slots::loom_tests`.
//! Every interleaving of three threads over two slots, with acquire, release, discard,
//! timeout, cancellation and shutdown: no deadlock (loom reports one), no lost wake-up and no slot counted
//! twice (`Slots::check` after every run, and the permits all come back).

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
                Err(AcquireError::Cancelled) => panic!("no token"),
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

#[test]
fn a_cancel_racing_a_hand_over_never_loses_the_permit() {
    loom::model(|| {
        let slots = Arc::new(Slots::<usize>::new(1));
        slots.acquire(far()).unwrap();
        let token = crate::cancel::CancelToken::new();
        let waiter = {
            let (slots, token) = (Arc::clone(&slots), token.clone());
            thread::spawn(
                move || match slots.acquire_cancellable(far(), Some(&token)) {
                    Ok(item) => {
                        slots.release(item);
                    }
                    Err(e) => assert_eq!(e, AcquireError::Cancelled),
                },
            )
        };
        let holder = {
            let slots = Arc::clone(&slots);
            thread::spawn(move || {
                slots.release(Some(7));
            })
        };
        token.cancel();
        holder.join().unwrap();
        waiter.join().unwrap();
        slots.check().unwrap();
        assert_eq!(slots.occupancy().in_use, 0, "a permit was lost");
        assert_eq!(slots.occupancy().waiting, 0);
        assert_eq!(slots.occupancy().idle, 1);
    });
}
