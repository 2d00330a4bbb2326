//! Syntax check of compiled SQL with sqlparser, in the target's dialect. An error points at
//! the compiled SQL (line, column) and names the file it came from.

use crate::diagnostics::{Code, Diagnostic, Label, SourceText};
use crate::project::profiles::Target;
use sqlparser::ast::{Expr, Spanned, Statement, visit_expressions};
use sqlparser::dialect::Dialect;
use sqlparser::parser::Parser;
use std::collections::BTreeSet;
use std::ops::ControlFlow;

pub fn dialect_for(target: &Target) -> Box<dyn Dialect + Send + Sync> {
    target.adapter.dialect.sqlparser()
}

/// What a checked SQL text is, for its diagnostic: the compiled file, the model's file and
/// "model `name`".
pub struct Origin {
    pub compiled_path: String,
    pub model_file: String,
    pub what: String,
}

/// Checks `sql`; on error returns a diagnostic pointing into the compiled file. `origin` is
/// only called when there is an error.
pub fn check(dialect: &dyn Dialect, sql: &str, origin: impl FnOnce() -> Origin) -> Result<Vec<Statement>, Diagnostic> {
    if sql.trim().is_empty() {
        let Origin { model_file, what, .. } = origin();
        return Err(Diagnostic::error(Code::EmptyModel, format!("{what} compiles to empty SQL"))
            .with_file(model_file)
            .with_help("a model must contain a select statement; to switch it off use `{{ config(enabled=false) }}`"));
    }
    let e = match Parser::parse_sql(dialect, sql) {
        Ok(statements) => return Ok(statements),
        Err(e) => e,
    };
    let Origin { compiled_path, model_file, what } = origin();
    let text = e.to_string();
    // sqlparser gives no position for errors at the end of input: point after the last token.
    let (line, col) = position(&text).unwrap_or_else(|| {
        let trimmed = sql.trim_end();
        crate::diagnostics::line_col(trimmed, trimmed.len())
    });
    let message = text.trim_start_matches("sql parser error: ");
    let message = message.split(" at Line: ").next().unwrap_or(message).to_string();
    let token_len = message.rsplit("found: ").next().filter(|_| message.contains("found: ")).map_or(1, |t| t.chars().count().max(1));
    Err(Diagnostic::error(Code::SqlSyntax, format!("SQL syntax error in {what}: {message}"))
        .with_label(Label::new(SourceText::new(compiled_path, sql.to_string()), line, col, token_len, "here"))
        .with_note(format!("compiled from {model_file}"))
        .with_help("fix the SQL in the model (the snippet above is the compiled SQL, after Jinja)"))
}

/// Names the SQL planner itself handles (not in any function registry).
const PLANNER_FUNCTIONS: &[&str] = &[
    "unnest",
    "grouping",
    "struct",
    "named_struct",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "current_user",
    "session_user",
    "user",
    "any",
    "some",
    "all",
    "row",
];

/// The functions `statements` call that `known` (lower-case names) lacks, each once, with the
/// 1-based line and column of its first call.
pub fn unknown_functions(statements: &[Statement], known: &BTreeSet<String>) -> Vec<(String, usize, usize)> {
    let mut found: Vec<(String, usize, usize)> = Vec::new();
    for statement in statements {
        let _ = visit_expressions(statement, |e| {
            if let Expr::Function(f) = e
                && let [part] = f.name.0.as_slice()
                && let Some(name) = part.as_ident().map(|i| i.value.to_lowercase())
                && !known.contains(&name)
                && !PLANNER_FUNCTIONS.contains(&name.as_str())
                && !found.iter().any(|(n, _, _)| *n == name)
            {
                let at = f.name.span().start;
                found.push((name, at.line as usize, at.column as usize));
            }
            ControlFlow::<()>::Continue(())
        });
    }
    found
}

/// Extracts "Line: L, Column: C" from a sqlparser error.
fn position(text: &str) -> Option<(usize, usize)> {
    let i = text.rfind("Line: ")?;
    let rest = &text[i + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::{DuckDbDialect, GenericDialect};

    fn origin(compiled_path: &str, model_file: &str, what: &str) -> impl FnOnce() -> Origin {
        || Origin { compiled_path: compiled_path.into(), model_file: model_file.into(), what: what.into() }
    }

    #[test]
    fn reports_position() {
        let err =
            check(&GenericDialect {}, "select a\n  from t where", origin("target/compiled/p/models/m.sql", "models/m.sql", "model `m`"))
                .unwrap_err();
        assert_eq!(err.code, Code::SqlSyntax);
        assert_eq!(err.labels[0].line, 2);
        let err = check(&GenericDialect {}, "select a,\n  b c d\nfrom t", origin("c", "m", "m")).unwrap_err();
        assert_eq!((err.labels[0].line, err.labels[0].col), (2, 7), "{err}");
        assert!(check(&GenericDialect {}, "select 1 as x from t", origin("c", "m", "m")).is_ok());
        let err = check(&GenericDialect {}, "  \n", origin("c", "models/m.sql", "model `m`")).unwrap_err();
        assert_eq!(err.code, Code::EmptyModel);
    }

    #[test]
    fn finds_functions_the_engine_lacks() {
        let statements = check(
            &DuckDbDialect {},
            "select list_transform(xs, x -> x + 1), upper(a),\n  epoch_ms(t), upper(b) from t",
            origin("c", "m", "m"),
        )
        .unwrap();
        let known: BTreeSet<String> = ["upper".to_string()].into();
        assert_eq!(unknown_functions(&statements, &known), vec![("list_transform".into(), 1, 8), ("epoch_ms".into(), 2, 3)]);
    }
}
