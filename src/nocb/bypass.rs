//! Bypass lists: where a shard's callbacks go during a flood, so that the
//! enqueuer takes one uncontended lock and never touches the segmented list
//! (kernel: `rdp->nocb_bypass` and `rcu_nocb_try_bypass`, rewritten).
//!
//! A shard is *in a flood* when more than `nobypass_limit` callbacks were
//! queued on it in the current tick. The count decays by `nobypass_limit`
//! per tick (so a sustained flood stays one), and the clock is read only
//! when the count is over the limit, once per [`CLOCK_EVERY`] enqueues: the
//! common enqueue does no system call and no clock read.
//!
//! Lazy callbacks ([`Rcu::call_lazy`](crate::Rcu::call_lazy)) always go to
//! the bypass. A bypass holding only lazy callbacks is flushed only when it
//! is older than the lazy timeout or longer than `bypass_max`; a non-lazy
//! callback arriving on it flushes it first (this *promotes* the lazy ones
//! to a normal wait).
//!
//! # Invariants
//!
//! * **FIFO and barrier.** While the bypass is non-empty, every new callback
//!   of the shard either joins the bypass or flushes it into the segmented
//!   list first, under both locks (bypass lock, then list lock). So a
//!   thread's callbacks stay in order, and `barrier()`, which flushes every
//!   bypass under both locks before it entrains, waits for them.
//! * **No stranded bypass.** A non-empty bypass implies that its group's GP
//!   worker is not in an indefinite sleep: the enqueue that makes it
//!   non-empty asks for a deferred wake at BYPASS (LAZY if lazy), and a GP
//!   worker's scan that leaves it behind (young, or its try-lock failed)
//!   asks again before sleeping. The scan flushes it once it is old or long.
//! * **Lengths.** The shard's bypass length mirrors this one, written
//!   only under the bypass lock; a flush moves the count into the shard
//!   length under both locks (shard.rs).
//!
//! Checked by the loom models `bypass_flush_races_enqueue`,
//! `barrier_entrain_races_bypass_flush` and `lazy_promotion`
//! (loom-tests/tests/bypass.rs; mutants `bypass_no_defer`,
//! `gp_trylock_fail_no_defer`, `barrier_skips_bypass`, `lazy_no_promote`).

use crate::callback::{BlockCache, CbQueue, Slot};
use crate::mutants::mutant;

use super::env::CallKind;
use super::wake::Traffic;

/// While in a flood, the clock is read once per this many enqueues.
pub(crate) const CLOCK_EVERY: u64 = 32;

/// When a bypass is flushed: once it holds `max` callbacks, or once it is
/// older than a tick (the lazy timeout if it holds only lazy callbacks).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlushRule {
    pub(crate) max: usize,
    pub(crate) tick_ns: u64,
    pub(crate) lazy_ns: u64,
}

/// One shard's bypass list and flood accounting, under `Shard::bypass`.
#[derive(Default)]
pub(crate) struct Bypass {
    pub(crate) q: CbQueue,
    cache: BlockCache,
    /// When the first callback of `q` arrived (by the last clock sample).
    pub(crate) first: u64,
    /// How many callbacks of `q` are lazy.
    pub(crate) lazy: usize,
    /// The tick of the last clock sample, and the enqueue count in it.
    tick: u64,
    count: u64,
    /// The last clock sample (nanoseconds).
    pub(crate) now: u64,
    /// Callbacks queued through this bypass, and flushes of it.
    pub(crate) queued: u64,
    pub(crate) flushes: u64,
}

impl Bypass {
    /// Count one enqueue and tell whether the shard is in a flood: more than
    /// `limit` enqueues in the current tick of `tick_ns` nanoseconds.
    #[inline]
    pub(crate) fn count_enqueue(&mut self, limit: u64, tick_ns: u64) -> Traffic {
        self.count += 1;
        if self.count > limit && (self.count - limit) % CLOCK_EVERY == 1 {
            self.sample_clock(limit, tick_ns);
        }
        if self.count > limit {
            Traffic::Flood
        } else {
            Traffic::Normal
        }
    }

