//! Callbacks run after a grace period: rcu-offload's `call`/`retire`/
//! `barrier` against liburcu's `call_rcu` (memb flavour, with its default
//! worker thread and with per-CPU worker threads), crossbeam-epoch's
//! `Guard::defer` and seize's `Guard::defer_retire`.
//!
//! Groups (all in `Flat` sampling mode, summed with `iter_custom`). The
//! `end_to_end` and `enqueue` groups (and their `_nobypass` twins) measure
//! *bursts* of [`BATCH`] (65,536) callbacks: a batch that size fits under
//! rcu-offload's default memory bound (high water 100,000 pending), so no
//! producer ever blocks, and the batch is over before a steady state sets
//! in. The `sustained` groups measure the steady state: millions of
//! callbacks per iteration. (The burst groups keep their criterion ids, so
//! earlier results stay comparable; report.py and the README label them
//! bursts.)
//!
//! * `callbacks/end_to_end/{counter,free64}/P={1,2}` (burst): P producer threads
//!   (the calling thread and P-1 helpers, equal shares) queue
//!   [`BATCH`] callbacks, timed from the start gate until every callback has
//!   run. The Rust helpers are persistent threads (like an application's
//!   long-lived producers; see [`helpers`]); the C shim's are pthreads
//!   created per batch, before the start gate. One criterion iteration is one batch (`Throughput::Elements`);
//!   `benches/report.py` divides by it and prints time per callback. The
//!   `counter` callback bumps a shared atomic counter; the `free64` callback
//!   frees a 64-byte heap object (`Box<[u64; 8]>`, `malloc(64)` in C),
//!   allocated by its producer before the start gate.
//! * `callbacks/enqueue/P={1,2}` (burst): the same producers queue a batch of
//!   `counter` callbacks; the figure is each producer's own queueing loop,
//!   averaged over producers and divided by its share (the cost of one
//!   `call()` as its caller sees it, P callers at once). Waiting for the
//!   callbacks happens after the clock stops.
//! * `callbacks/end_to_end_nobypass/...` and `callbacks/enqueue_nobypass/P={1,2}`:
//!   the same measurements, rcu-offload only, with its bypass lists off
//!   (`Builder::nobypass_limit(usize::MAX)`; everything else default), each
//!   run right after its default-settings group. With the default
//!   `nobypass_limit` (16 callbacks per shard per 1 ms tick) every batch is a
//!   flood: after the first 16 calls of a tick a shard's callbacks go to its
//!   bypass list (one uncontended lock, no segmented-list work, no wake-up
//!   decision). `benches/report.py` prints default vs bypass-off and the
//!   ratio. liburcu has no equivalent knob (its `call_rcu` always appends to
//!   a lock-free wait-free queue), so there is no peer entry.
//! * `callbacks/sustained/{counter,free64}/P={1,2,8}`: the `end_to_end`
//!   measurement with [`SUSTAINED_TOTAL`] (2^22 = 4,194,304) callbacks per
//!   iteration instead of a burst: at least 4,000,000 callbacks (about 0.1
//!   to a few seconds, depending on the peer) from the start gate until
//!   every callback has run. That is 42 times rcu-offload's default high
//!   water mark (100,000 pending), so a bounded library spends most of an
//!   iteration in its steady state, where its producers block whenever the
//!   backlog is above the mark.
//!   P = 1, 2 and 8 producers (8 on the 2-core machine shows what sharing
//!   the cores costs); same peers and the same producers (the Rust helpers
//!   persistent, liburcu's producers pthreads looping in C). 10 samples;
//!   each entry runs at least one full iteration in criterion's warm-up
//!   before its samples (see [`sustained_config`]). As in the bursts, the
//!   `free64` objects are allocated by their producer before the start
//!   gate (4,194,304 x 64 B, about 320 MiB with glibc's chunk headers, per
//!   iteration). `RCU_SUSTAINED_CALLBACKS=N` sets another size (rounded up
//!   to a multiple of 256), for smoke runs; below 4,000,000 the bench says
//!   on stderr that it is not a sustained figure.
//! * `callbacks/sustained_enqueue_cpu/P=1`: the same loops (Rust peers
//!   only; liburcu's loop runs in the C shim), each timed by the CPU time
//!   the producer thread used (`CLOCK_THREAD_CPUTIME_ID`) instead of the
//!   wall clock: what `call()` costs its caller, without the time a
//!   throttled rcu-offload producer sleeps at the high-water mark while the
//!   workers catch up (in the wall-clock figure, the pipeline's pace).
//! * `callbacks/sustained_enqueue/P=1`: the `enqueue` measurement of one
//!   producer queueing [`SUSTAINED_TOTAL`] `counter` callbacks: its own
//!   loop time divided by the count, i.e. what a caller pays per `call()`
//!   in a steady flood, blocking included (rcu-offload's `call()` blocks
//!   while the backlog is above its high water mark; liburcu's `call_rcu`
//!   never blocks; crossbeam-epoch's and seize's run callbacks on the
//!   producer). Waiting for the callbacks is not timed.
//! * `callbacks/latency_200us`: one thread queues one callback every 200 µs
//!   (sleeping in between, against absolute deadlines) and each callback
//!   records when it runs. Each sample's value is the *median* call-to-run
//!   latency of its callbacks (the routine returns median x iterations), so
//!   criterion's median is a median of per-sample medians.
//! * `callbacks/flood` (not a criterion group: it measures a rate and a
//!   memory peak, not a time per iteration; implemented in
//!   `benches/src/flood.rs`): P producer threads queue callbacks as fast as
//!   they can for a fixed wall-clock time (`RCU_FLOOD_SECS`, default `3,10`:
//!   one run of each length), for P = 1 and P = 2 (`RCU_FLOOD_PRODUCERS`,
//!   default `1,2`; every flood variant and the inline reference run once
//!   per P). Each producer allocates a 64-byte node
//!   (`Box<[u64; 8]>`, `malloc(64)` in C) per callback; the callback spins
//!   [`flood::SPIN_STEPS`] (300) steps (additions forced through memory by
//!   `black_box`; in C by an empty `asm` with a memory clobber: the two
//!   compile to the same loop), stores the result in the node and frees it.
//!   When the time is up, the producers stop, are joined, and a final
//!   barrier waits for every callback. Reported per variant: the *rate*
//!   (callbacks queued, all of which ran, divided by the time from the start
//!   gate until the barrier returned), the *drain* (the barrier's share of
//!   that), and the *peak RSS* (`VmHWM`). Every variant runs in a fresh child
//!   process (the bench binary re-executed with `RCU_BENCH_FLOOD_CHILD`), so
//!   no other variant's memory counts in its peak. Variants:
//!   - `rcu-offload`: default settings (high water 100k pending callbacks,
//!     low water 50k, 2 shards here);
//!   - `rcu-offload high_water=MAX`: throttling off, to show what the bound
//!     buys;
//!   - `rcu-offload high_water=16384`: a lower bound (low water 8,192), the
//!     tuning the README suggests for sustained floods: the backlog stays in
//!     cache;
//!   - `rcu-offload high_water=V (sweep)`: one per value of
//!     `RCU_FLOOD_HIGH_WATER=v1,v2,...` (none by default; `MAX` allowed),
//!     `Builder::high_water(V)` with the builder's default low water V/2:
//!     rate and peak RSS against the mark, as a curve (report.py prints
//!     every rcu-offload row sorted by its mark);
//!   - `liburcu call_rcu percpu`: `urcu_memb_call_rcu` with per-CPU workers
//!     (`create_all_cpu_call_rcu_data`); the producer loops run in C.
//!     liburcu has no bound, so its RSS grows with the run length;
//!   - `liburcu call_rcu default`: the same with liburcu's default worker
//!     (one `call_rcu` thread for the process);
//!   - the *limit* ("the slow callbacks' own limit"): the callback body alone
//!     (spin + free of a node allocated by another thread, the calling one,
//!     untimed, between rounds) run by as many threads as rcu-offload has
//!     callback workers (its default shard count), with nothing else
//!     running: the best rate any library could sustain with that many
//!     workers. Measured for the Rust body and for the C body; each flood
//!     variant's ratio is to the limit of its own body;
//!   - `inline` ("the slow callbacks' own limit on the same threads and
//!     cores, producers included"): no RCU at all; the same P producer
//!     threads, for the same duration, each loop { allocate the 64-byte
//!     node; run the callback body (spin + free) on it }. Unlike the limit,
//!     its threads also pay for the allocation and, like the flood's
//!     producers, there are P of them on the 2 cores. Rust body only;
//!     rcu-offload's rows also report rate / inline against the inline run
//!     with the same P (liburcu's, with the C body, only rate / limit).
//!
//!   `RCU_FLOOD_VARIANTS=k1,k2,...` runs only the named variants (keys in
//!   `flood.rs`; `sweep` for every sweep point), e.g. a high-water sweep
//!   without the fixed variants. The unbounded variants are stopped early
//!   if RSS exceeds a safety cap (`RCU_FLOOD_RSS_CAP_MIB`, default 2048; a
//!   10 ms sampler thread checks), reported as "capped". Caveats: the
//!   machine has 2 cores, so the producers compete for CPU with the
//!   callback workers (and with the grace-period threads): the limit, measured with the cores to itself, is
//!   not fully reachable by any library whose producers run flat out;
//!   `inline` is the reachable reference (what an offloading library adds
//!   on top of it: queueing, grace periods, wake-ups, frees of nodes
//!   another thread allocated). A
//!   throttled rcu-offload producer sleeps, which gives its core to the
//!   workers; liburcu's producers never wait. liburcu's per-CPU workers are
//!   pinned to their CPU, rcu-offload's are not.
//!
//! When "every callback has run", per library:
//!
//! * rcu-offload: `barrier()` returned.
//! * liburcu: `rcu_barrier()` (`urcu_memb_barrier`) returned. The producer
//!   loops, the barrier and the clock run in the C shim.
//! * crossbeam-epoch has no barrier and no worker thread: deferred functions
//!   run inside `pin()`/`flush()` of whichever thread collects. Each
//!   producer pins once per callback (`pin(); defer(f); unpin`) and flushes
//!   once at the end; then the calling thread loops `pin().flush()` until a
//!   counter bumped by every callback (the only way to know) reaches the
//!   batch. The `free64` callbacks therefore also bump a counter.
//! * seize has no barrier and no worker thread either: a batch of retired
//!   pointers (32 here) is reclaimed by the last thread to leave a guard
//!   that saw it. Each producer enters a guard per callback
//!   (`enter(); defer_retire(ptr, reclaim); leave`) and flushes at the end;
//!   the calling thread then loops `enter().flush()` until the counter
//!   reaches the batch. seize retires pointers, not closures: the `counter`
//!   entry retires a pointer to the counter itself with a reclaimer that
//!   bumps it, and the `free64` reclaimer frees the box and bumps the counter.
//!   [`BATCH`] is a multiple of 32 x P, so no partial batch is left behind.
//!
//! In the latency group crossbeam-epoch and seize flush after every call
//! (their best case: without it a callback waits for 64 (crossbeam) or 32
//! (seize) more to fill its bag or batch); their callbacks then run on the
//! producer itself, during that flush or the next one.

