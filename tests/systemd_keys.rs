//! The unit keys systemd units need, with real processes under a real
//! supd: start/stop helper commands, reload commands, conditions,
//! forking daemons with a pid file, environment files and substitution.

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
fn start_and_stop_commands_run_in_order_around_the_main_process() {
    if !can_run("helpers_order") {
        return;
    }
    let dir = TempDir::new("helpers");
    let log = dir.path().join("log");
    let l = log.display();
    let unit = format!(
        r#"exec = ["/bin/sh", "-c", "echo main $$$$ >> {l}; exec sleep 1000"]
exec_start_pre = [["/bin/sh", "-c", "echo pre1 >> {l}"], ["-/bin/sh", "-c", "echo pre2-fails >> {l}; exit 3"]]
exec_start_post = ["/bin/sh", "-c", "echo post $MAINPID >> {l}"]
exec_stop_post = ["/bin/sh", "-c", "sleep 0.3; echo stop-post >> {l}"]
reload_exec = [["/bin/sh", "-c", "echo reload $MAINPID >> {l}"]]
[restart]
policy = "always"
delay = "100ms"
"#
    );
    let supd = Supd::start("helpers", &[("svc", &unit)]);
    wait_for("post command", Duration::from_secs(10), || {
        (lines(&log).len() >= 4).then_some(())
    });
    let l0 = lines(&log);
    assert_eq!(l0[0], "pre1");
    assert_eq!(l0[1], "pre2-fails", "`-` ignores its failure: {l0:?}");
    // The post command runs beside the main process (as in systemd):
    // their lines may come in either order.
    let main_pid = l0[2..4]
        .iter()
        .find_map(|x| x.strip_prefix("main "))
        .unwrap_or_else(|| panic!("main line: {l0:?}"))
        .to_string();
    assert!(
        l0[2..4].contains(&format!("post {main_pid}")),
        "post sees $MAINPID: {l0:?}"
    );
    supd.ok(&["reload-unit", "svc"]);
    wait_for("reload command", Duration::from_secs(10), || {
        lines(&log)
            .contains(&format!("reload {main_pid}"))
            .then_some(())
    });
    // A crash: the stop-post command finishes before the restart begins.
    supd.in_ns_ok(&["kill", "-9", &main_pid]);
    wait_for("restart", Duration::from_secs(10), || {
        (lines(&log)
            .iter()
            .filter(|x| x.starts_with("main "))
            .count()
            == 2)
            .then_some(())
    });
    let l1 = lines(&log);
    let stop_post = l1
        .iter()
        .position(|x| x == "stop-post")
        .expect("stop-post ran");
    let second_pre = l1.iter().rposition(|x| x == "pre1").expect("pre again");
    assert!(
        stop_post < second_pre,
        "stop-post before the restart: {l1:?}"
    );
}

#[test]
fn a_failing_start_command_fails_the_start_and_the_main_never_runs() {
    if !can_run("pre_fails") {
        return;
    }
    let dir = TempDir::new("prefail");
    let marker = dir.path().join("main-ran");
    let unit = format!(
        "exec = [\"/bin/sh\", \"-c\", \"touch {}; exec sleep 1000\"]\nexec_start_pre = [\"/bin/false\"]\n[restart]\npolicy = \"never\"\n",
        marker.display()
    );
    let supd = Supd::start("prefail", &[("svc", &unit)]);
    supd.wait_state("svc", "failed", Duration::from_secs(10));
    assert!(!marker.exists(), "main ran after a failed pre command");
    let why = supd.ok(&["why", "svc"]);
    assert!(
        why.contains("pre command") && why.contains("/bin/false"),
        "{why}"
    );
}

#[test]
fn a_failed_condition_skips_and_dependents_still_start() {
    if !can_run("conditions") {
        return;
    }
    let dir = TempDir::new("cond");
    let flag = dir.path().join("enabled");
    let opt = format!(
        "exec = [\"sleep\", \"1000\"]\ncondition_path_exists = \"{}\"\n",
        flag.display()
    );
    let app = "exec = [\"sleep\", \"1000\"]\nrequires = [\"opt\"]\n";
    let supd = Supd::start("cond", &[("opt", &opt), ("app", app)]);
    supd.wait_state("opt", "skipped", Duration::from_secs(10));
    supd.wait_state("app", "running", Duration::from_secs(10));
    assert!(supd.ok(&["why", "opt"]).contains("condition_path_exists"));
    // The condition is checked again at the next start.
    std::fs::write(&flag, "").unwrap();
    supd.ok(&["start", "opt"]);
    supd.wait_state("opt", "running", Duration::from_secs(10));
}

