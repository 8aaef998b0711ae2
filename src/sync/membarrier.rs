//! `membarrier(2)`: the grace-period side's heavy fence.
//!
//! liburcu's "memb" flavour and folly's asymmetric fences rest on the same
//! idea: readers, which are many and fast, execute only a compiler fence; the
//! rare grace-period side asks the kernel to run a full memory barrier on every
//! CPU currently running a thread of this process
//! (`MEMBARRIER_CMD_PRIVATE_EXPEDITED`). Each reader's program is thereby cut
//! at some point by a real barrier, which is all the store-buffering argument
//! of the grace period needs (see `reader.rs`).
//!
//! Invariant kept: a domain uses light reader fences only if [`available`]
//! returned `true` before that domain's first reader ran, and then every
//! [`private_expedited`] call really is a process-wide barrier; if the command
//! ever fails after a successful registration, we abort rather than continue
//! with readers that are not fenced. Outside Linux there is no membarrier:
//! [`available`] says so, and readers use full fences. Under the model
//! checkers this module is not compiled: the facade models both halves as
//! `SeqCst` fences (loom model `publish_retire`).

use std::ffi::{c_int, c_long};
use std::sync::OnceLock;

// From <linux/membarrier.h>; stable kernel ABI.
const MEMBARRIER_CMD_QUERY: c_int = 0;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: c_int = 1 << 4;

#[cfg(target_os = "linux")]
fn membarrier(cmd: c_int) -> c_long {
    // SAFETY: membarrier takes (int cmd, unsigned int flags, int cpu_id); it
    // reads no user memory, so any command value is memory-safe.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_uint,
            0 as libc::c_int,
        )
    }
}

#[cfg(not(target_os = "linux"))]
fn membarrier(_cmd: c_int) -> c_long {
    -1
}

/// Is the expedited private membarrier usable in this process? The first call
/// queries the kernel and registers the process; the answer is cached.
///
/// Setting the environment variable `RCU_OFFLOAD_NO_MEMBARRIER` (to anything)
/// before the first call forces the fallback, which is how the fallback path
/// is tested on kernels that have membarrier.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var_os("RCU_OFFLOAD_NO_MEMBARRIER").is_some() {
            return false;
        }
        let mask = membarrier(MEMBARRIER_CMD_QUERY);
        if mask < 0 || mask & (MEMBARRIER_CMD_PRIVATE_EXPEDITED as c_long) == 0 {
            return false;
        }
        membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0
    })
}

/// Run a full memory barrier on every running thread of this process.
///
/// Only called by domains that saw [`available`] return `true`.
pub(crate) fn private_expedited() {
    if membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0 {
        // Continuing would let readers run unfenced: a silent use-after-free.
        eprintln!(
            "rcu_offload: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed after \
             registration: {}; aborting",
            std::io::Error::last_os_error()
        );
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn available_is_stable_and_barrier_works() {
        let a = super::available();
        assert_eq!(a, super::available());
        if a {
            super::private_expedited();
        }
    }
}
