//! supd-wide settings: `/etc/supd/supd.toml`.
//!
//! Owns: the settings file's keys and their validation. Command-line flags
//! override it; it overrides built-in defaults. Must never: ignore an
//! unknown key or a bad value (they are errors with file and line).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::UnitError;
use crate::unit::MountReq;
use crate::unit::toml::{Errs, RawMount, RawSize, mount_req};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Config {
    pub units_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub log_level: Option<String>,
    /// supd's own log as JSON lines instead of text.
    pub log_json: bool,
    pub max_parallel_starts: Option<u32>,
    pub hostname: Option<String>,
    /// The state dir's filesystem; lock state is unknown until it is mounted.
    pub state_mount: Option<MountReq>,
    /// Defaults for every unit's `log_max_size` / `log_max_files`.
    pub log: crate::unit::LogSpec,
    /// Where to serve /metrics, /healthz, /readyz (off when None).
    pub metrics: Option<std::net::SocketAddr>,
    /// Pressure-aware shedding (`[shed]`), off when None.
    pub shed: Option<ShedConfig>,
}

/// Which PSI files `[shed]` watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsiSource {
    /// supd's cgroup subtree when it has one (only its own services'
    /// stalls count), else the whole system.
    Auto,
    /// supd's subtree's `cpu.pressure`, `memory.pressure`, `io.pressure`.
    Subtree,
    /// `/proc/pressure/{cpu,memory,io}`.
    System,
}

/// `[shed]`: when pressure sheds units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShedConfig {
    pub source: PsiSource,
    pub resources: Vec<crate::engine::shed::Resource>,
    /// Stall shares in hundredths of a percent (2000 = 20%).
    pub above: u32,
    pub below: u32,
    pub policy: crate::engine::shed::ShedPolicy,
}

