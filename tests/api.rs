//! The public API's documented behaviour, one property per test: polled grace
//! periods, domain independence, the builder (its refusals: tests/builder.rs),
//! auto traits, the global domain.
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use common::{poll_until_done, recv, wait_until, within};
use rcu_offload::{global, Builder, ConfigError, GpCookie, Rcu, ReadGuard};

/// A reader on another thread, inside a section until told to leave.
struct HeldReader {
    release: mpsc::Sender<()>,
    released: Arc<AtomicBool>,
    handle: thread::JoinHandle<()>,
}

impl HeldReader {
    /// Starts a thread that enters a section of `rcu` and returns once it is
    /// inside.
    fn start(rcu: &Rcu) -> HeldReader {
        let rcu = rcu.clone();
        let released = Arc::new(AtomicBool::new(false));
        let (inside_tx, inside_rx) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let flag = Arc::clone(&released);
        let handle = thread::spawn(move || {
            let g = rcu.read();
            inside_tx.send(()).unwrap();
            let _ = release_rx.recv();
            // Set before the section ends: a grace period that waited for us
            // must see it.
            flag.store(true, Ordering::SeqCst);
            drop(g);
        });
        recv(&inside_rx, "reader to enter");
        HeldReader {
            release,
            released,
            handle,
        }
    }

    fn released(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.released)
    }

    fn finish(self) {
        let _ = self.release.send(());
        self.handle.join().unwrap();
    }
}

/// Asserts `poll(cookie)` stays false for a while (the reader it waits for is
/// still inside; the sleep only gives a broken engine time to misbehave).
fn assert_stays_pending(rcu: &Rcu, cookie: GpCookie) {
    for i in 0..200 {
        assert!(
            !rcu.poll(cookie),
            "poll() true while an older reader is inside"
        );
        if i % 50 == 0 {
            thread::sleep(Duration::from_millis(2));
        }
        thread::yield_now();
    }
}

/// A new domain has completed no grace period; an idle synchronize() completes exactly one.
#[test]
fn synchronize_on_idle_domain_runs_exactly_one_grace_period() {
    let rcu = Rcu::new();
    assert_eq!(rcu.completed_grace_periods(), 0);
    rcu.synchronize();
    assert_eq!(rcu.completed_grace_periods(), 1);
    drop(rcu.read());
    rcu.synchronize();
    assert_eq!(rcu.completed_grace_periods(), 2);
}

/// poll() is false while a reader that predates the cookie is inside, true after it leaves and synchronize() returns.
#[test]
fn poll_waits_for_preexisting_reader_then_synchronize_completes_it() {
    let rcu = Rcu::new();
    let reader = HeldReader::start(&rcu);
    let cookie = rcu.start_poll();
    assert_stays_pending(&rcu, cookie);
    let released = reader.released();
    let r2 = rcu.clone();
    let sync = thread::spawn(move || {
        r2.synchronize();
        assert!(
            released.load(Ordering::SeqCst),
            "synchronize() returned early"
        );
    });
    assert_stays_pending(&rcu, cookie);
    reader.finish();
    within("synchronize after the reader left", move || {
        sync.join().unwrap()
    });
    assert!(rcu.poll(cookie));
}

/// A reader on the polling thread itself also keeps its own cookie pending until it drops.
#[test]
fn poll_waits_for_own_thread_reader() {
    let rcu = Rcu::new();
    let guard = rcu.read();
    let cookie = rcu.start_poll();
    assert_stays_pending(&rcu, cookie);
    drop(guard);
    poll_until_done(&rcu, cookie);
}

/// cond_synchronize() on a fresh cookie waits for the pre-existing reader, then poll() is true.
#[test]
fn cond_synchronize_waits_for_preexisting_reader() {
    let rcu = Rcu::new();
    let reader = HeldReader::start(&rcu);
    let cookie = rcu.snapshot();
    let released = reader.released();
    let r2 = rcu.clone();
    let waiter = thread::spawn(move || {
        r2.cond_synchronize(cookie);
        assert!(
            released.load(Ordering::SeqCst),
            "cond_synchronize() returned early"
        );
        assert!(r2.poll(cookie));
    });
    assert_stays_pending(&rcu, cookie);
    reader.finish();
    within("cond_synchronize after the reader left", move || {
        waiter.join().unwrap()
    });
}

/// synchronize() completes every cookie taken before it, from snapshot() or start_poll().
#[test]
fn synchronize_completes_earlier_cookies() {
    let rcu = Rcu::new();
    let a = rcu.snapshot();
    let b = rcu.start_poll();
    drop(rcu.read());
    let c = rcu.snapshot();
    rcu.synchronize();
    assert!(rcu.poll(a) && rcu.poll(b) && rcu.poll(c));
}

