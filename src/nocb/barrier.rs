//! `barrier()`: wait until every callback queued before it has run. Mirrors
//! the kernel's `rcu_barrier()` (kernel/rcu/tree.c, `rcu_barrier_entrain`).
//!
//! A barrier entrains one internal callback at the end of every shard whose
//! length is non-zero, and waits until each has run. A shard's callbacks are
//! invoked in FIFO order by its one CB worker, so the internal callback runs
//! only after every callback queued on that shard before it; entraining at
//! the end of the *last non-empty segment* makes it wait for no grace period
//! its predecessors do not already wait for.
//!
//! # Invariant
//!
//! A callback whose `call()` happened before `barrier()` began has run, and
//! its effects are visible, when `barrier()` returns. Either the barrier
//! reads its shard's length as non-zero and entrains behind it, or it reads
//! the length after the CB worker lowered it, which happens only after the
//! callback returned (`Release`/`Acquire`). Entraining never makes a list go
//! from "nothing pending" to "something pending" (it joins the last
//! *non-empty* segment, or DONE), so the only wake it may owe is the CB
//! worker's, when it lands in DONE; its bypass flush may owe the GP worker
//! one, and wakes it at once (the bypass's LAZY timer would make the
//! barrier wait out the lazy timeout: the kernel's bug; mutant
//! `barrier_flush_no_wake`, loom model `barrier_entrain_races_bypass_flush`).
//! Checked by the loom model `barrier_races_enqueue_and_invocation`, whose
//! callback writes plain data (loom's `UnsafeCell`) that the caller reads
//! after `barrier()` (mutants `cb_len_early`, and `barrier_len_unlocked`, a
//! lock-free look at the lengths without `Acquire`), and, for shutdown,
//! `shutdown_runs_pending_callbacks` (mutant `shutdown_no_drain`).
//!
//! Concurrent barriers share work as the kernel's do: a caller that finds
//! that a whole barrier ran after it arrived (`barrier_seq`, an `rcu_seq`)
//! returns at once. The barrier that serves it looks at every shard under
//! the shard's locks, after storing the sequence's start: a `call()` that
//! the barrier's look missed took those locks after it, and so reads the
//! new sequence and is not covered (loom model
//! `concurrent_barriers_share_work`). The full fence before reading
//! `barrier_seq` (the kernel's `smp_mb()` in `rcu_barrier`) orders the
//! caller's earlier `call()`s before that read; the locks of the look order
//! them as well, so the fence is what keeps a lock-free look at the shards,
//! should one ever replace the locked one, from missing a `call()`.
//! Callbacks queued by callbacks after the barrier began are not waited
//! for.

use std::sync::Arc;
use std::task::Waker;

use crossbeam_utils::CachePadded;

use crate::callback::Slot;
use crate::mutants::mutant;
use crate::segcblist::DONE;
use crate::seq;
use crate::stall::{Holdups, ShardHoldup, StallKind, StallWatch, StalledShard};
use crate::sync::{fence, rcu_thread_local, AtomicU64, Condvar, HeldLocks, Mutex, Ordering};
use crate::wait::wake_contained;

use super::shard::Shard;
use super::wake::{WakeOwed, Wakes};

/// Per-domain barrier bookkeeping.
pub(crate) struct BarrierState {
    /// Serializes barriers.
    lock: Mutex<()>,
    /// `rcu_seq`-style count of barriers, written under `lock`.
    seq: AtomicU64,
    /// The barriers whose internal callbacks may still run, so that the
    /// fork handlers can hold their locks too (domain/fork.rs). Real
    /// builds only: no model forks.
    #[cfg(not(any(loom, shuttle)))]
    in_flight: Mutex<Vec<std::sync::Weak<Pending>>>,
}

impl BarrierState {
    pub(crate) fn new() -> Self {
        BarrierState {
            lock: Mutex::new(()),
            seq: AtomicU64::new(0),
            #[cfg(not(any(loom, shuttle)))]
            in_flight: Mutex::new(Vec::new()),
        }
    }

