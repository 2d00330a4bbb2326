//! Values a planned query combines that PostgreSQL and BigQuery refuse to combine without a
//! cast, though DataFusion's planner casts them: text with a number, a date or a boolean; a
//! number with a date or a boolean; a date with a boolean. Compared (`=`, `<`, ...), in
//! arithmetic, in the branches of `coalesce`, `case` and `if`, and in the columns of `union`
//! branches. A string literal or `null` is never a conflict: the warehouse casts it.

use super::analysis::TypeConflict;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, Operator};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Text,
    Number,
    Temporal,
    Bool,
    Other,
}

fn class(t: &DataType) -> Class {
    match t {
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => Class::Text,
        t if t.is_numeric() => Class::Number,
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) | DataType::Time32(_) | DataType::Time64(_) => Class::Temporal,
        DataType::Boolean => Class::Bool,
        _ => Class::Other,
    }
}

/// Whether values of classes `a` and `b` cannot be combined without a cast; `arithmetic`:
/// by `+`/`-`/... (a date plus a number of days is fine).
fn clash(a: Class, b: Class, arithmetic: bool) -> bool {
    use Class::*;
    match (a, b) {
        (Other, _) | (_, Other) => false,
        (Temporal, Number) | (Number, Temporal) if arithmetic => false,
        (a, b) => a != b,
    }
}

/// Whether PostgreSQL and BigQuery refuse to combine values of these types without a cast.
pub fn clash_of(a: &DataType, b: &DataType, arithmetic: bool) -> bool {
    clash(class(a), class(b), arithmetic)
}

/// A value the warehouse types by its use: `null`, and in PostgreSQL a string literal.
fn untyped(e: &Expr, rules: Rules) -> bool {
    match e {
        Expr::Alias(a) => untyped(&a.expr, rules),
        Expr::Literal(v, _) => v.is_null() || (rules.string_literals_untyped && text_literal(e)),
        _ => false,
    }
}

fn text_literal(e: &Expr) -> bool {
    match e {
        Expr::Alias(a) => text_literal(&a.expr),
        Expr::Literal(v, _) => matches!(v, ScalarValue::Utf8(_) | ScalarValue::Utf8View(_) | ScalarValue::LargeUtf8(_)),
        _ => false,
    }
}

/// How the dialect types literals.
#[derive(Clone, Copy)]
pub struct Rules {
    /// PostgreSQL: a string literal takes the type it is used as. BigQuery: it is a STRING,
    /// cast only to dates and times.
    pub string_literals_untyped: bool,
}

pub fn conflicts(plan: &LogicalPlan, rules: Rules) -> Vec<TypeConflict> {
    let mut found = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Union(u) = node {
            union_conflicts(u, rules, &mut found);
        }
        // Expressions read the node's input (a join's conditions, its own columns).
        let schema = match node {
            LogicalPlan::Join(_) => node.schema(),
            _ => match node.inputs().first() {
                Some(input) => input.schema(),
                None => return Ok(TreeNodeRecursion::Continue),
            },
        };
        let _ = node.apply_expressions(|e| {
            e.apply(|x| {
                expr_conflicts(x, schema, rules, &mut found);
                Ok(TreeNodeRecursion::Continue)
            })
        });
        Ok(TreeNodeRecursion::Continue)
    });
    found.dedup();
    found
}

