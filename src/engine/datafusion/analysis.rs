//! Planning without data, for static analysis: the output schema of a query over registered
//! (empty) relations, or why it does not plan, sorted into what analysis can be certain of.

use super::DataFusionEngine;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::SchemaError;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, LogicalPlan};
use std::sync::Arc;

pub use super::type_check::Rules as TypeRules;

/// Why a query does not plan.
#[derive(Clone, Debug, PartialEq)]
pub enum PlanProblem {
    /// A column no input of its scope has. `at` is its 1-based line and column in the SQL;
    /// `in_scope` the columns it could have named: (relation or alias, column).
    UnknownColumn { name: String, qualifier: Option<String>, in_scope: Vec<(Option<String>, String)>, at: Option<(usize, usize)> },
    /// An unqualified column more than one input has.
    Ambiguous { name: String, at: Option<(usize, usize)> },
    /// A column selected that is neither grouped nor aggregated: its name, its relation, and
    /// where it is.
    NotGrouped { column: String, relation: Option<String>, at: Option<(usize, usize)> },
    /// A function no signature of which takes the number of arguments given.
    Arguments { function: String, takes: Vec<usize>, given: usize },
    /// Values the planner cannot combine (`text + integer`); `clash`: PostgreSQL and BigQuery
    /// refuse them too (see `type_check`).
    Types { conflict: TypeConflict, clash: bool },
    /// A relation that is neither a CTE nor registered, as the SQL names it (normalized).
    UnknownRelation { name: String, at: Option<(usize, usize)> },
    /// Anything else: a function or construct the planner lacks.
    Other(String),
}

/// Values a query combines whose types the target's SQL does not combine without a cast.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeConflict {
    /// What combines them: `=`, `+`, `coalesce`, `case`, `union`.
    pub what: String,
    pub left: String,
    pub right: String,
    /// What the label under the place says.
    pub label: String,
    /// A column of the expression that brings the second type, and where it is (1-based).
    pub column: Option<String>,
    pub at: Option<(usize, usize)>,
}

/// A planned query: its columns, its lineage, and its type conflicts (when asked for).
pub struct Planned {
    pub schema: SchemaRef,
    pub lineage: Lineage,
    pub conflicts: Vec<TypeConflict>,
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
        self.logical(sql, None).map(|plan| Arc::new(plan.schema().as_arrow().clone()))
    }

    /// [`Planner::plan_columns`], with the query's column-level lineage and, with
    /// `types`, the values it combines that a warehouse refusing to mix text with
    /// numbers, dates or booleans would reject. `statement` is `sql` already parsed in the
    /// session's dialect, when there is one.
    pub fn plan_query(
        &self,
        sql: &str,
        statement: Option<sqlparser::ast::Statement>,
        types: Option<TypeRules>,
    ) -> Result<Planned, PlanProblem> {
        let plan = self.logical(sql, statement)?;
        let conflicts = types.map(|rules| super::type_check::conflicts(&plan, rules)).unwrap_or_default();
        Ok(Planned { schema: Arc::new(plan.schema().as_arrow().clone()), lineage: lineage(&plan), conflicts })
    }

    fn logical(&self, sql: &str, statement: Option<sqlparser::ast::Statement>) -> Result<LogicalPlan, PlanProblem> {
        let statement = match statement {
            Some(s) => {
                super::check_select_width(&s).map_err(|e| PlanProblem::Other(e.message))?;
                datafusion::sql::parser::Statement::Statement(Box::new(s))
            }
            None => super::parse(&self.state, sql).map_err(|e| PlanProblem::Other(e.message))?,
        };
        // Planning over registered in-memory relations reads no file: no runtime needed.
        futures::executor::block_on(self.state.statement_to_plan(statement)).map_err(|e| problem(&e))
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
        _ => {
            let message = e.to_string();
            not_grouped(&message, at)
                .or_else(|| arguments(&message))
                .or_else(|| types(&message, at))
                .or_else(|| unknown_relation(&message, at))
                .unwrap_or(PlanProblem::Other(message))
        }
    }
}

/// `table 'schema.t' not found`.
fn unknown_relation(message: &str, at: Option<(usize, usize)>) -> Option<PlanProblem> {
    let (_, rest) = message.split_once("table '")?;
    let (name, rest) = rest.split_once('\'')?;
    rest.starts_with(" not found").then(|| PlanProblem::UnknownRelation { name: name.to_string(), at })
}

