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
mod calls;
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
    /// The SQL check of a compiled node (`None`: `--no-sql-check`): its problems, and its
    /// statements when it parsed, which analysis plans (where the dialects agree) instead of
    /// parsing again. Analysis runs it first on every node it is given.
    pub check: Option<&'a CheckFn<'a>>,
    /// Incremental models compiled for an incremental run: their full-refresh SQL, which
    /// analysis plans instead (the incremental SQL reads the model's own relation).
    pub full_refresh: &'a HashMap<String, String>,
    /// The invocation's environment (for the engine setup of file sources).
    pub env: &'a HashMap<String, String>,
    /// `--static-analysis`: the mode of every node, in place of its `static_analysis` config.
    pub mode: Option<StaticAnalysis>,
    /// On the embedded engine: whether a relation is in the local warehouse.
    pub warehouse: Option<&'a (dyn Fn(&crate::engine::RelationName) -> bool + Sync)>,
    /// Seeds and sources to infer besides those the analyzed nodes read.
    pub inputs: &'a [String],
    /// The warehouse answered the renders' queries as a build's would: else a node whose SQL
    /// depends on them (`run_query`, introspection, here or in an ephemeral model it inlines)
    /// is unknown.
    pub queries_answered: bool,
    /// Sources' columns as the warehouse has them (`kiln compile --introspect`): unique id ->
    /// (name, type in the warehouse's SQL).
    pub source_columns: &'a HashMap<String, Vec<(String, String)>>,
    /// Results kept from an earlier analysis of the same project (watch): a model whose SQL,
    /// config and inputs are as they were then is not planned again.
    pub memo: Option<&'a Memo>,
}

/// What one analysis leaves for the next of the same project: each model's result, by what
/// it was computed from. Results with findings are not kept (they are reported again).
#[derive(Default)]
pub struct Memo {
    #[cfg(feature = "datafusion")]
    models: std::sync::Mutex<HashMap<String, infer::Remembered>>,
}

/// What the SQL check of one node found, and its statements when it parsed.
pub type Checked = (Vec<Diagnostic>, Option<Vec<sqlparser::ast::Statement>>);

/// The SQL check of a compiled node, by unique id.
pub type CheckFn<'a> = dyn Fn(&str, &Compiled) -> Checked + Sync + 'a;

/// The columns of a relation, as analysis knows them.
#[derive(Clone, Debug)]
pub enum Columns {
    /// Every column, with its type (`complete`), or only those a YAML file declares.
    Known { columns: Vec<(String, String)>, complete: bool },
    /// Why they cannot be told.
    Unknown(String),
}

/// A column of another node one column reads, and how it derives from it (`passthrough`,
/// `rename`, `cast`, `expression`, `window`, `aggregate`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ColumnRead {
    pub node: String,
    pub column: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub how: Option<String>,
}

/// Column-level lineage of one node, one hop: what each of its columns reads from the
/// relations it reads (ephemeral models are seen through), and the columns it uses only to
/// filter or join.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeLineage {
    pub columns: indexmap::IndexMap<String, Vec<ColumnRead>>,
    pub filters: Vec<ColumnRead>,
    pub join_keys: Vec<ColumnRead>,
}

/// The result: what each analyzed node and its inputs return, and the problems found.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Unique id -> columns (models, seeds, snapshots, analyses, sources).
    pub columns: HashMap<String, Columns>,
    /// Unique id -> lineage, for each analyzed node whose SQL planned.
    pub lineage: std::collections::BTreeMap<String, NodeLineage>,
    pub diagnostics: Vec<Diagnostic>,
    /// Unique id -> what was found in that node (indexes into `diagnostics`).
    pub by_node: HashMap<String, Vec<usize>>,
}

impl Analysis {
    /// Records what was found in node `id`.
    pub(crate) fn found(&mut self, id: &str, found: impl IntoIterator<Item = Diagnostic>) {
        for d in found {
            self.by_node.entry(id.to_string()).or_default().push(self.diagnostics.len());
            self.diagnostics.push(d);
        }
    }

    /// What was found in node `id`.
    pub fn of(&self, id: &str) -> impl Iterator<Item = &Diagnostic> {
        self.by_node.get(id).map(Vec::as_slice).unwrap_or_default().iter().map(|i| &self.diagnostics[*i])
    }

    /// The errors static analysis is certain of in node `id`: its own (`E7xx`), not the SQL
    /// check's syntax errors, which a warehouse may read otherwise than sqlparser.
    pub fn certain_errors(&self, id: &str) -> impl Iterator<Item = &Diagnostic> {
        self.of(id).filter(|d| d.is_error() && d.code.as_str().starts_with("E7"))
    }
}

/// Whether analysis plans a node: models, analyses and snapshots, the user's SQL (tests are
/// checked when they run).
pub fn analyzed(node: &crate::parse::Node) -> bool {
    use crate::parse::ResourceType;
    matches!(node.resource_type, ResourceType::Model | ResourceType::Analysis | ResourceType::Snapshot)
}

/// Analyzes every compiled model, analysis and snapshot of `input`.
pub fn analyze(input: &Input) -> Analysis {
    if input.mode == Some(StaticAnalysis::Off) {
        // Nothing is planned; the SQL check still runs.
        let Some(check) = input.check else { return Analysis::default() };
        use rayon::prelude::*;
        let checked: Vec<(&String, Vec<Diagnostic>)> = input.compiled.par_iter().map(|(id, c)| (id, check(id, c).0)).collect();
        let mut analysis = Analysis::default();
        for (id, found) in checked {
            analysis.found(id, found);
        }
        return analysis;
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
