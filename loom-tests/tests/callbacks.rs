//! loom models of the offloaded-callback pipeline (src/nocb/enqueue.rs,
//! src/nocb/wake.rs, src/nocb/worker.rs, src/nocb/barrier.rs, src/cell.rs).
//!
//! Every model lets its main thread block, kicking nobody, until the
//! callbacks it queued have run ([`Done::wait_for`]): a lost wakeup anywhere
//! leaves every thread blocked and loom reports a deadlock. The domain has
//! one shard, so each model runs the main thread plus the shard's GP worker,
//! CB worker and the grace-period engine (4 threads), or one more thread
//! where the race needs a second producer.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use rcu_offload::model::ModelBuilder;
use rcu_offload::{Rcu, RcuCell};
use rcu_offload_loom_tests::{
    model, one_shard, run_until, Bound, Done, Objects, Plain, Ran, Versioned, POISON,
};

/// One shard, no throttling, and no wake rate-limiting: model time stands
/// still, so rate-limiting would defer every direct wake after the first to
/// the timer thread, one thread more than these models can afford. The
/// deferral is the same path as a deferral from a read-side section, which
/// (2) and the models in wakeups.rs run.
fn domain() -> Rcu {
    one_shard().no_wake_rate_limit().build().unwrap()
}

/// [`domain`] with the GP worker running its grace periods itself, one
/// thread fewer: for the models of the CB worker and `barrier()`, where
/// the engine thread only adds interleavings that other models cover.
fn domain_without_engine() -> Rcu {
    one_shard()
        .no_wake_rate_limit()
        .inline_grace_periods()
        .build()
        .unwrap()
}

/// (1) An enqueue that makes the shard go from nothing pending to something
/// pending races the GP worker's first scan and its decision to sleep; then a
/// second callback arrives while the worker sleeps on the first one's grace
/// period or on nothing. Both must run. Mutant caught: `gp_sleep_after_scan`
/// (the GP worker marks itself asleep after its scan, so the wake that raced
/// the scan is lost) and `enqueue_no_wake`.
#[test]
fn enqueue_races_gp_worker_sleep() {
    model(Bound::Fixed(3), || {
        let rcu = domain();
        let done = Done::new();
        for _ in 0..2 {
            let d = done.clone();
            rcu.call(move || d.one());
        }
        done.wait_for(2);
    });
}

/// (2) The GP worker decides to sleep on a grace period while the engine
/// completes it and looks for GP workers to wake; and the callback, queued
/// inside a read-side section of the caller, must not run before that
/// section ends. Queued inside the section, its wake is deferred to the
/// timer thread, so the main thread runs the callbacks itself (main, GP
/// worker, engine, timer: 4 threads). Mutants caught: `await_unlocked` (the
/// worker checks the grace period before publishing what it awaits: the
/// completion's notification is lost) and `gp_done_no_notify`. (It no
/// longer catches `advance_early`: the main thread runs the callbacks only
/// after its section; `rcu_cell_replace_and_read` catches it.)
#[test]
fn advance_races_gp_completion() {
    model(Bound::Fixed(3), || {
        let rcu = one_shard().caller_runs_callbacks().build().unwrap();
        let objs = Arc::new(Objects::new(2));
        let ran = Ran::new();
        let g = rcu.read();
        let i = objs.current();
        let old = objs.publish(1);
        let (o, r) = (objs.clone(), ran.clone());
        rcu.call(move || {
            o.poison(old);
            r.one();
        });
        objs.check(i);
        drop(g);
        run_until(&rcu, &ran, 1);
        assert_eq!(objs.value(0), POISON);
    });
}

/// (2b) The grace period a GP worker sleeps on is completed by a
/// `synchronize()` caller on another thread rather than by the engine: the
/// engine must still answer the GP worker's request, or the callback is
/// stranded. Mutant caught: `engine_skips_done_request` (the engine, finding
/// the requested grace period already done, goes back to sleep without
/// telling anyone). Found by the integration test
/// `callback_runs_when_synchronize_completes_its_grace_period`, which forces
/// the interleaving with real threads and scheduler priorities.
#[test]
fn gp_completed_by_synchronize() {
    model(Bound::Fixed(2), || {
        let rcu = domain();
        let done = Done::new();
        let d = done.clone();
        rcu.call(move || d.one());
        let syncer = {
            let rcu = rcu.clone();
            thread::spawn(move || rcu.synchronize())
        };
        done.wait_for(1);
        syncer.join().unwrap();
    });
}

/// (3) The CB worker drains DONE callbacks while a second thread enqueues
/// more: the worker must notice callbacks that become DONE while it is busy
/// invoking, and invoke each exactly once. Mutant caught:
/// `cb_sleep_after_drain` (the worker marks itself asleep after draining, so
/// a wake that raced the drain is lost).
#[test]
fn cb_worker_drains_while_enqueuing() {
    model(Bound::Fixed(2), || {
        let rcu = domain_without_engine();
        let done = Done::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let producer = {
            let (rcu, d, r) = (rcu.clone(), done.clone(), runs.clone());
            thread::spawn(move || {
                rcu.call(move || {
                    r.fetch_add(1, Ordering::Relaxed);
                    d.one();
                })
            })
        };
        let (d, r) = (done.clone(), runs.clone());
        rcu.call(move || {
            r.fetch_add(1, Ordering::Relaxed);
            d.one();
        });
        done.wait_for(2);
        producer.join().unwrap();
        assert_eq!(runs.load(Ordering::Relaxed), 2);
    });
}

