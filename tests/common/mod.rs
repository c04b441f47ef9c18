//! Test harness: real `supd` processes in fresh PID + mount namespaces.
//!
//! Owns: temp dirs, starting supd under `unshare --pid --fork --mount
//! --mount-proc` (so it runs as PID 1 of its own namespace, and every
//! process it starts dies with it), running `supctl` against it, waiting
//! with deadlines, entering its mount namespace to mount/unmount,
//! cleaning up on drop, and rendering what `supctl analyze`/`graph` print
//! (headless Chromium, Graphviz) with bounded waits. Must never: end a process by name, leave a
//! namespace (and so a mount or a process) behind, or wait without a
//! deadline.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SUPD: &str = env!("CARGO_BIN_EXE_supd");
pub const SUPCTL: &str = env!("CARGO_BIN_EXE_supctl");

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Root is needed for PID/mount namespaces. Print why we skip, loudly.
pub fn can_run(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIP {test}: needs root for PID and mount namespaces (run ./test.sh as root)");
    false
}

/// A fresh directory under /tmp, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("supd-t-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Poll `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Supd {
    pub dir: TempDir,
    pub units: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// The `unshare` process (parent of supd, outside the namespace).
    pub outer: Option<Child>,
    /// supd's pid as seen from the test (host namespace).
    pub pid: i32,
    /// The read end of supd's stdout/stderr when `Options::log_to_pipe`.
    pub log_pipe: Option<std::os::fd::OwnedFd>,
}

pub struct Options {
    pub namespace: bool,
    pub extra_args: Vec<String>,
    pub state_dir: Option<PathBuf>,
    /// Text of supd.toml (none when unset).
    pub config: Option<String>,
    /// supd's stdout and stderr go to a pipe whose read end the test holds
    /// (`Supd::log_pipe`) instead of the log file: a stalled log consumer.
    pub log_to_pipe: bool,
    /// argv run in front of supd, which it must exec (e.g. to start supd
    /// with a given signal mask).
    pub launcher: Vec<String>,
    /// Shell commands run inside the new namespaces just before supd
    /// replaces the shell (so supd is still PID 1): e.g. mount a small
    /// tmpfs as the state directory. Mounts made here die with the
    /// namespace.
    pub setup_in_namespace: Option<String>,
    /// Extra environment for supd (e.g. its own NOTIFY_SOCKET).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            namespace: true,
            extra_args: vec![],
            state_dir: None,
            config: None,
            log_to_pipe: false,
            launcher: vec![],
            setup_in_namespace: None,
            env: vec![],
        }
    }
}

impl Supd {
    /// Write `units` (name, toml) into a fresh units dir and start supd.
    pub fn start(tag: &str, units: &[(&str, &str)]) -> Supd {
        Supd::start_with(tag, units, Options::default())
    }

