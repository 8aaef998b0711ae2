//! Deferred wakeups: the wake levels of a GP-worker group and the rules that
//! raise and clear them. Mirrors the kernel's `nocb_defer_wakeup` levels
//! (`RCU_NOCB_WAKE_*`) and `nocb_timer` on the group leader's `rcu_data`,
//! with the raise rules of `wake_nocb_gp_defer` (rewritten, not copied).
//!
//! Waking a thread is a system call. An enqueue may choose not to wake the
//! group's GP worker itself: the caller is inside a read-side section, or
//! the shard is in a flood and a wake was already issued in the current tick
//! (flood rate-limiting), or the
//! callback went to a bypass list that only needs flushing a tick from now.
//! It then raises the group's **level** and arms the group's **timer**, and
//! the timer service ([`crate::timer`]) performs the wake when the timer
//! fires. Levels, lowest first:
//!
//! | level  | meaning                                   | deadline            |
//! |--------|-------------------------------------------|---------------------|
//! | NONE   | nothing deferred, timer not armed         | -                   |
//! | BYPASS | a bypass list must be flushed soon        | now + 1 tick        |
//! | LAZY   | only lazy callbacks wait                  | now + lazy timeout  |
//! | WAKE   | a wake was deferred                       | now + 1 tick        |
//! | FORCE  | memory pressure inside a read-side section: wake and flush the group's bypass lists | now + 1 tick |
//!
//! # Invariant (the one the seed bug broke)
//!
//! **`level > NONE` if and only if the timer is armed**, and both change
//! together, under the group's one wake lock: [`GroupWake`] keeps them in
//! private fields that only its methods write, and every method that disarms
//! the timer also resets the level ([`GroupWake::cancel`],
//! [`GroupWake::fire`]). So a path that finds `level >= L` may rely on a
//! timer being armed to perform it, and skips arming one.
//!
//! In the kernel bug of March 2021 a path cancelled the timer and left the
//! level behind; the next deferred enqueue found the stale level, armed
//! nothing, and its callback sat unnoticed. The two mutants
//! `timer_keeps_level` (the timer handler disarms and keeps the level: the
//! seed scenario) and `direct_wake_keeps_level` (a direct wake cancels the
//! timer and keeps the level: the kernel's own sequence) reintroduce exactly
//! that, and the loom models `seed_timer_cancel_keeps_level` and
//! `kernel_twin_direct_wake_keeps_level` (loom-tests/tests/wakeups.rs) catch
//! them as stranded callbacks.
//!
//! # Rules
//!
//! * A request for a level *higher* than the current one raises the level
//!   and arms the timer, or moves an armed timer *earlier* (LAZY's far
//!   deadline becomes BYPASS's or WAKE's near one); it never moves it later.
//! * A request for a *lower or equal* level changes nothing, with two
//!   exceptions for BYPASS. On a pending BYPASS it moves the deadline
//!   *later*: in a callback flood there is no point waking the GP worker to
//!   flush a bypass that enqueuers keep flushing themselves (the kernel's
//!   rule too). On a pending LAZY it takes over and moves the deadline
//!   *earlier*: a non-lazy bypass must not wait out another shard's lazy
//!   timeout. In particular LAZY never downgrades a pending WAKE or BYPASS,
//!   and never postpones anything.
//! * FORCE also sets `flush_all`, which only the GP worker clears, when it
//!   flushes every bypass of its group in its next scan: a wake that cancels
//!   a pending FORCE (a direct wake, the GP worker's own wake-up) therefore
//!   never loses the flush it promised.
//! * The timer handler performs any level (wakes the GP worker) and resets
//!   it; a direct wake cancels the timer and resets any level; the GP
//!   worker's own wake-up cancels and resets levels >= WAKE (it is about to
//!   scan everything), while BYPASS and LAZY stay armed for the bypass lists
//!   its scan may leave behind. Later enqueues perform levels >= WAKE.
//!
//! The rules are unit-tested below; the races between them are checked by
//! the loom models in loom-tests/tests/wakeups.rs.

use crate::sync::mutant;

/// A deferred-wake level (kernel: `RCU_NOCB_WAKE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Level {
    None = 0,
    Bypass = 1,
    Lazy = 2,
    Wake = 3,
    Force = 4,
}

/// The delays of the levels, in nanoseconds (from the domain's
/// configuration).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Delays {
    pub(crate) tick: u64,
    pub(crate) lazy: u64,
}

impl Delays {
    fn of(self, level: Level) -> u64 {
        match level {
            Level::None => 0,
            Level::Lazy => self.lazy,
            Level::Bypass | Level::Wake | Level::Force => self.tick,
        }
    }
}