    /// A new barrier's count, known to the fork handlers before any of its
    /// internal callbacks can run.
    fn new_pending(&self) -> Arc<Pending> {
        let pending = Arc::new(Pending::new());
        #[cfg(not(any(loom, shuttle)))]
        {
            let mut v = self.in_flight.lock();
            v.retain(|w| w.strong_count() > 0);
            v.push(Arc::downgrade(&pending));
        }
        pending
    }

    /// Hold the list of barriers in flight for a fork, if it is free. The
    /// serializing lock is not held (a barrier keeps it while it waits for
    /// callbacks), nor are the barriers' own counts (a CB worker takes one
    /// after each barrier callback): the child repairs both instead.
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    pub(crate) fn hold_for_fork<'a>(&'a self, held: &mut HeldLocks<'a>) -> bool {
        #[cfg(not(any(loom, shuttle)))]
        {
            crate::sync::try_hold(&self.in_flight, held)
        }
        #[cfg(any(loom, shuttle))]
        {
            let _ = held;
            true
        }
    }

    /// In the child of a fork (one thread; no lock held). A barrier that
    /// was waiting in the parent left the serializing lock held and the
    /// sequence odd: unlock it and roll the sequence back (its caller does
    /// not exist here). A barrier in flight whose count's lock a parent
    /// thread held at the fork can never be counted down safely: it is
    /// marked so that it never completes, and its waker (the parent's) is
    /// forgotten, never run or dropped; its remaining internal callbacks
    /// then count into nothing instead of blocking the CB worker.
    ///
    /// # Safety
    ///
    /// Only in the child of a fork, before it starts any thread, with no
    /// guard of these locks alive on the calling thread.
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) unsafe fn after_fork_child(&self) {
        // SAFETY: the caller's contract.
        unsafe { self.lock.reset_after_fork() };
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq::last_completed(s), Ordering::Release);
        let live: Vec<Arc<Pending>> = self
            .in_flight
            .lock()
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        for p in live {
            if p.state.try_lock().is_none() {
                // SAFETY: the caller's contract; the lock's holder was a
                // parent thread, and what it was writing is not read again:
                // the count is overwritten and the waker forgotten.
                unsafe { p.state.reset_after_fork() };
                let mut st = p.state.lock();
                st.remaining = usize::MAX / 2;
                std::mem::forget(st.waker.take());
            }
        }
    }
}

/// Internal callbacks still to run, and who waits for them: a blocking
/// barrier on `cv`, or an async one through `waker`.
struct Pending {
    state: Mutex<PendingState>,
    cv: Condvar,
}

struct PendingState {
    remaining: usize,
    /// The task awaiting an async barrier (`BarrierWait`), if it is
    /// waiting.
    waker: Option<Waker>,
}

impl Pending {
    fn new() -> Self {
        Pending {
            // One for the barrier itself, dropped once it has entrained.
            state: Mutex::new(PendingState {
                remaining: 1,
                waker: None,
            }),
            cv: Condvar::new(),
        }
    }

    fn done_one(&self) {
        let mut st = self.state.lock();
        st.remaining -= 1;
        if st.remaining == 0 {
            let waker = if mutant!(BarrierAsyncNoWake) {
                None
            } else {
                st.waker.take()
            };
            drop(st);
            self.cv.notify_all();
            // Outside the lock: the waker is the executor's code, and a
            // panic in it must not stop the CB worker from counting down
            // the other barriers it ran.
            if let Some(w) = waker {
                wake_contained(w);
            }
        }
    }
}

/// An async barrier's wait: done once every internal callback it entrained
/// has run. The waker is stored and read under the same lock as the count,
/// so the last callback either sees it or the poll sees the count at zero.
/// Checked by the loom model `barrier_async_wakes_after_callbacks`
/// (loom-tests/tests/async_waits.rs; mutant `barrier_async_no_wake`).
pub(crate) struct BarrierWait(Arc<Pending>);

