//! The sync facade: the one place that chooses between the real primitives
//! (std's) and the model checkers' doubles (loom, shuttle).
//!
//! Every other module imports atomics, locks, condition variables, threads,
//! thread-locals, fences, the clock and the environment's defaults from
//! here, so that a `--cfg loom` or `--cfg shuttle` build swaps all of them at
//! once and no protocol can step around the model. Exactly one backend is
//! compiled:
//!
//! * `real.rs`: std atomics and futex-based locks (behind the interface
//!   the crate was first written against, parking_lot's: no poisoning,
//!   borrowed guards; fork-safe, and rebuildable in a forked child), the
//!   monotonic clock, `membarrier(2)` (`membarrier.rs`), thread ids;
//! * `model.rs`: loom's or shuttle's primitives (the two share one file;
//!   they differ only in the crate they come from), model time that only
//!   timers advance, and the model-only defaults.
//!
//! # The asymmetric fence pair
//!
//! Two fences matter to RCU and are named for their role:
//!
//! * [`reader_fence`] is what a reader executes on the outermost entry of a
//!   read-side section, and [`reader_exit_store`] wraps the store that ends
//!   one. With `membarrier(2)` available they are compiler fences only;
//!   without it, full `SeqCst` fences ([`ReaderFences`]).
//! * [`heavy_fence`] is what the grace-period side executes to pair with
//!   them: `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which forces a
//!   full barrier on every running thread of the process, or a plain
//!   `SeqCst` fence in the fallback.
//!
//! Under the model checkers both halves are `SeqCst` fences: neither can
//! model membarrier, and a pair of `SeqCst` fences gives exactly the
//! store-buffering guarantee the asymmetric pair gives on hardware
//! (docs/design.md, "The read side").

#[cfg(all(loom, shuttle))]
compile_error!("rcu_offload: build with at most one of `--cfg loom` and `--cfg shuttle`");

#[cfg(not(any(loom, shuttle)))]
mod membarrier;
#[cfg(not(any(loom, shuttle)))]
mod real;
mod shared;
#[cfg(not(any(loom, shuttle)))]
use real as backend;

#[cfg(any(loom, shuttle))]
pub(crate) mod model;
#[cfg(any(loom, shuttle))]
use model as backend;

pub(crate) use backend::{
    current_cpu, default_shards, fence, first_shard_hint, heavy_fence, membarrier_available,
    now_ns, os_thread_id, os_thread_state, rcu_thread_local, reader_exit_store, reader_fence,
    spawn_named, spin_hint, timer_fired_at, AtomicBool, AtomicPtr, AtomicU64, AtomicU8,
    AtomicUsize, Condvar, JoinHandle, Mutex, MutexGuard, UnsafeCell, DEFAULT_GP_SPIN_LIMIT,
    STAGING_BY_DEFAULT, STALL_TIMEOUT_BY_DEFAULT,
};

pub(crate) use shared::{OsThreadState, ReaderFences, TimerClock};

/// Atomic orderings are the same type in every backend.
pub(crate) use std::sync::atomic::Ordering;

/// Items compiled only outside the model checkers (the process-wide
/// [`global`](crate::global) domain, which a model cannot share between
/// executions).
macro_rules! cfg_real {
    ($($item:item)*) => {
        $(
            #[cfg(not(any(loom, shuttle)))]
            $item
        )*
    };
}
pub(crate) use cfg_real;

/// Anything held for its `Drop`: a lock guard kept by the fork handlers
/// between `fork()`'s prepare and parent/child halves (domain/fork.rs).
pub(crate) trait Held {}
impl<T: ?Sized> Held for T {}

/// Lock guards taken with `try_lock` for a fork, released when dropped,
/// in the reverse order of their taking (a lock taken later may guard the
/// life of what an earlier one protects: a feed's drain lock, say, lives
/// in a feed that the feed list keeps alive only while its lock is held).
#[derive(Default)]
pub(crate) struct HeldLocks<'a>(Vec<Box<dyn Held + 'a>>);

impl<'a> HeldLocks<'a> {
    /// Keep `guard` until the whole set is dropped.
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    pub(crate) fn push<G: 'a>(&mut self, guard: G) {
        self.0.push(Box::new(guard));
    }
}

impl Drop for HeldLocks<'_> {
    fn drop(&mut self) {
        while let Some(g) = self.0.pop() {
            drop(g);
        }
    }
}

/// Try-lock `m` into `held`: `false` (and nothing added) if it is taken.
#[cfg_attr(any(loom, shuttle), allow(dead_code))]
pub(crate) fn try_hold<'a, T: 'a>(m: &'a Mutex<T>, held: &mut HeldLocks<'a>) -> bool {
    if crate::mutants::mutant!(ForkPrepareBlocking) {
        // Broken variant: wait for each lock while holding the earlier ones.
        held.push(m.lock());
        return true;
    }
    match m.try_lock() {
        Some(g) => {
            held.push(g);
            true
        }
        None => false,
    }
}
