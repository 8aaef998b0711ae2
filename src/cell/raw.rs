//! The core both cells are thin layers over: a nullable, thin atomic
//! pointer to a heap value, the writers' lock, and the domain that retires
//! old values.
//!
//! # Heap form
//!
//! A value is published as one word, so that it can be swapped atomically.
//! A sized `T` is its own `Box<T>`'s pointer; an unsized one (`str`, `[U]`,
//! `dyn Trait`), whose `Box` is two words, is a pointer to a heap cell
//! holding that `Box` (one more allocation and one more dependent load,
//! the price of a two-word pointer without a double-word atomic). Which
//! form applies is a constant of `T` ([`is_thin`]); null means "no value"
//! (only `RcuOptionCell` stores it).
//!
//! # Invariant
//!
//! The pointer is written only under `writer`, so a writer that loads it
//! under the lock sees a value no one else can unpublish until it lets go.
//! A value leaves the cell only by a swap under the lock, and is freed only
//! by its one owner afterwards: a callback queued after the swap, or an
//! [`Unpublished`](super::Unpublished) handle after a grace period that
//! began after the swap. So a reference from `load` (tied to a guard of
//! the cell's domain) never outlives its value. Compare-and-exchange takes
//! the lock too: `update` reads the current value under the lock without a
//! guard, which is sound only because no other writer can retire it
//! meanwhile (loom model `compare_exchange_races_update_and_reader`,
//! mutant `cas_unlocked`).

use std::marker::PhantomData;
use std::mem;

use crate::domain::Rcu;
use crate::mutants::{model_only, mutant_diverts};
use crate::reader::ReadGuard;
use crate::sync::{rcu_thread_local, AtomicPtr, AtomicUsize, Mutex, MutexGuard, Ordering};

/// Is `*mut T` one word (sized `T`)? Then the heap form is the `Box`'s own
/// pointer; otherwise a pointer to a heap `Box<T>`.
const fn is_thin<T: ?Sized>() -> bool {
    mem::size_of::<*mut T>() == mem::size_of::<*mut u8>()
}

/// `b` in its one-word heap form (module docs). Never null.
pub(super) fn into_thin<T: ?Sized>(b: Box<T>) -> *mut u8 {
    if is_thin::<T>() {
        let p: *mut T = Box::into_raw(b);
        // SAFETY: `*mut T` is one word (`is_thin`), a plain address with
        // the same layout as `*mut u8`; the copy keeps its provenance.
        unsafe { mem::transmute_copy::<*mut T, *mut u8>(&p) }
    } else {
        Box::into_raw(Box::new(b)).cast::<u8>()
    }
}

/// The value a heap form points to.
///
/// # Safety
///
/// `p` came from [`into_thin::<T>`](into_thin), has not been passed to
/// [`from_thin`], and the value is neither freed nor mutably borrowed for
/// `'a`.
pub(super) unsafe fn thin_ref<'a, T: ?Sized>(p: *mut u8) -> &'a T {
    if is_thin::<T>() {
        // SAFETY: `p` is a `Box<T>`'s pointer (one word, `is_thin`), live
        // and shared for 'a (caller's contract).
        unsafe { &*mem::transmute_copy::<*mut u8, *mut T>(&p) }
    } else {
        // SAFETY: `p` points to a live heap `Box<T>` (caller's contract),
        // which owns the live value.
        unsafe { &*p.cast::<Box<T>>() }
    }
}

/// The value a heap form points to, mutably.
///
/// # Safety
///
/// As for [`thin_ref`], and nobody else may access the value for `'a`.
pub(super) unsafe fn thin_mut<'a, T: ?Sized>(p: *mut u8) -> &'a mut T {
    if is_thin::<T>() {
        // SAFETY: as in `thin_ref`; exclusive for 'a (caller's contract).
        unsafe { &mut *mem::transmute_copy::<*mut u8, *mut T>(&p) }
    } else {
        // SAFETY: as in `thin_ref`; exclusive for 'a (caller's contract).
        unsafe { &mut *p.cast::<Box<T>>() }
    }
}

/// Take back ownership of a heap form.
///
/// # Safety
///
/// `p` came from [`into_thin::<T>`](into_thin), is passed here once, and
/// nobody can access the value any more.
pub(super) unsafe fn from_thin<T: ?Sized>(p: *mut u8) -> Box<T> {
    if is_thin::<T>() {
        // SAFETY: `p` is a `Box<T>`'s pointer, given back once.
        unsafe { Box::from_raw(mem::transmute_copy::<*mut u8, *mut T>(&p)) }
    } else {
        // SAFETY: `p` is a heap `Box<T>`'s pointer, given back once.
        *unsafe { Box::from_raw(p.cast::<Box<T>>()) }
    }
}