impl ShedConfig {
    /// A PSI trigger for a share of the window: "some THRESHOLD WINDOW" in
    /// microseconds.
    pub fn trigger(&self, share: u32) -> String {
        let w = self.policy.window.as_micros() as u64;
        let t = (w * u64::from(share) / 10_000).clamp(1, w);
        format!("some {t} {w}")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShed {
    source: Option<toml::Spanned<String>>,
    resources: Option<Vec<toml::Spanned<String>>>,
    above: Option<toml::Spanned<String>>,
    below: Option<toml::Spanned<String>>,
    window: Option<toml::Spanned<String>>,
    shed_after: Option<toml::Spanned<String>>,
    restore_after: Option<toml::Spanned<String>>,
    jitter: Option<toml::Spanned<String>>,
}

/// "20%" or "2.5%" -> hundredths of a percent.
fn percent(s: &str) -> Option<u32> {
    let n = s.trim().strip_suffix('%')?.trim();
    let v: f64 = n.parse().ok()?;
    (v.is_finite() && v > 0.0 && v <= 100.0).then(|| (v * 100.0).round() as u32)
}

fn shed_config(errs: &mut Errs, raw: &RawShed) -> Option<ShedConfig> {
    use crate::engine::shed::{Resource, ShedPolicy};
    let d = ShedPolicy::default();
    let source = match raw
        .source
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s.span()))
    {
        None | Some(("auto", _)) => PsiSource::Auto,
        Some(("subtree", _)) => PsiSource::Subtree,
        Some(("system", _)) => PsiSource::System,
        Some((other, span)) => {
            errs.at(
                span,
                format!("[shed] source = {other:?} is not a source"),
                "use \"auto\" (supd's cgroup subtree when it has one, else the system), \"subtree\" or \"system\" (/proc/pressure)",
            );
            PsiSource::Auto
        }
    };
    let mut resources = Vec::new();
    match &raw.resources {
        None => resources.extend(Resource::ALL),
        Some(list) => {
            for r in list {
                match Resource::parse(r.get_ref()) {
                    Some(x) if !resources.contains(&x) => resources.push(x),
                    Some(_) => {}
                    None => errs.at(
                        r.span(),
                        format!("[shed] resources: {:?} is not a PSI resource", r.get_ref()),
                        "use \"cpu\", \"memory\" and/or \"io\"",
                    ),
                }
            }
            if list.is_empty() {
                errs.whole(
                    "[shed] resources is empty: nothing would be watched",
                    "name at least one of \"cpu\", \"memory\", \"io\", or remove [shed]",
                );
            }
        }
    }
    let mut share = |v: &Option<toml::Spanned<String>>, key: &str, default: u32| match v {
        None => default,
        Some(s) => match percent(s.get_ref()) {
            Some(p) => p,
            None => {
                errs.at(
                    s.span(),
                    format!("[shed] {key} = {:?} is not a share of time", s.get_ref()),
                    "write a percentage above 0 and at most 100, e.g. \"20%\" or \"2.5%\"",
                );
                default
            }
        },
    };
    let above = share(&raw.above, "above", 2000);
    let below = share(&raw.below, "below", 500);
    if below >= above {
        errs.whole(
            format!(
                "[shed] below ({}%) must be lower than above ({}%)",
                f64::from(below) / 100.0,
                f64::from(above) / 100.0
            ),
            "below is the restore threshold: pressure must fall under it, so it is the lower one",
        );
    }
    let window = errs.duration(&raw.window, "window", d.window);
    if !(std::time::Duration::from_millis(500)..=std::time::Duration::from_secs(10))
        .contains(&window)
    {
        errs.whole(
            format!("[shed] window = {window:?} is outside what the kernel accepts"),
            "use 500ms to 10s (without CAP_SYS_RESOURCE the kernel wants a multiple of 2s: \"2s\", \"4s\"...)",
        );
    }
    let policy = ShedPolicy {
        window,
        shed_after: errs.duration(&raw.shed_after, "shed_after", d.shed_after),
        restore_after: errs.duration(&raw.restore_after, "restore_after", d.restore_after),
        jitter: errs.duration(&raw.jitter, "jitter", d.jitter),
    };
    Some(ShedConfig {
        source,
        resources,
        above,
        below,
        policy,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    units_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    log_level: Option<toml::Spanned<String>>,
    log_format: Option<toml::Spanned<String>>,
    max_parallel_starts: Option<toml::Spanned<u32>>,
    hostname: Option<String>,
    state_mount: Option<RawMount>,
    log_max_size: Option<toml::Spanned<RawSize>>,
    log_max_files: Option<toml::Spanned<u32>>,
    metrics: Option<toml::Spanned<String>>,
    shed: Option<RawShed>,
}

impl Config {
    pub fn parse(file: &Path, text: &str) -> Result<Config, Vec<UnitError>> {
        let mut errs = Errs::new(file, text);
        let raw: Raw = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                match e.span() {
                    Some(s) => errs.at(s, e.message().trim(), "valid keys: units_dir, state_dir, socket, log_level, log_format, max_parallel_starts, hostname, log_max_size, log_max_files, metrics, [state_mount], [shed]"),
                    None => errs.whole(e.message().trim(), ""),
                }
                return Err(errs.list);
            }
        };
        if let Some(l) = &raw.log_level
            && !["error", "warn", "info", "debug", "trace"].contains(&l.get_ref().as_str())
        {
            errs.at(
                l.span(),
                format!("log_level {:?} is not a level", l.get_ref()),
                "use error, warn, info, debug or trace",
            );
        }
        if let Some(f) = &raw.log_format
            && !["text", "json"].contains(&f.get_ref().as_str())
        {
            errs.at(
                f.span(),
                format!("log_format {:?} is not a format", f.get_ref()),
                "use \"text\" or \"json\"",
            );
        }
        if let Some(m) = &raw.max_parallel_starts
            && *m.get_ref() == 0
        {
            errs.at(m.span(), "max_parallel_starts must be at least 1", "");
        }
        let log = errs.log_limits(&raw.log_max_size, &raw.log_max_files);
        let metrics =
            raw.metrics
                .as_ref()
                .and_then(|m| match m.get_ref().parse::<std::net::SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(e) => {
                        errs.at(
                            m.span(),
                            format!("metrics = {:?} is not an address ({e})", m.get_ref()),
                            "write IP:PORT, e.g. \"127.0.0.1:9611\" or \"[::1]:9611\"",
                        );
                        None
                    }
                });
        let state_mount = raw
            .state_mount
            .as_ref()
            .and_then(|m| mount_req(&mut errs, m));
        let shed = raw.shed.as_ref().and_then(|s| shed_config(&mut errs, s));
        if !errs.list.is_empty() {
            return Err(errs.list);
        }
        Ok(Config {
            units_dir: raw.units_dir,
            state_dir: raw.state_dir,
            socket: raw.socket,
            log_level: raw.log_level.map(|l| l.into_inner()),
            log_json: raw
                .log_format
                .is_some_and(|f| f.get_ref().as_str() == "json"),
            max_parallel_starts: raw.max_parallel_starts.map(|m| m.into_inner()),
            hostname: raw.hostname,
            state_mount,
            log,
            metrics,
            shed,
        })
    }

    /// Ok(None) when the file does not exist.
    pub fn load(path: &Path) -> Result<Option<Config>, Vec<UnitError>> {
        // Only a regular file, bounded (a FIFO here would hang PID 1's boot).
        let read = crate::world::regular_file::read(path, crate::unit::load::MAX_UNIT_BYTES)
            .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other));
        match read {
            Ok(text) => Config::parse(path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(vec![UnitError::new(path, format!("cannot read: {e}"))]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let c = Config::parse(
            Path::new("supd.toml"),
            "state_dir = \"/var/lib/supd\"\nmax_parallel_starts = 4\n[state_mount]\npath = \"/var\"\nfstype = \"ext4\"\n",
        )
        .unwrap();
        assert_eq!(c.max_parallel_starts, Some(4));
        assert_eq!(c.state_mount.unwrap().path, PathBuf::from("/var"));
        let e = Config::parse(Path::new("supd.toml"), "\nlog_lvl = \"info\"\n").unwrap_err();
        assert!(e[0].to_string().contains("supd.toml:2:"), "{}", e[0]);
        let e = Config::parse(Path::new("supd.toml"), "max_parallel_starts = 0\n").unwrap_err();
        assert!(e[0].to_string().contains("at least 1"));
        assert_eq!(Config::load(Path::new("/nonexistent/supd.toml")), Ok(None));
        let c = Config::parse(
            Path::new("supd.toml"),
            "log_max_size = \"256K\"\nlog_max_files = 8\n",
        )
        .unwrap();
        assert_eq!(c.log.max_size, Some(256 * 1024));
        assert_eq!(c.log.max_files, Some(8));
        let e = Config::parse(Path::new("supd.toml"), "log_max_size = 10\n").unwrap_err();
        assert!(e[0].to_string().contains("out of range"), "{}", e[0]);
        let c = Config::parse(Path::new("supd.toml"), "log_format = \"json\"\n").unwrap();
        assert!(c.log_json);
        let e = Config::parse(Path::new("supd.toml"), "log_format = \"xml\"\n").unwrap_err();
        assert!(e[0].to_string().contains("not a format"), "{}", e[0]);
        let c = Config::parse(Path::new("supd.toml"), "metrics = \"127.0.0.1:9611\"\n").unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9611".parse().unwrap()));
        let e = Config::parse(Path::new("supd.toml"), "metrics = \"localhost\"\n").unwrap_err();
        assert!(e[0].to_string().contains("not an address"), "{}", e[0]);
    }

    #[test]
    fn shed_section_defaults_and_errors_name_the_line() {
        use crate::engine::shed::Resource;
        let c = Config::parse(Path::new("supd.toml"), "[shed]\n").unwrap();
        let s = c.shed.expect("shed on");
        assert_eq!(s.source, PsiSource::Auto);
        assert_eq!(s.resources, Resource::ALL.to_vec());
        assert_eq!((s.above, s.below), (2000, 500));
        assert_eq!(s.trigger(s.above), "some 400000 2000000");
        assert!(
            Config::parse(Path::new("supd.toml"), "")
                .unwrap()
                .shed
                .is_none()
        );
        let c = Config::parse(
            Path::new("supd.toml"),
            "[shed]\nsource = \"system\"\nresources = [\"memory\"]\nabove = \"12.5%\"\nbelow = \"1%\"\nwindow = \"4s\"\nshed_after = \"0s\"\n",
        )
        .unwrap();
        let s = c.shed.unwrap();
        assert_eq!(s.source, PsiSource::System);
        assert_eq!(s.resources, vec![Resource::Memory]);
        assert_eq!(s.trigger(s.above), "some 500000 4000000");
        assert_eq!(s.policy.shed_after, std::time::Duration::ZERO);
        for (text, needle) in [
            ("[shed]\nsource = \"disk\"\n", "supd.toml:2:"),
            ("[shed]\nresources = [\"gpu\"]\n", "not a PSI resource"),
            ("[shed]\nabove = \"150%\"\n", "not a share of time"),
            ("[shed]\nabove = \"5%\"\nbelow = \"10%\"\n", "must be lower"),
            (
                "[shed]\nwindow = \"20s\"\n",
                "outside what the kernel accepts",
            ),
            ("[shed]\nrestore_after = \"soon\"\n", "not a duration"),
            ("[shed]\nbogus = 1\n", "supd.toml:2:"),
        ] {
            let e = Config::parse(Path::new("supd.toml"), text).unwrap_err();
            assert!(e[0].to_string().contains(needle), "{text}: {}", e[0]);
        }
    }
}
