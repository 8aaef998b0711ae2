//! `RcuCell` with real threads: readers never see a dropped value while
//! writers replace and update it, concurrent updates lose nothing, every
//! retired value (and the cell's last one) is dropped exactly once, and the
//! cell keeps its domain alive.
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use common::{panic_text, within};
use rcu_offload::{Rcu, RcuCell};

const LIVE: u64 = 0x11FE_5AFE_11FE_5AFE;
const DEAD: u64 = 0xDEAD_DEAD_DEAD_DEAD;
const ENTRIES: usize = 16;

/// A value whose every field can be checked, and whose destructor poisons
/// them all and counts itself.
struct Versioned {
    magic: AtomicU64,
    version: u64,
    entries: Vec<AtomicU64>,
    checksum: u64,
    drops: Arc<AtomicUsize>,
}

fn entry(version: u64, i: usize) -> u64 {
    version.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64
}

impl Versioned {
    fn new(version: u64, drops: &Arc<AtomicUsize>) -> Versioned {
        let entries: Vec<AtomicU64> = (0..ENTRIES)
            .map(|i| AtomicU64::new(entry(version, i)))
            .collect();
        let checksum = (0..ENTRIES).fold(version, |acc, i| acc ^ entry(version, i));
        Versioned {
            magic: AtomicU64::new(LIVE),
            version,
            entries,
            checksum,
            drops: Arc::clone(drops),
        }
    }

    /// Every field as constructed, or a description of the first that is not.
    fn check(&self) -> Result<u64, String> {
        let m = self.magic.load(Ordering::Relaxed);
        if m != LIVE {
            return Err(format!(
                "loaded value has magic {m:#x} ({})",
                if m == DEAD { "dropped" } else { "garbage" }
            ));
        }
        let mut sum = self.version;
        for (i, e) in self.entries.iter().enumerate() {
            let v = e.load(Ordering::Relaxed);
            if v != entry(self.version, i) {
                return Err(format!("version {}: entry {i} is {v:#x}", self.version));
            }
            sum ^= v;
        }
        if sum != self.checksum {
            return Err(format!("version {}: checksum mismatch", self.version));
        }
        Ok(self.version)
    }
}

impl Drop for Versioned {
    fn drop(&mut self) {
        self.magic.store(DEAD, Ordering::Relaxed);
        for e in &self.entries {
            e.store(DEAD, Ordering::Relaxed);
        }
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Every few updates, waits until at most a few dozen of this writer's
/// first `i` retired values are still waiting to be dropped (two writers
/// share `drops`, so this is a loose bound), so that values are dropped all
/// along, under the readers' feet, not in one batch at the end.
fn pace(i: u64, drops: &AtomicUsize) {
    if i % 8 == 7 {
        common::wait_until("retired values to be dropped", || {
            drops.load(Ordering::SeqCst) as u64 + 32 >= i
        });
    }
}

/// Readers on several threads check every value they load (re-checking after yielding inside
/// the section, and across a nested section) while one writer replaces the value and another
/// updates it; then every value but the current one has been dropped exactly once, and
/// dropping the cell drops the last one.
#[test]
fn readers_never_see_a_dropped_value() {
    const READERS: usize = 3;
    const UPDATES: u64 = 2_000;
    for shards in [1, 3] {
        let rcu = Rcu::builder().shards(shards).build().unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        let cell = Arc::new(RcuCell::new(&rcu, Versioned::new(0, &drops)));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let (rcu, cell, stop) = (rcu.clone(), Arc::clone(&cell), Arc::clone(&stop));
                thread::spawn(move || -> Result<u64, String> {
                    let mut loads = 0u64;
                    while !stop.load(Ordering::Relaxed) || loads == 0 {
                        loads += 1;
                        let g = rcu.read();
                        let v = cell.load(&g);
                        v.check()?;
                        if (loads + r as u64) % 16 == 0 {
                            thread::yield_now();
                            v.check()?;
                            let inner = rcu.read();
                            let w = cell.load(&inner);
                            w.check()?;
                            drop(inner);
                            v.check()?;
                        }
                    }
                    Ok(loads)
                })
            })
            .collect();
        let next = Arc::new(AtomicU64::new(1));
        let replacer = {
            let (cell, drops, next) = (Arc::clone(&cell), Arc::clone(&drops), Arc::clone(&next));
            thread::spawn(move || {
                for i in 0..UPDATES {
                    cell.replace(Versioned::new(next.fetch_add(1, Ordering::Relaxed), &drops));
                    pace(i, &drops);
                }
            })
        };
        let updater = {
            let (cell, drops, next) = (Arc::clone(&cell), Arc::clone(&drops), Arc::clone(&next));
            thread::spawn(move || {
                for i in 0..UPDATES {
                    cell.update(|old| {
                        assert_eq!(old.check(), Ok(old.version), "update saw a bad value");
                        Versioned::new(next.fetch_add(1, Ordering::Relaxed), &drops)
                    });
                    pace(i, &drops);
                }
            })
        };
        let results = within("writers, readers and barrier", {
            let (rcu, drops) = (rcu.clone(), Arc::clone(&drops));
            move || {
                replacer.join().unwrap();
                updater.join().unwrap();
                stop.store(true, Ordering::Relaxed);
                let results: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
                rcu.barrier();
                assert_eq!(
                    drops.load(Ordering::SeqCst) as u64,
                    2 * UPDATES,
                    "every replaced value is dropped once after barrier()"
                );
                drop(Arc::into_inner(cell).expect("the threads are done with the cell"));
                rcu.barrier();
                results
            }
        });
        for r in results {
            let loads = r.unwrap_or_else(|e| panic!("{shards} shards: {e}"));
            assert!(loads > 0);
        }
        assert_eq!(drops.load(Ordering::SeqCst) as u64, 2 * UPDATES + 1);
    }
}

