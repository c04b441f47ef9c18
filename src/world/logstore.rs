//! Per-unit logs: every captured line kept on disk, size-capped and rotated.
//!
//! Owns: `<state_dir>/logs/<unit>/NNNNNNNN.log` — one directory per unit,
//! numbered files of at most `max_size` bytes, at most `max_files` of them
//! (the oldest is deleted when a new one starts, in the spirit of s6-log and
//! svlogd) — the thread that writes them, and reading them back for
//! `supctl logs` (last N lines, since a time, follow).
//!
//! One record per line: `2026-12-01T08:03:55.047951Z out text`, the arrival
//! time (UTC, µs), the stream (`out`: the service's stdout+stderr, which
//! share one pipe; `stop`, `probe`: its stop command and exec probes;
//! `supd`: what supd recorded about the unit), then the line as the service
//! wrote it. Readable with `cat`, parseable without a schema.
//!
//! How it never blocks PID 1: output readers (`world::output`) hand whole
//! lines to `push`, which only appends to a queue under a short mutex; a
//! dedicated thread (every signal blocked, like the persistence thread)
//! does all file I/O. Queued and in-writing chunks hold at most
//! `QUEUE_BYTES` (counted by allocation, not text); beyond that
//! lines are dropped, counted per unit, and a `supd` record saying how many
//! is written once the writer catches up — the service's pipe is always
//! drained, so a slow disk costs lines, never a stalled service or supd.
//! The writer runs as SCHED_BATCH: its share of the CPU is a normal
//! thread's (it is never starved under load, unlike SCHED_IDLE), but being
//! woken never preempts what runs on that CPU — a service supd has just
//! restarted, finishing its exec, or supd's own loop — it waits for the
//! CPU to be free or for the tick.
//! A unit whose file is not open (only `MAX_OPEN` are) has its records
//! held back until it says more (then both go out together), for at most
//! `DEFER_MAX` (and `DEFER_BYTES` in all), so that a stop's two state
//! changes, or a restart's notes, go out with one open, write and close
//! instead of one each:
//! at a stop of 1,000 units that was 6 system calls per unit on the
//! writer's core, competing with the services' exits. `supctl logs` and
//! closing the store write them out first; followers get them at once.
//! Reading for `supctl logs` happens on a short-lived reader thread, never
//! on the event loop; following is a task that only forwards what the
//! writer broadcasts.
//!
//! Until the state directory's filesystem is mounted (`state_mount` in
//! supd.toml) records are kept in memory (at most `MEM_BYTES`, the oldest
//! dropped first) and written out once it appears; nothing is ever created
//! under an empty mount point.
//!
//! Must never: block the caller of `push`; write outside `<state_dir>/logs`
//! (names from clients are checked before they become paths); hold more
//! than `QUEUE_BYTES + MEM_BYTES + DEFER_BYTES` of records; keep more
//! than `MAX_OPEN` files open; hold a record back from its file longer
//! than `DEFER_MAX` (plus the time to write what came before it), or from
//! a `supctl logs` answer at all; panic.

use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::protocol::{LogRecord, Response, StreamItem};
use crate::unit::MountReq;
use crate::world::sigmask::SigHold;

const MAX_MAX_SIZE: u64 = crate::unit::LogSpec::MAX_MAX_SIZE;
/// Longest line kept; the rest of a longer line is cut and marked.
pub const MAX_LINE: usize = 4096;

/// Bytes of lines queued for the writer before lines are dropped.
const QUEUE_BYTES: usize = 8 << 20;
/// Bytes of records kept in memory while the state directory is missing.
const MEM_BYTES: usize = 1 << 20;
/// Log files kept open at once (the least recently written is closed).
const MAX_OPEN: usize = 32;
/// Jobs queued under a `HeldWakes` before the writer is woken anyway (a
/// boot of thousands of units is one long batch: its lines go out in
/// passes of this many, not all at its end).
const HELD_JOBS: usize = 256;
/// Formatted bytes of one unit gathered into one write.
const COALESCE: usize = 256 * 1024;
/// Records of units whose file is not open are held back (see
/// `Writer::deferred`) at most this long after the first of them...
/// Short: what is held is lost if supd itself is SIGKILLed, so the
/// window must stay of the order of the write queue's own latency; a
/// stop's two notes are usually closer together than this.
const DEFER_MAX: Duration = Duration::from_millis(100);
/// ...and while they take at most this many bytes.
const DEFER_BYTES: usize = 1 << 20;
/// `supctl logs` readers at once.
const MAX_READERS: usize = 4;
/// Chunks a follower may fall behind before it is told it missed some
/// (chunks are at most one 16 KiB read: a few MiB held for followers).
const LIVE_CAPACITY: usize = 256;
/// Records answered without -n or --since.
const DEFAULT_LINES: u64 = 10;
/// Most records one answer carries (beyond that, the newest are kept).
const MAX_LINES: u64 = 1_000_000;

/// How much of a unit's log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_size: u64,
    pub max_files: u32,
}

impl Limits {
    /// A unit's limits: its own keys, else supd.toml's, else the defaults.
    pub fn of(spec: &crate::unit::UnitSpec, global: crate::unit::LogSpec) -> Limits {
        let (max_size, max_files) = spec.log.resolve(global);
        Limits {
            max_size,
            max_files,
        }
    }
}

/// See `LogStore::hold_wakes`.
pub struct HeldWakes(LogStore);

impl Drop for HeldWakes {
    fn drop(&mut self) {
        let mut q = lock(&self.0.shared.queue);
        q.holds = q.holds.saturating_sub(1);
        if q.holds == 0 && !(q.jobs.is_empty() && q.dropped.is_empty()) {
            self.0.wake_locked(q);
        }
    }
}

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The service's stdout and stderr (one pipe, as a journal stream).
    Out,
    /// Its `[stop] exec` command.
    Stop,
    /// Its exec probes.
    Probe,
    /// supd, about the unit (state changes, causes, dropped lines).
    Supd,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Stop => "stop",
            Stream::Probe => "probe",
            Stream::Supd => "supd",
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub lines_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub lines_dropped: AtomicU64,
    pub write_errors: AtomicU64,
}

/// Lines that arrived together for one unit.
struct Chunk {
    unit: Arc<str>,
    stream: Stream,
    time_us: u64,
    limits: Limits,
    /// Whole lines, each ending in `\n`.
    lines: Vec<u8>,
}

