//! The table, and how a measured run is timed (wall clock from the workers, CPU per request).

use super::*;

#[derive(Default)]
pub(crate) struct Table {
    pub(crate) rows: Vec<[String; 6]>,
}

impl Table {
    pub(crate) fn section(&mut self, title: &str) {
        self.rows.push([
            format!("== {title}"),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }

    pub(crate) fn row(
        &mut self,
        what: &str,
        pool: String,
        peer: String,
        other: String,
        ratio: String,
        target: String,
    ) {
        self.rows
            .push([what.to_string(), pool, peer, other, ratio, target]);
    }

    pub(crate) fn print(&self) {
        let head = [
            "measure",
            "backend-pool",
            "bare peer",
            "other peer",
            "ratio (pool/bare)",
            "target",
        ];
        let mut width = head.map(str::len);
        for r in &self.rows {
            if r[0].starts_with("==") {
                continue;
            }
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        println!();
        let line = |cells: [&str; 6]| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(width).enumerate() {
                if i == 0 {
                    s.push_str(&format!("| {c:<w$} "));
                } else {
                    s.push_str(&format!("| {c:>w$} "));
                }
            }
            println!("{s}|");
        };
        line(head);
        let sep = width.map(|w| "-".repeat(w));
        line([&sep[0], &sep[1], &sep[2], &sep[3], &sep[4], &sep[5]]);
        for r in &self.rows {
            if r[0].starts_with("==") {
                println!("| **{}** |", r[0].trim_start_matches("== "));
            } else {
                line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
            }
        }
    }
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// CPU time (user + system) this process has used so far, all threads (live and ended)
/// together, in seconds. The servers run in the child process (or nginx), so this is the
/// clients' own work, the kernel's half of their loopback traffic included.
pub(crate) fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// One measured run: completed operations per second, failed operations, and the process's
/// CPU time per completed operation in µs.
pub(crate) struct Run {
    pub(crate) rate: f64,
    pub(crate) failed: u64,
    pub(crate) cpu_us: f64,
}

/// Runs `op` from `threads` threads until `n` operations are done (or the deadline passes);
/// returns completed operations per second and the count of failed ones.
pub(crate) fn run_parallel<S, F>(threads: usize, n: u64, state: &S, op: F) -> (f64, u64)
where
    S: Sync,
    F: Fn(&S, usize) -> bool + Sync,
{
    let run = run_measured(threads, n, state, op);
    (run.rate, run.failed)
}

/// [`run_parallel`], with the CPU time the whole process spent per completed operation.
pub(crate) fn run_measured<S, F>(threads: usize, n: u64, state: &S, op: F) -> Run
where
    S: Sync,
    F: Fn(&S, usize) -> bool + Sync,
{
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let barrier = Barrier::new(threads + 1);
    // The run lasts from the first worker's start to the last one's end, each read by the
    // worker itself: on a busy machine the main thread may be scheduled late after the
    // barrier, and a start time taken there would shorten the run.
    let origin = Instant::now();
    let first_start = AtomicU64::new(u64::MAX);
    let last_end = AtomicU64::new(0);
    let since = |origin: Instant| origin.elapsed().as_nanos() as u64;
    let deadline = origin + RUN_DEADLINE;
    let cpu_before = cpu_seconds();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (next, done, failed, barrier, op) = (&next, &done, &failed, &barrier, &op);
            let (first_start, last_end) = (&first_start, &last_end);
            std::thread::Builder::new()
                .stack_size(512 * 1024)
                .spawn_scoped(s, move || {
                    barrier.wait();
                    first_start.fetch_min(since(origin), Ordering::Relaxed);
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        if op(state, t) {
                            done.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        if Instant::now() > deadline {
                            break;
                        }
                    }
                    last_end.fetch_max(since(origin), Ordering::Relaxed);
                })
                .expect("spawn");
        }
        barrier.wait();
    });
    let nanos = last_end
        .load(Ordering::Relaxed)
        .saturating_sub(first_start.load(Ordering::Relaxed))
        .max(1);
    let secs = nanos as f64 * 1e-9;
    let cpu = cpu_seconds() - cpu_before;
    let done = done.load(Ordering::Relaxed);
    Run {
        rate: done as f64 / secs,
        failed: failed.load(Ordering::Relaxed),
        cpu_us: cpu * 1e6 / done.max(1) as f64,
    }
}
