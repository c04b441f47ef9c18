//! Unit files: arbitrary text, files built from the real keys, mutated
//! real units, whole directories. Valid means: passes `check_spec` and runs
//! in the engine without a panic.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt::Debug;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

use crate::harness::*;
use supd::engine::locks::LockMap;
use supd::engine::{
    Action, Engine, EngineConfig, Event, ExitStatus, LocksLoad, NotifyMsg, PeerInfo, ReqId,
};
use supd::mounts::MountTable;
use supd::protocol::Request;
use supd::unit::{self, UnitSet, UnitSpec};

/// The largest duration a valid unit may carry (issue 13 item 3: anything
/// larger is refused at load time with file:line).
const MAX_DURATION: Duration = unit::MAX_DURATION;

fn unit_corpus() -> Vec<PathBuf> {
    let mut v = files(&repo().join("units"), ".toml");
    v.extend(files(&repo().join("packaging/vm/units"), ".toml"));
    v.extend(files(&repo().join("tests/fixtures"), ".toml"));
    v.extend(files(&repo().join("tests/corpus/units"), ".toml"));
    v
}

const TOML_WORDS: &[&str] = &[
    "description",
    "type",
    "exec",
    "env",
    "user",
    "group",
    "working_directory",
    "runtime_directory",
    "umask",
    "limits",
    "reload_signal",
    "essential",
    "priority",
    "output",
    "requires",
    "wants",
    "after",
    "[[mount]]",
    "path",
    "fstype",
    "options",
    "on_loss",
    "[ready]",
    "kind",
    "fd",
    "watchdog",
    "[health]",
    "[readiness]",
    "tcp",
    "http",
    "unix",
    "interval",
    "timeout",
    "start_period",
    "failure_threshold",
    "success_threshold",
    "on_unhealthy",
    "[restart]",
    "policy",
    "delay",
    "max_delay",
    "burst",
    "reset_after",
    "[stop]",
    "signal",
    " = ",
    "\"",
    "'''",
    "\"\"\"",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\n",
    "#",
    "\\u0000",
    "\\",
    "=",
    "true",
    "1e999",
    "-9223372036854775808",
    "18446744073709551616",
    "\"300000000000y\"",
    "\"4294967295s\"",
    "\"0s\"",
    "4000000000",
    "\"/..\"",
    "\"SIGKILL\"",
    "[[mount]]\npath = \"/srv\"\n",
];

/// Durations as users write them.
const GOOD_DURATIONS: &[&str] = &[
    "1ns", "1ms", "500ms", "5s", "1m30s", "2h", "1d", "1w 2d", "3M", "10y",
];
/// Durations that parse but no deadline can hold (issue 13 item 3).
const HUGE_DURATIONS: &[&str] = &[
    "11y",
    "300000000000y",
    "18446744073709551615s",
    "99999999999999h",
    "584000000000y",
];
/// Not durations at all.
const BAD_DURATIONS: &[&str] = &[
    "0",
    "0s",
    "",
    " ",
    "-1s",
    "1.5s",
    "5 s",
    "s",
    "1 year",
    "18446744073709551616s",
    "99999999999999999999999h",
];

fn toml_string(s: &str) -> String {
    // A TOML basic string: every char escaped the way the spec allows.
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn str_value() -> impl Strategy<Value = String> {
    word(24).prop_map(|s| toml_string(&s))
}

fn duration_value() -> BoxedStrategy<String> {
    prop_oneof![
        24 => select(GOOD_DURATIONS).prop_map(toml_string),
        2 => select(HUGE_DURATIONS).prop_map(toml_string),
        1 => select(BAD_DURATIONS).prop_map(toml_string),
        1 => (any::<u64>(), select(&["ns", "us", "ms", "s", "m", "h", "d", "w", "M", "y"][..]))
            .prop_map(|(n, u)| toml_string(&format!("{n}{u}"))),
        1 => str_value(),
        1 => Just("5".to_string()),
    ]
    .boxed()
}

/// Integers: the key's good values mostly, the edges of every integer
/// type sometimes, a string now and then.
fn int_value(good: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        24 => select(good).prop_map(String::from),
        2 => select(&[
            "0",
            "-1",
            "1024",
            "4000000000",
            "4294967295",
            "4294967296",
            "9223372036854775807",
            "-9223372036854775808",
        ][..])
        .prop_map(String::from),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => Just("\"5\"".to_string()),
    ]
    .boxed()
}

