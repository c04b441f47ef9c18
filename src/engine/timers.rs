//! Timer table: every deadline the engine cares about, as data.
//!
//! Owns: `(UnitId, TimerKind) -> Instant` (a slot per kind per unit, found
//! by index), and the same entries in a min-heap by deadline, so arming
//! and cancelling cost O(1) amortized (a slot write; a re-armed deadline,
//! the latest, is pushed at the bottom), `earliest()` O(1) and taking what
//! is due O(log timers) each — never a scan of every unit's timers (with
//! ten thousand probed units, every probe result re-arms one). The driver
//! sleeps until `earliest()` and then feeds `Event::Tick`. Must never: read
//! the clock or spawn tasks — a cancelled timer is just a removed entry,
//! nothing can leak.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::UnitId;

/// `now + d` without overflow. Unit files bound every duration at load
/// (`unit::MAX_DURATION`), but a deadline is computed in PID 1 and must
/// never panic whatever the input: a sum past what `Instant` can hold
/// becomes "about a century from now", which is never in practice.
pub fn after(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(d)
        .or_else(|| now.checked_add(d.min(FAR)))
        .unwrap_or(now)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// Give up on a start that never became ready.
    StartTimeout,
    /// The stop signal was sent; SIGKILL the group at this time.
    KillAfter,
    /// Leave backoff and try again.
    RestartAt,
    /// A required mount has been missing for its whole `timeout`.
    MountTimeout,
    /// Run the next health (liveness) probe.
    ProbeDue,
    /// Run the next readiness probe.
    ReadinessDue,
    /// sd_notify WATCHDOG=1 is overdue.
    Watchdog,
    /// A `notify_reload` unit did not report READY=1 after RELOADING=1.
    ReloadTimeout,
}

const KINDS: [TimerKind; 8] = [
    TimerKind::StartTimeout,
    TimerKind::KillAfter,
    TimerKind::RestartAt,
    TimerKind::MountTimeout,
    TimerKind::ProbeDue,
    TimerKind::ReadinessDue,
    TimerKind::Watchdog,
    TimerKind::ReloadTimeout,
];

/// One armed deadline in the index.
type Entry = Reverse<(Instant, UnitId, TimerKind)>;

#[derive(Debug, Default, Clone)]
pub struct TimerTable {
    /// The truth: each unit's deadline per kind, one dense column per kind
    /// (`slots[kind][unit]`). Per unit, the eight kinds side by side took
    /// 128 bytes, 1.28 MB at ten thousand units (above a 1 MiB L2), and a
    /// probe result, which re-arms one kind, missed a line of it; its own
    /// column is 160 KB, eight units to a line. All columns have the same
    /// length.
    slots: [Vec<Option<Instant>>; KINDS.len()],
    /// Which kinds each unit has armed (bit `kind as usize`): exactly the
    /// `Some` slots. Cancelling a kind that is not armed (an exit cancels
    /// five, most of them never armed) reads this byte and no column.
    armed: Vec<u8>,
    /// The same deadlines as a min-heap, for `earliest()` and `take_due`.
    /// Re-arming or cancelling only rewrites the slot: the old entry stays
    /// behind, stale (its slot no longer holds its deadline), and is
    /// dropped when it reaches the top. A B-tree removal at a random place
    /// per probe result was the largest cost left per event at ten
    /// thousand units (a cache miss per level); this is a slot write and a
    /// push that stays at the bottom (a re-armed deadline is the latest).
    /// The top is never stale (see `drop_stale_top`), and `compact` keeps
    /// stale entries below the live ones plus a constant.
    heap: BinaryHeap<Entry>,
    /// Armed slots (what the heap holds at most twice, plus a constant).
    live: usize,
}

/// Two tables are the same when they hold the same deadlines (what the
/// oracle compares); how many stale entries each index carries is not
/// state.
impl PartialEq for TimerTable {
    fn eq(&self, other: &Self) -> bool {
        self.slots == other.slots
    }
}

fn bit(kind: TimerKind) -> u8 {
    1 << kind as u8
}

impl TimerTable {
    fn is_live(&self, (at, unit, kind): (Instant, UnitId, TimerKind)) -> bool {
        self.slots[kind as usize].get(unit.0 as usize) == Some(&Some(at))
    }

