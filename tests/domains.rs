//! Domain lifetime: dropping the last handle stops and joins the engine
//! thread, dropping one handle leaves clones working, and threads that read
//! many short-lived domains keep working.
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::sync::mpsc;
use std::thread;

use common::{poll_until_done, recv, wait_until, within};
use rcu_offload::Rcu;

/// Names of this process's threads (Linux: `/proc/self/task/*/comm`).
#[cfg(target_os = "linux")]
fn thread_names() -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) {
                names.push(comm.trim_end().to_string());
            }
        }
    }
    names
}

#[cfg(target_os = "linux")]
fn count_named(name: &str) -> usize {
    thread_names().iter().filter(|n| *n == name).count()
}

/// start_poll() starts one engine thread named `{prefix}rcu_gp`; dropping the last handle (only) stops it.
#[cfg(target_os = "linux")]
#[test]
fn drop_after_start_poll_joins_named_engine_thread() {
    // A prefix no other test uses, so the count is ours alone.
    const NAME: &str = "dj1-rcu_gp";
    let rcu = Rcu::builder().thread_name_prefix("dj1-").build().unwrap();
    assert_eq!(count_named(NAME), 0, "engine started before start_poll");
    rcu.synchronize();
    assert_eq!(
        count_named(NAME),
        0,
        "synchronize() must not start the engine"
    );
    for _ in 0..3 {
        let c = rcu.start_poll();
        poll_until_done(&rcu, c);
    }
    assert_eq!(count_named(NAME), 1, "exactly one engine thread");
    let clone = rcu.clone();
    drop(rcu);
    assert_eq!(
        count_named(NAME),
        1,
        "a clone still lives: engine must stay"
    );
    let c = clone.start_poll();
    poll_until_done(&clone, c);
    within("dropping the last handle", move || drop(clone));
    // join() has returned; the kernel may take a moment to remove the task.
    wait_until("the engine thread to disappear", || count_named(NAME) == 0);
}

/// Dropping the last handle right after start_poll(), while the engine may be mid-grace-period, returns.
#[test]
fn drop_right_after_start_poll_returns() {
    within("dropping domains with fresh engine requests", || {
        for i in 0..100 {
            let rcu = Rcu::builder().membarrier(i % 2 == 0).build().unwrap();
            drop(rcu.read());
            let _ = rcu.start_poll();
            if i % 3 == 0 {
                let _ = rcu.start_poll();
            }
            drop(rcu);
        }
    });
}

/// Dropping the last handle while the engine waits for a reader (on a clone) returns once that reader leaves.
#[test]
fn drop_last_handle_after_reader_leaves_while_engine_waits() {
    let rcu = Rcu::builder().gp_spin_limit(0).build().unwrap();
    let (inside_tx, inside_rx) = mpsc::channel();
    let (leave_tx, leave_rx) = mpsc::channel::<()>();
    let reader = {
        let rcu = rcu.clone();
        thread::spawn(move || {
            let g = rcu.read();
            inside_tx.send(()).unwrap();
            let _ = leave_rx.recv();
            drop(g);
            // This thread's handle is the last one: dropping it joins an
            // engine that may still be finishing the grace period.
            drop(rcu);
        })
    };
    recv(&inside_rx, "the reader");
    let c = rcu.start_poll();
    assert!(!rcu.poll(c));
    drop(rcu); // not the last handle: must not wait for the engine
    leave_tx.send(()).unwrap();
    within("the last handle's drop", move || reader.join().unwrap());
}

/// A domain keeps working for other threads' clones after the creating handle is dropped.
#[test]
fn dropping_one_handle_keeps_domain_working() {
    let rcu = Rcu::new();
    let c0 = rcu.start_poll();
    let clones: Vec<_> = (0..3).map(|_| rcu.clone()).collect();
    drop(rcu);
    let ts: Vec<_> = clones
        .into_iter()
        .map(|r| {
            thread::spawn(move || {
                poll_until_done(&r, c0);
                for _ in 0..20 {
                    drop(r.read());
                    r.synchronize();
                }
                let c = r.start_poll();
                poll_until_done(&r, c);
            })
        })
        .collect();
    within("clones to finish", move || {
        for t in ts {
            t.join().unwrap();
        }
    });
}

