//! Restart arithmetic: exponential backoff with full jitter, and the
//! start-limit window.
//!
//! Owns: the seeded RNG and the pure functions that decide how long to wait
//! and whether a unit has started too often. Must never: read the clock or
//! an OS random source — the seed comes from the driver (or the simulation),
//! so a run is reproducible.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::unit::RestartSpec;

/// SplitMix64: tiny, fast, good enough for jitter; reproducible from a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next_u64().is_multiple_of(n.max(1))
    }

    /// Uniform in `[0, max]`.
    pub fn below_or_eq(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        self.next_u64() % (max + 1)
    }
}

/// The un-jittered ceiling for the `attempt`-th consecutive restart
/// (0-based): `delay * 2^attempt`, capped at `max_delay`.
pub fn backoff_ceiling(spec: &RestartSpec, attempt: u32) -> Duration {
    let factor = 1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX);
    let ms = (spec.delay.as_millis() as u64).saturating_mul(factor);
    Duration::from_millis(ms).min(spec.max_delay.max(spec.delay))
}

/// The shortest time `burst` consecutive restarts can take: jitter keeps at
/// least half of each ceiling. O(log(max_delay/delay)), not O(burst): once
/// the ceiling reaches `max_delay` every further attempt adds the same
/// amount, so `burst = 100000` costs what `burst = 20` does.
pub fn fastest_burst(spec: &RestartSpec, burst: u32) -> Duration {
    let mut total = Duration::ZERO;
    let mut attempt = 0u32;
    while attempt < burst {
        let ceiling = backoff_ceiling(spec, attempt);
        let capped = ceiling >= spec.max_delay.max(spec.delay) || attempt >= 64;
        if capped {
            let rest = burst - attempt;
            return total.saturating_add((ceiling / 2).saturating_mul(rest));
        }
        total = total.saturating_add(ceiling / 2);
        attempt += 1;
    }
    total
}

/// Full jitter (AWS architecture blog): uniform in `[ceiling/2, ceiling]`.
/// Half the ceiling is kept as a floor so a crash loop still slows down
/// visibly while units restarted together spread out.
pub fn backoff_delay(spec: &RestartSpec, attempt: u32, rng: &mut Rng) -> Duration {
    let ceiling = backoff_ceiling(spec, attempt).as_millis() as u64;
    let floor = ceiling / 2;
    Duration::from_millis(floor + rng.below_or_eq(ceiling - floor))
}

/// Automatic starts within the sliding `interval`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartWindow {
    starts: VecDeque<Instant>,
    /// `starts.front()`, beside the deque's header in the unit's record: a
    /// restart within the interval of the oldest start (a crash loop, or
    /// any unit restarted twice in ten seconds) then prunes nothing without
    /// reading the deque's own allocation — at ten thousand units a cold
    /// line per restart.
    oldest: Option<Instant>,
}

impl StartWindow {
    fn prune(&mut self, now: Instant, interval: Duration) {
        debug_assert_eq!(self.oldest, self.starts.front().copied());
        match self.oldest {
            Some(first) if now.saturating_duration_since(first) >= interval => {}
            _ => return,
        }
        while let Some(first) = self.starts.front() {
            if now.saturating_duration_since(*first) >= interval {
                self.starts.pop_front();
            } else {
                break;
            }
        }
        self.oldest = self.starts.front().copied();
    }

    /// May one more automatic start happen now without exceeding `burst`
    /// starts in `interval`?
    pub fn allows(&mut self, now: Instant, spec: &RestartSpec) -> bool {
        self.prune(now, spec.interval);
        (self.starts.len() as u64) < u64::from(spec.burst)
    }

    pub fn record(&mut self, now: Instant, spec: &RestartSpec) {
        self.prune(now, spec.interval);
        self.starts.push_back(now);
        // Only the first start of an empty window is its oldest.
        self.oldest.get_or_insert(now);
    }

    /// Forget the last recorded start (it never happened: the spawner
    /// refused it at the last moment).
    pub fn unrecord_last(&mut self) {
        self.starts.pop_back();
        self.oldest = self.starts.front().copied();
    }

