//! `supctl`: the operator's client.
//!
//! Owns: command-line parsing, one request over the control socket, and
//! printing the answer for humans or as one JSON document. Must never:
//! guess a success — exit 0 only when supd said ok; 1 when it refused or
//! could not be reached; 2 for usage errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use supd::analyze as analysis;
use supd::protocol::{GraphReport, LockInfo, Request, StatusReport, TimelineReport, UnitStatus};
use supd::unit::Priority;
use supd::world::control;

/// supctl — control a running supd.
///
/// Exit codes: 0 success, 1 refused or failed (the message says why and
/// what to do), 2 usage error. The socket is --socket, else $SUPD_SOCKET,
/// else /run/supd/control.sock as root ($XDG_RUNTIME_DIR/supd/control.sock
/// otherwise).
#[derive(Parser, Debug)]
#[command(name = "supctl", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    /// Control socket of the supd to talk to.
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// How long to wait for the answer (default 10s; 5m for commands that
    /// wait for a service to stop: stop, restart, maintenance on, poweroff).
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Show units: state, pid, readiness, maintenance locks, and what each
    /// waits on. With UNIT, a detailed view of one unit.
    Status {
        unit: Option<String>,
        /// One JSON document (each unit has name, state, pid, maintenance...).
        #[arg(long)]
        json: bool,
    },
    /// Start a unit (and clear its failed state). Refused while it has a
    /// maintenance lock; the answer names the holder and the reason.
    Start { unit: String },
    /// Stop a unit (units requiring it stop first). It stays down until
    /// `supctl start`: no restart policy or dependency brings it back.
    /// Answers once its processes are gone.
    Stop { unit: String },
    /// Stop then start a unit (its dependents restart too).
    Restart { unit: String },
    /// Clear a unit's failed state and restart budget without starting it.
    Reset { unit: String },
    /// Say, in words, what a unit is waiting on.
    Why { unit: String },
    /// Ask a running unit to reload its own configuration: sends its
    /// `reload_signal` (default SIGHUP) to its process group.
    ReloadUnit { unit: String },
    /// Re-read the unit files. An invalid set changes nothing and the
    /// errors are printed; new units start, removed units stop, changed
    /// units take effect at their next start.
    Reload,
    /// Maintenance locks: an operator's stop that nothing automatic undoes.
    #[command(subcommand)]
    Maintenance(Maint),
    /// Stop every unit at or below a priority and keep them down until
    /// `supctl unshed` (relief for an overloaded backend).
    Shed {
        #[arg(value_enum)]
        level: Level,
    },
    /// Let shed units start again.
    Unshed,
    /// Ordered shutdown: stop units in reverse dependency order, then power
    /// off (VM), or exit (container / not PID 1).
    Poweroff,
    /// Ordered shutdown, then reboot (VM) or exit.
    Reboot,
    /// Replace supd's binary in place (e.g. after an upgrade): the new
    /// image takes over every running service; none is restarted.
    Reexec,
    /// See the boot: which units took longest, the chain of waits behind a
    /// unit, a timeline picture. Times are seconds since supd started.
    #[command(subcommand)]
    Analyze(Analyze),
    /// The dependency graph: requires/wants/after edges, with the mounts
    /// and maintenance locks units wait on as nodes. SVG on stdout
    /// (`supctl graph > units.svg`); --dot for Graphviz
    /// (`supctl graph --dot | dot -Tsvg > units.svg`).
    Graph {
        /// Graphviz DOT instead of SVG.
        #[arg(long, conflicts_with = "json")]
        dot: bool,
        /// The graph as one JSON document (units, edges, mounts, locks).
        #[arg(long)]
        json: bool,
    },
    /// Write man pages and shell completions for supd and supctl to DIR
    /// (used by packaging).
    #[command(hide = true)]
    GenerateDocs { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
enum Maint {
    /// Lock UNIT down. Answers only when the lock is on disk AND the unit's
    /// processes are gone. Several holders may lock one unit.
    On {
        unit: String,
        /// Why (shown to anyone who tries to start it). Required.
        #[arg(long)]
        reason: String,
        /// Lock holder name (default: your user name).
        #[arg(long)]
        holder: Option<String>,
    },
    /// Release your lock on UNIT (once durable). The unit starts again only
    /// when no holder is left and it would otherwise run.
    Off {
        unit: String,
        /// Whose lock to release (default: your user name).
        #[arg(long)]
        holder: Option<String>,
        /// Release every holder's lock when you hold none (audited).
        #[arg(long)]
        force: bool,
        /// Print what would start, in order, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List every lock: unit, holder, reason, since, age.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show the audit log of lock changes (who, what, when).
    Log {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Leave fail-closed mode after the lock state could not be read:
    /// adopt the locks in FILE (e.g. a kept-aside copy), or start empty.
    Recover {
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "accept_empty",
            required_unless_present = "accept_empty"
        )]
        from: Option<String>,
        /// Accept that the old locks are lost and start with none.
        #[arg(long)]
        accept_empty: bool,
    },
}

#[derive(Subcommand, Debug)]
enum Analyze {
    /// Units by time from startable to ready, longest first, with the time
    /// spent waiting (mount, lock, dependency, start cap, backoff) and
    /// starting (spawned -> ready). Units not ready yet come last.
    Blame {
        /// The latest cycle of each unit (after a restart, a lock
        /// released...) instead of the boot.
        #[arg(long)]
        current: bool,
        /// The rows as one JSON document (unit, total_ms, waited_ms,
        /// starting_ms, longest_wait...).
        #[arg(long)]
        json: bool,
    },
    /// The chain of waits that decided when UNIT became ready, latest
    /// first, each with its cause and duration ("waited 4.2 s for mount
    /// /srv/pg"). A wait for a dependency continues, indented, with that
    /// dependency's own chain. Without UNIT: the unit that became ready
    /// last.
    CriticalChain {
        /// Default: the unit that became ready last.
        unit: Option<String>,
        /// The latest cycle of each unit instead of the boot.
        #[arg(long)]
        current: bool,
        /// The chain as one JSON document (its links: unit, depth, phase,
        /// wait, cause, start_ms, end_ms, duration_ms, text).
        #[arg(long)]
        json: bool,
    },
    /// A self-contained SVG timeline on stdout (`supctl analyze plot >
    /// boot.svg`, open it in a browser): one row per unit, bars coloured by
    /// phase — waiting on a mount, a lock, a dependency, the start cap or
    /// backoff; starting; ready — with the cause as each bar's tooltip.
    Plot {
        /// The latest cycle of each unit instead of the boot.
        #[arg(long)]
        current: bool,
        /// The recorded timeline itself, as one JSON document.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Level {
    Critical,
    Normal,
    Optional,
}

fn socket_path(cli: &Cli) -> PathBuf {
    cli.socket
        .clone()
        .or_else(|| std::env::var_os("SUPD_SOCKET").map(PathBuf::from))
        .unwrap_or_else(control::default_socket_path)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Cmd::GenerateDocs { dir } = &cli.cmd {
        use clap::CommandFactory;
        return match supd::docs::generate(dir, Cli::command())
            .and_then(|_| supd::docs::generate(dir, supd::cli::Cli::command()))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("supctl: generating docs in {}: {e}", dir.display());
                ExitCode::from(1)
            }
        };
    }
    let socket = socket_path(&cli);
    let (req, json, long_wait) = match &cli.cmd {
        Cmd::Status { unit, json } => (Request::Status { unit: unit.clone() }, *json, false),
        Cmd::Start { unit } => (Request::Start { unit: unit.clone() }, false, false),
        Cmd::Stop { unit } => (Request::Stop { unit: unit.clone() }, false, true),
        Cmd::Restart { unit } => (Request::Restart { unit: unit.clone() }, false, true),
        Cmd::Reset { unit } => (Request::Reset { unit: unit.clone() }, false, false),
        Cmd::Why { unit } => (Request::Why { unit: unit.clone() }, false, false),
        Cmd::ReloadUnit { unit } => (Request::ReloadUnit { unit: unit.clone() }, false, false),
        Cmd::Reload => (Request::Reload, false, false),
        Cmd::Maintenance(Maint::On {
            unit,
            reason,
            holder,
        }) => (
            Request::MaintenanceOn {
                unit: unit.clone(),
                reason: reason.clone(),
                holder: holder.clone(),
            },
            false,
            true,
        ),
        Cmd::Maintenance(Maint::Off {
            unit,
            holder,
            force,
            dry_run,
        }) => (
            Request::MaintenanceOff {
                unit: unit.clone(),
                holder: holder.clone(),
                force: *force,
                dry_run: *dry_run,
            },
            false,
            false,
        ),
        Cmd::Maintenance(Maint::List { json }) => (Request::MaintenanceList, *json, false),
        Cmd::Maintenance(Maint::Log { limit, json }) => (
            Request::MaintenanceLog {
                limit: Some(*limit),
            },
            *json,
            false,
        ),
        Cmd::Maintenance(Maint::Recover { from, accept_empty }) => (
            Request::MaintenanceRecover {
                from: from.clone(),
                accept_empty: *accept_empty,
            },
            false,
            false,
        ),
        Cmd::Shed { level } => (
            Request::Shed {
                level: match level {
                    Level::Critical => Priority::Critical,
                    Level::Normal => Priority::Normal,
                    Level::Optional => Priority::Optional,
                },
            },
            false,
            false,
        ),
        Cmd::Unshed => (Request::Unshed, false, false),
        Cmd::Poweroff => (Request::Poweroff, false, true),
        Cmd::Reboot => (Request::Reboot, false, true),
        Cmd::Reexec => (Request::Reexec, false, false),
        Cmd::Analyze(Analyze::Plot { json, .. }) => (Request::Analyze, *json, false),
        Cmd::Analyze(_) => (Request::Analyze, false, false),
        Cmd::Graph { json, .. } => (Request::Graph, *json, false),
        Cmd::GenerateDocs { .. } => return ExitCode::from(2),
    };
    let timeout = cli.timeout.unwrap_or(if long_wait {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(10)
    });
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("supctl: {e}");
            return ExitCode::from(1);
        }
    };
    let resp = match rt.block_on(control::request(&socket, &req, timeout)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("supctl: {}", text(&e.to_string()));
            return ExitCode::from(1);
        }
    };
    if !resp.ok {
        eprintln!("supctl: {}", text(&resp.message));
        return ExitCode::from(1);
    }
    if json {
        return emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&resp.data).unwrap_or_default()
        ));
    }
    match &cli.cmd {
        Cmd::Status { unit, .. } => match serde_json::from_value::<StatusReport>(resp.data) {
            Ok(r) => print_status(&r, unit.is_some()),
            Err(e) => {
                eprintln!("supctl: unexpected status payload: {e}");
                return ExitCode::from(1);
            }
        },
        Cmd::Maintenance(Maint::List { .. }) => {
            let locks: Vec<LockInfo> = serde_json::from_value(resp.data).unwrap_or_default();
            if locks.is_empty() {
                println!("no maintenance locks");
            } else {
                println!(
                    "{:<20} {:<12} {:<22} {:>8}  REASON",
                    "UNIT", "HOLDER", "SINCE", "AGE"
                );
                for l in locks {
                    println!(
                        "{:<20} {:<12} {:<22} {:>8}  {}{}{}",
                        field(&l.unit),
                        field(&l.holder.holder),
                        l.holder.since,
                        age(l.holder.age_secs),
                        field(&l.holder.reason),
                        if l.defined {
                            ""
                        } else {
                            "  (no such unit defined)"
                        },
                        if !l.durable {
                            "  (not yet on disk)"
                        } else if l.release_pending {
                            "  (released; the release is not on disk yet)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        Cmd::Maintenance(Maint::Log { .. }) => {
            if let Some(recs) = resp.data.as_array() {
                for r in recs {
                    let t = r["time_unix_ms"].as_u64().unwrap_or(0);
                    println!(
                        "{} uid={} pid={} {} unit={} holder={} reason={} -> {}",
                        supd::engine::rfc3339(t),
                        r["peer_uid"],
                        r["peer_pid"],
                        field(r["action"].as_str().unwrap_or("")),
                        field(r["unit"].as_str().unwrap_or("-")),
                        field(r["holder"].as_str().unwrap_or("-")),
                        field(r["reason"].as_str().unwrap_or("-")),
                        field(r["outcome"].as_str().unwrap_or(""))
                    );
                }
            }
        }
        Cmd::Analyze(a) => return analyze(a, resp.data),
        Cmd::Graph { dot, .. } => {
            return match serde_json::from_value::<GraphReport>(resp.data) {
                Ok(g) if *dot => emit(&analysis::graph::graph_dot(&g)),
                Ok(g) => emit(&analysis::graph::graph_svg(&g)),
                Err(e) => {
                    eprintln!("supctl: unexpected graph payload: {e}");
                    ExitCode::from(1)
                }
            };
        }
        _ => println!("{}", text(&resp.message)),
    }
    ExitCode::SUCCESS
}

/// A value from supd (a holder, a reason, a service's status text) as one
/// printable line: control characters (terminal escapes, carriage returns,
/// newlines) and bidirectional overrides are shown escaped (`\u{1b}`), so
/// text any client or service supplied cannot drive the operator's
/// terminal or forge lines.
fn field(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s, false)
}

/// A whole message from supd: its own line breaks stay; every other
/// control character is escaped as in `field`.
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s, true)
}

