//! The callback-panic hook (`Builder::on_callback_panic`) with real
//! threads: every panic of a callback reaches it, on the callback worker
//! that caught it, with its payload and shard; a hook that panics, and a
//! payload whose `Drop` panics, are contained (the worker carries on);
//! `Stats::panics` counts them all. Also the `stalls` entry of `Stats`'
//! `Display`.
//!
//! A panic inside a callback is caught by the worker, so nothing is
//! asserted inside a callback or a hook: they send what they saw through
//! channels and counters, and the test thread asserts.
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, ThreadId};

use common::{join_all, recv, within};
use rcu_offload::{CallbackPanic, Rcu};

/// What a hook saw of one panic.
#[derive(Debug)]
struct Seen {
    message: Option<String>,
    shard: usize,
    thread: Option<String>,
}

impl Seen {
    fn of(p: &CallbackPanic) -> Seen {
        Seen {
            message: p.message().map(str::to_owned),
            shard: p.shard(),
            thread: thread::current().name().map(str::to_owned),
        }
    }
}

/// Runs `rcu.barrier()` within the liveness bound.
fn barrier(rcu: &Rcu) {
    let r = rcu.clone();
    within("barrier", move || r.barrier());
}

/// A panic payload whose `Drop` panics (and counts the attempt first).
struct PanicsOnDrop(Arc<AtomicUsize>);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
        panic!("the payload's Drop panics on purpose");
    }
}

/// A non-string payload.
struct Code(u32);

/// Queues, from `threads` fresh threads (spread over the shards), `per`
/// callbacks each: every other one panics with a literal, the rest with a
/// formatted `String`; returns the expected messages and their counts.
fn queue_panics(rcu: &Rcu, threads: usize, per: usize) -> BTreeMap<String, usize> {
    let mut expected = BTreeMap::new();
    for t in 0..threads {
        for i in 0..per {
            let m = if i % 2 == 0 {
                "literal panic".to_string()
            } else {
                format!("formatted panic {t}/{i}")
            };
            *expected.entry(m).or_insert(0) += 1;
        }
    }
    let ts = (0..threads)
        .map(|t| {
            let r = rcu.clone();
            thread::spawn(move || {
                for i in 0..per {
                    if i % 2 == 0 {
                        r.call(|| panic!("literal panic"));
                    } else {
                        r.call(move || panic!("formatted panic {}/{}", t, i));
                    }
                }
            })
        })
        .collect();
    join_all(ts);
    expected
}

/// The hook receives every panic, `&'static str` and `String` payloads
/// alike, with its message and the shard (< shards) whose worker ran the
/// callback, on that worker; `Stats::panics` counts them.
#[test]
fn hook_receives_every_panic_with_message_and_shard() {
    const SHARDS: usize = 3;
    let (tx, rx) = mpsc::channel();
    let rcu = Rcu::builder()
        .shards(SHARDS)
        .on_callback_panic(move |p| {
            let _ = tx.send(Seen::of(&p));
        })
        .build()
        .unwrap();
    let expected = queue_panics(&rcu, 6, 4);
    let total: usize = expected.values().sum();
    barrier(&rcu);

    let seen: Vec<Seen> = rx.try_iter().collect();
    assert_eq!(seen.len(), total, "{seen:#?}");
    let mut messages = BTreeMap::new();
    for s in &seen {
        assert!(s.shard < SHARDS, "{s:?}");
        assert_eq!(
            s.thread.as_deref(),
            Some(format!("rcuo/{}", s.shard).as_str()),
            "the hook runs on the worker of the panic's shard: {s:?}"
        );
        let m = s.message.clone().expect("a string payload has a message");
        *messages.entry(m).or_insert(0) += 1;
    }
    assert_eq!(messages, expected);
    let stats = rcu.stats();
    assert_eq!(stats.panics, total as u64, "{stats:?}");
    assert_eq!(stats.pending(), 0, "{stats:?}");
}

