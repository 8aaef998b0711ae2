//! [`RcuOptionCell`]: an RCU-protected pointer that may hold no value
//! (null, no allocation). Same core and invariant as `RcuCell` (raw.rs).

use std::fmt;
use std::ptr;

use crate::domain::Rcu;
use crate::reader::ReadGuard;

use super::error::CompareExchangeError;
use super::raw::{from_thin, into_thin, thin_mut, thin_ref, RawCell};
use super::unpublished::Unpublished;

/// An RCU-protected pointer that may be empty: [`RcuCell`](crate::RcuCell)
/// for `Option`, where "no value" is a null pointer and allocates nothing
/// (arc-swap's `ArcSwapOption`, crossbeam-epoch's `Atomic::null`).
///
/// Readers [`load`](RcuOptionCell::load) an `Option<&T>`; writers
/// [`store`](RcuOptionCell::store) a value,
/// [`take`](RcuOptionCell::take) it out,
/// [`replace`](RcuOptionCell::replace) or [`update`](RcuOptionCell::update)
/// it, or [`compare_exchange`](RcuOptionCell::compare_exchange) by identity.
/// Old values are retired or handed back exactly as with `RcuCell`, and the
/// same notes on threads and the memory bound apply.
///
/// ```
/// use rcu_offload::{Rcu, RcuOptionCell};
///
/// let rcu = Rcu::new();
/// let leader: RcuOptionCell<String> = RcuOptionCell::new(&rcu);
/// assert!(leader.load(&rcu.read()).is_none());
/// leader.store(String::from("node-3"));
/// assert_eq!(leader.load(&rcu.read()).map(String::as_str), Some("node-3"));
/// let old = leader.take().unwrap(); // the cell is empty again
/// assert_eq!(old.into_inner(), "node-3");
/// ```
pub struct RcuOptionCell<T: ?Sized + Send + Sync + 'static> {
    raw: RawCell<T>,
}

/// A heap form, or null for `None`.
fn thin_or_null<T: ?Sized, U: Into<Box<T>>>(value: Option<U>) -> *mut u8 {
    value.map_or(ptr::null_mut(), |v| into_thin(v.into()))
}

