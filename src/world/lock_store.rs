//! Durable storage of the maintenance-lock state.
//!
//! Owns: the on-disk format and the write protocol. Pure `encode`/`decode`
//! are split from the effectful `write_durable` (temporary file, fsync,
//! rename, fsync of the directory), which is named for its guarantee: when
//! it returns Ok, the new state survives a crash or power loss. Two
//! generations are kept (`locks.json` and `locks.prev.json`) so one torn
//! or corrupt file never loses the state; `load` takes the newest valid
//! generation and keeps bad files aside for inspection.
//!
//! Must never: destroy a file it could not read (fail closed, keep it),
//! report Fresh when a lock file exists, or acknowledge a write before the
//! rename and the directory are synced.
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

    /// Read the newest valid generation. Bad files are copied aside as
    /// `NAME.corrupt-<unix time>` (originals are left in place too: the
    /// next successful write rotates them away).
    pub fn load(&mut self) -> LoadOutcome {
        if !self.dir.is_dir() {
            return LoadOutcome::Failed {
                problem: format!("state directory {} does not exist", self.dir.display()),
                kept: vec![],
            };
        }
        let mut problems = Vec::new();
        let mut kept = Vec::new();
        let mut found_any = false;
        let mut best: Option<(Decoded, &str)> = None;
        for name in [CURRENT, PREVIOUS] {
            let path = self.dir.join(name);
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    found_any = true;
                    problems.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            found_any = true;
            match decode(&bytes) {
                Ok(d) => {
                    if best
                        .as_ref()
                        .is_none_or(|(b, _)| d.generation > b.generation)
                    {
                        best = Some((d, name));
                    }
                }
                Err(e) => {
                    problems.push(format!("{}: {e}", path.display()));
                    let ts = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let aside = self.dir.join(format!("{name}.corrupt-{ts}"));
                    if fs::write(&aside, &bytes).is_ok() {
                        kept.push(aside);
                    } else {
                        kept.push(path.clone());
                    }
                }
            }
        }
        match best {
            Some((d, name)) => {
                self.generation = d.generation;
                let note = (!problems.is_empty() || name != CURRENT).then(|| {
                    format!(
                        "used generation {} from {name}; {}",
                        d.generation,
                        if problems.is_empty() {
                            "the current file was missing".to_string()
                        } else {
                            format!(
                                "{} (kept: {})",
                                problems.join("; "),
                                kept.iter()
                                    .map(|k| k.display().to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }
                    )
                });
                LoadOutcome::Loaded {
                    locks: d.locks,
                    generation: d.generation,
                    note,
                }
            }
            None if !found_any => LoadOutcome::Fresh,
            None => LoadOutcome::Failed {
                problem: format!("no valid lock state: {}", problems.join("; ")),
                kept,
            },
        }
    }

    /// Write `locks` as the next generation; Ok means it is on disk.
    pub fn write_durable(&mut self, locks: &LockMap) -> io::Result<u64> {
        let generation = self.generation + 1;
        let bytes = encode(locks, generation);
        let tmp = self.dir.join(TMP);
        let cur = self.dir.join(CURRENT);
        let prev = self.dir.join(PREVIOUS);
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| ctx("create", &tmp, e))?;
            f.write_all(&bytes).map_err(|e| ctx("write", &tmp, e))?;
            f.sync_all().map_err(|e| ctx("fsync", &tmp, e))?;
        }
        // Keep the last good generation: current becomes previous (a hard
        // link, so there is no instant without a valid current file).
        if cur.exists() {
            let _ = fs::remove_file(&prev);
            fs::hard_link(&cur, &prev).map_err(|e| ctx("keep previous generation", &prev, e))?;
        }
        fs::rename(&tmp, &cur).map_err(|e| ctx("rename onto", &cur, e))?;
        fsync_dir(&self.dir)?;
        self.generation = generation;
        Ok(generation)
    }

    /// For `maintenance recover --from FILE`.
    pub fn read_file(path: &Path) -> Result<Decoded, String> {
        let bytes = fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
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
    fn fresh_then_generations_and_torn_current_falls_back() {
        let d = tmp("gen");
        let mut s = LockStore::open(&d);
        assert_eq!(s.load(), LoadOutcome::Fresh);
        s.write_durable(&sample(1)).unwrap();
        s.write_durable(&sample(2)).unwrap();
        let good = fs::read(d.join(CURRENT)).unwrap();
        // Truncate the current file at every offset: never Fresh, never
        // silently empty; previous generation (1) or current (2).
        for cut in 0..good.len() {
            fs::write(d.join(CURRENT), &good[..cut]).unwrap();
            let mut s2 = LockStore::open(&d);
            match s2.load() {
                LoadOutcome::Loaded {
                    generation, locks, ..
                } => {
                    assert!(generation == 1 || generation == 2, "cut {cut}");
                    assert!(!locks.is_empty());
                }
                other => panic!("cut {cut}: {other:?}"),
            }
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
                assert_eq!(kept.len(), 2, "{problem}");
                assert_eq!(fs::read(&kept[1]).unwrap(), flipped);
                // Originals untouched too.
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