    pub fn start_with(tag: &str, units: &[(&str, &str)], opts: Options) -> Supd {
        let dir = TempDir::new(tag);
        let units_dir = dir.path().join("units");
        std::fs::create_dir_all(&units_dir).expect("units dir");
        for (name, text) in units {
            std::fs::write(units_dir.join(format!("{name}.toml")), text).expect("write unit");
        }
        if let Some(c) = &opts.config {
            std::fs::write(dir.path().join("supd.toml"), c).expect("write supd.toml");
        }
        let state = opts
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("state"));
        let socket = dir.path().join("control.sock");
        let log = dir.path().join("supd.log");
        let mut s = Supd {
            units: units_dir,
            state,
            socket,
            log,
            outer: None,
            pid: 0,
            log_pipe: None,
            dir,
        };
        s.spawn(&opts);
        s
    }

    /// Start (or start again, after a kill) supd on the same dirs.
    pub fn spawn(&mut self, opts: &Options) {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut args: Vec<String> = vec![
            "--units".into(),
            self.units.display().to_string(),
            "--state-dir".into(),
            self.state.display().to_string(),
            "--socket".into(),
            self.socket.display().to_string(),
            "--config".into(),
            self.dir.path().join("supd.toml").display().to_string(),
            "--log-level".into(),
            "debug".into(),
        ];
        args.extend(opts.extra_args.iter().cloned());
        let mut cmd = if opts.namespace {
            let mut c = Command::new("unshare");
            c.args([
                "--pid",
                "--fork",
                "--mount",
                "--propagation",
                "private",
                "--mount-proc",
                "--kill-child=SIGKILL",
                "--",
            ]);
            if let Some(script) = &opts.setup_in_namespace {
                c.args(["/bin/sh", "-ec", &format!("{script}\nexec \"$0\" \"$@\"")]);
            }
            c.args(&opts.launcher).arg(SUPD);
            c
        } else if let Some((first, rest)) = opts.launcher.split_first() {
            let mut c = Command::new(first);
            c.args(rest).arg(SUPD);
            c
        } else {
            Command::new(SUPD)
        };
        cmd.args(&args).stdin(Stdio::null());
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        if opts.log_to_pipe {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("log pipe");
            cmd.stdout(w.try_clone().expect("log pipe fd")).stderr(w);
            self.log_pipe = Some(r);
        } else {
            cmd.stdout(logf.try_clone().expect("log fd")).stderr(logf);
        }
        let child = cmd.spawn().expect("spawn supd");
        let outer_pid = child.id() as i32;
        self.outer = Some(child);
        self.pid = if opts.namespace {
            wait_for(
                "supd to be forked by unshare",
                Duration::from_secs(10),
                || {
                    let kids = std::fs::read_to_string(format!(
                        "/proc/{outer_pid}/task/{outer_pid}/children"
                    ))
                    .ok()?;
                    kids.split_whitespace().next()?.parse().ok()
                },
            )
        } else {
            outer_pid
        };
        let sock = self.socket.clone();
        let log = self.log.clone();
        wait_for("supd's control socket", Duration::from_secs(10), || {
            if let Some(c) = self.outer.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!(
                    "supd exited early ({st}); log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let out = Command::new(SUPCTL)
                .arg("--socket")
                .arg(&sock)
                .args(["status", "--json"])
                .output()
                .ok()?;
            out.status.success().then_some(())
        });
    }

    pub fn supctl(&self, args: &[&str]) -> Output {
        Command::new(SUPCTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(["--timeout", "60s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run supctl")
    }

    /// Run supctl and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.supctl(args);
        assert!(
            out.status.success(),
            "supctl {args:?} failed ({}): {}{}\n--- supd log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn status(&self) -> Value {
        let out = self.ok(&["status", "--json"]);
        serde_json::from_str(&out).expect("status --json is JSON")
    }

    pub fn unit(&self, name: &str) -> Value {
        let st = self.status();
        st["units"]
            .as_array()
            .and_then(|a| a.iter().find(|u| u["name"] == name).cloned())
            .unwrap_or_else(|| panic!("unit {name} not in status: {st}"))
    }

    pub fn state_of(&self, name: &str) -> String {
        self.unit(name)["state"].as_str().unwrap_or("").to_string()
    }

    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) {
        wait_for(&format!("{name} to be {state}"), timeout, || {
            (self.state_of(name) == state).then_some(())
        });
    }

    /// Run a command inside supd's mount namespace (to mount/unmount).
    pub fn in_ns(&self, argv: &[&str]) -> Output {
        Command::new("nsenter")
            .arg("-t")
            .arg(self.pid.to_string())
            // The PID namespace too: its /proc is the one mounted in there,
            // and umount needs /proc/self.
            .args(["-m", "-p"])
            .arg("--")
            .args(argv)
            .output()
            .expect("nsenter")
    }

    pub fn in_ns_ok(&self, argv: &[&str]) {
        let out = self.in_ns(argv);
        assert!(
            out.status.success(),
            "{argv:?} in supd's namespace failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig);
    }

    /// Wait for supd (and with it its namespace) to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.outer.as_mut().expect("supd running");
        let st = wait_for("supd to exit", timeout, || child.try_wait().ok().flatten());
        self.outer = None;
        st
    }

    /// SIGKILL supd: its namespace and everything in it dies with it.
    pub fn kill9(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        if let Some(mut c) = self.outer.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Dead, not dying: a process that is still closing its files holds
        // the state-dir lock and the sockets a new supd needs (under load,
        // a thread in fsync or a cgroup call can take a while to go). That
        // is every thread, not only the main one: the main thread can be a
        // zombie while another still releases supd's files (its inotify
        // instance waits for an SRCU grace period) and, last, kills the
        // rest of the PID namespace — the services a new supd would
        // otherwise find still running and adopt.
        let pid = self.pid;
        wait_for(
            "the killed supd to be gone",
            Duration::from_secs(30),
            || (!alive(pid) && threads_left(pid) == 0).then_some(()),
        );
    }
}

impl Drop for Supd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- supd log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
        if self.outer.is_some() {
            self.kill9();
        }
        remove_cgroups(&self.state);
    }
}