/// What followers receive: a chunk once it is written.
struct Live {
    seq: u64,
    unit: Arc<str>,
    stream: Stream,
    time_us: u64,
    lines: Vec<u8>,
}

/// Where the files ended when a reader asked (so a follower neither misses
/// nor repeats a record): everything up to `seq` is in the files, up to
/// `ends` per unit, or in `mem` while the state directory is missing.
struct Snapshot {
    seq: u64,
    mounted: bool,
    ends: HashMap<String, (u64, u64)>,
    /// Formatted records held in memory, per unit, oldest first.
    mem: Vec<(Arc<str>, Vec<u8>)>,
}

enum Job {
    Chunk(Chunk),
    StateReady,
    Barrier(Vec<String>, std::sync::mpsc::Sender<Snapshot>),
    Close(std::sync::mpsc::Sender<()>),
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Lines refused since the writer last looked, per unit.
    dropped: HashMap<Arc<str>, (u64, Limits)>,
    /// The writer waits on the condvar (so only then is a wake-up needed).
    sleeping: bool,
    closed: bool,
    /// `HeldWakes` guards alive: the writer is woken when the last goes,
    /// not once per line (a start wave is two lines per unit).
    holds: u32,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    live: broadcast::Sender<Arc<Live>>,
    /// Bytes of chunks queued or being written (by capacity: the bound is
    /// on memory, not on text); released as each chunk is written.
    held: AtomicUsize,
    readers: AtomicUsize,
    dir: PathBuf,
    stats: Stats,
}

impl Shared {
    /// Empty state for a writer of `<dir>`, with room for `live` chunks
    /// per follower.
    fn new(dir: PathBuf, live: usize) -> Arc<Shared> {
        let (live, _) = broadcast::channel(live);
        Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            live,
            held: AtomicUsize::new(0),
            readers: AtomicUsize::new(0),
            dir,
            stats: Stats::default(),
        })
    }
}

/// The handle the driver and the output readers hold.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

/// A `supctl logs` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub units: Vec<String>,
    pub lines: Option<u64>,
    pub since_us: Option<u64>,
    pub follow: bool,
}

fn lock(q: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A panic in the writer must not take the pushers with it.
    q.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wall-clock microseconds since the epoch (0 if the clock is before it).
pub fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A unit name as a directory name, or None if it could leave the logs
/// directory (names from clients are not trusted).
fn unit_dir_name(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b));
    ok.then_some(name)
}

impl LogStore {
    /// Start the writer thread for `<state_dir>/logs`.
    pub fn start(state_dir: &Path, state_mount: Option<MountReq>) -> io::Result<LogStore> {
        let shared = Shared::new(state_dir.join("logs"), LIVE_CAPACITY);
        let s = shared.clone();
        // The thread inherits the mask: every signal stays with the loop.
        let all = SigHold::all();
        let spawned = std::thread::Builder::new()
            .name("supd-logs".into())
            .spawn(move || Writer::new(s, state_mount).run());
        drop(all);
        spawned.map(|_| LogStore { shared })
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Queue whole lines (each ending in `\n`) of `unit`; never blocks.
    /// When the queue is full they are dropped and counted.
    pub fn push(
        &self,
        unit: &Arc<str>,
        stream: Stream,
        limits: Limits,
        time_us: u64,
        lines: Vec<u8>,
    ) {
        if lines.is_empty() {
            return;
        }
        let mut q = lock(&self.shared.queue);
        if q.closed {
            return;
        }
        let cost = lines.capacity();
        if self.shared.held.load(Ordering::Relaxed) + cost > QUEUE_BYTES {
            let n = lines.iter().filter(|&&b| b == b'\n').count() as u64;
            self.shared
                .stats
                .lines_dropped
                .fetch_add(n, Ordering::Relaxed);
            let e = q.dropped.entry(unit.clone()).or_insert((0, limits));
            e.0 += n;
            return;
        }
        self.shared.held.fetch_add(cost, Ordering::Relaxed);
        q.jobs.push_back(Job::Chunk(Chunk {
            unit: unit.clone(),
            stream,
            time_us,
            limits,
            lines,
        }));
        self.wake_locked(q);
    }

    /// One line from supd about `unit` (`stream = supd`).
    pub fn note(&self, unit: &Arc<str>, limits: Limits, text: &str) {
        let mut line = Vec::with_capacity(text.len() + 1);
        line.extend(text.bytes().filter(|&b| b != b'\n').take(MAX_LINE));
        line.push(b'\n');
        self.push(unit, Stream::Supd, limits, wall_us(), line);
    }

    fn send(&self, job: Job) {
        let mut q = lock(&self.shared.queue);
        if q.closed {
            return;
        }
        q.jobs.push_back(job);
        self.wake_locked(q);
    }

    fn wake_locked(&self, mut q: MutexGuard<'_, Queue>) {
        if q.holds > 0 && q.jobs.len() < HELD_JOBS {
            return;
        }
        let wake = std::mem::replace(&mut q.sleeping, false);
        drop(q);
        if wake {
            self.shared.wake.notify_one();
        }
    }

    /// The state directory's filesystem is mounted: write what was held.
    pub fn state_dir_ready(&self) {
        self.send(Job::StateReady);
    }

    /// Write everything queued, then close every file (so the state
    /// directory can be unmounted). Waits at most `timeout`.
    pub fn close(&self, timeout: Duration) {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut q = lock(&self.shared.queue);
            if q.closed {
                return;
            }
            q.jobs.push_back(Job::Close(tx));
            // Waited for here: a hold must not delay it.
            q.holds = 0;
            self.wake_locked(q);
        }
        let _ = rx.recv_timeout(timeout);
    }

    /// Queue without waking the writer until the guard is dropped: the
    /// lines of one batch of engine actions go to the writer as one batch
    /// (one wake-up, one pass), and the loop's thread pays one futex call
    /// instead of one per line. Nothing waits synchronously on the writer
    /// while a hold is alive (`close` ends the holds).
    pub fn hold_wakes(&self) -> HeldWakes {
        lock(&self.shared.queue).holds += 1;
        HeldWakes(self.clone())
    }

