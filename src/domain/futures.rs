//! The async waits: [`Rcu::synchronize_async`],
//! [`Rcu::cond_synchronize_async`] and [`Rcu::barrier_async`], and their
//! futures: [`GracePeriod`] (from
//! [`Rcu::synchronize_async`] and [`Rcu::cond_synchronize_async`]) and
//! [`Barrier`] (from [`Rcu::barrier_async`]).
//!
//! Each holds a handle of its domain (so it is `Send + 'static` and keeps
//! the domain alive) and the state of one wait; none blocks, spins or
//! arms a timer. A grace-period future is woken by the thread that ends
//! its grace period (wait.rs, through `GpState::poll_wait`), a barrier
//! future by the callback worker that runs the last of its internal
//! callbacks (nocb/barrier.rs, `BarrierWait`). Dropping either before it
//! completes removes its waker: nothing is leaked and no other waiter's
//! wake is lost or redirected; a dropped barrier's internal callbacks still
//! run, in their place in each shard's order.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::nocb::BarrierWait;
use crate::wait::WaitKey;

use super::{GpCookie, Rcu};

impl Rcu {
    /// [`synchronize`](Rcu::synchronize) for async code: the returned future
    /// completes once a full grace period that began after this call has
    /// elapsed, and orders the section accesses it waited for before
    /// whatever follows the `.await`. It never blocks the thread that polls
    /// it.
    ///
    /// The grace period is requested at once from the domain's engine
    /// thread (`{prefix}rcu_gp`, started on first use), which runs it;
    /// whoever ends it (that thread, or a concurrent `synchronize()`
    /// caller) wakes the task. Concurrent waiters, blocking or async, share
    /// grace periods. The future holds a handle of the domain, so it is
    /// `Send + 'static` (it can be `tokio::spawn`ed) and keeps the domain
    /// alive; dropping it before it completes leaves nothing behind. If it
    /// holds the domain's last handle, dropping it shuts the domain down on
    /// that thread, as dropping any last handle does (blocking until the
    /// pending callbacks have run): keep a handle elsewhere, outside the
    /// runtime's tasks, if that must not happen on a runtime thread.
    ///
    /// Unlike the blocking form, it may be made anywhere, even inside a
    /// read-side section or a callback of the domain. But a task that holds
    /// a [`ReadGuard`](crate::ReadGuard) of the domain across the `.await` waits for ever: the
    /// grace period waits for that guard's section. (`ReadGuard` is not
    /// `Send`, so a guard can be held across an `.await` only in a task
    /// that stays on one thread, such as `tokio::task::spawn_local`; there,
    /// any guard held across an `.await` delays every grace period of the
    /// domain, and so every callback, for as long as the task is
    /// suspended.)
    ///
    /// # Panics
    ///
    /// If the engine thread must be started and the operating system
    /// refuses to create a thread.
    ///
    /// ```
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     use std::task::{Context, Poll, Wake, Waker};
    /// #     struct T(std::thread::Thread);
    /// #     impl Wake for T { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
    /// #     let w = Waker::from(std::sync::Arc::new(T(std::thread::current())));
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&w)) { return v; }
    /// #         std::thread::park();
    /// #     }
    /// # }
    /// use rcu_offload::{Rcu, RcuCell};
    ///
    /// let rcu = Rcu::new();
    /// let table = RcuCell::new(&rcu, vec![1, 2, 3]);
    /// # block_on(async {
    /// // In an async fn: publish, then wait until no reader can still see
    /// // the old version, without blocking the runtime's thread.
    /// table.store(vec![1, 2, 3, 4]);
    /// rcu.synchronize_async().await;
    /// // Every reader now sees the new table.
    /// # });
    /// ```
    pub fn synchronize_async(&self) -> GracePeriod {
        let cookie = self.start_poll();
        GracePeriod::new(self.clone(), cookie.seq)
    }

    /// [`cond_synchronize`](Rcu::cond_synchronize) for async code: the
    /// returned future completes once a full grace period has elapsed
    /// since `cookie` was taken (at once if one already has), requesting
    /// it from the engine thread if it has not. Same guarantees, threads
    /// and caveats as [`synchronize_async`](Rcu::synchronize_async).
    ///
    /// # Panics
    ///
    /// If `cookie` came from another domain, or if the engine thread must
    /// be started and the operating system refuses to create a thread.
    pub fn cond_synchronize_async(&self, cookie: GpCookie) -> GracePeriod {
        self.request_grace_period(cookie);
        GracePeriod::new(self.clone(), cookie.seq)
    }

    /// [`barrier`](Rcu::barrier) for async code: the returned future
    /// completes once every callback queued (on any thread) before this call
    /// has run. It never blocks the thread that polls it.
    ///
    /// Making it does the barrier's non-waiting work at once, on the
    /// calling thread: it takes the callbacks staged in threads' buffers,
    /// flushes each shard's bypass list and queues one internal callback
    /// behind each shard's last callback (short locks, as `call()` takes).
    /// The callback worker that runs the last of those wakes the task. It
    /// shares no work with concurrent barriers. Dropping the future before
    /// it completes leaves nothing behind: its internal callbacks still run
    /// and wake nobody. The future holds a handle of the domain, so it is
    /// `Send + 'static` and keeps the domain alive.
    ///
    /// It may be made inside a read-side section or a callback of the
    /// domain, but awaiting it there cannot complete: the callbacks it waits
    /// for wait for a grace period that waits for that section, or run on
    /// the worker that would be waiting.
    ///
    /// # Panics
    ///
    /// If a shard's workers must be started (for a bypass flush) and the
    /// operating system refuses to create a thread.
    ///
    /// ```
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     use std::task::{Context, Poll, Wake, Waker};
    /// #     struct T(std::thread::Thread);
    /// #     impl Wake for T { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
    /// #     let w = Waker::from(std::sync::Arc::new(T(std::thread::current())));
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&w)) { return v; }
    /// #         std::thread::park();
    /// #     }
    /// # }
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    ///
    /// let rcu = rcu_offload::Rcu::new();
    /// let flushed = Arc::new(AtomicBool::new(false));
    /// let f = Arc::clone(&flushed);
    /// rcu.call(move || f.store(true, Ordering::Relaxed));
    /// # block_on(async {
    /// rcu.barrier_async().await;
    /// assert!(flushed.load(Ordering::Relaxed));
    /// # });
    /// ```
    pub fn barrier_async(&self) -> Barrier {
        let wait = self.with_env(|env| self.core.nocb.barrier_async(env));
        Barrier::new(self.clone(), wait)
    }
}

