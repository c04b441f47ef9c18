//! The audit log: who changed what, and when.
//!
//! Owns: `<state_dir>/audit.log`, append-only JSON lines, each appended and
//! fsynced before the change it records is acknowledged (the persistence
//! thread writes audit records and lock state in decision order). Must
//! never: rewrite or truncate the log, or fail a read because of one bad
//! line.

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

/// The last `limit` records (unparseable lines are skipped).
pub fn read_tail(dir: &Path, limit: usize) -> io::Result<Vec<AuditRecord>> {
    let path = dir.join(FILE);
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut out = std::collections::VecDeque::new();
    for line in io::BufReader::new(f).lines() {
        let Ok(line) = line else { continue };
        if let Ok(r) = serde_json::from_str::<AuditRecord>(&line) {
            out.push_back(r);
            if out.len() > limit {
                out.pop_front();
            }
        }
    }
    Ok(out.into())
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
        assert!(t[1].reason.as_ref().unwrap().len() <= MAX_REASON + 4);
        let _ = std::fs::remove_dir_all(&d);
    }
}
