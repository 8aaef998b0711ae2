//! Staged `call()`s (`Staging::PerThread`, the default) and per-CPU shards
//! (`ShardChoice::PerCpu`, the default), with real threads: a callback
//! staged in a thread's feed runs with no `barrier()` (the GP worker's next
//! scan takes it), after a grace period, exactly once; `barrier()` and the
//! domain's drop take staged callbacks; a thread's callbacks stay in order
//! on one shard; a thread that migrates between CPUs in the middle of its
//! callbacks keeps every guarantee; a thread that exits with callbacks
//! staged strands none.
//!
//! Every wait is a liveness bound (`within`, `wait_until`); nothing here
//! depends on how fast anything happens.
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use common::{join_all, recv, spawn_n, wait_until, within, Failures, IdSet};
use rcu_offload::{Rcu, ShardChoice};

/// Queue callback `id`, which checks that a grace period began after the
/// call and ended before it ran, and records `id`.
fn call_checked(rcu: &Rcu, ids: &Arc<IdSet>, failures: &Arc<Failures>, id: usize) {
    let (r, c) = (rcu.clone(), rcu.snapshot());
    let (ids, failures) = (Arc::clone(ids), Arc::clone(failures));
    rcu.call(move || {
        if !r.poll(c) {
            failures.record(format!("callback {id} ran before its grace period"));
        }
        ids.insert(id);
    });
}

/// Callbacks staged by a thread that exits right away run without a
/// barrier: its feed outlives it, and the GP worker's scan takes them.
#[test]
fn callbacks_staged_by_an_exiting_thread_run_without_a_barrier() {
    const THREADS: usize = 8;
    const PER: usize = 3;
    let rcu = Rcu::new();
    let ids = Arc::new(IdSet::new(THREADS * PER));
    let failures = Arc::new(Failures::default());
    join_all(spawn_n(THREADS, {
        let (rcu, ids, failures) = (rcu.clone(), Arc::clone(&ids), Arc::clone(&failures));
        move |t| {
            for k in 0..PER {
                call_checked(&rcu, &ids, &failures, t * PER + k);
            }
        }
    }));
    wait_until("callbacks staged by exited threads", || {
        ids.len() == THREADS * PER
    });
    failures.assert_none("staged callbacks of exited threads");
    assert_eq!(ids.duplicates(), 0);
}

/// Callbacks staged inside read-side sections while three other threads
/// flood the domain all run while the flood goes on, with no `barrier()`.
#[test]
fn calls_inside_read_sections_staged_during_a_flood() {
    const MINE: usize = 300;
    let rcu = Rcu::builder().shards(2).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flooders = spawn_n(3, {
        let (rcu, stop) = (rcu.clone(), Arc::clone(&stop));
        move |_| {
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..200 {
                    rcu.call(|| ());
                }
                thread::yield_now();
            }
        }
    });
    let ids = Arc::new(IdSet::new(MINE));
    let failures = Arc::new(Failures::default());
    for i in 0..MINE {
        let g = rcu.read();
        call_checked(&rcu, &ids, &failures, i);
        drop(g);
        if i % 10 == 0 {
            thread::yield_now();
        }
    }
    wait_until("read-side calls staged during a flood", || {
        ids.len() == MINE
    });
    stop.store(true, Ordering::Relaxed);
    join_all(flooders);
    failures.assert_none("read-side calls");
    assert_eq!(ids.duplicates(), 0);
}

/// One thread's callbacks, on per-thread shards, run in the order it
/// queued them, across its own hand-overs and the GP worker's takes.
#[test]
fn staged_callbacks_of_a_thread_run_in_order_on_its_shard() {
    const N: usize = 20_000;
    let rcu = Rcu::builder()
        .shards(2)
        .shard_choice(ShardChoice::PerThread)
        .build()
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::with_capacity(N)));
    for i in 0..N {
        let o = Arc::clone(&order);
        rcu.call(move || o.lock().unwrap().push(i));
        if i % 1000 == 0 {
            // Let the GP worker take part of the feed now and then.
            thread::yield_now();
        }
    }
    within("barrier", {
        let rcu = rcu.clone();
        move || rcu.barrier()
    });
    let order = order.lock().unwrap();
    assert_eq!(order.len(), N);
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "a thread's callbacks ran out of order"
    );
}

