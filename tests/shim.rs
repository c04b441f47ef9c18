//! `supd -- CMD`, the container shim, with real programs that do not reset
//! their signal state (coreutils `sleep`, `cat`, a small C program, Python),
//! as PID 1 of a fresh PID namespace and not: the command starts with the
//! signal mask and ignored signals supd was started with; every signal
//! reaches it; exit codes pass through; the rest of its process group gets
//! SIGTERM when it exits; terminals and job control work as under
//! dumb-init. Also: supervisor-mode services, probes and stop commands
//! start with an empty mask and default dispositions, whatever supd got.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// tests/fixtures/sigstate.c, compiled once per run; None (with a printed
/// reason) when there is no C compiler.
fn sigstate() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| c_fixture("sigstate")).as_deref()
}

/// A running `supd -- ...`, as PID 1 of its own namespace or not.
struct Shim {
    outer: Child,
    in_ns: bool,
    pid: OnceLock<i32>,
}

impl Shim {
    /// `[unshare ... --] [launcher ...] supd -- args`.
    fn start(in_ns: bool, launcher: &[&str], args: &[&str], stdout: Stdio) -> Shim {
        let mut argv: Vec<String> = Vec::new();
        if in_ns {
            argv.extend(
                [
                    "unshare",
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    "--kill-child=SIGKILL",
                    "--",
                ]
                .map(String::from),
            );
        }
        argv.extend(launcher.iter().map(|s| s.to_string()));
        argv.push(SUPD.to_string());
        argv.push("--".to_string());
        argv.extend(args.iter().map(|s| s.to_string()));
        let outer = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn shim");
        Shim {
            outer,
            in_ns,
            pid: OnceLock::new(),
        }
    }

    /// supd's pid as the test sees it (in a namespace: unshare's child).
    fn pid(&self) -> i32 {
        *self.pid.get_or_init(|| {
            let outer = self.outer.id() as i32;
            if !self.in_ns {
                return outer;
            }
            wait_for("unshare to fork supd", Duration::from_secs(10), || {
                let kids =
                    std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")).ok()?;
                kids.split_whitespace().next()?.parse().ok()
            })
        })
    }

