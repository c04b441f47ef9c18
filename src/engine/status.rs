//! What the engine tells operators: `status` and `why`.
//!
//! Owns: turning engine state into `UnitStatus` records and sentences. Reads
//! the engine's own state — there is no shadow copy to drift. Must never:
//! change state.

use std::borrow::Cow;
use std::time::Instant;

use crate::protocol::{HealthStatus, StatusReport, UnitStatus, Word};
use crate::unit::UnitKind;

use super::Blocker;
use super::commands::{holder_info, rfc3339};
use super::event::ExitStatus;
use super::unit_state::{UnitState, Want};
use super::{Engine, UnitId};

/// A unit's state word (`Engine::state_word`), as one byte: `observe`
/// keeps the last published one per unit, and at ten thousand units a
/// `&'static str` and a flag (24 bytes a unit, 240 kB) missed the cache on
/// every change; two bytes a unit stay in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StateWord {
    Stopped,
    Removed,
    Waiting,
    Starting,
    Running,
    Stopping,
    Backoff,
    Failed,
    Done,
    Exited,
    Skipped,
}

impl StateWord {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            StateWord::Stopped => "stopped",
            StateWord::Removed => "removed",
            StateWord::Waiting => "waiting",
            StateWord::Starting => "starting",
            StateWord::Running => "running",
            StateWord::Stopping => "stopping",
            StateWord::Backoff => "backoff",
            StateWord::Failed => "failed",
            StateWord::Done => "done",
            StateWord::Exited => "exited",
            StateWord::Skipped => "skipped",
        }
    }
}

