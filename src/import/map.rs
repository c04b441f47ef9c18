//! What each systemd directive means in supd.
//!
//! Owns: the directive table — for every directive of `[Unit]`,
//! `[Service]` and `[Install]`, whether supd honours it exactly, honours it
//! with a documented difference (approximated), or refuses it — and the
//! generated unit. Must never: do I/O (host facts come in `Context`), or
//! let a directive pass without a decision: a directive this table does
//! not know is refused by name.
//!
//! Where systemd's meaning and supd's differ, the import keeps systemd's
//! meaning: systemd's defaults (90 s start/stop timeouts, the start limit)
//! are written out explicitly, `RequiresMountsFor=` waits only for the
//! filesystems /etc/fstab lists for the path, and ordering against a unit
//! that does not exist is a no-op, as in systemd.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::socket::SocketSrc;
use super::syntax::{self, Command, Entry, LineProblem, Names, UnitFile};
use super::toml_out::{Doc, Item, V};
use super::{Finding, FstabEntry, Imported, Severity};

/// What the mapping needs to know about the host and the other units.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The name systemd knows the unit by: `nginx.service`,
    /// `postgresql@.service` (a template), `postgresql@15-main.service`
    /// (an instance of a template).
    pub unit_file_name: &'a str,
    /// Display names of the sources, indexed by `Entry::source` (the unit
    /// file, then its drop-ins).
    pub sources: &'a [String],
    /// supd units that exist (in the output directory) or are imported in
    /// the same run, by supd name.
    pub known: &'a BTreeSet<String>,
    /// Units imported in the same run that say `Before=` this unit.
    pub before_me: &'a [String],
    /// Units imported in the same run that say `After=` this unit.
    pub after_me: &'a [String],
    /// /etc/fstab, for `RequiresMountsFor=`.
    pub fstab: &'a [FstabEntry],
    /// This host's name, machine id and kernel, for `%H`, `%m`, `%v`.
    pub host: &'a syntax::Host,
    /// `.socket` files by name (`cups.socket`): given as inputs or found
    /// next to them, for `Requires=`/`Wants=`/`After=`/`Sockets=`.
    pub sockets: &'a BTreeMap<String, SocketSrc>,
    /// `Alias=` names of the units in the run and symlinks next to them
    /// (`chronyd.service`), with the supd name they stand for.
    pub aliases: &'a BTreeMap<String, String>,
}

/// supd's well-known ordering points. A unit may name them in `after`,
/// `wants` or `requires` without a unit file of that name: they are
/// reached at once unless the units directory defines them (see
/// `crate::unit::BUILTIN_TARGETS`).
fn builtin_target(target: &str) -> Option<&'static str> {
    crate::unit::BUILTIN_TARGETS
        .iter()
        .find(|t| **t == target)
        .copied()
}

/// systemd's special targets that have no supd counterpart and that a
/// service's dependency on is meaningless under supd.
const IGNORED_TARGETS: &[&str] = &[
    "shutdown",
    "umount",
    "final",
    "sockets",
    "paths",
    "timers",
    "slices",
    "graphical",
    "default",
    "emergency",
    "rescue",
    "halt",
    "poweroff",
    "reboot",
    "kexec",
    "exit",
    "getty",
    "syslog",
    "swap",
    "cryptsetup",
    "remote-cryptsetup",
    "local-fs-pre",
    "remote-fs-pre",
    "nss-user-lookup",
    "rpcbind",
    "sound",
    "printer",
    "bluetooth",
    "smartcard",
    "sysinit",
    "basic",
    "system-update",
    "first-boot-complete",
    "mail-transport-agent",
];

/// Targets systemd ships that stand for one mounted filesystem: (path,
/// fstype).
fn target_mount(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "rpc_pipefs.target" => Some(("/var/lib/nfs/rpc_pipefs", "rpc_pipefs")),
        _ => None,
    }
}

/// A systemd unit name as supd sees it.
enum Dep {
    /// A service: its supd name.
    Unit(String),
    /// A well-known target supd knows.
    Builtin(&'static str),
    /// A special target with no meaning under supd.
    Ignored(String),
    /// A mount unit: its path.
    Mount(String),
    /// A socket, device, timer...: not something supd has.
    Other(String),
}

fn classify(name: &str) -> Dep {
    let Some((stem, kind)) = name.rsplit_once('.') else {
        return Dep::Other(name.to_string());
    };
    match kind {
        "service" => Dep::Unit(stem.to_string()),
        "target" => match builtin_target(stem) {
            Some(b) => Dep::Builtin(b),
            None if IGNORED_TARGETS.contains(&stem) => Dep::Ignored(name.to_string()),
            None => Dep::Other(name.to_string()),
        },
        "mount" => Dep::Mount(if stem == "-" {
            "/".to_string()
        } else {
            format!("/{}", syntax::unescape_name(stem))
        }),
        _ => Dep::Other(name.to_string()),
    }
}

/// The path a `.device` unit stands for: `dev-sda1.device` is /dev/sda1,
/// `sys-subsystem-net-devices-eth0.device` (udev's alias for a network
/// interface) /sys/class/net/eth0. A template's `%i` (escaped) becomes
/// `%I` (the unescaped instance), as systemd unescapes the whole name.
fn device_path(name: &str) -> Option<String> {
    let stem = name.strip_suffix(".device")?;
    let path = match stem.strip_prefix("sys-subsystem-net-devices-") {
        Some(ifname) => format!("/sys/class/net/{}", syntax::unescape_name(ifname)),
        None if stem.starts_with("dev-") || stem.starts_with("sys-") => {
            format!("/{}", syntax::unescape_name(stem))
        }
        None => return None,
    };
    Some(path.replace("%i", "%I"))
}

/// How a `Limit*=` value is written.
#[derive(Clone, Copy)]
enum Unit {
    Count,
    Bytes,
    Seconds,
    Micros,
    Nice,
}

/// The supd unit name for a systemd file name.
pub fn supd_name(unit_file_name: &str) -> Result<String, String> {
    let Some(stem) = unit_file_name.strip_suffix(".service") else {
        return Err(format!(
            "{unit_file_name} is not a .service unit; supd imports services only (sockets, timers, mounts and paths have no supd equivalent)"
        ));
    };
    let ok = !stem.is_empty()
        && stem.len() <= 64
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'));
    if !ok {
        return Err(format!(
            "the unit name {stem:?} is not a valid supd name (letters, digits, _ . @ -, at most 64 characters)"
        ));
    }
    Ok(stem.to_string())
}

/// The units a file names in `Before=` (their supd names), so that the
/// command can give them the reverse `after` when they are imported in
/// the same run.
pub fn befores(file: &UnitFile, names: &Names) -> Vec<String> {
    ordering(file, names, "Before")
}

/// The units a file names in `After=` (their supd names).
pub fn afters(file: &UnitFile, names: &Names) -> Vec<String> {
    ordering(file, names, "After")
}

fn ordering(file: &UnitFile, names: &Names, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(unit) = file.section("Unit") {
        for e in unit.entries.iter().filter(|e| e.key == key) {
            let Ok(v) = syntax::expand_specifiers(&e.value, names) else {
                continue;
            };
            for w in v.split_whitespace() {
                if let Dep::Unit(n) = classify(w) {
                    out.push(n);
                }
            }
        }
    }
    out
}

/// One `Exec*=` command with where it was written.
#[derive(Debug, Clone)]
struct Cmd {
    cmd: Command,
    entry: Entry,
}

/// Everything read from the file, before the unit is written.
#[derive(Default)]
struct Facts {
    kind: Option<(String, Entry)>,
    exec_start: Vec<Cmd>,
    exec_condition: Vec<Cmd>,
    exec_start_pre: Vec<Cmd>,
    exec_start_post: Vec<Cmd>,
    exec_stop: Vec<Cmd>,
    exec_stop_post: Vec<Cmd>,
    exec_reload: Vec<Cmd>,
    user: Option<String>,
    group: Option<String>,
    pid_file: Option<(String, Entry)>,
    remain_after_exit: Option<(bool, Entry)>,
    restart: Option<(String, Entry)>,
    restart_sec: Option<(Duration, Entry)>,
    limit_interval: Option<(Option<Duration>, Entry)>,
    limit_burst: Option<(u32, Entry)>,
    timeout_start: Option<(Option<Duration>, Entry)>,
    timeout_stop: Option<(Option<Duration>, Entry)>,
    watchdog: Option<(Option<Duration>, Entry)>,
    stdout: Option<(String, Entry)>,
    stderr: Option<(String, Entry)>,
    /// Every dependency word with its directive, in order.
    deps: Vec<(String, String, Entry)>,
    /// `SendSIGKILL=no`.
    no_sigkill: Option<Entry>,
    /// `PermissionsStartOnly=yes`: helpers run as root.
    permissions_start_only: bool,
    /// Capability sets as far as read.
    bounding: Option<u64>,
    ambient: Option<u64>,
    /// Directives whose meaning depends on sandboxing being absent, for
    /// `+`/`!` prefixes (the privileged escape is meaningless without it).
    sandboxed: bool,
    /// `StandardInput=socket`.
    stdin_socket: Option<Entry>,
    /// `BusName=`.
    bus_name: Option<(String, Entry)>,
}

struct Mapper<'a> {
    ctx: Context<'a>,
    names: Names,
    template: bool,
    doc: Doc,
    findings: Vec<Finding>,
    facts: Facts,
    /// `.socket` files already mapped into `[[listen]]`.
    sockets_done: Vec<String>,
}

impl<'a> Mapper<'a> {
    fn file_of(&self, e: &Entry) -> String {
        self.ctx
            .sources
            .get(e.source)
            .cloned()
            .unwrap_or_else(|| self.ctx.unit_file_name.to_string())
    }

    fn find(&mut self, sev: Severity, e: &Entry, why: impl Into<String>) {
        let f = Finding {
            severity: sev,
            directive: e.key.clone(),
            file: self.file_of(e),
            line: e.line,
            why: why.into(),
        };
        if !self.findings.contains(&f) {
            self.findings.push(f);
        }
    }

    fn refuse(&mut self, e: &Entry, why: impl Into<String>) {
        self.find(Severity::Refused, e, why);
    }

    fn approx(&mut self, e: &Entry, why: impl Into<String>) {
        self.find(Severity::Approximated, e, why);
    }

    fn note(&mut self, e: &Entry, why: impl Into<String>) {
        self.find(Severity::Note, e, why);
    }

    /// Does a supd unit of this name exist (or its template)?
    fn is_known(&self, name: &str) -> bool {
        self.ctx.known.contains(name)
            || name
                .split_once('@')
                .is_some_and(|(p, i)| !i.is_empty() && self.ctx.known.contains(&format!("{p}@")))
    }

    /// The comment written above a key: the directive as written.
    fn src(&self, e: &Entry) -> String {
        let file = self.file_of(e);
        let base = file.rsplit('/').next().unwrap_or(&file);
        format!("{}={}  ({base}:{})", e.key, e.value, e.line)
    }

    /// The value with specifiers expanded; refused (None) when one cannot be.
    fn value(&mut self, e: &Entry) -> Option<String> {
        match syntax::expand_specifiers(&e.value, &self.names) {
            Ok(v) => {
                let host_specs = e.value.replace("%%", "");
                if ["%H", "%l", "%m", "%v"]
                    .iter()
                    .any(|x| host_specs.contains(x))
                {
                    self.approx(e, "%H/%l/%m/%v are written as this host's hostname, machine id or kernel at import time; import again on another host");
                }
                Some(v)
            }
            Err(why) => {
                self.refuse(e, why);
                None
            }
        }
    }

    fn bool(&mut self, e: &Entry) -> Option<bool> {
        let b = syntax::parse_bool(&e.value);
        if b.is_none() {
            self.refuse(e, format!("{:?} is not a boolean (yes/no)", e.value));
        }
        b
    }

    fn timespan(&mut self, e: &Entry) -> Option<Option<Duration>> {
        match syntax::parse_timespan(&e.value) {
            Ok(d) => Some(d),
            Err(why) => {
                self.refuse(e, why);
                None
            }
        }
    }

    fn commands(&mut self, e: &Entry, list: fn(&mut Facts) -> &mut Vec<Cmd>) {
        // An empty assignment resets the list (as in drop-ins).
        if e.value.trim().is_empty() {
            list(&mut self.facts).clear();
            return;
        }
        let Some(v) = self.value(e) else { return };
        match syntax::split_exec(&v) {
            Ok(cmds) => {
                for cmd in cmds {
                    list(&mut self.facts).push(Cmd {
                        cmd,
                        entry: e.clone(),
                    });
                }
            }
            Err(why) => self.refuse(e, format!("cannot read the command line: {why}")),
        }
    }

    // ---- the directive table --------------------------------------------

    fn unit_entry(&mut self, e: &Entry) {
        match e.key.as_str() {
            "Description" => {
                if let Some(v) = self.value(e) {
                    self.doc.set("", "description", V::Str(v), "");
                }
            }
            "Documentation" => {
                self.doc.header.push(format!("Documentation: {}", e.value));
            }
            "After"
            | "Wants"
            | "Requires"
            | "BindsTo"
            | "Before"
            | "Requisite"
            | "PartOf"
            | "Upholds"
            | "ReloadPropagatedFrom" => {
                if e.value.trim().is_empty() {
                    let key = e.key.clone();
                    self.facts.deps.retain(|(k, _, _)| *k != key);
                    return;
                }
                if let Some(v) = self.value(e) {
                    for w in v.split_whitespace() {
                        self.facts
                            .deps
                            .push((e.key.clone(), w.to_string(), e.clone()));
                    }
                }
            }
            "Conflicts" => {
                let Some(v) = self.value(e) else { return };
                for w in v.split_whitespace() {
                    if w == "shutdown.target" || w == "umount.target" {
                        continue;
                    }
                    // A socket is known to supd only through the service of
                    // its name (socket activation): without that service
                    // there is nothing to conflict with.
                    let known = match classify(w) {
                        Dep::Unit(n) => self.is_known(&n),
                        Dep::Other(o) => match o.strip_suffix(".socket") {
                            Some(stem) => self.is_known(stem),
                            None => true,
                        },
                        _ => true,
                    };
                    if known {
                        self.refuse(
                            e,
                            format!("supd has no conflicts between units ({w}); stop one of them yourself"),
                        );
                    } else {
                        self.note(e, format!("{w} is not a supd unit here: no effect, as in systemd when it is not loaded"));
                    }
                }
            }
            "OnFailure" => {
                let Some(v) = self.value(e) else { return };
                for w in v.split_whitespace() {
                    match classify(w) {
                        Dep::Unit(n) if self.is_known(&n) => {
                            let src = self.src(e);
                            self.doc.push("", "on_failure", V::Strs(vec![n]), src);
                        }
                        Dep::Unit(_) => self.note(e, format!("{w} is not a supd unit here: no effect, as in systemd when it cannot be loaded")),
                        _ => self.refuse(e, format!("{w}: supd starts only services on failure")),
                    }
                }
            }
            "OnFailureJobMode" => self.note(e, "about systemd's job engine; no effect under supd"),
            "DefaultDependencies" => {
                // supd adds no implicit dependencies; the defaults' only
                // effects (after sysinit/basic, stop at shutdown) are what
                // supd does anyway.
            }
            "RequiresMountsFor" | "WantsMountsFor" => {
                let Some(v) = self.value(e) else { return };
                for p in v.split_whitespace() {
                    self.mounts_for(e, p);
                }
            }
            "StartLimitIntervalSec" | "StartLimitInterval" => {
                if let Some(d) = self.timespan(e) {
                    self.facts.limit_interval = Some((d, e.clone()));
                }
            }
            "StartLimitBurst" => match e.value.trim().parse::<u32>() {
                Ok(n) => self.facts.limit_burst = Some((n, e.clone())),
                Err(_) => self.refuse(e, format!("{:?} is not a count", e.value)),
            },
            "StartLimitAction" | "FailureAction" | "SuccessAction" => {
                if e.value.trim() != "none" {
                    self.refuse(e, "supd does not reboot or power off the host because one unit failed or succeeded");
                }
            }
            "SourcePath" => self.note(e, "generated unit; importing what systemd generated"),
            "IgnoreOnIsolate"
            | "AllowIsolate"
            | "CollectMode"
            | "JobTimeoutSec"
            | "JobRunningTimeoutSec"
            | "JobTimeoutAction"
            | "StopWhenUnneeded"
            | "RefuseManualStart"
            | "RefuseManualStop" => {
                self.note(e, "about systemd's job engine; no effect under supd");
            }
            k if k.starts_with("Condition") || k.starts_with("Assert") => self.condition(e),

            _ => self.unknown(e),
        }
    }

