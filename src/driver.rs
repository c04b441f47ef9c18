//! The driver: where the pure engine meets the world.
//!
//! Owns: the single-threaded event loop. It turns signals, the mount
//! watcher, the control socket, sd_notify datagrams, probe results, lock
//! writes and the one timer into `Event`s; feeds them to the engine; and
//! carries out the returned `Action`s. It owns the only `waitpid(-1)` in
//! supd (the reaper) and the process table that maps pids to runs.
//!
//! Must never: decide anything the engine should decide; reap anywhere but
//! `reap()`; signal a pid that has been reaped (a pid in `procs` is alive
//! or a zombie, so it cannot have been recycled); let an engine panic take
//! PID 1 down (the engine runs under `catch_unwind`; if it ever panics the
//! driver keeps reaping and answering, and starts nothing more).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::engine::locks::LockMap;
use crate::engine::{
    Action, Engine, EngineConfig, Event, ExitStatus, LocksLoad, PeerInfo, ProbeKind, ReqId, RunId,
    ShutdownKind,
};
use crate::protocol::{Request, Response};
use crate::unit::{MountReq, ProbeTarget, UnitSpec};
use crate::world::audit::{self, AuditRecord};
use crate::world::control::{self, ControlRequest};
use crate::world::init::Mode;
use crate::world::lock_store::{LoadOutcome, LockStore};
use crate::world::mount_watch::{self, MountWatcher};
use crate::world::sigmask::SigHold;
use crate::world::{notify, output, probe, spawn};

/// Everything the driver needs to run, resolved from flags, supd.toml and
/// defaults by `bin/supd.rs`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub units_dir: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub max_parallel_starts: u32,
    /// The state dir's filesystem, when it is mounted late in boot.
    pub state_mount: Option<MountReq>,
    pub mode: Mode,
}

/// What a pid in our table is.
#[derive(Debug, Clone, Copy)]
enum Proc {
    /// A unit's main process (its process-group leader).
    Main(RunId),
    /// An exec probe for a run, with its deadline.
    Probe(RunId, ProbeKind, Instant),
    /// A `[stop] exec` command; its exit is only logged.
    StopCommand(RunId),
}

/// Work for the persistence thread, done strictly in order so an audit
/// record and a lock write are on disk in the order they were decided.
enum DiskJob {
    Persist {
        version: u64,
        locks: LockMap,
    },
    Audit(AuditRecord),
    /// Load the lock state (at boot, or when the state mount appears).
    Load,
    /// Shutdown: close every file in the state directory (the flock
    /// included) so its filesystem can be unmounted, then answer.
    Close(std::sync::mpsc::Sender<()>),
}

enum DiskResult {
    Persisted {
        version: u64,
        result: Result<(), String>,
    },
    Loaded(LocksLoad),
}

struct Driver {
    engine: Engine,
    /// Set if the engine ever panicked: nothing starts any more, but we
    /// keep reaping and answering (PID 1 must not die).
    engine_broken: Option<String>,
    settings: Settings,
    /// pid -> what it is. Entries leave only when reaped.
    procs: HashMap<i32, Proc>,
    /// run -> main pid, for signalling.
    run_pids: HashMap<RunId, i32>,
    /// Exec probes in flight -> probe pid.
    probe_pids: HashMap<(RunId, ProbeKind), i32>,
    replies: HashMap<ReqId, oneshot::Sender<Response>>,
    next_req: u64,
    disk_tx: std::sync::mpsc::Sender<DiskJob>,
    probe_tx: mpsc::UnboundedSender<(RunId, ProbeKind, bool, Option<String>)>,
    /// `[ready] kind = "fd"` readiness lines arrive here.
    ready_tx: mpsc::UnboundedSender<RunId>,
    notify_path: Option<String>,
    /// Waiting for the state directory's filesystem before loading locks.
    locks_wait_mount: bool,
    shutdown_complete: Option<ShutdownKind>,
    /// The shutdown signal (or command) that started an exit; for the exit code.
    started: Instant,
    /// Boot or a reload happened and its memory has not been trimmed yet.
    trim_pending: bool,
    /// When the loop last handled anything (the trim waits for quiet).
    last_activity: Instant,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn supd_peer() -> PeerInfo {
    PeerInfo {
        uid: nix::unistd::geteuid().as_raw(),
        pid: Some(std::process::id() as i32),
        name: "supd".to_string(),
    }
}

/// Run supd until shutdown completes. Returns the process exit code (only
/// meaningful when not a VM's PID 1, which ends in reboot(2)).
pub fn run(settings: Settings, set: crate::unit::UnitSet, seed: u64) -> i32 {
    // While the lowest descriptor numbers are still free.
    spawn::init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(crate::world::trim::on_park)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot build the runtime: {e}");
            return 1;
        }
    };
    let code = rt.block_on(main_loop(settings, set, seed));
    // Everything that must outlive us is on disk (the disk thread was
    // closed in `finish`); tearing down a task and a descriptor per unit
    // would only delay the exit the stop-all figure measures.
    std::mem::forget(rt);
    code
}

