//! Events: facts about the world, in the past tense, fed to the engine.
//!
//! Owns: the `Event` enum and the data it carries. Every asynchronous result
//! carries the `RunId` of the incarnation it belongs to, so that a late exit
//! or probe answer from an old run can never act on a new one. Must never:
//! carry commands (those are `Action`s) or OS handles.

use crate::engine::locks::LockMap;
use crate::mounts::{MountProblem, MountTable};
use crate::protocol::Request;
use crate::unit::UnitSet;

use super::RunId;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled {
        signal: i32,
        core: bool,
    },
    /// It exited, but supd could not learn how: it was not supd's child
    /// (an adopted service, or a main pid named by the service).
    Unknown,
    /// SIGKILLed by the kernel's OOM killer: its cgroup hit `memory_max`
    /// (the limit in bytes, when the unit set one).
    OutOfMemory {
        limit: Option<u64>,
    },
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited(0))
    }

    /// The status as unit specs compare it (`success_exit_status`...).
    pub fn view(&self) -> crate::unit::ExitStatusView {
        match self {
            ExitStatus::Exited(c) => crate::unit::ExitStatusView::Code(*c),
            ExitStatus::Signaled { signal, .. } => crate::unit::ExitStatusView::Signal(*signal),
            ExitStatus::OutOfMemory { .. } => crate::unit::ExitStatusView::Signal(libc::SIGKILL),
            // Matches no configured status (those are 0..=255 or signals).
            ExitStatus::Unknown => crate::unit::ExitStatusView::Code(-1),
        }
    }

    /// Killed by a signal other than the ones a clean stop uses (SIGHUP,
    /// SIGINT, SIGTERM, SIGPIPE), as systemd's `on-abnormal` counts them.
    pub fn unclean_signal(&self) -> bool {
        match self {
            ExitStatus::Exited(_) | ExitStatus::Unknown => false,
            ExitStatus::OutOfMemory { .. } => true,
            ExitStatus::Signaled { signal, .. } => !matches!(
                *signal,
                libc::SIGHUP | libc::SIGINT | libc::SIGTERM | libc::SIGPIPE
            ),
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exited with code {c}"),
            ExitStatus::Unknown => write!(f, "exited (status unknown: not supd's child)"),
            ExitStatus::OutOfMemory { limit } => match limit {
                Some(b) => write!(f, "killed: out of memory (memory_max {})", human_bytes(*b)),
                None => write!(f, "killed: out of memory"),
            },
            ExitStatus::Signaled { signal, core } => {
                let name = crate::engine::signal_name(*signal);
                write!(
                    f,
                    "killed by {name}{}",
                    if *core { " (core dumped)" } else { "" }
                )
            }
        }
    }
}

/// 268435456 -> "256M": sizes as a unit file writes them.
pub fn human_bytes(b: u64) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if b >= 1 << shift && b.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", b >> shift);
        }
    }
    b.to_string()
}

/// Who sent a control request (from SO_PEERCRED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub uid: u32,
    pub pid: Option<i32>,
    /// User name, or `uid:N`.
    pub name: String,
}

/// Identifies one control request so its reply can be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReqId(pub u64);

/// What the driver learnt when it tried to load the lock state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocksLoad {
    Loaded(LockMap),
    /// Unknown: unreadable, corrupt, or its filesystem is not mounted yet.
    Unknown(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownKind {
    /// Container / subreaper: stop everything, then exit.
    Exit,
    Poweroff,
    Reboot,
}

/// Which probe of a unit: liveness (`[health]`, may restart) or
/// readiness (`[readiness]`, only toggles ready).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    Liveness,
    Readiness,
}

