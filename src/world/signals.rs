//! The signals supd itself acts on, as one stream of `Incoming` values.
//!
//! Owns: which signals supd takes for itself and naming what each means to
//! a supervisor: SIGCHLD → reap; SIGTERM/SIGINT/SIGPWR → shutdown; SIGHUP →
//! reload; SIGUSR1/SIGUSR2 → passed on to every unit. The driver maps
//! these to engine events.
//!
//! None of them is handled: all seven are blocked in every thread of supd
//! (`block_own`, before the first thread exists), keep their default
//! disposition, and are read from two signalfds (SIGCHLD alone, so that
//! exits are always taken first; the other six together). That saves each
//! exit and each stop a handler run (a signal frame, a write to tokio's
//! signal pipe, an interrupted `epoll_wait`, two reads back) and every
//! `sigprocmask` that held SIGCHLD around a batch; the SIGCHLD record names
//! the child that exited, which the reaper collects first by pid — O(1),
//! where `waitpid(-1)` walks every child — before it drains the rest. And
//! since no disposition of supd's own differs from the default, a child
//! has six handlers fewer to reset before its exec (the spawner resets
//! exactly what `note_dispositions` found not default).
//!
//! Must never: lose one of these signals (they are blocked before any
//! thread or child exists, so one that arrives before the signalfds are
//! made stays pending for them; a blocked signal is queued even for a
//! PID 1, which the kernel would otherwise spare a default-disposition
//! signal); leave one unblocked in any thread (such a thread would take
//! it and act on its default: SIGCHLD discarded, SIGTERM and the others
//! ending supd when it is not PID 1; every thread is created after
//! `block_own`, helper threads block everything, and children get an
//! empty mask from the spawner); treat a signal meant for services (the
//! shim's forwarding set) as one meant for supd — the shim has its own
//! synchronous loop and does not use this module.

use nix::sys::signal::{
    SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal as Sig, pthread_sigmask, sigaction,
};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A signal, as what it asks of supd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// Children exited; the pid of one of them when the kernel said which
    /// (exits while one SIGCHLD is pending coalesce into it: the reaper
    /// always drains).
    Child(Option<i32>),
    Terminate,
    Interrupt,
    Power,
    Hangup,
    User1,
    User2,
}

/// The signals supd takes for itself, besides SIGCHLD.
const OWN: [Sig; 6] = [
    Sig::SIGTERM,
    Sig::SIGINT,
    Sig::SIGPWR,
    Sig::SIGHUP,
    Sig::SIGUSR1,
    Sig::SIGUSR2,
];

fn own_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in OWN {
        set.add(s);
    }
    set
}

