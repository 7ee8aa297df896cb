//! A log-linear histogram of durations: fixed memory, lock-free.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::LatencyStats;

/// Sub-buckets per power of two: 4 gives ≤ 19 % relative error on percentiles.
const SUB: u32 = 4;
const BUCKETS: usize = 64 * SUB as usize;

/// A log-linear histogram of durations in nanoseconds: fixed memory (256 counters), lock-free.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub(crate) fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
        self.max_ns.fetch_max(ns, Relaxed);
    }

    pub(super) fn snapshot(&self) -> LatencyStats {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        let max_ns = self.max_ns.load(Relaxed);
        let quantile = |q: f64| -> f64 {
            if count == 0 {
                return 0.0;
            }
            let rank = ((count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, &n) in counts.iter().enumerate() {
                if seen + n >= rank {
                    // Interpolate linearly inside the bucket.
                    let lower = if i == 0 { 0 } else { bucket_upper(i - 1) + 1 };
                    let upper = bucket_upper(i).min(max_ns).max(lower);
                    let within = (rank - seen) as f64 / n as f64;
                    return (lower as f64 + (upper - lower) as f64 * within) / 1000.0;
                }
                seen += n;
            }
            max_ns as f64 / 1000.0
        };
        LatencyStats {
            count,
            mean_us: if count == 0 {
                0.0
            } else {
                self.sum_ns.load(Relaxed) as f64 / count as f64 / 1000.0
            },
            p50_us: quantile(0.50),
            p99_us: quantile(0.99),
            max_us: max_ns as f64 / 1000.0,
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros(); // ns >= 4 so exp >= 2
    let sub = (ns >> (exp - 2)) & (SUB as u64 - 1);
    ((exp - 1) * SUB) as usize + sub as usize
}

fn bucket_upper(i: usize) -> u64 {
    if i < SUB as usize {
        return i as u64;
    }
    let exp = (i / SUB as usize) as u32 + 1;
    let sub = (i % SUB as usize) as u64;
    // Values in this bucket are [ (4+sub) << (exp-2), (5+sub) << (exp-2) ).
    let upper = (u128::from(SUB as u64 + sub + 1) << (exp - 2)) - 1;
    u64::try_from(upper).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut last = 0;
        for ns in (0..100_000u64).chain([1 << 40, u64::MAX]) {
            let b = bucket_of(ns);
            assert!(b >= last && b < BUCKETS, "{ns}");
            assert!(bucket_upper(b) >= ns, "{ns} above its bucket's bound");
            last = b;
        }
    }

    #[test]
    fn percentiles_are_close() {
        let h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 1000);
        assert!((450.0..=550.0).contains(&s.p50_us), "{}", s.p50_us);
        assert!((940.0..=1000.0).contains(&s.p99_us), "{}", s.p99_us);
        assert_eq!(s.max_us, 1000.0);
        assert!((s.mean_us - 500.5).abs() < 0.01);
    }
}
