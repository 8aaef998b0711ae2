//! Async example: a tokio service routes requests through a routing table
//! held in an `RcuCell`, while an updater task publishes new versions and
//! acknowledges each one only once no request can still see an older one,
//! all without ever blocking a runtime thread.
//!
//! What it demonstrates:
//!
//! * **Reading from async tasks.** Each request task looks a route up with
//!   `table.load(&rcu.read())` in a block that contains no `.await`: a
//!   `ReadGuard` is `!Send`, so a guard held across an `.await` would not
//!   even compile in a `tokio::spawn`ed task (and would stall every grace
//!   period while the task is suspended). Between requests the task yields.
//! * **Publishing, then `synchronize_async().await`.** The updater task
//!   publishes version N (in turn with `replace`, `store` and `update`),
//!   then awaits `rcu.synchronize_async()`: the grace period runs on the
//!   domain's engine thread, and the task is woken when it ends, so no
//!   runtime thread blocks. Only then does it acknowledge "every reader
//!   now sees version N", after checking it for real: each request task
//!   publishes, inside its read-side section, the version it is reading
//!   (and clears it before leaving); after the grace period no task may be
//!   inside a section that read an older version, and a fresh load must
//!   return version N.
//! * **`Unpublished::into_inner_async`.** After a `replace`, the old table
//!   comes back by value once its own grace period (counted from the
//!   replace) has elapsed: the updater awaits it together with
//!   `synchronize_async()` (`tokio::join!`; both are served by the same
//!   grace period), then checks the table and drops it on its runtime
//!   thread. After `store` and `update` the old table is
//!   retired instead: dropped on a callback worker after a grace period.
//! * **`barrier_async().await`** at the end: `main` stores a final table
//!   (retiring the last one) and awaits the barrier; every retired table
//!   has then been dropped (the drop count adds up to all tables but the
//!   current one).
//!
//! Which threads run what:
//!
//! * tokio's worker threads (a multi-thread runtime): the request tasks,
//!   the updater task and `main`'s task; none of them ever blocks on RCU.
//! * `svc-rcu_gp`, the domain's grace-period engine thread: runs the grace
//!   periods the updater awaits and wakes it.
//! * `svc-rcuog/L` and `svc-rcuo/N`, the callback machinery's grace-period
//!   and callback workers: drop the tables retired by `store` and `update`,
//!   and run the barrier's internal callbacks (the last of which wakes
//!   `main`'s task); `svc-rcu_timer` performs deferred wakes.
//!
//! Every table carries a canary that its destructor overwrites, and routes
//! derived from its version; requests verify both. Any violation, or a
//! count that does not add up, makes the run panic (a non-zero exit).
//!
//! Run: `cargo run --release --example async_service -- [seconds] [request tasks]`
//! (defaults: 3 seconds, 4 request tasks).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcu_offload::{Rcu, RcuCell};

const LIVE: u64 = 0x5afe_5afe_5afe_5afe;
const FREED: u64 = 0xdead_dead_dead_dead;
/// Routes per table.
const ROUTES: usize = 512;
/// Requests a task serves between two yields.
const BATCH: usize = 64;
/// A request task's slot in [`Service::reading`] outside a section.
const IDLE: u64 = u64::MAX;

/// Tables built and dropped, over the run.
static TABLES_BUILT: AtomicU64 = AtomicU64::new(0);
static TABLES_DROPPED: AtomicU64 = AtomicU64::new(0);

/// The next hop of `key` in version `version` of the table.
fn hop(version: u64, key: usize) -> u32 {
    (key as u32).wrapping_mul(2_654_435_761) ^ (version as u32).wrapping_mul(40_503)
}

/// One version of the routing table.
struct Table {
    canary: AtomicU64,
    version: u64,
    hops: Vec<u32>,
}

impl Table {
    fn new(version: u64) -> Table {
        TABLES_BUILT.fetch_add(1, Ordering::Relaxed);
        Table {
            canary: AtomicU64::new(LIVE),
            version,
            hops: (0..ROUTES).map(|k| hop(version, k)).collect(),
        }
    }

