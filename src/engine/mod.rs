//! The engine: supd's pure state machine.
//!
//! Owns: every decision — which unit starts, stops, restarts, fails; what a
//! lock means; what an operator is told. `Engine::handle(now, Event)` returns
//! the `Action`s to carry out; `next_deadline()` says when to call again.
//! Must never: do I/O, read a clock, spawn tasks, or panic on any event
//! sequence (the driver runs it under `catch_unwind`, but PID 1 should not
//! need that).
//!
//! How a decision is made. After every event the engine settles: it walks
//! the units in reverse dependency order deciding stops (so dependents stop
//! before what they require), then in dependency order deciding starts,
//! and repeats until nothing changes (bounded by the unit count). Each walk
//! is a loop over a precomputed order — no recursion in PID 1. Whether a unit
//! may start is one function, `start_blockers` (blockers.rs), whose order
//! is: shutdown, removed, maintenance lock, operator stop, shed, mounts,
//! requires ready, ordering, backoff, cap. `supctl why` prints that list.
//!
//! Which units a walk asks (issue 17). `SettleMode::Full` asks every unit
//! on every pass: O(units) per event, 640 events/s at 10,000 units. The
//! default, `SettleMode::Incremental`, asks only the units in two dirty
//! sets (positions in the walk order), in the same order the full walk
//! would, so it takes the same decisions: a unit marked behind the walk
//! waits for the next pass, exactly as it would there. The sets are seeded
//! by what can change a decision (dinit's propagation queue, s6-rc's
//! "examine" list): an event marks its unit and that unit's neighbours
//! (what requires, wants or is ordered after it, what it is ordered after,
//! its `part_of` parts) — before and after it is applied; every state change
//! and every change of `stop_pending` marks them again; a timer that fires
//! marks its unit; a backoff that runs out marks its unit; a start slot
//! opening marks the units queued behind the cap. What every unit reads
//! (shutdown, shed, the mount table, the lock state, a reload, maintenance
//! commands) marks all. No counter summarises state — a decision is always
//! taken afresh by the one function — so a missed mark can only delay a
//! decision, and the simulation's oracle (sim.rs) runs a full-settle engine
//! beside the incremental one and fails on the first differing action or
//! state. A new input to `stop_cause`/`start_blockers` needs its mark here
//! (`event_scope`, `mark`); the oracle names the seed that shows a missing
//! one.

pub mod action;
pub mod blockers;
pub mod event;
pub mod locks;
pub mod restart;
pub mod shed;
pub mod timeline;
pub mod timers;
pub mod unit_state;

mod commands;
mod names;
mod posset;
mod prefetch;
pub use commands::rfc3339;
mod status;
pub use status::{EngineMetrics, STATE_WORDS, ShedMetrics, UnitMetrics};

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mounts::{MountProblem, MountTable};
use crate::protocol::{EventBody, Request, Response};
use crate::unit::{
    KillMode, OnLoss, OnUnhealthy, ReadyKind, RestartPolicy, UnitKind, UnitSet, UnitSpec,
};

pub use action::{Action, AuditEntry};
pub use blockers::Blocker;
pub use event::{
    Event, ExitStatus, LocksLoad, NotifyMsg, PeerInfo, ProbeKind, ReqId, ShutdownKind,
};
use locks::{LockModel, LockState};
use restart::Rng;
use status::StateWord;
use timers::{TimerKind, TimerTable};
pub use unit_state::{FailReason, StopReason, Unit, UnitState, Want};

/// Cache lines at the start of a `Unit` that an event about its run reads
/// (its `repr(C)` order puts those fields first: through the probe
/// counters), and that a decision reads (through `next_spec`).
const HOT_LINES: usize = 6;
const DECISION_LINES: usize = 3;
/// Action slots `out` keeps between events (an `Action` is 144 bytes).
const OUT_KEEP: usize = 64;
const _: () = assert!(
    std::mem::offset_of!(Unit, readiness) + std::mem::size_of::<unit_state::HealthRt>()
        <= HOT_LINES * 64
);
const _: () = assert!(
    std::mem::offset_of!(Unit, next_spec) + std::mem::size_of::<Option<Arc<UnitSpec>>>()
        <= DECISION_LINES * 64
);
// A liveness result past the state (lines 0 and 1): `health`, and
// `probes` up to the readiness limits' first word (`has_readiness`), in
// lines 2 and 3.
const _: () = assert!(std::mem::offset_of!(Unit, health) >= 2 * 64);
const _: () = assert!(
    std::mem::offset_of!(Unit, probes) + std::mem::offset_of!(unit_state::ProbeHot, readiness) + 16
        <= 4 * 64
);

/// How long the mount table may be unreadable before units with
/// `on_loss = "stop"` are stopped. Starts are refused at once; the grace
/// keeps a one-off read error (the driver retries within a second) from
/// bouncing every database, while a lasting one cannot leave a service
/// writing into the directory under a mount point that may be gone.
pub const MOUNT_UNKNOWN_GRACE: Duration = Duration::from_secs(2);

/// The mount table could not be read (see `Event::MountTableUnknown`).
#[derive(Debug, Clone, PartialEq)]
struct MountUnknown {
    why: String,
    /// When running units with `on_loss = "stop"` are stopped.
    stop_at: Instant,
    /// `stop_at` has passed.
    expired: bool,
}

/// Index of a unit; never reused within one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitId(pub u32);

/// One incarnation of a unit's process. Globally unique per engine, so a
/// result tagged with an old run is recognisably stale.
///
/// The low 32 bits are the unit's id, the high 32 a sequence number the
/// engine hands out (`Engine::new_run`): an event about a run finds its
/// unit by index, and is about the unit's current run exactly when the
/// unit's state holds that run (`Engine::run_unit`) — no map from runs to
/// units to keep in step, nor to look up per event (at ten thousand units
/// that lookup missed the cache on every probe result). The sequence wraps
/// after 2^32 runs; a stale event could then be taken for a current run
/// only if it arrived 4 billion runs late, for the same unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub u64);

impl RunId {
    /// The unit this run belongs to.
    pub fn unit(self) -> UnitId {
        UnitId(self.0 as u32)
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Units in `starting` at once (invariant 6).
    pub max_parallel_starts: u32,
    /// Seed for restart jitter.
    pub seed: u64,
    /// supd's containment in words, for `status` (the driver's finding).
    pub containment: Option<String>,
    /// Pressure-aware shedding (`[shed]` in supd.toml), when configured.
    pub shed: Option<shed::ShedPolicy>,
    /// How `settle` finds the units to decide on (see `SettleMode`).
    pub settle: SettleMode,
}

/// How the engine settles after an event. Both decide the same way (one
/// `stop_cause`, one `start_blockers`); they differ only in which units
/// they ask. The simulation runs one of each side by side and asserts
/// identical actions and states after every step (the oracle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SettleMode {
    /// Every unit on every pass: O(units) per event. The reference.
    Full,
    /// Only the units the event could have affected (a dirty set seeded
    /// by the event, grown by each change): O(affected) per event.
    #[default]
    Incremental,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_parallel_starts: 16,
            seed: 0x5eed,
            containment: None,
            shed: None,
            settle: SettleMode::default(),
        }
    }
}

/// What a re-executed supd needs from the old image that neither the
/// cgroups (runs, main pids) nor the lock file (locks) say: operator
/// intent, failures, restart counts, shedding.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Handoff {
    pub units: Vec<HandoffUnit>,
    pub shed: Option<crate::unit::Priority>,
    /// The locks, when known: the new image must not wait for the lock
    /// file to hold a locked unit down (in that window only essential
    /// units may start — a locked one among them would).
    #[serde(default)]
    pub locks: Option<locks::LockMap>,
    /// Automatic shedding's step and the milliseconds until its restore
    /// was due (absent from an older image: nothing shed).
    #[serde(default)]
    pub auto_shed_step: u8,
    #[serde(default)]
    pub auto_shed_restore_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HandoffUnit {
    pub name: String,
    /// An operator stopped it: nothing automatic may start it.
    pub down: bool,
    /// It is in `failed`, for this reason.
    pub failed: Option<String>,
    pub restarts: u32,
    /// Its main process (how a re-executed supd without cgroups finds its
    /// runs: they are still its children).
    #[serde(default)]
    pub pid: Option<i32>,
    /// The restart budget and backoff, so a re-exec does not reset them:
    /// consecutive failures, ages of the automatic starts in the window,
    /// and the backoff left before the next start (all in ms).
    #[serde(default)]
    pub attempt: u32,
    #[serde(default)]
    pub window_ages_ms: Vec<u64>,
    #[serde(default)]
    pub backoff_ms: Option<u64>,
    /// Its run was ready (dependents may rely on it); a run still starting
    /// is taken over as starting.
    #[serde(default)]
    pub ready: bool,
    /// Its run was being stopped (the stop signal already sent): the new
    /// image must finish that stop, not take the run over as starting.
    #[serde(default)]
    pub stopping: bool,
}

/// The units an event is about (see `Engine::event_scope`).
#[derive(Debug, Clone, Copy)]
enum Scope {
    None,
    Unit(UnitId),
    /// The mount table (or whether it can be read) changed: what reads it
    /// is the units requiring a mount (their own checks) and, through
    /// `mark`, the units ordered after them (`on_its_way_up` reads their
    /// mounts).
    Mounts,
    All,
}

/// A reply the engine owes once a condition holds.
#[derive(Debug, Clone, PartialEq)]
enum Pending {
    /// `stop`/`restart`: answer when the unit has no process.
    Stopped {
        req: ReqId,
        unit: UnitId,
        message: String,
    },
    /// `restart`: answer when the run that was current has ended (the new
    /// one is usually spawned in the same settle).
    Restarted {
        req: ReqId,
        unit: UnitId,
        old: Option<RunId>,
        message: String,
    },
    /// `maintenance on`: answer when the lock is durable and the unit down.
    LockOn {
        req: ReqId,
        unit: UnitId,
        holder: String,
        version: u64,
        message: String,
    },
    /// `maintenance off` / `recover`: answer when the change is durable.
    LockWrite {
        req: ReqId,
        unit: Option<UnitId>,
        version: u64,
        message: String,
        /// What to say if the write fails.
        kind: WriteKind,
    },
}

/// A stop cause as `stop_cause_ref` finds it: a dependency's name still
/// borrowed from the names table.
enum Cause<'a> {
    Reason(StopReason),
    Dependency(&'a str),
}

impl Cause<'_> {
    fn owned(self) -> StopReason {
        match self {
            Cause::Reason(r) => r,
            Cause::Dependency(name) => StopReason::DependencyStopped(name.to_string()),
        }
    }

    /// `self.owned() == *r`, without building it.
    fn is(&self, r: &StopReason) -> bool {
        match (self, r) {
            (Cause::Dependency(name), StopReason::DependencyStopped(n)) => n == name,
            (Cause::Dependency(_), _) => false,
            (Cause::Reason(c), r) => c == r,
        }
    }
}

/// A `supctl reload-unit` waiting for a `notify_reload` unit to confirm.
#[derive(Debug, Clone)]
struct ReloadWait {
    req: ReqId,
    unit: UnitId,
    run: RunId,
    /// When the reload was asked: a RELOADING=1 stamped earlier is stale.
    since: Instant,
    deadline: Instant,
    /// RELOADING=1 seen for this reload.
    reloading: bool,
    /// What was done, for the answer.
    text: String,
}

/// What a pending lock write was for, to word its failure.
#[derive(Debug, Clone, PartialEq)]
enum WriteKind {
    Release { unit: String, holders: String },
    Recover,
}

/// First retry of a failed lock write, doubled up to `LOCK_RETRY_MAX`.
pub const LOCK_RETRY_MIN: Duration = Duration::from_secs(1);
pub const LOCK_RETRY_MAX: Duration = Duration::from_secs(30);

/// A lock write failed; the engine writes the wanted state again later.
#[derive(Debug, Clone, PartialEq)]
struct LockRetry {
    /// The last write error, for `status`.
    why: String,
    /// When to write again; None while a write is in flight.
    at: Option<Instant>,
    backoff: Duration,
}