    /// Does a callback of `kind` join the bypass, rather than flush it into
    /// the list first? A lazy callback always joins; a non-lazy one only in
    /// a flood, and never a lazy-only bypass: it flushes that one instead,
    /// promoting the lazy callbacks to a normal wait (mutant
    /// `lazy_no_promote`: it joins and waits out the lazy timeout).
    #[inline]
    pub(crate) fn admits(&self, kind: CallKind, traffic: Traffic) -> bool {
        match kind {
            CallKind::Lazy => true,
            CallKind::Normal if self.lazy_only() => mutant!(LazyNoPromote),
            CallKind::Normal => traffic == Traffic::Flood,
        }
    }

    /// Read the clock; on a new tick, let the count decay.
    #[cold]
    pub(crate) fn sample_clock(&mut self, limit: u64, tick_ns: u64) {
        self.now = crate::sync::now_ns();
        let tick = self.now / tick_ns;
        if tick != self.tick {
            let elapsed = tick.saturating_sub(self.tick);
            self.count = self
                .count
                .saturating_sub(limit.saturating_mul(elapsed))
                .max(1);
            self.tick = tick;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.q.len()
    }

    /// Does the bypass hold only lazy callbacks (and at least one)?
    pub(crate) fn lazy_only(&self) -> bool {
        self.lazy != 0 && self.lazy == self.q.len()
    }

    /// Append a callback; returns whether the bypass was empty.
    pub(crate) fn push(&mut self, slot: Slot, kind: CallKind) -> bool {
        let was_empty = self.q.len() == 0;
        if was_empty {
            self.first = self.now;
        }
        self.q.push_back(slot, &mut self.cache);
        self.lazy += (kind == CallKind::Lazy) as usize;
        self.queued += 1;
        was_empty
    }

    /// Should the bypass be flushed, by the clock reading `now`, under
    /// `rule`?
    pub(crate) fn should_flush(&self, now: u64, rule: FlushRule) -> bool {
        let age = now.saturating_sub(self.first);
        let max_age = if self.lazy_only() {
            rule.lazy_ns
        } else {
            rule.tick_ns
        };
        self.q.len() != 0 && (self.q.len() >= rule.max || age >= max_age)
    }

    /// Take the whole bypass out, to be inserted into the segmented list by
    /// the caller, who holds the list lock too; `q` keeps its capacity.
    pub(crate) fn take(&mut self) -> &mut CbQueue {
        self.lazy = 0;
        self.flushes += 1;
        &mut self.q
    }

    /// Our block cache, to be refilled from the list's spares.
    pub(crate) fn cache(&mut self) -> &mut BlockCache {
        &mut self.cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_needs_more_than_the_limit_in_one_tick() {
        let mut b = Bypass::default();
        // A huge tick: every enqueue is in the same tick.
        let tick = u64::MAX / 2;
        b.sample_clock(4, tick);
        let floods: Vec<bool> = (0..6)
            .map(|_| b.count_enqueue(4, tick) == Traffic::Flood)
            .collect();
        assert_eq!(floods, [false, false, false, false, true, true]);
    }

    #[test]
    fn count_decays_on_a_new_tick() {
        let mut b = Bypass::default();
        for _ in 0..100 {
            b.count_enqueue(4, 1);
        }
        // Tick of 1 ns: the next clock sample is many ticks later, so the
        // count falls back to one.
        b.sample_clock(4, 1);
        assert_eq!(b.count_enqueue(4, 1), Traffic::Normal);
    }

    fn rule(max: usize, tick_ns: u64, lazy_ns: u64) -> FlushRule {
        FlushRule {
            max,
            tick_ns,
            lazy_ns,
        }
    }

    #[test]
    fn lazy_only_and_flush_conditions() {
        let mut b = Bypass {
            now: 1000,
            ..Default::default()
        };
        assert!(b.push(Slot::new(|| ()), CallKind::Lazy));
        assert!(b.lazy_only());
        assert!(
            !b.should_flush(1500, rule(10, 100, 1000)),
            "lazy waits its timeout"
        );
        assert!(b.should_flush(2000, rule(10, 100, 1000)));
        assert!(!b.push(Slot::new(|| ()), CallKind::Normal));
        assert!(!b.lazy_only());
        assert!(
            b.should_flush(1100, rule(10, 100, 1000)),
            "non-lazy: a tick"
        );
        assert!(b.should_flush(1000, rule(2, 100, 1000)), "long");
        let n = std::mem::take(b.take()).len();
        assert_eq!((n, b.len(), b.lazy_only(), b.queued), (2, 0, false, 2));
        assert!(
            !b.should_flush(u64::MAX, rule(0, 0, 0)),
            "empty: nothing to flush"
        );
    }
}
