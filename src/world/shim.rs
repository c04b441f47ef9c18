//! `supd -- CMD ARGS`: the container shim (what tini and dumb-init do).
//!
//! Owns: running one command as supd's only child, in its own process
//! group, with the signal mask and ignored signals supd itself was started
//! with; forwarding to that group every signal that reaches supd (1–31
//! except KILL, STOP and CHLD, and every realtime signal — also as PID 1,
//! where the kernel drops what a process neither blocks nor handles);
//! handing it the terminal and following it through job-control stops;
//! reaping every orphan; and, once the command has exited, sending the rest
//! of its group SIGTERM and exiting with its status (128+n when signal n
//! killed it). One synchronous `sigtimedwait` loop: no runtime, no threads,
//! no handlers — nothing to go wrong in PID 1 of a container.
//!
//! Must never: exit before the command has exited, leave a zombie it could
//! reap, pass its own full signal mask to the command, or deliver one
//! signal twice to it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// After the command exits, how long the rest of its process group gets to
/// act on SIGTERM before supd exits anyway (as PID 1 the kernel then kills
/// what is left; otherwise it is left to the next reaper, as dumb-init
/// leaves it). Short: `docker stop` is waiting.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// After forwarding SIGTSTP/SIGTTIN/SIGTTOU, supd stops itself as soon as
/// the command has stopped (so a shell above sees the job stop only once
/// it really has, and a full-screen program restores the terminal while it
/// still owns it) — or after this long if the command caught the signal and
/// kept running, as dumb-init would have stopped at once.
const SUSPEND_GRACE: Duration = Duration::from_millis(500);

/// While the command's group drains after it exited: how often to look.
/// Only members that are our own children send SIGCHLD.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// The signal state a process was started with: bit n-1 stands for signal
/// n, as in SigBlk/SigIgn of /proc/PID/status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SignalState {
    pub blocked: u64,
    pub ignored: u64,
}

static RECORDED: AtomicBool = AtomicBool::new(false);
static INHERITED_BLOCKED: AtomicU64 = AtomicU64::new(0);
static INHERITED_IGNORED: AtomicU64 = AtomicU64::new(0);

/// Every signal number the kernel knows on Linux (1..=64).
const NSIG: i32 = 64;

/// Read this thread's mask and the process's ignored signals straight from
/// the kernel (glibc's wrappers hide its two internal signals).
fn current_signal_state() -> SignalState {
    let mut st = SignalState::default();
    let mut mask: u64 = 0;
    // SAFETY: rt_sigprocmask with no new set only writes the old mask (8
    // bytes, the kernel's sigset size) into `mask`.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            std::ptr::null::<u64>(),
            &mut mask as *mut u64,
            8usize,
        );
    }
    st.blocked = mask;
    for sig in 1..=NSIG {
        // The kernel's sigaction: handler first, then flags, restorer, mask.
        let mut old = [0u64; 4];
        // SAFETY: no new action; the old one is written into `old`, which
        // is as large as the kernel's struct on every Linux target.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<u64>(),
                old.as_mut_ptr(),
                8usize,
            )
        };
        if r == 0 && old[0] == libc::SIG_IGN as u64 && !libc_internal(sig) {
            st.ignored |= 1u64 << (sig - 1);
        }
    }
    st
}

/// The signals below SIGRTMIN that the C library keeps for itself (glibc:
/// 32, 33; musl: 32–34). No program can set them through libc; glibc's
/// posix_spawn leaves them ignored in every child (so anything started by,
/// say, Rust's `Command` has them ignored), and that artefact is not passed
/// on: they start at their default.
fn libc_internal(sig: i32) -> bool {
    (32..libc::SIGRTMIN()).contains(&sig)
}

/// Record the signal state supd was exec'd with, for the shim's command.
/// bin/supd.rs runs this from `.init_array`: before Rust's runtime sets
/// SIGPIPE to ignored and before anything of ours blocks a signal. Later
/// calls change nothing.
pub extern "C" fn record_inherited_signals() {
    if RECORDED.load(Ordering::Acquire) {
        return;
    }
    let st = current_signal_state();
    INHERITED_BLOCKED.store(st.blocked, Ordering::Relaxed);
    INHERITED_IGNORED.store(st.ignored, Ordering::Relaxed);
    RECORDED.store(true, Ordering::Release);
}

