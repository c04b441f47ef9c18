//! Core supervision with real processes: start order, restart policy,
//! operator stop, orphan reaping, ordered shutdown, reload.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

/// A timestamp a service wrote; the file can exist a moment before its
/// content, so wait (bounded) for a number.
fn read_ns(path: &std::path::Path) -> u128 {
    wait_for(
        &format!("a timestamp in {}", path.display()),
        Duration::from_secs(10),
        || std::fs::read_to_string(path).ok()?.trim().parse().ok(),
    )
}

#[test]
fn starts_in_dependency_order_and_independent_units_in_parallel() {
    if !can_run("starts_in_dependency_order") {
        return;
    }
    let t = TempDir::new("order-out");
    let o = t.path().display().to_string();
    let units = [
        (
            "prepare",
            format!(
                "type = \"oneshot\"\n{}",
                sh_unit(&format!("sleep 0.3; date +%s%N > {o}/prepare"), "")
            ),
        ),
        (
            // Ready (fd 3 written) only after its timestamp: "ready before
            // dependents" is then visible in the timestamps. With the
            // default ready = "started", only the spawn order is promised.
            "web",
            sh_unit(
                &format!("date +%s%N > {o}/web; echo >&3; exec sleep 600"),
                "requires = [\"prepare\"]\n[ready]\nkind = \"fd\"",
            ),
        ),
        (
            "worker",
            sh_unit(
                &format!("date +%s%N > {o}/worker; exec sleep 600"),
                "requires = [\"web\"]",
            ),
        ),
        (
            "solo",
            sh_unit(&format!("date +%s%N > {o}/solo; exec sleep 600"), ""),
        ),
    ];
    let refs: Vec<(&str, &str)> = units.iter().map(|(n, s)| (*n, s.as_str())).collect();
    let supd = Supd::start("order", &refs);
    supd.wait_state("worker", "running", Duration::from_secs(10));
    let p = read_ns(&t.path().join("prepare"));
    let w = read_ns(&t.path().join("web"));
    let k = read_ns(&t.path().join("worker"));
    let s = read_ns(&t.path().join("solo"));
    assert!(
        p < w,
        "web started before its oneshot requirement completed"
    );
    assert!(w < k, "worker started before web");
    // `solo` depends on nothing: it must not wait for prepare's 300 ms.
    assert!(s < p, "independent unit waited for an unrelated chain");
    assert_eq!(supd.state_of("prepare"), "done");
}

/// A unit that fails twice, then runs (`sleep`), restarted on failure;
/// the file counting its starts.
fn flaky_unit(t: &TempDir) -> (String, std::path::PathBuf) {
    let c = t.path().join("count");
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 3 ] && exec sleep 600; exit 1",
        c = c.display()
    );
    let unit = sh_unit(
        &script,
        "[restart]\npolicy = \"on-failure\"\ndelay = \"50ms\"\nmax_delay = \"100ms\"\nburst = 10\ninterval = \"1m\"",
    );
    (unit, c)
}

#[test]
fn crashed_service_is_restarted_per_policy() {
    if !can_run("crashed_service_is_restarted") {
        return;
    }
    let t = TempDir::new("crash-out");
    let (unit, c) = flaky_unit(&t);
    let supd = Supd::start("crash", &[("flaky", &unit)]);
    wait_for("third run", Duration::from_secs(10), || {
        (std::fs::read_to_string(&c).ok()?.trim() == "3").then_some(())
    });
    supd.wait_state("flaky", "running", Duration::from_secs(5));
    let u = supd.unit("flaky");
    assert_eq!(u["restarts"], 2, "{u}");
}

/// A signal mask line of /proc/PID/status (`SigBlk:`, `SigCgt:`, ...).
fn sig_mask(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}

