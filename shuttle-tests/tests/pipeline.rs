//! The whole callback pipeline under shuttle, at a size loom cannot reach.
//!
//! One domain with 4 shards in 2 GP-worker groups (`gp_stride(2)`), with a
//! bypass after the first callback of a tick (`nobypass_limit(1)`), bypass
//! lists flushed at 3 callbacks, and a high-water mark low enough that
//! producers are throttled. Four producer threads, one per shard, each
//! queue a mix of `call`, `call_lazy` and `call` inside a read-side section;
//! a fifth thread runs `barrier()` midway, then `synchronize()`; the real GP
//! workers, CB workers, grace-period engine and timer thread run the
//! callbacks. With the main thread that is 14 threads, against loom's 4 or 5.
//!
//! Checked in every execution:
//!
//! * every callback runs once, after a full grace period since its
//!   `snapshot()` was taken before its `call()` (and, if it was queued inside
//!   a read-side section, after that section ended), and each producer's
//!   callbacks run in the order they were queued;
//! * `barrier()` returns only after every callback whose `call()` had
//!   returned before the barrier began;
//! * **nothing stranded**: the main thread waits for every callback on a
//!   count that the callbacks bump, kicking nobody (no barrier, no drop);
//!   a callback left behind anywhere (a lost wake, a timer that never
//!   fires, a bypass never flushed) leaves every thread blocked, which
//!   shuttle reports as a deadlock.
//!
//! Callbacks record violations rather than panic: the CB worker catches a
//! callback's panic and carries on, so an assertion there would be counted
//! (`Stats::panics`) and not fail the test. The main thread asserts on the
//! record, and that no callback panicked.
#![cfg(shuttle)]

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};

use rcu_offload::model::ModelBuilder;
use rcu_offload::{GpCookie, Rcu};
use rcu_offload_shuttle_tests::{check_pct, check_random, iterations, Done};
use shuttle::sync::atomic::{AtomicBool, Ordering};
use shuttle::sync::{Arc, Condvar, Mutex};
use shuttle::thread;

const PRODUCERS: usize = 4;
const PER_PRODUCER: usize = 6;
const TOTAL: usize = PRODUCERS * PER_PRODUCER;

/// The shared record of one execution.
struct World {
    /// Callback `i * PER_PRODUCER + k` (producer `i`'s `k`-th) has run.
    ran: Vec<AtomicBool>,
    /// The read-side section that callback was queued in is still open:
    /// set before its `call()`, cleared just before the guard is dropped.
    open: Vec<AtomicBool>,
    /// Per producer: how many of its `call()`s have returned.
    progress: Mutex<[usize; PRODUCERS]>,
    progress_cv: Condvar,
    violations: Mutex<Vec<String>>,
    done: Arc<Done>,
}

impl World {
    fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }
}

/// Bumps the done count when dropped.
struct DoneToken(Arc<World>);

impl Drop for DoneToken {
    fn drop(&mut self) {
        self.0.done.one();
    }
}

/// What a callback owns. Fields drop in declaration order: the domain
/// handle goes before the token reports the callback done, so that once
/// every callback is done no handle but the main thread's is left (and the
/// main thread's drop, not a callback's, shuts the domain down).
struct Callback {
    rcu: Rcu,
    cookie: GpCookie,
    idx: usize,
    in_section: bool,
    token: DoneToken,
}

impl Callback {
    fn run(self) {
        let w = &self.token.0;
        let (i, k) = (self.idx / PER_PRODUCER, self.idx % PER_PRODUCER);
        if !self.rcu.poll(self.cookie) {
            w.violation(format!(
                "callback {i}.{k} ran before a full grace period had elapsed"
            ));
        }
        if self.in_section && w.open[self.idx].load(Ordering::SeqCst) {
            w.violation(format!(
                "callback {i}.{k} ran inside the read-side section it was queued in"
            ));
        }
        if k > 0 && !w.ran[self.idx - 1].load(Ordering::SeqCst) {
            w.violation(format!(
                "callback {i}.{k} ran before {i}.{}: producer order lost",
                k - 1
            ));
        }
        if w.ran[self.idx].swap(true, Ordering::SeqCst) {
            w.violation(format!("callback {i}.{k} ran twice"));
        }
        // `self` drops here: the handle, then the token.
    }
}

