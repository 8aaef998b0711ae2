//! The real backend: std atomics and threads, parking_lot locks, the
//! monotonic clock and `membarrier(2)`.

use std::time::Duration;

use super::membarrier;
use super::shared::{ReaderFences, TimerClock};

pub(crate) use std::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize,
};
pub(crate) use std::thread::JoinHandle;

/// Default `Builder::gp_spin_limit`: spin a little before sleeping.
pub(crate) const DEFAULT_GP_SPIN_LIMIT: u32 = 1000;

/// Default shard count: one per available CPU, at most `max`.
pub(crate) fn default_shards(max: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(max)
}

/// The CPU the calling thread runs on, if the system says (`sched_getcpu`,
/// which glibc 2.35 and later answer from the thread's rseq area without a
/// system call). The answer may be stale as soon as it is given: callers
/// use it as a locality hint only. Under Miri, which cannot call it, the
/// answer is "unknown" (callers fall back to a per-thread choice).
#[inline]
pub(crate) fn current_cpu() -> Option<usize> {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        // SAFETY: `sched_getcpu` takes no arguments and touches no memory
        // of ours; it returns -1 (with errno set) when it cannot tell.
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).ok()
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    {
        None
    }
}

/// Real domains stage `call()`s in per-thread feeds unless told not to.
pub(crate) const STAGING_BY_DEFAULT: bool = true;

/// A new thread's shard hint: round robin over the threads of the process.
#[cold]
pub(crate) fn first_shard_hint() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Can readers rely on `membarrier(2)`? Asked once per process.
pub(crate) fn membarrier_available() -> bool {
    membarrier::available()
}

/// Spawn a named worker thread, panicking with a clear message if the OS
/// refuses to create it.
pub(crate) fn spawn_named<F>(name: String, f: F) -> JoinHandle<()>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .unwrap_or_else(|e| panic!("rcu_offload: cannot spawn worker thread {name:?}: {e}"))
}

/// A mutex with parking_lot's interface. It does not poison: no user code
/// runs under the crate's locks, except `RcuCell::update`'s closure under
/// the cell's own writer lock, which leaves the cell unchanged if it panics.
pub(crate) type Mutex<T> = parking_lot::Mutex<T>;
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

/// A condition variable paired with [`Mutex`].
#[derive(Default)]
pub(crate) struct Condvar(parking_lot::Condvar);

impl Condvar {
    pub(crate) fn new() -> Self {
        Self(parking_lot::Condvar::new())
    }
    pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        self.0.wait(guard);
    }
    /// Wait until notified or until `timeout` has passed (spurious
    /// wake-ups possible, as with `wait`).
    pub(crate) fn wait_for<T>(&self, guard: &mut MutexGuard<'_, T>, timeout: Duration) {
        let _ = self.0.wait_for(guard, timeout);
    }
    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
    pub(crate) fn notify_one(&self) {
        self.0.notify_one();
    }
}

/// Nanoseconds on the monotonic clock since the first call in the process.
pub(crate) fn now_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    // u64 nanoseconds last 584 years.
    epoch.elapsed().as_nanos() as u64
}

/// A timer armed for `deadline` fired: real time has passed it already
/// (the model backend's clock moves here instead).
#[inline]
pub(crate) fn timer_fired_at(_deadline: u64) {}

impl TimerClock {
    /// The clock's verdict on `deadline`.
    pub(crate) fn check(deadline: u64) -> TimerClock {
        let now = now_ns();
        if deadline <= now {
            TimerClock::Due { now }
        } else {
            TimerClock::Wait(Duration::from_nanos(deadline - now))
        }
    }
}

/// Hint to the CPU that we are spinning.
#[inline]
pub(crate) fn spin_hint() {
    std::hint::spin_loop();
}

/// A cell for data whose exclusive access a protocol guarantees, with loom's
/// closure interface so that the models can check that guarantee.
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

impl<T> UnsafeCell<T> {
    pub(crate) fn new(v: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(v))
    }
    /// Run `f` on a pointer to the contents; the caller's protocol makes
    /// the access exclusive.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// `thread_local!` with const initialisation.
macro_rules! rcu_thread_local {
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
        std::thread_local! {
            $(#[$attr])* static $name: $t = const { $init };
        }
    };
}
pub(crate) use rcu_thread_local;

/// The reader's half of the fence pair, on outermost entry.
#[inline(always)]
pub(crate) fn reader_fence(fences: ReaderFences) {
    match fences {
        ReaderFences::Light => {
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst)
        }
        ReaderFences::Full => full_fence_cold(),
    }
}

/// The fallback readers' full fence, out of line so that the membarrier
/// path is straight-line code.
#[cold]
#[inline(never)]
fn full_fence_cold() {
    fence(std::sync::atomic::Ordering::SeqCst);
}

/// The reader's outermost exit: fence, clear `ctr`, fence (so that the
/// following load of the domain's "GP waiting" flag pairs with the grace
/// period's heavy fence).
#[inline(always)]
pub(crate) fn reader_exit_store(fences: ReaderFences, ctr: &AtomicUsize) {
    use std::sync::atomic::{compiler_fence, Ordering};
    match fences {
        ReaderFences::Light => {
            compiler_fence(Ordering::SeqCst);
            ctr.store(0, Ordering::Release);
            compiler_fence(Ordering::SeqCst);
        }
        ReaderFences::Full => reader_exit_store_cold(ctr),
    }
}

/// [`reader_exit_store`] for readers without membarrier, out of line.
#[cold]
#[inline(never)]
fn reader_exit_store_cold(ctr: &AtomicUsize) {
    use std::sync::atomic::Ordering;
    fence(Ordering::SeqCst);
    ctr.store(0, Ordering::Release);
    fence(Ordering::SeqCst);
}

/// The grace-period side's half of the fence pair.
#[inline]
pub(crate) fn heavy_fence(fences: ReaderFences) {
    match fences {
        ReaderFences::Light => membarrier::private_expedited(),
        ReaderFences::Full => fence(std::sync::atomic::Ordering::SeqCst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn clock_is_monotonic() {
        let a = now_ns();
        std::thread::sleep(Duration::from_millis(2));
        let b = now_ns();
        assert!(b >= a + 2_000_000, "{a} then {b}");
    }

    #[test]
    fn fallback_fences_clear_the_word() {
        reader_fence(ReaderFences::Full);
        let ctr = AtomicUsize::new(7);
        reader_exit_store(ReaderFences::Full, &ctr);
        assert_eq!(ctr.load(Ordering::Relaxed), 0);
        heavy_fence(ReaderFences::Full);
    }

    #[test]
    fn timer_clock_is_due_at_its_deadline() {
        assert!(matches!(TimerClock::check(0), TimerClock::Due { .. }));
        assert!(matches!(TimerClock::check(u64::MAX), TimerClock::Wait(_)));
    }
}
