//! Invariant 11 with real processes: every failure has a cause an operator
//! can read — per-unit logs kept across restarts (of the unit and of supd),
//! `supctl logs` (tail, interleave, follow, JSON), log rotation, logs held
//! in memory until the state directory is mounted.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// `supctl logs ARGS --json` as parsed records.
fn logs_json(supd: &Supd, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["logs", "--json"];
    a.extend_from_slice(args);
    supd.ok(&a)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn lines_of(recs: &[Value]) -> Vec<String> {
    recs.iter()
        .map(|r| r["line"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn logs_keep_earlier_runs_also_after_supd_is_killed_and_restarted() {
    if !can_run("logs_across_restarts") {
        return;
    }
    let t = TempDir::new("obs-runs");
    let counter = t.path().join("count");
    // A python service that says which run it is, on stdout and stderr,
    // then crashes; the restart policy brings it back.
    let py = format!(
        "import os, sys\n\
         p = {counter:?}\n\
         n = int(open(p).read()) + 1 if os.path.exists(p) else 1\n\
         open(p, 'w').write(str(n))\n\
         print(f'run {{n}} starting', flush=True)\n\
         print(f'run {{n}} error text', file=sys.stderr, flush=True)\n\
         sys.exit(3)\n",
        counter = counter.display().to_string()
    );
    let unit = format!(
        "exec = [\"python3\", \"-c\", {}]\n[restart]\ndelay = \"100ms\"\nmax_delay = \"200ms\"\nburst = 100\n",
        toml_str(&py)
    );
    let mut supd = Supd::start("obsruns", &[("crashy", &unit)]);
    let recs = wait_for("three runs in the log", Duration::from_secs(20), || {
        let r = logs_json(&supd, &["crashy", "-n", "10000"]);
        lines_of(&r)
            .iter()
            .any(|l| l == "run 3 error text")
            .then_some(r)
    });
    let lines = lines_of(&recs);
    for n in 1..=3 {
        assert!(lines.contains(&format!("run {n} starting")), "{lines:?}");
        assert!(lines.contains(&format!("run {n} error text")), "{lines:?}");
    }
    // Oldest first, times never going back, every record well-formed.
    let pos = |s: &str| lines.iter().position(|l| l == s).unwrap();
    assert!(pos("run 1 starting") < pos("run 2 starting"));
    let times: Vec<u64> = recs
        .iter()
        .map(|r| r["time_unix_us"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    for r in &recs {
        assert_eq!(r["unit"], "crashy");
        assert!(r["time"].as_str().unwrap().ends_with('Z'), "{r}");
        assert!(
            ["out", "supd"].contains(&r["stream"].as_str().unwrap()),
            "{r}"
        );
    }

    // supd killed outright: what was written stays; the new supd appends.
    supd.kill9();
    let before: u32 = std::fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    supd.spawn(&Options::default());
    let recs = wait_for("a run after the restart", Duration::from_secs(20), || {
        let n: u32 = std::fs::read_to_string(&counter)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        if n <= before {
            return None;
        }
        let r = logs_json(&supd, &["crashy", "-n", "10000"]);
        lines_of(&r)
            .contains(&format!("run {n} error text"))
            .then_some((n, r))
    });
    let (last, recs) = recs;
    let lines = lines_of(&recs);
    assert!(lines.contains(&"run 1 starting".to_string()), "{lines:?}");
    assert!(lines.contains(&format!("run {last} starting")), "{lines:?}");
    // Every run that ended before the kill is there in full.
    let prev = before - 1;
    assert!(
        lines.contains(&format!("run {prev} error text")),
        "{lines:?}"
    );

    // The human form: time, unit, line; -n counts lines.
    let human = supd.ok(&["logs", "crashy", "-n", "2"]);
    let hl: Vec<&str> = human.lines().collect();
    assert_eq!(hl.len(), 2, "{human}");
    assert!(hl.iter().all(|l| l.contains(" crashy")), "{human}");

    // An unknown unit is an error naming it.
    let out = supd.supctl(&["logs", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"));
}

#[test]
fn logs_interleave_units_by_time_and_follow_streams_json_lines() {
    if !can_run("logs_follow") {
        return;
    }
    let a = sh_unit(
        "i=0; while true; do echo a-$i; i=$((i+1)); sleep 0.05; done",
        "",
    );
    let b = sh_unit(
        "i=0; while true; do echo b-$i; i=$((i+1)); sleep 0.05; done",
        "",
    );
    let supd = Supd::start("obsfollow", &[("a", &a), ("b", &b)]);
    // Both units, interleaved, ordered by time.
    let recs = wait_for("lines from both", Duration::from_secs(10), || {
        let r = logs_json(&supd, &["-n", "40"]);
        let has = |u: &str| r.iter().any(|x| x["unit"] == u);
        (has("a") && has("b") && r.len() == 40).then_some(r)
    });
    let times: Vec<u64> = recs
        .iter()
        .map(|r| r["time_unix_us"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // --since filters: nothing from the future.
    let future = "2200-01-01T00:00:00Z";
    assert!(logs_json(&supd, &["--since", future]).is_empty());

    // Follow a: lines keep coming, each one JSON, only a's, in order.
    let mut child = Command::new(SUPCTL)
        .arg("--socket")
        .arg(&supd.socket)
        .args(["logs", "-f", "--json", "-n", "1", "a"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("supctl logs -f");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut got: Vec<u64> = Vec::new();
    while got.len() < 20 {
        let l = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a followed line within 10s");
        let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["unit"], "a", "{l}");
        let n: u64 = v["line"].as_str().unwrap()[2..].parse().unwrap();
        got.push(n);
    }
    // Consecutive: the follow neither lost nor repeated a line across the
    // switch from backlog to live.
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
    let _ = child.kill();
    let _ = child.wait();
    // supd is fine afterwards (the follower's task ended with the client).
    supd.ok(&["status"]);
}

#[test]
fn logs_rotate_at_the_configured_size() {
    if !can_run("logs_rotate") {
        return;
    }
    // ~1 MB of 100-byte lines, into 2 files of 16 KiB.
    let py = "import sys\nfor i in range(10000):\n    sys.stdout.write('%06d ' % i + 'x' * 92 + '\\n')\nsys.stdout.flush()\nprint('the last line', flush=True)\nimport time\ntime.sleep(600)\n";
    let unit = format!(
        "exec = [\"python3\", \"-c\", {}]\nlog_max_size = \"16K\"\nlog_max_files = 2\n",
        toml_str(py)
    );
    let supd = Supd::start("obsrot", &[("big", &unit)]);
    wait_for("the last line", Duration::from_secs(20), || {
        lines_of(&logs_json(&supd, &["big", "-n", "1"]))
            .contains(&"the last line".to_string())
            .then_some(())
    });
    let dir = supd.state.join("logs/big");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name(), e.metadata().unwrap().len()))
        .collect();
    assert!(files.len() <= 2, "{files:?}");
    for (name, len) in &files {
        assert!(*len <= 16 * 1024, "{name:?}: {len} bytes");
    }
    // Everything still on disk reads back, oldest first, consecutive.
    let recs = logs_json(&supd, &["big", "-n", "100000"]);
    let nums: Vec<u64> = recs
        .iter()
        .filter_map(|r| r["line"].as_str()?.get(..6)?.parse().ok())
        .collect();
    assert!(nums.len() > 100, "{}", nums.len());
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(*nums.last().unwrap(), 9999);
}

#[test]
fn logs_wait_in_memory_for_the_state_mount() {
    if !can_run("logs_state_mount") {
        return;
    }
    let state_fs = TempDir::new("obs-statefs");
    let mnt = state_fs.path().display().to_string();
    let state = state_fs.path().join("supd");
    // Essential: only those start while the lock state is not readable.
    let unit = sh_unit("echo before the mount; exec sleep 600", "essential = true");
    let supd = Supd::start_with(
        "obsmnt",
        &[("early", &unit)],
        Options {
            state_dir: Some(state.clone()),
            config: Some(format!("[state_mount]\npath = {}\n", toml_str(&mnt))),
            ..Options::default()
        },
    );
    // Readable before the state directory exists...
    wait_for("the line from memory", Duration::from_secs(10), || {
        lines_of(&logs_json(&supd, &["early"]))
            .contains(&"before the mount".to_string())
            .then_some(())
    });
    // ...and nothing was created under the empty mount point.
    assert!(!state.exists(), "supd wrote under the mount point");
    supd.in_ns_ok(&["mount", "-t", "tmpfs", "supd-test", &mnt]);
    let log = state.join("logs/early/00000001.log").display().to_string();
    wait_for(
        "the held line written to the mounted fs",
        Duration::from_secs(10),
        || {
            let out = supd.in_ns(&["cat", &log]);
            String::from_utf8_lossy(&out.stdout)
                .contains("out before the mount")
                .then_some(())
        },
    );
    assert!(lines_of(&logs_json(&supd, &["early"])).contains(&"before the mount".to_string()));
    assert!(!state.exists(), "the test's view must stay empty");
    supd.in_ns_ok(&["umount", "-l", &mnt]);
}

#[test]
fn a_missing_exec_and_a_crash_loop_show_their_causes() {
    if !can_run("causes_in_status") {
        return;
    }
    let missing = "exec = [\"/usr/bin/supd-test-does-not-exist\"]\n[restart]\ndelay = \"200ms\"\n";
    // A C-like real program: python exits with a code after a line.
    let crashy = "exec = [\"python3\", \"-c\", \"print('giving up now', flush=True); raise SystemExit(7)\"]\n[restart]\ndelay = \"100ms\"\nmax_delay = \"200ms\"\nburst = 100\n";
    let supd = Supd::start("obscause", &[("missing", missing), ("crashy", crashy)]);
    let st = wait_for(
        "crashy to have restarted twice",
        Duration::from_secs(20),
        || {
            let u = supd.unit("crashy");
            (u["restarts"].as_u64()? >= 2).then_some(u)
        },
    );
    assert_eq!(st["last_exit_code"], 7, "{st}");
    assert_eq!(st["last_exit"], "exited with code 7", "{st}");
    assert!(st["last_exit_at"].as_str().unwrap().ends_with('Z'), "{st}");
    assert!(st["since"].as_str().unwrap().ends_with('Z'), "{st}");
    let human = supd.ok(&["status", "crashy"]);
    assert!(human.contains("restarts:"), "{human}");
    assert!(
        human.contains("last exit:   exited with code 7 at "),
        "{human}"
    );
    assert!(human.contains(" since "), "{human}");
    // The last lines of its output, as systemctl status shows them.
    assert!(human.contains("giving up now"), "{human}");

    let m = wait_for(
        "missing to have failed once",
        Duration::from_secs(10),
        || {
            let u = supd.unit("missing");
            u["last_error"].as_str().is_some().then_some(u)
        },
    );
    let err = m["last_error"].as_str().unwrap();
    assert!(
        err.contains("exec /usr/bin/supd-test-does-not-exist") && err.contains("No such file"),
        "{m}"
    );
    let human = supd.ok(&["status", "missing"]);
    assert!(human.contains("No such file or directory"), "{human}");
    let why = supd.ok(&["why", "missing"]);
    assert!(why.contains("No such file or directory"), "{why}");
    let table = supd.ok(&["status"]);
    assert!(table.contains("No such file or directory"), "{table}");
    // Not a terminal: no colour codes in the table.
    assert!(!table.contains('\x1b'), "{table:?}");
}

/// Lines of a running `supctl ARGS` arrive on the returned channel.
fn spawn_lines(
    supd: &Supd,
    args: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(SUPCTL)
        .arg("--socket")
        .arg(&supd.socket)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("supctl");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Read JSON lines until one satisfies `pred` (every line must be JSON).
fn until(
    rx: &std::sync::mpsc::Receiver<String>,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let l = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no event {what} within 15s"));
        let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v["time"].as_str().is_some() && v["time_unix_us"].as_u64().is_some(),
            "{v}"
        );
        if pred(&v) {
            return v;
        }
    }
}

#[test]
fn events_stream_state_lock_mount_and_probe_changes_as_json_lines() {
    if !can_run("events_json") {
        return;
    }
    let data = TempDir::new("obs-evmnt");
    let flag = TempDir::new("obs-evflag");
    let d = data.path().display().to_string();
    let healthy = flag.path().join("healthy");
    std::fs::write(&healthy, "").unwrap();
    let db = format!(
        "{}[[mount]]\npath = {}\n",
        sh_unit("exec sleep 600", ""),
        toml_str(&d)
    );
    let web = format!(
        "exec = [\"sleep\", \"600\"]\n[health]\nexec = [\"test\", \"-e\", {}]\ninterval = \"200ms\"\non_unhealthy = \"report\"\n",
        toml_str(&healthy.display().to_string())
    );
    let supd = Supd::start("obsevents", &[("db", &db), ("web", &web)]);
    supd.wait_state("web", "running", Duration::from_secs(10));
    let (mut all, rx) = spawn_lines(&supd, &["events", "--json"]);
    let (mut only_web, rx_web) = spawn_lines(&supd, &["events", "--json", "web"]);
    // Both are subscribed once a restart of web shows in both.
    let mut subscribed = false;
    for _ in 0..10 {
        supd.ok(&["restart", "web"]);
        let seen = |rx: &std::sync::mpsc::Receiver<String>| {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while let Ok(l) =
                rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            {
                if l.contains("\"to\":\"stopping\"") {
                    return true;
                }
            }
            false
        };
        if seen(&rx) && seen(&rx_web) {
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "supctl events never showed web's restart");

    // A mount appears: the event, then db's start.
    supd.in_ns_ok(&["mount", "-t", "tmpfs", "supd-test", &d]);
    until(&rx, "mount appeared", |v| {
        v["event"] == "mount" && v["path"] == d.as_str() && v["present"] == true
    });
    until(&rx, "db running", |v| {
        v["event"] == "state" && v["unit"] == "db" && v["to"] == "running"
    });
    // A probe starts failing.
    std::fs::remove_file(&healthy).unwrap();
    until(&rx, "web's probe failing", |v| {
        v["event"] == "probe" && v["unit"] == "web" && v["passing"] == false
    });
    // A lock, and the stop it causes.
    supd.ok(&["maintenance", "on", "web", "--reason", "events test"]);
    until(&rx, "lock", |v| {
        v["event"] == "lock" && v["unit"] == "web" && v["holders"][0].as_str().is_some()
    });
    let st = until(&rx, "web stopping", |v| {
        v["event"] == "state" && v["unit"] == "web" && v["to"] == "stopping"
    });
    assert!(
        st["detail"].as_str().unwrap().contains("maintenance"),
        "{st}"
    );
    // The mount is lost: db stops, and says why.
    supd.in_ns_ok(&["umount", "-l", &d]);
    until(&rx, "mount lost", |v| {
        v["event"] == "mount" && v["present"] == false && v["problem"].as_str().is_some()
    });
    until(&rx, "db stopping", |v| {
        v["event"] == "state" && v["unit"] == "db" && v["to"] == "stopping"
    });
    // The filtered stream saw web's events and never db's.
    let mut seen_web = 0;
    while let Ok(l) = rx_web.recv_timeout(Duration::from_millis(500)) {
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_ne!(v["unit"], "db", "{v}");
        if v["unit"] == "web" {
            seen_web += 1;
        }
    }
    assert!(seen_web >= 3, "{seen_web}");
    for c in [&mut all, &mut only_web] {
        let _ = c.kill();
        let _ = c.wait();
    }
    // What happened is in web's log too, as supd's lines.
    let recs = logs_json(&supd, &["web", "-n", "50"]);
    assert!(
        recs.iter().any(|r| r["stream"] == "supd"
            && r["line"]
                .as_str()
                .unwrap()
                .contains("maintenance lock held by")),
        "{recs:?}"
    );
}

#[test]
fn a_slow_subscriber_is_told_and_dropped_while_supd_goes_on() {
    if !can_run("events_slow_subscriber") {
        return;
    }
    use std::io::{Read, Write};
    let units: Vec<(String, String)> = (0..150)
        .map(|i| {
            (
                format!("u{i:03}"),
                "exec = [\"sleep\", \"600\"]\npriority = \"optional\"\n".to_string(),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = units
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let supd = Supd::start("obsslow", &refs);
    let all_running = |supd: &Supd| {
        wait_for("all running", Duration::from_secs(30), || {
            let st = supd.status();
            st["units"]
                .as_array()?
                .iter()
                .all(|u| u["state"] == "running")
                .then_some(())
        })
    };
    all_running(&supd);
    // A raw subscriber that reads slowly: 1 KiB every 20 ms.
    let mut s = std::os::unix::net::UnixStream::connect(&supd.socket).unwrap();
    s.write_all(b"{\"v\":1,\"cmd\":\"events\"}\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let got = got.clone();
        let ended = ended.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.lock().unwrap().extend_from_slice(&buf[..n]),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            ended.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let dropped = || String::from_utf8_lossy(&got.lock().unwrap()).contains("\"notice\"");
    // Each shed/unshed round is ~4 events per unit; go on until the
    // subscriber is dropped (supd answers every command meanwhile).
    for _ in 0..40 {
        if dropped() {
            break;
        }
        supd.ok(&["shed", "optional"]);
        wait_for("all stopped", Duration::from_secs(30), || {
            let st = supd.status();
            st["units"]
                .as_array()?
                .iter()
                .all(|u| u["pid"].is_null())
                .then_some(())
        });
        supd.ok(&["unshed"]);
        all_running(&supd);
    }
    wait_for(
        "the notice and the end of the stream",
        Duration::from_secs(60),
        || {
            ended
                .load(std::sync::atomic::Ordering::SeqCst)
                .then_some(())
        },
    );
    reader.join().unwrap();
    let text = String::from_utf8_lossy(&got.lock().unwrap()).to_string();
    let last = text.lines().last().unwrap_or("");
    assert!(
        last.contains("\"notice\"") && last.contains("dropped"),
        "{last}"
    );
    // Everything before it was a whole event line.
    for l in text.lines().skip(1) {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["kind"] == "event" || v["kind"] == "notice", "{l}");
    }
    supd.ok(&["status"]);
}

/// A free TCP port on 127.0.0.1 (tests run in parallel; each gets its own).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// GET `path` over plain HTTP/1.1: (status code, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// Parse Prometheus text with the reference Python parser; returns
/// {family: [[sample name, labels, value], ...]}.
fn prometheus_parse(text: &str) -> Value {
    let script = concat!(
        "import sys, json\n",
        "from prometheus_client.parser import text_string_to_metric_families\n",
        "out = {}\n",
        "for f in text_string_to_metric_families(sys.stdin.read()):\n",
        "    out[f.name] = [[s.name, s.labels, s.value] for s in f.samples]\n",
        "print(json.dumps(out))\n",
    );
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn has_prometheus_parser() -> bool {
    Command::new("python3")
        .args(["-c", "import prometheus_client.parser"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn metrics_parse_as_prometheus_text_and_readyz_follows_the_units() {
    if !can_run("metrics") {
        return;
    }
    assert!(
        has_prometheus_parser(),
        "python3 module prometheus_client missing: ./test.sh installs it (pip install prometheus-client)"
    );
    let flag = TempDir::new("obs-gate");
    let f = flag.path().join("go").display().to_string();
    let port = free_port();
    let gate = sh_unit(
        &format!("test -e {f} || exit 1; exec sleep 600"),
        "[restart]\ndelay = \"100ms\"\nmax_delay = \"200ms\"\nburst = 50\ninterval = \"1m\"",
    );
    let crashy = "exec = [\"python3\", \"-c\", \"raise SystemExit(7)\"]\npriority = \"optional\"\n[restart]\ndelay = \"100ms\"\nmax_delay = \"200ms\"\nburst = 50\ninterval = \"1m\"\n";
    let web = "exec = [\"sleep\", \"600\"]\n";
    let supd = Supd::start_with(
        "obsmetrics",
        &[("gate", &gate), ("crashy", crashy), ("web", web)],
        Options {
            extra_args: vec!["--metrics".into(), format!("127.0.0.1:{port}")],
            ..Options::default()
        },
    );
    supd.wait_state("web", "running", Duration::from_secs(10));
    supd.ok(&["maintenance", "on", "web", "--reason", "metrics test"]);
    // gate keeps failing: not ready, and /readyz says who.
    let (code, body) = wait_for("gate restarted", Duration::from_secs(20), || {
        let (c, b) = http_get(port, "/readyz")?;
        (b.contains("gate")).then_some((c, b))
    });
    assert_eq!(code, 503, "{body}");
    assert!(
        !body.contains("crashy"),
        "optional units do not count: {body}"
    );
    assert!(
        !body.contains("web"),
        "a locked unit does not count: {body}"
    );
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http_get(port, "/nope").map(|r| r.0), Some(404));

    wait_for("crashy restarted twice", Duration::from_secs(20), || {
        (supd.unit("crashy")["restarts"].as_u64()? >= 2).then_some(())
    });
    let (code, text) = http_get(port, "/metrics").expect("/metrics");
    assert_eq!(code, 200);
    let m = prometheus_parse(&text);
    let sample = |fam: &str, name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        m[fam].as_array()?.iter().find_map(|s| {
            let ok = s[0] == name && labels.iter().all(|(k, v)| s[1][*k].as_str() == Some(*v));
            ok.then(|| s[2].as_f64()).flatten()
        })
    };
    // The parser strips `_total` from counter family names.
    assert_eq!(
        sample(
            "supd_unit_state",
            "supd_unit_state",
            &[("unit", "web"), ("state", "waiting")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            "supd_unit_state",
            "supd_unit_state",
            &[("unit", "web"), ("state", "running")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample("supd_unit_ready", "supd_unit_ready", &[("unit", "web")]),
        Some(0.0)
    );
    assert!(
        sample(
            "supd_unit_restarts",
            "supd_unit_restarts_total",
            &[("unit", "crashy")]
        )
        .unwrap()
            >= 2.0
    );
    assert_eq!(
        sample(
            "supd_unit_last_exit_code",
            "supd_unit_last_exit_code",
            &[("unit", "crashy")]
        ),
        Some(7.0)
    );
    assert!(
        sample(
            "supd_unit_start_timestamp_seconds",
            "supd_unit_start_timestamp_seconds",
            &[("unit", "web")]
        )
        .unwrap()
            > 1.6e9
    );
    assert_eq!(
        sample(
            "supd_unit_health_failures",
            "supd_unit_health_failures_total",
            &[("unit", "web")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            "supd_maintenance_locked",
            "supd_maintenance_locked",
            &[("unit", "web"), ("holder", "root")]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            "supd_maintenance_lock_age_seconds",
            "supd_maintenance_lock_age_seconds",
            &[("unit", "web"), ("holder", "root")]
        )
        .is_some()
    );
    for fam in [
        "supd_mounts_waiting",
        "supd_lock_state_ok",
        "supd_orphans_reaped",
        "supd_control_requests",
    ] {
        assert!(
            m[fam].as_array().is_some_and(|a| !a.is_empty()),
            "{fam} missing: {m}"
        );
    }
    assert_eq!(
        sample("supd_lock_state_ok", "supd_lock_state_ok", &[]),
        Some(1.0)
    );
    assert!(
        sample(
            "supd_control_requests",
            "supd_control_requests_total",
            &[("cmd", "maintenance-on")]
        ) == Some(1.0)
    );

    // The gate opens: every non-optional unit that should run is ready.
    std::fs::write(&f, "").unwrap();
    wait_for("/readyz 200", Duration::from_secs(20), || {
        (http_get(port, "/readyz")?.0 == 200).then_some(())
    });
}

#[test]
fn scripting_start_wait_is_active_is_failed_audit_and_stop_progress() {
    if !can_run("scripting") {
        return;
    }
    let t = TempDir::new("obs-script");
    let ready = t.path().join("ready");
    // Ready only once its probe passes (after ~1 s).
    let slow = format!(
        "exec = [\"python3\", \"-c\", \"import time, pathlib; time.sleep(1); pathlib.Path('{}').touch(); time.sleep(600)\"]\n[ready]\nkind = \"probe\"\n[health]\nexec = [\"test\", \"-e\", {}]\ninterval = \"100ms\"\n",
        ready.display(),
        toml_str(&ready.display().to_string())
    );
    let missing = "exec = [\"/usr/bin/supd-test-missing\"]\n";
    let once =
        "exec = [\"python3\", \"-c\", \"raise SystemExit(4)\"]\n[restart]\npolicy = \"never\"\n";
    // Ignores SIGTERM for a while: the stop waits, and says so.
    let armed = t.path().join("armed");
    let stubborn = format!(
        "exec = [\"python3\", \"-c\", \"import signal, time; signal.signal(signal.SIGTERM, lambda *a: (time.sleep(2.5), exit(0))); open('{}', 'w').close(); time.sleep(600)\"]\n[stop]\ntimeout = \"10s\"\n",
        armed.display()
    );
    let wait_armed = || {
        wait_for("stubborn's handler", Duration::from_secs(10), || {
            armed.exists().then_some(())
        })
    };
    let supd = Supd::start(
        "obsscript",
        &[
            ("slow", &slow),
            ("missing", missing),
            ("once", once),
            ("stubborn", &stubborn),
        ],
    );
    supd.ok(&["stop", "slow"]);
    std::fs::remove_file(&ready).ok();
    // start --wait returns once ready, not before.
    let out = supd.supctl(&["start", "--wait", "slow"]);
    assert!(out.status.success(), "{out:?}");
    assert!(ready.exists(), "returned before the unit was ready");
    assert_eq!(supd.unit("slow")["ready"], true);
    // ...and fails with the cause when the start fails.
    let out = supd.supctl(&["start", "--wait", "missing"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("supd-test-missing") && err.contains("No such file"),
        "{err}"
    );
    // is-active / is-failed.
    let code = |args: &[&str]| supd.supctl(args).status.code();
    assert_eq!(code(&["is-active", "slow"]), Some(0));
    assert_eq!(code(&["is-failed", "slow"]), Some(1));
    wait_for("once to fail", Duration::from_secs(10), || {
        (supd.state_of("once") == "failed").then_some(())
    });
    assert_eq!(code(&["is-failed", "once"]), Some(0));
    assert_eq!(code(&["is-active", "once"]), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&supd.supctl(&["is-active", "once"]).stdout).trim(),
        "failed"
    );
    assert_eq!(code(&["is-active", "nosuch"]), Some(1));
    // stop says what it waits for while the unit takes its time.
    wait_armed();
    std::fs::remove_file(&armed).unwrap();
    let out = supd.supctl(&["stop", "stubborn"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("waiting for stubborn (pid "), "{err}");
    // A client timeout says the operation goes on.
    supd.ok(&["start", "stubborn"]);
    wait_armed();
    let out = Command::new(SUPCTL)
        .arg("--socket")
        .arg(&supd.socket)
        .args(["--timeout", "500ms", "stop", "stubborn"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("goes on"), "{err}");
    supd.wait_state("stubborn", "stopped", Duration::from_secs(20));
    // audit, and its old name.
    let audit = supd.ok(&["audit"]);
    assert!(audit.contains("stop unit=stubborn"), "{audit}");
    assert_eq!(audit, supd.ok(&["maintenance", "log"]));
}

#[test]
fn shell_completion_offers_unit_names() {
    if !can_run("completion") {
        return;
    }
    let docs = TempDir::new("obs-docs");
    let out = Command::new(SUPCTL)
        .arg("generate-docs")
        .arg(docs.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for page in ["supd.unit.5", "supd.toml.5", "supd.1", "supctl.1"] {
        assert!(docs.path().join("man").join(page).exists(), "{page}");
    }
    let supd = Supd::start(
        "obscomp",
        &[
            ("webserver", "exec = [\"sleep\", \"600\"]\n"),
            ("worker", "exec = [\"sleep\", \"600\"]\n"),
            ("db", "exec = [\"sleep\", \"600\"]\n"),
        ],
    );
    let bin = std::path::Path::new(SUPCTL).parent().unwrap();
    let complete = |words: &str| -> String {
        let script = format!(
            "source {}/completions/supctl.bash\nCOMP_WORDS=({words})\nCOMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n_supctl_units supctl\necho \"${{COMPREPLY[@]}}\"\n",
            docs.path().display()
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("SUPD_SOCKET", &supd.socket)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(complete("supctl start w"), "webserver worker");
    assert_eq!(complete("supctl logs -n 5 d"), "db");
    assert_eq!(complete("supctl maintenance on ''"), "db webserver worker");
}

#[test]
fn log_format_json_makes_every_line_of_supds_own_log_an_object() {
    if !can_run("log_format_json") {
        return;
    }
    let supd = Supd::start_with(
        "obsjson",
        &[("talk", &sh_unit("echo hello from talk; exec sleep 600", ""))],
        Options {
            config: Some("log_format = \"json\"\n".into()),
            ..Options::default()
        },
    );
    let text = wait_for(
        "the unit's line in supd's log",
        Duration::from_secs(10),
        || {
            let t = supd.log_text();
            t.contains("hello from talk").then_some(t)
        },
    );
    let mut saw_unit_line = false;
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v["time"].as_str().is_some() && v["level"].as_str().is_some(),
            "{l}"
        );
        if v["message"] == "hello from talk" {
            assert_eq!(v["unit"], "talk", "{l}");
            saw_unit_line = true;
        }
    }
    assert!(saw_unit_line);
}
