//! Offloaded callbacks: the kernel's no-CBs machinery (kernel/rcu/tree_nocb.h)
//! in user space. A shard is an offloaded `rcu_data` with its `cblist` and
//! its `rcuo` CB worker; a group is the set of shards one `rcuog` GP worker
//! serves.
//!
//! ```text
//!  call(f) ─► feed.rs: staged in the thread's feed ─► every 64 calls, or
//!     │        on a GP worker's scan or a barrier, handed to a shard's list
//!     ▼ (lazy, staging off, or no thread-locals)
//!  enqueue.rs: bypass (bypass.rs) or segmented list (shard.rs)
//!                 │ the list had nothing pending
//!                 ▼
//!  wake.rs: wake the group's GP worker now, or defer to timer.rs
//!                 ▼
//!  worker.rs, GP worker: flush, advance, accelerate, request GPs ──► engine
//!    sleep (wake.rs) until woken or the awaited GP is done ◄── gp_completed
//!    advance into DONE ─► wake the shard's CB worker
//!  worker.rs, CB worker: take DONE callbacks, run them outside every lock
//!  barrier.rs: flush and entrain on every non-empty shard, wait
//!  throttle.rs: the memory bound on pending callbacks
//! ```
//!
//! This module owns the machinery's state and its lifecycle: starting the
//! workers (through the [`Env`] the domain hands in; see env.rs),
//! shutting them down, and reporting callback panics. Each mechanism's
//! invariant, and the loom models that check it, open its own file.

mod barrier;
mod bypass;
mod discipline;
mod enqueue;
mod env;
mod feed;
mod panics;
mod shard;
mod throttle;
mod timer;
mod wake;
mod worker;

use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::callback::BLOCK;
use crate::mutants::{model_or_real, mutant};
use crate::stall::StallWatch;
use crate::sync::{try_hold, AtomicBool, AtomicU64, HeldLocks, JoinHandle, Mutex, Ordering};

use self::barrier::BarrierState;
pub(crate) use self::barrier::BarrierWait;
use self::bypass::FlushRule;
use self::feed::{Feed, Take, FEED_SLOTS};
use self::shard::Shard;
use self::throttle::Throttle;
use self::wake::{Delays, Wakes};

pub(crate) use self::env::{default_stride, CallKind, Config, Env, ModelOptions, Spawn, Worker};
pub use self::env::{ShardChoice, Staging};
pub use self::panics::CallbackPanic;
pub(crate) use self::panics::PanicHook;
use self::panics::PanicReports;
pub(crate) use self::shard::{in_any_callback, in_callback_of};
crate::mutants::model_only! {
    pub(crate) use self::shard::set_shard_hint;
    pub(crate) use self::wake::Level;
}

/// Callbacks whose blocks a shard's pool may keep, however high (or off)
/// the memory bound: 2^20 callbacks, 32 MiB of blocks.
const MAX_POOLED_CALLBACKS: usize = 1 << 20;

/// Spare callback blocks a shard keeps (its pool, callback.rs): enough for
/// one shard to hold the whole high-water mark, the most a throttled flood
/// queues on it, plus what the throttle's check lets through before it
/// blocks (a feed's worth), a CB worker's batch and a few partly filled
/// blocks; so that such a flood recycles its blocks and never frees or
/// allocates one. The pool is kept while the domain lives: it is the memory
/// the bound allows the queues anyway (32 bytes per callback of the
/// high-water mark, per shard that has held that many), and giving it back
/// when a shard idles would make every burst after a pause allocate again.
fn pool_blocks(cfg: &Config) -> usize {
    let callbacks = cfg.high_water.min(MAX_POOLED_CALLBACKS) + cfg.batch_limit + FEED_SLOTS;
    callbacks.div_ceil(BLOCK) + 4
}

/// What the domain hands the machinery besides its configuration: the
/// stall detector it shares with the readers, the callback-panic hook, and
/// the workers' name prefix.
pub(crate) struct Hooks {
    pub(crate) stall: Arc<StallWatch>,
    pub(crate) on_panic: Option<PanicHook>,
    pub(crate) thread_name_prefix: String,
}

