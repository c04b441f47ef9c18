//! The control-socket protocol shared by `supd` and `supctl`.
//!
//! Owns: the wire types. One request per line (JSON), one response per line.
//! Every request carries `"v": 1`; a supd that sees another version answers
//! with an error rather than guessing. Must never: do I/O, or change the
//! meaning of an existing field (add fields instead; unknown fields in
//! responses are ignored by supctl).

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A word of an event that is nearly always one of a fixed few (a state
/// word, a probe's kind, a status detail): the engine publishes the
/// `'static` one without allocating; a parsed event owns its copy. The JSON
/// is a plain string either way.
pub type Word = Cow<'static, str>;

/// Every unit's name, in one string, shared by the events that name a unit
/// (`UnitName`). Immutable once shared: the engine makes a new table when
/// its unit set changes, and an event keeps the table it was made with.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NameTable {
    names: String,
    /// Name `i` is `names[at[i]..at[i + 1]]`.
    at: Vec<u32>,
}

impl NameTable {
    pub fn push(&mut self, name: &str) {
        if self.at.is_empty() {
            self.at.push(0);
        }
        self.names.push_str(name);
        self.at.push(self.names.len() as u32);
    }

    /// Name `i` (empty for an index out of range).
    pub fn get(&self, i: u32) -> &str {
        let i = i as usize;
        match (self.at.get(i), self.at.get(i + 1)) {
            (Some(&a), Some(&b)) => self.names.get(a as usize..b as usize).unwrap_or(""),
            _ => "",
        }
    }
}

/// A unit's name in an event. The engine's are an index into its
/// `NameTable`, shared: publishing a change copies a pointer and bumps one
/// reference count that every event shares (a line always in cache), and
/// reads nothing of the unit's name — at ten thousand units the copy it
/// replaces (`to_string`) was a cold read of the name's bytes, an allocation
/// and a free on every published change. The JSON is a plain string; a
/// parsed one owns its text.
#[derive(Clone)]
pub struct UnitName(NameRepr);

#[derive(Clone)]
enum NameRepr {
    Table(Arc<NameTable>, u32),
    Owned(Arc<str>),
}

impl UnitName {
    /// Name `i` of `table`.
    pub fn in_table(table: &Arc<NameTable>, i: u32) -> UnitName {
        UnitName(NameRepr::Table(Arc::clone(table), i))
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            NameRepr::Table(t, i) => t.get(*i),
            NameRepr::Owned(s) => s,
        }
    }
}

impl std::ops::Deref for UnitName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for UnitName {
    fn from(s: &str) -> UnitName {
        UnitName(NameRepr::Owned(Arc::from(s)))
    }
}

impl From<String> for UnitName {
    fn from(s: String) -> UnitName {
        UnitName(NameRepr::Owned(Arc::from(s)))
    }
}

impl PartialEq for UnitName {
    fn eq(&self, other: &UnitName) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for UnitName {}

impl PartialEq<str> for UnitName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for UnitName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Debug for UnitName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for UnitName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for UnitName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for UnitName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UnitName, D::Error> {
        Ok(UnitName::from(String::deserialize(d)?))
    }
}

