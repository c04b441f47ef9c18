//! An ordered set of small integers (positions in the start order, unit
//! ids) that never allocates once sized: the incremental settle's dirty
//! sets, inserted into and drained on every event.
//!
//! Owns: a hierarchical bitset — one bit per member, and above it one bit
//! per non-empty word of the level below, up to a single word — so that
//! insert, remove and "the next member after p" / "the last member before
//! p" cost one word per level (3 levels at 10,000 units), in the same order
//! a `BTreeSet<u32>` would answer. Must never: allocate per operation (a
//! `BTreeSet` allocated and freed a node per event: `remove_entry` was
//! 6.6 % of a 10,000-unit probe mix's instructions), or reorder members.

/// See the module comment.
#[derive(Debug, Clone)]
pub(super) struct PosSet {
    /// `levels[0]`: bit `p` set iff `p` is a member; `levels[k + 1]`: bit
    /// `w` set iff word `w` of `levels[k]` is non-zero. The last level is
    /// one word.
    levels: Vec<Vec<u64>>,
    /// Members are below this (the capacity; `insert` grows it).
    cap: u32,
}

impl Default for PosSet {
    fn default() -> Self {
        PosSet::with_capacity(0)
    }
}

fn words(n: usize) -> usize {
    n.div_ceil(64).max(1)
}

impl PosSet {
    pub(super) fn with_capacity(cap: u32) -> PosSet {
        let mut levels = Vec::new();
        let mut n = cap as usize;
        loop {
            let w = words(n);
            levels.push(vec![0u64; w]);
            if w == 1 {
                break;
            }
            n = w;
        }
        PosSet { levels, cap }
    }

