//! Support code for the `rcu-offload` Criterion benchmarks.
//!
//! The benchmarks compare `rcu-offload` with `crossbeam-epoch` and, when the
//! build script found liburcu (Debian's `liburcu-dev`), with liburcu's
//! `memb` flavour. The liburcu side is driven through a small C shim
//! (`shim/urcu_shim.c`) whose timed loops run entirely in C, so no FFI call
//! cost is charged to liburcu; this crate wraps that shim in a safe API
//! ([`liburcu`], present only under `cfg(have_liburcu)`).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod flood;

/// The notice printed by the benchmarks when the liburcu peer is missing.
pub const LIBURCU_MISSING_NOTICE: &str = "liburcu-dev not found: skipping liburcu peer";

/// Whether the liburcu peer was compiled in (the build script found
/// `urcu/urcu-memb.h` and `liburcu-memb` and built the shim).
pub fn liburcu_available() -> bool {
    cfg!(have_liburcu)
}

/// Returns [`liburcu_available()`]; when the peer is missing, also prints
/// [`LIBURCU_MISSING_NOTICE`] to stderr (once per process).
pub fn check_liburcu() -> bool {
    static NOTICE: std::sync::Once = std::sync::Once::new();
    let available = liburcu_available();
    if !available {
        NOTICE.call_once(|| eprintln!("{LIBURCU_MISSING_NOTICE}"));
    }
    available
}

/// The start of the line on which the callbacks bench prints its
/// [`AllocatorReport`] (read by `benches/report.py`).
pub const ALLOCATOR_LINE_PREFIX: &str = "callbacks: allocator: ";

/// Which allocator served this process's Rust and C allocations.
///
/// With the `mimalloc` cargo feature, the callbacks bench sets
/// `mimalloc::MiMalloc` as its `#[global_allocator]`, and libmimalloc-sys's
/// `override` feature makes mimalloc's `malloc`/`free` the process's own
/// (the executable defines them, so the C shim's calls and liburcu's, from
/// its shared library, bind to them rather than to glibc's). [`allocator`]
/// checks both at run time instead of trusting the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorReport {
    /// Whether a Rust `Box` came from mimalloc's heap.
    pub rust_mimalloc: bool,
    /// Whether a `malloc(64)` made by the C shim came from mimalloc's heap
    /// (`None` when the shim is not built, i.e. without liburcu).
    pub c_mimalloc: Option<bool>,
}

impl AllocatorReport {
    /// A short name for tables and JSON: `glibc`, `mimalloc`, or
    /// `mimalloc+glibc` (Rust on mimalloc, C still on glibc's malloc).
    pub fn name(&self) -> &'static str {
        match (self.rust_mimalloc, self.c_mimalloc) {
            (false, _) => "glibc",
            (true, Some(false)) => "mimalloc+glibc",
            (true, _) => "mimalloc",
        }
    }
}

impl std::fmt::Display for AllocatorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let which = |m: bool| if m { "mimalloc" } else { "glibc malloc" };
        write!(f, "{}: Rust {}", self.name(), which(self.rust_mimalloc))?;
        match self.c_mimalloc {
            Some(c) => write!(f, ", C shim and liburcu {}", which(c)),
            None => write!(f, " (no C shim built)"),
        }
    }
}

/// Print the line saying which allocator serves the process (read by
/// `benches/report.py`), unless criterion was only asked to `--list` the
/// benches.
pub fn print_allocator_line() {
    if !std::env::args().any(|a| a == "--list") {
        println!("{ALLOCATOR_LINE_PREFIX}{}", allocator());
    }
}

