//! Request dispatch: operator commands, reloads and sd_notify datagrams
//! turned into engine events.
//!
//! Owns: pairing each control request with its reply channel (`ReqId`),
//! the few requests answered without the engine (the audit log), handing
//! reloads and recovery files to the reading thread, and deciding
//! which run an sd_notify datagram speaks for.
//!
//! Must never: decide anything about units (the engine answers every
//! command that changes state); answer a lock change itself (the engine
//! replies only once the change is durable); accept a notify message from
//! a process outside the unit's process group.

use super::disk::DiskJob;
use super::reader::ReadJob;
use super::{Driver, supd_peer, wall_ms};
use crate::engine::locks::LockMap;
use crate::engine::{Event, PeerInfo, ReqId, ShutdownKind};
use crate::protocol::{Request, Response};
use crate::world::control::ControlRequest;
use crate::world::{mainpid, notify};

impl Driver {
    pub(super) fn notified(&mut self, r: notify::Received) {
        // A unit's processes are its cgroup's members (a daemon that left
        // the process group included), else its process group.
        let run = self
            .groups
            .run_of_pid(r.pid)
            .or_else(|| self.procs.run_of_member(r.pid));
        let Some(run) = run else {
            self.notify_rejects
                .rejected(std::time::Instant::now(), r.pid);
            return;
        };
        let mut msg = r.msg;
        let mut events = Vec::new();
        if let Some(p) = msg.main_pid.take()
            && self.procs.main_pid(run) != Some(p)
        {
            // Accepted only for a live process of the same unit: a stale
            // or hostile MAINPID= must not make supd signal a stranger.
            let group = self.groups.dir_of(run);
            let leader = self.procs.main_pid(run);
            let ok = match (&group, leader) {
                (None, Some(l)) if notify::belongs_to(p, l) => Ok(()),
                _ => mainpid::check(p, group.as_deref()),
            };
            match ok {
                Ok(()) => {
                    self.set_main_pid(run, p);
                    events.push(Event::MainPid { run, result: Ok(p) });
                }
                Err(e) => tracing::warn!("ignoring MAINPID={p} from pid {}: {e}", r.pid),
            }
        }
        events.push(Event::Notified { run, msg });
        self.feed_many(events);
    }

    /// SIGHUP (no request) or `supctl reload`: the units directory is read
    /// on the reading thread; `Reloaded` comes back from there.
    pub(super) fn reload(&mut self, req: Option<ReqId>, peer: PeerInfo) {
        self.trim_pending = true;
        self.read(ReadJob::Units {
            req,
            peer,
            wall_ms: wall_ms(),
            dir: self.settings.units_dir.clone(),
        });
    }

    fn read(&mut self, job: ReadJob) {
        if let Err(e) = self.read_tx.send(job) {
            self.feed(e.0.failed("internal: supd's reading thread is gone; restart supd"));
        }
    }

    pub(super) fn reload_on_hup(&mut self) {
        tracing::info!("SIGHUP: reloading unit files");
        self.reload(None, supd_peer());
    }

    pub(super) fn control(&mut self, c: ControlRequest) {
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
            Request::MaintenanceLog { limit } => self.audit_log(id, limit),
            Request::Reexec if super::reexec::check_exe(&self.exe).is_err() => {
                let why = super::reexec::check_exe(&self.exe)
                    .err()
                    .unwrap_or_default();
                if let Some(tx) = self.replies.remove(&id) {
                    let _ = tx.send(Response::err(format!("{why}; supd keeps running")));
                }
            }
            Request::MaintenanceRecover { from, accept_empty } => {
                let (result, source) = match (from, accept_empty) {
                    (Some(path), false) => {
                        // Read off the loop; `Recover` comes back from there.
                        self.read(ReadJob::Recover {
                            req: id,
                            peer,
                            wall_ms: wall_ms(),
                            path: path.into(),
                        });
                        return;
                    }
                    (None, true) => (Ok(LockMap::new()), "an empty lock state".to_string()),
                    _ => (
                        Err("give exactly one of --from FILE or --accept-empty".to_string()),
                        String::new(),
                    ),
                };
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

    /// `supctl maintenance log`: the audit log's tail, answered here (it
    /// changes nothing).
    /// Read by the disk thread (never on the loop: the log can be large),
    /// after every record queued before this request; answered by a task.
    fn audit_log(&mut self, id: ReqId, limit: Option<usize>) {
        let limit = limit.unwrap_or(50).min(10_000);
        let Some(tx) = self.replies.remove(&id) else {
            return;
        };
        let (rtx, rrx) = tokio::sync::oneshot::channel();
        if self
            .disk_tx
            .send(DiskJob::ReadAudit { limit, reply: rtx })
            .is_err()
        {
            let _ = tx.send(Response::err("the persistence thread is gone"));
            return;
        }
        let dir = self.settings.state_dir.clone();
        tokio::spawn(async move {
            let resp = match rrx.await {
                Ok(Ok(recs)) => {
                    let n = recs.len();
                    Response::ok_data(
                        format!("{n} record(s)"),
                        serde_json::to_value(&recs).unwrap_or_default(),
                    )
                }
                Ok(Err(e)) => {
                    Response::err(format!("reading the audit log in {}: {e}", dir.display()))
                }
                Err(_) => Response::err("the persistence thread is gone"),
            };
            let _ = tx.send(resp);
        });
    }
}