/// The shard a hook is told is the one whose worker ran the callback: each
/// callback sends its worker's name before panicking, and the hook's shard
/// names the same worker.
#[test]
fn hook_shard_is_the_shard_that_ran_the_callback() {
    let (tx, rx) = mpsc::channel();
    let rcu = Rcu::builder()
        .shards(4)
        .on_callback_panic(move |p| {
            let id = *p
                .payload()
                .downcast_ref::<usize>()
                .expect("a usize payload");
            let _ = tx.send((id, p.shard(), p.message().is_none()));
        })
        .build()
        .unwrap();
    let (ran_tx, ran_rx) = mpsc::channel();
    let ts = (0..8)
        .map(|id| {
            let r = rcu.clone();
            let ran_tx = ran_tx.clone();
            thread::spawn(move || {
                r.call(move || {
                    let _ = ran_tx.send((id, thread::current().name().map(str::to_owned)));
                    std::panic::panic_any(id);
                })
            })
        })
        .collect();
    join_all(ts);
    barrier(&rcu);
    let ran: BTreeMap<usize, Option<String>> = ran_rx.try_iter().collect();
    let hooked: Vec<(usize, usize, bool)> = rx.try_iter().collect();
    assert_eq!(ran.len(), 8);
    assert_eq!(hooked.len(), 8, "{hooked:?}");
    for (id, shard, no_message) in hooked {
        assert!(no_message, "a usize payload has no message");
        assert_eq!(
            ran[&id].as_deref(),
            Some(format!("rcuo/{shard}").as_str()),
            "callback {id}"
        );
    }
    assert_eq!(rcu.stats().panics, 8);
}

/// `into_payload()` hands the payload over by value: a non-string payload
/// comes back out intact (and has no message).
#[test]
fn into_payload_returns_the_payload() {
    let (tx, rx) = mpsc::channel();
    let rcu = Rcu::builder()
        .on_callback_panic(move |p| {
            let message = p.message().map(str::to_owned);
            let code = p.into_payload().downcast::<Code>().map(|c| c.0).ok();
            let _ = tx.send((message, code));
        })
        .build()
        .unwrap();
    rcu.call(|| std::panic::panic_any(Code(42)));
    rcu.call(|| panic!("text"));
    barrier(&rcu);
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&(None, Some(42))), "{got:?}");
    assert!(got.contains(&(Some("text".to_string()), None)), "{got:?}");
    assert_eq!(rcu.stats().panics, 2);
}

/// The ids of the threads that ran callbacks `before` and `after` some
/// panics on a one-shard domain, with a count of the callbacks that ran.
struct Probe {
    ran: Arc<AtomicUsize>,
    ids: mpsc::Receiver<ThreadId>,
    tx: mpsc::Sender<ThreadId>,
}

impl Probe {
    fn new() -> Probe {
        let (tx, ids) = mpsc::channel();
        Probe {
            ran: Arc::new(AtomicUsize::new(0)),
            ids,
            tx,
        }
    }

    /// Queues a callback that records its worker and counts itself.
    fn call(&self, rcu: &Rcu) {
        let ran = Arc::clone(&self.ran);
        let tx = self.tx.clone();
        rcu.call(move || {
            let _ = tx.send(thread::current().id());
            ran.fetch_add(1, Ordering::Relaxed);
        });
    }

    /// Checks that `n` probe callbacks ran, all on one worker thread.
    fn check(&self, n: usize, what: &str) {
        assert_eq!(self.ran.load(Ordering::Relaxed), n, "{what}");
        let ids: Vec<ThreadId> = self.ids.try_iter().collect();
        assert_eq!(ids.len(), n, "{what}");
        assert!(
            ids.windows(2).all(|w| w[0] == w[1]),
            "{what}: the worker was replaced: {ids:?}"
        );
    }
}

