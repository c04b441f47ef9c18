//! systemd directives imported as native supd keys, with real processes
//! under a real supd: `exec_condition` (ExecCondition=), and the others
//! this file grows with.

mod common;

use std::time::Duration;

use common::*;

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn exec_condition_skips_on_1_to_254_and_fails_on_255_or_a_signal() {
    if !can_run("exec_condition") {
        return;
    }
    let dir = TempDir::new("execcond");
    let log = dir.path().join("log");
    let l = log.display();
    let unit = |name: &str, cond: &str| {
        format!(
            r#"exec = ["/bin/sh", "-c", "echo main-{name} >> {l}; exec sleep 1000"]
exec_condition = [["/bin/sh", "-c", "echo cond1-{name} >> {l}"], ["/bin/sh", "-c", "echo cond2-{name} >> {l}; {cond}"]]
exec_start_pre = ["/bin/sh", "-c", "echo pre-{name} >> {l}"]
[restart]
policy = "never"
"#
        )
    };
    let pass = unit("pass", "exit 0");
    let skip = unit("skip", "exit 1");
    let skip254 = unit("skip254", "exit 254");
    let bad = unit("bad", "exit 255");
    let killed = unit("killed", "kill -KILL $$$$");
    // A dependent of a skipped unit starts, as after a failed condition.
    let dep = "exec = [\"sleep\", \"1000\"]\nrequires = [\"skip\"]\n";
    let supd = Supd::start(
        "execcond",
        &[
            ("pass", &pass),
            ("skip", &skip),
            ("skip254", &skip254),
            ("bad", &bad),
            ("killed", &killed),
            ("dep", dep),
        ],
    );
    supd.wait_state("pass", "running", Duration::from_secs(10));
    supd.wait_state("skip", "skipped", Duration::from_secs(10));
    supd.wait_state("skip254", "skipped", Duration::from_secs(10));
    supd.wait_state("bad", "failed", Duration::from_secs(10));
    supd.wait_state("killed", "failed", Duration::from_secs(10));
    supd.wait_state("dep", "running", Duration::from_secs(10));
    let all = lines(&log);
    let of = |name: &str| -> Vec<String> {
        all.iter()
            .filter(|x| x.ends_with(&format!("-{name}")))
            .cloned()
            .collect()
    };
    assert_eq!(
        of("pass"),
        ["cond1-pass", "cond2-pass", "pre-pass", "main-pass"],
        "conditions run first, in order: {all:?}"
    );
    for n in ["skip", "skip254", "bad", "killed"] {
        assert_eq!(
            of(n),
            [format!("cond1-{n}"), format!("cond2-{n}")],
            "{n}: neither start command nor main ran: {all:?}"
        );
    }
    let why = supd.ok(&["why", "skip"]);
    assert!(why.contains("condition command"), "{why}");
    let why = supd.ok(&["why", "bad"]);
    assert!(
        why.contains("condition command") && why.contains("255"),
        "{why}"
    );
}

#[test]
fn exec_ignore_failure_counts_any_end_of_the_main_process_as_success() {
    if !can_run("exec_ignore_failure") {
        return;
    }
    let dir = TempDir::new("ignfail");
    let log = dir.path().join("log");
    let l = log.display();
    let unit = |name: &str, how: &str, ignore: bool| {
        format!(
            r#"exec = ["/bin/sh", "-c", "echo {name} >> {l}; {how}"]
exec_ignore_failure = {ignore}
[restart]
policy = "on-failure"
delay = "100ms"
"#
        )
    };
    let supd = Supd::start(
        "ignfail",
        &[
            ("code", &unit("code", "exit 3", true)),
            ("sig", &unit("sig", "kill -KILL $$$$", true)),
            ("plain", &unit("plain", "exit 3", false)),
        ],
    );
    // Without it the failure restarts the unit.
    wait_for("plain restarted", Duration::from_secs(10), || {
        (lines(&log).iter().filter(|x| *x == "plain").count() >= 2).then_some(())
    });
    supd.wait_state("code", "exited", Duration::from_secs(10));
    supd.wait_state("sig", "exited", Duration::from_secs(10));
    let all = lines(&log);
    for n in ["code", "sig"] {
        assert_eq!(
            all.iter().filter(|x| *x == n).count(),
            1,
            "{n}: a failure treated as success is not restarted: {all:?}"
        );
    }
}

/// The hard limits of this (test) process, by /proc/self/limits name.
fn own_hard_limit(name: &str) -> Option<u64> {
    let t = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = t.lines().find(|x| x.starts_with(name))?;
    let hard = line[name.len()..].split_whitespace().nth(1)?;
    match hard {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// CAP_SYS_RESOURCE in our effective set: needed to raise a hard limit.
fn can_raise_limits() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1u64 << 24) /* CAP_SYS_RESOURCE */ != 0)
}

