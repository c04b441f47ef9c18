//! What the engine tells operators: `status` and `why`.
//!
//! Owns: turning engine state into `UnitStatus` records and sentences. Reads
//! the engine's own state — there is no shadow copy to drift. Must never:
//! change state.

use std::time::Instant;

use crate::protocol::{HealthStatus, StatusReport, UnitStatus};
use crate::unit::UnitKind;

use super::commands::{holder_info, rfc3339};
use super::event::ExitStatus;
use super::unit_state::{UnitState, Want};
use super::{Engine, UnitId};

impl Engine {
    pub fn state_word(&self, id: UnitId) -> &'static str {
        let u = &self.units[id.0 as usize];
        match &u.state {
            UnitState::Inactive => {
                if u.want == Want::Down {
                    "stopped"
                } else if u.removed {
                    "removed"
                } else {
                    "waiting"
                }
            }
            UnitState::Starting { .. } => "starting",
            UnitState::Running { .. } => "running",
            UnitState::Stopping { .. } => "stopping",
            UnitState::Backoff { .. } => "backoff",
            UnitState::Failed { .. } => "failed",
            UnitState::Done => "done",
            UnitState::Exited { .. } => "exited",
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
            shed_level: self.shed,
            shutting_down: self.shutdown.is_some(),
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
            detail: self.detail(id, now),
            restarts: u.restarts,
            next_restart_in_ms,
            want: match u.want {
                Want::Up => "up",
                Want::Down => "down",
            }
            .to_string(),
            essential: spec.essential,
            health,
            status_text: u.status_text.clone(),
            last_exit: u.last_exit.map(|s| s.to_string()),
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

    /// One line for the status table's DETAIL column.
    pub(super) fn detail(&self, id: UnitId, now: Instant) -> Option<String> {
        let u = &self.units[id.0 as usize];
        match &u.state {
            UnitState::Inactive => self
                .start_blockers(id, now, false)
                .first()
                .map(|b| b.describe(now).replace("UNIT", &u.spec.name)),
            UnitState::Starting { .. } => Some(match u.spec.kind {
                UnitKind::Oneshot => "running to completion".to_string(),
                UnitKind::Longrun => "waiting for readiness".to_string(),
            }),
            UnitState::Running { ready, .. } => u
                .stop_pending
                .as_ref()
                .map(|r| format!("will stop: {r} (waiting for dependents to stop)"))
                .or_else(|| (!ready).then(|| "not ready".to_string())),
            UnitState::Stopping { reason, killed, .. } => Some(if *killed {
                format!("{reason}; SIGKILL sent")
            } else {
                reason.to_string()
            }),
            UnitState::Backoff { until } => Some(format!(
                "restarting in {:.1}s (attempt {}){}",
                until.saturating_duration_since(now).as_secs_f64(),
                u.attempt,
                u.history
                    .last_error
                    .as_ref()
                    .map(|(e, _)| format!(" after: {e}"))
                    .unwrap_or_default()
            )),
            UnitState::Failed { reason } => {
                let cause = self
                    .last_error_unless_in(id, &reason.to_string())
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                Some(format!(
                    "{reason}{cause}; `supctl start {}` retries",
                    u.spec.name
                ))
            }
            UnitState::Done => None,
            UnitState::Exited { status } => Some(status.to_string()),
        }
    }

    /// `supctl why UNIT`: what the unit waits on, in words.
    pub fn why(&self, id: UnitId, now: Instant) -> String {
        let u = &self.units[id.0 as usize];
        let name = &u.spec.name;
        let blockers = self.start_blockers(id, now, true);
        let lines: Vec<String> = blockers
            .iter()
            .map(|b| format!("  - {}", b.describe(now).replace("UNIT", name)))
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
            UnitState::Done => return format!("{name} completed successfully (oneshot)"),
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