    /// Answer a `supctl logs` request: `reply` gets the `Response`, then
    /// `stream` the records. All reading happens on a reader thread; a
    /// follow continues as a task that forwards what the writer broadcasts.
    /// `known` are the units currently defined (for the unknown-unit hint).
    pub fn serve(
        &self,
        q: LogQuery,
        known: Vec<String>,
        reply: oneshot::Sender<Response>,
        stream: mpsc::Sender<String>,
    ) {
        for u in &q.units {
            if unit_dir_name(u).is_none() {
                let _ = reply.send(Response::err(format!(
                    "{u:?} is not a unit name (letters, digits, _ . @ - only)"
                )));
                return;
            }
        }
        let sh = &self.shared;
        if sh.readers.fetch_add(1, Ordering::SeqCst) >= MAX_READERS {
            sh.readers.fetch_sub(1, Ordering::SeqCst);
            let _ = reply.send(Response::err(format!(
                "supd is busy: {MAX_READERS} log readers already running; retry"
            )));
            return;
        }
        // Subscribe before the snapshot: every chunk after it reaches us.
        let live = q.follow.then(|| sh.live.subscribe());
        let (seq_tx, seq_rx) = oneshot::channel::<u64>();
        let me = self.clone();
        let tx = stream.clone();
        let query = q.clone();
        let all = SigHold::all();
        let spawned = std::thread::Builder::new()
            .name("supd-logread".into())
            .spawn(move || {
                let seq = me.read_backlog(&query, &known, reply, &tx);
                me.shared.readers.fetch_sub(1, Ordering::SeqCst);
                if let Some(seq) = seq {
                    let _ = seq_tx.send(seq);
                }
            });
        drop(all);
        if let Err(e) = spawned {
            sh.readers.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("cannot start a log reader: {e}");
            return;
        }
        if let Some(live) = live {
            let units = q.units;
            tokio::spawn(follow(live, units, seq_rx, stream));
        }
    }

    /// On the reader thread: answer, send the backlog; Some(seq) when a
    /// follow should continue from `seq`.
    fn read_backlog(
        &self,
        q: &LogQuery,
        known: &[String],
        reply: oneshot::Sender<Response>,
        tx: &mpsc::Sender<String>,
    ) -> Option<u64> {
        let (stx, srx) = std::sync::mpsc::channel();
        self.send(Job::Barrier(q.units.clone(), stx));
        let Ok(snap) = srx.recv_timeout(Duration::from_secs(30)) else {
            let _ = reply.send(Response::err(
                "the log writer did not answer within 30s (disk stalled?); retry",
            ));
            return None;
        };
        let dir = &self.shared.dir;
        let mut missing = Vec::new();
        for u in &q.units {
            let on_disk = snap.mounted && dir.join(u).is_dir();
            let in_mem = snap.mem.iter().any(|(n, _)| &**n == u);
            if !on_disk && !in_mem && !known.contains(u) {
                missing.push(u.clone());
            }
        }
        if !missing.is_empty() {
            let mut k = known.to_vec();
            k.sort();
            let hint = if k.len() <= 20 {
                format!("known units: {}", k.join(", "))
            } else {
                "`supctl status` lists them".to_string()
            };
            let _ = reply.send(Response::err(format!(
                "no unit or log named {} ({hint})",
                missing.join(", ")
            )));
            return None;
        }
        let _ = reply.send(Response::ok(""));
        let limit = match (q.lines, q.since_us) {
            (Some(n), _) => n.min(MAX_LINES),
            (None, Some(_)) => MAX_LINES,
            (None, None) => DEFAULT_LINES,
        };
        let units: Vec<String> = if q.units.is_empty() {
            let mut all: Vec<String> = snap.ends.keys().cloned().collect();
            for (u, _) in &snap.mem {
                if !all.iter().any(|x| **x == **u) {
                    all.push(u.to_string());
                }
            }
            all.sort();
            all
        } else {
            q.units.clone()
        };
        let mut per_unit: Vec<Vec<Rec>> = Vec::new();
        for u in &units {
            let mut recs = if snap.mounted {
                let end = snap.ends.get(u).copied();
                read_unit(&dir.join(u), end, limit, q.since_us)
            } else {
                Vec::new()
            };
            for (n, bytes) in &snap.mem {
                if **n == **u {
                    parse_records(bytes, &mut recs);
                }
            }
            if let Some(since) = q.since_us {
                recs.retain(|r| r.time_us >= since);
            }
            let skip = recs.len().saturating_sub(limit as usize);
            recs.drain(..skip);
            per_unit.push(recs);
        }
        for r in merge_by_time(&units, per_unit, limit as usize) {
            if tx.blocking_send(item_line(&StreamItem::Log(r))).is_err() {
                return None;
            }
        }
        if q.follow {
            Some(snap.seq)
        } else {
            let _ = tx.blocking_send(item_line(&StreamItem::End));
            None
        }
    }
}

fn item_line(item: &StreamItem) -> String {
    serde_json::to_string(item).unwrap_or_else(|_| "{\"kind\":\"end\"}".into())
}

