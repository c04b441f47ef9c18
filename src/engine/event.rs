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
    Signaled { signal: i32, core: bool },
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
        }
    }

    /// Killed by a signal other than the ones a clean stop uses (SIGHUP,
    /// SIGINT, SIGTERM, SIGPIPE), as systemd's `on-abnormal` counts them.
    pub fn unclean_signal(&self) -> bool {
        match self {
            ExitStatus::Exited(_) => false,
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
}

#[derive(Debug, Clone)]
pub enum Event {
    /// The driver spawned the process for `run`.
    Spawned {
        run: RunId,
        pid: i32,
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