async fn main_loop(settings: Settings, set: crate::unit::UnitSet, seed: u64) -> i32 {
    // Signals first: a child that exits before we listen must still wake us.
    let sig = |k: SignalKind| signal(k).map_err(|e| tracing::error!("signal handler: {e}"));
    let (Ok(mut sigchld), Ok(mut sigterm), Ok(mut sigint), Ok(mut sighup), Ok(mut sigpwr)) = (
        sig(SignalKind::child()),
        sig(SignalKind::terminate()),
        sig(SignalKind::interrupt()),
        sig(SignalKind::hangup()),
        sig(SignalKind::from_raw(libc::SIGPWR)),
    ) else {
        return 1;
    };
    let (Ok(mut sigusr1), Ok(mut sigusr2)) = (
        sig(SignalKind::user_defined1()),
        sig(SignalKind::user_defined2()),
    ) else {
        return 1;
    };
    if settings.mode == Mode::VmInit {
        // ctrl-alt-del becomes SIGINT to us instead of an immediate reboot.
        let _ = nix::sys::reboot::set_cad_enabled(false);
    }

    let mut watcher = match MountWatcher::new() {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(
                "cannot watch the mount table ({e}); units waiting on mounts will not start until reload"
            );
            None
        }
    };
    let table = mount_watch::read_mount_table().unwrap_or_default();

    let engine = Engine::new(
        set,
        EngineConfig {
            max_parallel_starts: settings.max_parallel_starts,
            seed,
        },
        table.clone(),
    );

    // The state directory is ours alone: a second supd on the same state
    // would make two writers of the lock file. (With a late-mounted state
    // dir the lock is taken once the mount appears.)
    let mut dir_lock = None;
    if settings.state_mount.is_none() {
        let store = LockStore::open(&settings.state_dir);
        match store.ensure_dir().and_then(|_| store.lock_dir()) {
            Ok(l) => dir_lock = Some(l),
            Err(e) => {
                tracing::error!("state directory {}: {e}", settings.state_dir.display());
                if settings.mode == Mode::Subreaper {
                    eprintln!("supd: {e}");
                    return 1;
                }
            }
        }
    }

    // Control socket.
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ControlRequest>(64);
    match control::bind(&settings.socket) {
        Ok(listener) => {
            tokio::spawn(control::serve(
                listener,
                ctl_tx,
                std::future::pending::<()>(),
            ));
            tracing::info!("control socket at {}", settings.socket.display());
        }
        Err(e) => {
            tracing::error!("control socket {}: {e}", settings.socket.display());
            if settings.mode == Mode::Subreaper {
                eprintln!("supd: {e}");
                return 1;
            }
        }
    }

    // sd_notify socket, next to the control socket.
    let notify_path = settings
        .socket
        .parent()
        .map(|d| d.join("notify.sock"))
        .unwrap_or_else(|| PathBuf::from("/run/supd/notify.sock"));
    let notify_sock = match notify::NotifySocket::bind(&notify_path) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(
                "sd_notify socket {}: {e}; notify readiness unavailable",
                notify_path.display()
            );
            None
        }
    };

    // Persistence thread: fsync must not stall the event loop.
    let (disk_tx, disk_rx) = std::sync::mpsc::channel::<DiskJob>();
    let (disk_res_tx, mut disk_res_rx) = mpsc::unbounded_channel::<DiskResult>();
    let state_dir = settings.state_dir.clone();
    let state_mount = settings.state_mount.clone();
    // The disk thread never takes signals: they all go to the loop's
    // thread (so holding SIGCHLD there really holds it), and a blocking
    // fsync is never interrupted by a handler. It inherits the mask.
    let all = SigHold::all();
    let spawn_res = std::thread::Builder::new()
        .name("supd-disk".into())
        .spawn(move || disk_thread(state_dir, state_mount, dir_lock, disk_rx, disk_res_tx));
    drop(all);
    if let Err(e) = spawn_res {
        tracing::error!("cannot start the persistence thread: {e}");
        return 1;
    }

    let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut d = Driver {
        engine,
        engine_broken: None,
        locks_wait_mount: false,
        procs: HashMap::new(),
        run_pids: HashMap::new(),
        probe_pids: HashMap::new(),
        replies: HashMap::new(),
        next_req: 1,
        disk_tx,
        probe_tx,
        ready_tx,
        notify_path: notify_sock
            .as_ref()
            .map(|s| s.path.to_string_lossy().to_string()),
        shutdown_complete: None,
        started: Instant::now(),
        trim_pending: true,
        last_activity: Instant::now(),
        settings,
    };
    d.start_lock_load(&table);
    // Kick the engine once so units that need nothing start at boot.
    d.feed(Event::Tick);

    loop {
        if let Some(kind) = d.shutdown_complete {
            return d.finish(kind);
        }
        let trim_at = d.trim_pending.then(|| d.last_activity + TRIM_AFTER_QUIET);
        let deadline = match (d.next_wakeup(), trim_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            biased;
            _ = sigchld.recv() => d.reap(),
            _ = sigterm.recv() => {
                tracing::info!("SIGTERM received");
                d.feed(Event::ShutdownRequested(d.term_kind()));
            }
            _ = sigint.recv() => {
                tracing::info!("SIGINT received");
                let kind = if d.settings.mode == Mode::VmInit { ShutdownKind::Reboot } else { ShutdownKind::Exit };
                d.feed(Event::ShutdownRequested(kind));
            }
            _ = sigpwr.recv() => d.feed(Event::ShutdownRequested(d.term_kind_power())),
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading unit files");
                d.reload(None, supd_peer());
            }
            _ = sigusr1.recv() => d.forward_to_units(Signal::SIGUSR1),
            _ = sigusr2.recv() => d.forward_to_units(Signal::SIGUSR2),
            Some(req) = ctl_rx.recv() => d.control(req),
            Some(res) = disk_res_rx.recv() => match res {
                DiskResult::Persisted { version, result } => d.feed(Event::LocksPersisted { version, result }),
                DiskResult::Loaded(load) => {
                    if let LocksLoad::Unknown(why) = &load {
                        tracing::error!("lock state unknown: {why}; only essential units start until an operator runs `supctl maintenance recover`");
                    }
                    d.feed(Event::LocksLoaded(load));
                }
            },
            Some((run, kind, ok, out)) = probe_rx.recv() => d.feed(Event::ProbeAnswered { run, kind, ok, output: out }),
            Some(run) = ready_rx.recv() => d.feed(Event::ReadyFd { run }),
            r = async { match &notify_sock { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                if let Ok(r) = r { d.notified(r) }
            }
            t = async { match watcher.as_mut() { Some(w) => w.changed().await, None => std::future::pending().await } } => {
                match t {
                    Ok(table) => {
                        if d.locks_wait_mount {
                            d.start_lock_load(&table);
                        }
                        d.feed(Event::MountTableChanged(table));
                    }
                    Err(e) => {
                        tracing::error!("mount watcher failed: {e}; no longer watching");
                        watcher = None;
                    }
                }
            }
            _ = sleep_until(deadline) => {
                if let Some(t) = trim_at && Instant::now() >= t {
                    // Boot, a reload or commands have settled: give back
                    // what they used.
                    d.trim_pending = false;
                    crate::world::trim::request();
                    continue;
                }
                d.expire_probes();
                d.feed(Event::Tick);
            }
        }
        d.last_activity = Instant::now();
    }
}

