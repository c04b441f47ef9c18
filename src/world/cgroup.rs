//! Containment: a cgroup v2 group per unit.
//!
//! Owns: finding a writable cgroup v2 hierarchy (from mountinfo:
//! `/sys/fs/cgroup`, or a hybrid host's `/sys/fs/cgroup/unified`), supd's
//! own subtree in it, one group per unit (`NAME.unit`, the run's main
//! process, its children, its stop command) and one for its exec probes
//! (`NAME.probe`, accounted apart so a probe never keeps the unit alive),
//! and the group operations the driver needs: signal every member, kill
//! them all (`cgroup.kill`), read `populated`, and wake on `cgroup.events`
//! changes without polling: one inotify instance for every group (the
//! kernel reports a change of the file as IN_MODIFY; a watch holds no
//! descriptor), or, where no watch can be had, the file held open (the
//! kernel marks it POLLPRI, as it does mountinfo).
//!
//! Layout (S is supd's subtree, named after its state directory so that a
//! restarted or re-executed supd finds the same one):
//!
//! ```text
//! <the cgroup supd started in>/supd[-HASH]/   S: subtree_control = what we can enable
//!     supd.self/                               supd itself (cgroup v2 allows no
//!                                              processes in an inner node that
//!                                              delegates controllers)
//!     db.unit/  db.probe/  web.unit/ ...
//! ```
//!
//! Must never: block on anything but these kernel files (they answer at
//! once); remove a group that still has processes; put a process anywhere
//! outside S; decide anything about a unit (the engine does, from
//! `GroupEmpty` and the other events the driver derives from here).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The state directory whose subtree is the plain `supd` (the packaged
/// default); any other gets `supd-HASH`, so that supds on one host (tests,
/// several instances) never share a subtree.
const DEFAULT_STATE_DIR: &str = "/var/lib/supd";

/// supd's own leaf inside its subtree.
pub const SELF_LEAF: &str = "supd.self";

/// Which group of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupKind {
    /// The run: main process, its descendants, the stop command.
    Unit,
    /// Exec probes.
    Probe,
}

impl GroupKind {
    fn suffix(self) -> &'static str {
        match self {
            GroupKind::Unit => "unit",
            GroupKind::Probe => "probe",
        }
    }
}

/// The name of a unit's group in the subtree.
pub fn group_name(unit: &str, kind: GroupKind) -> String {
    format!("{unit}.{}", kind.suffix())
}

/// The unit a group directory name belongs to (`db.unit` → `db`).
pub fn unit_of_group(dir_name: &str) -> Option<(&str, GroupKind)> {
    if let Some(u) = dir_name.strip_suffix(".unit") {
        return Some((u, GroupKind::Unit));
    }
    dir_name
        .strip_suffix(".probe")
        .map(|u| (u, GroupKind::Probe))
}

/// Where the cgroup v2 hierarchy is mounted in our mount namespace, and
/// the path of its root as this namespace sees it.
fn find_mount(mountinfo: &str) -> Option<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split_whitespace();
        if post.next() != Some("cgroup2") {
            continue;
        }
        let f: Vec<&str> = pre.split_whitespace().collect();
        if f.len() < 6 {
            continue;
        }
        let opts = f[5];
        if opts.split(',').any(|o| o == "ro") {
            continue;
        }
        let root = unescape(f[3]);
        let mp = PathBuf::from(unescape(f[4]));
        found.push((mp, root));
    }
    // The pure v2 layout first, then a hybrid host's unified hierarchy,
    // then anything else.
    let rank = |p: &Path| match p.to_str() {
        Some("/sys/fs/cgroup") => 0,
        Some("/sys/fs/cgroup/unified") => 1,
        _ => 2,
    };
    found.sort_by_key(|(p, _)| rank(p));
    found.into_iter().next()
}

/// The writable cgroup v2 mount point in our mount namespace, if any.
pub fn hierarchy() -> Option<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    find_mount(&mi).map(|(p, _)| p)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// supd's own cgroup v2 path, from `/proc/self/cgroup` (`0::/path`).
fn own_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
}

/// The subtree's name for a state directory.
pub fn subtree_name(state_dir: &Path) -> String {
    if state_dir == Path::new(DEFAULT_STATE_DIR) {
        return "supd".to_string();
    }
    // FNV-1a: stable across builds and runs (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in state_dir.as_os_str().as_encoded_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("supd-{:08x}", (h ^ (h >> 32)) as u32)
}

/// supd's subtree in a writable cgroup v2 hierarchy.
#[derive(Debug)]
pub struct Tree {
    /// The subtree's directory (absolute path in our mount namespace).
    pub dir: PathBuf,
    /// The cgroup supd started in (the subtree's parent).
    pub base: PathBuf,
    /// The subtree, open: groups are made and opened relative to it (no
    /// path walk through cgroupfs per spawn).
    fd: OwnedFd,
    /// supd moved itself into the subtree's leaf `supd.self`.
    moved: bool,
    /// The subtree as a cgroup path (`/supd-1234abcd`), for operators.
    pub cgroup_path: String,
    /// Controllers enabled for the units' groups.
    pub controllers: Vec<String>,
    /// Controllers the hierarchy has but we could not delegate, and why.
    pub unavailable: Option<String>,
}

/// What containment supd runs with.
#[derive(Debug)]
pub enum Containment {
    Cgroup(Tree),
    /// No writable cgroup v2: units are their process groups; a process
    /// that leaves its group (setsid) escapes supervision.
    ProcessGroups {
        why: String,
    },
}

