//! Debian's own unit files, imported with `supd import` and run under
//! supd as real daemons: redis answers PING, nginx serves, PostgreSQL
//! (postgresql@, an instance of the template) accepts a query, sshd accepts
//! a connection.
//!
//! Each test runs supd in a fresh PID + mount namespace where /run is a
//! tmpfs and the daemon's configuration and data directories are bound
//! over with the test's own (a free port, a temporary data directory), so
//! the host's files, pid files and ports are never touched. The unit files
//! are the installed packages' (./test.sh installs them as root).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// supd with no units yet, /run private to its namespace.
fn supd_with_private_run(tag: &str) -> Supd {
    let supd = Supd::start(tag, &[]);
    supd.in_ns_ok(&["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", "/run"]);
    supd
}

/// Bind `src` over `dst` inside supd's namespace.
fn bind(supd: &Supd, src: &Path, dst: &str) {
    supd.in_ns_ok(&["mount", "--bind", &src.display().to_string(), dst]);
}

/// `supd import --lossy --out UNITS files...`; the refusals it printed.
fn import(supd: &Supd, files: &[&str]) -> String {
    let out = Command::new(SUPD)
        .args(["import", "--lossy", "--out"])
        .arg(&supd.units)
        .args(files)
        .output()
        .expect("supd import");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "supd import failed:\n{err}");
    err
}

/// Wait for `what` about `unit`; on timeout, fail with supd's log.
fn wait_unit(
    supd: &Supd,
    what: &str,
    timeout: Duration,
    f: impl Fn(&serde_json::Value) -> bool,
    unit: &str,
) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f(&supd.unit(unit)) {
            return;
        }
        if std::time::Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; status: {}\n--- supd log ---\n{}",
                supd.unit(unit),
                supd.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Does supd (root here) hold CAP_SYS_RESOURCE? Some sandboxes take it
/// away; then a unit cannot raise its file limit above supd's own or lower
/// its OOM score, and supd says so at the start.
fn have_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|m| m & (1 << 24) != 0)
}

/// Debian's unit file as is, copied with a drop-in (systemd's own way to
/// adjust a unit) only where this machine cannot do what it asks.
fn unit_here(dir: &Path, unit: &str, without_sys_resource: &str) -> String {
    if have_sys_resource() {
        return unit.to_string();
    }
    let name = Path::new(unit)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let copy = dir.join(&name);
    std::fs::copy(unit, &copy).unwrap();
    let d = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("no-cap-sys-resource.conf"), without_sys_resource).unwrap();
    eprintln!(
        "NOTE: no CAP_SYS_RESOURCE here; importing {name} with the drop-in {without_sys_resource:?}"
    );
    copy.display().to_string()
}

fn chown(path: &Path, owner: &str) {
    run_ok(Command::new("chown").args(["-R", owner]).arg(path));
}

