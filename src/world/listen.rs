//! The sockets and FIFOs of `[[listen]]` (socket activation).
//!
//! Owns: creating, binding and keeping each unit's listening descriptors.
//! They are opened at boot (or when a reload adds the unit), before its
//! first process is created, and kept across its restarts and a re-exec, so a client connecting while the service restarts
//! waits in the kernel's queue instead of being refused; they are closed
//! only when the unit's `[[listen]]` changes or the unit disappears on a
//! reload. Must never: accept, read or write on them (the service does),
//! block on anything but the local system calls that create them, or hand
//! the service a descriptor that is not exactly the one its spec asked for.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::unit::UnitSpec;
use crate::unit::listen::{ListenAddr, ListenKind, ListenSpec};

/// Every unit's open listening descriptors, in `[[listen]]` order.
#[derive(Default)]
pub struct Listeners {
    by_unit: HashMap<String, Vec<(ListenSpec, OwnedFd)>>,
    /// Handed over by the image before a re-exec, by unit and `key`;
    /// claimed by the unit's next start, the rest closed then.
    adopted: HashMap<String, Vec<(String, OwnedFd)>>,
}

/// What identifies a socket across a re-exec: its type and address.
fn key(l: &ListenSpec) -> String {
    format!("{} {}", l.kind.key(), describe(&l.addr))
}

impl Listeners {
    /// The descriptors (and `LISTEN_FDNAMES` entries) for `spec`'s next
    /// process, opening the ones not open yet. Descriptors kept from
    /// before are reused when their spec is unchanged: that is what keeps
    /// a socket bound across a restart.
    pub fn fds_for(&mut self, spec: &UnitSpec) -> Result<Vec<(RawFd, String)>, String> {
        if spec.listen.is_empty() {
            self.by_unit.remove(&spec.name);
            return Ok(vec![]);
        }
        let mut old = self.by_unit.remove(&spec.name).unwrap_or_default();
        // Close what is no longer asked for first: a changed spec for the
        // same address must be able to bind it again.
        old.retain(|(s, _)| spec.listen.contains(s));
        let mut new = Vec::with_capacity(spec.listen.len());
        let mut adopted = self.adopted.remove(&spec.name).unwrap_or_default();
        for l in &spec.listen {
            if let Some(i) = adopted.iter().position(|(k, _)| *k == key(l)) {
                new.push((l.clone(), adopted.swap_remove(i).1));
                continue;
            }
            match old.iter().position(|(s, _)| s == l) {
                Some(i) => new.push(old.swap_remove(i)),
                None => match open(l) {
                    Ok(fd) => new.push((l.clone(), fd)),
                    Err(e) => {
                        // Keep what did open: the next attempt reuses it.
                        self.by_unit.insert(spec.name.clone(), new);
                        if !adopted.is_empty() {
                            self.adopted.insert(spec.name.clone(), adopted);
                        }
                        return Err(format!(
                            "[[listen]] {} = {:?} of unit {} ({}): {e}",
                            l.kind.key(),
                            describe(&l.addr),
                            spec.name,
                            spec.file.display()
                        ));
                    }
                },
            }
        }
        let out = new
            .iter()
            .map(|(s, fd)| (fd.as_raw_fd(), s.name.clone()))
            .collect();
        self.by_unit.insert(spec.name.clone(), new);
        Ok(out)
    }

    /// Bind `spec`'s sockets now if none are open for it yet (at boot and
    /// for units a reload added), so clients that connect before the
    /// unit starts are queued. Sockets already open are left as they are:
    /// a changed `[[listen]]` takes effect at the unit's next start.
    pub fn prepare(&mut self, spec: &UnitSpec) -> Result<(), String> {
        if spec.listen.is_empty() || self.by_unit.contains_key(&spec.name) {
            return Ok(());
        }
        self.fds_for(spec).map(|_| ())
    }

    /// After a reload: close the sockets of units that no longer exist.
    pub fn retain_units(&mut self, exists: impl Fn(&str) -> bool) {
        self.by_unit.retain(|name, _| exists(name));
        self.adopted.retain(|name, _| exists(name));
    }

    /// For a re-exec: every open socket as (unit, key, descriptor). The
    /// table keeps owning them.
    pub fn export(&self) -> Vec<(String, String, RawFd)> {
        let mut out = Vec::new();
        for (unit, list) in &self.by_unit {
            for (l, fd) in list {
                out.push((unit.clone(), key(l), fd.as_raw_fd()));
            }
        }
        for (unit, list) in &self.adopted {
            for (k, fd) in list {
                out.push((unit.clone(), k.clone(), fd.as_raw_fd()));
            }
        }
        out
    }

    /// After a re-exec: the previous image's sockets, reused by their
    /// units' next start instead of binding again (which a running
    /// service's copy would make fail, or would replace its socket file).
    pub fn adopt(&mut self, list: Vec<(String, String, OwnedFd)>) {
        for (unit, k, fd) in list {
            self.adopted.entry(unit).or_default().push((k, fd));
        }
    }
}

