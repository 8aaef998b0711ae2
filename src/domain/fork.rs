//! `fork()`: what a child gets of the domains its parent had, in the spirit
//! of liburcu's `call_rcu_before_fork` / `call_rcu_after_fork_parent` /
//! `call_rcu_after_fork_child`, installed here with `pthread_atfork` when
//! the first domain is built.
//!
//! # What the child gets
//!
//! A child has one thread, the one that called `fork()`. In it every domain
//! keeps working: `read`, `synchronize`, polled and async waits, `call`,
//! `barrier`, and dropping the last handle; so do the cells, except one
//! that a parent thread was writing at the fork (inside `update`'s
//! closure), whose writer lock stays held in the child.
//!
//! * **Readers.** The records of the parent's other threads are dropped
//!   from the registry: those threads never leave their sections here, and
//!   would stall every grace period. The forking thread's record stays; if
//!   it forked inside a section, the child's grace periods wait for it, as
//!   the parent's do.
//! * **Grace periods.** A grace period running in the parent at the fork
//!   (its GP lock held by another thread) is abandoned: the lock is rebuilt
//!   unlocked and the sequence rolled back to the last completed grace
//!   period, so the child's next grace period is a full one. If the engine
//!   thread had work (a request not met, a task waiting), the child starts
//!   its own engine thread at once.
//! * **Callbacks queued before the fork run in both processes**, each on
//!   its own copy of the memory (a callback that frees memory frees each
//!   process's copy). In the child they run once something needs the
//!   workers: a `call()`, a `barrier()`, a GP worker's scan or the domain's
//!   drop starts them. The exception: the callbacks a CB worker had already
//!   taken out of its list to run (at most `callback_batch_limit` per
//!   shard) belong to that worker, which does not exist in the child: they
//!   run in the parent only, and are neither run nor dropped in the child.
//!   A barrier whose waiter was a parent thread never completes in the
//!   child, and nobody there waits for it.
//! * **Workers.** None of the parent's worker threads exist in the child;
//!   their handles are forgotten (never joined) and new ones start as
//!   above.
//!
//! # How: the three handlers
//!
//! * *Prepare* (parent, before the fork) takes every lock of every live
//!   domain that is only ever held briefly: the reader registry, the
//!   engine, the waker table, the feeds and their drain locks, every
//!   shard's locks, the wake and timer locks, the throttle's and the
//!   barriers' list. Then no thread is inside one of those critical
//!   sections when the address space is copied, so the child inherits
//!   consistent lists and counters. It takes them all or none, never
//!   waiting while it holds one (quiesce.rs, and its loom model).
//! * *Parent* releases them.
//! * *Child* releases them and repairs what was held for a long time by a
//!   thread the child does not have (the GP lock, a barrier's lock), then
//!   resets the machinery as above. The locks themselves are futex-based
//!   std locks (src/sync/real.rs): their waiters live in the kernel, so
//!   the child inherits none.
//!
//! # What cannot be made sound: a panic that names fork
//!
//! If the forking thread is one of a domain's worker threads (a callback,
//! or a waker run by the engine, called `fork()`), the child is that worker
//! on its own, in the middle of its loop. The domain is then not restarted:
//! every later start of one of its worker threads in the child panics with
//! a message naming fork, and so do `call()`, `barrier()` and the drop that
//! need one. A CB worker whose callback forked leaves its loop in the child
//! as soon as that callback returns (its batch and accounting are the
//! parent's); its thread then ends, and with it the child, unless the child
//! started threads of its own. The same goes for a waker that forked on the
//! engine thread or a GP worker. No domain starts a thread in such a child
//! on its own account (see `child`). A stall hook that forks (it runs
//! holding the grace-period or barrier lock, inside a wait for the
//! parent's threads) makes the child's thread panic, naming fork, as soon
//! as the hook returns.
//!
//! # Also worth knowing
//!
//! * The wakers of tasks that awaited a grace period at the fork are the
//!   parent's tasks' (the forking thread's own among them): the child's
//!   engine wakes them when their grace period ends there, running the
//!   parent executor's waker code on the child's copy of its memory.
//! * When the engine had work at the fork, the child starts its own engine
//!   thread at once; a child forked from a thread other than its main one
//!   that later returns from that thread (instead of calling `exit`) is
//!   then kept alive by it.
//! * An async barrier whose internal callback a parent CB worker had taken
//!   out to run never completes in the child.
//! * In the child, the forking thread's reader record keeps the parent's
//!   thread id: a stall report there would call it exited.
//!
//! Only in real builds: a model checker has no fork.

use std::cell::RefCell;
use std::sync::{Arc, Once, Weak};

use crate::nocb::{in_any_callback, in_callback_of, Worker};
use crate::sync::HeldLocks;

use super::{quiesce, Core, ON_WORKER_THREAD};

/// Every domain of the process that may still be alive. A std lock: this
/// module is real builds only.
static LIVE: std::sync::Mutex<Vec<Weak<Core>>> = std::sync::Mutex::new(Vec::new());

/// `LIVE`, locked (a panic while it was held poisons nothing it guards).
fn live() -> std::sync::MutexGuard<'static, Vec<Weak<Core>>> {
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Register `core` with the fork handlers, installing them on first use.
pub(super) fn register(core: &Arc<Core>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: the three handlers are `extern "C"` functions that never
        // unwind (each catches panics and aborts), and live for the whole
        // process.
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if rc != 0 {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "rcu_offload: pthread_atfork failed ({rc}); domains will be unusable \
                 in a forked child"
            );
        }
    });
    let mut live = live();
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(core));
}

