//! A unit's `[sandbox]`: its own mount (and UTS, network, IPC) namespace,
//! set up by the child between clone and exec, plus the capability and
//! no-new-privileges settings.
//!
//! Owns: turning a `Sandbox` into a `Plan` — every mount operation, with
//! its C strings, decided in the parent from the current mount table —
//! and `apply_*`, the raw system calls the child makes from that plan.
//! Must never: allocate, lock or call a libc wrapper in the `apply_*`
//! functions (they run in a `CLONE_VM | CLONE_VFORK` child sharing supd's
//! memory; see `spawn`), or change supd's own namespaces.
//!
//! The read-only file system: the unit's rw paths are bound onto
//! themselves (so they are mounts of their own), each read-only root
//! (`/` for `strict`, /usr... for `yes`) is bound onto itself and made
//! read-only recursively with mount_setattr(2), then read-write is given
//! back to exactly the mounts under an rw path that were read-write
//! before (so a /sys that was read-only stays so). New file systems
//! (private /tmp, /dev, /proc) are mounted afterwards and are writable.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::mounts::MountTable;
use crate::unit::{ProtectHome, ProtectSystem, Sandbox, UnitSpec};

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const AT_RECURSIVE: usize = 0x8000;
const OPEN_TREE_CLONE: usize = 1;
const MOVE_MOUNT_F_EMPTY_PATH: usize = 0x4;
const PR_SET_KEEPCAPS: usize = 8;
const PR_CAPBSET_DROP: usize = 24;
const PR_SET_NO_NEW_PRIVS: usize = 38;
const PR_SET_SECUREBITS: usize = 28;
const PR_CAP_AMBIENT: usize = 47;
const PR_CAP_AMBIENT_RAISE: usize = 2;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Device nodes a private /dev keeps.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// One step of the child's setup.
#[derive(Debug)]
enum Op {
    /// Stop our mounts from propagating back to the host.
    SlaveRoot,
    BindSelf {
        path: CString,
        optional: bool,
    },
    SetAttr {
        path: CString,
        recursive: bool,
        set: u64,
        clr: u64,
        optional: bool,
    },
    Tmpfs {
        path: CString,
        flags: libc::c_ulong,
        data: CString,
        optional: bool,
    },
    Proc {
        data: CString,
    },
    /// Keep a detached copy of `path` (a device node) in `slot`.
    Grab {
        slot: usize,
        path: CString,
    },
    /// Create an empty file to mount a device node on.
    Touch {
        path: CString,
    },
    Mkdir {
        path: CString,
    },
    Symlink {
        target: CString,
        path: CString,
    },
    /// `bind_paths`: bind `src` onto `dst`.
    Bind {
        src: CString,
        dst: CString,
        recursive: bool,
        optional: bool,
    },
    /// Mount the copy in `slot` at `path`.
    Place {
        slot: usize,
        path: CString,
    },
}

impl Op {
    fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Op::SlaveRoot => "making / a slave mount".into(),
            Op::BindSelf { path, .. } => format!("binding {} onto itself", s(path)),
            Op::SetAttr { path, set, clr, .. } => format!(
                "{} {}",
                if *set & MOUNT_ATTR_RDONLY != 0 {
                    "making read-only:"
                } else if *clr & MOUNT_ATTR_RDONLY != 0 {
                    "making writable:"
                } else if *set & MOUNT_ATTR_NOEXEC != 0 {
                    "making noexec:"
                } else {
                    "changing mount flags of"
                },
                s(path)
            ),
            Op::Tmpfs { path, .. } => format!("mounting a tmpfs on {}", s(path)),
            Op::Proc { data } => format!("mounting a private /proc ({})", s(data)),
            Op::Grab { path, .. } => format!("keeping {} for the private /dev", s(path)),
            Op::Touch { path } | Op::Mkdir { path } => format!("creating {}", s(path)),
            Op::Symlink { path, .. } => format!("creating the symlink {}", s(path)),
            Op::Place { path, .. } => format!("mounting {}", s(path)),
            Op::Bind { src, dst, .. } => format!("binding {} onto {}", s(src), s(dst)),
        }
    }
}

/// Everything the child does for the sandbox, decided in the parent.
#[derive(Debug, Default)]
pub struct Plan {
    /// clone flags for unshare(2).
    pub unshare: i32,
    ops: Vec<Op>,
    /// Bring loopback up (a private network namespace).
    lo_up: bool,
    /// Capabilities to drop from the bounding set.
    bounding_drop: Vec<u32>,
    ambient: u64,
    no_new_privs: bool,
    /// Slots for `Grab`/`Place`.
    slots: usize,
    /// Seccomp programs, installed right before execve.
    seccomp: Programs,
    /// prctl(PR_SET_SECUREBITS) before the user change.
    secure_bits: Option<u32>,
    /// `private_users`: the uid_map and gid_map written for the child.
    userns: Option<(CString, CString)>,
}

