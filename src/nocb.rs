//! Offloaded callbacks: shards, groups, the enqueue path and every wake
//! decision. Mirrors the kernel's no-CBs machinery (kernel/rcu/tree_nocb.h):
//! a shard is an `rcu_data` with its `cblist`, a group is the set of shards
//! one `rcuog` kthread serves, and the wake functions here stand for
//! `__call_rcu_nocb_wake` / `wake_nocb_gp`.
//!
//! ```text
//!  call(f) ──► shard S: list lock ─► SegCbList::enqueue ─► "was all done"?
//!                                                      │ yes
//!                                                      ▼
//!  GP worker of S's group ◄──────────── wake_gp_worker(group)   (this module)
//!   scan: advance, accelerate, request GPs ──► GP engine ──► gp_completed()
//!   sleep until woken or the earliest awaited GP is done   (worker.rs)
//!   advance into DONE ─► wake CB worker of S
//!  CB worker of S: extract DONE, invoke outside the lock (worker.rs)
//!  barrier(): entrain on every non-empty shard, wait      (barrier.rs)
//! ```
//!
//! # Invariants
//!
//! * **No stranded callback.** A shard whose list has pending callbacks
//!   (WAIT, NEXT_READY or NEXT non-empty) will be scanned again by its group's
//!   GP worker. Every enqueue that turns a list from "nothing pending" into
//!   "something pending" wakes the GP worker ([`Nocb::call`]); every scan
//!   that leaves pending callbacks ends in a sleep that a completing grace
//!   period ends ([`Nocb::gp_completed`]); and the GP worker marks itself
//!   asleep *before* it scans, under the group's wake lock, so a wake racing
//!   the scan is never lost. Checked by the loom models
//!   `enqueue_races_gp_worker_sleep`, `advance_races_gp_completion` and
//!   `gp_completed_by_synchronize` (loom-tests/tests/callbacks.rs). The
//!   models run one shard in one group; several shards and groups, the
//!   reaper thread and callbacks that queue callbacks during shutdown are
//!   covered by the real-thread tests in tests/callbacks.rs.
//! * **Wake state lives on the group.** Only [`Group::wake`] holds it (the
//!   GP worker's sleep flag, its awaited grace period, and the wake level
//!   with the timer, src/wake.rs); all decisions to wake a GP worker, now or
//!   deferred, are taken by the functions in this module.
//! * **Floods and deferral.** `call()` takes the shard's bypass lock first;
//!   in a flood, or for a lazy callback, it appends to the bypass and asks
//!   for a deferred wake when the bypass becomes non-empty (src/bypass.rs).
//!   Otherwise it flushes the bypass into the list, enqueues, and, if the
//!   list went from nothing pending to something pending, wakes the GP
//!   worker now, or defers the wake (inside a read-side section of the
//!   domain; or, in a flood, a wake was already issued this tick). Checked by the loom
//!   models in loom-tests/tests/wakeups.rs and bypass.rs.
//! * **Shard length.** `Shard::len` counts the callbacks of the shard's list
//!   plus those a CB worker has taken out but not yet finished invoking;
//!   `Shard::bypass_len` counts the bypass. The first is written only under
//!   the list lock, the second only under the bypass lock, and a flush moves
//!   the count from one to the other under both. `barrier()` reads them
//!   under both locks, after flushing the bypass, so a `call()` that happened
//!   before the barrier is never missed; `len` falls only after the
//!   callbacks it counted have returned, with `Release`, so a reader that
//!   sees it fall also sees their effects. These are the "fully ordered 0→1
//!   and 1→0 transitions" of DESIGN.md, obtained from the locks rather than
//!   full fences on every update (loom models
//!   `barrier_races_enqueue_and_invocation`, `concurrent_barriers_share_work`
//!   and `barrier_entrain_races_bypass_flush`). The throttle and `stats()`
//!   read both without locks, as estimates.
//!
//! # Shards
//!
//! A thread is given a shard index at its first `call()` (round robin over
//! the threads of the process) and keeps it for every domain, modulo the
//! domain's shard count: a thread's callbacks therefore stay in FIFO order.

