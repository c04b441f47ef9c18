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
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::Driver;
use crate::engine::{Event, ExitStatus, ProbeKind, RunId};
use crate::unit::{MountReq, ProbeTarget, UnitSpec};
use crate::world::logstore::{Limits, Stream};
use crate::world::sigmask::SigHold;
use crate::world::{output, probe, spawn};

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
    /// Processes reaped that were not ours (for metrics).
    pub(super) orphans_reaped: u64,
}

impl ProcTable {
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
                Proc::Main(_) | Proc::StopCommand(_) => None,
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
                None => {
                    self.orphans_reaped += 1;
                    tracing::debug!("reaped orphan pid {pid}: {status}");
                }
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

    /// Hand a process's output pipe to a reader that feeds the unit's log.
    fn capture(&self, spec: &UnitSpec, stream: Stream, fd: std::os::fd::OwnedFd) {
        output::capture(
            self.logs.clone(),
            Arc::from(spec.name.as_str()),
            stream,
            Limits::of(spec, self.settings.log),
            fd,
        );
    }

    pub(super) fn spawn_main(&mut self, run: RunId, spec: &UnitSpec, mounts: &[MountReq]) -> Event {
        let notify = match spec.ready.kind {
            crate::unit::ReadyKind::Notify => self.notify_path.as_deref(),
            _ => None,
        };
        let env = spawn::SpawnEnv {
            notify_socket: notify,
            main_pid: None,
            expand: true,
            privileged: false,
        };
        let ready_fd = (spec.ready.kind == crate::unit::ReadyKind::Fd).then_some(spec.ready.fd);
        match spawn::spawn(spec, &spec.exec, mounts, &env, ready_fd) {
            Ok(s) => {
                self.procs.procs.insert(s.pid, Proc::Main(run));
                self.procs.run_pids.insert(run, s.pid);
                if let Some(fd) = s.ready {
                    output::watch_ready_line(fd, run, self.ready_tx.clone());
                }
                if let Some(fd) = s.output {
                    self.capture(spec, Stream::Out, fd);
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

    /// Run a unit's `[stop] exec`; if it cannot even start, fall back to
    /// the stop signal (the unit must still stop).
    pub(super) fn stop_exec(&mut self, run: RunId, spec: &UnitSpec) {
        let argv = spec.stop.exec.clone().unwrap_or_default();
        let env = spawn::SpawnEnv {
            notify_socket: None,
            main_pid: self.procs.main_pid(run),
            expand: true,
            privileged: false,
        };
        match spawn::spawn(spec, &argv, &[], &env, None) {
            Ok(s) => {
                self.procs.procs.insert(s.pid, Proc::StopCommand(run));
                if let Some(fd) = s.output {
                    self.capture(spec, Stream::Stop, fd);
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
                let env = spawn::SpawnEnv::plain();
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
                            self.capture(&spec, Stream::Probe, fd);
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
