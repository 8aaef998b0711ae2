//! The grace-period engine: sequence numbers, batching of `synchronize()`
//! callers, polled grace periods, and the engine thread that runs grace
//! periods nobody is blocked on.
//!
//! Mirrors the kernel's `rcu_state.gp_seq` / `gp_seq_needed` pair and its
//! `rcu_gp_kthread`, much simplified: a grace period here is one call of
//! [`ReadState::wait_for_readers`] between two heavy fences, run by whoever
//! holds the GP lock.
//!
//! # Who runs a grace period
//!
//! * A `synchronize()` caller runs it on its own thread (no hand-off latency),
//!   unless the grace period it needs completed while it queued for the GP
//!   lock: that is the batching. Every caller that snapshotted the sequence
//!   before a grace period *started* is served by that grace period, so `n`
//!   concurrent callers cost at most two grace periods, not `n`.
//! * `start_poll()` records the number it needs in `needed` and wakes the
//!   engine thread (started on first use, named `{prefix}rcu_gp`), which runs
//!   grace periods until `needed` is reached, then sleeps.
//!
//! # Invariant
//!
//! `seq` reaches a value `>= snap(s)` only after a grace period that *started
//! after `s` was read* has run `wait_for_readers` to completion. Starting a
//! grace period stores the odd "in progress" number and then executes a heavy
//! fence; [`GpState::snapshot`] executes a full fence and then reads `seq`. The
//! two fences make the snapshot see the in-progress number of any grace period
//! whose reader scan could have missed the caller's preceding updates, and
//! `snap` then asks for the grace period after it.
//!
//! Checked by the loom models `concurrent_synchronize_share_gp` and
//! `poll_never_early` (loom-tests/tests/grace_period.rs).

use crate::mutants::{model_only, mutant, mutant_diverts};
use crate::reader::ReadState;
use crate::seq;
use crate::sync::{
    fence, heavy_fence, try_hold, AtomicU64, Condvar, HeldLocks, JoinHandle, Mutex, Ordering,
};
use crate::wait::{WaitKey, WakerTable};
use std::task::Waker;

/// Engine-thread bookkeeping, under [`GpState::engine`].
struct Engine {
    /// The highest sequence number someone asked for (wrap-safe max).
    needed: u64,
    /// A request arrived that the engine has not answered with `on_done`
    /// yet (see `engine_loop`).
    unanswered: bool,
    /// The domain is shutting down.
    stop: bool,
    /// The engine thread, once started.
    thread: Option<JoinHandle<()>>,
}

/// Per-domain grace-period state.
pub(crate) struct GpState {
    /// `rcu_seq`-style number: see `seq.rs`. Written only by the GP-lock
    /// holder.
    seq: AtomicU64,
    /// Held for the whole of a grace period.
    gp_lock: Mutex<()>,
    engine: Mutex<Engine>,
    engine_cv: Condvar,
    /// Tasks awaiting a grace period (`Rcu::synchronize_async`), woken by
    /// whoever ends it (wait.rs).
    waiters: WakerTable,
    /// A forked child's only thread is this engine's, forked in a waker
    /// (fork.rs). Real builds only, a plain std atomic.
    #[cfg(not(any(loom, shuttle)))]
    forked_on_engine: std::sync::atomic::AtomicBool,
}