fn mkdir(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn redis_from_its_debian_unit_answers_ping() {
    let unit = "/lib/systemd/system/redis-server.service";
    if !have(
        "imported_redis",
        &[unit, "/usr/bin/redis-server", "/usr/bin/redis-cli"],
    ) {
        return;
    }
    let dir = TempDir::new("imp-redis");
    let port = free_port();
    let conf = dir.path().join("redis.conf");
    // Debian's config with the test's port; its paths stay Debian's (and
    // land in the bound directories below).
    let debian = std::fs::read_to_string("/etc/redis/redis.conf").unwrap_or_default();
    let ours: String = debian
        .lines()
        .filter(|l| !l.starts_with("port ") && !l.starts_with("bind "))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + &format!("port {port}\nbind 127.0.0.1\n");
    std::fs::write(&conf, ours).unwrap();
    run_ok(Command::new("chmod").args(["644"]).arg(&conf));
    let lib = mkdir(dir.path(), "lib");
    let log = mkdir(dir.path(), "log");
    chown(&lib, "redis:redis");
    chown(&log, "redis:redis");
    let supd = supd_with_private_run("impredis");
    bind(&supd, &conf, "/etc/redis/redis.conf");
    bind(&supd, &lib, "/var/lib/redis");
    bind(&supd, &log, "/var/log/redis");
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, h)| h)
        .unwrap_or(1024);
    let unit = unit_here(
        dir.path(),
        unit,
        &format!("[Service]\nLimitNOFILE={}\n", hard.min(65535)),
    );
    let report = import(&supd, &[&unit]);
    // Everything in Debian's unit is honoured: the seccomp filter, the
    // private user namespace, RemoveIPC= included.
    assert!(report.contains(": 0 refused"), "{report}");
    supd.ok(&["reload"]);
    wait_unit(
        &supd,
        "redis ready (READY=1 from redis itself)",
        Duration::from_secs(60),
        |u| u["ready"] == true,
        "redis-server",
    );
    let pong = run_ok(Command::new("redis-cli").args(["-p", &port.to_string(), "ping"]));
    assert_eq!(pong.trim(), "PONG");
    // Its sandbox holds: the service's /usr is read-only.
    let pid = supd.unit("redis-server")["pid"].as_i64().unwrap();
    let status = supd.in_ns(&["cat", &format!("/proc/{pid}/status")]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    // Its seccomp filter is installed (mode 2: filter): the call list and
    // the argument checks (LockPersonality=, MemoryDenyWriteExecute=...).
    assert!(text.contains("Seccomp:\t2"), "{text}");
    assert!(text.contains("Seccomp_filters:\t2"), "{text}");
    // PrivateUsers=: root and redis alone are mapped.
    let map = supd.in_ns(&["cat", &format!("/proc/{pid}/uid_map")]);
    assert_eq!(
        String::from_utf8_lossy(&map.stdout).lines().count(),
        2,
        "{}",
        String::from_utf8_lossy(&map.stdout)
    );
    supd.ok(&["stop", "redis-server"]);
}