    /// The command (supd's child named `comm`), once it has exec'd.
    fn command(&self, comm: &str) -> i32 {
        wait_for(
            &format!("supd's child {comm}"),
            Duration::from_secs(10),
            || {
                children_of(self.pid()).into_iter().find_map(|(p, _)| {
                    let c = std::fs::read_to_string(format!("/proc/{p}/comm")).ok()?;
                    (c.trim() == comm).then_some(p)
                })
            },
        )
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill with plain integers (realtime signals too, which
        // nix's Signal cannot name).
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill {sig}");
    }

    fn wait(&mut self, timeout: Duration) -> i32 {
        let st = wait_for("supd to exit", timeout, || {
            self.outer.try_wait().ok().flatten()
        });
        st.code()
            .unwrap_or_else(|| panic!("supd (or unshare) was killed: {st:?}"))
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        if self.outer.try_wait().ok().flatten().is_none() {
            if let Some(&p) = self.pid.get() {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            let _ = self.outer.kill();
            let _ = self.outer.wait();
        }
    }
}

/// A process we started that blocks every signal: should supd fail to
/// forward and die, it must not outlive the test.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

/// Lines of a child's stdout, as they come.
fn lines(child: &mut Child) -> Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn mask_of(list: &str) -> u64 {
    if list == "-" {
        return 0;
    }
    list.split(',')
        .map(|n| 1u64 << (n.parse::<u32>().expect("signal number") - 1))
        .fold(0, |a, b| a | b)
}

/// (SigBlk, SigIgn) from a file `sigstate report` wrote.
fn read_state(file: &Path) -> (u64, u64) {
    let text = wait_for(
        &format!("{} to be written", file.display()),
        Duration::from_secs(20),
        || std::fs::read_to_string(file).ok(),
    );
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
    };
    (field("SigBlk:"), field("SigIgn:"))
}

fn both_modes(test: &str) -> Vec<bool> {
    if can_run(test) {
        vec![false, true]
    } else {
        vec![false]
    }
}

#[test]
fn command_gets_the_signal_state_supd_was_started_with() {
    let Some(sigstate) = sigstate() else { return };
    let sigstate = sigstate.to_str().expect("utf-8 path");
    let t = TempDir::new("shim-sigstate");
    // First what a container runtime gives PID 1: nothing blocked, nothing
    // ignored (supd blocks nearly everything for itself: none of that may
    // reach the command). Then what tini's sigconf test sets up, plus
    // SIGPIPE (Rust's runtime ignores it before main) and SIGRTMIN+3.
    let cases = [("-", "-"), ("4,15,21,37", "2,11,13,22")];
    for in_ns in both_modes("command_gets_the_signal_state_supd_was_started_with") {
        for (i, (block, ignore)) in cases.iter().enumerate() {
            let file = t.path().join(format!("state-{in_ns}-{i}"));
            let file_s = file.to_str().expect("utf-8 path");
            let mut s = Shim::start(
                in_ns,
                &[sigstate, "launch", block, ignore],
                &[sigstate, "report", file_s],
                Stdio::null(),
            );
            assert_eq!(s.wait(Duration::from_secs(20)), 0);
            let (blk, ign) = read_state(&file);
            assert_eq!(
                (blk, ign),
                (mask_of(block), mask_of(ignore)),
                "SigBlk/SigIgn of the command (as PID 1: {in_ns}) for a supd started with \
                 blocked={block} ignored={ignore}"
            );
        }
    }
}

#[test]
fn sleep_stops_on_sigterm_and_supd_exits_143() {
    for in_ns in both_modes("sleep_stops_on_sigterm_and_supd_exits_143") {
        let mut s = Shim::start(in_ns, &[], &["sleep", "30"], Stdio::null());
        s.command("sleep");
        let t0 = Instant::now();
        s.signal(libc::SIGTERM);
        // Deadline far below the 30 s a deaf `sleep` would take.
        let code = s.wait(Duration::from_secs(10));
        eprintln!(
            "supd -- sleep 30 (PID 1: {in_ns}): SIGTERM -> exit {code} in {:?}",
            t0.elapsed()
        );
        assert_eq!(code, 143, "128 + SIGTERM (PID 1: {in_ns})");
    }
}

#[test]
fn every_signal_reaches_the_command() {
    let script = "import os, signal\n\
                  sigs = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}\n\
                  signal.pthread_sigmask(signal.SIG_BLOCK, sigs)\n\
                  print('ready', os.getpid(), flush=True)\n\
                  while True:\n    print(signal.sigwaitinfo(sigs).si_signo, flush=True)\n";
    let mut sigs: Vec<i32> = (1..=31)
        .filter(|s| {
            ![
                libc::SIGKILL,
                libc::SIGSTOP,
                libc::SIGCHLD,
                // Job-control stops: forwarded too, and supd then stops
                // itself (suspends_with_its_command).
                libc::SIGTSTP,
                libc::SIGTTIN,
                libc::SIGTTOU,
            ]
            .contains(s)
        })
        .collect();
    sigs.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    for in_ns in both_modes("every_signal_reaches_the_command") {
        let mut s = Shim::start(in_ns, &[], &["python3", "-c", script], Stdio::piped());
        let rx = lines(&mut s.outer);
        let ready = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("python ready");
        assert!(ready.starts_with("ready"), "{ready}");
        let py = KillOnDrop(s.command("python3"));
        for &sig in &sigs {
            s.signal(sig);
            let got = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("signal {sig} not forwarded (PID 1: {in_ns})"));
            assert_eq!(got, sig.to_string(), "PID 1: {in_ns}");
        }
        drop(py); // SIGKILL
        assert_eq!(s.wait(Duration::from_secs(10)), 137, "128 + SIGKILL");
    }
}

#[test]
fn exit_status_is_the_commands_or_128_plus_its_signal() {
    for in_ns in both_modes("exit_status_is_the_commands_or_128_plus_its_signal") {
        for code in [0, 1, 3, 127, 255] {
            let mut s = Shim::start(
                in_ns,
                &[],
                &["python3", "-c", &format!("raise SystemExit({code})")],
                Stdio::null(),
            );
            assert_eq!(s.wait(Duration::from_secs(20)), code);
        }
        for sig in [
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGKILL,
            libc::SIGUSR1,
        ] {
            let mut s = Shim::start(
                in_ns,
                &[],
                &[
                    "python3",
                    "-c",
                    &format!("import os; os.kill(os.getpid(), {sig})"),
                ],
                Stdio::null(),
            );
            assert_eq!(s.wait(Duration::from_secs(20)), 128 + sig);
        }
        let mut s = Shim::start(in_ns, &[], &["/nonexistent/program"], Stdio::null());
        assert_eq!(s.wait(Duration::from_secs(20)), 127);
        let mut s = Shim::start(in_ns, &[], &["/etc"], Stdio::null());
        assert_eq!(s.wait(Duration::from_secs(20)), 126, "not executable");
    }
}

