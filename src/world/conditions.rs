//! Checking a unit's conditions (`condition_*`) and assertions
//! (`assert_*`) right before it starts.
//!
//! Owns: the look at the system each condition needs (a path's type or
//! contents, the kernel command line, virtualization, capabilities, mains
//! power). Must never: block for long (every check is a stat, a small read
//! or a directory's first entry), or decide what a failure means (the
//! engine makes a failed condition `skipped` and a failed assertion a
//! failed start).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::unit::{CondKind, Condition, UnitSpec};

/// Why a unit must not start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotMet {
    /// A condition failed: skip the unit.
    Condition(String),
    /// An assertion failed: the start fails.
    Assertion(String),
}

/// Check every condition and assertion; the first that fails says why.
pub fn check(spec: &UnitSpec) -> Result<(), NotMet> {
    // Triggering conditions: at least one must hold, per kind of check
    // (conditions, assertions).
    for assert in [false, true] {
        let triggers: Vec<&Condition> = spec
            .conditions
            .iter()
            .filter(|c| c.trigger && c.assert == assert)
            .collect();
        if !triggers.is_empty() && !triggers.iter().any(|c| holds(c) != c.negate) {
            let prefix = if assert { "assert" } else { "condition" };
            let why = format!(
                "none of the triggering {prefix}s ({}) holds",
                triggers
                    .iter()
                    .map(|c| format!(
                        "{prefix}_{} = \"|{}{}\"",
                        c.kind.key(),
                        if c.negate { "!" } else { "" },
                        c.arg
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Err(if assert {
                NotMet::Assertion(why)
            } else {
                NotMet::Condition(why)
            });
        }
    }
    for c in spec.conditions.iter().filter(|c| !c.trigger) {
        let holds = holds(c);
        if holds == c.negate {
            let prefix = if c.assert { "assert" } else { "condition" };
            let why = format!(
                "{prefix}_{} = \"{}{}\" does not hold",
                c.kind.key(),
                if c.negate { "!" } else { "" },
                c.arg
            );
            return Err(if c.assert {
                NotMet::Assertion(why)
            } else {
                NotMet::Condition(why)
            });
        }
    }
    Ok(())
}

/// Does the check hold (before negation)?
fn holds(c: &Condition) -> bool {
    let p = Path::new(&c.arg);
    match c.kind {
        CondKind::PathExists => std::fs::symlink_metadata(p).is_ok(),
        CondKind::PathExistsGlob => glob_exists(&c.arg),
        CondKind::PathIsDirectory => p.is_dir(),
        CondKind::PathIsSymbolicLink => std::fs::symlink_metadata(p)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false),
        CondKind::PathIsMountPoint => is_mount_point(p),
        CondKind::PathIsReadWrite => nix::sys::statvfs::statvfs(p)
            .map(|s| !s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
            .unwrap_or(false),
        CondKind::DirectoryNotEmpty => std::fs::read_dir(p)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false),
        CondKind::FileNotEmpty => std::fs::metadata(p)
            .map(|m| m.is_file() && m.len() > 0)
            .unwrap_or(false),
        CondKind::FileIsExecutable => std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false),
        CondKind::Virtualization => virtualization_matches(&c.arg),
        CondKind::KernelCommandLine => std::fs::read_to_string("/proc/cmdline")
            .map(|l| cmdline_has(&l, &c.arg))
            .unwrap_or(false),
        CondKind::Capability => capability_in_bounding_set(&c.arg),
        CondKind::ACPower => {
            let want = parse_bool(&c.arg).unwrap_or(true);
            on_ac_power() == want
        }
        CondKind::Cpus => crate::unit::compare_count(&c.arg, cpus_usable()).unwrap_or(false),
        CondKind::Environment => match c.arg.split_once('=') {
            Some((k, v)) => std::env::var(k).is_ok_and(|x| x == v),
            None => std::env::var_os(&c.arg).is_some(),
        },
    }
}

/// The CPUs in supd's affinity mask (what systemd's ConditionCPUs=
/// counts), else the online ones.
fn cpus_usable() -> u64 {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|i| set.is_set(*i).unwrap_or(false))
            .count() as u64,
        Err(_) => std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1),
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// A mount point: its device differs from its parent's, or it is the
/// root of a bind mount (same device, same inode as the parent's is not
/// possible, so compare mountinfo).
fn is_mount_point(p: &Path) -> bool {
    match crate::world::mount_watch::read_mount_table() {
        Ok(t) => {
            let norm = crate::mounts::normalize(p);
            t.entries.iter().any(|e| e.mount_point == norm)
        }
        Err(_) => {
            let (Ok(m), Some(parent)) = (std::fs::metadata(p), p.parent()) else {
                return false;
            };
            std::fs::metadata(parent).is_ok_and(|pm| pm.dev() != m.dev())
        }
    }
}

