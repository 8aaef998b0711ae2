//! Hooks for the model checkers: loom-tests/ and shuttle-tests/ reach the
//! inside of a domain only through this module, which exists only in model
//! builds (`--cfg loom` or `--cfg shuttle`) and is hidden from the docs.
#![cfg(any(loom, shuttle))]

use crate::mutants::Mutant;
use crate::nocb::{set_shard_hint, Level};
use crate::{Builder, Rcu};

/// A group's deferred-wake level (see `nocb/wake.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WakeLevel {
    None,
    Bypass,
    Lazy,
    Wake,
    Force,
}

/// A group's wake state, read under its wake lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WakeState {
    /// The deferred-wake level.
    pub level: WakeLevel,
    /// The armed timer's deadline (model nanoseconds), if armed.
    pub timer: Option<u64>,
    /// Times the level was reset (a cancel or a firing).
    pub resets: u64,
    /// Deferred wakes the timer performed.
    pub timer_wakes: u64,
}

/// Group `group`'s wake state.
pub fn wake_state(rcu: &Rcu, group: usize) -> WakeState {
    let w = rcu.core().nocb.wakes.groups[group].wake.lock();
    WakeState {
        level: match w.level() {
            Level::None => WakeLevel::None,
            Level::Bypass => WakeLevel::Bypass,
            Level::Lazy => WakeLevel::Lazy,
            Level::Wake => WakeLevel::Wake,
            Level::Force => WakeLevel::Force,
        },
        timer: w.timer(),
        resets: w.resets,
        timer_wakes: w.timer_wakes,
    }
}

/// Model time, in nanoseconds: it stands still except when a timer fires
/// live and wakes a GP worker, which moves it to that timer's deadline.
pub fn now() -> u64 {
    crate::sync::now_ns()
}

/// A domain's timer delays, in nanoseconds of model time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delays {
    /// One tick: the delay of a BYPASS, WAKE or FORCE deferral.
    pub tick: u64,
    /// The lazy timeout: the delay of a LAZY deferral.
    pub lazy: u64,
}

/// The delays of `rcu`'s deferred wakes.
pub fn delays(rcu: &Rcu) -> Delays {
    let cfg = &rcu.core().nocb.cfg;
    Delays {
        tick: cfg.tick_ns,
        lazy: cfg.lazy_ns,
    }
}

/// How many callbacks shard `shard`'s bypass holds.
pub fn bypass_len(rcu: &Rcu, shard: usize) -> usize {
    rcu.core().nocb.shards[shard].bypass.lock().len()
}

/// Run shard `shard`'s callbacks on this thread, as its CB worker would,
/// until `enough()` holds after a batch (the model's own count of its
/// callbacks). Needs [`ModelBuilder::caller_runs_callbacks`].
pub fn run_callbacks(rcu: &Rcu, shard: usize, enough: impl Fn() -> bool) {
    rcu.with_env(|env| rcu.core().nocb.run_callbacks(env, shard, enough));
}

/// Put the calling thread on callback shard `index` (modulo each domain's
/// shard count); model threads otherwise all use shard 0.
pub fn set_shard(index: usize) {
    set_shard_hint(index)
}

/// The names of every mutant (values of `RCU_LOOM_MUTANT`).
pub fn mutants() -> Vec<&'static str> {
    Mutant::ALL.iter().map(|(_, name)| *name).collect()
}

/// Builder switches that only the models turn.
pub trait ModelBuilder {
    /// Start no CB worker threads; the model's own thread runs the
    /// callbacks with [`run_callbacks`], which saves a thread in models of
    /// the wake protocols.
    fn caller_runs_callbacks(self) -> Self;
    /// Never defer a wake for rate-limiting. Model time stands still, so
    /// every direct wake after the first would otherwise be deferred to the
    /// timer thread; models of other protocols use this to stay within the
    /// checker's thread budget (the deferral itself is modelled in
    /// loom-tests/tests/wakeups.rs).
    fn no_wake_rate_limit(self) -> Self;
    /// The GP worker runs each grace period itself instead of asking the
    /// engine thread (the path it takes anyway when the engine thread
    /// cannot be started), which saves a thread.
    fn inline_grace_periods(self) -> Self;
    /// The lazy timeout is longer than the model: a timer armed for a lazy
    /// deadline never fires. Under it, a path that leaves a non-lazy callback (or a
    /// throttled producer) waiting for a lazy timeout strands it, and the
    /// model deadlocks; lazy callbacks themselves run only once something
    /// else flushes them (a non-lazy callback on their shard, a barrier,
    /// memory pressure, the domain's drop).
    fn lazy_timer_never_fires(self) -> Self;
    /// Stage `call()`s in per-thread feeds, as real domains do by default
    /// (models default to the direct enqueue, which most of them check).
    fn stage_in_feeds(self) -> Self;
    /// A grace period that goes to sleep waiting for a reader reports a
    /// stall at once, as a real one does once the stall timeout passed
    /// (model time never passes it).
    fn stall_at_once(self) -> Self;
}

impl ModelBuilder for Builder {
    fn caller_runs_callbacks(mut self) -> Self {
        self.model.caller_runs_callbacks = true;
        self
    }
    fn no_wake_rate_limit(mut self) -> Self {
        self.model.wake_rate_limit = false;
        self
    }
    fn inline_grace_periods(mut self) -> Self {
        self.model.inline_gp = true;
        self
    }
    fn lazy_timer_never_fires(mut self) -> Self {
        self.model.lazy_timer_fires = false;
        self
    }
    fn stage_in_feeds(self) -> Self {
        self.staging(crate::Staging::PerThread)
    }
    fn stall_at_once(mut self) -> Self {
        self.model.stall_at_once = true;
        self
    }
}

/// A domain's shared state without a handle: holding one keeps the memory
/// alive but does not keep the domain running (dropping the last `Rcu`
/// still shuts it down), as the fork handlers' registry does.
pub struct DomainRef(std::sync::Arc<crate::domain::Core>);

/// `rcu`'s state, for [`DomainRef::fork_prepare_and_release`].
pub fn domain_ref(rcu: &Rcu) -> DomainRef {
    DomainRef(std::sync::Arc::clone(rcu.core()))
}

impl DomainRef {
    /// Run the fork handlers' prepare step on this thread (every brief
    /// lock of the domain held at once, retrying after a yield while one
    /// is taken), then release the locks as the parent's handler does.
    pub fn fork_prepare_and_release(&self) {
        let held = crate::domain::quiesce::hold_all(&[&*self.0], |_| crate::sync::spin_hint());
        drop(held);
    }
}
