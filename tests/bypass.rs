//! Bypass lists, lazy callbacks, deferred wakes and the memory bound, with
//! real threads: floods through the bypass run every callback exactly once,
//! after a full grace period, in FIFO order per thread across bypass/list
//! transitions; `barrier()` and dropping the last handle flush bypass and
//! lazy callbacks; a non-lazy `call()` promotes the lazy callbacks queued
//! before it; a wake deferred from a read-side section still comes; the
//! high-water mark bounds the backlog without blocking readers or
//! callbacks. (Bad settings: tests/builder.rs.)
//!
//! No assertion here depends on how fast anything happens: lazy timeouts are
//! an hour where a test relies on lazy callbacks *not* being flushed by their
//! timeout, and every wait is a liveness bound (`within`, `wait_until`).
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{join_all, recv, spawn_n, wait_until, within, Failures, IdSet, LIVENESS_BOUND};
use rcu_offload::{Rcu, Stats};

/// A lazy timeout no test outlives: lazy callbacks that run were flushed by
/// something else (promotion, barrier, memory pressure, shutdown).
const HOUR: Duration = Duration::from_secs(3600);

// --- Helpers ---------------------------------------------------------------------

fn barrier_callbacks(s: &Stats) -> u64 {
    s.shards.iter().map(|x| x.barrier_callbacks).sum()
}

fn bypass_queued(s: &Stats) -> u64 {
    s.shards.iter().map(|x| x.bypass_queued).sum()
}

fn bypass_flushes(s: &Stats) -> u64 {
    s.shards.iter().map(|x| x.bypass_flushes).sum()
}

/// Checks the counters of a domain nobody queues on any more, right after a
/// `barrier()`: `queued` calls, every one invoked (plus the barrier's own
/// callbacks), nothing pending, no panic, on every shard.
fn assert_settled(s: &Stats, queued: u64, what: &str) {
    assert_eq!(s.queued(), queued, "{what}: queued: {s:?}");
    assert_eq!(s.pending(), 0, "{what}: pending after barrier(): {s:?}");
    for (i, x) in s.shards.iter().enumerate() {
        assert_eq!(x.pending, 0, "{what}: shard {i}: {s:?}");
        assert_eq!(
            x.invoked,
            x.queued + x.barrier_callbacks,
            "{what}: shard {i}: invoked != queued + barrier callbacks: {s:?}"
        );
        assert!(x.bypass_queued <= x.queued, "{what}: shard {i}: {s:?}");
    }
    assert_eq!(s.panics, 0, "{what}: {s:?}");
}

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

    /// Queues callback `id` (lazily or not) on the calling thread.
    fn queue(self: &Arc<Self>, id: usize, lazy: bool) {
        let cookie = self.rcu.snapshot();
        let t = Arc::clone(self);
        let f = move || {
            if !t.rcu.poll(cookie) {
                t.early
                    .record(format!("callback {id} ran before its grace period"));
            }
            t.ids.insert(id);
            t.ran.fetch_add(1, Ordering::Release);
        };
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

type Job = Box<dyn FnOnce() + Send>;

/// A helper thread whose callback shard is `want` in every domain with `n`
/// shards (a thread's shard is fixed at its first `call()`, round robin over
/// the process's threads: fresh threads are tried until one lands there).
struct OnShard {
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl OnShard {
    fn new(n: usize, want: usize) -> OnShard {
        assert!(want < n);
        for _ in 0..1000 {
            let (tx, rx) = mpsc::channel::<Job>();
            let (itx, irx) = mpsc::channel();
            let handle = thread::spawn(move || {
                let probe = Rcu::builder().shards(n).build().unwrap();
                probe.call(|| ());
                let s = probe.stats();
                let index = s.shards.iter().position(|x| x.queued == 1);
                drop(probe);
                itx.send(index).unwrap();
                for job in rx {
                    job();
                }
            });
            let index = recv(&irx, "the probe call's shard").expect("the probe call was queued");
            if index == want {
                return OnShard {
                    tx: Some(tx),
                    handle: Some(handle),
                };
            }
            drop(tx);
            handle.join().expect("probe thread");
        }
        panic!("no thread landed on shard {want} of {n} in 1000 tries");
    }

    /// Runs `f` on the helper thread and returns its result.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (rtx, rrx) = mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send(Box::new(move || {
                let _ = rtx.send(f());
            }))
            .expect("helper thread alive");
        recv(&rrx, "a job on a shard-pinned thread")
    }
}

