//! Lazy callbacks (`call_lazy`), with real threads: a non-lazy `call()`
//! promotes the lazy callbacks queued before it on its shard (from any
//! thread), and dropping the last handle, anywhere, runs the lazy callbacks
//! still waiting for their timeout. (`barrier()` and lazy callbacks:
//! tests/flood.rs; memory pressure and lazy callbacks: tests/throttle.rs and
//! tests/deferred_wakes.rs.)
//!
//! Lazy timeouts are an hour: a lazy callback that runs was flushed by
//! something else, and every wait is a liveness bound (`within`,
//! `wait_until`).
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use common::{counting, shard_total, wait_until, within, OnShard, HOUR};
#[cfg(target_os = "linux")]
use common::{join_all, spawn_n};
use rcu_offload::{Rcu, ShardChoice, Staging};

/// A non-lazy `call()` promotes the lazy callbacks queued before it on the
/// same thread: with a lazy timeout of an hour, lazy callbacks (which a
/// grace period alone does not run: they are still pending after a
/// `synchronize()`) all run soon after one ordinary call, without any
/// `barrier()`, and before it (FIFO). Without promotion they would wait the
/// hour and trip the liveness bound. Both outside a flood (the call takes
/// the list path) and in one (`nobypass_limit(0)`: the call must not join
/// the lazy bypass).
#[test]
fn non_lazy_call_promotes_earlier_lazy_callbacks() {
    const LAZY: usize = 200;
    for limit in [rcu_offload::DEFAULT_NOBYPASS_LIMIT, 0] {
        let rcu = Rcu::builder()
            .shards(1)
            .nobypass_limit(limit)
            .lazy_timeout(HOUR)
            .build()
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        within("lazy callbacks promoted by a call()", {
            let (rcu, order) = (rcu.clone(), Arc::clone(&order));
            move || {
                let record = |i: usize| {
                    let order = Arc::clone(&order);
                    move || order.lock().unwrap().push(i)
                };
                for i in 0..LAZY {
                    rcu.call_lazy(record(i));
                }
                rcu.synchronize();
                let s = rcu.stats();
                assert_eq!(
                    (s.pending(), shard_total(&s, |x| x.bypass_queued)),
                    (LAZY as u64, LAZY as u64),
                    "nobypass_limit {limit}: lazy callbacks not waiting in the bypass: {s:?}"
                );
                assert!(
                    order.lock().unwrap().is_empty(),
                    "nobypass_limit {limit}: a lazy callback ran within a grace period, \
                     long before its hour-long timeout"
                );
                rcu.call(record(LAZY));
                wait_until(
                    "the promoted lazy callbacks and the promoting call (no barrier)",
                    || order.lock().unwrap().len() == LAZY + 1,
                );
            }
        });
        let order = order.lock().unwrap().clone();
        assert_eq!(
            order,
            (0..=LAZY).collect::<Vec<_>>(),
            "nobypass_limit {limit}: not in FIFO order"
        );
        let s = rcu.stats();
        assert!(shard_total(&s, |x| x.bypass_flushes) >= 1, "{s:?}");
        assert_eq!(s.pending(), 0, "{s:?}");
    }
}

/// Promotion is per shard, not per thread: lazy callbacks of one thread are
/// promoted by an ordinary `call()` of another thread on the same shard
/// (hour-long lazy timeout, no barrier).
#[test]
fn non_lazy_call_promotes_lazy_callbacks_of_another_thread_on_the_shard() {
    const LAZY: usize = 100;
    let rcu = Rcu::builder()
        .shards(2)
        .lazy_timeout(HOUR)
        .staging(Staging::Off)
        .shard_choice(ShardChoice::PerThread)
        .build()
        .unwrap();
    let a = OnShard::new(2, 1);
    let b = OnShard::new(2, 1);
    let ran = Arc::new(AtomicUsize::new(0));
    a.run({
        let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
        move || {
            for _ in 0..LAZY {
                rcu.call_lazy(counting(&ran));
            }
        }
    });
    let s = rcu.stats();
    assert_eq!(s.shards[1].bypass_queued, LAZY as u64, "{s:?}");
    b.run({
        let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
        move || rcu.call(counting(&ran))
    });
    within(
        "lazy callbacks promoted by another thread's call()",
        move || {
            wait_until("every callback (no barrier)", || {
                ran.load(Ordering::Relaxed) == LAZY + 1
            });
        },
    );
}

/// Dropping the last handle with callbacks in bypass lists and lazy
/// callbacks (hour-long timeout, certainly still pending) runs them all
/// before the drop returns; then every worker thread exits, the timer
/// thread (`{prefix}rcu_timer`, started by the deferred wakes) included.
#[cfg(target_os = "linux")]
#[test]
fn dropping_the_last_handle_runs_bypass_and_lazy_callbacks() {
    const THREADS: usize = 2;
    const PER: usize = 400;
    const LAZY: usize = 300;
    let rcu = Rcu::builder()
        .shards(2)
        .nobypass_limit(0)
        .lazy_timeout(HOUR)
        .thread_name_prefix("bd-")
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let ts = {
        let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
        spawn_n(THREADS, move |_| {
            for i in 0..PER {
                if i % 4 == 3 {
                    rcu.call_lazy(counting(&ran));
                } else {
                    rcu.call(counting(&ran));
                }
            }
        })
    };
    let ran2 = Arc::clone(&ran);
    within("flood, lazy calls and the drop", move || {
        join_all(ts);
        // A lazy-only bypass on this thread's shard: certainly pending.
        rcu.barrier();
        for _ in 0..LAZY {
            rcu.call_lazy(counting(&ran2));
        }
        let s = rcu.stats();
        assert_eq!(s.pending(), LAZY as u64, "{s:?}");
        // The deferred wakes started the timer thread (CI saw it just
        // spawned, still named after the test: wait for its name).
        common::wait_thread_named("bd-rcu_timer");
        drop(rcu);
        // Synchronously: no barrier, no waiting.
        assert_eq!(ran2.load(Ordering::Relaxed), THREADS * PER + LAZY);
    });
    common::wait_threads_gone("bd-");
}

/// The last handle dropped inside a callback (the reaper thread shuts the
/// domain down) while lazy callbacks with an hour-long timeout are pending:
/// they run, and every thread of the domain, timer and reaper included,
/// exits.
#[cfg(target_os = "linux")]
#[test]
fn last_handle_dropped_in_a_callback_runs_lazy_callbacks() {
    const LAZY: usize = 300;
    let rcu = Rcu::builder()
        .shards(2)
        .lazy_timeout(HOUR)
        .thread_name_prefix("br-")
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..LAZY {
        rcu.call_lazy(counting(&ran));
    }
    assert_eq!(rcu.stats().pending(), LAZY as u64);
    // Another thread queues a callback that owns the last handle.
    let owner = rcu.clone();
    drop(rcu);
    thread::spawn(move || {
        let last = owner.clone();
        owner.call(move || drop(last));
    })
    .join()
    .unwrap();
    within("the reaper to run the lazy callbacks", move || {
        wait_until("every lazy callback", || {
            ran.load(Ordering::Relaxed) == LAZY
        });
    });
    common::wait_threads_gone("br-");
}