impl GpState {
    pub(crate) fn new() -> Self {
        GpState {
            seq: AtomicU64::new(0),
            gp_lock: Mutex::new(()),
            engine: Mutex::new(Engine {
                needed: 0,
                unanswered: false,
                stop: false,
                thread: None,
            }),
            engine_cv: Condvar::new(),
            waiters: WakerTable::new(),
            #[cfg(not(any(loom, shuttle)))]
            forked_on_engine: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The sequence number whose completion proves a full grace period from
    /// now. Orders the caller's earlier memory accesses before it (kernel:
    /// `get_state_synchronize_rcu`'s `smp_mb()`).
    pub(crate) fn snapshot(&self) -> u64 {
        fence(Ordering::SeqCst);
        let s = self.seq.load(Ordering::Relaxed);
        mutant_diverts!(PollEarly => snap_early(s));
        seq::snap(s)
    }

    /// Has `target` been reached? On `true`, orders the caller's later memory
    /// accesses after the grace period (kernel: `poll_state_synchronize_rcu`).
    pub(crate) fn is_done(&self, target: u64) -> bool {
        if seq::done(self.seq.load(Ordering::Acquire), target) {
            fence(Ordering::SeqCst);
            true
        } else {
            false
        }
    }

    /// Number of grace periods completed so far.
    pub(crate) fn completed(&self) -> u64 {
        self.seq.load(Ordering::Acquire) / seq::SEQ_ONE_GP
    }

    /// Block until `target` is reached, running grace periods on this thread
    /// as needed (batched: see the module docs).
    pub(crate) fn wait_for(&self, target: u64, readers: &ReadState) {
        let batching = !mutant!(NoBatching);
        if batching && self.is_done(target) {
            return;
        }
        {
            let _gp = self.gp_lock.lock();
            // Someone else's grace period may have served us while we queued.
            if batching && self.is_done(target) {
                return;
            }
            self.run_gp(readers);
            debug_assert!(seq::done(self.seq.load(Ordering::Relaxed), target));
        }
        // Outside the GP lock: the wakers are the executors' code.
        self.waiters
            .wake_reached(|t| seq::done(self.seq.load(Ordering::Acquire), t));
    }

    /// An async wait for `target`: `true` if it is reached (and `key`, if
    /// any, released); otherwise `waker` is registered in the slot `key`
    /// names (allocated on first use) and will be woken by whoever ends the
    /// grace period that reaches `target`. The caller has requested that
    /// grace period (see [`request`](GpState::request)).
    pub(crate) fn poll_wait(&self, target: u64, key: &mut Option<WaitKey>, waker: &Waker) -> bool {
        if self.is_done(target) {
            if let Some(k) = key.take() {
                self.waiters.release(k);
            }
            return true;
        }
        self.waiters
            .register(key, target, waker, || self.is_done(target))
    }

    /// Give up an async wait (its future was dropped).
    pub(crate) fn cancel_wait(&self, key: WaitKey) {
        self.waiters.release(key);
    }

    /// Run one full grace period. The caller holds `gp_lock`.
    fn run_gp(&self, readers: &ReadState) {
        let s = self.seq.load(Ordering::Relaxed);
        let running = seq::start(s);
        self.seq.store(running, Ordering::Relaxed);
        // Pairs with the readers' entry fences and with `snapshot`'s fence:
        // everything the updaters did before reading `seq` is visible to any
        // reader that enters after this point, and any reader that entered
        // before it is visible to the scan.
        heavy_fence(readers.fences());
        if readers.wait_for_readers() {
            // Orders every access of the readers we waited for before the end
            // of the grace period, and so before whatever our callers free
            // next. Not needed when no live thread had a reader record.
            heavy_fence(readers.fences());
        }
        self.seq.store(seq::end(running), Ordering::Release);
    }

    /// Make sure a grace period reaching `target` will run without anyone
    /// blocking on it: hand the request to the engine thread, starting it if
    /// needed.
    pub(crate) fn request(&self, target: u64, spawn: impl FnOnce() -> JoinHandle<()>) {
        let mut e = self.engine.lock();
        if e.stop {
            return;
        }
        if seq::before(e.needed, target) {
            e.needed = target;
        }
        e.unanswered = true;
        if e.thread.is_none() {
            e.thread = Some(spawn());
        }
        drop(e);
        if !mutant!(EngineNoNotify) {
            self.engine_cv.notify_one();
        }
    }

    /// The engine thread's loop: run grace periods while someone needs one,
    /// calling `on_done` after each grace period it waited for (this is how
    /// sleeping GP workers learn that their grace period completed).
    ///
    /// Every request is answered with an `on_done`, even one whose grace
    /// period a `synchronize()` caller completed before the engine looked:
    /// the requester may be asleep waiting for that very grace period, and
    /// `synchronize()` callers wake nobody. Checked by the loom model
    /// `gp_completed_by_synchronize` (mutant `engine_skips_done_request`).
    pub(crate) fn engine_loop(&self, readers: &ReadState, on_done: impl Fn()) {
        loop {
            let target = {
                let mut e = self.engine.lock();
                loop {
                    if e.stop {
                        return;
                    }
                    let done = seq::done(self.seq.load(Ordering::Acquire), e.needed);
                    if !done || (e.unanswered && !mutant!(EngineSkipsDoneRequest)) {
                        e.unanswered = false;
                        break e.needed;
                    }
                    self.engine_cv.wait(&mut e);
                }
            };
            // Runs the wakers of tasks awaiting the grace period.
            self.wait_for(target, readers);
            if self.forked_here() {
                // A waker called fork(): this thread is a forked child's
                // only one, in the parent's engine loop (fork.rs).
                return;
            }
            on_done();
        }
    }

    /// Did a waker this thread ran call `fork()`, making it a forked
    /// child's only thread? Always `false` in models.
    fn forked_here(&self) -> bool {
        #[cfg(not(any(loom, shuttle)))]
        {
            self.forked_on_engine
                .load(std::sync::atomic::Ordering::Relaxed)
        }
        #[cfg(any(loom, shuttle))]
        {
            false
        }
    }

    /// In a forked child whose only thread forked in a waker this engine
    /// ran: make it leave the engine's loop.
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) fn stop_forking_engine(&self) {
        self.forked_on_engine
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Hold the engine's and the waker table's locks for a fork
    /// (domain/fork.rs), or nothing if one is taken. The GP lock is not
    /// held: a grace period keeps it for as long as readers make it wait,
    /// the forking thread's own section included; the child repairs it
    /// instead ([`after_fork_child`](GpState::after_fork_child)).
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    pub(crate) fn hold_for_fork<'a>(&'a self, held: &mut HeldLocks<'a>) -> bool {
        try_hold(&self.engine, held) && self.waiters.hold_for_fork(held)
    }

    /// In the child of a fork (one thread, the caller; the locks of
    /// [`hold_for_fork`](GpState::hold_for_fork) were held across the fork
    /// and released): the engine thread does not exist, and a grace period
    /// that was running in the parent was abandoned with its GP lock held.
    /// Unlock it and roll the sequence back to the last completed grace
    /// period: the abandoned one never finished its scan here, so nothing
    /// may count it, and the next grace period starts it anew. Returns
    /// whether the engine has work (a request not yet met, or a task
    /// waiting), so that the caller restarts it.
    ///
    /// # Safety
    ///
    /// Only in the child of a fork, before it starts any thread, with no
    /// guard of the GP lock alive on the calling thread.
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) unsafe fn after_fork_child(&self) -> bool {
        // SAFETY: the caller's contract is the reset's: a forked child, one
        // thread, no guard of this lock alive on it.
        unsafe { self.gp_lock.reset_after_fork() };
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq::last_completed(s), Ordering::Release);
        let mut e = self.engine.lock();
        // Its thread is the parent's: never join it.
        std::mem::forget(e.thread.take());
        let behind = !seq::done(self.seq.load(Ordering::Acquire), e.needed);
        e.unanswered = behind;
        behind || self.waiters.any_waiting()
    }

    /// The highest grace period anyone asked the engine for.
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) fn needed(&self) -> u64 {
        self.engine.lock().needed
    }

    /// Stop the engine thread (if any) and wait for it. Called once, when the
    /// last handle of the domain is dropped.
    pub(crate) fn shutdown(&self) {
        let thread = {
            let mut e = self.engine.lock();
            e.stop = true;
            e.thread.take()
        };
        if !mutant!(ShutdownNoNotify) {
            self.engine_cv.notify_all();
        }
        if let Some(t) = thread {
            // The engine never panics on its own; if it did, surface it here.
            if t.join().is_err() {
                panic!("rcu_offload: the grace-period engine thread panicked");
            }
        }
    }
}

model_only! {
    /// Mutant `poll_early`: accept the end of a grace period already
    /// running, which may have scanned readers before the caller's updates.
    fn snap_early(s: u64) -> u64 {
        if seq::state(s) != 0 {
            seq::end(s)
        } else {
            s.wrapping_add(seq::SEQ_ONE_GP)
        }
    }
}