impl<T: ?Sized + Send + Sync + 'static> RcuOptionCell<T> {
    /// An empty cell bound to `rcu`'s domain.
    pub fn new(rcu: &Rcu) -> Self {
        RcuOptionCell {
            raw: RawCell::new(rcu, ptr::null_mut()),
        }
    }

    /// A cell holding `value` (anything that converts into `Box<T>`).
    pub fn with_value(rcu: &Rcu, value: impl Into<Box<T>>) -> Self {
        RcuOptionCell {
            raw: RawCell::new(rcu, into_thin(value.into())),
        }
    }

    /// The current value, if any, valid for as long as `guard`'s section.
    ///
    /// # Panics
    ///
    /// If `guard` belongs to another domain than the cell's.
    #[inline]
    pub fn load<'g>(&'g self, guard: &'g ReadGuard<'_>) -> Option<&'g T> {
        let p = self.raw.load(guard, "RcuOptionCell::load");
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` is the published heap form, freed only after a grace
        // period counted from its unpublishing (raw.rs); `guard` is a live
        // section of the cell's domain (checked) that began before such a
        // grace period could end; the reference cannot outlive `guard`.
        Some(unsafe { thin_ref::<T>(p) })
    }

    /// Publish `value`; the old value, if any, is dropped on a callback
    /// worker after a grace period (blocking an ordinary thread only above
    /// the memory bound, as [`Rcu::call`] does).
    ///
    /// # Panics
    ///
    /// If called from inside [`update`](RcuOptionCell::update)'s closure on
    /// the same cell.
    pub fn store(&self, value: impl Into<Box<T>>) {
        let old = self
            .raw
            .exchange(into_thin(value.into()), "RcuOptionCell::store");
        // SAFETY: `old` left the cell in the swap just above, under the
        // writer lock, and is ours alone.
        unsafe { self.raw.retire(old) };
    }

    /// Publish `value` and return the old value, if any, as an
    /// [`Unpublished`].
    ///
    /// # Panics
    ///
    /// As [`store`](RcuOptionCell::store).
    pub fn replace(&self, value: impl Into<Box<T>>) -> Option<Unpublished<T>> {
        let old = self
            .raw
            .exchange(into_thin(value.into()), "RcuOptionCell::replace");
        // SAFETY: `old` left the cell in the swap just above, under the
        // writer lock, and is ours alone.
        unsafe { self.raw.hand_back(old) }
    }

    /// Empty the cell and return the old value, if any, as an
    /// [`Unpublished`] (drop it to retire the value).
    ///
    /// # Panics
    ///
    /// As [`store`](RcuOptionCell::store).
    pub fn take(&self) -> Option<Unpublished<T>> {
        let old = self.raw.exchange(ptr::null_mut(), "RcuOptionCell::take");
        // SAFETY: `old` left the cell in the swap just above, under the
        // writer lock, and is ours alone.
        unsafe { self.raw.hand_back(old) }
    }

    /// Publish `f(current)` (`None` empties the cell); the old value, if
    /// any, is retired. A closure that only ever returns `None` must name
    /// the type: `cell.update(|_| None::<T>)`. Writers are serialized, as for
    /// [`RcuCell::update`](crate::RcuCell::update), whose notes on the
    /// closure apply.
    ///
    /// # Panics
    ///
    /// If `f` panics (the cell is left unchanged), or if `f` writes this cell.
    pub fn update<U: Into<Box<T>>>(&self, f: impl FnOnce(Option<&T>) -> Option<U>) {
        let result: Result<_, std::convert::Infallible> =
            self.raw.modify("RcuOptionCell::update", |cur| {
                Ok((thin_or_null(f(Self::current(cur))), ()))
            });
        let Ok((old, ())) = result;
        // SAFETY: `old` left the cell in the swap just above, under the
        // writer lock, and is ours alone.
        unsafe { self.raw.retire(old) };
    }

    /// A fallible [`update`](RcuOptionCell::update): `f(current)` returns the
    /// new value (or `None`), or an error to leave the cell unchanged. On
    /// success returns the old value, if any, as an [`Unpublished`].
    ///
    /// # Panics
    ///
    /// As [`update`](RcuOptionCell::update).
    pub fn try_update<U: Into<Box<T>>, E>(
        &self,
        f: impl FnOnce(Option<&T>) -> Result<Option<U>, E>,
    ) -> Result<Option<Unpublished<T>>, E> {
        let (old, ()) = self.raw.modify("RcuOptionCell::try_update", |cur| {
            Ok((thin_or_null(f(Self::current(cur))?), ()))
        })?;
        // SAFETY: `old` left the cell in the swap just above, under the
        // writer lock, and is ours alone.
        Ok(unsafe { self.raw.hand_back(old) })
    }

    /// Publish `new` (`None` empties the cell) if the cell still holds
    /// `current` (by identity; `None`: if it is empty). On success returns
    /// the old value, if any; on failure, what the cell holds (valid for
    /// `guard`) and `new`, boxed. Zero-sized values all share one address.
    ///
    /// ```
    /// let rcu = rcu_offload::Rcu::new();
    /// let slot = rcu_offload::RcuOptionCell::<u32>::new(&rcu);
    /// let g = rcu.read();
    /// // Fill the slot only if it is still empty.
    /// assert!(slot.compare_exchange(None, Some(5), &g).is_ok());
    /// assert!(slot.compare_exchange(None, Some(6), &g).is_err());
    /// ```
    ///
    /// # Panics
    ///
    /// If `guard` belongs to another domain, or if called from inside
    /// [`update`](RcuOptionCell::update)'s closure on the same cell.
    #[allow(clippy::type_complexity)]
    pub fn compare_exchange<'g, U: Into<Box<T>>>(
        &'g self,
        current: Option<&T>,
        new: Option<U>,
        guard: &'g ReadGuard<'_>,
    ) -> Result<Option<Unpublished<T>>, CompareExchangeError<Option<&'g T>, Option<Box<T>>>> {
        self.raw.load(guard, "RcuOptionCell::compare_exchange");
        let new = thin_or_null(new);
        let addr = current.map(|c| (c as *const T).cast::<u8>());
        match self.raw.compare_exchange(addr, new) {
            // SAFETY: `old` left the cell in this exchange, under the
            // writer lock, and is ours alone.
            Ok(old) => Ok(unsafe { self.raw.hand_back(old) }),
            Err(cur) => Err(CompareExchangeError {
                // SAFETY: `cur`, if non-null, was published when read, and
                // `guard` (a live section of the cell's domain, checked
                // above) began before it could be unpublished.
                current: (!cur.is_null()).then(|| unsafe { thin_ref::<T>(cur) }),
                // SAFETY: `new`, if non-null, came from `into_thin::<T>`
                // just above and was never published.
                new: (!new.is_null()).then(|| unsafe { from_thin::<T>(new) }),
            }),
        }
    }

    /// The value, if any, mutably (no reader can borrow a cell held by
    /// `&mut`).
    pub fn get_mut(&mut self) -> Option<&mut T> {
        let p = self.raw.get_mut();
        // SAFETY: the published form, if non-null; `&mut self` excludes
        // readers and writers.
        (!p.is_null()).then(|| unsafe { thin_mut::<T>(p) })
    }

    /// The value in its `Box`, if any, taking the cell apart.
    #[must_use]
    pub fn into_box(mut self) -> Option<Box<T>> {
        let p = self.raw.take_mut();
        // SAFETY: the published form, if non-null, now ours alone (the cell
        // is consumed and holds null).
        (!p.is_null()).then(|| unsafe { from_thin::<T>(p) })
    }

    /// The domain the cell belongs to.
    #[must_use]
    pub fn domain(&self) -> &Rcu {
        &self.raw.rcu
    }

    /// The value at `cur` for a writer holding the lock.
    fn current<'a>(cur: *mut u8) -> Option<&'a T> {
        // SAFETY: `cur`, if non-null, is the published form read under the
        // writer lock; only serialized writers unpublish, so it stays live
        // while the closure holding this reference runs.
        (!cur.is_null()).then(|| unsafe { thin_ref::<T>(cur) })
    }
}

