//! The public layer: [`Rcu`] handles, polled-grace-period cookies and the
//! process-wide [`global`] domain ([`Builder`](crate::Builder) lives in
//! `builder.rs`).
//!
//! A domain is its readers (`reader.rs`), its grace-period engine
//! (`gp.rs`) and its callback machinery (`nocb/`), held together here. This
//! layer owns the domain's lifetime, turns misuse into clear panics, and is
//! the one place that starts threads: the machinery asks for a
//! [`Worker`] and this layer runs it on a thread that holds a share of the
//! domain. It keeps one invariant of its own: the worker threads hold the
//! domain's state but never a handle, so dropping the last [`Rcu`] handle is
//! what stops and joins them (checked by the loom model
//! `domain_drop_joins_engine` in loom-tests/tests/grace_period.rs).

use std::fmt;
use std::sync::Arc;

use crate::gp::GpState;
use crate::nocb::{
    in_any_callback, in_callback_of, CallKind, Config as NocbConfig, Env, Hooks, Nocb, PanicHook,
    Spawn, Worker,
};
use crate::reader::{ReadGuard, ReadState};
use crate::stall::{StallHook, StallWatch};
use crate::stats::{self, Stats};
use crate::sync::{
    cfg_real, rcu_thread_local, spawn_named, AtomicUsize, JoinHandle, Ordering, ReaderFences,
};

pub(crate) mod builder;
#[cfg(all(target_os = "linux", not(any(loom, shuttle))))]
pub(crate) mod fork;
pub(crate) mod futures;
pub(crate) mod quiesce;

/// Shared state of one domain, held by handles and by its worker threads.
pub(crate) struct Core {
    pub(crate) reader: ReadState,
    pub(crate) gp: GpState,
    pub(crate) nocb: Nocb,
    /// Live [`Rcu`] handles (workers do not count).
    handles: AtomicUsize,
    thread_name_prefix: String,
    /// Set in a forked child whose forking thread was one of this domain's
    /// workers (or ran its callback): the message every thread start then
    /// panics with (fork.rs).
    fork_poison: std::sync::OnceLock<String>,
}

rcu_thread_local! {
    /// On every worker thread of every domain (engine, GP and CB workers,
    /// timer): the id of the domain it works for (0 elsewhere). A handle
    /// dropped there, say by a waker that owned the last one, must not join
    /// the very thread it runs on; and a child forked there is that worker
    /// (fork.rs).
    static ON_WORKER_THREAD: std::cell::Cell<u64> = std::cell::Cell::new(0);
}

/// What a validated [`Builder`](crate::Builder) makes a domain of.
pub(crate) struct DomainParts {
    pub(crate) fences: ReaderFences,
    pub(crate) gp_spin_limit: u32,
    pub(crate) thread_name_prefix: String,
    /// `None`: no stall warnings.
    pub(crate) stall_timeout: Option<std::time::Duration>,
    pub(crate) on_stall: Option<StallHook>,
    pub(crate) on_callback_panic: Option<PanicHook>,
    pub(crate) callbacks: NocbConfig,
}

impl Core {
    /// Start `worker` on a thread of its own that holds a share of the
    /// domain, and run its loop there.
    fn spawn(self: &Arc<Core>, worker: Worker) -> JoinHandle<()> {
        if let Some(why) = self.fork_poison.get() {
            panic!("{why}");
        }
        let core = Arc::clone(self);
        spawn_named(worker.name(&self.thread_name_prefix), move || {
            ON_WORKER_THREAD.with(|w| w.set(core.reader.id()));
            let spawn = |w| Core::spawn(&core, w);
            let env = core.env(&spawn);
            match worker {
                Worker::Gp { group, .. } => core.nocb.gp_worker(env, group),
                Worker::Cb { shard } => core.nocb.cb_worker(env, shard),
                Worker::Timer => core.nocb.run_timer(),
                Worker::Engine => core.gp.engine_loop(&core.reader, || {
                    core.nocb.gp_completed(|s| core.gp.is_done(s))
                }),
            }
        })
    }

    /// What the callback machinery is handed: the layers below it, and
    /// `spawn` to start its threads.
    fn env<'a>(&'a self, spawn: Spawn<'a>) -> Env<'a> {
        Env {
            reader: &self.reader,
            gp: &self.gp,
            spawn,
        }
    }

