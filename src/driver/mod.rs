//! The driver: where the pure engine meets the world.
//!
//! Owns: the single-threaded event loop — a router. It waits on the world's
//! sources (signals, the mount watcher, the control socket, sd_notify
//! datagrams, probe results, readiness lines, the disk thread, the one
//! timer), turns what arrives into `Event`s, feeds them to the engine and
//! carries out the returned `Action`s. The pieces it routes to live beside
//! it:
//!
//! - `procs`: the process table and the only `waitpid(-1)` (the reaper),
//!   and process creation for mains, exec probes and stop commands;
//! - `disk`: the persistence thread (lock store, audit log, state-dir lock);
//! - `dispatch`: control requests, reloads and sd_notify → engine events;
//! - `groups`: each run's cgroup (when supd has cgroup v2), and turning a
//!   group's `cgroup.events` into `GroupEmpty`.
//! - `reader`: the reading thread (unit files for a reload, a recovery
//!   file), so no file an outsider controls is read on the loop.
//!
//! Must never: decide anything the engine should decide; block (fsync is
//! on the disk thread, probes are tasks or reaped processes); let an engine
//! panic take PID 1 down (the engine runs under `catch_unwind`; if it ever
//! panics the driver keeps reaping and answering, and starts nothing more).

mod disk;
mod dispatch;
mod groups;
mod procs;
mod reader;
mod reexec;

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};

use crate::engine::{
    Action, Engine, EngineConfig, Event, PeerInfo, ProbeKind, ReqId, RunId, ShutdownKind,
};
use crate::protocol::Response;
use crate::unit::MountReq;
use crate::world::control::{self, ControlRequest};
use crate::world::http::ScrapeRequest;
use crate::world::init::Mode;
use crate::world::lock_store::LockStore;
use crate::world::logstore::LogStore;
use crate::world::mount_watch::{MountNews, ResilientWatcher};
use crate::world::notify::{self, NotifySocket};
use crate::world::signals::{Incoming, Signals};
use crate::world::spawn;

use disk::{DiskJob, DiskResult};
use groups::Groups;
use procs::ProcTable;

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
    /// supd.toml's defaults for every unit's log limits.
    pub log: crate::unit::LogSpec,
    /// Where to serve /metrics, /healthz, /readyz.
    pub metrics: Option<std::net::SocketAddr>,
    /// Units a lenient boot load left out, and why.
    pub skipped: crate::unit::load::Skipped,
    /// Pressure-aware shedding (`[shed]` in supd.toml).
    pub shed: Option<crate::config::ShedConfig>,
}

type ProbeResult = (RunId, ProbeKind, bool, Option<String>);

struct Driver {
    engine: Engine,
    /// Set if the engine ever panicked: nothing starts any more, but we
    /// keep reaping and answering (PID 1 must not die).
    engine_broken: Option<String>,
    /// The last batch's actions' vector, empty (`feed_batch`).
    acts: Vec<Action>,
    settings: Settings,
    /// Every process we created, until reaped.
    procs: ProcTable,
    /// The cgroup each contained run lives in.
    groups: Groups,
    /// Main processes that are not our children report their exit here.
    foreign_tx: mpsc::UnboundedSender<i32>,
    /// Our own executable, for `reexec` (resolved at start: after an
    /// upgrade replaced the file, the path names the new binary).
    exe: PathBuf,
    /// `supctl reexec` was answered: replace the image at the loop's top.
    reexec: Option<crate::engine::Handoff>,
    /// Output pipes handed over by the previous image, until their units
    /// are adopted.
    resumed_outputs: HashMap<String, std::os::fd::OwnedFd>,
    replies: HashMap<ReqId, oneshot::Sender<Response>>,
    next_req: u64,
    disk_tx: std::sync::mpsc::Sender<DiskJob>,
    /// The disabled set as last sent to disk: each `enable`/`disable`
    /// builds on it (not on the engine's, which lags until the write is
    /// done), so two quick requests do not undo each other.
    disabled: std::collections::BTreeSet<String>,
    /// Per-unit logs (their own writer thread).
    logs: LogStore,
    /// Control requests by command (for metrics).
    control_requests: std::collections::BTreeMap<String, u64>,
    /// `supctl events` subscribers; bounded, a slow one lags and is dropped.
    events: tokio::sync::broadcast::Sender<std::sync::Arc<crate::protocol::EventRecord>>,
    /// Reloads and recovery files are read on the reading thread.
    read_tx: std::sync::mpsc::Sender<reader::ReadJob>,
    probe_tx: mpsc::UnboundedSender<ProbeResult>,
    /// `[ready] kind = "fd"` readiness lines arrive here.
    ready_tx: mpsc::UnboundedSender<RunId>,
    notify_path: Option<String>,
    /// Audit records queued to / written by the disk thread (sequence
    /// numbers). A reply is sent only once every record queued before it
    /// is on disk: until then it waits in `held_replies` with the sequence
    /// number it needs.
    audits_sent: u64,
    audits_done: u64,
    held_replies: Vec<(u64, oneshot::Sender<Response>, Response)>,
    /// The last audit write failed; said in the replies it held.
    audit_failure: Option<String>,
    /// sd_notify datagrams from no unit's process, logged with a rate limit.
    notify_rejects: notify::RejectLog,
    /// supd's own `$NOTIFY_SOCKET` (it runs under systemd or another
    /// supd), and whether READY=1 / STOPPING=1 were sent on it.
    own_notify: Option<String>,
    own_ready_sent: bool,
    own_stopping_sent: bool,
    /// We bound the control socket (so it is ours to remove at exit; a
    /// second instance that could not bind must not delete the first's).
    socket_bound: bool,
    /// Waiting for the state directory's filesystem before loading locks.
    locks_wait_mount: bool,
    /// The lock state read before the loop ran (see driver::disk), until
    /// the loop feeds it.
    boot_load: Option<crate::engine::LocksLoad>,
    shutdown_complete: Option<ShutdownKind>,
    /// When the loop started; for the shutdown log line.
    started: Instant,
    /// Boot or a reload happened and its memory has not been trimmed yet.
    trim_pending: bool,
    /// `[[listen]]` sockets, kept across their units' restarts.
    listeners: crate::world::listen::Listeners,
    /// When the loop last handled anything (the trim waits for quiet).
    last_activity: Instant,
}

