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
use crate::protocol::{EventBody, EventRecord, StreamItem};
use crate::protocol::{Request, Response};
use crate::world::control::ControlRequest;
use crate::world::logstore::{Limits, LogQuery, rfc3339_us, wall_us};
use crate::world::notify;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::world::http::{Scrape, ScrapeRequest};

impl Driver {
    pub(super) fn notified(&mut self, r: notify::Received) {
        // A unit's processes are its cgroup's members (a daemon that left
        // the process group included), else its process group.
        // The sender's cgroup as recorded when the datagram was received
        // first: a `systemd-notify --no-block` may be gone by now.
        let run = r
            .cgroup
            .as_deref()
            .and_then(|c| self.groups.run_of_cgroup_path(c))
            .or_else(|| self.groups.run_of_pid(r.pid))
            .or_else(|| self.procs.run_of_member(r.pid))
            .or_else(|| self.procs.run_of_departed_sender(r.pid, r.uid));
        let Some(run) = run else {
            self.notify_rejects
                .rejected(std::time::Instant::now(), r.pid);
            return;
        };
        let mut events = Vec::new();
        if let Some(pid) = r.msg.main_pid {
            match self.adopt_main(run, pid) {
                Ok(ev) => events.extend(ev),
                Err(why) => tracing::warn!("ignoring MAINPID={pid} from pid {}: {why}", r.pid),
            }
        }
        events.push(Event::Notified { run, msg: r.msg });
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
        let cmd = serde_json::to_value(&c.req)
            .ok()
            .and_then(|v| v.get("cmd")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "?".into());
        *self.control_requests.entry(cmd).or_insert(0) += 1;
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
        if let Request::Events { units } = req {
            match stream {
                Some(stream) => self.subscribe(units, reply, stream),
                None => {
                    let _ = reply.send(Response::err("internal: events without a stream"));
                }
            }
            return;
        }
        // A read of the settled state: answered here, with no event (and
        // no settling pass) behind it; the connection's task writes it out.
        if let Request::Status { unit } = &req {
            let now = std::time::Instant::now();
            let answer = match self.engine.status_query(unit.as_deref(), now, wall_ms()) {
                Ok(report) => Response::ok_status(report),
                Err(msg) => Response::err(msg),
            };
            let _ = reply.send(answer);
            return;
        }
        let id = ReqId(self.next_req);
        self.next_req += 1;
        self.replies.insert(id, reply);
        match req {
            Request::Reload => self.reload(Some(id), peer),
            Request::Enable { ref unit } | Request::Disable { ref unit } => {
                let unit = unit.clone();
                if self.engine.unit_id(&unit).is_none() {
                    if let Some(tx) = self.replies.remove(&id) {
                        let _ = tx.send(Response::err(format!(
                            "no unit named {unit} (`supctl status` lists them)"
                        )));
                    }
                    return;
                }
                if matches!(req, Request::Enable { .. }) {
                    self.disabled.remove(&unit);
                } else {
                    self.disabled.insert(unit);
                }
                let names = self.disabled.clone();
                // Durable first (off the loop), then the engine answers.
                let job = super::disk::DiskJob::WriteDisabled {
                    names: names.into_iter().collect(),
                    req: id,
                    peer,
                    wall_ms: wall_ms(),
                    request: req,
                };
                if self.disk_tx.send(job).is_err()
                    && let Some(tx) = self.replies.remove(&id)
                {
                    let _ = tx.send(Response::err("the persistence thread is gone"));
                }
            }
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

    /// Carry out `Action::Publish`: a line in the unit's log, and the event
    /// to every subscriber (never waiting for one).
    pub(super) fn publish(&mut self, body: EventBody) {
        if let Some(name) = body.unit()
            && let Some(id) = self.engine.unit_id(name)
        {
            let spec = &self.engine.unit(id).spec;
            let limits = Limits::of(spec, self.settings.log);
            self.logs.note(&Arc::from(name), limits, &body.describe());
        }
        if self.events.receiver_count() == 0 {
            return;
        }
        let us = wall_us();
        let _ = self.events.send(Arc::new(EventRecord {
            time: rfc3339_us(us),
            time_unix_us: us,
            body,
        }));
    }

    /// `supctl events`: a task forwarding published events to one client.
    fn subscribe(
        &mut self,
        units: Vec<String>,
        reply: tokio::sync::oneshot::Sender<Response>,
        tx: tokio::sync::mpsc::Sender<String>,
    ) {
        let unknown: Vec<&String> = units
            .iter()
            .filter(|u| self.engine.unit_id(u).is_none())
            .collect();
        if !unknown.is_empty() {
            let _ = reply.send(Response::err(format!(
                "no unit named {} (`supctl status` lists them)",
                unknown
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
            return;
        }
        let rx = self.events.subscribe();
        let _ = reply.send(Response::ok(""));
        tokio::spawn(forward_events(rx, units, tx));
    }

    /// A snapshot for /metrics, /healthz, /readyz.
    pub(super) fn scrape(&mut self, req: ScrapeRequest) {
        let engine = if self.engine_broken.is_some() {
            None
        } else {
            let e = &self.engine;
            let now = std::time::Instant::now();
            let wall = wall_ms();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.metrics(now, wall))).ok()
        };
        let stats = self.logs.stats();
        let _ = req.reply.send(Scrape {
            engine,
            orphans_reaped: self.procs.orphans_reaped,
            control_requests: self
                .control_requests
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            log_lines_written: stats.lines_written.load(Ordering::Relaxed),
            log_lines_dropped: stats.lines_dropped.load(Ordering::Relaxed),
            log_write_errors: stats.write_errors.load(Ordering::Relaxed),
        });
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

/// One `supctl events` subscriber: take an event from the broadcast only
/// when the client's queue has room, so a slow client leaves events in the
/// (bounded) broadcast; once it falls more than that behind, the next
/// take reports the lag and the client gets a notice, in order after what
/// it was sent, and is dropped. Nothing here ever makes the loop wait.
async fn forward_events(
    mut rx: tokio::sync::broadcast::Receiver<Arc<EventRecord>>,
    units: Vec<String>,
    tx: tokio::sync::mpsc::Sender<String>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let permit = tokio::select! {
            p = tx.reserve() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = tx.closed() => return,
        };
        let line = loop {
            let ev = tokio::select! {
                e = rx.recv() => e,
                _ = tx.closed() => return,
            };
            match ev {
                Ok(e) => {
                    if !units.is_empty()
                        && e.body.unit().is_some_and(|u| !units.iter().any(|x| x == u))
                    {
                        continue;
                    }
                    break serde_json::to_string(&StreamItem::Event((*e).clone()))
                        .unwrap_or_default();
                }
                Err(RecvError::Lagged(n)) => {
                    let msg = StreamItem::Notice {
                        message: format!(
                            "dropped: this reader fell {n} events behind; reconnect (and read faster)"
                        ),
                    };
                    permit.send(serde_json::to_string(&msg).unwrap_or_default());
                    return;
                }
                Err(RecvError::Closed) => return,
            }
        };
        permit.send(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_subscriber_that_falls_behind_gets_a_notice_last_and_is_dropped() {
        let (btx, brx) = tokio::sync::broadcast::channel(8);
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let task = tokio::spawn(forward_events(brx, vec![], tx));
        let ev = |i: u64| {
            Arc::new(EventRecord {
                time: "t".into(),
                time_unix_us: i,
                body: EventBody::LockState {
                    ok: true,
                    problem: None,
                },
            })
        };
        // Nobody reads: 4 go to the client's queue, 8 wait in the
        // broadcast, the rest overflow it.
        for i in 0..30 {
            let _ = btx.send(ev(i));
            tokio::task::yield_now().await;
        }
        let mut got = Vec::new();
        while let Some(l) = rx.recv().await {
            got.push(l);
        }
        task.await.unwrap();
        let last = got.last().unwrap();
        assert!(
            last.contains("\"notice\"") && last.contains("dropped"),
            "{got:?}"
        );
        assert!(got[..got.len() - 1].iter().all(|l| l.contains("\"event\"")));
        // Events before the notice are in order.
        let times: Vec<u64> = got[..got.len() - 1]
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["time_unix_us"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    }
}
