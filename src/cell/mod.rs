//! [`RcuCell`] and [`RcuOptionCell`]: safe RCU-protected pointers bound to
//! one domain, and [`Unpublished`], a value taken out of one.
//!
//! A cell owns a heap value that readers borrow for the length of a read-
//! side section; writers swap in a new value, and the old one is either
//! retired through [`Rcu::call`] (dropped on a callback worker after a
//! grace period) or handed to the writer as an [`Unpublished`], which gives
//! it back by value after a grace period. Both cells are thin layers over
//! one core (raw.rs), which holds the invariant and its proof.
//!
//! # Invariant
//!
//! The value a cell publishes is freed only after every section that could
//! have loaded it has ended: by a callback queued after it was unpublished,
//! or by an [`Unpublished`] after a grace period counted from the
//! unpublishing. A reference from `load` borrows a [`ReadGuard`] of the
//! cell's own domain (checked at run time), so it cannot outlive its
//! section. The publish side is the `Release` swap / `Acquire` load pair;
//! the grace-period side is the callback pipeline's, checked by the loom
//! models `rcu_cell_replace_and_read` (loom-tests/tests/callbacks.rs) and
//! `compare_exchange_races_update_and_reader` (loom-tests/tests/cell.rs).

mod error;
mod option;
mod raw;
mod unpublished;

use std::fmt;

use crate::domain::Rcu;
use crate::reader::ReadGuard;

pub use self::error::CompareExchangeError;
pub use self::option::RcuOptionCell;
use self::raw::{from_thin, into_thin, thin_mut, thin_ref, RawCell};
pub use self::unpublished::Unpublished;

/// An RCU-protected pointer: readers [`load`](RcuCell::load) the current
/// value inside a read-side section without waiting; writers
/// [`store`](RcuCell::store), [`replace`](RcuCell::replace),
/// [`update`](RcuCell::update) or
/// [`compare_exchange`](RcuCell::compare_exchange) it, and the old value is
/// either dropped on a callback worker of the domain after a grace period
/// or handed back as an [`Unpublished`].
///
/// The cell holds a handle to its domain ([`domain`](RcuCell::domain)), so
/// the domain lives at least as long as the cell. Writers are serialized by
/// an internal lock; readers never take it. `T` may be unsized (`str`,
/// `[U]`, `dyn Trait + Send + Sync`); such a value costs one more
/// allocation and one more dependent load (it is published through a
/// pointer to its `Box`). For a cell that may be empty, see
/// [`RcuOptionCell`].
///
/// `T: Send + Sync` because readers on any thread share the value and a
/// worker thread drops it. The cell is invariant in `T` (as `Cell<T>` is),
/// since it is written through a shared reference:
///
/// ```compile_fail
/// use rcu_offload::{Rcu, RcuCell};
/// fn keep(_: &'static String) {}
/// fn noop(_: &String) {}
/// let rcu = Rcu::new();
/// let cell: RcuCell<for<'a> fn(&'a String)> = RcuCell::new(&rcu, noop);
/// // Would let `keep` be stored where readers pass short-lived strings.
/// let narrowed: &RcuCell<fn(&'static String)> = &cell;
/// narrowed.store(keep as fn(&'static String));
/// ```
///
/// # Which thread runs what
///
/// Everything runs on the caller's thread except the drop of a retired
/// value, which runs on one of the domain's callback workers. No writer
/// waits for a grace period, but every write that retires a value
/// (`store`, `update`, dropping an [`Unpublished`] or the cell) is an
/// [`Rcu::call`], which **blocks an ordinary thread while the domain is
/// above its memory bound** ([`Builder::high_water`](crate::Builder::high_water)),
/// until the callback workers catch up; inside a read-side section or a
/// callback it never blocks.
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
///     config.store(String::from("v2")); // "v1" stays valid for `current`
///     assert_eq!(current, "v1");
/// }
/// config.update(|old| format!("{old}+"));
/// assert_eq!(config.load(&rcu.read()), "v2+");
///
/// // Unsized values: a string slice, published as one word.
/// let name: RcuCell<str> = RcuCell::from_box(&rcu, "eth0".into());
/// name.store("eth1");
/// assert_eq!(name.load(&rcu.read()), "eth1");
/// ```
pub struct RcuCell<T: ?Sized + Send + Sync + 'static> {
    raw: RawCell<T>,
}