impl Containment {
    /// Find or create supd's subtree and move supd into its own leaf.
    /// Never fails: without a usable hierarchy the answer is process
    /// groups, with the reason.
    /// `machine_init`: supd is the init of a whole machine, so the
    /// hierarchy's root is its own to configure.
    pub fn setup(state_dir: &Path, machine_init: bool) -> Containment {
        // The fallback on demand: to compare costs (bench/), or where a
        // hierarchy is writable but must not be used.
        if std::env::var_os("SUPD_CONTAINMENT").is_some_and(|v| v == "process-groups") {
            return Containment::ProcessGroups {
                why: "SUPD_CONTAINMENT=process-groups asked for process groups".to_string(),
            };
        }
        match Tree::setup(state_dir, machine_init) {
            Ok(t) => Containment::Cgroup(t),
            Err(why) => Containment::ProcessGroups { why },
        }
    }

    pub fn tree(&self) -> Option<&Tree> {
        match self {
            Containment::Cgroup(t) => Some(t),
            Containment::ProcessGroups { .. } => None,
        }
    }
}

impl Tree {
    fn setup(state_dir: &Path, machine_init: bool) -> Result<Tree, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let (mount, mount_root) = find_mount(&mountinfo)
            .ok_or("no writable cgroup2 filesystem is mounted (mount one on /sys/fs/cgroup)")?;
        let own_text = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
        let own =
            own_cgroup(&own_text).ok_or("/proc/self/cgroup has no cgroup v2 line (0::PATH)")?;
        // Our cgroup as a directory under the mount: the mount shows the
        // hierarchy from `mount_root` down.
        let rel = own
            .strip_prefix(mount_root.trim_end_matches('/'))
            .unwrap_or(&own)
            .trim_start_matches('/')
            .to_string();
        let mut base = mount.join(&rel);
        // One subtree per state directory, however it was spelled.
        let state_dir =
            std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        let name = subtree_name(&state_dir);
        // A re-executed supd is already in its subtree's own leaf.
        let mut in_leaf = false;
        if base.file_name().and_then(|n| n.to_str()) == Some(SELF_LEAF)
            && base
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                == Some(name.as_str())
            && let Some(p) = base.parent().and_then(|p| p.parent())
        {
            base = p.to_path_buf();
            in_leaf = true;
        }
        if !base.join("cgroup.procs").exists() {
            return Err(format!(
                "our cgroup {own} is not visible under {} (a cgroup namespace or mount that hides it)",
                mount.display()
            ));
        }
        let dir = base.join(&name);
        mkdir(&dir)?;
        // The host's root cgroup is not ours to configure unless we are
        // the machine's init or it is the root of our own cgroup
        // namespace (a container's); elsewhere we use what the parent
        // already delegates.
        let base_is_root = base == mount;
        let own_base = !base_is_root || machine_init || !in_initial_cgroup_ns();
        // Leave `base` for our own leaf only when that is what lets us
        // delegate controllers: a non-root group with processes cannot
        // give controllers to its children (the root may). Moving costs a
        // global lock round (an RCU grace period), so not for nothing.
        let avail = std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
        let moved = in_leaf || (!base_is_root && own_base && !avail.trim().is_empty());
        if moved && !in_leaf {
            let leaf = dir.join(SELF_LEAF);
            mkdir(&leaf)?;
            write_file(&leaf.join("cgroup.procs"), b"0").map_err(|e| {
                format!(
                    "moving supd into {}: {e} (is the hierarchy delegated to supd's user?)",
                    leaf.display()
                )
            })?;
        }
        let fd = Group::open(dir.clone())?.dir;
        let (controllers, unavailable) = delegate(&base, &dir, own_base);
        let cgroup_path = format!(
            "/{}",
            dir.strip_prefix(&mount)
                .unwrap_or(&dir)
                .to_string_lossy()
                .trim_start_matches('/')
        );
        Ok(Tree {
            dir,
            fd,
            moved,
            base,
            cgroup_path,
            controllers,
            unavailable,
        })
    }

    /// The directory of a unit's group (created if missing).
    pub fn group_dir(&self, unit: &str, kind: GroupKind) -> PathBuf {
        self.dir.join(group_name(unit, kind))
    }

    /// Create (if needed) and open a unit's group; the handle is what
    /// `CLONE_INTO_CGROUP` takes. `exists`: the group is expected to be
    /// there (made earlier), so it is opened without trying mkdir first.
    /// The flag says whether this call made the group (it may have been
    /// removed behind supd's back: then it needs its watch again).
    pub fn open_group(
        &self,
        unit: &str,
        kind: GroupKind,
        exists: bool,
    ) -> Result<(Group, bool), String> {
        let name = group_name(unit, kind);
        let path = self.dir.join(&name);
        let c = std::ffi::CString::new(name)
            .map_err(|_| format!("unit name {unit:?} contains a NUL byte"))?;
        let open = || {
            // SAFETY: openat relative to a directory descriptor we own,
            // with a NUL-terminated name; the result, if any, is ours.
            unsafe {
                libc::openat(
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            }
        };
        let mut fd = if exists { open() } else { -1 };
        let mut made = false;
        if fd < 0 {
            made = make_at(self.fd.as_raw_fd(), &c)
                .map_err(|e| format!("creating cgroup {}: {e}", path.display()))?;
            fd = open();
        }
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!("opening cgroup {}: {e}", path.display()));
        }
        let g = Group {
            path,
            // SAFETY: a fresh descriptor nothing else owns.
            dir: unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
        };
        Ok((g, made))
    }

    /// `populated` of a unit's group, read relative to the subtree's open
    /// directory: one openat, one read, one close (no walk from the root
    /// of cgroupfs, no stat).
    pub fn populated(&self, unit: &str, kind: GroupKind) -> std::io::Result<bool> {
        populated_at(self.fd.as_raw_fd(), unit, kind)
    }

    /// A second descriptor of the subtree's directory, for a thread that
    /// works in it (`world::group_prep`).
    pub fn dup_subtree(&self) -> std::io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Send `sig` to every process in a unit's group (and in the
    /// sub-groups a delegated unit made), as `signal_all` does, but
    /// relative to the subtree's open directory and without a heap
    /// buffer: one fstatat (sub-groups?), one openat, one read for any
    /// group of fewer than ~500 processes, one close, and the kills
    /// (`signal_all` walked the path from the root twice and asked the
    /// size and the end of the file: 8 system calls per unit, paid by
    /// every unit at shutdown).
    pub fn signal_group(&self, unit: &str, kind: GroupKind, sig: i32) -> std::io::Result<usize> {
        self.signal_group_except(unit, kind, sig, None)
    }

    /// `signal_group`, leaving out the members of process group
    /// `signalled` (sent `sig` already, through `signal_process_group`):
    /// its leader without a system call, any other member after one
    /// getpgid. The sweep that follows a stop signalled by process group:
    /// only what left that group (a `setsid` child, an escaped daemon) is
    /// signalled here, once. The caller is the one reaper's thread, so a
    /// pid read here cannot be reaped and reused before its kill.
    pub fn signal_group_except(
        &self,
        unit: &str,
        kind: GroupKind,
        sig: i32,
        signalled: Option<i32>,
    ) -> std::io::Result<usize> {
        let name = group_name(unit, kind);
        let c = std::ffi::CString::new(name.as_str())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a zeroed stat is a valid out-parameter for fstatat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstatat relative to a directory descriptor we own, with
        // a NUL-terminated name and a stat we own.
        if unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // A cgroupfs directory's link count is 2 plus its sub-groups
        // (only a delegated unit has any): those are walked by path.
        if st.st_nlink > 2 {
            return signal_all_except(&self.dir.join(&name), sig, signalled);
        }
        let procs = std::ffi::CString::new(format!("{name}/cgroup.procs"))
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: openat relative to a directory descriptor we own, with a
        // NUL-terminated name; the result, if any, is ours.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                procs.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns (closed on drop).
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut buf = [0u8; PROCS_READ];
        let mut pids = PidReader::default();
        let mut n = 0;
        loop {
            // SAFETY: read(2) into a buffer we own, of its length.
            let got = unsafe {
                libc::read(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if got < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let got = got as usize;
            pids.feed(&buf[..got], |pid| {
                n += usize::from(signal_member(pid, sig, signalled))
            });
            // Short: the end of the file (see `PROCS_READ`).
            if got < buf.len() {
                break;
            }
        }
        pids.end(|pid| n += usize::from(signal_member(pid, sig, signalled)));
        Ok(n)
    }

    /// After a clean shutdown (every process gone): leave the subtree and
    /// remove it, so nothing of supd is left in the hierarchy. Best effort:
    /// a group that still has processes stays (and says why in the log).
    pub fn remove_all(&self) {
        if self.moved {
            let _ = write_file(&self.base.join("cgroup.procs"), b"0");
        }
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let p = e.path();
            // Every unit has stopped by now: an empty group goes at the
            // first rmdir (a cgroup.kill before each was three system
            // calls per unit at exit), relative to the subtree's open
            // directory (no walk from the root of cgroupfs). Leftovers (a
            // probe still running, a delegated unit's sub-groups) fail
            // with EBUSY: they die first; dying takes a moment, so the
            // removal is retried.
            // Gone already (ENOENT) is done too: listed just before the
            // shutdown's clean-up thread removed it.
            let done = |r: &std::io::Result<()>| {
                r.as_ref()
                    .map_or_else(|e| e.kind() == std::io::ErrorKind::NotFound, |_| true)
            };
            let mut r = self.rmdir(&e.file_name());
            if !done(&r) {
                if p.file_name() != Some(std::ffi::OsStr::new(SELF_LEAF)) {
                    let _ = kill(&p);
                }
                r = remove(&p);
            }
            for _ in 0..50 {
                if done(&r) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
                r = remove(&p);
            }
            if !done(&r)
                && let Err(e) = r
            {
                tracing::warn!("leaving cgroup {}: {e}", p.display());
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }

    /// rmdir of one entry of the subtree, relative to its open directory.
    fn rmdir(&self, name: &std::ffi::OsStr) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(name.as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        rmdir_at(&self.fd, &c)
    }

    /// The subtree's directory, opened again: for the thread that removes
    /// groups during a shutdown (`rmdir_at`).
    pub fn dup_dir(&self) -> std::io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Every group directory in the subtree (for adoption and clean-up).
    pub fn groups(&self) -> Vec<(String, GroupKind, PathBuf)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some((unit, kind)) = unit_of_group(name) {
                out.push((unit.to_string(), kind, e.path()));
            }
        }
        out
    }
}