/// A heap form on its way to the callback that frees it.
pub(super) struct SendThin(pub(super) *mut u8);

// SAFETY: it stands for a `Box<T>` with `T: Send` (every cell bounds `T`
// so), owned by whoever holds this.
unsafe impl Send for SendThin {}

/// Free heap form `p` on a callback worker after a grace period.
///
/// # Safety
///
/// `p` came from [`into_thin::<T>`](into_thin), is owned by the caller and
/// no longer reachable by a reader that starts from now on (it was
/// unpublished before this call).
pub(super) unsafe fn retire_thin<T: ?Sized + Send + Sync + 'static>(rcu: &Rcu, p: *mut u8) {
    let p = SendThin(p);
    rcu.call(move || {
        let p = p;
        // SAFETY: `p` came from `into_thin::<T>`, was unpublished before
        // this callback was queued (caller's contract) and is owned by it
        // alone; the grace period before it ended every section that could
        // still read it.
        drop(unsafe { from_thin::<T>(p.0) });
    });
}

/// What a cell's marker stands for: it owns a `T` (`Box<T>`) and is
/// invariant in it (`fn(&T) -> &T`); see [`RawCell`]'s field.
type OwnsInvariant<T> = (Box<T>, fn(&T) -> &T);

/// The shared core of [`RcuCell`](super::RcuCell) and
/// [`RcuOptionCell`](super::RcuOptionCell).
pub(super) struct RawCell<T: ?Sized> {
    ptr: AtomicPtr<u8>,
    writer: Mutex<()>,
    /// The thread holding `writer` (see `thread_token`), 0 if none: a
    /// thread can only ever read its own token here while it holds the
    /// lock, so `Relaxed` suffices to detect re-entry.
    writer_thread: AtomicUsize,
    pub(super) rcu: Rcu,
    /// Owns a `T`, and is *invariant* in `T`: a cell is written through
    /// `&self`, so a covariant one would let `&RcuCell<for<'a> fn(&'a X)>`
    /// become `&RcuCell<fn(&'static X)>` and store a function that keeps
    /// its argument for ever, which readers of the first type then call
    /// with short-lived arguments (`fn(&T) -> &T` is what makes it
    /// invariant; the raw `AtomicPtr<u8>` says nothing of `T`).
    _owns: PhantomData<OwnsInvariant<T>>,
}

