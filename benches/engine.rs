//! Engine throughput: events per second at 100, 1,000 and 10,000 units,
//! settling in full (every unit on every pass: the engine before issue 17)
//! and incrementally (only the units an event can affect: the default), in
//! one run (numbers, not asserts). `cargo bench --bench engine` (add
//! `-- --quick` for 3 rounds instead of 5; `-- --units 100,1000` to choose
//! the sizes; `-- --incremental-only` to skip the slow full settle;
//! `-- --mix 400000` for a probe mix that long, e.g. under a profiler;
//! `-- --rounds 1` for one round, e.g. under cachegrind; `-- --crash-every
//! 0` for a mix of probe results alone, default one exit in 20).
//!
//! The world is played in-process: every `Spawn` action is answered with
//! `Spawned`, processes exit and are restarted (delay 0), probes answer,
//! timers are ticked and operators ask for status. The engine is pure, so
//! this measures decisions only (no syscalls, no clock reads inside).
//! Every unit has a TCP health probe; one in ten starts a `requires` chain
//! so the dependency walks have real work.
//!
//! Phases, each timed on its own (events/s = events fed / CPU time of the
//! bench's thread: on a shared machine wall time measures the neighbours
//! too). Each
//! phase feeds a fixed number of events whatever the unit count, so the
//! figures at different sizes compare per-event cost:
//! - `boot`: `LocksLoaded`, then the spawn acks as one batch;
//! - `probe mix`: 4,000 events, each fed alone: 19 in 20 a probe result
//!   (one in 20 of those failing, below the threshold), 1 in 20 a process
//!   exit whose restart's spawn is acknowledged — issue 17's load (1,000
//!   results/s from thousands of probed units) plus restarts;
//! - `probe mix, warm`: every unit answers one probe (untimed), then the
//!   same mix again: at 10,000 units the first mix's results are nearly
//!   all a unit's first since its start (which publishes a probe change),
//!   at 100 units few are; this phase compares the same kind of event;
//! - `crash, 1 by 1`: 500 units' exits, each fed alone, and each
//!   resulting spawn acknowledged alone;
//! - `crash, batched`: every unit's exit in one `handle_many`, the spawn
//!   acks in one (what the driver does for one reaper drain);
//! - `tick`: 1,000 `Tick`s with nothing due;
//! - `status NAME`: 1,000 `status` requests for one unit.

use std::time::{Duration, Instant};

use supd::engine::locks::LockMap;
use supd::engine::{
    Action, Engine, EngineConfig, Event, ExitStatus, LocksLoad, PeerInfo, ProbeKind, ReqId,
    SettleMode, UnitId,
};
use supd::protocol::Request;
use supd::unit::{HealthSpec, OnUnhealthy, ProbeTarget, UnitKind, UnitSpec};

fn build(n: usize, settle: SettleMode) -> Engine {
    let specs: Vec<UnitSpec> = (0..n)
        .map(|i| {
            let mut s = UnitSpec::simple(&format!("u{i:05}"), UnitKind::Longrun, &["/bin/x"]);
            // A chain every 10 units gives the dependency walks real work.
            if i % 10 != 0 {
                s.requires = vec![format!("u{:05}", i - 1)];
            }
            s.restart.delay = Duration::ZERO;
            s.restart.max_delay = Duration::ZERO;
            s.restart.burst = 1_000_000;
            s.health = Some(HealthSpec {
                target: ProbeTarget::Tcp(format!("127.0.0.1:{}", 10_000 + i % 50_000)),
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
                start_period: Duration::ZERO,
                failure_threshold: 3,
                success_threshold: 1,
                on_unhealthy: OnUnhealthy::Restart,
            });
            s
        })
        .collect();
    let set = supd::graph::build(specs).expect("valid set");
    Engine::new(
        set,
        EngineConfig {
            max_parallel_starts: 100_000,
            seed: 1,
            settle,
            ..Default::default()
        },
        supd::mounts::MountTable::default(),
    )
}

/// CPU time this thread has used (what each phase is timed with).
#[derive(Clone, Copy)]
struct Cpu(Duration);
impl Cpu {
    fn now() -> Cpu {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Cpu(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
    fn elapsed(self) -> Duration {
        Cpu::now().0.saturating_sub(self.0)
    }
}

fn spawns(actions: impl IntoIterator<Item = Action>, pid: &mut i32) -> Vec<Event> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Spawn { run, .. } => {
                *pid += 1;
                Some(Event::Spawned {
                    run,
                    pid: *pid,
                    cgroup: None,
                })
            }
            _ => None,
        })
        .collect()
}

