//! Engine scenario tests with a simulated clock: each test names what it
//! proves. The world is played by hand here (the seeded, randomised world
//! is `sim.rs`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::engine::locks::LockMap;
use crate::engine::{
    Action, Engine, EngineConfig, Event, ExitStatus, LocksLoad, NotifyMsg, PeerInfo, ReqId, RunId,
    UnitState,
};
use crate::mounts::{MountEntry, MountTable};
use crate::protocol::Request;
use crate::unit::{
    HealthSpec, MountReq, OnLoss, OnUnhealthy, ProbeTarget, ReadyKind, RestartPolicy, UnitKind,
    UnitSpec,
};

/// A `supctl reexec`: `new` (the next image's engine) takes the handoff
/// and adopts `unit`'s process `pid`, checked against the oracle.
fn reexec_adopting(t: &mut T, new: Engine, unit: &str, pid: i32) {
    let handoff = t.e.handoff(t.now);
    t.replace(new);
    let evs = vec![
        Event::Resumed(handoff),
        Event::Adopted {
            unit: unit.into(),
            pid: Some(pid),
            cgroup: None,
            wall_ms: 1,
        },
        Event::Tick,
    ];
    let full = t.oracle.handle_many(t.now, evs.clone());
    let acts = t.e.handle_many(t.now, evs);
    check_oracle(&t.e, &t.oracle, &acts, &full);
}

fn check_oracle(e: &Engine, full: &Engine, acts: &[Action], full_acts: &[Action]) {
    assert_eq!(
        acts, full_acts,
        "oracle: the incremental settle acted unlike the full settle"
    );
    if let Some(d) = e.oracle_diff(full) {
        panic!("oracle: the incremental settle's state differs from the full settle's: {d}");
    }
}

struct T {
    e: Engine,
    /// The same engine settling in full, fed every event `e` is: after
    /// each one both must have acted and ended alike (the oracle of the
    /// incremental settle, as in sim.rs).
    oracle: Engine,
    now: Instant,
    next_pid: i32,
    next_req: u64,
    log: Vec<Action>,
    /// Runs are born in a cgroup (as with cgroup v2).
    contained: bool,
}

fn longrun(name: &str) -> UnitSpec {
    let mut s = UnitSpec::simple(name, UnitKind::Longrun, &["/bin/x"]);
    s.restart.delay = Duration::from_millis(100);
    s.restart.max_delay = Duration::from_millis(100);
    s
}

fn requires(mut s: UnitSpec, deps: &[&str]) -> UnitSpec {
    s.requires = deps.iter().map(|d| d.to_string()).collect();
    s
}

fn table(paths: &[(&str, bool)]) -> MountTable {
    let mut entries = vec![MountEntry {
        mount_id: 1,
        parent_id: 0,
        root: "/".into(),
        mount_point: "/".into(),
        mount_options: vec!["rw".into()],
        fstype: "ext4".into(),
        source: "/dev/vda".into(),
        super_options: vec![],
    }];
    for (i, (p, ro)) in paths.iter().enumerate() {
        entries.push(MountEntry {
            mount_id: 2 + i as u32,
            parent_id: 1,
            root: "/".into(),
            mount_point: PathBuf::from(p),
            mount_options: vec![if *ro { "ro" } else { "rw" }.into()],
            fstype: "tmpfs".into(),
            source: "t".into(),
            super_options: vec![],
        });
    }
    MountTable {
        entries,
        skipped: 0,
    }
}

impl T {
    fn new(specs: Vec<UnitSpec>) -> T {
        T::with(specs, 16, table(&[]), true)
    }

    fn with(specs: Vec<UnitSpec>, cap: u32, mounts: MountTable, locks_known: bool) -> T {
        let set = crate::graph::build(specs).expect("valid set");
        let e = Engine::new(
            set,
            EngineConfig {
                max_parallel_starts: cap,
                seed: 7,
                ..Default::default()
            },
            mounts,
        );
        let mut t = T {
            oracle: e.full_twin(),
            e,
            now: Instant::now(),
            next_pid: 100,
            next_req: 1,
            log: vec![],
            contained: false,
        };
        let load = if locks_known {
            LocksLoad::Loaded(LockMap::new())
        } else {
            LocksLoad::Unknown("test: corrupt".into())
        };
        t.feed(Event::LocksLoaded(load));
        t
    }

    /// Feed an event; spawns are answered at once (like the driver).
    fn feed(&mut self, ev: Event) -> Vec<Action> {
        let mut out = Vec::new();
        let mut queue = vec![ev];
        while let Some(ev) = queue.pop() {
            let full = self.oracle.handle(self.now, ev.clone());
            let acts = self.e.handle(self.now, ev);
            check_oracle(&self.e, &self.oracle, &acts, &full);
            for a in acts {
                if let Action::Spawn { run, .. } = &a {
                    let pid = self.next_pid;
                    self.next_pid += 1;
                    queue.push(Event::Spawned {
                        run: *run,
                        pid,
                        cgroup: self.contained.then(|| "/test.unit".to_string()),
                    });
                }
                out.push(a);
            }
        }
        self.log.extend(out.iter().cloned());
        out
    }

    /// Start over with `e` (and its full-settle twin).
    fn replace(&mut self, e: Engine) {
        self.oracle = e.full_twin();
        self.e = e;
    }

    fn cmd(&mut self, request: Request) -> (ReqId, Vec<Action>) {
        let req = ReqId(self.next_req);
        self.next_req += 1;
        let acts = self.feed(Event::Command {
            req,
            peer: PeerInfo {
                uid: 0,
                pid: Some(1),
                name: "root".into(),
            },
            wall_ms: 1_000,
            request,
        });
        (req, acts)
    }

    fn advance(&mut self, d: Duration) -> Vec<Action> {
        self.now += d;
        self.feed(Event::Tick)
    }

    fn run_of(&self, name: &str) -> RunId {
        let id = self.e.unit_id(name).expect("unit");
        self.e
            .unit(id)
            .state
            .run()
            .unwrap_or_else(|| panic!("{name} has no run: {:?}", self.e.unit(id).state))
    }

    fn state(&self, name: &str) -> &UnitState {
        &self.e.unit(self.e.unit_id(name).expect("unit")).state
    }

    fn running(&self, name: &str) -> bool {
        matches!(
            self.state(name),
            UnitState::Running { .. } | UnitState::Starting { .. }
        )
    }

    fn exit(&mut self, name: &str, code: i32) -> Vec<Action> {
        let run = self.run_of(name);
        self.feed(Event::ProcessExited {
            run,
            status: ExitStatus::Exited(code),
        })
    }

    fn persist_all(&mut self, ok: bool) -> Vec<Action> {
        let versions: Vec<u64> = self
            .log
            .iter()
            .filter_map(|a| match a {
                Action::PersistLocks { version, .. } => Some(*version),
                _ => None,
            })
            .collect();
        let mut out = vec![];
        if let Some(v) = versions.last() {
            out = self.feed(Event::LocksPersisted {
                version: *v,
                result: if ok {
                    Ok(())
                } else {
                    Err("disk on fire".into())
                },
            });
        }
        out
    }

    fn why(&self, name: &str) -> String {
        self.e.why(self.e.unit_id(name).expect("unit"), self.now)
    }
}

fn spawned(acts: &[Action]) -> Vec<String> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Spawn { spec, .. } => Some(spec.name.clone()),
            _ => None,
        })
        .collect()
}

fn signalled(t: &T, acts: &[Action]) -> Vec<String> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Signal { run, .. } => {
                t.e.units()
                    .find(|(_, u)| u.state.run() == Some(*run))
                    .map(|(_, u)| u.spec.name.clone())
            }
            _ => None,
        })
        .collect()
}

fn reply(acts: &[Action], req: ReqId) -> Option<(bool, String)> {
    acts.iter().find_map(|a| match a {
        Action::Reply { req: r, response } if *r == req => {
            Some((response.ok, response.message.clone()))
        }
        _ => None,
    })
}

#[test]
fn diamond_starts_in_order_and_independent_units_together() {
    let mut t = T::new(vec![
        longrun("base"),
        requires(longrun("left"), &["base"]),
        requires(longrun("right"), &["base"]),
        requires(longrun("top"), &["left", "right"]),
        longrun("solo"),
    ]);
    let order = spawned(&t.log);
    let pos = |n: &str| order.iter().position(|x| x == n).unwrap_or(usize::MAX);
    assert!(pos("base") < pos("left") && pos("base") < pos("right"));
    assert!(pos("left") < pos("top") && pos("right") < pos("top"));
    assert_eq!(order.len(), 5, "all start in one settle: {order:?}");
    assert!(t.running("top"));
    let _ = &mut t;
}

#[test]
fn oneshot_must_complete_before_dependents() {
    let mut setup = UnitSpec::simple("setup", UnitKind::Oneshot, &["/bin/x"]);
    setup.restart.policy = RestartPolicy::Never;
    let mut t = T::new(vec![setup, requires(longrun("app"), &["setup"])]);
    assert_eq!(spawned(&t.log), vec!["setup"]);
    assert!(t.why("app").contains("setup"));
    let acts = t.exit("setup", 0);
    assert_eq!(spawned(&acts), vec!["app"]);
    assert!(matches!(t.state("setup"), UnitState::Done));
}

#[test]
fn dependents_stop_before_their_dependency() {
    let mut t = T::new(vec![longrun("db"), requires(longrun("app"), &["db"])]);
    let (req, acts) = t.cmd(Request::Stop { unit: "db".into() });
    assert_eq!(
        signalled(&t, &acts),
        vec!["app"],
        "only the dependent first"
    );
    assert!(reply(&acts, req).is_none(), "answer waits for the stop");
    let acts = t.exit("app", 0);
    assert_eq!(signalled(&t, &acts), vec!["db"]);
    let acts = t.exit("db", 0);
    assert!(reply(&acts, req).is_some_and(|(ok, _)| ok));
    assert!(
        spawned(&acts).is_empty(),
        "app must not come back without db"
    );
}

#[test]
fn operator_stop_is_not_undone_by_policy_or_dependency() {
    let mut db = longrun("db");
    db.restart.policy = RestartPolicy::Always;
    let mut t = T::new(vec![db, requires(longrun("app"), &["db"])]);
    t.cmd(Request::Stop { unit: "db".into() });
    t.exit("app", 0);
    t.exit("db", 0);
    for _ in 0..20 {
        let acts = t.advance(Duration::from_secs(1));
        assert!(spawned(&acts).is_empty(), "{acts:?}");
    }
    assert!(t.why("db").contains("stopped by an operator"));
    let (_, acts) = t.cmd(Request::Start { unit: "db".into() });
    assert_eq!(spawned(&acts), vec!["db", "app"]);
}

