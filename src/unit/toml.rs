//! Parsing one unit file: raw serde structs → validated `UnitSpec`.
//!
//! Owns: the unit-file keys (the interface users write), their defaults,
//! and every per-file check, each error carrying file:line:column and a
//! hint. Unknown keys are errors (`deny_unknown_fields`), never ignored;
//! unknown words for enums are errors, never defaulted. Must never: do I/O,
//! or return a spec that the engine would have to re-check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::UnitError;
use crate::unit::{
    HealthSpec, KillMode, MountReq, OnLoss, OnUnhealthy, Output, Priority, ProbeTarget, ReadyKind,
    ReadySpec, RestartPolicy, RestartSpec, StopSpec, UnitKind, UnitSpec,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnit {
    description: Option<String>,
    #[serde(rename = "type")]
    kind: Option<Spanned<RawKind>>,
    exec: Option<Spanned<Vec<String>>>,
    env: Option<Spanned<BTreeMap<String, String>>>,
    user: Option<String>,
    group: Option<String>,
    working_directory: Option<Spanned<String>>,
    runtime_directory: Option<Vec<Spanned<String>>>,
    umask: Option<Spanned<String>>,
    limits: Option<RawLimits>,
    reload_signal: Option<Spanned<String>>,
    essential: Option<bool>,
    priority: Option<Priority>,
    sheddable: Option<bool>,
    output: Option<Output>,
    log_max_size: Option<Spanned<RawSize>>,
    log_max_files: Option<Spanned<u32>>,
    requires: Option<Vec<Spanned<String>>>,
    wants: Option<Vec<Spanned<String>>>,
    after: Option<Vec<Spanned<String>>>,
    mount: Option<Vec<Spanned<RawMount>>>,
    listen: Option<Vec<Spanned<crate::unit::listen::RawListen>>>,
    stdin: Option<Spanned<String>>,
    ready: Option<Spanned<RawReady>>,
    health: Option<Spanned<RawHealth>>,
    readiness: Option<Spanned<RawHealth>>,
    restart: Option<Spanned<RawRestart>>,
    stop: Option<Spanned<RawStop>>,
    resources: Option<RawResources>,
    // Keys for units imported from systemd (see `extras`).
    exec_condition: Option<Spanned<Commands>>,
    exec_ignore_failure: Option<bool>,
    cpu_scheduling_policy: Option<Spanned<String>>,
    cpu_scheduling_priority: Option<Spanned<i32>>,
    cpu_scheduling_reset_on_fork: Option<Spanned<bool>>,
    stdout_file: Option<Spanned<String>>,
    stderr_file: Option<Spanned<String>>,
    exec_start_pre: Option<Spanned<Commands>>,
    exec_start_post: Option<Spanned<Commands>>,
    exec_stop_post: Option<Spanned<Commands>>,
    reload_exec: Option<Spanned<Commands>>,
    env_file: Option<OneOrMany>,
    remain_after_exit: Option<bool>,
    success_exit_status: Option<Vec<Spanned<CodeOrName>>>,
    restart_prevent_exit_status: Option<Vec<Spanned<CodeOrName>>>,
    state_directory: Option<Vec<Spanned<String>>>,
    cache_directory: Option<Vec<Spanned<String>>>,
    logs_directory: Option<Vec<Spanned<String>>>,
    configuration_directory: Option<Vec<Spanned<String>>>,
    runtime_directory_mode: Option<Spanned<String>>,
    state_directory_mode: Option<Spanned<String>>,
    cache_directory_mode: Option<Spanned<String>>,
    logs_directory_mode: Option<Spanned<String>>,
    configuration_directory_mode: Option<Spanned<String>>,
    nice: Option<Spanned<i32>>,
    oom_score_adjust: Option<Spanned<i32>>,
    supplementary_groups: Option<Vec<String>>,
    pid_file: Option<Spanned<String>>,
    sandbox: Option<Spanned<RawSandbox>>,
    part_of: Option<Vec<Spanned<String>>>,
    on_failure: Option<Vec<Spanned<String>>>,
    reload_propagated_from: Option<Vec<Spanned<String>>>,
    condition_path_exists: Option<OneOrMany>,
    assert_path_exists: Option<OneOrMany>,
    condition_path_exists_glob: Option<OneOrMany>,
    assert_path_exists_glob: Option<OneOrMany>,
    condition_path_is_directory: Option<OneOrMany>,
    assert_path_is_directory: Option<OneOrMany>,
    condition_path_is_symbolic_link: Option<OneOrMany>,
    assert_path_is_symbolic_link: Option<OneOrMany>,
    condition_path_is_mount_point: Option<OneOrMany>,
    assert_path_is_mount_point: Option<OneOrMany>,
    condition_path_is_read_write: Option<OneOrMany>,
    assert_path_is_read_write: Option<OneOrMany>,
    condition_directory_not_empty: Option<OneOrMany>,
    assert_directory_not_empty: Option<OneOrMany>,
    condition_file_not_empty: Option<OneOrMany>,
    assert_file_not_empty: Option<OneOrMany>,
    condition_file_is_executable: Option<OneOrMany>,
    assert_file_is_executable: Option<OneOrMany>,
    condition_virtualization: Option<OneOrMany>,
    assert_virtualization: Option<OneOrMany>,
    condition_kernel_command_line: Option<OneOrMany>,
    assert_kernel_command_line: Option<OneOrMany>,
    condition_capability: Option<OneOrMany>,
    assert_capability: Option<OneOrMany>,
    condition_ac_power: Option<OneOrMany>,
    condition_cpus: Option<OneOrMany>,
    assert_cpus: Option<OneOrMany>,
    assert_ac_power: Option<OneOrMany>,
    condition_environment: Option<OneOrMany>,
    assert_environment: Option<OneOrMany>,
}

impl RawUnit {
    /// Every `condition_*`/`assert_*` key that is set, with its kind.
    fn condition_keys(&self) -> Vec<(crate::unit::CondKind, bool, &OneOrMany)> {
        use crate::unit::CondKind as K;
        let all: [(K, &Option<OneOrMany>, &Option<OneOrMany>); 15] = [
            (
                K::PathExists,
                &self.condition_path_exists,
                &self.assert_path_exists,
            ),
            (
                K::PathExistsGlob,
                &self.condition_path_exists_glob,
                &self.assert_path_exists_glob,
            ),
            (
                K::PathIsDirectory,
                &self.condition_path_is_directory,
                &self.assert_path_is_directory,
            ),
            (
                K::PathIsSymbolicLink,
                &self.condition_path_is_symbolic_link,
                &self.assert_path_is_symbolic_link,
            ),
            (
                K::PathIsMountPoint,
                &self.condition_path_is_mount_point,
                &self.assert_path_is_mount_point,
            ),
            (
                K::PathIsReadWrite,
                &self.condition_path_is_read_write,
                &self.assert_path_is_read_write,
            ),
            (
                K::DirectoryNotEmpty,
                &self.condition_directory_not_empty,
                &self.assert_directory_not_empty,
            ),
            (
                K::FileNotEmpty,
                &self.condition_file_not_empty,
                &self.assert_file_not_empty,
            ),
            (
                K::FileIsExecutable,
                &self.condition_file_is_executable,
                &self.assert_file_is_executable,
            ),
            (
                K::Virtualization,
                &self.condition_virtualization,
                &self.assert_virtualization,
            ),
            (
                K::KernelCommandLine,
                &self.condition_kernel_command_line,
                &self.assert_kernel_command_line,
            ),
            (
                K::Capability,
                &self.condition_capability,
                &self.assert_capability,
            ),
            (K::ACPower, &self.condition_ac_power, &self.assert_ac_power),
            (K::Cpus, &self.condition_cpus, &self.assert_cpus),
            (
                K::Environment,
                &self.condition_environment,
                &self.assert_environment,
            ),
        ];
        let mut out = Vec::new();
        for (k, c, a) in all {
            if let Some(v) = c {
                out.push((k, false, v));
            }
            if let Some(v) = a {
                out.push((k, true, v));
            }
        }
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    memory_max: Option<Spanned<toml::Value>>,
    memory_high: Option<Spanned<toml::Value>>,
    cpu_weight: Option<Spanned<i64>>,
    cpu_max: Option<Spanned<String>>,
    pids_max: Option<Spanned<toml::Value>>,
    io_weight: Option<Spanned<i64>>,
    oom_policy: Option<Spanned<String>>,
    delegate: Option<bool>,
    device_policy: Option<Spanned<String>>,
    device_allow: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    no_new_privileges: Option<bool>,
    capability_bounding_set: Option<Vec<Spanned<String>>>,
    ambient_capabilities: Option<Vec<Spanned<String>>>,
    private_tmp: Option<bool>,
    protect_system: Option<Spanned<BoolOrWord>>,
    protect_home: Option<Spanned<BoolOrWord>>,
    read_write_paths: Option<Vec<Spanned<String>>>,
    read_only_paths: Option<Vec<Spanned<String>>>,
    inaccessible_paths: Option<Vec<Spanned<String>>>,
    private_devices: Option<bool>,
    protect_kernel_tunables: Option<bool>,
    protect_kernel_modules: Option<bool>,
    protect_kernel_logs: Option<bool>,
    protect_control_groups: Option<bool>,
    protect_clock: Option<bool>,
    protect_hostname: Option<bool>,
    private_network: Option<bool>,
    private_ipc: Option<bool>,
    protect_proc: Option<Spanned<String>>,
    proc_subset: Option<Spanned<String>>,
    no_exec_paths: Option<Vec<Spanned<String>>>,
    exec_paths: Option<Vec<Spanned<String>>>,
    system_call_filter: Option<Vec<Spanned<String>>>,
    system_call_error_number: Option<Spanned<String>>,
    system_call_architectures: Option<Vec<Spanned<String>>>,
    lock_personality: Option<bool>,
    memory_deny_write_execute: Option<bool>,
    restrict_realtime: Option<bool>,
    restrict_suid_sgid: Option<bool>,
    restrict_namespaces: Option<Spanned<BoolOrList>>,
    restrict_address_families: Option<Spanned<Vec<String>>>,
    private_users: Option<bool>,
    remove_ipc: Option<bool>,
    secure_bits: Option<Spanned<Vec<String>>>,
    bind_paths: Option<Vec<Spanned<String>>>,
    bind_read_only_paths: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum BoolOrList {
    Bool(bool),
    List(Vec<String>),
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum BoolOrWord {
    Bool(bool),
    Word(String),
}

/// `type`: a forking service is a longrun whose main process is read
/// from `pid_file` once its command has exited 0.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Longrun,
    Oneshot,
    Forking,
}

/// One command (`["/bin/x", "a"]`) or several (`[["/bin/x"], ["/bin/y"]]`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Commands {
    One(Vec<String>),
    Many(Vec<Vec<String>>),
}

/// A string or a list of strings (spanned as a whole: an untagged enum
/// cannot carry spans inside).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrManyInner {
    One(String),
    Many(Vec<String>),
}

type OneOrMany = Spanned<OneOrManyInner>;

/// Each item with the span of the whole value.
fn items(v: &OneOrMany) -> Vec<Spanned<String>> {
    let span = v.span();
    match v.get_ref() {
        OneOrManyInner::One(s) => vec![Spanned::new(span, s.clone())],
        OneOrManyInner::Many(l) => l
            .iter()
            .map(|s| Spanned::new(span.clone(), s.clone()))
            .collect(),
    }
}

/// An exit code or a signal name.
#[derive(Deserialize)]
#[serde(untagged)]
enum CodeOrName {
    Code(i64),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMount {
    path: Spanned<String>,
    fstype: Option<String>,
    source: Option<String>,
    options: Option<Vec<String>>,
    on_loss: Option<OnLoss>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReady {
    kind: Option<Spanned<ReadyKind>>,
    timeout: Option<Spanned<String>>,
    fd: Option<Spanned<i32>>,
    watchdog: Option<Spanned<String>>,
    notify_reload: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    exec: Option<Vec<String>>,
    tcp: Option<String>,
    http: Option<String>,
    unix: Option<String>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    start_period: Option<Spanned<String>>,
    failure_threshold: Option<Spanned<u32>>,
    success_threshold: Option<Spanned<u32>>,
    on_unhealthy: Option<OnUnhealthy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    policy: Option<RestartPolicy>,
    delay: Option<Spanned<String>>,
    max_delay: Option<Spanned<String>>,
    burst: Option<Spanned<u32>>,
    interval: Option<Spanned<String>>,
    reset_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStop {
    signal: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    exec: Option<Spanned<Commands>>,
    kill_mode: Option<KillMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    nofile: Option<Spanned<RawLimit>>,
    nproc: Option<Spanned<RawLimit>>,
    core: Option<Spanned<RawLimit>>,
    memlock: Option<Spanned<RawLimit>>,
    cpu: Option<Spanned<RawLimit>>,
    fsize: Option<Spanned<RawLimit>>,
    data: Option<Spanned<RawLimit>>,
    stack: Option<Spanned<RawLimit>>,
    rss: Option<Spanned<RawLimit>>,
    #[serde(rename = "as")]
    address_space: Option<Spanned<RawLimit>>,
    locks: Option<Spanned<RawLimit>>,
    sigpending: Option<Spanned<RawLimit>>,
    msgqueue: Option<Spanned<RawLimit>>,
    nice: Option<Spanned<RawLimit>>,
    rtprio: Option<Spanned<RawLimit>>,
    rttime: Option<Spanned<RawLimit>>,
}

/// A resource limit: a number, or `"infinity"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawLimit {
    Num(u64),
    Word(String),
}

/// Every key a unit file may have, for "did you mean" hints.
const TOP_KEYS: &[&str] = &[
    "description",
    "type",
    "exec",
    "pid_file",
    "env",
    "user",
    "group",
    "working_directory",
    "runtime_directory",
    "umask",
    "limits",
    "reload_signal",
    "essential",
    "priority",
    "sheddable",
    "output",
    "log_max_size",
    "log_max_files",
    "requires",
    "wants",
    "after",
    "mount",
    "listen",
    "stdin",
    "ready",
    "health",
    "readiness",
    "restart",
    "stop",
    "resources",
    "exec_condition",
    "exec_ignore_failure",
    "cpu_scheduling_policy",
    "cpu_scheduling_priority",
    "cpu_scheduling_reset_on_fork",
    "stdout_file",
    "stderr_file",
    "exec_start_pre",
    "exec_start_post",
    "exec_stop_post",
    "reload_exec",
    "env_file",
    "remain_after_exit",
    "success_exit_status",
    "restart_prevent_exit_status",
    "state_directory",
    "cache_directory",
    "logs_directory",
    "configuration_directory",
    "runtime_directory_mode",
    "state_directory_mode",
    "cache_directory_mode",
    "logs_directory_mode",
    "configuration_directory_mode",
    "nice",
    "oom_score_adjust",
    "supplementary_groups",
    "pid_file",
    "sandbox",
    "part_of",
    "on_failure",
    "reload_propagated_from",
    "condition_path_exists",
    "assert_path_exists",
    "condition_path_exists_glob",
    "assert_path_exists_glob",
    "condition_path_is_directory",
    "assert_path_is_directory",
    "condition_path_is_symbolic_link",
    "assert_path_is_symbolic_link",
    "condition_path_is_mount_point",
    "assert_path_is_mount_point",
    "condition_path_is_read_write",
    "assert_path_is_read_write",
    "condition_directory_not_empty",
    "assert_directory_not_empty",
    "condition_file_not_empty",
    "assert_file_not_empty",
    "condition_file_is_executable",
    "assert_file_is_executable",
    "condition_virtualization",
    "assert_virtualization",
    "condition_kernel_command_line",
    "assert_kernel_command_line",
    "condition_capability",
    "assert_capability",
    "condition_ac_power",
    "condition_cpus",
    "assert_cpus",
    "assert_ac_power",
    "condition_environment",
    "assert_environment",
];

/// Where in the text a byte offset is (1-based line and column).
pub(crate) struct Lines<'a> {
    text: &'a str,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(text: &'a str) -> Lines<'a> {
        Lines { text }
    }

    pub(crate) fn at(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let col = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        (line, col)
    }
}

