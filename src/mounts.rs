//! Pure mount-table model: parse `/proc/self/mountinfo`, check `MountReq`s.
//!
//! Owns: MountTable (parsed snapshot), the rule for "which mount is visible at
//! a path" and the rule for "this path is really mounted and matches its
//! checks" (invariant 1 in DESIGN.md). Must never: read files or stat paths
//! (the snapshot is handed in), panic on any input, or treat a parent mount,
//! a plain directory or a hidden (overmounted) mount as satisfying a
//! requirement. When the table is too odd to be sure, it answers "not
//! mounted": a unit that waits is recoverable, a unit that writes into the
//! directory under its mount point is not.
//!
//! Which mount is visible — findings from this machine (Linux 6.18):
//!
//! - `mount -t tmpfs a /mnt; mount -t tmpfs b /mnt` gives
//!   `63 43 … /mnt … tmpfs a` then `64 63 … /mnt … tmpfs b`: the overmount is
//!   a *child* of the mount it covers (parent id 63), at the same mount point.
//!   After `umount /mnt` only `63 … a` remains and is visible again.
//! - Mountinfo order is not tree order: on this host `/proc` (id 22, parent
//!   27) is listed before `/` (id 27). "Last matching line wins" is therefore
//!   only a heuristic.
//! - Mounting `e` on `/mnt` while `/mnt/x` is a mount on top of `c` at `/mnt`
//!   lists `/mnt/x` (parent c) *after* the `/mnt` overmount `e`, yet `/mnt/x`
//!   is hidden: path lookup now goes through `e`, which has no `x` mount.
//!   The last-line heuristic would wrongly call `/mnt/x` mounted.
//!
//! So visibility is decided the way the kernel resolves a path: start at the
//! namespace's root mount, and for each path prefix step into the child
//! mount at that prefix, then keep stepping into children at the *same*
//! prefix (overmounts) until none is left. Only if two siblings share a
//! parent and a mount point (old kernels' "shadow" mounts from propagation)
//! does order decide: the later line wins.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::unit::MountReq;

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u32,
    pub parent_id: u32,
    /// Root of the mount within its filesystem (differs from "/" for binds).
    pub root: PathBuf,
    /// Unescaped mount point.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`/`ro`, `nosuid`...).
    pub mount_options: Vec<String>,
    pub fstype: String,
    /// Unescaped mount source (device, `server:/export`, `tmpfs`...).
    pub source: String,
    /// Per-superblock options.
    pub super_options: Vec<String>,
}

impl MountEntry {
    /// Read-only if either the mount or its superblock is: a bind remount
    /// sets only the former, `mount -o remount,ro` the latter. ext4's
    /// `errors=remount-ro` on recent kernels (seen on 6.18) sets neither:
    /// the superblock options stay `rw` and gain `emergency_ro`, and every
    /// write fails with EROFS (tests/corpus/mountinfo has the capture).
    pub fn is_read_only(&self) -> bool {
        self.has_option("ro") || self.has_option("emergency_ro")
    }

    /// The exact option token is present in the per-mount or per-superblock
    /// options.
    pub fn has_option(&self, option: &str) -> bool {
        self.mount_options
            .iter()
            .chain(self.super_options.iter())
            .any(|o| o == option)
    }
}

/// A parsed snapshot of the mount table, in mountinfo order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable {
    pub entries: Vec<MountEntry>,
    /// Non-empty lines that could not be parsed and were left out.
    pub skipped: usize,
}

/// Why a requirement is not satisfied. Display is what `supctl why` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountProblem {
    /// The path is not itself a mount point; `on` is the mount it lies on.
    NotMounted {
        path: PathBuf,
        on: Option<PathBuf>,
        /// `path` is a symlink to this (`MountReq::symlink_to`).
        link: Option<PathBuf>,
    },
    ReadOnly {
        path: PathBuf,
    },
    WrongFstype {
        path: PathBuf,
        want: String,
        got: String,
    },
    WrongSource {
        path: PathBuf,
        want: String,
        got: String,
    },
    MissingOption {
        path: PathBuf,
        option: String,
    },
    /// The mount table itself could not be read: nothing is known to be
    /// mounted (fail closed).
    TableUnknown {
        path: PathBuf,
        why: String,
    },
}