/// The address as the unit file wrote it, for messages.
pub fn describe(a: &ListenAddr) -> String {
    match a {
        ListenAddr::Inet(sa) => sa.to_string(),
        ListenAddr::Port(p) => p.to_string(),
        ListenAddr::Path(p) => p.display().to_string(),
        ListenAddr::Abstract(n) => format!("@{n}"),
    }
}

fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// A new socket of `family`/`ty`, close-on-exec (the child's copy is made
/// without it).
fn socket(family: libc::c_int, ty: libc::c_int) -> Result<OwnedFd, String> {
    // SAFETY: plain system call; the result is a descriptor we now own.
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno("socket"));
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
    what: &str,
) -> Result<(), String> {
    // SAFETY: an int option on our own socket.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(errno(what));
    }
    Ok(())
}

fn sock_type(kind: ListenKind) -> libc::c_int {
    match kind {
        ListenKind::Stream => libc::SOCK_STREAM,
        ListenKind::Datagram => libc::SOCK_DGRAM,
        ListenKind::SeqPacket => libc::SOCK_SEQPACKET,
        ListenKind::Fifo => 0,
    }
}

/// Create, bind and (for stream and seqpacket) listen: one endpoint.
pub fn open(l: &ListenSpec) -> Result<OwnedFd, String> {
    if l.kind == ListenKind::Fifo {
        let ListenAddr::Path(p) = &l.addr else {
            return Err("a FIFO needs a path".into());
        };
        return open_fifo(l, p);
    }
    let ty = sock_type(l.kind);
    let fd = match &l.addr {
        ListenAddr::Inet(sa) => bind_inet(l, ty, *sa)?,
        ListenAddr::Port(port) => {
            let any6 = std::net::SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), *port);
            match bind_inet(l, ty, any6) {
                Ok(fd) => fd,
                // No IPv6 in this kernel or namespace: IPv4 alone, as
                // systemd does.
                Err(e) if e.contains("Address family not supported") => bind_inet(
                    l,
                    ty,
                    std::net::SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), *port),
                )?,
                Err(e) => return Err(e),
            }
        }
        ListenAddr::Path(p) => bind_unix_path(l, ty, p)?,
        ListenAddr::Abstract(n) => {
            let fd = socket(libc::AF_UNIX, ty)?;
            let mut path = vec![0u8];
            path.extend_from_slice(n.as_bytes());
            bind_unix(&fd, &path)?;
            fd
        }
    };
    if matches!(l.kind, ListenKind::Stream | ListenKind::SeqPacket) {
        let backlog = libc::c_int::try_from(l.backlog).unwrap_or(libc::SOMAXCONN);
        // SAFETY: listen on our own socket.
        if unsafe { libc::listen(fd.as_raw_fd(), backlog) } < 0 {
            return Err(errno("listen"));
        }
    }
    Ok(fd)
}

fn bind_inet(l: &ListenSpec, ty: libc::c_int, sa: std::net::SocketAddr) -> Result<OwnedFd, String> {
    let fd = match sa {
        std::net::SocketAddr::V4(_) => socket(libc::AF_INET, ty)?,
        std::net::SocketAddr::V6(_) => {
            let fd = socket(libc::AF_INET6, ty)?;
            if let Some(only) = l.ipv6_only {
                setsockopt_int(
                    &fd,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_V6ONLY,
                    only as libc::c_int,
                    "IPV6_V6ONLY",
                )?;
            }
            fd
        }
    };
    if l.kind == ListenKind::Stream {
        // A restarted supd can bind again while old connections linger in
        // TIME_WAIT.
        setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1, "SO_REUSEADDR")?;
    }
    let (storage, len) = sockaddr_of(sa);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &storage as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
        )
    };
    if r < 0 {
        return Err(errno(&format!("bind {sa}")));
    }
    Ok(fd)
}

fn sockaddr_of(sa: std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match sa {
        std::net::SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn bind_unix(fd: &OwnedFd, path: &[u8]) -> Result<(), String> {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if path.len() >= sun.sun_path.len() {
        return Err("the path is too long for a unix socket".into());
    }
    for (d, s) in sun.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + path.len() + usize::from(path[0] != 0);
    // SAFETY: `sun` is a valid sockaddr_un; `len` covers the path.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sun as *const libc::sockaddr_un as *const libc::sockaddr,
            len as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(errno("bind"));
    }
    Ok(())
}

/// The uid/gid a socket or FIFO file is given.
fn owner(l: &ListenSpec) -> Result<(Option<libc::uid_t>, Option<libc::gid_t>), String> {
    let uid = match &l.user {
        None => None,
        Some(u) => Some(
            nix::unistd::User::from_name(u)
                .map_err(|e| format!("looking up user {u}: {e}"))?
                .ok_or_else(|| format!("user {u} does not exist (create it, or change `user`)"))?
                .uid
                .as_raw(),
        ),
    };
    let gid = match &l.group {
        None => None,
        Some(g) => Some(
            nix::unistd::Group::from_name(g)
                .map_err(|e| format!("looking up group {g}: {e}"))?
                .ok_or_else(|| format!("group {g} does not exist (create it, or change `group`)"))?
                .gid
                .as_raw(),
        ),
    };
    Ok((uid, gid))
}

fn chmod_chown(l: &ListenSpec, path: &Path) -> Result<(), String> {
    let (uid, gid) = owner(l)?;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| "the path has a NUL byte")?;
    if uid.is_some() || gid.is_some() {
        // SAFETY: a path we just created; -1 keeps that id.
        let r =
            unsafe { libc::lchown(c.as_ptr(), uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX)) };
        if r < 0 {
            return Err(errno(&format!("chown {}", path.display())));
        }
    }
    // SAFETY: as above.
    if unsafe { libc::chmod(c.as_ptr(), l.mode as libc::mode_t) } < 0 {
        return Err(errno(&format!("chmod {}", path.display())));
    }
    Ok(())
}

