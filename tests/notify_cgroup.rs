//! sd_notify with cgroup containment: a message is the unit's whose cgroup
//! the sender was in when supd received it — so a `systemd-notify
//! --no-block` that is gone by the time the event loop looks is still
//! attributed, even among several units of one user — and `MAINPID=` is
//! accepted only for a process in the unit's own cgroup.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

fn skip(test: &str) -> bool {
    !can_run(test) || !cgroup_writable(test)
}

#[test]
fn no_block_systemd_notify_of_several_units_of_one_user_is_attributed_by_cgroup() {
    if skip("no_block_notify_by_cgroup") {
        return;
    }
    if !Path::new("/usr/bin/systemd-notify").exists() {
        eprintln!(
            "SKIP no_block_notify_by_cgroup: /usr/bin/systemd-notify is not installed (./test.sh installs systemd)"
        );
        return;
    }
    // Four root units: the sender's uid cannot tell them apart, only its
    // cgroup can. Each tells a status of its own.
    let units: Vec<(String, String)> = (0..4)
        .map(|i| {
            (
                format!("n{i}"),
                format!(
                    "exec = [\"/bin/sh\", \"-c\", \"sleep 0.{i}; systemd-notify --ready --no-block --status=unit-{i}; exec sleep 1000\"]\n[ready]\nkind = \"notify\"\ntimeout = \"20s\"\n"
                ),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = units
        .iter()
        .map(|(n, u)| (n.as_str(), u.as_str()))
        .collect();
    let supd = Supd::start("nbcg", &refs);
    for i in 0..4 {
        let name = format!("n{i}");
        wait_for(&name, Duration::from_secs(20), || {
            (supd.unit(&name)["ready"] == true).then_some(())
        });
        let u = supd.unit(&name);
        assert_eq!(u["containment"], "cgroup", "{u}");
        let text = u.to_string();
        assert!(
            text.contains(&format!("unit-{i}")),
            "{name} got its own status: {u}"
        );
    }
}

#[test]
fn main_pid_of_another_units_cgroup_is_refused() {
    if skip("mainpid_other_cgroup") {
        return;
    }
    let t = TempDir::new("mainpid-cg");
    let pidfile = t.path().join("a.pid");
    let a = sh_unit(
        // (`$$` is supd's escape for a `$`.)
        &format!(
            "echo $$$$ > {}.tmp; mv {0}.tmp {0}; exec sleep 1000",
            pidfile.display()
        ),
        "",
    );
    // b names a's process (its own child would be accepted), then says
    // it is ready.
    let b = sh_unit(
        &format!(
            "while [ ! -s {p} ]; do sleep 0.05; done; python3 -c 'import os,socket,sys; s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM); s.sendto((\"MAINPID=%s\\nREADY=1\\n\" % open(sys.argv[1]).read().strip()).encode(), os.environ[\"NOTIFY_SOCKET\"])' {p}; exec sleep 1000",
            p = pidfile.display()
        ),
        "[ready]\nkind = \"notify\"\ntimeout = \"20s\"",
    );
    let supd = Supd::start("mainpid-cg", &[("a", &a), ("b", &b)]);
    wait_for("b ready", Duration::from_secs(20), || {
        (supd.unit("b")["ready"] == true).then_some(())
    });
    let a_pid = supd.unit("a")["pid"].as_i64();
    let b_pid = supd.unit("b")["pid"].as_i64();
    assert!(a_pid.is_some() && b_pid.is_some());
    assert_ne!(b_pid, a_pid, "b's main process stays its own");
    let log = wait_for("the refusal in supd's log", Duration::from_secs(10), || {
        let l = supd.log_text();
        l.contains("ignoring MAINPID=").then_some(l)
    });
    assert!(log.contains("not in its cgroup"), "{log}");
    // And a's run is untouched.
    assert_eq!(supd.state_of("a"), "running");
}

/// The mechanism itself: the socket's reading thread records the sender's
/// cgroup when the datagram arrives, so the event loop, getting to it
/// only after the sender has exited and been reaped, still knows where it
/// came from (reading /proc then, as before, finds nothing).
#[test]
fn the_senders_cgroup_is_recorded_when_the_datagram_arrives() {
    if !can_run("notify_cgroup_at_receipt") {
        return;
    }
    let t = TempDir::new("notify-receipt");
    let path = t.path().join("run").join("notify.sock");
    let sock = supd::world::notify::NotifySocket::bind(&path).expect("bind");
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import os,socket,sys,time; s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM); s.sendto(b'READY=1', sys.argv[1]); time.sleep(0.05)",
        ])
        .arg(&path)
        .spawn()
        .expect("python3");
    let pid = child.id() as i32;
    let own = supd::world::notify::cgroup_of(std::process::id() as i32);
    assert!(child.wait().expect("wait").success());
    // The event loop is busy elsewhere meanwhile.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the sender is gone"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), sock.recv()).await })
        .expect("a datagram within 10 s")
        .expect("received");
    assert_eq!(r.pid, pid);
    assert!(r.msg.ready);
    assert!(own.is_some());
    assert_eq!(r.cgroup, own, "the sender's cgroup (its parent's, here)");
}
