//! Durable storage of the maintenance-lock state.
//!
//! Owns: the on-disk format and the write protocol. Pure `encode`/`decode`
//! are split from the effectful `write_durable` (temporary file, fsync,
//! rename, fsync of the directory), which is named for its guarantee: when
//! it returns Ok, the new state survives a crash or power loss. The
//! previous generation is kept as `locks.prev.json` for inspection and as
//! a candidate for `maintenance recover`; `load` trusts only the current
//! file (see `load` for why) and keeps bad files for inspection.
//!
//! Must never: destroy a file it could not read (fail closed, keep it),
//! load an older generation in place of a bad current one, report Fresh
//! when a lock file exists or the audit log shows locks were taken, read
//! anything but a regular file, or acknowledge a write before the rename
//! and the directory are synced.
//!
//! Format: one JSON object, `{"format":"supd-locks","version":1,
//! "generation":N,"checksum":"crc32:XXXXXXXX","locks":{...}}`. The checksum
//! is CRC-32 over the canonical JSON of `{"generation":N,"locks":{...}}`
//! (serde_json with BTreeMap keys is deterministic). CRC detects torn and
//! corrupted writes, not tampering.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::locks::LockMap;

pub const FORMAT: &str = "supd-locks";
pub const VERSION: u32 = 1;
const CURRENT: &str = "locks.json";
const PREVIOUS: &str = "locks.prev.json";
const TMP: &str = "locks.json.tmp";
const DIR_LOCK: &str = "supd.lock";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub generation: u64,
    pub locks: LockMap,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the file is empty")]
    Empty,
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("not a supd lock file (format {0:?})")]
    WrongFormat(String),
    #[error("unsupported lock-file version {0} (this supd reads version {VERSION})")]
    UnsupportedVersion(u32),
    #[error(
        "checksum mismatch (file says {stored}, content gives {computed}): torn or corrupted write"
    )]
    Checksum { stored: String, computed: String },
}

#[derive(Serialize)]
struct Canonical<'a> {
    generation: u64,
    locks: &'a LockMap,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: String,
    version: u32,
    generation: u64,
    checksum: String,
    locks: LockMap,
}

/// Loose first pass, so a wrong version is reported as such and not as a
/// shape error.
#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u32>,
}

fn checksum(generation: u64, locks: &LockMap) -> String {
    let canon = serde_json::to_vec(&Canonical { generation, locks }).unwrap_or_default();
    format!("crc32:{:08x}", crc32fast::hash(&canon))
}

/// Pure: the bytes of a lock file.
pub fn encode(locks: &LockMap, generation: u64) -> Vec<u8> {
    let disk = OnDisk {
        format: FORMAT.to_string(),
        version: VERSION,
        generation,
        checksum: checksum(generation, locks),
        locks: locks.clone(),
    };
    let mut v = serde_json::to_vec_pretty(&disk).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Pure: parse and verify a lock file.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(DecodeError::Empty);
    }
    let header: Header =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    match header.format.as_deref() {
        Some(FORMAT) => {}
        other => return Err(DecodeError::WrongFormat(other.unwrap_or("").to_string())),
    }
    match header.version {
        Some(VERSION) => {}
        Some(v) => return Err(DecodeError::UnsupportedVersion(v)),
        None => return Err(DecodeError::UnsupportedVersion(0)),
    }
    let disk: OnDisk =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let computed = checksum(disk.generation, &disk.locks);
    if computed != disk.checksum {
        return Err(DecodeError::Checksum {
            stored: disk.checksum,
            computed,
        });
    }
    Ok(Decoded {
        generation: disk.generation,
        locks: disk.locks,
    })
}

/// Largest lock file read (a lock per unit for thousands of units fits
/// many times over); anything larger is refused unread.
pub const MAX_LOCK_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// One lock file as found on disk.
enum Slot {
    Missing,
    Valid(Decoded),
    Bad(String),
}