/// One of the key's words mostly; a wrong word, any string or a number
/// sometimes.
fn word_value(
    good: &'static [&'static str],
    bad: &'static [&'static str],
) -> BoxedStrategy<String> {
    prop_oneof![
        30 => select(good).prop_map(toml_string),
        1 => select(bad).prop_map(toml_string),
        1 => str_value(),
        1 => Just("1".to_string()),
    ]
    .boxed()
}

fn list_of(item: BoxedStrategy<String>, max: usize) -> BoxedStrategy<String> {
    proptest::collection::vec(item, 0..max)
        .prop_map(|v| format!("[{}]", v.join(", ")))
        .boxed()
}

fn argv_value() -> BoxedStrategy<String> {
    prop_oneof![
        30 => select(&[
            "[\"/bin/sh\", \"-c\", \"sleep 1\"]",
            "[\"/usr/bin/env\"]",
            "[\"true\", \"--flag=x y\"]",
        ][..])
        .prop_map(String::from),
        2 => proptest::collection::vec(
            prop_oneof![
                select(&["/bin/sh", "-c", "", "\u{0}"][..]).prop_map(toml_string),
                str_value(),
            ],
            0..4
        )
        .prop_map(|v| format!("[{}]", v.join(", "))),
        1 => str_value(),
    ]
    .boxed()
}

fn names_value() -> BoxedStrategy<String> {
    list_of(
        prop_oneof![8 => select(UNIT_NAMES).prop_map(toml_string), 1 => str_value()].boxed(),
        4,
    )
}

fn path_value() -> BoxedStrategy<String> {
    prop_oneof![
        30 => select(&["/srv/pg", "/srv/pg/", "/srv/./pg", "//srv//x", "/", "/srv/a b/ü"][..])
            .prop_map(toml_string),
        2 => select(&["/srv/../etc", "relative", "", "/srv/pg/.."][..]).prop_map(toml_string),
        1 => str_value(),
    ]
    .boxed()
}

