//! Watching the mount table without polling.
//!
//! Owns: reading `/proc/self/mountinfo`, and waking when it changes. The
//! kernel marks an open mountinfo file with POLLPRI|POLLERR when the
//! namespace's mount table changes; re-reading it from the start clears
//! the mark. So an idle supd with units waiting on mounts sleeps in epoll
//! and wakes only on a real change. Must never: poll on a timer, or
//! swallow a read error silently (the driver decides what to do).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::mounts::MountTable;

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Read and parse the current mount table.
pub fn read_mount_table() -> std::io::Result<MountTable> {
    let mut text = String::new();
    File::open(MOUNTINFO)?.read_to_string(&mut text)?;
    Ok(MountTable::parse(&text))
}

pub struct MountWatcher {
    fd: AsyncFd<File>,
}

impl MountWatcher {
    pub fn new() -> std::io::Result<MountWatcher> {
        let mut f = File::open(MOUNTINFO)?;
        // Reading once arms the change notification for this open file.
        let mut sink = String::new();
        f.read_to_string(&mut sink)?;
        // `with_interest` is deprecated for types that do not own their fd;
        // `File` owns it, so the I/O-safety concern does not apply.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(f, Interest::PRIORITY | Interest::ERROR)?;
        Ok(MountWatcher { fd })
    }

    /// Wait for the next change and return the new table. Several changes
    /// in a burst may be coalesced into one re-read.
    pub async fn changed(&mut self) -> std::io::Result<MountTable> {
        let mut guard = self
            .fd
            .ready_mut(Interest::PRIORITY | Interest::ERROR)
            .await?;
        let f = guard.get_inner_mut();
        f.seek(SeekFrom::Start(0))?;
        let mut text = String::new();
        f.read_to_string(&mut text)?;
        guard.clear_ready();
        Ok(MountTable::parse(&text))
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
