//! Kernel PSI triggers for pressure-aware shedding (`[shed]`).
//!
//! Owns: one trigger descriptor per watched resource and threshold — a
//! "high" one (`[shed] above`) and a "low" one (`below`) — on
//! `/proc/pressure/{cpu,memory,io}` or supd's cgroup subtree's
//! `{cpu,memory,io}.pressure`. A trigger is the string "some THRESHOLD
//! WINDOW" (microseconds) written to the open file; the kernel then marks
//! the descriptor POLLPRI at most once per window while the stall time in
//! a window exceeds the threshold. Each descriptor is watched by a task
//! that forwards the wake-up to the loop: nothing here ever polls, and with
//! no pressure nothing here ever wakes.
//!
//! Must never: read the pressure files' averages on a timer, decide what
//! to shed (the engine does, from `Event::Pressure`), or keep a descriptor
//! whose trigger the kernel refused.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::ShedConfig;
use crate::engine::shed::Resource;

/// One armed trigger.
pub struct Trigger {
    pub resource: Resource,
    pub high: bool,
    pub path: PathBuf,
    fd: AsyncFd<File>,
}

/// Open `path` and arm `trigger` ("some 200000 2000000") on it.
pub fn arm(path: &Path, trigger: &str) -> std::io::Result<File> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::other("path with a NUL byte"))?;
    // SAFETY: a NUL-terminated path; the descriptor, if any, is ours.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let mut f = unsafe { File::from_raw_fd(fd) };
    // The kernel overwrites the buffer's last byte with NUL before parsing:
    // without a NUL of our own it would cut the window's last digit.
    let mut buf = trigger.as_bytes().to_vec();
    buf.push(0);
    f.write_all(&buf).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EINVAL) {
            " (without CAP_SYS_RESOURCE the kernel accepts only windows that are a multiple of 2s; the threshold must be within the window)"
        } else if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
            " (PSI is disabled: boot with psi=1)"
        } else {
            ""
        };
        std::io::Error::new(e.kind(), format!("{e}{hint}"))
    })?;
    Ok(f)
}

/// Where `resource`'s pressure is read: supd's subtree or the system.
pub fn file(resource: Resource, subtree: Option<&Path>) -> PathBuf {
    match subtree {
        Some(dir) => dir.join(format!("{}.pressure", resource.name())),
        None => PathBuf::from("/proc/pressure").join(resource.name()),
    }
}

/// Arm every trigger `[shed]` asks for. Returns those armed and, per
/// trigger that could not be, why (the caller logs; shedding works with
/// what is armed).
pub fn arm_all(cfg: &ShedConfig, subtree: Option<&Path>) -> (Vec<Trigger>, Vec<String>) {
    let mut armed = Vec::new();
    let mut failed = Vec::new();
    for &resource in &cfg.resources {
        let path = file(resource, subtree);
        for (high, share) in [(true, cfg.above), (false, cfg.below)] {
            let trigger = cfg.trigger(share);
            let fd = arm(&path, &trigger).and_then(|f| {
                // `File` owns its descriptor (as in mount_watch / cgroup).
                #[allow(deprecated)]
                AsyncFd::with_interest(f, Interest::PRIORITY | Interest::ERROR)
            });
            match fd {
                Ok(fd) => armed.push(Trigger {
                    resource,
                    high,
                    path: path.clone(),
                    fd,
                }),
                Err(e) => failed.push(format!("{} ({trigger:?}): {e}", path.display())),
            }
        }
    }
    (armed, failed)
}

/// Watch each trigger in its own task; every firing is sent as
/// `(resource, high)`. A descriptor that reports an error (its cgroup
/// went away) ends its task, logged.
pub fn watch(triggers: Vec<Trigger>, tx: UnboundedSender<(Resource, bool)>) {
    for t in triggers {
        let tx = tx.clone();
        tokio::spawn(async move {
            let Trigger {
                resource,
                high,
                path,
                fd,
            } = t;
            loop {
                let mut guard = match fd.ready(Interest::PRIORITY | Interest::ERROR).await {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::warn!(
                            "pressure trigger on {}: {e}; no longer watched",
                            path.display()
                        );
                        return;
                    }
                };
                let ready = guard.ready();
                guard.clear_ready();
                if ready.is_error() {
                    tracing::warn!(
                        "pressure trigger on {} reported an error (its cgroup is gone?); no longer watched",
                        path.display()
                    );
                    return;
                }
                if ready.is_priority() && tx.send((resource, high)).is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_text_and_paths() {
        let c = crate::config::Config::parse(
            Path::new("supd.toml"),
            "[shed]\nabove = \"10%\"\nbelow = \"2.5%\"\nwindow = \"2s\"\n",
        )
        .expect("valid");
        let s = c.shed.expect("shed");
        assert_eq!(s.trigger(s.above), "some 200000 2000000");
        assert_eq!(s.trigger(s.below), "some 50000 2000000");
        assert_eq!(
            file(Resource::Memory, None),
            PathBuf::from("/proc/pressure/memory")
        );
        assert_eq!(
            file(Resource::Io, Some(Path::new("/sys/fs/cgroup/supd"))),
            PathBuf::from("/sys/fs/cgroup/supd/io.pressure")
        );
    }

    /// A real trigger on this kernel: armed (where PSI exists), and a
    /// refused one says why.
    #[test]
    fn arms_a_real_trigger_or_explains() {
        let p = Path::new("/proc/pressure/cpu");
        if !p.exists() {
            eprintln!("skipped: no /proc/pressure (kernel without PSI)");
            return;
        }
        match arm(p, "some 500000 2000000") {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                panic!("arming a 2s trigger on {}: {e}", p.display())
            }
            Err(e) => {
                eprintln!("skipped: cannot arm a trigger on {}: {e}", p.display());
                return;
            }
        }
        let e = arm(p, "some 500000 100000").expect_err("a threshold above the window");
        assert!(e.to_string().contains("window"), "{e}");
    }
}