/// Protocol version spoken by this build.
pub const VERSION: u32 = 1;
/// Largest request line supd accepts, in bytes (including the newline).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A request line: `{"v":1,"cmd":"status","unit":null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    #[serde(flatten)]
    pub req: Request,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status {
        #[serde(default)]
        unit: Option<String>,
    },
    Start {
        unit: String,
    },
    Stop {
        unit: String,
    },
    Restart {
        unit: String,
    },
    /// Clear `failed` and the restart budget.
    Reset {
        unit: String,
    },
    Why {
        unit: String,
    },
    /// Ask a running unit to reload its configuration (its `reload_signal`).
    ReloadUnit {
        unit: String,
    },
    Reload,
    /// Start the unit at boot (the default), durably.
    Enable {
        unit: String,
    },
    /// Do not start the unit at boot (unless an enabled unit requires or
    /// wants it), durably; it keeps running now.
    Disable {
        unit: String,
    },
    MaintenanceOn {
        unit: String,
        reason: String,
        /// Defaults to the peer's user name.
        #[serde(default)]
        holder: Option<String>,
    },
    MaintenanceOff {
        unit: String,
        #[serde(default)]
        holder: Option<String>,
        /// Release another holder's lock (audited).
        #[serde(default)]
        force: bool,
        /// Say what would happen, change nothing.
        #[serde(default)]
        dry_run: bool,
    },
    MaintenanceList,
    MaintenanceLog {
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Leave fail-closed mode: adopt the locks in `from` (a lock file, possibly
    /// a kept-aside one) or, with `accept_empty`, start from no locks.
    MaintenanceRecover {
        #[serde(default)]
        from: Option<String>,
        #[serde(default)]
        accept_empty: bool,
    },
    /// Stop units at or below a priority and keep them down until `unshed`.
    Shed {
        level: crate::unit::Priority,
    },
    Unshed,
    Poweroff,
    Reboot,
    /// Replace supd's binary in place (execve), handing its state to the
    /// new image; services keep running, unrestarted.
    Reexec,
    /// Per-unit output: the last `lines` records (oldest first) of `units`
    /// (every unit with a log when empty), interleaved by time; with
    /// `follow`, then every new record until the client goes away. Answered
    /// with one `Response`, then `StreamItem` lines.
    Logs {
        #[serde(default)]
        units: Vec<String>,
        /// None: everything (after `since_unix_us`, else the default 10).
        #[serde(default)]
        lines: Option<u64>,
        /// Only records at or after this wall time (µs since the epoch).
        #[serde(default)]
        since_unix_us: Option<u64>,
        #[serde(default)]
        follow: bool,
    },
    /// State, lock, mount and probe changes as they happen, until the
    /// client goes away; only those of `units` (and supd-wide ones: mounts,
    /// lock state) when not empty. Answered with one `Response`, then
    /// `StreamItem::Event` lines.
    Events {
        #[serde(default)]
        units: Vec<String>,
    },
    /// The recorded timeline of every unit (`supctl analyze`): what it
    /// waited on, when it was spawned, when it became ready.
    Analyze,
    /// The dependency graph (`supctl graph`): requires/wants/after, mounts
    /// and maintenance locks.
    Graph,
}

impl Request {
    /// Requests answered with a `Response` followed by `StreamItem` lines
    /// (until the stream ends or the client goes away).
    pub fn streams(&self) -> bool {
        matches!(self, Request::Logs { .. } | Request::Events { .. })
    }

    /// Does this request change anything? Read-only requests are allowed to
    /// every peer that can connect; changes need root or supd's own user.
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Request::Status { .. }
                | Request::Why { .. }
                | Request::Analyze
                | Request::Graph
                | Request::MaintenanceList
                | Request::MaintenanceLog { .. }
                | Request::MaintenanceOff { dry_run: true, .. }
                | Request::Logs { .. }
                | Request::Events { .. }
        )
    }
}

/// Pure: the bytes of one request line (with its newline), as supctl sends it.
pub fn encode_request(req: &Request) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Envelope {
        v: VERSION,
        req: req.clone(),
    })
    .unwrap_or_default();
    line.push(b'\n');
    line
}

/// Pure: one request line as supd reads it (the size cap is the reader's).
/// `Err` is the whole answer for the client: what was wrong and what shape
/// was expected. A wrong version gets its own message so an old supctl
/// knows to upgrade.
pub fn decode_request(bytes: &[u8]) -> Result<Request, String> {
    match serde_json::from_slice::<Envelope>(bytes) {
        Ok(env) if env.v == VERSION => Ok(env.req),
        Ok(env) => Err(format!(
            "unsupported protocol version {} (this supd speaks v{VERSION})",
            env.v
        )),
        Err(e) => Err(match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) if v.get("v").and_then(|x| x.as_u64()) != Some(VERSION as u64) => format!(
                "unsupported protocol version {} (this supd speaks v{VERSION}); use a matching supctl",
                v.get("v")
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "missing".into())
            ),
            _ => format!(
                "invalid request ({e}); expected one JSON line like {{\"v\":{VERSION},\"cmd\":\"status\"}}"
            ),
        }),
    }
}

