//! End-to-end example: a routing table read by many threads and replaced by
//! two writers, with old tables freed only after a grace period.
//!
//! * Reader threads look routes up in the current table inside
//!   `rcu.read()` sections, millions of times a second, without locks.
//! * Writer A builds a new table, publishes it with one atomic swap and frees
//!   the old one after `rcu.synchronize()`.
//! * Writer B never blocks: it takes a `start_poll()` cookie per retired table
//!   and frees tables whose cookie `poll()` reports done.
//!
//! Every table carries a canary that its destructor overwrites; a reader that
//! ever saw a freed table would count a violation (and the run would fail).
//!
//! Run: `cargo run --release --example routing_table [seconds] [readers]`.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcu_offload::{GpCookie, Rcu};

const LIVE: u64 = 0x5afe_5afe_5afe_5afe;
const FREED: u64 = 0xdead_dead_dead_dead;

/// One version of the table.
struct Table {
    canary: AtomicU64,
    version: u64,
    routes: HashMap<u32, u32>,
}

impl Table {
    fn new(version: u64) -> Box<Table> {
        let routes = (0..1024u32)
            .map(|k| {
                (
                    k,
                    k.wrapping_mul(2_654_435_761).wrapping_add(version as u32),
                )
            })
            .collect();
        Box::new(Table {
            canary: AtomicU64::new(LIVE),
            version,
            routes,
        })
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        self.canary.store(FREED, Ordering::Relaxed);
    }
}

struct Shared {
    rcu: Rcu,
    table: AtomicPtr<Table>,
    stop: AtomicBool,
    lookups: AtomicU64,
    violations: AtomicU64,
    updates_sync: AtomicU64,
    updates_polled: AtomicU64,
}

impl Shared {
    /// Publish `new` and return the table it replaced. Readers may still be
    /// looking at the old table, so it stays a raw pointer (not a `Box`,
    /// which would claim unique access) until a grace period has passed.
    fn publish(&self, new: Box<Table>) -> Retired {
        let old = self.table.swap(Box::into_raw(new), Ordering::AcqRel);
        Retired(NonNull::new(old).expect("the table pointer is never null while running"))
    }
}

/// A table that has been unpublished but may still be read.
struct Retired(NonNull<Table>);

// SAFETY: `Table` is `Send + Sync`; a `Retired` is only a pointer to one that
// the writer owns, moved to wherever it will be freed.
unsafe impl Send for Retired {}