/// Collects errors for one file.
pub(crate) struct Errs<'a> {
    file: &'a Path,
    lines: Lines<'a>,
    pub(crate) list: Vec<UnitError>,
}

impl<'a> Errs<'a> {
    pub(crate) fn new(file: &'a Path, text: &'a str) -> Errs<'a> {
        Errs {
            file,
            lines: Lines::new(text),
            list: Vec::new(),
        }
    }

    pub(crate) fn at(
        &mut self,
        span: std::ops::Range<usize>,
        msg: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let (l, c) = self.lines.at(span.start);
        let hint: String = hint.into();
        let mut e = UnitError::new(self.file, msg).at(l, c);
        if !hint.is_empty() {
            e = e.hint(hint);
        }
        self.list.push(e);
    }

    pub(crate) fn whole(&mut self, msg: impl Into<String>, hint: impl Into<String>) {
        let hint: String = hint.into();
        let mut e = UnitError::new(self.file, msg);
        if !hint.is_empty() {
            e = e.hint(hint);
        }
        self.list.push(e);
    }

    pub(crate) fn duration(
        &mut self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        match v {
            None => default,
            Some(s) => match humantime::parse_duration(s.get_ref().trim()) {
                Ok(d) if d > crate::unit::MAX_DURATION => {
                    self.at(
                        s.span(),
                        format!(
                            "`{key}` = {:?} is too long: durations are at most {} (supd computes deadlines from them)",
                            s.get_ref(),
                            crate::unit::MAX_DURATION_TEXT
                        ),
                        format!(
                            "use a duration up to {}; to wait without limit, leave the key out where that is the default",
                            crate::unit::MAX_DURATION_TEXT
                        ),
                    );
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    self.at(
                        s.span(),
                        format!("`{key}` = {:?} is not a duration ({e})", s.get_ref()),
                        "write durations like \"500ms\", \"5s\", \"1m30s\", \"2h\"",
                    );
                    default
                }
            },
        }
    }
}

/// A byte size: an integer, or a string like "256M", "1G", "512K",
/// "1048576", or "max".
/// A `device_allow` entry, systemd's DeviceAllow= syntax: a device node
/// path (or `char-NAME`, `block-NAME` from /proc/devices), then the
/// access (`r`, `w`, `m`; all when omitted).
pub(crate) fn parse_device_allow(s: &str) -> Result<crate::unit::DeviceAllow, String> {
    use crate::unit::DeviceSpec;
    let mut it = s.split_whitespace();
    let what = it.next().ok_or("empty")?;
    let access = it.next().unwrap_or("rwm");
    if it.next().is_some() {
        return Err("too many words".into());
    }
    if access.is_empty() || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(format!("access {access:?} is not made of r, w and m"));
    }
    let spec = if let Some(n) = what.strip_prefix("char-") {
        DeviceSpec::Char(n.to_string())
    } else if let Some(n) = what.strip_prefix("block-") {
        DeviceSpec::Block(n.to_string())
    } else if what.starts_with("/dev/") || what.starts_with("/sys/") || what.starts_with("/run/") {
        DeviceSpec::Path(PathBuf::from(what))
    } else {
        return Err("not a device path under /dev (or char-NAME, block-NAME)".into());
    };
    if matches!(&spec, DeviceSpec::Char(n) | DeviceSpec::Block(n) if n.is_empty()) {
        return Err("no driver name".into());
    }
    Ok(crate::unit::DeviceAllow {
        spec,
        read: access.contains('r'),
        write: access.contains('w'),
        mknod: access.contains('m'),
    })
}

/// "99%" / "99.5%" (0 < p <= 100) as hundredths of a percent.
fn percent(s: &str) -> Option<crate::unit::CgLimit> {
    let p: f64 = s.trim().strip_suffix('%')?.trim().parse().ok()?;
    (p > 0.0 && p <= 100.0)
        .then(|| crate::unit::CgLimit::Percent(((p * 100.0).round() as u32).max(1)))
}

fn parse_cg_size(v: &toml::Value) -> Result<crate::unit::CgLimit, String> {
    use crate::unit::CgLimit;
    match v {
        toml::Value::Integer(n) if *n >= 0 => Ok(CgLimit::Value(*n as u64)),
        toml::Value::String(s) => {
            let s = s.trim();
            if s == "max" || s == "infinity" {
                return Ok(CgLimit::Max);
            }
            if let Some(p) = percent(s) {
                return Ok(p);
            }
            let (num, mult) = match s.char_indices().last() {
                Some((i, c)) if c.is_ascii_alphabetic() => {
                    let m: u64 = match c.to_ascii_uppercase() {
                        'K' => 1 << 10,
                        'M' => 1 << 20,
                        'G' => 1 << 30,
                        'T' => 1 << 40,
                        _ => return Err(format!("unknown unit {c:?}")),
                    };
                    (&s[..i], m)
                }
                _ => (s, 1),
            };
            let n: u64 = num
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a size"))?;
            n.checked_mul(mult)
                .map(CgLimit::Value)
                .ok_or_else(|| format!("{s:?} is too large"))
        }
        other => Err(format!("{other:?} is not a size")),
    }
}

