//! Floods through bypass lists, with real threads: every callback runs
//! exactly once, after a full grace period, in FIFO order per thread across
//! bypass/list transitions; `barrier()` flushes bypass lists (lazy-only ones
//! included); several shards in several GP-worker groups strand nothing.
//! (Lazy callbacks: tests/lazy.rs; deferred wakes and the timer:
//! tests/deferred_wakes.rs; the memory bound: tests/throttle.rs.)
//!
//! No assertion here depends on how fast anything happens: lazy timeouts are
//! an hour where a test relies on lazy callbacks *not* being flushed by their
//! timeout, and every wait is a liveness bound (`within`, `wait_until`).
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    assert_settled, is_settled, join_all, join_and_barrier, shard_total, spawn_n, wait_for_stats,
    wait_until, within, Failures, IdSet, HOUR, LIVENESS_BOUND,
};
use rcu_offload::{Rcu, ShardChoice, Staging};

/// What the callbacks of a test check and record: each runs after a full
/// grace period since its `call()` and records its id exactly once.
struct Tally {
    rcu: Rcu,
    ids: IdSet,
    early: Failures,
    ran: AtomicUsize,
}

impl Tally {
    fn new(rcu: &Rcu, n: usize) -> Arc<Tally> {
        Arc::new(Tally {
            rcu: rcu.clone(),
            ids: IdSet::new(n),
            early: Failures::default(),
            ran: AtomicUsize::new(0),
        })
    }

    /// Callback `id`, for a `call()` made on the calling thread right after:
    /// it checks that a grace period has passed since now and records `id`.
    fn callback(self: &Arc<Self>, id: usize) -> impl FnOnce() + Send + 'static {
        let cookie = self.rcu.snapshot();
        let t = Arc::clone(self);
        move || {
            if !t.rcu.poll(cookie) {
                t.early
                    .record(format!("callback {id} ran before its grace period"));
            }
            t.ids.insert(id);
            t.ran.fetch_add(1, Ordering::Release);
        }
    }

    /// Queues callback `id` (lazily or not) on the calling thread.
    fn queue(self: &Arc<Self>, id: usize, lazy: bool) {
        let f = self.callback(id);
        if lazy {
            self.rcu.call_lazy(f);
        } else {
            self.rcu.call(f);
        }
    }

    fn ran(&self) -> usize {
        self.ran.load(Ordering::Acquire)
    }

    /// Every id in `0..n` ran exactly once, after its grace period.
    fn assert_all_ran(&self, n: usize, what: &str) {
        self.early.assert_none(what);
        assert_eq!(self.ids.duplicates(), 0, "{what}: a callback ran twice");
        assert_eq!(
            self.ids.len(),
            n,
            "{what}: callbacks missing, e.g. {:?}",
            self.ids.missing(10)
        );
        assert_eq!(self.ran(), n, "{what}");
    }
}

/// A flood through the bypass, from one thread and from several, with bypass
/// lists flushed by length (`bypass_max` 1 and 64), by age and by
/// `barrier()`: every callback runs exactly once, after a full grace period
/// since its `call()`; after `barrier()` the counters add up (queued ==
/// calls, invoked == queued + barrier callbacks, nothing pending), and show
/// callbacks queued through the bypass and flushes of it.
/// (`nobypass_limit(0)`: every enqueue counts as a flood.)
#[test]
fn flood_through_bypass_runs_each_callback_once_after_a_grace_period() {
    // (threads, callbacks per thread, shards, bypass_max)
    let cases = [
        (1, 20_000, 1, rcu_offload::DEFAULT_BYPASS_MAX),
        (1, 10_000, 2, 64),
        (4, 5_000, 2, rcu_offload::DEFAULT_BYPASS_MAX),
        (4, 3_000, 3, 1),
    ];
    for (threads, per, shards, bypass_max) in cases {
        let what = format!("{threads} threads x {per}, {shards} shards, bypass_max {bypass_max}");
        let rcu = Rcu::builder()
            .shards(shards)
            .nobypass_limit(0)
            .bypass_max(bypass_max)
            .staging(Staging::Off)
            .shard_choice(ShardChoice::PerThread)
            .build()
            .unwrap();
        let tally = Tally::new(&rcu, threads * per);
        let ts = {
            let tally = Arc::clone(&tally);
            spawn_n(threads, move |t| {
                for i in 0..per {
                    tally.queue(t * per + i, false);
                }
            })
        };
        let s = join_and_barrier(&rcu, "flood producers and barrier", ts);
        tally.assert_all_ran(threads * per, &what);
        assert_settled(&s, (threads * per) as u64, &what);
        assert!(
            shard_total(&s, |x| x.bypass_queued) > 0,
            "{what}: nothing went through the bypass: {s:?}"
        );
        assert!(
            shard_total(&s, |x| x.bypass_flushes) > 0,
            "{what}: the bypass was never flushed: {s:?}"
        );
        if bypass_max == 1 {
            // A one-callback bypass is flushed by the next enqueue: half of
            // each thread's callbacks go through it, the other half straight
            // to the list behind the flush.
            assert!(
                s.queued() > shard_total(&s, |x| x.bypass_queued),
                "{what}: no callback took the list path: {s:?}"
            );
        }
    }
}

