//! The driver's side of containment: which cgroup each run lives in.
//!
//! Owns: supd's `Containment` (found once at start-up), the group of each
//! unit (made ahead of its first spawn by `world::group_prep`'s thread,
//! or at that spawn when the thread has not got to it; kept across its
//! restarts), the inotify watches on the groups' `cgroup.events` (one
//! instance every group shares), and the map from a contained run to its
//! group. A group holds
//! no descriptor of its own: its directory is opened for each spawn into
//! it (`CLONE_INTO_CGROUP`) and closed right after, so a unit costs supd
//! one descriptor (its output pipe) and 10,000 units fit in 20,000. Turns "the group of unit U
//! became empty" into `GroupEmpty{run}` for the run that lives there. In
//! a shutdown, it hands the groups of stopped units (watch, then group)
//! to a clean-up thread, and at exit removes what is left.
//!
//! Watched lazily: a group is watched only from the moment the driver must
//! learn of its emptying with no exit of a main process to prompt it — its
//! main process ended and something is left in it, it has no main process
//! (a forking daemon whose main cannot be named, an adopted run), its main
//! process is not supd's child, or it was killed through `cgroup.kill`.
//! The usual service alone in its group needs none: the reaper finds the
//! group empty when it reaps the main process (`empty_before_exit`). So a
//! start wave adds no watch, and a spawn raises no "populated" wake-up for
//! supd to read (the kernel's notification still runs, on a kworker, and
//! finds no watch). Whenever a watch is added, the group is read once more
//! after it (a wake-up of our own making, on the watches' channel): an
//! emptying between the last read and the watch is not lost.
//!
//! Must never: report a group empty on a stale wake-up (the file is read
//! again, synchronously, before the engine is told); bind two runs to one
//! group (the engine starts a unit again only after `GroupEmpty`); remove
//! a group something may still be spawned into (only in a shutdown, once
//! its unit's main process is reaped and no command of it runs or is due:
//! a stop command's successor, a stop-post command); decide anything
//! about a unit.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::engine::RunId;
use crate::world::cgroup::{self, Containment, EventsInotify, EventsWatch, Group, GroupKind};
use crate::world::devices;
use crate::world::group_prep::Preparer;

pub(super) struct Groups {
    pub(super) containment: Containment,
    /// Groups made, by unit name and kind: kept for the unit's lifetime,
    /// no mkdir per spawn.
    open: HashMap<(String, GroupKind), PathBuf>,
    /// Unit groups watched now (see "watched lazily" above).
    watched: HashSet<String>,
    /// Contained run -> its unit (until its group is reported empty).
    runs: HashMap<RunId, String>,
    /// Unit -> the run whose processes are in its group now.
    current: HashMap<String, RunId>,
    /// Units whose group emptied, from the watch tasks.
    tx: mpsc::UnboundedSender<String>,
    /// The inotify instance every unit group is watched through, made at
    /// the first group (it needs the runtime); Err: it could not be, and
    /// each group gets a descriptor of its own instead.
    watcher: Option<Result<Watcher, String>>,
    /// Units whose group was killed through `cgroup.kill` since it was
    /// made. Linux (seen on 6.18) SIGKILLs a child born into such a group
    /// with CLONE_INTO_CGROUP: the fork compares the group's kill count
    /// with the one it sampled from the parent's group. So a killed group
    /// is made afresh before the next spawn.
    killed: std::collections::HashSet<String>,
    /// Resources last written to each unit's group.
    applied: HashMap<String, crate::unit::Resources>,
    /// OOM kills seen in each unit's group (`memory.events`).
    oom_seen: HashMap<String, u64>,
    /// During a shutdown: the thread that removes the groups of stopped
    /// units, and each unit's watch (made from the watcher's map when
    /// the first group is retired).
    retiring: Option<Retiring>,
    watch_of: Option<HashMap<String, i32>>,
    /// Runs signalled through their leader's process group whose group
    /// is still to be swept for the members that left it (`sweep`): the
    /// process group and the signal, per send.
    sweeps: HashMap<RunId, Vec<(i32, i32)>>,
    /// The thread that makes the units' groups ahead of their first
    /// spawn (`world::group_prep`); None before `prepare_ahead`, without
    /// cgroups, or where it could not be started.
    prep: Option<Preparer>,
}

/// The shutdown's clean-up thread: takes (watch, group name) pairs,
/// removes the watch and then the group, while the loop's thread reaps
/// and stops the units that are left. Each rmdir is ~40-60 µs of kernel
/// time (cgroupfs removes every interface file of the group), which at
/// exit was paid one unit after another after the last one stopped.
pub(super) struct Retiring {
    tx: std::sync::mpsc::Sender<(Option<i32>, std::ffi::CString)>,
    thread: std::thread::JoinHandle<()>,
}

