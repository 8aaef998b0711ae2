//! loom models of bypass lists, lazy callbacks and the memory bound
//! (src/nocb/bypass.rs, src/nocb/throttle.rs, the enqueue path in
//! src/nocb/enqueue.rs and the GP worker's bypass flush in
//! src/nocb/worker.rs).
//!
//! Like the models in wakeups.rs, the main thread waits for its callbacks
//! without kicking anyone, so a stranded callback is a loom deadlock.
//! `nobypass_limit(0)` puts every callback in a flood, that is, in the
//! bypass.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use rcu_offload::model::ModelBuilder;
use rcu_offload::Rcu;
use rcu_offload_loom_tests::{model, one_shard, run_until, Bound, Done, Ran};

/// (B1) Two flood enqueues go to the bypass (the first defers a BYPASS
/// wake) while the timer fires and the GP worker scans: the GP worker's
/// try-lock on the bypass may fail because the enqueuer holds it, it may
/// find the bypass young and leave it, or flush it. Whatever happens, both
/// callbacks run, after a grace period. Main thread plus GP worker, engine
/// and timer (4 threads; the main thread runs the callbacks).
///
/// Mutants caught: `bypass_no_defer` (the enqueue that makes the bypass
/// non-empty asks for no deferred wake) and `gp_trylock_fail_no_defer` (a
/// GP worker whose try-lock failed leaves the bypass without arming a
/// wake): deadlock.
#[test]
fn bypass_flush_races_enqueue() {
    model(Bound::Fixed(3), || {
        let rcu = one_shard()
            .nobypass_limit(0)
            .caller_runs_callbacks()
            .build()
            .unwrap();
        let done = Ran::new();
        for _ in 0..2 {
            let d = done.clone();
            let (r, c) = (rcu.clone(), rcu.snapshot());
            rcu.call(move || {
                assert!(r.poll(c), "bypassed callback ran before its grace period");
                d.one();
            });
        }
        run_until(&rcu, &done, 2);
        assert_eq!(done.count(), 2);
    });
}

/// (B2) `barrier()` races the GP worker's flush of a lazy bypass (the timer
/// may fire before, during or after the barrier): the barrier must flush
/// the bypass under both locks and entrain behind the lazy callback, so that
/// the callback has run when it returns. The GP worker runs its grace
/// periods itself (`ModelBuilder::inline_grace_periods`): main thread, GP worker, CB
/// worker and timer, 4 threads.
///
/// Mutant caught: `barrier_skips_bypass` (entrain without flushing):
/// assertion.
#[test]
fn barrier_entrain_races_bypass_flush() {
    model(Bound::Fixed(2), || {
        let rcu = one_shard().inline_grace_periods().build().unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        rcu.call_lazy(move || {
            r.fetch_add(1, Ordering::Relaxed);
        });
        rcu.barrier();
        assert_eq!(
            ran.load(Ordering::Relaxed),
            1,
            "barrier() returned before a lazy callback queued before it ran"
        );
    });
}

/// (B3) **Lazy promotion.** A lazy callback defers a LAZY wake; a non-lazy
/// callback on the same shard must then flush the lazy-only bypass into the
/// list (and wake the GP worker at once) rather than join it: when its
/// `call()` returns, the bypass is empty, unless the lazy timer already
/// fired (then model time passed the lazy timeout, and a GP worker may have
/// flushed the bypass and taken new callbacks on the way). Both run.
///
/// Mutant caught: `lazy_no_promote` (the non-lazy callback joins the
/// lazy-only bypass and waits for the lazy timer): assertion.
#[test]
fn lazy_promotion() {
    model(Bound::Fixed(2), || {
        let rcu = one_shard().caller_runs_callbacks().build().unwrap();
        let done = Ran::new();
        let d = done.clone();
        rcu.call_lazy(move || d.one());
        let d = done.clone();
        rcu.call(move || d.one());
        let fired = rcu_offload::model::wake_state(&rcu, 0).timer_wakes;
        let left = rcu_offload::model::bypass_len(&rcu, 0);
        assert!(
            fired != 0 || left == 0,
            "a non-lazy callback joined a lazy-only bypass ({left} left) instead of promoting it"
        );
        run_until(&rcu, &done, 2);
    });
}

/// (B4) **Throttling.** High water 1, low water 0: the third `call()` of an
/// ordinary thread finds the backlog over high water, expedites, and
/// blocks until the CB worker has run everything; then it queues. Every
/// callback runs. Five threads (main, GP worker, CB worker, engine, timer
/// for the rate-limited second wake), so bound 2.
///
/// Mutant caught: `throttle_no_fence` (no fence between the waiter's
/// registration and its look at the backlog, nor between the CB worker's
/// release and its look at the waiters: store buffering loses the wake):
/// deadlock.
#[test]
fn throttle_blocks_until_low_water() {
    model(Bound::Fixed(2), || {
        let rcu = Rcu::builder()
            .shards(1)
            .high_water(1)
            .low_water(0)
            .build()
            .unwrap();
        let done = Done::new();
        for _ in 0..3 {
            let d = done.clone();
            rcu.call(move || d.one());
        }
        done.wait_for(3);
    });
}
