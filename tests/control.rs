//! The control socket under bad clients: garbage, a huge line, a
//! half-written request, a client that never writes, wrong versions — supd
//! keeps serving everyone else. Plus the socket's mode.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;

fn send_raw(sock: &std::path::Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn bad_clients_do_not_hurt_supd() {
    if !can_run("bad_clients") {
        return;
    }
    let supd = Supd::start("ctlbad", &[("a", &sh_unit("exec sleep 600", ""))]);
    supd.wait_state("a", "running", Duration::from_secs(10));

    // The socket is not world-accessible.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&supd.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    // Garbage.
    let r = send_raw(&supd.socket, b"\x00\xffhello there\n");
    assert!(
        r.contains("\"ok\":false") && r.contains("invalid request"),
        "{r}"
    );
    // Valid JSON, unknown command.
    let r = send_raw(&supd.socket, b"{\"v\":1,\"cmd\":\"explode\"}\n");
    assert!(r.contains("\"ok\":false"), "{r}");
    // Wrong protocol version.
    let r = send_raw(&supd.socket, b"{\"v\":99,\"cmd\":\"status\"}\n");
    assert!(r.contains("version"), "{r}");
    // Half-written request, then EOF.
    let r = send_raw(&supd.socket, b"{\"v\":1,\"cmd\":\"sta");
    assert!(r.contains("\"ok\":false"), "{r}");
    // A complete request without the newline is still served.
    let r = send_raw(&supd.socket, b"{\"v\":1,\"cmd\":\"status\"}");
    assert!(r.contains("\"ok\":true"), "{r}");

    // A huge line (4 MiB, no newline): refused without buffering it all.
    let sock = supd.socket.clone();
    let huge = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&sock).expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            if s.write_all(&chunk).is_err() {
                break; // supd closed on us: fine
            }
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    });
    let r = huge.join().unwrap();
    assert!(r.is_empty() || r.contains("larger than"), "{r}");

    // Clients that connect and never write do not block others.
    let idle: Vec<UnixStream> = (0..10)
        .map(|_| UnixStream::connect(&supd.socket).expect("connect"))
        .collect();
    let t0 = Instant::now();
    let st = supd.status();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "served late: {:?}",
        t0.elapsed()
    );
    assert_eq!(st["units"][0]["name"], "a");
    drop(idle);

    // Many concurrent clients.
    let handles: Vec<_> = (0..40)
        .map(|_| {
            let sock = supd.socket.clone();
            std::thread::spawn(move || send_raw(&sock, b"{\"v\":1,\"cmd\":\"status\"}\n"))
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert!(r.contains("\"ok\":"), "{r}");
    }
    // Still alive and well.
    assert_eq!(supd.state_of("a"), "running");
    let why = supd.ok(&["why", "a"]);
    assert!(why.contains("running"));
}

#[test]
fn second_supd_on_the_same_socket_or_state_is_refused() {
    if !can_run("second_supd") {
        return;
    }
    let supd = Supd::start("ctltwo", &[("a", &sh_unit("exec sleep 600", ""))]);
    let out = std::process::Command::new(SUPD)
        .args(["--units"])
        .arg(&supd.units)
        .arg("--state-dir")
        .arg(supd.dir.path().join("other-state"))
        .arg("--socket")
        .arg(&supd.socket)
        .arg("--config")
        .arg("/nonexistent")
        .output()
        .expect("second supd");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another supd"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Same state directory, another socket: the state is ours alone.
    let out = std::process::Command::new(SUPD)
        .args(["--units"])
        .arg(&supd.units)
        .arg("--state-dir")
        .arg(&supd.state)
        .arg("--socket")
        .arg(supd.dir.path().join("other.sock"))
        .arg("--config")
        .arg("/nonexistent")
        .output()
        .expect("second supd");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another supd") && err.contains("holds"),
        "{err}"
    );
}

/// Run `cmd` (stderr piped) until it exits, at most `timeout`; a child
/// still running then is killed by its pid. Returns its exit code (None if
/// it had to be killed) and its stderr.
fn run_bounded(cmd: &mut std::process::Command, timeout: Duration) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read as _;
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (code, err)
}

fn inode(p: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).ok().map(|m| m.ino())
}