use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use crossbeam_epoch as epoch;
use rcu_offload::Rcu;
use rcu_offload_benches::{flood, median, CallbackKind};
use seize::{Collector, Guard as _};

/// Callbacks per measured burst (the end-to-end and enqueue groups), shared
/// equally by the producers. A multiple of 32 x every producer count, so
/// that seize (batches of 32) leaves no partial batch behind.
const BATCH: u64 = 65_536;

/// Producer thread counts of the burst groups (the machine has 2 cores).
const PRODUCERS: [usize; 2] = [1, 2];

/// Callbacks per sustained iteration unless [`SUSTAINED_VAR`] says
/// otherwise: 2^22 = 4,194,304 (at least 4,000,000, and a multiple of
/// 32 x 8 for seize).
const SUSTAINED_TOTAL: u64 = 1 << 22;

/// Overrides [`SUSTAINED_TOTAL`] (for smoke runs with a small size).
const SUSTAINED_VAR: &str = "RCU_SUSTAINED_CALLBACKS";

/// Producer thread counts of the sustained groups: 8 on the 2-core machine
/// shows what sharing the cores costs.
const SUSTAINED_PRODUCERS: [usize; 3] = [1, 2, 8];

/// Every sustained total is rounded up to a multiple of this (32 x the
/// largest producer count), so that every seize producer's share is whole
/// batches of 32.
const SUSTAINED_ROUND: u64 = 32 * 8;

