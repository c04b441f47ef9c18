//! Creating service and probe processes.
//!
//! Owns: turning a `UnitSpec` into a running process — its own session and
//! process group (setsid), user/group, clean environment, stdin from
//! /dev/null, stdout/stderr as pipes for `output` — and the last-moment mount
//! re-check (invariant 1: the mount table is read just before the process is
//! created). Must never: wait for or reap a child (only the driver's reaper
//! does), or use `tokio::process` (it would compete for exit statuses).

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::mounts::MountProblem;
use crate::unit::{MountReq, UnitSpec};

/// Default PATH for services: the kernel gives PID 1 none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct Spawned {
    pub pid: i32,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Read end of the `[ready] kind = "fd"` pipe.
    pub ready: Option<OwnedFd>,
}

#[derive(Debug)]
pub enum SpawnError {
    /// The last-moment check found a required mount missing.
    Mount(MountProblem),
    /// Setup or exec failed; the text says which step and why.
    Failed(String),
}

/// Check every mount requirement against a fresh read of the mount table.
pub fn recheck_mounts(mounts: &[MountReq]) -> Result<(), SpawnError> {
    if mounts.is_empty() {
        return Ok(());
    }
    let table = crate::world::mount_watch::read_mount_table()
        .map_err(|e| SpawnError::Failed(format!("reading /proc/self/mountinfo: {e}")))?;
    for m in mounts {
        table.check(m).map_err(SpawnError::Mount)?;
    }
    Ok(())
}

/// Extra environment supd adds for a unit.
pub struct SpawnEnv<'a> {
    pub notify_socket: Option<&'a str>,
    /// For `[stop] exec`: the pid of the process it should stop, as
    /// `$MAINPID` (as systemd's ExecStop has it).
    pub main_pid: Option<i32>,
}

/// Spawn `argv` with the unit's identity and environment.
pub fn spawn(
    spec: &UnitSpec,
    argv: &[String],
    mounts: &[MountReq],
    extra: &SpawnEnv<'_>,
    capture_output: bool,
    ready_fd: Option<i32>,
) -> Result<Spawned, SpawnError> {
    let Some(program) = argv.first() else {
        return Err(SpawnError::Failed("empty exec".to_string()));
    };
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..]);
    cmd.env_clear();
    cmd.env("PATH", DEFAULT_PATH);
    cmd.env("SUPD_UNIT", &spec.name);
    let mut owner: Option<(u32, u32)> = None;
    if let Some(user) = &spec.user {
        let u = nix::unistd::User::from_name(user)
            .map_err(|e| SpawnError::Failed(format!("looking up user {user}: {e}")))?
            .ok_or_else(|| {
                SpawnError::Failed(format!(
                    "user {user} does not exist (create it, or change `user` in {})",
                    spec.file.display()
                ))
            })?;
        cmd.uid(u.uid.as_raw());
        cmd.gid(u.gid.as_raw());
        owner = Some((u.uid.as_raw(), u.gid.as_raw()));
        cmd.env("USER", user);
        cmd.env("LOGNAME", user);
        cmd.env("HOME", &u.dir);
    }
    if let Some(group) = &spec.group {
        let g = nix::unistd::Group::from_name(group)
            .map_err(|e| SpawnError::Failed(format!("looking up group {group}: {e}")))?
            .ok_or_else(|| {
                SpawnError::Failed(format!(
                    "group {group} does not exist (create it, or change `group` in {})",
                    spec.file.display()
                ))
            })?;
        cmd.gid(g.gid.as_raw());
        owner = Some((owner.map(|o| o.0).unwrap_or(0), g.gid.as_raw()));
    }
    for name in &spec.runtime_directory {
        let dir = std::path::Path::new("/run").join(name);
        std::fs::create_dir_all(&dir).map_err(|e| {
            SpawnError::Failed(format!("creating runtime directory {}: {e}", dir.display()))
        })?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| {
                SpawnError::Failed(format!("chown of runtime directory {}: {e}", dir.display()))
            })?;
        }
    }
    if let Some(sock) = extra.notify_socket {
        cmd.env("NOTIFY_SOCKET", sock);
    }
    if let Some(pid) = extra.main_pid {
        cmd.env("MAINPID", pid.to_string());
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if let Some(dir) = &spec.working_directory {
        cmd.current_dir(dir);
    } else {
        cmd.current_dir("/");
    }
    cmd.stdin(Stdio::null());
    if capture_output {
        cmd.stdout(Stdio::piped());
        cmd.stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::null());
        cmd.stderr(Stdio::null());
    }
    // s6-style readiness: the service gets the write end of a pipe as fd N.
    let ready_pipe = match ready_fd {
        Some(_) => Some(
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| SpawnError::Failed(format!("creating the readiness pipe: {e}")))?,
        ),
        None => None,
    };
    let ready_w = ready_pipe
        .as_ref()
        .map(|(_, w)| std::os::fd::AsRawFd::as_raw_fd(w));
    let target_fd = ready_fd.unwrap_or(-1);
    let umask = spec.umask;
    let limits: Vec<(nix::sys::resource::Resource, u64)> = [
        (
            nix::sys::resource::Resource::RLIMIT_NOFILE,
            spec.limits.nofile,
        ),
        (
            nix::sys::resource::Resource::RLIMIT_NPROC,
            spec.limits.nproc,
        ),
        (nix::sys::resource::Resource::RLIMIT_CORE, spec.limits.core),
        (
            nix::sys::resource::Resource::RLIMIT_MEMLOCK,
            spec.limits.memlock,
        ),
    ]
    .into_iter()
    .filter_map(|(r, v)| v.map(|v| (r, v)))
    .collect();
    // SAFETY: setsid and dup2 are async-signal-safe and touch no memory.
    // setsid puts the service in its own session and process group so that
    // stopping it can signal the whole group (and never supd's); dup2 gives
    // it the readiness pipe at the fd number it asked for (dup2 clears
    // close-on-exec on the copy).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if let Some(w) = ready_w
                && libc::dup2(w, target_fd) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(m) = umask {
                libc::umask(m as libc::mode_t);
            }
            for (r, v) in &limits {
                nix::sys::resource::setrlimit(*r, *v, *v).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    // Last-moment guard: the engine decided from its snapshot; the kernel's
    // current table decides whether we really create the process.
    recheck_mounts(mounts)?;
    let mut child = cmd.spawn().map_err(|e| {
        SpawnError::Failed(format!(
            "exec {program}: {e}{}",
            match e.kind() {
                std::io::ErrorKind::NotFound =>
                    " (check `exec` in the unit file: the program must exist; PATH is /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)",
                std::io::ErrorKind::PermissionDenied =>
                    " (is it executable, and is `working_directory` accessible to the unit's user?)",
                _ => "",
            }
        ))
    })?;
    let pid = child.id() as i32;
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    // Dropping `Child` neither waits nor kills: the reaper owns the exit.
    drop(child);
    // Our copy of the write end must close, or the reader never sees EOF.
    let ready = ready_pipe.map(|(r, _w)| r);
    Ok(Spawned {
        pid,
        stdout,
        stderr,
        ready,
    })
}