#[test]
fn crash_restarts_with_backoff_then_fails_at_the_burst() {
    let mut s = longrun("svc");
    s.restart.delay = Duration::from_millis(100);
    s.restart.max_delay = Duration::from_secs(10);
    s.restart.burst = 3;
    s.restart.interval = Duration::from_secs(60);
    let mut t = T::new(vec![s]);
    let mut delays = vec![];
    for _ in 0..3 {
        t.exit("svc", 1);
        let until = match t.state("svc") {
            UnitState::Backoff { until } => *until,
            other => panic!("{other:?}"),
        };
        delays.push(until.duration_since(t.now));
        t.advance(until.duration_since(t.now));
        assert!(t.running("svc"));
    }
    assert!(delays[0] <= Duration::from_millis(100) && delays[0] >= Duration::from_millis(50));
    assert!(delays[2] > delays[0], "backoff grows: {delays:?}");
    t.exit("svc", 1);
    t.advance(Duration::from_secs(10));
    assert!(
        matches!(t.state("svc"), UnitState::Failed { .. }),
        "{:?}",
        t.state("svc")
    );
    assert!(t.why("svc").contains("start limit"));
    let (_, acts) = t.cmd(Request::Start { unit: "svc".into() });
    assert_eq!(spawned(&acts), vec!["svc"], "start clears failed");
}

#[test]
fn clean_exit_under_on_failure_is_not_restarted() {
    let mut t = T::new(vec![longrun("svc")]);
    t.exit("svc", 0);
    let acts = t.advance(Duration::from_secs(5));
    assert!(spawned(&acts).is_empty());
    assert!(matches!(t.state("svc"), UnitState::Exited { .. }));
}

/// Invariant 2, table-driven over every path that can start a unit.
#[test]
fn a_locked_unit_is_never_started_by_any_path() {
    type Path = fn(&mut T) -> Vec<Action>;
    let paths: Vec<(&str, Path)> = vec![
        ("restart policy after a crash", |t| {
            t.advance(Duration::from_secs(5))
        }),
        ("dependency pull-up (dependency restarted)", |t| {
            t.cmd(Request::Restart { unit: "dep".into() });
            let mut a = t.exit("app", 0);
            a.extend(t.exit("dep", 0));
            a.extend(t.advance(Duration::from_secs(1)));
            a
        }),
        ("manual start", |t| {
            t.cmd(Request::Start { unit: "db".into() }).1
        }),
        ("manual restart", |t| {
            t.cmd(Request::Restart { unit: "db".into() }).1
        }),
        ("reload", |t| {
            let set = crate::graph::build(specs()).expect("set");
            let req = ReqId(999);
            t.feed(Event::Reloaded {
                req: Some(req),
                peer: PeerInfo {
                    uid: 0,
                    pid: None,
                    name: "root".into(),
                },
                wall_ms: 0,
                result: Ok(set),
            })
        }),
        ("mount reappearing", |t| {
            let mut a = t.feed(Event::MountTableChanged(table(&[])));
            a.extend(t.feed(Event::MountTableChanged(table(&[("/srv/db", false)]))));
            a
        }),
        ("unshed", |t| {
            let mut a = t
                .cmd(Request::Shed {
                    level: crate::unit::Priority::Critical,
                })
                .1;
            a.extend(t.cmd(Request::Unshed).1);
            a
        }),
        ("probe-driven restart", |t| {
            let mut a = vec![];
            for _ in 0..5 {
                a.extend(t.advance(Duration::from_secs(1)));
            }
            a
        }),
        ("timers firing for an hour", |t| {
            let mut a = vec![];
            for _ in 0..60 {
                a.extend(t.advance(Duration::from_secs(60)));
            }
            a
        }),
    ];
    fn specs() -> Vec<UnitSpec> {
        let mut db = requires(longrun("db"), &["dep"]);
        db.restart.policy = RestartPolicy::Always;
        db.mounts.push(MountReq {
            path: "/srv/db".into(),
            fstype: None,
            source: None,
            options: vec![],
            on_loss: OnLoss::Stop,
            timeout: None,
            symlink_to: None,
        });
        db.health = Some(HealthSpec {
            target: ProbeTarget::Tcp("127.0.0.1:1".into()),
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(100),
            start_period: Duration::ZERO,
            failure_threshold: 1,
            success_threshold: 1,
            on_unhealthy: OnUnhealthy::Restart,
        });
        vec![longrun("dep"), db, requires(longrun("app"), &["dep"])]
    }
    for (name, path) in paths {
        let mut t = T::with(specs(), 16, table(&[("/srv/db", false)]), true);
        assert!(t.running("db"), "{name}: db should start first");
        let (req, _) = t.cmd(Request::MaintenanceOn {
            unit: "db".into(),
            reason: "disk swap".into(),
            holder: Some("alice".into()),
        });
        let acts = t.exit("db", 0);
        assert!(
            reply(&acts, req).is_none(),
            "{name}: answered before the lock was durable"
        );
        let acts = t.persist_all(true);
        assert!(reply(&acts, req).is_some_and(|(ok, _)| ok), "{name}");
        let acts = path(&mut t);
        assert!(
            !spawned(&acts).contains(&"db".to_string()),
            "{name}: locked unit started: {acts:?}"
        );
        assert!(!t.running("db"), "{name}");
        if name.starts_with("manual") {
            let refused = acts.iter().any(|a| matches!(a, Action::Reply { response, .. } if !response.ok && response.message.contains("alice") && response.message.contains("disk swap")));
            assert!(
                refused,
                "{name}: refusal must name holder and reason: {acts:?}"
            );
        }
    }
}

#[test]
fn release_takes_effect_only_once_durable_and_only_after_the_last_holder() {
    let mut t = T::new(vec![longrun("db")]);
    for h in ["alice", "bob"] {
        t.cmd(Request::MaintenanceOn {
            unit: "db".into(),
            reason: h.into(),
            holder: Some(h.into()),
        });
    }
    t.exit("db", 0);
    t.persist_all(true);
    let (_, acts) = t.cmd(Request::MaintenanceOff {
        unit: "db".into(),
        holder: Some("alice".into()),
        force: false,
        dry_run: false,
    });
    assert!(spawned(&acts).is_empty());
    let acts = t.persist_all(true);
    assert!(spawned(&acts).is_empty(), "bob still holds it");
    let (req, acts) = t.cmd(Request::MaintenanceOff {
        unit: "db".into(),
        holder: Some("bob".into()),
        force: false,
        dry_run: false,
    });
    assert!(
        spawned(&acts).is_empty(),
        "no start before the release is on disk"
    );
    assert!(reply(&acts, req).is_none());
    let acts = t.persist_all(true);
    assert_eq!(spawned(&acts), vec!["db"]);
    assert!(reply(&acts, req).is_some_and(|(ok, m)| ok && m.contains("starting")));
}

fn persisted_versions(acts: &[Action]) -> Vec<u64> {
    acts.iter()
        .filter_map(|a| match a {
            Action::PersistLocks { version, .. } => Some(*version),
            _ => None,
        })
        .collect()
}

/// Issue 13 item 8: one failed lock write (ENOSPC) once failed the whole
/// engine closed — no unrelated restart until an operator acted. Now the
/// command that asked fails with a clear error, the unit stays held (a new
/// lock holds at once; a release frees only once durable), the write is
/// retried with backoff, and everything else goes on.
#[test]
fn failed_lock_write_fails_the_command_retries_and_freezes_nothing() {
    let mut t = T::new(vec![longrun("db"), longrun("web"), longrun("cache")]);
    let (req, _) = t.cmd(Request::MaintenanceOn {
        unit: "db".into(),
        reason: "x".into(),
        holder: None,
    });
    t.exit("db", 0);
    let acts = t.persist_all(false);
    let (ok, msg) = reply(&acts, req).expect("the command is answered");
    assert!(!ok, "{msg}");
    assert!(
        msg.contains("disk on fire") && msg.contains("not on disk") && msg.contains("retr"),
        "{msg}"
    );
    assert!(!t.running("db"), "a new lock holds at once, durable or not");
    let st = t.e.status_report(&[], t.now, 0);
    assert!(st.lock_state_problem.is_none(), "not fail-closed: {st:?}");
    assert!(
        st.lock_write_problem
            .as_deref()
            .is_some_and(|p| p.contains("disk on fire")),
        "{st:?}"
    );
    // An unrelated crash is still restarted.
    t.exit("web", 1);
    let acts = t.advance(Duration::from_millis(500));
    assert_eq!(spawned(&acts), vec!["web"]);
    // The write is retried by itself, with backoff: one retry per due
    // time, not one per tick.
    let mut retries = persisted_versions(&acts);
    for _ in 0..10 {
        let acts = t.advance(Duration::from_millis(200));
        retries.extend(persisted_versions(&acts));
    }
    assert_eq!(retries.len(), 1, "retried once in 2.5 s: {retries:?}");
    // It fails again; then space is freed and the next retry succeeds.
    t.persist_all(false);
    let mut acts = Vec::new();
    for _ in 0..40 {
        acts = t.advance(Duration::from_millis(250));
        if !persisted_versions(&acts).is_empty() {
            break;
        }
    }
    assert!(!persisted_versions(&acts).is_empty(), "no second retry");
    t.persist_all(true);
    let st = t.e.status_report(&[], t.now, 0);
    assert!(st.lock_write_problem.is_none(), "{st:?}");
    assert!(!t.running("db"));
    // A release whose write fails: the command fails, db stays down until
    // the release is on disk (the retry), then it starts.
    let (req, _) = t.cmd(Request::MaintenanceOff {
        unit: "db".into(),
        holder: None,
        force: false,
        dry_run: false,
    });
    let acts = t.persist_all(false);
    let (ok, msg) = reply(&acts, req).expect("answered");
    assert!(
        !ok && msg.contains("release") && msg.contains("stays"),
        "{msg}"
    );
    assert!(!t.running("db"), "a release frees only once durable");
    let mut acts = Vec::new();
    for _ in 0..40 {
        acts = t.advance(Duration::from_millis(250));
        if !persisted_versions(&acts).is_empty() {
            break;
        }
    }
    assert!(!persisted_versions(&acts).is_empty(), "release not retried");
    let acts = t.persist_all(true);
    assert_eq!(spawned(&acts), vec!["db"]);
    // Nothing left to retry: the engine goes quiet.
    let acts = t.advance(Duration::from_secs(120));
    assert!(persisted_versions(&acts).is_empty(), "{acts:?}");
}

