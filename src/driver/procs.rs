//! The process table and the one reaper.
//!
//! Owns: every pid supd created (unit main processes, exec probes, stop
//! commands), the map from run to main pid, creating those processes
//! through `world::spawn`, and the only `waitpid(-1)` in supd.
//!
//! Must never: reap anywhere but `ProcTable::reap_into`; signal a pid that
//! has been reaped (a pid in the table is alive or a zombie, so it cannot
//! have been recycled — entries leave only when reaped); decide anything
//! about a unit (exits become `Event`s for the engine).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::Driver;
use crate::engine::{Event, ExitStatus, ProbeKind, RunId};
use crate::unit::{MountReq, ProbeTarget, UnitSpec};
use crate::world::cgroup::GroupKind;
use crate::world::sigmask::SigHold;
use crate::world::{mainpid, output, probe, spawn};

/// What a pid in our table is.
#[derive(Debug, Clone, Copy)]
enum Proc {
    /// A unit's main process (its process-group leader).
    Main(RunId),
    /// An exec probe for a run, with its deadline.
    Probe(RunId, ProbeKind, Instant),
    /// A `[stop] exec` command; its exit is only logged.
    StopCommand(RunId),
    /// Was the run's main process until the main pid moved on (a forking
    /// daemon's starting process, `MAINPID=`); its exit is only logged.
    Former(RunId),
}

/// How long a timed-out probe's deadline is pushed out while we wait to
/// reap it (it was SIGKILLed; this only keeps the loop from spinning).
const REAP_GRACE: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub(super) struct ProcTable {
    /// pid -> what it is. Entries leave only when reaped.
    procs: HashMap<i32, Proc>,
    /// run -> main pid, for signalling.
    run_pids: HashMap<RunId, i32>,
    /// Exec probes in flight -> probe pid.
    probe_pids: HashMap<(RunId, ProbeKind), i32>,
    /// Runs born in a cgroup: their end is the engine's to decide (by
    /// `GroupEmpty`), not a process-group SIGKILL at the main's exit.
    contained: std::collections::HashSet<RunId>,
    /// Main processes that are not our children (so the reaper may never
    /// see them), watched by pidfd: pid -> run.
    foreign: HashMap<i32, RunId>,
    /// A copy of each run's output pipe (read end), so `reexec` can hand
    /// it to the new image: a pipe nobody reads kills its writer.
    outputs: HashMap<RunId, std::os::fd::OwnedFd>,
}

impl ProcTable {
    /// Every run's output pipe copy, by raw descriptor.
    pub(super) fn outputs(&self) -> Vec<(RunId, i32)> {
        use std::os::fd::AsRawFd;
        self.outputs
            .iter()
            .map(|(r, fd)| (*r, fd.as_raw_fd()))
            .collect()
    }

    pub(super) fn keep_output(&mut self, run: RunId, fd: std::os::fd::OwnedFd) {
        self.outputs.insert(run, fd);
    }

    pub(super) fn main_pid(&self, run: RunId) -> Option<i32> {
        self.run_pids.get(&run).copied()
    }

    /// Signal a run's process group, if its main process is unreaped.
    pub(super) fn signal_run(&self, run: RunId, sig: Signal) -> bool {
        let Some(&pid) = self.run_pids.get(&run) else {
            return false;
        };
        let _ = killpg(Pid::from_raw(pid), sig);
        if sig == Signal::SIGKILL || sig == Signal::SIGTERM {
            // A stopped process never sees SIGTERM otherwise.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGCONT);
        }
        true
    }

