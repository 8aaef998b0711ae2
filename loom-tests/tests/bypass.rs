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

use loom::thread;
use rcu_offload::model::{set_shard, ModelBuilder};
use rcu_offload::Rcu;
use rcu_offload_loom_tests::{
    model, one_shard, run_shard_until, run_until, Bound, Done, Plain, Ran,
};

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
/// The callback writes plain data (loom's `UnsafeCell`) that the caller
/// reads after `barrier()`: what the barrier waited for must be visible.
///
/// Mutants caught: `barrier_skips_bypass` (entrain without flushing):
/// assertion; `barrier_flush_no_wake` (the barrier's flush into a list with
/// nothing pending wakes nobody, leaving it to the LAZY timer armed for the
/// bypass it has just emptied, which under the timer discipline goes off
/// idle; the kernel's barrier waited out the lazy timeout this way):
/// deadlock.
#[test]
fn barrier_entrain_races_bypass_flush() {
    model(Bound::Fixed(3), || {
        let rcu = one_shard().inline_grace_periods().build().unwrap();
        let data = Plain::new();
        let d = data.clone();
        rcu.call_lazy(move || d.bump());
        rcu.barrier();
        assert_eq!(
            data.get(),
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
/// Mutants caught: `lazy_no_promote` (the non-lazy callback joins the
/// lazy-only bypass and waits for the lazy timer): assertion;
/// `enqueue_flush_no_wake` (the promoting flush into a list with nothing
/// pending owes no wake, so both wait for the LAZY timer, which under the
/// timer discipline goes off idle once its bypass is empty): deadlock.
#[test]
fn lazy_promotion() {
    model(Bound::Fixed(3), || {
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
/// for the rate-limited second wake).
///
/// Mutant caught: `throttle_no_fence` (no fence between the waiter's
/// registration and its look at the backlog, nor between the CB worker's
/// release and its look at the waiters: store buffering loses the wake):
/// deadlock.
#[test]
fn throttle_blocks_until_low_water() {
    model(Bound::Fixed(3), || {
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

/// `shards` shards served by one GP worker (`gp_stride(shards)`), a lazy
/// timeout longer than the model, the GP worker running its own grace
/// periods and the model's threads running the callbacks: the main thread
/// (and a helper, where a model has one), the GP worker and the timer.
/// Throttling is off unless a model sets its marks; every `call()` goes to
/// the list unless the shard is in a flood (more than `nobypass_limit`
/// calls in a tick).
fn one_group(shards: usize) -> rcu_offload::Builder {
    Rcu::builder()
        .shards(shards)
        .gp_stride(shards)
        .high_water(usize::MAX)
        .caller_runs_callbacks()
        .inline_grace_periods()
        .lazy_timer_never_fires()
}

/// Queue a callback that counts itself in `done` on shard `shard`.
fn on_shard(rcu: &Rcu, shard: usize, done: &std::sync::Arc<Ran>, kind: Kind) {
    set_shard(shard);
    let d = done.clone();
    match kind {
        Kind::Normal => rcu.call(move || d.one()),
        Kind::Lazy => rcu.call_lazy(move || d.one()),
    }
}

/// Which `call` a model makes.
#[derive(Clone, Copy)]
enum Kind {
    Normal,
    Lazy,
}

/// (B5) **A bypass does not wait out another shard's lazy timeout.** Shard
/// 1's lazy callback arms LAZY for the group; then a flood callback joins
/// shard 0's bypass and asks for BYPASS, which must take over the pending
/// LAZY with its one-tick deadline. The lazy timer never fires here, so
/// the flood callback runs only if it did. Afterwards a non-lazy callback
/// on shard 1 promotes the lazy one, and both run.
///
/// Mutant caught: `bypass_keeps_lazy_deadline` (BYPASS leaves the pending
/// LAZY and its far deadline): deadlock.
#[test]
fn bypass_takes_over_a_lazy_deadline() {
    model(Bound::Fixed(3), || {
        let rcu = one_group(2).nobypass_limit(0).build().unwrap();
        let done = Ran::new();
        on_shard(&rcu, 1, &done, Kind::Lazy);
        on_shard(&rcu, 0, &done, Kind::Normal);
        run_shard_until(&rcu, 0, &done, 1);
        on_shard(&rcu, 1, &done, Kind::Normal);
        run_shard_until(&rcu, 1, &done, 3);
    });
}

/// (B6) **The GP worker's scan re-arms for everything it leaves, on every
/// shard.** Inside a read-side section (so the first wake is deferred to
/// WAKE) shard 0 gets a callback on its list and then, in a flood
/// (`nobypass_limit(1)`), one in its bypass; shard 1 gets a lazy one. When
/// the GP worker's first scan comes after all three, it cancels the WAKE,
/// finds both bypasses young and must re-arm at the most demanding level
/// of the two (BYPASS), not the last one's (LAZY, which never fires here).
/// A non-lazy callback on shard 1 then promotes the lazy one.
///
/// Mutants caught: `scan_rearms_last_shard` (the re-armed level is the
/// last shard's) and `scan_leaves_no_timer` (a young bypass is left with
/// no timer at all): deadlock.
#[test]
fn scan_rearms_for_every_shard() {
    model(Bound::Fixed(2), || {
        let rcu = one_group(2).nobypass_limit(1).build().unwrap();
        let done = Ran::new();
        let g = rcu.read();
        on_shard(&rcu, 0, &done, Kind::Normal);
        on_shard(&rcu, 0, &done, Kind::Normal);
        on_shard(&rcu, 1, &done, Kind::Lazy);
        drop(g);
        run_shard_until(&rcu, 0, &done, 2);
        on_shard(&rcu, 1, &done, Kind::Normal);
        run_shard_until(&rcu, 1, &done, 4);
    });
}

/// (B7) **Memory pressure inside a read-side section flushes every bypass,
/// lazy ones included, whoever wakes the GP worker first.** Three shards,
/// one GP worker, high water 2. Shard 1 holds a lazy callback (the lazy
/// timer never fires here). Inside a section, shard 0's third callback
/// finds the backlog over high water: it may not block or wake anyone, so
/// it defers FORCE, which promises a flush of every bypass. After the
/// section a callback on shard 2 wakes the GP worker directly, racing the
/// FORCE timer and the GP worker's own wake-up. The lazy callback must run.
///
/// Mutants caught: `force_no_flush_all` (FORCE does not ask for the flush)
/// and `wake_drops_flush_all` (a direct wake that cancels the FORCE
/// forgets its flush): deadlock.
#[test]
fn pressure_in_reader_flushes_lazy_bypasses() {
    model(Bound::Fixed(3), || {
        let rcu = one_group(3)
            .high_water(2)
            .nobypass_limit(usize::MAX)
            .build()
            .unwrap();
        let done = Ran::new();
        on_shard(&rcu, 1, &done, Kind::Lazy);
        let g = rcu.read();
        for _ in 0..3 {
            on_shard(&rcu, 0, &done, Kind::Normal);
        }
        drop(g);
        on_shard(&rcu, 2, &done, Kind::Normal);
        run_shard_until(&rcu, 0, &done, 3);
        run_shard_until(&rcu, 1, &done, 4);
        run_shard_until(&rcu, 2, &done, 5);
    });
}

/// (B8) **A throttled producer is released without waiting out a lazy
/// timeout.** Two shards, one GP worker, high water 1, low water 0; a
/// helper thread runs the callbacks (main thread, helper, GP worker,
/// timer). Shard 1 holds a lazy callback (the lazy timer never fires
/// here); this thread queues three callbacks on shard 0, and the third
/// finds the backlog over high water unless the helper was quick: then it
/// blocks until the backlog is at low water, the lazy callback included,
/// so its expedite must flush the lazy bypass too. Where nobody was
/// throttled, a non-lazy callback on shard 1 flushes it instead.
///
/// Mutant caught: `expedite_skips_lazy` (the expedite flushes only
/// bypasses holding a non-lazy callback): deadlock.
#[test]
fn throttled_producer_flushes_lazy_bypasses() {
    model(Bound::Fixed(2), || {
        let rcu = one_group(2)
            .high_water(1)
            .low_water(0)
            .nobypass_limit(usize::MAX)
            .build()
            .unwrap();
        let (ran0, ran1) = (Ran::new(), Ran::new());
        on_shard(&rcu, 1, &ran1, Kind::Lazy);
        let helper = {
            let (rcu, ran0, ran1) = (rcu.clone(), ran0.clone(), ran1.clone());
            thread::spawn(move || {
                run_shard_until(&rcu, 0, &ran0, 2);
                run_shard_until(&rcu, 1, &ran1, 1);
                run_shard_until(&rcu, 0, &ran0, 3);
            })
        };
        for _ in 0..3 {
            on_shard(&rcu, 0, &ran0, Kind::Normal);
        }
        if rcu.stats().throttled == 0 {
            on_shard(&rcu, 1, &ran1, Kind::Normal);
        } else {
            assert_eq!(ran1.count(), 1, "a throttled call returned above low water");
        }
        helper.join().unwrap();
    });
}