    fn service_entry(&mut self, e: &Entry) {
        match e.key.as_str() {
            "Type" => self.facts.kind = Some((e.value.trim().to_string(), e.clone())),
            "ExecStart" => self.commands(e, |f| &mut f.exec_start),
            "ExecStartPre" => self.commands(e, |f| &mut f.exec_start_pre),
            "ExecStartPost" => self.commands(e, |f| &mut f.exec_start_post),
            "ExecStop" => self.commands(e, |f| &mut f.exec_stop),
            "ExecStopPost" => self.commands(e, |f| &mut f.exec_stop_post),
            "ExecReload" => self.commands(e, |f| &mut f.exec_reload),
            "ExecCondition" => self.commands(e, |f| &mut f.exec_condition),
            "Environment" => {
                if e.value.trim().is_empty() {
                    self.doc.remove("", "env");
                    return;
                }
                let Some(v) = self.value(e) else { return };
                match syntax::split_words(&v) {
                    Ok(words) => {
                        let mut kv = Vec::new();
                        for w in words {
                            match w.split_once('=') {
                                Some((k, v)) if valid_env_name(k) => {
                                    kv.push((k.to_string(), V::Str(v.to_string())))
                                }
                                _ => self.note(
                                    e,
                                    format!("{w:?} is not NAME=VALUE; ignored, as systemd ignores it"),
                                ),
                            }
                        }
                        if !kv.is_empty() {
                            let src = self.src(e);
                            self.doc.push("", "env", V::Map(kv), src);
                        }
                    }
                    Err(why) => self.refuse(e, format!("cannot read the assignments: {why}")),
                }
            }
            "User" => {
                let Some(v) = self.value(e) else { return };
                if v.parse::<u32>().is_ok() {
                    self.refuse(e, "a numeric user id; supd needs a user name");
                    return;
                }
                let src = self.src(e);
                self.doc.set("", "user", V::Str(v.clone()), src);
                self.facts.user = Some(v);
            }
            "Group" => {
                let Some(v) = self.value(e) else { return };
                if v.parse::<u32>().is_ok() {
                    self.refuse(e, "a numeric group id; supd needs a group name");
                    return;
                }
                let src = self.src(e);
                self.doc.set("", "group", V::Str(v.clone()), src);
                self.facts.group = Some(v);
            }
            "WorkingDirectory" => {
                let Some(v) = self.value(e) else { return };
                let (optional, path) = match v.strip_prefix('-') {
                    Some(p) => (true, p.to_string()),
                    None => (false, v.clone()),
                };
                if path == "~" || !path.starts_with('/') {
                    self.refuse(e, "only an absolute path is supported (not ~)");
                    return;
                }
                if optional {
                    self.approx(e, "`-`: systemd starts the service anyway when the directory is missing; supd fails the start");
                }
                let src = self.src(e);
                self.doc.set("", "working_directory", V::Str(path), src);
            }
            "UMask" => {
                let v = e.value.trim();
                match u32::from_str_radix(v, 8) {
                    Ok(m) if m <= 0o777 => {
                        let src = self.src(e);
                        self.doc
                            .set("", "umask", V::Str(format!("{m:04o}")), src);
                    }
                    _ => self.refuse(e, format!("{v:?} is not an octal mask")),
                }
            }
            "LimitNOFILE" => self.limit(e, "nofile", Unit::Count),
            "LimitNPROC" => self.limit(e, "nproc", Unit::Count),
            "LimitCORE" => self.limit(e, "core", Unit::Bytes),
            "LimitMEMLOCK" => self.limit(e, "memlock", Unit::Bytes),
            "LimitCPU" => self.limit(e, "cpu", Unit::Seconds),
            "LimitFSIZE" => self.limit(e, "fsize", Unit::Bytes),
            "LimitDATA" => self.limit(e, "data", Unit::Bytes),
            "LimitSTACK" => self.limit(e, "stack", Unit::Bytes),
            "LimitRSS" => self.limit(e, "rss", Unit::Bytes),
            "LimitAS" => self.limit(e, "as", Unit::Bytes),
            "LimitLOCKS" => self.limit(e, "locks", Unit::Count),
            "LimitSIGPENDING" => self.limit(e, "sigpending", Unit::Count),
            "LimitMSGQUEUE" => self.limit(e, "msgqueue", Unit::Bytes),
            "LimitNICE" => self.limit(e, "nice", Unit::Nice),
            "LimitRTPRIO" => self.limit(e, "rtprio", Unit::Count),
            "LimitRTTIME" => self.limit(e, "rttime", Unit::Micros),
            "Restart" => self.facts.restart = Some((e.value.trim().to_string(), e.clone())),
            "RestartSec" => {
                if let Some(d) = self.timespan(e) {
                    self.facts.restart_sec = Some((d.unwrap_or(Duration::from_secs(3600)), e.clone()));
                }
            }
            "StartLimitIntervalSec" | "StartLimitInterval" | "StartLimitBurst" => {
                // Accepted in [Service] by older units.
                self.unit_entry(e)
            }
            "TimeoutStartSec" => {
                if let Some(d) = self.timespan(e) {
                    self.facts.timeout_start = Some((zero_is_infinity(d), e.clone()));
                }
            }
            "TimeoutStopSec" => {
                if let Some(d) = self.timespan(e) {
                    self.facts.timeout_stop = Some((zero_is_infinity(d), e.clone()));
                }
            }
            "TimeoutSec" => {
                if let Some(d) = self.timespan(e) {
                    let d = zero_is_infinity(d);
                    self.facts.timeout_start = Some((d, e.clone()));
                    self.facts.timeout_stop = Some((d, e.clone()));
                }
            }
            "TimeoutAbortSec" => {
                self.note(e, "supd does not send SIGABRT on a watchdog timeout; it stops the unit");
            }
            "WatchdogSec" => {
                if let Some(d) = self.timespan(e) {
                    self.facts.watchdog = Some((zero_is_infinity(d), e.clone()));
                }
            }
            "PIDFile" => {
                if let Some(v) = self.value(e) {
                    self.facts.pid_file = Some((v, e.clone()));
                }
            }
            "RemainAfterExit" => {
                if let Some(b) = self.bool(e) {
                    self.facts.remain_after_exit = Some((b, e.clone()));
                }
            }
            "KillSignal" => match crate::unit::toml::parse_signal(e.value.trim()) {
                Ok(_) => {
                    let src = self.src(e);
                    self.doc
                        .set("stop", "signal", V::Str(e.value.trim().to_string()), src);
                }
                Err(why) => self.refuse(e, why),
            },
            "KillMode" => {
                let (mode, why) = match e.value.trim() {
                    "control-group" => ("group", "every process of the unit's cgroup gets the stop signal; without cgroup containment (supd says so in `status`), its process group does, and a process that left it is not stopped"),
                    "mixed" => ("mixed", "the main process gets the stop signal, the rest of the unit's cgroup SIGKILL once it exited; without cgroup containment, the rest is its process group"),
                    "process" => ("main", "only the main process gets the stop signal; what it leaves behind gets SIGKILL at the stop timeout (systemd would leave it running: supd's unit is stopped only when all its processes are gone)"),
                    other => {
                        self.refuse(e, format!("KillMode={other}: supd always stops what it started"));
                        return;
                    }
                };
                let src = self.src(e);
                self.doc.set("stop", "kill_mode", V::Str(mode.into()), src);
                self.approx(e, why);
            }
            "SendSIGKILL" => match self.bool(e) {
                Some(true) => {}
                Some(false) => {
                    self.facts.no_sigkill = Some(e.clone());
                    self.approx(e, "supd waits for the service to stop however long it takes (stop timeout = \"infinity\"); systemd would give up waiting after TimeoutStopSec and leave it running");
                }
                None => {}
            },
            "SendSIGHUP" => match self.bool(e) {
                Some(false) => {}
                Some(true) => self.refuse(e, "supd does not send SIGHUP after the stop signal"),
                None => {}
            },
            "RestartKillSignal" | "FinalKillSignal" | "WatchdogSignal" => {
                self.refuse(e, "not supported; supd uses [stop] signal and SIGKILL");
            }
            "RuntimeDirectory" => {
                let Some(v) = self.value(e) else { return };
                let dirs: Vec<String> = v.split_whitespace().map(str::to_string).collect();
                if dirs.iter().any(|d| d.contains("..") || d.starts_with('/')) {
                    self.refuse(e, "names must be relative, below /run");
                    return;
                }
                let src = self.src(e);
                self.doc.push("", "runtime_directory", V::Strs(dirs), src);
            }
            "RuntimeDirectoryPreserve" => self.note(e, "supd keeps runtime directories across restarts and stops"),
            "StandardOutput" => self.facts.stdout = Some((e.value.trim().to_string(), e.clone())),
            "StandardError" => self.facts.stderr = Some((e.value.trim().to_string(), e.clone())),
            "StandardInput" if e.value.trim() == "socket" => {
                self.facts.stdin_socket = Some(e.clone());
            }
            "StandardInput" => {
                if e.value.trim() != "null" {
                    self.refuse(e, "services get /dev/null as stdin under supd");
                }
            }
            "SyslogIdentifier" | "SyslogFacility" | "SyslogLevel" | "SyslogLevelPrefix"
            | "LogLevelMax" | "LogExtraFields" | "LogRateLimitIntervalSec"
            | "LogRateLimitBurst" => self.note(
                e,
                "supd logs each line of the service's output tagged with the unit's name",
            ),
            "NotifyAccess" => match e.value.trim() {
                "none" => {}
                _ => self.note(
                    e,
                    "supd accepts sd_notify messages from any process of the unit's process group",
                ),
            },
            "IgnoreSIGPIPE" => match self.bool(e) {
                Some(false) => {}
                Some(true) => self.approx(e, "supd starts services with SIGPIPE at its default action"),
                None => {}
            },
            "NonBlocking" => {
                if let Some(true) = self.bool(e) {
                    self.approx(e, "supd passes [[listen]] descriptors in blocking mode");
                }
            }
            "GuessMainPID" => match self.bool(e) {
                Some(false) => self.approx(e, "a forking unit without PIDFile= still gets its main process named from its cgroup when exactly one process there has its parent outside it (else none, as with GuessMainPID=no)"),
                Some(true) => self.note(e, "supd's main process is the one it started, the PIDFile's, or the root of the unit's cgroup"),
                None => {}
            },
            "PermissionsStartOnly" => {
                if let Some(b) = self.bool(e) {
                    // Every helper command runs with full privileges, as
                    // with a `+` prefix each.
                    self.facts.permissions_start_only = b;
                }
            }
            "TasksMax" => self.cg_limit(e, "pids_max", false),
            "MemoryMax" | "MemoryLimit" => self.cg_limit(e, "memory_max", true),
            "MemoryHigh" => self.cg_limit(e, "memory_high", true),
            "CPUWeight" => self.cg_weight(e, "cpu_weight", 1, 10000, 100),
            "IOWeight" => self.cg_weight(e, "io_weight", 1, 10000, 100),
            // The cgroup v1 names: systemd itself converts them.
            "CPUShares" => self.cg_weight(e, "cpu_weight", 2, 262144, 1024),
            "BlockIOWeight" => self.cg_weight(e, "io_weight", 10, 1000, 500),
            "CPUQuota" => {
                let v = e.value.trim();
                let ok = v
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<f64>().ok())
                    .is_some_and(|p| p > 0.0 && p.is_finite() && p <= 1_000_000.0);
                if v.is_empty() {
                    self.doc.remove("resources", "cpu_max");
                } else if ok {
                    let src = self.src(e);
                    self.doc.set("resources", "cpu_max", V::Str(v.to_string()), src);
                } else {
                    self.refuse(e, format!("{v:?} is not a percentage like 50% or 200%"));
                }
            }
            "OOMPolicy" => match e.value.trim() {
                w @ ("continue" | "stop" | "kill") => {
                    let src = self.src(e);
                    self.doc.set("resources", "oom_policy", V::Str(w.into()), src);
                }
                w => self.refuse(e, format!("{w:?} is not continue, stop or kill")),
            },
            "Delegate" => match e.value.trim() {
                w if syntax::parse_bool(w).is_some() => {
                    let b = syntax::parse_bool(w) == Some(true);
                    let src = self.src(e);
                    self.doc.set("resources", "delegate", V::Bool(b), src);
                }
                // A list of controllers: supd delegates what its subtree has.
                _ => {
                    let src = self.src(e);
                    self.doc.set("resources", "delegate", V::Bool(true), src);
                    self.approx(e, "the group is delegated with every controller supd's subtree has, not only those listed");
                }
            },
            "DevicePolicy" => match e.value.trim() {
                w @ ("auto" | "closed" | "strict") => {
                    let src = self.src(e);
                    self.doc.set("resources", "device_policy", V::Str(w.into()), src);
                }
                w => self.refuse(e, format!("{w:?} is not auto, closed or strict")),
            },
            "DeviceAllow" => {
                if e.value.trim().is_empty() {
                    self.doc.remove("resources", "device_allow");
                    return;
                }
                let Some(v) = self.value(e) else { return };
                let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
                match crate::unit::toml::parse_device_allow(&v) {
                    Ok(_) => {
                        let src = self.src(e);
                        self.doc
                            .push("resources", "device_allow", V::Strs(vec![v]), src);
                    }
                    Err(why) => self.refuse(e, why),
                }
            }
            "MemoryAccounting" | "CPUAccounting" | "IOAccounting" | "TasksAccounting" => self.note(
                e,
                "supd's cgroup per unit accounts with every controller its subtree has",
            ),
            "Slice" => self.refuse(
                e,
                "supd has no slices: each unit's cgroup sits in supd's own subtree (set its [resources] instead)",
            ),
            "ManagedOOMSwap" | "ManagedOOMMemoryPressure" => self.refuse(
                e,
                "supd has no systemd-oomd; use [resources] memory_high / memory_max with oom_policy",
            ),
            "NoNewPrivileges" => self.sandbox_bool(e, "no_new_privileges"),
            "PrivateTmp" => self.sandbox_bool(e, "private_tmp"),
            "PrivateDevices" => self.sandbox_bool(e, "private_devices"),
            "PrivateNetwork" => self.sandbox_bool(e, "private_network"),
            "PrivateIPC" => self.sandbox_bool(e, "private_ipc"),
            "ProtectKernelTunables" => self.sandbox_bool(e, "protect_kernel_tunables"),
            "ProtectKernelModules" => self.sandbox_bool(e, "protect_kernel_modules"),
            "ProtectKernelLogs" => self.sandbox_bool(e, "protect_kernel_logs"),
            "ProtectControlGroups" => self.sandbox_bool(e, "protect_control_groups"),
            "ProtectHostname" => self.sandbox_bool(e, "protect_hostname"),
            "ProtectClock" => {
                self.sandbox_bool(e, "protect_clock");
                if syntax::parse_bool(&e.value) == Some(true) {
                    self.approx(e, "by dropping CAP_SYS_TIME and CAP_WAKE_ALARM and denying the @clock system calls (no /dev/rtc device rule)");
                }
            }
            "ProtectSystem" => {
                let v = match e.value.trim() {
                    "strict" => "strict",
                    "full" => "full",
                    w => match syntax::parse_bool(w) {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => {
                            self.refuse(e, format!("{w:?} is not yes, no, full or strict"));
                            return;
                        }
                    },
                };
                self.facts.sandboxed |= v != "no";
                let src = self.src(e);
                self.doc.set("sandbox", "protect_system", V::Str(v.into()), src);
            }
            "ProtectHome" => {
                let v = match e.value.trim() {
                    "read-only" => "read-only",
                    "tmpfs" => "tmpfs",
                    w => match syntax::parse_bool(w) {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => {
                            self.refuse(e, format!("{w:?} is not yes, no, read-only or tmpfs"));
                            return;
                        }
                    },
                };
                self.facts.sandboxed |= v != "no";
                let src = self.src(e);
                self.doc.set("sandbox", "protect_home", V::Str(v.into()), src);
            }
            "ProtectProc" => match e.value.trim() {
                w @ ("invisible" | "noaccess" | "ptraceable" | "default") => {
                    self.facts.sandboxed = true;
                    let src = self.src(e);
                    self.doc.set("sandbox", "protect_proc", V::Str(w.into()), src);
                }
                w => self.refuse(e, format!("{w:?} is not invisible, noaccess, ptraceable or default")),
            },
            "ProcSubset" => match e.value.trim() {
                w @ ("pid" | "all") => {
                    self.facts.sandboxed = true;
                    let src = self.src(e);
                    self.doc.set("sandbox", "proc_subset", V::Str(w.into()), src);
                }
                w => self.refuse(e, format!("{w:?} is not pid or all")),
            },
            "ReadWritePaths" | "ReadWriteDirectories" => self.sandbox_paths(e, "read_write_paths"),
            "ReadOnlyPaths" | "ReadOnlyDirectories" => self.sandbox_paths(e, "read_only_paths"),
            "InaccessiblePaths" | "InaccessibleDirectories" => {
                self.sandbox_paths(e, "inaccessible_paths")
            }
            "NoExecPaths" => self.sandbox_paths(e, "no_exec_paths"),
            "ExecPaths" => self.sandbox_paths(e, "exec_paths"),
            "CapabilityBoundingSet" => self.caps(e, "capability_bounding_set"),
            "AmbientCapabilities" => self.caps(e, "ambient_capabilities"),
            "LockPersonality" => self.sandbox_bool(e, "lock_personality"),
            "PrivateUsers" => self.sandbox_bool(e, "private_users"),
            "RemoveIPC" => self.sandbox_bool(e, "remove_ipc"),
            "MemoryDenyWriteExecute" => self.sandbox_bool(e, "memory_deny_write_execute"),
            "RestrictRealtime" => self.sandbox_bool(e, "restrict_realtime"),
            "RestrictSUIDSGID" => self.sandbox_bool(e, "restrict_suid_sgid"),
            "SystemCallFilter" | "RestrictAddressFamilies" | "SecureBits" => {
                self.seccomp_list(e)
            }
            "SystemCallErrorNumber" => {
                let v = e.value.trim();
                if v.is_empty() {
                    self.doc.remove("sandbox", "system_call_error_number");
                } else if let Err(why) = crate::unit::syscalls::parse_deny(v) {
                    self.refuse(e, why);
                } else {
                    let src = self.src(e);
                    self.doc
                        .set("sandbox", "system_call_error_number", V::Str(v.into()), src);
                }
            }
            "SystemCallArchitectures" => {
                let v = e.value.trim();
                if v.is_empty() {
                    self.doc.remove("sandbox", "system_call_architectures");
                } else if v.split_whitespace().all(|w| w == "native" || w == "x86-64")
                    && !crate::unit::syscalls::numbers::TABLE.is_empty()
                {
                    self.facts.sandboxed = true;
                    let src = self.src(e);
                    self.doc.set(
                        "sandbox",
                        "system_call_architectures",
                        V::Strs(vec!["native".into()]),
                        src,
                    );
                } else {
                    self.refuse(e, "supd's filters admit the native architecture alone (\"native\")");
                }
            }
            "RestrictNamespaces" => {
                let v = e.value.trim();
                let src = self.src(e);
                match syntax::parse_bool(v) {
                    Some(b) => {
                        self.facts.sandboxed |= b;
                        self.doc.set("sandbox", "restrict_namespaces", V::Bool(b), src);
                    }
                    None => match crate::unit::syscalls::parse_namespaces(&[v.to_string()]) {
                        Ok(_) => {
                            self.facts.sandboxed = true;
                            self.doc.set(
                                "sandbox",
                                "restrict_namespaces",
                                V::Strs(vec![v.to_string()]),
                                src,
                            );
                        }
                        Err(why) => self.refuse(e, why),
                    },
                }
            }
            "BindPaths" | "BindReadOnlyPaths" => {
                let key = if e.key == "BindPaths" {
                    "bind_paths"
                } else {
                    "bind_read_only_paths"
                };
                if e.value.trim().is_empty() {
                    self.doc.remove("sandbox", key);
                    return;
                }
                let Some(v) = self.value(e) else { return };
                let words = match syntax::split_words(&v) {
                    Ok(w) => w,
                    Err(why) => {
                        self.refuse(e, why);
                        return;
                    }
                };
                for w in &words {
                    let mut parts = w.trim_start_matches('-').split(':');
                    let src = parts.next().unwrap_or_default();
                    let dst = parts.next().unwrap_or(src);
                    let opt = parts.next().unwrap_or("rbind");
                    if !src.starts_with('/') || !(dst.is_empty() || dst.starts_with('/')) {
                        self.refuse(e, format!("{w:?}: paths must be absolute"));
                        return;
                    }
                    if !matches!(opt, "rbind" | "norbind") || parts.next().is_some() {
                        self.refuse(e, format!("{w:?}: options are rbind or norbind"));
                        return;
                    }
                }
                self.facts.sandboxed = true;
                let src = self.src(e);
                self.doc.push("sandbox", key, V::Strs(words), src);
            }
            "PrivateMounts"
            | "TemporaryFileSystem"
            | "RootDirectory" | "RootImage" | "MountAPIVFS"
            | "KeyringMode" | "DynamicUser" | "SystemCallLog" | "IPAddressDeny"
            | "IPAddressAllow" | "RestrictFileSystems" | "ProtectKernelTunable"
            | "AppArmorProfile" | "SELinuxContext" | "SmackProcessLabel"
            | "RestrictNetworkInterfaces" => {
                self.facts.sandboxed = true;
                let why = match e.key.as_str() {
                    "IPAddressDeny" | "IPAddressAllow"
                    | "RestrictFileSystems" | "RestrictNetworkInterfaces" => {
                        "enforced by systemd with cgroup/BPF programs, which supd's sandbox does not have"
                    }
                    "DynamicUser" => "supd does not allocate users; create one and set User=",
                    "SystemCallLog" => "supd's seccomp filters do not log calls",
                    "AppArmorProfile" | "SELinuxContext" | "SmackProcessLabel" => {
                        "supd does not set security labels"
                    }
                    _ => "not part of supd's sandbox",
                };
                self.refuse(e, why);
            }
            "EnvironmentFile" => {
                if e.value.trim().is_empty() {
                    self.doc.remove("", "env_file");
                    return;
                }
                let Some(v) = self.value(e) else { return };
                let path = v.trim_start_matches('-');
                if !path.starts_with('/') {
                    self.refuse(e, "the path must be absolute");
                    return;
                }
                let src = self.src(e);
                self.doc.push("", "env_file", V::Strs(vec![v]), src);
            }
            "StateDirectory" => self.dirs(e, "state_directory"),
            "CacheDirectory" => self.dirs(e, "cache_directory"),
            "LogsDirectory" => self.dirs(e, "logs_directory"),
            "ConfigurationDirectory" => self.dirs(e, "configuration_directory"),
            "RuntimeDirectoryMode" => self.mode(e, "runtime_directory_mode"),
            "StateDirectoryMode" => self.mode(e, "state_directory_mode"),
            "CacheDirectoryMode" => self.mode(e, "cache_directory_mode"),
            "LogsDirectoryMode" => self.mode(e, "logs_directory_mode"),
            "ConfigurationDirectoryMode" => self.mode(e, "configuration_directory_mode"),
            "Nice" => match e.value.trim().parse::<i64>() {
                Ok(n) if (-20..=19).contains(&n) => {
                    let src = self.src(e);
                    self.doc.set("", "nice", V::Int(n), src);
                }
                _ => self.refuse(e, format!("{:?} is not a nice value (-20..19)", e.value)),
            },
            "OOMScoreAdjust" => match e.value.trim().parse::<i64>() {
                Ok(n) if (-1000..=1000).contains(&n) => {
                    let src = self.src(e);
                    self.doc.set("", "oom_score_adjust", V::Int(n), src);
                }
                _ => self.refuse(e, format!("{:?} is not -1000..1000", e.value)),
            },
            "SupplementaryGroups" => {
                if e.value.trim().is_empty() {
                    self.doc.remove("", "supplementary_groups");
                    return;
                }
                let Some(v) = self.value(e) else { return };
                let groups: Vec<String> = v.split_whitespace().map(str::to_string).collect();
                if groups.iter().any(|g| g.parse::<u32>().is_ok()) {
                    self.refuse(e, "numeric group ids; supd needs group names");
                    return;
                }
                let src = self.src(e);
                self.doc.push("", "supplementary_groups", V::Strs(groups), src);
            }
            "SuccessExitStatus" => self.statuses(e, "success_exit_status"),
            "RestartPreventExitStatus" => self.statuses(e, "restart_prevent_exit_status"),
            "RestartForceExitStatus" => self.refuse(e, "supd has no forced-restart exit statuses"),
            "RuntimeMaxSec" | "RuntimeRandomizedExtraSec" => {
                self.refuse(e, "supd does not limit how long a service runs")
            }
            "BusName" => {
                if let Some(v) = self.value(e) {
                    self.facts.bus_name = Some((v.trim().to_string(), e.clone()));
                }
            }
            "Sockets" => {
                if let Some(v) = self.value(e) {
                    for w in v.split_whitespace() {
                        self.facts
                            .deps
                            .push((e.key.clone(), w.to_string(), e.clone()));
                    }
                }
            }
            "FileDescriptorStoreMax" | "FileDescriptorStorePreserve" => {
                self.refuse(e, "the descriptor store is not supported")
            }
            "CPUSchedulingPolicy" => {
                let v = e.value.trim().to_string();
                if crate::unit::CpuScheduling::POLICIES
                    .iter()
                    .any(|(n, _)| *n == v)
                {
                    let src = self.src(e);
                    self.doc.set("", "cpu_scheduling_policy", V::Str(v), src);
                } else {
                    self.refuse(e, format!("{v:?} is not a scheduling policy (other, batch, idle, fifo, rr)"));
                }
            }
            "CPUSchedulingPriority" => match e.value.trim().parse::<i64>() {
                Ok(n) if (0..=99).contains(&n) => {
                    let src = self.src(e);
                    self.doc.set("", "cpu_scheduling_priority", V::Int(n), src);
                }
                _ => self.refuse(e, format!("{:?} is not a priority 0..99", e.value)),
            },
            "CPUSchedulingResetOnFork" => {
                if let Some(b) = self.bool(e) {
                    let src = self.src(e);
                    self.doc
                        .set("", "cpu_scheduling_reset_on_fork", V::Bool(b), src);
                }
            }
            "CPUAffinity" | "NUMAPolicy" | "NUMAMask" | "IOSchedulingClass"
            | "IOSchedulingPriority" | "TimerSlackNSec" | "Personality" | "UtmpIdentifier"
            | "UtmpMode" | "TTYPath" | "TTYReset" | "TTYVHangup" | "TTYVTDisallocate"
            | "PAMName" | "PassEnvironment" | "UnsetEnvironment" | "LoadCredential"
            | "SetCredential" | "LoadCredentialEncrypted" | "SetCredentialEncrypted" => {
                self.refuse(e, "not supported by supd")
            }
            k if k.starts_with("Limit") => self.unknown(e),
            _ => self.unknown(e),
        }
    }

    fn install_entry(&mut self, e: &Entry) {
        match e.key.as_str() {
            "WantedBy" | "RequiredBy" | "UpheldBy" => {
                let Some(v) = self.value(e) else { return };
                for w in v.split_whitespace() {
                    match w {
                        "multi-user.target" | "default.target" | "graphical.target" => {}
                        other => self.approx(
                            e,
                            format!("every unit in supd's units directory starts at boot unless `supctl disable`d; {other} does not pull it in"),
                        ),
                    }
                }
            }
            "Alias" => self.note(e, "supd has no aliases; the unit keeps the file's name"),
            "Also" => self.note(e, "import those units too if you want them"),
            "DefaultInstance" => self.note(e, "instantiate the template by name instead"),
            _ => self.unknown(e),
        }
    }

    fn unknown(&mut self, e: &Entry) {
        if e.key.starts_with("X-") {
            return;
        }
        self.refuse(e, "not a directive supd import knows; not honoured");
    }

    /// `ConditionX=`/`AssertX=` as `condition_x`/`assert_x`.
    fn condition(&mut self, e: &Entry) {
        let (assert, kind) = match e.key.strip_prefix("Condition") {
            Some(k) => (false, k),
            None => (true, e.key.trim_start_matches("Assert")),
        };
        let key = match kind {
            "PathExists" => "path_exists",
            "PathExistsGlob" => "path_exists_glob",
            "PathIsDirectory" => "path_is_directory",
            "PathIsSymbolicLink" => "path_is_symbolic_link",
            "PathIsMountPoint" => "path_is_mount_point",
            "PathIsReadWrite" => "path_is_read_write",
            "DirectoryNotEmpty" => "directory_not_empty",
            "FileNotEmpty" => "file_not_empty",
            "FileIsExecutable" => "file_is_executable",
            "Virtualization" => "virtualization",
            "KernelCommandLine" => "kernel_command_line",
            "Capability" => "capability",
            "ACPower" => "ac_power",
            "Environment" => "environment",
            "CPUs" => "cpus",
            other => {
                self.refuse(e, format!("{other} is not a condition supd checks"));
                return;
            }
        };
        let key = format!("{}_{key}", if assert { "assert" } else { "condition" });
        if e.value.trim().is_empty() {
            // An empty assignment resets the list, as in drop-ins.
            self.doc.remove("", &key);
            return;
        }
        let Some(v) = self.value(e) else { return };
        let v = v.trim().to_string();
        if kind == "Capability"
            && crate::unit::caps::number(v.trim_start_matches(['|', '!'])).is_none()
        {
            self.refuse(e, format!("{v:?} is not a capability name"));
            return;
        }
        let src = self.src(e);
        self.doc.push("", &key, V::Strs(vec![v]), src);
    }

    /// TasksMax=/MemoryMax=/MemoryHigh=: a number (memory with K/M/G/T,
    /// base 1024 as systemd's), `infinity`, or a percentage (of the
    /// system's task limit or memory, resolved by supd at each start).
    fn cg_limit(&mut self, e: &Entry, key: &str, memory: bool) {
        let v = e.value.trim();
        if v.is_empty() {
            self.doc.remove("resources", key);
            return;
        }
        let out = if v == "infinity" {
            Some(V::Str("max".into()))
        } else if let Some(p) = v.strip_suffix('%') {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|p| *p > 0.0 && *p <= 100.0)
                .map(|_| V::Str(v.to_string()))
        } else if memory {
            let (num, suffix) = match v.char_indices().last() {
                Some((i, c)) if c.is_ascii_alphabetic() => (&v[..i], Some(c)),
                _ => (v, None),
            };
            let ok_suffix = suffix.is_none_or(|c| "KMGTkmgt".contains(c));
            num.parse::<u64>()
                .ok()
                .filter(|_| ok_suffix)
                .map(|n| match suffix {
                    None => V::Int(i64::try_from(n).unwrap_or(i64::MAX)),
                    Some(c) => V::Str(format!("{n}{}", c.to_ascii_uppercase())),
                })
        } else {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .map(|n| V::Int(i64::try_from(n).unwrap_or(i64::MAX)))
        };
        match out {
            Some(val) => {
                let src = self.src(e);
                self.doc.set("resources", key, val, src);
            }
            None => self.refuse(
                e,
                format!("{v:?} is not a number, a percentage or infinity"),
            ),
        }
    }

    /// CPUWeight=/IOWeight= (and the v1 CPUShares=/BlockIOWeight=, scaled
    /// to a weight around 100 as systemd does).
    fn cg_weight(&mut self, e: &Entry, key: &str, min: u64, max: u64, default: u64) {
        let v = e.value.trim();
        if v.is_empty() {
            self.doc.remove("resources", key);
            return;
        }
        if v == "idle" && key == "cpu_weight" {
            self.approx(
                e,
                "written as the smallest weight, 1 (supd does not set cpu.idle)",
            );
            let src = self.src(e);
            self.doc.set("resources", key, V::Int(1), src);
            return;
        }
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => {
                let w = (n * 100 / default).clamp(1, 10000);
                let src = self.src(e);
                self.doc.set(
                    "resources",
                    key,
                    V::Int(i64::try_from(w).unwrap_or(100)),
                    src,
                );
            }
            _ => self.refuse(e, format!("{v:?} is not a weight in {min}..={max}")),
        }
    }

    /// `SystemCallFilter=`, `RestrictAddressFamilies=`, `SecureBits=`: each
    /// line kept as one entry of the list (supd reads the lines with
    /// systemd's rules); empty resets.
    fn seccomp_list(&mut self, e: &Entry) {
        let key = match e.key.as_str() {
            "SystemCallFilter" => "system_call_filter",
            "RestrictAddressFamilies" => "restrict_address_families",
            _ => "secure_bits",
        };
        let v = e.value.trim().to_string();
        if v.is_empty() {
            self.doc.remove("sandbox", key);
            return;
        }
        let check = match key {
            "system_call_filter" => {
                crate::unit::syscalls::parse_filter(std::slice::from_ref(&v)).map(|_| ())
            }
            "restrict_address_families" => {
                crate::unit::syscalls::parse_families(std::slice::from_ref(&v)).map(|_| ())
            }
            _ => v
                .split_whitespace()
                .find(|w| {
                    !matches!(
                        *w,
                        "noroot"
                            | "noroot-locked"
                            | "no-setuid-fixup"
                            | "no-setuid-fixup-locked"
                            | "keep-caps"
                            | "keep-caps-locked"
                    )
                })
                .map_or(Ok(()), |w| Err(format!("{w:?} is not a secure bit"))),
        };
        if let Err(why) = check {
            self.refuse(e, why);
            return;
        }
        if key != "secure_bits" && crate::unit::syscalls::numbers::TABLE.is_empty() {
            self.refuse(e, "supd builds seccomp filters for x86-64 only");
            return;
        }
        self.facts.sandboxed = true;
        let src = self.src(e);
        self.doc.push("sandbox", key, V::Strs(vec![v]), src);
    }

    fn sandbox_bool(&mut self, e: &Entry, key: &str) {
        if let Some(b) = self.bool(e) {
            self.facts.sandboxed |= b;
            let src = self.src(e);
            self.doc.set("sandbox", key, V::Bool(b), src);
        }
    }

    /// Space-separated paths, `-` (may be missing) kept; `+` (relative to
    /// RootDirectory=) refused.
    fn sandbox_paths(&mut self, e: &Entry, key: &str) {
        if e.value.trim().is_empty() {
            self.doc.remove("sandbox", key);
            return;
        }
        let Some(v) = self.value(e) else { return };
        let words = match syntax::split_words(&v) {
            Ok(w) => w,
            Err(why) => {
                self.refuse(e, why);
                return;
            }
        };
        let mut out = Vec::new();
        for w in words {
            let path = w.trim_start_matches('-');
            if path.starts_with('+') {
                self.refuse(e, "`+` (relative to RootDirectory=) is not supported");
                return;
            }
            if !path.starts_with('/') {
                self.refuse(e, format!("{w:?} is not an absolute path"));
                return;
            }
            out.push(w);
        }
        self.facts.sandboxed = true;
        let src = self.src(e);
        self.doc.push("sandbox", key, V::Strs(out), src);
    }

    /// `CapabilityBoundingSet=`: sets merge; `~` drops the listed ones;
    /// empty means none. Written as the capabilities kept.
    fn caps(&mut self, e: &Entry, key: &str) {
        let all = (1u64 << crate::unit::caps::NAMES.len()) - 1;
        let v = e.value.trim();
        let (invert, list) = match v.strip_prefix('~') {
            Some(l) => (true, l),
            None => (false, v),
        };
        let mut mask = 0u64;
        for w in list.split_whitespace() {
            match crate::unit::caps::number(w) {
                Some(n) => mask |= 1u64 << n,
                None => {
                    self.refuse(e, format!("{w:?} is not a capability supd knows"));
                    return;
                }
            }
        }
        let current = match key {
            "capability_bounding_set" => &mut self.facts.bounding,
            _ => &mut self.facts.ambient,
        };
        let new = if v.is_empty() {
            0
        } else if invert {
            current.unwrap_or(all) & !mask
        } else {
            current.unwrap_or(0) | mask
        };
        *current = Some(new);
        self.facts.sandboxed = true;
        let names: Vec<String> = (0..crate::unit::caps::NAMES.len())
            .filter(|b| new & (1u64 << b) != 0)
            .map(|b| crate::unit::caps::NAMES[b].to_string())
            .collect();
        let src = self.src(e);
        self.doc.set("sandbox", key, V::Strs(names), src);
    }

    /// `StateDirectory=` and its kind: relative names, space-separated.
    fn dirs(&mut self, e: &Entry, key: &str) {
        if e.value.trim().is_empty() {
            self.doc.remove("", key);
            return;
        }
        let Some(v) = self.value(e) else { return };
        let mut dirs = Vec::new();
        for d in v.split_whitespace() {
            // `name:symlink` (v250) creates a symlink too.
            if d.contains(':') {
                self.refuse(e, format!("{d:?}: the `:` (symlink) form is not supported"));
                return;
            }
            if d.starts_with('/') || d.split('/').any(|c| c == ".." || c == ".") {
                self.refuse(e, format!("{d:?} must be a relative path"));
                return;
            }
            dirs.push(d.to_string());
        }
        let src = self.src(e);
        self.doc.push("", key, V::Strs(dirs), src);
    }

    fn mode(&mut self, e: &Entry, key: &str) {
        match u32::from_str_radix(e.value.trim(), 8) {
            Ok(m) if m <= 0o7777 => {
                let src = self.src(e);
                self.doc.set("", key, V::Str(format!("{m:04o}")), src);
            }
            _ => self.refuse(e, format!("{:?} is not an octal mode", e.value)),
        }
    }

    /// `SuccessExitStatus=` words: codes and signal names.
    fn statuses(&mut self, e: &Entry, key: &str) {
        if e.value.trim().is_empty() {
            self.doc.remove("", key);
            return;
        }
        let mut list = Vec::new();
        for w in e.value.split_whitespace() {
            if let Ok(n) = w.parse::<i64>()
                && (0..=255).contains(&n)
            {
                list.push(V::Int(n));
                continue;
            }
            let up = w.to_ascii_uppercase();
            let full = if up.starts_with("SIG") {
                up
            } else {
                format!("SIG{up}")
            };
            if full.parse::<nix::sys::signal::Signal>().is_ok() {
                list.push(V::Str(full));
            } else {
                self.refuse(
                    e,
                    format!("{w:?} is neither an exit code nor a signal name"),
                );
                return;
            }
        }
        let src = self.src(e);
        self.doc.push("", key, V::Mixed(list), src);
    }

    /// `LimitX=soft[:hard]`; `infinity` is written as `"infinity"` (for
    /// `nofile`, supd then uses the kernel's fs.nr_open, as systemd does).
    fn limit(&mut self, e: &Entry, key: &str, unit: Unit) {
        let v = e.value.trim();
        let (soft, hard) = match v.split_once(':') {
            Some((s, h)) => (s, h),
            None => (v, v),
        };
        let parse = |s: &str| -> Option<u64> {
            let s = s.trim();
            if s == "infinity" {
                return Some(crate::unit::Limits::INFINITY);
            }
            match unit {
                Unit::Count => s.parse::<u64>().ok(),
                Unit::Bytes => {
                    let (num, mul) = match s.char_indices().last() {
                        Some((i, 'K')) => (&s[..i], 1u64 << 10),
                        Some((i, 'M')) => (&s[..i], 1 << 20),
                        Some((i, 'G')) => (&s[..i], 1 << 30),
                        Some((i, 'T')) => (&s[..i], 1 << 40),
                        _ => (s, 1),
                    };
                    num.parse::<u64>().ok()?.checked_mul(mul)
                }
                // A bare number is seconds (CPU) or microseconds
                // (RTTIME); a time span with units is converted.
                Unit::Seconds | Unit::Micros => match s.parse::<u64>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        let d = syntax::parse_timespan(s).ok()??;
                        Some(if matches!(unit, Unit::Seconds) {
                            d.as_secs()
                        } else {
                            u64::try_from(d.as_micros()).unwrap_or(u64::MAX - 1)
                        })
                    }
                },
                // `-20..19` as a nice level (with a sign), or the raw
                // RLIMIT_NICE 0..40.
                Unit::Nice => {
                    if s.starts_with(['+', '-']) {
                        let n: i64 = s.parse().ok()?;
                        (-20..=19).contains(&n).then(|| (20 - n) as u64)
                    } else {
                        s.parse::<u64>().ok().filter(|n| *n <= 40)
                    }
                }
            }
        };
        let (Some(s), Some(h)) = (parse(soft), parse(hard)) else {
            self.refuse(e, format!("{v:?} is not a limit supd can set"));
            return;
        };
        if s != h {
            self.approx(
                e,
                format!("supd sets soft = hard; using the soft value {soft} for both"),
            );
        }
        let value = if s == crate::unit::Limits::INFINITY {
            V::Str("infinity".into())
        } else {
            V::Int(s.min(i64::MAX as u64) as i64)
        };
        let src = self.src(e);
        let mut items = match self.doc.get("", "limits") {
            Some(V::Map(m)) => m.clone(),
            _ => Vec::new(),
        };
        items.retain(|(k, _)| k != key);
        items.push((key.to_string(), value));
        self.doc.set("", "limits", V::Map(items), src);
    }

    fn mounts_for(&mut self, e: &Entry, path: &str) {
        if !path.starts_with('/') {
            self.refuse(e, format!("{path:?} is not an absolute path"));
            return;
        }
        // In a template the instance is not known yet: match what comes
        // before it.
        let literal: String = match path.find('%') {
            Some(i) => path[..i]
                .rsplit_once('/')
                .map(|(a, _)| a)
                .unwrap_or("")
                .to_string(),
            None => path.to_string(),
        };
        let literal = if literal.is_empty() {
            "/".to_string()
        } else {
            literal
        };
        let lp = std::path::Path::new(&literal);
        let mut found = false;
        for m in self.ctx.fstab {
            if m.path == "/" || m.fstype == "none" {
                continue;
            }
            if lp.starts_with(&m.path) {
                found = true;
                let exists = self.doc.mounts.iter().any(|t| {
                    t.iter()
                        .any(|i| i.key == "path" && i.value == V::Str(m.path.clone()))
                });
                if exists {
                    continue;
                }
                let mut t = vec![Item {
                    key: "path".into(),
                    value: V::Str(m.path.clone()),
                    note: vec![format!(
                        "{}: {} is in /etc/fstab ({} {})",
                        self.src(e),
                        m.path,
                        m.source,
                        m.fstype
                    )],
                }];
                if !matches!(m.fstype.as_str(), "auto" | "") {
                    t.push(Item {
                        key: "fstype".into(),
                        value: V::Str(m.fstype.clone()),
                        note: vec![],
                    });
                }
                self.doc.mounts.push(t);
            }
        }
        if !found {
            self.note(
                e,
                format!("no /etc/fstab entry covers {path}: satisfied by the root filesystem, as with systemd"),
            );
        }
    }

    // ---- writing the unit -----------------------------------------------

    /// argv for supd. A prefix whose meaning supd cannot keep is refused
    /// (so an error without `--lossy`) and dropped from what is written
    /// (what `--lossy` runs), except `|` (a shell line cannot be run as
    /// argv): None.
    fn argv(&mut self, c: &Cmd, what: &str) -> Option<Vec<String>> {
        let p = c.cmd.prefix;
        let e = &c.entry;
        if p.shell {
            self.refuse(e, "`|` (run through a shell) is not supported");
            return None;
        }
        let mut cmd_argv = c.cmd.argv.clone();
        if p.argv0 && c.cmd.argv.first() != Some(&c.cmd.path) {
            self.refuse(
                e,
                format!(
                    "`@` (a custom argv[0] for {}) is not supported; --lossy runs it with its own name",
                    c.cmd.path
                ),
            );
            if let Some(first) = cmd_argv.first_mut() {
                *first = c.cmd.path.clone();
            }
        }
        let helper = what != "the main command" && what != "the stop command";
        let mut p = p;
        if helper && self.facts.permissions_start_only {
            p.privileged = true;
        }
        // `!`: systemd does not apply User=/Group= (the program drops
        // privileges itself). Without them it changes nothing; for a helper
        // it is a `+` (which also skips sandboxing).
        if p.no_setuid && (self.facts.user.is_some() || self.facts.group.is_some()) {
            if helper {
                p.privileged = true;
                self.approx(e, "`!` is run as `+` (as root, also outside the sandbox)");
            } else {
                self.refuse(
                    e,
                    "`!` (the program drops privileges itself) with User=/Group= is not supported; --lossy runs it as User=",
                );
            }
        }
        if p.privileged
            && !helper
            && (self.facts.user.is_some() || self.facts.group.is_some() || self.facts.sandboxed)
        {
            self.refuse(
                e,
                format!(
                    "`+` (run {what} as root, without User=/Group= and sandboxing) is not supported; --lossy runs it as User= and sandboxed"
                ),
            );
            p.privileged = false;
        }
        if p.ignore_failure && what == "the main command" {
            let src = self.src(e);
            self.doc.set("", "exec_ignore_failure", V::Bool(true), src);
            p.ignore_failure = false;
        }
        // supd substitutes `$VAR`/`${VAR}` as systemd does; `:` asks for
        // no substitution, so every `$` is written as `$$`.
        let mut argv: Vec<String> = if p.no_env_expand {
            cmd_argv.iter().map(|a| a.replace('$', "$$")).collect()
        } else {
            cmd_argv
        };
        // Helper commands keep systemd's prefixes on the program.
        if what != "the main command"
            && what != "the stop command"
            && let Some(first) = argv.first_mut()
        {
            let mut pre = String::new();
            if p.ignore_failure {
                pre.push('-');
            }
            if p.privileged {
                pre.push('+');
            }
            *first = format!("{pre}{first}");
        }
        Some(argv)
    }

    fn finish(mut self) -> Imported {
        let name = supd_name(self.ctx.unit_file_name).unwrap_or_default();
        let facts = std::mem::take(&mut self.facts);
        let kind_e = facts.kind.clone();
        let kind =
            kind_e
                .as_ref()
                .map(|(k, _)| k.as_str())
                .unwrap_or(if facts.exec_start.is_empty() {
                    "oneshot"
                } else {
                    "simple"
                });
        let kind_src = kind_e
            .as_ref()
            .map(|(_, e)| self.src(e))
            .unwrap_or_default();
        let whole = |why: &str| Finding {
            severity: Severity::Refused,
            directive: String::new(),
            file: self
                .ctx
                .sources
                .first()
                .cloned()
                .unwrap_or_else(|| self.ctx.unit_file_name.to_string()),
            line: 0,
            why: why.to_string(),
        };
        let mut longrun_ready: Option<&str> = None;
        match kind {
            "simple" | "exec" => {}
            "idle" => {
                if let Some((_, e)) = &kind_e {
                    self.approx(e, "supd does not delay the start until other jobs are done");
                }
            }
            "notify" | "notify-reload" => {
                longrun_ready = Some("notify");
                // Reloaded by its reload signal (SIGHUP unless
                // ReloadSignal=), confirmed by RELOADING=1 then READY=1.
                if kind == "notify-reload" {
                    self.doc
                        .set("ready", "notify_reload", V::Bool(true), kind_src.clone());
                }
            }
            "oneshot" => {
                self.doc
                    .set("", "type", V::Str("oneshot".into()), kind_src.clone());
            }
            "forking" => match (&facts.pid_file, &kind_e) {
                (Some((path, pe)), _) => {
                    let src = self.src(pe);
                    self.doc
                        .set("", "type", V::Str("forking".into()), kind_src.clone());
                    self.doc.set("", "pid_file", V::Str(path.clone()), src);
                }
                (None, Some((_, e))) => {
                    let e = e.clone();
                    self.doc
                        .set("", "type", V::Str("forking".into()), kind_src.clone());
                    self.note(&e, "without PIDFile=, supd names the main process from the unit's cgroup once the start command exits, as systemd does (this needs cgroup v2: `supd check` refuses it on a host without)");
                }
                (None, None) => {}
            },
            "dbus" => match (&facts.bus_name, &kind_e) {
                (Some((bus, be)), Some((_, e))) => {
                    let (bus, be, e) = (bus.clone(), be.clone(), e.clone());
                    self.dbus_ready(&bus, &be, &e);
                    longrun_ready = Some("probe");
                }
                (None, Some((_, e))) => {
                    let e = e.clone();
                    self.refuse(&e, "Type=dbus without BusName=: systemd refuses it too");
                }
                _ => {}
            },
            other => {
                if let Some((_, e)) = &kind_e {
                    self.refuse(e, format!("unknown Type={other}"));
                }
            }
        }

        // The command.
        let oneshot = kind == "oneshot";
        let mut exec_done = false;
        match facts.exec_start.len() {
            0 => {
                if oneshot {
                    // A oneshot with only ExecStop= etc.: nothing to run.
                    self.doc.set(
                        "",
                        "exec",
                        V::Strs(vec!["/bin/true".into()]),
                        "no ExecStart=: a oneshot with nothing to run",
                    );
                    exec_done = true;
                } else {
                    self.findings.push(whole(
                        "the service has no ExecStart= (systemd refuses it too)",
                    ));
                }
            }
            n => {
                if n > 1 && !oneshot {
                    let e = facts.exec_start[1].entry.clone();
                    self.refuse(&e, "more than one ExecStart= is only allowed for Type=oneshot (systemd refuses it too)");
                }
                // A oneshot's commands run one after the other, each
                // needing the one before to succeed: all but the last are
                // start commands, after its own ExecStartPre=.
                let last = if oneshot { n - 1 } else { 0 };
                for c in facts.exec_start[..last].iter().cloned() {
                    if let Some(argv) = self.argv(&c, "a start command") {
                        let src = self.src(&c.entry);
                        self.doc
                            .push("", "exec_start_pre_more", V::Cmds(vec![argv]), src);
                    }
                }
                let c = facts.exec_start[last].clone();
                if c.cmd.prefix.ignore_failure && kind == "forking" {
                    let e = c.entry.clone();
                    self.approx(
                        &e,
                        "`-`: supd treats a failing start command as a failed start",
                    );
                }
                let mut c = c;
                if kind == "forking" {
                    c.cmd.prefix.ignore_failure = false;
                }
                if let Some(argv) = self.argv(&c, "the main command") {
                    let src = self.src(&c.entry);
                    self.doc.set("", "exec", V::Strs(argv), src);
                    exec_done = true;
                }
            }
        }
        let _ = exec_done;
        let stop_post: &[Cmd] = &facts.exec_stop_post;
        for (list, key) in [
            (&facts.exec_condition[..], "exec_condition"),
            (&facts.exec_start_pre[..], "exec_start_pre"),
            (&facts.exec_start_post[..], "exec_start_post"),
            (stop_post, "exec_stop_post"),
        ] {
            for c in list.iter().cloned() {
                if let Some(argv) = self.argv(&c, "a helper command") {
                    let src = self.src(&c.entry);
                    self.doc.push("", key, V::Cmds(vec![argv]), src);
                }
            }
        }
        // A oneshot's earlier commands come after its ExecStartPre=.
        let more = self.doc.get("", "exec_start_pre_more").cloned();
        self.doc.remove("", "exec_start_pre_more");
        if let Some(more) = more {
            self.doc.push(
                "",
                "exec_start_pre",
                more,
                "a oneshot's ExecStart= commands before the last",
            );
        }
        // A unit that stays up after its process exited has nothing left
        // to stop under supd: its stop commands would never run.
        // A unit that stays up after its process exited runs its stop-post
        // commands when it is stopped (supd's `remain_after_exit`, also on
        // a oneshot, defers them as systemd does).
        let remains = facts.remain_after_exit.as_ref().is_some_and(|(b, _)| *b);
        if remains
            && oneshot
            && !facts.exec_stop_post.is_empty()
            && let Some((_, e)) = &facts.remain_after_exit
        {
            let src = self.src(e);
            self.doc.set("", "remain_after_exit", V::Bool(true), src);
        }
        // A completed unit (a oneshot, RemainAfterExit=yes) has no process
        // left: stopping it runs its stop command (supd runs it then, as
        // systemd does with RemainAfterExit; without it systemd runs it
        // right after the command completed).
        let completed = remains || oneshot;
        if oneshot
            && !remains
            && let Some(c) = facts.exec_stop.first()
        {
            let e = c.entry.clone();
            self.approx(&e, "runs when the unit is stopped (supd keeps a completed oneshot up), not right after ExecStart= completed");
        }
        // ExecStop: a command, or a plain kill of the main process (the
        // stop signal, exactly).
        if let Some(c) = facts.exec_stop.first().cloned() {
            if let Some(sig) = kill_mainpid(&c.cmd).filter(|_| !completed) {
                let src = self.src(&c.entry);
                let _ = &c;
                if let Some(V::Str(k)) = self.doc.get("stop", "signal")
                    && *k != sig
                {
                    let e = c.entry.clone();
                    self.approx(&e, format!("supd sends {sig} to the process group; systemd would send it to the main process and then KillSignal ({k}) to what is left"));
                }
                self.doc.set("stop", "signal", V::Str(sig), src);
            } else if facts.exec_stop.len() == 1 {
                if let Some(argv) = self.argv(&c, "the stop command") {
                    let src = self.src(&c.entry);
                    self.doc.set("stop", "exec", V::Strs(argv), src);
                }
            } else {
                // Several: run in order, a failing one ends the sequence.
                let mut cmds = Vec::new();
                let mut srcs = Vec::new();
                for c in facts.exec_stop.iter().cloned() {
                    if c.cmd.prefix.ignore_failure {
                        let e = c.entry.clone();
                        self.approx(
                            &e,
                            "`-`: supd ends the stop sequence at any failing stop command",
                        );
                    }
                    if let Some(argv) = self.argv(&c, "the stop command") {
                        srcs.push(self.src(&c.entry));
                        cmds.push(argv);
                    }
                }
                self.doc.set("stop", "exec", V::Cmds(cmds), srcs.join("; "));
            }
        }
        // ExecReload: a signal to the main process maps to reload_signal.
        match facts.exec_reload.as_slice() {
            [] => {}
            [c] if kill_mainpid(&c.cmd).is_some() => {
                let sig = kill_mainpid(&c.cmd).unwrap_or_default();
                let src = self.src(&c.entry);
                self.doc.set("", "reload_signal", V::Str(sig), src);
                let e = c.entry.clone();
                self.approx(&e, "`supctl reload-unit` sends the signal to the service's process group, not only the main process");
            }
            cmds => {
                for c in cmds.iter().cloned() {
                    if let Some(argv) = self.argv(&c, "a reload command") {
                        let src = self.src(&c.entry);
                        self.doc.push("", "reload_exec", V::Cmds(vec![argv]), src);
                    }
                }
            }
        }

        // Readiness.
        if let Some(r) = longrun_ready {
            self.doc
                .set("ready", "kind", V::Str(r.into()), kind_src.clone());
        }
        let waits_for_ready = longrun_ready.is_some() || kind == "forking" || oneshot;
        // The start timeout covers the start commands too, as systemd's.
        let timed = longrun_ready.is_some()
            || kind == "forking"
            || !facts.exec_condition.is_empty()
            || !facts.exec_start_pre.is_empty()
            || !facts.exec_start_post.is_empty();
        match &facts.timeout_start {
            Some((Some(d), e)) if timed || oneshot => {
                let src = self.src(e);
                self.doc.set("ready", "timeout", V::Str(dur(*d)), src);
            }
            Some((None, _)) => {}
            Some((Some(_), _)) => {}
            // systemd does not time out a oneshot unless told to.
            None if timed && !oneshot => {
                self.doc.set(
                    "ready",
                    "timeout",
                    V::Str("90s".into()),
                    "systemd's default TimeoutStartSec",
                );
            }
            None => {}
        }
        let _ = waits_for_ready;
        if let Some((Some(d), e)) = &facts.watchdog {
            let src = self.src(e);
            self.doc.set("ready", "watchdog", V::Str(dur(*d)), src);
        }

        // Restart.
        let policy = match &facts.restart {
            None => Some(("never", None)),
            Some((r, e)) => match r.as_str() {
                "no" => Some(("never", Some(e.clone()))),
                "always" => Some(("always", Some(e.clone()))),
                "on-failure" => Some(("on-failure", Some(e.clone()))),
                "on-abnormal" => Some(("on-abnormal", Some(e.clone()))),
                "on-abort" => Some(("on-abort", Some(e.clone()))),
                "on-watchdog" => Some(("on-watchdog", Some(e.clone()))),
                other => {
                    let e = e.clone();
                    self.refuse(&e, format!("Restart={other} is not supported yet"));
                    None
                }
            },
        };
        if let Some((p, e)) = &policy {
            let note = match e {
                Some(e) => self.src(e),
                None => "systemd's default Restart=no".into(),
            };
            if !(oneshot && *p == "never") {
                self.doc.set("restart", "policy", V::Str((*p).into()), note);
            }
        }
        let restarts = policy.as_ref().is_some_and(|(p, _)| *p != "never");
        if restarts {
            // systemd restarts after a constant RestartSec (100 ms by
            // default); supd backs off from there. The start limit is
            // systemd's (5 in 10 s by default) when that can trigger.
            let delay = facts
                .restart_sec
                .as_ref()
                .map(|(d, _)| *d)
                .unwrap_or(Duration::from_millis(100));
            let max_delay = delay.max(Duration::from_secs(60));
            let note = match &facts.restart_sec {
                Some((_, e)) => self.src(e),
                None => "systemd's default RestartSec=100ms".into(),
            };
            if let Some((_, e)) = &facts.restart_sec {
                let e = e.clone();
                self.approx(&e, format!("supd backs off exponentially from {} up to {} (with jitter) instead of waiting a constant time", dur(delay), dur(max_delay)));
            }
            self.doc.set("restart", "delay", V::Str(dur(delay)), note);
            self.doc
                .set("restart", "max_delay", V::Str(dur(max_delay)), "");
            let burst = facts
                .limit_burst
                .as_ref()
                .map(|(b, _)| *b)
                .unwrap_or(5)
                .max(1);
            let (interval, interval_note) = match &facts.limit_interval {
                Some((Some(d), e)) if !d.is_zero() => (*d, self.src(e)),
                Some((_, e)) => {
                    let e = e.clone();
                    self.approx(
                        &e,
                        "supd always limits restarts; using a limit of 1000 starts",
                    );
                    (Duration::from_secs(24 * 3600), self.src(&e))
                }
                None => (
                    Duration::from_secs(10),
                    "systemd's default StartLimitIntervalSec=10s".into(),
                ),
            };
            let burst = if matches!(facts.limit_interval, Some((d, _)) if d.is_none_or(|d| d.is_zero()))
            {
                1000
            } else {
                burst
            };
            // supd refuses a limit its backoff can never reach: then the
            // interval is widened to the shortest time the backoff takes.
            let spec = crate::unit::RestartSpec {
                policy: crate::unit::RestartPolicy::Always,
                delay,
                max_delay,
                burst,
                interval,
                reset_after: Duration::from_secs(60),
            };
            let fastest = crate::engine::restart::fastest_burst(&spec, burst);
            let interval = if fastest > interval {
                let widened = fastest + Duration::from_secs(1);
                let why = format!(
                    "{burst} restarts cannot happen within {} with supd's backoff; the start limit counts them within {} instead",
                    dur(interval),
                    dur(widened)
                );
                match facts
                    .limit_interval
                    .as_ref()
                    .map(|(_, e)| e)
                    .or(facts.restart_sec.as_ref().map(|(_, e)| e))
                {
                    Some(e) => {
                        let e = e.clone();
                        self.approx(&e, why);
                    }
                    None => self.findings.push(Finding {
                        severity: Severity::Approximated,
                        directive: "StartLimitIntervalSec".into(),
                        file: self.ctx.sources.first().cloned().unwrap_or_default(),
                        line: 0,
                        why,
                    }),
                }
                widened
            } else {
                interval
            };
            self.doc.set(
                "restart",
                "burst",
                V::Int(i64::from(burst)),
                match &facts.limit_burst {
                    Some((_, e)) => self.src(e),
                    None => "systemd's default StartLimitBurst=5".into(),
                },
            );
            self.doc
                .set("restart", "interval", V::Str(dur(interval)), interval_note);
        }

        // Stop.
        let timeout_stop = match (&facts.no_sigkill, &facts.timeout_stop) {
            (Some(e), _) => Some((None, e.clone())),
            (None, t) => t.clone(),
        };
        match &timeout_stop {
            Some((Some(d), e)) => {
                let src = self.src(e);
                self.doc.set("stop", "timeout", V::Str(dur(*d)), src);
            }
            Some((None, e)) => {
                let src = self.src(e);
                self.doc
                    .set("stop", "timeout", V::Str("infinity".into()), src);
            }
            None => self.doc.set(
                "stop",
                "timeout",
                V::Str("90s".into()),
                "systemd's default TimeoutStopSec",
            ),
        }

        // Output to files: `stdout_file`/`stderr_file`; the rest of the
        // output decision sees them as "inherit" (what remains goes to
        // supd's capture).
        let mut facts = facts;
        let is_file = |v: &str| crate::unit::OutputFile::parse(v).is_some();
        let out_file = facts.stdout.as_ref().filter(|(v, _)| is_file(v)).cloned();
        let err_file = facts.stderr.as_ref().filter(|(v, _)| is_file(v)).cloned();
        if let Some((v, e)) = &out_file {
            let src = self.src(e);
            self.doc.set("", "stdout_file", V::Str(v.clone()), src);
            // StandardError= defaults to (and `inherit` means) stdout's.
            if facts.stderr.as_ref().is_none_or(|(v, _)| v == "inherit") {
                self.doc.set(
                    "",
                    "stderr_file",
                    V::Str(v.clone()),
                    "StandardError= inherits StandardOutput=",
                );
                facts.stderr = None;
            }
            facts.stdout = None;
        }
        if let Some((v, e)) = &err_file {
            let src = self.src(e);
            self.doc.set("", "stderr_file", V::Str(v.clone()), src);
            facts.stderr = None;
        }
        let out_kind = |v: Option<&(String, Entry)>| -> Result<&'static str, ()> {
            match v.map(|(s, _)| s.as_str()) {
                None
                | Some("journal")
                | Some("inherit")
                | Some("syslog")
                | Some("kmsg")
                | Some("journal+console")
                | Some("syslog+console")
                | Some("kmsg+console") => Ok("capture"),
                Some("null") => Ok("null"),
                Some(_) => Err(()),
            }
        };
        match (
            out_kind(facts.stdout.as_ref()),
            out_kind(facts.stderr.as_ref()),
        ) {
            (Ok("null"), Ok("null")) => {
                let src = facts
                    .stdout
                    .as_ref()
                    .map(|(_, e)| self.src(e))
                    .unwrap_or_default();
                self.doc.set("", "output", V::Str("null".into()), src);
            }
            (Ok(a), Ok(b)) => {
                if a != b {
                    for (_, e) in facts.stdout.iter().chain(facts.stderr.iter()) {
                        let e = e.clone();
                        self.approx(
                            &e,
                            "supd captures stdout and stderr together; both are logged",
                        );
                    }
                }
            }
            (a, b) => {
                for (r, v) in [(a, &facts.stdout), (b, &facts.stderr)] {
                    if r.is_err()
                        && let Some((val, e)) = v
                    {
                        let e = e.clone();
                        self.refuse(&e, format!("{val}: supd logs service output itself (or discards it with output = \"null\")"));
                    }
                }
            }
        }

        match &facts.remain_after_exit {
            Some((true, e)) if !oneshot => {
                let src = self.src(e);
                self.doc.set("", "remain_after_exit", V::Bool(true), src);
            }
            Some((false, e)) if oneshot => {
                let e = e.clone();
                self.approx(&e, "a completed oneshot stays `done` under supd (ready for its dependents) until it is started again");
            }
            _ => {}
        }
        if kind != "dbus"
            && let Some((_, e)) = &facts.bus_name
        {
            let e = e.clone();
            self.note(&e, "supd does not start services on D-Bus activation; the name is not used (Type= is not dbus)");
        }
        if let Some((_, e)) = &facts.pid_file {
            let e = e.clone();
            if kind != "forking" {
                self.note(
                    &e,
                    "only used with Type=forking; supd knows the main process it started",
                );
            }
        }

        // Dependencies.
        self.dependencies(&facts);
        self.given_sockets();
        self.stdin_socket(&facts);
        let before_me: Vec<String> = self.ctx.before_me.to_vec();
        for b in before_me {
            self.doc.push(
                "",
                "after",
                V::Strs(vec![b.clone()]),
                format!("{b} says Before={}", self.ctx.unit_file_name),
            );
        }

        // The result must load: check it the way `supd check` will.
        let text = self.render(&name);
        if let Some(t) = &text {
            let check_name = name.clone();
            if let Err(errs) = crate::unit::toml::parse_unit(
                &check_name,
                std::path::Path::new(&format!("{name}.toml")),
                t,
            ) {
                for e in errs {
                    self.findings.push(whole(&format!(
                        "the generated unit does not pass supd check ({e}); this is a bug in supd import"
                    )));
                }
            }
        }
        self.findings.sort_by_key(|f| (f.file.clone(), f.line));
        Imported {
            name,
            toml: text,
            findings: self.findings,
        }
    }

    fn dependencies(&mut self, facts: &Facts) {
        let after_words: BTreeSet<String> = facts
            .deps
            .iter()
            .filter(|(k, _, _)| k == "After")
            .map(|(_, w, _)| w.clone())
            .collect();
        for (key, word, e) in facts.deps.clone() {
            if word.ends_with(".socket") || key == "Sockets" {
                self.socket_dep(&key, &word, &e);
                continue;
            }
            if let Some((path, fstype)) = target_mount(&word) {
                self.target_as_mount(&key, &word, &e, path, fstype);
                continue;
            }
            let word = self.resolve_alias(&e, word);
            let src = self.src(&e);
            match (key.as_str(), classify(&word)) {
                ("PartOf" | "ReloadPropagatedFrom", Dep::Unit(n)) => {
                    let k = if key == "PartOf" {
                        "part_of"
                    } else {
                        "reload_propagated_from"
                    };
                    if self.is_known(&n) {
                        self.doc.push("", k, V::Strs(vec![n]), src);
                    } else {
                        self.note(&e, format!("{word} is not a supd unit here: no effect, as in systemd when it is not loaded"));
                    }
                }
                ("PartOf" | "ReloadPropagatedFrom", _) => {
                    self.note(&e, format!("{word}: no supd unit to follow; no effect"));
                }
                ("Before", Dep::Unit(n)) => {
                    if !self.is_known(&n) {
                        self.note(&e, format!("{word} is not a supd unit here: no effect, as in systemd when it is not loaded"));
                    } else if !self.ctx.before_me.is_empty() || self.is_known(&n) {
                        // The command gives units of the same run the
                        // reverse ordering; an existing file is not edited.
                        self.note(&e, format!("written as `after` in {n}'s unit when imported together; otherwise add after = [\"{}\"] to {n}.toml", supd_name(self.ctx.unit_file_name).unwrap_or_default()));
                    }
                }
                ("Before", Dep::Builtin(t)) => {
                    self.note(
                        &e,
                        format!("supd's {t} is reached at once; nothing waits for this unit"),
                    );
                }
                ("Before", Dep::Ignored(_)) => {}
                ("Before", Dep::Mount(_) | Dep::Other(_)) => {
                    self.note(&e, format!("{word}: no effect under supd"));
                }
                (_, Dep::Ignored(t)) => {
                    if key != "After" && key != "Wants" {
                        self.note(&e, format!("{t} has no meaning under supd; ignored"));
                    }
                }
                (_, Dep::Builtin(t)) => {
                    let k = match key.as_str() {
                        "After" => "after",
                        "Wants" => "wants",
                        _ => "requires",
                    };
                    self.doc.push("", k, V::Strs(vec![t.to_string()]), src);
                }
                ("Requires" | "BindsTo", Dep::Other(n)) if device_path(&n).is_some() => {
                    let path = device_path(&n).unwrap_or_default();
                    self.approx(
                        &e,
                        format!("supd has no device units: the unit is skipped (condition_path_exists) when {path} is missing at start, instead of waiting for the device; it is not stopped when the device goes away"),
                    );
                    self.doc
                        .push("", "condition_path_exists", V::Strs(vec![path]), src);
                }
                (_, Dep::Other(n)) => match key.as_str() {
                    "After" | "Wants" => {
                        self.note(
                            &e,
                            format!("{n}: supd has no such unit type; ordering ignored"),
                        );
                    }
                    _ => self.refuse(
                        &e,
                        format!(
                            "{n}: supd cannot depend on socket, device, timer, path or slice units"
                        ),
                    ),
                },
                (_, Dep::Mount(p)) => match key.as_str() {
                    "After" | "Wants" => self.note(
                        &e,
                        format!(
                            "orders after the mount of {p}; add a [[mount]] for {p} to wait for it"
                        ),
                    ),
                    _ => {
                        self.doc.mounts.push(vec![Item {
                            key: "path".into(),
                            value: V::Str(p),
                            note: vec![src],
                        }]);
                    }
                },
                (_, Dep::Unit(n)) => {
                    let known = self.is_known(&n);
                    match key.as_str() {
                        "After" => {
                            if known {
                                self.doc.push("", "after", V::Strs(vec![n]), src);
                            } else {
                                self.note(&e, format!("{word} is not a supd unit here: no effect, as in systemd when it is not loaded"));
                            }
                        }
                        // supd's `wants`/`requires` also order; when the
                        // other unit is ordered after this one (its After=)
                        // and this one is not after it, systemd starts both
                        // at once and supd would make a cycle: keep the
                        // other unit's ordering, drop this dependency.
                        "Wants" | "Requires" | "BindsTo"
                            if known
                                && !after_words.contains(&word)
                                && self.ctx.after_me.contains(&n) =>
                        {
                            self.approx(&e, format!("{n} is ordered after this unit (its After=); supd cannot also make this unit wait for it, so the dependency is not kept (no stop propagation from {n})"));
                        }
                        "Wants" => {
                            if known {
                                if !after_words.contains(&word) {
                                    self.approx(
                                        &e,
                                        format!("supd's `wants` also orders this unit after {n}"),
                                    );
                                }
                                self.doc.push("", "wants", V::Strs(vec![n]), src);
                            } else {
                                self.note(&e, format!("{word} is not a supd unit here: ignored, as systemd ignores a missing wanted unit"));
                            }
                        }
                        "Requires" | "BindsTo" => {
                            if known {
                                if !after_words.contains(&word) {
                                    self.approx(&e, format!("supd's `requires` also waits for {n} to be ready before starting this unit"));
                                }
                                self.doc.push("", "requires", V::Strs(vec![n]), src);
                            } else {
                                self.refuse(&e, format!("{word} is not a supd unit: import it in the same run (or into the same --out directory) first"));
                            }
                        }
                        other => self.refuse(&e, format!("{other}= is not supported")),
                    }
                }
            }
        }
    }

    /// A target that stands for one filesystem (`rpc_pipefs.target`):
    /// requiring it is requiring that mount, as a `[[mount]]`.
    fn target_as_mount(&mut self, key: &str, word: &str, e: &Entry, path: &str, fstype: &str) {
        match key {
            "Requires" | "BindsTo" | "Requisite" => {
                self.approx(e, format!("{word} is systemd's target for the {fstype} filesystem at {path}: supd waits for it as a [[mount]]; mount it from /etc/fstab (`{fstype} {path} {fstype} defaults 0 0`) or a oneshot unit"));
                let src = self.src(e);
                self.doc.mounts.push(vec![
                    Item {
                        key: "path".into(),
                        value: V::Str(path.to_string()),
                        note: vec![src],
                    },
                    Item {
                        key: "fstype".into(),
                        value: V::Str(fstype.to_string()),
                        note: vec![],
                    },
                ]);
            }
            _ => self.note(e, format!("{word} is the {fstype} filesystem at {path}: add a [[mount]] for it to wait for it")),
        }
    }

    /// `Type=dbus`: ready once `bus` has an owner on the system bus,
    /// asked with dbus-send (a `[readiness]` probe), as systemd waits for
    /// the name to be acquired.
    fn dbus_ready(&mut self, bus: &str, bus_e: &Entry, type_e: &Entry) {
        let valid = !bus.is_empty()
            && bus.len() <= 255
            && bus.contains('.')
            && bus
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            self.refuse(bus_e, format!("{bus:?} is not a D-Bus well-known name"));
            return;
        }
        self.approx(type_e, format!("ready once {bus} has an owner on the system bus: supd asks with dbus-send (package dbus-bin) every second while starting (later, every 5 s: losing the name marks the unit not ready, it does not stop it)"));
        let src = self.src(bus_e);
        self.doc.set(
            "readiness",
            "exec",
            V::Strs(
                [
                    "dbus-send",
                    "--system",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.GetNameOwner",
                ]
                .iter()
                .map(|s| s.to_string())
                .chain(std::iter::once(format!("string:{bus}")))
                .collect(),
            ),
            src,
        );
        self.doc
            .set("readiness", "timeout", V::Str("5s".into()), "");
        if self.is_known("dbus") {
            self.doc.push(
                "",
                "after",
                V::Strs(vec!["dbus".into()]),
                "Type=dbus orders after the bus",
            );
        }
    }

    /// `Alias=` of another unit of the run (or a symlink next to the
    /// inputs): the dependency is on the unit it names.
    fn resolve_alias(&mut self, e: &Entry, word: String) -> String {
        let Dep::Unit(n) = classify(&word) else {
            return word;
        };
        if self.is_known(&n) {
            return word;
        }
        match self.ctx.aliases.get(&word) {
            Some(target) => {
                self.note(
                    e,
                    format!("{word} is another name (Alias=) of {target}.service"),
                );
                format!("{target}.service")
            }
            None => word,
        }
    }

    /// `Requires=`/`Wants=`/`After=`/`BindsTo=`/`Sockets=` on a socket.
    fn socket_dep(&mut self, key: &str, word: &str, e: &Entry) {
        if !word.ends_with(".socket") {
            self.refuse(e, format!("{word} is not a .socket unit"));
            return;
        }
        // systemd's own sockets (syslog.socket) mean something else on a
        // host without journald: the built-in meaning wins over the file.
        let found = super::socket::builtin(word).or_else(|| self.ctx.sockets.get(word).cloned());
        let Some(sock) = found else {
            match key {
                "Requires" | "BindsTo" | "Requisite" | "Sockets" => self.refuse(
                    e,
                    format!("{word} was not found next to this unit; give the .socket file as an input too (its sockets become this unit's [[listen]])"),
                ),
                _ => self.note(e, format!("{word} was not found next to this unit: no effect, as in systemd when it is not loaded")),
            }
            return;
        };
        let service = super::socket::service_of(word, &sock);
        if service.ends_with("@.service") && super::socket::accepts(&sock) {
            self.refuse(e, format!("{word} has Accept=yes (one {service} instance per connection, inetd style), which supd does not support: supd passes a listening socket to one long-running service"));
            return;
        }
        if key == "Before" || key == "PartOf" || key == "ReloadPropagatedFrom" || key == "Upholds" {
            self.note(
                e,
                format!(
                    "{word}'s sockets are bound by supd for {service}: no unit to order or follow"
                ),
            );
            return;
        }
        if self.is_me(&service) {
            self.take_socket(word, &sock);
            self.note(e, format!("{word}'s sockets are this unit's [[listen]]: supd binds them before the service starts and keeps them across its restarts"));
            return;
        }
        // Another service's socket: under supd that service owns it and
        // binds it when it starts, so depending on the socket is depending
        // on that service.
        let Ok(n) = supd_name(&service) else {
            self.refuse(
                e,
                format!("{word} activates {service}, which is not a service supd can import"),
            );
            return;
        };
        let known = self.is_known(&n);
        let src = self.src(e);
        match (key, known) {
            ("After", true) => {
                self.approx(e, format!("{word} belongs to {n} under supd (its [[listen]]): ordered after {n} instead"));
                self.doc.push("", "after", V::Strs(vec![n]), src);
            }
            ("Wants", true) => {
                self.approx(e, format!("{word} belongs to {n} under supd (its [[listen]]), bound when {n} starts: wants {n} instead"));
                self.doc.push("", "wants", V::Strs(vec![n]), src);
            }
            (_, true) => {
                self.approx(e, format!("{word} belongs to {n} under supd (its [[listen]]), bound when {n} starts: requires {n} instead (which also waits for it to be ready)"));
                self.doc.push("", "requires", V::Strs(vec![n]), src);
            }
            ("After" | "Wants", false) => {
                self.note(e, format!("{word} activates {service}, which is not a supd unit here: no effect"));
            }
            (_, false) => self.refuse(
                e,
                format!("{word} activates {service}, which is not a supd unit: import it in the same run (or into the same --out directory) first"),
            ),
        }
    }

    /// Is `service` this unit, by its file name or one of its `Alias=`?
    fn is_me(&self, service: &str) -> bool {
        service == self.ctx.unit_file_name
            || supd_name(self.ctx.unit_file_name)
                .is_ok_and(|me| self.ctx.aliases.get(service) == Some(&me))
    }

    /// Map socket `word` into this unit's `[[listen]]` (once).
    fn take_socket(&mut self, word: &str, sock: &SocketSrc) {
        if self.sockets_done.iter().any(|w| w == word) {
            return;
        }
        self.sockets_done.push(word.to_string());
        let m = super::socket::map(word, sock);
        if let Some(note) = sock.builtin_note {
            self.findings.push(Finding {
                severity: Severity::Approximated,
                directive: String::new(),
                file: sock.path.clone(),
                line: 0,
                why: note.to_string(),
            });
        }
        for f in m.findings {
            if !self.findings.contains(&f) {
                self.findings.push(f);
            }
        }
        self.doc.listens.extend(m.listens);
    }

    /// Sockets given as inputs that activate this unit, whether or not
    /// the unit names them (an enabled socket activates its service).
    fn given_sockets(&mut self) {
        let mine: Vec<(String, SocketSrc)> = self
            .ctx
            .sockets
            .iter()
            .filter(|(w, s)| s.given && self.is_me(&super::socket::service_of(w, s)))
            .map(|(w, s)| (w.clone(), s.clone()))
            .collect();
        for (w, s) in mine {
            self.take_socket(&w, &s);
        }
    }

    /// `StandardInput=socket`: the socket as fd 0 (Accept=no, one socket).
    fn stdin_socket(&mut self, facts: &Facts) {
        let Some(e) = facts.stdin_socket.clone() else {
            return;
        };
        match self.doc.listens.len() {
            1 => {
                let src = self.src(&e);
                self.doc.set("", "stdin", V::Str("socket".into()), src);
                self.approx(&e, "the socket is the service's stdin; its stdout and stderr stay with supd's log (systemd's default would make them the socket too)");
            }
            0 => self.refuse(&e, "no socket of this unit was found to pass as stdin; give its .socket file as an input"),
            n => self.refuse(&e, format!("StandardInput=socket needs exactly one socket; this unit has {n}")),
        }
    }

    fn render(&mut self, name: &str) -> Option<String> {
        self.doc.header.insert(
            0,
            format!(
                "supd unit {name}, imported from {} by `supd import`.",
                self.ctx.sources.join(", ")
            ),
        );
        if self.template {
            self.doc.header.insert(
                1,
                format!("A template: instance NAME is unit {name}NAME; %i is NAME, %I its unescaped form."),
            );
        }
        let refused: Vec<String> = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Refused)
            .map(|f| format!("  {}", f.display(true)))
            .collect();
        if !refused.is_empty() {
            self.doc
                .footer
                .push("NOT honoured (imported with --lossy):".into());
            self.doc.footer.extend(refused);
        }
        let approx: Vec<String> = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Approximated)
            .map(|f| format!("  {}", f.display(true)))
            .collect();
        if !approx.is_empty() {
            self.doc.footer.push("Approximated:".into());
            self.doc.footer.extend(approx);
        }
        self.doc.get("", "exec")?;
        Some(self.doc.render())
    }
}