impl MountProblem {
    /// The required path this problem is about.
    pub fn path(&self) -> &Path {
        match self {
            MountProblem::NotMounted { path, .. }
            | MountProblem::ReadOnly { path }
            | MountProblem::WrongFstype { path, .. }
            | MountProblem::WrongSource { path, .. }
            | MountProblem::MissingOption { path, .. }
            | MountProblem::TableUnknown { path, .. } => path,
        }
    }
}

impl fmt::Display for MountProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountProblem::NotMounted {
                path,
                link: Some(link),
                ..
            } => write!(
                f,
                "{} is a symlink to {}, not a mount point (mounts are checked at the path as written: set `path = \"{}\"` if that is the mount point)",
                path.display(),
                link.display(),
                link.display()
            ),
            MountProblem::NotMounted {
                path,
                on: Some(on),
                link: None,
            } => write!(
                f,
                "{} is a directory on {}, not a mount point",
                path.display(),
                on.display()
            ),
            MountProblem::NotMounted {
                path,
                on: None,
                link: None,
            } => {
                write!(f, "{} is not a mount point", path.display())
            }
            MountProblem::ReadOnly { path } => write!(
                f,
                "{} is mounted but read-only; unit requires rw",
                path.display()
            ),
            MountProblem::WrongFstype { path, want, got } => write!(
                f,
                "{} is mounted as {}; unit requires {}",
                path.display(),
                shown(got),
                want
            ),
            MountProblem::WrongSource { path, want, got } => write!(
                f,
                "{} is mounted from {}; unit requires {}",
                path.display(),
                shown(got),
                want
            ),
            MountProblem::MissingOption { path, option } if option == "ro" => write!(
                f,
                "{} is mounted read-write; unit requires ro",
                path.display()
            ),
            MountProblem::MissingOption { path, option } => write!(
                f,
                "{} is mounted without option {}, which the unit requires",
                path.display(),
                option
            ),
            MountProblem::TableUnknown { path, why } => write!(
                f,
                "{} counts as not mounted: the mount table cannot be read ({why}); supd keeps retrying",
                path.display()
            ),
        }
    }
}

/// `mount -t tmpfs "" /x` is legal and leaves an empty source; an empty word
/// in a sentence reads like a typo.
fn shown(s: &str) -> &str {
    if s.is_empty() { "(empty)" } else { s }
}

impl MountTable {
    pub fn parse(text: &str) -> MountTable {
        MountTable::parse_bytes(text.as_bytes())
    }

