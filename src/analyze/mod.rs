//! Stage 6: static analysis, after compile and before anything runs. Infers the columns and
//! Arrow types of every relation without data and without the warehouse, in DAG order:
//!
//! - seeds as kiln loads them (`column_types`, else inference from the file);
//! - sources from their own files (`external_location`, local files only), else from the
//!   `data_type`s their YAML declares (a partial list: columns it does not name are not
//!   "missing");
//! - models, analyses and snapshots by planning their compiled SQL with DataFusion's SQL
//!   planner, in the target's dialect, over empty relations of their parents' schemas.
//!
//! What analysis cannot type (an input it does not know, a function or construct the planner
//! lacks) is unknown, never an error. What is certain is reported at its place in the model's
//! source file: a column no input of its scope has, a column more than one has.

#[cfg(feature = "datafusion")]
mod infer;
pub mod position;

use crate::compile::Compiled;
use crate::diagnostics::Diagnostic;
use crate::graph::Graph;
use crate::parse::Manifest;
use crate::project::Project;
use crate::project::profiles::Target;
use crate::project::typed::StaticAnalysis;
use std::collections::HashMap;

/// What analysis reads.
pub struct Input<'a> {
    pub project: &'a Project,
    pub manifest: &'a Manifest,
    pub graph: &'a Graph,
    pub target: &'a Target,
    pub compiled: &'a HashMap<String, Compiled>,
    /// What the SQL check parsed, by id (planned without parsing again where the dialects
    /// agree).
    pub statements: &'a HashMap<String, Vec<sqlparser::ast::Statement>>,
    /// The invocation's environment (for the engine setup of file sources).
    pub env: &'a HashMap<String, String>,
    /// `--static-analysis`: the mode of every node, in place of its `static_analysis` config.
    pub mode: Option<StaticAnalysis>,
}

/// The columns of a relation, as analysis knows them.
#[derive(Clone, Debug)]
pub enum Columns {
    /// Every column, with its type (`complete`), or only those a YAML file declares.
    Known { columns: Vec<(String, String)>, complete: bool },
    /// Why they cannot be told.
    Unknown(String),
}

/// The result: what each analyzed node and its inputs return, and the problems found.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Unique id -> columns (models, seeds, snapshots, analyses, sources).
    pub columns: HashMap<String, Columns>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Analyzes every compiled model, analysis and snapshot of `input`.
pub fn analyze(input: &Input) -> Analysis {
    if input.mode == Some(StaticAnalysis::Off) {
        return Analysis::default();
    }
    #[cfg(feature = "datafusion")]
    {
        infer::run(input)
    }
    #[cfg(not(feature = "datafusion"))]
    {
        let _ = input;
        Analysis::default()
    }
}