/// Totals over all executions of a test, printed at its end, to show that
/// the configuration exercises what it is meant to.
#[derive(Default)]
struct Coverage {
    executions: StdAtomicU64,
    throttled: StdAtomicU64,
    throttle_expedited: StdAtomicU64,
    bypass_queued: StdAtomicU64,
    bypass_flushes: StdAtomicU64,
    deferred_wakes: StdAtomicU64,
    timer_wakes: StdAtomicU64,
    barrier_callbacks: StdAtomicU64,
}

impl Coverage {
    fn add(&self, s: &rcu_offload::Stats) {
        let r = StdOrdering::Relaxed;
        self.executions.fetch_add(1, r);
        self.throttled.fetch_add(s.throttled, r);
        self.throttle_expedited.fetch_add(s.throttle_expedited, r);
        let sum = |f: fn(&rcu_offload::ShardStats) -> u64| s.shards.iter().map(f).sum::<u64>();
        self.bypass_queued.fetch_add(sum(|x| x.bypass_queued), r);
        self.bypass_flushes.fetch_add(sum(|x| x.bypass_flushes), r);
        self.barrier_callbacks
            .fetch_add(sum(|x| x.barrier_callbacks), r);
        self.deferred_wakes.fetch_add(s.deferred_wakes, r);
        self.timer_wakes.fetch_add(s.timer_wakes, r);
    }

    fn report(&self, what: &str) {
        let r = StdOrdering::Relaxed;
        eprintln!(
            "shuttle: {what}: over {} executions: {} throttled calls, {} throttle \
             expedites, {} callbacks through bypass lists, {} bypass flushes, {} deferred \
             wakes, {} timer wakes, {} barrier callbacks",
            self.executions.load(r),
            self.throttled.load(r),
            self.throttle_expedited.load(r),
            self.bypass_queued.load(r),
            self.bypass_flushes.load(r),
            self.deferred_wakes.load(r),
            self.timer_wakes.load(r),
            self.barrier_callbacks.load(r),
        );
    }
}

/// Whether the lazy timeout can pass within an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LazyTimer {
    /// A lazy deadline may come, as every other (the timer fires at any
    /// point after it was armed).
    Fires,
    /// The lazy timeout is longer than the execution
    /// (`ModelBuilder::lazy_timer_never_fires`): a non-lazy callback that
    /// ends up waiting for it is stranded. Each producer's last callback is
    /// then non-lazy, so that it flushes (promotes) that producer's lazy
    /// ones.
    NeverFires,
}

fn producer(rcu: Rcu, w: Arc<World>, i: usize, lazy_timer: LazyTimer) {
    rcu_offload::model::set_shard(i);
    for k in 0..PER_PRODUCER {
        let idx = i * PER_PRODUCER + k;
        let cb = |rcu: &Rcu, cookie, in_section| Callback {
            rcu: rcu.clone(),
            cookie,
            idx,
            in_section,
            token: DoneToken(w.clone()),
        };
        // Each producer starts the call / lazy / in-section cycle at a
        // different point, so that every mix meets every other.
        let last = k == PER_PRODUCER - 1;
        match (i + k) % 3 {
            1 if last && lazy_timer == LazyTimer::NeverFires => {
                let c = cb(&rcu, rcu.snapshot(), false);
                rcu.call(move || c.run());
            }
            0 => {
                let c = cb(&rcu, rcu.snapshot(), false);
                rcu.call(move || c.run());
            }
            1 => {
                let c = cb(&rcu, rcu.snapshot(), false);
                rcu.call_lazy(move || c.run());
            }
            _ => {
                let g = rcu.read();
                w.open[idx].store(true, Ordering::SeqCst);
                let c = cb(&rcu, rcu.snapshot(), true);
                rcu.call(move || c.run());
                // (The snapshot taken inside the section covers the rest of
                // it, up to the guard's drop: `poll` checks that.)
                w.open[idx].store(false, Ordering::SeqCst);
                drop(g);
            }
        }
        w.progress.lock().unwrap()[i] += 1;
        w.progress_cv.notify_all();
    }
}

