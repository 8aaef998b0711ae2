//! [`Stats`]: a snapshot of a domain's callback and grace-period counters,
//! read from the callback machinery shard by shard.

use crate::nocb::Nocb;
use crate::sync::Ordering;

/// A snapshot of a domain's callback counters, from [`Rcu::stats`](crate::Rcu::stats).
///
/// The counters are read shard by shard, not atomically across shards, so a
/// snapshot taken while callbacks flow may be slightly inconsistent between
/// shards (never within one). The one internal callback that each
/// [`barrier`](crate::Rcu::barrier) entrains on each non-empty shard is not
/// counted in `queued`; it is counted in `invoked` and `pending`, and in
/// [`ShardStats::barrier_callbacks`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Per-shard counters, by shard index.
    pub shards: Vec<ShardStats>,
    /// Grace periods the domain has completed.
    pub grace_periods: u64,
    /// Callbacks that panicked (caught by their worker).
    pub panics: u64,
    /// Grace periods and barriers that waited longer than the stall
    /// timeout ([`Builder::stall_timeout`](crate::Builder::stall_timeout)),
    /// each counted once.
    pub stalls: u64,
    /// Times a GP worker woke up, over all groups.
    pub gp_worker_wakeups: u64,
    /// Wakes deferred to a timer (a level raised or a deadline moved),
    /// over all groups.
    pub deferred_wakes: u64,
    /// Deferred wakes the timer performed, over all groups.
    pub timer_wakes: u64,
    /// `call()`s that blocked because the backlog was above the high-water
    /// mark (see [`Builder::high_water`](crate::Builder::high_water)).
    pub throttled: u64,
    /// `call()`s above the high-water mark that could not block (inside a
    /// read-side section or a callback) and only expedited.
    pub throttle_expedited: u64,
}

/// One shard's counters; see [`Stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStats {
    /// Callbacks queued by `call`/`retire` on this shard.
    pub queued: u64,
    /// Callbacks that have finished running (or panicking).
    pub invoked: u64,
    /// Callbacks queued and not yet finished.
    pub pending: u64,
    /// Times the shard's CB worker woke up.
    pub cb_worker_wakeups: u64,
    /// Internal callbacks entrained by `barrier()`.
    pub barrier_callbacks: u64,
    /// Of `queued`, those that went through the bypass list (floods and
    /// lazy callbacks).
    pub bypass_queued: u64,
    /// Times the bypass list was flushed into the segmented list.
    pub bypass_flushes: u64,
}

impl Stats {
    /// Callbacks queued, over all shards.
    pub fn queued(&self) -> u64 {
        self.shards.iter().map(|s| s.queued).sum()
    }

    /// Callbacks invoked, over all shards.
    pub fn invoked(&self) -> u64 {
        self.shards.iter().map(|s| s.invoked).sum()
    }

    /// Callbacks pending, over all shards.
    pub fn pending(&self) -> u64 {
        self.shards.iter().map(|s| s.pending).sum()
    }

    /// CB-worker wakeups, over all shards.
    pub fn cb_worker_wakeups(&self) -> u64 {
        self.shards.iter().map(|s| s.cb_worker_wakeups).sum()
    }
}

/// The compact one-line form: `q/i/p` (queued/invoked/pending) per shard,
/// then the internal callbacks of barriers (counted in invoked and pending,
/// not in queued), the callbacks that went through a bypass, grace periods,
/// worker wakeups, deferred and timer wakes, throttled calls, callback
/// panics and stalls.
///
/// ```
/// let rcu = rcu_offload::Rcu::builder().shards(2).build().unwrap();
/// rcu.call(|| ());
/// rcu.barrier();
/// let line = rcu.stats().to_string();
/// assert!(line.starts_with("shards q/i/p ["), "{line}");
/// ```
impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("shards q/i/p [")?;
        for (i, x) in self.shards.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{}/{}/{}", x.queued, x.invoked, x.pending)?;
        }
        write!(
            f,
            "]  barrier cbs {}  bypassed {}  gps {}  wakeups gp {} cb {}  \
             deferred {} by timer {}  throttled {}  panics {}  stalls {}",
            self.shards.iter().map(|x| x.barrier_callbacks).sum::<u64>(),
            self.shards.iter().map(|x| x.bypass_queued).sum::<u64>(),
            self.grace_periods,
            self.gp_worker_wakeups,
            self.cb_worker_wakeups(),
            self.deferred_wakes,
            self.timer_wakes,
            self.throttled,
            self.panics,
            self.stalls
        )
    }
}

/// Read `nocb`'s counters, then the engine's count of grace periods
/// (`grace_periods`), last: every callback counted as invoked had its grace
/// period counted.
pub(crate) fn collect(nocb: &Nocb, grace_periods: impl FnOnce() -> u64) -> Stats {
    let shards = nocb
        .shards
        .iter()
        .map(|s| {
            // The shard's lock order: the CB worker's sleep lock (alone),
            // then bypass, then list; under both, its counters agree.
            let cb_worker_wakeups = s.cb.wakeups();
            let b = s.bypass.lock();
            let l = s.list.lock();
            ShardStats {
                queued: l.queued + b.queued,
                invoked: l.invoked,
                pending: (s.len_locked(&l) + b.len()) as u64,
                cb_worker_wakeups,
                barrier_callbacks: l.barrier_entrained,
                bypass_queued: b.queued,
                bypass_flushes: b.flushes,
            }
        })
        .collect();
    let groups = &nocb.wakes.groups;
    Stats {
        shards,
        grace_periods: grace_periods(),
        panics: nocb.panics.count(),
        stalls: nocb.stall.count(),
        gp_worker_wakeups: groups.iter().map(|g| g.wake.lock().wakeups).sum(),
        deferred_wakes: groups.iter().map(|g| g.wake.lock().deferred).sum(),
        timer_wakes: groups.iter().map(|g| g.wake.lock().timer_wakes).sum(),
        throttled: nocb.throttle.throttled.load(Ordering::Relaxed),
        throttle_expedited: nocb.throttle.expedited.load(Ordering::Relaxed),
    }
}