/// `column "db.schema.t.c" must appear in the GROUP BY clause`.
fn not_grouped(message: &str, at: Option<(usize, usize)>) -> Option<PlanProblem> {
    let (_, rest) = message.split_once("column \"")?;
    let (qualified, rest) = rest.split_once('"')?;
    if !rest.trim_start().starts_with("must appear in the GROUP BY clause") {
        return None;
    }
    let mut parts = qualified.rsplitn(2, '.');
    let column = parts.next()?.to_string();
    let relation = parts.next().map(|r| r.rsplit('.').next().unwrap_or(r).to_string());
    Some(PlanProblem::NotGrouped { column, relation, at })
}

/// `Cannot coerce arithmetic expression Utf8 + Int64 to valid types`, and DuckDB's `Cannot
/// compare values of type DATE and type VARCHAR` (see `compat`).
fn types(message: &str, at: Option<(usize, usize)>) -> Option<PlanProblem> {
    let mut clash = false;
    let (what, left, right) = if let Some((_, rest)) = message.split_once("Cannot coerce arithmetic expression ") {
        let mut words = rest.split_whitespace();
        let (left, op, right) = (words.next()?, words.next()?, words.next()?);
        let (left, right) = (left.parse::<DataType>().ok()?, right.parse::<DataType>().ok()?);
        clash = super::type_check::clash_of(&left, &right, true);
        (op.to_string(), super::types::sql_name(&left), super::types::sql_name(&right))
    } else {
        let (_, rest) = message.split_once("Cannot compare values of type ")?;
        let (left, rest) = rest.split_once(" and type ")?;
        let right: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        ("comparison".to_string(), left.to_string(), right)
    };
    let label = format!("{left} {} {right}", if what == "comparison" { "compared with" } else { &what });
    let what = if what == "comparison" { "a comparison".to_string() } else { format!("`{what}`") };
    Some(PlanProblem::Types { conflict: TypeConflict { what, left, right, label, column: None, at }, clash })
}

/// `Function 'f' expects 3 arguments but received 2`, once or for each signature tried.
fn arguments(message: &str) -> Option<PlanProblem> {
    let mut function = None;
    let (mut takes, mut given) = (Vec::new(), None);
    let count = |rest: &str| -> Option<(String, usize, usize)> {
        let (name, rest) = rest.split_once('\'')?;
        let (n, rest) = rest.strip_prefix(" expects ")?.split_once(" arguments but received ")?;
        let received: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Some((name.to_string(), n.parse().ok()?, received.parse().ok()?))
    };
    for (name, n, received) in message.match_indices("Function '").filter_map(|(i, _)| count(&message[i + 10..])) {
        function = Some(name);
        takes.push(n);
        given = Some(received);
    }
    // Every signature tried must have failed on the count, not on a type.
    if message.contains("failed to match any signature") && message.matches("Error during planning").count() > takes.len() + 1 {
        return None;
    }
    takes.sort_unstable();
    takes.dedup();
    Some(PlanProblem::Arguments { function: function?, takes, given: given? })
}

/// How an output column derives from a column it reads, from the least change to the most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Derivation {
    Passthrough,
    Rename,
    Cast,
    Expression,
    Window,
    Aggregate,
}

impl Derivation {
    pub fn as_str(self) -> &'static str {
        match self {
            Derivation::Passthrough => "passthrough",
            Derivation::Rename => "rename",
            Derivation::Cast => "cast",
            Derivation::Expression => "expression",
            Derivation::Window => "window",
            Derivation::Aggregate => "aggregate",
        }
    }
}

/// A column of a relation the query reads: (relation as `catalog.schema.table` parts, column).
pub type Read = ((String, String, String), String);

/// Column-level lineage of one query: for each output column (in order), the columns of the
/// relations it reads and how it derives from each; and the columns used only to filter or
/// join (`where`, `having`, join conditions).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lineage {
    pub columns: Vec<(String, Vec<(Read, Derivation)>)>,
    pub filters: Vec<Read>,
    pub join_keys: Vec<Read>,
}