/// Feed `ev` alone, then every spawn it causes acknowledged alone;
/// returns how many events were fed. The actions come in `acts`, kept
/// (emptied) from event to event, as the driver keeps its own.
fn feed(e: &mut Engine, now: Instant, ev: Event, pid: &mut i32, acts: &mut Vec<Action>) -> usize {
    let mut queue = vec![ev];
    let mut n = 0;
    while let Some(ev) = queue.pop() {
        n += 1;
        e.handle_into(now, ev, acts);
        queue.extend(spawns(acts.drain(..), pid));
    }
    n
}

/// Feed `evs` as one batch, then each resulting batch of spawn acks as one.
fn feed_batched(e: &mut Engine, now: Instant, evs: Vec<Event>, pid: &mut i32) -> usize {
    let mut n = 0;
    let mut batch = evs;
    let mut acts = Vec::new();
    while !batch.is_empty() {
        n += batch.len();
        e.handle_many_into(now, batch, &mut acts);
        batch = spawns(acts.drain(..), pid);
    }
    n
}

fn exit_of(e: &Engine, id: UnitId) -> Option<Event> {
    let run = e.unit(id).state.run()?;
    Some(Event::ProcessExited {
        run,
        status: ExitStatus::Exited(1),
    })
}

fn exits(e: &Engine) -> Vec<Event> {
    e.units()
        .filter_map(|(_, u)| u.state.run())
        .map(|run| Event::ProcessExited {
            run,
            status: ExitStatus::Exited(1),
        })
        .collect()
}

/// A small deterministic generator: the same units are picked in both
/// modes.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

/// The probe mix: `mix` iterations, each picking a unit uniformly at
/// random; 19 in 20 feed it a probe result (one in 20 of those failing,
/// below the threshold), 1 in 20 (`crash_every`; 0: none) its process's
/// exit (and the restart's spawn ack). Returns (events fed, CPU time).
fn probe_mix(
    e: &mut Engine,
    now: Instant,
    ids: &[UnitId],
    mix: usize,
    rng: &mut Lcg,
    pid: &mut i32,
    crash_every: usize,
) -> (usize, Duration) {
    let n_units = ids.len();
    let mut acts = Vec::new();
    let t = Cpu::now();
    let mut ev = 0;
    for k in 0..mix {
        let i = rng.below(n_units);
        if crash_every > 0 && k % crash_every == crash_every - 1 {
            if let Some(x) = exit_of(e, ids[i]) {
                ev += feed(e, now, x, pid, &mut acts);
            }
            continue;
        }
        let Some(run) = e.unit(ids[i]).state.run() else {
            continue;
        };
        ev += feed(
            e,
            now,
            Event::ProbeAnswered {
                run,
                kind: ProbeKind::Liveness,
                ok: k % 20 != 7,
                output: None,
            },
            pid,
            &mut acts,
        );
    }
    (ev, t.elapsed())
}

fn status(req: u64, unit: Option<String>) -> Event {
    Event::Command {
        req: ReqId(req),
        peer: PeerInfo {
            uid: 0,
            pid: None,
            name: "bench".into(),
        },
        wall_ms: 0,
        request: Request::Status { unit },
    }
}

const PHASES: [&str; 7] = [
    "boot",
    "probe mix",
    "probe mix, warm",
    "crash, 1 by 1",
    "crash, batched",
    "tick",
    "status NAME",
];