/// Per-thread FIFO across bypass/list transitions: three producers on two
/// shards (so at least two share one) alternate floods (bursts that trip
/// flood detection, `nobypass_limit(8)` per 100 µs tick) with slow single
/// calls, lazy and not, after sleeps that let the flood detection decay;
/// the bypass is flushed by length (`bypass_max(50)`), by age, by the GP
/// worker and by the enqueuers' list path. Each producer's callbacks run in
/// exactly the order they were queued (each checks that it follows its
/// predecessor), and the counters show both paths were taken.
#[test]
fn fifo_per_thread_across_bypass_and_list_transitions() {
    const PRODUCERS: usize = 3;
    const MIN_ROUNDS: usize = 15;
    const BURST: u64 = 100;
    let rcu = Rcu::builder()
        .shards(2)
        .tick(Duration::from_micros(100))
        .nobypass_limit(8)
        .bypass_max(50)
        .staging(Staging::Off)
        .shard_choice(ShardChoice::PerThread)
        .build()
        .unwrap();
    // Per producer: the sequence number of the callback that must run next.
    let next: Arc<Vec<AtomicU64>> = Arc::new((0..PRODUCERS).map(|_| AtomicU64::new(0)).collect());
    let out_of_order = Arc::new(Failures::default());
    // Both paths and flushes seen (checked by the producers between rounds).
    let transitions = |rcu: &Rcu| {
        let s = rcu.stats();
        let via_bypass = shard_total(&s, |x| x.bypass_queued);
        via_bypass > 0 && s.queued() > via_bypass && shard_total(&s, |x| x.bypass_flushes) > 0
    };
    let ts = {
        let (r, next, out_of_order) = (rcu.clone(), Arc::clone(&next), Arc::clone(&out_of_order));
        let queue = move |p: usize, seq: u64, lazy: bool| {
            let (next, out_of_order) = (Arc::clone(&next), Arc::clone(&out_of_order));
            let f = move || {
                let prev = next[p].swap(seq + 1, Ordering::Relaxed);
                if prev != seq {
                    out_of_order.record(format!(
                        "producer {p}: callback {seq} ran when {prev} was due"
                    ));
                }
            };
            if lazy {
                r.call_lazy(f);
            } else {
                r.call(f);
            }
        };
        (0..PRODUCERS)
            .map(|p| {
                let (queue, rcu) = (queue.clone(), rcu.clone());
                thread::spawn(move || {
                    let start = Instant::now();
                    let mut seq = 0u64;
                    let mut round = 0;
                    loop {
                        for _ in 0..BURST {
                            queue(p, seq, false);
                            seq += 1;
                        }
                        for k in 0..3 {
                            thread::sleep(Duration::from_micros(300));
                            queue(p, seq, k == 0);
                            seq += 1;
                        }
                        round += 1;
                        if round >= MIN_ROUNDS && transitions(&rcu) {
                            return seq;
                        }
                        assert!(
                            start.elapsed() < LIVENESS_BOUND,
                            "no bypass/list transitions in {round} rounds: {:?}",
                            rcu.stats()
                        );
                    }
                })
            })
            .collect::<Vec<_>>()
    };
    let (counts, s) = within("producers and barrier", {
        let rcu = rcu.clone();
        move || {
            let counts = join_all(ts);
            rcu.barrier();
            (counts, rcu.stats())
        }
    });
    out_of_order.assert_none("per-thread FIFO");
    for (p, &count) in counts.iter().enumerate() {
        assert_eq!(
            next[p].load(Ordering::Relaxed),
            count,
            "producer {p}: not every callback ran"
        );
    }
    assert_settled(&s, counts.iter().sum(), "FIFO producers");
}