    /// Signal only a run's main process, if it is unreaped.
    pub(super) fn signal_main(&self, run: RunId, sig: Signal) -> bool {
        let Some(&pid) = self.run_pids.get(&run) else {
            return false;
        };
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
        if sig == Signal::SIGKILL || sig == Signal::SIGTERM {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
        true
    }

    pub(super) fn signal_all_units(&self, sig: Signal) {
        for &pid in self.run_pids.values() {
            let _ = killpg(Pid::from_raw(pid), sig);
        }
    }

    pub(super) fn cancel_probes(&mut self, run: RunId) {
        for kind in [ProbeKind::Liveness, ProbeKind::Readiness] {
            if let Some(pid) = self.probe_pids.remove(&(run, kind)) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    /// The run whose process group `pid` belongs to (for sd_notify).
    pub(super) fn run_of_member(&self, pid: i32) -> Option<RunId> {
        self.run_pids
            .iter()
            .find(|(_, leader)| crate::world::notify::belongs_to(pid, **leader))
            .map(|(run, _)| *run)
    }

    /// The earliest exec-probe deadline.
    pub(super) fn next_probe_deadline(&self) -> Option<Instant> {
        self.procs
            .values()
            .filter_map(|p| match p {
                Proc::Probe(_, _, deadline) => Some(*deadline),
                Proc::Main(_) | Proc::StopCommand(_) | Proc::Former(_) => None,
            })
            .min()
    }

    /// Kill exec probes past their deadline; each one still current is
    /// answered as failed.
    pub(super) fn expire_probes(&mut self, now: Instant) -> Vec<Event> {
        let late: Vec<(i32, RunId, ProbeKind)> = self
            .procs
            .iter()
            .filter_map(|(pid, p)| match p {
                Proc::Probe(run, kind, deadline) if *deadline <= now => Some((*pid, *run, *kind)),
                _ => None,
            })
            .collect();
        let mut answers = Vec::new();
        for (pid, run, kind) in late {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            // Keep it in the table until reaped, but push its deadline out
            // so we do not spin; answer now.
            let later = now.checked_add(REAP_GRACE).unwrap_or(now);
            self.procs.insert(pid, Proc::Probe(run, kind, later));
            if self.probe_pids.get(&(run, kind)) == Some(&pid) {
                self.probe_pids.remove(&(run, kind));
                answers.push(Event::ProbeAnswered {
                    run,
                    kind,
                    ok: false,
                    output: Some("exec probe timed out".into()),
                });
            }
        }
        answers
    }

    /// The reaper: the only `waitpid(-1)` in supd. Signals coalesce, so
    /// drain until nothing is left — never a bounded number per wake-up.
    pub(super) fn reap_into(&mut self, exits: &mut Vec<Event>) {
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
                    self.outputs.remove(&run);
                    if !self.contained.remove(&run) {
                        // The main process is gone; whatever is left in
                        // its group is an orphan of a dead service. The
                        // group id cannot be reused while members remain.
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    }
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
                Some(Proc::Former(run)) => {
                    tracing::debug!("former main process {pid} of {run:?} {status}");
                }
                None => tracing::debug!("reaped orphan pid {pid}: {status}"),
            }
        }
    }
}

fn spawn_error_text(e: spawn::SpawnError) -> String {
    match e {
        spawn::SpawnError::Failed(m) => m,
        spawn::SpawnError::Mount(p) => p.to_string(),
    }
}

/// Main processes supd did not create (forking daemons, `MAINPID=`).
impl Driver {
    /// From now on `pid` is `run`'s main process: its exit ends the run's
    /// main, signals for "the main process" go to it. The caller checked
    /// that it is a live process of the unit.
    pub(super) fn set_main_pid(&mut self, run: RunId, pid: i32) {
        let t = &mut self.procs;
        if let Some(old) = t.run_pids.insert(run, pid)
            && old != pid
        {
            if matches!(t.procs.get(&old), Some(Proc::Main(r)) if *r == run) {
                t.procs.insert(old, Proc::Former(run));
            }
            t.foreign.remove(&old);
        }
        t.procs.insert(pid, Proc::Main(run));
        if self.groups.is_contained(run) {
            t.contained.insert(run);
            self.groups.record_main(run, pid, None);
        }
        if !mainpid::is_our_child(pid) {
            // Its parent may reap it before it is ever ours: learn of its
            // exit through a pidfd.
            match mainpid::ExitWatch::new(pid) {
                Ok(w) => {
                    t.foreign.insert(pid, run);
                    let tx = self.foreign_tx.clone();
                    tokio::spawn(async move {
                        let _ = w.exited().await;
                        let _ = tx.send(pid);
                    });
                }
                Err(e) => tracing::warn!(
                    "cannot watch main pid {pid} ({e}); its exit is seen only if it becomes supd's child"
                ),
            }
        }
    }