fn escape(s: &str, keep_newlines: bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        (c.is_control() && !(keep_newlines && c == '\n'))
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `supctl analyze ...`: render the recorded timeline.
fn analyze(cmd: &Analyze, data: serde_json::Value) -> ExitCode {
    let report: TimelineReport = match serde_json::from_value(data) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("supctl: unexpected analyze payload: {e}");
            return ExitCode::from(1);
        }
    };
    let cycle = |current: bool| {
        if current {
            analysis::Cycle::Current
        } else {
            analysis::Cycle::Boot
        }
    };
    let json_out = |v: serde_json::Result<String>| match v {
        Ok(s) => emit(&format!("{s}\n")),
        Err(e) => {
            eprintln!("supctl: {e}");
            ExitCode::from(1)
        }
    };
    match cmd {
        Analyze::Blame { current, json } => {
            let rows = analysis::blame(&report, cycle(*current));
            if *json {
                return json_out(serde_json::to_string_pretty(&rows));
            }
            emit(&analysis::blame_text(&rows))
        }
        Analyze::CriticalChain {
            unit,
            current,
            json,
        } => match analysis::critical_chain(&report, unit.as_deref(), cycle(*current)) {
            Ok(c) if *json => json_out(serde_json::to_string_pretty(&c)),
            Ok(c) => emit(&analysis::chain_text(&c)),
            Err(e) => {
                eprintln!("supctl: {e}");
                ExitCode::from(1)
            }
        },
        Analyze::Plot { current, .. } => emit(&analysis::plot::plot_svg(&report, cycle(*current))),
    }
}

