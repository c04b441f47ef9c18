//! Readiness, health probes and careful restarts with real processes and
//! sockets (invariants 5 and 6).

mod common;

use std::time::Duration;

use common::*;

fn stamp(path: &std::path::Path) -> u128 {
    wait_for(
        &format!("timestamp in {}", path.display()),
        Duration::from_secs(10),
        || std::fs::read_to_string(path).ok()?.trim().parse().ok(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A python TCP server that starts listening after `delay` seconds and
/// records when it did.
fn tcp_server(port: u16, delay: f32, stamp: &std::path::Path) -> String {
    format!(
        "import socket,time\ntime.sleep({delay})\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',{port}))\ns.listen(16)\nopen('{}','w').write(str(time.time_ns()))\nwhile True:\n  c,_=s.accept(); c.close()\n",
        stamp.display()
    )
}

#[test]
fn dependent_waits_for_tcp_readiness() {
    if !can_run("dependent_waits_for_tcp_readiness") {
        return;
    }
    let out = TempDir::new("tcp-out");
    let port = free_port();
    let srv = tcp_server(port, 2.0, &out.path().join("listening"));
    let db = format!(
        "exec = [\"python3\", \"-c\", {}]\n[ready]\nkind = \"probe\"\n[health]\ntcp = \"127.0.0.1:{port}\"\ninterval = \"5s\"\ntimeout = \"1s\"\n",
        toml_str(&srv)
    );
    let app = sh_unit(
        &format!("date +%s%N > {}/app; exec sleep 600", out.path().display()),
        "requires = [\"db\"]",
    );
    let supd = Supd::start("tcpready", &[("db", &db), ("app", &app)]);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(supd.state_of("db"), "starting");
    assert_eq!(supd.state_of("app"), "waiting");
    let why = supd.ok(&["why", "app"]);
    assert!(why.contains("db"), "{why}");
    supd.wait_state("app", "running", Duration::from_secs(15));
    let listening = stamp(&out.path().join("listening"));
    let app_started = stamp(&out.path().join("app"));
    assert!(
        app_started > listening,
        "app started before db accepted connections"
    );
}

#[test]
fn failing_http_endpoint_gets_the_unit_restarted() {
    if !can_run("failing_http_endpoint") {
        return;
    }
    let out = TempDir::new("http-out");
    let port = free_port();
    let runs = out.path().join("runs");
    // Healthy for the first 3 requests of each run, then 500s.
    let srv = format!(
        "import http.server\nopen('{runs}','a').write('run\\n')\nn=[0]\nclass H(http.server.BaseHTTPRequestHandler):\n  def do_GET(self):\n    n[0]+=1\n    self.send_response(200 if n[0]<=3 else 500); self.end_headers()\n  def log_message(self,*a): pass\nhttp.server.HTTPServer(('127.0.0.1',{port}),H).serve_forever()\n",
        runs = runs.display()
    );
    let unit = format!(
        "exec = [\"python3\", \"-c\", {}]\n[ready]\nkind = \"probe\"\n[health]\nhttp = \"http://127.0.0.1:{port}/healthz\"\ninterval = \"200ms\"\ntimeout = \"1s\"\nfailure_threshold = 2\n[restart]\npolicy = \"always\"\ndelay = \"100ms\"\nburst = 10\n",
        toml_str(&srv)
    );
    let supd = Supd::start("httpfail", &[("web", &unit)]);
    wait_for("a probe-driven restart", Duration::from_secs(20), || {
        let n = std::fs::read_to_string(&runs).ok()?.lines().count();
        (n >= 2).then_some(())
    });
    let u = supd.unit("web");
    assert!(u["restarts"].as_u64().unwrap_or(0) >= 1, "{u}");
}

#[test]
fn sd_notify_readiness_and_status_text() {
    if !can_run("sd_notify_readiness") {
        return;
    }
    let out = TempDir::new("notify-out");
    // A minimal sd_notify client: one datagram to $NOTIFY_SOCKET.
    let client = format!(
        "import os,socket,time\ntime.sleep(0.7)\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\nopen('{}','w').write(str(time.time_ns()))\ns.sendto(b'READY=1\\nSTATUS=Accepting connections',os.environ['NOTIFY_SOCKET'])\ntime.sleep(600)\n",
        out.path().join("ready").display()
    );
    let db = format!(
        "exec = [\"python3\", \"-c\", {}]\n[ready]\nkind = \"notify\"\n",
        toml_str(&client)
    );
    let app = sh_unit(
        &format!("date +%s%N > {}/app; exec sleep 600", out.path().display()),
        "requires = [\"db\"]",
    );
    let supd = Supd::start("notify", &[("db", &db), ("app", &app)]);
    supd.wait_state("app", "running", Duration::from_secs(10));
    assert!(stamp(&out.path().join("app")) > stamp(&out.path().join("ready")));
    let u = supd.unit("db");
    assert_eq!(u["status_text"], "Accepting connections", "{u}");
    assert_eq!(u["ready"], true);
}

#[test]
fn forged_notification_is_ignored() {
    if !can_run("forged_notification") {
        return;
    }
    let db = "exec = [\"/bin/sleep\", \"600\"]\n[ready]\nkind = \"notify\"\n";
    let supd = Supd::start("forged", &[("db", db)]);
    supd.wait_state("db", "starting", Duration::from_secs(10));
    let notify = supd.socket.parent().unwrap().join("notify.sock");
    // The test process is not in db's process group (nor its namespace).
    let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
    s.send_to(b"READY=1\nSTATUS=forged", &notify).unwrap();
    wait_for("the forgery to be logged", Duration::from_secs(5), || {
        supd.log_text().contains("ignoring sd_notify").then_some(())
    });
    let u = supd.unit("db");
    assert_eq!(u["state"], "starting", "{u}");
    assert!(u["status_text"].is_null(), "{u}");
}

#[test]
fn crash_loop_backs_off_with_jitter_then_fails() {
    if !can_run("crash_loop") {
        return;
    }
    let out = TempDir::new("loop-out");
    let runs = out.path().join("runs");
    let unit = sh_unit(
        &format!("date +%s%N >> {}; exit 1", runs.display()),
        "[restart]\npolicy = \"on-failure\"\ndelay = \"100ms\"\nmax_delay = \"2s\"\nburst = 5\ninterval = \"1m\"",
    );
    let supd = Supd::start("crashloop", &[("flappy", &unit)]);
    supd.wait_state("flappy", "failed", Duration::from_secs(20));
    let why = supd.ok(&["why", "flappy"]);
    assert!(why.contains("start limit"), "{why}");
    let stamps: Vec<u128> = std::fs::read_to_string(&runs)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    // First start plus `burst` restarts.
    assert_eq!(stamps.len(), 6, "{stamps:?}");
    let gaps: Vec<f64> = stamps
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e6)
        .collect();
    eprintln!("crash-loop gaps (ms): {gaps:?}");
    // Ceilings 100, 200, 400, 800, 1600 ms with jitter in [ceil/2, ceil].
    for (i, g) in gaps.iter().enumerate() {
        let ceil = 100.0 * (1u32 << i) as f64;
        assert!(
            *g >= ceil / 2.0 - 5.0 && *g <= ceil + 500.0,
            "gap {i} = {g} ms outside [{}, {}]",
            ceil / 2.0,
            ceil
        );
    }
    assert!(gaps[4] > gaps[0], "backoff did not grow: {gaps:?}");
    // An operator start brings it back (and clears the budget).
    supd.ok(&["start", "flappy"]);
    wait_for("a new run", Duration::from_secs(5), || {
        let n = std::fs::read_to_string(&runs).ok()?.lines().count();
        (n > 6).then_some(())
    });
}

#[test]
fn max_parallel_starts_caps_units_starting_at_once() {
    if !can_run("max_parallel_starts") {
        return;
    }
    let out = TempDir::new("cap-out");
    let o = out.path().display().to_string();
    let mut units = Vec::new();
    for i in 0..50 {
        let client = format!(
            "import os,socket,time\nopen('{o}/{i}.start','w').write(str(time.time_ns()))\ntime.sleep(0.15)\nopen('{o}/{i}.ready','w').write(str(time.time_ns()))\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.sendto(b'READY=1',os.environ['NOTIFY_SOCKET'])\ntime.sleep(600)\n"
        );
        units.push((
            format!("n{i:02}"),
            format!(
                "exec = [\"python3\", \"-c\", {}]\n[ready]\nkind = \"notify\"\n",
                toml_str(&client)
            ),
        ));
    }
    let refs: Vec<(&str, &str)> = units
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    let supd = Supd::start_with(
        "cap",
        &refs,
        Options {
            extra_args: vec!["--max-parallel-starts".into(), "4".into()],
            ..Options::default()
        },
    );
    wait_for("all 50 ready", Duration::from_secs(60), || {
        let st = supd.status();
        st["units"]
            .as_array()?
            .iter()
            .all(|u| u["state"] == "running")
            .then_some(())
    });
    // From the services' own clocks: at no instant were more than 4
    // between their first instruction and READY.
    let mut ev: Vec<(u128, i32)> = Vec::new();
    for i in 0..50 {
        ev.push((stamp(&out.path().join(format!("{i}.start"))), 1));
        ev.push((stamp(&out.path().join(format!("{i}.ready"))), -1));
    }
    ev.sort();
    let (mut cur, mut max) = (0, 0);
    for (_, d) in ev {
        cur += d;
        max = max.max(cur);
    }
    assert!(max <= 4, "{max} units were starting at once");
    assert!(max >= 2, "the cap was never used ({max})");
}

#[test]
fn shed_stops_low_priority_units_until_unshed() {
    if !can_run("shed") {
        return;
    }
    let opt = sh_unit("exec sleep 600", "priority = \"optional\"");
    let crit = sh_unit("exec sleep 600", "priority = \"critical\"");
    let supd = Supd::start("shed", &[("batch", &opt), ("db", &crit)]);
    supd.wait_state("batch", "running", Duration::from_secs(10));
    supd.ok(&["shed", "optional"]);
    supd.wait_state("batch", "waiting", Duration::from_secs(10));
    assert_eq!(supd.state_of("db"), "running");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(supd.state_of("batch"), "waiting");
    supd.ok(&["unshed"]);
    supd.wait_state("batch", "running", Duration::from_secs(10));
}

#[test]
fn fd_readiness_line_gates_dependents() {
    if !can_run("fd_readiness") {
        return;
    }
    let out = TempDir::new("fd-out");
    let o = out.path().display().to_string();
    // s6-style: write a newline to fd 5 when ready.
    let db = sh_unit(
        &format!("sleep 0.5; date +%s%N > {o}/ready; echo >&5; exec sleep 600"),
        "[ready]\nkind = \"fd\"\nfd = 5",
    );
    let app = sh_unit(
        &format!("date +%s%N > {o}/app; exec sleep 600"),
        "requires = [\"db\"]",
    );
    let supd = Supd::start("fdready", &[("db", &db), ("app", &app)]);
    supd.wait_state("app", "running", Duration::from_secs(10));
    assert!(stamp(&out.path().join("app")) > stamp(&out.path().join("ready")));
}

#[test]
fn failing_readiness_probe_marks_not_ready_without_restart() {
    if !can_run("readiness_probe") {
        return;
    }
    let out = TempDir::new("rdy-out");
    let flag = out.path().join("serving");
    let runs = out.path().join("runs");
    std::fs::write(&flag, "").unwrap();
    let db = format!(
        "{}\n[ready]\nkind = \"probe\"\n[readiness]\nexec = [\"/bin/test\", \"-e\", {}]\ninterval = \"100ms\"\nfailure_threshold = 2\n[restart]\npolicy = \"always\"\ndelay = \"50ms\"\n",
        sh_unit(
            &format!("echo run >> {}; exec sleep 600", runs.display()),
            ""
        ),
        toml_str(&flag.display().to_string())
    );
    let app = sh_unit("exec sleep 600", "requires = [\"db\"]");
    let supd = Supd::start("rdyprobe", &[("db", &db), ("app", &app)]);
    supd.wait_state("app", "running", Duration::from_secs(10));
    // Overloaded: the readiness probe fails. Not ready, not restarted, and
    // the running dependent stays.
    std::fs::remove_file(&flag).unwrap();
    wait_for("db not ready", Duration::from_secs(10), || {
        (supd.unit("db")["ready"] == false).then_some(())
    });
    assert_eq!(supd.state_of("db"), "running");
    assert_eq!(supd.state_of("app"), "running");
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 1);
    std::fs::write(&flag, "").unwrap();
    wait_for("db ready again", Duration::from_secs(10), || {
        (supd.unit("db")["ready"] == true).then_some(())
    });
}

/// Issue 13 item 7: a `notify` service that takes a while to come up (a
/// database in crash recovery) refuses its health probe until it is ready;
/// those failures must not kill it — `[ready] timeout` governs start-up.
#[test]
fn health_probe_does_not_kill_a_notify_unit_still_starting() {
    if !can_run("health_before_ready") {
        return;
    }
    let out = TempDir::new("slowstart-out");
    let port = free_port();
    let starts = out.path().join("starts");
    // Records each start, "recovers" for 4 s (nothing listening), then
    // listens and says READY=1.
    let server = format!(
        "import os,socket,time\nopen('{starts}','a').write('%d\\n' % os.getpid())\ntime.sleep(4)\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',{port}))\ns.listen(16)\nn=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\nn.sendto(b'READY=1',os.environ['NOTIFY_SOCKET'])\nwhile True:\n  c,_=s.accept(); c.close()\n",
        starts = starts.display()
    );
    let db = format!(
        "exec = [\"python3\", \"-c\", {}]\n[ready]\nkind = \"notify\"\ntimeout = \"2m\"\n[health]\ntcp = \"127.0.0.1:{port}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nfailure_threshold = 2\n[restart]\npolicy = \"always\"\ndelay = \"100ms\"\n",
        toml_str(&server)
    );
    let supd = Supd::start("slowstart", &[("db", &db)]);
    wait_for("db ready", Duration::from_secs(20), || {
        let u = supd.unit("db");
        (u["state"] == "running" && u["ready"] == true).then_some(())
    });
    // Healthy for a few probe intervals, and only ever started once.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(supd.state_of("db"), "running");
    let n = std::fs::read_to_string(&starts).unwrap_or_default();
    assert_eq!(
        n.lines().count(),
        1,
        "db was restarted while starting: starts {n:?}\n{}",
        supd.log_text()
    );
}

/// Issue 13 item 12(a): the notify socket is 0666 (services of any user
/// must reach it), so any local user can send to it: a flood of forged
/// datagrams is counted and logged at most once per window, not once each.
#[test]
fn forged_notification_flood_is_rate_limited_in_the_log() {
    if !can_run("forged_flood") {
        return;
    }
    let db = "exec = [\"/bin/sleep\", \"600\"]\n[ready]\nkind = \"notify\"\n";
    let supd = Supd::start("forgedflood", &[("db", db)]);
    supd.wait_state("db", "starting", Duration::from_secs(10));
    let notify = supd.socket.parent().unwrap().join("notify.sock");
    let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
    for _ in 0..2000 {
        s.send_to(b"READY=1", &notify).unwrap();
    }
    // Everything sent has been read once supd answers after it (the
    // datagrams are queued before the control request is made).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(supd.state_of("db"), "starting");
    let count = |log: &str| log.lines().filter(|l| l.contains("sd_notify")).count();
    let n = count(&supd.log_text());
    assert!(n <= 2, "{n} log lines for 2000 forged datagrams");
    // After the window, the next one reports how many were ignored.
    std::thread::sleep(Duration::from_millis(5200));
    s.send_to(b"READY=1", &notify).unwrap();
    let line = wait_for(
        "the count of ignored messages",
        Duration::from_secs(5),
        || {
            supd.log_text()
                .lines()
                .find(|l| l.contains("sd_notify") && l.contains("2000"))
                .map(|l| l.to_string())
        },
    );
    assert!(line.contains("ignored"), "{line}");
}