type Kv = (&'static str, BoxedStrategy<String>);

/// A table body: each key present with probability 1/3, in a fixed order,
/// plus rarely an unknown key (duplicates come from the mutation targets).
fn kvs(pairs: Vec<Kv>) -> BoxedStrategy<String> {
    let parts: Vec<BoxedStrategy<String>> = pairs
        .into_iter()
        .map(|(k, v)| {
            proptest::option::weighted(0.33, v)
                .prop_map(move |v| v.map(|v| format!("{k} = {v}\n")).unwrap_or_default())
                .boxed()
        })
        .collect();
    (parts, proptest::option::weighted(0.03, "[a-z_]{1,12}"))
        .prop_map(|(v, unknown)| {
            let mut s = v.concat();
            if let Some(k) = unknown {
                s.push_str(&format!("{k} = 1\n"));
            }
            s
        })
        .boxed()
}

fn probe_section(name: &'static str) -> BoxedStrategy<String> {
    // Exactly one target mostly (more or none is an error).
    let target = prop_oneof![
        4 => argv_value().prop_map(|v| format!("exec = {v}\n")),
        2 => select(&["\"127.0.0.1:5432\"", "\"[::1]:1\"", "\"nohost\""][..])
            .prop_map(|v| format!("tcp = {v}\n")),
        2 => select(&[
            "\"http://127.0.0.1:8080/healthz\"",
            "\"http+unix:///run/x.sock:/h\"",
            "\"ftp://x\"",
        ][..])
        .prop_map(|v| format!("http = {v}\n")),
        1 => path_value().prop_map(|v| format!("unix = {v}\n")),
        1 => Just(String::new()),
        1 => Just("tcp = \"a:1\"\nunix = \"/x\"\n".to_string()),
    ];
    let rest = kvs(vec![
        ("interval", duration_value()),
        ("timeout", duration_value()),
        ("start_period", duration_value()),
        ("failure_threshold", int_value(&["1", "3", "10"])),
        ("success_threshold", int_value(&["1", "2"])),
        (
            "on_unhealthy",
            word_value(&["restart", "stop", "report"], &["explode"]),
        ),
    ]);
    (target, rest)
        .prop_map(move |(t, body)| format!("[{name}]\n{t}{body}"))
        .boxed()
}

/// A unit file built from the real keys. Values are mostly good, so that
/// a fair share of the files is valid and reaches the validity checks and
/// the engine, and sometimes hostile: huge durations and integers, wrong
/// words, NULs, relative paths.
fn unit_text() -> impl Strategy<Value = String> {
    let top = kvs(vec![
        ("description", str_value().boxed()),
        ("type", word_value(&["longrun", "oneshot"], &["daemon"])),
        (
            "env",
            proptest::collection::btree_map(
                prop_oneof![8 => "[A-Z_]{1,6}", 1 => word(8)],
                word(8),
                0..3,
            )
            .prop_map(|m| {
                let kv: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{} = {}", toml_string(k), toml_string(v)))
                    .collect();
                format!("{{ {} }}", kv.join(", "))
            })
            .boxed(),
        ),
        ("user", str_value().boxed()),
        ("group", str_value().boxed()),
        ("working_directory", path_value()),
        (
            "runtime_directory",
            list_of(word_value(&["app", "app/sub"], &["", "../x", "/abs"]), 3),
        ),
        (
            "umask",
            word_value(
                &["0027", "0o777", "077"],
                &["1000", "-1", "99999999999", "0x1"],
            ),
        ),
        (
            "limits",
            (
                int_value(&["1024", "65536", "0"]),
                int_value(&["0", "18446744073709551615"]),
            )
                .prop_map(|(a, b)| format!("{{ nofile = {a}, core = {b} }}"))
                .boxed(),
        ),
        (
            "reload_signal",
            word_value(
                &["SIGHUP", "usr1", "SIGUSR2"],
                &["SIGSTOP", "SIGCHLD", "SIGRTMIN", "99", "SIG"],
            ),
        ),
        (
            "essential",
            prop_oneof![8 => select(&["true", "false"][..]), 1 => Just("1")]
                .prop_map(String::from)
                .boxed(),
        ),
        (
            "priority",
            word_value(&["optional", "normal", "critical"], &["high"]),
        ),
        (
            "output",
            word_value(&["capture", "inherit", "null"], &["file"]),
        ),
        ("requires", names_value()),
        ("wants", names_value()),
        ("after", names_value()),
    ]);
    let mount = kvs(vec![
        ("fstype", word_value(&["ext4", "tmpfs"], &[""])),
        ("source", str_value().boxed()),
        (
            "options",
            list_of(word_value(&["rw", "ro", "noatime"], &[""]), 3),
        ),
        ("on_loss", word_value(&["stop", "ignore"], &["panic"])),
        ("timeout", duration_value()),
    ]);
    let mount = (path_value(), mount).prop_map(|(p, b)| format!("[[mount]]\npath = {p}\n{b}"));
    let ready = kvs(vec![
        (
            "kind",
            word_value(&["started", "notify", "probe", "fd"], &["never"]),
        ),
        ("timeout", duration_value()),
        ("fd", int_value(&["3", "4", "1023"])),
        ("watchdog", duration_value()),
    ])
    .prop_map(|b| format!("[ready]\n{b}"));
    let restart = kvs(vec![
        (
            "policy",
            word_value(&["always", "on-failure", "never"], &["sometimes"]),
        ),
        ("delay", duration_value()),
        ("max_delay", duration_value()),
        ("burst", int_value(&["1", "5", "100"])),
        ("interval", duration_value()),
        ("reset_after", duration_value()),
    ])
    .prop_map(|b| format!("[restart]\n{b}"));
    let stop = kvs(vec![
        (
            "signal",
            word_value(&["SIGTERM", "int", "SIGKILL", "quit"], &["SIGTSTP", "NOPE"]),
        ),
        ("timeout", duration_value()),
        ("exec", argv_value()),
    ])
    .prop_map(|b| format!("[stop]\n{b}"));
    let some = |p: f64, s: BoxedStrategy<String>| proptest::option::weighted(p, s);
    (
        argv_value(),
        top,
        proptest::collection::vec(mount, 0..3),
        some(0.3, ready.boxed()),
        some(0.3, probe_section("health")),
        some(0.2, probe_section("readiness")),
        some(0.3, restart.boxed()),
        some(0.3, stop.boxed()),
    )
        .prop_map(
            |(exec, top, mounts, ready, health, readiness, restart, stop)| {
                let mut s = format!("exec = {exec}\n{top}");
                for m in mounts {
                    s.push_str(&m);
                }
                for sec in [ready, health, readiness, restart, stop]
                    .into_iter()
                    .flatten()
                {
                    s.push_str(&sec);
                }
                s
            },
        )
}

fn check_duration(name: &str, what: &str, d: Duration) -> Result<(), TestCaseError> {
    prop_assert!(
        d <= MAX_DURATION,
        "{name}: {what} = {d:?} accepted, above the {MAX_DURATION:?} bound"
    );
    prop_assert!(
        Instant::now().checked_add(d).is_some(),
        "{name}: {what} = {d:?} overflows a deadline"
    );
    Ok(())
}

fn valid_signal(s: i32) -> bool {
    (1..=64).contains(&s) && s != libc::SIGSTOP && s != libc::SIGTSTP && s != libc::SIGCHLD
}

fn check_abs_path(name: &str, what: &str, p: &Path) -> Result<(), TestCaseError> {
    prop_assert!(p.is_absolute(), "{name}: {what} {p:?} not absolute");
    prop_assert_eq!(
        supd::mounts::normalize(p),
        p.to_path_buf(),
        "{}: {} not normalised",
        name,
        what
    );
    Ok(())
}

/// What "a valid value" means for a unit: everything the rest of supd
/// trusts without re-checking.
fn check_spec(spec: &UnitSpec) -> Result<(), TestCaseError> {
    let n = &spec.name;
    prop_assert!(!spec.exec.is_empty(), "{n}: empty exec accepted");
    prop_assert!(
        !spec.exec.iter().any(|a| a.contains('\0')),
        "{n}: NUL in exec accepted"
    );
    if let Some(stop) = &spec.stop.exec {
        prop_assert!(!stop.is_empty(), "{n}: empty [stop] exec accepted");
        prop_assert!(!stop.iter().any(|a| a.contains('\0')), "{n}: NUL in stop");
    }
    for (k, v) in &spec.env {
        prop_assert!(
            !k.is_empty() && !k.contains('=') && !k.contains('\0') && !v.contains('\0'),
            "{n}: bad env {k:?}={v:?} accepted"
        );
    }
    if let Some(w) = &spec.working_directory {
        check_abs_path(n, "working_directory", w)?;
    }
    for d in &spec.runtime_directory {
        prop_assert!(
            !d.is_empty() && !d.starts_with('/') && !d.contains(".."),
            "{n}: runtime_directory {d:?} accepted"
        );
    }
    if let Some(u) = spec.umask {
        prop_assert!(u <= 0o777, "{n}: umask {u:o}");
    }
    prop_assert!(valid_signal(spec.stop.signal), "{n}: stop signal");
    prop_assert!(valid_signal(spec.reload_signal), "{n}: reload signal");
    for dep in spec.requires.iter().chain(&spec.wants).chain(&spec.after) {
        prop_assert!(dep != n, "{n} depends on itself");
    }
    for m in &spec.mounts {
        check_abs_path(n, "mount.path", &m.path)?;
        if let Some(t) = m.timeout {
            check_duration(n, "mount.timeout", t)?;
        }
    }
    prop_assert!((3..=1023).contains(&spec.ready.fd), "{n}: ready.fd");
    if let Some(t) = spec.ready.timeout {
        check_duration(n, "ready.timeout", t)?;
    }
    if let Some(t) = spec.ready.watchdog {
        check_duration(n, "ready.watchdog", t)?;
    }
    for (what, h) in [("health", &spec.health), ("readiness", &spec.readiness)] {
        if let Some(h) = h {
            if let unit::ProbeTarget::Exec(argv) = &h.target {
                prop_assert!(!argv.is_empty(), "{n}: empty [{what}] exec");
                prop_assert!(
                    !argv.iter().any(|a| a.contains('\0')),
                    "{n}: NUL in [{what}]"
                );
            }
            prop_assert!(
                !h.interval.is_zero() && !h.timeout.is_zero(),
                "{n}: [{what}] zero interval/timeout"
            );
            prop_assert!(h.failure_threshold >= 1 && h.success_threshold >= 1);
            check_duration(n, "interval", h.interval)?;
            check_duration(n, "timeout", h.timeout)?;
            check_duration(n, "start_period", h.start_period)?;
        }
    }
    let r = &spec.restart;
    prop_assert!(r.burst >= 1, "{n}: burst 0");
    prop_assert!(r.max_delay >= r.delay, "{n}: max_delay < delay");
    for (what, d) in [
        ("restart.delay", r.delay),
        ("restart.max_delay", r.max_delay),
        ("restart.interval", r.interval),
        ("restart.reset_after", r.reset_after),
        ("stop.timeout", spec.stop.timeout),
    ] {
        check_duration(n, what, d)?;
    }
    Ok(())
}

/// A valid set is one the engine can run: boot it with every mount present
/// and every lock state, start everything, crash, probe, lock, stop and shut
/// down, following the engine's deadlines (which a huge duration pushes
/// years ahead). Any panic fails the case.
fn drive_engine(set: UnitSet, script: &[u8]) -> Result<(), TestCaseError> {
    let mut mounts = String::from("1 1 0:1 / / rw - ext4 /dev/root rw\n");
    let mut paths = BTreeSet::new();
    for u in set.units.values() {
        for m in &u.mounts {
            paths.insert(m.path.clone());
        }
    }
    for (i, p) in paths.iter().enumerate() {
        if p != Path::new("/") {
            let esc: String = p
                .to_string_lossy()
                .chars()
                .map(|c| match c {
                    ' ' => "\\040".to_string(),
                    '\t' => "\\011".to_string(),
                    '\n' => "\\012".to_string(),
                    '\\' => "\\134".to_string(),
                    c => c.to_string(),
                })
                .collect();
            mounts.push_str(&format!(
                "{} 1 0:{} / {esc} rw - ext4 /dev/x rw\n",
                i + 2,
                i + 2
            ));
        }
    }
    let names: Vec<String> = set.units.keys().cloned().collect();
    let mut engine = Engine::new(set, EngineConfig::default(), MountTable::parse(&mounts));
    let mut now = Instant::now();
    let peer = PeerInfo {
        uid: 0,
        pid: Some(1),
        name: "root".into(),
    };
    let mut queue: Vec<Event> = vec![Event::LocksLoaded(LocksLoad::Loaded(LockMap::new()))];
    let mut live: Vec<supd::engine::RunId> = Vec::new();
    let mut pid = 100;
    let mut req = 0u64;
    for step in 0..400usize {
        let choice = script.get(step % script.len().max(1)).copied().unwrap_or(0);
        if queue.is_empty() {
            // Something happens: a crash, an operator, or time passes.
            let unit = names
                .get(choice as usize % names.len().max(1))
                .cloned()
                .unwrap_or_default();
            req += 1;
            let cmd = |request| Event::Command {
                req: ReqId(req),
                peer: peer.clone(),
                wall_ms: 1_700_000_000_000,
                request,
            };
            queue.push(match choice % 8 {
                0 | 1 if !live.is_empty() => Event::ProcessExited {
                    run: live.remove(choice as usize % live.len()),
                    status: ExitStatus::Exited(choice as i32 % 3),
                },
                2 => cmd(Request::MaintenanceOn {
                    unit,
                    reason: "fuzz".into(),
                    holder: None,
                }),
                3 => cmd(Request::MaintenanceOff {
                    unit,
                    holder: None,
                    force: true,
                    dry_run: false,
                }),
                4 => cmd(Request::Restart { unit }),
                5 => cmd(Request::Stop { unit }),
                _ => match engine.next_deadline() {
                    Some(d) => {
                        now = now.max(d);
                        Event::Tick
                    }
                    None => cmd(Request::Start { unit }),
                },
            });
            if step > 350 {
                queue.push(Event::ShutdownRequested(supd::engine::ShutdownKind::Exit));
            }
        }
        let ev = queue.remove(0);
        let engine_ref = &mut engine;
        let actions = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine_ref.handle(now, ev.clone())
        }))
        .map_err(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            TestCaseError::fail(format!("engine panicked on {ev:?}: {msg}"))
        })?;
        for a in actions {
            match a {
                Action::Spawn { run, .. } => {
                    pid += 1;
                    live.push(run);
                    queue.push(Event::Spawned {
                        run,
                        pid,
                        cgroup: None,
                    });
                    if choice % 3 == 0 {
                        queue.push(Event::Notified {
                            run,
                            msg: NotifyMsg {
                                ready: true,
                                ..NotifyMsg::default()
                            },
                        });
                    }
                }
                Action::Signal { run, signal } => {
                    if let Some(i) = live.iter().position(|r| *r == run) {
                        live.remove(i);
                        queue.push(Event::ProcessExited {
                            run,
                            status: ExitStatus::Signaled {
                                signal,
                                core: false,
                            },
                        });
                    }
                }
                Action::StartProbe { run, kind, .. } => queue.push(Event::ProbeAnswered {
                    run,
                    kind,
                    ok: choice % 2 == 0,
                    output: None,
                }),
                Action::PersistLocks { version, .. } => queue.push(Event::LocksPersisted {
                    version,
                    result: if choice % 5 == 0 {
                        Err("ENOSPC".into())
                    } else {
                        Ok(())
                    },
                }),
                Action::ShutdownComplete(_) => return Ok(()),
                _ => {}
            }
        }
    }
    Ok(())
}

