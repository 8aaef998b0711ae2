//! fork(): a child of a process that used a domain can go on using it.
//! Each test forks for real; the child uses the domain and exits with a
//! status that the parent checks (0: all good; anything else names the
//! failed step). A child that hangs is killed after a generous bound and
//! fails the test.
#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use rcu_offload::Rcu;

/// Fork; run `child` in the child and `_exit` with its status; in the
/// parent, return the child's exit status (or fail if it hangs or dies).
fn fork_and_wait(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY (test): the child only runs `child` and exits with `_exit`,
    // never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        // SAFETY (test): ends the child without running the parent's exit
        // handlers.
        unsafe { libc::_exit(code) };
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut status = 0;
        // SAFETY (test): `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            assert!(
                libc::WIFEXITED(status),
                "child did not exit normally (status {status:#x})"
            );
            return libc::WEXITSTATUS(status);
        }
        if Instant::now() > deadline {
            // SAFETY (test): killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            unsafe { libc::waitpid(pid, &mut status, 0) };
            panic!("the child hung for 60 s");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A thread inside a read-side section of `rcu` until `release` fires.
fn reader_in_section(rcu: &Rcu) -> (mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (inside_tx, inside_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let r = rcu.clone();
    let h = thread::Builder::new()
        .name("held-reader".into())
        .spawn(move || {
            let _g = r.read();
            inside_tx.send(()).unwrap();
            let _ = release_rx.recv();
        })
        .unwrap();
    inside_rx.recv().unwrap();
    (release_tx, h)
}

#[test]
fn the_child_synchronizes_despite_a_parent_reader_inside_a_section() {
    let rcu = Rcu::new();
    rcu.call(|| ()); // start the workers
    rcu.barrier();
    let (release, h) = reader_in_section(&rcu);
    // A grace period in progress at the fork, waiting for that reader.
    let r = rcu.clone();
    let gp = thread::spawn(move || r.synchronize());
    thread::sleep(Duration::from_millis(20));
    let status = fork_and_wait(|| {
        rcu.synchronize();
        rcu.synchronize();
        let cookie = rcu.start_poll();
        while !rcu.poll(cookie) {
            thread::yield_now();
        }
        0
    });
    assert_eq!(status, 0);
    release.send(()).unwrap();
    h.join().unwrap();
    gp.join().unwrap();
}

#[test]
fn callbacks_pending_at_the_fork_run_in_both_processes() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    RAN.store(0, Ordering::SeqCst);
    let rcu = Rcu::builder().shards(2).build().unwrap();
    let (inside_tx, inside_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    // A scoped reader borrows the domain: the test's is its only handle.
    thread::scope(|s| {
        let r = &rcu;
        s.spawn(move || {
            let _g = r.read();
            inside_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        inside_rx.recv().unwrap();
        // Held up by the reader: certainly pending at the fork.
        for _ in 0..1000 {
            rcu.call(|| {
                RAN.fetch_add(1, Ordering::SeqCst);
            });
        }
        let status = fork_and_wait(|| {
            // The reader does not exist here; its record is gone.
            rcu.barrier();
            if RAN.load(Ordering::SeqCst) != 1000 {
                return 2;
            }
            let ran = Arc::new(AtomicUsize::new(0));
            let r = Arc::clone(&ran);
            rcu.call(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
            rcu.call(|| {
                RAN.fetch_add(1, Ordering::SeqCst);
            });
            // SAFETY (test): the child's copy of the only handle, dropped
            // once; the original is never used again (the child exits).
            let last = unsafe { std::ptr::read(&rcu) };
            drop(last); // the last handle: runs the pending callback, joins
            if ran.load(Ordering::SeqCst) != 1 || RAN.load(Ordering::SeqCst) != 1001 {
                return 3;
            }
            0
        });
        assert_eq!(status, 0);
        assert_eq!(RAN.load(Ordering::SeqCst), 0, "held up by the reader");
        release_tx.send(()).unwrap();
    });
    rcu.barrier();
    assert_eq!(RAN.load(Ordering::SeqCst), 1000);
}

#[test]
fn a_domain_forked_from_its_callback_panics_naming_fork_in_the_child() {
    let rcu = Rcu::new();
    // Another domain, with workers of its own, stays usable in the child.
    let other = Rcu::new();
    other.call(|| ());
    other.barrier();
    let (tx, rx) = mpsc::channel();
    let r = rcu.clone();
    rcu.call(move || {
        let status = fork_and_wait(|| {
            let ran = Arc::new(AtomicUsize::new(0));
            let o = Arc::clone(&ran);
            other.call(move || {
                o.fetch_add(1, Ordering::SeqCst);
            });
            other.barrier();
            if ran.load(Ordering::SeqCst) != 1 {
                return 9;
            }
            let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                r.call(|| ());
                r.barrier();
            }))
            .expect_err("a domain forked on its worker must refuse");
            let msg = err
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            std::mem::forget(r);
            if msg.contains("fork") {
                0
            } else {
                4
            }
        });
        tx.send(status).unwrap();
    });
    let status = rx.recv_timeout(Duration::from_secs(90)).unwrap();
    assert_eq!(status, 0);
    rcu.barrier();
}

#[test]
fn a_polled_grace_period_pending_at_the_fork_completes_in_the_child() {
    let rcu = Rcu::new();
    let (release, h) = reader_in_section(&rcu);
    // The engine thread runs this grace period, and waits for the reader.
    let cookie = rcu.start_poll();
    thread::sleep(Duration::from_millis(20));
    let status = fork_and_wait(|| {
        // Nobody polls the engine again: the child's own engine must run.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !rcu.poll(cookie) {
            if Instant::now() > deadline {
                return 5;
            }
            thread::sleep(Duration::from_millis(1));
        }
        0
    });
    assert_eq!(status, 0);
    assert!(!rcu.poll(cookie), "the parent's reader still holds it up");
    release.send(()).unwrap();
    h.join().unwrap();
    rcu.synchronize();
    assert!(rcu.poll(cookie));
}

#[test]
fn a_barrier_waiting_at_the_fork_does_not_stop_the_childs() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    let rcu = Rcu::builder().shards(1).build().unwrap();
    let (block_tx, block_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel();
    // A callback that blocks the shard's CB worker, and a barrier waiting
    // behind it on another thread.
    rcu.call(move || {
        started_tx.send(()).unwrap();
        let _ = block_rx.recv();
    });
    started_rx.recv().unwrap();
    for _ in 0..10 {
        rcu.call(|| {
            RAN.fetch_add(1, Ordering::SeqCst);
        });
    }
    let r = rcu.clone();
    let waiter = thread::spawn(move || r.barrier());
    thread::sleep(Duration::from_millis(20));
    let status = fork_and_wait(|| {
        // The blocked callback was the parent's CB worker's: it does not
        // run here; the ten behind it do, and barriers complete.
        rcu.barrier();
        if RAN.load(Ordering::SeqCst) != 10 {
            return 6;
        }
        rcu.call(|| {
            RAN.fetch_add(1, Ordering::SeqCst);
        });
        rcu.barrier();
        if RAN.load(Ordering::SeqCst) != 11 {
            return 7;
        }
        0
    });
    assert_eq!(status, 0);
    block_tx.send(()).unwrap();
    waiter.join().unwrap();
    assert_eq!(RAN.load(Ordering::SeqCst), 10);
}

#[test]
fn callbacks_staged_by_another_thread_run_in_the_child() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    let rcu = Rcu::new();
    let (staged_tx, staged_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel::<()>();
    let r = rcu.clone();
    let stager = thread::spawn(move || {
        // Fewer than a feed holds: staged in this thread's feed, handed
        // over only by a GP worker's scan or a barrier.
        for _ in 0..10 {
            r.call(|| {
                RAN.fetch_add(1, Ordering::SeqCst);
            });
        }
        staged_tx.send(()).unwrap();
        let _ = exit_rx.recv();
    });
    staged_rx.recv().unwrap();
    let status = fork_and_wait(|| {
        rcu.barrier();
        if RAN.load(Ordering::SeqCst) != 10 {
            return 8;
        }
        0
    });
    assert_eq!(status, 0);
    exit_tx.send(()).unwrap();
    stager.join().unwrap();
    rcu.barrier();
    assert_eq!(RAN.load(Ordering::SeqCst), 10);
}

#[test]
fn a_child_forked_in_a_callback_ends_when_the_callback_returns() {
    let rcu = Rcu::new();
    let (tx, rx) = mpsc::channel();
    rcu.call(move || {
        // SAFETY (test): the child only returns from this callback.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // The child: its only thread returns to the CB worker's loop,
            // which must let it go (the process then ends, status 0)
            // rather than go on as a worker of the parent's queues.
            return;
        }
        tx.send(pid).unwrap();
    });
    let pid = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut status = 0;
    loop {
        // SAFETY (test): `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if Instant::now() > deadline {
            // SAFETY (test): killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the child hung for 60 s");
        }
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status:#x}"
    );
    rcu.barrier();
}

#[test]
fn a_call_in_the_child_runs_without_a_barrier() {
    let rcu = Rcu::new();
    // This thread's feed exists and is open at the fork.
    rcu.call(|| ());
    rcu.barrier();
    rcu.call(|| ());
    let status = fork_and_wait(|| {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        rcu.call(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        // No barrier, no more calls: the callback must run on its own.
        let deadline = Instant::now() + Duration::from_secs(30);
        while ran.load(Ordering::SeqCst) == 0 {
            if Instant::now() > deadline {
                return 10;
            }
            thread::sleep(Duration::from_millis(1));
        }
        0
    });
    assert_eq!(status, 0);
    rcu.barrier();
}
