//! Validated unit specifications.
//!
//! Owns: the `UnitSpec` the rest of supd trusts, and `UnitSet`, an immutable,
//! fully validated collection of units (dependencies known, no cycles).
//! Must never: hold a partially valid set, or do I/O (loading lives in `load`,
//! parsing and per-file validation in `toml`).

pub mod caps;
pub mod exec;
pub mod listen;
pub mod load;
pub mod syscalls;
pub mod toml;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest duration a unit file may give (humantime's `10y`). Every
/// deadline is `now + duration`; bounding the input keeps that sum far
/// inside what a monotonic clock can represent (issue 13: a timeout of
/// "300000000000y" overflowed it). The engine adds durations with
/// saturation anyway, so this is the load-time half of a double guard.
pub const MAX_DURATION: Duration = Duration::from_secs(315_576_000);
/// How `MAX_DURATION` is written in messages and the README.
pub const MAX_DURATION_TEXT: &str = "10y";

/// Well-known ordering points, named after systemd's targets. A unit may
/// name them in `requires`, `wants` or `after` without a unit file of that
/// name: they are reached at once. A unit file of the same name (say a
/// oneshot `network-online` that waits for a default route) replaces the
/// built-in one and is then an ordinary dependency.
pub const BUILTIN_TARGETS: &[&str] = &[
    "network",
    "network-online",
    "network-pre",
    "local-fs",
    "remote-fs",
    "nss-lookup",
    "time-sync",
    "time-set",
    "multi-user",
];

/// Long-running service or run-to-completion task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    Longrun,
    Oneshot,
}

impl UnitKind {
    /// Runs until stopped (as opposed to a oneshot's run to completion).
    pub fn long_running(self) -> bool {
        self != UnitKind::Oneshot
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    /// systemd's `on-abnormal`: killed by a signal other than the clean
    /// ones (SIGHUP, SIGINT, SIGTERM, SIGPIPE), a start or watchdog
    /// timeout, or a failing health probe — not a non-zero exit code.
    OnAbnormal,
    /// systemd's `on-abort`: killed by a signal other than the clean ones.
    OnAbort,
    /// systemd's `on-watchdog`: the watchdog (or a health probe) failed.
    OnWatchdog,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLoss {
    Stop,
    Ignore,
}

/// How supd learns that a unit is ready for its dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadyKind {
    /// Ready as soon as the process exists (longrun default).
    Started,
    /// sd_notify `READY=1` on `$NOTIFY_SOCKET`.
    Notify,
    /// The first passing probe (`[readiness]` if present, else `[health]`).
    Probe,
    /// s6-style: the service writes a line to file descriptor `ready.fd`.
    Fd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Optional,
    Normal,
    Critical,
}

/// Where a service's stdout and stderr go (`output = ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// One pipe for both streams; supd logs each line with the unit's name.
    Capture,
    /// supd's own stdout/stderr (the console, or the container's log):
    /// cheapest, no per-unit descriptor in supd, lines are not tagged.
    Inherit,
    /// /dev/null.
    Null,
}

/// Who gets the stop signal (`[stop] kill_mode`, as systemd's KillMode).
/// Whatever the mode, every process of the unit is SIGKILLed at the stop
/// timeout: a unit is stopped only when all of its processes are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KillMode {
    /// Every process of the unit gets the stop signal.
    #[default]
    Group,
    /// Only the main process; the rest are left to it until the timeout.
    Main,
    /// The main process; once it has exited, SIGKILL to the rest.
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnhealthy {
    Restart,
    Stop,
    Report,
}