/// The period of the light-load latency measurement.
const LATENCY_INTERVAL: Duration = Duration::from_micros(200);

/// The object freed by the `free64` callbacks.
type Obj64 = [u64; 8];

const _: () = assert!(std::mem::size_of::<Obj64>() == 64);

fn kind_name(kind: CallbackKind) -> &'static str {
    match kind {
        CallbackKind::Counter => "counter",
        CallbackKind::Free64 => "free64",
    }
}

/// Monotonic nanoseconds since the first call (never 0, so that 0 can mean
/// "not yet"). `Instant` is `CLOCK_MONOTONIC` on Linux, the clock the C
/// shim reads.
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let ns = BASE.get_or_init(Instant::now).elapsed().as_nanos();
    u64::try_from(ns).unwrap_or(u64::MAX - 1) + 1
}

// ---------------------------------------------------------------------
// Producers
// ---------------------------------------------------------------------

/// The start gate: helpers check in, then wait until the calling thread
/// opens it (the same protocol as the C shim's gate).
struct Gate {
    state: Mutex<(usize, bool)>,
    cond: Condvar,
}

impl Gate {
    fn new() -> Self {
        Self {
            state: Mutex::new((0, false)),
            cond: Condvar::new(),
        }
    }

    fn wait(&self) {
        let mut s = self.state.lock().expect("gate poisoned");
        s.0 += 1;
        self.cond.notify_all();
        while !s.1 {
            s = self.cond.wait(s).expect("gate poisoned");
        }
    }

    fn open(&self, helpers: usize) {
        let mut s = self.state.lock().expect("gate poisoned");
        while s.0 < helpers {
            s = self.cond.wait(s).expect("gate poisoned");
        }
        s.1 = true;
        self.cond.notify_all();
    }
}

/// What one producer queues: `n` counter callbacks, or `n` 64-byte objects
/// to free.
#[derive(Clone, Copy)]
enum Work {
    Counter(u64),
    Free64(u64),
}

/// A producer's prepared callbacks (made before the start gate).
enum State {
    Counter(u64),
    // Each object must be its own 64-byte heap allocation: that is what the
    // callbacks free.
    #[allow(clippy::vec_box)]
    Objs(Vec<Box<Obj64>>),
}

impl Work {
    fn prepare(self) -> State {
        match self {
            Work::Counter(n) => State::Counter(n),
            Work::Free64(n) => State::Objs((0..n).map(|i| Box::new([i; 8])).collect()),
        }
    }
}

/// The producer's timed part: queue everything in `state`, then
/// [`Peer::producer_done`]. The emptied state is dropped later, untimed.
fn produce<P: Peer>(peer: &P, state: &mut State) {
    match state {
        State::Counter(n) => {
            for _ in 0..*n {
                peer.call_counter();
            }
        }
        State::Objs(objs) => {
            for obj in objs.drain(..) {
                peer.retire_obj(obj);
            }
        }
    }
    peer.producer_done();
}

/// A helper's result: its own loop time and its emptied state.
type Done = (Duration, State);
type Job = Box<dyn FnOnce() -> Done + Send>;