fn parse_one(text: &str) -> Result<Option<UnitSpec>, TestCaseError> {
    match unit::toml::parse_unit("fuzzed", Path::new("/units/fuzzed.toml"), text) {
        Ok(spec) => {
            check_spec(&spec)?;
            Ok(Some(spec))
        }
        Err(errors) => {
            prop_assert!(!errors.is_empty(), "Err with no error");
            for e in &errors {
                prop_assert!(!e.message.is_empty());
                prop_assert_eq!(&e.file, Path::new("/units/fuzzed.toml"));
                if let Some(line) = e.line {
                    prop_assert!(line >= 1 && line <= text.lines().count().max(1) + 1);
                }
            }
            Ok(None)
        }
    }
}

fn run_single(mut spec: UnitSpec, script: &[u8]) -> Result<(), TestCaseError> {
    spec.requires.clear();
    spec.wants.clear();
    spec.after.clear();
    let set = UnitSet::new(vec![spec])
        .map_err(|e| TestCaseError::fail(format!("a valid spec is not a valid set: {e:?}")))?;
    drive_engine(set, script)
}

#[test]
fn unit_corpus_loads_as_it_should() {
    // Every shipped example and the good fixtures load; every bad fixture is
    // refused with its file named.
    for dir in [
        "units",
        "units/appliance",
        "packaging/vm/units",
        "tests/fixtures/good",
    ] {
        let set = unit::load::load_dir(&repo().join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {}", unit::load::format_report(&e)));
        for spec in set.units.values() {
            parse_one(&std::fs::read_to_string(&spec.file).unwrap_or_default())
                .unwrap_or_else(|e| panic!("{}: {e}", spec.file.display()));
        }
    }
    assert!(unit::load::load_dir(&repo().join("tests/fixtures/bad")).is_err());
}

/// Counts the inputs that were valid, so a run shows how many reached the
/// validity checks and the engine (a generator that only makes errors
/// proves little).
struct Valid(std::sync::atomic::AtomicU64, &'static str);

impl Valid {
    fn new(target: &'static str) -> Valid {
        Valid(std::sync::atomic::AtomicU64::new(0), target)
    }
    fn hit(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Valid {
    fn drop(&mut self) {
        eprintln!(
            "fuzz {}: {} inputs were valid (and ran in the engine)",
            self.1,
            self.0.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}

#[test]
fn unit_text_arbitrary() {
    let valid = Valid::new("unit_text_arbitrary");
    fuzz(
        "unit_text_arbitrary",
        1,
        any_text(1024),
        |text| match parse_one(text)? {
            Some(spec) => {
                valid.hit();
                run_single(spec, text.as_bytes())
            }
            None => Ok(()),
        },
    );
}

#[test]
fn unit_text_structured() {
    let valid = Valid::new("unit_text_structured");
    fuzz(
        "unit_text_structured",
        1,
        (unit_text(), proptest::collection::vec(any::<u8>(), 1..32)),
        |(text, script)| match parse_one(text)? {
            Some(spec) => {
                valid.hit();
                run_single(spec, script)
            }
            None => Ok(()),
        },
    );
}

#[test]
fn unit_corpus_mutated() {
    let valid = Valid::new("unit_corpus_mutated");
    let corpus = Arc::new(read_all(&unit_corpus()));
    assert!(corpus.len() >= 15, "unit corpus too small");
    fuzz(
        "unit_corpus_mutated",
        1,
        mutated(corpus, TOML_WORDS),
        |bytes| match std::str::from_utf8(bytes) {
            Ok(text) => match parse_one(text)? {
                Some(spec) => {
                    valid.hit();
                    run_single(spec, bytes)
                }
                None => Ok(()),
            },
            // Not UTF-8: load_dir refuses it before parsing (the dir target
            // covers that path).
            Err(_) => Ok(()),
        },
    );
}

/// A units directory: a few units with dependencies among a small set of
/// names (so cycles, self-references and unknown names happen), plus the
/// odd entries a real directory holds.
#[derive(Debug, Clone)]
enum Entry {
    Unit(String, String),
    Raw(Vec<u8>, Vec<u8>),
    Dir(String),
    DanglingSymlink(String),
}

fn dir_strategy() -> impl Strategy<Value = Vec<Entry>> {
    let name = select(
        &[
            "a", "b", "c", "db", "web", "x.y@1", ".hidden", "bad name", "é",
        ][..],
    );
    let unit = (name.clone(), unit_text(), names_value(), names_value()).prop_map(
        |(n, text, req, after)| {
            // Dependencies first, so they are top-level keys.
            Entry::Unit(n.to_string(), {
                let body: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.starts_with("requires = ") && !l.starts_with("after = "))
                    .collect();
                format!("requires = {req}\nafter = {after}\n{}\n", body.join("\n"))
            })
        },
    );
    let odd = prop_oneof![
        (
            prop_oneof![
                Just(b"\xff\xfe.toml".to_vec()),
                Just(b"notes.txt".to_vec()),
                Just(b"z.toml~".to_vec())
            ],
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(n, b)| Entry::Raw(n, b)),
        (
            Just(b"nonutf8.toml".to_vec()),
            Just(b"exec = [\"\xff\"]\n".to_vec())
        )
            .prop_map(|(n, b)| Entry::Raw(n, b)),
        name.clone().prop_map(|n| Entry::Dir(n.to_string())),
        name.prop_map(|n| Entry::DanglingSymlink(n.to_string())),
    ];
    proptest::collection::vec(prop_oneof![6 => unit, 1 => odd], 0..7)
}

#[test]
fn unit_dir_load() {
    let valid = Valid::new("unit_dir_load");
    let root = std::env::temp_dir().join(format!("supd-fuzz-dir-{}", std::process::id()));
    let n = std::sync::atomic::AtomicU64::new(0);
    fuzz(
        "unit_dir_load",
        10,
        (
            dir_strategy(),
            proptest::collection::vec(any::<u8>(), 1..32),
        ),
        |(entries, script)| {
            let dir = root.join(
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    .to_string(),
            );
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for e in entries {
                let _ = match e {
                    Entry::Unit(n, text) => std::fs::write(dir.join(format!("{n}.toml")), text),
                    Entry::Raw(n, b) => std::fs::write(dir.join(OsStr::from_bytes(n)), b),
                    Entry::Dir(n) => std::fs::create_dir_all(dir.join(format!("{n}.toml"))),
                    Entry::DanglingSymlink(n) => std::os::unix::fs::symlink(
                        "/nonexistent/supd",
                        dir.join(format!("{n}.toml")),
                    ),
                };
            }
            let result = unit::load::load_dir(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            match result {
                Ok(set) => {
                    // Valid: every unit valid, every dependency defined, and
                    // `order` is a topological order of all of them.
                    let mut seen = BTreeSet::new();
                    prop_assert_eq!(set.order.len(), set.units.len());
                    for name in &set.order {
                        let spec = set
                            .units
                            .get(name)
                            .ok_or_else(|| TestCaseError::fail("order names an unknown unit"))?;
                        check_spec(spec)?;
                        for dep in spec.requires.iter().chain(&spec.wants).chain(&spec.after) {
                            prop_assert!(set.units.contains_key(dep), "{name}: unknown dep {dep}");
                            prop_assert!(seen.contains(dep), "{name} ordered before {dep}");
                        }
                        seen.insert(name.clone());
                    }
                    valid.hit();
                    drive_engine(set, script)
                }
                Err(errors) => {
                    prop_assert!(!errors.is_empty());
                    for e in &errors {
                        prop_assert!(e.file.starts_with(&dir), "error outside the dir: {e}");
                    }
                    Ok(())
                }
            }
        },
    );
    let _ = std::fs::remove_dir_all(&root);
}