#[test]
fn sigchld_is_blocked_in_every_supd_thread_and_services_get_an_empty_mask() {
    if !can_run("sigchld_is_blocked_in_every_supd_thread") {
        return;
    }
    // supd reads SIGCHLD from a signalfd: a thread that let it through
    // (its disposition is the default) would take it and discard it, and
    // an exit would go unseen until the next one.
    let supd = Supd::start("sigchld-mask", &[("svc", &sh_unit("exec sleep 600", ""))]);
    supd.wait_state("svc", "running", Duration::from_secs(10));
    let chld = 1u64 << (libc::SIGCHLD - 1);
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{}/task", supd.pid))
        .expect("supd's threads")
        .flatten()
        .collect();
    assert!(tasks.len() > 1, "supd has helper threads");
    for t in tasks {
        let status = std::fs::read_to_string(t.path().join("status")).expect("thread status");
        assert_ne!(
            sig_mask(&status, "SigBlk:") & chld,
            0,
            "SIGCHLD open in {status}"
        );
        assert_eq!(
            sig_mask(&status, "SigCgt:") & chld,
            0,
            "SIGCHLD handled in {status}"
        );
    }
    let kids = children_of(supd.pid);
    assert_eq!(kids.len(), 1, "{kids:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", kids[0].0)).expect("service");
    assert_eq!(sig_mask(&status, "SigBlk:"), 0, "service's mask: {status}");
    assert_eq!(
        sig_mask(&status, "SigIgn:"),
        0,
        "service's ignored signals: {status}"
    );
    // And exits are seen: a SIGKILLed service comes back.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(kids[0].0), Signal::SIGKILL).expect("kill");
    wait_for("the service's restart", Duration::from_secs(10), || {
        let u = supd.unit("svc");
        (u["restarts"] == 1 && u["state"] == "running").then_some(())
    });
}

#[test]
fn supds_own_signals_are_blocked_everywhere_read_and_not_handed_to_services() {
    if !can_run("supds_own_signals_are_blocked_everywhere") {
        return;
    }
    // SIGTERM, SIGINT, SIGPWR, SIGHUP, SIGUSR1 and SIGUSR2 are read from a
    // signalfd with their default disposition: a thread that let one
    // through would act on that default (end supd), and no handler means
    // a service has nothing of supd's to reset before its exec.
    let t = TempDir::new("own-signals-out");
    let o = t.path().display().to_string();
    let svc = sh_unit(
        &format!(
            "trap 'echo usr1 >> {o}/got' USR1; trap 'echo usr2 >> {o}/got' USR2; \
             echo up > {o}/up; while :; do sleep 0.05; done"
        ),
        "",
    );
    let mut supd = Supd::start("own-signals", &[("svc", &svc)]);
    supd.wait_state("svc", "running", Duration::from_secs(10));
    wait_for("the service's trap", Duration::from_secs(10), || {
        t.path().join("up").exists().then_some(())
    });
    let own = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPWR,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGCHLD,
    ]
    .iter()
    .fold(0u64, |m, s| m | 1u64 << (*s as i32 - 1));
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{}/task", supd.pid))
        .expect("supd's threads")
        .flatten()
        .collect();
    assert!(tasks.len() > 1, "supd has helper threads");
    for t in tasks {
        let status = std::fs::read_to_string(t.path().join("status")).expect("thread status");
        assert_eq!(
            sig_mask(&status, "SigBlk:") & own,
            own,
            "one of supd's signals open in {status}"
        );
        assert_eq!(
            sig_mask(&status, "SigCgt:") & own,
            0,
            "one of supd's signals handled in {status}"
        );
    }
    // Two of them pending at once are both read: SIGHUP (reload: a new
    // unit appears) and SIGUSR1 (passed on to every unit), then SIGUSR2.
    std::fs::write(supd.units.join("late.toml"), sh_unit("exec sleep 600", "")).expect("late unit");
    let pid = nix::unistd::Pid::from_raw(supd.pid);
    nix::sys::signal::kill(pid, Signal::SIGHUP).expect("HUP");
    nix::sys::signal::kill(pid, Signal::SIGUSR1).expect("USR1");
    wait_for("the reloaded unit running", Duration::from_secs(10), || {
        let st = supd.status();
        let units = st["units"].as_array()?.clone();
        units
            .iter()
            .any(|u| u["name"] == "late" && u["state"] == "running")
            .then_some(())
    });
    wait_for("USR1 at the service", Duration::from_secs(10), || {
        let got = std::fs::read_to_string(t.path().join("got")).unwrap_or_default();
        got.contains("usr1").then_some(())
    });
    supd.signal(Signal::SIGUSR2);
    wait_for("USR2 at the service", Duration::from_secs(10), || {
        let got = std::fs::read_to_string(t.path().join("got")).unwrap_or_default();
        got.contains("usr2").then_some(())
    });
    // (`late` may have met SIGUSR1 before its trap and been restarted.)
    let kids = children_of(supd.pid);
    assert!(!kids.is_empty(), "{kids:?}");
    for (k, _) in kids {
        // dash blocks every signal for the moment it forks (the loop's
        // `sleep`): a mask handed on by supd stays, that one does not.
        let mut last = String::new();
        let clear = (0..500).any(|_| {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{k}/status")) else {
                // Gone since (`late` may be restarting): nothing to check.
                return true;
            };
            last = status;
            let open = sig_mask(&last, "SigBlk:") == 0;
            if !open {
                std::thread::sleep(Duration::from_millis(10));
            }
            open
        });
        assert!(
            clear,
            "the service's signal mask stayed non-empty for 5 s: {last}"
        );
    }
    // SIGINT is a shutdown too (it was a handler's; now read like SIGTERM).
    supd.signal(Signal::SIGINT);
    let st = supd.wait_exit(Duration::from_secs(20));
    assert!(st.code().is_some(), "supd ended by a signal: {st}");
}

