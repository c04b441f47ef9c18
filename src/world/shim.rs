//! `supd -- CMD ARGS`: the container shim (like tini).
//!
//! Owns: running one command as the only child, forwarding signals to it
//! and its process group, reaping every orphan, and exiting with the
//! command's status (128+signal when it was killed). A plain synchronous
//! loop over `sigwait`: no runtime, nothing to go wrong. Must never: exit
//! before the child has exited, or leave a zombie it could reap.

use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Signals passed on to the child rather than acted on.
const FORWARDED: [Signal; 9] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGALRM,
];

/// Run the shim; returns the exit code to exit with.
pub fn run(argv: &[String]) -> i32 {
    let Some(program) = argv.first() else {
        eprintln!("supd: `supd -- CMD [ARGS...]` needs a command");
        return 2;
    };
    if std::process::id() != 1
        && let Err(e) = crate::world::init::become_subreaper()
    {
        eprintln!("supd: warning: cannot become a subreaper ({e}); orphans will not be reaped");
    }
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    // Block before spawning so no signal is lost between fork and sigwait;
    // std's spawn resets the child's mask to empty.
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        eprintln!("supd: blocking signals: {e}");
        return 1;
    }
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..]);
    // SAFETY: setpgid is async-signal-safe. The child leads its own process
    // group so a forwarded signal reaches its helpers too, but it keeps the
    // session (and so the controlling terminal, if any).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)).map_err(std::io::Error::from)
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("supd: cannot run {program}: {e}");
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    drop(child);
    loop {
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig == Signal::SIGCHLD {
            // Reap everything; the main child's status decides our exit.
            loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(p, code)) if p == pid => {
                        crate::world::init::reap_all_nohang();
                        return code;
                    }
                    Ok(WaitStatus::Signaled(p, s, _)) if p == pid => {
                        crate::world::init::reap_all_nohang();
                        return 128 + s as i32;
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        } else {
            let _ = killpg(pid, sig);
            let _ = kill(pid, sig);
        }
    }
}
