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
//! Also owns supd's own `RLIMIT_NOFILE`: each running unit holds one
//! descriptor, its output pipe's read end (shared by the capture task and
//! the re-exec hand-off; a cgroup directory is open only while a process
//! is spawned into it, and every group's `cgroup.events` is watched
//! through one inotify instance), so the soft limit a shell or the kernel
//! gives PID 1 (1024) would stop supd short of 1,000 units. supd raises its own soft limit to the hard one (and, when it
//! may, the hard limit to what the unit set needs), as systemd does for
//! itself.
//!
//! Must never: let a service inherit the raised limit — `world::spawn`
//! gives every child the limit supd was started with (`child_nofile`),
//! unless its unit sets `nofile` — or leave the probe descriptor open.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors supd needs besides the per-unit ones (sockets, watcher,
/// epoll, the runtime's own, spawn slots).
const BASE: usize = 64;
/// Per unit: the output pipe, plus one of headroom for what a unit holds
/// only sometimes (readiness pipe, probe socket, a foreign main process's
/// pidfd, a delegated group's fallback watch).
const PER_UNIT: usize = 2;

/// The `RLIMIT_NOFILE` supd was started with, when `presize` changed it.
static STARTED_WITH: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// The limit to give a child whose unit does not set `nofile`: the one
/// supd was started with, if supd has raised its own since.
pub fn child_nofile() -> Option<(u64, u64)> {
    STARTED_WITH.get().copied()
}

/// Raise supd's own soft (and if need be hard) `RLIMIT_NOFILE` to what
/// `want` descriptors need; best effort (an unprivileged supd keeps its
/// hard limit). Returns the soft limit in force.
fn raise_limit(want: u64) -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    let target_hard = hard.max(want);
    if soft >= want && soft == hard {
        return soft;
    }
    let raised = (target_hard > hard
        && setrlimit(Resource::RLIMIT_NOFILE, target_hard, target_hard).is_ok())
        || setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok();
    if !raised {
        return soft;
    }
    let _ = STARTED_WITH.set((soft, hard));
    getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(s, _)| s)
        .unwrap_or(soft)
}

/// Raise the descriptor limit and grow the fd table to hold `units`
/// units' descriptors. Call before any thread is started (and before any
/// child is spawned). Best effort: past the soft `RLIMIT_NOFILE` nothing
/// could be opened anyway.
pub fn presize(units: usize) {
    let want = BASE.saturating_add(units.saturating_mul(PER_UNIT));
    let soft = raise_limit(u64::try_from(want).unwrap_or(u64::MAX));
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
        super::presize(300);
        // The probe descriptor went to the top of the wanted range and was
        // closed again (other tests in this process open descriptors of
        // their own meanwhile, so a count would race with them).
        let top = super::BASE + 300 * super::PER_UNIT;
        assert!(
            !std::path::Path::new(&format!("/proc/self/fd/{top}")).exists(),
            "descriptor {top} left open"
        );
        // The table's size is visible as FDSize in /proc/self/status.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let size: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(size >= super::BASE + 300 * super::PER_UNIT, "FDSize {size}");
    }
}
