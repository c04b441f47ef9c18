//! The process table and the one reaper.
//!
//! Owns: every pid supd created (unit main processes, exec probes, stop
//! commands, and the helper commands of a run: `exec_start_pre`, a
//! forking unit's start command, `exec_start_post`, `exec_stop_post`,
//! `reload_exec`), the map from run to main pid, creating those processes
//! through `world::spawn`, and the only `waitpid(-1)` in supd.
//!
//! A run's commands are a fixed script, carried out here step by step as
//! each one is reaped: conditions, then the start commands in order, then
//! the main process (for `type = "forking"`: the start command, then the
//! pid read from `pid_file`), then the post commands; after the main
//! process exits, the stop-post commands, and only then its exit is told
//! to the engine (so a restart never overlaps them). Until the main
//! process exists, the run's current helper stands in for it: the
//! engine's signals reach it.
//!
//! Must never: reap anywhere but `ProcTable::reap_into`; signal a pid that
//! has been reaped (a pid in the table is alive or a zombie, so it cannot
//! have been recycled — entries leave only when reaped); decide anything
//! about a unit (exits become `Event`s for the engine).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::Driver;
use crate::engine::{Event, ExitStatus, ProbeKind, RunId};
use crate::unit::{MountReq, ProbeTarget, UnitSpec};
use crate::world::cgroup::GroupKind;
use crate::world::logstore::{Limits, Stream};
use crate::world::{mainpid, output, probe, spawn};

/// Which helper command of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// `exec_condition[i]`: exit 1..=254 skips the unit.
    Cond(usize),
    /// `exec_start_pre[i]`.
    Pre(usize),
    /// `type = "forking"`: `exec`, which daemonizes.
    Starter,
    /// `exec_start_post[i]`.
    Post(usize),
    /// `exec_stop_post[i]`.
    StopPost(usize),
    /// `reload_exec[i]`.
    Reload(usize),
    /// Stop command `i` of a completed unit (`[stop] exec`, then its
    /// list): the run's only process while the unit is stopped.
    Stop(usize),
}

impl Step {
    fn label(self) -> &'static str {
        match self {
            Step::Cond(_) => "condition",
            Step::Pre(_) => "pre",
            Step::Starter => "start",
            Step::Post(_) => "post",
            Step::StopPost(_) => "stop-post",
            Step::Reload(_) => "reload",
            Step::Stop(_) => "stop",
        }
    }
}

/// What a pid in our table is.
#[derive(Debug, Clone, Copy)]
enum Proc {
    /// A unit's main process (its process-group leader).
    Main(RunId),
    /// An exec probe for a run, with its deadline.
    Probe(RunId, ProbeKind, Instant),
    /// Stop command `i` of a running unit; its exit is logged and starts
    /// the next one (after an exit 0).
    StopCommand(RunId, usize),
    /// A helper command of a run, killed at its deadline.
    Helper(RunId, Step, Option<Instant>),
    /// A run's former main process (it named another with `MAINPID=`):
    /// its exit is only logged.
    Former(RunId),
}

/// What the driver must do after a drain, beyond feeding events.
pub(super) enum Next {
    /// A helper exited: take the run's next step.
    Helper(RunId, Step, ExitStatus),
    /// A main process exited and its unit has stop-post commands.
    StopPost(RunId, ExitStatus),
    /// Stop command `i` of a running unit is due (the one before it
    /// exited 0).
    ChainStop(RunId, Arc<UnitSpec>, usize),
    /// A contained run's main process exited and the run has nothing left
    /// to do: if its group is empty already, the engine hears that first.
    MainEnded(RunId),
    /// A running unit's stop commands are over (the last one was reaped,
    /// or one failed): the emptying of its group, held while they ran,
    /// is looked at again.
    StopEnded(RunId),
}

/// The unit a run was started from, while the run has anything left to do.
struct RunCtx {
    spec: Arc<UnitSpec>,
    mounts: Vec<MountReq>,
    /// The main process's exit, held while `exec_stop_post` runs.
    exited: Option<ExitStatus>,
    /// `type = "forking"`: read `pid_file` (or guess from the cgroup)
    /// until this deadline.
    pid_wait: Option<Instant>,
    /// `type = "forking"` without `pid_file`: the cgroup's answer at the
    /// last look (taken only when two looks agree: a double fork may be
    /// under way at the first).
    guessed: Option<mainpid::Guess>,
    /// The main process exited while other processes of the contained
    /// run were left: `exec_stop_post` waits for the group to empty (as
    /// systemd runs ExecStopPost after the control group is gone).
    post_on_empty: bool,
    /// The group emptied and its `GroupEmpty` is held until the stop-post
    /// commands finish (the unit is not down before they ran).
    empty_held: bool,
}

/// How many recently reaped unknown pids are remembered (a forking
/// daemon can die before its pid file is read).
const ORPHAN_MEMORY: usize = 64;

/// How often a pid file is looked at while waiting for it.
const PID_POLL: Duration = Duration::from_millis(50);

/// How long a forking unit's pid file is waited for after its start
/// command exited 0, when the unit has no start timeout.
const PID_FILE_WAIT: Duration = Duration::from_secs(90);

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
    /// Forking runs whose main process could not be named (see
    /// `guess_main`): tracked by their cgroup alone; the engine learns
    /// their end when the group empties.
    pidless: std::collections::HashSet<RunId>,
    /// Runs born in a cgroup: their end is the engine's to decide (by
    /// `GroupEmpty`), not a process-group SIGKILL at the main's exit.
    contained: std::collections::HashSet<RunId>,
    /// Main processes that are not our children (so the reaper may never
    /// see them), watched by pidfd: pid -> run.
    foreign: HashMap<i32, RunId>,
    /// A copy of each run's output pipe (read end), so `reexec` can hand
    /// it to the new image: a pipe nobody reads kills its writer.
    outputs: HashMap<RunId, Arc<std::os::fd::OwnedFd>>,
    /// Processes reaped that were not ours (for metrics).
    pub(super) orphans_reaped: u64,
    /// Runs whose script is not finished (every run with a process).
    runs: HashMap<RunId, RunCtx>,
    /// The helper standing in for a run's main process (pre, start and
    /// stop-post commands): what the engine's signals reach.
    helper_pids: HashMap<RunId, i32>,
    /// Unknown pids reaped lately, with their status.
    orphans: VecDeque<(i32, ExitStatus)>,
    /// The deadlines in `procs` (exec probes, helpers with a timeout), in
    /// order: the next one and the late ones without a scan of every
    /// process (with thousands of units, one per event would cost more
    /// than the event). Kept equal to `procs` by `put` and `take`.
    deadlines: std::collections::BTreeSet<(Instant, i32)>,
    /// Each run's helper pids (its pre, post, stop-post, reload commands).
    helpers: HashMap<RunId, Vec<i32>>,
    /// Runs that may be waiting for a pid file (a superset: runs whose
    /// wait ended leave at the next poll).
    pid_waiting: std::collections::BTreeSet<RunId>,
    /// When the pid files (and forking cgroups) are looked at next: an
    /// absolute time, so that other wake-ups (a client polling `status`)
    /// never push the look out forever.
    pid_poll_at: Option<Instant>,
    /// Running units whose stop commands are under way, for the next one.
    stop_chains: HashMap<RunId, Arc<UnitSpec>>,
}

