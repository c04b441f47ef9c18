//! Group preparation off the main thread: a thread of its own that makes
//! each unit's cgroup, ahead of its first spawn.
//!
//! Why: supd's main thread spawns serially (each spawn waits for the
//! child's exec), so whatever it does per spawn adds up across a start
//! wave, while the second core is mostly idle. Making a unit's group
//! (`mkdirat`: a css per controller, ~35 µs here) does not depend on the
//! run: it can be done as soon as the unit is known. So this thread, from
//! the moment the units are known (in unit order, the order the engine
//! starts independent units), makes each group, and reads its
//! `memory.events` OOM count where the memory controller is on.
//!
//! A group is not watched here (nor at its spawn): the driver adds the
//! inotify watch on `cgroup.events` only when it needs to learn of the
//! group's emptying without a main process's exit to tell it (see
//! `driver::groups`, "watched lazily"). An earlier version watched every
//! group here and then had to read the "populated" wake-up each spawn
//! raised; with no watch there is no wake-up to read.
//!
//! What stays on the main thread: opening the group's directory for
//! `CLONE_INTO_CGROUP` (the child is in its group before exec), closing
//! it, and recording the main pid on the group. No descriptor is held for
//! a prepared group (a unit still costs supd one descriptor, its output
//! pipe), so nothing here is bounded by the number of units but the small
//! table of prepared names.
//!
//! Correctness never depends on this thread's progress: a unit that is
//! started before its group was prepared claims it, and the spawn makes
//! the group inline (`mkdirat` tolerates EEXIST on both sides). A claimed
//! unit is skipped here.
//!
//! `SUPD_GROUP_PREP_DELAY_MS` (tests only) holds the thread back that
//! long before it starts, to exercise the inline path beside it.
//!
//! Owns: the thread, the table of prepared and claimed units. Must never:
//! spawn, signal, watch or remove anything; touch engine state; hold a
//! descriptor per unit.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::world::cgroup::{self, GroupKind};

/// What was done ahead for one unit's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// `memory.events` `oom_kill` when the group was prepared (None
    /// without the memory controller).
    pub oom_kills: Option<u64>,
}

enum Slot {
    Ready(Prepared),
    /// The driver made the group inline first: not prepared here.
    Claimed,
}

#[derive(Default)]
struct Slots {
    map: HashMap<String, Slot>,
    /// Every unit of the list has been dealt with: nothing is claimed
    /// any more (the driver's inline path needs no mark).
    done: bool,
}

