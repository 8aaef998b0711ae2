//! The public layer: [`Rcu`] handles, their [`Builder`], polled-grace-period
//! cookies and the process-wide [`global`] domain.
//!
//! This module is a thin shell over the private core (`reader.rs`, `gp.rs`):
//! it owns the domain's lifetime and turns misuse into clear panics or
//! [`ConfigError`]s. It keeps one invariant of its own: the domain's worker
//! threads hold the core but never a handle, so dropping the last [`Rcu`]
//! handle is what stops and joins them (checked by the loom model
//! `domain_drop_joins_engine` in loom-tests/tests/grace_period.rs).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::callback::Slot;
use crate::gp::GpState;
use crate::nocb::{
    default_stride, in_any_callback, in_callback_of, Config as NocbConfig, Nocb, Stats,
};
use crate::reader::{ReadGuard, ReadState};
use crate::sync::{spawn_named, AtomicUsize, Ordering};

/// Shared state of one domain, held by handles and by its worker threads.
pub(crate) struct Core {
    pub(crate) reader: ReadState,
    pub(crate) gp: GpState,
    pub(crate) nocb: Nocb,
    /// Live [`Rcu`] handles (workers do not count).
    handles: AtomicUsize,
    thread_name_prefix: String,
}

impl Core {
    pub(crate) fn thread_name_prefix(&self) -> &str {
        &self.thread_name_prefix
    }

    /// Make sure grace period `target` runs without anyone blocking on it:
    /// the engine thread (started here if needed) runs it, and tells the GP
    /// workers when it is done.
    pub(crate) fn request_gp(self: &Arc<Core>, target: u64) {
        if self.gp.is_done(target) {
            return;
        }
        let core = Arc::clone(self);
        let name = format!("{}rcu_gp", self.thread_name_prefix);
        self.gp.request(target, move || {
            spawn_named(name, move || {
                core.gp
                    .engine_loop(&core.reader, || core.nocb.gp_completed(&core.gp))
            })
        });
    }

    /// Stop everything: run pending callbacks, then stop the callback
    /// workers, then the engine.
    fn shutdown(&self) {
        self.nocb.shutdown(self);
        self.gp.shutdown();
    }
}

/// A handle to one RCU domain.
///
/// A domain tracks its own readers and runs its own grace periods; several
/// domains may exist at once and never wait for each other's readers. Handles
/// are cheap to clone and are `Send + Sync`; the domain lives until the last
/// handle is dropped, which stops and joins its worker threads.
///
/// # Which thread runs what
///
/// * [`read`](Rcu::read), [`snapshot`](Rcu::snapshot), [`poll`](Rcu::poll)
///   run entirely on the caller's thread and never wait for a grace period
///   (a thread's first `read` of a domain briefly takes the registry lock).
/// * [`synchronize`](Rcu::synchronize) and
///   [`cond_synchronize`](Rcu::cond_synchronize) run the grace period on the
///   caller's thread, or wait for a concurrent caller's grace period that
///   covers them; they block until then.
/// * [`start_poll`](Rcu::start_poll) never waits for a grace period: it hands
///   the request to the domain's grace-period engine thread
///   (`{prefix}rcu_gp`), started on first use, under a short internal lock.
/// * [`call`](Rcu::call), [`call_lazy`](Rcu::call_lazy) and
///   [`retire`](Rcu::retire) never wait for a grace period: they queue on
///   the calling thread's shard (one short lock) and may wake the shard's
///   grace-period worker (`{prefix}rcuog/L`, one per group of shards), or
///   leave that wake to the domain's timer thread (`{prefix}rcu_timer`). The
///   callback itself runs on the shard's callback worker (`{prefix}rcuo/N`)
///   after a grace period that the engine thread runs. Only above the
///   memory bound ([`Builder::high_water`]) does an ordinary thread's `call`
///   block, until the callback workers have caught up.
/// * [`barrier`](Rcu::barrier) blocks the caller until the callback workers
///   have run every earlier callback.
///
/// # Limits
///
/// * Dropping the last handle runs every pending callback (including those
///   they queue), then joins the callback workers and the engine thread; it
///   panics only if one of those threads panicked, which would be a bug in
///   this crate (callback panics are caught). If the last handle is dropped
///   inside one of the domain's own callbacks, a short-lived
///   `{prefix}rcu_reap` thread does this instead, since a worker cannot join
///   itself.
/// * A guard leaked with [`std::mem::forget`] keeps its section open for ever:
///   every later grace period of the domain waits for ever, and so do
///   callbacks, `barrier()`, and dropping the last handle.
/// * `fork()`: the child has none of the parent's worker threads, so a domain
///   that ever queued a callback is unusable in the child (its callbacks
///   never run; `barrier()` and dropping the last handle hang), and a shard
///   lock held at the fork deadlocks `call()`. The child also inherits the
///   reader records of every parent thread;
///   if one of them was inside a section at the fork, the child's grace
///   periods never complete. Fork only from a process whose other threads are
///   not reading, or `exec` right after.
///
/// # Example
///
/// ```
/// use rcu_offload::Rcu;
/// use std::sync::atomic::{AtomicPtr, Ordering};
///
/// let rcu = Rcu::new();
/// let shared = AtomicPtr::new(Box::into_raw(Box::new(1u64)));
///
/// // Reader: the pointee stays valid while the guard lives.
/// {
///     let _g = rcu.read();
///     // SAFETY (example): freed only after a grace period, below.
///     let v = unsafe { *shared.load(Ordering::Acquire) };
///     assert_eq!(v, 1);
/// }
///
/// // Updater: unpublish, wait for pre-existing readers, then free.
/// let old = shared.swap(Box::into_raw(Box::new(2u64)), Ordering::AcqRel);
/// rcu.synchronize();
/// // SAFETY (example): no reader can still hold `old`.
/// drop(unsafe { Box::from_raw(old) });
/// # drop(unsafe { Box::from_raw(shared.load(Ordering::Acquire)) });
/// ```
pub struct Rcu {
    core: Arc<Core>,
}