impl ProcTable {
    /// Record what `pid` is (replacing what it was), with its indexes.
    fn put(&mut self, pid: i32, p: Proc) {
        self.take(pid);
        match p {
            Proc::Probe(_, _, d) | Proc::Helper(_, _, Some(d)) => {
                self.deadlines.insert((d, pid));
            }
            _ => {}
        }
        if let Proc::Helper(run, _, _) = p {
            self.helpers.entry(run).or_default().push(pid);
        }
        self.procs.insert(pid, p);
    }

    /// Forget `pid` (reaped, or no longer ours), with its indexes.
    fn take(&mut self, pid: i32) -> Option<Proc> {
        let p = self.procs.remove(&pid)?;
        match p {
            Proc::Probe(_, _, d) | Proc::Helper(_, _, Some(d)) => {
                self.deadlines.remove(&(d, pid));
            }
            _ => {}
        }
        if let Proc::Helper(run, _, _) = p
            && let Some(v) = self.helpers.get_mut(&run)
        {
            v.retain(|&h| h != pid);
            if v.is_empty() {
                self.helpers.remove(&run);
            }
        }
        Some(p)
    }

    /// Processes whose deadline is at or before `now`, earliest first.
    fn late(&self, now: Instant) -> Vec<(i32, Proc)> {
        self.deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .filter_map(|&(_, pid)| Some((pid, *self.procs.get(&pid)?)))
            .collect()
    }

    /// A run has nothing left to do: drop it, and for `remove_ipc` remove
    /// its user's IPC objects once no other run of that user is left.
    fn forget(&mut self, run: RunId) -> Option<RunCtx> {
        let ctx = self.runs.remove(&run)?;
        let sb = &ctx.spec.sandbox;
        if sb.remove_ipc
            && ctx.spec.user.is_some()
            && !self.runs.values().any(|c| c.spec.user == ctx.spec.user)
            && let Some(uid) = unit_uid(&ctx.spec)
        {
            let gid = ctx
                .spec
                .group
                .as_deref()
                .and_then(|g| nix::unistd::Group::from_name(g).ok().flatten())
                .map(|g| g.gid.as_raw());
            crate::world::ipc::remove_in_background(ctx.spec.name.clone(), uid, gid);
        }
        Some(ctx)
    }

    /// Every run's output pipe copy, by raw descriptor.
    pub(super) fn outputs(&self) -> Vec<(RunId, i32)> {
        use std::os::fd::AsRawFd;
        self.outputs
            .iter()
            .map(|(r, fd)| (*r, fd.as_raw_fd()))
            .collect()
    }

    pub(super) fn keep_output(&mut self, run: RunId, fd: Arc<std::os::fd::OwnedFd>) {
        self.outputs.insert(run, fd);
    }

    pub(super) fn main_pid(&self, run: RunId) -> Option<i32> {
        self.run_pids.get(&run).copied()
    }

    /// The process whose process group a contained run's signal goes to
    /// first (`Groups::signal`): its main process, else the helper
    /// standing in for it; None for a main that is not supd's child (its
    /// parent may reap it, and its pid be reused, behind our back).
    pub(super) fn leader_of(&self, run: RunId) -> Option<i32> {
        match self.run_pids.get(&run) {
            Some(p) if self.foreign.contains_key(p) => None,
            Some(p) => Some(*p),
            None => self.helper_pids.get(&run).copied(),
        }
    }

    /// Signal a run's process group (its main process's, else its
    /// current helper's), if that process is unreaped.
    pub(super) fn signal_run(&self, run: RunId, sig: Signal) -> bool {
        let Some(&pid) = self.run_pids.get(&run).or(self.helper_pids.get(&run)) else {
            return false;
        };
        // A stopped process never sees SIGTERM otherwise.
        let cont = sig == Signal::SIGKILL || sig == Signal::SIGTERM;
        signal_group_then(pid, sig, cont.then_some(Signal::SIGCONT));
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
            signal_group(pid, sig);
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
        // The sender itself, else the leader of its process group: two
        // lookups, one getpgid — never one per unit.
        let main_of = |leader: i32| match self.procs.get(&leader) {
            Some(Proc::Main(run)) if self.run_pids.get(run) == Some(&leader) => Some(*run),
            _ => None,
        };
        main_of(pid).or_else(|| {
            let pg = nix::unistd::getpgid(Some(Pid::from_raw(pid))).ok()?;
            main_of(pg.as_raw())
        })
    }