fn parse_resources(errs: &mut Errs<'_>, r: &RawResources) -> crate::unit::Resources {
    use crate::unit::CgLimit;
    let mut out = crate::unit::Resources::default();
    let size_hint = "write a size like \"256M\", \"1G\", a number of bytes, a share of the host's memory like \"50%\", or \"max\"";
    let size = |errs: &mut Errs<'_>, v: &Option<Spanned<toml::Value>>, key: &str| {
        v.as_ref().and_then(|v| match parse_cg_size(v.get_ref()) {
            Ok(l) => Some(l),
            Err(e) => {
                errs.at(v.span(), format!("`{key}`: {e}"), size_hint);
                None
            }
        })
    };
    out.oom_policy = match r
        .oom_policy
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span()))
    {
        None | Some(("continue", _)) => crate::unit::OomPolicy::Continue,
        Some(("stop", _)) => crate::unit::OomPolicy::Stop,
        Some(("kill", _)) => crate::unit::OomPolicy::Kill,
        Some((w, span)) => {
            errs.at(
                span,
                format!("`oom_policy` = {w:?} is not a policy"),
                "one of \"continue\", \"stop\", \"kill\"",
            );
            crate::unit::OomPolicy::Continue
        }
    };
    out.delegate = r.delegate.unwrap_or(false);
    out.device_policy = match r
        .device_policy
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span()))
    {
        None | Some(("auto", _)) => crate::unit::DevicePolicy::Auto,
        Some(("closed", _)) => crate::unit::DevicePolicy::Closed,
        Some(("strict", _)) => crate::unit::DevicePolicy::Strict,
        Some((w, span)) => {
            errs.at(
                span,
                format!("`device_policy` = {w:?} is not a policy"),
                "one of \"auto\", \"closed\", \"strict\"",
            );
            crate::unit::DevicePolicy::Auto
        }
    };
    for d in r.device_allow.iter().flatten() {
        match parse_device_allow(d.get_ref()) {
            Ok(a) => out.device_allow.push(a),
            Err(why) => errs.at(
                d.span(),
                format!("`device_allow` {:?}: {why}", d.get_ref()),
                "write \"/dev/NODE rw\", \"char-DRIVER r\" or \"block-DRIVER rwm\" (access: r, w, m; all three if omitted)",
            ),
        }
    }
    out.memory_max = size(errs, &r.memory_max, "memory_max");
    out.memory_high = size(errs, &r.memory_high, "memory_high");
    out.pids_max = match &r.pids_max {
        Some(v) => match v.get_ref() {
            toml::Value::Integer(n) if *n > 0 => Some(CgLimit::Value(*n as u64)),
            toml::Value::String(s) if s == "max" => Some(CgLimit::Max),
            toml::Value::String(s) if percent(s).is_some() => percent(s),
            _ => {
                errs.at(
                    v.span(),
                    "`pids_max` must be a positive number of processes, a share of the host's limit like \"50%\", or \"max\"",
                    "e.g. pids_max = 256",
                );
                None
            }
        },
        None => None,
    };
    let weight = |errs: &mut Errs<'_>, v: &Option<Spanned<i64>>, key: &str| {
        v.as_ref().and_then(|w| {
            let n = *w.get_ref();
            if (1..=10000).contains(&n) {
                Some(n as u32)
            } else {
                errs.at(
                    w.span(),
                    format!("`{key}` = {n} is out of range"),
                    "a weight is 1..=10000; 100 is the default every group has",
                );
                None
            }
        })
    };
    out.cpu_weight = weight(errs, &r.cpu_weight, "cpu_weight");
    out.io_weight = weight(errs, &r.io_weight, "io_weight");
    out.cpu_max = r.cpu_max.as_ref().and_then(|c| {
        let s = c.get_ref().trim();
        let period = 100_000u64;
        let parsed = if s == "max" {
            Some((None, period))
        } else if let Some(p) = s.strip_suffix('%') {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|p| *p > 0.0 && p.is_finite() && *p <= 1_000_000.0)
                .map(|p| (Some(((p / 100.0) * period as f64).round().max(1000.0) as u64), period))
        } else {
            let mut it = s.split_whitespace();
            match (it.next().and_then(|q| q.parse::<u64>().ok()), it.next().and_then(|p| p.parse::<u64>().ok()), it.next()) {
                (Some(q), Some(p), None) if q >= 1000 && (1000..=1_000_000).contains(&p) => Some((Some(q), p)),
                _ => None,
            }
        };
        if parsed.is_none() {
            errs.at(
                c.span(),
                format!("`cpu_max` = {s:?} is not a CPU limit"),
                "write a share of one CPU like \"50%\" or \"200%\", \"QUOTA PERIOD\" in microseconds like \"50000 100000\", or \"max\"",
            );
        }
        parsed
    });
    out
}

/// A size: bytes as an integer, or a string with a binary suffix
/// (`"512K"`, `"1MiB"`, `"2M"`).
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub(crate) enum RawSize {
    Bytes(u64),
    Text(String),
}

/// Bytes in a size like `"1MiB"`; K, M and G are binary (1024-based).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" | "k" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

impl Errs<'_> {
    /// `log_max_size` / `log_max_files`, checked against the log store's
    /// bounds.
    pub(crate) fn log_limits(
        &mut self,
        size: &Option<Spanned<RawSize>>,
        files: &Option<Spanned<u32>>,
    ) -> crate::unit::LogSpec {
        use crate::unit::LogSpec;
        const MIN_MAX_SIZE: u64 = LogSpec::MIN_MAX_SIZE;
        const MAX_MAX_SIZE: u64 = LogSpec::MAX_MAX_SIZE;
        const MAX_MAX_FILES: u32 = LogSpec::MAX_MAX_FILES;
        let max_size = size.as_ref().and_then(|v| {
            let parsed = match v.get_ref() {
                RawSize::Bytes(b) => Ok(*b),
                RawSize::Text(t) => parse_size(t),
            };
            match parsed {
                Ok(b) if (MIN_MAX_SIZE..=MAX_MAX_SIZE).contains(&b) => Some(b),
                Ok(b) => {
                    self.at(
                        v.span(),
                        format!("log_max_size {b} bytes is out of range"),
                        format!("between {MIN_MAX_SIZE} (16K) and {MAX_MAX_SIZE} (1G) bytes"),
                    );
                    None
                }
                Err(e) => {
                    self.at(
                        v.span(),
                        format!("log_max_size: {e}"),
                        "write sizes like 1048576, \"512K\", \"1MiB\"",
                    );
                    None
                }
            }
        });
        let max_files = files.as_ref().and_then(|v| {
            let n = *v.get_ref();
            if (1..=MAX_MAX_FILES).contains(&n) {
                Some(n)
            } else {
                self.at(
                    v.span(),
                    format!("log_max_files = {n} is out of range"),
                    format!("between 1 and {MAX_MAX_FILES}"),
                );
                None
            }
        });
        crate::unit::LogSpec {
            max_size,
            max_files,
        }
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A hint for a serde/toml error message.
fn hint_for(msg: &str) -> String {
    if let Some(rest) = msg.split("unknown field `").nth(1) {
        let field = rest.split('`').next().unwrap_or("");
        let expected: Vec<&str> = match msg.split("expected ").nth(1) {
            Some(list) => list
                .split([',', ' '])
                .map(|s| s.trim_matches(|c: char| c == '`' || c == '.' || c == ' '))
                .filter(|s| !s.is_empty() && *s != "one" && *s != "of" && *s != "or")
                .collect(),
            None => TOP_KEYS.to_vec(),
        };
        let best = expected.iter().map(|k| (edit_distance(field, k), *k)).min();
        return match best {
            Some((d, k)) if d <= 3 => format!(
                "did you mean `{k}`? valid keys here: {}",
                expected.join(", ")
            ),
            _ => format!("valid keys here: {}", expected.join(", ")),
        };
    }
    if msg.contains("unknown variant") {
        return "use one of the listed words exactly (lowercase)".to_string();
    }
    if msg.contains("invalid type") {
        return "check the value's type: strings in quotes, lists in [ ], numbers bare".to_string();
    }
    if msg.contains("missing field") {
        return "add the missing key".to_string();
    }
    String::new()
}

/// Turn a signal word into its number: `SIGINT`, `INT`, `sigint`.
pub(crate) fn parse_signal(s: &str) -> Result<i32, String> {
    let up = s.trim().to_ascii_uppercase();
    let full = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    match full.parse::<nix::sys::signal::Signal>() {
        Ok(nix::sys::signal::Signal::SIGSTOP)
        | Ok(nix::sys::signal::Signal::SIGTSTP)
        | Ok(nix::sys::signal::Signal::SIGCHLD) => Err(format!("{full} cannot stop a service")),
        Ok(sig) => Ok(sig as i32),
        Err(_) => Err(format!("unknown signal {s:?}")),
    }
}

/// Validate and normalise an absolute path (no `..`).
pub(crate) fn abs_path(errs: &mut Errs<'_>, s: &Spanned<String>, key: &str) -> Option<PathBuf> {
    let p = Path::new(s.get_ref());
    if !p.is_absolute() {
        errs.at(
            s.span(),
            format!("`{key}` must be an absolute path, got {:?}", s.get_ref()),
            "start it with /",
        );
        return None;
    }
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        errs.at(
            s.span(),
            format!("`{key}` must not contain `..`: {:?}", s.get_ref()),
            "write the real path",
        );
        return None;
    }
    Some(crate::mounts::normalize(p))
}

pub(crate) fn mount_req(errs: &mut Errs<'_>, m: &RawMount) -> Option<MountReq> {
    let path = abs_path(errs, &m.path, "mount.path")?;
    Some(MountReq {
        path,
        fstype: m.fstype.clone(),
        source: m.source.clone(),
        options: m.options.clone().unwrap_or_default(),
        on_loss: m.on_loss.unwrap_or(OnLoss::Stop),
        timeout: m
            .timeout
            .as_ref()
            .map(|t| errs.duration(&Some(t.clone()), "mount.timeout", Duration::ZERO)),
        symlink_to: None,
    })
}

fn probe_spec(errs: &mut Errs<'_>, h: &Spanned<RawHealth>, section: &str) -> Option<HealthSpec> {
    let span = h.span();
    let h = h.get_ref();
    let mut targets = Vec::new();
    if let Some(e) = &h.exec {
        if e.is_empty() {
            errs.at(
                span.clone(),
                format!("[{section}] exec is empty"),
                "give the probe command",
            );
        } else if e.iter().any(|a| a.contains('\0')) {
            errs.at(
                span.clone(),
                format!("[{section}] exec has an argument containing NUL"),
                "remove the NUL (\\u0000): no program can receive it",
            );
        }
        targets.push(ProbeTarget::Exec(e.clone()));
    }
    if let Some(t) = &h.tcp {
        if !t.contains(':') {
            errs.at(
                span.clone(),
                format!("[{section}] tcp = {t:?} needs host:port"),
                "e.g. tcp = \"127.0.0.1:5432\"",
            );
        }
        targets.push(ProbeTarget::Tcp(t.clone()));
    }
    if let Some(u) = &h.http {
        if !(u.starts_with("http://") || u.starts_with("http+unix://")) {
            errs.at(span.clone(), format!("[{section}] http = {u:?} is not an http:// URL"), "e.g. http = \"http://127.0.0.1:8080/healthz\" or \"http+unix:///run/app.sock:/healthz\"");
        }
        targets.push(ProbeTarget::Http(u.clone()));
    }
    if let Some(u) = &h.unix {
        targets.push(ProbeTarget::Unix(PathBuf::from(u)));
    }
    if targets.len() != 1 {
        errs.at(
            span,
            format!(
                "[{section}] needs exactly one of exec, tcp, http, unix (found {})",
                targets.len()
            ),
            "keep one probe per unit",
        );
        return None;
    }
    let interval = errs.duration(
        &h.interval,
        &format!("{section}.interval"),
        Duration::from_secs(5),
    );
    let timeout = errs.duration(
        &h.timeout,
        &format!("{section}.timeout"),
        Duration::from_secs(2),
    );
    if (timeout.is_zero() || interval.is_zero())
        && let Some(t) = h.timeout.as_ref().or(h.interval.as_ref())
    {
        errs.at(
            t.span(),
            format!("[{section}] interval and timeout must be > 0"),
            "e.g. interval = \"5s\", timeout = \"2s\"",
        );
    }
    let mut threshold = |v: &Option<Spanned<u32>>, key: &str, default: u32| match v {
        Some(n) if *n.get_ref() == 0 => {
            errs.at(n.span(), format!("`{key}` must be at least 1"), "");
            default
        }
        Some(n) => *n.get_ref(),
        None => default,
    };
    let failure_threshold = threshold(&h.failure_threshold, "failure_threshold", 3);
    let success_threshold = threshold(&h.success_threshold, "success_threshold", 1);
    Some(HealthSpec {
        target: targets.remove(0),
        interval,
        timeout,
        start_period: errs.duration(
            &h.start_period,
            &format!("{section}.start_period"),
            Duration::ZERO,
        ),
        failure_threshold,
        success_threshold,
        on_unhealthy: h.on_unhealthy.unwrap_or(OnUnhealthy::Restart),
    })
}

/// Line numbers of dependency names, for errors found later by the graph.
pub type DepLines = BTreeMap<String, usize>;

/// Parse one unit's TOML text.
pub fn parse_unit(name: &str, file: &Path, text: &str) -> Result<UnitSpec, Vec<UnitError>> {
    parse_unit_with_lines(name, file, text).map(|(s, _)| s)
}

