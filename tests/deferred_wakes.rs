//! Deferred wakes and the timer thread, with real threads: a `call()`
//! inside a read-side section (which may not make a system call) defers its
//! wake to the timer, and the callback still runs without any `barrier()`,
//! also during a flood; the timer's wake levels across the shards of a
//! GP-worker group hold no callback back for another shard's lazy timeout;
//! a FORCE wake deferred by memory pressure is not swallowed by an earlier
//! wake-up. (The timer thread's exit: tests/lazy.rs.)
//!
//! No assertion here depends on how fast anything happens: lazy timeouts are
//! an hour, and every wait is a liveness bound (`within`, `wait_until`,
//! `wait_for`).
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{
    assert_settled, counting, join_all, shard_total, spawn_n, spin, wait_for, wait_for_stats,
    wait_until, within, IdSet, OnShard, HOUR,
};
use rcu_offload::{Rcu, ShardChoice, Staging};

/// A `call()` inside a read-side section may not wake the GP worker (no
/// system call there): on an otherwise idle domain its wake is deferred to
/// the timer (`deferred_wakes` counts it), and the callback runs without any
/// `barrier()`. Both on a domain whose workers are idle after earlier work
/// and on a fresh one (the first `call()` ever, nested two sections deep).
/// The direct enqueue (`Staging::Off`): a staged `call()` into an open feed
/// owes no wake at all (tests/staging.rs covers staged calls in sections).
#[test]
fn call_inside_read_section_defers_the_wake_and_still_runs() {
    for warm in [true, false] {
        let rcu = Rcu::builder()
            .shards(1)
            .staging(Staging::Off)
            .build()
            .unwrap();
        if warm {
            rcu.call(|| ());
            within("warm-up barrier", {
                let rcu = rcu.clone();
                move || rcu.barrier()
            });
        }
        let before = rcu.stats().deferred_wakes;
        let ran = Arc::new(AtomicBool::new(false));
        within("a callback queued inside a read-side section", {
            let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
            move || {
                let g = rcu.read();
                let g2 = rcu.read();
                let r = Arc::clone(&ran);
                rcu.call(move || r.store(true, Ordering::Release));
                drop(g2);
                drop(g);
                wait_until("the callback (no barrier)", || ran.load(Ordering::Acquire));
            }
        });
        let s = rcu.stats();
        assert!(
            s.deferred_wakes > before,
            "warm {warm}: the wake from inside the section was not deferred: {s:?}"
        );
    }
}

/// Callbacks queued inside read-side sections while three other threads
/// flood the domain (through bypass lists, with deferred and rate-limited
/// wakes) all run while the flood goes on, with no `barrier()`; the flood
/// goes through the bypass; afterwards the counters add up.
#[test]
fn call_inside_read_section_during_a_flood() {
    const MINE: usize = 200;
    const FLOODERS: usize = 3;
    let rcu = Rcu::builder()
        .shards(2)
        .tick(Duration::from_micros(200))
        .nobypass_limit(4)
        .bypass_max(128)
        .staging(Staging::Off)
        .shard_choice(ShardChoice::PerThread)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicU64::new(0));
    let ts = {
        let (rcu, stop, flooded) = (rcu.clone(), Arc::clone(&stop), Arc::clone(&flooded));
        spawn_n(FLOODERS, move |_| {
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..200 {
                    rcu.call(|| spin(10));
                }
                flooded.fetch_add(200, Ordering::Relaxed);
                thread::yield_now();
            }
        })
    };
    let mine = Arc::new(IdSet::new(MINE));
    let s = within("read-side calls during a flood", {
        let (rcu, mine) = (rcu.clone(), Arc::clone(&mine));
        move || {
            for i in 0..MINE {
                let g = rcu.read();
                let m = Arc::clone(&mine);
                rcu.call(move || {
                    m.insert(i);
                });
                drop(g);
                if i % 10 == 0 {
                    thread::yield_now();
                }
            }
            wait_until("the read-side callbacks while the flood goes on", || {
                mine.len() == MINE
            });
            // The flood has gone through the bypass by now, or soon.
            wait_for_stats(&rcu, "flood callbacks queued through the bypass", |s| {
                shard_total(s, |x| x.bypass_queued) > 0
            });
            stop.store(true, Ordering::Relaxed);
            join_all(ts);
            rcu.barrier();
            rcu.stats()
        }
    });
    assert_eq!(mine.duplicates(), 0);
    assert_settled(
        &s,
        flooded.load(Ordering::Relaxed) + MINE as u64,
        "read-side calls during a flood",
    );
    assert!(shard_total(&s, |x| x.bypass_queued) > 0, "{s:?}");
}

