//! Seccomp filters for a unit's `[sandbox]`: classic BPF programs built in
//! the parent from the parsed settings, installed by the spawn child right
//! before execve.
//!
//! Owns: compiling `system_call_filter`, `system_call_architectures`,
//! `lock_personality`, `memory_deny_write_execute`, `restrict_realtime`,
//! `restrict_namespaces`, `restrict_address_families` and
//! `restrict_suid_sgid` to programs (one for the call list, one for the
//! argument checks: the kernel runs every installed program and keeps the
//! strictest answer, so a kill in one is never weakened by an errno in
//! the other), and `install`, the raw seccomp(2) calls of the child.
//! Must never: allocate in `install` (it runs in a `CLONE_VM |
//! CLONE_VFORK` child), or let a call of another architecture through
//! (its numbers mean other calls: every program kills it).

use crate::unit::Sandbox;
use crate::unit::syscalls::{Deny, syscall_number};

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_SET_MODE_FILTER: usize = 1;
const PR_SET_NO_NEW_PRIVS: usize = 38;

// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Low 32 bits of argument `i` (little-endian): what every checked
/// argument here is (flags, modes, families, policies).
fn off_arg(i: u32) -> u32 {
    16 + 8 * i
}

fn errno(e: i32) -> u32 {
    RET_ERRNO | (e as u32 & 0xffff)
}

fn deny_action(d: Deny) -> u32 {
    match d {
        Deny::Kill => RET_KILL_PROCESS,
        Deny::Errno(e) => RET_ERRNO | e as u32,
    }
}

/// A condition on one argument; a rule holds when all its conditions do.
#[derive(Debug, Clone)]
enum Cond {
    /// `arg & mask != 0`
    Any(u32, u32),
    /// `arg & mask == value`
    MaskEq(u32, u32, u32),
    /// `arg` is none of the values.
    NotIn(u32, Vec<u32>),
}

#[derive(Debug, Clone)]
struct Rule {
    nr: u32,
    conds: Vec<Cond>,
    action: u32,
}

/// A jump target inside one rule's block.
#[derive(Clone, Copy)]
enum J {
    Next,
    /// Past the block's `ret` (the rule does not hold).
    Fail,
}

struct Ins {
    code: u16,
    jt: J,
    jf: J,
    k: u32,
}

fn ins(code: u16, k: u32) -> Ins {
    Ins {
        code,
        jt: J::Next,
        jf: J::Next,
        k,
    }
}

fn jmp(code: u16, k: u32, jt: J, jf: J) -> Ins {
    Ins { code, jt, jf, k }
}

