//! Misuse that the documentation promises to turn into a panic: waiting for a
//! grace period from inside a read-side section of the same domain, and
//! cookies from another domain.
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use common::{panic_text, LIVENESS_BOUND};
use rcu_offload::{Rcu, ReadGuard};

const SYNC_MSG: &str = "rcu_offload: synchronize() called inside a read-side critical section";
const COND_MSG: &str = "rcu_offload: cond_synchronize() called inside a read-side critical section";
const COOKIE_MSG: &str = "rcu_offload: GpCookie from another Rcu domain";

/// synchronize() inside a read-side section of the same domain panics with the documented message.
#[test]
#[should_panic(
    expected = "rcu_offload: synchronize() called inside a read-side critical section (nesting depth 1) of the same domain"
)]
fn synchronize_inside_section_panics() {
    let rcu = Rcu::new();
    let _g = rcu.read();
    rcu.synchronize();
}

/// cond_synchronize() inside a read-side section of the same domain panics with the documented message.
#[test]
#[should_panic(
    expected = "rcu_offload: cond_synchronize() called inside a read-side critical section (nesting depth 1) of the same domain"
)]
fn cond_synchronize_inside_section_panics() {
    let rcu = Rcu::new();
    let cookie = rcu.snapshot();
    let _g = rcu.read();
    rcu.cond_synchronize(cookie);
}

/// cond_synchronize() inside a section panics even when its cookie is already complete.
#[test]
#[should_panic(
    expected = "rcu_offload: cond_synchronize() called inside a read-side critical section"
)]
fn cond_synchronize_inside_section_panics_for_completed_cookie() {
    let rcu = Rcu::new();
    let cookie = rcu.snapshot();
    rcu.synchronize();
    assert!(rcu.poll(cookie));
    let _g = rcu.read();
    rcu.cond_synchronize(cookie);
}

/// synchronize() inside a nested section panics and reports the nesting depth.
#[test]
#[should_panic(expected = "(nesting depth 2) of the same domain")]
fn synchronize_inside_nested_section_panics() {
    let rcu = Rcu::new();
    let _outer = rcu.read();
    let _inner = rcu.read();
    rcu.synchronize();
}

/// synchronize() still panics after the outer of two guards dropped while the inner one lives.
#[test]
#[should_panic(
    expected = "rcu_offload: synchronize() called inside a read-side critical section (nesting depth 1)"
)]
fn synchronize_after_outer_guard_dropped_panics() {
    let rcu = Rcu::new();
    let outer = rcu.read();
    let _inner = rcu.read();
    drop(outer);
    rcu.synchronize();
}

/// cond_synchronize() still panics after the outer of two guards dropped while the inner one lives.
#[test]
#[should_panic(
    expected = "rcu_offload: cond_synchronize() called inside a read-side critical section (nesting depth 1)"
)]
fn cond_synchronize_after_outer_guard_dropped_panics() {
    let rcu = Rcu::new();
    let c = rcu.snapshot();
    let outer = rcu.read();
    let _inner = rcu.read();
    drop(outer);
    rcu.cond_synchronize(c);
}

/// The misuse check also fires when the thread last read another domain (not only via the fast-path cache).
#[test]
#[should_panic(
    expected = "rcu_offload: synchronize() called inside a read-side critical section (nesting depth 1)"
)]
fn synchronize_inside_section_panics_after_reading_another_domain() {
    let a = Rcu::new();
    let b = Rcu::new();
    let _ga = a.read();
    drop(b.read()); // this thread's most recent domain is now B
    a.synchronize();
}

/// A section opened through one handle makes synchronize() through a clone of it panic too (same domain).
#[test]
#[should_panic(
    expected = "rcu_offload: synchronize() called inside a read-side critical section (nesting depth 1)"
)]
fn synchronize_on_clone_inside_section_panics() {
    let a = Rcu::new();
    let b = a.clone();
    let _g = a.read();
    b.synchronize();
}

