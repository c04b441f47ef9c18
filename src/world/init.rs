//! Init duties: what being PID 1 (or a subreaper) means for supd.
//!
//! Owns: deciding the mode (VM init, container init, subreaper), the early
//! mounts a VM's init must make, and the end of the world — killing every
//! remaining process, sync, unmounting or remounting read-only, and
//! reboot(2). Must never: `kill(-1, …)` unless supd is PID 1 (as a subreaper
//! on a laptop that would kill the user's session), or return from
//! `finish_vm` (PID 1 exiting is a kernel panic).

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Inode of the initial PID namespace (`PROC_PID_INIT_INO` in the kernel).
const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of the machine: do init's duties, end with reboot(2).
    VmInit,
    /// PID 1 of a container's PID namespace: end by exiting.
    ContainerInit,
    /// Not PID 1: a child subreaper under another init.
    Subreaper,
}

pub fn detect_mode() -> Mode {
    if std::process::id() != 1 {
        return Mode::Subreaper;
    }
    match std::fs::metadata("/proc/self/ns/pid") {
        Ok(m) => {
            use std::os::unix::fs::MetadataExt;
            if m.ino() == PROC_PID_INIT_INO {
                Mode::VmInit
            } else {
                Mode::ContainerInit
            }
        }
        // No /proc yet: only a freshly booted kernel's init sees that.
        Err(_) => Mode::VmInit,
    }
}

/// Become a child subreaper so orphans of our services are reparented to us
/// and reaped by our reaper, exactly as when we are PID 1.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A VM's init mounts the API filesystems itself when they are missing.
pub fn early_mounts() {
    use nix::mount::{MsFlags, mount};
    let table = crate::world::mount_watch::read_mount_table().unwrap_or_default();
    let want: [(&str, &str, &str, MsFlags, Option<&str>); 5] = [
        (
            "proc",
            "/proc",
            "proc",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ),
        (
            "sysfs",
            "/sys",
            "sysfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
    ];
    for (src, target, fstype, flags, data) in want {
        let present = table
            .entries
            .iter()
            .any(|e| e.mount_point == std::path::Path::new(target));
        if present {
            continue;
        }
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(Some(src), target, Some(fstype), flags, data) {
            tracing::warn!("mounting {fstype} on {target}: {e}");
        }
    }
    let _ = std::fs::create_dir_all("/dev/pts");
    let _ = mount(
        Some("devpts"),
        "/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("gid=5,mode=620,ptmxmode=666"),
    );
}

/// Bring the loopback interface up, as init does: services and their
/// health probes talk over 127.0.0.1 long before any network is configured.
pub fn loopback_up() {
    // SAFETY: plain ioctls on a socket we own, with a zeroed, properly
    // sized ifreq whose name is NUL-terminated.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            tracing::warn!("loopback: socket: {}", std::io::Error::last_os_error());
            return;
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr) != 0 {
                tracing::warn!("loopback: up: {}", std::io::Error::last_os_error());
            }
        }
        libc::close(fd);
    }
}

/// Reap every exited child now; returns how many.
pub fn reap_all_nohang() -> usize {
    let mut n = 0;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return n,
            Ok(_) => n += 1,
        }
    }
}

/// Pids of our direct children (orphans reparented to us included), from
/// `/proc/self/task/*/children`: `/proc/self` resolves in whatever PID
/// namespace the mounted /proc belongs to, so this is right even when
/// supd is PID 1 of a namespace that still sees the host's /proc (there,
/// comparing ppid fields with our own pid would match the host's init).
fn children() -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// Does any child remain (alive or zombie)? Reaps whatever has exited.
fn any_child_left() -> bool {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return true,
            Ok(_) => continue,
            Err(_) => return false, // ECHILD: none left
        }
    }
}

/// SIGTERM everything that is left, wait up to `grace`, SIGKILL the rest,
/// and reap. As PID 1 this is `kill(-1)`; as a subreaper only our own
/// (reparented) children are touched.
pub fn kill_remaining(pid1: bool, grace: Duration) {
    let send = |sig: Signal| {
        if pid1 {
            let _ = kill(Pid::from_raw(-1), sig);
        } else {
            for c in children() {
                let _ = kill(Pid::from_raw(c), sig);
            }
        }
    };
    if !any_child_left() {
        return;
    }
    tracing::info!("sending SIGTERM to remaining processes");
    send(Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !any_child_left() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tracing::warn!("sending SIGKILL to remaining processes");
    send(Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !any_child_left() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Unmount every filesystem innermost first; what cannot be unmounted
/// (the root, busy ones) is remounted read-only so nothing is lost.
pub fn unmount_all() {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let table = crate::world::mount_watch::read_mount_table().unwrap_or_default();
    let api = ["/proc", "/sys", "/dev", "/dev/pts", "/run"];
    for e in table.entries.iter().rev() {
        let p = &e.mount_point;
        if api.iter().any(|a| p == std::path::Path::new(a))
            || p.starts_with("/proc/")
            || p.starts_with("/sys/")
        {
            continue;
        }
        if p == std::path::Path::new("/") {
            continue;
        }
        match umount2(p, MntFlags::empty()) {
            Ok(()) => tracing::info!("unmounted {}", p.display()),
            Err(err) => {
                let r = mount(
                    None::<&str>,
                    p,
                    None::<&str>,
                    MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                );
                tracing::warn!(
                    "unmounting {}: {err}; remount read-only: {}",
                    p.display(),
                    if r.is_ok() { "ok" } else { "failed" }
                );
            }
        }
    }
    let _ = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    );
}

/// The VM's last act: sync, unmount, reboot(2). Never returns.
pub fn finish_vm(reboot: bool) -> ! {
    use nix::sys::reboot::{RebootMode, reboot as sys_reboot};
    kill_remaining(true, Duration::from_secs(5));
    nix::unistd::sync();
    unmount_all();
    nix::unistd::sync();
    let mode = if reboot {
        RebootMode::RB_AUTOBOOT
    } else {
        RebootMode::RB_POWER_OFF
    };
    tracing::info!("{}", if reboot { "rebooting" } else { "powering off" });
    // Lines still held for a slow console would die with the machine.
    super::log::flush(Duration::from_secs(2));
    let err = sys_reboot(mode);
    // reboot(2) failed: PID 1 must still not exit. Say so and idle, reaping.
    tracing::error!("reboot(2) failed: {err:?}; halting here");
    loop {
        reap_all_nohang();
        std::thread::sleep(Duration::from_secs(1));
    }
}