/// An sd_notify message, already checked to come from the unit's processes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NotifyMsg {
    pub ready: bool,
    pub stopping: bool,
    pub watchdog: bool,
    pub status: Option<String>,
    pub main_pid: Option<i32>,
    /// `RELOADING=1`: not ready until the next `READY=1`.
    pub reloading: bool,
    /// `WATCHDOG=trigger`: the service asks to be treated as hung.
    pub watchdog_trigger: bool,
    /// `EXTEND_TIMEOUT_USEC=`: the current start or stop timeout moves to
    /// at least this far from now.
    pub extend_timeout_usec: Option<u64>,
    /// `ERRNO=`: the service's last error, shown with its status.
    pub errno: Option<i32>,
    /// `MONOTONIC_USEC=` (sent with `RELOADING=1`): when the service began
    /// reloading, on CLOCK_MONOTONIC.
    pub monotonic_usec: Option<u64>,
    /// The same moment as an `Instant`, filled in by the driver at
    /// receipt (the engine reads no clock).
    pub monotonic_at: Option<std::time::Instant>,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// The driver spawned the process for `run`. `cgroup` is the group
    /// it was born in (the run then lasts until `GroupEmpty`), or None
    /// when the unit is only its process group.
    Spawned {
        run: RunId,
        pid: i32,
        cgroup: Option<String>,
    },
    /// This supd is a re-executed image (`supctl reexec`): what the old
    /// image knew that the cgroups and the lock file do not say. Fed first,
    /// in the same batch as the `Adopted` events.
    Resumed(super::Handoff),
    /// supd found the unit's cgroup populated at start-up: a previous
    /// supd (crashed, killed, re-executed) left it running. `pid` is its
    /// main process where that could be verified (recorded pid with the
    /// same start time, still in the group); without it the processes are
    /// stopped before a fresh start. The engine allocates the run and asks
    /// the driver to `Track` it.
    Adopted {
        unit: String,
        pid: Option<i32>,
        /// None: not contained (after `reexec` without cgroups: the main
        /// process handed over, still supd's child).
        cgroup: Option<String>,
        wall_ms: u64,
    },
    /// The kernel OOM-killed `count` processes in `run`'s cgroup (fed just
    /// before the exit or the group's end it explains).
    OomKilled {
        run: RunId,
        count: u64,
    },
    /// A kernel PSI trigger fired: `resource`'s stall share went above
    /// `[shed] above` (`high`) or `below` (not `high`) within the window.
    Pressure {
        resource: super::shed::Resource,
        high: bool,
        wall_ms: u64,
    },
    /// The cgroup of a contained `run` has no process left (it may come
    /// before or after the main process's `ProcessExited`).
    GroupEmpty {
        run: RunId,
    },
    /// The process could not be created. `mount` is set when the spawner's
    /// last-moment mount check refused it.
    SpawnFailed {
        run: RunId,
        error: String,
        mount: Option<MountProblem>,
    },
    /// The reaper collected the unit's main process.
    ProcessExited {
        run: RunId,
        status: ExitStatus,
    },
    MountTableChanged(MountTable),
    /// The mount table could not be read (the watcher failed; the driver
    /// retries and sends `MountTableChanged` once it can read it again).
    /// Until then every required mount counts as missing.
    MountTableUnknown(String),
    /// Timers may be due; the engine checks against `now`.
    Tick,
    /// An operator request. `Reload` arrives as `Reloaded` instead, since
    /// reading files is I/O the driver does first.
    Command {
        req: ReqId,
        peer: PeerInfo,
        wall_ms: u64,
        request: Request,
    },
    /// The driver read the units directory for a `reload` request (`req` is
    /// None for a reload not asked over the socket, e.g. SIGHUP).
    Reloaded {
        req: Option<ReqId>,
        peer: PeerInfo,
        wall_ms: u64,
        result: Result<UnitSet, Vec<String>>,
    },
    /// `maintenance recover`: the driver read the file (or `accept_empty`).
    Recover {
        req: ReqId,
        peer: PeerInfo,
        wall_ms: u64,
        result: Result<LockMap, String>,
        source: String,
    },
    LocksLoaded(LocksLoad),
    /// A `PersistLocks{version}` finished.
    LocksPersisted {
        version: u64,
        result: Result<(), String>,
    },
    ProbeAnswered {
        run: RunId,
        kind: ProbeKind,
        ok: bool,
        output: Option<String>,
    },
    /// `[ready] kind = "fd"`: the service wrote its readiness line.
    ReadyFd {
        run: RunId,
    },
    Notified {
        run: RunId,
        msg: NotifyMsg,
    },
    ShutdownRequested(ShutdownKind),
    /// A condition of the unit did not hold just before its start: no
    /// process was created.
    ConditionFailed {
        run: RunId,
        why: String,
    },
    /// `MAINPID=`, checked by the driver (the new pid is a process of the
    /// unit, adopted as its main process).
    MainPidChanged {
        run: RunId,
        pid: i32,
    },
    /// A command of the start sequence that must succeed
    /// (`exec_start_post`) failed while the main process runs.
    HelperFailed {
        run: RunId,
        what: String,
    },
}
