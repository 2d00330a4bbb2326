//! Stage 6: artifacts and the runner.

pub mod artifacts;
#[cfg(feature = "datafusion")]
pub mod results;
#[cfg(feature = "datafusion")]
pub mod runner;
