//! Invariant 9, a unit is all of its processes: with cgroup v2, a daemon
//! that double-forks out of its process group is still the unit's, is
//! stopped with it, and never piles up copies.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// A classic daemon: fork, setsid, fork, the parents exit; the daemon's
/// command line carries `DAEMON:<token>`. With `stubborn`, it ignores
/// SIGTERM (only SIGKILL ends it).
const DAEMON: &str = r#"
import os, sys, time
token, stubborn = sys.argv[1], sys.argv[2] == "stubborn"
flag = token + "/daemon-up"
if os.fork() > 0:
    # Like a start script: exit once the daemon is up (bounded).
    for _ in range(500):
        if os.path.exists(flag):
            os.unlink(flag)
            break
        time.sleep(0.01)
    os._exit(0)
os.setsid()
if os.fork() > 0:
    os._exit(0)
code = "import signal, sys, time\n"
if stubborn:
    code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
code += "open(sys.argv[1], 'w').close()\ntime.sleep(600)\n"
os.execv(sys.executable, [sys.executable, "-c", code, flag, "DAEMON:" + token])
"#;

fn write_daemon(dir: &Path) -> PathBuf {
    let p = dir.join("daemon.py");
    std::fs::write(&p, DAEMON).expect("write daemon.py");
    p
}

fn skip(test: &str) -> bool {
    !can_run(test) || !cgroup_writable(test)
}

#[test]
fn double_forking_daemon_is_stopped_by_stop_and_maintenance_on() {
    if skip("double_forking_daemon_is_stopped") {
        return;
    }
    let t = TempDir::new("cg-daemon");
    let script = write_daemon(t.path());
    let token = t.path().display().to_string();
    // The main process stays (a wrapper script); the daemon it starts
    // leaves its process group and session, and ignores SIGTERM.
    let unit = sh_unit(
        &format!(
            "python3 {} {token} stubborn; exec sleep 600",
            script.display()
        ),
        "[stop]\ntimeout = \"1s\"",
    );
    let supd = Supd::start("cg-daemon", &[("d", &unit)]);
    let marker = format!("DAEMON:{token}");
    wait_for("the daemon to run", Duration::from_secs(10), || {
        (processes_with(&marker).len() == 1).then_some(())
    });
    let u = supd.unit("d");
    assert_eq!(u["containment"], "cgroup", "{u}");
    let cg = u["cgroup"].as_str().expect("cgroup path").to_string();
    assert!(cg.ends_with("/d.unit"), "{cg}");

    let t0 = Instant::now();
    supd.ok(&["stop", "d"]);
    // `stop` answered: nothing of the unit may be left, the daemon that
    // ignored SIGTERM included (it got SIGKILL at the timeout).
    assert_eq!(processes_with(&token), Vec::<i32>::new(), "after stop");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "the stubborn daemon cannot be gone before the stop timeout"
    );
    assert_eq!(supd.state_of("d"), "stopped");

    supd.ok(&["start", "d"]);
    wait_for("the daemon to run again", Duration::from_secs(10), || {
        (processes_with(&marker).len() == 1).then_some(())
    });
    supd.ok(&["maintenance", "on", "d", "--reason", "disk swap"]);
    assert_eq!(
        processes_with(&token),
        Vec::<i32>::new(),
        "after maintenance on"
    );
}

#[test]
fn restart_always_never_piles_up_copies() {
    if skip("restart_always_never_piles_up_copies") {
        return;
    }
    let t = TempDir::new("cg-pile");
    let script = write_daemon(t.path());
    let token = t.path().display().to_string();
    // The main process exits as soon as the daemon is on its way: to a
    // supervisor that only knows its process group, the service "exited"
    // and is restarted, leaving a daemon behind each time.
    let unit = format!(
        "exec = [\"python3\", {}, {}, \"meek\"]\n[restart]\npolicy = \"always\"\ndelay = \"50ms\"\nmax_delay = \"100ms\"\nburst = 1000\ninterval = \"1h\"\n",
        toml_str(&script.display().to_string()),
        toml_str(&token)
    );
    let supd = Supd::start("cg-pile", &[("d", &unit)]);
    let marker = format!("DAEMON:{token}");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut most = 0;
    let mut seen = 0;
    while Instant::now() < deadline {
        let n = processes_with(&marker).len();
        most = most.max(n);
        seen += usize::from(n > 0);
        std::thread::sleep(Duration::from_millis(10));
    }
    let restarts = supd.unit("d")["restarts"].as_u64().unwrap_or(0);
    assert!(
        restarts >= 3,
        "the service should have restarted: {restarts}"
    );
    assert!(seen > 0, "the daemon never ran");
    assert!(most <= 1, "{most} daemons alive at once");
}