/// A persistent producer thread, running one job at a time.
struct Helper {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
}

/// The first `n` persistent helper threads, spawned on first use.
///
/// Helpers live for the whole process, like an application's long-lived
/// producer threads: per-thread first-use costs (crossbeam registering the
/// thread, seize giving it an id, rcu-offload assigning its shard) are paid
/// once, outside every measurement, and rcu-offload's round-robin shard
/// assignment at a thread's first `call()` puts the calling thread (the
/// first to call) and the first helper on different shards.
fn helpers(n: usize) -> MutexGuard<'static, Vec<Helper>> {
    static HELPERS: Mutex<Vec<Helper>> = Mutex::new(Vec::new());
    let mut helpers = HELPERS.lock().expect("helper pool poisoned");
    while helpers.len() < n {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        thread::Builder::new()
            .name(format!("producer-{}", helpers.len() + 1))
            .spawn(move || {
                while let Ok(job) = job_rx.recv() {
                    if done_tx.send(job()).is_err() {
                        break;
                    }
                }
            })
            .expect("spawning a producer thread");
        helpers.push(Helper { jobs, done });
    }
    helpers
}

/// One measured batch.
struct Batch {
    /// When the calling thread passed the start gate.
    start: Instant,
    /// Each producer's own queueing loop.
    loops: Vec<Duration>,
    /// The CPU time the calling thread's (the first producer's) loop used:
    /// its loop less the time it was blocked (a throttled producer sleeps)
    /// or preempted.
    first_cpu: Duration,
    /// The producers' emptied states, dropped by the caller after its clock
    /// stopped.
    states: Vec<State>,
}

impl Batch {
    fn mean_loop(&self) -> Duration {
        self.loops.iter().sum::<Duration>() / self.loops.len() as u32
    }
}

/// Runs `producers` producers, the calling thread and `producers - 1`
/// persistent helpers ([`helpers`]), sharing `total` callbacks equally
/// (`work` says which kind). Each prepares its share, passes the start gate,
/// then queues it, timing its own loop. Returns once every helper reported
/// back. Mirrors `shim_memb_call_rcu_run` (whose helpers are pthreads
/// created per run, outside the timed part).
fn run_producers<P: Peer + Send + 'static>(
    peer: &Arc<P>,
    producers: usize,
    total: u64,
    work: fn(u64) -> Work,
) -> Batch {
    let p = producers as u64;
    let share = |i: usize| total / p + u64::from((i as u64) < total % p);
    let gate = Arc::new(Gate::new());
    let helpers = helpers(producers - 1);
    for (i, helper) in helpers.iter().enumerate().take(producers - 1) {
        let (peer, gate, work) = (Arc::clone(peer), Arc::clone(&gate), work(share(i + 1)));
        let job: Job = Box::new(move || {
            let mut state = work.prepare();
            gate.wait();
            let start = Instant::now();
            produce(&*peer, &mut state);
            (start.elapsed(), state)
        });
        helper.jobs.send(job).expect("producer thread exited");
    }
    let mut state = work(share(0)).prepare();
    gate.open(producers - 1);
    let cpu0 = rcu_offload_benches::flood::thread_cpu_time();
    let start = Instant::now();
    produce(&**peer, &mut state);
    let mut batch = Batch {
        start,
        loops: vec![start.elapsed()],
        first_cpu: rcu_offload_benches::flood::thread_cpu_time().saturating_sub(cpu0),
        states: vec![state],
    };
    for helper in helpers.iter().take(producers - 1) {
        let (dur, state) = helper.done.recv().expect("producer thread panicked");
        batch.loops.push(dur);
        batch.states.push(state);
    }
    batch
}

// ---------------------------------------------------------------------
// The Rust peers
// ---------------------------------------------------------------------

/// Per-callback run times of the latency measurement (0 = not run yet).
struct Slots(Vec<AtomicU64>);

impl Slots {
    fn new(n: usize) -> Self {
        Self((0..n).map(|_| AtomicU64::new(0)).collect())
    }

    fn record(&self, i: usize) {
        self.0[i].store(now_ns(), Relaxed);
    }

    fn all_ran(&self) -> bool {
        self.0.iter().all(|s| s.load(Relaxed) != 0)
    }
}

/// A Rust library under test.
trait Peer: Sync {
    const NAME: &'static str;
    /// Whether the `free64` callbacks also bump [`Peer::ran`].
    const FREE_COUNTS: bool;
    /// The counter bumped by every `counter` callback.
    fn ran(&self) -> u64;
    /// Queues a callback that bumps the counter.
    fn call_counter(&self);
    /// Queues a callback that frees `obj`.
    fn retire_obj(&self, obj: Box<Obj64>);
    /// Called by each producer after its share (inside its timed loop).
    fn producer_done(&self) {}
    /// Returns once every callback queued so far has run; `done` says
    /// whether they have, for peers that can only tell by looking.
    fn drain(&self, done: &dyn Fn() -> bool);
    /// Queues a callback that records its run time in `slots[i]`.
    fn call_latency(&self, slots: &Arc<Slots>, i: usize);
}

static OURS_RAN: AtomicU64 = AtomicU64::new(0);
static CROSSBEAM_RAN: AtomicU64 = AtomicU64::new(0);
static SEIZE_RAN: AtomicU64 = AtomicU64::new(0);