fn zero_is_infinity(d: Option<Duration>) -> Option<Duration> {
    d.filter(|d| !d.is_zero())
}

fn valid_env_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Does this argument use systemd's runtime substitution: `${NAME}`
/// anywhere, `$NAME` as a whole word, or `$$`?
pub fn needs_expansion(a: &str) -> bool {
    if a.contains("${") || a.contains("$$") {
        return true;
    }
    match a.strip_prefix('$') {
        Some(n) => valid_env_name(n),
        None => false,
    }
}

/// `kill [-s] [-]SIG $MAINPID` (or `/bin/kill ...`): the signal it sends.
fn kill_mainpid(c: &Command) -> Option<String> {
    let prog = c.path.rsplit('/').next()?;
    if prog != "kill" {
        return None;
    }
    let args: Vec<&str> = c.argv.iter().skip(1).map(String::as_str).collect();
    let (sig, target) = match args.as_slice() {
        [t] => ("TERM", *t),
        ["-s", s, t] => (*s, *t),
        [s, t] if s.starts_with('-') => (&s[1..], *t),
        _ => return None,
    };
    if target != "$MAINPID" && target != "${MAINPID}" {
        return None;
    }
    let sig = if sig.chars().all(|c| c.is_ascii_digit()) {
        let n: i32 = sig.parse().ok()?;
        nix::sys::signal::Signal::try_from(n)
            .ok()?
            .as_str()
            .to_string()
    } else {
        let up = sig.to_ascii_uppercase();
        if up.starts_with("SIG") {
            up
        } else {
            format!("SIG{up}")
        }
    };
    crate::unit::toml::parse_signal(&sig).ok()?;
    Some(sig)
}

