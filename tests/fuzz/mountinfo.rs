//! mountinfo: arbitrary bytes, mutated captures from real kernels, the
//! kernel's own escaping rendered and parsed back, and visibility checked
//! against a model of the mount tree.

use std::ffi::OsStr;
use std::fmt::Debug;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

use crate::harness::*;
use supd::mounts::{MountEntry, MountTable};
use supd::unit;

/// How the kernel writes a mountinfo field (`seq_escape`/`mangle`):
/// space, tab, newline and backslash as `\ooo`; options also escape `,`.
fn kernel_escape(bytes: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        if b == b' ' || b == b'\t' || b == b'\n' || b == b'\\' || extra.contains(&b) {
            out.extend_from_slice(format!("\\{b:03o}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

fn render_entry(e: &MountEntry, dev: (u32, u32), optional: &[String]) -> Vec<u8> {
    let opts = |o: &[String]| {
        o.iter()
            .map(|s| kernel_escape(s.as_bytes(), b","))
            .collect::<Vec<_>>()
            .join(&b","[..])
    };
    let mut line = format!("{} {} {}:{} ", e.mount_id, e.parent_id, dev.0, dev.1).into_bytes();
    line.extend(kernel_escape(e.root.as_os_str().as_bytes(), b""));
    line.push(b' ');
    line.extend(kernel_escape(e.mount_point.as_os_str().as_bytes(), b""));
    line.push(b' ');
    line.extend(opts(&e.mount_options));
    for f in optional {
        line.push(b' ');
        line.extend_from_slice(f.as_bytes());
    }
    line.extend_from_slice(b" - ");
    line.extend(kernel_escape(e.fstype.as_bytes(), b""));
    line.push(b' ');
    line.extend(kernel_escape(e.source.as_bytes(), b""));
    line.push(b' ');
    line.extend(opts(&e.super_options));
    line
}

/// An absolute path of arbitrary bytes (no NUL), rich in the bytes the
/// kernel escapes. Generated from plain bytes: cheap, and it shrinks.
fn path_bytes() -> impl Strategy<Value = PathBuf> {
    const SPECIAL: &[u8] = b" \t\n\\/0\xff";
    proptest::collection::vec(any::<u8>(), 0..24).prop_map(|raw| {
        let mut v = vec![b'/'];
        v.extend(raw.iter().map(|&b| match b {
            0..=63 => SPECIAL[b as usize % SPECIAL.len()],
            0x80.. => b,
            _ => b'a' + b % 26,
        }));
        PathBuf::from(OsStr::from_bytes(&v))
    })
}

fn option_list() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof![
            select(&["rw", "ro", "relatime", "size=1024k", "lowerdir=/a,b", "x y"][..])
                .prop_map(String::from),
            no_nul(8, 1),
        ],
        0..4,
    )
}

/// Text without NUL (the kernel never prints one), at least `min` bytes.
fn no_nul(max: usize, min: usize) -> impl Strategy<Value = String> {
    any_text(max).prop_map(move |t| {
        let mut t = t.replace('\0', "x");
        while t.len() < min {
            t.push('x');
        }
        t
    })
}

fn entry_strategy() -> impl Strategy<Value = (MountEntry, (u32, u32), Vec<String>)> {
    (
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
        path_bytes(),
        path_bytes(),
        option_list(),
        no_nul(10, 1),
        prop_oneof![Just(String::new()), no_nul(12, 0)],
        option_list(),
        proptest::collection::vec(
            prop_oneof![
                (1u32..999).prop_map(|n| format!("shared:{n}")),
                (1u32..999).prop_map(|n| format!("master:{n}")),
                (1u32..999).prop_map(|n| format!("propagate_from:{n}")),
                Just("unbindable".to_string()),
            ],
            0..3,
        ),
    )
        .prop_map(
            |((id, parent, ma, mi), root, mp, mo, fstype, source, so, optional)| {
                (
                    MountEntry {
                        mount_id: id,
                        parent_id: parent,
                        root,
                        mount_point: mp,
                        mount_options: mo,
                        fstype,
                        source,
                        super_options: so,
                    },
                    (ma, mi),
                    optional,
                )
            },
        )
}

fn mountinfo_corpus() -> Vec<PathBuf> {
    files(&repo().join("tests/corpus/mountinfo"), ".mountinfo")
}

/// Lookups that must terminate and agree with themselves on any table.
fn check_table(t: &MountTable, probes: &[PathBuf]) -> Result<(), TestCaseError> {
    // Every mount point of a small table; a spread of them in a big one.
    let step = (t.entries.len() / 12).max(1);
    let mut paths: Vec<PathBuf> = t
        .entries
        .iter()
        .step_by(step)
        .map(|e| e.mount_point.clone())
        .collect();
    paths.extend(probes.iter().cloned());
    for p in &paths {
        if let Some(e) = t.find(p) {
            prop_assert_eq!(&e.mount_point, p, "find returned another mount point");
            prop_assert!(t.containing(p).is_some());
        }
        if let Some(e) = t.containing(p) {
            prop_assert!(
                p.starts_with(&e.mount_point),
                "{:?} lies on {:?}?",
                p,
                e.mount_point
            );
        }
        let req = unit::MountReq {
            path: p.clone(),
            fstype: Some("ext4".into()),
            source: None,
            options: vec!["rw".into(), "noatime".into()],
            on_loss: unit::OnLoss::Stop,
            timeout: None,
            // A symlinked path only changes the words of the answer.
            symlink_to: (p.as_os_str().len() % 2 == 0).then(|| PathBuf::from("/srv/target")),
        };
        if t.check(&req).is_ok() {
            prop_assert!(t.find(p).is_some(), "check Ok for an unmounted path");
        } else if let Err(problem) = t.check(&req) {
            prop_assert_eq!(problem.path(), p.as_path());
            prop_assert!(!problem.to_string().is_empty());
        }
    }
    Ok(())
}

#[test]
fn mountinfo_corpus_parses_as_captured() {
    for path in mountinfo_corpus() {
        let bytes = std::fs::read(&path).unwrap_or_default();
        let t = MountTable::parse_bytes(&bytes);
        let lines = bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        assert_eq!(t.entries.len() + t.skipped, lines, "{}", path.display());
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.contains("malformed") {
            assert_eq!(t.entries.len(), 0, "{name}: {:?}", t.entries);
        } else {
            assert_eq!(t.skipped, 0, "{name}: lines skipped");
            assert!(t.containing(Path::new("/")).is_some(), "{name}: no root");
        }
        check_table(&t, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // What the kernel printed for the mounts made by hand (see the corpus
    // README): escapes undone, non-UTF-8 names kept as bytes, the hidden
    // mount under an overmount not visible, a bind's root kept.
    let t = MountTable::parse_bytes(
        &std::fs::read(repo().join("tests/corpus/mountinfo/linux-6.18-escapes.mountinfo"))
            .unwrap_or_default(),
    );
    let m = |p: &[u8]| {
        t.find(Path::new(OsStr::from_bytes(p)))
            .map(|e| e.source.clone())
    };
    assert_eq!(m(b"/tmp/mi-cap/m/a b").as_deref(), Some("t1"));
    assert_eq!(m(b"/tmp/mi-cap/m/tab\tx").as_deref(), Some("t2"));
    assert_eq!(m(b"/tmp/mi-cap/m/back\\slash").as_deref(), Some("t3"));
    assert_eq!(m(b"/tmp/mi-cap/m/\xff\xfe-latin").as_deref(), Some("t4"));
    assert_eq!(m(b"/tmp/mi-cap/m/new\nline").as_deref(), Some("t5"));
    assert_eq!(m(b"/tmp/mi-cap/m/oct\\040lit").as_deref(), Some("t6"));
    assert_eq!(m("/tmp/mi-cap/m/üñí".as_bytes()).as_deref(), Some("t7"));
    assert_eq!(m(b"/tmp/mi-cap/m").as_deref(), Some("src with space"));
    assert_eq!(m(b"/tmp/mi-cap/m/ovr").as_deref(), Some("e"));
    assert_eq!(
        m(b"/tmp/mi-cap/m/ovr/x"),
        None,
        "hidden under the overmount"
    );
    let bind = t
        .find(Path::new("/tmp/mi-cap/m/dir"))
        .map(|e| e.root.clone());
    assert_eq!(bind, Some(PathBuf::from("/dir/sub dir")));
    assert!(
        t.find(Path::new("/tmp/mi-cap/m/üñí"))
            .is_some_and(|e| e.is_read_only())
    );
    // ext4 gone read-only after an error on Linux 6.18: no `ro` anywhere.
    let t = MountTable::parse_bytes(
        &std::fs::read(
            repo().join("tests/corpus/mountinfo/linux-6.18-ext4-emergency-ro.mountinfo"),
        )
        .unwrap_or_default(),
    );
    let state = t
        .find(Path::new("/tmp/roexp/state"))
        .expect("captured mount");
    assert!(state.is_read_only(), "emergency_ro is read-only: {state:?}");
}

#[test]
fn mountinfo_of_this_process() {
    // The live table of the test process: every line parses.
    let bytes = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    let t = MountTable::parse_bytes(&bytes);
    assert_eq!(t.skipped, 0, "{}", String::from_utf8_lossy(&bytes));
    assert!(t.containing(Path::new("/")).is_some());
}

const MOUNTINFO_WORDS: &[&str] = &[
    " ",
    " - ",
    "-",
    "\\040",
    "\\011",
    "\\012",
    "\\134",
    "\\",
    "\\0",
    "\\777",
    ":",
    "0:0",
    "/",
    "shared:1",
    "master:",
    "rw",
    "ro",
    ",",
    "\n",
    "4294967295",
    "4294967296",
    "\u{ff}",
];

#[test]
fn mountinfo_arbitrary_bytes() {
    fuzz(
        "mountinfo_arbitrary_bytes",
        1,
        (
            proptest::collection::vec(any::<u8>(), 0..4096),
            proptest::collection::vec(path_bytes(), 0..4),
        ),
        |(bytes, probes)| {
            let t = MountTable::parse_bytes(bytes);
            let lines = bytes
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
            prop_assert_eq!(t.entries.len() + t.skipped, lines);
            check_table(&t, probes)
        },
    );
}

#[test]
fn mountinfo_corpus_mutated() {
    let corpus = Arc::new(read_all(&mountinfo_corpus()));
    fuzz(
        "mountinfo_corpus_mutated",
        1,
        (
            mutated(corpus, MOUNTINFO_WORDS),
            proptest::collection::vec(path_bytes(), 0..4),
        ),
        |(bytes, probes)| {
            let t = MountTable::parse_bytes(bytes);
            for e in &t.entries {
                prop_assert!(e.mount_point.as_os_str().as_bytes().first() == Some(&b'/'));
                prop_assert!(!e.fstype.is_empty());
            }
            check_table(&t, probes)
        },
    );
}

#[test]
fn mountinfo_render_then_parse() {
    fuzz(
        "mountinfo_render_then_parse",
        1,
        proptest::collection::vec(entry_strategy(), 0..8),
        |entries| {
            let mut text = Vec::new();
            for (e, dev, optional) in entries {
                text.extend(render_entry(e, *dev, optional));
                text.push(b'\n');
            }
            let t = MountTable::parse_bytes(&text);
            prop_assert_eq!(t.skipped, 0, "{}", String::from_utf8_lossy(&text));
            let want: Vec<MountEntry> = entries
                .iter()
                .map(|(e, _, _)| {
                    let mut e = e.clone();
                    // Empty options are dropped by design (`a,,b`).
                    e.mount_options.retain(|o| !o.is_empty());
                    e.super_options.retain(|o| !o.is_empty());
                    e
                })
                .collect();
            prop_assert_eq!(&t.entries, &want);
            Ok(())
        },
    );
}

/// The kernel's mount tree, built by a history of mount and umount calls:
/// `mount X at P` attaches X to the mount path lookup of P ends in (so a
/// second mount at one place covers the first, and mounts below the covered
/// one become hidden); `umount P` removes the topmost mount at P if nothing
/// is mounted on it. mountinfo lists every mount, hidden or not, in any
/// order. The parser's visibility answer must be the tree's.
#[derive(Debug, Clone)]
enum MountOp {
    Mount(Vec<u8>),
    Umount(Vec<u8>),
}

struct Tree {
    /// (id, parent index or None for the root, mount point)
    mounts: Vec<(u32, Option<usize>, PathBuf)>,
    alive: Vec<bool>,
}

impl Tree {
    fn children_at(&self, parent: usize, at: &Path) -> Option<usize> {
        (0..self.mounts.len())
            .find(|&i| self.alive[i] && self.mounts[i].1 == Some(parent) && self.mounts[i].2 == at)
    }

    fn lookup(&self, path: &Path) -> usize {
        let mut cur = 0;
        let mut prefix = PathBuf::from("/");
        while let Some(c) = self.children_at(cur, &prefix) {
            cur = c;
        }
        for comp in path.components().skip(1) {
            prefix.push(comp);
            while let Some(c) = self.children_at(cur, &prefix) {
                cur = c;
            }
        }
        cur
    }
}

fn tree_path(components: &[u8]) -> PathBuf {
    let mut p = PathBuf::from("/");
    for c in components {
        p.push(["a", "b", "c"][*c as usize % 3]);
    }
    p
}

#[test]
fn mountinfo_visibility_matches_the_mount_tree() {
    let op = prop_oneof![
        3 => proptest::collection::vec(0u8..3, 0..3).prop_map(MountOp::Mount),
        1 => proptest::collection::vec(0u8..3, 0..3).prop_map(MountOp::Umount),
    ];
    fuzz(
        "mountinfo_visibility_matches_the_mount_tree",
        1,
        (proptest::collection::vec(op, 0..16), any::<u64>()),
        |(ops, shuffle)| {
            let mut tree = Tree {
                mounts: vec![(1, None, PathBuf::from("/"))],
                alive: vec![true],
            };
            for op in ops {
                match op {
                    MountOp::Mount(c) => {
                        let p = tree_path(c);
                        let parent = tree.lookup(&p);
                        tree.mounts
                            .push((tree.mounts.len() as u32 + 1, Some(parent), p));
                        tree.alive.push(true);
                    }
                    MountOp::Umount(c) => {
                        let p = tree_path(c);
                        let top = tree.lookup(&p);
                        let busy = (0..tree.mounts.len())
                            .any(|i| tree.alive[i] && tree.mounts[i].1 == Some(top));
                        if top != 0 && tree.mounts[top].2 == p && !busy {
                            tree.alive[top] = false;
                        }
                    }
                }
            }
            // mountinfo, in a shuffled order; the root's parent lies
            // outside the namespace.
            let mut lines: Vec<String> = (0..tree.mounts.len())
                .filter(|&i| tree.alive[i])
                .map(|i| {
                    let (id, parent, mp) = &tree.mounts[i];
                    let pid = parent.map(|p| tree.mounts[p].0).unwrap_or(999);
                    format!("{id} {pid} 0:{id} / {} rw - tmpfs m{id} rw", mp.display())
                })
                .collect();
            let mut x = *shuffle | 1;
            for i in (1..lines.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                lines.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let t = MountTable::parse(&lines.join("\n"));
            for c in [
                vec![],
                vec![0],
                vec![1],
                vec![0, 0],
                vec![0, 1],
                vec![1, 2],
                vec![0, 0, 0],
                vec![0, 1, 2],
                vec![2, 2, 2],
            ] {
                let p = tree_path(&c);
                let want = format!("m{}", tree.mounts[tree.lookup(&p)].0);
                let got = t.containing(&p).map(|e| e.source.clone());
                prop_assert_eq!(
                    got.as_deref(),
                    Some(want.as_str()),
                    "path {:?} in\n{}",
                    p,
                    lines.join("\n")
                );
            }
            Ok(())
        },
    );
}
