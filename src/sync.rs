//! The sync facade: the one place in `src/` that chooses between the real
//! primitives (std, parking_lot) and loom's model-checked doubles.
//!
//! Every other module imports atomics, locks, condition variables, threads,
//! thread-locals, fences and the clock from here, so that a `--cfg loom` build
//! (or a `--cfg shuttle` one, for the randomized scheduler of the `shuttle`
//! crate) swaps all of them at once and nothing in the protocols can bypass
//! the model. Exactly one of the three is compiled: real
//! (`not(any(loom, shuttle))`), loom, or shuttle.
//!
//! Two fences matter to RCU and are named for their role rather than their
//! implementation:
//!
//! * [`reader_fence`] is what a reader executes on the outermost entry and exit
//!   of a read-side section. In a real build with `membarrier(2)` available it
//!   is only a compiler fence; without it, a full `SeqCst` fence.
//! * [`heavy_fence`] is what the grace-period side executes to pair with it:
//!   `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which forces a full barrier
//!   on every running thread of the process, or a plain `SeqCst` fence in
//!   fallback mode.
//!
//! Under loom both are `fence(SeqCst)`: loom cannot model membarrier, and the
//! pair of `SeqCst` fences gives exactly the store-buffering guarantee that the
//! asymmetric pair gives on hardware (DESIGN.md, "Under loom both sides are
//! modelled as `SeqCst` fences"). Under shuttle, too (shuttle runs every
//! atomic access sequentially consistently, so they are no-ops there).
//!
//! Mutants: under `cfg(loom)` and `cfg(shuttle)` only, [`mutant`] reports
//! whether the environment variable `RCU_LOOM_MUTANT` names a deliberately
//! broken variant of a protocol. Production builds compile every `mutant(..)`
//! check to `false`, so broken variants do not exist outside the model
//! checkers. `loom-tests/README.md` lists the mutants and which model catches
//! each; `shuttle-tests/README.md` says which the shuttle suite catches.

#[cfg(all(loom, shuttle))]
compile_error!("rcu_offload: build with at most one of `--cfg loom` and `--cfg shuttle`");

