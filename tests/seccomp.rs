//! `[sandbox]` seccomp settings, each proved from inside a real service
//! under a real supd: tests/fixtures/syscall_probe.c (compiled once per
//! run) tries what a setting forbids, each attempt in a forked child, and
//! prints `RESULT <attempt> ok | errno=<NAME> | killed=<signal>`. Every
//! test runs the same attempts in a control unit without the setting, so
//! a denial is the setting's doing and not the host's.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

fn probe() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| c_fixture("syscall_probe")).as_deref()
}

/// Run the probe with `attempts` as oneshot units: `t` with `sandbox`
/// (and `top`-level keys), `ctl` without the sandbox. Returns (t's
/// results, ctl's results), each `name -> outcome`.
fn run(tag: &str, top: &str, sandbox: &str, attempts: &[&str]) -> Option<(Results, Results)> {
    if !can_run(tag) {
        return None;
    }
    let bin = probe()?;
    let dir = TempDir::new(tag);
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut argv = vec![toml_str(&bin.display().to_string())];
    argv.extend(attempts.iter().map(|a| toml_str(a)));
    let exec = format!("exec = [{}]", argv.join(", "));
    let env = format!(
        "env = {{ PROBE_DIR = {} }}",
        toml_str(&dir.path().display().to_string())
    );
    let t = format!("type = \"oneshot\"\n{exec}\n{env}\n{top}\n[sandbox]\n{sandbox}\n");
    let ctl = format!("type = \"oneshot\"\n{exec}\n{env}\n{top}\n");
    let supd = Supd::start(tag, &[("t", &t), ("ctl", &ctl)]);
    for u in ["t", "ctl"] {
        wait_for("the probe to finish", Duration::from_secs(20), || {
            let s = supd.state_of(u);
            (s == "done" || s == "failed").then_some(())
        });
    }
    let log = supd.log_text();
    assert_eq!(supd.state_of("t"), "done", "{log}");
    assert_eq!(supd.state_of("ctl"), "done", "{log}");
    let of = |unit: &str| -> Results {
        let tag = format!("unit={unit}");
        Results(
            log.lines()
                .filter(|l| l.contains(&tag) && l.contains("RESULT "))
                .filter_map(|l| {
                    let r = l
                        .split("RESULT ")
                        .nth(1)?
                        .trim_end_matches(tag.as_str())
                        .trim();
                    let (k, v) = r.split_once(' ')?;
                    Some((k.to_string(), v.trim().to_string()))
                })
                .collect(),
            log.clone(),
        )
    };
    Some((of("t"), of("ctl")))
}

struct Results(Vec<(String, String)>, String);