/// The wake state of a group, on its leader (kernel: `nocb_gp_sleep`,
/// `nocb_defer_wakeup`, `nocb_timer` of the `rdp_gp`, under `nocb_gp_lock`).
pub(crate) struct GroupWake {
    /// `true` from the moment the GP worker starts a scan until someone
    /// wakes it: a waker that finds it `true` sets it `false` and notifies.
    pub(crate) sleep: bool,
    /// The grace period the sleeping GP worker waits for, if any.
    pub(crate) awaited: Option<u64>,
    /// Shut down: the GP worker exits.
    pub(crate) stop: bool,
    /// Times the GP worker woke up.
    pub(crate) wakeups: u64,
    /// Deferred wakes requested (a level raised or a deadline moved).
    pub(crate) deferred: u64,
    /// Wakes the timer performed.
    pub(crate) timer_wakes: u64,
    /// Memory pressure (FORCE) asked for every bypass of the group to be
    /// flushed: the GP worker's next scan does it and clears this.
    pub(crate) flush_all: bool,
    /// Times the level was reset (cancel or fire): lets a loom model tell
    /// whether a reset happened between two looks.
    pub(crate) resets: u64,
    /// The tick of the last direct wake (`u64::MAX`: none yet).
    pub(crate) last_direct_wake: u64,
    /// See the module docs: private so that only the methods below, which
    /// keep `level > NONE <=> timer.is_some()`, write them.
    level: Level,
    /// The armed timer's deadline (nanoseconds of `sync::now_ns`).
    timer: Option<u64>,
}

impl GroupWake {
    pub(crate) fn new() -> GroupWake {
        GroupWake {
            sleep: false,
            awaited: None,
            stop: false,
            wakeups: 0,
            deferred: 0,
            timer_wakes: 0,
            resets: 0,
            flush_all: false,
            last_direct_wake: u64::MAX,
            level: Level::None,
            timer: None,
        }
    }

    pub(crate) fn level(&self) -> Level {
        self.level
    }

    /// Is the timer armed, and for when?
    #[cfg(any(test, loom, shuttle))]
    pub(crate) fn timer(&self) -> Option<u64> {
        self.timer
    }

    /// Ask for a deferred wake at `want` (> NONE) at time `now`. Returns the
    /// deadline the timer service must now fire at, if the timer was armed
    /// or moved; `None` if a pending level already covers the request.
    pub(crate) fn defer(&mut self, want: Level, now: u64, delays: Delays) -> Option<u64> {
        debug_assert!(want > Level::None);
        if want == Level::Force {
            self.flush_all = true;
        }
        let deadline = now.saturating_add(delays.of(want));
        let new = if want == Level::Lazy && self.level > Level::None && mutant("lazy_downgrades") {
            // Broken variant: a lazy request replaces whatever was pending,
            // postponing a deferred WAKE by the lazy timeout.
            self.level = Level::Lazy;
            Some(deadline)
        } else if want > self.level || (want == Level::Bypass && self.level == Level::Lazy) {
            // A raise; or a non-lazy bypass, which must not wait out a lazy
            // timeout: BYPASS takes over LAZY (the lazy callbacks are served
            // by the same wake; the GP worker re-arms LAZY for whatever it
            // leaves behind). Either way the timer only moves earlier.
            self.level = want;
            match self.timer {
                Some(t) if t <= deadline => None,
                _ => Some(deadline),
            }
        } else if want == Level::Bypass && self.level == Level::Bypass {
            // Flood: push the flush later (its enqueuers flush themselves).
            (self.timer != Some(deadline)).then_some(deadline)
        } else {
            None
        };
        if let Some(d) = new {
            self.timer = Some(d);
            self.deferred += 1;
        }
        self.check();
        new
    }

    /// Disarm the timer and reset the level (a direct wake, the GP worker's
    /// wake-up, shutdown). `keep_level` is the seed bug's broken variant,
    /// selected only by the mutants.
    pub(crate) fn cancel(&mut self, keep_level: bool) {
        self.timer = None;
        self.resets += 1;
        if !keep_level {
            self.level = Level::None;
        }
        self.check();
    }

    /// The timer armed for `deadline` fired. Returns `None` for a stale
    /// firing (the timer was cancelled or moved since); otherwise disarms,
    /// resets the level and returns the level it had, which the caller
    /// performs.
    pub(crate) fn fire(&mut self, deadline: u64) -> Option<Level> {
        if self.timer != Some(deadline) {
            return None;
        }
        let level = self.level;
        // Mutant `timer_keeps_level`: the seed bug, as DESIGN.md tells it.
        self.cancel(mutant("timer_keeps_level"));
        self.timer_wakes += 1;
        Some(level)
    }

