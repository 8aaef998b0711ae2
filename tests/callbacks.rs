//! The callback pipeline with real threads: `call`/`retire` run every
//! callback exactly once, never before a full grace period, in FIFO order per
//! thread; `barrier` waits for what was queued before it; panicking callbacks
//! are contained; dropping the last handle (anywhere, even inside one of the
//! domain's own callbacks) runs what is pending and stops the workers; the
//! counters of `stats()` add up.
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use common::{
    assert_settled, check_raw, counting, is_settled, join_all, join_and_barrier, recv, shard_total,
    spawn_n, wait_for_stats, wait_until, within, Failures, IdSet, Obj, Published, SendPtr,
};
use rcu_offload::{Rcu, RcuCell, ShardChoice};

/// One domain configuration under test.
#[derive(Clone, Copy, Debug)]
struct Config {
    shards: usize,
    stride: Option<usize>,
    batch: Option<usize>,
}

impl Config {
    const fn new(shards: usize, stride: Option<usize>, batch: Option<usize>) -> Self {
        Config {
            shards,
            stride,
            batch,
        }
    }

    fn build(self) -> Rcu {
        self.builder().build().expect("valid configuration")
    }

    fn builder(self) -> rcu_offload::Builder {
        let mut b = Rcu::builder().shards(self.shards);
        if let Some(s) = self.stride {
            b = b.gp_stride(s);
        }
        if let Some(l) = self.batch {
            b = b.callback_batch_limit(l);
        }
        b
    }
}

/// Shard counts 1 and 3, several GP-worker strides (one group, one group per
/// shard, uneven groups) and batch limits (1: a batch per callback).
const CONFIGS: [Config; 5] = [
    Config::new(1, None, None),
    Config::new(3, Some(1), None),
    Config::new(3, Some(3), Some(5)),
    Config::new(3, Some(2), Some(1)),
    Config::new(4, Some(2), None),
];

// --- Exactly once, after a grace period ---------------------------------------

/// Many threads x many calls, on every configuration: each callback runs exactly once, and a
/// `snapshot()` cookie taken before its `call()` is done when it runs.
#[test]
fn every_callback_runs_exactly_once_after_a_grace_period() {
    const THREADS: usize = 4;
    const PER: usize = 400;
    for cfg in CONFIGS {
        let rcu = cfg.build();
        let ids = Arc::new(IdSet::new(THREADS * PER));
        let early = Arc::new(Failures::default());
        let ts = {
            let (rcu, ids, early) = (rcu.clone(), Arc::clone(&ids), Arc::clone(&early));
            spawn_n(THREADS, move |t| {
                for i in 0..PER {
                    let id = t * PER + i;
                    let cookie = rcu.snapshot();
                    let (r, ids, early) = (rcu.clone(), Arc::clone(&ids), Arc::clone(&early));
                    rcu.call(move || {
                        if !r.poll(cookie) {
                            early.record(format!("callback {id} ran before its grace period"));
                        }
                        ids.insert(id);
                    });
                    if i % 100 == 99 {
                        // Let grace periods and callbacks interleave with
                        // the calls (and barriers race each other).
                        rcu.barrier();
                    }
                }
            })
        };
        within("callers and barrier", move || {
            join_all(ts);
            rcu.barrier();
        });
        early.assert_none(&format!("{cfg:?}"));
        assert_eq!(ids.duplicates(), 0, "{cfg:?}: a callback ran twice");
        assert_eq!(
            ids.len(),
            THREADS * PER,
            "{cfg:?}: callbacks missing after barrier(), e.g. {:?}",
            ids.missing(10)
        );
    }
}

/// `retire`d boxes are dropped exactly once each (drop counter), after barrier().
#[test]
fn retire_drops_each_box_once() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    const N: usize = 2_000;
    let rcu = Rcu::builder().shards(3).build().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let ts = {
        let (rcu, drops) = (rcu.clone(), Arc::clone(&drops));
        spawn_n(2, move |_| {
            for i in 0..N / 2 {
                rcu.retire(Box::new(Counted(Arc::clone(&drops))));
                // A large value: the box is moved, never copied.
                if i % 100 == 0 {
                    rcu.retire(Box::new([0u64; 512]));
                }
            }
        })
    };
    within("retiring threads and barrier", move || {
        join_all(ts);
        rcu.barrier();
    });
    assert_eq!(drops.load(Ordering::Relaxed), N);
}