impl Results {
    fn get(&self, k: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no RESULT {k} in {:#?}\n{}", self.0, self.1))
    }
    fn is(&self, k: &str, want: &str) {
        assert_eq!(self.get(k), want, "{k}: {:#?}", self.0);
    }
}

const SIGSYS: &str = "killed=31";

#[test]
fn allow_list_kills_what_it_does_not_name() {
    let Some((t, ctl)) = run(
        "scallow",
        "",
        "system_call_filter = [\"@system-service\"]\nlock_personality = true",
        &["getpid", "af_inet", "mount", "reboot", "swapon"],
    ) else {
        return;
    };
    // The filters are really installed, on the service itself: the
    // argument checks, then the call list (which does not admit
    // seccomp(2), so it must come last).
    t.is("seccomp", "2");
    t.is("filters", "2");
    ctl.is("seccomp", "0");
    t.is("getpid", "ok");
    t.is("af_inet", "ok");
    t.is("mount", SIGSYS);
    t.is("reboot", SIGSYS);
    t.is("swapon", SIGSYS);
    ctl.is("mount", "ok");
    ctl.is("reboot", "errno=EINVAL");
    ctl.is("swapon", "errno=ENOENT");
}

#[test]
fn deny_list_with_error_numbers() {
    let Some((t, ctl)) = run(
        "scdeny",
        "",
        "system_call_filter = [\"~@mount:EACCES @reboot\", \"~@swap\"]\nsystem_call_error_number = \"EPERM\"",
        &["getpid", "mount", "reboot", "swapon", "af_packet"],
    ) else {
        return;
    };
    t.is("seccomp", "2");
    t.is("getpid", "ok");
    t.is("mount", "errno=EACCES");
    t.is("reboot", "errno=EPERM");
    t.is("swapon", "errno=EPERM");
    t.is("af_packet", ctl.get("af_packet"));
    ctl.is("mount", "ok");
}

#[test]
fn native_architecture_only() {
    let Some((t, _ctl)) = run(
        "scarch",
        "",
        "system_call_architectures = [\"native\"]",
        &["getpid", "i386"],
    ) else {
        return;
    };
    t.is("seccomp", "2");
    t.is("getpid", "ok");
    // The 32-bit entry (int 0x80) is another architecture: killed, whether
    // or not this kernel has the i386 emulation (without it the control
    // gets SIGSEGV instead).
    t.is("i386", SIGSYS);
}

#[test]
fn memory_personality_realtime_namespaces_families_suid() {
    let Some((t, ctl)) = run(
        "scargs",
        "",
        "lock_personality = true\nmemory_deny_write_execute = true\nrestrict_realtime = true\n\
         restrict_namespaces = [\"uts\"]\nrestrict_address_families = [\"AF_UNIX\", \"AF_INET\"]\n\
         restrict_suid_sgid = true",
        &[
            "getpid",
            "personality",
            "wx_mmap",
            "mprotect_x",
            "realtime",
            "unshare_user",
            "unshare_uts",
            "af_inet",
            "af_netlink",
            "suid",
        ],
    ) else {
        return;
    };
    t.is("seccomp", "2");
    for a in [
        "personality",
        "wx_mmap",
        "mprotect_x",
        "realtime",
        "unshare_user",
        "suid",
    ] {
        ctl.is(a, "ok");
        t.is(a, "errno=EPERM");
    }
    ctl.is("af_netlink", "ok");
    t.is("af_netlink", "errno=EAFNOSUPPORT");
    t.is("af_inet", "ok");
    t.is("unshare_uts", "ok");
    t.is("getpid", "ok");
}

#[test]
fn non_root_service_gets_the_filter_through_no_new_privs() {
    // Without CAP_SYS_ADMIN the kernel takes a filter only with
    // no_new_privs: supd sets it, as systemd implies NoNewPrivileges=.
    let Some((t, ctl)) = run(
        "scnobody",
        "user = \"nobody\"",
        "system_call_filter = [\"~@mount\"]\nsystem_call_error_number = \"EPERM\"\nsecure_bits = [\"noroot\", \"noroot-locked\"]",
        &["getpid", "mount"],
    ) else {
        return;
    };
    t.is("seccomp", "2");
    t.is("nnp", "1");
    ctl.is("nnp", "0");
    t.is("mount", "errno=EPERM");
    // SECBIT_NOROOT | SECBIT_NOROOT_LOCKED.
    t.is("securebits", "3");
    ctl.is("securebits", "0");
}

/// Run `script` under /bin/sh as oneshots `t` (with `sandbox`) and `ctl`
/// (without); RESULT lines as for the probe.
fn run_sh(tag: &str, top: &str, sandbox: &str, script: &str) -> Option<(Results, Results)> {
    if !can_run(tag) {
        return None;
    }
    let exec = format!("exec = [\"/bin/sh\", \"-c\", {}]", toml_str(script));
    let t = format!("type = \"oneshot\"\n{exec}\n{top}\n[sandbox]\n{sandbox}\n");
    let ctl = format!("type = \"oneshot\"\n{exec}\n{top}\n");
    let supd = Supd::start(tag, &[("t", &t), ("ctl", &ctl)]);
    for u in ["t", "ctl"] {
        wait_for("the script to finish", Duration::from_secs(20), || {
            let s = supd.state_of(u);
            (s == "done" || s == "failed").then_some(())
        });
    }
    let log = supd.log_text();
    assert_eq!(supd.state_of("t"), "done", "{log}");
    assert_eq!(supd.state_of("ctl"), "done", "{log}");
    let of = |unit: &str| -> Results {
        let tag = format!("unit={unit}");
        Results(
            log.lines()
                .filter(|l| l.contains(&tag) && l.contains("RESULT "))
                .filter_map(|l| {
                    let r = l
                        .split("RESULT ")
                        .nth(1)?
                        .trim_end_matches(tag.as_str())
                        .trim();
                    let (k, v) = r.split_once(' ')?;
                    Some((k.to_string(), v.trim().to_string()))
                })
                .collect(),
            log.clone(),
        )
    };
    Some((of("t"), of("ctl")))
}

#[test]
fn private_users_maps_only_root_and_the_unit_user() {
    let dir = TempDir::new("sc-userns");
    let foreign = dir.path().join("foreign");
    std::fs::write(&foreign, "x").unwrap();
    std::os::unix::fs::chown(&foreign, Some(4242), Some(4242)).unwrap();
    let script = format!(
        "echo RESULT maps $(wc -l < /proc/self/uid_map); echo RESULT gmaps $(wc -l < /proc/self/gid_map); \
         echo RESULT owner $(stat -c %u {f}); echo RESULT me $(id -u)",
        f = foreign.display()
    );
    let Some((t, ctl)) = run_sh(
        "scuserns",
        "user = \"nobody\"",
        "private_users = true",
        &script,
    ) else {
        return;
    };
    // Root and nobody: two lines; the host's namespace has the one
    // identity line for everything.
    t.is("maps", "2");
    t.is("gmaps", "2");
    ctl.is("maps", "1");
    t.is("me", "65534");
    // A user the namespace does not map is the overflow id.
    t.is("owner", "65534");
    ctl.is("owner", "4242");
}

#[test]
fn private_users_root_cannot_use_the_hosts_privileges() {
    let dir = TempDir::new("sc-userns-root");
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    let script = format!(
        "if mount -t tmpfs none {m} 2>/dev/null; then umount {m}; echo RESULT mount ok; else echo RESULT mount denied; fi; \
         echo RESULT maps $(wc -l < /proc/self/uid_map); echo RESULT me $(id -u)",
        m = m.display()
    );
    let Some((t, ctl)) = run_sh(
        "scuserns0",
        "",
        "private_users = true\nprivate_tmp = true",
        &script,
    ) else {
        return;
    };
    t.is("me", "0");
    t.is("maps", "1");
    // Root inside, but its mount namespace belongs to the host's user
    // namespace: no mount.
    t.is("mount", "denied");
    ctl.is("mount", "ok");
}

/// Is System V shared memory segment `id` still there?
fn shm_exists(id: &str) -> bool {
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(id))
}

