//! Socket activation (`[[listen]]`): supd binds the sockets, passes them
//! as fds 3.. with sd_listen_fds(3)'s variables, and keeps them bound
//! while the service is stopped or restarting — a client connecting then
//! is queued by the kernel, not refused. Real python3 services read the
//! variables the way libsystemd's sd_listen_fds_with_names does.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::Duration;

use common::*;

/// A python3 service that checks LISTEN_PID against its own pid (as
/// sd_listen_fds does), records what it got, then answers every
/// connection on fd 3 (and fd 4, TCP) with "PID NAMES\n" and every
/// datagram on fd 5 by appending it to `dgram_log`.
fn server(report: &Path, dgram_log: &Path, delay: f64) -> String {
    format!(
        r#"
import os, socket, select, time
pid = os.getpid()
n = int(os.environ.get("LISTEN_FDS", "0")) if os.environ.get("LISTEN_PID") == str(pid) else 0
names = os.environ.get("LISTEN_FDNAMES", "")
socks = [socket.socket(fileno=3 + i) for i in range(n)]
with open("{report}", "a") as f:
    f.write("%d %s %d %s %s\n" % (pid, os.environ.get("LISTEN_PID"), n, names,
        ",".join("%d/%d" % (s.family, s.type) for s in socks)))
time.sleep({delay})
while True:
    r, _, _ = select.select(socks, [], [])
    for s in r:
        if s.type == socket.SOCK_DGRAM:
            data = s.recv(4096)
            with open("{dgram}", "ab") as f:
                f.write(data + b"\n")
        else:
            c, _ = s.accept()
            c.sendall(("%d %s\n" % (pid, names)).encode())
            c.close()
"#,
        report = report.display(),
        dgram = dgram_log.display(),
    )
}

fn unit(script: &str, sock: &Path, port: u16, dgram: &Path) -> String {
    format!(
        "exec = [\"python3\", \"-u\", \"-c\", {}]\n\
         [restart]\npolicy = \"always\"\ndelay = \"100ms\"\n\
         [[listen]]\nstream = {}\nname = \"ctl\"\nmode = \"0600\"\n\
         [[listen]]\nstream = \"127.0.0.1:{port}\"\nname = \"tcp\"\n\
         [[listen]]\ndatagram = {}\nname = \"log\"\n",
        toml_str(script),
        toml_str(&sock.display().to_string()),
        toml_str(&dgram.display().to_string()),
    )
}

/// Connect, then read the service's one-line answer (bounded).
fn ask_unix(path: &Path) -> String {
    let mut c = UnixStream::connect(path).expect("connect to the passed unix socket");
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut s = String::new();
    let _ = c.read_to_string(&mut s);
    s
}

fn ask_tcp(port: u16) -> String {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port))
        .expect("connect to the passed TCP socket");
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut s = String::new();
    let _ = c.read_to_string(&mut s);
    s
}

fn main_pid(supd: &Supd, name: &str) -> i64 {
    wait_for("a main pid", Duration::from_secs(20), || {
        supd.unit(name)["pid"].as_i64()
    })
}

#[test]
fn sockets_are_passed_with_listen_variables() {
    if !can_run("listen_passed") {
        return;
    }
    need("python3", "python3");
    let dir = TempDir::new("listen");
    let sock = dir.path().join("run/svc.sock");
    let dgram = dir.path().join("run/log.sock");
    let report = dir.path().join("report");
    let dlog = dir.path().join("dgrams");
    let port = free_port();
    let u = unit(&server(&report, &dlog, 0.0), &sock, port, &dgram);
    let supd = Supd::start("listen", &[("svc", &u)]);
    let pid = main_pid(&supd, "svc");
    let answer = ask_unix(&sock);
    // The pid supd shows is the host's; the service sees its own
    // namespace's pid. Compare within the report instead.
    let rep = wait_for("the report", Duration::from_secs(20), || {
        std::fs::read_to_string(&report)
            .ok()
            .filter(|r| r.ends_with('\n'))
    });
    let f: Vec<&str> = rep.split_whitespace().collect();
    assert_eq!(f.len(), 5, "{rep}");
    assert_eq!(f[0], f[1], "LISTEN_PID is the service's own pid: {rep}");
    assert_eq!(f[2], "3", "LISTEN_FDS: {rep}");
    assert_eq!(f[3], "ctl:tcp:log", "LISTEN_FDNAMES: {rep}");
    // AF_UNIX=1 stream=1, AF_INET=2 stream=1, AF_UNIX datagram=2.
    assert_eq!(f[4], "1/1,2/1,1/2", "families/types of fds 3, 4, 5: {rep}");
    assert_eq!(answer.trim(), format!("{} ctl:tcp:log", f[0]), "{answer}");
    assert!(ask_tcp(port).starts_with(f[0]));
    // The datagram socket reaches the service too.
    let d = UnixDatagram::unbound().unwrap();
    d.send_to(b"hello", &dgram)
        .expect("send to the passed datagram socket");
    wait_for("the datagram", Duration::from_secs(20), || {
        std::fs::read_to_string(&dlog)
            .ok()
            .filter(|t| t.contains("hello"))
    });
    // The unix socket's file has the unit's mode.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // supd runs in its own PID namespace: the pid it shows is the one
    // the service sees as its own.
    assert_eq!(
        pid.to_string(),
        f[0],
        "supd's main pid is the LISTEN_PID process"
    );
}

