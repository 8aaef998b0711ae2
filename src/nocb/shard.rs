//! Shards: one callback queue each, with its CB worker (kernel: an
//! offloaded `rcu_data` with its `cblist`), the accounting of its length,
//! and which shard a thread uses.
//!
//! # Shard length
//!
//! `Shard::len` counts the callbacks of the shard's segmented list plus
//! those a CB worker has taken out but not yet finished invoking;
//! `Shard::bypass_len` counts the bypass. Every change goes through the
//! methods below, which take the guard of the lock that orders it:
//!
//! * `len` is written only under the list lock (so a plain load and store
//!   suffice): it rises on an enqueue, a bypass flush and a barrier's
//!   entrain, and falls only after the callbacks it counted have returned,
//!   with `Release`, so a reader that sees it fall also sees their effects;
//! * `bypass_len` is written only under the bypass lock, and a flush moves
//!   the count from one to the other under both locks.
//!
//! `barrier()` reads both under both locks, after flushing the bypass, so
//! a `call()` that happened before the barrier is never missed: these are
//! the fully ordered 0→1 and 1→0 transitions the kernel gets from full
//! fences around its length updates, obtained here from the locks. The
//! throttle reads both without locks, as an estimate ([`Shard::backlog`]);
//! `stats()` reads them under the locks. Checked by
//! the loom models `barrier_races_enqueue_and_invocation` (mutant
//! `cb_len_early`), `concurrent_barriers_share_work` and
//! `barrier_entrain_races_bypass_flush`.
//!
//! # Which shard a call uses
//!
//! By default ([`ShardChoice::PerCpu`]) the shard of the CPU the caller runs
//! on, `sched_getcpu()` modulo the shard count (kernel: the per-CPU
//! `rcu_data`; liburcu: per-CPU `call_rcu` data). The answer may be stale by
//! the time the shard's lock is taken; that costs locality, never
//! correctness. Where the CPU cannot be read, and with
//! [`ShardChoice::PerThread`], the thread's own shard: a thread is given an
//! index at its first `call()` (round robin over the threads of the process)
//! and keeps it for every domain, modulo the domain's shard count.

use std::cell::Cell;

use crate::callback::{CbQueue, Slot};
use crate::mutants::{model_only, mutant};
use crate::segcblist::SegCbList;
use crate::sync::{
    current_cpu, first_shard_hint, rcu_thread_local, try_hold, AtomicBool, AtomicUsize, HeldLocks,
    Mutex, Ordering,
};

use super::bypass::Bypass;
use super::env::{CallKind, ShardChoice};
use super::feed::{Feed, FeedDrain};
use super::wake::{CbWaker, WakeOwed};

/// A shard's list and the counters its lock protects.
pub(crate) struct ShardList {
    pub(crate) cbs: SegCbList,
    pub(crate) queued: u64,
    pub(crate) invoked: u64,
    pub(crate) barrier_entrained: u64,
}

/// One callback queue with its CB worker.
pub(crate) struct Shard {
    /// The bypass list and flood accounting (bypass.rs). Every `call()`
    /// takes this lock first; in a flood it is the only lock it takes. Lock
    /// order: `bypass`, then `list`. The GP worker only try-locks it.
    pub(crate) bypass: Mutex<Bypass>,
    /// The bypass length; see the module docs.
    bypass_len: AtomicUsize,
    /// The list. Every critical section on it is a few list operations;
    /// nothing blocks or makes a system call while holding it (wakes are
    /// issued after releasing it); `call()` outside a flood takes it once
    /// per callback.
    pub(crate) list: Mutex<ShardList>,
    /// The CB worker's sleep and wakers.
    pub(crate) cb: CbWaker,
    /// The shard length; see the module docs.
    len: AtomicUsize,
    /// This shard's workers have been started.
    pub(crate) started: AtomicBool,
}

impl Shard {
    /// A shard whose list keeps up to `pool_blocks` spare callback blocks.
    pub(crate) fn new(pool_blocks: usize) -> Shard {
        Shard {
            bypass: Mutex::new(Bypass::default()),
            bypass_len: AtomicUsize::new(0),
            list: Mutex::new(ShardList {
                cbs: SegCbList::with_spare_blocks(pool_blocks),
                queued: 0,
                invoked: 0,
                barrier_entrained: 0,
            }),
            cb: CbWaker::new(),
            len: AtomicUsize::new(0),
            started: AtomicBool::new(false),
        }
    }

