//! Watching the mount table without polling.
//!
//! Owns: reading `/proc/self/mountinfo`, and waking when it changes. The
//! kernel marks an open mountinfo file with POLLPRI|POLLERR when the
//! namespace's mount table changes; re-reading it from the start clears
//! the mark. So an idle supd with units waiting on mounts sleeps in epoll
//! and wakes only on a real change.
//!
//! The table is read as bytes: a mount point is any byte string, and one
//! that is not UTF-8 must not make the table unreadable (issue 13: it once
//! ended mount supervision for good). `ResilientWatcher` never stops
//! watching: after an error it says so once (`MountNews::Unknown`, so the
//! engine fails closed) and re-opens the file with a bounded backoff until
//! a read succeeds.
//!
//! Must never: poll on a timer while the table is readable, retry in a
//! busy loop, or swallow a read error silently.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::mounts::MountTable;

const MOUNTINFO: &str = "/proc/self/mountinfo";
/// First retry after a failure, doubled up to `RETRY_MAX`.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);

fn read_from(f: &mut File) -> std::io::Result<MountTable> {
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(MountTable::parse_bytes(&bytes))
}

/// Read and parse the current mount table.
pub fn read_mount_table() -> std::io::Result<MountTable> {
    read_from(&mut File::open(MOUNTINFO)?)
}

pub struct MountWatcher {
    fd: AsyncFd<File>,
}

impl MountWatcher {
    pub fn new() -> std::io::Result<MountWatcher> {
        MountWatcher::open(Path::new(MOUNTINFO)).map(|(w, _)| w)
    }

    /// Open `path` (a mountinfo file) and read it once, which arms the
    /// change notification for this open file; the table read is returned.
    pub fn open(path: &Path) -> std::io::Result<(MountWatcher, MountTable)> {
        let mut f = File::open(path)?;
        let table = read_from(&mut f)?;
        // `with_interest` is deprecated for types that do not own their fd;
        // `File` owns it, so the I/O-safety concern does not apply.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(f, Interest::PRIORITY | Interest::ERROR)?;
        Ok((MountWatcher { fd }, table))
    }

    /// Wait for the next change and return the new table. Several changes
    /// in a burst may be coalesced into one re-read. Cancel-safe.
    pub async fn changed(&mut self) -> std::io::Result<MountTable> {
        let mut guard = self
            .fd
            .ready_mut(Interest::PRIORITY | Interest::ERROR)
            .await?;
        let f = guard.get_inner_mut();
        f.seek(SeekFrom::Start(0))?;
        let table = read_from(f)?;
        guard.clear_ready();
        Ok(table)
    }
}

/// What the driver hears from `ResilientWatcher::next`.
#[derive(Debug)]
pub enum MountNews {
    Changed(MountTable),
    /// The table cannot be read; sent once per outage, followed by
    /// `Changed` when a read succeeds again.
    Unknown(String),
}

/// A mount watcher that never gives up (see the module doc).
pub struct ResilientWatcher {
    path: PathBuf,
    watcher: Option<MountWatcher>,
    /// When to try re-opening (set while `watcher` is None). A deadline,
    /// not a delay, so `next` stays cancel-safe inside `select!`.
    retry_at: Option<tokio::time::Instant>,
    backoff: Duration,
    /// `Unknown` was sent and no good read has followed yet.
    reported: bool,
    /// Re-open attempts so far (for tests and logs).
    pub attempts: u64,
}

impl ResilientWatcher {
    /// Start watching `/proc/self/mountinfo`. Also returns the first table,
    /// or why it could not be read (the caller then fails closed; watching
    /// is retried by `next`).
    pub fn start() -> (ResilientWatcher, Result<MountTable, String>) {
        ResilientWatcher::start_at(Path::new(MOUNTINFO))
    }

    pub fn start_at(path: &Path) -> (ResilientWatcher, Result<MountTable, String>) {
        let mut w = ResilientWatcher {
            path: path.to_path_buf(),
            watcher: None,
            retry_at: None,
            backoff: RETRY_MIN,
            reported: false,
            attempts: 0,
        };
        let first = match MountWatcher::open(path) {
            Ok((watcher, table)) => {
                w.watcher = Some(watcher);
                Ok(table)
            }
            Err(e) => {
                let why = format!("reading {}: {e}", path.display());
                tracing::error!("cannot watch the mount table ({why}); retrying");
                w.failed();
                w.reported = true;
                Err(why)
            }
        };
        (w, first)
    }

    fn failed(&mut self) {
        self.watcher = None;
        self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
    }

