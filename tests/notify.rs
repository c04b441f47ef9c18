//! sd_notify, complete: what libsystemd services expect of their manager,
//! with real processes (python3 speaks the protocol; `systemd-notify`
//! where installed) under a real supd — and supd as a notify service
//! itself.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use common::*;

/// A python3 one-liner sending `msg` on $NOTIFY_SOCKET.
fn notify(msg: &str) -> String {
    format!(
        "python3 -c 'import os,socket; s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM); s.sendto(b\"{msg}\", os.environ[\"NOTIFY_SOCKET\"])'"
    )
}

fn notify_unit(script: &str, extra: &str) -> String {
    format!(
        "exec = [\"/bin/sh\", \"-c\", {}]\n{extra}\n",
        toml_str(script)
    )
}

#[test]
fn watchdog_variables_are_exported_to_the_main_process() {
    if !can_run("watchdog_env") {
        return;
    }
    let dir = TempDir::new("wdenv");
    let out = dir.path().join("env");
    let script = format!(
        "echo \"$WATCHDOG_USEC $WATCHDOG_PID $$$$\" > {}; {}; while :; do {}; sleep 0.2; done",
        out.display(),
        notify("READY=1"),
        notify("WATCHDOG=1")
    );
    let unit = notify_unit(&script, "[ready]\nkind = \"notify\"\nwatchdog = \"2s\"");
    let supd = Supd::start("wdenv", &[("svc", &unit)]);
    wait_for("ready", Duration::from_secs(20), || {
        (supd.unit("svc")["ready"] == true).then_some(())
    });
    let text = std::fs::read_to_string(&out).unwrap();
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f.len(), 3, "{text}");
    assert_eq!(f[0], "2000000");
    assert_eq!(f[1], f[2], "WATCHDOG_PID is the main process's pid: {text}");
    // It keeps pinging: still running and ready after two periods.
    std::thread::sleep(Duration::from_secs(5));
    let u = supd.unit("svc");
    assert_eq!(u["ready"], true, "{u}");
    assert_eq!(u["restarts"].as_u64().unwrap_or(0), 0, "{u}");
}

#[test]
fn reloading_extend_timeout_errno_and_watchdog_trigger() {
    if !can_run("notify_protocol") {
        return;
    }
    let dir = TempDir::new("notproto");
    let go = dir.path().join("go");
    let seen = dir.path().join("seen");
    // Start: ask for 5 s more than the 1 s start timeout, then be ready
    // after 2 s. Once the test has seen it ready (`seen`): RELOADING=1
    // until `go` exists, then READY=1 with an ERRNO. (Without the `seen`
    // handshake the ready window is two datagrams wide and a loaded
    // machine's poll misses it.)
    let script = format!(
        "{ext}; sleep 2; {ready}; while [ ! -e {seen} ]; do sleep 0.1; done; {reload}; while [ ! -e {go} ]; do sleep 0.1; done; {again}; exec sleep 1000",
        ext = notify("EXTEND_TIMEOUT_USEC=5000000"),
        ready = notify("READY=1"),
        reload = notify("RELOADING=1\\nMONOTONIC_USEC=1"),
        seen = seen.display(),
        go = go.display(),
        again = notify("READY=1\\nSTATUS=serving\\nERRNO=2"),
    );
    let unit = notify_unit(&script, "[ready]\nkind = \"notify\"\ntimeout = \"1s\"");
    let supd = Supd::start("notproto", &[("svc", &unit)]);
    wait_for(
        "ready despite the 1s timeout",
        Duration::from_secs(20),
        || (supd.unit("svc")["ready"] == true).then_some(()),
    );
    std::fs::write(&seen, "").unwrap();
    wait_for("not ready while reloading", Duration::from_secs(10), || {
        (supd.unit("svc")["ready"] == false).then_some(())
    });
    assert_eq!(supd.state_of("svc"), "running");
    std::fs::write(&go, "").unwrap();
    wait_for("ready again", Duration::from_secs(10), || {
        (supd.unit("svc")["ready"] == true).then_some(())
    });
    let st = supd.ok(&["status", "svc"]);
    assert!(st.contains("errno 2"), "{st}");
    assert_eq!(supd.unit("svc")["restarts"].as_u64().unwrap_or(0), 0);

    // WATCHDOG=trigger: handled as a missed watchdog (restart).
    let trig = notify_unit(
        &format!(
            "{}; sleep 0.5; {}; exec sleep 1000",
            notify("READY=1"),
            notify("WATCHDOG=trigger")
        ),
        "[ready]\nkind = \"notify\"\nwatchdog = \"1h\"\n[restart]\npolicy = \"always\"\ndelay = \"1s\"",
    );
    let supd = Supd::start("nottrig", &[("trig", &trig)]);
    wait_for(
        "restarted after WATCHDOG=trigger",
        Duration::from_secs(20),
        || (supd.unit("trig")["restarts"].as_u64().unwrap_or(0) >= 1).then_some(()),
    );
}

