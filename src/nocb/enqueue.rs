//! The enqueue path: `call()` on the calling thread's shard (kernel:
//! `call_rcu` on an offloaded CPU, `rcu_nocb_try_bypass` and
//! `__call_rcu_nocb_wake`), and the memory pressure it may meet.
//!
//! ```text
//!  call(f) ─► shard S: bypass lock ─► flood, lazy, or bypass non-empty?
//!     │ yes, and the bypass admits it: append to the bypass; if it was
//!     │     empty, a deferred wake at BYPASS (LAZY) makes sure of a flush
//!     ▼ no
//!  list lock: flush the bypass first (FIFO, barrier), enqueue
//!     ▼ the list had nothing pending (or a deferred WAKE is pending)
//!  wake S's GP worker now, or defer the wake (wake.rs)
//! ```
//!
//! # Invariant
//!
//! **No stranded callback.** Every enqueue that turns a list from "nothing
//! pending" into "something pending" wakes the GP worker or defers the wake
//! to a timer that is armed by construction (wake.rs); every callback that
//! makes a bypass non-empty asks for a deferred wake. Together with the GP
//! worker's own handshake, a pending callback always has a GP worker coming
//! for it. A wake owed now is never left to a timer armed for something
//! else: a BYPASS or LAZY timer is for the bypass the enqueue may just have
//! flushed. Checked by the loom models `enqueue_races_gp_worker_sleep`
//! (mutant `enqueue_no_wake`), `bypass_flush_races_enqueue` (mutant
//! `bypass_no_defer`), and, under the models' timer discipline
//! (discipline.rs), `rate_limited_wake_runs_within_its_tick` (mutant
//! `enqueue_leaves_wake_to_timer`) and `lazy_promotion` (mutant
//! `enqueue_flush_no_wake`).
//!
//! # Memory pressure
//!
//! The throttle (throttle.rs) is consulted only when the caller's shard
//! holds more than its share of the high-water mark. Above the mark the
//! caller first expedites: flushes every bypass (lazy ones included) and
//! wakes every GP worker; inside a read-side section, where no system call
//! is allowed, it asks for a FORCE deferred wake instead. Then an ordinary
//! thread blocks until the backlog is at low water; a reader or a callback
//! queues and returns. Under pressure nothing is lazy, and no lazy bypass
//! waits out its timeout: the expedite and FORCE's scan flush them too
//! (loom models `throttled_producer_flushes_lazy_bypasses` and
//! `pressure_in_reader_flushes_lazy_bypasses`; mutants
//! `expedite_skips_lazy`, `force_no_flush_all`, `wake_drops_flush_all`).

use crate::callback::Slot;
use crate::mutants::mutant;
use crate::sync::{heavy_fence, now_ns, Ordering, ReaderFences};

use super::env::{CallKind, Env, Staging};
use super::feed::{
    adopt, push, push_slot, Adopted, Closing, Feed, FeedDrain, Push, Reopened, Take,
};
use super::shard::{in_any_callback, shard_index};
use super::wake::{ExpediteRate, Traffic, WakeOwed};
use super::Nocb;

