//! Loading a units directory.
//!
//! Owns: reading every `NAME.toml` in a directory and turning the lot into a
//! `UnitSet` — or into every error of every file (`load_dir`: `supd check`,
//! `reload`, boot as a subreaper) — and, for boot as PID 1 only, the valid
//! part of a bad directory with what was left out (`load_dir_lenient`: a
//! repair console must come up). Templates: `NAME@.toml` is not a unit but
//! a template; unit `NAME@INST` is made from it, `%i` becoming INST and `%I`
//! INST unescaped (`-` is `/`), when a file `NAME@INST.toml` is a symlink to
//! the template (what enabling an instance makes) or when another unit
//! depends on `NAME@INST`. Must never: return a partial set from
//! `load_dir` (one bad file refuses the whole set, so a reload can never
//! half-apply); let `load_dir_lenient` load a unit whose requirement was
//! left out (unless essential), or leave anything out silently; read an
//! oversized file into memory, or open anything but a regular file
//! (`world::regular_file`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use crate::error::UnitError;
use crate::unit::{UnitKind, UnitSet};

/// Largest unit file read; larger ones are refused unread.
pub const MAX_UNIT_BYTES: u64 = 1024 * 1024;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
}

/// Every file of a units directory, parsed one by one (no graph checks).
struct Parsed {
    specs: Vec<crate::unit::UnitSpec>,
    lines: BTreeMap<String, crate::unit::toml::DepLines>,
    /// Units whose file exists but failed.
    failed: BTreeSet<String>,
    /// Every per-file error, sorted by file and line.
    errors: Vec<UnitError>,
}

/// Read and validate every unit in `dir`.
pub fn load_dir(dir: &Path) -> Result<UnitSet, Vec<UnitError>> {
    let Parsed {
        specs,
        lines,
        failed,
        mut errors,
    } = read_units(dir)?;
    // Graph errors are reported alongside file errors, so one run of
    // `supd check` shows everything.
    match crate::graph::build_checked(specs, &lines, &failed) {
        Ok(set) if errors.is_empty() => Ok(set),
        Ok(_) => Err(errors),
        Err(mut g) => {
            errors.append(&mut g);
            Err(errors)
        }
    }
}

/// What a lenient load left out, and why (for `status`, `why`, the log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Unit name -> why it was not loaded.
    pub units: BTreeMap<String, String>,
    /// Essential units started without something they name (their
    /// requirement was not loaded).
    pub notes: Vec<String>,
}

impl Skipped {
    pub fn is_empty(&self) -> bool {
        self.units.is_empty() && self.notes.is_empty()
    }
}

/// A lenient load: the valid part of the directory, and what was left out.
#[derive(Debug, Clone, Default)]
pub struct Lenient {
    pub set: UnitSet,
    pub skipped: Skipped,
    /// Every error a strict load reports (empty when nothing was skipped).
    pub errors: Vec<UnitError>,
}

/// Boot as PID 1: never refuse the whole set for one bad file. Loads every
/// valid unit whose `requires` (transitively) are valid, and every valid
/// essential unit — an essential unit whose requirement was not loaded
/// starts without it, so a repair console comes up. `wants`/`after` naming
/// a unit left out are dropped (ordering only). Units in a dependency
/// cycle are left out (an essential one keeps running order-free instead).
/// `supd check` and `reload` stay strict (`load_dir`).
pub fn load_dir_lenient(dir: &Path) -> Lenient {
    lenient(dir, true)
}

