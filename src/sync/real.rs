//! The real backend: std atomics, threads and locks (futex-based on Linux,
//! for fork safety: see [`Mutex`]), the monotonic clock and `membarrier(2)`.

use std::sync::{PoisonError, TryLockError};
use std::time::Duration;

use super::membarrier;
use super::shared::{OsThreadState, ReaderFences, TimerClock};

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

/// The operating system's id of the calling thread (Linux: `gettid`).
pub(crate) fn os_thread_id() -> Option<u64> {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        // SAFETY: `gettid` takes no arguments and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        u64::try_from(tid).ok()
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    {
        None
    }
}

/// What Linux says of thread `tid` of this process: the state letter of
/// `/proc/self/task/TID/stat` (after the parenthesized name), or `Gone` if
/// there is no such thread. Only stall reports ask, off every hot path.
pub(crate) fn os_thread_state(tid: u64) -> OsThreadState {
    let path = format!("/proc/self/task/{tid}/stat");
    match std::fs::read_to_string(&path) {
        Ok(stat) => match stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
        {
            Some('R') => OsThreadState::Running,
            Some('Z' | 'X') => OsThreadState::Gone,
            Some(_) => OsThreadState::Sleeping,
            None => OsThreadState::Unknown,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => OsThreadState::Gone,
        Err(_) => OsThreadState::Unknown,
    }
}

/// Real domains warn of stalls after 10 s unless told otherwise.
pub(crate) const STALL_TIMEOUT_BY_DEFAULT: Duration = Duration::from_secs(10);

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

/// A mutex with parking_lot's interface over `std::sync::Mutex` (a futex on
/// Linux). It does not poison: no user code runs under the crate's locks,
/// except `RcuCell::update`'s closure under the cell's own writer lock,
/// which leaves the cell unchanged if it panics.
///
/// Why std's lock and not parking_lot's: fork safety. parking_lot parks
/// its waiters in a process-wide user-space table; after `fork()` the child
/// inherits entries of threads that do not exist in it, and an unlock can
/// "wake" a dead entry while a live waiter stays parked: a hang. std's
/// futex locks keep their waiters in the kernel, so the child inherits
/// none. A lock held at the fork by a thread the child lacks stays held,
/// though: [`Mutex::reset_after_fork`] rebuilds it, hence the `UnsafeCell`.
pub(crate) struct Mutex<T>(std::cell::UnsafeCell<std::sync::Mutex<T>>);
pub(crate) type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;

// SAFETY: as `std::sync::Mutex<T>`, which is `Send` when `T: Send`: moving
// the mutex moves its data, and nothing in it is tied to a thread.
unsafe impl<T: Send> Send for Mutex<T> {}
// SAFETY: as `std::sync::Mutex<T>`, which is `Sync` when `T: Send`: shared
// references only reach the inner mutex through `&`, which serialises
// access to the data; the one write through the `UnsafeCell`,
// `reset_after_fork`, requires that nobody else uses the mutex.
unsafe impl<T: Send> Sync for Mutex<T> {}

impl<T> Mutex<T> {
    pub(crate) fn new(v: T) -> Self {
        Self(std::cell::UnsafeCell::new(std::sync::Mutex::new(v)))
    }

    #[inline]
    fn inner(&self) -> &std::sync::Mutex<T> {
        // SAFETY: only `reset_after_fork` writes the cell, and its contract
        // rules out any other use of the mutex (so any reference made here)
        // while it does.
        unsafe { &*self.0.get() }
    }

    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.inner().lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// As parking_lot's: the guard if the lock was free, `None` if not.
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        match self.inner().try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Rebuild the lock in place, unlocked, keeping its data: for a forked
    /// child, where the lock may be held by a thread that does not exist.
    ///
    /// # Safety
    ///
    /// Only in the child of a `fork()`, before it starts any thread, with no
    /// guard of this mutex alive on the calling thread and nobody else using
    /// it (the child has one thread); the data must be consistent (no thread
    /// was inside its critical section at the fork, or the caller repairs
    /// it).
    pub(crate) unsafe fn reset_after_fork(&self) {
        let cell = self.0.get();
        // SAFETY: by the contract nobody else uses the mutex and no guard
        // or reference to the inner mutex is alive, so this thread has
        // exclusive access to the cell. The value read is consumed by
        // `into_inner` (which neither locks nor blocks, whatever state the
        // lock word was left in by the fork) and the cell is written back
        // before it can be observed: `into_inner` only fails by poison,
        // which is turned into the data, and the data's move cannot unwind.
        // The data is consistent by the contract.
        unsafe {
            let old = std::ptr::read(cell);
            let data = old.into_inner().unwrap_or_else(PoisonError::into_inner);
            std::ptr::write(cell, std::sync::Mutex::new(data));
        }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

/// A condition variable paired with [`Mutex`]: `std::sync::Condvar` behind
/// parking_lot's interface, which, like parking_lot's, makes no system call
/// to notify nobody (std's always does: a futex wake).
///
/// It counts its waiters, under the waiters' mutex, and a notification
/// with none is skipped. That loses no wake-up because every notifier in
/// the crate takes the same mutex after changing what the waiter waits
/// for (under the mutex, or before taking it) and notifies after that:
/// either the notifier's critical section comes first, and the waiter,
/// checking under the mutex, does not sleep; or the waiter's comes first,
/// its count included, and the notifier, ordered after it by the mutex,
/// sees the count. A notifier that changed the state without ever taking
/// the mutex would not be covered; there is none.
#[derive(Default)]
pub(crate) struct Condvar {
    cv: std::sync::Condvar,
    /// Threads inside `wait`/`wait_for`; changed only under the mutex.
    waiters: AtomicUsize,
}

impl Condvar {
    pub(crate) fn new() -> Self {
        Self::default()
    }
    pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        self.waiting(guard, |cv, g| {
            cv.wait(g).unwrap_or_else(PoisonError::into_inner)
        });
    }
    /// Wait until notified or until `timeout` has passed (spurious
    /// wake-ups possible, as with `wait`).
    pub(crate) fn wait_for<T>(&self, guard: &mut MutexGuard<'_, T>, timeout: Duration) {
        self.waiting(guard, |cv, g| {
            cv.wait_timeout(g, timeout)
                .unwrap_or_else(PoisonError::into_inner)
                .0
        });
    }
    /// Run std's `wait`, which consumes the guard, on a borrowed one
    /// (parking_lot's interface), counted among the waiters.
    fn waiting<'a, T>(
        &self,
        guard: &mut MutexGuard<'a, T>,
        wait: impl FnOnce(&std::sync::Condvar, MutexGuard<'a, T>) -> MutexGuard<'a, T>,
    ) {
        // Under the mutex (`guard`): see the type's docs.
        self.waiters
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Move the guard out and back with a raw read/write pair. If `wait`
        // unwound in between, the caller would drop a guard that was
        // already moved out, so an unwind aborts instead.
        let bomb = AbortOnUnwind;
        // SAFETY: `guard` is valid for reads and writes. The value read is
        // consumed exactly once, by `wait`, whose returned guard (of the
        // same mutex) is written back before anyone can observe `*guard`;
        // if `wait` unwinds instead, `bomb` aborts the process before the
        // moved-out guard could be dropped a second time.
        unsafe {
            let g = std::ptr::read(guard);
            let g = wait(&self.cv, g);
            std::ptr::write(guard, g);
        }
        std::mem::forget(bomb);
        // Under the mutex again.
        self.waiters
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
    pub(crate) fn notify_all(&self) {
        if self.waiters.load(std::sync::atomic::Ordering::Relaxed) != 0 {
            self.cv.notify_all();
        }
    }
    pub(crate) fn notify_one(&self) {
        if self.waiters.load(std::sync::atomic::Ordering::Relaxed) != 0 {
            self.cv.notify_one();
        }
    }
}

/// Aborts the process if dropped: armed around a guard's move out and back,
/// and forgotten once it is back.
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        std::process::abort();
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