/// (4) `barrier()` entrains while a callback queued before it is being
/// advanced or invoked, and while another thread enqueues: it never returns
/// before the earlier callback ran, never hangs, and what the callback
/// wrote (plain data, loom's `UnsafeCell`) is visible to the caller once it
/// returns. Mutants caught: `cb_len_early` (the CB worker lowers the shard
/// length before running its batch, so the barrier sees an empty shard and
/// returns early): assertion or causality violation; `barrier_len_unlocked`
/// (the barrier skips a shard whose length a relaxed, lock-free load reads
/// as zero: it may return after the callback ran, but without acquiring
/// its write): causality violation.
#[test]
fn barrier_races_enqueue_and_invocation() {
    model(Bound::Fixed(3), || {
        let rcu = domain_without_engine();
        let data = Plain::new();
        let d = data.clone();
        rcu.call(move || d.bump());
        let racer = {
            let rcu = rcu.clone();
            thread::spawn(move || rcu.call(|| ()))
        };
        rcu.barrier();
        assert_eq!(
            data.get(),
            1,
            "barrier() returned before a callback queued before it ran"
        );
        racer.join().unwrap();
    });
}

/// (4b) Two barriers at once: one caller queued a callback first, the
/// other did not. Whether the first caller runs its own barrier or is served
/// by the other's, it never returns before its callback ran. The serving
/// barrier looks at each shard under its locks, which order the other
/// caller's `call()`; `cb_len_early` and `barrier_skips_bypass` guard the
/// rest of `barrier()`. The callback writes plain data that the first
/// caller reads once its barrier returns, whichever barrier served it.
#[test]
fn concurrent_barriers_share_work() {
    model(Bound::Fixed(3), || {
        let rcu = domain_without_engine();
        let data = Plain::new();
        let other = {
            let rcu = rcu.clone();
            thread::spawn(move || rcu.barrier())
        };
        let d = data.clone();
        rcu.call(move || d.bump());
        rcu.barrier();
        assert_eq!(
            data.get(),
            1,
            "barrier() returned before a callback queued before it ran"
        );
        other.join().unwrap();
    });
}

/// (5) Dropping the last handle with callbacks pending runs them all before
/// the drop returns, then stops and joins the workers and the engine.
/// Mutant caught: `shutdown_no_drain` (workers stopped with callbacks still
/// queued).
#[test]
fn shutdown_runs_pending_callbacks() {
    model(Bound::Fixed(4), || {
        let rcu = domain_without_engine();
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let r = ran.clone();
            rcu.call(move || {
                r.fetch_add(1, Ordering::Relaxed);
            });
        }
        drop(rcu);
        assert_eq!(ran.load(Ordering::Relaxed), 2, "callbacks lost at shutdown");
    });
}

/// (6) `RcuCell`: a reader thread loads the value and keeps using it while
/// the main thread replaces and then updates it; neither old value is
/// dropped (through the callback pipeline) before the reader's section ends,
/// and all three are dropped by the time the cell and the last handle are
/// gone. The main thread also runs the callbacks (main, reader, GP worker,
/// engine: four threads; no wake is deferred, as nobody queues inside a
/// section and rate-limiting is off). Mutant caught: `advance_early`.
#[test]
fn rcu_cell_replace_and_read() {
    model(Bound::Fixed(3), || {
        let rcu = one_shard()
            .no_wake_rate_limit()
            .caller_runs_callbacks()
            .build()
            .unwrap();
        let (markers, first) = Versioned::markers(3);
        let cell = Arc::new(RcuCell::new(&rcu, first));
        let reader = {
            let (rcu, cell) = (rcu.clone(), cell.clone());
            thread::spawn(move || {
                let g = rcu.read();
                // Take the value's marker while it is certainly alive; after
                // the yield look only at the marker (an `Arc` of its own),
                // so that a value freed too early shows as POISON rather
                // than as a use after free.
                let marker = cell.load(&g).marker.clone();
                thread::yield_now();
                assert_ne!(
                    marker.load(Ordering::Relaxed),
                    POISON,
                    "RcuCell value dropped under a reader"
                );
                drop(g);
            })
        };
        cell.replace(Versioned {
            marker: markers[1].clone(),
        });
        let third = markers[2].clone();
        cell.update(|_| Versioned { marker: third });
        let dropped = |n: usize| {
            markers[..n]
                .iter()
                .all(|m| m.load(Ordering::Relaxed) == POISON)
        };
        rcu_offload::model::run_callbacks(&rcu, 0, || dropped(2));
        reader.join().unwrap();
        drop(cell);
        rcu_offload::model::run_callbacks(&rcu, 0, || dropped(3));
        drop(rcu);
    });
}
