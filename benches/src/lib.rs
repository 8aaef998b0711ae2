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

/// Safe wrappers around the liburcu-memb benchmark shim.
#[cfg(have_liburcu)]
pub mod liburcu {
    use std::fmt;
    use std::marker::PhantomData;
    use std::time::Duration;

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
        }
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
}
