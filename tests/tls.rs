//! Read-side sections opened from thread-local destructors, before and after
//! the library's own thread-locals are destroyed, and guards that outlive
//! them.
//!
//! Thread-local destructors run in reverse order of registration, and a
//! thread-local is registered on its first use on a thread: one used before
//! the thread's first `read()` is destroyed *after* the library's.
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use common::{check_raw, panic_text, recv, within, Obj, Published};
use rcu_offload::{global, Rcu, ReadGuard};

/// Runs its closure when the thread-local holding it is destroyed.
struct OnExit(Option<Box<dyn FnOnce()>>);

impl Drop for OnExit {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

thread_local! {
    static ON_EXIT: RefCell<OnExit> = const { RefCell::new(OnExit(None)) };
}

/// When, relative to the library's thread-locals, the hook runs.
#[derive(Clone, Copy, Debug)]
enum When {
    /// Before them (the hook was registered after the thread's first read).
    Early,
    /// After them (the hook was registered before the thread's first read).
    Late,
}

/// Starts a thread that calls `first_use` (its first use of the library),
/// then exits; `body` runs in a thread-local destructor at exit, at the time
/// `when` says. Returns a receiver for `body`'s outcome (a panic in `body`
/// becomes `Err` with its message instead of aborting the process).
fn at_thread_exit(
    when: When,
    first_use: impl FnOnce() + Send + 'static,
    body: impl FnOnce() + Send + 'static,
) -> mpsc::Receiver<Result<(), String>> {
    let (tx, rx) = mpsc::channel();
    let hook: Box<dyn FnOnce() + Send> = Box::new(move || {
        let r = catch_unwind(AssertUnwindSafe(body));
        let _ = tx.send(r.map_err(|e| panic_text(&*e)));
    });
    thread::spawn(move || {
        if let When::Late = when {
            ON_EXIT.with(|_| ());
        }
        first_use();
        ON_EXIT.with(|h| h.borrow_mut().0 = Some(hook));
    });
    rx
}

fn expect_ok(rx: &mpsc::Receiver<Result<(), String>>, what: &str) {
    if let Err(msg) = recv(rx, what) {
        panic!("{what}: {msg}");
    }
}

/// A section in a thread-local destructor, with a grace period waiting for
/// it: the grace period must not end before the section does, the object it
/// reads stays live, and nested sections work.
fn gp_waits_for_destructor_section(rcu: Rcu, when: When) {
    let shared = Arc::new(Published::new());
    let released = Arc::new(AtomicBool::new(false));
    let (inside_tx, inside_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let outcome = {
        let (rcu, r1, shared, released) = (
            rcu.clone(),
            rcu.clone(),
            Arc::clone(&shared),
            Arc::clone(&released),
        );
        at_thread_exit(
            when,
            move || drop(r1.read()),
            move || {
                let outer = rcu.read();
                let p = shared.load();
                // SAFETY: loaded inside the open section.
                unsafe { check_raw(p, 3) }.unwrap();
                inside_tx.send(()).unwrap();
                recv(&go_rx, "the grace period to start");
                // Widen the window: the grace period is now waiting for us.
                thread::sleep(Duration::from_millis(10));
                let inner = rcu.read();
                // SAFETY: still inside the section that loaded `p`.
                unsafe { check_raw(p, 3) }.unwrap();
                drop(inner);
                // SAFETY: `outer` still lives.
                unsafe { check_raw(p, 3) }.unwrap();
                released.store(true, Ordering::SeqCst);
                drop(outer);
                // A second, separate section in the same destructor.
                let g = rcu.read();
                shared.read_check(1).unwrap();
                drop(g);
            },
        )
    };
    recv(&inside_rx, "the destructor's section");
    let gp = {
        let (rcu, shared, released) = (rcu.clone(), Arc::clone(&shared), Arc::clone(&released));
        thread::spawn(move || {
            let old = shared.replace(1);
            go_tx.send(()).unwrap();
            rcu.synchronize();
            assert!(
                released.load(Ordering::SeqCst),
                "grace period ended before the destructor's section"
            );
            // SAFETY: unpublished, then a grace period.
            unsafe { Obj::retire(old) };
        })
    };
    within("the grace period waiting for a destructor", move || {
        gp.join().unwrap()
    });
    expect_ok(&outcome, "destructor section");
    within("a later grace period", move || {
        rcu.synchronize();
        let c = rcu.start_poll();
        common::poll_until_done(&rcu, c);
    });
}

/// read() in a destructor that runs after the library's thread-locals works and is waited for (Arc'd domain).
#[test]
fn read_in_late_destructor_is_protected() {
    gp_waits_for_destructor_section(Rcu::new(), When::Late);
}

/// read() in a destructor that runs before the library's thread-locals works and is waited for.
#[test]
fn read_in_early_destructor_is_protected() {
    gp_waits_for_destructor_section(Rcu::new(), When::Early);
}

/// Same as the late case for a domain without membarrier and without spinning.
#[test]
fn read_in_late_destructor_is_protected_full_fences() {
    let rcu = Rcu::builder()
        .membarrier(false)
        .gp_spin_limit(0)
        .build()
        .unwrap();
    gp_waits_for_destructor_section(rcu, When::Late);
}

/// read() on the global domain in late and early destructors neither panics nor blocks later grace periods.
#[test]
fn global_read_in_destructors() {
    for when in [When::Early, When::Late] {
        let rx = at_thread_exit(
            when,
            || drop(global().read()),
            || {
                let g = global().read();
                let g2 = global().read();
                drop(g);
                drop(g2);
                drop(global().read());
            },
        );
        expect_ok(&rx, "global read in a destructor");
        within("global synchronize", || global().synchronize());
    }
}

/// A destructor that reads a domain its thread never used before (library thread-locals created during teardown) works.
#[test]
fn first_read_of_a_domain_in_destructor() {
    for when in [When::Early, When::Late] {
        let other = Rcu::new();
        let rcu = Rcu::new();
        let r2 = rcu.clone();
        let rx = at_thread_exit(
            when,
            move || drop(other.read()),
            move || {
                let _g = r2.read();
                let _n = r2.read();
            },
        );
        expect_ok(&rx, "first read in a destructor");
        within("synchronize", move || rcu.synchronize());
    }
}

/// A thread whose first use of the library is in a thread-local destructor can read and be waited for.
#[test]
fn first_library_use_in_destructor() {
    for when in [When::Early, When::Late] {
        let rcu = Rcu::new();
        let r2 = rcu.clone();
        let rx = at_thread_exit(
            when,
            || {},
            move || {
                let outer = r2.read();
                let inner = r2.read();
                drop(outer);
                let c = r2.start_poll();
                assert!(!r2.poll(c), "cookie done while this thread reads");
                drop(inner);
                common::poll_until_done(&r2, c);
            },
        );
        expect_ok(&rx, "first library use in a destructor");
        within("synchronize", move || rcu.synchronize());
    }
}

/// Dropping a domain's last handle, with its engine running, from a late destructor returns.
#[test]
fn drop_last_handle_in_late_destructor() {
    let rcu = Rcu::new();
    let rx = at_thread_exit(
        When::Late,
        || drop(global().read()),
        move || {
            drop(rcu.read());
            let c = rcu.start_poll();
            common::poll_until_done(&rcu, c);
            let _ = rcu.start_poll();
            drop(rcu);
        },
    );
    expect_ok(&rx, "dropping a domain in a destructor");
}

/// Several threads reading in late destructors while another thread runs grace periods in a loop: no crash, no hang.
#[test]
fn many_late_destructor_readers_during_synchronize_loop() {
    let rcu = Rcu::new();
    let shared = Arc::new(Published::new());
    let stop = Arc::new(AtomicBool::new(false));
    let updater = {
        let (rcu, shared, stop) = (rcu.clone(), Arc::clone(&shared), Arc::clone(&stop));
        thread::spawn(move || {
            let mut serial = 0;
            while !stop.load(Ordering::Relaxed) {
                serial += 1;
                let old = shared.replace(serial);
                rcu.synchronize();
                // SAFETY: unpublished, then a grace period.
                unsafe { Obj::retire(old) };
            }
        })
    };
    let outcomes: Vec<_> = (0..24)
        .map(|i| {
            let (r1, r2, shared) = (rcu.clone(), rcu.clone(), Arc::clone(&shared));
            let when = if i % 4 == 0 { When::Early } else { When::Late };
            at_thread_exit(
                when,
                move || drop(r1.read()),
                move || {
                    for _ in 0..20 {
                        let _g = r2.read();
                        shared.read_check(2).unwrap();
                    }
                },
            )
        })
        .collect();
    for rx in &outcomes {
        expect_ok(rx, "destructor reader");
    }
    stop.store(true, Ordering::Relaxed);
    within("the updater", move || updater.join().unwrap());
    within("a final grace period", move || rcu.synchronize());
}

/// Holds a guard in a thread-local that outlives the library's.
struct HeldGuard {
    guard: Option<ReadGuard<'static>>,
    released: Arc<AtomicBool>,
    before_release: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        if let Some(f) = self.before_release.take() {
            f();
        }
        self.released.store(true, Ordering::SeqCst);
        self.guard.take();
    }
}

thread_local! {
    static HELD: RefCell<Option<HeldGuard>> = const { RefCell::new(None) };
}

/// A guard opened while the thread ran and dropped only after the library's thread-locals are gone still holds grace periods, then lets them complete.
#[test]
fn guard_outliving_library_thread_locals() {
    let rcu: &'static Rcu = Box::leak(Box::new(Rcu::builder().gp_spin_limit(0).build().unwrap()));
    let released = Arc::new(AtomicBool::new(false));
    let (inside_tx, inside_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let reader = {
        let released = Arc::clone(&released);
        thread::spawn(move || {
            HELD.with(|_| ()); // destroyed after the library's thread-locals
            let guard = rcu.read();
            HELD.with(|h| {
                *h.borrow_mut() = Some(HeldGuard {
                    guard: Some(guard),
                    released,
                    before_release: Some(Box::new(move || {
                        // Runs after the library's thread-locals are gone;
                        // a section opened now nests in the held one.
                        drop(rcu.read());
                        let _ = go_rx.recv_timeout(common::LIVENESS_BOUND);
                        thread::sleep(Duration::from_millis(10));
                    })),
                })
            });
            inside_tx.send(()).unwrap();
            // The thread exits with the guard still alive.
        })
    };
    recv(&inside_rx, "the reader to enter");
    let released2 = Arc::clone(&released);
    let gp = thread::spawn(move || {
        let c = rcu.start_poll();
        go_tx.send(()).unwrap();
        rcu.synchronize();
        assert!(
            released2.load(Ordering::SeqCst),
            "grace period ended while a thread-local still held a guard"
        );
        assert!(rcu.poll(c));
    });
    within("the grace period", move || gp.join().unwrap());
    reader.join().unwrap();
    within("later grace periods", move || {
        rcu.synchronize();
        let c = rcu.start_poll();
        common::poll_until_done(rcu, c);
    });
}

// --- Nesting in destructors -----------------------------------------------
//
// The documented contract: guards nest and may be dropped in any order; the
// section lasts until the last guard drops. So data loaded under an outer
// guard stays protected while an inner guard lives, even after the outer one
// is dropped. Each scenario below: open `outer`, load the object, let a
// grace period start (the object is unpublished first), open `inner`, drop
// `outer`, and then check that the grace period does NOT complete while
// `inner` lives.

/// The reader's side of a nesting scenario.
struct NestingProbe {
    rcu: Rcu,
    shared: Arc<Published>,
    entered_tx: mpsc::Sender<()>,
    go_rx: mpsc::Receiver<()>,
    gp_done_rx: mpsc::Receiver<()>,
    /// Another domain whose section is opened between `outer` and `inner`.
    interleave: Option<Rcu>,
}

/// How long the reader waits for a (wrong) report that the grace period
/// completed while its section is still open. Only widens the window: a
/// correct implementation never sends it, however long we wait.
const EARLY_GP_WINDOW: Duration = Duration::from_millis(300);

impl NestingProbe {
    /// Returns an error if the grace period completed while the section was
    /// still open through `inner`.
    fn run(self) -> Result<(), String> {
        let outer = self.rcu.read();
        let p = self.shared.load();
        // SAFETY: inside the section.
        unsafe { check_raw(p, 1) }?;
        self.entered_tx.send(()).unwrap();
        // The object is unpublished and the grace period has started; give
        // it time to flip and wait for `outer` (correct without the sleep).
        recv(&self.go_rx, "the grace period to start");
        thread::sleep(Duration::from_millis(20));
        let other = self.interleave.as_ref().map(|b| b.read());
        let inner = self.rcu.read();
        drop(outer);
        let early = self.gp_done_rx.recv_timeout(EARLY_GP_WINDOW).is_ok();
        // SAFETY: the grace period thread only kills the object (marks it
        // DEAD) and never frees it, so this read is safe even in the bug case.
        let seen = unsafe { check_raw(p, 1) };
        drop(inner);
        drop(other);
        if early {
            return Err(format!(
                "a grace period completed while a nested section (outer guard dropped, \
                 inner alive) was still open; the reader then saw: {seen:?}"
            ));
        }
        seen.map(drop)
    }
}

/// Runs the nesting scenario; `spawn` runs the reader closure in the context
/// under test. Returns the reader's verdict.
fn nesting_scenario(
    interleave: bool,
    spawn: impl FnOnce(Box<dyn FnOnce() + Send>),
) -> Result<(), String> {
    let rcu = Rcu::new();
    let shared = Arc::new(Published::new());
    let (entered_tx, entered_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let (gp_done_tx, gp_done_rx) = mpsc::channel();
    let (result_tx, result_rx) = mpsc::channel();
    let probe = NestingProbe {
        rcu: rcu.clone(),
        shared: Arc::clone(&shared),
        entered_tx,
        go_rx,
        gp_done_rx,
        interleave: interleave.then(Rcu::new),
    };
    spawn(Box::new(move || {
        let _ = result_tx.send(probe.run());
    }));
    recv(&entered_rx, "the reader to enter");
    let gp = thread::spawn(move || {
        let old = shared.replace(1);
        go_tx.send(()).unwrap();
        rcu.synchronize();
        // SAFETY: `old` is still allocated: it is killed here and leaked on
        // purpose, so that a reader racing a broken grace period reads DEAD
        // rather than freed memory.
        unsafe { Obj::kill(old) };
        let _ = gp_done_tx.send(());
    });
    let verdict = recv(&result_rx, "the reader's verdict");
    within("the grace period", move || gp.join().unwrap());
    verdict
}

/// Control: in an ordinary thread, a nested section keeps data loaded under a dropped outer guard protected.
#[test]
fn nested_section_outer_dropped_first_ordinary_thread() {
    nesting_scenario(false, |reader| drop(thread::spawn(reader))).unwrap();
}

/// In a destructor that runs before the library's thread-locals, dropping the outer guard first keeps the section open.
#[test]
fn nested_section_outer_dropped_first_early_destructor() {
    nesting_scenario(false, |reader| {
        drop(at_thread_exit(
            When::Early,
            || drop(global().read()),
            reader,
        ))
    })
    .unwrap();
}

/// In a destructor that runs after the library's thread-locals, dropping the outer guard first keeps the section open.
#[test]
fn nested_section_outer_dropped_first_late_destructor() {
    nesting_scenario(false, |reader| {
        drop(at_thread_exit(When::Late, || drop(global().read()), reader))
    })
    .unwrap();
}

/// In a late destructor, a section of another domain opened between the outer and inner guards does not split the section.
#[test]
fn nested_section_outer_dropped_first_late_destructor_other_domain_between() {
    nesting_scenario(true, |reader| {
        drop(at_thread_exit(When::Late, || drop(global().read()), reader))
    })
    .unwrap();
}

/// Control for the above in an ordinary thread: another domain's section between outer and inner splits nothing.
#[test]
fn nested_section_outer_dropped_first_ordinary_thread_other_domain_between() {
    nesting_scenario(true, |reader| drop(thread::spawn(reader))).unwrap();
}
