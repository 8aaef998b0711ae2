//! Userspace RCU (read-copy-update) for Rust, built the way the Linux kernel's
//! no-CBs RCU is built.
//!
//! Readers enter a read-side section with [`Rcu::read`], which costs about a
//! nanosecond and a half and never waits for a writer. Updaters unpublish
//! data and then either wait for a *grace period* — [`Rcu::synchronize`], or
//! the polled [`Rcu::start_poll`]/[`Rcu::poll`] pair — after which no reader
//! can still hold the old data, or hand the freeing to the domain's worker
//! threads with [`Rcu::call`] / [`Rcu::retire`], which run it after a grace
//! period without the updater waiting at all. [`RcuCell`] wraps the whole
//! pattern in a safe pointer type.
//!
//! # Layout
//!
//! | module | mechanism | loom models |
//! |---|---|---|
//! | `sync` | the facade: std/parking_lot, loom or shuttle primitives, the clock, the asymmetric fence pair | — |
//! | `membarrier` | `membarrier(2)` detection and the heavy fence | (modelled as `SeqCst` fences) |
//! | `reader` | reader records, registry, guards, the two-phase reader wait | `publish_retire*`, `nested_readers`, `reader_registers_and_exits_during_gp` |
//! | `seq` | kernel-style grace-period sequence numbers | unit tests |
//! | `gp` | grace-period engine: batching, polling, engine thread | `concurrent_synchronize_share_gp`, `poll_never_early`, `start_poll_completes` |
//! | `callback` | type-erased callbacks stored inline in chunked blocks | unit tests |
//! | `segcblist` | the segmented callback list (DONE / WAIT / NEXT_READY / NEXT) | property tests against an oracle |
//! | `nocb` | shards, groups, the enqueue path, every wake decision, stats | `enqueue_races_gp_worker_sleep`, `advance_races_gp_completion`, wakeups.rs |
//! | `bypass` | bypass lists, flood detection, lazy-only bypasses | `bypass_flush_races_enqueue`, `barrier_entrain_races_bypass_flush`, `lazy_promotion` |
//! | `wake` | wake levels and their rules; level > NONE iff the timer is armed | `seed_timer_cancel_keeps_level`, `kernel_twin_direct_wake_keeps_level`, `deferred_wake_races_direct_wake_gp_wakeup_and_timer`, `lazy_never_downgrades_pending_wake` |
//! | `timer` | the per-domain timer thread and its deadline queue | every model of wakeups.rs and bypass.rs |
//! | `throttle` | the memory bound (high/low water) | `throttle_blocks_until_low_water` |
//! | `worker` | the GP-worker and CB-worker loops | `advance_races_gp_completion`, `cb_worker_drains_while_enqueuing` |
//! | `barrier` | `barrier()`: entrain on every non-empty shard and wait | `barrier_races_enqueue_and_invocation`, `shutdown_runs_pending_callbacks` |
//! | `cell` | [`RcuCell`], the safe RCU-protected pointer | `rcu_cell_replace_and_read` |
//! | `domain` | the public [`Rcu`] handle, [`Builder`], [`global`] | `domain_drop_joins_engine`, `shutdown_runs_pending_callbacks` |
//!
//! # Memory model
//!
//! Readers on Linux use only compiler fences; the grace-period side uses
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` to force a full barrier on
//! every running thread of the process (as liburcu's memb flavour and folly's
//! asymmetric fences do). Where membarrier is unavailable, readers fall back
//! to full fences, decided once when a domain is built.
//!
//! # Example
//!
//! ```
//! use rcu_offload::Rcu;
//!
//! let rcu = Rcu::new();
//! let guard = rcu.read();
//! let cookie = rcu.start_poll();
//! assert!(!rcu.poll(cookie)); // we are still reading
//! drop(guard);
//! rcu.cond_synchronize(cookie);
//! assert!(rcu.poll(cookie));
//! ```
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
mod stats;
mod sync;

pub use cell::RcuCell;
pub use domain::builder::{
    Builder, ConfigError, DEFAULT_BYPASS_MAX, DEFAULT_CALLBACK_BATCH_LIMIT, DEFAULT_HIGH_WATER,
    DEFAULT_LAZY_TIMEOUT, DEFAULT_NOBYPASS_LIMIT, DEFAULT_TICK, MAX_GP_SPIN_LIMIT, MAX_SHARDS,
    MAX_THREAD_NAME_PREFIX,
};
pub use domain::{GpCookie, Rcu};
pub use reader::ReadGuard;
pub use stats::{ShardStats, Stats};
sync::cfg_real! {
    pub use domain::global;
}

/// The README's examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
