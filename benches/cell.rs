//! RCU-protected pointers: rcu-offload's `RcuCell<T>` against arc-swap's
//! `ArcSwap<T>` and crossbeam-epoch's `Atomic<T>`, what a user choosing one
//! of them would compare: the cost of a reader's lookup (with and without a
//! writer replacing the value) and the cost of a replacement.
//!
//! The value is a [`Payload`] of four `u64`s (32 bytes, one cache line). A
//! *lookup* is what a reader pays per access: enter a read-side section,
//! load the pointer, dereference it (its four fields are read and their xor
//! passed to `black_box`), leave the section:
//!
//! * rcu-offload: `let g = rcu.read(); let v = cell.load(&g);` (`&T`,
//!   valid while `g` lives);
//! * arc-swap: `let v = swap.load();` (a `Guard`, which takes a debt slot
//!   instead of touching the reference count); the `arc-swap load_full`
//!   entry clones the `Arc` instead (`load_full()`), i.e. a reference-count
//!   increment and decrement per lookup;
//! * crossbeam-epoch: `let g = epoch::pin(); let v = a.load(Acquire, &g);`.
//!
//! A *replacement* is what a writer pays to publish a new value and get rid
//! of the old one:
//!
//! * rcu-offload `store(v)`: swap under the cell's writer lock, then retire
//!   the old box through `Rcu::call` (it is dropped on a callback worker
//!   after a grace period); `replace(v)` returns an `Unpublished` handle
//!   of the old value, which the writer drops at once (that retires it the
//!   same way, after taking a grace-period cookie);
//! * arc-swap `store(Arc::new(v))`: swap, pay off the readers' debts on the
//!   old `Arc`, drop it (freed right there if no reader holds it);
//! * crossbeam-epoch: `pin(); a.swap(Owned::new(v), AcqRel, &g);
//!   g.defer_destroy(old)`: the old value goes into the thread's bag and is
//!   freed by a later `pin` of some thread once its epoch has passed.
//!
//! Groups (every peer in the same group, so they run in the same process,
//! one after the other), in the order they run:
//!
//! * `cell/store`: one writer thread (the bench thread), no readers, `iters`
//!   replacements back to back: rcu-offload `store` and `replace` (handle
//!   dropped), arc-swap `store`, crossbeam-epoch swap + `defer_destroy`. It
//!   is a sustained figure: criterion's warm-up (2 s of replacements) runs
//!   first, and nothing is drained between samples (only after the entry),
//!   so each library is in its steady state. For rcu-offload that steady
//!   state includes the memory bound: every replacement queues a callback,
//!   and a writer that finds more than the domain's high water mark
//!   (default 100,000) pending blocks until the callback workers have
//!   caught up (to 50,000): what a user replacing values in a loop lives
//!   with. It runs first, while only the bench thread has used each library
//!   (arc-swap's `store` walks the debt slots of every thread that has used
//!   arc-swap at the same time as others, so it gets slower once the load
//!   groups' threads have been through).
//! * `cell/load/idle`: one reader (the bench thread), no writer: `iters`
//!   lookups in a loop, timed around the loop.
//! * `cell/load/readers=1`: the same, while a writer thread replaces the
//!   value in a loop as fast as it can (rcu-offload `store`, arc-swap
//!   `store`, crossbeam-epoch swap + `defer_destroy`). The writer is spawned
//!   and has made its first replacement before the clock starts, and is
//!   stopped and joined after it stops.
//! * `cell/load/readers=2`: two reader threads (the bench thread and a
//!   helper), each doing `iters` lookups, released together by a start
//!   gate, with the same writer running. The figure is the wall time from
//!   the gate until *both* readers have finished, divided by `iters` (the
//!   lookups of one thread): with perfect scaling it equals the
//!   `readers=1` figure. The machine has 2 cores, so 2 readers and a writer
//!   are 3 busy threads on 2 cores (plus, for rcu-offload, its grace-period
//!   and callback threads): the figure includes the time a reader waits
//!   for a core.
//!
//! In the load groups with a writer, the bench also prints, per entry, the
//! writer's replacement rate during the timed windows (`cell: writer: ...`
//! lines, which `benches/report.py` tabulates): the peers' writers do not
//! run at the same pace (rcu-offload's writer sleeps whenever the domain is
//! above its memory bound), so the readers do not see the same amount of
//! writing. After each rcu-offload entry it prints the domain's counters
//! (`cell: note: ...`: values retired, how often the writer was throttled,
//! grace periods).
//!
//! Criterion settings: 2 s warm-up, 5 s measurement, 50 samples per entry
//! (a run of the bench takes about 2 minutes 20 s on the 2-core machine).
//! With the `mimalloc` cargo feature the bench uses mimalloc, as the
//! callbacks bench does, and says so on its first line.
//!
//! Outside the timed regions (after each writer is joined, and after each
//! entry) rcu-offload's `barrier()` and crossbeam-epoch's `pin().flush()`
//! let pending frees finish.

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, Criterion};
use crossbeam_epoch::{self as epoch, Atomic, Owned};
use rcu_offload::{Rcu, RcuCell};