impl Retiring {
    /// Let the thread finish what it was given, and wait for it.
    pub(super) fn finish(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

impl Groups {
    pub(super) fn new(containment: Containment, tx: mpsc::UnboundedSender<String>) -> Groups {
        Groups {
            containment,
            open: HashMap::new(),
            runs: HashMap::new(),
            current: HashMap::new(),
            tx,
            watcher: None,
            watched: HashSet::new(),
            killed: Default::default(),
            applied: HashMap::new(),
            oom_seen: HashMap::new(),
            retiring: None,
            watch_of: None,
            sweeps: HashMap::new(),
            prep: None,
        }
    }

    /// Make the groups of `units` (in the order they are expected to
    /// start) on a thread of their own, ahead of their first spawn (see
    /// `world::group_prep` for why and what stays here). Best effort:
    /// where it cannot run, every group is made at its first spawn, as
    /// without it.
    pub(super) fn prepare_ahead(&mut self, units: Vec<String>) {
        let Containment::Cgroup(tree) = &self.containment else {
            return;
        };
        let subtree = match tree.dup_subtree() {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!("no group preparation ahead of the spawns: {e}");
                return;
            }
        };
        let memory = tree.controllers.iter().any(|c| c == "memory");
        match Preparer::start(units, subtree, tree.dir.clone(), memory) {
            Ok(p) => self.prep = Some(p),
            Err(e) => tracing::debug!("no group preparation ahead of the spawns: {e}"),
        }
    }

    /// supd's containment in words, for `status`.
    pub(super) fn describe(&self) -> String {
        match &self.containment {
            Containment::Cgroup(t) => format!(
                "cgroup v2 {} (controllers: {}){}",
                t.dir.display(),
                if t.controllers.is_empty() {
                    "none".to_string()
                } else {
                    t.controllers.join(" ")
                },
                t.unavailable
                    .as_ref()
                    .map(|w| format!("; {w}"))
                    .unwrap_or_default()
            ),
            Containment::ProcessGroups { why } => format!(
                "process groups only ({why}): a process that leaves its group escapes supervision"
            ),
        }
    }

    /// The unit's group directory, opened for a spawn (the caller closes
    /// it once the child exists), and its cgroup path, creating the group
    /// on first use (not watched: see "watched lazily"). None without
    /// cgroups, or when the group cannot be made (logged; the run is then
    /// contained by its process group only).
    pub(super) fn group_for(
        &mut self,
        unit: &str,
        kind: GroupKind,
    ) -> Option<(std::os::fd::OwnedFd, String)> {
        if kind == GroupKind::Unit
            && !self.sweeps.is_empty()
            && let Some(&run) = self.current.get(unit)
        {
            // What the stop signal was for, before anything new is added.
            self.sweep(run);
        }
        let Containment::Cgroup(tree) = &self.containment else {
            return None;
        };
        let key = (unit.to_string(), kind);
        if kind == GroupKind::Unit && self.killed.contains(unit) && !self.current.contains_key(unit)
        {
            // Made afresh (see `killed`); watched again only when needed.
            self.killed.remove(unit);
            self.applied.remove(unit);
            self.oom_seen.remove(unit);
            if let Some(p) = self.open.remove(&key) {
                unwatch(&mut self.watched, &self.watcher, unit);
                if let Err(e) = cgroup::remove(&p) {
                    tracing::warn!(unit = %unit, "removing killed cgroup {}: {e}", p.display());
                }
            }
        }
        let known = self.open.contains_key(&key);
        // Made ahead by the preparing thread, or else made here.
        let prepared = match (&self.prep, known, kind) {
            (Some(p), false, GroupKind::Unit) => p.claim(unit),
            _ => None,
        };
        let (g, made) = match tree.open_group(unit, kind, known || prepared.is_some()) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(unit = %unit, "{e}; this run is contained by its process group only");
                return None;
            }
        };
        if !known || made {
            // A group removed behind supd's back and made again here lost
            // its watch with its old directory.
            if kind == GroupKind::Unit && made && known {
                unwatch(&mut self.watched, &self.watcher, unit);
            }
            // Without the memory controller there is no memory.events:
            // no failing open per spawn.
            if kind == GroupKind::Unit && tree.controllers.iter().any(|c| c == "memory") {
                let n = match prepared {
                    Some(p) if !made => p.oom_kills,
                    _ => cgroup::oom_kills(&g.path),
                };
                if let Some(n) = n {
                    self.oom_seen.insert(unit.to_string(), n);
                }
            }
            self.open.insert(key, g.path.clone());
        }
        let path = format!(
            "{}/{}",
            tree.cgroup_path.trim_end_matches('/'),
            cgroup::group_name(unit, kind)
        );
        Some((g.dir, path))
    }

    /// SIGKILL everything in a contained run's group. False when the run
    /// is not contained (the caller falls back to its process group).
    pub(super) fn kill(&mut self, run: RunId) -> bool {
        let Some(dir) = self.dir_of(run) else {
            return false;
        };
        if let Some(unit) = self.runs.get(&run).cloned() {
            // The engine now waits for the group to empty.
            self.ensure_watched(&unit);
            self.killed.insert(unit);
        }
        if let Err(e) = cgroup::kill(&dir) {
            tracing::warn!("killing the processes of {}: {e}", dir.display());
        }
        true
    }

    /// Send `sig` to every process in a contained run's group. False when
    /// the run is not contained (the caller signals its process group).
    ///
    /// With `leader` (the run's main process, or the helper standing in
    /// for it: unreaped, reaped only on this thread) leading its own
    /// process group, as every process supd spawns does (setsid): that
    /// group is signalled at once, two system calls for all its members,
    /// and the rest of the cgroup (what left the group: a `setsid` child,
    /// a daemon) at the loop's next turn (`sweep`), after the exits of
    /// this turn are reaped — by then most groups are found empty by the
    /// reaper and need no read of `cgroup.procs` at all. Otherwise the
    /// whole group is read and signalled now.
    pub(super) fn signal(&mut self, run: RunId, sig: i32, leader: Option<i32>) -> bool {
        let (Some(unit), Some(tree)) = (self.runs.get(&run), self.containment.tree()) else {
            return false;
        };
        if !self.open.contains_key(&(unit.clone(), GroupKind::Unit)) {
            return false;
        }
        // A process that is not its group's leader (a forking daemon's
        // main, a `MAINPID=`) is signalled with the rest, by the file.
        if let Some(pgid) = leader.filter(|&l| l > 1)
            // SAFETY: getpgid(2) with an integer.
            && unsafe { libc::getpgid(pgid) } == pgid
            && cgroup::signal_process_group(pgid, sig)
        {
            self.sweeps.entry(run).or_default().push((pgid, sig));
            return true;
        }
        if let Err(e) = tree.signal_group(unit, GroupKind::Unit, sig) {
            tracing::warn!(unit = %unit, "signalling the processes of its cgroup in {}: {e}", tree.dir.display());
        }
        true
    }

    /// Whether a sweep waits: the loop then turns again at once instead
    /// of waiting for an event (a main that ignores the stop signal and
    /// waits for a `setsid` child would otherwise leave the child
    /// unsignalled until some unrelated wake-up, or the stop timeout).
    pub(super) fn sweep_pending(&self) -> bool {
        !self.sweeps.is_empty()
    }

    /// The runs signalled by process group that wait for their sweep.
    pub(super) fn sweeps_due(&self) -> Vec<RunId> {
        self.sweeps.keys().copied().collect()
    }

    /// The second half of `signal`: unless it emptied (the reaper found it
    /// so, or its watch did) or holds another run now, the run's group is
    /// read and its members outside the signalled process group get the
    /// signal, once. Due at the next loop turn, and before anything new is
    /// spawned into the group (`group_for`): a stop-post command started
    /// when the main process is reaped is not a process the stop signal
    /// was meant for.
    pub(super) fn sweep(&mut self, run: RunId) {
        let Some(sends) = self.sweeps.remove(&run) else {
            return;
        };
        let (Some(unit), Some(tree)) = (self.runs.get(&run), self.containment.tree()) else {
            return;
        };
        if self.current.get(unit) != Some(&run)
            || !self.open.contains_key(&(unit.clone(), GroupKind::Unit))
        {
            return;
        }
        for (pgid, sig) in sends {
            match tree.signal_group_except(unit, GroupKind::Unit, sig, Some(pgid)) {
                Ok(_) => {}
                // Removed behind supd's back: nothing left to signal.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(unit = %unit, "signalling the processes that left its main's process group, in its cgroup in {}: {e}", tree.dir.display());
                }
            }
        }
    }

    /// After a clean shutdown (every unit stopped): stop watching the
    /// groups, then remove them and supd's subtree (`Tree::remove_all`).
    /// The watches go first, in one pass: a watch is freed by the kernel
    /// only after an SRCU grace period (10-100 ms here), which it waits
    /// for in a worker of its own for a removed watch, but in supd's exit
    /// for each one still there when the instance is released; removed
    /// before the rmdirs, the grace period runs while they do.
    pub(super) fn remove_all(&self) {
        let Some(tree) = self.containment.tree() else {
            return;
        };
        // Nothing is made or watched behind this (see `retire`).
        if let Some(p) = &self.prep {
            p.stop();
        }
        if let Some(Ok(w)) = &self.watcher {
            let wds: Vec<i32> = w
                .units
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .copied()
                .collect();
            w.inotify.remove_watches(&wds);
        }
        tree.remove_all();
    }

    /// During a shutdown, `unit` stopped and nothing will run in its group
    /// again (nothing starts while supd shuts down, and no stop command
    /// of it is left): its watch and its group are removed now, on the
    /// clean-up thread, while the others stop, instead of one after the
    /// other at exit. Forgotten here first: were the unit started again,
    /// its group would be made (and watched) afresh, as at its first start.
    pub(super) fn retire(&mut self, unit: &str) {
        let key = (unit.to_string(), GroupKind::Unit);
        if self.open.remove(&key).is_none() {
            return;
        }
        self.applied.remove(unit);
        self.oom_seen.remove(unit);
        self.killed.remove(unit);
        let was_watched = self.watched.remove(unit);
        let Some(tree) = self.containment.tree() else {
            return;
        };
        let Ok(name) = std::ffi::CString::new(cgroup::group_name(unit, GroupKind::Unit)) else {
            return;
        };
        let inotify = match &self.watcher {
            Some(Ok(w)) => Some(w),
            _ => None,
        };
        if self.retiring.is_none() {
            // Shutting down: the preparing thread (if still going, a
            // shutdown right after boot) adds no group or watch behind
            // the clean-up.
            if let Some(p) = &self.prep {
                p.stop();
            }
            let dir = match tree.dup_dir() {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!("no clean-up thread ({e}): the groups are removed at exit");
                    return;
                }
            };
            let instance = inotify.map(|w| w.inotify.clone());
            let (tx, rx) = std::sync::mpsc::channel::<(Option<i32>, std::ffi::CString)>();
            let thread = std::thread::Builder::new()
                .name("supd-cleanup".into())
                .spawn(move || {
                    while let Ok(first) = rx.recv() {
                        let mut batch = vec![first];
                        batch.extend(rx.try_iter());
                        // The watches of what arrived go first: the grace
                        // period that frees them (see `remove_all`) runs
                        // while the groups are removed.
                        if let Some(i) = &instance {
                            let wds: Vec<i32> = batch.iter().filter_map(|(wd, _)| *wd).collect();
                            i.remove_watches(&wds);
                        }
                        for (_, name) in &batch {
                            // EBUSY (a delegated unit's sub-groups) is left
                            // to `remove_all` at exit, which removes those.
                            let _ = cgroup::rmdir_at(&dir, name);
                        }
                    }
                });
            match thread {
                Ok(thread) => self.retiring = Some(Retiring { tx, thread }),
                Err(e) => {
                    tracing::debug!("no clean-up thread ({e}): the groups are removed at exit");
                    return;
                }
            }
        }
        let wd = inotify.filter(|_| was_watched).and_then(|w| {
            let index = self.watch_of.get_or_insert_with(|| {
                let map = w.units.lock().unwrap_or_else(|p| p.into_inner());
                map.iter().map(|(wd, u)| (u.clone(), *wd)).collect()
            });
            let wd = index.remove(unit)?;
            w.units
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&wd);
            Some(wd)
        });
        if let Some(r) = &self.retiring {
            let _ = r.tx.send((wd, name));
        }
    }

    /// The clean-up thread, if a shutdown started one (see `retire`).
    pub(super) fn take_retiring(&mut self) -> Option<Retiring> {
        self.retiring.take()
    }

    /// Write the unit's `[resources]` into its group before a spawn (only
    /// when they changed). Refused, with the reason, where they cannot be
    /// applied: without cgroups, or without the controller.
    pub(super) fn apply_resources(&mut self, spec: &crate::unit::UnitSpec) -> Result<(), String> {
        let (unit, r) = (spec.name.as_str(), &spec.resources);
        if r.delegate
            && let (Containment::Cgroup(_), Some(g)) = (
                &self.containment,
                self.open.get(&(unit.to_string(), GroupKind::Unit)),
            )
            && let Some((uid, gid)) = owner(spec)?
        {
            // Every start: the group may have been made afresh.
            cgroup::delegate_to(g, uid, gid)?;
        }
        let tree = match &self.containment {
            Containment::Cgroup(t) => t,
            Containment::ProcessGroups { why } => {
                if r.is_empty() {
                    return Ok(());
                }
                return Err(format!(
                    "[resources] need cgroup containment, which supd does not have here ({why})"
                ));
            }
        };
        if self.applied.get(unit) == Some(r) {
            return Ok(());
        }
        let Some(g) = self.open.get(&(unit.to_string(), GroupKind::Unit)) else {
            return if r.is_empty() {
                Ok(())
            } else {
                Err("[resources]: the unit's cgroup could not be made".to_string())
            };
        };
        if r.is_empty() && !self.applied.contains_key(unit) {
            // Nothing asked, nothing written before: the kernel's defaults.
            self.applied.insert(unit.to_string(), r.clone());
            return Ok(());
        }
        cgroup::apply(g, r, &tree.controllers)?;
        // The device program is attached through the directory, opened
        // for that (only units with device rules).
        let attach = |prog: &std::os::fd::OwnedFd| -> Result<(), String> {
            let dir = Group::open(g.clone())?;
            devices::attach(dir.raw_dir(), prog)
        };
        let was_restricted = self
            .applied
            .get(unit)
            .is_some_and(|a| a.restricts_devices());
        let refuse = |e: String| {
            format!(
                "[resources] device_policy/device_allow: {e}; supd will not run the unit without its device restriction"
            )
        };
        match devices::rules(r) {
            Some((rules, skipped)) => {
                for why in skipped {
                    tracing::warn!(unit = %unit, "device_allow: {why} (left out, as systemd does)");
                }
                let prog = devices::load(&devices::program(&rules)).map_err(refuse)?;
                attach(&prog).map_err(refuse)?;
            }
            None if was_restricted => {
                // The restriction was removed by a reload: a program that
                // allows everything replaces the old one.
                let all =
                    [devices::DevType::Char, devices::DevType::Block].map(|ty| devices::Rule {
                        ty,
                        major: None,
                        minor: None,
                        access: 7,
                    });
                let prog = devices::load(&devices::program(&all))?;
                attach(&prog)?;
            }
            None => {}
        }
        self.applied.insert(unit.to_string(), r.clone());
        Ok(())
    }

    /// New OOM kills in `unit`'s group since last asked.
    pub(super) fn new_oom_kills(&mut self, unit: &str) -> u64 {
        let memory = self
            .containment
            .tree()
            .is_some_and(|t| t.controllers.iter().any(|c| c == "memory"));
        if !memory {
            return 0;
        }
        let Some(g) = self.open.get(&(unit.to_string(), GroupKind::Unit)) else {
            return 0;
        };
        let Some(n) = cgroup::oom_kills(g) else {
            return 0;
        };
        let seen = self.oom_seen.insert(unit.to_string(), n).unwrap_or(0);
        n.saturating_sub(seen)
    }

    /// The unit of a contained run (while its group is not reported empty).
    pub(super) fn unit_of(&self, run: RunId) -> Option<&str> {
        self.runs.get(&run).map(String::as_str)
    }

    /// `run`'s main process was born in `unit`'s group.
    pub(super) fn bind(&mut self, run: RunId, unit: &str) {
        self.runs.insert(run, unit.to_string());
        self.current.insert(unit.to_string(), run);
    }

    /// From now on a change of `unit`'s group wakes the driver (see
    /// "watched lazily"), and the group is read once more after the
    /// watch is in place (a wake-up of our own), so an emptying before it
    /// is not lost. False when it cannot be watched (logged).
    pub(super) fn ensure_watched(&mut self, unit: &str) -> bool {
        if self.watched.contains(unit) {
            return true;
        }
        let Some(path) = self.open.get(&(unit.to_string(), GroupKind::Unit)).cloned() else {
            return false;
        };
        if let Err(e) = watch_group(&mut self.watcher, &self.tx, unit, &path) {
            if !path.exists() {
                // Gone: a group with processes in it cannot be removed, so
                // nothing is left of the run. Read once more (it reads as
                // empty) so the emptying is reported instead of waited for
                // (a shutdown once waited for it for ever, see
                // `cgroup::populated_at`).
                tracing::info!(unit = %unit, "its group {} is gone: nothing is left in it", path.display());
                let _ = self.tx.send(unit.to_string());
                return false;
            }
            tracing::error!(unit = %unit, "watching {}/cgroup.events: {e}; supd learns of the end of this run's other processes only when asked again (raise fs.inotify.max_user_watches or the open-file limit)", path.display());
            return false;
        }
        self.watched.insert(unit.to_string());
        let _ = self.tx.send(unit.to_string());
        true
    }

    /// Read `unit`'s group again soon (a wake-up of our own on the
    /// watches' channel): `emptied` then reports it if it is empty, or
    /// watches it if it is not.
    pub(super) fn recheck(&self, unit: &str) {
        let _ = self.tx.send(unit.to_string());
    }

    /// The run whose processes are in `unit`'s group now.
    pub(super) fn current_run(&self, unit: &str) -> Option<RunId> {
        self.current.get(unit).copied()
    }

    /// Whether `run`'s group has processes now; if it has, it is watched
    /// from now on (its emptying will be reported).
    pub(super) fn populated_watched(&mut self, run: RunId) -> bool {
        let Some(unit) = self.runs.get(&run).cloned() else {
            return false;
        };
        let Some(tree) = self.containment.tree() else {
            return false;
        };
        let left = tree.populated(&unit, GroupKind::Unit).unwrap_or(false);
        if left {
            self.ensure_watched(&unit);
        }
        left
    }

    pub(super) fn is_contained(&self, run: RunId) -> bool {
        self.runs.contains_key(&run)
    }

    /// Record `pid` as the main process on `run`'s group, for a supd that
    /// starts after this one (crash, kill, upgrade) to adopt it. `dir`:
    /// the group's directory, if the caller has it open.
    pub(super) fn record_main(
        &self,
        run: RunId,
        pid: i32,
        start: Option<u64>,
        dir: Option<std::os::fd::BorrowedFd>,
    ) {
        let Some(unit) = self.runs.get(&run) else {
            return;
        };
        let fd = dir.map(|d| std::os::fd::AsRawFd::as_raw_fd(&d));
        if let Some(g) = self.open.get(&(unit.clone(), GroupKind::Unit))
            && let Err(e) = cgroup::record_main(g, fd, pid, start)
        {
            tracing::debug!(unit = %unit, "recording main pid {pid} on its cgroup: {e}");
        }
    }

    /// The directory of a contained run's group.
    pub(super) fn dir_of(&self, run: RunId) -> Option<PathBuf> {
        let unit = self.runs.get(&run)?;
        self.open.get(&(unit.clone(), GroupKind::Unit)).cloned()
    }

    /// The run whose group `pid` is in (from `/proc/PID/cgroup`).
    pub(super) fn run_of_pid(&self, pid: i32) -> Option<RunId> {
        let Containment::Cgroup(tree) = &self.containment else {
            return None;
        };
        let unit = cgroup::unit_of_pid(pid, tree)?;
        self.current.get(&unit).copied()
    }

    /// The run living in the group a cgroup path names (the one recorded
    /// when an sd_notify datagram was received).
    pub(super) fn run_of_cgroup_path(&self, path: &str) -> Option<RunId> {
        let Containment::Cgroup(tree) = &self.containment else {
            return None;
        };
        let unit = cgroup::unit_of_cgroup_path(path, tree)?;
        self.current.get(&unit).copied()
    }

    /// A watch task says `unit`'s group emptied: the run to tell the
    /// engine about, if that is still true now.
    pub(super) fn emptied(&mut self, unit: &str) -> Option<RunId> {
        let run = *self.current.get(unit)?;
        let tree = self.containment.tree()?;
        // Wake-ups can be stale (a change seen twice, the group filled
        // again since, or every group after an inotify overflow): believe
        // only the file as it reads now.
        match tree.populated(unit, GroupKind::Unit) {
            Ok(false) => {}
            Ok(true) => {
                // Something is left: its end must wake us.
                self.ensure_watched(unit);
                return None;
            }
            Err(e) => {
                tracing::warn!(unit = %unit, "reading the cgroup.events of its group in {}: {e}", tree.dir.display());
                return None;
            }
        }
        self.current.remove(unit);
        self.runs.remove(&run);
        Some(run)
    }
}

