//! Sizing supd's descriptor table once, before any thread exists.
//!
//! Owns: growing the fd table to what the unit set will need (an output
//! pipe per unit, readiness pipes, probe sockets) in one step at start-up.
//! Why: the kernel grows a shared fd table by allocating a bigger one and
//! waiting a full RCU grace period before freeing the old (`expand_files`
//! → `synchronize_rcu`, 10–15 ms each) whenever another thread shares the
//! table — supd's disk thread does. Growing it during boot cost three such
//! stalls at N=500; grown here, while supd is single-threaded, the table is
//! not shared and no grace period is waited for.
//!
//! Must never: raise a resource limit (services inherit supd's limits), or
//! leave the probe descriptor open.

/// Descriptors supd needs besides one per unit (sockets, watcher, epoll,
/// the runtime's own, spawn slots).
const BASE: usize = 64;
/// Per unit: the output pipe, plus headroom for readiness pipes and probes.
const PER_UNIT: usize = 2;

/// Grow the fd table to hold `units` units' descriptors. Call before any
/// thread is started. Best effort: past the soft `RLIMIT_NOFILE` nothing
/// could be opened anyway.
pub fn presize(units: usize) {
    let want = BASE.saturating_add(units.saturating_mul(PER_UNIT));
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let top = want.min(
        usize::try_from(soft)
            .unwrap_or(usize::MAX)
            .saturating_sub(1),
    );
    let Ok(top) = i32::try_from(top) else {
        return;
    };
    if top < 3 {
        return;
    }
    // SAFETY: duplicating fd 0 (or any open fd: try 0..2) to a free high
    // number and closing it again; the table keeps its new size.
    unsafe {
        for src in 0..3 {
            if libc::fcntl(top, libc::F_GETFD) != -1 {
                // Already in use: the table is that big already.
                return;
            }
            let r = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, top);
            if r >= 0 {
                libc::close(r);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn presize_grows_the_table_and_leaves_nothing_open() {
        let before = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0);
        super::presize(300);
        let after = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0);
        // Other tests in this process open and close descriptors, so only
        // check that presize itself leaked nothing large.
        assert!(after <= before + 4, "before {before}, after {after}");
        // The table's size is visible as FDSize in /proc/self/status.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let size: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(size >= 64 + 600, "FDSize {size}");
    }
}