use std::cell::Cell;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::bypass::Bypass;
use crate::callback::Slot;
use crate::domain::Core;
use crate::gp::GpState;
use crate::segcblist::SegCbList;
use crate::sync::{
    mutant, now_ns, rcu_thread_local, spawn_named, AtomicBool, AtomicU64, AtomicU8, AtomicUsize,
    Condvar, JoinHandle, Mutex, Ordering,
};
use crate::throttle::Throttle;
use crate::timer::TimerService;
use crate::wake::{Delays, GroupWake, Level};

/// A shard's list and the counters its lock protects.
pub(crate) struct ShardList {
    pub(crate) cbs: SegCbList,
    pub(crate) queued: u64,
    pub(crate) invoked: u64,
    pub(crate) barrier_entrained: u64,
}

/// The CB worker's sleep state, under [`Shard::cb_wake`]: the same protocol
/// as the GP worker's [`GroupWake`].
pub(crate) struct CbWake {
    /// `true` from the moment the CB worker starts looking for DONE
    /// callbacks until someone wakes it.
    pub(crate) sleep: bool,
    /// Shut down: the CB worker exits once DONE is empty.
    pub(crate) stop: bool,
    pub(crate) wakeups: u64,
}

/// One callback queue with its CB worker (kernel: an offloaded `rcu_data`).
pub(crate) struct Shard {
    /// The bypass list and flood accounting (bypass.rs). Every `call()`
    /// takes this lock first; in a flood it is the only lock it takes. Lock
    /// order: `bypass`, then `list`. The GP worker only try-locks it.
    pub(crate) bypass: Mutex<Bypass>,
    /// The bypass length, written under the bypass lock (bypass.rs).
    pub(crate) bypass_len: AtomicUsize,
    /// The list. Every critical section on it is a few list operations;
    /// nothing blocks or makes a system call while holding it (wakes are
    /// issued after releasing it); `call()` outside a flood takes it once
    /// per callback.
    pub(crate) list: Mutex<ShardList>,
    pub(crate) cb_wake: Mutex<CbWake>,
    /// The CB worker sleeps here, under `cb_wake`.
    pub(crate) cb_cv: Condvar,
    /// See the module docs ("Shard length").
    pub(crate) len: AtomicUsize,
    /// This shard's workers have been started.
    started: AtomicBool,
}

impl Shard {
    /// Raise the shard length by `n`. `_held` is the list, borrowed from its
    /// lock guard: the length is written only under that lock, so a plain
    /// load and store suffice (see "Shard length" above).
    pub(crate) fn len_add(&self, _held: &ShardList, n: usize) {
        self.len
            .store(self.len.load(Ordering::Relaxed) + n, Ordering::Release);
    }

    /// Lower the shard length by `n` callbacks that have returned; as
    /// [`len_add`](Shard::len_add). `Release`: a reader that sees the new
    /// value also sees those callbacks' effects.
    pub(crate) fn len_sub(&self, _held: &ShardList, n: usize) {
        self.len
            .store(self.len.load(Ordering::Relaxed) - n, Ordering::Release);
    }

    /// Callbacks of this shard not yet finished: list, bypass and in
    /// flight (a lock-free estimate for the throttle and `stats()`).
    pub(crate) fn backlog(&self) -> usize {
        self.bypass_len.load(Ordering::Relaxed) + self.len.load(Ordering::Relaxed)
    }

    /// Move the whole bypass into the segmented list, under both locks
    /// (kernel: `rcu_nocb_flush_bypass`). Returns whether the list went from
    /// nothing pending to something pending: then the caller owes the GP
    /// worker a wake (or is the GP worker).
    pub(crate) fn flush_bypass(&self, b: &mut Bypass, l: &mut ShardList) -> bool {
        let n = b.len();
        if n == 0 {
            return false;
        }
        let was_all_done = l.cbs.pending() == 0;
        l.cbs.lend_spare_blocks(b.cache());
        l.cbs.insert_pending(b.take());
        self.len_add(l, n);
        self.bypass_len.store(0, Ordering::Release);
        was_all_done
    }
}

/// A GP worker and the shards it serves (kernel: an `rcuog` kthread's
/// group, led by its first CPU).
pub(crate) struct Group {
    pub(crate) leader: usize,
    pub(crate) shards: std::ops::Range<usize>,
    pub(crate) wake: Mutex<GroupWake>,
    pub(crate) cv: Condvar,
    /// A copy of the wake level, stored under `wake` after every change, so
    /// that `call()` can see a pending WAKE without taking the lock.
    level_hint: AtomicU8,
}

