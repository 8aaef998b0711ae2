//! The fork handlers' prepare step (src/domain/quiesce.rs) under shuttle:
//! it holds every brief lock of a domain at once while the domain's last
//! handle is dropped. Shuttle, not loom: loom models a `try_lock` that is
//! pending while another thread takes the lock as blocking until that
//! thread lets go (loom issue #376), so an all-or-none try would deadlock
//! there for no reason; shuttle's `try_lock` fails at once, as a real one
//! does.
//!
//! The shutdown runs a barrier for the pending callbacks, then stops the GP
//! and CB workers; a stopping CB worker looks at its list under its sleep
//! lock (sleep lock, then list lock: the reverse of the order prepare goes
//! through a shard's locks). Prepare must get every lock, let go, and the
//! shutdown must still run every callback and join the workers. Mutant
//! caught: `fork_prepare_blocking` (prepare waits for each lock while
//! holding the earlier ones, and deadlocks with the stopping CB worker).
#![cfg(shuttle)]

use rcu_offload::model::domain_ref;
use rcu_offload::Rcu;
use rcu_offload_shuttle_tests::{check_pct, check_random, iterations, Done};
use shuttle::thread;

fn prepare_races_shutdown() {
    let rcu = Rcu::builder()
        .shards(2)
        .high_water(usize::MAX)
        .build()
        .unwrap();
    let done = Done::new();
    for i in 0..4 {
        rcu_offload::model::set_shard(i);
        let d = done.clone();
        rcu.call(move || d.one());
    }
    let probe = domain_ref(&rcu);
    let prober = thread::spawn(move || {
        probe.fork_prepare_and_release();
        probe.fork_prepare_and_release();
    });
    drop(rcu);
    prober.join().unwrap();
    done.wait_for(4);
}

#[test]
fn fork_prepare_races_shutdown() {
    check_random(prepare_races_shutdown, iterations(10_000));
    check_pct(prepare_races_shutdown, iterations(10_000), 3);
}
