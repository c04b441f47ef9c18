//! The `supd` command line, in the library so that `supctl generate-docs`
//! can render supd's man page and completions too (keeping clap_mangen and
//! clap_complete out of the PID-1 binary).
//!
//! Owns: flags, subcommands and their help text. Must never: resolve
//! defaults or touch the system (bin/supd.rs does that).
//!
//! Two parsers, one meaning: the clap derive below is the definition (man
//! page, completions, and the reference in tests), and `parse` is what the
//! PID-1 binary runs — a hand parser for these flags, because clap's
//! parser was 213 KB of the static supd (measured: 2,025,968 -> 1,812,976
//! bytes) for a job this small, and PID 1 is in every container. `tests::hand_parser_agrees_with_clap`
//! feeds both the same command lines so they cannot drift.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// supd — a service supervisor that can run as PID 1.
///
/// Starts services from TOML unit files only when their preconditions hold
/// (their filesystems really mounted, their dependencies really ready),
/// watches them with health probes, restarts them with care, and honours
/// maintenance locks (`supctl maintenance on UNIT`) that no automatic
/// restart overrides.
///
/// Paths: flags override `/etc/supd/supd.toml` (see --config), which
/// overrides the defaults. As root the defaults are /etc/supd/units,
/// /var/lib/supd and /run/supd/control.sock; as another user
/// ~/.config/supd/units, ~/.local/state/supd and
/// $XDG_RUNTIME_DIR/supd/control.sock. SUPD_SOCKET overrides the socket.
///
/// Signals: SIGTERM/SIGINT stop every unit in reverse dependency order, then
/// supd exits (as a VM's PID 1: powers off / reboots); SIGHUP reloads the
/// unit files; SIGUSR1/SIGUSR2 are forwarded to every unit's process group.
///
/// Exit codes: 0 clean shutdown, 1 failure (bad units at start-up, socket in
/// use...), 2 usage error. `supd -- CMD` exits with CMD's status.
#[derive(Parser, Debug, PartialEq)]
#[command(name = "supd", version, about, long_about, verbatim_doc_comment)]
pub struct Cli {
    /// Directory of unit files (NAME.toml).
    #[arg(long, global = true, value_name = "DIR")]
    pub units: Option<PathBuf>,
    /// Where maintenance locks and the audit log are kept.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Control socket path (also: SUPD_SOCKET).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// supd-wide settings file.
    #[arg(long, value_name = "FILE", default_value = "/etc/supd/supd.toml")]
    pub config: PathBuf,
    /// error | warn | info | debug | trace (also: SUPD_LOG).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Cap on units starting at once (not yet ready).
    #[arg(long, value_name = "N")]
    pub max_parallel_starts: Option<u32>,
    /// Serve Prometheus /metrics, /healthz and /readyz on ADDR
    /// (e.g. 127.0.0.1:9611). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    /// `supd -- CMD [ARGS...]`: container shim — run CMD as the only child,
    /// forward signals to it, reap orphans, exit with its status.
    // `--` without CMD is a usage error, which only `parse` can tell.
    #[arg(last = true, value_name = "CMD")]
    pub shim: Vec<String>,
}

#[derive(Subcommand, Debug, PartialEq)]
pub enum Cmd {
    /// Validate the unit files (and supd.toml) and print every error; exit 1
    /// if there is any, 0 with a one-line summary otherwise.
    Check,
    /// Convert systemd .service files (and NAME@.service templates) to supd
    /// units, naming every directive that cannot be honoured; exit 1 if
    /// any is refused.
    Import {
        /// Write NAME.toml files here (and check the directory) instead of
        /// printing them.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Write the units anyway; refusals become warnings (listed in each
        /// file).
        #[arg(long)]
        lossy: bool,
        /// systemd unit files; NAME@INSTANCE.service reads NAME@.service.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

/// What the PID-1 binary's parser found.
#[derive(Debug, PartialEq)]
// Built once per process; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    Run(Cli),
    /// Print `HELP` (or the version) on stdout and exit 0.
    Help,
    Version,
}

/// A usage error: print it on stderr and exit 2.
#[derive(Debug, PartialEq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "error: {}\n\nUsage: supd [OPTIONS] [COMMAND] [-- <CMD>...]\n\nFor more information, try '--help'.",
            self.0
        )
    }
}

