//! The reading thread: files an operator or an outsider controls, read off
//! the event loop.
//!
//! Owns: re-reading the units directory for a reload, and reading the file
//! given to `maintenance recover --from`. Each job comes back as the
//! engine event it produces (`Reloaded`, `Recover`), in order.
//!
//! Why a thread: even a regular file (the only kind supd opens, see
//! `world::regular_file`) can stall a read — a units directory on a hung
//! NFS server, a recovery file on a dying disk — and PID 1 must keep
//! reaping and answering meanwhile. Not the disk thread: a stalled read
//! must never hold up a lock write, nor the other way round.
//!
//! Must never: decide anything (the engine does, from the event); write
//! anything; take signals (it is created with every signal blocked, like
//! the disk thread, so they all go to the loop's thread).

use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::engine::{Event, PeerInfo, ReqId};
use crate::world::lock_store::LockStore;
use crate::world::sigmask::SigHold;

pub(super) enum ReadJob {
    /// Read and validate the units directory (`req` None: SIGHUP).
    Units {
        req: Option<ReqId>,
        peer: PeerInfo,
        wall_ms: u64,
        dir: PathBuf,
    },
    /// Read a lock file for `maintenance recover --from`.
    Recover {
        req: ReqId,
        peer: PeerInfo,
        wall_ms: u64,
        path: PathBuf,
    },
}

impl ReadJob {
    /// The event for this job when it cannot be done at all.
    pub(super) fn failed(self, why: &str) -> Event {
        match self {
            ReadJob::Units {
                req, peer, wall_ms, ..
            } => Event::Reloaded {
                req,
                peer,
                wall_ms,
                result: Err(vec![why.to_string()]),
            },
            ReadJob::Recover {
                req,
                peer,
                wall_ms,
                path,
            } => Event::Recover {
                req,
                peer,
                wall_ms,
                result: Err(why.to_string()),
                source: path.display().to_string(),
            },
        }
    }
}

/// Start the reading thread.
pub(super) fn start() -> std::io::Result<(
    std::sync::mpsc::Sender<ReadJob>,
    mpsc::UnboundedReceiver<Event>,
)> {
    let (job_tx, job_rx) = std::sync::mpsc::channel::<ReadJob>();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Event>();
    // The thread inherits the mask: every signal stays with the loop.
    let all = SigHold::all();
    let spawned = std::thread::Builder::new()
        .name("supd-read".into())
        .spawn(move || {
            while let Ok(job) = job_rx.recv() {
                if ev_tx.send(run(job)).is_err() {
                    return;
                }
            }
        });
    drop(all);
    spawned.map(|_| (job_tx, ev_rx))
}

fn run(job: ReadJob) -> Event {
    match job {
        ReadJob::Units {
            req,
            peer,
            wall_ms,
            dir,
        } => {
            let result = crate::unit::load::load_dir(&dir)
                .map_err(|errs| errs.iter().map(|e| e.to_string()).collect());
            if let Ok(set) = &result {
                // Warnings only: such a unit fails at its spawn, not the
                // reload. (Looks up users and paths: I/O, so here too.)
                for e in crate::world::host_check::check_set(set) {
                    tracing::warn!("{e}");
                }
            }
            Event::Reloaded {
                req,
                peer,
                wall_ms,
                result,
            }
        }
        ReadJob::Recover {
            req,
            peer,
            wall_ms,
            path,
        } => Event::Recover {
            req,
            peer,
            wall_ms,
            result: LockStore::read_file(&path).map(|d| d.locks),
            source: path.display().to_string(),
        },
    }
}