/// Wait until half of all `call()`s have returned, note which, run
/// `barrier()`, and check that every noted callback has run. Then run a
/// `synchronize()`, which may complete a grace period that a GP worker
/// sleeps on before the engine does (the engine must still answer).
fn barrier_midway(rcu: Rcu, w: Arc<World>) {
    let before = {
        let mut p = w.progress.lock().unwrap();
        while p.iter().sum::<usize>() < TOTAL / 2 {
            p = w.progress_cv.wait(p).unwrap();
        }
        *p
    };
    rcu.barrier();
    for (i, &n) in before.iter().enumerate() {
        for k in 0..n {
            if !w.ran[i * PER_PRODUCER + k].load(Ordering::SeqCst) {
                w.violation(format!(
                    "barrier() returned before callback {i}.{k}, whose call() returned \
                     before the barrier began, had run"
                ));
            }
        }
    }
    rcu.synchronize();
}

/// Spawn a named thread (the name shows in shuttle's deadlock reports).
fn named(name: String, f: impl FnOnce() + Send + 'static) -> thread::JoinHandle<()> {
    thread::Builder::new().name(name).spawn(f).unwrap()
}

fn pipeline(cov: &Coverage, lazy_timer: LazyTimer) {
    // Dropped by hand once every check has passed: a failing check must not
    // unwind through the domain's shutdown, which waits for the very
    // threads that the failure stops.
    let builder = Rcu::builder()
        .shards(4)
        .gp_stride(2)
        .nobypass_limit(1)
        .bypass_max(3)
        .high_water(8)
        .low_water(4);
    let builder = match lazy_timer {
        LazyTimer::Fires => builder,
        LazyTimer::NeverFires => builder.lazy_timer_never_fires(),
    };
    let rcu = ManuallyDrop::new(builder.build().expect("valid configuration"));
    let w = Arc::new(World {
        ran: (0..TOTAL).map(|_| AtomicBool::new(false)).collect(),
        open: (0..TOTAL).map(|_| AtomicBool::new(false)).collect(),
        progress: Mutex::new([0; PRODUCERS]),
        progress_cv: Condvar::new(),
        violations: Mutex::new(Vec::new()),
        done: Done::new(),
    });
    let mut threads: Vec<_> = (0..PRODUCERS)
        .map(|i| {
            let (rcu, w) = (Rcu::clone(&rcu), w.clone());
            named(format!("producer/{i}"), move || {
                producer(rcu, w, i, lazy_timer)
            })
        })
        .collect();
    threads.push({
        let (rcu, w) = (Rcu::clone(&rcu), w.clone());
        named("barrier".into(), move || barrier_midway(rcu, w))
    });
    // Nothing stranded: wait for every callback, kicking nobody.
    w.done.wait_for(TOTAL);
    for t in threads {
        t.join().unwrap();
    }
    let violations = w.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "violations: {violations:#?}");
    for (idx, ran) in w.ran.iter().enumerate() {
        assert!(ran.load(Ordering::SeqCst), "callback {idx} never ran");
    }
    let stats = rcu.stats();
    assert_eq!(stats.panics, 0, "a callback panicked");
    assert_eq!(stats.queued(), TOTAL as u64);
    cov.add(&stats);
    // Shut the domain down: every worker is joined before the execution ends.
    drop(ManuallyDrop::into_inner(rcu));
}

#[test]
fn pipeline_random() {
    let cov = std::sync::Arc::new(Coverage::default());
    let c = cov.clone();
    check_random(move || pipeline(&c, LazyTimer::Fires), iterations(50_000));
    cov.report("pipeline_random");
}

#[test]
fn pipeline_pct() {
    let cov = std::sync::Arc::new(Coverage::default());
    let c = cov.clone();
    check_pct(
        move || pipeline(&c, LazyTimer::Fires),
        iterations(100_000),
        3,
    );
    cov.report("pipeline_pct");
}

/// The pipeline with a lazy timeout longer than the execution: a wake
/// owed now and left to a lazy timer, a non-lazy bypass re-armed at LAZY,
/// a FORCE or an expedite that skips a lazy bypass all strand a callback
/// (a deadlock), at a size loom cannot reach.
#[test]
fn pipeline_lazy_outlasts_pct() {
    let cov = std::sync::Arc::new(Coverage::default());
    let c = cov.clone();
    check_pct(
        move || pipeline(&c, LazyTimer::NeverFires),
        iterations(50_000),
        3,
    );
    cov.report("pipeline_lazy_outlasts_pct");
}
