//! loom models of the grace-period engine (src/gp.rs) and domain lifetime
//! (src/domain/mod.rs): batching, polled cookies, the engine thread, shutdown.
#![cfg(loom)]

use std::sync::atomic::{AtomicBool, Ordering};

use loom::sync::Arc;
use loom::thread;
use rcu_offload::Rcu;
use rcu_offload_loom_tests::{model, spawn_reader, Bound, Objects};

/// (3) Two concurrent `synchronize()` callers each retire their own object
/// while the main thread reads both. Both are safe, they never need more than
/// two grace periods, and some interleaving serves both with one. Mutant
/// caught: `no_batching` (every caller runs its own grace period).
#[test]
fn concurrent_synchronize_share_gp() {
    static SHARED_SEEN: AtomicBool = AtomicBool::new(false);
    model(Bound::Preemptions(4), || {
        let rcu = Rcu::new();
        let a = Arc::new(Objects::new(2));
        let b = Arc::new(Objects::new(2));
        let updater = |objs: &Arc<Objects>| {
            let (rcu, objs) = (rcu.clone(), objs.clone());
            thread::spawn(move || objs.update(1, || rcu.synchronize()))
        };
        let ta = updater(&a);
        let tb = updater(&b);
        {
            let _g = rcu.read();
            let (ia, ib) = (a.current(), b.current());
            a.check(ia);
            b.check(ib);
        }
        ta.join().unwrap();
        tb.join().unwrap();
        let gps = rcu.completed_grace_periods();
        assert!(
            (1..=2).contains(&gps),
            "{gps} grace periods for two callers"
        );
        if gps == 1 {
            SHARED_SEEN.store(true, Ordering::Relaxed);
        }
    });
    assert!(
        SHARED_SEEN.load(Ordering::Relaxed),
        "no interleaving let two concurrent synchronize() calls share a grace period"
    );
}

/// (4) A polled cookie never reports done while a reader that was running when
/// it was taken is still inside: another thread's grace period, already
/// running when the cookie is taken, must not count. Mutant caught:
/// `poll_early`.
#[test]
fn poll_never_early() {
    model(Bound::Preemptions(4), || {
        let rcu = Rcu::new();
        let objs = Arc::new(Objects::new(2));
        let reader = spawn_reader(&rcu, &objs, 1);
        let other = {
            let rcu = rcu.clone();
            thread::spawn(move || rcu.synchronize())
        };
        let old = objs.publish(1);
        let cookie = rcu.snapshot();
        thread::yield_now();
        if rcu.poll(cookie) {
            objs.poison(old);
        }
        reader.join().unwrap();
        other.join().unwrap();
    });
}

/// (4b) `start_poll` alone gets the grace period run by the engine thread,
/// twice in a row (the second request finds the engine asleep), and
/// `cond_synchronize` on a finished cookie returns at once. The main thread
/// spins on `poll`, so a lost engine wakeup shows up as a loom failure.
/// Mutant caught: `engine_no_notify`.
#[test]
fn start_poll_completes() {
    model(Bound::Preemptions(4), || {
        let rcu = Rcu::new();
        let objs = Arc::new(Objects::new(3));
        let reader = spawn_reader(&rcu, &objs, 1);
        for next in 1..3 {
            let old = objs.publish(next);
            let cookie = rcu.start_poll();
            while !rcu.poll(cookie) {
                thread::yield_now();
            }
            let before = rcu.completed_grace_periods();
            rcu.cond_synchronize(cookie);
            assert_eq!(before, rcu.completed_grace_periods());
            objs.poison(old);
        }
        reader.join().unwrap();
    });
}

/// Dropping the last handle while the engine thread may be mid-grace-period
/// stops and joins it. Mutant caught: `shutdown_no_notify` (deadlock).
#[test]
fn domain_drop_joins_engine() {
    model(Bound::Exhaustive, || {
        let rcu = Rcu::new();
        let clone = rcu.clone();
        let _ = rcu.start_poll();
        drop(rcu);
        let _ = clone.start_poll();
        drop(clone);
    });
}
