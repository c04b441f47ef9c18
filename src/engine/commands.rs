//! Operator commands: what `supctl` asks, decided by the engine.
//!
//! Owns: the meaning of start/stop/restart/reset, maintenance on/off/list,
//! reload, recover, shed, poweroff — including when the answer may be given
//! (a lock is acknowledged only once durable and the unit is down). Must
//! never: answer success for a lock change before `LocksPersisted`, or let a
//! manual start through a maintenance lock.

use std::time::{Duration, Instant};

use crate::engine::locks::{Holder, LockMap, LockState};
use crate::protocol::{HolderInfo, LockInfo, Request, Response};
use crate::unit::{UnitKind, UnitSet};

use super::blockers::Blocker;
use super::event::{Event, ExitStatus, PeerInfo, ReqId, ShutdownKind};
use super::timers::TimerKind;
use super::unit_state::{UnitState, Want};
use super::{Action, AuditEntry, Engine, Pending, UnitId, WriteKind};

impl Engine {
    #[allow(clippy::too_many_arguments)]
    fn audit(
        &mut self,
        peer: &PeerInfo,
        wall_ms: u64,
        unit: Option<&str>,
        holder: Option<&str>,
        action: &str,
        reason: Option<&str>,
        outcome: &str,
    ) {
        self.out.push(Action::Audit(AuditEntry {
            wall_ms,
            peer_uid: Some(peer.uid),
            peer_pid: peer.pid,
            holder: holder.map(str::to_string),
            unit: unit.map(str::to_string),
            action: action.to_string(),
            reason: reason.map(str::to_string),
            outcome: outcome.to_string(),
        }));
    }

    /// Refuse an operator start/restart that a lock (or an unknown lock
    /// state, a shutdown, a removed unit) forbids: answer with every reason
    /// and audit the refusal. True when refused.
    #[allow(clippy::too_many_arguments)]
    fn refuse_manual_start(
        &mut self,
        req: ReqId,
        id: UnitId,
        unit: &str,
        verb: &str,
        peer: &PeerInfo,
        wall_ms: u64,
        now: Instant,
    ) -> bool {
        let refusals: Vec<String> = self
            .start_blockers(id, now, true)
            .into_iter()
            .filter(Blocker::refuses_manual_start)
            .map(|b| b.describe(unit, now))
            .collect();
        if refusals.is_empty() {
            return false;
        }
        self.audit(peer, wall_ms, Some(unit), None, verb, None, "refused");
        self.reply(
            req,
            Response::err(format!("refused to {verb} {unit}: {}", refusals.join("; "))),
        );
        true
    }

    /// Why `name` was left out at boot, if it was.
    fn not_loaded(&self, name: &str) -> Option<String> {
        self.skipped.units.get(name).map(|why| {
            format!(
                "{name} was not loaded at boot: {why}. Fix the unit file (`supd check` lists every error), then `supctl reload`"
            )
        })
    }

    fn lookup(&mut self, req: ReqId, name: &str) -> Option<UnitId> {
        match self.find_unit(name) {
            Ok(id) => Some(id),
            Err(msg) => {
                self.reply(req, Response::err(msg));
                None
            }
        }
    }

    /// The live unit called `name`, else what to tell the operator.
    fn find_unit(&self, name: &str) -> Result<UnitId, String> {
        match self.by_name.get(name) {
            Some(&id) if !self.units[id.0 as usize].removed => Ok(id),
            _ => {
                if let Some(msg) = self.not_loaded(name) {
                    return Err(msg);
                }
                let live = self.units.iter().filter(|u| !u.removed);
                let hint = if live.clone().nth(20).is_none() {
                    let mut known: Vec<&str> = live.map(|u| u.spec.name.as_str()).collect();
                    known.sort();
                    format!("known units: {}", known.join(", "))
                } else {
                    "`supctl status` lists them".to_string()
                };
                Err(format!("no unit named {name:?} ({hint})"))
            }
        }
    }