/// How long the loop must have been quiet after boot, a reload or operator
/// commands before their memory is given back (one wake-up each time).
const TRIM_AFTER_QUIET: Duration = Duration::from_millis(250);

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

fn disk_thread(
    dir: PathBuf,
    state_mount: Option<MountReq>,
    dir_lock: Option<crate::world::lock_store::DirLock>,
    rx: std::sync::mpsc::Receiver<DiskJob>,
    tx: mpsc::UnboundedSender<DiskResult>,
) {
    let mut store = LockStore::open(&dir);
    // Held for supd's lifetime: a second supd on the same state refuses.
    let mut dir_lock = dir_lock;
    while let Ok(job) = rx.recv() {
        match job {
            DiskJob::Load => {
                let load = (|| {
                    if dir_lock.is_none() {
                        // Load is only asked once the state dir's mount (if
                        // any) was seen; re-check it right here so creating
                        // the directory can never land under an empty mount
                        // point.
                        if let Some(m) = &state_mount {
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
                            Ok(l) => dir_lock = Some(l),
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
                            let kept: Vec<String> =
                                kept.iter().map(|p| p.display().to_string()).collect();
                            LocksLoad::Unknown(if kept.is_empty() {
                                problem
                            } else {
                                format!("{problem} (kept for inspection: {})", kept.join(", "))
                            })
                        }
                    }
                })();
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
            DiskJob::Close(done) => {
                drop(dir_lock.take());
                let _ = done.send(());
                return;
            }
            DiskJob::Audit(rec) => {
                if let Err(e) = audit::append_durable(&dir, &rec) {
                    tracing::error!("audit log in {}: {e}", dir.display());
                }
            }
        }
    }
}

impl Driver {
    fn term_kind(&self) -> ShutdownKind {
        match self.settings.mode {
            Mode::VmInit => ShutdownKind::Poweroff,
            Mode::ContainerInit | Mode::Subreaper => ShutdownKind::Exit,
        }
    }

    fn term_kind_power(&self) -> ShutdownKind {
        self.term_kind()
    }

    /// Ask the disk thread to load the locks, unless the state directory's
    /// filesystem is not there yet — then the state stays unknown
    /// (fail-closed) and we never create a fresh store in the directory
    /// underneath the mount point.
    fn start_lock_load(&mut self, table: &crate::mounts::MountTable) {
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
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let probes = self.procs.values().filter_map(|p| match p {
            Proc::Probe(_, _, deadline) => Some(*deadline),
            Proc::Main(_) | Proc::StopCommand(_) => None,
        });
        let engine = if self.engine_broken.is_some() {
            None
        } else {
            self.engine.next_deadline()
        };
        engine.into_iter().chain(probes).min()
    }

    /// Feed one event and carry out everything that follows from it.
    fn feed(&mut self, ev: Event) {
        self.feed_many(vec![ev]);
    }

    /// Feed events that happened together; the immediate answers to the
    /// resulting actions (spawn results) are fed back as one batch too.
    fn feed_many(&mut self, events: Vec<Event>) {
        let mut batch = events;
        while !batch.is_empty() {
            if self.engine_broken.is_some() {
                return;
            }
            let now = Instant::now();
            let engine = &mut self.engine;
            let evs = std::mem::take(&mut batch);
            let actions = match catch_unwind(AssertUnwindSafe(|| engine.handle_many(now, evs))) {
                Ok(a) => a,
                Err(p) => {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    tracing::error!(
                        "BUG: the engine panicked ({msg}); supd keeps reaping and answering but starts nothing more. Please report this."
                    );
                    self.engine_broken = Some(msg);
                    return;
                }
            };
            // Hold SIGCHLD while carrying out a batch: stopping 100 units
            // is 100 signals, and every child that exits meanwhile would
            // interrupt the loop with a handler run. Held, the exits
            // coalesce into one pending SIGCHLD and one reaper drain.
            let held = SigHold::chld();
            for a in actions {
                if let Some(ev) = self.execute(a) {
                    batch.push(ev);
                }
            }
            drop(held);
        }
    }

    /// Carry out one action; an immediate result comes back as an event.
    fn execute(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Spawn { run, spec, mounts } => Some(self.spawn_main(run, &spec, &mounts)),
            Action::Signal { run, signal } => {
                // Only an unreaped pid can be signalled: it cannot have been
                // recycled while it sits in our table.
                if let Some(&pid) = self.run_pids.get(&run)
                    && let Ok(sig) = Signal::try_from(signal)
                {
                    let _ = killpg(Pid::from_raw(pid), sig);
                    if sig == Signal::SIGKILL || sig == Signal::SIGTERM {
                        // A stopped process never sees SIGTERM otherwise.
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGCONT);
                    }
                }
                None
            }
            Action::StopExec { run, spec } => {
                let argv = spec.stop.exec.clone().unwrap_or_default();
                let env = spawn::SpawnEnv {
                    notify_socket: None,
                    main_pid: self.run_pids.get(&run).copied(),
                };
                match spawn::spawn(&spec, &argv, &[], &env, None) {
                    Ok(s) => {
                        self.procs.insert(s.pid, Proc::StopCommand(run));
                        if let Some(fd) = s.output {
                            output::capture(format!("{}:stop", spec.name), fd);
                        }
                    }
                    Err(e) => {
                        // Fall back to the signal: the unit must still stop.
                        let msg = match e {
                            spawn::SpawnError::Failed(m) => m,
                            spawn::SpawnError::Mount(p) => p.to_string(),
                        };
                        tracing::warn!(unit = %spec.name, "stop command failed ({msg}); sending {}", crate::engine::signal_name(spec.stop.signal));
                        if let Some(&pid) = self.run_pids.get(&run)
                            && let Ok(sig) = Signal::try_from(spec.stop.signal)
                        {
                            let _ = killpg(Pid::from_raw(pid), sig);
                        }
                    }
                }
                None
            }
            Action::PersistLocks { version, locks } => {
                if self
                    .disk_tx
                    .send(DiskJob::Persist { version, locks })
                    .is_err()
                {
                    return Some(Event::LocksPersisted {
                        version,
                        result: Err("the persistence thread is gone".into()),
                    });
                }
                None
            }
            Action::Reply { req, response } => {
                if let Some(tx) = self.replies.remove(&req) {
                    let _ = tx.send(response);
                }
                None
            }
            Action::Audit(e) => {
                tracing::info!(target: "audit", "uid={:?} pid={:?} {} unit={:?} holder={:?} reason={:?}: {}", e.peer_uid, e.peer_pid, e.action, e.unit, e.holder, e.reason, e.outcome);
                let _ = self.disk_tx.send(DiskJob::Audit(e));
                None
            }
            Action::StartProbe {
                run,
                kind,
                spec,
                target,
                timeout,
            } => self.start_probe(run, kind, spec, target, timeout),
            Action::CancelProbe { run } => {
                for kind in [ProbeKind::Liveness, ProbeKind::Readiness] {
                    if let Some(pid) = self.probe_pids.remove(&(run, kind)) {
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
                None
            }
            Action::ShutdownComplete(kind) => {
                self.shutdown_complete = Some(kind);
                None
            }
        }
    }

    fn spawn_main(&mut self, run: RunId, spec: &UnitSpec, mounts: &[MountReq]) -> Event {
        let notify = match spec.ready.kind {
            crate::unit::ReadyKind::Notify => self.notify_path.as_deref(),
            _ => None,
        };
        let env = spawn::SpawnEnv {
            notify_socket: notify,
            main_pid: None,
        };
        let ready_fd = (spec.ready.kind == crate::unit::ReadyKind::Fd).then_some(spec.ready.fd);
        match spawn::spawn(spec, &spec.exec, mounts, &env, ready_fd) {
            Ok(s) => {
                self.procs.insert(s.pid, Proc::Main(run));
                self.run_pids.insert(run, s.pid);
                if let Some(fd) = s.ready {
                    output::watch_ready_line(fd, run, self.ready_tx.clone());
                }
                if let Some(fd) = s.output {
                    output::capture(spec.name.clone(), fd);
                }
                Event::Spawned { run, pid: s.pid }
            }
            Err(spawn::SpawnError::Mount(p)) => Event::SpawnFailed {
                run,
                error: p.to_string(),
                mount: Some(p),
            },
            Err(spawn::SpawnError::Failed(e)) => Event::SpawnFailed {
                run,
                error: e,
                mount: None,
            },
        }
    }

    fn start_probe(
        &mut self,
        run: RunId,
        kind: ProbeKind,
        spec: Arc<UnitSpec>,
        target: ProbeTarget,
        timeout: Duration,
    ) -> Option<Event> {
        match &target {
            ProbeTarget::Exec(argv) => {
                let env = spawn::SpawnEnv {
                    notify_socket: None,
                    main_pid: None,
                };
                match spawn::spawn(&spec, argv, &[], &env, None) {
                    Ok(s) => {
                        self.procs
                            .insert(s.pid, Proc::Probe(run, kind, Instant::now() + timeout));
                        self.probe_pids.insert((run, kind), s.pid);
                        if let Some(fd) = s.output {
                            output::capture(format!("{}:probe", spec.name), fd);
                        }
                        None
                    }
                    Err(e) => Some(Event::ProbeAnswered {
                        run,
                        kind,
                        ok: false,
                        output: Some(match e {
                            spawn::SpawnError::Failed(s) => s,
                            spawn::SpawnError::Mount(p) => p.to_string(),
                        }),
                    }),
                }
            }
            _ => {
                let tx = self.probe_tx.clone();
                tokio::spawn(async move {
                    let (ok, out) = probe::run(&target, timeout).await;
                    let _ = tx.send((run, kind, ok, out));
                });
                None
            }
        }
    }

    /// Exec probes past their deadline are killed and answered as failed.
    fn expire_probes(&mut self) {
        let now = Instant::now();
        let late: Vec<(i32, RunId, ProbeKind)> = self
            .procs
            .iter()
            .filter_map(|(pid, p)| match p {
                Proc::Probe(run, kind, deadline) if *deadline <= now => Some((*pid, *run, *kind)),
                _ => None,
            })
            .collect();
        for (pid, run, kind) in late {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            // Keep it in `procs` until reaped, but push its deadline out so
            // we do not spin; answer now.
            self.procs
                .insert(pid, Proc::Probe(run, kind, now + Duration::from_secs(3600)));
            if self.probe_pids.get(&(run, kind)) == Some(&pid) {
                self.probe_pids.remove(&(run, kind));
                self.feed(Event::ProbeAnswered {
                    run,
                    kind,
                    ok: false,
                    output: Some("exec probe timed out".into()),
                });
            }
        }
    }

    /// The reaper: the only `waitpid(-1)` in supd. Signals coalesce, so
    /// drain until nothing is left — never a bounded number per wake-up.
    fn reap(&mut self) {
        // Exits during the drain are collected by it; their SIGCHLDs would
        // only interrupt it. One stays pending and wakes us once more.
        let held = SigHold::chld();
        let mut exits = Vec::new();
        self.reap_into(&mut exits);
        drop(held);
        if !exits.is_empty() {
            self.feed_many(exits);
        }
    }

    fn reap_into(&mut self, exits: &mut Vec<Event>) {
        loop {
            let ws = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(ws) => ws,
            };
            let (pid, status) = match ws {
                WaitStatus::Exited(p, c) => (p.as_raw(), ExitStatus::Exited(c)),
                WaitStatus::Signaled(p, s, core) => (
                    p.as_raw(),
                    ExitStatus::Signaled {
                        signal: s as i32,
                        core,
                    },
                ),
                _ => continue,
            };
            match self.procs.remove(&pid) {
                Some(Proc::Main(run)) => {
                    self.run_pids.remove(&run);
                    // The main process is gone; whatever is left in its
                    // group is an orphan of a dead service. The group id
                    // cannot be reused while members remain.
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    exits.push(Event::ProcessExited { run, status });
                }
                Some(Proc::Probe(run, kind, _)) => {
                    if self.probe_pids.get(&(run, kind)) == Some(&pid) {
                        self.probe_pids.remove(&(run, kind));
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                        exits.push(Event::ProbeAnswered {
                            run,
                            kind,
                            ok: status.success(),
                            output: (!status.success()).then(|| format!("probe {status}")),
                        });
                    }
                }
                Some(Proc::StopCommand(run)) => {
                    tracing::debug!("stop command for {run:?} {status}");
                }
                None => tracing::debug!("reaped orphan pid {pid}: {status}"),
            }
        }
    }

    fn forward_to_units(&mut self, sig: Signal) {
        for &pid in self.run_pids.values() {
            let _ = killpg(Pid::from_raw(pid), sig);
        }
    }

    fn notified(&mut self, r: notify::Received) {
        // Which run does the sender belong to? Only a process in a unit's
        // own process group may speak for it; anything else is ignored.
        let run = self
            .run_pids
            .iter()
            .find(|(_, leader)| notify::belongs_to(r.pid, **leader))
            .map(|(run, _)| *run);
        match run {
            Some(run) => self.feed(Event::Notified { run, msg: r.msg }),
            None => tracing::warn!(
                "ignoring sd_notify message from pid {}: not a process of any unit",
                r.pid
            ),
        }
    }

    fn reload(&mut self, req: Option<ReqId>, peer: PeerInfo) {
        self.trim_pending = true;
        let result = crate::unit::load::load_dir(&self.settings.units_dir)
            .map_err(|errs| errs.iter().map(|e| e.to_string()).collect());
        self.feed(Event::Reloaded {
            req,
            peer,
            wall_ms: wall_ms(),
            result,
        });
    }

    fn control(&mut self, c: ControlRequest) {
        // Answers touch cold code (serialisation, formatting): give it back
        // once the operator is done.
        self.trim_pending = true;
        let ControlRequest { peer, req, reply } = c;
        let peer = PeerInfo {
            uid: peer.uid,
            pid: peer.pid,
            name: peer.user_name(),
        };
        if let Some(why) = &self.engine_broken {
            let _ = reply.send(Response::err(format!(
                "supd's engine failed ({why}); services keep running unsupervised. `supctl poweroff`/`reboot` still work"
            )));
            if matches!(req, Request::Poweroff | Request::Reboot) {
                self.shutdown_complete = Some(if matches!(req, Request::Reboot) {
                    ShutdownKind::Reboot
                } else {
                    self.term_kind()
                });
            }
            return;
        }
        let id = ReqId(self.next_req);
        self.next_req += 1;
        self.replies.insert(id, reply);
        match req {
            Request::Reload => self.reload(Some(id), peer),
            Request::MaintenanceLog { limit } => {
                let limit = limit.unwrap_or(50).min(10_000);
                let resp = match audit::read_tail(&self.settings.state_dir, limit) {
                    Ok(recs) => {
                        let n = recs.len();
                        Response::ok_data(
                            format!("{n} record(s)"),
                            serde_json::to_value(&recs).unwrap_or_default(),
                        )
                    }
                    Err(e) => Response::err(format!(
                        "reading the audit log in {}: {e}",
                        self.settings.state_dir.display()
                    )),
                };
                if let Some(tx) = self.replies.remove(&id) {
                    let _ = tx.send(resp);
                }
            }
            Request::MaintenanceRecover { from, accept_empty } => {
                let (result, source) = match (from, accept_empty) {
                    (Some(path), false) => (
                        LockStore::read_file(std::path::Path::new(&path)).map(|d| d.locks),
                        path,
                    ),
                    (None, true) => (Ok(LockMap::new()), "an empty lock state".to_string()),
                    _ => (
                        Err("give exactly one of --from FILE or --accept-empty".to_string()),
                        String::new(),
                    ),
                };
                // Re-take the state directory lock if the load never got it.
                self.feed(Event::Recover {
                    req: id,
                    peer,
                    wall_ms: wall_ms(),
                    result,
                    source,
                });
            }
            request => self.feed(Event::Command {
                req: id,
                peer,
                wall_ms: wall_ms(),
                request,
            }),
        }
    }

    /// After every unit stopped: end the world as the mode requires.
    fn finish(&mut self, kind: ShutdownKind) -> i32 {
        let pid1 = self.settings.mode != Mode::Subreaper;
        tracing::info!(
            "all units stopped ({:.3}s); stopping remaining processes",
            self.started.elapsed().as_secs_f64()
        );
        crate::world::init::kill_remaining(pid1, Duration::from_secs(5));
        // Everything queued for the disk is written in order before this;
        // then the state directory is released so it can be unmounted.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        if self.disk_tx.send(DiskJob::Close(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(Duration::from_secs(10));
        }
        let _ = std::fs::remove_file(&self.settings.socket);
        if let Some(p) = &self.notify_path {
            let _ = std::fs::remove_file(p);
        }
        match (self.settings.mode, kind) {
            (Mode::VmInit, ShutdownKind::Reboot) => crate::world::init::finish_vm(true),
            (Mode::VmInit, _) => crate::world::init::finish_vm(false),
            _ => {
                // No sync(2): in a container or under another init it would
                // flush every dirty page of the whole host, an unbounded
                // cost that is not ours, and the kernel outlives us anyway.
                // What supd itself must not lose (locks, audit) was fsynced
                // when written.
                tracing::info!("supd exiting");
                0
            }
        }
    }
}
