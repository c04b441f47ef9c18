//! The seccomp settings of `[sandbox]`, parsed: `system_call_filter`
//! (systemd's SystemCallFilter= syntax, `@group` names included),
//! `system_call_error_number`, `restrict_address_families`,
//! `restrict_namespaces` and the names they use.
//!
//! Owns: resolving names (system calls, systemd's groups, errno values,
//! address families, namespace types) to numbers, and systemd's rules for
//! combining allow- and deny-lists. Pure: no system calls. Must never:
//! accept a name it cannot resolve (a misspelt call would silently stay
//! allowed), or give a number for a call the build architecture lacks.

pub mod groups;
pub mod numbers;

use std::collections::BTreeMap;

/// What a denied system call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deny {
    /// The process is killed with SIGSYS (systemd's default).
    Kill,
    /// The call fails with this errno.
    Errno(u16),
}

/// `system_call_filter`, resolved: an allow-list (everything else denied
/// with the default action) or a deny-list (each call with its action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallFilter {
    pub allow_list: bool,
    /// Call number -> its own errno (deny-lists: `name:EPERM`).
    pub calls: BTreeMap<u32, Option<u16>>,
}

/// `restrict_address_families`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Families {
    pub allow_list: bool,
    pub families: Vec<u32>,
}

/// Calls supd itself needs between installing the filter and the
/// service's first instruction (execve; exit_group when exec fails), and
/// the return from a signal handler: never denied.
pub const ALWAYS_ALLOWED: &[&str] = &["execve", "exit", "exit_group", "rt_sigreturn"];

pub fn syscall_number(name: &str) -> Option<u32> {
    numbers::TABLE
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v as u32)
}

/// Every call number of a group, nested groups included.
fn group_members(name: &str, out: &mut Vec<u32>, depth: usize) -> Result<(), String> {
    if name == "@known" {
        out.extend(numbers::TABLE.iter().map(|(_, v)| *v as u32));
        return Ok(());
    }
    let Some((_, _, members)) = groups::GROUPS.iter().find(|(g, _, _)| *g == name) else {
        return Err(format!(
            "{name:?} is not a system call group (known: {})",
            groups::GROUPS
                .iter()
                .map(|(g, _, _)| *g)
                .collect::<Vec<_>>()
                .join(" ")
        ));
    };
    if depth > 8 {
        return Err(format!("{name}: groups nested too deep"));
    }
    for m in members.iter() {
        if m.starts_with('@') {
            group_members(m, out, depth + 1)?;
        } else if let Some(n) = syscall_number(m) {
            out.push(n);
        }
        // else: a call of another architecture (systemd skips it too).
    }
    Ok(())
}

/// Is `name` a system call of any architecture systemd's groups know?
fn known_elsewhere(name: &str) -> bool {
    groups::GROUPS.iter().any(|(_, _, m)| m.contains(&name))
}

/// One name or `@group` -> its call numbers.
pub fn resolve(name: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    if name.starts_with('@') {
        group_members(name, &mut out, 0)?;
    } else if let Some(n) = syscall_number(name) {
        out.push(n);
    } else if !known_elsewhere(name) {
        return Err(format!("{name:?} is not a system call"));
    }
    Ok(out)
}

/// An errno by name (`EPERM`) or number.
pub fn errno(s: &str) -> Option<u16> {
    if let Ok(n) = s.parse::<u16>() {
        return (1..4096).contains(&n).then_some(n);
    }
    ERRNOS.iter().find(|(n, _)| *n == s).map(|(_, v)| *v as u16)
}

