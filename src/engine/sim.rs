//! Seeded simulation of the engine's world, with an invariant checker.
//!
//! Owns: a fake world — virtual clock, process table (children that run,
//! exit, crash, ignore SIGTERM, notify readiness), mount table (mounts
//! appear, vanish, go read-only; the watcher fails and the table is
//! unknown until a later read), a lock disk that fails or delays writes
//! (one at a time, or every write while it is full for seconds), and
//! random operator commands — driven by one seeded RNG, and a checker run
//! after every step that asserts DESIGN.md's invariants (plus: nothing
//! with a mount starts while the table is unknown, a failed lock write is
//! always retried, no deadline stays due after a Tick). A liveness phase
//! then turns faults off and requires every unit to come up, and every
//! lock change to reach the disk, within a bound. Failures print the seed and the last steps. Must never: use real
//! time, real processes or real randomness (a seed must replay exactly).
//!
//! `SUPD_SIM_SEEDS=n` runs n seeds (default 300); `SUPD_SIM_SEED=s` replays
//! one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::engine::locks::{Holder, LockMap};
use crate::engine::restart::Rng;
use crate::engine::{
    Action, Engine, EngineConfig, Event, ExitStatus, LocksLoad, NotifyMsg, PeerInfo, ReqId, RunId,
    UnitState,
};
use crate::mounts::{MountEntry, MountTable};
use crate::protocol::Request;
use crate::unit::{MountReq, OnLoss, ReadyKind, RestartPolicy, UnitKind, UnitSet, UnitSpec};

