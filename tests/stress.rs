//! Publish/retire stress with real threads: readers must never see an object
//! that a writer retired after a grace period, whichever way the writer waits
//! for it, with and without membarrier-based readers.
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use common::{check_raw, poll_until_done, Obj, Published};
use rcu_offload::Rcu;

/// Reader threads per test.
const READERS: usize = 3;
/// Updates (publish + grace period + retire) per single-writer test.
const UPDATES: u64 = 2_000;
/// How many times a reader re-reads every field inside one section.
const ROUNDS: usize = 3;

/// How a writer waits before retiring an object.
#[derive(Clone, Copy, Debug)]
enum Retire {
    /// `synchronize()` after every update.
    Synchronize,
    /// `start_poll()`, retire when `poll()` says so (a few may be pending).
    Poll,
    /// `snapshot()`, then `cond_synchronize()` a few updates later.
    CondSynchronize,
}

/// How readers read.
#[derive(Clone, Copy, Debug)]
enum ReadShape {
    /// One flat section per iteration.
    Flat,
    /// Outer and inner sections, each loading the pointer; the outer guard
    /// is dropped first every other time, and both objects are re-checked
    /// while only the inner one lives.
    Nested,
}

struct Setup {
    rcu: Rcu,
    shared: Published,
    stop: AtomicBool,
    sections: AtomicU64,
    serial: AtomicU64,
}

fn domain(membarrier: bool, spin: Option<u32>) -> Rcu {
    let mut b = Rcu::builder().membarrier(membarrier);
    if let Some(s) = spin {
        b = b.gp_spin_limit(s);
    }
    b.build().expect("valid configuration")
}

fn reader_loop(s: &Setup, shape: ReadShape, started: &Barrier) {
    let mut first = true;
    let mut i: u64 = 0;
    loop {
        i += 1;
        match shape {
            ReadShape::Flat => {
                let _g = s.rcu.read();
                s.shared.read_check(ROUNDS).unwrap();
                if i % 16 == 0 {
                    // Get preempted inside a section now and then, so that
                    // grace periods really have to wait (and sleep) for us.
                    thread::yield_now();
                    s.shared.read_check(1).unwrap();
                }
            }
            ReadShape::Nested => {
                let outer = s.rcu.read();
                let p1 = s.shared.load();
                // SAFETY: loaded inside the open section.
                unsafe { check_raw(p1, 1) }.unwrap();
                let inner = s.rcu.read();
                let p2 = s.shared.load();
                if i % 2 == 0 {
                    drop(outer);
                    if i % 16 == 0 {
                        thread::yield_now();
                    }
                    // SAFETY: the section is still open through `inner`.
                    unsafe { check_raw(p1, ROUNDS) }.unwrap();
                    unsafe { check_raw(p2, ROUNDS) }.unwrap();
                    drop(inner);
                } else {
                    drop(inner);
                    // SAFETY: the section is still open through `outer`.
                    unsafe { check_raw(p1, ROUNDS) }.unwrap();
                    unsafe { check_raw(p2, ROUNDS) }.unwrap();
                    drop(outer);
                }
            }
        }
        s.sections.fetch_add(1, Ordering::Relaxed);
        if first {
            first = false;
            started.wait();
        }
        if s.stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

fn writer_loop(s: &Setup, mode: Retire, updates: u64) {
    let next = || s.serial.fetch_add(1, Ordering::Relaxed) + 1;
    let mut pending: VecDeque<(rcu_offload::GpCookie, *mut Obj)> = VecDeque::new();
    for _ in 0..updates {
        let old = s.shared.replace(next());
        match mode {
            Retire::Synchronize => {
                s.rcu.synchronize();
                // SAFETY: unpublished, then a full grace period.
                unsafe { Obj::retire(old) };
            }
            Retire::Poll => {
                pending.push_back((s.rcu.start_poll(), old));
                while let Some(&(c, p)) = pending.front() {
                    if pending.len() > 8 {
                        poll_until_done(&s.rcu, c);
                    } else if !s.rcu.poll(c) {
                        break;
                    }
                    pending.pop_front();
                    // SAFETY: poll() reported a full grace period since `p`
                    // was unpublished.
                    unsafe { Obj::retire(p) };
                }
            }
            Retire::CondSynchronize => {
                pending.push_back((s.rcu.snapshot(), old));
                if pending.len() > 4 {
                    let (c, p) = pending.pop_front().unwrap();
                    s.rcu.cond_synchronize(c);
                    assert!(s.rcu.poll(c), "cond_synchronize returned early");
                    // SAFETY: cond_synchronize waited for a full grace period
                    // since `p` was unpublished (or one had already elapsed).
                    unsafe { Obj::retire(p) };
                }
            }
        }
    }
    for (c, p) in pending {
        s.rcu.cond_synchronize(c);
        // SAFETY: as above.
        unsafe { Obj::retire(p) };
    }
}

/// Runs `READERS` readers against one writer per entry of `writers`, each
/// doing `updates` updates; returns the number of grace periods completed.
fn run(rcu: Rcu, shape: ReadShape, writers: &[Retire], updates: u64) -> u64 {
    let s = Arc::new(Setup {
        rcu,
        shared: Published::new(),
        stop: AtomicBool::new(false),
        sections: AtomicU64::new(0),
        serial: AtomicU64::new(0),
    });
    // Readers have each completed one section (so are registered and
    // running) before any writer starts.
    let started = Arc::new(Barrier::new(READERS + writers.len()));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (s, started) = (Arc::clone(&s), Arc::clone(&started));
            thread::spawn(move || reader_loop(&s, shape, &started))
        })
        .collect();
    let ws: Vec<_> = writers
        .iter()
        .map(|&mode| {
            let (s, started) = (Arc::clone(&s), Arc::clone(&started));
            thread::spawn(move || {
                started.wait();
                writer_loop(&s, mode, updates);
            })
        })
        .collect();
    let mut failure = None;
    for w in ws {
        if let Err(e) = w.join() {
            failure.get_or_insert(e);
        }
    }
    s.stop.store(true, Ordering::Relaxed);
    for r in readers {
        if let Err(e) = r.join() {
            failure.get_or_insert(e);
        }
    }
    if let Some(e) = failure {
        std::panic::resume_unwind(e);
    }
    assert!(s.sections.load(Ordering::Relaxed) >= READERS as u64);
    // Every object but the current one was retired by a writer.
    assert_eq!(
        s.serial.load(Ordering::Relaxed),
        updates * writers.len() as u64
    );
    s.rcu.completed_grace_periods()
}