/// A grace-period cookie from [`Rcu::snapshot`] or [`Rcu::start_poll`].
///
/// It names the end of the first grace period that starts after it was taken;
/// [`Rcu::poll`] tells whether that has happened. Cookies belong to the domain
/// that issued them: passing one to another domain panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GpCookie {
    seq: u64,
    domain: u64,
}

/// Why [`Builder::build`] refused a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    message: String,
}

impl ConfigError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            field,
            message: message.into(),
        }
    }

    /// The name of the [`Builder`] method whose value was refused.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why the value was refused.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid rcu_offload configuration: {}: {}",
            self.field, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Largest accepted [`Builder::gp_spin_limit`].
pub const MAX_GP_SPIN_LIMIT: u32 = 1 << 20;
/// Longest accepted [`Builder::thread_name_prefix`], in bytes, so that worker
/// names (`{prefix}rcu_gp`, `{prefix}rcu_reap`, and per shard up to
/// `{prefix}rcuog/999`) fit Linux's 15-byte thread names.
pub const MAX_THREAD_NAME_PREFIX: usize = 6;

/// Configuration of a new domain; see [`Rcu::builder`].
///
/// Setters return the builder by value, so an unused result is a mistake.
///
/// ```
/// let rcu = rcu_offload::Rcu::builder()
///     .thread_name_prefix("db-")
///     .gp_spin_limit(500)
///     .build()
///     .expect("valid configuration");
/// rcu.synchronize();
///
/// let err = rcu_offload::Rcu::builder().gp_spin_limit(u32::MAX).build().unwrap_err();
/// assert_eq!(err.field(), "gp_spin_limit");
/// ```
#[derive(Clone, Debug)]
#[must_use = "a Builder does nothing until build() is called"]
pub struct Builder {
    membarrier: bool,
    gp_spin_limit: u32,
    thread_name_prefix: String,
    shards: Option<usize>,
    gp_stride: Option<usize>,
    callback_batch_limit: usize,
    tick: Duration,
    lazy_timeout: Duration,
    nobypass_limit: usize,
    bypass_max: usize,
    high_water: usize,
    low_water: Option<usize>,
    caller_runs_callbacks: bool,
    wake_rate_limit: bool,
    inline_gp: bool,
}

/// Largest accepted [`Builder::shards`] (worker names must fit 15 bytes).
pub const MAX_SHARDS: usize = 1000;

/// Default [`Builder::callback_batch_limit`].
pub const DEFAULT_CALLBACK_BATCH_LIMIT: usize = 1024;

/// Default [`Builder::tick`]: 1 ms.
pub const DEFAULT_TICK: Duration = Duration::from_millis(1);

/// Default [`Builder::lazy_timeout`]: 1 s (the kernel's default lazy flush).
pub const DEFAULT_LAZY_TIMEOUT: Duration = Duration::from_secs(1);