/// The seccomp programs (libc's `sock_filter` has no Debug).
#[derive(Default)]
struct Programs(Vec<Vec<libc::sock_filter>>);

impl std::fmt::Debug for Programs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} seccomp program(s)", self.0.len())
    }
}

impl Plan {
    /// `private_users`: map root and the unit's user and group (whatever
    /// else the service meets shows as the overflow id, `nobody`).
    pub fn set_identity(&mut self, private_users: bool, uid: Option<u32>, gid: Option<u32>) {
        if !private_users {
            return;
        }
        let map = |id: Option<u32>| match id {
            Some(i) if i != 0 => cs(&format!("0 0 1\n{i} {i} 1\n")),
            _ => cs("0 0 1\n"),
        };
        self.userns = Some((map(uid), map(gid)));
    }
}

/// Maximum grabbed device nodes.
const MAX_SLOTS: usize = 16;

fn c(p: &Path) -> Option<CString> {
    CString::new(p.as_os_str().as_bytes()).ok()
}

fn cs(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Paths the unit itself owns (its directories): writable under `strict`
/// as in systemd.
fn own_dirs(spec: &UnitSpec) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for (base, names) in [
        ("/run", &spec.runtime_directory),
        ("/var/lib", &spec.state_directory),
        ("/var/cache", &spec.cache_directory),
        ("/var/log", &spec.logs_directory),
    ] {
        for n in names {
            v.push(Path::new(base).join(n));
        }
    }
    v
}

/// The mount of `table` containing `path` (the longest mount point
/// prefix), and whether it is read-only.
fn containing_ro(table: &MountTable, path: &Path) -> bool {
    table
        .entries
        .iter()
        .filter(|e| path.starts_with(&e.mount_point))
        .max_by_key(|e| e.mount_point.as_os_str().len())
        .is_some_and(|e| e.mount_options.iter().any(|o| o == "ro"))
}