/// A hook that panics is contained: its worker carries on with the later
/// callbacks (the same thread), barrier completes, every panic is counted
/// and handed to the hook.
#[test]
fn panicking_hook_is_contained() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let rcu = Rcu::builder()
        .shards(1)
        .on_callback_panic(move |p| {
            c.fetch_add(1, Ordering::Relaxed);
            panic!("the hook panics on purpose after {:?}", p.message());
        })
        .build()
        .unwrap();
    let probe = Probe::new();
    for round in 1..=3 {
        probe.call(&rcu);
        rcu.call(|| panic!("callback panic"));
        rcu.call(move || panic!("callback panic {}", round));
        probe.call(&rcu);
        barrier(&rcu);
    }
    probe.check(6, "probe callbacks around a panicking hook");
    assert_eq!(calls.load(Ordering::Relaxed), 6);
    let stats = rcu.stats();
    assert_eq!(stats.panics, 6, "{stats:?}");
    assert_eq!(stats.pending(), 0, "{stats:?}");
}

/// A payload whose `Drop` panics does not end the worker: without a hook
/// (the domain drops it), with a hook that drops it, and with a hook that
/// re-raises it with `resume_unwind(p.into_payload())`.
#[test]
fn payload_whose_drop_panics_is_contained() {
    type Hook = Box<dyn Fn(CallbackPanic) + Send + Sync>;
    let hooks: Vec<(&str, Option<Hook>)> = vec![
        ("no hook", None),
        ("a hook that drops it", Some(Box::new(drop))),
        (
            "a hook that re-raises it",
            Some(Box::new(|p: CallbackPanic| {
                std::panic::resume_unwind(p.into_payload())
            })),
        ),
    ];
    for (what, hook) in hooks {
        let mut b = Rcu::builder().shards(1);
        if let Some(h) = hook {
            b = b.on_callback_panic(h);
        }
        let rcu = b.build().unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        let probe = Probe::new();
        for _ in 0..3 {
            probe.call(&rcu);
            let d = Arc::clone(&drops);
            rcu.call(move || std::panic::panic_any(PanicsOnDrop(d)));
            probe.call(&rcu);
        }
        barrier(&rcu);
        probe.call(&rcu);
        barrier(&rcu);
        probe.check(7, what);
        assert_eq!(drops.load(Ordering::Relaxed), 3, "{what}: payload drops");
        let stats = rcu.stats();
        assert_eq!(stats.panics, 3, "{what}: {stats:?}");
        assert_eq!(stats.pending(), 0, "{what}: {stats:?}");
        within("dropping the domain", move || drop(rcu));
    }
}

/// Without a hook every panic is counted (only the first is printed) and
/// the worker carries on.
#[test]
fn panics_without_hook_are_counted() {
    let rcu = Rcu::builder().shards(1).build().unwrap();
    let probe = Probe::new();
    for i in 0..5 {
        rcu.call(move || panic!("unhooked panic {}", i));
        probe.call(&rcu);
    }
    barrier(&rcu);
    probe.check(5, "callbacks after unhooked panics");
    assert_eq!(rcu.stats().panics, 5);
}

/// `Stats`' `Display` ends with the stall count.
#[test]
fn stats_display_ends_with_stalls() {
    let rcu = Rcu::new();
    rcu.synchronize();
    let s = rcu.stats().to_string();
    assert!(s.contains("stalls 0"), "{s}");
    assert!(s.ends_with("stalls 0"), "{s}");
    assert!(s.contains("panics 0"), "{s}");
    let (tx, rx) = mpsc::channel();
    let rcu = Rcu::builder()
        .on_callback_panic(move |_| {
            let _ = tx.send(());
        })
        .build()
        .unwrap();
    rcu.call(|| panic!("counted"));
    barrier(&rcu);
    recv(&rx, "the hook");
    let s = rcu.stats().to_string();
    assert!(s.contains("panics 1"), "{s}");
    assert!(s.ends_with("stalls 0"), "{s}");
}
