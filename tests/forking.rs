//! `type = "forking"` without `pid_file`: with cgroup containment the main
//! process is named from the unit's cgroup once the start command exits
//! (the one process whose parent is outside the group, as systemd
//! guesses); with several such, the unit runs on without a main process,
//! tracked by its cgroup; without cgroups `supd check` refuses it. Real
//! double-forking daemons: tests/fixtures/forkd.c, and Debian's apache2
//! from its own unit file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

/// tests/fixtures/forkd.c, compiled once per run; None (with a printed
/// reason) when there is no C compiler.
fn forkd() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| c_fixture("forkd")).as_deref()
}

fn skip(test: &str) -> bool {
    !can_run(test) || !cgroup_writable(test)
}

fn read_pid(p: &Path) -> i64 {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(-1)
}

#[test]
fn forking_without_pid_file_names_the_root_of_the_cgroup() {
    if skip("forking_without_pid_file_names_the_root") {
        return;
    }
    let Some(bin) = forkd() else { return };
    let t = TempDir::new("fork-one");
    let dir = t.path().display().to_string();
    let unit = format!(
        "type = \"forking\"\nexec = [{}, {}, \"one\"]\n[stop]\ntimeout = \"5s\"\n",
        toml_str(&bin.display().to_string()),
        toml_str(&dir)
    );
    let supd = Supd::start("fork-one", &[("d", &unit)]);
    supd.wait_state("d", "running", Duration::from_secs(20));
    // The daemon and its two workers; the start process and the
    // intermediate child are gone.
    wait_for(
        "the daemon and its workers",
        Duration::from_secs(10),
        || (processes_with(&dir).len() == 3).then_some(()),
    );
    let u = supd.unit("d");
    assert_eq!(u["containment"], "cgroup", "{u}");
    let main = read_pid(&t.path().join("main.pid"));
    assert_eq!(
        u["pid"].as_i64(),
        Some(main),
        "the main process is the daemon (not a worker, not the start process): {u}\n{}",
        supd.log_text()
    );
    supd.ok(&["stop", "d"]);
    assert_eq!(processes_with(&dir), Vec::<i32>::new(), "after stop");
    assert_eq!(supd.state_of("d"), "stopped");
}

