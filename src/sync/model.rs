//! The model backend, for loom (`--cfg loom`) and shuttle (`--cfg shuttle`)
//! alike: both crates mirror std's module paths, so one file serves both
//! through the `rt` alias. Locks and condition variables get
//! parking_lot's interface (no poisoning), there is no membarrier (both
//! fence halves are `SeqCst` fences), and time stands still except when a
//! timer fires.

use std::sync::{PoisonError, TryLockError};
use std::time::Duration;

#[cfg(loom)]
pub(crate) use ::loom as rt;
#[cfg(shuttle)]
pub(crate) use ::shuttle as rt;

use super::shared::{ReaderFences, TimerClock};
use crate::mutants::mutant;

pub(crate) use rt::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize};
pub(crate) use rt::thread::JoinHandle;

/// Go straight to the sleeping path of a grace period: it is the one with a
/// wake-up protocol to check, and spinning only multiplies states.
pub(crate) const DEFAULT_GP_SPIN_LIMIT: u32 = 0;

/// One shard unless a model asks for more: every shard is a thread or two.
pub(crate) fn default_shards(_max: usize) -> usize {
    1
}

/// A new thread's shard hint: 0, deterministic in every execution; models
/// pick shards explicitly (`rcu_offload::model::set_shard`).
pub(crate) fn first_shard_hint() -> usize {
    0
}

/// Models have no CPUs: every thread takes its per-thread shard, which a
/// model picks (`rcu_offload::model::set_shard`), so a model can move a
/// thread between shards as a migration would.
pub(crate) fn current_cpu() -> Option<usize> {
    None
}

/// Models have no operating-system threads to name.
pub(crate) fn os_thread_id() -> Option<u64> {
    None
}

/// Never asked: model threads have no operating-system id.
pub(crate) fn os_thread_state(_tid: u64) -> super::shared::OsThreadState {
    super::shared::OsThreadState::Unknown
}

/// Models warn of no stall unless they ask: model time moves only when a
/// timer fires.
pub(crate) const STALL_TIMEOUT_BY_DEFAULT: Duration = Duration::ZERO;

/// Models of the direct enqueue path outnumber those of the feeds: a model
/// asks for feeds (`ModelBuilder::stage_in_feeds`).
pub(crate) const STAGING_BY_DEFAULT: bool = false;

/// Data whose exclusive access a protocol guarantees: loom checks it.
#[cfg(loom)]
pub(crate) use ::loom::cell::UnsafeCell;

/// Data whose exclusive access a protocol guarantees (shuttle does not
/// check it; loom does).
#[cfg(shuttle)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(shuttle)]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(v: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(v))
    }
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// The models run with light reader fences; both halves are `SeqCst`
/// fences here anyway.
pub(crate) fn membarrier_available() -> bool {
    true
}

/// Spawn a worker thread, named so that a failure report says which.
pub(crate) fn spawn_named<F>(name: String, f: F) -> JoinHandle<()>
where
    F: FnOnce() + Send + 'static,
{
    rt::thread::Builder::new()
        .name(name)
        .spawn(f)
        .expect("model checkers' spawns never fail")
}

/// The model's mutex behind parking_lot's interface, and like parking_lot's
/// without poisoning: a guard dropped while its thread unwinds (a failing
/// model's main thread dropping the last handle) must not make the next
/// `lock()` panic during that unwind, which would abort the test process
/// instead of reporting the failure.
pub(crate) struct Mutex<T>(rt::sync::Mutex<T>);
pub(crate) type MutexGuard<'a, T> = rt::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(v: T) -> Self {
        Self(rt::sync::Mutex::new(v))
    }
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
    /// As parking_lot's: the guard if the lock was free, `None` if not.
    /// (loom issue #376: a `try_lock` whose operation is pending when
    /// another thread acquires the lock is modelled as blocking until that
    /// thread releases it, so the failure branch is explored only when the
    /// lock was already held; the one caller holds no other lock while it
    /// tries, so this cannot turn into a false deadlock.)
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        match self.0.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

/// The model's condition variable behind parking_lot's interface.
pub(crate) struct Condvar(rt::sync::Condvar);

