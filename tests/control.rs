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