#[test]
fn the_rest_of_the_group_gets_sigterm_when_the_command_exits() {
    let t = TempDir::new("shim-group");
    let pidfile = t.path().join("pid");
    // A helper in the command's process group that outlives it.
    let script = format!("sleep 60 & echo $! > {}; exit 3", pidfile.display());
    let mut s = Shim::start(false, &[], &["sh", "-c", &script], Stdio::null());
    assert_eq!(
        s.wait(Duration::from_secs(20)),
        3,
        "the command's own status"
    );
    let helper: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    // supd exits only once the group is gone (it reaped the helper).
    assert!(
        !alive(helper),
        "helper {helper} survived the command's exit"
    );

    // A helper that ignores SIGTERM delays supd's exit by the grace period
    // only; then supd exits with the command's status and leaves it.
    // The helper writes its pid only once it ignores TERM, and the command
    // exits only after that: under load the group's SIGTERM could otherwise
    // arrive before the trap is set.
    let script = format!(
        "sh -c 'trap \"\" TERM; echo $$ > {p}; exec sleep 60' & \
         while [ ! -s {p} ]; do sleep 0.01; done; exit 4",
        p = pidfile.display()
    );
    let _ = std::fs::remove_file(&pidfile);
    let mut s = Shim::start(false, &[], &["sh", "-c", &script], Stdio::null());
    assert_eq!(s.wait(Duration::from_secs(20)), 4);
    let helper: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(alive(helper), "a helper deaf to SIGTERM is left running");
    kill(Pid::from_raw(helper), Signal::SIGKILL).expect("end the helper we started");
}

#[test]
fn suspends_with_its_command() {
    // TSTP/TTIN/TTOU sent to supd go to the command; supd stops itself once
    // the command has stopped, and SIGCONT wakes both.
    let mut s = Shim::start(false, &[], &["sleep", "30"], Stdio::null());
    let sleep = s.command("sleep");
    let state = |pid: i32| -> char {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|st| {
                st.rsplit_once(')')
                    .and_then(|(_, r)| r.trim_start().chars().next())
            })
            .unwrap_or('?')
    };
    for sig in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        s.signal(sig);
        wait_for(
            &format!("sleep and supd stopped by {sig}"),
            Duration::from_secs(10),
            || (state(sleep) == 'T' && state(s.pid()) == 'T').then_some(()),
        );
        s.signal(libc::SIGCONT);
        wait_for("both running again", Duration::from_secs(10), || {
            (state(sleep) == 'S' && state(s.pid()) == 'S').then_some(())
        });
    }
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait(Duration::from_secs(10)), 143);
}

#[test]
fn no_command_after_dashdash_is_a_usage_error() {
    let out = Command::new(SUPD).arg("--").output().expect("run supd --");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("supd -- CMD"), "{err}");
}

/// Drives bash in a pseudo-terminal: bash (job control on) runs
/// `supd -- cat`, ^Z stops the job, `fg` continues it, and cat still owns
/// the terminal each time (a background read would stop it). Then
/// `supd -- bash` as the session leader of a terminal: the inner bash has
/// job control.
const PTY_SCRIPT: &str = r#"
import os, pty, re, select, sys, time
supd = sys.argv[1]
pid, fd = pty.fork()
if pid == 0:
    os.execvp("bash", ["bash", "--norc", "--noprofile", "--noediting", "-i"])
buf = b""
def expect(pat, timeout=20):
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
def send(s):
    os.write(fd, s.encode())
def state(p):
    with open("/proc/%d/stat" % p) as f:
        return f.read().rsplit(")", 1)[1].split()[0]
send("stty -echo; PS1='P''> '\n")
expect(rb"P> ")
send(supd + " -- cat\n")
send("ping-1\n")
expect(rb"ping-1")
send("\x1a")
expect(rb"Stopped")
expect(rb"P> ")
send("jobs -p\n")
job = int(expect(rb"(\d+)\r?\n").group(1))
expect(rb"P> ")
assert state(job) == "T", "supd not stopped: %s" % state(job)
send("fg\n")
send("ping-2\n")
expect(rb"ping-2")
send("\x04")
expect(rb"P> ")
send("echo rc=$?\n")
rc = expect(rb"rc=(\d+)").group(1)
assert rc == b"0", "supd -- cat after EOF: rc=%r" % rc
send(supd + " -- sleep 30\n")
time.sleep(0.5)
send("\x03")
expect(rb"P> ")
send("echo rc=$?\n")
rc = expect(rb"rc=(\d+)").group(1)
assert rc == b"130", "^C: rc=%r" % rc
send("exit\n")
os.waitpid(pid, 0)