/// As `parse_unit`, also returning the line of each dependency name.
pub fn parse_unit_with_lines(
    name: &str,
    file: &Path,
    text: &str,
) -> Result<(UnitSpec, DepLines), Vec<UnitError>> {
    let mut errs = Errs::new(file, text);
    let raw: RawUnit = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let msg = e.message().trim().to_string();
            let hint = hint_for(&msg);
            match e.span() {
                Some(span) => errs.at(span, msg, hint),
                None => errs.whole(msg, hint),
            }
            return Err(errs.list);
        }
    };
    let raw_kind = raw.kind.as_ref().map(|k| *k.get_ref());
    let kind = match raw_kind {
        Some(RawKind::Oneshot) => UnitKind::Oneshot,
        Some(RawKind::Longrun) | Some(RawKind::Forking) | None => UnitKind::Longrun,
    };

    let exec: Vec<String> = match &raw.exec {
        None => {
            errs.whole(
                "missing `exec`",
                "add the command as a list, e.g. exec = [\"/usr/bin/myservice\", \"--flag\"]",
            );
            vec![]
        }
        Some(e) => {
            if e.get_ref().is_empty() {
                errs.at(
                    e.span(),
                    "`exec` is empty",
                    "give at least the program: exec = [\"/usr/bin/myservice\"]",
                );
            } else if e.get_ref()[0].is_empty() {
                errs.at(
                    e.span(),
                    "`exec` names no program (its first element is empty)",
                    "give the program first: exec = [\"/usr/bin/myservice\", ...]",
                );
            } else if e.get_ref().iter().any(|a| a.contains('\0')) {
                // An empty argument is an argument (`--logfile ""`); a NUL
                // cannot be passed to exec at all.
                errs.at(
                    e.span(),
                    "`exec` has an argument containing a NUL byte",
                    "remove the NUL byte: exec cannot pass it",
                );
            }
            e.get_ref().clone()
        }
    };

    let mut env = BTreeMap::new();
    if let Some(e) = &raw.env {
        for (k, v) in e.get_ref() {
            let valid = !k.is_empty()
                && !k.contains('=')
                && !k.contains('\0')
                && !k.starts_with(|c: char| c.is_ascii_digit());
            if !valid || v.contains('\0') {
                errs.at(
                    e.span(),
                    format!("invalid environment variable {k:?}"),
                    "names are letters, digits and _, not starting with a digit; no NUL in values",
                );
            }
            env.insert(k.clone(), v.clone());
        }
    }

    let working_directory = raw
        .working_directory
        .as_ref()
        .and_then(|w| abs_path(&mut errs, w, "working_directory"));

    let mut dep_lines = DepLines::new();
    let mut deps =
        |errs: &mut Errs<'_>, list: &Option<Vec<Spanned<String>>>, key: &str| -> Vec<String> {
            let mut out = Vec::new();
            for d in list.iter().flatten() {
                let (line, _) = errs.lines.at(d.span().start);
                if d.get_ref() == name {
                    errs.at(
                        d.span(),
                        format!("unit {name} lists itself in `{key}`"),
                        "remove it",
                    );
                    continue;
                }
                dep_lines.entry(d.get_ref().clone()).or_insert(line);
                if !out.contains(d.get_ref()) {
                    out.push(d.get_ref().clone());
                }
            }
            out
        };
    let requires = deps(&mut errs, &raw.requires, "requires");
    let part_of = deps(&mut errs, &raw.part_of, "part_of");
    let on_failure = deps(&mut errs, &raw.on_failure, "on_failure");
    let reload_propagated_from = deps(
        &mut errs,
        &raw.reload_propagated_from,
        "reload_propagated_from",
    );
    let wants = deps(&mut errs, &raw.wants, "wants");
    let after = deps(&mut errs, &raw.after, "after");

    let mounts: Vec<MountReq> = raw
        .mount
        .iter()
        .flatten()
        .filter_map(|m| mount_req(&mut errs, m.get_ref()))
        .collect();

    let listen = crate::unit::listen::parse(&mut errs, name, raw.listen.as_deref().unwrap_or(&[]));

    let health = raw
        .health
        .as_ref()
        .and_then(|h| probe_spec(&mut errs, h, "health"));
    let readiness = raw
        .readiness
        .as_ref()
        .and_then(|h| probe_spec(&mut errs, h, "readiness"));

    let ready = {
        let r = raw.ready.as_ref().map(|r| r.get_ref());
        let kind_sp = r.and_then(|r| r.kind.as_ref());
        let rk = kind_sp.map(|k| *k.get_ref()).unwrap_or(ReadyKind::Started);
        if let Some(k) = kind_sp {
            if kind == UnitKind::Oneshot && rk != ReadyKind::Started {
                errs.at(
                    k.span(),
                    "a oneshot is ready when it exits 0; [ready] kind does not apply",
                    "remove [ready] kind, or make the unit a longrun",
                );
            }
            if rk == ReadyKind::Probe && health.is_none() && readiness.is_none() {
                errs.at(
                    k.span(),
                    "[ready] kind = \"probe\" needs a [readiness] or [health] probe",
                    "add a [readiness] (or [health]) section with exec, tcp, http or unix",
                );
            }
        }
        let fd = match r.and_then(|r| r.fd.as_ref()) {
            Some(f) if !(3..=1023).contains(f.get_ref()) => {
                errs.at(
                    f.span(),
                    format!("[ready] fd = {} is not usable", f.get_ref()),
                    "use a descriptor number from 3 to 1023 (0-2 are stdio)",
                );
                3
            }
            Some(f) => *f.get_ref(),
            None => 3,
        };
        let watchdog = r
            .and_then(|r| r.watchdog.as_ref())
            .map(|t| errs.duration(&Some(t.clone()), "ready.watchdog", Duration::from_secs(30)));
        let notify_reload = match r.and_then(|r| r.notify_reload.as_ref()) {
            Some(b) if *b.get_ref() && rk != ReadyKind::Notify => {
                errs.at(
                    b.span(),
                    "[ready] notify_reload needs kind = \"notify\"",
                    "set [ready] kind = \"notify\", or remove notify_reload",
                );
                false
            }
            Some(b) => *b.get_ref(),
            None => false,
        };
        ReadySpec {
            notify_reload,
            kind: rk,
            // "infinity": no start timeout, as when the key is absent.
            timeout: r
                .and_then(|r| r.timeout.as_ref())
                .filter(|t| t.get_ref().trim() != "infinity")
                .map(|t| errs.duration(&Some(t.clone()), "ready.timeout", Duration::from_secs(90))),
            fd,
            watchdog,
        }
    };
    if ready.kind == ReadyKind::Fd && ready.fd >= 3 && ready.fd < 3 + listen.len() as i32 {
        errs.whole(
            format!(
                "[ready] fd = {} is one of the [[listen]] descriptors (3 to {})",
                ready.fd,
                2 + listen.len()
            ),
            format!("use [ready] fd = {} or higher", 3 + listen.len()),
        );
    }
    let stdin_socket = match raw.stdin.as_ref() {
        None => false,
        Some(v) => {
            match v.get_ref().as_str() {
                "null" => false,
                "socket" if listen.len() == 1 => true,
                "socket" => {
                    errs.at(
                    v.span(),
                    format!("stdin = \"socket\" needs exactly one [[listen]] table; this unit has {}", listen.len()),
                    "keep one [[listen]], or leave stdin out and read LISTEN_FDS",
                );
                    false
                }
                other => {
                    errs.at(
                        v.span(),
                        format!("stdin = {other:?}: expected \"null\" or \"socket\""),
                        "stdin = \"socket\" passes the [[listen]] socket as fd 0",
                    );
                    false
                }
            }
        }
    };
    if !listen.is_empty() && kind == UnitKind::Oneshot {
        errs.whole(
            "[[listen]] on a oneshot unit",
            "sockets are passed to long-running services; make it type = \"longrun\"",
        );
    }

    let restart = {
        let r = raw.restart.as_ref().map(|r| r.get_ref());
        let policy = r.and_then(|r| r.policy).unwrap_or(match kind {
            UnitKind::Longrun => RestartPolicy::OnFailure,
            UnitKind::Oneshot => RestartPolicy::Never,
        });
        let none = None;
        let delay = errs.duration(
            r.map(|r| &r.delay).unwrap_or(&none),
            "restart.delay",
            Duration::from_secs(1),
        );
        let max_delay = errs.duration(
            r.map(|r| &r.max_delay).unwrap_or(&none),
            "restart.max_delay",
            Duration::from_secs(60).max(delay),
        );
        let interval = errs.duration(
            r.map(|r| &r.interval).unwrap_or(&none),
            "restart.interval",
            Duration::from_secs(300),
        );
        let reset_after = errs.duration(
            r.map(|r| &r.reset_after).unwrap_or(&none),
            "restart.reset_after",
            Duration::from_secs(60),
        );
        let burst = match r.and_then(|r| r.burst.as_ref()) {
            Some(b) if *b.get_ref() == 0 => {
                errs.at(b.span(), "`burst` must be at least 1", "e.g. burst = 5");
                5
            }
            Some(b) => *b.get_ref(),
            None => 5,
        };
        let span = raw.restart.as_ref().map(|r| r.span()).unwrap_or(0..0);
        if max_delay < delay {
            errs.at(
                span.clone(),
                format!("`max_delay` ({max_delay:?}) is shorter than `delay` ({delay:?})"),
                "make max_delay >= delay",
            );
        }
        let spec = RestartSpec {
            policy,
            delay,
            max_delay,
            burst,
            interval,
            reset_after,
        };
        // The shortest time `burst` restarts can take (jitter keeps at least
        // half of each ceiling). If even that exceeds `interval`, the limit
        // can never trigger: a crash loop would go on forever.
        let fastest = crate::engine::restart::fastest_burst(&spec, burst);
        if policy != RestartPolicy::Never && fastest > interval {
            errs.at(
                span,
                format!(
                    "`burst` = {burst} restarts can never happen within `interval` = {interval:?}: backoff alone takes at least {fastest:?}, so the start limit would never stop a crash loop"
                ),
                "raise `interval`, lower `burst`, or shorten `delay`/`max_delay`",
            );
        }
        spec
    };

    let stop = {
        let s = raw.stop.as_ref().map(|s| s.get_ref());
        let signal = match s.and_then(|s| s.signal.as_ref()) {
            None => libc::SIGTERM,
            Some(sig) => match parse_signal(sig.get_ref()) {
                Ok(n) => n,
                Err(e) => {
                    errs.at(sig.span(), e, "use a name like \"SIGTERM\", \"SIGINT\", \"SIGQUIT\", \"SIGHUP\", \"SIGUSR1\"");
                    libc::SIGTERM
                }
            },
        };
        let none = None;
        // One command, or a list of them run in order.
        let mut cmds: Vec<Vec<String>> = match s.and_then(|s| s.exec.as_ref()) {
            None => vec![],
            Some(e) => {
                let list = match e.get_ref() {
                    Commands::One(a) => vec![a.clone()],
                    Commands::Many(m) => m.clone(),
                };
                if list.is_empty() || list.iter().any(|a| a.is_empty()) {
                    errs.at(
                        e.span(),
                        "[stop] exec is empty",
                        "give the stop command, or remove it to stop by signal",
                    );
                } else if list.iter().flatten().any(|a| a.contains('\0')) {
                    errs.at(
                        e.span(),
                        "[stop] exec has an argument containing NUL",
                        "remove the NUL (\\u0000): no program can receive it",
                    );
                }
                list
            }
        };
        let exec = (!cmds.is_empty()).then(|| cmds.remove(0));
        let exec_more = cmds;
        StopSpec {
            signal,
            // "infinity": wait for the service however long it takes.
            timeout: match s.and_then(|s| s.timeout.as_ref()) {
                Some(t) if t.get_ref().trim() == "infinity" => Duration::MAX,
                _ => errs.duration(
                    s.map(|s| &s.timeout).unwrap_or(&none),
                    "stop.timeout",
                    Duration::from_secs(10),
                ),
            },
            exec,
            exec_more,
            kill_mode: s.and_then(|s| s.kill_mode).unwrap_or_default(),
        }
    };

    let mut runtime_directory = Vec::new();
    for d in raw.runtime_directory.iter().flatten() {
        let name = d.get_ref();
        if name.is_empty() || name.contains("..") || name.starts_with('/') {
            errs.at(
                d.span(),
                format!("runtime_directory {name:?} must be a name below /run"),
                "e.g. runtime_directory = [\"postgresql\"] creates /run/postgresql",
            );
        } else {
            runtime_directory.push(name.clone());
        }
    }
    let umask = raw.umask.as_ref().and_then(|u| {
        match u32::from_str_radix(u.get_ref().trim_start_matches("0o"), 8) {
            Ok(v) if v <= 0o777 => Some(v),
            _ => {
                errs.at(
                    u.span(),
                    format!("umask {:?} is not an octal mask", u.get_ref()),
                    "e.g. umask = \"0027\"",
                );
                None
            }
        }
    });
    let limits = match raw.limits.as_ref() {
        None => crate::unit::Limits::default(),
        Some(l) => {
            let one = |errs: &mut Errs<'_>,
                       v: &Option<Spanned<RawLimit>>,
                       key: &str|
             -> Option<u64> {
                let v = v.as_ref()?;
                match v.get_ref() {
                    RawLimit::Num(n) if *n < crate::unit::Limits::INFINITY => Some(*n),
                    RawLimit::Word(w) if w == "infinity" => Some(crate::unit::Limits::INFINITY),
                    _ => {
                        errs.at(
                            v.span(),
                            format!("limits.{key} is not a number or \"infinity\""),
                            "write a number (bytes, seconds for cpu, microseconds for rttime) or \"infinity\"",
                        );
                        None
                    }
                }
            };
            let nice = one(&mut errs, &l.nice, "nice");
            if let Some(n) = nice
                && n > 40
                && n != crate::unit::Limits::INFINITY
                && let Some(v) = l.nice.as_ref()
            {
                errs.at(
                    v.span(),
                    format!("limits.nice = {n} is not 0..40 (the kernel's RLIMIT_NICE: 20 - nice)"),
                    "",
                );
            }
            crate::unit::Limits {
                nofile: one(&mut errs, &l.nofile, "nofile"),
                nproc: one(&mut errs, &l.nproc, "nproc"),
                core: one(&mut errs, &l.core, "core"),
                memlock: one(&mut errs, &l.memlock, "memlock"),
                cpu: one(&mut errs, &l.cpu, "cpu"),
                fsize: one(&mut errs, &l.fsize, "fsize"),
                data: one(&mut errs, &l.data, "data"),
                stack: one(&mut errs, &l.stack, "stack"),
                rss: one(&mut errs, &l.rss, "rss"),
                address_space: one(&mut errs, &l.address_space, "as"),
                locks: one(&mut errs, &l.locks, "locks"),
                sigpending: one(&mut errs, &l.sigpending, "sigpending"),
                msgqueue: one(&mut errs, &l.msgqueue, "msgqueue"),
                nice,
                rtprio: one(&mut errs, &l.rtprio, "rtprio"),
                rttime: one(&mut errs, &l.rttime, "rttime"),
            }
        }
    };
    let resources = raw
        .resources
        .as_ref()
        .map(|r| parse_resources(&mut errs, r))
        .unwrap_or_default();
    let reload_signal = match &raw.reload_signal {
        None => libc::SIGHUP,
        Some(sig) => match parse_signal(sig.get_ref()) {
            Ok(n) => n,
            Err(e) => {
                errs.at(sig.span(), e, "use a name like \"SIGHUP\" or \"SIGUSR1\"");
                libc::SIGHUP
            }
        },
    };

    let log = errs.log_limits(&raw.log_max_size, &raw.log_max_files);

    let x = extras(&mut errs, &raw, raw_kind, &restart);

    if !errs.list.is_empty() {
        return Err(errs.list);
    }
    Ok((
        UnitSpec {
            name: name.to_string(),
            file: file.to_path_buf(),
            description: raw.description,
            kind,
            exec,
            env,
            user: raw.user,
            group: raw.group,
            working_directory,
            runtime_directory,
            umask,
            limits,
            reload_signal,
            essential: raw.essential.unwrap_or(false),
            requires,
            wants,
            after,
            mounts,
            ready,
            health,
            readiness,
            restart,
            stop,
            priority: raw.priority.unwrap_or(Priority::Normal),
            sheddable: raw.sheddable.unwrap_or(false),
            output: raw.output.unwrap_or(Output::Capture),
            resources,
            log,

            exec_condition: x.exec_condition,
            exec_ignore_failure: raw.exec_ignore_failure.unwrap_or(false),
            cpu_scheduling: x.cpu_scheduling,
            stdout_file: x.stdout_file,
            stderr_file: x.stderr_file,
            exec_start_pre: x.exec_start_pre,
            exec_start_post: x.exec_start_post,
            exec_stop_post: x.exec_stop_post,
            reload_exec: x.reload_exec,
            env_file: x.env_file,
            remain_after_exit: raw.remain_after_exit.unwrap_or(false),
            success_exit_status: x.success_exit_status,
            restart_prevent_exit_status: x.restart_prevent_exit_status,
            state_directory: x.state_directory,
            cache_directory: x.cache_directory,
            logs_directory: x.logs_directory,
            configuration_directory: x.configuration_directory,
            directory_modes: x.directory_modes,
            nice: x.nice,
            oom_score_adjust: x.oom_score_adjust,
            supplementary_groups: raw.supplementary_groups.unwrap_or_default(),
            conditions: x.conditions,
            part_of,
            on_failure,
            reload_propagated_from,
            forking: raw_kind == Some(RawKind::Forking),
            pid_file: x.pid_file,
            sandbox: x.sandbox,
            listen,
            stdin_socket,
        },
        dep_lines,
    ))
}