#[test]
fn a_connection_during_stop_or_restart_is_queued_not_refused() {
    if !can_run("listen_restart") {
        return;
    }
    need("python3", "python3");
    let dir = TempDir::new("listenr");
    let sock = dir.path().join("svc.sock");
    let dgram = dir.path().join("log.sock");
    let report = dir.path().join("report");
    let dlog = dir.path().join("dgrams");
    let port = free_port();
    // Each process takes a second before it accepts: connections made
    // meanwhile must wait in the socket's queue.
    let u = unit(&server(&report, &dlog, 1.0), &sock, port, &dgram);
    let supd = Supd::start("listenr", &[("svc", &u)]);
    let first = ask_unix(&sock);
    let pid1 = first.split_whitespace().next().unwrap_or("").to_string();
    assert!(!pid1.is_empty(), "{first}");

    // Stopped: the socket stays bound and connect succeeds (queued).
    supd.ok(&["stop", "svc"]);
    supd.wait_state("svc", "stopped", Duration::from_secs(20));
    let mut waiting = UnixStream::connect(&sock).expect("connect while the service is stopped");
    let mut waiting_tcp = std::net::TcpStream::connect(("127.0.0.1", port))
        .expect("TCP connect while the service is stopped");
    supd.ok(&["start", "svc"]);
    waiting
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut s = String::new();
    let _ = waiting.read_to_string(&mut s);
    let pid2 = s.split_whitespace().next().unwrap_or("").to_string();
    assert!(
        !pid2.is_empty() && pid2 != pid1,
        "answered by the new process: {s:?}"
    );
    waiting_tcp
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut t = String::new();
    let _ = waiting_tcp.read_to_string(&mut t);
    assert!(t.starts_with(&pid2), "{t:?}");

    // Crash and automatic restart: connect right after the kill.
    let ns_pid = main_pid(&supd, "svc");
    supd.in_ns_ok(&["kill", "-9", &ns_pid.to_string()]);
    let s = ask_unix(&sock);
    let pid3 = s.split_whitespace().next().unwrap_or("").to_string();
    assert!(!pid3.is_empty() && pid3 != pid2, "{s:?}");

    // `supctl restart`: a client connected during it is answered.
    let mut c = UnixStream::connect(&sock).unwrap();
    supd.ok(&["restart", "svc"]);
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = c.write_all(b"");
    let mut s = String::new();
    let _ = c.read_to_string(&mut s);
    assert!(
        !s.is_empty(),
        "a connection made before the restart is answered"
    );
    let after = ask_unix(&sock);
    let pid4 = after.split_whitespace().next().unwrap_or("").to_string();
    assert!(!pid4.is_empty() && pid4 != pid3, "{after:?}");
}