impl<T: Send + Sync + 'static> RcuCell<T> {
    /// A cell holding `value`, bound to `rcu`'s domain.
    pub fn new(rcu: &Rcu, value: T) -> RcuCell<T> {
        RcuCell::from_box(rcu, Box::new(value))
    }

    /// The value, taking the cell apart. No grace period is needed: owning
    /// the cell means no reader borrows it.
    #[must_use]
    pub fn into_inner(self) -> T {
        *self.into_box()
    }
}

impl<T: ?Sized + Send + Sync + 'static> RcuCell<T> {
    /// A cell holding the boxed (possibly unsized) `value`, bound to `rcu`'s
    /// domain.
    pub fn from_box(rcu: &Rcu, value: Box<T>) -> RcuCell<T> {
        RcuCell {
            raw: RawCell::new(rcu, into_thin(value)),
        }
    }

    /// The current value, valid for as long as `guard`'s section.
    ///
    /// # Panics
    ///
    /// If `guard` belongs to another domain than the cell's.
    #[inline]
    pub fn load<'g>(&'g self, guard: &'g ReadGuard<'_>) -> &'g T {
        let p = self.raw.load(guard, "RcuCell::load");
        // SAFETY: `p` is the published heap form (never null in an
        // `RcuCell`); it is freed only after a grace period counted from
        // its unpublishing (raw.rs), and `guard` is a live section of the
        // same domain (checked by `load`) that began before such a grace
        // period could end; the reference cannot outlive `guard`.
        unsafe { thin_ref::<T>(p) }
    }

    /// Publish `value`; the old value is dropped on a callback worker after
    /// a grace period. Never waits for one, but blocks an ordinary thread
    /// above the domain's memory bound, like any [`Rcu::call`].
    ///
    /// `value` is anything that converts into `Box<T>`: a `T`, a `Box<T>`,
    /// a `String` or `&str` for `RcuCell<str>`, a `Vec<U>` for
    /// `RcuCell<[U]>`.
    ///
    /// # Panics
    ///
    /// If called from inside [`update`](RcuCell::update)'s closure on the
    /// same cell (it would deadlock).
    pub fn store(&self, value: impl Into<Box<T>>) {
        let old = self.raw.exchange(into_thin(value.into()), "RcuCell::store");
        // SAFETY: `old` left the cell in the swap just above, under the
        // writer lock, and is ours alone.
        unsafe { self.raw.retire(old) };
    }

    /// Publish `value` and return the old value as an [`Unpublished`]: read
    /// it at once, take it back by value after a grace period, or drop it
    /// to retire it as [`store`](RcuCell::store) does (`Cell::replace`'s
    /// convention). Never waits for a grace period.
    ///
    /// # Panics
    ///
    /// If called from inside [`update`](RcuCell::update)'s closure on the
    /// same cell.
    pub fn replace(&self, value: impl Into<Box<T>>) -> Unpublished<T> {
        let old = self
            .raw
            .exchange(into_thin(value.into()), "RcuCell::replace");
        // SAFETY: `old` left the cell in the swap just above, under the
        // writer lock, and is ours alone.
        present(unsafe { self.raw.hand_back(old) })
    }

    /// Publish `f(current)`; the old value is dropped on a callback worker
    /// after a grace period. Writers are serialized, so `f` sees the latest
    /// value and no concurrent write is lost.
    ///
    /// `f` runs under the cell's writer lock, so it must not wait for another
    /// writer of this cell: writing the same cell from `f` panics, and
    /// waiting in `f` for a thread or callback that writes this cell (say,
    /// `barrier()` while a pending callback stores into it) deadlocks.
    ///
    /// Like [`store`](RcuCell::store), it never waits for a grace period,
    /// and blocks an ordinary thread only above the domain's memory bound.
    ///
    /// # Panics
    ///
    /// If `f` panics (the cell is left unchanged), or if `f` writes this cell.
    pub fn update<U: Into<Box<T>>>(&self, f: impl FnOnce(&T) -> U) {
        self.update_with(|cur| (f(cur), ()));
    }

    /// [`update`](RcuCell::update) whose closure also returns a result, which
    /// is returned: `f(current)` gives the new value and the result.
    ///
    /// ```
    /// let rcu = rcu_offload::Rcu::new();
    /// let ids = rcu_offload::RcuCell::new(&rcu, vec![7]);
    /// let len = ids.update_with(|old| {
    ///     let new = [old.as_slice(), &[8]].concat();
    ///     let len = new.len();
    ///     (new, len)
    /// });
    /// assert_eq!(len, 2);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`update`](RcuCell::update).
    pub fn update_with<U: Into<Box<T>>, R>(&self, f: impl FnOnce(&T) -> (U, R)) -> R {
        let result: Result<_, std::convert::Infallible> =
            self.raw.modify("RcuCell::update", |cur| {
                // SAFETY: `cur` is the published form, read under the
                // writer lock: only writers unpublish, they are serialized,
                // so it stays live until we swap it out below.
                let (new, r) = f(unsafe { thin_ref::<T>(cur) });
                Ok((into_thin(new.into()), r))
            });
        let Ok((old, r)) = result;
        // SAFETY: `old` left the cell in the swap just above, under the
        // writer lock, and is ours alone.
        unsafe { self.raw.retire(old) };
        r
    }

    /// A fallible [`update`](RcuCell::update): `f(current)` returns the new
    /// value, or an error to leave the cell unchanged. On success returns
    /// the old value as an [`Unpublished`] (drop it to retire it).
    ///
    /// ```
    /// let rcu = rcu_offload::Rcu::new();
    /// let limit = rcu_offload::RcuCell::new(&rcu, 10u32);
    /// let raise = |by: u32| limit.try_update(|&l| l.checked_add(by).ok_or("overflow"));
    /// assert_eq!(*raise(5).unwrap(), 10); // the old value
    /// assert_eq!(raise(u32::MAX).unwrap_err(), "overflow");
    /// assert_eq!(*limit.load(&rcu.read()), 15);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`update`](RcuCell::update).
    pub fn try_update<U: Into<Box<T>>, E>(
        &self,
        f: impl FnOnce(&T) -> Result<U, E>,
    ) -> Result<Unpublished<T>, E> {
        let (old, ()) = self.raw.modify("RcuCell::try_update", |cur| {
            // SAFETY: as in `update_with`.
            let new = f(unsafe { thin_ref::<T>(cur) })?;
            Ok((into_thin(new.into()), ()))
        })?;
        // SAFETY: `old` left the cell in the swap just above, under the
        // writer lock, and is ours alone.
        Ok(present(unsafe { self.raw.hand_back(old) }))
    }

    /// Publish `new` if the cell still holds `current` (by identity: the
    /// same address, as liburcu's `rcu_cmpxchg_pointer` and arc-swap's
    /// `compare_and_swap` compare), typically a value loaded under `guard`.
    /// On success returns the old value as an [`Unpublished`]; on failure,
    /// the value the cell holds (valid for `guard`) and `new`, boxed.
    ///
    /// Zero-sized values all share one address, so for them (and for empty
    /// slices and strings) any `current` compares equal.
    ///
    /// ```
    /// let rcu = rcu_offload::Rcu::new();
    /// let cell = rcu_offload::RcuCell::new(&rcu, 1);
    /// let g = rcu.read();
    /// let seen = cell.load(&g);
    /// assert!(cell.compare_exchange(seen, 2, &g).is_ok());
    /// let err = cell.compare_exchange(seen, 3, &g).unwrap_err(); // `seen` is gone
    /// assert_eq!((*err.current, *err.new), (2, 3));
    /// ```
    ///
    /// # Panics
    ///
    /// If `guard` belongs to another domain, or if called from inside
    /// [`update`](RcuCell::update)'s closure on the same cell.
    #[allow(clippy::type_complexity)]
    pub fn compare_exchange<'g>(
        &'g self,
        current: &T,
        new: impl Into<Box<T>>,
        guard: &'g ReadGuard<'_>,
    ) -> Result<Unpublished<T>, CompareExchangeError<&'g T, Box<T>>> {
        self.raw.load(guard, "RcuCell::compare_exchange");
        let new = into_thin(new.into());
        let addr = (current as *const T).cast::<u8>();
        match self.raw.compare_exchange(Some(addr), new) {
            // SAFETY: `old` left the cell in this exchange, under the
            // writer lock, and is ours alone.
            Ok(old) => Ok(present(unsafe { self.raw.hand_back(old) })),
            Err(cur) => Err(CompareExchangeError {
                // SAFETY: `cur` was published when read; `guard` is a live
                // section of the cell's domain (checked above) that began
                // before it could be unpublished, so it lives for 'g.
                current: unsafe { thin_ref::<T>(cur) },
                // SAFETY: `new` came from `into_thin::<T>` just above and
                // was never published.
                new: unsafe { from_thin::<T>(new) },
            }),
        }
    }

    /// The value, mutably. No grace period is needed: `&mut self` means no
    /// reader borrows the cell.
    pub fn get_mut(&mut self) -> &mut T {
        let p = self.raw.get_mut();
        // SAFETY: the published form (non-null), live while the cell holds
        // it; readers borrow the cell, so `&mut self` excludes them, and
        // writers need `&self` too.
        unsafe { thin_mut::<T>(p) }
    }

    /// The value in its `Box`, taking the cell apart.
    #[must_use]
    pub fn into_box(mut self) -> Box<T> {
        let p = self.raw.take_mut();
        // SAFETY: the published form, now owned by us alone (the cell is
        // consumed and holds null, so its drop retires nothing); no reader
        // borrows an owned cell.
        unsafe { from_thin::<T>(p) }
    }

    /// The domain the cell belongs to (the one whose guards
    /// [`load`](RcuCell::load) takes).
    #[must_use]
    pub fn domain(&self) -> &Rcu {
        &self.raw.rcu
    }
}

