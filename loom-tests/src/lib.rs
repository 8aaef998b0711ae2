//! loom models live in `tests/`; see the README in this directory.