#[test]
fn the_log_writer_runs_as_sched_batch() {
    if !can_run("the_log_writer_runs_as_sched_batch") {
        return;
    }
    // Woken for every restart's log notes, it must not preempt the new
    // service (or supd's loop) on their CPU.
    let supd = Supd::start("logs-batch", &[("svc", &sh_unit("exec sleep 600", ""))]);
    supd.wait_state("svc", "running", Duration::from_secs(10));
    let policy = |task: &std::path::Path| -> Option<u32> {
        let stat = std::fs::read_to_string(task.join("stat")).ok()?;
        // Field 41 (`policy`); fields after the command start at 3.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(38)?
            .parse()
            .ok()
    };
    let mut seen = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{}/task", supd.pid))
        .expect("threads")
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        seen.push((comm.trim().to_string(), policy(&t.path())));
    }
    let batch = libc::SCHED_BATCH as u32;
    assert!(
        seen.iter()
            .any(|(c, p)| c == "supd-logs" && *p == Some(batch)),
        "{seen:?}"
    );
    // The loop itself keeps the normal policy (it must preempt to react).
    let main = policy(std::path::Path::new(&format!(
        "/proc/{}/task/{}",
        supd.pid, supd.pid
    )));
    assert_eq!(main, Some(libc::SCHED_OTHER as u32), "{seen:?}");
}

#[test]
fn an_ignored_sigchld_inherited_from_the_launcher_does_not_hide_exits() {
    if !can_run("an_ignored_sigchld_inherited_from_the_launcher") {
        return;
    }
    // An ignored SIGCHLD survives exec, and with it the kernel reaps the
    // children itself: supd must put it back to its default.
    let t = TempDir::new("ign-out");
    let (unit, c) = flaky_unit(&t);
    let opts = Options {
        launcher: vec![
            "python3".into(),
            "-c".into(),
            "import os, signal, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])".into(),
        ],
        ..Default::default()
    };
    let supd = Supd::start_with("ign-chld", &[("flaky", &unit)], opts);
    wait_for("third run", Duration::from_secs(10), || {
        (std::fs::read_to_string(&c).ok()?.trim() == "3").then_some(())
    });
    supd.wait_state("flaky", "running", Duration::from_secs(5));
    let u = supd.unit("flaky");
    assert_eq!(u["restarts"], 2, "{u}");
    let log = supd.log_text();
    assert!(
        log.contains("exited with code 1"),
        "exit cause not logged: {log}"
    );
}

#[test]
fn operator_stop_is_not_undone_by_restart_policy() {
    if !can_run("operator_stop_is_not_undone") {
        return;
    }
    let t = TempDir::new("stop-out");
    let c = t.path().join("runs");
    let unit = sh_unit(
        &format!("echo x >> {}; exec sleep 600", c.display()),
        "[restart]\npolicy = \"always\"\ndelay = \"50ms\"",
    );
    let supd = Supd::start("opstop", &[("svc", &unit)]);
    supd.wait_state("svc", "running", Duration::from_secs(10));
    let out = supd.ok(&["stop", "svc"]);
    assert!(out.contains("stopped"), "{out}");
    // The answer came only once the process was gone.
    let u = supd.unit("svc");
    assert_eq!(u["state"], "stopped", "{u}");
    assert!(u["pid"].is_null());
    // A policy of `always` with a 50 ms delay would have brought it back
    // many times over in this window.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(supd.state_of("svc"), "stopped");
    let runs = std::fs::read_to_string(&c).unwrap_or_default();
    assert_eq!(runs.lines().count(), 1, "restarted after an operator stop");
    supd.ok(&["start", "svc"]);
    supd.wait_state("svc", "running", Duration::from_secs(5));
}