/// Issue 13 item 11: a second supd that runs anyway (as PID 1 it must come
/// up) never deletes or replaces the first one's sockets, not even when it
/// exits.
#[test]
fn a_second_supd_as_pid1_leaves_the_first_ones_sockets_alone() {
    if !can_run("second_supd_pid1") {
        return;
    }
    let supd = Supd::start("ctlpid1", &[("a", &sh_unit("exec sleep 600", ""))]);
    let notify = supd.dir.path().join("notify.sock");
    let (ctl0, notify0) = (inode(&supd.socket), inode(&notify));
    assert!(ctl0.is_some() && notify0.is_some());
    for state in [supd.state.clone(), supd.dir.path().join("other-state")] {
        let mut b = std::process::Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child=SIGKILL",
                "--",
            ])
            .arg(SUPD)
            .arg("--units")
            .arg(&supd.units)
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(&supd.socket)
            .arg("--config")
            .arg("/nonexistent")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("second supd");
        let outer = b.id() as i32;
        let inner: i32 = wait_for("the second supd", Duration::from_secs(10), || {
            std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
        // Let it get past its start-up (where it would bind), then stop it.
        std::thread::sleep(Duration::from_millis(500));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(inner),
            nix::sys::signal::Signal::SIGTERM,
        );
        wait_for("the second supd to exit", Duration::from_secs(20), || {
            b.try_wait().ok().flatten()
        });
        let mut err = String::new();
        use std::io::Read as _;
        if let Some(mut e) = b.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        assert_eq!(inode(&supd.socket), ctl0, "control socket replaced: {err}");
        assert_eq!(inode(&notify), notify0, "notify socket replaced: {err}");
        assert_eq!(supd.state_of("a"), "running");
    }
}

/// Issue 13 item 11: `--socket` naming a file that is not a socket is
/// refused, and the file is kept.
#[test]
fn socket_path_that_is_a_regular_file_is_not_deleted() {
    if !can_run("socket_regular_file") {
        return;
    }
    let t = TempDir::new("sockfile");
    let units = t.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    let file = t.path().join("precious.txt");
    std::fs::write(&file, "do not delete").unwrap();
    let (code, err) = run_bounded(
        std::process::Command::new(SUPD)
            .arg("--units")
            .arg(&units)
            .arg("--state-dir")
            .arg(t.path().join("state"))
            .arg("--socket")
            .arg(&file)
            .arg("--config")
            .arg("/nonexistent"),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&file).ok().as_deref(),
        Some("do not delete")
    );
}

/// Issue 13 item 11: as a user without XDG_RUNTIME_DIR, the fallback
/// socket directory /tmp/supd-UID must be the user's own and not writable
/// by others; a squatted one is refused with what to do.
#[test]
fn fallback_socket_directory_must_be_the_users_own() {
    if !can_run("fallback_socket_dir") {
        return;
    }
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP fallback_socket_dir: setpriv not installed");
        return;
    }
    let t = TempDir::new("fallback");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let units = t.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    // uid 65534 (nobody) is used by this test only.
    let dir = std::path::PathBuf::from("/tmp/supd-65534");
    let _ = std::fs::remove_dir_all(&dir);
    let run = |wait: bool| {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(SUPD)
            .arg("--units")
            .arg(&units)
            .arg("--state-dir")
            .arg(t.path().join("state"))
            .arg("--config")
            .arg("/nonexistent")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("SUPD_SOCKET")
            .env("HOME", t.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if wait {
            let (code, err) = run_bounded(&mut c, Duration::from_secs(10));
            (code, err, None)
        } else {
            (
                None,
                String::new(),
                Some(c.spawn().expect("supd as nobody")),
            )
        }
    };
    // Squatted: someone else's directory, writable by all.
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, err, _) = run(true);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("/tmp/supd-65534") && err.contains("owned by uid 0"),
        "{err}"
    );
    assert!(!dir.join("control.sock").exists());
    // Its own, but writable by others: refused too.
    nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let (code, err, _) = run(true);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("writable by others"), "{err}");
    // Absent: created as the user's own, and used.
    std::fs::remove_dir_all(&dir).unwrap();
    let (_, _, child) = run(false);
    /// Ends the child by its pid if the test fails half-way.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(child.expect("running"));
    let sock = dir.join("control.sock");
    wait_for("the fallback socket", Duration::from_secs(10), || {
        sock.exists().then_some(())
    });
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(&dir).unwrap();
    assert_eq!(md.uid(), 65534);
    assert_eq!(md.mode() & 0o022, 0, "mode {:o}", md.mode());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    wait_for("supd to exit", Duration::from_secs(10), || {
        child.0.try_wait().ok().flatten()
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 13 item 12(b): 200 idle connections (here from outside supd's PID
/// namespace, so without a usable pid, and as root like the operator) do
/// not lock operators out: a new client evicts the oldest idle one.
#[test]
fn idle_connections_of_one_client_do_not_lock_operators_out() {
    if !can_run("idle_connections") {
        return;
    }
    let supd = Supd::start("ctlidle", &[("a", &sh_unit("exec sleep 600", ""))]);
    let idle: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&supd.socket).expect("connect"))
        .collect();
    // Let supd accept them all.
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let out = std::process::Command::new(SUPCTL)
        .arg("--socket")
        .arg(&supd.socket)
        .args(["--timeout", "3s", "status"])
        .output()
        .expect("supctl");
    assert!(
        out.status.success(),
        "operator locked out after {:?}: {}",
        t0.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    // The oldest idle connection made room, and was told why.
    let mut oldest = &idle[0];
    oldest
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut r = String::new();
    let _ = oldest.read_to_string(&mut r);
    assert!(r.contains("idle"), "{r}");
    drop(idle);
}

/// Issue 13 item 12(b), client side: a supd that closes the connection
/// without answering (as it does when busy) gets a clear message from
/// supctl, not "Broken pipe".
#[test]
fn supctl_says_busy_when_supd_closes_without_answering() {
    let t = TempDir::new("ctlclose");
    let sock = t.path().join("fake.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let server = std::thread::spawn(move || {
        for _ in 0..5 {
            match l.accept() {
                Ok((s, _)) => drop(s),
                Err(_) => return,
            }
        }
    });
    for _ in 0..5 {
        let out = std::process::Command::new(SUPCTL)
            .arg("--socket")
            .arg(&sock)
            .args(["--timeout", "5s", "status"])
            .output()
            .expect("supctl");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("busy") && !err.contains("Broken pipe"),
            "{err}"
        );
    }
    let _ = server.join();
}