#[test]
fn cpu_scheduling_and_every_limit_are_set_in_the_service() {
    if !can_run("sched_limits") {
        return;
    }
    let dir = TempDir::new("sched");
    let out = dir.path().join("out");
    let o = out.display();
    // python3 reads what the kernel says about itself.
    let probe = format!(
        r#"import os
p = os.sched_getscheduler(0)
prio = os.sched_getparam(0).sched_priority
lim = open('/proc/self/limits').read()
with open('{o}.' + os.environ['WHICH'], 'w') as f:
    f.write('%d %d\n' % (p, prio))
    f.write(lim)
"#
    );
    let script = dir.path().join("probe.py");
    std::fs::write(&script, probe).unwrap();
    let s = script.display();
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let raise = can_raise_limits();
    // (key, value in the unit, /proc/self/limits name, what it shows)
    let all: Vec<(&str, &str, &str, String, u64)> = vec![
        ("rtprio", "50", "Max realtime priority", "50".into(), 50),
        (
            "rttime",
            "200000",
            "Max realtime timeout",
            "200000".into(),
            200000,
        ),
        (
            "nofile",
            "\"infinity\"",
            "Max open files",
            nr_open.to_string(),
            nr_open,
        ),
        (
            "core",
            "\"infinity\"",
            "Max core file size",
            "unlimited".into(),
            u64::MAX,
        ),
        (
            "stack",
            "16777216",
            "Max stack size",
            "16777216".into(),
            16777216,
        ),
        ("nice", "30", "Max nice priority", "30".into(), 30),
        ("cpu", "1000", "Max cpu time", "1000".into(), 1000),
        ("sigpending", "77", "Max pending signals", "77".into(), 77),
        (
            "msgqueue",
            "123456",
            "Max msgqueue size",
            "123456".into(),
            123456,
        ),
        ("locks", "99", "Max file locks", "99".into(), 99),
        (
            "fsize",
            "\"infinity\"",
            "Max file size",
            "unlimited".into(),
            u64::MAX,
        ),
        (
            "data",
            "\"infinity\"",
            "Max data size",
            "unlimited".into(),
            u64::MAX,
        ),
        (
            "as",
            "\"infinity\"",
            "Max address space",
            "unlimited".into(),
            u64::MAX,
        ),
        (
            "rss",
            "\"infinity\"",
            "Max resident set",
            "unlimited".into(),
            u64::MAX,
        ),
        ("nproc", "4242", "Max processes", "4242".into(), 4242),
        (
            "memlock",
            "65536",
            "Max locked memory",
            "65536".into(),
            65536,
        ),
    ];
    // Without CAP_SYS_RESOURCE (some containers) a hard limit can only be
    // lowered: leave out what would raise one.
    let (used, left): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|(_, _, name, _, n)| raise || own_hard_limit(name).is_some_and(|h| *n <= h));
    if !left.is_empty() {
        println!(
            "no CAP_SYS_RESOURCE: not testing raised limits {:?}",
            left.iter().map(|x| x.0).collect::<Vec<_>>()
        );
    }
    let table: Vec<String> = used.iter().map(|(k, v, ..)| format!("{k} = {v}")).collect();
    let rr = format!(
        r#"type = "oneshot"
exec = ["python3", "{s}"]
env = {{ WHICH = "rr" }}
cpu_scheduling_policy = "rr"
cpu_scheduling_priority = 7
cpu_scheduling_reset_on_fork = true
limits = {{ {} }}
"#,
        table.join(", ")
    );
    let idle = format!(
        r#"type = "oneshot"
exec = ["python3", "{s}"]
env = {{ WHICH = "idle" }}
cpu_scheduling_policy = "idle"
"#
    );
    let supd = Supd::start("sched", &[("rr", &rr), ("idle", &idle)]);
    supd.wait_state("rr", "done", Duration::from_secs(15));
    supd.wait_state("idle", "done", Duration::from_secs(15));
    let rr = std::fs::read_to_string(format!("{o}.rr")).unwrap();
    let first = rr.lines().next().unwrap_or_default();
    let (pol, prio) = first.split_once(' ').unwrap();
    // SCHED_RR = 2, with SCHED_RESET_ON_FORK (0x40000000) OR-ed in.
    assert_eq!(pol.parse::<i32>().unwrap(), 2 | 0x4000_0000, "{rr}");
    assert_eq!(prio, "7", "{rr}");
    for (_, _, name, want, _) in &used {
        let line = rr.lines().find(|x| x.starts_with(name)).unwrap_or("");
        let mut vals = line[name.len().min(line.len())..].split_whitespace();
        assert_eq!(vals.next(), Some(want.as_str()), "{name} soft: {rr}");
        assert_eq!(vals.next(), Some(want.as_str()), "{name} hard: {rr}");
    }
    let idle = std::fs::read_to_string(format!("{o}.idle")).unwrap();
    // SCHED_IDLE = 5.
    assert!(idle.starts_with("5 0\n"), "{idle}");
}