#[test]
fn dependents_stop_first_and_come_back() {
    if !can_run("dependents_stop_first") {
        return;
    }
    let t = TempDir::new("dep-out");
    let o = t.path().display().to_string();
    let db = sh_unit(
        &format!("trap 'date +%s%N > {o}/db.stop; exit 0' TERM; while :; do sleep 0.05; done"),
        "",
    );
    let app = sh_unit(
        &format!("trap 'date +%s%N > {o}/app.stop; exit 0' TERM; while :; do sleep 0.05; done"),
        "requires = [\"db\"]",
    );
    let supd = Supd::start("depstop", &[("db", &db), ("app", &app)]);
    supd.wait_state("app", "running", Duration::from_secs(10));
    supd.ok(&["stop", "db"]);
    assert_eq!(supd.state_of("db"), "stopped");
    let a = read_ns(&t.path().join("app.stop"));
    let d = read_ns(&t.path().join("db.stop"));
    assert!(a < d, "app must stop before the db it requires");
    // app waits for db, and why says so.
    let why = supd.ok(&["why", "app"]);
    assert!(why.contains("db"), "{why}");
    supd.ok(&["start", "db"]);
    supd.wait_state("app", "running", Duration::from_secs(10));
}

#[test]
fn reaps_a_thousand_orphans() {
    if !can_run("reaps_a_thousand_orphans") {
        return;
    }
    // Each subshell exits at once, orphaning its sleep to supd (PID 1 of
    // the namespace), which must reap all of them when they exit.
    let unit = sh_unit(
        "i=0; while [ $i -lt 1000 ]; do (sleep 0.3 &); i=$((i+1)); done; exec sleep 600",
        "",
    );
    let supd = Supd::start("orphans", &[("forker", &unit)]);
    supd.wait_state("forker", "running", Duration::from_secs(10));
    let me = supd.pid;
    let children = |zombie: bool| -> usize {
        children_of(me)
            .iter()
            .filter(|(_, st)| !zombie || *st == 'Z')
            .count()
    };
    // All 1000 sleeps are reparented and then exit; wait until only the
    // unit's own process is left as supd's child and no zombie remains.
    wait_for("orphans to be reaped", Duration::from_secs(30), || {
        (children(false) == 1 && children(true) == 0).then_some(())
    });
    let log = supd.log_text();
    assert!(log.contains("reaped orphan"), "orphans were not logged");
}

#[test]
fn sigterm_stops_in_reverse_dependency_order_and_exits() {
    if !can_run("sigterm_stops_in_reverse_order") {
        return;
    }
    let t = TempDir::new("term-out");
    let o = t.path().display().to_string();
    let mk = |name: &str, extra: &str| {
        sh_unit(
            &format!(
                "trap 'date +%s%N > {o}/{name}.stop; exit 0' TERM; while :; do sleep 0.05; done"
            ),
            extra,
        )
    };
    let a = mk("a", "");
    let b = mk("b", "requires = [\"a\"]");
    let c = mk("c", "requires = [\"b\"]");
    let mut supd = Supd::start("sigterm", &[("a", &a), ("b", &b), ("c", &c)]);
    supd.wait_state("c", "running", Duration::from_secs(10));
    supd.signal(Signal::SIGTERM);
    let st = supd.wait_exit(Duration::from_secs(20));
    assert!(st.success(), "supd exit status {st}");
    let (ta, tb, tc) = (
        read_ns(&t.path().join("a.stop")),
        read_ns(&t.path().join("b.stop")),
        read_ns(&t.path().join("c.stop")),
    );
    assert!(tc < tb && tb < ta, "stop order c={tc} b={tb} a={ta}");
}

