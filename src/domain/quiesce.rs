//! Holding every brief lock of a set of domains at once: what the fork
//! handlers' prepare step does (fork.rs), so that no other thread is inside
//! one of those critical sections when `fork()` copies the address space.
//!
//! # Invariant
//!
//! Prepare never waits for a lock while it holds another: it try-locks
//! every lock of the set and, if one is taken, releases all it took, backs
//! off, and starts again. Other threads nest these locks in orders of
//! their own (a CB worker stopping at shutdown holds its sleep lock, then
//! takes its list lock; an enqueue takes a bypass, then a list), and
//! prepare's fixed order inverts some of them, so waiting while holding
//! could deadlock with them. Checked by the shuttle test
//! `fork_prepare_races_shutdown` (shuttle-tests/tests/fork_prepare.rs; loom
//! cannot model a `try_lock` that must not block, loom issue #376; mutant
//! `fork_prepare_blocking` takes the locks one blocking `lock()` after
//! another and deadlocks with the stopping CB worker).
//!
//! Which locks are brief: every lock of the domain except the grace-period
//! lock and the barrier lock (held for as long as readers or callbacks make
//! a grace period or a barrier wait) and the cells' writer locks (held
//! while an update's closure runs). Each layer lists its own in its
//! `hold_for_fork`.

use crate::sync::HeldLocks;

use super::Core;

impl Core {
    /// Every brief lock of the domain, or `false` (with `held` holding
    /// whatever was taken, for the caller to release) if one is taken.
    fn hold_for_fork<'a>(&'a self, held: &mut HeldLocks<'a>) -> bool {
        self.reader.hold_for_fork(held)
            && self.gp.hold_for_fork(held)
            && self.nocb.hold_for_fork(held)
    }
}

/// Every brief lock of every domain of `cores`, all at once: try them all,
/// and if one is taken release everything and call `back_off(attempt)`
/// before the next attempt.
pub(crate) fn hold_all<'a>(cores: &[&'a Core], back_off: impl Fn(u32)) -> HeldLocks<'a> {
    let mut attempt = 0;
    loop {
        let mut held = HeldLocks::default();
        if cores.iter().all(|c| c.hold_for_fork(&mut held)) {
            return held;
        }
        drop(held);
        attempt += 1;
        back_off(attempt);
    }
}