const ERRNOS: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("ENOENT", libc::ENOENT),
    ("ESRCH", libc::ESRCH),
    ("EINTR", libc::EINTR),
    ("EIO", libc::EIO),
    ("ENXIO", libc::ENXIO),
    ("E2BIG", libc::E2BIG),
    ("ENOEXEC", libc::ENOEXEC),
    ("EBADF", libc::EBADF),
    ("ECHILD", libc::ECHILD),
    ("EAGAIN", libc::EAGAIN),
    ("ENOMEM", libc::ENOMEM),
    ("EACCES", libc::EACCES),
    ("EFAULT", libc::EFAULT),
    ("EBUSY", libc::EBUSY),
    ("EEXIST", libc::EEXIST),
    ("EXDEV", libc::EXDEV),
    ("ENODEV", libc::ENODEV),
    ("ENOTDIR", libc::ENOTDIR),
    ("EISDIR", libc::EISDIR),
    ("EINVAL", libc::EINVAL),
    ("ENFILE", libc::ENFILE),
    ("EMFILE", libc::EMFILE),
    ("ENOTTY", libc::ENOTTY),
    ("ETXTBSY", libc::ETXTBSY),
    ("EFBIG", libc::EFBIG),
    ("ENOSPC", libc::ENOSPC),
    ("ESPIPE", libc::ESPIPE),
    ("EROFS", libc::EROFS),
    ("EMLINK", libc::EMLINK),
    ("EPIPE", libc::EPIPE),
    ("EDOM", libc::EDOM),
    ("ERANGE", libc::ERANGE),
    ("ENOSYS", libc::ENOSYS),
    ("ENOTSUP", libc::ENOTSUP),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("EAFNOSUPPORT", libc::EAFNOSUPPORT),
    ("EPROTONOSUPPORT", libc::EPROTONOSUPPORT),
    ("ECONNREFUSED", libc::ECONNREFUSED),
    ("ENODATA", libc::ENODATA),
    ("EUCLEAN", libc::EUCLEAN),
];

/// Address families by systemd's (and the C headers') names.
const FAMILIES: &[(&str, u32)] = &[
    ("AF_UNSPEC", 0),
    ("AF_UNIX", 1),
    ("AF_LOCAL", 1),
    ("AF_INET", 2),
    ("AF_AX25", 3),
    ("AF_IPX", 4),
    ("AF_APPLETALK", 5),
    ("AF_NETROM", 6),
    ("AF_BRIDGE", 7),
    ("AF_ATMPVC", 8),
    ("AF_X25", 9),
    ("AF_INET6", 10),
    ("AF_ROSE", 11),
    ("AF_DECnet", 12),
    ("AF_NETBEUI", 13),
    ("AF_SECURITY", 14),
    ("AF_KEY", 15),
    ("AF_NETLINK", 16),
    ("AF_PACKET", 17),
    ("AF_ASH", 18),
    ("AF_ECONET", 19),
    ("AF_ATMSVC", 20),
    ("AF_RDS", 21),
    ("AF_SNA", 22),
    ("AF_IRDA", 23),
    ("AF_PPPOX", 24),
    ("AF_WANPIPE", 25),
    ("AF_LLC", 26),
    ("AF_IB", 27),
    ("AF_MPLS", 28),
    ("AF_CAN", 29),
    ("AF_TIPC", 30),
    ("AF_BLUETOOTH", 31),
    ("AF_IUCV", 32),
    ("AF_RXRPC", 33),
    ("AF_ISDN", 34),
    ("AF_PHONET", 35),
    ("AF_IEEE802154", 36),
    ("AF_CAIF", 37),
    ("AF_ALG", 38),
    ("AF_NFC", 39),
    ("AF_VSOCK", 40),
    ("AF_KCM", 41),
    ("AF_QIPCRTR", 42),
    ("AF_SMC", 43),
    ("AF_XDP", 44),
    ("AF_MCTP", 45),
];