#[test]
fn nginx_from_its_debian_unit_serves() {
    let unit = "/lib/systemd/system/nginx.service";
    if !have("imported_nginx", &[unit, "/usr/sbin/nginx"]) {
        return;
    }
    let dir = TempDir::new("imp-nginx");
    let port = free_port();
    let www = mkdir(dir.path(), "www");
    std::fs::write(www.join("index.html"), "hello from debian's nginx unit\n").unwrap();
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(dir.path()));
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "user www-data;\nworker_processes 1;\npid /run/nginx.pid;\nerror_log stderr;\nevents {{}}\n\
             http {{ access_log off; server {{ listen 127.0.0.1:{port}; root {}; }} }}\n",
            www.display()
        ),
    )
    .unwrap();
    run_ok(Command::new("chmod").args(["644"]).arg(&conf));
    let supd = supd_with_private_run("impnginx");
    bind(&supd, &conf, "/etc/nginx/nginx.conf");
    let report = import(&supd, &[unit]);
    assert!(!report.contains("not honoured"), "{report}");
    supd.ok(&["reload"]);
    // Type=forking: running once the start command exited and the pid
    // file named the master.
    wait_unit(
        &supd,
        "nginx running",
        Duration::from_secs(60),
        |u| u["state"] == "running",
        "nginx",
    );
    let body = wait_for("nginx answers", Duration::from_secs(20), || {
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
    assert!(body.contains("hello from debian's nginx unit"), "{body}");
    // The main process is the master from /run/nginx.pid.
    let pid = supd.unit("nginx")["pid"].as_i64().unwrap();
    let in_file = supd.in_ns(&["cat", "/run/nginx.pid"]);
    assert_eq!(
        String::from_utf8_lossy(&in_file.stdout).trim(),
        pid.to_string()
    );
    // ExecReload is a command: `nginx -s reload`.
    supd.ok(&["reload-unit", "nginx"]);
    // ExecStop (start-stop-daemon with QUIT) stops it.
    supd.ok(&["stop", "nginx"]);
    assert!(supd.unit("nginx")["pid"].is_null());
}

#[test]
fn postgresql_instance_from_its_debian_template_accepts_a_query() {
    let tpl = "/lib/systemd/system/postgresql@.service";
    if !have(
        "imported_postgresql",
        &[
            tpl,
            "/lib/systemd/system/postgresql.service",
            "/usr/bin/pg_createcluster",
            "/usr/lib/postgresql/15/bin/postgres",
        ],
    ) {
        return;
    }
    let dir = TempDir::new("imp-pg");
    let port = free_port();
    let etc = mkdir(dir.path(), "etc");
    let lib = mkdir(dir.path(), "lib");
    let log = mkdir(dir.path(), "log");
    for d in [&etc, &lib, &log] {
        chown(d, "postgres:postgres");
    }
    run_ok(Command::new("chmod").args(["755"]).arg(dir.path()));
    let supd = supd_with_private_run("imppg");
    bind(&supd, &etc, "/etc/postgresql");
    bind(&supd, &lib, "/var/lib/postgresql");
    bind(&supd, &log, "/var/log/postgresql");
    supd.in_ns_ok(&[
        "pg_createcluster",
        "15",
        "supdtest",
        "-p",
        &port.to_string(),
        "--",
        "--auth=trust",
    ]);
    let tpl = unit_here(dir.path(), tpl, "[Service]\nOOMScoreAdjust=0\n");
    let report = import(&supd, &[&tpl, "/lib/systemd/system/postgresql.service"]);
    assert!(!report.contains("not honoured"), "{report}");
    let tpl_text = std::fs::read_to_string(supd.units.join("postgresql@.toml")).unwrap();
    assert!(
        tpl_text.contains("part_of = [\"postgresql\"]"),
        "{tpl_text}"
    );
    // `supctl enable`'s way: the instance is a symlink to the template.
    std::os::unix::fs::symlink(
        "postgresql@.toml",
        supd.units.join("postgresql@15-supdtest.toml"),
    )
    .unwrap();
    supd.ok(&["reload"]);
    wait_unit(
        &supd,
        "postgresql@15-supdtest running",
        Duration::from_secs(90),
        |u| u["state"] == "running",
        "postgresql@15-supdtest",
    );
    let out = wait_for("a query", Duration::from_secs(30), || {
        let o = supd.in_ns(&[
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-h",
            "/run/postgresql",
            "-p",
            &port.to_string(),
            "-tAc",
            "select 6 * 7",
        ]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).to_string())
    });
    assert_eq!(out.trim(), "42");
    // ReloadPropagatedFrom: reloading the umbrella reloads the cluster
    // (pg_ctlcluster reload).
    let r = supd.ok(&["reload-unit", "postgresql"]);
    assert!(r.contains("postgresql@15-supdtest"), "{r}");
    // PartOf: stopping the umbrella stops the cluster, through
    // pg_ctlcluster stop.
    supd.ok(&["stop", "postgresql"]);
    wait_unit(
        &supd,
        "postgresql@15-supdtest stopped with postgresql",
        Duration::from_secs(60),
        |u| u["pid"].is_null(),
        "postgresql@15-supdtest",
    );
    let st = supd.in_ns(&["pg_lsclusters", "-h"]);
    assert!(
        String::from_utf8_lossy(&st.stdout).contains("down"),
        "{}",
        String::from_utf8_lossy(&st.stdout)
    );
}

#[test]
fn sshd_from_its_debian_unit_accepts_a_connection() {
    let unit = "/lib/systemd/system/ssh.service";
    if !have(
        "imported_sshd",
        &[unit, "/usr/sbin/sshd", "/etc/ssh/ssh_host_ed25519_key"],
    ) {
        return;
    }
    let dir = TempDir::new("imp-ssh");
    let port = free_port();
    // The unit reads /etc/default/ssh for $SSHD_OPTS.
    let defaults = dir.path().join("ssh-defaults");
    std::fs::write(
        &defaults,
        format!("SSHD_OPTS=\"-p {port} -o ListenAddress=127.0.0.1\"\n"),
    )
    .unwrap();
    let supd = supd_with_private_run("impssh");
    bind(&supd, &defaults, "/etc/default/ssh");
    let report = import(&supd, &[unit]);
    assert!(!report.contains("not honoured"), "{report}");
    supd.ok(&["reload"]);
    wait_unit(
        &supd,
        "sshd ready (READY=1 from sshd)",
        Duration::from_secs(60),
        |u| u["ready"] == true,
        "ssh",
    );
    let banner = wait_for("the SSH banner", Duration::from_secs(20), || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).to_string())
    });
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner}");
    // ExecReload: `sshd -t`, then SIGHUP to $MAINPID.
    supd.ok(&["reload-unit", "ssh"]);
    supd.ok(&["stop", "ssh"]);
}
