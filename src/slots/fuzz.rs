//! A seeded, deterministic fuzzer over the slots state machine with a simulated clock.
//!
//! Random steps — acquire, return, break, advance the clock, evict, borrow for a health
//! check, refill, shut down — against a shadow model of who holds what; the invariants are
//! checked after every step. A failure prints the seed and step so it can be replayed:
//! `BACKEND_POOL_FUZZ_SEED=<seed> cargo test --lib slots::fuzz`.
//! `BACKEND_POOL_FUZZ_STEPS` sets the length (default 100 000 per seed).

use super::*;
use std::collections::HashSet;
use std::time::Duration;

/// SplitMix64: small, seedable, good enough to pick steps.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The shadow model: what the test believes the pool holds.
struct Model {
    slots: Slots<u64>,
    max: usize,
    min: usize,
    /// Permits held, with the connection each holder has (ids are unique).
    held: Vec<u64>,
    /// Connections that exist: held or idle.
    live: HashSet<u64>,
    next_id: u64,
    base: Instant,
    now_ms: u64,
    closed: bool,
}

impl Model {
    fn new(rng: &mut Rng) -> Model {
        let max = 1 + rng.below(4) as usize;
        Model {
            slots: Slots::new(max),
            max,
            min: rng.below(max as u64 + 1) as usize,
            held: Vec::new(),
            live: HashSet::new(),
            next_id: 0,
            base: Instant::now(),
            now_ms: 0,
            closed: false,
        }
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    fn fresh(&mut self) -> u64 {
        self.next_id += 1;
        self.live.insert(self.next_id);
        self.next_id
    }

    fn destroy(&mut self, id: u64) -> Result<(), String> {
        if self.live.remove(&id) {
            Ok(())
        } else {
            Err(format!("connection {id} destroyed twice or never existed"))
        }
    }

    fn step(&mut self, rng: &mut Rng) -> Result<String, String> {
        let past = self.base; // an already-passed deadline: acquire never blocks
        match rng.below(9) {
            0 | 1 => match self.slots.acquire(past) {
                Ok(idle) => {
                    if self.closed {
                        return Err("acquired from a closed pool".into());
                    }
                    let id = match idle {
                        Some(id) if self.live.contains(&id) && !self.held.contains(&id) => id,
                        Some(id) => return Err(format!("idle connection {id} handed out twice")),
                        None => self.fresh(),
                    };
                    self.held.push(id);
                    Ok(format!("acquire -> {id}"))
                }
                Err(AcquireError::Timeout(occ)) => {
                    if !self.closed && occ.in_use + occ.tending < self.max {
                        return Err(format!("timed out with a permit free: {occ:?}"));
                    }
                    Ok("acquire -> timeout".into())
                }
                Err(AcquireError::Closed) if self.closed => Ok("acquire -> closed".into()),
                Err(AcquireError::Closed) => Err("closed error from an open pool".into()),
                Err(AcquireError::Cancelled) => Err("cancelled without a token".into()),
            },
            2 | 3 if !self.held.is_empty() => {
                let id = self
                    .held
                    .swap_remove(rng.below(self.held.len() as u64) as usize);
                if let Some(back) = self.slots.restore(id, self.now()) {
                    self.destroy(back)?;
                }
                Ok(format!("return {id}"))
            }
            4 if !self.held.is_empty() => {
                let id = self
                    .held
                    .swap_remove(rng.below(self.held.len() as u64) as usize);
                self.slots.release(None);
                self.destroy(id)?;
                Ok(format!("break {id}"))
            }
            5 => {
                self.now_ms += rng.below(5_000);
                let idle_limit = Duration::from_millis(3_000);
                let now = self.now();
                let evicted = self.slots.evict(self.min, |i| {
                    now.saturating_duration_since(i.since) >= idle_limit
                });
                for id in &evicted {
                    self.destroy(*id)?;
                }
                let occ = self.slots.occupancy();
                if !evicted.is_empty() && occ.in_use + occ.idle < self.min {
                    return Err(format!("evicted below the minimum {}: {occ:?}", self.min));
                }
                Ok(format!("advance to {} ms, evict {evicted:?}", self.now_ms))
            }
            6 => {
                let borrowed = self.slots.borrow_idle(|_| true);
                let n = borrowed.len();
                for idle in borrowed {
                    if rng.below(4) == 0 {
                        self.slots.release_tended(None); // failed its health ping
                        self.destroy(idle.item)?;
                    } else if let Some(back) = self.slots.restore_tended(idle.item, idle.since) {
                        self.destroy(back)?;
                    }
                }
                Ok(format!("health check of {n} idle"))
            }
            7 => {
                if self.slots.reserve_below(self.min) {
                    let id = self.fresh();
                    if let Some(back) = self.slots.release_tended(Some(id)) {
                        self.destroy(back)?;
                    }
                    return Ok(format!("refill {id}"));
                }
                Ok("refill: nothing to do".into())
            }
            8 if rng.below(50) == 0 => {
                for id in self.slots.close() {
                    self.destroy(id)?;
                }
                self.closed = true;
                Ok("close".into())
            }
            _ => Ok("no-op".into()),
        }
    }

    fn check(&self) -> Result<(), String> {
        self.slots.check()?;
        let occ = self.slots.occupancy();
        if occ.in_use != self.held.len() {
            return Err(format!(
                "pool counts {} in use, {} are held",
                occ.in_use,
                self.held.len()
            ));
        }
        if self.live.len() != self.held.len() + occ.idle {
            return Err(format!(
                "{} connections exist but {} held + {} idle",
                self.live.len(),
                self.held.len(),
                occ.idle
            ));
        }
        if occ.waiting != 0 {
            return Err("a waiter was left in the queue".into());
        }
        Ok(())
    }
}

fn run(seed: u64, steps: u64) {
    let mut rng = Rng(seed);
    let mut model = Model::new(&mut rng);
    let mut last = Vec::new();
    for step in 0..steps {
        // A closed pool is replaced once its holders are done, like a manager restart.
        if model.closed && model.held.is_empty() {
            model = Model::new(&mut rng);
        }
        let outcome = model.step(&mut rng).and_then(|what| {
            model.check()?;
            Ok(what)
        });
        match outcome {
            Ok(what) => {
                last.push(what);
                if last.len() > 8 {
                    last.remove(0);
                }
            }
            Err(why) => panic!(
                "slots fuzzer: seed {seed} failed at step {step}: {why}\n\
                 last steps: {last:#?}\n\
                 replay: BACKEND_POOL_FUZZ_SEED={seed} cargo test --lib slots::fuzz"
            ),
        }
    }
}

#[test]
fn random_steps_keep_every_invariant() {
    let steps = std::env::var("BACKEND_POOL_FUZZ_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    match std::env::var("BACKEND_POOL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => run(seed, steps),
        None => {
            for seed in [1, 2, 3, 0xB0A7] {
                run(seed, steps);
            }
        }
    }
}