pub fn family(name: &str) -> Option<u32> {
    FAMILIES.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// Namespace types by systemd's names, as clone flags.
pub const NAMESPACES: &[(&str, u64)] = &[
    ("cgroup", libc::CLONE_NEWCGROUP as u64),
    ("ipc", libc::CLONE_NEWIPC as u64),
    ("net", libc::CLONE_NEWNET as u64),
    ("mnt", libc::CLONE_NEWNS as u64),
    ("pid", libc::CLONE_NEWPID as u64),
    ("user", libc::CLONE_NEWUSER as u64),
    ("uts", libc::CLONE_NEWUTS as u64),
    ("time", 0x80),
];

pub fn all_namespaces() -> u64 {
    NAMESPACES.iter().fold(0, |a, (_, f)| a | f)
}

/// `restrict_namespaces = [..]`: the namespace types that stay allowed
/// (`~` first: the listed ones are the forbidden ones). Returns the
/// forbidden clone flags.
pub fn parse_namespaces(words: &[String]) -> Result<u64, String> {
    let mut mask = 0u64;
    let joined = words.join(" ");
    let joined = joined.trim();
    let (invert, rest) = match joined.strip_prefix('~') {
        Some(r) => (true, r),
        None => (false, joined),
    };
    for w in rest.split_whitespace() {
        match NAMESPACES.iter().find(|(n, _)| *n == w) {
            Some((_, f)) => mask |= f,
            None => {
                return Err(format!(
                    "{w:?} is not a namespace type (cgroup, ipc, net, mnt, pid, user, uts, time)"
                ));
            }
        }
    }
    Ok(if invert {
        mask
    } else {
        all_namespaces() & !mask
    })
}

/// `restrict_address_families = [..]`: each entry one
/// RestrictAddressFamilies= line — names, `~` first for a deny-list — or
/// `"none"` (no socket at all). As in systemd, the first line decides the
/// kind; later lines of the other kind take families out again.
pub fn parse_families(lines: &[String]) -> Result<Families, String> {
    let mut out: Option<Families> = None;
    for line in lines {
        let line = line.trim();
        if line == "none" {
            out = Some(Families {
                allow_list: true,
                families: Vec::new(),
            });
            continue;
        }
        let (invert, rest) = match line.strip_prefix('~') {
            Some(r) => (true, r),
            None => (false, line),
        };
        let f = out.get_or_insert_with(|| Families {
            allow_list: !invert,
            families: Vec::new(),
        });
        for w in rest.split_whitespace() {
            let Some(fam) = family(w) else {
                return Err(format!(
                    "{w:?} is not an address family (AF_UNIX, AF_INET...)"
                ));
            };
            if f.allow_list != invert {
                if !f.families.contains(&fam) {
                    f.families.push(fam);
                }
            } else {
                f.families.retain(|x| *x != fam);
            }
        }
    }
    out.ok_or_else(|| "an empty list restricts nothing (remove the key)".to_string())
}

/// `system_call_filter`: each entry is one SystemCallFilter= line — names
/// and `@group`s separated by spaces, `~` first for a deny-list, `:ERRNO`
/// after a denied name. The first entry decides the kind (as in systemd):
/// after an allow-list, `~` entries take calls out of it; after a
/// deny-list, plain entries take calls out of the denied set. An
/// allow-list always includes `@default`.
pub fn parse_filter(lines: &[String]) -> Result<SyscallFilter, String> {
    let mut f: Option<SyscallFilter> = None;
    for line in lines {
        let line = line.trim();
        let (invert, rest) = match line.strip_prefix('~') {
            Some(r) => (true, r),
            None => (false, line),
        };
        let flt = f.get_or_insert_with(|| SyscallFilter {
            allow_list: !invert,
            calls: BTreeMap::new(),
        });
        if flt.allow_list && flt.calls.is_empty() && !invert {
            for n in resolve("@default")? {
                flt.calls.insert(n, None);
            }
        }
        for word in rest.split_whitespace() {
            let (name, err) = match word.split_once(':') {
                Some((n, e)) => match errno(e) {
                    Some(v) => (n, Some(v)),
                    None => return Err(format!("{word:?}: {e:?} is not an errno name or number")),
                },
                None => (word, None),
            };
            if err.is_some() && !invert {
                return Err(format!(
                    "{word:?}: an errno applies to denied calls only (write \"~{word}\")"
                ));
            }
            let nrs = resolve(name)?;
            for n in nrs {
                match (flt.allow_list, invert) {
                    (true, false) | (false, true) => {
                        flt.calls.insert(n, err);
                    }
                    (true, true) | (false, false) => {
                        flt.calls.remove(&n);
                    }
                }
            }
        }
    }
    let mut f = f.ok_or_else(|| "an empty list filters nothing (remove the key)".to_string())?;
    for n in ALWAYS_ALLOWED.iter().filter_map(|n| syscall_number(n)) {
        if f.allow_list {
            f.calls.insert(n, None);
        } else {
            f.calls.remove(&n);
        }
    }
    Ok(f)
}

/// `system_call_error_number`: an errno name or number, or `kill`.
pub fn parse_deny(s: &str) -> Result<Deny, String> {
    if s == "kill" {
        return Ok(Deny::Kill);
    }
    errno(s)
        .map(Deny::Errno)
        .ok_or_else(|| format!("{s:?} is not an errno name (EPERM...), a number or \"kill\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn groups_resolve_nested_and_skip_other_architectures() {
        let sys = resolve("@system-service").unwrap();
        let n = |s| syscall_number(s).unwrap();
        assert!(sys.contains(&n("read")));
        assert!(
            sys.contains(&n("execve")),
            "@default is nested in @system-service"
        );
        assert!(!sys.contains(&n("mount")));
        assert!(resolve("@mount").unwrap().contains(&n("umount2")));
        assert!(resolve("_llseek").unwrap().is_empty(), "i386-only: skipped");
        assert!(resolve("no_such_call").is_err());
        assert!(resolve("@nope").is_err());
        assert!(resolve("@known").unwrap().len() > 300);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn systemd_combination_rules() {
        let n = |s| syscall_number(s).unwrap();
        // Allow-list, then a deny entry takes calls out of it.
        let f = parse_filter(&v(&["@system-service", "~@privileged @resources"])).unwrap();
        assert!(f.allow_list);
        assert!(f.calls.contains_key(&n("read")));
        assert!(!f.calls.contains_key(&n("setuid")), "@privileged removed");
        assert!(!f.calls.contains_key(&n("setrlimit")), "@resources removed");
        assert!(f.calls.contains_key(&n("execve")));
        // Deny-list with errno, then an allow entry takes one back.
        let f = parse_filter(&v(&["~@mount:EACCES @clock", "umount2"])).unwrap();
        assert!(!f.allow_list);
        assert_eq!(f.calls.get(&n("mount")), Some(&Some(libc::EACCES as u16)));
        assert_eq!(f.calls.get(&n("settimeofday")), Some(&None));
        assert!(!f.calls.contains_key(&n("umount2")));
        // execve can never be denied.
        let f = parse_filter(&v(&["~execve exit_group"])).unwrap();
        assert!(f.calls.is_empty());
        assert!(parse_filter(&v(&["read:EPERM"])).is_err());
        assert!(parse_filter(&v(&["~read:EWHAT"])).is_err());
    }

    #[test]
    fn families_namespaces_errnos() {
        let f = parse_families(&v(&["AF_UNIX AF_INET", "AF_INET6"])).unwrap();
        assert!(f.allow_list && f.families == vec![1, 2, 10]);
        let f = parse_families(&v(&["~ AF_PACKET AF_NETLINK", "AF_NETLINK"])).unwrap();
        assert!(!f.allow_list && f.families == vec![17]);
        let f = parse_families(&v(&["AF_UNIX AF_INET", "~AF_INET"])).unwrap();
        assert!(f.allow_list && f.families == vec![1]);
        assert!(parse_families(&v(&["none"])).unwrap().families.is_empty());
        assert!(parse_families(&v(&["AF_NOPE"])).is_err());
        assert_eq!(
            parse_namespaces(&v(&["~user"])).unwrap(),
            libc::CLONE_NEWUSER as u64
        );
        let allowed_net = parse_namespaces(&v(&["net"])).unwrap();
        assert_eq!(allowed_net & libc::CLONE_NEWNET as u64, 0);
        assert_ne!(allowed_net & libc::CLONE_NEWUSER as u64, 0);
        assert_eq!(parse_deny("EPERM"), Ok(Deny::Errno(1)));
        assert_eq!(parse_deny("kill"), Ok(Deny::Kill));
        assert!(parse_deny("EWHAT").is_err());
    }
}