/// A section in another domain is not misuse: synchronize() of this domain returns.
#[test]
fn synchronize_inside_other_domains_section_is_fine() {
    let a = Rcu::new();
    let b = Rcu::new();
    common::within("B.synchronize() inside an A section", move || {
        let _ga = a.read();
        let _ga2 = a.read();
        b.synchronize();
        b.cond_synchronize(b.snapshot());
    });
}

/// After the panic and once the guards are dropped, synchronize() works again on that thread.
#[test]
fn synchronize_works_after_misuse_panic_and_guard_drop() {
    let rcu = Rcu::new();
    let outer = rcu.read();
    let inner = rcu.read();
    let err = catch_unwind(AssertUnwindSafe(|| rcu.synchronize())).unwrap_err();
    assert!(
        panic_text(&*err).contains(SYNC_MSG),
        "{}",
        panic_text(&*err)
    );
    drop(inner);
    let cookie = rcu.snapshot();
    let err = catch_unwind(AssertUnwindSafe(|| rcu.cond_synchronize(cookie))).unwrap_err();
    assert!(
        panic_text(&*err).contains(COND_MSG),
        "{}",
        panic_text(&*err)
    );
    drop(outer);
    // The failed calls ran no grace period and left no state behind.
    assert_eq!(rcu.completed_grace_periods(), 0);
    rcu.synchronize();
    assert_eq!(rcu.completed_grace_periods(), 1);
    rcu.cond_synchronize(cookie);
    assert!(rcu.poll(cookie));
    // Sections still work and still hold grace periods on this thread.
    let g = rcu.read();
    let c = rcu.start_poll();
    assert!(!rcu.poll(c));
    drop(g);
    common::poll_until_done(&rcu, c);
}

/// poll() with a cookie from another domain panics.
#[test]
#[should_panic(expected = "rcu_offload: GpCookie from another Rcu domain")]
fn poll_foreign_cookie_panics() {
    let a = Rcu::new();
    let b = Rcu::new();
    let _ = b.poll(a.snapshot());
}

/// cond_synchronize() with a cookie from another domain panics.
#[test]
#[should_panic(expected = "rcu_offload: GpCookie from another Rcu domain")]
fn cond_synchronize_foreign_cookie_panics() {
    let a = Rcu::new();
    let b = Rcu::new();
    b.cond_synchronize(a.start_poll());
}

/// A foreign cookie is refused even if it is complete in its own domain and the other domain is further along.
#[test]
fn foreign_completed_cookie_is_still_refused() {
    let a = Rcu::new();
    let b = Rcu::new();
    let ca = a.snapshot();
    a.synchronize();
    for _ in 0..3 {
        b.synchronize();
    }
    let err = catch_unwind(AssertUnwindSafe(|| b.poll(ca))).unwrap_err();
    assert!(panic_text(&*err).contains(COOKIE_MSG));
    let err = catch_unwind(AssertUnwindSafe(|| b.cond_synchronize(ca))).unwrap_err();
    assert!(panic_text(&*err).contains(COOKIE_MSG));
    // Both domains are unaffected.
    assert!(a.poll(ca));
    b.synchronize();
}

// --- Sections opened from thread-local destructors -------------------------
//
// A thread-local destructor that runs after the library's own thread-locals
// are gone still gets a working read-side section (a "transient" record, or
// the thread's record kept alive for a guard that outlives them). The misuse
// check must see those sections too: otherwise synchronize() waits for its
// own thread forever instead of panicking.

/// What the destructor reports: the caught panic text, if any.
type Outcome = Result<(), String>;

/// Runs `body` in a thread-local destructor; the guards in `held` are
/// dropped right after it.
struct Hook {
    held: Vec<ReadGuard<'static>>,
    body: Option<Box<dyn FnOnce()>>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        if let Some(body) = self.body.take() {
            body();
        }
        self.held.clear();
    }
}

thread_local! {
    static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
}

type Domains = (&'static Rcu, &'static Rcu);