/// A callback waits for every reader that was in a section when `call()` ran, on any thread,
/// until the last of them leaves.
#[test]
fn callback_waits_for_readers_that_started_before_call() {
    let rcu = Rcu::builder().shards(2).gp_stride(2).build().unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let mut leave = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (in_tx, in_rx) = mpsc::channel();
        let (leave_tx, leave_rx) = mpsc::channel::<()>();
        let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
        readers.push(thread::spawn(move || {
            let g = rcu.read();
            in_tx.send(()).unwrap();
            let _ = leave_rx.recv();
            // Still inside the section: the callback cannot have run.
            let early = ran.load(Ordering::SeqCst);
            drop(g);
            early
        }));
        recv(&in_rx, "a reader to enter its section");
        leave.push(leave_tx);
    }
    let cookie = rcu.snapshot();
    let early = Arc::new(Failures::default());
    {
        let (r, ran, early) = (rcu.clone(), Arc::clone(&ran), Arc::clone(&early));
        rcu.call(move || {
            if !r.poll(cookie) {
                early.record("ran before the grace period of its cookie".into());
            }
            ran.store(true, Ordering::SeqCst);
        });
    }
    // Give the pipeline every chance to run the callback too early.
    common::poke_gp_workers(&rcu);
    assert!(!ran.load(Ordering::SeqCst), "ran with two readers inside");
    leave.remove(0).send(()).unwrap();
    assert!(!readers.remove(0).join().unwrap(), "ran inside a section");
    common::poke_gp_workers(&rcu);
    assert!(!ran.load(Ordering::SeqCst), "ran with one reader inside");
    leave.remove(0).send(()).unwrap();
    assert!(!readers.remove(0).join().unwrap());
    within("the callback after the readers left", move || {
        wait_until("the callback", || ran.load(Ordering::SeqCst));
        drop(rcu);
    });
    early.assert_none("callback behind two readers");
}

/// A retired object is never freed while a reader that loaded it is still in its section:
/// readers check every field of published objects (nested and with yields) while a writer
/// replaces them and kills the old ones through `call()`.
#[test]
fn retired_objects_stay_live_for_readers_that_loaded_them() {
    const UPDATES: u64 = 3_000;
    for (cfg, membarrier) in [
        (Config::new(1, None, None), true),
        (Config::new(3, Some(1), Some(4)), false),
    ] {
        let rcu = cfg.builder().membarrier(membarrier).build().unwrap();
        let shared = Arc::new(Published::new());
        let stop = Arc::new(AtomicBool::new(false));
        let graveyard: Arc<Mutex<Vec<SendPtr<Obj>>>> = Arc::new(Mutex::new(Vec::new()));
        let killed = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (rcu, shared, stop) = (rcu.clone(), Arc::clone(&shared), Arc::clone(&stop));
                thread::spawn(move || -> Result<u64, String> {
                    let mut sections = 0u64;
                    while !stop.load(Ordering::Relaxed) || sections == 0 {
                        sections += 1;
                        let outer = rcu.read();
                        let p = shared.load();
                        // SAFETY: loaded inside the open section.
                        unsafe { check_raw(p, 2) }?;
                        if (sections + r) % 8 == 0 {
                            let inner = rcu.read();
                            let q = shared.load();
                            drop(outer);
                            thread::yield_now();
                            // SAFETY: the section is still open through `inner`.
                            unsafe { check_raw(p, 2) }?;
                            unsafe { check_raw(q, 2) }?;
                            drop(inner);
                        } else {
                            drop(outer);
                        }
                    }
                    Ok(sections)
                })
            })
            .collect();
        let writer = {
            let (rcu, shared, graveyard, killed) = (
                rcu.clone(),
                Arc::clone(&shared),
                Arc::clone(&graveyard),
                Arc::clone(&killed),
            );
            thread::spawn(move || {
                for serial in 1..=UPDATES {
                    let old = SendPtr(shared.replace(serial));
                    let (graveyard, k) = (Arc::clone(&graveyard), Arc::clone(&killed));
                    rcu.call(move || {
                        let p = old.into_inner();
                        // SAFETY: unpublished before call(), and a grace
                        // period has elapsed: no reader can reach it. Killed
                        // (poisoned), not freed, so that a reader that still
                        // could would read DEAD rather than freed memory.
                        unsafe { Obj::kill(p) };
                        graveyard.lock().unwrap().push(SendPtr(p));
                        k.fetch_add(1, Ordering::Relaxed);
                    });
                    if serial % 8 == 0 {
                        // Keep at most a few dozen objects in flight, so
                        // that retirements keep happening under the
                        // readers' feet instead of in one batch at the end.
                        wait_until("the writer's retirements", || {
                            killed.load(Ordering::Relaxed) + 32 >= serial
                        });
                    }
                }
            })
        };
        let results = within("writer, barrier and readers", move || {
            writer.join().unwrap();
            rcu.barrier();
            stop.store(true, Ordering::Relaxed);
            readers
                .into_iter()
                .map(|r| r.join().unwrap())
                .collect::<Vec<_>>()
        });
        for r in results {
            let sections = r.unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
            assert!(sections > 0);
        }
        let dead = std::mem::take(&mut *graveyard.lock().unwrap());
        assert_eq!(
            dead.len() as u64,
            UPDATES,
            "{cfg:?}: not every object retired"
        );
        for p in dead {
            // SAFETY: killed after its grace period; the readers are gone.
            unsafe { Obj::retire(p.into_inner()) };
        }
    }
}

