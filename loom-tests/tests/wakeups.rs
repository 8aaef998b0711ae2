//! loom models of deferred wakeups: wake levels, the group timer and the
//! timer service (src/nocb/wake.rs, src/nocb/timer.rs, src/nocb/enqueue.rs).
//!
//! The domain has one shard and runs with `ModelBuilder::caller_runs_callbacks`: the
//! model's main thread queues callbacks and then *is* the shard's CB worker
//! (`model::run_callbacks`), running callbacks until its own have run.
//! It kicks nobody: a callback that nobody will advance leaves the main
//! thread asleep in the CB worker's sleep, the GP worker asleep, the engine
//! and the timer thread idle, and loom reports a deadlock. The threads are
//! the main thread, the GP worker, the timer service and, in the models
//! that need it, the grace-period engine. Each model's bound is the
//! highest CI affords (loom-tests/README.md gives executions and times at
//! that bound and in the deep run).
//!
//! Under loom, model time stands still until a timer fires live; firing
//! moves it to the timer's deadline (src/sync/model.rs), so a bypass or lazy
//! list becomes "old enough to flush" exactly when the timer armed for it
//! has fired. The timer keeps the models' timer discipline
//! (src/nocb/discipline.rs): a BYPASS or LAZY timer with nothing left to
//! flush goes off idle, and in a model built with `lazy_timer_never_fires`
//! a lazy deadline never comes, so a wake owed now and left to a timer
//! strands its callback.
#![cfg(loom)]

use std::sync::Arc;

use rcu_offload::model::{delays, now, ModelBuilder};
use rcu_offload::Rcu;
use rcu_offload_loom_tests::{model, one_shard, run_until, Bound, Ran, Stamp};

fn domain(nobypass_limit: usize) -> Rcu {
    one_shard()
        .nobypass_limit(nobypass_limit)
        .caller_runs_callbacks()
        .build()
        .unwrap()
}

/// Queue a callback that counts itself in `done`.
fn counted(rcu: &Rcu, done: &Arc<Ran>, lazy: bool) {
    let d = done.clone();
    if lazy {
        rcu.call_lazy(move || d.one());
    } else {
        rcu.call(move || d.one());
    }
}

/// Queue a non-lazy callback that counts itself in `done` and stamps the
/// model time it ran at.
fn stamped(rcu: &Rcu, done: &Arc<Ran>) -> Arc<Stamp> {
    let (d, s) = (done.clone(), Stamp::new());
    let stamp = s.clone();
    rcu.call(move || {
        stamp.ran();
        d.one();
    });
    s
}

/// The bound on a deferred callback: it ran no later than `bound`, the
/// deadline the deferral promised (`what` names the path).
fn ran_by(stamp: &Stamp, bound: u64, what: &str) {
    assert!(
        stamp.at() <= bound,
        "{what} ran at model time {}, after the deadline {bound} its deferral armed",
        stamp.at()
    );
}

/// (W1) **The seed scenario** (docs/design.md, the wake-level
/// invariant). A first callback goes to the segmented list and wakes the GP
/// worker, which asks for a grace period and sleeps waiting for it. A lazy
/// callback then goes to the bypass and defers its wake (LAZY, timer armed):
/// the GP worker is asleep on a grace period with a bypass flush pending.
/// The timer fires at whatever point loom picks, late or early, and the GP
/// worker flushes and runs both. Afterwards the same shard enqueues another
/// lazy callback, deferring again, and the main thread waits for it.
///
/// Nothing else wakes the GP worker for the last lazy callback, so it runs
/// once the LAZY timer its call armed fires, within a lazy timeout (and a
/// tick) of its call.
///
/// Mutants caught: `timer_keeps_level`, the seed bug: the timer handler
/// disarms the timer but leaves the level at LAZY; the later deferral sees
/// LAZY, assumes a timer is armed, arms none, and its callback is stranded
/// (deadlock); `timer_not_notified` (arming the timer of a sleeping timer
/// thread does not notify it): deadlock.
#[test]
fn seed_timer_cancel_keeps_level() {
    model(Bound::Fixed(2), || seed_scenario(domain(usize::MAX)));
}

