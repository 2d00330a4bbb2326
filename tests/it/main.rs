//! kiln's integration tests: one binary (link once), modules by area.

mod analysis;
mod bigquery;
mod broken;
mod cli;
mod common;
mod dbt_parity;
mod engine;
mod fidelity;
mod golden;
mod hostile;
mod object_store;
mod packages;
mod postgres;
mod quality;
mod state;
mod warehouse;
mod watch;
