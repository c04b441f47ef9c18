//! Host checks: what in a valid unit set certainly fails at spawn on this
//! host.
//!
//! Owns: looking at the host for each unit — an absolute `exec` (main,
//! probe, stop) that does not exist or is not executable, a `user` or
//! `group` that does not exist, a `type = "forking"` without `pid_file`
//! on a host without a writable cgroup v2 hierarchy, a `limits` value above what supd may set
//! (the hard limit when not root; `fs.nr_open` for `nofile` always), a
//! `[[mount]] path` that is a symlink (found when the unit was loaded) — and
//! reporting each as a `UnitError` with the file and line of the key.
//!
//! A separate step from loading on purpose: `supd check` reports these as
//! errors (exit 1), but boot and `reload` only log them as warnings and
//! load the set anyway — the host can change (a package installed, a
//! filesystem mounted), and a unit whose binary is missing must not keep
//! every other unit from loading. At run time the same problem surfaces as
//! that unit's spawn failure (its status and `why` say it).
//!
//! Must never: refuse what may still work (a path under one of the unit's
//! own `[[mount]]` paths is not checked — its filesystem may not be
//! mounted yet; a failed user lookup is not "no such user"), block on
//! anything but the lookups themselves, or read a unit file unless there
//! is something to report in it.

use std::path::Path;

use crate::error::UnitError;
use crate::unit::{ProbeTarget, UnitSet, UnitSpec};

/// Every host problem of every unit in `set`, sorted by file and line.
pub fn check_set(set: &UnitSet) -> Vec<UnitError> {
    let mut out: Vec<UnitError> = set.units.values().flat_map(|u| check_unit(u)).collect();
    out.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    out
}

/// Where in the unit file a problem is: `(section, key)`; section `None`
/// is the top level.
type Site = (Option<&'static str>, &'static str);

pub fn check_unit(spec: &UnitSpec) -> Vec<UnitError> {
    let mut found: Vec<(Site, String, String)> = Vec::new();
    let mut execs: Vec<(Option<&'static str>, &[String])> = vec![(None, &spec.exec)];
    for (section, probe) in [("health", &spec.health), ("readiness", &spec.readiness)] {
        if let Some(ProbeTarget::Exec(argv)) = probe.as_ref().map(|h| &h.target) {
            execs.push((Some(section), argv));
        }
    }
    if let Some(argv) = &spec.stop.exec {
        execs.push((Some("stop"), argv));
    }
    for (section, argv) in execs {
        let Some(program) = argv.first() else {
            continue;
        };
        if let Some(why) = exec_problem(spec, program) {
            found.push((
                (section, "exec"),
                why,
                "install it, or correct the path in `exec`; the unit fails to start until then"
                    .into(),
            ));
        }
    }
    if let Some(user) = &spec.user
        && let Ok(None) = nix::unistd::User::from_name(user)
    {
        found.push((
            (None, "user"),
            format!("user {user:?} does not exist on this host"),
            format!("create it (e.g. `useradd --system {user}`), or change `user`"),
        ));
    }
    if let Some(group) = &spec.group
        && let Ok(None) = nix::unistd::Group::from_name(group)
    {
        found.push((
            (None, "group"),
            format!("group {group:?} does not exist on this host"),
            format!("create it (e.g. `groupadd --system {group}`), or change `group`"),
        ));
    }
    if spec.forking && spec.pid_file.is_none() && super::cgroup::hierarchy().is_none() {
        found.push((
            (None, "type"),
            "type = \"forking\" without `pid_file` needs cgroup v2 containment to find the daemon's main process, and this host has no writable cgroup2 filesystem (supd would run with process groups only)".into(),
            "give `pid_file` (the file the daemon writes its pid to), or mount cgroup2 (e.g. on /sys/fs/cgroup)".into(),
        ));
    }
    if spec.resources.restricts_devices() {
        let why = match super::cgroup::hierarchy() {
            None => Some("this host has no writable cgroup2 filesystem".to_string()),
            Some(_) => super::devices::probe().err(),
        };
        if let Some(why) = why {
            found.push((
                (Some("resources"), "device_policy"),
                format!("device_policy/device_allow need a cgroup device program (BPF) on the unit's cgroup, and {why}; supd refuses to start the unit unrestricted"),
                "run supd where it can load BPF programs (root, cgroup v2), or remove the device restriction".into(),
            ));
        }
    }
    for l in &spec.listen {
        if let Some(user) = &l.user
            && let Ok(None) = nix::unistd::User::from_name(user)
        {
            found.push((
                (Some("listen"), "user"),
                format!("[[listen]] user {user:?} does not exist on this host"),
                "create it, or change the [[listen]] `user`; the unit fails to start until then"
                    .into(),
            ));
        }
        if let Some(group) = &l.group
            && let Ok(None) = nix::unistd::Group::from_name(group)
        {
            found.push((
                (Some("listen"), "group"),
                format!("[[listen]] group {group:?} does not exist on this host"),
                "create it, or change the [[listen]] `group`; the unit fails to start until then"
                    .into(),
            ));
        }
    }
    found.extend(limit_problems(spec));
    for m in &spec.mounts {
        if let Some(target) = &m.symlink_to {
            found.push((
                (Some("mount"), "path"),
                format!(
                    "mount path {} is a symlink to {}: it can never be a mount point itself (the kernel lists the target), so the unit would wait forever",
                    m.path.display(),
                    target.display()
                ),
                format!("name the real mount point: path = \"{}\"", target.display()),
            ));
        }
    }
    if found.is_empty() {
        return Vec::new();
    }
    let text = read_unit_text(&spec.file);
    found
        .into_iter()
        .map(|((section, key), msg, hint)| {
            let mut e = UnitError::new(&spec.file, msg).hint(hint);
            let line = text.as_deref().and_then(|t| key_line(t, section, key));
            if let Some(l) = line {
                e = e.at(l, 1);
            }
            e
        })
        .collect()
}

fn exec_problem(spec: &UnitSpec, program: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let p = Path::new(program);
    // A bare name is looked up on PATH at spawn; only an absolute path is
    // certain here.
    if !p.is_absolute() {
        return None;
    }
    // Under one of the unit's own mounts: the filesystem may not be there
    // yet (supd waits for it), so the binary cannot be judged now.
    if spec.mounts.iter().any(|m| p.starts_with(&m.path)) {
        return None;
    }
    match std::fs::metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("exec program {program} does not exist"))
        }
        Err(_) => None,
        Ok(md) if md.is_dir() => Some(format!("exec program {program} is a directory")),
        Ok(md) if !md.is_file() => Some(format!("exec program {program} is not a regular file")),
        Ok(md) if md.permissions().mode() & 0o111 == 0 => Some(format!(
            "exec program {program} is not executable (mode {:o})",
            md.permissions().mode() & 0o7777
        )),
        Ok(_) => None,
    }
}