    /// Hold the shard's locks (bypass, list, CB worker's sleep) for a fork,
    /// or nothing if one is taken.
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    pub(crate) fn hold_for_fork<'a>(&'a self, held: &mut HeldLocks<'a>) -> bool {
        try_hold(&self.bypass, held) && try_hold(&self.list, held) && self.cb.hold_for_fork(held)
    }

    /// In the child of a fork (one thread; no lock held): its workers are
    /// the parent's, so none runs; the length drops the callbacks a CB
    /// worker had taken out of the list to run, which the child will never
    /// see again (they run in the parent only).
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) fn after_fork_child(&self) {
        self.started.store(false, Ordering::Relaxed);
        let b = self.bypass.lock();
        let l = self.list.lock();
        self.len.store(l.cbs.len(), Ordering::Release);
        self.bypass_len.store(b.len(), Ordering::Release);
        drop((l, b));
        self.cb.after_fork_child();
    }

    /// Raise the shard length by `n`; `_held` proves the list lock is held.
    fn len_add(&self, _held: &ShardList, n: usize) {
        self.len
            .store(self.len.load(Ordering::Relaxed) + n, Ordering::Release);
    }

    /// Lower the shard length by `n` callbacks that have returned; as
    /// [`len_add`](Shard::len_add). `Release`: a reader that sees the new
    /// value also sees those callbacks' effects.
    fn len_sub(&self, _held: &ShardList, n: usize) {
        self.len
            .store(self.len.load(Ordering::Relaxed) - n, Ordering::Release);
    }

    /// The shard length, read under the list lock (`_held`): exact.
    pub(crate) fn len_locked(&self, _held: &ShardList) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Is the bypass (probably) non-empty? A lock-free look for the GP
    /// worker, which try-locks the bypass only then: a zero is safe, since
    /// the enqueue that makes a bypass non-empty asks for its own deferred
    /// wake.
    pub(crate) fn bypass_nonempty_hint(&self) -> bool {
        self.bypass_len.load(Ordering::Acquire) != 0
    }

    /// Callbacks of this shard not yet finished: list, bypass and in
    /// flight (a lock-free estimate, for the throttle). It may count a
    /// callback twice, never miss one: a flush raises `len` before it
    /// zeroes `bypass_len` (both `Release`), and the bypass length is read
    /// first, with `Acquire`, so a read that sees the zero also sees the
    /// raise. (Read `Relaxed`, a throttled producer could be released in
    /// the middle of a flush with the flushed callbacks not counted: the
    /// loom model `throttled_producer_flushes_lazy_bypasses` found it.)
    pub(crate) fn backlog(&self) -> usize {
        self.bypass_len.load(Ordering::Acquire) + self.len.load(Ordering::Relaxed)
    }

    /// Queue `slot` on the list, under its lock (`l`). Owes a wake if the
    /// list had nothing pending.
    pub(crate) fn enqueue(&self, l: &mut ShardList, slot: Slot) -> WakeOwed {
        let owed = owed_by_idle_list(l);
        l.cbs.enqueue(slot);
        l.queued += 1;
        self.len_add(l, 1);
        owed
    }

    /// Hand what `feed` published over to this shard's list, after the
    /// shard's bypass (FIFO with what the thread queued there; its lazy
    /// callbacks are promoted, as a normal callback arriving on a shard
    /// promotes them), under the feed's drain lock (`d`): the one hand-over
    /// of the owner's slow path, a GP worker's scan and `barrier()`. Takes
    /// the bypass lock, then the list lock. Owes a wake if the list went
    /// from nothing pending to something pending.
    pub(crate) fn hand_over_feed(&self, feed: &Feed, d: &mut FeedDrain) -> HandOver {
        let mut b = self.bypass.lock();
        let mut l = self.list.lock();
        let flushed = self.flush_bypass(&mut b, &mut l);
        drop(b);
        let idle = owed_by_idle_list(&l);
        let moved = feed.take_published(d, &mut l.cbs);
        if moved == 0 {
            return HandOver {
                owed: flushed,
                moved,
            };
        }
        l.queued += moved as u64;
        self.len_add(&l, moved);
        HandOver {
            owed: flushed.or(idle),
            moved,
        }
    }

    /// Append `slot` to the bypass, under its lock (`b`). Returns whether
    /// the bypass was empty.
    pub(crate) fn push_bypass(&self, b: &mut Bypass, slot: Slot, kind: CallKind) -> bool {
        let was_empty = b.push(slot, kind);
        self.bypass_len.store(
            self.bypass_len.load(Ordering::Relaxed) + 1,
            Ordering::Release,
        );
        was_empty
    }

    /// Move the whole bypass into the segmented list, under both locks
    /// (kernel: `rcu_nocb_flush_bypass`). Owes a wake if the list went from
    /// nothing pending to something pending (a GP worker's own scan owes
    /// itself nothing, and an expedite wakes every GP worker anyway).
    pub(crate) fn flush_bypass(&self, b: &mut Bypass, l: &mut ShardList) -> WakeOwed {
        let n = b.len();
        if n == 0 {
            return WakeOwed::Nothing;
        }
        let owed = owed_by_idle_list(l);
        l.cbs.lend_spare_blocks(b.cache());
        l.cbs.insert_pending(b.take());
        self.len_add(l, n);
        self.bypass_len.store(0, Ordering::Release);
        owed
    }

    /// Entrain a barrier's callback behind everything on the list, under
    /// its lock. Returns the segment it joined.
    pub(crate) fn entrain(&self, l: &mut ShardList, slot: Slot) -> usize {
        let seg = l.cbs.entrain(slot);
        l.barrier_entrained += 1;
        self.len_add(l, 1);
        seg
    }

    /// Take up to `max` DONE callbacks out for the CB worker to run, into
    /// its (empty, reused) `batch`, under the list lock. They still count in
    /// the length until [`finished`](Shard::finished) (mutant
    /// `cb_len_early` lowers the length here, before they run).
    pub(crate) fn take_done(&self, l: &mut ShardList, max: usize, batch: &mut CbQueue) {
        l.cbs.extract_done_into(max, batch);
        if mutant!(CbLenEarly) {
            self.len_sub(l, batch.len());
        }
    }

    /// `ran` callbacks taken with [`take_done`](Shard::take_done) have
    /// returned: count them and lower the length, under the list lock.
    pub(crate) fn finished(&self, l: &mut ShardList, ran: usize) {
        l.invoked += ran as u64;
        if !mutant!(CbLenEarly) {
            self.len_sub(l, ran);
        }
    }
}