impl Group {
    /// Publish `w`'s level to the lock-free hint; called under `wake`
    /// after every change of the level.
    fn publish(&self, w: &GroupWake) {
        self.level_hint.store(w.level() as u8, Ordering::Relaxed);
    }
}

/// The callback configuration of a domain (from its `Builder`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) shards: usize,
    pub(crate) stride: usize,
    pub(crate) batch_limit: usize,
    pub(crate) tick_ns: u64,
    pub(crate) lazy_ns: u64,
    pub(crate) nobypass_limit: u64,
    pub(crate) bypass_max: usize,
    pub(crate) high_water: usize,
    pub(crate) low_water: usize,
    /// loom only: no CB worker threads; the model runs them.
    pub(crate) caller_runs_callbacks: bool,
    /// Defer a wake when one was already issued this tick (always, except
    /// in some loom models).
    pub(crate) wake_rate_limit: bool,
    /// loom only: the GP worker runs its grace periods itself, with no
    /// engine thread.
    pub(crate) inline_gp: bool,
}

/// Worker threads, started lazily.
struct Workers {
    group_started: Vec<bool>,
    handles: Vec<JoinHandle<()>>,
}

/// Per-domain callback machinery.
pub(crate) struct Nocb {
    pub(crate) shards: Box<[CachePadded<Shard>]>,
    pub(crate) groups: Box<[Group]>,
    pub(crate) cfg: Config,
    pub(crate) timer: TimerService,
    pub(crate) throttle: Throttle,
    /// When the last expedite happened (rate-limits them to one a tick).
    last_expedite: AtomicU64,
    workers: Mutex<Workers>,
    /// Some worker has ever been started (nothing to drain otherwise).
    any_started: AtomicBool,
    pub(crate) panics: AtomicU64,
    pub(crate) panic_reported: AtomicBool,
    pub(crate) barrier: crate::barrier::BarrierState,
}

/// A thread's shard: its hint (given at its first `call()`, round robin
/// over threads) and the hint reduced modulo the last shard count it was
/// used with, so that the enqueue path divides only when that count changes.
#[derive(Clone, Copy)]
struct ShardCache {
    hint: usize,
    n: usize,
    index: usize,
}

rcu_thread_local! {
    static SHARD: Cell<ShardCache> = Cell::new(ShardCache {
        hint: usize::MAX,
        n: 0,
        index: 0,
    });
}

rcu_thread_local! {
    /// The domain whose callback this thread is running (0: none).
    static IN_CALLBACK: Cell<u64> = Cell::new(0);
}

/// The calling thread's shard index in a domain with `n` shards.
#[inline]
fn shard_index(n: usize) -> usize {
    SHARD.with(|c| {
        let v = c.get();
        if v.n == n {
            v.index
        } else {
            reduce_shard_hint(c, n)
        }
    })
}

#[cold]
fn reduce_shard_hint(c: &Cell<ShardCache>, n: usize) -> usize {
    let mut v = c.get();
    if v.hint == usize::MAX {
        v.hint = first_shard_hint();
    }
    v.n = n;
    v.index = v.hint % n;
    c.set(v);
    v.index
}

#[cfg(not(any(loom, shuttle)))]
#[cold]
fn first_shard_hint() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(any(loom, shuttle))]
fn first_shard_hint() -> usize {
    // Deterministic under the model checker; models pick shards explicitly.
    0
}

/// Put the calling thread on shard `index` (modulo each domain's shard
/// count). Only for the loom models.
#[cfg(any(loom, shuttle))]
pub(crate) fn set_shard_hint(index: usize) {
    SHARD.with(|c| {
        c.set(ShardCache {
            hint: index,
            n: 0,
            index: 0,
        })
    });
}

/// Is the calling thread a callback worker (of any domain)?
pub(crate) fn in_any_callback() -> bool {
    IN_CALLBACK.with(|c| c.get()) != 0
}

/// Is the calling thread running a callback of domain `id`?
pub(crate) fn in_callback_of(id: u64) -> bool {
    IN_CALLBACK.with(|c| c.get()) == id
}

/// Marks the calling thread as running callbacks of a domain while alive.
pub(crate) struct CallbackScope(u64);