fn filter(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The header every program starts with: a call of another architecture
/// (or x86-64's x32 ABI) kills the process. Leaves the call number in A.
fn header(out: &mut Vec<libc::sock_filter>) {
    out.push(filter(LD_W_ABS, 0, 0, OFF_ARCH));
    out.push(filter(JEQ_K, 1, 0, AUDIT_ARCH_X86_64));
    out.push(filter(RET_K, 0, 0, RET_KILL_PROCESS));
    out.push(filter(LD_W_ABS, 0, 0, OFF_NR));
    out.push(filter(JGE_K, 0, 1, X32_SYSCALL_BIT));
    out.push(filter(RET_K, 0, 0, RET_KILL_PROCESS));
}

/// Header, the rules in order (the first that holds answers), then
/// `default`.
fn assemble(rules: &[Rule], default: u32) -> Result<Vec<libc::sock_filter>, String> {
    let mut out = Vec::new();
    header(&mut out);
    let mut a_is_nr = true;
    for r in rules {
        let mut block: Vec<Ins> = Vec::new();
        if !a_is_nr {
            block.push(ins(LD_W_ABS, OFF_NR));
        }
        block.push(jmp(JEQ_K, r.nr, J::Next, J::Fail));
        for c in &r.conds {
            match c {
                Cond::Any(arg, mask) => {
                    block.push(ins(LD_W_ABS, off_arg(*arg)));
                    block.push(jmp(JSET_K, *mask, J::Next, J::Fail));
                }
                Cond::MaskEq(arg, mask, value) => {
                    block.push(ins(LD_W_ABS, off_arg(*arg)));
                    block.push(ins(ALU_AND_K, *mask));
                    block.push(jmp(JEQ_K, *value, J::Next, J::Fail));
                }
                Cond::NotIn(arg, values) => {
                    block.push(ins(LD_W_ABS, off_arg(*arg)));
                    for v in values {
                        block.push(jmp(JEQ_K, *v, J::Fail, J::Next));
                    }
                }
            }
        }
        block.push(ins(RET_K, r.action));
        let len = block.len();
        for (i, b) in block.iter().enumerate() {
            let off = |j: J| -> Result<u8, String> {
                match j {
                    J::Next => Ok(0),
                    J::Fail => u8::try_from(len - i - 1)
                        .map_err(|_| "a seccomp rule is too long to jump over".to_string()),
                }
            };
            out.push(filter(b.code, off(b.jt)?, off(b.jf)?, b.k));
        }
        a_is_nr = r.conds.is_empty();
    }
    out.push(filter(RET_K, 0, 0, default));
    // BPF_MAXINSNS.
    if out.len() > 4096 {
        return Err(format!(
            "the seccomp filter needs {} instructions, more than the kernel's 4096",
            out.len()
        ));
    }
    Ok(out)
}

fn nr(name: &str) -> Option<u32> {
    syscall_number(name)
}

/// The argument checks: LockPersonality=, MemoryDenyWriteExecute=,
/// RestrictRealtime=, RestrictNamespaces=, RestrictAddressFamilies=,
/// RestrictSUIDSGID=, as systemd defines them.
fn arg_rules(sb: &Sandbox) -> Vec<Rule> {
    let mut rules = Vec::new();
    let mut add = |name: &str, conds: Vec<Cond>, action: u32| {
        if let Some(n) = nr(name) {
            rules.push(Rule {
                nr: n,
                conds,
                action,
            });
        }
    };
    let eperm = errno(libc::EPERM);
    if sb.lock_personality {
        // Only the personality it runs with (PER_LINUX), or a query.
        add(
            "personality",
            vec![Cond::NotIn(0, vec![0, 0xffff_ffff])],
            eperm,
        );
    }
    if sb.memory_deny_write_execute {
        let wx = (libc::PROT_WRITE | libc::PROT_EXEC) as u32;
        let x = libc::PROT_EXEC as u32;
        add("mmap", vec![Cond::MaskEq(2, wx, wx)], eperm);
        add("mprotect", vec![Cond::Any(2, x)], eperm);
        add("pkey_mprotect", vec![Cond::Any(2, x)], eperm);
        add("shmat", vec![Cond::Any(2, libc::SHM_EXEC as u32)], eperm);
    }
    if sb.restrict_realtime {
        // The policy without SCHED_RESET_ON_FORK.
        let m = !(libc::SCHED_RESET_ON_FORK as u32);
        for p in [
            libc::SCHED_FIFO,
            libc::SCHED_RR,
            6, /* SCHED_DEADLINE */
        ] {
            add(
                "sched_setscheduler",
                vec![Cond::MaskEq(1, m, p as u32)],
                eperm,
            );
        }
        // Its policy is inside a struct BPF cannot read.
        add("sched_setattr", vec![], eperm);
    }
    if sb.restrict_namespaces != 0 {
        let d = sb.restrict_namespaces as u32;
        add("unshare", vec![Cond::Any(0, d)], eperm);
        add("clone", vec![Cond::Any(0, d)], eperm);
        add("setns", vec![Cond::Any(1, d)], eperm);
        // nstype 0: "whatever the descriptor is".
        add("setns", vec![Cond::MaskEq(1, 0xffff_ffff, 0)], eperm);
        // Its flags are inside a struct: libc falls back to clone.
        add("clone3", vec![], errno(libc::ENOSYS));
    }
    if let Some(f) = &sb.restrict_address_families {
        let e = errno(libc::EAFNOSUPPORT);
        if f.allow_list {
            add("socket", vec![Cond::NotIn(0, f.families.clone())], e);
        } else {
            for fam in &f.families {
                add("socket", vec![Cond::MaskEq(0, 0xffff_ffff, *fam)], e);
            }
        }
    }
    if sb.restrict_suid_sgid {
        let sid = libc::S_ISUID | libc::S_ISGID;
        let creat = (libc::O_CREAT | 0o20000000/* __O_TMPFILE */) as u32;
        for (name, mode_arg) in [
            ("chmod", 1),
            ("fchmod", 1),
            ("fchmodat", 2),
            ("fchmodat2", 2),
            ("mkdir", 1),
            ("mkdirat", 2),
            ("mknod", 1),
            ("mknodat", 2),
            ("creat", 1),
        ] {
            add(name, vec![Cond::Any(mode_arg, sid)], eperm);
        }
        add("open", vec![Cond::Any(1, creat), Cond::Any(2, sid)], eperm);
        add(
            "openat",
            vec![Cond::Any(2, creat), Cond::Any(3, sid)],
            eperm,
        );
        // Its mode is inside a struct: libc falls back to openat.
        add("openat2", vec![], errno(libc::ENOSYS));
    }
    if sb.protect_clock {
        // ProtectClock=: the calls that set the clock, as systemd denies them.
        for n in crate::unit::syscalls::resolve("@clock").unwrap_or_default() {
            rules.push(Rule {
                nr: n,
                conds: Vec::new(),
                action: eperm,
            });
        }
    }
    rules
}

/// The programs for a sandbox, in install order; empty when it needs none.
pub fn programs(sb: &Sandbox) -> Result<Vec<Vec<libc::sock_filter>>, String> {
    let mut out = Vec::new();
    if !sb.needs_seccomp() {
        return Ok(out);
    }
    // The argument checks first: the call list may deny seccomp(2)
    // itself (`~@privileged`), so it must be the last one installed (as
    // systemd installs SystemCallFilter= last).
    let rules = arg_rules(sb);
    if !rules.is_empty() || sb.system_call_filter.is_none() {
        // (Without rules: SystemCallArchitectures=native alone.)
        out.push(assemble(&rules, RET_ALLOW)?);
    }
    let deny = deny_action(sb.system_call_error_number.unwrap_or(Deny::Kill));
    if let Some(f) = &sb.system_call_filter {
        let rules: Vec<Rule> = f
            .calls
            .iter()
            .map(|(n, e)| Rule {
                nr: *n,
                conds: Vec::new(),
                action: match (f.allow_list, e) {
                    (true, _) => RET_ALLOW,
                    (false, Some(e)) => RET_ERRNO | *e as u32,
                    (false, None) => deny,
                },
            })
            .collect();
        let default = if f.allow_list { deny } else { RET_ALLOW };
        out.push(assemble(&rules, default)?);
    }
    Ok(out)
}

/// Where installing failed.
pub const STEP_NNP: usize = 1;
pub const STEP_LOAD: usize = 2;

/// In the child, the last step before execve: install the programs. A
/// process without CAP_SYS_ADMIN must set no_new_privs first (the kernel
/// requires it; systemd implies NoNewPrivileges= the same way).
///
/// # Safety
/// Call only in the spawn child; `progs` must outlive the call.
pub unsafe fn install(progs: &[Vec<libc::sock_filter>]) -> Result<(), (usize, isize)> {
    for p in progs {
        let fprog = libc::sock_fprog {
            len: p.len() as u16,
            filter: p.as_ptr() as *mut libc::sock_filter,
        };
        let load = || {
            // SAFETY: a valid program, alive for the call.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    SECCOMP_SET_MODE_FILTER,
                    0usize,
                    &fprog as *const libc::sock_fprog as usize,
                )
            };
            if r == -1 {
                // SAFETY: this thread's errno, read at once.
                -(unsafe { *libc::__errno_location() } as isize)
            } else {
                0
            }
        };
        let mut r = load();
        if r == -(libc::EACCES as isize) {
            // SAFETY: prctl with constants.
            let n = unsafe { libc::syscall(libc::SYS_prctl, PR_SET_NO_NEW_PRIVS, 1usize, 0, 0, 0) };
            if n == -1 {
                // SAFETY: as above.
                return Err((STEP_NNP, -(unsafe { *libc::__errno_location() } as isize)));
            }
            r = load();
        }
        if r < 0 {
            return Err((STEP_LOAD, r));
        }
    }
    Ok(())
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::unit::syscalls::{parse_families, parse_filter};

    /// A tiny classic-BPF interpreter for the instructions `assemble`
    /// emits: what the kernel would answer for (arch, nr, args).
    fn run(p: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let mut a = 0u32;
        let mut pc = 0usize;
        loop {
            let f = p[pc];
            pc += 1;
            let jump = |c: bool| if c { f.jt as usize } else { f.jf as usize };
            match f.code {
                LD_W_ABS => {
                    let o = f.k as usize;
                    a = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                ALU_AND_K => a &= f.k,
                JEQ_K => pc += jump(a == f.k),
                JGE_K => pc += jump(a >= f.k),
                JSET_K => pc += jump(a & f.k != 0),
                RET_K => return f.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn n(s: &str) -> u32 {
        syscall_number(s).unwrap()
    }

    const X: u32 = AUDIT_ARCH_X86_64;

    #[test]
    fn allow_list_kills_the_rest_and_other_architectures() {
        let sb = Sandbox {
            system_call_filter: Some(
                parse_filter(&["@system-service".into(), "~@privileged".into()]).unwrap(),
            ),
            ..Default::default()
        };
        let p = programs(&sb).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(run(&p[0], X, n("read"), [0; 6]), RET_ALLOW);
        assert_eq!(run(&p[0], X, n("mount"), [0; 6]), RET_KILL_PROCESS);
        assert_eq!(run(&p[0], X, n("setuid"), [0; 6]), RET_KILL_PROCESS);
        assert_eq!(run(&p[0], X, n("execve"), [0; 6]), RET_ALLOW);
        assert_eq!(
            run(&p[0], 0x4000_0003, 20, [0; 6]),
            RET_KILL_PROCESS,
            "i386"
        );
        assert_eq!(
            run(&p[0], X, 0x4000_0000 | n("read"), [0; 6]),
            RET_KILL_PROCESS,
            "x32"
        );
    }

    #[test]
    fn deny_list_with_errnos() {
        let sb = Sandbox {
            system_call_filter: Some(parse_filter(&["~@mount:EACCES @swap".into()]).unwrap()),
            system_call_error_number: Some(Deny::Errno(libc::EPERM as u16)),
            ..Default::default()
        };
        let p = programs(&sb).unwrap();
        assert_eq!(run(&p[0], X, n("mount"), [0; 6]), errno(libc::EACCES));
        assert_eq!(run(&p[0], X, n("swapon"), [0; 6]), errno(libc::EPERM));
        assert_eq!(run(&p[0], X, n("read"), [0; 6]), RET_ALLOW);
    }

    #[test]
    fn argument_checks() {
        let sb = Sandbox {
            lock_personality: true,
            memory_deny_write_execute: true,
            restrict_realtime: true,
            restrict_suid_sgid: true,
            restrict_namespaces: libc::CLONE_NEWUSER as u64,
            restrict_address_families: Some(
                parse_families(&["AF_UNIX AF_INET AF_INET6".into()]).unwrap(),
            ),
            ..Default::default()
        };
        let p = programs(&sb).unwrap();
        assert_eq!(p.len(), 1);
        let p = &p[0];
        let ep = errno(libc::EPERM);
        let rwx = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        assert_eq!(run(p, X, n("mmap"), [0, 4096, rwx, 0, 0, 0]), ep);
        assert_eq!(run(p, X, n("mmap"), [0, 4096, 3, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(p, X, n("mmap"), [0, 4096, 5, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(p, X, n("mprotect"), [0, 4096, 5, 0, 0, 0]), ep);
        assert_eq!(run(p, X, n("personality"), [0, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            run(p, X, n("personality"), [0xffff_ffff, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(run(p, X, n("personality"), [0x0040000, 0, 0, 0, 0, 0]), ep);
        assert_eq!(run(p, X, n("sched_setscheduler"), [0, 1, 0, 0, 0, 0]), ep);
        assert_eq!(
            run(p, X, n("sched_setscheduler"), [0, 0x4000_0002, 0, 0, 0, 0]),
            ep
        );
        assert_eq!(
            run(p, X, n("sched_setscheduler"), [0, 3, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(run(p, X, n("chmod"), [0, 0o4755, 0, 0, 0, 0]), ep);
        assert_eq!(run(p, X, n("chmod"), [0, 0o755, 0, 0, 0, 0]), RET_ALLOW);
        let creat = libc::O_CREAT as u64;
        assert_eq!(run(p, X, n("openat"), [0, 0, creat, 0o2755, 0, 0]), ep);
        assert_eq!(run(p, X, n("openat"), [0, 0, 0, 0o2755, 0, 0]), RET_ALLOW);
        let user = libc::CLONE_NEWUSER as u64;
        assert_eq!(run(p, X, n("unshare"), [user, 0, 0, 0, 0, 0]), ep);
        assert_eq!(
            run(
                p,
                X,
                n("unshare"),
                [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]
            ),
            RET_ALLOW
        );
        assert_eq!(run(p, X, n("setns"), [3, 0, 0, 0, 0, 0]), ep);
        assert_eq!(run(p, X, n("clone3"), [0; 6]), errno(libc::ENOSYS));
        let eaf = errno(libc::EAFNOSUPPORT);
        assert_eq!(run(p, X, n("socket"), [2, 1, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(p, X, n("socket"), [17, 3, 0, 0, 0, 0]), eaf);
        assert_eq!(run(p, X, n("read"), [0; 6]), RET_ALLOW);
    }

    #[test]
    fn known_fits_in_one_program() {
        let sb = Sandbox {
            system_call_filter: Some(parse_filter(&["@known".into()]).unwrap()),
            native_only: true,
            ..Default::default()
        };
        let p = programs(&sb).unwrap();
        assert_eq!(p.len(), 1);
        assert!(p[0].len() < 4096);
    }

    #[test]
    fn the_call_list_is_installed_last() {
        // `@system-service` does not admit seccomp(2): any program after
        // it could not be installed.
        let sb = Sandbox {
            system_call_filter: Some(parse_filter(&["@system-service".into()]).unwrap()),
            lock_personality: true,
            ..Default::default()
        };
        let p = programs(&sb).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(run(&p[0], X, n("seccomp"), [0; 6]), RET_ALLOW);
        assert_eq!(run(&p[1], X, n("seccomp"), [0; 6]), RET_KILL_PROCESS);
    }
}