/// Adoption: what a previous supd left in the subtree.
impl super::Driver {
    /// `Action::Signal` (and a pidless run's `SignalMain`) for a contained
    /// run: by its leader's process group first (`Groups::signal`). False
    /// when the run is not contained.
    pub(super) fn signal_contained(&mut self, run: RunId, sig: i32) -> bool {
        let leader = self.procs.leader_of(run);
        self.groups.signal(run, sig, leader)
    }

    /// At the top of each loop turn: the groups signalled by process group
    /// in the last one are swept (`Groups::sweep`), once the exits since
    /// are reaped — a group the reaper finds empty is not read again. Never
    /// later than that turn: a main process that waits for a `setsid`
    /// child must not make it wait for the stop timeout.
    pub(super) fn sweep_groups(&mut self) {
        let due = self.groups.sweeps_due();
        if due.is_empty() {
            return;
        }
        // Only when a child exited since the last drain: with nothing to
        // reap, `waitpid(-1)` would still walk every child of supd (a stop
        // of one unit among thousands).
        if child_exit_pending() {
            self.reap(None);
        }
        // Those the reap's events signalled wait for the next turn.
        for run in due {
            self.groups.sweep(run);
        }
    }

    /// Events for every populated group a previous supd left: units that
    /// still exist are offered to the engine for adoption; leftovers of
    /// removed units and stray probes are killed here (there is no unit
    /// to decide for). Each decision is logged and audited.
    pub(super) fn survivors(&mut self) -> Vec<crate::engine::Event> {
        let Containment::Cgroup(tree) = &self.groups.containment else {
            return Vec::new();
        };
        let found = tree.survivors();
        let base = tree.cgroup_path.trim_end_matches('/').to_string();
        let mut events = Vec::new();
        for s in found {
            let known = self
                .engine
                .unit_id(&s.unit)
                .is_some_and(|id| !self.engine.unit(id).removed);
            if known && s.kind == GroupKind::Unit {
                events.push(crate::engine::Event::Adopted {
                    cgroup: Some(format!("{base}/{}", cgroup::group_name(&s.unit, s.kind))),
                    unit: s.unit,
                    pid: s.main,
                    wall_ms: super::wall_ms(),
                });
                continue;
            }
            let what = if known {
                "a probe left running by a previous supd"
            } else {
                "processes of a unit that no longer exists, left by a previous supd"
            };
            tracing::warn!(unit = %s.unit, "killing {what} ({})", s.path.display());
            let outcome = match cgroup::kill(&s.path) {
                Ok(()) => "killed".to_string(),
                Err(e) => format!("kill failed: {e}"),
            };
            let _ = self.execute(crate::engine::Action::Audit(crate::engine::AuditEntry {
                wall_ms: super::wall_ms(),
                peer_uid: None,
                peer_pid: None,
                holder: None,
                unit: Some(s.unit.clone()),
                action: "stop-leftover".to_string(),
                reason: Some(what.to_string()),
                outcome,
            }));
        }
        events
    }

