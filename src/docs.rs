//! Man pages and shell completions, generated from the CLI definitions.
//!
//! Owns: writing `NAME.1` (clap_mangen) and bash/zsh/fish completions
//! (clap_complete) for one binary into a directory, and the file-format
//! pages `supd.unit(5)` and `supd.toml(5)` (roff through clap_mangen's
//! re-export; a test checks they name every key the parsers accept), for
//! packaging. Supctl's completions also complete unit names, asking the
//! running supd (`supctl complete-units`). Must never: run in the
//! supervisor's normal paths (only the hidden `generate-docs` subcommand
//! calls it).

use std::path::Path;

/// Write `<dir>/man/NAME.1` and `<dir>/completions/{NAME.bash,_NAME,NAME.fish}`.
pub fn generate(dir: &Path, mut cmd: clap::Command) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    let man = dir.join("man");
    let comp = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(man.join(format!("{name}.1")), page)?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, format!("{name}.bash")),
        (clap_complete::Shell::Zsh, format!("_{name}")),
        (clap_complete::Shell::Fish, format!("{name}.fish")),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let text = if name == "supctl" {
            with_unit_names(shell, text)
        } else {
            text
        };
        std::fs::write(comp.join(file), text)?;
    }
    Ok(())
}

/// Subcommands whose arguments are unit names.
const UNIT_COMMANDS: &str =
    "status start stop restart reset why reload-unit logs events is-active is-failed";

/// Complete unit names (asked from the running supd) where supctl takes
/// UNIT: clap's generated completions know only the argument's name.
fn with_unit_names(shell: clap_complete::Shell, text: String) -> String {
    match shell {
        clap_complete::Shell::Bash => format!(
            r#"{text}
# Unit names for UNIT arguments, from the running supd.
_supctl_units() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" i w sub="" sub2="" sock=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        case "$w" in
            --socket) sock=(--socket "${{COMP_WORDS[i+1]}}"); ((i++)); continue ;;
            --timeout|-n|--lines|--since) ((i++)); continue ;;
            -*) continue ;;
        esac
        if [[ -z "$sub" ]]; then sub="$w"; elif [[ -z "$sub2" ]]; then sub2="$w"; fi
    done
    local units=0
    case " {UNIT_COMMANDS} " in *" $sub "*) [[ -n "$sub" ]] && units=1 ;; esac
    if [[ "$sub" == maintenance && ( "$sub2" == on || "$sub2" == off ) ]]; then units=1; fi
    if [[ $units == 1 && "$cur" != -* ]]; then
        COMPREPLY=($(compgen -W "$(supctl "${{sock[@]}}" complete-units 2>/dev/null)" -- "$cur"))
        return 0
    fi
    _supctl "$@"
}}
complete -F _supctl_units -o bashdefault -o default supctl
"#
        ),
        clap_complete::Shell::Zsh => {
            let helper = concat!(
                "\n# Unit names for UNIT arguments, from the running supd.\n",
                "_supctl_unit_names() {\n",
                "    local -a names\n",
                "    names=(${(f)\"$(supctl complete-units 2>/dev/null)\"})\n",
                "    _describe -t units 'unit' names\n",
                "}\n",
            );
            let body = text
                .replace("':unit:_default'", "':unit:_supctl_unit_names'")
                .replace("'::unit:_default'", "'::unit:_supctl_unit_names'")
                .replace("'*::units:_default'", "'*::units:_supctl_unit_names'");
            match body.split_once('\n') {
                Some((first, rest)) => format!("{first}\n{helper}{rest}"),
                None => body,
            }
        }
        clap_complete::Shell::Fish => format!(
            "{text}\n# Unit names for UNIT arguments, from the running supd.\ncomplete -c supctl -n \"__fish_seen_subcommand_from {UNIT_COMMANDS} on off\" -f -a \"(supctl complete-units 2>/dev/null)\"\n"
        ),
        _ => text,
    }
}