/// Worker threads, started lazily.
struct Workers {
    group_started: Vec<bool>,
    handles: Vec<JoinHandle<()>>,
}

/// Per-domain callback machinery.
pub(crate) struct Nocb {
    pub(crate) shards: Box<[CachePadded<Shard>]>,
    pub(crate) wakes: Wakes,
    pub(crate) cfg: Config,
    /// The domain's id, which keys the threads' feeds; kept here, beside
    /// the configuration the enqueue reads anyway, rather than read from
    /// the reader state, whose cache line the grace-period side writes.
    domain: u64,
    pub(crate) throttle: Throttle,
    /// When the last expedite happened (rate-limits them to one a tick).
    last_expedite: AtomicU64,
    workers: Mutex<Workers>,
    /// Some worker has ever been started (nothing to drain otherwise).
    any_started: AtomicBool,
    pub(crate) panics: PanicReports,
    /// Stall warnings of barriers (the grace periods' are the readers').
    pub(crate) stall: Arc<StallWatch>,
    /// The workers' names start with it (barrier stall reports name them).
    thread_name_prefix: String,
    /// This is a forked child's copy of the domain (domain/fork.rs): shards
    /// may hold callbacks without workers. Not part of any modelled
    /// protocol (no model forks): a plain std atomic.
    #[cfg(not(any(loom, shuttle)))]
    forked: std::sync::atomic::AtomicBool,
    /// This is a forked child whose only thread forked inside one of this
    /// domain's callbacks: it stops being a CB worker as soon as that
    /// callback returns. Real builds only, a plain std atomic.
    #[cfg(not(any(loom, shuttle)))]
    forked_in_callback: std::sync::atomic::AtomicBool,
    barrier: BarrierState,
    /// Every thread's feed for this domain (feed.rs), until a GP worker
    /// drops an abandoned one. Lock order: this, then a feed's drain lock,
    /// then a shard's locks.
    feeds: Mutex<Vec<Arc<Feed>>>,
}

impl Nocb {
    pub(crate) fn new(cfg: Config, domain: u64, hooks: Hooks) -> Nocb {
        let delays = Delays {
            tick: cfg.tick_ns,
            lazy: cfg.lazy_ns,
        };
        let wakes = Wakes::new(cfg.shards, cfg.stride, delays, cfg.model);
        Nocb {
            shards: (0..cfg.shards)
                .map(|_| CachePadded::new(Shard::new(pool_blocks(&cfg))))
                .collect(),
            workers: Mutex::new(Workers {
                group_started: vec![false; wakes.groups.len()],
                handles: Vec::new(),
            }),
            wakes,
            throttle: Throttle::new(cfg.high_water, cfg.low_water, cfg.shards),
            last_expedite: AtomicU64::new(0),
            cfg,
            domain,
            any_started: AtomicBool::new(false),
            panics: PanicReports::new(hooks.on_panic),
            stall: hooks.stall,
            thread_name_prefix: hooks.thread_name_prefix,
            #[cfg(not(any(loom, shuttle)))]
            forked: std::sync::atomic::AtomicBool::new(false),
            #[cfg(not(any(loom, shuttle)))]
            forked_in_callback: std::sync::atomic::AtomicBool::new(false),
            barrier: BarrierState::new(),
            feeds: Mutex::new(Vec::new()),
        }
    }

    /// Wait until every callback queued before this call has run (see
    /// barrier.rs). The caller has checked that it is neither reading nor
    /// a callback of this domain.
    pub(crate) fn barrier(&self, env: Env<'_>) {
        let worker_name = |i| Worker::Cb { shard: i }.name(&self.thread_name_prefix);
        self.barrier.run(
            &self.shards,
            &self.wakes,
            || self.take_feeds_for_barrier(env),
            &self.stall,
            worker_name,
        );
    }

    /// A barrier's first step: every thread's staged callbacks go to their
    /// shards, and (in a forked child) those shards get workers.
    fn take_feeds_for_barrier(&self, env: Env<'_>) {
        self.take_feeds(Take::Barrier);
        self.restart_after_fork(env);
    }