#[test]
fn unknown_lock_state_starts_only_essential_units() {
    let mut console = longrun("console");
    console.essential = true;
    let mut t = T::with(vec![console, longrun("db")], 16, table(&[]), false);
    assert_eq!(spawned(&t.log), vec!["console"]);
    assert!(t.why("db").contains("lock state unknown"));
    let (_, acts) = t.cmd(Request::Start { unit: "db".into() });
    assert!(spawned(&acts).is_empty());
    let req = ReqId(77);
    t.feed(Event::Recover {
        req,
        peer: PeerInfo {
            uid: 0,
            pid: None,
            name: "root".into(),
        },
        wall_ms: 0,
        result: Ok(LockMap::new()),
        source: "test".into(),
    });
    let acts = t.persist_all(true);
    assert_eq!(spawned(&acts), vec!["db"]);
}

#[test]
fn dependents_wait_on_a_locked_dependency_and_why_says_so() {
    let mut t = T::new(vec![longrun("db"), requires(longrun("app"), &["db"])]);
    t.cmd(Request::MaintenanceOn {
        unit: "db".into(),
        reason: "upgrade".into(),
        holder: Some("alice".into()),
    });
    t.exit("app", 0);
    t.exit("db", 0);
    t.persist_all(true);
    let why = t.why("app");
    assert!(why.contains("db") && why.contains("maintenance"), "{why}");
}

#[test]
fn shutdown_stops_in_reverse_dependency_order() {
    let mut t = T::new(vec![
        longrun("a"),
        requires(longrun("b"), &["a"]),
        requires(longrun("c"), &["b"]),
    ]);
    let acts = t.feed(Event::ShutdownRequested(crate::engine::ShutdownKind::Exit));
    assert_eq!(signalled(&t, &acts), vec!["c"]);
    let acts = t.exit("c", 0);
    assert_eq!(signalled(&t, &acts), vec!["b"]);
    let acts = t.exit("b", 0);
    assert_eq!(signalled(&t, &acts), vec!["a"]);
    let acts = t.exit("a", 0);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::ShutdownComplete(_)))
    );
}

#[test]
fn stop_timeout_sends_sigkill() {
    let mut s = longrun("svc");
    s.stop.timeout = Duration::from_secs(3);
    let mut t = T::new(vec![s]);
    t.cmd(Request::Stop { unit: "svc".into() });
    let acts = t.advance(Duration::from_secs(2));
    assert!(signalled(&t, &acts).is_empty());
    let acts = t.advance(Duration::from_secs(2));
    assert!(acts.iter().any(|a| matches!(a, Action::KillGroup { .. })));
}

// ---- containment (cgroup per unit) ----------------------------------------

fn contained(specs: Vec<UnitSpec>) -> T {
    let mut t = T::new(vec![]);
    t.contained = true;
    let set = crate::graph::build(specs).expect("valid set");
    t.replace(Engine::new(set, EngineConfig::default(), table(&[])));
    t.feed(Event::LocksLoaded(LocksLoad::Loaded(LockMap::new())));
    t
}

fn kills(acts: &[Action]) -> usize {
    acts.iter()
        .filter(|a| matches!(a, Action::KillGroup { .. }))
        .count()
}

#[test]
fn contained_run_lasts_until_its_group_is_empty() {
    let mut s = longrun("d");
    s.restart.policy = RestartPolicy::Always;
    let mut t = contained(vec![s]);
    let run = t.run_of("d");
    // The main process exits (a daemon's parent after forking): what is
    // left of it is killed, and nothing starts again while it lives.
    let acts = t.exit("d", 0);
    assert_eq!(kills(&acts), 1, "{acts:?}");
    assert!(matches!(t.state("d"), UnitState::Draining { .. }));
    assert!(spawned(&t.advance(Duration::from_secs(5))).is_empty());
    let acts = t.feed(Event::GroupEmpty { run });
    assert!(
        matches!(t.state("d"), UnitState::Backoff { .. }),
        "{acts:?}"
    );
    let acts = t.advance(Duration::from_secs(1));
    assert_eq!(spawned(&acts), vec!["d".to_string()]);
    assert_ne!(t.run_of("d"), run);
}

#[test]
fn group_empty_before_the_exit_is_reaped_ends_the_run_at_the_exit() {
    let mut t = contained(vec![longrun("d")]);
    let run = t.run_of("d");
    t.feed(Event::GroupEmpty { run });
    assert!(t.running("d"), "the main process is not reaped yet");
    let acts = t.exit("d", 1);
    assert_eq!(kills(&acts), 0);
    assert!(matches!(t.state("d"), UnitState::Backoff { .. }));
    // A late duplicate changes nothing.
    t.feed(Event::GroupEmpty { run });
    assert!(matches!(t.state("d"), UnitState::Backoff { .. }));
}

#[test]
fn stop_answers_only_when_the_group_is_empty() {
    let mut t = contained(vec![longrun("d")]);
    let run = t.run_of("d");
    let (req, acts) = t.cmd(Request::Stop { unit: "d".into() });
    assert!(acts.iter().any(|a| matches!(a, Action::Signal { .. })));
    // Default kill_mode = group: the rest got the signal too; they are
    // given until the timeout after the main process is gone.
    let acts = t.exit("d", 0);
    assert_eq!(kills(&acts), 0);
    assert!(!replied(&acts, req));
    let acts = t.advance(Duration::from_secs(11));
    assert_eq!(kills(&acts), 1, "SIGKILL to what is left at the timeout");
    let acts = t.feed(Event::GroupEmpty { run });
    assert!(replied(&acts, req), "{acts:?}");
    assert_eq!(t.e.state_word(t.e.unit_id("d").expect("d")), "stopped");
}

#[test]
fn oom_policy_stop_fails_the_run_and_continue_keeps_it() {
    let mut st = longrun("st");
    st.resources.oom_policy = crate::unit::OomPolicy::Stop;
    st.restart.policy = RestartPolicy::Never;
    let mut t = contained(vec![st, longrun("co")]);
    let (rs, rc) = (t.run_of("st"), t.run_of("co"));
    // An OOM kill of a worker: `continue` goes on while its main lives.
    t.feed(Event::OomKilled { run: rc, count: 1 });
    assert!(t.running("co"));
    // `stop`: the run is stopped (the group signalled), as a failure.
    let acts = t.feed(Event::OomKilled { run: rs, count: 1 });
    assert!(
        acts.iter().any(|a| matches!(a, Action::Signal { .. })),
        "{acts:?}"
    );
    t.exit("st", 0);
    t.feed(Event::GroupEmpty { run: rs });
    assert!(
        matches!(t.state("st"), UnitState::Failed { .. }),
        "{:?}",
        t.state("st")
    );
    // A late OOM report for an old run changes nothing.
    t.feed(Event::OomKilled { run: rs, count: 1 });
    assert!(matches!(t.state("st"), UnitState::Failed { .. }));
}

#[test]
fn kill_mode_main_and_mixed() {
    let mut m = longrun("m");
    m.stop.kill_mode = crate::unit::KillMode::Main;
    let mut x = longrun("x");
    x.stop.kill_mode = crate::unit::KillMode::Mixed;
    let mut t = contained(vec![m, x]);
    for (name, kill_at_exit) in [("m", 0), ("x", 1)] {
        let (_, acts) = t.cmd(Request::Stop { unit: name.into() });
        assert!(
            acts.iter().any(|a| matches!(a, Action::SignalMain { .. })),
            "{name}: {acts:?}"
        );
        assert!(!acts.iter().any(|a| matches!(a, Action::Signal { .. })));
        let acts = t.exit(name, 0);
        assert_eq!(kills(&acts), kill_at_exit, "{name}: {acts:?}");
    }
}

fn replied(acts: &[Action], req: ReqId) -> bool {
    acts.iter()
        .any(|a| matches!(a, Action::Reply { req: r, .. } if *r == req))
}

#[test]
fn max_parallel_starts_queues_notify_units() {
    let specs: Vec<UnitSpec> = (0..10)
        .map(|i| {
            let mut s = longrun(&format!("n{i}"));
            s.ready.kind = ReadyKind::Notify;
            s
        })
        .collect();
    let mut t = T::with(specs, 3, table(&[]), true);
    assert_eq!(spawned(&t.log).len(), 3);
    let run = t.run_of("n0");
    let acts = t.feed(Event::Notified {
        run,
        msg: NotifyMsg {
            ready: true,
            ..Default::default()
        },
    });
    assert_eq!(spawned(&acts).len(), 1, "one slot freed, one start");
    assert!(t.why("n9").contains("max_parallel_starts"));
}

#[test]
fn notify_readiness_gates_dependents() {
    let mut db = longrun("db");
    db.ready.kind = ReadyKind::Notify;
    let mut t = T::new(vec![db, requires(longrun("app"), &["db"])]);
    assert_eq!(spawned(&t.log), vec!["db"]);
    let run = t.run_of("db");
    let acts = t.feed(Event::Notified {
        run,
        msg: NotifyMsg {
            ready: true,
            status: Some("up".into()),
            ..Default::default()
        },
    });
    assert_eq!(spawned(&acts), vec!["app"]);
}

#[test]
fn probe_thresholds_start_period_and_stale_results() {
    let mut s = longrun("web");
    s.ready.kind = ReadyKind::Probe;
    s.restart.policy = RestartPolicy::Always;
    s.health = Some(HealthSpec {
        target: ProbeTarget::Tcp("127.0.0.1:1".into()),
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(200),
        start_period: Duration::from_secs(3),
        failure_threshold: 2,
        success_threshold: 2,
        on_unhealthy: OnUnhealthy::Restart,
    });
    let mut t = T::new(vec![s]);
    let run = t.run_of("web");
    let probe = |t: &mut T, ok: bool| {
        t.feed(Event::ProbeAnswered {
            kind: crate::engine::ProbeKind::Liveness,
            run,
            ok,
            output: None,
        })
    };
    // Not ready yet: failures do not count (not ready is not unhealthy).
    for _ in 0..5 {
        probe(&mut t, false);
    }
    assert!(matches!(t.state("web"), UnitState::Starting { .. }));
    probe(&mut t, true);
    assert!(
        matches!(t.state("web"), UnitState::Starting { .. }),
        "success_threshold 2"
    );
    probe(&mut t, true);
    assert!(matches!(
        t.state("web"),
        UnitState::Running { ready: true, .. }
    ));
    // Within start_period (3 s from spawn) failures still do not count.
    probe(&mut t, false);
    probe(&mut t, false);
    assert!(matches!(t.state("web"), UnitState::Running { .. }));
    t.now += Duration::from_secs(4);
    probe(&mut t, false);
    let acts = probe(&mut t, false);
    assert_eq!(signalled(&t, &acts), vec!["web"], "unhealthy -> restart");
    t.exit("web", 0);
    // A late answer from the old run must not touch the new one.
    t.advance(Duration::from_secs(5));
    let new_run = t.run_of("web");
    assert_ne!(new_run, run);
    let before = t.state("web").clone();
    let acts = t.feed(Event::ProbeAnswered {
        kind: crate::engine::ProbeKind::Liveness,
        run,
        ok: true,
        output: None,
    });
    assert!(acts.is_empty());
    assert_eq!(*t.state("web"), before);
}