#[derive(Debug, Clone)]
pub struct Engine {
    units: Vec<Unit>,
    by_name: HashMap<String, UnitId>,
    /// Units that just entered `failed` and name `on_failure` units,
    /// handled by the next settle pass.
    on_failure: Vec<UnitId>,
    /// `supctl disable`d units (durable in the state directory): not
    /// started at boot unless an enabled unit needs them.
    disabled: std::collections::BTreeSet<String>,
    /// Units held down at this boot only because they are disabled: a
    /// running copy found at start-up (after a crash or `reexec`) is
    /// adopted as wanted up, never stopped for being disabled.
    boot_down: std::collections::BTreeSet<UnitId>,
    /// `supctl reload-unit` of `notify_reload` units, answered on
    /// READY=1 after RELOADING=1, at the timeout, or when the run ends.
    reload_waits: Vec<ReloadWait>,
    /// Start order over defined units (dependencies first).
    order: Vec<UnitId>,
    /// `requires` reversed: who must stop before this unit does.
    required_by: names::IdLists,
    /// requires + wants + after reversed: who stops first at shutdown.
    ordered_before: names::IdLists,
    /// requires + wants + after: whom this unit's decisions read.
    deps: Vec<Vec<UnitId>>,
    /// `part_of` reversed: the units whose decisions read this one's
    /// operator state (and that restart with it).
    parts: Vec<Vec<UnitId>>,
    /// `reload_propagated_from` reversed.
    reload_parts: Vec<Vec<UnitId>>,
    /// What `mark` touches besides the unit itself — `ordered_before`,
    /// `deps` and `parts` of each unit, one after the other in one array
    /// (`marks[marks_at[i]..marks_at[i + 1]]`): one contiguous read per
    /// event instead of three separately allocated lists.
    marks: Vec<UnitId>,
    marks_at: Vec<u32>,
    /// Each unit's dependency names as ids (what the decisions read).
    resolved: names::Resolved,
    /// Units whose effective spec requires a mount (what a mount table
    /// change marks, instead of every unit).
    mount_users: Vec<UnitId>,
    /// Each unit's index in `order` (what the dirty sets hold).
    pos: Vec<u32>,
    /// The incremental settle's work: positions in `order` of the units
    /// whose stop (resp. start) decision may have changed since it was
    /// last taken. Walked in the same order as the full passes.
    dirty_stop: posset::PosSet,
    dirty_start: posset::PosSet,
    /// Units that may have changed since the last `observe` (what it
    /// compares against `seen`, instead of every unit).
    /// (Unit ids.)
    touched: posset::PosSet,
    /// `observe`'s list of the touched units, kept for its capacity.
    touched_list: Vec<UnitId>,
    /// Positions (as in `dirty_start`) of units whose last start decision
    /// was "queued behind the cap". `start_pass_dirty` walks them beside
    /// the dirty set, in order, only while a slot is free: a slot that
    /// opens asks the first waiters until the cap is full again, not every
    /// waiter (touching all of them made a 4,000-unit boot O(N²/cap)). A
    /// waiter's other blockers cannot change unseen: any event that could
    /// add one marks the unit, and it is asked as a dirty unit.
    cap_waiters: posset::PosSet,
    /// A start slot opened during this settle: the next pass must run (and
    /// walk the waiters from the first position).
    cap_opened: bool,
    /// Units in `Backoff`, by when it ends (their decision changes with
    /// time alone, at that instant).
    backoffs: std::collections::BTreeSet<(Instant, UnitId)>,
    /// Units whose state has a process, kept in step by `set_state` (so
    /// "has shutdown finished?" is not a walk over every unit per event).
    with_process: usize,
    /// Stop and start decisions taken so far (what a test of "an event
    /// costs what it affects" counts).
    pub(crate) asked: u64,
    /// The sequence part of the next `RunId` (see `RunId`).
    next_run: u32,
    mounts: MountTable,
    /// Set while the mount table cannot be read: `mounts` is stale and
    /// every requirement counts as missing.
    mount_unknown: Option<MountUnknown>,
    locks: LockModel,
    /// Units left out of a lenient boot load, and why (cleared by a
    /// successful reload).
    skipped: crate::unit::load::Skipped,
    /// Set after a failed lock write until a write succeeds (issue 13:
    /// one ENOSPC must neither freeze the engine nor wait for an operator).
    lock_retry: Option<LockRetry>,
    timers: TimerTable,
    pending: Vec<Pending>,
    rng: Rng,
    cfg: EngineConfig,
    shutdown: Option<ShutdownKind>,
    shutdown_done: bool,
    shed: Option<crate::unit::Priority>,
    /// Automatic shedding under pressure (shed.rs); an operator's `shed`
    /// level, when set, wins over it.
    auto_shed: shed::AutoShed,
    /// Units in `Starting`, kept in step by `set_state` (the cap is checked
    /// for every unit on every pass).
    starting: usize,
    /// From a re-exec's hand-off, until the unit is adopted: was its run
    /// ready?
    resumed_ready: HashMap<String, bool>,
    /// Units whose run the hand-off says was being stopped.
    resumed_stopping: HashSet<String>,
    /// Each unit's (state word, ready) as last reported: a change is
    /// history (`since`) and an event for subscribers.
    seen: Vec<(StateWord, bool)>,
    /// Lock holders per unit and the lock-state problem as last published.
    seen_locks: std::collections::BTreeMap<String, Vec<String>>,
    seen_lock_state: Option<Option<String>>,
    /// The first `now` the engine was given (supd's start, for `since` of
    /// units that never changed).
    booted: Option<Instant>,
    /// What each unit waited on and when (`supctl analyze`); watches only.
    timeline: timeline::Timeline,
    /// The lock state has been loaded (or found unreadable) once: before
    /// that nothing could start, so nothing has settled.
    locks_looked_at: bool,
    /// The actions decided for the event being handled. Kept between
    /// events (up to `OUT_KEEP`, see `take_out`): a vector grown from empty
    /// on every event reallocated at the fifth action to 1,152 bytes, a
    /// request glibc serves only after consolidating its fast bins — an
    /// exit and its restart paid ~8 cache misses for that at 10,000 units.
    out: Vec<Action>,
}

impl Engine {
    pub fn new(set: UnitSet, cfg: EngineConfig, mounts: MountTable) -> Engine {
        let mut e = Engine {
            units: Vec::new(),
            by_name: HashMap::new(),
            on_failure: Vec::new(),
            reload_waits: Vec::new(),
            disabled: Default::default(),
            boot_down: Default::default(),
            order: Vec::new(),
            required_by: names::IdLists::default(),
            ordered_before: names::IdLists::default(),
            deps: Vec::new(),
            parts: Vec::new(),
            reload_parts: Vec::new(),
            marks: Vec::new(),
            marks_at: Vec::new(),
            resolved: Default::default(),
            mount_users: Vec::new(),
            pos: Vec::new(),
            dirty_stop: Default::default(),
            dirty_start: Default::default(),
            touched: Default::default(),
            touched_list: Vec::new(),
            cap_waiters: Default::default(),
            cap_opened: false,
            backoffs: Default::default(),
            asked: 0,
            with_process: 0,
            next_run: 1,
            mounts,
            mount_unknown: None,
            locks: LockModel::new(),
            lock_retry: None,
            skipped: Default::default(),
            timers: TimerTable::default(),
            pending: Vec::new(),
            rng: Rng::new(cfg.seed),
            auto_shed: shed::AutoShed::new(cfg.shed),
            cfg,
            shutdown: None,
            shutdown_done: false,
            shed: None,
            starting: 0,
            resumed_ready: HashMap::new(),
            resumed_stopping: HashSet::new(),
            seen: Vec::new(),
            seen_locks: std::collections::BTreeMap::new(),
            seen_lock_state: None,
            booted: None,
            timeline: timeline::Timeline::default(),
            locks_looked_at: false,
            out: Vec::new(),
        };
        e.install(set);
        e
    }

