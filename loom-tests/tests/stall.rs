//! loom model of the stall report (src/reader.rs, src/stall.rs): a stalled
//! grace period reports while its reader leaves. (The fork handlers'
//! prepare step, the other protocol that runs beside readers and workers,
//! is modelled under shuttle, in shuttle-tests/tests/fork_prepare.rs: loom
//! models a `try_lock` that is pending while another thread takes the lock
//! as blocking until that thread lets go (loom issue #376), which turns an
//! all-or-none try into a false deadlock.)
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use rcu_offload::model::ModelBuilder;
use rcu_offload_loom_tests::{model, one_shard, Bound};

/// A grace period goes to sleep waiting for a reader and reports the
/// stall (at once: `stall_at_once`), while the reader leaves. The hook
/// waits until the reader has left (as a hook that takes a lock the reader
/// holds across the end of its section would): the report must be made
/// outside the wake lock the leaving reader takes to wake the grace period.
/// Exactly one report, naming one reader, and `synchronize()` returns.
/// Mutant caught: `stall_report_under_wake_lock` (the hook runs under the
/// wake lock; the reader's wake waits for the hook, which waits for the
/// reader).
#[test]
fn stall_report_races_reader_exit() {
    model(Bound::Fixed(5), || {
        let left = Arc::new(AtomicBool::new(false));
        let reports = Arc::new(AtomicUsize::new(0));
        let (l, r) = (left.clone(), reports.clone());
        let rcu = one_shard()
            .stall_at_once()
            .on_stall(move |report| {
                assert_eq!(report.readers().len(), 1, "{report}");
                r.fetch_add(1, Ordering::Relaxed);
                while !l.load(Ordering::Acquire) {
                    thread::yield_now();
                }
            })
            .build()
            .unwrap();
        let inside = Arc::new(AtomicBool::new(false));
        let (reader_rcu, i, l) = (rcu.clone(), inside.clone(), left.clone());
        let reader = thread::spawn(move || {
            let g = reader_rcu.read();
            i.store(true, Ordering::Release);
            drop(g);
            l.store(true, Ordering::Release);
        });
        while !inside.load(Ordering::Acquire) {
            thread::yield_now();
        }
        rcu.synchronize();
        reader.join().unwrap();
        assert!(reports.load(Ordering::Relaxed) <= 1);
        assert_eq!(rcu.stats().stalls, reports.load(Ordering::Relaxed) as u64);
    });
}