struct Ours {
    rcu: Rcu,
}

impl Peer for Ours {
    const NAME: &'static str = "rcu-offload";
    const FREE_COUNTS: bool = false;

    fn ran(&self) -> u64 {
        OURS_RAN.load(Relaxed)
    }

    fn call_counter(&self) {
        self.rcu.call(|| {
            OURS_RAN.fetch_add(1, Relaxed);
        });
    }

    fn retire_obj(&self, obj: Box<Obj64>) {
        self.rcu.retire(obj);
    }

    fn drain(&self, _done: &dyn Fn() -> bool) {
        self.rcu.barrier();
    }

    fn call_latency(&self, slots: &Arc<Slots>, i: usize) {
        let slots = Arc::clone(slots);
        self.rcu.call(move || slots.record(i));
    }
}

/// crossbeam-epoch's global collector (`epoch::pin()`).
struct Crossbeam;

impl Peer for Crossbeam {
    const NAME: &'static str = "crossbeam-epoch";
    const FREE_COUNTS: bool = true;

    fn ran(&self) -> u64 {
        CROSSBEAM_RAN.load(Relaxed)
    }

    fn call_counter(&self) {
        epoch::pin().defer(|| CROSSBEAM_RAN.fetch_add(1, Relaxed));
    }

    fn retire_obj(&self, obj: Box<Obj64>) {
        epoch::pin().defer(move || {
            drop(obj);
            CROSSBEAM_RAN.fetch_add(1, Relaxed)
        });
    }

    fn producer_done(&self) {
        epoch::pin().flush();
    }

    fn drain(&self, done: &dyn Fn() -> bool) {
        while !done() {
            epoch::pin().flush();
        }
    }

    fn call_latency(&self, slots: &Arc<Slots>, i: usize) {
        let guard = epoch::pin();
        let slots = Arc::clone(slots);
        guard.defer(move || slots.record(i));
        guard.flush();
    }
}

/// seize reclaimer of the `counter` entry: the retired pointer is the
/// counter itself, which it bumps (nothing is freed).
///
/// # Safety
///
/// `counter` must point to a live `AtomicU64`.
unsafe fn seize_bump(counter: *mut AtomicU64, _: &Collector) {
    // SAFETY: the caller passes a pointer to the static SEIZE_RAN; only
    // shared (atomic) access is made through it.
    unsafe { &*counter }.fetch_add(1, Relaxed);
}

/// seize reclaimer of the `free64` entry.
///
/// # Safety
///
/// `obj` must come from `Box::into_raw` and not be used afterwards.
unsafe fn seize_free(obj: *mut Obj64, _: &Collector) {
    // SAFETY: the pointer came from `Box::into_raw` in `retire_obj` and
    // seize hands it to its reclaimer exactly once.
    drop(unsafe { Box::from_raw(obj) });
    SEIZE_RAN.fetch_add(1, Relaxed);
}

/// seize reclaimer of the latency entry: records the run time.
///
/// # Safety
///
/// `slot` must point into a live [`Slots`].
unsafe fn seize_record(slot: *mut AtomicU64, _: &Collector) {
    // SAFETY: the caller keeps the `Slots` alive until every slot is set;
    // only atomic access is made through the pointer.
    unsafe { &*slot }.store(now_ns(), Relaxed);
}

struct Seize {
    collector: Collector,
}

impl Peer for Seize {
    const NAME: &'static str = "seize";
    const FREE_COUNTS: bool = true;

    fn ran(&self) -> u64 {
        SEIZE_RAN.load(Relaxed)
    }

    fn call_counter(&self) {
        let guard = self.collector.enter();
        // SAFETY: the "retired" pointer is the static counter, valid
        // forever; `seize_bump` only bumps it and frees nothing, so
        // retiring it any number of times is fine.
        unsafe { guard.defer_retire(ptr::from_ref(&SEIZE_RAN).cast_mut(), seize_bump) };
    }

    fn retire_obj(&self, obj: Box<Obj64>) {
        let guard = self.collector.enter();
        // SAFETY: the box was never shared, is not touched again, and
        // `seize_free` frees it as a Box.
        unsafe { guard.defer_retire(Box::into_raw(obj), seize_free) };
    }

    fn producer_done(&self) {
        self.collector.enter().flush();
    }

    fn drain(&self, done: &dyn Fn() -> bool) {
        while !done() {
            self.collector.enter().flush();
            thread::yield_now();
        }
    }

    fn call_latency(&self, slots: &Arc<Slots>, i: usize) {
        let guard = self.collector.enter();
        let slot = ptr::from_ref(&slots.0[i]).cast_mut();
        // SAFETY: the caller (`latency`) keeps `slots` alive until every
        // slot has been recorded, i.e. until after this reclaimer ran;
        // `seize_record` only stores to the atomic.
        unsafe { guard.defer_retire(slot, seize_record) };
        guard.flush();
    }
}

// ---------------------------------------------------------------------
// Measurements of the Rust peers
// ---------------------------------------------------------------------

