//! Read-copy-update for Rust: readers that cost about a nanosecond and never
//! wait, writers that publish a new version and hand the old one to
//! background threads, which free it once no reader can hold it.
//!
//! ```
//! use rcu_offload::{Rcu, RcuCell};
//!
//! let rcu = Rcu::new();
//! let config = RcuCell::new(&rcu, vec!["a", "b"]);
//!
//! // Readers, on any thread: a read-side section, no lock.
//! {
//!     let guard = rcu.read();
//!     let current = config.load(&guard);
//!     assert_eq!(current.len(), 2);
//!     // A writer may replace it now: `current` stays valid until `guard`
//!     // is dropped, and the old vector is freed on a worker thread after.
//!     config.update(|old| [old.as_slice(), &["c"]].concat());
//!     assert_eq!(current.len(), 2);
//! }
//! assert_eq!(config.load(&rcu.read()).len(), 3);
//!
//! rcu.barrier(); // every queued free has run
//! assert_eq!(rcu.stats().pending(), 0);
//! ```
//!
//! Beyond [`RcuCell`] (and [`RcuOptionCell`], which may be empty):
//! [`Rcu::synchronize`] waits for a grace period (every read-side section
//! that began before it has ended); [`Rcu::start_poll`] and [`Rcu::poll`]
//! poll for one without blocking; [`Rcu::call`] runs any closure on the
//! domain's callback workers after a grace period, and [`Rcu::barrier`]
//! waits for the callbacks queued so far. Async code awaits
//! [`Rcu::synchronize_async`], [`Rcu::cond_synchronize_async`] and
//! [`Rcu::barrier_async`] instead of blocking a runtime thread. [`Rcu`] documents
//! which thread runs what; [`Builder`] configures a domain, including its
//! memory bound ([`Builder::high_water`]), its stall warnings
//! ([`Builder::stall_timeout`], [`Builder::on_stall`]) and where callback
//! panics go ([`Builder::on_callback_panic`]). On Linux a forked child keeps
//! using every domain (see [`Rcu`]'s limits).
//!
//! # Memory model
//!
//! Readers on Linux use only compiler fences; the grace-period side uses
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` to force a full barrier on
//! every running thread of the process (as liburcu's memb flavour does).
//! Where membarrier is unavailable, readers fall back to full fences,
//! decided once when a domain is built.
//!
//! # Inside
//!
//! The design, its invariants and the kernel bugs they guard against are in
//! docs/design.md; the loom models and their mutants in loom-tests/README.md.
//! Layers point one way, from the public API down:
//!
//! | module | mechanism | checked by |
//! |---|---|---|
//! | `domain`, `domain::builder` | the [`Rcu`] handle, its lifetime and shutdown, the starting of worker threads; [`Builder`] | `domain_drop_joins_engine`, `shutdown_runs_pending_callbacks` |
//! | `domain::futures` | the async waits: [`GracePeriod`], [`Barrier`] | `waker_registers_while_gp_completes`, `barrier_async_wakes_after_callbacks` |
//! | `domain::fork`, `domain::quiesce` | Linux: the fork handlers (a child keeps using every domain); holding every brief lock of a domain at once | `fork_prepare_races_shutdown` (shuttle), tests/fork.rs |
//! | `cell` | [`RcuCell`], [`RcuOptionCell`], [`Unpublished`]: thin layers over one core (`cell::raw`) | `rcu_cell_replace_and_read`, `compare_exchange_races_update_and_reader` |
//! | `stats` | [`Stats`] | integration tests |
//! | `nocb` | the callback machinery's state and lifecycle | the models below |
//! | `nocb::env` | what the machinery is handed: readers, grace periods, a way to start threads | — |
//! | `nocb::feed` | a thread's staged `call()`s: the fast path, closing idle feeds | `feed_publish_races_scan_close`, `feed_reopen_promises_a_scan` |
//! | `nocb::enqueue` | `call()`: feed hand-overs and takes, bypass or list, the wake it owes, memory pressure | `enqueue_races_gp_worker_sleep`, `bypass_flush_races_enqueue`, `barrier_takes_staged_callbacks` |
//! | `nocb::shard` | shards, their length accounting, per-thread shard choice | `barrier_races_enqueue_and_invocation` |
//! | `nocb::bypass` | bypass lists, flood detection, lazy-only bypasses | `lazy_promotion`, `barrier_entrain_races_bypass_flush` |
//! | `nocb::wake` | wake levels, every waker, both workers' sleep handshakes | `seed_timer_cancel_keeps_level`, `kernel_twin_direct_wake_keeps_level`, `advance_races_gp_completion`, `cb_worker_drains_while_enqueuing` |
//! | `nocb::timer` | the per-domain timer thread | every model of wakeups.rs and bypass.rs |
//! | `nocb::throttle` | the memory bound (high and low water) | `throttle_blocks_until_low_water` |
//! | `nocb::worker` | the GP-worker and CB-worker loops | `enqueue_races_gp_worker_sleep`, `gp_completed_by_synchronize` |
//! | `nocb::barrier` | `barrier()` | `concurrent_barriers_share_work` |
//! | `nocb::panics` | callback panics: counted, handed to [`Builder::on_callback_panic`]'s hook or printed | tests/hooks.rs |
//! | `gp` | the grace-period engine: batching, polling, the engine thread | `concurrent_synchronize_share_gp`, `poll_never_early` |
//! | `wait` | the wakers of tasks awaiting a grace period | `waker_registers_while_gp_completes`, `waker_replaced_between_polls` |
//! | `reader` | reader records, registry, guards, the two-phase reader wait | `publish_retire*`, `nested_readers` |
//! | `stall` | stall warnings: [`StallReport`], who reports and to whom | `stall_report_races_reader_exit`, tests/stall.rs |
//! | `segcblist`, `callback`, `seq` | the segmented callback list, callback storage, sequence numbers | property and unit tests |
//! | `sync` | the facade: real or model primitives, the clock, the fence pair, `membarrier(2)` | — |
//! | `mutants` | the `mutant!` macros; the enum behind them exists in model builds only | loom-tests/tests/mutant_table.rs |
//! | `model` | model builds only: the hooks the loom and shuttle suites drive | — |
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod callback;
mod cell;
mod domain;
mod gp;
#[doc(hidden)]
pub mod model;
mod mutants;
mod nocb;
mod reader;
mod segcblist;
mod seq;
mod stall;
mod stats;
mod sync;
mod wait;

pub use cell::{CompareExchangeError, RcuCell, RcuOptionCell, Unpublished};
pub use domain::builder::{
    Builder, ConfigError, DEFAULT_BYPASS_MAX, DEFAULT_CALLBACK_BATCH_LIMIT, DEFAULT_HIGH_WATER,
    DEFAULT_LAZY_TIMEOUT, DEFAULT_NOBYPASS_LIMIT, DEFAULT_STALL_TIMEOUT, DEFAULT_TICK,
    MAX_GP_SPIN_LIMIT, MAX_SHARDS, MAX_THREAD_NAME_PREFIX,
};
pub use domain::futures::{Barrier, GracePeriod};
pub use domain::{GpCookie, Rcu};
pub use nocb::{CallbackPanic, ShardChoice, Staging};
pub use reader::ReadGuard;
pub use stall::{
    ShardHoldup, StallKind, StallReport, StalledReader, StalledShard, ThreadCondition,
};
pub use stats::{ShardStats, Stats};
sync::cfg_real! {
    pub use domain::global;
}

/// The README's examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