/// cond_synchronize() on a cookie nobody else serves runs the grace period itself.
#[test]
fn cond_synchronize_runs_a_grace_period_when_needed() {
    let rcu = Rcu::new();
    let cookie = rcu.snapshot();
    assert!(!rcu.poll(cookie));
    rcu.cond_synchronize(cookie);
    assert!(rcu.poll(cookie));
    assert_eq!(rcu.completed_grace_periods(), 1);
}

/// A cookie taken while a grace period is already running is not satisfied by that one: a reader that entered after its scan but before the cookie still holds it.
#[test]
fn cookie_taken_during_a_grace_period_needs_the_next_one() {
    let rcu = Rcu::new();
    let r1 = HeldReader::start(&rcu);
    let before = rcu.completed_grace_periods();
    let g = {
        let rcu = rcu.clone();
        thread::spawn(move || rcu.synchronize())
    };
    // Let that grace period start, flip and wait for r1 (only widens the
    // window: if r2 enters earlier, the grace period also waits for r2, and
    // the assertions below still hold).
    thread::sleep(Duration::from_millis(20));
    let r2 = HeldReader::start(&rcu);
    let polled = rcu.start_poll();
    let snap = rcu.snapshot();
    r1.finish();
    // Give the running grace period time to end (it may not, see above).
    for _ in 0..200 {
        if rcu.completed_grace_periods() > before {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    assert_stays_pending(&rcu, polled);
    assert!(
        !rcu.poll(snap),
        "cookie satisfied while an older reader is inside"
    );
    r2.finish();
    within("the first grace period", move || g.join().unwrap());
    poll_until_done(&rcu, polled);
    rcu.cond_synchronize(snap);
    assert!(rcu.poll(snap));
}

/// start_poll() completes with no other activity: the engine thread runs the grace period.
#[test]
fn start_poll_completes_on_its_own() {
    let rcu = Rcu::new();
    drop(rcu.read()); // a registered (idle) reader: the full two-phase wait
    for _ in 0..3 {
        let cookie = rcu.start_poll();
        poll_until_done(&rcu, cookie);
    }
    assert!(rcu.completed_grace_periods() >= 3);
}

/// start_poll() called again while a request is pending is served too (no lost engine wakeup).
#[test]
fn start_poll_back_to_back_requests_all_complete() {
    let rcu = Rcu::new();
    let cookies: Vec<_> = (0..50)
        .map(|i| {
            if i % 7 == 0 {
                drop(rcu.read());
            }
            rcu.start_poll()
        })
        .collect();
    for c in cookies {
        poll_until_done(&rcu, c);
    }
}

/// snapshot() alone starts no grace period: the count is unchanged and its cookie stays pending.
#[test]
fn snapshot_starts_nothing() {
    let rcu = Rcu::new();
    rcu.synchronize();
    let before = rcu.completed_grace_periods();
    let cookie = rcu.snapshot();
    // Give a (wrongly) started engine ample opportunity to run.
    thread::sleep(Duration::from_millis(20));
    for _ in 0..100 {
        thread::yield_now();
    }
    assert_eq!(rcu.completed_grace_periods(), before);
    assert!(!rcu.poll(cookie));
}

/// cond_synchronize() on an already-completed cookie returns without running a grace period.
#[test]
fn cond_synchronize_on_completed_cookie_runs_nothing() {
    let rcu = Rcu::new();
    let cookie = rcu.snapshot();
    rcu.synchronize();
    let after = rcu.completed_grace_periods();
    assert!(rcu.poll(cookie));
    rcu.cond_synchronize(cookie);
    rcu.cond_synchronize(cookie);
    assert_eq!(rcu.completed_grace_periods(), after);
}

/// Once poll() has said true for a cookie it keeps saying true.
#[test]
fn poll_is_monotonic() {
    let rcu = Rcu::new();
    let c = rcu.start_poll();
    poll_until_done(&rcu, c);
    for _ in 0..10 {
        rcu.synchronize();
        let _ = rcu.start_poll();
        assert!(rcu.poll(c));
    }
}

/// A cookie taken from one handle is accepted by, and completed through, a clone of it.
#[test]
fn clones_share_one_domain() {
    let a = Rcu::new();
    let b = a.clone();
    let cookie = a.snapshot();
    assert!(!b.poll(cookie));
    b.synchronize();
    assert!(a.poll(cookie));
    // A reader on one handle holds up grace periods requested via the other.
    let reader = HeldReader::start(&a);
    let c2 = b.start_poll();
    assert_stays_pending(&b, c2);
    reader.finish();
    poll_until_done(&b, c2);
}

/// A reader of domain A does not block B.synchronize() on the same thread.
#[test]
fn other_domain_reader_on_same_thread_does_not_block() {
    within("B.synchronize() inside an A section", || {
        let a = Rcu::new();
        let b = Rcu::new();
        drop(b.read()); // B has a registered reader record on this thread
        let ga = a.read();
        let gb = b.read(); // nesting B inside A, then leaving B
        drop(gb);
        let ca = a.start_poll();
        b.synchronize();
        b.cond_synchronize(b.snapshot());
        let cb = b.start_poll();
        poll_until_done(&b, cb);
        assert!(!a.poll(ca), "A's grace period ended inside an A section");
        drop(ga);
        poll_until_done(&a, ca);
    });
}

/// A reader of domain A on another thread does not block B's grace periods.
#[test]
fn other_domain_reader_on_other_thread_does_not_block() {
    let a = Rcu::new();
    let b = Rcu::new();
    let reader = HeldReader::start(&a);
    let ca = a.start_poll();
    let b2 = b.clone();
    within("B.synchronize() while A has a reader", move || {
        drop(b2.read());
        b2.synchronize();
        let c = b2.start_poll();
        poll_until_done(&b2, c);
    });
    assert!(!a.poll(ca));
    reader.finish();
    poll_until_done(&a, ca);
}

/// Every builder setting combination that validates yields a working domain.
#[test]
fn builder_valid_settings_work() {
    for membarrier in [true, false] {
        for spin in [0, 1, 1000] {
            let rcu = Builder::default()
                .membarrier(membarrier)
                .gp_spin_limit(spin)
                .thread_name_prefix("t-")
                .build()
                .unwrap();
            let reader = HeldReader::start(&rcu);
            let c = rcu.start_poll();
            reader.finish();
            poll_until_done(&rcu, c);
            rcu.synchronize();
        }
    }
}

/// `Rcu` is Send + Sync + Clone + Default; `GpCookie` is Copy + Send + Sync; `ConfigError` is an Error.
#[test]
fn auto_traits_of_public_types() {
    fn send_sync_clone<T: Send + Sync + Clone + Default + std::fmt::Debug + 'static>() {}
    fn cookie<T: Copy + Send + Sync + Eq + std::hash::Hash + std::fmt::Debug>() {}
    fn error<T: std::error::Error + Send + Sync + Clone + 'static>() {}
    send_sync_clone::<Rcu>();
    cookie::<GpCookie>();
    error::<ConfigError>();
    let _ = format!("{:?}", Rcu::default());
}

/// `ReadGuard` is neither Send nor Sync (checked at compile time).
#[test]
fn read_guard_is_not_send_or_sync() {
    // If `ReadGuard` implemented Send (or Sync), both impls below would apply
    // and the `_` could not be inferred: a compile error.
    trait AmbiguousIfSend<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}
    <ReadGuard<'static> as AmbiguousIfSend<_>>::check();

    trait AmbiguousIfSync<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}
    <ReadGuard<'static> as AmbiguousIfSync<_>>::check();
}