/// `mkdirat` of a group under the subtree's directory `subtree`: true if
/// this call made it, false if it was there already (another thread, an
/// earlier supd, or the inline path of a spawn made it first).
pub fn make_at(subtree: i32, name: &std::ffi::CStr) -> std::io::Result<bool> {
    // SAFETY: mkdirat relative to a directory descriptor the caller owns,
    // with a NUL-terminated name.
    if unsafe { libc::mkdirat(subtree, name.as_ptr(), 0o755) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        return Ok(false);
    }
    Err(e)
}

/// `populated` of a unit's group, read relative to the subtree's
/// directory `subtree`.
pub fn populated_at(subtree: i32, unit: &str, kind: GroupKind) -> std::io::Result<bool> {
    let rel = std::ffi::CString::new(format!("{}/cgroup.events", group_name(unit, kind)))
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: openat relative to a directory descriptor the caller owns,
    // with a NUL-terminated name; the result, if any, is ours.
    let fd = unsafe { libc::openat(subtree, rel.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        // No such group: the kernel refuses to remove a group that has
        // processes, so one that is not there holds none. (Read as an
        // error, a run whose group had been removed under it — as a
        // shutdown's clean-up did once under heavy load — was never
        // reported empty, and the shutdown waited for it for ever.)
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(false);
        }
        return Err(e);
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let mut f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    read_events(&mut f)
}

/// Enable in `base` (for `dir`) and in `dir` (for the units) every
/// controller `base` has. Returns what is enabled for the units, and why
/// the rest is not.
fn delegate(base: &Path, dir: &Path, own_base: bool) -> (Vec<String>, Option<String>) {
    let avail = std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
    let given = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let mut enabled = Vec::new();
    let mut problems = Vec::new();
    for c in avail.split_whitespace() {
        let on = format!("+{c}");
        let has = given.split_whitespace().any(|g| g == c);
        if !has && !own_base {
            problems.push(format!("{c} (not delegated to supd's cgroup)"));
            continue;
        }
        // Into `dir` first (needs `base` to delegate it), then to the units.
        let r = if has {
            Ok(())
        } else {
            write_file(&base.join("cgroup.subtree_control"), on.as_bytes())
        }
        .and_then(|_| write_file(&dir.join("cgroup.subtree_control"), on.as_bytes()));
        match r {
            Ok(()) => enabled.push(c.to_string()),
            Err(e) => problems.push(format!("{c} ({e})")),
        }
    }
    let why = (!problems.is_empty()).then(|| {
        format!(
            "cannot delegate {} from {} (other processes share supd's starting cgroup?)",
            problems.join(", "),
            base.display()
        )
    });
    (enabled, why)
}

/// Inode of the initial cgroup namespace (`PROC_CGROUP_INIT_INO`).
const PROC_CGROUP_INIT_INO: u64 = 0xEFFF_FFFB;

fn in_initial_cgroup_ns() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/cgroup")
        .map(|m| m.ino() == PROC_CGROUP_INIT_INO)
        .unwrap_or(true)
}