#[test]
fn forking_without_a_nameable_main_process_is_tracked_by_its_cgroup() {
    if skip("forking_without_a_nameable_main") {
        return;
    }
    let Some(bin) = forkd() else { return };
    let t = TempDir::new("fork-two");
    let dir = t.path().display().to_string();
    let unit = format!(
        "type = \"forking\"\nexec = [{}, {}, \"two\"]\n[stop]\ntimeout = \"5s\"\n[restart]\npolicy = \"never\"\n",
        toml_str(&bin.display().to_string()),
        toml_str(&dir)
    );
    let supd = Supd::start("fork-two", &[("d", &unit)]);
    supd.wait_state("d", "running", Duration::from_secs(20));
    wait_for(
        "two daemons and their workers",
        Duration::from_secs(10),
        || (processes_with(&dir).len() == 6).then_some(()),
    );
    let u = supd.unit("d");
    assert!(u["pid"].is_null(), "no main process can be named: {u}");
    // `stop` signals the whole group and answers once it is empty.
    supd.ok(&["stop", "d"]);
    assert_eq!(processes_with(&dir), Vec::<i32>::new(), "after stop");
    assert_eq!(supd.state_of("d"), "stopped");

    // Started again, it ends by itself when its last process is gone.
    for f in ["up1", "up2"] {
        let _ = std::fs::remove_file(t.path().join(f));
    }
    supd.ok(&["start", "d"]);
    supd.wait_state("d", "running", Duration::from_secs(20));
    wait_for("the daemons again", Duration::from_secs(10), || {
        (processes_with(&dir).len() == 6).then_some(())
    });
    for pid in processes_with(&dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_for(
        "the unit to end with its group",
        Duration::from_secs(10),
        || (supd.unit("d")["state"] != "running").then_some(()),
    );
}

#[test]
fn check_refuses_forking_without_pid_file_where_there_is_no_cgroup2() {
    if !can_run("check_refuses_forking_without_pid_file") {
        return;
    }
    let t = TempDir::new("fork-check");
    let units = t.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(
        units.join("d.toml"),
        "type = \"forking\"\nexec = [\"/bin/true\"]\n",
    )
    .unwrap();
    // A mount namespace where no cgroup2 is mounted.
    let script = format!(
        "for m in $(awk '$9 == \"cgroup2\" {{print $5}}' /proc/self/mountinfo); do umount -l \"$m\" || exit 3; done; exec {SUPD} check --units {}",
        units.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("d.toml:1") && err.contains("without `pid_file`") && err.contains("cgroup"),
        "{err}"
    );
    // With it (and a pid file not needed), the same unit is valid.
    if supd::world::cgroup::hierarchy().is_some() {
        let out = Command::new(SUPD)
            .args(["check", "--units"])
            .arg(&units)
            .output()
            .expect("supd check");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Debian's apache2.service as is: `Type=forking` without `PIDFile=`
/// (`apachectl start`). Its config is the package's, with the test's
/// port; /run and its logs are the test's.
#[test]
fn apache2_from_its_debian_unit_serves_and_its_main_process_is_the_parent() {
    let unit = "/lib/systemd/system/apache2.service";
    if !have(
        "imported_apache2",
        &[unit, "/usr/sbin/apache2", "/usr/sbin/apachectl"],
    ) || !cgroup_writable("imported_apache2")
    {
        return;
    }
    let t = TempDir::new("imp-apache2");
    let port = free_port();
    let ports = t.path().join("ports.conf");
    std::fs::write(&ports, format!("Listen 127.0.0.1:{port}\n")).unwrap();
    let www = t.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from debian's apache2 unit\n").unwrap();
    let site = t.path().join("000-default.conf");
    std::fs::write(
        &site,
        format!(
            // (PrivateTmp=: the test's /tmp is not the service's; its
            // files are bound over /var/www/html.)
            "<VirtualHost 127.0.0.1:{port}>\nDocumentRoot /var/www/html\n</VirtualHost>\n"
        ),
    )
    .unwrap();
    let logs = t.path().join("log");
    std::fs::create_dir_all(&logs).unwrap();
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(t.path()));
    let supd = Supd::start("impapache", &[]);
    supd.in_ns_ok(&["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", "/run"]);
    // What a booted Debian has in /run (/var/lock is a link to it).
    supd.in_ns_ok(&["mkdir", "-m", "1777", "/run/lock"]);
    for (src, dst) in [
        (&ports, "/etc/apache2/ports.conf"),
        (&site, "/etc/apache2/sites-available/000-default.conf"),
        (&logs, "/var/log/apache2"),
        (&www, "/var/www/html"),
    ] {
        supd.in_ns_ok(&["mount", "--bind", &src.display().to_string(), dst]);
    }
    let out = Command::new(SUPD)
        .args(["import", "--out"])
        .arg(&supd.units)
        .arg(unit)
        .output()
        .expect("supd import");
    let report = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "apache2.service imports with no refusal:\n{report}"
    );
    supd.ok(&["reload"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while supd.unit("apache2")["state"] != "running" {
        assert_ne!(
            supd.unit("apache2")["state"],
            "failed",
            "{}",
            supd.log_text()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "apache2 not running: {}\n{}",
            supd.unit("apache2"),
            supd.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = wait_for("apache2 answers", Duration::from_secs(20), || {
        let out = Command::new("python3")
            .args([
                "-c",
                &format!("import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{port}/').read().decode())"),
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    });
    assert!(body.contains("hello from debian's apache2 unit"), "{body}");
    // The main process supd named is the one apache2 itself writes to its
    // pid file: the parent of the workers.
    let pid = supd.unit("apache2")["pid"].as_i64();
    let in_file = supd.in_ns(&["cat", "/run/apache2/apache2.pid"]);
    assert_eq!(
        String::from_utf8_lossy(&in_file.stdout)
            .trim()
            .parse::<i64>()
            .ok(),
        pid,
        "{}",
        supd.log_text()
    );
    // ExecReload (`apachectl graceful`) keeps the same main process.
    supd.ok(&["reload-unit", "apache2"]);
    // ExecStop (`apachectl graceful-stop`), then the group is empty.
    supd.ok(&["stop", "apache2"]);
    assert!(supd.unit("apache2")["pid"].is_null());
    assert_eq!(supd.state_of("apache2"), "stopped");
}

/// `[resources] delegate = true` (systemd's Delegate=yes): the unit's
/// group belongs to its user, who may make sub-groups and move its own
/// processes into them; supd still stops everything below its group.
#[test]
fn a_delegated_group_belongs_to_the_units_user_who_makes_sub_groups() {
    if skip("delegated_group") {
        return;
    }
    let t = TempDir::new("delegate");
    run_ok(Command::new("chmod").args(["0777"]).arg(t.path()));
    // As nobody: make a sub-group of its own group, move into it, start
    // a worker there.
    let script = r#"
import os, sys
out = sys.argv[1]
mount = [l.split()[4] for l in open("/proc/self/mountinfo") if l.split(" - ")[1].startswith("cgroup2 ")][0]
own = [l[3:].strip() for l in open("/proc/self/cgroup") if l.startswith("0::")][0]
sub = mount + own + "/worker"
try:
    os.mkdir(sub)
    with open(sub + "/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
    res = "moved"
except OSError as e:
    res = "errno %d" % e.errno
with open(out + ".tmp", "w") as f:
    f.write(res)
os.rename(out + ".tmp", out)
import time
time.sleep(1000)
"#;
    let py = t.path().join("delegated.py");
    std::fs::write(&py, script).unwrap();
    let unit = |out: &str, delegate: bool| {
        format!(
            "user = \"nobody\"\nexec = [\"python3\", {}, {}]\n[stop]\ntimeout = \"5s\"\n[resources]\ndelegate = {delegate}\n",
            toml_str(&py.display().to_string()),
            toml_str(&t.path().join(out).display().to_string())
        )
    };
    let (d, plain) = (unit("d.out", true), unit("p.out", false));
    let supd = Supd::start("delegate", &[("d", &d), ("p", &plain)]);
    let read = |n: &str| {
        let p = t.path().join(n);
        wait_for(n, Duration::from_secs(20), || {
            std::fs::read_to_string(&p).ok()
        })
    };
    assert_eq!(read("d.out"), "moved", "{}", supd.log_text());
    assert_eq!(read("p.out"), format!("errno {}", libc::EACCES));
    // The group directory is nobody's.
    let cg = supd.unit("d")["cgroup"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mount = supd::world::cgroup::hierarchy().expect("cgroup2");
    let dir = mount.join(cg.trim_start_matches('/'));
    use std::os::unix::fs::MetadataExt;
    let nobody = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("user nobody");
    assert_eq!(
        std::fs::metadata(&dir).map(|m| m.uid()).ok(),
        Some(nobody.uid.as_raw()),
        "{}",
        dir.display()
    );
    assert!(dir.join("worker").is_dir());
    // Stopping it stops what lives in its sub-group, and the sub-group
    // goes with the group.
    let token = t.path().join("d.out").display().to_string();
    assert_eq!(processes_with(&token).len(), 1);
    let t0 = std::time::Instant::now();
    supd.ok(&["stop", "d"]);
    // The stop signal reached the sub-group (not only the timeout's kill).
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert_eq!(processes_with(&token), Vec::<i32>::new());
    assert_eq!(supd.state_of("d"), "stopped");
}