#[test]
fn a_forking_daemon_is_followed_through_its_pid_file() {
    if !can_run("forking") {
        return;
    }
    let dir = TempDir::new("forking");
    let pidfile = dir.path().join("d.pid");
    // Daemonizes the classic way: the start command forks, the child
    // writes the pid file a little later, and the command exits 0.
    let start = format!(
        "(setsid sh -c 'sleep 0.3; echo $$$$ > {p}; exec sleep 1000' &) ; exit 0",
        p = pidfile.display()
    );
    let unit = format!(
        "type = \"forking\"\npid_file = \"{}\"\nexec = [\"/bin/sh\", \"-c\", {}]\n[ready]\ntimeout = \"20s\"\n",
        pidfile.display(),
        toml_str(&start)
    );
    let dep = "exec = [\"sleep\", \"1000\"]\nrequires = [\"daemon\"]\n";
    let supd = Supd::start("forking", &[("daemon", &unit), ("dep", dep)]);
    supd.wait_state("dep", "running", Duration::from_secs(20));
    let u = supd.unit("daemon");
    let pid = u["pid"].as_i64().expect("main pid") as i32;
    let in_file: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, in_file, "the main process is the pid file's");
    // Stopping it stops the daemon (not just the long-gone start command).
    supd.ok(&["stop", "daemon"]);
    let st = supd.unit("daemon");
    assert!(st["pid"].is_null(), "{st}");
    let out = supd.in_ns(&["kill", "-0", &pid.to_string()]);
    assert!(!out.status.success(), "daemon {pid} still alive");
}

#[test]
fn environment_files_and_substitution_reach_the_service() {
    if !can_run("envfile") {
        return;
    }
    let dir = TempDir::new("envfile");
    let env = dir.path().join("defaults");
    std::fs::write(&env, "OPTS=\"one two\"\n").unwrap();
    let out = dir.path().join("argv");
    let unit = format!(
        "exec = [\"/bin/sh\", \"-c\", \"echo \\\"$0|$1|$2\\\" > {}; exec sleep 1000\", \"$OPTS\", \"${{MODE}}\"]\nenv = {{ MODE = \"fast\" }}\nenv_file = [\"{}\", \"-/nonexistent/optional\"]\n",
        out.display(),
        env.display()
    );
    let supd = Supd::start("envfile", &[("svc", &unit)]);
    supd.wait_state("svc", "running", Duration::from_secs(10));
    wait_for("argv written", Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&out).ok()?;
        (!t.is_empty()).then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().trim(),
        "one|two|fast"
    );
}

#[test]
fn templates_are_instantiated_by_symlink_and_by_dependency() {
    if !can_run("templates") {
        return;
    }
    let dir = TempDir::new("tpl");
    let out = dir.path().join("out");
    let tpl = format!(
        "exec = [\"/bin/sh\", \"-c\", \"echo %i %I > {}/%i.ran; exec sleep 1000\"]\n",
        out.display()
    );
    std::fs::create_dir_all(&out).unwrap();
    let app = "exec = [\"sleep\", \"1000\"]\nrequires = [\"worker@b-c\"]\n";
    let supd = Supd::start("tpl", &[("worker@", &tpl), ("app", app)]);
    supd.wait_state("app", "running", Duration::from_secs(10));
    assert_eq!(
        std::fs::read_to_string(out.join("b-c.ran")).unwrap().trim(),
        "b-c b/c"
    );
    // `supctl enable`'s way: a symlink to the template, picked up on reload.
    std::os::unix::fs::symlink("worker@.toml", supd.units.join("worker@x.toml")).unwrap();
    supd.ok(&["reload"]);
    supd.wait_state("worker@x", "running", Duration::from_secs(10));
    // The template itself is not a unit.
    let st = supd.status();
    assert!(
        !st["units"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "worker@"),
        "{st}"
    );
}

#[test]
fn a_completed_oneshot_runs_its_stop_command_when_stopped() {
    if !can_run("oneshot_stop") {
        return;
    }
    let dir = TempDir::new("oneshot-stop");
    let log = dir.path().join("log");
    let unit = format!(
        "type = \"oneshot\"\nexec = [\"/bin/sh\", \"-c\", \"echo up >> {l}\"]\n[stop]\nexec = [\"/bin/sh\", \"-c\", \"echo down >> {l}\"]\n",
        l = log.display()
    );
    let supd = Supd::start("oneshotstop", &[("rules", &unit)]);
    supd.wait_state("rules", "done", Duration::from_secs(10));
    supd.ok(&["stop", "rules"]);
    assert_eq!(lines(&log), ["up", "down"]);
    assert_eq!(supd.state_of("rules"), "stopped");
}