/// A response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    /// Human-readable outcome (success text or the error, with what to do).
    #[serde(default)]
    pub message: String,
    /// Structured payload (status list, lock list...), command-specific.
    #[serde(default)]
    pub data: serde_json::Value,
    /// Not on the wire as such: a `status` answer that goes out as `data`,
    /// written to the socket unit by unit (`world::control`) rather than
    /// built first as one value and one string (10,000 units: megabytes).
    #[serde(skip)]
    pub status: Option<std::sync::Arc<StatusReport>>,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Response {
        Response {
            v: VERSION,
            ok: true,
            message: message.into(),
            data: serde_json::Value::Null,
            status: None,
        }
    }

    pub fn ok_data(message: impl Into<String>, data: serde_json::Value) -> Response {
        Response {
            v: VERSION,
            ok: true,
            message: message.into(),
            data,
            status: None,
        }
    }

    /// `status`, streamed (see `status`).
    pub fn ok_status(report: StatusReport) -> Response {
        Response {
            status: Some(std::sync::Arc::new(report)),
            ..Response::ok("")
        }
    }

    pub fn err(message: impl Into<String>) -> Response {
        Response {
            v: VERSION,
            ok: false,
            message: message.into(),
            data: serde_json::Value::Null,
            status: None,
        }
    }
}

/// One maintenance lock holder, as shown by `status` and `maintenance list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    pub holder: String,
    pub reason: String,
    /// RFC 3339, UTC.
    pub since: String,
    /// Seconds the lock has been held (wall clock at the time of the answer).
    #[serde(default)]
    pub age_secs: u64,
}

/// A lock as listed by `maintenance list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub unit: String,
    /// Whether a unit of that name is currently defined.
    pub defined: bool,
    /// Whether the lock is on disk yet.
    pub durable: bool,
    /// Released, but the release is not on disk yet (its write failed and
    /// is being retried): the unit stays held until it is.
    #[serde(default)]
    pub release_pending: bool,
    #[serde(flatten)]
    pub holder: HolderInfo,
}

/// One unit in `status --json`.
fn enabled_default() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitStatus {
    pub name: String,
    /// inactive | waiting | starting | running | stopping | backoff | failed |
    /// done | exited
    pub state: String,
    pub pid: Option<i32>,
    /// null when unlocked, else every holder.
    pub maintenance: Option<Vec<HolderInfo>>,
    pub ready: bool,
    #[serde(default)]
    pub description: Option<String>,
    /// Human words for the state's detail: why failed, what it waits on...
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub next_restart_in_ms: Option<u64>,
    /// Operator intent: "up" or "down".
    #[serde(default)]
    pub want: String,
    #[serde(default)]
    pub essential: bool,
    /// Starts at boot (`supctl enable`/`disable`).
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    #[serde(default)]
    pub health: Option<HealthStatus>,
    /// Last `STATUS=` text from sd_notify.
    #[serde(default)]
    pub status_text: Option<String>,
    /// How its last process ended, in words ("exited with code 3").
    #[serde(default)]
    pub last_exit: Option<String>,
    /// How the unit's processes are held together: "cgroup" or
    /// "process-group" (null before its first run).
    #[serde(default)]
    pub containment: Option<String>,
    /// Its cgroup (path in the cgroup v2 hierarchy), when contained.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Processes of it the kernel's OOM killer killed (since supd started).
    #[serde(default)]
    pub oom_kills: u64,
    /// RFC 3339: when the state (or readiness) last changed.
    #[serde(default)]
    pub since: Option<String>,
    /// Seconds its current process has been running (null without one).
    #[serde(default)]
    pub uptime_secs: Option<u64>,
    /// RFC 3339: when its current (or last) process was started.
    #[serde(default)]
    pub started: Option<String>,
    /// The last exit's code, or its signal name, and when (RFC 3339).
    #[serde(default)]
    pub last_exit_code: Option<i32>,
    #[serde(default)]
    pub last_exit_signal: Option<String>,
    #[serde(default)]
    pub last_exit_at: Option<String>,
    /// The most recent failure in words — the spawn or exec error, the
    /// failing probe's output, "ready timeout..." — and when.
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_error_at: Option<String>,
    /// Liveness-probe failures since supd started (all runs).
    #[serde(default)]
    pub health_failures: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// "unknown" | "passing" | "failing"
    pub last: String,
    pub consecutive_failures: u32,
    #[serde(default)]
    pub last_output: Option<String>,
}