/// `clean_first`: try the whole set first without keeping a copy of every
/// spec for the subset path (a boot with a clean directory, the common
/// case, then copies nothing); if the graph turns out bad, the files are
/// read again for the subset.
fn lenient(dir: &Path, clean_first: bool) -> Lenient {
    let parsed = match read_units(dir) {
        Ok(p) => p,
        Err(errors) => {
            return Lenient {
                skipped: Skipped {
                    units: BTreeMap::new(),
                    notes: errors.iter().map(|e| e.to_string()).collect(),
                },
                errors,
                set: UnitSet::default(),
            };
        }
    };
    let Parsed {
        specs,
        lines,
        failed,
        mut errors,
    } = parsed;
    if clean_first && errors.is_empty() {
        return match crate::graph::build_checked(specs, &lines, &failed) {
            Ok(set) => Lenient {
                set,
                skipped: Skipped::default(),
                errors,
            },
            Err(_) => lenient(dir, false),
        };
    }
    match crate::graph::build_checked(specs.clone(), &lines, &failed) {
        Ok(set) if errors.is_empty() => {
            return Lenient {
                set,
                skipped: Skipped::default(),
                errors,
            };
        }
        Ok(_) => {}
        Err(mut g) => errors.append(&mut g),
    }
    let mut skipped = Skipped::default();
    // A file's first error says why its unit is not loaded.
    for name in &failed {
        let why = errors
            .iter()
            .find(|e| e.file.file_stem().and_then(|s| s.to_str()) == Some(name.as_str()))
            .map(|e| first_line(&e.to_string()))
            .unwrap_or_else(|| "its unit file is invalid".to_string());
        skipped.units.insert(name.clone(), why);
    }
    let mut keep: BTreeMap<String, crate::unit::UnitSpec> =
        specs.into_iter().map(|s| (s.name.clone(), s)).collect();
    // Each round removes a unit or an edge, so this ends; the bound is a
    // guard for PID 1.
    let bound = keep.len() * 4 + 8;
    for _ in 0..bound {
        let mut changed = false;
        let names: Vec<String> = keep.keys().cloned().collect();
        for name in &names {
            let Some(spec) = keep.get(name) else { continue };
            let missing: Vec<String> = spec
                .requires
                .iter()
                .filter(|d| !keep.contains_key(*d))
                .cloned()
                .collect();
            let why_dep = |d: &String| match skipped.units.get(d) {
                Some(r) => format!("requires {d}, which was not loaded ({r})"),
                None => format!("requires {d}, which is not defined"),
            };
            if !missing.is_empty() && !spec.essential {
                let why = why_dep(&missing[0]);
                keep.remove(name);
                skipped.units.insert(name.clone(), why);
                changed = true;
                continue;
            }
            for d in &missing {
                skipped.notes.push(format!(
                    "essential unit {name} starts without its requirement: it {}",
                    why_dep(d)
                ));
            }
            let present: BTreeSet<String> = keep.keys().cloned().collect();
            if let Some(spec) = keep.get_mut(name) {
                let before = spec.requires.len() + spec.wants.len() + spec.after.len();
                spec.requires.retain(|d| present.contains(d));
                spec.wants.retain(|d| present.contains(d));
                spec.after.retain(|d| present.contains(d));
                changed |= before != spec.requires.len() + spec.wants.len() + spec.after.len();
            }
        }
        if changed {
            continue;
        }
        let list: Vec<crate::unit::UnitSpec> = keep.values().cloned().collect();
        for cycle in crate::graph::cycles(&list) {
            let mut path = cycle.clone();
            if let Some(first) = cycle.first() {
                path.push(first.clone());
            }
            let path = path.join(" -> ");
            for member in &cycle {
                let Some(spec) = keep.get_mut(member) else {
                    continue;
                };
                if spec.essential {
                    let before = spec.requires.len() + spec.wants.len() + spec.after.len();
                    spec.requires.retain(|d| !cycle.contains(d));
                    spec.wants.retain(|d| !cycle.contains(d));
                    spec.after.retain(|d| !cycle.contains(d));
                    if before != spec.requires.len() + spec.wants.len() + spec.after.len() {
                        skipped.notes.push(format!(
                            "essential unit {member} starts without its place in a dependency cycle ({path})"
                        ));
                        changed = true;
                    }
                } else {
                    keep.remove(member);
                    skipped
                        .units
                        .insert(member.clone(), format!("in a dependency cycle: {path}"));
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let set = crate::graph::build(keep.into_values().collect()).unwrap_or_else(|e| {
        // Cannot happen (every edge now names a kept unit, no cycle is
        // left); if it does, nothing starts rather than something wrong.
        skipped.notes.push(format!(
            "internal: the valid subset did not validate ({}); no unit loaded",
            e.first().map(|e| e.to_string()).unwrap_or_default()
        ));
        UnitSet::default()
    });
    Lenient {
        set,
        skipped,
        errors,
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// Parse every unit file of `dir`; Err only when the directory itself
/// cannot be read.
fn read_units(dir: &Path) -> Result<Parsed, Vec<UnitError>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            return Err(vec![
                UnitError::new(dir, format!("cannot read the units directory: {e}"))
                    .hint("create it, or point --units at the directory holding NAME.toml files"),
            ]);
        }
    };
    let mut paths: Vec<std::path::PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            // Bytes, not str: a name that is not UTF-8 is still a unit
            // file, reported below rather than skipped in silence.
            use std::os::unix::ffi::OsStrExt;
            let name = p.file_name().map(|n| n.as_bytes()).unwrap_or(b"");
            // Hidden files and editor leftovers are not units.
            name.ends_with(b".toml") && !name.starts_with(b".")
        })
        .collect();
    paths.sort();
    let mut errors = Vec::new();
    let mut specs = Vec::new();
    let mut lines = BTreeMap::new();
    let mut failed = BTreeSet::new();
    let mut mount_table = None;
    // Template name (`NAME@`) -> (file, text).
    let mut templates: BTreeMap<String, (std::path::PathBuf, String)> = BTreeMap::new();
    for path in paths {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            use std::os::unix::ffi::OsStrExt;
            let raw = path.file_name().map(|n| n.as_bytes()).unwrap_or(b"");
            errors.push(
                UnitError::new(
                    &path,
                    format!("unit file name \"{}\" is not UTF-8", raw.escape_ascii()),
                )
                .hint("rename the file: letters, digits, _ . @ - only, at most 64 characters"),
            );
            continue;
        };
        let name = name.to_string();
        if !valid_name(&name) {
            errors.push(
                UnitError::new(&path, format!("invalid unit name {name:?}"))
                    .hint("rename the file: letters, digits, _ . @ - only, at most 64 characters"),
            );
            continue;
        }
        // Only a regular file, opened without blocking: a FIFO named
        // `x.toml` would otherwise wait for a writer forever (and PID 1
        // with it).
        let (mut f, size) = match crate::world::regular_file::open_sized(&path) {
            Ok(f) => f,
            Err(e) => {
                failed.insert(name.clone());
                errors.push(UnitError::new(&path, format!("cannot read: {e}")).hint(
                    "a unit file is a regular file (or a symlink to one); remove or replace this one",
                ));
                continue;
            }
        };
        if size > MAX_UNIT_BYTES {
            errors.push(
                UnitError::new(
                    &path,
                    format!("file is {size} bytes; unit files are limited to {MAX_UNIT_BYTES}"),
                )
                .hint("a unit file is a few lines of TOML; is this the right file?"),
            );
            continue;
        }
        // Sized from the open's fstat (plus one byte, so the read that
        // finds the end needs no growth): one read of the file instead of
        // a doubling series from 32 bytes.
        let mut bytes = Vec::with_capacity(size as usize + 1);
        if let Err(e) = (&mut f).take(MAX_UNIT_BYTES + 1).read_to_end(&mut bytes) {
            errors.push(UnitError::new(&path, format!("cannot read: {e}")));
            continue;
        }
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let off = e.utf8_error().valid_up_to();
                let (l, c) = crate::unit::toml::Lines::new(
                    std::str::from_utf8(&e.as_bytes()[..off]).unwrap_or(""),
                )
                .at(off);
                failed.insert(name.clone());
                errors.push(
                    UnitError::new(&path, "not valid UTF-8")
                        .at(l, c)
                        .hint("unit files must be UTF-8 text; re-save the file as UTF-8"),
                );
                continue;
            }
        };
        if text.trim().is_empty() {
            failed.insert(name.clone());
            errors.push(
                UnitError::new(&path, "empty unit file")
                    .hint("a unit needs at least exec = [\"/path/to/program\"]"),
            );
            continue;
        }
        if name.ends_with('@') {
            // A template: check it as an instance would be, keep its text.
            let probe = format!("{name}check");
            if let Err(mut e) = crate::unit::toml::parse_unit_with_lines(
                &probe,
                &path,
                &instantiate(&text, "check"),
            ) {
                errors.append(&mut e);
            }
            templates.insert(name, (path, text));
            continue;
        }
        let text = match instance_of_template(&path, &name) {
            Some(inst) => instantiate(&text, inst),
            None => text,
        };
        match crate::unit::toml::parse_unit_with_lines(&name, &path, &text) {
            Ok((mut spec, deps)) => {
                note_symlinked_mounts(&mut spec, &mut mount_table);
                lines.insert(name, deps);
                specs.push(spec);
            }
            Err(mut e) => {
                failed.insert(name);
                errors.append(&mut e);
            }
        }
    }
    // Instances other units depend on, made from their templates (and the
    // instances those depend on, up to a bound).
    for _ in 0..MAX_INSTANCES {
        let defined: std::collections::BTreeSet<String> = specs
            .iter()
            .map(|s| s.name.clone())
            .chain(failed.iter().cloned())
            .collect();
        let wanted: Vec<String> = specs
            .iter()
            .flat_map(|s| s.requires.iter().chain(&s.wants).chain(&s.after))
            .filter(|d| !defined.contains(*d))
            .filter(|d| {
                d.split_once('@')
                    .is_some_and(|(p, i)| !i.is_empty() && templates.contains_key(&format!("{p}@")))
            })
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let Some(name) = wanted.first() else { break };
        let Some((prefix, inst)) = name.split_once('@') else {
            break;
        };
        let Some((tpath, ttext)) = templates.get(&format!("{prefix}@")) else {
            break;
        };
        if !valid_name(name) {
            failed.insert(name.clone());
            errors.push(UnitError::new(
                tpath,
                format!("invalid instance name {name:?}"),
            ));
            continue;
        }
        match crate::unit::toml::parse_unit_with_lines(name, tpath, &instantiate(ttext, inst)) {
            Ok((mut spec, deps)) => {
                note_symlinked_mounts(&mut spec, &mut mount_table);
                lines.insert(name.clone(), deps);
                specs.push(spec);
            }
            Err(mut e) => {
                failed.insert(name.clone());
                errors.append(&mut e);
            }
        }
    }
    duplicate_listens(&mut specs, &mut failed, &mut errors);
    errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Ok(Parsed {
        specs,
        lines,
        failed,
        errors,
    })
}