/// A filesystem that must be mounted (and match its checks) before the unit
/// may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountReq {
    /// Absolute, lexically normalised path (no trailing slash, no `.`/`..`).
    pub path: PathBuf,
    pub fstype: Option<String>,
    /// Mount source (device, `server:/export`, `tmpfs`...).
    pub source: Option<String>,
    /// Options that must be present; `rw` additionally means "not read-only".
    pub options: Vec<String>,
    pub on_loss: OnLoss,
    /// How long to wait for the mount before the unit becomes `failed`.
    pub timeout: Option<Duration>,
    /// What `path` was a symlink to when the unit was loaded (a host fact,
    /// for messages only; never used to decide): the check uses `path` as
    /// written, and the kernel lists the link's target as the mount point,
    /// so such a unit would wait forever for a "directory".
    pub symlink_to: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    Exec(Vec<String>),
    Tcp(String),
    /// Full URL: `http://host:port/path` or `http+unix:///path/to.sock:/url/path`.
    Http(String),
    Unix(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    pub target: ProbeTarget,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub on_unhealthy: OnUnhealthy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadySpec {
    pub kind: ReadyKind,
    /// Fail the start when the unit is not ready within this time.
    pub timeout: Option<Duration>,
    /// For `kind = "fd"`: the descriptor number the service writes to.
    pub fd: i32,
    /// sd_notify `WATCHDOG=1` must arrive at least this often once ready
    /// (`WATCHDOG_USEC` is set for the service); else it is unhealthy.
    pub watchdog: Option<Duration>,
    /// systemd's Type=notify-reload: `supctl reload-unit` answers only once
    /// the service sent `RELOADING=1` (with a `MONOTONIC_USEC=` not older
    /// than the request) and then `READY=1`, or fails after
    /// `timeout` (90 s without one).
    pub notify_reload: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    pub delay: Duration,
    pub max_delay: Duration,
    /// More than `burst` automatic starts within `interval` -> failed.
    pub burst: u32,
    pub interval: Duration,
    /// Backoff resets after the unit stayed up this long.
    pub reset_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopSpec {
    /// Signal number (e.g. `libc::SIGTERM`).
    pub signal: i32,
    /// `Duration::MAX` for `timeout = "infinity"`: never SIGKILL.
    pub timeout: Duration,
    /// A command that stops the service instead of the signal (run as the
    /// unit's user); SIGKILL to the group still follows after `timeout`.
    pub exec: Option<Vec<String>>,
    /// Further stop commands (`[stop] exec` as a list of commands, as
    /// several ExecStop=): run in order after `exec`, each once the one
    /// before exited 0; a failing one ends the sequence.
    pub exec_more: Vec<Vec<String>>,
    pub kill_mode: KillMode,
}

impl StopSpec {
    /// Stop command `i` (0 is `exec`).
    pub fn command(&self, i: usize) -> Option<&Vec<String>> {
        match i {
            0 => self.exec.as_ref(),
            _ => self.exec_more.get(i - 1),
        }
    }
}

/// A cgroup limit: a number, `max` (none), or a share of the host's
/// total (systemd's `TasksMax=99%`, `MemoryMax=50%`), resolved against
/// the host when written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgLimit {
    Max,
    Value(u64),
    /// Hundredths of a percent (9950 = 99.5%).
    Percent(u32),
}

impl CgLimit {
    /// The value to write, given the host's total for a percentage.
    pub fn resolve(self, total: Option<u64>) -> String {
        match self {
            CgLimit::Max => "max".into(),
            CgLimit::Value(v) => v.to_string(),
            CgLimit::Percent(p) => match total {
                Some(t) => (u128::from(t) * u128::from(p) / 10_000)
                    .clamp(1, u128::from(u64::MAX))
                    .to_string(),
                None => "max".into(),
            },
        }
    }
}

impl std::fmt::Display for CgLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CgLimit::Max => write!(f, "max"),
            CgLimit::Value(v) => write!(f, "{v}"),
            CgLimit::Percent(p) => write!(f, "{}.{:02}%", p / 100, p % 100),
        }
    }
}

/// `[resources] oom_policy`: what an OOM kill of one of the unit's
/// processes does (systemd's OOMPolicy=).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OomPolicy {
    /// Counted and reported; the unit goes on if its main process lives.
    #[default]
    Continue,
    /// The unit is stopped, as failed (then `[restart]` decides).
    Stop,
    /// The kernel kills the whole group at once (`memory.oom.group`).
    Kill,
}

/// `[resources] device_policy` (systemd's DevicePolicy=): which device
/// nodes the unit's processes may open, enforced by a cgroup device
/// program (BPF) on its group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DevicePolicy {
    /// Every device, unless `device_allow` lists some: then as `closed`.
    #[default]
    Auto,
    /// `device_allow` plus the standard pseudo devices (/dev/null, zero,
    /// full, random, urandom, tty, ptmx, the pty slaves).
    Closed,
    /// Only `device_allow`.
    Strict,
}

/// The device nodes a `device_allow` entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A device node (its type and numbers are read at each start).
    Path(PathBuf),
    /// Every character device of a driver in /proc/devices (`char-rtc`).
    Char(String),
    /// Every block device of a driver in /proc/devices (`block-loop`).
    Block(String),
}

/// One `device_allow` entry: devices and the access granted to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAllow {
    pub spec: DeviceSpec,
    pub read: bool,
    pub write: bool,
    pub mknod: bool,
}