    /// A main process that was not our child exited.
    pub(super) fn foreign_exited(&mut self, pid: i32) {
        let Some(run) = self.procs.foreign.remove(&pid) else {
            return;
        };
        if mainpid::is_our_child(pid) {
            // Reparented to us: the reaper reports it, with its status.
            return;
        }
        if !matches!(self.procs.procs.get(&pid), Some(Proc::Main(r)) if *r == run) {
            return;
        }
        self.procs.procs.remove(&pid);
        self.procs.run_pids.remove(&run);
        self.procs.contained.remove(&run);
        self.procs.outputs.remove(&run);
        self.feed(Event::ProcessExited {
            run,
            status: ExitStatus::Unknown,
        });
    }

    /// `type = "forking"`: its starting process exited 0; name the daemon.
    pub(super) fn find_main_pid(&mut self, run: RunId, pid_file: Option<PathBuf>) -> Event {
        let group = self.groups.dir_of(run);
        let pid = match (&pid_file, &group) {
            (Some(f), _) => mainpid::read_pid_file(f),
            (None, Some(dir)) => match crate::world::cgroup::pids(dir) {
                Ok(v) if v.len() == 1 => Ok(v[0]),
                Ok(v) => Err(format!(
                    "{} processes in its cgroup, so which is the daemon is not clear; set pid_file",
                    v.len()
                )),
                Err(e) => Err(format!("reading {}/cgroup.procs: {e}", dir.display())),
            },
            (None, None) => Err(
                "without cgroup containment a forking daemon is found only through its pid_file; set pid_file"
                    .to_string(),
            ),
        };
        let result = pid.and_then(|p| mainpid::check(p, group.as_deref()).map(|()| p));
        if let Ok(p) = result {
            self.set_main_pid(run, p);
        }
        Event::MainPid { run, result }
    }
}

/// Creating processes: these need the driver's channels (output capture,
/// readiness lines, probe answers), so they live on `Driver`, but every pid
/// goes into the table before the loop can reap again.
impl Driver {
    /// Reap everything that exited and feed the exits as one batch.
    pub(super) fn reap(&mut self) {
        // Exits during the drain are collected by it; their SIGCHLDs would
        // only interrupt it. One stays pending and wakes us once more.
        let held = SigHold::chld();
        let mut exits = Vec::new();
        self.procs.reap_into(&mut exits);
        drop(held);
        // A main process SIGKILLed in a group with new OOM kills: the
        // kernel's OOM killer did it (its own cause, not "killed").
        let mut i = 0;
        while i < exits.len() {
            if let Event::ProcessExited {
                run,
                status: ExitStatus::Signaled { signal, .. },
            } = exits[i]
                && signal == libc::SIGKILL
                && let Some(unit) = self.groups.unit_of(run).map(str::to_string)
            {
                let n = self.groups.new_oom_kills(&unit);
                if n > 0 {
                    exits.insert(i, Event::OomKilled { run, count: n });
                    i += 1;
                }
            }
            i += 1;
        }
        if !exits.is_empty() {
            self.feed_many(exits);
        }
    }

    pub(super) fn expire_probes(&mut self) {
        let answers = self.procs.expire_probes(Instant::now());
        if !answers.is_empty() {
            self.feed_many(answers);
        }
    }