/// Default [`Builder::nobypass_limit`]: 16 enqueues per tick (the kernel's
/// `nocb_nobypass_lim_per_jiffy` at HZ=1000).
pub const DEFAULT_NOBYPASS_LIMIT: usize = 16;

/// Default [`Builder::bypass_max`]: 10,000 callbacks (the kernel's
/// `qhimark`).
pub const DEFAULT_BYPASS_MAX: usize = 10_000;

/// Default [`Builder::high_water`]: 100,000 pending callbacks (3.2 MB of
/// queue, plus whatever the callbacks own).
pub const DEFAULT_HIGH_WATER: usize = 100_000;

impl Default for Builder {
    fn default() -> Self {
        Builder {
            membarrier: true,
            // Under loom, go straight to the sleeping path: it is the one with
            // a wakeup protocol to check, and spinning only multiplies states.
            gp_spin_limit: if cfg!(any(loom, shuttle)) { 0 } else { 1000 },
            thread_name_prefix: String::new(),
            shards: None,
            gp_stride: None,
            callback_batch_limit: DEFAULT_CALLBACK_BATCH_LIMIT,
            tick: DEFAULT_TICK,
            lazy_timeout: DEFAULT_LAZY_TIMEOUT,
            nobypass_limit: DEFAULT_NOBYPASS_LIMIT,
            bypass_max: DEFAULT_BYPASS_MAX,
            high_water: DEFAULT_HIGH_WATER,
            low_water: None,
            caller_runs_callbacks: false,
            wake_rate_limit: true,
            inline_gp: false,
        }
    }
}

impl Builder {
    /// Whether readers may rely on `membarrier(2)` (default `true`).
    ///
    /// With `true`, readers execute only compiler fences if the kernel offers
    /// `MEMBARRIER_CMD_PRIVATE_EXPEDITED` (checked once per process, when the
    /// first domain with `membarrier(true)` is built); otherwise, or with
    /// `false`, readers
    /// execute a full fence on outermost entry and exit and grace periods
    /// need no system call.
    pub fn membarrier(mut self, enable: bool) -> Self {
        self.membarrier = enable;
        self
    }

    /// How many times a grace period re-checks a reader it waits for before
    /// going to sleep until that reader leaves (default 1000; at most
    /// [`MAX_GP_SPIN_LIMIT`]).
    pub fn gp_spin_limit(mut self, iterations: u32) -> Self {
        self.gp_spin_limit = iterations;
        self
    }

