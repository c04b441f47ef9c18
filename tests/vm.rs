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
//!
//! Power cuts: supd keeps its lock state on the VM's data disk while a
//! unit takes and releases locks as fast as it can, printing each
//! acknowledged operation on the serial console; QEMU is SIGKILLed at a
//! random moment (seed printed), which loses the guest's RAM — a power cut
//! for the guest, unlike kill -9 of supd. Each next boot of the same disk
//! must load every acknowledged lock (the one operation in flight may or
//! may not be there), never come up fail-closed, keep locked units down,
//! and leave a filesystem that fsck finds clean. `SUPD_POWERCUT_CUTS`
//! (default 5) sets the number of cuts; `SUPD_POWERCUT_SEED` replays one run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

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
    // Boot order: the disk before db, db only on the mounted disk. db is
    // gated by the mount itself (its `[[mount]]`, on the live table; the
    // VIOLATION check in `boot` sees a start without it), not by the
    // mounting unit's exit: the new mount table can reach supd before
    // mount-data's exit is reaped, so "completed unit=mount-data" may come
    // just after "starting unit=db" (seen once in a full test.sh).
    assert!(
        at("starting unit=mount-data") < at("starting unit=db"),
        "db started before its disk's mount unit:\n{serial}"
    );
    assert!(
        at("ready unit=web") < at("starting unit=driver"),
        "driver started before web was ready:\n{serial}"
    );
    // Containment as PID 1: cgroup2 mounted, controllers delegated, limits
    // in the unit's cgroup, an OOM kill named as such.
    assert!(
        serial.contains("DRIVER: LIMITS-OK"),
        "limits not applied:\n{serial}"
    );
    assert!(
        serial.contains("DRIVER: OOM-OK"),
        "OOM not reported:\n{serial}"
    );
    assert!(
        !serial.contains("HOG: survived"),
        "memory_max not enforced:\n{serial}"
    );
    // oom_policy = "kill": the rest of the group died with the OOM victim.
    assert!(
        serial.contains("HOGK: start"),
        "hogk did not run:\n{serial}"
    );
    assert!(
        !serial.contains("HOGK: survived"),
        "oom_policy = kill did not kill the group:\n{serial}"
    );
    // Pressure-aware shedding ([shed] in packaging/vm/supd.toml): under
    // the memory hog the optional unit is shed, and it returns once the
    // hog is stopped.
    assert!(
        serial.contains("DRIVER: SHED-OK"),
        "extra not shed under the memory hog:\n{serial}"
    );
    assert!(at("MEMHOG: allocating") < at("DRIVER: SHED-OK"));
    assert!(
        serial.contains("DRIVER: UNSHED-OK"),
        "extra did not come back after the hog:\n{serial}"
    );
    for l in serial.lines().filter(|l| {
        l.contains("MEMHOG")
            || l.contains("SHED-OK")
            || l.contains("shedding step")
            || l.contains("restoring to step")
    }) {
        eprintln!("vm shed: {l}");
    }
    // The shed that counts is the last one before the driver saw it, and
    // it came after the hog started. (Boot itself may stall the one CPU
    // enough to shed and restore once before; the pressure of the kill -9
    // of every service after UNSHED-OK may shed again: neither counts.)
    let (hog, shed_ok, unshed_ok) = (
        at("MEMHOG: allocating"),
        at("DRIVER: SHED-OK"),
        at("DRIVER: UNSHED-OK"),
    );
    let shed = serial[..shed_ok]
        .rfind("memory pressure stayed above [shed] above: shedding step 1 (optional): extra")
        .unwrap_or_else(|| panic!("extra never shed for memory pressure:\n{serial}"));
    assert!(
        hog < shed,
        "extra was last shed before the hog started (see the vm shed lines above)"
    );
    // The restore that counts is the last one before the driver saw extra
    // back, and it came after the shed.
    let restored = serial[..unshed_ok]
        .rfind("restoring to step 0 (none): extra")
        .unwrap_or_else(|| panic!("extra never restored:\n{serial}"));
    assert!(
        shed_ok < restored,
        "extra was not restored after the shed (see the vm shed lines above)"
    );
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
    let units = std::fs::read_dir(repo.join("packaging/vm/units"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(
        (laid.rows, laid.shown, laid.distinct_y),
        (units, units, units),
        "one visible row per unit of the VM (packaging/vm/units: {units})"
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

// ------------------------------------------------------------ power cuts

/// Who holds which unit, as (unit, holder) -> reason.
type LockSet = BTreeMap<(String, String), String>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct LockOp {
    n: u64,
    on: bool,
    unit: String,
    holder: String,
    reason: String,
}

impl LockOp {
    fn parse(rest: &str) -> Option<LockOp> {
        let mut w = rest.split_whitespace();
        Some(LockOp {
            n: w.next()?.parse().ok()?,
            on: w.next()? == "on",
            unit: w.next()?.to_string(),
            holder: w.next()?.to_string(),
            reason: w.next()?.to_string(),
        })
    }

    fn apply(&self, locks: &mut LockSet) {
        let key = (self.unit.clone(), self.holder.clone());
        if self.on {
            locks.insert(key, self.reason.clone());
        } else {
            locks.remove(&key);
        }
    }
}

/// What one boot's serial log says: the lock state supd loaded (if the
/// verifier got to print it), the operations acknowledged after it, the one
/// operation that may have been in flight at the cut, and failures.
struct BootLog {
    loaded: Option<LockSet>,
    status: Option<serde_json::Value>,
    acked: Vec<LockOp>,
    in_flight: Option<LockOp>,
    fails: Vec<String>,
    /// The log up to the hammer's first line: what happened before any lock
    /// changed in this boot.
    before_hammer: String,
}

fn parse_boot_log(serial: &str) -> BootLog {
    let mut b = BootLog {
        loaded: None,
        status: None,
        acked: vec![],
        in_flight: None,
        fails: vec![],
        before_hammer: serial
            .split("HAMMER start")
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    for line in serial.lines() {
        // The hammer and the verifier write whole lines (one write(2)
        // each), so their markers start a line.
        if let Some(json) = line.strip_prefix("STATE ") {
            let list: Vec<serde_json::Value> = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("STATE line is not a JSON list ({e}): {line}"));
            let mut set = LockSet::new();
            for l in list {
                assert_eq!(l["durable"], true, "a loaded lock that is not durable: {l}");
                set.insert(
                    (
                        l["unit"].as_str().unwrap_or_default().to_string(),
                        l["holder"].as_str().unwrap_or_default().to_string(),
                    ),
                    l["reason"].as_str().unwrap_or_default().to_string(),
                );
            }
            b.loaded = Some(set);
        } else if let Some(json) = line.strip_prefix("STATUS ") {
            b.status = Some(
                serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("STATUS line is not JSON ({e}): {line}")),
            );
        } else if let Some(rest) = line.strip_prefix("TRY ") {
            b.in_flight = LockOp::parse(rest);
        } else if let Some(rest) = line.strip_prefix("ACK ") {
            let op = LockOp::parse(rest).unwrap_or_else(|| panic!("bad ACK line: {line}"));
            assert_eq!(
                b.in_flight.as_ref().map(|t| t.n),
                Some(op.n),
                "ACK without its TRY: {line}"
            );
            b.in_flight = None;
            b.acked.push(op);
        } else if line.starts_with("FAIL ") {
            b.fails.push(line.to_string());
        }
    }
    b
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// `cache=none` (O_DIRECT: guest writes go to the host disk, not the host
/// page cache) where the image's filesystem supports it; tmpfs does not,
/// and then QEMU's default writeback is used. Either way the cut is a real
/// power cut *for the guest*: killing QEMU loses the guest's RAM — its page
/// cache, dirty buffers, bios not yet handed to the virtual disk — while
/// every write QEMU already completed survives, because the host does not
/// crash. That is a disk whose write cache survives power loss; what it
/// proves is that supd's acknowledgement waits for its writes to leave the
/// guest (fsync of the file and the directory), which kill -9 of supd
/// cannot show (the guest page cache survives a process kill).
fn cache_mode(img: &Path) -> &'static str {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(img)
    {
        Ok(_) => "none",
        Err(e) => {
            eprintln!(
                "vm power cuts: {} does not allow O_DIRECT ({e}); cache=writeback",
                img.display()
            );
            "writeback"
        }
    }
}

/// e2fsck of a copy after replaying its journal (what the next mount does):
/// the filesystem a power cut left must be consistent.
fn fsck_after_cut(img: &Path, tag: &str) {
    let copy = img.with_extension("fsck.img");
    std::fs::copy(img, &copy).expect("copy image");
    let (_, replay) = sh(Command::new("e2fsck")
        .args(["-E", "journal_only", "-y"])
        .arg(&copy));
    let (ok, out) = sh(Command::new("e2fsck").arg("-fn").arg(&copy));
    let _ = std::fs::remove_file(&copy);
    assert!(
        ok,
        "{tag}: filesystem inconsistent after the cut:\n{replay}\n{out}"
    );
}

fn spawn_vm(dir: &Path, log: &str, cache: &str, args: &[String]) -> std::process::Child {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new(repo.join("packaging/vm/run-vm.sh"))
        .arg(dir)
        .arg(dir.join("disk.img"))
        .arg(dir.join(log))
        .args(args)
        .env("VM_DIRECT", "1")
        .env("VM_CACHE", cache)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // A file, not a pipe nobody reads (a chatty QEMU would block).
        .stderr(std::fs::File::create(dir.join(format!("{log}.qemu-stderr"))).expect("stderr file"))
        .spawn()
        .expect("start qemu")
}

/// What QEMU (or run-vm.sh) said on stderr for this boot.
fn qemu_stderr(dir: &Path, log: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{log}.qemu-stderr"))).unwrap_or_default()
}

fn read_log(dir: &Path, log: &str) -> String {
    String::from_utf8_lossy(&std::fs::read(dir.join(log)).unwrap_or_default()).into_owned()
}

/// Ends QEMU (if still running) when the test fails half-way.
struct Qemu(std::process::Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Check a boot's loaded state against the model: what was acknowledged,
/// plus possibly the one operation in flight at the previous cut. Returns
/// the new model.
fn check_loaded(
    tag: &str,
    loaded: &LockSet,
    model: &LockSet,
    in_flight: &Option<LockOp>,
    serial: &str,
) -> LockSet {
    if loaded == model {
        return model.clone();
    }
    if let Some(op) = in_flight {
        let mut with = model.clone();
        op.apply(&mut with);
        if *loaded == with {
            return with;
        }
    }
    panic!(
        "{tag}: ACKNOWLEDGED LOCK STATE LOST.\n loaded: {loaded:?}\n acknowledged: {model:?}\n in flight at the cut: {in_flight:?}\n--- serial ---\n{serial}"
    );
}

/// Locked units must not have started before the hammer changed anything.
fn check_locked_units_stayed_down(tag: &str, locked: &LockSet, before_hammer: &str) {
    let units: BTreeSet<&String> = locked.keys().map(|(u, _)| u).collect();
    for u in units {
        assert!(
            !before_hammer.contains(&format!("RUN {u}\n"))
                && !before_hammer.contains(&format!("starting unit={u}")),
            "{tag}: {u} is locked but ran:\n{before_hammer}"
        );
    }
}

#[test]
fn power_cuts_never_lose_an_acknowledged_lock() {
    if !can_boot() {
        return;
    }
    let cuts: u32 = std::env::var("SUPD_POWERCUT_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("SUPD_POWERCUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("vm power cuts: {cuts} cuts, seed {seed} (replay: SUPD_POWERCUT_SEED={seed})");
    let mut rng = seed;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = TempDir::new("vm-powercut");
    let d = dir.path();
    let (ok, out) = sh(Command::new(repo.join("packaging/vm/build-initramfs.sh"))
        .arg(d)
        .arg("release")
        .arg(repo.join("packaging/vm/powercut")));
    assert!(ok, "{out}");
    let img = d.join("disk.img");
    assert!(sh(Command::new("truncate").args(["-s", "32M"]).arg(&img)).0);
    assert!(sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img)).0);
    let cache = cache_mode(&img);

    let t_start = std::time::Instant::now();
    let mut model = LockSet::new();
    let mut in_flight: Option<LockOp> = None;
    let mut acked_total = 0usize;
    // Time from QEMU start to the hammer's first line, measured.
    let mut boot_time = Duration::from_secs(8);
    for boot in 1..=cuts {
        let tag = format!("cut {boot}/{cuts} (seed {seed})");
        let log = format!("boot{boot}.log");
        let t0 = std::time::Instant::now();
        let mut vm = Qemu(spawn_vm(d, &log, cache, &[format!("supd.boot={boot}")]));
        // Where to cut: a quarter of the cuts anywhere in the boot (while the
        // disk is mounted and its journal replayed, while supd loads the lock
        // state); the rest while the hammer runs.
        let r = xorshift(&mut rng);
        let during_boot = r.is_multiple_of(4);
        let delay = if during_boot {
            Duration::from_millis(300 + xorshift(&mut rng) % boot_time.as_millis().max(301) as u64)
        } else {
            Duration::from_millis(xorshift(&mut rng) % 3000)
        };
        let deadline = t0 + Duration::from_secs(180);
        let mut cut_at = if during_boot { Some(t0 + delay) } else { None };
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let now = std::time::Instant::now();
            if cut_at.is_none() && read_log(d, &log).contains("HAMMER start") {
                boot_time = now - t0;
                cut_at = Some(now + delay);
            }
            if cut_at.is_some_and(|c| now >= c) {
                break;
            }
            if let Ok(Some(st)) = vm.0.try_wait() {
                panic!(
                    "{tag}: qemu exited by itself ({st}): {}\n--- serial ---\n{}",
                    qemu_stderr(d, &log),
                    read_log(d, &log)
                );
            }
            assert!(
                now < deadline,
                "{tag}: no hammer within 180 s:\n{}",
                read_log(d, &log)
            );
        }
        // The power cut: SIGKILL to QEMU.
        let _ = vm.0.kill();
        let _ = vm.0.wait();
        let serial = read_log(d, &log);
        assert!(
            !serial.contains("Kernel panic"),
            "{tag}: kernel panic:\n{serial}"
        );
        assert!(
            !serial.contains("panicked"),
            "{tag}: supd panicked:\n{serial}"
        );
        let b = parse_boot_log(&serial);
        assert!(
            b.fails.is_empty(),
            "{tag}: an operation failed: {:?}\n{serial}",
            b.fails
        );
        match &b.loaded {
            Some(loaded) => {
                model = check_loaded(&tag, loaded, &model, &in_flight, &serial);
                in_flight = None;
                if let Some(st) = &b.status {
                    assert!(
                        st["lock_state_problem"].is_null(),
                        "{tag}: supd is fail-closed after a power cut: {}\n{serial}",
                        st["lock_state_problem"]
                    );
                }
                check_locked_units_stayed_down(&tag, &model, &b.before_hammer);
            }
            None => {
                // Cut before the verifier spoke: only units locked either way
                // are certain.
                let mut with = model.clone();
                if let Some(op) = &in_flight {
                    op.apply(&mut with);
                }
                let both: LockSet = model
                    .iter()
                    .filter(|(k, _)| with.contains_key(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                check_locked_units_stayed_down(&tag, &both, &b.before_hammer);
            }
        }
        for op in &b.acked {
            op.apply(&mut model);
        }
        acked_total += b.acked.len();
        if b.in_flight.is_some() {
            in_flight = b.in_flight.clone();
        }
        fsck_after_cut(&img, &tag);
        eprintln!(
            "vm power cuts: {tag}: cut {} after {:?}, {} acknowledged, in flight: {}",
            if during_boot {
                "during boot"
            } else {
                "while hammering"
            },
            t0.elapsed(),
            b.acked.len(),
            b.in_flight
                .as_ref()
                .map(|o| o.n.to_string())
                .unwrap_or("none".into())
        );
    }

    // A last boot: the state must load as acknowledged, then a clean
    // power-off, and the image must fsck clean.
    let log = "final.log";
    let mut vm = Qemu(spawn_vm(d, log, cache, &["supd.final=1".to_string()]));
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let st = loop {
        if let Ok(Some(st)) = vm.0.try_wait() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "final boot did not power off:\n{}",
            read_log(d, log)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let serial = read_log(d, log);
    assert!(
        st.success(),
        "final boot: qemu {st}: {}\n{serial}",
        qemu_stderr(d, log)
    );
    assert!(
        serial.contains("reboot: Power down"),
        "no clean power-off:\n{serial}"
    );
    let b = parse_boot_log(&serial);
    let loaded = b
        .loaded
        .as_ref()
        .unwrap_or_else(|| panic!("final boot: no STATE:\n{serial}"));
    check_loaded("final boot", loaded, &model, &in_flight, &serial);
    check_locked_units_stayed_down("final boot", loaded, &serial);
    let (ok, fsck) = sh(Command::new("e2fsck").arg("-fn").arg(&img));
    assert!(ok, "fsck after the final boot:\n{fsck}");
    eprintln!(
        "vm power cuts: {cuts} power cuts survived, {acked_total} acknowledged lock operations, none lost ({} locks held at the end), {:?} in all, seed {seed}",
        loaded.len(),
        t_start.elapsed()
    );
}
