//! The sd_notify socket.
//!
//! Owns: one `AF_UNIX` datagram socket that services find in
//! `$NOTIFY_SOCKET`, receiving `READY=1`, `STATUS=`, `STOPPING=1`,
//! `RELOADING=1`, `WATCHDOG=1`, `WATCHDOG=trigger`, `EXTEND_TIMEOUT_USEC=`,
//! `ERRNO=`, `MAINPID=` with the sender's credentials (`SO_PASSCRED`), so
//! the driver can check the sender belongs to the unit it claims to be;
//! the socket is read by a thread of its own, which records the sender's
//! cgroup (`/proc/PID/cgroup`) the moment each datagram is received — not
//! when the event loop gets to it, by which time a short-lived sender
//! (`systemd-notify --no-block`) is gone;
//! and `notify_manager`, supd's own `READY=1`/`STOPPING=1` to the manager
//! that started it. Must never: trust the message text for identity,
//! block (datagrams are read when the socket is readable), or remove a
//! socket a running supd still receives on (a second instance fails
//! instead).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::engine::NotifyMsg;

/// Datagrams read but not yet taken by the event loop; beyond that the
/// reading thread waits, and the kernel's socket buffer holds (or refuses)
/// the rest.
const QUEUE: usize = 256;

pub struct NotifySocket {
    rx: tokio::sync::Mutex<mpsc::Receiver<Received>>,
    pub path: PathBuf,
}

/// A received message and the sender's pid from SCM_CREDENTIALS.
pub struct Received {
    pub pid: i32,
    /// The sender's uid, from the same credentials.
    pub uid: u32,
    /// The sender's cgroup v2 path (`/proc/PID/cgroup`), read as the
    /// datagram was received; None if the sender was already gone.
    pub cgroup: Option<String>,
    pub msg: NotifyMsg,
}

impl NotifySocket {
    /// Bind at `path`, beside the control socket (whose directory was
    /// checked when it was bound). A socket someone still receives on (a
    /// running supd's) is never removed: only a stale one is replaced.
    pub fn bind(path: &Path) -> std::io::Result<NotifySocket> {
        super::control::prepare_socket_dir(path)?;
        super::control::clear_stale_socket(path, |p| {
            // A datagram connect succeeds only while someone is bound there.
            std::os::unix::net::UnixDatagram::unbound()
                .and_then(|s| s.connect(p))
                .is_ok()
        })?;
        let sock = std::os::unix::net::UnixDatagram::bind(path)?;
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true)
            .map_err(std::io::Error::from)?;
        // Services of any user must be able to notify.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        // Blocked in recvmsg(2) while nothing comes: no wake-ups when idle.
        // The thread inherits the mask: every signal stays with the loop
        // (a SIGCHLD the loop holds while it carries out a batch would
        // otherwise be taken here, one handler run and one loop wake-up
        // per exit instead of one drain for all of them).
        let all = super::sigmask::SigHold::all();
        let spawned = std::thread::Builder::new()
            .name("supd-notify".into())
            .spawn(move || read_forever(sock, tx));
        drop(all);
        spawned?;
        Ok(NotifySocket {
            rx: tokio::sync::Mutex::new(rx),
            path: path.to_path_buf(),
        })
    }

    pub async fn recv(&self) -> std::io::Result<Received> {
        self.rx
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| std::io::Error::other("the sd_notify reading thread is gone"))
    }
}

/// The reading thread: each datagram with its sender's cgroup, read at
/// once, to the event loop.
fn read_forever(sock: std::os::unix::net::UnixDatagram, tx: mpsc::Sender<Received>) {
    loop {
        match recv_one(sock.as_raw_fd()) {
            Ok(Some(mut r)) => {
                r.cgroup = cgroup_of(r.pid);
                if tx.blocking_send(r).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("reading the sd_notify socket: {e}");
                // Not a busy loop on a persistent error.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A process's cgroup v2 path, if it still exists (a zombie's is still
/// readable).
pub fn cgroup_of(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(crate::world::procfs::pid_file(pid, "cgroup")?).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
}

fn recv_one(fd: i32) -> std::io::Result<Option<Received>> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg};
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
    let msg = recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(std::io::Error::from)?;
    let mut pid = None;
    let mut uid = u32::MAX;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmCredentials(cred) = c {
                pid = Some(cred.pid());
                uid = cred.uid();
            }
        }
    }
    let n = msg.bytes;
    let Some(pid) = pid else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    Ok(Some(Received {
        pid,
        uid,
        cgroup: None,
        msg: {
            let mut m = parse(&text);
            m.monotonic_at = m.monotonic_usec.and_then(monotonic_to_instant);
            m
        },
    }))
}

/// Logs datagrams from processes that belong to no unit — at most once per
/// window, with a count. The socket is 0666 (services of any user must
/// reach it), so any local user can send to it; one line per datagram
/// would let them flood supd's log.
pub struct RejectLog {
    window: Duration,
    last_logged: Option<Instant>,
    /// Ignored since the last line, and the first of them.
    unlogged: u64,
}