/// `[resources]`: limits applied through the unit's cgroup (cgroup v2
/// file names in the comments).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// memory.max, bytes: above it the kernel OOM-kills in the group.
    pub memory_max: Option<CgLimit>,
    /// memory.high, bytes: above it the group is throttled and reclaimed.
    pub memory_high: Option<CgLimit>,
    /// cpu.weight, 1..=10000 (100 is everyone's default).
    pub cpu_weight: Option<u32>,
    /// cpu.max: quota per period in µs (None quota = max).
    pub cpu_max: Option<(Option<u64>, u64)>,
    /// pids.max.
    pub pids_max: Option<CgLimit>,
    /// io.weight, 1..=10000.
    pub io_weight: Option<u32>,
    pub oom_policy: OomPolicy,
    /// systemd's Delegate=yes: the unit's group is chowned to its user,
    /// which may make its own sub-groups (container runtimes do).
    pub delegate: bool,
    pub device_policy: DevicePolicy,
    pub device_allow: Vec<DeviceAllow>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    /// Is device access restricted (a device program to attach)?
    pub fn restricts_devices(&self) -> bool {
        self.device_policy != DevicePolicy::Auto || !self.device_allow.is_empty()
    }
}

/// Resource limits applied before exec (setrlimit; soft = hard).
/// `RLIM_INFINITY` (`"infinity"` in the unit file); for `nofile` the
/// kernel's `fs.nr_open` at spawn time, as systemd does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub nofile: Option<u64>,
    pub nproc: Option<u64>,
    pub core: Option<u64>,
    pub memlock: Option<u64>,
    /// CPU seconds.
    pub cpu: Option<u64>,
    pub fsize: Option<u64>,
    pub data: Option<u64>,
    pub stack: Option<u64>,
    pub rss: Option<u64>,
    pub address_space: Option<u64>,
    pub locks: Option<u64>,
    pub sigpending: Option<u64>,
    pub msgqueue: Option<u64>,
    /// As the kernel's RLIMIT_NICE: 0..=40 (20 - nice).
    pub nice: Option<u64>,
    pub rtprio: Option<u64>,
    /// Microseconds of real-time CPU without a blocking call.
    pub rttime: Option<u64>,
}

impl Limits {
    /// The value meaning "no limit".
    pub const INFINITY: u64 = u64::MAX;

    /// Every limit with its key in `limits = { ... }` and its resource.
    pub fn all(&self) -> [(&'static str, libc::c_int, Option<u64>); 16] {
        [
            ("nofile", libc::RLIMIT_NOFILE as libc::c_int, self.nofile),
            ("nproc", libc::RLIMIT_NPROC as libc::c_int, self.nproc),
            ("core", libc::RLIMIT_CORE as libc::c_int, self.core),
            ("memlock", libc::RLIMIT_MEMLOCK as libc::c_int, self.memlock),
            ("cpu", libc::RLIMIT_CPU as libc::c_int, self.cpu),
            ("fsize", libc::RLIMIT_FSIZE as libc::c_int, self.fsize),
            ("data", libc::RLIMIT_DATA as libc::c_int, self.data),
            ("stack", libc::RLIMIT_STACK as libc::c_int, self.stack),
            ("rss", libc::RLIMIT_RSS as libc::c_int, self.rss),
            ("as", libc::RLIMIT_AS as libc::c_int, self.address_space),
            ("locks", libc::RLIMIT_LOCKS as libc::c_int, self.locks),
            (
                "sigpending",
                libc::RLIMIT_SIGPENDING as libc::c_int,
                self.sigpending,
            ),
            (
                "msgqueue",
                libc::RLIMIT_MSGQUEUE as libc::c_int,
                self.msgqueue,
            ),
            ("nice", libc::RLIMIT_NICE as libc::c_int, self.nice),
            ("rtprio", libc::RLIMIT_RTPRIO as libc::c_int, self.rtprio),
            ("rttime", libc::RLIMIT_RTTIME as libc::c_int, self.rttime),
        ]
    }
}

/// A helper command (`exec_start_pre`, `exec_start_post`,
/// `exec_stop_post`, `reload_exec`): its argv and systemd's prefixes,
/// written before the program (`"-/usr/bin/x"`, `"+/usr/bin/x"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperCmd {
    pub argv: Vec<String>,
    /// `-`: a failing exit is logged, not a failure.
    pub ignore_failure: bool,
    /// `+`: runs as root, ignoring `user`, `group` and sandboxing.
    pub privileged: bool,
}