/// `call()` inside a read-side section (also nested, and inside another domain's section)
/// does not block; the callback runs only after the section ends.
#[test]
fn call_inside_a_read_section_runs_after_it() {
    let rcu = Rcu::builder().shards(2).gp_stride(2).build().unwrap();
    let other = Rcu::new();
    let open = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(Failures::default());
    within("calls inside sections", {
        let (rcu, open, ran, bad) = (rcu.clone(), open.clone(), ran.clone(), bad.clone());
        move || {
            for depth in 1..=3 {
                let _o = other.read();
                let guards: Vec<_> = (0..depth).map(|_| rcu.read()).collect();
                open.store(true, Ordering::SeqCst);
                let cookie = rcu.snapshot();
                let (r, open2, ran2, bad2) = (rcu.clone(), open.clone(), ran.clone(), bad.clone());
                rcu.call(move || {
                    if open2.load(Ordering::SeqCst) {
                        bad2.record(format!("ran inside the caller's section (depth {depth})"));
                    }
                    if !r.poll(cookie) {
                        bad2.record("ran before its grace period".into());
                    }
                    ran2.fetch_add(1, Ordering::SeqCst);
                });
                common::poke_gp_workers(&rcu);
                assert_eq!(ran.load(Ordering::SeqCst), depth - 1);
                open.store(false, Ordering::SeqCst);
                drop(guards);
                rcu.barrier();
                assert_eq!(ran.load(Ordering::SeqCst), depth);
            }
        }
    });
    bad.assert_none("call() inside a section");
}

// --- Order ---------------------------------------------------------------------

/// Callbacks queued by one thread run in the order they were queued, on every configuration,
/// with `ShardChoice::PerThread`: the order the library promises. (Under the default
/// `PerCpu`, a thread that migrates between two hand-overs may put its callbacks on two
/// shards, and the later ones may run first, as `Builder::shard_choice` says; this test
/// once ran under `PerCpu` and failed whenever the scheduler moved a thread at the wrong
/// moment, and when a callback ran out of order, the thread's wait for its own latest
/// callbacks then never ended.)
#[test]
fn callbacks_of_one_thread_run_in_fifo_order() {
    const THREADS: usize = 4;
    const PER: u64 = 600;
    for cfg in CONFIGS {
        let rcu = cfg
            .builder()
            .shard_choice(ShardChoice::PerThread)
            .build()
            .expect("valid configuration");
        let last: Arc<Vec<AtomicU64>> = Arc::new((0..THREADS).map(|_| AtomicU64::new(0)).collect());
        let bad = Arc::new(Failures::default());
        let ts = {
            let (rcu, last, bad) = (rcu.clone(), Arc::clone(&last), Arc::clone(&bad));
            spawn_n(THREADS, move |t| {
                for i in 1..=PER {
                    let (l, bad) = (Arc::clone(&last), Arc::clone(&bad));
                    rcu.call(move || {
                        let prev = l[t].swap(i, Ordering::Relaxed);
                        if prev != i - 1 {
                            bad.record(format!("thread {t}: callback {i} ran after {prev}"));
                        }
                    });
                    if i % 100 == 0 {
                        // Let several batches form, not one.
                        wait_until("this thread's earlier callbacks", || {
                            last[t].load(Ordering::Relaxed) + 50 >= i
                        });
                    }
                }
            })
        };
        within("callers and barrier", move || {
            join_all(ts);
            rcu.barrier();
        });
        bad.assert_none(&format!("{cfg:?}"));
        for (t, l) in last.iter().enumerate() {
            assert_eq!(l.load(Ordering::Relaxed), PER, "{cfg:?}: thread {t}");
        }
    }
}

// --- barrier() -----------------------------------------------------------------