impl Drop for OnShard {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let r = h.join();
            if !thread::panicking() {
                r.expect("shard-pinned thread");
            }
        }
    }
}

/// Like `common::wait_until`, but a failure also shows the domain's counters.
fn wait_for(rcu: &Rcu, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < LIVENESS_BOUND,
            "liveness bound exceeded: {what} did not happen within {LIVENESS_BOUND:?}; {:?}",
            rcu.stats()
        );
        thread::yield_now();
    }
}

/// Burns a little CPU (a slow callback).
fn spin(iterations: u32) {
    for _ in 0..iterations {
        std::hint::spin_loop();
    }
}

// --- 1. Floods through the bypass ------------------------------------------------

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
        let s = within("flood producers and barrier", move || {
            join_all(ts);
            rcu.barrier();
            rcu.stats()
        });
        tally.assert_all_ran(threads * per, &what);
        assert_settled(&s, (threads * per) as u64, &what);
        assert!(
            bypass_queued(&s) > 0,
            "{what}: nothing went through the bypass: {s:?}"
        );
        assert!(
            bypass_flushes(&s) > 0,
            "{what}: the bypass was never flushed: {s:?}"
        );
        if bypass_max == 1 {
            // A one-callback bypass is flushed by the next enqueue: half of
            // each thread's callbacks go through it, the other half straight
            // to the list behind the flush.
            assert!(
                s.queued() > bypass_queued(&s),
                "{what}: no callback took the list path: {s:?}"
            );
        }
    }
}

// --- 2. FIFO across bypass/list transitions ----------------------------------------

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
        .build()
        .unwrap();
    // Per producer: the sequence number of the callback that must run next.
    let next: Arc<Vec<AtomicU64>> = Arc::new((0..PRODUCERS).map(|_| AtomicU64::new(0)).collect());
    let out_of_order = Arc::new(Failures::default());
    // Both paths and flushes seen (checked by the producers between rounds).
    let transitions = |rcu: &Rcu| {
        let s = rcu.stats();
        let via_bypass = bypass_queued(&s);
        via_bypass > 0 && s.queued() > via_bypass && bypass_flushes(&s) > 0
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

// --- 3. barrier() flushes bypass and lazy callbacks ------------------------------

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
    assert_eq!(bypass_queued(&before), LAZY as u64, "{before:?}");
    assert_eq!(
        before.pending(),
        LAZY as u64,
        "lazy callbacks were flushed early: {before:?}"
    );
    assert_eq!(bypass_flushes(&after), 1, "{after:?}");
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
            bypass_queued(&s) >= (ROUNDS * THREADS * LAZY_PER / 2) as u64,
            "{what}: lazy callbacks always go through the bypass: {s:?}"
        );
    }
}

// --- 4. Lazy promotion ------------------------------------------------------------

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
                    (s.pending(), bypass_queued(&s)),
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
        assert!(bypass_flushes(&s) >= 1, "{s:?}");
        assert_eq!(s.pending(), 0, "{s:?}");
    }
}

