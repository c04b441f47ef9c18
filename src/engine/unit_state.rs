//! Per-unit runtime state.
//!
//! Owns: `UnitState` (an enum whose variants carry exactly the data that
//! exists in that state — a pid only where a process exists), the reasons a
//! unit stops or fails, and `Unit`, the engine's record for one unit. Must
//! never: hold I/O handles or read the clock.

use std::sync::Arc;
use std::time::Instant;

use crate::mounts::MountProblem;
use crate::unit::UnitSpec;

use super::RunId;
use super::event::ExitStatus;
use super::restart::StartWindow;

/// Why a running unit is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Operator,
    Maintenance,
    /// A `requires` dependency stopped or is no longer ready.
    DependencyStopped(String),
    /// Boxed: a rare reason, and the largest (it kept every `UnitState`
    /// and `stop_pending` 80 bytes wide).
    MountLost(Box<MountProblem>),
    HealthFailed,
    StartTimeout,
    Shutdown,
    Shed,
    /// Shed automatically: pressure stayed high (`[shed]`).
    Pressure,
    /// The unit file was removed by a reload.
    Removed,
    /// `supctl restart`: stop, then start again.
    Restart,
    /// Found running at start-up (left by a previous supd) without a main
    /// process supd can vouch for: stopped, then started afresh.
    Unowned,
    /// A command of the start sequence (`exec_start_post`) failed.
    StartFailed(String),
    /// The kernel's OOM killer killed one of its processes and
    /// `oom_policy = "stop"`.
    OutOfMemory,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Operator => write!(f, "stopped by operator"),
            StopReason::Maintenance => write!(f, "maintenance lock taken"),
            StopReason::DependencyStopped(d) => write!(f, "required unit {d} is not ready"),
            StopReason::MountLost(p) => write!(f, "required mount lost: {p}"),
            StopReason::HealthFailed => write!(f, "health probe failed"),
            StopReason::StartTimeout => write!(f, "not ready within its start timeout"),
            StopReason::Shutdown => write!(f, "system shutdown"),
            StopReason::Shed => write!(f, "shed by operator"),
            StopReason::Pressure => write!(f, "shed under pressure"),
            StopReason::Removed => write!(f, "unit file removed"),
            StopReason::Restart => write!(f, "restart requested"),
            StopReason::Unowned => write!(
                f,
                "found running without a known main process (left by a previous supd)"
            ),
            StopReason::StartFailed(what) => write!(f, "{what}"),
            StopReason::OutOfMemory => write!(
                f,
                "a process was killed by the kernel's OOM killer (oom_policy = \"stop\")"
            ),
        }
    }
}

/// Why a unit is in `failed` (it stays there until an operator acts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// More than `burst` automatic starts within `interval`.
    StartLimit {
        burst: u32,
        interval_secs: u64,
    },
    /// Exited and its restart policy says not to restart.
    Exited(ExitStatus),
    SpawnFailed(String),
    /// Boxed, as `StopReason::MountLost`.
    MountTimeout(Box<MountProblem>),
    StartTimeout,
    Unhealthy,
    /// Failed before supd re-executed itself (the reason, in words).
    Carried(String),
}

impl std::fmt::Display for FailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailReason::StartLimit {
                burst,
                interval_secs,
            } => write!(
                f,
                "start limit hit: more than {burst} automatic starts within {interval_secs}s"
            ),
            FailReason::Exited(s) => write!(f, "{s}; restart policy does not restart it"),
            FailReason::SpawnFailed(e) => write!(f, "could not start: {e}"),
            FailReason::MountTimeout(p) => write!(f, "gave up waiting for mount: {p}"),
            FailReason::StartTimeout => write!(f, "not ready within its start timeout"),
            FailReason::Unhealthy => write!(f, "health probe failed (on_unhealthy = \"stop\")"),
            FailReason::Carried(e) => write!(f, "{e}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitState {
    /// No process. Whether it is waiting or stopped is `want` + blockers.
    Inactive,
    /// Process created (pid known once the spawner answers), not ready yet.
    /// A oneshot stays here until it exits.
    Starting {
        run: RunId,
        pid: Option<i32>,
        since: Instant,
    },
    /// Longrun whose process runs and which has been ready.
    Running {
        run: RunId,
        pid: i32,
        since: Instant,
        ready: bool,
    },
    /// Stop signal sent; SIGKILL at the `KillAfter` timer.
    Stopping {
        run: RunId,
        pid: Option<i32>,
        reason: StopReason,
        killed: bool,
        since: Instant,
    },
    /// The main process of a contained run has exited, but its cgroup
    /// still has processes (children, a daemon that forked away): the run
    /// is not over, and nothing may start again, until `GroupEmpty`.
    /// `was` is the state the main process exited in; the decision it
    /// would have caused (restart, fail, done) is taken when the group is
    /// empty.
    Draining {
        run: RunId,
        status: ExitStatus,
        was: Box<UnitState>,
        since: Instant,
    },
    /// Waiting to restart after a failure.
    Backoff {
        until: Instant,
    },
    Failed {
        reason: FailReason,
    },
    /// A oneshot that exited 0: ready for its dependents.
    Done,
    /// A longrun that exited and whose policy does not restart it (clean
    /// exit under `on-failure` or `never`).
    Exited {
        status: ExitStatus,
    },
    /// A condition (`condition_*`) did not hold at its last start: not a
    /// failure; its dependents start as if it had completed.
    Skipped {
        why: String,
    },
}