#[test]
fn mount_timeout_fails_with_the_path() {
    let mut s = longrun("db");
    s.mounts.push(MountReq {
        path: "/srv/pg".into(),
        fstype: None,
        source: None,
        options: vec!["rw".into()],
        on_loss: OnLoss::Stop,
        timeout: Some(Duration::from_secs(30)),
        symlink_to: None,
    });
    let mut t = T::new(vec![s]);
    assert!(
        t.why("db")
            .contains("/srv/pg is a directory on /, not a mount point")
    );
    t.advance(Duration::from_secs(31));
    assert!(matches!(t.state("db"), UnitState::Failed { .. }));
    assert!(t.why("db").contains("/srv/pg"), "{}", t.why("db"));
    // Read-only does not satisfy rw.
    t.feed(Event::MountTableChanged(table(&[("/srv/pg", true)])));
    let (_, acts) = t.cmd(Request::Start { unit: "db".into() });
    assert!(spawned(&acts).is_empty());
    assert!(t.why("db").contains("read-only"));
    let acts = t.feed(Event::MountTableChanged(table(&[("/srv/pg", false)])));
    assert_eq!(spawned(&acts), vec!["db"]);
    let acts = t.feed(Event::MountTableChanged(table(&[])));
    assert_eq!(signalled(&t, &acts), vec!["db"], "mount lost -> stop");
}

#[test]
fn spawner_refusal_waits_for_the_next_mount_table() {
    let mut s = longrun("db");
    s.mounts.push(MountReq {
        path: "/srv/pg".into(),
        fstype: None,
        source: None,
        options: vec![],
        on_loss: OnLoss::Stop,
        timeout: None,
        symlink_to: None,
    });
    let set = crate::graph::build(vec![s]).expect("set");
    let now = Instant::now();
    let mut e = Engine::new(set, EngineConfig::default(), table(&[("/srv/pg", false)]));
    let acts = e.handle(now, Event::LocksLoaded(LocksLoad::Loaded(LockMap::new())));
    let run = acts
        .iter()
        .find_map(|a| match a {
            Action::Spawn { run, .. } => Some(*run),
            _ => None,
        })
        .expect("spawn");
    // The kernel's table says otherwise: the spawner refuses.
    let problem = crate::mounts::MountProblem::NotMounted {
        path: "/srv/pg".into(),
        on: Some("/".into()),
        link: None,
    };
    let acts = e.handle(
        now,
        Event::SpawnFailed {
            run,
            error: problem.to_string(),
            mount: Some(problem),
        },
    );
    assert!(
        spawned(&acts).is_empty(),
        "must not retry in a tight loop: {acts:?}"
    );
    let id = e.unit_id("db").expect("db");
    assert!(e.why(id, now).contains("not a mount point"));
    // The watcher catches up: mounted after all.
    let acts = e.handle(now, Event::MountTableChanged(table(&[("/srv/pg", false)])));
    assert_eq!(spawned(&acts), vec!["db"]);
}

fn tcp_probe(failure_threshold: u32) -> HealthSpec {
    HealthSpec {
        target: ProbeTarget::Tcp("127.0.0.1:1".into()),
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(200),
        start_period: Duration::ZERO,
        failure_threshold,
        success_threshold: 1,
        on_unhealthy: OnUnhealthy::Restart,
    }
}

#[test]
fn not_ready_is_not_unhealthy() {
    let mut db = longrun("db");
    db.ready.kind = ReadyKind::Probe;
    db.readiness = Some(tcp_probe(2));
    db.restart.policy = RestartPolicy::Always;
    let mut t = T::new(vec![db, requires(longrun("app"), &["db"])]);
    let run = t.run_of("db");
    let answer = |t: &mut T, ok: bool| {
        t.feed(Event::ProbeAnswered {
            run,
            kind: crate::engine::ProbeKind::Readiness,
            ok,
            output: None,
        })
    };
    let acts = answer(&mut t, true);
    assert_eq!(spawned(&acts), vec!["app"], "ready -> dependent starts");
    answer(&mut t, false);
    let acts = answer(&mut t, false);
    assert!(matches!(
        t.state("db"),
        UnitState::Running { ready: false, .. }
    ));
    assert!(
        signalled(&t, &acts).is_empty(),
        "nothing restarted or stopped: {acts:?}"
    );
    assert!(t.running("app"), "a running dependent keeps running");
    // A dependent that has not started yet waits: stop and start app.
    t.cmd(Request::Stop { unit: "app".into() });
    t.exit("app", 0);
    let (_, acts) = t.cmd(Request::Start { unit: "app".into() });
    assert!(spawned(&acts).is_empty());
    assert!(t.why("app").contains("not ready"), "{}", t.why("app"));
    let acts = answer(&mut t, true);
    assert_eq!(spawned(&acts), vec!["app"]);
}

#[test]
fn watchdog_silence_restarts_the_unit() {
    let mut s = longrun("svc");
    s.ready.kind = ReadyKind::Notify;
    s.ready.watchdog = Some(Duration::from_secs(5));
    s.restart.policy = RestartPolicy::Always;
    let mut t = T::new(vec![s]);
    let run = t.run_of("svc");
    let ready = NotifyMsg {
        ready: true,
        ..Default::default()
    };
    t.feed(Event::Notified { run, msg: ready });
    for _ in 0..3 {
        t.now += Duration::from_secs(4);
        t.feed(Event::Notified {
            run,
            msg: NotifyMsg {
                watchdog: true,
                ..Default::default()
            },
        });
        let acts = t.feed(Event::Tick);
        assert!(signalled(&t, &acts).is_empty(), "pinged in time");
    }
    let acts = t.advance(Duration::from_secs(6));
    assert_eq!(signalled(&t, &acts), vec!["svc"], "watchdog expired");
}

#[test]
fn fd_readiness_gates_dependents() {
    let mut db = longrun("db");
    db.ready.kind = ReadyKind::Fd;
    let mut t = T::new(vec![db, requires(longrun("app"), &["db"])]);
    assert_eq!(spawned(&t.log), vec!["db"]);
    let run = t.run_of("db");
    // A notify message does not count for an fd unit.
    let acts = t.feed(Event::Notified {
        run,
        msg: NotifyMsg {
            ready: true,
            ..Default::default()
        },
    });
    assert!(spawned(&acts).is_empty());
    let acts = t.feed(Event::ReadyFd { run });
    assert_eq!(spawned(&acts), vec!["app"]);
}

// ---- adoption (a previous supd left units running) ------------------------

fn adopted_world(specs: Vec<UnitSpec>, survivors: &[(&str, Option<i32>)], locked: &[&str]) -> T {
    let mut t = T::new(vec![]);
    t.contained = true;
    let set = crate::graph::build(specs).expect("valid set");
    t.replace(Engine::new(set, EngineConfig::default(), table(&[])));
    // As the driver does: every survivor and the first tick in one batch,
    // before the lock file has been read.
    let mut evs: Vec<Event> = survivors
        .iter()
        .map(|(u, pid)| Event::Adopted {
            unit: u.to_string(),
            pid: *pid,
            cgroup: Some(format!("/supd/{u}.unit")),
            wall_ms: 1,
        })
        .collect();
    evs.push(Event::Tick);
    let full = t.oracle.handle_many(t.now, evs.clone());
    let acts = t.e.handle_many(t.now, evs);
    check_oracle(&t.e, &t.oracle, &acts, &full);
    t.log.extend(acts);
    let mut map = LockMap::new();
    for u in locked {
        map.insert(
            u.to_string(),
            vec![crate::engine::locks::Holder {
                holder: "ops".into(),
                reason: "before the crash".into(),
                since_unix_ms: 0,
            }],
        );
    }
    t.feed(Event::LocksLoaded(LocksLoad::Loaded(map)));
    t
}

#[test]
fn adoption_keeps_one_copy_and_never_resurrects_a_locked_unit() {
    let t = adopted_world(
        vec![longrun("a"), longrun("b"), longrun("c")],
        &[("a", Some(500)), ("b", None), ("c", Some(700))],
        &["c"],
    );
    // No spawn for a unit found running: never a second copy.
    assert!(spawned(&t.log).is_empty(), "{:?}", t.log);
    assert!(
        t.log
            .iter()
            .any(|a| matches!(a, Action::Track { unit, pid: Some(500), .. } if unit == "a"))
    );
    assert!(matches!(t.state("a"), UnitState::Running { pid: 500, .. }));
    // Without a main process supd can vouch for: stopped, not adopted.
    assert!(matches!(t.state("b"), UnitState::Draining { .. }));
    // Locked on disk: stopped as soon as the lock is known.
    assert!(
        matches!(t.state("c"), UnitState::Stopping { .. }),
        "{:?}",
        t.state("c")
    );
    let audited: Vec<&str> = t
        .log
        .iter()
        .filter_map(|a| match a {
            Action::Audit(e) if e.action == "adopt" => e.unit.as_deref(),
            _ => None,
        })
        .collect();
    assert_eq!(audited, vec!["a", "b", "c"]);
}

#[test]
fn unowned_survivor_starts_afresh_only_once_its_group_is_empty() {
    let mut t = adopted_world(vec![longrun("b")], &[("b", None)], &[]);
    let run = t.run_of("b");
    assert!(spawned(&t.advance(Duration::from_secs(5))).is_empty());
    let acts = t.advance(Duration::from_secs(6));
    assert_eq!(kills(&acts), 1, "SIGKILL at the stop timeout: {acts:?}");
    let acts = t.feed(Event::GroupEmpty { run });
    assert_eq!(spawned(&acts), vec!["b".to_string()]);
}