/// `*`, `?` and `[...]` in the last component only (what units use:
/// `/dev/ttyUSB*`, `/etc/foo/*.conf`).
fn glob_exists(pattern: &str) -> bool {
    let p = Path::new(pattern);
    let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
        return false;
    };
    if !name.contains(['*', '?', '[']) {
        return p.exists();
    }
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_str().is_some_and(|n| glob_match(name, n)))
        })
        .unwrap_or(false)
}

fn glob_match(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let t: Vec<char> = s.chars().collect();
    // Iterative matching with one backtrack point for `*`.
    let (mut i, mut j) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
            continue;
        }
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
            continue;
        }
        if i < p.len()
            && p[i] == '['
            && let Some(end) = p[i + 1..].iter().position(|c| *c == ']')
        {
            let set = &p[i + 1..i + 1 + end];
            let (neg, set) = match set.first() {
                Some('!') | Some('^') => (true, &set[1..]),
                _ => (false, set),
            };
            let mut hit = false;
            let mut k = 0;
            while k < set.len() {
                if k + 2 < set.len() && set[k + 1] == '-' {
                    hit |= set[k] <= t[j] && t[j] <= set[k + 2];
                    k += 3;
                } else {
                    hit |= set[k] == t[j];
                    k += 1;
                }
            }
            if hit != neg {
                i += end + 2;
                j += 1;
                continue;
            }
        }
        match star {
            Some((si, sj)) => {
                i = si + 1;
                j = sj + 1;
                star = Some((si, sj + 1));
            }
            None => return false,
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// `word` or `word=value` present on the kernel command line.
pub fn cmdline_has(cmdline: &str, want: &str) -> bool {
    cmdline.split_whitespace().any(|w| {
        if want.contains('=') {
            w == want
        } else {
            w == want || w.split_once('=').is_some_and(|(k, _)| k == want)
        }
    })
}

/// What we run in: "container" kinds from /run/systemd/container,
/// /proc/1/environ's `container=`, or /.dockerenv; a VM from the CPU's
/// hypervisor flag or DMI vendor.
fn detect_virtualization() -> (Option<String>, Option<String>) {
    let container = std::fs::read_to_string("/run/systemd/container")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read("/proc/1/environ").ok().and_then(|b| {
                b.split(|c| *c == 0)
                    .filter_map(|kv| std::str::from_utf8(kv).ok())
                    .find_map(|kv| kv.strip_prefix("container=").map(str::to_string))
            })
        })
        .or_else(|| {
            Path::new("/.dockerenv")
                .exists()
                .then(|| "docker".to_string())
        });
    let vm = std::fs::read_to_string("/sys/class/dmi/id/sys_vendor")
        .ok()
        .and_then(|v| {
            let v = v.trim().to_ascii_lowercase();
            [
                ("qemu", "qemu"),
                ("kvm", "kvm"),
                ("vmware", "vmware"),
                ("innotek", "oracle"),
                ("microsoft", "microsoft"),
                ("xen", "xen"),
                ("amazon ec2", "amazon"),
                ("bochs", "bochs"),
            ]
            .iter()
            .find(|(k, _)| v.contains(k))
            .map(|(_, n)| n.to_string())
        })
        .or_else(|| {
            std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .filter(|c| {
                    c.lines()
                        .any(|l| l.starts_with("flags") && l.contains(" hypervisor"))
                })
                .map(|_| "vm-other".to_string())
        });
    (container, vm)
}