/// The world's sources the loop waits on, other than the driver's own
/// channels' senders (which live in `Driver`).
struct Sources {
    signals: Signals,
    /// Never stops watching: a read error makes the table unknown (the
    /// engine fails closed) until a retry reads it again.
    watcher: ResilientWatcher,
    /// Why the first read of the mount table failed, if it did.
    first_table_error: Option<String>,
    notify: Option<NotifySocket>,
    ctl_rx: mpsc::Receiver<ControlRequest>,
    disk_rx: mpsc::UnboundedReceiver<DiskResult>,
    read_rx: mpsc::UnboundedReceiver<Event>,
    probe_rx: mpsc::UnboundedReceiver<ProbeResult>,
    ready_rx: mpsc::UnboundedReceiver<RunId>,
    /// Units whose cgroup emptied.
    group_rx: mpsc::UnboundedReceiver<String>,
    /// PSI triggers that fired (`[shed]`): (resource, high).
    psi_rx: mpsc::UnboundedReceiver<(crate::engine::shed::Resource, bool)>,
    foreign_rx: mpsc::UnboundedReceiver<i32>,
    /// Scrapes of /metrics, /healthz, /readyz (None: not serving).
    scrape_rx: Option<mpsc::Receiver<ScrapeRequest>>,
}

/// Arm `[shed]`'s PSI triggers and watch them; the policy the engine
/// gets, or None when shedding is off or no trigger could be armed.
fn start_psi(
    settings: &Settings,
    containment: &crate::world::cgroup::Containment,
    tx: mpsc::UnboundedSender<(crate::engine::shed::Resource, bool)>,
) -> Option<crate::engine::shed::ShedPolicy> {
    use crate::config::PsiSource;
    let cfg = settings.shed.as_ref()?;
    let subtree = match (cfg.source, containment.tree()) {
        (PsiSource::System, _) | (PsiSource::Auto, None) => None,
        (_, Some(t)) => Some(t.dir.clone()),
        (PsiSource::Subtree, None) => {
            tracing::error!(
                "[shed] source = \"subtree\" but supd has no cgroup subtree (containment is process groups): pressure-aware shedding is off; use source = \"system\" or \"auto\""
            );
            return None;
        }
    };
    let (armed, failed) = crate::world::psi::arm_all(cfg, subtree.as_deref());
    for f in &failed {
        tracing::warn!("[shed]: cannot arm a pressure trigger on {f}");
    }
    if armed.is_empty() {
        tracing::error!(
            "[shed]: no pressure trigger could be armed: pressure-aware shedding is off"
        );
        return None;
    }
    let mut watched: Vec<String> = armed.iter().map(|t| t.path.display().to_string()).collect();
    watched.dedup();
    tracing::info!(
        "[shed]: watching {} (above {}%, below {}%, window {:?})",
        watched.join(", "),
        f64::from(cfg.above) / 100.0,
        f64::from(cfg.below) / 100.0,
        cfg.policy.window
    );
    crate::world::psi::watch(armed, tx);
    Some(cfg.policy)
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The peer recorded for what supd does on its own behalf (SIGHUP reload).
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
    // Before any thread exists: every thread must block SIGCHLD and
    // supd's own signals (they are read from signalfds, see
    // world::signals), and a child that exits or a SIGTERM that comes
    // from now on stays pending for them.
    if let Err(e) = crate::world::signals::block_own() {
        tracing::error!("blocking supd's signals: {e}");
        return 1;
    }
    // Before any thread exists (it edits the environment).
    let resume = reexec::take();
    // While the lowest descriptor numbers are still free.
    spawn::init();
    // Below the lock's and the sockets' numbers (see `reserve`).
    crate::world::cgroup::EventsInotify::reserve();
    // While supd is still one thread (see world::fdtable).
    crate::world::fdtable::presize(set.units.len());
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
    let code = rt.block_on(main_loop(settings, set, seed, resume));
    // Everything that must outlive us is on disk (the disk thread was
    // closed in `finish`); tearing down a task and a descriptor per unit
    // would only delay the exit the stop-all figure measures.
    std::mem::forget(rt);
    code
}