/// Issue 13 item 12(b): where the client's pid is known (same PID
/// namespace), one process may hold only a few connections at once; the
/// next is told why.
#[test]
fn one_client_process_gets_a_bounded_share_of_connections() {
    if !can_run("per_pid_connections") {
        return;
    }
    // No namespace: supd sees this test's pid. No units, so nothing
    // outlives supd.
    let supd = Supd::start_with(
        "ctlperpid",
        &[],
        Options {
            namespace: false,
            ..Options::default()
        },
    );
    let idle: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&supd.socket).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let r = send_raw(&supd.socket, b"{\"v\":1,\"cmd\":\"status\"}\n");
    assert!(r.contains("busy") && r.contains("this client"), "{r}");
    // Another process (the operator's supctl) is served.
    supd.ok(&["status"]);
    drop(idle);
}

/// Issue 13 item 5: a FIFO named `*.toml` in the units directory, or given
/// to `maintenance recover --from`, once hung PID 1 (files were opened
/// synchronously on the event loop, and opening a FIFO waits for a
/// writer). Both are refused at once and supd keeps answering; a FIFO
/// present at boot does not stop supd from coming up.
#[test]
fn fifo_unit_file_or_recover_source_does_not_hang_supd() {
    if !can_run("fifo_unit_file") {
        return;
    }
    let mut supd = Supd::start("ctlfifo", &[("a", &sh_unit("exec sleep 600", ""))]);
    supd.wait_state("a", "running", Duration::from_secs(10));
    let fifo = supd.units.join("evil.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let t0 = Instant::now();
    let quick = |args: &[&str]| {
        std::process::Command::new(SUPCTL)
            .arg("--socket")
            .arg(&supd.socket)
            .args(["--timeout", "10s"])
            .args(args)
            .output()
            .expect("supctl")
    };
    let out = quick(&["reload"]);
    let msg = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(msg.contains("evil.toml") && msg.contains("FIFO"), "{msg}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // Recover from a FIFO: refused at once too.
    let src = supd.dir.path().join("locks-fifo");
    nix::unistd::mkfifo(&src, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = quick(&[
        "maintenance",
        "recover",
        "--from",
        &src.display().to_string(),
    ]);
    let msg = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(msg.contains("FIFO"), "{msg}");
    assert_eq!(supd.state_of("a"), "running");
    // At boot (PID 1): supd comes up with the valid units.
    supd.signal(nix::sys::signal::Signal::SIGTERM);
    supd.wait_exit(Duration::from_secs(20));
    supd.spawn(&Options::default());
    supd.wait_state("a", "running", Duration::from_secs(10));
    let st = supd.status();
    assert!(
        st["unit_file_problems"].to_string().contains("FIFO"),
        "{st}"
    );
}

#[test]
fn supctl_ends_quietly_when_its_reader_goes_away() {
    if !can_run("supctl_epipe") {
        return;
    }
    let supd = Supd::start("ctlpipe", &[("a", &sh_unit("exec sleep 600", ""))]);
    supd.wait_state("a", "running", Duration::from_secs(10));
    // The reader is gone before supctl writes: `supctl status | head -0`.
    let (rd, wr) = std::io::pipe().expect("pipe");
    drop(rd);
    let out = std::process::Command::new(SUPCTL)
        .arg("--socket")
        .arg(&supd.socket)
        .args(["status", "a"])
        .stdin(std::process::Stdio::null())
        .stdout(wr)
        .output()
        .expect("run supctl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "supctl panicked on EPIPE: {err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "supctl should end by SIGPIPE like any filter: {:?} {err}",
        out.status
    );
}
