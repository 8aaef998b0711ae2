//! Grace-period sequence numbers, after the kernel's `rcu_seq_*` helpers
//! (kernel/rcu/rcu.h).
//!
//! A sequence number is a `u64` whose two low bits are the state of the
//! current grace period (0 = idle, 1 = in progress) and whose upper bits count
//! grace periods. Starting a grace period sets the state to 1; ending it clears
//! the state and bumps the counter, so every completed grace period advances
//! the number by exactly [`SEQ_ONE_GP`].
//!
//! Invariant kept: [`snap`] of a value read at time *t* is the smallest number
//! whose completion proves that a full grace period *started after t* has
//! ended; [`done`] is a wrap-safe `>=`. Everything the polled API
//! (`snapshot`/`start_poll`/`poll`/`cond_synchronize`) and the batching of
//! `synchronize()` promise follows from these two functions. The unit tests
//! below check them exhaustively around wrap-around; the loom model
//! `poll_never_early` checks the way the rest of the crate uses them.

/// Bits holding the grace-period state.
pub(crate) const SEQ_STATE_MASK: u64 = 0b11;
/// How much one completed grace period advances a sequence number.
pub(crate) const SEQ_ONE_GP: u64 = SEQ_STATE_MASK + 1;

/// The state bits of `s`: 0 when idle, non-zero while a grace period runs.
#[inline]
pub(crate) const fn state(s: u64) -> u64 {
    s & SEQ_STATE_MASK
}

/// The number a grace period starting from idle value `s` moves to.
#[inline]
pub(crate) const fn start(s: u64) -> u64 {
    debug_assert!(state(s) == 0);
    s.wrapping_add(1)
}

/// The last completed number at `s`: `s` itself when idle; when a grace
/// period is in progress, the number it started from (for a forked child,
/// which abandons a grace period or barrier a parent thread was running).
#[inline]
#[cfg_attr(any(loom, shuttle), allow(dead_code))]
pub(crate) const fn last_completed(s: u64) -> u64 {
    s & !SEQ_STATE_MASK
}

/// The number a grace period that is in progress at `s` ends with.
#[inline]
pub(crate) const fn end(s: u64) -> u64 {
    debug_assert!(state(s) != 0);
    (s | SEQ_STATE_MASK).wrapping_add(1)
}

/// The first sequence number whose completion proves that a full grace period
/// has elapsed since `s` was read: the end of the next grace period if none is
/// running, the end of the one after the current one otherwise (the current
/// one may have scanned readers before the caller's updates).
#[inline]
pub(crate) const fn snap(s: u64) -> u64 {
    (s.wrapping_add(2 * SEQ_STATE_MASK + 1)) & !SEQ_STATE_MASK
}

/// Wrap-safe `cur >= target`, as the kernel's `ULONG_CMP_GE`.
#[inline]
pub(crate) const fn done(cur: u64, target: u64) -> bool {
    (cur.wrapping_sub(target) as i64) >= 0
}

/// Wrap-safe `a < b`, as the kernel's `ULONG_CMP_LT`.
#[inline]
pub(crate) const fn before(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) < 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn last_completed_undoes_a_start() {
        assert_eq!(last_completed(8), 8);
        assert_eq!(last_completed(start(8)), 8);
        assert_eq!(end(start(8)), 12);
        assert_eq!(last_completed(start(u64::MAX - 3)), u64::MAX - 3);
    }

    use super::*;

    #[test]
    fn a_gp_advances_by_one_unit() {
        let s = 0;
        let mid = start(s);
        assert_eq!(state(mid), 1);
        assert_eq!(end(mid), SEQ_ONE_GP);
    }

    #[test]
    fn snap_from_idle_waits_for_the_next_gp() {
        // Idle at 8: the next GP runs 9 -> 12, and that is enough.
        assert_eq!(snap(8), 12);
        assert!(!done(8, snap(8)));
        assert!(done(end(start(8)), snap(8)));
    }

    #[test]
    fn snap_while_running_waits_for_the_gp_after() {
        // GP running at 9 (it may have scanned readers already): the current
        // one ends at 12, the next one at 16, and only 16 proves a full GP.
        assert_eq!(snap(9), 16);
        assert!(!done(end(9), snap(9)));
        assert!(done(end(start(end(9))), snap(9)));
    }

    #[test]
    fn comparisons_survive_wrap_around() {
        for base in [u64::MAX - 20, u64::MAX - 3, u64::MAX, 0, 1, 1 << 63] {
            let s = base & !SEQ_STATE_MASK;
            let t = snap(s);
            assert!(!done(s, t), "base {base:#x}");
            assert!(before(s, t));
            let after = end(start(s));
            assert!(done(after, t), "base {base:#x}");
            assert!(!before(after, t));
            // Running state wraps the same way.
            let r = start(s);
            let t2 = snap(r);
            assert!(!done(end(r), t2));
            assert!(done(end(start(end(r))), t2));
        }
    }

    #[test]
    fn done_is_a_total_order_near_any_point() {
        for a in [0u64, 5, u64::MAX - 1, 1 << 63] {
            for d in 0..16u64 {
                let b = a.wrapping_add(d);
                assert!(done(b, a));
                assert_eq!(done(a, b), d == 0);
                assert_eq!(before(a, b), d != 0);
            }
        }
    }
}