    /// `barrier()` without the wait: the returned [`BarrierWait`] completes
    /// once every callback queued before this call has run.
    pub(crate) fn barrier_async(&self, env: Env<'_>) -> BarrierWait {
        self.barrier.start(&self.shards, &self.wakes, || {
            self.take_feeds_for_barrier(env)
        })
    }

    /// Called by the grace-period engine after each grace period it waited
    /// for, with the engine's verdict on a sequence number.
    pub(crate) fn gp_completed(&self, is_done: impl Fn(u64) -> bool) {
        self.wakes.gp_completed(is_done);
    }

    /// The timer thread's loop.
    pub(crate) fn run_timer(&self) {
        model_or_real!(
            self.run_disciplined_timer(),
            self.wakes.run_timer(|g, d| self.wakes.timer_fired(g, d))
        )
    }

    /// When this domain's bypass lists are flushed.
    fn flush_rule(&self) -> FlushRule {
        FlushRule {
            max: self.cfg.bypass_max,
            tick_ns: self.cfg.tick_ns,
            lazy_ns: self.cfg.lazy_ns,
        }
    }

    /// The domain's backlog: callbacks queued and not yet finished.
    pub(crate) fn backlog(&self) -> usize {
        self.shards.iter().map(|s| s.backlog()).sum()
    }

    /// Start shard `i`'s CB worker and its group's GP worker, if not yet.
    #[cold]
    fn start_workers(&self, env: Env<'_>, i: usize) {
        let mut w = self.workers.lock();
        let shard = &self.shards[i];
        if shard.started.load(Ordering::Relaxed) {
            return;
        }
        // Before spawning: if a spawn below fails, shutdown must still stop
        // whatever did start.
        self.any_started.store(true, Ordering::Relaxed);
        let group = self.wakes.group_index(i);
        if !w.group_started[group] {
            let leader = self.wakes.groups[group].leader;
            w.handles.push(env.start(Worker::Gp { group, leader }));
            w.group_started[group] = true;
        }
        if !self.cfg.model.caller_runs_callbacks {
            w.handles.push(env.start(Worker::Cb { shard: i }));
        }
        shard.started.store(true, Ordering::Release);
    }

    /// Run every pending callback, then stop and join the workers and the
    /// timer. Called once, when the last handle of the domain is dropped,
    /// before the grace-period engine stops (the callbacks need its grace
    /// periods).
    pub(crate) fn shutdown(&self, env: Env<'_>) {
        if !self.any_started.load(Ordering::Acquire) {
            self.wakes.stop_timer();
            return;
        }
        if !mutant!(ShutdownNoDrain) {
            // Callbacks may queue callbacks: repeat until a barrier saw no
            // new callback queued while it ran. Then every callback ever
            // queued has run, and none can be queued any more (no handle is
            // left outside, and no callback is left to run).
            loop {
                let before = self.total_queued();
                self.barrier(env);
                if self.total_queued() == before && !self.feeds_hold_callbacks() {
                    break;
                }
            }
        }
        self.wakes.stop_gp_workers();
        for shard in self.shards.iter() {
            shard.cb.stop();
        }
        let handles = std::mem::take(&mut self.workers.lock().handles);
        for h in handles {
            if h.join().is_err() {
                panic!("rcu_offload: a callback worker thread panicked");
            }
        }
        self.wakes.stop_timer();
    }