/// The whole `status` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub units: Vec<UnitStatus>,
    /// null when the lock state is known; else why supd is fail-closed.
    pub lock_state_problem: Option<String>,
    /// null unless the last lock-state write failed: why, and which locks
    /// are not on disk yet (supd retries the write).
    #[serde(default)]
    pub lock_write_problem: Option<String>,
    /// Unit files left out at boot (as PID 1 supd starts the valid part of
    /// a bad units directory) and why; empty once a reload succeeds.
    #[serde(default)]
    pub unit_file_problems: Vec<String>,
    /// null when the mount table is readable; else why it is not (every
    /// required mount then counts as missing).
    #[serde(default)]
    pub mount_table_problem: Option<String>,
    #[serde(default)]
    pub shed_level: Option<crate::unit::Priority>,
    /// What pressure-aware shedding (`[shed]`) sheds now: null when
    /// nothing, "optional" or "optional+sheddable".
    #[serde(default)]
    pub pressure_shed: Option<String>,
    #[serde(default)]
    pub shutting_down: bool,
    /// supd's containment: its cgroup subtree, or why it has only
    /// process groups.
    #[serde(default)]
    pub containment: Option<String>,
}

/// The `analyze` payload: every unit's recorded cycles. Times are
/// milliseconds since supd's first event (its start), on the monotonic
/// clock, so a clock step during boot does not bend the picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineReport {
    /// Wall-clock time of the origin, milliseconds since the Unix epoch.
    pub origin_unix_ms: u64,
    /// When this answer was made: segments still open end here.
    pub now_ms: u64,
    pub max_parallel_starts: u32,
    pub units: Vec<UnitTimeline>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitTimeline {
    pub name: String,
    /// As in `status`.
    pub state: String,
    /// "longrun" or "oneshot".
    pub kind: String,
    /// The unit's first cycle since supd started: from startable through
    /// its waits to ready (or to failed), and on until the next change.
    #[serde(default)]
    pub boot: Option<RunRecord>,
    /// The latest cycle, once the boot cycle has ended (after a crash, a
    /// stop and start, a dependency that went away...).
    #[serde(default)]
    pub current: Option<RunRecord>,
}

/// One cycle of one unit, as consecutive phases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// When the unit became startable.
    pub start_ms: u64,
    /// Older phases dropped to bound memory (the latest are kept).
    #[serde(default)]
    pub dropped: u32,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub phase: Phase,
    /// For `waiting`: on what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitKind>,
    /// The cause in words ("/srv/pg is not a mount point...", "held by
    /// alice (resize)", "exited with code 1").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// The unit waited for (`dependency`, `ordering`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The mount point waited for (`mount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub start_ms: u64,
    /// null while the phase lasts (it ends at `now_ms`).
    pub end_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Waiting,
    /// Spawned, not ready yet (a oneshot: running).
    Starting,
    Ready,
    /// Running, its readiness probe failing.
    NotReady,
    Stopping,
    Failed,
    Exited,
    /// A oneshot that completed.
    Done,
    /// A phase this build does not know (a newer supd).
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitKind {
    Mount,
    Lock,
    LockUnknown,
    Dependency,
    Ordering,
    Cap,
    Backoff,
    Operator,
    Shed,
    Shutdown,
    Removed,
    #[serde(other)]
    Other,
}

/// The `graph` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphReport {
    pub units: Vec<GraphUnit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphUnit {
    pub name: String,
    pub state: String,
    pub ready: bool,
    #[serde(default)]
    pub requires: Vec<String>,
    #[serde(default)]
    pub wants: Vec<String>,
    #[serde(default)]
    pub after: Vec<String>,
    #[serde(default)]
    pub mounts: Vec<GraphMount>,
    /// null when unlocked, else every holder.
    #[serde(default)]
    pub maintenance: Option<Vec<HolderInfo>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphMount {
    pub path: String,
    #[serde(default)]
    pub fstype: Option<String>,
    /// Whether the requirement holds in the current mount table.
    pub mounted: bool,
    #[serde(default)]
    pub problem: Option<String>,
}

/// One line of a unit's log, as `supctl logs --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub unit: String,
    /// Arrival time, RFC 3339 UTC with microseconds.
    pub time: String,
    pub time_unix_us: u64,
    /// `out` (the service's stdout+stderr: they share one pipe), `stop`
    /// (its `[stop] exec`), `probe` (its exec probes) or `supd` (what supd
    /// recorded about the unit).
    pub stream: String,
    pub line: String,
}