/// The handle of a value that left an `RcuCell`, which never holds null.
fn present<T: ?Sized + Send + Sync + 'static>(old: Option<Unpublished<T>>) -> Unpublished<T> {
    old.expect("an RcuCell always holds a value")
}

impl<T: ?Sized + Send + Sync + 'static> Drop for RcuCell<T> {
    fn drop(&mut self) {
        let p = self.raw.take_mut();
        // Readers may still hold the value (a cell dropped by another
        // thread than theirs): retire it like any old value.
        // SAFETY: `p` left the cell by `take_mut` (the cell is going away)
        // and is ours.
        unsafe { self.raw.retire(p) };
    }
}

impl<T: ?Sized + Send + Sync + 'static + fmt::Debug> fmt::Debug for RcuCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.raw.rcu.read();
        f.debug_struct("RcuCell")
            .field("value", &self.load(&g))
            .finish()
    }
}

crate::sync::cfg_real! {
    /// A cell holding `T::default()`, in the [`global`](crate::global) domain.
    impl<T: Default + Send + Sync + 'static> Default for RcuCell<T> {
        fn default() -> Self {
            RcuCell::new(crate::domain::global(), T::default())
        }
    }

    /// A cell holding `value`, in the [`global`](crate::global) domain.
    impl<T: Send + Sync + 'static> From<T> for RcuCell<T> {
        fn from(value: T) -> Self {
            RcuCell::new(crate::domain::global(), value)
        }
    }
}