    /// Room for members below `cap`, keeping the members (rare: the unit
    /// set changed).
    fn grow(&mut self, cap: u32) {
        let members: Vec<u32> = self.iter().collect();
        *self = PosSet::with_capacity(cap);
        for p in members {
            self.insert(p);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.levels.last().is_none_or(|top| top[0] == 0)
    }

    pub(super) fn contains(&self, p: u32) -> bool {
        self.levels[0]
            .get((p >> 6) as usize)
            .is_some_and(|w| w & (1u64 << (p & 63)) != 0)
    }

    /// True when `p` was not a member.
    pub(super) fn insert(&mut self, p: u32) -> bool {
        if p >= self.cap {
            self.grow((p + 1).max(self.cap.saturating_mul(2)));
        }
        let mut p = p as usize;
        for (k, level) in self.levels.iter_mut().enumerate() {
            let w = &mut level[p >> 6];
            let was = *w;
            *w |= 1u64 << (p & 63);
            if k == 0 && was == *w {
                return false;
            }
            if was != 0 {
                // The levels above already say this word is non-empty.
                break;
            }
            p >>= 6;
        }
        true
    }

    /// True when `p` was a member.
    pub(super) fn remove(&mut self, p: u32) -> bool {
        if !self.contains(p) {
            return false;
        }
        let mut p = p as usize;
        for level in self.levels.iter_mut() {
            let w = &mut level[p >> 6];
            *w &= !(1u64 << (p & 63));
            if *w != 0 {
                break;
            }
            p >>= 6;
        }
        true
    }

    pub(super) fn clear(&mut self) {
        for level in &mut self.levels {
            level.fill(0);
        }
    }

    /// Every position below `n` (`n` at most the capacity after growing).
    pub(super) fn insert_all_below(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        if n > self.cap {
            self.grow(n);
        }
        // Level by level: the members of each are 0..n, with n the count
        // of non-empty words below.
        let mut n = n as usize;
        for level in &mut self.levels {
            let full = n / 64;
            level[..full].fill(!0);
            if !n.is_multiple_of(64) {
                level[full] |= (1u64 << (n % 64)) - 1;
            }
            n = n.div_ceil(64);
        }
    }

    /// The smallest member at or after `p`.
    pub(super) fn first_from(&self, p: u32) -> Option<u32> {
        // Each pass ends by asking an empty set: one word, not a walk.
        if self.is_empty() {
            return None;
        }
        self.next_in(0, p as usize).map(|p| p as u32)
    }

    /// The smallest member after `p`, or the first when `p` is None.
    pub(super) fn first_after(&self, p: Option<u32>) -> Option<u32> {
        match p {
            None => self.first_from(0),
            Some(p) => p.checked_add(1).and_then(|p| self.first_from(p)),
        }
    }

    /// The largest member below `p`.
    pub(super) fn last_before(&self, p: u32) -> Option<u32> {
        if self.is_empty() {
            return None;
        }
        self.prev_in(0, p as usize).map(|p| p as u32)
    }

    fn next_in(&self, k: usize, p: usize) -> Option<usize> {
        let level = &self.levels[k];
        let w = p >> 6;
        let word = *level.get(w)?;
        let m = word & (!0u64 << (p & 63));
        if m != 0 {
            return Some((w << 6) | m.trailing_zeros() as usize);
        }
        // The next non-empty word of this level, from the level above.
        let nw = if k + 1 < self.levels.len() {
            self.next_in(k + 1, w + 1)?
        } else {
            (w + 1..level.len()).find(|&i| level[i] != 0)?
        };
        Some((nw << 6) | level[nw].trailing_zeros() as usize)
    }

    fn prev_in(&self, k: usize, p: usize) -> Option<usize> {
        if p == 0 {
            return None;
        }
        let level = &self.levels[k];
        let q = p - 1;
        let (w, mask) = if (q >> 6) < level.len() {
            (q >> 6, !0u64 >> (63 - (q & 63)))
        } else {
            (level.len() - 1, !0u64)
        };
        let m = level[w] & mask;
        if m != 0 {
            return Some((w << 6) | (63 - m.leading_zeros() as usize));
        }
        let pw = if k + 1 < self.levels.len() {
            self.prev_in(k + 1, w)?
        } else {
            (0..w).rev().find(|&i| level[i] != 0)?
        };
        Some((pw << 6) | (63 - level[pw].leading_zeros() as usize))
    }

    /// The members in ascending order.
    pub(super) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let mut at = Some(0u32);
        std::iter::from_fn(move || {
            let p = self.first_from(at?)?;
            at = p.checked_add(1);
            Some(p)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::PosSet;
    use std::collections::BTreeSet;

    /// Every operation answers as a `BTreeSet<u32>` does, over random
    /// sequences at sizes around the level boundaries.
    #[test]
    fn agrees_with_a_btreeset() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for cap in [1u32, 63, 64, 65, 200, 4096, 4097, 10_000] {
            let mut s = PosSet::with_capacity(cap / 2);
            let mut b = BTreeSet::new();
            for _ in 0..20_000 {
                let p = rnd(cap as u64) as u32;
                match rnd(10) {
                    0..=3 => assert_eq!(s.insert(p), b.insert(p)),
                    4..=6 => assert_eq!(s.remove(p), b.remove(&p)),
                    7 => assert_eq!(
                        s.first_from(p),
                        b.range(p..).next().copied(),
                        "first_from({p})"
                    ),
                    8 => assert_eq!(
                        s.last_before(p),
                        b.range(..p).next_back().copied(),
                        "last_before({p})"
                    ),
                    _ => {
                        if rnd(500) == 0 {
                            s.clear();
                            b.clear();
                        } else if rnd(500) == 0 {
                            s.insert_all_below(p);
                            b.extend(0..p);
                        }
                    }
                }
                assert_eq!(s.is_empty(), b.is_empty());
                assert_eq!(s.contains(p), b.contains(&p));
            }
            assert_eq!(
                s.iter().collect::<Vec<_>>(),
                b.iter().copied().collect::<Vec<_>>()
            );
            assert_eq!(s.last_before(u32::MAX), b.last().copied());
            assert_eq!(s.first_after(None), b.first().copied());
        }
    }
}