fn virtualization_matches(want: &str) -> bool {
    let (container, vm) = detect_virtualization();
    match want {
        "container" => container.is_some(),
        "vm" => vm.is_some() && container.is_none(),
        other => match parse_bool(other) {
            Some(b) => b == (container.is_some() || vm.is_some()),
            None => container.as_deref() == Some(other) || vm.as_deref() == Some(other),
        },
    }
}

fn capability_in_bounding_set(name: &str) -> bool {
    let Some(bit) = crate::unit::caps::number(name) else {
        return false;
    };
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1u64 << bit) != 0)
}

/// On mains power, or no battery-powered supply at all (as systemd).
fn on_ac_power() -> bool {
    let Ok(rd) = std::fs::read_dir("/sys/class/power_supply") else {
        return true;
    };
    let mut any_mains = false;
    for e in rd.flatten() {
        let p = e.path();
        let kind = std::fs::read_to_string(p.join("type")).unwrap_or_default();
        if kind.trim() == "Mains" {
            any_mains = true;
            if std::fs::read_to_string(p.join("online")).is_ok_and(|o| o.trim() == "1") {
                return true;
            }
        }
    }
    !any_mains
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::UnitKind;

    fn cond(kind: CondKind, arg: &str, negate: bool, assert: bool) -> Condition {
        Condition {
            kind,
            arg: arg.into(),
            negate,
            assert,
            trigger: false,
        }
    }

    #[test]
    fn triggering_conditions_need_one() {
        let mut spec = UnitSpec::simple("c", UnitKind::Longrun, &["/bin/true"]);
        let t = |arg: &str| {
            let mut c = cond(CondKind::PathExists, arg, false, false);
            c.trigger = true;
            c
        };
        spec.conditions = vec![t("/nonexistent/a"), t("/nonexistent/b")];
        assert!(matches!(check(&spec), Err(NotMet::Condition(w)) if w.contains("triggering")));
        spec.conditions.push(t("/proc"));
        assert_eq!(check(&spec), Ok(()));
    }

    #[test]
    fn paths_negation_and_assertions() {
        let dir = std::env::temp_dir().join(format!("supd-cond-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("empty"), "").unwrap();
        std::fs::write(dir.join("full.conf"), "x").unwrap();
        let d = |n: &str| dir.join(n).display().to_string();
        let mut spec = UnitSpec::simple("c", UnitKind::Longrun, &["/bin/true"]);
        spec.conditions = vec![
            cond(CondKind::PathExists, &d("full.conf"), false, false),
            cond(CondKind::PathExists, &d("disabled"), true, false),
            cond(CondKind::PathIsDirectory, &d("sub"), false, false),
            cond(CondKind::FileNotEmpty, &d("full.conf"), false, false),
            cond(
                CondKind::DirectoryNotEmpty,
                &dir.display().to_string(),
                false,
                false,
            ),
            cond(CondKind::PathExistsGlob, &d("*.conf"), false, false),
            cond(CondKind::PathIsMountPoint, "/proc", false, false),
            cond(CondKind::FileIsExecutable, "/bin/sh", false, false),
        ];
        assert_eq!(check(&spec), Ok(()));
        spec.conditions
            .push(cond(CondKind::FileNotEmpty, &d("empty"), false, false));
        match check(&spec) {
            Err(NotMet::Condition(why)) => assert!(why.contains("file_not_empty"), "{why}"),
            other => panic!("{other:?}"),
        }
        spec.conditions.pop();
        spec.conditions.push(cond(
            CondKind::PathIsDirectory,
            &d("full.conf"),
            false,
            true,
        ));
        assert!(matches!(check(&spec), Err(NotMet::Assertion(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn globs_and_command_lines() {
        assert!(glob_match("*.conf", "a.conf"));
        assert!(glob_match("tty[USB]?*", "ttyU0x"));
        assert!(!glob_match("*.conf", "a.conf.bak"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(cmdline_has("ro quiet audit=1", "audit"));
        assert!(cmdline_has("ro quiet audit=1", "audit=1"));
        assert!(!cmdline_has("ro quiet audit=1", "audit=0"));
        assert!(!cmdline_has("ro quiet", "splash"));
    }
}