#[cfg(not(any(loom, shuttle)))]
mod imp {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize};
    pub(crate) use std::thread::JoinHandle;
    use std::time::Duration;

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

    /// A mutex with parking_lot's interface (no poisoning: a panic while
    /// holding one of our locks is a bug in this crate, since no user code
    /// runs under them, except `RcuCell::update`'s closure under the cell's
    /// own writer lock, which leaves the cell unchanged if it panics).
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

    /// Nanoseconds on the monotonic clock since the first call in the
    /// process.
    pub(crate) fn now_ns() -> u64 {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let epoch = *EPOCH.get_or_init(std::time::Instant::now);
        // u64 nanoseconds last 584 years.
        epoch.elapsed().as_nanos() as u64
    }

    /// Hint to the CPU that we are spinning.
    #[inline]
    pub(crate) fn spin_hint() {
        std::hint::spin_loop();
    }

    /// `thread_local!` with const initialisation in real builds.
    macro_rules! rcu_thread_local {
        ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
            std::thread_local! {
                $(#[$attr])* static $name: $t = const { $init };
            }
        };
    }
    pub(crate) use rcu_thread_local;
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize};
    pub(crate) use loom::thread::JoinHandle;
    use std::time::Duration;

    /// loom's mutex behind parking_lot's interface.
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);
    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Self {
            Self(loom::sync::Mutex::new(v))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap()
        }
        /// As parking_lot's: the guard if the lock was free, `None` if not.
        /// (loom issue #376: a `try_lock` whose operation is pending when
        /// another thread acquires the lock is modelled as blocking until
        /// that thread releases it, so the failure branch is explored only
        /// when the lock was already held; our one caller holds no other
        /// lock while it tries, so this cannot turn into a false deadlock.)
        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }
    }

    /// loom's condition variable behind parking_lot's interface.
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }
        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            // loom's wait consumes the guard; parking_lot's borrows it. Move
            // the guard out and back with a raw read/write pair. If `wait`
            // unwound in between, the caller would drop a guard that was
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
                let g = self.0.wait(g).unwrap();
                std::ptr::write(guard, g);
            }
            std::mem::forget(bomb);
        }
        /// loom has no time: a timed wait is an untimed one (spurious
        /// wake-ups aside). Every timed waiter must also be woken by a
        /// notification when what it waits for happens.
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

    loom::lazy_static! {
        /// Model time: it stands still except when a timer fires, which
        /// moves it to that timer's deadline ([`advance_model_time`]). So a
        /// "one tick later" condition becomes true exactly when some timer
        /// armed for it has fired, at whatever point of the execution loom
        /// chose to let it fire.
        ///
        /// A std atomic, deliberately not a loom one: loom runs one thread
        /// at a time and replays each execution from the start, so it reads
        /// deterministically, and the clock is not a protocol to check;
        /// tracking it would only multiply the executions. (It lives in a
        /// loom `lazy_static`, so it restarts at 0 in every execution.)
        static ref MODEL_NOW: std::sync::atomic::AtomicU64 =
            std::sync::atomic::AtomicU64::new(0);
    }

    /// Model time in nanoseconds; see `MODEL_NOW`.
    pub(crate) fn now_ns() -> u64 {
        MODEL_NOW.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A timer with deadline `to` fires: model time reaches it. Yield
    /// first: time passing lets every other thread run. Without it, loom
    /// explores schedules where a GP worker whose try-lock keeps failing
    /// (the enqueuer holding the bypass lock is never scheduled again) and
    /// a timer that fires at once wake each other for ever, a livelock that
    /// only timeless model timers could produce (loom then reports
    /// "maximum number of branches").
    pub(crate) fn advance_model_time(to: u64) {
        loom::thread::yield_now();
        MODEL_NOW.fetch_max(to, std::sync::atomic::Ordering::Relaxed);
    }

    /// In a model a spin loop must yield, or loom reports "maximum number of
    /// branches" instead of exploring the other threads.
    #[inline]
    pub(crate) fn spin_hint() {
        loom::thread::yield_now();
    }

    pub(crate) fn spawn_named<F>(_name: String, f: F) -> JoinHandle<()>
    where
        F: FnOnce() + Send + 'static,
    {
        loom::thread::spawn(f)
    }

    macro_rules! rcu_thread_local {
        ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
            loom::thread_local! {
                $(#[$attr])* static $name: $t = $init;
            }
        };
    }
    pub(crate) use rcu_thread_local;
}

