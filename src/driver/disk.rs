//! The persistence thread: the only writer of supd's state directory.
//!
//! Owns: the lock store and the audit log on disk, and the state
//! directory's flock for supd's lifetime. Jobs are done strictly in the
//! order they were queued, so an audit record and a lock write reach the
//! disk in the order the engine decided them; results go back to the loop
//! as `DiskResult`s.
//!
//! One exception: the boot load (`boot_load`), when the state directory
//! needs no mount, is read on the loop's thread before the loop runs and
//! this thread exists. Nothing may start before the locks are known
//! anyway, and handing that read to a thread just created cost every boot
//! the new thread's first wake-up and then the loop's (1–3 ms on a loaded
//! 2-CPU host, measured with `sched:sched_switch`, before the first
//! service could start). A late-mounted state directory still loads here.
//!
//! Must never: run on the event loop's thread once the loop runs (fsync
//! can take seconds on a busy disk, and PID 1 must keep reaping); take
//! signals (it is created
//! with every signal blocked, so every signal is the loop's, and a
//! blocking fsync is never interrupted); create the
//! state directory under a mount point whose filesystem is not there yet.

use std::path::PathBuf;

use tokio::sync::mpsc;

use super::Driver;
use crate::engine::locks::LockMap;
use crate::engine::{Event, LocksLoad};
use crate::unit::MountReq;
use crate::world::audit::{self, AuditRecord};
use crate::world::lock_store::{DirLock, LoadOutcome, LockStore};
use crate::world::mount_watch;
use crate::world::sigmask::SigHold;

/// Work for the persistence thread.
pub(super) enum DiskJob {
    Persist {
        version: u64,
        locks: LockMap,
    },
    /// Append a record; answered with `Audited { seq }`.
    Audit(AuditRecord, u64),
    /// `maintenance log`: the last records, read here (off the loop, and
    /// after every record queued before it).
    ReadAudit {
        limit: usize,
        reply: tokio::sync::oneshot::Sender<std::io::Result<Vec<AuditRecord>>>,
    },
    /// Load the lock state (at boot, or when the state mount appears).
    Load,
    /// `supctl enable|disable`: write the disabled set durably, then the
    /// request goes to the engine (answered with `EnablementWritten`).
    WriteDisabled {
        names: Vec<String>,
        req: crate::engine::ReqId,
        peer: crate::engine::PeerInfo,
        wall_ms: u64,
        request: crate::protocol::Request,
    },
    /// Shutdown: close every file in the state directory (the flock
    /// included) so its filesystem can be unmounted, then answer.
    Close(std::sync::mpsc::Sender<()>),
}

pub(super) enum DiskResult {
    Persisted {
        version: u64,
        result: Result<(), String>,
    },
    Loaded(LocksLoad),
    /// Audit records up to `seq` were handled (`result` is this one's).
    Audited {
        seq: u64,
        result: Result<(), String>,
    },
    EnablementWritten {
        req: crate::engine::ReqId,
        peer: crate::engine::PeerInfo,
        wall_ms: u64,
        request: crate::protocol::Request,
        result: Result<(), String>,
    },
}

/// The disabled units, one name a line, in the state directory.
pub(super) const DISABLED_FILE: &str = "disabled";

/// Read the disabled set (at start-up, before the first settle): a tiny
/// regular file, read non-blocking and bounded. Missing: none disabled.
pub(super) fn read_disabled(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    let path = dir.join(DISABLED_FILE);
    match crate::world::regular_file::read(&path, 1 << 20) {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => {
            tracing::error!(
                "reading {}: {e}; every unit starts at boot (as enabled)",
                path.display()
            );
            Default::default()
        }
    }
}

/// Write the disabled set: temporary file, fsync, rename, fsync the
/// directory (acknowledged means durable, as for the locks).
fn write_disabled(dir: &std::path::Path, names: &[String]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!("{DISABLED_FILE}.tmp"));
    let cur = dir.join(DISABLED_FILE);
    let mut text = String::from("# units `supctl disable` keeps from starting at boot\n");
    for n in names {
        text.push_str(n);
        text.push('\n');
    }
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(std::io::Error::new(
            e.kind(),
            format!("writing {}: {e}", tmp.display()),
        ));
    }
    std::fs::rename(&tmp, &cur).map_err(|e| {
        std::io::Error::new(e.kind(), format!("renaming onto {}: {e}", cur.display()))
    })?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| std::io::Error::new(e.kind(), format!("fsync {}: {e}", dir.display())))
}

