//! Pure mount-table model: parse `/proc/self/mountinfo`, check `MountReq`s.
//!
//! Owns: MountTable (a parsed snapshot) and the rule for "this path is really
//! mounted and matches its checks". Must never: read files or stat paths
//! (the snapshot is handed in), or treat a parent mount or a plain directory
//! as satisfying a requirement.
//!
//! Overmounts: when two filesystems are mounted on the same path, both lines
//! appear, and the upper one's parent id is the lower one's mount id
//! (verified here: `mount -t tmpfs a /mnt; mount -t tmpfs b /mnt` gives
//! `63 43 … /mnt … tmpfs a` then `64 63 … /mnt … tmpfs b`). The visible one
//! is the entry at that path that no other entry at the same path sits on;
//! when the upper one is unmounted the lower one is visible again.

use std::fmt;
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
    pub source: String,
    /// Per-superblock options.
    pub super_options: Vec<String>,
}

impl MountEntry {
    pub fn read_only(&self) -> bool {
        self.mount_options.iter().any(|o| o == "ro") || self.super_options.iter().any(|o| o == "ro")
    }

    fn has_option(&self, opt: &str) -> bool {
        self.mount_options.iter().any(|o| o == opt) || self.super_options.iter().any(|o| o == opt)
    }
}

/// A parsed snapshot of the mount table, in mountinfo order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable {
    pub entries: Vec<MountEntry>,
    /// Lines that could not be parsed (kept as a count, never fatal).
    pub skipped: usize,
}

/// Why a requirement is not satisfied. Display is what `supctl why` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountProblem {
    /// The path is not itself a mount point; `on` is the mount it lies on.
    NotMounted {
        path: PathBuf,
        on: Option<PathBuf>,
    },
    ReadOnly {
        path: PathBuf,
    },
    /// `ro` was required but the mount is writable.
    Writable {
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
}

impl fmt::Display for MountProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountProblem::NotMounted { path, on: Some(on) } => write!(
                f,
                "{} is a directory on {}, not a mount point",
                path.display(),
                on.display()
            ),
            MountProblem::NotMounted { path, on: None } => {
                write!(f, "{} is not a mount point", path.display())
            }
            MountProblem::ReadOnly { path } => {
                write!(
                    f,
                    "{} is mounted but read-only; unit requires rw",
                    path.display()
                )
            }
            MountProblem::Writable { path } => {
                write!(
                    f,
                    "{} is mounted read-write; unit requires ro",
                    path.display()
                )
            }
            MountProblem::WrongFstype { path, want, got } => write!(
                f,
                "{} is mounted as {got}; unit requires {want}",
                path.display()
            ),
            MountProblem::WrongSource { path, want, got } => write!(
                f,
                "{} is mounted from {got}; unit requires {want}",
                path.display()
            ),
            MountProblem::MissingOption { path, option } => write!(
                f,
                "{} is mounted without option {option}, which the unit requires",
                path.display()
            ),
        }
    }
}

/// Undo mountinfo's octal escapes (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash). Anything malformed is kept literally.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if v <= 255 {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let mut it = line.split(' ');
    let mount_id = it.next()?.parse().ok()?;
    let parent_id = it.next()?.parse().ok()?;
    let _major_minor = it.next()?;
    let root = unescape(it.next()?);
    let mount_point = unescape(it.next()?);
    let mount_options = it.next()?.split(',').map(str::to_string).collect();
    // Optional fields up to the "-" separator.
    loop {
        if it.next()? == "-" {
            break;
        }
    }
    let fstype = unescape(it.next()?);
    let source = unescape(it.next()?);
    let super_options = it
        .next()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if !mount_point.starts_with('/') {
        return None;
    }
    Some(MountEntry {
        mount_id,
        parent_id,
        root: PathBuf::from(root),
        mount_point: PathBuf::from(mount_point),
        mount_options,
        fstype,
        source,
        super_options,
    })
}