    fn is_live(&self) -> bool {
        self.canary.load(Ordering::Relaxed) == LIVE
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        self.canary.store(FREED, Ordering::Relaxed);
        TABLES_DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

struct Service {
    rcu: Rcu,
    table: RcuCell<Table>,
    stop: AtomicBool,
    /// Per request task: the version of the table it is reading inside its
    /// current read-side section, or [`IDLE`].
    reading: Vec<AtomicU64>,
    violations: AtomicU64,
}

/// A request task: route requests until told to stop; returns how many it
/// served.
async fn serve(svc: Arc<Service>, id: usize) -> u64 {
    let mut rng = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut served = 0;
    while !svc.stop.load(Ordering::Relaxed) {
        for _ in 0..BATCH {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let key = (rng % ROUTES as u64) as usize;
            // The read-side section: no `.await` inside (the guard is !Send).
            let ok = {
                let guard = svc.rcu.read();
                let table = svc.table.load(&guard);
                svc.reading[id].store(table.version, Ordering::SeqCst);
                let ok = table.is_live() && table.hops[key] == hop(table.version, key);
                svc.reading[id].store(IDLE, Ordering::SeqCst);
                ok
            };
            if !ok {
                svc.violations.fetch_add(1, Ordering::Relaxed);
            }
            served += 1;
        }
        // Forward the batch somewhere: here, just let other tasks run.
        tokio::task::yield_now().await;
    }
    served
}

/// The updater task: publish versions 1, 2, ... until told to stop, each
/// acknowledged after a grace period; returns the last version published.
async fn update(svc: Arc<Service>) -> u64 {
    let mut version = 0;
    while !svc.stop.load(Ordering::Relaxed) {
        version += 1;
        let previous = version - 1;
        match version % 3 {
            // `replace`: the old table comes back, by value, after a grace
            // period counted from its unpublishing; awaited together with
            // the acknowledgement's grace period (both share one).
            0 => {
                let old = svc.table.replace(Table::new(version));
                assert_eq!(old.version, previous, "replace returned another version");
                let cookie = old.cookie();
                let (old, ()) = tokio::join!(old.into_inner_async(), svc.rcu.synchronize_async());
                assert!(
                    svc.rcu.poll(cookie),
                    "version {previous} given back before its grace period"
                );
                assert!(old.is_live(), "version {previous} freed while still owned");
                assert_eq!(old.version, previous);
                // No request can reach it any more: drop it right here.
                drop(old);
            }
            // `store`: the old table is dropped on a callback worker.
            1 => {
                svc.table.store(Table::new(version));
                svc.rcu.synchronize_async().await;
            }
            // `update`: derived from the current table.
            _ => {
                svc.table.update(|old| {
                    assert_eq!(old.version, previous, "update saw another version");
                    Table::new(old.version + 1)
                });
                svc.rcu.synchronize_async().await;
            }
        }
        // Acknowledge "every reader now sees version N", for real: a new
        // section loads it, and no section that loaded an older version is
        // still running (each task clears its slot before it leaves its
        // section, and the grace period waited for every section that had
        // begun before it; any later section loaded version N).
        {
            let guard = svc.rcu.read();
            let now = svc.table.load(&guard).version;
            assert_eq!(now, version, "a fresh load after the grace period");
        }
        for (task, slot) in svc.reading.iter().enumerate() {
            let v = slot.load(Ordering::SeqCst);
            assert!(
                v == IDLE || v >= version,
                "request task {task} still reads version {v} after version {version} \
                 was published and a grace period elapsed"
            );
        }
    }
    version
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().map_or(3.0, |s| s.parse().expect("seconds"));
    let tasks: usize = args.next().map_or(4, |s| s.parse().expect("request tasks"));
    assert!(tasks > 0, "at least one request task");

    let rcu = Rcu::builder()
        .thread_name_prefix("svc-")
        .build()
        .expect("valid configuration");
    println!(
        "rcu-offload async_service: {tasks} request tasks, 1 updater task, {seconds} s; \
         {} callback shards",
        rcu.stats().shards.len()
    );
    let svc = Arc::new(Service {
        table: RcuCell::new(&rcu, Table::new(0)),
        rcu,
        stop: AtomicBool::new(false),
        reading: (0..tasks).map(|_| AtomicU64::new(IDLE)).collect(),
        violations: AtomicU64::new(0),
    });

    let start = Instant::now();
    let requests: Vec<_> = (0..tasks)
        .map(|id| tokio::spawn(serve(Arc::clone(&svc), id)))
        .collect();
    let updater = tokio::spawn(update(Arc::clone(&svc)));
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    svc.stop.store(true, Ordering::Relaxed);

    // A panicking task (a failed check) fails the run here.
    let versions = updater.await.expect("the updater task failed");
    let mut served = 0;
    for r in requests {
        served += r.await.expect("a request task failed");
    }
    let elapsed = start.elapsed().as_secs_f64();

    // Shutdown: install a final table (retiring the last one through a
    // callback, which needs a grace period), then wait for every table
    // retired by `store` or `update`, all queued for dropping before this
    // barrier: once it completes, all of them are dropped.
    svc.table.store(Table::new(versions + 1));
    svc.rcu.barrier_async().await;
    let built = TABLES_BUILT.load(Ordering::Relaxed);
    let dropped = TABLES_DROPPED.load(Ordering::Relaxed);
    let stats = svc.rcu.stats();
    let violations = svc.violations.load(Ordering::Relaxed);

    println!(
        "done: {served} requests ({:.0}/s), {versions} updates ({:.0}/s), each acknowledged \
         after synchronize_async(); {dropped} of {built} tables dropped after barrier_async(); \
         violations {violations}",
        served as f64 / elapsed,
        versions as f64 / elapsed,
    );
    println!("      {stats}");

    assert_eq!(violations, 0, "requests saw a freed or inconsistent table");
    assert!(versions > 0, "the updater published nothing");
    assert_eq!(built, versions + 2, "one table per version");
    assert_eq!(
        dropped,
        built - 1,
        "after barrier_async(), every table but the current one is dropped"
    );
    assert_eq!(stats.panics, 0, "a callback panicked");
    assert_eq!(
        stats.pending(),
        0,
        "callbacks still pending after barrier_async()"
    );

    // Dropping the last handle (the cell's) retires the current table and
    // runs it before the domain's threads are joined.
    drop(svc);
    assert_eq!(TABLES_DROPPED.load(Ordering::Relaxed), built);
}
