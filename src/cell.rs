//! [`RcuCell`]: a safe RCU-protected pointer bound to one domain.
//!
//! The cell owns a heap value that readers borrow for the length of a read-
//! side section; writers swap in a new value and retire the old one through
//! [`Rcu::call`], so it is dropped on a callback worker after a grace period.
//!
//! # Invariant
//!
//! The value `ptr` points to is freed only by a callback queued *after* it
//! was unpublished (swapped out under `writer`), so only after every section
//! that could have loaded it has ended. A reference from
//! [`load`](RcuCell::load) borrows a [`ReadGuard`] of the cell's own domain
//! (checked at run time), so it cannot outlive its section. The publish
//! side is the `Release` swap / `Acquire` load pair; the grace-period side
//! is the callback pipeline's, checked by the loom models of
//! loom-tests/tests/callbacks.rs (`rcu_cell_replace_and_read`).

use crate::sync::{rcu_thread_local, AtomicPtr, AtomicUsize, MutexGuard, Ordering};
use std::marker::PhantomData;

use crate::domain::Rcu;
use crate::reader::ReadGuard;
use crate::sync::Mutex;

/// An RCU-protected pointer: readers [`load`](RcuCell::load) the current
/// value inside a read-side section without waiting; writers
/// [`replace`](RcuCell::replace) or [`update`](RcuCell::update) it, and the
/// old value is dropped on a callback worker of the domain after a grace
/// period.
///
/// The cell holds a handle to its domain, so the domain lives at least as
/// long as the cell. Writers are serialized by an internal lock; readers
/// never take it.
///
/// `T: Send + Sync` because readers on any thread share the value and a
/// worker thread drops it.
///
/// ```
/// use rcu_offload::{Rcu, RcuCell};
///
/// let rcu = Rcu::new();
/// let config = RcuCell::new(&rcu, String::from("v1"));
/// {
///     let guard = rcu.read();
///     let current: &String = config.load(&guard);
///     assert_eq!(current, "v1");
///     config.replace(String::from("v2")); // "v1" stays valid for `current`
///     assert_eq!(current, "v1");
/// }
/// config.update(|old| format!("{old}+"));
/// assert_eq!(config.load(&rcu.read()), "v2+");
/// ```
pub struct RcuCell<T: Send + Sync + 'static> {
    ptr: AtomicPtr<T>,
    writer: Mutex<()>,
    /// The thread holding `writer` (see `thread_token`), 0 if none: a
    /// thread can only ever read its own token here while it holds the
    /// lock, so `Relaxed` suffices to detect re-entry.
    writer_thread: AtomicUsize,
    rcu: Rcu,
    _owns: PhantomData<Box<T>>,
}

