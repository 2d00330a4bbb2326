//! Planning without data, for static analysis: the output schema of a query over registered
//! (empty) relations, or why it does not plan, sorted into what analysis can be certain of.

use super::DataFusionEngine;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use std::sync::Arc;

/// Why a query does not plan.
#[derive(Clone, Debug, PartialEq)]
pub enum PlanProblem {
    /// A column no input of its scope has. `at` is its 1-based line and column in the SQL;
    /// `in_scope` the columns it could have named: (relation or alias, column).
    UnknownColumn { name: String, qualifier: Option<String>, in_scope: Vec<(Option<String>, String)>, at: Option<(usize, usize)> },
    /// An unqualified column more than one input has.
    Ambiguous { name: String, at: Option<(usize, usize)> },
    /// Anything else: a function or construct the planner lacks, a type it cannot coerce.
    Other(String),
}

impl DataFusionEngine {
    /// A planner over this session's relations, including those registered after it is made.
    /// Each thread makes its own: making one copies the session's state (its function
    /// registries), which costs more than planning a small query.
    pub fn planner(&self) -> Planner {
        Planner { state: self.ctx.state() }
    }
}

pub struct Planner {
    state: datafusion::execution::SessionState,
}

impl Planner {
    /// The columns and Arrow types `sql` returns, planned (not optimized, not run).
    pub fn plan_columns(&self, sql: &str) -> Result<SchemaRef, PlanProblem> {
        let statement = super::parse(&self.state, sql).map_err(|e| PlanProblem::Other(e.message))?;
        self.plan(statement)
    }

    /// [`Planner::plan_columns`] of a statement parsed in the session's dialect.
    pub fn plan_statement(&self, statement: &sqlparser::ast::Statement) -> Result<SchemaRef, PlanProblem> {
        super::check_select_width(statement).map_err(|e| PlanProblem::Other(e.message))?;
        self.plan(datafusion::sql::parser::Statement::Statement(Box::new(statement.clone())))
    }

    fn plan(&self, statement: datafusion::sql::parser::Statement) -> Result<SchemaRef, PlanProblem> {
        // Planning over registered in-memory relations reads no file: no runtime needed.
        match futures::executor::block_on(self.state.statement_to_plan(statement)) {
            Ok(plan) => Ok(Arc::new(plan.schema().as_arrow().clone())),
            Err(e) => Err(problem(&e)),
        }
    }
}

fn problem(e: &DataFusionError) -> PlanProblem {
    let at = e.diagnostic().and_then(|d| d.span).map(|s| (s.start.line as usize, s.start.column as usize)).filter(|(l, _)| *l > 0);
    match e.find_root() {
        DataFusionError::SchemaError(inner, _) => match inner.as_ref() {
            SchemaError::FieldNotFound { field, valid_fields } => PlanProblem::UnknownColumn {
                name: field.name.clone(),
                qualifier: field.relation.as_ref().map(|r| r.table().to_string()),
                in_scope: valid_fields.iter().map(|c| (c.relation.as_ref().map(|r| r.table().to_string()), c.name.clone())).collect(),
                at,
            },
            SchemaError::AmbiguousReference { field } => PlanProblem::Ambiguous { name: field.name.clone(), at },
            _ => PlanProblem::Other(e.to_string()),
        },
        _ => PlanProblem::Other(e.to_string()),
    }
}