/// Something that changed, as the engine saw it (`supctl events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum EventBody {
    /// A unit's state word or readiness changed.
    State {
        unit: UnitName,
        from: Word,
        to: Word,
        ready: bool,
        pid: Option<i32>,
        /// Why, in words (the status DETAIL), when there is something to say.
        #[serde(default)]
        detail: Option<Word>,
    },
    /// The holders of a unit's maintenance lock changed (empty: free).
    Lock { unit: String, holders: Vec<String> },
    /// The lock state became known (`ok`) or unknown (fail-closed).
    LockState { ok: bool, problem: Option<String> },
    /// A mount some unit requires appeared (`present`) or was lost.
    Mount {
        path: String,
        present: bool,
        #[serde(default)]
        problem: Option<String>,
    },
    /// A probe started passing or failing.
    Probe {
        unit: UnitName,
        /// "liveness" (`[health]`) or "readiness".
        probe: Word,
        passing: bool,
        #[serde(default)]
        output: Option<String>,
    },
    /// Units were shed or restored, by an operator (`supctl shed` /
    /// `unshed`) or automatically under pressure (`[shed]`).
    Shed {
        /// "pressure" or "operator".
        by: String,
        /// True: units were shed; false: restored.
        shed: bool,
        /// What is shed now: "none", "optional", "optional+sheddable", or
        /// the operator's level.
        level: String,
        /// The resource whose pressure decided (automatic sheds).
        #[serde(default)]
        resource: Option<String>,
        /// The units this change covers.
        #[serde(default)]
        units: Vec<String>,
        /// Anything else to say (a manual level that takes precedence).
        #[serde(default)]
        detail: Option<String>,
    },
}

impl EventBody {
    pub fn unit(&self) -> Option<&str> {
        match self {
            EventBody::State { unit, .. } | EventBody::Probe { unit, .. } => Some(unit.as_str()),
            EventBody::Lock { unit, .. } => Some(unit),
            EventBody::LockState { .. } | EventBody::Mount { .. } | EventBody::Shed { .. } => None,
        }
    }

    /// One line for humans (and for the unit's log).
    pub fn describe(&self) -> String {
        match self {
            EventBody::State {
                from,
                to,
                ready,
                detail,
                ..
            } => {
                let mut s = format!("{from} -> {to}");
                if *ready && to == "running" {
                    s.push_str(" (ready)");
                } else if !ready && to == "running" {
                    s.push_str(" (not ready)");
                }
                if let Some(d) = detail {
                    s.push_str(": ");
                    s.push_str(d);
                }
                s
            }
            EventBody::Lock { holders, .. } if holders.is_empty() => {
                "maintenance lock released".to_string()
            }
            EventBody::Lock { holders, .. } => {
                format!("maintenance lock held by {}", holders.join(", "))
            }
            EventBody::LockState { ok: true, .. } => "lock state known".to_string(),
            EventBody::LockState { problem, .. } => format!(
                "lock state unknown (fail-closed): {}",
                problem.as_deref().unwrap_or("?")
            ),
            EventBody::Mount {
                path,
                present: true,
                ..
            } => format!("mount {path} appeared"),
            EventBody::Mount { path, problem, .. } => format!(
                "mount {path} lost{}",
                problem
                    .as_ref()
                    .map(|p| format!(": {p}"))
                    .unwrap_or_default()
            ),
            EventBody::Probe {
                probe,
                passing,
                output,
                ..
            } => format!(
                "{probe} probe {}{}",
                if *passing { "passing" } else { "failing" },
                output
                    .as_ref()
                    .map(|o| format!(": {o}"))
                    .unwrap_or_default()
            ),
            EventBody::Shed {
                by,
                shed,
                level,
                resource,
                units,
                detail,
            } => {
                let mut s = format!(
                    "{} by {by}{}: {} (now shed: {level})",
                    if *shed { "shed" } else { "unshed" },
                    resource
                        .as_ref()
                        .map(|r| format!(" ({r} pressure)"))
                        .unwrap_or_default(),
                    if units.is_empty() {
                        "no unit".to_string()
                    } else {
                        units.join(", ")
                    }
                );
                if let Some(d) = detail {
                    s.push_str("; ");
                    s.push_str(d);
                }
                s
            }
        }
    }
}