/// One end-to-end batch: queue `total` callbacks ([`BATCH`] for a burst,
/// [`sustained_total`] for a sustained run), wait until all ran.
fn end_to_end_batch<P: Peer + Send + 'static>(
    peer: &Arc<P>,
    kind: CallbackKind,
    producers: usize,
    total: u64,
) -> Duration {
    let before = peer.ran();
    let counted = kind == CallbackKind::Counter || P::FREE_COUNTS;
    let target = before + if counted { total } else { 0 };
    let work = match kind {
        CallbackKind::Counter => Work::Counter,
        CallbackKind::Free64 => Work::Free64,
    };
    let batch = run_producers(peer, producers, total, work);
    peer.drain(&|| peer.ran() >= target);
    let elapsed = batch.start.elapsed();
    drop(batch.states);
    assert_eq!(peer.ran(), target, "{}: not every callback ran", P::NAME);
    elapsed
}

/// One enqueue batch of `total` callbacks: each producer's mean `call()`
/// loop; drained untimed.
fn enqueue_batch<P: Peer + Send + 'static>(
    peer: &Arc<P>,
    producers: usize,
    total: u64,
) -> Duration {
    let target = peer.ran() + total;
    let batch = run_producers(peer, producers, total, Work::Counter);
    peer.drain(&|| peer.ran() >= target);
    assert_eq!(peer.ran(), target, "{}: not every callback ran", P::NAME);
    batch.mean_loop()
}

/// [`enqueue_batch`] with one producer, timed by the CPU time its loop used
/// instead of the wall clock: what one `call()` costs its caller's CPU,
/// without the time a throttled producer sleeps while the workers catch up.
fn enqueue_batch_cpu<P: Peer + Send + 'static>(peer: &Arc<P>, total: u64) -> Duration {
    let target = peer.ran() + total;
    let batch = run_producers(peer, 1, total, Work::Counter);
    peer.drain(&|| peer.ran() >= target);
    assert_eq!(peer.ran(), target, "{}: not every callback ran", P::NAME);
    batch.first_cpu
}

/// `iters` callbacks at light load; returns their median latency x `iters`.
fn latency<P: Peer>(peer: &P, iters: u64) -> Duration {
    let n = usize::try_from(iters).expect("iteration count fits usize");
    let slots = Arc::new(Slots::new(n));
    let mut called = Vec::with_capacity(n);
    let mut deadline = Instant::now();
    for i in 0..n {
        deadline += LATENCY_INTERVAL;
        let now = Instant::now();
        if deadline > now {
            thread::sleep(deadline - now);
        }
        called.push(now_ns());
        peer.call_latency(&slots, i);
    }
    peer.drain(&|| slots.all_ran());
    assert!(slots.all_ran(), "{}: not every callback ran", P::NAME);
    let mut lat: Vec<u64> = slots
        .0
        .iter()
        .zip(&called)
        .map(|(ran, called)| ran.load(Relaxed).saturating_sub(*called))
        .collect();
    Duration::from_nanos(median(&mut lat).saturating_mul(iters))
}

// ---------------------------------------------------------------------
// Criterion groups
// ---------------------------------------------------------------------

fn flat(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sampling_mode(SamplingMode::Flat);
}

fn bench_peer<P: Peer + Send + 'static>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    peer: P,
    per_iteration: impl Fn(&Arc<P>) -> Duration,
) {
    let peer = Arc::new(peer);
    group.bench_function(P::NAME, |b| {
        b.iter_custom(|iters| (0..iters).map(|_| per_iteration(&peer)).sum())
    });
}

fn seize_peer() -> Seize {
    Seize {
        collector: Collector::new(),
    }
}

fn end_to_end(c: &mut Criterion) {
    now_ns(); // start the latency clock outside any measurement
    let available = rcu_offload_benches::check_liburcu();
    for kind in [CallbackKind::Counter, CallbackKind::Free64] {
        for producers in PRODUCERS {
            let name = format!("callbacks/end_to_end/{}/P={producers}", kind_name(kind));
            let mut group = c.benchmark_group(name);
            flat(&mut group);
            group.throughput(Throughput::Elements(BATCH));
            bench_peer(&mut group, Ours { rcu: Rcu::new() }, |p| {
                end_to_end_batch(p, kind, producers, BATCH)
            });
            if available {
                liburcu::bench(&mut group, liburcu::What::EndToEnd(kind, producers, BATCH));
            }
            bench_peer(&mut group, Crossbeam, |p| {
                end_to_end_batch(p, kind, producers, BATCH)
            });
            bench_peer(&mut group, seize_peer(), |p| {
                end_to_end_batch(p, kind, producers, BATCH)
            });
            group.finish();

            // The same for rcu-offload with the bypass off, right after.
            let name = format!(
                "callbacks/end_to_end_nobypass/{}/P={producers}",
                kind_name(kind)
            );
            let mut group = c.benchmark_group(name);
            flat(&mut group);
            group.throughput(Throughput::Elements(BATCH));
            bench_peer(&mut group, ours_nobypass(), |p| {
                end_to_end_batch(p, kind, producers, BATCH)
            });
            group.finish();
        }
    }
}

/// rcu-offload with the bypass lists off (`nobypass_limit(usize::MAX)`),
/// everything else default.
fn ours_nobypass() -> Ours {
    Ours {
        rcu: Rcu::builder()
            .nobypass_limit(usize::MAX)
            .build()
            .expect("valid configuration"),
    }
}