    /// Feed a reaper drain's events; `emptied`: the runs among them whose
    /// group is empty too. In a shutdown, thousands of exits come in one
    /// drain: they are fed in slices (each run's events together, as
    /// `empty_before_exit` put them), and the groups of each slice are
    /// handed to the clean-up thread before the next is fed, so that it
    /// removes them while the rest are handled, not after.
    pub(super) fn feed_exits(
        &mut self,
        exits: Vec<crate::engine::Event>,
        emptied: Vec<(RunId, String)>,
    ) {
        use crate::engine::Event;
        if emptied.is_empty() || exits.len() <= RETIRE_SLICE || !self.retiring_groups() {
            if !exits.is_empty() {
                self.feed_many(exits);
            }
            self.retire_groups(emptied);
            return;
        }
        let mut emptied: HashMap<RunId, String> = emptied.into_iter().collect();
        let mut rest = exits;
        while !rest.is_empty() {
            // Cut after a ProcessExited: a run's OomKilled and GroupEmpty
            // come just before it.
            let cut = rest
                .iter()
                .enumerate()
                .skip(RETIRE_SLICE - 1)
                .find(|(_, e)| matches!(e, Event::ProcessExited { .. }))
                .map_or(rest.len(), |(i, _)| i + 1);
            let tail = rest.split_off(cut);
            let done: Vec<(RunId, String)> = rest
                .iter()
                .filter_map(|e| match e {
                    Event::ProcessExited { run, .. } => emptied.remove(run).map(|u| (*run, u)),
                    _ => None,
                })
                .collect();
            self.feed_many(rest);
            self.retire_groups(done);
            rest = tail;
        }
        self.retire_groups(emptied.into_iter().collect());
    }

