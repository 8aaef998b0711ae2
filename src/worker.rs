//! The two worker loops: the GP worker of a group of shards (kernel:
//! `nocb_gp_wait`, the `rcuog` kthread) and the CB worker of one shard
//! (kernel: `nocb_cb_wait` + `rcu_do_batch`, the `rcuo` kthread).
//!
//! # GP worker
//!
//! ```text
//! loop:
//!   wake lock: sleep = true                       (1) before the scan
//!   for each shard of the group, under its list lock:
//!     advance done segments into DONE, wake the CB worker if it has work
//!     accelerate NEXT onto snapshot(); if newly numbered: request that GP
//!     note the earliest grace period still awaited
//!   wake lock: awaited = earliest
//!     sleep until sleep == false (someone woke us)  (2)
//!            or the awaited grace period is done    (3)
//! ```
//!
//! (1) is what makes a racing enqueue safe: an enqueuer that finds nothing
//! pending wakes us *after* adding its callback, so either our scan saw the
//! callback, or the wake found `sleep == true` and cleared it, and (2) does
//! not wait. (3) is ended by [`Nocb::gp_completed`], which the grace-period
//! engine calls after every grace period it waited for; `awaited` is set and
//! checked under the same lock that call takes, so a completion racing our
//! decision to sleep is never lost. Checked by the loom models
//! `enqueue_races_gp_worker_sleep` and `advance_races_gp_completion`
//! (mutants `gp_sleep_after_scan`, `await_unlocked`).
//!
//! The GP worker asks the engine only for the grace periods that
//! [`SegCbList::accelerate`](crate::segcblist::SegCbList::accelerate) newly
//! assigned: a number already assigned was requested when it was assigned,
//! and the engine's request is a wrap-safe maximum that is never lowered.
//!
//! # CB worker
//!
//! It marks itself asleep (under its `cb_wake` lock), then takes up to
//! `batch_limit` DONE callbacks out under the list lock, invokes them outside
//! any lock, each under `catch_unwind`, and lowers the shard length by the
//! number it finished only then, under the list lock again; it repeats until
//! DONE is empty and then sleeps unless someone woke it meanwhile. Whoever
//! fills DONE (the GP worker's advance, a barrier entrain on an otherwise
//! empty list) calls `Nocb::wake_cb_worker` after releasing the list lock:
//! the same mark-asleep-before-looking protocol as the GP worker's.
//! (The kernel's `rcu_do_batch` splices out the whole DONE segment in O(1)
//! and reinserts what its limit left over; a split of our chunked FIFO costs
//! a step per block, so taking all of a long DONE segment only to put most of
//! it back made a flood quadratic. We take no more than we run.) Checked by the loom
//! model `cb_worker_drains_while_enqueuing` (mutant `cb_sleep_after_drain`)
//! and `barrier_races_enqueue_and_invocation` (mutant `cb_len_early`).

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::callback::BlockCache;
use crate::domain::Core;
use crate::nocb::CallbackScope;
use crate::sync::{mutant, now_ns, Ordering};
use crate::wake::Level;

/// The GP worker of group `g`.
pub(crate) fn gp_worker(core: &std::sync::Arc<Core>, g: usize) {
    let nocb = &core.nocb;
    let group = &nocb.groups[g];
    loop {
        let mut flush_all = false;
        if !mutant("gp_sleep_after_scan") {
            let mut w = group.wake.lock();
            if w.stop {
                return;
            }
            w.sleep = true;
            flush_all = nocb.gp_worker_awake(group, &mut w);
        }
        let mut earliest: Option<u64> = None;
        // The bypass lists this scan leaves behind: `Some(true)` if all of
        // them hold only lazy callbacks.
        let mut left: Option<bool> = None;
        let now = now_ns();
        for i in group.shards.clone() {
            let shard = &nocb.shards[i];
            // The list lock is held for list operations only: the wake and
            // the engine request (system calls, possibly) come after it, so
            // that enqueuers never wait behind them.
            let (wake_cb, request, first) = {
                // A bypass that is old or long is flushed here; one that is
                // young, or whose lock is busy (an enqueuer or a flush holds
                // it), is left for later with a deferred wake (below). A
                // zero hint is safe: the enqueue that makes a bypass
                // non-empty asks for its own deferred wake.
                let mut bypass = None;
                if flush_all {
                    // Memory pressure: flush it whatever its age.
                    bypass = Some(shard.bypass.lock());
                } else if shard.bypass_len.load(Ordering::Acquire) != 0 {
                    match shard.bypass.try_lock() {
                        Some(b) => bypass = Some(b),
                        None => {
                            if !mutant("gp_trylock_fail_no_defer") {
                                left = Some(false);
                            }
                        }
                    }
                }
                let mut l = shard.list.lock();
                if let Some(mut b) = bypass {
                    let c = &nocb.cfg;
                    if flush_all || b.should_flush(now, c.bypass_max, c.tick_ns, c.lazy_ns) {
                        shard.flush_bypass(&mut b, &mut l);
                    } else if b.len() != 0 {
                        left = Some(left.unwrap_or(true) && b.lazy_only());
                    }
                }
                // Mutant `advance_early`: DONE without the grace period.
                l.cbs
                    .advance(|s| mutant("advance_early") || core.gp.is_done(s));
                let wake_cb = l.cbs.done() != 0;
                let mut request = None;
                if l.cbs.unnumbered() != 0 {
                    let s = core.gp.snapshot();
                    if l.cbs.accelerate(s) {
                        request = Some(s);
                    }
                }
                let first = l.cbs.waiting_for().next();
                (wake_cb, request, first)
            };
            if wake_cb {
                nocb.wake_cb_worker(i);
            }
            if let Some(s) = request {
                // Run the grace period here when loom models leave the
                // engine out (by choice), or when the engine thread could
                // not be started (the OS refused a thread; the panic hook
                // has reported it), rather than strand the callbacks.
                if nocb.cfg.inline_gp
                    || catch_unwind(AssertUnwindSafe(|| core.request_gp(s))).is_err()
                {
                    core.gp.wait_for(s, &core.reader);
                }
            }
            if let Some(s) = first {
                if earliest.is_none_or(|e| crate::seq::before(s, e)) {
                    earliest = Some(s);
                }
            }
        }
        if let Some(lazy_only) = left {
            // No stranded bypass: a timer will bring us back to flush it.
            let level = if lazy_only {
                Level::Lazy
            } else {
                Level::Bypass
            };
            nocb.defer_wake(core, g, level, now);
        }
        let mut w = group.wake.lock();
        if mutant("gp_clear_after_scan") && w.level() >= Level::Wake {
            // Broken variant: cancel a deferred WAKE after the scan rather
            // than before it, dropping one that an enqueue issued after the
            // scan passed its shard.
            w.cancel(false);
        }
        if mutant("gp_sleep_after_scan") {
            // Broken variant: a wake that raced the scan above is lost.
            w.sleep = true;
        }
        if mutant("await_unlocked") {
            // Broken variant: decide on the grace period before publishing
            // what we wait for, outside the lock that gp_completed takes.
            drop(w);
            let done = earliest.is_some_and(|s| core.gp.is_done(s));
            w = group.wake.lock();
            w.awaited = earliest;
            if !done {
                while w.sleep && !w.stop {
                    group.cv.wait(&mut w);
                }
            }
        } else {
            w.awaited = earliest;
            while w.sleep && !w.stop && !earliest.is_some_and(|s| core.gp.is_done(s)) {
                group.cv.wait(&mut w);
            }
        }
        w.awaited = None;
        w.wakeups += 1;
        if w.stop {
            return;
        }
    }
}