/// The domain's drop runs callbacks still staged in the feed of a thread
/// that is alive but will never call again.
#[test]
fn dropping_the_domain_runs_callbacks_staged_in_a_live_threads_feed() {
    let rcu = Rcu::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let (staged_tx, staged_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel::<()>();
    let t = thread::spawn({
        let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
        move || {
            for _ in 0..3 {
                let r = Arc::clone(&ran);
                rcu.call(move || {
                    r.fetch_add(1, Ordering::Relaxed);
                });
            }
            drop(rcu);
            staged_tx.send(()).unwrap();
            let _ = exit_rx.recv();
        }
    });
    recv(&staged_rx, "the staging thread");
    within("dropping the last handle", move || drop(rcu));
    assert_eq!(ran.load(Ordering::Relaxed), 3);
    exit_tx.send(()).unwrap();
    t.join().unwrap();
}

#[cfg(target_os = "linux")]
mod cpus {
    /// The CPUs this thread may run on.
    pub fn allowed() -> Vec<usize> {
        // SAFETY: `set` is a plain bit set, zeroed here and filled by the
        // kernel; its size is passed along.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) != 0 {
                return Vec::new();
            }
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect()
        }
    }

    /// Move the calling thread to `cpus` (it runs there once this returns).
    pub fn pin(cpus: &[usize]) {
        // SAFETY: as in `allowed`; the set names CPUs we may run on.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in cpus {
                libc::CPU_SET(c, &mut set);
            }
            assert_eq!(
                libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
                0,
                "sched_setaffinity"
            );
        }
    }

    /// The CPU the calling thread runs on.
    pub fn current() -> Option<usize> {
        // SAFETY: no arguments; -1 on failure.
        usize::try_from(unsafe { libc::sched_getcpu() }).ok()
    }
}

/// A thread pinned to a CPU queues on that CPU's shard.
#[cfg(target_os = "linux")]
#[test]
fn a_pinned_thread_queues_on_its_cpus_shard() {
    let allowed = cpus::allowed();
    let shards = allowed.iter().max().map_or(1, |&c| c + 1).min(64);
    let rcu = Rcu::builder().shards(shards).build().unwrap();
    let r = rcu.clone();
    let used = thread::spawn(move || {
        let mut used = Vec::new();
        for &c in allowed.iter().take(4) {
            cpus::pin(&[c]);
            if cpus::current() != Some(c) {
                continue; // sched_getcpu unavailable: the per-thread choice
            }
            r.call(|| ());
            r.barrier();
            let s = r.stats();
            used.push((c, s.shards[c % shards].queued));
        }
        used
    })
    .join()
    .unwrap();
    for (c, queued) in used {
        assert!(
            queued > 0,
            "a thread pinned to CPU {c} did not queue on shard {c}"
        );
    }
}

/// A thread that migrates between CPUs in the middle of its callbacks
/// spreads them over those CPUs' shards; every one still runs exactly
/// once, after a grace period, and `barrier()` waits for all of them.
#[cfg(target_os = "linux")]
#[test]
fn a_thread_migrating_between_cpus_keeps_every_guarantee() {
    const N: usize = 50_000;
    let allowed = cpus::allowed();
    let shards = allowed.len().clamp(2, 64);
    let rcu = Rcu::builder().shards(shards).build().unwrap();
    let ids = Arc::new(IdSet::new(N));
    let failures = Arc::new(Failures::default());
    let t = thread::spawn({
        let (rcu, ids, failures) = (rcu.clone(), Arc::clone(&ids), Arc::clone(&failures));
        move || {
            for i in 0..N {
                if i % 97 == 0 && !allowed.is_empty() {
                    // Move to the next CPU: between two calls, and in the
                    // middle of a feed's worth.
                    cpus::pin(&[allowed[(i / 97) % allowed.len()]]);
                }
                call_checked(&rcu, &ids, &failures, i);
            }
            cpus::pin(&allowed);
        }
    });
    t.join().unwrap();
    within("barrier after the migrations", {
        let rcu = rcu.clone();
        move || rcu.barrier()
    });
    assert_eq!(ids.len(), N, "missing: {:?}", ids.missing(N));
    assert_eq!(ids.duplicates(), 0);
    failures.assert_none("migrating thread");
    let s = rcu.stats();
    assert_eq!(s.queued(), N as u64);
    if cpus::allowed().len() >= 2 {
        let used = s.shards.iter().filter(|x| x.queued > 0).count();
        assert!(used >= 2, "migrations used one shard only: {s:?}");
    }
}