/// Forward live chunks after `seq` (once the backlog was sent) until the
/// client goes away.
async fn follow(
    mut live: broadcast::Receiver<Arc<Live>>,
    units: Vec<String>,
    seq_rx: oneshot::Receiver<u64>,
    tx: mpsc::Sender<String>,
) {
    let Ok(after) = seq_rx.await else {
        return;
    };
    loop {
        let chunk = tokio::select! {
            c = live.recv() => c,
            _ = tx.closed() => return,
        };
        match chunk {
            Ok(c) => {
                if c.seq <= after || (!units.is_empty() && !units.iter().any(|u| **u == *c.unit)) {
                    continue;
                }
                for line in c.lines.split(|&b| b == b'\n') {
                    if line.is_empty() {
                        continue;
                    }
                    let rec = record(&c.unit, c.time_us, c.stream.as_str(), line);
                    if tx.send(item_line(&StreamItem::Log(rec))).await.is_err() {
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let msg = StreamItem::Notice {
                    message: format!(
                        "{n} chunks of output skipped: this reader fell behind the services"
                    ),
                };
                if tx.send(item_line(&msg)).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn record(unit: &str, time_us: u64, stream: &str, line: &[u8]) -> LogRecord {
    LogRecord {
        unit: unit.to_string(),
        time: rfc3339_us(time_us),
        time_unix_us: time_us,
        stream: stream.to_string(),
        line: String::from_utf8_lossy(line).into_owned(),
    }
}

pub fn rfc3339_us(us: u64) -> String {
    let mut s = String::with_capacity(27);
    crate::world::log::push_rfc3339(&mut s, us / 1_000_000, (us % 1_000_000) as u32);
    s
}

/// Length of `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
const TS_LEN: usize = 27;

/// Parse the fixed-width timestamp this module writes.
fn parse_ts(b: &[u8]) -> Option<u64> {
    if b.len() != TS_LEN || b[4] != b'-' || b[10] != b'T' || b[19] != b'.' || b[26] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss, us) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days since 1970-01-01 from a civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs).ok().map(|s| s * 1_000_000 + us as u64)
}

/// A record read back from a file.
struct Rec {
    time_us: u64,
    stream: String,
    line: Vec<u8>,
}

/// Parse formatted records; a line that is not one (a torn write after a
/// crash, a file edited by hand) is kept as `out` text at the previous time.
fn parse_records(bytes: &[u8], out: &mut Vec<Rec>) {
    let mut last = out.last().map(|r| r.time_us).unwrap_or(0);
    for line in bytes.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let parsed = (|| {
            let t = parse_ts(line.get(..TS_LEN)?)?;
            let rest = line.get(TS_LEN + 1..)?;
            let sp = rest.iter().position(|&b| b == b' ')?;
            let stream = std::str::from_utf8(&rest[..sp]).ok()?;
            Some((t, stream.to_string(), rest[sp + 1..].to_vec()))
        })();
        match parsed {
            Some((t, stream, text)) => {
                last = t;
                out.push(Rec {
                    time_us: t,
                    stream,
                    line: text,
                });
            }
            None => out.push(Rec {
                time_us: last,
                stream: "out".into(),
                line: line.to_vec(),
            }),
        }
    }
}

/// Numbered log files in `dir`, oldest first.
fn list_files(dir: &Path) -> Vec<u64> {
    let mut seqs: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name();
            let s = n.to_str()?;
            s.strip_suffix(".log")?.parse::<u64>().ok()
        })
        .collect();
    seqs.sort_unstable();
    seqs
}

fn file_name(seq: u64) -> String {
    format!("{seq:08}.log")
}

/// The newest `limit` records of one unit (at or after `since`), reading
/// files newest first and stopping once enough are found. `end` caps the
/// newest file at what was written when the reader asked.
fn read_unit(dir: &Path, end: Option<(u64, u64)>, limit: u64, since: Option<u64>) -> Vec<Rec> {
    let mut files = list_files(dir);
    if let Some((seq, _)) = end {
        files.retain(|&s| s <= seq);
    }
    let mut chunks: Vec<Vec<Rec>> = Vec::new();
    let mut have = 0u64;
    for &seq in files.iter().rev() {
        let Ok(f) = File::open(dir.join(file_name(seq))) else {
            continue;
        };
        let cap = match end {
            Some((s, len)) if s == seq => len,
            _ => MAX_MAX_SIZE + MAX_LINE as u64 * 2,
        };
        let mut bytes = Vec::new();
        if f.take(cap).read_to_end(&mut bytes).is_err() {
            continue;
        }
        let mut recs = Vec::new();
        parse_records(&bytes, &mut recs);
        have += recs.len() as u64;
        let older_than_since = match (since, recs.first()) {
            (Some(s), Some(r)) => r.time_us < s,
            _ => false,
        };
        chunks.push(recs);
        if (since.is_none() && have >= limit) || older_than_since {
            break;
        }
    }
    chunks.into_iter().rev().flatten().collect()
}

/// Interleave per-unit records by time, keeping each unit's own order (a
/// wall clock that stepped back must not reorder one unit's lines); the
/// newest `limit` overall.
fn merge_by_time(units: &[String], per_unit: Vec<Vec<Rec>>, limit: usize) -> Vec<LogRecord> {
    let mut iters: Vec<std::iter::Peekable<std::vec::IntoIter<Rec>>> = per_unit
        .into_iter()
        .map(|v| v.into_iter().peekable())
        .collect();
    let mut heap = BinaryHeap::new();
    for (i, it) in iters.iter_mut().enumerate() {
        if let Some(r) = it.peek() {
            heap.push(std::cmp::Reverse((r.time_us, i)));
        }
    }
    let mut out: VecDeque<LogRecord> = VecDeque::new();
    while let Some(std::cmp::Reverse((_, i))) = heap.pop() {
        let Some(r) = iters[i].next() else {
            continue;
        };
        out.push_back(record(&units[i], r.time_us, &r.stream, &r.line));
        if out.len() > limit {
            out.pop_front();
        }
        if let Some(n) = iters[i].peek() {
            heap.push(std::cmp::Reverse((n.time_us, i)));
        }
    }
    out.into()
}

/// The writer's view of one unit's files.
struct UnitLog {
    /// The file being appended to (files are numbered from 1).
    seq: u64,
    size: u64,
    file: Option<File>,
    /// For closing the least recently written file: its key in
    /// `Writer::lru` while `file` is open.
    last_use: u64,
    /// The directory exists (created, or found).
    ready: bool,
}

/// A unit's held-back records (see `Writer::deferred`).
type Held = (Arc<str>, Limits, Vec<u8>);

struct Writer {
    shared: Arc<Shared>,
    state_mount: Option<MountReq>,
    mounted: bool,
    units: HashMap<Arc<str>, UnitLog>,
    /// The units whose file is open, by when they were last written
    /// (`UnitLog::last_use`): the least recently written is the first, so
    /// closing it is not a walk over every unit (at 4,000 units and 32
    /// open files every open after the 32nd was one).
    lru: BTreeMap<u64, Arc<str>>,
    tick: u64,
    /// Chunks given a sequence number (for followers).
    seq: u64,
    /// Formatted records held while the state directory is missing.
    mem: VecDeque<(Arc<str>, Limits, Vec<u8>)>,
    mem_bytes: usize,
    mem_dropped: u64,
    /// Formatted records of `pending`'s unit not yet written.
    scratch: Vec<u8>,
    pending: Option<(Arc<str>, Limits)>,
    /// When the last write error was logged (one message per minute).
    last_error_log: Option<std::time::Instant>,
    dir_created: bool,
    /// Formatted records of units whose file was not open, held back
    /// (see the module doc), in the order the units were first held;
    /// `deferred_at` indexes them by unit.
    deferred: Vec<Option<Held>>,
    deferred_at: HashMap<Arc<str>, usize>,
    deferred_bytes: usize,
    /// When the oldest held-back record was held: all go out by
    /// `DEFER_MAX` after it.
    deferred_since: Option<std::time::Instant>,
    /// Log files opened (for tests and profiles).
    opened: u64,
}

impl Writer {
    fn new(shared: Arc<Shared>, state_mount: Option<MountReq>) -> Writer {
        Writer {
            mounted: state_mount.is_none(),
            shared,
            state_mount,
            units: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            seq: 0,
            mem: VecDeque::new(),
            mem_bytes: 0,
            mem_dropped: 0,
            scratch: Vec::with_capacity(COALESCE),
            pending: None,
            last_error_log: None,
            dir_created: false,
            deferred: Vec::new(),
            deferred_at: HashMap::new(),
            deferred_bytes: 0,
            deferred_since: None,
            opened: 0,
        }
    }

    fn run(mut self) {
        batch_priority();
        loop {
            let (jobs, dropped) = {
                let mut q = lock(&self.shared.queue);
                while q.jobs.is_empty() && q.dropped.is_empty() {
                    q.sleeping = true;
                    // Held-back records go out when they are due, also
                    // when nothing more comes.
                    match self.deferred_since {
                        Some(since) => {
                            let left = DEFER_MAX.saturating_sub(since.elapsed());
                            if left.is_zero() {
                                q.sleeping = false;
                                break;
                            }
                            q = self
                                .shared
                                .wake
                                .wait_timeout(q, left)
                                .map(|(q, _)| q)
                                .unwrap_or_else(|p| p.into_inner().0);
                        }
                        None => {
                            q = self.shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                        }
                    }
                }
                (std::mem::take(&mut q.jobs), std::mem::take(&mut q.dropped))
            };
            let mut close = None;
            for job in jobs {
                match job {
                    Job::Chunk(c) => {
                        let cost = c.lines.capacity();
                        self.chunk(c);
                        self.shared.held.fetch_sub(cost, Ordering::Relaxed);
                    }
                    Job::StateReady => {
                        self.flush_pending();
                        self.state_ready();
                    }
                    Job::Barrier(units, tx) => {
                        // A reader sees everything received so far.
                        self.flush_pending();
                        self.flush_deferred();
                        let _ = tx.send(self.snapshot(&units));
                    }
                    Job::Close(tx) => close = Some(tx),
                }
            }
            self.flush_pending();
            for (unit, (n, limits)) in dropped {
                let text =
                    format!("{n} lines dropped: the log writer fell behind (disk slow or full)\n");
                self.chunk(Chunk {
                    unit,
                    stream: Stream::Supd,
                    time_us: wall_us(),
                    limits,
                    lines: text.into_bytes(),
                });
            }
            self.flush_pending();
            if close.is_some()
                || self
                    .deferred_since
                    .is_some_and(|since| since.elapsed() >= DEFER_MAX)
            {
                self.flush_deferred();
            }
            if let Some(tx) = close {
                lock(&self.shared.queue).closed = true;
                for u in self.units.values_mut() {
                    u.file = None;
                }
                self.lru.clear();
                let _ = tx.send(());
                return;
            }
        }
    }

    fn state_ready(&mut self) {
        if self.mounted {
            return;
        }
        if let Some(m) = &self.state_mount {
            // Re-check right here: nothing may be created under an empty
            // mount point.
            let table = crate::world::mount_watch::read_mount_table().unwrap_or_default();
            if table.check(m).is_err() {
                return;
            }
        }
        self.mounted = true;
        let held = std::mem::take(&mut self.mem);
        self.mem_bytes = 0;
        let lost = std::mem::take(&mut self.mem_dropped);
        for (unit, limits, bytes) in held {
            self.write_formatted(&unit, limits, &bytes);
        }
        if lost > 0 {
            tracing::warn!(
                "{lost} log lines were dropped while the state directory was not mounted (the memory buffer holds {MEM_BYTES} bytes)"
            );
        }
    }

    fn chunk(&mut self, c: Chunk) {
        self.seq += 1;
        let mut ts = String::with_capacity(TS_LEN);
        crate::world::log::push_rfc3339(
            &mut ts,
            c.time_us / 1_000_000,
            (c.time_us % 1_000_000) as u32,
        );
        // Records of one unit accumulate in `scratch` and go out in one
        // write (`flush_pending`) when another unit's chunk, a job other
        // than a chunk, or the end of the batch comes.
        if self.pending.as_ref().is_some_and(|(u, _)| *u != c.unit)
            || self.scratch.len() >= COALESCE
        {
            self.flush_pending();
        }
        let mut buf = std::mem::take(&mut self.scratch);
        let mut prefix = [0u8; TS_LEN + 8];
        let plen = {
            let st = c.stream.as_str().as_bytes();
            prefix[..TS_LEN].copy_from_slice(&ts.as_bytes()[..TS_LEN.min(ts.len())]);
            prefix[TS_LEN] = b' ';
            prefix[TS_LEN + 1..TS_LEN + 1 + st.len()].copy_from_slice(st);
            prefix[TS_LEN + 1 + st.len()] = b' ';
            TS_LEN + 2 + st.len()
        };
        let mut n = 0u64;
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &c.lines) {
            buf.extend_from_slice(&prefix[..plen]);
            buf.extend_from_slice(&c.lines[start..=end]);
            start = end + 1;
            n += 1;
        }
        if start < c.lines.len() {
            buf.extend_from_slice(&prefix[..plen]);
            buf.extend_from_slice(&c.lines[start..]);
            buf.push(b'\n');
            n += 1;
        }
        self.pending = Some((c.unit.clone(), c.limits));
        self.shared
            .stats
            .lines_written
            .fetch_add(n, Ordering::Relaxed);
        self.scratch = buf;
        if self.shared.live.receiver_count() > 0 {
            let _ = self.shared.live.send(Arc::new(Live {
                seq: self.seq,
                unit: c.unit,
                stream: c.stream,
                time_us: c.time_us,
                lines: c.lines,
            }));
        }
    }

    /// Write (or hold) the records gathered in `scratch`.
    fn flush_pending(&mut self) {
        let Some((unit, limits)) = self.pending.take() else {
            return;
        };
        let buf = std::mem::take(&mut self.scratch);
        if !self.mounted {
            self.hold(&unit, limits, &buf);
        } else if self.deferred_at.contains_key(&unit)
            || self.units.get(&unit).is_none_or(|u| u.file.is_none())
        {
            self.defer(&unit, limits, &buf);
        } else {
            self.write_formatted(&unit, limits, &buf);
        }
        self.scratch = buf;
        self.scratch.clear();
        if self.scratch.capacity() > 4 * COALESCE {
            self.scratch.shrink_to(COALESCE);
        }
    }

    /// Hold back formatted records of a unit whose file is not open (see
    /// the module doc) until it says more: then what it said is written
    /// together, at once (a stop's second state change, a restart's next
    /// note), so that little is left for `DEFER_MAX` or the close.
    fn defer(&mut self, unit: &Arc<str>, limits: Limits, bytes: &[u8]) {
        if let Some(i) = self.deferred_at.remove(unit)
            && let Some((unit, _, mut held)) = self.deferred[i].take()
        {
            self.deferred_bytes = self.deferred_bytes.saturating_sub(held.len());
            held.extend_from_slice(bytes);
            self.write_formatted(&unit, limits, &held);
            return;
        }
        self.deferred_at.insert(unit.clone(), self.deferred.len());
        self.deferred
            .push(Some((unit.clone(), limits, bytes.to_vec())));
        self.deferred_bytes += bytes.len();
        self.deferred_since
            .get_or_insert_with(std::time::Instant::now);
        if self.deferred_bytes > DEFER_BYTES {
            self.flush_deferred();
        }
    }

    /// Write every held-back record, unit by unit in the order they were
    /// held.
    fn flush_deferred(&mut self) {
        self.deferred_at.clear();
        self.deferred_bytes = 0;
        self.deferred_since = None;
        for (unit, limits, bytes) in std::mem::take(&mut self.deferred).into_iter().flatten() {
            self.write_formatted(&unit, limits, &bytes);
        }
    }

    /// Keep formatted records in memory (the oldest go first).
    fn hold(&mut self, unit: &Arc<str>, limits: Limits, bytes: &[u8]) {
        self.mem_bytes += bytes.len();
        self.mem.push_back((unit.clone(), limits, bytes.to_vec()));
        while self.mem_bytes > MEM_BYTES {
            let Some((_, _, b)) = self.mem.pop_front() else {
                break;
            };
            self.mem_bytes -= b.len();
            self.mem_dropped += b.iter().filter(|&&c| c == b'\n').count() as u64;
        }
    }

    fn unit_log(&mut self, unit: &Arc<str>) -> Option<&mut UnitLog> {
        if !self.units.contains_key(unit) {
            let dir = self.shared.dir.join(unit_dir_name(unit)?);
            let files = list_files(&dir);
            let seq = files.last().copied().unwrap_or(1);
            // No file yet (a unit's first line): nothing to ask the disk.
            let size = match files.last() {
                Some(_) => std::fs::metadata(dir.join(file_name(seq)))
                    .map(|m| m.len())
                    .unwrap_or(0),
                None => 0,
            };
            self.units.insert(
                unit.clone(),
                UnitLog {
                    seq,
                    size,
                    file: None,
                    last_use: 0,
                    ready: !files.is_empty(),
                },
            );
        }
        self.units.get_mut(unit)
    }

    /// Append formatted records, rotating at `max_size`.
    fn write_formatted(&mut self, unit: &Arc<str>, limits: Limits, bytes: &[u8]) {
        let mut start = 0;
        while start < bytes.len() {
            let Some(ul) = self.unit_log(unit) else {
                return;
            };
            let room = limits.max_size.saturating_sub(ul.size);
            let rest = &bytes[start..];
            // Whole records only: everything if it fits, else up to the
            // last newline that fits; into a fresh file at least one
            // record, however long.
            let cut = if rest.len() as u64 <= room {
                rest.len()
            } else {
                let window = &rest[..(room as usize).min(rest.len())];
                match memchr::memrchr(b'\n', window) {
                    Some(i) => i + 1,
                    None if ul.size == 0 => memchr::memchr(b'\n', rest)
                        .map(|i| i + 1)
                        .unwrap_or(rest.len()),
                    None => {
                        self.rotate(unit, limits);
                        continue;
                    }
                }
            };
            self.append(unit, &rest[..cut]);
            start += cut;
        }
    }

    fn append(&mut self, unit: &Arc<str>, bytes: &[u8]) {
        self.tick += 1;
        let tick = self.tick;
        if self.units.get(unit).is_some_and(|u| u.file.is_none()) && self.lru.len() >= MAX_OPEN {
            self.close_lru();
        }
        let dir = &self.shared.dir;
        let created = self.dir_created;
        let Some(ul) = self.units.get_mut(unit) else {
            return;
        };
        let udir = || dir.join(&**unit);
        let was_open = ul.file.is_some();
        let mut opened = 0;
        let result = (|| -> io::Result<()> {
            if !ul.ready {
                if !created {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o750)
                        .create(dir)?;
                }
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(udir())?;
                ul.ready = true;
            }
            if ul.file.is_none() {
                // `size` is already known (from the look at the directory
                // when the unit was first written, then counted): no fstat.
                let f = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o640)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(udir().join(file_name(ul.seq)))?;
                ul.file = Some(f);
                opened += 1;
            }
            if let Some(f) = ul.file.as_mut() {
                f.write_all(bytes)?;
            }
            ul.size += bytes.len() as u64;
            Ok(())
        })();
        if was_open {
            self.lru.remove(&ul.last_use);
        }
        if ul.file.is_some() {
            ul.last_use = tick;
            self.lru.insert(tick, unit.clone());
        }
        if ul.ready {
            self.dir_created = true;
        }
        self.opened += opened;
        match result {
            Ok(()) => {
                self.shared
                    .stats
                    .bytes_written
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.shared
                    .stats
                    .write_errors
                    .fetch_add(1, Ordering::Relaxed);
                if ul.file.take().is_some() {
                    self.lru.remove(&ul.last_use);
                }
                let now = std::time::Instant::now();
                if self
                    .last_error_log
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
                {
                    self.last_error_log = Some(now);
                    tracing::warn!(
                        unit = %unit,
                        "writing its log in {}: {e}; lines are lost until this is fixed (free space, or check the state directory)",
                        dir.join(&**unit).display()
                    );
                }
            }
        }
    }

    fn close_lru(&mut self) {
        if let Some((_, k)) = self.lru.pop_first()
            && let Some(u) = self.units.get_mut(&k)
        {
            u.file = None;
        }
    }

    /// Start the next file; delete what is beyond `max_files`.
    fn rotate(&mut self, unit: &Arc<str>, limits: Limits) {
        let dir = self.shared.dir.join(&**unit);
        let Some(ul) = self.units.get_mut(unit) else {
            return;
        };
        if ul.file.take().is_some() {
            self.lru.remove(&ul.last_use);
        }
        ul.seq += 1;
        ul.size = 0;
        let keep_from = ul
            .seq
            .saturating_sub(u64::from(limits.max_files.max(1)) - 1);
        for s in list_files(&dir) {
            if s < keep_from {
                let _ = std::fs::remove_file(dir.join(file_name(s)));
            }
        }
    }

    fn snapshot(&mut self, units: &[String]) -> Snapshot {
        let mut ends = HashMap::new();
        if self.mounted {
            let names: Vec<String> = if units.is_empty() {
                std::fs::read_dir(&self.shared.dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| unit_dir_name(n).is_some())
                    .collect()
            } else {
                units.to_vec()
            };
            for n in names {
                let key: Arc<str> = Arc::from(n.as_str());
                if let Some(ul) = self.unit_log(&key) {
                    ends.insert(n, (ul.seq, ul.size));
                }
            }
        }
        let mem = self
            .mem
            .iter()
            .filter(|(u, _, _)| units.is_empty() || units.iter().any(|n| **n == **u))
            .map(|(u, _, b)| (u.clone(), b.clone()))
            .collect();
        Snapshot {
            seq: self.seq,
            mounted: self.mounted,
            ends,
            mem,
        }
    }
}

