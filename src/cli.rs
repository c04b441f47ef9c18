//! The `supd` command line, in the library so that `supctl generate-docs`
//! can render supd's man page and completions too (keeping clap_mangen and
//! clap_complete out of the PID-1 binary).
//!
//! Owns: flags, subcommands and their help text. Must never: resolve
//! defaults or touch the system (bin/supd.rs does that).

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
#[derive(Parser, Debug)]
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
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    /// `supd -- CMD [ARGS...]`: container shim — run CMD as the only child,
    /// forward signals to it, reap orphans, exit with its status.
    #[arg(last = true, value_name = "CMD")]
    pub shim: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Validate the unit files (and supd.toml) and print every error; exit 1
    /// if there is any, 0 with a one-line summary otherwise.
    Check,
}