/// Runs a thread that reads two fresh domains A and B, opens the sections
/// `hold` returns (they stay open until after `body`), and exits; `body` runs
/// in a thread-local destructor, after the library's thread-locals if `late`.
/// Returns a receiver for whether `body` panicked, and how.
fn in_destructor(
    late: bool,
    hold: impl FnOnce(Domains) -> Vec<ReadGuard<'static>> + Send + 'static,
    body: impl FnOnce(Domains) + Send + 'static,
) -> mpsc::Receiver<Outcome> {
    // Leaked so that a hung destructor cannot wedge any other test's domain.
    let a: &'static Rcu = Box::leak(Box::new(Rcu::new()));
    let b: &'static Rcu = Box::leak(Box::new(Rcu::new()));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        if late {
            // Registered before the library's thread-locals: destroyed after.
            HOOK.with(|_| ());
        }
        drop(a.read());
        drop(b.read());
        let held = hold((a, b));
        let body: Box<dyn FnOnce()> = Box::new(move || {
            let r = catch_unwind(AssertUnwindSafe(|| body((a, b))));
            let _ = tx.send(r.map_err(|e| panic_text(&*e)));
        });
        HOOK.with(|h| {
            *h.borrow_mut() = Some(Hook {
                held,
                body: Some(body),
            })
        });
    });
    rx
}

fn none(_: Domains) -> Vec<ReadGuard<'static>> {
    Vec::new()
}

/// Checks that every case's `synchronize()` panicked with the misuse
/// message. The cases run concurrently and share one liveness deadline, so
/// several hanging cases cost one bound, not one each.
fn expect_misuse_panics(cases: Vec<(&str, mpsc::Receiver<Outcome>)>) {
    let deadline = Instant::now() + LIVENESS_BOUND;
    let mut failures = Vec::new();
    for (case, rx) in cases {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Err(msg)) if msg.contains(SYNC_MSG) => {}
            Ok(Err(msg)) => failures.push(format!("{case}: wrong panic: {msg}")),
            Ok(Ok(())) => failures.push(format!("{case}: synchronize() returned")),
            Err(_) => failures.push(format!(
                "{case}: synchronize() inside a read-side section deadlocked instead of \
                 panicking (no answer within {LIVENESS_BOUND:?})"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// In a thread-local destructor that runs before the library's, synchronize() inside a section panics.
#[test]
fn synchronize_in_section_in_early_tls_destructor_panics() {
    let rx = in_destructor(false, none, |(a, _)| {
        let _g = a.read();
        a.synchronize();
    });
    expect_misuse_panics(vec![("early destructor", rx)]);
}

/// In destructors running after the library's thread-locals, synchronize() inside any open section of its domain panics.
#[test]
fn synchronize_in_section_in_late_tls_destructors_panics() {
    // Cases: a new (transient) section; a guard that outlived the library's
    // thread-locals; a section of A after one of B opened and closed; inside
    // sections of A and B at once; surviving guards of two domains.
    expect_misuse_panics(vec![
        (
            "new section",
            in_destructor(true, none, |(a, _)| {
                let _g = a.read();
                a.synchronize();
            }),
        ),
        (
            "surviving guard",
            in_destructor(true, |(a, _)| vec![a.read()], |(a, _)| a.synchronize()),
        ),
        (
            "A, then B opened and closed",
            in_destructor(true, none, |(a, b)| {
                let _ga = a.read();
                drop(b.read());
                a.synchronize();
            }),
        ),
        (
            "inside A and B",
            in_destructor(true, none, |(a, b)| {
                let _ga = a.read();
                let _gb = b.read();
                a.synchronize();
            }),
        ),
        (
            "surviving guards of A and B",
            in_destructor(
                true,
                |(a, b)| vec![a.read(), b.read()],
                |(a, _)| a.synchronize(),
            ),
        ),
    ]);
}

// --- The callback pipeline ---------------------------------------------------

const BARRIER_MSG: &str = "rcu_offload: barrier() called inside a read-side critical section";

/// barrier() inside a read-side section of the same domain panics with the documented message.
#[test]
#[should_panic(
    expected = "rcu_offload: barrier() called inside a read-side critical section (nesting depth 1) of the same domain"
)]
fn barrier_inside_section_panics() {
    let rcu = Rcu::new();
    rcu.call(|| ());
    let _g = rcu.read();
    rcu.barrier();
}

/// barrier() inside a nested section panics (even with nothing queued), changes nothing, and
/// works once the guards are dropped.
#[test]
fn barrier_inside_nested_section_panics_then_works() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let rcu = Rcu::builder().shards(2).build().unwrap();
    let outer = rcu.read();
    let inner = rcu.read();
    let err = catch_unwind(AssertUnwindSafe(|| rcu.barrier())).unwrap_err();
    let msg = panic_text(&*err);
    assert!(
        msg.contains(BARRIER_MSG) && msg.contains("(nesting depth 2)"),
        "{msg}"
    );
    let ran = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&ran);
    rcu.call(move || r.store(true, Ordering::SeqCst));
    drop(outer);
    let err = catch_unwind(AssertUnwindSafe(|| rcu.barrier())).unwrap_err();
    assert!(panic_text(&*err).contains("(nesting depth 1)"));
    assert!(
        !ran.load(Ordering::SeqCst),
        "the callback ran inside the section"
    );
    drop(inner);
    common::within("barrier() after the section", move || {
        rcu.barrier();
        assert!(ran.load(Ordering::SeqCst));
        assert_eq!(rcu.stats().panics, 0);
    });
}