/// Every thread's barrier() covers its own earlier callbacks; concurrent barriers (with and
/// without callbacks of their own) all return; a final barrier covers everything.
#[test]
fn concurrent_barriers_cover_earlier_callbacks_and_all_return() {
    const CALLERS: usize = 4;
    const ROUNDS: usize = 20;
    const PER: usize = 25;
    for cfg in [Config::new(1, None, None), Config::new(3, Some(1), Some(3))] {
        let rcu = cfg.build();
        let counts: Arc<Vec<AtomicUsize>> =
            Arc::new((0..CALLERS).map(|_| AtomicUsize::new(0)).collect());
        let bad = Arc::new(Failures::default());
        let mut ts = {
            let (rcu, counts, bad) = (rcu.clone(), Arc::clone(&counts), Arc::clone(&bad));
            spawn_n(CALLERS, move |t| {
                for round in 1..=ROUNDS {
                    for _ in 0..PER {
                        let counts = Arc::clone(&counts);
                        rcu.call(move || {
                            counts[t].fetch_add(1, Ordering::Relaxed);
                        });
                    }
                    rcu.barrier();
                    let seen = counts[t].load(Ordering::Relaxed);
                    if seen != round * PER {
                        bad.record(format!(
                            "thread {t} round {round}: {seen} of {} ran",
                            round * PER
                        ));
                    }
                }
            })
        };
        // Threads that only call barrier(), racing the others.
        ts.extend({
            let rcu = rcu.clone();
            spawn_n(2, move |_| {
                for _ in 0..ROUNDS * 2 {
                    rcu.barrier();
                }
            })
        });
        let counts2 = Arc::clone(&counts);
        within("concurrent barriers", move || {
            join_all(ts);
            rcu.barrier();
            for c in counts2.iter() {
                assert_eq!(c.load(Ordering::Relaxed), ROUNDS * PER);
            }
        });
        bad.assert_none(&format!("{cfg:?}"));
    }
}

/// A callback queued by thread A, then handed over to thread B (a channel): B's barrier()
/// waits for it, though B never queued anything.
#[test]
fn barrier_covers_callbacks_queued_by_other_threads_before_it() {
    const N: usize = 300;
    let rcu = Rcu::builder().shards(3).gp_stride(1).build().unwrap();
    let ran: Arc<IdSet> = Arc::new(IdSet::new(N));
    let (tx, rx) = mpsc::channel::<usize>();
    let producer = {
        let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
        thread::spawn(move || {
            for id in 0..N {
                let ran = Arc::clone(&ran);
                rcu.call(move || {
                    ran.insert(id);
                });
                tx.send(id).unwrap();
            }
        })
    };
    within("a consumer calling barrier() per message", move || {
        let mut missing = Vec::new();
        for _ in 0..N {
            let id = recv(&rx, "an id");
            rcu.barrier();
            if ran.missing(N).contains(&id) {
                missing.push(id);
            }
        }
        producer.join().unwrap();
        assert!(
            missing.is_empty(),
            "barrier() returned before {missing:?} ran"
        );
        assert_eq!(ran.len(), N);
    });
}

/// Callbacks queued by callbacks (through handles they own) are not necessarily waited for
/// by the barrier that waited for their parents, but a second barrier covers them.
#[test]
fn second_barrier_covers_callbacks_queued_by_callbacks() {
    const N: usize = 200;
    let rcu = Rcu::builder().shards(2).build().unwrap();
    let level1 = Arc::new(AtomicUsize::new(0));
    let level2 = Arc::new(AtomicUsize::new(0));
    within("two barriers", {
        let (level1, level2) = (Arc::clone(&level1), Arc::clone(&level2));
        move || {
            for _ in 0..N {
                let (r, l1, l2) = (rcu.clone(), Arc::clone(&level1), Arc::clone(&level2));
                rcu.call(move || {
                    l1.fetch_add(1, Ordering::Relaxed);
                    r.call(move || {
                        l2.fetch_add(1, Ordering::Relaxed);
                    });
                });
            }
            rcu.barrier();
            assert_eq!(level1.load(Ordering::Relaxed), N, "first barrier");
            rcu.barrier();
            assert_eq!(level2.load(Ordering::Relaxed), N, "second barrier");
        }
    });
}

/// barrier() on a domain that never had a callback returns at once, from several threads, and
/// starts no worker thread.
#[test]
fn barrier_without_any_callback_returns() {
    let rcu = Rcu::builder()
        .shards(3)
        .thread_name_prefix("nb-")
        .build()
        .unwrap();
    within("barriers on an empty domain", {
        let rcu = rcu.clone();
        move || {
            rcu.barrier();
            let ts = spawn_n(3, move |_| {
                for _ in 0..10 {
                    rcu.barrier();
                }
            });
            join_all(ts);
        }
    });
    #[cfg(target_os = "linux")]
    assert_eq!(common::count_threads_with_prefix("nb-"), 0);
    let s = rcu.stats();
    assert_eq!(s.shards.len(), 3);
    assert_eq!(
        (s.queued(), s.invoked(), s.pending(), s.panics),
        (0, 0, 0, 0)
    );
    assert_eq!(shard_total(&s, |x| x.barrier_callbacks), 0);
}