/// `supd --help`, kept in step with the clap definition by a test.
pub const HELP: &str = "\
supd — a service supervisor that can run as PID 1.

Starts services from TOML unit files only when their preconditions hold
(their filesystems really mounted, their dependencies really ready),
watches them with health probes, restarts them with care, and honours
maintenance locks (`supctl maintenance on UNIT`) that no automatic
restart overrides.

Usage: supd [OPTIONS] [COMMAND] [-- <CMD>...]

Commands:
  check   Validate the unit files (and supd.toml) and print every error; exit 1
          if there is any, 0 with a one-line summary otherwise.
  import  Convert systemd .service files (and NAME@.service templates) to supd
          units, naming every directive that cannot be honoured; exit 1 if
          any is refused.
          supd import [--out DIR] [--lossy] FILE.service...
            --out DIR  write NAME.toml files there (and check the directory)
                       instead of printing them
            --lossy    write the units anyway; refusals become warnings
  help    Print this message

Arguments:
  [CMD]...  `supd -- CMD [ARGS...]`: container shim — run CMD as the only child,
            forward signals to it, reap orphans, exit with its status.

Options:
      --units <DIR>                Directory of unit files (NAME.toml).
      --state-dir <DIR>            Where maintenance locks and the audit log are kept.
      --socket <PATH>              Control socket path (also: SUPD_SOCKET).
      --config <FILE>              supd-wide settings file. [default: /etc/supd/supd.toml]
      --log-level <LEVEL>          error | warn | info | debug | trace (also: SUPD_LOG).
      --max-parallel-starts <N>    Cap on units starting at once (not yet ready).
      --metrics <ADDR>             Serve Prometheus /metrics, /healthz and /readyz on ADDR
                                   (e.g. 127.0.0.1:9611). Off by default.
  -h, --help                       Print help
  -V, --version                    Print version

Paths: flags override /etc/supd/supd.toml (see --config), which overrides
the defaults. As root the defaults are /etc/supd/units, /var/lib/supd and
/run/supd/control.sock; as another user ~/.config/supd/units,
~/.local/state/supd and $XDG_RUNTIME_DIR/supd/control.sock. SUPD_SOCKET
overrides the socket.

