//! [`Unpublished`]: a value taken out of a cell, which readers may still
//! be reading.
//!
//! # Invariant
//!
//! The handle owns the value from the moment it was unpublished (swapped
//! out under the cell's writer lock) and hands out only shared references
//! until a grace period that began after that moment has ended: its
//! `cookie` is taken *after* the swap, so the grace period it names waits
//! for every section that could have loaded the value. Only then does it
//! give the value back by value ([`Unpublished::into_box`] and friends).
//! Dropped earlier, it retires the value through [`Rcu::call`], as a
//! cell's `store` does.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr;

use crate::domain::{GpCookie, Rcu};

use super::raw::{from_thin, retire_thin, thin_ref, RawCell};

/// A value taken out of an [`RcuCell`](crate::RcuCell) or
/// [`RcuOptionCell`](crate::RcuOptionCell) (by `replace`, `take`,
/// `try_update` or `compare_exchange`), which readers that loaded it
/// before it was unpublished may still be reading.
///
/// * Read it at any time: it dereferences to `&T` (readers only ever share
///   it, so sharing it once more is sound).
/// * Take it back by value once no reader can hold it:
///   [`into_inner`](Unpublished::into_inner) /
///   [`into_box`](Unpublished::into_box) wait for a grace period (blocking,
///   like [`Rcu::cond_synchronize`]);
///   [`try_into_box`](Unpublished::try_into_box) only checks;
///   [`into_inner_async`](Unpublished::into_inner_async) and
///   [`into_box_async`](Unpublished::into_box_async) await it.
/// * Or drop it: the value is then dropped on a callback worker after a
///   grace period, exactly as if the cell's `store` had replaced it (and,
///   like any [`Rcu::call`], the drop blocks an ordinary thread above the
///   domain's memory bound).
///
/// The grace period is counted from when the value was unpublished:
/// [`cookie`](Unpublished::cookie) was taken right after the swap.
///
/// ```
/// use rcu_offload::{Rcu, RcuCell};
///
/// let rcu = Rcu::new();
/// let cell = RcuCell::new(&rcu, String::from("old"));
/// let old = cell.replace(String::from("new"));
/// assert_eq!(&*old, "old"); // readable at once
/// let owned: String = old.into_inner(); // after a grace period
/// assert_eq!(owned, "old");
/// ```
pub struct Unpublished<T: ?Sized + Send + Sync + 'static> {
    /// The value's heap form (cell/raw.rs); null once given back.
    ptr: *mut u8,
    cookie: GpCookie,
    rcu: Rcu,
    _owns: PhantomData<Box<T>>,
}

// SAFETY: the handle owns a `T` (`Send`) that other threads may be reading
// through shared references (`Sync`), and gives it back only after they
// are done; moving the handle moves that ownership.
unsafe impl<T: ?Sized + Send + Sync + 'static> Send for Unpublished<T> {}
// SAFETY: `&Unpublished<T>` hands out only `&T`, and `T: Sync`.
unsafe impl<T: ?Sized + Send + Sync + 'static> Sync for Unpublished<T> {}

impl<T: ?Sized + Send + Sync + 'static> RawCell<T> {
    /// `old`, a heap form that just left this cell, as a handle (`None` if
    /// null). The handle's cookie is taken now, after the unpublishing.
    ///
    /// # Safety
    ///
    /// As [`RawCell::retire`]: `old` is null, or came from `into_thin::<T>`,
    /// left this cell before the call, and is owned by the caller, who
    /// gives it up.
    pub(super) unsafe fn hand_back(&self, old: *mut u8) -> Option<Unpublished<T>> {
        // SAFETY: non-null, from `into_thin::<T>`, unpublished before this
        // call and ours to give (the caller's contract).
        (!old.is_null()).then(|| unsafe { Unpublished::new(&self.rcu, old) })
    }
}