/// Defines one test per reader fence mode: `<name>_membarrier` (compiler-fence
/// readers, membarrier grace periods) and `<name>_full_fences` (the
/// fallback). The body sees `membarrier: bool`.
macro_rules! both_fence_modes {
    ($(#[doc = $doc:literal])* $name:ident, |$mb:ident| $body:block) => {
        mod $name {
            use super::*;

            $(#[doc = $doc])*
            /// (membarrier readers)
            #[test]
            fn membarrier() {
                let $mb = true;
                $body
            }

            $(#[doc = $doc])*
            /// (full-fence readers)
            #[test]
            fn full_fences() {
                let $mb = false;
                $body
            }
        }
    };
}

both_fence_modes!(
    /// synchronize() protects readers; a lone writer needs one GP per call.
    synchronize,
    |membarrier| {
        let gps = run(
            domain(membarrier, None),
            ReadShape::Flat,
            &[Retire::Synchronize],
            UPDATES,
        );
        assert!(gps >= UPDATES, "each synchronize() needs its own GP here");
    }
);

both_fence_modes!(
    /// With no spinning, every wait sleeps: readers leaving must wake the grace period.
    synchronize_sleeping_waits,
    |membarrier| {
        run(
            domain(membarrier, Some(0)),
            ReadShape::Flat,
            &[Retire::Synchronize],
            UPDATES,
        );
    }
);

both_fence_modes!(
    /// start_poll()/poll() protects readers.
    start_poll,
    |membarrier| {
        run(domain(membarrier, None), ReadShape::Flat, &[Retire::Poll], UPDATES);
    }
);

both_fence_modes!(
    /// snapshot()/cond_synchronize() protects readers and skips grace periods for old cookies.
    cond_synchronize,
    |membarrier| {
        let gps = run(
            domain(membarrier, None),
            ReadShape::Flat,
            &[Retire::CondSynchronize],
            UPDATES,
        );
        // One grace period serves the four or five cookies queued behind it.
        assert!(gps <= UPDATES / 2, "{gps} grace periods for {UPDATES} cookies");
    }
);

both_fence_modes!(
    /// A nested section lasts until its last guard drops, in either drop order.
    nested_sections,
    |membarrier| {
        run(
            domain(membarrier, None),
            ReadShape::Nested,
            &[Retire::Synchronize],
            UPDATES,
        );
    }
);

both_fence_modes!(
    /// Concurrent synchronize() callers share grace periods without cutting any short.
    concurrent_writers,
    |membarrier| {
        let w = [Retire::Synchronize; 3];
        let per = UPDATES / 3;
        let gps = run(domain(membarrier, None), ReadShape::Flat, &w, per);
        // Each synchronize() runs at most one grace period itself.
        assert!(gps <= per * 3, "{gps} grace periods for {} calls", per * 3);
    }
);

both_fence_modes!(
    /// Writers using all three retire styles at once, with nested readers.
    mixed_writers_nested,
    |membarrier| {
        let w = [Retire::Synchronize, Retire::Poll, Retire::CondSynchronize];
        run(domain(membarrier, Some(0)), ReadShape::Nested, &w, UPDATES / 3);
    }
);
