//! The signals supd itself acts on, as one stream of `Incoming` values.
//!
//! Owns: installing supd's handlers (through tokio's signal driver) and
//! naming what each signal means to a supervisor: SIGCHLD → reap;
//! SIGTERM/SIGINT/SIGPWR → shutdown; SIGHUP → reload; SIGUSR1/SIGUSR2 →
//! passed on to every unit. The driver maps these to engine events.
//!
//! SIGCHLD is not handled but read: it is blocked in every thread of supd
//! (`block_child`, before the first thread exists) and read from a
//! signalfd. That saves each exit a handler run (a signal frame, a write to
//! tokio's signal pipe, an interrupted `epoll_wait`, two reads back) and
//! every `sigprocmask` that held it around a batch, and it names the child
//! that exited, which the reaper collects first by pid — O(1), where
//! `waitpid(-1)` walks every child — before it drains the rest.
//!
//! Must never: lose a SIGCHLD (it is blocked before any thread or child
//! exists, so one that arrives before the signalfd is made stays pending
//! for it; it is always checked first); leave SIGCHLD unblocked in any
//! thread (one such thread would take the signal and, its disposition
//! being the default, discard it; every thread is created after
//! `block_child`, and children get an empty mask from the spawner); treat a
//! signal meant for services (the shim's forwarding set) as one meant for
//! supd — the shim has its own synchronous loop and does not use this
//! module.

use nix::sys::signal::{
    SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal as Sig, pthread_sigmask, sigaction,
};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{Signal, SignalKind, signal};

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

/// Block SIGCHLD in the calling thread, and so in every thread it creates
/// from now on, and give it its default disposition. Call first thing,
/// before any thread exists.
pub fn block_child() -> std::io::Result<()> {
    // An ignored SIGCHLD survives exec: a launcher that ignores it would
    // make the kernel reap supd's children itself (and `waitpid` never see
    // an exit). Nothing handles it any more to override that: default.
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installs the default disposition, no handler code.
    unsafe { sigaction(Sig::SIGCHLD, &dfl) }.map_err(std::io::Error::from)?;
    let mut set = SigSet::empty();
    set.add(Sig::SIGCHLD);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(std::io::Error::from)
}

pub struct Signals {
    chld: AsyncFd<SignalFd>,
    term: Signal,
    int: Signal,
    pwr: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    /// Install the handlers. Call before spawning anything: a child that
    /// exits before we listen must still wake us.
    pub fn install() -> std::io::Result<Signals> {
        block_child()?;
        let mut set = SigSet::empty();
        set.add(Sig::SIGCHLD);
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(std::io::Error::from)?;
        // `SignalFd` owns its descriptor, so the deprecated constructor's
        // I/O-safety concern does not apply (as in `world::cgroup`).
        #[allow(deprecated)]
        let chld = AsyncFd::with_interest(fd, Interest::READABLE)?;
        let s = Signals {
            chld,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            pwr: signal(SignalKind::from_raw(libc::SIGPWR))?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
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
                r = self.term.recv() => r.map(|_| Incoming::Terminate),
                r = self.int.recv() => r.map(|_| Incoming::Interrupt),
                r = self.pwr.recv() => r.map(|_| Incoming::Power),
                r = self.hup.recv() => r.map(|_| Incoming::Hangup),
                r = self.usr1.recv() => r.map(|_| Incoming::User1),
                r = self.usr2.recv() => r.map(|_| Incoming::User2),
            };
            // `None` only if the runtime's signal driver is gone (teardown):
            // then nothing more will come, and spinning would burn PID 1.
            match got {
                Some(s) => return s,
                None => std::future::pending::<()>().await,
            }
        }
    }
}
