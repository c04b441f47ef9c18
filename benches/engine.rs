//! Engine throughput: events per second with 1000 units (numbers, not
//! asserts). `cargo bench --bench engine`.
//!
//! The world is played in-process: every Spawn is answered with Spawned,
//! then every unit crashes and restarts, and operators ask for status. The
//! engine is pure, so this measures decisions only (no syscalls).

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
        },
        supd::mounts::MountTable::default(),
    )
}

/// Feed `ev`, answering spawns at once; returns how many events were fed.
fn feed(e: &mut Engine, now: Instant, ev: Event, pid: &mut i32) -> usize {
    let mut queue = vec![ev];
    let mut n = 0;
    while let Some(ev) = queue.pop() {
        n += 1;
        for a in e.handle(now, ev) {
            if let Action::Spawn { run, .. } = a {
                *pid += 1;
                queue.push(Event::Spawned { run, pid: *pid });
            }
        }
    }
    n
}

fn round(n_units: usize) -> (usize, Duration) {
    let mut e = build(n_units);
    let now = Instant::now();
    let mut pid = 1;
    let t0 = Instant::now();
    let mut events = feed(
        &mut e,
        now,
        Event::LocksLoaded(LocksLoad::Loaded(LockMap::new())),
        &mut pid,
    );
    // Every unit's process exits once: a restart storm of n_units.
    let runs: Vec<_> = e.units().filter_map(|(_, u)| u.state.run()).collect();
    for run in runs {
        events += feed(
            &mut e,
            now,
            Event::ProcessExited {
                run,
                status: ExitStatus::Exited(1),
            },
            &mut pid,
        );
    }
    events += feed(&mut e, now, Event::Tick, &mut pid);
    for i in 0..100 {
        events += feed(
            &mut e,
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
            &mut pid,
        );
    }
    (events, t0.elapsed())
}

fn main() {
    for n in [100, 1000] {
        let mut rates = Vec::new();
        for _ in 0..7 {
            let (events, took) = round(n);
            rates.push(events as f64 / took.as_secs_f64());
        }
        rates.sort_by(|a, b| a.total_cmp(b));
        println!(
            "engine, {n} units: {:.0} events/s median (min {:.0}, max {:.0}) over {} rounds",
            rates[rates.len() / 2],
            rates[0],
            rates[rates.len() - 1],
            rates.len()
        );
    }
}
