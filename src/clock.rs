//! Deadlines from durations a caller chose, which may be as large as `Duration::MAX`
//! (`wait_timeout(Duration::MAX)`, `shutdown(Duration::MAX)`, a Python `timeout=1e18`):
//! `Instant + Duration` panics on overflow, so every such deadline is made here.

use std::time::{Duration, Instant};

/// "Never", in practice: a century. Longer waits are cut to it.
pub(crate) const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `start + wait`, with `wait` cut to [`FAR`] so it cannot overflow.
pub(crate) fn deadline(start: Instant, wait: Duration) -> Instant {
    start
        .checked_add(wait.min(FAR))
        .unwrap_or(start + FAR / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_waits_saturate_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            deadline(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert!(deadline(now, Duration::MAX) >= now + FAR / 2);
    }
}