/// `cpu_scheduling_*`: a policy name, a priority valid for it (1..=99 for
/// the real-time policies, 0 for the others), reset-on-fork.
fn cpu_scheduling(errs: &mut Errs<'_>, raw: &RawUnit) -> Option<crate::unit::CpuScheduling> {
    use crate::unit::CpuScheduling;
    if raw.cpu_scheduling_policy.is_none()
        && raw.cpu_scheduling_priority.is_none()
        && raw.cpu_scheduling_reset_on_fork.is_none()
    {
        return None;
    }
    let policy = match &raw.cpu_scheduling_policy {
        None => libc::SCHED_OTHER,
        Some(p) => match CpuScheduling::POLICIES
            .iter()
            .find(|(n, _)| *n == p.get_ref().as_str())
        {
            Some((_, v)) => *v,
            None => {
                errs.at(
                    p.span(),
                    format!("cpu_scheduling_policy {:?} is not a policy", p.get_ref()),
                    "one of \"other\", \"batch\", \"idle\", \"fifo\", \"rr\"",
                );
                return None;
            }
        },
    };
    let realtime = policy == libc::SCHED_FIFO || policy == libc::SCHED_RR;
    let priority = match &raw.cpu_scheduling_priority {
        None if realtime => 1,
        None => 0,
        Some(p) => {
            let v = *p.get_ref();
            let ok = if realtime {
                (1..=99).contains(&v)
            } else {
                v == 0
            };
            if !ok {
                errs.at(
                    p.span(),
                    format!("cpu_scheduling_priority = {v} is not valid for this policy"),
                    "1..=99 with \"fifo\" or \"rr\"; the other policies have no priority (leave it out)",
                );
                return None;
            }
            v
        }
    };
    Some(CpuScheduling {
        policy,
        priority,
        reset_on_fork: raw
            .cpu_scheduling_reset_on_fork
            .as_ref()
            .is_some_and(|b| *b.get_ref()),
    })
}

/// The keys systemd units need (see `supd import`), validated.
#[derive(Default)]
struct Extras {
    exec_condition: Vec<crate::unit::HelperCmd>,
    exec_start_pre: Vec<crate::unit::HelperCmd>,
    exec_start_post: Vec<crate::unit::HelperCmd>,
    exec_stop_post: Vec<crate::unit::HelperCmd>,
    reload_exec: Vec<crate::unit::HelperCmd>,
    env_file: Vec<crate::unit::EnvFile>,
    success_exit_status: Vec<crate::unit::ExitMatch>,
    restart_prevent_exit_status: Vec<crate::unit::ExitMatch>,
    state_directory: Vec<String>,
    cache_directory: Vec<String>,
    logs_directory: Vec<String>,
    configuration_directory: Vec<String>,
    directory_modes: crate::unit::DirectoryModes,
    nice: Option<i32>,
    oom_score_adjust: Option<i32>,
    cpu_scheduling: Option<crate::unit::CpuScheduling>,
    stdout_file: Option<crate::unit::OutputFile>,
    stderr_file: Option<crate::unit::OutputFile>,
    conditions: Vec<crate::unit::Condition>,
    pid_file: Option<PathBuf>,
    sandbox: crate::unit::Sandbox,
}