    pub(super) fn spawn_main(&mut self, run: RunId, spec: &UnitSpec, mounts: &[MountReq]) -> Event {
        let notify = match spec.ready.kind {
            crate::unit::ReadyKind::Notify => self.notify_path.as_deref(),
            _ => None,
        };
        let group = self.groups.group_for(&spec.name, GroupKind::Unit);
        if let Err(error) = self.groups.apply_resources(&spec.name, &spec.resources) {
            return Event::SpawnFailed {
                run,
                error,
                mount: None,
            };
        }
        let env = spawn::SpawnEnv {
            notify_socket: notify,
            main_pid: None,
            cgroup: group.as_ref().map(|g| g.0),
        };
        let ready_fd = (spec.ready.kind == crate::unit::ReadyKind::Fd).then_some(spec.ready.fd);
        match spawn::spawn(spec, &spec.exec, mounts, &env, ready_fd) {
            Ok(s) => {
                self.procs.procs.insert(s.pid, Proc::Main(run));
                self.procs.run_pids.insert(run, s.pid);
                if group.is_some() {
                    self.procs.contained.insert(run);
                    self.groups.bind(run, &spec.name);
                    self.groups.record_main(run, s.pid, s.start_ticks);
                }
                if let Some(fd) = s.ready {
                    output::watch_ready_line(fd, run, self.ready_tx.clone());
                }
                if let Some(fd) = s.output {
                    if let Ok(copy) = fd.try_clone() {
                        self.procs.outputs.insert(run, copy);
                    }
                    output::capture(spec.name.clone(), fd);
                }
                Event::Spawned {
                    run,
                    pid: s.pid,
                    cgroup: group.map(|g| g.1),
                }
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

    /// Run a unit's `[stop] exec`; if it cannot even start, fall back to
    /// the stop signal (the unit must still stop).
    pub(super) fn stop_exec(&mut self, run: RunId, spec: &UnitSpec) {
        let argv = spec.stop.exec.clone().unwrap_or_default();
        // The stop command belongs to the unit: it runs in its group, and
        // the unit is down only once it too has finished.
        let group = self
            .groups
            .is_contained(run)
            .then(|| self.groups.group_for(&spec.name, GroupKind::Unit))
            .flatten();
        let env = spawn::SpawnEnv {
            notify_socket: None,
            main_pid: self.procs.main_pid(run),
            cgroup: group.map(|g| g.0),
        };
        match spawn::spawn(spec, &argv, &[], &env, None) {
            Ok(s) => {
                self.procs.procs.insert(s.pid, Proc::StopCommand(run));
                if let Some(fd) = s.output {
                    output::capture(format!("{}:stop", spec.name), fd);
                }
            }
            Err(e) => {
                let msg = spawn_error_text(e);
                tracing::warn!(unit = %spec.name, "stop command failed ({msg}); sending {}", crate::engine::signal_name(spec.stop.signal));
                if let Ok(sig) = Signal::try_from(spec.stop.signal)
                    && let Some(pid) = self.procs.main_pid(run)
                {
                    let _ = killpg(Pid::from_raw(pid), sig);
                }
            }
        }
    }

    pub(super) fn start_probe(
        &mut self,
        run: RunId,
        kind: ProbeKind,
        spec: Arc<UnitSpec>,
        target: ProbeTarget,
        timeout: Duration,
    ) -> Option<Event> {
        match &target {
            ProbeTarget::Exec(argv) => {
                // Accounted apart from the unit: a probe never keeps it
                // alive, nor is it killed with it.
                let group = self.groups.group_for(&spec.name, GroupKind::Probe);
                let env = spawn::SpawnEnv {
                    notify_socket: None,
                    main_pid: None,
                    cgroup: group.map(|g| g.0),
                };
                match spawn::spawn(&spec, argv, &[], &env, None) {
                    Ok(s) => {
                        let now = Instant::now();
                        // Saturating: a timeout past the end of time is
                        // "never" (unit files bound it at load anyway).
                        let deadline = crate::engine::timers::after(now, timeout);
                        self.procs
                            .procs
                            .insert(s.pid, Proc::Probe(run, kind, deadline));
                        self.procs.probe_pids.insert((run, kind), s.pid);
                        if let Some(fd) = s.output {
                            output::capture(format!("{}:probe", spec.name), fd);
                        }
                        None
                    }
                    Err(e) => Some(Event::ProbeAnswered {
                        run,
                        kind,
                        ok: false,
                        output: Some(spawn_error_text(e)),
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
}