/// `barrier()` waits for lazy callbacks (whose timeout is an hour) and for
/// flood callbacks still in bypass lists, queued by the caller and by other
/// threads: right after it returns, every one of them has run. First a lone
/// thread's lazy-only bypass (nothing else can flush it: it was queued
/// through the bypass, is still pending, and one flush, the barrier's, moved
/// it), then rounds of floods and lazy calls from several threads.
#[test]
fn barrier_runs_bypass_and_lazy_callbacks() {
    const LAZY: usize = 500;
    // The lone thread's lazy-only bypass.
    let rcu = Rcu::builder().shards(1).lazy_timeout(HOUR).build().unwrap();
    let tally = Tally::new(&rcu, LAZY);
    let s = within("lazy calls and barrier", {
        let (rcu, tally) = (rcu.clone(), Arc::clone(&tally));
        move || {
            for i in 0..LAZY {
                tally.queue(i, true);
            }
            let before = rcu.stats();
            rcu.barrier();
            assert_eq!(
                tally.ran(),
                LAZY,
                "barrier() returned before the lazy callbacks ran"
            );
            (before, rcu.stats())
        }
    });
    let (before, after) = s;
    assert_eq!(
        shard_total(&before, |x| x.bypass_queued),
        LAZY as u64,
        "{before:?}"
    );
    assert_eq!(
        before.pending(),
        LAZY as u64,
        "lazy callbacks were flushed early: {before:?}"
    );
    assert_eq!(shard_total(&after, |x| x.bypass_flushes), 1, "{after:?}");
    tally.assert_all_ran(LAZY, "lazy-only bypass");
    assert_settled(&after, LAZY as u64, "lazy-only bypass");
    drop((rcu, tally));

    // Floods and lazy calls from several threads, and a barrier per round.
    const THREADS: usize = 3;
    const ROUNDS: usize = 3;
    const FLOOD: usize = 2_000;
    const LAZY_PER: usize = 300;
    const PER: usize = FLOOD + LAZY_PER;
    for limit in [0, rcu_offload::DEFAULT_NOBYPASS_LIMIT] {
        let what = format!("nobypass_limit {limit}");
        let rcu = Rcu::builder()
            .shards(2)
            .nobypass_limit(limit)
            .lazy_timeout(HOUR)
            .build()
            .unwrap();
        let tally = Tally::new(&rcu, ROUNDS * THREADS * PER);
        for round in 0..ROUNDS {
            let ts = {
                let tally = Arc::clone(&tally);
                spawn_n(THREADS, move |t| {
                    let base = (round * THREADS + t) * PER;
                    // Lazy first (a lazy-only bypass), then a flood (which
                    // promotes them), then lazy again (lazy-only or mixed,
                    // left for the barrier).
                    for i in 0..LAZY_PER / 2 {
                        tally.queue(base + i, true);
                    }
                    for i in 0..FLOOD {
                        tally.queue(base + LAZY_PER / 2 + i, false);
                    }
                    for i in LAZY_PER / 2..LAZY_PER {
                        tally.queue(base + FLOOD + i, true);
                    }
                })
            };
            let (rcu2, tally2, what2) = (rcu.clone(), Arc::clone(&tally), what.clone());
            within("producers and barrier", move || {
                join_all(ts);
                rcu2.barrier();
                let expected = (round + 1) * THREADS * PER;
                assert_eq!(
                    tally2.ran(),
                    expected,
                    "{what2}: round {round}: barrier() returned with callbacks pending: {:?}",
                    rcu2.stats()
                );
            });
        }
        let s = rcu.stats();
        tally.assert_all_ran(ROUNDS * THREADS * PER, &what);
        assert_settled(&s, (ROUNDS * THREADS * PER) as u64, &what);
        assert!(
            shard_total(&s, |x| x.bypass_queued) >= (ROUNDS * THREADS * LAZY_PER / 2) as u64,
            "{what}: lazy callbacks always go through the bypass: {s:?}"
        );
    }
}

