//! Shared scaffolding for the loom models in `tests/`.
//!
//! The models only compile under `RUSTFLAGS="--cfg loom"`; see README.md in
//! this directory for how to run them and for the mutants each one catches.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread::{self, JoinHandle};
use rcu_offload::Rcu;

/// The value a retired object holds once its updater "freed" it.
pub const POISON: usize = 0xdead;

/// A tiny RCU-protected "pointer": `cur` selects one of `objs`, each of which
/// holds a live value until its updater poisons it after a grace period.
pub struct Objects {
    cur: AtomicUsize,
    objs: Vec<AtomicUsize>,
}

impl Objects {
    /// `n` live objects, object 0 published.
    pub fn new(n: usize) -> Self {
        Objects {
            cur: AtomicUsize::new(0),
            objs: (0..n).map(|i| AtomicUsize::new(100 + i)).collect(),
        }
    }

    /// Reader side: dereference the published object (as `rcu_dereference`).
    pub fn current(&self) -> usize {
        self.cur.load(Ordering::Acquire)
    }

    /// Reader side: the value of object `i`; relaxed, so only RCU orders it.
    pub fn value(&self, i: usize) -> usize {
        self.objs[i].load(Ordering::Relaxed)
    }

    /// Reader side: assert object `i` was not freed under us.
    pub fn check(&self, i: usize) {
        assert_ne!(
            self.value(i),
            POISON,
            "reader saw object {i} after it was freed"
        );
    }

    /// Updater side: publish object `i`, returning the old one (as
    /// `rcu_assign_pointer`).
    pub fn publish(&self, i: usize) -> usize {
        self.cur.swap(i, Ordering::AcqRel)
    }

    /// Updater side: "free" object `i`; relaxed, so only RCU orders it.
    pub fn poison(&self, i: usize) {
        self.objs[i].store(POISON, Ordering::Relaxed);
    }
}

/// How far a model explores.
#[derive(Clone, Copy, Debug)]
pub enum Bound {
    /// Every interleaving: no preemption bound at all.
    Exhaustive,
    /// At most this many preemptions per execution, unless the environment
    /// variable `LOOM_MAX_PREEMPTIONS` says otherwise (CI sets it).
    Preemptions(usize),
    /// Exactly this many preemptions, whatever `LOOM_MAX_PREEMPTIONS` says:
    /// for models whose thread count makes a higher bound impractical.
    Fixed(usize),
}

/// Spawn a reader thread that runs `sections` read-side sections, each
/// dereferencing the published object and checking it was not freed, then
/// exits (dropping its reader record).
pub fn spawn_reader(rcu: &Rcu, objs: &Arc<Objects>, sections: usize) -> JoinHandle<()> {
    let (rcu, objs) = (rcu.clone(), objs.clone());
    thread::spawn(move || {
        for _ in 0..sections {
            let g = rcu.read();
            let i = objs.current();
            objs.check(i);
            drop(g);
        }
    })
}

impl Objects {
    /// Updater side: publish object `next`, `wait` for a grace period, then
    /// free the object it replaced.
    pub fn update(&self, next: usize, wait: impl FnOnce()) {
        let old = self.publish(next);
        wait();
        self.poison(old);
    }
}

/// Run `f` under loom within `bound`. Never sets `max_duration` or
/// `max_permutations`, so a passing run was exhaustive within the bound.
pub fn model<F>(bound: Bound, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
    let mut b = loom::model::Builder::new();
    // The deferred-wakeup models take more scheduling decisions per
    // execution than loom's default cap of 1,000 (a cap on one execution's
    // length, not on exploration: it is not a way to stop early).
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        b.max_branches = 20_000;
    }
    match bound {
        Bound::Exhaustive => b.preemption_bound = None,
        Bound::Preemptions(n) => {
            if b.preemption_bound.is_none() {
                b.preemption_bound = Some(n);
            }
        }
        Bound::Fixed(n) => b.preemption_bound = Some(n),
    }
    if let Ok(v) = std::env::var("LOOM_DEEP_BOUND") {
        // loom-tests/deep.sh: every bounded model at least this deep;
        // exhaustive ones stay exhaustive.
        let deep: usize = v.parse().expect("LOOM_DEEP_BOUND: a number");
        b.preemption_bound = b.preemption_bound.map(|n| n.max(deep));
    }
    if let Ok(v) = std::env::var("LOOM_FORCE_BOUND") {
        // For measuring a model at another bound by hand; CI never sets it.
        b.preemption_bound = Some(v.parse().expect("LOOM_FORCE_BOUND: a number"));
    }
    let bound = b.preemption_bound;
    let runs = std::sync::Arc::new(StdAtomicUsize::new(0));
    let counter = runs.clone();
    let start = std::time::Instant::now();
    b.check(move || {
        counter.fetch_add(1, StdOrdering::Relaxed);
        f()
    });
    eprintln!(
        "loom: {} executions, preemption bound {:?}, in {:.2?}",
        runs.load(StdOrdering::Relaxed),
        bound,
        start.elapsed()
    );
}

/// A count of finished callbacks that a thread can block on *without kicking
/// anyone*: a lost wakeup anywhere in the pipeline then leaves every thread
/// blocked, and loom reports a deadlock.
#[derive(Default)]
pub struct Done {
    n: loom::sync::Mutex<usize>,
    cv: loom::sync::Condvar,
}

impl Done {
    /// A new, shared count at zero.
    pub fn new() -> Arc<Done> {
        Arc::new(Done::default())
    }