fn extras(
    errs: &mut Errs<'_>,
    raw: &RawUnit,
    kind: Option<RawKind>,
    restart: &RestartSpec,
) -> Extras {
    let mut x = Extras::default();
    let cmds = |errs: &mut Errs<'_>, v: &Option<Spanned<Commands>>, key: &str| {
        let Some(v) = v else { return Vec::new() };
        let list = match v.get_ref() {
            Commands::One(a) => vec![a.clone()],
            Commands::Many(m) => m.clone(),
        };
        let mut out = Vec::new();
        for mut argv in list {
            let mut ignore_failure = false;
            let mut privileged = false;
            if let Some(first) = argv.first_mut() {
                loop {
                    if let Some(r) = first.strip_prefix('-') {
                        ignore_failure = true;
                        *first = r.to_string();
                    } else if let Some(r) = first.strip_prefix('+') {
                        privileged = true;
                        *first = r.to_string();
                    } else {
                        break;
                    }
                }
            }
            if argv.first().is_none_or(|p| p.is_empty()) || argv.iter().any(|a| a.contains('\0')) {
                errs.at(
                    v.span(),
                    format!("`{key}` has an empty command (or a NUL byte)"),
                    "each command is a list: [\"/usr/bin/prog\", \"arg\"], optionally \"-/usr/bin/prog\" to ignore its failure or \"+/usr/bin/prog\" to run it as root",
                );
                continue;
            }
            out.push(crate::unit::HelperCmd {
                argv,
                ignore_failure,
                privileged,
            });
        }
        out
    };
    x.exec_condition = cmds(errs, &raw.exec_condition, "exec_condition");
    x.exec_start_pre = cmds(errs, &raw.exec_start_pre, "exec_start_pre");
    x.exec_start_post = cmds(errs, &raw.exec_start_post, "exec_start_post");
    x.exec_stop_post = cmds(errs, &raw.exec_stop_post, "exec_stop_post");
    x.reload_exec = cmds(errs, &raw.reload_exec, "reload_exec");

    for f in raw.env_file.iter().flat_map(items) {
        let (optional, path) = match f.get_ref().strip_prefix('-') {
            Some(p) => (true, p),
            None => (false, f.get_ref().as_str()),
        };
        let sp = Spanned::new(f.span(), path.to_string());
        if let Some(p) = abs_path(errs, &sp, "env_file") {
            x.env_file.push(crate::unit::EnvFile { path: p, optional });
        }
    }

    let statuses = |errs: &mut Errs<'_>, v: &Option<Vec<Spanned<CodeOrName>>>, key: &str| {
        let mut out = Vec::new();
        for s in v.iter().flatten() {
            match s.get_ref() {
                CodeOrName::Code(c) if (0..=255).contains(c) => {
                    out.push(crate::unit::ExitMatch::Code(*c as i32))
                }
                CodeOrName::Code(c) => {
                    errs.at(s.span(), format!("`{key}`: exit code {c} is not 0-255"), "")
                }
                CodeOrName::Name(n) => match parse_signal_any(n) {
                    Some(sig) => out.push(crate::unit::ExitMatch::Signal(sig)),
                    None => errs.at(
                        s.span(),
                        format!("`{key}`: {n:?} is neither an exit code nor a signal name"),
                        "e.g. [1, 143, \"SIGTERM\"]",
                    ),
                },
            }
        }
        out
    };
    x.success_exit_status = statuses(errs, &raw.success_exit_status, "success_exit_status");
    x.restart_prevent_exit_status = statuses(
        errs,
        &raw.restart_prevent_exit_status,
        "restart_prevent_exit_status",
    );
    let _ = restart;

    let dirs = |errs: &mut Errs<'_>, v: &Option<Vec<Spanned<String>>>, key: &str, base: &str| {
        let mut out = Vec::new();
        for d in v.iter().flatten() {
            let name = d.get_ref();
            if name.is_empty()
                || name.starts_with('/')
                || Path::new(name)
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                errs.at(
                    d.span(),
                    format!("{key} {name:?} must be a relative path below {base}"),
                    format!("e.g. {key} = [\"myservice\"] creates {base}/myservice"),
                );
            } else {
                out.push(name.clone());
            }
        }
        out
    };
    x.state_directory = dirs(errs, &raw.state_directory, "state_directory", "/var/lib");
    x.cache_directory = dirs(errs, &raw.cache_directory, "cache_directory", "/var/cache");
    x.logs_directory = dirs(errs, &raw.logs_directory, "logs_directory", "/var/log");
    x.configuration_directory = dirs(
        errs,
        &raw.configuration_directory,
        "configuration_directory",
        "/etc",
    );
    let mode = |errs: &mut Errs<'_>, v: &Option<Spanned<String>>, key: &str| -> u32 {
        let Some(m) = v else { return 0o755 };
        match u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8) {
            Ok(v) if v <= 0o7777 => v,
            _ => {
                errs.at(
                    m.span(),
                    format!("`{key}` = {:?} is not an octal mode", m.get_ref()),
                    "e.g. \"0750\"",
                );
                0o755
            }
        }
    };
    x.directory_modes = crate::unit::DirectoryModes {
        runtime: mode(errs, &raw.runtime_directory_mode, "runtime_directory_mode"),
        state: mode(errs, &raw.state_directory_mode, "state_directory_mode"),
        cache: mode(errs, &raw.cache_directory_mode, "cache_directory_mode"),
        logs: mode(errs, &raw.logs_directory_mode, "logs_directory_mode"),
        configuration: mode(
            errs,
            &raw.configuration_directory_mode,
            "configuration_directory_mode",
        ),
    };

    if let Some(n) = &raw.nice {
        if (-20..=19).contains(n.get_ref()) {
            x.nice = Some(*n.get_ref());
        } else {
            errs.at(
                n.span(),
                format!("nice = {} is not -20..19", n.get_ref()),
                "",
            );
        }
    }
    if let Some(n) = &raw.oom_score_adjust {
        if (-1000..=1000).contains(n.get_ref()) {
            x.oom_score_adjust = Some(*n.get_ref());
        } else {
            errs.at(
                n.span(),
                format!("oom_score_adjust = {} is not -1000..1000", n.get_ref()),
                "",
            );
        }
    }

    x.cpu_scheduling = cpu_scheduling(errs, raw);
    for (v, key, slot) in [
        (&raw.stdout_file, "stdout_file", &mut x.stdout_file),
        (&raw.stderr_file, "stderr_file", &mut x.stderr_file),
    ] {
        if let Some(v) = v {
            match crate::unit::OutputFile::parse(v.get_ref()) {
                Some(f) => *slot = Some(f),
                None => errs.at(
                    v.span(),
                    format!("{key} {:?} is not MODE:/absolute/path", v.get_ref()),
                    "e.g. \"append:/var/log/x.log\" (also \"file:\", written from the start, and \"truncate:\", emptied at each start)",
                ),
            }
        }
    }

    for (k, assert, v) in raw.condition_keys() {
        let prefix = if assert { "assert" } else { "condition" };
        for item in items(v) {
            let text = item.get_ref().trim();
            let (trigger, text) = match text.strip_prefix('|') {
                Some(t) => (true, t.trim()),
                None => (false, text),
            };
            let (negate, arg) = match text.strip_prefix('!') {
                Some(a) => (true, a.trim()),
                None => (false, text),
            };
            let path_kind = !matches!(
                k,
                crate::unit::CondKind::Virtualization
                    | crate::unit::CondKind::KernelCommandLine
                    | crate::unit::CondKind::Capability
                    | crate::unit::CondKind::ACPower
                    | crate::unit::CondKind::Environment
                    | crate::unit::CondKind::Cpus
            );
            if k == crate::unit::CondKind::Cpus && crate::unit::compare_count(arg, 1).is_none() {
                errs.at(
                    item.span(),
                    format!("`{prefix}_cpus` = {text:?} is not a comparison with a number"),
                    "e.g. \">1\", \">=2\", \"<=4\", \"=1\", \"!=1\"",
                );
                continue;
            }
            if arg.is_empty() || (path_kind && !arg.starts_with('/')) {
                errs.at(
                    item.span(),
                    format!(
                        "`{prefix}_{}` = {text:?} needs {}",
                        k.key(),
                        if path_kind {
                            "an absolute path"
                        } else {
                            "a value"
                        }
                    ),
                    "e.g. \"/etc/myservice.conf\", or \"!/etc/myservice/disabled\" to negate",
                );
                continue;
            }
            x.conditions.push(crate::unit::Condition {
                kind: k,
                arg: arg.to_string(),
                negate,
                assert,
                trigger,
            });
        }
    }

    if let Some(sb) = &raw.sandbox {
        x.sandbox = sandbox(errs, sb.get_ref());
    }
    match (kind, &raw.pid_file) {
        (Some(RawKind::Forking), Some(p)) => x.pid_file = abs_path(errs, p, "pid_file"),
        // Without a pid file the main process is guessed from the unit's
        // cgroup at run time (`supd check` refuses it on a host without
        // cgroup v2: see world::host_check).
        (Some(RawKind::Forking), None) => {}
        (_, Some(p)) => errs.at(
            p.span(),
            "`pid_file` is only for type = \"forking\"",
            "remove it, or set type = \"forking\"",
        ),
        (_, None) => {}
    }
    x
}

fn sandbox(errs: &mut Errs<'_>, r: &RawSandbox) -> crate::unit::Sandbox {
    use crate::unit::{ProtectHome, ProtectSystem, SandboxPath};
    let mut s = crate::unit::Sandbox {
        no_new_privileges: r.no_new_privileges.unwrap_or(false),
        private_tmp: r.private_tmp.unwrap_or(false),
        private_devices: r.private_devices.unwrap_or(false),
        protect_kernel_tunables: r.protect_kernel_tunables.unwrap_or(false),
        protect_kernel_modules: r.protect_kernel_modules.unwrap_or(false),
        protect_kernel_logs: r.protect_kernel_logs.unwrap_or(false),
        protect_control_groups: r.protect_control_groups.unwrap_or(false),
        protect_clock: r.protect_clock.unwrap_or(false),
        protect_hostname: r.protect_hostname.unwrap_or(false),
        private_network: r.private_network.unwrap_or(false),
        private_ipc: r.private_ipc.unwrap_or(false),
        lock_personality: r.lock_personality.unwrap_or(false),
        memory_deny_write_execute: r.memory_deny_write_execute.unwrap_or(false),
        restrict_realtime: r.restrict_realtime.unwrap_or(false),
        restrict_suid_sgid: r.restrict_suid_sgid.unwrap_or(false),
        private_users: r.private_users.unwrap_or(false),
        remove_ipc: r.remove_ipc.unwrap_or(false),
        ..Default::default()
    };
    seccomp_keys(errs, r, &mut s);
    let caps = |errs: &mut Errs<'_>, v: &Vec<Spanned<String>>, key: &str| -> (u64, bool) {
        // `~` before the first name: the list is what to drop.
        let mut mask = 0u64;
        let mut invert = false;
        for (i, c) in v.iter().enumerate() {
            let mut name = c.get_ref().trim();
            if i == 0
                && let Some(n) = name.strip_prefix('~')
            {
                invert = true;
                name = n.trim();
            }
            match crate::unit::caps::number(name) {
                Some(n) => mask |= 1u64 << n,
                None => errs.at(
                    c.span(),
                    format!("[sandbox] {key}: {name:?} is not a capability"),
                    "names like \"CAP_NET_BIND_SERVICE\"; \"~CAP_X\" first drops the listed ones",
                ),
            }
        }
        (mask, invert)
    };
    let all = (1u64 << crate::unit::caps::NAMES.len()) - 1;
    if let Some(v) = &r.capability_bounding_set {
        let (mask, invert) = caps(errs, v, "capability_bounding_set");
        s.capability_bounding_set = Some(if invert { all & !mask } else { mask });
    }
    if let Some(v) = &r.ambient_capabilities {
        let (mask, invert) = caps(errs, v, "ambient_capabilities");
        s.ambient_capabilities = if invert { all & !mask } else { mask };
    }
    let word = |errs: &mut Errs<'_>,
                v: &Option<Spanned<BoolOrWord>>,
                key: &str,
                words: &[&str]|
     -> Option<String> {
        let v = v.as_ref()?;
        match v.get_ref() {
            BoolOrWord::Bool(true) => Some("yes".into()),
            BoolOrWord::Bool(false) => None,
            BoolOrWord::Word(w) if words.contains(&w.as_str()) => Some(w.clone()),
            BoolOrWord::Word(w) => {
                errs.at(
                    v.span(),
                    format!("[sandbox] {key} = {w:?} is not one of {}", words.join(", ")),
                    "",
                );
                None
            }
        }
    };
    s.protect_system = match word(
        errs,
        &r.protect_system,
        "protect_system",
        &["yes", "full", "strict", "no"],
    )
    .as_deref()
    {
        Some("yes") => ProtectSystem::Yes,
        Some("full") => ProtectSystem::Full,
        Some("strict") => ProtectSystem::Strict,
        _ => ProtectSystem::No,
    };
    s.protect_home = match word(
        errs,
        &r.protect_home,
        "protect_home",
        &["yes", "read-only", "tmpfs", "no"],
    )
    .as_deref()
    {
        Some("yes") => ProtectHome::Yes,
        Some("read-only") => ProtectHome::ReadOnly,
        Some("tmpfs") => ProtectHome::Tmpfs,
        _ => ProtectHome::No,
    };
    let paths =
        |errs: &mut Errs<'_>, v: &Option<Vec<Spanned<String>>>, key: &str| -> Vec<SandboxPath> {
            let mut out = Vec::new();
            for p in v.iter().flatten() {
                let (optional, path) = match p.get_ref().strip_prefix('-') {
                    Some(x) => (true, x.to_string()),
                    None => (false, p.get_ref().clone()),
                };
                let sp = Spanned::new(p.span(), path);
                if let Some(path) = abs_path(errs, &sp, &format!("sandbox.{key}")) {
                    out.push(SandboxPath { path, optional });
                }
            }
            out
        };
    s.read_write_paths = paths(errs, &r.read_write_paths, "read_write_paths");
    s.read_only_paths = paths(errs, &r.read_only_paths, "read_only_paths");
    s.inaccessible_paths = paths(errs, &r.inaccessible_paths, "inaccessible_paths");
    s.no_exec_paths = paths(errs, &r.no_exec_paths, "no_exec_paths");
    s.exec_paths = paths(errs, &r.exec_paths, "exec_paths");
    if let Some(p) = &r.protect_proc {
        match p.get_ref().as_str() {
            "default" => {}
            w @ ("invisible" | "noaccess" | "ptraceable") => s.protect_proc = Some(w.to_string()),
            w => errs.at(
                p.span(),
                format!("[sandbox] protect_proc = {w:?} is not one of default, invisible, noaccess, ptraceable"),
                "",
            ),
        }
    }
    if let Some(p) = &r.proc_subset {
        match p.get_ref().as_str() {
            "all" => {}
            "pid" => s.proc_subset_pid = true,
            w => errs.at(
                p.span(),
                format!("[sandbox] proc_subset = {w:?} is not \"all\" or \"pid\""),
                "",
            ),
        }
    }
    s
}