/// `update` from several threads loses no increment (n updates x k threads end at n*k), a
/// concurrent reader never sees the counter go backwards, and each replaced value is dropped.
#[test]
fn concurrent_updates_lose_no_increment() {
    const THREADS: u64 = 4;
    const PER: u64 = 500;
    let rcu = Rcu::builder().shards(2).build().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = Arc::new(RcuCell::new(&rcu, Versioned::new(0, &drops)));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (rcu, cell, stop) = (rcu.clone(), Arc::clone(&cell), Arc::clone(&stop));
        thread::spawn(move || -> Result<(), String> {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                let g = rcu.read();
                let v = cell.load(&g).check()?;
                if v < last {
                    return Err(format!("counter went back from {last} to {v}"));
                }
                last = v;
            }
            Ok(())
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (cell, drops) = (Arc::clone(&cell), Arc::clone(&drops));
            thread::spawn(move || {
                for _ in 0..PER {
                    cell.update(|old| Versioned::new(old.version + 1, &drops));
                }
            })
        })
        .collect();
    within("writers, reader and barrier", {
        let rcu = rcu.clone();
        let drops = Arc::clone(&drops);
        move || {
            for w in writers {
                w.join().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
            reader.join().unwrap().unwrap();
            assert_eq!(cell.load(&rcu.read()).version, THREADS * PER);
            rcu.barrier();
            assert_eq!(drops.load(Ordering::SeqCst) as u64, THREADS * PER);
        }
    });
}

/// A value replaced (or updated away) inside a section stays intact for that section; it is
/// dropped only after the section ends, and once the cell is dropped its value is too.
#[test]
fn replaced_value_lives_until_the_loading_section_ends() {
    let rcu = Rcu::builder().shards(2).gp_stride(2).build().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = RcuCell::new(&rcu, Versioned::new(1, &drops));
    {
        let g = rcu.read();
        let v = cell.load(&g);
        cell.replace(Versioned::new(2, &drops));
        cell.update(|old| Versioned::new(old.version + 1, &drops));
        assert_eq!(cell.load(&g).version, 3);
        common::poke_gp_workers(&rcu);
        assert_eq!(v.check(), Ok(1));
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "dropped inside the section"
        );
    }
    let rcu2 = rcu.clone();
    let drops2 = Arc::clone(&drops);
    within("barrier, cell drop, barrier", move || {
        rcu2.barrier();
        assert_eq!(drops2.load(Ordering::SeqCst), 2);
        drop(cell);
        // The cell's last value waits for a grace period like any other.
        rcu2.barrier();
        assert_eq!(drops2.load(Ordering::SeqCst), 3);
    });
    assert_eq!(rcu.stats().panics, 0);
}