impl BarrierWait {
    /// `true` once every callback the barrier waits for has run; otherwise
    /// `waker` (replacing any earlier one) is woken when they have.
    pub(crate) fn poll(&self, waker: &Waker) -> bool {
        // Cloned, and the replaced waker dropped, outside the lock (the
        // executor's code; see wait.rs).
        let fresh = waker.clone();
        let mut st = self.0.state.lock();
        if st.remaining == 0 {
            drop(st);
            return true;
        }
        let replaced = match &mut st.waker {
            Some(w) if w.will_wake(waker) => None,
            slot => slot.replace(fresh),
        };
        drop(st);
        drop(replaced);
        false
    }

    /// The future was dropped: wake nobody. The internal callbacks still
    /// run (they own their share of the count) and free the state.
    pub(crate) fn forget_waker(&self) {
        let w = self.0.state.lock().waker.take();
        drop(w);
    }
}

rcu_thread_local! {
    /// On a CB worker: barriers whose internal callback has just run, to be
    /// told once the worker has accounted for everything it ran so far.
    static RAN_BARRIERS: std::cell::RefCell<Vec<Arc<Pending>>> =
        std::cell::RefCell::new(Vec::new());
}

/// Did a barrier callback just run on this CB worker? Then the worker
/// accounts for the callbacks it ran so far (shard length, `invoked`) and
/// calls [`signal_ran_barriers`] before it runs anything else: a barrier
/// waits for exactly the callbacks queued before it, and `stats()` taken as
/// soon as it returns adds up.
#[inline]
pub(crate) fn barrier_ran() -> bool {
    RAN_BARRIERS.with(|v| !v.borrow().is_empty())
}

/// Complete the barriers whose callbacks ran; see [`barrier_ran`].
pub(crate) fn signal_ran_barriers() {
    let ran = RAN_BARRIERS.with(|v| std::mem::take(&mut *v.borrow_mut()));
    for p in ran {
        p.done_one();
    }
}