/// Start of the lines with the writer's rate (read by `benches/report.py`).
const WRITER_LINE_PREFIX: &str = "cell: writer: ";

/// A counter on a cache line of its own (128 bytes: adjacent-line
/// prefetch pairs lines), so that the readers do not share it.
#[repr(align(128))]
struct Padded(AtomicU64);

/// The published value: 32 bytes, read by every lookup.
struct Payload {
    a: u64,
    b: u64,
    c: u64,
    d: u64,
}

impl Payload {
    fn new(i: u64) -> Payload {
        Payload {
            a: i,
            b: i + 1,
            c: i + 2,
            d: i + 3,
        }
    }

    /// What a reader does with the value: reads all of it.
    #[inline(always)]
    fn use_it(&self) -> u64 {
        self.a ^ self.b ^ self.c ^ self.d
    }
}

/// One library's pointer, as the bench drives it.
trait Peer: Sync {
    /// One lookup: enter a section, load, dereference, leave.
    fn lookup(&self) -> u64;
    /// One replacement by the writer of the load groups.
    fn replace(&self, i: u64);
    /// Let pending frees finish (outside the timed regions).
    fn settle(&self) {}
    /// What the library counted, for the log (rcu-offload: how often the
    /// writer blocked at the memory bound).
    fn note(&self) -> Option<String> {
        None
    }
}

struct OursCell {
    rcu: Rcu,
    cell: RcuCell<Payload>,
}

impl OursCell {
    fn new() -> OursCell {
        let rcu = Rcu::new();
        let cell = RcuCell::new(&rcu, Payload::new(0));
        OursCell { rcu, cell }
    }
}

impl Peer for OursCell {
    #[inline(always)]
    fn lookup(&self) -> u64 {
        let g = self.rcu.read();
        let v = self.cell.load(&g);
        v.use_it()
    }

    #[inline(always)]
    fn replace(&self, i: u64) {
        self.cell.store(Payload::new(i));
    }

    fn settle(&self) {
        self.rcu.barrier();
    }

    fn note(&self) -> Option<String> {
        let st = self.rcu.stats();
        Some(format!(
            "{} values retired, writer throttled {} times, {} grace periods",
            st.queued(),
            st.throttled,
            st.grace_periods
        ))
    }
}

struct ArcSwapCell(ArcSwap<Payload>);

impl ArcSwapCell {
    fn new() -> ArcSwapCell {
        ArcSwapCell(ArcSwap::from_pointee(Payload::new(0)))
    }
}

impl Peer for ArcSwapCell {
    #[inline(always)]
    fn lookup(&self) -> u64 {
        let v = self.0.load();
        v.use_it()
    }

    #[inline(always)]
    fn replace(&self, i: u64) {
        self.0.store(Arc::new(Payload::new(i)));
    }
}

/// arc-swap read through `load_full()`: a clone of the `Arc` per lookup.
struct ArcSwapFull(ArcSwapCell);

impl Peer for ArcSwapFull {
    #[inline(always)]
    fn lookup(&self) -> u64 {
        let v = self.0 .0.load_full();
        v.use_it()
    }

    #[inline(always)]
    fn replace(&self, i: u64) {
        self.0.replace(i);
    }
}

struct EpochCell(Atomic<Payload>);

impl EpochCell {
    fn new() -> EpochCell {
        EpochCell(Atomic::new(Payload::new(0)))
    }
}

