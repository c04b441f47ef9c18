//! `supd import`: systemd `.service` files to supd units.
//!
//! Owns: reading systemd's unit-file syntax (`syntax`), deciding what each
//! directive means in supd (`map`), writing the result as a commented unit
//! (`toml_out`), and — in `command` only — the file I/O of the
//! subcommand. Must never: drop a directive silently. Every directive is
//! either mapped (exactly, or approximated with a note saying how supd's
//! meaning differs) or refused by name with its file:line and why; a
//! refusal is an error unless the operator asked for `--lossy`.
//!
//! `syntax`, `map` and `toml_out` are pure: the facts of the host the
//! mapping needs (which supd units exist, /etc/fstab) are read by
//! `command` and passed in as data, so the mapping is tested on text.

pub mod command;
pub mod map;
pub mod socket;
pub mod syntax;
pub mod toml_out;

use std::fmt;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// For information: what supd does instead, where it differs in
    /// detail (never an error).
    Note,
    /// Mapped, but supd's meaning differs from systemd's in a way the
    /// operator should know (never an error).
    Approximated,
    /// Not honoured: an error, or a warning with `--lossy`.
    Refused,
}

/// One directive's fate, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The systemd directive, e.g. `SystemCallFilter`.
    pub directive: String,
    /// The file it was read from (the unit file or a drop-in).
    pub file: String,
    /// 1-based line, 0 when the finding is about the file as a whole.
    pub line: usize,
    pub why: String,
}

impl Finding {
    /// The line `supd import` prints; `lossy` turns refusals into warnings.
    pub fn display(&self, lossy: bool) -> String {
        let level = match (self.severity, lossy) {
            (Severity::Refused, false) => "error",
            (Severity::Refused, true) => "warning: not honoured",
            (Severity::Approximated, _) => "approximated",
            (Severity::Note, _) => "note",
        };
        let at = if self.line > 0 {
            format!("{}:{}", self.file, self.line)
        } else {
            self.file.clone()
        };
        if self.directive.is_empty() {
            format!("{at}: {level}: {}", self.why)
        } else {
            format!("{at}: {level}: {}=: {}", self.directive, self.why)
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display(false))
    }
}

/// One line of /etc/fstab that names a filesystem mounted at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    pub source: String,
    pub path: String,
    pub fstype: String,
    pub options: Vec<String>,
}

/// Parse fstab text: mount points only (no swap, no `none`).
pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || !f[1].starts_with('/') || f[2] == "swap" {
            continue;
        }
        // fstab writes spaces in paths as \040.
        let path = f[1].replace("\\040", " ");
        out.push(FstabEntry {
            source: f[0].to_string(),
            path: crate::mounts::normalize(std::path::Path::new(&path))
                .to_string_lossy()
                .into_owned(),
            fstype: f[2].to_string(),
            options: f
                .get(3)
                .map(|o| o.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
        });
    }
    out
}

/// The result of importing one file.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The supd unit name (`nginx`, `postgresql@` for a template,
    /// `postgresql@15-main` for an instance); the file is NAME.toml.
    pub name: String,
    /// The generated unit, or None when the file could not be imported
    /// at all (not a service, unreadable syntax).
    pub toml: Option<String>,
    pub findings: Vec<Finding>,
}

impl Imported {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Refused)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_lines() {
        let t = "# c\nUUID=1 / ext4 defaults 0 1\n/dev/vdb /srv/pg ext4 rw,noatime 0 2\n/dev/vdc none swap sw 0 0\nsrv:/x /mnt/my\\040disk nfs defaults\n";
        let f = parse_fstab(t);
        assert_eq!(f.len(), 3);
        assert_eq!(f[1].path, "/srv/pg");
        assert_eq!(f[1].options, ["rw", "noatime"]);
        assert_eq!(f[2].path, "/mnt/my disk");
    }

    #[test]
    fn finding_lines() {
        let f = Finding {
            severity: Severity::Refused,
            directive: "SystemCallFilter".into(),
            file: "/lib/systemd/system/x.service".into(),
            line: 12,
            why: "seccomp filters are not implemented".into(),
        };
        assert_eq!(
            f.display(false),
            "/lib/systemd/system/x.service:12: error: SystemCallFilter=: seccomp filters are not implemented"
        );
        assert!(f.display(true).contains("warning"));
    }
}