/// Block SIGCHLD and supd's own signals (`OWN`) in the calling thread,
/// and so in every thread it creates from now on, and give each its
/// default disposition. Call first thing, before any thread exists.
pub fn block_own() -> std::io::Result<()> {
    // An ignored SIGCHLD survives exec: a launcher that ignores it would
    // make the kernel reap supd's children itself (and `waitpid` never see
    // an exit). The others: an ignored SIGTERM would reach the services
    // ignored, had the spawner not reset it; the default costs them
    // nothing (what is blocked is never acted on, only read).
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    let mut set = own_set();
    set.add(Sig::SIGCHLD);
    // Blocked first: with the default disposition in place and the signal
    // not yet blocked, one arriving in between would end supd.
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(std::io::Error::from)?;
    for s in set.iter() {
        // SAFETY: installs the default disposition, no handler code.
        unsafe { sigaction(s, &dfl) }.map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// Just before supd replaces its image (`reexec`): std's exec empties the
/// signal mask right before execve, and a signal of supd's own that is
/// pending then, or arrives in between, would act on its default — end
/// supd, had it not been PID 1. Ignored there instead (lost, as it was
/// with handlers); the new image blocks them again first thing. Should
/// the exec fail, dropping the guard gives them back their default (a
/// blocked signal is queued for the signalfd whatever its disposition,
/// but children must not inherit SIG_IGN).
pub fn ignore_for_exec() -> IgnoredForExec {
    let ign = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for s in OWN {
        // SAFETY: installs SIG_IGN, no handler code.
        let _ = unsafe { sigaction(s, &ign) };
    }
    IgnoredForExec(())
}

/// See `ignore_for_exec`.
pub struct IgnoredForExec(());

impl Drop for IgnoredForExec {
    fn drop(&mut self) {
        let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        for s in OWN {
            // SAFETY: installs the default disposition, no handler code.
            let _ = unsafe { sigaction(s, &dfl) };
        }
    }
}

pub struct Signals {
    chld: AsyncFd<SignalFd>,
    own: AsyncFd<SignalFd>,
}

fn signal_fd(set: &SigSet) -> std::io::Result<AsyncFd<SignalFd>> {
    let fd = SignalFd::with_flags(set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(std::io::Error::from)?;
    // `SignalFd` owns its descriptor, so the deprecated constructor's
    // I/O-safety concern does not apply (as in `world::cgroup`).
    #[allow(deprecated)]
    AsyncFd::with_interest(fd, Interest::READABLE)
}

impl Signals {
    /// Make the signalfds. Call before spawning anything: a child that
    /// exits before we listen must still wake us.
    pub fn install() -> std::io::Result<Signals> {
        block_own()?;
        let mut chld = SigSet::empty();
        chld.add(Sig::SIGCHLD);
        let s = Signals {
            chld: signal_fd(&chld)?,
            own: signal_fd(&own_set())?,
        };
        // Children reset exactly what is not default in supd now.
        crate::world::spawn::note_dispositions();
        Ok(s)
    }

    /// The next signal; SIGCHLD first when several are pending, so exits
    /// are processed before a shutdown acts on them.
    pub async fn recv(&mut self) -> Incoming {
        loop {
            let got = tokio::select! {
                biased;
                r = self.chld.readable() => match r {
                    Ok(mut ready) => match ready.get_inner().read_signal() {
                        Ok(Some(info)) => {
                            // The one pending SIGCHLD is taken: the next
                            // exit makes the descriptor readable anew (an
                            // edge the driver sees at its next poll).
                            ready.clear_ready();
                            let pid = i32::try_from(info.ssi_pid).ok().filter(|p| *p > 0);
                            Some(Incoming::Child(pid))
                        }
                        // Read already (or never there): wait for the next.
                        Ok(None) => {
                            ready.clear_ready();
                            continue;
                        }
                        // Not expected from a signalfd; reap anyway, a
                        // drain costs nothing when nothing exited.
                        Err(_) => {
                            ready.clear_ready();
                            Some(Incoming::Child(None))
                        }
                    },
                    Err(_) => None,
                },
                r = self.own.readable() => match r {
                    Ok(mut ready) => match ready.get_inner().read_signal() {
                        // Several may be pending (a SIGHUP and a SIGTERM):
                        // the readiness stays until a read finds none, so
                        // the next call reads the next one.
                        Ok(Some(info)) => match own_meaning(info.ssi_signo) {
                            Some(s) => Some(s),
                            None => continue,
                        },
                        Ok(None) => {
                            ready.clear_ready();
                            continue;
                        }
                        Err(_) => {
                            ready.clear_ready();
                            continue;
                        }
                    },
                    Err(_) => None,
                },
            };
            // `None` only if the runtime's I/O driver is gone (teardown):
            // then nothing more will come, and spinning would burn PID 1.
            match got {
                Some(s) => return s,
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// What a signal read from the signalfd of `OWN` asks of supd.
fn own_meaning(signo: u32) -> Option<Incoming> {
    let signo = i32::try_from(signo).ok()?;
    Some(match Sig::try_from(signo).ok()? {
        Sig::SIGTERM => Incoming::Terminate,
        Sig::SIGINT => Incoming::Interrupt,
        Sig::SIGPWR => Incoming::Power,
        Sig::SIGHUP => Incoming::Hangup,
        Sig::SIGUSR1 => Incoming::User1,
        Sig::SIGUSR2 => Incoming::User2,
        _ => return None,
    })
}