/// Checks where a fresh Rust `Box` and a C `malloc(64)` (made by the shim)
/// come from. Without the `mimalloc` feature nothing in the process links
/// mimalloc, so both are glibc's (Rust's `System` allocator is `malloc`).
pub fn allocator() -> AllocatorReport {
    #[cfg(feature = "mimalloc")]
    {
        let in_mimalloc = |p: *const std::ffi::c_void| {
            // SAFETY: mi_is_in_heap_region only compares the address with
            // the regions mimalloc reserved; it never dereferences it.
            unsafe { libmimalloc_sys::mi_is_in_heap_region(p) }
        };
        let b = Box::new([0_u64; 8]);
        let rust_mimalloc = in_mimalloc(std::ptr::from_ref(&*b).cast());
        drop(b);
        #[cfg(have_liburcu)]
        let c_mimalloc = Some(liburcu::with_c_malloc64(in_mimalloc));
        #[cfg(not(have_liburcu))]
        let c_mimalloc = None;
        AllocatorReport {
            rust_mimalloc,
            c_mimalloc,
        }
    }
    #[cfg(not(feature = "mimalloc"))]
    AllocatorReport {
        rust_mimalloc: false,
        c_mimalloc: cfg!(have_liburcu).then_some(false),
    }
}

/// What a benchmarked callback does when it runs (`benches/callbacks.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackKind {
    /// Bumps a shared atomic counter (relaxed `fetch_add`).
    Counter,
    /// Frees a 64-byte heap object (`Box<[u64; 8]>`; `malloc(64)` in C).
    Free64,
}

/// The median of `values` (the upper one of the two middle values for an
/// even count; 0 for an empty slice). Sorts `values` in place.
pub fn median(values: &mut [u64]) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    values[values.len() / 2]
}

/// Safe wrappers around the liburcu-memb benchmark shim.
#[cfg(have_liburcu)]
pub mod liburcu {
    use std::fmt;
    use std::marker::PhantomData;
    use std::time::Duration;

    use crate::CallbackKind;

    mod ffi {
        extern "C" {
            pub fn shim_memb_register_thread() -> i32;
            pub fn shim_memb_unregister_thread();
            pub fn shim_memb_has_sys_membarrier() -> i32;
            pub fn shim_memb_read_pair_loop(iters: u64) -> u64;
            pub fn shim_memb_nested_pair_loop(iters: u64) -> u64;
            pub fn shim_memb_synchronize_loop(iters: u64) -> u64;
            pub fn shim_memb_reader_start() -> i32;
            pub fn shim_memb_reader_stop() -> u64;
            pub fn shim_memb_call_rcu_set_percpu(enable: i32) -> i32;
            pub fn shim_memb_call_rcu_run(
                kind: i32,
                producers: u32,
                total: u64,
                end_to_end_ns: *mut u64,
                mean_loop_ns: *mut u64,
            ) -> i32;
            pub fn shim_memb_call_rcu_latency(
                n: u64,
                interval_ns: u64,
                latencies_ns: *mut u64,
            ) -> i32;
            pub fn shim_flood_alloc(objs: *mut *mut c_void, n: u64) -> i32;
            pub fn shim_flood_body_loop(objs: *mut *mut c_void, n: u64, steps: u64);
            pub fn shim_memb_flood(
                producers: u32,
                duration_ns: u64,
                steps: u64,
                stop: *mut i32,
                queued: *mut u64,
                produce_ns: *mut u64,
                total_ns: *mut u64,
            ) -> i32;
        }

        pub use std::ffi::c_void;
    }

    /// Whether liburcu-memb uses `sys_membarrier` on this machine. If it does
    /// not (the kernel refused the syscall), liburcu falls back to full
    /// memory barriers on its read side, which makes its read-side figures
    /// unrepresentative.
    pub fn has_sys_membarrier() -> bool {
        // SAFETY: the shim function takes no arguments, only runs liburcu's
        // idempotent initialisation and reads an int set by it.
        unsafe { ffi::shim_memb_has_sys_membarrier() != 0 }
    }

    /// A registration of the calling thread as a liburcu-memb reader.
    ///
    /// The read-side loops are methods of this type, so they can only run on
    /// a registered thread. It is neither `Send` nor `Sync`: it must be
    /// dropped (unregistered) on the thread that created it. Registrations
    /// nest (the shim counts them per thread), and a thread that exits while
    /// still registered (e.g. after `mem::forget`) is unregistered by the
    /// shim at thread exit.
    pub struct RegisteredThread {
        _not_send: PhantomData<*const ()>,
    }

    /// An error returned by the shim (an `errno` value).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ShimError(pub i32);

