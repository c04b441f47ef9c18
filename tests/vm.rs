//! supd as the real init of a Linux VM (QEMU, TCG), twice on one disk.
//!
//! Boot 1: the data disk is mounted late by a oneshot; a db-like unit must
//! only ever write to it; a web unit becomes ready by HTTP probe; a driver
//! unit kills every process (`kill -9 -1`: PID 1 must survive and restart
//! them), takes a maintenance lock on db and powers off. Afterwards the
//! image must fsck clean and hold the last synced record; `supctl analyze`
//! inside names db's wait for the late disk, and the timeline and graph it
//! saved there render (headless Chromium, Graphviz). Boot 2: the lock
//! (stored on the late-mounted disk) keeps db down.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn skip(reason: &str) -> bool {
    eprintln!("SKIP vm: {reason}");
    false
}

fn can_boot() -> bool {
    if !can_run("vm") {
        return false;
    }
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        return skip("qemu-system-x86_64 not installed (./test.sh installs it as root)");
    }
    let cloud = std::fs::read_dir("/lib/modules")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with("-cloud-amd64"))
        })
        .unwrap_or(false);
    if !cloud {
        return skip("linux-image-cloud-amd64 not installed");
    }
    if !Path::new("/bin/busybox").exists() {
        return skip("busybox-static not installed");
    }
    true
}

fn sh(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn boot(dir: &Path, log: &str, extra: &[&str]) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t0 = std::time::Instant::now();
    let (ok, out) = sh(Command::new(repo.join("packaging/vm/run-vm.sh"))
        .arg(dir)
        .arg(dir.join("disk.img"))
        .arg(dir.join(log))
        .args(extra)
        .env("VM_TIMEOUT", "180"));
    let serial = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
    assert!(
        ok,
        "qemu did not exit cleanly: {out}\n--- serial ---\n{serial}"
    );
    eprintln!("vm: {log} booted and powered off in {:?}", t0.elapsed());
    assert!(!serial.contains("Kernel panic"), "kernel panic:\n{serial}");
    assert!(
        !serial.contains("VIOLATION"),
        "db ran without its disk:\n{serial}"
    );
    assert!(
        serial.contains("reboot: Power down"),
        "no clean power-off:\n{serial}"
    );
    serial
}

#[test]
fn boots_as_pid1_keeps_data_and_locks_across_reboot() {
    if !can_boot() {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = TempDir::new("vm");
    let d = dir.path();
    let (ok, out) = sh(Command::new(repo.join("packaging/vm/build-initramfs.sh"))
        .arg(d)
        .arg("release"));
    assert!(ok, "{out}");
    let img = d.join("disk.img");
    assert!(sh(Command::new("truncate").args(["-s", "64M"]).arg(&img)).0);
    assert!(sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img)).0);

    let serial = boot(d, "boot1.log", &[]);
    let at = |needle: &str| {
        serial
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in boot 1 log:\n{serial}"))
    };
    // Boot order: the disk before db, db only on the mounted disk.
    assert!(at("completed unit=mount-data") < at("starting unit=db"));
    assert!(at("ready unit=web") < at("starting unit=driver"));
    // Every service killed; PID 1 survived and carried on.
    assert!(at("DRIVER: killing every process") < at("DRIVER: SOCKET-OK"));
    assert!(at("DRIVER: SOCKET-OK") < at("DRIVER: LOCKED"));
    // Ordered stop, then the disk unmounted before power-off.
    assert!(
        at("stopping: system shutdown unit=driver")
            < at("stopped (system shutdown): killed by SIGTERM unit=web")
    );
    assert!(at("unmounted /data") < at("powering off"));
    // The image is clean and holds the last record db synced.
    let (ok, fsck) = sh(Command::new("e2fsck").arg("-fn").arg(&img));
    assert!(ok, "fsck after boot 1:\n{fsck}");
    let last_synced = serial
        .lines()
        .rev()
        .filter_map(|l| l.split("db: record ").nth(1))
        .find_map(|r| r.split_whitespace().next())
        .expect("db synced records")
        .to_string();
    let (_, dblog) = sh(Command::new("debugfs")
        .args(["-R", "cat /db.log"])
        .arg(&img));
    assert!(
        dblog.contains(&format!("record {last_synced}\n")),
        "record {last_synced} was acknowledged as synced but is not on the disk:\n{dblog}"
    );

    // The boot seen from inside (issue 19): db's critical chain names its
    // late disk — directly, or through the lock state stored on it (the
    // first blocker in the decision order, the last to clear) — and the
    // timeline and graph the driver saved on that disk render in a
    // browser and in Graphviz.
    assert!(at("DRIVER: ANALYZED") < at("DRIVER: killing every process"));
    let waited: f64 = serial
        .lines()
        .filter(|l| {
            l.contains(" db ")
                && (l.contains("for mount /data")
                    || l.contains("state directory /data/supd-state is not mounted yet"))
        })
        .find_map(|l| l.split("waited ").nth(1)?.split(" s ").next()?.parse().ok())
        .unwrap_or_else(|| panic!("no wait for /data in db's critical chain:\n{serial}"));
    assert!(
        waited >= 1.5,
        "db waited {waited} s for /data; mount-data sleeps 2 s"
    );
    let from_disk = |path: &str| {
        let out = Command::new("debugfs")
            .args(["-R", &format!("cat {path}")])
            .arg(&img)
            .output()
            .expect("debugfs");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let laid = timeline_in_browser(&from_disk("/boot.svg"), d);
    assert_eq!(
        (laid.rows, laid.shown, laid.distinct_y),
        (5, 5, 5),
        "one visible row per unit of the VM"
    );
    let graph = dot_to_svg(&from_disk("/units.dot"), d);
    assert!(graph.contains("mount /data"), "{graph}");

    let serial2 = boot(d, "boot2.log", &["supd.boot=2"]);
    assert!(serial2.contains("DRIVER: DB-STAYED-DOWN"), "{serial2}");
    assert!(
        !serial2.contains("starting unit=db"),
        "locked db started:\n{serial2}"
    );
    assert!(
        serial2.contains("vm test: swap disk"),
        "lock not listed:\n{serial2}"
    );
    let (ok, fsck) = sh(Command::new("e2fsck").arg("-fn").arg(&img));
    assert!(ok, "fsck after boot 2:\n{fsck}");
}