    /// Called by a callback when it has finished.
    pub fn one(&self) {
        *self.n.lock().unwrap() += 1;
        self.cv.notify_all();
    }

    /// How many callbacks have finished.
    pub fn count(&self) -> usize {
        *self.n.lock().unwrap()
    }

    /// Block until `n` callbacks have finished.
    pub fn wait_for(&self, n: usize) {
        let mut g = self.n.lock().unwrap();
        while *g < n {
            g = self.cv.wait(g).unwrap();
        }
    }
}

/// A count of finished callbacks for models whose main thread runs the
/// callbacks itself (`ModelBuilder::caller_runs_callbacks`): it only checks
/// the count between batches, so an untracked std atomic suffices (loom
/// runs one thread at a time) and adds no states of its own. Blocking still
/// happens in the library's CB-worker sleep, where a stranded callback
/// shows up as a deadlock.
#[derive(Default)]
pub struct Ran(std::sync::atomic::AtomicUsize);

impl Ran {
    /// A new, shared count at zero.
    pub fn new() -> std::sync::Arc<Ran> {
        std::sync::Arc::new(Ran::default())
    }

    /// Called by a callback when it has run.
    pub fn one(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many callbacks have run.
    pub fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The callback models' domain builder: one shard, throttling off (the
/// throttle model sets its own marks), to which each model adds its
/// loom-only hooks.
pub fn one_shard() -> rcu_offload::Builder {
    Rcu::builder().shards(1).high_water(usize::MAX)
}

/// Run shard 0's callbacks on this thread until `ran` reaches `n`.
pub fn run_until(rcu: &Rcu, ran: &Ran, n: usize) {
    rcu_offload::model::run_callbacks(rcu, 0, || ran.count() >= n);
}

/// Run shard `shard`'s callbacks on this thread until `ran` reaches `n`.
pub fn run_shard_until(rcu: &Rcu, shard: usize, ran: &Ran, n: usize) {
    rcu_offload::model::run_callbacks(rcu, shard, || ran.count() >= n);
}

/// When a callback ran, in model time (`model::now()`), for the models that
/// bound a deferred callback's delay by the deadline its path armed. Model
/// time moves only when a timer fires live, so a callback that ran at `t`
/// never waited for a timer due after `t`. Untracked, like [`Ran`].
pub struct Stamp(std::sync::atomic::AtomicU64);

impl Stamp {
    /// Not run yet.
    pub fn new() -> std::sync::Arc<Stamp> {
        std::sync::Arc::new(Stamp(std::sync::atomic::AtomicU64::new(u64::MAX)))
    }

    /// Called by the callback: it runs now.
    pub fn ran(&self) {
        self.0.store(
            rcu_offload::model::now(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The model time the callback ran at (`u64::MAX`: not yet).
    pub fn at(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The deadline of the deferred wake pending on group `group` right now,
/// or the current model time if none is pending (a wake already came).
pub fn pending_deadline(rcu: &Rcu, group: usize) -> u64 {
    rcu_offload::model::wake_state(rcu, group)
        .timer
        .unwrap_or_else(rcu_offload::model::now)
}

/// Plain, non-atomic data that callbacks write and a thread reads after
/// `barrier()`: loom's `UnsafeCell` checks every access, and reports two
/// accesses that no happens-before edge orders as a causality violation.
/// So a barrier that returns without acquiring what its callbacks did
/// fails the model, where a count kept in atomics would not show it.
pub struct Plain(loom::cell::UnsafeCell<usize>);

// SAFETY: `Plain` is shared only between loom threads in the models, and
// every access goes through loom's `UnsafeCell`, which panics (failing the
// model) on any pair of accesses not ordered by happens-before, instead of
// letting a data race happen.
unsafe impl Sync for Plain {}

impl Plain {
    /// Zero, shared.
    pub fn new() -> Arc<Plain> {
        Arc::new(Plain(loom::cell::UnsafeCell::new(0)))
    }

    /// Add one (a callback's write).
    pub fn bump(&self) {
        // SAFETY: loom checks that this write is ordered with every other
        // access to the cell, and fails the model if it is not.
        self.0.with_mut(|p| unsafe { *p += 1 });
    }

    /// The value (the barrier caller's read).
    pub fn get(&self) -> usize {
        // SAFETY: as in `bump`, loom checks the ordering of this read.
        self.0.with(|p| unsafe { *p })
    }
}

/// A cell value that poisons its own marker (an `Arc` of its own, which a
/// reader can keep looking at) when dropped: a value freed too early shows
/// as [`POISON`] rather than as a use after free.
pub struct Versioned {
    /// The marker; [`POISON`] once the value is dropped.
    pub marker: Arc<AtomicUsize>,
}

impl Versioned {
    /// `n` live markers (1, 2, ... n), and a cell value for the first.
    pub fn markers(n: usize) -> (Vec<Arc<AtomicUsize>>, Versioned) {
        let markers: Vec<Arc<AtomicUsize>> =
            (1..=n).map(|i| Arc::new(AtomicUsize::new(i))).collect();
        let first = Versioned::of(&markers[0]);
        (markers, first)
    }

    /// A value poisoning `marker` when dropped.
    pub fn of(marker: &Arc<AtomicUsize>) -> Versioned {
        Versioned {
            marker: marker.clone(),
        }
    }
}

impl Drop for Versioned {
    fn drop(&mut self) {
        self.marker.store(POISON, Ordering::Relaxed);
    }
}