/// Two units cannot own one socket: binding it for the second would take
/// the first one's (a unix socket file is replaced). The second unit (by
/// name) is refused, naming the first.
fn duplicate_listens(
    specs: &mut Vec<crate::unit::UnitSpec>,
    failed: &mut BTreeSet<String>,
    errors: &mut Vec<UnitError>,
) {
    use crate::unit::listen::{ListenAddr, ListenKind};
    let mut by_name: Vec<&crate::unit::UnitSpec> =
        specs.iter().filter(|s| !s.listen.is_empty()).collect();
    by_name.sort_by(|a, b| a.name.cmp(&b.name));
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for spec in by_name {
        let mut clash = None;
        for l in &spec.listen {
            let key = match (&l.addr, l.kind) {
                (ListenAddr::Path(p), _) => format!("path {}", p.display()),
                (ListenAddr::Abstract(n), _) => format!("abstract @{n}"),
                (a, ListenKind::Datagram) => {
                    format!("udp {}", crate::world::listen::describe(a))
                }
                (a, _) => format!("tcp {}", crate::world::listen::describe(a)),
            };
            match owner.get(&key) {
                Some(first) => clash = Some((key, first.clone())),
                None => {
                    owner.insert(key, spec.name.clone());
                }
            }
        }
        if let Some((key, first)) = clash {
            errors.push(
                UnitError::new(
                    &spec.file,
                    if first == spec.name {
                        format!("unit {} listens on {key} twice", spec.name)
                    } else {
                        format!(
                            "unit {} listens on {key}, which unit {first} already listens on",
                            spec.name
                        )
                    },
                )
                .hint(
                    "one socket belongs to one unit: remove the [[listen]] table from one of them",
                ),
            );
            failed.insert(spec.name.clone());
            out.push(spec.name.clone());
        }
    }
    specs.retain(|s| !out.contains(&s.name));
}