fn make_parent(path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    Ok(())
}

fn bind_unix_path(l: &ListenSpec, ty: libc::c_int, path: &Path) -> Result<OwnedFd, String> {
    make_parent(path)?;
    // A socket file left by an earlier run (or a crashed supd) would make
    // bind fail; anything that is not a socket is left alone and bind says
    // why.
    if let Ok(m) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if m.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
    let fd = socket(libc::AF_UNIX, ty)?;
    if l.pass_credentials {
        setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 1, "SO_PASSCRED")?;
    }
    bind_unix(&fd, path.as_os_str().as_bytes()).map_err(|e| format!("{e} ({})", path.display()))?;
    chmod_chown(l, path)?;
    Ok(fd)
}

fn open_fifo(l: &ListenSpec, path: &Path) -> Result<OwnedFd, String> {
    make_parent(path)?;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| "the path has a NUL byte")?;
    // SAFETY: mkfifo on a path; EEXIST is checked below.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(format!("mkfifo {}: {e}", path.display()));
        }
    }
    // Read-write: opening never waits for a writer (or a reader), and the
    // FIFO never reports end-of-file between writers. O_NOFOLLOW and the
    // check below: only a FIFO is ever opened here.
    // SAFETY: open on a path; the result is ours.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(errno(&format!("opening {}", path.display())));
    }
    // SAFETY: just opened, ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let meta = nix::sys::stat::fstat(&fd).map_err(|e| format!("fstat: {e}"))?;
    if meta.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return Err(format!(
            "{} exists and is not a FIFO (remove it, or choose another path)",
            path.display()
        ));
    }
    // Back to blocking, as a service reading its FIFO expects.
    // SAFETY: flag change on our own descriptor.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    chmod_chown(l, path)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: ListenKind, addr: ListenAddr) -> ListenSpec {
        ListenSpec {
            kind,
            addr,
            name: "t".into(),
            mode: 0o660,
            user: None,
            group: None,
            ipv6_only: None,
            backlog: 16,
            pass_credentials: false,
        }
    }

    #[test]
    fn unix_stream_is_bound_with_its_mode_and_kept_across_calls() {
        let dir = std::env::temp_dir().join(format!("supd-listen-{}", std::process::id()));
        let path = dir.join("sub/a.sock");
        let mut u = UnitSpec::simple("a", crate::unit::UnitKind::Longrun, &["/bin/true"]);
        u.listen = vec![spec(ListenKind::Stream, ListenAddr::Path(path.clone()))];
        let mut l = Listeners::default();
        let first = l.fds_for(&u).expect("bind");
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(&path).expect("socket file");
        assert_eq!(m.permissions().mode() & 0o7777, 0o660);
        // Connecting works before anyone accepts: the kernel queues it.
        let c = std::os::unix::net::UnixStream::connect(&path);
        assert!(c.is_ok(), "{c:?}");
        let again = l.fds_for(&u).expect("reuse");
        assert_eq!(first, again, "the same descriptor is passed again");
        // A changed spec rebinds the path.
        u.listen[0].mode = 0o600;
        let third = l.fds_for(&u).expect("rebind");
        assert_eq!(third.len(), 1);
        let m = std::fs::metadata(&path).expect("socket file");
        assert_eq!(m.permissions().mode() & 0o7777, 0o600);
        l.retain_units(|_| false);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn datagram_fifo_and_inet() {
        let dir = std::env::temp_dir().join(format!("supd-listen2-{}", std::process::id()));
        let fifo = dir.join("f");
        let fd = open(&spec(ListenKind::Fifo, ListenAddr::Path(fifo.clone()))).expect("fifo");
        drop(fd);
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        let d = open(&spec(ListenKind::Datagram, ListenAddr::Path(dir.join("d")))).expect("dgram");
        drop(d);
        let s = open(&spec(
            ListenKind::Stream,
            ListenAddr::Inet("127.0.0.1:0".parse().unwrap()),
        ))
        .expect("tcp");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
