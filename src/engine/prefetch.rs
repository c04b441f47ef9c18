//! Cache hints: "this unit's record is about to be read".
//!
//! Owns: `prefetch`, which asks the CPU to start loading the cache lines
//! of a value while the engine goes on with other work. Why: with ten
//! thousand units an event's unit is rarely in cache, and each of its
//! records (the `Unit`, its timer slots, the records of the neighbours a
//! state change marks) used to be missed one after the other as the code
//! reached it; hinted as soon as the unit is known (from the run id, or
//! when it is marked), the misses overlap with each other and with the
//! work before the first read.
//!
//! Must never: change what the engine computes (a hint reads nothing the
//! program can see, cannot fault, and is a no-op where unsupported).

/// Hint the first `lines` cache lines of `*r` into the cache.
#[inline(always)]
pub fn prefetch<T>(r: &T, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = (r as *const T).cast::<i8>();
        let n = lines.min(std::mem::size_of::<T>().div_ceil(64)).max(1);
        for k in 0..n {
            // SAFETY: PREFETCHT0 is a hint: it does not dereference in
            // any way the program can observe and never faults, even for
            // an address outside any mapping (here it is inside `*r`,
            // `wrapping_add` keeps the arithmetic defined). SSE is part of
            // the x86_64 baseline.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    p.wrapping_add(k * 64),
                );
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (r, lines);
    }
}
