//! Device access control for a unit's cgroup (`[resources] device_policy`
//! and `device_allow`, systemd's DevicePolicy=/DeviceAllow=).
//!
//! Owns: resolving `device_allow` entries against the host (a node's type
//! and numbers by stat(2), a driver's major from /proc/devices), turning
//! them into a cgroup v2 device program (BPF_PROG_TYPE_CGROUP_DEVICE,
//! written here instruction by instruction: a list of "type, access,
//! major, minor" checks, allow on the first match, deny otherwise) and
//! loading and attaching it to a group with raw bpf(2) calls.
//!
//! Must never: leave a restricted unit unrestricted — any failure (no
//! bpf(2), a verifier refusal, no permission to attach) is an error the
//! caller turns into a refused start, never a warning; attach anywhere but
//! the unit's own group.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use crate::unit::{DeviceAllow, DevicePolicy, DeviceSpec, Resources};

/// A device type as the device program sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevType {
    Block = 1,
    Char = 2,
}

/// One allow rule of the program: `None` numbers match any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub ty: DevType,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// BPF_DEVCG_ACC_*: mknod 1, read 2, write 4.
    pub access: u32,
}

const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;

/// What `closed` adds to `device_allow` (systemd's list).
const STANDARD: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
];

fn access_of(a: &DeviceAllow) -> u32 {
    (if a.read { ACC_READ } else { 0 })
        | (if a.write { ACC_WRITE } else { 0 })
        | (if a.mknod { ACC_MKNOD } else { 0 })
}

/// The rules for a unit's resources; None when device access is not
/// restricted. Entries naming nothing on this host (a missing node, an
/// unknown driver) are left out and described in the second value, as
/// systemd ignores them.
pub fn rules(r: &Resources) -> Option<(Vec<Rule>, Vec<String>)> {
    if !r.restricts_devices() {
        return None;
    }
    let devices = std::fs::read_to_string("/proc/devices").unwrap_or_default();
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let mut add = |a: &DeviceAllow| match &a.spec {
        DeviceSpec::Path(p) => match node(p) {
            Ok((ty, major, minor)) => out.push(Rule {
                ty,
                major: Some(major),
                minor: Some(minor),
                access: access_of(a),
            }),
            Err(why) => skipped.push(why),
        },
        DeviceSpec::Char(name) | DeviceSpec::Block(name) => {
            let ty = if matches!(a.spec, DeviceSpec::Char(_)) {
                DevType::Char
            } else {
                DevType::Block
            };
            let majors = majors(&devices, ty, name);
            if majors.is_empty() {
                skipped.push(format!(
                    "no {} driver {name:?} in /proc/devices",
                    if ty == DevType::Char {
                        "character"
                    } else {
                        "block"
                    }
                ));
            }
            for m in majors {
                out.push(Rule {
                    ty,
                    major: Some(m),
                    minor: None,
                    access: access_of(a),
                });
            }
        }
    };
    for a in &r.device_allow {
        add(a);
    }
    // `auto` with entries is `closed`, as in systemd.
    if r.device_policy != DevicePolicy::Strict {
        for p in STANDARD {
            add(&DeviceAllow {
                spec: DeviceSpec::Path(p.into()),
                read: true,
                write: true,
                mknod: true,
            });
        }
        add(&DeviceAllow {
            spec: DeviceSpec::Char("pts".into()),
            read: true,
            write: true,
            mknod: false,
        });
    }
    Some((out, skipped))
}

/// A device node's type and numbers.
fn node(p: &Path) -> Result<(DevType, u32, u32), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let ty = if md.file_type().is_char_device() {
        DevType::Char
    } else if md.file_type().is_block_device() {
        DevType::Block
    } else {
        return Err(format!("{} is not a device node", p.display()));
    };
    let rdev = md.rdev();
    Ok((ty, libc::major(rdev), libc::minor(rdev)))
}

/// The majors of the drivers called `name` (a trailing `*` matches a
/// prefix) in /proc/devices' section for `ty`.
fn majors(devices: &str, ty: DevType, name: &str) -> Vec<u32> {
    let section = match ty {
        DevType::Char => "Character devices:",
        DevType::Block => "Block devices:",
    };
    let mut inside = false;
    let mut out = Vec::new();
    for line in devices.lines() {
        let l = line.trim();
        if l.ends_with("devices:") {
            inside = l == section;
            continue;
        }
        if !inside {
            continue;
        }
        let mut it = l.split_whitespace();
        let (Some(m), Some(n)) = (it.next(), it.next()) else {
            continue;
        };
        let hit = match name.strip_suffix('*') {
            Some(prefix) => n.starts_with(prefix),
            None => n == name,
        };
        if hit && let Ok(m) = m.parse::<u32>() {
            out.push(m);
        }
    }
    out
}

