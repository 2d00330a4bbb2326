//! kiln: a SQL-first, declarative data-build tool that compiles dbt projects.
//!
//! ```text
//!  project/  files on disk -> Project (dbt_project.yml, properties YAML, profiles, packages)
//!     |
//!  jinja/    minijinja environment with dbt's context (ref, source, config, var, macros, adapter)
//!     |
//!  parse/    parse phase: render every file with execute=false -> Manifest (nodes, configs, deps)
//!     |
//!  graph/    petgraph DAG, deterministic order, cycles, dbt's selector grammar
//!     |
//!  compile/  compile phase: render SQL for the target, inline ephemerals, check SQL syntax
//!     |
//!  run/      artifacts (manifest.json) and, with an engine, the runner
//! ```
//!
//! `diagnostics/` holds errors as data; only `cli/` prints.

pub mod adapter;
pub mod analyze;
pub mod cli;
pub mod compile;
pub mod deps;
pub mod diagnostics;
pub mod engine;
pub mod graph;
pub mod jinja;
pub mod parse;
pub mod project;
pub mod run;
pub mod session;

/// The dbt version kiln's behaviour and artifacts follow.
pub const DBT_COMPAT_VERSION: &str = "1.10.0";