/// One key of a file format: (key, meaning, default).
type Key = (&'static str, &'static str, &'static str);

/// Keys of a unit file (`supd.unit(5)`), grouped by table.
const UNIT_KEYS: &[(&str, &[Key])] = &[
    (
        "",
        &[
            ("description", "Free text.", "none"),
            (
                "type",
                "\"longrun\", \"oneshot\" (runs to completion and is ready when it exits 0) or \"forking\" (see pid_file).",
                "\"longrun\"",
            ),
            (
                "exec",
                "The program and its arguments (argv, no shell). exec[0] is absolute or found in the default PATH.",
                "required",
            ),
            (
                "env",
                "Table of environment variables; the environment is otherwise clean.",
                "{}",
            ),
            (
                "user, group",
                "Run as this user (with its supplementary groups) and group.",
                "supd's",
            ),
            ("working_directory", "Absolute path.", "/"),
            (
                "runtime_directory",
                "Names of directories created under /run before each start, owned by user.",
                "[]",
            ),
            (
                "umask",
                "Octal file-creation mask, e.g. \"0027\".",
                "supd's",
            ),
            (
                "limits",
                "{ nofile, nproc, core, memlock, cpu (seconds), fsize, data, stack, rss, as, locks, sigpending, msgqueue, nice (0 to 40), rtprio, rttime (microseconds) }: setrlimit before exec, soft = hard; a number or \"infinity\" (for nofile: the kernel's fs.nr_open).",
                "inherited",
            ),
            (
                "reload_signal",
                "What `supctl reload-unit` sends.",
                "SIGHUP",
            ),
            (
                "essential",
                "Starts even while the lock state is unreadable (a console, sshd).",
                "false",
            ),
            (
                "priority",
                "\"critical\", \"normal\" or \"optional\", for `supctl shed`; optional units do not count for /readyz.",
                "\"normal\"",
            ),
            (
                "sheddable",
                "A normal unit that pressure-aware shedding ([shed] in supd.toml) stops after the optional ones when pressure stays high, and starts again once it stays low.",
                "false",
            ),
            (
                "output",
                "Where stdout and stderr go: \"capture\" (one pipe; every line into the unit's log, see `supctl logs`, and echoed into supd's own log), \"inherit\" (supd's stdout/stderr; no unit log) or \"null\".",
                "\"capture\"",
            ),
            (
                "log_max_size",
                "The unit's log is kept in files of at most this size: bytes, or \"512K\", \"1MiB\" (16K to 1G).",
                "supd.toml's, else 1MiB",
            ),
            (
                "log_max_files",
                "...and at most this many files (1 to 1000); the oldest is deleted when a new one starts.",
                "supd.toml's, else 4",
            ),
            (
                "requires",
                "Units that must be ready first; if one stops, this unit is stopped first.",
                "[]",
            ),
            (
                "wants",
                "Ordering like after; their failure does not block.",
                "[]",
            ),
            ("after", "Ordering only.", "[]"),
            (
                "pid_file",
                "With type = \"forking\": the command daemonizes; once it exited 0 the main process is the pid in this file (a live child of supd). Without it (cgroup containment needed), the main process is the one process of the unit's cgroup whose parent is outside it; with several, none (stop signals the whole cgroup).",
                "none",
            ),
            (
                "exec_start_pre, exec_start_post, exec_stop_post",
                "Commands ([\"/bin/x\", \"a\"] or a list of them) run before the main process (a failure fails the start), after it started (a failure stops the unit) and after it exited. \"-/bin/x\": a failure is only logged; \"+/bin/x\": as root, outside [sandbox].",
                "[]",
            ),
            (
                "stdin",
                "\"null\", or \"socket\": fd 0 is the unit's one [[listen]] socket too (systemd's StandardInput=socket).",
                "\"null\"",
            ),
            (
                "reload_exec",
                "Commands `supctl reload-unit` runs (with $MAINPID) instead of sending reload_signal.",
                "[]",
            ),
            (
                "env_file",
                "Files in systemd's EnvironmentFile syntax, read at each start (\"-/path\": may be missing); they win over env. Commands get systemd's $VAR (split into words) and ${VAR} substitution; $$ is a $.",
                "[]",
            ),
            (
                "remain_after_exit",
                "A longrun whose process exits successfully stays up (done) for its dependents.",
                "false",
            ),
            (
                "success_exit_status, restart_prevent_exit_status",
                "Exit codes and signal names that count as success / after which [restart] never restarts.",
                "[]",
            ),
            (
                "state_directory, cache_directory, logs_directory, configuration_directory",
                "Like runtime_directory, under /var/lib, /var/cache, /var/log and /etc (not chowned).",
                "[]",
            ),
            (
                "runtime_directory_mode, state_directory_mode, cache_directory_mode, logs_directory_mode, configuration_directory_mode",
                "Octal modes of those directories.",
                "\"0755\"",
            ),
            ("nice", "Scheduling priority, -20 to 19.", "supd's"),
            ("oom_score_adjust", "-1000 to 1000.", "supd's"),
            ("supplementary_groups", "Groups added to the user's.", "[]"),
            (
                "part_of, reload_propagated_from",
                "Units this one is part of (stopped and held down while one is stopped by an operator, locked or removed; restarted with it) / whose reload-unit reloads this one too.",
                "[]",
            ),
            (
                "condition_path_exists, condition_path_exists_glob, condition_path_is_directory, condition_path_is_symbolic_link, condition_path_is_mount_point, condition_path_is_read_write, condition_directory_not_empty, condition_file_not_empty, condition_file_is_executable, condition_virtualization, condition_kernel_command_line, condition_capability, condition_ac_power, condition_environment, condition_cpus",
                "Checked right before each start (\"!x\" negates; \"|x\": one of these must hold). A failing condition leaves the unit skipped: not failed, its dependents start.",
                "none",
            ),
            (
                "assert_path_exists, assert_path_exists_glob, assert_path_is_directory, assert_path_is_symbolic_link, assert_path_is_mount_point, assert_path_is_read_write, assert_directory_not_empty, assert_file_not_empty, assert_file_is_executable, assert_virtualization, assert_kernel_command_line, assert_capability, assert_ac_power, assert_environment, assert_cpus",
                "The same checks; a failing assertion fails the start.",
                "none",
            ),
            (
                "on_failure",
                "Units started again when this unit enters failed (systemd's OnFailure=); a maintenance lock or an operator's stop still holds them down.",
                "[]",
            ),
            (
                "exec_condition",
                "Commands run before exec_start_pre (systemd's ExecCondition=): exit 1 to 254 leaves the unit skipped, as a failing condition; 255 or a signal fails the start.",
                "[]",
            ),
            (
                "exec_ignore_failure",
                "However the main process ends, it counts as success (systemd's ExecStart=-): never failed, never restarted by on-failure.",
                "false",
            ),
            (
                "cpu_scheduling_policy, cpu_scheduling_priority, cpu_scheduling_reset_on_fork",
                "sched_setscheduler in the child before exec: \"other\", \"batch\", \"idle\", \"fifo\" or \"rr\"; priority 1 to 99 for fifo/rr; SCHED_RESET_ON_FORK.",
                "supd's",
            ),
            (
                "stdout_file, stderr_file",
                "Send stdout / stderr to a file instead of output: \"append:/path\", \"truncate:/path\" (emptied at each start) or \"file:/path\"; opened by supd, created 0644; the same path for both shares one descriptor.",
                "none",
            ),
        ],
    ),
    (
        "[sandbox]",
        &[
            (
                "no_new_privileges, capability_bounding_set, ambient_capabilities",
                "PR_SET_NO_NEW_PRIVS; capabilities kept ([] drops all; [\"~CAP_X\"] drops the listed ones); capabilities raised for a non-root user.",
                "none",
            ),
            (
                "private_tmp, private_devices, private_network, private_ipc, protect_hostname",
                "A fresh /tmp and /var/tmp; a /dev with only null, zero, full, random, urandom, tty, shm; namespaces of its own (loopback only; IPC; hostname).",
                "false",
            ),
            (
                "protect_system, protect_home",
                "true (/usr, /boot read-only), \"full\" (and /etc), \"strict\" (all but /dev, /proc, /sys and the unit's paths); true (/home, /root, /run/user inaccessible), \"read-only\", \"tmpfs\".",
                "false",
            ),
            (
                "read_write_paths, read_only_paths, inaccessible_paths, no_exec_paths, exec_paths",
                "Paths (\"-/p\": may be missing).",
                "[]",
            ),
            (
                "protect_kernel_tunables, protect_kernel_modules, protect_kernel_logs, protect_control_groups, protect_clock, protect_proc, proc_subset",
                "/proc/sys and /sys read-only; module directories hidden; kernel log hidden; /sys/fs/cgroup read-only; clock capabilities dropped; a /proc of its own with hidepid= and subset=pid.",
                "false",
            ),
        ],
    ),
    (
        "[[listen]]",
        &[
            (
                "stream, datagram, seqpacket, fifo",
                "One per table: a socket or FIFO supd creates and binds at boot (before anything starts), keeps bound across the unit's restarts (a client connecting meanwhile is queued, not refused) and passes as fd 3, 4, ... with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES (sd_listen_fds(3)). Addresses: \"/run/x.sock\" (unix), \"@name\" (abstract), \"80\" ([::] and IPv4), \"0.0.0.0:80\", \"[::1]:80\"; fifo takes a path.",
                "required",
            ),
            (
                "name",
                "The descriptor's entry in LISTEN_FDNAMES.",
                "the unit's name",
            ),
            (
                "mode, user, group",
                "Permissions and owner of a unix socket's or FIFO's file (parent directories are created 0755).",
                "\"0666\", root",
            ),
            (
                "ipv6_only, backlog, pass_credentials",
                "IPV6_V6ONLY for IPv6 addresses; listen(2) backlog; SO_PASSCRED on unix sockets.",
                "kernel default, SOMAXCONN, false",
            ),
        ],
    ),
    (
        "[[mount]]",
        &[
            (
                "path",
                "Must be a real mount point (not a plain directory) before the unit starts.",
                "required",
            ),
            (
                "fstype, source, options",
                "Optional checks; \"rw\" also means not read-only.",
                "none",
            ),
            (
                "on_loss",
                "\"stop\" or \"ignore\" when it vanishes or goes read-only while the unit runs.",
                "\"stop\"",
            ),
            (
                "timeout",
                "Give up waiting: the unit becomes failed.",
                "wait forever",
            ),
        ],
    ),
    (
        "[ready]",
        &[
            (
                "kind",
                "When dependents may start: \"started\", \"notify\" (sd_notify READY=1), \"probe\" (the first passing [readiness], else [health], probe) or \"fd\" (a line written to descriptor fd).",
                "\"started\"",
            ),
            ("fd", "The descriptor for kind = \"fd\".", "3"),
            (
                "notify_reload",
                "With kind = \"notify\" (systemd's Type=notify-reload): supctl reload-unit answers once the service sent RELOADING=1 (MONOTONIC_USEC not older than the request) and then READY=1, or fails after timeout (90s without one).",
                "false",
            ),
            (
                "watchdog",
                "sd_notify WATCHDOG=1 must come this often once ready, else the unit is unhealthy.",
                "none",
            ),
            (
                "timeout",
                "Not ready by then: stopped and handled per [restart] (\"ready timeout\").",
                "none",
            ),
        ],
    ),
    (
        "[health] and [readiness]",
        &[
            (
                "exec, tcp, http, unix",
                "The probe: a command, \"host:port\", \"http://host:port/path\" (or http+unix:///sock:/path), or a socket path.",
                "required",
            ),
            (
                "interval, timeout, start_period",
                "Probe schedule (before readiness, at least every second).",
                "5s, 2s, 0s",
            ),
            (
                "failure_threshold, success_threshold",
                "Consecutive results that count.",
                "3, 1",
            ),
            (
                "on_unhealthy",
                "[health] only: \"restart\", \"stop\" (then failed) or \"report\". A failing [readiness] probe only marks the unit not ready.",
                "\"restart\"",
            ),
        ],
    ),
    (
        "[restart]",
        &[
            (
                "policy",
                "\"always\", \"on-failure\", \"on-abnormal\", \"on-abort\", \"on-watchdog\" or \"never\".",
                "\"on-failure\" (longrun), \"never\" (oneshot)",
            ),
            (
                "delay, max_delay",
                "Exponential backoff with jitter between these.",
                "1s, 1m",
            ),
            (
                "burst, interval",
                "More than burst automatic restarts within interval: failed until an operator acts.",
                "5, 5m",
            ),
            (
                "reset_after",
                "The backoff resets after the unit stayed up this long.",
                "1m",
            ),
        ],
    ),
    (
        "[stop]",
        &[
            (
                "signal, timeout",
                "Stop signal to the unit's processes (per kill_mode), then SIGKILL to every one left after timeout.",
                "SIGTERM, 10s",
            ),
            (
                "exec",
                "A command run instead of the signal, inside the unit's cgroup (SIGKILL still follows the timeout).",
                "none",
            ),
            (
                "kill_mode",
                "Who gets the stop signal: group (every process of the unit), main (only the main process), mixed (the main process; once it exited, SIGKILL to the rest). The unit is stopped only when all its processes are gone.",
                "group",
            ),
        ],
    ),
    (
        "[resources]",
        &[
            (
                "memory_max, memory_high",
                "cgroup memory limit (OOM kill above it, reported as killed: out of memory) / throttling threshold: \"256M\", \"1G\", bytes, or \"max\".",
                "none",
            ),
            ("cpu_weight, io_weight", "Relative share, 1..=10000.", "100"),
            (
                "cpu_max",
                "CPU cap: \"50%\" of one CPU, \"200%\", \"QUOTA PERIOD\" in microseconds, or \"max\".",
                "none",
            ),
            (
                "pids_max",
                "Most processes (and threads) the unit may have; \"99%\" is a share of the host's limit (memory_max/memory_high take a share of its memory likewise).",
                "none",
            ),
            (
                "oom_policy",
                "After an OOM kill in the group: \"continue\", \"stop\" (the unit fails; [restart] decides) or \"kill\" (memory.oom.group: the kernel kills the whole group).",
                "\"continue\"",
            ),
            (
                "delegate",
                "The unit's cgroup is chowned to its user, who may make sub-groups in it (systemd's Delegate=yes).",
                "false",
            ),
            (
                "device_policy",
                "\"auto\" (all devices unless device_allow is given), \"closed\" (device_allow plus /dev/null, zero, full, random, urandom, tty, ptmx, pts) or \"strict\" (only device_allow). Enforced by a cgroup device program; the start is refused where it cannot be attached.",
                "\"auto\"",
            ),
            (
                "device_allow",
                "Devices the unit may open: [\"/dev/net/tun rw\", \"char-rtc r\", \"block-loop rwm\"].",
                "[]",
            ),
        ],
    ),
];

/// Keys of supd.toml (`supd.toml(5)`).
const CONFIG_KEYS: &[(&str, &[Key])] = &[
    (
        "",
        &[
            (
                "units_dir",
                "Directory of unit files.",
                "/etc/supd/units (root), ~/.config/supd/units",
            ),
            (
                "state_dir",
                "Maintenance locks, the audit log and unit logs (logs/UNIT/).",
                "/var/lib/supd (root), ~/.local/state/supd",
            ),
            (
                "socket",
                "Control socket.",
                "/run/supd/control.sock (root), $XDG_RUNTIME_DIR/supd/control.sock",
            ),
            (
                "log_level",
                "supd's own log: \"error\", \"warn\", \"info\", \"debug\" or \"trace\". Unit logs do not depend on it.",
                "\"info\"",
            ),
            (
                "log_format",
                "supd's own log: \"text\", or \"json\" (one object per line: time, level, target, unit, message, fields).",
                "\"text\"",
            ),
            (
                "max_parallel_starts",
                "Units starting (not yet ready) at once.",
                "16",
            ),
            ("hostname", "Set by supd as a VM's PID 1.", "none"),
            (
                "log_max_size, log_max_files",
                "Defaults for every unit's log_max_size and log_max_files.",
                "1MiB, 4",
            ),
            (
                "metrics",
                "Serve /metrics, /healthz and /readyz on this address, e.g. \"127.0.0.1:9611\".",
                "off",
            ),
        ],
    ),
    (
        "[state_mount]",
        &[(
            "path, fstype, source, options",
            "The state directory's filesystem, when it is mounted during boot: until it is there the lock state is unknown (only essential units start) and unit logs are kept in memory.",
            "none",
        )],
    ),
    (
        "[shed]",
        &[
            (
                "source",
                "Pressure-aware shedding (off without this section) watches PSI through kernel triggers: \"subtree\" (supd's cgroup subtree's cpu/memory/io.pressure: its own services' stalls), \"system\" (/proc/pressure) or \"auto\" (the subtree when supd has one).",
                "\"auto\"",
            ),
            (
                "resources",
                "Which of \"cpu\", \"memory\", \"io\" to watch.",
                "all three",
            ),
            (
                "above, below",
                "Stall shares of the window (\"some\" line): pressure above `above` sheds, only pressure under `below` restores.",
                "\"20%\", \"5%\"",
            ),
            (
                "window",
                "The PSI window, 500ms to 10s (without CAP_SYS_RESOURCE a multiple of 2s).",
                "\"2s\"",
            ),
            (
                "shed_after",
                "Above for this long stops the optional units; as long again, the normal units with sheddable = true. Critical units are never shed; `supctl shed` wins while set.",
                "\"4s\"",
            ),
            (
                "restore_after",
                "No pressure above `below` for this long brings one step back.",
                "\"30s\"",
            ),
            (
                "jitter",
                "Units that come back start at random moments within this.",
                "\"10s\"",
            ),
        ],
    ),
];

fn format_page(
    name: &str,
    title: &str,
    synopsis: &str,
    description: &[&str],
    keys: &[(&str, &[Key])],
    example: &str,
    see_also: &str,
) -> String {
    use clap_mangen::roff::{Roff, bold, italic, roman};
    let mut r = Roff::new();
    r.control("TH", [name.to_uppercase().as_str(), "5"]);
    r.control("SH", ["NAME"]);
    r.text([roman(format!("{name} - {title}"))]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([roman(synopsis)]);
    r.control("SH", ["DESCRIPTION"]);
    for p in description {
        r.text([roman(*p)]);
        r.control("PP", []);
    }
    for (table, list) in keys {
        r.control(
            "SH",
            [if table.is_empty() {
                "KEYS".to_string()
            } else {
                table.to_string()
            }
            .as_str()],
        );
        for (key, meaning, default) in list.iter() {
            r.control("TP", []);
            r.text([bold(*key)]);
            r.text([
                roman(format!("{meaning} Default: ")),
                italic(*default),
                roman("."),
            ]);
        }
    }
    r.control("SH", ["EXAMPLE"]);
    r.control("nf", []);
    r.text([roman(example)]);
    r.control("fi", []);
    r.control("SH", ["SEE ALSO"]);
    r.text([roman(see_also)]);
    r.render()
}

/// `supd.unit(5)`: the unit-file format.
pub fn unit_page() -> String {
    format_page(
        "supd.unit",
        "supd unit files",
        "/etc/supd/units/NAME.toml",
        &[
            "One unit per file, in TOML; the unit's name is the file's stem (letters, digits, _ . @ - only, at most 64 characters). `supd check` validates every file and reports every error with its file and line; an invalid set changes nothing on `supctl reload`.",
            "A unit starts only when its [[mount]] paths are real mount points matching their checks, everything it requires is ready, and no maintenance lock holds it down. Durations are written like 500ms, 5s, 1m30s.",
        ],
        UNIT_KEYS,
        "description = \"PostgreSQL\"\nexec = [\"/usr/lib/postgresql/15/bin/postgres\", \"-D\", \"/srv/pg/data\"]\nuser = \"postgres\"\nrequires = [\"network\"]\nlog_max_size = \"4MiB\"\n\n[[mount]]\npath = \"/srv/pg\"\nfstype = \"ext4\"\noptions = [\"rw\"]\n\n[ready]\nkind = \"notify\"\ntimeout = \"2m\"\n\n[health]\nexec = [\"pg_isready\", \"-h\", \"/run/postgresql\"]\ninterval = \"5s\"\n\n[restart]\npolicy = \"on-failure\"\ndelay = \"1s\"\nmax_delay = \"1m\"\n\n[stop]\nsignal = \"SIGINT\"\ntimeout = \"30s\"",
        "supd(1), supctl(1), supd.toml(5)",
    )
}

/// `supd.toml(5)`: supd's own settings.
pub fn config_page() -> String {
    format_page(
        "supd.toml",
        "supd settings",
        "/etc/supd/supd.toml (another file with supd --config FILE)",
        &[
            "supd-wide settings, in TOML. Command-line flags override them; they override the built-in defaults. An unknown key or a bad value is an error with its line (as PID 1, supd then starts with the defaults).",
        ],
        CONFIG_KEYS,
        "state_dir = \"/var/lib/supd\"\nmax_parallel_starts = 8\nlog_format = \"json\"\nlog_max_size = \"512K\"\nmetrics = \"127.0.0.1:9611\"\n\n[state_mount]\npath = \"/var\"\nfstype = \"ext4\"",
        "supd(1), supctl(1), supd.unit(5)",
    )
}

/// Write `<dir>/man/supd.unit.5` and `<dir>/man/supd.toml.5`.
pub fn generate_formats(dir: &Path) -> std::io::Result<()> {
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    std::fs::write(man.join("supd.unit.5"), unit_page())?;
    std::fs::write(man.join("supd.toml.5"), config_page())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys a parser names when it meets an unknown one in `text`.
    fn valid_keys(hint: &str) -> Vec<String> {
        hint.split("valid keys")
            .nth(1)
            .unwrap_or("")
            .trim_start_matches(" here")
            .trim_start_matches(':')
            .split(',')
            .map(|k| k.trim().trim_matches(|c| c == '[' || c == ']').to_string())
            .filter(|k| !k.is_empty())
            .collect()
    }

    #[test]
    fn the_format_pages_name_every_key_the_parsers_accept() {
        let page = unit_page();
        let probes = [
            "bogus_key = 1\n",
            "exec = [\"x\"]\n[[mount]]\npath = \"/x\"\nbogus_key = 1\n",
            "exec = [\"x\"]\n[[listen]]\nstream = \"/x\"\nbogus_key = 1\n",
            "exec = [\"x\"]\n[ready]\nbogus_key = 1\n",
            "exec = [\"x\"]\n[health]\nbogus_key = 1\n",
            "exec = [\"x\"]\n[restart]\nbogus_key = 1\n",
            "exec = [\"x\"]\n[stop]\nbogus_key = 1\n",
        ];
        for text in probes {
            let errs = crate::unit::toml::parse_unit("u", Path::new("u.toml"), text)
                .expect_err("unknown key");
            let msg = errs[0].to_string();
            let keys = valid_keys(&msg);
            assert!(!keys.is_empty(), "no key list in {msg}");
            for k in keys {
                assert!(page.contains(&k), "supd.unit(5) does not mention `{k}`");
            }
        }
        let page = config_page();
        let errs = crate::config::Config::parse(Path::new("supd.toml"), "bogus_key = 1\n")
            .expect_err("unknown key");
        let keys = valid_keys(&errs[0].to_string());
        assert!(keys.len() > 5, "{keys:?}");
        for k in keys {
            assert!(page.contains(&k), "supd.toml(5) does not mention `{k}`");
        }
        assert!(page.starts_with(".TH") || page.contains(".TH"));
    }
}
