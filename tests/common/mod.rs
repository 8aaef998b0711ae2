//! Helpers shared by the integration tests: liveness bounds, an
//! RCU-protected heap object that detects use after retirement, this
//! process's threads as /proc shows them, and readings of `Rcu::stats()`.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rcu_offload::{Rcu, ShardStats, Stats};

/// How long an operation that must finish may take before the test declares
/// it hung. A liveness bound, not a performance expectation: everything it
/// guards normally finishes in microseconds to a few seconds (membarrier
/// grace periods cost milliseconds on a loaded VM), and the bound is generous
/// so that a busy 2-core CI machine never trips it; only a real hang does.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(60);

/// Runs `f` on a helper thread and returns its result, failing the test if it
/// has not finished within [`LIVENESS_BOUND`] (a hang becomes a failure).
/// A panic in `f` is propagated.
pub fn within<T, F>(what: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name(format!("within:{what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn helper thread");
    match rx.recv_timeout(LIVENESS_BOUND) {
        Ok(v) => {
            handle.join().expect("helper thread");
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => unreachable!("helper finished without sending"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("liveness bound exceeded: {what} did not finish within {LIVENESS_BOUND:?}")
        }
    }
}

/// Spawns `n` threads running `f(i)` and returns their handles.
pub fn spawn_n<F>(n: usize, f: F) -> Vec<thread::JoinHandle<()>>
where
    F: Fn(usize) + Send + Sync + 'static,
{
    let f = std::sync::Arc::new(f);
    (0..n)
        .map(|i| {
            let f = std::sync::Arc::clone(&f);
            thread::spawn(move || f(i))
        })
        .collect()
}

/// Joins every handle, failing the test if a thread panicked; returns the
/// threads' results in order.
pub fn join_all<T>(ts: Vec<thread::JoinHandle<T>>) -> Vec<T> {
    ts.into_iter()
        .map(|t| t.join().expect("test thread panicked"))
        .collect()
}

/// Yields until `cond()` holds, failing the test if it still does not after
/// [`LIVENESS_BOUND`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < LIVENESS_BOUND,
            "liveness bound exceeded: {what} did not happen within {LIVENESS_BOUND:?}"
        );
        thread::yield_now();
    }
}

/// Waits for a cookie's grace period by polling (never blocks in the library).
pub fn poll_until_done(rcu: &Rcu, cookie: rcu_offload::GpCookie) {
    wait_until("a polled grace period", || rcu.poll(cookie));
}

/// Receives one message, failing the test instead of hanging.
pub fn recv<T>(rx: &mpsc::Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(LIVENESS_BOUND) {
        Ok(v) => v,
        Err(e) => panic!("waiting for {what}: {e:?}"),
    }
}

/// The text of a panic payload (for checking caught panics).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Magic of an object that readers may reach.
pub const LIVE: u64 = 0x11FE_5AFE_11FE_5AFE;
/// Magic written after the object's grace period, just before it is freed.
pub const DEAD: u64 = 0xDEAD_DEAD_DEAD_DEAD;
const PAYLOAD: usize = 6;

/// A heap object published through an [`AtomicPtr`]: every field is
/// checkable, and retiring it overwrites all of them.
pub struct Obj {
    magic: AtomicU64,
    serial: AtomicU64,
    payload: [AtomicU64; PAYLOAD],
}

fn payload_value(serial: u64, i: usize) -> u64 {
    serial.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64
}

impl Obj {
    /// A new, live object, leaked to a raw pointer for publication.
    pub fn new_raw(serial: u64) -> *mut Obj {
        Box::into_raw(Box::new(Obj {
            magic: AtomicU64::new(LIVE),
            serial: AtomicU64::new(serial),
            payload: std::array::from_fn(|i| AtomicU64::new(payload_value(serial, i))),
        }))
    }

    /// Reads every field `rounds` times; an error describes the first field
    /// that shows the object is not (or no longer) live.
    pub fn check(&self, rounds: usize) -> Result<u64, String> {
        let mut serial = None;
        for _ in 0..rounds {
            let m = self.magic.load(Ordering::Relaxed);
            if m != LIVE {
                return Err(format!(
                    "reader saw magic {m:#x} ({}) inside a read-side section",
                    if m == DEAD { "DEAD" } else { "garbage" }
                ));
            }
            let s = self.serial.load(Ordering::Relaxed);
            if *serial.get_or_insert(s) != s {
                return Err(format!("serial changed under a reader: {serial:?} -> {s}"));
            }
            for (i, p) in self.payload.iter().enumerate() {
                let v = p.load(Ordering::Relaxed);
                if v != payload_value(s, i) {
                    return Err(format!("payload[{i}] of object {s} is {v:#x}"));
                }
            }
            std::hint::spin_loop();
        }
        Ok(serial.unwrap_or(0))
    }

