//! The `callbacks/flood` benchmark (documented with the other callback
//! groups in `benches/callbacks.rs`): producers queue slow callbacks as fast
//! as they can for a fixed time; we report the sustained callback rate and
//! the process's peak RSS.
//!
//! Every variant runs in a fresh child process (the bench binary re-executes
//! itself with [`CHILD_VAR`] set), so the peak RSS (`VmHWM`) of one variant
//! cannot include another's, and allocator state left by one cannot help or
//! hurt the next. The child prints one `RCU_FLOOD_RESULT {json}` line; the
//! parent ([`run_from_bench`]) prints a table and, when [`OUT_VAR`] names a
//! file, appends the JSON lines to it (`benches/report.py` does this).
//!
//! Environment (read by the parent):
//!
//! * `RCU_FLOOD=0`: skip the flood entirely.
//! * `RCU_FLOOD_SECS`: comma-separated run lengths in seconds (default
//!   `3,10`). Each length is a block: the two "limit" variants (for
//!   min(length, 3) s), then for each producer count the `inline`
//!   reference (for the full length) and every flood variant for that
//!   length; a flood's ratios use its own block's limit and the inline rate
//!   of its own block and producer count, measured minutes earlier at most.
//! * `RCU_FLOOD_PRODUCERS`: comma-separated producer counts (default
//!   `1,2`); every flood variant and the inline reference run once per
//!   count (the limits do not depend on it).
//! * `RCU_FLOOD_HIGH_WATER`: comma-separated high-water marks (`_` allowed,
//!   `MAX` for `usize::MAX`), e.g. `4096,16384,65536,100000,262144`: adds an
//!   rcu-offload variant `ours-hw=V` with `Builder::high_water(V)` (low
//!   water V/2, the builder's default) per value, so that the rate and the
//!   peak RSS can be read as a curve against the mark. Default: none.
//! * `RCU_FLOOD_VARIANTS`: comma-separated variant keys to run (default:
//!   all): `ours`, `ours-unbounded`, `ours-hw16k`, `liburcu-percpu`,
//!   `liburcu-default`, `inline`, `limit-rust`, `limit-c`, and `sweep` for
//!   every `RCU_FLOOD_HIGH_WATER` variant. E.g.
//!   `RCU_FLOOD_VARIANTS=inline,limit-rust,ours,sweep` runs only the sweep,
//!   the default mark and the references its ratios need.
//! * `RCU_FLOOD_RSS_CAP_MIB` (default 2048): a safety cap for the unbounded
//!   variants. A sampler thread reads `VmRSS` every 10 ms; above the cap it
//!   stops the producers early (the run then drains and reports `capped`).
//! * `RCU_FLOOD_JSON`: append each child's JSON line to this file.
//!
//! Each child also records which allocator it ran with (`allocator`, see
//! [`crate::allocator`]; mimalloc with the `mimalloc` cargo feature).
//!
//! Besides the wall-clock rate, each child reports the CPU time it used
//! (`CLOCK_PROCESS_CPUTIME_ID` over the run; for the limit, the body
//! threads' `CLOCK_THREAD_CPUTIME_ID` over the timed parts) as `cpu_cores`
//! and `rate_per_core`: on a shared machine, a run that got less CPU shows
//! it, and callbacks per CPU-second compare the libraries' overheads
//! (producer side included) with the body alone.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rcu_offload::Rcu;

/// Steps of each flood callback's spin.
pub const SPIN_STEPS: u64 = 300;

/// Producer thread counts of the flood unless `RCU_FLOOD_PRODUCERS` says
/// otherwise.
pub const DEFAULT_PRODUCERS: [usize; 2] = [1, 2];

/// The most producers a flood accepts (the C shim's limit).
const MAX_PRODUCERS: usize = 64;

/// Set (to `variant:seconds:cap_mib:producers`) in a child process that
/// runs one variant.
pub const CHILD_VAR: &str = "RCU_BENCH_FLOOD_CHILD";

/// When set, the parent appends every child's JSON line to this file.
pub const OUT_VAR: &str = "RCU_FLOOD_JSON";

const SECS_VAR: &str = "RCU_FLOOD_SECS";
const PRODUCERS_VAR: &str = "RCU_FLOOD_PRODUCERS";
const HIGH_WATER_VAR: &str = "RCU_FLOOD_HIGH_WATER";
const VARIANTS_VAR: &str = "RCU_FLOOD_VARIANTS";
const CAP_VAR: &str = "RCU_FLOOD_RSS_CAP_MIB";
const SKIP_VAR: &str = "RCU_FLOOD";
const RESULT_PREFIX: &str = "RCU_FLOOD_RESULT ";