/// A continuous stream of overlapping readers on other threads cannot starve grace periods.
#[test]
fn grace_periods_are_not_starved_by_readers() {
    let rcu = Rcu::new();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (rcu, stop) = (rcu.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _g = rcu.read();
                    thread::yield_now();
                }
            })
        })
        .collect();
    let r2 = rcu.clone();
    within("50 grace periods under constant reading", move || {
        for _ in 0..50 {
            r2.synchronize();
        }
    });
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
}

/// global() is one domain: reads, synchronize(), start_poll()/poll() and cookies work across calls.
#[test]
fn global_domain_works() {
    assert!(std::ptr::eq(global(), global()));
    {
        let _g = global().read();
        let _nested = global().read();
    }
    global().synchronize();
    let cookie = global().start_poll();
    poll_until_done(global(), cookie);
    let c2 = global().snapshot();
    global().cond_synchronize(c2);
    assert!(global().poll(c2));
    // A reader of the global domain on another thread holds its grace period.
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let t = thread::spawn(move || {
        let g = global().read();
        tx.send(()).unwrap();
        let _ = go_rx.recv();
        drop(g);
    });
    recv(&rx, "global reader");
    let c3 = global().start_poll();
    assert_stays_pending(global(), c3);
    go_tx.send(()).unwrap();
    t.join().unwrap();
    poll_until_done(global(), c3);
}

/// Using the global domain on many threads leaves it working.
#[test]
fn global_domain_from_many_threads() {
    let ts: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(|| {
                for i in 0..20 {
                    drop(global().read());
                    if i % 5 == 0 {
                        global().synchronize();
                    }
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    within("global synchronize", || global().synchronize());
    wait_until("global start_poll", {
        let c = global().start_poll();
        move || global().poll(c)
    });
}