    /// Marks every field dead without freeing the object, so that a reader
    /// that can still reach it (a bug) reads `DEAD` rather than freed memory.
    ///
    /// # Safety
    ///
    /// `p` came from [`Obj::new_raw`] and has not been freed.
    pub unsafe fn kill(p: *mut Obj) {
        // SAFETY: by the caller's contract `p` is valid.
        let obj = unsafe { &*p };
        obj.magic.store(DEAD, Ordering::Relaxed);
        obj.serial.store(u64::MAX, Ordering::Relaxed);
        for p in &obj.payload {
            p.store(DEAD, Ordering::Relaxed);
        }
    }

    /// Retires the object: marks every field dead, then frees it.
    ///
    /// # Safety
    ///
    /// `p` came from [`Obj::new_raw`], is no longer reachable by new readers,
    /// and a grace period has elapsed since it was unpublished.
    pub unsafe fn retire(p: *mut Obj) {
        // SAFETY: by the caller's contract nobody else can hold `p`.
        let obj = unsafe { Box::from_raw(p) };
        obj.magic.store(DEAD, Ordering::Relaxed);
        obj.serial.store(u64::MAX, Ordering::Relaxed);
        for p in &obj.payload {
            p.store(DEAD, Ordering::Relaxed);
        }
        drop(obj);
    }
}

/// An RCU-protected slot holding one [`Obj`].
pub struct Published {
    ptr: AtomicPtr<Obj>,
}

impl Published {
    /// A slot holding a fresh object with serial 0.
    pub fn new() -> Self {
        Published {
            ptr: AtomicPtr::new(Obj::new_raw(0)),
        }
    }

    /// Loads the current object and checks it. Must be called inside a
    /// read-side section of the domain that protects this slot.
    pub fn read_check(&self, rounds: usize) -> Result<u64, String> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: objects are freed only a grace period after being
        // unpublished, and the caller is in a read-side section.
        unsafe { &*p }.check(rounds)
    }

    /// The raw current pointer (for readers that hold it across nesting).
    pub fn load(&self) -> *mut Obj {
        self.ptr.load(Ordering::Acquire)
    }

    /// Publishes a new object and returns the old one, still unretired.
    pub fn replace(&self, serial: u64) -> *mut Obj {
        self.ptr.swap(Obj::new_raw(serial), Ordering::AcqRel)
    }
}

impl Default for Published {
    fn default() -> Self {
        Published::new()
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        // SAFETY: dropping the slot means no reader can reach it any more.
        unsafe { Obj::retire(*self.ptr.get_mut()) };
    }
}

/// Checks an object reached through a raw pointer loaded inside a read-side
/// section that is still open.
///
/// # Safety
///
/// The caller is inside a read-side section that was open when `p` was loaded.
pub unsafe fn check_raw(p: *mut Obj, rounds: usize) -> Result<u64, String> {
    // SAFETY: by the caller's contract the object has not been freed.
    unsafe { &*p }.check(rounds)
}

// --- Helpers for the callback tests ------------------------------------------

/// This process's threads as `(tid, name)` (Linux: `/proc/self/task/*/comm`).
#[cfg(target_os = "linux")]
pub fn threads() -> Vec<(i32, String)> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) {
                out.push((tid, comm.trim_end().to_string()));
            }
        }
    }
    out
}

/// This process's threads whose name starts with `prefix`, as `(tid, name)`.
#[cfg(target_os = "linux")]
pub fn threads_with_prefix(prefix: &str) -> Vec<(i32, String)> {
    threads()
        .into_iter()
        .filter(|(_, n)| n.starts_with(prefix))
        .collect()
}

/// How many of this process's threads have a name starting with `prefix`.
#[cfg(target_os = "linux")]
pub fn count_threads_with_prefix(prefix: &str) -> usize {
    threads_with_prefix(prefix).len()
}

/// Waits until a thread named exactly `name` exists, fails the test if there
/// is more than one, and returns its tid. A new thread names itself once it
/// first runs and until then shows its creator's name, so a worker that was
/// just started (by a `call()`, a deferred wake) is waited for rather than
/// looked up once.
#[cfg(target_os = "linux")]
pub fn wait_thread_named(name: &str) -> i32 {
    let named = || -> Vec<i32> {
        threads()
            .into_iter()
            .filter(|(_, n)| n == name)
            .map(|(tid, _)| tid)
            .collect()
    };
    wait_until(&format!("a thread named {name}"), || !named().is_empty());
    let found = named();
    assert_eq!(found.len(), 1, "threads named {name}: {:?}", threads());
    found[0]
}