impl Peer for EpochCell {
    #[inline(always)]
    fn lookup(&self) -> u64 {
        let g = epoch::pin();
        let p = self.0.load(Acquire, &g);
        // SAFETY: the pointer is never null (the atomic always holds a
        // value) and is destroyed only through `defer_destroy`, after every
        // thread pinned now has unpinned; `g` is pinned.
        unsafe { p.deref() }.use_it()
    }

    #[inline(always)]
    fn replace(&self, i: u64) {
        let g = epoch::pin();
        let old = self.0.swap(Owned::new(Payload::new(i)), AcqRel, &g);
        // SAFETY: `old` was just unpublished by the swap; readers that
        // loaded it are pinned, and the destruction waits for them.
        unsafe { g.defer_destroy(old) };
    }

    fn settle(&self) {
        for _ in 0..4 {
            epoch::pin().flush();
        }
    }
}

impl Drop for EpochCell {
    fn drop(&mut self) {
        // SAFETY: no thread can reach the atomic any more (`&mut self`).
        unsafe {
            let g = epoch::unprotected();
            drop(self.0.load(Relaxed, g).into_owned());
        }
    }
}

/// `iters` lookups on this thread, timed around the loop.
#[inline(never)]
fn lookups<P: Peer>(p: &P, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(p.lookup());
    }
    start.elapsed()
}

/// A writer thread replacing the value in a loop until `stop`; `count` is
/// the number of replacements so far (its own cache line, so the readers
/// do not share it).
fn writer_loop<P: Peer>(p: &P, stop: &AtomicBool, count: &Padded) {
    let mut i = 1;
    p.replace(i);
    count.0.store(i, Relaxed);
    while !stop.load(Relaxed) {
        i += 1;
        p.replace(i);
        count.0.store(i, Relaxed);
    }
}

/// Replacements counted during the timed windows of one entry, and the
/// windows' total length.
#[derive(Default)]
struct WriterTally {
    writes: Cell<u64>,
    lookups: Cell<u64>,
    time: Cell<Duration>,
}

impl WriterTally {
    fn add(&self, writes: u64, lookups: u64, time: Duration) {
        self.writes.set(self.writes.get() + writes);
        self.lookups.set(self.lookups.get() + lookups);
        self.time.set(self.time.get() + time);
    }

    fn print(&self, group: &str, entry: &str) {
        let secs = self.time.get().as_secs_f64();
        if secs > 0.0 {
            let rate = self.writes.get() as f64 / secs / 1e6;
            let per_lookup = self.writes.get() as f64 / self.lookups.get().max(1) as f64;
            println!(
                "{WRITER_LINE_PREFIX}{group} | {entry} | {rate:.3} M replacements/s \
                 | {per_lookup:.4} replacements per lookup"
            );
        }
    }
}

/// `readers` reader threads (the bench thread and `readers - 1` helpers)
/// doing `iters` lookups each while a writer replaces the value: the wall
/// time from the start gate until the last reader has finished (each
/// reader reads the clock when its own loop ends; joining is not timed).
fn with_writer<P: Peer>(p: &P, readers: usize, iters: u64, tally: &WriterTally) -> Duration {
    let stop = AtomicBool::new(false);
    let count = Padded(AtomicU64::new(0));
    let gate = AtomicBool::new(false);
    let ready = AtomicU64::new(0);
    let (start, end, writes) = thread::scope(|s| {
        let writer = s.spawn(|| writer_loop(p, &stop, &count));
        let helpers: Vec<_> = (1..readers)
            .map(|_| {
                s.spawn(|| {
                    // Register this thread with the library before the gate.
                    black_box(p.lookup());
                    ready.fetch_add(1, Release);
                    while !gate.load(Acquire) {
                        std::hint::spin_loop();
                    }
                    for _ in 0..iters {
                        black_box(p.lookup());
                    }
                    (Instant::now(), count.0.load(Relaxed))
                })
            })
            .collect();
        // The writer has made its first replacement and the helpers are
        // registered: open the gate.
        while count.0.load(Relaxed) == 0 || ready.load(Acquire) + 1 < readers as u64 {
            thread::yield_now();
        }
        let before = count.0.load(Relaxed);
        let start = Instant::now();
        gate.store(true, Release);
        for _ in 0..iters {
            black_box(p.lookup());
        }
        let mut last = (Instant::now(), count.0.load(Relaxed));
        for h in helpers {
            let end = h.join().expect("reader thread");
            if end.0 > last.0 {
                last = end;
            }
        }
        stop.store(true, Relaxed);
        writer.join().expect("writer thread");
        (start, last.0, last.1 - before)
    });
    let elapsed = end - start;
    tally.add(writes, iters, elapsed);
    p.settle();
    elapsed
}

