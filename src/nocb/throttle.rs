//! The memory bound: high and low water marks on a domain's pending
//! callbacks. The kernel has no such bound for offloaded CPUs beyond
//! `qhimark`'s forced wakes; liburcu has none at all, and a producer that
//! outpaces slow callbacks grows its queue without limit.
//!
//! # Policy
//!
//! The *backlog* is the sum of the shard lengths (segmented lists, bypass
//! lists, and callbacks being invoked). When a `call()` finds it above the
//! high-water mark, the caller first **expedites**: it flushes every bypass
//! list (lazy ones included) into the segmented lists and wakes every GP
//! worker at once. Then:
//!
//! * an ordinary thread **blocks** until the backlog falls below the
//!   low-water mark, or reaches it (counted in [`Stats::throttled`]);
//! * a thread inside a read-side section of the domain, or running a
//!   callback (of any domain), must not block (it would wait for itself, or
//!   stall the very workers that drain the backlog), so it queues its
//!   callback and proceeds (counted in [`Stats::throttle_expedited`]).
//!
//! To keep the check off the enqueue's fast path, a caller sums the shards
//! only when its own shard holds more than its share (`high / shards`) of the
//! high-water mark: if the backlog is over the mark, some shard is over its
//! share, and its producers are the ones who block. The backlog therefore
//! stays below about twice the high-water mark, plus one callback per
//! producing thread, however long a flood lasts.
//!
//! # Invariant
//!
//! **A blocked caller is woken once the backlog is at or below low water.** A
//! waiter registers in `waiters` and then reads the shard lengths; a CB
//! worker lowers a shard length and then reads `waiters`; both with a
//! `SeqCst` fence between, so at least one sees the other, and the worker
//! notifies under the throttle lock that the waiter holds until it sleeps.
//! Checked by the loom model `throttle_blocks_until_low_water`
//! (loom-tests/tests/bypass.rs; mutant `throttle_no_fence`).
//!
//! [`Stats::throttled`]: crate::Stats::throttled
//! [`Stats::throttle_expedited`]: crate::Stats::throttle_expedited

use crate::mutants::mutant;
use crate::sync::{fence, try_hold, AtomicU64, AtomicUsize, Condvar, HeldLocks, Mutex, Ordering};

/// The domain's throttle state.
pub(crate) struct Throttle {
    /// `high != usize::MAX`: throttling is on (the enqueue path reads no
    /// shard length otherwise).
    pub(crate) enabled: bool,
    pub(crate) high: usize,
    pub(crate) low: usize,
    /// `high / shards`, at least 1: the per-shard share that triggers a sum.
    pub(crate) share: usize,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
    /// Calls that blocked.
    pub(crate) throttled: AtomicU64,
    /// Calls above high water that could not block.
    pub(crate) expedited: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(high: usize, low: usize, shards: usize) -> Throttle {
        Throttle {
            enabled: high != usize::MAX,
            high,
            low,
            share: (high / shards).max(1),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
            throttled: AtomicU64::new(0),
            expedited: AtomicU64::new(0),
        }
    }

    /// Hold the waiters' lock for a fork, if it is free.
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    pub(crate) fn hold_for_fork<'a>(&'a self, held: &mut HeldLocks<'a>) -> bool {
        try_hold(&self.lock, held)
    }

    /// In the child of a fork: the throttled callers were the parent's.
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) fn after_fork_child(&self) {
        self.waiters.store(0, Ordering::Relaxed);
    }

    /// Block until `backlog()` is at or below low water. The caller has
    /// expedited.
    /// `expedite` runs again whenever the wait ends (a notification, or
    /// `recheck` passing) without the backlog at low water: what keeps the
    /// backlog moving is the caller's business, not the notifier's.
    pub(crate) fn wait(
        &self,
        backlog: impl Fn() -> usize,
        expedite: impl Fn(),
        recheck: std::time::Duration,
    ) {
        let mut g = self.lock.lock();
        self.waiters.fetch_add(1, Ordering::Relaxed);
        if !mutant!(ThrottleNoFence) {
            // Pairs with the fence in `released`.
            fence(Ordering::SeqCst);
        }
        self.throttled.fetch_add(1, Ordering::Relaxed);
        while backlog() > self.low {
            self.cv.wait_for(&mut g, recheck);
            // Whatever woke us, make sure the backlog keeps moving.
            if backlog() > self.low {
                drop(g);
                expedite();
                g = self.lock.lock();
            }
        }
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// A CB worker lowered a shard length: wake the waiters if the backlog
    /// is now at or below low water.
    #[inline]
    pub(crate) fn released(&self, backlog: impl Fn() -> usize) {
        if !mutant!(ThrottleNoFence) {
            // Pairs with the fence in `wait`.
            fence(Ordering::SeqCst);
        }
        if self.waiters.load(Ordering::Relaxed) != 0 {
            self.wake_waiters(backlog);
        }
    }

    #[cold]
    fn wake_waiters(&self, backlog: impl Fn() -> usize) {
        let g = self.lock.lock();
        if backlog() <= self.low {
            drop(g);
            self.cv.notify_all();
        }
    }
}