/// The seccomp, user namespace, securebits and bind keys of `[sandbox]`.
fn seccomp_keys(errs: &mut Errs<'_>, r: &RawSandbox, s: &mut crate::unit::Sandbox) {
    use crate::unit::syscalls;
    const NO_TABLE: &str =
        "seccomp filters are built for x86-64 only; remove the key on this architecture";
    let has_table = !syscalls::numbers::TABLE.is_empty();
    if let Some(v) = &r.system_call_filter {
        let lines: Vec<String> = v.iter().map(|x| x.get_ref().clone()).collect();
        let span = v.first().map(|x| x.span()).unwrap_or(0..0);
        if !has_table {
            errs.at(span, "[sandbox] system_call_filter", NO_TABLE);
        } else {
            match syscalls::parse_filter(&lines) {
                Ok(f) => s.system_call_filter = Some(f),
                Err(e) => errs.at(
                    span,
                    format!("[sandbox] system_call_filter: {e}"),
                    "entries like \"@system-service\", \"~@privileged @resources\", \"~mount:EPERM\"",
                ),
            }
        }
    }
    if let Some(v) = &r.system_call_error_number {
        match syscalls::parse_deny(v.get_ref()) {
            Ok(d) => s.system_call_error_number = Some(d),
            Err(e) => errs.at(
                v.span(),
                format!("[sandbox] system_call_error_number: {e}"),
                "",
            ),
        }
    }
    if let Some(v) = &r.system_call_architectures {
        for a in v {
            match a.get_ref().as_str() {
                "native" | "x86-64" if has_table => s.native_only = true,
                w => errs.at(
                    a.span(),
                    format!("[sandbox] system_call_architectures: {w:?} is not supported"),
                    "only [\"native\"] (supd's filters admit the native architecture alone)",
                ),
            }
        }
    }
    if let Some(v) = &r.restrict_namespaces {
        match v.get_ref() {
            BoolOrList::Bool(true) => s.restrict_namespaces = syscalls::all_namespaces(),
            BoolOrList::Bool(false) => {}
            BoolOrList::List(l) => match syscalls::parse_namespaces(l) {
                Ok(m) => s.restrict_namespaces = m,
                Err(e) => errs.at(v.span(), format!("[sandbox] restrict_namespaces: {e}"), ""),
            },
        }
    }
    if let Some(v) = &r.restrict_address_families {
        match syscalls::parse_families(v.get_ref()) {
            Ok(f) => s.restrict_address_families = Some(f),
            Err(e) => errs.at(
                v.span(),
                format!("[sandbox] restrict_address_families: {e}"),
                "[\"AF_UNIX\", \"AF_INET\"], [\"~AF_PACKET\"] or [\"none\"]",
            ),
        }
    }
    if !has_table && s.needs_seccomp() {
        errs.whole("[sandbox] seccomp restrictions", NO_TABLE);
    }
    if let Some(v) = &r.secure_bits {
        let mut bits = 0u32;
        for w in v.get_ref().iter().flat_map(|l| l.split_whitespace()) {
            bits |= match w {
                "noroot" => 1 << 0,
                "noroot-locked" => 1 << 1,
                "no-setuid-fixup" => 1 << 2,
                "no-setuid-fixup-locked" => 1 << 3,
                "keep-caps" => 1 << 4,
                "keep-caps-locked" => 1 << 5,
                _ => {
                    errs.at(
                        v.span(),
                        format!("[sandbox] secure_bits: {w:?} is not a secure bit"),
                        "noroot, noroot-locked, no-setuid-fixup, no-setuid-fixup-locked, keep-caps, keep-caps-locked",
                    );
                    0
                }
            };
        }
        s.secure_bits = Some(bits);
    }
    for (list, read_only) in [(&r.bind_paths, false), (&r.bind_read_only_paths, true)] {
        let key = if read_only {
            "bind_read_only_paths"
        } else {
            "bind_paths"
        };
        for e in list.iter().flatten() {
            let raw = e.get_ref();
            let (optional, rest) = match raw.strip_prefix('-') {
                Some(x) => (true, x),
                None => (false, raw.as_str()),
            };
            let mut parts = rest.split(':');
            let src = parts.next().unwrap_or_default();
            let dst = parts.next().filter(|d| !d.is_empty()).unwrap_or(src);
            let recursive = match parts.next() {
                None | Some("rbind") => true,
                Some("norbind") => false,
                Some(o) => {
                    errs.at(
                        e.span(),
                        format!("[sandbox] {key}: {o:?} is not rbind or norbind"),
                        "",
                    );
                    true
                }
            };
            let src_sp = Spanned::new(e.span(), src.to_string());
            let dst_sp = Spanned::new(e.span(), dst.to_string());
            if let (Some(source), Some(target)) = (
                abs_path(errs, &src_sp, &format!("sandbox.{key}")),
                abs_path(errs, &dst_sp, &format!("sandbox.{key}")),
            ) {
                s.bind_paths.push(crate::unit::BindPath {
                    source,
                    target,
                    read_only,
                    optional,
                    recursive,
                });
            }
        }
    }
}