/// Build the plan; `None` when the unit has no sandbox. An error names the
/// setting that cannot be honoured here.
pub fn plan(
    spec: &UnitSpec,
    table: &MountTable,
    inaccessible_file: &Path,
    notify_socket: Option<&Path>,
) -> Result<Option<Plan>, String> {
    let sb: &Sandbox = &spec.sandbox;
    if sb.is_empty() {
        return Ok(None);
    }
    let mut p = Plan {
        no_new_privs: sb.no_new_privileges,
        ambient: sb.ambient_capabilities,
        seccomp: Programs(
            crate::world::seccomp::programs(sb).map_err(|e| format!("[sandbox]: {e}"))?,
        ),
        secure_bits: sb.secure_bits,
        ..Plan::default()
    };
    // Capabilities: what the bounding set keeps, minus what the
    // protections take away (as systemd's do).
    let all = (1u64 << crate::unit::caps::NAMES.len()) - 1;
    let mut keep = sb.capability_bounding_set.unwrap_or(all);
    let cap = |n: &str| crate::unit::caps::number(n).map(|b| 1u64 << b).unwrap_or(0);
    if sb.private_devices {
        keep &= !(cap("CAP_MKNOD") | cap("CAP_SYS_RAWIO"));
    }
    if sb.protect_kernel_modules {
        keep &= !cap("CAP_SYS_MODULE");
    }
    if sb.protect_kernel_logs {
        keep &= !cap("CAP_SYSLOG");
    }
    if sb.protect_clock {
        keep &= !(cap("CAP_SYS_TIME") | cap("CAP_WAKE_ALARM"));
    }
    if keep != all {
        p.bounding_drop = (0..crate::unit::caps::NAMES.len() as u32)
            .filter(|b| keep & (1u64 << b) == 0)
            .collect();
    }
    if sb.ambient_capabilities & !keep != 0 {
        return Err(
            "[sandbox] ambient_capabilities names a capability the bounding set drops".into(),
        );
    }
    if sb.protect_hostname {
        p.unshare |= libc::CLONE_NEWUTS;
    }
    if sb.private_network {
        p.unshare |= libc::CLONE_NEWNET;
        p.lo_up = true;
    }
    if sb.private_ipc {
        p.unshare |= libc::CLONE_NEWIPC;
    }
    if !sb.needs_mounts() {
        return Ok(Some(p));
    }
    p.unshare |= libc::CLONE_NEWNS;
    p.ops.push(Op::SlaveRoot);
    // supd's sd_notify socket must stay reachable when a private /tmp (or
    // /home) would hide it: keep it now, put it back at the end.
    let fresh: Vec<&str> = {
        let mut v = Vec::new();
        if sb.private_tmp {
            v.extend(["/tmp", "/var/tmp"]);
        }
        if sb.protect_home == ProtectHome::Tmpfs {
            v.extend(["/home", "/root", "/run/user"]);
        }
        v
    };
    let kept = notify_socket.and_then(|k| {
        let root = fresh
            .iter()
            .find(|r| k.starts_with(r) && k != Path::new(r))?;
        Some((k.to_path_buf(), PathBuf::from(root)))
    });
    let keep_slot = MAX_SLOTS - 1;
    if let Some((k, _)) = &kept
        && let Some(path) = c(k)
    {
        p.ops.push(Op::Grab {
            slot: keep_slot,
            path,
        });
    }

    // A private /proc first: the protections below then apply to it.
    if sb.protect_proc.is_some() || sb.proc_subset_pid {
        let mut opts = Vec::new();
        if let Some(h) = &sb.protect_proc {
            opts.push(format!("hidepid={h}"));
        }
        if sb.proc_subset_pid {
            opts.push("subset=pid".into());
        }
        p.ops.push(Op::Proc {
            data: cs(&opts.join(",")),
        });
    }

    // Read-only roots, writable paths, inaccessible paths.
    let mut ro: Vec<(PathBuf, bool)> = Vec::new();
    let mut rw: Vec<(PathBuf, bool)> = Vec::new();
    let mut gone: Vec<(PathBuf, bool)> = Vec::new();
    match sb.protect_system {
        ProtectSystem::No => {}
        ProtectSystem::Yes | ProtectSystem::Full => {
            for d in ["/usr", "/boot", "/efi"] {
                ro.push((d.into(), true));
            }
            if sb.protect_system == ProtectSystem::Full {
                ro.push(("/etc".into(), true));
            }
        }
        ProtectSystem::Strict => {
            ro.push(("/".into(), false));
            for d in ["/dev", "/proc", "/sys"] {
                rw.push((d.into(), true));
            }
        }
    }
    match sb.protect_home {
        ProtectHome::No | ProtectHome::Tmpfs => {}
        ProtectHome::Yes => {
            for d in ["/home", "/root", "/run/user"] {
                gone.push((d.into(), true));
            }
        }
        ProtectHome::ReadOnly => {
            for d in ["/home", "/root", "/run/user"] {
                ro.push((d.into(), true));
            }
        }
    }
    if sb.protect_kernel_tunables {
        for d in [
            "/proc/sys",
            "/proc/sysrq-trigger",
            "/proc/latency_stats",
            "/proc/acpi",
            "/proc/apm",
            "/proc/asound",
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/sys",
        ] {
            ro.push((d.into(), true));
        }
    }
    if sb.protect_control_groups {
        ro.push(("/sys/fs/cgroup".into(), true));
    }
    if sb.protect_kernel_modules {
        for d in ["/usr/lib/modules", "/lib/modules"] {
            gone.push((d.into(), true));
        }
    }
    if sb.protect_kernel_logs {
        for d in ["/proc/kmsg", "/dev/kmsg"] {
            gone.push((d.into(), true));
        }
    }
    ro.extend(
        sb.read_only_paths
            .iter()
            .map(|x| (x.path.clone(), x.optional)),
    );
    rw.extend(
        sb.read_write_paths
            .iter()
            .map(|x| (x.path.clone(), x.optional)),
    );
    rw.extend(own_dirs(spec).into_iter().map(|d| (d, true)));
    gone.extend(
        sb.inaccessible_paths
            .iter()
            .map(|x| (x.path.clone(), x.optional)),
    );
    // Private /tmp and /dev are new file systems, writable anyway.
    if sb.private_tmp {
        rw.retain(|(d, _)| !d.starts_with("/tmp") && !d.starts_with("/var/tmp"));
    }

    let exists = |d: &Path| std::fs::symlink_metadata(d).is_ok();
    // 1. Writable paths become mounts of their own.
    for (d, optional) in &rw {
        if d == Path::new("/dev") || d == Path::new("/proc") || d == Path::new("/sys") {
            continue;
        }
        if !exists(d) {
            if *optional {
                continue;
            }
            return Err(format!(
                "[sandbox] read_write_paths: {} does not exist (write \"-{}\" if it may be missing)",
                d.display(),
                d.display()
            ));
        }
        if let Some(path) = c(d) {
            p.ops.push(Op::BindSelf {
                path,
                optional: *optional,
            });
        }
    }
    // 2. Read-only roots.
    for (d, optional) in &ro {
        if !exists(d) {
            if *optional {
                continue;
            }
            return Err(format!(
                "[sandbox] read_only_paths: {} does not exist (write \"-{}\" if it may be missing)",
                d.display(),
                d.display()
            ));
        }
        let Some(path) = c(d) else { continue };
        if d != Path::new("/") {
            p.ops.push(Op::BindSelf {
                path: path.clone(),
                optional: *optional,
            });
        }
        p.ops.push(Op::SetAttr {
            path,
            recursive: true,
            set: MOUNT_ATTR_RDONLY,
            clr: 0,
            optional: *optional,
        });
    }
    // 3. Writable again: each rw path (when what contains it was
    // writable), and every mount below it that was writable.
    if !ro.is_empty() {
        for (d, _) in &rw {
            if !exists(d) {
                continue;
            }
            let under_ro = ro.iter().any(|(r, _)| d.starts_with(r));
            if !under_ro {
                continue;
            }
            if !containing_ro(table, d)
                && let Some(path) = c(d)
            {
                p.ops.push(Op::SetAttr {
                    path,
                    recursive: false,
                    set: 0,
                    clr: MOUNT_ATTR_RDONLY,
                    optional: true,
                });
            }
            for e in table.entries.iter() {
                let m = &e.mount_point;
                if m != d
                    && m.starts_with(d)
                    && !e.mount_options.iter().any(|o| o == "ro")
                    // A read-only root inside the rw path stays read-only.
                    && !ro.iter().any(|(r, _)| m.starts_with(r) && r.starts_with(d) && r != d)
                    && let Some(path) = c(m)
                {
                    p.ops.push(Op::SetAttr {
                        path,
                        recursive: false,
                        set: 0,
                        clr: MOUNT_ATTR_RDONLY,
                        optional: true,
                    });
                }
            }
        }
    }
    // 4. noexec.
    for x in &sb.no_exec_paths {
        if !exists(&x.path) {
            if x.optional {
                continue;
            }
            return Err(format!(
                "[sandbox] no_exec_paths: {} does not exist",
                x.path.display()
            ));
        }
        let Some(path) = c(&x.path) else { continue };
        if x.path != Path::new("/") {
            p.ops.push(Op::BindSelf {
                path: path.clone(),
                optional: x.optional,
            });
        }
        p.ops.push(Op::SetAttr {
            path,
            recursive: true,
            set: MOUNT_ATTR_NOEXEC,
            clr: 0,
            optional: x.optional,
        });
    }
    for x in &sb.exec_paths {
        if !exists(&x.path) {
            continue;
        }
        let Some(path) = c(&x.path) else { continue };
        p.ops.push(Op::BindSelf {
            path: path.clone(),
            optional: true,
        });
        p.ops.push(Op::SetAttr {
            path,
            recursive: true,
            set: 0,
            clr: MOUNT_ATTR_NOEXEC,
            optional: true,
        });
    }
    // 5. Inaccessible: an empty, mode-0000, read-only tmpfs over a
    // directory; an unreadable empty file over a file.
    for (d, optional) in &gone {
        let Ok(md) = std::fs::metadata(d) else {
            if *optional {
                continue;
            }
            return Err(format!(
                "[sandbox] inaccessible_paths: {} does not exist",
                d.display()
            ));
        };
        let Some(path) = c(d) else { continue };
        if md.is_dir() {
            p.ops.push(Op::Tmpfs {
                path,
                flags: (libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC),
                data: cs("mode=000,size=4k"),
                optional: *optional,
            });
        } else if let Some(src) = c(inaccessible_file) {
            p.ops.push(Op::Grab {
                slot: p.slots,
                path: src,
            });
            p.ops.push(Op::Place {
                slot: p.slots,
                path,
            });
            p.slots += 1;
            p.ops.push(Op::SetAttr {
                path: c(d).unwrap_or_default(),
                recursive: false,
                set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                clr: 0,
                optional: true,
            });
        }
    }
    // 6. New file systems.
    if sb.private_tmp {
        for d in ["/tmp", "/var/tmp"] {
            p.ops.push(Op::Tmpfs {
                path: cs(d),
                flags: (libc::MS_NOSUID | libc::MS_NODEV),
                data: cs("mode=1777"),
                optional: true,
            });
        }
    }
    if sb.protect_home == ProtectHome::Tmpfs {
        for d in ["/home", "/root", "/run/user"] {
            if exists(Path::new(d)) {
                p.ops.push(Op::Tmpfs {
                    path: cs(d),
                    flags: (libc::MS_NOSUID | libc::MS_NODEV),
                    data: cs("mode=0755"),
                    optional: true,
                });
            }
        }
    }
    if sb.private_devices {
        let first = p.slots;
        let mut kept = Vec::new();
        for (i, dev) in DEVICES.iter().enumerate() {
            let host = Path::new("/dev").join(dev);
            if !exists(&host) || p.slots >= MAX_SLOTS - 1 {
                continue;
            }
            p.ops.push(Op::Grab {
                slot: first + i,
                path: cs(&format!("/dev/{dev}")),
            });
            kept.push((first + i, *dev));
            p.slots = first + i + 1;
        }
        p.ops.push(Op::Tmpfs {
            path: cs("/dev"),
            flags: (libc::MS_NOSUID | libc::MS_NOEXEC),
            data: cs("mode=0755,size=4m"),
            optional: false,
        });
        for (slot, dev) in kept {
            let path = cs(&format!("/dev/{dev}"));
            p.ops.push(Op::Touch { path: path.clone() });
            p.ops.push(Op::Place { slot, path });
        }
        for d in ["/dev/pts", "/dev/shm"] {
            p.ops.push(Op::Mkdir { path: cs(d) });
        }
        p.ops.push(Op::Tmpfs {
            path: cs("/dev/shm"),
            flags: (libc::MS_NOSUID | libc::MS_NODEV),
            data: cs("mode=1777"),
            optional: true,
        });
        for (target, link) in [
            ("/proc/self/fd", "/dev/fd"),
            ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"),
        ] {
            p.ops.push(Op::Symlink {
                target: cs(target),
                path: cs(link),
            });
        }
    }
    // 7. Bind mounts, last: over the new file systems too, and writable
    // unless read-only (they are new mounts, after the read-only roots).
    for b in &sb.bind_paths {
        let Ok(md) = std::fs::metadata(&b.source) else {
            if b.optional {
                continue;
            }
            return Err(format!(
                "[sandbox] bind_paths: {} does not exist (write \"-{}\" if it may be missing)",
                b.source.display(),
                b.source.display()
            ));
        };
        if std::fs::symlink_metadata(&b.target).is_err() {
            // The mount point, made on the host as systemd makes it.
            let made = if md.is_dir() {
                std::fs::create_dir_all(&b.target)
            } else {
                b.target
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|_| std::fs::write(&b.target, b""))
            };
            made.map_err(|e| {
                format!(
                    "[sandbox] bind_paths: creating the mount point {}: {e}",
                    b.target.display()
                )
            })?;
        }
        let (Some(src), Some(dst)) = (c(&b.source), c(&b.target)) else {
            continue;
        };
        p.ops.push(Op::Bind {
            src,
            dst: dst.clone(),
            recursive: b.recursive,
            optional: b.optional,
        });
        if b.read_only {
            p.ops.push(Op::SetAttr {
                path: dst,
                recursive: true,
                set: MOUNT_ATTR_RDONLY,
                clr: 0,
                optional: false,
            });
        }
    }
    if let Some((k, root)) = &kept {
        // The directories between the fresh file system and the socket.
        let mut d = root.clone();
        if let Ok(rel) = k.strip_prefix(root) {
            let comps: Vec<_> = rel.components().collect();
            for comp in comps.iter().take(comps.len().saturating_sub(1)) {
                d.push(comp);
                if let Some(path) = c(&d) {
                    p.ops.push(Op::Mkdir { path });
                }
            }
        }
        if let Some(path) = c(k) {
            p.ops.push(Op::Touch { path: path.clone() });
            p.ops.push(Op::Place {
                slot: keep_slot,
                path,
            });
        }
    }
    if p.slots >= MAX_SLOTS {
        return Err("[sandbox]: too many inaccessible files".into());
    }
    Ok(Some(p))
}

