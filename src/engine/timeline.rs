//! The boot, as it happened: per unit, when it became startable, what it
//! waited on, when it was spawned and when it became ready.
//!
//! Owns: the `Timeline` — for every unit two bounded records of phases
//! (the first cycle since supd started, "boot", and the latest cycle,
//! "current") — and the two read-only views built from the engine for
//! `supctl analyze` and `supctl graph`. The engine feeds it from two places
//! only: `set_state` (every state change) and `start_pass` (the first
//! blocker `start_blockers()` returned for a unit that may not start yet).
//! A phase is recorded only when it changes, so the steady state costs a
//! comparison per unit per settle.
//!
//! Must never: decide anything (it watches; `start_blockers()` stays the one
//! decision function), read a clock (time arrives through `tick`), or grow
//! without bound (at most `MAX_SEGMENTS` phases per record, two records per
//! unit; older phases are dropped and counted).

use std::collections::VecDeque;
use std::time::Instant;

use crate::mounts::MountProblem;
use crate::protocol::{
    GraphMount, GraphReport, GraphUnit, Phase, RunRecord, Segment, TimelineReport, UnitTimeline,
    WaitKind,
};
use crate::unit::UnitKind;

use super::blockers::Blocker;
use super::commands::holder_info;
use super::event::ExitStatus;
use super::unit_state::{FailReason, Unit, UnitState};
use super::{Engine, UnitId};

/// Phases kept per record. A boot cycle is typically two to four (waiting,
/// starting, ready); a unit flapping in backoff adds three per attempt.
pub const MAX_SEGMENTS: usize = 24;

/// What a unit waited on: the first blocker, reduced to what the timeline
/// shows. Compared against each new blocker without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    Mount(Box<MountProblem>),
    /// Holders, in words: "alice (resize volume), bob (backup)".
    Lock(Box<str>),
    /// Why the lock state is unknown ("not loaded yet", a corrupt file).
    LockUnknown(Box<str>),
    Dependency(Box<str>),
    Ordering(Box<str>),
    Cap(u32),
    /// Restart backoff; the cause is what ended the previous run.
    Backoff(Option<Cause>),
    Operator,
    Shed,
    Pressure,
    Shutdown,
    Removed,
}

impl Wait {
    fn of(b: &Blocker) -> Wait {
        match b {
            Blocker::ShuttingDown => Wait::Shutdown,
            Blocker::Removed => Wait::Removed,
            Blocker::Locked { holders } => Wait::Lock(holders_text(holders).into()),
            Blocker::LockStateUnknown(why) => Wait::LockUnknown(why.as_str().into()),
            Blocker::OperatorStopped => Wait::Operator,
            Blocker::Shed(_) => Wait::Shed,
            Blocker::Pressure { .. } => Wait::Pressure,
            Blocker::MountMissing(p) => Wait::Mount(Box::new(p.clone())),
            Blocker::WaitingFor { unit, .. } => Wait::Dependency(unit.as_str().into()),
            Blocker::Ordering { unit } => Wait::Ordering(unit.as_str().into()),
            Blocker::Backoff { .. } => Wait::Backoff(None),
            Blocker::StartCap { cap } => Wait::Cap(*cap),
        }
    }

    /// Is `b` the wait already recorded? (No allocation on the common path.)
    fn is(&self, b: &Blocker) -> bool {
        match (self, b) {
            (Wait::Shutdown, Blocker::ShuttingDown)
            | (Wait::Removed, Blocker::Removed)
            | (Wait::Operator, Blocker::OperatorStopped)
            | (Wait::Shed, Blocker::Shed(_))
            | (Wait::Pressure, Blocker::Pressure { .. })
            | (Wait::Backoff(_), Blocker::Backoff { .. }) => true,
            (Wait::Lock(h), Blocker::Locked { holders }) => **h == holders_text(holders),
            (Wait::LockUnknown(a), Blocker::LockStateUnknown(b)) => **a == **b,
            (Wait::Mount(p), Blocker::MountMissing(q)) => **p == *q,
            (Wait::Dependency(u), Blocker::WaitingFor { unit, .. })
            | (Wait::Ordering(u), Blocker::Ordering { unit }) => **u == **unit,
            (Wait::Cap(a), Blocker::StartCap { cap }) => a == cap,
            _ => false,
        }
    }
}