/// One eBPF instruction (struct bpf_insn), as its 8 bytes.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (dst & 0x0f) | (src << 4);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND64_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH64_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// The device program: `struct bpf_cgroup_dev_ctx { u32 access_type
/// (access << 16 | type); u32 major; u32 minor; }` in r1; returns 1
/// (allow) on the first rule that matches, else 0 (EPERM to the caller).
pub fn program(rules: &[Rule]) -> Vec<[u8; 8]> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND64_K, 2, 0, 0, 0xffff), // r2 = type
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH64_K, 3, 0, 0, 16), // r3 = access asked
        insn(LDX_W, 4, 1, 4, 0),    // r4 = major
        insn(LDX_W, 5, 1, 8, 0),    // r5 = minor
    ];
    for r in rules {
        let mut checks: Vec<[u8; 8]> = Vec::new();
        // Each jump skips the rest of this rule; offsets are filled in
        // once its length is known (None marks a jump).
        let mut jumps: Vec<usize> = Vec::new();
        jumps.push(checks.len());
        checks.push(insn(JNE_K, 2, 0, 0, r.ty as i32));
        // Asked for nothing this rule does not grant.
        checks.push(insn(MOV64_X, 0, 3, 0, 0));
        checks.push(insn(AND64_K, 0, 0, 0, !(r.access as i32) & 0x7));
        jumps.push(checks.len());
        checks.push(insn(JNE_K, 0, 0, 0, 0));
        if let Some(m) = r.major {
            jumps.push(checks.len());
            checks.push(insn(JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor {
            jumps.push(checks.len());
            checks.push(insn(JNE_K, 5, 0, 0, m as i32));
        }
        checks.push(insn(MOV64_K, 0, 0, 0, 1));
        checks.push(insn(EXIT, 0, 0, 0, 0));
        let len = checks.len();
        for j in jumps {
            let off = (len - j - 1) as i16;
            checks[j][2..4].copy_from_slice(&off.to_le_bytes());
        }
        p.extend(checks);
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> std::io::Result<i64> {
    // SAFETY: bpf(2) reads (and for a log, writes through pointers we
    // set to live buffers) `attr.len()` bytes of a zero-filled union
    // bpf_attr that outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn put_u32(a: &mut [u8], at: usize, v: u32) {
    a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(a: &mut [u8], at: usize, v: u64) {
    a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Load a device program; its descriptor.
pub fn load(prog: &[[u8; 8]]) -> Result<OwnedFd, String> {
    let code: Vec<u8> = prog.iter().flatten().copied().collect();
    let license = c"GPL";
    let mut log = vec![0u8; 16 * 1024];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE);
    put_u32(&mut attr, 4, prog.len() as u32);
    put_u64(&mut attr, 8, code.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    put_u32(&mut attr, 24, 1); // log_level
    put_u32(&mut attr, 28, log.len() as u32);
    put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a new descriptor from the kernel, owned by nothing else.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!(
                "loading the cgroup device program (bpf(2) BPF_PROG_LOAD): {e}{}",
                if last.is_empty() {
                    String::new()
                } else {
                    format!(" (verifier: {last})")
                }
            ))
        }
    }
}

/// Attach a device program to the group open at `group_fd`, replacing
/// the one a previous start attached.
pub fn attach(group_fd: i32, prog: &OwnedFd) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let mut attr = [0u8; 32];
    put_u32(&mut attr, 0, group_fd as u32);
    put_u32(&mut attr, 4, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 8, BPF_CGROUP_DEVICE);
    put_u32(&mut attr, 12, 0); // flags: one program, replaced by the next
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map(|_| ())
        .map_err(|e| format!("attaching the cgroup device program (bpf(2) BPF_PROG_ATTACH): {e}"))
}

/// Can this host load a device program at all? (`supd check`.)
pub fn probe() -> Result<(), String> {
    load(&program(&[])).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors_from_proc_devices() {
        let d = "Character devices:\n  1 mem\n  4 /dev/vc/0\n136 pts\n254 rtc\n\nBlock devices:\n  7 loop\n  8 sd\n";
        assert_eq!(majors(d, DevType::Char, "rtc"), [254]);
        assert_eq!(majors(d, DevType::Char, "loop"), Vec::<u32>::new());
        assert_eq!(majors(d, DevType::Block, "loop"), [7]);
        assert_eq!(majors(d, DevType::Block, "s*"), [8]);
    }

    #[test]
    fn program_shape() {
        let p = program(&[Rule {
            ty: DevType::Char,
            major: Some(1),
            minor: Some(3),
            access: ACC_READ | ACC_WRITE,
        }]);
        // Prologue 6, rule 8 (type, access x3, major, minor, allow x2),
        // deny 2.
        assert_eq!(p.len(), 16);
        // The type check skips the rest of its rule (7 instructions).
        assert_eq!(i16::from_le_bytes([p[6][2], p[6][3]]), 7);
        assert_eq!(p[15][0], EXIT);
    }
}