/// Raw system call returning -errno on failure (see `spawn::sys`).
#[inline(always)]
unsafe fn sys(n: libc::c_long, a: usize, b: usize, c: usize, d: usize, e: usize) -> isize {
    // SAFETY: the caller passes a valid call number and arguments.
    let r = unsafe { libc::syscall(n, a, b, c, d, e) } as isize;
    if r == -1 {
        // SAFETY: errno of the current (shared) TLS block, read at once.
        -(unsafe { *libc::__errno_location() } as isize)
    } else {
        r
    }
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Where the child failed: the op index (or a fixed step) and errno.
pub type Failure = (usize, isize);

/// Step numbers past the ops, for failures outside them.
pub const STEP_UNSHARE: usize = 10_000;
pub const STEP_LOOPBACK: usize = 10_001;
pub const STEP_BOUNDING: usize = 10_002;
pub const STEP_KEEPCAPS: usize = 10_003;
pub const STEP_CAPSET: usize = 10_004;
pub const STEP_AMBIENT: usize = 10_005;
pub const STEP_NNP: usize = 10_006;
pub const STEP_SECUREBITS: usize = 10_007;
pub const STEP_SECCOMP_NNP: usize = 10_008;
pub const STEP_SECCOMP: usize = 10_009;
pub const STEP_USERNS: usize = 10_010;
pub const STEP_USERNS_MAP: usize = 10_011;

/// In the child, as root, before changing user: namespaces, mounts,
/// bounding set, keep-caps.
///
/// # Safety
/// Call only in the spawn child (raw system calls on the plan's data).
pub unsafe fn apply_before_identity(plan: &Plan) -> Result<(), Failure> {
    // SAFETY: raw system calls with pointers into `plan`, alive while the
    // parent is suspended.
    unsafe {
        if plan.unshare != 0 {
            let r = sys(libc::SYS_unshare, plan.unshare as usize, 0, 0, 0, 0);
            if r < 0 {
                return Err((STEP_UNSHARE, r));
            }
        }
        let mut fds = [-1isize; MAX_SLOTS];
        // The unit's umask is already set; what the sandbox creates (the
        // directories up to the notify socket...) gets its modes exactly.
        let umask = sys(libc::SYS_umask, 0, 0, 0, 0, 0);
        for (i, op) in plan.ops.iter().enumerate() {
            let r = apply_op(op, &mut fds);
            let optional = match op {
                Op::BindSelf { optional, .. }
                | Op::Bind { optional, .. }
                | Op::SetAttr { optional, .. }
                | Op::Tmpfs { optional, .. } => *optional,
                Op::Mkdir { .. } | Op::Symlink { .. } | Op::Touch { .. } => {
                    r == -(libc::EEXIST as isize)
                }
                _ => false,
            };
            if r < 0
                && !(optional && (r == -(libc::ENOENT as isize) || r == -(libc::EEXIST as isize)))
            {
                return Err((i, r));
            }
        }
        sys(libc::SYS_umask, umask as usize, 0, 0, 0, 0);
        for fd in fds {
            if fd >= 0 {
                sys(libc::SYS_close, fd as usize, 0, 0, 0, 0);
            }
        }
        if plan.lo_up {
            let r = loopback_up();
            if r < 0 {
                return Err((STEP_LOOPBACK, r));
            }
        }
        // After the mounts (made with the host's root, in a mount
        // namespace the service's user namespace does not own: it cannot
        // undo them) and before the bounding set (a new user namespace
        // starts with a full one).
        if let Some((uid_map, gid_map)) = &plan.userns {
            user_namespace(uid_map, gid_map)?;
        }
        for cap in &plan.bounding_drop {
            let r = sys(libc::SYS_prctl, PR_CAPBSET_DROP, *cap as usize, 0, 0, 0);
            // EINVAL: a capability this kernel does not know.
            if r < 0 && r != -(libc::EINVAL as isize) {
                return Err((STEP_BOUNDING, r));
            }
        }
        if plan.ambient != 0 {
            let r = sys(libc::SYS_prctl, PR_SET_KEEPCAPS, 1, 0, 0, 0);
            if r < 0 {
                return Err((STEP_KEEPCAPS, r));
            }
        }
        if let Some(bits) = plan.secure_bits {
            let r = sys(libc::SYS_prctl, PR_SET_SECUREBITS, bits as usize, 0, 0, 0);
            if r < 0 {
                return Err((STEP_SECUREBITS, r));
            }
        }
    }
    Ok(())
}

/// In the child, the very last step before execve: the seccomp filters
/// (after them, nothing of supd's setup may need a filtered call).
///
/// # Safety
/// Call only in the spawn child.
pub unsafe fn apply_seccomp(plan: &Plan) -> Result<(), Failure> {
    // SAFETY: the programs live in the plan, alive while the parent waits.
    unsafe { crate::world::seccomp::install(&plan.seccomp.0) }.map_err(|(step, r)| {
        (
            if step == crate::world::seccomp::STEP_NNP {
                STEP_SECCOMP_NNP
            } else {
                STEP_SECCOMP
            },
            r,
        )
    })
}

/// Enter a new user namespace and have its maps written: a process in
/// the new namespace cannot write more than its own id, so a forked
/// helper, still root outside, writes them (as systemd does).
unsafe fn user_namespace(uid_map: &CString, gid_map: &CString) -> Result<(), Failure> {
    let fail = |r: isize| Err((STEP_USERNS, r));
    // SAFETY: raw system calls on local buffers and the plan's strings.
    unsafe {
        let mut pipe = [-1i32; 2];
        let r = sys(
            libc::SYS_pipe2,
            pipe.as_mut_ptr() as usize,
            libc::O_CLOEXEC as usize,
            0,
            0,
            0,
        );
        if r < 0 {
            return fail(r);
        }
        // Our own /proc directory, for the helper to find our maps in.
        let me = sys(
            libc::SYS_openat,
            libc::AT_FDCWD as isize as usize,
            c"/proc/self".as_ptr() as usize,
            (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as usize,
            0,
            0,
        );
        let close_all = |me: isize| {
            sys(libc::SYS_close, pipe[0] as usize, 0, 0, 0, 0);
            sys(libc::SYS_close, pipe[1] as usize, 0, 0, 0, 0);
            if me >= 0 {
                sys(libc::SYS_close, me as usize, 0, 0, 0, 0);
            }
        };
        if me < 0 {
            close_all(me);
            return fail(me);
        }
        // fork(): the helper gets a copy of this memory and runs only the
        // raw calls below, then exits.
        let helper = sys(libc::SYS_clone, libc::SIGCHLD as usize, 0, 0, 0, 0);
        if helper < 0 {
            close_all(me);
            return fail(helper);
        }
        if helper == 0 {
            let mut b = 0u8;
            // Wait until the parent is in its new namespace (or gone).
            let n = sys(
                libc::SYS_read,
                pipe[0] as usize,
                &mut b as *mut u8 as usize,
                1,
                0,
                0,
            );
            let mut code = if n == 1 { 0 } else { 1 };
            for (file, map) in [(c"uid_map", uid_map), (c"gid_map", gid_map)] {
                if code != 0 {
                    break;
                }
                let fd = sys(
                    libc::SYS_openat,
                    me as usize,
                    file.as_ptr() as usize,
                    (libc::O_WRONLY | libc::O_CLOEXEC) as usize,
                    0,
                    0,
                );
                if fd < 0 {
                    code = 2;
                    break;
                }
                let bytes = map.as_bytes();
                let w = sys(
                    libc::SYS_write,
                    fd as usize,
                    bytes.as_ptr() as usize,
                    bytes.len(),
                    0,
                    0,
                );
                if w != bytes.len() as isize {
                    code = 3;
                }
                sys(libc::SYS_close, fd as usize, 0, 0, 0, 0);
            }
            sys(libc::SYS_exit_group, code, 0, 0, 0, 0);
        }
        let r = sys(libc::SYS_unshare, libc::CLONE_NEWUSER as usize, 0, 0, 0, 0);
        // Wake the helper either way; on failure it finds our old maps
        // already written and fails, and we report the unshare.
        sys(
            libc::SYS_write,
            pipe[1] as usize,
            b"x".as_ptr() as usize,
            1,
            0,
            0,
        );
        let mut status = 0i32;
        let w = sys(
            libc::SYS_wait4,
            helper as usize,
            &mut status as *mut i32 as usize,
            libc::__WALL as usize,
            0,
            0,
        );
        close_all(me);
        if r < 0 {
            return fail(r);
        }
        if w < 0 {
            return Err((STEP_USERNS_MAP, w));
        }
        // Exited with 0?
        if status & 0x7f != 0 || (status >> 8) & 0xff != 0 {
            return Err((STEP_USERNS_MAP, -(libc::EPERM as isize)));
        }
    }
    Ok(())
}

unsafe fn apply_op(op: &Op, fds: &mut [isize; MAX_SLOTS]) -> isize {
    let null = std::ptr::null::<libc::c_char>() as usize;
    // SAFETY: see `apply_before_identity`.
    unsafe {
        match op {
            Op::SlaveRoot => sys(
                libc::SYS_mount,
                null,
                c"/".as_ptr() as usize,
                null,
                (libc::MS_REC | libc::MS_SLAVE) as usize,
                0,
            ),
            Op::BindSelf { path, .. } => sys(
                libc::SYS_mount,
                path.as_ptr() as usize,
                path.as_ptr() as usize,
                null,
                (libc::MS_BIND | libc::MS_REC) as usize,
                0,
            ),
            Op::Bind {
                src,
                dst,
                recursive,
                ..
            } => sys(
                libc::SYS_mount,
                src.as_ptr() as usize,
                dst.as_ptr() as usize,
                null,
                (libc::MS_BIND | if *recursive { libc::MS_REC } else { 0 }) as usize,
                0,
            ),
            Op::SetAttr {
                path,
                recursive,
                set,
                clr,
                ..
            } => {
                let attr = MountAttr {
                    attr_set: *set,
                    attr_clr: *clr,
                    propagation: 0,
                    userns_fd: 0,
                };
                sys(
                    libc::SYS_mount_setattr,
                    libc::AT_FDCWD as isize as usize,
                    path.as_ptr() as usize,
                    if *recursive { AT_RECURSIVE } else { 0 },
                    &attr as *const MountAttr as usize,
                    std::mem::size_of::<MountAttr>(),
                )
            }
            Op::Tmpfs {
                path, flags, data, ..
            } => sys(
                libc::SYS_mount,
                c"tmpfs".as_ptr() as usize,
                path.as_ptr() as usize,
                c"tmpfs".as_ptr() as usize,
                *flags as usize,
                data.as_ptr() as usize,
            ),
            Op::Proc { data } => sys(
                libc::SYS_mount,
                c"proc".as_ptr() as usize,
                c"/proc".as_ptr() as usize,
                c"proc".as_ptr() as usize,
                (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as usize,
                data.as_ptr() as usize,
            ),
            Op::Grab { slot, path } => {
                let r = sys(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD as isize as usize,
                    path.as_ptr() as usize,
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as usize,
                    0,
                    0,
                );
                if r >= 0
                    && let Some(s) = fds.get_mut(*slot)
                {
                    *s = r;
                }
                r
            }
            Op::Touch { path } => {
                let r = sys(
                    libc::SYS_openat,
                    libc::AT_FDCWD as isize as usize,
                    path.as_ptr() as usize,
                    (libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC) as usize,
                    0o666,
                    0,
                );
                if r >= 0 {
                    sys(libc::SYS_close, r as usize, 0, 0, 0, 0);
                }
                r
            }
            Op::Mkdir { path } => sys(
                libc::SYS_mkdirat,
                libc::AT_FDCWD as isize as usize,
                path.as_ptr() as usize,
                0o755,
                0,
                0,
            ),
            Op::Symlink { target, path } => sys(
                libc::SYS_symlinkat,
                target.as_ptr() as usize,
                libc::AT_FDCWD as isize as usize,
                path.as_ptr() as usize,
                0,
                0,
            ),
            Op::Place { slot, path } => {
                let fd = fds.get(*slot).copied().unwrap_or(-1);
                if fd < 0 {
                    return -(libc::EBADF as isize);
                }
                sys(
                    libc::SYS_move_mount,
                    fd as usize,
                    c"".as_ptr() as usize,
                    libc::AT_FDCWD as isize as usize,
                    path.as_ptr() as usize,
                    MOVE_MOUNT_F_EMPTY_PATH,
                )
            }
        }
    }
}

/// `ifconfig lo up` with raw system calls.
unsafe fn loopback_up() -> isize {
    // SAFETY: a socket and two ioctls on a local ifreq.
    unsafe {
        let s = sys(
            libc::SYS_socket,
            libc::AF_INET as usize,
            (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as usize,
            0,
            0,
            0,
        );
        if s < 0 {
            return s;
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        let mut r = sys(
            libc::SYS_ioctl,
            s as usize,
            libc::SIOCGIFFLAGS as usize,
            &mut ifr as *mut libc::ifreq as usize,
            0,
            0,
        );
        if r >= 0 {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = sys(
                libc::SYS_ioctl,
                s as usize,
                libc::SIOCSIFFLAGS as usize,
                &ifr as *const libc::ifreq as usize,
                0,
                0,
            );
        }
        sys(libc::SYS_close, s as usize, 0, 0, 0, 0);
        r
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// In the child, after changing user: ambient capabilities, then
/// no-new-privileges.
///
/// # Safety
/// Call only in the spawn child.
pub unsafe fn apply_after_identity(plan: &Plan) -> Result<(), Failure> {
    // SAFETY: raw system calls on local data.
    unsafe {
        if plan.ambient != 0 {
            let lo = plan.ambient as u32;
            let hi = (plan.ambient >> 32) as u32;
            let hdr = CapHeader {
                version: LINUX_CAPABILITY_VERSION_3,
                pid: 0,
            };
            let data = [
                CapData {
                    effective: lo,
                    permitted: lo,
                    inheritable: lo,
                },
                CapData {
                    effective: hi,
                    permitted: hi,
                    inheritable: hi,
                },
            ];
            let r = sys(
                libc::SYS_capset,
                &hdr as *const CapHeader as usize,
                data.as_ptr() as usize,
                0,
                0,
                0,
            );
            if r < 0 {
                return Err((STEP_CAPSET, r));
            }
            for bit in 0..64usize {
                if plan.ambient & (1u64 << bit) != 0 {
                    let r = sys(
                        libc::SYS_prctl,
                        PR_CAP_AMBIENT,
                        PR_CAP_AMBIENT_RAISE,
                        bit,
                        0,
                        0,
                    );
                    if r < 0 {
                        return Err((STEP_AMBIENT, r));
                    }
                }
            }
        }
        if plan.no_new_privs {
            let r = sys(libc::SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            if r < 0 {
                return Err((STEP_NNP, r));
            }
        }
    }
    Ok(())
}

/// What failed, in words, for the spawn error.
pub fn describe(plan: &Plan, step: usize) -> String {
    match step {
        STEP_UNSHARE => "creating the sandbox's namespaces".into(),
        STEP_LOOPBACK => "bringing up loopback in the private network".into(),
        STEP_BOUNDING => "dropping capabilities from the bounding set".into(),
        STEP_KEEPCAPS => "keeping capabilities across the user change".into(),
        STEP_CAPSET => "setting capabilities for ambient_capabilities".into(),
        STEP_AMBIENT => "raising ambient capabilities".into(),
        STEP_NNP => "setting no_new_privileges".into(),
        STEP_SECUREBITS => "setting secure_bits".into(),
        STEP_SECCOMP_NNP => {
            "setting no_new_privs, which a seccomp filter needs without CAP_SYS_ADMIN".into()
        }
        STEP_SECCOMP => "installing the seccomp filter".into(),
        STEP_USERNS => "creating the user namespace (private_users)".into(),
        STEP_USERNS_MAP => "writing the private user namespace's uid/gid maps".into(),
        i => plan
            .ops
            .get(i)
            .map(Op::describe)
            .unwrap_or_else(|| "setting up the sandbox".into()),
    }
}

/// An empty file nobody may read, bound over inaccessible files (made
/// once, next to supd's sockets).
pub fn inaccessible_file() -> PathBuf {
    let p = PathBuf::from("/run/supd/inaccessible");
    if std::fs::symlink_metadata(&p).is_err() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::create_dir_all("/run/supd");
        if std::fs::write(&p, b"").is_ok() {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000));
        }
    }
    p
}