/// What ended a run, kept as it came until someone reads the timeline:
/// a crash loop's every backoff formatted its exit status into a new string
/// and the next cycle freed it (at ten thousand units, in a cold heap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Exit(ExitStatus),
    Words(&'static str),
    Text(Box<str>),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Exit(status) => status.fmt(f),
            Cause::Words(w) => f.write_str(w),
            Cause::Text(t) => f.write_str(t),
        }
    }
}

fn holders_text(holders: &[super::locks::Holder]) -> String {
    holders
        .iter()
        .map(|h| format!("{} ({})", h.holder, h.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One phase of a unit's cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Waiting(Wait),
    /// Spawn asked (the driver creates the process at once), not ready yet.
    Starting,
    Ready,
    /// Running, but its readiness probe fails.
    NotReady,
    Stopping(Box<str>),
    Failed(Box<str>),
    Exited(Box<str>),
    /// A oneshot that completed: ready for its dependents.
    Done,
}

impl Step {
    /// After this phase, the next change begins a new cycle: the unit was
    /// up, or came to rest (failed, exited, stopped by an operator).
    fn ends_cycle(&self) -> bool {
        matches!(
            self,
            Step::Ready
                | Step::Done
                | Step::Failed(_)
                | Step::Exited(_)
                | Step::Waiting(Wait::Operator | Wait::Removed | Wait::Shutdown)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Seg {
    at: Instant,
    step: Step,
}

/// One cycle of one unit: from the moment it became startable.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    start: Instant,
    segs: VecDeque<Seg>,
    dropped: u32,
}

impl Record {
    fn new(at: Instant, step: Step) -> Record {
        let mut segs = VecDeque::with_capacity(4);
        segs.push_back(Seg { at, step });
        Record {
            start: at,
            segs,
            dropped: 0,
        }
    }

    fn push(&mut self, at: Instant, step: Step) {
        // A wait superseded in the same instant (several blockers cleared
        // by one event) is noise, not a phase.
        if let Some(last) = self.segs.back()
            && last.at == at
            && matches!(last.step, Step::Waiting(_))
        {
            self.segs.pop_back();
            if self.segs.back().is_some_and(|s| s.step == step) {
                return;
            }
            if self.segs.is_empty() {
                self.segs.push_back(Seg { at, step });
                return;
            }
        }
        if self.segs.len() >= MAX_SEGMENTS {
            self.segs.pop_front();
            self.dropped = self.dropped.saturating_add(1);
        }
        self.segs.push_back(Seg { at, step });
    }

    /// Begin a new cycle in this record (what `Record::new` makes).
    fn restart(&mut self, at: Instant, step: Step) {
        self.segs.clear();
        self.segs.push_back(Seg { at, step });
        self.start = at;
        self.dropped = 0;
    }

    fn last(&self) -> Option<&Step> {
        self.segs.back().map(|s| &s.step)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Line {
    boot: Option<Record>,
    /// The latest cycle once the boot cycle has ended.
    current: Option<Record>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// The engine's first event: 0 on every time axis.
    origin: Option<Instant>,
    now: Option<Instant>,
    lines: Vec<Line>,
    /// Why the run that is about to back off ended (`note_failure`, read
    /// by the `Backoff` state change that follows at once).
    failure: Option<(UnitId, Cause)>,
}

impl Timeline {
    /// The time of the event being handled; all records use it.
    pub fn tick(&mut self, now: Instant) {
        self.origin.get_or_insert(now);
        self.now = Some(now);
    }

    fn enter(&mut self, id: UnitId, step: Step) {
        let Some(now) = self.now else {
            return;
        };
        let i = id.0 as usize;
        if self.lines.len() <= i {
            self.lines.resize_with(i + 1, Line::default);
        }
        let line = &mut self.lines[i];
        let active = match (&mut line.current, &mut line.boot) {
            (Some(c), _) => c,
            (None, Some(b)) => b,
            (None, None) => {
                line.boot = Some(Record::new(now, step));
                return;
            }
        };
        match active.last() {
            Some(last) if *last == step => {}
            Some(last) if last.ends_cycle() => match &mut line.current {
                // A new cycle replaces the latest in place: its buffer is
                // reused (a restart used to free one and allocate one).
                Some(c) => c.restart(now, step),
                None => line.current = Some(Record::new(now, step)),
            },
            _ => active.push(now, step),
        }
    }

    /// How long `id` took at boot from becoming startable to ready (or
    /// done, for a oneshot); `None` until it got there.
    pub fn boot_startup(&self, id: UnitId) -> Option<std::time::Duration> {
        let rec = self.lines.get(id.0 as usize)?.boot.as_ref()?;
        let up = rec
            .segs
            .iter()
            .find(|s| matches!(s.step, Step::Ready | Step::Done))?;
        Some(up.at.saturating_duration_since(rec.start))
    }

    /// The run of `id` ended badly; a backoff follows. Its cause is shown
    /// on the backoff (a spawn error has no exit status to show).
    pub fn note_failure(&mut self, id: UnitId, reason: &FailReason) {
        let why = match reason {
            FailReason::Exited(status) => Cause::Exit(*status),
            FailReason::SpawnFailed(e) => Cause::Text(format!("could not start: {e}").into()),
            FailReason::StartTimeout => Cause::Words("was not ready within its start timeout"),
            FailReason::Unhealthy => Cause::Words("failed its health probe"),
            FailReason::StartLimit { .. }
            | FailReason::MountTimeout(_)
            | FailReason::Carried(_) => Cause::Text(reason.to_string().into()),
        };
        self.failure = Some((id, why));
    }

    /// `unit` has just changed state.
    pub fn on_state(&mut self, id: UnitId, unit: &Unit) {
        let step = match &unit.state {
            // What an inactive unit waits on is its first blocker; the
            // start pass that follows every state change records it.
            UnitState::Inactive => return,
            UnitState::Starting { .. } => Step::Starting,
            UnitState::Running { ready: true, .. } => Step::Ready,
            UnitState::Running { ready: false, .. } => Step::NotReady,
            UnitState::Stopping { reason, .. } => Step::Stopping(reason.to_string().into()),
            // The main process is gone; the rest of the unit's processes
            // are still on their way down.
            UnitState::Draining { status, .. } => Step::Stopping(
                format!("main process {status}; its other processes are ending").into(),
            ),
            UnitState::Backoff { .. } => {
                let noted = match self.failure.take() {
                    Some((who, why)) if who == id => Some(why),
                    _ => None,
                };
                let why = noted.or_else(|| unit.last_exit.map(Cause::Exit));
                Step::Waiting(Wait::Backoff(why))
            }
            UnitState::Failed { reason } => Step::Failed(reason.to_string().into()),
            UnitState::Exited { status } => Step::Exited(status.to_string().into()),
            UnitState::Done => Step::Done,
            // A condition did not hold: nothing ran, nothing failed.
            UnitState::Skipped { why } => Step::Exited(format!("skipped: {why}").into()),
        };
        self.enter(id, step);
    }

    /// The start pass found `id` startable but held by `b` (the first
    /// blocker in the decision order).
    pub fn on_blocker(&mut self, id: UnitId, b: &Blocker) {
        let current = self.lines.get(id.0 as usize).and_then(|l| {
            l.current
                .as_ref()
                .or(l.boot.as_ref())
                .and_then(Record::last)
        });
        if let Some(Step::Waiting(w)) = current
            && w.is(b)
        {
            return;
        }
        self.enter(id, Step::Waiting(Wait::of(b)));
    }

    /// The phase being recorded for `id` now.
    #[cfg(test)]
    pub(crate) fn last_step(&self, id: UnitId) -> Option<&Step> {
        let l = self.lines.get(id.0 as usize)?;
        l.current.as_ref().or(l.boot.as_ref())?.last()
    }

    #[cfg(test)]
    pub(crate) fn segments(&self, id: UnitId) -> usize {
        self.lines.get(id.0 as usize).map_or(0, |l| {
            l.boot.as_ref().map_or(0, |r| r.segs.len())
                + l.current.as_ref().map_or(0, |r| r.segs.len())
        })
    }

    fn ms(&self, t: Instant) -> u64 {
        let origin = self.origin.unwrap_or(t);
        u64::try_from(t.saturating_duration_since(origin).as_millis()).unwrap_or(u64::MAX)
    }

    fn record(&self, r: &Record) -> RunRecord {
        let mut segments = Vec::with_capacity(r.segs.len());
        for (i, s) in r.segs.iter().enumerate() {
            let end_ms = r.segs.get(i + 1).map(|n| self.ms(n.at));
            segments.push(segment(&s.step, self.ms(s.at), end_ms));
        }
        RunRecord {
            start_ms: self.ms(r.start),
            dropped: r.dropped,
            segments,
        }
    }
}

fn segment(step: &Step, start_ms: u64, end_ms: Option<u64>) -> Segment {
    let mut s = Segment {
        phase: Phase::Waiting,
        wait: None,
        cause: None,
        unit: None,
        path: None,
        start_ms,
        end_ms,
    };
    match step {
        Step::Waiting(w) => {
            let (kind, cause) = match w {
                Wait::Mount(p) => {
                    s.path = Some(p.path().display().to_string());
                    (WaitKind::Mount, p.to_string())
                }
                Wait::Lock(h) => (WaitKind::Lock, format!("held by {h}")),
                Wait::LockUnknown(why) => (
                    WaitKind::LockUnknown,
                    format!("the lock state was unknown ({why}); only essential units start"),
                ),
                Wait::Dependency(u) => {
                    s.unit = Some(u.to_string());
                    (WaitKind::Dependency, format!("required unit {u}"))
                }
                Wait::Ordering(u) => {
                    s.unit = Some(u.to_string());
                    (WaitKind::Ordering, format!("{u} (ordered after it)"))
                }
                Wait::Cap(c) => (
                    WaitKind::Cap,
                    format!("the start cap (max_parallel_starts = {c})"),
                ),
                Wait::Backoff(after) => (
                    WaitKind::Backoff,
                    match after {
                        Some(e) => format!("restart backoff after it {e}"),
                        None => "restart backoff".to_string(),
                    },
                ),
                Wait::Operator => (WaitKind::Operator, "stopped by an operator".to_string()),
                Wait::Shed => (WaitKind::Shed, "shed by an operator".to_string()),
                Wait::Pressure => (WaitKind::Shed, "shed under pressure".to_string()),
                Wait::Shutdown => (WaitKind::Shutdown, "supd is shutting down".to_string()),
                Wait::Removed => (WaitKind::Removed, "its unit file was removed".to_string()),
            };
            s.wait = Some(kind);
            s.cause = Some(cause);
        }
        Step::Starting => s.phase = Phase::Starting,
        Step::Ready => s.phase = Phase::Ready,
        Step::NotReady => s.phase = Phase::NotReady,
        Step::Done => s.phase = Phase::Done,
        Step::Stopping(why) => {
            s.phase = Phase::Stopping;
            s.cause = Some(why.to_string());
        }
        Step::Failed(why) => {
            s.phase = Phase::Failed;
            s.cause = Some(why.to_string());
        }
        Step::Exited(why) => {
            s.phase = Phase::Exited;
            s.cause = Some(why.to_string());
        }
    }
    s
}

impl Engine {
    /// Units a report shows: defined ones, and removed ones still running.
    fn shown(&self) -> impl Iterator<Item = (UnitId, &Unit)> {
        self.units()
            .filter(|(_, u)| !u.removed || u.state.has_process())
    }

    /// `supctl analyze`: every unit's boot and current cycles, times in ms
    /// since supd's first event. `wall_ms` (the request's wall clock)
    /// dates the origin for display only.
    pub fn timeline_report(&self, now: Instant, wall_ms: u64) -> TimelineReport {
        let tl = &self.timeline;
        let now_ms = tl.ms(now);
        let units = self
            .shown()
            .map(|(id, u)| {
                let line = tl.lines.get(id.0 as usize);
                UnitTimeline {
                    name: u.spec.name.clone(),
                    state: self.state_word(id).to_string(),
                    kind: match u.effective().kind {
                        UnitKind::Longrun if u.spec.forking => "forking",
                        UnitKind::Longrun => "longrun",
                        UnitKind::Oneshot => "oneshot",
                    }
                    .to_string(),
                    boot: line.and_then(|l| l.boot.as_ref()).map(|r| tl.record(r)),
                    current: line.and_then(|l| l.current.as_ref()).map(|r| tl.record(r)),
                }
            })
            .collect();
        TimelineReport {
            origin_unix_ms: wall_ms.saturating_sub(now_ms),
            now_ms,
            max_parallel_starts: self.cfg.max_parallel_starts,
            units,
        }
    }

    /// `supctl graph`: the declared edges, each unit's mounts (and whether
    /// they are there now) and its maintenance holders.
    pub fn graph_report(&self, wall_ms: u64) -> GraphReport {
        let units = self
            .shown()
            .map(|(id, u)| {
                let spec = u.effective();
                GraphUnit {
                    name: spec.name.clone(),
                    state: self.state_word(id).to_string(),
                    ready: self.is_ready(id),
                    requires: spec.requires.clone(),
                    wants: spec.wants.clone(),
                    after: spec.after.clone(),
                    mounts: spec
                        .mounts
                        .iter()
                        .map(|m| {
                            let problem = self.mounts.check(m).err();
                            GraphMount {
                                path: m.path.display().to_string(),
                                fstype: m.fstype.clone(),
                                mounted: problem.is_none(),
                                problem: problem.map(|p| p.to_string()),
                            }
                        })
                        .collect(),
                    maintenance: self
                        .locks
                        .holders(&spec.name)
                        .map(|hs| hs.iter().map(|h| holder_info(h, wall_ms)).collect()),
                }
            })
            .collect();
        GraphReport { units }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Scenarios with a simulated clock; `boot_scenario` is also what the
    //! `analyze` renderers are tested against.

    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use super::MAX_SEGMENTS;
    use crate::engine::locks::{Holder, LockMap};
    use crate::engine::{
        Action, Engine, EngineConfig, Event, ExitStatus, LocksLoad, NotifyMsg, PeerInfo, ReqId,
    };
    use crate::mounts::{MountEntry, MountTable};
    use crate::protocol::{Phase, Request, RunRecord, TimelineReport, WaitKind};
    use crate::unit::{MountReq, OnLoss, ReadyKind, RestartPolicy, UnitKind, UnitSpec};

    pub(crate) struct W {
        pub e: Engine,
        pub t0: Instant,
        pub now: Instant,
        next_pid: i32,
        next_req: u64,
        /// Answer spawns with this error instead of a pid.
        pub spawn_error: Option<String>,
    }

    fn table(paths: &[&str]) -> MountTable {
        let entry = |id: u32, p: &str| MountEntry {
            mount_id: id,
            parent_id: 1,
            root: "/".into(),
            mount_point: PathBuf::from(p),
            mount_options: vec!["rw".into()],
            fstype: "tmpfs".into(),
            source: "t".into(),
            super_options: vec![],
        };
        let mut entries = vec![entry(1, "/")];
        for (i, p) in paths.iter().enumerate() {
            entries.push(entry(2 + i as u32, p));
        }
        MountTable {
            entries,
            skipped: 0,
        }
    }

    pub(crate) fn unit(name: &str, ready: ReadyKind, requires: &[&str]) -> UnitSpec {
        let mut s = UnitSpec::simple(name, UnitKind::Longrun, &["/bin/x"]);
        s.ready.kind = ready;
        s.requires = requires.iter().map(|d| d.to_string()).collect();
        s.restart.delay = Duration::from_millis(500);
        s.restart.max_delay = Duration::from_millis(500);
        s
    }

    pub(crate) fn with_mount(mut s: UnitSpec, path: &str) -> UnitSpec {
        s.mounts.push(MountReq {
            path: PathBuf::from(path),
            fstype: None,
            source: None,
            options: vec![],
            on_loss: OnLoss::Stop,
            timeout: None,
            symlink_to: None,
        });
        s
    }

    impl W {
        pub(crate) fn new(specs: Vec<UnitSpec>, cap: u32, locks: LockMap) -> W {
            let set = crate::graph::build(specs).expect("valid set");
            let cfg = EngineConfig {
                max_parallel_starts: cap,
                seed: 1,
                ..Default::default()
            };
            let t0 = Instant::now();
            let mut w = W {
                e: Engine::new(set, cfg, table(&[])),
                t0,
                now: t0,
                next_pid: 100,
                next_req: 1,
                spawn_error: None,
            };
            w.feed(Event::LocksLoaded(LocksLoad::Loaded(locks)));
            w
        }

        /// Feed an event; spawns are answered at once, lock writes too.
        pub(crate) fn feed(&mut self, ev: Event) -> Vec<Action> {
            let mut out = Vec::new();
            let mut queue = vec![ev];
            while let Some(ev) = queue.pop() {
                for a in self.e.handle(self.now, ev) {
                    match &a {
                        Action::Spawn { run, .. } => {
                            self.next_pid += 1;
                            queue.push(match &self.spawn_error {
                                Some(error) => Event::SpawnFailed {
                                    run: *run,
                                    error: error.clone(),
                                    mount: None,
                                },
                                None => Event::Spawned {
                                    run: *run,
                                    pid: self.next_pid,
                                    cgroup: None,
                                },
                            });
                        }
                        Action::PersistLocks { version, .. } => {
                            queue.push(Event::LocksPersisted {
                                version: *version,
                                result: Ok(()),
                            });
                        }
                        _ => {}
                    }
                    out.push(a);
                }
            }
            out
        }

        pub(crate) fn at(&mut self, ms: u64) {
            self.now = self.t0 + Duration::from_millis(ms);
            self.feed(Event::Tick);
        }

        fn run(&self, name: &str) -> crate::engine::RunId {
            let id = self.e.unit_id(name).expect("unit");
            self.e.unit(id).state.run().expect("has a run")
        }

        pub(crate) fn ready(&mut self, name: &str) {
            let run = self.run(name);
            self.feed(Event::Notified {
                run,
                msg: NotifyMsg {
                    ready: true,
                    ..Default::default()
                },
            });
        }

        pub(crate) fn exit(&mut self, name: &str, code: i32) {
            let run = self.run(name);
            self.feed(Event::ProcessExited {
                run,
                status: ExitStatus::Exited(code),
            });
        }

        pub(crate) fn mount(&mut self, paths: &[&str]) {
            self.feed(Event::MountTableChanged(table(paths)));
        }

        pub(crate) fn cmd(&mut self, request: Request) -> Vec<Action> {
            let req = ReqId(self.next_req);
            self.next_req += 1;
            self.feed(Event::Command {
                req,
                peer: PeerInfo {
                    uid: 0,
                    pid: None,
                    name: "root".into(),
                },
                wall_ms: 1_000_000 + self.now.duration_since(self.t0).as_millis() as u64,
                request,
            })
        }

        pub(crate) fn report(&mut self) -> TimelineReport {
            let acts = self.cmd(Request::Analyze);
            let data = acts
                .into_iter()
                .find_map(|a| match a {
                    Action::Reply { response, .. } => Some(response.data),
                    _ => None,
                })
                .expect("analyze answered");
            serde_json::from_value(data).expect("a timeline report")
        }
    }

    fn boot<'a>(r: &'a TimelineReport, name: &str) -> &'a RunRecord {
        r.units
            .iter()
            .find(|u| u.name == name)
            .and_then(|u| u.boot.as_ref())
            .unwrap_or_else(|| panic!("{name} has a boot record: {r:#?}"))
    }

    fn phases(r: &RunRecord) -> Vec<(Phase, Option<WaitKind>, u64, Option<u64>)> {
        r.segments
            .iter()
            .map(|s| (s.phase, s.wait, s.start_ms, s.end_ms))
            .collect()
    }

    /// db waits 1 s for its mount, then 0.5 s in the start cap (web is
    /// starting; cap 1), starts, is ready at 2 s; app waits for db all along;
    /// cache is held by a maintenance lock until 3 s.
    pub(crate) fn boot_scenario() -> (W, TimelineReport) {
        let mut locks = LockMap::new();
        locks.insert(
            "cache".into(),
            vec![Holder {
                holder: "alice".into(),
                reason: "resize volume".into(),
                since_unix_ms: 0,
            }],
        );
        let mut w = W::new(
            vec![
                with_mount(unit("db", ReadyKind::Notify, &[]), "/srv/db"),
                unit("web", ReadyKind::Notify, &[]),
                unit("app", ReadyKind::Started, &["db"]),
                unit("cache", ReadyKind::Started, &[]),
            ],
            1,
            locks,
        );
        w.at(1000);
        w.mount(&["/srv/db"]);
        w.at(1500);
        w.ready("web");
        w.at(2000);
        w.ready("db");
        w.at(3000);
        w.cmd(Request::MaintenanceOff {
            unit: "cache".into(),
            holder: Some("alice".into()),
            force: false,
            dry_run: false,
        });
        w.at(4000);
        let r = w.report();
        (w, r)
    }

    #[test]
    fn records_each_wait_with_its_cause_and_when_it_ended() {
        let (_, r) = boot_scenario();
        use Phase::*;
        assert_eq!(r.now_ms, 4000);
        assert_eq!(
            phases(boot(&r, "db")),
            vec![
                (Waiting, Some(WaitKind::Mount), 0, Some(1000)),
                (Waiting, Some(WaitKind::Cap), 1000, Some(1500)),
                (Starting, None, 1500, Some(2000)),
                (Ready, None, 2000, None),
            ]
        );
        let db = boot(&r, "db");
        assert_eq!(db.segments[0].path.as_deref(), Some("/srv/db"));
        assert!(
            db.segments[0]
                .cause
                .as_deref()
                .is_some_and(|c| c.contains("/srv/db")),
            "{db:?}"
        );
        assert_eq!(
            phases(boot(&r, "app")),
            vec![
                (Waiting, Some(WaitKind::Dependency), 0, Some(2000)),
                (Starting, None, 2000, Some(2000)),
                (Ready, None, 2000, None),
            ]
        );
        assert_eq!(boot(&r, "app").segments[0].unit.as_deref(), Some("db"));
        let cache = boot(&r, "cache");
        assert_eq!(cache.segments[0].wait, Some(WaitKind::Lock));
        assert!(
            cache.segments[0]
                .cause
                .as_deref()
                .is_some_and(|c| c.contains("alice (resize volume)")),
            "{cache:?}"
        );
        assert_eq!(cache.segments[0].end_ms, Some(3000));
        assert_eq!(
            phases(boot(&r, "web")),
            vec![(Starting, None, 0, Some(1500)), (Ready, None, 1500, None)]
        );
        // Nothing has cycled yet: no current record.
        assert!(r.units.iter().all(|u| u.current.is_none()), "{r:#?}");
        assert_eq!(r.origin_unix_ms, 1_000_000);
    }

    #[test]
    fn startup_seconds_metric_counts_from_startable_to_ready() {
        let (w, _) = boot_scenario();
        let m = w.e.metrics(w.now, 1_004_000);
        let of = |n: &str| {
            m.units
                .iter()
                .find(|u| u.name == n)
                .and_then(|u| u.startup_ms)
        };
        // db waited 1 s for its mount and 0.5 s in the cap, then 0.5 s to
        // READY=1; app waited for db; cache (started, so ready at spawn)
        // waited for its lock until 3 s.
        assert_eq!(of("db"), Some(2000));
        assert_eq!(of("app"), Some(2000));
        assert_eq!(of("web"), Some(1500));
        assert_eq!(of("cache"), Some(3000));
    }

    #[test]
    fn a_crash_opens_a_current_cycle_and_keeps_the_boot() {
        let (mut w, _) = boot_scenario();
        w.exit("db", 3);
        // app is stopped (it requires db): its cycle restarts too.
        w.exit("app", 143);
        w.at(4600);
        w.at(4700);
        w.ready("db");
        let r = w.report();
        let u = r.units.iter().find(|u| u.name == "db").expect("db");
        assert_eq!(
            u.boot.as_ref().map(|b| b.segments.len()),
            Some(4),
            "boot kept"
        );
        let cur = u.current.as_ref().expect("a current cycle");
        let first = &cur.segments[0];
        assert_eq!(first.wait, Some(WaitKind::Backoff), "{cur:#?}");
        assert_eq!(
            first.cause.as_deref(),
            Some("restart backoff after it exited with code 3")
        );
        assert_eq!(cur.start_ms, 4000);
        assert_eq!(cur.segments.last().map(|s| s.phase), Some(Phase::Ready));
        let app = r.units.iter().find(|u| u.name == "app").expect("app");
        let cur = app.current.as_ref().expect("app's current cycle");
        assert_eq!(cur.segments[0].phase, Phase::Stopping);
        assert!(
            cur.segments
                .iter()
                .any(|s| s.wait == Some(WaitKind::Dependency))
        );
    }

    #[test]
    fn a_backoff_says_why_the_run_ended_even_without_an_exit() {
        let mut s = with_mount(unit("pg", ReadyKind::Notify, &[]), "/srv/pg");
        s.restart.policy = RestartPolicy::Always;
        let mut w = W::new(vec![s], 16, LockMap::new());
        w.spawn_error = Some("setting resource limits: EPERM".into());
        w.at(1000);
        w.mount(&["/srv/pg"]);
        let r = w.report();
        let segs = &boot(&r, "pg").segments;
        assert_eq!(segs[0].wait, Some(WaitKind::Mount));
        assert_eq!(segs[1].phase, Phase::Starting);
        assert_eq!(segs[2].wait, Some(WaitKind::Backoff));
        assert_eq!(
            segs[2].cause.as_deref(),
            Some("restart backoff after it could not start: setting resource limits: EPERM")
        );
    }

    #[test]
    fn a_flapping_unit_keeps_bounded_memory() {
        let mut s = unit("flap", ReadyKind::Notify, &[]);
        s.restart.policy = RestartPolicy::Always;
        s.restart.burst = u32::MAX;
        let mut w = W::new(vec![s], 16, LockMap::new());
        let id = w.e.unit_id("flap").expect("unit");
        for i in 0..500u64 {
            w.exit("flap", 1);
            w.at(1000 * (i + 1));
        }
        assert!(w.e.timeline.segments(id) <= 2 * MAX_SEGMENTS);
        let r = w.report();
        let rec = r.units[0].boot.as_ref().expect("boot");
        assert!(rec.dropped > 0);
        assert_eq!(rec.start_ms, 0, "the cycle still starts at boot");
        // Consecutive, in order.
        for pair in rec.segments.windows(2) {
            assert_eq!(pair[0].end_ms, Some(pair[1].start_ms));
            assert!(pair[0].start_ms <= pair[1].start_ms);
        }
    }

    #[test]
    fn operator_stop_and_start_begin_a_new_cycle() {
        let (mut w, _) = boot_scenario();
        w.cmd(Request::Stop { unit: "web".into() });
        w.exit("web", 0);
        w.at(5000);
        w.cmd(Request::Start { unit: "web".into() });
        w.at(5200);
        w.ready("web");
        let r = w.report();
        let web = r.units.iter().find(|u| u.name == "web").expect("web");
        let cur = web.current.as_ref().expect("current");
        assert_eq!(cur.start_ms, 5000, "startable when the operator started it");
        assert_eq!(
            phases(cur),
            vec![
                (Phase::Starting, None, 5000, Some(5200)),
                (Phase::Ready, None, 5200, None)
            ]
        );
    }

    #[test]
    fn analyze_and_graph_are_read_only_requests_on_the_wire() {
        for (line, req) in [
            (r#"{"v":1,"cmd":"analyze"}"#, Request::Analyze),
            (r#"{"v":1,"cmd":"graph"}"#, Request::Graph),
        ] {
            let env: crate::protocol::Envelope = serde_json::from_str(line).expect(line);
            assert_eq!(env.req, req);
            assert!(!req.mutates(), "any peer may look at the boot");
        }
    }

    #[test]
    fn graph_names_edges_mounts_and_locks() {
        let (mut w, _) = boot_scenario();
        w.cmd(Request::MaintenanceOn {
            unit: "web".into(),
            reason: "upgrade".into(),
            holder: Some("bob".into()),
        });
        let acts = w.cmd(Request::Graph);
        let data = acts
            .into_iter()
            .find_map(|a| match a {
                Action::Reply { response, .. } => Some(response.data),
                _ => None,
            })
            .expect("answered");
        let g: crate::protocol::GraphReport = serde_json::from_value(data).expect("graph");
        let app = g.units.iter().find(|u| u.name == "app").expect("app");
        assert_eq!(app.requires, vec!["db".to_string()]);
        let db = g.units.iter().find(|u| u.name == "db").expect("db");
        assert_eq!(db.mounts[0].path, "/srv/db");
        assert!(db.mounts[0].mounted);
        let web = g.units.iter().find(|u| u.name == "web").expect("web");
        assert_eq!(
            web.maintenance.as_ref().map(|m| m[0].holder.as_str()),
            Some("bob")
        );
    }
}
