//! `[sandbox]`: each restriction proved from inside a real service under
//! a real supd. The service is a oneshot shell script that tries what the
//! setting forbids and prints `RESULT <what> <outcome>` lines, which supd
//! logs with the unit's name.

mod common;

use std::time::Duration;

use common::*;

/// Run `script` as a oneshot with `sandbox` (the TOML of the [sandbox]
/// table, plus any top-level keys in `top`); return its RESULT lines.
fn run(tag: &str, top: &str, sandbox: &str, script: &str) -> Vec<String> {
    let unit = format!(
        "type = \"oneshot\"\nexec = [\"/bin/sh\", \"-c\", {}]\n{top}\n[sandbox]\n{sandbox}\n",
        toml_str(script)
    );
    let supd = Supd::start(tag, &[("t", &unit)]);
    wait_for("the oneshot to finish", Duration::from_secs(20), || {
        let s = supd.state_of("t");
        (s == "done" || s == "failed").then_some(())
    });
    let log = supd.log_text();
    assert_eq!(supd.state_of("t"), "done", "{log}");
    log.lines()
        .filter(|l| l.contains("unit=t") && l.contains("RESULT "))
        .map(|l| {
            l.split("RESULT ")
                .nth(1)
                .unwrap_or("")
                .trim_end_matches("unit=t")
                .trim()
                .to_string()
        })
        .collect()
}

fn has(results: &[String], want: &str) {
    assert!(
        results.iter().any(|r| r == want),
        "expected `{want}` in {results:#?}"
    );
}

/// `try NAME CMD...`: RESULT NAME ok|denied.
const TRY: &str = "try() { n=$1; shift; if \"$@\" 2>/dev/null; then echo RESULT $n ok; else echo RESULT $n denied; fi; }; ";

#[test]
fn protect_system_strict_leaves_only_the_units_paths_writable() {
    if !can_run("protect_system_strict") {
        return;
    }
    let dir = TempDir::new("sb-strict");
    let rw = dir.path().join("rw");
    std::fs::create_dir_all(&rw).unwrap();
    let r = run(
        "sbstrict",
        "runtime_directory = [\"supd-sb-test\"]",
        &format!(
            "protect_system = \"strict\"\nread_write_paths = [\"{}\", \"-/nonexistent/optional\"]",
            rw.display()
        ),
        &format!(
            "{TRY} try usr touch /usr/supd-sb; try etc touch /etc/supd-sb; try var touch /var/supd-sb; \
             try rw touch {rw}/f; try run touch /run/supd-sb-test/f; try devnull sh -c 'echo x > /dev/null'",
            rw = rw.display()
        ),
    );
    has(&r, "usr denied");
    has(&r, "etc denied");
    has(&r, "var denied");
    has(&r, "rw ok");
    has(&r, "run ok");
    has(&r, "devnull ok");
    assert!(
        rw.join("f").exists(),
        "the write reached the real directory"
    );
    assert!(!std::path::Path::new("/usr/supd-sb").exists());
    let _ = std::fs::remove_dir_all("/run/supd-sb-test");
}

#[test]
fn protect_system_full_and_read_only_paths() {
    if !can_run("protect_system_full") {
        return;
    }
    let dir = TempDir::new("sb-full");
    let ro = dir.path().join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let r = run(
        "sbfull",
        "",
        &format!(
            "protect_system = \"full\"\nread_only_paths = [\"{}\"]",
            ro.display()
        ),
        &format!(
            "{TRY} try usr touch /usr/supd-sb; try etc touch /etc/supd-sb; try tmp touch {d}/w; try ro touch {ro}/f",
            d = dir.path().display(),
            ro = ro.display()
        ),
    );
    has(&r, "usr denied");
    has(&r, "etc denied");
    has(&r, "tmp ok");
    has(&r, "ro denied");
}

#[test]
fn private_tmp_hides_the_hosts_tmp() {
    if !can_run("private_tmp") {
        return;
    }
    let dir = TempDir::new("sb-tmp");
    let marker = dir.path().join("host-file");
    std::fs::write(&marker, "x").unwrap();
    let r = run(
        "sbtmp",
        "",
        "private_tmp = true",
        &format!(
            "{TRY} try sees_host test -e {m}; try write sh -c 'echo y > /tmp/supd-private-$$'; \
             echo RESULT listing $(ls -A /tmp | wc -l)",
            m = marker.display()
        ),
    );
    has(&r, "sees_host denied");
    has(&r, "write ok");
    has(&r, "listing 1");
}

#[test]
fn protect_home_and_inaccessible_paths() {
    if !can_run("protect_home") {
        return;
    }
    let dir = TempDir::new("sb-home");
    let secret = dir.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("key"), "k").unwrap();
    let r = run(
        "sbhome",
        "user = \"nobody\"",
        &format!(
            "protect_home = true\ninaccessible_paths = [\"{}\"]",
            secret.display()
        ),
        &format!(
            "{TRY} try root_listed ls /root; try secret_read cat {s}/key",
            s = secret.display()
        ),
    );
    has(&r, "root_listed denied");
    has(&r, "secret_read denied");
}

