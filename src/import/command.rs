//! The `supd import` subcommand: the only part of the importer that does
//! I/O.
//!
//! Owns: reading the unit files, their drop-ins (`NAME.service.d/*.conf`)
//! and /etc/fstab, listing the units that already exist in the output
//! directory, writing one NAME.toml per input, printing every finding, and
//! checking the output directory the way `supd check` does. Must never:
//! write a unit that drops a directive silently — without `--lossy` a file
//! with a refusal is not written at all.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::map::{self, Context};
use super::socket::SocketSrc;
use super::syntax::{self, LineProblem, Names, UnitFile};
use super::{Imported, Severity, parse_fstab};

/// Largest unit file or drop-in read.
const MAX_BYTES: u64 = 1024 * 1024;

pub struct Options {
    pub out: Option<PathBuf>,
    pub lossy: bool,
    pub files: Vec<PathBuf>,
    /// /etc/fstab unless a test says otherwise.
    pub fstab: PathBuf,
}

fn read_small(path: &Path) -> Result<String, String> {
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!(
            "{} is larger than 1 MiB; not a unit file",
            path.display()
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// One input, read: the name systemd knows it by and its sources.
struct Input {
    unit_file_name: String,
    /// (display path, text): the unit file, then drop-ins in order.
    sources: Vec<(String, String)>,
}

fn drop_ins(dir: &Path, unit_file_name: &str) -> Vec<PathBuf> {
    let d = dir.join(format!("{unit_file_name}.d"));
    let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    v
}

/// Read `path`. An instance name whose file does not exist
/// (`postgresql@15-main.service`) is read from its template
/// (`postgresql@.service`), as systemd instantiates templates.
fn read_input(path: &Path) -> Result<Input, String> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: not a file name", path.display()))?
        .to_string();
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut source_path = path.to_path_buf();
    let mut extra_dropins = Vec::new();
    if !path.exists()
        && let Some(names) = Names::from_file_name(&file_name)
        && let Some(inst) = names.instance.as_deref()
        && !inst.is_empty()
    {
        let tpl = format!("{}@.{}", names.prefix, names.suffix);
        source_path = dir.join(&tpl);
        extra_dropins = drop_ins(dir, &tpl);
    }
    let mut sources = vec![(source_path.display().to_string(), read_small(&source_path)?)];
    for p in extra_dropins.into_iter().chain(drop_ins(dir, &file_name)) {
        sources.push((p.display().to_string(), read_small(&p)?));
    }
    Ok(Input {
        unit_file_name: file_name,
        sources,
    })
}

/// If `path` is a symlink to another unit file of the same kind (not an
/// instance name pointing at its template), that file.
fn alias_target(path: &Path) -> Option<PathBuf> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_symlink() {
        return None;
    }
    let name = path.file_name()?.to_str()?;
    let target = std::fs::read_link(path).ok()?;
    let tname = target.file_name()?.to_str()?.to_string();
    if tname == name || !tname.ends_with(".service") || !name.ends_with(".service") {
        return None;
    }
    // `foo@bar.service -> foo@.service` is how an instance is enabled: an
    // instance of the template, not an alias.
    if let Some((prefix, _)) = name.split_once('@')
        && tname == format!("{prefix}@.service")
    {
        return None;
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let resolved = dir.join(&target);
    resolved.is_file().then_some(resolved)
}

/// Read a `.socket` file (and its drop-ins): its name and parsed text.
fn read_socket(path: &Path) -> Result<(String, SocketSrc), String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: not a file name", path.display()))?
        .to_string();
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = UnitFile::default();
    let mut problems = Vec::new();
    syntax::parse_into(&read_small(path)?, 0, &mut file, &mut problems);
    for (n, p) in drop_ins(dir, &name).into_iter().enumerate() {
        syntax::parse_into(&read_small(&p)?, n + 1, &mut file, &mut problems);
    }
    Ok((
        name,
        SocketSrc {
            path: path.display().to_string(),
            file,
            builtin_note: None,
            given: false,
        },
    ))
}

