//! The types both backends share.

use std::time::Duration;

/// Which reader fences a domain uses, chosen once when it is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReaderFences {
    /// `membarrier(2)` is in use: readers execute compiler fences only.
    Light,
    /// No membarrier: readers execute full fences on outermost entry and
    /// exit, and grace periods need no system call.
    Full,
}

/// What the timer thread does about its earliest deadline: the backend's
/// verdict (`TimerClock::check`, real time or model time).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TimerClock {
    /// It is due: fire every timer due at `now`.
    Due { now: u64 },
    /// Sleep this long, unless notified. (Model time never makes a timer
    /// wait: an armed timer may fire at once.)
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    Wait(Duration),
}

/// What the operating system says of a thread (`os_thread_state`; model
/// builds only ever answer `Unknown`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(any(loom, shuttle), allow(dead_code))]
pub(crate) enum OsThreadState {
    /// Running or runnable.
    Running,
    /// Blocked in the kernel (or stopped).
    Sleeping,
    /// No thread of this process has that id any more.
    Gone,
    /// The system did not say.
    Unknown,
}