fn bench_load<P: Peer>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    group_name: &str,
    entry: &str,
    p: &P,
    readers: Option<usize>,
) {
    let tally = WriterTally::default();
    group.bench_function(entry, |b| {
        b.iter_custom(|iters| match readers {
            None => lookups(p, iters),
            Some(n) => with_writer(p, n, iters, &tally),
        })
    });
    p.settle();
    if readers.is_some() {
        tally.print(group_name, entry);
    }
    print_note(group_name, entry, p);
}

/// The library's own counters after an entry (`cell: note: ...` lines).
fn print_note<P: Peer>(group: &str, entry: &str, p: &P) {
    if let Some(note) = p.note() {
        println!("cell: note: {group} | {entry} | {note}");
    }
}

fn load_group(c: &mut Criterion, readers: Option<usize>) {
    let name = match readers {
        None => "cell/load/idle".to_string(),
        Some(n) => format!("cell/load/readers={n}"),
    };
    let mut group = c.benchmark_group(&name);
    bench_load(&mut group, &name, "rcu-offload", &OursCell::new(), readers);
    bench_load(&mut group, &name, "arc-swap", &ArcSwapCell::new(), readers);
    bench_load(
        &mut group,
        &name,
        "arc-swap load_full",
        &ArcSwapFull(ArcSwapCell::new()),
        readers,
    );
    bench_load(
        &mut group,
        &name,
        "crossbeam-epoch",
        &EpochCell::new(),
        readers,
    );
    group.finish();
}

fn load_idle(c: &mut Criterion) {
    load_group(c, None);
}

fn load_readers_1(c: &mut Criterion) {
    load_group(c, Some(1));
}

fn load_readers_2(c: &mut Criterion) {
    load_group(c, Some(2));
}

/// `iters` replacements on this thread, timed around the loop.
#[inline(never)]
fn replacements(iters: u64, mut replace: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        replace(i);
    }
    start.elapsed()
}

fn store(c: &mut Criterion) {
    let mut group = c.benchmark_group("cell/store");

    // A fresh domain for each rcu-offload entry, dropped after it.
    let ours = OursCell::new();
    group.bench_function("rcu-offload", |b| {
        b.iter_custom(|iters| replacements(iters, |i| ours.cell.store(Payload::new(i))))
    });
    ours.settle();
    print_note("cell/store", "rcu-offload", &ours);
    drop(ours);

    let ours = OursCell::new();
    group.bench_function("rcu-offload replace", |b| {
        b.iter_custom(|iters| replacements(iters, |i| drop(ours.cell.replace(Payload::new(i)))))
    });
    ours.settle();
    print_note("cell/store", "rcu-offload replace", &ours);
    drop(ours);

    let swap = ArcSwapCell::new();
    group.bench_function("arc-swap", |b| {
        b.iter_custom(|iters| replacements(iters, |i| swap.replace(i)))
    });

    let atomic = EpochCell::new();
    group.bench_function("crossbeam-epoch", |b| {
        b.iter_custom(|iters| replacements(iters, |i| atomic.replace(i)))
    });
    atomic.settle();

    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(50);
    // The store group first, while only the bench thread has used each
    // library (see the module docs).
    targets = store, load_idle, load_readers_1, load_readers_2
}

/// With the `mimalloc` feature, every allocation of this bench (the
/// published values, the libraries' own) goes to mimalloc, as in the
/// callbacks bench; without it, to glibc's malloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `criterion_main!(benches)`, after the line saying which allocator the
/// process uses (checked, see [`rcu_offload_benches::allocator`]), which
/// `benches/report.py` reads.
fn main() {
    rcu_offload_benches::print_allocator_line();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
