//! `Builder::build`'s validation, as two tables: every setting it refuses
//! (each rule of `build()`, on both sides of its range where it has two),
//! with the field the `ConfigError` must name and a piece of its message;
//! and the accepted values at the edges of those ranges, each of which must
//! yield a working domain.
//!
//! The property test in tests/model.rs checks `gp_spin_limit` and
//! `thread_name_prefix` against random values; these tables pin the edges.
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{within, HOUR};
use rcu_offload::{
    Builder, Rcu, DEFAULT_HIGH_WATER, MAX_GP_SPIN_LIMIT, MAX_SHARDS, MAX_THREAD_NAME_PREFIX,
};

/// A refused setting: (description, the builder, the field the error must
/// name, a substring of its message).
type Refused = (&'static str, fn() -> Builder, &'static str, &'static str);

/// An accepted setting: (description, the builder, the shard count the
/// domain must have: `None` for the default).
type Accepted = (&'static str, fn() -> Builder, Option<usize>);

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

const NS: Duration = Duration::from_nanos(1);
const SECOND: Duration = Duration::from_secs(1);

/// Every rejection `Builder::build` can produce, in the order it checks.
const REFUSED: &[Refused] = &[
    // shards: 1..=MAX_SHARDS.
    (
        "shards(0)",
        || Rcu::builder().shards(0),
        "shards",
        "0 shards: need between 1 and",
    ),
    (
        "shards(MAX_SHARDS + 1)",
        || Rcu::builder().shards(MAX_SHARDS + 1),
        "shards",
        "shards: need between 1 and",
    ),
    (
        "shards(usize::MAX)",
        || Rcu::builder().shards(usize::MAX),
        "shards",
        "shards: need between 1 and",
    ),
    // gp_stride: 1..=shards.
    (
        "gp_stride(0)",
        || Rcu::builder().shards(4).gp_stride(0),
        "gp_stride",
        "stride 0: need between 1 and the shard count 4",
    ),
    (
        "gp_stride above the shard count",
        || Rcu::builder().shards(4).gp_stride(5),
        "gp_stride",
        "stride 5: need between 1 and the shard count 4",
    ),
    (
        "gp_stride(2) with one shard",
        || Rcu::builder().shards(1).gp_stride(2),
        "gp_stride",
        "stride 2: need between 1 and the shard count 1",
    ),
    (
        "gp_stride above the default shard count",
        || Rcu::builder().gp_stride(MAX_SHARDS + 1),
        "gp_stride",
        "need between 1 and the shard count",
    ),
    // callback_batch_limit: at least 1.
    (
        "callback_batch_limit(0)",
        || Rcu::builder().callback_batch_limit(0),
        "callback_batch_limit",
        "at least one callback per batch",
    ),
    // gp_spin_limit: at most MAX_GP_SPIN_LIMIT.
    (
        "gp_spin_limit(MAX_GP_SPIN_LIMIT + 1)",
        || Rcu::builder().gp_spin_limit(MAX_GP_SPIN_LIMIT + 1),
        "gp_spin_limit",
        "iterations is more than the maximum",
    ),
    (
        "gp_spin_limit(u32::MAX)",
        || Rcu::builder().gp_spin_limit(u32::MAX),
        "gp_spin_limit",
        "4294967295 iterations is more than the maximum",
    ),
    // thread_name_prefix: at most MAX_THREAD_NAME_PREFIX bytes, no NUL.
    (
        "thread_name_prefix one byte too long",
        || Rcu::builder().thread_name_prefix("x".repeat(MAX_THREAD_NAME_PREFIX + 1)),
        "thread_name_prefix",
        "bytes; at most",
    ),
    (
        "thread_name_prefix of four two-byte characters (bytes count, not characters)",
        || Rcu::builder().thread_name_prefix("éééé"),
        "thread_name_prefix",
        "is 8 bytes",
    ),
    (
        "thread_name_prefix \"\\0\"",
        || Rcu::builder().thread_name_prefix("\0"),
        "thread_name_prefix",
        "cannot contain NUL",
    ),
    (
        "thread_name_prefix with NUL inside",
        || Rcu::builder().thread_name_prefix("a\0b"),
        "thread_name_prefix",
        "cannot contain NUL",
    ),
    (
        "thread_name_prefix ending in NUL",
        || Rcu::builder().thread_name_prefix("ab\0"),
        "thread_name_prefix",
        "cannot contain NUL",
    ),
    // tick: 10 µs..=1 s.
    (
        "tick(0)",
        || Rcu::builder().tick(Duration::ZERO),
        "tick",
        "need between 10 µs and 1 s",
    ),
    (
        "tick(1 µs)",
        || Rcu::builder().tick(us(1)),
        "tick",
        "need between 10 µs and 1 s",
    ),
    (
        "tick(9 µs)",
        || Rcu::builder().tick(us(9)),
        "tick",
        "need between 10 µs and 1 s",
    ),
    (
        "tick(10 µs - 1 ns)",
        || Rcu::builder().tick(us(10) - NS),
        "tick",
        "need between 10 µs",
    ),
    (
        "tick(1 s + 1 ns)",
        || Rcu::builder().tick(SECOND + NS),
        "tick",
        "need between 10 µs",
    ),
    (
        "tick(1001 ms)",
        || Rcu::builder().tick(Duration::from_millis(1001)),
        "tick",
        "need between 10 µs and 1 s",
    ),
    (
        "tick(2 s)",
        || Rcu::builder().tick(2 * SECOND),
        "tick",
        "need between 10 µs and 1 s",
    ),
    // lazy_timeout: one tick..=an hour.
    (
        "lazy_timeout(0)",
        || Rcu::builder().lazy_timeout(Duration::ZERO),
        "lazy_timeout",
        "0ns: need between one tick",
    ),
    (
        "lazy_timeout a nanosecond below the default tick",
        || Rcu::builder().lazy_timeout(rcu_offload::DEFAULT_TICK - NS),
        "lazy_timeout",
        "need between one tick",
    ),
    (
        "lazy_timeout(9 ms) below tick(10 ms)",
        || {
            Rcu::builder()
                .tick(Duration::from_millis(10))
                .lazy_timeout(Duration::from_millis(9))
        },
        "lazy_timeout",
        "9ms: need between one tick (10ms) and an hour",
    ),
    (
        "lazy_timeout(an hour + 1 µs)",
        || Rcu::builder().lazy_timeout(HOUR + us(1)),
        "lazy_timeout",
        "and an hour",
    ),
    // bypass_max: at least 1.
    (
        "bypass_max(0)",
        || Rcu::builder().bypass_max(0),
        "bypass_max",
        "must hold at least one callback",
    ),
    // high_water at least 1; low_water below it (given or defaulted).
    (
        "high_water(0)",
        || Rcu::builder().high_water(0),
        "high_water",
        "high water 0 and low water 0",
    ),
    (
        "high_water(0).low_water(0)",
        || Rcu::builder().high_water(0).low_water(0),
        "high_water",
        "high water 0 and low water 0",
    ),
    (
        "high_water(0) with low_water above it",
        || Rcu::builder().high_water(0).low_water(5),
        "high_water",
        "high water 0 and low water 5",
    ),
    (
        "low_water equal to high_water",
        || Rcu::builder().high_water(100).low_water(100),
        "low_water",
        "high water 100 and low water 100: need 0 <= low < high",
    ),
    (
        "low_water above high_water",
        || Rcu::builder().high_water(100).low_water(101),
        "low_water",
        "high water 100 and low water 101",
    ),
    (
        "low_water at the default high water",
        || Rcu::builder().low_water(DEFAULT_HIGH_WATER),
        "low_water",
        "need 0 <= low < high",
    ),
];

/// The accepted values at the edges of the ranges above.
const ACCEPTED: &[Accepted] = &[
    (
        "shards(1).gp_stride(1)",
        || Rcu::builder().shards(1).gp_stride(1),
        Some(1),
    ),
    (
        "shards(4).gp_stride(4)",
        || Rcu::builder().shards(4).gp_stride(4),
        Some(4),
    ),
    (
        "shards(4).gp_stride(1)",
        || Rcu::builder().shards(4).gp_stride(1),
        Some(4),
    ),
    (
        "shards(MAX_SHARDS)",
        || Rcu::builder().shards(MAX_SHARDS),
        Some(MAX_SHARDS),
    ),
    (
        "shards(MAX_SHARDS).gp_stride(MAX_SHARDS)",
        || Rcu::builder().shards(MAX_SHARDS).gp_stride(MAX_SHARDS),
        Some(MAX_SHARDS),
    ),
    (
        "callback_batch_limit(1)",
        || Rcu::builder().callback_batch_limit(1),
        None,
    ),
    ("gp_spin_limit(0)", || Rcu::builder().gp_spin_limit(0), None),
    (
        "gp_spin_limit(MAX_GP_SPIN_LIMIT)",
        || Rcu::builder().gp_spin_limit(MAX_GP_SPIN_LIMIT),
        None,
    ),
    (
        "thread_name_prefix(\"\")",
        || Rcu::builder().thread_name_prefix(""),
        None,
    ),
    (
        "thread_name_prefix of MAX_THREAD_NAME_PREFIX bytes",
        || Rcu::builder().thread_name_prefix("y".repeat(MAX_THREAD_NAME_PREFIX)),
        None,
    ),
    (
        "thread_name_prefix of three two-byte characters",
        || Rcu::builder().thread_name_prefix("ééé"),
        None,
    ),
    (
        "tick(10 µs).lazy_timeout(10 µs)",
        || Rcu::builder().tick(us(10)).lazy_timeout(us(10)),
        None,
    ),
    (
        "tick(1 s).lazy_timeout(1 s)",
        || Rcu::builder().tick(SECOND).lazy_timeout(SECOND),
        None,
    ),
    (
        "lazy_timeout(an hour)",
        || Rcu::builder().lazy_timeout(HOUR),
        None,
    ),
    (
        "tick(1 s).lazy_timeout(an hour)",
        || Rcu::builder().tick(SECOND).lazy_timeout(HOUR),
        None,
    ),
    (
        "bypass_max(1).nobypass_limit(0)",
        || Rcu::builder().bypass_max(1).nobypass_limit(0),
        None,
    ),
    (
        "nobypass_limit(usize::MAX)",
        || Rcu::builder().nobypass_limit(usize::MAX),
        None,
    ),
    ("high_water(1)", || Rcu::builder().high_water(1), None),
    (
        "high_water(1).low_water(0)",
        || Rcu::builder().high_water(1).low_water(0),
        None,
    ),
    (
        "low_water one below high_water",
        || Rcu::builder().high_water(100).low_water(99),
        None,
    ),
    (
        "high_water(usize::MAX)",
        || Rcu::builder().high_water(usize::MAX),
        None,
    ),
];

/// Each refused setting yields a `ConfigError` naming the field (in
/// `field()` and in its `Display`) with a message that says why.
#[test]
fn refused_settings_name_the_field() {
    let mut failures = Vec::new();
    for &(row, builder, field, message) in REFUSED {
        match builder().build() {
            Ok(_) => failures.push(format!("{row}: accepted")),
            Err(err) => {
                if err.field() != field {
                    failures.push(format!("{row}: field {:?}, want {field:?}", err.field()));
                }
                if !err.message().contains(message) {
                    failures.push(format!(
                        "{row}: message {:?} does not contain {message:?}",
                        err.message()
                    ));
                }
                let shown = err.to_string();
                if !shown.contains(field) || !shown.contains(err.message()) {
                    failures.push(format!(
                        "{row}: Display {shown:?} omits the field or message"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Each accepted edge value yields a working domain with the shard count
/// asked for (or the documented default): a callback runs, `barrier()` and
/// `synchronize()` return (a hang fails the row's `within`).
#[test]
fn accepted_edge_values_yield_a_working_domain() {
    let default_shards = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_SHARDS);
    let mut failures = Vec::new();
    for &(row, builder, shards) in ACCEPTED {
        let rcu = match builder().build() {
            Ok(rcu) => rcu,
            Err(e) => {
                failures.push(format!("{row}: refused: {e}"));
                continue;
            }
        };
        let (got, want) = (rcu.stats().shards.len(), shards.unwrap_or(default_shards));
        if got != want {
            failures.push(format!("{row}: {got} shards, want {want}"));
        }
        let ran = Arc::new(AtomicBool::new(false));
        let ran2 = Arc::clone(&ran);
        within(row, move || {
            rcu.call(move || ran2.store(true, Ordering::Release));
            rcu.barrier();
            rcu.synchronize();
        });
        if !ran.load(Ordering::Acquire) {
            failures.push(format!("{row}: barrier() returned before the callback ran"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