/// Issue 13 item 7: a `notify` unit still starting (crash recovery) is
/// probed, but failures before READY=1 do not count — `[ready] timeout`
/// governs start-up (Kubernetes' startupProbe semantics). Once ready,
/// they do.
#[test]
fn health_failures_before_readiness_do_not_count() {
    let mut db = longrun("db");
    db.ready.kind = ReadyKind::Notify;
    db.ready.timeout = Some(Duration::from_secs(120));
    db.restart.policy = RestartPolicy::Always;
    db.health = Some(tcp_probe(3));
    let mut t = T::new(vec![db]);
    let run = t.run_of("db");
    let probe = |t: &mut T, ok: bool| {
        t.feed(Event::ProbeAnswered {
            run,
            kind: crate::engine::ProbeKind::Liveness,
            ok,
            output: Some("connection refused".into()),
        })
    };
    for _ in 0..30 {
        t.now += Duration::from_secs(1);
        let acts = probe(&mut t, false);
        assert!(signalled(&t, &acts).is_empty(), "killed while starting");
    }
    assert!(matches!(t.state("db"), UnitState::Starting { .. }));
    t.feed(Event::Notified {
        run,
        msg: crate::engine::NotifyMsg {
            ready: true,
            ..Default::default()
        },
    });
    assert!(matches!(
        t.state("db"),
        UnitState::Running { ready: true, .. }
    ));
    probe(&mut t, false);
    probe(&mut t, false);
    let acts = probe(&mut t, false);
    assert_eq!(signalled(&t, &acts), vec!["db"], "unhealthy once ready");
}

/// Issue 13 item 9: what `why`, `status` and the replies tell an operator
/// about a dependency names the unit that blocks, with its reason.
#[test]
fn blocker_hints_name_the_blocking_unit() {
    let mut t = T::new(vec![
        longrun("db"),
        requires(longrun("web"), &["db"]),
        requires(longrun("app"), &["web"]),
    ]);
    t.cmd(Request::MaintenanceOn {
        unit: "db".into(),
        reason: "upgrade".into(),
        holder: Some("alice".into()),
    });
    t.exit("app", 0);
    t.exit("web", 0);
    t.exit("db", 0);
    t.persist_all(true);
    let why = t.why("web");
    assert!(
        why.contains("supctl maintenance off db") && !why.contains("off web"),
        "{why}"
    );
    // The DETAIL column says why db is not ready, not just "db: ".
    let web = t.e.unit_id("web").unwrap();
    let st = t.e.status_report(&[web], t.now, 0);
    let detail = st.units[0].detail.clone().unwrap_or_default();
    assert!(
        detail.starts_with("waiting for required unit db: under maintenance"),
        "{detail:?}"
    );
    // A dry run lists db and the dependents that come back after it.
    let (req, acts) = t.cmd(Request::MaintenanceOff {
        unit: "db".into(),
        holder: Some("alice".into()),
        force: false,
        dry_run: true,
    });
    let (ok, msg) = reply(&acts, req).expect("reply");
    assert!(ok, "{msg}");
    assert!(
        msg.contains("db") && msg.contains("web") && msg.contains("app"),
        "{msg}"
    );
    assert!(
        msg.find("db") < msg.find("web") && msg.find("web") < msg.find("app"),
        "{msg}"
    );
    // A start reply names the real unit to start, never "UNIT".
    t.cmd(Request::MaintenanceOff {
        unit: "db".into(),
        holder: Some("alice".into()),
        force: false,
        dry_run: false,
    });
    t.persist_all(true);
    t.cmd(Request::Stop { unit: "db".into() });
    t.exit("app", 0);
    t.exit("web", 0);
    t.exit("db", 0);
    let (req, acts) = t.cmd(Request::Start { unit: "web".into() });
    let (_, msg) = reply(&acts, req).expect("reply");
    assert!(
        msg.contains("`supctl start db`") && !msg.contains("UNIT"),
        "{msg}"
    );
}

/// Issue 13 item 3: durations far beyond what an `Instant` can hold (a
/// unit file is bounded at load, but the engine must not trust that) never
/// overflow a deadline — start timeout, watchdog, probe interval, mount
/// timeout, stop timeout, restart backoff.
#[test]
fn huge_durations_never_overflow_a_deadline() {
    let huge = Duration::MAX;
    let mut db = longrun("db");
    db.ready.kind = ReadyKind::Notify;
    db.ready.timeout = Some(huge);
    db.ready.watchdog = Some(huge);
    db.stop.timeout = huge;
    db.restart.policy = RestartPolicy::Always;
    db.restart.delay = huge;
    db.restart.max_delay = huge;
    let mut probe = tcp_probe(1);
    probe.interval = huge;
    probe.timeout = huge;
    probe.start_period = huge;
    db.health = Some(probe);
    let mut disk = longrun("disk");
    disk.mounts.push(MountReq {
        path: "/srv/pg".into(),
        fstype: None,
        source: None,
        options: vec![],
        on_loss: OnLoss::Stop,
        timeout: Some(huge),
        symlink_to: None,
    });
    let mut t = T::new(vec![db, disk]);
    assert!(t.why("disk").contains("not a mount point"));
    let run = t.run_of("db");
    t.feed(Event::Notified {
        run,
        msg: NotifyMsg {
            ready: true,
            watchdog: true,
            ..Default::default()
        },
    });
    t.feed(Event::ProbeAnswered {
        run,
        kind: crate::engine::ProbeKind::Liveness,
        ok: true,
        output: None,
    });
    assert!(matches!(
        t.state("db"),
        UnitState::Running { ready: true, .. }
    ));
    // A crash: backoff by `delay`.
    t.exit("db", 1);
    assert!(matches!(t.state("db"), UnitState::Backoff { .. }));
    // An operator start, then a stop: the stop timeout arms KillAfter.
    t.cmd(Request::Start { unit: "db".into() });
    assert!(t.running("db"));
    t.cmd(Request::Stop { unit: "db".into() });
    assert!(matches!(t.state("db"), UnitState::Stopping { .. }));
    let acts = t.advance(Duration::from_secs(3600));
    assert!(signalled(&t, &acts).is_empty(), "{acts:?}");
    assert!(t.e.next_deadline().is_some());
}

fn mount_at(path: &str, on_loss: OnLoss) -> MountReq {
    MountReq {
        path: path.into(),
        fstype: None,
        source: None,
        options: vec![],
        on_loss,
        timeout: None,
        symlink_to: None,
    }
}

/// Issue 13 item 1: when the mount table cannot be read, supd does not
/// know whether a required filesystem is there, so it is treated as not
/// there: nothing that needs a mount starts, and units with
/// `on_loss = "stop"` stop once the table has been unknown for the grace
/// period. Units without mounts are not affected; reading the table again
/// ends it.
#[test]
fn unknown_mount_table_fails_closed_until_read_again() {
    let mut db = longrun("db");
    db.mounts.push(mount_at("/srv/pg", OnLoss::Stop));
    let mut logs = longrun("logs");
    logs.mounts.push(mount_at("/srv/logs", OnLoss::Ignore));
    let mut late = longrun("late");
    late.mounts.push(mount_at("/srv/late", OnLoss::Stop));
    let mut t = T::with(
        vec![db, logs, late, longrun("web")],
        16,
        table(&[("/srv/pg", false), ("/srv/logs", false)]),
        true,
    );
    assert!(t.running("db") && t.running("logs") && t.running("web"));
    let acts = t.feed(Event::MountTableUnknown("reading mountinfo: EIO".into()));
    assert!(signalled(&t, &acts).is_empty(), "a grace first: {acts:?}");
    let why = t.why("late");
    assert!(
        why.contains("cannot be read") && why.contains("EIO"),
        "{why}"
    );
    let st = t.e.status_report(&[], t.now, 0);
    assert!(
        st.mount_table_problem
            .as_deref()
            .is_some_and(|p| p.contains("EIO")),
        "{st:?}"
    );
    // An operator start does not push through either.
    let (_, acts) = t.cmd(Request::Start {
        unit: "late".into(),
    });
    assert!(spawned(&acts).is_empty());
    let acts = t.advance(MOUNT_GRACE_IN_TEST / 2);
    assert!(signalled(&t, &acts).is_empty(), "{acts:?}");
    let acts = t.advance(MOUNT_GRACE_IN_TEST);
    assert_eq!(signalled(&t, &acts), vec!["db"], "on_loss = stop");
    t.exit("db", 0);
    assert!(!t.running("db"), "not started again while unknown");
    assert!(t.running("logs"), "on_loss = ignore keeps running");
    // Unrelated units keep being supervised.
    t.exit("web", 1);
    let acts = t.advance(Duration::from_secs(1));
    assert_eq!(spawned(&acts), vec!["web"]);
    // Read again: everything whose mount is there comes back.
    let acts = t.feed(Event::MountTableChanged(table(&[
        ("/srv/pg", false),
        ("/srv/logs", false),
        ("/srv/late", false),
    ])));
    let mut s = spawned(&acts);
    s.sort();
    assert_eq!(s, vec!["db", "late"]);
    assert!(
        t.e.status_report(&[], t.now, 0)
            .mount_table_problem
            .is_none()
    );
}

const MOUNT_GRACE_IN_TEST: Duration = crate::engine::MOUNT_UNKNOWN_GRACE;

/// After a failed release write, running `maintenance off` again writes
/// the pending release at once and answers when it is on disk (it once
/// said "no maintenance lock" while the unit was still held).
#[test]
fn repeating_a_release_whose_write_failed_writes_it_again() {
    let mut t = T::new(vec![longrun("db")]);
    t.cmd(Request::MaintenanceOn {
        unit: "db".into(),
        reason: "x".into(),
        holder: None,
    });
    t.exit("db", 0);
    t.persist_all(true);
    let off = Request::MaintenanceOff {
        unit: "db".into(),
        holder: None,
        force: false,
        dry_run: false,
    };
    t.cmd(off.clone());
    t.persist_all(false);
    assert!(!t.running("db"));
    let (req, acts) = t.cmd(Request::MaintenanceOff {
        unit: "db".into(),
        holder: None,
        force: false,
        dry_run: true,
    });
    assert!(
        reply(&acts, req).is_some_and(|(ok, m)| ok && m.contains("not on disk yet")),
        "{acts:?}"
    );
    assert!(
        persisted_versions(&acts).is_empty(),
        "a dry run writes nothing"
    );
    let (req, acts) = t.cmd(off);
    assert_eq!(persisted_versions(&acts).len(), 1, "{acts:?}");
    assert!(reply(&acts, req).is_none(), "answered before durable");
    let acts = t.persist_all(true);
    assert!(reply(&acts, req).is_some_and(|(ok, m)| ok && m.contains("on disk")));
    assert_eq!(spawned(&acts), vec!["db"]);
}

