//! Stage 6: artifacts (and, once an engine exists, the runner).

pub mod artifacts;
