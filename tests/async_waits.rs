//! The async waits (`Rcu::synchronize_async`, `Rcu::cond_synchronize_async`,
//! `Rcu::barrier_async`, `Unpublished::into_inner_async`) on tokio's
//! multi-thread and current-thread runtimes.
//!
//! Every grace-period check here is logical, not timed: a reader thread
//! holds a read-side section open until the test releases it, and sets a
//! flag inside its section right before leaving it; a wait made while that
//! section is open must not complete before the flag is set, so every task
//! asserts the flag after its `.await`. Futures that must still be pending
//! are so because that reader cannot have left. No assertion depends on
//! how long anything takes: the durations are liveness bounds
//! ([`LIVENESS`], which turn a lost wake-up or a hang into a failure),
//! zero timeouts (to poll a future once), and one short pause that gives a
//! premature completion a chance to show.
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use common::within;
use rcu_offload::{Rcu, RcuCell, ReadGuard};
use tokio::sync::Semaphore;

/// How long a wait that must complete may take before the test declares it
/// hung. A liveness bound, not a performance expectation: every wait here
/// normally completes within milliseconds.
const LIVENESS: Duration = Duration::from_secs(60);

/// Waiters per many-waiters test.
const WAITERS: usize = 5_000;

/// Await `f`, failing the test if it has not completed within [`LIVENESS`].
///
/// Unlike `tokio::time::timeout`, which polls the inner future once more
/// when the deadline fires (and so would let a future that completed
/// without waking its task pass, late), the deadline is checked first: a
/// lost wake-up fails the test.
async fn live<F: Future>(what: &str, f: F) -> F::Output {
    let deadline = tokio::time::sleep(LIVENESS);
    let mut deadline = std::pin::pin!(deadline);
    let mut f = std::pin::pin!(f);
    tokio::select! {
        biased;
        () = &mut deadline => {
            panic!("liveness bound exceeded: {what} did not complete within {LIVENESS:?}")
        }
        v = &mut f => v,
    }
}

/// Poll `f` once with `waker`.
fn poll_once<F: Future + ?Sized>(f: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(waker))
}

/// Poll `f` once with the current task's waker.
async fn poll_here<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
}

/// A waker that counts its wakes and reports each on a channel.
struct TestWaker {
    wakes: AtomicUsize,
    tx: mpsc::Sender<()>,
}

impl Wake for TestWaker {
    fn wake(self: Arc<Self>) {
        // Give the waker back before reporting, so that a test that
        // received the report sees the waker's reference released.
        self.wakes.fetch_add(1, Ordering::SeqCst);
        let tx = self.tx.clone();
        drop(self);
        let _ = tx.send(());
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        let _ = self.tx.send(());
    }
}

/// Wait until only the test's own two references to `w` are left (the
/// `Arc` and one `Waker`): nobody kept a clone of the waker. A completer
/// thread may still be dropping the clone it just woke, so this waits (up
/// to [`LIVENESS`]) rather than reads once.
fn assert_waker_released(w: &Arc<TestWaker>, what: &str) {
    let start = std::time::Instant::now();
    while Arc::strong_count(w) != 2 {
        assert!(
            start.elapsed() < LIVENESS,
            "{what}: {} references to a waker that only the test should hold",
            Arc::strong_count(w)
        );
        thread::yield_now();
    }
}

/// A [`TestWaker`] (kept to read its count and its `Arc` count), a `Waker`
/// made from it, and the receiving end of its wake reports.
fn test_waker() -> (Arc<TestWaker>, Waker, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let w = Arc::new(TestWaker {
        wakes: AtomicUsize::new(0),
        tx,
    });
    let waker = Waker::from(Arc::clone(&w));
    (w, waker, rx)
}

/// Receive one wake report, failing the test instead of hanging.
fn recv_wake(rx: &mpsc::Receiver<()>, what: &str) {
    if let Err(e) = rx.recv_timeout(LIVENESS) {
        panic!("{what} was not woken within {LIVENESS:?}: {e:?}");
    }
}

