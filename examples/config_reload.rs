//! End-to-end example: a service's configuration hot-reloaded under readers,
//! with old versions freed by the offloaded callback pipeline.
//!
//! What it demonstrates:
//!
//! * **`RcuCell<Config>`**: reader threads look routes and feature flags up
//!   through `cell.load(&rcu.read())` in a tight loop, without locks and
//!   without ever waiting for the writer.
//! * **`update` and `replace`**: a writer publishes a new version every few
//!   hundred microseconds, usually derived from the current one
//!   (`update(|old| ...)`: a few routes change, a flag flips), every tenth
//!   time rebuilt from scratch (`replace`). Neither call waits for a grace
//!   period: the old version is retired through `Rcu::call` and dropped on a
//!   callback worker (`cfg-rcuo/N`) once no reader can still hold it.
//! * **`Rcu::call` for other deferred work**: after each new version, the
//!   writer queues an "old version drained" callback. The domain puts each
//!   thread's callbacks on a shard of its own
//!   (`Builder::shard_choice(ShardChoice::PerThread)`), where they run in
//!   order, so when it runs, the retired version queued just before it must
//!   already be dropped; the callback checks that. (With the default
//!   per-CPU shards, a writer that migrates to another CPU between the two
//!   calls may put them on two shards, and the drain could run first.)
//! * **`Rcu::call_lazy` for bookkeeping that can wait**: each update also
//!   queues a lazy "audit" callback, which may wait up to the lazy timeout
//!   to be batched; the drain callback queued right after it on the same
//!   shard promotes it once it reaches the shard, and `barrier()` at the end
//!   flushes any left.
//! * **`stats()`** once a second, and **`barrier()`** at the end: after it,
//!   every retired version has been dropped (a drop counter equals the number
//!   of versions replaced) and every audit callback has run.
//!
//! Every configuration carries a canary that its destructor overwrites and a
//! checksum over its routes and flags; readers verify both (and that the
//! route they looked up matches its version). Any violation, or a drop count
//! that does not add up, makes the run fail with exit status 1.
//!
//! Run: `cargo run --release --example config_reload [seconds] [readers]`
//! (defaults: 3 seconds, 2 reader threads).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcu_offload::{Rcu, RcuCell, ShardChoice};

const LIVE: u64 = 0x5afe_c0f1_95af_ec0f;
const DROPPED: u64 = 0xdead_dead_dead_dead;
const ROUTES: u32 = 256;
const FLAGS: usize = 16;
/// Pause between two configuration versions.
const UPDATE_INTERVAL: Duration = Duration::from_micros(200);

/// Versions of `Config` dropped so far (by the callback workers).
static DROPS: AtomicU64 = AtomicU64::new(0);

/// One version of the service configuration.
struct Config {
    canary: AtomicU64,
    version: u64,
    /// Service name -> backend port.
    routes: HashMap<String, u32>,
    /// Feature flags.
    flags: [bool; FLAGS],
    /// Over version, routes and flags; see [`Config::compute_checksum`].
    checksum: u64,
}

/// The backend port of route `i` as of its last change at `version`.
fn port(i: u32, version: u64) -> u32 {
    1024 + (i.wrapping_mul(2_654_435_761) ^ version as u32) % 60_000
}

fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 29)
}

impl Config {
    /// A configuration built from scratch.
    fn build(version: u64) -> Config {
        let routes = (0..ROUTES)
            .map(|i| (format!("svc-{i}"), port(i, version)))
            .collect();
        let flags = std::array::from_fn(|f| (version >> f) & 1 == 1);
        Config::seal(version, routes, flags)
    }

    /// The next version, derived from this one: four routes move to new
    /// ports and one flag flips.
    fn next(&self, version: u64) -> Config {
        let mut routes = self.routes.clone();
        for k in 0..4 {
            let i = ((version * 4 + k) % u64::from(ROUTES)) as u32;
            routes.insert(format!("svc-{i}"), port(i, version));
        }
        let mut flags = self.flags;
        flags[version as usize % FLAGS] ^= true;
        Config::seal(version, routes, flags)
    }