    /// The answer to `status` (one unit, or every unit): a read of the
    /// settled state, so the driver may ask it directly, without an event
    /// (a lookup and one record for `status NAME`).
    pub fn status_query(
        &self,
        unit: Option<&str>,
        now: Instant,
        wall_ms: u64,
    ) -> Result<crate::protocol::StatusReport, String> {
        let ids: Vec<UnitId> = match unit {
            Some(name) => vec![self.find_unit(name)?],
            None => self
                .units()
                .filter(|(_, u)| !u.removed || u.state.has_process())
                .map(|(id, _)| id)
                .collect(),
        };
        Ok(self.status_report(&ids, now, wall_ms))
    }

    /// `supctl enable|disable`, once durable: the set `status` shows.
    fn set_enabled(
        &mut self,
        req: ReqId,
        peer: &PeerInfo,
        wall_ms: u64,
        unit: String,
        enable: bool,
    ) {
        let (word, text) = if enable {
            self.disabled.remove(&unit);
            (
                "enable",
                format!(
                    "{unit} enabled: it starts at boot (not started now: `supctl start {unit}`)"
                ),
            )
        } else {
            self.disabled.insert(unit.clone());
            (
                "disable",
                format!(
                    "{unit} disabled: it does not start at boot unless an enabled unit requires or wants it (not stopped now: `supctl stop {unit}`)"
                ),
            )
        };
        self.audit(peer, wall_ms, Some(&unit), None, word, None, "ok");
        self.reply(req, Response::ok(text));
    }