/// supd's cgroup subtree for a state directory (whether or not it exists).
pub fn cgroup_subtree(state: &Path) -> Option<PathBuf> {
    let mount = supd::world::cgroup::hierarchy()?;
    let state = std::fs::canonicalize(state).unwrap_or_else(|_| state.to_path_buf());
    Some(mount.join(supd::world::cgroup::subtree_name(&state)))
}

/// Kill whatever is left in supd's subtree for `state` and remove it
/// (bounded): tests must leave no cgroup behind.
pub fn remove_cgroups(state: &Path) {
    let Some(dir) = cgroup_subtree(state) else {
        return;
    };
    if !dir.exists() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = 0;
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            // Kills the group's whole subtree; then its groups go deepest
            // first (a delegated unit makes sub-groups of its own).
            let _ = std::fs::write(p.join("cgroup.kill"), "1");
            let mut groups = vec![p];
            let mut i = 0;
            while i < groups.len() {
                let below: Vec<PathBuf> = std::fs::read_dir(&groups[i])
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect();
                groups.extend(below);
                i += 1;
            }
            for g in groups.iter().rev() {
                if std::fs::remove_dir(g).is_err() {
                    left += 1;
                }
            }
        }
        if left == 0 && std::fs::remove_dir(&dir).is_ok() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("could not remove cgroup {} in time", dir.display());
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Is there a writable cgroup v2 hierarchy where supd can make groups?
/// Prints the SKIP reason when not.
pub fn cgroup_writable(test: &str) -> bool {
    let Some(mount) = supd::world::cgroup::hierarchy() else {
        eprintln!("SKIP {test}: no writable cgroup2 filesystem is mounted");
        return false;
    };
    // One name per call: tests of one binary run in parallel threads, and
    // a shared name made one test's probe fail on another's (EEXIST: a
    // silent skip of a test that could run).
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = mount.join(format!("supd-test-probe-{}-{n}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            true
        }
        Err(e) => {
            eprintln!(
                "SKIP {test}: cannot create a cgroup in {}: {e}",
                mount.display()
            );
            false
        }
    }
}

/// Live (non-zombie) processes whose command line contains `token`.
pub fn processes_with(token: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(token) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// A unit file text for a shell command (argv: /bin/sh -c CMD).
pub fn sh_unit(cmd: &str, extra: &str) -> String {
    format!("exec = [\"/bin/sh\", \"-c\", {}]\n{extra}\n", toml_str(cmd))
}

pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Is a process with this host pid alive (not a zombie)?
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, r)| !r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Threads of `pid` other than a zombie main thread: a process whose main
/// thread has exited is not gone until these have.
pub fn threads_left(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|t| t.file_name().to_str() != Some(pid.to_string().as_str()))
        .count()
}

/// Children of `parent` (host pids) with their state letter (`Z` = zombie).
pub fn children_of(parent: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let state = it.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent {
            out.push((pid, state));
        }
    }
    out
}

// ---- tools the analyze tests render with ------------------------------

/// Run `argv` with a deadline; returns (success, stdout, stderr). A
/// program that overruns is killed by its pid.
pub fn run_bounded(argv: &[&str], timeout: Duration) -> (bool, String, String) {
    let dir = TempDir::new("bounded");
    let out_p = dir.path().join("out");
    let err_p = dir.path().join("err");
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_p).expect("stdout file"))
        .stderr(std::fs::File::create(&err_p).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", argv[0]));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&out_p).unwrap_or_default();
    let err = std::fs::read_to_string(&err_p).unwrap_or_default();
    let Some(st) = status else {
        panic!("{argv:?} did not finish within {timeout:?}; stderr:\n{err}");
    };
    (st.success(), out, err)
}

pub fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: `apt-get install {package}` (./test.sh does it as root)"
    );
}

/// Headless Chromium, as root, with nothing reaching the network, in a
/// fresh profile.
pub fn chromium(profile: &Path, extra: &[&str], url: &str) -> (bool, String, String) {
    let ud = format!("--user-data-dir={}", profile.display());
    let mut argv = vec![
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        &ud,
    ];
    argv.extend_from_slice(extra);
    argv.push(url);
    run_bounded(&argv, Duration::from_secs(120))
}