/// Promotion is per shard, not per thread: lazy callbacks of one thread are
/// promoted by an ordinary `call()` of another thread on the same shard
/// (hour-long lazy timeout, no barrier).
#[test]
fn non_lazy_call_promotes_lazy_callbacks_of_another_thread_on_the_shard() {
    const LAZY: usize = 100;
    let rcu = Rcu::builder().shards(2).lazy_timeout(HOUR).build().unwrap();
    let a = OnShard::new(2, 1);
    let b = OnShard::new(2, 1);
    let ran = Arc::new(AtomicUsize::new(0));
    a.run({
        let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
        move || {
            for _ in 0..LAZY {
                let ran = Arc::clone(&ran);
                rcu.call_lazy(move || {
                    ran.fetch_add(1, Ordering::Relaxed);
                });
            }
        }
    });
    let s = rcu.stats();
    assert_eq!(s.shards[1].bypass_queued, LAZY as u64, "{s:?}");
    b.run({
        let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
        move || {
            rcu.call(move || {
                ran.fetch_add(1, Ordering::Relaxed);
            })
        }
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

// --- 5. Deferred wakes ------------------------------------------------------------

/// A `call()` inside a read-side section may not wake the GP worker (no
/// system call there): on an otherwise idle domain its wake is deferred to
/// the timer (`deferred_wakes` counts it), and the callback runs without any
/// `barrier()`. Both on a domain whose workers are idle after earlier work
/// and on a fresh one (the first `call()` ever, nested two sections deep).
#[test]
fn call_inside_read_section_defers_the_wake_and_still_runs() {
    for warm in [true, false] {
        let rcu = Rcu::builder().shards(1).build().unwrap();
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
            wait_until("flood callbacks queued through the bypass", || {
                bypass_queued(&rcu.stats()) > 0
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
    assert!(bypass_queued(&s) > 0, "{s:?}");
}

// --- 6. The memory bound ----------------------------------------------------------

/// The high-water mark bounds the backlog: producers queueing slow callbacks
/// far faster than they run (the callbacks are held back until the first
/// producer has blocked, so throttling is certain) never see more pending
/// callbacks than the documented policy allows (src/throttle.rs: about twice
/// the high-water mark plus one per producing thread; checked against
/// `2 * high + 64`), `throttled` counts the blocked calls, and every callback
/// runs. One producer on one shard, and four producers on four shards.
#[test]
fn throttle_bounds_the_backlog() {
    const HIGH: usize = 1_000;
    const LOW: usize = 500;
    const BOUND: u64 = 2 * HIGH as u64 + 64;
    for (producers, shards, per) in [(1, 1, 30_000), (4, 4, 8_000)] {
        let what = format!("{producers} producers on {shards} shards");
        let rcu = Rcu::builder()
            .shards(shards)
            .high_water(HIGH)
            .low_water(LOW)
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
        let s = within("throttled producers and barrier", {
            let rcu = rcu.clone();
            move || {
                join_all(ts);
                rcu.barrier();
                rcu.stats()
            }
        });
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
    let rcu = Rcu::builder()
        .shards(2)
        .high_water(HIGH)
        .low_water(HIGH / 2)
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let s = within("a callback queueing callbacks above high water", {
        let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
        move || {
            let (r, ran2) = (rcu.clone(), Arc::clone(&ran));
            rcu.call(move || {
                for _ in 0..CHILDREN {
                    let ran = Arc::clone(&ran2);
                    r.call(move || {
                        ran.fetch_add(1, Ordering::Relaxed);
                    });
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
        let rcu = Rcu::builder()
            .shards(2)
            .high_water(HIGH)
            .low_water(HIGH / 2)
            .build()
            .unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        within("calls inside a read-side section above high water", {
            let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
            move || {
                let guards: Vec<_> = (0..depth).map(|_| rcu.read()).collect();
                for _ in 0..N {
                    let ran = Arc::clone(&ran);
                    rcu.call(move || {
                        ran.fetch_add(1, Ordering::Relaxed);
                    });
                }
                drop(guards);
            }
        });
        wait_for(
            &rcu,
            &format!("depth {depth}: the callbacks after the section (no barrier)"),
            || ran.load(Ordering::Relaxed) == N,
        );
        let s = within("barrier", {
            let rcu = rcu.clone();
            move || {
                rcu.barrier();
                rcu.stats()
            }
        });
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
    let rcu = Rcu::builder()
        .shards(1)
        .tick(Duration::from_secs(1))
        .lazy_timeout(HOUR)
        .high_water(HIGH)
        .low_water(HIGH / 2)
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (rcu, ran, done) = (rcu.clone(), Arc::clone(&ran), Arc::clone(&done));
        thread::spawn(move || {
            for _ in 0..N {
                let ran = Arc::clone(&ran);
                rcu.call_lazy(move || {
                    ran.fetch_add(1, Ordering::Relaxed);
                });
            }
            done.store(true, Ordering::Release);
        })
    };
    wait_for(&rcu, "the throttled lazy producer to finish", || {
        done.load(Ordering::Acquire)
    });
    producer.join().unwrap();
    let s = within("barrier", {
        let rcu = rcu.clone();
        move || {
            rcu.barrier();
            rcu.stats()
        }
    });
    assert!(s.throttled > 0, "{s:?}");
    assert_eq!(ran.load(Ordering::Relaxed), N);
    assert_settled(&s, N as u64, "throttled lazy flood");
}

// --- 8. Dropping the domain -------------------------------------------------------

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
    let count = |ran: &Arc<AtomicUsize>| {
        let ran = Arc::clone(ran);
        move || {
            ran.fetch_add(1, Ordering::Relaxed);
        }
    };
    let ts = {
        let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
        spawn_n(THREADS, move |_| {
            for i in 0..PER {
                if i % 4 == 3 {
                    rcu.call_lazy(count(&ran));
                } else {
                    rcu.call(count(&ran));
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
            rcu.call_lazy(count(&ran2));
        }
        let s = rcu.stats();
        assert_eq!(s.pending(), LAZY as u64, "{s:?}");
        // The deferred wakes started the timer thread. A new thread names
        // itself once it first runs, and until then shows its creator's
        // name, so wait for the name instead of reading it once (CI saw a
        // just-spawned timer thread still named after the test).
        common::wait_until("the bd-rcu_timer thread to be named", || {
            common::count_threads_with_prefix("bd-rcu_timer") >= 1
        });
        assert_eq!(
            common::count_threads_with_prefix("bd-rcu_timer"),
            1,
            "the timer thread: {:?}",
            common::threads()
        );
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
        let ran = Arc::clone(&ran);
        rcu.call_lazy(move || {
            ran.fetch_add(1, Ordering::Relaxed);
        });
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

// --- 9. Several shards and groups -------------------------------------------------

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
                    let ran = Arc::clone(&ran);
                    let t = Arc::clone(&tally);
                    let cookie = t.rcu.snapshot();
                    let id = base + i;
                    let f = move || {
                        if !t.rcu.poll(cookie) {
                            t.early
                                .record(format!("callback {id} ran before its grace period"));
                        }
                        t.ids.insert(id);
                        t.ran.fetch_add(1, Ordering::Release);
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
                } else {
                    wait_until("every callback, with no barrier", || tally.ran() == TOTAL);
                    wait_until("the counters to settle", || {
                        let s = rcu.stats();
                        s.pending() == 0 && s.invoked() == s.queued() + barrier_callbacks(&s)
                    });
                }
                rcu.stats()
            }
        });
        tally.assert_all_ran(TOTAL, what);
        assert_settled(&s, TOTAL as u64, what);
        assert!(bypass_queued(&s) > 0, "{what}: {s:?}");
    }
}

// --- Wake levels across the shards of a group ---------------------------------------

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
/// ones included (src/wake.rs, src/throttle.rs; the `call_lazy` docs promise
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
        let count = || {
            let ran = Arc::clone(&ran);
            move || {
                ran.fetch_add(1, Ordering::Relaxed);
            }
        };
        let cookie = rcu.snapshot();
        // Starts the workers; the GP worker requests a grace period for it.
        rcu.call(count());
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
            rcu.call_lazy(count());
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
