//! `supd`: the supervisor binary.
//!
//! Owns: command-line parsing, choosing run / check / `--` shim, resolving
//! paths (flags > supd.toml > defaults), logging setup. Must never: let a
//! panic end PID 1 — the driver runs under `catch_unwind`, and as PID 1 a
//! failure degrades to reaping forever rather than a kernel panic.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use supd::config::Config;
use supd::driver::{self, Settings};
use supd::world::init::{self, Mode};

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
struct Cli {
    /// Directory of unit files (NAME.toml).
    #[arg(long, global = true, value_name = "DIR")]
    units: Option<PathBuf>,
    /// Where maintenance locks and the audit log are kept.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Control socket path (also: SUPD_SOCKET).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// supd-wide settings file.
    #[arg(long, value_name = "FILE", default_value = "/etc/supd/supd.toml")]
    config: PathBuf,
    /// error | warn | info | debug | trace (also: SUPD_LOG).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Cap on units starting at once (not yet ready).
    #[arg(long, value_name = "N")]
    max_parallel_starts: Option<u32>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// `supd -- CMD [ARGS...]`: container shim — run CMD as the only child,
    /// forward signals to it, reap orphans, exit with its status.
    #[arg(last = true, value_name = "CMD")]
    shim: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Validate the unit files (and supd.toml) and print every error; exit 1
    /// if there is any, 0 with a one-line summary otherwise.
    Check,
    /// Write man pages and shell completions for supd and supctl to DIR
    /// (used by packaging).
    #[command(hide = true)]
    GenerateDocs { dir: PathBuf },
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

fn default_units() -> PathBuf {
    if is_root() {
        PathBuf::from("/etc/supd/units")
    } else {
        home().join(".config/supd/units")
    }
}

fn default_state() -> PathBuf {
    if is_root() {
        PathBuf::from("/var/lib/supd")
    } else {
        home().join(".local/state/supd")
    }
}

fn init_logging(level: &str) {
    let level = match level {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn main() -> ExitCode {
    // The kernel gives PID 1 no PATH; our children get a sane one from the
    // spawner, and we want `which`-style lookups in supd itself to work.
    if std::env::var_os("PATH").is_none() {
        // SAFETY: single-threaded at this point (no runtime yet).
        unsafe { std::env::set_var("PATH", supd::world::spawn::DEFAULT_PATH) };
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if !cli.shim.is_empty() {
        let code = supd::world::shim::run(&cli.shim);
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let mode = init::detect_mode();

    let config = match Config::load(&cli.config) {
        Ok(c) => c.unwrap_or_default(),
        Err(errs) => {
            for e in &errs {
                eprintln!("{e}");
            }
            if mode == Mode::Subreaper || cli.cmd.is_some() {
                return ExitCode::from(1);
            }
            // PID 1 must come up anyway; defaults it is.
            Config::default()
        }
    };
    let units_dir = cli
        .units
        .clone()
        .or(config.units_dir.clone())
        .unwrap_or_else(default_units);

    if let Some(Cmd::GenerateDocs { dir }) = &cli.cmd {
        return match supd::docs::generate(dir, Cli::command()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("supd: generating docs in {}: {e}", dir.display());
                ExitCode::from(1)
            }
        };
    }
    if let Some(Cmd::Check) = cli.cmd {
        return match supd::unit::load::load_dir(&units_dir) {
            Ok(set) => {
                println!("{}", supd::unit::load::summary(&set));
                ExitCode::SUCCESS
            }
            Err(errs) => {
                eprint!("{}", supd::unit::load::format_report(&errs));
                ExitCode::from(1)
            }
        };
    }

    let level = cli
        .log_level
        .clone()
        .or_else(|| std::env::var("SUPD_LOG").ok())
        .or(config.log_level.clone())
        .unwrap_or_else(|| "info".to_string());
    init_logging(&level);

    match mode {
        Mode::VmInit => {
            init::early_mounts();
            init::loopback_up();
            if let Some(h) = &config.hostname
                && let Err(e) = nix::unistd::sethostname(h)
            {
                tracing::warn!("setting hostname {h}: {e}");
            }
        }
        Mode::ContainerInit => {}
        Mode::Subreaper => {
            if let Err(e) = init::become_subreaper() {
                tracing::warn!(
                    "cannot become a child subreaper ({e}); orphans of services will not be reaped by supd"
                );
            }
        }
    }
    tracing::info!("supd {} starting as {mode:?}", env!("CARGO_PKG_VERSION"));

    let set = match supd::unit::load::load_dir(&units_dir) {
        Ok(set) => set,
        Err(errs) => {
            eprint!("{}", supd::unit::load::format_report(&errs));
            if mode == Mode::Subreaper {
                eprintln!(
                    "supd: refusing to start with invalid unit files (fix them; `supd check --units {}` lists the errors)",
                    units_dir.display()
                );
                return ExitCode::from(1);
            }
            tracing::error!(
                "unit files invalid; starting with no units. Fix them, then `supctl reload`"
            );
            supd::unit::UnitSet::default()
        }
    };
    let settings = Settings {
        units_dir,
        state_dir: cli
            .state_dir
            .clone()
            .or(config.state_dir.clone())
            .unwrap_or_else(default_state),
        socket: cli
            .socket
            .clone()
            .or_else(|| std::env::var_os("SUPD_SOCKET").map(PathBuf::from))
            .or(config.socket.clone())
            .unwrap_or_else(supd::world::control::default_socket_path),
        max_parallel_starts: cli
            .max_parallel_starts
            .or(config.max_parallel_starts)
            .unwrap_or(16)
            .max(1),
        state_mount: config.state_mount.clone(),
        mode,
    };
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let result = std::panic::catch_unwind(move || driver::run(settings, set, seed));
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(_) => {
            tracing::error!("BUG: supd's driver panicked");
            if mode != Mode::Subreaper {
                // PID 1 exiting panics the kernel; keep reaping instead.
                loop {
                    init::reap_all_nohang();
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
            ExitCode::from(1)
        }
    }
}