/// The CB worker of shard `i`.
pub(crate) fn cb_worker(core: &std::sync::Arc<Core>, i: usize) {
    run_callbacks(core, i, || false);
}

/// The CB worker's loop, until it is stopped or `enough()` holds after a
/// batch (loom models whose main thread plays the CB worker stop once their
/// callbacks ran).
pub(crate) fn run_callbacks(core: &Core, i: usize, enough: impl Fn() -> bool) {
    let nocb = &core.nocb;
    let shard = &nocb.shards[i];
    let mut cache = BlockCache::default();
    let _scope = CallbackScope::enter(core.reader.id());
    loop {
        if !mutant("cb_sleep_after_drain") {
            shard.cb_wake.lock().sleep = true;
        }
        // Drain DONE, a batch at a time.
        loop {
            let mut batch = {
                let mut l = shard.list.lock();
                let batch = l.cbs.extract_done(nocb.cfg.batch_limit);
                if mutant("cb_len_early") {
                    // Broken variant: count the batch as finished before
                    // running it.
                    shard.len_sub(&l, batch.len());
                }
                batch
            };
            if batch.len() == 0 {
                break;
            }
            let mut ran = 0;
            while let Some(slot) = batch.pop_front(&mut cache) {
                invoke_caught(nocb, i, slot);
                ran += 1;
                if crate::barrier::barrier_ran() {
                    account(core, i, ran, &mut cache);
                    ran = 0;
                    crate::barrier::signal_ran_barriers();
                }
            }
            account(core, i, ran, &mut cache);
        }
        if enough() {
            return;
        }
        let mut w = shard.cb_wake.lock();
        if mutant("cb_sleep_after_drain") {
            // Broken variant: a wake that raced the drain above is lost.
            w.sleep = true;
        }
        while w.sleep && !w.stop {
            shard.cb_cv.wait(&mut w);
        }
        if w.stop {
            // Shutdown stops workers only after a barrier saw every callback
            // run, so DONE is empty; the next pass drains it regardless.
            if shard.list.lock().cbs.done() == 0 {
                return;
            }
            continue;
        }
        w.wakeups += 1;
    }
}

/// Run one callback; a panic is caught, counted and reported, and so is a
/// panic while dropping the first panic's payload (user code too), so
/// nothing a callback does can kill its worker.
fn invoke_caught(nocb: &crate::nocb::Nocb, i: usize, slot: crate::callback::Slot) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| slot.invoke())) {
        nocb.report_panic(i);
        if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            std::mem::forget(again);
        }
    }
}

/// Account for `ran` callbacks of shard `i` that have returned: lower the
/// shard length (after they ran) and count them, under the list lock; hand
/// the blocks the worker emptied back to the shard for reuse.
fn account(core: &Core, i: usize, ran: usize, cache: &mut BlockCache) {
    let shard = &core.nocb.shards[i];
    let mut l = shard.list.lock();
    l.cbs.take_spare_blocks(cache);
    l.invoked += ran as u64;
    if !mutant("cb_len_early") {
        shard.len_sub(&l, ran);
    }
    drop(l);
    core.nocb.throttle.released(|| core.nocb.backlog());
}