/// The calling thread becomes SCHED_BATCH (see the module doc). Through
/// the raw system call: musl's `sched_setscheduler` is a stub, and Linux's
/// applies to the calling thread, not the process. A failure only costs
/// the wake-up preemption it avoids.
fn batch_priority() {
    // SAFETY: sched_param is plain integers (musl's has more fields than
    // glibc's): all-zero is valid, and priority 0 is what SCHED_BATCH takes.
    let param: libc::sched_param = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 (this thread), a valid policy and a pointer to a live
    // sched_param.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            libc::SCHED_BATCH,
            &param as *const libc::sched_param,
        )
    };
    if r != 0 {
        tracing::debug!(
            "log writer: SCHED_BATCH: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("supd-logstore-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn timestamps_round_trip() {
        for us in [0u64, 951_782_400_000_001, 1_796_112_235_047_951] {
            let s = rfc3339_us(us);
            assert_eq!(s.len(), TS_LEN);
            assert_eq!(parse_ts(s.as_bytes()), Some(us), "{s}");
        }
        assert_eq!(parse_ts(b"2026-13-01T00:00:00.000000Z"), None);
        assert_eq!(parse_ts(b"garbage"), None);
    }

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a\0b"] {
            assert!(unit_dir_name(bad).is_none(), "{bad:?}");
        }
        assert_eq!(unit_dir_name("web@1.x-y_z"), Some("web@1.x-y_z"));
    }

    fn writer(dir: &Path) -> Writer {
        Writer::new(Shared::new(dir.join("logs"), 4), None)
    }

    fn chunk(unit: &Arc<str>, t: u64, lines: &str, limits: Limits) -> Chunk {
        Chunk {
            unit: unit.clone(),
            stream: Stream::Out,
            time_us: t,
            limits,
            lines: lines.as_bytes().to_vec(),
        }
    }

    /// `n` units named u0, u1, ... and small limits (more units than files
    /// may be open, for the tests of closing and holding back).
    fn many_units(n: usize) -> (Limits, Vec<Arc<str>>) {
        let limits = Limits {
            max_size: 1 << 20,
            max_files: 2,
        };
        let units = (0..n)
            .map(|i| Arc::from(format!("u{i}").as_str()))
            .collect();
        (limits, units)
    }

    #[test]
    fn at_most_max_open_files_and_the_least_recently_written_is_closed() {
        let d = tmp("lru");
        let mut w = writer(&d);
        let (limits, units) = many_units(MAX_OPEN + 8);
        // Two rounds over more units than files may be open; `u0` is
        // written once more after the first round, so it is the most
        // recently written when the next unit comes.
        for round in 0..2u64 {
            for (i, u) in units.iter().enumerate() {
                w.chunk(chunk(
                    u,
                    round * 1000 + i as u64,
                    &format!("r{round}\n"),
                    limits,
                ));
                w.flush_pending();
                w.flush_deferred();
                assert!(w.lru.len() <= MAX_OPEN);
                if round == 0 && i == units.len() - 1 {
                    w.chunk(chunk(&units[0], 999, "again\n", limits));
                    w.flush_pending();
                    w.flush_deferred();
                }
            }
            if round == 0 {
                assert!(w.units[&units[0]].file.is_some(), "u0 was just written");
                assert!(w.units[&units[1]].file.is_none(), "u1 is the least recent");
            }
        }
        // The index and the files agree.
        let open = w.units.values().filter(|u| u.file.is_some()).count();
        assert_eq!(open, w.lru.len());
        for (t, u) in &w.lru {
            assert_eq!(w.units[u].last_use, *t);
        }
        // Nothing was lost to the closing and reopening.
        for (i, u) in units.iter().enumerate() {
            let text =
                std::fs::read_to_string(d.join("logs").join(&**u).join(file_name(1))).unwrap();
            let want = if i == 0 { 3 } else { 2 };
            assert_eq!(text.lines().count(), want, "{u}: {text}");
            assert_eq!(w.units[u].size, text.len() as u64, "{u}: size counted");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn records_of_units_whose_file_is_closed_are_written_with_one_open() {
        // A stop of many units: each says two things, in two passes of
        // the writer, more units than files may be open.
        let d = tmp("defer");
        let mut w = writer(&d);
        let (limits, units) = many_units(MAX_OPEN * 3);
        let say = |w: &mut Writer, u: &Arc<str>, t: u64, text: &str| {
            w.chunk(chunk(u, t, text, limits));
            w.flush_pending();
        };
        for (i, u) in units.iter().enumerate() {
            say(&mut w, u, i as u64, "running -> stopping\n");
        }
        assert_eq!(w.opened, 0, "held back, not written one by one");
        assert!(w.deferred_since.is_some());
        for (i, u) in units.iter().enumerate() {
            say(&mut w, u, 1000 + i as u64, "stopping -> waiting\n");
            // Written as soon as the unit said more: nothing is left for
            // the close.
            assert_eq!(w.opened, i as u64 + 1, "one open per unit");
        }
        assert!(w.deferred_at.is_empty() && w.deferred_bytes == 0);
        for u in &units {
            let text =
                std::fs::read_to_string(d.join("logs").join(&**u).join(file_name(1))).unwrap();
            let lines: Vec<&str> = text
                .lines()
                .map(|l| l.split_once(" out ").unwrap().1)
                .collect();
            assert_eq!(lines, ["running -> stopping", "stopping -> waiting"], "{u}");
            assert_eq!(w.units[u].size, text.len() as u64, "{u}: size counted");
        }
        // A unit whose file is open is written at once.
        let open = units.last().unwrap();
        assert!(w.units[open].file.is_some());
        let before = w.opened;
        say(&mut w, open, 5000, "at once\n");
        assert!(w.deferred_at.is_empty());
        assert_eq!(w.opened, before);
        // One that said one thing goes out with the rest when due.
        let closed = &units[0];
        assert!(w.units[closed].file.is_none());
        say(&mut w, closed, 5001, "later\n");
        assert_eq!(w.deferred_at.len(), 1);
        w.flush_deferred();
        assert_eq!(w.opened, before + 1);
        let text =
            std::fs::read_to_string(d.join("logs").join(&**closed).join(file_name(1))).unwrap();
        assert!(text.trim_end().ends_with(" out later"), "in order: {text}");
        // What is held back is bounded.
        let big = "x".repeat(40_000) + "\n";
        for (i, u) in units.iter().enumerate() {
            if w.units[u].file.is_some() {
                continue;
            }
            say(&mut w, u, 6000 + i as u64, &big);
            assert!(w.deferred_bytes <= DEFER_BYTES, "{}", w.deferred_bytes);
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_reader_and_the_close_see_what_was_held_back() {
        let d = tmp("defer-read");
        let shared = Shared::new(d.join("logs"), 4);
        let s = shared.clone();
        let t = std::thread::spawn(move || Writer::new(s, None).run());
        let store = LogStore { shared };
        let limits = Limits {
            max_size: 1 << 20,
            max_files: 2,
        };
        let unit: Arc<str> = Arc::from("quiet");
        store.note(&unit, limits, "said once");
        // A barrier (what `supctl logs` sends first) writes it out.
        let (tx, rx) = std::sync::mpsc::channel();
        store.send(Job::Barrier(vec!["quiet".into()], tx));
        let snap = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(snap.ends.get("quiet").map(|e| e.1 > 0), Some(true));
        let path = d.join("logs").join("quiet").join(file_name(1));
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("said once")
        );
        // Without a reader it goes out within DEFER_MAX.
        let other: Arc<str> = Arc::from("other");
        store.note(&other, limits, "said too");
        let p2 = d.join("logs").join("other").join(file_name(1));
        let t0 = std::time::Instant::now();
        while !std::fs::read_to_string(&p2).is_ok_and(|t| t.contains("said too")) {
            assert!(t0.elapsed() < DEFER_MAX * 10, "not written");
            std::thread::sleep(Duration::from_millis(10));
        }
        // And the close writes what is held.
        let last: Arc<str> = Arc::from("last");
        store.note(&last, limits, "last words");
        store.close(Duration::from_secs(5));
        let p3 = d.join("logs").join("last").join(file_name(1));
        assert!(std::fs::read_to_string(&p3).unwrap().contains("last words"));
        t.join().unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn rotates_at_the_size_cap_and_keeps_max_files() {
        let d = tmp("rotate");
        let mut w = writer(&d);
        let u: Arc<str> = Arc::from("web");
        let limits = Limits {
            max_size: 200,
            max_files: 3,
        };
        // Each record is 27 + 1 + 3 + 1 + 10 + 1 = 43 bytes: 4 per file.
        for i in 0..40u64 {
            w.chunk(chunk(&u, 1_000_000 * i, &format!("line {i:05}\n"), limits));
            if i % 7 == 0 {
                // Batches end at odd places.
                w.flush_pending();
                w.flush_deferred();
            }
        }
        w.flush_pending();
        w.flush_deferred();
        let files = list_files(&d.join("logs/web"));
        assert_eq!(files.len(), 3, "{files:?}");
        for s in &files {
            let len = std::fs::metadata(d.join("logs/web").join(file_name(*s)))
                .unwrap()
                .len();
            assert!(len <= 200, "file {s} has {len} bytes");
        }
        // The newest lines are all there, in order.
        let recs = read_unit(&d.join("logs/web"), None, 5, None);
        let texts: Vec<String> = recs
            .iter()
            .map(|r| String::from_utf8_lossy(&r.line).to_string())
            .collect();
        assert_eq!(
            texts[texts.len() - 5..],
            [
                "line 00035",
                "line 00036",
                "line 00037",
                "line 00038",
                "line 00039"
            ]
        );
        // A new writer (supd restarted) appends to the newest file.
        drop(w);
        let mut w = writer(&d);
        w.chunk(chunk(&u, 99_000_000, "after restart\n", limits));
        w.flush_pending();
        w.flush_deferred();
        let recs = read_unit(&d.join("logs/web"), None, 2, None);
        assert_eq!(
            recs.last().map(|r| r.line.clone()),
            Some(b"after restart".to_vec())
        );
        assert_eq!(recs[recs.len() - 2].line, b"line 00039".to_vec());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn merge_interleaves_by_time_and_keeps_the_newest() {
        let rec = |t: u64, s: &str| Rec {
            time_us: t,
            stream: "out".into(),
            line: s.as_bytes().to_vec(),
        };
        let units = vec!["a".to_string(), "b".to_string()];
        let merged = merge_by_time(
            &units,
            vec![
                vec![rec(1, "a1"), rec(3, "a3"), rec(5, "a5")],
                vec![rec(2, "b2"), rec(4, "b4")],
            ],
            4,
        );
        let got: Vec<(String, String)> = merged.into_iter().map(|r| (r.unit, r.line)).collect();
        assert_eq!(
            got,
            [("b", "b2"), ("a", "a3"), ("b", "b4"), ("a", "a5")]
                .map(|(u, l)| (u.to_string(), l.to_string()))
        );
    }

    #[test]
    fn torn_lines_are_kept_as_text() {
        let mut out = Vec::new();
        parse_records(
            b"2026-12-01T08:03:55.047951Z out hello world\npartial without stamp\n",
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].line, b"hello world".to_vec());
        assert_eq!(out[1].line, b"partial without stamp".to_vec());
        assert_eq!(out[1].time_us, out[0].time_us);
    }
}