    /// Hold every lock of the machinery that is only ever held briefly, for
    /// a fork (domain/fork.rs), or nothing if one is taken: the workers'
    /// and feeds' registries, every feed's drain lock, every shard's locks,
    /// the wake and timer locks, the throttle's, and the barriers' list.
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    pub(crate) fn hold_for_fork<'a>(&'a self, held: &mut HeldLocks<'a>) -> bool {
        if !try_hold(&self.workers, held) {
            return false;
        }
        let Some(list) = self.feeds.try_lock() else {
            return false;
        };
        let feeds: *const [Arc<Feed>] = &list[..];
        held.push(list);
        // SAFETY: the list's guard is in `held` now, which releases locks
        // in the reverse order of their taking: every drain lock taken
        // below is released before the list's. Until then nobody can
        // change the list (only done under its lock), so the slice stays
        // valid, and each feed stays alive (the list owns an `Arc` of it)
        // for as long as its drain guard does. The slice is used only
        // here, while `held` is alive.
        let feeds: &'a [Arc<Feed>] = unsafe { &*feeds };
        feeds.iter().all(|f| try_hold(&f.drain, held))
            && self.shards.iter().all(|s| s.hold_for_fork(held))
            && self.wakes.hold_for_fork(held)
            && self.throttle.hold_for_fork(held)
            && self.barrier.hold_for_fork(held)
    }

    /// In the child of a fork (one thread, the caller; every lock of
    /// [`hold_for_fork`](Nocb::hold_for_fork) was held across the fork and
    /// released): no worker of the parent exists here. Every shard counts
    /// as not started, so the next `call()`, `barrier()` or the domain's
    /// drop starts its workers; the callbacks still queued (in lists,
    /// bypasses, and the parent's threads' feeds) run then, in the child as
    /// in the parent.
    ///
    /// # Safety
    ///
    /// Only in the child of a fork, before it starts any thread, with no
    /// guard of the domain's locks alive on the calling thread.
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) unsafe fn after_fork_child(&self) {
        self.forked
            .store(true, std::sync::atomic::Ordering::Relaxed);
        {
            let mut w = self.workers.lock();
            for h in w.handles.drain(..) {
                // The parent's threads: never joined here.
                std::mem::forget(h);
            }
            w.group_started.iter_mut().for_each(|g| *g = false);
        }
        for shard in self.shards.iter() {
            shard.after_fork_child();
        }
        self.wakes.after_fork_child();
        self.throttle.after_fork_child();
        // SAFETY: the caller's contract.
        unsafe { self.barrier.after_fork_child() };
        feed::orphan_others_after_fork(&self.feeds.lock(), self.domain);
    }

    /// In a forked child, start the workers of every shard that holds
    /// callbacks and has none (the parent's are not here): called by
    /// barriers and by GP workers' scans, which may move the callbacks of
    /// the parent's threads' feeds to shards nobody has used in the child.
    /// Nothing to do, and nothing read, in a process that never forked.
    #[inline]
    pub(crate) fn restart_after_fork(&self, env: Env<'_>) {
        #[cfg(not(any(loom, shuttle)))]
        if self.forked.load(std::sync::atomic::Ordering::Relaxed) {
            for (i, shard) in self.shards.iter().enumerate() {
                if !shard.started.load(Ordering::Acquire) && shard.backlog() != 0 {
                    self.start_workers(env, i);
                }
            }
        }
        #[cfg(any(loom, shuttle))]
        let _ = env;
    }

    /// Did the callback this thread just ran call `fork()`, making this
    /// thread a forked child's only thread? Always `false` in models.
    #[inline]
    pub(crate) fn forked_here(&self) -> bool {
        #[cfg(not(any(loom, shuttle)))]
        {
            self.forked_in_callback
                .load(std::sync::atomic::Ordering::Relaxed)
        }
        #[cfg(any(loom, shuttle))]
        {
            false
        }
    }

    /// In a forked child whose forking thread was running one of this
    /// domain's callbacks: make that thread leave the CB worker's loop when
    /// the callback returns (its batch and accounting are the parent's).
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) fn stop_forking_worker(&self) {
        self.forked_in_callback
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Does some thread's feed hold a callback it staged (a callback run
    /// during the last barrier may have staged one)?
    fn feeds_hold_callbacks(&self) -> bool {
        self.feeds
            .lock()
            .iter()
            .any(|f| f.holds_callbacks(&f.drain.lock()))
    }

    /// Callbacks ever queued by `call()`, over all shards.
    fn total_queued(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.bypass.lock().queued + s.list.lock().queued)
            .sum()
    }
}
