//! [`Builder`]: the configuration of a new domain, its defaults and limits,
//! and [`ConfigError`], which names the setting [`Builder::build`] refused.
//! Nothing here runs after the domain is built.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::nocb::{
    default_stride, CallbackPanic, Config as NocbConfig, ModelOptions, PanicHook, ShardChoice,
    Staging,
};
use crate::stall::{StallHook, StallReport};
use crate::sync::{
    default_shards, membarrier_available, ReaderFences, DEFAULT_GP_SPIN_LIMIT, STAGING_BY_DEFAULT,
    STALL_TIMEOUT_BY_DEFAULT,
};

use super::{DomainParts, Rcu};

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
    shard_choice: ShardChoice,
    staging: Staging,
    gp_stride: Option<usize>,
    callback_batch_limit: usize,
    tick: Duration,
    lazy_timeout: Duration,
    nobypass_limit: usize,
    bypass_max: usize,
    high_water: usize,
    low_water: Option<usize>,
    stall_timeout: Duration,
    on_stall: Hook<StallHook>,
    on_callback_panic: Hook<PanicHook>,
    /// Switches only the models turn (`rcu_offload::model::Options`).
    pub(crate) model: ModelOptions,
}

/// A user hook in a [`Builder`], shown by `Debug` only as present or not.
#[derive(Clone, Default)]
struct Hook<H>(Option<H>);

impl<H> fmt::Debug for Hook<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(<hook>)"
        } else {
            "None"
        })
    }
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

