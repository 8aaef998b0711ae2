//! [`CompareExchangeError`]: what a failed compare-and-exchange gives back.

use std::fmt;

/// The error of a failed `compare_exchange`: the value the cell held
/// instead of the expected one, and the new value, given back.
#[derive(Debug)]
pub struct CompareExchangeError<C, N> {
    /// What the cell held (valid for the guard passed in).
    pub current: C,
    /// The value that was not stored.
    pub new: N,
}

impl<C, N> fmt::Display for CompareExchangeError<C, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the cell did not hold the expected value")
    }
}

impl<C: fmt::Debug, N: fmt::Debug> std::error::Error for CompareExchangeError<C, N> {}