/// What services print as they stop at shutdown reaches their logs, also
/// when every unit's stop ends in the same reaper drain (the output
/// readers may not have run yet when the last unit is down).
#[test]
fn last_words_at_shutdown_reach_each_units_log() {
    if !can_run("last_words_at_shutdown") {
        return;
    }
    let names: Vec<String> = (0..40).map(|i| format!("talker{i}")).collect();
    let texts: Vec<String> = names
        .iter()
        .map(|n| {
            sh_unit(
                &format!("trap 'echo last-words-of-{n}; exit 0' TERM; echo up; while :; do sleep 0.02; done"),
                "",
            )
        })
        .collect();
    let units: Vec<(&str, &str)> = names
        .iter()
        .zip(&texts)
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let mut supd = Supd::start("lastwords", &units);
    for n in &names {
        supd.wait_state(n, "running", Duration::from_secs(20));
    }
    supd.signal(Signal::SIGTERM);
    let st = supd.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "supd exit status {st}");
    let mut missing = Vec::new();
    for n in &names {
        let dir = supd.state.join("logs").join(n);
        let text: String = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        if !text.contains(&format!("last-words-of-{n}")) {
            missing.push(n.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "no last words in the logs of {missing:?}"
    );
}

#[test]
fn stop_timeout_escalates_to_sigkill_of_the_group() {
    if !can_run("stop_timeout_escalates") {
        return;
    }
    let unit = sh_unit(
        "trap '' TERM; sleep 600 & while :; do sleep 0.05; done",
        "[stop]\ntimeout = \"300ms\"",
    );
    let supd = Supd::start("sigkill", &[("stubborn", &unit)]);
    supd.wait_state("stubborn", "running", Duration::from_secs(10));
    let start = std::time::Instant::now();
    supd.ok(&["stop", "stubborn"]);
    assert!(start.elapsed() >= Duration::from_millis(250));
    let u = supd.unit("stubborn");
    assert_eq!(u["state"], "stopped");
    assert!(
        u["last_exit"].as_str().unwrap_or("").contains("SIGKILL"),
        "{u}"
    );
}

#[test]
fn reload_applies_a_valid_set_and_refuses_a_bad_one() {
    if !can_run("reload") {
        return;
    }
    let a = sh_unit("exec sleep 600", "");
    let supd = Supd::start("reload", &[("a", &a)]);
    supd.wait_state("a", "running", Duration::from_secs(10));
    let pid_before = supd.unit("a")["pid"].clone();
    // A broken file: nothing changes, the errors name the file.
    std::fs::write(supd.units.join("b.toml"), "exec = [\"/bin/sh\"\n").unwrap();
    let out = supd.supctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("b.toml"), "{err}");
    assert_eq!(supd.unit("a")["pid"], pid_before);
    assert!(
        supd.status()["units"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["name"] != "b")
    );
    // Fixed: b is added and starts; removing a stops it.
    std::fs::write(supd.units.join("b.toml"), sh_unit("exec sleep 600", "")).unwrap();
    std::fs::remove_file(supd.units.join("a.toml")).unwrap();
    let out = supd.ok(&["reload"]);
    assert!(out.contains("1 added"), "{out}");
    supd.wait_state("b", "running", Duration::from_secs(10));
    wait_for("a to be gone", Duration::from_secs(10), || {
        supd.status()["units"]
            .as_array()?
            .iter()
            .all(|u| u["name"] != "a")
            .then_some(())
    });
}

