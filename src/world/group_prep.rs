//! Group preparation off the main thread: a thread of its own that makes
//! each unit's cgroup, ahead of its first spawn.
//!
//! Why: supd's main thread spawns serially (each spawn waits for the
//! child's exec), so whatever it does per spawn adds up across a start
//! wave, while the second core is mostly idle. With a cgroup per unit the
//! main thread used to make the group at the unit's first spawn: `mkdirat`
//! (a css per controller, ~35 µs here), the inotify watch on its
//! `cgroup.events` (~10 µs), and, when the kernel reported the group
//! populated by that spawn, an `openat` + `pread` + `close` of
//! `cgroup.events` to learn that it was not empty (~10 µs). Profiled at
//! 2,000 units that was most of the difference between cgroup and
//! process-group start-up. Every one of those is independent of the run:
//! the group of a unit can be made and watched as soon as the unit is
//! known, and the "populated" reading of a fresh spawn only has to be
//! believed when it says empty. So this thread, from the moment the units
//! are known (in unit order, the order the engine starts independent
//! units), makes each group and adds its watch; and it reads the
//! `cgroup.events` of a group whose wake-up followed a spawn, passing the
//! unit on to the driver only when the file does not say populated (the
//! driver reads it again before it tells the engine, as for every
//! wake-up: a change after this read raises a wake-up of its own, so no
//! emptying is lost).
//!
//! What stays on the main thread: opening the group's directory for
//! `CLONE_INTO_CGROUP` (the child is in its group before exec, exactly as
//! before), closing it, and recording the main pid on the group. No
//! descriptor is held for a prepared group (a unit still costs supd one
//! descriptor, its output pipe), so nothing here is bounded by the number
//! of units but the small table of prepared names.
//!
//! Correctness never depends on this thread's progress: a unit that is
//! started before its group was prepared claims it, and the spawn makes
//! the group inline exactly as it did before (`mkdirat` tolerates EEXIST
//! on both sides; a second inotify watch on the same file is the same
//! watch descriptor). A claimed unit is skipped here.
//!
//! `SUPD_GROUP_PREP_DELAY_MS` (tests only) holds the thread back that
//! long before it starts, to exercise the inline path beside it.
//!
//! Owns: the thread, the table of prepared and claimed units. Must never:
//! spawn, signal or remove anything; touch engine state; hold a
//! descriptor per unit; tell the driver a group is empty without the
//! driver reading it again.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use crate::world::cgroup::{self, GroupKind};

/// What was done ahead for one unit's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// Its `cgroup.events` is watched (false: the watch could not be
    /// added here; the driver watches the group itself, with its
    /// fallback).
    pub watched: bool,
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

/// How the thread adds the watch of a group (the driver's shared inotify
/// instance and its map of watches): true when watched.
pub type WatchFn = Box<dyn Fn(&str, &std::path::Path) -> bool + Send>;
/// How the thread passes a unit whose group may have emptied on to the
/// driver.
pub type ForwardFn = Box<dyn Fn(String) + Send>;

