//! Main processes supd did not create: a forking daemon's pid (from its
//! pid file, or guessed from its unit's cgroup), a pid a service names with sd_notify `MAINPID=`, and (after
//! a restart of supd) a service adopted from the previous supd.
//!
//! Owns: reading a pid file, checking that a pid really is a live process
//! of the unit — a member of its cgroup, or without cgroups a descendant
//! of supd — and waking when such a process exits though it is not supd's
//! child (a pidfd, polled by epoll: no timer). Must never: accept a pid it
//! cannot tie to the unit (a stale pid file naming an unrelated process
//! would have supd signal a stranger), or wait for a process (only the
//! reaper reaps).

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// What a forking unit's cgroup says its main process is, once the
/// start command has exited (systemd's guess for `Type=forking` without
/// `PIDFile=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guess {
    /// Nothing is left in the group: the daemon died, or never forked.
    Empty,
    /// The one process whose parent is not in the group: the daemon's
    /// root (its workers are its descendants).
    Main(i32),
    /// Several processes have their parent outside the group (several
    /// daemons, or a double fork still under way): no main process can be
    /// named.
    Several(Vec<i32>),
}

/// Guess the main process among `pids` (the group's members, less supd's
/// own helpers): the single one, or else the single one whose parent is
/// not a member. A pid whose /proc entry is gone has exited and is left
/// out.
pub fn guess(pids: &[i32]) -> Guess {
    let live: Vec<(i32, i32)> = pids
        .iter()
        .filter_map(|&p| parent_of(p).map(|pp| (p, pp)))
        .collect();
    let roots: Vec<i32> = live
        .iter()
        .filter(|(_, pp)| !live.iter().any(|(q, _)| q == pp))
        .map(|(p, _)| *p)
        .collect();
    match roots.as_slice() {
        [] => Guess::Empty,
        [one] => Guess::Main(*one),
        _ => Guess::Several(roots),
    }
}

/// A live process's parent (None once it is gone or a zombie).
fn parent_of(pid: i32) -> Option<i32> {
    match stat(pid)? {
        ('Z' | 'X', _) => None,
        (_, pp) => Some(pp),
    }
}

/// The pid in a pid file.
pub fn read_pid_file(path: &Path) -> Result<i32, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "reading pid_file {}: {e} (the daemon must write it before its starting process exits)",
            path.display()
        )
    })?;
    match text.trim().parse::<i32>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "pid_file {} does not hold a pid: {:?}",
            path.display(),
            text.chars().take(40).collect::<String>()
        )),
    }
}

/// State letter and parent pid from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(crate::world::procfs::pid_file(pid, "stat")?).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Is `pid` supd's child right now (so the reaper will collect it)?
pub fn is_our_child(pid: i32) -> bool {
    stat(pid).is_some_and(|(_, ppid)| ppid == std::process::id() as i32)
}

/// Check that `pid` is a live process of the unit: in its cgroup
/// (`group`), or — without one — descended from supd within a few
/// generations (a daemon whose parent has not exited yet).
pub fn check(pid: i32, group: Option<&Path>) -> Result<(), String> {
    if !crate::world::procfs::is_ours() {
        // /proc shows another namespace's processes: only the group's
        // member list (which the kernel gives in our pids) can answer.
        let Some(dir) = group else {
            return Err(format!(
                "pid {pid} cannot be checked: /proc is not this PID namespace's and supd has no cgroup for the unit (give supd its own /proc)"
            ));
        };
        let members = crate::world::cgroup::pids(dir)
            .map_err(|e| format!("reading {}/cgroup.procs: {e}", dir.display()))?;
        return if members.contains(&pid) {
            Ok(())
        } else {
            Err(format!(
                "pid {pid} is not a process of the unit (not in its cgroup {})",
                dir.display()
            ))
        };
    }
    match stat(pid) {
        None => return Err(format!("pid {pid} does not exist")),
        Some(('Z', _)) => return Err(format!("pid {pid} has already exited")),
        Some(_) => {}
    }
    if let Some(dir) = group {
        let members = crate::world::cgroup::pids(dir)
            .map_err(|e| format!("reading {}/cgroup.procs: {e}", dir.display()))?;
        if members.contains(&pid) {
            return Ok(());
        }
        return Err(format!(
            "pid {pid} is not a process of the unit (not in its cgroup {})",
            dir.display()
        ));
    }
    let me = std::process::id() as i32;
    let mut p = pid;
    for _ in 0..4 {
        match stat(p) {
            Some((_, pp)) if pp == me => return Ok(()),
            Some((_, pp)) if pp > 1 => p = pp,
            _ => break,
        }
    }
    Err(format!(
        "pid {pid} is not a descendant of supd (without cgroups supd accepts only those)"
    ))
}

/// Wakes once when a process exits (`pidfd_open`, Linux 5.3).
pub struct ExitWatch {
    fd: AsyncFd<OwnedFd>,
}

impl ExitWatch {
    pub fn new(pid: i32) -> std::io::Result<ExitWatch> {
        // SAFETY: pidfd_open with integer arguments; the result, if any, is
        // a new descriptor we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // `OwnedFd` owns its descriptor, so the deprecated constructor's
        // I/O-safety concern does not apply (as in mount_watch).
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(fd, Interest::READABLE)?;
        Ok(ExitWatch { fd })
    }

    pub async fn exited(&self) -> std::io::Result<()> {
        let _guard = self.fd.readable().await?;
        Ok(())
    }
}

#[cfg(test)]
mod guess_tests {
    use super::*;

    #[test]
    fn the_root_of_the_group_is_the_main_process() {
        // This test process and its parent: the parent is the root.
        let me = std::process::id() as i32;
        let parent = stat(me).map(|(_, p)| p).unwrap_or(0);
        assert_eq!(guess(&[me]), Guess::Main(me));
        assert_eq!(guess(&[me, parent]), Guess::Main(parent));
        assert_eq!(guess(&[]), Guess::Empty);
        // A pid that does not exist is left out.
        assert_eq!(guess(&[me, i32::MAX]), Guess::Main(me));
        // Two unrelated processes: no main process.
        if parent != 1 {
            assert!(matches!(guess(&[me, 1]), Guess::Several(_)));
        }
    }
}
