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