    /// The next change, or the news that the table became unreadable.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> MountNews {
        loop {
            if let Some(w) = &mut self.watcher {
                match w.changed().await {
                    Ok(table) => return MountNews::Changed(table),
                    Err(e) => {
                        let why = format!("reading {}: {e}", self.path.display());
                        tracing::error!("mount watcher failed ({why}); re-opening");
                        self.failed();
                        if !self.reported {
                            self.reported = true;
                            return MountNews::Unknown(why);
                        }
                    }
                }
                continue;
            }
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
            }
            self.attempts += 1;
            match MountWatcher::open(&self.path) {
                Ok((w, table)) => {
                    if self.reported {
                        tracing::info!("watching the mount table again");
                    }
                    self.watcher = Some(w);
                    self.retry_at = None;
                    self.backoff = RETRY_MIN;
                    self.reported = false;
                    return MountNews::Changed(table);
                }
                Err(e) => {
                    let why = format!("reading {}: {e}", self.path.display());
                    tracing::warn!(
                        "mount table still unreadable ({why}); next try in {:?}",
                        self.backoff
                    );
                    self.failed();
                    if !self.reported {
                        self.reported = true;
                        return MountNews::Unknown(why);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs in a private mount namespace via `unshare`, re-executing this
    /// test binary (mount namespaces belong to the whole process, and the
    /// test harness is multi-threaded).
    #[test]
    fn wakes_on_mount_and_unmount_and_not_otherwise() {
        if std::env::var_os("SUPD_MOUNT_WATCH_INNER").is_some() {
            return inner();
        }
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP mount_watch: needs root for a private mount namespace");
            return;
        }
        let exe = std::env::current_exe().expect("test exe");
        let out = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "--"])
            .arg(exe)
            .args([
                "--exact",
                "world::mount_watch::tests::wakes_on_mount_and_unmount_and_not_otherwise",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SUPD_MOUNT_WATCH_INNER", "1")
            .output()
            .expect("unshare");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "inner test failed:\n{text}");
        assert!(text.contains("1 passed"), "inner test did not run:\n{text}");
    }

    /// After a failure the watcher re-opens with a bounded backoff (no
    /// busy loop) and reports the table once it is readable again.
    #[test]
    fn retries_with_backoff_until_readable_again() {
        let dir = std::env::temp_dir().join(format!("supd-mw-retry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let link = dir.join("mountinfo");
        std::os::unix::fs::symlink(dir.join("missing"), &link).expect("dangling link");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let (mut w, first) = ResilientWatcher::start_at(&link);
            assert!(first.is_err());
            // Unknown was already reported by start: no news while it
            // stays unreadable, and only a few attempts in a second.
            let quiet = tokio::time::timeout(Duration::from_secs(1), w.next()).await;
            assert!(quiet.is_err(), "news while still unreadable: {quiet:?}");
            assert!(
                (1..=5).contains(&w.attempts),
                "{} attempts in 1s",
                w.attempts
            );
            std::fs::remove_file(&link).expect("rm link");
            std::os::unix::fs::symlink("/proc/self/mountinfo", &link).expect("link");
            let news = tokio::time::timeout(Duration::from_secs(5), w.next())
                .await
                .expect("no news after the table became readable");
            match news {
                MountNews::Changed(t) => assert!(!t.entries.is_empty()),
                other => panic!("{other:?}"),
            }
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn inner() {
        let dir = std::env::temp_dir().join(format!("supd-mw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        struct Unmount(std::path::PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let guard = Unmount(dir.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let mut w = MountWatcher::new().expect("watcher");
            // Nothing changes: no wake-up.
            let idle = tokio::time::timeout(Duration::from_millis(300), w.changed()).await;
            assert!(idle.is_err(), "woke without a change");
            nix::mount::mount(
                Some("supd-mw"),
                &dir,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .expect("mount tmpfs");
            let t = tokio::time::timeout(Duration::from_secs(5), w.changed())
                .await
                .expect("no wake-up on mount")
                .expect("read");
            assert!(t.find(&dir).is_some(), "new mount not in table");
            nix::mount::umount2(&dir, nix::mount::MntFlags::empty()).expect("umount");
            let t = tokio::time::timeout(Duration::from_secs(5), w.changed())
                .await
                .expect("no wake-up on unmount")
                .expect("read");
            assert!(t.find(&dir).is_none(), "unmounted path still in table");
            let idle = tokio::time::timeout(Duration::from_millis(300), w.changed()).await;
            assert!(idle.is_err(), "woke again without a change");
        });
        drop(guard);
    }
}
