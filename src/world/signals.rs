//! The signals supd itself acts on, as one stream of `Incoming` values.
//!
//! Owns: installing supd's handlers (through tokio's signal driver) and
//! naming what each signal means to a supervisor: SIGCHLD → reap;
//! SIGTERM/SIGINT/SIGPWR → shutdown; SIGHUP → reload; SIGUSR1/SIGUSR2 →
//! passed on to every unit. The driver maps these to engine events.
//!
//! Must never: lose a SIGCHLD (it is listened to before anything is
//! spawned, and always checked first); treat a signal meant for services
//! (the shim's forwarding set) as one meant for supd — the shim has its
//! own synchronous loop and does not use this module.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// A signal, as what it asks of supd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    Child,
    Terminate,
    Interrupt,
    Power,
    Hangup,
    User1,
    User2,
}

pub struct Signals {
    chld: Signal,
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
        let s = Signals {
            chld: signal(SignalKind::child())?,
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
                r = self.chld.recv() => r.map(|_| Incoming::Child),
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