    /// A sender that is already gone (`systemd-notify --no-block` from a
    /// service's script exits at once) cannot be placed in a process
    /// group any more. Its message is taken for the one notify unit with a
    /// process that runs as the sender's uid (the credentials recorded by
    /// the kernel at send time); with several such units it is ignored —
    /// which one spoke is unknowable without the sender's cgroup.
    pub(super) fn run_of_departed_sender(&self, pid: i32, uid: u32) -> Option<RunId> {
        let gone = matches!(
            nix::sys::signal::kill(Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if !gone {
            return None;
        }
        let mut candidates = self.runs.iter().filter(|(run, c)| {
            c.spec.ready.kind == crate::unit::ReadyKind::Notify
                && self.run_pids.contains_key(run)
                && unit_uid(&c.spec) == Some(uid)
        });
        let first = candidates.next().map(|(r, _)| *r);
        if candidates.next().is_some() {
            tracing::warn!(
                "sd_notify message from pid {pid} (already exited, uid {uid}): several units could have sent it; ignored (let systemd-notify wait, i.e. drop --no-block)"
            );
            return None;
        }
        first
    }

    /// The earliest exec-probe or helper deadline, or the next look at a
    /// pid file.
    pub(super) fn next_probe_deadline(&self) -> Option<Instant> {
        let procs = self.deadlines.first().map(|(d, _)| *d);
        let polls =
            (!self.pid_waiting.is_empty()).then(|| self.pid_poll_at.unwrap_or_else(Instant::now));
        procs.into_iter().chain(polls).min()
    }

    /// Kill helpers past their deadline (their exit then fails the step).
    pub(super) fn expire_helpers(&mut self, now: Instant) {
        let late: Vec<(i32, RunId, Step)> = self
            .late(now)
            .into_iter()
            .filter_map(|(pid, p)| match p {
                Proc::Helper(run, step, Some(_)) => Some((pid, run, step)),
                _ => None,
            })
            .collect();
        for (pid, run, step) in late {
            tracing::warn!(
                "{run:?}: {} command (pid {pid}) timed out; killing it",
                step.label()
            );
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            self.put(pid, Proc::Helper(run, step, None));
        }
    }

    /// Is `run`'s main process not reaped yet?
    pub(super) fn has_main(&self, run: RunId) -> bool {
        self.run_pids.contains_key(&run)
    }

    /// Does a helper command (stop, stop-post...) of `run` still run?
    pub(super) fn has_helpers(&self, run: RunId) -> bool {
        self.helpers.get(&run).is_some_and(|h| !h.is_empty())
    }

    /// Is a stop command of the running `run` not reaped yet (alive, or
    /// exited with its successor still to start)? Its group is not over
    /// while it is: the next command runs in it, and the unit is down only
    /// once the last one has finished.
    pub(super) fn stop_pending(&self, run: RunId) -> bool {
        self.stop_chains.contains_key(&run)
    }

    fn helpers_of(&self, run: RunId) -> Vec<i32> {
        self.helpers.get(&run).cloned().unwrap_or_default()
    }

    /// Kill exec probes past their deadline; each one still current is
    /// answered as failed.
    pub(super) fn expire_probes(&mut self, now: Instant) -> Vec<Event> {
        let late: Vec<(i32, RunId, ProbeKind)> = self
            .late(now)
            .into_iter()
            .filter_map(|(pid, p)| match p {
                Proc::Probe(run, kind, _) => Some((pid, run, kind)),
                _ => None,
            })
            .collect();
        let mut answers = Vec::new();
        for (pid, run, kind) in late {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            // Keep it in the table until reaped, but push its deadline out
            // so we do not spin; answer now.
            let later = now.checked_add(REAP_GRACE).unwrap_or(now);
            self.put(pid, Proc::Probe(run, kind, later));
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
    /// Helper exits come back as `Next` steps for the driver.
    /// With `only`, just that pid (one `waitpid` by pid: the kernel finds it
    /// at once, where `waitpid(-1)` walks every child of supd).
    pub(super) fn reap_into(
        &mut self,
        only: Option<i32>,
        exits: &mut Vec<Event>,
        next: &mut Vec<Next>,
    ) {
        let target = Pid::from_raw(only.unwrap_or(-1));
        loop {
            let ws = match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
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
            match self.take(pid) {
                Some(Proc::Main(run)) => {
                    self.run_pids.remove(&run);
                    self.outputs.remove(&run);
                    let contained = self.contained.remove(&run);
                    if !contained {
                        // The main process is gone; whatever is left in
                        // its group is an orphan of a dead service. The
                        // group id cannot be reused while members remain.
                        // killpg, not `signal_group`: the leader is reaped,
                        // so its pid answers getpgid only if it was reused
                        // meanwhile — by a stranger `signal_group` would
                        // then SIGKILL.
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                    // So are its post and reload commands.
                    for h in self.helpers_of(run) {
                        let _ = killpg(Pid::from_raw(h), Signal::SIGKILL);
                    }
                    // A unit that remains after a successful exit runs its
                    // stop-post commands when it is stopped, as systemd
                    // does with RemainAfterExit=yes.
                    let stop_post = self.runs.get(&run).is_some_and(|c| {
                        let deferred = c.spec.remain_after_exit && c.spec.exit_ok(status.view());
                        !c.spec.exec_stop_post.is_empty() && !deferred
                    });
                    if stop_post {
                        next.push(Next::StopPost(run, status));
                    } else {
                        self.forget(run);
                        if contained {
                            next.push(Next::MainEnded(run));
                        }
                        exits.push(Event::ProcessExited { run, status });
                    }
                }
                Some(Proc::Helper(run, step, _)) => {
                    if self.helper_pids.get(&run) == Some(&pid) {
                        self.helper_pids.remove(&run);
                    }
                    // A forking unit's start command leaves its daemon in
                    // the group: only other helpers' groups are cleaned.
                    if step != Step::Starter {
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                    next.push(Next::Helper(run, step, status));
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
                Some(Proc::Former(run)) => {
                    tracing::debug!("former main process {pid} of {run:?} {status}");
                }
                Some(Proc::StopCommand(run, i)) => {
                    tracing::debug!("stop command {i} for {run:?} {status}");
                    let spec = self.stop_chains.remove(&run);
                    match spec {
                        Some(spec) if spec.stop.command(i + 1).is_some() => {
                            if status.success() {
                                next.push(Next::ChainStop(run, spec, i + 1));
                            } else {
                                tracing::warn!(unit = %spec.name, "stop command {:?} {status}; the later ones do not run", spec.stop.command(i));
                                next.push(Next::StopEnded(run));
                            }
                        }
                        _ => next.push(Next::StopEnded(run)),
                    }
                }
                None => {
                    self.orphans_reaped += 1;
                    tracing::debug!("reaped orphan pid {pid}: {status}");
                    if self.orphans.len() >= ORPHAN_MEMORY {
                        self.orphans.pop_front();
                    }
                    self.orphans.push_back((pid, status));
                }
            }
            if only.is_some() {
                return;
            }
        }
    }
}

/// Signal the process group `pid` leads; a forking daemon that did not
/// make itself a group leader gets the signal alone.
fn signal_group(pid: i32, sig: Signal) {
    signal_group_then(pid, sig, None);
}

/// `signal_group`, and `then` to the same target: one getpgid for both
/// (a stop's SIGTERM and SIGCONT).
fn signal_group_then(pid: i32, sig: Signal, then: Option<Signal>) {
    let p = Pid::from_raw(pid);
    let leader = !matches!(nix::unistd::getpgid(Some(p)), Ok(pg) if pg != p);
    for s in std::iter::once(sig).chain(then) {
        if leader {
            let _ = killpg(p, s);
        } else {
            let _ = nix::sys::signal::kill(p, s);
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
                t.put(old, Proc::Former(run));
            }
            t.foreign.remove(&old);
        }
        t.put(pid, Proc::Main(run));
        // A run without a main process has one now (`MAINPID=`): its end
        // is that process's exit again, not its group emptying.
        t.pidless.remove(&run);
        if self.groups.is_contained(run) {
            t.contained.insert(run);
            self.groups.record_main(run, pid, None, None);
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
        self.procs.take(pid);
        self.procs.run_pids.remove(&run);
        let contained = self.procs.contained.remove(&run);
        self.procs.outputs.remove(&run);
        self.feed(Event::ProcessExited {
            run,
            status: ExitStatus::Unknown,
        });
        // No reaper saw it end, so nothing has read its group: watch it
        // (it is read once more right after, see `ensure_watched`).
        if contained && let Some(unit) = self.groups.unit_of(run).map(str::to_string) {
            self.groups.ensure_watched(&unit);
        }
    }

    /// `MAINPID=`: in a contained unit any live process of its cgroup may
    /// become the main process (recorded on the cgroup for adoption);
    /// otherwise the process table's rule (a child of supd or of the
    /// current main process).
    pub(super) fn adopt_main(&mut self, run: RunId, pid: i32) -> Result<Option<Event>, String> {
        let Some(dir) = self.groups.dir_of(run) else {
            return self.procs.adopt_main(run, pid);
        };
        if self.procs.main_pid(run) == Some(pid) {
            return Ok(None);
        }
        mainpid::check(pid, Some(&dir))?;
        match self.procs.procs.get(&pid) {
            None | Some(Proc::Former(_)) => {}
            Some(Proc::Main(r)) if *r == run => {}
            Some(_) => return Err(format!("pid {pid} is already another process supd tracks")),
        }
        self.set_main_pid(run, pid);
        Ok(Some(Event::MainPidChanged { run, pid }))
    }
}

/// Creating processes: these need the driver's channels (output capture,
/// readiness lines, probe answers), so they live on `Driver`, but every pid
/// goes into the table before the loop can reap again.
impl Driver {
    /// Reap everything that exited. The child the SIGCHLD named (`hint`)
    /// is collected and fed first, by pid: its restart then waits neither
    /// for `waitpid(-1)`'s walk over every child of supd (hundreds of µs
    /// with thousands of units) nor for the other exits. Then the drain
    /// collects the rest (signals coalesce) and feeds them as one batch.
    pub(super) fn reap(&mut self, hint: Option<i32>) {
        if let Some(pid) = hint {
            self.reap_batch(Some(pid));
        }
        self.reap_batch(None);
    }

    /// Collect the exit of `only` (or, with None, of every child that
    /// exited) and feed them as one batch.
    fn reap_batch(&mut self, only: Option<i32>) {
        // Exits during the drain are collected by it; their SIGCHLDs stay
        // pending on the signalfd and wake us once more.
        let mut exits = Vec::new();
        let mut next = Vec::new();
        self.procs.reap_into(only, &mut exits, &mut next);
        let mut ended = Vec::new();
        for n in next {
            match n {
                Next::Helper(run, step, status) => {
                    let evs = self.after_helper(run, step, status);
                    self.note_script_end(run, &evs, &mut ended);
                    exits.extend(evs);
                }
                Next::StopPost(run, status) => {
                    if let Some(c) = self.procs.runs.get_mut(&run) {
                        c.exited = Some(status);
                    }
                    // Watched from now on if something is left: the
                    // stop-post commands wait for its emptying.
                    let left = self.groups.populated_watched(run);
                    if left && let Some(c) = self.procs.runs.get_mut(&run) {
                        // The engine hears of the exit now (it decides how
                        // the rest of the group ends); the stop-post
                        // commands run once the group is empty.
                        c.post_on_empty = true;
                        exits.push(Event::ProcessExited { run, status });
                    } else {
                        let evs = self.run_step(run, Step::StopPost(0));
                        self.note_script_end(run, &evs, &mut ended);
                        exits.extend(evs);
                    }
                }
                Next::ChainStop(run, spec, i) => {
                    exits.extend(self.stop_command(run, spec, i));
                    // The next command could not start: the chain is over.
                    if !self.procs.stop_pending(run) {
                        self.stop_chain_over(run);
                    }
                }
                Next::MainEnded(run) => ended.push(run),
                Next::StopEnded(run) => self.stop_chain_over(run),
            }
        }
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
        let emptied = self.empty_before_exit(&mut exits, &ended);
        self.feed_exits(exits, emptied);
    }

    /// A contained run's stop commands are over. While they ran, an
    /// emptying of its group was not believed (`groups_emptied`,
    /// `empty_before_exit`: the group is empty for a moment between two
    /// commands, or once a command has left it and before it is reaped);
    /// if its main process is gone too, the group is read again now, as
    /// a wake-up of the watches' channel, so that its emptying is reported.
    fn stop_chain_over(&mut self, run: RunId) {
        if self.procs.has_main(run) {
            return;
        }
        if let Some(unit) = self.groups.unit_of(run).map(str::to_string) {
            self.groups.recheck(&unit);
        }
    }

    /// A helper's exit (or a stop-post command that could not start)
    /// ended a contained run's script: its `ProcessExited` is in `evs`
    /// (the last stop-post or stop command). The run then belongs in
    /// `ended` like a main process's exit without stop-post commands: if
    /// its group is empty already (the usual case: the stop-post command
    /// was the last process in it), the engine hears `GroupEmpty` first
    /// and ends the run in this batch. Without that nothing reported the
    /// emptying (the group was not watched: it was empty when the main
    /// process was reaped), so every stop of a unit with `exec_stop_post`
    /// lasted its whole stop timeout, the run waiting for the group's
    /// SIGKILL to learn that the group was empty; a supd shutting down
    /// left its group empty but in use for all that time.
    fn note_script_end(&self, run: RunId, evs: &[Event], ended: &mut Vec<RunId>) {
        let over = evs
            .iter()
            .any(|e| matches!(e, Event::ProcessExited { run: r, .. } if *r == run));
        if over && self.groups.is_contained(run) {
            ended.push(run);
        }
    }

    /// For each contained run in `ended` whose group is empty already (a
    /// service alone in its group, the usual case), put `GroupEmpty` just
    /// before its `ProcessExited`: the engine then ends the run in this
    /// batch. Otherwise it would first hold the run as draining and ask
    /// for a `cgroup.kill` of the empty group (which makes the group be
    /// made afresh before the restart), and learn of the empty group a
    /// loop turn later from the group's watch. A group with processes
    /// left is untouched: its watch reports it when it empties.
    /// Returns the runs (and units) told so.
    fn empty_before_exit(
        &mut self,
        exits: &mut Vec<Event>,
        ended: &[RunId],
    ) -> Vec<(RunId, String)> {
        let mut told = Vec::new();
        if ended.is_empty() {
            return told;
        }
        let ended: std::collections::HashSet<RunId> = ended.iter().copied().collect();
        // Rebuilt rather than inserted into: thousands of exits come in one
        // drain at shutdown.
        let mut out = Vec::with_capacity(exits.len() + ended.len());
        for ev in exits.drain(..) {
            if let Event::ProcessExited { run, .. } = ev
                && ended.contains(&run)
                && !self.procs.stop_pending(run)
                && let Some(unit) = self.groups.unit_of(run).map(str::to_string)
                && self.groups.emptied(&unit) == Some(run)
            {
                out.push(Event::GroupEmpty { run });
                told.push((run, unit));
            }
            out.push(ev);
        }
        *exits = out;
        told
    }

    pub(super) fn expire_probes(&mut self) {
        let now = Instant::now();
        self.procs.expire_helpers(now);
        let mut answers = self.procs.expire_probes(now);
        answers.extend(self.poll_pid_files(now));
        if !answers.is_empty() {
            self.feed_many(answers);
        }
    }

    /// Hand a process's output pipe to a reader that feeds the unit's log.
    fn capture(&self, spec: &UnitSpec, stream: Stream, fd: impl Into<Arc<std::os::fd::OwnedFd>>) {
        output::capture(
            self.logs.clone(),
            Arc::from(spec.name.as_str()),
            stream,
            Limits::of(spec, self.settings.log),
            fd,
        );
    }

    /// The engine asked for a run to start: check its conditions, then
    /// take the first step of its script.
    pub(super) fn start_run(
        &mut self,
        run: RunId,
        spec: Arc<UnitSpec>,
        mounts: Vec<MountReq>,
    ) -> Vec<Event> {
        match crate::world::conditions::check(&spec) {
            Ok(()) => {}
            Err(crate::world::conditions::NotMet::Condition(why)) => {
                return vec![Event::ConditionFailed { run, why }];
            }
            Err(crate::world::conditions::NotMet::Assertion(why)) => {
                return vec![Event::SpawnFailed {
                    run,
                    error: why,
                    mount: None,
                }];
            }
        }
        if spec.forking
            && spec.pid_file.is_none()
            && let crate::world::cgroup::Containment::ProcessGroups { why } =
                &self.groups.containment
        {
            return vec![Event::SpawnFailed {
                run,
                error: format!(
                    "type = \"forking\" without `pid_file` needs cgroup containment to find the daemon, and supd has none here ({why}); give `pid_file`"
                ),
                mount: None,
            }];
        }
        let first = if !spec.exec_condition.is_empty() {
            Some(Step::Cond(0))
        } else if !spec.exec_start_pre.is_empty() {
            Some(Step::Pre(0))
        } else if spec.forking {
            Some(Step::Starter)
        } else {
            None
        };
        self.procs.runs.insert(
            run,
            RunCtx {
                spec,
                mounts,
                exited: None,
                pid_wait: None,
                guessed: None,
                post_on_empty: false,
                empty_held: false,
            },
        );
        match first {
            Some(step) => self.run_step(run, step),
            None => self.main_and_posts(run),
        }
    }

    /// Spawn the main process, then start the post commands.
    fn main_and_posts(&mut self, run: RunId) -> Vec<Event> {
        let Some(ctx) = self.procs.runs.get(&run) else {
            return vec![];
        };
        let (spec, mounts) = (ctx.spec.clone(), ctx.mounts.clone());
        let ev = self.spawn_main(run, &spec, &mounts);
        let started = matches!(ev, Event::Spawned { .. });
        if !started {
            self.procs.forget(run);
        }
        let mut out = vec![ev];
        if started && !spec.exec_start_post.is_empty() {
            out.extend(self.run_step(run, Step::Post(0)));
        }
        out
    }

    /// Start one helper command; its exit comes back through the reaper.
    fn run_step(&mut self, run: RunId, step: Step) -> Vec<Event> {
        let Some(ctx) = self.procs.runs.get(&run) else {
            return vec![];
        };
        let spec = ctx.spec.clone();
        let mounts = ctx.mounts.clone();
        let (cmd, list_len) = match step {
            Step::Stop(i) => (
                spec.stop.command(i).map(|argv| crate::unit::HelperCmd {
                    argv: argv.clone(),
                    ignore_failure: false,
                    privileged: false,
                }),
                1,
            ),
            Step::Cond(i) => (
                spec.exec_condition.get(i).cloned(),
                spec.exec_condition.len(),
            ),
            Step::Pre(i) => (
                spec.exec_start_pre.get(i).cloned(),
                spec.exec_start_pre.len(),
            ),
            Step::Post(i) => (
                spec.exec_start_post.get(i).cloned(),
                spec.exec_start_post.len(),
            ),
            Step::StopPost(i) => (
                spec.exec_stop_post.get(i).cloned(),
                spec.exec_stop_post.len(),
            ),
            Step::Reload(i) => (spec.reload_exec.get(i).cloned(), spec.reload_exec.len()),
            Step::Starter => (
                Some(crate::unit::HelperCmd {
                    argv: spec.exec.clone(),
                    ignore_failure: false,
                    privileged: false,
                }),
                1,
            ),
        };
        let _ = list_len;
        let Some(cmd) = cmd else {
            return vec![];
        };
        let notify = (step == Step::Starter && spec.ready.kind == crate::unit::ReadyKind::Notify)
            .then_some(self.notify_path.as_deref())
            .flatten();
        // Helper commands belong to the unit: they run in its cgroup (a
        // forking unit's start command is its service).
        let group = self.groups.group_for(&spec.name, GroupKind::Unit);
        // Limits and device rules hold from the first command of a start
        // (a start command runs as the service does).
        if matches!(step, Step::Cond(_) | Step::Pre(_) | Step::Starter)
            && group.is_some()
            && let Err(e) = self.groups.apply_resources(&spec)
        {
            return self.step_failed(run, step, false, e, None);
        }
        // A forking unit's start command is its service: it gets the
        // sockets (as systemd passes them to ExecStart=).
        let listen = if step == Step::Starter {
            match self.listeners.fds_for(&spec) {
                Ok(l) => l,
                Err(e) => return self.step_failed(run, step, false, e, None),
            }
        } else {
            vec![]
        };
        let env = spawn::SpawnEnv {
            notify_socket: notify,
            main_pid: self.procs.main_pid(run),
            cgroup: group
                .as_ref()
                .map(|g| std::os::fd::AsRawFd::as_raw_fd(&g.0)),
            expand: true,
            privileged: cmd.privileged,
            sandboxed: true,
            // A forking unit's daemon gets the watchdog period (not a pid:
            // the daemon's is not known yet).
            watchdog_usec: (step == Step::Starter)
                .then(|| {
                    spec.ready
                        .watchdog
                        .map(|w| u64::try_from(w.as_micros()).unwrap_or(u64::MAX))
                })
                .flatten(),
            watchdog_pid: false,
            listen: &listen,
        };
        // The start command of a forking unit is its service: the mounts
        // are checked right before it, as for any main process.
        let check: &[MountReq] = if step == Step::Starter { &mounts } else { &[] };
        let now = Instant::now();
        // Start and reload commands get the start timeout (none when the
        // unit has none, as systemd's TimeoutStartSec=infinity), stop-post
        // commands the stop timeout.
        let limit = match step {
            Step::StopPost(_) | Step::Stop(_) => Some(spec.stop.timeout),
            _ => spec.ready.timeout,
        };
        let deadline = limit.and_then(|t| now.checked_add(t));
        match spawn::spawn(&spec, &cmd.argv, check, &env, None) {
            Ok(s) => {
                self.procs.put(s.pid, Proc::Helper(run, step, deadline));
                if step == Step::Starter && group.is_some() {
                    self.groups.bind(run, &spec.name);
                }
                if matches!(
                    step,
                    Step::Cond(_)
                        | Step::Pre(_)
                        | Step::Starter
                        | Step::StopPost(_)
                        | Step::Stop(_)
                ) {
                    self.procs.helper_pids.insert(run, s.pid);
                }
                if let Some(fd) = s.output {
                    // Start and reload commands speak for the service;
                    // stop-post commands are part of stopping it.
                    let stream = match step {
                        Step::StopPost(_) | Step::Stop(_) => Stream::Stop,
                        Step::Cond(_)
                        | Step::Pre(_)
                        | Step::Starter
                        | Step::Post(_)
                        | Step::Reload(_) => Stream::Out,
                    };
                    self.capture(&spec, stream, fd);
                }
                vec![]
            }
            Err(e) => {
                let mount = match &e {
                    spawn::SpawnError::Mount(p) => Some(p.clone()),
                    spawn::SpawnError::Failed(_) => None,
                };
                let msg = format!(
                    "{} command {:?}: {}",
                    step.label(),
                    cmd.argv,
                    spawn_error_text(e)
                );
                // A command that cannot even start counts as failing.
                self.step_failed(run, step, cmd.ignore_failure, msg, mount)
            }
        }
    }

    /// A helper ended with `status`: the next step, or the failure.
    fn after_helper(&mut self, run: RunId, step: Step, status: ExitStatus) -> Vec<Event> {
        let Some(ctx) = self.procs.runs.get(&run) else {
            return vec![];
        };
        let spec = ctx.spec.clone();
        let cmd = match step {
            Step::Cond(i) => spec.exec_condition.get(i),
            Step::Pre(i) => spec.exec_start_pre.get(i),
            Step::Post(i) => spec.exec_start_post.get(i),
            Step::StopPost(i) => spec.exec_stop_post.get(i),
            Step::Reload(i) => spec.reload_exec.get(i),
            Step::Starter | Step::Stop(_) => None,
        };
        let ignore = cmd.is_some_and(|c| c.ignore_failure);
        let argv = match step {
            Step::Stop(i) => spec.stop.command(i).cloned().unwrap_or_default(),
            _ => cmd
                .map(|c| c.argv.clone())
                .unwrap_or_else(|| spec.exec.clone()),
        };
        if let Step::Stop(_) = step
            && !status.success()
            && let Some(c) = self.procs.runs.get_mut(&run)
        {
            c.exited = Some(status);
        }
        if status.success() || ignore {
            if !status.success() {
                tracing::info!(unit = %spec.name, "{} command {argv:?} {status} (failure ignored: `-`)", step.label());
            }
            return self.step_done(run, step);
        }
        let msg = format!("{} command {argv:?} {status}", step.label());
        // systemd's ExecCondition=: 1..=254 means "do not run" (skipped,
        // like a failed condition); 255 or a signal is a failure.
        if let (Step::Cond(_), ExitStatus::Exited(1..=254)) = (step, status) {
            self.procs.forget(run);
            return vec![Event::ConditionFailed { run, why: msg }];
        }
        self.step_failed(run, step, false, msg, None)
    }

    fn step_failed(
        &mut self,
        run: RunId,
        step: Step,
        ignore: bool,
        msg: String,
        mount: Option<crate::mounts::MountProblem>,
    ) -> Vec<Event> {
        let name = self
            .procs
            .runs
            .get(&run)
            .map(|c| c.spec.name.clone())
            .unwrap_or_default();
        if ignore {
            tracing::info!(unit = %name, "{msg} (failure ignored: `-`)");
            return self.step_done(run, step);
        }
        match step {
            Step::Cond(_) | Step::Pre(_) | Step::Starter => {
                self.procs.forget(run);
                vec![Event::SpawnFailed {
                    run,
                    error: msg,
                    mount,
                }]
            }
            Step::Post(_) => vec![Event::HelperFailed { run, what: msg }],
            Step::Reload(_) => {
                tracing::warn!(unit = %name, "reload failed: {msg}");
                vec![]
            }
            Step::StopPost(_) => {
                tracing::warn!(unit = %name, "{msg}");
                self.step_done(run, step)
            }
            // A failing stop command ends the sequence (as systemd's);
            // the stop-post commands still run.
            Step::Stop(_) => {
                tracing::warn!(unit = %name, "{msg}; the later stop commands do not run");
                self.stop_posts_of_completed(run)
            }
        }
    }

    /// After a completed unit's stop commands: its stop-post commands,
    /// then the end of the run.
    fn stop_posts_of_completed(&mut self, run: RunId) -> Vec<Event> {
        let has_posts = self
            .procs
            .runs
            .get(&run)
            .is_some_and(|c| !c.spec.exec_stop_post.is_empty());
        if has_posts {
            return self.run_step(run, Step::StopPost(0));
        }
        let status = self
            .procs
            .runs
            .remove(&run)
            .and_then(|c| c.exited)
            .unwrap_or(ExitStatus::Exited(0));
        vec![Event::ProcessExited { run, status }]
    }

    /// The step succeeded (or its failure is ignored): take the next one.
    fn step_done(&mut self, run: RunId, step: Step) -> Vec<Event> {
        let Some(ctx) = self.procs.runs.get(&run) else {
            return vec![];
        };
        let spec = ctx.spec.clone();
        match step {
            Step::Cond(i) if i + 1 < spec.exec_condition.len() => {
                self.run_step(run, Step::Cond(i + 1))
            }
            Step::Cond(_) if !spec.exec_start_pre.is_empty() => self.run_step(run, Step::Pre(0)),
            Step::Cond(_) if spec.pid_file.is_some() => self.run_step(run, Step::Starter),
            Step::Cond(_) => self.main_and_posts(run),
            Step::Pre(i) if i + 1 < spec.exec_start_pre.len() => {
                self.run_step(run, Step::Pre(i + 1))
            }
            Step::Pre(_) if spec.forking => self.run_step(run, Step::Starter),
            Step::Pre(_) => self.main_and_posts(run),
            Step::Starter => {
                let now = Instant::now();
                let wait = spec.ready.timeout.unwrap_or(PID_FILE_WAIT);
                if let Some(c) = self.procs.runs.get_mut(&run) {
                    c.pid_wait = Some(now.checked_add(wait).unwrap_or(now));
                    self.procs.pid_waiting.insert(run);
                    if self.procs.pid_poll_at.is_none() {
                        self.procs.pid_poll_at = Some(now + PID_POLL);
                    }
                }
                if spec.pid_file.is_none() {
                    return self.guess_main(run, now);
                }
                self.read_pid_file(run, now)
            }
            Step::Post(i) if i + 1 < spec.exec_start_post.len() => {
                self.run_step(run, Step::Post(i + 1))
            }
            Step::Post(_) => vec![],
            Step::Reload(i) if i + 1 < spec.reload_exec.len() => {
                self.run_step(run, Step::Reload(i + 1))
            }
            Step::Reload(_) => {
                tracing::info!(unit = %spec.name, "reloaded");
                vec![]
            }
            Step::Stop(i) if spec.stop.command(i + 1).is_some() => {
                self.run_step(run, Step::Stop(i + 1))
            }
            Step::Stop(_) => self.stop_posts_of_completed(run),
            Step::StopPost(i) if i + 1 < spec.exec_stop_post.len() => {
                self.run_step(run, Step::StopPost(i + 1))
            }
            Step::StopPost(_) => {
                let Some(c) = self.procs.forget(run) else {
                    return vec![];
                };
                if c.empty_held {
                    // The exit was told already; now the run is over.
                    return vec![Event::GroupEmpty { run }];
                }
                let status = c.exited.unwrap_or(ExitStatus::Exited(0));
                vec![Event::ProcessExited { run, status }]
            }
        }
    }

    /// `run`'s group emptied. If its stop-post commands were waiting for
    /// that, they start now and the `GroupEmpty` is held until they end:
    /// returns what starting them produced. None: feed `GroupEmpty`.
    pub(super) fn stop_post_on_empty(&mut self, run: RunId) -> Option<Vec<Event>> {
        let c = self.procs.runs.get_mut(&run)?;
        if !c.post_on_empty || c.empty_held {
            return None;
        }
        c.empty_held = true;
        Some(self.run_step(run, Step::StopPost(0)))
    }

    /// `supctl reload-unit` for a unit with `reload_exec`.
    pub(super) fn reload_exec(&mut self, run: RunId) -> Vec<Event> {
        self.run_step(run, Step::Reload(0))
    }

    /// Look at the pid files forking units wait for.
    fn poll_pid_files(&mut self, now: Instant) -> Vec<Event> {
        let waiting: Vec<RunId> = self.procs.pid_waiting.iter().copied().collect();
        let mut out = Vec::new();
        for run in waiting {
            let by_file = self
                .procs
                .runs
                .get(&run)
                .is_some_and(|c| c.spec.pid_file.is_some());
            if by_file {
                out.extend(self.read_pid_file(run, now));
            } else {
                out.extend(self.guess_main(run, now));
            }
        }
        let t = &mut self.procs;
        t.pid_waiting
            .retain(|r| t.runs.get(r).is_some_and(|c| c.pid_wait.is_some()));
        t.pid_poll_at = (!t.pid_waiting.is_empty()).then(|| now + PID_POLL);
        out
    }

    /// `type = "forking"` without `pid_file`, its start command exited 0:
    /// name the main process from the unit's cgroup as systemd does — the
    /// one process whose parent is not in the group (the daemon's root;
    /// its workers descend from it). Taken when two looks `PID_POLL` apart
    /// agree, so a double fork caught half-way (the intermediate child
    /// still alive) is not mistaken for the daemon. Several roots: the run
    /// goes on without a main process, tracked by its cgroup (stop
    /// signals the whole group; it ends when the group is empty).
    fn guess_main(&mut self, run: RunId, now: Instant) -> Vec<Event> {
        let Some(ctx) = self.procs.runs.get(&run) else {
            return vec![];
        };
        let spec = ctx.spec.clone();
        let Some(deadline) = ctx.pid_wait else {
            return vec![];
        };
        let Some(dir) = self.groups.dir_of(run) else {
            self.procs.runs.remove(&run);
            return vec![Event::SpawnFailed {
                run,
                error: "type = \"forking\" without `pid_file`: the unit's cgroup could not be made, so its daemon cannot be found; give `pid_file`".into(),
                mount: None,
            }];
        };
        let members: Vec<i32> = match crate::world::cgroup::pids(&dir) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(unit = %spec.name, "reading {}/cgroup.procs: {e}", dir.display());
                Vec::new()
            }
        };
        // supd's own helpers there (none at this step today) are not the
        // service.
        let members: Vec<i32> = members
            .into_iter()
            .filter(|p| !self.procs.procs.contains_key(p))
            .collect();
        let g = mainpid::guess(&members);
        let settled = now >= deadline
            || self
                .procs
                .runs
                .get(&run)
                .is_some_and(|c| c.guessed.as_ref() == Some(&g));
        if !settled {
            if let Some(c) = self.procs.runs.get_mut(&run) {
                c.guessed = Some(g);
            }
            return vec![];
        }
        if let Some(c) = self.procs.runs.get_mut(&run) {
            c.pid_wait = None;
            c.guessed = None;
        }
        let cgroup = self
            .groups
            .group_for(&spec.name, GroupKind::Unit)
            .map(|g| g.1);
        let pid = match g {
            mainpid::Guess::Empty => {
                self.procs.runs.remove(&run);
                return vec![Event::SpawnFailed {
                    run,
                    error: "the start command exited 0 and left no process in the unit's cgroup (the daemon died at once, or it does not fork: use type = \"longrun\")".into(),
                    mount: None,
                }];
            }
            mainpid::Guess::Main(pid) => {
                tracing::info!(unit = %spec.name, "main process {pid} (the root of the unit's cgroup)");
                self.set_main_pid(run, pid);
                pid
            }
            mainpid::Guess::Several(roots) => {
                tracing::warn!(
                    unit = %spec.name,
                    "no main process: {roots:?} in the unit's cgroup each have their parent outside it; the unit is tracked by its cgroup (stop signals every process in it)"
                );
                self.procs.pidless.insert(run);
                self.procs.contained.insert(run);
                // Its end is its group emptying.
                self.groups.ensure_watched(&spec.name);
                0
            }
        };
        let mut out = vec![Event::Spawned { run, pid, cgroup }];
        if !spec.exec_start_post.is_empty() {
            out.extend(self.run_step(run, Step::Post(0)));
        }
        out
    }

    /// A contained run's group emptied: a run without a main process
    /// (see `guess_main`) has ended now, as if its main process exited 0
    /// (its stop-post commands first).
    pub(super) fn pidless_ended(&mut self, run: RunId) -> Vec<Event> {
        if !self.procs.pidless.remove(&run) {
            return vec![];
        }
        self.procs.contained.remove(&run);
        self.procs.outputs.remove(&run);
        for h in self.procs.helpers_of(run) {
            let _ = killpg(Pid::from_raw(h), Signal::SIGKILL);
        }
        let status = ExitStatus::Exited(0);
        let stop_post = self
            .procs
            .runs
            .get(&run)
            .is_some_and(|c| !c.spec.exec_stop_post.is_empty());
        if stop_post {
            if let Some(c) = self.procs.runs.get_mut(&run) {
                c.exited = Some(status);
            }
            return self.run_step(run, Step::StopPost(0));
        }
        self.procs.runs.remove(&run);
        vec![Event::ProcessExited { run, status }]
    }

    /// Is this run without a main process (tracked by its cgroup alone)?
    pub(super) fn is_pidless(&self, run: RunId) -> bool {
        self.procs.pidless.contains(&run)
    }

    /// Adopt the pid in a forking unit's pid file as its main process,
    /// once it names a live process that is ours (reparented to supd, as
    /// subreaper or PID 1). Until the deadline a missing, stale or foreign
    /// pid means "not yet".
    fn read_pid_file(&mut self, run: RunId, now: Instant) -> Vec<Event> {
        let Some(ctx) = self.procs.runs.get(&run) else {
            return vec![];
        };
        let (Some(path), Some(deadline)) = (ctx.spec.pid_file.clone(), ctx.pid_wait) else {
            return vec![];
        };
        let spec = ctx.spec.clone();
        let found = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .filter(|p| *p > 1);
        if let Some(pid) = found {
            if let Some(pos) = self.procs.orphans.iter().position(|(p, _)| *p == pid) {
                // It died before we looked.
                let (_, status) = self
                    .procs
                    .orphans
                    .remove(pos)
                    .unwrap_or((pid, ExitStatus::Exited(1)));
                self.procs.forget(run);
                return vec![
                    Event::Spawned {
                        run,
                        pid,
                        cgroup: None,
                    },
                    Event::ProcessExited { run, status },
                ];
            }
            // Contained: only a process in the unit's cgroup (it need not
            // be our child; its exit is then watched by pidfd).
            let group = self.groups.dir_of(run);
            let of_unit = match &group {
                Some(dir) => mainpid::check(pid, Some(dir)).is_ok(),
                None => is_our_child(pid),
            };
            if of_unit && !self.procs.procs.contains_key(&pid) {
                if let Some(c) = self.procs.runs.get_mut(&run) {
                    c.pid_wait = None;
                }
                tracing::info!(unit = %spec.name, "main process {pid} (from {})", path.display());
                self.set_main_pid(run, pid);
                let cgroup = if group.is_some() {
                    self.groups
                        .group_for(&spec.name, GroupKind::Unit)
                        .map(|g| g.1)
                } else {
                    None
                };
                let mut out = vec![Event::Spawned { run, pid, cgroup }];
                if !spec.exec_start_post.is_empty() {
                    out.extend(self.run_step(run, Step::Post(0)));
                }
                return out;
            }
        }
        if now >= deadline {
            self.procs.forget(run);
            return vec![Event::SpawnFailed {
                run,
                error: format!(
                    "the start command exited 0 but {} did not name a running process of the unit in time (is `pid_file` right?)",
                    path.display()
                ),
                mount: None,
            }];
        }
        vec![]
    }

    fn spawn_main(&mut self, run: RunId, spec: &UnitSpec, mounts: &[MountReq]) -> Event {
        let notify = match spec.ready.kind {
            crate::unit::ReadyKind::Notify => self.notify_path.as_deref(),
            _ => None,
        };
        let group = self.groups.group_for(&spec.name, GroupKind::Unit);
        if let Err(error) = self.groups.apply_resources(spec) {
            return Event::SpawnFailed {
                run,
                error,
                mount: None,
            };
        }
        let listen = match self.listeners.fds_for(spec) {
            Ok(l) => l,
            Err(error) => {
                return Event::SpawnFailed {
                    run,
                    error,
                    mount: None,
                };
            }
        };
        let env = spawn::SpawnEnv {
            notify_socket: notify,
            main_pid: None,
            cgroup: group
                .as_ref()
                .map(|g| std::os::fd::AsRawFd::as_raw_fd(&g.0)),
            expand: true,
            privileged: false,
            sandboxed: true,
            watchdog_usec: spec
                .ready
                .watchdog
                .map(|w| u64::try_from(w.as_micros()).unwrap_or(u64::MAX)),
            watchdog_pid: true,
            listen: &listen,
        };
        let ready_fd = (spec.ready.kind == crate::unit::ReadyKind::Fd).then_some(spec.ready.fd);
        match spawn::spawn(spec, &spec.exec, mounts, &env, ready_fd) {
            Ok(s) => {
                self.procs.put(s.pid, Proc::Main(run));
                self.procs.run_pids.insert(run, s.pid);
                if group.is_some() {
                    self.procs.contained.insert(run);
                    self.groups.bind(run, &spec.name);
                    let dir = group.as_ref().map(|g| std::os::fd::AsFd::as_fd(&g.0));
                    self.groups.record_main(run, s.pid, s.start_ticks, dir);
                }
                if let Some(fd) = s.ready {
                    output::watch_ready_line(fd, run, self.ready_tx.clone());
                }
                if let Some(fd) = s.output {
                    // Shared with the capture task, not duplicated: one
                    // descriptor per service (re-exec hands this one over).
                    let fd = Arc::new(fd);
                    self.procs.outputs.insert(run, fd.clone());
                    self.capture(spec, Stream::Out, fd);
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

    /// Run a unit's `[stop] exec` (its commands in order); if one cannot
    /// even start, fall back to the stop signal (the unit must still stop).
    /// A completed unit (no process) is stopped by its stop commands and
    /// then its stop-post commands, as a script of its own whose end is
    /// the run's end.
    pub(super) fn stop_exec(&mut self, run: RunId, spec: Arc<UnitSpec>) -> Vec<Event> {
        // (A forking run without a main process is running: its stop
        // commands stop it like any other.)
        if self.procs.main_pid(run).is_none() && !self.procs.pidless.contains(&run) {
            self.procs.runs.insert(
                run,
                RunCtx {
                    spec: spec.clone(),
                    mounts: vec![],
                    exited: None,
                    pid_wait: None,
                    guessed: None,
                    post_on_empty: false,
                    empty_held: false,
                },
            );
            return if spec.stop.exec.is_some() {
                self.run_step(run, Step::Stop(0))
            } else {
                self.stop_posts_of_completed(run)
            };
        }
        self.stop_command(run, spec, 0)
    }

    /// Stop command `i` of a running unit.
    fn stop_command(&mut self, run: RunId, spec: Arc<UnitSpec>, i: usize) -> Vec<Event> {
        let Some(argv) = spec.stop.command(i).cloned() else {
            return vec![];
        };
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
            cgroup: group
                .as_ref()
                .map(|g| std::os::fd::AsRawFd::as_raw_fd(&g.0)),
            expand: true,
            privileged: false,
            sandboxed: true,
            watchdog_usec: None,
            watchdog_pid: false,
            listen: &[],
        };
        match spawn::spawn(&spec, &argv, &[], &env, None) {
            Ok(s) => {
                self.procs.put(s.pid, Proc::StopCommand(run, i));
                if let Some(fd) = s.output {
                    self.capture(&spec, Stream::Stop, fd);
                }
                self.procs.stop_chains.insert(run, spec);
                vec![]
            }
            Err(e) => {
                let msg = spawn_error_text(e);
                tracing::warn!(unit = %spec.name, "stop command failed ({msg}); sending {}", crate::engine::signal_name(spec.stop.signal));
                if let Ok(sig) = Signal::try_from(spec.stop.signal)
                    && let Some(pid) = self.procs.main_pid(run)
                {
                    let _ = killpg(Pid::from_raw(pid), sig);
                }
                vec![]
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
                    cgroup: group
                        .as_ref()
                        .map(|g| std::os::fd::AsRawFd::as_raw_fd(&g.0)),
                    ..spawn::SpawnEnv::plain()
                };
                match spawn::spawn(&spec, argv, &[], &env, None) {
                    Ok(s) => {
                        let now = Instant::now();
                        // Saturating: a timeout past the end of time is
                        // "never" (unit files bound it at load anyway).
                        let deadline = crate::engine::timers::after(now, timeout);
                        self.procs.put(s.pid, Proc::Probe(run, kind, deadline));
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

/// `MAINPID=` from a unit: adopt `pid` as the run's main process if it is
/// alive and we will learn of its exit — a child of supd (a reparented
/// daemon) or of the current main process (reparented to us when that
/// exits). Anything else is refused (the pid could be anyone's).
impl ProcTable {
    pub(super) fn adopt_main(&mut self, run: RunId, pid: i32) -> Result<Option<Event>, String> {
        let Some(&current) = self.run_pids.get(&run) else {
            return Err("the unit has no main process".into());
        };
        if pid == current {
            return Ok(None);
        }
        let ppid = parent_of(pid).ok_or_else(|| format!("pid {pid} is not running"))?;
        if ppid != std::process::id() as i32 && ppid != current {
            return Err(format!(
                "pid {pid} is neither a child of the unit's main process {current} nor of supd"
            ));
        }
        if matches!(self.procs.get(&pid), Some(p) if !matches!(p, Proc::Former(_))) {
            return Err(format!("pid {pid} is already another process supd tracks"));
        }
        self.put(current, Proc::Former(run));
        self.put(pid, Proc::Main(run));
        self.run_pids.insert(run, pid);
        Ok(Some(Event::MainPidChanged { run, pid }))
    }
}

/// The uid a unit's processes run as.
fn unit_uid(spec: &UnitSpec) -> Option<u32> {
    match &spec.user {
        None => Some(nix::unistd::geteuid().as_raw()),
        Some(u) => nix::unistd::User::from_name(u)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw()),
    }
}

/// The parent of a live (not zombie) process.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(crate::world::procfs::pid_file(pid, "stat")?).ok()?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r)?;
    let mut f = rest.split_whitespace();
    let state = f.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    f.next()?.parse().ok()
}

/// Is `pid` a live child of supd (a daemon reparented to us)?
fn is_our_child(pid: i32) -> bool {
    let Some(Ok(stat)) = crate::world::procfs::pid_file(pid, "stat").map(std::fs::read_to_string)
    else {
        return false;
    };
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return false;
    };
    let mut f = rest.split_whitespace();
    let state = f.next().unwrap_or("Z");
    let ppid: i32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    state != "Z" && ppid == std::process::id() as i32
}
