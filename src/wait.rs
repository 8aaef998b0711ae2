//! Wakers of the async waits: a table of tasks waiting for a target (a
//! grace-period sequence number), woken by whoever reaches it.
//!
//! A future that must wait registers its [`Waker`] here under a key it owns
//! and keeps until it completes or is dropped; whoever completes a grace
//! period wakes every registered waker whose target is reached. Nobody
//! polls and no thread blocks per waiting future: the thread that ends the
//! grace period (the engine thread; a `synchronize()`, `cond_synchronize()`
//! or `Unpublished::into_box` caller; or a GP worker that runs its own grace
//! periods because the engine thread could not be started) does the waking,
//! after it has left the grace-period lock. A waker that panics is
//! contained ([`wake_contained`]).
//!
//! # Invariant: no lost wake-up
//!
//! A waiter that returns `Pending` is woken once its target is reached. The
//! waiter (1) stores its waker and raises `registered` under `table`'s lock,
//! (2) executes a full fence, (3) reads whether the target is reached. The
//! completer (a) makes the target reached (the grace period's end store),
//! (b) executes a full fence, (c) reads `registered`, and if it is not zero
//! takes the lock and wakes what is due. The two fences order (1) before
//! (3) and (a) before (c): either the waiter sees the target reached and
//! returns `Ready`, or the completer sees the registration (and, taking the
//! lock after the waiter's, its waker). A waiter polled again with another
//! waker replaces the stored one under the lock, then re-checks the same
//! way, so the waker that is woken is always the latest one registered.
//!
//! Checked by the loom models of loom-tests/tests/async_waits.rs
//! (`waker_registers_while_gp_completes`, `waker_replaced_between_polls`;
//! mutants `waiter_no_recheck`, `waiter_no_fence`, `waiter_keeps_old_waker`).

use std::task::Waker;

use crate::mutants::mutant;
use crate::sync::{fence, try_hold, AtomicUsize, HeldLocks, Mutex, Ordering};

/// The slot a waiting future owns in a [`WakerTable`], from its first
/// `Pending` until it completes or is dropped.
#[derive(Debug)]
pub(crate) struct WaitKey(usize);

/// What one slot of the table holds.
enum Entry {
    /// Free; its index is on the free list.
    Vacant,
    /// A future waits for `target`; wake `waker` when it is reached.
    Waiting { target: u64, waker: Waker },
    /// Its waker was taken and woken; the owner has not released the slot.
    Woken,
}

struct Table {
    slots: Vec<Entry>,
    free: Vec<usize>,
}

/// Wakers waiting for targets, and how many are registered.
pub(crate) struct WakerTable {
    /// Number of `Entry::Waiting` slots; read without the lock by the
    /// completer after its fence (module docs).
    registered: AtomicUsize,
    table: Mutex<Table>,
}

impl WakerTable {
    pub(crate) fn new() -> Self {
        WakerTable {
            registered: AtomicUsize::new(0),
            table: Mutex::new(Table {
                slots: Vec::new(),
                free: Vec::new(),
            }),
        }
    }