/// A duration as supd writes it.
fn dur(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Import one unit: its file (and drop-ins) already parsed.
pub fn map(ctx: Context<'_>, file: &UnitFile, problems: &[LineProblem]) -> Imported {
    let name = match supd_name(ctx.unit_file_name) {
        Ok(n) => n,
        Err(why) => {
            return Imported {
                name: ctx.unit_file_name.to_string(),
                toml: None,
                findings: vec![Finding {
                    severity: Severity::Refused,
                    directive: String::new(),
                    file: ctx.sources.first().cloned().unwrap_or_default(),
                    line: 0,
                    why,
                }],
            };
        }
    };
    let mut names = Names::from_file_name(ctx.unit_file_name).unwrap_or(Names {
        prefix: name.clone(),
        instance: None,
        suffix: "service".into(),
        host: syntax::Host::default(),
    });
    names.host = ctx.host.clone();
    let mut m = Mapper {
        ctx,
        template: names.is_template(),
        names,
        doc: Doc::default(),
        findings: Vec::new(),
        facts: Facts::default(),
        sockets_done: Vec::new(),
    };
    for p in problems {
        m.findings.push(Finding {
            severity: Severity::Note,
            directive: String::new(),
            file: ctx.sources.get(p.source).cloned().unwrap_or_default(),
            line: p.line,
            why: p.message.clone(),
        });
    }
    // Sandboxing changes what `+` means: look ahead.
    if let Some(s) = file.section("Service") {
        m.facts.user = s
            .entries
            .iter()
            .rev()
            .find(|e| e.key == "User")
            .map(|e| e.value.clone());
        m.facts.group = s
            .entries
            .iter()
            .rev()
            .find(|e| e.key == "Group")
            .map(|e| e.value.clone());
    }
    for section in &file.sections {
        for e in &section.entries {
            match section.name.as_str() {
                "Unit" => m.unit_entry(e),
                "Service" => m.service_entry(e),
                "Install" => m.install_entry(e),
                s if s.starts_with("X-") => {}
                other => m.find(
                    Severity::Refused,
                    e,
                    format!("[{other}] is not a section of a service unit"),
                ),
            }
        }
    }
    // What WantedBy= means on an appliance: started at boot. A unit
    // without it starts under systemd only when another one needs it.
    let wanted = file.section("Install").is_some_and(|s| {
        s.entries.iter().any(|e| {
            matches!(e.key.as_str(), "WantedBy" | "RequiredBy" | "UpheldBy")
                && !e.value.trim().is_empty()
        })
    });
    if !wanted {
        let name = supd_name(ctx.unit_file_name).unwrap_or_default();
        m.doc.header.push(format!(
            "No WantedBy=: systemd starts it only when another unit needs it. supd starts every unit at boot; `supctl disable {name}` keeps it down unless an enabled unit requires or wants it."
        ));
    }
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct T {
        known: BTreeSet<String>,
        fstab: Vec<FstabEntry>,
        before_me: Vec<String>,
    }

    impl T {
        fn new() -> T {
            T {
                known: BTreeSet::new(),
                fstab: vec![],
                before_me: vec![],
            }
        }

        fn import(&self, name: &str, text: &str) -> Imported {
            let (f, p) = syntax::parse(text);
            let sources = vec![format!("/lib/systemd/system/{name}")];
            let ctx = Context {
                unit_file_name: name,
                sources: &sources,
                known: &self.known,
                before_me: &self.before_me,
                after_me: &[],
                fstab: &self.fstab,
                host: &syntax::Host::default(),
                sockets: &BTreeMap::new(),
                aliases: &BTreeMap::new(),
            };
            map(ctx, &f, &p)
        }
    }

    fn refused(i: &Imported) -> Vec<String> {
        i.findings
            .iter()
            .filter(|f| f.severity == Severity::Refused)
            .map(|f| f.directive.clone())
            .collect()
    }

    fn toml(i: &Imported) -> toml::Value {
        let t = i.toml.as_deref().expect("a unit");
        toml::from_str(t).unwrap_or_else(|e| panic!("{e}\n{t}"))
    }

    #[test]
    fn cgroup_directives_map_to_resources_and_forking_needs_no_pid_file() {
        let i = T::new().import(
            "dbish.service",
            "[Service]\nType=forking\nExecStart=/usr/sbin/dbd\nTasksMax=99%\nMemoryLimit=2G\nMemoryHigh=infinity\nCPUQuota=150%\nCPUShares=512\nIOWeight=50\nOOMPolicy=kill\nDelegate=yes\nKillMode=mixed\nMemoryAccounting=yes\nDevicePolicy=closed\nDeviceAllow=/dev/net/tun  rw\nDeviceAllow=char-rtc r\n",
        );
        assert_eq!(refused(&i), Vec::<String>::new(), "{:?}", i.findings);
        let v = toml(&i);
        assert_eq!(v["type"].as_str(), Some("forking"));
        assert!(v.get("pid_file").is_none());
        let r = &v["resources"];
        assert_eq!(r["pids_max"].as_str(), Some("99%"));
        assert_eq!(r["memory_max"].as_str(), Some("2G"));
        assert_eq!(r["memory_high"].as_str(), Some("max"));
        assert_eq!(r["cpu_max"].as_str(), Some("150%"));
        assert_eq!(r["cpu_weight"].as_integer(), Some(50));
        assert_eq!(r["io_weight"].as_integer(), Some(50));
        assert_eq!(r["oom_policy"].as_str(), Some("kill"));
        assert_eq!(r["delegate"].as_bool(), Some(true));
        assert_eq!(v["stop"]["kill_mode"].as_str(), Some("mixed"));
        assert_eq!(r["device_policy"].as_str(), Some("closed"));
        assert_eq!(r["device_allow"][0].as_str(), Some("/dev/net/tun rw"));
        assert_eq!(r["device_allow"][1].as_str(), Some("char-rtc r"));
        // What it wrote is a valid supd unit.
        crate::unit::toml::parse_unit(
            "dbish",
            std::path::Path::new("dbish.toml"),
            i.toml.as_deref().unwrap_or(""),
        )
        .expect("valid");
        let i = T::new().import(
            "bad.service",
            "[Service]\nExecStart=/x\nTasksMax=lots\nOOMPolicy=panic\nSlice=a.slice\nDeviceAllow=tun rw\nDevicePolicy=open\n",
        );
        assert_eq!(
            refused(&i),
            [
                "TasksMax",
                "OOMPolicy",
                "Slice",
                "DeviceAllow",
                "DevicePolicy"
            ]
        );
    }

    #[test]
    fn a_simple_daemon_maps_exactly_with_systemd_defaults() {
        let i = T::new().import(
            "memcachedish.service",
            "[Unit]\nDescription=cache\nAfter=network.target\n\n[Service]\nExecStart=/usr/bin/cache -m 64 -p 11211 --logfile \"\"\nUser=nobody\nRestart=always\nRestartSec=2\nLimitNOFILE=4096\nEnvironment=A=1 \"B=two words\"\n\n[Install]\nWantedBy=multi-user.target\n",
        );
        assert_eq!(refused(&i), Vec::<String>::new(), "{:?}", i.findings);
        let v = toml(&i);
        assert_eq!(v["description"].as_str(), Some("cache"));
        let exec: Vec<&str> = v["exec"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            exec,
            ["/usr/bin/cache", "-m", "64", "-p", "11211", "--logfile", ""]
        );
        assert_eq!(v["user"].as_str(), Some("nobody"));
        assert_eq!(v["after"][0].as_str(), Some("network"));
        assert_eq!(v["env"]["B"].as_str(), Some("two words"));
        assert_eq!(v["limits"]["nofile"].as_integer(), Some(4096));
        assert_eq!(v["restart"]["policy"].as_str(), Some("always"));
        assert_eq!(v["restart"]["delay"].as_str(), Some("2s"));
        assert_eq!(v["stop"]["timeout"].as_str(), Some("90s"));
        // The comment says where each key came from.
        assert!(
            i.toml
                .as_deref()
                .unwrap()
                .contains("# ExecStart=/usr/bin/cache")
        );
    }

    #[test]
    fn every_refusal_names_its_directive_and_line() {
        let i = T::new().import(
            "x.service",
            "[Service]\nExecStart=/bin/x\nSystemCallLog=@system-service\nFrobnicate=yes\nX-Vendor=ok\n[Socket]\nListenStream=80\n",
        );
        let r: Vec<(String, usize)> = i
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Refused)
            .map(|f| (f.directive.clone(), f.line))
            .collect();
        assert_eq!(
            r,
            [
                ("SystemCallLog".to_string(), 3),
                ("Frobnicate".to_string(), 4),
                ("ListenStream".to_string(), 7)
            ]
        );
        // Refused or not, a unit is produced (written only with --lossy),
        // and it lists what it does not honour.
        let t = i.toml.unwrap();
        assert!(t.contains("NOT honoured"), "{t}");
        assert!(t.contains("SystemCallLog"), "{t}");
    }

    #[test]
    fn notify_with_timeouts_and_kill_commands() {
        let i = T::new().import(
            "d.service",
            "[Service]\nType=notify\nExecStart=/usr/sbin/d\nExecReload=/bin/kill -HUP $MAINPID\nExecStop=/bin/kill -s QUIT $MAINPID\nTimeoutStartSec=infinity\nTimeoutStopSec=5min\nWatchdogSec=30\nKillSignal=SIGINT\n",
        );
        assert_eq!(refused(&i), Vec::<String>::new(), "{:?}", i.findings);
        let v = toml(&i);
        assert_eq!(v["ready"]["kind"].as_str(), Some("notify"));
        assert!(v["ready"].get("timeout").is_none());
        assert_eq!(v["ready"]["watchdog"].as_str(), Some("30s"));
        assert_eq!(v["reload_signal"].as_str(), Some("SIGHUP"));
        // ExecStop's kill reaches the main process first; KillSignal
        // would only go to what is left after it.
        assert_eq!(v["stop"]["signal"].as_str(), Some("SIGQUIT"));
        assert_eq!(v["stop"]["timeout"].as_str(), Some("5m"));
        assert!(
            v.get("restart")
                .is_none_or(|r| r.get("policy").is_none() || r["policy"].as_str() == Some("never"))
        );
    }

    #[test]
    fn dependencies_keep_systemds_meaning() {
        let mut t = T::new();
        t.known.insert("db".into());
        let i = t.import(
            "app.service",
            "[Unit]\nAfter=db.service ghost.service network-online.target syslog.target\nWants=network-online.target ghost.service\nRequires=db.service\n[Service]\nExecStart=/bin/app\n",
        );
        assert_eq!(refused(&i), Vec::<String>::new(), "{:?}", i.findings);
        let v = toml(&i);
        let list = |k: &str| -> Vec<String> {
            v.get(k)
                .and_then(|a| a.as_array())
                .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        assert_eq!(list("after"), ["db", "network-online"]);
        assert_eq!(list("wants"), ["network-online"]);
        assert_eq!(list("requires"), ["db"]);
        // A missing required unit is refused (systemd would fail the start).
        let i = t.import(
            "app.service",
            "[Unit]\nRequires=ghost.service\n[Service]\nExecStart=/bin/app\n",
        );
        assert_eq!(refused(&i), ["Requires"]);
        let i = t.import(
            "app.service",
            "[Unit]\nRequires=app.socket\n[Service]\nExecStart=/bin/app\n",
        );
        assert_eq!(refused(&i), ["Requires"]);
    }

    #[test]
    fn requires_mounts_for_uses_fstab() {
        let mut t = T::new();
        t.fstab = super::super::parse_fstab(
            "/dev/vda1 / ext4 defaults 0 1\n/dev/vdb /var/lib/pg ext4 rw 0 2\n/dev/vdc /srv xfs defaults 0 2\n",
        );
        let i = t.import(
            "pg.service",
            "[Unit]\nRequiresMountsFor=/var/lib/pg/15/main /etc/pg\n[Service]\nExecStart=/bin/pg\n",
        );
        let v = toml(&i);
        let m = v["mount"].as_array().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0]["path"].as_str(), Some("/var/lib/pg"));
        assert_eq!(m[0]["fstype"].as_str(), Some("ext4"));
        assert!(
            i.findings
                .iter()
                .any(|f| f.why.contains("/etc/pg") && f.why.contains("root filesystem"))
        );
    }

    #[test]
    fn templates_keep_instance_placeholders() {
        let i = T::new().import(
            "worker@.service",
            "[Unit]\nDescription=Worker %i (%I) of %p\n[Service]\nExecStart=/usr/bin/worker --name %i --dir /srv/%I --pct 5%%\n",
        );
        assert_eq!(i.name, "worker@");
        let v = toml(&i);
        assert_eq!(v["description"].as_str(), Some("Worker %i (%I) of worker"));
        assert_eq!(v["exec"][2].as_str(), Some("%i"));
        assert_eq!(v["exec"][6].as_str(), Some("5%%"));
        let i = T::new().import(
            "worker@a-b.service",
            "[Service]\nExecStart=/usr/bin/worker --dir /srv/%I %n\n",
        );
        assert_eq!(i.name, "worker@a-b");
        let v = toml(&i);
        assert_eq!(v["exec"][2].as_str(), Some("/srv/a/b"));
        assert_eq!(v["exec"][3].as_str(), Some("worker@a-b.service"));
    }

    #[test]
    fn restart_limits_that_supd_would_reject_are_widened() {
        let i = T::new().import(
            "r.service",
            "[Service]\nExecStart=/bin/r\nRestart=on-failure\nRestartSec=5\nStartLimitBurst=5\nStartLimitIntervalSec=10\n",
        );
        assert_eq!(refused(&i), Vec::<String>::new(), "{:?}", i.findings);
        assert!(
            i.findings
                .iter()
                .any(|f| f.why.contains("cannot happen within")),
            "{:?}",
            i.findings
        );
        toml(&i);
    }

    #[test]
    fn non_services_and_bad_names_are_refused_whole() {
        let i = T::new().import("x.socket", "[Socket]\nListenStream=1\n");
        assert!(i.toml.is_none());
        assert_eq!(i.errors(), 1);
        let i = T::new().import("a\\x2db.service", "[Service]\nExecStart=/bin/x\n");
        assert!(i.toml.is_none());
        let i = T::new().import("nocmd.service", "[Service]\nUser=x\n");
        // No ExecStart=: a oneshot that runs nothing, as systemd treats it.
        assert_eq!(toml(&i)["type"].as_str(), Some("oneshot"));
        let i = T::new().import("nocmd.service", "[Service]\nType=simple\nUser=x\n");
        assert!(i.errors() > 0);
    }

    #[test]
    fn kill_commands_are_recognised() {
        let c = |s: &str| syntax::split_exec(s).unwrap().remove(0);
        assert_eq!(
            kill_mainpid(&c("/bin/kill -HUP $MAINPID")).as_deref(),
            Some("SIGHUP")
        );
        assert_eq!(
            kill_mainpid(&c("/bin/kill -s USR1 ${MAINPID}")).as_deref(),
            Some("SIGUSR1")
        );
        assert_eq!(
            kill_mainpid(&c("kill $MAINPID")).as_deref(),
            Some("SIGTERM")
        );
        assert_eq!(
            kill_mainpid(&c("/bin/kill -1 $MAINPID")).as_deref(),
            Some("SIGHUP")
        );
        assert_eq!(kill_mainpid(&c("/bin/kill -HUP 1")), None);
        assert!(needs_expansion("$FOO") && needs_expansion("a${B}c") && needs_expansion("$$"));
        assert!(!needs_expansion("--x=$FOO") && !needs_expansion("$") && !needs_expansion("a$b"));
    }
}