    /// Prefix for the names of the domain's worker threads (default empty; at
    /// most [`MAX_THREAD_NAME_PREFIX`] bytes, no NUL).
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name_prefix = prefix.into();
        self
    }

    /// Number of callback shards, each with its own queue, lock and
    /// callback worker thread (default: [`std::thread::available_parallelism`],
    /// at most [`MAX_SHARDS`]; 1 under loom). A thread is given a shard at its
    /// first `call()` (round robin over threads) and keeps it.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// Shards per grace-period worker (default about `n / isqrt(n)` for `n`
    /// shards, as the kernel's `rcu_nocb_gp_stride`). Each group of `stride`
    /// consecutive shards shares one GP worker thread.
    pub fn gp_stride(mut self, stride: usize) -> Self {
        self.gp_stride = Some(stride);
        self
    }

    /// How many callbacks a callback worker invokes before it takes its
    /// shard's lock again to account for them (default
    /// [`DEFAULT_CALLBACK_BATCH_LIMIT`]). Smaller values let `barrier()` and
    /// `stats()` see progress sooner; larger ones cost fewer lock round trips.
    pub fn callback_batch_limit(mut self, limit: usize) -> Self {
        self.callback_batch_limit = limit;
        self
    }

    /// The domain's tick (default [`DEFAULT_TICK`], between 10 µs and 1 s):
    /// the unit of flood detection and wake rate-limiting, the age at which
    /// a bypass list is flushed, and the delay of a deferred wake (the
    /// kernel's jiffy).
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// How long a lazy callback ([`Rcu::call_lazy`]) may wait to be batched
    /// with others before its grace period starts (default
    /// [`DEFAULT_LAZY_TIMEOUT`]; at least one tick, at most an hour).
    pub fn lazy_timeout(mut self, timeout: Duration) -> Self {
        self.lazy_timeout = timeout;
        self
    }

    /// A shard is in a flood, and its callbacks go to its bypass list, once
    /// more than this many were queued on it in one tick (default
    /// [`DEFAULT_NOBYPASS_LIMIT`]; `usize::MAX` never uses the bypass for
    /// non-lazy callbacks).
    pub fn nobypass_limit(mut self, limit: usize) -> Self {
        self.nobypass_limit = limit;
        self
    }

    /// A bypass list is flushed into the segmented list once it holds this
    /// many callbacks, or is a tick old (default [`DEFAULT_BYPASS_MAX`], at
    /// least 1).
    pub fn bypass_max(mut self, max: usize) -> Self {
        self.bypass_max = max;
        self
    }

    /// The memory bound: when more than this many callbacks are pending in
    /// the domain, `call()` expedites and, from an ordinary thread, blocks
    /// until the backlog is below [`low_water`](Builder::low_water)
    /// (default [`DEFAULT_HIGH_WATER`]; `usize::MAX` disables throttling).
    /// See [`Rcu::call`] for who blocks and who does not.
    ///
    /// In a sustained flood the backlog sits between the two marks, so the
    /// mark also sets how long a callback's data waits, cooling in memory,
    /// before its callback runs. The default lets large bursts through
    /// without blocking; for steady floods of small callbacks a lower mark
    /// keeps the backlog in cache and runs faster (the README's flood
    /// benchmark, with its figures).
    pub fn high_water(mut self, high: usize) -> Self {
        self.high_water = high;
        self
    }

    /// Where a throttled `call()` resumes (default: half the high-water
    /// mark; must be below it).
    pub fn low_water(mut self, low: usize) -> Self {
        self.low_water = Some(low);
        self
    }

    /// loom only: start no callback-worker threads; the model's own thread
    /// runs the callbacks with [`Rcu::loom_run_callbacks`], which saves a
    /// thread in models of the wake protocols.
    #[cfg(any(loom, shuttle))]
    #[doc(hidden)]
    pub fn loom_caller_runs_callbacks(mut self) -> Self {
        self.caller_runs_callbacks = true;
        self
    }

    /// loom only: never defer a wake for rate-limiting. Model time stands
    /// still, so every direct wake after the first would otherwise be
    /// deferred to the timer thread; models of other protocols use this to
    /// stay within loom's thread budget (the deferral itself is modelled in
    /// loom-tests/tests/wakeups.rs).
    #[cfg(any(loom, shuttle))]
    #[doc(hidden)]
    pub fn loom_no_wake_rate_limit(mut self) -> Self {
        self.wake_rate_limit = false;
        self
    }

    /// loom only: the GP worker runs each grace period itself instead of
    /// asking the engine thread (the path it takes anyway when the engine
    /// thread cannot be started), which saves a thread in models of the
    /// wake protocols whose GP worker need not sleep on a grace period.
    #[cfg(any(loom, shuttle))]
    #[doc(hidden)]
    pub fn loom_inline_grace_periods(mut self) -> Self {
        self.inline_gp = true;
        self
    }

    /// Create the domain, or say which setting makes no sense.
    pub fn build(self) -> Result<Rcu, ConfigError> {
        let shards = match self.shards {
            Some(n) => n,
            None if cfg!(any(loom, shuttle)) => 1,
            None => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_SHARDS),
        };
        if shards == 0 || shards > MAX_SHARDS {
            return Err(ConfigError::new(
                "shards",
                format!("{shards} shards: need between 1 and {MAX_SHARDS}"),
            ));
        }
        let stride = self.gp_stride.unwrap_or_else(|| default_stride(shards));
        if stride == 0 || stride > shards {
            return Err(ConfigError::new(
                "gp_stride",
                format!("stride {stride}: need between 1 and the shard count {shards}"),
            ));
        }
        if self.callback_batch_limit == 0 {
            return Err(ConfigError::new(
                "callback_batch_limit",
                "a callback worker must be allowed at least one callback per batch",
            ));
        }
        if self.gp_spin_limit > MAX_GP_SPIN_LIMIT {
            return Err(ConfigError::new(
                "gp_spin_limit",
                format!(
                    "{} iterations is more than the maximum {MAX_GP_SPIN_LIMIT}; \
                     a grace period that waits longer should sleep",
                    self.gp_spin_limit
                ),
            ));
        }
        if self.thread_name_prefix.len() > MAX_THREAD_NAME_PREFIX {
            return Err(ConfigError::new(
                "thread_name_prefix",
                format!(
                    "{:?} is {} bytes; at most {MAX_THREAD_NAME_PREFIX} fit in a thread name",
                    self.thread_name_prefix,
                    self.thread_name_prefix.len()
                ),
            ));
        }
        if self.thread_name_prefix.contains('\0') {
            return Err(ConfigError::new(
                "thread_name_prefix",
                "thread names cannot contain NUL",
            ));
        }
        if self.tick < Duration::from_micros(10) || self.tick > Duration::from_secs(1) {
            return Err(ConfigError::new(
                "tick",
                format!("{:?}: need between 10 µs and 1 s", self.tick),
            ));
        }
        if self.lazy_timeout < self.tick || self.lazy_timeout > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "lazy_timeout",
                format!(
                    "{:?}: need between one tick ({:?}) and an hour",
                    self.lazy_timeout, self.tick
                ),
            ));
        }
        if self.bypass_max == 0 {
            return Err(ConfigError::new(
                "bypass_max",
                "a bypass list must hold at least one callback",
            ));
        }
        let low_water = self.low_water.unwrap_or(self.high_water / 2);
        if self.high_water == 0 || low_water >= self.high_water {
            return Err(ConfigError::new(
                if self.high_water == 0 {
                    "high_water"
                } else {
                    "low_water"
                },
                format!(
                    "high water {} and low water {low_water}: need 0 <= low < high, high >= 1",
                    self.high_water
                ),
            ));
        }
        let cfg = NocbConfig {
            shards,
            stride,
            batch_limit: self.callback_batch_limit,
            tick_ns: self.tick.as_nanos() as u64,
            lazy_ns: self.lazy_timeout.as_nanos() as u64,
            nobypass_limit: self.nobypass_limit as u64,
            bypass_max: self.bypass_max,
            high_water: self.high_water,
            low_water,
            caller_runs_callbacks: self.caller_runs_callbacks,
            wake_rate_limit: self.wake_rate_limit,
            inline_gp: self.inline_gp,
        };
        let light = self.membarrier && membarrier_available();
        Ok(Rcu {
            core: Arc::new(Core {
                reader: ReadState::new(light, self.gp_spin_limit),
                gp: GpState::new(),
                nocb: Nocb::new(cfg),
                handles: AtomicUsize::new(1),
                thread_name_prefix: self.thread_name_prefix,
            }),
        })
    }
}