/// Drop the last handle of a domain (which runs its pending callbacks and
/// joins its threads), failing the test if that hangs.
fn drop_domain(rcu: Rcu) {
    within("dropping the domain", move || drop(rcu));
}

/// A thread inside a read-side section of a domain until released.
///
/// The thread enters a section, runs `body(&guard, wait)` (where `wait`
/// reports that it is inside and blocks until [`release`](Self::release)),
/// then sets [`released`](Self::released) *inside* the section, right
/// before it drops the guard. A grace period that had to wait for this
/// section therefore ends after the flag is set, and whoever observes that
/// grace period's end also observes the flag.
///
/// If the test does not release it within [`LIVENESS`] (say, a poll that
/// should have returned `Pending` blocked the test's thread waiting for
/// this very section), the reader leaves anyway, so that the test unblocks,
/// and [`release`](Self::release) then fails the test.
struct HeldReader {
    released: Arc<AtomicBool>,
    gave_up: Arc<AtomicBool>,
    release: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl HeldReader {
    /// A reader that only holds its section.
    fn start(rcu: &Rcu) -> HeldReader {
        HeldReader::spawn(rcu, |_, wait| wait())
    }

    /// Start the thread and return once `body` has called `wait`, that is
    /// once the thread is inside its section.
    fn spawn<F>(rcu: &Rcu, body: F) -> HeldReader
    where
        F: FnOnce(&ReadGuard<'_>, &dyn Fn()) + Send + 'static,
    {
        let rcu = rcu.clone();
        let released = Arc::new(AtomicBool::new(false));
        let gave_up = Arc::new(AtomicBool::new(false));
        let (inside_tx, inside_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let flag = Arc::clone(&released);
        let timed_out = Arc::clone(&gave_up);
        let thread = thread::Builder::new()
            .name("held-reader".into())
            .spawn(move || {
                let guard = rcu.read();
                let wait = || {
                    inside_tx.send(()).expect("the test waits for the reader");
                    // The test releases the reader by dropping its sender.
                    if let Err(mpsc::RecvTimeoutError::Timeout) = release_rx.recv_timeout(LIVENESS)
                    {
                        eprintln!(
                            "held-reader: not released within {LIVENESS:?}; leaving the \
                             section so that the blocked test can fail"
                        );
                        timed_out.store(true, Ordering::SeqCst);
                    }
                };
                body(&guard, &wait);
                flag.store(true, Ordering::SeqCst);
                drop(guard);
            })
            .expect("spawn the reader thread");
        inside_rx
            .recv_timeout(LIVENESS)
            .expect("the reader thread never entered its section");
        HeldReader {
            released,
            gave_up,
            release: Some(release_tx),
            thread: Some(thread),
        }
    }

    /// The flag the reader sets inside its section right before leaving it.
    fn released(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.released)
    }

    /// Let the reader leave its section, and join it.
    fn release(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let joined = t.join();
            if thread::panicking() {
                return;
            }
            assert!(joined.is_ok(), "the reader thread panicked");
            assert!(
                !self.gave_up.load(Ordering::SeqCst),
                "liveness bound exceeded: the reader was not released within {LIVENESS:?} \
                 (did a poll block the test's thread?)"
            );
        }
    }
}

impl Drop for HeldReader {
    /// A failing test still releases its reader, so that the domain's drop
    /// (which waits for a grace period) does not hang the unwinding.
    fn drop(&mut self) {
        self.release();
    }
}

fn assert_send_static<T: Send + 'static>(_: &T) {}

fn assert_unpin<T: Unpin>(_: &T) {}

// ---------------------------------------------------------------------------
// Many waiters: all complete, none before the reader leaves, and they share
// grace periods.
// ---------------------------------------------------------------------------

/// `WAITERS` spawned tasks each make a grace-period future (a third each
/// of `synchronize_async()`, `cond_synchronize_async(snapshot())` and
/// `cond_synchronize_async(start_poll())`) while a reader thread is inside
/// a section, and await it.
async fn many_waiters() {
    let rcu = Rcu::new();
    let mut reader = HeldReader::start(&rcu);
    let base = rcu.completed_grace_periods();
    let released = reader.released();
    let created = Arc::new(Semaphore::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..WAITERS)
        .map(|i| {
            let rcu = rcu.clone();
            let released = Arc::clone(&released);
            let created = Arc::clone(&created);
            let finished = Arc::clone(&finished);
            tokio::spawn(async move {
                let gp = match i % 3 {
                    0 => rcu.synchronize_async(),
                    1 => rcu.cond_synchronize_async(rcu.snapshot()),
                    _ => rcu.cond_synchronize_async(rcu.start_poll()),
                };
                created.add_permits(1);
                gp.await;
                finished.fetch_add(1, Ordering::SeqCst);
                // Set inside the reader's section before it left: a grace
                // period that began while it was inside ends after that.
                released.load(Ordering::SeqCst)
            })
        })
        .collect();
    // Every future has been made while the reader is inside.
    let all = u32::try_from(WAITERS).expect("WAITERS fits in u32");
    live("the waiters' creation", created.acquire_many(all))
        .await
        .expect("semaphore closed")
        .forget();
    // Give a premature completion a chance to show (the assertion holds
    // however long this takes): no waiter may finish, and at most the
    // grace period that was running when the reader entered, which need
    // not wait for it, may have ended.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "a grace-period future completed while a reader that predates it was inside"
    );
    let during = rcu.completed_grace_periods() - base;
    assert!(
        during <= 1,
        "{during} grace periods ended while a reader was inside its section"
    );
    reader.release();
    let mut saw_release = 0;
    for t in tasks {
        if live("a waiter task", t)
            .await
            .expect("waiter task panicked")
        {
            saw_release += 1;
        }
    }
    assert_eq!(
        saw_release, WAITERS,
        "some waiters completed without seeing the reader's release"
    );
    // Sharing. While the reader is inside, at most one grace period can end
    // (one already running when it entered, which need not wait for it);
    // the next one starts after the reader entered and is held back by it.
    // A future's target is the end of the first grace period that starts
    // after it was made: at the latest, the one right after the held-back
    // one. A waiter adds no grace period of its own: its request merges
    // into the engine's next one. So once the reader leaves, the held-back
    // grace period and at most one more serve all the waiters: at most 3
    // in all, however many waiters there are (and nothing else in this
    // domain runs grace periods). Asserted twice: loosely (far fewer grace
    // periods than waiters, the property that matters) and exactly (the
    // bound just derived).
    let used = rcu.completed_grace_periods() - base;
    assert!(
        used < (WAITERS / 2) as u64,
        "{used} grace periods for {WAITERS} waiters: waiters do not share grace periods"
    );
    assert!(
        used <= 3,
        "{used} grace periods for {WAITERS} waiters made during one reader's section \
         (at most 3 can be needed)"
    );
    drop_domain(rcu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_waiters_share_grace_periods_multi_thread() {
    many_waiters().await;
}

#[tokio::test]
async fn many_waiters_share_grace_periods_current_thread() {
    many_waiters().await;
}

// ---------------------------------------------------------------------------
// Dropped futures leave nothing behind.
// ---------------------------------------------------------------------------

const CALLBACKS: usize = 200;
const SURVIVORS: usize = 300;
const DROPPED: usize = 300;

/// While a reader holds every grace period back, some grace-period futures
/// are awaited by tasks and others are polled once (by a zero timeout, a
/// biased `select!` against a ready branch, or by hand) and dropped; two
/// barrier futures are polled once and dropped. Then: the awaited ones
/// complete, the dropped ones' wakers are released and never woken, the
/// dropped barriers' internal callbacks still run, a later barrier, the
/// blocking `barrier()` and `synchronize()`, and the domain's drop all
/// complete.
async fn dropped_waits() {
    let rcu = Rcu::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let mut reader = HeldReader::start(&rcu);
    // These wait for a grace period that waits for the reader.
    for _ in 0..CALLBACKS {
        let ran = Arc::clone(&ran);
        rcu.call(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        });
    }
    let survivors: Vec<_> = (0..SURVIVORS)
        .map(|_| {
            let gp = rcu.synchronize_async();
            let released = reader.released();
            tokio::spawn(async move {
                gp.await;
                released.load(Ordering::SeqCst)
            })
        })
        .collect();

    let (w, waker, _wakes) = test_waker();
    for i in 0..DROPPED {
        let mut gp = if i % 2 == 0 {
            rcu.synchronize_async()
        } else {
            rcu.cond_synchronize_async(rcu.snapshot())
        };
        match i % 3 {
            0 => assert!(
                tokio::time::timeout(Duration::ZERO, &mut gp).await.is_err(),
                "a grace period ended while a reader that predates it was inside"
            ),
            1 => tokio::select! {
                biased;
                () = &mut gp => panic!("a grace period ended while a reader that predates it was inside"),
                () = std::future::ready(()) => {}
            },
            _ => assert!(
                poll_once(Pin::new(&mut gp), &waker).is_pending(),
                "a grace period ended while a reader that predates it was inside"
            ),
        }
        drop(gp);
    }
    // Our two references: nobody kept a clone of a dropped future's waker.
    assert_eq!(
        Arc::strong_count(&w),
        2,
        "a dropped grace-period future left its waker behind"
    );

    // Barriers: the callbacks they wait for cannot have run (the reader
    // holds their grace period back), so they are pending.
    let mut barrier = rcu.barrier_async();
    assert!(poll_once(Pin::new(&mut barrier), &waker).is_pending());
    drop(barrier);
    assert_eq!(
        Arc::strong_count(&w),
        2,
        "a dropped barrier future left its waker behind"
    );
    assert!(
        tokio::time::timeout(Duration::ZERO, rcu.barrier_async())
            .await
            .is_err(),
        "a barrier completed before the callbacks it waits for could run"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);

    reader.release();
    for t in survivors {
        assert!(
            live("a surviving waiter", t)
                .await
                .expect("waiter task panicked"),
            "a waiter completed without seeing the reader's release"
        );
    }
    // A barrier made after the dropped ones completes, after every callback
    // queued before it, and after the dropped barriers' internal callbacks
    // (entrained ahead of its own in each shard's FIFO order).
    live("barrier_async after dropped barriers", rcu.barrier_async()).await;
    assert_eq!(ran.load(Ordering::SeqCst), CALLBACKS);
    let s = rcu.stats();
    let barrier_callbacks: u64 = s.shards.iter().map(|x| x.barrier_callbacks).sum();
    assert_eq!(s.queued(), CALLBACKS as u64, "{s:?}");
    // The two dropped barriers each entrained an internal callback behind
    // the pending callbacks (the last one may have found nothing pending).
    assert!(
        barrier_callbacks >= 2,
        "two barriers each entrained behind a pending callback: {s:?}"
    );
    assert_eq!(s.pending(), 0, "internal callbacks left pending: {s:?}");
    assert_eq!(
        s.invoked(),
        s.queued() + barrier_callbacks,
        "every callback, internal ones included, has run: {s:?}"
    );
    assert_eq!(
        w.wakes.load(Ordering::SeqCst),
        0,
        "a dropped future's waker was woken"
    );
    assert_eq!(Arc::strong_count(&w), 2);

    // The blocking forms still work, and so does the domain's drop, which
    // runs the callbacks still pending.
    let late = Arc::clone(&ran);
    rcu.call(move || {
        late.fetch_add(1, Ordering::SeqCst);
    });
    rcu.barrier();
    assert_eq!(ran.load(Ordering::SeqCst), CALLBACKS + 1);
    rcu.synchronize();
    let last = Arc::clone(&ran);
    rcu.call(move || {
        last.fetch_add(1, Ordering::SeqCst);
    });
    drop_domain(rcu);
    assert_eq!(ran.load(Ordering::SeqCst), CALLBACKS + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_futures_leave_nothing_behind_multi_thread() {
    dropped_waits().await;
}

#[tokio::test]
async fn dropped_futures_leave_nothing_behind_current_thread() {
    dropped_waits().await;
}

// ---------------------------------------------------------------------------
// barrier_async with callbacks that queue callbacks.
// ---------------------------------------------------------------------------

const OUTER: usize = 300;

async fn barrier_with_nested_callbacks() {
    let rcu = Rcu::new();
    let outer = Arc::new(AtomicUsize::new(0));
    let inner = Arc::new(AtomicUsize::new(0));
    let mut reader = HeldReader::start(&rcu);
    for _ in 0..OUTER {
        let r = rcu.clone();
        let outer = Arc::clone(&outer);
        let inner = Arc::clone(&inner);
        rcu.call(move || {
            outer.fetch_add(1, Ordering::SeqCst);
            r.call(move || {
                inner.fetch_add(1, Ordering::SeqCst);
            });
        });
    }
    // Pending for sure while the reader holds the callbacks' grace period
    // back; its wake then comes from the callback worker.
    let mut first = rcu.barrier_async();
    assert!(poll_here(&mut first).await.is_pending());
    assert_eq!(outer.load(Ordering::SeqCst), 0);
    reader.release();
    live("the first barrier", first).await;
    // Every callback queued before the barrier has run. Those they queued
    // may or may not have: the barrier need not wait for them.
    assert_eq!(outer.load(Ordering::SeqCst), OUTER);
    let early = inner.load(Ordering::SeqCst);
    assert!(
        early <= OUTER,
        "{early} inner callbacks ran for {OUTER} outer"
    );
    // They were all queued before this second barrier was made.
    live("the second barrier", rcu.barrier_async()).await;
    assert_eq!(inner.load(Ordering::SeqCst), OUTER);
    let s = rcu.stats();
    assert_eq!(s.queued(), 2 * OUTER as u64, "{s:?}");
    assert_eq!(s.panics, 0, "a callback panicked: {s:?}");
    drop_domain(rcu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_async_waits_for_earlier_callbacks_multi_thread() {
    barrier_with_nested_callbacks().await;
}

#[tokio::test]
async fn barrier_async_waits_for_earlier_callbacks_current_thread() {
    barrier_with_nested_callbacks().await;
}

// ---------------------------------------------------------------------------
// The futures are Send + 'static + Unpin, spawnable, and keep their domain
// alive.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn futures_are_send_static_and_keep_the_domain_alive() {
    let rcu = Rcu::new();
    let ran = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&ran);
    rcu.call(move || r.store(true, Ordering::SeqCst));
    let cell = RcuCell::new(&rcu, 5u64);
    let old = cell.replace(6);

    let gp = rcu.synchronize_async();
    let cond = rcu.cond_synchronize_async(rcu.snapshot());
    let barrier = rcu.barrier_async();
    let value = old.into_inner_async();
    assert_send_static(&gp);
    assert_send_static(&cond);
    assert_send_static(&barrier);
    assert_send_static(&value);
    assert_unpin(&gp);
    assert_unpin(&barrier);

    // Every other handle is gone: the futures alone keep the domain (and
    // its threads) alive until they complete.
    drop(cell);
    drop(rcu);
    let gp = tokio::spawn(gp);
    let cond = tokio::spawn(cond);
    let barrier = tokio::spawn(async move {
        barrier.await;
        ran.load(Ordering::SeqCst)
    });
    let value = tokio::spawn(value);
    live("synchronize_async", gp).await.expect("task");
    live("cond_synchronize_async", cond).await.expect("task");
    assert!(
        live("barrier_async", barrier).await.expect("task"),
        "barrier_async completed before a callback queued before it ran"
    );
    assert_eq!(live("into_inner_async", value).await.expect("task"), 5);
}

// ---------------------------------------------------------------------------
// Polling inside a read-side section of the same domain never blocks.
// ---------------------------------------------------------------------------

/// Run on a current-thread runtime of its own, on a helper thread: if a
/// poll blocked, it would block the runtime's only thread, where no async
/// timeout can fire, so the liveness bound is the helper's.
#[test]
fn polling_inside_a_read_section_returns_pending_current_thread() {
    within("polls inside a read-side section", || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(poll_inside_section());
    });
}

async fn poll_inside_section() {
    let rcu = Rcu::new();
    let ran = Arc::new(AtomicBool::new(false));
    let (mut gp, mut cond, mut barrier);
    {
        let guard = rcu.read();
        gp = rcu.synchronize_async();
        cond = rcu.cond_synchronize_async(rcu.start_poll());
        let r = Arc::clone(&ran);
        rcu.call(move || r.store(true, Ordering::SeqCst));
        barrier = rcu.barrier_async();
        // Each waits for a grace period that waits for this very section:
        // a poll must return at once, Pending.
        assert!(poll_here(&mut gp).await.is_pending());
        assert!(poll_here(&mut cond).await.is_pending());
        assert!(poll_here(&mut barrier).await.is_pending());
        {
            let _nested = rcu.read();
            assert!(poll_here(&mut gp).await.is_pending());
        }
        assert!(poll_here(&mut gp).await.is_pending());
        assert!(!ran.load(Ordering::SeqCst));
        drop(guard);
    }
    live("synchronize_async after the section", gp).await;
    live("cond_synchronize_async after the section", cond).await;
    live("barrier_async after the section", barrier).await;
    assert!(ran.load(Ordering::SeqCst));
    drop_domain(rcu);
}

// ---------------------------------------------------------------------------
// The waker of the latest poll is the one woken.
// ---------------------------------------------------------------------------

#[test]
fn waker_replaced_between_polls_wakes_the_latest() {
    let rcu = Rcu::new();
    let mut reader = HeldReader::start(&rcu);
    let (a, waker_a, _wakes_a) = test_waker();
    let (b, waker_b, wakes_b) = test_waker();
    let (c, waker_c, _wakes_c) = test_waker();
    let (d, waker_d, wakes_d) = test_waker();

    // Pending for sure: the reader holds both grace periods back (the
    // barrier's callback waits for one).
    let mut gp = rcu.synchronize_async();
    assert!(poll_once(Pin::new(&mut gp), &waker_a).is_pending());
    assert!(poll_once(Pin::new(&mut gp), &waker_b).is_pending());
    assert!(poll_once(Pin::new(&mut gp), &waker_b).is_pending());
    let ran = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&ran);
    rcu.call(move || r.store(true, Ordering::SeqCst));
    let mut barrier = rcu.barrier_async();
    assert!(poll_once(Pin::new(&mut barrier), &waker_c).is_pending());
    assert!(poll_once(Pin::new(&mut barrier), &waker_d).is_pending());

    let released = reader.released();
    reader.release();
    recv_wake(&wakes_b, "the grace period's latest waker");
    assert!(poll_once(Pin::new(&mut gp), &waker_b).is_ready());
    assert!(released.load(Ordering::SeqCst));
    recv_wake(&wakes_d, "the barrier's latest waker");
    assert!(poll_once(Pin::new(&mut barrier), &waker_d).is_ready());
    assert!(ran.load(Ordering::SeqCst));

    // Only the latest waker was woken (wait.rs: "the waker that is woken is
    // always the latest one registered"), once.
    assert_eq!(a.wakes.load(Ordering::SeqCst), 0, "replaced waker woken");
    assert_eq!(c.wakes.load(Ordering::SeqCst), 0, "replaced waker woken");
    assert_eq!(b.wakes.load(Ordering::SeqCst), 1);
    assert_eq!(d.wakes.load(Ordering::SeqCst), 1);
    drop(gp);
    drop(barrier);
    for w in [&a, &b, &c, &d] {
        assert_waker_released(w, "a waker clone was kept");
    }
    drop_domain(rcu);
}

// ---------------------------------------------------------------------------
// Unpublished::into_inner_async / into_box_async.
// ---------------------------------------------------------------------------

async fn into_inner_async_after_a_grace_period() {
    let rcu = Rcu::new();
    let cell = Arc::new(RcuCell::new(&rcu, String::from("v1")));
    let reader_saw_v1 = Arc::new(AtomicBool::new(false));
    // The reader loads "v1" and reads it again when released, after the
    // value has been unpublished: it must still be there.
    let mut reader = {
        let cell = Arc::clone(&cell);
        let saw = Arc::clone(&reader_saw_v1);
        HeldReader::spawn(&rcu, move |guard, wait| {
            let v = cell.load(guard);
            wait();
            saw.store(v == "v1", Ordering::SeqCst);
        })
    };
    let old = cell.replace(String::from("v2"));
    assert_eq!(*old, "v1");
    assert_eq!(cell.load(&rcu.read()), "v2");
    let cookie = old.cookie();
    assert!(
        !rcu.poll(cookie),
        "a reader that may hold the value is inside"
    );
    let old = old
        .try_into_box()
        .expect_err("try_into_box gave the value back while a reader may hold it");
    let released = reader.released();
    let task = tokio::spawn(async move {
        let v = old.into_inner_async().await;
        (v, released.load(Ordering::SeqCst))
    });
    reader.release();
    let (v, after_release) = live("into_inner_async", task).await.expect("task");
    assert_eq!(v, "v1");
    assert!(
        after_release,
        "into_inner_async returned before the reader that held the value left"
    );
    assert!(reader_saw_v1.load(Ordering::SeqCst));
    assert!(rcu.poll(cookie));

    // A value whose grace period has already elapsed comes back at the
    // first poll.
    let old = cell.replace(String::from("v3"));
    live("synchronize_async", rcu.synchronize_async()).await;
    let (w, waker, _wakes) = test_waker();
    let mut back = Box::pin(old.into_box_async());
    match poll_once(back.as_mut(), &waker) {
        Poll::Ready(b) => assert_eq!(*b, "v2"),
        Poll::Pending => panic!("into_box_async pending after its grace period"),
    }
    drop(back);
    assert_eq!(Arc::strong_count(&w), 2);
    // An old cookie: cond_synchronize_async completes at the first poll.
    let cookie = rcu.snapshot();
    rcu.synchronize();
    let mut gp = rcu.cond_synchronize_async(cookie);
    assert!(poll_once(Pin::new(&mut gp), &waker).is_ready());
    drop(gp);
    drop(cell);
    drop_domain(rcu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn into_inner_async_returns_the_old_value_after_a_grace_period_multi_thread() {
    into_inner_async_after_a_grace_period().await;
}

#[tokio::test]
async fn into_inner_async_returns_the_old_value_after_a_grace_period_current_thread() {
    into_inner_async_after_a_grace_period().await;
}

/// A task that owns its future: the only way to reach the future is
/// through a waker of the task, as in executors whose tasks are freed when
/// their last waker goes.
struct OwningTask<F>(std::sync::Mutex<Option<F>>);

impl<F: Send + 'static> Wake for OwningTask<F> {
    fn wake(self: Arc<Self>) {}
}

/// Make `fut` pending, hand it to a task that only its waker reaches, and
/// drop every other handle of the domain: the waker, dropped by the thread
/// that wakes it (the engine or a CB worker), then drops the last handle.
/// That thread must not run the domain's shutdown itself (it would wait for
/// itself): a lazy callback still pending must run, through a reaper.
fn last_handle_dropped_by_a_woken_waker<F>(make: impl Fn(&Rcu) -> F)
where
    F: Future<Output = ()> + Unpin + Send + 'static,
{
    let rcu = Rcu::builder()
        .lazy_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    rcu.call_lazy(move || {
        let _ = tx.send(());
    });
    let task = Arc::new(OwningTask(std::sync::Mutex::new(None)));
    let waker = Waker::from(Arc::clone(&task));
    let mut fut = make(&rcu);
    while poll_once(Pin::new(&mut fut), &waker).is_ready() {
        fut = make(&rcu);
    }
    *task.0.lock().unwrap() = Some(fut);
    drop((waker, task, rcu));
    rx.recv_timeout(Duration::from_secs(60)).expect(
        "the domain whose last handle a woken waker dropped never ran its \
         pending lazy callback: its shutdown is stuck",
    );
}

#[test]
fn last_handle_dropped_by_a_waker_on_the_engine_thread() {
    last_handle_dropped_by_a_woken_waker(Rcu::synchronize_async);
}

#[test]
fn last_handle_dropped_by_a_waker_on_a_callback_worker() {
    last_handle_dropped_by_a_woken_waker(|rcu| {
        // A callback to wait for, so that the barrier is pending.
        rcu.call(|| thread::sleep(Duration::from_millis(10)));
        rcu.barrier_async()
    });
}

/// A waker whose `wake` panics.
struct Panics;

impl Wake for Panics {
    fn wake(self: Arc<Self>) {
        panic!("deliberate panic in Waker::wake");
    }
}

/// A panicking waker neither kills the thread that wakes it nor costs the
/// other waiters their wake: both kinds of future, woken together with a
/// panicking one, complete, and the domain keeps running grace periods and
/// barriers (its engine and CB worker survived).
#[test]
fn a_panicking_waker_is_contained() {
    let rcu = Rcu::new();
    let bad = Waker::from(Arc::new(Panics));
    let (_good, good_waker, good_rx) = test_waker();
    // Grace periods: the panicking waker and a good one, due together.
    let mut bad_gp = rcu.synchronize_async();
    let mut good_gp = rcu.cond_synchronize_async(rcu.snapshot());
    // Pending in practically every run; the checks hold either way.
    let _ = poll_once(Pin::new(&mut bad_gp), &bad);
    if poll_once(Pin::new(&mut good_gp), &good_waker).is_pending() {
        recv_wake(&good_rx, "a grace-period waiter woken with a panicking one");
    }
    assert!(poll_once(Pin::new(&mut good_gp), &good_waker).is_ready());
    drop((bad_gp, good_gp));
    // Barriers: the same, on the CB worker.
    rcu.call(|| thread::sleep(Duration::from_millis(5)));
    let mut bad_barrier = rcu.barrier_async();
    let mut good_barrier = rcu.barrier_async();
    let _ = poll_once(Pin::new(&mut bad_barrier), &bad);
    if poll_once(Pin::new(&mut good_barrier), &good_waker).is_pending() {
        recv_wake(&good_rx, "a barrier waiter woken with a panicking one");
    }
    assert!(poll_once(Pin::new(&mut good_barrier), &good_waker).is_ready());
    drop((bad_barrier, good_barrier));
    // The engine and the CB worker still serve the domain.
    within("synchronize_async after a panicking waker", {
        let rcu = rcu.clone();
        move || {
            let (_w, waker, rx) = test_waker();
            let mut gp = rcu.synchronize_async();
            if poll_once(Pin::new(&mut gp), &waker).is_pending() {
                recv_wake(&rx, "a later grace-period waiter");
            }
        }
    });
    let ran = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&ran);
    rcu.call(move || r.store(true, Ordering::Relaxed));
    within("barrier after a panicking waker", {
        let rcu = rcu.clone();
        move || rcu.barrier()
    });
    assert!(ran.load(Ordering::Relaxed));
    drop_domain(rcu);
}