fn enqueue(c: &mut Criterion) {
    let available = rcu_offload_benches::check_liburcu();
    for producers in PRODUCERS {
        let mut group = c.benchmark_group(format!("callbacks/enqueue/P={producers}"));
        flat(&mut group);
        group.throughput(Throughput::Elements(BATCH / producers as u64));
        bench_peer(&mut group, Ours { rcu: Rcu::new() }, |p| {
            enqueue_batch(p, producers, BATCH)
        });
        if available {
            liburcu::bench(&mut group, liburcu::What::Enqueue(producers, BATCH));
        }
        bench_peer(&mut group, Crossbeam, |p| {
            enqueue_batch(p, producers, BATCH)
        });
        bench_peer(&mut group, seize_peer(), |p| {
            enqueue_batch(p, producers, BATCH)
        });
        group.finish();

        let mut group = c.benchmark_group(format!("callbacks/enqueue_nobypass/P={producers}"));
        flat(&mut group);
        group.throughput(Throughput::Elements(BATCH / producers as u64));
        bench_peer(&mut group, ours_nobypass(), |p| {
            enqueue_batch(p, producers, BATCH)
        });
        group.finish();
    }
}

/// Callbacks per sustained iteration: [`SUSTAINED_TOTAL`], or
/// `$RCU_SUSTAINED_CALLBACKS` (underscores allowed) rounded up to a multiple
/// of [`SUSTAINED_ROUND`]. A smaller size than the default is announced on
/// stderr (once), since its figures are not sustained ones.
fn sustained_total() -> u64 {
    static TOTAL: OnceLock<u64> = OnceLock::new();
    *TOTAL.get_or_init(|| {
        let Ok(v) = std::env::var(SUSTAINED_VAR) else {
            return SUSTAINED_TOTAL;
        };
        let n: u64 = v
            .replace('_', "")
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SUSTAINED_VAR}={v}: expected a callback count"));
        let n = n.max(1).div_ceil(SUSTAINED_ROUND) * SUSTAINED_ROUND;
        if n < 4_000_000 {
            eprintln!(
                "callbacks/sustained: {n} callbacks per iteration ({SUSTAINED_VAR}), \
                 below 4,000,000: a smoke run, not a sustained measurement"
            );
        }
        n
    })
}

/// The settings of a sustained group: 10 samples, `Flat`, throughput in
/// callbacks per iteration (`elements`), so that report.py prints time per
/// callback and M callbacks/s. The warm-up and measurement times are the
/// bench's (0.5 s and 2 s, or `--warm-up-time`/`--measurement-time`).
///
/// Each sample is at least one whole iteration (`Flat` runs
/// `ceil(measurement time / (10 x iteration time))` >= 1 iterations per
/// sample), and criterion's warm-up calls the routine at least once with
/// one iteration before any sample (it doubles the iteration count until
/// the warm-up time is spent, starting at 1): every entry therefore runs at
/// least one full, untimed iteration of the same size before its
/// measurement, whatever the warm-up time.
fn sustained_config(group: &mut BenchmarkGroup<'_, WallTime>, elements: u64) {
    flat(group);
    group.sample_size(10);
    group.throughput(Throughput::Elements(elements));
}

/// `callbacks/sustained/{counter,free64}/P={1,2,8}`: the end-to-end
/// measurement of the burst groups with [`sustained_total`] callbacks per
/// iteration.
fn sustained(c: &mut Criterion) {
    let total = sustained_total();
    let available = rcu_offload_benches::check_liburcu();
    for kind in [CallbackKind::Counter, CallbackKind::Free64] {
        for producers in SUSTAINED_PRODUCERS {
            let name = format!("callbacks/sustained/{}/P={producers}", kind_name(kind));
            let mut group = c.benchmark_group(name);
            sustained_config(&mut group, total);
            bench_peer(&mut group, Ours { rcu: Rcu::new() }, |p| {
                end_to_end_batch(p, kind, producers, total)
            });
            if available {
                liburcu::bench(&mut group, liburcu::What::EndToEnd(kind, producers, total));
            }
            bench_peer(&mut group, Crossbeam, |p| {
                end_to_end_batch(p, kind, producers, total)
            });
            bench_peer(&mut group, seize_peer(), |p| {
                end_to_end_batch(p, kind, producers, total)
            });
            group.finish();
        }
    }
}

/// `callbacks/sustained_enqueue/P=1`: the enqueue measurement of the burst
/// group with [`sustained_total`] `counter` callbacks from one producer.
fn sustained_enqueue(c: &mut Criterion) {
    let total = sustained_total();
    let available = rcu_offload_benches::check_liburcu();
    let producers = 1;
    let mut group = c.benchmark_group(format!("callbacks/sustained_enqueue/P={producers}"));
    sustained_config(&mut group, total / producers as u64);
    bench_peer(&mut group, Ours { rcu: Rcu::new() }, |p| {
        enqueue_batch(p, producers, total)
    });
    if available {
        liburcu::bench(&mut group, liburcu::What::Enqueue(producers, total));
    }
    bench_peer(&mut group, Crossbeam, |p| {
        enqueue_batch(p, producers, total)
    });
    bench_peer(&mut group, seize_peer(), |p| {
        enqueue_batch(p, producers, total)
    });
    group.finish();
    // The same loops timed by the producer's CPU time: in a sustained flood
    // a bounded library's producer waits for its workers (rcu-offload's
    // throttle at the high-water mark), so the wall-clock figure above is
    // the pipeline's pace as much as the cost of `call()`.
    let mut group = c.benchmark_group(format!("callbacks/sustained_enqueue_cpu/P={producers}"));
    sustained_config(&mut group, total);
    bench_peer(&mut group, Ours { rcu: Rcu::new() }, |p| {
        enqueue_batch_cpu(p, total)
    });
    bench_peer(&mut group, Crossbeam, |p| enqueue_batch_cpu(p, total));
    bench_peer(&mut group, seize_peer(), |p| enqueue_batch_cpu(p, total));
    group.finish();
}