#[test]
fn a_bad_listen_table_is_a_load_error_with_its_line() {
    let dir = TempDir::new("listenbad");
    std::fs::write(
        dir.path().join("a.toml"),
        "exec = [\"/bin/true\"]\n[[listen]]\nstream = \"localhost:80\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "exec = [\"/bin/true\"]\n[[listen]]\nstream = \"/run/b.sock\"\ndatagram = \"/run/c.sock\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "exec = [\"/bin/true\"]\n[[listen]]\nstream = \"/run/shared.sock\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("d.toml"),
        "exec = [\"/bin/true\"]\n[[listen]]\nseqpacket = \"/run/shared.sock\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(SUPD)
        .args(["check", "--units"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        err.contains("a.toml:2") && err.contains("host names are not resolved"),
        "{err}"
    );
    assert!(
        err.contains("b.toml:2") && err.contains("more than one"),
        "{err}"
    );
    assert!(
        err.contains("d.toml") && err.contains("which unit c already listens on"),
        "{err}"
    );
}

#[test]
fn sockets_stay_bound_across_a_reexec_of_supd() {
    if !can_run("listen_reexec") {
        return;
    }
    need("python3", "python3");
    let dir = TempDir::new("listenx");
    let sock = dir.path().join("svc.sock");
    let dgram = dir.path().join("log.sock");
    let report = dir.path().join("report");
    let dlog = dir.path().join("dgrams");
    let port = free_port();
    let u = unit(&server(&report, &dlog, 0.0), &sock, port, &dgram);
    let supd = Supd::start("listenx", &[("svc", &u)]);
    let first = ask_unix(&sock);
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&sock).unwrap().ino();
    supd.ok(&["reexec"]);
    wait_for(
        "supd back after the re-exec",
        Duration::from_secs(20),
        || (supd.supctl(&["status", "--json"]).status.success()).then_some(()),
    );
    // The running service still answers; a restart now reuses the
    // handed-over sockets instead of binding new ones.
    assert!(!ask_unix(&sock).is_empty());
    supd.ok(&["restart", "svc"]);
    let after = ask_unix(&sock);
    assert_ne!(
        first.split_whitespace().next(),
        after.split_whitespace().next(),
        "a new process answers: {first:?} {after:?}"
    );
    assert_eq!(
        std::fs::metadata(&sock).unwrap().ino(),
        ino,
        "the same socket file: it was not bound again"
    );
    assert!(!ask_tcp(port).is_empty());
}

/// A real Debian daemon: rsyslog, from its own unit file (Requires=
/// syslog.socket, which the import maps to a `[[listen]]` datagram socket
/// at /dev/log). The test moves the socket to its own directory (and
/// points rsyslog's system socket there) so the host's /dev/log is never
/// touched; rsyslog then takes the passed descriptor instead of binding
/// its own, says so, and logs what `logger` sends to it.
#[test]
fn rsyslog_from_its_debian_unit_takes_the_passed_socket() {
    if !can_run("listen_rsyslog") {
        return;
    }
    let Some(unit_file) = [
        "/lib/systemd/system/rsyslog.service",
        "/usr/lib/systemd/system/rsyslog.service",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists()) else {
        need("rsyslogd", "rsyslog");
        return;
    };
    need("logger", "bsdutils");
    let dir = TempDir::new("rsyslog");
    let out = dir.path().join("import");
    let imp = std::process::Command::new(SUPD)
        .args(["import", "--out"])
        .arg(&out)
        .arg(unit_file)
        .output()
        .expect("supd import");
    let err = String::from_utf8_lossy(&imp.stderr);
    assert!(
        imp.status.success(),
        "rsyslog.service imports with no refusal:\n{err}"
    );
    let text = std::fs::read_to_string(out.join("rsyslog.toml")).unwrap();
    assert!(text.contains("datagram = \"/dev/log\""), "{text}");
    let log = dir.path().join("log");
    let conf = dir.path().join("rsyslog.conf");
    let written = dir.path().join("messages");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{d}\")\nmodule(load=\"imuxsock\" SysSock.Name=\"{log}\")\n*.* action(type=\"omfile\" file=\"{w}\")\n",
            d = dir.path().display(),
            log = log.display(),
            w = written.display()
        ),
    )
    .unwrap();
    let text = text
        .replace("\"/dev/log\"", &toml_str(&log.display().to_string()))
        .replace(
            "\"-iNONE\"]",
            &format!(
                "\"-iNONE\", \"-f\", {}]",
                toml_str(&conf.display().to_string())
            ),
        );
    assert!(text.contains("\"-f\""), "{text}");
    let supd = Supd::start("rsyslog", &[("rsyslog", &text)]);
    // Type=notify: ready once rsyslogd says READY=1.
    wait_for("rsyslog ready", Duration::from_secs(30), || {
        (supd.unit("rsyslog")["ready"] == true).then_some(())
    });
    let sent = std::process::Command::new("logger")
        .args(["-d", "-u"])
        .arg(&log)
        .args(["-t", "supdtest", "hello through the passed socket"])
        .status()
        .unwrap();
    assert!(sent.success());
    let got = wait_for(
        "the message in rsyslog's file",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&written)
                .ok()
                .filter(|t| t.contains("hello through the passed socket"))
        },
    );
    // One socket is bound at that path, and it is supd's (rsyslog binding
    // its own would leave two: supd's, unlinked but still named so, and
    // rsyslog's): the message came through the descriptor supd passed,
    // which imuxsock found by its path among LISTEN_FDS.
    let path = log.display().to_string();
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let inodes: Vec<&str> = table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && f[7] == path).then(|| f[6])
        })
        .collect();
    assert_eq!(inodes.len(), 1, "one socket at {path}: {inodes:?}\n{got}");
    let held = std::fs::read_dir(format!("/proc/{}/fd", supd.pid))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|t| t.to_string_lossy() == format!("socket:[{}]", inodes[0]));
    assert!(held, "the socket at {path} is the one supd bound and holds");
}