#[test]
fn stdout_and_stderr_files_are_appended_truncated_or_shared() {
    if !can_run("output_files") {
        return;
    }
    let dir = TempDir::new("outfiles");
    let d = dir.path().display();
    // Written twice (a restart): append keeps both runs, truncate only the
    // last; stdout and stderr to one file share it.
    let split = format!(
        r#"exec = ["/bin/sh", "-c", "echo out-$$$$; echo err-$$$$ >&2; exec sleep 1000"]
stdout_file = "append:{d}/split.out"
stderr_file = "truncate:{d}/split.err"
"#
    );
    let shared = format!(
        r#"exec = ["python3", "-c", "import sys; print('to-out', flush=True); print('to-err', file=sys.stderr, flush=True); import time; time.sleep(1000)"]
stdout_file = "file:{d}/shared"
stderr_file = "file:{d}/shared"
"#
    );
    // Only stdout to a file: stderr is still captured into the unit's log.
    let half = format!(
        r#"exec = ["/bin/sh", "-c", "echo half-out; echo half-err >&2; exec sleep 1000"]
stdout_file = "append:{d}/half.out"
"#
    );
    let supd = Supd::start(
        "outfiles",
        &[("split", &split), ("shared", &shared), ("half", &half)],
    );
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    wait_for("first run's output", Duration::from_secs(10), || {
        (read("split.out").lines().count() == 1 && read("split.err").lines().count() == 1)
            .then_some(())
    });
    supd.ok(&["restart", "split"]);
    wait_for("second run's output", Duration::from_secs(10), || {
        (read("split.out").lines().count() == 2).then_some(())
    });
    wait_for(
        "stderr truncated and rewritten",
        Duration::from_secs(10),
        || {
            let err = read("split.err");
            let out = read("split.out");
            let last_pid = out.lines().last()?.strip_prefix("out-")?.to_string();
            (err == format!("err-{last_pid}\n")).then_some(())
        },
    );
    wait_for("shared file", Duration::from_secs(10), || {
        (read("shared") == "to-out\nto-err\n").then_some(())
    });
    wait_for("half", Duration::from_secs(10), || {
        (read("half.out") == "half-out\n").then_some(())
    });
    wait_for("stderr captured", Duration::from_secs(10), || {
        supd.ok(&["logs", "half"])
            .contains("half-err")
            .then_some(())
    });
    assert!(!supd.ok(&["logs", "half"]).contains("half-out"));
    // A file that cannot be opened fails the start with its path.
    let bad = format!(
        "exec = [\"sleep\", \"1000\"]\nstdout_file = \"append:{d}/no/such/dir/x\"\n[restart]\npolicy = \"never\"\n"
    );
    std::fs::write(supd.units.join("bad.toml"), bad).unwrap();
    supd.ok(&["reload"]);
    supd.wait_state("bad", "failed", Duration::from_secs(10));
    let why = supd.ok(&["why", "bad"]);
    assert!(
        why.contains("no/such/dir/x") && why.contains("stdout_file"),
        "{why}"
    );
}

