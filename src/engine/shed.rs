//! Pressure-aware shedding (`[shed]` in supd.toml), as a pure state machine.
//!
//! Owns: the automatic shedding step (0: nothing shed, 1: `optional` units,
//! 2: also `normal` units with `sheddable = true`), decided from
//! `Event::Pressure` alone: the driver holds two kernel PSI triggers per
//! watched resource, a "high" one (stall share above `above`) and a "low"
//! one (above `below`); each fires at most once per window while its
//! threshold is exceeded. Pressure that keeps firing "high" for
//! `shed_after` sheds one more step; no event at all (not even "low") for
//! `restore_after` restores one step — hysteresis twice over, a lower
//! threshold and a longer quiet period. Units a restore releases start at
//! jittered moments within `jitter`, so a restore is not a start storm.
//!
//! Manual shedding (`supctl shed`) wins: while an operator's level is set
//! the automatic step is still tracked but blocks nothing (the engine asks
//! `blocks` only without a manual level).
//!
//! Must never: read a clock (every `now` comes from the caller), do I/O, or
//! keep a deadline that cannot act (an idle supd with no pressure has no
//! deadline here at all: zero wake-ups).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::UnitId;
use super::restart::Rng;
use super::timers::after;
use crate::unit::{Priority, UnitSpec};

/// The highest step (optional, then sheddable normal units).
pub const MAX_STEP: u8 = 2;

/// A PSI resource supd can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Cpu,
    Memory,
    Io,
}

impl Resource {
    pub const ALL: [Resource; 3] = [Resource::Cpu, Resource::Memory, Resource::Io];

    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Io => "io",
        }
    }

    pub fn parse(s: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The timing half of `[shed]` (the thresholds are the driver's: they
/// are written into the kernel triggers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShedPolicy {
    /// The PSI window: a trigger fires at most once per window.
    pub window: Duration,
    /// Pressure above `above` for this long sheds one more step.
    pub shed_after: Duration,
    /// No pressure above `below` for this long restores one step.
    pub restore_after: Duration,
    /// Units a restore releases start spread over this.
    pub jitter: Duration,
}

impl Default for ShedPolicy {
    fn default() -> Self {
        ShedPolicy {
            window: Duration::from_secs(2),
            shed_after: Duration::from_secs(4),
            restore_after: Duration::from_secs(30),
            jitter: Duration::from_secs(10),
        }
    }
}

/// What a pressure event or a tick changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// One more step shed, now `step`; `resource` fired the last "high".
    Shed { step: u8, resource: Resource },
    /// One step restored, now `step`.
    Restore { step: u8 },
}

/// Counters for /metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShedCounters {
    /// Automatic sheds and restores (steps).
    pub auto_sheds: u64,
    pub auto_restores: u64,
    /// Operator `shed` / `unshed` requests.
    pub manual_sheds: u64,
    pub manual_unsheds: u64,
    /// Pressure events per resource: [high, low].
    pub pressure: [[u64; 2]; 3],
}

#[derive(Debug, Clone)]
pub struct AutoShed {
    policy: Option<ShedPolicy>,
    step: u8,
    /// Since when "high" has kept firing (reset by a gap longer than two
    /// windows, and after each step shed).
    above_since: Option<Instant>,
    last_high: Option<Instant>,
    /// When one step is restored unless pressure fires first.
    restore_at: Option<Instant>,
    /// Units a restore released, held until their jittered start time.
    returning: BTreeMap<UnitId, Instant>,
    /// The wall clock of the last pressure event, to stamp audit records
    /// of restores (which a tick decides): wall = wall_ms + (now - at).
    wall: Option<(Instant, u64)>,
    pub counters: ShedCounters,
}