    fn seal(version: u64, routes: HashMap<String, u32>, flags: [bool; FLAGS]) -> Config {
        let mut c = Config {
            canary: AtomicU64::new(LIVE),
            version,
            routes,
            flags,
            checksum: 0,
        };
        c.checksum = c.compute_checksum();
        c
    }

    /// Order-independent over the routes, so it does not depend on the
    /// map's iteration order.
    fn compute_checksum(&self) -> u64 {
        let routes = self.routes.iter().fold(0u64, |acc, (name, port)| {
            let h = name
                .bytes()
                .fold(u64::from(*port), |h, b| mix(h ^ u64::from(b)));
            acc.wrapping_add(h)
        });
        let flags = self
            .flags
            .iter()
            .enumerate()
            .fold(0u64, |acc, (i, &f)| acc | (u64::from(f) << i));
        mix(self.version) ^ routes ^ mix(flags.wrapping_add(0x1234))
    }

    fn is_live(&self) -> bool {
        self.canary.load(Ordering::Relaxed) == LIVE
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        self.canary.store(DROPPED, Ordering::Relaxed);
        DROPS.fetch_add(1, Ordering::Relaxed);
    }
}

struct Shared {
    rcu: Rcu,
    config: RcuCell<Config>,
    stop: AtomicBool,
    reads: AtomicU64,
    full_checks: AtomicU64,
    /// Versions published after the first, i.e. versions retired.
    updates: AtomicU64,
    /// "Old version drained" callbacks queued and run.
    drains_queued: AtomicU64,
    drains_run: AtomicU64,
    audits_run: AtomicU64,
    violations: AtomicU64,
}

impl Shared {
    fn violation(&self, what: std::fmt::Arguments<'_>) {
        if self.violations.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("VIOLATION: {what}");
        }
    }
}

fn reader(shared: &Shared, id: usize) {
    let names: Vec<String> = (0..ROUTES).map(|i| format!("svc-{i}")).collect();
    let mut i = id as u32 * 7919;
    let mut last_version = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        for _ in 0..256 {
            i = i.wrapping_add(1);
            let guard = shared.rcu.read();
            let cfg = shared.config.load(&guard);
            if !cfg.is_live() {
                shared.violation(format_args!("reader {id} saw a dropped configuration"));
                continue;
            }
            if cfg.version < last_version {
                shared.violation(format_args!(
                    "reader {id} saw version {} after {last_version}",
                    cfg.version
                ));
            }
            last_version = cfg.version;
            let key = i % ROUTES;
            match cfg.routes.get(&names[key as usize]) {
                Some(&p) if (1024..61_024).contains(&p) => {}
                other => shared.violation(format_args!(
                    "reader {id}: version {} route svc-{key} is {other:?}",
                    cfg.version
                )),
            }
            let _feature_on = cfg.flags[key as usize % FLAGS];
            if i % 64 == 0 {
                // The whole configuration is consistent, and still live
                // after the (comparatively long) walk over it.
                if cfg.compute_checksum() != cfg.checksum || !cfg.is_live() {
                    shared.violation(format_args!(
                        "reader {id}: version {} fails its checksum",
                        cfg.version
                    ));
                }
                shared.full_checks.fetch_add(1, Ordering::Relaxed);
            }
            drop(guard);
        }
        shared.reads.fetch_add(256, Ordering::Relaxed);
    }
}