/// `supd import` finds a service's `.socket` next to it (as a user
/// importing /lib/systemd/system/foo.service expects), maps it onto
/// `[[listen]]`, treats a symlinked name as the same unit, resolves an
/// `Alias=` name, and the imported unit really receives the socket.
#[test]
fn import_finds_sockets_and_aliases_next_to_the_unit() {
    let dir = TempDir::new("listenimp");
    let sys = dir.path().join("system");
    std::fs::create_dir_all(&sys).unwrap();
    let sock = dir.path().join("run/echo.sock");
    std::fs::write(
        sys.join("echo.socket"),
        format!(
            "[Unit]\nDescription=echo socket\n[Socket]\nListenStream={}\nSocketMode=0600\nFileDescriptorName=ctl\n[Install]\nWantedBy=sockets.target\n",
            sock.display()
        ),
    )
    .unwrap();
    std::fs::write(
        sys.join("echo.service"),
        "[Unit]\nRequires=echo.socket\nAfter=echo.socket\n[Service]\nExecStart=/usr/bin/python3 -c 'import os,socket; s=socket.socket(fileno=3); c,_=s.accept(); c.sendall(os.environ[\"LISTEN_FDNAMES\"].encode())'\n[Install]\nAlias=echod.service\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("echo.service", sys.join("echo-old.service")).unwrap();
    std::fs::write(
        sys.join("client.service"),
        "[Unit]\nRequires=echod.service echo.socket\nAfter=echod.service\n[Service]\nType=oneshot\nExecStart=/bin/true\n",
    )
    .unwrap();
    let out = dir.path().join("units");
    let imp = std::process::Command::new(SUPD)
        .args(["import", "--out"])
        .arg(&out)
        .arg(sys.join("echo-old.service"))
        .arg(sys.join("echo.service"))
        .arg(sys.join("client.service"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&imp.stderr);
    assert!(imp.status.success(), "{err}");
    assert!(
        err.contains("another name (a symlink) for echo.service"),
        "{err}"
    );
    assert!(
        !out.join("echo-old.toml").exists(),
        "the symlink is not a second unit"
    );
    let echo = std::fs::read_to_string(out.join("echo.toml")).unwrap();
    assert!(
        echo.contains("[[listen]]") && echo.contains("name = \"ctl\""),
        "{echo}"
    );
    let client = std::fs::read_to_string(out.join("client.toml")).unwrap();
    let v: toml::Value = toml::from_str(&client).unwrap();
    assert_eq!(
        v["requires"].as_array().map(|a| a.len()),
        Some(1),
        "echod.service and echo.socket are both echo: {client}"
    );
    if !can_run("listen_import_run") {
        return;
    }
    need("python3", "python3");
    let units: Vec<(String, String)> = ["echo"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                std::fs::read_to_string(out.join(format!("{n}.toml"))).unwrap(),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = units
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let supd = Supd::start("listenimp", &refs);
    main_pid(&supd, "echo");
    assert_eq!(ask_unix(&sock), "ctl");
}

/// The sockets are bound at boot, before the unit can start: a client
/// connecting while the unit still waits for what it requires is queued
/// and answered once it runs.
#[test]
fn sockets_are_bound_at_boot_before_the_unit_starts() {
    if !can_run("listen_boot") {
        return;
    }
    need("python3", "python3");
    let dir = TempDir::new("listenb");
    let sock = dir.path().join("svc.sock");
    let dgram = dir.path().join("log.sock");
    let report = dir.path().join("report");
    let dlog = dir.path().join("dgrams");
    let gate = dir.path().join("gate");
    let port = free_port();
    let u = format!(
        "requires = [\"gate\"]\n{}",
        unit(&server(&report, &dlog, 0.0), &sock, port, &dgram)
    );
    // The gate completes only once the test has connected.
    let g = format!(
        "type = \"oneshot\"\nexec = [\"/bin/sh\", \"-c\", {}]\n",
        toml_str(&format!(
            "while [ ! -e {} ]; do sleep 0.05; done",
            gate.display()
        ))
    );
    let supd = Supd::start("listenb", &[("svc", &u), ("gate", &g)]);
    let mut c = wait_for("the socket bound at boot", Duration::from_secs(20), || {
        UnixStream::connect(&sock).ok()
    });
    assert_ne!(supd.state_of("svc"), "running", "svc must still be waiting");
    std::fs::write(&gate, "").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut s = String::new();
    let _ = c.read_to_string(&mut s);
    assert!(
        s.contains("ctl:tcp:log"),
        "answered once the unit ran: {s:?}"
    );
}