/// (W1b) The seed scenario with the GP worker running its grace periods
/// itself (no engine thread: 3 threads), which makes bound 3 affordable.
/// The GP worker then never sleeps on a grace period, but everything the
/// seed bug is about (deferral, timer, flush, the stale level) is there.
/// Mutant caught: `timer_keeps_level` (deadlock).
#[test]
fn seed_timer_cancel_keeps_level_inline_gp() {
    model(Bound::Fixed(3), || {
        seed_scenario(
            one_shard()
                .nobypass_limit(usize::MAX)
                .caller_runs_callbacks()
                .inline_grace_periods()
                .build()
                .unwrap(),
        )
    });
}

fn seed_scenario(rcu: Rcu) {
    let done = Ran::new();
    counted(&rcu, &done, false);
    counted(&rcu, &done, true);
    run_until(&rcu, &done, 2);
    let lazy = Stamp::new();
    let (l, d) = (lazy.clone(), done.clone());
    rcu.call_lazy(move || {
        l.ran();
        d.one();
    });
    // Its LAZY timer, or one the GP worker re-arms from a scan that began
    // before this call (within a tick of it), brings it in.
    let delays = delays(&rcu);
    let bound = now() + delays.tick + delays.lazy;
    run_until(&rcu, &done, 3);
    ran_by(&lazy, bound, "a lazy callback");
}

/// (W2) **The kernel's twin of the seed bug** (the March 2021 sequence,
/// where the canceller is a direct wake): a lazy callback defers a LAZY
/// wake and arms the timer; a non-lazy callback on the same shard promotes
/// it (flushes the lazy bypass into the list) and wakes the GP worker
/// directly, cancelling the timer; both run. Then another lazy callback
/// defers again.
///
/// Mutant caught: `direct_wake_keeps_level`: the direct wake cancels the
/// timer but keeps the level (the kernel's `wake_nocb_gp` before its fix),
/// so the later deferral arms nothing (deadlock).
#[test]
fn kernel_twin_direct_wake_keeps_level() {
    model(Bound::Fixed(2), || {
        let rcu = domain(usize::MAX);
        let done = Ran::new();
        counted(&rcu, &done, true);
        counted(&rcu, &done, false);
        run_until(&rcu, &done, 2);
        counted(&rcu, &done, true);
        run_until(&rcu, &done, 3);
        assert_eq!(done.count(), 3);
    });
}

/// (W3) A wake deferred from inside a read-side section (WAKE, timer armed)
/// races the GP worker's own wake-up (which cancels levels >= WAKE before it
/// scans), the timer firing, and a later enqueue outside the section that
/// performs the pending WAKE directly. Both callbacks must run, the first
/// within the tick its deferral armed.
///
/// Mutants caught: `gp_clear_after_scan`: the GP worker cancels a pending
/// WAKE after its scan instead of before, dropping a deferral issued after
/// the scan passed the shard (deadlock); `deferred_deadline_late` (a
/// deferral armed two ticks later than its delay): the first callback runs
/// after the deadline its path promised (assertion).
#[test]
fn deferred_wake_races_direct_wake_gp_wakeup_and_timer() {
    model(Bound::Fixed(2), || {
        let rcu = domain(usize::MAX);
        let done = Ran::new();
        let g = rcu.read();
        let deferred = stamped(&rcu, &done);
        let bound = now() + delays(&rcu).tick;
        drop(g);
        run_until(&rcu, &done, 1);
        ran_by(
            &deferred,
            bound,
            "a callback queued inside a read-side section",
        );
        counted(&rcu, &done, false);
        run_until(&rcu, &done, 2);
        assert_eq!(done.count(), 2);
    });
}

