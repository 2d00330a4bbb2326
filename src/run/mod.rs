//! Stage 6: artifacts and the runner.

pub mod artifacts;
#[cfg(feature = "datafusion")]
pub mod contracts;
#[cfg(feature = "datafusion")]
pub mod data_tests;
pub mod freshness;
#[cfg(feature = "datafusion")]
pub mod junit;
pub mod manifest_file;
pub mod microbatch;
pub mod plan;
#[cfg(feature = "datafusion")]
pub mod results;
#[cfg(feature = "datafusion")]
pub mod runner;
#[cfg(feature = "datafusion")]
pub mod schedule;
pub mod setup;
pub mod state;
#[cfg(feature = "datafusion")]
pub mod unit;
