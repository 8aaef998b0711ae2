//! loom models of the async waits (src/wait.rs, src/gp.rs `poll_wait`,
//! src/nocb/barrier.rs `BarrierWait`): a task's waker registers while the
//! grace period (or the barrier's last callback) completes, and must be
//! woken; a waker replaced between two polls must be the one woken.
//!
//! The futures are driven by `loom::future::block_on`, whose waker unparks
//! the polling thread and nothing else: a lost wake-up leaves every thread
//! blocked, and loom reports a deadlock.
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Wake, Waker};

use loom::sync::Arc;
use loom::thread;
use rcu_offload::model::ModelBuilder;
use rcu_offload::Rcu;
use rcu_offload_loom_tests::{model, one_shard, spawn_reader, Bound, Objects, Plain};

/// A waker that does nothing: the "old" waker of a task that has since
/// been polled with another.
struct Nobody;

impl Wake for Nobody {
    fn wake(self: std::sync::Arc<Self>) {}
}

/// (1) A task awaits `synchronize_async()` while a reader may be inside a
/// section; the engine thread ends the grace period, racing the task's
/// registration. The task must be woken (no lost wake-up), and only after
/// the reader's section (the object it read is poisoned after the await).
/// Threads: main, reader, engine. Mutants caught: `waiter_no_recheck` (the
/// task registers and returns `Pending` without looking at the grace period
/// again: if the engine ended it and found no waiter in between, nobody
/// wakes the task) and `waiter_no_fence` (without the two full fences, the
/// task's look and the engine's look at the waiter count can both read the
/// old values: store buffering).
#[test]
fn waker_registers_while_gp_completes() {
    model(Bound::Fixed(4), || {
        let rcu = Rcu::new();
        let objs = Arc::new(Objects::new(2));
        let reader = spawn_reader(&rcu, &objs, 1);
        let old = objs.publish(1);
        loom::future::block_on(rcu.synchronize_async());
        objs.poison(old);
        reader.join().unwrap();
    });
}

/// (2) A task's future is polled with one waker, then with another; the
/// grace period is ended by the engine or by a `synchronize()` caller on a
/// third thread, whichever comes first, at any point of the two polls. The
/// second waker must be woken. Threads: main, syncer, engine. Mutants
/// caught: `waiter_keeps_old_waker` (the second poll keeps the first waker,
/// which wakes nobody) and `waiter_no_fence`.
#[test]
fn waker_replaced_between_polls() {
    model(Bound::Fixed(4), || {
        let rcu = Rcu::new();
        let mut fut = rcu.synchronize_async();
        let syncer = {
            let rcu = rcu.clone();
            thread::spawn(move || rcu.synchronize())
        };
        let old_waker = Waker::from(std::sync::Arc::new(Nobody));
        let first = Pin::new(&mut fut).poll(&mut Context::from_waker(&old_waker));
        if first == Poll::Pending {
            // Polled again with block_on's waker, which must be the one woken.
            loom::future::block_on(&mut fut);
        }
        syncer.join().unwrap();
    });
}

/// (3) `barrier_async()` after a `call()`: the CB worker runs the callback,
/// then the barrier's internal one, whose completion races the task's
/// registration. The task must be woken, and see the callback's write
/// (plain data: loom fails the model on an unordered read). Threads: main,
/// GP worker (running its grace periods itself), CB worker. Mutant caught:
/// `barrier_async_no_wake` (the last internal callback wakes nobody).
#[test]
fn barrier_async_wakes_after_callbacks() {
    model(Bound::Fixed(3), || {
        let rcu = one_shard()
            .no_wake_rate_limit()
            .inline_grace_periods()
            .build()
            .unwrap();
        let data = Plain::new();
        let d = data.clone();
        rcu.call(move || d.bump());
        loom::future::block_on(rcu.barrier_async());
        assert_eq!(
            data.get(),
            1,
            "barrier_async() completed before a callback ran"
        );
    });
}