impl<T: ?Sized + Send + Sync + 'static> Unpublished<T> {
    /// Own `ptr`, a heap form just swapped out of a cell of `rcu`'s domain.
    ///
    /// # Safety
    ///
    /// `ptr` came from `into_thin::<T>`, is non-null, was unpublished
    /// before this call, and is owned by the caller, who gives it up.
    pub(super) unsafe fn new(rcu: &Rcu, ptr: *mut u8) -> Self {
        Unpublished {
            ptr,
            // Taken after the swap: see the module docs.
            cookie: rcu.snapshot(),
            rcu: rcu.clone(),
            _owns: PhantomData,
        }
    }

    /// The cookie of the grace period after which no reader can hold the
    /// value ([`Rcu::poll`] tells whether it has elapsed).
    #[must_use]
    pub fn cookie(&self) -> GpCookie {
        self.cookie
    }

    /// The domain whose grace period frees the value.
    #[must_use]
    pub fn domain(&self) -> &Rcu {
        &self.rcu
    }

    /// The value in its `Box`, after waiting (on this thread, as
    /// [`Rcu::cond_synchronize`] does) for the grace period.
    ///
    /// # Panics
    ///
    /// If called inside a read-side section or a callback of the domain
    /// (it would wait for itself; see [`Rcu::synchronize`]).
    #[must_use]
    pub fn into_box(mut self) -> Box<T> {
        self.rcu.cond_synchronize(self.cookie);
        self.give_back()
    }

    /// The value in its `Box` if the grace period has elapsed, else the
    /// handle back. Never waits; when it returns the handle, it has made
    /// sure the grace period will run (the domain's engine thread runs it,
    /// as after [`Rcu::start_poll`]), so polling again later succeeds.
    ///
    /// # Panics
    ///
    /// If the engine thread must be started and the operating system
    /// refuses to create a thread.
    pub fn try_into_box(mut self) -> Result<Box<T>, Self> {
        if self.rcu.poll(self.cookie) {
            Ok(self.give_back())
        } else {
            self.rcu.request_grace_period(self.cookie);
            Err(self)
        }
    }

    /// The value in its `Box`, once the grace period has elapsed, without
    /// blocking: awaits [`Rcu::cond_synchronize_async`].
    pub async fn into_box_async(mut self) -> Box<T> {
        self.rcu.cond_synchronize_async(self.cookie).await;
        self.give_back()
    }

    /// The grace period has elapsed: nobody else can reach the value.
    fn give_back(&mut self) -> Box<T> {
        let p = std::mem::replace(&mut self.ptr, ptr::null_mut());
        assert!(
            !p.is_null(),
            "rcu_offload: Unpublished value given back twice"
        );
        // SAFETY: `p` came from `into_thin::<T>` and is owned by this handle
        // (`new`'s contract); the grace period named by `cookie`, taken
        // after the value was unpublished, has elapsed (every caller
        // checked), so no reader can hold it, and it is given back once
        // (`ptr` is now null).
        unsafe { from_thin::<T>(p) }
    }
}

impl<T: Send + Sync + 'static> Unpublished<T> {
    /// The value, after waiting (on this thread) for the grace period; see
    /// [`into_box`](Unpublished::into_box).
    ///
    /// # Panics
    ///
    /// If called inside a read-side section or a callback of the domain.
    #[must_use]
    pub fn into_inner(self) -> T {
        *self.into_box()
    }

    /// The value, once the grace period has elapsed, without blocking.
    pub async fn into_inner_async(self) -> T {
        *self.into_box_async().await
    }
}

impl<T: ?Sized + Send + Sync + 'static> Deref for Unpublished<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: `ptr` is non-null while the handle is usable (it is
        // nulled only by `give_back`, which consumes the handle's use), it
        // came from `into_thin::<T>`, and the value is freed only by this
        // handle, after `&self` ends; others only share it.
        unsafe { thin_ref::<T>(self.ptr) }
    }
}

impl<T: ?Sized + Send + Sync + 'static> Drop for Unpublished<T> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: owned by this handle and unpublished (`new`'s
            // contract); given up here.
            unsafe { retire_thin::<T>(&self.rcu, self.ptr) };
        }
    }
}

impl<T: ?Sized + Send + Sync + 'static + fmt::Debug> fmt::Debug for Unpublished<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unpublished")
            .field("value", &&**self)
            .field("cookie", &self.cookie)
            .finish()
    }
}