impl CallbackScope {
    pub(crate) fn enter(id: u64) -> CallbackScope {
        CallbackScope(IN_CALLBACK.with(|c| c.replace(id)))
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        IN_CALLBACK.with(|c| c.set(self.0));
    }
}

/// The kernel's default GP-kthread stride: about `n / isqrt(n)` shards per
/// group (`rcu_nocb_gp_stride == -1`).
pub(crate) fn default_stride(n: usize) -> usize {
    let r = n.isqrt().max(1);
    (n / r).max(1)
}

impl Nocb {
    pub(crate) fn new(cfg: Config) -> Nocb {
        let Config { shards, stride, .. } = cfg;
        let groups: Box<[Group]> = (0..shards)
            .step_by(stride)
            .map(|leader| Group {
                leader,
                shards: leader..(leader + stride).min(shards),
                wake: Mutex::new(GroupWake::new()),
                cv: Condvar::new(),
                level_hint: AtomicU8::new(Level::None as u8),
            })
            .collect();
        Nocb {
            timer: TimerService::new(groups.len()),
            throttle: Throttle::new(cfg.high_water, cfg.low_water, shards),
            last_expedite: AtomicU64::new(0),
            cfg,
            shards: (0..shards)
                .map(|_| {
                    CachePadded::new(Shard {
                        bypass: Mutex::new(Bypass::default()),
                        bypass_len: AtomicUsize::new(0),
                        list: Mutex::new(ShardList {
                            cbs: SegCbList::default(),
                            queued: 0,
                            invoked: 0,
                            barrier_entrained: 0,
                        }),
                        cb_wake: Mutex::new(CbWake {
                            sleep: false,
                            stop: false,
                            wakeups: 0,
                        }),
                        cb_cv: Condvar::new(),
                        len: AtomicUsize::new(0),
                        started: AtomicBool::new(false),
                    })
                })
                .collect(),
            workers: Mutex::new(Workers {
                group_started: vec![false; groups.len()],
                handles: Vec::new(),
            }),
            groups,
            any_started: AtomicBool::new(false),
            panics: AtomicU64::new(0),
            panic_reported: AtomicBool::new(false),
            barrier: crate::barrier::BarrierState::new(),
        }
    }

    /// The index of the group serving shard `i`.
    pub(crate) fn group_index(&self, i: usize) -> usize {
        i / self.cfg.stride
    }

    /// The group serving shard `i`.
    pub(crate) fn group_of(&self, i: usize) -> &Group {
        &self.groups[self.group_index(i)]
    }

    /// Queue `slot` on the calling thread's shard (kernel: `call_rcu` on an
    /// offloaded CPU, `rcu_nocb_try_bypass` and `__call_rcu_nocb_wake`).
    /// `lazy`: the callback may wait up to the lazy timeout to be batched.
    #[inline]
    pub(crate) fn call(&self, core: &Arc<Core>, slot: Slot, lazy: bool) {
        let i = shard_index(self.shards.len());
        let shard = &self.shards[i];
        if !shard.started.load(Ordering::Acquire) {
            self.start_workers(core, i);
        }
        // The memory bound (throttle.rs); under pressure nothing is lazy.
        let pressure =
            self.throttle.enabled && shard.backlog() > self.throttle.share && self.over_share(core);
        let lazy = lazy && !pressure;
        let cfg = &self.cfg;
        let mut b = shard.bypass.lock();
        let flood = b.count_enqueue(cfg.nobypass_limit, cfg.tick_ns);
        if lazy || flood || b.len() != 0 {
            if b.len() == 0 {
                // A new bypass is timed from now (one clock read per bypass).
                b.sample_clock(cfg.nobypass_limit, cfg.tick_ns);
            }
            // A lazy callback joins the bypass; a non-lazy one only in a
            // flood, and never a lazy-only bypass: it flushes that one
            // instead, promoting the lazy callbacks to a normal wait.
            // Mutant `lazy_no_promote`: it joins a lazy-only bypass and
            // waits out the lazy timeout.
            let no_promote = mutant("lazy_no_promote") && b.lazy_only();
            let joins = lazy || no_promote || (flood && !b.lazy_only());
            let accept = joins && !b.should_flush(b.now, cfg.bypass_max, cfg.tick_ns, cfg.lazy_ns);
            if accept {
                let was_empty = b.push(slot, lazy);
                shard.bypass_len.store(
                    shard.bypass_len.load(Ordering::Relaxed) + 1,
                    Ordering::Release,
                );
                let now = b.now;
                drop(b);
                if was_empty && !mutant("bypass_no_defer") {
                    // No stranded bypass: make sure a flush will come.
                    let level = if lazy { Level::Lazy } else { Level::Bypass };
                    self.defer_wake(core, self.group_index(i), level, now);
                }
                return;
            }
        }
        // The segmented list: flush the bypass first (FIFO, barrier).
        let (was_all_done, perform) = {
            let mut l = shard.list.lock();
            let mut was_all_done = shard.flush_bypass(&mut b, &mut l);
            drop(b);
            was_all_done |= l.cbs.pending() == 0;
            l.cbs.enqueue(slot);
            l.queued += 1;
            shard.len_add(&l, 1);
            let hint = self.group_of(i).level_hint.load(Ordering::Relaxed);
            (was_all_done, !was_all_done && hint >= Level::Wake as u8)
        };
        if (was_all_done && !mutant("enqueue_no_wake")) || perform {
            self.wake_or_defer(core, self.group_index(i), was_all_done, flood);
        }
    }

