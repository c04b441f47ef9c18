//! `supd`: the supervisor binary.
//!
//! Owns: command-line parsing (by `supd::cli::parse`, not clap: see there), choosing run / check / import / `--` shim, resolving
//! paths (flags > supd.toml > defaults), logging setup. Must never: let a
//! panic end PID 1 — the driver runs under `catch_unwind`, and as PID 1 a
//! failure degrades to reaping forever rather than a kernel panic.

use std::path::PathBuf;
use std::process::ExitCode;

use supd::cli::{Cmd, Parsed};
use supd::config::Config;
use supd::driver::{self, Settings};
use supd::world::init::{self, Mode};

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

fn init_logging(level: &str, json: bool) {
    let level = match level {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    supd::world::log::init_as(level, json);
}

/// The signal mask and ignored signals supd was started with, recorded for
/// `supd -- CMD` before anything can change them: `.init_array` runs ahead
/// of Rust's runtime start-up, which sets SIGPIPE to ignored.
#[used]
#[unsafe(link_section = ".init_array")]
static RECORD_INHERITED_SIGNALS: extern "C" fn() = supd::world::shim::record_inherited_signals;

fn main() -> ExitCode {
    // Normally done already (see RECORD_INHERITED_SIGNALS); a no-op then.
    supd::world::shim::record_inherited_signals();
    // The kernel gives PID 1 no PATH; our children get a sane one from the
    // spawner, and we want `which`-style lookups in supd itself to work.
    if std::env::var_os("PATH").is_none() {
        // SAFETY: single-threaded at this point (no runtime yet).
        unsafe { std::env::set_var("PATH", supd::world::spawn::DEFAULT_PATH) };
    }
    let cli = match supd::cli::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(c)) => c,
        Ok(Parsed::Help) => {
            print!("{}", supd::cli::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("supd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !cli.shim.is_empty() {
        let code = supd::world::shim::run(&cli.shim);
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    if let Some(Cmd::Import { out, lossy, files }) = &cli.cmd {
        let code = supd::import::command::run(&supd::import::command::Options {
            out: out.clone(),
            lossy: *lossy,
            files: files.clone(),
            fstab: PathBuf::from("/etc/fstab"),
        });
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

    if let Some(Cmd::Check) = cli.cmd {
        return match supd::unit::load::load_dir(&units_dir) {
            Ok(set) => {
                // What certainly fails at spawn on this host is an error
                // here (boot and reload only warn: see world::host_check).
                let host = supd::world::host_check::check_set(&set);
                if !host.is_empty() {
                    eprint!("{}", supd::unit::load::format_report(&host));
                    return ExitCode::from(1);
                }
                println!("{}", supd::unit::load::summary(&set));
                ExitCode::SUCCESS
            }
            Err(errs) => {
                eprint!("{}", supd::unit::load::format_report(&errs));
                ExitCode::from(1)
            }
        };
    }

    let metrics = match cli
        .metrics
        .as_deref()
        .map(str::parse::<std::net::SocketAddr>)
    {
        None => config.metrics,
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            eprintln!(
                "{}",
                supd::cli::UsageError(format!(
                    "invalid value '{}' for '--metrics <ADDR>': {e} (write IP:PORT, e.g. 127.0.0.1:9611)",
                    cli.metrics.as_deref().unwrap_or("")
                ))
            );
            return ExitCode::from(2);
        }
    };
    let level = cli
        .log_level
        .clone()
        .or_else(|| std::env::var("SUPD_LOG").ok())
        .or(config.log_level.clone())
        .unwrap_or_else(|| "info".to_string());
    init_logging(&level, config.log_json);

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

    // As a subreaper someone can see the refusal and fix the files; as PID
    // 1 nobody can, so supd starts what is valid (and every essential
    // unit): a repair console must come up.
    let (set, skipped) = if mode == Mode::Subreaper {
        match supd::unit::load::load_dir(&units_dir) {
            Ok(set) => (set, Default::default()),
            Err(errs) => {
                eprint!("{}", supd::unit::load::format_report(&errs));
                eprintln!(
                    "supd: refusing to start with invalid unit files (fix them; `supd check --units {}` lists the errors)",
                    units_dir.display()
                );
                return ExitCode::from(1);
            }
        }
    } else {
        let l = supd::unit::load::load_dir_lenient(&units_dir);
        if !l.errors.is_empty() {
            eprint!("{}", supd::unit::load::format_report(&l.errors));
            for (name, why) in &l.skipped.units {
                tracing::error!(unit = %name, "not loaded: {why}");
            }
            for note in &l.skipped.notes {
                tracing::warn!("{note}");
            }
            tracing::error!(
                "invalid unit files: started the {} valid unit(s) and left out {}; fix them, then `supctl reload` (`supctl status` lists them)",
                l.set.units.len(),
                l.skipped.units.len()
            );
        }
        (l.set, l.skipped)
    };
    // A unit that will fail at spawn must not keep the others from
    // loading: warn now, and its start fails with the same reason.
    for e in supd::world::host_check::check_set(&set) {
        tracing::warn!("{e}");
    }
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
        log: config.log,
        metrics,
        shed: config.shed.clone(),
        skipped,
    };
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let result = std::panic::catch_unwind(move || driver::run(settings, set, seed));
    // Log lines still held for a slow reader of stderr: a bounded wait.
    supd::world::log::flush(std::time::Duration::from_secs(1));
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