impl UnitState {
    pub fn run(&self) -> Option<RunId> {
        match self {
            UnitState::Starting { run, .. }
            | UnitState::Running { run, .. }
            | UnitState::Stopping { run, .. }
            | UnitState::Draining { run, .. } => Some(*run),
            UnitState::Inactive
            | UnitState::Backoff { .. }
            | UnitState::Failed { .. }
            | UnitState::Done
            | UnitState::Exited { .. }
            | UnitState::Skipped { .. } => None,
        }
    }

    pub fn pid(&self) -> Option<i32> {
        match self {
            UnitState::Starting { pid, .. } | UnitState::Stopping { pid, .. } => {
                pid.filter(|p| *p > 0)
            }
            // 0: a forking run whose main process could not be named
            // (tracked by its cgroup alone).
            UnitState::Running { pid, .. } => Some(*pid).filter(|p| *p > 0),
            UnitState::Draining { .. }
            | UnitState::Inactive
            | UnitState::Backoff { .. }
            | UnitState::Failed { .. }
            | UnitState::Done
            | UnitState::Exited { .. }
            | UnitState::Skipped { .. } => None,
        }
    }

    pub fn has_process(&self) -> bool {
        self.run().is_some()
    }
}

/// Operator intent, kept apart from the state (as dinit separates desired
/// and current state): `Down` means an operator stopped it and nothing
/// automatic may bring it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Up,
    Down,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthRt {
    pub probing: bool,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last: Option<bool>,
    pub last_output: Option<String>,
}

/// What the probe path reads of one probe of the running spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeLimits {
    pub interval: std::time::Duration,
    pub start_period: std::time::Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    pub on_unhealthy: crate::unit::OnUnhealthy,
}

impl ProbeLimits {
    fn of(h: &crate::unit::HealthSpec) -> ProbeLimits {
        ProbeLimits {
            interval: h.interval,
            start_period: h.start_period,
            success_threshold: h.success_threshold,
            failure_threshold: h.failure_threshold,
            on_unhealthy: h.on_unhealthy,
        }
    }
}

/// The probe settings of `Unit::spec`, copied beside the unit's state: a
/// probe result (the commonest event with thousands of probed units) then
/// reads no part of the two-kilobyte spec, whose fields it needs lie on
/// three different cache lines. Always `ProbeHot::from_spec(&unit.spec)`: the
/// spec changes only through `Unit::set_spec` (the simulation checks).
///
/// `repr(C)`, the flag between the two limits: a liveness result reads the
/// liveness limits, the flag and whether there is a readiness probe (the
/// readiness limits' first word), and in this order they end in the line
/// that follows `Unit::health` (see `Unit`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct ProbeHot {
    pub liveness: Option<ProbeLimits>,
    /// `[ready] kind = "probe"`.
    pub ready_by_probe: bool,
    pub readiness: Option<ProbeLimits>,
}

impl ProbeHot {
    /// The limits of the probe of `kind`, if the spec declares one.
    pub fn of(&self, kind: super::ProbeKind) -> Option<ProbeLimits> {
        match kind {
            super::ProbeKind::Liveness => self.liveness,
            super::ProbeKind::Readiness => self.readiness,
        }
    }

    pub fn from_spec(spec: &UnitSpec) -> ProbeHot {
        ProbeHot {
            liveness: spec.health.as_ref().map(ProbeLimits::of),
            readiness: spec.readiness.as_ref().map(ProbeLimits::of),
            ready_by_probe: spec.ready.kind == crate::unit::ReadyKind::Probe,
        }
    }
}

