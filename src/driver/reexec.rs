//! `supctl reexec`: supd replaces its own image in place.
//!
//! Owns: handing the old image's state to the new one across execve(2) —
//! the engine's `Handoff` (operator intent, failures, restart counts,
//! shedding) and the read ends of the services' output pipes (a service
//! writing to a pipe nobody holds open dies of SIGPIPE) — through a memfd
//! whose number the new image finds in `SUPD_REEXEC_FD`; and taking it
//! back in the new image. Runs, main pids and locks need no hand-off: the
//! new image adopts every run from the cgroups (the main pid recorded on
//! each group) as after a crash, and reads the lock file.
//!
//! Must never: exec with the persistence thread mid-write (it is closed
//! first); leave a descriptor open in the new image that nobody claims;
//! restart a service.

use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;

use super::Driver;
use crate::engine::Handoff;

const ENV: &str = "SUPD_REEXEC_FD";

/// What the old image hands over.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Resume {
    pub(super) handoff: Handoff,
    /// Unit name -> descriptor number of its output pipe's read end, open
    /// in the new image.
    pub(super) outputs: Vec<(String, i32)>,
    /// `[[listen]]` sockets: (unit, "kind address", descriptor number),
    /// so they stay bound across the re-exec. Absent from an older image.
    #[serde(default)]
    pub(super) listeners: Vec<(String, String, i32)>,
}

/// What the new image took over: the hand-off for the engine, and the
/// output pipes waiting for their units to be adopted.
pub(super) struct Taken {
    pub(super) handoff: Handoff,
    pub(super) outputs: HashMap<String, OwnedFd>,
    pub(super) listeners: Vec<(String, String, OwnedFd)>,
}

/// In the new image, before any thread exists: read (and forget) what the
/// old image handed over.
pub fn take() -> Option<Resume> {
    let v = std::env::var(ENV).ok()?;
    // SAFETY: called first thing in `driver::run`, before the runtime or
    // any thread of ours exists, so nothing reads the environment
    // concurrently.
    unsafe { std::env::remove_var(ENV) };
    let fd: i32 = v.parse().ok()?;
    if fd < 3 {
        return None;
    }
    // SAFETY: the old image left this descriptor open for us alone.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut text = String::new();
    if let Err(e) = f.read_to_string(&mut text) {
        tracing::error!("reading the re-exec hand-off: {e}; starting without it");
        return None;
    }
    match serde_json::from_str(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!("the re-exec hand-off is not readable ({e}); starting without it");
            None
        }
    }
}

impl Resume {
    pub(super) fn into_taken(self) -> Taken {
        let mut outputs = HashMap::new();
        for (unit, fd) in self.outputs {
            if fd < 3 {
                continue;
            }
            // SAFETY: the old image left these open for us, one per unit.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // Ours again: close-on-exec, as everything supd holds.
            // SAFETY: fcntl on a descriptor we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
            outputs.insert(unit, fd);
        }
        let mut listeners = Vec::new();
        for (unit, key, fd) in self.listeners {
            if fd < 3 {
                continue;
            }
            // SAFETY: the old image left these open for us, one per socket.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: fcntl on a descriptor we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
            listeners.push((unit, key, fd));
        }
        Taken {
            handoff: self.handoff,
            outputs,
            listeners,
        }
    }
}

/// Can `exe` be executed? Checked before the operator is told "ok".
pub(super) fn check_exe(exe: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(exe.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", exe.display()))?;
    // SAFETY: access(2) on a NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
        return Err(format!(
            "cannot re-execute {}: {}",
            exe.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

impl Driver {
    /// Replace this image (the persistence thread is closed already).
    /// Returns only if execve failed (logged).
    pub(super) fn reexec_now(&mut self, handoff: Handoff) {
        let mut outputs = Vec::new();
        for (run, fd) in self.procs.outputs() {
            let Some(name) = self
                .engine
                .units()
                .find(|(_, u)| u.state.run() == Some(run))
                .map(|(_, u)| u.spec.name.clone())
            else {
                continue;
            };
            // SAFETY: fcntl on a descriptor the table owns; it must stay
            // open across exec for the new image.
            unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
            outputs.push((name, fd));
        }
        let listeners = self.listeners.export();
        for (_, _, fd) in &listeners {
            // SAFETY: as above; the listener table keeps owning it.
            unsafe { libc::fcntl(*fd, libc::F_SETFD, 0) };
        }
        let resume = Resume {
            handoff,
            outputs,
            listeners,
        };
        let memfd = match hand_off_file(&resume) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("cannot prepare the re-exec hand-off: {e}; not re-executing");
                return;
            }
        };
        tracing::info!(
            "re-executing {} ({} units handed over)",
            self.exe.display(),
            resume.handoff.units.len()
        );
        let mut args = std::env::args_os();
        let arg0 = args
            .next()
            .unwrap_or_else(|| self.exe.clone().into_os_string());
        // std resets the signal mask and SIGPIPE before exec, as a fresh
        // supd expects; the runtime's descriptors are all close-on-exec.
        let ignored = crate::world::signals::ignore_for_exec();
        let e = std::process::Command::new(&self.exe)
            .arg0(arg0)
            .args(args)
            .env(ENV, memfd.as_raw_fd().to_string())
            .exec();
        drop(ignored);
        tracing::error!(
            "re-executing {} failed: {e}. supd keeps running, but its persistence thread is closed: lock changes cannot be saved. Restart supd.",
            self.exe.display()
        );
        for (_, fd) in resume.outputs {
            // SAFETY: as above.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        for (_, _, fd) in resume.listeners {
            // SAFETY: as above.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// A memfd (not close-on-exec) holding the hand-off, read from the start.
fn hand_off_file(resume: &Resume) -> std::io::Result<std::fs::File> {
    let json = serde_json::to_vec(resume).map_err(std::io::Error::other)?;
    // SAFETY: memfd_create with a NUL-terminated name and no flags (the new
    // image must inherit it).
    let fd = unsafe { libc::memfd_create(c"supd-reexec".as_ptr(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(&json)?;
    f.rewind()?;
    Ok(f)
}