/// A signal number from `SIGTERM`/`TERM`, including SIGKILL (an exit
/// status, not a stop signal).
fn parse_signal_any(s: &str) -> Option<i32> {
    let up = s.trim().to_ascii_uppercase();
    let full = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<UnitSpec, Vec<UnitError>> {
        parse_unit("u", Path::new("/etc/supd/units/u.toml"), text)
    }

    fn err(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn defaults() {
        let s = parse("exec = [\"/bin/true\"]").unwrap();
        assert_eq!(s.kind, UnitKind::Longrun);
        assert_eq!(s.restart.policy, RestartPolicy::OnFailure);
        assert_eq!(s.restart.delay, Duration::from_secs(1));
        assert_eq!(s.restart.max_delay, Duration::from_secs(60));
        assert_eq!(s.restart.burst, 5);
        assert_eq!(s.stop.signal, libc::SIGTERM);
        assert_eq!(s.stop.timeout, Duration::from_secs(10));
        assert_eq!(s.ready.kind, ReadyKind::Started);
        assert_eq!(s.priority, Priority::Normal);
        assert!(!s.essential);
        let o = parse("type = \"oneshot\"\nexec = [\"/bin/true\"]").unwrap();
        assert_eq!(o.restart.policy, RestartPolicy::Never);
    }

    #[test]
    fn every_key() {
        let s = parse(
            r#"
description = "PostgreSQL"
type = "longrun"
exec = ["/usr/lib/postgresql/15/bin/postgres", "-D", "/srv/pg/data"]
env = { PGTZ = "UTC" }
user = "postgres"
group = "postgres"
working_directory = "/srv/pg/"
essential = true
priority = "critical"
requires = ["network"]
wants = ["logs"]
after = ["logs", "clock"]

[[mount]]
path = "/srv/pg/"
fstype = "ext4"
source = "/dev/vdb"
options = ["rw"]
on_loss = "ignore"
timeout = "30s"

[ready]
kind = "notify"
timeout = "1m"

[health]
exec = ["pg_isready"]
interval = "5s"
timeout = "2s"
start_period = "10s"
failure_threshold = 4
success_threshold = 2
on_unhealthy = "report"

[restart]
policy = "always"
delay = "500ms"
max_delay = "1m"
burst = 5
interval = "5m"
reset_after = "2m"

[stop]
signal = "SIGINT"
timeout = "30s"
"#,
        )
        .unwrap();
        assert_eq!(s.env["PGTZ"], "UTC");
        assert_eq!(s.working_directory, Some(PathBuf::from("/srv/pg")));
        assert_eq!(s.mounts[0].path, PathBuf::from("/srv/pg"));
        assert_eq!(s.mounts[0].on_loss, OnLoss::Ignore);
        assert_eq!(s.mounts[0].timeout, Some(Duration::from_secs(30)));
        assert_eq!(s.ready.kind, ReadyKind::Notify);
        let h = s.health.unwrap();
        assert_eq!(h.failure_threshold, 4);
        assert_eq!(h.on_unhealthy, OnUnhealthy::Report);
        assert_eq!(s.stop.signal, libc::SIGINT);
        assert_eq!(s.restart.reset_after, Duration::from_secs(120));
        assert_eq!(s.priority, Priority::Critical);
    }

    #[test]
    fn syntax_error_has_line() {
        let e = err("exec = [\"/bin/true\"]\n\ndescription = \"unterminated\n");
        assert!(e[0].contains("u.toml:3:"), "{e:?}");
    }

    #[test]
    fn unknown_key_suggests() {
        let e = err("exce = [\"/bin/true\"]\n");
        assert!(e[0].contains("u.toml:1:"), "{e:?}");
        assert!(e[0].contains("did you mean `exec`"), "{e:?}");
        let e = err("exec = [\"/bin/true\"]\n[restart]\npolcy = \"always\"\n");
        assert!(e[0].contains(":3:") && e[0].contains("`policy`"), "{e:?}");
    }

    #[test]
    fn wrong_type_and_bad_enum() {
        let e = err("exec = \"/bin/true\"\n");
        assert!(
            e[0].contains(":1:") && e[0].contains("invalid type"),
            "{e:?}"
        );
        let e = err("exec = [\"/bin/true\"]\ntype = \"daemon\"\n");
        assert!(e[0].contains(":2:") && e[0].contains("daemon"), "{e:?}");
    }

    #[test]
    fn semantic_errors_are_all_reported_with_lines() {
        let e = err(
            "exec = []\n[[mount]]\npath = \"srv\"\n[restart]\ndelay = \"soon\"\n[stop]\nsignal = \"SIGFOO\"\n",
        );
        let all = e.join("\n");
        assert!(
            all.contains(":1:") && all.contains("`exec` is empty"),
            "{all}"
        );
        assert!(all.contains(":3:") && all.contains("absolute"), "{all}");
        assert!(
            all.contains(":5:") && all.contains("not a duration"),
            "{all}"
        );
        assert!(
            all.contains(":7:") && all.contains("unknown signal"),
            "{all}"
        );
        let e = err("exec = [\"/x\"]\n[[mount]]\npath = \"/srv/../etc\"\n");
        assert!(e[0].contains(".."), "{e:?}");
    }

    #[test]
    fn restart_settings_that_cannot_work() {
        let e = err("exec = [\"/x\"]\n[restart]\ndelay = \"10s\"\nmax_delay = \"1s\"\n");
        assert!(e.join("").contains("max_delay"), "{e:?}");
        let e = err(
            "exec = [\"/x\"]\n[restart]\ndelay = \"1m\"\nmax_delay = \"10m\"\nburst = 10\ninterval = \"5m\"\n",
        );
        assert!(e.join("").contains("can never happen"), "{e:?}");
        assert!(parse("exec = [\"/x\"]\n[restart]\ndelay = \"0s\"\nmax_delay = \"0s\"\n").is_ok());
        // A huge burst is checked in bounded time (it once looped `burst`
        // times on the event loop, at every reload).
        let t0 = std::time::Instant::now();
        assert!(
            parse("exec = [\"/x\"]\n[restart]\ndelay = \"0s\"\nmax_delay = \"0s\"\nburst = 4000000000\n")
                .is_ok()
        );
        let e = err("exec = [\"/x\"]\n[restart]\nburst = 4000000000\n");
        assert!(e.join("").contains("can never happen"), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn resources_kill_mode_and_forking_keys() {
        use crate::unit::{CgLimit, KillMode};
        let s = parse(
            "type = \"forking\"\npid_file = \"/run/d.pid\"\nexec = [\"/x\"]\n[stop]\nkill_mode = \"mixed\"\n[resources]\nmemory_max = \"256M\"\nmemory_high = 100000000\ncpu_weight = 50\ncpu_max = \"150%\"\npids_max = 64\nio_weight = 10\n",
        )
        .expect("valid");
        assert_eq!(s.kind, UnitKind::Longrun);
        assert_eq!(s.pid_file, Some(PathBuf::from("/run/d.pid")));
        assert_eq!(s.stop.kill_mode, KillMode::Mixed);
        let r = &s.resources;
        assert_eq!(r.memory_max, Some(CgLimit::Value(256 << 20)));
        assert_eq!(r.memory_high, Some(CgLimit::Value(100_000_000)));
        assert_eq!(r.cpu_weight, Some(50));
        assert_eq!(r.cpu_max, Some((Some(150_000), 100_000)));
        assert_eq!(r.pids_max, Some(CgLimit::Value(64)));
        assert_eq!(r.io_weight, Some(10));
        assert_eq!(r.oom_policy, crate::unit::OomPolicy::Continue);
        assert!(!r.delegate && s.forking);
        // systemd's shares of the host (TasksMax=99%, MemoryMax=50%), the
        // OOM policy and delegation.
        let s = parse("exec = [\"/x\"]\n[resources]\npids_max = \"99.5%\"\nmemory_max = \"50%\"\noom_policy = \"stop\"\ndelegate = true\n").expect("valid");
        let r = &s.resources;
        assert_eq!(r.pids_max, Some(CgLimit::Percent(9950)));
        assert_eq!(r.memory_max, Some(CgLimit::Percent(5000)));
        assert_eq!(CgLimit::Percent(9950).resolve(Some(4_000_000)), "3980000");
        assert_eq!(r.oom_policy, crate::unit::OomPolicy::Stop);
        assert!(r.delegate && !s.forking);
        assert!(
            err("exec = [\"/x\"]\n[resources]\noom_policy = \"panic\"\npids_max = \"120%\"\n")
                .join("\n")
                .contains("oom_policy")
        );
        let e = err("exec = [\"/x\"]\npid_file = \"/run/x.pid\"\n[resources]\nmemory_max = \"lots\"\ncpu_weight = 0\ncpu_max = \"fast\"\npids_max = -1\n").join("\n");
        for needle in [
            "only for type",
            "memory_max",
            "cpu_weight` = 0",
            "cpu_max",
            "pids_max",
        ] {
            assert!(e.contains(needle), "{needle} not in:\n{e}");
        }
        assert!(
            err("exec = [\"/x\"]\n[stop]\nkill_mode = \"all\"\n")
                .join("")
                .contains("`group`, `main`, `mixed`")
        );
    }

    #[test]
    fn empty_arguments_are_allowed_but_not_an_empty_program() {
        let s = parse("exec = [\"/usr/bin/redis-server\", \"--logfile\", \"\"]").unwrap();
        assert_eq!(s.exec[2], "");
        let e = err("exec = [\"\", \"x\"]");
        assert!(e[0].contains("no program"), "{e:?}");
    }

    #[test]
    fn keys_for_imported_units() {
        let s = parse(
            r#"
type = "forking"
pid_file = "/run/x.pid"
exec = ["/usr/sbin/x"]
exec_start_pre = ["-/usr/sbin/x", "-t"]
exec_start_post = [["/bin/a"], ["+/bin/b", "c"]]
exec_stop_post = ["/bin/cleanup"]
reload_exec = [["/usr/sbin/x", "-t"], ["/bin/kill", "-HUP", "$MAINPID"]]
env_file = ["-/etc/default/x", "/etc/x.env"]
remain_after_exit = true
success_exit_status = [1, "SIGTERM", "HUP"]
restart_prevent_exit_status = [255]
state_directory = ["x", "x/sub"]
state_directory_mode = "0750"
runtime_directory_mode = "2755"
nice = -5
oom_score_adjust = -900
supplementary_groups = ["adm"]
condition_path_exists = ["/etc/x.conf", "!/etc/x/disabled"]
assert_path_is_directory = "/var/lib"
condition_virtualization = "!container"
[restart]
policy = "on-abnormal"
[stop]
timeout = "infinity"
[ready]
timeout = "infinity"
"#,
        )
        .unwrap();
        assert_eq!(s.pid_file, Some(PathBuf::from("/run/x.pid")));
        assert!(s.exec_start_pre[0].ignore_failure && !s.exec_start_pre[0].privileged);
        assert_eq!(s.exec_start_pre[0].argv, ["/usr/sbin/x", "-t"]);
        assert!(s.exec_start_post[1].privileged);
        assert_eq!(s.reload_exec.len(), 2);
        assert!(s.env_file[0].optional && !s.env_file[1].optional);
        assert!(s.remain_after_exit);
        assert_eq!(
            s.success_exit_status,
            [
                crate::unit::ExitMatch::Code(1),
                crate::unit::ExitMatch::Signal(libc::SIGTERM),
                crate::unit::ExitMatch::Signal(libc::SIGHUP)
            ]
        );
        assert_eq!(s.directory_modes.state, 0o750);
        assert_eq!(s.directory_modes.runtime, 0o2755);
        assert_eq!(s.nice, Some(-5));
        assert_eq!(s.conditions.len(), 4);
        assert!(s.conditions[1].negate && !s.conditions[1].assert);
        assert!(s.conditions.iter().any(|c| c.assert));
        assert_eq!(s.restart.policy, RestartPolicy::OnAbnormal);
        assert_eq!(s.stop.timeout, Duration::MAX);
        assert_eq!(s.ready.timeout, None);

        // Forking without a pid file: the main process comes from the
        // cgroup at run time.
        let f = parse("type = \"forking\"\nexec = [\"/x\"]\n").expect("valid");
        assert!(f.forking && f.pid_file.is_none());
        let e = err("exec = [\"/x\"]\npid_file = \"/run/x.pid\"\n");
        assert!(e[0].contains("only for type"), "{e:?}");
        let e = err(
            "exec = [\"/x\"]\nnice = 40\nstate_directory = [\"../etc\"]\ncondition_path_exists = \"relative\"\nsuccess_exit_status = [\"SIGNOPE\"]\n",
        );
        assert_eq!(e.len(), 4, "{e:?}");
    }

    #[test]
    fn sandbox_keys() {
        let s = parse(
            r#"
exec = ["/x"]
[sandbox]
no_new_privileges = true
capability_bounding_set = ["CAP_NET_BIND_SERVICE", "chown"]
ambient_capabilities = ["CAP_NET_BIND_SERVICE"]
private_tmp = true
protect_system = "strict"
protect_home = "read-only"
read_write_paths = ["-/var/lib/x", "/srv"]
protect_proc = "invisible"
proc_subset = "pid"
"#,
        )
        .unwrap();
        let sb = &s.sandbox;
        assert!(sb.no_new_privileges && sb.private_tmp);
        assert_eq!(sb.capability_bounding_set, Some((1 << 10) | 1));
        assert_eq!(sb.protect_system, crate::unit::ProtectSystem::Strict);
        assert_eq!(sb.protect_home, crate::unit::ProtectHome::ReadOnly);
        assert!(sb.read_write_paths[0].optional && !sb.read_write_paths[1].optional);
        assert!(sb.needs_mounts());
        let s = parse("exec = [\"/x\"]\n[sandbox]\ncapability_bounding_set = [\"~CAP_SYS_ADMIN\"]\nprotect_system = true\n").unwrap();
        assert_eq!(
            s.sandbox.capability_bounding_set.map(|m| m & (1 << 21)),
            Some(0)
        );
        assert_eq!(s.sandbox.protect_system, crate::unit::ProtectSystem::Yes);
        let e = err(
            "exec = [\"/x\"]\n[sandbox]\nprotect_system = \"very\"\ncapability_bounding_set = [\"CAP_NOPE\"]\nprivate_tmpp = true\n",
        );
        assert!(e.join("\n").contains("private_tmpp"), "{e:?}");
    }

    #[test]
    fn oneshot_ready_kind_and_probe_without_health() {
        let e = err("type = \"oneshot\"\nexec = [\"/x\"]\n[ready]\nkind = \"notify\"\n");
        assert!(e[0].contains(":4:"), "{e:?}");
        let e = err("exec = [\"/x\"]\n[ready]\nkind = \"probe\"\n");
        assert!(e[0].contains("needs a [readiness] or [health]"), "{e:?}");
        let e = err("exec = [\"/x\"]\n[health]\ntcp = \"127.0.0.1:1\"\nhttp = \"http://x/\"\n");
        assert!(e[0].contains("exactly one"), "{e:?}");
    }

    #[test]
    fn huge_durations_are_refused_with_line_and_maximum() {
        // Every duration key, each far beyond what an Instant can hold.
        let text = "\
exec = [\"/x\"]
[[mount]]
path = \"/srv/a\"
timeout = \"300000000000y\"
[ready]
kind = \"notify\"
timeout = \"300000000000y\"
watchdog = \"300000000000y\"
[health]
tcp = \"127.0.0.1:1\"
interval = \"300000000000y\"
timeout = \"300000000000y\"
start_period = \"300000000000y\"
[readiness]
tcp = \"127.0.0.1:1\"
interval = \"300000000000y\"
timeout = \"300000000000y\"
start_period = \"300000000000y\"
[restart]
delay = \"300000000000y\"
max_delay = \"300000000000y\"
interval = \"300000000000y\"
reset_after = \"300000000000y\"
[stop]
timeout = \"300000000000y\"
";
        let e = err(text);
        let all = e.join("\n");
        for line in [4, 7, 8, 11, 12, 13, 16, 17, 18, 20, 21, 22, 23, 25] {
            assert!(
                e.iter()
                    .any(|m| m.contains(&format!("u.toml:{line}:")) && m.contains("at most 10y")),
                "line {line} not refused:\n{all}"
            );
        }
        // The maximum itself is fine; one past it is not.
        assert!(parse("exec = [\"/x\"]\n[stop]\ntimeout = \"10y\"\n").is_ok());
        let e = err("exec = [\"/x\"]\n[stop]\ntimeout = \"10y 1s\"\n");
        assert!(
            e[0].contains("u.toml:3:") && e[0].contains("stop.timeout"),
            "{e:?}"
        );
    }

    #[test]
    fn self_dependency_and_signals() {
        let e = err("exec = [\"/x\"]\nrequires = [\"u\"]\n");
        assert!(e[0].contains("itself"), "{e:?}");
        assert_eq!(parse_signal("int"), Ok(libc::SIGINT));
        assert_eq!(parse_signal("SIGQUIT"), Ok(libc::SIGQUIT));
        assert!(parse_signal("SIGSTOP").is_err());
        assert!(parse_signal("SIGNOPE").is_err());
    }

    /// Found by tests/fuzz.rs (unit_text_structured): a NUL in a stop or
    /// probe command was accepted and could only fail at stop/probe time.
    #[test]
    fn nul_in_stop_and_probe_commands_is_refused() {
        let e = err("exec = [\"/x\"]\n[stop]\nexec = [\"/bin/kill\", \"a\\u0000b\"]\n");
        assert!(
            e[0].contains("[stop] exec") && e[0].contains("NUL"),
            "{e:?}"
        );
        let e = err("exec = [\"/x\"]\n[health]\nexec = [\"\\u0000\"]\n");
        assert!(
            e[0].contains("[health] exec") && e[0].contains("NUL"),
            "{e:?}"
        );
    }
}
