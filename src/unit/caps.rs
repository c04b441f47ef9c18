//! Linux capability names and numbers (linux/capability.h).
//!
//! Owns: the name table used by `capability_bounding_set`,
//! `ambient_capabilities` and `condition_capability`. Must never: guess a
//! number for a name it does not know.

/// Every capability, by number.
pub const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of `CAP_NAME` (or `NAME`, any case).
pub fn number(name: &str) -> Option<u32> {
    let up = name.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    NAMES.iter().position(|n| *n == full).map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::number("CAP_NET_BIND_SERVICE"), Some(10));
        assert_eq!(super::number("sys_admin"), Some(21));
        assert_eq!(super::number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(super::number("CAP_NOPE"), None);
    }
}