    /// Groups are removed as their units stop: in a shutdown (nothing
    /// starts again), except as a machine's init (the reboot does it).
    fn retiring_groups(&self) -> bool {
        self.settings.mode != crate::world::init::Mode::VmInit
            && self.engine.shutting_down().is_some()
    }

    /// These runs' groups emptied (and the engine was told): in a
    /// shutdown, where nothing starts again, a group with no command of
    /// its unit left to run in it goes now, on the clean-up thread, not
    /// at exit (a machine's init leaves them to the reboot).
    pub(super) fn retire_groups(&mut self, emptied: Vec<(RunId, String)>) {
        if emptied.is_empty() || !self.retiring_groups() {
            return;
        }
        for (run, unit) in emptied {
            // Its main process reaped too (a stop-post command runs when
            // it is), and no command of it running or due (a stop command
            // not reaped yet is followed by the next one).
            if !self.procs.has_main(run)
                && !self.procs.has_helpers(run)
                && !self.procs.stop_pending(run)
            {
                self.groups.retire(&unit);
            }
        }
    }

    /// `Action::Track`: the adopted `run` is the processes in `unit`'s
    /// group; `pid`, if known, its main process.
    pub(super) fn track(
        &mut self,
        run: RunId,
        unit: &str,
        pid: Option<i32>,
        contained: bool,
    ) -> Option<crate::engine::Event> {
        if contained {
            self.groups.group_for(unit, GroupKind::Unit)?;
            self.groups.bind(run, unit);
        }
        if let Some(pid) = pid {
            self.set_main_pid(run, pid);
        }
        // After `reexec`: its output pipe, kept open across the exec.
        if let Some(fd) = self.resumed_outputs.remove(unit) {
            // Shared with the capture task, as at a spawn.
            let fd = Arc::new(fd);
            self.procs.keep_output(run, fd.clone());
            let (max_size, max_files) = crate::unit::LogSpec::default().resolve(self.settings.log);
            crate::world::output::capture(
                self.logs.clone(),
                std::sync::Arc::from(unit),
                crate::world::logstore::Stream::Out,
                crate::world::logstore::Limits {
                    max_size,
                    max_files,
                },
                fd,
            );
        }
        // It may have emptied before the watch was there to see it.
        if !contained {
            return None;
        }
        self.groups
            .emptied(unit)
            .map(|run| crate::engine::Event::GroupEmpty { run })
    }
}