/// Default [`Builder::stall_timeout`]: 10 s (the kernel's
/// `rcu_cpu_stall_timeout` is 21 s; a user-space wait of 10 s is already
/// far outside anything healthy). Model builds default to no warnings.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Builder {
    fn default() -> Self {
        Builder {
            membarrier: true,
            gp_spin_limit: DEFAULT_GP_SPIN_LIMIT,
            thread_name_prefix: String::new(),
            shards: None,
            shard_choice: ShardChoice::PerCpu,
            staging: if STAGING_BY_DEFAULT {
                Staging::PerThread
            } else {
                Staging::Off
            },
            gp_stride: None,
            callback_batch_limit: DEFAULT_CALLBACK_BATCH_LIMIT,
            tick: DEFAULT_TICK,
            lazy_timeout: DEFAULT_LAZY_TIMEOUT,
            nobypass_limit: DEFAULT_NOBYPASS_LIMIT,
            bypass_max: DEFAULT_BYPASS_MAX,
            high_water: DEFAULT_HIGH_WATER,
            low_water: None,
            stall_timeout: STALL_TIMEOUT_BY_DEFAULT,
            on_stall: Hook(None),
            on_callback_panic: Hook(None),
            model: ModelOptions::default(),
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
    /// at most [`MAX_SHARDS`]; 1 in model builds). Which shard a `call()`
    /// uses is [`shard_choice`](Builder::shard_choice)'s.
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
    /// before its callback runs, and how much memory the flood holds: the
    /// queued callbacks (32 bytes each) plus whatever they own. The shard's
    /// pool of callback blocks is sized to the mark, so a sustained flood
    /// recycles blocks instead of allocating them.
    ///
    /// Why 100,000: measured on a 2-core machine with a flood of slow
    /// callbacks (each spins 300 steps and frees a 64-byte node; one and two
    /// producers, 5 s; benches/README.md, "High-water sweep"), in the run
    /// where the rates held steady the rate rose from a mark of 8,192 (7.9
    /// and 8.7 M/s: throttled producers wait often) to a plateau between
    /// about 32,768 and 100,000 (8.9 to 10.0 M/s) and fell beyond it (7.0
    /// M/s at 262,144: the backlog no longer fits the caches), while peak
    /// memory grew with the mark (14 and 25 MiB at 100,000; 35 and 60 MiB
    /// at 262,144). The default is the top of that plateau, with room for
    /// bursts of up to 100,000 callbacks that never block. A program that
    /// must keep memory small loses little with 16,384 (about 5% of the
    /// rate, a third of the memory). (A second sweep an hour later swung
    /// between 2.9 and 8 M/s at every mark, for reasons benches/README.md
    /// discusses; it did not move the choice.)
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

    /// Which shard a `call()` goes to (default [`ShardChoice::PerCpu`]: the
    /// shard of the CPU the caller runs on).
    ///
    /// Ordering: callbacks that one thread queues on one shard run in the
    /// order it queued them (each shard's CB worker runs its callbacks in
    /// FIFO order). With `PerCpu`, a thread that migrates to another CPU
    /// between two calls may put them on two shards, whose workers run
    /// independently: the later one may run first. Every callback still
    /// runs exactly once, after a grace period that began after its
    /// `call()`, and [`Rcu::barrier`] waits for both. A program that needs
    /// one thread's callbacks to run in order whatever CPU it runs on asks
    /// for [`ShardChoice::PerThread`], as does one whose threads are pinned
    /// to CPUs anyway.
    pub fn shard_choice(mut self, choice: ShardChoice) -> Self {
        self.shard_choice = choice;
        self
    }

    /// Whether `call()` stages callbacks in a per-thread buffer (default
    /// [`Staging::PerThread`]).
    ///
    /// Staged, a `call()` costs a few nanoseconds (plain stores into the
    /// calling thread's buffer for the domain) and the thread hands its
    /// callbacks to a shard 64 at a time; a callback that is not handed over
    /// by its thread is taken by the domain's GP worker at its next scan,
    /// within a tick (or at once by [`Rcu::barrier`]). Lazy callbacks
    /// ([`Rcu::call_lazy`]) are never staged. [`Staging::Off`] makes every
    /// `call()` take its shard's locks; it is also what a domain gets
    /// without membarrier (`Builder::membarrier(false)`, or a kernel
    /// without it): the staging protocol needs the readers' light fences.
    ///
    /// Staging keeps a thread's callbacks in order between two hand-overs,
    /// and a hand-over goes to the shard [`shard_choice`](Builder::shard_choice)
    /// picks at that moment. The memory bound ([`high_water`](Builder::high_water))
    /// counts staged callbacks once they are handed over, so it may be
    /// exceeded by up to 64 callbacks per thread calling into the domain.
    pub fn staging(mut self, staging: Staging) -> Self {
        self.staging = staging;
        self
    }

    /// How long a grace period or a blocking [`barrier`](Rcu::barrier) may
    /// wait before the domain reports a stall (default
    /// [`DEFAULT_STALL_TIMEOUT`]; `Duration::ZERO` turns warnings off).
    ///
    /// A grace period that has waited this long for read-side sections
    /// reports the threads still inside one: their name and ids, and
    /// whether each is running, asleep, exiting or gone (a leaked guard on
    /// a thread that exited). A grace period is any: a `synchronize()`, the
    /// engine's for callbacks, polled cookies and async waits. A barrier
    /// reports the shards whose callbacks have not all run, and whether
    /// they wait for a grace period or for their callback worker (an async
    /// barrier has no waiting thread to report; the grace periods it waits
    /// for still do). Each stalled wait reports once, to the
    /// [`on_stall`](Builder::on_stall) hook or as one line on stderr, and
    /// counts in [`Stats::stalls`](crate::Stats::stalls). The read side pays
    /// nothing for it: only the waiting thread keeps time.
    ///
    /// ```
    /// use std::time::Duration;
    /// let rcu = rcu_offload::Rcu::builder()
    ///     .stall_timeout(Duration::from_secs(2))
    ///     .build()
    ///     .unwrap();
    /// rcu.synchronize(); // no reader: no stall
    /// assert_eq!(rcu.stats().stalls, 0);
    /// ```
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// Send stall reports to `hook` instead of stderr (see
    /// [`stall_timeout`](Builder::stall_timeout)).
    ///
    /// The hook runs on the thread that waits: the grace-period engine
    /// thread, a [`synchronize`](Rcu::synchronize) caller, or a
    /// [`barrier`](Rcu::barrier) caller. That thread holds the domain's
    /// grace-period (or barrier) lock, so the hook must not wait for a
    /// grace period or a barrier of the same domain; logging, counting and
    /// sending the report elsewhere are what it is for. A panic in the hook
    /// is caught and the report printed on stderr instead. A hook that
    /// calls `fork()` makes the child panic, naming fork, when it returns.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let s = Arc::clone(&seen);
    /// let rcu = rcu_offload::Rcu::builder()
    ///     .on_stall(move |report| {
    ///         eprintln!("{report}");
    ///         s.fetch_add(1, Ordering::Relaxed);
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # drop(rcu);
    /// ```
    pub fn on_stall(mut self, hook: impl Fn(&StallReport) + Send + Sync + 'static) -> Self {
        self.on_stall = Hook(Some(Arc::new(hook)));
        self
    }

    /// Send callback panics to `hook` instead of stderr.
    ///
    /// A panic in a callback is caught by the callback worker, counted in
    /// [`Stats::panics`](crate::Stats::panics) and, without a hook,
    /// reported on stderr (the first of the domain only). With a hook, every
    /// panic is handed to it, payload included, on the callback worker
    /// thread that caught it, which then carries on with the other
    /// callbacks. A panic in the hook itself is caught and reported on
    /// stderr.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// let messages = Arc::new(Mutex::new(Vec::new()));
    /// let m = Arc::clone(&messages);
    /// let rcu = rcu_offload::Rcu::builder()
    ///     .on_callback_panic(move |p| {
    ///         m.lock().unwrap().push(p.message().unwrap_or("?").to_owned());
    ///     })
    ///     .build()
    ///     .unwrap();
    /// rcu.call(|| panic!("boom"));
    /// rcu.barrier();
    /// assert_eq!(*messages.lock().unwrap(), ["boom"]);
    /// ```
    pub fn on_callback_panic(
        mut self,
        hook: impl Fn(CallbackPanic) + Send + Sync + 'static,
    ) -> Self {
        self.on_callback_panic = Hook(Some(Arc::new(hook)));
        self
    }

    /// Create the domain, or say which setting makes no sense.
    pub fn build(self) -> Result<Rcu, ConfigError> {
        let shards = self.shards.unwrap_or_else(|| default_shards(MAX_SHARDS));
        check((1..=MAX_SHARDS).contains(&shards), "shards", || {
            format!("{shards} shards: need between 1 and {MAX_SHARDS}")
        })?;
        let stride = self.gp_stride.unwrap_or_else(|| default_stride(shards));
        check((1..=shards).contains(&stride), "gp_stride", || {
            format!("stride {stride}: need between 1 and the shard count {shards}")
        })?;
        check(
            self.callback_batch_limit != 0,
            "callback_batch_limit",
            || "a callback worker must be allowed at least one callback per batch".into(),
        )?;
        check(
            self.gp_spin_limit <= MAX_GP_SPIN_LIMIT,
            "gp_spin_limit",
            || {
                format!(
                    "{} iterations is more than the maximum {MAX_GP_SPIN_LIMIT}; \
                 a grace period that waits longer should sleep",
                    self.gp_spin_limit
                )
            },
        )?;
        self.check_thread_name_prefix()?;
        self.check_timing()?;
        check(self.bypass_max != 0, "bypass_max", || {
            "a bypass list must hold at least one callback".into()
        })?;
        let low_water = self.check_water_marks()?;
        let fences = if self.membarrier && membarrier_available() {
            ReaderFences::Light
        } else {
            ReaderFences::Full
        };
        let rcu = Rcu::from_parts(DomainParts {
            fences,
            gp_spin_limit: self.gp_spin_limit,
            thread_name_prefix: self.thread_name_prefix,
            stall_timeout: if self.model.stall_at_once {
                Some(Duration::ZERO)
            } else {
                Some(self.stall_timeout).filter(|t| !t.is_zero())
            },
            on_stall: self.on_stall.0,
            on_callback_panic: self.on_callback_panic.0,
            callbacks: NocbConfig {
                shards,
                stride,
                batch_limit: self.callback_batch_limit,
                tick_ns: self.tick.as_nanos() as u64,
                lazy_ns: self.lazy_timeout.as_nanos() as u64,
                nobypass_limit: self.nobypass_limit as u64,
                bypass_max: self.bypass_max,
                high_water: self.high_water,
                low_water,
                shard_choice: self.shard_choice,
                // A feed's owner pairs with the drainers through the light
                // fences' asymmetric pair; with full reader fences there is
                // no membarrier, and staging would need a full fence per
                // call, which costs more than it saves.
                staging: match fences {
                    ReaderFences::Light => self.staging,
                    ReaderFences::Full => Staging::Off,
                },
                model: self.model,
            },
        });
        // A forked child keeps using every domain (fork.rs).
        #[cfg(all(target_os = "linux", not(any(loom, shuttle))))]
        super::fork::register(rcu.core());
        Ok(rcu)
    }

    fn check_thread_name_prefix(&self) -> Result<(), ConfigError> {
        let prefix = &self.thread_name_prefix;
        check(
            prefix.len() <= MAX_THREAD_NAME_PREFIX,
            "thread_name_prefix",
            || {
                format!(
                    "{prefix:?} is {} bytes; at most {MAX_THREAD_NAME_PREFIX} fit in a thread name",
                    prefix.len()
                )
            },
        )?;
        check(!prefix.contains('\0'), "thread_name_prefix", || {
            "thread names cannot contain NUL".into()
        })
    }

    fn check_timing(&self) -> Result<(), ConfigError> {
        let tick = self.tick;
        check(
            (Duration::from_micros(10)..=Duration::from_secs(1)).contains(&tick),
            "tick",
            || format!("{tick:?}: need between 10 µs and 1 s"),
        )?;
        let lazy = self.lazy_timeout;
        check(
            (tick..=Duration::from_secs(3600)).contains(&lazy),
            "lazy_timeout",
            || format!("{lazy:?}: need between one tick ({tick:?}) and an hour"),
        )
    }

    /// The low-water mark, once both marks make sense.
    fn check_water_marks(&self) -> Result<usize, ConfigError> {
        let high = self.high_water;
        let low = self.low_water.unwrap_or(high / 2);
        let field = if high == 0 { "high_water" } else { "low_water" };
        check(high != 0 && low < high, field, || {
            format!("high water {high} and low water {low}: need 0 <= low < high, high >= 1")
        })?;
        Ok(low)
    }
}

/// `Ok` if `ok`, else the refusal of `field` with `message()`.
fn check(
    ok: bool,
    field: &'static str,
    message: impl FnOnce() -> String,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(field, message()))
    }
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
}