async fn main_loop(
    settings: Settings,
    set: crate::unit::UnitSet,
    seed: u64,
    resume: Option<reexec::Resume>,
) -> i32 {
    let Some((mut d, mut src)) = setup(settings, set, seed) else {
        return 1;
    };
    let mut first = Vec::new();
    let mut handed: Vec<(String, i32)> = Vec::new();
    if let Some(r) = resume {
        let taken = r.into_taken();
        tracing::info!(
            "re-executed: taking over from the previous image ({} units)",
            taken.handoff.units.len()
        );
        d.resumed_outputs = taken.outputs;
        d.listeners.adopt(taken.listeners);
        handed = taken
            .handoff
            .units
            .iter()
            .filter_map(|u| u.pid.map(|p| (u.name.clone(), p)))
            .collect();
        first.push(Event::Resumed(taken.handoff));
    }
    if let Some(why) = src.first_table_error.take() {
        first.push(Event::MountTableUnknown(why));
    }
    // What a previous supd left running is adopted (or stopped) before
    // anything starts: never a second copy. The same batch kicks the
    // engine once so units that need nothing start at boot.
    let found = d.survivors();
    // Runs the cgroups do not show (no cgroups, or a run contained only by
    // its process group): the handed-over main processes, still our
    // children across the exec.
    for (unit, pid) in handed {
        let seen = found
            .iter()
            .any(|e| matches!(e, Event::Adopted { unit: u, .. } if *u == unit));
        if seen {
            continue;
        }
        match crate::world::mainpid::check(pid, None) {
            Ok(()) => first.push(Event::Adopted {
                unit,
                pid: Some(pid),
                cgroup: None,
                wall_ms: wall_ms(),
            }),
            Err(e) => tracing::info!(unit = %unit, "not taken over: {e}"),
        }
    }
    first.extend(found);
    first.push(Event::Tick);
    // Socket activation: every [[listen]] is bound before anything starts.
    d.bind_listeners();
    d.feed_many(first);
    // Only now may the lock load answer (with a late state mount it does at
    // once): nothing is decided before the survivors are known.
    let table = d.engine.mounts().clone();
    d.first_lock_load(&table);
    // Pipes of units that were not adopted: nobody will read them.
    d.resumed_outputs.clear();

    loop {
        // Signals sent by process group last turn reach the rest of their
        // cgroups now (`sweep_groups`).
        d.sweep_groups();
        if let Some(kind) = d.shutdown_complete {
            d.end_processes();
            read_last_output(OUTPUT_DRAIN).await;
            let code = d.finish(kind);
            // Everything that must outlive us was closed by `finish`;
            // freeing thousands of units, groups and tasks one by one
            // would only delay the exit (the kernel takes it all back).
            std::mem::forget(d);
            std::mem::forget(src);
            return code;
        }
        if d.reexec.take().is_some() {
            // Everything that must outlive this image goes to disk first;
            // the audit results it answers with release the replies held
            // for them ("re-executing" among them), and the connection
            // tasks get a moment to deliver them.
            d.close_disk();
            while let Ok(res) = src.disk_rx.try_recv() {
                d.disk_result(res);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            // What the old image knows now, every write landed.
            let h = d.engine.handoff(Instant::now());
            d.reexec_now(h);
        }
        let trim_at = d.trim_pending.then(|| d.last_activity + TRIM_AFTER_QUIET);
        let deadline = match (d.next_wakeup(), trim_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            biased;
            s = src.signals.recv() => d.signal(s),
            Some(req) = src.ctl_rx.recv() => d.control(req),
            Some(res) = src.disk_rx.recv() => d.disk_result(res),
            Some(ev) = src.read_rx.recv() => {
                let reloaded = matches!(&ev, Event::Reloaded { result: Ok(_), .. });
                if let Event::Reloaded { result: Ok(set), .. } = &ev {
                    // Sockets of units that are gone close now; changed
                    // ones are re-bound at their unit's next start.
                    d.listeners.retain_units(|n| set.units.contains_key(n));
                }
                d.feed(ev);
                if reloaded {
                    d.bind_listeners();
                }
            }
            Some((run, kind, ok, output)) = src.probe_rx.recv() => {
                d.feed(Event::ProbeAnswered { run, kind, ok, output })
            }
            Some(run) = src.ready_rx.recv() => d.feed(Event::ReadyFd { run }),
            Some(pid) = src.foreign_rx.recv() => d.foreign_exited(pid),
            Some((resource, high)) = src.psi_rx.recv() => {
                d.feed(Event::Pressure { resource, high, wall_ms: wall_ms() })
            }
            Some(unit) = src.group_rx.recv() => {
                // Groups empty together (a shutdown, a dependency chain
                // stopping): what the watches have queued is one batch.
                let mut units = vec![unit];
                while let Ok(u) = src.group_rx.try_recv() {
                    units.push(u);
                }
                d.groups_emptied(units);
            }
            Some(req) = async { match src.scrape_rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                d.scrape(req)
            }
            r = async { match &src.notify { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                if let Ok(r) = r { d.notified(r) }
            }
            news = src.watcher.next() => match news {
                MountNews::Changed(table) => {
                    if d.locks_wait_mount {
                        d.start_lock_load(&table);
                    }
                    d.feed(Event::MountTableChanged(table));
                }
                MountNews::Unknown(why) => d.feed(Event::MountTableUnknown(why)),
            },
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

/// Open every source and build the driver; `None` when supd cannot run
/// (the reason was logged).
fn setup(settings: Settings, set: crate::unit::UnitSet, seed: u64) -> Option<(Driver, Sources)> {
    // Signals first: a child that exits before we listen must still wake us.
    let signals = Signals::install()
        .map_err(|e| tracing::error!("signal handler: {e}"))
        .ok()?;
    if settings.mode == Mode::VmInit {
        // ctrl-alt-del becomes SIGINT to us instead of an immediate reboot.
        let _ = nix::sys::reboot::set_cad_enabled(false);
    }
    let subreaper = settings.mode == Mode::Subreaper;

    let (watcher, first_table) = ResilientWatcher::start();
    let (table, first_table_error) = match first_table {
        Ok(t) => (t, None),
        Err(why) => (Default::default(), Some(why)),
    };
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
                if subreaper {
                    eprintln!("supd: {e}");
                    return None;
                }
            }
        }
    }

    let (ctl_tx, ctl_rx) = mpsc::channel::<ControlRequest>(64);
    let mut socket_bound = false;
    match control::bind(&settings.socket) {
        Ok(listener) => {
            socket_bound = true;
            tokio::spawn(control::serve(
                listener,
                ctl_tx,
                std::future::pending::<()>(),
            ));
            tracing::info!("control socket at {}", settings.socket.display());
        }
        Err(e) => {
            tracing::error!("control socket {}: {e}", settings.socket.display());
            if subreaper {
                eprintln!("supd: {e}");
                return None;
            }
        }
    }

    // sd_notify socket, next to the control socket.
    let notify_path = settings
        .socket
        .parent()
        .map(|d| d.join("notify.sock"))
        .unwrap_or_else(|| PathBuf::from("/run/supd/notify.sock"));
    let notify = match notify::NotifySocket::bind(&notify_path) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(
                "sd_notify socket {}: {e}; notify readiness unavailable",
                notify_path.display()
            );
            None
        }
    };

    // Once we know we run (state dir and socket are ours), before the
    // first spawn: every unit process is born in its group.
    let (group_tx, group_rx) = mpsc::unbounded_channel();
    // The subtree belongs to whoever holds the state directory: a supd
    // that could not take it (PID 1 carries on without it) must not adopt,
    // kill or remove another supd's services.
    let containment = if dir_lock.is_some() || settings.state_mount.is_some() {
        crate::world::cgroup::Containment::setup(&settings.state_dir, settings.mode == Mode::VmInit)
    } else {
        crate::world::cgroup::Containment::ProcessGroups {
            why: format!(
                "another supd holds the state directory {}, and with it the cgroups of its services",
                settings.state_dir.display()
            ),
        }
    };
    let groups = Groups::new(containment, group_tx);
    let containment = groups.describe();
    match &groups.containment {
        crate::world::cgroup::Containment::Cgroup(_) => {
            tracing::info!("containment: {containment}")
        }
        crate::world::cgroup::Containment::ProcessGroups { .. } => {
            tracing::warn!("containment: {containment}")
        }
    }
    if let Some(w) = crate::world::procfs::warning() {
        tracing::warn!("{w}");
    }
    let (psi_tx, psi_rx) = mpsc::unbounded_channel();
    let shed_policy = start_psi(&settings, &groups.containment, psi_tx);
    let mut engine = Engine::new(
        set,
        EngineConfig {
            max_parallel_starts: settings.max_parallel_starts,
            seed,
            containment: Some(containment),
            shed: shed_policy,
            ..Default::default()
        },
        table,
    );
    engine.set_skipped(settings.skipped.clone());
    let disabled = disk::read_disabled(&settings.state_dir);
    engine.set_disabled(disabled.clone());
    // Their groups are made on a thread of their own while the first
    // units start (see world::group_prep).
    let mut groups = groups;
    groups.prepare_ahead(
        engine
            .units()
            .filter(|(_, u)| !u.removed && !disabled.contains(&u.spec.name))
            .map(|(_, u)| u.spec.name.clone())
            .collect(),
    );

    let mut store = LockStore::open(&settings.state_dir);
    let boot_load = disk::boot_load(
        &settings.state_dir,
        settings.state_mount.as_ref(),
        &mut store,
        &mut dir_lock,
    );
    let (disk_tx, disk_rx) = disk::start(
        settings.state_dir.clone(),
        settings.state_mount.clone(),
        dir_lock,
        store,
    )
    .map_err(|e| tracing::error!("cannot start the persistence thread: {e}"))
    .ok()?;

    let mut scrape_rx = None;
    if let Some(addr) = settings.metrics {
        match crate::world::http::bind(addr) {
            Ok(l) => {
                let (tx, rx) = mpsc::channel(16);
                tokio::spawn(crate::world::http::serve(l, tx));
                scrape_rx = Some(rx);
                tracing::info!("metrics on http://{addr}/metrics");
            }
            Err(e) => {
                tracing::error!("{e}");
                if subreaper {
                    eprintln!("supd: {e}");
                    return None;
                }
            }
        }
    }

    let logs = LogStore::start(&settings.state_dir, settings.state_mount.clone())
        .map_err(|e| tracing::error!("cannot start the log writer thread: {e}"))
        .ok()?;

    let (read_tx, read_rx) = reader::start()
        .map_err(|e| tracing::error!("cannot start the reading thread: {e}"))
        .ok()?;

    let (probe_tx, probe_rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = mpsc::unbounded_channel();
    let (foreign_tx, foreign_rx) = mpsc::unbounded_channel();
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let d = Driver {
        foreign_tx,
        exe,
        reexec: None,
        resumed_outputs: HashMap::new(),
        engine,
        engine_broken: None,
        acts: Vec::new(),
        locks_wait_mount: false,
        boot_load,
        procs: ProcTable::default(),
        groups,
        replies: HashMap::new(),
        next_req: 1,
        disk_tx,
        disabled,
        logs,
        events: tokio::sync::broadcast::channel(EVENT_BACKLOG).0,
        control_requests: Default::default(),
        read_tx,
        probe_tx,
        ready_tx,
        notify_path: notify
            .as_ref()
            .map(|s| s.path.to_string_lossy().to_string()),
        socket_bound,
        notify_rejects: notify::RejectLog::new(notify::RejectLog::WINDOW),
        own_notify: std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty()),
        own_ready_sent: false,
        own_stopping_sent: false,
        audits_sent: 0,
        audits_done: 0,
        held_replies: Vec::new(),
        audit_failure: None,
        shutdown_complete: None,
        started: Instant::now(),
        trim_pending: true,
        listeners: Default::default(),
        last_activity: Instant::now(),
        settings,
    };
    let src = Sources {
        signals,
        watcher,
        first_table_error,
        notify,
        ctl_rx,
        disk_rx,
        read_rx,
        probe_rx,
        ready_rx,
        group_rx,
        psi_rx,
        foreign_rx,
        scrape_rx,
    };
    Some((d, src))
}