/// One round: (events, time) per phase.
fn round(
    n_units: usize,
    settle: SettleMode,
    mix: usize,
    crash_every: usize,
) -> Vec<(usize, Duration)> {
    let mut e = build(n_units, settle);
    let now = Instant::now();
    let mut pid = 1;
    let mut out = Vec::new();
    let mut rng = Lcg(42);
    // Names resolved once, outside the timed phases: the driver names a
    // run by its id, never a unit by its name, on these events.
    let ids: Vec<UnitId> = (0..n_units)
        .map(|i| e.unit_id(&format!("u{i:05}")).expect("unit defined"))
        .collect();

    let t = Cpu::now();
    let acts = e.handle(now, Event::LocksLoaded(LocksLoad::Loaded(LockMap::new())));
    let acks = spawns(acts, &mut pid);
    let ev = 1 + feed_batched(&mut e, now, acks, &mut pid);
    out.push((ev, t.elapsed()));
    assert_eq!(pid as usize, n_units + 1, "every unit started");

    out.push(probe_mix(
        &mut e,
        now,
        &ids,
        mix,
        &mut rng,
        &mut pid,
        crash_every,
    ));

    // Every unit answers its probe once, untimed: the warm mix then feeds
    // results to units that have answered before (issue 17's steady state:
    // units probed for hours), at every size. In the first mix at 10,000
    // units nearly every result is a unit's first since its start, which
    // publishes a probe change (unknown -> passing); at 100 units few are.
    let mut acts = Vec::new();
    for &id in &ids {
        if let Some(run) = e.unit(id).state.run() {
            feed(
                &mut e,
                now,
                Event::ProbeAnswered {
                    run,
                    kind: ProbeKind::Liveness,
                    ok: true,
                    output: None,
                },
                &mut pid,
                &mut acts,
            );
        }
    }
    out.push(probe_mix(
        &mut e,
        now,
        &ids,
        mix,
        &mut rng,
        &mut pid,
        crash_every,
    ));

    let t = Cpu::now();
    let mut ev = 0;
    for _ in 0..500 {
        let i = rng.below(n_units);
        if let Some(x) = exit_of(&e, ids[i]) {
            ev += feed(&mut e, now, x, &mut pid, &mut acts);
        }
    }
    out.push((ev, t.elapsed()));

    let evs = exits(&e);
    let t = Cpu::now();
    let ev = feed_batched(&mut e, now, evs, &mut pid);
    out.push((ev, t.elapsed()));

    let ticks = 1000;
    let t = Cpu::now();
    for _ in 0..ticks {
        e.handle(now, Event::Tick);
    }
    out.push((ticks, t.elapsed()));

    let reqs = 1000;
    let name = format!("u{:05}", n_units / 2);
    let t = Cpu::now();
    for i in 0..reqs {
        e.handle(now, status(i, Some(name.clone())));
    }
    out.push((reqs as usize, t.elapsed()));
    out
}

fn median(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 3 } else { 5 });
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--units")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000, 10_000]);
    let only_incremental = args.iter().any(|a| a == "--incremental-only");
    // A longer probe mix (e.g. for a profiler to see mostly that phase).
    let mix: usize = args
        .iter()
        .position(|a| a == "--mix")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    // One exit in this many mix iterations (0: probe results only).
    let crash_every: usize = args
        .iter()
        .position(|a| a == "--crash-every")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // phase -> mode -> size -> median events/s
    let mut table: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); 2]; PHASES.len()];
    for &n in &sizes {
        for (m, mode) in [SettleMode::Full, SettleMode::Incremental]
            .into_iter()
            .enumerate()
        {
            if only_incremental && mode == SettleMode::Full {
                continue;
            }
            let mut per: Vec<Vec<f64>> = vec![Vec::new(); PHASES.len()];
            for _ in 0..rounds {
                for (i, (ev, d)) in round(n, mode, mix, crash_every).iter().enumerate() {
                    per[i].push(*ev as f64 / d.as_secs_f64());
                }
            }
            println!(
                "engine, {n} units, settle {mode:?}, {rounds} rounds (events/s, median (min–max)):"
            );
            for (i, xs) in per.into_iter().enumerate() {
                let (med, lo, hi) = median(xs);
                println!("  {:<16}{med:>12.0} ({lo:.0}–{hi:.0})", PHASES[i]);
                table[i][m].push(med);
            }
        }
    }
    println!();
    print!("| phase | settle |");
    for n in &sizes {
        print!(" {n} units |");
    }
    println!(" largest / smallest |");
    print!("|---|---|");
    for _ in &sizes {
        print!("---:|");
    }
    println!("---:|");
    for (i, name) in PHASES.iter().enumerate() {
        for (m, mode) in ["full (before)", "incremental"].iter().enumerate() {
            let xs = &table[i][m];
            print!("| {name} | {mode} |");
            for x in xs {
                print!(" {x:.0} |");
            }
            let ratio = xs.first().zip(xs.last()).map_or(0.0, |(a, b)| b / a);
            println!(" {ratio:.2}× |");
        }
    }
}