/// Record which `[[mount]] path`s are symlinks (and to what), so a unit
/// waiting on one says so instead of "a directory". A path that is a mount
/// point now is not looked at (a hung network filesystem must not stall
/// the load); `table` is read once, on first need.
fn note_symlinked_mounts(
    spec: &mut crate::unit::UnitSpec,
    table: &mut Option<crate::mounts::MountTable>,
) {
    for m in &mut spec.mounts {
        let t = table.get_or_insert_with(|| {
            std::fs::read("/proc/self/mountinfo")
                .map(|b| crate::mounts::MountTable::parse_bytes(&b))
                .unwrap_or_default()
        });
        if t.find(&m.path).is_some() {
            continue;
        }
        let is_link = std::fs::symlink_metadata(&m.path)
            .map(|md| md.file_type().is_symlink())
            .unwrap_or(false);
        if !is_link {
            continue;
        }
        if let Ok(target) = std::fs::read_link(&m.path) {
            let base = m.path.parent().unwrap_or(Path::new("/"));
            m.symlink_to = Some(crate::mounts::normalize(&base.join(target)));
        }
    }
}

/// Most instances made from templates for dependencies in one load.
const MAX_INSTANCES: usize = 4096;

/// `%i` (the instance), `%I` (the instance unescaped: `-` is `/`) and
/// `%%` (a percent sign) in a template's text; any other `%` stays.
pub fn instantiate(text: &str, instance: &str) -> String {
    let unescaped = instance.replace('-', "/");
    let mut out = String::with_capacity(text.len() + 16);
    let mut cs = text.chars().peekable();
    while let Some(c) = cs.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match cs.peek() {
            Some('i') => {
                cs.next();
                out.push_str(instance);
            }
            Some('I') => {
                cs.next();
                out.push_str(&unescaped);
            }
            Some('%') => {
                cs.next();
                out.push('%');
            }
            _ => out.push('%'),
        }
    }
    out
}