/// A SIGCHLD not yet read from the signalfd: SIGCHLD is blocked on every
/// thread for good, so it stays pending until the loop reads it. True
/// when the answer cannot be had (a drain is only a cost).
fn child_exit_pending() -> bool {
    // SAFETY: sigpending(2) fills a set we own; sigismember reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set) != 0 || libc::sigismember(&set, libc::SIGCHLD) == 1
    }
}

/// Exits fed to the engine at once in a shutdown before the groups of
/// their units are handed to the clean-up thread (`feed_exits`).
const RETIRE_SLICE: usize = 64;

/// Stop watching `unit`'s group before it is removed. An inotify watch
/// pins its file: removing the group does not end the watch (no
/// IN_IGNORED comes), so every group made afresh after a kill used
/// to leave one watch, and the kernel's inode and mark for it, until
/// supd exited — where releasing them made the exit wait an SRCU
/// grace period. Only after a kill: a walk over the watches is fine.
fn unwatch(watched: &mut HashSet<String>, watcher: &Option<Result<Watcher, String>>, unit: &str) {
    if !watched.remove(unit) {
        return;
    }
    let Some(Ok(w)) = watcher else {
        return;
    };
    let wd = {
        let mut map = w.units.lock().unwrap_or_else(|p| p.into_inner());
        let wd = map
            .iter()
            .find(|(_, u)| u.as_str() == unit)
            .map(|(wd, _)| *wd);
        if let Some(wd) = wd {
            map.remove(&wd);
        }
        wd
    };
    if let Some(wd) = wd {
        w.inotify.remove_watches(&[wd]);
    }
}