#[cfg(test)]
mod native_keys {
    use super::*;

    fn import(name: &str, text: &str) -> Imported {
        let (f, p) = syntax::parse(text);
        let sources = vec![name.to_string()];
        let known = BTreeSet::new();
        let ctx = Context {
            unit_file_name: name,
            sources: &sources,
            known: &known,
            before_me: &[],
            after_me: &[],
            fstab: &[],
            host: &syntax::Host::default(),
            sockets: &BTreeMap::new(),
            aliases: &BTreeMap::new(),
        };
        map(ctx, &f, &p)
    }

    #[test]
    fn environment_files_exit_statuses_directories_and_scheduling() {
        let i = import(
            "cron.service",
            "[Service]\nEnvironmentFile=-/etc/default/cron\nExecStart=/usr/sbin/cron -f $EXTRA_OPTS\nSuccessExitStatus=1 SIGTERM\nRestartPreventExitStatus=255\nRestart=on-abnormal\nStateDirectory=cron cron/x\nStateDirectoryMode=0750\nRuntimeDirectory=cron\nRuntimeDirectoryMode=2755\nNice=5\nOOMScoreAdjust=-900\nSupplementaryGroups=adm\nTimeoutStopSec=infinity\n",
        );
        let refused: Vec<_> = i
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Refused)
            .collect();
        assert!(refused.is_empty(), "{refused:?}");
        let t = i.toml.unwrap();
        let v: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(v["env_file"][0].as_str(), Some("-/etc/default/cron"));
        assert_eq!(v["exec"][2].as_str(), Some("$EXTRA_OPTS"));
        assert_eq!(v["success_exit_status"][0].as_integer(), Some(1));
        assert_eq!(v["success_exit_status"][1].as_str(), Some("SIGTERM"));
        assert_eq!(v["restart_prevent_exit_status"][0].as_integer(), Some(255));
        assert_eq!(v["restart"]["policy"].as_str(), Some("on-abnormal"));
        assert_eq!(v["state_directory"][1].as_str(), Some("cron/x"));
        assert_eq!(v["state_directory_mode"].as_str(), Some("0750"));
        assert_eq!(v["runtime_directory_mode"].as_str(), Some("2755"));
        assert_eq!(v["nice"].as_integer(), Some(5));
        assert_eq!(v["oom_score_adjust"].as_integer(), Some(-900));
        assert_eq!(v["supplementary_groups"][0].as_str(), Some("adm"));
        assert_eq!(v["stop"]["timeout"].as_str(), Some("infinity"));
        // And supd loads it.
        crate::unit::toml::parse_unit("cron", std::path::Path::new("cron.toml"), &t).unwrap();
    }

    #[test]
    fn sandboxing_maps_or_is_refused_by_name() {
        let i = import(
            "redisish.service",
            "[Service]\nExecStart=/usr/bin/redis-server\nUser=redis\nPrivateTmp=true\nPrivateDevices=yes\nProtectHome=true\nProtectSystem=strict\nReadWritePaths=-/var/lib/redis\nReadWriteDirectories=-/etc/redis\nCapabilityBoundingSet=\nNoNewPrivileges=true\nProtectKernelTunables=true\nProtectProc=invisible\nSystemCallFilter=@system-service\nSystemCallFilter=~@privileged @resources\nSystemCallErrorNumber=EPERM\nSystemCallArchitectures=native\nMemoryDenyWriteExecute=true\nRestrictAddressFamilies=AF_UNIX AF_INET\nRestrictNamespaces=true\nLockPersonality=yes\nSecureBits=noroot\nBindReadOnlyPaths=/dev/log:/var/lib/x/dev/log\nSystemCallFilter=@nonesuch\nRestrictAddressFamilies=AF_WHAT\n",
        );
        let refused: Vec<&str> = i
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Refused)
            .map(|f| f.directive.as_str())
            .collect();
        // Misspelt groups and families are refused, never dropped.
        assert_eq!(refused, ["SystemCallFilter", "RestrictAddressFamilies"]);
        let t = i.toml.unwrap();
        let v: toml::Value = toml::from_str(&t).unwrap();
        let sb = &v["sandbox"];
        assert_eq!(sb["private_tmp"].as_bool(), Some(true));
        assert_eq!(sb["protect_system"].as_str(), Some("strict"));
        assert_eq!(sb["protect_home"].as_str(), Some("yes"));
        assert_eq!(sb["read_write_paths"].as_array().map(|a| a.len()), Some(2));
        assert_eq!(
            sb["capability_bounding_set"].as_array().map(|a| a.len()),
            Some(0)
        );
        assert_eq!(sb["protect_proc"].as_str(), Some("invisible"));
        assert_eq!(
            sb["system_call_filter"].as_array().map(|a| a.len()),
            Some(2)
        );
        assert_eq!(sb["system_call_error_number"].as_str(), Some("EPERM"));
        assert_eq!(sb["memory_deny_write_execute"].as_bool(), Some(true));
        assert_eq!(sb["restrict_namespaces"].as_bool(), Some(true));
        assert_eq!(
            sb["bind_read_only_paths"][0].as_str(),
            Some("/dev/log:/var/lib/x/dev/log")
        );
        let spec = crate::unit::toml::parse_unit("r", std::path::Path::new("r.toml"), &t).unwrap();
        assert_eq!(spec.sandbox.capability_bounding_set, Some(0));
        assert!(
            spec.sandbox
                .system_call_filter
                .as_ref()
                .is_some_and(|f| f.allow_list)
        );
        assert!(spec.sandbox.native_only && spec.sandbox.lock_personality);
        assert_eq!(spec.sandbox.secure_bits, Some(1));
        assert_eq!(
            spec.sandbox.restrict_address_families.map(|f| f.families),
            Some(vec![1, 2])
        );
    }

    #[test]
    fn remain_after_exit_and_send_sigkill() {
        let i = import(
            "setup.service",
            "[Service]\nExecStart=/bin/setup\nRemainAfterExit=yes\nSendSIGKILL=no\nTimeoutStopSec=900\n",
        );
        assert_eq!(i.errors(), 0, "{:?}", i.findings);
        let v: toml::Value = toml::from_str(i.toml.as_deref().unwrap()).unwrap();
        assert_eq!(v["remain_after_exit"].as_bool(), Some(true));
        assert_eq!(v["stop"]["timeout"].as_str(), Some("infinity"));
    }
}

