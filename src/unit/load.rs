//! Loading a units directory.
//!
//! Owns: reading every `NAME.toml` in a directory and turning the lot into a
//! `UnitSet` — or into every error of every file. Must never: return a
//! partial set (one bad file refuses the whole set, so a reload can never
//! half-apply), or read an oversized file into memory.

use std::collections::BTreeMap;
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

/// Read and validate every unit in `dir`.
pub fn load_dir(dir: &Path) -> Result<UnitSet, Vec<UnitError>> {
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
    let mut failed = std::collections::BTreeSet::new();
    let mut mount_table = None;
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
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                errors.push(UnitError::new(&path, format!("cannot read: {e}")));
                continue;
            }
        };
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
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
        let mut bytes = Vec::new();
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
    errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
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
        let set = load_dir(&root.join("units/appliance")).unwrap();
        assert_eq!(set.units.len(), 4);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let e = load_dir(Path::new("/nonexistent/supd/units")).unwrap_err();
        assert!(e[0].to_string().contains("/nonexistent/supd/units"));
    }
}