/// A grace period to await: returned by [`Rcu::synchronize_async`] and
/// [`Rcu::cond_synchronize_async`].
///
/// It completes once a full grace period has elapsed since the cookie it
/// was made from was taken; the grace period was requested from the
/// domain's engine thread when the future was made, so it runs whether or
/// not the future is polled. Polling never blocks, also inside a read-side
/// section: such a poll just returns `Pending` until the grace period,
/// which waits for that section, ends.
#[must_use = "futures do nothing unless awaited"]
pub struct GracePeriod {
    rcu: Rcu,
    target: u64,
    key: Option<WaitKey>,
}

impl GracePeriod {
    fn new(rcu: Rcu, target: u64) -> GracePeriod {
        GracePeriod {
            rcu,
            target,
            key: None,
        }
    }
}

impl Future for GracePeriod {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this
            .rcu
            .core()
            .gp
            .poll_wait(this.target, &mut this.key, cx.waker())
        {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for GracePeriod {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.rcu.core().gp.cancel_wait(key);
        }
    }
}

impl fmt::Debug for GracePeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GracePeriod")
            .field("done", &self.rcu.core().gp.is_done(self.target))
            .finish_non_exhaustive()
    }
}

/// A barrier to await: returned by [`Rcu::barrier_async`]. It completes once
/// every callback queued before it was made has run.
#[must_use = "futures do nothing unless awaited"]
pub struct Barrier {
    // Declared first so it is dropped first: the wait's state goes before
    // the domain handle that may be the last one.
    wait: BarrierWait,
    _rcu: Rcu,
}

impl Barrier {
    fn new(rcu: Rcu, wait: BarrierWait) -> Barrier {
        Barrier { wait, _rcu: rcu }
    }
}

impl Future for Barrier {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.wait.poll(cx.waker()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Barrier {
    fn drop(&mut self) {
        self.wait.forget_waker();
    }
}

// Like `Rcu` (see its impls): the state behind the future's lock never
// runs user code under it, and the lock does not poison, so a panic caught
// around a poll leaves it consistent.
impl std::panic::UnwindSafe for Barrier {}
impl std::panic::RefUnwindSafe for Barrier {}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier").finish_non_exhaustive()
    }
}