#[cfg(not(any(loom, shuttle)))]
fn membarrier_available() -> bool {
    crate::membarrier::available()
}

#[cfg(any(loom, shuttle))]
fn membarrier_available() -> bool {
    // Irrelevant under loom: both fences are modelled as SeqCst fences.
    true
}

impl Default for Rcu {
    fn default() -> Self {
        Rcu::new()
    }
}

impl Rcu {
    /// A new domain with the default configuration.
    pub fn new() -> Rcu {
        Builder::default()
            .build()
            .expect("the default configuration is valid")
    }

    /// A [`Builder`] to configure a new domain.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Enter a read-side critical section; it lasts until the guard is dropped.
    ///
    /// Costs about a nanosecond and a half (see the README's benchmarks): the
    /// outermost entry stores one word in the calling thread's reader record
    /// and executes a compiler fence (a full fence if the domain runs without
    /// membarrier); nested entries only bump a counter; the exit wakes a
    /// grace period only if one is asleep waiting for readers.
    ///
    /// The record is registered on the thread's first `read` of this domain
    /// (one allocation, and the registry lock) and released after the thread
    /// exits. The fast path serves the two domains the thread looked up most
    /// recently; a thread cycling through more takes a slower, still
    /// lock-free, lookup of its own records.
    ///
    /// # Panics
    ///
    /// If sections are nested more than 2³²−1 deep (2¹⁶−1 on 32-bit
    /// targets), which only leaked guards can reach.
    ///
    /// ```
    /// let rcu = rcu_offload::Rcu::new();
    /// let outer = rcu.read();
    /// let inner = rcu.read(); // nesting is fine
    /// drop(outer);           // in any order
    /// drop(inner);
    /// ```
    #[inline]
    pub fn read(&self) -> ReadGuard<'_> {
        self.core.reader.enter()
    }

    /// Wait for a full grace period: every read-side section of this domain
    /// that began before this call has ended when it returns, and their
    /// accesses are ordered before everything the caller does next.
    ///
    /// Concurrent callers share grace periods. Runs the grace period on the
    /// calling thread.
    ///
    /// # Panics
    ///
    /// If the calling thread is inside a read-side section of this domain
    /// (waiting would deadlock), or is running one of its callbacks (it would
    /// stall every callback of its shard for a grace period; queue the rest
    /// of the work with [`call`](Rcu::call) instead).
    pub fn synchronize(&self) {
        self.assert_not_reading("synchronize");
        self.assert_not_in_callback("synchronize");
        let target = self.core.gp.snapshot();
        self.core.gp.wait_for(target, &self.core.reader);
    }

    /// A cookie for the grace period that would be needed to see every reader
    /// that is running now finish. Starts nothing (kernel:
    /// `get_state_synchronize_rcu`); pair it with [`start_poll`](Rcu::start_poll),
    /// [`synchronize`](Rcu::synchronize) or another thread's activity.
    #[must_use = "a cookie is only useful if polled or waited on"]
    pub fn snapshot(&self) -> GpCookie {
        GpCookie {
            seq: self.core.gp.snapshot(),
            domain: self.core.reader.id(),
        }
    }

    /// Like [`snapshot`](Rcu::snapshot), and makes sure the grace period will
    /// run without anybody blocking on it: the domain's engine thread runs it
    /// (kernel: `start_poll_synchronize_rcu`). Never waits for a grace period.
    ///
    /// # Panics
    ///
    /// If the engine thread must be started and the operating system refuses
    /// to create a thread.
    ///
    /// ```
    /// let rcu = rcu_offload::Rcu::new();
    /// let cookie = rcu.start_poll();
    /// while !rcu.poll(cookie) {
    ///     std::thread::yield_now();
    /// }
    /// ```
    pub fn start_poll(&self) -> GpCookie {
        let cookie = self.snapshot();
        self.core.request_gp(cookie.seq);
        cookie
    }

    /// Has a full grace period elapsed since `cookie` was taken? When this
    /// returns `true`, every read-side section that was running when the
    /// cookie was taken has ended (kernel: `poll_state_synchronize_rcu`).
    ///
    /// # Panics
    ///
    /// If `cookie` came from another domain.
    #[must_use]
    pub fn poll(&self, cookie: GpCookie) -> bool {
        self.check_cookie(cookie);
        self.core.gp.is_done(cookie.seq)
    }

    /// Wait, unless a full grace period has already elapsed since `cookie`
    /// was taken (kernel: `cond_synchronize_rcu`). Cheaper than
    /// [`synchronize`](Rcu::synchronize) when the cookie is old.
    ///
    /// # Panics
    ///
    /// If the calling thread is inside a read-side section of this domain or
    /// is running one of its callbacks (see [`synchronize`](Rcu::synchronize)),
    /// or if `cookie` came from another domain.
    pub fn cond_synchronize(&self, cookie: GpCookie) {
        self.assert_not_reading("cond_synchronize");
        self.assert_not_in_callback("cond_synchronize");
        self.check_cookie(cookie);
        self.core.gp.wait_for(cookie.seq, &self.core.reader);
    }

    /// Run `f` on one of the domain's callback worker threads after a full
    /// grace period: every read-side section of this domain that began
    /// before this call has ended when `f` starts (kernel: `call_rcu`).
    ///
    /// Never waits for a grace period; may be called inside a read-side
    /// section and from a callback. Costs one short lock of the calling
    /// thread's shard (its bypass lock; outside a flood also its list lock);
    /// when that shard had nothing waiting for a grace period, also a wake
    /// of its GP worker (a lock and, if the worker sleeps, a futex wake), or,
    /// inside a read-side section or (in a flood) when a wake was already
    /// issued in this tick, a deferred wake performed by the timer thread; on a shard's
    /// first `call`, the start of its worker threads. In a flood (more than
    /// [`Builder::nobypass_limit`] calls on the shard in one tick) callbacks
    /// go to the shard's bypass list and `call` takes only the one lock.
    /// Closures of up to three words (say a `Box` or an `Arc` plus two
    /// integers) are stored inline in recycled blocks of 30 callbacks, so a
    /// steady stream of them allocates nothing (a block is allocated when
    /// none is free); larger closures are boxed.
    ///
    /// # The memory bound
    ///
    /// When more than [`Builder::high_water`] callbacks are pending in the
    /// domain, `call` expedites (flushes every bypass and wakes every GP
    /// worker) and then, on an ordinary thread, **blocks** until at most
    /// [`Builder::low_water`] are pending ([`Stats::throttled`]). Inside a
    /// read-side section of this domain, or inside any callback, it never
    /// blocks: it queues and returns ([`Stats::throttle_expedited`]). Do not
    /// call it from an ordinary thread that holds a lock your callbacks take.
    ///
    /// # Which thread runs `f`
    ///
    /// The callback worker of the calling thread's shard (`{prefix}rcuo/N`),
    /// started with its group's grace-period worker (`{prefix}rcuog/L`) on
    /// the shard's first `call`. Callbacks of one thread run in the order
    /// they were queued. A panic in `f` is caught: it is counted in
    /// [`Stats::panics`], the first one is reported on stderr, and the
    /// worker carries on.
    ///
    /// # When callbacks run at the latest
    ///
    /// When the last handle of the domain is dropped, all pending callbacks
    /// run before the drop returns. The [`global`] domain is never dropped:
    /// at process exit its pending callbacks are simply not run; call
    /// [`barrier`](Rcu::barrier) first if they must.
    ///
    /// # Panics
    ///
    /// If the shard's workers, or the domain's timer thread (on the first
    /// deferred wake), must be started and the operating system refuses to
    /// create a thread.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// let rcu = rcu_offload::Rcu::new();
    /// let ran = Arc::new(AtomicUsize::new(0));
    /// let r = Arc::clone(&ran);
    /// let cookie = rcu.snapshot();
    /// let rcu2 = rcu.clone();
    /// rcu.call(move || {
    ///     assert!(rcu2.poll(cookie)); // a full grace period has elapsed
    ///     r.fetch_add(1, Ordering::Relaxed);
    /// });
    /// rcu.barrier();
    /// assert_eq!(ran.load(Ordering::Relaxed), 1);
    /// ```
    #[inline]
    pub fn call<F: FnOnce() + Send + 'static>(&self, f: F) {
        self.core.nocb.call(&self.core, Slot::new(f), false);
    }

    /// Like [`call`](Rcu::call), but the callback may wait up to the lazy
    /// timeout ([`Builder::lazy_timeout`], default 1 s) before its grace
    /// period even starts, to be batched with others (kernel: `call_rcu`
    /// with lazy RCU). Lazy callbacks wake nobody: on an idle system a
    /// trickle of them costs one timer and one grace period per timeout,
    /// instead of a wake-up and a grace period each.
    ///
    /// A lazy callback waits less when something else happens first: a
    /// non-lazy `call()` on the same shard promotes every lazy callback
    /// queued before it to a normal wait, [`barrier`](Rcu::barrier) flushes
    /// them at once, and so does memory pressure (the high-water mark).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    ///
    /// let rcu = rcu_offload::Rcu::new();
    /// let ran = Arc::new(AtomicBool::new(false));
    /// let r = Arc::clone(&ran);
    /// rcu.call_lazy(move || r.store(true, Ordering::Relaxed));
    /// rcu.barrier(); // does not wait out the lazy timeout
    /// assert!(ran.load(Ordering::Relaxed));
    /// ```
    #[inline]
    pub fn call_lazy<F: FnOnce() + Send + 'static>(&self, f: F) {
        self.core.nocb.call(&self.core, Slot::new(f), true);
    }

    /// loom only: group `g`'s wake state: (level, timer deadline, resets,
    /// timer wakes), read under its wake lock.
    #[cfg(any(loom, shuttle))]
    #[doc(hidden)]
    pub fn loom_wake_state(&self, g: usize) -> (u8, Option<u64>, u64, u64) {
        let w = self.core.nocb.groups[g].wake.lock();
        (w.level() as u8, w.timer(), w.resets, w.timer_wakes)
    }

    /// loom only: how many callbacks shard `shard`'s bypass holds.
    #[cfg(any(loom, shuttle))]
    #[doc(hidden)]
    pub fn loom_bypass_len(&self, shard: usize) -> usize {
        self.core.nocb.shards[shard].bypass.lock().len()
    }

    /// loom only: run shard `shard`'s callbacks on this thread, as its CB
    /// worker would, until `enough()` holds after a batch (the model's own
    /// count of its callbacks). Needs `Builder::loom_caller_runs_callbacks`.
    #[cfg(any(loom, shuttle))]
    #[doc(hidden)]
    pub fn loom_run_callbacks(&self, shard: usize, enough: impl Fn() -> bool) {
        crate::worker::run_callbacks(&self.core, shard, enough);
    }

    /// Drop `b` on a callback worker after a full grace period (kernel:
    /// `kfree_rcu`). Same guarantees and costs as [`call`](Rcu::call); the
    /// `Box` is stored inline.
    ///
    /// ```
    /// let rcu = rcu_offload::Rcu::new();
    /// rcu.retire(Box::new([0u64; 8]));
    /// rcu.barrier();
    /// ```
    #[inline]
    pub fn retire<T: Send + 'static>(&self, b: Box<T>) {
        self.call(move || drop(b));
    }

    /// Wait until every callback queued (on any thread) before this call has
    /// run (kernel: `rcu_barrier`). Callbacks that those callbacks queue are
    /// not waited for; call `barrier` again for them. Concurrent callers share
    /// work.
    ///
    /// # Panics
    ///
    /// If the calling thread is inside a read-side section of this domain, or
    /// is running one of its callbacks: either would wait for itself forever.
    pub fn barrier(&self) {
        self.assert_not_reading("barrier");
        self.assert_not_in_callback("barrier");
        crate::barrier::barrier(&self.core);
    }

    /// A snapshot of the domain's callback and grace-period counters.
    ///
    /// ```
    /// let rcu = rcu_offload::Rcu::builder().shards(2).build().unwrap();
    /// rcu.call(|| ());
    /// rcu.barrier();
    /// let s = rcu.stats();
    /// assert_eq!((s.queued(), s.pending(), s.shards.len()), (1, 0, 2));
    /// ```
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.core.nocb.stats(&self.core.gp)
    }

    /// How many grace periods this domain has completed.
    #[must_use]
    pub fn completed_grace_periods(&self) -> u64 {
        self.core.gp.completed()
    }

    fn assert_not_reading(&self, what: &str) {
        let depth = self.core.reader.current_nesting();
        if depth != 0 {
            panic!(
                "rcu_offload: {what}() called inside a read-side critical section \
                 (nesting depth {depth}) of the same domain; it would wait for \
                 itself forever. Drop the ReadGuard first."
            );
        }
    }

    fn assert_not_in_callback(&self, what: &str) {
        if in_callback_of(self.core.reader.id()) {
            panic!(
                "rcu_offload: {what}() called from a callback of the same domain; \
                 callbacks run on the domain's callback workers, which cannot wait \
                 for themselves. Queue more work with call() instead."
            );
        }
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    fn check_cookie(&self, cookie: GpCookie) {
        assert_eq!(
            cookie.domain,
            self.core.reader.id(),
            "rcu_offload: GpCookie from another Rcu domain"
        );
    }
}