/// (W4) **Level rules: LAZY never postpones a pending WAKE.** Inside a
/// read-side section a callback defers a WAKE (one tick); then a lazy
/// callback asks for LAZY. The lazy timeout is longer than this model, so
/// when the GP worker sleeps through both calls, the first callback runs
/// only if its WAKE kept its deadline; a later non-lazy callback on the
/// shard then promotes the lazy one.
///
/// Mutant caught: `lazy_downgrades` (a LAZY request replaces the pending
/// level and moves its deadline to the lazy timeout): deadlock.
#[test]
fn lazy_never_downgrades_pending_wake() {
    model(Bound::Fixed(2), || {
        let rcu = lazy_outlasts_model();
        let done = Ran::new();
        let g = rcu.read();
        counted(&rcu, &done, false);
        counted(&rcu, &done, true);
        drop(g);
        run_until(&rcu, &done, 1);
        counted(&rcu, &done, false);
        run_until(&rcu, &done, 3);
    });
}

/// One shard, the model's thread runs the callbacks, the GP worker runs
/// its grace periods (main thread, GP worker, timer), and a lazy timeout
/// longer than the model (`lazy_timer_never_fires`): a callback that waits
/// for a lazy deadline is stranded, and nothing else can make model time
/// pass a WAKE's deadline.
fn lazy_outlasts_model() -> Rcu {
    one_shard()
        .nobypass_limit(usize::MAX)
        .caller_runs_callbacks()
        .inline_grace_periods()
        .lazy_timer_never_fires()
        .build()
        .unwrap()
}

/// (W5) **A deferral moves a lazy timer earlier.** A lazy callback arms
/// LAZY (the lazy timeout); inside a read-side section a non-lazy callback
/// then promotes it (flushes the lazy bypass into the list) and, unable to
/// wake the GP worker there, defers a WAKE: the raise must bring the armed
/// deadline in to one tick. Both run within a tick of the second call.
///
/// The lazy timeout is longer than this model.
///
/// Mutant caught: `raise_keeps_later_deadline` (a raised level keeps the
/// armed, lazy deadline): deadlock.
#[test]
fn wake_deferral_moves_a_lazy_timer_earlier() {
    model(Bound::Fixed(4), || {
        let rcu = lazy_outlasts_model();
        let done = Ran::new();
        counted(&rcu, &done, true);
        let g = rcu.read();
        let deferred = stamped(&rcu, &done);
        let bound = now() + delays(&rcu).tick;
        drop(g);
        run_until(&rcu, &done, 2);
        ran_by(
            &deferred,
            bound,
            "a callback queued inside a read-side section",
        );
    });
}

/// (W6) **Flood rate-limiting defers by one tick, and no more.** Every
/// `call()` is in a flood (`nobypass_limit(0)`) and a bypass is flushed at
/// one callback (`bypass_max(1)`), so callbacks alternate: one joins the
/// bypass (BYPASS armed), the next flushes it into the list and owes the GP
/// worker a wake. The first such wake is direct; the second, in the same
/// tick, is rate-limited to a deferred WAKE. Those two callbacks must run
/// within the tick that deferral armed. The GP worker runs its grace
/// periods itself (main thread, GP worker, timer).
///
/// Mutant caught: `enqueue_leaves_wake_to_timer` (an enqueue that owes a
/// wake leaves it to the armed BYPASS timer, whose bypass it has just
/// flushed: under the timer discipline that timer goes off idle):
/// deadlock.
#[test]
fn rate_limited_wake_runs_within_its_tick() {
    model(Bound::Fixed(3), || {
        let rcu = one_shard()
            .nobypass_limit(0)
            .bypass_max(1)
            .caller_runs_callbacks()
            .inline_grace_periods()
            .build()
            .unwrap();
        let done = Ran::new();
        counted(&rcu, &done, false);
        counted(&rcu, &done, false);
        run_until(&rcu, &done, 2);
        let bypassed = stamped(&rcu, &done);
        let flushing = stamped(&rcu, &done);
        let bound = now() + delays(&rcu).tick;
        run_until(&rcu, &done, 4);
        ran_by(&bypassed, bound, "a rate-limited flood callback");
        ran_by(&flushing, bound, "a rate-limited flood callback");
    });
}
