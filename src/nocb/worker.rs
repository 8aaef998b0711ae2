//! The two worker loops: the GP worker of a group of shards (kernel:
//! `nocb_gp_wait`, the `rcuog` kthread) and the CB worker of one shard
//! (kernel: `nocb_cb_wait` + `rcu_do_batch`, the `rcuo` kthread).
//!
//! # GP worker
//!
//! ```text
//! loop:
//!   begin_scan (wake.rs): marked asleep, moot WAKE/FORCE cancelled
//!   take what the group's feeds staged (feed.rs); close the idle ones
//!   for each shard of the group, under its list lock:
//!     flush its bypass if old or long (or all of them, under pressure)
//!     advance done segments into DONE, wake the CB worker if it has work
//!     accelerate NEXT onto snapshot(); if newly numbered: request that GP
//!     note the earliest grace period still awaited
//!   end_scan (wake.rs): defer a wake for bypasses left behind, then sleep
//!     until woken or the earliest awaited grace period is done
//! ```
//!
//! The sleep handshake, and why no wake is lost, is in wake.rs. The GP
//! worker asks the engine only for the grace periods that
//! [`SegCbList::accelerate`](crate::segcblist::SegCbList::accelerate) newly
//! assigned: a number already assigned was requested when it was assigned,
//! and the engine's request is a wrap-safe maximum that is never lowered.
//! A bypass that is young, or whose lock is busy (an enqueuer or a flush
//! holds it), is left for later with a deferred wake at the level that
//! covers every bypass left on every shard of the group: BYPASS if any
//! holds a non-lazy callback or was busy, LAZY only if all are lazy-only
//! (mutants `gp_trylock_fail_no_defer` and `scan_leaves_no_timer` forget
//! it, for a busy lock or a young bypass; `scan_rearms_last_shard` takes
//! the last shard's level; loom models `bypass_flush_races_enqueue`,
//! `scan_rearms_for_every_shard`).
//!
//! # CB worker
//!
//! It marks itself asleep (wake.rs), then takes up to `batch_limit` DONE
//! callbacks out under the list lock, invokes them outside any lock, each
//! under `catch_unwind`, and lowers the shard length by the number it
//! finished only then, under the list lock again (shard.rs); it repeats
//! until DONE is empty and then sleeps unless someone woke it meanwhile.
//! The kernel's `rcu_do_batch` splices out the whole DONE segment in O(1)
//! and reinserts what its limit left over; a split of our chunked FIFO costs
//! a step per block, so taking all of a long DONE segment only to put most
//! of it back would make a flood quadratic: we take no more than we run.
//! Checked by the loom models `cb_worker_drains_while_enqueuing` and
//! `barrier_races_enqueue_and_invocation`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::callback::{BlockCache, CbQueue, Slot};
use crate::mutants::mutant;
use crate::seq;
use crate::sync::now_ns;

use super::barrier::{barrier_ran, signal_ran_barriers};
use super::env::Env;
use super::feed::Take;
use super::shard::CallbackScope;
use super::wake::{FlushBypasses, LeftBehind, Run};
use super::Nocb;

/// What one shard's part of a GP worker's scan found.
struct ShardScan {
    /// DONE is non-empty: its CB worker has work.
    wake_cb: bool,
    /// A grace period the scan newly numbered callbacks for.
    request: Option<u64>,
    /// The first grace period the shard's callbacks still wait for.
    first: Option<u64>,
}

impl Nocb {
    /// The GP worker of group `g`, until shutdown.
    pub(crate) fn gp_worker(&self, env: Env<'_>, g: usize) {
        while let Some(flush) = self.wakes.begin_scan(g) {
            let mut earliest: Option<u64> = None;
            // Threads' feeds first (feed.rs): what they staged joins the
            // lists this scan is about to look at.
            self.take_feeds(Take::Scan(g));
            self.restart_after_fork(env);
            let mut left = LeftBehind::Nothing;
            let now = now_ns();
            for i in self.wakes.groups[g].shards.clone() {
                let scan = self.scan_shard(env, i, flush, now, &mut left);
                if scan.wake_cb {
                    self.shards[i].cb.wake();
                }
                if let Some(s) = scan.request {
                    // Run the grace period here when a model leaves the
                    // engine out (by choice), or when the engine thread
                    // could not be started (the OS refused a thread; the
                    // panic hook has reported it), rather than strand the
                    // callbacks.
                    if self.cfg.model.inline_gp
                        || catch_unwind(AssertUnwindSafe(|| env.request_gp(s))).is_err()
                    {
                        // Runs the wakers of tasks awaiting that grace
                        // period; one may fork (fork.rs).
                        env.gp.wait_for(s, env.reader);
                        if self.forked_here() {
                            return;
                        }
                    }
                }
                if let Some(s) = scan.first {
                    if earliest.is_none_or(|e| seq::before(s, e)) {
                        earliest = Some(s);
                    }
                }
            }
            let is_done = |s| env.gp.is_done(s);
            if self.wakes.end_scan(env, g, now, left, earliest, is_done) == Run::Stop {
                return;
            }
        }
    }