/// What the inputs name next to them: `.socket` files their dependencies
/// (or `Sockets=`) name, read from the inputs' directories as systemd
/// would find them there; and other names for the units of the run —
/// their `Alias=`, and symlinks in those directories that point to them.
fn siblings(
    parsed: &[(UnitFile, Vec<LineProblem>)],
    batch: &[Option<String>],
    dirs: &[PathBuf],
    have: &BTreeMap<String, SocketSrc>,
) -> (BTreeMap<String, SocketSrc>, BTreeMap<String, String>) {
    let mut found = BTreeMap::new();
    let mut aliases = BTreeMap::new();
    for ((file, _), name) in parsed.iter().zip(batch) {
        let Some(name) = name else { continue };
        let mut words: Vec<&str> = Vec::new();
        for (section, keys) in [
            (
                "Unit",
                &[
                    "Requires",
                    "Wants",
                    "After",
                    "BindsTo",
                    "Requisite",
                    "Before",
                    "PartOf",
                ][..],
            ),
            ("Service", &["Sockets"][..]),
        ] {
            if let Some(sec) = file.section(section) {
                for e in sec
                    .entries
                    .iter()
                    .filter(|e| keys.contains(&e.key.as_str()))
                {
                    words.extend(e.value.split_whitespace());
                }
            }
        }
        for w in words {
            if w.contains('%') || w.contains('/') {
                continue;
            }
            if w.ends_with(".socket") && !have.contains_key(w) && !found.contains_key(w) {
                for d in dirs {
                    let p = d.join(w);
                    if p.is_file()
                        && let Ok((n, src)) = read_socket(&p)
                    {
                        found.insert(n, src);
                        break;
                    }
                }
            }
            if let Some(stem) = w.strip_suffix(".service")
                && !batch.iter().flatten().any(|b| b == stem)
            {
                // A symlink to a unit of the run is another name for it.
                for d in dirs {
                    if let Ok(target) = std::fs::read_link(d.join(w))
                        && let Some(t) = target.file_name().and_then(|t| t.to_str())
                        && let Some(ts) = t.strip_suffix(".service")
                        && batch.iter().flatten().any(|b| b == ts)
                    {
                        aliases.insert(w.to_string(), ts.to_string());
                        break;
                    }
                }
            }
        }
        if let Some(sec) = file.section("Install") {
            for e in sec.entries.iter().filter(|e| e.key == "Alias") {
                for a in e.value.split_whitespace() {
                    if a.ends_with(".service") {
                        aliases.insert(a.to_string(), name.clone());
                    }
                }
            }
        }
    }
    (found, aliases)
}