/// For `NAME@INST.toml` that is a symlink to `NAME@.toml`: INST.
fn instance_of_template<'a>(path: &Path, name: &'a str) -> Option<&'a str> {
    let (prefix, inst) = name.split_once('@')?;
    if inst.is_empty() {
        return None;
    }
    let target = std::fs::read_link(path).ok()?;
    let tname = target.file_name()?.to_str()?;
    (tname == format!("{prefix}@.toml")).then_some(inst)
}

/// What `supd check` prints for a bad set: every error, then a count.
pub fn format_report(errors: &[UnitError]) -> String {
    let mut out = String::new();
    for e in errors {
        out.push_str(&e.to_string());
        out.push('\n');
    }
    let files: std::collections::BTreeSet<_> = errors.iter().map(|e| &e.file).collect();
    out.push_str(&format!(
        "{} error{} in {} file{}\n",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        files.len(),
        if files.len() == 1 { "" } else { "s" }
    ));
    out
}

/// One line for a clean set.
pub fn summary(set: &UnitSet) -> String {
    let oneshots = set
        .units
        .values()
        .filter(|u| u.kind == UnitKind::Oneshot)
        .count();
    format!(
        "ok: {} units ({} oneshot, {} longrun)",
        set.units.len(),
        oneshots,
        set.units.len() - oneshots
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_fixtures_all_reported_and_good_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let tmp = std::env::temp_dir().join(format!("supd-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let bad = root.join("tests/fixtures/bad");
        let mut names = Vec::new();
        for e in std::fs::read_dir(&bad).unwrap().flatten() {
            std::fs::copy(e.path(), tmp.join(e.file_name())).unwrap();
            names.push(e.file_name().to_string_lossy().to_string());
        }
        // Generated: a file over the size limit.
        std::fs::write(
            tmp.join("huge.toml"),
            vec![b'#'; MAX_UNIT_BYTES as usize + 10],
        )
        .unwrap();
        names.push("huge.toml".into());
        let errs = load_dir(&tmp).unwrap_err();
        let report = format_report(&errs);
        for n in &names {
            // Cycle members are named in the cycle path by unit name.
            let stem = n.trim_end_matches(".toml");
            assert!(
                report.contains(n.as_str()) || report.contains(&format!(" {stem} ")),
                "{n} missing from:\n{report}"
            );
        }
        let _ = std::fs::remove_dir_all(&tmp);
        let set = load_dir(&root.join("tests/fixtures/good")).unwrap();
        assert!(!set.units.is_empty());
        let set = load_dir(&root.join("units")).unwrap();
        assert!(summary(&set).starts_with("ok:"));
        let set = load_dir(&root.join("units/imported")).unwrap();
        assert_eq!(set.units.len(), 3, "the template is not a unit");
        let set = load_dir(&root.join("units/appliance")).unwrap();
        assert_eq!(set.units.len(), 4);
    }

    /// Issue 13 item 5: a FIFO named `*.toml` once blocked `open(2)`
    /// forever (and with it PID 1, at boot or on reload). It is refused at
    /// once with a clear error; a directory or device likewise.
    #[test]
    fn fifo_or_directory_named_toml_is_refused_without_blocking() {
        let tmp = std::env::temp_dir().join(format!("supd-load-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("dir.toml")).unwrap();
        std::fs::write(tmp.join("ok.toml"), "exec = [\"/bin/true\"]\n").unwrap();
        nix::unistd::mkfifo(
            &tmp.join("evil.toml"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = tmp.clone();
        std::thread::spawn(move || {
            let _ = tx.send(load_dir(&dir));
        });
        let errs = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("load_dir blocked on the FIFO")
            .unwrap_err();
        let report = format_report(&errs);
        assert!(
            report.contains("evil.toml") && report.contains("FIFO"),
            "{report}"
        );
        assert!(
            report.contains("dir.toml") && report.contains("directory"),
            "{report}"
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }

    /// Issue 13 item 6: the valid part of a bad directory, and why each
    /// unit was left out.
    #[test]
    fn lenient_load_keeps_the_valid_part_and_says_why_the_rest_is_out() {
        let tmp = std::env::temp_dir().join(format!("supd-lenient-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let w = |name: &str, text: &str| {
            std::fs::write(tmp.join(format!("{name}.toml")), text).unwrap()
        };
        let exec = "exec = [\"/bin/true\"]\n";
        w("a", exec);
        w("bad", "exec = [\"/bin/true\"]\ntype = \"daemon\"\n");
        w("dep", &format!("{exec}requires = [\"bad\"]\n"));
        w("deep", &format!("{exec}requires = [\"dep\"]\n"));
        w(
            "console",
            &format!("{exec}essential = true\nrequires = [\"bad\", \"a\"]\n"),
        );
        w(
            "later",
            &format!("{exec}after = [\"bad\"]\nwants = [\"nope\"]\n"),
        );
        w("x", &format!("{exec}requires = [\"y\"]\n"));
        w("y", &format!("{exec}requires = [\"x\"]\n"));
        w("z", &format!("{exec}requires = [\"x\"]\n"));
        w("m", &format!("{exec}requires = [\"missing\"]\n"));
        let l = load_dir_lenient(&tmp);
        let mut names: Vec<&String> = l.set.units.keys().collect();
        names.sort();
        assert_eq!(names, ["a", "console", "later"]);
        let console = &l.set.units["console"];
        assert_eq!(console.requires, ["a"]);
        assert!(l.set.units["later"].after.is_empty() && l.set.units["later"].wants.is_empty());
        let why = &l.skipped.units;
        assert!(
            why["bad"].contains("bad.toml") && why["bad"].contains("daemon"),
            "{why:?}"
        );
        assert!(
            why["dep"].contains("requires bad, which was not loaded"),
            "{why:?}"
        );
        assert!(why["deep"].contains("requires dep"), "{why:?}");
        assert!(
            why["x"].contains("cycle") && why["y"].contains("cycle"),
            "{why:?}"
        );
        assert!(why["z"].contains("requires x"), "{why:?}");
        assert!(
            why["m"].contains("missing, which is not defined"),
            "{why:?}"
        );
        assert!(!why.contains_key("missing") && !why.contains_key("nope"));
        assert!(
            l.skipped
                .notes
                .iter()
                .any(|n| n.contains("console") && n.contains("bad")),
            "{:?}",
            l.skipped.notes
        );
        // The strict load refuses the same directory, with every error.
        let strict = load_dir(&tmp).unwrap_err();
        assert_eq!(strict, l.errors);
        // A clean directory: the same set, nothing skipped.
        let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good");
        let l = load_dir_lenient(&good);
        assert!(l.skipped.is_empty() && l.errors.is_empty());
        assert_eq!(l.set.order, load_dir(&good).unwrap().order);
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn templates_make_instances_by_symlink_and_by_dependency() {
        let tmp = std::env::temp_dir().join(format!("supd-tpl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(
            tmp.join("worker@.toml"),
            "description = \"worker %i (%I) 50%%\"\nexec = [\"/bin/sleep\", \"%i\"]\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("worker@.toml", tmp.join("worker@7.toml")).unwrap();
        std::fs::write(
            tmp.join("app.toml"),
            "exec = [\"/bin/true\"]\nrequires = [\"worker@a-b\"]\n",
        )
        .unwrap();
        let set = load_dir(&tmp).unwrap();
        let names: Vec<&String> = set.units.keys().collect();
        assert_eq!(names, ["app", "worker@7", "worker@a-b"]);
        let w = &set.units["worker@a-b"];
        assert_eq!(w.description.as_deref(), Some("worker a-b (a/b) 50%"));
        assert_eq!(w.exec, ["/bin/sleep", "a-b"]);
        assert_eq!(set.units["worker@7"].exec, ["/bin/sleep", "7"]);
        // A broken template is reported at its file.
        std::fs::write(tmp.join("bad@.toml"), "exec = \"no\"\n").unwrap();
        let e = format_report(&load_dir(&tmp).unwrap_err());
        assert!(e.contains("bad@.toml:1"), "{e}");
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let e = load_dir(Path::new("/nonexistent/supd/units")).unwrap_err();
        assert!(e[0].to_string().contains("/nonexistent/supd/units"));
    }
}