impl Nocb {
    /// Queue the callback `f`: staged in the calling thread's feed
    /// (feed.rs) if the domain stages normal callbacks, directly on a shard
    /// otherwise.
    #[inline]
    pub(crate) fn call<F: FnOnce() + Send + 'static>(&self, env: Env<'_>, f: F, kind: CallKind) {
        if kind == CallKind::Normal && self.cfg.staging == Staging::PerThread {
            match push(self.domain, f) {
                Push::Staged => {}
                Push::Closed(feed) => self.refill_feed(env, &feed),
                Push::Full(feed, slot) => {
                    self.refill_feed(env, &feed);
                    self.stage_after_refill(env, slot);
                }
                Push::NoFeed(slot) => self.adopt_feed(env, slot),
            }
            return;
        }
        self.call_direct(env, Slot::new(f), kind);
    }

    /// Stage `slot` in the feed the caller just refilled or adopted: it has
    /// room, but a drainer may have closed it meanwhile.
    #[cold]
    fn stage_after_refill(&self, env: Env<'_>, slot: Slot) {
        match push_slot(self.domain, slot) {
            Push::Staged => {}
            Push::Closed(feed) => self.refill_feed(env, &feed),
            // Neither happens after a hand-over restarted the feed or an
            // adoption made it the front one, short of the thread's locals
            // going away; a slot is never dropped for it: go direct.
            Push::Full(_, slot) | Push::NoFeed(slot) => {
                self.call_direct(env, slot, CallKind::Normal)
            }
        }
    }

    /// The thread's first staged `call()` into this domain (or its feed was
    /// orphaned): adopt a feed, registering a new one, then stage. A thread
    /// whose locals are gone (a `call()` from a thread-local destructor)
    /// enqueues directly.
    #[cold]
    fn adopt_feed(&self, env: Env<'_>, slot: Slot) {
        let i = shard_index(self.shards.len(), self.cfg.shard_choice);
        match adopt(self.domain, i) {
            Some(Adopted::New(feed)) => {
                self.feeds.lock().push(feed);
                self.stage_after_refill(env, slot);
            }
            Some(Adopted::Owned) => self.stage_after_refill(env, slot),
            None => self.call_direct(env, slot, CallKind::Normal),
        }
    }

    /// The owner's slow path: its feed is full or was closed. Hand every
    /// staged callback to the shard of the CPU it runs on, start the slots
    /// over, and reopen the feed if it was closed, which owes the feed a GP
    /// worker's scan (feed.rs, "No stranded callback"). Memory pressure is
    /// met here, before any lock is taken: a throttled owner may block.
    #[cold]
    fn refill_feed(&self, env: Env<'_>, feed: &Feed) {
        let i = self.enqueue_shard(env);
        // A throttled owner blocks here, holding no lock; its callbacks are
        // normal ones anyway.
        let _ = self.under_pressure(env, i);
        let (owed, reopened) = {
            let mut d = feed.drain.lock();
            let owed = self.shards[i].hand_over_feed(feed, &mut d).owed;
            (owed, feed.restart(&mut d, i))
        };
        let g = self.wakes.group_index(i);
        // A full feed is a flood: its wakes are rate-limited. A closed one
        // was idle for a whole scan: its wake is a lone callback's, at once
        // (rate-limited, a light load's callbacks waited up to a tick).
        let traffic = match reopened {
            Reopened::Yes => Traffic::Normal,
            Reopened::No => Traffic::Flood,
        };
        if owed == WakeOwed::GpWorker || self.wakes.wake_pending(g) {
            self.wakes.after_enqueue(env, g, owed, traffic);
        }
        if reopened == Reopened::Yes && owed == WakeOwed::Nothing && !mutant!(FeedReopenNoPromise) {
            // The wake above, if owed, comes after the reopen and so is the
            // promised scan; otherwise promise one a tick from now, as a new
            // bypass does.
            self.wakes
                .bypass_started(env, g, CallKind::Normal, now_ns());
        }
    }

    /// Take what every feed of group `g` (or, for `barrier()`, of every
    /// group) has published, into the feeds' home shards. A GP worker's
    /// scan (`Take::Scan`) also closes the feeds that published nothing
    /// since its last look, and drops the abandoned ones; a barrier's take
    /// wakes the GP workers its hand-overs owe.
    ///
    /// A feed that was active keeps no timer of its own: what the scan took
    /// waits for a grace period, and that grace period's end brings the GP
    /// worker back for another scan, which takes the feed again or closes
    /// it (feed.rs, "No stranded callback").
    pub(crate) fn take_feeds(&self, take: Take) {
        if self.cfg.staging == Staging::Off {
            return;
        }
        let mut feeds = self.feeds.lock();
        if feeds.is_empty() {
            return;
        }
        let mut closed_any = false;
        for feed in feeds.iter() {
            let mut d = feed.drain.lock();
            if let Take::Scan(g) = take {
                if self.wakes.group_index(d.home) != g {
                    continue;
                }
            }
            if self.take_one_feed(feed, &mut d, take) != 0 || take == Take::Barrier {
                continue;
            }
            match feed.close_if_idle(&mut d) {
                Some(Closing::JustClosed) => {
                    d.look_again = true;
                    closed_any = true;
                }
                Some(Closing::WasClosed) => {}
                // Published since our take: take it too. What we take waits
                // for a grace period whose end brings the next scan; left
                // open with nothing taken, the feed would have none.
                None => {
                    self.take_one_feed(feed, &mut d, take);
                }
            }
        }
        if closed_any {
            if !mutant!(FeedCloseNoFence) {
                // Feeds exist only where the readers' light fences are in
                // use (Builder::build): the owner's half is a compiler fence.
                heavy_fence(ReaderFences::Light);
            }
            for feed in feeds.iter() {
                let mut d = feed.drain.lock();
                if std::mem::take(&mut d.look_again) {
                    // Published while we closed it: the owner may or may not
                    // have seen the close; either way it is ours now.
                    self.take_one_feed(feed, &mut d, take);
                }
            }
        }
        if take != Take::Barrier {
            feeds.retain(|f| !f.is_abandoned(&f.drain.lock()));
        }
    }

    /// Hand what `feed` published to its home shard, after the shard's
    /// bypass, under the feed's drain lock (`d`); a barrier wakes the GP
    /// worker the hand-over owes (a scan owes itself nothing). Returns how
    /// many callbacks moved.
    fn take_one_feed(&self, feed: &Feed, d: &mut FeedDrain, take: Take) -> usize {
        if !feed.holds_callbacks(d) {
            return 0;
        }
        let i = d.home;
        let handed = self.shards[i].hand_over_feed(feed, d);
        if take == Take::Barrier
            && handed.owed == WakeOwed::GpWorker
            && !mutant!(BarrierFlushNoWake)
        {
            self.wakes.wake_gp_worker(self.wakes.group_index(i));
        }
        handed.moved
    }

    /// The calling thread's shard for an enqueue (by the domain's
    /// `ShardChoice`), its workers started on its first use.
    fn enqueue_shard(&self, env: Env<'_>) -> usize {
        let i = shard_index(self.shards.len(), self.cfg.shard_choice);
        if !self.shards[i].started.load(Ordering::Acquire) {
            self.start_workers(env, i);
        }
        i
    }

    /// Meet memory pressure before an enqueue on shard `i`: consulted only
    /// when the shard holds more than its share of the high-water mark.
    /// Returns whether the domain was over it (an ordinary thread has then
    /// blocked until low water; see [`over_share`](Nocb::over_share)).
    fn under_pressure(&self, env: Env<'_>, i: usize) -> bool {
        self.throttle.enabled
            && self.shards[i].backlog() > self.throttle.share
            && self.over_share(env)
    }

    /// Queue `slot` on a shard, taking its locks (kernel: `call_rcu` on an
    /// offloaded CPU, `rcu_nocb_try_bypass`, `__call_rcu_nocb_wake`).
    pub(crate) fn call_direct(&self, env: Env<'_>, slot: Slot, kind: CallKind) {
        let i = self.enqueue_shard(env);
        let shard = &self.shards[i];
        let kind = if self.under_pressure(env, i) {
            CallKind::Normal
        } else {
            kind
        };
        let cfg = &self.cfg;
        let mut b = shard.bypass.lock();
        let traffic = b.count_enqueue(cfg.nobypass_limit, cfg.tick_ns);
        if kind == CallKind::Lazy || traffic == Traffic::Flood || b.len() != 0 {
            if b.len() == 0 {
                // A new bypass is timed from now (one clock read per bypass).
                b.sample_clock(cfg.nobypass_limit, cfg.tick_ns);
            }
            let due = b.should_flush(b.now, self.flush_rule());
            if b.admits(kind, traffic) && !due {
                let was_empty = shard.push_bypass(&mut b, slot, kind);
                let now = b.now;
                drop(b);
                if was_empty {
                    self.wakes
                        .bypass_started(env, self.wakes.group_index(i), kind, now);
                }
                return;
            }
        }
        // The segmented list: flush the bypass first (FIFO, barrier).
        let g = self.wakes.group_index(i);
        let (owed, wake_pending) = {
            let mut l = shard.list.lock();
            let owed_by_flush = match shard.flush_bypass(&mut b, &mut l) {
                // Mutant `enqueue_flush_no_wake`: the flush owes nothing.
                WakeOwed::GpWorker if mutant!(EnqueueFlushNoWake) => WakeOwed::Nothing,
                owed => owed,
            };
            drop(b);
            let owed = owed_by_flush.or(shard.enqueue(&mut l, slot));
            (owed, self.wakes.wake_pending(g))
        };
        if owed == WakeOwed::GpWorker || wake_pending {
            self.wakes.after_enqueue(env, g, owed, traffic);
        }
    }

    /// The calling shard holds more than its share of the high-water mark:
    /// throttle if the whole backlog is over it. Returns whether it was:
    /// then even a lazy callback is queued as non-lazy.
    #[cold]
    fn over_share(&self, env: Env<'_>) -> bool {
        if self.backlog() <= self.throttle.high {
            return false;
        }
        if env.reading() {
            // No system calls here: let the timer expedite, soon.
            self.wakes.force_all_deferred(env);
            self.throttle.expedited.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if in_any_callback() {
            self.expedite(ExpediteRate::Limited);
            self.throttle.expedited.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        // About to block: expedite whatever the rate limit says, and again
        // whenever the wait is woken or times out without reaching low water.
        self.expedite(ExpediteRate::Always);
        self.throttle.wait(
            || self.backlog(),
            || self.expedite(ExpediteRate::Always),
            std::time::Duration::from_nanos(self.cfg.tick_ns),
        );
        true
    }

    /// Memory pressure: flush every bypass (lazy ones too) and wake every
    /// GP worker, at most once a tick unless `rate` says always.
    fn expedite(&self, rate: ExpediteRate) {
        let now = now_ns();
        let last = self.last_expedite.load(Ordering::Relaxed);
        let recent = last != 0 && now.saturating_sub(last) < self.cfg.tick_ns;
        if rate == ExpediteRate::Limited && recent {
            return;
        }
        self.last_expedite.store(now.max(1), Ordering::Relaxed);
        for (g, group) in self.wakes.groups.iter().enumerate() {
            for shard in &self.shards[group.shards.clone()] {
                let mut b = shard.bypass.lock();
                if mutant!(ExpediteSkipsLazy) && b.lazy_only() {
                    continue;
                }
                let mut l = shard.list.lock();
                // The wake below covers whatever the flush owes.
                let _ = shard.flush_bypass(&mut b, &mut l);
            }
            self.wakes.wake_gp_worker(g);
        }
    }
}