/// Lexical normalisation: no `.`, no trailing slash, `..` resolved
/// textually. Symlinks are not followed (that would be I/O).
pub fn normalize(p: &Path) -> PathBuf {
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

impl MountTable {
    /// Parse mountinfo text. Never fails: a malformed line is skipped and
    /// counted.
    pub fn parse(text: &str) -> MountTable {
        let mut t = MountTable::default();
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(line) {
                Some(e) => t.entries.push(e),
                None => t.skipped += 1,
            }
        }
        t
    }

    /// The visible mount whose mount point is exactly `path`.
    pub fn find(&self, path: &Path) -> Option<&MountEntry> {
        let path = normalize(path);
        let at: Vec<&MountEntry> = self
            .entries
            .iter()
            .filter(|e| e.mount_point == path)
            .collect();
        // Topmost: nothing else at the same path is mounted on it.
        at.iter()
            .rev()
            .find(|e| {
                !at.iter()
                    .any(|o| o.parent_id == e.mount_id && o.mount_id != e.mount_id)
            })
            .or(at.last())
            .copied()
    }

    /// The mount `path` lies on (longest mount-point prefix, topmost).
    pub fn containing(&self, path: &Path) -> Option<&MountEntry> {
        let path = normalize(path);
        let mut best: Option<&Path> = None;
        for e in &self.entries {
            if path.starts_with(&e.mount_point)
                && best.is_none_or(|b| e.mount_point.components().count() > b.components().count())
            {
                best = Some(&e.mount_point);
            }
        }
        best.and_then(|b| self.find(b))
    }

    /// Is `req.path` itself a mount point matching every check?
    pub fn check(&self, req: &MountReq) -> Result<(), MountProblem> {
        let path = normalize(&req.path);
        let Some(e) = self.find(&path) else {
            return Err(MountProblem::NotMounted {
                on: self.containing(&path).map(|c| c.mount_point.clone()),
                path,
            });
        };
        if let Some(want) = &req.fstype
            && *want != e.fstype
        {
            return Err(MountProblem::WrongFstype {
                path,
                want: want.clone(),
                got: e.fstype.clone(),
            });
        }
        if let Some(want) = &req.source
            && *want != e.source
        {
            return Err(MountProblem::WrongSource {
                path,
                want: want.clone(),
                got: e.source.clone(),
            });
        }
        for opt in &req.options {
            match opt.as_str() {
                "rw" => {
                    if e.read_only() {
                        return Err(MountProblem::ReadOnly { path });
                    }
                }
                "ro" => {
                    if !e.read_only() {
                        return Err(MountProblem::Writable { path });
                    }
                }
                other => {
                    if !e.has_option(other) {
                        return Err(MountProblem::MissingOption {
                            path,
                            option: other.to_string(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::OnLoss;

    fn req(path: &str) -> MountReq {
        MountReq {
            path: PathBuf::from(path),
            fstype: None,
            source: None,
            options: vec![],
            on_loss: OnLoss::Stop,
            timeout: None,
        }
    }

    const HOST: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime shared:2 - devtmpfs devtmpfs rw,size=12334524k,mode=755
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
30 27 254:16 / /srv/pg rw,noatime shared:9 - ext4 /dev/vdb rw
31 27 0:40 / /mnt/ro\\040disk ro,relatime - tmpfs my\\040src ro
32 30 254:0 /etc /srv/pg/etc rw,relatime - ext4 /dev/vda rw
33 27 0:41 / /srv/super rw,relatime - xfs /dev/vdc ro,noexec
";

    #[test]
    fn parses_host_sample_with_escapes_and_optional_fields() {
        let t = MountTable::parse(HOST);
        assert_eq!(t.entries.len(), 8);
        assert_eq!(t.skipped, 0);
        let e = t.find(Path::new("/mnt/ro disk")).unwrap();
        assert_eq!(e.source, "my src");
        assert!(e.read_only());
        let bind = t.find(Path::new("/srv/pg/etc")).unwrap();
        assert_eq!(bind.root, PathBuf::from("/etc"));
    }

    #[test]
    fn mount_point_counts_directory_and_parent_do_not() {
        let t = MountTable::parse(HOST);
        assert!(t.check(&req("/srv/pg")).is_ok());
        assert!(t.check(&req("/srv/pg/")).is_ok());
        let err = t.check(&req("/srv/pg/data")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/srv/pg/data is a directory on /srv/pg, not a mount point"
        );
        let err = t.check(&req("/srv")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/srv is a directory on /, not a mount point"
        );
        assert!(t.check(&req("/")).is_ok());
    }

    #[test]
    fn checks_fstype_source_options_and_read_only() {
        let t = MountTable::parse(HOST);
        let mut r = req("/srv/pg");
        r.fstype = Some("xfs".into());
        assert_eq!(
            t.check(&r).unwrap_err().to_string(),
            "/srv/pg is mounted as ext4; unit requires xfs"
        );
        r.fstype = Some("ext4".into());
        r.source = Some("/dev/vdc".into());
        assert_eq!(
            t.check(&r).unwrap_err().to_string(),
            "/srv/pg is mounted from /dev/vdb; unit requires /dev/vdc"
        );
        r.source = Some("/dev/vdb".into());
        r.options = vec!["rw".into(), "noatime".into()];
        assert!(t.check(&r).is_ok());
        r.options = vec!["noexec".into()];
        assert_eq!(
            t.check(&r).unwrap_err().to_string(),
            "/srv/pg is mounted without option noexec, which the unit requires"
        );
        let mut ro = req("/mnt/ro disk");
        ro.options = vec!["rw".into()];
        assert_eq!(
            t.check(&ro).unwrap_err().to_string(),
            "/mnt/ro disk is mounted but read-only; unit requires rw"
        );
        // Read-only at the superblock level counts as read-only too.
        let mut sup = req("/srv/super");
        sup.options = vec!["rw".into()];
        assert!(matches!(t.check(&sup), Err(MountProblem::ReadOnly { .. })));
        sup.options = vec!["noexec".into()];
        assert!(t.check(&sup).is_ok());
    }

    #[test]
    fn overmount_topmost_wins_and_lower_reappears() {
        let both = "\
43 1 0:1 / / rw - ext4 /dev/vda rw
63 43 0:39 / /mnt rw,relatime - tmpfs a ro
64 63 0:40 / /mnt rw,relatime - tmpfs b rw
";
        let t = MountTable::parse(both);
        assert_eq!(t.find(Path::new("/mnt")).unwrap().source, "b");
        let mut r = req("/mnt");
        r.options = vec!["rw".into()];
        assert!(t.check(&r).is_ok());
        let lower = "\
43 1 0:1 / / rw - ext4 /dev/vda rw
63 43 0:39 / /mnt rw,relatime - tmpfs a ro
";
        let t = MountTable::parse(lower);
        assert_eq!(t.find(Path::new("/mnt")).unwrap().source, "a");
        assert!(t.check(&r).is_err());
    }

    #[test]
    fn container_sample() {
        let docker = "\
1042 964 0:120 / / rw,relatime master:401 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/A:/var/lib/docker/overlay2/l/B,upperdir=/x/diff,workdir=/x/work
1043 1042 0:123 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1044 1042 0:124 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1050 1042 254:1 /var/lib/docker/volumes/pg/_data /var/lib/postgresql/data rw,relatime - ext4 /dev/vda1 rw
";
        let t = MountTable::parse(docker);
        assert_eq!(t.entries.len(), 4);
        let mut r = req("/var/lib/postgresql/data");
        r.fstype = Some("ext4".into());
        assert!(t.check(&r).is_ok());
    }

    #[test]
    fn garbage_never_panics_and_is_counted() {
        let mut text = String::from(HOST);
        text.push_str("garbage line\n12 x\n\\\\\\ - - -\n99 1 0:1 / relative rw - tmpfs t rw\n");
        text.push_str("1 2 3 4 5 6 7 8\n\u{0}\u{1}\n");
        let t = MountTable::parse(&text);
        assert_eq!(t.entries.len(), 8);
        assert!(t.skipped >= 5);
        // Random bytes.
        let mut x: u32 = 7;
        for _ in 0..200 {
            let s: String = (0..120)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    [' ', '-', '/', '1', '\\', '0', '7', 'a', '\n'][(x >> 16) as usize % 9]
                })
                .collect();
            let _ = MountTable::parse(&s);
        }
    }

    #[test]
    fn many_entries_parse_fast() {
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!(
                "{} 1 0:{i} / /srv/m{i} rw,relatime shared:{i} - tmpfs t{i} rw\n",
                i + 2
            ));
        }
        let start = std::time::Instant::now();
        let t = MountTable::parse(&text);
        assert_eq!(t.entries.len(), 5000);
        assert!(t.check(&req("/srv/m4999")).is_ok());
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn unescape_edge_cases() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("tail\\04"), "tail\\04");
        assert_eq!(unescape("\\999"), "\\999");
    }
}