#[cfg(shuttle)]
mod imp {
    pub(crate) use shuttle::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize,
    };
    pub(crate) use shuttle::thread::JoinHandle;
    use std::sync::{PoisonError, TryLockError};
    use std::time::Duration;

    /// shuttle's mutex behind parking_lot's interface, and like
    /// parking_lot's without poisoning: a guard dropped while its thread
    /// unwinds (say a failing test's main thread dropping the last handle)
    /// must not make the next `lock()` panic during that unwind, which
    /// would abort the test process instead of reporting the failure.
    pub(crate) struct Mutex<T>(shuttle::sync::Mutex<T>);
    pub(crate) type MutexGuard<'a, T> = shuttle::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Self {
            Self(shuttle::sync::Mutex::new(v))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }
        /// As parking_lot's: the guard if the lock was free, `None` if not
        /// (shuttle's `try_lock` is a scheduling point and fails only when
        /// the lock is held).
        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            match self.0.try_lock() {
                Ok(g) => Some(g),
                Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            }
        }
    }

    /// shuttle's condition variable behind parking_lot's interface.
    pub(crate) struct Condvar(shuttle::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(shuttle::sync::Condvar::new())
        }
        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            // shuttle's wait consumes the guard; parking_lot's borrows it.
            // Move the guard out and back with a raw read/write pair, as in
            // the loom facade. If `wait` unwound in between (shuttle may
            // unwind a blocked task when it tears an execution down), the
            // caller would drop a guard that was already moved out, so an
            // unwind aborts instead.
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
        /// shuttle has no time (its `wait_timeout` never times out): a
        /// timed wait is an untimed one. Every timed waiter must also be
        /// woken by a notification when what it waits for happens.
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

    shuttle::lazy_static! {
        /// Model time, as under loom: it stands still except when a timer
        /// fires, which moves it to that timer's deadline. shuttle drops
        /// lazy statics at the end of each execution, so every execution
        /// starts at time 0.
        static ref MODEL_NOW: shuttle::sync::atomic::AtomicU64 =
            shuttle::sync::atomic::AtomicU64::new(0);
    }

    /// Model time in nanoseconds; see `MODEL_NOW`.
    pub(crate) fn now_ns() -> u64 {
        MODEL_NOW.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A timer with deadline `to` fires: model time reaches it. Time
    /// passing lets the other threads run first: the timer thread yields,
    /// which under PCT drops it below every other thread. Otherwise PCT,
    /// which runs its highest-priority runnable threads for as long as they
    /// can run, could starve a thread that holds a lock (say an enqueuer
    /// holding a bypass lock) while a GP worker fails to try-lock it, defers
    /// a wake, and is woken by the timer firing at once, for ever: a
    /// livelock that the model's timeless timers would have made up.
    pub(crate) fn advance_model_time(to: u64) {
        shuttle::thread::yield_now();
        MODEL_NOW.fetch_max(to, std::sync::atomic::Ordering::Relaxed);
    }

    /// A spin loop must yield, or shuttle's step bound fails the test.
    #[inline]
    pub(crate) fn spin_hint() {
        shuttle::thread::yield_now();
    }

    pub(crate) fn spawn_named<F>(name: String, f: F) -> JoinHandle<()>
    where
        F: FnOnce() + Send + 'static,
    {
        // Named, so that a failure report says which worker failed.
        shuttle::thread::Builder::new()
            .name(name)
            .spawn(f)
            .expect("shuttle spawns never fail")
    }

    macro_rules! rcu_thread_local {
        ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
            shuttle::thread_local! {
                $(#[$attr])* static $name: $t = $init;
            }
        };
    }
    pub(crate) use rcu_thread_local;
}

pub(crate) use imp::*;

/// Atomic orderings and compiler fences are the same types in every world.
pub(crate) use std::sync::atomic::Ordering;

// ---------------------------------------------------------------------------
// Cells and parking: not used by the protocols today (they use locks and
// condition variables), kept here, unit-tested, so that any future use goes
// through the model checkers. The clock (`now_ns`) is per implementation
// above: real monotonic time, or model time that only timers advance.

/// An `UnsafeCell` with loom's closure-based interface, so that loom can
/// check every access for data races. (shuttle has no cell model: under
/// `cfg(shuttle)` this is the plain wrapper, as in real builds.)
#[cfg(not(loom))]
#[allow(dead_code)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
#[allow(dead_code)]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(v: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(v))
    }
    /// Read access through a raw pointer; the caller upholds aliasing.
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }
    /// Write access through a raw pointer; the caller upholds aliasing.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::cell::UnsafeCell;

// Thread parking: `park()` blocks the calling thread until its handle's
// `unpark()` (a token, so an early unpark is never lost).
#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::thread::{current as current_thread, park, Thread};
#[cfg(shuttle)]
#[allow(unused_imports)]
pub(crate) use shuttle::thread::{current as current_thread, park, Thread};
#[cfg(not(any(loom, shuttle)))]
#[allow(unused_imports)]
pub(crate) use std::thread::{current as current_thread, park, Thread};

/// A memory fence as the model checker understands it.
#[cfg(loom)]
pub(crate) use loom::sync::atomic::fence;
/// A memory fence as the model checker understands it.
#[cfg(shuttle)]
pub(crate) use shuttle::sync::atomic::fence;
/// A memory fence (std's outside the model checkers).
#[cfg(not(any(loom, shuttle)))]
pub(crate) use std::sync::atomic::fence;

