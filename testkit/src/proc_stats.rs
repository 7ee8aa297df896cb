//! Process resource counters, for leak tests: read from `/proc/self` on Linux, asked of the
//! Win32 process and thread APIs on Windows (where a socket is a handle, so the handle count
//! stands for the descriptor count).
//!
//! Each function returns 0 (or nothing) where neither is available.

/// Open file descriptors of this process (entries of `/proc/self/fd`); on Windows, its open
/// handles (`GetProcessHandleCount`).
pub fn fd_count() -> usize {
    #[cfg(windows)]
    return win::handle_count();
    #[cfg(not(windows))]
    count_entries("/proc/self/fd")
}

/// Threads of this process (entries of `/proc/self/task`; on Windows, a thread snapshot).
pub fn thread_count() -> usize {
    #[cfg(windows)]
    return win::thread_names().len();
    #[cfg(not(windows))]
    count_entries("/proc/self/task")
}

/// The names of this process's threads, one per thread (an unnamed thread's is empty): each
/// task's `comm` on Linux (at most 15 bytes of the name), each thread's description
/// (`GetThreadDescription`, what Rust's `thread::Builder::name` sets) on Windows.
pub fn thread_names() -> Vec<String> {
    #[cfg(windows)]
    return win::thread_names();
    #[cfg(not(windows))]
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|name| name.trim_end().to_string())
        .collect()
}

/// Resident set size in KiB (`VmRSS` in `/proc/self/status`; on Windows, the working set).
pub fn rss_kib() -> u64 {
    #[cfg(windows)]
    return win::working_set_kib();
    #[cfg(not(windows))]
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

/// This process's descriptors that are TCP sockets with `port` at either end (local or
/// remote), from `/proc/self/fd` and `/proc/net/tcp{,6}`: unlike [`fd_count`], blind to
/// what other tests in the same binary open meanwhile. Linux only (0 elsewhere).
pub fn socket_fds_on_port(port: u16) -> usize {
    #[cfg(target_os = "linux")]
    {
        // Each row: `sl local_address rem_address st ... inode`, addresses as HEX_IP:HEX_PORT.
        let inodes: std::collections::HashSet<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|table| std::fs::read_to_string(table).ok())
            .flat_map(|text| {
                text.lines()
                    .skip(1)
                    .filter_map(|row| {
                        let cols: Vec<&str> = row.split_whitespace().collect();
                        let on_port = |addr: &str| {
                            addr.rsplit(':')
                                .next()
                                .and_then(|p| u16::from_str_radix(p, 16).ok())
                                == Some(port)
                        };
                        let (local, remote, inode) = (cols.get(1)?, cols.get(2)?, cols.get(9)?);
                        (on_port(local) || on_port(remote)).then(|| inode.to_string())
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        std::fs::read_dir("/proc/self/fd")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|link| {
                let link = link.to_string_lossy().into_owned();
                Some(
                    link.strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .to_string(),
                )
            })
            .filter(|inode| inodes.contains(inode))
            .count()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = port;
        0
    }
}

#[cfg(not(windows))]
fn count_entries(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// The Win32 calls (test support only: the crate itself has no `unsafe`).
#[cfg(windows)]
#[allow(unsafe_code)]
mod win {
    use std::mem::{size_of, zeroed};
    use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::System::Diagnostics::ToolHelp::{
        CreateToolhelp32Snapshot, Thread32First, Thread32Next, TH32CS_SNAPTHREAD, THREADENTRY32,
    };
    use windows_sys::Win32::System::ProcessStatus::{
        K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS,
    };
    use windows_sys::Win32::System::Threading::{
        GetCurrentProcess, GetCurrentProcessId, GetProcessHandleCount, GetThreadDescription,
        OpenThread, THREAD_QUERY_LIMITED_INFORMATION,
    };

    pub fn handle_count() -> usize {
        let mut count = 0u32;
        // SAFETY: this process's pseudo handle and a valid out pointer.
        let ok = unsafe { GetProcessHandleCount(GetCurrentProcess(), &mut count) };
        if ok != 0 {
            count as usize
        } else {
            0
        }
    }

    /// The ids of this process's threads (a snapshot of every thread in the system, filtered).
    fn thread_ids() -> Vec<u32> {
        let mut ids = Vec::new();
        // SAFETY: the snapshot handle is checked and closed; `entry` is sized as the API asks.
        unsafe {
            let snapshot = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
            if snapshot == INVALID_HANDLE_VALUE {
                return ids;
            }
            let me = GetCurrentProcessId();
            let mut entry: THREADENTRY32 = zeroed();
            entry.dwSize = size_of::<THREADENTRY32>() as u32;
            let mut more = Thread32First(snapshot, &mut entry) != 0;
            while more {
                if entry.th32OwnerProcessID == me {
                    ids.push(entry.th32ThreadID);
                }
                more = Thread32Next(snapshot, &mut entry) != 0;
            }
            CloseHandle(snapshot);
        }
        ids
    }

    pub fn thread_names() -> Vec<String> {
        thread_ids()
            .into_iter()
            .filter_map(|id| {
                // SAFETY: the thread handle is checked and closed; the description is a
                // NUL-terminated UTF-16 string the API allocated, read up to its NUL, then freed.
                unsafe {
                    let thread = OpenThread(THREAD_QUERY_LIMITED_INFORMATION, 0, id);
                    if thread.is_null() {
                        return None; // it ended since the snapshot
                    }
                    let mut text: *mut u16 = std::ptr::null_mut();
                    let status = GetThreadDescription(thread, &mut text);
                    CloseHandle(thread);
                    if status < 0 || text.is_null() {
                        return Some(String::new());
                    }
                    let len = (0..).take_while(|&i| *text.add(i) != 0).count();
                    let name = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
                    LocalFree(text.cast());
                    Some(name)
                }
            })
            .collect()
    }

    pub fn working_set_kib() -> u64 {
        // SAFETY: this process's pseudo handle and a counters struct of the size passed.
        unsafe {
            let mut counters: PROCESS_MEMORY_COUNTERS = zeroed();
            counters.cb = size_of::<PROCESS_MEMORY_COUNTERS>() as u32;
            if K32GetProcessMemoryInfo(GetCurrentProcess(), &mut counters, counters.cb) == 0 {
                return 0;
            }
            counters.WorkingSetSize as u64 / 1024
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_positive() {
        // Wine (8.0) answers GetProcessHandleCount with 0: there the handle checks of the
        // leak tests prove nothing (RELIABILITY.md, "Windows under Wine").
        if !(cfg!(windows) && super::fd_count() == 0) {
            assert!(super::fd_count() >= 3);
        }
        assert!(super::thread_count() >= 1);
        assert!(super::rss_kib() > 0);
    }

    #[test]
    fn a_named_thread_is_seen_until_it_ends() {
        use std::time::{Duration, Instant};
        let name = "testkit-probe";
        let seen = || super::thread_names().iter().filter(|n| *n == name).count();
        let within_5s = |want: usize| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while seen() != want && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            seen() == want
        };
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let probe = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || stopped.recv())
            .unwrap();
        // The thread names itself as it starts.
        assert!(within_5s(1), "{:?}", super::thread_names());
        drop(stop);
        probe.join().unwrap().unwrap_err();
        assert!(within_5s(0), "{:?}", super::thread_names());
    }
}