/// barrier() on a domain whose workers are all asleep with nothing to do returns, and the
/// workers wake again for later callbacks.
#[cfg(target_os = "linux")]
#[test]
fn barrier_with_idle_workers_returns() {
    let rcu = Rcu::builder()
        .shards(2)
        .thread_name_prefix("iw-")
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    within("barriers around idle workers", move || {
        for round in 1..=3 {
            rcu.call(counting(&ran));
            rcu.barrier();
            assert_eq!(ran.load(Ordering::Relaxed), round);
            // Every worker (GP worker, CB worker, engine) goes to sleep.
            wait_until("the workers to sleep", || {
                let ours = common::threads_with_prefix("iw-");
                ours.len() >= 3
                    && ours
                        .iter()
                        .all(|(tid, _)| common::thread_state(*tid) == Some('S'))
            });
            rcu.barrier();
            rcu.barrier();
        }
    });
}

// --- Panicking callbacks ----------------------------------------------------------

/// A panicking callback is counted in stats().panics, its captures are dropped, the worker
/// survives, later callbacks of the same shard run, and barrier() returns.
#[test]
fn panicking_callbacks_are_counted_and_the_worker_carries_on() {
    const N: usize = 40;
    for shards in [1, 3] {
        let rcu = Rcu::builder().shards(shards).build().unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let token = Arc::new(());
        let mut panics = 0;
        let rcu2 = rcu.clone();
        let (ran2, token2) = (Arc::clone(&ran), Arc::clone(&token));
        let expected = within("panicking callbacks", move || {
            // Same thread, hence same shard: the panics sit between callbacks
            // that must still run.
            for i in 0..N {
                if i % 8 == 3 {
                    panics += 1;
                    let t = Arc::clone(&token2);
                    rcu2.call(move || {
                        let _t = t;
                        panic!("deliberate panic in callback {i}");
                    });
                } else {
                    rcu2.call(counting(&ran2));
                }
            }
            rcu2.barrier();
            assert_eq!(rcu2.stats().panics, panics);
            assert_eq!(ran2.load(Ordering::Relaxed), N - panics as usize);
            // The worker still runs callbacks.
            for _ in 0..10 {
                rcu2.call(counting(&ran2));
            }
            rcu2.barrier();
            panics
        });
        assert_eq!(ran.load(Ordering::Relaxed), N - expected as usize + 10);
        assert_eq!(rcu.stats().panics, expected);
        assert_eq!(
            Arc::strong_count(&token),
            1,
            "a panicking callback leaked its captures"
        );
        within("dropping the domain", move || drop(rcu));
    }
}

// --- Dropping the last handle -----------------------------------------------------

/// A panic payload whose own `Drop` panics (user code again) must not kill
/// the worker either: later callbacks and barriers still complete.
#[test]
fn panic_payload_that_panics_when_dropped() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("deliberate panic while dropping a panic payload");
        }
    }
    let rcu = Rcu::builder().shards(1).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let rcu2 = rcu.clone();
    let r = Arc::clone(&ran);
    within("callbacks after a bomb payload", move || {
        rcu2.call(|| std::panic::panic_any(Bomb));
        for _ in 0..5 {
            rcu2.call(counting(&r));
        }
        rcu2.barrier();
        assert_eq!(rcu2.stats().panics, 1);
    });
    assert_eq!(ran.load(Ordering::Relaxed), 5);
}

/// Dropping the last handle runs every pending callback (queued by threads that have exited)
/// before the drop returns, and the worker threads exit.
#[test]
fn dropping_the_last_handle_runs_pending_callbacks() {
    const THREADS: usize = 3;
    const PER: usize = 300;
    let rcu = Rcu::builder()
        .shards(2)
        .thread_name_prefix("dp-")
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let ts = {
        let (rcu, ran) = (rcu.clone(), Arc::clone(&ran));
        spawn_n(THREADS, move |_| {
            for _ in 0..PER {
                rcu.call(counting(&ran));
            }
        })
    };
    let ran2 = Arc::clone(&ran);
    within("dropping the last handle", move || {
        join_all(ts);
        drop(rcu);
        // Synchronously: no barrier, no waiting.
        assert_eq!(ran2.load(Ordering::Relaxed), THREADS * PER);
    });
    #[cfg(target_os = "linux")]
    common::wait_threads_gone("dp-");
}