impl<T: Send + Sync + 'static> RcuCell<T> {
    /// A cell holding `value`, bound to `rcu`'s domain.
    pub fn new(rcu: &Rcu, value: T) -> RcuCell<T> {
        RcuCell {
            ptr: AtomicPtr::new(Box::into_raw(Box::new(value))),
            writer: Mutex::new(()),
            writer_thread: AtomicUsize::new(0),
            rcu: rcu.clone(),
            _owns: PhantomData,
        }
    }

    /// The current value, valid for as long as `guard`'s section.
    ///
    /// # Panics
    ///
    /// If `guard` belongs to another domain than the cell's.
    #[inline]
    pub fn load<'g>(&'g self, guard: &'g ReadGuard<'_>) -> &'g T {
        assert!(
            guard.domain_id() == self.rcu.core().reader.id(),
            "rcu_offload: RcuCell::load with a ReadGuard of another domain"
        );
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: `p` came from `Box::into_raw` and is freed only by a
        // callback queued after it was swapped out, which runs after a grace
        // period; `guard` is a live section of the same domain (checked
        // above) that began before that grace period could end, and the
        // returned reference cannot outlive `guard`.
        unsafe { &*p }
    }

    /// Publish `value`; the old value is dropped on a callback worker after a
    /// grace period. Never waits for one; like any [`Rcu::call`], it blocks
    /// only above the domain's memory bound
    /// ([`Builder::high_water`](crate::Builder::high_water)).
    pub fn replace(&self, value: T) {
        let new = Box::into_raw(Box::new(value));
        let old = {
            let _w = self.lock_writer("replace");
            self.ptr.swap(new, Ordering::AcqRel)
        };
        self.retire_raw(old);
    }

    /// Publish `f(current)`; the old value is dropped on a callback worker
    /// after a grace period. Writers are serialized, so `f` sees the latest
    /// value and no concurrent update is lost.
    ///
    /// `f` runs under the cell's writer lock, so it must not wait for another
    /// writer of this cell: calling [`replace`](RcuCell::replace) or `update`
    /// on the same cell from `f` panics, and waiting in `f` for a thread or
    /// callback that writes this cell (say, `barrier()` while a pending
    /// callback replaces it) deadlocks.
    ///
    /// # Panics
    ///
    /// If `f` panics (the cell is left unchanged), or if `f` writes this cell.
    ///
    /// Like [`replace`](RcuCell::replace), it never waits for a grace
    /// period, and blocks only above the domain's memory bound.
    pub fn update(&self, f: impl FnOnce(&T) -> T) {
        let old = {
            let _w = self.lock_writer("update");
            let cur = self.ptr.load(Ordering::Acquire);
            // SAFETY: only writers retire values, and they are serialized by
            // `writer`, which we hold: `cur` stays live until we swap it out.
            let new = Box::into_raw(Box::new(f(unsafe { &*cur })));
            self.ptr.swap(new, Ordering::AcqRel)
        };
        self.retire_raw(old);
    }

    /// Take the writer lock, or panic if this thread already holds it (a
    /// write from inside `update`'s closure), instead of deadlocking.
    fn lock_writer(&self, what: &str) -> WriterGuard<'_> {
        let me = thread_token();
        assert!(
            self.writer_thread.load(Ordering::Relaxed) != me,
            "rcu_offload: RcuCell::{what} called from inside RcuCell::update's \
             closure on the same cell; it would deadlock"
        );
        let guard = self.writer.lock();
        self.writer_thread.store(me, Ordering::Relaxed);
        WriterGuard {
            cell_thread: &self.writer_thread,
            _guard: guard,
        }
    }

    /// Drop the unpublished `old` after a grace period.
    fn retire_raw(&self, old: *mut T) {
        let old = SendPtr(old);
        self.rcu.call(move || {
            let old = old;
            // SAFETY: `old` came from `Box::into_raw`, was unpublished before
            // this callback was queued, and is owned by this callback alone;
            // the grace period that precedes it has ended every section that
            // could still read it.
            drop(unsafe { Box::from_raw(old.0) });
        });
    }
}

/// The writer lock, and the record of which thread holds it.
struct WriterGuard<'a> {
    cell_thread: &'a AtomicUsize,
    _guard: MutexGuard<'a, ()>,
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        // Cleared before the lock is released (fields drop after this).
        self.cell_thread.store(0, Ordering::Relaxed);
    }
}

rcu_thread_local! {
    /// Its address identifies the calling thread (never 0).
    static THREAD_TOKEN: u8 = 0;
}

fn thread_token() -> usize {
    THREAD_TOKEN.with(|t| t as *const u8 as usize)
}

/// A pointer to a retired value, moved into its freeing callback.
struct SendPtr<T>(*mut T);

// SAFETY: the pointee is `T: Send` (enforced by `RcuCell`'s bounds) and is
// accessed by the callback alone once retired.
unsafe impl<T: Send> Send for SendPtr<T> {}

impl<T: Send + Sync + 'static> Drop for RcuCell<T> {
    fn drop(&mut self) {
        // Readers may still hold the value: retire it like any old value.
        let cur = self.ptr.load(Ordering::Acquire);
        self.retire_raw(cur);
    }
}

impl<T: Send + Sync + 'static + std::fmt::Debug> std::fmt::Debug for RcuCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.rcu.read();
        f.debug_struct("RcuCell")
            .field("value", self.load(&g))
            .finish()
    }
}