impl Engine {
    pub fn state_word(&self, id: UnitId) -> &'static str {
        self.state_of(id).as_str()
    }

    /// `state_word`, as a byte (what `observe` keeps per unit).
    pub(super) fn state_of(&self, id: UnitId) -> StateWord {
        let u = &self.units[id.0 as usize];
        match &u.state {
            UnitState::Inactive => {
                if u.want == Want::Down {
                    StateWord::Stopped
                } else if u.removed {
                    StateWord::Removed
                } else {
                    StateWord::Waiting
                }
            }
            UnitState::Starting { .. } => StateWord::Starting,
            UnitState::Running { .. } => StateWord::Running,
            UnitState::Stopping { .. } | UnitState::Draining { .. } => StateWord::Stopping,
            UnitState::Backoff { .. } => StateWord::Backoff,
            UnitState::Failed { .. } => StateWord::Failed,
            UnitState::Done => StateWord::Done,
            UnitState::Exited { .. } => StateWord::Exited,
            UnitState::Skipped { .. } => StateWord::Skipped,
        }
    }

    pub fn status_report(&self, ids: &[UnitId], now: Instant, wall_ms: u64) -> StatusReport {
        let units = ids
            .iter()
            .map(|&id| self.unit_status(id, now, wall_ms))
            .collect();
        StatusReport {
            units,
            lock_state_problem: self.locks.unknown_reason().map(str::to_string),
            mount_table_problem: self.mount_table_problem().map(str::to_string),
            lock_write_problem: self.lock_write_problem(now),
            unit_file_problems: self
                .skipped
                .units
                .iter()
                .map(|(name, why)| format!("{name} not loaded: {why}"))
                .chain(self.skipped.notes.iter().cloned())
                .collect(),
            shed_level: self.shed,
            pressure_shed: (self.auto_shed.step() > 0)
                .then(|| super::shed::level_word(self.auto_shed.step()).to_string()),
            shutting_down: self.shutdown.is_some(),
            containment: self.cfg.containment.clone(),
        }
    }

    fn unit_status(&self, id: UnitId, now: Instant, wall_ms: u64) -> UnitStatus {
        let u = &self.units[id.0 as usize];
        let spec = u.effective();
        let maintenance = self
            .locks
            .holders(&spec.name)
            .map(|hs| hs.iter().map(|h| holder_info(h, wall_ms)).collect());
        let ready = self.is_ready(id);
        let next_restart_in_ms = match u.state {
            UnitState::Backoff { until } => {
                Some(until.saturating_duration_since(now).as_millis() as u64)
            }
            _ => None,
        };
        let health = spec.health.as_ref().map(|_| HealthStatus {
            last: match u.health.last {
                None => "unknown",
                Some(true) => "passing",
                Some(false) => "failing",
            }
            .to_string(),
            consecutive_failures: u.health.consecutive_failures,
            last_output: u.health.last_output.clone(),
        });
        UnitStatus {
            name: spec.name.clone(),
            state: self.state_word(id).to_string(),
            pid: u.state.pid(),
            maintenance,
            ready,
            description: spec.description.clone(),
            detail: self.detail(id, now).map(Cow::into_owned),
            restarts: u.restarts,
            next_restart_in_ms,
            enabled: !self.disabled.contains(&spec.name),
            want: match u.want {
                Want::Up => "up",
                Want::Down => "down",
            }
            .to_string(),
            essential: spec.essential,
            health,
            status_text: u.status_text.clone(),
            last_exit: u.last_exit.map(|s| s.to_string()),
            containment: (u.state.has_process() || u.last_exit.is_some()).then(|| {
                if u.cgroup.is_some() {
                    "cgroup"
                } else {
                    "process-group"
                }
                .to_string()
            }),
            cgroup: u.cgroup.clone(),
            oom_kills: u.oom_kills,
            since: u
                .history
                .since
                .or(self.booted)
                .map(|t| wall_of(t, now, wall_ms)),
            uptime_secs: match &u.state {
                UnitState::Starting { .. }
                | UnitState::Running { .. }
                | UnitState::Stopping { .. } => u
                    .history
                    .started
                    .map(|t| now.saturating_duration_since(t).as_secs()),
                _ => None,
            },
            started: u.history.started.map(|t| wall_of(t, now, wall_ms)),
            last_exit_code: match u.last_exit {
                Some(ExitStatus::Exited(c)) => Some(c),
                _ => None,
            },
            last_exit_signal: match u.last_exit {
                Some(ExitStatus::Signaled { signal, .. }) => Some(super::signal_name(signal)),
                _ => None,
            },
            last_exit_at: u.history.last_exit_at.map(|t| wall_of(t, now, wall_ms)),
            last_error: u.history.last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_at: u
                .history
                .last_error
                .as_ref()
                .map(|(_, t)| wall_of(*t, now, wall_ms)),
            health_failures: u.history.health_failures,
        }
    }

    /// One line for the status table's DETAIL column (and a published
    /// state change's `detail`): the usual ones are `'static` words, so a
    /// restart's published changes allocate nothing here.
    pub(super) fn detail(&self, id: UnitId, now: Instant) -> Option<Word> {
        let u = &self.units[id.0 as usize];
        match &u.state {
            UnitState::Inactive => self
                .first_blocker(id, now)
                .map(|b| b.describe(&u.spec.name, now).into()),
            UnitState::Starting { .. } => Some(match u.spec.kind {
                UnitKind::Oneshot => Cow::Borrowed("running to completion"),
                UnitKind::Longrun => Cow::Borrowed("waiting for readiness"),
            }),
            UnitState::Running { ready, .. } => u
                .stop_pending
                .as_ref()
                .map(|r| format!("will stop: {r} (waiting for dependents to stop)").into())
                .or_else(|| (!ready).then_some(Cow::Borrowed("not ready"))),
            UnitState::Stopping { reason, killed, .. } => Some(
                if *killed {
                    format!("{reason}; SIGKILL sent")
                } else {
                    reason.to_string()
                }
                .into(),
            ),
            UnitState::Draining { status, .. } => Some(
                format!("main process {status}; waiting for the rest of its processes to exit")
                    .into(),
            ),
            UnitState::Backoff { until } => Some(
                format!(
                    "restarting in {:.1}s (attempt {}){}",
                    until.saturating_duration_since(now).as_secs_f64(),
                    u.attempt,
                    u.history
                        .last_error
                        .as_ref()
                        .map(|(e, _)| format!(" after: {e}"))
                        .unwrap_or_default()
                )
                .into(),
            ),
            UnitState::Failed { reason } => {
                let cause = self
                    .last_error_unless_in(id, &reason.to_string())
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                Some(format!("{reason}{cause}; `supctl start {}` retries", u.spec.name).into())
            }
            UnitState::Done => None,
            UnitState::Exited { status } => Some(status.to_string().into()),
            UnitState::Skipped { why } => Some(format!("condition not met: {why}").into()),
        }
    }

    /// `supctl why UNIT`: what the unit waits on, in words.
    pub fn why(&self, id: UnitId, now: Instant) -> String {
        let u = &self.units[id.0 as usize];
        let name = &u.spec.name;
        let blockers = self.start_blockers(id, now, true);
        let disabled = self.disabled.contains(name);
        let lines: Vec<String> = blockers
            .iter()
            .map(|b| match b {
                // Held down since boot because disabled (or stopped since).
                Blocker::OperatorStopped if disabled => format!(
                    "  - stopped and disabled (not started at boot): `supctl start {name}` starts it now, `supctl enable {name}` at every boot"
                ),
                b => format!("  - {}", b.describe(name, now)),
            })
            .collect();
        let head = match &u.state {
            UnitState::Running { pid, ready, .. } => {
                let mut s = format!(
                    "{name} is running (pid {pid}){}",
                    if *ready { ", ready" } else { ", not ready" }
                );
                if let Some(r) = &u.stop_pending {
                    s.push_str(&format!("; it will stop: {r}"));
                }
                return s;
            }
            UnitState::Starting { pid, .. } => {
                return format!(
                    "{name} is starting (pid {}): {}",
                    pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    self.detail(id, now).unwrap_or_default()
                );
            }
            UnitState::Stopping { reason, .. } => return format!("{name} is stopping: {reason}"),
            UnitState::Draining { status, .. } => {
                return format!(
                    "{name}'s main process {status}, but processes of it remain in its cgroup; it is down (and may start again) only once they are gone"
                );
            }
            UnitState::Done => return format!("{name} completed successfully (oneshot)"),
            UnitState::Skipped { why } => {
                return format!(
                    "{name} was skipped: {why}. `supctl start {name}` checks its conditions again"
                );
            }
            UnitState::Failed { reason } => {
                let cause = self
                    .last_error_unless_in(id, &reason.to_string())
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                return format!(
                    "{name} failed: {reason}{cause}. `supctl start {name}` retries; `supctl reset {name}` clears the failure"
                );
            }
            UnitState::Exited { status } => {
                return format!(
                    "{name} {status} and its restart policy does not restart it; `supctl start {name}` starts it"
                );
            }
            UnitState::Backoff { .. } | UnitState::Inactive => {
                if blockers.is_empty() {
                    return format!("{name} is not running and nothing blocks it: it starts now");
                }
                format!("{name} is not running; it waits on:")
            }
        };
        let mut text = format!("{head}\n{}", lines.join("\n"));
        if matches!(u.state, UnitState::Backoff { .. })
            && let Some((e, _)) = &u.history.last_error
        {
            text.push_str(&format!("\n  last failure: {e}"));
        }
        text
    }

    /// The last error, unless `shown` already says it.
    fn last_error_unless_in(&self, id: UnitId, shown: &str) -> Option<&str> {
        let (e, _) = self.units[id.0 as usize].history.last_error.as_ref()?;
        (!shown.contains(e.as_str())).then_some(e.as_str())
    }

    /// Short form for reply tails.
    pub(super) fn why_short(&self, id: UnitId) -> String {
        let u = &self.units[id.0 as usize];
        match &u.state {
            UnitState::Failed { reason } => format!("failed ({reason})"),
            UnitState::Exited { status } => format!("{status}, not restarted by policy"),
            UnitState::Done => "completed".to_string(),
            UnitState::Skipped { why } => format!("skipped ({why})"),
            _ if u.want == Want::Down => "stopped by an operator".to_string(),
            _ => "waiting (see `supctl why`)".to_string(),
        }
    }
}