/// What [`Shard::hand_over_feed`] did.
pub(crate) struct HandOver {
    /// The wake the bypass flush or the feed's callbacks owe.
    pub(crate) owed: WakeOwed,
    /// Callbacks moved from the feed.
    pub(crate) moved: usize,
}

/// A list with nothing pending, about to receive callbacks, owes its GP
/// worker a wake (read under the list lock, before they arrive).
fn owed_by_idle_list(l: &ShardList) -> WakeOwed {
    if l.cbs.pending() == 0 {
        WakeOwed::GpWorker
    } else {
        WakeOwed::Nothing
    }
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

/// The calling thread's shard in a domain with `n` shards, by `choice`.
#[inline]
pub(crate) fn shard_index(n: usize, choice: ShardChoice) -> usize {
    if choice == ShardChoice::PerCpu {
        if let Some(cpu) = current_cpu() {
            return cpu % n;
        }
    }
    thread_shard(n)
}

/// The calling thread's own shard in a domain with `n` shards.
#[inline]
fn thread_shard(n: usize) -> usize {
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

model_only! {
    impl Shard {
        /// Mutant `barrier_len_unlocked`: the shard's lengths read without
        /// its locks and with `Relaxed` loads, so that seeing a length fall
        /// acquires nothing of what the callbacks did.
        pub(crate) fn looks_idle_unlocked(&self) -> bool {
            self.len.load(Ordering::Relaxed) == 0 && self.bypass_len.load(Ordering::Relaxed) == 0
        }
    }

    /// Put the calling thread on shard `index` (modulo each domain's shard
    /// count), as the models do to pick shards explicitly.
    pub(crate) fn set_shard_hint(index: usize) {
        SHARD.with(|c| {
            c.set(ShardCache {
                hint: index,
                n: 0,
                index: 0,
            })
        });
    }
}

rcu_thread_local! {
    /// The domain whose callback this thread is running (0: none).
    static IN_CALLBACK: Cell<u64> = Cell::new(0);
}

/// Is the calling thread running a callback (of any domain)?
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
