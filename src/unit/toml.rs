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
    HealthSpec, MountReq, OnLoss, OnUnhealthy, Output, Priority, ProbeTarget, ReadyKind, ReadySpec,
    RestartPolicy, RestartSpec, StopSpec, UnitKind, UnitSpec,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnit {
    description: Option<String>,
    #[serde(rename = "type")]
    kind: Option<UnitKind>,
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
    output: Option<Output>,
    requires: Option<Vec<Spanned<String>>>,
    wants: Option<Vec<Spanned<String>>>,
    after: Option<Vec<Spanned<String>>>,
    mount: Option<Vec<Spanned<RawMount>>>,
    ready: Option<Spanned<RawReady>>,
    health: Option<Spanned<RawHealth>>,
    readiness: Option<Spanned<RawHealth>>,
    restart: Option<Spanned<RawRestart>>,
    stop: Option<Spanned<RawStop>>,
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
    exec: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    nofile: Option<u64>,
    nproc: Option<u64>,
    core: Option<u64>,
    memlock: Option<u64>,
}

/// Every key a unit file may have, for "did you mean" hints.
const TOP_KEYS: &[&str] = &[
    "description",
    "type",
    "exec",
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
    "output",
    "requires",
    "wants",
    "after",
    "mount",
    "ready",
    "health",
    "readiness",
    "restart",
    "stop",
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
    let kind = raw.kind.unwrap_or(UnitKind::Longrun);

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
    let wants = deps(&mut errs, &raw.wants, "wants");
    let after = deps(&mut errs, &raw.after, "after");

    let mounts: Vec<MountReq> = raw
        .mount
        .iter()
        .flatten()
        .filter_map(|m| mount_req(&mut errs, m.get_ref()))
        .collect();

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
        ReadySpec {
            kind: rk,
            timeout: r
                .and_then(|r| r.timeout.as_ref())
                .map(|t| errs.duration(&Some(t.clone()), "ready.timeout", Duration::from_secs(90))),
            fd,
            watchdog,
        }
    };

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
        let exec = s.and_then(|s| s.exec.as_ref()).map(|e| {
            if e.get_ref().is_empty() {
                errs.at(
                    e.span(),
                    "[stop] exec is empty",
                    "give the stop command, or remove it to stop by signal",
                );
            } else if e.get_ref().iter().any(|a| a.contains('\0')) {
                errs.at(
                    e.span(),
                    "[stop] exec has an argument containing NUL",
                    "remove the NUL (\\u0000): no program can receive it",
                );
            }
            e.get_ref().clone()
        });
        StopSpec {
            signal,
            timeout: errs.duration(
                s.map(|s| &s.timeout).unwrap_or(&none),
                "stop.timeout",
                Duration::from_secs(10),
            ),
            exec,
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
    let limits = raw
        .limits
        .as_ref()
        .map(|l| crate::unit::Limits {
            nofile: l.nofile,
            nproc: l.nproc,
            core: l.core,
            memlock: l.memlock,
        })
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
            output: raw.output.unwrap_or(Output::Capture),
        },
        dep_lines,
    ))
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