/// The reader's half of the asymmetric fence pair; see the module docs.
///
/// `light` is the domain's choice made at construction: `true` when the grace
/// period side uses `membarrier(2)`, so the reader needs only a compiler fence.
#[inline(always)]
pub(crate) fn reader_fence(light: bool) {
    #[cfg(any(loom, shuttle))]
    {
        let _ = light;
        if !mutant("no_reader_fence") {
            fence(Ordering::SeqCst);
        }
    }
    #[cfg(not(any(loom, shuttle)))]
    {
        if light {
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            full_fence_cold();
        }
    }
}

/// The fallback readers' full fence, kept out of line so that the
/// membarrier fast path is straight-line code.
#[cfg(not(any(loom, shuttle)))]
#[cold]
#[inline(never)]
fn full_fence_cold() {
    std::sync::atomic::fence(Ordering::SeqCst);
}

/// The reader's outermost exit: fence, clear `ctr`, fence (so that the
/// following load of the domain's "GP waiting" flag pairs with the grace
/// period's heavy fence). One test of `light` for the three steps.
#[inline(always)]
pub(crate) fn reader_exit_store(light: bool, ctr: &AtomicUsize) {
    #[cfg(any(loom, shuttle))]
    {
        let _ = light;
        fence(Ordering::SeqCst);
        ctr.store(0, Ordering::Release);
        fence(Ordering::SeqCst);
    }
    #[cfg(not(any(loom, shuttle)))]
    {
        use std::sync::atomic::compiler_fence;
        if light {
            compiler_fence(Ordering::SeqCst);
            ctr.store(0, Ordering::Release);
            compiler_fence(Ordering::SeqCst);
        } else {
            reader_exit_store_cold(ctr);
        }
    }
}

/// [`reader_exit_store`] for readers without membarrier, out of line.
#[cfg(not(any(loom, shuttle)))]
#[cold]
#[inline(never)]
fn reader_exit_store_cold(ctr: &AtomicUsize) {
    std::sync::atomic::fence(Ordering::SeqCst);
    ctr.store(0, Ordering::Release);
    std::sync::atomic::fence(Ordering::SeqCst);
}

/// The grace-period side's half of the asymmetric fence pair.
#[inline]
pub(crate) fn heavy_fence(membarrier: bool) {
    #[cfg(any(loom, shuttle))]
    {
        let _ = membarrier;
        fence(Ordering::SeqCst);
    }
    #[cfg(not(any(loom, shuttle)))]
    {
        if membarrier {
            crate::membarrier::private_expedited();
        } else {
            std::sync::atomic::fence(Ordering::SeqCst);
        }
    }
}

/// Is the deliberately broken variant `name` selected? Always `false` outside
/// loom and shuttle builds. Under either, `RCU_LOOM_MUTANT` holds one mutant
/// name.
#[cfg(any(loom, shuttle))]
pub(crate) fn mutant(name: &str) -> bool {
    static SELECTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SELECTED
        .get_or_init(|| std::env::var("RCU_LOOM_MUTANT").ok())
        .as_deref()
        == Some(name)
}

/// Is the deliberately broken variant `name` selected? Always `false` outside
/// loom and shuttle builds.
#[cfg(not(any(loom, shuttle)))]
#[inline(always)]
pub(crate) const fn mutant(_name: &str) -> bool {
    false
}

#[cfg(all(test, not(any(loom, shuttle))))]
mod tests {
    use super::*;

    #[test]
    fn unsafe_cell_reads_what_was_written() {
        let c = UnsafeCell::new(1u32);
        // SAFETY: single-threaded test; no other reference to the contents.
        c.with_mut(|p| unsafe { *p += 41 });
        // SAFETY: as above.
        assert_eq!(c.with(|p| unsafe { *p }), 42);
    }

    #[test]
    fn unpark_before_park_is_not_lost() {
        current_thread().unpark();
        park(); // returns at once: the token was set
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = now_ns();
        assert!(b >= a + 2_000_000, "{a} then {b}");
    }

    #[test]
    fn fences_and_mutants_are_inert_outside_loom() {
        assert!(!mutant("no_reader_fence"));
        reader_fence(true);
        reader_fence(false);
        let ctr = AtomicUsize::new(7);
        reader_exit_store(false, &ctr);
        assert_eq!(ctr.load(Ordering::Relaxed), 0);
        heavy_fence(false);
    }
}
