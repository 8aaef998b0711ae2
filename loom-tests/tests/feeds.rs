//! loom models of the feeds (src/nocb/feed.rs): a thread's staged
//! callbacks, the GP worker's scans that take and close them, and
//! `barrier()`'s take.
//!
//! Each domain stages its callbacks in feeds (`ModelBuilder::stage_in_feeds`;
//! a model feed has 2 slots, so the third call of a thread fills it), has
//! one shard, and runs its grace periods on the GP worker
//! (`inline_grace_periods`). The main thread is the producer; it runs the
//! callbacks itself (`caller_runs_callbacks`) and blocks, kicking nobody,
//! until they have run: a callback stranded in a feed that nobody watches
//! leaves every thread blocked, and loom reports a deadlock.
#![cfg(loom)]

use rcu_offload::model::ModelBuilder;
use rcu_offload::Rcu;
use rcu_offload_loom_tests::{model, one_shard, run_until, Bound, Plain, Ran};

/// One shard, feeds on, grace periods run by the GP worker, no wake
/// rate-limiting (model time stands still; see callbacks.rs).
fn staged() -> rcu_offload::Builder {
    one_shard()
        .stage_in_feeds()
        .inline_grace_periods()
        .no_wake_rate_limit()
}

/// Queue `n` callbacks that each check their grace period and count.
fn call_checked(rcu: &Rcu, ran: &std::sync::Arc<Ran>, n: usize) {
    for _ in 0..n {
        let (r, c, d) = (rcu.clone(), rcu.snapshot(), ran.clone());
        rcu.call(move || {
            assert!(r.poll(c), "staged callback ran before its grace period");
            d.one();
        });
    }
}

/// (F1) The owner publishes its second callback while the GP worker's scan,
/// woken by the first (the hand-over that reopened the feed), finds the
/// feed idle and closes it. Either the owner's check after publishing sees
/// the close and hands the callback over itself, or the scan's second
/// look, after the fence, sees the callback and takes it. Main thread
/// (producer, runs the callbacks), GP worker, timer: 3 threads.
///
/// Mutants caught: `feed_no_recheck` (the owner never checks) and
/// `feed_close_no_fence` (the scan's second look comes without the fence
/// that pairs with the owner's): deadlock, the second callback stranded.
#[test]
fn feed_publish_races_scan_close() {
    model(Bound::Fixed(4), || {
        let rcu = staged().caller_runs_callbacks().build().unwrap();
        let ran = Ran::new();
        call_checked(&rcu, &ran, 2);
        run_until(&rcu, &ran, 2);
        assert_eq!(ran.count(), 2);
    });
}

/// (F2) A feed reopened with nothing to hand over: a scan took the owner's
/// callback (its second look, after closing the feed) and ran its grace
/// period, and the owner, which saw the close, reopens an empty feed. The
/// next callback it stages has only the reopen's promise to bring a scan:
/// no callback is pending, the GP worker sleeps. Main thread, GP worker,
/// timer: 3 threads.
///
/// Mutant caught: `feed_reopen_no_promise` (the reopen promises no scan):
/// deadlock.
#[test]
fn feed_reopen_promises_a_scan() {
    model(Bound::Fixed(4), || {
        let rcu = staged().caller_runs_callbacks().build().unwrap();
        let ran = Ran::new();
        call_checked(&rcu, &ran, 3);
        run_until(&rcu, &ran, 3);
        assert_eq!(ran.count(), 3);
    });
}

/// (F3) `barrier()` with a callback staged in the caller's feed, racing the
/// GP worker's scans: the barrier takes it before it looks at the shard,
/// so the callback has run, and its plain write is visible, when the
/// barrier returns. Main thread, GP worker, CB worker, timer: 4 threads.
///
/// Mutant caught: `barrier_skips_feeds` (the barrier looks at the shards
/// only): the assertion, or a causality violation on the plain data.
#[test]
fn barrier_takes_staged_callbacks() {
    model(Bound::Fixed(3), || {
        let rcu = staged().build().unwrap();
        let data = Plain::new();
        for _ in 0..2 {
            let d = data.clone();
            rcu.call(move || d.bump());
        }
        rcu.barrier();
        assert_eq!(
            data.get(),
            2,
            "barrier() returned before a staged callback ran"
        );
    });
}