    /// One shard's part of a scan. The list lock is held for list
    /// operations only: the wakes and the engine request (system calls,
    /// possibly) come after it, so that enqueuers never wait behind them.
    fn scan_shard(
        &self,
        env: Env<'_>,
        i: usize,
        flush: FlushBypasses,
        now: u64,
        left: &mut LeftBehind,
    ) -> ShardScan {
        let shard = &self.shards[i];
        let bypass = match flush {
            FlushBypasses::All => Some(shard.bypass.lock()),
            FlushBypasses::WhenDue if shard.bypass_nonempty_hint() => {
                let b = shard.bypass.try_lock();
                if b.is_none() && !mutant!(GpTrylockFailNoDefer) {
                    // Busy: its contents are unknown, so not lazy-only.
                    *left = (*left).max(LeftBehind::Normal);
                }
                b
            }
            FlushBypasses::WhenDue => None,
        };
        let mut l = shard.list.lock();
        if let Some(mut b) = bypass {
            let due = b.should_flush(now, self.flush_rule());
            if flush == FlushBypasses::All || due {
                // The GP worker owes itself nothing: it is scanning.
                let _ = shard.flush_bypass(&mut b, &mut l);
            } else if b.len() != 0 && !mutant!(ScanLeavesNoTimer) {
                let this = if b.lazy_only() {
                    LeftBehind::LazyOnly
                } else {
                    LeftBehind::Normal
                };
                // Mutant `scan_rearms_last_shard`: the last shard's wins.
                *left = if mutant!(ScanRearmsLastShard) {
                    this
                } else {
                    (*left).max(this)
                };
            }
        }
        // Mutant `advance_early`: DONE without the grace period.
        l.cbs
            .advance(|s| mutant!(AdvanceEarly) || env.gp.is_done(s));
        let mut request = None;
        if l.cbs.unnumbered() != 0 {
            let s = env.gp.snapshot();
            if l.cbs.accelerate(s) {
                request = Some(s);
            }
        }
        let first = l.cbs.waiting_for().next();
        ShardScan {
            wake_cb: l.cbs.done() != 0,
            request,
            first,
        }
    }

    /// The CB worker of shard `i`, until shutdown.
    pub(crate) fn cb_worker(&self, env: Env<'_>, i: usize) {
        self.run_callbacks(env, i, || false);
    }

    /// The CB worker's loop, until it is stopped or `enough()` holds after
    /// a batch (models whose main thread plays the CB worker stop once
    /// their callbacks ran).
    pub(crate) fn run_callbacks(&self, env: Env<'_>, i: usize, enough: impl Fn() -> bool) {
        let shard = &self.shards[i];
        let mut cache = BlockCache::default();
        // Reused from batch to batch, with its block index.
        let mut batch = CbQueue::default();
        let _scope = CallbackScope::enter(env.reader.id());
        loop {
            shard.cb.begin_drain();
            // Drain DONE, a batch at a time.
            loop {
                shard.take_done(&mut shard.list.lock(), self.cfg.batch_limit, &mut batch);
                if batch.len() == 0 {
                    break;
                }
                let mut ran = 0;
                while let Some(slot) = batch.pop_front(&mut cache) {
                    self.invoke_caught(i, slot);
                    if self.forked_here() {
                        return self.leave_after_fork(batch);
                    }
                    ran += 1;
                    if barrier_ran() {
                        self.account(i, ran, &mut cache);
                        ran = 0;
                        // Runs the wakers of async barriers.
                        signal_ran_barriers();
                        if self.forked_here() {
                            return self.leave_after_fork(batch);
                        }
                    }
                }
                self.account(i, ran, &mut cache);
            }
            if enough() {
                return;
            }
            let done_empty = || shard.list.lock().cbs.done() == 0;
            if shard.cb.sleep(done_empty) == Run::Stop {
                return;
            }
        }
    }

    /// This thread called `fork()` inside a callback or a waker it ran, and
    /// is now a forked child's only thread: leave the CB worker's loop,
    /// whose batch and accounting are the parent's. The batch's callbacks
    /// are forgotten: neither run nor dropped here (fork.rs).
    #[cold]
    fn leave_after_fork(&self, batch: CbQueue) {
        std::mem::forget(batch);
    }

    /// Run one callback; a panic is caught, counted and reported
    /// (panics.rs), so nothing a callback does can kill its worker.
    fn invoke_caught(&self, i: usize, slot: Slot) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| slot.invoke())) {
            let worker = super::env::Worker::Cb { shard: i }.name(&self.thread_name_prefix);
            self.panics.report(i, &worker, payload);
        }
    }

    /// Account for `ran` callbacks of shard `i` that have returned (shard
    /// length and count, under the list lock); hand the blocks the worker
    /// emptied back to the shard for reuse; release throttled callers.
    fn account(&self, i: usize, ran: usize, cache: &mut BlockCache) {
        let shard = &self.shards[i];
        let mut l = shard.list.lock();
        l.cbs.take_spare_blocks(cache);
        shard.finished(&mut l, ran);
        drop(l);
        self.throttle.released(|| self.backlog());
    }
}