    /// Stop everything: run pending callbacks, then stop the callback
    /// workers, then the engine.
    fn shutdown(self: &Arc<Core>) {
        let spawn = |w| Core::spawn(self, w);
        self.nocb.shutdown(self.env(&spawn));
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
///   memory bound ([`Builder::high_water`](crate::Builder::high_water)) does an ordinary thread's `call`
///   block, until the callback workers have caught up.
/// * [`barrier`](Rcu::barrier) blocks the caller until the callback workers
///   have run every earlier callback.
/// * [`synchronize_async`](Rcu::synchronize_async),
///   [`cond_synchronize_async`](Rcu::cond_synchronize_async) and
///   [`barrier_async`](Rcu::barrier_async) never block: their futures are
///   woken by the thread that ends the grace period (the engine thread, a
///   `synchronize()` or `cond_synchronize()` caller, or a GP worker that
///   runs its own grace periods because the engine thread could not be
///   started) or by the callback worker that runs the
///   barrier's last internal callback; the waker runs there, outside every
///   lock of the domain (a panicking waker is contained and reported on
///   stderr).
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
///   callbacks, `barrier()`, and dropping the last handle. After
///   [`Builder::stall_timeout`](crate::Builder::stall_timeout) the domain
///   reports the thread that holds it up (on stderr, or to
///   [`Builder::on_stall`](crate::Builder::on_stall)'s hook).
/// * `fork()` (Linux): the child goes on using the domain. Fork handlers
///   installed when the first domain is built hold the domain's short locks
///   across the fork; in the child they drop the reader records of the
///   parent's other threads, abandon a grace period or barrier another
///   thread was running, and restart the worker threads when next needed.
///   Callbacks pending at the fork run in both processes, each on its own
///   copy of the memory, except those a callback worker had already taken
///   to run (up to [`Builder::callback_batch_limit`](crate::Builder::callback_batch_limit)
///   per shard), which run in the parent only and are neither run nor
///   dropped in the child. If the forking thread is one of the domain's
///   workers (a callback or a waker called `fork()`), the child's domain
///   cannot start threads: `call()`, `barrier()` and the last handle's drop
///   panic with a message naming fork; a child forked in a callback leaves
///   the callback worker's loop when that callback returns, and its thread
///   ends (the child exits with status 0 if it has no other thread).
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

impl Rcu {
    /// Enter a read-side critical section; it lasts until the guard is dropped.
    ///
    /// Costs about a nanosecond (see the README's benchmarks): the
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
        self.with_env(|env| env.request_gp(cookie.seq));
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
    /// Never waits for a grace period below the memory bound; may be
    /// called inside a read-side section and from a callback.
    ///
    /// # Cost
    ///
    /// By default ([`Staging::PerThread`](crate::Staging::PerThread)) the
    /// callback is *staged*: written into a 64-slot buffer of the calling
    /// thread's for this domain with plain stores, no lock and no atomic
    /// read-modify-write (a few nanoseconds). Every 64 calls, or when the
    /// domain's GP worker found the buffer idle and closed it, the thread
    /// hands what it staged to the shard of the CPU it runs on
    /// ([`ShardChoice::PerCpu`](crate::ShardChoice::PerCpu)), under the
    /// shard's locks; when that shard had nothing waiting for a grace
    /// period, this also wakes its GP worker (a lock and, if the worker
    /// sleeps, a futex wake), or, inside a read-side section or (in a flood)
    /// when a wake was already issued in this tick, defers the wake to the
    /// timer thread. What a thread staged and has not handed over is taken
    /// by the GP worker at its next scan (within a tick) and by
    /// [`barrier`](Rcu::barrier) at once. On a shard's first use its worker
    /// threads start. With [`Staging::Off`](crate::Staging::Off) (and for
    /// [`call_lazy`](Rcu::call_lazy)) every call takes its shard's locks,
    /// and in a flood (more than
    /// [`Builder::nobypass_limit`](crate::Builder::nobypass_limit) calls on
    /// the shard in one tick) goes to the shard's bypass list, one lock.
    ///
    /// Closures of up to three words (say a `Box` or an `Arc` plus two
    /// integers) are stored inline in blocks of 30 callbacks that each shard
    /// recycles (its pool is sized by the memory bound), so a sustained
    /// stream of them allocates nothing; larger closures are boxed.
    ///
    /// # The memory bound
    ///
    /// When more than [`Builder::high_water`](crate::Builder::high_water) callbacks are pending in the
    /// domain, `call` expedites (flushes every bypass and wakes every GP
    /// worker) and then, on an ordinary thread, **blocks** until at most
    /// [`Builder::low_water`](crate::Builder::low_water) are pending ([`Stats::throttled`]). Inside a
    /// read-side section of this domain, or inside any callback, it never
    /// blocks: it queues and returns ([`Stats::throttle_expedited`]). Do not
    /// call it from an ordinary thread that holds a lock your callbacks take.
    ///
    /// # Which thread runs `f`
    ///
    /// The callback worker (`{prefix}rcuo/N`) of the shard the callback was
    /// handed to, started with its group's grace-period worker
    /// (`{prefix}rcuog/L`) on the shard's first use. Each shard runs its
    /// callbacks in the order they reached it, so the callbacks of a thread
    /// that stays on one CPU (or of any thread, with
    /// [`ShardChoice::PerThread`](crate::ShardChoice::PerThread)) run in the
    /// order it queued them; a thread that migrates between CPUs may see a
    /// later callback run before an earlier one that went to another shard.
    /// Each runs exactly once either way, and [`barrier`](Rcu::barrier)
    /// waits for all of them. A panic in `f` is caught: it is counted in
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
        self.with_env(|env| self.core.nocb.call(env, f, CallKind::Normal));
    }

    /// Like [`call`](Rcu::call), but the callback may wait up to the lazy
    /// timeout ([`Builder::lazy_timeout`](crate::Builder::lazy_timeout), default 1 s) before its grace
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
        self.with_env(|env| self.core.nocb.call(env, f, CallKind::Lazy));
    }