impl RejectLog {
    pub const WINDOW: Duration = Duration::from_secs(5);

    pub fn new(window: Duration) -> RejectLog {
        RejectLog {
            window,
            last_logged: None,
            unlogged: 0,
        }
    }

    /// A datagram from `pid` was ignored at `now`.
    pub fn rejected(&mut self, now: Instant, pid: i32) {
        self.unlogged = self.unlogged.saturating_add(1);
        let due = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= self.window);
        if !due {
            return;
        }
        if self.unlogged == 1 {
            tracing::warn!(
                "ignoring sd_notify message from pid {pid}: not a process of any unit (more are counted, reported at most every {}s)",
                self.window.as_secs()
            );
        } else {
            tracing::warn!(
                "ignored {} sd_notify messages from processes of no unit since the last report (latest from pid {pid})",
                self.unlogged
            );
        }
        self.unlogged = 0;
        self.last_logged = Some(now);
    }
}

/// Send `text` to the sd_notify socket supd itself was given
/// (`$NOTIFY_SOCKET`: a path, or `@name` in the abstract namespace), so
/// supd can run as a Type=notify service. Never blocks.
pub fn notify_manager(path: &str, text: &str) -> std::io::Result<()> {
    use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, sendto, socket};
    let addr = match path.strip_prefix('@') {
        Some(name) => UnixAddr::new_abstract(name.as_bytes()),
        None => UnixAddr::new(path),
    }
    .map_err(std::io::Error::from)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(std::io::Error::from)?;
    sendto(
        fd.as_raw_fd(),
        text.as_bytes(),
        &addr,
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    Ok(())
}

/// A CLOCK_MONOTONIC time in µs as an `Instant` (which is that clock on
/// Linux): now, moved by the difference.
fn monotonic_to_instant(usec: u64) -> Option<std::time::Instant> {
    let now_i = std::time::Instant::now();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into our own timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return None;
    }
    let now_us = u64::try_from(ts.tv_sec).ok()?.checked_mul(1_000_000)?
        + u64::try_from(ts.tv_nsec).ok()? / 1000;
    if usec <= now_us {
        now_i.checked_sub(std::time::Duration::from_micros(now_us - usec))
    } else {
        now_i.checked_add(std::time::Duration::from_micros(usec - now_us))
    }
}

/// Parse the newline-separated `KEY=VALUE` assignments.
pub fn parse(text: &str) -> NotifyMsg {
    let mut m = NotifyMsg::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => m.ready = true,
            Some(("STOPPING", "1")) => m.stopping = true,
            Some(("WATCHDOG", "1")) => m.watchdog = true,
            Some(("STATUS", s)) => m.status = Some(s.chars().take(512).collect()),
            // `MAINPID=0` or `-1` would name a process group or every
            // process, and pid 1 is never a unit's main process.
            Some(("MAINPID", p)) => m.main_pid = p.trim().parse().ok().filter(|p| *p > 1),
            Some(("RELOADING", "1")) => m.reloading = true,
            Some(("WATCHDOG", "trigger")) => m.watchdog_trigger = true,
            Some(("EXTEND_TIMEOUT_USEC", u)) => m.extend_timeout_usec = u.trim().parse().ok(),
            Some(("ERRNO", e)) => m.errno = e.trim().parse().ok().filter(|e| *e >= 0),
            Some(("MONOTONIC_USEC", u)) => m.monotonic_usec = u.trim().parse().ok(),
            _ => {}
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_are_counted_between_reports() {
        let mut r = RejectLog::new(Duration::from_secs(5));
        let t0 = Instant::now();
        r.rejected(t0, 7);
        assert_eq!(r.unlogged, 0, "the first is logged at once");
        for _ in 0..999 {
            r.rejected(t0 + Duration::from_secs(1), 7);
        }
        assert_eq!(r.unlogged, 999);
        r.rejected(t0 + Duration::from_secs(6), 7);
        assert_eq!(r.unlogged, 0);
        assert_eq!(r.last_logged, Some(t0 + Duration::from_secs(6)));
    }

    #[test]
    fn parses_assignments() {
        let m = parse("READY=1\nSTATUS=Accepting connections\nMAINPID=42\nbogus\n");
        assert!(m.ready);
        assert_eq!(m.status.as_deref(), Some("Accepting connections"));
        assert_eq!(m.main_pid, Some(42));
        assert!(!m.stopping);
        let m = parse(
            "RELOADING=1\nMONOTONIC_USEC=123\nWATCHDOG=trigger\nEXTEND_TIMEOUT_USEC=5000000\nERRNO=2\nMAINPID=1\n",
        );
        assert!(m.reloading && m.watchdog_trigger);
        assert_eq!(m.extend_timeout_usec, Some(5_000_000));
        assert_eq!(m.errno, Some(2));
        assert_eq!(m.main_pid, None, "pid 1 is never a unit's");
        for bad in ["MAINPID=0", "MAINPID=-1", "MAINPID=x", "MAINPID=2147483648"] {
            assert_eq!(parse(bad).main_pid, None, "{bad}");
        }
    }
}