    /// Mount points are arbitrary bytes (the kernel escapes only space, tab,
    /// newline and backslash), so the reader hands in bytes, not UTF-8.
    pub fn parse_bytes(bytes: &[u8]) -> MountTable {
        let mut table = MountTable::default();
        for line in bytes.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            match parse_line(line) {
                Some(entry) => table.entries.push(entry),
                None => table.skipped += 1,
            }
        }
        table
    }

    /// The visible mount whose mount point is exactly `path`.
    pub fn find(&self, path: &Path) -> Option<&MountEntry> {
        self.containing(path).filter(|e| e.mount_point == path)
    }

    /// The visible mount `path` lies on: the one path lookup would end in.
    /// `None` if the path is not absolute and normalised or the table has no
    /// usable root.
    pub fn containing(&self, path: &Path) -> Option<&MountEntry> {
        self.resolve(path).and_then(|i| self.entries.get(i))
    }

    /// Ok when `req.path` is a visible mount point matching every check;
    /// otherwise the first problem, in the order: mounted, fstype, source,
    /// options (in the unit's order).
    pub fn check(&self, req: &MountReq) -> Result<(), MountProblem> {
        let path = req.path.clone();
        let Some(entry) = self.find(&req.path) else {
            let on = self.containing(&req.path).map(|e| e.mount_point.clone());
            return Err(MountProblem::NotMounted {
                path,
                on,
                link: req.symlink_to.clone(),
            });
        };
        if let Some(want) = &req.fstype
            && *want != entry.fstype
        {
            return Err(MountProblem::WrongFstype {
                path,
                want: want.clone(),
                got: entry.fstype.clone(),
            });
        }
        if let Some(want) = &req.source
            && *want != entry.source
        {
            return Err(MountProblem::WrongSource {
                path,
                want: want.clone(),
                got: entry.source.clone(),
            });
        }
        for option in &req.options {
            let ok = match option.as_str() {
                "rw" => !entry.is_read_only(),
                other => entry.has_option(other),
            };
            if !ok {
                return Err(if option == "rw" {
                    MountProblem::ReadOnly { path }
                } else {
                    MountProblem::MissingOption {
                        path,
                        option: option.clone(),
                    }
                });
            }
        }
        Ok(())
    }

    /// Index of the mount path lookup of `path` ends in (see module doc).
    fn resolve(&self, path: &Path) -> Option<usize> {
        let ids: HashSet<u32> = self.entries.iter().map(|e| e.mount_id).collect();
        // A mount whose parent is not listed (the namespace root, whose
        // parent lies outside our root; or everything in a chroot) is where
        // lookup may start.
        let is_top = |e: &MountEntry| e.parent_id == e.mount_id || !ids.contains(&e.parent_id);
        // Garbage input can make parent links cycle (duplicate ids); every
        // real step descends one mount, so more steps than mounts is a loop.
        let mut budget = self.entries.len();
        let mut current: Option<usize> = None;
        let mut prefix = PathBuf::new();
        let mut components = path.components();
        if components.next() != Some(Component::RootDir) {
            return None;
        }
        prefix.push("/");
        loop {
            // Step into the mount at this prefix, then into its overmounts.
            loop {
                let next = self
                    .entries
                    .iter()
                    .enumerate()
                    .rev()
                    .filter(|(_, e)| e.mount_point == prefix)
                    .find(|(_, e)| match current {
                        None => is_top(e),
                        Some(c) => {
                            e.parent_id == self.entries[c].mount_id && e.parent_id != e.mount_id
                        }
                    })
                    .map(|(i, _)| i);
                match next {
                    Some(i) if budget > 0 => {
                        budget -= 1;
                        current = Some(i);
                    }
                    Some(_) => return None,
                    None => break,
                }
            }
            match components.next() {
                None => return current,
                Some(Component::Normal(name)) => prefix.push(name),
                // `..`, `.` or a second root: not a normalised path, and
                // guessing what it means could name the wrong mount.
                Some(_) => return None,
            }
        }
    }
}

fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let mut fields = line.split(|&b| b == b' ');
    let mount_id = parse_u32(fields.next()?)?;
    let parent_id = parse_u32(fields.next()?)?;
    let dev = fields.next()?;
    let colon = dev.iter().position(|&b| b == b':')?;
    parse_u32(&dev[..colon])?;
    parse_u32(&dev[colon + 1..])?;
    let root = fields.next()?;
    let mount_point = fields.next()?;
    let mount_options = fields.next()?;
    // Optional fields (`shared:N`, `master:N`, `propagate_from:N`,
    // `unbindable`), any number, up to the lone `-`.
    loop {
        let f = fields.next()?;
        if f == b"-" {
            break;
        }
    }
    let fstype = fields.next()?;
    let source = fields.next()?;
    let super_options = fields.next()?;
    if fields.next().is_some() {
        return None;
    }
    let mount_point = unescape(mount_point);
    if mount_point.first() != Some(&b'/') || fstype.is_empty() {
        return None;
    }
    Some(MountEntry {
        mount_id,
        parent_id,
        root: PathBuf::from(OsStr::from_bytes(&unescape(root))),
        mount_point: PathBuf::from(OsStr::from_bytes(&mount_point)),
        mount_options: options(mount_options),
        fstype: text(fstype),
        source: text(source),
        super_options: options(super_options),
    })
}