/// The object each flood callback frees (64 bytes, `malloc(64)` in C).
pub type Obj64 = [u64; 8];

/// The `ours-hw16k` variant's high-water mark (low water: half of it).
/// With the default (100,000) the flood's steady-state backlog (up to about
/// 11 MB of nodes and queue slots here) no longer fits in cache, and both the
/// callbacks' frees and the producers' reuse of those nodes miss; this one
/// keeps it under about 2 MB.
pub const TUNED_HIGH_WATER: usize = 16_384;

/// Objects per thread per round of the "limit" measurement.
const LIMIT_CHUNK: usize = 16_384;

/// The flood callback's spin: `steps` additions, each forced through memory
/// by [`black_box`]. The C shim's `shim_spin` does the same with an empty
/// `asm` taking the accumulator's address.
#[inline(never)]
pub fn spin(steps: u64) -> u64 {
    let mut acc = 0_u64;
    for i in 0..steps {
        acc = black_box(acc.wrapping_add(i));
    }
    acc
}

/// The Rust flood callback's body: spin, store the result in the object,
/// free it (the C body does the same).
#[inline]
fn body(mut obj: Box<Obj64>) {
    obj[1] = spin(SPIN_STEPS);
    drop(obj);
}

/// What one child process measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// rcu-offload, default configuration (high water 100k).
    Ours,
    /// rcu-offload with throttling off (`high_water(usize::MAX)`).
    OursUnbounded,
    /// rcu-offload with a lower memory bound ([`TUNED_HIGH_WATER`]), as a
    /// user tuning for sustained floods would set it.
    OursTuned,
    /// rcu-offload with `high_water(v)` (low water v/2): one point of the
    /// `RCU_FLOOD_HIGH_WATER` sweep.
    OursHighWater(usize),
    /// liburcu `call_rcu` with per-CPU workers.
    LiburcuPercpu,
    /// liburcu `call_rcu` with its default worker (one for the process).
    LiburcuDefault,
    /// The Rust callback body run directly by as many threads as
    /// rcu-offload has callback workers.
    LimitRust,
    /// The C callback body, same harness.
    LimitC,
    /// No RCU: the flood's producer threads, for the flood's duration,
    /// each allocate a node and run the Rust callback body on it inline.
    Inline,
}

impl Variant {
    /// Every variant with a fixed key (the sweep's are `ours-hw=V`).
    const FIXED: [Variant; 8] = [
        Variant::Ours,
        Variant::OursUnbounded,
        Variant::OursTuned,
        Variant::LiburcuPercpu,
        Variant::LiburcuDefault,
        Variant::LimitRust,
        Variant::LimitC,
        Variant::Inline,
    ];

    /// The short name used on the command line and in the JSON.
    pub fn key(self) -> String {
        match self {
            Variant::Ours => "ours".into(),
            Variant::OursUnbounded => "ours-unbounded".into(),
            Variant::OursTuned => "ours-hw16k".into(),
            Variant::OursHighWater(v) => format!("ours-hw={}", high_water_str(v)),
            Variant::LiburcuPercpu => "liburcu-percpu".into(),
            Variant::LiburcuDefault => "liburcu-default".into(),
            Variant::LimitRust => "limit-rust".into(),
            Variant::LimitC => "limit-c".into(),
            Variant::Inline => "inline".into(),
        }
    }

    /// The name printed in tables.
    pub fn label(self) -> String {
        match self {
            Variant::Ours => "rcu-offload".into(),
            Variant::OursUnbounded => "rcu-offload high_water=MAX".into(),
            Variant::OursTuned => format!("rcu-offload high_water={TUNED_HIGH_WATER}"),
            Variant::OursHighWater(v) => {
                format!("rcu-offload high_water={} (sweep)", high_water_str(v))
            }
            Variant::LiburcuPercpu => "liburcu call_rcu percpu".into(),
            Variant::LiburcuDefault => "liburcu call_rcu default".into(),
            Variant::LimitRust => "limit: Rust body".into(),
            Variant::LimitC => "limit: C body".into(),
            Variant::Inline => "inline: Rust body on the producers".into(),
        }
    }

    fn from_key(key: &str) -> Option<Variant> {
        if let Some(v) = key.strip_prefix("ours-hw=") {
            return parse_high_water(v).map(Variant::OursHighWater);
        }
        Variant::FIXED.into_iter().find(|v| v.key() == key)
    }

    fn is_limit(self) -> bool {
        matches!(self, Variant::LimitRust | Variant::LimitC)
    }

    /// A reference (a limit or `inline`), not a flood through a library.
    fn is_reference(self) -> bool {
        self.is_limit() || self == Variant::Inline
    }