/// The directives of branch `directives` (issue 16): ExecCondition=,
/// ExecStart=-, BindsTo= on devices, and the others below.
#[cfg(test)]
mod directive_keys {
    use super::*;

    struct T;

    impl T {
        fn new() -> T {
            T
        }

        fn import(&self, name: &str, text: &str) -> Imported {
            let (f, p) = syntax::parse(text);
            let sources = vec![name.to_string()];
            let known = BTreeSet::new();
            let ctx = Context {
                unit_file_name: name,
                sources: &sources,
                known: &known,
                before_me: &[],
                after_me: &[],
                fstab: &[],
                host: &syntax::Host::default(),
                sockets: &BTreeMap::new(),
                aliases: &BTreeMap::new(),
            };
            map(ctx, &f, &p)
        }
    }

    fn refused(i: &Imported) -> Vec<String> {
        i.findings
            .iter()
            .filter(|f| f.severity == Severity::Refused)
            .map(|f| f.directive.clone())
            .collect()
    }

    fn toml(i: &Imported) -> toml::Value {
        let t = i.toml.as_deref().expect("a unit");
        toml::from_str(t).unwrap_or_else(|e| panic!("{e}\n{t}"))
    }

    #[test]
    fn exec_condition_ignore_failure_and_device_bindings_are_mapped() {
        let t = T::new();
        let i = t.import(
            "agent.service",
            "[Unit]\nBindsTo=dev-virtio\\x2dports-org.qemu.guest_agent.0.device\nAfter=dev-virtio\\x2dports-org.qemu.guest_agent.0.device\n[Service]\nExecCondition=/usr/bin/is-configured smb\nExecCondition=-/bin/false\nExecStart=-/usr/sbin/qemu-ga\n",
        );
        assert!(refused(&i).is_empty(), "{:?}", i.findings);
        let v = toml(&i);
        assert_eq!(v["exec_ignore_failure"].as_bool(), Some(true));
        assert_eq!(v["exec"][0].as_str(), Some("/usr/sbin/qemu-ga"));
        assert_eq!(v["exec_condition"][0][1].as_str(), Some("smb"));
        assert_eq!(v["exec_condition"][1][0].as_str(), Some("-/bin/false"));
        assert_eq!(
            v["condition_path_exists"][0].as_str(),
            Some("/dev/virtio-ports/org.qemu.guest_agent.0")
        );
        let i = t.import(
            "hostapd@.service",
            "[Unit]\nBindsTo=sys-subsystem-net-devices-%i.device\n[Service]\nExecStart=/usr/sbin/hostapd /etc/hostapd/%i.conf\n",
        );
        assert!(refused(&i).is_empty(), "{:?}", i.findings);
        assert_eq!(
            toml(&i)["condition_path_exists"][0].as_str(),
            Some("/sys/class/net/%I")
        );
        // A socket stays refused (socket activation is another matter).
        let i = t.import(
            "x.service",
            "[Unit]\nBindsTo=x.socket\n[Service]\nExecStart=/bin/x\n",
        );
        assert_eq!(refused(&i), ["BindsTo"]);
    }