/// Wall time (RFC 3339) of a past instant, given that the wall clock read
/// `wall_ms` at `now`. Pure arithmetic: the engine reads no clock.
fn wall_of(t: Instant, now: Instant, wall_ms: u64) -> String {
    let ago = now.saturating_duration_since(t).as_millis() as u64;
    rfc3339(wall_ms.saturating_sub(ago))
}

/// Every state word a unit can have (`supd_unit_state{state=...}`).
pub const STATE_WORDS: &[&str] = &[
    "waiting", "stopped", "removed", "starting", "running", "stopping", "backoff", "failed",
    "done", "exited",
];

/// Numbers about one unit, for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitMetrics {
    pub name: String,
    pub state: &'static str,
    pub ready: bool,
    pub restarts: u32,
    /// Wall time its current (or last) process started, ms since the epoch.
    pub start_unix_ms: Option<u64>,
    /// Its last exit's code (128 + signal for a signal, as shells say).
    pub last_exit_code: Option<i32>,
    pub health_failures: u64,
    /// (holder, lock taken at, ms since the epoch).
    pub locks: Vec<(String, u64)>,
    /// Boot: from startable to ready, in ms (as `supctl analyze blame`).
    pub startup_ms: Option<u64>,
}

/// Numbers about everything the engine knows, for metrics and /readyz.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineMetrics {
    pub units: Vec<UnitMetrics>,
    /// Units waiting for a `[[mount]]` to appear.
    pub mounts_waiting: usize,
    pub lock_state_ok: bool,
    /// Why supd is not ready (empty: ready) — every non-optional unit that
    /// should be up and is not, fail-closed lock state, shutdown.
    pub not_ready: Vec<String>,
    pub shed: ShedMetrics,
}