Signals: SIGTERM/SIGINT stop every unit in reverse dependency order, then
supd exits (as a VM's PID 1: powers off / reboots); SIGHUP reloads the unit
files; SIGUSR1/SIGUSR2 are forwarded to every unit's process group.

Exit codes: 0 clean shutdown, 1 failure (bad units at start-up, socket in
use...), 2 usage error. `supd -- CMD` exits with CMD's status.
";

/// Parse supd's arguments (without argv[0]) as the clap definition would.
pub fn parse<I>(args: I) -> Result<Parsed, UsageError>
where
    I: IntoIterator<Item = std::ffi::OsString>,
{
    let mut cli = Cli {
        units: None,
        state_dir: None,
        socket: None,
        config: PathBuf::from("/etc/supd/supd.toml"),
        log_level: None,
        max_parallel_starts: None,
        metrics: None,
        cmd: None,
        shim: Vec::new(),
    };
    let mut seen: Vec<&'static str> = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let Some(a) = arg.to_str() else {
            return Err(UsageError(format!(
                "invalid UTF-8 in argument {:?}",
                arg.to_string_lossy()
            )));
        };
        if a == "--" {
            for rest in it.by_ref() {
                match rest.into_string() {
                    Ok(s) => cli.shim.push(s),
                    Err(o) => {
                        return Err(UsageError(format!(
                            "invalid UTF-8 in argument {:?}",
                            o.to_string_lossy()
                        )));
                    }
                }
            }
            if cli.shim.is_empty() {
                // clap cannot say this (a bare `--` parses like no `--`),
                // so the agreement test lists it apart.
                return Err(UsageError(
                    "`--` must be followed by a command: supd -- CMD [ARGS...]".to_string(),
                ));
            }
            break;
        }
        match a {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "help" if cli.cmd.is_none() => return Ok(Parsed::Help),
            "check" if cli.cmd.is_none() => {
                cli.cmd = Some(Cmd::Check);
                continue;
            }
            "import" if cli.cmd.is_none() => {
                cli.cmd = Some(parse_import(&mut it, &mut cli)?);
                break;
            }
            _ => {}
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a, None),
        };
        let name: &'static str = match flag {
            "--units" => "--units",
            "--state-dir" => "--state-dir",
            "--socket" => "--socket",
            "--config" => "--config",
            "--log-level" => "--log-level",
            "--max-parallel-starts" => "--max-parallel-starts",
            "--metrics" => "--metrics",
            _ => {
                return Err(UsageError(format!("unexpected argument '{a}' found")));
            }
        };
        // After `check` only the global --units is accepted, as in clap.
        if cli.cmd.is_some() && name != "--units" {
            return Err(UsageError(format!("unexpected argument '{a}' found")));
        }
        if seen.contains(&name) {
            return Err(UsageError(format!(
                "the argument '{name}' cannot be used multiple times"
            )));
        }
        seen.push(name);
        let value = match inline {
            Some(v) => v,
            None => match it.next().map(|v| v.into_string()) {
                Some(Ok(v)) if !v.starts_with("--") || v == "-" => v,
                _ => {
                    return Err(UsageError(format!(
                        "a value is required for '{name}' but none was supplied"
                    )));
                }
            },
        };
        match name {
            "--units" => cli.units = Some(PathBuf::from(value)),
            "--state-dir" => cli.state_dir = Some(PathBuf::from(value)),
            "--socket" => cli.socket = Some(PathBuf::from(value)),
            "--config" => cli.config = PathBuf::from(value),
            "--log-level" => cli.log_level = Some(value),
            "--metrics" => cli.metrics = Some(value),
            _ => {
                cli.max_parallel_starts = Some(value.parse().map_err(|e| {
                    UsageError(format!(
                        "invalid value '{value}' for '--max-parallel-starts <N>': {e}"
                    ))
                })?)
            }
        }
    }
    Ok(Parsed::Run(cli))
}

