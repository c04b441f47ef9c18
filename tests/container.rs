//! supd in a real container runtime: podman with runc, an image built from
//! packaging/container/Dockerfile (FROM scratch, the static musl supd) by
//! packaging/container/build.sh, plus a static busybox for commands. As the
//! shim (`ENTRYPOINT ["/supd", "--"]`): `podman stop` ends `sleep` by
//! SIGTERM (exit 143) long before the stop timeout would SIGKILL it, exit
//! codes pass through, orphans are reaped, `podman run -it IMAGE sh` gives
//! a working prompt and ^C. As the supervisor with a few
//! units: `podman stop` stops them in reverse dependency order and the
//! container exits 0.
//!
//! Skips, saying why, when not root, when podman/runc/busybox are missing,
//! or when this machine cannot run any container at all (the probe's own
//! error is printed); every assertion after that is a real failure.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Global flags: runc and plain cgroupfs work on hybrid-cgroup hosts
/// without systemd; events to a file, not journald.
const PODMAN: [&str; 5] = [
    "--runtime",
    "runc",
    "--cgroup-manager=cgroupfs",
    "--events-backend=file",
    "--log-level=error",
];

/// Per-container flags. runc sets these limits with prlimit; podman's
/// defaults (nofile 1048576, nproc unlimited) need CAP_SYS_RESOURCE, which
/// a sandbox may not grant.
const RUN: [&str; 6] = [
    "--network=none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
    "--rm=false",
];

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(PODMAN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run podman")
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn skip(reason: &str) -> Option<Images> {
    eprintln!("SKIP container: {reason}");
    None
}

/// Images built for this test run; removed on drop.
struct Images {
    base: String,
    shim: String,
    supervisor: String,
    _ctx: TempDir,
}

impl Drop for Images {
    fn drop(&mut self) {
        for i in [&self.shim, &self.supervisor, &self.base] {
            let _ = podman(&["rmi", "-f", i]);
        }
    }
}

/// A container by name; removed (killed first) on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
    }
}