/// An event with the wall time supd published it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// RFC 3339 UTC with microseconds.
    pub time: String,
    pub time_unix_us: u64,
    #[serde(flatten)]
    pub body: EventBody,
}

/// A line of a streamed answer (after the `Response` line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StreamItem {
    Log(LogRecord),
    Event(EventRecord),
    /// Something the reader should know (lines skipped, a unit without a
    /// log); not data.
    Notice {
        message: String,
    },
    /// The answer is complete (absent when the stream was cut short).
    End,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_items_round_trip_as_one_json_object_per_line() {
        let items = vec![
            StreamItem::Event(EventRecord {
                time: "2026-12-01T08:00:00.000000Z".into(),
                time_unix_us: 1,
                body: EventBody::State {
                    unit: "web".into(),
                    from: "starting".into(),
                    to: "running".into(),
                    ready: true,
                    pid: Some(7),
                    detail: None,
                },
            }),
            StreamItem::Event(EventRecord {
                time: "t".into(),
                time_unix_us: 2,
                body: EventBody::Mount {
                    path: "/srv".into(),
                    present: false,
                    problem: Some("gone".into()),
                },
            }),
            StreamItem::Notice {
                message: "m".into(),
            },
            StreamItem::End,
        ];
        for i in items {
            let line = serde_json::to_string(&i).unwrap();
            assert!(!line.contains('\n'));
            let back: StreamItem = serde_json::from_str(&line).unwrap();
            assert_eq!(back, i, "{line}");
        }
        let line = serde_json::to_string(&EventRecord {
            time: "t".into(),
            time_unix_us: 3,
            body: EventBody::Lock {
                unit: "db".into(),
                holders: vec!["alice".into()],
            },
        })
        .unwrap();
        assert_eq!(
            line,
            r#"{"time":"t","time_unix_us":3,"event":"lock","unit":"db","holders":["alice"]}"#
        );
    }

    /// The engine's events name units from its shared table, with
    /// `'static` words: the JSON is the same plain strings, and a parsed
    /// event (owned strings) compares equal to the one sent.
    #[test]
    fn a_shared_name_and_static_words_serialize_as_plain_strings() {
        let mut table = NameTable::default();
        for n in ["web", "db", "cache"] {
            table.push(n);
        }
        let table = Arc::new(table);
        let sent = EventRecord {
            time: "t".into(),
            time_unix_us: 4,
            body: EventBody::State {
                unit: UnitName::in_table(&table, 1),
                from: Cow::Borrowed("starting"),
                to: Cow::Borrowed("running"),
                ready: false,
                pid: Some(9),
                detail: Some(Cow::Borrowed("not ready")),
            },
        };
        let line = serde_json::to_string(&sent).unwrap();
        assert_eq!(
            line,
            r#"{"time":"t","time_unix_us":4,"event":"state","unit":"db","from":"starting","to":"running","ready":false,"pid":9,"detail":"not ready"}"#
        );
        let back: EventRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, sent);
        assert_eq!(back.body.unit(), Some("db"));
        assert_eq!(UnitName::in_table(&table, 7).as_str(), "");
        let probe = EventBody::Probe {
            unit: UnitName::in_table(&table, 2),
            probe: Cow::Borrowed("liveness"),
            passing: true,
            output: None,
        };
        assert_eq!(
            serde_json::to_string(&probe).unwrap(),
            r#"{"event":"probe","unit":"cache","probe":"liveness","passing":true,"output":null}"#
        );
    }
}
