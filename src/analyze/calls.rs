//! Function calls against the target dialect's catalog ([`crate::adapter::functions`]): a
//! function the dialect lacks whose name is a misspelling of one it has, and a call with a
//! number of arguments no overload takes. Also the form a statement is planned in: BigQuery's
//! date-part keywords (`date_diff(a, b, day)`) become strings, `safe.f(...)` becomes `f(...)`.

use crate::adapter::functions::{Arg, Catalog};
use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, ObjectNamePart, Spanned, Statement, Value,
    visit_expressions, visit_expressions_mut,
};
use std::collections::HashSet;
use std::ops::ControlFlow;

/// What is wrong with one call: its function's name, where the name is (1-based line and
/// column in the SQL), and the problem.
#[derive(Debug, PartialEq)]
pub struct CallProblem {
    pub name: String,
    pub at: (usize, usize),
    pub problem: Problem,
}

#[derive(Debug, PartialEq)]
pub enum Problem {
    /// Not a function of the dialect; the dialect's names it is a misspelling of.
    Misspelt(Vec<String>),
    /// A function of the dialect, called with `given` arguments; it takes `takes`.
    ArgumentCount { given: usize, takes: String },
}

/// The problems of the calls in `statements`, each call once. `created` are the functions the
/// project creates itself (lower case): never reported as unknown.
pub fn check(statements: &[Statement], catalog: &Catalog, created: &HashSet<String>) -> Vec<CallProblem> {
    let mut found = Vec::new();
    for statement in statements {
        let _ = visit_expressions(statement, |e| {
            if let Expr::Function(f) = e
                && let Some(problem) = call_problem(f, catalog, created)
            {
                found.push(problem);
            }
            ControlFlow::<()>::Continue(())
        });
    }
    found
}

fn call_problem(f: &Function, catalog: &Catalog, created: &HashSet<String>) -> Option<CallProblem> {
    let name = unqualified(&f.name)?.to_ascii_lowercase();
    let given = match &f.args {
        FunctionArguments::None => return None,
        FunctionArguments::Subquery(_) => 1,
        FunctionArguments::List(list) => list.args.len(),
    };
    let at = f.name.span().start;
    let at = (at.line as usize, at.column as usize);
    let problem = match catalog.get(&name) {
        // Ordered-set and hypothetical-set aggregates take their sort key apart.
        Some(function) if !function.takes(given) && f.within_group.is_empty() => {
            Problem::ArgumentCount { given, takes: function.arities() }
        }
        Some(_) => return None,
        None if catalog.exists(&name) || created.contains(&name) => return None,
        None => {
            let close = misspelt(&name, catalog);
            if close.is_empty() {
                return None;
            }
            Problem::Misspelt(close)
        }
    };
    Some(CallProblem { name, at, problem })
}

/// The one-part name of a call (`None` for `schema.f`, a UDF of a dataset or `safe.f`).
fn unqualified(name: &ObjectName) -> Option<&str> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] => Some(ident.value.as_str()),
        _ => None,
    }
}

fn misspelt(name: &str, catalog: &Catalog) -> Vec<String> {
    misspellings(name, catalog.names())
}

/// The `candidates` within a small edit distance of `name` (edits and swaps of neighbours: one
/// for names of up to 5 characters, two beyond): almost certainly what was meant.
pub fn misspellings<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let limit = if name.chars().count() <= 5 { 1 } else { 2 };
    let mut close: Vec<(usize, &str)> =
        candidates.into_iter().map(|c| (strsim::osa_distance(name, c), c)).filter(|(d, _)| *d > 0 && *d <= limit).collect();
    close.sort();
    close.dedup();
    close.into_iter().take(3).map(|(_, c)| c.to_string()).collect()
}

/// The objects `text` creates (`create [or replace] [temp|temporary|...] <kind> [if not
/// exists] [schema.]name`): (kind, name), lower case, for `function`, `table` and `view`.
pub fn created(text: &str) -> Vec<(&'static str, String)> {
    // Most files create nothing: skip them without lowering their text.
    if !text.as_bytes().windows(6).any(|w| w.eq_ignore_ascii_case(b"create")) {
        return Vec::new();
    }
    let lower = text.to_ascii_lowercase();
    let words: Vec<&str> = lower.split(|c: char| c.is_whitespace() || c == '(').filter(|w| !w.is_empty()).collect();
    let mut found = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let Some(kind) = ["function", "table", "view"].into_iter().find(|k| k == w) else { continue };
        if !words[..i].iter().rev().take(4).any(|w| *w == "create") {
            continue;
        }
        let mut name = words.get(i + 1).copied().unwrap_or("");
        if name == "if" {
            name = words.get(i + 4).copied().unwrap_or(""); // `if not exists name`
        }
        let name = name.rsplit('.').next().unwrap_or("").trim_matches(['"', '`']);
        if !name.is_empty() {
            found.push((kind, name.to_string()));
        }
    }
    found
}