/// The engine's record for one unit. Unit ids are never reused: a unit
/// removed by reload keeps its slot (flagged `removed`) so that stale
/// `RunId`s and timers can never address a different unit.
///
/// `repr(C)`: what events and decisions read (the spec pointer, the state,
/// the flags `stop_cause`/`is_ready`/`is_up` read, the probe settings and
/// counters) comes first, within the first `HOT_LINES` cache lines (the
/// record is 64-byte aligned; engine/mod.rs asserts the layout: a
/// decision reads lines 0-2, a liveness probe result lines 0-3), so an
/// event touches those and nothing else of the record, and
/// `engine::prefetch` can ask for them all at once.
#[derive(Debug, Clone, PartialEq)]
#[repr(C, align(64))]
pub struct Unit {
    /// The spec the current (or last) process was started from. Assign it
    /// with `set_spec` (it keeps `probes` in step).
    pub spec: Arc<UnitSpec>,
    pub state: UnitState,
    pub want: Want,
    pub removed: bool,
    pub restart_requested: bool,
    /// The next start was asked by an operator: it does not count against
    /// the start limit.
    pub manual_start: bool,
    /// `GroupEmpty` for this run arrived before its main process was
    /// reaped (the kernel empties the group before the parent is told).
    pub group_empty: Option<RunId>,
    /// Must stop once its dependents are down (dependents-first stopping).
    pub stop_pending: Option<StopReason>,
    /// A changed spec from reload, applied at the next start.
    pub next_spec: Option<Arc<UnitSpec>>,
    /// Before `probes`: with it, everything a liveness result reads past
    /// the state (its counters, its limits, the two probe flags) lies in
    /// the record's third and fourth lines — four lines a result, not
    /// five (the decision fields above keep their three).
    pub health: HealthRt,
    /// `ProbeHot::from_spec(&spec)`.
    pub probes: ProbeHot,
    pub readiness: HealthRt,
    pub window: StartWindow,
    /// Consecutive failed runs, for backoff.
    pub attempt: u32,
    pub restarts: u32,
    pub mount_wait_since: Option<Instant>,
    /// The spawner's last-moment check refused a start: our snapshot is
    /// behind the kernel. Treated as a missing mount until the watcher
    /// delivers the next table (else we would retry in a tight loop).
    pub mount_refused: Option<MountProblem>,
    pub last_exit: Option<ExitStatus>,
    /// The cgroup of the current (or last) run, from `Spawned`; None when
    /// it was contained only by its process group.
    pub cgroup: Option<String>,
    /// The kernel OOM-killed in this run's group: a SIGKILL that ends it is
    /// reported as out of memory.
    pub oom_run: Option<RunId>,
    /// OOM kills in the unit's group since supd started.
    pub oom_kills: u64,
    pub status_text: Option<String>,
    /// History for operators (`since`, `uptime`, `last_exit`,
    /// `last_error`); monotonic instants, shown as wall time by status.
    pub history: History,
}

/// What happened to a unit, kept for `status`, `why` and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// When its state word (or readiness) last changed.
    pub since: Option<Instant>,
    /// When its current (or last) process was started.
    pub started: Option<Instant>,
    pub last_exit_at: Option<Instant>,
    /// The most recent failure in words (spawn error, probe output, "ready
    /// timeout"...) and when.
    pub last_error: Option<(String, Instant)>,
    /// Liveness-probe failures, all runs together (for metrics).
    pub health_failures: u64,
}

impl Unit {
    pub fn new(spec: Arc<UnitSpec>) -> Unit {
        Unit {
            probes: ProbeHot::from_spec(&spec),
            spec,
            next_spec: None,
            removed: false,
            state: UnitState::Inactive,
            want: Want::Up,
            stop_pending: None,
            restart_requested: false,
            manual_start: false,
            window: StartWindow::default(),
            attempt: 0,
            restarts: 0,
            mount_wait_since: None,
            mount_refused: None,
            last_exit: None,
            cgroup: None,
            group_empty: None,
            oom_run: None,
            oom_kills: 0,
            status_text: None,
            health: HealthRt::default(),
            readiness: HealthRt::default(),
            history: History::default(),
        }
    }

    /// Replace the running spec (and what is copied from it).
    pub fn set_spec(&mut self, spec: Arc<UnitSpec>) {
        self.probes = ProbeHot::from_spec(&spec);
        self.spec = spec;
    }

    /// Every process of the current run is gone (its group emptied), though
    /// its main process is not reaped yet: it is no longer up.
    pub fn all_gone(&self) -> bool {
        self.group_empty.is_some() && self.group_empty == self.state.run()
    }

    /// The spec that governs decisions now: the pending one if a reload
    /// changed the file, since the next start will use it.
    pub fn effective(&self) -> &Arc<UnitSpec> {
        self.next_spec.as_ref().unwrap_or(&self.spec)
    }
}