    pub fn clear(&mut self) {
        self.starts.clear();
        self.oldest = None;
    }

    pub fn count(&self) -> usize {
        self.starts.len()
    }

    /// How long ago each start was, in ms (for a re-executed supd: the
    /// monotonic clock goes on, but an `Instant` cannot cross exec).
    pub fn ages_ms(&self, now: Instant) -> Vec<u64> {
        self.starts
            .iter()
            .map(|t| now.saturating_duration_since(*t).as_millis() as u64)
            .collect()
    }

    pub fn from_ages_ms(now: Instant, ages: &[u64]) -> StartWindow {
        let starts: VecDeque<Instant> = ages
            .iter()
            .filter_map(|a| now.checked_sub(Duration::from_millis(*a)))
            .collect();
        StartWindow {
            oldest: starts.front().copied(),
            starts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::{UnitKind, UnitSpec};

    fn spec() -> RestartSpec {
        let mut s = UnitSpec::simple("x", UnitKind::Longrun, &["/bin/true"]).restart;
        s.delay = Duration::from_millis(100);
        s.max_delay = Duration::from_millis(1000);
        s.burst = 3;
        s.interval = Duration::from_secs(10);
        s
    }

    #[test]
    fn backoff_grows_and_caps() {
        let s = spec();
        let c: Vec<u64> = (0..6)
            .map(|a| backoff_ceiling(&s, a).as_millis() as u64)
            .collect();
        assert_eq!(c, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_ceiling(&s, 200).as_millis(), 1000);
        // The closed form agrees with summing every attempt.
        for burst in [0u32, 1, 2, 5, 9, 10, 11, 50, 300] {
            let summed: Duration = (0..burst).map(|a| backoff_ceiling(&s, a) / 2).sum();
            assert_eq!(fastest_burst(&s, burst), summed, "burst {burst}");
        }
    }

    #[test]
    fn jitter_stays_in_bounds_and_varies() {
        let s = spec();
        let mut rng = Rng::new(42);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let d = backoff_delay(&s, 2, &mut rng).as_millis() as u64;
            assert!((200..=400).contains(&d), "{d}");
            seen.insert(d);
        }
        assert!(seen.len() > 50, "jitter should spread: {}", seen.len());
    }

    #[test]
    fn zero_delay_is_zero() {
        let mut s = spec();
        s.delay = Duration::ZERO;
        s.max_delay = Duration::ZERO;
        let mut rng = Rng::new(1);
        assert_eq!(backoff_delay(&s, 5, &mut rng), Duration::ZERO);
    }

    #[test]
    fn window_limits_burst() {
        let s = spec();
        let t0 = Instant::now();
        let mut w = StartWindow::default();
        for i in 0..3 {
            assert!(w.allows(t0 + Duration::from_secs(i), &s));
            w.record(t0 + Duration::from_secs(i), &s);
        }
        assert!(!w.allows(t0 + Duration::from_secs(3), &s));
        // The first start leaves the window after `interval`.
        assert!(w.allows(t0 + Duration::from_secs(10), &s));
    }

    #[test]
    fn window_oldest_follows_its_first_start() {
        let s = spec();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut w = StartWindow::default();
        w.record(at(0), &s);
        w.record(at(4), &s);
        w.record(at(8), &s);
        assert_eq!(w.oldest, Some(at(0)));
        // Two leave at once; the third stays, and is the oldest now.
        assert!(w.allows(at(15), &s));
        assert_eq!((w.count(), w.oldest), (1, Some(at(8))));
        w.unrecord_last();
        assert_eq!((w.count(), w.oldest), (0, None));
        w.record(at(16), &s);
        assert_eq!(w.oldest, Some(at(16)));
        let back = StartWindow::from_ages_ms(at(20), &w.ages_ms(at(20)));
        assert_eq!(back, w);
        w.clear();
        assert_eq!((w.count(), w.oldest), (0, None));
    }
}