/// `statement` as it is planned: date-part keywords as strings, `safe.` dropped.
pub fn planned_form(statement: &mut Statement, catalog: &Catalog) {
    let _ = visit_expressions_mut(statement, |e| {
        if let Expr::Function(f) = e {
            if let [ObjectNamePart::Identifier(safe), ObjectNamePart::Identifier(name)] = f.name.0.as_slice()
                && safe.value.eq_ignore_ascii_case("safe")
            {
                f.name = ObjectName(vec![ObjectNamePart::Identifier(name.clone())]);
            }
            quote_parts(f, catalog);
        }
        ControlFlow::<()>::Continue(())
    });
}

fn quote_parts(f: &mut Function, catalog: &Catalog) {
    let Some(function) = unqualified(&f.name).and_then(|n| catalog.get(n)) else { return };
    let FunctionArguments::List(list) = &mut f.args else { return };
    let n = list.args.len();
    for (i, arg) in list.args.iter_mut().enumerate() {
        let is_part = function.overloads.iter().any(|o| o.takes(n) && o.arg(i) == Some(Arg::Part));
        if let (true, FunctionArg::Unnamed(FunctionArgExpr::Expr(e))) = (is_part, arg) {
            let part = match e {
                Expr::Identifier(Ident { value, .. }) => value.clone(),
                // `week(monday)`
                Expr::Function(call) => call.to_string(),
                _ => continue,
            };
            *e = Expr::value(Value::SingleQuotedString(part.to_ascii_lowercase()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::SqlDialect;

    fn parse(dialect: SqlDialect, sql: &str) -> Vec<Statement> {
        sqlparser::parser::Parser::parse_sql(dialect.sqlparser().as_ref(), sql).unwrap()
    }

    #[test]
    fn finds_misspelt_functions_and_argument_counts() {
        let pg = Catalog::of(SqlDialect::Postgres).unwrap();
        let sql =
            "select cuont(*), array_length(tags), round(x, 2), my_udf(x), st_area(g), public.f(x, y, z),\n  stirng_agg(a, ',')\nfrom t";
        let found = check(&parse(SqlDialect::Postgres, sql), pg, &HashSet::new());
        let names: Vec<(&str, (usize, usize))> = found.iter().map(|p| (p.name.as_str(), p.at)).collect();
        assert_eq!(names, [("cuont", (1, 8)), ("array_length", (1, 18)), ("stirng_agg", (2, 3))]);
        assert_eq!(found[0].problem, Problem::Misspelt(vec!["count".into()]));
        assert_eq!(found[1].problem, Problem::ArgumentCount { given: 1, takes: "2".into() });
        let created: HashSet<String> = ["cuont".to_string()].into();
        assert_eq!(check(&parse(SqlDialect::Postgres, "select cuont(*) from t"), pg, &created), []);
    }

    #[test]
    fn finds_created_functions() {
        let found = created("create or replace temp function Cuont(x int64) as (x);\nCREATE FUNCTION if not exists util.f_two (");
        assert_eq!(found, [("function", "cuont".to_string()), ("function", "f_two".to_string())]);
        let found = created("create table if not exists audit.run_log (id int); create temp view v as select 1; select 1 as function_log");
        assert_eq!(found, [("table", "run_log".to_string()), ("view", "v".to_string())]);
        assert_eq!(created("select * from t"), []);
    }

    #[test]
    fn plans_date_parts_as_strings() {
        let bq = Catalog::of(SqlDialect::BigQuery).unwrap();
        let mut statements =
            parse(SqlDialect::BigQuery, "select date_diff(a, b, DAY), date_trunc(a, week(monday)), safe.parse_date('%F', s) from t");
        planned_form(&mut statements[0], bq);
        assert_eq!(statements[0].to_string(), "SELECT date_diff(a, b, 'day'), date_trunc(a, 'week(monday)'), parse_date('%F', s) FROM t");
    }
}