/// How a simulated process behaves.
#[derive(Debug, Clone, Copy)]
struct Behaviour {
    /// Exit by itself after this long (None: runs until signalled).
    exit_after: Option<Duration>,
    exit_code: i32,
    ignores_term: bool,
    /// Sends READY=1 after this long (notify units).
    notify_after: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Proc {
    unit: String,
    run: RunId,
    behaviour: Behaviour,
    started: Instant,
    /// When it will exit (by itself or because of a signal).
    exit_at: Option<(Instant, ExitStatus)>,
    notified: bool,
    /// A stop signal was sent (it is on its way down).
    signalled: bool,
    /// The starting process of a forking unit: it forks the daemon just
    /// before it exits 0.
    forks: bool,
}

/// A process of a contained run other than its main one (a daemon that
/// forked away): it outlives the main process, and only a signal to the
/// group or `KillGroup` ends it.
#[derive(Debug, Clone)]
struct Member {
    unit: String,
    run: RunId,
    ignores_term: bool,
    dies_at: Option<Instant>,
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: Instant,
    t0: Instant,
    engine: Engine,
    specs: BTreeMap<String, UnitSpec>,
    procs: BTreeMap<i32, Proc>,
    /// Other processes of contained runs, by pid.
    members: BTreeMap<i32, Member>,
    /// supd has cgroups in this world: runs are contained and last until
    /// `GroupEmpty`.
    contained: bool,
    next_pid: i32,
    /// The real mount table (what the spawner re-reads).
    mounted: BTreeMap<PathBuf, bool>, // path -> read-only?
    /// Writes in flight: (completes at, version, locks, ok).
    disk_queue: VecDeque<(Instant, u64, LockMap, bool)>,
    disk: LockMap,
    /// Operator intent as the sim sent it: unit -> holders.
    wanted_locks: LockMap,
    /// The engine is fail-closed: only from boot (a failed write is
    /// retried and fails nothing else), cleared by a durable recover.
    lock_unknown: bool,
    /// The state directory's filesystem is full until then: every write
    /// fails (ENOSPC), and the engine must keep retrying by itself.
    disk_full_until: Option<Instant>,
    recover_pending: bool,
    recover_version: Option<u64>,
    op_stopped: BTreeSet<String>,
    /// Units whose oneshot completed successfully (and not re-run since).
    done: BTreeSet<String>,
    ready: BTreeSet<String>,
    next_req: u64,
    /// Outstanding `maintenance on` requests: req -> unit.
    lock_on_reqs: BTreeMap<ReqId, String>,
    /// Automatic restarts per unit (times), for the burst check.
    restarts: BTreeMap<String, Vec<Instant>>,
    stale_runs: Vec<RunId>,
    /// Set while an operator start/restart is being handled: the spawns it
    /// causes are not automatic restarts.
    in_operator_start: bool,
    faults: bool,
    /// Since when the engine was told the mount table is unreadable (the
    /// watcher failed and the driver is retrying).
    mount_unknown_since: Option<Instant>,
    trace: VecDeque<String>,
    cap: u32,
    /// The unit set, for a re-executed engine.
    set: UnitSet,
    /// Runs taken over rather than started: they do not count against
    /// the cap on concurrent starts (they were started long ago).
    adopted_runs: BTreeSet<RunId>,
    /// `[shed]` timing for this seed (kept across a re-exec).
    shed_policy: crate::engine::shed::ShedPolicy,
    /// The simulated host is under pressure: PSI triggers fire "high".
    pressure_on: bool,
}

fn mount_table(mounted: &BTreeMap<PathBuf, bool>) -> MountTable {
    let mut entries = vec![MountEntry {
        mount_id: 1,
        parent_id: 0,
        root: "/".into(),
        mount_point: "/".into(),
        mount_options: vec!["rw".into()],
        fstype: "ext4".into(),
        source: "/dev/vda".into(),
        super_options: vec!["rw".into()],
    }];
    for (i, (p, ro)) in mounted.iter().enumerate() {
        entries.push(MountEntry {
            mount_id: 10 + i as u32,
            parent_id: 1,
            root: "/".into(),
            mount_point: p.clone(),
            mount_options: vec![if *ro { "ro" } else { "rw" }.into()],
            fstype: "tmpfs".into(),
            source: "sim".into(),
            super_options: vec![],
        });
    }
    MountTable {
        entries,
        skipped: 0,
    }
}

fn peer() -> PeerInfo {
    PeerInfo {
        uid: 0,
        pid: Some(1),
        name: "root".into(),
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let n = 3 + (rng.next_u64() % 6) as usize;
        let mut specs = BTreeMap::new();
        let mut mounts_all = Vec::new();
        for i in 0..n {
            let name = format!("u{i}");
            let oneshot = rng.one_in(5);
            let mut s = UnitSpec::simple(
                &name,
                if oneshot {
                    UnitKind::Oneshot
                } else {
                    UnitKind::Longrun
                },
                &["/bin/x"],
            );
            for j in 0..i {
                if rng.one_in(3) {
                    s.requires.push(format!("u{j}"));
                } else if rng.one_in(6) {
                    s.after.push(format!("u{j}"));
                }
            }
            if rng.one_in(3) {
                let p = PathBuf::from(format!("/srv/m{}", rng.next_u64() % 3));
                mounts_all.push(p.clone());
                s.mounts.push(MountReq {
                    path: p,
                    fstype: None,
                    source: None,
                    options: vec!["rw".into()],
                    on_loss: if rng.one_in(4) {
                        OnLoss::Ignore
                    } else {
                        OnLoss::Stop
                    },
                    timeout: None,
                    symlink_to: None,
                });
            }
            if !oneshot && rng.one_in(3) {
                s.ready.kind = ReadyKind::Notify;
            }
            s.restart.policy = match rng.next_u64() % 4 {
                0 => RestartPolicy::Never,
                1 => RestartPolicy::Always,
                _ => {
                    if oneshot {
                        RestartPolicy::Never
                    } else {
                        RestartPolicy::OnFailure
                    }
                }
            };
            s.restart.delay = Duration::from_millis(rng.next_u64() % 300);
            s.restart.max_delay = s.restart.delay * 8;
            s.restart.burst = 1 + (rng.next_u64() % 4) as u32;
            s.restart.interval = Duration::from_secs(10);
            s.stop.timeout = Duration::from_millis(200 + rng.next_u64() % 800);
            s.stop.kill_mode = match rng.next_u64() % 3 {
                0 => crate::unit::KillMode::Group,
                1 => crate::unit::KillMode::Main,
                _ => crate::unit::KillMode::Mixed,
            };
            s.essential = rng.one_in(4);
            // OnFailure=: a failure asks another unit to start (still
            // subject to its lock and mounts).
            if n > 1 && rng.one_in(4) {
                let t = (i + 1 + (rng.next_u64() % (n as u64 - 1)) as usize) % n;
                s.on_failure.push(format!("u{t}"));
            }
            s.priority = match rng.next_u64() % 4 {
                0 => crate::unit::Priority::Optional,
                1 => crate::unit::Priority::Critical,
                _ => crate::unit::Priority::Normal,
            };
            s.sheddable = rng.one_in(2);
            specs.insert(name, s);
        }
        let set: UnitSet = crate::graph::build(specs.values().cloned().collect())
            .unwrap_or_else(|e| panic!("seed {seed}: sim built a bad set: {e:?}"));
        let mut mounted = BTreeMap::new();
        for p in &mounts_all {
            if rng.one_in(2) {
                mounted.insert(p.clone(), false);
            }
        }
        let cap = 1 + (rng.next_u64() % 4) as u32;
        let t0 = Instant::now();
        let shed_policy = crate::engine::shed::ShedPolicy {
            window: Duration::from_secs(1),
            shed_after: Duration::from_millis(rng.next_u64() % 2000),
            restore_after: Duration::from_millis(1000 + rng.next_u64() % 3000),
            jitter: Duration::from_millis(rng.next_u64() % 1500),
        };
        let mut engine = Engine::new(
            set.clone(),
            EngineConfig {
                max_parallel_starts: cap,
                seed,
                shed: Some(shed_policy),
                ..Default::default()
            },
            mount_table(&mounted),
        );
        // `supctl disable`d at a previous boot: down unless needed.
        let disabled = specs.keys().filter(|_| rng.one_in(5)).cloned().collect();
        engine.set_disabled(disabled);
        let lock_unknown = rng.one_in(8);
        let contained = !rng.one_in(3);
        let mut sim = Sim {
            seed,
            rng,
            now: t0,
            t0,
            engine,
            specs,
            procs: BTreeMap::new(),
            members: BTreeMap::new(),
            contained,
            next_pid: 100,
            mounted,
            disk_queue: VecDeque::new(),
            disk: LockMap::new(),
            wanted_locks: LockMap::new(),
            lock_unknown,
            disk_full_until: None,
            recover_pending: false,
            recover_version: None,
            op_stopped: BTreeSet::new(),
            done: BTreeSet::new(),
            ready: BTreeSet::new(),
            next_req: 1,
            lock_on_reqs: BTreeMap::new(),
            restarts: BTreeMap::new(),
            stale_runs: Vec::new(),
            in_operator_start: false,
            faults: true,
            mount_unknown_since: None,
            trace: VecDeque::new(),
            cap,
            set,
            adopted_runs: BTreeSet::new(),
            shed_policy,
            pressure_on: false,
        };
        // A previous supd left some units running (with a daemon, and a
        // main process it may or may not vouch for), and some locked on
        // disk: adoption must never give a locked unit back its run.
        let names: Vec<String> = sim.specs.keys().cloned().collect();
        let mut on_disk = LockMap::new();
        let mut adopted = Vec::new();
        for name in names {
            // (Essential units may start before the lock file is read —
            // "not loaded yet" counts as unknown — so only others are
            // locked here.)
            if !lock_unknown && !sim.specs[&name].essential && sim.rng.one_in(4) {
                let h = vec![Holder {
                    holder: "carol".into(),
                    reason: "sim: before the restart".into(),
                    since_unix_ms: 0,
                }];
                on_disk.insert(name.clone(), h.clone());
                sim.disk.insert(name.clone(), h.clone());
                sim.wanted_locks.insert(name.clone(), h);
            }
            if !sim.contained || !sim.rng.one_in(3) {
                continue;
            }
            let pid = sim.next_pid;
            sim.next_pid += 2;
            let known = !sim.rng.one_in(3);
            let oneshot = sim.specs[&name].kind == UnitKind::Oneshot;
            let behaviour = Behaviour {
                exit_after: oneshot.then(|| Duration::from_millis(sim.rng.next_u64() % 500)),
                exit_code: 0,
                ignores_term: sim.rng.one_in(4),
                notify_after: None,
            };
            if known {
                sim.procs.insert(
                    pid,
                    Proc {
                        unit: name.clone(),
                        run: RunId(0),
                        behaviour,
                        started: t0,
                        exit_at: behaviour
                            .exit_after
                            .map(|d| (t0 + d, ExitStatus::Exited(0))),
                        notified: true,
                        signalled: false,
                        forks: false,
                    },
                );
            } else {
                // No main process supd can vouch for: to the new supd it is
                // just another member of the group.
                sim.members.insert(
                    pid,
                    Member {
                        unit: name.clone(),
                        run: RunId(0),
                        ignores_term: behaviour.ignores_term,
                        dies_at: None,
                    },
                );
            }
            sim.members.insert(
                pid + 1,
                Member {
                    unit: name.clone(),
                    run: RunId(0),
                    ignores_term: sim.rng.one_in(4),
                    dies_at: None,
                },
            );
            adopted.push(Event::Adopted {
                cgroup: Some(format!("/sim/{name}.unit")),
                unit: name,
                pid: known.then_some(pid),
                wall_ms: 0,
            });
        }
        sim.feed_many(adopted);
        let load = if lock_unknown {
            LocksLoad::Unknown("sim: torn lock file".into())
        } else {
            LocksLoad::Loaded(on_disk)
        };
        sim.feed(Event::LocksLoaded(load));
        sim
    }

    fn fail(&self, msg: &str) -> ! {
        let trace: Vec<&String> = self.trace.iter().collect();
        panic!(
            "sim seed {} (replay with SUPD_SIM_SEED={}): {msg}\nlast steps:\n{}",
            self.seed,
            self.seed,
            trace
                .iter()
                .map(|s| format!("  {s}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    fn note(&mut self, s: String) {
        if self.trace.len() >= 40 {
            self.trace.pop_front();
        }
        let t = self.now.duration_since(self.t0).as_millis();
        self.trace.push_back(format!("t={t}ms {s}"));
    }

    fn locked(&self, unit: &str) -> bool {
        self.wanted_locks.contains_key(unit) || self.disk.contains_key(unit)
    }

    fn proc_of(&self, unit: &str) -> Option<(&i32, &Proc)> {
        self.procs.iter().find(|(_, p)| p.unit == unit)
    }

    /// Any process of `unit` at all: its main or a member of its group.
    fn any_process_of(&self, unit: &str) -> bool {
        self.proc_of(unit).is_some() || self.members.values().any(|m| m.unit == unit)
    }

    /// The run has no process left: the group is empty.
    fn group_empty(&self, run: RunId) -> bool {
        !self.procs.values().any(|p| p.run == run) && !self.members.values().any(|m| m.run == run)
    }

    /// Is `unit` ready per the world (the oracle for invariant 5)?
    fn oracle_ready(&self, unit: &str) -> bool {
        let spec = &self.specs[unit];
        match spec.kind {
            UnitKind::Oneshot => self.done.contains(unit),
            UnitKind::Longrun => match self.proc_of(unit) {
                Some((_, p)) => {
                    !p.signalled && (spec.ready.kind != ReadyKind::Notify || p.notified)
                }
                None => false,
            },
        }
    }

    fn mounts_ok(&self, unit: &str) -> bool {
        self.specs[unit].mounts.iter().all(|m| {
            self.mounted
                .get(&m.path)
                .is_some_and(|ro| !*ro || !m.options.iter().any(|o| o == "rw"))
        })
    }

    fn feed(&mut self, ev: Event) {
        self.feed_many(vec![ev]);
    }

    /// Events that happened together, decided once (as the driver feeds
    /// a reaper drain or the adoption batch at start-up).
    fn feed_many(&mut self, evs: Vec<Event>) {
        for ev in &evs {
            let label = format!("{ev:?}");
            let label: String = label.chars().take(160).collect();
            self.note(label);
        }
        let before_backoff: BTreeSet<String> = self
            .engine
            .units()
            .filter(|(_, u)| matches!(u.state, UnitState::Backoff { .. }))
            .map(|(_, u)| u.spec.name.clone())
            .collect();
        let now = self.now;
        let engine = &mut self.engine;
        let actions = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.handle_many(now, evs)
        })) {
            Ok(a) => a,
            Err(p) => {
                let m = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.fail(&format!("engine panicked: {m}"))
            }
        };
        for a in &actions {
            if let Action::Track { run, .. } = a {
                self.adopted_runs.insert(*run);
            }
        }
        self.check_state();
        let mut follow = Vec::new();
        for a in actions {
            if let Some(ev) = self.execute(a, &before_backoff) {
                follow.push(ev);
            }
        }
        for ev in follow {
            self.feed(ev);
        }
    }

    fn check_state(&self) {
        // (k) A failed lock write never waits for an operator: whenever
        // what operators asked differs from what is on disk and no write
        // is in flight, a retry is scheduled (and status says so).
        let lm = self.engine.lock_model();
        if lm.inflight.is_empty()
            && (lm.wanted != lm.durable || lm.recovering.is_some())
            && self.engine.lock_write_problem(self.now).is_none()
        {
            self.fail("locks differ from the disk and no write is in flight or scheduled");
        }
        // A running unit whose mount is gone (in the engine's own view) and
        // whose on_loss is "stop" must be on its way down.
        for (_, u) in self.engine.units() {
            let has_proc = matches!(
                u.state,
                UnitState::Starting { .. } | UnitState::Running { .. }
            );
            if !has_proc {
                continue;
            }
            // An unreadable table counts as every mount lost once the
            // grace has passed.
            let unknown_expired = self.mount_unknown_since.is_some_and(|t| {
                self.now.saturating_duration_since(t) >= crate::engine::MOUNT_UNKNOWN_GRACE
            });
            let lost = u.spec.mounts.iter().any(|m| {
                m.on_loss == OnLoss::Stop
                    && (unknown_expired || self.engine.mounts().check(m).is_err())
            });
            if lost && u.stop_pending.is_none() {
                self.fail(&format!(
                    "{} keeps running after losing its mount",
                    u.spec.name
                ));
            }
        }
        // Shedding takes effect: a unit the winning level sheds is on its
        // way down (manual wins: with an operator's level set, pressure
        // stops nothing that level does not name).
        for (_, u) in self.engine.units() {
            let spec = u.effective();
            let shed = match self.engine.manual_shed() {
                Some(l) => spec.priority <= l,
                None => self.engine.auto_shed().sheds(spec),
            };
            let up = matches!(
                u.state,
                UnitState::Starting { .. } | UnitState::Running { .. }
            );
            if shed && up && u.stop_pending.is_none() {
                self.fail(&format!("{} keeps running while shed", spec.name));
            }
        }
        // Adoption never resurrects a locked unit: once the lock state is
        // known, a locked unit that runs is stopping (or waits for its
        // dependents to stop first).
        if self.engine.lock_model().unknown_reason().is_none() {
            for (_, u) in self.engine.units() {
                if self.disk.contains_key(&u.spec.name)
                    && self.wanted_locks.contains_key(&u.spec.name)
                    && matches!(
                        u.state,
                        UnitState::Running { .. } | UnitState::Starting { .. }
                    )
                    && u.stop_pending.is_none()
                {
                    self.fail(&format!(
                        "{} runs under a durable lock ({:?})",
                        u.spec.name, u.state
                    ));
                }
            }
        }
        // The timeline (supctl analyze) shows what happened: the phase it
        // records now is the unit's state, and it stays bounded.
        for (id, u) in self.engine.units() {
            use super::timeline::{MAX_SEGMENTS, Step, Wait};
            let step = self.engine.timeline.last_step(id);
            let agrees = matches!(
                (&u.state, step),
                (UnitState::Starting { .. }, Some(Step::Starting))
                    | (UnitState::Running { ready: true, .. }, Some(Step::Ready))
                    | (
                        UnitState::Running { ready: false, .. },
                        Some(Step::NotReady)
                    )
                    | (UnitState::Stopping { .. }, Some(Step::Stopping(_)))
                    | (UnitState::Draining { .. }, Some(Step::Stopping(_)))
                    | (UnitState::Backoff { .. }, Some(Step::Waiting(_)))
                    | (UnitState::Inactive, Some(Step::Waiting(_)))
                    | (UnitState::Failed { .. }, Some(Step::Failed(_)))
                    | (UnitState::Exited { .. }, Some(Step::Exited(_)))
                    | (UnitState::Done, Some(Step::Done))
            );
            let backoff_wait = !matches!(u.state, UnitState::Inactive)
                || !matches!(step, Some(Step::Waiting(Wait::Backoff(_))));
            if !agrees || !backoff_wait {
                self.fail(&format!(
                    "the timeline of {} records {step:?} while it is {:?}",
                    u.spec.name, u.state
                ));
            }
            if self.engine.timeline.segments(id) > 2 * MAX_SEGMENTS {
                self.fail(&format!("the timeline of {} is unbounded", u.spec.name));
            }
        }
        let starting = self
            .engine
            .units()
            .filter(|(_, u)| {
                matches!(u.state, UnitState::Starting { run, .. } if !self.adopted_runs.contains(&run))
            })
            .count();
        if starting > self.cap as usize {
            self.fail(&format!(
                "{starting} units starting at once, cap {}",
                self.cap
            ));
        }
    }

    fn execute(&mut self, a: Action, before_backoff: &BTreeSet<String>) -> Option<Event> {
        self.note(format!(
            "  -> {}",
            format!("{a:?}").chars().take(160).collect::<String>()
        ));
        match a {
            Action::Spawn { run, spec, .. } => {
                let name = spec.name.clone();
                // (b) locks, (j) fail-closed, (h) operator stop.
                if self.locked(&name) {
                    self.fail(&format!("spawned {name} while it has a maintenance lock"));
                }
                if self.lock_unknown && !spec.essential {
                    self.fail(&format!(
                        "spawned non-essential {name} while the lock state is unknown"
                    ));
                }
                if self.op_stopped.contains(&name) {
                    self.fail(&format!("spawned {name} after an operator stop"));
                }
                // Shedding: an operator's level wins while set; otherwise
                // nothing shed under pressure starts, nor a released unit
                // before its jittered moment.
                match self.engine.manual_shed() {
                    Some(l) if spec.priority <= l => {
                        self.fail(&format!("spawned {name} while an operator shed it"))
                    }
                    Some(_) => {}
                    None => {
                        let auto = self.engine.auto_shed();
                        if auto.sheds(&spec) {
                            self.fail(&format!("spawned {name} while it is shed under pressure"));
                        }
                        if self
                            .engine
                            .unit_id(&name)
                            .is_some_and(|id| auto.held(id).is_some_and(|t| t > self.now))
                        {
                            self.fail(&format!(
                                "spawned {name} before its jittered restore after pressure"
                            ));
                        }
                    }
                }
                // (d) requires ready.
                for dep in &spec.requires {
                    if !self.oracle_ready(dep) {
                        self.fail(&format!(
                            "spawned {name} while its requirement {dep} is not ready"
                        ));
                    }
                }
                // No unit ever has two live runs: not while its main
                // process lives, nor while anything of its last run does.
                if self.any_process_of(&name) {
                    self.fail(&format!(
                        "spawned {name} while a process of it still exists"
                    ));
                }
                // (a) the engine decides from its own snapshot: a spawn while
                // that snapshot lacks a mount is a bug (the spawner's re-check
                // below is a second guard, not the first).
                if !spec.mounts.is_empty() && self.mount_unknown_since.is_some() {
                    self.fail(&format!("spawned {name} while the mount table is unknown"));
                }
                if let Some(m) = spec
                    .mounts
                    .iter()
                    .find(|m| self.engine.mounts().check(m).is_err())
                {
                    self.fail(&format!(
                        "spawned {name} while its mount {} is missing in the engine's own table",
                        m.path.display()
                    ));
                }
                // The spawner's last-moment mount check.
                if !self.mounts_ok(&name) {
                    return Some(Event::SpawnFailed {
                        run,
                        error: "mount missing".into(),
                        mount: Some(crate::mounts::MountProblem::NotMounted {
                            path: spec
                                .mounts
                                .first()
                                .map(|m| m.path.clone())
                                .unwrap_or_default(),
                            on: None,
                            link: None,
                        }),
                    });
                }
                // (e) burst over automatic restarts (that happened: a spawn the
                // spawner refused is not a start, and the engine forgets it).
                if before_backoff.contains(&name) && !self.in_operator_start {
                    let s = &self.specs[&name];
                    let v = self.restarts.entry(name.clone()).or_default();
                    let now = self.now;
                    v.retain(|t| now.duration_since(*t) < s.restart.interval);
                    v.push(now);
                    if v.len() > s.restart.burst as usize {
                        let n = v.len();
                        self.fail(&format!(
                            "{name}: {n} automatic restarts within the interval (burst {})",
                            s.restart.burst
                        ));
                    }
                }
                self.done.remove(&name);
                let pid = self.next_pid;
                self.next_pid += 1;
                let r = self.rng.next_u64();
                let mut b = Behaviour {
                    exit_after: None,
                    exit_code: 0,
                    ignores_term: false,
                    notify_after: None,
                };
                if self.faults {
                    if r.is_multiple_of(3) {
                        b.exit_after = Some(Duration::from_millis(self.rng.next_u64() % 2000));
                        b.exit_code = if self.rng.one_in(2) { 0 } else { 1 };
                    }
                    b.ignores_term = self.rng.one_in(5);
                }
                if spec.kind == UnitKind::Oneshot {
                    b.exit_after = Some(Duration::from_millis(self.rng.next_u64() % 500));
                    if !self.faults {
                        b.exit_code = 0;
                    }
                }
                if spec.ready.kind == ReadyKind::Notify {
                    b.notify_after = Some(Duration::from_millis(self.rng.next_u64() % 700));
                }
                let forks = false;
                let exit_at = b
                    .exit_after
                    .map(|d| (self.now + d, ExitStatus::Exited(b.exit_code)));
                // Some contained services leave a daemon behind.
                if self.contained && self.faults && self.rng.one_in(3) {
                    let mpid = self.next_pid;
                    self.next_pid += 1;
                    let ignores_term = self.rng.one_in(4);
                    self.members.insert(
                        mpid,
                        Member {
                            unit: name.clone(),
                            run,
                            ignores_term,
                            dies_at: None,
                        },
                    );
                }
                self.procs.insert(
                    pid,
                    Proc {
                        unit: name,
                        run,
                        behaviour: b,
                        started: self.now,
                        exit_at,
                        notified: false,
                        signalled: false,
                        forks,
                    },
                );
                let cgroup = self.contained.then(|| format!("/sim/{}.unit", spec.name));
                Some(Event::Spawned { run, pid, cgroup })
            }
            Action::StopExec { run, .. } => self.execute(
                Action::Signal {
                    run,
                    signal: libc::SIGTERM,
                },
                before_backoff,
            ),
            Action::KillGroup { run } => {
                let now = self.now;
                for m in self.members.values_mut().filter(|m| m.run == run) {
                    m.dies_at = Some(now);
                }
                if let Some((_, p)) = self.procs.iter_mut().find(|(_, p)| p.run == run) {
                    p.signalled = true;
                    p.exit_at = Some((
                        now,
                        ExitStatus::Signaled {
                            signal: libc::SIGKILL,
                            core: false,
                        },
                    ));
                }
                None
            }
            Action::Signal { run, signal } | Action::SignalMain { run, signal } => {
                let group = matches!(a, Action::Signal { .. });
                let now = self.now;
                if group {
                    for m in self.members.values_mut().filter(|m| m.run == run) {
                        if signal == libc::SIGKILL || !m.ignores_term {
                            let at = now + Duration::from_millis(3);
                            m.dies_at = Some(m.dies_at.map_or(at, |t| t.min(at)));
                        }
                    }
                }
                // (g) signal only what is unreaped.
                let Some((_, p)) = self.procs.iter_mut().find(|(_, p)| p.run == run) else {
                    let draining = self.members.values().any(|m| m.run == run);
                    if !self.stale_runs.contains(&run) && !draining {
                        self.fail(&format!("signal {signal} to run {run:?} that has exited"));
                    }
                    return None;
                };
                p.signalled = true;
                let now = self.now;
                if signal == libc::SIGKILL {
                    p.exit_at = Some((
                        now,
                        ExitStatus::Signaled {
                            signal,
                            core: false,
                        },
                    ));
                } else if !p.behaviour.ignores_term {
                    let at = now + Duration::from_millis(5);
                    if p.exit_at.is_none_or(|(t, _)| t > at) {
                        p.exit_at = Some((
                            at,
                            ExitStatus::Signaled {
                                signal,
                                core: false,
                            },
                        ));
                    }
                }
                None
            }
            Action::PersistLocks { version, locks } => {
                if self.recover_pending {
                    self.recover_pending = false;
                    self.recover_version = Some(version);
                }
                let delay = Duration::from_millis(self.rng.next_u64() % 50);
                let full = self.disk_full_until.is_some_and(|t| self.now < t);
                let ok = !(self.faults && (full || self.rng.one_in(10)));
                self.disk_queue
                    .push_back((self.now + delay, version, locks, ok));
                None
            }
            Action::Reply { req, response } => {
                // (c) maintenance on acknowledged only when durable and down.
                if let Some(unit) = self.lock_on_reqs.remove(&req)
                    && response.ok
                {
                    if !self.disk.contains_key(&unit) {
                        self.fail(&format!(
                            "maintenance on {unit} acknowledged before it was on disk"
                        ));
                    }
                    if self.any_process_of(&unit) {
                        self.fail(&format!(
                            "maintenance on {unit} acknowledged while a process of it still runs"
                        ));
                    }
                }
                None
            }
            Action::Track { run, unit, .. } => {
                self.adopted_runs.insert(run);
                for p in self.procs.values_mut().filter(|p| p.unit == unit) {
                    p.run = run;
                }
                for m in self.members.values_mut().filter(|m| m.unit == unit) {
                    m.run = run;
                }
                None
            }
            Action::Audit(_)
            | Action::CancelProbe { .. }
            | Action::StartProbe { .. }
            | Action::ReloadExec { .. }
            | Action::Reexec(_) => None,
            Action::ShutdownComplete(_) | Action::Publish(_) => None,
        }
    }

    /// The next time something happens by itself.
    fn next_world_time(&self) -> Option<Instant> {
        let exits = self
            .procs
            .values()
            .filter_map(|p| p.exit_at.map(|(t, _)| t));
        let notifies = self.procs.values().filter_map(|p| {
            (!p.notified)
                .then_some(())
                .and(p.behaviour.notify_after.map(|d| p.started + d))
        });
        let disk = self.disk_queue.front().map(|d| d.0);
        let members = self.members.values().filter_map(|m| m.dies_at);
        exits
            .chain(members)
            .chain(notifies)
            .chain(disk)
            .chain(self.engine.next_deadline())
            .min()
    }

    /// Deliver whatever is due at `self.now`.
    fn deliver_due(&mut self) {
        let now = self.now;
        // Exits (the reaper).
        let due: Vec<i32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.exit_at.is_some_and(|(t, _)| t <= now))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            let Some(p) = self.procs.remove(&pid) else {
                continue;
            };
            let status = p.exit_at.map(|(_, s)| s).unwrap_or(ExitStatus::Exited(0));
            self.ready.remove(&p.unit);
            if self.specs[&p.unit].kind == UnitKind::Oneshot && status.success() && !p.signalled {
                self.done.insert(p.unit.clone());
            }
            if p.forks && status.success() && !p.signalled {
                // The daemon it forked lives on (a process of the run).
                let dpid = self.next_pid;
                self.next_pid += 1;
                let mut b = p.behaviour;
                b.exit_after = None;
                if self.faults && self.rng.one_in(3) {
                    b.exit_after = Some(Duration::from_millis(self.rng.next_u64() % 2000));
                    b.exit_code = if self.rng.one_in(2) { 0 } else { 1 };
                }
                let exit_at = b
                    .exit_after
                    .map(|d| (now + d, ExitStatus::Exited(b.exit_code)));
                self.procs.insert(
                    dpid,
                    Proc {
                        unit: p.unit.clone(),
                        run: p.run,
                        behaviour: b,
                        started: now,
                        exit_at,
                        notified: false,
                        signalled: false,
                        forks: false,
                    },
                );
            }
            if self.contained && self.group_empty(p.run) {
                // The kernel empties the group before the parent hears of
                // the exit; the driver may see either first.
                if self.rng.one_in(2) {
                    self.feed(Event::GroupEmpty { run: p.run });
                    self.stale_runs.push(p.run);
                    self.feed(Event::ProcessExited { run: p.run, status });
                } else {
                    self.feed(Event::ProcessExited { run: p.run, status });
                    self.stale_runs.push(p.run);
                    self.feed(Event::GroupEmpty { run: p.run });
                }
            } else {
                if !self.contained && self.group_empty(p.run) {
                    self.stale_runs.push(p.run);
                }
                self.feed(Event::ProcessExited { run: p.run, status });
            }
        }
        // Members of contained groups that die now; the last one out
        // empties the group.
        let due: Vec<i32> = self
            .members
            .iter()
            .filter(|(_, m)| m.dies_at.is_some_and(|t| t <= now))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            let Some(m) = self.members.remove(&pid) else {
                continue;
            };
            if self.group_empty(m.run) {
                self.stale_runs.push(m.run);
                self.feed(Event::GroupEmpty { run: m.run });
            }
        }
        // Notifications.
        let due: Vec<(i32, RunId)> = self
            .procs
            .iter()
            .filter(|(_, p)| {
                !p.notified
                    && p.behaviour
                        .notify_after
                        .is_some_and(|d| p.started + d <= now)
            })
            .map(|(pid, p)| (*pid, p.run))
            .collect();
        for (pid, run) in due {
            if let Some(p) = self.procs.get_mut(&pid) {
                p.notified = true;
            }
            self.feed(Event::Notified {
                run,
                msg: NotifyMsg {
                    ready: true,
                    ..Default::default()
                },
            });
        }
        // Disk completions, in order.
        while self.disk_queue.front().is_some_and(|d| d.0 <= now) {
            let Some((_, version, locks, ok)) = self.disk_queue.pop_front() else {
                break;
            };
            if ok {
                self.disk = locks;
            }
            let result = if ok {
                Ok(())
            } else {
                Err("sim: fsync failed".into())
            };
            // Predict the engine's lock state before it hears of the write:
            // spawns happen while it handles this very event. A failed
            // write changes nothing but the disk (not even fail-closed).
            if ok && self.recover_version.is_some_and(|rv| rv <= version) {
                self.recover_version = None;
                self.lock_unknown = false;
            }
            self.feed(Event::LocksPersisted { version, result });
        }
        if self.engine.next_deadline().is_some_and(|d| d <= now) {
            self.feed(Event::Tick);
            // A deadline still due after the Tick can never act: the
            // driver would wake for it in a busy loop.
            if self.engine.next_deadline().is_some_and(|d| d <= now) {
                self.fail("the engine's next deadline is still due after a Tick (busy loop)");
            }
        }
    }

    fn command(&mut self, request: Request) -> ReqId {
        let req = ReqId(self.next_req);
        self.next_req += 1;
        let wall_ms = self.now.duration_since(self.t0).as_millis() as u64;
        self.feed(Event::Command {
            req,
            peer: peer(),
            wall_ms,
            request,
        });
        req
    }

    fn random_external(&mut self) {
        let names: Vec<String> = self.specs.keys().cloned().collect();
        let unit = names[(self.rng.next_u64() % names.len() as u64) as usize].clone();
        match self.rng.next_u64() % 12 {
            0 => {
                self.op_stopped.insert(unit.clone());
                self.command(Request::Stop { unit });
            }
            1 | 2 => {
                // The start is accepted (and may spawn at once) unless
                // locked, or the lock state is unknown for a non-essential.
                if !self.locked(&unit) && (!self.lock_unknown || self.specs[&unit].essential) {
                    self.op_stopped.remove(&unit);
                    // An operator start clears the restart budget.
                    self.restarts.remove(&unit);
                }
                self.in_operator_start = true;
                if self.rng.one_in(2) {
                    self.command(Request::Start { unit });
                } else {
                    self.command(Request::Restart { unit });
                }
                self.in_operator_start = false;
            }
            3 | 4 => {
                let holder = if self.rng.one_in(2) { "alice" } else { "bob" };
                if !self.lock_unknown {
                    let hs = self.wanted_locks.entry(unit.clone()).or_default();
                    if !hs.iter().any(|h| h.holder == holder) {
                        hs.push(Holder {
                            holder: holder.into(),
                            reason: "sim".into(),
                            since_unix_ms: 0,
                        });
                    }
                }
                let req = self.command(Request::MaintenanceOn {
                    unit: unit.clone(),
                    reason: "sim".into(),
                    holder: Some(holder.into()),
                });
                self.lock_on_reqs.insert(req, unit);
            }
            5 | 6 => {
                let holder = if self.rng.one_in(2) { "alice" } else { "bob" };
                let dry_run = self.rng.one_in(4);
                if !self.lock_unknown
                    && !dry_run
                    && let Some(hs) = self.wanted_locks.get_mut(&unit)
                {
                    hs.retain(|h| h.holder != holder);
                    if hs.is_empty() {
                        self.wanted_locks.remove(&unit);
                    }
                }
                self.command(Request::MaintenanceOff {
                    unit,
                    holder: Some(holder.into()),
                    force: false,
                    dry_run,
                });
            }
            7 | 8 => {
                // A mount appears, vanishes or flips read-only.
                let p = PathBuf::from(format!("/srv/m{}", self.rng.next_u64() % 3));
                match self.rng.next_u64() % 3 {
                    0 => {
                        self.mounted.insert(p, false);
                    }
                    1 => {
                        self.mounted.remove(&p);
                    }
                    _ => {
                        self.mounted.insert(p, true);
                    }
                }
                // Sometimes the engine hears late: the spawner's re-check
                // must cover the gap. Sometimes the watcher fails instead
                // (the table is unknown until a later read succeeds).
                if self.faults && self.rng.one_in(6) {
                    if self.mount_unknown_since.is_none() {
                        self.mount_unknown_since = Some(self.now);
                    }
                    self.feed(Event::MountTableUnknown("sim: EIO".into()));
                } else if !self.rng.one_in(3) {
                    self.mount_unknown_since = None;
                    let t = mount_table(&self.mounted);
                    self.feed(Event::MountTableChanged(t));
                }
            }
            9 => {
                // A stale result from an old run must change nothing.
                if let Some(&run) = self.stale_runs.last() {
                    let before: Vec<String> = self
                        .engine
                        .units()
                        .map(|(_, u)| format!("{:?}", u.state))
                        .collect();
                    let ev = match self.rng.next_u64() % 4 {
                        3 => Event::GroupEmpty { run },
                        0 => Event::ProcessExited {
                            run,
                            status: ExitStatus::Exited(1),
                        },
                        1 => Event::ProbeAnswered {
                            kind: crate::engine::ProbeKind::Liveness,
                            run,
                            ok: false,
                            output: None,
                        },
                        _ => Event::Notified {
                            run,
                            msg: NotifyMsg {
                                ready: true,
                                ..Default::default()
                            },
                        },
                    };
                    let now = self.now;
                    let acts = self.engine.handle(now, ev);
                    let after: Vec<String> = self
                        .engine
                        .units()
                        .map(|(_, u)| format!("{:?}", u.state))
                        .collect();
                    if before != after
                        || acts.iter().any(|a| {
                            matches!(
                                a,
                                Action::Spawn { .. }
                                    | Action::Signal { .. }
                                    | Action::SignalMain { .. }
                                    | Action::KillGroup { .. }
                            )
                        })
                    {
                        self.fail(&format!(
                            "a stale result for {run:?} changed the engine: {acts:?}"
                        ));
                    }
                }
            }
            10 => {
                if self.faults && self.rng.one_in(4) {
                    // The state directory fills up for a while (ENOSPC on
                    // every write), then space is freed.
                    let secs = self.rng.next_u64() % 8;
                    self.disk_full_until = Some(self.now + Duration::from_secs(secs));
                }
                if self.lock_unknown && self.rng.one_in(3) && self.disk_queue.is_empty() {
                    let req = ReqId(self.next_req);
                    self.next_req += 1;
                    self.recover_pending = true;
                    self.feed(Event::Recover {
                        req,
                        peer: peer(),
                        wall_ms: 0,
                        result: Ok(self.disk.clone()),
                        source: "sim".into(),
                    });
                    // Known again once that write is durable; the sim
                    // learns it when the write completes.
                }
            }
            _ if self.rng.one_in(6) => self.reexec(),
            _ => {
                let shed = self.rng.one_in(2);
                if shed {
                    let level = if self.rng.one_in(3) {
                        crate::unit::Priority::Normal
                    } else {
                        crate::unit::Priority::Optional
                    };
                    self.command(Request::Shed { level });
                } else {
                    self.command(Request::Unshed);
                }
            }
        }
    }

    /// PSI: pressure comes and goes in episodes; while it is on the
    /// "high" trigger fires about once a window, the "low" one now and
    /// then either way.
    fn pressure(&mut self) {
        if self.rng.one_in(12) {
            self.pressure_on = !self.pressure_on;
        }
        let resource = crate::engine::shed::Resource::ALL[(self.rng.next_u64() % 3) as usize];
        let high = self.pressure_on && !self.rng.one_in(5);
        if high || self.rng.one_in(4) {
            self.feed(Event::Pressure {
                resource,
                high,
                wall_ms: 0,
            });
        }
    }

    /// `supctl reexec`: a new engine takes over from the old one's
    /// hand-off, adopting every run from the world (as the cgroups and
    /// the recorded main pids tell it) and reading the lock file.
    fn reexec(&mut self) {
        if self.lock_unknown || self.recover_pending || self.recover_version.is_some() {
            return;
        }
        // The old image flushes its writes before the exec.
        self.drain_disk();
        if self.lock_unknown {
            return;
        }
        let handoff = self.engine.handoff(self.now);
        self.note("REEXEC".into());
        // The new image reads the mount table afresh (a read that
        // succeeds: the watcher's failure was the old image's).
        self.mount_unknown_since = None;
        let disabled = self.engine.disabled().clone();
        self.engine = Engine::new(
            self.set.clone(),
            EngineConfig {
                max_parallel_starts: self.cap,
                seed: self.seed ^ 0x5eed,
                shed: Some(self.shed_policy),
                ..Default::default()
            },
            mount_table(&self.mounted),
        );
        self.engine.set_disabled(disabled);
        // Old run ids mean nothing to the new engine; replies owed by the
        // old one are lost with their connections.
        self.stale_runs.clear();
        self.adopted_runs.clear();
        self.lock_on_reqs.clear();
        // The new image holds what the old one held (the hand-off carries
        // its locks), not merely what reached the disk.
        if let Some(l) = &handoff.locks {
            self.wanted_locks = l.clone();
        }
        let mut batch = vec![Event::Resumed(handoff)];
        let units: BTreeSet<String> = self
            .procs
            .values()
            .map(|p| p.unit.clone())
            .chain(self.members.values().map(|m| m.unit.clone()))
            .collect();
        for unit in units {
            // The recorded main pid: the process supd spawned or was told
            // about. Without cgroups only the handed-over main processes
            // are found (they are still supd's children).
            let pid = self
                .procs
                .iter()
                .find(|(_, p)| p.unit == unit)
                .map(|(pid, _)| *pid);
            if !self.contained && pid.is_none() {
                continue;
            }
            batch.push(Event::Adopted {
                cgroup: self.contained.then(|| format!("/sim/{unit}.unit")),
                unit,
                pid,
                wall_ms: 0,
            });
        }
        batch.push(Event::Tick);
        self.feed_many(batch);
        self.feed(Event::LocksLoaded(LocksLoad::Loaded(self.disk.clone())));
    }

    fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            let next = self.next_world_time();
            let external_in = Duration::from_millis(self.rng.next_u64() % 400);
            let t_ext = self.now + external_in;
            match next {
                Some(t) if t <= t_ext => {
                    self.now = self.now.max(t);
                    self.deliver_due();
                }
                _ => {
                    self.now = t_ext;
                    self.deliver_due();
                    if self.rng.one_in(3) {
                        self.pressure();
                    } else {
                        self.random_external();
                    }
                }
            }
        }
    }

    fn drain_disk(&mut self) {
        while let Some(t) = self.disk_queue.front().map(|d| d.0) {
            self.now = self.now.max(t);
            self.deliver_due();
        }
    }

    /// Faults off, every obstacle removed: everything must come up.
    fn liveness(&mut self) {
        self.faults = false;
        // Let in-flight writes land.
        while let Some(t) = self.disk_queue.front().map(|d| d.0) {
            self.now = self.now.max(t);
            self.deliver_due();
        }
        if self.engine.lock_model().unknown_reason().is_some() {
            let req = ReqId(self.next_req);
            self.next_req += 1;
            self.recover_pending = true;
            self.feed(Event::Recover {
                req,
                peer: peer(),
                wall_ms: 0,
                result: Ok(LockMap::new()),
                source: "sim".into(),
            });
            self.drain_disk();
        }
        for unit in self.specs.keys().cloned().collect::<Vec<_>>() {
            for holder in ["alice", "bob", "carol"] {
                // The operator's intent changes before the engine hears it
                // (a lock never written frees the unit at once: the disk
                // never had it).
                if let Some(hs) = self.wanted_locks.get_mut(&unit) {
                    hs.retain(|h| h.holder != holder);
                    if hs.is_empty() {
                        self.wanted_locks.remove(&unit);
                    }
                }
                self.command(Request::MaintenanceOff {
                    unit: unit.clone(),
                    holder: Some(holder.into()),
                    force: false,
                    dry_run: false,
                });
            }
        }
        self.wanted_locks.clear();
        // An operator waits for the releases to be on disk (a release
        // whose write failed is retried by supd) before starting units.
        let settle_by = self.now + Duration::from_secs(120);
        while let Some(t) = self.next_world_time() {
            let lm = self.engine.lock_model();
            if (lm.wanted == lm.durable && lm.inflight.is_empty()) || t > settle_by {
                break;
            }
            self.now = self.now.max(t);
            self.deliver_due();
        }
        self.command(Request::Unshed);
        for p in self
            .specs
            .values()
            .flat_map(|s| s.mounts.iter().map(|m| m.path.clone()))
            .collect::<Vec<_>>()
        {
            self.mounted.insert(p, false);
        }
        let t = mount_table(&self.mounted);
        self.mount_unknown_since = None;
        self.feed(Event::MountTableChanged(t));
        // Drain writes, then start everything (clears failed).
        let deadline = self.now + Duration::from_secs(600);
        while let Some(t) = self.disk_queue.front().map(|d| d.0) {
            self.now = self.now.max(t);
            self.deliver_due();
        }
        self.lock_unknown = self.engine.lock_model().unknown_reason().is_some();
        for unit in self.specs.keys().cloned().collect::<Vec<_>>() {
            self.op_stopped.remove(&unit);
            // An operator start clears the restart budget (as in
            // `random_external`).
            self.restarts.remove(&unit);
            self.command(Request::Start { unit });
        }
        // Processes in the liveness phase are well-behaved from now on; old
        // ones may still exit on their own schedule.
        while self.now < deadline {
            let all_up = self.engine.units().all(|(_, u)| match u.spec.kind {
                UnitKind::Oneshot => matches!(u.state, UnitState::Done),
                UnitKind::Longrun => {
                    matches!(u.state, UnitState::Running { ready: true, .. })
                }
            });
            if all_up {
                // ...and every lock change reached the disk by itself.
                while let Some(t) = self.next_world_time() {
                    let lm = self.engine.lock_model();
                    if lm.wanted == lm.durable && lm.inflight.is_empty() {
                        break;
                    }
                    if t > deadline {
                        self.fail("lock state never reached the disk after faults ended");
                    }
                    self.now = self.now.max(t);
                    self.deliver_due();
                }
                let lm = self.engine.lock_model();
                if lm.wanted != lm.durable || self.disk != lm.durable {
                    self.fail("lock state not on disk at the end");
                }
                return;
            }
            match self.next_world_time() {
                Some(t) => {
                    self.now = self.now.max(t);
                    self.deliver_due();
                }
                None => break,
            }
            // A unit that failed during the drain gets one more operator
            // start (as an operator would).
            let failed: Vec<String> = self
                .engine
                .units()
                .filter(|(_, u)| {
                    matches!(u.state, UnitState::Failed { .. } | UnitState::Exited { .. })
                })
                .map(|(_, u)| u.spec.name.clone())
                .collect();
            for unit in failed {
                self.restarts.remove(&unit);
                self.command(Request::Start { unit });
            }
        }
        let states: Vec<String> = self
            .engine
            .units()
            .map(|(id, u)| {
                format!(
                    "{}={:?} why: {}",
                    u.spec.name,
                    u.state,
                    self.engine.why(id, self.now)
                )
            })
            .collect();
        self.fail(&format!(
            "liveness: not everything came up within 10 virtual minutes:\n{}",
            states.join("\n")
        ));
    }
}

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("SUPD_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    let n: u64 = std::env::var("SUPD_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    (1..=n).collect()
}

#[test]
fn sim_seeds() {
    let start = std::time::Instant::now();
    let seeds = seeds();
    let mut pressure_sheds = 0;
    for &seed in &seeds {
        let mut sim = Sim::new(seed);
        sim.run(1500);
        pressure_sheds += sim.engine.auto_shed().counters.auto_sheds;
        sim.liveness();
    }
    eprintln!(
        "sim: {} seeds x 1500 steps + liveness in {:?} ({pressure_sheds} automatic shed steps seen)",
        seeds.len(),
        start.elapsed()
    );
    // The pressure model must actually exercise shedding.
    assert!(seeds.len() < 20 || pressure_sheds > 0);
}