// No user code ever runs while one of the domain's internal locks is held
// (callbacks run outside every lock; `RcuCell::update` runs its closure under
// the cell's own writer lock, which guards nothing but the cell's pointer),
// and the locks do not poison: a panic caught around any `Rcu` method leaves
// the domain consistent.
impl std::panic::UnwindSafe for Rcu {}
impl std::panic::RefUnwindSafe for Rcu {}

impl Clone for Rcu {
    fn clone(&self) -> Self {
        self.core.handles.fetch_add(1, Ordering::Relaxed);
        Rcu {
            core: Arc::clone(&self.core),
        }
    }
}

impl Drop for Rcu {
    fn drop(&mut self) {
        if self.core.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            if in_any_callback() {
                // The last handle died inside a callback (say, a retired
                // value owned it). If it is one of this domain's callbacks,
                // this thread is a CB worker that cannot join itself; if it
                // is another domain's, draining this one here would stall
                // that domain's shard for our grace periods, and deadlock if
                // one of our callbacks waited for that domain. Either way a
                // reaper thread does the shutdown.
                let core = Arc::clone(&self.core);
                let name = format!("{}rcu_reap", self.core.thread_name_prefix);
                drop(spawn_named(name, move || core.shutdown()));
            } else {
                self.core.shutdown();
            }
        }
    }
}

impl fmt::Debug for Rcu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rcu")
            .field("domain", &self.core.reader.id())
            .field("membarrier", &self.core.reader.light_fences())
            .field("completed_grace_periods", &self.completed_grace_periods())
            .finish()
    }
}

/// The process-wide default domain, created on first use.
///
/// It is never dropped: at process exit its worker threads (if started) are
/// simply ended with the process, callbacks still pending are **not run**,
/// and no grace period is waited for. Code whose callbacks must run before
/// exit (flushing, closing files) calls [`barrier`](Rcu::barrier) at the end
/// of `main`; code that must wait for readers calls
/// [`synchronize`](Rcu::synchronize). Not available in `cfg(loom)` builds,
/// where every model creates its own domain.
///
/// ```
/// let g = rcu_offload::global().read();
/// drop(g);
/// rcu_offload::global().synchronize();
/// rcu_offload::global().call(|| println!("after a grace period"));
/// rcu_offload::global().barrier(); // before leaving main: it has run
/// ```
#[cfg(not(any(loom, shuttle)))]
pub fn global() -> &'static Rcu {
    static GLOBAL: std::sync::OnceLock<Rcu> = std::sync::OnceLock::new();
    GLOBAL.get_or_init(Rcu::new)
}
