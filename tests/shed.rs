//! Issue 15, pressure-aware shedding on the host: a real supd (in its own
//! PID and mount namespace) watches its cgroup subtree's `cpu.pressure`
//! through kernel PSI triggers; a real CPU hog run as a unit drives the
//! pressure over a low threshold; the optional unit is shed (an event, an
//! audit record, a metric) and comes back once the hog is stopped.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Busy processes, more than this machine has CPUs, so each waits for a
/// CPU most of the time (the "some" CPU pressure of supd's subtree).
const HOG: &str = "import os\nfor _ in range(2):\n    os.fork()\nwhile True:\n    pass\n";

fn psi_available(test: &str) -> bool {
    if !std::path::Path::new("/proc/pressure/cpu").exists() {
        eprintln!(
            "SKIP {test}: the kernel has no PSI (/proc/pressure is missing; boot with psi=1)"
        );
        return false;
    }
    // Arming needs write access to the pressure file (root here); without
    // CAP_SYS_RESOURCE the window must be a multiple of 2s, which [shed]
    // below uses.
    match supd::world::psi::arm(
        std::path::Path::new("/proc/pressure/cpu"),
        "some 500000 2000000",
    ) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIP {test}: cannot arm a PSI trigger on /proc/pressure/cpu: {e}");
            false
        }
    }
}

fn spawn_events(supd: &Supd) -> (std::process::Child, std::sync::mpsc::Receiver<Value>) {
    let mut child = Command::new(SUPCTL)
        .arg("--socket")
        .arg(&supd.socket)
        .args(["events", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("supctl events");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            let Ok(v) = serde_json::from_str::<Value>(&l) else {
                continue;
            };
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn await_event(
    rx: &std::sync::mpsc::Receiver<Value>,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) if pred(&v) => return v,
            Ok(_) => {}
            Err(_) => panic!("no event: {what} within {timeout:?}"),
        }
    }
}

fn metric(port: u16, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_cpu_hog_sheds_the_optional_unit_and_it_returns_when_the_hog_stops() {
    let test = "shed_under_cpu_pressure";
    if !can_run(test) || !cgroup_writable(test) || !psi_available(test) {
        return;
    }
    let port = free_port();
    let config = "\
[shed]
source = \"subtree\"
resources = [\"cpu\"]
above = \"10%\"
below = \"3%\"
window = \"2s\"
shed_after = \"2s\"
restore_after = \"6s\"
jitter = \"1s\"
";
    let extra = "priority = \"optional\"\n";
    let spare = format!("exec = [\"sleep\", \"600\"]\n{extra}");
    let keep = "exec = [\"sleep\", \"600\"]\n";
    let mut supd = Supd::start_with(
        "shed-host",
        &[("spare", &spare), ("keep", keep)],
        Options {
            config: Some(config.to_string()),
            extra_args: vec!["--metrics".into(), format!("127.0.0.1:{port}")],
            ..Options::default()
        },
    );
    supd.wait_state("spare", "running", Duration::from_secs(10));
    supd.wait_state("keep", "running", Duration::from_secs(10));
    let log = supd.log_text();
    assert!(
        log.contains("[shed]: watching") && log.contains("cpu.pressure"),
        "supd did not arm its triggers:\n{log}"
    );
    let (mut events, rx) = spawn_events(&supd);
    // Subscribed once a change shows (a restart of `keep`).
    wait_for(
        "supctl events to subscribe",
        Duration::from_secs(20),
        || {
            supd.ok(&["restart", "keep"]);
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Ok(v) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                if v["event"] == "state" && v["unit"] == "keep" {
                    return Some(());
                }
            }
            None
        },
    );

    // The hog: a critical unit (never shed), added by a reload.
    let hog = format!(
        "exec = [\"python3\", \"-c\", {}]\npriority = \"critical\"\n[stop]\ntimeout = \"2s\"\n",
        toml_str(HOG)
    );
    std::fs::write(supd.units.join("hog.toml"), hog).expect("write hog unit");
    let hog_started = Instant::now();
    supd.ok(&["reload"]);
    supd.wait_state("hog", "running", Duration::from_secs(10));

    let shed = await_event(
        &rx,
        "spare shed under pressure",
        Duration::from_secs(60),
        |v| v["event"] == "shed" && v["by"] == "pressure" && v["shed"] == true,
    );
    eprintln!(
        "shed {:.1}s after the hog started: {shed}",
        hog_started.elapsed().as_secs_f64()
    );
    assert_eq!(shed["resource"], "cpu", "{shed}");
    assert_eq!(shed["units"], serde_json::json!(["spare"]), "{shed}");
    wait_for("spare to be down", Duration::from_secs(15), || {
        let s = supd.state_of("spare");
        (s != "running" && s != "stopping").then_some(())
    });
    assert_eq!(supd.state_of("keep"), "running");
    assert_eq!(supd.state_of("hog"), "running");
    assert_eq!(supd.status()["pressure_shed"], "optional");
    let human = supd.ok(&["status"]);
    assert!(
        human.contains("shedding under pressure: optional"),
        "{human}"
    );
    let why = supd.ok(&["why", "spare"]);
    assert!(why.contains("shed under pressure"), "{why}");
    assert!(metric(port, "supd_shed_step").is_some_and(|v| v >= 1.0));
    assert!(metric(port, "supd_units_shed").is_some_and(|v| v >= 1.0));

    // The hog stops: pressure falls; after `restore_after` of quiet the
    // optional unit starts again (within the jitter).
    supd.ok(&["stop", "hog"]);
    let stopped = Instant::now();
    // (Pressure may have lasted long enough for a second step, which
    // sheds nothing here: restores come back one step at a time.)
    let back = await_event(&rx, "spare restored", Duration::from_secs(60), |v| {
        v["event"] == "shed" && v["by"] == "pressure" && v["shed"] == false && v["level"] == "none"
    });
    eprintln!(
        "restored {:.1}s after the hog stopped: {back}",
        stopped.elapsed().as_secs_f64()
    );
    assert_eq!(back["units"], serde_json::json!(["spare"]), "{back}");
    supd.wait_state("spare", "running", Duration::from_secs(10));
    assert_eq!(metric(port, "supd_shed_step"), Some(0.0));
    assert!(supd.status()["pressure_shed"].is_null());
    assert!(
        metric(
            port,
            "supd_shed_changes_total{by=\"pressure\",direction=\"shed\"}"
        )
        .is_some_and(|v| v >= 1.0)
    );
    assert!(
        metric(
            port,
            "supd_pressure_events_total{resource=\"cpu\",threshold=\"above\"}"
        )
        .is_some_and(|v| v >= 1.0)
    );
    // Both changes are in the audit log.
    let audit = supd.ok(&["audit", "--json"]);
    assert!(audit.contains("shed (pressure)"), "{audit}");
    assert!(audit.contains("unshed (pressure)"), "{audit}");

    let _ = events.kill();
    let _ = events.wait();
    supd.signal(nix::sys::signal::Signal::SIGTERM);
    supd.wait_exit(Duration::from_secs(20));
    remove_cgroups(&supd.state);
}