/// Run `supd import`; returns the exit code (0, or 1 if anything was
/// refused without `--lossy`, or the output does not pass `supd check`).
pub fn run(opts: &Options) -> i32 {
    let mut failed = false;
    let fstab = std::fs::read_to_string(&opts.fstab)
        .map(|t| parse_fstab(&t))
        .unwrap_or_default();
    let host = super::syntax::Host {
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        machine_id: std::fs::read_to_string("/etc/machine-id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        kernel_release: nix::sys::utsname::uname()
            .ok()
            .and_then(|u| u.release().to_str().map(str::to_string))
            .unwrap_or_default(),
    };
    let mut inputs = Vec::new();
    // `.socket` inputs are not units of their own: their sockets become
    // the `[[listen]]` of the service they activate.
    let mut sockets: BTreeMap<String, SocketSrc> = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    // A symlink to another unit file is another name for that unit
    // (systemd's aliases, e.g. portmap.service -> rpcbind.service): the
    // unit is imported once, under its own name.
    let mut link_aliases: BTreeMap<String, String> = BTreeMap::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for p in &opts.files {
        match alias_target(p) {
            Some(target) => {
                let (Some(link), Some(t)) = (
                    p.file_name().and_then(|n| n.to_str()),
                    target.file_name().and_then(|n| n.to_str()),
                ) else {
                    continue;
                };
                eprintln!(
                    "{}: note: another name (a symlink) for {t}; imported as {t}",
                    p.display()
                );
                if let Some(stem) = t.strip_suffix(".service") {
                    link_aliases.insert(link.to_string(), stem.to_string());
                }
                if !files.contains(&target) && !opts.files.contains(&target) {
                    files.push(target);
                }
            }
            None => {
                if !files.contains(p) {
                    files.push(p.clone());
                }
            }
        }
    }
    for p in &files {
        let dir = p.parent().unwrap_or(Path::new(".")).to_path_buf();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
        if p.extension().is_some_and(|x| x == "socket") {
            match read_socket(p) {
                Ok((name, mut src)) => {
                    src.given = true;
                    sockets.insert(name, src);
                }
                Err(e) => {
                    eprintln!("{e}");
                    failed = true;
                }
            }
            continue;
        }
        match read_input(p) {
            Ok(i) => inputs.push(i),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    // Parse everything first: `Before=` in one file is `after` in another.
    let parsed: Vec<(UnitFile, Vec<LineProblem>)> = inputs
        .iter()
        .map(|i| {
            let mut f = UnitFile::default();
            let mut problems = Vec::new();
            for (n, (_, text)) in i.sources.iter().enumerate() {
                syntax::parse_into(text, n, &mut f, &mut problems);
            }
            (f, problems)
        })
        .collect();
    let mut known: BTreeSet<String> = BTreeSet::new();
    if let Some(out) = &opts.out
        && let Ok(rd) = std::fs::read_dir(out)
    {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "toml")
                && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
            {
                known.insert(stem.to_string());
            }
        }
    }
    let batch: Vec<Option<String>> = inputs
        .iter()
        .map(|i| map::supd_name(&i.unit_file_name).ok())
        .collect();
    known.extend(batch.iter().flatten().cloned());
    let (found, mut aliases) = siblings(&parsed, &batch, &dirs, &sockets);
    aliases.extend(link_aliases);
    for (name, src) in found {
        sockets.entry(name).or_insert(src);
    }
    for (name, src) in &sockets {
        let service = super::socket::service_of(name, src);
        let imported =
            inputs.iter().any(|i| i.unit_file_name == service) || aliases.contains_key(&service);
        if src.given && !imported {
            eprintln!(
                "{}: error: {name} activates {service}, which is not among the inputs; import them together (supd binds a socket for the service that receives it)",
                src.path
            );
            failed = true;
        }
    }
    let mut before: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut after: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((input, (file, _)), name) in inputs.iter().zip(&parsed).zip(&batch) {
        let (Some(name), Some(names)) = (name, Names::from_file_name(&input.unit_file_name)) else {
            continue;
        };
        // A template is not a unit: nothing can be ordered after it (its
        // instances, named by their own files, are).
        if name.ends_with('@') {
            continue;
        }
        for target in map::befores(file, &names) {
            before.entry(target).or_default().push(name.clone());
        }
        for target in map::afters(file, &names) {
            after.entry(target).or_default().push(name.clone());
        }
    }
    if let Some(out) = &opts.out
        && let Err(e) = std::fs::create_dir_all(out)
    {
        eprintln!("cannot create {}: {e}", out.display());
        return 1;
    }
    let mut written = Vec::new();
    for ((input, (file, problems)), name) in inputs.iter().zip(&parsed).zip(&batch) {
        let sources: Vec<String> = input.sources.iter().map(|(p, _)| p.clone()).collect();
        let before_me = name
            .as_ref()
            .and_then(|n| before.get(n))
            .cloned()
            .unwrap_or_default();
        let after_me = name
            .as_ref()
            .and_then(|n| after.get(n))
            .cloned()
            .unwrap_or_default();
        let ctx = Context {
            unit_file_name: &input.unit_file_name,
            sources: &sources,
            known: &known,
            before_me: &before_me,
            after_me: &after_me,
            fstab: &fstab,
            host: &host,
            sockets: &sockets,
            aliases: &aliases,
        };
        let imp = map::map(ctx, file, problems);
        if report(&imp, &sources[0], opts.lossy) {
            failed = true;
        }
        let Some(text) = &imp.toml else {
            failed = true;
            continue;
        };
        if imp.errors() > 0 && !opts.lossy {
            eprintln!(
                "{}: not written: {} directive{} not honoured (fix them, or import with --lossy)",
                sources[0],
                imp.errors(),
                if imp.errors() == 1 { "" } else { "s" }
            );
            continue;
        }
        match &opts.out {
            Some(dir) => {
                let path = dir.join(format!("{}.toml", imp.name));
                if let Err(e) = std::fs::write(&path, text) {
                    eprintln!("cannot write {}: {e}", path.display());
                    failed = true;
                } else {
                    eprintln!("{} -> {}", sources[0], path.display());
                    written.push(path);
                }
            }
            None => {
                println!("# ---- {}.toml\n{text}", imp.name);
            }
        }
    }
    if let Some(dir) = &opts.out
        && !written.is_empty()
    {
        match crate::unit::load::load_dir(dir) {
            Ok(set) => eprintln!("{}: {}", dir.display(), crate::unit::load::summary(&set)),
            Err(errs) => {
                eprint!("{}", crate::unit::load::format_report(&errs));
                eprintln!(
                    "{}: the units directory does not pass `supd check` (see above)",
                    dir.display()
                );
                failed = true;
            }
        }
    }
    i32::from(failed)
}

/// Print what happened to one file; true if it has an error.
fn report(imp: &Imported, file: &str, lossy: bool) -> bool {
    for f in &imp.findings {
        eprintln!("{}", f.display(lossy));
    }
    let refused = imp.errors();
    let approx = imp
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Approximated)
        .count();
    eprintln!("{file}: {} refused, {approx} approximated", refused);
    imp.toml.is_none() || (refused > 0 && !lossy)
}