/// Issue 13 item 6: units a lenient boot left out are named by `status`,
/// `why` and `start` until a reload loads the whole directory.
#[test]
fn units_left_out_at_boot_are_reported_until_a_reload() {
    let mut t = T::new(vec![longrun("a")]);
    let mut skipped = crate::unit::load::Skipped::default();
    skipped.units.insert(
        "bad".into(),
        "/u/bad.toml:2:8: error: unknown variant".into(),
    );
    skipped
        .notes
        .push("essential unit c starts without bad".into());
    t.oracle.set_skipped(skipped.clone());
    t.e.set_skipped(skipped);
    let st = t.e.status_report(&[], t.now, 0);
    assert_eq!(st.unit_file_problems.len(), 2, "{st:?}");
    assert!(st.unit_file_problems[0].contains("bad not loaded: /u/bad.toml:2:8"));
    let (req, acts) = t.cmd(Request::Why { unit: "bad".into() });
    assert!(reply(&acts, req).is_some_and(|(ok, m)| ok && m.contains("not loaded at boot")));
    let (req, acts) = t.cmd(Request::Start { unit: "bad".into() });
    assert!(reply(&acts, req).is_some_and(|(ok, m)| !ok && m.contains("supctl reload")));
    let set = crate::graph::build(vec![longrun("a"), longrun("bad")]).expect("set");
    let acts = t.feed(Event::Reloaded {
        req: None,
        peer: PeerInfo {
            uid: 0,
            pid: None,
            name: "root".into(),
        },
        wall_ms: 0,
        result: Ok(set),
    });
    assert_eq!(spawned(&acts), vec!["bad"]);
    assert!(
        t.e.status_report(&[], t.now, 0)
            .unit_file_problems
            .is_empty()
    );
}

// ---- keys for units imported from systemd ---------------------------------

fn killed(t: &mut T, name: &str, signal: i32) -> Vec<Action> {
    let run = t.run_of(name);
    t.feed(Event::ProcessExited {
        run,
        status: ExitStatus::Signaled {
            signal,
            core: false,
        },
    })
}

#[test]
fn success_exit_status_and_restart_prevent_exit_status() {
    use crate::unit::ExitMatch;
    let mut s = longrun("svc");
    s.success_exit_status = vec![ExitMatch::Code(3), ExitMatch::Signal(libc::SIGTERM)];
    s.restart.policy = RestartPolicy::Always;
    s.restart_prevent_exit_status = vec![ExitMatch::Code(255)];
    let mut t = T::new(vec![s]);
    // Exit 3 is a success: restarted by `always`, but not counted as failed.
    t.exit("svc", 3);
    assert!(matches!(t.state("svc"), UnitState::Backoff { .. }));
    t.advance(Duration::from_secs(1));
    assert!(t.running("svc"));
    // 255 forbids a restart even under `always`; it is still a failure.
    t.exit("svc", 255);
    t.advance(Duration::from_secs(5));
    assert!(
        matches!(t.state("svc"), UnitState::Failed { .. }),
        "{:?}",
        t.state("svc")
    );
    let mut s = longrun("one");
    s.success_exit_status = vec![ExitMatch::Signal(libc::SIGTERM)];
    s.restart.policy = RestartPolicy::OnFailure;
    let mut t = T::new(vec![s]);
    killed(&mut t, "one", libc::SIGTERM);
    assert!(
        matches!(t.state("one"), UnitState::Exited { .. }),
        "{:?}",
        t.state("one")
    );
}

#[test]
fn on_abnormal_and_on_abort_restart_only_after_unclean_ends() {
    for (policy, code_restarts, abort_restarts, timeout_restarts) in [
        (RestartPolicy::OnAbnormal, false, true, true),
        (RestartPolicy::OnAbort, false, true, false),
        (RestartPolicy::OnWatchdog, false, false, false),
    ] {
        let mk = || {
            let mut s = longrun("svc");
            s.restart.policy = policy;
            s.ready.kind = ReadyKind::Notify;
            s.ready.timeout = Some(Duration::from_secs(5));
            s
        };
        let mut t = T::new(vec![mk()]);
        t.exit("svc", 1);
        assert_eq!(
            matches!(t.state("svc"), UnitState::Backoff { .. }),
            code_restarts,
            "{policy:?} exit 1"
        );
        let mut t = T::new(vec![mk()]);
        killed(&mut t, "svc", libc::SIGTERM);
        assert!(
            !matches!(t.state("svc"), UnitState::Backoff { .. }),
            "{policy:?} SIGTERM is clean"
        );
        let mut t = T::new(vec![mk()]);
        killed(&mut t, "svc", libc::SIGSEGV);
        assert_eq!(
            matches!(t.state("svc"), UnitState::Backoff { .. }),
            abort_restarts,
            "{policy:?} SIGSEGV"
        );
        // Never ready: the start timeout stops it, then it ends.
        let mut t = T::new(vec![mk()]);
        t.advance(Duration::from_secs(6));
        killed(&mut t, "svc", libc::SIGTERM);
        assert_eq!(
            matches!(t.state("svc"), UnitState::Backoff { .. }),
            timeout_restarts,
            "{policy:?} timeout"
        );
    }
}

#[test]
fn remain_after_exit_keeps_dependents_up() {
    let mut s = longrun("setup");
    s.remain_after_exit = true;
    let mut t = T::new(vec![s, requires(longrun("app"), &["setup"])]);
    assert!(t.running("app"));
    t.exit("setup", 0);
    t.advance(Duration::from_secs(1));
    assert!(matches!(t.state("setup"), UnitState::Done));
    assert!(t.running("app"), "app keeps running: {:?}", t.state("app"));
}

#[test]
fn infinite_stop_timeout_never_kills() {
    let mut s = longrun("svc");
    s.stop.timeout = Duration::MAX;
    let mut t = T::new(vec![s]);
    t.cmd(Request::Stop { unit: "svc".into() });
    let acts = t.advance(Duration::from_secs(365 * 24 * 3600));
    assert!(
        !acts
            .iter()
            .any(|a| matches!(a, Action::Signal { signal, .. } if *signal == libc::SIGKILL)),
        "{acts:?}"
    );
}

fn status_of(t: &T, name: &str) -> crate::protocol::UnitStatus {
    let id = t.e.unit_id(name).expect("unit");
    // Wall clock at `now`: a fixed epoch plus the simulated time elapsed.
    t.e.status_report(&[id], t.now, 1_800_000_000_000)
        .units
        .remove(0)
}

#[test]
fn a_crash_loop_shows_restarts_last_exit_and_since() {
    let mut t = T::new(vec![longrun("web")]);
    let first = status_of(&t, "web");
    assert_eq!(first.state, "running");
    assert_eq!(first.uptime_secs, Some(0));
    t.advance(Duration::from_secs(5));
    assert_eq!(status_of(&t, "web").uptime_secs, Some(5));
    for _ in 0..3 {
        t.exit("web", 3);
        t.advance(Duration::from_millis(150));
    }
    let s = status_of(&t, "web");
    assert_eq!(s.restarts, 3);
    assert_eq!(s.last_exit_code, Some(3));
    assert_eq!(s.last_exit.as_deref(), Some("exited with code 3"));
    assert!(s.last_exit_at.is_some());
    assert_eq!(s.last_error.as_deref(), Some("exited with code 3"));
    // Since: the last state change, 0 s ago on the wall clock given.
    assert_eq!(s.since.as_deref(), Some("2027-01-15T08:00:00Z"));
    t.advance(Duration::from_secs(60));
    let s = status_of(&t, "web");
    assert_eq!(s.since.as_deref(), Some("2027-01-15T07:59:00Z"));
    assert_eq!(s.uptime_secs, Some(60));
    // A signal is reported by name.
    let run = t.run_of("web");
    t.feed(Event::ProcessExited {
        run,
        status: ExitStatus::Signaled {
            signal: libc::SIGSEGV,
            core: true,
        },
    });
    let s = status_of(&t, "web");
    assert_eq!(s.last_exit_signal.as_deref(), Some("SIGSEGV"));
    assert_eq!(s.last_exit_code, None);
    assert_eq!(s.uptime_secs, None, "no process, no uptime");
}

#[test]
fn a_spawn_failure_is_the_cause_in_status_why_and_detail() {
    let mut t = T::new(vec![longrun("web")]);
    let run = t.run_of("web");
    let err = "exec /usr/bin/x: No such file or directory (os error 2)";
    t.feed(Event::SpawnFailed {
        run,
        error: err.into(),
        mount: None,
    });
    let s = status_of(&t, "web");
    assert_eq!(s.state, "backoff");
    assert_eq!(s.last_error.as_deref(), Some(err));
    assert!(s.detail.as_deref().unwrap_or("").contains(err), "{s:?}");
    assert!(t.why("web").contains(err), "{}", t.why("web"));
    // A policy that does not restart: failed, and the reason says it.
    let mut spec = longrun("once");
    spec.restart.policy = RestartPolicy::Never;
    let mut t = T::new(vec![spec]);
    let run = t.run_of("once");
    t.feed(Event::SpawnFailed {
        run,
        error: err.into(),
        mount: None,
    });
    assert_eq!(status_of(&t, "once").state, "failed");
    assert!(t.why("once").contains(err), "{}", t.why("once"));
}

#[test]
fn a_health_kill_and_a_ready_timeout_say_so() {
    let mut spec = longrun("db");
    spec.health = Some(HealthSpec {
        target: ProbeTarget::Tcp("127.0.0.1:1".into()),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        start_period: Duration::ZERO,
        failure_threshold: 3,
        success_threshold: 1,
        on_unhealthy: OnUnhealthy::Restart,
    });
    let mut t = T::new(vec![spec]);
    for _ in 0..3 {
        t.advance(Duration::from_secs(1));
        let run = t.run_of("db");
        t.feed(Event::ProbeAnswered {
            run,
            kind: crate::engine::ProbeKind::Liveness,
            ok: false,
            output: Some("connection refused".into()),
        });
    }
    let s = status_of(&t, "db");
    assert_eq!(s.state, "stopping");
    assert_eq!(
        s.last_error.as_deref(),
        Some("killed: health probe failed 3× (last output: connection refused)")
    );
    assert_eq!(s.health_failures, 3);

    let mut spec = longrun("slow");
    spec.ready.kind = ReadyKind::Notify;
    spec.ready.timeout = Some(Duration::from_secs(30));
    let mut t = T::new(vec![spec]);
    t.advance(Duration::from_secs(31));
    let s = status_of(&t, "slow");
    assert_eq!(
        s.last_error.as_deref(),
        Some("ready timeout: not ready within 30s; stopped")
    );
}