/// Four shards in two GP-worker groups (`gp_stride(2)`), floods from six
/// threads and lazy callbacks (with an ordinary call now and then) from two
/// more, every callback checked to run once after its grace period. With
/// `barrier()` running concurrently on another thread throughout (each
/// barrier must see, per producer, every callback queued before it began:
/// FIFO makes "ran >= queued-before" exact) and a final barrier; and, in a
/// second variant, with no barrier at all: everything must still run (lazy
/// timeout 200 ms there, so lazy callbacks are flushed by their timers).
#[test]
fn several_groups_floods_lazy_and_barriers_strand_nothing() {
    const FLOODERS: usize = 6;
    const LAZIES: usize = 2;
    const PRODUCERS: usize = FLOODERS + LAZIES;
    const FLOOD: usize = 3_000;
    const LAZY: usize = 1_000;
    const TOTAL: usize = FLOODERS * FLOOD + LAZIES * LAZY;
    for with_barriers in [true, false] {
        let what = if with_barriers {
            "with barriers"
        } else {
            "without barriers"
        };
        let rcu = Rcu::builder()
            .shards(4)
            .gp_stride(2)
            .nobypass_limit(4)
            .bypass_max(256)
            .tick(Duration::from_micros(200))
            .lazy_timeout(if with_barriers {
                HOUR
            } else {
                Duration::from_millis(200)
            })
            .build()
            .unwrap();
        let tally = Tally::new(&rcu, TOTAL);
        let queued: Arc<Vec<AtomicUsize>> =
            Arc::new((0..PRODUCERS).map(|_| AtomicUsize::new(0)).collect());
        let ran: Arc<Vec<AtomicUsize>> =
            Arc::new((0..PRODUCERS).map(|_| AtomicUsize::new(0)).collect());
        let done = Arc::new(AtomicBool::new(false));
        let ts = {
            let (tally, queued, ran) = (Arc::clone(&tally), Arc::clone(&queued), Arc::clone(&ran));
            spawn_n(PRODUCERS, move |p| {
                let (n, base) = if p < FLOODERS {
                    (FLOOD, p * FLOOD)
                } else {
                    (LAZY, FLOODERS * FLOOD + (p - FLOODERS) * LAZY)
                };
                for i in 0..n {
                    let lazy = p >= FLOODERS && i % 100 != 99;
                    // The tally's callback, plus this producer's count.
                    let (checked, ran) = (tally.callback(base + i), Arc::clone(&ran));
                    let f = move || {
                        checked();
                        ran[p].fetch_add(1, Ordering::Release);
                    };
                    if lazy {
                        tally.rcu.call_lazy(f);
                    } else {
                        tally.rcu.call(f);
                    }
                    queued[p].store(i + 1, Ordering::Release);
                    if i % 500 == 499 {
                        thread::yield_now();
                    }
                }
            })
        };
        let barriers = with_barriers.then(|| {
            let (rcu, queued, ran, done) = (
                rcu.clone(),
                Arc::clone(&queued),
                Arc::clone(&ran),
                Arc::clone(&done),
            );
            thread::spawn(move || {
                let mut count = 0;
                while !done.load(Ordering::Relaxed) || count == 0 {
                    let seen: Vec<usize> =
                        queued.iter().map(|q| q.load(Ordering::Acquire)).collect();
                    rcu.barrier();
                    count += 1;
                    for (p, &seen) in seen.iter().enumerate() {
                        let ran = ran[p].load(Ordering::Acquire);
                        assert!(
                            ran >= seen,
                            "barrier #{count}: producer {p} had queued {seen} callbacks \
                             before it, only {ran} ran"
                        );
                    }
                }
                count
            })
        });
        let s = within("producers, barriers and the end", {
            let (rcu, tally) = (rcu.clone(), Arc::clone(&tally));
            move || {
                join_all(ts);
                done.store(true, Ordering::Relaxed);
                if let Some(b) = barriers {
                    b.join().expect("barrier thread");
                    rcu.barrier();
                    rcu.stats()
                } else {
                    wait_until("every callback, with no barrier", || tally.ran() == TOTAL);
                    wait_for_stats(&rcu, "the counters to settle", is_settled)
                }
            }
        });
        tally.assert_all_ran(TOTAL, what);
        assert_settled(&s, TOTAL as u64, what);
        assert!(shard_total(&s, |x| x.bypass_queued) > 0, "{what}: {s:?}");
    }
}
