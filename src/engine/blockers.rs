//! May this unit start automatically? — the one function that decides.
//!
//! Owns: `Blocker` and the written-down order of the decision:
//!
//!   shutdown → removed → maintenance lock (or unknown lock state) →
//!   operator stop → shed → mounts → requires ready → ordering (after/wants)
//!   → restart backoff → concurrency cap
//!
//! The first blockers are the ones no automatic path may override; the same
//! list is what `supctl why` prints, so what supd says and what it does
//! cannot drift apart. Must never: mutate state, or be bypassed by a start
//! path (every automatic start goes through `Engine::try_start`, which asks
//! this function first).

use std::time::Instant;

use crate::engine::locks::Holder;
use crate::mounts::MountProblem;
use crate::unit::{Priority, ReadyKind, UnitKind};

use super::unit_state::{UnitState, Want};
use super::{Engine, UnitId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    ShuttingDown,
    Removed,
    Locked {
        holders: Vec<Holder>,
    },
    /// The lock state could not be read; only essential units start.
    LockStateUnknown(String),
    OperatorStopped,
    Shed(Priority),
    /// Shed automatically under pressure (`[shed]`), at `step`; or, with
    /// `until`, released by a restore and starting at a jittered moment.
    Pressure {
        step: u8,
        until: Option<Instant>,
    },
    MountMissing(MountProblem),
    /// A `requires` dependency is not ready; `why` describes it.
    WaitingFor {
        unit: String,
        why: String,
    },
    /// An `after`/`wants` unit is still on its way up.
    Ordering {
        unit: String,
    },
    Backoff {
        until: Instant,
    },
    StartCap {
        cap: u32,
    },
}

impl Blocker {
    /// Blockers an operator `start` cannot push through.
    pub fn refuses_manual_start(&self) -> bool {
        matches!(
            self,
            Blocker::ShuttingDown
                | Blocker::Removed
                | Blocker::Locked { .. }
                | Blocker::LockStateUnknown(_)
        )
    }

    /// In words, for an operator; `unit` is the blocked unit, named in
    /// the hints (what to run to release it).
    pub fn describe(&self, unit: &str, now: Instant) -> String {
        match self {
            Blocker::ShuttingDown => "supd is shutting down".to_string(),
            Blocker::Removed => "its unit file was removed".to_string(),
            Blocker::Locked { holders } => {
                let who: Vec<String> = holders
                    .iter()
                    .map(|h| format!("{} ({})", h.holder, h.reason))
                    .collect();
                format!(
                    "under maintenance, held by {}; release with `supctl maintenance off {unit}`",
                    who.join(", ")
                )
            }
            Blocker::LockStateUnknown(why) => format!(
                "lock state unknown ({why}); only essential units start — see `supctl maintenance recover --help`"
            ),
            Blocker::OperatorStopped => {
                format!("stopped by an operator; `supctl start {unit}` brings it back")
            }
            Blocker::Shed(level) => {
                format!("shed (priority at or below {level:?}); `supctl unshed` brings it back")
            }
            Blocker::Pressure { step, until: None } => format!(
                "shed under pressure (step {step} of {}: [shed] in supd.toml); it starts again once pressure stays low",
                super::shed::MAX_STEP
            ),
            Blocker::Pressure { until: Some(t), .. } => format!(
                "pressure fell: starting in {:.1}s (restores are spread out)",
                t.saturating_duration_since(now).as_secs_f64()
            ),
            Blocker::MountMissing(p) => format!("waiting for mount: {p}"),
            Blocker::WaitingFor { unit: dep, why } if why.is_empty() => {
                format!("waiting for required unit {dep}")
            }
            Blocker::WaitingFor { unit: dep, why } => {
                format!("waiting for required unit {dep}: {why}")
            }
            Blocker::Ordering { unit: dep } => {
                format!("ordered after {dep}, which is still starting")
            }
            Blocker::Backoff { until } => format!(
                "restart backoff: next attempt in {:.1}s",
                until.saturating_duration_since(now).as_secs_f64()
            ),
            Blocker::StartCap { cap } => {
                format!("queued: {cap} units are already starting (max_parallel_starts)")
            }
        }
    }
}