fn light_load_latency(c: &mut Criterion) {
    let available = rcu_offload_benches::check_liburcu();
    let mut group = c.benchmark_group("callbacks/latency_200us");
    flat(&mut group);
    let ours = Ours { rcu: Rcu::new() };
    group.bench_function(Ours::NAME, |b| b.iter_custom(|iters| latency(&ours, iters)));
    drop(ours);
    if available {
        liburcu::bench(&mut group, liburcu::What::Latency);
    }
    group.bench_function(Crossbeam::NAME, |b| {
        b.iter_custom(|iters| latency(&Crossbeam, iters))
    });
    let seize = seize_peer();
    group.bench_function(Seize::NAME, |b| {
        b.iter_custom(|iters| latency(&seize, iters))
    });
    group.finish();
}

#[cfg(have_liburcu)]
mod liburcu {
    use std::time::Duration;

    use criterion::measurement::WallTime;
    use criterion::BenchmarkGroup;
    use rcu_offload_benches::liburcu::{
        call_rcu_latency, call_rcu_run, set_call_rcu_workers, CallRcuWorkers,
    };
    use rcu_offload_benches::{median, CallbackKind};

    use super::LATENCY_INTERVAL;

    /// What to measure (see the module documentation).
    #[derive(Clone, Copy)]
    pub enum What {
        /// Kind, producers, callbacks per iteration.
        EndToEnd(CallbackKind, usize, u64),
        /// Producers, callbacks per iteration.
        Enqueue(usize, u64),
        Latency,
    }

    fn routine(what: What, iters: u64) -> Duration {
        match what {
            What::EndToEnd(kind, producers, total) => (0..iters)
                .map(|_| {
                    call_rcu_run(kind, producers, total)
                        .expect("liburcu call_rcu run")
                        .end_to_end
                })
                .sum(),
            What::Enqueue(producers, total) => (0..iters)
                .map(|_| {
                    call_rcu_run(CallbackKind::Counter, producers, total)
                        .expect("liburcu call_rcu run")
                        .mean_producer_loop
                })
                .sum(),
            What::Latency => {
                let n = usize::try_from(iters).expect("iteration count fits usize");
                let mut lat: Vec<u64> = call_rcu_latency(n, LATENCY_INTERVAL)
                    .expect("liburcu call_rcu latency run")
                    .into_iter()
                    .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                    .collect();
                Duration::from_nanos(median(&mut lat).saturating_mul(iters))
            }
        }
    }

    /// Measures `what` with liburcu's default call_rcu worker, then with
    /// per-CPU workers (set up for that entry only).
    pub fn bench(group: &mut BenchmarkGroup<'_, WallTime>, what: What) {
        group.bench_function("liburcu call_rcu default", |b| {
            b.iter_custom(|iters| routine(what, iters))
        });
        set_call_rcu_workers(CallRcuWorkers::PerCpu)
            .expect("creating liburcu's per-CPU call_rcu workers");
        group.bench_function("liburcu call_rcu percpu", |b| {
            b.iter_custom(|iters| routine(what, iters))
        });
        set_call_rcu_workers(CallRcuWorkers::Default)
            .expect("removing liburcu's per-CPU call_rcu workers");
    }
}

#[cfg(not(have_liburcu))]
mod liburcu {
    use criterion::measurement::WallTime;
    use criterion::BenchmarkGroup;
    use rcu_offload_benches::CallbackKind;

    #[allow(dead_code)]
    #[derive(Clone, Copy)]
    pub enum What {
        EndToEnd(CallbackKind, usize, u64),
        Enqueue(usize, u64),
        Latency,
    }

    pub fn bench(_group: &mut BenchmarkGroup<'_, WallTime>, _what: What) {}
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    targets = end_to_end, enqueue, light_load_latency, sustained, sustained_enqueue
}

/// With the `mimalloc` feature, every Rust allocation of this bench (and,
/// through libmimalloc-sys's `override`, every C `malloc`/`free` of the
/// process) goes to mimalloc; without it, to glibc's malloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `criterion_main!(benches)`, with the flood around it: a flood child
/// process runs only its variant; the parent runs the flood group (child
/// processes, see [`flood`]) after the criterion groups. Before the groups
/// it prints which allocator the process uses (checked, see
/// [`rcu_offload_benches::allocator`]) on a line of its own that
/// `benches/report.py` reads.
fn main() {
    flood::child_main_if_requested();
    rcu_offload_benches::print_allocator_line();
    benches();
    flood::run_from_bench(rcu_offload_benches::liburcu_available());
    Criterion::default().configure_from_args().final_summary();
}
