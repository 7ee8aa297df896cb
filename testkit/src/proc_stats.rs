//! Process resource counters read from `/proc/self` (Linux), for leak tests.
//!
//! Each function returns 0 where `/proc` is unavailable.

/// Open file descriptors of this process (entries of `/proc/self/fd`).
pub fn fd_count() -> usize {
    count_entries("/proc/self/fd")
}

/// Threads of this process (entries of `/proc/self/task`).
pub fn thread_count() -> usize {
    count_entries("/proc/self/task")
}

/// Resident set size in KiB (`VmRSS` in `/proc/self/status`).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn count_entries(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_positive() {
        assert!(super::fd_count() >= 3);
        assert!(super::thread_count() >= 1);
        assert!(super::rss_kib() > 0);
    }
}