impl Engine {
    /// Everything that keeps `id` from starting automatically now, in the
    /// decision order. Empty means it may start.
    pub(crate) fn start_blockers(&self, id: UnitId, now: Instant, all: bool) -> Vec<Blocker> {
        let mut out = Vec::new();
        macro_rules! block {
            ($b:expr) => {{
                out.push($b);
                if !all {
                    return out;
                }
            }};
        }
        let u = &self.units[id.0 as usize];
        // The spec itself is read only for a name (a lock, a blocker that
        // names a unit) or a mount; the rest comes from its copied scalars.
        let spec = u.effective();
        let hot = self.resolved.hot[id.0 as usize];
        if self.shutdown.is_some() {
            block!(Blocker::ShuttingDown);
        }
        if u.removed {
            block!(Blocker::Removed);
        }
        if !self.locks.is_empty()
            && let Some(holders) = self.locks.holders(&spec.name)
        {
            block!(Blocker::Locked { holders });
        }
        if let Some(why) = self.locks.unknown_reason()
            && !hot.essential
        {
            block!(Blocker::LockStateUnknown(why.to_string()));
        }
        if u.want == Want::Down {
            block!(Blocker::OperatorStopped);
        }
        if let Some(level) = self.shed
            && hot.priority <= level
        {
            block!(Blocker::Shed(level));
        }
        if self.shed.is_none() {
            if self.auto_shed.sheds_as(hot.priority, hot.sheddable) {
                block!(Blocker::Pressure {
                    step: self.auto_shed.step(),
                    until: None
                });
            } else if let Some(t) = self.auto_shed.held(id) {
                block!(Blocker::Pressure {
                    step: self.auto_shed.step(),
                    until: Some(t)
                });
            }
        }
        if let Some(p) = &u.mount_refused {
            block!(Blocker::MountMissing(p.clone()));
        }
        if hot.has_mounts {
            for m in &spec.mounts {
                if let Err(p) = self.mount_check(m) {
                    block!(Blocker::MountMissing(p));
                }
            }
        }
        // Dependencies by id (resolved at install, in the spec's order);
        // a name is read only for the blocker that names it.
        for (k, d) in self.resolved.requires.of(id).iter().enumerate() {
            let dep = self.resolved.requires.name(id, k);
            // The sentence costs allocations; the decision (all == false,
            // on every settle for every waiting unit) needs only the fact.
            let not_ready = if all {
                self.not_ready_why_id(*d, dep, now)
            } else {
                match d {
                    Some(d) if self.is_ready(*d) => None,
                    _ => Some(String::new()),
                }
            };
            if let Some(why) = not_ready {
                block!(Blocker::WaitingFor {
                    unit: dep.to_string(),
                    why
                });
            }
        }
        for (k, w) in self.resolved.part_of.of(id).iter().enumerate() {
            let whole = self.resolved.part_of.name(id, k);
            if let Some(why) = self.part_held_down_id(*w, whole) {
                block!(Blocker::WaitingFor {
                    unit: whole.to_string(),
                    why: format!("{why} (this unit is part_of it)")
                });
            }
        }
        for (k, d) in self.resolved.after_wants.of(id).iter().enumerate() {
            if d.is_some_and(|d| self.on_its_way_up_id(d, now)) {
                let dep = self.resolved.after_wants.name(id, k);
                block!(Blocker::Ordering {
                    unit: dep.to_string()
                });
            }
        }
        if let UnitState::Backoff { until } = u.state
            && until > now
        {
            block!(Blocker::Backoff { until });
        }
        if self.starting >= self.cfg.max_parallel_starts as usize
            && !matches!(u.state, UnitState::Starting { .. })
        {
            block!(Blocker::StartCap {
                cap: self.cfg.max_parallel_starts
            });
        }
        out
    }

    /// The blocker that decides now, with its sentence filled in (the
    /// decision itself skips building the sentence for a dependency).
    pub(crate) fn first_blocker(&self, id: UnitId, now: Instant) -> Option<Blocker> {
        let mut b = self.start_blockers(id, now, false).into_iter().next()?;
        if let Blocker::WaitingFor { unit, why } = &mut b
            && why.is_empty()
        {
            // Only the `requires` loop leaves `why` empty, at its first
            // entry not ready: that entry's id, if it names `unit`.
            let requires = &self.resolved.requires;
            let entry = requires
                .of(id)
                .iter()
                .enumerate()
                .find(|(_, d)| !matches!(d, Some(d) if self.is_ready(*d)))
                .filter(|(k, _)| requires.name(id, *k) == unit.as_str());
            *why = match entry {
                Some((_, d)) => self.not_ready_why_id(*d, unit, now),
                None => self.not_ready_why(unit, now),
            }
            .unwrap_or_else(|| "ready now".to_string());
        }
        Some(b)
    }

