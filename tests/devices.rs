//! `[resources] device_policy` / `device_allow` (systemd's DevicePolicy= /
//! DeviceAllow=): a cgroup device program on the unit's group. Proven from
//! inside the service: opening a device it was not given fails with EPERM,
//! the ones it was given open, with only the access granted.

mod common;

use std::time::Duration;

use common::*;

/// Opens each `PATH:MODE` argument and writes `PATH:MODE=ok` or
/// `=errno N` to the file named first.
const OPENER: &str = r#"
import os, sys
out = []
for arg in sys.argv[2:]:
    path, mode = arg.rsplit(":", 1)
    flags = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}[mode]
    try:
        os.close(os.open(path, flags))
        out.append(arg + "=ok")
    except OSError as e:
        out.append(arg + "=errno %d" % e.errno)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("\n".join(out) + "\n")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
"#;

fn can_attach(test: &str) -> bool {
    if !can_run(test) || !cgroup_writable(test) {
        return false;
    }
    if let Err(e) = supd::world::devices::probe() {
        eprintln!(
            "SKIP {test}: this host cannot load a cgroup device program ({e}); the VM test covers it"
        );
        return false;
    }
    true
}

#[test]
fn a_device_not_allowed_cannot_be_opened_from_inside_the_service() {
    if !can_attach("device_not_allowed") {
        return;
    }
    let t = TempDir::new("devices");
    let result = t.path().join("result");
    let script = t.path().join("opener.py");
    std::fs::write(&script, OPENER).unwrap();
    let unit = format!(
        "type = \"oneshot\"\nexec = [\"python3\", {}, {}, \"/dev/zero:r\", \"/dev/null:rw\", \"/dev/urandom:r\", \"/dev/urandom:w\"]\n\
         [resources]\ndevice_policy = \"strict\"\ndevice_allow = [\"/dev/null rw\", \"/dev/urandom r\"]\n",
        toml_str(&script.display().to_string()),
        toml_str(&result.display().to_string())
    );
    let supd = Supd::start("devices", &[("d", &unit)]);
    let text = wait_for("the service's report", Duration::from_secs(20), || {
        std::fs::read_to_string(&result).ok()
    });
    let eperm = format!("errno {}", libc::EPERM);
    assert!(
        text.contains(&format!("/dev/zero:r={eperm}")),
        "{text}\n{}",
        supd.log_text()
    );
    assert!(text.contains("/dev/null:rw=ok"), "{text}");
    assert!(text.contains("/dev/urandom:r=ok"), "{text}");
    assert!(text.contains(&format!("/dev/urandom:w={eperm}")), "{text}");
    // supd itself (outside the group) is not restricted.
    assert!(std::fs::File::open("/dev/zero").is_ok());
}

#[test]
fn closed_gives_the_standard_pseudo_devices() {
    if !can_attach("closed_gives_the_standard_pseudo_devices") {
        return;
    }
    let t = TempDir::new("devices-closed");
    let result = t.path().join("result");
    let script = t.path().join("opener.py");
    std::fs::write(&script, OPENER).unwrap();
    // /dev/kmsg (char 1:11) is not a standard pseudo device.
    let unit = format!(
        "type = \"oneshot\"\nexec = [\"python3\", {}, {}, \"/dev/zero:rw\", \"/dev/full:w\", \"/dev/kmsg:r\"]\n\
         [resources]\ndevice_policy = \"closed\"\n",
        toml_str(&script.display().to_string()),
        toml_str(&result.display().to_string())
    );
    let _supd = Supd::start("devices-closed", &[("d", &unit)]);
    let text = wait_for("the service's report", Duration::from_secs(20), || {
        std::fs::read_to_string(&result).ok()
    });
    assert!(text.contains("/dev/zero:rw=ok"), "{text}");
    assert!(text.contains("/dev/full:w=ok"), "{text}");
    assert!(
        text.contains(&format!("/dev/kmsg:r=errno {}", libc::EPERM)),
        "{text}"
    );
}

#[test]
fn check_refuses_a_device_restriction_it_cannot_enforce() {
    if !can_run("check_refuses_device_restriction") {
        return;
    }
    let t = TempDir::new("devices-check");
    let units = t.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(
        units.join("d.toml"),
        "exec = [\"/bin/true\"]\n[resources]\ndevice_policy = \"strict\"\n",
    )
    .unwrap();
    // A mount namespace where no cgroup2 is mounted.
    let script = format!(
        "for m in $(awk '$9 == \"cgroup2\" {{print $5}}' /proc/self/mountinfo); do umount -l \"$m\" || exit 3; done; exec {SUPD} check --units {}",
        units.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("d.toml:3") && err.contains("device_policy") && err.contains("unrestricted"),
        "{err}"
    );
}