fn published(acts: &[Action]) -> Vec<crate::protocol::EventBody> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Publish(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn state_lock_mount_and_probe_changes_are_published() {
    use crate::protocol::EventBody;
    let mut s = longrun("db");
    s.mounts.push(MountReq {
        path: "/srv/pg".into(),
        fstype: None,
        source: None,
        options: vec![],
        on_loss: OnLoss::Stop,
        timeout: None,
        symlink_to: None,
    });
    s.health = Some(HealthSpec {
        target: ProbeTarget::Tcp("127.0.0.1:1".into()),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        start_period: Duration::ZERO,
        failure_threshold: 3,
        success_threshold: 1,
        on_unhealthy: OnUnhealthy::Report,
    });
    let mut t = T::new(vec![s]);
    // The mount appears: a mount event, then db starts.
    let ev = published(&t.feed(Event::MountTableChanged(table(&[("/srv/pg", false)]))));
    assert_eq!(
        ev[0],
        EventBody::Mount {
            path: "/srv/pg".into(),
            present: true,
            problem: None
        }
    );
    let states: Vec<(String, String)> = ev
        .iter()
        .filter_map(|e| match e {
            EventBody::State { from, to, .. } => Some((from.to_string(), to.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [("waiting", "starting"), ("starting", "running")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // A probe transition is published once, not per answer.
    let probe = |t: &mut T, ok: bool| {
        let run = t.run_of("db");
        published(&t.feed(Event::ProbeAnswered {
            run,
            kind: crate::engine::ProbeKind::Liveness,
            ok,
            output: (!ok).then(|| "refused".to_string()),
        }))
    };
    assert_eq!(probe(&mut t, true).len(), 1);
    assert!(probe(&mut t, true).is_empty());
    let ev = probe(&mut t, false);
    assert!(
        matches!(&ev[..], [EventBody::Probe { passing: false, output: Some(o), .. }] if o == "refused"),
        "{ev:?}"
    );
    assert!(probe(&mut t, false).is_empty());
    // A lock: the lock event comes before the stop it causes.
    let (_, acts) = t.cmd(Request::MaintenanceOn {
        unit: "db".into(),
        reason: "disk".into(),
        holder: Some("alice".into()),
    });
    let ev = published(&acts);
    assert_eq!(
        ev[0],
        EventBody::Lock {
            unit: "db".into(),
            holders: vec!["alice".into()]
        }
    );
    assert!(
        matches!(&ev[1], EventBody::State { to, detail: Some(d), .. } if to == "stopping" && d.contains("maintenance")),
        "{ev:?}"
    );
    // The mount is lost: published with the problem.
    let ev = published(&t.feed(Event::MountTableChanged(table(&[]))));
    assert!(
        matches!(
            &ev[..],
            [EventBody::Mount {
                present: false,
                problem: Some(_),
                ..
            }]
        ),
        "{ev:?}"
    );
}

#[test]
fn part_of_stops_restarts_and_holds_down_with_the_whole() {
    let mut inst = longrun("pg@main");
    inst.part_of = vec!["pg".into()];
    inst.reload_propagated_from = vec!["pg".into()];
    let mut t = T::new(vec![longrun("pg"), inst]);
    assert!(t.running("pg@main"));
    // Restart the whole: the part restarts too.
    let before = t.run_of("pg@main");
    let (_, acts) = t.cmd(Request::Restart { unit: "pg".into() });
    assert!(
        signalled(&t, &acts).contains(&"pg@main".to_string()),
        "{acts:?}"
    );
    t.exit("pg@main", 0);
    t.exit("pg", 0);
    t.advance(Duration::from_millis(10));
    assert!(t.running("pg@main") && t.run_of("pg@main") != before);
    // Reload propagates.
    let (req, acts) = t.cmd(Request::ReloadUnit { unit: "pg".into() });
    assert_eq!(signalled(&t, &acts).len(), 2, "{acts:?}");
    assert!(reply(&acts, req).is_some_and(|(ok, m)| ok && m.contains("pg@main")));
    // Stop the whole: the part stops and stays down until it comes back.
    t.cmd(Request::Stop { unit: "pg".into() });
    t.exit("pg@main", 0);
    t.exit("pg", 0);
    t.advance(Duration::from_secs(5));
    assert!(!t.running("pg@main"));
    assert!(t.why("pg@main").contains("part_of"), "{}", t.why("pg@main"));
    t.cmd(Request::Start { unit: "pg".into() });
    t.advance(Duration::from_millis(10));
    assert!(t.running("pg@main"), "{:?}", t.state("pg@main"));
}

#[test]
fn a_completed_unit_with_a_stop_command_runs_it_when_stopped() {
    let mut fw = UnitSpec::simple(
        "firewall",
        UnitKind::Oneshot,
        &["/usr/sbin/nft", "-f", "rules"],
    );
    fw.stop.exec = Some(vec![
        "/usr/sbin/nft".into(),
        "flush".into(),
        "ruleset".into(),
    ]);
    let mut t = T::new(vec![fw, requires(longrun("app"), &["firewall"])]);
    t.exit("firewall", 0);
    assert!(matches!(t.state("firewall"), UnitState::Done));
    assert!(t.running("app"));
    // Shutdown: the app stops first, then the firewall's stop command runs
    // (as a run of its own), and only its exit completes the shutdown.
    let acts = t.feed(Event::ShutdownRequested(crate::engine::ShutdownKind::Exit));
    assert!(
        !acts.iter().any(|a| matches!(a, Action::StopExec { .. })),
        "{acts:?}"
    );
    let acts = t.exit("app", 0);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::StopExec { spec, .. } if spec.name == "firewall")),
        "{acts:?}"
    );
    assert!(
        !acts
            .iter()
            .any(|a| matches!(a, Action::ShutdownComplete(_)))
    );
    let acts = t.exit("firewall", 0);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::ShutdownComplete(_))),
        "{acts:?}"
    );
}

// ---- incremental settle (issue 17) ---------------------------------------

/// 2,000 probed units in chains of ten: a probe result, a crash and its
/// restart, a stop and a status each make the engine decide about the
/// units around the one concerned — not about all 2,000.
#[test]
fn an_event_costs_what_it_affects_not_the_unit_count() {
    let n = 2000;
    let specs: Vec<UnitSpec> = (0..n)
        .map(|i| {
            let mut s = longrun(&format!("u{i:04}"));
            if i % 10 != 0 {
                s.requires = vec![format!("u{:04}", i - 1)];
            }
            s.restart.delay = Duration::ZERO;
            s.restart.max_delay = Duration::ZERO;
            s.health = Some(HealthSpec {
                target: ProbeTarget::Tcp("127.0.0.1:1".into()),
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                start_period: Duration::ZERO,
                failure_threshold: 3,
                success_threshold: 1,
                on_unhealthy: OnUnhealthy::Restart,
            });
            s
        })
        .collect();
    let mut t = T::with(specs, 100_000, table(&[]), true);
    let all_running =
        t.e.units()
            .all(|(_, u)| matches!(u.state, UnitState::Running { .. }));
    assert!(all_running, "boot brought every unit up");
    let mid = t.e.unit_id("u1005").expect("u1005");
    let run = t.e.unit(mid).state.run().expect("running");

    let before = t.e.asked;
    t.feed(Event::ProbeAnswered {
        run,
        kind: crate::engine::ProbeKind::Liveness,
        ok: true,
        output: None,
    });
    let probe = t.e.asked - before;
    // A passing probe of a passing unit changes nothing decisions read.
    assert_eq!(probe, 0, "a probe result asked {probe} decisions");

    let before = t.e.asked;
    t.cmd(Request::Status {
        unit: Some("u1005".into()),
    });
    assert_eq!(t.e.asked - before, 0, "status of one unit decides nothing");

    // A crash: u1005 restarts at once; what requires it (u1006..u1009)
    // stops, dependents first.
    let before = t.e.asked;
    t.feed(Event::ProcessExited {
        run,
        status: ExitStatus::Exited(1),
    });
    let crash = t.e.asked - before;
    assert!(
        crash <= 100,
        "a crash in a chain of ten asked {crash} decisions"
    );
    assert!(matches!(t.e.unit(mid).state, UnitState::Running { .. }));
    // Dependents first: the end of the chain stops, the rest wait for it.
    assert!(matches!(t.state("u1009"), UnitState::Stopping { .. }));
    assert!(matches!(t.state("u1006"), UnitState::Running { .. }));
}

/// systemd's OnFailure=: a unit entering `failed` starts its `on_failure`
/// units once (not on a clean exit, not again while it stays failed).
#[test]
fn on_failure_units_start_when_a_unit_fails() {
    let mut svc = longrun("svc");
    svc.restart.policy = RestartPolicy::Never;
    svc.on_failure = vec!["alert".into()];
    let mut alert = UnitSpec::simple("alert", UnitKind::Oneshot, &["/bin/alert"]);
    alert.restart.policy = RestartPolicy::Never;
    let mut t = T::new(vec![svc, alert]);
    t.exit("alert", 0);
    assert!(matches!(t.state("alert"), UnitState::Done));
    let acts = t.exit("svc", 3);
    assert!(matches!(t.state("svc"), UnitState::Failed { .. }));
    assert_eq!(spawned(&acts), ["alert"], "{acts:?}");
    t.exit("alert", 0);
    let acts = t.advance(Duration::from_secs(5));
    assert!(spawned(&acts).is_empty(), "{acts:?}");
}

