//! End-to-end example: a routing table read by many threads and replaced by
//! two writers, with old tables freed only after a grace period.
//!
//! * Reader threads look routes up in the current table inside
//!   `rcu.read()` sections, millions of times a second, without locks.
//! * Writer A builds a new table, publishes it with `RcuCell::replace` and
//!   takes the old one back with `Unpublished::into_inner`, which waits for
//!   a grace period (as `rcu.synchronize()` does) before handing it over.
//! * Writer B never blocks: it keeps the `Unpublished` handles of the tables
//!   it replaced and takes back those whose grace period has elapsed
//!   (`try_into_box`: a `poll()` of the cookie taken when each was
//!   unpublished, and a `start_poll()`-style request when it is not done).
//!
//! No `unsafe`: the cell and its handles carry the proofs. (The README's
//! "By hand" section shows the same with raw pointers.)
//!
//! Every table carries a canary that its destructor overwrites; a reader that
//! ever saw a freed table would count a violation (and the run would fail).
//!
//! Run: `cargo run --release --example routing_table [seconds] [readers]`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcu_offload::{Rcu, RcuCell, Unpublished};

const LIVE: u64 = 0x5afe_5afe_5afe_5afe;
const FREED: u64 = 0xdead_dead_dead_dead;

/// One version of the table.
struct Table {
    canary: AtomicU64,
    version: u64,
    routes: HashMap<u32, u32>,
}

impl Table {
    fn new(version: u64) -> Table {
        let routes = (0..1024u32)
            .map(|k| {
                (
                    k,
                    k.wrapping_mul(2_654_435_761).wrapping_add(version as u32),
                )
            })
            .collect();
        Table {
            canary: AtomicU64::new(LIVE),
            version,
            routes,
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        self.canary.store(FREED, Ordering::Relaxed);
    }
}

struct Shared {
    rcu: Rcu,
    table: RcuCell<Table>,
    stop: AtomicBool,
    lookups: AtomicU64,
    violations: AtomicU64,
    updates_sync: AtomicU64,
    updates_polled: AtomicU64,
}

fn reader(shared: &Shared) {
    let mut local = 0u64;
    let mut key = 0u32;
    while !shared.stop.load(Ordering::Relaxed) {
        for _ in 0..1000 {
            let guard = shared.rcu.read();
            let table = shared.table.load(&guard);
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
        let old = shared.table.replace(Table::new(version));
        // Waits for a grace period that began after the swap, then owns it.
        let old: Table = old.into_inner();
        drop(old);
        shared.updates_sync.fetch_add(1, Ordering::Relaxed);
    }
}

fn writer_polled(shared: &Shared, first_version: u64) {
    let mut version = first_version;
    let mut retired: Vec<Unpublished<Table>> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        version += 2;
        retired.push(shared.table.replace(Table::new(version)));
        // Take back (and free) whatever is done; never block. A handle
        // whose grace period is not over asks the engine thread to run it.
        let mut pending = Vec::with_capacity(retired.len());
        for old in retired {
            match old.try_into_box() {
                Ok(table) => drop(table),
                Err(old) => pending.push(old),
            }
        }
        retired = pending;
        shared.updates_polled.fetch_add(1, Ordering::Relaxed);
        std::thread::yield_now();
    }
    // The rest after their grace periods.
    for old in retired {
        drop(old.into_inner());
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
        table: RcuCell::new(&rcu, Table::new(0)),
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

    let shared = Arc::into_inner(shared).expect("every thread was joined");
    let lookups = shared.lookups.load(Ordering::Relaxed);
    let violations = shared.violations.load(Ordering::Relaxed);
    let (updates_sync, updates_polled) = (
        shared.updates_sync.load(Ordering::Relaxed),
        shared.updates_polled.load(Ordering::Relaxed),
    );
    let grace_periods = shared.rcu.completed_grace_periods();
    // Owning the cell means no reader borrows it: no grace period needed.
    let final_version = shared.table.into_inner().version;

    println!(
        "done: {lookups} lookups, {updates_sync} synchronous + {updates_polled} polled updates, \
         {grace_periods} grace periods, final table version {final_version}, violations {violations}"
    );
    if violations != 0 {
        eprintln!("FAILED: a reader saw a freed table");
        std::process::exit(1);
    }
}