/// Wake on changes of the new group `g`'s `cgroup.events`: an inotify
/// watch in the shared instance, or where that cannot be had (no
/// instance, or `fs.inotify.max_user_watches` reached) the file held
/// open and polled by a task of its own.
fn watch_group(
    watcher: &mut Option<Result<Watcher, String>>,
    tx: &mpsc::UnboundedSender<String>,
    unit: &str,
    path: &std::path::Path,
) -> std::io::Result<()> {
    let w = watcher.get_or_insert_with(|| Watcher::start(tx.clone()));
    match w {
        Ok(w) => match w.inotify.add(path) {
            Ok(wd) => {
                w.units
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(wd, unit.to_string());
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(unit = %unit, "inotify watch on {}/cgroup.events: {e}; holding the file open instead", path.display());
            }
        },
        Err(e) => {
            tracing::debug!(unit = %unit, "no inotify instance ({e}); holding {}/cgroup.events open instead", path.display());
        }
    }
    let g = Group::open(path.to_path_buf()).map_err(std::io::Error::other)?;
    let w = EventsWatch::new(&g)?;
    watch(unit.to_string(), w, tx.clone());
    Ok(())
}

/// The shared inotify instance and which unit each of its watches is for.
struct Watcher {
    inotify: Arc<EventsInotify>,
    units: Arc<Mutex<HashMap<i32, String>>>,
}