    #[test]
    fn every_limit_and_cpu_scheduling_are_mapped() {
        let t = T::new();
        let i = t.import(
            "rt.service",
            "[Service]\nExecStart=/bin/x\nLimitRTPRIO=50\nLimitRTTIME=infinity\nLimitNOFILE=infinity\nLimitNICE=-5\nLimitCPU=1h\nLimitSTACK=8M\nLimitMSGQUEUE=1K:2K\nCPUSchedulingPolicy=fifo\nCPUSchedulingPriority=20\nCPUSchedulingResetOnFork=yes\n",
        );
        assert!(refused(&i).is_empty(), "{:?}", i.findings);
        let v = toml(&i);
        let l = &v["limits"];
        assert_eq!(l["rtprio"].as_integer(), Some(50));
        assert_eq!(l["rttime"].as_str(), Some("infinity"));
        assert_eq!(l["nofile"].as_str(), Some("infinity"));
        assert_eq!(l["nice"].as_integer(), Some(25));
        assert_eq!(l["cpu"].as_integer(), Some(3600));
        assert_eq!(l["stack"].as_integer(), Some(8 << 20));
        assert_eq!(l["msgqueue"].as_integer(), Some(1024));
        assert_eq!(v["cpu_scheduling_policy"].as_str(), Some("fifo"));
        assert_eq!(v["cpu_scheduling_priority"].as_integer(), Some(20));
        assert_eq!(v["cpu_scheduling_reset_on_fork"].as_bool(), Some(true));
        // What supd reads back is what was meant.
        let spec = crate::unit::toml::parse_unit(
            "rt",
            std::path::Path::new("rt.toml"),
            i.toml.as_deref().unwrap_or(""),
        );
        let spec = spec.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(spec.limits.nofile, Some(crate::unit::Limits::INFINITY));
        assert_eq!(spec.limits.rtprio, Some(50));
        let c = spec.cpu_scheduling.expect("scheduling");
        assert_eq!(
            (c.policy, c.priority, c.reset_on_fork),
            (libc::SCHED_FIFO, 20, true)
        );
        let i = t.import(
            "x.service",
            "[Service]\nExecStart=/bin/x\nLimitBOGUS=1\nCPUSchedulingPolicy=deadline\n",
        );
        assert_eq!(refused(&i), ["LimitBOGUS", "CPUSchedulingPolicy"]);
    }