/// The rest of the line after `import`: its flags, the global --units,
/// and at least one file.
fn parse_import<I>(it: &mut I, cli: &mut Cli) -> Result<Cmd, UsageError>
where
    I: Iterator<Item = std::ffi::OsString>,
{
    let mut out = None;
    let mut lossy = false;
    let mut files = Vec::new();
    let mut only_files = false;
    while let Some(arg) = it.next() {
        let Some(a) = arg.to_str() else {
            return Err(UsageError(format!(
                "invalid UTF-8 in argument {:?}",
                arg.to_string_lossy()
            )));
        };
        if only_files || !a.starts_with("--") || a == "-" {
            files.push(PathBuf::from(a));
            continue;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (a, None),
        };
        let mut value = |name: &str| -> Result<String, UsageError> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => match it.next().map(|v| v.into_string()) {
                    Some(Ok(v)) if !v.starts_with("--") => Ok(v),
                    _ => Err(UsageError(format!(
                        "a value is required for '{name}' but none was supplied"
                    ))),
                },
            }
        };
        match flag {
            "--" => only_files = true,
            "--lossy" if inline.is_none() => {
                if lossy {
                    return Err(UsageError(
                        "the argument '--lossy' cannot be used multiple times".into(),
                    ));
                }
                lossy = true;
            }
            "--out" => {
                if out.is_some() {
                    return Err(UsageError(
                        "the argument '--out <DIR>' cannot be used multiple times".into(),
                    ));
                }
                out = Some(PathBuf::from(value("--out <DIR>")?));
            }
            "--units" => {
                if cli.units.is_some() {
                    return Err(UsageError(
                        "the argument '--units' cannot be used multiple times".into(),
                    ));
                }
                cli.units = Some(PathBuf::from(value("--units <DIR>")?));
            }
            _ => return Err(UsageError(format!("unexpected argument '{a}' found"))),
        }
    }
    if files.is_empty() {
        return Err(UsageError(
            "the following required arguments were not provided: <FILE>...".into(),
        ));
    }
    Ok(Cmd::Import { out, lossy, files })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    fn argv(s: &[&str]) -> Vec<std::ffi::OsString> {
        s.iter().map(|a| a.into()).collect()
    }

    #[test]
    fn hand_parser_agrees_with_clap() {
        let good: &[&[&str]] = &[
            &[],
            &["--units", "/u", "--state-dir", "/s", "--socket", "/c.sock"],
            &[
                "--units=/u",
                "--log-level=debug",
                "--max-parallel-starts",
                "7",
            ],
            &["--config", "/etc/x.toml", "check"],
            &["--metrics", "127.0.0.1:9611", "--units", "/u"],
            &["--metrics=[::1]:9611"],
            &["check", "--units", "/u"],
            &["--", "/bin/sh", "-c", "exit 3"],
            &["--units", "/u", "--", "prog", "--units", "x"],
            &["import", "a.service"],
            &[
                "import",
                "--out",
                "/o",
                "--lossy",
                "a.service",
                "b@.service",
            ],
            &["import", "a.service", "--out=/o"],
            &["--units", "/u", "import", "--lossy", "x.service"],
        ];
        for g in good {
            let clap = Cli::try_parse_from(std::iter::once("supd").chain(g.iter().copied()))
                .unwrap_or_else(|e| panic!("clap rejects {g:?}: {e}"));
            match parse(argv(g)) {
                Ok(Parsed::Run(hand)) => assert_eq!(hand, clap, "{g:?}"),
                other => panic!("hand parser on {g:?}: {other:?}"),
            }
        }
        let bad: &[&[&str]] = &[
            &["--units"],
            &["--bogus"],
            &["stray"],
            &["--max-parallel-starts", "many"],
            &["--metrics"],
            &["check", "--metrics", "x"],
            &["--units", "/a", "--units", "/b"],
            &["check", "--socket", "/x"],
            &["--socket", "--units"],
            &["import"],
            &["import", "--out"],
            &["import", "--bogus", "a.service"],
            &["import", "--lossy", "--lossy", "a.service"],
            &["import", "--lossy=yes", "a.service"],
        ];
        for b in bad {
            assert!(
                Cli::try_parse_from(std::iter::once("supd").chain(b.iter().copied())).is_err(),
                "clap accepts {b:?}"
            );
            assert!(parse(argv(b)).is_err(), "hand parser accepts {b:?}");
        }
        // A bare `--` (the shim without a command) is a usage error. clap's
        // definition cannot express it — to clap, `supd --` is `supd` — so
        // only the hand parser, the one the binary runs, is checked here.
        for b in [&["--"][..], &["--units", "/u", "--"]] {
            assert!(
                matches!(parse(argv(b)), Err(UsageError(ref m)) if m.contains("supd -- CMD")),
                "hand parser accepts {b:?}"
            );
        }
        assert_eq!(parse(argv(&["--help"])), Ok(Parsed::Help));
        assert_eq!(parse(argv(&["-V"])), Ok(Parsed::Version));
    }

    #[test]
    fn help_names_every_flag_of_the_definition() {
        let cmd = Cli::command();
        for a in cmd.get_arguments() {
            if let Some(long) = a.get_long() {
                assert!(
                    HELP.contains(&format!("--{long}")),
                    "--{long} missing from HELP"
                );
            }
        }
        for sc in cmd.get_subcommands() {
            assert!(HELP.contains(sc.get_name()), "{} missing", sc.get_name());
        }
    }
}