/// Events a subscriber may fall behind before it is dropped.
const EVENT_BACKLOG: usize = 1024;

/// How long the loop must have been quiet after boot, a reload or operator
/// commands before their memory is given back (one wake-up each time).
const TRIM_AFTER_QUIET: Duration = Duration::from_millis(250);

/// How long the last output of stopped services may take to be read at
/// exit (every writer is gone by then, so it is all in the pipes; the
/// bound covers a pipe some outside process still holds open).
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// Let the output readers reach the end of their pipes: the stop of the
/// last units can end within one reaper drain, before their readers ever
/// ran, and what a service says as it stops belongs in its log.
async fn read_last_output(limit: Duration) {
    let end = Instant::now() + limit;
    let mut turns = 0u32;
    while crate::world::output::reading() > 0 && Instant::now() < end {
        // Each yield lets the runtime poll for readiness and run the
        // readers; a pipe still held open elsewhere is waited for in
        // short sleeps, not a spin.
        if turns < 64 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        turns += 1;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// Bind the `[[listen]]` sockets of every unit that has none open yet
    /// (at boot, and for units a reload added): a client connecting before
    /// the unit starts is queued. A failure is logged here and is the
    /// unit's start error when it starts (binding is tried again then).
    fn bind_listeners(&mut self) {
        let specs: Vec<std::sync::Arc<crate::unit::UnitSpec>> = self
            .engine
            .units()
            .filter(|(_, u)| !u.spec.listen.is_empty())
            .map(|(_, u)| u.spec.clone())
            .collect();
        for spec in specs {
            if let Err(e) = self.listeners.prepare(&spec) {
                tracing::warn!(unit = %spec.name, "{e}; trying again when the unit starts");
            }
        }
    }

    fn term_kind(&self) -> ShutdownKind {
        match self.settings.mode {
            Mode::VmInit => ShutdownKind::Poweroff,
            Mode::ContainerInit | Mode::Subreaper => ShutdownKind::Exit,
        }
    }

    fn signal(&mut self, s: Incoming) {
        match s {
            Incoming::Child(pid) => self.reap(pid),
            Incoming::Terminate | Incoming::Power => {
                tracing::info!("{s:?} signal received");
                self.feed(Event::ShutdownRequested(self.term_kind()));
            }
            Incoming::Interrupt => {
                tracing::info!("SIGINT received");
                let kind = if self.settings.mode == Mode::VmInit {
                    ShutdownKind::Reboot
                } else {
                    ShutdownKind::Exit
                };
                self.feed(Event::ShutdownRequested(kind));
            }
            Incoming::Hangup => self.reload_on_hup(),
            Incoming::User1 => self.procs.signal_all_units(Signal::SIGUSR1),
            Incoming::User2 => self.procs.signal_all_units(Signal::SIGUSR2),
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let engine = if self.engine_broken.is_some() {
            None
        } else {
            self.engine.next_deadline()
        };
        engine
            .into_iter()
            .chain(self.procs.next_probe_deadline())
            .chain(self.groups.sweep_pending().then(Instant::now))
            .min()
    }

    /// Feed one event and carry out everything that follows from it.
    fn feed(&mut self, ev: Event) {
        self.feed_many(vec![ev]);
    }

    /// Feed events that happened together; the immediate answers to the
    /// resulting actions (spawn results) are fed back as one batch too.
    fn feed_many(&mut self, events: Vec<Event>) {
        self.feed_batch(events);
        self.tell_manager();
    }

    /// READY=1 to supd's own manager once boot has settled, STOPPING=1 once
    /// shutdown begins.
    fn tell_manager(&mut self) {
        let Some(sock) = self.own_notify.clone() else {
            return;
        };
        let say = |text: &str| {
            if let Err(e) = notify::notify_manager(&sock, text) {
                tracing::warn!("sd_notify to supd's manager at {sock}: {e}");
            }
        };
        if !self.own_ready_sent && self.engine_broken.is_none() && self.engine.settled() {
            self.own_ready_sent = true;
            let units = self.engine.units().count();
            say(&format!("READY=1\nSTATUS=supervising {units} units"));
        }
        if !self.own_stopping_sent && self.engine.shutting_down().is_some() {
            self.own_stopping_sent = true;
            say("STOPPING=1\nSTATUS=stopping units");
        }
    }

    fn feed_batch(&mut self, events: Vec<Event>) {
        let mut batch = events;
        // The log lines of this batch (two per unit started) reach the
        // log writer with one wake-up, when it ends.
        let _logs = self.logs.hold_wakes();
        // And supd's own lines about it go to stderr together.
        let _stderr = crate::world::log::hold();
        // The actions' vector is kept from batch to batch, emptied: the
        // engine appends to it instead of handing out a new one each time.
        let mut acts = std::mem::take(&mut self.acts);
        while !batch.is_empty() {
            if self.engine_broken.is_some() {
                return;
            }
            let now = Instant::now();
            let engine = &mut self.engine;
            let evs = std::mem::take(&mut batch);
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| {
                engine.handle_many_into(now, evs, &mut acts)
            })) {
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
            // Children that exit meanwhile (stopping 100 units is 100
            // exits) interrupt nothing: SIGCHLD is blocked for good and
            // read from its signalfd, where the exits coalesce into one
            // pending signal and one reaper drain.
            execution_order(&mut acts);
            for a in acts.drain(..) {
                batch.extend(self.execute(a));
            }
        }
        // A boot's batch (an action per unit) is not kept.
        acts.shrink_to(ACTS_KEEP);
        self.acts = acts;
    }

    /// Carry out one action; an immediate result comes back as an event.
    fn execute(&mut self, action: Action) -> Vec<Event> {
        match action {
            Action::Spawn { run, spec, mounts } => self.start_run(run, spec, mounts),
            Action::Signal { run, signal } => {
                if !self.signal_contained(run, signal)
                    && let Ok(sig) = Signal::try_from(signal)
                {
                    self.procs.signal_run(run, sig);
                }
                vec![]
            }
            Action::SignalMain { run, signal } => {
                // A forking run without a main process (pidless_ended):
                // "the main process" is all of its group.
                let group = self.is_pidless(run) && self.groups.signal(run, signal, None);
                if !group && let Ok(sig) = Signal::try_from(signal) {
                    self.procs.signal_main(run, sig);
                }
                vec![]
            }
            Action::Track {
                run,
                unit,
                pid,
                contained,
            } => self.track(run, &unit, pid, contained).into_iter().collect(),
            Action::Reexec(h) => {
                self.reexec = Some(h);
                vec![]
            }
            Action::KillGroup { run } => {
                if !self.groups.kill(run) {
                    self.procs.signal_run(run, Signal::SIGKILL);
                }
                vec![]
            }
            Action::StopExec { run, spec } => self.stop_exec(run, spec),
            Action::PersistLocks { version, locks } => {
                if self
                    .disk_tx
                    .send(DiskJob::Persist { version, locks })
                    .is_err()
                {
                    return vec![Event::LocksPersisted {
                        version,
                        result: Err("the persistence thread is gone".into()),
                    }];
                }
                vec![]
            }
            Action::Reply { req, response } => {
                if let Some(tx) = self.replies.remove(&req) {
                    if self.audits_done < self.audits_sent {
                        self.held_replies.push((self.audits_sent, tx, response));
                    } else {
                        let _ = tx.send(response);
                    }
                }
                vec![]
            }
            Action::Audit(e) => {
                tracing::info!(target: "audit", "uid={:?} pid={:?} {} unit={:?} holder={:?} reason={:?}: {}", e.peer_uid, e.peer_pid, e.action, e.unit, e.holder, e.reason, e.outcome);
                self.audits_sent += 1;
                if self
                    .disk_tx
                    .send(DiskJob::Audit(e, self.audits_sent))
                    .is_err()
                {
                    self.audited(
                        self.audits_sent,
                        Err("the persistence thread is gone".into()),
                    );
                }
                vec![]
            }
            Action::StartProbe {
                run,
                kind,
                spec,
                target,
                timeout,
            } => self
                .start_probe(run, kind, spec, target, timeout)
                .into_iter()
                .collect(),
            Action::ReloadExec { run, spec: _ } => self.reload_exec(run),
            Action::CancelProbe { run } => {
                self.procs.cancel_probes(run);
                vec![]
            }
            Action::ShutdownComplete(kind) => {
                self.shutdown_complete = Some(kind);
                vec![]
            }
            Action::Publish(body) => {
                self.publish(body);
                vec![]
            }
        }
    }

    /// The watches say these units' groups emptied: the engine hears of
    /// every one still true, as one batch.
    fn groups_emptied(&mut self, units: Vec<String>) {
        let mut evs = Vec::new();
        let mut done = Vec::new();
        for unit in units {
            // A stop command of the run is not reaped yet: the group may be
            // empty only between two commands (or the command has left it
            // and is not reaped yet); its end reads the group again
            // (`stop_chain_over`).
            if self
                .groups
                .current_run(&unit)
                .is_some_and(|run| self.procs.stop_pending(run))
            {
                continue;
            }
            let Some(run) = self.groups.emptied(&unit) else {
                continue;
            };
            let n = self.groups.new_oom_kills(&unit);
            if n > 0 {
                evs.push(Event::OomKilled { run, count: n });
            }
            match self.stop_post_on_empty(run) {
                Some(started) => evs.extend(started),
                None => {
                    evs.push(Event::GroupEmpty { run });
                    // A forking run without a main process ends here.
                    evs.extend(self.pidless_ended(run));
                }
            }
            done.push((run, unit));
        }
        if !evs.is_empty() {
            self.feed_many(evs);
        }
        self.retire_groups(done);
    }

    /// After every unit stopped: end the world as the mode requires.
    /// Every unit stopped: what is left of any process goes now.
    fn end_processes(&mut self) {
        let pid1 = self.settings.mode != Mode::Subreaper;
        tracing::info!(
            "all units stopped ({:.3}s); stopping remaining processes",
            self.started.elapsed().as_secs_f64()
        );
        crate::world::init::kill_remaining(pid1, Duration::from_secs(5));
    }

    /// After every unit stopped, every process ended and its output was
    /// read: end the world as the mode requires.
    fn finish(&mut self, kind: ShutdownKind) -> i32 {
        let retiring = self.groups.take_retiring();
        let this = &*self;
        std::thread::scope(|s| {
            // The groups are removed on the other core (an rmdir is ~40
            // µs of kernel time under cgroupfs's one mutex, per unit)
            // while this thread waits for the log writer and the disk.
            let clean = (this.settings.mode != Mode::VmInit).then(|| {
                let groups = &this.groups;
                // What the shutdown's clean-up thread was given is
                // removed before the rest (no two rmdirs of one group).
                let all = move || {
                    if let Some(r) = retiring {
                        r.finish();
                    }
                    groups.remove_all()
                };
                std::thread::Builder::new()
                    .name("supd-cleanup".into())
                    .spawn_scoped(s, all)
                    .map_err(|e| {
                        // The clean-up thread, if any, goes on alone: a
                        // group it removes first is gone (ENOENT) here.
                        tracing::debug!("no thread for the cgroup clean-up ({e}); done here");
                        groups.remove_all();
                    })
            });
            // Output of the last processes is in the queue: write it,
            // then let go of the state directory.
            this.logs.close(Duration::from_secs(5));
            this.close_disk();
            if let Some(Ok(t)) = clean {
                let _ = t.join();
            }
        });
        if self.socket_bound {
            let _ = std::fs::remove_file(&self.settings.socket);
        }
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

/// The room `feed_batch` keeps for the next batch's actions.
const ACTS_KEEP: usize = 64;

/// The order a batch of actions is carried out in: the engine's, except
/// that every audit record is queued before the batch's first reply (a reply
/// waits for the records queued before it: an acknowledged change is an
/// audited one). Nothing else moves — above all not an audit record ahead
/// of the lock write the engine put before it: the disk thread writes in
/// queue order, and a power cut between an audited `maintenance on` and its
/// first lock file would leave "no lock file, but the audit log shows
/// locks" — a boot that fails closed for a lock nobody was ever told about.
fn execution_order(actions: &mut Vec<Action>) {
    let Some(first_reply) = actions
        .iter()
        .position(|a| matches!(a, Action::Reply { .. }))
    else {
        return;
    };
    // Nearly every batch has no reply, or no audit record after it: its
    // order stands, and its vector (kept from batch to batch) is not copied.
    if !actions[first_reply..]
        .iter()
        .any(|a| matches!(a, Action::Audit(_)))
    {
        return;
    }
    let all = std::mem::take(actions);
    let mut tail = Vec::new();
    for (i, a) in all.into_iter().enumerate() {
        if i < first_reply || matches!(a, Action::Audit(_)) {
            actions.push(a);
        } else {
            tail.push(a);
        }
    }
    actions.extend(tail);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::AuditEntry;

    fn audit(action: &str) -> Action {
        Action::Audit(AuditEntry {
            wall_ms: 0,
            peer_uid: None,
            peer_pid: None,
            holder: None,
            unit: None,
            action: action.to_string(),
            reason: None,
            outcome: "ok".to_string(),
        })
    }

    fn kinds(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Audit(e) => format!("audit {}", e.action),
                Action::PersistLocks { version, .. } => format!("persist {version}"),
                Action::Reply { .. } => "reply".to_string(),
                _ => "other".to_string(),
            })
            .collect()
    }

    #[test]
    fn a_lock_write_is_queued_before_its_audit_record_and_replies_after_both() {
        let persist = |version| Action::PersistLocks {
            version,
            locks: Default::default(),
        };
        let reply = || Action::Reply {
            req: crate::engine::event::ReqId(1),
            response: crate::protocol::Response::ok("done"),
        };
        let mut got = vec![
            persist(1),
            audit("maintenance-on"),
            reply(),
            persist(2),
            audit("maintenance-off"),
        ];
        execution_order(&mut got);
        assert_eq!(
            kinds(&got),
            [
                "persist 1",
                "audit maintenance-on",
                "audit maintenance-off",
                "reply",
                "persist 2"
            ]
        );
    }
}
