//! Property tests: random single-threaded sequences of API calls against an
//! exact model of grace-period counting and cookie completion, and random
//! builder settings against the documented validation rules.
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use proptest::prelude::*;
use rcu_offload::{GpCookie, Rcu, MAX_GP_SPIN_LIMIT, MAX_THREAD_NAME_PREFIX};

#[derive(Clone, Debug)]
enum Op {
    Snapshot,
    Synchronize,
    CondSynchronize(usize),
    Poll(usize),
    Enter,
    /// Drop the guard at this index (modulo the number alive): any order.
    Exit(usize),
    ReadOtherDomain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Snapshot),
        2 => Just(Op::Synchronize),
        3 => any::<usize>().prop_map(Op::CondSynchronize),
        3 => any::<usize>().prop_map(Op::Poll),
        2 => Just(Op::Enter),
        2 => any::<usize>().prop_map(Op::Exit),
        1 => Just(Op::ReadOtherDomain),
    ]
}

/// Calls `f`, which must panic with a message containing `msg`.
fn expect_panic(msg: &str, f: impl FnOnce()) -> Result<(), TestCaseError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => Err(TestCaseError::fail(format!("expected a panic: {msg}"))),
        Err(e) => {
            let text = common::panic_text(&*e);
            prop_assert!(text.contains(msg), "panic {text:?}, expected {msg:?}");
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// With no concurrency, every GP count and poll() answer matches the model exactly, and misuse panics without side effects.
    #[test]
    fn polled_api_matches_model(ops in prop::collection::vec(op(), 1..60), membarrier in any::<bool>()) {
        let rcu = Rcu::builder().membarrier(membarrier).build().unwrap();
        let other = Rcu::new();
        // Each cookie with the number of completed grace periods when taken:
        // it is done once one more has completed.
        let mut cookies: Vec<(GpCookie, u64)> = Vec::new();
        let mut completed = 0u64;
        let mut guards = Vec::new();
        for op in ops {
            match op {
                Op::Snapshot => cookies.push((rcu.snapshot(), completed)),
                Op::Synchronize if guards.is_empty() => {
                    rcu.synchronize();
                    completed += 1;
                }
                Op::Synchronize => {
                    expect_panic("synchronize() called inside a read-side critical section", || {
                        rcu.synchronize()
                    })?;
                }
                Op::CondSynchronize(i) if !cookies.is_empty() => {
                    let (c, at) = cookies[i % cookies.len()];
                    if !guards.is_empty() {
                        expect_panic("cond_synchronize() called inside", || rcu.cond_synchronize(c))?;
                    } else {
                        rcu.cond_synchronize(c);
                        if completed <= at {
                            completed += 1;
                        }
                        prop_assert!(rcu.poll(c));
                    }
                }
                Op::Poll(i) if !cookies.is_empty() => {
                    let (c, at) = cookies[i % cookies.len()];
                    prop_assert_eq!(rcu.poll(c), completed > at);
                    expect_panic("GpCookie from another Rcu domain", || {
                        let _ = other.poll(c);
                    })?;
                }
                Op::CondSynchronize(_) | Op::Poll(_) => {}
                Op::Enter => guards.push(rcu.read()),
                Op::Exit(i) if !guards.is_empty() => {
                    let n = guards.len();
                    drop(guards.remove(i % n));
                }
                Op::Exit(_) => {}
                Op::ReadOtherDomain => {
                    drop(other.read());
                    other.synchronize();
                }
            }
            prop_assert_eq!(rcu.completed_grace_periods(), completed);
        }
        drop(guards);
        rcu.synchronize();
        for (c, _) in cookies {
            prop_assert!(rcu.poll(c));
        }
    }

    /// build() succeeds exactly when every setting is within the documented limits, else names a failing field.
    #[test]
    fn builder_validation_matches_rules(
        spin in prop_oneof![0..=MAX_GP_SPIN_LIMIT + 2, Just(u32::MAX), any::<u32>()],
        prefix in "[a-z\\-\\x00é]{0,9}",
        membarrier in any::<bool>(),
    ) {
        let spin_ok = spin <= MAX_GP_SPIN_LIMIT;
        let len_ok = prefix.len() <= MAX_THREAD_NAME_PREFIX;
        let nul_ok = !prefix.contains('\0');
        let result = Rcu::builder()
            .membarrier(membarrier)
            .gp_spin_limit(spin)
            .thread_name_prefix(prefix.clone())
            .build();
        match result {
            Ok(rcu) => {
                prop_assert!(spin_ok && len_ok && nul_ok, "accepted {spin} {prefix:?}");
                rcu.synchronize();
            }
            Err(e) => {
                let field = e.field();
                let bad_field = (field == "gp_spin_limit" && !spin_ok)
                    || (field == "thread_name_prefix" && !(len_ok && nul_ok));
                prop_assert!(bad_field, "refused {spin} {prefix:?} naming {field}");
            }
        }
    }
}
