//! loom models of deferred wakeups: wake levels, the group timer and the
//! timer service (src/nocb/wake.rs, src/nocb/timer.rs, src/nocb/enqueue.rs).
//!
//! The domain has one shard and runs with `ModelBuilder::caller_runs_callbacks`: the
//! model's main thread queues callbacks and then *is* the shard's CB worker
//! (`model::run_callbacks`), running callbacks until its own have run.
//! It kicks nobody: a callback that nobody will advance leaves the main
//! thread asleep in the CB worker's sleep, the GP worker asleep, the engine
//! and the timer thread idle, and loom reports a deadlock. The threads are
//! the main thread, the GP worker, the grace-period engine and the timer
//! service: four. At that size the models run at preemption bound 2
//! (bound 3 is millions of executions; the seed model's bound-3 run by hand
//! is recorded in loom-tests/README.md), and the seed scenario runs once
//! more at bound 3 with the GP worker running its own grace periods (three
//! threads).
//!
//! Under loom, model time stands still until a timer fires; firing moves it
//! to the timer's deadline (src/sync/model.rs), so a bypass or lazy list becomes
//! "old enough to flush" exactly when the timer armed for it has fired.
#![cfg(loom)]

use std::sync::Arc;

use rcu_offload::model::{ModelBuilder, WakeLevel};
use rcu_offload::Rcu;
use rcu_offload_loom_tests::{model, one_shard, run_until, Bound, Ran};

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

/// (W1) **The seed scenario** (docs/design.md, the wake-level
/// invariant). A first callback goes to the segmented list and wakes the GP
/// worker, which asks for a grace period and sleeps waiting for it. A lazy
/// callback then goes to the bypass and defers its wake (LAZY, timer armed):
/// the GP worker is asleep on a grace period with a bypass flush pending.
/// The timer fires at whatever point loom picks, late or early, and the GP
/// worker flushes and runs both. Afterwards the same shard enqueues another
/// lazy callback, deferring again, and the main thread waits for it.
///
/// Mutant caught: `timer_keeps_level`, the seed bug: the timer handler
/// disarms the timer but leaves the level at LAZY; the later deferral sees
/// LAZY, assumes a timer is armed, arms none, and its callback is stranded
/// (deadlock).
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
    counted(&rcu, &done, true);
    run_until(&rcu, &done, 3);
    assert_eq!(done.count(), 3);
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
/// performs the pending WAKE directly. Both callbacks must run.
///
/// Mutant caught: `gp_clear_after_scan`: the GP worker cancels a pending
/// WAKE after its scan instead of before, dropping a deferral issued after
/// the scan passed the shard (deadlock).
#[test]
fn deferred_wake_races_direct_wake_gp_wakeup_and_timer() {
    model(Bound::Fixed(2), || {
        let rcu = domain(usize::MAX);
        let done = Ran::new();
        let g = rcu.read();
        counted(&rcu, &done, false);
        drop(g);
        run_until(&rcu, &done, 1);
        counted(&rcu, &done, false);
        run_until(&rcu, &done, 2);
        assert_eq!(done.count(), 2);
    });
}

/// (W4) **Level rules: LAZY never downgrades a pending WAKE.** Inside a
/// read-side section a callback defers a WAKE; then a lazy callback asks
/// for LAZY. Unless the level was reset in between (the GP worker woke up,
/// or the timer fired: `resets` tells), the level must still be at least
/// WAKE and the deadline no later, whatever the GP worker and the timer do
/// meanwhile. (Loom cannot see *when* a timer fires, by design, so the rule
/// is checked on the state it leaves; both callbacks must also run.)
///
/// Mutant caught: `lazy_downgrades` (a LAZY request replaces the pending
/// level and postpones the timer): assertion.
#[test]
fn lazy_never_downgrades_pending_wake() {
    model(Bound::Fixed(2), || {
        let rcu = domain(usize::MAX);
        let done = Ran::new();
        let g = rcu.read();
        counted(&rcu, &done, false);
        let before = rcu_offload::model::wake_state(&rcu, 0);
        counted(&rcu, &done, true);
        let after = rcu_offload::model::wake_state(&rcu, 0);
        if after.resets == before.resets && before.level >= WakeLevel::Wake {
            assert!(
                after.level >= before.level,
                "LAZY downgraded level {:?} to {:?}",
                before.level,
                after.level
            );
            assert!(
                after.timer <= before.timer,
                "LAZY postponed the deferred wake: {:?} to {:?}",
                before.timer,
                after.timer
            );
        }
        drop(g);
        // The lazy callback needs a barrier or its timeout: `barrier()`
        // would block this thread, which runs the callbacks, so let its
        // timer (LAZY, armed by the enqueue or the GP worker) do it.
        run_until(&rcu, &done, 2);
        assert_eq!(done.count(), 2);
    });
}