    /// `level > NONE <=> timer armed`, in debug builds (the mutants break
    /// it on purpose, and exist only in loom builds, which are release).
    fn check(&self) {
        debug_assert_eq!(
            self.level > Level::None,
            self.timer.is_some(),
            "rcu_offload: wake level {:?} with timer {:?}",
            self.level,
            self.timer
        );
    }
}

#[cfg(all(test, not(any(loom, shuttle))))]
mod tests {
    use super::*;

    const D: Delays = Delays {
        tick: 10,
        lazy: 1000,
    };

    #[test]
    fn first_request_arms_at_its_delay() {
        for (want, d) in [
            (Level::Bypass, 110),
            (Level::Lazy, 1100),
            (Level::Wake, 110),
            (Level::Force, 110),
        ] {
            let mut w = GroupWake::new();
            assert_eq!(w.defer(want, 100, D), Some(d));
            assert_eq!((w.level(), w.timer()), (want, Some(d)));
        }
    }

    #[test]
    fn lazy_never_downgrades_a_stronger_level() {
        for first in [Level::Wake, Level::Force] {
            let mut w = GroupWake::new();
            let d = w.defer(first, 100, D);
            assert_eq!(w.defer(Level::Lazy, 105, D), None);
            assert_eq!((w.level(), w.timer()), (first, d));
        }
        // LAZY ranks above BYPASS (the kernel's order), but its far deadline
        // never postpones the bypass flush already armed.
        let mut w = GroupWake::new();
        let d = w.defer(Level::Bypass, 100, D);
        assert_eq!(w.defer(Level::Lazy, 105, D), None);
        assert_eq!((w.level(), w.timer()), (Level::Lazy, d));
    }

    #[test]
    fn bypass_takes_over_a_pending_lazy_with_the_earlier_deadline() {
        let mut w = GroupWake::new();
        assert_eq!(w.defer(Level::Lazy, 100, D), Some(1100));
        assert_eq!(w.defer(Level::Bypass, 200, D), Some(210));
        assert_eq!((w.level(), w.timer()), (Level::Bypass, Some(210)));
    }

    #[test]
    fn force_asks_for_a_flush_that_outlives_a_cancel() {
        let mut w = GroupWake::new();
        w.defer(Level::Force, 0, D);
        w.cancel(false);
        assert!(w.flush_all, "only the GP worker's scan clears it");
    }

    #[test]
    fn a_higher_level_moves_the_timer_earlier_never_later() {
        let mut w = GroupWake::new();
        assert_eq!(w.defer(Level::Lazy, 100, D), Some(1100));
        assert_eq!(w.defer(Level::Wake, 200, D), Some(210));
        assert_eq!((w.level(), w.timer()), (Level::Wake, Some(210)));
        // FORCE over WAKE: higher level, but the armed deadline is earlier.
        assert_eq!(w.defer(Level::Force, 205, D), None);
        assert_eq!((w.level(), w.timer()), (Level::Force, Some(210)));
        // BYPASS under FORCE: nothing.
        assert_eq!(w.defer(Level::Bypass, 300, D), None);
        assert_eq!(w.timer(), Some(210));
    }

    #[test]
    fn bypass_on_bypass_moves_later() {
        let mut w = GroupWake::new();
        assert_eq!(w.defer(Level::Bypass, 100, D), Some(110));
        assert_eq!(w.defer(Level::Bypass, 105, D), Some(115));
        assert_eq!(w.defer(Level::Bypass, 105, D), None);
        assert_eq!((w.level(), w.timer()), (Level::Bypass, Some(115)));
    }

    #[test]
    fn cancel_and_fire_reset_the_level_with_the_timer() {
        let mut w = GroupWake::new();
        w.defer(Level::Wake, 0, D);
        w.cancel(false);
        assert_eq!((w.level(), w.timer()), (Level::None, None));
        let d = w.defer(Level::Bypass, 0, D).unwrap();
        assert_eq!(
            w.fire(d + 1),
            None,
            "a firing for another deadline is stale"
        );
        assert_eq!(w.fire(d), Some(Level::Bypass));
        assert_eq!(
            (w.level(), w.timer(), w.timer_wakes),
            (Level::None, None, 1)
        );
        assert_eq!(w.fire(d), None, "fired once");
        // After a reset, the next request arms again: no stale level.
        assert_eq!(w.defer(Level::Wake, 50, D), Some(60));
    }
}