    /// The high-water mark of an rcu-offload variant (`None` for the
    /// others).
    fn high_water(self) -> Option<usize> {
        match self {
            Variant::Ours => Some(rcu_offload::DEFAULT_HIGH_WATER),
            Variant::OursUnbounded => Some(usize::MAX),
            Variant::OursTuned => Some(TUNED_HIGH_WATER),
            Variant::OursHighWater(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the `inline` reference uses this variant's callback body
    /// (the Rust one), so that its rate / inline ratio is meaningful: the
    /// rcu-offload variants.
    fn has_inline_ratio(self) -> bool {
        self.high_water().is_some()
    }

    /// Whether this variant runs liburcu (and so uses the C body).
    fn is_liburcu(self) -> bool {
        matches!(
            self,
            Variant::LiburcuPercpu | Variant::LiburcuDefault | Variant::LimitC
        )
    }

    /// Whether `RCU_FLOOD_VARIANTS` (the keys in `selected`, or all if
    /// `None`) selects this variant.
    fn selected(self, selected: Option<&[String]>) -> bool {
        selected.is_none_or(|keys| {
            keys.iter().any(|k| {
                *k == self.key() || (k == "sweep" && matches!(self, Variant::OursHighWater(_)))
            })
        })
    }
}

/// A high-water mark as written in keys and tables (`MAX` for
/// `usize::MAX`).
fn high_water_str(v: usize) -> String {
    if v == usize::MAX {
        "MAX".into()
    } else {
        v.to_string()
    }
}

/// Parses a high-water mark (`_` allowed, `MAX` for `usize::MAX`); `None`
/// for anything else, and for 0 (which the builder refuses).
fn parse_high_water(v: &str) -> Option<usize> {
    let v = v.trim().replace('_', "");
    if v.eq_ignore_ascii_case("max") {
        return Some(usize::MAX);
    }
    v.parse().ok().filter(|&v: &usize| v >= 1)
}

// ---------------------------------------------------------------------
// RSS
// ---------------------------------------------------------------------

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What the sampler saw.
#[derive(Default)]
struct Samples {
    max_kib: u64,
    at_stop_kib: u64,
    cap_hit: Option<Duration>,
}

/// Samples `VmRSS` every 10 ms until `done`; raises `stop` if it exceeds
/// `cap_kib`. `at_stop_kib` is the largest sample taken while the producers
/// ran, including the first one after `stop` was raised (all samples if
/// the run ended before the sampler saw `stop`).
fn sampler(start: Instant, cap_kib: u64, stop: &AtomicI32, done: &AtomicBool) -> Samples {
    let mut s = Samples::default();
    let mut stopped = false;
    loop {
        let finished = done.load(Relaxed);
        let rss = status_kib("VmRSS");
        s.max_kib = s.max_kib.max(rss);
        if !stopped {
            s.at_stop_kib = s.at_stop_kib.max(rss);
            stopped = stop.load(Relaxed) != 0;
        }
        if rss > cap_kib && s.cap_hit.is_none() {
            s.cap_hit = Some(start.elapsed());
            stop.store(1, Relaxed);
        }
        if finished {
            return s;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `clock_gettime(2)`, declared here rather than through the `libc` crate
/// (std links the C library anyway). Linux only, like the rest of this
/// module's `/proc` use.
mod cpu_clock {
    use std::os::raw::{c_int, c_long};
    use std::time::Duration;

    /// `struct timespec` of the default `clock_gettime` symbol (`time_t`
    /// and `long` are both `long` on Linux).
    #[repr(C)]
    struct Timespec {
        tv_sec: c_long,
        tv_nsec: c_long,
    }

    extern "C" {
        fn clock_gettime(clock: c_int, ts: *mut Timespec) -> c_int;
    }

    /// Every thread of the process, exited ones included.
    pub const PROCESS: c_int = 2; // CLOCK_PROCESS_CPUTIME_ID
    /// The calling thread.
    pub const THREAD: c_int = 3; // CLOCK_THREAD_CPUTIME_ID

    /// The CPU time `clock` has counted (exact, unlike `/proc`'s
    /// tick-granular figures).
    pub fn read(clock: c_int) -> Duration {
        let mut ts = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec with the C layout;
        // clock_gettime only writes it.
        let rc = unsafe { clock_gettime(clock, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime({clock})");
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

fn cpu_time() -> Duration {
    cpu_clock::read(cpu_clock::PROCESS)
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    cpu_clock::read(cpu_clock::THREAD)
}

// ---------------------------------------------------------------------
// One child run
// ---------------------------------------------------------------------

/// The figures of one child run (one JSON line).
#[derive(Debug, Default, Clone)]
struct Outcome {
    /// Callbacks completed (flood: queued, all run by the final barrier;
    /// limit: bodies run).
    done: u64,
    /// Flood: gate to producers joined. Limit: the timed part.
    produce: Duration,
    /// Flood: gate to final barrier returned. Limit: same as `produce`.
    total: Duration,
    /// Producer threads (flood) or body threads (limit).
    threads: usize,
    /// Limit only: CPU time of the body threads in the timed parts (the
    /// process's CPU time is used for floods).
    cpu: Option<Duration>,
    /// rcu-offload only: callbacks invoked when the producers were joined,
    /// and counters from `Rcu::stats()` at the end.
    invoked_at_stop: Option<u64>,
    stats: Vec<(&'static str, u64)>,
}

fn flood_ours(rcu: &Rcu, producers: usize, secs: f64, stop: &AtomicI32) -> Outcome {
    let (done, t0) = produce_for(producers, secs, stop, |n| {
        let obj = Box::new([n; 8]);
        rcu.call(move || body(obj));
    });
    let produce = t0.elapsed();
    let invoked_at_stop = rcu.stats().invoked();
    rcu.barrier();
    let total = t0.elapsed();
    let st = rcu.stats();
    let shards = &st.shards;
    Outcome {
        done,
        produce,
        total,
        threads: producers,
        cpu: None,
        invoked_at_stop: Some(invoked_at_stop),
        stats: vec![
            ("invoked", st.invoked()),
            ("throttled", st.throttled),
            ("grace_periods", st.grace_periods),
            ("gp_worker_wakeups", st.gp_worker_wakeups),
            (
                "cb_worker_wakeups",
                shards.iter().map(|s| s.cb_worker_wakeups).sum(),
            ),
            (
                "bypass_queued",
                shards.iter().map(|s| s.bypass_queued).sum(),
            ),
            (
                "bypass_flushes",
                shards.iter().map(|s| s.bypass_flushes).sum(),
            ),
        ],
    }
}

/// The `inline` reference: `producers` threads, started and stopped like
/// a flood's producers, each loop { allocate a node; run the callback body
/// on it } with no RCU at all. The rate the slow callbacks allow on the
/// same threads and cores, producers included.
fn inline(producers: usize, secs: f64, stop: &AtomicI32) -> Outcome {
    let (done, t0) = produce_for(producers, secs, stop, |n| {
        // black_box: the node must really be allocated and freed (LLVM may
        // elide a heap allocation that never escapes).
        body(black_box(Box::new([n; 8])));
    });
    let total = t0.elapsed();
    Outcome {
        done,
        produce: total,
        total,
        threads: producers,
        ..Outcome::default()
    }
}

/// Runs `producers` threads that, from a common start until `stop` is
/// raised (by the caller's clock after `secs`, or by the RSS sampler), call
/// `item(n)` for n = 0, 1, 2, ...; returns how many items they did in all
/// and when the clock started. The threads are joined when it returns.
fn produce_for(
    producers: usize,
    secs: f64,
    stop: &AtomicI32,
    item: impl Fn(u64) + Sync,
) -> (u64, Instant) {
    let gate = Barrier::new(producers + 1);
    thread::scope(|s| {
        let producers: Vec<_> = (0..producers)
            .map(|_| {
                s.spawn(|| {
                    gate.wait();
                    let mut n = 0_u64;
                    while stop.load(Relaxed) == 0 {
                        item(n);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        gate.wait();
        let t0 = Instant::now();
        sleep_until(t0 + Duration::from_secs_f64(secs), stop);
        stop.store(1, Relaxed);
        let done = producers
            .into_iter()
            .map(|p| p.join().expect("flood producer panicked"))
            .sum();
        (done, t0)
    })
}

/// Sleeps until `deadline` in slices of at most 1 ms, returning early once
/// `stop` is raised.
fn sleep_until(deadline: Instant, stop: &AtomicI32) {
    while stop.load(Relaxed) == 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        thread::sleep((deadline - now).min(Duration::from_millis(1)));
    }
}

/// The "own limit": `threads` threads run the callback body on objects the
/// calling thread allocated (as producers allocate them in a flood), in
/// rounds of [`LIMIT_CHUNK`] objects each, until the timed part adds up to
/// `secs`. A round's time is the longest any thread took over its chunk,
/// each thread timing itself (the coordinator's clock, read after the start
/// barrier, started late: the threads' CPU time came to about 2.8 cores on a
/// 2-core machine, and the limit read about 1.4x too high). Allocation
/// happens between rounds, untimed.
fn limit<T: Send>(
    threads: usize,
    secs: f64,
    alloc: impl Fn(usize) -> T,
    run: impl Fn(T) + Sync,
) -> Outcome {
    let slots: Vec<Mutex<Option<T>>> = (0..threads).map(|_| Mutex::new(None)).collect();
    let start = Barrier::new(threads + 1);
    let end = Barrier::new(threads + 1);
    let quit = AtomicBool::new(false);
    let cpu_ns = AtomicU64::new(0);
    // The longest wall time any thread spent on this round's chunk: each
    // thread times itself, so a thread that starts before the coordinator
    // reads its clock (after the start barrier) is not under-timed.
    let round_ns = AtomicU64::new(0);
    let (mut timed, mut done) = (Duration::ZERO, 0_u64);
    thread::scope(|s| {
        for slot in &slots {
            let (start, end, quit, run, cpu_ns, round_ns) =
                (&start, &end, &quit, &run, &cpu_ns, &round_ns);
            s.spawn(move || loop {
                start.wait();
                if quit.load(Relaxed) {
                    break;
                }
                let chunk = slot.lock().expect("slot").take().expect("a chunk");
                let (c0, w0) = (thread_cpu_time(), Instant::now());
                run(chunk);
                let wall = w0.elapsed();
                let spent = thread_cpu_time().saturating_sub(c0);
                cpu_ns.fetch_add(spent.as_nanos() as u64, Relaxed);
                round_ns.fetch_max(wall.as_nanos() as u64, Relaxed);
                end.wait();
            });
        }
        while timed.as_secs_f64() < secs {
            for slot in &slots {
                *slot.lock().expect("slot") = Some(alloc(LIMIT_CHUNK));
            }
            round_ns.store(0, Relaxed);
            start.wait();
            end.wait();
            timed += Duration::from_nanos(round_ns.load(Relaxed));
            done += (threads * LIMIT_CHUNK) as u64;
        }
        quit.store(true, Relaxed);
        start.wait();
    });
    Outcome {
        done,
        produce: timed,
        total: timed,
        threads,
        cpu: Some(Duration::from_nanos(cpu_ns.load(Relaxed))),
        ..Outcome::default()
    }
}

/// A liburcu flood with `percpu` (per-CPU `call_rcu` workers) or the
/// default worker (the child process starts with it).
#[cfg(have_liburcu)]
fn flood_liburcu(percpu: bool, producers: usize, secs: f64, stop: &AtomicI32) -> Outcome {
    use crate::liburcu::{flood, set_call_rcu_workers, CallRcuWorkers};
    if percpu {
        set_call_rcu_workers(CallRcuWorkers::PerCpu)
            .expect("creating liburcu's per-CPU call_rcu workers");
    }
    let r =
        flood(producers, Duration::from_secs_f64(secs), SPIN_STEPS, stop).expect("liburcu flood");
    Outcome {
        done: r.queued,
        produce: r.produce,
        total: r.total,
        threads: producers,
        ..Outcome::default()
    }
}

#[cfg(have_liburcu)]
fn limit_c(threads: usize, secs: f64) -> Outcome {
    use crate::liburcu::CObjs;
    limit(
        threads,
        secs,
        |n| CObjs::alloc(n).expect("malloc"),
        |objs| objs.run_body(SPIN_STEPS),
    )
}

/// The number of callback workers of a default rcu-offload domain.
fn default_workers() -> usize {
    Rcu::new().stats().shards.len()
}

/// An rcu-offload domain with the default settings but `high_water` (low
/// water: the builder's default, half of it).
fn ours_with_high_water(high_water: usize) -> Rcu {
    Rcu::builder()
        .high_water(high_water)
        .build()
        .expect("valid configuration")
}

/// Runs one variant with `producers` producers (floods and inline) in this
/// (child) process and returns its JSON line.
fn run_child(variant: Variant, secs: f64, cap_mib: u64, producers: usize) -> String {
    let base_kib = status_kib("VmRSS");
    let stop = AtomicI32::new(0);
    let done_flag = AtomicBool::new(false);
    let start = Instant::now();
    let workers = default_workers();
    let cpu0 = cpu_time();
    let (outcome, samples) = thread::scope(|s| {
        let sampler = s.spawn(|| sampler(start, cap_mib * 1024, &stop, &done_flag));
        let outcome = match variant {
            Variant::Ours => flood_ours(&Rcu::new(), producers, secs, &stop),
            Variant::OursUnbounded => {
                flood_ours(&ours_with_high_water(usize::MAX), producers, secs, &stop)
            }
            Variant::OursTuned => flood_ours(
                &ours_with_high_water(TUNED_HIGH_WATER),
                producers,
                secs,
                &stop,
            ),
            Variant::OursHighWater(v) => {
                flood_ours(&ours_with_high_water(v), producers, secs, &stop)
            }
            Variant::Inline => inline(producers, secs, &stop),
            Variant::LimitRust => limit(
                workers,
                secs,
                |n| (0..n).map(|i| Box::new([i as u64; 8])).collect::<Vec<_>>(),
                |objs| objs.into_iter().for_each(body),
            ),
            #[cfg(have_liburcu)]
            Variant::LiburcuPercpu => flood_liburcu(true, producers, secs, &stop),
            #[cfg(have_liburcu)]
            Variant::LiburcuDefault => flood_liburcu(false, producers, secs, &stop),
            #[cfg(have_liburcu)]
            Variant::LimitC => limit_c(workers, secs),
            #[cfg(not(have_liburcu))]
            Variant::LiburcuPercpu | Variant::LiburcuDefault | Variant::LimitC => {
                panic!("{}: liburcu peer not built", variant.key())
            }
        };
        done_flag.store(true, Relaxed);
        (outcome, sampler.join().expect("sampler panicked"))
    });
    let cpu = outcome
        .cpu
        .unwrap_or_else(|| cpu_time().saturating_sub(cpu0));
    let peak_kib = status_kib("VmHWM");
    let o = outcome;
    let mut fields: Vec<(String, String)> = vec![
        ("variant".into(), format!("\"{}\"", variant.key())),
        ("secs".into(), format!("{secs}")),
        (
            "producers".into(),
            if variant.is_limit() {
                "null".into()
            } else {
                producers.to_string()
            },
        ),
        (
            "high_water".into(),
            variant
                .high_water()
                .map_or("null".into(), |v| format!("\"{}\"", high_water_str(v))),
        ),
        (
            "allocator".into(),
            format!("\"{}\"", crate::allocator().name()),
        ),
        ("threads".into(), o.threads.to_string()),
        ("workers".into(), workers.to_string()),
        ("done".into(), o.done.to_string()),
        (
            "produce_s".into(),
            format!("{:.6}", o.produce.as_secs_f64()),
        ),
        ("total_s".into(), format!("{:.6}", o.total.as_secs_f64())),
        (
            "rate".into(),
            format!("{:.1}", o.done as f64 / o.total.as_secs_f64()),
        ),
        (
            "cpu_cores".into(),
            format!("{:.3}", cpu.as_secs_f64() / o.total.as_secs_f64()),
        ),
        (
            "rate_per_core".into(),
            format!("{:.1}", o.done as f64 / cpu.as_secs_f64().max(1e-9)),
        ),
        ("peak_rss_kib".into(), peak_kib.to_string()),
        ("base_rss_kib".into(), base_kib.to_string()),
        ("max_sampled_rss_kib".into(), samples.max_kib.to_string()),
        ("rss_at_stop_kib".into(), samples.at_stop_kib.to_string()),
        ("capped".into(), samples.cap_hit.is_some().to_string()),
        (
            "cap_hit_s".into(),
            samples
                .cap_hit
                .map_or("null".into(), |d| format!("{:.3}", d.as_secs_f64())),
        ),
    ];
    if let Some(inv) = o.invoked_at_stop {
        fields.push(("invoked_at_stop".into(), inv.to_string()));
        fields.push((
            "rate_during".into(),
            format!("{:.1}", inv as f64 / o.produce.as_secs_f64()),
        ));
    }
    for (k, v) in o.stats {
        fields.push((k.into(), v.to_string()));
    }
    let body: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// If this process is a flood child ([`CHILD_VAR`] set), runs its variant,
/// prints the result line and exits; otherwise returns.
pub fn child_main_if_requested() {
    let Ok(spec) = std::env::var(CHILD_VAR) else {
        return;
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let &[variant, secs, cap, producers] = parts.as_slice() else {
        panic!("{CHILD_VAR}={spec}: expected variant:seconds:cap_mib:producers");
    };
    let variant = Variant::from_key(variant).unwrap_or_else(|| panic!("unknown variant {variant}"));
    let secs: f64 = secs.parse().expect("seconds");
    let cap: u64 = cap.parse().expect("cap in MiB");
    let producers: usize = producers.parse().expect("producer count");
    let line = run_child(variant, secs, cap, producers);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{RESULT_PREFIX}{line}").expect("writing the result");
    out.flush().expect("flushing the result");
    drop(out);
    std::process::exit(0);
}

// ---------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------

/// A flat JSON object as written by [`run_child`] (numbers, booleans, null
/// and strings without commas or quotes).
fn parse_flat(line: &str) -> BTreeMap<String, String> {
    line.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            Some((
                k.trim().trim_matches('"').into(),
                v.trim().trim_matches('"').into(),
            ))
        })
        .collect()
}

/// Criterion's command-line filter (the first positional argument), if any.
fn criterion_filter(args: &[String]) -> Option<&str> {
    const WITH_VALUE: &[&str] = &[
        "-s",
        "--save-baseline",
        "-b",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--output-format",
        "-c",
        "--color",
        "--format",
        "--plotting-backend",
    ];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            it.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

/// Runs one child and returns its JSON line.
fn spawn_child(variant: Variant, secs: f64, cap_mib: u64, producers: usize) -> Option<String> {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .env(
            CHILD_VAR,
            format!("{}:{secs}:{cap_mib}:{producers}", variant.key()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning a flood child");
    // A generous watchdog: the flood, its drain (bounded by the RSS cap),
    // and process start-up.
    let deadline = Instant::now() + Duration::from_secs_f64(secs * 6.0 + 120.0);
    loop {
        match child.try_wait().expect("waiting for a flood child") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                eprintln!("callbacks/flood: {} timed out; killing it", variant.key());
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    }
    let out = child.wait_with_output().expect("flood child output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .map(str::to_owned);
    if line.is_none() {
        eprintln!(
            "callbacks/flood: {} failed ({}) with no result",
            variant.key(),
            out.status
        );
    }
    line
}

fn mib(kib: &str) -> String {
    kib.parse::<f64>()
        .map_or("?".into(), |k| format!("{:.1} MiB", k / 1024.0))
}

fn rate(r: &str) -> String {
    r.parse::<f64>()
        .map_or("—".into(), |r| format!("{:.3} M/s", r / 1e6))
}

/// The `callbacks/flood` group: runs each variant in a child process (see
/// the module docs), prints a table and appends the JSON lines to
/// `$RCU_FLOOD_JSON` if set. Honours criterion's `--list`, `--test` (runs
/// 0.2 s floods) and a positional filter (the flood runs if the filter is a
/// substring of `callbacks/flood` or contains `flood`).
pub fn run_from_bench(liburcu: bool) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "0") {
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("callbacks/flood: benchmark");
        return;
    }
    if let Some(f) = criterion_filter(&args) {
        if !"callbacks/flood".contains(f) && !f.contains("flood") {
            return;
        }
    }
    let test_mode = args.iter().any(|a| a == "--test");
    let mut lengths: Vec<f64> = if test_mode {
        vec![0.2]
    } else {
        std::env::var(SECS_VAR)
            .unwrap_or_else(|_| "3,10".into())
            .split(',')
            .map(|s| s.trim().parse().expect("RCU_FLOOD_SECS: seconds"))
            .collect()
    };
    lengths.retain(|&s| s > 0.0);
    let Some(&shortest) = lengths.iter().min_by(|a, b| a.total_cmp(b)) else {
        return;
    };
    let cap_mib: u64 = std::env::var(CAP_VAR).map_or(2048, |v| v.parse().expect(CAP_VAR));
    let limit_secs = shortest.min(3.0);
    let producer_counts: Vec<usize> = std::env::var(PRODUCERS_VAR).map_or_else(
        |_| DEFAULT_PRODUCERS.to_vec(),
        |v| {
            v.split(',')
                .map(|p| match p.trim().parse() {
                    Ok(n) if (1..=MAX_PRODUCERS).contains(&n) => n,
                    _ => panic!("{PRODUCERS_VAR}={v}: producer counts from 1 to {MAX_PRODUCERS}"),
                })
                .collect()
        },
    );
    let sweep: Vec<Variant> = std::env::var(HIGH_WATER_VAR).map_or_else(
        |_| Vec::new(),
        |v| {
            v.split(',')
                .filter(|h| !h.trim().is_empty())
                .map(|h| {
                    parse_high_water(h).map_or_else(
                        || panic!("{HIGH_WATER_VAR}={v}: high-water marks >= 1, or MAX"),
                        Variant::OursHighWater,
                    )
                })
                .collect()
        },
    );
    let selected: Option<Vec<String>> = std::env::var(VARIANTS_VAR)
        .ok()
        .map(|v| v.split(',').map(|k| k.trim().to_owned()).collect());
    let selected = selected.as_deref();

    // One block per run length, each with its own limit measurements, so
    // that every ratio compares figures taken minutes apart at most; in a
    // block, the inline reference and the floods of each producer count.
    let mut plan: Vec<(usize, Variant, f64, usize)> = Vec::new();
    for (block, &secs) in lengths.iter().enumerate() {
        let block = block + 1;
        plan.push((block, Variant::LimitRust, limit_secs, 0));
        plan.push((block, Variant::LimitC, limit_secs, 0));
        for &p in &producer_counts {
            for v in [
                Variant::Inline,
                Variant::Ours,
                Variant::OursUnbounded,
                Variant::OursTuned,
            ]
            .into_iter()
            .chain(sweep.iter().copied())
            .chain([Variant::LiburcuPercpu, Variant::LiburcuDefault])
            {
                plan.push((block, v, secs, p));
            }
        }
    }
    plan.retain(|&(_, v, _, _)| (liburcu || !v.is_liburcu()) && v.selected(selected));
    let mut out_file = std::env::var_os(OUT_VAR).map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap_or_else(|e| panic!("opening {}: {e}", p.to_string_lossy()))
    });
    let mut results: Vec<(usize, BTreeMap<String, String>)> = Vec::new();
    for (block, variant, secs, producers) in plan {
        if variant.is_limit() {
            eprintln!("callbacks/flood: {} for {secs} s", variant.label());
        } else {
            eprintln!(
                "callbacks/flood: {}, P={producers}, for {secs} s",
                variant.label()
            );
        }
        if let Some(line) = spawn_child(variant, secs, cap_mib, producers) {
            // The block lets report.py pair each flood with its limit.
            let line = format!("{{\"block\":{block},{}", &line[1..]);
            if let Some(f) = out_file.as_mut() {
                writeln!(f, "{line}").expect("writing RCU_FLOOD_JSON");
            }
            results.push((block, parse_flat(&line)));
        }
    }

    let get = |r: &BTreeMap<String, String>, k: &str| r.get(k).cloned().unwrap_or_default();
    // The rate (or another field) of the reference `key` in `block` (for
    // the inline reference, of the same producer count).
    let reference = |block: usize, key: &str, producers: &str, field: &str| {
        results
            .iter()
            .find(|(b, r)| {
                *b == block
                    && get(r, "variant") == key
                    && (key != "inline" || get(r, "producers") == producers)
            })
            .and_then(|(_, r)| get(r, field).parse::<f64>().ok())
    };
    let ratio_to = |rate: Option<f64>, of: Option<f64>, applies: bool| match (rate, of) {
        (Some(a), Some(b)) if b > 0.0 && applies => format!("{:.2}", a / b),
        _ => "—".into(),
    };
    let allocator = results
        .first()
        .map_or_else(String::new, |(_, r)| get(r, "allocator"));
    println!(
        "\ncallbacks/flood: P producers (P = {}), callbacks spin {SPIN_STEPS} steps and free \
         64 B; rate = callbacks / (flood + final barrier); limit = the body alone on the \
         callback workers' thread count; inline = the P producer threads allocating \
         and running the body themselves, no RCU; RSS cap {cap_mib} MiB; allocator {}\n",
        producer_counts
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        if allocator.is_empty() {
            "?"
        } else {
            &allocator
        },
    );
    println!(
        "| variant | P | run | rate | limit | rate/limit | inline | rate/inline | CPU cores \
         | per-core ratio | peak RSS | RSS at stop | drain | capped at |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (block, r) in &results {
        let v = Variant::from_key(&get(r, "variant")).expect("known variant");
        let producers = get(r, "producers");
        let lim_key = if v.is_liburcu() {
            Variant::LimitC.key()
        } else {
            Variant::LimitRust.key()
        };
        let lim = reference(*block, &lim_key, "", "rate");
        let per_core = match (
            get(r, "rate_per_core").parse::<f64>(),
            reference(*block, &lim_key, "", "rate_per_core"),
        ) {
            (Ok(a), Some(b)) if b > 0.0 && !v.is_limit() => format!("{:.2}", a / b),
            _ => "—".into(),
        };
        let rt: Option<f64> = get(r, "rate").parse().ok();
        let ratio = ratio_to(rt, lim, !v.is_limit());
        let inl = reference(*block, "inline", &producers, "rate").filter(|_| v.has_inline_ratio());
        let inline_ratio = ratio_to(rt, inl, true);
        let drain = match (
            get(r, "total_s").parse::<f64>(),
            get(r, "produce_s").parse::<f64>(),
        ) {
            (Ok(t), Ok(p)) if !v.is_reference() => format!("{:.0} ms", (t - p) * 1e3),
            _ => "—".into(),
        };
        println!(
            "| {} | {} | {} s | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            v.label(),
            if v.is_limit() { "—" } else { &producers },
            get(r, "secs"),
            rate(&get(r, "rate")),
            lim.map_or("—".into(), |l| rate(&l.to_string())),
            ratio,
            inl.map_or("—".into(), |l| rate(&l.to_string())),
            inline_ratio,
            get(r, "cpu_cores"),
            per_core,
            mib(&get(r, "peak_rss_kib")),
            if v.is_reference() {
                "—".into()
            } else {
                mib(&get(r, "rss_at_stop_kib"))
            },
            drain,
            match get(r, "cap_hit_s").as_str() {
                "null" | "" => "—".to_owned(),
                s => format!("{s} s"),
            },
        );
    }
}