/// A thread that reads many short-lived domains (pruning its per-thread records) keeps every domain working.
#[test]
fn many_short_lived_domains_read_by_one_thread() {
    within("2,000 short-lived domains", || {
        let keeper = Rcu::new();
        for i in 0..2_000 {
            let d = Rcu::builder().membarrier(i % 2 == 0).build().unwrap();
            let g = d.read();
            // Interleave with a long-lived domain so the per-thread cache
            // switches between domains in both directions.
            let k = keeper.read();
            drop(g);
            drop(k);
            drop(d.read());
            if i % 100 == 0 {
                d.synchronize();
                keeper.synchronize();
                let c = d.start_poll();
                poll_until_done(&d, c);
            }
        }
        let g = keeper.read();
        let c = keeper.start_poll();
        assert!(
            !keeper.poll(c),
            "the long-lived domain lost this thread's section"
        );
        drop(g);
        poll_until_done(&keeper, c);
        let fresh = Rcu::new();
        drop(fresh.read());
        fresh.synchronize();
    });
}

/// Several threads creating, reading and dropping domains concurrently, while others read a shared one.
#[test]
fn concurrent_domain_churn() {
    let shared = Rcu::new();
    let ts: Vec<_> = (0..3)
        .map(|t| {
            let shared = shared.clone();
            thread::spawn(move || {
                for i in 0..300 {
                    let d = Rcu::new();
                    let sg = shared.read();
                    drop(d.read());
                    if (i + t) % 50 == 0 {
                        let c = d.start_poll();
                        drop(sg);
                        poll_until_done(&d, c);
                        shared.synchronize();
                    }
                }
            })
        })
        .collect();
    within("domain churn", move || {
        for t in ts {
            t.join().unwrap();
        }
        shared.synchronize();
    });
}

/// A thread that alternates among three domains (exercising both thread-local
/// cache entries and the slow path), with sections of one domain open while
/// it reads the others, stays protected in every domain while each domain's
/// writer retires objects; misuse is still detected for a domain that has
/// fallen out of the caches.
#[test]
fn readers_alternating_between_domains_stay_protected() {
    use common::Published;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const UPDATES: u64 = 2000;
    let domains: Arc<Vec<(Rcu, Published)>> =
        Arc::new((0..3).map(|_| (Rcu::new(), Published::new())).collect());
    let stop = Arc::new(AtomicBool::new(false));

    let writers: Vec<_> = (0..3)
        .map(|d| {
            let domains = Arc::clone(&domains);
            thread::spawn(move || {
                let (rcu, slot) = &domains[d];
                for serial in 1..=UPDATES {
                    let old = slot.replace(serial);
                    rcu.synchronize();
                    // SAFETY: unpublished above, and a grace period of the
                    // slot's own domain has elapsed.
                    unsafe { common::Obj::retire(old) };
                }
            })
        })
        .collect();

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (domains, stop) = (Arc::clone(&domains), Arc::clone(&stop));
            thread::spawn(move || -> Result<u64, String> {
                let mut sections = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Order A, B, A, C, B: hits the first and second cache
                    // entries and evicts into the slow path.
                    let (a, b, c) = (&domains[0], &domains[1], &domains[2]);
                    let ga = a.0.read();
                    let pa = a.1.load();
                    {
                        let _gb = b.0.read();
                        b.1.read_check(2)?;
                        let _ga2 = a.0.read();
                        let _gc = c.0.read();
                        c.1.read_check(2)?;
                    }
                    // SAFETY: `ga` (a section of `a`'s domain) is still open.
                    unsafe { common::check_raw(pa, 2) }?;
                    drop(ga);
                    let _gb = b.0.read();
                    b.1.read_check(1)?;
                    sections += 5;
                }
                Ok(sections)
            })
        })
        .collect();

    for w in writers {
        within("writer", move || w.join().expect("writer panicked"));
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let sections = r
            .join()
            .expect("reader panicked")
            .expect("reader saw a retired object");
        assert!(sections > 0);
    }

    // Domain 0 is now out of both caches of this thread (2 and 1 were read
    // last): misuse must still be caught through the slow path.
    let (a, b, c) = (&domains[0].0, &domains[1].0, &domains[2].0);
    let ga = a.read();
    drop(b.read());
    drop(c.read());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.synchronize()));
    let err = caught.expect_err("synchronize() inside a section of its own domain must panic");
    assert!(common::panic_text(&*err).contains("inside a read-side critical section"));
    drop(ga);
    a.synchronize();
}