    /// Drop `b` on a callback worker after a full grace period (kernel:
    /// `kfree_rcu`). Same guarantees and costs as [`call`](Rcu::call); the
    /// `Box` is stored inline, also when `T` is unsized (`str`, `[U]`,
    /// `dyn Trait + Send`).
    ///
    /// ```
    /// let rcu = rcu_offload::Rcu::new();
    /// rcu.retire(Box::new([0u64; 8]));
    /// rcu.retire::<str>("unsized too".into());
    /// rcu.barrier();
    /// ```
    #[inline]
    pub fn retire<T: ?Sized + Send + 'static>(&self, b: Box<T>) {
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
        self.with_env(|env| self.core.nocb.barrier(env));
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
        stats::collect(&self.core.nocb, || self.core.gp.completed())
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

    /// Run `f` with what the callback machinery is handed (see
    /// [`Env`]), its threads started as this domain's.
    #[inline]
    pub(crate) fn with_env<R>(&self, f: impl FnOnce(Env<'_>) -> R) -> R {
        let spawn = |w| Core::spawn(&self.core, w);
        f(self.core.env(&spawn))
    }

    /// A domain made of validated `parts` (see [`Builder::build`](crate::Builder::build)).
    pub(crate) fn from_parts(parts: DomainParts) -> Rcu {
        let id = ReadState::next_id();
        let stall = Arc::new(StallWatch::new(parts.stall_timeout, parts.on_stall, id));
        let reader = ReadState::new(id, parts.fences, parts.gp_spin_limit, Arc::clone(&stall));
        let hooks = Hooks {
            stall,
            on_panic: parts.on_callback_panic,
            thread_name_prefix: parts.thread_name_prefix.clone(),
        };
        Rcu {
            core: Arc::new(Core {
                reader,
                gp: GpState::new(),
                nocb: Nocb::new(parts.callbacks, id, hooks),
                handles: AtomicUsize::new(1),
                thread_name_prefix: parts.thread_name_prefix,
                fork_poison: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Make sure the grace period `cookie` names runs, without waiting for
    /// it (the second half of [`start_poll`](Rcu::start_poll)).
    pub(crate) fn request_grace_period(&self, cookie: GpCookie) {
        self.check_cookie(cookie);
        self.with_env(|env| env.request_gp(cookie.seq));
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
            if in_any_callback() || ON_WORKER_THREAD.with(|w| w.get()) != 0 {
                // The last handle died inside a callback (say, a retired
                // value owned it). If it is one of this domain's callbacks,
                // this thread is a CB worker that cannot join itself; if it
                // is another domain's, draining this one here would stall
                // that domain's shard for our grace periods, and deadlock if
                // one of our callbacks waited for that domain. The same
                // goes for any worker thread outside a callback (a waker
                // the engine or a CB worker woke and dropped may own the
                // last handle). Either way a reaper thread does the
                // shutdown.
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
            .field(
                "membarrier",
                &(self.core.reader.fences() == ReaderFences::Light),
            )
            .field("completed_grace_periods", &self.completed_grace_periods())
            .finish()
    }
}

cfg_real! {
/// The process-wide default domain, created on first use.
///
/// It is never dropped: at process exit its worker threads (if started) are
/// simply ended with the process, callbacks still pending are **not run**,
/// and no grace period is waited for. Code whose callbacks must run before
/// exit (flushing, closing files) calls [`barrier`](Rcu::barrier) at the end
/// of `main`; code that must wait for readers calls
/// [`synchronize`](Rcu::synchronize). Not available in loom or shuttle builds,
/// where every model creates its own domain.
///
/// ```
/// let g = rcu_offload::global().read();
/// drop(g);
/// rcu_offload::global().synchronize();
/// rcu_offload::global().call(|| println!("after a grace period"));
/// rcu_offload::global().barrier(); // before leaving main: it has run
/// ```
pub fn global() -> &'static Rcu {
    static GLOBAL: std::sync::OnceLock<Rcu> = std::sync::OnceLock::new();
    GLOBAL.get_or_init(Rcu::new)
}
}