fn mkdir(p: &Path) -> Result<(), String> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("creating cgroup {}: {e}", p.display())),
    }
}

fn write_file(p: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(p)?;
    f.write_all(data)
}

/// An open unit group: its directory (for `CLONE_INTO_CGROUP`) and its
/// `cgroup.procs` (for kernels without it: the child writes itself in).
#[derive(Debug)]
pub struct Group {
    pub path: PathBuf,
    pub dir: OwnedFd,
}

impl Group {
    pub fn open(path: PathBuf) -> Result<Group, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| format!("opening cgroup {}: {e}", path.display()))?;
        Ok(Group {
            path,
            dir: OwnedFd::from(f),
        })
    }

    pub fn raw_dir(&self) -> i32 {
        self.dir.as_raw_fd()
    }
}

/// The unit whose group (`NAME.unit` in our subtree) `pid` is in.
pub fn unit_of_pid(pid: i32, tree: &Tree) -> Option<String> {
    let text = std::fs::read_to_string(crate::world::procfs::pid_file(pid, "cgroup")?).ok()?;
    unit_of_cgroup_path(&own_cgroup(&text)?, tree)
}

/// The unit whose group (or a sub-group of it, for a delegated unit) a
/// cgroup v2 path (`/proc/PID/cgroup`'s) names.
pub fn unit_of_cgroup_path(path: &str, tree: &Tree) -> Option<String> {
    let sub = tree.cgroup_path.trim_end_matches('/');
    if let Some(rest) = path.strip_prefix(sub).and_then(|r| r.strip_prefix('/'))
        && let Some((unit, GroupKind::Unit)) = unit_of_group(rest.split('/').next()?)
    {
        return Some(unit.to_string());
    }
    let mut parts = path.rsplit('/');
    let leaf = parts.next()?;
    let parent = parts.next()?;
    if Some(std::ffi::OsStr::new(parent)) != tree.dir.file_name() {
        return None;
    }
    match unit_of_group(leaf)? {
        (unit, GroupKind::Unit) => Some(unit.to_string()),
        (_, GroupKind::Probe) => None,
    }
}

/// Extended attribute on a unit's group naming its main process as
/// "PID STARTTIME": kept with the group itself (kernel memory, no disk
/// write per spawn), so a supd that restarts — crashed, killed, upgraded —
/// finds it exactly where the processes are. `trusted.` needs
/// CAP_SYS_ADMIN; a delegated, unprivileged supd uses `user.`.
const MAIN_XATTRS: [&std::ffi::CStr; 2] = [c"trusted.supd.main", c"user.supd.main"];

/// A process's start time (clock ticks after boot, `/proc/PID/stat`
/// field 22): with the pid, it names one process for good.
pub fn start_time(pid: i32) -> Option<u64> {
    // Read at every spawn: one read into a buffer larger than the line can
    // be (52 numeric fields and a 16-byte name), not stat + a growing read.
    use std::io::Read;
    let mut f = File::open(crate::world::procfs::pid_file(pid, "stat")?).ok()?;
    let mut buf = [0u8; 2048];
    let n = f.read(&mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    // Fields after the command: state is field 3, start time field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Record `pid` (started at `start`, in `/proc/PID/stat` ticks, when the
/// caller knows it) as the main process of the group at `dir` — through
/// `dir_fd`, the group's directory, when the caller has it open (a spawn
/// has: no second walk through cgroupfs).
pub fn record_main(
    dir: &Path,
    dir_fd: Option<i32>,
    pid: i32,
    start: Option<u64>,
) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let st = start.or_else(|| start_time(pid)).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("pid {pid} is gone"))
    })?;
    let cpath = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let v = format!("{pid} {st}");
    let mut last = std::io::Error::from_raw_os_error(libc::ENOTSUP);
    for name in MAIN_XATTRS {
        let value = v.as_ptr() as *const libc::c_void;
        // SAFETY: (f)setxattr on a descriptor the caller keeps open or a
        // NUL-terminated path, with a NUL-terminated name and a (pointer,
        // length) value we own.
        let r = unsafe {
            match dir_fd {
                Some(fd) => libc::fsetxattr(fd, name.as_ptr(), value, v.len(), 0),
                None => libc::setxattr(cpath.as_ptr(), name.as_ptr(), value, v.len(), 0),
            }
        };
        if r == 0 {
            return Ok(());
        }
        last = std::io::Error::last_os_error();
    }
    Err(last)
}