/// A file a service's stdout or stderr is written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    pub path: PathBuf,
    pub mode: OutputFileMode,
}

/// How an output file is opened (created if missing, mode 0644).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFileMode {
    /// `file:`: written from its start, not truncated.
    Write,
    /// `append:`: every write at its end.
    Append,
    /// `truncate:`: emptied at each start.
    Truncate,
}

impl OutputFile {
    /// `"append:/var/log/x.log"` (also `file:`, `truncate:`).
    pub fn parse(s: &str) -> Option<OutputFile> {
        let (mode, path) = s.split_once(':')?;
        let mode = match mode {
            "file" => OutputFileMode::Write,
            "append" => OutputFileMode::Append,
            "truncate" => OutputFileMode::Truncate,
            _ => return None,
        };
        let path = PathBuf::from(path);
        (path.is_absolute() && !path.as_os_str().as_encoded_bytes().contains(&0))
            .then_some(OutputFile { path, mode })
    }
}

/// A scheduling policy and its static priority (systemd's
/// CPUSchedulingPolicy=, CPUSchedulingPriority=, CPUSchedulingResetOnFork=).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuScheduling {
    /// `SCHED_OTHER`, `SCHED_BATCH`, `SCHED_IDLE`, `SCHED_FIFO`, `SCHED_RR`.
    pub policy: i32,
    /// 1..=99 for `fifo`/`rr`, 0 otherwise.
    pub priority: i32,
    /// `SCHED_RESET_ON_FORK`: children do not inherit a real-time policy.
    pub reset_on_fork: bool,
}

impl CpuScheduling {
    /// The unit-file word for a policy, and back.
    pub const POLICIES: [(&'static str, i32); 5] = [
        ("other", libc::SCHED_OTHER),
        ("batch", libc::SCHED_BATCH),
        ("idle", libc::SCHED_IDLE),
        ("fifo", libc::SCHED_FIFO),
        ("rr", libc::SCHED_RR),
    ];
}

/// An exit status named in `success_exit_status` or
/// `restart_prevent_exit_status`: a code, or a signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitMatch {
    Code(i32),
    Signal(i32),
}

/// `env_file`: systemd EnvironmentFile syntax; `-` before the path makes
/// a missing file fine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile {
    pub path: PathBuf,
    pub optional: bool,
}

/// What a condition (`condition_*`) or assertion (`assert_*`) checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondKind {
    PathExists,
    PathExistsGlob,
    PathIsDirectory,
    PathIsSymbolicLink,
    PathIsMountPoint,
    PathIsReadWrite,
    DirectoryNotEmpty,
    FileNotEmpty,
    FileIsExecutable,
    /// `yes`/`no`, `vm`, `container`, or a technology name.
    Virtualization,
    /// A word (or `word=value`) on the kernel command line.
    KernelCommandLine,
    /// A capability in supd's bounding set.
    Capability,
    /// `yes`/`no`: on mains power.
    ACPower,
    /// An environment assignment (`NAME` or `NAME=value`) in supd's own
    /// environment.
    Environment,
    /// The CPUs supd may run on (its affinity mask), compared: `">1"`,
    /// `"<=4"`, `"=2"`, `"!=1"`, `">=2"`, `"<8"` (a bare number is `=`).
    Cpus,
}

/// `">1"`-style comparisons (ConditionCPUs=): does `have` satisfy `spec`?
/// None when `spec` is not a comparison with a number.
pub fn compare_count(spec: &str, have: u64) -> Option<bool> {
    let s = spec.trim();
    let (op, num) = ["<=", ">=", "!=", "<", ">", "="]
        .iter()
        .find_map(|op| s.strip_prefix(op).map(|n| (*op, n)))
        .unwrap_or(("=", s));
    let n: u64 = num.trim().parse().ok()?;
    Some(match op {
        "<=" => have <= n,
        ">=" => have >= n,
        "!=" => have != n,
        "<" => have < n,
        ">" => have > n,
        _ => have == n,
    })
}

