//! The timer discipline of the models: what lets a model tell a *late* wake
//! from a timely one. Compiled into model builds only (loom and shuttle),
//! where it replaces the timer thread's firing.
//!
//! A timer that may fire at any point after it is armed (the model clock's
//! only rule, src/sync/model.rs) catches a *lost* wake: nothing at all will
//! wake the GP worker, and the model deadlocks. It cannot catch a path that
//! owes the GP worker a wake now but leaves it to a timer armed for
//! something else: that timer fires in the end, its wake starts a scan of
//! every shard, and the callbacks run a tick (or a lazy timeout) late
//! while every model passes. So in the models the timer keeps to what each
//! level is for:
//!
//! * **BYPASS and LAZY** are timed flushes of bypass lists, and BYPASS is
//!   also the scan an open feed was promised (feed.rs). Their timer fires
//!   only while a bypass of the group still holds callbacks or a feed
//!   homed on the group is open; with nothing left to flush or watch it
//!   goes off idle: the level is reset and nobody is woken. Whoever emptied
//!   the bypass owed the wake, if one was owed. (The feeds are looked at
//!   first, under their own locks, which come before the bypass locks in
//!   the lock order; a feed reopened after that look asks for a deadline of
//!   its own.)
//!   The check and the idling happen under every bypass lock of the group
//!   (then the wake lock, the global lock order), so a callback cannot
//!   slip into a bypass between them; a timer that does fire fires after
//!   those locks are released, so the GP worker it wakes does not find a
//!   bypass busy that no real timer would hold.
//! * **A lazy deadline never comes** in a model built with
//!   `ModelBuilder::lazy_timer_never_fires`: there the lazy timeout is
//!   longer than the model, so a non-lazy callback or a throttled producer
//!   that ends up waiting for it is stranded. The rule is on the deadline,
//!   not the level: a LAZY level that kept an armed BYPASS deadline (LAZY
//!   ranks above BYPASS but never postpones it) fires at that deadline.
//! * **WAKE and FORCE** fire: only deliberate deferrals request them (a
//!   reader, a rate-limited flood, memory pressure inside a reader), and
//!   the models bound how late the deferred callbacks run by the deadline
//!   those paths arm.
//!
//! Model time moves only when a timer fires live and wakes the GP worker
//! (`sync::timer_fired_at`): a stale or idle firing leaves it, so a
//! callback that a model sees run at model time `t` was never waiting for a
//! timer whose deadline is after `t`.
//!
//! Which path wakes now, which defers to which level and why, is the
//! "Wake rules" table of docs/design.md; loom-tests/mutants.sh lists the
//! mutant of each path that owes an immediate wake, and the model that
//! kills it under this discipline.

use crate::mutants::model_only;

model_only! {
    use super::env::Staging;
    use super::wake::{Disciplined, Flushable};
    use super::Nocb;

    impl Nocb {
        /// The timer thread's loop under the discipline (module docs).
        pub(super) fn run_disciplined_timer(&self) {
            self.wakes.run_timer(|g, deadline| {
                let watched = self.cfg.staging == Staging::PerThread
                    && self.feeds.lock().iter().any(|f| {
                        let d = f.drain.lock();
                        f.is_open() && self.wakes.group_index(d.home) == g
                    });
                let shards = self.wakes.groups[g].shards.clone();
                let held: Vec<_> = self.shards[shards].iter().map(|s| s.bypass.lock()).collect();
                let bypasses = if watched || held.iter().any(|b| b.len() != 0) {
                    Flushable::Something
                } else {
                    Flushable::Nothing
                };
                let verdict = self.wakes.timer_due_disciplined(g, deadline, bypasses);
                drop(held);
                if verdict == Disciplined::Fire {
                    self.wakes.timer_fired(g, deadline);
                }
            });
        }
    }
}