fn writer(shared: &Arc<Shared>) {
    let mut version: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        version += 1;
        if version % 10 == 0 {
            // A full reload: the new version is built from scratch.
            shared.config.replace(Config::build(version));
        } else {
            shared.config.update(|old| old.next(version));
        }
        let retired = shared.updates.fetch_add(1, Ordering::Relaxed) + 1;
        let s = Arc::clone(shared);
        shared.rcu.call_lazy(move || {
            s.audits_run.fetch_add(1, Ordering::Relaxed);
        });
        // Deferred work of our own, queued right behind the retirement of
        // the old version by the same thread: it runs after it, so by then
        // at least `retired` versions have been dropped.
        let s = Arc::clone(shared);
        shared.rcu.call(move || {
            if DROPS.load(Ordering::Relaxed) < retired {
                s.violation(format_args!(
                    "drain callback for version {} ran before the old version was dropped",
                    retired - 1
                ));
            }
            s.drains_run.fetch_add(1, Ordering::Relaxed);
        });
        shared.drains_queued.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(UPDATE_INTERVAL);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().map_or(3.0, |s| s.parse().expect("seconds"));
    let readers: usize = args.next().map_or(2, |s| s.parse().expect("readers"));

    let rcu = Rcu::builder()
        .thread_name_prefix("cfg-")
        // The drain callbacks rely on the writer's callbacks running in the
        // order it queued them (module docs).
        .shard_choice(ShardChoice::PerThread)
        .build()
        .expect("valid configuration");
    println!(
        "rcu-offload config_reload: {readers} readers, 1 writer (a new version every {:?}), \
         {seconds} s; {} callback shards",
        UPDATE_INTERVAL,
        rcu.stats().shards.len()
    );
    let shared = Arc::new(Shared {
        config: RcuCell::new(&rcu, Config::build(0)),
        rcu,
        stop: AtomicBool::new(false),
        reads: AtomicU64::new(0),
        full_checks: AtomicU64::new(0),
        updates: AtomicU64::new(0),
        drains_queued: AtomicU64::new(0),
        drains_run: AtomicU64::new(0),
        audits_run: AtomicU64::new(0),
        violations: AtomicU64::new(0),
    });

    let mut threads = Vec::new();
    for id in 0..readers {
        let s = Arc::clone(&shared);
        threads.push(std::thread::spawn(move || reader(&s, id)));
    }
    let s = Arc::clone(&shared);
    threads.push(std::thread::spawn(move || writer(&s)));

    let start = Instant::now();
    let (mut last_reads, mut last_updates, mut last_t) = (0, 0, start);
    while start.elapsed().as_secs_f64() < seconds {
        let left = seconds - start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs_f64(left.clamp(0.0, 1.0)));
        let now = Instant::now();
        let (r, u) = (
            shared.reads.load(Ordering::Relaxed),
            shared.updates.load(Ordering::Relaxed),
        );
        let dt = (now - last_t).as_secs_f64();
        println!(
            "{:4.1}s  reads/s {:>11.0}  updates/s {:>6.0}  dropped {:>6}  {}",
            (now - start).as_secs_f64(),
            (r - last_reads) as f64 / dt,
            (u - last_updates) as f64 / dt,
            DROPS.load(Ordering::Relaxed),
            shared.rcu.stats(),
        );
        (last_reads, last_updates, last_t) = (r, u, now);
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("worker thread panicked");
    }

    // Every version replaced so far, and every drain callback, has been
    // queued before this: after it, all have run.
    shared.rcu.barrier();
    let updates = shared.updates.load(Ordering::Relaxed);
    let dropped = DROPS.load(Ordering::Relaxed);
    let (queued, run) = (
        shared.drains_queued.load(Ordering::Relaxed),
        shared.drains_run.load(Ordering::Relaxed),
    );
    let final_version = shared.config.load(&shared.rcu.read()).version;
    let stats = shared.rcu.stats();
    let mut failures = Vec::new();
    if dropped != updates {
        failures.push(format!(
            "{dropped} versions dropped after barrier(), expected {updates}"
        ));
    }
    if run != queued {
        failures.push(format!("{run} of {queued} drain callbacks ran"));
    }
    let audits = shared.audits_run.load(Ordering::Relaxed);
    if audits != updates {
        failures.push(format!("{audits} of {updates} lazy audit callbacks ran"));
    }
    if final_version != updates {
        failures.push(format!("final version {final_version}, expected {updates}"));
    }
    let violations = shared.violations.load(Ordering::Relaxed);
    if violations != 0 {
        failures.push(format!("{violations} reader/callback violations"));
    }
    println!(
        "done: {} reads ({} full checksum checks), {updates} updates, {dropped} old versions \
         dropped, {run} drain callbacks, final version {final_version}, violations {violations}",
        shared.reads.load(Ordering::Relaxed),
        shared.full_checks.load(Ordering::Relaxed),
    );
    println!("      {stats}");
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        std::process::exit(1);
    }
}