impl CondKind {
    /// The unit-file key suffix (`path_exists` in `condition_path_exists`).
    pub fn key(self) -> &'static str {
        match self {
            CondKind::PathExists => "path_exists",
            CondKind::PathExistsGlob => "path_exists_glob",
            CondKind::PathIsDirectory => "path_is_directory",
            CondKind::PathIsSymbolicLink => "path_is_symbolic_link",
            CondKind::PathIsMountPoint => "path_is_mount_point",
            CondKind::PathIsReadWrite => "path_is_read_write",
            CondKind::DirectoryNotEmpty => "directory_not_empty",
            CondKind::FileNotEmpty => "file_not_empty",
            CondKind::FileIsExecutable => "file_is_executable",
            CondKind::Virtualization => "virtualization",
            CondKind::KernelCommandLine => "kernel_command_line",
            CondKind::Capability => "capability",
            CondKind::ACPower => "ac_power",
            CondKind::Environment => "environment",
            CondKind::Cpus => "cpus",
        }
    }

    pub const ALL: &'static [CondKind] = &[
        CondKind::PathExists,
        CondKind::PathExistsGlob,
        CondKind::PathIsDirectory,
        CondKind::PathIsSymbolicLink,
        CondKind::PathIsMountPoint,
        CondKind::PathIsReadWrite,
        CondKind::DirectoryNotEmpty,
        CondKind::FileNotEmpty,
        CondKind::FileIsExecutable,
        CondKind::Virtualization,
        CondKind::KernelCommandLine,
        CondKind::Capability,
        CondKind::ACPower,
        CondKind::Environment,
        CondKind::Cpus,
    ];
}

/// One condition: checked right before each start. A failing condition
/// makes the unit `skipped` (not failed; its dependents start as if it
/// had completed); a failing assertion makes the start fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: CondKind,
    /// The path or word (without the `!`).
    pub arg: String,
    /// Written with a leading `!`: holds when the check does not.
    pub negate: bool,
    /// `assert_*` rather than `condition_*`.
    pub assert: bool,
    /// Written with a leading `|`: a triggering condition — when a unit
    /// has any, at least one of them must hold (the others all must).
    pub trigger: bool,
}

/// Modes of the directories supd creates for a unit (octal, e.g. 0o755).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryModes {
    pub runtime: u32,
    pub state: u32,
    pub cache: u32,
    pub logs: u32,
    pub configuration: u32,
}

impl Default for DirectoryModes {
    fn default() -> Self {
        DirectoryModes {
            runtime: 0o755,
            state: 0o755,
            cache: 0o755,
            logs: 0o755,
            configuration: 0o755,
        }
    }
}

/// `[sandbox] protect_system`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtectSystem {
    #[default]
    No,
    /// /usr, /boot, /efi read-only.
    Yes,
    /// ...and /etc.
    Full,
    /// Everything read-only but /dev, /proc, /sys, the unit's own
    /// directories and `read_write_paths`.
    Strict,
}

/// `[sandbox] protect_home`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtectHome {
    #[default]
    No,
    /// /home, /root and /run/user empty and inaccessible.
    Yes,
    ReadOnly,
    /// An empty tmpfs on each.
    Tmpfs,
}

/// A path for `read_write_paths` and friends: `-` before it makes a
/// missing path fine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPath {
    pub path: PathBuf,
    pub optional: bool,
}

/// `[sandbox]`: what a unit's processes may see and do, set up in a mount
/// namespace of their own (and prctl) right before exec. The default
/// restricts nothing and creates no namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sandbox {
    pub no_new_privileges: bool,
    /// Capabilities kept in the bounding set (all others dropped); None
    /// keeps the set as it is.
    pub capability_bounding_set: Option<u64>,
    /// Capabilities raised in the ambient set (for a non-root `user`).
    pub ambient_capabilities: u64,
    pub private_tmp: bool,
    pub protect_system: ProtectSystem,
    pub protect_home: ProtectHome,
    pub read_write_paths: Vec<SandboxPath>,
    pub read_only_paths: Vec<SandboxPath>,
    pub inaccessible_paths: Vec<SandboxPath>,
    /// A /dev with only null, zero, full, random, urandom, tty, pts, shm.
    pub private_devices: bool,
    pub protect_kernel_tunables: bool,
    pub protect_kernel_modules: bool,
    pub protect_kernel_logs: bool,
    pub protect_control_groups: bool,
    pub protect_clock: bool,
    /// A UTS namespace of its own: hostname changes stay inside.
    pub protect_hostname: bool,
    /// A network namespace with only loopback.
    pub private_network: bool,
    /// An IPC namespace of its own.
    pub private_ipc: bool,
    /// A /proc of its own with `hidepid=` this value (`invisible`,
    /// `noaccess`, `ptraceable`).
    pub protect_proc: Option<String>,
    /// `subset=pid` on that /proc.
    pub proc_subset_pid: bool,
    /// Mounted noexec (recursively), except `exec_paths`.
    pub no_exec_paths: Vec<SandboxPath>,
    pub exec_paths: Vec<SandboxPath>,
    /// `system_call_filter`, resolved.
    pub system_call_filter: Option<syscalls::SyscallFilter>,
    /// What a call the filter denies gets (default: SIGSYS kill).
    pub system_call_error_number: Option<syscalls::Deny>,
    /// `system_call_architectures = ["native"]`.
    pub native_only: bool,
    pub lock_personality: bool,
    pub memory_deny_write_execute: bool,
    pub restrict_realtime: bool,
    pub restrict_suid_sgid: bool,
    /// Forbidden namespace types, as clone flags (0: none forbidden).
    pub restrict_namespaces: u64,
    pub restrict_address_families: Option<syscalls::Families>,
    /// A user namespace mapping only root and the unit's user and group.
    pub private_users: bool,
    /// `secure_bits`, as the prctl(PR_SET_SECUREBITS) value.
    pub secure_bits: Option<u32>,
    /// `bind_paths` / `bind_read_only_paths`.
    pub bind_paths: Vec<BindPath>,
    /// Remove the IPC objects of the unit's (non-root) user and group
    /// when its last run of that user ends.
    pub remove_ipc: bool,
}