/// Dropping a cell while another thread is inside a section of its domain defers the value's
/// drop until that section ends.
#[test]
fn dropping_the_cell_waits_for_readers_of_the_domain() {
    let rcu = Rcu::builder().shards(2).gp_stride(2).build().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = RcuCell::new(&rcu, Versioned::new(1, &drops));
    let (in_tx, in_rx) = std::sync::mpsc::channel();
    let (out_tx, out_rx) = std::sync::mpsc::channel::<()>();
    let reader = {
        let (rcu, drops) = (rcu.clone(), Arc::clone(&drops));
        thread::spawn(move || {
            let g = rcu.read();
            in_tx.send(()).unwrap();
            let _ = out_rx.recv();
            let early = drops.load(Ordering::SeqCst);
            drop(g);
            early
        })
    };
    common::recv(&in_rx, "the reader");
    drop(cell);
    common::poke_gp_workers(&rcu);
    out_tx.send(()).unwrap();
    assert_eq!(
        reader.join().unwrap(),
        0,
        "dropped while a reader was inside"
    );
    within("the value's drop", move || {
        rcu.barrier();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}

/// The cell holds its own handle: with every other handle gone it still replaces and updates,
/// and dropping it (the last handle) drops every value, the last one included, before the
/// drop returns; the domain's threads then exit.
#[test]
fn cell_keeps_its_domain_alive() {
    let rcu = Rcu::builder()
        .shards(2)
        .thread_name_prefix("ck-")
        .build()
        .unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = RcuCell::new(&rcu, Versioned::new(0, &drops));
    drop(rcu);
    for v in 1..=10 {
        cell.replace(Versioned::new(v, &drops));
    }
    cell.update(|old| Versioned::new(old.version + 1, &drops));
    let drops2 = Arc::clone(&drops);
    within("dropping the cell, the last handle", move || {
        drop(cell);
        assert_eq!(drops2.load(Ordering::SeqCst), 12);
    });
    #[cfg(target_os = "linux")]
    common::wait_threads_gone("ck-");
}

/// A panic in `update`'s closure leaves the cell unchanged and usable (the writer lock does
/// not stay held), and drops nothing that is published.
#[test]
fn panicking_update_leaves_the_cell_unchanged() {
    let rcu = Rcu::builder().shards(1).build().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = RcuCell::new(&rcu, Versioned::new(5, &drops));
    let err = catch_unwind(AssertUnwindSafe(|| {
        cell.update(|_| -> Versioned { panic!("deliberate panic in update") })
    }))
    .unwrap_err();
    assert!(panic_text(&*err).contains("deliberate panic in update"));
    assert_eq!(cell.load(&rcu.read()).check(), Ok(5));
    within("updates after the panic", move || {
        cell.update(|old| Versioned::new(old.version + 1, &drops));
        cell.replace(Versioned::new(7, &drops));
        assert_eq!(cell.load(&rcu.read()).check(), Ok(7));
        rcu.barrier();
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        drop(cell);
        rcu.barrier();
        assert_eq!(drops.load(Ordering::SeqCst), 3);
    });
}

/// The Debug output shows the current value.
#[test]
fn debug_shows_the_current_value() {
    let rcu = Rcu::builder().shards(1).build().unwrap();
    let cell = RcuCell::new(&rcu, String::from("v1"));
    cell.update(|old| format!("{old}+v2"));
    assert_eq!(format!("{cell:?}"), r#"RcuCell { value: "v1+v2" }"#);
}

/// Cells of several domains, retired values owning cells of other domains: every value is
/// dropped once each domain's pending callbacks have run.
#[test]
fn cells_in_values_of_other_cells() {
    let outer_rcu = Rcu::builder().shards(2).build().unwrap();
    let inner_rcu = Rcu::builder().shards(1).build().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let outer = RcuCell::new(
        &outer_rcu,
        RcuCell::new(&inner_rcu, Versioned::new(0, &drops)),
    );
    for v in 1..=20 {
        outer.replace(RcuCell::new(&inner_rcu, Versioned::new(v, &drops)));
    }
    {
        let g = outer_rcu.read();
        let h = inner_rcu.read();
        assert_eq!(outer.load(&g).load(&h).check(), Ok(20));
    }
    within("both barriers", move || {
        // Outer values (cells) are dropped by outer's workers and retire
        // their values into inner; then inner's barrier drops those.
        outer_rcu.barrier();
        inner_rcu.barrier();
        assert_eq!(drops.load(Ordering::SeqCst), 20);
        drop(outer);
        outer_rcu.barrier();
        inner_rcu.barrier();
        assert_eq!(drops.load(Ordering::SeqCst), 21);
    });
}