impl Condvar {
    pub(crate) fn new() -> Self {
        Self(rt::sync::Condvar::new())
    }
    pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        // The model's wait consumes the guard; parking_lot's borrows it.
        // Move the guard out and back with a raw read/write pair. If `wait`
        // unwound in between (shuttle may unwind a blocked task when it
        // tears an execution down), the caller would drop a guard that was
        // already moved out, so an unwind aborts instead.
        struct AbortOnUnwind;
        impl Drop for AbortOnUnwind {
            fn drop(&mut self) {
                std::process::abort();
            }
        }
        let bomb = AbortOnUnwind;
        // SAFETY: `guard` is valid for reads and writes. The value read is
        // consumed exactly once, by `wait`, whose returned guard (of the
        // same mutex) is written back before anyone can observe `*guard`;
        // if `wait` unwinds instead, `bomb` aborts the process before the
        // moved-out guard could be dropped a second time.
        unsafe {
            let g = std::ptr::read(guard);
            let g = self.0.wait(g).unwrap_or_else(PoisonError::into_inner);
            std::ptr::write(guard, g);
        }
        std::mem::forget(bomb);
    }
    /// No time: a timed wait is an untimed one (spurious wake-ups aside).
    /// Every timed waiter must also be woken by a notification when what it
    /// waits for happens.
    pub(crate) fn wait_for<T>(&self, guard: &mut MutexGuard<'_, T>, _timeout: Duration) {
        self.wait(guard);
    }
    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
    pub(crate) fn notify_one(&self) {
        self.0.notify_one();
    }
}

/// The word behind model time. Under loom a std atomic, deliberately not a
/// loom one: loom runs one thread at a time and replays each execution, so
/// it reads deterministically, and the clock is not a protocol to check;
/// tracking it would only multiply the executions. Under shuttle a shuttle
/// atomic, whose every access is a point where shuttle may switch threads:
/// the schedules the shuttle suite explores around clock reads.
#[cfg(loom)]
type ClockWord = std::sync::atomic::AtomicU64;
#[cfg(shuttle)]
type ClockWord = shuttle::sync::atomic::AtomicU64;

rt::lazy_static! {
    /// Model time: it stands still except when a timer fires for real
    /// (live, and under the timer discipline, for something still to do),
    /// which moves it to that timer's deadline ([`timer_fired_at`]). So "one
    /// tick later" becomes true exactly when some timer armed for it has
    /// fired, at whatever point of the execution the checker let it fire. (A
    /// model `lazy_static` restarts at 0 in every execution.)
    static ref MODEL_NOW: ClockWord = ClockWord::new(0);
}

/// Model time in nanoseconds; see `MODEL_NOW`.
pub(crate) fn now_ns() -> u64 {
    MODEL_NOW.load(std::sync::atomic::Ordering::Relaxed)
}

/// A timer armed for `deadline` fired and performs its wake: model time
/// reaches the deadline. A stale firing (the timer was cancelled or moved),
/// or one the timer discipline idles, moves no time, so that a path may
/// bound a delay by the deadline it armed.
pub(crate) fn timer_fired_at(deadline: u64) {
    MODEL_NOW.fetch_max(deadline, std::sync::atomic::Ordering::Relaxed);
}

impl TimerClock {
    /// An armed timer may fire at any point after it was armed: now, which
    /// is whatever point of the execution the checker picked. Only the
    /// timers due at that deadline fire in this pass; a later one waits for
    /// a pass of its own. Time passing lets every other thread run first,
    /// so the timer thread yields (under shuttle's PCT that drops it below
    /// every other thread). Without it, the checkers explore schedules where
    /// a GP worker whose try-lock keeps failing (the enqueuer holding the
    /// bypass lock is never scheduled again) and a timer that fires at once
    /// wake each other for ever: a livelock only timeless model timers could
    /// produce.
    pub(crate) fn check(deadline: u64) -> TimerClock {
        rt::thread::yield_now();
        TimerClock::Due { now: deadline }
    }
}

/// A spin loop must yield, or the checker reports a livelock ("maximum
/// number of branches", or shuttle's step bound) instead of exploring the
/// other threads.
#[inline]
pub(crate) fn spin_hint() {
    rt::thread::yield_now();
}

macro_rules! rcu_thread_local {
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
        $crate::sync::model::rt::thread_local! {
            $(#[$attr])* static $name: $t = $init;
        }
    };
}
pub(crate) use rcu_thread_local;

/// The reader's half of the fence pair: a `SeqCst` fence (mutant
/// `no_reader_fence` leaves it out).
#[inline(always)]
pub(crate) fn reader_fence(_fences: ReaderFences) {
    if !mutant!(NoReaderFence) {
        fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// The reader's outermost exit: fence, clear `ctr`, fence.
#[inline(always)]
pub(crate) fn reader_exit_store(_fences: ReaderFences, ctr: &AtomicUsize) {
    use std::sync::atomic::Ordering;
    fence(Ordering::SeqCst);
    ctr.store(0, Ordering::Release);
    fence(Ordering::SeqCst);
}

/// The grace-period side's half of the fence pair: a `SeqCst` fence.
#[inline]
pub(crate) fn heavy_fence(_fences: ReaderFences) {
    fence(std::sync::atomic::Ordering::SeqCst);
}