fn expr_conflicts(e: &Expr, schema: &DFSchema, rules: Rules, found: &mut Vec<TypeConflict>) {
    let untyped = |x: &Expr| untyped(x, rules);
    let typed = |x: &Expr| if untyped(x) { None } else { x.get_type(schema).ok() };
    // Located at `b` (the branch that brings another type), else at `a`; an operator at its
    // left operand, where the expression starts.
    let mut pair = |what: String, a: &Expr, b: &Expr, arithmetic: bool| {
        // A BigQuery string literal is cast to a date or a time.
        let literal_cast = |x: &Expr, other: &DataType| text_literal(x) && class(other) == Class::Temporal;
        if let (Some(ta), Some(tb)) = (typed(a), typed(b))
            && clash(class(&ta), class(&tb), arithmetic)
            && !literal_cast(a, &tb)
            && !literal_cast(b, &ta)
        {
            let (ta, tb) = (super::types::sql_name(&ta), super::types::sql_name(&tb));
            let (at, other, label) = match e {
                Expr::BinaryExpr(op) => (a, b, format!("{ta} {} {tb}", op.op)),
                _ => (b, a, format!("{tb} here")),
            };
            found.push(conflict(what, (ta, tb, label), at, other));
        }
    };
    match e {
        Expr::BinaryExpr(b) => {
            let arithmetic = matches!(b.op, Operator::Plus | Operator::Minus | Operator::Multiply | Operator::Divide | Operator::Modulo);
            let comparison = matches!(b.op, Operator::Eq | Operator::NotEq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq);
            if arithmetic || comparison {
                pair(format!("`{}`", b.op), &b.left, &b.right, arithmetic);
            }
        }
        Expr::ScalarFunction(f) if ["coalesce", "ifnull", "nvl", "greatest", "least", "if"].contains(&f.name()) => {
            let branches = if f.name() == "if" { f.args.get(1..).unwrap_or_default() } else { &f.args[..] };
            if let Some((first, rest)) = branches.iter().filter(|a| !untyped(a)).collect::<Vec<_>>().split_first() {
                for other in rest {
                    pair(format!("`{}`", f.name()), first, other, false);
                }
            }
        }
        Expr::Case(c) => {
            let results: Vec<&Expr> =
                c.when_then_expr.iter().map(|(_, t)| t.as_ref()).chain(c.else_expr.as_deref()).filter(|r| !untyped(r)).collect();
            if let Some((first, rest)) = results.split_first() {
                for other in rest {
                    pair("the branches of `case`".into(), first, other, false);
                }
            }
            if let Some(subject) = &c.expr {
                for (when, _) in &c.when_then_expr {
                    pair("`case ... when`".into(), subject, when, false);
                }
            }
        }
        _ => {}
    }
}

/// Each column of a `union`'s branches against the first branch that types it.
fn union_conflicts(u: &datafusion::logical_expr::Union, rules: Rules, found: &mut Vec<TypeConflict>) {
    let width = u.schema.fields().len();
    for i in 0..width {
        let mut first: Option<(DataType, Option<&Expr>)> = None;
        for input in &u.inputs {
            let expr = output_expr(input, i);
            if expr.is_some_and(|e| untyped(e, rules) || text_literal(e)) || input.schema().fields().len() != width {
                continue;
            }
            let t = input.schema().field(i).data_type().clone();
            match &first {
                None => first = Some((t, expr)),
                Some((ft, _)) if clash(class(ft), class(&t), false) => {
                    let at = expr.and_then(first_column);
                    let column = at.as_ref().map(|(c, _)| c.clone()).or_else(|| Some(input.schema().field(i).name().clone()));
                    let right = super::types::sql_name(&t);
                    found.push(TypeConflict {
                        what: format!("column {} of `union`", i + 1),
                        left: super::types::sql_name(ft),
                        label: format!("{right} here"),
                        right,
                        column,
                        at: at.and_then(|(_, at)| at),
                    });
                }
                Some(_) => {}
            }
        }
    }
}

/// The expression of output column `i` of a branch (through aliases and filters).
fn output_expr(plan: &LogicalPlan, i: usize) -> Option<&Expr> {
    match plan {
        LogicalPlan::Projection(p) => p.expr.get(i),
        LogicalPlan::SubqueryAlias(_) | LogicalPlan::Filter(_) | LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => {
            output_expr(plan.inputs().first()?, i)
        }
        _ => None,
    }
}

/// The first column `e` reads, and where it is in the SQL.
fn first_column(e: &Expr) -> Option<(String, Option<(usize, usize)>)> {
    let column = e.column_refs().into_iter().min_by_key(|c| c.spans().first().map(|s| (s.start.line, s.start.column)))?;
    let at = column.spans().first().map(|s| (s.start.line as usize, s.start.column as usize)).filter(|(l, _)| *l > 0);
    Some((column.name.clone(), at))
}

/// A conflict (types and label) located at the first column of `located` (else of `other`).
fn conflict(what: String, (left, right, label): (String, String, String), located: &Expr, other: &Expr) -> TypeConflict {
    let at = first_column(located).or_else(|| first_column(other));
    TypeConflict { what, left, right, label, column: at.as_ref().map(|(c, _)| c.clone()), at: at.and_then(|(_, at)| at) }
}