pid, fd = pty.fork()
if pid == 0:
    os.execv(supd, [supd, "--", "bash", "--norc", "--noprofile", "-i"])
buf = b""
send("stty -echo; echo \"flags=[$-]\"; exit 3\n")
flags = expect(rb"flags=\[([a-zA-Z]*)\]").group(1)
assert b"m" in flags, "no job control in bash under supd: %r" % flags
_, st = os.waitpid(pid, 0)
assert os.WEXITSTATUS(st) == 3, st
print("pty: ok")
"#;

#[test]
fn job_control_and_terminals_work_as_under_dumb_init() {
    if Command::new("bash").arg("--version").output().is_err() {
        eprintln!("SKIP job_control_and_terminals_work_as_under_dumb_init: no bash");
        return;
    }
    let out = Command::new("python3")
        .args(["-c", PTY_SCRIPT, SUPD])
        .stdin(Stdio::null())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn services_probes_and_stop_commands_start_with_an_empty_mask() {
    if !can_run("services_probes_and_stop_commands_start_with_an_empty_mask") {
        return;
    }
    let Some(sigstate) = sigstate() else { return };
    let t = TempDir::new("sv-sigstate");
    let out = |n: &str| t.path().join(n).display().to_string();
    let svc = format!(
        "exec = [{bin}, \"report\", {f}, \"wait\"]\n\
         [health]\nexec = [{bin}, \"report\", {p}]\ninterval = \"1s\"\n\
         [stop]\nexec = [{bin}, \"report\", {s}, \"kill-mainpid\"]\ntimeout = \"30s\"\n",
        bin = toml_str(&sigstate.display().to_string()),
        f = toml_str(&out("service")),
        p = toml_str(&out("probe")),
        s = toml_str(&out("stop")),
    );
    let once = format!(
        "type = \"oneshot\"\nexec = [{bin}, \"report\", {f}]\n",
        bin = toml_str(&sigstate.display().to_string()),
        f = toml_str(&out("oneshot")),
    );
    // supd itself starts with signals blocked and ignored, as under a
    // careless parent: none of it may reach what it starts.
    let launcher = vec![
        sigstate.display().to_string(),
        "launch".into(),
        "2,10,15,21,37".into(),
        "1,2,13,22".into(),
    ];
    let supd = Supd::start_with(
        "sv-sigstate",
        &[("svc", &svc), ("once", &once)],
        Options {
            launcher,
            ..Options::default()
        },
    );
    for f in ["service", "probe", "oneshot"] {
        assert_eq!(
            read_state(&t.path().join(f)),
            (0, 0),
            "SigBlk/SigIgn of the {f} (supd was started with signals blocked and ignored)"
        );
    }
    let t0 = Instant::now();
    supd.ok(&["stop", "svc"]);
    assert_eq!(
        read_state(&t.path().join("stop")),
        (0, 0),
        "the [stop] exec"
    );
    // Its SIGTERM ended the service long before the 30 s SIGKILL.
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert_eq!(supd.state_of("svc"), "stopped");
}

/// tini's and dumb-init's own test suites (fetched by tests/peers/fetch.sh,
/// which ./test.sh runs as root), against `supd --`: every test of
/// something supd has must pass. tests/peers/run.py lists the rest, with
/// the reason for each.
#[test]
fn peer_suites_pass_against_supd() {
    if !can_run("peer_suites_pass_against_supd") {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv_python = repo.join("target/peer-suites/venv/bin/python");
    if !venv_python.exists() {
        eprintln!(
            "SKIP peer_suites_pass_against_supd: suites not fetched (tests/peers/fetch.sh; ./test.sh runs it as root)"
        );
        return;
    }
    if sigstate().is_none() {
        return; // no C compiler: printed
    }
    let out = Command::new(&venv_python)
        .arg(repo.join("tests/peers/run.py"))
        .args(["--supd", SUPD])
        .stdin(Stdio::null())
        .output()
        .expect("run tests/peers/run.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // The table, for the log.
    let table: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
    eprintln!("{}", table.join("\n"));
}

#[test]
fn command_runs_where_supd_was_started_and_supd_holds_no_directory() {
    let t = TempDir::new("shim-cwd");
    let out = Command::new(SUPD)
        .args(["--", "sh", "-c", "readlink /proc/$PPID/cwd; pwd"])
        .current_dir(t.path())
        .output()
        .expect("run supd");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("/\n{}\n", t.path().display())
    );
}