    impl fmt::Display for ShimError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
        }
    }

    impl std::error::Error for ShimError {}

    impl RegisteredThread {
        /// Registers the calling thread with liburcu-memb.
        pub fn new() -> Result<Self, ShimError> {
            // SAFETY: registration is per calling thread and reference
            // counted by the shim, so calling it any number of times is fine;
            // the matching unregister happens in `Drop` on this same thread
            // (the type is !Send), or at thread exit if the value is leaked.
            let rc = unsafe { ffi::shim_memb_register_thread() };
            if rc == 0 {
                Ok(Self {
                    _not_send: PhantomData,
                })
            } else {
                Err(ShimError(rc))
            }
        }

        /// Runs `iters` outermost `urcu_memb_read_lock()` +
        /// `urcu_memb_read_unlock()` pairs in a C loop and returns the time
        /// the loop took (measured in C).
        pub fn read_pair_loop(&self, iters: u64) -> Duration {
            // SAFETY: `self` proves the calling thread is registered; the
            // shim holds no read-side critical section across calls, so every
            // pair in the loop is an outermost one and all are balanced.
            Duration::from_nanos(unsafe { ffi::shim_memb_read_pair_loop(iters) })
        }

        /// Runs `iters` nested lock + unlock pairs in a C loop, with an outer
        /// read-side critical section held around the (timed) loop; returns
        /// the time the loop took.
        pub fn nested_pair_loop(&self, iters: u64) -> Duration {
            // SAFETY: as in `read_pair_loop`; the outer section is opened and
            // closed inside the same shim call.
            Duration::from_nanos(unsafe { ffi::shim_memb_nested_pair_loop(iters) })
        }
    }

    impl Drop for RegisteredThread {
        fn drop(&mut self) {
            // SAFETY: we are on the thread that registered (the type is
            // !Send) and it holds no liburcu read-side critical section
            // (the shim never leaves one open across calls).
            unsafe { ffi::shim_memb_unregister_thread() }
        }
    }

    /// Runs `iters` back-to-back `urcu_memb_synchronize_rcu()` calls in a C
    /// loop and returns the time the loop took (measured in C).
    pub fn synchronize_loop(iters: u64) -> Duration {
        // SAFETY: synchronize_rcu may be called from any thread that is not
        // inside a liburcu read-side critical section; the shim never leaves
        // one open across calls, so no thread can be inside one here.
        Duration::from_nanos(unsafe { ffi::shim_memb_synchronize_loop(iters) })
    }

    /// The shim's background reader thread: while it is alive, a registered
    /// pthread loops short liburcu-memb read-side critical sections (lock;
    /// load a shared pointer and its target; unlock).
    ///
    /// At most one exists at a time; dropping it stops and joins the thread.
    pub struct BackgroundReader {
        stopped: bool,
    }

    impl BackgroundReader {
        /// Starts the reader thread. Fails with `EBUSY` if one is running.
        pub fn start() -> Result<Self, ShimError> {
            // SAFETY: the shim serialises start/stop with a mutex and
            // refuses to start a second reader; the reader only touches
            // shim-owned statics.
            let rc = unsafe { ffi::shim_memb_reader_start() };
            if rc == 0 {
                Ok(Self { stopped: false })
            } else {
                Err(ShimError(rc))
            }
        }

        /// Stops and joins the reader thread; returns how many read-side
        /// critical sections it executed.
        pub fn stop(mut self) -> u64 {
            self.stopped = true;
            // SAFETY: this value owns the running reader (at most one exists
            // and it is stopped only here or in `Drop`); the shim serialises
            // the join with a mutex.
            unsafe { ffi::shim_memb_reader_stop() }
        }
    }

    impl Drop for BackgroundReader {
        fn drop(&mut self) {
            if !self.stopped {
                // SAFETY: as in `stop`.
                unsafe {
                    ffi::shim_memb_reader_stop();
                }
            }
        }
    }

    /// Which liburcu `call_rcu` worker threads receive callbacks.
    ///
    /// This is process-wide liburcu state (see [`set_call_rcu_workers`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum CallRcuWorkers {
        /// The default `call_rcu` thread, one for the whole process.
        Default,
        /// One `call_rcu` thread per CPU, pinned to it
        /// (`urcu_memb_create_all_cpu_call_rcu_data`); `call_rcu()` hands a
        /// callback to the thread of the caller's current CPU.
        PerCpu,
    }

    /// Switches liburcu's `call_rcu()` between the default worker and
    /// per-CPU workers (creating them, or tearing them down with
    /// `urcu_memb_free_all_cpu_call_rcu_data`, which moves callbacks they
    /// still hold to the default worker). Serialised with the `call_rcu_*`
    /// runs below.
    pub fn set_call_rcu_workers(workers: CallRcuWorkers) -> Result<(), ShimError> {
        let enable = i32::from(workers == CallRcuWorkers::PerCpu);
        // SAFETY: the shim serialises this with its call_rcu runs under a
        // mutex and only calls liburcu's public setup/teardown functions;
        // it is not called inside a read-side critical section (the shim
        // never leaves one open across calls).
        let rc = unsafe { ffi::shim_memb_call_rcu_set_percpu(enable) };
        if rc == 0 {
            Ok(())
        } else {
            Err(ShimError(rc))
        }
    }

    /// The timings of one [`call_rcu_run`].
    #[derive(Debug, Clone, Copy)]
    pub struct CallRcuRun {
        /// From the start of queueing until `rcu_barrier()` returned.
        pub end_to_end: Duration,
        /// The mean over producers of each producer's own `call_rcu()` loop.
        pub mean_producer_loop: Duration,
    }

    /// The largest producer count the shim accepts.
    pub const MAX_PRODUCERS: usize = 64;

    /// Queues `total` callbacks of `kind` with `urcu_memb_call_rcu()` from
    /// `producers` threads (the calling thread and `producers - 1` helper
    /// pthreads, equal shares), then waits with `urcu_memb_barrier()`. Both
    /// the queueing loops and the timing run in C; each producer allocates
    /// its callbacks' memory before the start.
    ///
    /// For [`CallbackKind::Counter`] the shim checks that exactly `total`
    /// callbacks ran (`EIO` otherwise). `EINVAL` if `producers` is 0 or more
    /// than [`MAX_PRODUCERS`].
    pub fn call_rcu_run(
        kind: CallbackKind,
        producers: usize,
        total: u64,
    ) -> Result<CallRcuRun, ShimError> {
        let producers = u32::try_from(producers).map_err(|_| ShimError(EINVAL))?;
        let kind = match kind {
            CallbackKind::Counter => 0,
            CallbackKind::Free64 => 1,
        };
        let (mut e2e, mut mean) = (0_u64, 0_u64);
        // SAFETY: the out-pointers are valid for writes for the duration of
        // the call; the shim validates the other arguments, owns every
        // callback's memory (freed after its barrier) and registers the
        // threads that call call_rcu. The calling thread is not inside a
        // read-side critical section (the shim never leaves one open).
        let rc =
            unsafe { ffi::shim_memb_call_rcu_run(kind, producers, total, &mut e2e, &mut mean) };
        if rc == 0 {
            Ok(CallRcuRun {
                end_to_end: Duration::from_nanos(e2e),
                mean_producer_loop: Duration::from_nanos(mean),
            })
        } else {
            Err(ShimError(rc))
        }
    }

    /// Light load: queues `n` callbacks with `urcu_memb_call_rcu()` from the
    /// calling thread, one every `interval` (the C loop sleeps until
    /// absolute deadlines), then `urcu_memb_barrier()`. Returns, for each
    /// callback, the time from just before its `call_rcu()` until it ran.
    pub fn call_rcu_latency(n: usize, interval: Duration) -> Result<Vec<Duration>, ShimError> {
        let mut out = vec![0_u64; n];
        let interval_ns = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        // SAFETY: `out` has room for exactly `n` values, which the shim
        // writes; its nodes are its own and freed after its barrier. The
        // calling thread is not inside a read-side critical section.
        let rc =
            unsafe { ffi::shim_memb_call_rcu_latency(n as u64, interval_ns, out.as_mut_ptr()) };
        if rc == 0 {
            Ok(out.into_iter().map(Duration::from_nanos).collect())
        } else {
            Err(ShimError(rc))
        }
    }

    /// `malloc(64)` objects of the C flood callback, for running its body
    /// without liburcu (the "own limit" of the flood benchmark). Dropping
    /// the value frees the objects it still holds.
    pub struct CObjs(Vec<*mut ffi::c_void>);

    // SAFETY: the pointers are malloc'd objects owned exclusively by this
    // value (nobody else holds them), and malloc memory may be freed on any
    // thread.
    unsafe impl Send for CObjs {}

    impl CObjs {
        /// `n` fresh `malloc(64)` objects, allocated by the calling thread.
        pub fn alloc(n: usize) -> Result<Self, ShimError> {
            let mut v = vec![std::ptr::null_mut(); n];
            // SAFETY: `v` has room for exactly `n` pointers, which the shim
            // fills (or frees again before returning an error).
            let rc = unsafe { ffi::shim_flood_alloc(v.as_mut_ptr(), n as u64) };
            if rc == 0 {
                Ok(Self(v))
            } else {
                Err(ShimError(rc))
            }
        }

        /// Runs the C flood callback's body (spin `steps` steps, `free()`)
        /// on every object, on the calling thread.
        pub fn run_body(mut self, steps: u64) {
            let mut v = std::mem::take(&mut self.0);
            // SAFETY: every pointer came from shim_flood_alloc and is owned
            // by us; the shim frees each exactly once, and `v` (now emptied
            // of ownership) is not used again except to drop the Vec.
            unsafe { ffi::shim_flood_body_loop(v.as_mut_ptr(), v.len() as u64, steps) };
            v.clear();
        }
    }

    impl Drop for CObjs {
        fn drop(&mut self) {
            // SAFETY: as in `run_body`; zero steps only frees.
            unsafe { ffi::shim_flood_body_loop(self.0.as_mut_ptr(), self.0.len() as u64, 0) };
        }
    }

    /// Calls `f` with a `malloc(64)` object allocated by the C shim (freed
    /// afterwards): lets [`crate::allocator`] see which `malloc` the shim's
    /// calls reach.
    pub fn with_c_malloc64<R>(f: impl FnOnce(*const ffi::c_void) -> R) -> R {
        let objs = CObjs::alloc(1).expect("malloc(64)");
        f(objs.0[0])
    }

    /// The result of one [`flood`].
    #[derive(Debug, Clone, Copy)]
    pub struct FloodRun {
        /// Callbacks queued (every one has run when [`flood`] returns).
        pub queued: u64,
        /// From the start gate until the producers were joined.
        pub produce: Duration,
        /// From the start gate until `urcu_memb_barrier()` returned.
        pub total: Duration,
    }

    /// Flood: `producers` pthreads loop `malloc(64)` + `urcu_memb_call_rcu()`
    /// of a callback that spins `steps` steps and frees the object, from the
    /// start gate until `stop` is set (by the shim `duration` after the
    /// gate, or earlier by another thread of the caller's); then
    /// `urcu_memb_barrier()`. The call_rcu workers are whatever
    /// [`set_call_rcu_workers`] chose last.
    pub fn flood(
        producers: usize,
        duration: Duration,
        steps: u64,
        stop: &std::sync::atomic::AtomicI32,
    ) -> Result<FloodRun, ShimError> {
        let producers = u32::try_from(producers).map_err(|_| ShimError(EINVAL))?;
        let duration_ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let (mut queued, mut produce, mut total) = (0_u64, 0_u64, 0_u64);
        // SAFETY: `stop` is an AtomicI32 (same layout as int) that outlives
        // the call, and the shim accesses it only with __atomic operations;
        // the out-pointers are valid for writes. The shim owns every object
        // (freed by its callback, all of which ran before it returns) and
        // registers its producer threads. The caller is not inside a
        // read-side critical section (the shim never leaves one open).
        let rc = unsafe {
            ffi::shim_memb_flood(
                producers,
                duration_ns,
                steps,
                stop.as_ptr(),
                &mut queued,
                &mut produce,
                &mut total,
            )
        };
        if rc == 0 {
            Ok(FloodRun {
                queued,
                produce: Duration::from_nanos(produce),
                total: Duration::from_nanos(total),
            })
        } else {
            Err(ShimError(rc))
        }
    }

    /// `EINVAL` (22 on Linux, the only platform the shim is built on).
    const EINVAL: i32 = 22;
}