impl AutoShed {
    pub fn new(policy: Option<ShedPolicy>) -> AutoShed {
        AutoShed {
            policy,
            step: 0,
            above_since: None,
            last_high: None,
            restore_at: None,
            returning: BTreeMap::new(),
            wall: None,
            counters: ShedCounters::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.policy.is_some()
    }

    pub fn step(&self) -> u8 {
        self.step
    }

    /// Does step `step` cover a unit with this spec?
    pub fn covers(step: u8, spec: &UnitSpec) -> bool {
        Self::covers_as(step, spec.priority, spec.sheddable)
    }

    /// `covers` from the two fields it reads.
    pub fn covers_as(step: u8, priority: Priority, sheddable: bool) -> bool {
        match priority {
            Priority::Optional => step >= 1,
            Priority::Normal => step >= 2 && sheddable,
            Priority::Critical => false,
        }
    }

    /// What a re-exec hands over: the step in force and how long until
    /// its restore is due (ms).
    pub fn export(&self, now: Instant) -> (u8, Option<u64>) {
        let restore = self.restore_at.map(|t| {
            u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
        });
        (self.step, restore)
    }

    /// Take over the old image's step (re-exec): what it shed stays shed
    /// until pressure stays quiet, as if supd had not been replaced. Only
    /// with a policy (the new image's config may have none).
    pub fn resume(&mut self, now: Instant, step: u8, restore_in_ms: Option<u64>) {
        let Some(p) = self.policy else {
            return;
        };
        if step == 0 {
            return;
        }
        self.step = step.min(MAX_STEP);
        let wait = restore_in_ms.map_or(p.restore_after, Duration::from_millis);
        self.restore_at = Some(after(now, wait));
    }

    /// Is the unit shed by the current step?
    pub fn sheds(&self, spec: &UnitSpec) -> bool {
        Self::covers(self.step, spec)
    }

    /// `sheds` from the two fields it reads (the decisions' copy).
    pub fn sheds_as(&self, priority: Priority, sheddable: bool) -> bool {
        Self::covers_as(self.step, priority, sheddable)
    }

    /// Is the unit held back after a restore (its jittered start is not
    /// due yet)?
    pub fn held(&self, id: UnitId) -> Option<Instant> {
        self.returning.get(&id).copied()
    }

    /// Wall-clock milliseconds at `now`, as far as pressure events told.
    pub fn wall_ms(&self, now: Instant) -> u64 {
        match self.wall {
            Some((at, ms)) => {
                ms.saturating_add(now.saturating_duration_since(at).as_millis() as u64)
            }
            None => 0,
        }
    }

    /// A PSI trigger fired.
    pub fn pressure(
        &mut self,
        now: Instant,
        resource: Resource,
        high: bool,
        wall_ms: u64,
    ) -> Option<Change> {
        self.counters.pressure[resource.index()][usize::from(!high)] += 1;
        self.wall = Some((now, wall_ms));
        let p = self.policy?;
        // Any event (above `below`) postpones a restore.
        if self.step > 0 {
            self.restore_at = Some(after(now, p.restore_after));
        }
        if !high {
            return None;
        }
        let gap = p.window.saturating_mul(2);
        let continuous = self
            .last_high
            .is_some_and(|t| now.saturating_duration_since(t) <= gap);
        self.last_high = Some(now);
        if !continuous || self.above_since.is_none() {
            self.above_since = Some(now);
        }
        let since = self.above_since.unwrap_or(now);
        if self.step < MAX_STEP && now.saturating_duration_since(since) >= p.shed_after {
            self.step += 1;
            self.counters.auto_sheds += 1;
            // The next step needs as long again.
            self.above_since = Some(now);
            self.restore_at = Some(after(now, p.restore_after));
            return Some(Change::Shed {
                step: self.step,
                resource,
            });
        }
        None
    }

    /// Time passed: restore a step if pressure stayed low, release units
    /// whose jittered start is due. Returns the restore, if any; `released`
    /// gets the units the restore frees (the caller knows the specs and
    /// passes them back through `hold`).
    pub fn tick(&mut self, now: Instant) -> Option<Change> {
        self.returning.retain(|_, at| *at > now);
        let p = self.policy?;
        let due = self.restore_at.is_some_and(|t| t <= now);
        if !due || self.step == 0 {
            if self.step == 0 {
                self.restore_at = None;
            }
            return None;
        }
        self.step -= 1;
        self.counters.auto_restores += 1;
        self.above_since = None;
        self.restore_at = (self.step > 0).then(|| after(now, p.restore_after));
        Some(Change::Restore { step: self.step })
    }

    /// Hold back a unit a restore released until a random moment within
    /// `jitter` (zero jitter: it may start at once).
    pub fn hold(&mut self, id: UnitId, now: Instant, rng: &mut Rng) {
        let Some(p) = self.policy else { return };
        let j = p.jitter.as_millis().min(u128::from(u64::MAX)) as u64;
        if j == 0 {
            return;
        }
        let d = Duration::from_millis(rng.below_or_eq(j));
        if d.is_zero() {
            return;
        }
        self.returning.insert(id, after(now, d));
    }

    /// A unit that is shed again (or gone) is no longer returning.
    pub fn forget(&mut self, id: UnitId) {
        self.returning.remove(&id);
    }

    /// When a tick is next needed: a restore, or a held unit's start.
    pub fn next_deadline(&self) -> Option<Instant> {
        let held = self.returning.values().min().copied();
        let restore = self.restore_at.filter(|_| self.step > 0);
        held.into_iter().chain(restore).min()
    }
}

/// What a step sheds, in words (events, audit).
pub fn level_word(step: u8) -> &'static str {
    match step {
        0 => "none",
        1 => "optional",
        _ => "optional+sheddable",
    }
}

