//! Shared scaffolding for the shuttle tests in `tests/`.
//!
//! The tests only compile under `RUSTFLAGS="--cfg shuttle"`; see README.md in
//! this directory for how to run them and for the mutants they catch.
#![cfg(shuttle)]

use shuttle::scheduler::{PctScheduler, RandomScheduler, Scheduler};
use shuttle::sync::{Arc, Condvar, Mutex};
use shuttle::{Config, Runner};

/// A count of finished callbacks that a thread can block on *without kicking
/// anyone*: a callback stranded anywhere in the pipeline then leaves every
/// thread blocked, and shuttle reports a deadlock.
#[derive(Default)]
pub struct Done {
    n: Mutex<usize>,
    cv: Condvar,
}

impl Done {
    /// A new, shared count at zero.
    pub fn new() -> Arc<Done> {
        Arc::new(Done::default())
    }

    /// Called by a callback when it has finished.
    pub fn one(&self) {
        *self.n.lock().unwrap() += 1;
        self.cv.notify_all();
    }

    /// Block until `n` callbacks have finished.
    pub fn wait_for(&self, n: usize) {
        let mut g = self.n.lock().unwrap();
        while *g < n {
            g = self.cv.wait(g).unwrap();
        }
    }
}

/// Iterations for a test: `default`, unless the environment variable
/// `SHUTTLE_ITERATIONS` says otherwise (for longer runs by hand).
pub fn iterations(default: usize) -> usize {
    std::env::var("SHUTTLE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run<S, F>(scheduler: S, what: &str, iterations: usize, f: F)
where
    S: Scheduler + 'static,
    F: Fn() + Send + Sync + 'static,
{
    let mut config = Config::new();
    // The library's threads run catch_unwind, formatting and the callback
    // machinery: give them more than shuttle's default 60 KiB of stack.
    config.stack_size = 256 * 1024;
    // Our `lazy_static` (the model clock) is meant to be reset per execution.
    config.silence_warnings = true;
    let start = std::time::Instant::now();
    Runner::new(scheduler, config).run(f);
    eprintln!(
        "shuttle: {what}: {iterations} executions in {:.2?}",
        start.elapsed()
    );
}

/// `shuttle::check_random` with our configuration: `iterations` executions
/// under the uniformly random scheduler.
pub fn check_random<F>(f: F, iterations: usize)
where
    F: Fn() + Send + Sync + 'static,
{
    run(RandomScheduler::new(iterations), "random", iterations, f);
}

/// `shuttle::check_pct` with our configuration: `iterations` executions
/// under PCT with bug depth `depth`.
pub fn check_pct<F>(f: F, iterations: usize, depth: usize)
where
    F: Fn() + Send + Sync + 'static,
{
    run(
        PctScheduler::new(depth, iterations),
        &format!("pct depth {depth}"),
        iterations,
        f,
    );
}
