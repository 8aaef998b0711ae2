//! loom models of the read side (src/reader.rs): the publish/retire guarantee,
//! nesting, and reader threads registering or exiting during a grace period.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use rcu_offload::Rcu;
use rcu_offload_loom_tests::{model, spawn_reader, Bound, Objects};

/// (1) A reader that entered before the writer's grace period never sees the
/// object the writer frees after it. Mutants caught: `no_reader_fence`,
/// `no_wake` (deadlock: the GP sleeps forever), `register_skipped`.
#[test]
fn publish_retire() {
    model(Bound::Exhaustive, || {
        let rcu = Rcu::new();
        let objs = Arc::new(Objects::new(2));
        let reader = spawn_reader(&rcu, &objs, 1);
        objs.update(1, || rcu.synchronize());
        reader.join().unwrap();
    });
}

/// (1b) The same with two update rounds: a reader that read `gp_ctr` before
/// the first grace period's flip but published it after the scan must be
/// caught by the second grace period. Mutant caught: `single_wait` (drop the
/// first of the two waits, i.e. the second counter flip's protection).
#[test]
fn publish_retire_two_rounds() {
    model(Bound::Exhaustive, || {
        let rcu = Rcu::new();
        let objs = Arc::new(Objects::new(3));
        let reader = spawn_reader(&rcu, &objs, 1);
        for next in 1..3 {
            objs.update(next, || rcu.synchronize());
        }
        reader.join().unwrap();
    });
}

/// (2) Nested readers: leaving the outer section while an inner one is still
/// open keeps protecting what was read. Mutant caught: `scan_ignores_nested`
/// (the grace period takes a reader nested two deep for one outside).
#[test]
fn nested_readers() {
    model(Bound::Exhaustive, || {
        let rcu = Rcu::new();
        let objs = Arc::new(Objects::new(2));
        let reader = {
            let (rcu, objs) = (rcu.clone(), objs.clone());
            thread::spawn(move || {
                let outer = rcu.read();
                let i = objs.current();
                let inner = rcu.read();
                drop(outer);
                objs.check(i);
                drop(inner);
            })
        };
        objs.update(1, || rcu.synchronize());
        reader.join().unwrap();
    });
}

/// (5) Reader threads that register (first read) and exit while a grace period
/// runs: one reads and exits, another reads twice. Neither may see a freed
/// object, and the exit must not stall the grace period. Mutant caught:
/// `register_skipped` (the reader's first read leaves its record out of the
/// registry).
#[test]
fn reader_registers_and_exits_during_gp() {
    model(Bound::Preemptions(4), || {
        let rcu = Rcu::new();
        let objs = Arc::new(Objects::new(2));
        // Each reader thread's exit drops its reader record.
        let a = spawn_reader(&rcu, &objs, 1);
        let b = spawn_reader(&rcu, &objs, 2);
        objs.update(1, || rcu.synchronize());
        a.join().unwrap();
        b.join().unwrap();
    });
}