/// The driver's handle on the preparing thread. Dropping it ends the
/// thread (once it is through its list).
pub struct Preparer {
    slots: Arc<Mutex<Slots>>,
    checks: mpsc::Sender<Vec<String>>,
    /// Set by `stop`: the thread makes and watches nothing more.
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
        watch: WatchFn,
        forward: ForwardFn,
    ) -> std::io::Result<Preparer> {
        let slots: Arc<Mutex<Slots>> = Arc::default();
        let (checks, rx) = mpsc::channel::<Vec<String>>();
        let s = slots.clone();
        let stopped: Arc<AtomicBool> = Arc::default();
        let st = stopped.clone();
        let thread = std::thread::Builder::new()
            .name("supd-cgprep".into())
            .spawn(move || run(units, subtree, dir, memory, watch, forward, s, rx, &st))?;
        Ok(Preparer {
            slots,
            checks,
            stopped,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Make nothing more, and wait until the thread is out of whatever
    /// it was doing (at most one unit's mkdir and watch): a shutdown
    /// removes the watches and the groups after this, and none may be
    /// added behind it.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes it if it waits for checks.
        let _ = self.checks.send(Vec::new());
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

    /// Where to send units whose `cgroup.events` the thread should read
    /// (those not populated are forwarded), for the task that reads the
    /// watches. A send fails once the thread is gone.
    pub fn checker(&self) -> mpsc::Sender<Vec<String>> {
        self.checks.clone()
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    units: Vec<String>,
    subtree: OwnedFd,
    dir: PathBuf,
    memory: bool,
    watch: WatchFn,
    forward: ForwardFn,
    slots: Arc<Mutex<Slots>>,
    rx: mpsc::Receiver<Vec<String>>,
    stopped: &AtomicBool,
) {
    let fd = subtree.as_raw_fd();
    // Tests only: hold the thread back, so that units start before their
    // group is prepared (the inline path) while others are prepared later.
    if let Some(ms) = std::env::var("SUPD_GROUP_PREP_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms.min(60_000)));
    }
    let mut queue = units.into_iter();
    let mut pending = true;
    loop {
        if stopped.load(Ordering::SeqCst) {
            return;
        }
        // Checks first: they are on the way to a unit's end; the groups
        // are made ahead of need.
        loop {
            let job = if pending {
                match rx.try_recv() {
                    Ok(j) => Some(j),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            } else {
                match rx.recv() {
                    Ok(j) => Some(j),
                    Err(_) => return,
                }
            };
            let Some(units) = job else { break };
            if stopped.load(Ordering::SeqCst) {
                return;
            }
            for u in units {
                // Unreadable (removed, made afresh): the driver decides.
                if !matches!(cgroup::populated_at(fd, &u, GroupKind::Unit), Ok(true)) {
                    forward(u);
                }
            }
        }
        if !pending {
            continue;
        }
        match queue.next() {
            Some(u) => prepare(fd, &dir, memory, &watch, &slots, u),
            None => {
                pending = false;
                let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
                s.map.retain(|_, v| matches!(v, Slot::Ready(_)));
                s.map.shrink_to_fit();
                s.done = true;
            }
        }
    }
}

fn prepare(
    fd: i32,
    dir: &std::path::Path,
    memory: bool,
    watch: &WatchFn,
    slots: &Mutex<Slots>,
    unit: String,
) {
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
    let path = dir.join(&name);
    let watched = watch(&unit, &path);
    let oom_kills = if memory {
        cgroup::oom_kills(&path)
    } else {
        None
    };
    let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
    if matches!(s.map.get(&unit), Some(Slot::Claimed)) {
        // Claimed meanwhile: the driver made and watched it itself.
        s.map.remove(&unit);
    } else {
        s.map
            .insert(unit, Slot::Ready(Prepared { watched, oom_kills }));
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
    fn prepares_in_order_and_a_claimed_unit_is_left_to_the_driver() {
        let (t, fd) = subtree();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let s2 = seen.clone();
        let units: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
        let p = Preparer::start(
            units,
            fd,
            t.path().to_path_buf(),
            false,
            Box::new(move |u, _| {
                s2.lock().unwrap().push(u.to_string());
                true
            }),
            Box::new(|_| {}),
        )
        .expect("start");
        // Claimed before (probably) or after its turn: either way the
        // driver gets nothing for it, or what was ready.
        let early = p.claim("u49");
        wait_done(&p);
        for i in 0..49 {
            let name = format!("u{i}");
            assert!(t.path().join(format!("{name}.unit")).is_dir(), "{name}");
            assert_eq!(
                p.claim(&name),
                Some(Prepared {
                    watched: true,
                    oom_kills: None
                })
            );
            // Once: the second spawn of a unit finds it in the driver.
            assert_eq!(p.claim(&name), None);
        }
        if early.is_none() {
            assert!(!seen.lock().unwrap().contains(&"u49".to_string()));
        }
        let order = seen.lock().unwrap().clone();
        let expected: Vec<String> = (0..order.len()).map(|i| format!("u{i}")).collect();
        assert_eq!(order, expected, "unit order");
        // After the list: no claim marks pile up.
        assert_eq!(p.claim("late"), None);
        assert!(!p.slots.lock().unwrap().map.contains_key("late"));
        // A shutdown stops it: returns once the thread is gone.
        p.stop();
        assert!(p.thread.lock().unwrap().is_none());
        assert!(p.checker().send(vec!["x".into()]).is_err());
    }

    #[test]
    fn checks_forward_what_does_not_read_populated() {
        let (t, fd) = subtree();
        std::fs::create_dir(t.path().join("full.unit")).unwrap();
        std::fs::write(
            t.path().join("full.unit/cgroup.events"),
            "populated 1\nfrozen 0\n",
        )
        .unwrap();
        std::fs::create_dir(t.path().join("empty.unit")).unwrap();
        std::fs::write(
            t.path().join("empty.unit/cgroup.events"),
            "populated 0\nfrozen 0\n",
        )
        .unwrap();
        let (tx, rx) = mpsc::channel();
        let p = Preparer::start(
            vec![],
            fd,
            t.path().to_path_buf(),
            false,
            Box::new(|_, _| true),
            Box::new(move |u| tx.send(u).unwrap()),
        )
        .expect("start");
        p.checker()
            .send(vec!["full".into(), "empty".into(), "gone".into()])
            .expect("thread alive");
        let timeout = std::time::Duration::from_secs(10);
        let mut got = vec![
            rx.recv_timeout(timeout).unwrap(),
            rx.recv_timeout(timeout).unwrap(),
        ];
        got.sort();
        assert_eq!(got, ["empty", "gone"]);
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(100))
                .is_err()
        );
    }
}