/// Chains of callbacks, each owning a handle and queueing the next link with a clone: the
/// caller's handle is dropped first, so the last handle dies inside the last link (on a
/// callback worker). Every link runs, and the worker threads (and the reaper) go away.
#[test]
fn last_handle_dropped_inside_a_callback_chain() {
    const CHAINS: usize = 3;
    const DEPTH: usize = 30;
    fn link(rcu: Rcu, depth: usize, ran: Arc<AtomicUsize>) {
        ran.fetch_add(1, Ordering::Relaxed);
        if depth > 0 {
            let r = rcu.clone();
            rcu.call(move || link(r, depth - 1, ran));
        }
        // `rcu` is dropped here: the last one is dropped inside a callback.
    }
    let rcu = Rcu::builder()
        .shards(2)
        .thread_name_prefix("ch-")
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..CHAINS {
        let (r, ran) = (rcu.clone(), Arc::clone(&ran));
        rcu.call(move || link(r, DEPTH, ran));
    }
    drop(rcu); // not the last handle
    wait_until("every link to run", || {
        ran.load(Ordering::Relaxed) == CHAINS * (DEPTH + 1)
    });
    #[cfg(target_os = "linux")]
    common::wait_threads_gone("ch-");
    assert_eq!(ran.load(Ordering::Relaxed), CHAINS * (DEPTH + 1));
}

