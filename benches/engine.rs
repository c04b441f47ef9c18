//! Engine throughput: events per second with 100 and 1000 units (numbers,
//! not asserts). `cargo bench --bench engine` (add `-- --quick` for 3
//! rounds instead of 7).
//!
//! The world is played in-process: every `Spawn` action is answered with
//! `Spawned`, every unit's process exits once and is restarted (delay 0),
//! timers are ticked and operators ask for status. The engine is pure, so
//! this measures decisions only (no syscalls, no clock reads inside).
//!
//! Phases, each timed on its own (events/s = events fed / wall time):
//! - `boot`: `LocksLoaded`, then each spawn acknowledged one event at a time;
//! - `crash, 1 by 1`: each unit's `ProcessExited` fed alone, and the
//!   resulting spawn acknowledged alone (what a driver without batching does);
//! - `crash, batched`: all exits in one `handle_many`, all spawn acks in
//!   one (what `src/driver.rs` does for one reaper drain / spawn batch);
//! - `tick`: `Tick` events with nothing due;
//! - `status`: `status` requests for every unit (the answer lists all units).

use std::time::{Duration, Instant};

use supd::engine::locks::LockMap;
use supd::engine::{Action, Engine, EngineConfig, Event, ExitStatus, LocksLoad, PeerInfo, ReqId};
use supd::protocol::Request;
use supd::unit::{UnitKind, UnitSpec};

fn build(n: usize) -> Engine {
    let specs: Vec<UnitSpec> = (0..n)
        .map(|i| {
            let mut s = UnitSpec::simple(&format!("u{i:04}"), UnitKind::Longrun, &["/bin/x"]);
            // A chain every 10 units gives the dependency walks real work.
            if i % 10 != 0 {
                s.requires = vec![format!("u{:04}", i - 1)];
            }
            s.restart.delay = Duration::ZERO;
            s.restart.max_delay = Duration::ZERO;
            s.restart.burst = 1_000_000;
            s
        })
        .collect();
    let set = supd::graph::build(specs).expect("valid set");
    Engine::new(
        set,
        EngineConfig {
            max_parallel_starts: 100_000,
            seed: 1,
            ..Default::default()
        },
        supd::mounts::MountTable::default(),
    )
}

fn spawns(actions: Vec<Action>, pid: &mut i32) -> Vec<Event> {
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
/// returns how many events were fed.
fn feed(e: &mut Engine, now: Instant, ev: Event, pid: &mut i32) -> usize {
    let mut queue = vec![ev];
    let mut n = 0;
    while let Some(ev) = queue.pop() {
        n += 1;
        let acts = e.handle(now, ev);
        queue.extend(spawns(acts, pid));
    }
    n
}

/// Feed `evs` as one batch, then each resulting batch of spawn acks as one.
fn feed_batched(e: &mut Engine, now: Instant, evs: Vec<Event>, pid: &mut i32) -> usize {
    let mut n = 0;
    let mut batch = evs;
    while !batch.is_empty() {
        n += batch.len();
        let acts = e.handle_many(now, batch);
        batch = spawns(acts, pid);
    }
    n
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

const PHASES: [&str; 5] = ["boot", "crash, 1 by 1", "crash, batched", "tick", "status"];

/// One round: (events, time) per phase.
fn round(n_units: usize) -> Vec<(usize, Duration)> {
    let mut e = build(n_units);
    let now = Instant::now();
    let mut pid = 1;
    let mut out = Vec::new();

    let t = Instant::now();
    let ev = feed(
        &mut e,
        now,
        Event::LocksLoaded(LocksLoad::Loaded(LockMap::new())),
        &mut pid,
    );
    out.push((ev, t.elapsed()));
    assert_eq!(pid as usize, n_units + 1, "every unit started");

    let evs = exits(&e);
    let t = Instant::now();
    let mut ev = 0;
    for x in evs {
        ev += feed(&mut e, now, x, &mut pid);
    }
    out.push((ev, t.elapsed()));

    let evs = exits(&e);
    let t = Instant::now();
    let ev = feed_batched(&mut e, now, evs, &mut pid);
    out.push((ev, t.elapsed()));
    assert_eq!(pid as usize, 3 * n_units + 1, "every unit restarted twice");

    let ticks = 1000;
    let t = Instant::now();
    for _ in 0..ticks {
        e.handle(now, Event::Tick);
    }
    out.push((ticks, t.elapsed()));

    let reqs = 100;
    let t = Instant::now();
    for i in 0..reqs {
        e.handle(
            now,
            Event::Command {
                req: ReqId(i),
                peer: PeerInfo {
                    uid: 0,
                    pid: None,
                    name: "bench".into(),
                },
                wall_ms: 0,
                request: Request::Status { unit: None },
            },
        );
    }
    out.push((reqs as usize, t.elapsed()));
    out
}

fn fmt(mut xs: Vec<f64>) -> String {
    xs.sort_by(|a, b| a.total_cmp(b));
    format!(
        "{:>10.0} events/s median ({:.0}–{:.0})",
        xs[xs.len() / 2],
        xs[0],
        xs[xs.len() - 1]
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 7 };
    for n in [100, 1000] {
        let mut per: Vec<Vec<f64>> = vec![Vec::new(); PHASES.len()];
        let mut total = Vec::new();
        for _ in 0..rounds {
            let r = round(n);
            let (mut evs, mut dur) = (0, Duration::ZERO);
            for (i, (ev, d)) in r.iter().enumerate() {
                per[i].push(*ev as f64 / d.as_secs_f64());
                evs += ev;
                dur += *d;
            }
            total.push(evs as f64 / dur.as_secs_f64());
        }
        println!("engine, {n} units, {rounds} rounds:");
        for (name, xs) in PHASES.iter().zip(per) {
            println!("  {name:<16}{}", fmt(xs));
        }
        println!("  {:<16}{}", "all phases", fmt(total));
    }
}
