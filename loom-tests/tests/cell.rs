//! loom model of the cells' writer protocol (src/cell/raw.rs): a
//! compare-and-exchange races an update and a reader.
#![cfg(loom)]

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom::thread;
use rcu_offload::model::ModelBuilder;
use rcu_offload::RcuCell;
use rcu_offload_loom_tests::{model, one_shard, Bound, Versioned, POISON};

/// A compare-and-exchange (main thread, inside a read-side section that
/// also reads the value it expects) races an `update` on another thread,
/// whose closure reads the current value without a guard, as `update` is
/// entitled to (writers are serialized, so nobody retires the value it
/// reads). Whichever wins, no value is dropped while the reader or the
/// update's closure uses it, and every replaced value is dropped once the
/// callbacks have run. The main thread runs the callbacks; the GP worker
/// runs grace periods itself (main, updater, GP worker: three threads).
/// Mutant caught: `cas_unlocked` (a lock-free compare-and-exchange retires
/// the value under the update's closure).
#[test]
fn compare_exchange_races_update_and_reader() {
    model(Bound::Fixed(3), || {
        let rcu = one_shard()
            .no_wake_rate_limit()
            .caller_runs_callbacks()
            .inline_grace_periods()
            .build()
            .unwrap();
        let (markers, first) = Versioned::markers(3);
        let cell = Arc::new(RcuCell::new(&rcu, first));
        let updater = {
            let (cell, third) = (cell.clone(), markers[2].clone());
            thread::spawn(move || {
                cell.update(|cur| {
                    let marker = cur.marker.clone();
                    thread::yield_now();
                    assert_ne!(
                        marker.load(Ordering::Relaxed),
                        POISON,
                        "RcuCell value dropped under an update's closure"
                    );
                    Versioned { marker: third }
                });
            })
        };
        let outcome = {
            let g = rcu.read();
            let seen = cell.load(&g);
            let marker = seen.marker.clone();
            let new = Versioned {
                marker: markers[1].clone(),
            };
            let outcome = cell.compare_exchange(seen, new, &g).map_err(|e| e.new);
            thread::yield_now();
            assert_ne!(
                marker.load(Ordering::Relaxed),
                POISON,
                "RcuCell value dropped under a reader"
            );
            outcome
        };
        // Ok: the old value is retired as its handle drops (outside the
        // section, so that the wake its call owes is not deferred to a timer
        // thread the model has no room for). Err: the update won, and our
        // value is dropped here.
        drop(outcome);
        // Two of the three values are replaced, which two depends on the
        // order (the update may publish before the main thread loads).
        let dropped = |n: usize| {
            markers
                .iter()
                .filter(|m| m.load(Ordering::Relaxed) == POISON)
                .count()
                >= n
        };
        rcu_offload::model::run_callbacks(&rcu, 0, || dropped(2));
        updater.join().unwrap();
        drop(cell);
        rcu_offload::model::run_callbacks(&rcu, 0, || dropped(3));
        drop(rcu);
    });
}