/// A script the browser runs inside the SVG after laying it out: how many
/// rows, how many of them have a visible box, at how many distinct heights.
pub const ROW_CHECK: &str = r#"<script><![CDATA[
window.addEventListener('load', function () {
  var root = document.documentElement;
  var rows = document.querySelectorAll('g.row');
  var ys = {}, shown = 0, bars = 0;
  rows.forEach(function (g) {
    var b = g.getBBox();
    if (b.width > 0 && b.height > 0) { shown++; ys[Math.round(b.y)] = 1; }
    bars += g.querySelectorAll('rect.bar').length;
  });
  root.setAttribute('data-rows', rows.length);
  root.setAttribute('data-shown', shown);
  root.setAttribute('data-distinct-y', Object.keys(ys).length);
  root.setAttribute('data-bars', bars);
});
]]></script></svg>"#;

pub fn attr(dom: &str, name: &str) -> Option<usize> {
    let k = format!("{name}=\"");
    let i = dom.find(&k)? + k.len();
    dom[i..].split('"').next()?.parse().ok()
}

/// What the browser laid out for a `supctl analyze plot` SVG.
#[derive(Debug)]
pub struct SvgLayout {
    pub rows: usize,
    /// Rows with a visible (non-empty) box.
    pub shown: usize,
    /// Distinct heights of the visible rows.
    pub distinct_y: usize,
    pub bars: usize,
}

/// Load a timeline SVG in headless Chromium (as XML: any syntax error is a
/// `parsererror`) with a script that measures its rows after layout.
pub fn timeline_in_browser(svg: &str, dir: &Path) -> SvgLayout {
    need("chromium", "chromium");
    let probe = dir.join("timeline-check.svg");
    std::fs::write(&probe, svg.replace("</svg>", ROW_CHECK)).expect("write probe svg");
    let (ok, dom, err) = chromium(
        &dir.join("chromium-profile-check"),
        &["--dump-dom"],
        &format!("file://{}", probe.display()),
    );
    assert!(ok, "chromium failed: {err}");
    assert!(
        !dom.contains("parsererror"),
        "the SVG did not parse:\n{dom}"
    );
    let get = |k: &str| {
        attr(&dom, k).unwrap_or_else(|| panic!("{k} not set; the script did not run:\n{dom}"))
    };
    SvgLayout {
        rows: get("data-rows"),
        shown: get("data-shown"),
        distinct_y: get("data-distinct-y"),
        bars: get("data-bars"),
    }
}

/// Render DOT with Graphviz; any error or warning fails. Returns the SVG
/// with Graphviz's `&#45;` turned back into `-`.
pub fn dot_to_svg(dot: &str, dir: &Path) -> String {
    need("dot", "graphviz");
    let src = dir.join("units.dot");
    std::fs::write(&src, dot).expect("write dot");
    let out = dir.join("units.dot.svg");
    let (ok, _, err) = run_bounded(
        &[
            "dot",
            "-Tsvg",
            "-o",
            &out.display().to_string(),
            &src.display().to_string(),
        ],
        Duration::from_secs(60),
    );
    assert!(
        ok && err.trim().is_empty(),
        "dot failed or warned: {err}\n{dot}"
    );
    std::fs::read_to_string(&out)
        .expect("dot output")
        .replace("&#45;", "-")
}

/// Can `test` run here, with every file in `files` installed? Prints the
/// SKIP reason when not.
pub fn have(test: &str, files: &[&str]) -> bool {
    if !can_run(test) {
        return false;
    }
    for f in files {
        if !Path::new(f).exists() {
            eprintln!("SKIP {test}: {f} is not installed (./test.sh installs it as root)");
            return false;
        }
    }
    true
}

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// Run a command that must succeed; its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Compile `tests/fixtures/NAME.c` into the test target's tmp dir (built
/// under a per-process name, then renamed in, so parallel test binaries
/// never run a half-written file). None, with the SKIP reason printed,
/// when there is no C compiler; a compile error fails the test.
#[allow(dead_code)]
pub fn c_fixture(name: &str) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.c"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let tmp = dir.join(format!("{name}.{}", std::process::id()));
    let out = dir.join(name);
    match Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&tmp)
        .arg(&src)
        .output()
    {
        Ok(o) if o.status.success() => {
            std::fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("install {name}: {e}"));
            Some(out)
        }
        Ok(o) => panic!(
            "cc failed on {}: {}",
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            eprintln!("SKIP: no C compiler ({e}); ./test.sh installs gcc");
            None
        }
    }
}
