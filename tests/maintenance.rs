//! Invariants 2–4 with real processes: maintenance locks hold across
//! stop, restart policy, reload, SIGKILL of supd and a fresh namespace
//! ("reboot"); acknowledged means durable; fail closed on a bad state file.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// A service that appends a line every 20 ms while it runs.
fn heartbeat_unit(file: &std::path::Path, extra: &str) -> String {
    sh_unit(
        &format!(
            "while :; do echo beat >> {}; sleep 0.02; done",
            file.display()
        ),
        &format!("{extra}\n[restart]\npolicy = \"always\"\ndelay = \"50ms\""),
    )
}

fn beats(file: &std::path::Path) -> usize {
    std::fs::read_to_string(file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn lock_stops_the_unit_and_holds_it_across_kill_and_reboot() {
    if !can_run("lock_holds") {
        return;
    }
    let out = TempDir::new("lock-out");
    let hb = out.path().join("beats");
    let unit = heartbeat_unit(&hb, "");
    let mut supd = Supd::start("lockhold", &[("db", &unit)]);
    supd.wait_state("db", "running", Duration::from_secs(10));
    let reply = supd.ok(&[
        "maintenance",
        "on",
        "db",
        "--reason",
        "resize data volume",
        "--holder",
        "alice",
    ]);
    assert!(reply.contains("alice"), "{reply}");
    // When the command returned the service was already down.
    let u = supd.unit("db");
    assert_eq!(u["state"], "waiting", "{u}");
    assert!(u["pid"].is_null());
    assert_eq!(u["maintenance"][0]["holder"], "alice");
    let n = beats(&hb);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(beats(&hb), n, "service still running after maintenance on");

    // Manual start is refused with the holder and the reason.
    let r = supd.supctl(&["start", "db"]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("alice") && err.contains("resize data volume"),
        "{err}"
    );

    // Reload does not bring it back.
    supd.ok(&["reload"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(beats(&hb), n);

    // SIGKILL supd, start a new one on the same state dir: a new PID and
    // mount namespace, as after a reboot.
    supd.kill9();
    supd.spawn(&Options::default());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(beats(&hb), n, "service ran after supd restarted");
    let u = supd.unit("db");
    assert_eq!(u["maintenance"][0]["reason"], "resize data volume", "{u}");

    supd.ok(&["maintenance", "off", "db", "--holder", "alice"]);
    supd.wait_state("db", "running", Duration::from_secs(10));
    wait_for("beats again", Duration::from_secs(5), || {
        (beats(&hb) > n).then_some(())
    });
}

#[test]
fn two_holders_both_must_release() {
    if !can_run("two_holders") {
        return;
    }
    let out = TempDir::new("lock2-out");
    let hb = out.path().join("beats");
    let supd = Supd::start("lock2", &[("db", &heartbeat_unit(&hb, ""))]);
    supd.wait_state("db", "running", Duration::from_secs(10));
    supd.ok(&[
        "maintenance",
        "on",
        "db",
        "--reason",
        "disk",
        "--holder",
        "alice",
    ]);
    supd.ok(&[
        "maintenance",
        "on",
        "db",
        "--reason",
        "backup",
        "--holder",
        "bob",
    ]);
    let list: serde_json::Value =
        serde_json::from_str(&supd.ok(&["maintenance", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().map(|a| a.len()), Some(2), "{list}");
    // Automation cannot release someone else's hold without --force.
    let r = supd.supctl(&["maintenance", "off", "db"]);
    assert_eq!(r.status.code(), Some(1));
    let dry = supd.ok(&["maintenance", "off", "db", "--holder", "alice", "--dry-run"]);
    assert!(dry.contains("bob"), "{dry}");
    let msg = supd.ok(&["maintenance", "off", "db", "--holder", "alice"]);
    assert!(msg.contains("bob"), "{msg}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(supd.state_of("db"), "waiting");
    let dry = supd.ok(&["maintenance", "off", "db", "--holder", "bob", "--dry-run"]);
    assert!(dry.contains("db"), "{dry}");
    supd.ok(&["maintenance", "off", "db", "--holder", "bob"]);
    supd.wait_state("db", "running", Duration::from_secs(10));
    let log = supd.ok(&["maintenance", "log", "--json"]);
    assert!(log.contains("alice") && log.contains("bob"), "{log}");
}

#[test]
fn dependents_of_a_locked_unit_wait_and_why_says_so() {
    if !can_run("dependents_wait") {
        return;
    }
    let db = sh_unit("exec sleep 600", "");
    let app = sh_unit("exec sleep 600", "requires = [\"db\"]");
    let supd = Supd::start("lockdep", &[("db", &db), ("app", &app)]);
    supd.wait_state("app", "running", Duration::from_secs(10));
    supd.ok(&["maintenance", "on", "db", "--reason", "upgrade"]);
    assert_eq!(supd.state_of("app"), "waiting");
    let why = supd.ok(&["why", "app"]);
    assert!(why.contains("db") && why.contains("maintenance"), "{why}");
    supd.ok(&["maintenance", "off", "db"]);
    supd.wait_state("app", "running", Duration::from_secs(10));
}

#[test]
fn acknowledged_locks_survive_random_sigkills() {
    if !can_run("acknowledged_locks_survive") {
        return;
    }
    let units: Vec<(String, String)> = (0..4)
        .map(|i| (format!("u{i}"), sh_unit("exec sleep 600", "")))
        .collect();
    let refs: Vec<(&str, &str)> = units
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    let mut supd = Supd::start("lockcrash", &refs);
    // Expected lock state per unit: Some(true) locked, Some(false) free;
    // `inflight` holds an op sent but not acknowledged when supd died.
    let mut acked: Vec<bool> = vec![false; 4];
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let rounds = 8;
    let mut ops_total = 0;
    let t0 = Instant::now();
    for _round in 0..rounds {
        // Fire operations from a thread; kill supd at a random moment.
        let sock = supd.socket.clone();
        let start_state = acked.clone();
        let kill_after = Duration::from_millis(50 + rnd() % 400);
        let handle = std::thread::spawn(move || {
            let mut state = start_state;
            let mut log: Vec<(usize, bool, bool)> = Vec::new(); // unit, lock?, acked?
            let mut x: u64 = 12345;
            for _ in 0..200 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                let u = ((x >> 33) % 4) as usize;
                let lock = !state[u];
                let name = format!("u{u}");
                let args: Vec<&str> = if lock {
                    vec!["maintenance", "on", &name, "--reason", "crash test"]
                } else {
                    vec!["maintenance", "off", &name]
                };
                let out = std::process::Command::new(SUPCTL)
                    .arg("--socket")
                    .arg(&sock)
                    .args(&args)
                    .output();
                let ok = out.map(|o| o.status.success()).unwrap_or(false);
                log.push((u, lock, ok));
                if !ok {
                    break; // supd died under us
                }
                state[u] = lock;
            }
            log
        });
        std::thread::sleep(kill_after);
        supd.kill9();
        let log = handle.join().expect("client thread");
        ops_total += log.len();
        // The op that failed (if any) may or may not have reached disk.
        let mut maybe: Option<(usize, bool)> = None;
        for (u, lock, ok) in &log {
            if *ok {
                acked[*u] = *lock;
            } else {
                maybe = Some((*u, *lock));
            }
        }
        supd.spawn(&Options::default());
        let list: serde_json::Value =
            serde_json::from_str(&supd.ok(&["maintenance", "list", "--json"])).unwrap();
        let status = supd.status();
        assert!(
            status["lock_state_problem"].is_null(),
            "state unreadable after SIGKILL: {status}"
        );
        let mut locked = [false; 4];
        for l in list.as_array().unwrap() {
            let n: usize = l["unit"].as_str().unwrap()[1..].parse().unwrap();
            locked[n] = true;
        }
        for u in 0..4 {
            let ok =
                locked[u] == acked[u] || maybe.is_some_and(|(mu, ml)| mu == u && ml == locked[u]);
            assert!(
                ok,
                "unit u{u}: on disk locked={} but last acknowledged op said {}",
                locked[u], acked[u]
            );
            acked[u] = locked[u];
        }
    }
    eprintln!(
        "lock crash test: {rounds} SIGKILLs, {ops_total} operations, {:?}",
        t0.elapsed()
    );
}

#[test]
fn corrupt_state_fails_closed_until_recovered() {
    if !can_run("corrupt_state_fails_closed") {
        return;
    }
    let db = sh_unit("exec sleep 600", "");
    let console = sh_unit("exec sleep 600", "essential = true");
    let mut supd = Supd::start("lockcorrupt", &[("db", &db), ("console", &console)]);
    supd.wait_state("db", "running", Duration::from_secs(10));
    supd.ok(&["maintenance", "on", "db", "--reason", "x"]);
    supd.ok(&["maintenance", "off", "db"]);
    supd.signal(Signal::SIGTERM);
    supd.wait_exit(Duration::from_secs(20));
    // Corrupt every lock file in the state dir (flip bytes).
    let mut corrupted = 0;
    for e in std::fs::read_dir(&supd.state).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("locks") {
            let mut b = std::fs::read(e.path()).unwrap();
            for x in b.iter_mut().take(40) {
                *x ^= 0x5a;
            }
            std::fs::write(e.path(), b).unwrap();
            corrupted += 1;
        }
    }
    assert!(
        corrupted > 0,
        "no lock file found in {}",
        supd.state.display()
    );
    supd.spawn(&Options::default());
    supd.wait_state("console", "running", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let st = supd.status();
    assert!(!st["lock_state_problem"].is_null(), "{st}");
    assert_eq!(
        supd.state_of("db"),
        "waiting",
        "non-essential unit started fail-open"
    );
    let human = supd.ok(&["status"]);
    assert!(human.contains("WARNING"), "{human}");
    // The bad files are kept for inspection.
    let kept = std::fs::read_dir(&supd.state)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
    assert!(kept, "corrupt files were not kept aside");
    supd.ok(&["maintenance", "recover", "--accept-empty"]);
    supd.wait_state("db", "running", Duration::from_secs(10));
}

/// Issue 13 item 2: with the current lock file damaged and the previous
/// generation valid, supd once loaded the older generation — the newest
/// acknowledged lock lost, the locked unit started, no warning. Writes are
/// tmp + fsync + rename, so a bad current file is corruption or tampering:
/// fail closed, keep it, say so. And deleting both files is not a first
/// run when the audit log shows locks were taken.
#[test]
fn corrupt_current_lock_file_never_rolls_back() {
    if !can_run("corrupt_current_lock_file") {
        return;
    }
    let db = sh_unit("exec sleep 600", "");
    let other = sh_unit("exec sleep 600", "");
    let console = sh_unit("exec sleep 600", "essential = true");
    let mut supd = Supd::start(
        "lockrollback",
        &[("db", &db), ("other", &other), ("console", &console)],
    );
    supd.wait_state("db", "running", Duration::from_secs(10));
    // Three generations: {other}, {}, {db}. The previous one is valid and
    // has no lock on db.
    supd.ok(&["maintenance", "on", "other", "--reason", "x"]);
    supd.ok(&["maintenance", "off", "other"]);
    supd.ok(&["maintenance", "on", "db", "--reason", "disk swap"]);
    supd.signal(Signal::SIGTERM);
    supd.wait_exit(Duration::from_secs(20));
    let cur = supd.state.join("locks.json");
    let mut bytes = std::fs::read(&cur).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x01;
    std::fs::write(&cur, &bytes).unwrap();

    supd.spawn(&Options::default());
    supd.wait_state("console", "running", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let st = supd.status();
    let problem = st["lock_state_problem"].as_str().unwrap_or("").to_string();
    assert!(
        problem.contains("locks.json") && problem.contains("locks.prev.json"),
        "no problem reported (rolled back?): {st}"
    );
    assert_eq!(supd.state_of("db"), "waiting", "db started: lock lost");
    assert_eq!(supd.state_of("other"), "waiting", "fail closed");
    assert_eq!(std::fs::read(&cur).unwrap(), bytes, "bad file not kept");
    assert!(supd.ok(&["status"]).contains("WARNING"));

    // Both files deleted: the audit log shows locks were taken, so this
    // is not a first run.
    supd.signal(Signal::SIGTERM);
    supd.wait_exit(Duration::from_secs(20));
    std::fs::remove_file(&cur).unwrap();
    std::fs::remove_file(supd.state.join("locks.prev.json")).unwrap();
    supd.spawn(&Options::default());
    supd.wait_state("console", "running", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let st = supd.status();
    let problem = st["lock_state_problem"].as_str().unwrap_or("").to_string();
    assert!(
        problem.contains("audit") && problem.contains("maintenance recover"),
        "{st}"
    );
    assert_eq!(supd.state_of("db"), "waiting");
    // The operator decides: here, start from no locks.
    supd.ok(&["maintenance", "recover", "--accept-empty"]);
    supd.wait_state("db", "running", Duration::from_secs(10));
    supd.wait_state("other", "running", Duration::from_secs(10));
}

/// Issue 13 item 8, on a real full filesystem: the state directory is a
/// 256 KiB tmpfs (in supd's own mount namespace) that the test fills up.
/// A lock write that fails with ENOSPC fails the command that asked for it,
/// keeps the old state on disk, holds the new lock in memory, and is
/// retried by supd once space is freed — and meanwhile an unrelated
/// crashed unit is restarted (it once waited for an operator).
#[test]
fn full_state_disk_fails_the_command_and_freezes_nothing() {
    if !can_run("full_state_disk") {
        return;
    }
    let units = [
        ("db", sh_unit("exec sleep 600", "")),
        ("cache", sh_unit("exec sleep 600", "")),
        (
            "web",
            sh_unit("exec sleep 600", "[restart]\ndelay = \"100ms\""),
        ),
    ];
    let refs: Vec<(&str, &str)> = units.iter().map(|(n, u)| (*n, u.as_str())).collect();
    let dir = TempDir::new("lockfull");
    let state = dir.path().join("state");
    let st = state.display().to_string();
    let supd = Supd::start_with(
        "lockfull",
        &refs,
        Options {
            state_dir: Some(state.clone()),
            setup_in_namespace: Some(format!(
                "mkdir -p {st}\nmount -t tmpfs -o size=256k,mode=0700 supd-state {st}"
            )),
            ..Options::default()
        },
    );
    supd.wait_state("web", "running", Duration::from_secs(10));
    supd.ok(&[
        "maintenance",
        "on",
        "db",
        "--reason",
        "before the disk fills",
    ]);
    let on_disk = |supd: &Supd| {
        let out = supd.in_ns(&["cat", &format!("{st}/locks.json")]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let before = on_disk(&supd);
    assert!(before.contains("\"db\""), "{before}");
    // Fill it: dd stops at ENOSPC.
    supd.in_ns(&[
        "sh",
        "-c",
        &format!("dd if=/dev/zero of={st}/fill bs=4k 2>/dev/null; true"),
    ]);
    let df = supd.in_ns(&["df", "-k", &st]);
    let df = String::from_utf8_lossy(&df.stdout).to_string();
    assert!(df.contains("100%"), "tmpfs not full:\n{df}");

    let out = supd.supctl(&["maintenance", "on", "cache", "--reason", "disk is full"]);
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "acknowledged on a full disk: {msg}"
    );
    assert!(
        msg.contains("No space left on device") && msg.contains("not on disk"),
        "{msg}"
    );
    assert_ne!(
        supd.state_of("cache"),
        "running",
        "a new lock holds at once"
    );
    assert_eq!(on_disk(&supd), before, "the old state must stay on disk");
    let status = supd.status();
    assert!(status["lock_state_problem"].is_null(), "{status}");
    assert!(
        status["lock_write_problem"]
            .as_str()
            .is_some_and(|p| p.contains("No space left")),
        "{status}"
    );
    // An unrelated crash is still restarted.
    let old = supd.unit("web")["pid"].as_i64().expect("web pid");
    supd.in_ns_ok(&["kill", "-9", &old.to_string()]);
    wait_for("web to be restarted", Duration::from_secs(10), || {
        let u = supd.unit("web");
        (u["state"] == "running" && u["pid"].as_i64() != Some(old)).then_some(())
    });
    // Space is freed: supd's own retry writes the lock.
    supd.in_ns_ok(&["rm", &format!("{st}/fill")]);
    wait_for("the retried write to land", Duration::from_secs(45), || {
        supd.status()["lock_write_problem"].is_null().then_some(())
    });
    let after = on_disk(&supd);
    assert!(
        after.contains("\"cache\"") && after.contains("\"db\""),
        "{after}"
    );
    assert!(supd.ok(&["status"]).contains("cache"));
    supd.ok(&["maintenance", "off", "db"]);
    supd.wait_state("db", "running", Duration::from_secs(10));
}

#[test]
fn non_root_peer_cannot_change_locks() {
    if !can_run("non_root_peer") {
        return;
    }
    let supd = Supd::start("lockperm", &[("db", &sh_unit("exec sleep 600", ""))]);
    supd.wait_state("db", "running", Duration::from_secs(10));
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", SUPCTL])
            .arg("--socket")
            .arg(&supd.socket)
            .args(args)
            .output()
            .expect("setpriv")
    };
    // Layer 1: the socket is 0600, so nobody cannot even connect. The
    // socket's directory is the test's temp dir; make it traversable.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(supd.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = as_nobody(&["maintenance", "on", "db", "--reason", "evil"]);
    assert_eq!(r.status.code(), Some(1));
    // Layer 2: even with the socket opened up, the peer-credential check
    // refuses changes (and logs the attempt).
    std::fs::set_permissions(&supd.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = as_nobody(&["maintenance", "on", "db", "--reason", "evil"]);
    assert_eq!(
        r.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    assert_eq!(supd.state_of("db"), "running");
    wait_for("refusal logged", Duration::from_secs(5), || {
        supd.log_text().contains("65534").then_some(())
    });
    // Reading is allowed.
    let r = as_nobody(&["status"]);
    assert!(r.status.success());
}

/// Issue 13 item 9: what an operator reads names the blocking unit, with
/// its reason, and a dry run lists the dependents that come back.
#[test]
fn hints_name_the_blocking_unit_and_dry_run_lists_dependents() {
    if !can_run("hints_name_blocker") {
        return;
    }
    let db = sh_unit("exec sleep 600", "");
    let web = sh_unit("exec sleep 600", "requires = [\"db\"]");
    let supd = Supd::start("hints", &[("db", &db), ("web", &web)]);
    supd.wait_state("web", "running", Duration::from_secs(10));
    supd.ok(&[
        "maintenance",
        "on",
        "db",
        "--reason",
        "upgrade",
        "--holder",
        "alice",
    ]);
    supd.wait_state("web", "waiting", Duration::from_secs(10));
    let why = supd.ok(&["why", "web"]);
    assert!(why.contains("`supctl maintenance off db`"), "{why}");
    let table = supd.ok(&["status"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("web"))
        .unwrap_or_default();
    assert!(line.contains("db: under maintenance"), "{table}");
    let dry = supd.ok(&["maintenance", "off", "db", "--holder", "alice", "--dry-run"]);
    assert!(dry.contains("db; then web"), "{dry}");
}

/// Issue 13 item 12(d): a holder or reason with control characters (a
/// terminal escape, a carriage return) is shown escaped by supctl, never
/// sent raw to the operator's terminal.
#[test]
fn control_characters_in_holder_and_reason_are_escaped() {
    if !can_run("escaped_holder_reason") {
        return;
    }
    let db = sh_unit("exec sleep 600", "");
    let supd = Supd::start("escape", &[("db", &db)]);
    supd.wait_state("db", "running", Duration::from_secs(10));
    supd.ok(&[
        "maintenance",
        "on",
        "db",
        "--reason",
        "disk\x1b[2J\x1b[31m swap\rFAKE\u{202e}",
        "--holder",
        "bob\x1b[0m",
    ]);
    let views: Vec<Vec<&str>> = vec![
        vec!["status"],
        vec!["status", "db"],
        vec!["why", "db"],
        vec!["maintenance", "list"],
        vec!["maintenance", "log"],
        vec!["start", "db"],
    ];
    for args in views {
        let out = supd.supctl(&args);
        let all = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
        let text = String::from_utf8_lossy(&all);
        assert!(
            !all.contains(&0x1b) && !all.contains(&b'\r') && !text.contains('\u{202e}'),
            "supctl {args:?} printed raw control characters: {text:?}"
        );
        assert!(text.contains("\\u{1b}"), "supctl {args:?}: {text:?}");
    }
}

/// Issue 13 item 12(c): a change is acknowledged only once its audit
/// record is on disk. The audit log is made a FIFO, so writing the record
/// waits until the test reads it: the reply must wait too (or say that the
/// record could not be written), never claim success first.
#[test]
fn a_change_is_acknowledged_only_after_its_audit_record() {
    if !can_run("audit_before_ack") {
        return;
    }
    let a = sh_unit("exec sleep 600", "");
    let supd = Supd::start("auditack", &[("a", &a)]);
    supd.wait_state("a", "running", Duration::from_secs(10));
    let log = supd.state.join("audit.log");
    let _ = std::fs::remove_file(&log);
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let mut stop = std::process::Command::new(SUPCTL)
        .arg("--socket")
        .arg(&supd.socket)
        .args(["--timeout", "30s", "stop", "a"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("supctl");
    std::thread::sleep(Duration::from_millis(1000));
    if let Ok(Some(_)) = stop.try_wait() {
        let out = stop.wait_with_output().expect("supctl output");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("audit record could not be written"),
            "acknowledged before its audit record was written: {text}"
        );
        return;
    }
    // Read the record: only then may the answer come.
    let rec = std::fs::read_to_string(&log).expect("read the fifo");
    assert!(rec.contains("\"stop\""), "{rec}");
    let st = wait_for("supctl stop to answer", Duration::from_secs(10), || {
        stop.try_wait().ok().flatten()
    });
    assert!(st.success());
    let _ = std::fs::remove_file(&log);
}

/// Issue 13 item 12(e): `maintenance log` reads only the tail of the audit
/// log, off the event loop: with a 1 GiB log (a sparse hole before the
/// records), supd answers other requests at once and the log quickly.
#[test]
fn maintenance_log_of_a_huge_audit_log_does_not_stall_supd() {
    if !can_run("huge_audit_log") {
        return;
    }
    let a = sh_unit("exec sleep 600", "");
    let supd = Supd::start("hugeaudit", &[("a", &a)]);
    supd.wait_state("a", "running", Duration::from_secs(10));
    let log = supd.state.join("audit.log");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    f.set_len(1 << 30).unwrap();
    use std::io::Write as _;
    (&f).write_all(b"\n").unwrap();
    drop(f);
    supd.ok(&["maintenance", "on", "a", "--reason", "after the hole"]);
    let sock = supd.socket.clone();
    let reader = std::thread::spawn(move || {
        let t0 = Instant::now();
        let out = std::process::Command::new(SUPCTL)
            .arg("--socket")
            .arg(&sock)
            .args(["maintenance", "log", "--limit", "3"])
            .output()
            .expect("supctl");
        (
            t0.elapsed(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    });
    std::thread::sleep(Duration::from_millis(30));
    let t0 = Instant::now();
    supd.ok(&["status"]);
    let status_took = t0.elapsed();
    let (log_took, text) = reader.join().unwrap();
    assert!(text.contains("after the hole"), "{text}");
    assert!(
        status_took < Duration::from_millis(300),
        "status took {status_took:?} while the audit log was read"
    );
    assert!(log_took < Duration::from_secs(2), "log took {log_took:?}");
}
