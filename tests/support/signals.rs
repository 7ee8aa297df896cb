//! Signals for tests: a handler installed without `SA_RESTART`, and a loop that delivers the
//! signal to one thread again and again, so every blocking call that thread makes is
//! interrupted (`EINTR`) the way a child process exiting interrupts a Blender add-on's threads.
#![allow(unsafe_code, dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Signals delivered so far by any [`Interrupter`] (each one interrupted a call, or found the
/// thread running).
pub static DELIVERED: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(_: libc::c_int) {}

/// Installs a do-nothing handler for `SIGUSR1` without `SA_RESTART`: a blocked system call the
/// signal lands in fails with `EINTR` instead of being restarted. Idempotent.
pub fn install_handler() {
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = 0; // no SA_RESTART
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
}

/// The calling thread's handle, for [`Interrupter::start`].
pub fn current_thread() -> libc::pthread_t {
    unsafe { libc::pthread_self() }
}

/// The kernel task ids of this process's threads whose names start with `prefix` (threads
/// the test does not own, e.g. the pool's maintenance thread), for
/// [`Interrupter::start_task`].
pub fn tasks_named(prefix: &str) -> Vec<libc::pid_t> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|name| name.trim_end().starts_with(prefix))
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Which thread an [`Interrupter`] signals.
#[derive(Clone, Copy)]
enum Target {
    Thread(libc::pthread_t),
    Task(libc::pid_t),
}

impl Target {
    fn signal(self) -> bool {
        match self {
            Target::Thread(t) => unsafe { libc::pthread_kill(t, libc::SIGUSR1) == 0 },
            Target::Task(tid) => unsafe {
                libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) == 0
            },
        }
    }
}

/// Sends `SIGUSR1` to one thread every `every` until stopped (or dropped).
pub struct Interrupter {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

impl Interrupter {
    /// Starts interrupting `target` (which must stay alive until [`Interrupter::stop`]).
    pub fn start(target: libc::pthread_t, every: Duration) -> Interrupter {
        Self::spawn(Target::Thread(target), every)
    }

    /// Starts interrupting the thread with kernel task id `tid` (see [`tasks_named`]).
    pub fn start_task(tid: libc::pid_t, every: Duration) -> Interrupter {
        Self::spawn(Target::Task(tid), every)
    }

    fn spawn(target: Target, every: Duration) -> Interrupter {
        install_handler();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut sent = 0;
            while !flag.load(Ordering::Relaxed) {
                if target.signal() {
                    sent += 1;
                    DELIVERED.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(every);
            }
            sent
        });
        Interrupter {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops, returning how many signals were sent.
    pub fn stop(mut self) -> u64 {
        self.finish()
    }

    fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().map_or(0, |h| h.join().unwrap_or(0))
    }
}

impl Drop for Interrupter {
    fn drop(&mut self) {
        self.finish();
    }
}
