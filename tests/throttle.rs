//! The memory bound (`high_water` / `low_water`), with real threads: the
//! high-water mark bounds the backlog by blocking ordinary `call()`s, never
//! a callback or a caller inside a read-side section (those only
//! expedite), and a throttled flood of lazy callbacks is not held for the
//! lazy timeout. (A FORCE wake deferred by memory pressure inside a
//! read-side section: tests/deferred_wakes.rs.)
//!
//! No assertion here depends on how fast anything happens: lazy timeouts are
//! an hour, and every wait is a liveness bound (`within`, `wait_until`,
//! `wait_for`).
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{
    assert_settled, counting, join_and_barrier, spawn_n, spin, wait_for, wait_until, within, HOUR,
};
use rcu_offload::{Builder, Rcu};

/// A domain of `shards` shards with high water `high` and low water half
/// of it.
fn bounded(shards: usize, high: usize) -> Builder {
    Rcu::builder()
        .shards(shards)
        .high_water(high)
        .low_water(high / 2)
}

/// The high-water mark bounds the backlog: producers queueing slow callbacks
/// far faster than they run (the callbacks are held back until the first
/// producer has blocked, so throttling is certain) never see more pending
/// callbacks than the documented policy allows (src/nocb/throttle.rs: about twice
/// the high-water mark plus one per producing thread; checked against
/// `2 * high + 64`), `throttled` counts the blocked calls, and every callback
/// runs. One producer on one shard, and four producers on four shards.
#[test]
fn throttle_bounds_the_backlog() {
    const HIGH: usize = 1_000;
    const BOUND: u64 = 2 * HIGH as u64 + 64;
    for (producers, shards, per) in [(1, 1, 30_000), (4, 4, 8_000)] {
        let what = format!("{producers} producers on {shards} shards");
        let rcu = bounded(shards, HIGH)
            .callback_batch_limit(16)
            .nobypass_limit(32)
            .build()
            .unwrap();
        let gate = Arc::new(AtomicBool::new(false));
        let ran = Arc::new(AtomicUsize::new(0));
        let ts = {
            let (rcu, gate, ran) = (rcu.clone(), Arc::clone(&gate), Arc::clone(&ran));
            spawn_n(producers, move |_| {
                let mut max = 0;
                for _ in 0..per {
                    let (r, gate, ran) = (rcu.clone(), Arc::clone(&gate), Arc::clone(&ran));
                    rcu.call(move || {
                        // Hold the callbacks back until a producer has
                        // blocked: the backlog must reach high water.
                        while !gate.load(Ordering::Acquire) {
                            if r.stats().throttled > 0 {
                                gate.store(true, Ordering::Release);
                            } else {
                                thread::yield_now();
                            }
                        }
                        spin(50);
                        ran.fetch_add(1, Ordering::Relaxed);
                    });
                    max = max.max(rcu.stats().pending());
                }
                gate.store(true, Ordering::Release);
                assert!(
                    max <= BOUND,
                    "a producer saw {max} pending callbacks; high water {HIGH}, bound {BOUND}"
                );
            })
        };
        let s = join_and_barrier(&rcu, "throttled producers and barrier", ts);
        assert!(s.throttled > 0, "{what}: no call() blocked: {s:?}");
        assert_eq!(ran.load(Ordering::Relaxed), producers * per, "{what}");
        assert_settled(&s, (producers * per) as u64, &what);
    }
}

/// Callbacks that queue callbacks above the high-water mark are not
/// throttled (their worker would wait for itself): a callback queueing many
/// children while it still runs (so they cannot drain) returns, every child
/// runs, `throttle_expedited` counts the calls above high water and
/// `throttled` stays 0 (no ordinary thread went above it).
#[test]
fn callbacks_above_high_water_are_not_throttled() {
    const HIGH: usize = 100;
    const CHILDREN: usize = 2_000;
    let rcu = bounded(2, HIGH).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let s = within("a callback queueing callbacks above high water", {
        let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
        move || {
            let (r, ran2) = (rcu.clone(), Arc::clone(&ran));
            rcu.call(move || {
                for _ in 0..CHILDREN {
                    r.call(counting(&ran2));
                }
            });
            wait_until("every child callback (no barrier)", || {
                ran.load(Ordering::Relaxed) == CHILDREN
            });
            rcu.barrier();
            rcu.stats()
        }
    });
    assert!(s.throttle_expedited > 0, "{s:?}");
    assert_eq!(s.throttled, 0, "{s:?}");
    assert_settled(&s, CHILDREN as u64 + 1, "children above high water");
}

/// A `call()` inside a read-side section above the high-water mark does not
/// block (it would hold up the very grace period that drains the backlog):
/// thousands of calls inside one section (also three sections deep) return,
/// `throttle_expedited` counts them and `throttled` stays 0; after the
/// section ends they all run without any `barrier()`. (Lazy calls: see
/// `force_wake_is_not_swallowed_by_an_earlier_gp_worker_wake_up`.)
#[test]
fn call_inside_read_section_above_high_water_does_not_block() {
    const HIGH: usize = 100;
    const N: usize = 3_000;
    for depth in [1, 3] {
        let rcu = bounded(2, HIGH).build().unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        within("calls inside a read-side section above high water", {
            let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
            move || {
                let guards: Vec<_> = (0..depth).map(|_| rcu.read()).collect();
                for _ in 0..N {
                    rcu.call(counting(&ran));
                }
                drop(guards);
            }
        });
        wait_for(
            &rcu,
            &format!("depth {depth}: the callbacks after the section (no barrier)"),
            || ran.load(Ordering::Relaxed) == N,
        );
        let s = join_and_barrier(&rcu, "barrier", Vec::new());
        assert!(s.throttle_expedited > 0, "depth {depth}: {s:?}");
        assert_eq!(s.throttled, 0, "depth {depth}: {s:?}");
        assert_settled(&s, N as u64, &format!("depth {depth}"));
    }
}

/// A flood of lazy callbacks (lazy timeout an hour) from one ordinary thread
/// above the high-water mark: memory pressure must flush lazy callbacks
/// (`Rcu::call_lazy` docs), so the throttled producer keeps making progress
/// and finishes. A one-second tick makes the second throttle come within a
/// tick of the first expedite, which the expedite's rate limit skips.
#[test]
fn throttled_lazy_flood_is_not_held_for_the_lazy_timeout() {
    const HIGH: usize = 1_000;
    const N: usize = 5_000;
    let rcu = bounded(1, HIGH)
        .tick(Duration::from_secs(1))
        .lazy_timeout(HOUR)
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (rcu, ran, done) = (rcu.clone(), Arc::clone(&ran), Arc::clone(&done));
        thread::spawn(move || {
            for _ in 0..N {
                rcu.call_lazy(counting(&ran));
            }
            done.store(true, Ordering::Release);
        })
    };
    wait_for(&rcu, "the throttled lazy producer to finish", || {
        done.load(Ordering::Acquire)
    });
    let s = join_and_barrier(&rcu, "the producer and barrier", vec![producer]);
    assert!(s.throttled > 0, "{s:?}");
    assert_eq!(ran.load(Ordering::Relaxed), N);
    assert_settled(&s, N as u64, "throttled lazy flood");
}