#[test]
fn mainpid_moves_the_main_process() {
    if !can_run("mainpid") {
        return;
    }
    // A wrapper starts the real daemon, names it, and exits: the unit
    // stays up, following the daemon.
    let script = format!(
        "sleep 1000 & pid=$!; {}; sleep 0.5; exit 0",
        notify("MAINPID=$pid\\nREADY=1").replace("MAINPID=$pid", "MAINPID='\"$pid\"'")
    );
    let unit = notify_unit(
        &script,
        "[ready]\nkind = \"notify\"\n[restart]\npolicy = \"never\"",
    );
    let supd = Supd::start("mainpid", &[("svc", &unit)]);
    wait_for("ready", Duration::from_secs(20), || {
        (supd.unit("svc")["ready"] == true).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let u = supd.unit("svc");
    assert_eq!(
        u["state"], "running",
        "the wrapper's exit is not the unit's: {u}"
    );
    let pid = u["pid"].as_i64().unwrap().to_string();
    let comm = supd.in_ns(&["cat", &format!("/proc/{pid}/comm")]);
    assert_eq!(String::from_utf8_lossy(&comm.stdout).trim(), "sleep");
    // Stopping the unit stops the daemon.
    supd.ok(&["stop", "svc"]);
    assert!(!supd.in_ns(&["kill", "-0", &pid]).status.success());
}

#[test]
fn readiness_from_a_short_lived_systemd_notify() {
    if !can_run("systemd_notify") {
        return;
    }
    if !Path::new("/usr/bin/systemd-notify").exists() {
        eprintln!(
            "SKIP systemd_notify: /usr/bin/systemd-notify is not installed (./test.sh installs systemd)"
        );
        return;
    }
    // --no-block: systemd-notify has exited (and been reaped) by the time
    // supd reads its datagram.
    let unit = notify_unit(
        "sleep 0.2; systemd-notify --ready --no-block --status=up; exec sleep 1000",
        "user = \"nobody\"\n[ready]\nkind = \"notify\"\ntimeout = \"20s\"",
    );
    // And the blocking form, which waits for supd to have read it.
    let blocking = notify_unit(
        "systemd-notify --ready; exec sleep 1000",
        "[ready]\nkind = \"notify\"\ntimeout = \"20s\"",
    );
    let supd = Supd::start("sdnotify", &[("nb", &unit), ("blk", &blocking)]);
    for u in ["nb", "blk"] {
        wait_for(u, Duration::from_secs(20), || {
            (supd.unit(u)["ready"] == true).then_some(())
        });
    }
}

#[test]
fn supd_tells_its_own_manager_ready_and_stopping() {
    if !can_run("supd_notify") {
        return;
    }
    let dir = TempDir::new("selfnotify");
    let sock_path = dir.path().join("manager.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let slow = notify_unit(
        &format!("sleep 1; {}; exec sleep 1000", notify("READY=1")),
        "[ready]\nkind = \"notify\"",
    );
    let started = std::time::Instant::now();
    let mut supd = Supd::start_with(
        "selfnotify",
        &[("slow", &slow)],
        Options {
            env: vec![("NOTIFY_SOCKET".into(), sock_path.display().to_string())],
            ..Options::default()
        },
    );
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1 from supd");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.contains("READY=1"), "{msg}");
    // Only once boot settled: after the slow unit became ready.
    assert!(started.elapsed() >= Duration::from_millis(900), "{msg}");
    assert_eq!(supd.unit("slow")["ready"], true);
    supd.signal(nix::sys::signal::Signal::SIGTERM);
    let n = sock.recv(&mut buf).expect("STOPPING=1 from supd");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    supd.wait_exit(Duration::from_secs(20));
}