    pub(super) fn on_command(
        &mut self,
        now: Instant,
        req: ReqId,
        peer: PeerInfo,
        wall_ms: u64,
        request: Request,
    ) {
        match request {
            Request::Status { unit } => match self.status_query(unit.as_deref(), now, wall_ms) {
                Ok(report) => {
                    let data = serde_json::to_value(&report).unwrap_or(serde_json::Value::Null);
                    self.reply(req, Response::ok_data("", data));
                }
                Err(msg) => self.reply(req, Response::err(msg)),
            },
            Request::Analyze => {
                let report = self.timeline_report(now, wall_ms);
                let data = serde_json::to_value(&report).unwrap_or(serde_json::Value::Null);
                self.reply(req, Response::ok_data("", data));
            }
            Request::Graph => {
                let report = self.graph_report(wall_ms);
                let data = serde_json::to_value(&report).unwrap_or(serde_json::Value::Null);
                self.reply(req, Response::ok_data("", data));
            }
            Request::Why { unit } => {
                if !self.by_name.contains_key(&unit)
                    && let Some(msg) = self.not_loaded(&unit)
                {
                    self.reply(req, Response::ok(msg));
                    return;
                }
                let Some(id) = self.lookup(req, &unit) else {
                    return;
                };
                let text = self.why(id, now);
                self.reply(req, Response::ok(text));
            }
            Request::Start { unit } => {
                let Some(id) = self.lookup(req, &unit) else {
                    return;
                };
                if self.refuse_manual_start(req, id, &unit, "start", &peer, wall_ms, now) {
                    return;
                }
                let u = self.unit_mut(id);
                u.want = Want::Up;
                // Only a start this command causes is exempt from the start
                // limit; a flag left on a running unit would exempt its next
                // crash restart.
                u.manual_start = !u.state.has_process();
                u.attempt = 0;
                u.window.clear();
                let state = u.state.clone();
                match state {
                    UnitState::Failed { .. }
                    | UnitState::Exited { .. }
                    | UnitState::Done
                    | UnitState::Skipped { .. }
                    | UnitState::Backoff { .. } => {
                        self.timers.cancel(id, TimerKind::RestartAt);
                        self.set_state(id, UnitState::Inactive);
                    }
                    UnitState::Inactive
                    | UnitState::Starting { .. }
                    | UnitState::Running { .. }
                    | UnitState::Stopping { .. }
                    | UnitState::Draining { .. } => {}
                }
                self.audit(&peer, wall_ms, Some(&unit), None, "start", None, "ok");
                // Settle now so the answer can say whether it started.
                self.settle(now);
                let u = &self.units[id.0 as usize];
                let msg = match &u.state {
                    UnitState::Starting { .. } | UnitState::Running { .. } => {
                        format!("{unit} started")
                    }
                    UnitState::Stopping { .. } | UnitState::Draining { .. } => {
                        format!("{unit} is stopping; it will start again once stopped")
                    }
                    UnitState::Done => format!("{unit} completed"),
                    UnitState::Skipped { why } => format!("{unit} skipped: {why}"),
                    UnitState::Failed { reason } => format!("{unit} failed: {reason}"),
                    _ => format!(
                        "{unit} will start when ready: {}",
                        self.start_blockers(id, now, true)
                            .iter()
                            .map(|b| b.describe(&unit, now))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                };
                self.reply(req, Response::ok(msg));
            }
            Request::Stop { unit } => {
                let Some(id) = self.lookup(req, &unit) else {
                    return;
                };
                let u = self.unit_mut(id);
                u.want = Want::Down;
                u.restart_requested = false;
                if matches!(
                    u.state,
                    UnitState::Backoff { .. } | UnitState::Failed { .. }
                ) {
                    self.timers.cancel(id, TimerKind::RestartAt);
                    self.set_state(id, UnitState::Inactive);
                }
                self.audit(&peer, wall_ms, Some(&unit), None, "stop", None, "ok");
                let dependents = self.required_by.of(id).len();
                let message = if dependents > 0 {
                    format!(
                        "{unit} stopped (units requiring it were stopped first); it stays down until `supctl start {unit}`"
                    )
                } else {
                    format!("{unit} stopped; it stays down until `supctl start {unit}`")
                };
                self.pending.push(Pending::Stopped {
                    req,
                    unit: id,
                    message,
                });
            }
            Request::Restart { unit } => {
                let Some(id) = self.lookup(req, &unit) else {
                    return;
                };
                if self.refuse_manual_start(req, id, &unit, "restart", &peer, wall_ms, now) {
                    return;
                }
                let u = self.unit_mut(id);
                u.want = Want::Up;
                u.attempt = 0;
                u.window.clear();
                if u.state.has_process() {
                    u.restart_requested = true;
                } else {
                    u.manual_start = true;
                    if !matches!(u.state, UnitState::Inactive) {
                        self.timers.cancel(id, TimerKind::RestartAt);
                        self.set_state(id, UnitState::Inactive);
                    }
                }
                self.audit(&peer, wall_ms, Some(&unit), None, "restart", None, "ok");
                // Its parts (`part_of`) restart with it.
                for part in self.parts[id.0 as usize].clone() {
                    let p = self.unit_mut(part);
                    if p.state.has_process() {
                        p.restart_requested = true;
                    }
                }
                let old = self.units[id.0 as usize].state.run();
                if old.is_none() {
                    self.settle(now);
                    let msg = match self.units[id.0 as usize].state.run() {
                        Some(_) => format!("{unit} started"),
                        None => format!("{unit} will start when ready: {}", self.why_short(id)),
                    };
                    self.reply(req, Response::ok(msg));
                    return;
                }
                self.pending.push(Pending::Restarted {
                    req,
                    unit: id,
                    old,
                    message: format!("{unit} restarted"),
                });
                // The pending reply fires once the old process is gone; by
                // then the new one is spawned in the same settle.
            }
            // The driver made the new set durable before these arrive.
            Request::Enable { unit } => self.set_enabled(req, &peer, wall_ms, unit, true),
            Request::Disable { unit } => self.set_enabled(req, &peer, wall_ms, unit, false),
            Request::Reset { unit } => {
                let Some(id) = self.lookup(req, &unit) else {
                    return;
                };
                let u = self.unit_mut(id);
                u.attempt = 0;
                u.window.clear();
                let was_failed = matches!(u.state, UnitState::Failed { .. });
                if was_failed {
                    self.set_state(id, UnitState::Inactive);
                }
                self.audit(&peer, wall_ms, Some(&unit), None, "reset", None, "ok");
                self.reply(
                    req,
                    Response::ok(if was_failed {
                        format!("{unit}: failed state and restart budget cleared")
                    } else {
                        format!("{unit}: restart budget cleared")
                    }),
                );
            }
            Request::ReloadUnit { unit } => {
                let Some(id) = self.lookup(req, &unit) else {
                    return;
                };
                // The unit, and the units that take their reloads from it
                // (`reload_propagated_from`).
                let mut done = Vec::new();
                for target in std::iter::once(id).chain(self.reload_parts[id.0 as usize].clone()) {
                    let u = &self.units[target.0 as usize];
                    let name = u.spec.name.clone();
                    let (UnitState::Running { .. } | UnitState::Starting { .. }, Some(run)) =
                        (&u.state, u.state.run())
                    else {
                        continue;
                    };
                    if u.spec.reload_exec.is_empty() {
                        let signal = u.spec.reload_signal;
                        self.out.push(Action::Signal { run, signal });
                        done.push(format!("sent {} to {name}", super::signal_name(signal)));
                    } else {
                        let spec = u.spec.clone();
                        self.out.push(Action::ReloadExec { run, spec });
                        done.push(format!(
                            "running {name}'s reload commands (their output and failures are logged as {name}:reload)"
                        ));
                    }
                }
                if done.is_empty() {
                    self.reply(
                        req,
                        Response::err(format!(
                            "{unit} is not running ({}); nothing to reload",
                            self.state_word(id)
                        )),
                    );
                } else {
                    self.audit(&peer, wall_ms, Some(&unit), None, "reload-unit", None, "ok");
                    // A `notify_reload` unit answers when it confirms.
                    let u = &self.units[id.0 as usize];
                    match (u.spec.ready.notify_reload, u.state.run()) {
                        (true, Some(run)) if u.state.has_process() => {
                            let wait = u.spec.ready.timeout.unwrap_or(Duration::from_secs(90));
                            self.wait_for_reload(id, run, req, now, wait, done.join("; "));
                        }
                        _ => self.reply(req, Response::ok(done.join("; "))),
                    }
                }
            }
            Request::Reload => {
                self.reply(
                    req,
                    Response::err("internal: reload must be handled by the driver"),
                );
            }
            Request::MaintenanceOn {
                unit,
                reason,
                holder,
            } => self.maintenance_on(now, req, &peer, wall_ms, unit, reason, holder),
            Request::MaintenanceOff {
                unit,
                holder,
                force,
                dry_run,
            } => self.maintenance_off(now, req, &peer, wall_ms, unit, holder, force, dry_run),
            Request::MaintenanceList => {
                let list = self.lock_list(wall_ms);
                let n = list.len();
                let data = serde_json::to_value(&list).unwrap_or(serde_json::Value::Null);
                self.reply(req, Response::ok_data(format!("{n} lock(s)"), data));
            }
            Request::MaintenanceLog { .. }
            | Request::MaintenanceRecover { .. }
            | Request::Logs { .. }
            | Request::Events { .. } => {
                self.reply(
                    req,
                    Response::err("internal: this request must be handled by the driver"),
                );
            }
            Request::Shed { level } => {
                self.shed = Some(level);
                self.manual_shed_changed(Some(level));
                self.audit(
                    &peer,
                    wall_ms,
                    None,
                    None,
                    &format!("shed {level:?}"),
                    None,
                    "ok",
                );
                let n = self
                    .units
                    .iter()
                    .filter(|u| !u.removed && u.effective().priority <= level)
                    .count();
                self.reply(
                    req,
                    Response::ok(format!(
                        "shedding {n} unit(s) at or below priority {level:?}; `supctl unshed` brings them back"
                    )),
                );
            }
            Request::Reexec => {
                if self.shutdown.is_some() {
                    self.reply(
                        req,
                        Response::err("supd is shutting down; not re-executing"),
                    );
                    return;
                }
                self.audit(&peer, wall_ms, None, None, "reexec", None, "ok");
                self.reply(
                    req,
                    Response::ok(
                        "re-executing supd: services keep running; the new image takes them over",
                    ),
                );
                let h = self.handoff(now);
                self.out.push(Action::Reexec(h));
            }
            Request::Unshed => {
                self.shed = None;
                self.manual_shed_changed(None);
                self.audit(&peer, wall_ms, None, None, "unshed", None, "ok");
                self.reply(req, Response::ok("unshed: shed units may start again"));
            }
            Request::Poweroff | Request::Reboot => {
                let kind = if matches!(request, Request::Poweroff) {
                    ShutdownKind::Poweroff
                } else {
                    ShutdownKind::Reboot
                };
                self.audit(
                    &peer,
                    wall_ms,
                    None,
                    None,
                    &format!("{kind:?}").to_lowercase(),
                    None,
                    "ok",
                );
                if self.shutdown.is_none() {
                    self.shutdown = Some(kind);
                }
                self.reply(
                    req,
                    Response::ok("shutting down: stopping units in reverse dependency order"),
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn maintenance_on(
        &mut self,
        now: Instant,
        req: ReqId,
        peer: &PeerInfo,
        wall_ms: u64,
        unit: String,
        reason: String,
        holder: Option<String>,
    ) {
        let _ = now;
        let Some(id) = self.lookup(req, &unit) else {
            return;
        };
        if reason.trim().is_empty() {
            self.reply(
                req,
                Response::err("a reason is required: --reason \"what you are doing\""),
            );
            return;
        }
        if let Some(why) = self.locks.unknown_reason() {
            let msg = format!(
                "lock state unknown ({why}); resolve it first with `supctl maintenance recover`. {unit} is not started automatically meanwhile unless it is essential"
            );
            self.audit(
                peer,
                wall_ms,
                Some(&unit),
                holder.as_deref(),
                "maintenance-on",
                Some(&reason),
                "refused: lock state unknown",
            );
            self.reply(req, Response::err(msg));
            return;
        }
        let holder = holder.unwrap_or_else(|| peer.name.clone());
        let holders = self.locks.wanted.entry(unit.clone()).or_default();
        match holders.iter_mut().find(|h| h.holder == holder) {
            Some(h) => h.reason = reason.clone(),
            None => holders.push(Holder {
                holder: holder.clone(),
                reason: reason.clone(),
                since_unix_ms: wall_ms,
            }),
        }
        let version = self.locks.bump();
        self.out.push(Action::PersistLocks {
            version,
            locks: self.locks.wanted.clone(),
        });
        self.audit(
            peer,
            wall_ms,
            Some(&unit),
            Some(&holder),
            "maintenance-on",
            Some(&reason),
            "ok",
        );
        let others: Vec<String> = self
            .locks
            .wanted
            .get(&unit)
            .map(|hs| {
                hs.iter()
                    .filter(|h| h.holder != holder)
                    .map(|h| h.holder.clone())
                    .collect()
            })
            .unwrap_or_default();
        let also = if others.is_empty() {
            String::new()
        } else {
            format!(" (also held by {})", others.join(", "))
        };
        self.pending.push(Pending::LockOn {
            req,
            unit: id,
            holder: holder.clone(),
            version,
            message: format!(
                "{unit} is under maintenance, held by {holder}{also}: it is stopped and stays down until every holder releases it (lock on disk)"
            ),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn maintenance_off(
        &mut self,
        now: Instant,
        req: ReqId,
        peer: &PeerInfo,
        wall_ms: u64,
        unit: String,
        holder: Option<String>,
        force: bool,
        dry_run: bool,
    ) {
        if let Some(why) = self.locks.unknown_reason() {
            self.reply(
                req,
                Response::err(format!(
                    "lock state unknown ({why}); resolve it first with `supctl maintenance recover`"
                )),
            );
            return;
        }
        let current: Vec<Holder> = self.locks.wanted.get(&unit).cloned().unwrap_or_default();
        let unwritten: Vec<String> = self
            .locks
            .durable
            .get(&unit)
            .map(|d| {
                d.iter()
                    .filter(|h| !current.iter().any(|c| c.holder == h.holder))
                    .map(|h| h.holder.clone())
                    .collect()
            })
            .unwrap_or_default();
        if current.is_empty() && !unwritten.is_empty() {
            // Released already, but the release is not on disk (a write
            // failed and is being retried): write it again now and answer
            // once it is durable, as for a fresh release.
            if dry_run {
                let then = self.dry_run_release(now, &unit, &[]);
                self.reply(
                    req,
                    Response::ok(format!(
                        "{unit}'s release is not on disk yet (supd retries the write). Once it is: {then}"
                    )),
                );
                return;
            }
            let version = self.locks.bump();
            self.out.push(Action::PersistLocks {
                version,
                locks: self.locks.wanted.clone(),
            });
            let holders = unwritten.join(", ");
            self.audit(
                peer,
                wall_ms,
                Some(&unit),
                Some(&holders),
                "maintenance-off",
                Some("write the pending release again"),
                "ok",
            );
            self.pending.push(Pending::LockWrite {
                req,
                unit: self.by_name.get(&unit).copied(),
                version,
                message: format!("{unit}: lock released by {holders} (on disk)"),
                kind: WriteKind::Release {
                    unit: unit.clone(),
                    holders,
                },
            });
            return;
        }
        if current.is_empty() {
            self.reply(
                req,
                Response::err(format!(
                    "{unit} has no maintenance lock (`supctl maintenance list` shows the locks)"
                )),
            );
            return;
        }
        let explicit = holder.is_some();
        let who = holder.unwrap_or_else(|| peer.name.clone());
        let remove: Vec<String> = if current.iter().any(|h| h.holder == who) {
            vec![who.clone()]
        } else if force && !explicit {
            current.iter().map(|h| h.holder.clone()).collect()
        } else {
            let held: Vec<String> = current
                .iter()
                .map(|h| format!("{} ({})", h.holder, h.reason))
                .collect();
            self.reply(
                req,
                Response::err(format!(
                    "{unit} is not locked by {who}; it is held by {}. Release as that holder with --holder NAME, or use --force to release every holder (audited)",
                    held.join(", ")
                )),
            );
            return;
        };
        let remaining: Vec<Holder> = current
            .iter()
            .filter(|h| !remove.contains(&h.holder))
            .cloned()
            .collect();
        if dry_run {
            let msg = self.dry_run_release(now, &unit, &remaining);
            self.reply(req, Response::ok(msg));
            return;
        }
        if remaining.is_empty() {
            self.locks.wanted.remove(&unit);
        } else {
            self.locks.wanted.insert(unit.clone(), remaining.clone());
        }
        let version = self.locks.bump();
        self.out.push(Action::PersistLocks {
            version,
            locks: self.locks.wanted.clone(),
        });
        let forced = remove.iter().any(|r| *r != peer.name) && force;
        self.audit(
            peer,
            wall_ms,
            Some(&unit),
            Some(&remove.join(",")),
            if forced {
                "maintenance-off-forced"
            } else {
                "maintenance-off"
            },
            None,
            "ok",
        );
        let message = if remaining.is_empty() {
            format!("{unit}: lock released by {} (on disk)", remove.join(", "))
        } else {
            let still: Vec<String> = remaining.iter().map(|h| h.holder.clone()).collect();
            format!(
                "{unit}: {}'s lock released (on disk); still held by {}, so it stays down",
                remove.join(", "),
                still.join(", ")
            )
        };
        self.pending.push(Pending::LockWrite {
            req,
            unit: if remaining.is_empty() {
                self.by_name.get(&unit).copied()
            } else {
                None
            },
            version,
            message,
            kind: WriteKind::Release {
                unit: unit.clone(),
                holders: remove.join(", "),
            },
        });
    }

    /// What a release would start, in order — computed by running a copy of
    /// the engine, so it is exactly what the real release would do.
    fn dry_run_release(&self, now: Instant, unit: &str, remaining: &[Holder]) -> String {
        let mut sim = self.clone();
        sim.out.clear();
        sim.pending.clear();
        if remaining.is_empty() {
            sim.locks.wanted.remove(unit);
            sim.locks.durable.remove(unit);
        } else {
            let still: Vec<String> = remaining.iter().map(|h| h.holder.clone()).collect();
            return format!(
                "dry run: {unit} would stay locked by {}; nothing would start",
                still.join(", ")
            );
        }
        sim.mark_all();
        sim.settle(now);
        // Play the world forward in the copy: every unit it starts becomes
        // ready at once, so the dependents that would follow show too, wave
        // by wave. Bounded: each wave starts at least one unit.
        let mut waves: Vec<Vec<String>> = Vec::new();
        for _ in 0..=sim.units.len() {
            let mut wave = Vec::new();
            let mut answers = Vec::new();
            for a in std::mem::take(&mut sim.out) {
                if let Action::Spawn { run, spec, .. } = a {
                    wave.push(spec.name.clone());
                    answers.push((run, spec));
                }
            }
            if wave.is_empty() {
                break;
            }
            waves.push(wave);
            for (n, (run, spec)) in answers.into_iter().enumerate() {
                // A pid no process has: the copy is never carried out.
                let pid = i32::MAX - n as i32;
                sim.on_event(
                    now,
                    Event::Spawned {
                        run,
                        pid,
                        cgroup: None,
                    },
                );
                if spec.kind == UnitKind::Oneshot {
                    sim.on_event(
                        now,
                        Event::ProcessExited {
                            run,
                            status: ExitStatus::Exited(0),
                        },
                    );
                } else if let Some(&id) = sim.by_name.get(&spec.name) {
                    sim.mark_ready(id, now, spec.ready.kind);
                }
            }
            sim.settle(now);
        }
        let started: Vec<String> = waves.iter().map(|w| w.join(", ")).collect();
        if started.is_empty() {
            let why = sim
                .by_name
                .get(unit)
                .map(|&id| sim.why(id, now))
                .unwrap_or_default();
            format!("dry run: releasing {unit} would start nothing now. {why}")
        } else {
            format!(
                "dry run: releasing {unit} would start, in order (each once the one before is ready): {}",
                started.join("; then ")
            )
        }
    }

    /// Appended to a release answer: will the unit come back?
    pub(super) fn release_outcome(&self, id: UnitId) -> String {
        let u = &self.units[id.0 as usize];
        match &u.state {
            UnitState::Starting { .. } | UnitState::Running { .. } => {
                "; it is starting again (it was wanted up)".to_string()
            }
            _ => {
                let now_blockers = self.why_short(id);
                format!("; it stays down: {now_blockers}")
            }
        }
    }

    fn lock_list(&self, wall_ms: u64) -> Vec<LockInfo> {
        let mut names: Vec<&String> = self
            .locks
            .wanted
            .keys()
            .chain(self.locks.durable.keys())
            .collect();
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            for h in self.locks.holders(name).unwrap_or_default() {
                let durable = self
                    .locks
                    .durable
                    .get(name)
                    .is_some_and(|d| d.iter().any(|x| x.holder == h.holder));
                out.push(LockInfo {
                    unit: name.clone(),
                    defined: self
                        .by_name
                        .get(name)
                        .is_some_and(|id| !self.units[id.0 as usize].removed),
                    durable,
                    release_pending: durable
                        && !self
                            .locks
                            .wanted
                            .get(name)
                            .is_some_and(|w| w.iter().any(|x| x.holder == h.holder)),
                    holder: holder_info(&h, wall_ms),
                });
            }
        }
        out
    }

    pub(super) fn on_reload(
        &mut self,
        req: Option<ReqId>,
        peer: PeerInfo,
        wall_ms: u64,
        result: Result<UnitSet, Vec<String>>,
    ) {
        match result {
            Err(errors) => {
                self.audit(
                    &peer,
                    wall_ms,
                    None,
                    None,
                    "reload",
                    None,
                    "refused: invalid unit files",
                );
                tracing::error!(
                    "reload refused: {} error(s); the running set is unchanged",
                    errors.len()
                );
                if let Some(req) = req {
                    self.reply(
                        req,
                        Response::err(format!(
                            "reload refused, nothing changed:\n{}",
                            errors.join("\n")
                        )),
                    );
                }
            }
            Ok(set) => {
                let before: Vec<String> = self
                    .units
                    .iter()
                    .filter(|u| !u.removed)
                    .map(|u| u.spec.name.clone())
                    .collect();
                let changed: Vec<String> = set
                    .units
                    .iter()
                    .filter(|(n, s)| {
                        self.by_name.get(*n).is_some_and(|id| {
                            let u = &self.units[id.0 as usize];
                            !u.removed && **u.effective() != ***s
                        })
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
                let added: Vec<String> = set
                    .units
                    .keys()
                    .filter(|n| !before.contains(n))
                    .cloned()
                    .collect();
                let removed: Vec<String> = before
                    .iter()
                    .filter(|n| !set.units.contains_key(*n))
                    .cloned()
                    .collect();
                self.install(set);
                // The whole directory is valid now: nothing is left out.
                self.skipped = Default::default();
                self.audit(&peer, wall_ms, None, None, "reload", None, "ok");
                if let Some(req) = req {
                    self.reply(
                        req,
                        Response::ok(format!(
                            "reloaded: {} added{}, {} removed{}, {} changed{} (changes take effect at the next start)",
                            added.len(),
                            list(&added),
                            removed.len(),
                            list(&removed),
                            changed.len(),
                            list(&changed)
                        )),
                    );
                }
            }
        }
    }

    pub(super) fn on_recover(
        &mut self,
        req: ReqId,
        peer: PeerInfo,
        wall_ms: u64,
        result: Result<LockMap, String>,
        source: String,
    ) {
        let map = match result {
            Ok(m) => m,
            Err(e) => {
                self.audit(
                    &peer,
                    wall_ms,
                    None,
                    None,
                    "maintenance-recover",
                    Some(&source),
                    "refused",
                );
                self.reply(req, Response::err(format!("recover refused: {e}")));
                return;
            }
        };
        if self.locks.state == LockState::Known {
            self.reply(
                req,
                Response::err(
                    "the lock state is known; nothing to recover (`supctl maintenance list`)",
                ),
            );
            return;
        }
        let n: usize = map.values().map(Vec::len).sum();
        // Locks taken meanwhile are kept (a lock is never dropped silently).
        for (unit, hs) in map {
            let w = self.locks.wanted.entry(unit).or_default();
            for h in hs {
                if !w.iter().any(|x| x.holder == h.holder) {
                    w.push(h);
                }
            }
        }
        let version = self.locks.bump();
        self.locks.recovering = Some(version);
        self.out.push(Action::PersistLocks {
            version,
            locks: self.locks.wanted.clone(),
        });
        self.audit(
            &peer,
            wall_ms,
            None,
            None,
            "maintenance-recover",
            Some(&source),
            "ok",
        );
        self.pending.push(Pending::LockWrite {
            req,
            unit: None,
            version,
            message: format!(
                "lock state recovered from {source}: {n} lock(s) adopted and written; automatic starts resume"
            ),
            kind: WriteKind::Recover,
        });
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    }
}

pub(super) fn holder_info(h: &Holder, wall_ms: u64) -> HolderInfo {
    HolderInfo {
        holder: h.holder.clone(),
        reason: h.reason.clone(),
        since: rfc3339(h.since_unix_ms),
        age_secs: wall_ms.saturating_sub(h.since_unix_ms) / 1000,
    }
}

/// RFC 3339 (UTC, seconds) of a Unix time in milliseconds. Pure formatting.
pub fn rfc3339(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_seconds(t).to_string()
}