/// What prepare holds across the fork: the domains, their locks, and the
/// registry's lock. Field order is drop order: the locks go before the
/// domains whose memory they borrow.
struct Hold {
    locks: HeldLocks<'static>,
    cores: Vec<Arc<Core>>,
    live: Option<std::sync::MutexGuard<'static, Vec<Weak<Core>>>>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        // Explicitly: locks first, then the registry (after the domains it
        // lists are released), then the domains.
        drop(std::mem::take(&mut self.locks));
        drop(self.live.take());
    }
}

thread_local! {
    /// Prepare's hold, on the forking thread, until parent or child.
    static HOLD: RefCell<Option<Hold>> = const { RefCell::new(None) };
}

/// Run a handler; a panic cannot unwind into libc, so it aborts.
fn no_unwind(what: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "rcu_offload: the fork {what} handler panicked"
        );
        std::process::abort();
    }
}

extern "C" fn prepare() {
    no_unwind("prepare", || {
        let live = live();
        let cores: Vec<Arc<Core>> = live.iter().filter_map(Weak::upgrade).collect();
        let refs: Vec<&Core> = cores.iter().map(|c| &**c).collect();
        let locks = quiesce::hold_all(&refs, |attempt| {
            if attempt < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        });
        // The hold is stored in a thread-local, which needs 'static: the
        // domains it borrows are kept alive by `cores` beside it, and the
        // locks are dropped first (see `Hold`).
        // SAFETY: `locks` borrows only from `cores`' domains, which `Hold`
        // keeps alive for as long as `locks` exists and drops after it.
        let locks: HeldLocks<'static> = unsafe { std::mem::transmute(locks) };
        HOLD.with(|h| {
            *h.borrow_mut() = Some(Hold {
                locks,
                cores,
                live: Some(live),
            })
        });
    });
}

extern "C" fn parent() {
    no_unwind("parent", || {
        HOLD.with(|h| drop(h.borrow_mut().take()));
    });
}

extern "C" fn child() {
    no_unwind("child", || {
        let Some(mut hold) = HOLD.with(|h| h.borrow_mut().take()) else {
            return;
        };
        let cores = std::mem::take(&mut hold.cores);
        // Release every lock (the forking thread took them all) and the
        // registry's.
        drop(hold);
        let worker_of = ON_WORKER_THREAD.with(|w| w.get());
        let mut engines = Vec::new();
        for core in &cores {
            let id = core.reader.id();
            let forker = if in_callback_of(id) {
                Forker::Callback
            } else if worker_of == id {
                Forker::Worker
            } else {
                Forker::Other
            };
            // SAFETY: this is the child of a fork, with one thread (this
            // one), which holds no guard of the domain's locks (prepare's
            // were just released, and no user code that could hold one
            // runs inside a fork call); no thread starts before every
            // domain is reset.
            if unsafe { core.after_fork_child(forker) } == Engine::Restart {
                engines.push(core);
            }
        }
        // Forked on a worker thread (of any domain), this thread leaves its
        // worker's loop and ends: a thread started now would outlive it and
        // keep the child alive for ever. Engines then start when asked.
        if worker_of != 0 || in_any_callback() {
            return;
        }
        for core in engines {
            // Tasks or polled cookies wait for grace periods that only the
            // engine would run: start the child's own now.
            let spawn = || Core::spawn(core, Worker::Engine);
            core.gp.request(core.gp.needed(), spawn);
        }
    });
}

/// Which thread of the parent the child's only thread is, for one domain.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Forker {
    /// It ran one of the domain's callbacks.
    Callback,
    /// It is another of the domain's worker threads (a waker forked).
    Worker,
    /// Any other thread.
    Other,
}

/// Whether a reset domain needs its engine thread started in the child.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Engine {
    Restart,
    WhenAsked,
}

impl Core {
    /// Repair and reset the domain in the child (module docs). If `forker`
    /// is one of the domain's workers, the domain is poisoned instead of
    /// restarted.
    ///
    /// # Safety
    ///
    /// Only in the child of a fork, before it starts any thread, with no
    /// guard of the domain's locks alive on the calling thread.
    unsafe fn after_fork_child(&self, forker: Forker) -> Engine {
        self.reader.after_fork_child();
        // SAFETY: the caller's contract.
        let engine_has_work = unsafe { self.gp.after_fork_child() };
        // SAFETY: the caller's contract.
        unsafe { self.nocb.after_fork_child() };
        if forker != Forker::Other {
            // Whichever worker loop this thread is in, it leaves it.
            self.nocb.stop_forking_worker();
            self.gp.stop_forking_engine();
        }
        if forker != Forker::Other {
            let _ = self.fork_poison.set(
                "rcu_offload: this domain cannot start threads in a child of fork(): \
                 fork() was called on one of its worker threads (from a callback or a \
                 waker), whose loop the child's only thread is still in. Fork from an \
                 ordinary thread."
                    .to_owned(),
            );
            return Engine::WhenAsked;
        }
        if engine_has_work && self.handles.load(crate::sync::Ordering::Relaxed) != 0 {
            Engine::Restart
        } else {
            Engine::WhenAsked
        }
    }
}