impl Watcher {
    /// The instance, and one task asleep on it until a watched
    /// `cgroup.events` changes (no timer, no polling); it names each unit
    /// whose file changed once per read, whatever the number of changes.
    fn start(tx: mpsc::UnboundedSender<String>) -> Result<Watcher, String> {
        let inotify = Arc::new(EventsInotify::new().map_err(|e| format!("inotify_init1: {e}"))?);
        let units: Arc<Mutex<HashMap<i32, String>>> = Arc::default();
        let (i, u) = (inotify.clone(), units.clone());
        tokio::spawn(async move {
            loop {
                let news = match i.next().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(
                            "watching the units' cgroups failed: {e}; a unit's end is noticed only through its main process"
                        );
                        return;
                    }
                };
                let named: Vec<String> = {
                    let mut map = u.lock().unwrap_or_else(|p| p.into_inner());
                    let named = if news.overflow {
                        // Changes were lost: every group is read again
                        // (`emptied` believes only the file).
                        map.values().cloned().collect()
                    } else {
                        let mut seen = HashSet::new();
                        news.changed
                            .iter()
                            .filter(|wd| seen.insert(**wd))
                            .filter_map(|wd| map.get(wd).cloned())
                            .collect()
                    };
                    // The group was removed (made afresh after a kill).
                    for wd in &news.gone {
                        map.remove(wd);
                    }
                    named
                };
                for unit in named {
                    if tx.send(unit).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Watcher { inotify, units })
    }
}

/// A task per unit group, asleep in epoll until its `cgroup.events`
/// changes (no timer, no polling): the fallback of `Watcher`.
fn watch(unit: String, mut w: EventsWatch, tx: mpsc::UnboundedSender<String>) {
    let _ = w.read();
    tokio::spawn(async move {
        loop {
            match w.changed().await {
                Ok(false) => {
                    if tx.send(unit.clone()).is_err() {
                        return;
                    }
                }
                Ok(true) => {}
                // The group was removed (made afresh after a kill).
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENOENT)) => return,
                Err(e) => {
                    tracing::error!(unit = %unit, "watching its cgroup failed: {e}; its end is noticed only through its main process");
                    return;
                }
            }
        }
    });
}

/// Who a delegated group is handed to: the unit's user and group (None:
/// root, who owns it already).
fn owner(spec: &crate::unit::UnitSpec) -> Result<Option<(u32, u32)>, String> {
    let Some(user) = &spec.user else {
        return Ok(None);
    };
    let u = nix::unistd::User::from_name(user)
        .map_err(|e| format!("[resources] delegate: looking up user {user:?}: {e}"))?
        .ok_or_else(|| format!("[resources] delegate: no user {user:?} on this host"))?;
    let gid = match &spec.group {
        Some(g) => nix::unistd::Group::from_name(g)
            .map_err(|e| format!("[resources] delegate: looking up group {g:?}: {e}"))?
            .ok_or_else(|| format!("[resources] delegate: no group {g:?} on this host"))?
            .gid
            .as_raw(),
        None => u.gid.as_raw(),
    };
    Ok(Some((u.uid.as_raw(), gid)))
}