/// The driver's handle on the preparing thread. The thread ends once it
/// is through its list (or stopped).
pub struct Preparer {
    slots: Arc<Mutex<Slots>>,
    /// Set by `stop`: the thread makes nothing more.
    stopped: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Preparer {
    /// Start the thread on `units` (in the order they are expected to
    /// start). `subtree`: supd's subtree directory (a descriptor of the
    /// thread's own), at `dir`; `memory`: the memory controller is
    /// enabled for the units' groups.
    pub fn start(
        units: Vec<String>,
        subtree: OwnedFd,
        dir: PathBuf,
        memory: bool,
    ) -> std::io::Result<Preparer> {
        let slots: Arc<Mutex<Slots>> = Arc::default();
        let s = slots.clone();
        let stopped: Arc<AtomicBool> = Arc::default();
        let st = stopped.clone();
        let thread = std::thread::Builder::new()
            .name("supd-cgprep".into())
            .spawn(move || run(units, subtree, dir, memory, s, &st))?;
        Ok(Preparer {
            slots,
            stopped,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Make nothing more, and wait until the thread is out of whatever
    /// it was doing (at most one unit's mkdir): a shutdown removes the
    /// groups after this, and none may be made behind it.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let t = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }

    /// The unit is about to be spawned and its group is not known to the
    /// driver: what was prepared for it, if anything. From now on the
    /// thread leaves the unit alone (the driver makes it inline).
    pub fn claim(&self, unit: &str) -> Option<Prepared> {
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match s.map.remove(unit) {
            Some(Slot::Ready(p)) => Some(p),
            _ => {
                if !s.done {
                    s.map.insert(unit.to_string(), Slot::Claimed);
                }
                None
            }
        }
    }
}

fn run(
    units: Vec<String>,
    subtree: OwnedFd,
    dir: PathBuf,
    memory: bool,
    slots: Arc<Mutex<Slots>>,
    stopped: &AtomicBool,
) {
    let fd = subtree.as_raw_fd();
    // Tests only: hold the thread back, so that units start before their
    // group is prepared (the inline path) while others are prepared later.
    if let Some(ms) = std::env::var("SUPD_GROUP_PREP_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(ms.min(60_000));
        // In short steps: a shutdown meanwhile must not wait it out.
        while std::time::Instant::now() < until && !stopped.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    for u in units {
        if stopped.load(Ordering::SeqCst) {
            return;
        }
        prepare(fd, &dir, memory, &slots, u);
    }
    let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
    s.map.retain(|_, v| matches!(v, Slot::Ready(_)));
    s.map.shrink_to_fit();
    s.done = true;
}

fn prepare(fd: i32, dir: &std::path::Path, memory: bool, slots: &Mutex<Slots>, unit: String) {
    {
        let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(s.map.get(&unit), Some(Slot::Claimed)) {
            s.map.remove(&unit);
            return;
        }
    }
    let name = cgroup::group_name(&unit, GroupKind::Unit);
    let Ok(c) = std::ffi::CString::new(name.as_str()) else {
        return;
    };
    if let Err(e) = cgroup::make_at(fd, &c) {
        // The spawn makes it inline and reports what fails there.
        tracing::debug!(unit = %unit, "preparing cgroup {name}: {e}");
        return;
    }
    warm(fd, &name);
    let oom_kills = if memory {
        cgroup::oom_kills(&dir.join(&name))
    } else {
        None
    };
    let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
    if matches!(s.map.get(&unit), Some(Slot::Claimed)) {
        // Claimed meanwhile: the driver made it itself.
        s.map.remove(&unit);
    } else {
        s.map.insert(unit, Slot::Ready(Prepared { oom_kills }));
    }
}

/// Look up, here, what the spawn path will look up in the new group, so
/// the kernel's caches hold it when the main thread gets there. A group
/// made by `mkdirat` has no dentry (cgroupfs leaves the new directory's
/// dentry negative, and each later mkdir in the subtree invalidates it),
/// so the first `openat` of the group for `CLONE_INTO_CGROUP` did a full
/// lookup (a dentry, the group's inode, a search among the subtree's
/// thousands of names): ~50 µs per spawn on the main thread at 2,000
/// units (perf). And the clone itself checks that supd may write the
/// group's `cgroup.procs` by getting that file's inode, which cgroupfs
/// frees again at once unless a dentry holds it — every spawn, restarts
/// included, allocated one. One path walk to each file leaves the group,
/// `cgroup.procs` and `cgroup.events` (read when the main process is
/// reaped) in the dentry cache. Failure only costs the lookup later.
fn warm(subtree: i32, name: &str) {
    for file in ["cgroup.procs", "cgroup.events"] {
        let Ok(path) = std::ffi::CString::new(format!("{name}/{file}")) else {
            return;
        };
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstatat relative to a directory descriptor we own, a
        // NUL-terminated path, into a local buffer we never read.
        unsafe { libc::fstatat(subtree, path.as_ptr(), st.as_mut_ptr(), 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subtree stand-in: a plain directory (mkdirat and the table do
    /// not care that it is not cgroupfs).
    struct Dir(PathBuf);
    impl Dir {
        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn subtree() -> (Dir, OwnedFd) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::env::temp_dir().join(format!("supd-group-prep-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(&t).expect("temp dir");
        let f = std::fs::File::open(&t).expect("open dir");
        (Dir(t), OwnedFd::from(f))
    }

    fn wait_done(p: &Preparer) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !p.slots.lock().unwrap().done {
            assert!(
                std::time::Instant::now() < deadline,
                "preparer never finished"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn prepares_every_group_and_a_claimed_unit_is_left_to_the_driver() {
        let (t, fd) = subtree();
        let units: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
        let p = Preparer::start(units, fd, t.path().to_path_buf(), false).expect("start");
        // Claimed before (probably) or after its turn: either way the
        // driver gets nothing for it, or what was ready.
        let early = p.claim("u49");
        wait_done(&p);
        for i in 0..49 {
            let name = format!("u{i}");
            assert!(t.path().join(format!("{name}.unit")).is_dir(), "{name}");
            assert_eq!(p.claim(&name), Some(Prepared { oom_kills: None }));
            // Once: the second spawn of a unit finds it in the driver.
            assert_eq!(p.claim(&name), None);
        }
        // Whenever it was claimed, the driver owns it now.
        let _ = early;
        assert_eq!(p.claim("u49"), None);
        // After the list: no claim marks pile up.
        assert_eq!(p.claim("late"), None);
        assert!(!p.slots.lock().unwrap().map.contains_key("late"));
        // A shutdown stops it: returns once the thread is gone.
        p.stop();
        assert!(p.thread.lock().unwrap().is_none());
    }
}