/// `bind_paths = ["SRC:DST"]`: SRC bound onto DST (`-` first: a missing
/// SRC is fine; DST defaults to SRC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindPath {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
    pub optional: bool,
    /// `:norbind`: only the one mount, not those under it.
    pub recursive: bool,
}

impl Sandbox {
    /// Does it need a mount namespace?
    pub fn needs_mounts(&self) -> bool {
        self.private_tmp
            || self.protect_system != ProtectSystem::No
            || self.protect_home != ProtectHome::No
            || !self.read_write_paths.is_empty()
            || !self.read_only_paths.is_empty()
            || !self.inaccessible_paths.is_empty()
            || self.private_devices
            || self.protect_kernel_tunables
            || self.protect_kernel_modules
            || self.protect_kernel_logs
            || self.protect_control_groups
            || self.protect_proc.is_some()
            || self.proc_subset_pid
            || !self.no_exec_paths.is_empty()
            || !self.bind_paths.is_empty()
    }

    /// Does it need a seccomp filter?
    pub fn needs_seccomp(&self) -> bool {
        self.system_call_filter.is_some()
            || self.native_only
            || self.lock_personality
            || self.memory_deny_write_execute
            || self.restrict_realtime
            || self.restrict_suid_sgid
            || self.restrict_namespaces != 0
            || self.restrict_address_families.is_some()
            || self.protect_clock
    }

    pub fn is_empty(&self) -> bool {
        *self == Sandbox::default()
    }
}