/// An operator's stop holds an `on_failure` unit down (an automatic path
/// never undoes a deliberate stop).
#[test]
fn on_failure_does_not_start_a_unit_an_operator_stopped() {
    let mut svc = longrun("svc");
    svc.restart.policy = RestartPolicy::Never;
    svc.on_failure = vec!["alert".into()];
    let mut alert = UnitSpec::simple("alert", UnitKind::Oneshot, &["/bin/alert"]);
    alert.restart.policy = RestartPolicy::Never;
    let mut t = T::new(vec![svc, alert]);
    t.exit("alert", 0);
    t.cmd(Request::Stop {
        unit: "alert".into(),
    });
    let acts = t.exit("svc", 3);
    assert!(matches!(t.state("svc"), UnitState::Failed { .. }));
    assert!(spawned(&acts).is_empty(), "{acts:?}");
}

/// `supctl disable`: a disabled unit is not started at boot unless an
/// enabled unit requires it; one found running at start-up (after a crash
/// or `reexec`) is adopted and kept, never stopped for being disabled.
#[test]
fn disabled_units_stay_down_at_boot_but_a_running_one_is_kept() {
    let specs = vec![
        longrun("off"),
        longrun("dep"),
        requires(longrun("app"), &["dep"]),
        longrun("kept"),
    ];
    let mut t = T::new(vec![]);
    t.contained = true;
    let set = crate::graph::build(specs).expect("valid set");
    t.e = Engine::new(set, EngineConfig::default(), table(&[]));
    t.e.set_disabled(
        ["off", "dep", "kept"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    );
    t.oracle = t.e.full_twin();
    let evs = vec![
        Event::Adopted {
            unit: "kept".into(),
            pid: Some(500),
            cgroup: Some("/supd/kept.unit".into()),
            wall_ms: 1,
        },
        Event::Tick,
    ];
    let full = t.oracle.handle_many(t.now, evs.clone());
    let acts = t.e.handle_many(t.now, evs);
    check_oracle(&t.e, &t.oracle, &acts, &full);
    t.log.extend(acts);
    let acts = t.feed(Event::LocksLoaded(LocksLoad::Loaded(LockMap::new())));
    let mut all = t.log.clone();
    all.extend(acts);
    let started = spawned(&all);
    assert!(started.contains(&"dep".to_string()), "{started:?}");
    assert!(!started.contains(&"off".to_string()), "{started:?}");
    assert!(
        !started.contains(&"kept".to_string()),
        "never a second copy"
    );
    assert!(signalled(&t, &all).is_empty(), "nothing stopped: {all:?}");
    assert!(matches!(t.state("off"), UnitState::Inactive));
    assert!(t.why("off").contains("disabled"), "{}", t.why("off"));
}

/// Issue 15, pressure-aware shedding: sustained pressure sheds optional
/// units, then sheddable normal ones (never others); an operator's level
/// wins while set; quiet restores step by step with jittered starts; every
/// change is published and audited.
#[test]
fn pressure_sheds_in_steps_manual_wins_and_quiet_restores_with_jitter() {
    use crate::engine::shed::Resource;
    use crate::protocol::EventBody;
    use crate::unit::Priority;
    let mut opt = longrun("opt");
    opt.priority = Priority::Optional;
    let mut norm = longrun("norm");
    norm.sheddable = true;
    let plain = longrun("plain");
    let mut t = T::new(vec![]);
    let set = crate::graph::build(vec![opt, norm, plain]).expect("valid set");
    t.replace(Engine::new(set, shed_config(), table(&[])));
    t.feed(Event::LocksLoaded(LocksLoad::Loaded(LockMap::new())));
    assert!(t.running("opt") && t.running("norm") && t.running("plain"));
    assert_eq!(t.e.next_deadline(), None, "no pressure: no wake-up");
    let high = |t: &mut T, secs: u64| {
        t.now += Duration::from_secs(secs);
        t.feed(Event::Pressure {
            resource: Resource::Cpu,
            high: true,
            wall_ms: 1_000,
        })
    };
    let stopped = |acts: &[Action], t: &T, name: &str| {
        let run = t.run_of(name);
        acts.iter()
            .any(|a| matches!(a, Action::Signal { run: r, .. } | Action::SignalMain { run: r, .. } if *r == run))
    };
    high(&mut t, 0);
    high(&mut t, 2);
    let acts = high(&mut t, 2);
    assert!(stopped(&acts, &t, "opt"), "{acts:?}");
    assert!(!stopped(&acts, &t, "norm"));
    assert!(published(&acts).iter().any(|b| matches!(b,
        EventBody::Shed { by, shed: true, units, resource: Some(r), .. }
            if by == "pressure" && units == &["opt".to_string()] && r == "cpu")));
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Audit(e) if e.action == "shed (pressure)"))
    );
    t.exit("opt", 143);
    assert!(
        t.why("opt").contains("shed under pressure"),
        "{}",
        t.why("opt")
    );
    high(&mut t, 2);
    let acts = high(&mut t, 2);
    assert!(stopped(&acts, &t, "norm"), "{acts:?}");
    assert!(!stopped(&acts, &t, "plain"));
    t.exit("norm", 143);
    assert!(t.running("plain"));
    // The operator's level wins: only what it names is shed.
    let (_, acts) = t.cmd(Request::Shed {
        level: Priority::Optional,
    });
    assert!(t.running("norm"), "{acts:?}");
    assert!(!t.running("opt"));
    // More pressure changes nothing while the operator's level is set.
    high(&mut t, 2);
    assert!(t.running("norm"));
    // Unshed: the automatic step applies again.
    let (_, acts) = t.cmd(Request::Unshed);
    assert!(stopped(&acts, &t, "norm"), "{acts:?}");
    t.exit("norm", 143);
    // Quiet: one step back after restore_after; the released unit starts
    // within the jitter, not at once.
    let acts = t.advance(Duration::from_secs(10));
    assert!(published(&acts).iter().any(|b| matches!(b,
        EventBody::Shed { by, shed: false, units, .. } if by == "pressure" && units == &["norm".to_string()])));
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Audit(e) if e.action == "unshed (pressure)"))
    );
    let held = !t.running("norm");
    if held {
        assert!(t.why("norm").contains("pressure fell"), "{}", t.why("norm"));
        t.advance(Duration::from_secs(3));
    }
    assert!(t.running("norm"));
    assert!(!t.running("opt"));
    t.advance(Duration::from_secs(10));
    t.advance(Duration::from_secs(3));
    assert!(t.running("opt"));
    assert_eq!(t.e.auto_shed().step(), 0);
    assert_eq!(t.e.next_deadline(), None, "restored: no wake-up left");
}

/// A re-exec while a run is being stopped (the stop signal already sent, the
/// process ignoring it) must finish that stop: the new image used to take
/// the run over as starting, with no kill escalation and no way to become
/// ready, so it and everything ordered after it waited forever (sim seeds
/// 20188, 22571, 22671).
#[test]
fn reexec_while_stopping_finishes_the_stop() {
    let mut t = T::new(vec![longrun("svc")]);
    t.feed(Event::Tick);
    assert!(matches!(t.state("svc"), UnitState::Running { .. }));
    let pid = t.state("svc").pid().expect("pid");
    // A restart (or a shed step): the unit stays wanted up.
    t.cmd(Request::Restart { unit: "svc".into() });
    assert!(matches!(t.state("svc"), UnitState::Stopping { .. }));
    let set = crate::graph::build(vec![longrun("svc")]).expect("valid set");
    reexec_adopting(
        &mut t,
        Engine::new(set, EngineConfig::default(), table(&[])),
        "svc",
        pid,
    );
    assert!(
        matches!(t.state("svc"), UnitState::Stopping { .. }),
        "adopted as {:?}",
        t.state("svc")
    );
    // The process ignores SIGTERM: the new image escalates.
    let acts = t.advance(Duration::from_secs(60));
    assert!(
        acts.iter().any(|a| matches!(a, Action::KillGroup { .. })
            || matches!(a, Action::Signal { signal, .. } | Action::SignalMain { signal, .. } if *signal == libc::SIGKILL)),
        "no kill escalation after the stop timeout: {acts:?}"
    );
    // Once it is gone, the restart goes on: the unit is wanted up.
    t.feed(Event::ProcessExited {
        run: t.run_of("svc"),
        status: ExitStatus::Signaled {
            signal: libc::SIGKILL,
            core: false,
        },
    });
    t.advance(Duration::from_secs(1));
    assert!(t.running("svc"), "after the stop: {:?}", t.state("svc"));
}

/// `supctl reexec` under pressure: what automatic shedding stopped stays
/// stopped in the new image (it used to start again at once, the step
/// being lost with the old image), and comes back once pressure stays
/// quiet, as without the re-exec.
#[test]
fn reexec_keeps_what_pressure_shed_until_quiet() {
    use crate::engine::shed::Resource;
    use crate::unit::Priority;
    let units = || {
        let mut opt = longrun("opt");
        opt.priority = Priority::Optional;
        vec![opt, longrun("plain")]
    };
    let cfg = shed_config;
    let mut t = T::new(vec![]);
    let set = crate::graph::build(units()).expect("valid set");
    t.replace(Engine::new(set, cfg(), table(&[])));
    t.feed(Event::LocksLoaded(LocksLoad::Loaded(LockMap::new())));
    for secs in [0, 2, 2] {
        t.now += Duration::from_secs(secs);
        t.feed(Event::Pressure {
            resource: Resource::Cpu,
            high: true,
            wall_ms: 1_000,
        });
    }
    t.exit("opt", 143);
    assert!(!t.running("opt") && t.running("plain"));
    let pid = t.state("plain").pid().expect("pid");
    let set = crate::graph::build(units()).expect("valid set");
    reexec_adopting(&mut t, Engine::new(set, cfg(), table(&[])), "plain", pid);
    t.advance(Duration::from_secs(1));
    assert!(!t.running("opt"), "shed unit started by the new image");
    assert!(
        t.why("opt").contains("shed under pressure"),
        "{}",
        t.why("opt")
    );
    assert_eq!(t.e.auto_shed().step(), 1);
    // Quiet: restored after restore_after, within the jitter.
    t.advance(Duration::from_secs(10));
    t.advance(Duration::from_secs(3));
    assert!(t.running("opt"));
    assert_eq!(t.e.auto_shed().step(), 0);
}

/// Automatic shedding after 4 s of pressure, restored after 10 s of quiet
/// (2 s window, up to 3 s jitter), seed 7: the shed scenarios' settings.
fn shed_config() -> EngineConfig {
    use crate::engine::shed::ShedPolicy;
    EngineConfig {
        seed: 7,
        shed: Some(ShedPolicy {
            window: Duration::from_secs(2),
            shed_after: Duration::from_secs(4),
            restore_after: Duration::from_secs(10),
            jitter: Duration::from_secs(3),
        }),
        ..Default::default()
    }
}