    /// The list of a shard of group `g` went from nothing pending to
    /// something pending (`owed`), or a deferred WAKE is pending: wake the
    /// GP worker now if we may, else defer the wake (module wake.rs).
    /// We may not inside a read-side section of the domain (no system calls
    /// there), nor, while the shard is in a flood, twice in one tick (flood
    /// rate-limiting; outside a flood every owed wake is immediate, which is
    /// what keeps a lone callback's latency near one grace period).
    #[cold]
    fn wake_or_defer(&self, core: &Arc<Core>, g: usize, owed: bool, flood: bool) {
        let group = &self.groups[g];
        let reading = core.reader.current_nesting() != 0;
        let now = now_ns();
        let tick = now / self.cfg.tick_ns;
        let mut w = group.wake.lock();
        if !owed && w.level() < Level::Wake {
            return; // someone performed it meanwhile
        }
        if reading || (flood && self.cfg.wake_rate_limit && w.last_direct_wake == tick) {
            if owed {
                self.defer_locked(core, g, &mut w, Level::Wake, now);
            }
            return;
        }
        self.wake_locked(group, &mut w, tick);
    }

    /// Ask for a deferred wake of group `g` at `level` (module wake.rs).
    pub(crate) fn defer_wake(&self, core: &Arc<Core>, g: usize, level: Level, now: u64) {
        let mut w = self.groups[g].wake.lock();
        self.defer_locked(core, g, &mut w, level, now);
    }

    fn defer_locked(&self, core: &Arc<Core>, g: usize, w: &mut GroupWake, level: Level, now: u64) {
        if w.stop {
            return;
        }
        let delays = Delays {
            tick: self.cfg.tick_ns,
            lazy: self.cfg.lazy_ns,
        };
        if let Some(deadline) = w.defer(level, now, delays) {
            self.timer.schedule(core, g, deadline);
        }
        self.groups[g].publish(w);
    }

    /// Wake `group`'s GP worker now (kernel: `wake_nocb_gp`): cancel its
    /// timer and reset its level, in the same critical section (mutant
    /// `direct_wake_keeps_level` forgets the level: the kernel's bug).
    fn wake_locked(&self, group: &Group, w: &mut GroupWake, tick: u64) {
        w.cancel(mutant("direct_wake_keeps_level"));
        group.publish(w);
        w.last_direct_wake = tick;
        if w.sleep {
            w.sleep = false;
            group.cv.notify_one();
        }
    }

    /// Wake `group`'s GP worker now, from a path that may make system calls
    /// (barrier, expedite, shutdown).
    pub(crate) fn wake_gp_worker(&self, group: &Group) {
        let tick = now_ns() / self.cfg.tick_ns;
        let mut w = group.wake.lock();
        self.wake_locked(group, &mut w, tick);
    }

    /// The timer of group `g`, armed for `deadline`, fired (called by the
    /// timer service): perform the deferred wake, unless the timer was
    /// cancelled or moved since.
    pub(crate) fn timer_fired(&self, g: usize, deadline: u64) {
        let group = &self.groups[g];
        let mut w = group.wake.lock();
        // Whatever the level, performing it is waking the GP worker: FORCE's
        // flush is the GP worker's (`flush_all`), done in the scan this wake
        // starts.
        if w.fire(deadline).is_none() {
            return;
        }
        group.publish(&w);
        if w.sleep {
            w.sleep = false;
            group.cv.notify_one();
        }
    }