/// Issue 13 item 6: one invalid unit file at PID-1 boot once meant zero
/// units — the essential console included — and an empty status with no
/// warning. Boot (as PID 1) now starts every valid unit whose requirements
/// are valid, and every essential unit; the rest are skipped and reported
/// in `status`, `why` and the log. `reload` stays strict.
#[test]
fn pid1_boot_skips_invalid_units_and_reports_them() {
    if !can_run("pid1_boot_skips_invalid_units") {
        return;
    }
    let ok = sh_unit("exec sleep 600", "");
    let dep = sh_unit("exec sleep 600", "requires = [\"bad\"]");
    let console = sh_unit("exec sleep 600", "essential = true\nrequires = [\"bad\"]");
    let supd = Supd::start(
        "bootlenient",
        &[
            ("a", &ok),
            (
                "bad",
                "exec = [\"/bin/sleep\", \"600\"\ntype = \"daemon\"\n",
            ),
            ("dep", &dep),
            ("console", &console),
        ],
    );
    supd.wait_state("a", "running", Duration::from_secs(10));
    supd.wait_state("console", "running", Duration::from_secs(10));
    let st = supd.status();
    let names: Vec<&str> = st["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert!(!names.contains(&"bad") && !names.contains(&"dep"), "{st}");
    let problems = st["unit_file_problems"].to_string();
    assert!(
        problems.contains("bad.toml") && problems.contains("dep"),
        "{st}"
    );
    let human = supd.ok(&["status"]);
    assert!(
        human.contains("WARNING") && human.contains("bad"),
        "{human}"
    );
    let why = supd.ok(&["why", "bad"]);
    assert!(
        why.contains("not loaded") && why.contains("bad.toml"),
        "{why}"
    );
    let why = supd.ok(&["why", "dep"]);
    assert!(why.contains("not loaded") && why.contains("bad"), "{why}");
    let out = supd.supctl(&["start", "dep"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not loaded"));
    assert!(supd.log_text().contains("bad.toml"));
    // reload stays strict: still refused while bad.toml is bad.
    let out = supd.supctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    // Fixed: the whole set loads, the skipped units start, the warning goes.
    std::fs::write(supd.units.join("bad.toml"), sh_unit("exec sleep 600", "")).unwrap();
    supd.ok(&["reload"]);
    supd.wait_state("dep", "running", Duration::from_secs(10));
    let st = supd.status();
    assert!(
        st["unit_file_problems"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{st}"
    );
}

#[test]
fn supctl_status_json_shape_and_errors() {
    if !can_run("supctl_status_json") {
        return;
    }
    let a = sh_unit("exec sleep 600", "description = \"A sleeper\"");
    let supd = Supd::start("json", &[("a", &a)]);
    supd.wait_state("a", "running", Duration::from_secs(10));
    let u = supd.unit("a");
    assert_eq!(u["name"], "a");
    assert!(u["pid"].as_i64().unwrap_or(0) > 0, "{u}");
    assert!(u["maintenance"].is_null());
    assert_eq!(u["ready"], true);
    // Unknown unit: exit 1 and a message naming it.
    let out = supd.supctl(&["start", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    // Usage error: exit 2.
    let out = supd.supctl(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    // restart gives a new pid.
    let before = u["pid"].as_i64();
    supd.ok(&["restart", "a"]);
    supd.wait_state("a", "running", Duration::from_secs(10));
    assert_ne!(supd.unit("a")["pid"].as_i64(), before);
    // Human status mentions the unit.
    assert!(supd.ok(&["status"]).contains("a"));
}

#[test]
fn check_reports_every_bad_file() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let out = std::process::Command::new(SUPD)
        .args(["check", "--units"])
        .arg(&dir)
        .output()
        .expect("supd check");
    assert_eq!(out.status.code(), Some(1));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().to_string();
        let stem = name.trim_end_matches(".toml");
        assert!(
            text.contains(&name) || text.contains(&format!(" {stem} ")),
            "{name} not reported:\n{text}"
        );
    }
    let good = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
    let out = std::process::Command::new(SUPD)
        .args(["check", "--units"])
        .arg(&good)
        .output()
        .expect("supd check");
    assert!(
        out.status.success(),
        "units/ must be valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 13 item 3: a duration no clock can hold is a load error naming
/// file:line and the maximum, not a panic in the running supervisor.
#[test]
fn check_bounds_every_duration() {
    let dir = TempDir::new("hugedur");
    std::fs::write(
        dir.path().join("db.toml"),
        "exec = [\"/bin/sleep\", \"600\"]\n[ready]\nkind = \"notify\"\ntimeout = \"300000000000y\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(SUPD)
        .args(["check", "--units"])
        .arg(dir.path())
        .output()
        .expect("supd check");
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "accepted: {text}");
    assert!(
        text.contains("db.toml:4:") && text.contains("ready.timeout") && text.contains("10y"),
        "{text}"
    );
}

#[test]
fn runtime_directory_umask_limits_and_stop_command() {
    if !can_run("runtime_directory_umask_limits") {
        return;
    }
    let t = TempDir::new("proc-env");
    let o = t.path().display().to_string();
    let rundir = format!("supd-test-{}", std::process::id());
    let unit = format!(
        "{}user = \"nobody\"\nruntime_directory = [\"{rundir}\"]\numask = \"0077\"\nlimits = {{ nofile = 1234 }}\n[stop]\nexec = [\"/bin/sh\", \"-c\", \"echo by-exec > {o}/stopped; kill $MAINPID\"]\n",
        sh_unit(
            &format!(
                "touch /run/{rundir}/f; stat -c %a /run/{rundir}/f > {o}/mode; ulimit -n > {o}/nofile; id -u > {o}/uid; exec sleep 600"
            ),
            ""
        )
    );
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let supd = Supd::start("procenv", &[("svc", &unit)]);
    supd.wait_state("svc", "running", Duration::from_secs(10));
    let read = |f: &str| {
        wait_for(f, Duration::from_secs(5), || {
            std::fs::read_to_string(t.path().join(f))
                .ok()
                .filter(|s| !s.is_empty())
        })
        .trim()
        .to_string()
    };
    assert_eq!(read("uid"), "65534");
    assert_eq!(read("mode"), "600", "umask 0077 applied");
    assert_eq!(read("nofile"), "1234");
    let meta = std::fs::metadata(format!("/run/{rundir}")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        65534,
        "runtime dir owned by the unit's user"
    );
    supd.ok(&["stop", "svc"]);
    assert_eq!(read("stopped"), "by-exec");
    assert!(
        supd.unit("svc")["last_exit"]
            .as_str()
            .unwrap_or("")
            .contains("SIGTERM")
    );
    let _ = std::fs::remove_dir_all(format!("/run/{rundir}"));
}

#[test]
fn output_is_captured_with_the_unit_name_inherited_or_discarded() {
    if !can_run("output_is_captured") {
        return;
    }
    let t = TempDir::new("output-out");
    let o = t.path().display().to_string();
    // Each unit prints on stdout and stderr, then says it is done.
    let unit = |tag: &str, mode: &str| {
        sh_unit(
            &format!("echo out-{tag}; echo err-{tag} >&2; touch {o}/{tag}; exec sleep 600"),
            &format!("output = \"{mode}\""),
        )
    };
    let (cap, inh, nul) = (
        unit("cap", "capture"),
        unit("inh", "inherit"),
        unit("nul", "null"),
    );
    let supd = Supd::start("output", &[("cap", &cap), ("inh", &inh), ("nul", &nul)]);
    for tag in ["cap", "inh", "nul"] {
        wait_for(&format!("{tag} ran"), Duration::from_secs(10), || {
            t.path().join(tag).exists().then_some(())
        });
    }
    // Captured lines arrive through supd's reader: wait for them.
    let log = wait_for("captured lines in the log", Duration::from_secs(10), || {
        let l = supd.log_text();
        (l.contains("out-cap")
            && l.contains("err-cap")
            && l.contains("out-inh")
            && l.contains("err-inh"))
        .then_some(l)
    });
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_string()
    };
    // Both streams of a captured unit are tagged with its name.
    assert!(line("out-cap").contains("unit=cap"), "{log}");
    assert!(line("err-cap").contains("unit=cap"), "{log}");
    // Inherited output goes straight to supd's stdout/stderr, untagged.
    assert_eq!(line("out-inh"), "out-inh", "{log}");
    assert_eq!(line("err-inh"), "err-inh", "{log}");
    assert!(
        !log.contains("out-nul") && !log.contains("err-nul"),
        "{log}"
    );
}

/// Bytes waiting in a pipe (FIONREAD).
fn pipe_fill(fd: &std::os::fd::OwnedFd) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r < 0 { 0 } else { n as usize }
}

#[test]
fn a_stalled_log_reader_does_not_stall_supd() {
    if !can_run("stalled_log_reader") {
        return;
    }
    // A real program that floods its output (far more than a pipe holds),
    // then idles; and a unit for the operator to lock.
    let spew = "exec = [\"python3\", \"-c\", \"import sys, time\\nfor i in range(20000): print('spew line %d ' % i + 'x' * 80, flush=True)\\ntime.sleep(600)\"]\n";
    let db = sh_unit("exec sleep 600", "");
    let mut supd = Supd::start_with(
        "stalled-log",
        &[("spew", spew), ("db", &db)],
        Options {
            log_to_pipe: true,
            ..Options::default()
        },
    );
    let pipe = supd.log_pipe.take().expect("log pipe");
    // Nobody reads supd's stderr: wait until the pipe is full.
    wait_for(
        "supd's stderr pipe to fill",
        Duration::from_secs(20),
        || (pipe_fill(&pipe) >= 60 * 1024).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(300));
    // supd must still answer, and act, within a deadline.
    let quick = |args: &[&str]| {
        let t0 = std::time::Instant::now();
        let out = std::process::Command::new(SUPCTL)
            .arg("--socket")
            .arg(&supd.socket)
            .args(["--timeout", "5s"])
            .args(args)
            .output()
            .expect("run supctl");
        assert!(
            out.status.success(),
            "supctl {args:?} with supd's stderr stalled: {}{} (after {:?})",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            t0.elapsed()
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    quick(&["status"]);
    quick(&["maintenance", "on", "db", "--reason", "stalled log test"]);
    let st: serde_json::Value = serde_json::from_str(&quick(&["status", "--json"])).expect("json");
    let db_locked = st["units"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == "db"))
        .map(|u| u["maintenance"].is_array());
    assert_eq!(db_locked, Some(true), "{st}");

    // Once the reader drains the pipe, supd says how many lines it dropped.
    use std::io::Read;
    let mut f = std::fs::File::from(pipe);
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut t) = sink.lock() {
                t.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    wait_for("a report of dropped lines", Duration::from_secs(20), || {
        let t = text.lock().ok()?;
        t.lines()
            .find(|l| l.contains("log lines dropped"))
            .map(|l| l.to_string())
    });
    supd.kill9();
}

fn supd_check(dir: &std::path::Path, as_nobody: bool) -> (Option<i32>, String) {
    let mut cmd = if as_nobody {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            SUPD,
        ]);
        c
    } else {
        std::process::Command::new(SUPD)
    };
    let out = cmd
        .args(["check", "--units"])
        .arg(dir)
        .output()
        .expect("supd check");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Issue 13 item 10: `supd check` reports what certainly fails at spawn
/// (with file:line), and accepts what is valid (an empty argument).
#[test]
fn check_reports_what_fails_at_spawn_and_accepts_empty_arguments() {
    let t = TempDir::new("check-host");
    let good = t.path().join("good");
    std::fs::create_dir_all(&good).unwrap();
    // `redis-server --logfile ""`: an empty argument is an argument.
    std::fs::write(
        good.join("redis.toml"),
        "description = \"x\"\nexec = [\"/bin/sh\", \"-c\", \"exit 0\", \"--logfile\", \"\"]\n",
    )
    .unwrap();
    // A binary on a filesystem not mounted yet is not "missing".
    std::fs::write(
        good.join("late.toml"),
        "exec = [\"/srv/supd-never-mounted/bin/app\"]\n[[mount]]\npath = \"/srv/supd-never-mounted\"\n",
    )
    .unwrap();
    let (code, text) = supd_check(&good, false);
    assert_eq!(code, Some(0), "{text}");

    let bad = t.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let plain = t.path().join("plain-file");
    std::fs::write(&plain, "not a program").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let noexec = format!("exec = [{}]\n", toml_str(&plain.display().to_string()));
    let units = [
        (
            "missing",
            "\nexec = [\"/nonexistent/supd-test/bin/server\"]\n",
        ),
        ("noexec", noexec.as_str()),
        (
            "nouser",
            "exec = [\"/bin/true\"]\n\nuser = \"supd-no-such-user\"\n",
        ),
        (
            "nogroup",
            "exec = [\"/bin/true\"]\ngroup = \"supd-no-such-group\"\n",
        ),
        (
            "probe",
            "exec = [\"/bin/true\"]\n[health]\nexec = [\"/nonexistent/supd-test/probe\"]\n",
        ),
    ];
    for (n, text) in units {
        std::fs::write(bad.join(format!("{n}.toml")), text).unwrap();
    }
    let (code, text) = supd_check(&bad, false);
    assert_eq!(code, Some(1), "{text}");
    for needle in [
        "missing.toml:2",
        "/nonexistent/supd-test/bin/server",
        "noexec.toml:1",
        "not executable",
        "nouser.toml:3",
        "supd-no-such-user",
        "nogroup.toml:2",
        "supd-no-such-group",
        "probe.toml:3",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }

    // Not root: a limit above the hard limit fails at spawn.
    if nix::unistd::geteuid().is_root()
        && std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok()
    {
        let lim = t.path().join("lim");
        std::fs::create_dir_all(&lim).unwrap();
        let (_, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        std::fs::write(
            lim.join("many.toml"),
            format!(
                "exec = [\"/bin/true\"]\nlimits = {{ nofile = {} }}\n",
                hard.saturating_add(1)
            ),
        )
        .unwrap();
        for p in [t.path(), lim.as_path(), &lim.join("many.toml")] {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
        }
        let (code, text) = supd_check(&lim, true);
        assert_eq!(code, Some(1), "{text}");
        assert!(
            text.contains("many.toml:2") && text.contains("hard limit"),
            "{text}"
        );
    }
}

/// Issue 13 item 10, the other side: at boot a unit whose binary is
/// missing is a warning (file:line) and that unit's spawn failure — the
/// other units load and run.
#[test]
fn a_missing_binary_fails_its_unit_not_the_set() {
    if !can_run("missing_binary") {
        return;
    }
    let ok = sh_unit("exec sleep 600", "");
    let missing = "exec = [\"/nonexistent/supd-test/bin/server\"]\n[restart]\npolicy = \"never\"\n";
    let supd = Supd::start("missing-bin", &[("ok", &ok), ("gone", missing)]);
    supd.wait_state("ok", "running", Duration::from_secs(10));
    let why = wait_for("gone's spawn failure", Duration::from_secs(10), || {
        let w = supd.ok(&["why", "gone"]);
        w.contains("/nonexistent/supd-test/bin/server").then_some(w)
    });
    assert!(!why.contains("is running"), "{why}");
    let log = supd.log_text();
    assert!(
        log.contains(
            "gone.toml:1:1: error: exec program /nonexistent/supd-test/bin/server does not exist"
        ),
        "{log}"
    );
}

/// Issue 13 item 12(g): a unit file whose name is not UTF-8 is reported
/// (escaped), not skipped silently.
#[test]
fn a_non_utf8_unit_file_name_is_reported() {
    use std::os::unix::ffi::OsStrExt;
    let t = TempDir::new("nonutf8-name");
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.toml");
    std::fs::write(t.path().join(name), "exec = [\"/bin/true\"]\n").unwrap();
    std::fs::write(t.path().join("ok.toml"), "exec = [\"/bin/true\"]\n").unwrap();
    let (code, text) = supd_check(t.path(), false);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("caf\\xe9"), "{text}");
}