/// One validated unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec {
    /// File stem, validated: `[A-Za-z0-9_.@-]+`, at most 64 bytes.
    pub name: String,
    /// The file it came from, for error messages.
    pub file: PathBuf,
    pub description: Option<String>,
    pub kind: UnitKind,
    /// argv, non-empty, no shell.
    pub exec: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub working_directory: Option<PathBuf>,
    /// Directories created under /run before each start, owned by the
    /// unit's user (like systemd's RuntimeDirectory).
    pub runtime_directory: Vec<String>,
    /// File-creation mask for the service (e.g. 0o027).
    pub umask: Option<u32>,
    pub limits: Limits,
    /// Signal for `supctl reload-unit` (default SIGHUP).
    pub reload_signal: i32,
    pub essential: bool,
    /// Must be ready first; if it stops, this unit stops first.
    pub requires: Vec<String>,
    /// Soft: ordering like `after`, no stop propagation, failure does not block.
    pub wants: Vec<String>,
    /// Ordering only.
    pub after: Vec<String>,
    pub mounts: Vec<MountReq>,
    pub ready: ReadySpec,
    /// Liveness: failing -> `on_unhealthy` (restart by default).
    pub health: Option<HealthSpec>,
    /// Readiness: failing after ready -> not ready (dependents not yet
    /// started wait); nothing is restarted.
    pub readiness: Option<HealthSpec>,
    pub restart: RestartSpec,
    pub stop: StopSpec,
    pub priority: Priority,
    /// A `normal` unit that pressure-aware shedding (`[shed]` in
    /// supd.toml) may stop after the optional ones (`sheddable = true`).
    pub sheddable: bool,
    pub output: Output,
    pub resources: Resources,
    /// How much captured output to keep (`log_max_size`, `log_max_files`);
    /// unset values come from supd.toml, then the built-in defaults.
    pub log: LogSpec,
    /// Run in order before `exec_start_pre` (systemd's ExecCondition=):
    /// exit 1..=254 makes the unit `skipped`, as a failed `condition_*`;
    /// 255 or a signal fails the start.
    pub exec_condition: Vec<HelperCmd>,
    /// systemd's `ExecStart=-…`: however the main process ends, it counts
    /// as a success (logged, never a failure or a failure-restart).
    pub exec_ignore_failure: bool,
    /// `cpu_scheduling_policy`/`_priority`/`_reset_on_fork`, set in the
    /// child before exec (sched_setscheduler).
    pub cpu_scheduling: Option<CpuScheduling>,
    /// `stdout_file`, `stderr_file` (systemd's StandardOutput=/
    /// StandardError= `file:`, `append:`, `truncate:`): the stream goes to
    /// this file, opened by supd (as root) before each start, instead of
    /// `output`.
    pub stdout_file: Option<OutputFile>,
    pub stderr_file: Option<OutputFile>,
    /// Run in order before the main process; a failure fails the start.
    pub exec_start_pre: Vec<HelperCmd>,
    /// Run in order once the main process is started.
    pub exec_start_post: Vec<HelperCmd>,
    /// Run in order after the main process has exited, whatever the cause.
    pub exec_stop_post: Vec<HelperCmd>,
    /// `supctl reload-unit` runs these (with `$MAINPID`) instead of sending
    /// `reload_signal`.
    pub reload_exec: Vec<HelperCmd>,
    /// Read before each start; later files and `env` win.
    pub env_file: Vec<EnvFile>,
    /// A longrun whose main process exits successfully stays up (like a
    /// completed oneshot) instead of becoming `exited`.
    pub remain_after_exit: bool,
    /// Exit statuses that count as success besides 0.
    pub success_exit_status: Vec<ExitMatch>,
    /// Exit statuses after which the restart policy does not restart.
    pub restart_prevent_exit_status: Vec<ExitMatch>,
    /// Created (and chowned to `user`) under /var/lib, /var/cache,
    /// /var/log and /etc before each start.
    pub state_directory: Vec<String>,
    pub cache_directory: Vec<String>,
    pub logs_directory: Vec<String>,
    pub configuration_directory: Vec<String>,
    pub directory_modes: DirectoryModes,
    /// Scheduling priority (-20..19).
    pub nice: Option<i32>,
    /// /proc/self/oom_score_adj (-1000..1000).
    pub oom_score_adjust: Option<i32>,
    /// Extra groups, added to the user's.
    pub supplementary_groups: Vec<String>,
    pub conditions: Vec<Condition>,
    /// systemd's PartOf=: stopped (and kept down) while one of these is
    /// stopped by an operator or locked; restarted with it.
    pub part_of: Vec<String>,
    /// `supctl reload-unit` of one of these reloads this unit too.
    pub reload_propagated_from: Vec<String>,
    /// systemd's OnFailure=: started again when this unit enters `failed`
    /// (unless locked or stopped by an operator).
    pub on_failure: Vec<String>,
    /// `type = "forking"`: `exec` daemonizes; its exit 0 starts the
    /// service, whose main process is then found (`pid_file`, or the
    /// unit's cgroup).
    pub forking: bool,
    /// `type = "forking"`: the main process is the pid written to this
    /// file once the command exited 0. Without it, the main process is
    /// guessed from the unit's cgroup (which needs containment).
    pub pid_file: Option<PathBuf>,
    pub sandbox: Sandbox,
    /// `[[listen]]`: sockets supd binds and passes as fds 3.. (socket
    /// activation).
    pub listen: Vec<listen::ListenSpec>,
    /// `stdin = "socket"`: fd 0 is the (one) `[[listen]]` socket too, as
    /// systemd's `StandardInput=socket` with `Accept=no`.
    pub stdin_socket: bool,
}

/// Per-unit log limits from the unit file; None = supd.toml's / default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogSpec {
    pub max_size: Option<u64>,
    pub max_files: Option<u32>,
}

impl LogSpec {
    /// Defaults: 4 files of 1 MiB never fill a small appliance disk.
    pub const DEFAULT_MAX_SIZE: u64 = 1 << 20;
    pub const DEFAULT_MAX_FILES: u32 = 4;
    /// Bounds (a record is at most ~4 KiB, so a file holds a few).
    pub const MIN_MAX_SIZE: u64 = 16 * 1024;
    pub const MAX_MAX_SIZE: u64 = 1 << 30;
    pub const MAX_MAX_FILES: u32 = 1000;