    /// Pop stale entries off the top, so `earliest()` reads a live one.
    fn drop_stale_top(&mut self) {
        while let Some(&Reverse(e)) = self.heap.peek() {
            if self.is_live(e) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Drop every stale entry (and duplicates: a deadline cancelled and
    /// armed again at the same instant) once they outnumber the live ones:
    /// O(heap) now and then, O(1) per operation amortized.
    fn compact(&mut self) {
        if self.heap.len() <= 2 * self.live + 64 {
            return;
        }
        let mut v = std::mem::take(&mut self.heap).into_vec();
        v.sort_unstable();
        v.dedup();
        v.retain(|&Reverse(e)| self.is_live(e));
        self.heap = BinaryHeap::from(v);
    }

    pub fn set(&mut self, unit: UnitId, kind: TimerKind, at: Instant) {
        let i = unit.0 as usize;
        if self.armed.len() <= i {
            self.armed.resize(i + 1, 0);
            for c in &mut self.slots {
                c.resize(i + 1, None);
            }
        }
        let old = self.slots[kind as usize][i].replace(at);
        if old == Some(at) {
            return;
        }
        if old.is_none() {
            self.live += 1;
            self.armed[i] |= bit(kind);
        }
        self.heap.push(Reverse((at, unit, kind)));
        self.drop_stale_top();
        self.compact();
    }

    pub fn cancel(&mut self, unit: UnitId, kind: TimerKind) {
        let i = unit.0 as usize;
        match self.armed.get_mut(i) {
            Some(m) if *m & bit(kind) != 0 => *m &= !bit(kind),
            _ => return,
        }
        self.slots[kind as usize][i] = None;
        self.live -= 1;
        self.drop_stale_top();
        self.compact();
    }

    pub fn cancel_all(&mut self, unit: UnitId) {
        for kind in KINDS {
            self.cancel(unit, kind);
        }
    }

    /// Start loading the slots an event about `unit` reaches first (see
    /// `engine::prefetch`): the liveness probe's (a probe result re-arms
    /// it, an exit cancels it) and the restart's (an exit arms it). Not
    /// the armed byte's kinds: reading the byte to choose cost more than
    /// the hints (a D1 miss per event at ten thousand units).
    pub fn prefetch(&self, unit: UnitId) {
        let i = unit.0 as usize;
        for kind in [TimerKind::ProbeDue, TimerKind::RestartAt] {
            if let Some(s) = self.slots[kind as usize].get(i) {
                super::prefetch::prefetch(s, 1);
            }
        }
    }

    pub fn get(&self, unit: UnitId, kind: TimerKind) -> Option<Instant> {
        *self.slots[kind as usize].get(unit.0 as usize)?
    }

    pub fn earliest(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Due timers in deadline order (then unit, then kind), removed.
    pub fn take_due(&mut self, now: Instant) -> Vec<(UnitId, TimerKind)> {
        let mut due = Vec::new();
        while let Some(&Reverse((at, unit, kind))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            // A duplicate of an entry taken just before is stale by now.
            if self.is_live((at, unit, kind)) {
                self.slots[kind as usize][unit.0 as usize] = None;
                self.armed[unit.0 as usize] &= !bit(kind);
                self.live -= 1;
                due.push((unit, kind));
            }
        }
        self.drop_stale_top();
        due
    }

    /// Check the index against the slots (tests).
    #[cfg(test)]
    fn check(&self) {
        let armed = self.slots.iter().flatten().filter(|s| s.is_some()).count();
        assert_eq!(armed, self.live, "live count out of step");
        for c in &self.slots {
            assert_eq!(c.len(), self.armed.len(), "columns of different lengths");
        }
        for (u, m) in self.armed.iter().enumerate() {
            for kind in KINDS {
                assert_eq!(
                    m & bit(kind) != 0,
                    self.slots[kind as usize][u].is_some(),
                    "armed bits out of step with the slots"
                );
            }
        }
        assert!(
            self.heap.len() <= 2 * self.live + 65,
            "stale entries unbounded"
        );
        if let Some(&Reverse(e)) = self.heap.peek() {
            assert!(self.is_live(e), "stale entry on top");
        }
        for (k, c) in self.slots.iter().enumerate() {
            for (u, at) in c.iter().enumerate() {
                if let Some(at) = at {
                    let e = (*at, UnitId(u as u32), KINDS[k]);
                    assert!(
                        self.heap.iter().any(|&Reverse(x)| x == e),
                        "armed deadline missing from the index"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_saturates_instead_of_overflowing() {
        let t0 = Instant::now();
        assert_eq!(
            after(t0, Duration::from_secs(5)),
            t0 + Duration::from_secs(5)
        );
        let far = after(t0, Duration::MAX);
        assert!(far > t0 + Duration::from_secs(50 * 365 * 24 * 3600));
    }

    #[test]
    fn overwrite_cancels_and_due_in_order() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set(UnitId(1), TimerKind::RestartAt, t0 + Duration::from_secs(5));
        t.set(UnitId(1), TimerKind::RestartAt, t0 + Duration::from_secs(1));
        t.set(UnitId(0), TimerKind::KillAfter, t0 + Duration::from_secs(2));
        assert_eq!(t.earliest(), Some(t0 + Duration::from_secs(1)));
        assert!(t.take_due(t0).is_empty());
        let due = t.take_due(t0 + Duration::from_secs(3));
        assert_eq!(
            due,
            vec![
                (UnitId(1), TimerKind::RestartAt),
                (UnitId(0), TimerKind::KillAfter)
            ]
        );
        assert_eq!(t.earliest(), None);
    }

    #[test]
    fn cancel_all_leaves_other_units_and_the_index_in_step() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        for (i, k) in KINDS.iter().enumerate() {
            t.set(UnitId(3), *k, t0 + Duration::from_secs(i as u64));
        }
        t.set(UnitId(4), TimerKind::ProbeDue, t0 + Duration::from_secs(9));
        t.cancel_all(UnitId(3));
        assert_eq!(t.earliest(), Some(t0 + Duration::from_secs(9)));
        assert_eq!(
            t.take_due(t0 + Duration::from_secs(60)),
            vec![(UnitId(4), TimerKind::ProbeDue)]
        );
        assert!(t.slots.iter().flatten().all(Option::is_none) && t.heap.is_empty());
        t.check();
    }

    #[test]
    fn cancel_all_takes_every_kind_of_one_unit_only() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        // Every kind (the test's own list had fallen one behind KINDS).
        for (i, kind) in KINDS.into_iter().enumerate() {
            t.set(UnitId(1), kind, t0 + Duration::from_millis(i as u64));
            t.set(UnitId(0), kind, t0 + Duration::from_secs(10));
            t.set(UnitId(2), kind, t0 + Duration::from_secs(20));
        }
        t.cancel_all(UnitId(1));
        assert_eq!(t.earliest(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(t.take_due(t0 + Duration::from_secs(15)).len(), KINDS.len());
        assert_eq!(
            t.get(UnitId(2), TimerKind::Watchdog),
            Some(t0 + Duration::from_secs(20))
        );
        t.cancel(UnitId(2), TimerKind::Watchdog);
        assert_eq!(
            t.take_due(t0 + Duration::from_secs(30)).len(),
            KINDS.len() - 1
        );
        assert_eq!(t.earliest(), None);
    }

    /// The lazy heap against the ordered set it replaced: same deadlines,
    /// same due order, over random arming, re-arming at the same instant,
    /// cancelling and ticking.
    #[test]
    fn lazy_heap_agrees_with_an_ordered_set() {
        use std::collections::BTreeSet;
        let t0 = Instant::now();
        let mut seed = 7u64;
        let mut rnd = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut t = TimerTable::default();
        let mut model: BTreeSet<(Instant, UnitId, TimerKind)> = BTreeSet::new();
        let mut now = t0;
        for _ in 0..20_000 {
            let unit = UnitId(rnd(40) as u32);
            let kind = KINDS[rnd(KINDS.len() as u64) as usize];
            match rnd(10) {
                0..=4 => {
                    // Few distinct instants: re-arming at the same one is common.
                    let at = now + Duration::from_millis(rnd(8) * 250);
                    if let Some(old) = t.get(unit, kind) {
                        model.remove(&(old, unit, kind));
                    }
                    model.insert((at, unit, kind));
                    t.set(unit, kind, at);
                }
                5 | 6 => {
                    if let Some(old) = t.get(unit, kind) {
                        model.remove(&(old, unit, kind));
                    }
                    t.cancel(unit, kind);
                }
                7 => {
                    model.retain(|&(_, u, _)| u != unit);
                    t.cancel_all(unit);
                }
                _ => {
                    now += Duration::from_millis(rnd(3) * 250);
                    let mut want = Vec::new();
                    while let Some(&(at, u, k)) = model.first() {
                        if at > now {
                            break;
                        }
                        model.pop_first();
                        want.push((u, k));
                    }
                    assert_eq!(t.take_due(now), want);
                }
            }
            assert_eq!(t.earliest(), model.first().map(|e| e.0));
            t.check();
        }
    }
}