/// Start the persistence thread. `dir_lock` is the state directory's flock
/// when it was already taken (state dir not on a late mount).
pub(super) fn start(
    dir: PathBuf,
    state_mount: Option<MountReq>,
    dir_lock: Option<DirLock>,
    store: LockStore,
) -> std::io::Result<(
    std::sync::mpsc::Sender<DiskJob>,
    mpsc::UnboundedReceiver<DiskResult>,
)> {
    let (job_tx, job_rx) = std::sync::mpsc::channel::<DiskJob>();
    let (res_tx, res_rx) = mpsc::unbounded_channel::<DiskResult>();
    // The thread inherits the mask: every signal stays with the loop.
    let all = SigHold::all();
    let spawned = std::thread::Builder::new()
        .name("supd-disk".into())
        .spawn(move || run(dir, state_mount, dir_lock, store, job_rx, res_tx));
    drop(all);
    spawned.map(|_| (job_tx, res_rx))
}

fn run(
    dir: PathBuf,
    state_mount: Option<MountReq>,
    dir_lock: Option<DirLock>,
    mut store: LockStore,
    rx: std::sync::mpsc::Receiver<DiskJob>,
    tx: mpsc::UnboundedSender<DiskResult>,
) {
    // Held for supd's lifetime: a second supd on the same state refuses.
    let mut dir_lock = dir_lock;
    while let Ok(job) = rx.recv() {
        match job {
            DiskJob::Load => {
                let load = load(&dir, state_mount.as_ref(), &mut store, &mut dir_lock);
                if tx.send(DiskResult::Loaded(load)).is_err() {
                    return;
                }
            }
            DiskJob::Persist { version, locks } => {
                let result = store
                    .write_durable(&locks)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                if tx.send(DiskResult::Persisted { version, result }).is_err() {
                    return;
                }
            }
            DiskJob::WriteDisabled {
                names,
                req,
                peer,
                wall_ms,
                request,
            } => {
                let result = write_disabled(&dir, &names).map_err(|e| e.to_string());
                let r = DiskResult::EnablementWritten {
                    req,
                    peer,
                    wall_ms,
                    request,
                    result,
                };
                if tx.send(r).is_err() {
                    return;
                }
            }
            DiskJob::Close(done) => {
                drop(dir_lock.take());
                let _ = done.send(());
                return;
            }
            DiskJob::Audit(rec, seq) => {
                let result = audit::append_durable(&dir, &rec).map_err(|e| {
                    tracing::error!("audit log in {}: {e}", dir.display());
                    e.to_string()
                });
                if tx.send(DiskResult::Audited { seq, result }).is_err() {
                    return;
                }
            }
            DiskJob::ReadAudit { limit, reply } => {
                let _ = reply.send(audit::read_tail(&dir, limit));
            }
        }
    }
}

/// The boot load on the loop's thread, before the loop and the disk thread
/// exist (see the module comment): only when the state directory needs no
/// mount. `store` and `dir_lock` then go to the disk thread.
pub(super) fn boot_load(
    dir: &std::path::Path,
    state_mount: Option<&MountReq>,
    store: &mut LockStore,
    dir_lock: &mut Option<DirLock>,
) -> Option<LocksLoad> {
    if state_mount.is_some() {
        return None;
    }
    Some(load(dir, None, store, dir_lock))
}

fn load(
    dir: &std::path::Path,
    state_mount: Option<&MountReq>,
    store: &mut LockStore,
    dir_lock: &mut Option<DirLock>,
) -> LocksLoad {
    if dir_lock.is_none() {
        // Load is only asked once the state dir's mount (if any) was seen;
        // re-check it right here so creating the directory can never land
        // under an empty mount point.
        if let Some(m) = state_mount {
            let table = mount_watch::read_mount_table().unwrap_or_default();
            if let Err(p) = table.check(m) {
                return LocksLoad::Unknown(format!(
                    "state directory {} is not mounted: {p}",
                    dir.display()
                ));
            }
        }
        if let Err(e) = store.ensure_dir() {
            return LocksLoad::Unknown(format!(
                "cannot create state directory {}: {e}",
                dir.display()
            ));
        }
        match store.lock_dir() {
            Ok(l) => *dir_lock = Some(l),
            Err(e) => return LocksLoad::Unknown(e.to_string()),
        }
    }
    match store.load() {
        LoadOutcome::Loaded { locks, note, .. } => {
            if let Some(n) = note {
                tracing::warn!("lock state: {n}");
            }
            LocksLoad::Loaded(locks)
        }
        LoadOutcome::Fresh => LocksLoad::Loaded(LockMap::new()),
        LoadOutcome::Failed { problem, kept } => {
            let kept: Vec<String> = kept.iter().map(|p| p.display().to_string()).collect();
            LocksLoad::Unknown(if kept.is_empty() {
                problem
            } else {
                format!("{problem} (kept for inspection: {})", kept.join(", "))
            })
        }
    }
}

