//! Read-side cost: one read-side critical section (enter + exit), outermost
//! and nested, for rcu-offload, crossbeam-epoch and liburcu (memb flavour).
//!
//! Every entry times the same shape of loop through `iter_custom`: `iters`
//! enter/exit pairs back to back, with the clock read once before and once
//! after. The liburcu loop runs in C (so no FFI call cost is charged to it);
//! the Rust loops are the same tight loops in Rust, without a per-iteration
//! `black_box` (neither the C loop nor the guards need one: the guards' stores
//! to the reader word are atomic and cannot be optimised away).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rcu_offload::Rcu;

fn outermost_pair(c: &mut Criterion) {
    let available = rcu_offload_benches::check_liburcu();
    let mut group = c.benchmark_group("read_side/outermost_pair");

    let rcu = black_box(Rcu::new());
    group.bench_function("rcu-offload", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                drop(rcu.read());
            }
            start.elapsed()
        })
    });

    group.bench_function("crossbeam-epoch", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                drop(crossbeam_epoch::pin());
            }
            start.elapsed()
        })
    });

    if available {
        liburcu::outermost_pair(&mut group);
    }
    group.finish();
}

fn nested_pair(c: &mut Criterion) {
    let available = rcu_offload_benches::check_liburcu();
    let mut group = c.benchmark_group("read_side/nested_pair");

    let rcu = black_box(Rcu::new());
    group.bench_function("rcu-offload", |b| {
        let outer = rcu.read();
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                drop(rcu.read());
            }
            start.elapsed()
        });
        drop(outer);
    });

    group.bench_function("crossbeam-epoch", |b| {
        let outer = crossbeam_epoch::pin();
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                drop(crossbeam_epoch::pin());
            }
            start.elapsed()
        });
        drop(outer);
    });

    if available {
        liburcu::nested_pair(&mut group);
    }
    group.finish();
}

/// A thread alternating between two domains (rcu-offload only: the peers
/// have a single global domain). Each iteration is one pair in each domain;
/// the figure is per pair.
fn alternating_domains(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_side/two_domains_alternating");
    let (a, b) = (black_box(Rcu::new()), black_box(Rcu::new()));
    group.bench_function("rcu-offload", |bench| {
        bench.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters.div_ceil(2) {
                drop(a.read());
                drop(b.read());
            }
            start.elapsed()
        })
    });
    group.finish();
}

#[cfg(have_liburcu)]
mod liburcu {
    use criterion::measurement::WallTime;
    use criterion::BenchmarkGroup;
    use rcu_offload_benches::liburcu::{has_sys_membarrier, RegisteredThread};

    fn register() -> RegisteredThread {
        if !has_sys_membarrier() {
            eprintln!(
                "note: liburcu-memb could not use sys_membarrier here; its read side \
                 falls back to full memory barriers"
            );
        }
        RegisteredThread::new().expect("registering the bench thread with liburcu-memb")
    }

    pub fn outermost_pair(group: &mut BenchmarkGroup<'_, WallTime>) {
        let reg = register();
        group.bench_function("liburcu-memb", |b| {
            b.iter_custom(|iters| reg.read_pair_loop(iters))
        });
    }

    pub fn nested_pair(group: &mut BenchmarkGroup<'_, WallTime>) {
        let reg = register();
        group.bench_function("liburcu-memb", |b| {
            b.iter_custom(|iters| reg.nested_pair_loop(iters))
        });
    }
}

#[cfg(not(have_liburcu))]
mod liburcu {
    use criterion::measurement::WallTime;
    use criterion::BenchmarkGroup;

    pub fn outermost_pair(_group: &mut BenchmarkGroup<'_, WallTime>) {}

    pub fn nested_pair(_group: &mut BenchmarkGroup<'_, WallTime>) {}
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = outermost_pair, nested_pair, alternating_domains
}
criterion_main!(benches);