    /// Register `waker` to be woken when `target` is reached, in the slot
    /// `key` names (allocating one if `key` is `None`), replacing the waker
    /// stored there by an earlier poll. Then `reached()` decides, after the
    /// full fence of the module docs: on `true` the slot is released and
    /// the caller completes; on `false` the caller returns `Pending` and a
    /// completer will wake it.
    pub(crate) fn register(
        &self,
        key: &mut Option<WaitKey>,
        target: u64,
        waker: &Waker,
        reached: impl Fn() -> bool,
    ) -> bool {
        // Cloned, and the replaced waker dropped, outside the lock: both
        // are the executor's code, which may drop a task whose own future
        // releases a slot of this table.
        let mut fresh = Some(waker.clone());
        let replaced;
        {
            let mut t = self.table.lock();
            let t = &mut *t;
            replaced = match key {
                None => {
                    let entry = Entry::Waiting {
                        target,
                        waker: fresh.take().expect("cloned above"),
                    };
                    let i = match t.free.pop() {
                        Some(i) => {
                            t.slots[i] = entry;
                            i
                        }
                        None => {
                            t.slots.push(entry);
                            t.slots.len() - 1
                        }
                    };
                    *key = Some(WaitKey(i));
                    self.registered.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Some(WaitKey(i)) => match &mut t.slots[*i] {
                    Entry::Waiting { waker: stored, .. } => {
                        if !stored.will_wake(waker) && !mutant!(WaiterKeepsOldWaker) {
                            Some(std::mem::replace(
                                stored,
                                fresh.take().expect("cloned above"),
                            ))
                        } else {
                            None
                        }
                    }
                    slot @ Entry::Woken => {
                        *slot = Entry::Waiting {
                            target,
                            waker: fresh.take().expect("cloned above"),
                        };
                        self.registered.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Entry::Vacant => unreachable!("a WaitKey names a vacant slot"),
                },
            };
        }
        drop((fresh, replaced));
        // Pairs with the completer's fence in `wake_reached`.
        if !mutant!(WaiterNoFence) {
            fence(Ordering::SeqCst);
        }
        if mutant!(WaiterNoRecheck) {
            return false;
        }
        if reached() {
            if let Some(k) = key.take() {
                self.release(k);
            }
            return true;
        }
        false
    }

    /// Hold the table's lock for a fork (domain/fork.rs), if it is free.
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    pub(crate) fn hold_for_fork<'a>(&'a self, held: &mut HeldLocks<'a>) -> bool {
        try_hold(&self.table, held)
    }

    /// Is any task waiting?
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) fn any_waiting(&self) -> bool {
        self.registered.load(Ordering::Relaxed) != 0
    }

    /// Free the slot `key` names (the future completed or was dropped). Its
    /// waker, if still stored, is dropped here, after the lock is released.
    pub(crate) fn release(&self, key: WaitKey) {
        let old = {
            let mut t = self.table.lock();
            let old = std::mem::replace(&mut t.slots[key.0], Entry::Vacant);
            if matches!(old, Entry::Waiting { .. }) {
                self.registered.fetch_sub(1, Ordering::Relaxed);
            }
            t.free.push(key.0);
            if t.free.len() == t.slots.len() {
                // Nobody waits: give the memory of a past crowd back.
                t.slots = Vec::new();
                t.free = Vec::new();
            }
            old
        };
        drop(old);
    }

    /// Wake every waiter whose target `reached` says is reached. Called by
    /// a completer after its end store; the wakers run after the lock is
    /// released, on the calling thread.
    pub(crate) fn wake_reached(&self, reached: impl Fn(u64) -> bool) {
        // Pairs with the waiter's fence in `register`.
        if !mutant!(WaiterNoFence) {
            fence(Ordering::SeqCst);
        }
        if self.registered.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut due = Vec::new();
        {
            let mut t = self.table.lock();
            for slot in t.slots.iter_mut() {
                if let Entry::Waiting { target, .. } = slot {
                    if reached(*target) {
                        if let Entry::Waiting { waker, .. } = std::mem::replace(slot, Entry::Woken)
                        {
                            due.push(waker);
                        }
                    }
                }
            }
            self.registered.fetch_sub(due.len(), Ordering::Relaxed);
        }
        for w in due {
            wake_contained(w);
        }
    }
}

/// Wake `w`, containing a panic of the executor's wake (or of the waker's
/// drop): the thread waking it (the engine, a GP or CB worker, or another
/// task's caller) carries on, and so do the other wakes it owes. The task
/// whose waker panicked may never be polled again; that is reported on
/// stderr.
pub(crate) fn wake_contained(w: Waker) {
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake())) {
        eprintln!(
            "rcu_offload: a task's Waker::wake panicked while an async grace period or \
             barrier woke it; the panic was contained, and that task may never be polled again"
        );
        drop_contained(payload);
    }
}

/// Drop a caught panic's payload, whose `Drop` is user code that may panic
/// too; such a second panic's payload is leaked, not dropped. Every place
/// that contains user code (wakers, stall and callback-panic hooks,
/// callbacks) drops what it caught through this.
pub(crate) fn drop_contained(payload: Box<dyn std::any::Any + Send>) {
    if let Err(again) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)))
    {
        std::mem::forget(again);
    }
}