    /// Flush every bypass list of `group` into its segmented list, then the
    /// caller wakes the GP worker.
    fn flush_group(&self, group: &Group) {
        for i in group.shards.clone() {
            let shard = &self.shards[i];
            let mut b = shard.bypass.lock();
            let mut l = shard.list.lock();
            shard.flush_bypass(&mut b, &mut l);
        }
    }

    /// The GP worker of `group` woke up and is about to scan every shard:
    /// cancel a deferred WAKE or FORCE (it is moot); BYPASS and LAZY stay
    /// armed for the bypass lists the scan may leave behind. Returns whether
    /// memory pressure asked for every bypass to be flushed in this scan.
    /// Called under the wake lock, as the worker marks itself asleep.
    pub(crate) fn gp_worker_awake(&self, group: &Group, w: &mut GroupWake) -> bool {
        let flush_all = std::mem::take(&mut w.flush_all);
        if w.level() >= Level::Wake && !mutant("gp_clear_after_scan") {
            w.cancel(false);
            group.publish(w);
        }
        flush_all
    }

    /// The calling shard holds more than its share of the high-water mark:
    /// throttle if the whole backlog is over it (throttle.rs). Returns
    /// whether it was: then even a lazy callback is queued as non-lazy (no
    /// laziness under memory pressure).
    #[cold]
    fn over_share(&self, core: &Arc<Core>) -> bool {
        if self.backlog() <= self.throttle.high {
            return false;
        }
        let reading = core.reader.current_nesting() != 0;
        if reading {
            // No system calls here: let the timer expedite, soon.
            let now = now_ns();
            for g in 0..self.groups.len() {
                self.defer_wake(core, g, Level::Force, now);
            }
            self.throttle.expedited.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if in_any_callback() {
            self.expedite(false);
            self.throttle.expedited.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        // About to block: expedite whatever the rate limit says, and again
        // whenever the wait is woken or times out without reaching low water.
        self.expedite(true);
        self.throttle.wait(
            || self.backlog(),
            || self.expedite(true),
            std::time::Duration::from_nanos(self.cfg.tick_ns),
        );
        true
    }

    /// The domain's backlog: callbacks queued and not yet finished.
    pub(crate) fn backlog(&self) -> usize {
        self.shards.iter().map(|s| s.backlog()).sum()
    }

    /// Memory pressure: flush every bypass (lazy ones too) and wake every
    /// GP worker, at most once a tick unless `always` (a caller about to
    /// block).
    fn expedite(&self, always: bool) {
        let now = now_ns();
        let last = self.last_expedite.load(Ordering::Relaxed);
        if !always && now.saturating_sub(last) < self.cfg.tick_ns && last != 0 {
            return;
        }
        self.last_expedite.store(now.max(1), Ordering::Relaxed);
        for group in self.groups.iter() {
            self.flush_group(group);
            self.wake_gp_worker(group);
        }
    }

    /// Called by the grace-period engine after each grace period it waited
    /// for: wake every GP worker whose awaited grace period is now done.
    pub(crate) fn gp_completed(&self, gp: &GpState) {
        for group in self.groups.iter() {
            let w = group.wake.lock();
            if w.awaited.is_some_and(|s| gp.is_done(s)) && !mutant("gp_done_no_notify") {
                drop(w);
                group.cv.notify_one();
            }
        }
    }

    /// Wake shard `i`'s CB worker, which has DONE callbacks (kernel:
    /// `swake_up_one(&rdp->nocb_cb_wq)`). Called without the list lock, after
    /// whatever filled DONE released it. The worker marks itself asleep
    /// before it looks at DONE, so either it sees the new callbacks or this
    /// finds `sleep == true`.
    pub(crate) fn wake_cb_worker(&self, i: usize) {
        let shard = &self.shards[i];
        let mut w = shard.cb_wake.lock();
        if w.sleep {
            w.sleep = false;
            drop(w);
            shard.cb_cv.notify_one();
        }
    }

    /// Start shard `i`'s CB worker and its group's GP worker, if not yet.
    #[cold]
    fn start_workers(&self, core: &Arc<Core>, i: usize) {
        let mut w = self.workers.lock();
        let shard = &self.shards[i];
        if shard.started.load(Ordering::Relaxed) {
            return;
        }
        // Before spawning: if a spawn below fails, shutdown must still stop
        // whatever did start.
        self.any_started.store(true, Ordering::Relaxed);
        let prefix = core.thread_name_prefix();
        let g = self.group_index(i);
        if !w.group_started[g] {
            let c = Arc::clone(core);
            let leader = self.groups[g].leader;
            w.handles
                .push(spawn_named(format!("{prefix}rcuog/{leader}"), move || {
                    crate::worker::gp_worker(&c, g)
                }));
            w.group_started[g] = true;
        }
        if !self.cfg.caller_runs_callbacks {
            let c = Arc::clone(core);
            w.handles
                .push(spawn_named(format!("{prefix}rcuo/{i}"), move || {
                    crate::worker::cb_worker(&c, i)
                }));
        }
        shard.started.store(true, Ordering::Release);
    }

    /// Run every pending callback, then stop and join the workers. Called
    /// once, when the last handle of the domain is dropped, before the
    /// grace-period engine stops (the callbacks need its grace periods).
    pub(crate) fn shutdown(&self, core: &Core) {
        if !self.any_started.load(Ordering::Acquire) {
            self.timer.shutdown();
            return;
        }
        if !mutant("shutdown_no_drain") {
            // Callbacks may queue callbacks: repeat until a barrier saw no
            // new callback queued while it ran. Then every callback ever
            // queued has run, and none can be queued any more (no handle is
            // left outside, and no callback is left to run).
            loop {
                let before = self.total_queued();
                crate::barrier::barrier(core);
                if self.total_queued() == before {
                    break;
                }
            }
        }
        for group in self.groups.iter() {
            let mut w = group.wake.lock();
            w.stop = true;
            w.cancel(false);
            group.publish(&w);
            drop(w);
            group.cv.notify_all();
        }
        for shard in self.shards.iter() {
            shard.cb_wake.lock().stop = true;
            shard.cb_cv.notify_all();
        }
        let handles = std::mem::take(&mut self.workers.lock().handles);
        for h in handles {
            if h.join().is_err() {
                panic!("rcu_offload: a callback worker thread panicked");
            }
        }
        self.timer.shutdown();
    }

    /// Callbacks ever queued by `call()`, over all shards.
    fn total_queued(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.bypass.lock().queued + s.list.lock().queued)
            .sum()
    }

    /// Count a panicking callback, and report the first one of the domain.
    /// A failed write to stderr (say, a closed pipe) is ignored: reporting
    /// must not panic the worker.
    pub(crate) fn report_panic(&self, shard: usize) {
        self.panics.fetch_add(1, Ordering::Relaxed);
        if !self.panic_reported.swap(true, Ordering::Relaxed) {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "rcu_offload: a callback panicked on callback worker rcuo/{shard}; \
                 the worker carries on with the other callbacks. Further panics \
                 of this domain are only counted (Rcu::stats().panics)."
            );
        }
    }
}

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

