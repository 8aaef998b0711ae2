//! Misuse that the documentation promises to turn into a panic: waiting for a
//! grace period from inside a read-side section of the same domain, and
//! cookies from another domain.
#![cfg(not(loom))]

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