impl Retired {
    /// Free the table.
    ///
    /// # Safety
    ///
    /// A full grace period of the domain has elapsed since the table was
    /// unpublished, so no reader can still hold a reference to it.
    unsafe fn free(self) {
        // SAFETY: the pointer came from `Box::into_raw` in `publish`/`main`,
        // was unpublished once, and by the caller's contract nobody else can
        // reach it any more, so we own it uniquely.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

fn reader(shared: &Shared) {
    let mut local = 0u64;
    let mut key = 0u32;
    while !shared.stop.load(Ordering::Relaxed) {
        for _ in 0..1000 {
            let guard = shared.rcu.read();
            // SAFETY: the table was published with a Release swap and is freed
            // only after a grace period that starts after it was unpublished;
            // our guard keeps that grace period from completing.
            let table = unsafe { &*shared.table.load(Ordering::Acquire) };
            let route = table.routes.get(&(key & 1023)).copied();
            if table.canary.load(Ordering::Relaxed) != LIVE || route.is_none() {
                shared.violations.fetch_add(1, Ordering::Relaxed);
            }
            drop(guard);
            key = key.wrapping_add(7);
            local += 1;
        }
        shared.lookups.fetch_add(1000, Ordering::Relaxed);
    }
    let _ = local;
}

fn writer_synchronous(shared: &Shared, first_version: u64) {
    let mut version = first_version;
    while !shared.stop.load(Ordering::Relaxed) {
        version += 2;
        let old = shared.publish(Table::new(version));
        shared.rcu.synchronize();
        // SAFETY: a full grace period has elapsed since `old` was unpublished.
        unsafe { old.free() };
        shared.updates_sync.fetch_add(1, Ordering::Relaxed);
    }
}

fn writer_polled(shared: &Shared, first_version: u64) {
    let mut version = first_version;
    let mut retired: Vec<(GpCookie, Retired)> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        version += 2;
        let old = shared.publish(Table::new(version));
        retired.push((shared.rcu.start_poll(), old));
        // Free whatever is done; never block.
        let (done, pending): (Vec<_>, Vec<_>) = retired
            .into_iter()
            .partition(|(cookie, _)| shared.rcu.poll(*cookie));
        retired = pending;
        for (_, table) in done {
            // SAFETY: `poll` reported a full grace period since the cookie,
            // which was taken after the table was unpublished.
            unsafe { table.free() };
        }
        shared.updates_polled.fetch_add(1, Ordering::Relaxed);
        std::thread::yield_now();
    }
    for (cookie, table) in retired {
        shared.rcu.cond_synchronize(cookie);
        // SAFETY: as above, through `cond_synchronize`.
        unsafe { table.free() };
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().map_or(3.0, |s| s.parse().expect("seconds"));
    let readers: usize = args.next().map_or(2, |s| s.parse().expect("readers"));

    let rcu = Rcu::builder()
        .thread_name_prefix("rt-")
        .build()
        .expect("valid configuration");
    println!("rcu-offload routing_table: {readers} readers, 2 writers, {seconds} s; {rcu:?}");
    let shared = Arc::new(Shared {
        table: AtomicPtr::new(Box::into_raw(Table::new(0))),
        rcu,
        stop: AtomicBool::new(false),
        lookups: AtomicU64::new(0),
        violations: AtomicU64::new(0),
        updates_sync: AtomicU64::new(0),
        updates_polled: AtomicU64::new(0),
    });

    let mut threads = Vec::new();
    for _ in 0..readers {
        let s = Arc::clone(&shared);
        threads.push(std::thread::spawn(move || reader(&s)));
    }
    let s = Arc::clone(&shared);
    threads.push(std::thread::spawn(move || writer_synchronous(&s, 1)));
    let s = Arc::clone(&shared);
    threads.push(std::thread::spawn(move || writer_polled(&s, 2)));

    let start = Instant::now();
    let mut last = (0, 0, 0, start);
    while start.elapsed().as_secs_f64() < seconds {
        std::thread::sleep(Duration::from_millis(500).min(Duration::from_secs_f64(seconds)));
        let now = Instant::now();
        let l = shared.lookups.load(Ordering::Relaxed);
        let us = shared.updates_sync.load(Ordering::Relaxed);
        let up = shared.updates_polled.load(Ordering::Relaxed);
        let dt = (now - last.3).as_secs_f64();
        println!(
            "{:5.1}s  lookups/s {:>12.0}  synchronize updates/s {:>8.0}  polled updates/s {:>8.0}  \
             grace periods {:>8}  violations {}",
            (now - start).as_secs_f64(),
            (l - last.0) as f64 / dt,
            (us - last.1) as f64 / dt,
            (up - last.2) as f64 / dt,
            shared.rcu.completed_grace_periods(),
            shared.violations.load(Ordering::Relaxed),
        );
        last = (l, us, up, now);
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("worker thread panicked");
    }

    let final_table = shared.table.swap(std::ptr::null_mut(), Ordering::AcqRel);
    shared.rcu.synchronize();
    // SAFETY: unpublished above, and a grace period has passed; no thread
    // reads the table any more.
    let final_version = unsafe { Box::from_raw(final_table) }.version;

    let violations = shared.violations.load(Ordering::Relaxed);
    println!(
        "done: {} lookups, {} synchronous + {} polled updates, {} grace periods, \
         final table version {}, violations {}",
        shared.lookups.load(Ordering::Relaxed),
        shared.updates_sync.load(Ordering::Relaxed),
        shared.updates_polled.load(Ordering::Relaxed),
        shared.rcu.completed_grace_periods(),
        final_version,
        violations
    );
    if violations != 0 {
        eprintln!("FAILED: a reader saw a freed table");
        std::process::exit(1);
    }
}