impl super::Engine {
    /// The automatic step changed: release or hold units, publish the
    /// change, audit it.
    pub(super) fn on_shed_change(&mut self, now: Instant, c: Change, wall_ms: u64) {
        // A step sheds or returns units by priority: every decision.
        self.mark_all();
        let (step, shed, resource) = match c {
            Change::Shed { step, resource } => (step, true, Some(resource)),
            Change::Restore { step } => (step, false, None),
        };
        let before = if shed { step - 1 } else { step + 1 };
        let ids: Vec<UnitId> = self
            .units()
            .filter(|(_, u)| !u.removed)
            .filter(|(_, u)| {
                AutoShed::covers(before, u.effective()) != AutoShed::covers(step, u.effective())
            })
            .map(|(id, _)| id)
            .collect();
        for &id in &ids {
            if shed {
                self.auto_shed.forget(id);
            } else if self.shed.is_none() {
                self.auto_shed.hold(id, now, &mut self.rng);
            }
        }
        let units: Vec<String> = ids
            .iter()
            .map(|id| self.unit(*id).effective().name.clone())
            .collect();
        let detail = self.shed.map(|l| {
            format!(
                "an operator's `supctl shed {}` is in effect and wins until `supctl unshed`",
                format!("{l:?}").to_lowercase()
            )
        });
        let what = if shed { "shed" } else { "unshed" };
        match resource {
            Some(r) => tracing::warn!(
                "{} pressure stayed above [shed] above: shedding step {step} ({}): {}",
                r.name(),
                level_word(step),
                units.join(", ")
            ),
            None => tracing::info!(
                "pressure stayed low: restoring to step {step} ({}): {}",
                level_word(step),
                units.join(", ")
            ),
        }
        self.out.push(super::Action::Audit(super::AuditEntry {
            wall_ms,
            peer_uid: None,
            peer_pid: None,
            holder: None,
            unit: None,
            action: format!("{what} (pressure)"),
            reason: Some(match resource {
                Some(r) => format!(
                    "{} pressure above the threshold; now shed: {}; units: {}",
                    r.name(),
                    level_word(step),
                    units.join(", ")
                ),
                None => format!(
                    "pressure stayed low; now shed: {}; units: {}",
                    level_word(step),
                    units.join(", ")
                ),
            }),
            outcome: match &detail {
                Some(_) => "ok (a manual shed is in effect and wins)".to_string(),
                None => "ok".to_string(),
            },
        }));
        self.out
            .push(super::Action::Publish(crate::protocol::EventBody::Shed {
                by: "pressure".to_string(),
                shed,
                level: level_word(step).to_string(),
                resource: resource.map(|r| r.name().to_string()),
                units,
                detail,
            }));
    }

    /// The operator's `supctl shed` level, if set (it wins).
    pub fn manual_shed(&self) -> Option<Priority> {
        self.shed
    }

    /// The automatic step, for status and the simulation.
    pub fn auto_shed(&self) -> &AutoShed {
        &self.auto_shed
    }