/// What supd was started with (recorded now if nobody did earlier: then
/// SIGPIPE reads as ignored by Rust's runtime, so it is taken as default —
/// what nearly every parent leaves it at).
pub fn inherited_signals() -> SignalState {
    if !RECORDED.load(Ordering::Acquire) {
        record_inherited_signals();
        INHERITED_IGNORED.fetch_and(!(1u64 << (libc::SIGPIPE - 1)), Ordering::Relaxed);
    }
    SignalState {
        blocked: INHERITED_BLOCKED.load(Ordering::Relaxed),
        ignored: INHERITED_IGNORED.load(Ordering::Relaxed),
    }
}

/// In a child before exec: give every signal the disposition in `st`
/// (ignored, or default), then its mask. Raw system calls only, so it is
/// safe after fork and reaches glibc's internal signals too.
fn apply_signal_state(st: SignalState) {
    for sig in 1..=NSIG {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let handler = if st.ignored & (1u64 << (sig - 1)) != 0 {
            libc::SIG_IGN as u64
        } else {
            libc::SIG_DFL as u64
        };
        let act = [handler, 0, 0, 0];
        // SAFETY: a valid kernel sigaction (no flags, empty mask).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                act.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
    let mask = st.blocked;
    // SAFETY: sets the mask from a valid 8-byte kernel sigset.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        );
    }
}