    /// Feed one event; get the actions to carry out, in order.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        self.decide(now, std::iter::once(event));
        self.take_out()
    }

    /// Feed several events that happened together (e.g. the spawner's
    /// answers to one batch of spawns, or one reaper drain), then decide
    /// once. Equivalent to feeding them one by one, minus the intermediate
    /// settles: at a thousand units that turns a quadratic start-up into a
    /// linear one.
    pub fn handle_many(&mut self, now: Instant, events: Vec<Event>) -> Vec<Action> {
        self.decide(now, events);
        self.take_out()
    }

    /// `handle`, with the actions appended to `acts`: a caller that keeps
    /// `acts` (emptied) from one event to the next allocates nothing for
    /// them. A fresh vector of exactly their number per event was, at
    /// 10,000 units, a cold allocation and free per exit (and at eight
    /// actions a ≥ 1 KiB request, for which glibc first consolidates its
    /// fast bins).
    pub fn handle_into(&mut self, now: Instant, event: Event, acts: &mut Vec<Action>) {
        self.decide(now, std::iter::once(event));
        self.hand_out(acts);
    }

    /// `handle_many`, with the actions appended to `acts` (`handle_into`).
    pub fn handle_many_into(&mut self, now: Instant, events: Vec<Event>, acts: &mut Vec<Action>) {
        self.decide(now, events);
        self.hand_out(acts);
    }

    /// Apply `events` in order, then decide once; the actions wait in
    /// `out`.
    fn decide(&mut self, now: Instant, events: impl IntoIterator<Item = Event>) {
        self.booted.get_or_insert(now);
        self.timeline.tick(now);
        for ev in events {
            self.on_event(now, ev);
        }
        self.expire_mount_grace(now);
        self.retry_lock_write(now);
        self.settle(now);
        self.observe(now);
    }

    /// The actions decided, handed out in a vector of exactly their number
    /// (one allocation, no growth) while `out` keeps its room for the next
    /// event; a large batch (boot, shutdown) is handed over whole instead,
    /// so `out` never holds more than `OUT_KEEP` slots between events.
    fn take_out(&mut self) -> Vec<Action> {
        if self.out.len() > OUT_KEEP {
            return std::mem::take(&mut self.out);
        }
        let v = self.out.drain(..).collect();
        self.out.shrink_to(OUT_KEEP);
        v
    }

    /// The actions decided, moved to the end of `acts`; `out` keeps (at
    /// most `OUT_KEEP` slots of) its room.
    fn hand_out(&mut self, acts: &mut Vec<Action>) {
        if acts.is_empty() && self.out.len() > OUT_KEEP {
            // A boot's or a shutdown's batch: no copy.
            std::mem::swap(acts, &mut self.out);
        } else {
            acts.append(&mut self.out);
        }
        self.out.shrink_to(OUT_KEEP);
    }

    /// After deciding: note which units changed state (their `since`) and
    /// publish what changed — states, lock holders, the lock state.
    fn observe(&mut self, now: Instant) {
        // Locks first: a lock taken is the cause of the stop that follows.
        let problem = self.locks.unknown_reason().map(str::to_string);
        if self.seen_lock_state.as_ref() != Some(&problem) {
            if self.seen_lock_state.is_some() {
                self.out.push(Action::Publish(EventBody::LockState {
                    ok: problem.is_none(),
                    problem: problem.clone(),
                }));
            }
            self.seen_lock_state = Some(problem);
        }
        let mut names: Vec<String> = self.locks.wanted.keys().cloned().collect();
        names.extend(self.locks.durable.keys().cloned());
        names.extend(self.seen_locks.keys().cloned());
        names.sort();
        names.dedup();
        for unit in names {
            let holders: Vec<String> = self
                .locks
                .holders(&unit)
                .unwrap_or_default()
                .into_iter()
                .map(|h| h.holder)
                .collect();
            let before = self.seen_locks.get(&unit).cloned().unwrap_or_default();
            if before == holders {
                continue;
            }
            if holders.is_empty() {
                self.seen_locks.remove(&unit);
            } else {
                self.seen_locks.insert(unit.clone(), holders.clone());
            }
            self.out
                .push(Action::Publish(EventBody::Lock { unit, holders }));
        }
        // Only a unit marked since the last call can have changed (every
        // change to a state, `want`, `stop_pending` or a lock marks it);
        // the full mode looks at all of them, as the oracle's reference.
        let mut ids = std::mem::take(&mut self.touched_list);
        ids.clear();
        match self.cfg.settle {
            SettleMode::Full => ids.extend((0..self.units.len() as u32).map(UnitId)),
            SettleMode::Incremental => ids.extend(self.touched.iter().map(UnitId)),
        }
        match self.cfg.settle {
            SettleMode::Full => self.touched.clear(),
            SettleMode::Incremental => {
                for id in &ids {
                    self.touched.remove(id.0);
                }
            }
        }
        for &id in &ids {
            let i = id.0 as usize;
            let cur = (self.state_of(id), self.is_ready(id));
            let from = match self.seen.get(i) {
                Some(prev) if *prev == cur => continue,
                Some(prev) => Some(prev.0),
                None => None,
            };
            match self.seen.get_mut(i) {
                Some(s) => *s = cur,
                None => self.seen.push(cur),
            }
            self.units[i].history.since = Some(now);
            if let Some(from) = from {
                let u = &self.units[i];
                let detail = self.detail(id, now).or_else(|| match cur.0 {
                    // Why it stopped, when the state itself does not say.
                    StateWord::Waiting
                    | StateWord::Stopped
                    | StateWord::Backoff
                    | StateWord::Exited
                    | StateWord::Failed => u
                        .history
                        .last_error
                        .as_ref()
                        .map(|(e, _)| Cow::Owned(e.clone())),
                    _ => None,
                });
                self.out.push(Action::Publish(EventBody::State {
                    unit: self.resolved.names.shared(id),
                    from: Cow::Borrowed(from.as_str()),
                    to: Cow::Borrowed(cur.0.as_str()),
                    ready: cur.1,
                    pid: u.state.pid(),
                    detail,
                }));
            }
        }
        self.touched_list = ids;
    }

    /// Publish every required mount that appeared or was lost between two
    /// tables.
    fn publish_mount_changes(&mut self, old: &MountTable) {
        let mut reqs: Vec<&crate::unit::MountReq> = Vec::new();
        for u in self.units.iter().filter(|u| !u.removed) {
            for m in &u.effective().mounts {
                if !reqs.contains(&m) {
                    reqs.push(m);
                }
            }
        }
        let mut events = Vec::new();
        for m in reqs {
            let was = old.check(m).is_ok();
            match self.mounts.check(m) {
                Ok(()) if !was => events.push(EventBody::Mount {
                    path: m.path.display().to_string(),
                    present: true,
                    problem: None,
                }),
                Err(p) if was => events.push(EventBody::Mount {
                    path: m.path.display().to_string(),
                    present: false,
                    problem: Some(p.to_string()),
                }),
                _ => {}
            }
        }
        self.out.extend(events.into_iter().map(Action::Publish));
    }

    /// Record the most recent failure of a unit, in words.
    fn note_error(&mut self, id: UnitId, now: Instant, text: String) {
        self.units[id.0 as usize].history.last_error = Some((text, now));
    }

    /// `note_error` of `text`'s words, written over the unit's last error
    /// in its own buffer: a unit that keeps failing (a crash loop) neither
    /// frees nor allocates here. At ten thousand units the old string lay
    /// anywhere in a heap of them: freeing it and growing a new one from
    /// empty was a third of a crash's allocator time.
    fn note_error_of(&mut self, id: UnitId, now: Instant, text: &dyn std::fmt::Display) {
        use std::fmt::Write as _;
        let slot = &mut self.units[id.0 as usize].history.last_error;
        match slot {
            Some((buf, at)) => {
                buf.clear();
                // Writing into a String cannot fail.
                let _ = write!(buf, "{text}");
                *at = now;
            }
            None => *slot = Some((text.to_string(), now)),
        }
    }

    /// When the engine next needs a `Tick`.
    pub fn next_deadline(&self) -> Option<Instant> {
        let grace = self
            .mount_unknown
            .as_ref()
            .filter(|m| !m.expired)
            .map(|m| m.stop_at);
        // While a write is in flight its result decides (a due retry
        // could not act, and a deadline that cannot act is a busy loop).
        let retry = self
            .lock_retry
            .as_ref()
            .and_then(|r| r.at)
            .filter(|_| self.locks.inflight.is_empty());
        self.timers
            .earliest()
            .into_iter()
            .chain(grace)
            .chain(retry)
            .chain(self.auto_shed.next_deadline())
            .min()
    }

    pub fn unit_id(&self, name: &str) -> Option<UnitId> {
        self.by_name.get(name).copied()
    }

    pub fn unit(&self, id: UnitId) -> &Unit {
        &self.units[id.0 as usize]
    }

    pub fn units(&self) -> impl Iterator<Item = (UnitId, &Unit)> {
        self.units
            .iter()
            .enumerate()
            .map(|(i, u)| (UnitId(i as u32), u))
    }

    pub fn mounts(&self) -> &MountTable {
        &self.mounts
    }

    /// The disabled units read at boot, before the first event: each one
    /// that no enabled unit requires or wants (transitively) is left down
    /// (as after an operator's stop: `supctl start` starts it).
    pub fn set_disabled(&mut self, disabled: std::collections::BTreeSet<String>) {
        self.disabled = disabled;
        let mut needed: std::collections::BTreeSet<String> = Default::default();
        let mut work: Vec<String> = self
            .units
            .iter()
            .filter(|u| !self.disabled.contains(&u.spec.name))
            .map(|u| u.spec.name.clone())
            .collect();
        while let Some(n) = work.pop() {
            let Some(&id) = self.by_name.get(n.as_str()) else {
                continue;
            };
            let spec = self.units[id.0 as usize].spec.clone();
            for d in spec.requires.iter().chain(&spec.wants) {
                if self.disabled.contains(d) && needed.insert(d.clone()) {
                    work.push(d.clone());
                }
            }
        }
        for (i, u) in self.units.iter_mut().enumerate() {
            if self.disabled.contains(&u.spec.name) && !needed.contains(&u.spec.name) {
                tracing::info!(unit = %u.spec.name, "disabled: not started at boot");
                u.want = Want::Down;
                self.boot_down.insert(UnitId(i as u32));
            }
        }
    }

    /// The disabled units (what `supctl enable`/`disable` keep on disk).
    pub fn disabled(&self) -> &std::collections::BTreeSet<String> {
        &self.disabled
    }

    /// Record what a lenient boot load left out (see
    /// `unit::load::load_dir_lenient`), for `status`, `why` and `start`.
    pub fn set_skipped(&mut self, skipped: crate::unit::load::Skipped) {
        self.skipped = skipped;
    }

    /// Why the last lock write failed and what is not on disk yet, if so.
    pub fn lock_write_problem(&self, now: Instant) -> Option<String> {
        let r = self.lock_retry.as_ref()?;
        let mut pending = Vec::new();
        let names: std::collections::BTreeSet<&String> = self
            .locks
            .wanted
            .keys()
            .chain(self.locks.durable.keys())
            .collect();
        for name in names {
            let wanted = self.locks.wanted.get(name.as_str());
            let durable = self.locks.durable.get(name.as_str());
            for h in wanted.into_iter().flatten() {
                if !durable.is_some_and(|d| d.iter().any(|x| x.holder == h.holder)) {
                    pending.push(format!("lock on {name} by {}", h.holder));
                }
            }
            for h in durable.into_iter().flatten() {
                if !wanted.is_some_and(|w| w.iter().any(|x| x.holder == h.holder)) {
                    pending.push(format!("release of {name} by {}", h.holder));
                }
            }
        }
        let when = match r.at {
            Some(at) => format!(
                "next try in {:.0}s",
                at.saturating_duration_since(now).as_secs_f64().ceil()
            ),
            None => "retrying now".to_string(),
        };
        Some(format!(
            "the last lock-state write failed ({}); {when}. Not on disk yet: {}",
            r.why,
            if pending.is_empty() {
                "nothing".to_string()
            } else {
                pending.join(", ")
            }
        ))
    }

    /// Write the wanted lock state again once a failed write's backoff has
    /// passed, unless another write is in flight (its result decides).
    fn retry_lock_write(&mut self, now: Instant) {
        let Some(r) = &mut self.lock_retry else {
            return;
        };
        if r.at.is_none_or(|at| now < at) || !self.locks.inflight.is_empty() {
            return;
        }
        if self.locks.wanted == self.locks.durable && self.locks.recovering.is_none() {
            // Nothing differs from what is on disk any more.
            self.lock_retry = None;
            return;
        }
        r.at = None;
        let version = self.locks.bump();
        tracing::info!("retrying the lock-state write (version {version})");
        self.out.push(Action::PersistLocks {
            version,
            locks: self.locks.wanted.clone(),
        });
    }

    /// Why the mount table is unknown, when it is.
    pub fn mount_table_problem(&self) -> Option<&str> {
        self.mount_unknown.as_ref().map(|m| m.why.as_str())
    }

    /// Is `m` satisfied now? With the table unknown, nothing is.
    pub(crate) fn mount_check(&self, m: &crate::unit::MountReq) -> Result<(), MountProblem> {
        match &self.mount_unknown {
            Some(u) => Err(MountProblem::TableUnknown {
                path: m.path.clone(),
                why: u.why.clone(),
            }),
            None => self.mounts.check(m),
        }
    }

    fn expire_mount_grace(&mut self, now: Instant) {
        if let Some(m) = &mut self.mount_unknown
            && !m.expired
            && now >= m.stop_at
        {
            m.expired = true;
            tracing::error!(
                "the mount table is still unreadable ({}): stopping units with on_loss = \"stop\"",
                m.why
            );
            self.mark_all();
        }
    }

    pub fn lock_model(&self) -> &LockModel {
        &self.locks
    }

    pub fn shutting_down(&self) -> Option<ShutdownKind> {
        self.shutdown
    }

    /// No unit is starting: what boot (or a reload) set in motion has come
    /// up, failed or is waiting on something outside supd.
    pub fn settled(&self) -> bool {
        self.locks_looked_at && self.starting == 0
    }

    pub fn max_parallel_starts(&self) -> u32 {
        self.cfg.max_parallel_starts
    }

    // ---- set management -------------------------------------------------

    /// Adopt a validated set. Units keep their ids by name; new units are
    /// appended; missing ones are flagged removed (and stopped by settle).
    fn install(&mut self, set: UnitSet) {
        for u in self.units.iter_mut() {
            u.removed = true;
        }
        for name in &set.order {
            let Some(spec) = set.units.get(name) else {
                continue;
            };
            match self.by_name.get(name) {
                Some(&id) => {
                    let u = &mut self.units[id.0 as usize];
                    let was_removed = u.removed;
                    u.removed = false;
                    if *u.effective() != *spec {
                        if u.state.has_process() {
                            u.next_spec = Some(spec.clone());
                        } else {
                            u.set_spec(spec.clone());
                            u.next_spec = None;
                        }
                    }
                    if was_removed && !u.state.has_process() {
                        // A re-added unit starts afresh (its lock, if any,
                        // still applies: locks are by name).
                        u.want = Want::Up;
                    }
                }
                None => {
                    let id = UnitId(self.units.len() as u32);
                    self.units.push(Unit::new(spec.clone()));
                    self.by_name.insert(name.clone(), id);
                }
            }
        }
        self.order = set
            .order
            .iter()
            .filter_map(|n| self.by_name.get(n).copied())
            .collect();
        // Removed units still need a place in the walks (they stop).
        for (i, u) in self.units.iter().enumerate() {
            if u.removed {
                self.order.push(UnitId(i as u32));
            }
        }
        let mut required_by = vec![Vec::new(); self.units.len()];
        let mut ordered_before = vec![Vec::new(); self.units.len()];
        self.deps = vec![Vec::new(); self.units.len()];
        self.parts = vec![Vec::new(); self.units.len()];
        self.reload_parts = vec![Vec::new(); self.units.len()];
        for (i, u) in self.units.iter().enumerate() {
            if u.removed {
                continue;
            }
            let me = UnitId(i as u32);
            let spec = u.effective();
            for dep in &spec.requires {
                if let Some(&d) = self.by_name.get(dep) {
                    required_by[d.0 as usize].push(me);
                }
            }
            for dep in spec.requires.iter().chain(&spec.wants).chain(&spec.after) {
                if let Some(&d) = self.by_name.get(dep) {
                    ordered_before[d.0 as usize].push(me);
                    self.deps[i].push(d);
                }
            }
            for whole in &spec.part_of {
                if let Some(&w) = self.by_name.get(whole)
                    && !self.parts[w.0 as usize].contains(&me)
                {
                    self.parts[w.0 as usize].push(me);
                }
            }
            for from in &spec.reload_propagated_from {
                if let Some(&w) = self.by_name.get(from)
                    && !self.reload_parts[w.0 as usize].contains(&me)
                {
                    self.reload_parts[w.0 as usize].push(me);
                }
            }
        }
        self.marks.clear();
        self.marks_at.clear();
        for (i, before) in ordered_before.iter().enumerate() {
            self.marks_at.push(self.marks.len() as u32);
            self.marks.extend_from_slice(before);
            self.marks.extend_from_slice(&self.deps[i]);
            self.marks.extend_from_slice(&self.parts[i]);
        }
        self.marks_at.push(self.marks.len() as u32);
        self.required_by = names::IdLists::flatten(&required_by);
        self.ordered_before = names::IdLists::flatten(&ordered_before);
        self.mount_users = (0..self.units.len())
            .filter(|&i| !self.units[i].effective().mounts.is_empty())
            .map(|i| UnitId(i as u32))
            .collect();
        self.resolved = names::Resolved::build(
            self.units.iter().map(|u| u.effective().as_ref()),
            &self.by_name,
        );
        self.pos = vec![0; self.units.len()];
        for (p, id) in self.order.iter().enumerate() {
            self.pos[id.0 as usize] = p as u32;
        }
        // Positions changed: every decision is taken afresh.
        self.dirty_stop.clear();
        self.dirty_start.clear();
        self.cap_waiters.clear();
        self.mark_all();
    }

    // ---- the dirty sets ---------------------------------------------------

    /// Start loading what an event about `id` (or a decision about it)
    /// reads: the first lines of its record and its timer slots.
    fn prefetch_unit(&self, id: UnitId) {
        if let Some(u) = self.units.get(id.0 as usize) {
            prefetch::prefetch(u, HOT_LINES);
            self.timers.prefetch(id);
        }
    }

    /// `id`'s own decisions may have changed.
    fn touch(&mut self, id: UnitId) {
        let Some(&p) = self.pos.get(id.0 as usize) else {
            return;
        };
        self.dirty_stop.insert(p);
        self.dirty_start.insert(p);
        self.touched.insert(id.0);
    }

    /// `id` changed: its decisions and those of every unit that reads it —
    /// what requires, wants or is ordered after it (`is_ready`, `is_up`,
    /// `on_its_way_up_id`), what it is ordered after (`dependents_down` reads
    /// whether it still has a process), and its `part_of` parts.
    fn mark(&mut self, id: UnitId) {
        let i = id.0 as usize;
        self.touch(id);
        let (Some(&from), Some(&to)) = (self.marks_at.get(i), self.marks_at.get(i + 1)) else {
            return;
        };
        for k in from as usize..to as usize {
            let d = self.marks[k];
            // Each is asked by this settle: its record's misses overlap.
            if let Some(u) = self.units.get(d.0 as usize) {
                prefetch::prefetch(u, DECISION_LINES);
            }
            self.touch(d);
        }
    }

    /// Something every unit reads changed (shutdown, shed, the mount table,
    /// the lock state, a reload): every decision is taken afresh.
    fn mark_all(&mut self) {
        let n = self.order.len() as u32;
        self.dirty_stop.insert_all_below(n);
        self.dirty_start.insert_all_below(n);
        self.touched.insert_all_below(self.units.len() as u32);
    }

    /// Which units an event is about, to mark them before (and after) it
    /// is applied; None when it touches none, `All` for a global change.
    fn event_scope(&self, event: &Event) -> Scope {
        // A stale run marks its unit too: a mark only asks again.
        let run = |r: &RunId| {
            let id = r.unit();
            if (id.0 as usize) < self.units.len() {
                self.prefetch_unit(id);
                Scope::Unit(id)
            } else {
                Scope::None
            }
        };
        let name = |n: &str| {
            self.by_name
                .get(n)
                .copied()
                .map_or(Scope::None, Scope::Unit)
        };
        match event {
            Event::Spawned { run: r, .. }
            | Event::SpawnFailed { run: r, .. }
            | Event::ProcessExited { run: r, .. }
            | Event::GroupEmpty { run: r }
            | Event::OomKilled { run: r, .. }
            | Event::ConditionFailed { run: r, .. }
            | Event::HelperFailed { run: r, .. }
            | Event::ReadyFd { run: r }
            | Event::Notified { run: r, .. }
            | Event::MainPidChanged { run: r, .. } => run(r),
            // A probe result changes what decisions read only through a
            // state change (ready, stopping), which marks by itself; a
            // passing probe of a passing unit — nearly every result — asks
            // nothing.
            Event::ProbeAnswered { run: r, .. } => {
                if let Some(u) = self.units.get(r.unit().0 as usize) {
                    prefetch::prefetch(u, HOT_LINES);
                    self.timers.prefetch(r.unit());
                }
                Scope::None
            }
            Event::MountTableChanged(_) | Event::MountTableUnknown(_) => Scope::Mounts,
            Event::Adopted { unit, .. } => name(unit),
            // Timers mark the units whose timers fired (`on_timers`).
            Event::Tick => Scope::None,
            Event::Command { request, .. } => match request {
                Request::Status { .. }
                | Request::Analyze
                | Request::Graph
                | Request::Why { .. }
                | Request::MaintenanceList
                | Request::MaintenanceLog { .. }
                | Request::Logs { .. }
                | Request::Events { .. }
                | Request::Reload
                | Request::Reexec => Scope::None,
                // What boot leaves down; nothing started or stopped now.
                Request::Enable { .. } | Request::Disable { .. } => Scope::None,
                Request::Start { unit }
                | Request::Stop { unit }
                | Request::Restart { unit }
                | Request::Reset { unit }
                | Request::ReloadUnit { unit } => name(unit),
                // Rare, and they change what several units read.
                Request::MaintenanceOn { .. }
                | Request::MaintenanceOff { .. }
                | Request::MaintenanceRecover { .. }
                | Request::Shed { .. }
                | Request::Unshed
                | Request::Poweroff
                | Request::Reboot => Scope::All,
            },
            Event::Resumed(_)
            | Event::Reloaded { .. }
            | Event::Recover { .. }
            | Event::LocksLoaded(_)
            | Event::LocksPersisted { .. }
            | Event::ShutdownRequested(_)
            | Event::Pressure { .. } => Scope::All,
        }
    }

    fn mark_scope(&mut self, scope: Scope) {
        match scope {
            Scope::None => {}
            Scope::Unit(id) => self.mark(id),
            Scope::Mounts => {
                for k in 0..self.mount_users.len() {
                    let id = self.mount_users[k];
                    self.mark(id);
                }
            }
            Scope::All => self.mark_all(),
        }
    }

    // ---- state helpers --------------------------------------------------

    fn set_state(&mut self, id: UnitId, state: UnitState) {
        let u = &mut self.units[id.0 as usize];
        let was = matches!(u.state, UnitState::Starting { .. });
        let is = matches!(state, UnitState::Starting { .. });
        if let UnitState::Backoff { until } = u.state {
            self.backoffs.remove(&(until, id));
        }
        if let UnitState::Backoff { until } = state {
            self.backoffs.insert((until, id));
        }
        if matches!(state, UnitState::Failed { .. })
            && !matches!(u.state, UnitState::Failed { .. })
            && !u.spec.on_failure.is_empty()
        {
            self.on_failure.push(id);
        }
        let had = u.state.has_process();
        u.state = state;
        match (had, u.state.has_process()) {
            (false, true) => self.with_process += 1,
            (true, false) => self.with_process = self.with_process.saturating_sub(1),
            _ => {}
        }
        let cap = self.cfg.max_parallel_starts as usize;
        let was_full = self.starting >= cap;
        match (was, is) {
            (false, true) => self.starting += 1,
            (true, false) => self.starting = self.starting.saturating_sub(1),
            _ => {}
        }
        if was_full && self.starting < cap && !self.cap_waiters.is_empty() {
            // A start slot opened: the waiters are asked by the next pass
            // (see `cap_waiters`).
            self.cap_opened = true;
        }
        self.mark(id);
        self.timeline.on_state(id, &self.units[id.0 as usize]);
    }

    fn unit_mut(&mut self, id: UnitId) -> &mut Unit {
        &mut self.units[id.0 as usize]
    }

    /// The unit whose current run `run` is (None for a stale run).
    fn run_unit(&self, run: RunId) -> Option<UnitId> {
        let id = run.unit();
        (self.units.get(id.0 as usize)?.state.run() == Some(run)).then_some(id)
    }

    /// A fresh run of `id`.
    fn new_run(&mut self, id: UnitId) -> RunId {
        let seq = self.next_run;
        self.next_run = self.next_run.wrapping_add(1).max(1);
        RunId(u64::from(seq) << 32 | u64::from(id.0))
    }

    fn reply(&mut self, req: ReqId, response: Response) {
        self.out.push(Action::Reply { req, response });
    }

    // ---- events ---------------------------------------------------------

    /// Apply one event, marking the units it is about so the next settle
    /// asks them (before as well: a command may settle on its own).
    fn on_event(&mut self, now: Instant, event: Event) {
        let scope = self.event_scope(&event);
        if let Scope::Unit(_) = scope {
            self.mark_scope(scope);
        }
        self.apply_event(now, event);
        self.mark_scope(scope);
    }

    fn apply_event(&mut self, now: Instant, event: Event) {
        if matches!(event, Event::LocksLoaded(_)) {
            self.locks_looked_at = true;
        }
        match event {
            Event::Spawned { run, pid, cgroup } => {
                let Some(id) = self.run_unit(run) else {
                    return;
                };
                let u = self.unit_mut(id);
                u.cgroup = cgroup;
                let u = &self.units[id.0 as usize];
                let spec = u.spec.clone();
                match u.state.clone() {
                    UnitState::Starting { run, since, .. } => {
                        self.set_state(
                            id,
                            UnitState::Starting {
                                run,
                                pid: Some(pid),
                                since,
                            },
                        );
                        if spec.kind == UnitKind::Longrun && spec.ready.kind == ReadyKind::Started {
                            // (A forking unit is ready once its main pid
                            // is known: on_main_pid.)
                            self.mark_ready(id, now, ReadyKind::Started);
                        }
                        self.arm_probe(id, now, ProbeKind::Liveness, true);
                        self.arm_probe(id, now, ProbeKind::Readiness, true);
                    }
                    UnitState::Stopping {
                        run,
                        reason,
                        killed,
                        since,
                        ..
                    } => {
                        // Stopped before the spawner answered: stop now.
                        self.set_state(
                            id,
                            UnitState::Stopping {
                                run,
                                pid: Some(pid),
                                reason,
                                killed,
                                since,
                            },
                        );
                        self.out.push(stop_action(run, &spec));
                    }
                    _ => {}
                }
            }
            Event::SpawnFailed { run, error, mount } => {
                let Some(id) = self.run_unit(run) else {
                    return;
                };
                if mount.is_none()
                    && matches!(self.units[id.0 as usize].state, UnitState::Stopping { .. })
                {
                    // Stopped while its start sequence ran: it ends as the
                    // stop's reason says, not as a start failure.
                    tracing::info!(unit = %self.units[id.0 as usize].spec.name, "start abandoned: {error}");
                    self.on_exit(now, run, ExitStatus::Exited(1));
                    return;
                }
                self.timers.cancel_all(id);
                let manual = self.units[id.0 as usize].manual_start;
                if let Some(p) = mount {
                    // The last-moment check caught what our snapshot had
                    // not seen yet: wait for the mount, no failure counted.
                    tracing::warn!(unit = %self.units[id.0 as usize].spec.name, "spawn refused: {p}");
                    let u = self.unit_mut(id);
                    if !manual {
                        u.window.unrecord_last();
                    }
                    u.mount_refused = Some(p);
                    self.set_state(id, UnitState::Inactive);
                } else {
                    tracing::warn!(unit = %self.units[id.0 as usize].spec.name, "spawn failed: {error}");
                    self.note_error(id, now, error.clone());
                    self.after_failure(id, now, FailReason::SpawnFailed(error), true);
                }
            }
            Event::ProcessExited { run, status } => self.on_exit(now, run, status),
            Event::GroupEmpty { run } => self.on_group_empty(now, run),
            Event::OomKilled { run, count } => {
                if let Some(id) = self.run_unit(run) {
                    let u = self.unit_mut(id);
                    u.oom_kills = u.oom_kills.saturating_add(count);
                    u.oom_run = Some(run);
                    tracing::warn!(unit = %u.spec.name, "the kernel's OOM killer killed {count} process(es) of it");
                    // oom_policy = "stop": one OOM kill ends the run, as
                    // a failure (systemd's OOMPolicy=stop).
                    if u.spec.resources.oom_policy == crate::unit::OomPolicy::Stop
                        && matches!(
                            u.state,
                            UnitState::Starting { run: r, .. } | UnitState::Running { run: r, .. } if r == run
                        )
                    {
                        self.begin_stop(id, now, StopReason::OutOfMemory);
                    }
                }
            }
            Event::Adopted {
                unit,
                pid,
                cgroup,
                wall_ms,
            } => self.on_adopted(now, unit, pid, cgroup, wall_ms),
            Event::Resumed(h) => {
                if let Some(map) = h.locks.clone() {
                    self.on_event(now, Event::LocksLoaded(LocksLoad::Loaded(map)));
                }
                self.resume(now, h);
            }
            Event::ConditionFailed { run, why } => {
                let Some(id) = self.run_unit(run) else {
                    return;
                };
                if matches!(self.units[id.0 as usize].state, UnitState::Stopping { .. }) {
                    self.on_exit(now, run, ExitStatus::Exited(0));
                    return;
                }
                self.timers.cancel_all(id);
                tracing::info!(unit = %self.units[id.0 as usize].spec.name, "skipped: {why}");
                let u = self.unit_mut(id);
                u.manual_start = false;
                u.attempt = 0;
                self.set_state(id, UnitState::Skipped { why });
            }
            Event::HelperFailed { run, what } => {
                if let Some(id) = self.run_unit(run)
                    && matches!(
                        self.units[id.0 as usize].state,
                        UnitState::Starting { .. } | UnitState::Running { .. }
                    )
                {
                    tracing::warn!(unit = %self.units[id.0 as usize].spec.name, "{what}");
                    self.begin_stop(id, now, StopReason::StartFailed(what));
                }
            }
            Event::MountTableChanged(table) => {
                if let Some(m) = self.mount_unknown.take() {
                    tracing::info!("the mount table is readable again (was: {})", m.why);
                }
                let old = std::mem::replace(&mut self.mounts, table);
                self.publish_mount_changes(&old);
                for i in 0..self.units.len() {
                    if self.units[i].mount_refused.take().is_some() {
                        self.mark(UnitId(i as u32));
                    }
                }
            }
            Event::MountTableUnknown(why) => {
                if self.mount_unknown.is_none() {
                    tracing::error!(
                        "the mount table cannot be read ({why}): units needing a mount do not start; those with on_loss = \"stop\" stop in {:?} unless it can be read again",
                        MOUNT_UNKNOWN_GRACE
                    );
                    self.mount_unknown = Some(MountUnknown {
                        why,
                        stop_at: timers::after(now, MOUNT_UNKNOWN_GRACE),
                        expired: false,
                    });
                } else if let Some(m) = &mut self.mount_unknown {
                    m.why = why;
                }
            }
            Event::Tick => {
                self.on_timers(now);
                if self.auto_shed.next_deadline().is_some_and(|d| d <= now) {
                    // A restore step or a held unit's release is due:
                    // what sheds or holds back units changes.
                    self.mark_all();
                }
                if let Some(c) = self.auto_shed.tick(now) {
                    let wall_ms = self.auto_shed.wall_ms(now);
                    self.on_shed_change(now, c, wall_ms);
                }
            }
            Event::Pressure {
                resource,
                high,
                wall_ms,
            } => {
                if let Some(c) = self.auto_shed.pressure(now, resource, high, wall_ms) {
                    self.on_shed_change(now, c, wall_ms);
                }
            }
            Event::Command {
                req,
                peer,
                wall_ms,
                request,
            } => self.on_command(now, req, peer, wall_ms, request),
            Event::Reloaded {
                req,
                peer,
                wall_ms,
                result,
            } => self.on_reload(req, peer, wall_ms, result),
            Event::Recover {
                req,
                peer,
                wall_ms,
                result,
                source,
            } => self.on_recover(req, peer, wall_ms, result, source),
            Event::LocksLoaded(load) => match load {
                event::LocksLoad::Loaded(map) => {
                    if self.locks.state != LockState::Known {
                        // Locks taken while the state was unknown are kept.
                        for (unit, holders) in map {
                            self.locks.wanted.entry(unit.clone()).or_default();
                            let w = self.locks.wanted.get_mut(&unit);
                            if let Some(w) = w {
                                for h in &holders {
                                    if !w.iter().any(|x| x.holder == h.holder) {
                                        w.push(h.clone());
                                    }
                                }
                            }
                            self.locks.durable.insert(unit, holders);
                        }
                        self.locks.wanted.retain(|_, v| !v.is_empty());
                        self.locks.state = LockState::Known;
                    }
                }
                event::LocksLoad::Unknown(why) => {
                    if self.locks.state != LockState::Known {
                        self.locks.state = LockState::Unknown(why);
                    }
                }
            },
            Event::LocksPersisted { version, result } => self.on_persisted(now, version, result),
            Event::ProbeAnswered {
                run,
                kind,
                ok,
                output,
            } => self.on_probe(now, run, kind, ok, output),
            Event::ReadyFd { run } => {
                if let Some(id) = self.run_unit(run) {
                    self.mark_ready(id, now, ReadyKind::Fd);
                }
            }
            Event::Notified { run, msg } => {
                let Some(id) = self.run_unit(run) else {
                    return;
                };
                self.reload_progress(id, run, &msg);
                if let Some(s) = msg.status {
                    self.unit_mut(id).status_text = Some(s);
                }
                if let Some(e) = msg.errno {
                    let err = std::io::Error::from_raw_os_error(e);
                    let u = self.unit_mut(id);
                    let base = u.status_text.take().unwrap_or_default();
                    let sep = if base.is_empty() { "" } else { "; " };
                    u.status_text = Some(format!("{base}{sep}errno {e} ({err})"));
                }
                if let Some(usec) = msg.extend_timeout_usec {
                    // The timeout of the state it is in moves out to at
                    // least `usec` from now; never closer.
                    let at = timers::after(now, std::time::Duration::from_micros(usec));
                    let kind = match self.units[id.0 as usize].state {
                        UnitState::Starting { .. } => Some(TimerKind::StartTimeout),
                        UnitState::Stopping { killed: false, .. } => Some(TimerKind::KillAfter),
                        UnitState::Running { .. } => Some(TimerKind::Watchdog),
                        _ => None,
                    };
                    if let Some(k) = kind
                        && self.timers.get(id, k).is_some_and(|t| t < at)
                    {
                        self.timers.set(id, k, at);
                    }
                }
                // STOPPING=1 and RELOADING=1: not ready (dependents not yet
                // started wait) until READY=1 comes again.
                if msg.stopping || msg.reloading {
                    if let UnitState::Running {
                        run,
                        pid,
                        since,
                        ready: true,
                    } = self.units[id.0 as usize].state
                    {
                        self.set_state(
                            id,
                            UnitState::Running {
                                run,
                                pid,
                                since,
                                ready: false,
                            },
                        );
                    }
                    if msg.stopping {
                        self.unit_mut(id).status_text = Some("stopping (STOPPING=1)".into());
                    } else if self.units[id.0 as usize].status_text.is_none() {
                        self.unit_mut(id).status_text = Some("reloading (RELOADING=1)".into());
                    }
                }
                if msg.ready {
                    if let UnitState::Running {
                        run,
                        pid,
                        since,
                        ready: false,
                    } = self.units[id.0 as usize].state
                        && self.units[id.0 as usize].spec.ready.kind == ReadyKind::Notify
                        && self.units[id.0 as usize].spec.readiness.is_none()
                    {
                        tracing::info!(unit = %self.units[id.0 as usize].spec.name, "ready again (READY=1)");
                        self.set_state(
                            id,
                            UnitState::Running {
                                run,
                                pid,
                                since,
                                ready: true,
                            },
                        );
                    }
                    self.mark_ready(id, now, ReadyKind::Notify);
                }
                if msg.watchdog
                    && let Some(wd) = self.units[id.0 as usize].spec.ready.watchdog
                    && self.timers.get(id, TimerKind::Watchdog).is_some()
                {
                    self.timers
                        .set(id, TimerKind::Watchdog, timers::after(now, wd));
                }
                if msg.watchdog_trigger
                    && matches!(self.units[id.0 as usize].state, UnitState::Running { .. })
                {
                    tracing::warn!(unit = %self.units[id.0 as usize].spec.name, "WATCHDOG=trigger: treated as a watchdog timeout");
                    self.timers.set(id, TimerKind::Watchdog, now);
                    self.on_timers(now);
                }
            }
            Event::MainPidChanged { run, pid } => {
                let Some(id) = self.run_unit(run) else {
                    return;
                };
                let state = match self.units[id.0 as usize].state.clone() {
                    UnitState::Starting { run, since, .. } => Some(UnitState::Starting {
                        run,
                        pid: Some(pid),
                        since,
                    }),
                    UnitState::Running {
                        run, since, ready, ..
                    } => Some(UnitState::Running {
                        run,
                        pid,
                        since,
                        ready,
                    }),
                    UnitState::Stopping {
                        run,
                        reason,
                        killed,
                        since,
                        ..
                    } => Some(UnitState::Stopping {
                        run,
                        pid: Some(pid),
                        reason,
                        killed,
                        since,
                    }),
                    _ => None,
                };
                if let Some(s) = state {
                    tracing::info!(unit = %self.units[id.0 as usize].spec.name, "main process is now {pid} (MAINPID=)");
                    self.set_state(id, s);
                }
            }
            Event::ShutdownRequested(kind) => {
                if self.shutdown.is_none() {
                    tracing::info!(
                        "shutdown requested ({kind:?}): stopping units in reverse dependency order"
                    );
                    self.shutdown = Some(kind);
                }
            }
        }
    }

    fn mark_ready(&mut self, id: UnitId, now: Instant, via: ReadyKind) {
        let u = &self.units[id.0 as usize];
        if u.spec.ready.kind != via || !u.spec.kind.long_running() {
            return;
        }
        if let UnitState::Starting {
            run,
            pid: Some(pid),
            since,
        } = u.state
        {
            if via == ReadyKind::Started {
                tracing::debug!(unit = %u.spec.name, "ready (started)");
            } else {
                tracing::info!(unit = %u.spec.name, "ready");
            }
            if let Some(wd) = u.spec.ready.watchdog {
                self.timers
                    .set(id, TimerKind::Watchdog, timers::after(now, wd));
            }
            self.set_state(
                id,
                UnitState::Running {
                    run,
                    pid,
                    since,
                    ready: true,
                },
            );
            self.timers.cancel(id, TimerKind::StartTimeout);
        }
    }

    fn on_exit(&mut self, now: Instant, run: RunId, status: ExitStatus) {
        let Some(id) = self.run_unit(run) else {
            return;
        };
        let u = &self.units[id.0 as usize];
        if matches!(u.state, UnitState::Draining { .. }) {
            // Its main process is already gone: nothing more to learn.
            return;
        }
        if u.cgroup.is_some() && u.group_empty != Some(run) {
            // Contained, and the group still has processes: the run lasts
            // until they are gone (a unit is all of its processes).
            let was = u.state.clone();
            let mode = u.spec.stop.kill_mode;
            // During a stop, `group` and `main` give the rest until the
            // timeout (they got the signal, or the main process was to
            // stop them); otherwise the service is over and what is left
            // of it is killed now, as the process group was before.
            let kill_now = match &was {
                UnitState::Stopping { killed, .. } => *killed || mode == KillMode::Mixed,
                _ => true,
            };
            self.timers.cancel(id, TimerKind::StartTimeout);
            self.timers.cancel(id, TimerKind::ProbeDue);
            self.timers.cancel(id, TimerKind::ReadinessDue);
            self.timers.cancel(id, TimerKind::Watchdog);
            self.out.push(Action::CancelProbe { run });
            if kill_now {
                self.out.push(Action::KillGroup { run });
            }
            let u = self.unit_mut(id);
            u.last_exit = Some(status);
            self.set_state(
                id,
                UnitState::Draining {
                    run,
                    status,
                    was: Box::new(was),
                    since: now,
                },
            );
            return;
        }
        self.end_run(now, id, run, status);
    }

    /// A contained run's group has no process left.
    fn on_group_empty(&mut self, now: Instant, run: RunId) {
        let Some(id) = self.run_unit(run) else {
            return;
        };
        match self.units[id.0 as usize].state.clone() {
            UnitState::Draining { status, was, .. } => {
                // Decide as if the main process exited now, in the state
                // it exited in.
                self.set_state(id, *was);
                self.end_run(now, id, run, status);
            }
            UnitState::Starting { .. } | UnitState::Running { .. } | UnitState::Stopping { .. } => {
                // The main process is gone but not reaped yet.
                self.unit_mut(id).group_empty = Some(run);
            }
            UnitState::Inactive
            | UnitState::Backoff { .. }
            | UnitState::Failed { .. }
            | UnitState::Done
            | UnitState::Exited { .. }
            | UnitState::Skipped { .. } => {}
        }
    }

    /// What to hand to a re-executed image.
    pub fn handoff(&self, now: Instant) -> Handoff {
        Handoff {
            units: self
                .units
                .iter()
                .filter(|u| !u.removed)
                .map(|u| HandoffUnit {
                    name: u.spec.name.clone(),
                    down: u.want == Want::Down,
                    failed: match &u.state {
                        UnitState::Failed { reason } => Some(reason.to_string()),
                        _ => None,
                    },
                    restarts: u.restarts,
                    pid: u.state.pid(),
                    attempt: u.attempt,
                    window_ages_ms: u.window.ages_ms(now),
                    ready: matches!(u.state, UnitState::Running { ready: true, .. }),
                    stopping: matches!(u.state, UnitState::Stopping { .. }),
                    backoff_ms: match u.state {
                        UnitState::Backoff { until } => {
                            Some(until.saturating_duration_since(now).as_millis() as u64)
                        }
                        _ => None,
                    },
                })
                .collect(),
            shed: self.shed,
            auto_shed_step: self.auto_shed.export(now).0,
            auto_shed_restore_ms: self.auto_shed.export(now).1,
            // Every holder keeping a unit down: asked for, or still on
            // disk (a release that did not reach it does not free the unit).
            locks: (self.locks.state == LockState::Known).then(|| {
                self.locks
                    .wanted
                    .keys()
                    .chain(self.locks.durable.keys())
                    .filter_map(|u| Some((u.clone(), self.locks.holders(u)?)))
                    .collect()
            }),
        }
    }

    /// Take over what the old image knew (before anything is decided).
    fn resume(&mut self, now: Instant, h: Handoff) {
        self.shed = h.shed;
        self.auto_shed
            .resume(now, h.auto_shed_step, h.auto_shed_restore_ms);
        for hu in h.units {
            let Some(id) = self.unit_id(&hu.name) else {
                continue;
            };
            let u = self.unit_mut(id);
            u.restarts = hu.restarts;
            u.attempt = hu.attempt;
            if hu.pid.is_some() {
                self.resumed_ready.insert(hu.name.clone(), hu.ready);
                if hu.stopping {
                    self.resumed_stopping.insert(hu.name.clone());
                }
            }
            let u = self.unit_mut(id);
            u.window = restart::StartWindow::from_ages_ms(now, &hu.window_ages_ms);
            if let Some(ms) = hu.backoff_ms
                && matches!(u.state, UnitState::Inactive)
                && !hu.down
                && hu.failed.is_none()
            {
                let until = now + std::time::Duration::from_millis(ms);
                self.set_state(id, UnitState::Backoff { until });
                self.timers.set(id, TimerKind::RestartAt, until);
            }
            if hu.down {
                // The old image's operator stop wins over adoption.
                self.boot_down.remove(&id);
            }
            let u = self.unit_mut(id);
            if hu.down {
                u.want = Want::Down;
            }
            if let Some(why) = hu.failed
                && matches!(u.state, UnitState::Inactive)
            {
                self.set_state(
                    id,
                    UnitState::Failed {
                        reason: FailReason::Carried(why),
                    },
                );
            }
        }
    }

    /// A previous supd left `unit` running. Never a second copy: with a
    /// main process it is adopted as running (and stopped by the settle
    /// that follows if a lock, an operator stop or a missing mount says
    /// so); without one it is stopped, and starts afresh once its group is
    /// empty.
    fn on_adopted(
        &mut self,
        now: Instant,
        unit: String,
        pid: Option<i32>,
        cgroup: Option<String>,
        wall_ms: u64,
    ) {
        let Some(id) = self.unit_id(&unit) else {
            return;
        };
        if self.boot_down.remove(&id) {
            // Running already: being disabled only keeps it from starting.
            self.unit_mut(id).want = Want::Up;
        }
        if self.units[id.0 as usize].state.has_process() {
            return;
        }
        let run = self.new_run(id);
        let contained = cgroup.is_some();
        if !contained && pid.is_none() {
            return;
        }
        let u = self.unit_mut(id);
        u.cgroup = cgroup;
        if let Some(next) = u.next_spec.take() {
            u.set_spec(next);
        }
        let spec = u.spec.clone();
        self.out.push(Action::Track {
            run,
            unit: unit.clone(),
            pid,
            contained,
        });
        let outcome = match pid {
            Some(pid) if self.resumed_stopping.remove(&unit) => {
                // The previous image had sent the stop signal and would have
                // escalated to SIGKILL: finish that stop (a process ignoring
                // SIGTERM must not be taken over as starting, forever).
                self.resumed_ready.remove(&unit);
                self.out.push(Action::Signal {
                    run,
                    signal: spec.stop.signal,
                });
                self.timers
                    .set(id, TimerKind::KillAfter, now + spec.stop.timeout);
                self.set_state(
                    id,
                    UnitState::Stopping {
                        run,
                        pid: Some(pid),
                        reason: StopReason::Unowned,
                        killed: false,
                        since: now,
                    },
                );
                format!("adopted process {pid} that was being stopped: stopping it")
            }
            Some(pid) => {
                tracing::info!(unit = %unit, "adopted: running as pid {pid}, left by a previous supd");
                // A long-running unit was up (and ready: it ran under the
                // previous supd) unless the hand-off of a re-exec says it
                // was still starting; a oneshot is still running to
                // completion.
                let ready = self.resumed_ready.remove(&unit).unwrap_or(true);
                let state = if spec.kind.long_running() && ready {
                    UnitState::Running {
                        run,
                        pid,
                        since: now,
                        ready: true,
                    }
                } else {
                    UnitState::Starting {
                        run,
                        pid: Some(pid),
                        since: now,
                    }
                };
                self.set_state(id, state);
                if let Some(wd) = spec.ready.watchdog {
                    self.timers.set(id, TimerKind::Watchdog, now + wd);
                }
                self.arm_probe(id, now, ProbeKind::Liveness, true);
                self.arm_probe(id, now, ProbeKind::Readiness, true);
                format!("adopted running process {pid}")
            }
            None => {
                tracing::warn!(unit = %unit, "found running without a known main process: stopping it before a fresh start");
                self.out.push(Action::Signal {
                    run,
                    signal: spec.stop.signal,
                });
                self.timers
                    .set(id, TimerKind::KillAfter, now + spec.stop.timeout);
                self.set_state(
                    id,
                    UnitState::Draining {
                        run,
                        status: ExitStatus::Unknown,
                        was: Box::new(UnitState::Stopping {
                            run,
                            pid: None,
                            reason: StopReason::Unowned,
                            killed: false,
                            since: now,
                        }),
                        since: now,
                    },
                );
                "main process unknown: stopping it before a fresh start".to_string()
            }
        };
        self.out.push(Action::Audit(AuditEntry {
            wall_ms,
            peer_uid: None,
            peer_pid: None,
            holder: None,
            unit: Some(unit),
            action: "adopt".to_string(),
            reason: None,
            outcome,
        }));
    }

    /// The run is over: its main process exited and (if contained) its
    /// group is empty. Decide what follows from the state it ended in.
    fn end_run(&mut self, now: Instant, id: UnitId, run: RunId, status: ExitStatus) {
        let u = self.unit_mut(id);
        u.group_empty = None;
        // A SIGKILL in a group the OOM killer struck is its doing.
        let status = match status {
            ExitStatus::Signaled { signal, .. }
                if signal == libc::SIGKILL && u.oom_run == Some(run) =>
            {
                ExitStatus::OutOfMemory {
                    limit: match u.spec.resources.memory_max {
                        Some(crate::unit::CgLimit::Value(b)) => Some(b),
                        _ => None,
                    },
                }
            }
            s => s,
        };
        u.oom_run = None;
        self.timers.cancel(id, TimerKind::KillAfter);
        self.timers.cancel(id, TimerKind::StartTimeout);
        self.timers.cancel(id, TimerKind::ProbeDue);
        self.timers.cancel(id, TimerKind::ReadinessDue);
        self.timers.cancel(id, TimerKind::Watchdog);
        self.out.push(Action::CancelProbe { run });
        // The name is read only where a log line is written (tracing
        // evaluates its fields only when the line is enabled).
        let u = self.unit_mut(id);
        u.last_exit = Some(status);
        u.history.last_exit_at = Some(now);
        u.health = Default::default();
        u.readiness = Default::default();
        match u.state.clone() {
            UnitState::Stopping { reason, .. } => {
                tracing::info!(unit = %self.units[id.0 as usize].spec.name, "stopped ({reason}): {status}");
                let u = self.unit_mut(id);
                u.stop_pending = None;
                match reason {
                    StopReason::Restart => {
                        u.restart_requested = false;
                        u.manual_start = true;
                        self.set_state(id, UnitState::Inactive);
                    }
                    StopReason::HealthFailed => {
                        let on = u
                            .spec
                            .health
                            .as_ref()
                            .map(|h| h.on_unhealthy)
                            .unwrap_or(OnUnhealthy::Restart);
                        if on == OnUnhealthy::Stop {
                            self.set_state(
                                id,
                                UnitState::Failed {
                                    reason: FailReason::Unhealthy,
                                },
                            );
                        } else {
                            self.after_failure(id, now, FailReason::Unhealthy, false);
                        }
                    }
                    StopReason::StartTimeout => {
                        self.after_failure(id, now, FailReason::StartTimeout, false);
                    }
                    StopReason::StartFailed(what) => {
                        self.after_failure(id, now, FailReason::SpawnFailed(what), false);
                    }
                    StopReason::OutOfMemory => {
                        self.after_failure(id, now, FailReason::Exited(status), false);
                    }
                    StopReason::Operator
                    | StopReason::Maintenance
                    | StopReason::DependencyStopped(_)
                    | StopReason::MountLost(_)
                    | StopReason::Shutdown
                    | StopReason::Shed
                    | StopReason::Pressure
                    | StopReason::Unowned
                    | StopReason::Removed => self.set_state(id, UnitState::Inactive),
                }
            }
            UnitState::Starting { since, .. } | UnitState::Running { since, .. } => {
                let spec = self.units[id.0 as usize].spec.clone();
                let ok = spec.exit_ok(status.view());
                // A completed oneshot, or a longrun that stays up after its
                // process exits (`remain_after_exit`): ready for dependents.
                if ok && (spec.kind == UnitKind::Oneshot || spec.remain_after_exit) {
                    tracing::info!(unit = %spec.name, "completed");
                    let u = self.unit_mut(id);
                    u.attempt = 0;
                    self.set_state(id, UnitState::Done);
                    return;
                }
                if now.saturating_duration_since(since) >= spec.restart.reset_after {
                    self.unit_mut(id).attempt = 0;
                }
                let failure = !ok;
                let restart = !spec.restart_prevented(status.view())
                    && match spec.restart.policy {
                        RestartPolicy::Always => true,
                        RestartPolicy::OnFailure => failure,
                        RestartPolicy::OnAbnormal | RestartPolicy::OnAbort => {
                            failure && status.unclean_signal()
                        }
                        RestartPolicy::OnWatchdog | RestartPolicy::Never => false,
                    };
                tracing::warn!(unit = %spec.name, "{status}");
                if failure {
                    self.note_error_of(id, now, &status);
                }
                if restart {
                    self.after_failure(id, now, FailReason::Exited(status), false);
                } else if failure {
                    self.set_state(
                        id,
                        UnitState::Failed {
                            reason: FailReason::Exited(status),
                        },
                    );
                } else {
                    self.set_state(id, UnitState::Exited { status });
                }
            }
            UnitState::Draining { .. }
            | UnitState::Inactive
            | UnitState::Backoff { .. }
            | UnitState::Failed { .. }
            | UnitState::Done
            | UnitState::Exited { .. }
            | UnitState::Skipped { .. } => {}
        }
    }

    /// The run ended badly (or a restarting policy applies): back off and
    /// retry if the policy allows, else fail.
    fn after_failure(&mut self, id: UnitId, now: Instant, reason: FailReason, spawn_error: bool) {
        let spec = self.units[id.0 as usize].spec.clone();
        let restart = match (&reason, spec.restart.policy) {
            (_, RestartPolicy::Never) => false,
            // `on_exit` has applied the policy to the exit status already.
            (FailReason::Exited(_), _) => true,
            (_, RestartPolicy::Always | RestartPolicy::OnFailure) => true,
            (FailReason::StartTimeout | FailReason::Unhealthy, RestartPolicy::OnAbnormal) => true,
            (FailReason::Unhealthy, RestartPolicy::OnWatchdog) => true,
            (_, RestartPolicy::OnAbnormal | RestartPolicy::OnAbort | RestartPolicy::OnWatchdog) => {
                false
            }
        };
        if !restart {
            self.set_state(id, UnitState::Failed { reason });
            return;
        }
        let _ = spawn_error;
        let u = &mut self.units[id.0 as usize];
        let delay = restart::backoff_delay(&spec.restart, u.attempt, &mut self.rng);
        u.attempt = u.attempt.saturating_add(1);
        let until = timers::after(now, delay);
        self.timeline.note_failure(id, &reason);
        self.set_state(id, UnitState::Backoff { until });
        self.timers.set(id, TimerKind::RestartAt, until);
    }

    fn on_timers(&mut self, now: Instant) {
        for (id, kind) in self.timers.take_due(now) {
            self.mark(id);
            let u = &self.units[id.0 as usize];
            match kind {
                TimerKind::KillAfter => {
                    if let UnitState::Draining { run, .. } = u.state {
                        tracing::warn!(unit = %u.spec.name, "processes left after {:?}: SIGKILL to all of them", u.spec.stop.timeout);
                        self.out.push(Action::KillGroup { run });
                    }
                    if let UnitState::Stopping {
                        run,
                        pid,
                        reason,
                        killed: false,
                        since,
                    } = u.state.clone()
                    {
                        tracing::warn!(unit = %u.spec.name, "did not stop within {:?}: SIGKILL to all its processes", u.spec.stop.timeout);
                        let text = format!(
                            "did not stop within {}: SIGKILL sent to all its processes",
                            humantime::format_duration(u.spec.stop.timeout)
                        );
                        self.note_error(id, now, text);
                        self.out.push(Action::KillGroup { run });
                        self.set_state(
                            id,
                            UnitState::Stopping {
                                run,
                                pid,
                                reason,
                                killed: true,
                                since,
                            },
                        );
                    }
                }
                TimerKind::RestartAt => {}
                TimerKind::StartTimeout => {
                    if matches!(u.state, UnitState::Starting { .. }) {
                        tracing::warn!(unit = %u.spec.name, "not ready within its start timeout");
                        let text = format!(
                            "ready timeout: not ready within {}; stopped",
                            humantime::format_duration(u.spec.ready.timeout.unwrap_or_default())
                        );
                        self.note_error(id, now, text);
                        self.begin_stop(id, now, StopReason::StartTimeout);
                    }
                }
                TimerKind::MountTimeout => {
                    if matches!(u.state, UnitState::Inactive) && u.want == Want::Up {
                        let problem = u
                            .effective()
                            .mounts
                            .iter()
                            .find_map(|m| self.mount_check(m).err());
                        if let Some(p) = problem {
                            tracing::warn!(unit = %u.spec.name, "gave up waiting for mount: {p}");
                            self.note_error(id, now, format!("gave up waiting for mount: {p}"));
                            self.unit_mut(id).mount_wait_since = None;
                            self.set_state(
                                id,
                                UnitState::Failed {
                                    reason: FailReason::MountTimeout(Box::new(p)),
                                },
                            );
                        }
                    }
                }
                TimerKind::ProbeDue | TimerKind::ReadinessDue => {
                    let pk = if kind == TimerKind::ProbeDue {
                        ProbeKind::Liveness
                    } else {
                        ProbeKind::Readiness
                    };
                    let u = &self.units[id.0 as usize];
                    let probing = match pk {
                        ProbeKind::Liveness => u.health.probing,
                        ProbeKind::Readiness => u.readiness.probing,
                    };
                    if let (Some(run), Some(h)) = (u.state.run(), probe_spec(&u.spec, pk).cloned())
                        && !probing
                        && !matches!(u.state, UnitState::Stopping { .. })
                    {
                        let u = self.unit_mut(id);
                        match pk {
                            ProbeKind::Liveness => u.health.probing = true,
                            ProbeKind::Readiness => u.readiness.probing = true,
                        }
                        let spec = u.spec.clone();
                        self.out.push(Action::StartProbe {
                            run,
                            kind: pk,
                            spec,
                            target: h.target.clone(),
                            timeout: h.timeout,
                        });
                    }
                }
                TimerKind::ReloadTimeout => self.check_reload_waits(now),
                TimerKind::Watchdog => {
                    if matches!(u.state, UnitState::Running { .. }) {
                        tracing::warn!(unit = %u.spec.name, "no WATCHDOG=1 within {:?}: unhealthy", u.spec.ready.watchdog.unwrap_or_default());
                        let text = format!(
                            "no WATCHDOG=1 within {}",
                            humantime::format_duration(u.spec.ready.watchdog.unwrap_or_default())
                        );
                        let on = u
                            .spec
                            .health
                            .as_ref()
                            .map(|h| h.on_unhealthy)
                            .unwrap_or(OnUnhealthy::Restart);
                        if on != OnUnhealthy::Report {
                            self.note_error(id, now, format!("killed: {text}"));
                            self.begin_stop(id, now, StopReason::HealthFailed);
                        } else {
                            self.note_error(id, now, format!("unhealthy: {text}"));
                        }
                    }
                }
            }
        }
    }

    /// Schedule the next probe of `kind`. Before the unit is ready probes
    /// run at least every second, so readiness is noticed promptly even with
    /// a long interval.
    fn arm_probe(&mut self, id: UnitId, now: Instant, kind: ProbeKind, first: bool) {
        let u = &self.units[id.0 as usize];
        let Some(h) = u.probes.of(kind) else {
            return;
        };
        let ready = matches!(u.state, UnitState::Running { ready: true, .. });
        let mut every = h.interval;
        if !ready {
            every = every.min(std::time::Duration::from_secs(1));
        }
        let at = if first && !ready {
            timers::after(now, every.min(std::time::Duration::from_millis(100)))
        } else {
            timers::after(now, every)
        };
        let tk = match kind {
            ProbeKind::Liveness => TimerKind::ProbeDue,
            ProbeKind::Readiness => TimerKind::ReadinessDue,
        };
        self.timers.set(id, tk, at);
    }

    fn on_probe(
        &mut self,
        now: Instant,
        run: RunId,
        kind: ProbeKind,
        ok: bool,
        output: Option<String>,
    ) {
        // A probe result for an old run must never act on a new one.
        let Some(id) = self.run_unit(run) else {
            return;
        };
        let u = self.unit_mut(id);
        // The few numbers this needs, from their copy beside the state
        // (the hot path at scale: no allocation, and no read of the spec).
        let Some(h) = u.probes.of(kind) else {
            return;
        };
        let has_readiness = u.probes.readiness.is_some();
        let probe_readiness = u.probes.ready_by_probe;
        let since = match u.state {
            UnitState::Starting { since, .. } | UnitState::Running { since, .. } => since,
            _ => return,
        };
        let rt = match kind {
            ProbeKind::Liveness => &mut u.health,
            ProbeKind::Readiness => &mut u.readiness,
        };
        rt.probing = false;
        let changed = rt.last != Some(ok);
        rt.last = Some(ok);
        if changed {
            let out = if ok { None } else { output.clone() };
            self.out.push(Action::Publish(EventBody::Probe {
                unit: self.resolved.names.shared(id),
                probe: Cow::Borrowed(match kind {
                    ProbeKind::Liveness => "liveness",
                    ProbeKind::Readiness => "readiness",
                }),
                passing: ok,
                output: out,
            }));
        }
        let u = self.unit_mut(id);
        let rt = match kind {
            ProbeKind::Liveness => &mut u.health,
            ProbeKind::Readiness => &mut u.readiness,
        };
        if kind == ProbeKind::Liveness && !ok {
            u.history.health_failures = u.history.health_failures.saturating_add(1);
        }
        if output.is_some() || ok {
            rt.last_output = output;
        }
        if ok {
            rt.consecutive_failures = 0;
            rt.consecutive_successes = rt.consecutive_successes.saturating_add(1);
            let enough = rt.consecutive_successes >= h.success_threshold;
            // The readiness probe decides readiness when there is one; the
            // liveness probe does only when there is not.
            let decides = kind == ProbeKind::Readiness || !has_readiness;
            if enough && decides {
                if let UnitState::Running {
                    run,
                    pid,
                    since,
                    ready: false,
                } = u.state
                {
                    tracing::info!(unit = %u.spec.name, "ready again (readiness probe passes)");
                    self.set_state(
                        id,
                        UnitState::Running {
                            run,
                            pid,
                            since,
                            ready: true,
                        },
                    );
                } else if probe_readiness {
                    self.mark_ready(id, now, ReadyKind::Probe);
                }
            }
        } else {
            rt.consecutive_successes = 0;
            let in_start_period = now.saturating_duration_since(since) < h.start_period;
            // Not ready yet is not unhealthy: failures count only once this
            // run has been ready (it is `Running`, even if a readiness probe
            // took readiness away since) and the start period is over.
            // Before that, `[ready] timeout` governs start-up (Kubernetes'
            // startupProbe semantics): a database in crash recovery is not
            // killed for refusing connections.
            let been_ready = matches!(u.state, UnitState::Running { .. });
            if !in_start_period && been_ready {
                rt.consecutive_failures = rt.consecutive_failures.saturating_add(1);
            }
            if rt.consecutive_failures >= h.failure_threshold {
                let name = u.spec.name.clone();
                match kind {
                    ProbeKind::Readiness => {
                        // Not ready: dependents not yet started wait;
                        // nothing is restarted (that would turn load into a
                        // reconnect storm).
                        if let UnitState::Running {
                            run,
                            pid,
                            since,
                            ready: true,
                        } = u.state
                        {
                            tracing::warn!(unit = %name, "not ready ({} consecutive readiness failures); not restarted", h.failure_threshold);
                            self.set_state(
                                id,
                                UnitState::Running {
                                    run,
                                    pid,
                                    since,
                                    ready: false,
                                },
                            );
                        }
                    }
                    ProbeKind::Liveness => match h.on_unhealthy {
                        OnUnhealthy::Report => {
                            tracing::warn!(unit = %name, "unhealthy ({} consecutive probe failures); on_unhealthy = report", h.failure_threshold);
                            let text =
                                probe_failure_text("unhealthy", h.failure_threshold, &u.health);
                            self.note_error(id, now, text);
                        }
                        OnUnhealthy::Restart | OnUnhealthy::Stop => {
                            tracing::warn!(unit = %name, "unhealthy ({} consecutive probe failures): stopping", h.failure_threshold);
                            let text = probe_failure_text("killed", h.failure_threshold, &u.health);
                            self.note_error(id, now, text);
                            self.begin_stop(id, now, StopReason::HealthFailed);
                            return;
                        }
                    },
                }
            }
        }
        self.arm_probe(id, now, kind, false);
    }

    /// A lock write finished. On failure the commands it was for fail
    /// with what is and is not in effect; the in-memory state keeps
    /// invariant 3 (a new lock holds at once, a release frees only once
    /// durable) and the write is retried with backoff. Nothing else is
    /// affected: this is not fail-closed (the state is known — it is in
    /// memory — it is only not all on disk yet).
    fn on_persisted(&mut self, now: Instant, version: u64, result: Result<(), String>) {
        let ok = result.is_ok();
        self.locks.persisted(version, ok);
        let e = match result {
            Ok(()) => {
                if self.lock_retry.take().is_some() {
                    tracing::info!("the lock state is on disk again");
                }
                return;
            }
            Err(e) => e,
        };
        let backoff = self
            .lock_retry
            .as_ref()
            .map(|r| (r.backoff * 2).min(LOCK_RETRY_MAX))
            .unwrap_or(LOCK_RETRY_MIN);
        tracing::error!(
            "writing the lock state failed: {e}; holding what was asked in memory, retrying in {backoff:?}"
        );
        self.lock_retry = Some(LockRetry {
            why: e.clone(),
            at: Some(timers::after(now, backoff)),
            backoff,
        });
        let retry = "supd retries the write by itself (`supctl status` shows it); freeing the state directory's filesystem lets it succeed";
        let mut keep = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            match p {
                Pending::LockOn {
                    req,
                    unit,
                    holder,
                    version: v,
                    ..
                } if v <= version => {
                    let name = self.units[unit.0 as usize].spec.name.clone();
                    self.reply(
                        req,
                        Response::err(format!(
                            "{holder}'s lock on {name} could not be written to disk ({e}): it is not on disk, so it would not survive a restart of supd. {name} is held down in memory meanwhile; {retry}"
                        )),
                    );
                }
                Pending::LockWrite {
                    req,
                    version: v,
                    kind,
                    ..
                } if v <= version => {
                    let msg = match kind {
                        WriteKind::Release { unit, holders } => format!(
                            "the release of {unit} by {holders} could not be written to disk ({e}): {unit} stays locked until the release is on disk; {retry}"
                        ),
                        WriteKind::Recover => format!(
                            "the recovered lock state could not be written to disk ({e}): supd stays fail-closed until it is; {retry}"
                        ),
                    };
                    self.reply(req, Response::err(msg));
                }
                other => keep.push(other),
            }
        }
        self.pending = keep;
    }

    /// A copy of this engine that settles in full from now on: the oracle
    /// for tests that drive an engine by hand.
    #[cfg(test)]
    pub(crate) fn full_twin(&self) -> Engine {
        let mut e = self.clone();
        e.cfg.settle = SettleMode::Full;
        e
    }

    /// The first difference between this engine's state and `full`'s (the
    /// same events settled in full), for the simulation's oracle. The
    /// dirty-set bookkeeping itself is left out: it is how, not what.
    #[cfg(test)]
    pub(crate) fn oracle_diff(&self, full: &Engine) -> Option<String> {
        if self.units.len() != full.units.len() {
            return Some(format!(
                "{} units vs {}",
                self.units.len(),
                full.units.len()
            ));
        }
        for (i, (a, b)) in self.units.iter().zip(&full.units).enumerate() {
            if a != b {
                return Some(format!(
                    "unit {} ({i}):\n  incremental: {a:?}\n  full:        {b:?}",
                    a.spec.name
                ));
            }
        }
        macro_rules! same {
            ($($f:ident),*) => {$(
                if self.$f != full.$f {
                    return Some(format!(
                        "{}:\n  incremental: {:?}\n  full:        {:?}",
                        stringify!($f), self.$f, full.$f
                    ));
                }
            )*};
        }
        same!(
            next_run,
            timers,
            pending,
            rng,
            shutdown,
            shutdown_done,
            shed,
            starting,
            seen,
            seen_locks,
            seen_lock_state,
            mount_unknown,
            lock_retry,
            locks,
            timeline,
            order,
            required_by,
            ordered_before,
            locks_looked_at
        );
        None
    }

    // ---- settling -------------------------------------------------------

    /// A `notify_reload` unit's sd_notify message during a reload wait:
    /// RELOADING=1 (not older than the request, by MONOTONIC_USEC) and
    /// then READY=1 answer the operator.
    fn reload_progress(&mut self, id: UnitId, run: RunId, msg: &NotifyMsg) {
        let mut done = Vec::new();
        for (i, w) in self.reload_waits.iter_mut().enumerate() {
            if w.unit != id || w.run != run {
                continue;
            }
            if msg.reloading && msg.monotonic_at.is_none_or(|t| t >= w.since) {
                w.reloading = true;
            }
            if msg.ready && w.reloading {
                done.push(i);
            }
        }
        for i in done.into_iter().rev() {
            let w = self.reload_waits.remove(i);
            let name = self.units[id.0 as usize].spec.name.clone();
            self.reply(
                w.req,
                Response::ok(format!(
                    "{}; {name} reloaded (RELOADING=1, then READY=1)",
                    w.text
                )),
            );
        }
    }

    /// Hold `req` until the unit confirms its reload (or `wait` passes).
    fn wait_for_reload(
        &mut self,
        unit: UnitId,
        run: RunId,
        req: ReqId,
        now: Instant,
        wait: Duration,
        text: String,
    ) {
        let deadline = timers::after(now, wait);
        self.timers.set(unit, TimerKind::ReloadTimeout, deadline);
        self.reload_waits.push(ReloadWait {
            req,
            unit,
            run,
            since: now,
            deadline,
            reloading: false,
            text,
        });
    }

    /// Answer reload waits whose run ended or whose time is up.
    fn check_reload_waits(&mut self, now: Instant) {
        let mut keep = Vec::new();
        for w in std::mem::take(&mut self.reload_waits) {
            let u = &self.units[w.unit.0 as usize];
            let name = u.spec.name.clone();
            if u.state.run() != Some(w.run) || !u.state.has_process() {
                self.reply(
                    w.req,
                    Response::err(format!(
                        "{}; but {name} stopped before it reported READY=1",
                        w.text
                    )),
                );
            } else if now >= w.deadline {
                let what = if w.reloading {
                    "READY=1 after its RELOADING=1"
                } else {
                    "RELOADING=1 (sd_notify, with MONOTONIC_USEC) and READY=1"
                };
                tracing::warn!(unit = %name, "reload not confirmed: no {what} within {:?}", w.deadline - w.since);
                self.note_error(w.unit, now, format!("reload not confirmed: no {what}"));
                self.reply(
                    w.req,
                    Response::err(format!(
                        "{}; but {name} did not report {what} within {}",
                        w.text,
                        humantime::format_duration(w.deadline.saturating_duration_since(w.since))
                    )),
                );
            } else {
                if self.timers.get(w.unit, TimerKind::ReloadTimeout).is_none() {
                    self.timers
                        .set(w.unit, TimerKind::ReloadTimeout, w.deadline);
                }
                keep.push(w);
            }
        }
        self.reload_waits = keep;
    }

    /// systemd's OnFailure=: the units a failed unit names are asked to
    /// start again (a completed, failed or skipped one is made inactive),
    /// through `start_blockers` like any automatic start: a maintenance
    /// lock holds them down, and so does an operator's stop (an automatic
    /// path never undoes a deliberate stop — DESIGN.md's incident 1).
    fn activate_on_failure(&mut self) -> bool {
        let failed = std::mem::take(&mut self.on_failure);
        let mut changed = false;
        for id in failed {
            let spec = self.units[id.0 as usize].spec.clone();
            for name in &spec.on_failure {
                let Some(&t) = self.by_name.get(name.as_str()) else {
                    continue;
                };
                if self.units[t.0 as usize].want != Want::Up {
                    tracing::info!(unit = %name, "not started for {} (on_failure): stopped by an operator", spec.name);
                    continue;
                }
                tracing::info!(unit = %name, "started: {} failed (on_failure)", spec.name);
                // Asked again by the (incremental) walks that follow.
                self.mark(t);
                let u = self.unit_mut(t);
                u.attempt = 0;
                match u.state {
                    UnitState::Failed { .. }
                    | UnitState::Exited { .. }
                    | UnitState::Done
                    | UnitState::Skipped { .. } => {
                        self.set_state(t, UnitState::Inactive);
                        changed = true;
                    }
                    UnitState::Inactive => changed = true,
                    UnitState::Backoff { .. }
                    | UnitState::Starting { .. }
                    | UnitState::Running { .. }
                    | UnitState::Stopping { .. }
                    | UnitState::Draining { .. } => {}
                }
            }
        }
        changed
    }

    fn settle(&mut self, now: Instant) {
        // A backoff that has run out changes its unit's decision with no
        // event about the unit.
        while let Some(&(until, id)) = self.backoffs.first() {
            if until > now {
                break;
            }
            self.backoffs.pop_first();
            self.touch(id);
        }
        // Each pass either changes a unit's state or ends the loop; the
        // bound keeps PID 1 safe from a bug turning this into a spin.
        let bound = self.units.len() * 4 + 8;
        for _ in 0..bound {
            let mut changed = self.activate_on_failure();
            changed |= match self.cfg.settle {
                SettleMode::Full => self.stop_pass(now) | self.start_pass(now),
                SettleMode::Incremental => self.stop_pass_dirty(now) | self.start_pass_dirty(now),
            };
            if !changed {
                break;
            }
        }
        if self.cfg.settle == SettleMode::Full {
            self.dirty_stop.clear();
            self.dirty_start.clear();
        }
        self.check_pending();
        self.check_reload_waits(now);
        #[cfg(test)]
        {
            assert_eq!(
                self.with_process,
                self.units.iter().filter(|u| u.state.has_process()).count(),
                "with_process out of step"
            );
            for (i, u) in self.units.iter().enumerate() {
                assert_eq!(
                    u.probes,
                    unit_state::ProbeHot::from_spec(&u.spec),
                    "probe settings of {} out of step with its spec",
                    u.spec.name
                );
                // Published events name a unit from the resolved copy.
                assert_eq!(self.resolved.names.of(UnitId(i as u32)), u.spec.name);
            }
        }
        if let Some(kind) = self.shutdown
            && !self.shutdown_done
            && self.with_process == 0
        {
            self.shutdown_done = true;
            self.out.push(Action::ShutdownComplete(kind));
        }
    }

    /// Why a unit with a process must stop now, if it must (`stop_cause_ref`, owned).
    fn stop_cause(&self, id: UnitId) -> Option<StopReason> {
        self.stop_cause_ref(id).map(Cause::owned)
    }

    /// `stop_cause` without building its answer: a dependency's name is
    /// borrowed from the names table, so asking again a unit whose answer
    /// has not changed (a crash asks each unit of its chain several times)
    /// allocates nothing.
    fn stop_cause_ref(&self, id: UnitId) -> Option<Cause<'_>> {
        let u = &self.units[id.0 as usize];
        let spec = u.effective();
        if self.shutdown.is_some() {
            return Some(Cause::Reason(StopReason::Shutdown));
        }
        if u.removed {
            return Some(Cause::Reason(StopReason::Removed));
        }
        // The effective spec's scalars from their copy (see start_blockers).
        let hot = self.resolved.hot[id.0 as usize];
        if !self.locks.wanted.is_empty() && self.locks.wanted.contains_key(&spec.name) {
            return Some(Cause::Reason(StopReason::Maintenance));
        }
        if u.want == Want::Down {
            return Some(Cause::Reason(StopReason::Operator));
        }
        if self.shed.is_some_and(|l| hot.priority <= l) {
            return Some(Cause::Reason(StopReason::Shed));
        }
        if self.shed.is_none() && self.auto_shed.sheds_as(hot.priority, hot.sheddable) {
            return Some(Cause::Reason(StopReason::Pressure));
        }
        if u.restart_requested {
            return Some(Cause::Reason(StopReason::Restart));
        }
        // The running spec's mounts: the copy describes the effective
        // spec, which is the running one unless a reload waits.
        // Without mounts not even the list's length is read: it lies on a
        // line of the spec that nothing else here reads.
        let mounts: &[crate::unit::MountReq] = if u.next_spec.is_some() || hot.has_mounts {
            &u.spec.mounts
        } else {
            &[]
        };
        for m in mounts {
            if m.on_loss != OnLoss::Stop {
                continue;
            }
            let lost = match &self.mount_unknown {
                // Within the grace the last table read still decides.
                Some(unknown) if !unknown.expired => self.mounts.check(m).err(),
                Some(_) | None => self.mount_check(m).err(),
            };
            if let Some(p) = lost {
                return Some(Cause::Reason(StopReason::MountLost(Box::new(p))));
            }
        }
        // By id (resolved at install): the names are read only to say why,
        // from their copy beside the ids (not from the spec).
        for (k, d) in self.resolved.requires.of(id).iter().enumerate() {
            match d {
                Some(d) if self.is_up(*d) => {}
                _ => {
                    let name = self.resolved.requires.name(id, k);
                    return Some(Cause::Dependency(name));
                }
            }
        }
        for (k, w) in self.resolved.part_of.of(id).iter().enumerate() {
            let whole = self.resolved.part_of.name(id, k);
            if self.part_held_down_id(*w, whole).is_some() {
                return Some(Cause::Dependency(whole));
            }
        }
        None
    }

    /// Every unit, dependents before what they require.
    fn stop_pass(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for i in (0..self.order.len()).rev() {
            changed |= self.stop_one(self.order[i], now);
        }
        changed
    }

    /// The dirty units, in the order `stop_pass` would ask them: a unit
    /// marked behind the walk waits for the next pass, as it would there.
    fn stop_pass_dirty(&mut self, now: Instant) -> bool {
        let mut changed = false;
        let mut cursor = u32::MAX;
        while let Some(p) = self.dirty_stop.last_before(cursor) {
            self.dirty_stop.remove(p);
            cursor = p;
            changed |= self.stop_one(self.order[p as usize], now);
        }
        changed
    }

    /// Must `id` stop (or its backoff end) now? True when something changed.
    fn stop_one(&mut self, id: UnitId, now: Instant) -> bool {
        self.asked += 1;
        let mut changed = false;
        let u = &self.units[id.0 as usize];
        match &u.state {
            UnitState::Starting { .. } | UnitState::Running { .. } => {
                let cause = self.stop_cause_ref(id);
                let must_stop = cause.is_some();
                let pending = &self.units[id.0 as usize].stop_pending;
                let same = match (&cause, pending) {
                    (None, None) => true,
                    (Some(c), Some(p)) => c.is(p),
                    _ => false,
                };
                if !same {
                    let cause = cause.map(Cause::owned);
                    self.units[id.0 as usize].stop_pending = cause;
                    changed = true;
                    // Dependents read it (`is_ready`, `is_up`).
                    self.mark(id);
                }
                // `stop_pending` is the cause now.
                if must_stop
                    && self.dependents_down(id)
                    && let Some(reason) = self.units[id.0 as usize].stop_pending.clone()
                {
                    self.begin_stop(id, now, reason);
                    changed = true;
                }
            }
            UnitState::Backoff { .. } => {
                // A backoff is an automatic restart in waiting: any
                // reason that forbids starting cancels it.
                if self.start_blockers(id, now, true).iter().any(|b| {
                    b.refuses_manual_start()
                        || matches!(
                            b,
                            Blocker::OperatorStopped
                                | Blocker::Shed(_)
                                | Blocker::Pressure { until: None, .. }
                        )
                }) {
                    self.timers.cancel(id, TimerKind::RestartAt);
                    self.set_state(id, UnitState::Inactive);
                    changed = true;
                }
            }
            UnitState::Done => {
                // A completed unit with a stop command (a oneshot, or
                // `remain_after_exit`): stopping it runs the commands,
                // as a run of its own whose exit ends the stop.
                let spec = u.effective().clone();
                // ...or its stop-post commands, deferred to the stop
                // for a unit that remained after its exit.
                let stop_posts = spec.remain_after_exit && !spec.exec_stop_post.is_empty();
                if (spec.stop.exec.is_some() || stop_posts)
                    && let Some(reason) = self.stop_cause(id)
                    && !matches!(reason, StopReason::Restart)
                    && self.dependents_down(id)
                {
                    let u = self.unit_mut(id);
                    if let Some(next) = u.next_spec.take() {
                        u.set_spec(next);
                    }
                    let spec = u.spec.clone();
                    let run = self.new_run(id);
                    tracing::info!(unit = %spec.name, "stopping: {reason} (running its stop command)");
                    self.enter_stopping(id, run, None, reason, now, spec.stop.timeout);
                    // The stop command alone is this run's process, not
                    // contained (no `Spawned` names a cgroup for it): its
                    // exit ends the run.
                    self.unit_mut(id).cgroup = None;
                    self.out.push(Action::StopExec { run, spec });
                    changed = true;
                }
            }
            UnitState::Inactive
            | UnitState::Stopping { .. }
            | UnitState::Draining { .. }
            | UnitState::Failed { .. }
            | UnitState::Exited { .. }
            | UnitState::Skipped { .. } => {}
        }
        changed
    }

    /// Have everything that must stop before `id` stopped? At shutdown that
    /// is everything ordered after it, else what requires it.
    fn dependents_down(&self, id: UnitId) -> bool {
        let list = if self.shutdown.is_some() {
            self.ordered_before.of(id)
        } else {
            self.required_by.of(id)
        };
        list.iter()
            .all(|d| !self.units[d.0 as usize].state.has_process())
    }

    fn begin_stop(&mut self, id: UnitId, now: Instant, reason: StopReason) {
        let u = &self.units[id.0 as usize];
        let Some(run) = u.state.run() else {
            return;
        };
        if matches!(u.state, UnitState::Stopping { .. }) {
            return;
        }
        let pid = u.state.pid();
        let spec = u.spec.clone();
        tracing::info!(unit = %spec.name, "stopping: {reason}");
        self.timers.cancel(id, TimerKind::StartTimeout);
        self.timers.cancel(id, TimerKind::ProbeDue);
        self.timers.cancel(id, TimerKind::ReadinessDue);
        self.timers.cancel(id, TimerKind::Watchdog);
        self.out.push(Action::CancelProbe { run });
        if pid.is_some() {
            self.out.push(stop_action(run, &spec));
        }
        self.enter_stopping(id, run, pid, reason, now, spec.stop.timeout);
    }

    /// Stopping starts its clock: SIGKILL (or the group kill) once `timeout`
    /// has passed.
    fn enter_stopping(
        &mut self,
        id: UnitId,
        run: RunId,
        pid: Option<i32>,
        reason: StopReason,
        now: Instant,
        timeout: std::time::Duration,
    ) {
        self.timers
            .set(id, TimerKind::KillAfter, timers::after(now, timeout));
        self.set_state(
            id,
            UnitState::Stopping {
                run,
                pid,
                reason,
                killed: false,
                since: now,
            },
        );
    }

    /// Every unit, dependencies before their dependents.
    fn start_pass(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for i in 0..self.order.len() {
            changed |= self.start_one(self.order[i], now);
        }
        changed
    }

    /// The dirty units, in the order `start_pass` would ask them — and,
    /// while a start slot is free, the units queued behind the cap (which
    /// `start_pass` would ask too; while the cap is full their answer
    /// cannot change, so they are skipped).
    fn start_pass_dirty(&mut self, now: Instant) -> bool {
        let mut changed = std::mem::take(&mut self.cap_opened);
        let cap = self.cfg.max_parallel_starts as usize;
        let mut at: Option<u32> = None;
        loop {
            let dirty = self.dirty_start.first_after(at);
            let waiter = if self.starting < cap {
                self.cap_waiters.first_after(at)
            } else {
                None
            };
            let Some(p) = dirty.into_iter().chain(waiter).min() else {
                break;
            };
            self.dirty_start.remove(p);
            changed |= self.start_one(self.order[p as usize], now);
            at = Some(p);
        }
        // A slot that opened during this pass (behind `at`) is walked by
        // the next one.
        changed || self.cap_opened
    }

    /// May `id` start now? Starts it if so. True when it started (or hit
    /// its start limit).
    fn start_one(&mut self, id: UnitId, now: Instant) -> bool {
        self.asked += 1;
        let u = &self.units[id.0 as usize];
        let startable = match u.state {
            UnitState::Inactive => true,
            UnitState::Backoff { until } => until <= now,
            _ => false,
        };
        if !startable {
            if u.mount_wait_since.is_some() {
                self.unit_mut(id).mount_wait_since = None;
                self.timers.cancel(id, TimerKind::MountTimeout);
            }
            let p = self.pos[id.0 as usize];
            self.cap_waiters.remove(p);
            return false;
        }
        let blockers = self.start_blockers(id, now, false);
        if let Some(b) = blockers.first() {
            self.timeline.on_blocker(id, b);
        }
        let p = self.pos[id.0 as usize];
        if let Some(Blocker::StartCap { .. }) = blockers.first() {
            self.cap_waiters.insert(p);
        } else {
            self.cap_waiters.remove(p);
        }
        match blockers.first() {
            None => self.try_start(id, now),
            Some(Blocker::MountMissing(_)) => {
                self.arm_mount_timeout(id, now);
                false
            }
            Some(_) => false,
        }
    }

    fn arm_mount_timeout(&mut self, id: UnitId, now: Instant) {
        let u = &self.units[id.0 as usize];
        if u.mount_wait_since.is_some() {
            return;
        }
        let timeout = u
            .effective()
            .mounts
            .iter()
            .filter(|m| self.mount_check(m).is_err())
            .filter_map(|m| m.timeout)
            .min();
        self.unit_mut(id).mount_wait_since = Some(now);
        if let Some(t) = timeout {
            self.timers
                .set(id, TimerKind::MountTimeout, timers::after(now, t));
        }
    }

    /// Start `id` now. Callers have checked `start_blockers`; this applies
    /// the restart budget (automatic starts only) and emits the spawn.
    fn try_start(&mut self, id: UnitId, now: Instant) -> bool {
        let u = &mut self.units[id.0 as usize];
        if let Some(next) = u.next_spec.take() {
            u.set_spec(next);
        }
        let spec: Arc<UnitSpec> = u.spec.clone();
        // Only restarts after a failure count against the start limit: a
        // unit coming back because its mount or dependency came back is
        // not a crash loop (the dependency's own limit covers its flapping).
        let from_backoff = matches!(u.state, UnitState::Backoff { .. });
        if u.manual_start {
            u.manual_start = false;
        } else if from_backoff {
            if !u.window.allows(now, &spec.restart) {
                tracing::error!(unit = %spec.name, "start limit hit: more than {} starts in {:?}; failed until an operator acts", spec.restart.burst, spec.restart.interval);
                self.timers.cancel(id, TimerKind::RestartAt);
                self.set_state(
                    id,
                    UnitState::Failed {
                        reason: FailReason::StartLimit {
                            burst: spec.restart.burst,
                            interval_secs: spec.restart.interval.as_secs(),
                        },
                    },
                );
                return true;
            }
            u.window.record(now, &spec.restart);
        }
        if matches!(u.state, UnitState::Backoff { .. }) {
            u.restarts = u.restarts.saturating_add(1);
        }
        u.history.started = Some(now);
        u.mount_wait_since = None;
        u.group_empty = None;
        u.status_text = None;
        u.health = Default::default();
        u.readiness = Default::default();
        self.timers.cancel(id, TimerKind::MountTimeout);
        self.timers.cancel(id, TimerKind::RestartAt);
        let run = self.new_run(id);
        if let Some(t) = spec.ready.timeout {
            self.timers
                .set(id, TimerKind::StartTimeout, timers::after(now, t));
        }
        tracing::info!(unit = %spec.name, "starting");
        self.set_state(
            id,
            UnitState::Starting {
                run,
                pid: None,
                since: now,
            },
        );
        self.out.push(Action::Spawn {
            run,
            mounts: spec.mounts.clone(),
            spec,
        });
        true
    }

    fn check_pending(&mut self) {
        let mut keep = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            // A lock released before its unit was down was never fully in
            // effect: say so rather than report success.
            if let Pending::LockOn {
                req, unit, holder, ..
            } = &p
            {
                let name = &self.units[unit.0 as usize].spec.name;
                let held = self
                    .locks
                    .wanted
                    .get(name)
                    .is_some_and(|hs| hs.iter().any(|h| h.holder == *holder));
                if !held {
                    let msg = format!(
                        "{holder}'s lock on {name} was released before {name} had stopped; it is not under maintenance by {holder}"
                    );
                    self.reply(*req, Response::err(msg));
                    continue;
                }
            }
            let done = match &p {
                Pending::Stopped { unit, .. } => !self.units[unit.0 as usize].state.has_process(),
                Pending::Restarted { unit, old, .. } => {
                    let u = &self.units[unit.0 as usize];
                    u.state.run() != *old && !u.restart_requested
                }
                Pending::LockOn { unit, version, .. } => {
                    self.locks.persisted >= *version
                        && !self.units[unit.0 as usize].state.has_process()
                }
                Pending::LockWrite { version, .. } => self.locks.persisted >= *version,
            };
            if !done {
                keep.push(p);
                continue;
            }
            match p {
                Pending::Stopped { req, message, .. }
                | Pending::Restarted { req, message, .. }
                | Pending::LockOn { req, message, .. } => self.reply(req, Response::ok(message)),
                Pending::LockWrite {
                    req, unit, message, ..
                } => {
                    let tail = unit.map(|u| self.release_outcome(u)).unwrap_or_default();
                    self.reply(req, Response::ok(format!("{message}{tail}")));
                }
            }
        }
        self.pending = keep;
    }
}