#[test]
fn remove_ipc_removes_the_users_objects_when_its_run_ends() {
    if !can_run("remove_ipc") || !have("remove_ipc", &["/usr/bin/ipcmk"]) {
        return;
    }
    // Debian's `daemon` and `bin` users own no IPC objects on a test host.
    // `t` (daemon) has remove_ipc; `ctl` (bin) does not.
    let script = "id=$(ipcmk -M 4096 | tr -cd 0-9); echo RESULT shm $id; \
                  f=/dev/shm/supd-remove-ipc-$(id -u); touch $f; echo RESULT file $f";
    let exec = format!("exec = [\"/bin/sh\", \"-c\", {}]", toml_str(script));
    let t =
        format!("type = \"oneshot\"\nuser = \"daemon\"\n{exec}\n[sandbox]\nremove_ipc = true\n");
    let ctl = format!("type = \"oneshot\"\nuser = \"bin\"\n{exec}\n");
    let supd = Supd::start("scipc", &[("t", &t), ("ctl", &ctl)]);
    let result = |unit: &str, key: &str| -> String {
        let tag = format!("unit={unit}");
        let want = format!("RESULT {key} ");
        wait_for("the script's RESULT line", Duration::from_secs(20), || {
            supd.log_text()
                .lines()
                .find(|l| l.contains(&tag) && l.contains(&want))
                .and_then(|l| l.split(&want).nth(1))
                .map(|v| v.trim_end_matches(tag.as_str()).trim().to_string())
        })
    };
    let (t_shm, t_file) = (result("t", "shm"), result("t", "file"));
    let (c_shm, c_file) = (result("ctl", "shm"), result("ctl", "file"));
    for u in ["t", "ctl"] {
        supd.wait_state(u, "done", Duration::from_secs(20));
    }
    assert!(
        !t_shm.is_empty() && !c_shm.is_empty(),
        "{}",
        supd.log_text()
    );
    wait_for(
        "daemon's IPC objects to go",
        Duration::from_secs(10),
        || (!shm_exists(&t_shm) && !Path::new(&t_file).exists()).then_some(()),
    );
    // Another user's, without remove_ipc, stay.
    assert!(shm_exists(&c_shm), "bin's segment {c_shm} was removed");
    assert!(Path::new(&c_file).exists());
    let _ = Command::new("ipcrm").args(["-m", &c_shm]).status();
    let _ = std::fs::remove_file(&c_file);
}

#[test]
fn protect_clock_denies_the_clock_calls() {
    // Reading the clock's state needs no capability: only the @clock
    // filter refuses it.
    let Some((t, ctl)) = run(
        "scclock",
        "",
        "protect_clock = true",
        &["adjtimex_read", "getpid"],
    ) else {
        return;
    };
    t.is("seccomp", "2");
    ctl.is("adjtimex_read", "ok");
    t.is("adjtimex_read", "errno=EPERM");
    t.is("getpid", "ok");
}