/// The main process recorded on a group, if it is still that same
/// process (same start time) and still in the group.
pub fn recorded_main(dir: &Path) -> Option<i32> {
    let (pid, st) = recorded_main_raw(dir)?;
    (start_time(pid) == Some(st) && pids(dir).ok()?.contains(&pid)).then_some(pid)
}

/// What a group's main-process attribute says, unchecked: (pid, start
/// time in `/proc/PID/stat` ticks).
pub fn recorded_main_raw(dir: &Path) -> Option<(i32, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let cpath = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    let n = MAIN_XATTRS.iter().find_map(|name| {
        // SAFETY: getxattr into a buffer of the given length.
        let n = unsafe {
            libc::getxattr(
                cpath.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        (n > 0).then_some(n as usize)
    })?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let (pid, st) = text.trim().split_once(' ')?;
    Some((pid.parse().ok()?, st.parse().ok()?))
}

/// A unit group found populated when supd starts: what a previous supd
/// left running.
#[derive(Debug)]
pub struct Survivor {
    pub unit: String,
    pub kind: GroupKind,
    pub path: PathBuf,
    /// The recorded main process, verified (pid, start time, membership).
    pub main: Option<i32>,
}

impl Tree {
    /// Every populated group in the subtree. Empty ones stay: a unit
    /// that still exists reuses its group (removing and making 300 groups
    /// again would cost a boot after a crash ~0.3 ms each).
    pub fn survivors(&self) -> Vec<Survivor> {
        let mut out = Vec::new();
        for (unit, kind, path) in self.groups() {
            if !matches!(populated(&path), Ok(true)) {
                continue;
            }
            let main = match kind {
                GroupKind::Unit => recorded_main(&path),
                GroupKind::Probe => None,
            };
            out.push(Survivor {
                unit,
                kind,
                path,
                main,
            });
        }
        out
    }
}

/// How many times the kernel OOM-killed a process in the group
/// (`memory.events` `oom_kill`); None without the memory controller.
pub fn oom_kills(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("memory.events")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// Write a unit's `[resources]` into its group. Every key of a controller
/// the subtree has is written (unset keys get the kernel's default, so a
/// reload that removes a key takes effect); a key whose controller is
/// missing is refused with the reason.
pub fn apply(dir: &Path, r: &crate::unit::Resources, controllers: &[String]) -> Result<(), String> {
    use crate::unit::CgLimit;
    let has = |c: &str| controllers.iter().any(|x| x == c);
    let need = |key: &str, c: &str, set: bool| -> Result<(), String> {
        if set && !has(c) {
            return Err(format!(
                "[resources] {key} needs the {c} controller, which supd's cgroup subtree does not have (it has: {}); enable it for supd's cgroup, or remove {key}",
                if controllers.is_empty() {
                    "none".to_string()
                } else {
                    controllers.join(" ")
                }
            ));
        }
        Ok(())
    };
    need("memory_max", "memory", r.memory_max.is_some())?;
    need("memory_high", "memory", r.memory_high.is_some())?;
    need("cpu_weight", "cpu", r.cpu_weight.is_some())?;
    need("cpu_max", "cpu", r.cpu_max.is_some())?;
    need("pids_max", "pids", r.pids_max.is_some())?;
    need("io_weight", "io", r.io_weight.is_some())?;
    need(
        "oom_policy = \"kill\"",
        "memory",
        r.oom_policy == crate::unit::OomPolicy::Kill,
    )?;
    let mem_total = meminfo_total();
    let tasks_total = tasks_total();
    let mem = |l: Option<CgLimit>| l.unwrap_or(CgLimit::Max).resolve(mem_total);
    let mut writes: Vec<(&str, String)> = Vec::new();
    if has("memory") {
        writes.push(("memory.max", mem(r.memory_max)));
        writes.push(("memory.high", mem(r.memory_high)));
        if dir.join("memory.oom.group").exists() {
            let group = r.oom_policy == crate::unit::OomPolicy::Kill;
            writes.push(("memory.oom.group", if group { "1" } else { "0" }.into()));
        }
    }
    if has("cpu") {
        writes.push(("cpu.weight", r.cpu_weight.unwrap_or(100).to_string()));
        let (q, p) = r.cpu_max.unwrap_or((None, 100_000));
        let q = q.map(|q| q.to_string()).unwrap_or_else(|| "max".into());
        writes.push(("cpu.max", format!("{q} {p}")));
    }
    if has("pids") {
        writes.push((
            "pids.max",
            r.pids_max.unwrap_or(CgLimit::Max).resolve(tasks_total),
        ));
    }
    if has("io") && dir.join("io.weight").exists() {
        writes.push((
            "io.weight",
            format!("default {}", r.io_weight.unwrap_or(100)),
        ));
    }
    for (file, v) in writes {
        write_file(&dir.join(file), v.as_bytes())
            .map_err(|e| format!("writing {v:?} to {}/{file}: {e}", dir.display()))?;
    }
    Ok(())
}

/// How deep supd looks into a delegated unit's own sub-groups.
const MAX_DEPTH: usize = 8;

/// The host's memory in bytes (`MemTotal`), what `memory_max = "50%"` is
/// a share of.
fn meminfo_total() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = t
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// The host's task limit, what `pids_max = "99%"` is a share of (as
/// systemd: the smaller of kernel.pid_max and kernel.threads-max).
fn tasks_total() -> Option<u64> {
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    match (
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The pids in a group (`cgroup.procs`) and in the sub-groups a delegated
/// unit made below it.
pub fn pids(dir: &Path) -> std::io::Result<Vec<i32>> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    let mut out: Vec<i32> = text
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for sub in subgroups(dir, MAX_DEPTH) {
        if let Ok(t) = std::fs::read_to_string(sub.join("cgroup.procs")) {
            out.extend(t.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    Ok(out)
}

/// The sub-groups below `dir`, parents before children (only a delegated
/// unit has any).
fn subgroups(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut queue = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, level)) = queue.pop() {
        if level >= depth {
            continue;
        }
        // A cgroupfs directory's link count is 2 plus its sub-groups: one
        // stat answers "none" (nearly every unit) without opening and
        // listing the directory's ~25 interface files on every stop.
        if std::fs::symlink_metadata(&d)
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) <= 2)
        {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path());
                queue.push((e.path(), level + 1));
            }
        }
    }
    out
}

/// Hand a unit's group to its user (systemd's `Delegate=yes`): the
/// directory and the files that let the owner make sub-groups, move its
/// processes between them and enable controllers for them. The limits
/// supd wrote stay supd's (those files are not chowned).
pub fn delegate_to(dir: &Path, uid: u32, gid: u32) -> Result<(), String> {
    for f in [
        "",
        "cgroup.procs",
        "cgroup.threads",
        "cgroup.subtree_control",
    ] {
        let p = if f.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(f)
        };
        if f == "cgroup.threads" && !p.exists() {
            continue;
        }
        std::os::unix::fs::chown(&p, Some(uid), Some(gid))
            .map_err(|e| format!("delegating {} to uid {uid}: chown: {e}", p.display()))?;
    }
    Ok(())
}

