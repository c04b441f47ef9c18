//! Owns: whether `/proc` shows supd's own PID namespace, and the paths of
//! `/proc/PID/...` files handed to the rest of supd.
//!
//! Why: supd started with `unshare --pid --fork` but without a /proc of its
//! own (no `--mount-proc`) sees the parent namespace's /proc. Every pid supd
//! knows (from clone, waitpid, `cgroup.procs`, SCM_CREDENTIALS) is a pid of
//! its own namespace, so `/proc/PID/stat` there is some other process —
//! a host process's start time saved as a service's, a stranger's cgroup
//! taken for a notify sender's. Failing closed (no answer) is right: a
//! start time not recorded means "adopt by stopping and starting afresh",
//! a cgroup not known means "MAINPID refused", both safe.
//!
//! Must never: hand out a `/proc/PID` path when /proc is another
//! namespace's, or guess a translation between the two.
use std::sync::OnceLock;

/// Does `/proc/self` name this process (so /proc is this PID namespace's)?
/// Asked once: a supd does not change namespaces under itself.
pub fn is_ours() -> bool {
    static OURS: OnceLock<bool> = OnceLock::new();
    *OURS.get_or_init(|| {
        std::fs::read_link("/proc/self")
            .ok()
            .and_then(|p| p.to_str()?.parse::<u32>().ok())
            == Some(std::process::id())
    })
}

/// `/proc/PID/NAME`, if /proc is this namespace's.
pub fn pid_file(pid: i32, name: &str) -> Option<String> {
    is_ours().then(|| format!("/proc/{pid}/{name}"))
}

/// What to tell the operator when /proc is not ours (None when it is).
pub fn warning() -> Option<String> {
    if is_ours() {
        return None;
    }
    let shown = std::fs::read_link("/proc/self")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("unreadable ({e})"));
    Some(format!(
        "/proc is not this PID namespace's (supd is pid {} here, /proc/self is {shown}): \
         main-pid start times, sd_notify senders and MAINPID= cannot be checked, so they are \
         refused and a restarted supd stops what it finds instead of adopting it; \
         give supd its own /proc (`unshare --pid --fork --mount-proc`, or a container runtime's)",
        std::process::id()
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_are_given_only_for_our_own_proc() {
        // The test process runs in whatever namespace the suite runs in;
        // either way the two answers agree.
        let ours = super::is_ours();
        assert_eq!(super::pid_file(1, "stat").is_some(), ours);
        assert_eq!(super::warning().is_none(), ours);
    }
}