#[test]
fn condition_cpus_compares_the_cpus_supd_may_use() {
    if !can_run("condition_cpus") {
        return;
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let unit = |cond: &str| format!("exec = [\"sleep\", \"1000\"]\ncondition_cpus = \"{cond}\"\n");
    let supd = Supd::start(
        "condcpus",
        &[
            ("enough", &unit(">=1")),
            ("exact", &unit(&format!("={n}"))),
            ("toomany", &unit(&format!(">{n}"))),
            (
                "negated",
                &format!("exec = [\"sleep\", \"1000\"]\ncondition_cpus = \"!<={n}\"\n"),
            ),
        ],
    );
    supd.wait_state("enough", "running", Duration::from_secs(10));
    supd.wait_state("exact", "running", Duration::from_secs(10));
    supd.wait_state("toomany", "skipped", Duration::from_secs(10));
    supd.wait_state("negated", "skipped", Duration::from_secs(10));
    assert!(supd.ok(&["why", "toomany"]).contains("condition_cpus"));
}

#[test]
fn stop_commands_run_in_order_and_stop_posts_of_remaining_units_wait_for_the_stop() {
    if !can_run("stop_chain") {
        return;
    }
    let dir = TempDir::new("stopchain");
    let log = dir.path().join("log");
    let l = log.display();
    let sh = |word: &str, then: &str| format!(r#"["/bin/sh", "-c", "echo {word} >> {l}{then}"]"#);
    // A completed oneshot that remains: stopping it runs the stop
    // commands in order, then the stop-post commands.
    let a = format!(
        "type = \"oneshot\"\nexec = {}\nremain_after_exit = true\nexec_stop_post = [{}]\n[stop]\nexec = [{}, {}]\n",
        sh("a-start", ""),
        sh("a-post", ""),
        sh("a-stop1", ""),
        sh("a-stop2", ""),
    );
    // A failing stop command ends the sequence; stop-post still runs.
    let b = format!(
        "type = \"oneshot\"\nexec = {}\nremain_after_exit = true\nexec_stop_post = [{}]\n[stop]\nexec = [{}, {}]\n",
        sh("b-start", ""),
        sh("b-post", ""),
        sh("b-stop1", "; exit 3"),
        sh("b-stop2", ""),
    );
    // A running service: the second stop command runs even though the
    // first one made the main process exit.
    let c = format!(
        "exec = [\"sleep\", \"1000\"]\n[stop]\nexec = [{}, {}]\ntimeout = \"5s\"\n",
        sh("c-stop1", "; kill $MAINPID; sleep 0.2"),
        sh("c-stop2", ""),
    );
    // A longrun that remains after exit 0, with only stop-post commands.
    let d = format!(
        "exec = {}\nremain_after_exit = true\nexec_stop_post = [{}]\n",
        sh("d-start", ""),
        sh("d-post", ""),
    );
    let supd = Supd::start("stopchain", &[("a", &a), ("b", &b), ("c", &c), ("d", &d)]);
    for u in ["a", "b", "d"] {
        supd.wait_state(u, "done", Duration::from_secs(10));
    }
    supd.wait_state("c", "running", Duration::from_secs(10));
    let of = |p: &str| -> Vec<String> {
        lines(&log)
            .into_iter()
            .filter(|x| x.starts_with(p))
            .collect()
    };
    assert_eq!(of("a-"), ["a-start"], "no stop-post before the stop");
    assert_eq!(of("d-"), ["d-start"], "no stop-post before the stop");
    for u in ["a", "b", "c", "d"] {
        supd.ok(&["stop", u]);
    }
    for u in ["a", "b", "c", "d"] {
        supd.wait_state(u, "stopped", Duration::from_secs(10));
    }
    wait_for("c's second stop command", Duration::from_secs(10), || {
        (of("c-").len() == 2).then_some(())
    });
    assert_eq!(of("a-"), ["a-start", "a-stop1", "a-stop2", "a-post"]);
    assert_eq!(of("b-"), ["b-start", "b-stop1", "b-post"]);
    assert_eq!(of("c-"), ["c-stop1", "c-stop2"]);
    assert_eq!(of("d-"), ["d-start", "d-post"]);
}

#[test]
fn on_failure_starts_the_named_unit_when_a_unit_fails() {
    if !can_run("on_failure") {
        return;
    }
    let dir = TempDir::new("onfail");
    let log = dir.path().join("log");
    let l = log.display();
    let svc = "exec = [\"/bin/sh\", \"-c\", \"sleep 0.3; exit 3\"]\non_failure = [\"alert\"]\n[restart]\npolicy = \"never\"\n";
    let alert =
        format!("type = \"oneshot\"\nexec = [\"/bin/sh\", \"-c\", \"echo alert >> {l}\"]\n");
    let supd = Supd::start("onfail", &[("svc", svc), ("alert", &alert)]);
    supd.wait_state("svc", "failed", Duration::from_secs(10));
    wait_for(
        "alert ran twice (boot, then the failure)",
        Duration::from_secs(10),
        || (lines(&log).len() == 2).then_some(()),
    );
    supd.wait_state("alert", "done", Duration::from_secs(10));
}

/// A Type=notify-reload service in python3: READY=1 at start; on SIGHUP
/// RELOADING=1 with MONOTONIC_USEC (now, or `stale` µs in the past), a
/// pause, then READY=1 — unless `mute`, when it says nothing.
fn notify_reload_service(stale_us: u64, mute: bool) -> String {
    let script = format!(
        r#"import os, signal, socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def send(m):
    s.sendto(m.encode(), os.environ['NOTIFY_SOCKET'])
def hup(*_):
    if {mute}:
        return
    us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000 - {stale_us}
    send('RELOADING=1\nMONOTONIC_USEC=%d' % us)
    time.sleep(0.5)
    send('READY=1')
signal.signal(signal.SIGHUP, hup)
send('READY=1')
while True:
    time.sleep(1)
"#,
        mute = if mute { "True" } else { "False" },
    );
    format!(
        "exec = [\"python3\", \"-c\", {}]\n[ready]\nkind = \"notify\"\nnotify_reload = true\ntimeout = \"2s\"\n",
        toml_str(&script)
    )
}

#[test]
fn reload_unit_waits_for_ready_after_reloading_of_a_notify_reload_unit() {
    if !can_run("notify_reload") {
        return;
    }
    let good = notify_reload_service(0, false);
    let mute = notify_reload_service(0, true);
    // RELOADING=1 stamped 10 s before the request: not this reload's.
    let stale = notify_reload_service(10_000_000, false);
    let supd = Supd::start(
        "notifyreload",
        &[("good", &good), ("mute", &mute), ("stale", &stale)],
    );
    for u in ["good", "mute", "stale"] {
        supd.wait_state(u, "running", Duration::from_secs(15));
    }
    let t0 = std::time::Instant::now();
    let out = supd.ok(&["reload-unit", "good"]);
    assert!(
        t0.elapsed() >= Duration::from_millis(450),
        "answered before READY=1: {out}"
    );
    assert!(
        out.contains("reloaded (RELOADING=1, then READY=1)"),
        "{out}"
    );
    for u in ["mute", "stale"] {
        let o = supd.supctl(&["reload-unit", u]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(o.status.code(), Some(1), "{u}: {text}");
        assert!(text.contains("did not report"), "{u}: {text}");
    }
    // Still running: an unconfirmed reload is reported, not punished.
    assert_eq!(supd.state_of("mute"), "running");
}

#[test]
fn disable_keeps_a_unit_from_starting_at_boot_durably_and_enable_undoes_it() {
    if !can_run("enable_disable") {
        return;
    }
    let svc = "exec = [\"sleep\", \"1000\"]\n";
    // `dep` is disabled but an enabled unit requires it: it still starts.
    let app = "exec = [\"sleep\", \"1000\"]\nrequires = [\"dep\"]\n";
    let mut supd = Supd::start(
        "enable",
        &[("svc", svc), ("other", svc), ("dep", svc), ("app", app)],
    );
    for u in ["svc", "other", "dep", "app"] {
        supd.wait_state(u, "running", Duration::from_secs(10));
    }
    let out = supd.ok(&["disable", "svc"]);
    assert!(out.contains("svc disabled"), "{out}");
    supd.ok(&["disable", "dep"]);
    // Not stopped now; status says so.
    assert_eq!(supd.state_of("svc"), "running");
    assert_eq!(supd.unit("svc")["enabled"], false);
    assert_eq!(supd.unit("other")["enabled"], true);
    // Durable before the answer: the file is there now.
    let file = std::fs::read_to_string(supd.state.join("disabled")).unwrap();
    assert!(
        file.lines().any(|l| l == "svc") && file.lines().any(|l| l == "dep"),
        "{file}"
    );
    let unknown = supd.supctl(&["disable", "nosuch"]);
    assert_eq!(unknown.status.code(), Some(1));
    // A crash and a new boot: svc stays down, dep is pulled in by app.
    supd.kill9();
    supd.spawn(&Options::default());
    supd.wait_state("other", "running", Duration::from_secs(10));
    supd.wait_state("app", "running", Duration::from_secs(10));
    assert_eq!(supd.state_of("dep"), "running");
    assert_eq!(supd.state_of("svc"), "stopped");
    assert_eq!(supd.unit("svc")["enabled"], false);
    assert!(supd.ok(&["status", "svc"]).contains("enabled:     no"));
    assert!(supd.ok(&["why", "svc"]).contains("disabled"));
    // An operator may still start it by hand.
    supd.ok(&["start", "svc"]);
    supd.wait_state("svc", "running", Duration::from_secs(10));
    supd.ok(&["stop", "svc"]);
    supd.ok(&["enable", "svc"]);
    assert_eq!(supd.unit("svc")["enabled"], true);
    let audit = supd.ok(&["audit"]);
    assert!(
        audit.contains("disable") && audit.contains("enable"),
        "{audit}"
    );
    supd.kill9();
    supd.spawn(&Options::default());
    supd.wait_state("svc", "running", Duration::from_secs(10));
}
