//! Container mode and the `supd -- CMD` shim: exit codes, signal
//! forwarding, orphan reaping, no TTY.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn shim(args: &[&str], in_ns: bool) -> std::process::Child {
    let mut cmd = if in_ns {
        let mut c = Command::new("unshare");
        c.args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child=SIGKILL",
            "--",
            SUPD,
            "--",
        ]);
        c
    } else {
        let mut c = Command::new(SUPD);
        c.arg("--");
        c
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shim")
}

fn wait_code(child: &mut std::process::Child) -> std::process::ExitStatus {
    wait_for("the shim to exit", Duration::from_secs(20), || {
        child.try_wait().ok().flatten()
    })
}

#[test]
fn shim_passes_exit_codes_through() {
    for in_ns in [false, true] {
        if in_ns && !can_run("shim_exit_codes_in_namespace") {
            continue;
        }
        let mut c = shim(&["/bin/sh", "-c", "exit 0"], in_ns);
        assert_eq!(wait_code(&mut c).code(), Some(0));
        let mut c = shim(&["/bin/sh", "-c", "exit 3"], in_ns);
        assert_eq!(wait_code(&mut c).code(), Some(3));
        let mut c = shim(&["/bin/sh", "-c", "kill -9 $$"], in_ns);
        assert_eq!(wait_code(&mut c).code(), Some(137), "128 + SIGKILL");
        let mut c = shim(&["/nonexistent/program"], in_ns);
        assert_eq!(wait_code(&mut c).code(), Some(127));
    }
}

#[test]
fn shim_forwards_signals_to_the_child() {
    let t = TempDir::new("shim-sig");
    let f = t.path().join("got");
    let script = format!(
        "for s in INT USR1 HUP; do trap \"echo $s >> {f}\" $s; done; trap 'echo TERM >> {f}; exit 0' TERM; echo up >> {f}; while :; do sleep 0.05; done",
        f = f.display()
    );
    let mut c = shim(&["/bin/sh", "-c", &script], false);
    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
    wait_for("child up", Duration::from_secs(10), || {
        std::fs::read_to_string(&f)
            .ok()?
            .contains("up")
            .then_some(())
    });
    for (sig, name) in [
        (nix::sys::signal::Signal::SIGUSR1, "USR1"),
        (nix::sys::signal::Signal::SIGHUP, "HUP"),
        (nix::sys::signal::Signal::SIGINT, "INT"),
    ] {
        nix::sys::signal::kill(pid, sig).unwrap();
        wait_for(
            &format!("{name} forwarded"),
            Duration::from_secs(10),
            || {
                std::fs::read_to_string(&f)
                    .ok()?
                    .contains(name)
                    .then_some(())
            },
        );
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = wait_code(&mut c);
    assert_eq!(
        st.code(),
        Some(0),
        "child's own exit code after its TERM trap"
    );
    assert!(std::fs::read_to_string(&f).unwrap().contains("TERM"));
}

#[test]
fn shim_reaps_orphans() {
    // Not PID 1 here, so the shim is a subreaper and we can watch its
    // children from outside.
    let mut c = shim(
        &[
            "/bin/sh",
            "-c",
            "i=0; while [ $i -lt 100 ]; do (sleep 0.2 &); i=$((i+1)); done; sleep 2",
        ],
        false,
    );
    let me = c.id() as i32;
    let zombies_or_orphans = || -> (usize, usize) {
        let kids = children_of(me);
        (kids.iter().filter(|(_, st)| *st == 'Z').count(), kids.len())
    };
    // The orphaned sleeps come to the shim, exit, and are reaped while the
    // main child still runs.
    wait_for("orphans reparented", Duration::from_secs(5), || {
        (zombies_or_orphans().1 > 1).then_some(())
    });
    wait_for("orphans reaped", Duration::from_secs(10), || {
        let (z, n) = zombies_or_orphans();
        (z == 0 && n == 1).then_some(())
    });
    assert_eq!(wait_code(&mut c).code(), Some(0));
}

#[test]
fn generate_docs_writes_man_pages_and_completions() {
    let t = TempDir::new("docs");
    {
        let out = Command::new(SUPCTL)
            .arg("generate-docs")
            .arg(t.path())
            .output()
            .expect("generate-docs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let man = std::fs::read_to_string(t.path().join("man/supctl.1")).unwrap();
    assert!(
        man.contains("maintenance"),
        "supctl(1) lacks its subcommands"
    );
    assert!(t.path().join("man/supd.1").exists());
    let bash = std::fs::read_to_string(t.path().join("completions/supctl.bash")).unwrap();
    assert!(bash.contains("maintenance"));
}