    /// For `part_of`: is `whole` (resolved to `id`; None: not defined) held
    /// down by an operator (stopped, locked, removed)? Then its parts are
    /// too.
    pub(crate) fn part_held_down_id(
        &self,
        id: Option<UnitId>,
        whole: &str,
    ) -> Option<&'static str> {
        let id = id?;
        let w = &self.units[id.0 as usize];
        if w.removed {
            Some("removed")
        } else if self.locks.wanted.contains_key(whole) {
            Some("under maintenance")
        } else if w.want == Want::Down {
            Some("stopped by an operator")
        } else {
            None
        }
    }

    /// Ready for dependents: a ready longrun that is not about to stop, or a
    /// oneshot that completed.
    pub(crate) fn is_ready(&self, id: UnitId) -> bool {
        let u = &self.units[id.0 as usize];
        if u.stop_pending.is_some() || u.restart_requested || u.all_gone() {
            return false;
        }
        match &u.state {
            UnitState::Running { ready, .. } => *ready,
            UnitState::Done | UnitState::Skipped { .. } => true,
            UnitState::Inactive
            | UnitState::Starting { .. }
            | UnitState::Stopping { .. }
            | UnitState::Draining { .. }
            | UnitState::Backoff { .. }
            | UnitState::Failed { .. }
            | UnitState::Exited { .. } => false,
        }
    }

    /// Still up for the dependents already running: a unit that is merely
    /// not ready (its readiness probe fails) keeps them; one that stops or
    /// died does not.
    pub(crate) fn is_up(&self, id: UnitId) -> bool {
        let u = &self.units[id.0 as usize];
        if u.stop_pending.is_some() || u.restart_requested || u.all_gone() {
            return false;
        }
        match &u.state {
            UnitState::Running { .. } | UnitState::Done | UnitState::Skipped { .. } => true,
            UnitState::Inactive
            | UnitState::Starting { .. }
            | UnitState::Stopping { .. }
            | UnitState::Draining { .. }
            | UnitState::Backoff { .. }
            | UnitState::Failed { .. }
            | UnitState::Exited { .. } => false,
        }
    }

    /// None when `dep` is ready; else why not, in words.
    fn not_ready_why(&self, dep: &str, now: Instant) -> Option<String> {
        self.not_ready_why_id(self.by_name.get(dep).copied(), dep, now)
    }

    /// `not_ready_why` of `dep` already resolved to `id` (None: not
    /// defined), as `Resolved` holds it: no hashing of the name into
    /// `by_name` (at ten thousand units a cold bucket and a cold key to
    /// compare, for every dependent a crash leaves waiting).
    fn not_ready_why_id(&self, id: Option<UnitId>, dep: &str, now: Instant) -> Option<String> {
        let Some(id) = id else {
            return Some("not defined".to_string());
        };
        if self.is_ready(id) {
            return None;
        }
        let d = &self.units[id.0 as usize];
        Some(match &d.state {
            UnitState::Starting { .. } => match d.effective().ready.kind {
                _ if d.effective().kind == UnitKind::Oneshot => "still running".to_string(),
                ReadyKind::Notify => "started, waiting for its READY=1".to_string(),
                ReadyKind::Probe => "started, waiting for its first passing probe".to_string(),
                ReadyKind::Fd => "started, waiting for its readiness line".to_string(),
                ReadyKind::Started => "starting".to_string(),
            },
            UnitState::Running { .. } if d.stop_pending.is_none() => {
                "running but not ready".to_string()
            }
            UnitState::Running { .. } | UnitState::Stopping { .. } | UnitState::Draining { .. } => {
                "stopping".to_string()
            }
            UnitState::Failed { reason } => format!("failed: {reason}"),
            UnitState::Exited { status } => format!("{status}"),
            UnitState::Backoff { until } => format!(
                "restarting in {:.1}s",
                until.saturating_duration_since(now).as_secs_f64()
            ),
            UnitState::Done => "completed".to_string(),
            UnitState::Skipped { why } => format!("skipped: {why}"),
            // One level only: a chain of waiting units is described link
            // by link (each unit's own line names its own blocker), never
            // by recursion down the whole chain.
            UnitState::Inactive => match self.start_blockers(id, now, false).first() {
                Some(b) => b.describe(dep, now),
                None => "about to start".to_string(),
            },
        })
    }

    /// For `after`/`wants` ordering: is `dep` going to come up soon, so we
    /// should wait for it? Units blocked by something external (lock,
    /// operator stop, shed, mount) are not waited for: ordering is not a
    /// dependency.
    fn on_its_way_up_id(&self, id: UnitId, now: Instant) -> bool {
        let d = &self.units[id.0 as usize];
        match &d.state {
            UnitState::Running { ready, .. } => !*ready && d.stop_pending.is_none(),
            UnitState::Starting { .. } | UnitState::Backoff { .. } => true,
            UnitState::Stopping { .. } | UnitState::Draining { .. } => d.restart_requested,
            UnitState::Done
            | UnitState::Failed { .. }
            | UnitState::Exited { .. }
            | UnitState::Skipped { .. } => false,
            UnitState::Inactive => {
                if d.removed || d.want == Want::Down || self.shutdown.is_some() {
                    return false;
                }
                let spec = d.effective();
                let hot = self.resolved.hot[id.0 as usize];
                if (!self.locks.is_empty() && self.locks.holders(&spec.name).is_some())
                    || (self.locks.unknown_reason().is_some() && !hot.essential)
                    || self.shed.is_some_and(|l| hot.priority <= l)
                    || (self.shed.is_none() && self.auto_shed.sheds_as(hot.priority, hot.sheddable))
                    || (hot.has_mounts && spec.mounts.iter().any(|m| self.mount_check(m).is_err()))
                {
                    return false;
                }
                let _ = now;
                true
            }
        }
    }
}