    /// This unit's value where set, else `global`'s, else the default.
    pub fn resolve(self, global: LogSpec) -> (u64, u32) {
        (
            self.max_size
                .or(global.max_size)
                .unwrap_or(Self::DEFAULT_MAX_SIZE),
            self.max_files
                .or(global.max_files)
                .unwrap_or(Self::DEFAULT_MAX_FILES),
        )
    }
}

impl UnitSpec {
    /// Does `status` count as a successful exit?
    pub fn exit_ok(&self, status: ExitStatusView) -> bool {
        if self.exec_ignore_failure {
            return true;
        }
        match status {
            ExitStatusView::Code(0) => true,
            ExitStatusView::Code(c) => self.success_exit_status.contains(&ExitMatch::Code(c)),
            ExitStatusView::Signal(s) => self.success_exit_status.contains(&ExitMatch::Signal(s)),
        }
    }

    /// Does `status` forbid an automatic restart?
    pub fn restart_prevented(&self, status: ExitStatusView) -> bool {
        let m = match status {
            ExitStatusView::Code(c) => ExitMatch::Code(c),
            ExitStatusView::Signal(s) => ExitMatch::Signal(s),
        };
        self.restart_prevent_exit_status.contains(&m)
    }

    /// A minimal spec, used by tests and the simulation.
    pub fn simple(name: &str, kind: UnitKind, exec: &[&str]) -> UnitSpec {
        UnitSpec {
            name: name.to_string(),
            file: PathBuf::from(format!("{name}.toml")),
            description: None,
            kind,
            exec: exec.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            user: None,
            group: None,
            working_directory: None,
            runtime_directory: vec![],
            umask: None,
            limits: Limits::default(),
            reload_signal: libc::SIGHUP,
            essential: false,
            requires: vec![],
            wants: vec![],
            after: vec![],
            mounts: vec![],
            ready: ReadySpec {
                kind: ReadyKind::Started,
                timeout: None,
                fd: 3,
                watchdog: None,
                notify_reload: false,
            },
            health: None,
            readiness: None,
            restart: RestartSpec {
                policy: match kind {
                    UnitKind::Longrun => RestartPolicy::OnFailure,
                    UnitKind::Oneshot => RestartPolicy::Never,
                },
                delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(60),
                burst: 5,
                interval: Duration::from_secs(300),
                reset_after: Duration::from_secs(60),
            },
            stop: StopSpec {
                signal: libc::SIGTERM,
                timeout: Duration::from_secs(10),
                exec: None,
                exec_more: vec![],
                kill_mode: KillMode::Group,
            },
            priority: Priority::Normal,
            sheddable: false,
            output: Output::Capture,
            resources: Resources::default(),
            log: LogSpec::default(),
            exec_condition: vec![],
            exec_ignore_failure: false,
            cpu_scheduling: None,
            stdout_file: None,
            stderr_file: None,
            exec_start_pre: vec![],
            exec_start_post: vec![],
            exec_stop_post: vec![],
            reload_exec: vec![],
            env_file: vec![],
            remain_after_exit: false,
            success_exit_status: vec![],
            restart_prevent_exit_status: vec![],
            state_directory: vec![],
            cache_directory: vec![],
            logs_directory: vec![],
            configuration_directory: vec![],
            directory_modes: DirectoryModes::default(),
            nice: None,
            oom_score_adjust: None,
            supplementary_groups: vec![],
            conditions: vec![],
            on_failure: vec![],
            part_of: vec![],
            reload_propagated_from: vec![],
            forking: false,
            pid_file: None,
            sandbox: Sandbox::default(),
            listen: vec![],
            stdin_socket: false,
        }
    }
}

/// An exit status as the unit spec sees it (the engine's `ExitStatus`
/// without the core flag), so `unit` does not depend on `engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatusView {
    Code(i32),
    Signal(i32),
}

/// An immutable, fully validated set: every dependency exists, no cycles.
/// `order` is a topological order (dependencies before dependents).
#[derive(Debug, Clone, Default)]
pub struct UnitSet {
    pub units: BTreeMap<String, Arc<UnitSpec>>,
    /// Names in start order: every unit comes after everything it
    /// requires/wants/is after.
    pub order: Vec<String>,
}

impl UnitSet {
    /// Build from specs, validating references and cycles (see `crate::graph`).
    pub fn new(specs: Vec<UnitSpec>) -> Result<UnitSet, Vec<crate::error::UnitError>> {
        crate::graph::build(specs)
    }
}
