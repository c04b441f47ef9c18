//! Request dispatch: operator commands, reloads and sd_notify datagrams
//! turned into engine events.
//!
//! Owns: pairing each control request with its reply channel (`ReqId`),
//! the few requests answered without the engine (the audit log, reading a
//! recovery file), re-reading the units directory on reload, and deciding
//! which run an sd_notify datagram speaks for.
//!
//! Must never: decide anything about units (the engine answers every
//! command that changes state); answer a lock change itself (the engine
//! replies only once the change is durable); accept a notify message from
//! a process outside the unit's process group.

use super::{Driver, supd_peer, wall_ms};
use crate::engine::locks::LockMap;
use crate::engine::{Event, PeerInfo, ReqId, ShutdownKind};
use crate::protocol::{Request, Response};
use crate::world::audit;
use crate::world::control::ControlRequest;
use crate::world::lock_store::LockStore;
use crate::world::logstore::LogQuery;
use crate::world::notify;

impl Driver {
    pub(super) fn notified(&mut self, r: notify::Received) {
        match self.procs.run_of_member(r.pid) {
            Some(run) => self.feed(Event::Notified { run, msg: r.msg }),
            None => tracing::warn!(
                "ignoring sd_notify message from pid {}: not a process of any unit",
                r.pid
            ),
        }
    }

    /// SIGHUP (no request) or `supctl reload`.
    pub(super) fn reload(&mut self, req: Option<ReqId>, peer: PeerInfo) {
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

    pub(super) fn reload_on_hup(&mut self) {
        tracing::info!("SIGHUP: reloading unit files");
        self.reload(None, supd_peer());
    }

    pub(super) fn control(&mut self, c: ControlRequest) {
        // Answers touch cold code (serialisation, formatting): give it back
        // once the operator is done.
        self.trim_pending = true;
        let ControlRequest {
            peer,
            req,
            reply,
            stream,
        } = c;
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
        // Reading logs touches only the log store (off this thread).
        if let Request::Logs {
            units,
            lines,
            since_unix_us,
            follow,
        } = req
        {
            let Some(stream) = stream else {
                let _ = reply.send(Response::err("internal: logs without a stream"));
                return;
            };
            let known = self
                .engine
                .units()
                .filter(|(_, u)| !u.removed)
                .map(|(_, u)| u.spec.name.clone())
                .collect();
            let q = LogQuery {
                units,
                lines,
                since_us: since_unix_us,
                follow,
            };
            self.logs.serve(q, known, reply, stream);
            return;
        }
        let id = ReqId(self.next_req);
        self.next_req += 1;
        self.replies.insert(id, reply);
        match req {
            Request::Reload => self.reload(Some(id), peer),
            Request::MaintenanceLog { limit } => self.audit_log(id, limit),
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
    fn audit_log(&mut self, id: ReqId, limit: Option<usize>) {
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
}