fn setup() -> Option<Images> {
    if !can_run("container") {
        return None;
    }
    for (tool, pkg) in [("podman", "podman"), ("runc", "runc")] {
        if Command::new(tool).arg("--version").output().is_err() {
            return skip(&format!("{tool} not installed (./test.sh installs {pkg})"));
        }
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        return skip("busybox-static not installed");
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tag = |what: &str| format!("localhost/supd-test-{what}:{}", std::process::id());
    let base = tag("base");
    let out = Command::new(repo.join("packaging/container/build.sh"))
        .arg(&base)
        .env("ENGINE_ARGS", PODMAN.join(" "))
        .output()
        .expect("build.sh");
    assert!(
        out.status.success(),
        "packaging/container/build.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ctx = TempDir::new("container");
    let bin = ctx.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    std::fs::copy(busybox, bin.join("busybox")).expect("copy busybox");
    for applet in [
        "sh", "sleep", "cat", "grep", "wc", "kill", "echo", "mkdir", "true",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    let units = ctx.path().join("units");
    std::fs::create_dir_all(&units).expect("units dir");
    // web <- worker (requires): stop order worker, then web; each records
    // its SIGTERM in /out/order. `orphans` leaves reparented children.
    let recorder = |name: &str| {
        format!(
            "trap 'echo {name} >> /out/order; exit 0' TERM; while :; do sleep 1 & wait $!; done"
        )
    };
    for (name, text) in [
        (
            "setup",
            "type = \"oneshot\"\nexec = [\"/bin/mkdir\", \"-p\", \"/out/ran\"]\n".to_string(),
        ),
        ("web", sh_unit(&recorder("web"), "requires = [\"setup\"]\n")),
        (
            "worker",
            sh_unit(&recorder("worker"), "requires = [\"web\"]\n"),
        ),
        (
            "orphans",
            sh_unit(
                "i=0; while [ $i -lt 20 ]; do (sleep 0.1 &); i=$((i+1)); done; exec sleep 3600",
                "",
            ),
        ),
    ] {
        std::fs::write(units.join(format!("{name}.toml")), text).expect("unit");
    }
    let file = |name: &str, from: &str, rest: &str| {
        let p = ctx.path().join(name);
        std::fs::write(&p, format!("FROM {base}\nCOPY bin /bin\n{from}{rest}")).expect("write");
        p
    };
    // The documented one-line use.
    let shim_file = file(
        "Containerfile.shim",
        "",
        "ENTRYPOINT [\"/supd\", \"--\"]\nCMD [\"sleep\", \"30\"]\n",
    );
    let sup_file = file(
        "Containerfile.supervisor",
        "COPY units /etc/supd/units\n",
        "",
    );
    let images = Images {
        shim: tag("shim"),
        supervisor: tag("supervisor"),
        base,
        _ctx: ctx,
    };
    let ctx_dir = images._ctx.path().to_str().expect("utf-8").to_string();
    for (f, t) in [(&shim_file, &images.shim), (&sup_file, &images.supervisor)] {
        podman_ok(&[
            "build",
            "-q",
            "-f",
            f.to_str().expect("utf-8"),
            "-t",
            t,
            &ctx_dir,
        ]);
    }
    // Can this machine run a container at all?
    let probe = podman(&[&["run", "--rm"][..], &RUN[..5], &[&images.shim, "true"]].concat());
    if !probe.status.success() {
        return skip(&format!(
            "podman cannot run a container here: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    Some(images)
}

fn run_to_end(image: &str, args: &[&str]) -> (i32, String) {
    let name = format!("supd-t-{}-{}", std::process::id(), rand_suffix());
    let _c = Container(name.clone());
    let out = podman(&[&["run", "--name", &name], &RUN[..], &[image], args].concat());
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// Start detached; returns the container and supd's pid on the host.
fn start(image: &str, extra: &[&str], args: &[&str]) -> (Container, i32) {
    let name = format!("supd-t-{}-{}", std::process::id(), rand_suffix());
    let c = Container(name.clone());
    podman_ok(
        &[
            &["run", "-d", "--name", &name],
            &RUN[..],
            extra,
            &[image],
            args,
        ]
        .concat(),
    );
    let pid: i32 = podman_ok(&["inspect", "-f", "{{.State.Pid}}", &name])
        .parse()
        .expect("pid");
    (c, pid)
}

fn stop(c: &Container) -> (Duration, i32) {
    let t0 = Instant::now();
    podman_ok(&["stop", "-t", "30", &c.0]);
    let took = t0.elapsed();
    let code = podman_ok(&["inspect", "-f", "{{.State.ExitCode}}", &c.0])
        .parse()
        .expect("exit code");
    (took, code)
}

/// `podman run -it IMAGE sh` under a pseudo-terminal, as a user at a
/// terminal would: a prompt, a command answered, `exit 3` passed through;
/// then ^C reaches a foreground loop (exit 130). What tini's outer tests do
/// with `docker attach`.
const TTY_SCRIPT: &str = r##"
import os, pty, re, select, sys, time
argv = sys.argv[1:]
def session(extra):
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv + extra)
    return pid, fd
buf = b""
def expect(fd, pat, timeout=60):
    global buf
    deadline = time.time() + timeout
    while True:
        m = re.search(pat, buf)
        if m:
            buf = buf[m.end():]
            return m
        left = deadline - time.time()
        if left <= 0:
            sys.exit("timed out waiting for %r; screen so far: %r" % (pat, buf))
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                sys.exit("EOF waiting for %r; screen so far: %r" % (pat, buf))
            buf += chunk
pid, fd = session(["sh"])
expect(fd, rb"# ")
os.write(fd, b"echo $((6*7))\n")
expect(fd, rb"42")
os.write(fd, b"exit 3\n")
_, st = os.waitpid(pid, 0)
assert os.WEXITSTATUS(st) == 3, "exit status %r" % st
buf = b""
pid, fd = session(["sh", "-c", "while :; do echo tick; sleep 0.1; done"])
expect(fd, rb"tick")
os.write(fd, b"\x03")
_, st = os.waitpid(pid, 0)
assert os.WEXITSTATUS(st) == 130, "^C: exit status %r" % st
print("tty: ok")
"##;

#[test]
fn container_shim_and_supervisor_under_podman() {
    let Some(images) = setup() else { return };

    // Shim: `podman stop` ends the command with SIGTERM.
    let (c, supd) = start(&images.shim, &[], &[]);
    wait_for("sleep under supd", Duration::from_secs(20), || {
        children_of(supd).into_iter().find_map(|(p, _)| {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).ok()?;
            (comm.trim() == "sleep").then_some(())
        })
    });
    let (took, code) = stop(&c);
    eprintln!("container: shim `podman stop` took {took:?}, exit {code}");
    assert_eq!(code, 143, "sleep ended by the forwarded SIGTERM");
    // 30 s would mean SIGTERM was lost and the runtime used SIGKILL.
    assert!(took < Duration::from_secs(10), "podman stop took {took:?}");

    // Exit codes pass through; a signal death is 128+n.
    assert_eq!(run_to_end(&images.shim, &["sh", "-c", "exit 7"]).0, 7);
    assert_eq!(
        run_to_end(&images.shim, &["sh", "-c", "kill -USR1 $$"]).0,
        138
    );
    assert_eq!(run_to_end(&images.shim, &["/nonexistent"]).0, 127);
    // Orphans are reaped by supd as PID 1 while the command runs.
    let (code, out) = run_to_end(
        &images.shim,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 50 ]; do (sleep 0.1 &); i=$((i+1)); done; sleep 1; \
             echo zombies=$(cat /proc/[0-9]*/stat | grep -c ') Z ')",
        ],
    );
    assert_eq!((code, out.trim()), (0, "zombies=0"));

    // A terminal: `podman run -it`.
    let out = Command::new("python3")
        .args(["-c", TTY_SCRIPT, "podman"])
        .args(PODMAN)
        .args(["run", "--rm", "-it"])
        .args(&RUN[..5])
        .arg(&images.shim)
        .stdin(Stdio::null())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "podman run -it: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Supervisor: ordered shutdown, exit 0.
    let out = TempDir::new("container-out");
    let vol = format!("{}:/out", out.path().display());
    let (c, _) = start(&images.supervisor, &["-v", &vol], &[]);
    wait_for("units running", Duration::from_secs(60), || {
        let st = podman(&["exec", &c.0, "/supctl", "status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&st.stdout).ok()?;
        let units = v["units"].as_array()?;
        let running = |n: &str| {
            units
                .iter()
                .any(|u| u["name"] == n && u["state"] == "running")
        };
        (running("web") && running("worker") && running("orphans")).then_some(())
    });
    assert!(out.path().join("ran").is_dir(), "the oneshot ran");
    // Its 20 orphans exited 0.1 s after start; none may be left a zombie.
    wait_for("orphans reaped", Duration::from_secs(10), || {
        let o = podman(&[
            "exec",
            &c.0,
            "sh",
            "-c",
            "cat /proc/[0-9]*/stat | grep -c ') Z '",
        ]);
        (String::from_utf8_lossy(&o.stdout).trim() == "0").then_some(())
    });
    let (took, code) = stop(&c);
    eprintln!("container: supervisor `podman stop` took {took:?}, exit {code}");
    assert_eq!(code, 0, "ordered shutdown, then exit 0");
    assert!(took < Duration::from_secs(10), "podman stop took {took:?}");
    let order = std::fs::read_to_string(out.path().join("order")).unwrap_or_default();
    assert_eq!(order, "worker\nweb\n", "reverse dependency order");
}