/// The scheduler state letter of thread `tid` (`R`, `S`, `D`, ...), if it
/// still exists (Linux: field 3 of `/proc/self/task/<tid>/stat`).
#[cfg(target_os = "linux")]
pub fn thread_state(tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The name field is parenthesised and may contain spaces: the state is
    // the first non-space character after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// Waits until every thread whose name starts with `prefix` has exited.
#[cfg(target_os = "linux")]
pub fn wait_threads_gone(prefix: &str) {
    wait_until(&format!("the {prefix}* threads to exit"), || {
        count_threads_with_prefix(prefix) == 0
    });
}

/// A set of ids `0..n` that records each id at most once and says which
/// ids were recorded twice (for "every callback runs exactly once").
pub struct IdSet {
    bits: Vec<std::sync::atomic::AtomicU64>,
    n: usize,
    dups: std::sync::atomic::AtomicU64,
}

impl IdSet {
    /// An empty set for ids `0..n`.
    pub fn new(n: usize) -> Self {
        IdSet {
            bits: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            n,
            dups: AtomicU64::new(0),
        }
    }

    /// Records `id`; returns `false` (and counts a duplicate) if it was
    /// already recorded.
    pub fn insert(&self, id: usize) -> bool {
        assert!(id < self.n, "id {id} out of range 0..{}", self.n);
        let bit = 1u64 << (id % 64);
        let old = self.bits[id / 64].fetch_or(bit, Ordering::AcqRel);
        if old & bit != 0 {
            self.dups.fetch_add(1, Ordering::Relaxed);
            false
        } else {
            true
        }
    }

    /// How many distinct ids were recorded.
    pub fn len(&self) -> usize {
        self.bits
            .iter()
            .map(|w| w.load(Ordering::Acquire).count_ones() as usize)
            .sum()
    }

    /// How many inserts found their id already recorded.
    pub fn duplicates(&self) -> u64 {
        self.dups.load(Ordering::Relaxed)
    }

    /// The first few ids not recorded (for failure messages).
    pub fn missing(&self, max: usize) -> Vec<usize> {
        (0..self.n)
            .filter(|&i| self.bits[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) == 0)
            .take(max)
            .collect()
    }
}

/// Failures recorded on threads that cannot panic usefully (callbacks run on
/// worker threads, whose panics are caught and only counted).
#[derive(Default)]
pub struct Failures {
    count: AtomicU64,
    first: std::sync::Mutex<Vec<String>>,
}

impl Failures {
    /// Records one failure (the first few messages are kept).
    pub fn record(&self, msg: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        if first.len() < 5 {
            first.push(msg);
        }
    }

    /// Panics with the recorded messages if there was any failure.
    pub fn assert_none(&self, what: &str) {
        let n = self.count.load(Ordering::Relaxed);
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        assert!(n == 0, "{what}: {n} failures, first: {first:#?}");
    }
}

/// A raw pointer moved into a callback that frees (or kills) its pointee.
pub struct SendPtr<T>(pub *mut T);

// SAFETY: used only for `Obj` and test values that are `Send + Sync`; the
// callback that receives it is the only one that touches the pointee after
// its grace period.
unsafe impl<T: Send + Sync> Send for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so that closures capture the whole `SendPtr`,
    /// not just its non-`Send` field).
    pub fn into_inner(self) -> *mut T {
        self.0
    }
}

/// Makes `rcu`'s GP workers scan their shards again, as a stream of new
/// callbacks would: fresh threads (which get consecutive shards, round robin)
/// each queue a no-op callback, until one of them has woken a GP worker (or
/// eight have tried: a shard that already has pending callbacks wakes
/// nobody). Used while a reader holds up the grace period, to give a broken
/// pipeline every chance to run callbacks early.
pub fn poke_gp_workers(rcu: &Rcu) {
    let before = rcu.stats().gp_worker_wakeups;
    for _ in 0..8 {
        let r = rcu.clone();
        thread::spawn(move || r.call(|| ()))
            .join()
            .expect("poking thread");
        for _ in 0..20 {
            thread::yield_now();
        }
        if rcu.stats().gp_worker_wakeups != before {
            break;
        }
    }
    for _ in 0..100 {
        thread::yield_now();
    }
}

// --- Readings of `Rcu::stats()` ------------------------------------------------

/// A lazy timeout no test outlives: lazy callbacks that run were flushed by
/// something else (promotion, barrier, memory pressure, shutdown).
pub const HOUR: Duration = Duration::from_secs(3600);

/// The sum over every shard of one per-shard counter that [`Stats`] has no
/// total of, e.g. `shard_total(&s, |x| x.bypass_queued)`.
pub fn shard_total(s: &Stats, counter: impl Fn(&ShardStats) -> u64) -> u64 {
    s.shards.iter().map(counter).sum()
}

/// Whether the counters have settled: nothing pending, and every callback
/// queued, plus every internal callback of `barrier()`, invoked.
pub fn is_settled(s: &Stats) -> bool {
    s.pending() == 0 && s.invoked() == s.queued() + shard_total(s, |x| x.barrier_callbacks)
}