impl<T: Send + Sync + 'static> RcuOptionCell<T> {
    /// The value, if any, taking the cell apart.
    #[must_use]
    pub fn into_inner(self) -> Option<T> {
        self.into_box().map(|b| *b)
    }
}

impl<T: ?Sized + Send + Sync + 'static> Drop for RcuOptionCell<T> {
    fn drop(&mut self) {
        let p = self.raw.take_mut();
        // SAFETY: `p` left the cell by `take_mut` (the cell is going away)
        // and is ours; readers may still hold it, hence the retiring.
        unsafe { self.raw.retire(p) };
    }
}

impl<T: ?Sized + Send + Sync + 'static + fmt::Debug> fmt::Debug for RcuOptionCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.raw.rcu.read();
        f.debug_struct("RcuOptionCell")
            .field("value", &self.load(&g))
            .finish()
    }
}

crate::sync::cfg_real! {
    /// An empty cell in the [`global`](crate::global) domain.
    impl<T: ?Sized + Send + Sync + 'static> Default for RcuOptionCell<T> {
        fn default() -> Self {
            RcuOptionCell::new(crate::domain::global())
        }
    }

    /// A cell holding `value` in the [`global`](crate::global) domain.
    impl<T: Send + Sync + 'static> From<T> for RcuOptionCell<T> {
        fn from(value: T) -> Self {
            RcuOptionCell::with_value(crate::domain::global(), value)
        }
    }
}