fn parse_u32(field: &[u8]) -> Option<u32> {
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Split before unescaping: filesystems escape `,` inside option values.
fn options(field: &[u8]) -> Vec<String> {
    field
        .split(|&b| b == b',')
        .filter(|o| !o.is_empty())
        .map(text)
        .collect()
}

fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(&unescape(field)).into_owned()
}

/// Undo the kernel's `\ooo` octal escapes; anything else is kept as is.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if let [b'\\', a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7', ..] = field[i..] {
            out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

/// Lexical normalisation of an absolute path: no `.`, no trailing slash,
/// `..` resolved textually. Symlinks are not followed (that would be I/O).
/// Unit files are normalised with this at load time, so `check` sees the
/// same spelling the kernel reports.
pub fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(x) => out.push(x),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::OnLoss;

    const DEBIAN: &str = "\
21 26 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
22 26 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
23 26 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4010852k,nr_inodes=1002713,mode=755,inode64
24 23 0:22 / /dev/pts rw,nosuid,noexec,relatime shared:3 - devpts devpts rw,gid=5,mode=620,ptmxmode=000
25 26 0:23 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=807632k,mode=755,inode64
26 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
27 21 0:6 / /sys/kernel/security rw,nosuid,nodev,noexec,relatime shared:8 - securityfs securityfs rw
28 23 0:24 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw,inode64
29 25 0:25 / /run/lock rw,nosuid,nodev,noexec,relatime shared:6 - tmpfs tmpfs rw,size=5120k,inode64
30 21 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
45 26 254:17 / /srv/pg rw,noatime shared:25 - ext4 /dev/vdb rw
46 26 254:33 / /home rw,relatime shared:27 - xfs /dev/vdc1 rw,attr2,inode64,logbufs=8,logbsize=32k,noquota
47 25 0:50 / /run/user/1000 rw,nosuid,nodev,relatime shared:500 - tmpfs tmpfs rw,size=807628k,nr_inodes=201907,mode=700,uid=1000,gid=1000,inode64
48 26 0:51 / /mnt/nfs rw,relatime shared:30 - nfs4 server:/export rw,vers=4.2,rsize=1048576,wsize=1048576,hard,proto=tcp
49 22 0:52 / /proc/sys/fs/binfmt_misc rw,relatime shared:32 - autofs systemd-1 rw,fd=30,pgrp=1,timeout=0,minproto=5,maxproto=5,direct,pipe_ino=13945
50 26 254:49 / /srv/archive ro,relatime shared:40 - ext4 /dev/vdd rw
51 26 254:65 / /srv/broken rw,relatime shared:41 - ext4 /dev/vde ro,errors=remount-ro
";

    const DOCKER: &str = "\
582 480 0:49 / / rw,relatime master:311 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,upperdir=/var/lib/docker/overlay2/x/diff,workdir=/var/lib/docker/overlay2/x/work
583 582 0:53 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
584 582 0:54 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755,inode64
585 584 0:55 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
586 582 0:56 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
587 586 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate,memory_recursiveprot
588 584 0:52 / /dev/mqueue rw,nosuid,nodev,noexec,relatime - mqueue mqueue rw
589 584 0:57 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k,inode64
590 582 254:1 /var/lib/docker/containers/abc/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda1 rw,errors=remount-ro
591 582 254:1 /var/lib/docker/containers/abc/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw,errors=remount-ro
593 582 254:1 /srv/volumes/pgdata /var/lib/postgresql/data rw,relatime - ext4 /dev/vda1 rw,errors=remount-ro
481 583 0:53 /bus /proc/bus ro,nosuid,nodev,noexec,relatime - proc proc rw
483 583 0:58 / /proc/acpi ro,relatime - tmpfs tmpfs ro,inode64
";

    /// Captured on this machine (see module doc), with `/` added.
    const OVERMOUNT: &str = "\
43 1 254:0 / / rw,relatime - ext4 /dev/vda rw
63 43 0:39 / /tmp/ovt rw,relatime - tmpfs a rw
64 63 0:40 / /tmp/ovt rw,relatime - tmpfs c rw
65 64 0:41 / /tmp/ovt/x rw,relatime - tmpfs d rw
66 64 0:42 / /tmp/ovt rw,relatime - tmpfs e rw
";

    fn req(path: &str) -> MountReq {
        MountReq {
            path: PathBuf::from(path),
            fstype: None,
            source: None,
            options: Vec::new(),
            on_loss: OnLoss::Stop,
            timeout: None,
            symlink_to: None,
        }
    }

    fn source_at<'a>(t: &'a MountTable, path: &str) -> Option<&'a str> {
        t.find(Path::new(path)).map(|e| e.source.as_str())
    }

    #[test]
    fn debian_host_parses_every_line() {
        let t = MountTable::parse(DEBIAN);
        assert_eq!(t.skipped, 0);
        assert_eq!(t.entries.len(), 17);
        let pg = t.find(Path::new("/srv/pg")).expect("pg mounted");
        assert_eq!(pg.mount_id, 45);
        assert_eq!(pg.parent_id, 26);
        assert_eq!(pg.fstype, "ext4");
        assert_eq!(pg.source, "/dev/vdb");
        assert_eq!(pg.mount_options, ["rw", "noatime"]);
        assert_eq!(pg.super_options, ["rw"]);
        assert_eq!(source_at(&t, "/mnt/nfs"), Some("server:/export"));
        // Nested under /proc, listed before its parent's parent.
        assert_eq!(source_at(&t, "/proc/sys/fs/binfmt_misc"), Some("systemd-1"));
    }

    #[test]
    fn debian_checks_and_messages() {
        let t = MountTable::parse(DEBIAN);
        let mut r = req("/srv/pg");
        r.fstype = Some("ext4".into());
        r.source = Some("/dev/vdb".into());
        r.options = vec!["rw".into(), "noatime".into()];
        assert_eq!(t.check(&r), Ok(()));

        r.fstype = Some("xfs".into());
        let e = t.check(&r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/srv/pg is mounted as ext4; unit requires xfs"
        );

        r.fstype = None;
        r.source = Some("/dev/vdc".into());
        let e = t.check(&r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/srv/pg is mounted from /dev/vdb; unit requires /dev/vdc"
        );

        r.source = None;
        r.options = vec!["rw".into(), "noexec".into()];
        let e = t.check(&r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/srv/pg is mounted without option noexec, which the unit requires"
        );

        r.options = vec!["ro".into()];
        let e = t.check(&r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/srv/pg is mounted read-write; unit requires ro"
        );
    }

    #[test]
    fn directory_below_a_mount_is_not_a_mount_point() {
        let t = MountTable::parse(DEBIAN);
        let e = t.check(&req("/srv/pg/data")).unwrap_err();
        assert_eq!(
            e,
            MountProblem::NotMounted {
                path: "/srv/pg/data".into(),
                on: Some("/srv/pg".into()),
                link: None,
            }
        );
        assert_eq!(
            e.to_string(),
            "/srv/pg/data is a directory on /srv/pg, not a mount point"
        );
        let e = t.check(&req("/srv/mysql")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/srv/mysql is a directory on /, not a mount point"
        );
        // A parent mount never counts, and neither does a prefix that is
        // not a whole path component.
        assert_eq!(
            t.containing(Path::new("/srv/pgx")).map(|e| e.mount_id),
            Some(26)
        );
        assert!(t.find(Path::new("/srv")).is_none());
    }

    #[test]
    fn root_itself_as_a_requirement() {
        let t = MountTable::parse(DEBIAN);
        let mut r = req("/");
        r.fstype = Some("ext4".into());
        r.options = vec!["rw".into()];
        assert_eq!(t.check(&r), Ok(()));
        let d = MountTable::parse(DOCKER);
        assert_eq!(
            d.find(Path::new("/")).map(|e| e.fstype.as_str()),
            Some("overlay")
        );
        assert_eq!(
            d.check(&r).unwrap_err().to_string(),
            "/ is mounted as overlay; unit requires ext4"
        );
    }

    #[test]
    fn read_only_per_mount_and_per_superblock() {
        let t = MountTable::parse(DEBIAN);
        let mut r = req("/srv/archive");
        r.options = vec!["rw".into()];
        let e = t.check(&r).unwrap_err();
        assert_eq!(
            e,
            MountProblem::ReadOnly {
                path: "/srv/archive".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "/srv/archive is mounted but read-only; unit requires rw"
        );
        r.path = "/srv/broken".into();
        assert!(matches!(t.check(&r), Err(MountProblem::ReadOnly { .. })));
        // `errors=remount-ro` is not `ro`.
        r.path = "/".into();
        assert_eq!(t.check(&r), Ok(()));

        r.options = vec!["ro".into()];
        for p in ["/srv/archive", "/srv/broken"] {
            r.path = p.into();
            assert_eq!(t.check(&r), Ok(()), "{p}");
        }
        // ext4 after an error with errors=remount-ro, as Linux 6.18 shows
        // it: `rw` everywhere, and `emergency_ro`; writes fail with EROFS.
        let t = MountTable::parse(
            "43 42 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
             65 43 7:0 / /srv/state rw,relatime - ext4 /dev/loop0 rw,errors=remount-ro,emergency_ro\n",
        );
        r.path = "/srv/state".into();
        r.options = vec!["rw".into()];
        assert!(matches!(t.check(&r), Err(MountProblem::ReadOnly { .. })));
    }

    #[test]
    fn docker_container_and_bind_mounts() {
        let t = MountTable::parse(DOCKER);
        assert_eq!(t.skipped, 0);
        let data = t.find(Path::new("/var/lib/postgresql/data")).expect("bind");
        assert_eq!(data.root, Path::new("/srv/volumes/pgdata"));
        assert_eq!(data.source, "/dev/vda1");
        // A file bind mount is a mount point too.
        assert_eq!(
            t.find(Path::new("/etc/hostname")).map(|e| e.mount_id),
            Some(591)
        );
        // /sys is ro per mount and per superblock; cgroup only per mount.
        let mut r = req("/sys/fs/cgroup");
        r.options = vec!["rw".into()];
        assert!(matches!(t.check(&r), Err(MountProblem::ReadOnly { .. })));
        assert_eq!(
            t.find(Path::new("/proc/bus")).map(|e| e.mount_id),
            Some(481)
        );
        assert_eq!(
            t.check(&req("/etc")).unwrap_err().to_string(),
            "/etc is a directory on /, not a mount point"
        );
    }

    #[test]
    fn escapes_in_mount_point_source_and_root() {
        let text = "\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 0:40 / /srv/my\\040data rw,relatime - tmpfs a\\040b\\134c rw
3 1 8:1 /dir\\011tab /srv/new\\012line rw - ext4 /dev/sda1 rw
4 1 0:41 / /srv/empty rw - tmpfs  rw
5 1 0:42 / /srv/opt rw - fuse.x src rw,path=/a\\054b,user_id=0
6 1 0:43 / /srv/\\303\\251t\\351 rw - tmpfs x rw
";
        let t = MountTable::parse(text);
        assert_eq!(t.skipped, 0);
        let e = t.find(Path::new("/srv/my data")).expect("space");
        assert_eq!(e.source, "a b\\c");
        let mut r = req("/srv/my data");
        r.source = Some("a b\\c".into());
        assert_eq!(t.check(&r), Ok(()));
        let e = t.find(Path::new("/srv/new\nline")).expect("newline");
        assert_eq!(e.root, Path::new("/dir\ttab"));
        assert_eq!(source_at(&t, "/srv/empty"), Some(""));
        let mut r = req("/srv/empty");
        r.source = Some("tmpfs".into());
        assert_eq!(
            t.check(&r).unwrap_err().to_string(),
            "/srv/empty is mounted from (empty); unit requires tmpfs"
        );
        let e = t.find(Path::new("/srv/opt")).expect("opt");
        assert_eq!(e.fstype, "fuse.x");
        assert_eq!(e.super_options, ["rw", "path=/a,b", "user_id=0"]);
        // Non-UTF-8 mount point bytes survive as bytes.
        let p = PathBuf::from(OsStr::from_bytes(b"/srv/\xc3\xa9t\xe9"));
        assert!(t.find(&p).is_some());
        // A backslash that is not an escape stays.
        assert_eq!(unescape(b"a\\9b\\0"), b"a\\9b\\0");
        assert_eq!(unescape(b"\\400"), b"\\400");
    }

    #[test]
    fn overmount_topmost_wins_and_hides_what_was_below() {
        let t = MountTable::parse(OVERMOUNT);
        assert_eq!(source_at(&t, "/tmp/ovt"), Some("e"));
        // d is on c, which e covers: lookup of /tmp/ovt/x goes through e.
        assert!(t.find(Path::new("/tmp/ovt/x")).is_none());
        assert_eq!(
            t.check(&req("/tmp/ovt/x")).unwrap_err().to_string(),
            "/tmp/ovt/x is a directory on /tmp/ovt, not a mount point"
        );
        // Order in the file must not matter.
        let reversed: String = OVERMOUNT.lines().rev().map(|l| format!("{l}\n")).collect();
        let r = MountTable::parse(&reversed);
        assert_eq!(source_at(&r, "/tmp/ovt"), Some("e"));
        assert!(r.find(Path::new("/tmp/ovt/x")).is_none());

        // Unmount e: c and its child d are visible again.
        let without_e: String = OVERMOUNT
            .lines()
            .filter(|l| !l.starts_with("66 "))
            .map(|l| format!("{l}\n"))
            .collect();
        let t = MountTable::parse(&without_e);
        assert_eq!(source_at(&t, "/tmp/ovt"), Some("c"));
        assert_eq!(source_at(&t, "/tmp/ovt/x"), Some("d"));
        // Then c and d: the lowest one, a.
        let only_a: String = OVERMOUNT
            .lines()
            .filter(|l| !l.starts_with("66 ") && !l.starts_with("65 ") && !l.starts_with("64 "))
            .map(|l| format!("{l}\n"))
            .collect();
        let t = MountTable::parse(&only_a);
        assert_eq!(source_at(&t, "/tmp/ovt"), Some("a"));
    }

    #[test]
    fn overmounted_root_and_chroot_views() {
        let text = "\
10 1 8:1 / / rw - ext4 /dev/sda1 rw
11 10 0:40 / / rw - tmpfs newroot rw
12 10 0:41 / /data rw - tmpfs hidden rw
13 11 0:42 / /proc rw - proc proc rw
";
        let t = MountTable::parse(text);
        assert_eq!(source_at(&t, "/"), Some("newroot"));
        assert!(t.find(Path::new("/data")).is_none());
        assert_eq!(source_at(&t, "/proc"), Some("proc"));
        // A chroot into a plain directory shows no "/" line; the mounts
        // under it have parents outside the view.
        let chroot = "\
30 26 0:21 / /proc rw - proc proc rw
31 30 0:52 / /proc/sys/fs/binfmt_misc rw - binfmt_misc b rw
";
        let t = MountTable::parse(chroot);
        assert_eq!(source_at(&t, "/proc/sys/fs/binfmt_misc"), Some("b"));
        assert_eq!(
            t.check(&req("/srv")).unwrap_err().to_string(),
            "/srv is not a mount point"
        );
    }

    #[test]
    fn unnormalised_or_relative_paths_are_never_mounted() {
        let t = MountTable::parse(DEBIAN);
        assert!(t.find(Path::new("srv/pg")).is_none());
        assert!(t.find(Path::new("/srv/x/../pg")).is_none());
        // Trailing slashes and doubled slashes are the same path.
        assert!(t.find(Path::new("/srv//pg/")).is_some());
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let text = "\
26 1 254:1 / / rw - ext4 /dev/vda1 rw
garbage
27 26 0:1 / /a rw shared:1
28 26 x:1 / /b rw - tmpfs t rw
29 26 0:1 / /c rw - tmpfs t rw extra
30 26 0:1 / relative rw - tmpfs t rw
31 26 0:1 / /d rw -  t rw
-1 26 0:1 / /e rw - tmpfs t rw
32 26 0:1 / /f rw shared:1 master:2 propagate_from:3 unbindable - tmpfs t rw

33 26 0:1 / /g rw - tmpfs t
";
        let t = MountTable::parse(text);
        assert_eq!(t.skipped, 8);
        let points: Vec<_> = t.entries.iter().map(|e| e.mount_point.clone()).collect();
        assert_eq!(points, [PathBuf::from("/"), PathBuf::from("/f")]);
    }

    #[test]
    fn large_table_parses_and_resolves_quickly() {
        let mut text = String::from("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n");
        for i in 0..3000u32 {
            let id = i + 2;
            text.push_str(&format!(
                "{id} 1 0:{id} / /srv/d{i} rw,relatime shared:{id} - tmpfs t{i} rw,size=1m\n"
            ));
            // An overmount on every tenth.
            if i % 10 == 0 {
                let top = id + 100_000;
                text.push_str(&format!(
                    "{top} {id} 0:{top} / /srv/d{i} rw - tmpfs top{i} rw\n"
                ));
            }
        }
        let start = std::time::Instant::now();
        let t = MountTable::parse(&text);
        assert_eq!(t.entries.len(), 3301);
        for i in (0..3000).step_by(97) {
            let want = if i % 10 == 0 {
                format!("top{i}")
            } else {
                format!("t{i}")
            };
            assert_eq!(source_at(&t, &format!("/srv/d{i}")), Some(want.as_str()));
            assert!(t.find(Path::new(&format!("/srv/d{i}/sub"))).is_none());
        }
        // Generous: debug build on a shared, busy machine.
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn exercise(t: &MountTable) {
        for p in ["/", "/a", "/a/b", "/srv/pg", "/tmp/ovt/x", "/proc"] {
            let _ = t.find(Path::new(p));
            let _ = t.containing(Path::new(p));
            let mut r = req(p);
            r.options = vec!["rw".into(), "noexec".into()];
            if let Err(e) = t.check(&r) {
                let _ = e.to_string();
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet = b" -\\/,:0123456789abcdefshared\n\t\x00\xff\xc3";
        let seeds: Vec<&[u8]> = DEBIAN
            .as_bytes()
            .split(|&b| b == b'\n')
            .chain(OVERMOUNT.as_bytes().split(|&b| b == b'\n'))
            .collect();
        for _ in 0..3000 {
            let mut buf = Vec::new();
            for _ in 0..rng.below(20) {
                match rng.below(3) {
                    // Pure noise, biased toward the format's own bytes.
                    0 => (0..rng.below(120)).for_each(|_| {
                        buf.push(if rng.below(4) == 0 {
                            rng.next() as u8
                        } else {
                            alphabet[rng.below(alphabet.len())]
                        })
                    }),
                    // A real line with some bytes flipped or cut short.
                    _ => {
                        let mut line = seeds[rng.below(seeds.len())].to_vec();
                        for _ in 0..rng.below(4) {
                            if !line.is_empty() {
                                let at = rng.below(line.len());
                                line[at] = alphabet[rng.below(alphabet.len())];
                            }
                        }
                        if rng.below(4) == 0 {
                            line.truncate(rng.below(line.len() + 1));
                        }
                        buf.extend_from_slice(&line);
                    }
                }
                buf.push(b'\n');
            }
            let t = MountTable::parse_bytes(&buf);
            exercise(&t);
            let _ = MountTable::parse(&String::from_utf8_lossy(&buf));
        }
    }

    #[test]
    fn cyclic_or_duplicate_parent_links_terminate() {
        let mut rng = Rng(42);
        let points = ["/", "/a", "/a/b", "/proc"];
        for _ in 0..2000 {
            let mut text = String::new();
            for _ in 0..rng.below(12) {
                text.push_str(&format!(
                    "{} {} 0:1 / {} rw - tmpfs s{} rw\n",
                    rng.below(6),
                    rng.below(6),
                    points[rng.below(points.len())],
                    rng.below(100)
                ));
            }
            exercise(&MountTable::parse(&text));
        }
    }
}
