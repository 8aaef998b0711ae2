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
use crate::sync::{now_ns, Ordering};

use super::env::{CallKind, Env};
use super::shard::{in_any_callback, shard_index};
use super::wake::{ExpediteRate, Traffic, WakeOwed};
use super::Nocb;

impl Nocb {
    /// Queue `slot` on the calling thread's shard.
    #[inline]
    pub(crate) fn call(&self, env: Env<'_>, slot: Slot, kind: CallKind) {
        let i = shard_index(self.shards.len());
        let shard = &self.shards[i];
        if !shard.started.load(Ordering::Acquire) {
            self.start_workers(env, i);
        }
        let pressure =
            self.throttle.enabled && shard.backlog() > self.throttle.share && self.over_share(env);
        let kind = if pressure { CallKind::Normal } else { kind };
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