impl Nocb {
    pub(crate) fn stats(&self, gp: &GpState) -> Stats {
        let shards = self
            .shards
            .iter()
            .map(|s| {
                let cb_worker_wakeups = s.cb_wake.lock().wakeups;
                let b = s.bypass.lock();
                let l = s.list.lock();
                ShardStats {
                    queued: l.queued + b.queued,
                    invoked: l.invoked,
                    pending: (s.len.load(Ordering::Relaxed) + b.len()) as u64,
                    cb_worker_wakeups,
                    barrier_callbacks: l.barrier_entrained,
                    bypass_queued: b.queued,
                    bypass_flushes: b.flushes,
                }
            })
            .collect();
        Stats {
            shards,
            grace_periods: gp.completed(),
            panics: self.panics.load(Ordering::Relaxed),
            gp_worker_wakeups: self.groups.iter().map(|g| g.wake.lock().wakeups).sum(),
            deferred_wakes: self.groups.iter().map(|g| g.wake.lock().deferred).sum(),
            timer_wakes: self.groups.iter().map(|g| g.wake.lock().timer_wakes).sum(),
            throttled: self.throttle.throttled.load(Ordering::Relaxed),
            throttle_expedited: self.throttle.expedited.load(Ordering::Relaxed),
        }
    }
}