/// Increments a shared counter when dropped.
struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The last handle is owned by a retired value (alone, or with an RcuCell whose own drop
/// retires its value from inside the callback): everything pending still runs, including
/// the cell's retire queued by the dying callback, and the threads go away.
#[test]
fn last_handle_owned_by_a_retired_value() {
    struct Holder {
        _cell: RcuCell<Tracked>,
        _rcu: Rcu,
        _t: Tracked,
    }
    struct HolderRcuFirst {
        _rcu: Rcu,
        _cell: RcuCell<Tracked>,
        _t: Tracked,
    }
    const PENDING: usize = 50;
    for (case, prefix) in [(0, "rv0-"), (1, "rv1-"), (2, "rv2-")] {
        let rcu = Rcu::builder()
            .shards(2)
            .thread_name_prefix(prefix)
            .build()
            .unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        for _ in 0..PENDING {
            rcu.retire(Box::new(Tracked(Arc::clone(&drops))));
        }
        let expected = match case {
            // The cell owns the last handle.
            0 => {
                rcu.retire(Box::new(RcuCell::new(&rcu, Tracked(Arc::clone(&drops)))));
                PENDING + 1
            }
            // A value owning a cell and a handle, dropped cell first...
            1 => {
                rcu.retire(Box::new(Holder {
                    _cell: RcuCell::new(&rcu, Tracked(Arc::clone(&drops))),
                    _rcu: rcu.clone(),
                    _t: Tracked(Arc::clone(&drops)),
                }));
                PENDING + 2
            }
            // ... or handle first.
            _ => {
                rcu.retire(Box::new(HolderRcuFirst {
                    _rcu: rcu.clone(),
                    _cell: RcuCell::new(&rcu, Tracked(Arc::clone(&drops))),
                    _t: Tracked(Arc::clone(&drops)),
                }));
                PENDING + 2
            }
        };
        drop(rcu); // the retired value now owns the last handle(s)
        wait_until("every retired value to drop", || {
            drops.load(Ordering::SeqCst) == expected
        });
        #[cfg(target_os = "linux")]
        common::wait_threads_gone(prefix);
        assert_eq!(drops.load(Ordering::SeqCst), expected, "case {case}");
    }
}

/// The last handle of domain B dropped inside a callback of domain A: B's pending callbacks
/// all run before that drop returns, on A's worker.
#[test]
fn last_handle_of_another_domain_dropped_inside_a_callback() {
    // B's shutdown must not run on A's callback worker (it would stall A's
    // shard for B's grace periods, and deadlock if one of B's callbacks
    // waited for A): a reaper thread drains B, and the drop returns at once.
    const N: usize = 100;
    let a = Rcu::builder().shards(1).build().unwrap();
    let b = Rcu::builder()
        .shards(2)
        .thread_name_prefix("ob-")
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for i in 0..N {
        let ran = Arc::clone(&ran);
        let a = a.clone();
        b.call(move || {
            if i == 0 {
                // Waiting for A from one of B's callbacks is allowed; it
                // deadlocked when B was drained on A's worker.
                a.barrier();
            }
            ran.fetch_add(1, Ordering::Relaxed);
        });
    }
    let (tx, rx) = mpsc::channel();
    a.call(move || {
        drop(b);
        let _ = tx.send(());
    });
    recv(&rx, "A's callback");
    wait_until("B's callbacks to run", || ran.load(Ordering::Relaxed) == N);
    #[cfg(target_os = "linux")]
    common::wait_threads_gone("ob-");
    within("barrier on A", move || a.barrier());
}

// --- Thread churn --------------------------------------------------------------------

/// `call()` from a thread-local destructor (after the library's own
/// thread-locals may be gone) still queues a callback that runs.
#[test]
fn call_from_a_thread_local_destructor() {
    struct CallOnDrop(Rcu, Arc<AtomicUsize>);
    impl Drop for CallOnDrop {
        fn drop(&mut self) {
            self.0.call(counting(&self.1));
        }
    }
    thread_local! {
        static LATE: std::cell::RefCell<Option<CallOnDrop>> =
            const { std::cell::RefCell::new(None) };
    }
    let rcu = Rcu::builder().shards(2).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let (r2, ran2) = (rcu.clone(), Arc::clone(&ran));
    thread::spawn(move || {
        // Queue one callback first, so that the library's thread-locals are
        // initialised before ours and may be destroyed before ours runs.
        r2.call(|| ());
        LATE.with(|l| *l.borrow_mut() = Some(CallOnDrop(r2, ran2)));
    })
    .join()
    .unwrap();
    within("barrier after a TLS-destructor call", move || rcu.barrier());
    assert_eq!(ran.load(Ordering::Relaxed), 1);
}

/// Many short-lived threads each queue a few callbacks and exit at once: every callback runs.
#[test]
fn short_lived_threads_calling_then_exiting() {
    const THREADS: usize = 160;
    const BATCH: usize = 8;
    const PER: usize = 4;
    let rcu = Rcu::builder()
        .shards(3)
        .gp_stride(2)
        .shard_choice(ShardChoice::PerThread)
        .build()
        .unwrap();
    let ids = Arc::new(IdSet::new(THREADS * PER));
    for batch in 0..THREADS / BATCH {
        let ts = {
            let (rcu, ids) = (rcu.clone(), Arc::clone(&ids));
            spawn_n(BATCH, move |i| {
                let t = batch * BATCH + i;
                for k in 0..PER {
                    let ids = Arc::clone(&ids);
                    rcu.call(move || {
                        ids.insert(t * PER + k);
                    });
                }
            })
        };
        join_all(ts);
    }
    let ids2 = Arc::clone(&ids);
    within("barrier after the churn", move || {
        rcu.barrier();
        let s = rcu.stats();
        assert_eq!(s.queued(), (THREADS * PER) as u64);
        // Per-thread shards, round robin over threads: every shard got
        // callbacks.
        assert!(s.shards.iter().all(|x| x.queued > 0), "{s:?}");
        drop(rcu);
        assert_eq!(ids2.len(), THREADS * PER);
    });
    assert_eq!(ids.duplicates(), 0);
}

// --- stats() -------------------------------------------------------------------------

/// After barrier() returns (with nobody queueing), stats() adds up at once: queued is the
/// number of calls, invoked is queued plus the barrier's internal callbacks, nothing is
/// pending (as the `Rcu::stats` doc example asserts).
#[test]
fn stats_add_up_right_after_barrier() {
    const ROUNDS: u64 = 200;
    for shards in [1, 3] {
        let rcu = Rcu::builder().shards(shards).build().unwrap();
        let bad = within("call + barrier + stats", move || {
            let mut bad = Vec::new();
            for round in 1..=ROUNDS {
                rcu.call(|| ());
                rcu.barrier();
                let s = rcu.stats();
                if s.shards.len() != shards || s.queued() != round || !is_settled(&s) {
                    bad.push(format!("after call #{round} and barrier(): {s:?}"));
                }
            }
            bad
        });
        assert!(
            bad.is_empty(),
            "{shards} shards: stats() lagged behind barrier() in {} of {ROUNDS} rounds; first: {}",
            bad.len(),
            bad[0]
        );
    }
}

/// With several threads calling, the counters settle to: queued == calls, invoked == queued +
/// barrier callbacks, pending == 0; one entry per configured shard; GP-worker wakeups and
/// grace periods were counted.
#[test]
fn stats_settle_after_barrier() {
    const THREADS: usize = 3;
    const PER: usize = 300;
    for cfg in CONFIGS {
        let rcu = cfg.build();
        let ts = {
            let rcu = rcu.clone();
            spawn_n(THREADS, move |_| {
                for _ in 0..PER {
                    rcu.call(|| ());
                }
            })
        };
        join_and_barrier(&rcu, "callers and barrier", ts);
        let s = wait_for_stats(&rcu, "the counters to settle", is_settled);
        assert_eq!(s.shards.len(), cfg.shards, "{cfg:?}");
        assert_settled(&s, (THREADS * PER) as u64, &format!("{cfg:?}"));
        assert!(s.grace_periods >= 1, "{cfg:?}");
        assert!(s.gp_worker_wakeups >= 1, "{cfg:?}");
        // No assertion on CB-worker wakeups: a worker that started after
        // its callbacks were DONE runs them all in its first pass without
        // ever having been asleep.
    }
}

// --- Grace periods completed by synchronize() ------------------------------------------

/// A grace period that a GP worker waits for may be completed by a `synchronize()` caller
/// instead of the engine thread; the GP worker must still learn of it, or its callbacks are
/// stranded (and `barrier()` hangs) until some unrelated activity wakes it.
///
/// To make the race deterministic, the engine thread is made slow to wake (SCHED_IDLE, pinned
/// to a CPU on which a busy thread spins): the GP worker asks it for the grace period and goes
/// to sleep awaiting it; this thread then runs that grace period with `synchronize()`; when
/// the engine finally looks, the grace period it was asked for is already done.
#[cfg(target_os = "linux")]
#[test]
fn callback_runs_when_synchronize_completes_its_grace_period() {
    const ATTEMPTS: usize = 10;
    let rcu = Rcu::builder()
        .shards(1)
        .thread_name_prefix("lw-")
        .build()
        .unwrap();
    // Start the GP worker, the CB worker and the engine.
    rcu.call(|| ());
    within("the first barrier", {
        let rcu = rcu.clone();
        move || rcu.barrier()
    });
    let engine = common::wait_thread_named("lw-rcu_gp");
    let gp_worker = common::wait_thread_named("lw-rcuog/0");
    for attempt in 1..=ATTEMPTS {
        wait_until("the engine and GP worker to sleep", || {
            common::thread_state(engine) == Some('S')
                && common::thread_state(gp_worker) == Some('S')
        });
        let Some(cpus) = starve(engine) else {
            eprintln!("skipped: cannot change the engine thread's scheduling");
            return;
        };
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicUsize::new(0));
        let spinners: Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                let (stop, running) = (Arc::clone(&stop), Arc::clone(&running));
                thread::spawn(move || {
                    pin_current(cpu);
                    running.fetch_add(1, Ordering::SeqCst);
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        wait_until("the spinners", || {
            running.load(Ordering::SeqCst) == cpus.len()
        });

        let gps = rcu.completed_grace_periods();
        let wakeups = rcu.stats().gp_worker_wakeups;
        let ran = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&ran);
        rcu.call(move || r.store(true, Ordering::SeqCst));
        // The GP worker wakes for the new callback, asks the engine for a
        // grace period and goes back to sleep awaiting it; the engine is
        // runnable but starved.
        wait_for_stats(&rcu, "the GP worker to take the callback", |s| {
            s.gp_worker_wakeups > wakeups
        });
        wait_until("the GP worker to sleep again", || {
            common::thread_state(gp_worker) == Some('S')
        });
        let engine_ran = rcu.completed_grace_periods() != gps;
        if !engine_ran {
            // This thread runs the grace period the GP worker waits for.
            rcu.synchronize();
        }
        stop.store(true, Ordering::Relaxed);
        join_all(spinners);
        unstarve(engine);
        if engine_ran && attempt < ATTEMPTS {
            // The engine got the CPU after all (say, other tests kept the
            // spinner off it): the callback is on its normal way; retry.
            within("the callback", move || {
                wait_until("the callback", || ran.load(Ordering::SeqCst))
            });
            continue;
        }
        if engine_ran {
            eprintln!("inconclusive: the engine ran before synchronize() in {ATTEMPTS} attempts");
        }
        within("the callback after synchronize()", move || {
            wait_until(
                "the callback whose grace period synchronize() completed \
                 (the GP worker awaiting it was never woken)",
                || ran.load(Ordering::SeqCst),
            );
            rcu.barrier();
        });
        return;
    }
}

/// Pins thread `tid` to the first CPU this process may use and makes it
/// SCHED_IDLE; returns the usable CPUs, or None if refused.
#[cfg(target_os = "linux")]
fn starve(tid: i32) -> Option<Vec<usize>> {
    // SAFETY: plain system calls on a thread of this process, with
    // properly initialised arguments.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect();
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(*cpus.first()?, &mut one);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &one) != 0 {
            return None;
        }
        let p = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(tid, libc::SCHED_IDLE, &p) != 0 {
            return None;
        }
        Some(cpus)
    }
}

/// Undoes [`starve`] (normal policy; any CPU).
#[cfg(target_os = "linux")]
fn unstarve(tid: i32) {
    // SAFETY: as in `starve`.
    unsafe {
        let p = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(tid, libc::SCHED_OTHER, &p);
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Pins the calling thread to `cpu`.
#[cfg(target_os = "linux")]
fn pin_current(cpu: usize) {
    // SAFETY: as in `starve`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