/// Shedding, manual and automatic (`[shed]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShedMetrics {
    /// The automatic step (0 none, 1 optional, 2 also sheddable normal).
    pub auto_step: u8,
    /// An operator's `supctl shed` level is in effect.
    pub manual: bool,
    /// Units kept down by shedding now (either kind).
    pub units_shed: usize,
    pub counters: super::shed::ShedCounters,
}

impl Engine {
    /// A snapshot for metrics; `wall_ms` is the wall clock at `now`.
    pub fn metrics(&self, now: Instant, wall_ms: u64) -> EngineMetrics {
        let wall = |t: Instant| {
            wall_ms.saturating_sub(now.saturating_duration_since(t).as_millis() as u64)
        };
        let mut units = Vec::new();
        let mut not_ready = Vec::new();
        if let Some(why) = self.locks.unknown_reason() {
            not_ready.push(format!("lock state unknown (fail-closed): {why}"));
        }
        if self.shutdown.is_some() {
            not_ready.push("shutting down".to_string());
        }
        let mut mounts_waiting = 0;
        let mut units_shed = 0;
        for (id, u) in self.units() {
            if u.removed && !u.state.has_process() {
                continue;
            }
            let spec = u.effective();
            let locks: Vec<(String, u64)> = self
                .locks
                .holders(&spec.name)
                .unwrap_or_default()
                .into_iter()
                .map(|h| (h.holder, h.since_unix_ms))
                .collect();
            let ready = self.is_ready(id);
            if u.mount_wait_since.is_some() {
                mounts_waiting += 1;
            }
            let deliberately_down = u.want == Want::Down
                || !locks.is_empty()
                || self.shed.is_some_and(|l| spec.priority <= l)
                || (self.shed.is_none()
                    && (self.auto_shed.sheds(spec) || self.auto_shed.held(id).is_some()));
            if !ready
                && !u.removed
                && spec.priority != crate::unit::Priority::Optional
                && !deliberately_down
            {
                not_ready.push(format!("{} is {}", spec.name, self.state_word(id)));
            }
            if !u.removed
                && (self.shed.is_some_and(|l| spec.priority <= l)
                    || (self.shed.is_none() && self.auto_shed.sheds(spec)))
            {
                units_shed += 1;
            }
            units.push(UnitMetrics {
                name: spec.name.clone(),
                state: self.state_word(id),
                ready,
                restarts: u.restarts,
                start_unix_ms: u.history.started.map(wall),
                last_exit_code: u.last_exit.and_then(|e| match e {
                    ExitStatus::Exited(c) => Some(c),
                    ExitStatus::Signaled { signal, .. } => Some(128 + signal),
                    ExitStatus::OutOfMemory { .. } => Some(128 + libc::SIGKILL),
                    ExitStatus::Unknown => None,
                }),
                health_failures: u.history.health_failures,
                locks,
                startup_ms: self
                    .timeline
                    .boot_startup(id)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            });
        }
        EngineMetrics {
            units,
            mounts_waiting,
            lock_state_ok: self.locks.unknown_reason().is_none(),
            not_ready,
            shed: ShedMetrics {
                auto_step: self.auto_shed.step(),
                manual: self.shed.is_some(),
                units_shed,
                counters: self.auto_shed.counters.clone(),
            },
        }
    }
}