/// Checks the counters of a domain nobody queues on any more, right after a
/// `barrier()`: `queued` calls, every one invoked (plus the barrier's own
/// callbacks), nothing pending, no panic, on every shard. Failures name
/// `what` and show the counters.
pub fn assert_settled(s: &Stats, queued: u64, what: &str) {
    assert_eq!(s.queued(), queued, "{what}: queued: {s:?}");
    assert_eq!(s.pending(), 0, "{what}: pending after barrier(): {s:?}");
    for (i, x) in s.shards.iter().enumerate() {
        assert_eq!(x.pending, 0, "{what}: shard {i}: {s:?}");
        assert_eq!(
            x.invoked,
            x.queued + x.barrier_callbacks,
            "{what}: shard {i}: invoked != queued + barrier callbacks: {s:?}"
        );
        assert!(x.bypass_queued <= x.queued, "{what}: shard {i}: {s:?}");
    }
    assert_eq!(s.panics, 0, "{what}: {s:?}");
}

/// Like [`wait_until`], but a failure also shows `rcu`'s counters.
pub fn wait_for(rcu: &Rcu, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < LIVENESS_BOUND,
            "liveness bound exceeded: {what} did not happen within {LIVENESS_BOUND:?}; {:?}",
            rcu.stats()
        );
        thread::yield_now();
    }
}

/// Reads `rcu.stats()` until `cond` holds of them (bounded by
/// [`LIVENESS_BOUND`], like [`wait_for`]) and returns the counters that
/// satisfied it.
pub fn wait_for_stats(rcu: &Rcu, what: &str, mut cond: impl FnMut(&Stats) -> bool) -> Stats {
    let mut last = None;
    wait_for(rcu, what, || {
        let s = rcu.stats();
        let ok = cond(&s);
        last = Some(s);
        ok
    });
    last.expect("the condition was evaluated")
}

/// Joins the producer threads `ts`, then runs `rcu.barrier()` and returns
/// the counters, all within [`LIVENESS_BOUND`] (`what` names the step in a
/// failure). With no threads to join: a bounded barrier and a reading.
pub fn join_and_barrier(rcu: &Rcu, what: &str, ts: Vec<thread::JoinHandle<()>>) -> Stats {
    let rcu = rcu.clone();
    within(what, move || {
        join_all(ts);
        rcu.barrier();
        rcu.stats()
    })
}

// --- Helpers for the bypass, lazy, wake and throttle tests -----------------------

/// Burns a little CPU (a slow callback).
pub fn spin(iterations: u32) {
    for _ in 0..iterations {
        std::hint::spin_loop();
    }
}

/// A callback that adds one to `ran` (the usual "how many ran" count).
pub fn counting(ran: &std::sync::Arc<AtomicUsize>) -> impl FnOnce() + Send + 'static {
    let ran = std::sync::Arc::clone(ran);
    move || {
        ran.fetch_add(1, Ordering::Relaxed);
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A helper thread whose callback shard is `want` in every domain with `n`
/// shards (a thread's shard is fixed at its first `call()`, round robin over
/// the process's threads: fresh threads are tried until one lands there).
pub struct OnShard {
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl OnShard {
    /// A thread on shard `want` of domains with `n` shards that choose
    /// shards per thread (`ShardChoice::PerThread`).
    pub fn new(n: usize, want: usize) -> OnShard {
        assert!(want < n);
        for _ in 0..1000 {
            let (tx, rx) = mpsc::channel::<Job>();
            let (itx, irx) = mpsc::channel();
            let handle = thread::spawn(move || {
                let probe = Rcu::builder()
                    .shards(n)
                    .shard_choice(rcu_offload::ShardChoice::PerThread)
                    .build()
                    .unwrap();
                probe.call(|| ());
                let s = probe.stats();
                let index = s.shards.iter().position(|x| x.queued == 1);
                drop(probe);
                itx.send(index).unwrap();
                for job in rx {
                    job();
                }
            });
            let index = recv(&irx, "the probe call's shard").expect("the probe call was queued");
            if index == want {
                return OnShard {
                    tx: Some(tx),
                    handle: Some(handle),
                };
            }
            drop(tx);
            handle.join().expect("probe thread");
        }
        panic!("no thread landed on shard {want} of {n} in 1000 tries");
    }

    /// Runs `f` on the helper thread and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (rtx, rrx) = mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send(Box::new(move || {
                let _ = rtx.send(f());
            }))
            .expect("helper thread alive");
        recv(&rrx, "a job on a shard-pinned thread")
    }
}

impl Drop for OnShard {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let r = h.join();
            if !thread::panicking() {
                r.expect("shard-pinned thread");
            }
        }
    }
}
