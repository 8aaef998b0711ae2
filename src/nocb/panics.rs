//! Callback panics: every one is caught by the callback worker that ran the
//! callback, counted, and handed to the domain's hook
//! ([`Builder::on_callback_panic`](crate::Builder::on_callback_panic)) or,
//! without a hook, reported on stderr (the first of the domain only).
//! Nothing a callback or a hook does can end the worker: a panic in the
//! hook, or in dropping a payload, is caught too.

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::sync::{AtomicBool, AtomicU64, Ordering};
use crate::wait::drop_contained;

/// A callback's panic, handed to the hook of
/// [`Builder::on_callback_panic`](crate::Builder::on_callback_panic) on the
/// callback worker that caught it.
pub struct CallbackPanic {
    payload: Box<dyn Any + Send>,
    shard: usize,
}

impl CallbackPanic {
    /// The panic's payload, as `std::panic::catch_unwind` returns it.
    pub fn payload(&self) -> &(dyn Any + Send) {
        &*self.payload
    }

    /// The payload, by value (to re-raise it elsewhere with
    /// `std::panic::resume_unwind`, say).
    pub fn into_payload(self) -> Box<dyn Any + Send> {
        self.payload
    }

    /// The panic's message, when the payload is a string (as `panic!`
    /// makes it).
    pub fn message(&self) -> Option<&str> {
        if let Some(s) = self.payload.downcast_ref::<&'static str>() {
            Some(s)
        } else {
            self.payload.downcast_ref::<String>().map(String::as_str)
        }
    }

    /// The shard whose callback worker ran the callback.
    pub fn shard(&self) -> usize {
        self.shard
    }
}

impl fmt::Debug for CallbackPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackPanic")
            .field("message", &self.message())
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

/// A domain's callback-panic hook.
pub(crate) type PanicHook = Arc<dyn Fn(CallbackPanic) + Send + Sync>;

/// A domain's count of callback panics and where they are reported.
pub(crate) struct PanicReports {
    count: AtomicU64,
    /// The stderr line (no hook) has been printed.
    printed: AtomicBool,
    hook: Option<PanicHook>,
}

impl PanicReports {
    pub(crate) fn new(hook: Option<PanicHook>) -> Self {
        PanicReports {
            count: AtomicU64::new(0),
            printed: AtomicBool::new(false),
            hook,
        }
    }

    /// Callback panics so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Count the panic of a callback of shard `shard` (on its worker
    /// `worker`) and report it. Failed writes to stderr (a closed pipe) are
    /// ignored: reporting must not panic the worker.
    pub(crate) fn report(&self, shard: usize, worker: &str, payload: Box<dyn Any + Send>) {
        use std::io::Write;
        self.count.fetch_add(1, Ordering::Relaxed);
        match &self.hook {
            Some(hook) => {
                let p = CallbackPanic { payload, shard };
                if let Err(again) = catch_unwind(AssertUnwindSafe(|| hook(p))) {
                    let _ = writeln!(
                        std::io::stderr(),
                        "rcu_offload: the callback-panic hook panicked on {worker}; \
                         the worker carries on."
                    );
                    drop_contained(again);
                }
            }
            None => {
                if !self.printed.swap(true, Ordering::Relaxed) {
                    let _ = writeln!(
                        std::io::stderr(),
                        "rcu_offload: a callback panicked on callback worker {worker}; \
                         the worker carries on with the other callbacks. Further panics \
                         of this domain are only counted (Rcu::stats().panics)."
                    );
                }
                drop_contained(payload);
            }
        }
    }
}