    #[test]
    fn condition_cpus_is_mapped_and_checked() {
        let i = T::new().import(
            "irq.service",
            "[Unit]\nConditionCPUs=>1\n[Service]\nExecStart=/bin/x\n",
        );
        assert!(refused(&i).is_empty(), "{:?}", i.findings);
        assert_eq!(toml(&i)["condition_cpus"][0].as_str(), Some(">1"));
        assert_eq!(crate::unit::compare_count(">1", 2), Some(true));
        assert_eq!(crate::unit::compare_count(">1", 1), Some(false));
        assert_eq!(crate::unit::compare_count("<=4", 4), Some(true));
        assert_eq!(crate::unit::compare_count("!=1", 1), Some(false));
        assert_eq!(crate::unit::compare_count("3", 3), Some(true));
        assert_eq!(crate::unit::compare_count(">x", 3), None);
    }

    #[test]
    fn on_failure_is_mapped_for_known_units_and_a_note_otherwise() {
        let mut known = BTreeSet::new();
        known.insert("alert".to_string());
        let (f, p) = syntax::parse(
            "[Unit]\nOnFailure=alert.service heartbeat-failed@%n\n[Service]\nExecStart=/bin/x\n",
        );
        let sources = vec!["x.service".to_string()];
        let ctx = Context {
            unit_file_name: "x.service",
            sources: &sources,
            known: &known,
            before_me: &[],
            after_me: &[],
            fstab: &[],
            host: &syntax::Host::default(),
            sockets: &BTreeMap::new(),
            aliases: &BTreeMap::new(),
        };
        let i = map(ctx, &f, &p);
        assert!(refused(&i).is_empty(), "{:?}", i.findings);
        assert_eq!(toml(&i)["on_failure"][0].as_str(), Some("alert"));
    }

    #[test]
    fn conflicts_with_a_socket_no_supd_unit_stands_for_is_a_note() {
        let i = T::new().import(
            "nrpe-server.service",
            "[Unit]\nConflicts=nrpe.socket\n[Service]\nExecStart=/bin/x\n",
        );
        assert!(refused(&i).is_empty(), "{:?}", i.findings);
    }
}
