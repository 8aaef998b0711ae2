//! A sustained flood of small callbacks makes no allocator call of the
//! library's own once it is warm: staged callbacks are written into the
//! thread's feed, handed over into blocks from the shard's pool, and the
//! CB worker gives the emptied blocks back to the pool.
//!
//! A counting global allocator counts every allocation of the process
//! (every thread: the producer, the GP worker, the CB worker, the engine,
//! the timer). This file holds one test, so no other test's threads
//! allocate meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rcu_offload::Rcu;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments,
// which satisfy `System`'s contract because they satisfy ours; counting
// touches only an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: forwarded contract (see the impl).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static RAN: AtomicU64 = AtomicU64::new(0);

/// Queue `n` callbacks that capture nothing but bump a static counter:
/// inline closures, so the only allocations would be the library's.
fn flood(rcu: &Rcu, n: u64) {
    for _ in 0..n {
        rcu.call(|| {
            RAN.fetch_add(1, Relaxed);
        });
    }
}

/// Hold the CB worker in a callback until the producer has been
/// throttled `times` times in all: the backlog then reached the high-water
/// mark, the most a flood can queue.
fn hold_worker_until_throttled(rcu: &Rcu, times: u64) -> std::thread::JoinHandle<()> {
    static GATE: AtomicU64 = AtomicU64::new(0);
    let round = GATE.load(Relaxed) + 1;
    rcu.call(move || {
        while GATE.load(Relaxed) < round {
            std::thread::yield_now();
        }
    });
    let r = rcu.clone();
    std::thread::spawn(move || {
        while r.stats().throttled < times {
            std::thread::yield_now();
        }
        GATE.store(round, Relaxed);
    })
}

#[test]
fn a_warm_flood_of_inline_callbacks_allocates_nothing() {
    const WARM: u64 = 100_000;
    const N: u64 = 1_000_000;
    // One shard: the test is about recycling blocks within a shard, and a
    // second shard's first use (whenever the thread first runs on another
    // CPU) would start its workers, which allocates, at a time no test can
    // choose. A high-water mark the warm-up reaches in every build.
    let rcu = Rcu::builder().shards(1).high_water(10_000).build().unwrap();
    // Warm up: each round holds the CB worker until the producer has been
    // throttled, so the backlog reaches the high-water mark, the most a
    // flood can queue; the shard's pool and every queue's block index grow
    // to what the flood needs.
    for round in 1..=3 {
        let gate = hold_worker_until_throttled(&rcu, round);
        flood(&rcu, WARM);
        rcu.barrier();
        gate.join().unwrap();
    }
    // A held CB worker holds a batch of a few callbacks; a running one holds
    // up to a whole batch (1,024 callbacks, 35 blocks) outside the list
    // while the list sits at the mark: a peak the held rounds do not always
    // reach. Measured by hand (release builds): one block is allocated
    // once, usually in the first or second ungated flood of a million and
    // rarely later (after three clean floods, in 1 run of 15); after it, 40
    // more floods allocated and freed nothing (3 runs). So: ungated floods
    // until five in a row allocate nothing.
    let mut warm = 3 * WARM;
    let mut clean = 0;
    for ungated in 1.. {
        let before = ALLOCS.load(Relaxed);
        flood(&rcu, N);
        let allocated = ALLOCS.load(Relaxed) - before;
        rcu.barrier();
        warm += N;
        clean = if allocated == 0 { clean + 1 } else { 0 };
        if clean == 5 {
            break;
        }
        assert!(ungated < 40, "warm floods kept allocating");
    }
    let before = ALLOCS.load(Relaxed);
    flood(&rcu, N);
    let during = ALLOCS.load(Relaxed) - before;
    rcu.barrier();
    assert_eq!(RAN.load(Relaxed), warm + N, "every callback ran");
    // Zero in practically every run. A block (30 callbacks) is allocated
    // when scheduling makes a peak the warm-up never reached: a CI run with
    // a second heavy process on the machine saw one such block during the
    // measured flood (1 of the 33,334 blocks a million callbacks fill). A
    // pool that recycles nothing allocates one per block (a pool limited
    // to 64 blocks: 32,509), so the bound keeps the test's power.
    assert!(
        during <= 2,
        "{during} allocations while {N} inline callbacks were queued, handed \
         over and run"
    );
}