/// Two shards in one GP-worker group: shard 0 holds a lazy callback (lazy
/// timeout an hour, so the group's timer is armed at the LAZY level for an
/// hour), then an ordinary call in a flood (`nobypass_limit(0)`) goes to
/// shard 1's bypass and asks for a BYPASS-level flush a tick later. That
/// callback is not lazy: it must run about a tick and a grace period later,
/// not when the other shard's lazy timer expires (the liveness bound trips
/// if it waits for that hour).
#[test]
fn non_lazy_bypass_is_not_held_back_by_another_shards_lazy_timer() {
    let rcu = Rcu::builder()
        .shards(2)
        .gp_stride(2)
        .nobypass_limit(0)
        .tick(Duration::from_millis(100))
        .lazy_timeout(HOUR)
        .staging(Staging::Off)
        .shard_choice(ShardChoice::PerThread)
        .build()
        .unwrap();
    let a = OnShard::new(2, 0);
    let b = OnShard::new(2, 1);
    a.run({
        let rcu = rcu.clone();
        move || rcu.call_lazy(|| ())
    });
    let ran = Arc::new(AtomicBool::new(false));
    b.run({
        let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
        move || rcu.call(move || ran.store(true, Ordering::Release))
    });
    let s = rcu.stats();
    assert_eq!(
        (s.shards[0].bypass_queued, s.shards[1].bypass_queued),
        (1, 1),
        "{s:?}"
    );
    wait_for(
        &rcu,
        "the non-lazy callback in shard 1's bypass (no barrier)",
        || ran.load(Ordering::Acquire),
    );
}

/// Memory pressure inside a read-side section defers a FORCE wake, whose job
/// is to wake the GP worker *and flush every bypass list of its group*, lazy
/// ones included (src/nocb/wake.rs, src/nocb/enqueue.rs; the `call_lazy` docs promise
/// that memory pressure flushes lazy callbacks). If the GP worker wakes up
/// for another reason first (here: the grace period of an ordinary callback
/// queued just before the section, which can only complete once the section
/// ends), that wake-up must not swallow the flush: the lazy callbacks (lazy
/// timeout an hour) must still run, without any barrier. A one-second tick
/// keeps the FORCE timer from firing before the grace period ends; if that
/// grace period was already over when the section began, the attempt says
/// nothing and is repeated on a fresh domain.
#[test]
fn force_wake_is_not_swallowed_by_an_earlier_gp_worker_wake_up() {
    const HIGH: usize = 100;
    const LAZY: usize = 200;
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        let rcu = Rcu::builder()
            .shards(1)
            .tick(Duration::from_secs(1))
            .lazy_timeout(HOUR)
            .high_water(HIGH)
            .low_water(HIGH / 2)
            .build()
            .unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let cookie = rcu.snapshot();
        // Starts the workers; the GP worker requests a grace period for it.
        rcu.call(counting(&ran));
        let g = rcu.read();
        if rcu.poll(cookie) {
            drop(g);
            wait_for(&rcu, "the ordinary callback", || {
                ran.load(Ordering::Relaxed) == 1
            });
            if attempt < ATTEMPTS {
                continue;
            }
            eprintln!("inconclusive: the grace period ended before the section began");
            return;
        }
        for _ in 0..LAZY {
            rcu.call_lazy(counting(&ran));
        }
        let s = rcu.stats();
        drop(g);
        assert!(s.throttle_expedited > 0, "{s:?}");
        wait_for(
            &rcu,
            "the lazy callbacks queued above high water inside the section (no barrier)",
            || ran.load(Ordering::Relaxed) == LAZY + 1,
        );
        return;
    }
}