    /// An operator shed (`Some(level)`) or unshed (`None`): counted and
    /// published like an automatic one.
    pub(super) fn manual_shed_changed(&mut self, level: Option<Priority>) {
        let units: Vec<String> = self
            .units()
            .filter(|(_, u)| !u.removed)
            .filter(|(_, u)| level.is_some_and(|l| u.effective().priority <= l))
            .map(|(_, u)| u.effective().name.clone())
            .collect();
        let word = |l: Priority| format!("{l:?}").to_lowercase();
        let detail = match level {
            None if self.auto_shed.step() > 0 => Some(format!(
                "automatic shedding applies again: {} shed under pressure",
                level_word(self.auto_shed.step())
            )),
            _ => None,
        };
        if level.is_some() {
            self.auto_shed.counters.manual_sheds += 1;
        } else {
            self.auto_shed.counters.manual_unsheds += 1;
        }
        self.out
            .push(super::Action::Publish(crate::protocol::EventBody::Shed {
                by: "operator".to_string(),
                shed: level.is_some(),
                level: match level {
                    Some(l) => format!("at or below {}", word(l)),
                    None => "none".to_string(),
                },
                resource: None,
                units,
                detail,
            }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::UnitKind;

    fn policy() -> ShedPolicy {
        ShedPolicy {
            window: Duration::from_secs(2),
            shed_after: Duration::from_secs(4),
            restore_after: Duration::from_secs(10),
            jitter: Duration::from_secs(3),
        }
    }

    #[test]
    fn sheds_after_sustained_pressure_and_restores_after_quiet() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut a = AutoShed::new(Some(policy()));
        assert_eq!(a.next_deadline(), None);
        assert_eq!(a.pressure(s(0), Resource::Cpu, true, 0), None);
        assert_eq!(a.pressure(s(2), Resource::Cpu, true, 0), None);
        assert_eq!(
            a.pressure(s(4), Resource::Cpu, true, 0),
            Some(Change::Shed {
                step: 1,
                resource: Resource::Cpu
            })
        );
        // A gap longer than two windows starts the count again.
        assert_eq!(a.pressure(s(9), Resource::Memory, true, 0), None);
        assert_eq!(a.pressure(s(11), Resource::Memory, true, 0), None);
        assert_eq!(
            a.pressure(s(13), Resource::Memory, true, 0),
            Some(Change::Shed {
                step: 2,
                resource: Resource::Memory
            })
        );
        assert_eq!(a.pressure(s(17), Resource::Cpu, true, 0), None);
        // "low" events keep the restore away; only quiet restores.
        assert_eq!(a.pressure(s(20), Resource::Cpu, false, 0), None);
        assert_eq!(a.next_deadline(), Some(s(30)));
        assert_eq!(a.tick(s(29)), None);
        assert_eq!(a.tick(s(30)), Some(Change::Restore { step: 1 }));
        assert_eq!(a.next_deadline(), Some(s(40)));
        assert_eq!(a.tick(s(40)), Some(Change::Restore { step: 0 }));
        assert_eq!(a.next_deadline(), None);
        assert_eq!(a.counters.auto_sheds, 2);
        assert_eq!(a.counters.auto_restores, 2);
        assert_eq!(a.counters.pressure[0], [4, 1]);
    }

    #[test]
    fn disabled_counts_but_never_sheds_and_held_units_expire() {
        let t0 = Instant::now();
        let mut a = AutoShed::new(None);
        for i in 0..10 {
            assert_eq!(
                a.pressure(t0 + Duration::from_secs(i), Resource::Io, true, 0),
                None
            );
        }
        assert_eq!(a.next_deadline(), None);
        let mut b = AutoShed::new(Some(policy()));
        let mut rng = Rng::new(7);
        for i in 0..20 {
            b.hold(UnitId(i), t0, &mut rng);
        }
        let last = b.next_deadline();
        assert!(last.is_some_and(|t| t <= t0 + Duration::from_secs(3)));
        b.tick(t0 + Duration::from_secs(3));
        assert!((0..20).all(|i| b.held(UnitId(i)).is_none()));
    }

    #[test]
    fn steps_cover_optional_then_sheddable_normal_never_critical() {
        let mut s = UnitSpec::simple("x", UnitKind::Longrun, &["/bin/x"]);
        s.priority = Priority::Optional;
        assert!(!AutoShed::covers(0, &s) && AutoShed::covers(1, &s));
        s.priority = Priority::Normal;
        assert!(!AutoShed::covers(2, &s));
        s.sheddable = true;
        assert!(!AutoShed::covers(1, &s) && AutoShed::covers(2, &s));
        s.priority = Priority::Critical;
        assert!(!AutoShed::covers(2, &s));
    }
}