fn lineage(plan: &LogicalPlan) -> Lineage {
    let mut out = Lineage::default();
    for (i, field) in plan.schema().fields().iter().enumerate() {
        let mut reads = std::collections::BTreeMap::new();
        trace(plan, i, Derivation::Passthrough, &mut reads);
        let reads = reads
            .into_iter()
            .map(|(read, how): (Read, Derivation)| {
                let renamed = how == Derivation::Passthrough && !read.1.eq_ignore_ascii_case(field.name());
                (read, if renamed { Derivation::Rename } else { how })
            })
            .collect();
        out.columns.push((field.name().clone(), reads));
    }
    let mut filters = std::collections::BTreeSet::new();
    let mut join_keys = std::collections::BTreeSet::new();
    let _ = plan.apply(|node| {
        let (exprs, into): (Vec<&Expr>, &mut std::collections::BTreeSet<Read>) = match node {
            LogicalPlan::Filter(f) => (vec![&f.predicate], &mut filters),
            LogicalPlan::Join(j) => (j.on.iter().flat_map(|(l, r)| [l, r]).chain(j.filter.as_ref()).collect(), &mut join_keys),
            _ => return Ok(TreeNodeRecursion::Continue),
        };
        for e in exprs {
            let mut reads = std::collections::BTreeMap::new();
            for input in node.inputs() {
                expr_reads(e, input, Derivation::Passthrough, &mut reads);
            }
            into.extend(reads.into_keys());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out.filters = filters.into_iter().collect();
    out.join_keys = join_keys.into_iter().collect();
    out
}

/// What output column `i` of `plan` reads, with the most change `how` has seen on the way.
fn trace(plan: &LogicalPlan, i: usize, how: Derivation, out: &mut std::collections::BTreeMap<Read, Derivation>) {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let t = &scan.table_name;
            let relation = (t.catalog().unwrap_or_default().to_string(), t.schema().unwrap_or_default().to_string(), t.table().to_string());
            let read = (relation, scan.projected_schema.field(i).name().clone());
            let entry = out.entry(read).or_insert(how);
            *entry = (*entry).max(how);
        }
        LogicalPlan::Projection(p) => {
            if let Some(e) = p.expr.get(i) {
                expr_reads(e, &p.input, how, out);
            }
        }
        LogicalPlan::Aggregate(a) => {
            let groups = a.group_expr.len();
            match i.checked_sub(groups) {
                None => expr_reads(&a.group_expr[i], &a.input, how, out),
                Some(j) => {
                    if let Some(e) = a.aggr_expr.get(j) {
                        expr_reads(e, &a.input, how.max(Derivation::Aggregate), out);
                    }
                }
            }
        }
        LogicalPlan::Window(w) => {
            let width = w.input.schema().fields().len();
            match i.checked_sub(width) {
                None => trace(&w.input, i, how, out),
                Some(j) => {
                    if let Some(e) = w.window_expr.get(j) {
                        expr_reads(e, &w.input, how.max(Derivation::Window), out);
                    }
                }
            }
        }
        LogicalPlan::Union(u) => {
            for input in &u.inputs {
                trace(input, i, how, out);
            }
        }
        LogicalPlan::Join(_) => {
            // The output column is one of an input's, found by qualifier and name.
            let (qualifier, field) = plan.schema().qualified_field(i);
            let column = datafusion::common::Column::new(qualifier.cloned(), field.name());
            for input in plan.inputs() {
                if let Some(j) = input.schema().maybe_index_of_column(&column) {
                    trace(input, j, how, out);
                    break;
                }
            }
        }
        // Same columns as their input, in the same places.
        LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(_)) => {
            if let Some(input) = plan.inputs().first() {
                trace(input, i, how, out);
            }
        }
        _ => {}
    }
}

/// What expression `e` over `input` reads: a column (through aliases) passes `how` on, a cast
/// makes it at least a cast, anything else an expression.
fn expr_reads(e: &Expr, input: &LogicalPlan, how: Derivation, out: &mut std::collections::BTreeMap<Read, Derivation>) {
    let mut inner = e;
    while let Expr::Alias(a) = inner {
        inner = &a.expr;
    }
    let how = match inner {
        Expr::Column(_) => how,
        Expr::Cast(c) if matches!(*c.expr, Expr::Column(_)) => how.max(Derivation::Cast),
        Expr::TryCast(c) if matches!(*c.expr, Expr::Column(_)) => how.max(Derivation::Cast),
        _ => how.max(Derivation::Expression),
    };
    for column in inner.column_refs() {
        if let Some(j) = input.schema().maybe_index_of_column(column) {
            trace(input, j, how, out);
        }
    }
}