/// Is any process left in the group (or below it)?
pub fn populated(dir: &Path) -> std::io::Result<bool> {
    let text = std::fs::read_to_string(dir.join("cgroup.events"))?;
    Ok(parse_populated(&text))
}

fn parse_populated(events: &str) -> bool {
    events
        .lines()
        .find_map(|l| l.strip_prefix("populated "))
        .map(|v| v.trim() != "0")
        .unwrap_or(false)
}

/// Send `sig` to every process in the group. A process forked meanwhile
/// may be missed; `kill` (SIGKILL through the kernel) is the one that
/// cannot miss.
pub fn signal_all(dir: &Path, sig: i32) -> std::io::Result<usize> {
    signal_all_except(dir, sig, None)
}

/// `signal_all`, leaving out the members of process group `signalled`
/// (see `Tree::signal_group_except`).
fn signal_all_except(dir: &Path, sig: i32, signalled: Option<i32>) -> std::io::Result<usize> {
    Ok(pids(dir)?
        .into_iter()
        .filter(|&p| signal_member(p, sig, signalled))
        .count())
}

/// Bytes asked of each read of a `cgroup.procs`: less than a page by more
/// than the longest record ("4194304\n"). The kernel's seq_file fills a
/// read until the caller's count is reached, the records end, or its
/// buffer (at least a page) would overflow; with this count it cannot
/// overflow first, so a short read is the end of the file and the usual
/// group costs one read, not a second one that returns 0.
const PROCS_READ: usize = 4096 - 64;

/// The pids of a `cgroup.procs` read in pieces: a pid split between two
/// reads carries over.
#[derive(Default)]
struct PidReader {
    pid: i32,
    digits: bool,
}

impl PidReader {
    fn feed(&mut self, bytes: &[u8], mut each: impl FnMut(i32)) {
        for &b in bytes {
            if b.is_ascii_digit() {
                self.pid = self
                    .pid
                    .saturating_mul(10)
                    .saturating_add(i32::from(b - b'0'));
                self.digits = true;
            } else {
                self.end(&mut each);
            }
        }
    }

    /// The end of the file (or of a pid).
    fn end(&mut self, mut each: impl FnMut(i32)) {
        if self.digits {
            each(self.pid);
        }
        *self = PidReader::default();
    }
}

/// `sig` to every process of the process group `pgid` leads (with
/// SIGCONT after SIGTERM and SIGKILL, as `signal_pid`): two system calls
/// for what `Tree::signal_group` does with a file read and two kills per
/// member. The caller knows `pgid` is a live (or unreaped) leader's pid,
/// so the group cannot be a recycled stranger's. False if nothing got it.
pub fn signal_process_group(pgid: i32, sig: i32) -> bool {
    // kill(-1) would be every process we may signal, kill(0) our own group.
    pgid > 1 && send_and_continue(-pgid, sig)
}

/// `signal_pid`, unless the member is in process group `signalled` (it
/// got `sig` through the group already).
fn signal_member(pid: i32, sig: i32, signalled: Option<i32>) -> bool {
    if let Some(pg) = signalled {
        // The leader itself needs no look, another member one getpgid
        // (-1 if it is gone: then its kill fails too).
        // SAFETY: getpgid(2) with an integer.
        if pid == pg || unsafe { libc::getpgid(pid) } == pg {
            return false;
        }
    }
    signal_pid(pid, sig)
}

/// `sig` to one member of a group (see `send_and_continue`). True if it
/// was delivered.
fn signal_pid(pid: i32, sig: i32) -> bool {
    // A pid in cgroup.procs is a live member (or a zombie of someone's),
    // never a recycled stranger: it leaves the file when it dies.
    pid > 0 && send_and_continue(pid, sig)
}

/// kill(2) `target` (a pid, or minus a process group) with `sig`, then
/// SIGCONT after SIGTERM and SIGKILL: a stopped process never sees SIGTERM
/// otherwise. True if `sig` was delivered.
fn send_and_continue(target: i32, sig: i32) -> bool {
    // SAFETY: kill(2) with integers; the callers vouch for `target`.
    if unsafe { libc::kill(target, sig) } != 0 {
        return false;
    }
    if sig == libc::SIGTERM || sig == libc::SIGKILL {
        // SAFETY: as above.
        unsafe { libc::kill(target, libc::SIGCONT) };
    }
    true
}

