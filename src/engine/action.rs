//! Actions: commands from the engine to the driver, in the imperative.
//!
//! Owns: the `Action` enum. Must never: carry decisions the driver would have
//! to re-make — the driver executes; the one exception is the spawner's
//! last-moment mount re-check, a deliberate second guard (invariant 1).

use std::sync::Arc;

use crate::engine::locks::LockMap;
use crate::protocol::Response;
use crate::unit::{MountReq, ProbeTarget, UnitSpec};

use super::RunId;
use super::event::{ReqId, ShutdownKind};

/// One audit-log entry (who, what, when) for a change made over the socket.
/// The same record is what `world::audit` appends as one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// Wall-clock time, milliseconds since the Unix epoch.
    #[serde(rename = "time_unix_ms")]
    pub wall_ms: u64,
    pub peer_uid: Option<u32>,
    pub peer_pid: Option<i32>,
    pub holder: Option<String>,
    pub unit: Option<String>,
    pub action: String,
    pub reason: Option<String>,
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the unit's process. The spawner re-reads the mount table first
    /// and refuses (SpawnFailed with `mount`) if any of `mounts` fails.
    Spawn {
        run: RunId,
        spec: Arc<UnitSpec>,
        mounts: Vec<MountReq>,
    },
    /// Signal every process of `run`: its cgroup's members, or (not
    /// contained) its process group if the main process is unreaped.
    Signal {
        run: RunId,
        signal: i32,
    },
    /// Signal only the main process of `run`, if it is still unreaped
    /// (`kill_mode = "main"` / `"mixed"`).
    SignalMain {
        run: RunId,
        signal: i32,
    },
    /// `supctl reexec`: replace supd's image, handing this over (the
    /// reply was sent just before).
    Reexec(super::Handoff),
    /// An adopted run (`Event::Adopted`): from now on `run` is the
    /// processes in `unit`'s cgroup, its main process `pid` (if known).
    Track {
        run: RunId,
        unit: String,
        pid: Option<i32>,
        /// The run lives in the unit's cgroup.
        contained: bool,
    },
    /// SIGKILL every process of `run`: `cgroup.kill` on its group (no fork
    /// can race it), else SIGKILL to its process group.
    KillGroup {
        run: RunId,
    },
    /// Run the unit's `[stop] exec` command to stop `run`.
    StopExec {
        run: RunId,
        spec: Arc<UnitSpec>,
    },
    /// Write the full lock map durably, then report `LocksPersisted{version}`.
    PersistLocks {
        version: u64,
        locks: LockMap,
    },
    Reply {
        req: ReqId,
        response: Response,
    },
    Audit(AuditEntry),
    /// Start one health probe for `run`; answer with `ProbeAnswered`.
    StartProbe {
        run: RunId,
        kind: super::event::ProbeKind,
        spec: Arc<UnitSpec>,
        target: ProbeTarget,
        timeout: std::time::Duration,
    },
    /// Abandon every running probe of the run (it ended or is stopping).
    CancelProbe {
        run: RunId,
    },
    /// `supctl reload-unit` for a unit with `reload_exec`: run its reload
    /// commands in order (with `$MAINPID`).
    ReloadExec {
        run: RunId,
        spec: Arc<UnitSpec>,
    },
    /// Every unit is down: finish the shutdown (kill the rest, sync, exit or
    /// reboot).
    ShutdownComplete(ShutdownKind),
    /// Tell subscribers (`supctl events`) and the unit's log what changed.
    /// Nothing depends on it being delivered.
    Publish(crate::protocol::EventBody),
}
