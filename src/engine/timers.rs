//! Timer table: every deadline the engine cares about, as data.
//!
//! Owns: `(UnitId, TimerKind) -> Instant`. The driver sleeps until
//! `earliest()` and then feeds `Event::Tick`. Must never: read the clock or
//! spawn tasks — a cancelled timer is just a removed entry, nothing can leak.

use std::collections::{BTreeMap, BTreeSet};
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
    /// Give up on a start that never became ready. (The first variant, so
    /// the smallest: `cancel_all` ranges from it.)
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

/// Indexed both ways: by key (arm, cancel, look up) and by deadline (the
/// earliest, and what is due), so every operation is O(log timers) — with
/// 10,000 units each probed on a timer, a scan per event would cost more
/// than the event.
#[derive(Debug, Default, Clone)]
pub struct TimerTable {
    timers: BTreeMap<(UnitId, TimerKind), Instant>,
    by_deadline: BTreeSet<(Instant, UnitId, TimerKind)>,
}

impl TimerTable {
    /// Arm (or re-arm: overwriting is cancelling) a timer.
    pub fn set(&mut self, unit: UnitId, kind: TimerKind, at: Instant) {
        if let Some(old) = self.timers.insert((unit, kind), at) {
            self.by_deadline.remove(&(old, unit, kind));
        }
        self.by_deadline.insert((at, unit, kind));
    }

    pub fn cancel(&mut self, unit: UnitId, kind: TimerKind) {
        if let Some(old) = self.timers.remove(&(unit, kind)) {
            self.by_deadline.remove(&(old, unit, kind));
        }
    }

    pub fn cancel_all(&mut self, unit: UnitId) {
        let mine: Vec<(TimerKind, Instant)> = self
            .timers
            .range((unit, TimerKind::StartTimeout)..)
            .take_while(|((u, _), _)| *u == unit)
            .map(|((_, k), at)| (*k, *at))
            .collect();
        for (kind, at) in mine {
            self.timers.remove(&(unit, kind));
            self.by_deadline.remove(&(at, unit, kind));
        }
    }

    pub fn get(&self, unit: UnitId, kind: TimerKind) -> Option<Instant> {
        self.timers.get(&(unit, kind)).copied()
    }

    pub fn earliest(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(at, _, _)| *at)
    }

    /// Remove and return every timer due at `now`, in deadline order.
    pub fn take_due(&mut self, now: Instant) -> Vec<(UnitId, TimerKind)> {
        let mut due = Vec::new();
        while let Some(&(at, unit, kind)) = self.by_deadline.first() {
            if at > now {
                break;
            }
            self.by_deadline.pop_first();
            self.timers.remove(&(unit, kind));
            due.push((unit, kind));
        }
        due
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

    #[test]
    fn cancel_all_takes_every_kind_of_one_unit_only() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        for (i, kind) in [
            TimerKind::StartTimeout,
            TimerKind::KillAfter,
            TimerKind::RestartAt,
            TimerKind::MountTimeout,
            TimerKind::ProbeDue,
            TimerKind::ReadinessDue,
            TimerKind::Watchdog,
        ]
        .into_iter()
        .enumerate()
        {
            t.set(UnitId(1), kind, t0 + Duration::from_millis(i as u64));
            t.set(UnitId(0), kind, t0 + Duration::from_secs(10));
            t.set(UnitId(2), kind, t0 + Duration::from_secs(20));
        }
        t.cancel_all(UnitId(1));
        assert_eq!(t.earliest(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(t.take_due(t0 + Duration::from_secs(15)).len(), 7);
        assert_eq!(
            t.get(UnitId(2), TimerKind::Watchdog),
            Some(t0 + Duration::from_secs(20))
        );
        t.cancel(UnitId(2), TimerKind::Watchdog);
        assert_eq!(t.take_due(t0 + Duration::from_secs(30)).len(), 6);
        assert_eq!(t.earliest(), None);
    }
}