/// How to ask `run` to stop: its `[stop] exec` command, else its signal
/// to the processes its `kill_mode` names.
fn stop_action(run: RunId, spec: &Arc<UnitSpec>) -> Action {
    match (&spec.stop.exec, spec.stop.kill_mode) {
        (Some(_), _) => Action::StopExec {
            run,
            spec: spec.clone(),
        },
        (None, KillMode::Group) => Action::Signal {
            run,
            signal: spec.stop.signal,
        },
        (None, KillMode::Main | KillMode::Mixed) => Action::SignalMain {
            run,
            signal: spec.stop.signal,
        },
    }
}

/// The probe of `kind` a unit declares, if any.
/// The probe of `kind` a unit declares, if any.
fn probe_spec(spec: &UnitSpec, kind: ProbeKind) -> Option<&crate::unit::HealthSpec> {
    match kind {
        ProbeKind::Liveness => spec.health.as_ref(),
        ProbeKind::Readiness => spec.readiness.as_ref(),
    }
}

/// "killed: health probe failed 3× (last output: ...)".
fn probe_failure_text(what: &str, threshold: u32, rt: &unit_state::HealthRt) -> String {
    let mut t = format!("{what}: health probe failed {threshold}×");
    if let Some(o) = rt
        .last_output
        .as_deref()
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        t.push_str(&format!(" (last output: {o})"));
    }
    t
}

/// `SIGTERM`-style name of a signal number, for messages.
pub fn signal_name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}