/// SIGKILL every process in the group and its descendants, atomically
/// with respect to forks (`cgroup.kill`, Linux 5.14); on older kernels,
/// SIGKILL the members until none is left (bounded).
pub fn kill(dir: &Path) -> std::io::Result<()> {
    match write_file(&dir.join("cgroup.kill"), b"1") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            for _ in 0..16 {
                if signal_all(dir, libc::SIGKILL)? == 0 {
                    break;
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Remove an empty group directory (a removed unit's), with the
/// sub-groups a delegated unit made in it. Fails with EBUSY while
/// processes remain, which is what we want.
pub fn remove(dir: &Path) -> std::io::Result<()> {
    for sub in subgroups(dir, MAX_DEPTH).iter().rev() {
        let _ = std::fs::remove_dir(sub);
    }
    std::fs::remove_dir(dir)
}

/// rmdir of `name` in the directory `dir` (the subtree): EBUSY while the
/// group has processes or sub-groups, which is what we want.
pub fn rmdir_at(dir: &OwnedFd, name: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: unlinkat relative to a directory descriptor we own, with a
    // NUL-terminated name.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One inotify instance for the `cgroup.events` of every unit group:
/// an inotify watch costs no descriptor (a group's own open
/// `cgroup.events` did: at 10,000 units that alone was half of supd's
/// descriptor limit here), no epoll registration and no task per group,
/// and one read collects the changes of many groups. systemd watches
/// `cgroup.events` the same way. The watch pins the file's inode, which
/// kernfs needs to deliver the notification.
pub struct EventsInotify {
    fd: AsyncFd<OwnedFd>,
}

/// What one read of the inotify instance said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InotifyNews {
    /// Watches whose file changed (a watch may be named more than once).
    pub changed: Vec<i32>,
    /// Watches the kernel removed (the group was removed).
    pub gone: Vec<i32>,
    /// Events were lost (queue overflow): any group may have changed.
    pub overflow: bool,
}

/// The instance made by `EventsInotify::reserve`, until `new` takes it.
static RESERVED: std::sync::Mutex<Option<OwnedFd>> = std::sync::Mutex::new(None);

fn inotify_init() -> std::io::Result<OwnedFd> {
    // SAFETY: inotify_init1 with flags only; the result, if any, is ours.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

impl EventsInotify {
    /// Make the instance now, before the state-dir lock and the sockets
    /// are opened, so that its descriptor number is below theirs. A
    /// killed process's files are released highest number first, and
    /// releasing an inotify instance that has watches waits for an SRCU
    /// grace period (`fsnotify_destroy_group`, 10-100 ms here): numbered
    /// above the lock, it kept the lock and the sockets held that long
    /// after supd's main thread was gone, and a supd started right after
    /// `kill -9` found "another supd" and ran without cgroups
    /// (tests/directives.rs, disable_keeps_...). Best effort.
    pub fn reserve() {
        if let Ok(fd) = inotify_init() {
            *RESERVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(fd);
        }
    }

    /// The instance (the reserved one if any; non-blocking,
    /// close-on-exec). Needs the runtime.
    pub fn new() -> std::io::Result<EventsInotify> {
        let reserved = RESERVED.lock().unwrap_or_else(|p| p.into_inner()).take();
        let fd = match reserved {
            Some(fd) => fd,
            None => inotify_init()?,
        };
        // `OwnedFd` owns its descriptor, so the deprecated constructor's
        // I/O-safety concern does not apply (as in `EventsWatch`).
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(fd, Interest::READABLE)?;
        Ok(EventsInotify { fd })
    }

    /// Watch the `cgroup.events` of the group at `dir`; returns the watch
    /// descriptor (ENOSPC when `fs.inotify.max_user_watches` is reached).
    pub fn add(&self, dir: &Path) -> std::io::Result<i32> {
        use std::os::unix::ffi::OsStrExt;
        let p = dir.join("cgroup.events");
        let c = std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: inotify_add_watch on our instance with a NUL-terminated path.
        let wd =
            unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) };
        if wd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Remove these watches (each is reported once more, as removed).
    /// Removing a group does not end its watch (the watch pins the file):
    /// this does. Errors are ignored: EINVAL is a watch that is gone
    /// already, and there is nothing else to do.
    pub fn remove_watches(&self, wds: &[i32]) {
        for &wd in wds {
            // SAFETY: inotify_rm_watch on our instance with an integer.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
        }
    }

    /// Wait for changes; everything queued is read (until the instance
    /// would block).
    pub async fn next(&self) -> std::io::Result<InotifyNews> {
        let mut news = InotifyNews::default();
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [0u8; 8192];
            loop {
                // SAFETY: read(2) into a buffer we own, of its length.
                let n = unsafe {
                    libc::read(
                        self.fd.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                    )
                };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        guard.clear_ready();
                        break;
                    }
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                parse_inotify(&buf[..n as usize], &mut news);
            }
            if news != InotifyNews::default() {
                return Ok(news);
            }
        }
    }
}

/// Split a read of an inotify instance into its events.
fn parse_inotify(mut b: &[u8], news: &mut InotifyNews) {
    // struct inotify_event { int wd; u32 mask; u32 cookie; u32 len; char name[len]; }
    const HEAD: usize = 16;
    while b.len() >= HEAD {
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        let wd = i32::from_ne_bytes(word(0));
        let mask = u32::from_ne_bytes(word(4));
        let len = u32::from_ne_bytes(word(12)) as usize;
        if mask & libc::IN_Q_OVERFLOW != 0 {
            news.overflow = true;
        } else if mask & libc::IN_IGNORED != 0 {
            news.gone.push(wd);
        } else if mask & libc::IN_MODIFY != 0 {
            news.changed.push(wd);
        }
        b = b.get(HEAD + len..).unwrap_or(&[]);
    }
}

/// Wakes when a group's `cgroup.events` changes (populated, frozen).
/// The fallback where an inotify watch cannot be had (the watch limit):
/// one descriptor per group.
pub struct EventsWatch {
    fd: AsyncFd<File>,
}

impl EventsWatch {
    /// Watch the group open at `group` (its directory descriptor).
    pub fn new(group: &Group) -> std::io::Result<EventsWatch> {
        // SAFETY: openat relative to the group's directory descriptor, a
        // NUL-terminated literal name; the result, if any, is ours.
        let fd = unsafe {
            libc::openat(
                group.raw_dir(),
                c"cgroup.events".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // `File` owns its descriptor, so the deprecated constructor's
        // I/O-safety concern does not apply (as in mount_watch).
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(f, Interest::PRIORITY | Interest::ERROR)?;
        Ok(EventsWatch { fd })
    }

    /// The current `populated` value, read now (arms the notification).
    pub fn read(&mut self) -> std::io::Result<bool> {
        let f = self.fd.get_mut();
        read_events(f)
    }

    /// Wait for the next change; returns `populated` as it is then.
    pub async fn changed(&mut self) -> std::io::Result<bool> {
        let mut guard = self
            .fd
            .ready_mut(Interest::PRIORITY | Interest::ERROR)
            .await?;
        let v = read_events(guard.get_inner_mut())?;
        guard.clear_ready();
        Ok(v)
    }
}

fn read_events(f: &mut File) -> std::io::Result<bool> {
    // One pread into a small buffer: this runs at every spawn and every
    // wake-up of a group (seek + stat + read to the end was five calls).
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 256];
    let n = f.read_at(&mut buf, 0)?;
    Ok(parse_populated(&String::from_utf8_lossy(&buf[..n])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_that_is_not_there_reads_as_empty_and_others_as_written() {
        // A populated group cannot be removed, so a missing one is empty;
        // reading it as an error once left a shutdown waiting for ever.
        let dir = std::env::temp_dir().join(format!("supd-populated-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("full.unit")).expect("dir");
        std::fs::write(
            dir.join("full.unit/cgroup.events"),
            "populated 1\nfrozen 0\n",
        )
        .expect("write");
        let d = std::fs::File::open(&dir).expect("open dir");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&d);
        assert!(!populated_at(fd, "gone", GroupKind::Unit).expect("a missing group is no error"));
        assert!(populated_at(fd, "full", GroupKind::Unit).expect("read"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn finds_the_unified_hierarchy_first_and_skips_read_only() {
        let mi = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:38 / /mnt/ro ro,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            find_mount(mi),
            Some((PathBuf::from("/sys/fs/cgroup/unified"), "/".to_string()))
        );
        let mi = "\
50 1 0:38 / /mnt/other rw - cgroup2 cgroup2 rw
41 1 0:38 /x /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
";
        assert_eq!(
            find_mount(mi),
            Some((PathBuf::from("/sys/fs/cgroup"), "/x".to_string()))
        );
        assert_eq!(
            find_mount("41 1 0:38 / /sys/fs/cgroup ro - cgroup2 cgroup2 ro\n"),
            None
        );
        assert_eq!(find_mount("1 0 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }

    #[test]
    fn parses_own_cgroup_and_events() {
        assert_eq!(
            own_cgroup("9:name=systemd:/\n1:cpu:/\n0::/system.slice/supd.service\n"),
            Some("/system.slice/supd.service".to_string())
        );
        assert_eq!(own_cgroup("1:cpu:/\n"), None);
        assert!(parse_populated("populated 1\nfrozen 0\n"));
        assert!(!parse_populated("populated 0\nfrozen 0\n"));
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn pids_split_between_reads_are_whole() {
        let mut got = Vec::new();
        let mut r = PidReader::default();
        for piece in [&b"12"[..], b"3\n45\n6", b"", b"78\n9"] {
            r.feed(piece, |p| got.push(p));
        }
        r.end(|p| got.push(p));
        assert_eq!(got, [123, 45, 678, 9]);
        // Nothing read, or only a newline: no pid.
        let mut none = Vec::new();
        let mut r = PidReader::default();
        r.feed(b"\n", |p| none.push(p));
        r.end(|p| none.push(p));
        assert!(none.is_empty());
    }

    #[test]
    fn inotify_reads_are_split_into_changes_removals_and_overflow() {
        let ev = |wd: i32, mask: u32, name: &[u8]| {
            let len = name.len().next_multiple_of(16);
            let mut v = Vec::new();
            v.extend(wd.to_ne_bytes());
            v.extend(mask.to_ne_bytes());
            v.extend(0u32.to_ne_bytes());
            v.extend((len as u32).to_ne_bytes());
            v.extend(name);
            v.resize(16 + len, 0);
            v
        };
        let mut b = ev(3, libc::IN_MODIFY, b"");
        b.extend(ev(4, libc::IN_MODIFY, b"x"));
        b.extend(ev(3, libc::IN_IGNORED, b""));
        b.extend(ev(5, libc::IN_MODIFY, b""));
        let mut news = InotifyNews::default();
        parse_inotify(&b, &mut news);
        assert_eq!(news.changed, vec![3, 4, 5]);
        assert_eq!(news.gone, vec![3]);
        assert!(!news.overflow);
        // A truncated tail is ignored, not read past.
        parse_inotify(&ev(-1, libc::IN_Q_OVERFLOW, b"")[..], &mut news);
        parse_inotify(&ev(6, libc::IN_MODIFY, b"")[..10], &mut news);
        assert!(news.overflow);
        assert_eq!(news.changed, vec![3, 4, 5]);
    }

    #[test]
    fn group_names_round_trip_and_subtrees_differ_by_state_dir() {
        for u in ["db", "a.unit", "x.probe", "web@1"] {
            for k in [GroupKind::Unit, GroupKind::Probe] {
                assert_eq!(unit_of_group(&group_name(u, k)), Some((u, k)));
            }
        }
        assert_eq!(unit_of_group(SELF_LEAF), None);
        assert_eq!(subtree_name(Path::new("/var/lib/supd")), "supd");
        let a = subtree_name(Path::new("/tmp/a/state"));
        let b = subtree_name(Path::new("/tmp/b/state"));
        assert_ne!(a, b);
        assert_eq!(a, subtree_name(Path::new("/tmp/a/state")));
        assert!(a.starts_with("supd-") && a.len() == 13, "{a}");
    }
}