impl BarrierState {
    /// Wait until every callback queued on `shards` before this call has
    /// run; `take_feeds` moves the callbacks staged in threads' feeds to their
    /// shards first; `wakes` wakes the workers a flush or an entrain owes. The
    /// caller has checked that it is neither reading nor a callback of this
    /// domain.
    ///
    /// A wait longer than `stall`'s timeout is reported once, naming the
    /// shards still pending (`worker_name` names their CB workers).
    pub(crate) fn run(
        &self,
        shards: &[CachePadded<Shard>],
        wakes: &Wakes,
        take_feeds: impl FnOnce(),
        stall: &StallWatch,
        worker_name: impl Fn(usize) -> String,
    ) {
        if mutant!(BarrierLenUnlocked, when shards.iter().all(|s| s.looks_idle_unlocked())) {
            // Broken variant: a lock-free look, without `Acquire`, finds
            // every shard idle and returns.
            return;
        }
        // Order the caller's earlier `call()`s before the barrier-sequence
        // read below, as the kernel's `rcu_barrier` does with `smp_mb()`
        // (module docs).
        fence(Ordering::SeqCst);
        let s = seq::snap(self.seq.load(Ordering::Acquire));
        let _serial = self.lock.lock();
        if seq::done(self.seq.load(Ordering::Acquire), s) {
            // A whole barrier started and ended after we arrived.
            return;
        }
        self.seq.store(
            seq::start(self.seq.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        // Order the caller's earlier accesses (its `call()`s, and what it saw
        // of other threads' calls) before the length reads below (kernel:
        // the `smp_mb()` at the top of `rcu_barrier`).
        fence(Ordering::SeqCst);
        let pending = entrain_all(self.new_pending(), shards, wakes, take_feeds);
        let mut clock = stall.start();
        let mut st = pending.state.lock();
        while st.remaining != 0 {
            match stall.sleep_bound(&mut clock) {
                None => pending.cv.wait(&mut st),
                Some(bound) => pending.cv.wait_for(&mut st, bound),
            }
            if st.remaining != 0 && stall.due(&mut clock) {
                // Outside the count's lock: the hook is the user's code.
                drop(st);
                let held = stalled_shards(shards, &worker_name);
                stall.report(&mut clock, StallKind::Barrier, Holdups::Shards(held));
                st = pending.state.lock();
            }
        }
        drop(st);
        self.seq.store(
            seq::end(self.seq.load(Ordering::Relaxed)),
            Ordering::Release,
        );
    }

    /// An async barrier: entrain as [`run`](BarrierState::run) does, without
    /// waiting and without the serializing lock (which a blocking barrier
    /// holds while it waits), so it never blocks the caller. It shares no
    /// blocking barrier's work, and no blocking barrier shares its own: it
    /// leaves the barrier sequence alone.
    pub(crate) fn start(
        &self,
        shards: &[CachePadded<Shard>],
        wakes: &Wakes,
        take_feeds: impl FnOnce(),
    ) -> BarrierWait {
        // Orders the caller's earlier `call()`s before the look at the
        // shards, as in `run`.
        fence(Ordering::SeqCst);
        BarrierWait(entrain_all(self.new_pending(), shards, wakes, take_feeds))
    }
}

/// The shards with callbacks pending, for a barrier's stall report: each
/// waits for its callback worker if it has DONE callbacks or a batch out,
/// else for a grace period.
fn stalled_shards(
    shards: &[CachePadded<Shard>],
    worker_name: &impl Fn(usize) -> String,
) -> Vec<StalledShard> {
    let mut held = Vec::new();
    for (i, shard) in shards.iter().enumerate() {
        let b = shard.bypass.lock();
        let l = shard.list.lock();
        let pending = (shard.len_locked(&l) + b.len()) as u64;
        if pending == 0 {
            continue;
        }
        // DONE callbacks, or a batch taken out and not yet accounted for
        // (the length counts it, the list no longer holds it): the CB
        // worker's. Otherwise they wait for a grace period (or for a GP
        // worker to number them).
        let in_flight = shard.len_locked(&l) > l.cbs.len();
        let holdup = if l.cbs.done() != 0 || in_flight {
            ShardHoldup::CallbackWorker
        } else {
            ShardHoldup::GracePeriod
        };
        held.push(StalledShard {
            shard: i,
            pending,
            holdup,
            worker: worker_name(i),
        });
    }
    held
}

/// Take the staged callbacks, then flush every shard's bypass and entrain
/// an internal callback on every non-empty shard; the returned count drops
/// to zero once each has run.
fn entrain_all(
    pending: Arc<Pending>,
    shards: &[CachePadded<Shard>],
    wakes: &Wakes,
    take_feeds: impl FnOnce(),
) -> Arc<Pending> {
    // Every callback staged in a thread's feed (feed.rs) before we
    // arrived goes to its shard first (mutant `barrier_skips_feeds`).
    if !mutant!(BarrierSkipsFeeds) {
        take_feeds();
    }
    for (i, shard) in shards.iter().enumerate() {
        // Under both locks (bypass, then list): flush the bypass, so that
        // its callbacks (lazy ones too) run before ours, then entrain.
        // The locks order every `call()` that happened before us, on any
        // thread, before this look at the shard.
        let mut b = shard.bypass.lock();
        let mut l = shard.list.lock();
        // Mutant `barrier_skips_bypass`: entrain without flushing first.
        let owed = if mutant!(BarrierSkipsBypass) {
            WakeOwed::Nothing
        } else {
            shard.flush_bypass(&mut b, &mut l)
        };
        drop(b);
        if shard.len_locked(&l) == 0 {
            continue;
        }
        pending.state.lock().remaining += 1;
        let p = Arc::clone(&pending);
        // Runs on the shard's CB worker, after every callback queued
        // before it; the worker signals once it has accounted for them.
        let seg = shard.entrain(
            &mut l,
            Slot::new(move || {
                RAN_BARRIERS.with(|v| v.borrow_mut().push(p));
            }),
        );
        drop(l);
        if seg == DONE {
            shard.cb.wake();
        }
        if owed == WakeOwed::GpWorker && !mutant!(BarrierFlushNoWake) {
            // The flush gave the list its first pending callbacks.
            wakes.wake_gp_worker(wakes.group_index(i));
        }
    }
    pending.done_one();
    pending
}