/// The three ways of waiting for the pipeline or a grace period, called from a callback.
#[derive(Clone, Copy, Debug)]
enum Wait {
    Barrier,
    Synchronize,
    CondSynchronize,
}

impl Wait {
    const ALL: [Wait; 3] = [Wait::Barrier, Wait::Synchronize, Wait::CondSynchronize];

    fn run(self, rcu: &Rcu) {
        match self {
            Wait::Barrier => rcu.barrier(),
            Wait::Synchronize => rcu.synchronize(),
            // A cookie that is not complete, so that only the misuse check
            // can stop it from waiting.
            Wait::CondSynchronize => rcu.cond_synchronize(rcu.snapshot()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Wait::Barrier => "barrier",
            Wait::Synchronize => "synchronize",
            Wait::CondSynchronize => "cond_synchronize",
        }
    }
}

/// barrier(), synchronize() and cond_synchronize() from inside a callback of the same domain
/// panic with a message that names the function and says "callback" (the callback catches
/// the panic itself and reports the message).
#[test]
fn waiting_inside_a_callback_of_the_same_domain_panics() {
    let rcu = Rcu::builder().shards(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    for wait in Wait::ALL {
        let (r, tx) = (rcu.clone(), tx.clone());
        rcu.call(move || {
            let res = catch_unwind(AssertUnwindSafe(|| wait.run(&r)));
            let _ = tx.send((wait, res.map_err(|e| panic_text(&*e))));
        });
    }
    for _ in Wait::ALL {
        let (wait, res) = common::recv(&rx, "a callback's report");
        let msg = res.expect_err(&format!("{wait:?} inside a callback returned"));
        let expected = format!(
            "rcu_offload: {}() called from a callback of the same domain",
            wait.name()
        );
        assert!(msg.contains(&expected), "{wait:?}: {msg}");
        assert!(msg.contains("Queue more work with call() instead"), "{msg}");
    }
    common::within("barrier() after the misuse", move || {
        rcu.barrier();
        assert_eq!(rcu.stats().panics, 0, "the callbacks caught their panics");
    });
}

/// Uncaught, the same misuse is a panicking callback: counted in stats().panics, and the
/// worker runs later callbacks of the same shard; barrier() still returns.
#[test]
fn uncaught_waiting_inside_a_callback_is_counted_as_a_panic() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let rcu = Rcu::builder().shards(1).build().unwrap();
    let after = Arc::new(AtomicUsize::new(0));
    for wait in Wait::ALL {
        let r = rcu.clone();
        rcu.call(move || wait.run(&r));
        let a = Arc::clone(&after);
        rcu.call(move || {
            a.fetch_add(1, Ordering::SeqCst);
        });
    }
    common::within("barrier() after panicking callbacks", move || {
        rcu.barrier();
        assert_eq!(rcu.stats().panics, 3);
        assert_eq!(after.load(Ordering::SeqCst), 3);
    });
}

/// From inside a callback of domain A, waiting on domain B is fine: B.barrier() waits for B's
/// earlier callbacks, B.synchronize() and B.cond_synchronize() return.
#[test]
fn waiting_on_another_domain_inside_a_callback_works() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const N: usize = 50;
    let a = Rcu::builder().shards(1).build().unwrap();
    let b = Rcu::builder().shards(2).build().unwrap();
    let ran_b = Arc::new(AtomicUsize::new(0));
    for _ in 0..N {
        let r = Arc::clone(&ran_b);
        b.call(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
    }
    let (tx, rx) = mpsc::channel();
    {
        let (b, ran_b) = (b.clone(), Arc::clone(&ran_b));
        a.call(move || {
            let res = catch_unwind(AssertUnwindSafe(|| {
                b.barrier();
                let seen = ran_b.load(Ordering::SeqCst);
                let c = b.snapshot();
                b.synchronize();
                b.cond_synchronize(c);
                b.cond_synchronize(b.snapshot());
                seen
            }));
            let _ = tx.send(res.map_err(|e| panic_text(&*e)));
        });
    }
    let seen = common::recv(&rx, "A's callback").unwrap_or_else(|m| panic!("{m}"));
    assert_eq!(seen, N, "B.barrier() inside A's callback returned early");
    common::within("A's barrier", move || {
        a.barrier();
        b.barrier();
        assert_eq!(a.stats().panics, 0);
    });
}

/// RcuCell::load with a guard of another domain panics.
#[test]
#[should_panic(expected = "rcu_offload: RcuCell::load with a ReadGuard of another domain")]
fn rcu_cell_load_with_foreign_guard_panics() {
    let a = Rcu::new();
    let b = Rcu::new();
    let cell = rcu_offload::RcuCell::new(&a, 7u32);
    let g = b.read();
    let _ = cell.load(&g);
}

/// RcuCell::load with a guard of the cell's domain taken through a clone of the handle is fine;
/// with a guard of another domain nested inside a section of the right one, it still panics.
#[test]
fn rcu_cell_load_checks_the_guards_domain_not_the_handle() {
    let a = Rcu::new();
    let a2 = a.clone();
    let b = Rcu::new();
    let cell = rcu_offload::RcuCell::new(&a, 7u32);
    let ga = a2.read();
    assert_eq!(*cell.load(&ga), 7);
    let gb = b.read();
    let err = catch_unwind(AssertUnwindSafe(|| *cell.load(&gb))).unwrap_err();
    assert!(panic_text(&*err).contains("RcuCell::load with a ReadGuard of another domain"));
    drop(gb);
    drop(ga);
}

/// Writing a cell from inside its own `update` closure panics instead of
/// deadlocking on the writer lock; the cell is left as it was, and usable.
#[test]
fn rcu_cell_written_from_its_own_update_panics() {
    for nested_update in [false, true] {
        let rcu = Rcu::new();
        let cell = rcu_offload::RcuCell::new(&rcu, 1u32);
        let r = catch_unwind(AssertUnwindSafe(|| {
            cell.update(|v| {
                if nested_update {
                    cell.update(|w| w + 1);
                } else {
                    cell.replace(7);
                }
                v + 1
            })
        }));
        let msg = panic_text(&*r.expect_err("re-entrant write must panic"));
        assert!(msg.contains("inside RcuCell::update"), "{msg}");
        assert_eq!(*cell.load(&rcu.read()), 1);
        cell.update(|v| v + 1);
        assert_eq!(*cell.load(&rcu.read()), 2);
    }
}