fn limit_problems(spec: &UnitSpec) -> Vec<(Site, String, String)> {
    use nix::sys::resource::getrlimit;
    let root = nix::unistd::geteuid().is_root();
    let mut out = Vec::new();
    for (key, res, value) in spec.limits.all() {
        let Some(v) = value else { continue };
        let Some(res) = resource_of(res) else {
            continue;
        };
        if key == "nofile" && v == crate::unit::Limits::INFINITY {
            // Resolved to fs.nr_open at spawn time.
            continue;
        }
        if key == "nofile"
            && let Some(max) = nr_open()
            && v > max
        {
            out.push((
                (Some("limits"), key),
                format!("limits.{key} = {v} is above the kernel's maximum fs.nr_open = {max}"),
                format!("lower it to at most {max}, or raise fs.nr_open (sysctl)"),
            ));
            continue;
        }
        if root {
            continue;
        }
        if let Ok((_, hard)) = getrlimit(res)
            && hard != libc::RLIM_INFINITY
            && v > hard
        {
            out.push((
                (Some("limits"), key),
                format!(
                    "limits.{key} = {v} is above the hard limit {hard} of supd's user (only root may raise it)"
                ),
                format!(
                    "lower it to at most {hard}, raise supd's hard limit, or run supd as root"
                ),
            ));
        }
    }
    out
}

/// nix's name for a raw RLIMIT_* number.
fn resource_of(raw: libc::c_int) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    [
        R::RLIMIT_NOFILE,
        R::RLIMIT_NPROC,
        R::RLIMIT_CORE,
        R::RLIMIT_MEMLOCK,
        R::RLIMIT_CPU,
        R::RLIMIT_FSIZE,
        R::RLIMIT_DATA,
        R::RLIMIT_STACK,
        R::RLIMIT_RSS,
        R::RLIMIT_AS,
        R::RLIMIT_LOCKS,
        R::RLIMIT_SIGPENDING,
        R::RLIMIT_MSGQUEUE,
        R::RLIMIT_NICE,
        R::RLIMIT_RTPRIO,
        R::RLIMIT_RTTIME,
    ]
    .into_iter()
    .find(|r| *r as libc::c_int == raw)
}

fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The unit file's text, for line numbers: regular files only, bounded.
fn read_unit_text(path: &Path) -> Option<String> {
    let bytes = super::regular_file::read(path, crate::unit::load::MAX_UNIT_BYTES).ok()?;
    String::from_utf8(bytes).ok()
}

/// The 1-based line where `key` is set in `section` (`None`: top level).
/// An inline table (`limits = { nofile = 1 }`) is found by its own key.
fn key_line(text: &str, section: Option<&str>, key: &str) -> Option<usize> {
    let mut current: Option<String> = None;
    let mut inline = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with('[') {
            let name = t.trim_start_matches('[');
            let name = name.split(']').next().unwrap_or("").trim();
            current = Some(name.to_string());
            continue;
        }
        let Some((k, rest)) = t.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if current.as_deref() == section && k == key {
            return Some(i + 1);
        }
        if let Some(sec) = section
            && current.is_none()
            && k == sec
            && rest.contains(key)
        {
            inline.get_or_insert(i + 1);
        }
    }
    inline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lines() {
        let t = "description = \"x\"\nexec = [\"a\"]\nlimits = { nofile = 5 }\n[health]\nexec = [\"b\"]\n[stop]\nsignal = \"SIGINT\"\nexec = [\"c\"]\n";
        assert_eq!(key_line(t, None, "exec"), Some(2));
        assert_eq!(key_line(t, Some("health"), "exec"), Some(5));
        assert_eq!(key_line(t, Some("stop"), "exec"), Some(8));
        assert_eq!(key_line(t, Some("limits"), "nofile"), Some(3));
        assert_eq!(key_line(t, None, "user"), None);
    }
}
