//! Giving back what start-up used.
//!
//! Owns: one call, made once boot, a reload or a burst of operator
//! commands has settled (the driver asks after 250 ms of quiet; the
//! runtime's park hook runs it), that returns start-up memory to the
//! kernel: free heap pages (`malloc_trim`, glibc only) and the page-table
//! mappings of code and read-only data (supd's own and its shared
//! libraries') that start-up touched (argument and unit-file parsing,
//! runtime set-up, the first spawns) and steady state does not run.
//!
//! Why the code too: the kernel maps file pages 64 KiB at a time around
//! each fault ("fault-around"), so start-up leaves nearly the whole text
//! segment mapped, and PSS charges every page only supd maps to supd —
//! 1.5 MiB of a 2.8 MiB PSS at N=100 was code that never ran again. The
//! pages stay in the page cache (dropping our mapping costs nothing and
//! reads nothing); whatever runs later faults back in from the cache.
//!
//! Must never: touch a mapping that has private (copy-on-write) pages —
//! the relocated read-only data after the text is such a mapping, and
//! dropping it would undo the loader's relocations — or anything writable
//! or not backed by a file.

static REQUESTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Ask for a trim the next time the runtime is about to block. Trimming in
/// the park hook rather than in the loop matters: after it only the path
/// into epoll_wait runs, so the idle process maps back a few pages of code
/// instead of every future the loop polls once more (measured: ~0.5 MiB).
pub fn request() {
    REQUESTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The runtime's `on_thread_park` hook: trim if asked.
pub fn on_park() {
    if REQUESTED.swap(false, std::sync::atomic::Ordering::Relaxed) {
        let kib = trim_now();
        tracing::debug!("settled: dropped {kib} KiB of start-up mappings");
    }
}

/// Trim now; returns how many KiB of mappings were dropped (for the log).
pub fn trim_now() -> u64 {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut dropped = 0;
    for m in clean_file_mappings(&smaps) {
        // SAFETY: `m` is a read-only, unmodified private file mapping
        // (checked above): MADV_DONTNEED only removes its page
        // table entries, and the next access maps the same file page back.
        let r = unsafe {
            libc::madvise(
                m.start as *mut libc::c_void,
                m.end - m.start,
                libc::MADV_DONTNEED,
            )
        };
        if r == 0 {
            dropped += (m.end - m.start) as u64 / 1024;
        }
    }
    dropped
}

#[derive(Debug, PartialEq)]
struct Mapping {
    start: usize,
    end: usize,
}

/// Read-only (r-x or r--), private file mappings with no anonymous
/// (copied-on-write) pages.
fn clean_file_mappings(smaps: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    let mut cur: Option<(Mapping, bool)> = None;
    let flush = |cur: &mut Option<(Mapping, bool)>, out: &mut Vec<Mapping>| {
        if let Some((m, true)) = cur.take() {
            out.push(m);
        }
    };
    for line in smaps.lines() {
        let mut f = line.split_ascii_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            flush(&mut cur, &mut out);
            let perms = f.next().unwrap_or("");
            let path = f.nth(3).unwrap_or("");
            let ok = (perms == "r-xp" || perms == "r--p") && path.starts_with('/') && end > start;
            cur = Some((Mapping { start, end }, ok));
        } else if first == "Anonymous:" {
            let kb: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(1);
            if kb != 0
                && let Some((_, ok)) = cur.as_mut()
            {
                *ok = false;
            }
        }
    }
    flush(&mut cur, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_only_clean_read_only_mappings_of_the_executable() {
        let smaps = "\
55d0a0000000-55d0a0010000 r--p 00000000 fd:01 123 /usr/sbin/supd
Rss:                  64 kB
Anonymous:             0 kB
55d0a0010000-55d0a0180000 r-xp 00010000 fd:01 123 /usr/sbin/supd
Anonymous:             0 kB
55d0a0180000-55d0a0190000 r--p 00180000 fd:01 123 /usr/sbin/supd
Anonymous:            52 kB
55d0a0190000-55d0a0192000 rw-p 00190000 fd:01 123 /usr/sbin/supd
Anonymous:             8 kB
7f0000000000-7f0000100000 r-xp 00000000 fd:01 456 /usr/lib/libc.so.6
Anonymous:             0 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Anonymous:           132 kB
";
        let got = clean_file_mappings(smaps);
        assert_eq!(
            got,
            vec![
                Mapping {
                    start: 0x55d0a0000000,
                    end: 0x55d0a0010000
                },
                Mapping {
                    start: 0x55d0a0010000,
                    end: 0x55d0a0180000
                },
                Mapping {
                    start: 0x7f0000000000,
                    end: 0x7f0000100000
                },
            ]
        );
    }

    #[test]
    fn trimming_keeps_the_process_working() {
        // Drop our own test binary's code mappings, then run code again.
        let _ = trim_now();
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
        assert!(format!("{:?}", v.len()).contains("1000"));
    }
}
