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
}

impl Config {
    pub fn parse(file: &Path, text: &str) -> Result<Config, Vec<UnitError>> {
        let mut errs = Errs::new(file, text);
        let raw: Raw = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                match e.span() {
                    Some(s) => errs.at(s, e.message().trim(), "valid keys: units_dir, state_dir, socket, log_level, log_format, max_parallel_starts, hostname, log_max_size, log_max_files, metrics, [state_mount]"),
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
}
