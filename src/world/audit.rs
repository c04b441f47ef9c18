//! The audit log: who changed what, and when.
//!
//! Owns: `<state_dir>/audit.log`, append-only JSON lines, each appended and
//! fsynced before the change it records is acknowledged: the persistence
//! thread writes audit records and lock state in decision order and reports
//! each record done, and the driver holds every reply until the records
//! queued before it are (a failed write is said in the reply). Reading
//! (`maintenance log`) happens on that thread too and reads only the tail.
//! Must never: rewrite or truncate the log, read more of it than the asked
//! records need, or fail a read because of one bad line.

use std::fs::OpenOptions;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const FILE: &str = "audit.log";
/// Longest reason kept, so one request cannot bloat the log.
const MAX_REASON: usize = 4096;

/// The record appended per change: the engine's `AuditEntry` (one type, so
/// what the engine decides to audit and what is on disk cannot diverge).
pub type AuditRecord = crate::engine::AuditEntry;

pub fn append_durable(dir: &Path, rec: &AuditRecord) -> io::Result<()> {
    let mut rec = rec.clone();
    if let Some(r) = &mut rec.reason
        && r.len() > MAX_REASON
    {
        let mut cut = MAX_REASON;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r.truncate(cut);
        r.push('…');
    }
    let mut line = serde_json::to_vec(&rec).map_err(io::Error::other)?;
    line.push(b'\n');
    let path = dir.join(FILE);
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    f.write_all(&line)?;
    f.sync_data()
}

/// The last `limit` records (unparseable lines are skipped), reading the
/// file backwards from its end: a log of any size costs what the records
/// asked for, at most `limit` times the longest record plus one chunk.
pub fn read_tail(dir: &Path, limit: usize) -> io::Result<Vec<AuditRecord>> {
    use std::io::{Read, Seek, SeekFrom};
    let path = dir.join(FILE);
    let mut f = match crate::world::regular_file::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    if limit == 0 {
        return Ok(vec![]);
    }
    const CHUNK: u64 = 64 * 1024;
    // A record is at most a reason of MAX_REASON plus its other fields;
    // lines longer than that are not ours and are skipped unread.
    let budget = (limit as u64).saturating_mul(MAX_REASON as u64 + 2048) + CHUNK;
    let end = f.seek(SeekFrom::End(0))?;
    let mut start = end;
    let mut tail: Vec<u8> = Vec::new();
    // Walk back until the tail holds more than `limit` line breaks (the
    // first line may be partial) or the start or the budget is reached.
    while start > 0 && end - start < budget {
        let n = CHUNK.min(start);
        start -= n;
        let mut buf = vec![0u8; n as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf)?;
        buf.extend_from_slice(&tail);
        tail = buf;
        if tail.iter().filter(|&&b| b == b'\n').count() > limit {
            break;
        }
    }
    let mut lines: Vec<&[u8]> = tail.split(|&b| b == b'\n').collect();
    if start > 0 && !lines.is_empty() {
        // Began mid-line.
        lines.remove(0);
    }
    let mut out: Vec<AuditRecord> = lines
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_slice::<AuditRecord>(l).ok())
        .take(limit)
        .collect();
    out.reverse();
    Ok(out)
}

/// Does the log show that a maintenance lock was ever taken here (a
/// `maintenance-on` or `maintenance-recover` that succeeded)? Then an
/// absent lock file means lost state, not a first run. No log: false.
/// Streams the file (it may be large); runs on the persistence thread.
pub fn shows_locks(dir: &Path) -> io::Result<bool> {
    let path = dir.join(FILE);
    let f = match crate::world::regular_file::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let mut r = io::BufReader::new(f);
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(false);
        }
        // Cheap filter first: most lines are other actions.
        let text = String::from_utf8_lossy(&line);
        if !(text.contains("maintenance-on") || text.contains("maintenance-recover")) {
            continue;
        }
        if let Ok(rec) = serde_json::from_str::<AuditRecord>(text.trim_end())
            && (rec.action == "maintenance-on" || rec.action == "maintenance-recover")
            && rec.outcome == "ok"
        {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_and_tail_skip_garbage() {
        let d = std::env::temp_dir().join(format!("supd-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let rec = |a: &str| AuditRecord {
            wall_ms: 1,
            peer_uid: Some(0),
            peer_pid: Some(5),
            holder: Some("alice".into()),
            unit: Some("db".into()),
            action: a.into(),
            reason: Some("x".repeat(10_000)),
            outcome: "ok".into(),
        };
        append_durable(&d, &rec("one")).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.join(FILE))
            .unwrap()
            .write_all(b"garbage\n")
            .unwrap();
        append_durable(&d, &rec("two")).unwrap();
        append_durable(&d, &rec("three")).unwrap();
        let t = read_tail(&d, 2).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].action, "two");
        let t = read_tail(&d, 10).unwrap();
        assert_eq!(
            t.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
            ["one", "two", "three"]
        );
        // A huge log: only its tail is read (a hole of 1 GiB before the
        // records would take seconds and a GiB of memory otherwise).
        let big = d.join("big");
        std::fs::create_dir_all(&big).unwrap();
        let f = std::fs::File::create(big.join(FILE)).unwrap();
        f.set_len(1 << 30).unwrap();
        drop(f);
        for i in 0..300 {
            append_durable(&big, &rec(&format!("r{i}"))).unwrap();
        }
        let t0 = std::time::Instant::now();
        let t = read_tail(&big, 5).unwrap();
        assert!(t0.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(
            t.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
            ["r295", "r296", "r297", "r298", "r299"]
        );
        assert!(t[1].reason.as_ref().unwrap().len() <= MAX_REASON + 4);
        let _ = std::fs::remove_dir_all(&d);
    }
}
