//! Reader threads that come and go: registration at first read, release at
//! thread exit, and grace periods that are waiting while threads exit.
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use common::{poll_until_done, recv, within, Obj, Published};
use rcu_offload::Rcu;

/// Short-lived reader threads spawned continuously while another thread
/// publishes, synchronizes and retires in a loop.
fn churn(rcu: Rcu) {
    const THREADS: usize = 240;
    const BATCH: usize = 4;
    let shared = Arc::new(Published::new());
    let done = Arc::new(AtomicBool::new(false));
    let updates = Arc::new(AtomicU64::new(0));
    let (first_tx, first_rx) = mpsc::channel();
    let updater = {
        let (rcu, shared, done, updates) = (
            rcu.clone(),
            Arc::clone(&shared),
            Arc::clone(&done),
            Arc::clone(&updates),
        );
        thread::spawn(move || {
            let mut serial = 0;
            while !done.load(Ordering::Relaxed) {
                serial += 1;
                let old = shared.replace(serial);
                rcu.synchronize();
                // SAFETY: unpublished, then a grace period.
                unsafe { Obj::retire(old) };
                if updates.fetch_add(1, Ordering::Relaxed) == 0 {
                    first_tx.send(()).unwrap();
                }
            }
        })
    };
    recv(&first_rx, "the updater's first update");
    for batch in 0..THREADS / BATCH {
        let ts: Vec<_> = (0..BATCH)
            .map(|i| {
                let (rcu, shared) = (rcu.clone(), Arc::clone(&shared));
                thread::spawn(move || {
                    let _g = rcu.read();
                    shared.read_check(3).unwrap();
                    if (batch + i) % 3 == 0 {
                        // Sometimes exit while still inside the section's
                        // scheduling window.
                        thread::yield_now();
                        shared.read_check(1).unwrap();
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
    }
    done.store(true, Ordering::Relaxed);
    within("updater to stop", move || updater.join().unwrap());
    assert!(updates.load(Ordering::Relaxed) >= 1);
    // The domain still works, for old and new threads alike.
    let r2 = rcu.clone();
    within("synchronize after churn", move || {
        r2.synchronize();
        let c = r2.start_poll();
        poll_until_done(&r2, c);
    });
    let r3 = rcu.clone();
    thread::spawn(move || drop(r3.read())).join().unwrap();
    within("synchronize after one more thread", move || {
        rcu.synchronize()
    });
}

/// Reader threads that read once and exit never break concurrent grace periods (membarrier).
#[test]
fn thread_churn_during_synchronize_loop_membarrier() {
    churn(Rcu::builder().membarrier(true).build().unwrap());
}

/// Reader threads that read once and exit never break concurrent grace periods (full fences).
#[test]
fn thread_churn_during_synchronize_loop_full_fences() {
    churn(
        Rcu::builder()
            .membarrier(false)
            .gp_spin_limit(0)
            .build()
            .unwrap(),
    );
}

/// A reader that leaves and exits while a grace period waits for it lets
/// that grace period complete, and not before it left.
fn exit_while_gp_waits(rcu: Rcu, polled: bool) {
    let released = Arc::new(AtomicBool::new(false));
    let (inside_tx, inside_rx) = mpsc::channel();
    let (gp_started_tx, gp_started_rx) = mpsc::channel();
    let reader = {
        let (rcu, released) = (rcu.clone(), Arc::clone(&released));
        thread::spawn(move || {
            let g = rcu.read();
            inside_tx.send(()).unwrap();
            recv(&gp_started_rx, "the grace period to start");
            // Widen the window so that the grace period is really waiting
            // (spinning or asleep) when we leave; correct without it.
            thread::sleep(Duration::from_millis(10));
            released.store(true, Ordering::SeqCst);
            drop(g);
            // ...and the thread exits right away, dropping its record.
        })
    };
    recv(&inside_rx, "the reader to enter");
    let gp = {
        let (rcu, released) = (rcu.clone(), Arc::clone(&released));
        thread::spawn(move || {
            if polled {
                let c = rcu.start_poll();
                gp_started_tx.send(()).unwrap();
                poll_until_done(&rcu, c);
            } else {
                gp_started_tx.send(()).unwrap();
                rcu.synchronize();
            }
            assert!(
                released.load(Ordering::SeqCst),
                "grace period ended while the reader was inside"
            );
        })
    };
    within("the grace period after the reader exited", move || {
        gp.join().unwrap()
    });
    reader.join().unwrap();
    within("a later grace period", move || rcu.synchronize());
}

/// A thread exiting while synchronize() waits for it lets it complete (spinning wait).
#[test]
fn thread_exit_during_synchronize() {
    exit_while_gp_waits(Rcu::new(), false);
}

/// A thread exiting while synchronize() sleeps waiting for it wakes it (no spinning, membarrier).
#[test]
fn thread_exit_during_sleeping_synchronize_membarrier() {
    exit_while_gp_waits(Rcu::builder().gp_spin_limit(0).build().unwrap(), false);
}

/// A thread exiting while synchronize() sleeps waiting for it wakes it (no spinning, full fences).
#[test]
fn thread_exit_during_sleeping_synchronize_full_fences() {
    let rcu = Rcu::builder()
        .membarrier(false)
        .gp_spin_limit(0)
        .build()
        .unwrap();
    exit_while_gp_waits(rcu, false);
}

/// A thread exiting while the engine thread's polled grace period waits for it lets it complete.
#[test]
fn thread_exit_during_polled_grace_period() {
    exit_while_gp_waits(Rcu::builder().gp_spin_limit(0).build().unwrap(), true);
}

/// Many threads in sections at once, leaving one by one and exiting, let a waiting grace period finish.
#[test]
fn many_readers_exit_while_gp_waits() {
    const N: usize = 8;
    let rcu = Rcu::builder().gp_spin_limit(0).build().unwrap();
    let left = Arc::new(AtomicU64::new(0));
    let (inside_tx, inside_rx) = mpsc::channel();
    let mut go = Vec::new();
    let readers: Vec<_> = (0..N)
        .map(|_| {
            let (rcu, left, inside_tx) = (rcu.clone(), Arc::clone(&left), inside_tx.clone());
            let (go_tx, go_rx) = mpsc::channel::<()>();
            go.push(go_tx);
            thread::spawn(move || {
                let g = rcu.read();
                inside_tx.send(()).unwrap();
                let _ = go_rx.recv();
                left.fetch_add(1, Ordering::SeqCst);
                drop(g);
            })
        })
        .collect();
    for _ in 0..N {
        recv(&inside_rx, "readers to enter");
    }
    let gp = {
        let (rcu, left) = (rcu.clone(), Arc::clone(&left));
        thread::spawn(move || {
            rcu.synchronize();
            assert_eq!(left.load(Ordering::SeqCst), N as u64, "GP ended early");
        })
    };
    for (i, g) in go.into_iter().enumerate() {
        if i % 3 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
        g.send(()).unwrap();
    }
    for r in readers {
        r.join().unwrap();
    }
    within("the grace period", move || gp.join().unwrap());
}
