//! Timer table: every deadline the engine cares about, as data.
//!
//! Owns: `(UnitId, TimerKind) -> Instant`. The driver sleeps until
//! `earliest()` and then feeds `Event::Tick`. Must never: read the clock or
//! spawn tasks — a cancelled timer is just a removed entry, nothing can leak.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::UnitId;

/// `now + d` without overflow. Unit files bound every duration at load
/// (`unit::MAX_DURATION`), but a deadline is computed in PID 1 and must
/// never panic whatever the input: a sum past what `Instant` can hold
/// becomes "about a century from now", which is never in practice.
pub fn after(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(d)
        .or_else(|| now.checked_add(d.min(FAR)))
        .unwrap_or(now)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// Give up on a start that never became ready.
    StartTimeout,
    /// The stop signal was sent; SIGKILL the group at this time.
    KillAfter,
    /// Leave backoff and try again.
    RestartAt,
    /// A required mount has been missing for its whole `timeout`.
    MountTimeout,
    /// Run the next health (liveness) probe.
    ProbeDue,
    /// Run the next readiness probe.
    ReadinessDue,
    /// sd_notify WATCHDOG=1 is overdue.
    Watchdog,
    /// A `notify_reload` unit did not report READY=1 after RELOADING=1.
    ReloadTimeout,
}

#[derive(Debug, Default, Clone)]
pub struct TimerTable {
    timers: BTreeMap<(UnitId, TimerKind), Instant>,
}

impl TimerTable {
    /// Arm (or re-arm: overwriting is cancelling) a timer.
    pub fn set(&mut self, unit: UnitId, kind: TimerKind, at: Instant) {
        self.timers.insert((unit, kind), at);
    }

    pub fn cancel(&mut self, unit: UnitId, kind: TimerKind) {
        self.timers.remove(&(unit, kind));
    }

    pub fn cancel_all(&mut self, unit: UnitId) {
        self.timers.retain(|(u, _), _| *u != unit);
    }

    pub fn get(&self, unit: UnitId, kind: TimerKind) -> Option<Instant> {
        self.timers.get(&(unit, kind)).copied()
    }

    pub fn earliest(&self) -> Option<Instant> {
        self.timers.values().min().copied()
    }

    /// Remove and return every timer due at `now`, in deadline order.
    pub fn take_due(&mut self, now: Instant) -> Vec<(UnitId, TimerKind)> {
        let mut due: Vec<((UnitId, TimerKind), Instant)> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, at)| (*k, *at))
            .collect();
        due.sort_by_key(|(k, at)| (*at, *k));
        for (k, _) in &due {
            self.timers.remove(k);
        }
        due.into_iter().map(|(k, _)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_saturates_instead_of_overflowing() {
        let t0 = Instant::now();
        assert_eq!(
            after(t0, Duration::from_secs(5)),
            t0 + Duration::from_secs(5)
        );
        let far = after(t0, Duration::MAX);
        assert!(far > t0 + Duration::from_secs(50 * 365 * 24 * 3600));
    }

    #[test]
    fn overwrite_cancels_and_due_in_order() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set(UnitId(1), TimerKind::RestartAt, t0 + Duration::from_secs(5));
        t.set(UnitId(1), TimerKind::RestartAt, t0 + Duration::from_secs(1));
        t.set(UnitId(0), TimerKind::KillAfter, t0 + Duration::from_secs(2));
        assert_eq!(t.earliest(), Some(t0 + Duration::from_secs(1)));
        assert!(t.take_due(t0).is_empty());
        let due = t.take_due(t0 + Duration::from_secs(3));
        assert_eq!(
            due,
            vec![
                (UnitId(1), TimerKind::RestartAt),
                (UnitId(0), TimerKind::KillAfter)
            ]
        );
        assert_eq!(t.earliest(), None);
    }
}