impl Driver {
    /// Ask the disk thread to load the locks, unless the state directory's
    /// filesystem is not there yet — then the state stays unknown
    /// (fail-closed) and we never create a fresh store in the directory
    /// underneath the mount point.
    /// The first lock load: the one read before the loop ran (fed now,
    /// after the survivors, as a disk thread's answer would be), or asked
    /// of the disk thread.
    pub(super) fn first_lock_load(&mut self, table: &crate::mounts::MountTable) {
        match self.boot_load.take() {
            Some(load) => {
                self.logs.state_dir_ready();
                self.disk_result(DiskResult::Loaded(load));
            }
            None => self.start_lock_load(table),
        }
    }

    pub(super) fn start_lock_load(&mut self, table: &crate::mounts::MountTable) {
        if let Some(m) = &self.settings.state_mount
            && let Err(p) = table.check(m)
        {
            if !self.locks_wait_mount {
                tracing::warn!(
                    "state directory {} waits for its filesystem: {p}; only essential units start until it is mounted",
                    self.settings.state_dir.display()
                );
                self.locks_wait_mount = true;
                self.feed(Event::LocksLoaded(LocksLoad::Unknown(format!(
                    "state directory {} is not mounted yet: {p}",
                    self.settings.state_dir.display()
                ))));
            }
            return;
        }
        self.locks_wait_mount = false;
        let _ = self.disk_tx.send(DiskJob::Load);
        self.logs.state_dir_ready();
    }

    pub(super) fn disk_result(&mut self, res: DiskResult) {
        match res {
            DiskResult::Persisted { version, result } => {
                self.feed(Event::LocksPersisted { version, result })
            }
            DiskResult::Loaded(load) => {
                if let LocksLoad::Unknown(why) = &load {
                    tracing::error!(
                        "lock state unknown: {why}; only essential units start until an operator runs `supctl maintenance recover`"
                    );
                }
                self.feed(Event::LocksLoaded(load));
            }
            DiskResult::Audited { seq, result } => self.audited(seq, result),
            DiskResult::EnablementWritten {
                req,
                peer,
                wall_ms,
                request,
                result,
            } => match result {
                Ok(()) => self.feed(Event::Command {
                    req,
                    peer,
                    wall_ms,
                    request,
                }),
                Err(e) => {
                    // What is known durable is what the engine has.
                    self.disabled = self.engine.disabled().clone();
                    if let Some(tx) = self.replies.remove(&req) {
                        let _ = tx.send(crate::protocol::Response::err(format!(
                            "{e}; nothing changed (fix the state directory and retry)"
                        )));
                    }
                }
            },
        }
    }

    /// Replies wait for every audit record queued before them (see
    /// `Driver::held_replies`); release those now covered.
    pub(super) fn audited(&mut self, seq: u64, result: Result<(), String>) {
        self.audits_done = self.audits_done.max(seq);
        if let Err(e) = result {
            self.audit_failure = Some(e);
        }
        let done = self.audits_done;
        let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held_replies)
            .into_iter()
            .partition(|(s, _, _)| *s <= done);
        self.held_replies = wait;
        for (_, tx, mut resp) in ready {
            if let Some(e) = &self.audit_failure {
                resp.message.push_str(&format!(
                    " (warning: its audit record could not be written: {e})"
                ));
            }
            let _ = tx.send(resp);
        }
        if self.held_replies.is_empty() {
            self.audit_failure = None;
        }
    }

    /// Everything queued for the disk is written in order before this;
    /// then the state directory is released so it can be unmounted.
    pub(super) fn close_disk(&self) {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        if self.disk_tx.send(DiskJob::Close(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(std::time::Duration::from_secs(10));
        }
    }
}
