//! The one choice the backends' fences depend on.

/// Which reader fences a domain uses, chosen once when it is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReaderFences {
    /// `membarrier(2)` is in use: readers execute compiler fences only.
    Light,
    /// No membarrier: readers execute full fences on outermost entry and
    /// exit, and grace periods need no system call.
    Full,
}