/// Write `text` to stdout. A reader that went away (`supctl graph | head`)
/// ends the output quietly, as ripgrep does, rather than with a panic.
fn emit(text: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("supctl: writing to stdout: {e}");
            ExitCode::from(1)
        }
    }
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn maint_text(u: &UnitStatus) -> String {
    match &u.maintenance {
        None => "-".to_string(),
        Some(hs) => hs
            .iter()
            .map(|h| {
                format!(
                    "locked by {} ({}): {}",
                    field(&h.holder),
                    age(h.age_secs),
                    field(&h.reason)
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    }
}

fn print_status(r: &StatusReport, detailed: bool) {
    if let Some(p) = &r.lock_state_problem {
        println!(
            "WARNING: lock state unreadable — only essential units start: {}",
            field(p)
        );
        println!("         see `supctl maintenance recover --help`");
    }
    if !r.unit_file_problems.is_empty() {
        println!(
            "WARNING: invalid unit files — supd started without these (fix them, then `supctl reload`):"
        );
        for p in &r.unit_file_problems {
            println!("         {p}");
        }
    }
    if let Some(p) = &r.lock_write_problem {
        println!("WARNING: {p}");
    }
    if let Some(p) = &r.mount_table_problem {
        println!(
            "WARNING: mount table unreadable — units needing a mount do not start (on_loss = \"stop\" ones stop): {p}"
        );
    }
    if let Some(level) = r.shed_level {
        println!("shedding: units at or below priority {level:?} are held down (`supctl unshed`)");
    }
    if r.shutting_down {
        println!("shutting down");
    }
    if detailed && let Some(c) = &r.containment {
        println!("containment: {c}");
    }
    if detailed {
        for u in &r.units {
            println!(
                "{}{}",
                u.name,
                u.description
                    .as_ref()
                    .map(|d| format!(" — {}", field(d)))
                    .unwrap_or_default()
            );
            println!(
                "  state:       {}{}",
                u.state,
                if u.ready { " (ready)" } else { "" }
            );
            println!(
                "  pid:         {}",
                u.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
            );
            println!("  want:        {}", u.want);
            println!("  maintenance: {}", maint_text(u));
            if let Some(d) = &u.detail {
                println!("  detail:      {}", field(d));
            }
            println!("  restarts:    {}", u.restarts);
            if let Some(ms) = u.next_restart_in_ms {
                println!("  next restart in {:.1}s", ms as f64 / 1000.0);
            }
            if let Some(e) = &u.last_exit {
                println!("  last exit:   {}", field(e));
            }
            if u.oom_kills > 0 {
                println!("  oom kills:   {}", u.oom_kills);
            }
            match (&u.containment, &u.cgroup) {
                (Some(_), Some(cg)) => println!("  cgroup:      {cg}"),
                (Some(c), None) => println!("  containment: {c}"),
                (None, _) => {}
            }
            if let Some(h) = &u.health {
                println!(
                    "  health:      {} ({} consecutive failures){}",
                    h.last,
                    h.consecutive_failures,
                    h.last_output
                        .as_ref()
                        .map(|o| format!(": {}", field(o)))
                        .unwrap_or_default()
                );
            }
            if let Some(s) = &u.status_text {
                println!("  status:      {}", field(s));
            }
            if u.essential {
                println!("  essential:   yes");
            }
        }
        return;
    }
    let w = r
        .units
        .iter()
        .map(|u| u.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<w$}  {:<9} {:>7} {:<5}  {:<30} DETAIL",
        "NAME", "STATE", "PID", "READY", "MAINTENANCE"
    );
    for u in &r.units {
        println!(
            "{:<w$}  {:<9} {:>7} {:<5}  {:<30} {}",
            u.name,
            u.state,
            u.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            if u.ready { "yes" } else { "no" },
            maint_text(u),
            field(u.detail.as_deref().unwrap_or_default())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(field("a\x1b[31mb\r\nc"), "a\\u{1b}[31mb\\u{d}\\u{a}c");
        assert_eq!(text("line1\nline2\x1b"), "line1\nline2\\u{1b}");
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("x\u{202e}y"), "x\\u{202e}y");
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