fn all_signals() -> libc::sigset_t {
    // SAFETY: sigfillset initialises the local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        set
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The controlling terminal, if supd has one (whichever of its standard
/// descriptors is or is not a terminal).
fn controlling_tty() -> Option<OwnedFd> {
    // SAFETY: open of a constant path; the descriptor is ours to own.
    let fd = unsafe {
        libc::open(
            c"/dev/tty".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    // SAFETY: a descriptor we just opened and nobody else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Run the shim; returns the exit code to exit with.
pub fn run(argv: &[String]) -> i32 {
    let Some(program) = argv.first() else {
        eprintln!("supd: `supd -- CMD [ARGS...]` needs a command");
        return 2;
    };
    let inherited = inherited_signals();
    let pid1 = std::process::id() == 1;
    if !pid1 && let Err(e) = crate::world::init::become_subreaper() {
        eprintln!("supd: warning: cannot become a subreaper ({e}); orphans will not be reaped");
    }
    // Hold every signal from here on: each one is collected by the loop
    // below (forwarded, or SIGCHLD: reap). Held signals are queued even for
    // PID 1 of a namespace, which would drop unhandled ones. A real fault
    // (SIGSEGV in supd itself) is still fatal: the kernel unblocks it.
    let all = all_signals();
    // SAFETY: sets this (the only) thread's mask from a valid set.
    if unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut()) } != 0 {
        eprintln!(
            "supd: blocking signals: {}",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    let tty = controlling_tty();
    // SAFETY: getpgrp cannot fail.
    let our_pgrp = unsafe { libc::getpgrp() };
    // Only a foreground supd hands the terminal on: `supd -- CMD &` in a
    // shell must not take it from the shell.
    // SAFETY: tcgetpgrp on a descriptor we own.
    let give_tty = tty
        .as_ref()
        .is_some_and(|t| unsafe { libc::tcgetpgrp(t.as_raw_fd()) } == our_pgrp);
    let tty_fd = tty.as_ref().map(|t| t.as_raw_fd()).unwrap_or(-1);
    // supd holds no directory busy (a mount point to unmount, say): it moves
    // to / before the command exists, and the command goes back to where
    // supd was started (by descriptor: the same directory, whatever its
    // path is now).
    // SAFETY: open of a constant path; the descriptor is ours to own.
    let cwd = unsafe {
        let fd = libc::open(
            c".".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        (fd >= 0).then(|| OwnedFd::from_raw_fd(fd))
    };
    if cwd.is_some() {
        let _ = std::env::set_current_dir("/");
    }
    let cwd_fd = cwd.as_ref().map(|c| c.as_raw_fd()).unwrap_or(-1);

    let mut cmd = Command::new(program);
    cmd.args(&argv[1..]);
    // SAFETY: only async-signal-safe system calls on values captured by
    // copy; runs in the forked child before exec.
    unsafe {
        cmd.pre_exec(move || {
            // Everything held (whatever std did to the mask) until the
            // inherited state is restored: tcsetpgrp from what is now a
            // background group must not raise SIGTTOU.
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
            // Its own group, so a forwarded signal reaches its helpers too
            // (a shell's pipeline); it keeps supd's session and terminal.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if give_tty {
                // Best effort: a terminal that went away is no reason not
                // to run the command.
                libc::tcsetpgrp(tty_fd, libc::getpid());
            }
            if cwd_fd >= 0 && libc::fchdir(cwd_fd) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            apply_signal_state(inherited);
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            if give_tty {
                // The child may have taken the terminal before exec failed.
                // SAFETY: tcsetpgrp on our descriptor; SIGTTOU is held.
                unsafe { libc::tcsetpgrp(tty_fd, our_pgrp) };
            }
            eprintln!("supd: cannot run {program}: {e}");
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    let pid = child.id() as i32;
    drop(child);
    drop(cwd);
    // Stopping ourselves makes sense only when someone in our session can
    // continue us: a job-control shell. Not as PID 1 (a no-op anyway), not
    // as a session leader (nobody above us would ever send SIGCONT).
    // SAFETY: getppid/getsid cannot fail for ourselves and our parent
    // (getsid of a parent in another namespace fails: then we don't stop).
    let may_stop = !pid1 && unsafe { libc::getsid(libc::getppid()) == libc::getsid(0) };
    Shim {
        pid,
        pgid: pid,
        our_pgrp,
        tty,
        may_stop,
        all,
        child_stopped: false,
        suspend_by: None,
        exit: None,
    }
    .run()
}

struct Shim {
    pid: i32,
    /// The command's process group (it leads it).
    pgid: i32,
    our_pgrp: i32,
    tty: Option<OwnedFd>,
    may_stop: bool,
    all: libc::sigset_t,
    child_stopped: bool,
    /// A forwarded SIGTSTP/SIGTTIN/SIGTTOU: stop ourselves when the command
    /// has stopped, at the latest then.
    suspend_by: Option<Instant>,
    /// The command exited with this code; exit at the latest then.
    exit: Option<(i32, Instant)>,
}

impl Shim {
    fn run(mut self) -> i32 {
        loop {
            let sig = self.wait();
            match sig {
                Some(libc::SIGCHLD) => self.reap(),
                Some(s @ (libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)) => self.suspend(s),
                Some(libc::SIGCONT) => self.resumed(),
                Some(s) => self.forward(s),
                None => {}
            }
            let now = Instant::now();
            if self.suspend_by.is_some_and(|t| now >= t) {
                self.stop_self();
            }
            if let Some((code, by)) = self.exit
                && (now >= by || self.group_gone())
            {
                return code;
            }
        }
    }

    /// The next signal, or None when the nearest deadline has come.
    fn wait(&self) -> Option<i32> {
        let now = Instant::now();
        let mut timeout: Option<Duration> = None;
        let mut nearer = |t: Duration| timeout = Some(timeout.map_or(t, |d| d.min(t)));
        if let Some(t) = self.suspend_by {
            nearer(t.saturating_duration_since(now));
        }
        if let Some((_, by)) = self.exit {
            nearer(by.saturating_duration_since(now).min(DRAIN_POLL));
        }
        // SAFETY: a zeroed siginfo is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = match timeout {
            // SAFETY: valid set and out-parameter.
            None => unsafe { libc::sigwaitinfo(&self.all, &mut info) },
            Some(d) => {
                // Deadlines here are at most a second or two away.
                let ts = libc::timespec {
                    tv_sec: d.as_secs().min(3600) as _,
                    tv_nsec: d.subsec_nanos() as _,
                };
                // SAFETY: valid set, out-parameter and timeout.
                unsafe { libc::sigtimedwait(&self.all, &mut info, &ts) }
            }
        };
        // -1: timed out (EAGAIN) or interrupted (EINTR, e.g. after a stop).
        (r > 0).then_some(r)
    }

    /// To the command's group; to the command itself too if it has left
    /// that group — never twice to one process.
    fn forward(&self, sig: i32) {
        // SAFETY: kill/getpgid with plain integers.
        unsafe {
            libc::kill(-self.pgid, sig);
            let g = libc::getpgid(self.pid);
            if g >= 0 && g != self.pgid {
                libc::kill(self.pid, sig);
            }
        }
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid out-parameter.
            let p = unsafe {
                libc::waitpid(
                    -1,
                    &mut status,
                    libc::WNOHANG | libc::WUNTRACED | libc::WCONTINUED,
                )
            };
            if p <= 0 {
                return;
            }
            if p != self.pid {
                continue; // an orphan, reaped; or a stop report we ignore
            }
            if libc::WIFEXITED(status) {
                self.command_exited(libc::WEXITSTATUS(status));
            } else if libc::WIFSIGNALED(status) {
                self.command_exited(128 + libc::WTERMSIG(status));
            } else if libc::WIFSTOPPED(status) {
                self.command_stopped(libc::WSTOPSIG(status));
            } else if libc::WIFCONTINUED(status) {
                self.child_stopped = false;
            }
        }
    }

    fn command_exited(&mut self, code: i32) {
        if self.exit.is_some() {
            return;
        }
        self.exit = Some((code, Instant::now() + EXIT_GRACE));
        self.suspend_by = None;
        // Give the terminal back to our group if the command had it.
        if let Some(t) = &self.tty {
            // SAFETY: tcgetpgrp/tcsetpgrp on our descriptor; SIGTTOU held.
            unsafe {
                if libc::tcgetpgrp(t.as_raw_fd()) == self.pgid {
                    libc::tcsetpgrp(t.as_raw_fd(), self.our_pgrp);
                }
            }
        }
        // Its helpers (a pipeline, a forked worker) go with it.
        // SAFETY: kill with plain integers.
        unsafe { libc::kill(-self.pgid, libc::SIGTERM) };
    }

    fn command_stopped(&mut self, by: i32) {
        self.child_stopped = true;
        // A stop we asked for, or a job-control stop (^Z on its terminal, a
        // background read): the job is stopped, so show it stopped. A plain
        // SIGSTOP from someone debugging it is theirs alone.
        let job_control = matches!(by, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU);
        if self.suspend_by.take().is_some() || job_control {
            self.stop_self();
        }
    }

    fn suspend(&mut self, sig: i32) {
        self.forward(sig);
        if self.exit.is_some() {
            return;
        }
        if self.child_stopped {
            self.stop_self();
        } else {
            self.suspend_by = Some(Instant::now() + SUSPEND_GRACE);
        }
    }

    fn stop_self(&mut self) {
        self.suspend_by = None;
        if self.may_stop {
            // SAFETY: signals ourselves; returns once we are continued (the
            // SIGCONT that did it waits, held, for the loop).
            unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
        }
    }

    /// SIGCONT: we were continued (or someone passed one on). Hand the
    /// terminal back to the command when the shell made us the foreground
    /// job again, then wake it.
    fn resumed(&mut self) {
        self.suspend_by = None;
        if self.exit.is_none()
            && let Some(t) = &self.tty
        {
            // SAFETY: tcgetpgrp/tcsetpgrp on our descriptor; SIGTTOU held.
            unsafe {
                if libc::tcgetpgrp(t.as_raw_fd()) == self.our_pgrp {
                    libc::tcsetpgrp(t.as_raw_fd(), self.pgid);
                }
            }
        }
        self.forward(libc::SIGCONT);
    }

    /// No process is left in the command's group.
    fn group_gone(&self) -> bool {
        // SAFETY: signal 0 only checks for existence.
        unsafe { libc::kill(-self.pgid, 0) != 0 && errno() == libc::ESRCH }
    }
}