impl<T: ?Sized + Send + Sync + 'static> RawCell<T> {
    /// A cell holding heap form `p` (or nothing, if null).
    pub(super) fn new(rcu: &Rcu, p: *mut u8) -> Self {
        RawCell {
            ptr: AtomicPtr::new(p),
            writer: Mutex::new(()),
            writer_thread: AtomicUsize::new(0),
            rcu: rcu.clone(),
            _owns: PhantomData,
        }
    }

    /// Retire `old` through [`Rcu::call`]: it is dropped on a callback
    /// worker after a grace period. Nothing happens if `old` is null.
    ///
    /// # Safety
    ///
    /// `old` is null, or a heap form that came from [`into_thin::<T>`](into_thin),
    /// left this cell before the call (swapped out under the writer lock,
    /// or taken by `take_mut`), and is owned by the caller, who gives it
    /// up.
    pub(super) unsafe fn retire(&self, old: *mut u8) {
        if !old.is_null() {
            // SAFETY: non-null, from `into_thin::<T>`, unpublished before
            // this call and ours to give (the caller's contract).
            unsafe { retire_thin::<T>(&self.rcu, old) };
        }
    }

    /// The published heap form, for a reader holding `guard`.
    ///
    /// # Panics
    ///
    /// If `guard` belongs to another domain than the cell's.
    #[inline]
    pub(super) fn load(&self, guard: &ReadGuard<'_>, what: &str) -> *mut u8 {
        assert!(
            guard.domain_id() == self.rcu.core().reader.id(),
            "rcu_offload: {what} with a ReadGuard of another domain"
        );
        self.ptr.load(Ordering::Acquire)
    }

    /// Publish `new`, returning what it replaced (now owned by the caller).
    pub(super) fn exchange(&self, new: *mut u8, what: &str) -> *mut u8 {
        let _w = self.lock_writer(what);
        self.ptr.swap(new, Ordering::AcqRel)
    }

    /// Under the writer lock, hand `f` the current heap form; if it returns
    /// `Ok(new)`, publish `new` and return the old form (owned by the
    /// caller) with `f`'s extra result.
    pub(super) fn modify<R, E>(
        &self,
        what: &str,
        f: impl FnOnce(*mut u8) -> Result<(*mut u8, R), E>,
    ) -> Result<(*mut u8, R), E> {
        let _w = self.lock_writer(what);
        let cur = self.ptr.load(Ordering::Acquire);
        let (new, r) = f(cur)?;
        Ok((self.ptr.swap(new, Ordering::AcqRel), r))
    }

    /// Publish `new` if the cell holds the value at `current` (an address,
    /// compared with the published value's; `None` for "no value"). Returns
    /// the old form on success, the published one on failure.
    pub(super) fn compare_exchange(
        &self,
        current: Option<*const u8>,
        new: *mut u8,
    ) -> Result<*mut u8, *mut u8> {
        mutant_diverts!(CasUnlocked => self.cas_unlocked(current, new));
        let _w = self.lock_writer("compare_exchange");
        let cur = self.ptr.load(Ordering::Acquire);
        if self.same(cur, current) {
            Ok(self.ptr.swap(new, Ordering::AcqRel))
        } else {
            Err(cur)
        }
    }

    /// Does heap form `p` hold the value at address `addr`?
    fn same(&self, p: *mut u8, addr: Option<*const u8>) -> bool {
        match addr {
            None => p.is_null(),
            // SAFETY: `p` is the published form, read under the writer lock
            // (or, in the mutant, by a caller holding a guard), so it is
            // live while we look.
            Some(a) => !p.is_null() && std::ptr::addr_eq(unsafe { thin_ref::<T>(p) }, a),
        }
    }

    /// The published heap form, to the owner of `&mut self` (no reader can
    /// hold it, since a reader borrows the cell).
    pub(super) fn get_mut(&mut self) -> *mut u8 {
        // `&mut self`: no other access can race (an atomic load keeps the
        // model backend's bookkeeping in step).
        self.ptr.load(Ordering::Relaxed)
    }

    /// The published form, taken out of a cell that is going away; the
    /// cell then holds nothing.
    pub(super) fn take_mut(&mut self) -> *mut u8 {
        self.ptr.swap(std::ptr::null_mut(), Ordering::Relaxed)
    }

    /// Take the writer lock, or panic if this thread already holds it (a
    /// write from inside an update's closure), instead of deadlocking.
    fn lock_writer(&self, what: &str) -> WriterGuard<'_> {
        let me = thread_token();
        assert!(
            self.writer_thread.load(Ordering::Relaxed) != me,
            "rcu_offload: {what} called from inside RcuCell::update's closure \
             (or another update's) on the same cell; it would deadlock"
        );
        let guard = self.writer.lock();
        self.writer_thread.store(me, Ordering::Relaxed);
        WriterGuard {
            cell_thread: &self.writer_thread,
            _guard: guard,
        }
    }
}

impl<T: ?Sized> Drop for RawCell<T> {
    fn drop(&mut self) {
        // Dropped by the cells, which retire or free the value first.
        debug_assert!(self.ptr.load(Ordering::Relaxed).is_null());
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
    /// The calling thread's token (0 until its first write of any cell).
    static THREAD_TOKEN: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

/// Tokens handed out so far. A plain std counter: it only numbers threads
/// and orders nothing.
static NEXT_TOKEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// A number that identifies the calling thread among live threads (never 0).
fn thread_token() -> usize {
    THREAD_TOKEN.with(|t| {
        if t.get() == 0 {
            t.set(NEXT_TOKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        }
        t.get()
    })
}

model_only! {
    impl<T: ?Sized + Send + Sync + 'static> RawCell<T> {
        /// Mutant `cas_unlocked`: a lock-free compare-and-exchange. Atomic
        /// on the pointer, but it can retire the value an `update`'s
        /// closure is reading without a guard.
        fn cas_unlocked(&self, current: Option<*const u8>, new: *mut u8) -> Result<*mut u8, *mut u8> {
            let cur = self.ptr.load(Ordering::Acquire);
            if !self.same(cur, current) {
                return Err(cur);
            }
            self.ptr
                .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire)
        }
    }
}
