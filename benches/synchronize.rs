//! Grace-period cost: back-to-back `synchronize` calls with no registered
//! reader, with one registered but idle reader (the calling thread itself,
//! outside any section), and with one background thread looping short
//! read-side critical sections, for rcu-offload and liburcu (memb flavour).
//!
//! The liburcu entries time a C loop of `urcu_memb_synchronize_rcu()`
//! through `iter_custom`; their background reader is a pthread in the shim.
//! Only one background reader runs at a time (the machine has 2 cores).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use rcu_offload::Rcu;

/// A Rust thread looping `rcu.read()` + a load of shared data + drop.
struct RustReader {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<u64>,
}

impl RustReader {
    fn start(rcu: &Rcu) -> Self {
        let rcu = rcu.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let data = Arc::new(42_u64);
        let handle = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut n = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let g = rcu.read();
                    black_box(*data);
                    drop(g);
                    n += 1;
                }
                n
            })
        };
        Self { stop, handle }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .expect("rcu-offload reader thread panicked")
    }
}

fn no_readers(c: &mut Criterion) {
    let available = rcu_offload_benches::check_liburcu();
    let mut group = c.benchmark_group("synchronize/no_readers");
    group.sampling_mode(SamplingMode::Flat);

    let rcu = Rcu::new();
    group.bench_function("rcu-offload", |b| b.iter(|| rcu.synchronize()));

    if available {
        liburcu::synchronize(&mut group, false);
    }
    group.finish();
}

fn idle_reader(c: &mut Criterion) {
    let available = rcu_offload_benches::check_liburcu();
    let mut group = c.benchmark_group("synchronize/idle_reader");
    group.sampling_mode(SamplingMode::Flat);

    let rcu = Rcu::new();
    // Register this thread as a reader of the domain, then stay outside.
    drop(rcu.read());
    group.bench_function("rcu-offload", |b| b.iter(|| rcu.synchronize()));

    if available {
        liburcu::synchronize_registered(&mut group);
    }
    group.finish();
}

fn one_reader(c: &mut Criterion) {
    let available = rcu_offload_benches::check_liburcu();
    let mut group = c.benchmark_group("synchronize/one_reader");
    group.sampling_mode(SamplingMode::Flat);

    let rcu = Rcu::new();
    let reader = RustReader::start(&rcu);
    group.bench_function("rcu-offload", |b| b.iter(|| rcu.synchronize()));
    let sections = reader.stop();
    eprintln!("rcu-offload background reader ran {sections} read-side sections");

    if available {
        liburcu::synchronize(&mut group, true);
    }
    group.finish();
}

#[cfg(have_liburcu)]
mod liburcu {
    use criterion::measurement::WallTime;
    use criterion::BenchmarkGroup;
    use rcu_offload_benches::liburcu::{synchronize_loop, BackgroundReader, RegisteredThread};

    pub fn synchronize_registered(group: &mut BenchmarkGroup<'_, WallTime>) {
        let reg = RegisteredThread::new().expect("registering the bench thread with liburcu-memb");
        group.bench_function("liburcu-memb", |b| b.iter_custom(synchronize_loop));
        drop(reg);
    }

    pub fn synchronize(group: &mut BenchmarkGroup<'_, WallTime>, with_reader: bool) {
        let reader = with_reader
            .then(|| BackgroundReader::start().expect("starting the liburcu reader thread"));
        group.bench_function("liburcu-memb", |b| b.iter_custom(synchronize_loop));
        if let Some(reader) = reader {
            let sections = reader.stop();
            eprintln!("liburcu-memb background reader ran {sections} read-side sections");
        }
    }
}

#[cfg(not(have_liburcu))]
mod liburcu {
    use criterion::measurement::WallTime;
    use criterion::BenchmarkGroup;

    pub fn synchronize(_group: &mut BenchmarkGroup<'_, WallTime>, _with_reader: bool) {}

    pub fn synchronize_registered(_group: &mut BenchmarkGroup<'_, WallTime>) {}
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = no_readers, idle_reader, one_reader
}
criterion_main!(benches);
