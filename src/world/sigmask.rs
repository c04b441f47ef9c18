//! Holding signals for a stretch of code.
//!
//! Owns: blocking signals in the calling thread and restoring the previous
//! mask when the guard drops (nesting restores correctly). Used by the
//! driver (every signal held while a helper thread is created, so it
//! inherits a full mask) and by the spawner (every signal held across
//! clone). SIGCHLD needs no holding: it is blocked for good and read from
//! a signalfd (world::signals). Must never: change signal dispositions, or
//! outlive the thread that made it (the mask is per thread).

/// Blocks signals in this thread until dropped (then restores the mask).
pub struct SigHold(libc::sigset_t);

impl SigHold {
    fn with(fill: impl FnOnce(&mut libc::sigset_t)) -> SigHold {
        // SAFETY: plain libc calls on local sigsets.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            fill(&mut set);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            SigHold(old)
        }
    }

    pub fn all() -> SigHold {
        // SAFETY: fills a valid set.
        SigHold::with(|s| unsafe {
            libc::sigfillset(s);
        })
    }
}

impl Drop for SigHold {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `with`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}