#[test]
fn private_devices_keeps_only_the_pseudo_devices() {
    if !can_run("private_devices") {
        return;
    }
    let r = run(
        "sbdev",
        "",
        "private_devices = true",
        &format!(
            "{TRY} try null sh -c 'echo x > /dev/null'; try urandom head -c1 /dev/urandom; \
             try loop test -e /dev/loop-control; try kmsg test -e /dev/kmsg; \
             try mknod grep -q '^CapBnd:.*' /proc/self/status; \
             echo RESULT mknod_cap $(( (0x$(grep CapBnd /proc/self/status | cut -f2) >> 27) & 1 ))"
        ),
    );
    has(&r, "null ok");
    has(&r, "urandom ok");
    has(&r, "loop denied");
    has(&r, "kmsg denied");
    has(&r, "mknod_cap 0");
}

#[test]
fn capabilities_and_no_new_privileges() {
    if !can_run("capabilities") {
        return;
    }
    let r = run(
        "sbcaps",
        "",
        "no_new_privileges = true\ncapability_bounding_set = [\"CAP_NET_BIND_SERVICE\", \"CAP_CHOWN\"]",
        "echo RESULT nnp $(grep NoNewPrivs /proc/self/status | cut -f2); \
         echo RESULT bnd $(grep CapBnd /proc/self/status | cut -f2)",
    );
    has(&r, "nnp 1");
    // CAP_CHOWN (bit 0) and CAP_NET_BIND_SERVICE (bit 10).
    has(&r, "bnd 0000000000000401");
    // Ambient: a non-root user gets CAP_NET_BIND_SERVICE and can bind :80.
    let r = run(
        "sbamb",
        "user = \"nobody\"",
        "ambient_capabilities = [\"CAP_NET_BIND_SERVICE\"]",
        "echo RESULT amb $(grep CapAmb /proc/self/status | cut -f2); \
         if python3 -c 'import socket; socket.socket().bind((\"127.0.0.1\", 80))'; then echo RESULT bind80 ok; else echo RESULT bind80 denied; fi",
    );
    has(&r, "amb 0000000000000400");
    has(&r, "bind80 ok");
}

#[test]
fn kernel_hostname_and_network_protections() {
    if !can_run("kernel_protections") {
        return;
    }
    let host = nix::unistd::gethostname().unwrap();
    let r = run(
        "sbkern",
        "",
        "protect_kernel_tunables = true\nprotect_control_groups = true\nprotect_hostname = true\nprivate_network = true\nprotect_clock = true",
        &format!(
            "{TRY} try sysctl sh -c 'echo 1 > /proc/sys/kernel/printk_ratelimit'; \
             try cgroup mkdir /sys/fs/cgroup/supd-sb-test; \
             try hostname sh -c 'echo supd-sandboxed > /proc/sys/kernel/hostname'; \
             echo RESULT links $(tail -n +3 /proc/self/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' '); \
             echo RESULT time_cap $(( (0x$(grep CapBnd /proc/self/status | cut -f2) >> 25) & 1 ))"
        ),
    );
    has(&r, "sysctl denied");
    has(&r, "cgroup denied");
    has(&r, "time_cap 0");
    // The UTS namespace: even where the write is allowed it stays inside.
    assert_eq!(nix::unistd::gethostname().unwrap(), host);
    // Only loopback in the private network.
    has(&r, "links lo");
}

#[test]
fn bind_paths_and_bind_read_only_paths() {
    if !can_run("bind_paths") {
        return;
    }
    let dir = TempDir::new("sb-bind");
    let src = dir.path().join("src");
    let ro_src = dir.path().join("ro-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&ro_src).unwrap();
    std::fs::write(ro_src.join("data"), "ro-data").unwrap();
    // Mount points that do not exist yet are made, as systemd makes them.
    let dst = dir.path().join("dst");
    let ro_dst = dir.path().join("ro-dst");
    let r = run(
        "sbbind",
        "",
        &format!(
            "bind_paths = [\"{src}:{dst}\", \"-/nonexistent/x:/tmp/x\"]\nbind_read_only_paths = [\"{ro_src}:{ro_dst}\"]",
            src = src.display(),
            dst = dst.display(),
            ro_src = ro_src.display(),
            ro_dst = ro_dst.display()
        ),
        &format!(
            "{TRY} try write touch {dst}/w; try ro_read grep -q ro-data {ro_dst}/data; try ro_write touch {ro_dst}/w",
            dst = dst.display(),
            ro_dst = ro_dst.display()
        ),
    );
    has(&r, "write ok");
    has(&r, "ro_read ok");
    has(&r, "ro_write denied");
    // The write went through the bind to the source.
    assert!(src.join("w").exists());
    assert!(!ro_src.join("w").exists());
}