fn read_slot(path: &Path) -> Slot {
    match crate::world::regular_file::read(path, MAX_LOCK_FILE_BYTES) {
        Ok(bytes) => match decode(&bytes) {
            Ok(d) => Slot::Valid(d),
            Err(e) => Slot::Bad(e.to_string()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Slot::Missing,
        Err(e) => Slot::Bad(e.to_string()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    Loaded {
        locks: LockMap,
        generation: u64,
        /// Something worth telling an operator (a generation was skipped).
        note: Option<String>,
    },
    /// No lock file was ever written: the empty state is known.
    Fresh,
    /// Files exist but none is valid, or they cannot be read: fail closed.
    Failed { problem: String, kept: Vec<PathBuf> },
}

/// Holds the state directory exclusively for this process (flock; released
/// by the kernel when the process dies, so a SIGKILLed supd never blocks
/// its successor).
pub struct DirLock {
    _file: nix::fcntl::Flock<File>,
}

pub struct LockStore {
    dir: PathBuf,
    generation: u64,
}

fn ctx(op: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ctx("fsync directory", dir, e))
}

impl LockStore {
    pub fn open(dir: &Path) -> LockStore {
        LockStore {
            dir: dir.to_path_buf(),
            generation: 0,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Create the state directory (0700) if it does not exist.
    pub fn ensure_dir(&self) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| ctx("create state directory", &self.dir, e))
    }

    pub fn lock_dir(&self) -> io::Result<DirLock> {
        let path = self.dir.join(DIR_LOCK);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| ctx("open", &path, e))?;
        let holder = fs::read_to_string(&path).unwrap_or_default();
        match nix::fcntl::Flock::lock(f.try_clone()?, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(locked) => {
                let _ = f.set_len(0);
                let _ = writeln!(f, "{}", std::process::id());
                Ok(DirLock { _file: locked })
            }
            Err((_, errno)) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another supd (pid {}) holds {} ({errno}); stop it first",
                    holder.trim(),
                    self.dir.display()
                ),
            )),
        }
    }

    /// Read the lock state: the current file, and only the current file.
    ///
    /// Writes are tmp + fsync + rename, so `locks.json` is never torn by a
    /// crash: if it is missing, empty, cut short, altered, of an unknown
    /// version or not a file, that is corruption or tampering, and loading
    /// the previous generation instead would silently drop the newest
    /// acknowledged lock (issue 13). So: fail closed, keep the bad file
    /// (in place, and a copy as `locks.json.corrupt-<unix time>`), and
    /// name the previous generation as a candidate for `maintenance
    /// recover --from`. No file at all is a first run only if the audit
    /// log shows no lock was ever taken here.
    pub fn load(&mut self) -> LoadOutcome {
        if !self.dir.is_dir() {
            return LoadOutcome::Failed {
                problem: format!("state directory {} does not exist", self.dir.display()),
                kept: vec![],
            };
        }
        let cur_path = self.dir.join(CURRENT);
        let prev_path = self.dir.join(PREVIOUS);
        let cur = read_slot(&cur_path);
        let prev = read_slot(&prev_path);
        // Later writes must be newer than anything on disk, whatever we
        // make of it.
        for slot in [&cur, &prev] {
            if let Slot::Valid(d) = slot {
                self.generation = self.generation.max(d.generation);
            }
        }
        let candidate = match &prev {
            Slot::Valid(d) => format!(
                "{} holds the previous generation {} ({} lock(s)): if that is right, `supctl maintenance recover --from {}`; otherwise recover --from a copy you trust, or --accept-empty",
                prev_path.display(),
                d.generation,
                d.locks.values().map(Vec::len).sum::<usize>(),
                prev_path.display()
            ),
            Slot::Missing => "there is no previous generation: `supctl maintenance recover --from FILE` with a copy you trust, or --accept-empty".to_string(),
            Slot::Bad(why) => format!(
                "the previous generation is bad too ({why}): `supctl maintenance recover --from FILE` with a copy you trust, or --accept-empty"
            ),
        };
        match cur {
            Slot::Valid(d) => {
                let note = match &prev {
                    Slot::Bad(why) => Some(format!(
                        "{}: {why} (ignored: {} is valid)",
                        prev_path.display(),
                        cur_path.display()
                    )),
                    Slot::Valid(p) if p.generation > d.generation => Some(format!(
                        "{} has generation {}, newer than {} in {} (used: the current file decides)",
                        prev_path.display(),
                        p.generation,
                        d.generation,
                        cur_path.display()
                    )),
                    Slot::Valid(_) | Slot::Missing => None,
                };
                LoadOutcome::Loaded {
                    locks: d.locks,
                    generation: d.generation,
                    note,
                }
            }
            Slot::Missing => match prev {
                Slot::Missing => match crate::world::audit::shows_locks(&self.dir) {
                    Ok(false) => LoadOutcome::Fresh,
                    Ok(true) => LoadOutcome::Failed {
                        problem: format!(
                            "no lock file in {}, but the audit log there shows locks were taken: the lock state was deleted, not never written. Restore it with `supctl maintenance recover --from FILE` (a copy you trust), or `--accept-empty` if no unit should stay locked",
                            self.dir.display()
                        ),
                        kept: vec![],
                    },
                    Err(e) => LoadOutcome::Failed {
                        problem: format!(
                            "no lock file in {}, and the audit log cannot be read ({e}) to tell a first run from a deleted lock state; `supctl maintenance recover --accept-empty` if no unit should stay locked",
                            self.dir.display()
                        ),
                        kept: vec![],
                    },
                },
                Slot::Valid(_) | Slot::Bad(_) => LoadOutcome::Failed {
                    problem: format!(
                        "{} is missing while {} exists: supd never leaves it so (deleted or lost?); {candidate}",
                        cur_path.display(),
                        prev_path.display()
                    ),
                    kept: vec![],
                },
            },
            Slot::Bad(why) => {
                let mut kept = Vec::new();
                if let Ok(bytes) = crate::world::regular_file::read(&cur_path, MAX_LOCK_FILE_BYTES)
                {
                    let ts = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let aside = self.dir.join(format!("{CURRENT}.corrupt-{ts}"));
                    if fs::write(&aside, &bytes).is_ok() {
                        kept.push(aside);
                    }
                }
                kept.push(cur_path.clone());
                LoadOutcome::Failed {
                    problem: format!(
                        "{}: {why} — not loading the previous generation instead (it would drop newer locks); {candidate}",
                        cur_path.display()
                    ),
                    kept,
                }
            }
        }
    }

    /// Write `locks` as the next generation; Ok means it is on disk.
    pub fn write_durable(&mut self, locks: &LockMap) -> io::Result<u64> {
        let generation = self.generation + 1;
        let bytes = encode(locks, generation);
        let tmp = self.dir.join(TMP);
        let cur = self.dir.join(CURRENT);
        let prev = self.dir.join(PREVIOUS);
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| ctx("create", &tmp, e))?;
            f.write_all(&bytes).map_err(|e| ctx("write", &tmp, e))?;
            f.sync_all().map_err(|e| ctx("fsync", &tmp, e))
        })();
        if let Err(e) = written {
            // A half-written temporary file only holds space a full disk
            // needs for the retry.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // Keep the last good generation: current becomes previous (a hard
        // link, so there is no instant without a valid current file).
        // (Only a regular file: a directory in its place — fail-closed at
        // load — cannot be linked, and the rename below says why.)
        if fs::symlink_metadata(&cur).is_ok_and(|m| m.is_file()) {
            let _ = fs::remove_file(&prev);
            fs::hard_link(&cur, &prev).map_err(|e| ctx("keep previous generation", &prev, e))?;
        }
        fs::rename(&tmp, &cur).map_err(|e| ctx("rename onto", &cur, e))?;
        // From here the file may be on disk even if the fsync fails: the
        // next write must be a newer generation either way.
        self.generation = generation;
        fsync_dir(&self.dir)?;
        Ok(generation)
    }

    /// For `maintenance recover --from FILE`.
    pub fn read_file(path: &Path) -> Result<Decoded, String> {
        let bytes = crate::world::regular_file::read(path, MAX_LOCK_FILE_BYTES)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::locks::Holder;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "supd-ls-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample(n: usize) -> LockMap {
        let mut m = LockMap::new();
        for i in 0..n {
            m.insert(
                format!("u{i}"),
                vec![Holder {
                    holder: "alice".into(),
                    reason: format!("reason {i} \"quoted\" ünïcode"),
                    since_unix_ms: 1_700_000_000_000 + i as u64,
                }],
            );
        }
        m
    }

    #[test]
    fn round_trip_and_every_decode_error() {
        let m = sample(3);
        let b = encode(&m, 7);
        assert_eq!(
            decode(&b).unwrap(),
            Decoded {
                generation: 7,
                locks: m.clone()
            }
        );
        assert_eq!(decode(b""), Err(DecodeError::Empty));
        assert!(matches!(decode(b"{nope"), Err(DecodeError::NotJson(_))));
        assert!(matches!(
            decode(br#"{"format":"x","version":1}"#),
            Err(DecodeError::WrongFormat(_))
        ));
        let v2 = String::from_utf8(b.clone())
            .unwrap()
            .replace("\"version\": 1", "\"version\": 2");
        assert_eq!(
            decode(v2.as_bytes()),
            Err(DecodeError::UnsupportedVersion(2))
        );
        let tampered = String::from_utf8(b)
            .unwrap()
            .replace("reason 1", "reason X");
        assert!(matches!(
            decode(tampered.as_bytes()),
            Err(DecodeError::Checksum { .. })
        ));
    }

    #[test]
    fn fresh_then_generations_and_a_truncated_current_fails_closed() {
        let d = tmp("gen");
        let mut s = LockStore::open(&d);
        assert_eq!(s.load(), LoadOutcome::Fresh);
        s.write_durable(&sample(1)).unwrap();
        s.write_durable(&sample(2)).unwrap();
        match LockStore::open(&d).load() {
            LoadOutcome::Loaded {
                generation, note, ..
            } => assert_eq!((generation, note), (2, None)),
            other => panic!("{other:?}"),
        }
        let good = fs::read(d.join(CURRENT)).unwrap();
        // Truncate the current file at every offset: the writes are
        // tmp + fsync + rename, so a short current file is corruption, not
        // a torn write — never Fresh, never the older generation.
        for cut in 0..good.len() {
            if good[cut..].iter().all(|b| b.is_ascii_whitespace()) {
                break; // only the trailing newline is gone: still whole
            }
            fs::write(d.join(CURRENT), &good[..cut]).unwrap();
            match LockStore::open(&d).load() {
                LoadOutcome::Failed { problem, .. } => {
                    assert!(problem.contains("locks.json"), "cut {cut}: {problem}");
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        let _ = fs::remove_dir_all(&d);
    }

    /// Issue 13 item 2: a bad current file with a valid previous one once
    /// loaded the older generation silently (the newest acknowledged lock
    /// lost). Every kind of bad current file fails closed, keeps the file,
    /// and names the previous generation as a candidate for `recover`.
    #[test]
    fn bad_current_never_rolls_back_to_the_previous_generation() {
        type Spoil = fn(&Path, &[u8]);
        let cases: [(&str, Spoil); 6] = [
            ("empty", |p, _| fs::write(p, b"").unwrap()),
            ("truncated", |p, g| fs::write(p, &g[..g.len() / 2]).unwrap()),
            ("byte flipped", |p, g| {
                let mut b = g.to_vec();
                let at = b.len() - 20;
                b[at] ^= 0x01;
                fs::write(p, b).unwrap()
            }),
            ("unknown version", |p, g| {
                let t = String::from_utf8(g.to_vec())
                    .unwrap()
                    .replace("\"version\": 1", "\"version\": 9");
                fs::write(p, t).unwrap()
            }),
            ("a directory", |p, _| {
                fs::remove_file(p).unwrap();
                fs::create_dir(p).unwrap()
            }),
            ("missing", |p, _| fs::remove_file(p).unwrap()),
        ];
        for (what, spoil) in cases {
            let d = tmp("rollback");
            let mut s = LockStore::open(&d);
            s.write_durable(&sample(1)).unwrap();
            s.write_durable(&sample(3)).unwrap();
            let cur = d.join(CURRENT);
            let good = fs::read(&cur).unwrap();
            spoil(&cur, &good);
            let before = fs::symlink_metadata(&cur).ok().map(|m| m.file_type());
            match LockStore::open(&d).load() {
                LoadOutcome::Failed { problem, .. } => {
                    assert!(
                        problem.contains("generation 1") && problem.contains("locks.prev.json"),
                        "{what}: {problem}"
                    );
                }
                other => panic!("{what}: rolled back: {other:?}"),
            }
            // Nothing was removed or replaced.
            assert_eq!(
                fs::symlink_metadata(&cur).ok().map(|m| m.file_type()),
                before,
                "{what}"
            );
            let _ = fs::remove_dir_all(&d);
        }
    }

    /// Both files gone is "first run" only if no lock was ever taken here:
    /// the audit log remembers.
    #[test]
    fn both_files_missing_is_fresh_only_without_audited_locks() {
        let d = tmp("gone");
        let mut s = LockStore::open(&d);
        s.write_durable(&sample(1)).unwrap();
        fs::remove_file(d.join(CURRENT)).unwrap();
        let _ = fs::remove_file(d.join(PREVIOUS));
        // No audit log: first run.
        assert_eq!(LockStore::open(&d).load(), LoadOutcome::Fresh);
        let rec = |action: &str, outcome: &str| crate::world::audit::AuditRecord {
            wall_ms: 1,
            peer_uid: Some(0),
            peer_pid: Some(1),
            holder: Some("alice".into()),
            unit: Some("db".into()),
            action: action.into(),
            reason: Some("x".into()),
            outcome: outcome.into(),
        };
        // Audited changes that took no lock: still first run.
        crate::world::audit::append_durable(&d, &rec("restart", "ok")).unwrap();
        crate::world::audit::append_durable(
            &d,
            &rec("maintenance-on", "refused: lock state unknown"),
        )
        .unwrap();
        assert_eq!(LockStore::open(&d).load(), LoadOutcome::Fresh);
        crate::world::audit::append_durable(&d, &rec("maintenance-on", "ok")).unwrap();
        match LockStore::open(&d).load() {
            LoadOutcome::Failed { problem, .. } => {
                assert!(
                    problem.contains("audit") && problem.contains("maintenance recover"),
                    "{problem}"
                );
            }
            other => panic!("{other:?}"),
        }
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn both_corrupt_fails_closed_and_keeps_files() {
        let d = tmp("bad");
        let mut s = LockStore::open(&d);
        s.write_durable(&sample(1)).unwrap();
        s.write_durable(&sample(2)).unwrap();
        fs::write(d.join(CURRENT), vec![0u8; 64]).unwrap();
        let flipped: Vec<u8> = fs::read(d.join(PREVIOUS))
            .unwrap()
            .iter()
            .map(|b| b ^ 0x20)
            .collect();
        fs::write(d.join(PREVIOUS), &flipped).unwrap();
        match LockStore::open(&d).load() {
            LoadOutcome::Failed { kept, problem } => {
                assert!(
                    problem.contains("previous generation is bad too"),
                    "{problem}"
                );
                // A copy aside and the original, untouched; the previous
                // file is left as it is too.
                assert_eq!(kept.len(), 2, "{problem}");
                assert_eq!(fs::read(&kept[0]).unwrap(), vec![0u8; 64]);
                assert_eq!(kept[1], d.join(CURRENT));
                assert_eq!(fs::read(d.join(CURRENT)).unwrap(), vec![0u8; 64]);
                assert_eq!(fs::read(d.join(PREVIOUS)).unwrap(), flipped);
            }
            other => panic!("{other:?}"),
        }
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn unreadable_file_fails_closed() {
        let d = tmp("unread");
        // A directory where the file should be: read fails with EISDIR even
        // for root (chmod 000 would not stop root).
        fs::create_dir_all(d.join(CURRENT)).unwrap();
        assert!(matches!(
            LockStore::open(&d).load(),
            LoadOutcome::Failed { .. }
        ));
        let _ = fs::remove_dir_all(&d);
        assert!(
            matches!(LockStore::open(&d).load(), LoadOutcome::Failed { .. }),
            "missing dir"
        );
    }

    #[test]
    fn dir_lock_is_exclusive_and_released_on_drop() {
        let d = tmp("flock");
        let s = LockStore::open(&d);
        let l = s.lock_dir().unwrap();
        let err = s.lock_dir().err().expect("second lock must fail");
        assert!(err.to_string().contains("another supd"), "{err}");
        drop(l);
        assert!(s.lock_dir().is_ok());
        let _ = fs::remove_dir_all(&d);
    }

    /// A child writes generations in a loop, printing "acked N" after each
    /// `write_durable`; we SIGKILL it at random moments. Every acknowledged
    /// generation must be loadable afterwards.
    #[test]
    fn sigkill_during_writes_never_loses_an_acknowledged_generation() {
        if let Some(dir) = std::env::var_os("SUPD_LS_CHILD_DIR") {
            let mut s = LockStore::open(Path::new(&dir));
            if let LoadOutcome::Loaded { .. } = s.load() {}
            let mut out = std::io::stdout();
            for i in 0..100_000usize {
                let g = s.write_durable(&sample(1 + i % 5)).unwrap();
                let _ = writeln!(out, "acked {g}");
                let _ = out.flush();
            }
            return;
        }
        use std::io::BufRead;
        let d = tmp("kill");
        let exe = std::env::current_exe().unwrap();
        let mut x: u64 = 88172645463325252;
        for round in 0..25 {
            let mut child = std::process::Command::new(&exe)
                .args(["--exact", "world::lock_store::tests::sigkill_during_writes_never_loses_an_acknowledged_generation", "--nocapture", "--test-threads=1"])
                .env("SUPD_LS_CHILD_DIR", &d)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let wait = std::time::Duration::from_millis(20 + x % 80);
            let stdout = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                let mut last = 0u64;
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Some(n) = line.strip_prefix("acked ") {
                        last = n.trim().parse().unwrap_or(last);
                    }
                }
                last
            });
            std::thread::sleep(wait);
            let _ = child.kill();
            let _ = child.wait();
            let acked = reader.join().unwrap();
            match LockStore::open(&d).load() {
                LoadOutcome::Loaded { generation, .. } => {
                    assert!(
                        generation >= acked,
                        "round {round}: acked {acked}, on disk {generation}"
                    )
                }
                LoadOutcome::Fresh => assert_eq!(acked, 0, "round {round}"),
                other => panic!("round {round}: {other:?}"),
            }
        }
        let _ = fs::remove_dir_all(&d);
    }
}
