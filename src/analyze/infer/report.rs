//! What analysis reports: each problem planning found, or a check found, as a diagnostic
//! pointed at the model's source line, when it is certain (or in strict mode); else why the
//! model is unknown.

use super::{State, calls, position, what};
use crate::diagnostics::{Code, Diagnostic, Label, SourceText, did_you_mean};
use crate::engine::RelationName;
use crate::engine::datafusion::analysis::{PlanProblem, TypeConflict};
use crate::parse::Node;
use crate::project::typed::StaticAnalysis;
use datafusion::arrow::datatypes::SchemaRef;

/// A finding: why the model is unknown, and the diagnostic; `Err(why)` when there is none.
type Finding = Result<(String, Diagnostic), String>;

impl State<'_> {
    /// What `name` (its last part) may have meant: the CTEs of `sql` and the relations of the
    /// project (as `ref` and `source` calls) of that name or a misspelling of it; and whether
    /// it is a misspelling of one.
    fn close_relations(&self, name: &str, sql: &str) -> (Vec<String>, bool) {
        let last = name.rsplit('.').next().unwrap_or(name);
        let ctes = cte_names(sql, self.input.target.adapter.dialect);
        let mut close = calls::misspellings(last, ctes.iter().map(String::as_str));
        let mut misspelt = !close.is_empty();
        let mut project: Vec<(String, &String)> = self.relations.iter().map(|((_, _, n), id)| (n.to_ascii_lowercase(), id)).collect();
        project.sort();
        for (n, id) in project {
            let typo = !calls::misspellings(last, [n.as_str()]).is_empty();
            if !typo && n != last {
                continue;
            }
            misspelt |= typo;
            close.push(match self.input.manifest.sources.get(id) {
                Some(src) => format!("{{{{ source('{}', '{}') }}}}", src.source_name, src.name),
                None => format!("{{{{ ref('{}') }}}}", self.input.manifest.nodes.get(id).map_or(n.as_str(), |x| x.name.as_str())),
            });
        }
        close.truncate(3);
        (close, misspelt)
    }

    /// Whether relation `name` (not found by the planner) is certainly not there: unqualified
    /// and a misspelt CTE or project relation; unqualified on BigQuery (which needs a
    /// dataset); on the embedded engine, not in the local warehouse nor created by the project.
    fn relation_certainly_missing(&self, name: &str, misspelt: bool) -> bool {
        let parts: Vec<&str> = name.split('.').collect();
        let last = parts.last().copied().unwrap_or(name);
        if parts.iter().any(|p| ["information_schema", "pg_catalog"].contains(&p.to_ascii_lowercase().as_str())) {
            return false; // the catalog's own views
        }
        if last.starts_with("__dbt__cte__") {
            return false; // an ephemeral model whose CTE kiln did not inline
        }
        let target = self.input.target;
        let embedded = target.engine() == crate::adapter::EngineKind::DataFusion;
        let local_missing = || {
            let (database, schema) = match parts.as_slice() {
                [d, s, _] => (d.to_string(), s.to_string()),
                [s, _] => (target.database.clone(), s.to_string()),
                _ => (target.database.clone(), target.schema.clone()),
            };
            let r = RelationName { database, schema, name: last.to_string() };
            !self.created_relations.contains(&last.to_ascii_lowercase()) && self.input.warehouse.is_some_and(|exists| !exists(&r))
        };
        (parts.len() == 1 && misspelt)
            || (parts.len() == 1 && target.adapter.dialect == crate::adapter::SqlDialect::BigQuery)
            || (embedded && local_missing())
    }

    /// The diagnostic of values combined that the target's SQL does not combine.
    pub(super) fn type_conflict(&self, node: &Node, c: &TypeConflict, sql: &str) -> Diagnostic {
        let target = self.input.target;
        let warehouse =
            if target.engine() == crate::adapter::EngineKind::DataFusion { "the embedded engine" } else { target.adapter.display };
        let d = Diagnostic::error(
            Code::TypeMismatch,
            format!("{} combines {} with {} in {}, which {warehouse} does not do without a cast", what(node), c.left, c.right, c.what),
        )
        .with_help(format!("cast one side to the other's type (`cast(x as {})`)", c.left.to_lowercase()));
        let token = match (&c.column, c.at) {
            (Some(column), _) => column.clone(),
            (None, Some((line, col))) => position::word_at(sql, line, col),
            (None, None) => String::new(),
        };
        match c.at {
            None if token.is_empty() => d.with_file(self.display_path(node)),
            _ => self.located(d, node, c.at, &token, sql, c.label.clone()),
        }
    }

    pub(super) fn unit_test_column(&self, test: &Node, input: &str, column: &str, schema: &SchemaRef) -> Diagnostic {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let (message, label) = if input == "expect" {
            (format!("unit test `{}` expects a column `{column}`, which its model does not return", test.name), "not in the model's output")
        } else {
            (format!("unit test `{}` gives `{input}` a column `{column}`, which it does not have", test.name), "not a column of this input")
        };
        let help = match did_you_mean(column, names.iter().copied()) {
            Some(s) => format!("{s} (the columns are {})", names.join(", ")),
            None => format!("the columns are {}", names.join(", ")),
        };
        let d = Diagnostic::error(Code::UnitTestColumn, message).with_help(help);
        let Some(file) = test.file.map(|f| &self.input.project.files[f]) else { return d.with_file(test.original_file_path.clone()) };
        // The column's first use after the test's own line.
        let after: String = file.text.lines().skip(test.line.saturating_sub(1)).collect::<Vec<_>>().join("\n");
        match position::whole_word(&after, column) {
            Some((l, c)) => d.with_label(Label::new(file.source(), l + test.line.saturating_sub(1), c, column.chars().count(), label)),
            None => d.with_file(file.display_path.clone()),
        }
    }

    /// The diagnostic of a call the dialect's catalog rejects.
    pub(super) fn call_problem(&self, node: &Node, p: calls::CallProblem, sql: &str) -> Diagnostic {
        let dialect = &self.input.target.adapter.display;
        let (d, label) = match &p.problem {
            calls::Problem::Misspelt(close) => {
                let list: Vec<String> = close.iter().map(|c| format!("`{c}`")).collect();
                let d = Diagnostic::error(Code::UnknownDialectFunction, format!("{dialect} has no function `{}`", p.name))
                    .with_help(format!("did you mean {}?", list.join(", ")))
                    .with_note(format!(
                        "functions the project creates (`create function`) are known; a function of your own created elsewhere is called by its qualified name (`schema.{}`)",
                        p.name
                    ));
                (d, "not a function of this SQL dialect".to_string())
            }
            calls::Problem::ArgumentCount { given, takes } => {
                let d =
                    Diagnostic::error(Code::ArgumentCount, format!("`{}` takes {} in {dialect}, not {given}", p.name, arguments(takes)))
                        .with_help(format!("call `{}` with {}", p.name, arguments(takes)));
                (d, format!("called with {given}"))
            }
        };
        self.located(d, node, Some(p.at), &p.name, sql, label)
    }

    /// The diagnostic of `problem` when it is certain (or in strict mode), with why the model
    /// is unknown; `Err(why)` when there is none.
    pub(super) fn report(&self, node: &Node, mode: StaticAnalysis, problem: &PlanProblem, complete: bool, sql: &str) -> Finding {
        match problem {
            PlanProblem::UnknownColumn { name, qualifier, in_scope, at } => {
                let certain = complete
                    && !lateral_alias(sql, name)
                    && !script_variable(node, sql, name)
                    && resolvable(qualifier.as_deref(), name, in_scope);
                let why = format!("column `{name}` was not found");
                if !certain && mode != StaticAnalysis::Strict {
                    return Err(why);
                }
                Ok((why, self.unknown_column(node, (qualifier.as_deref(), name), in_scope, *at, sql, certain)))
            }
            PlanProblem::Ambiguous { name, at } => {
                let d = Diagnostic::error(Code::AmbiguousColumn, format!("column `{name}` is ambiguous in {}", what(node)))
                    .with_help(format!("qualify it with the relation it comes from (`alias.{name}`)"));
                Ok((format!("`{name}` is ambiguous"), self.located(d, node, *at, name, sql, format!("more than one input has `{name}`"))))
            }
            PlanProblem::NotGrouped { column, relation, at } if complete => self.not_grouped(node, column, relation.as_deref(), *at, sql),
            PlanProblem::Arguments { function, takes, given } if complete => self.argument_count(node, function, takes, *given, sql),
            PlanProblem::Types { conflict, clash } if complete => {
                let why = format!("it combines {} with {}", conflict.left, conflict.right);
                // The embedded engine's build fails on it; a stricter warehouse's too, where
                // its rules refuse it as well.
                let fails = self.input.target.engine() == crate::adapter::EngineKind::DataFusion
                    || (*clash && self.input.target.adapter.dialect.strict_types());
                if fails { Ok((why, self.type_conflict(node, conflict, sql))) } else { Err(why) }
            }
            PlanProblem::UnknownRelation { name, at } => self.unknown_relation(node, name, *at, sql),
            PlanProblem::NotGrouped { .. } | PlanProblem::Arguments { .. } | PlanProblem::Types { .. } => {
                Err("an input is known only in part".into())
            }
            PlanProblem::Other(message) => Err(message.lines().next().unwrap_or_default().to_string()),
        }
    }

    /// A column neither grouped nor aggregated. PostgreSQL lets a query select any column of a
    /// table grouped by its primary key, which a source may have: not certain there.
    fn not_grouped(&self, node: &Node, column: &str, relation: Option<&str>, at: Option<(usize, usize)>, sql: &str) -> Finding {
        let why = format!("`{column}` is neither grouped nor aggregated");
        let may_have_key = self.input.target.adapter.dialect == crate::adapter::SqlDialect::Postgres
            && relation.is_some_and(|r| self.input.manifest.sources.values().any(|s| s.identifier.eq_ignore_ascii_case(r)));
        if may_have_key {
            return Err(why);
        }
        let d = Diagnostic::error(Code::NotGrouped, format!("{} uses `{column}`, which is neither grouped nor aggregated", what(node)))
            .with_help(format!("add `{column}` to the `group by`, or aggregate it (`max({column})`, `any_value({column})`)"));
        Ok((why, self.located(d, node, at, column, sql, "not in the `group by`".into())))
    }

    /// A call DataFusion's planner refuses for its number of arguments: certain on the
    /// embedded engine, whose build would fail the same way (a dialect with a catalog had its
    /// calls checked already).
    fn argument_count(&self, node: &Node, function: &str, takes: &[usize], given: usize, sql: &str) -> Finding {
        let why = format!("`{function}` does not take {given} arguments");
        if self.catalog.is_some() || self.input.target.engine() != crate::adapter::EngineKind::DataFusion {
            return Err(why);
        }
        let takes: Vec<String> = takes.iter().map(usize::to_string).collect();
        let takes = arguments(&takes.join(" or "));
        let d = Diagnostic::error(Code::ArgumentCount, format!("`{function}` takes {takes} on the embedded engine, not {given}"))
            .with_help(format!("call `{function}` with {takes}"));
        Ok((why, self.located(d, node, position::call(sql, function), function, sql, format!("called with {given}"))))
    }

    /// A relation the planner did not find, when it is certainly not there.
    fn unknown_relation(&self, node: &Node, resolved: &str, at: Option<(usize, usize)>, sql: &str) -> Finding {
        // As the SQL names it (the planner's name is resolved against the defaults).
        let name = at.map(|(l, c)| position::word_at(sql, l, c)).filter(|w| !w.is_empty()).unwrap_or_else(|| resolved.to_string());
        let why = format!("relation `{name}` is not known");
        let (close, misspelt) = self.close_relations(&name, sql);
        if !self.relation_certainly_missing(&name, misspelt) {
            return Err(why);
        }
        let d = Diagnostic::error(Code::UnknownRelation, format!("{} reads `{name}`, which is no CTE, model, seed or source", what(node)));
        let mut d = match close.as_slice() {
            [] => d.with_help("read models and seeds with `{{ ref('name') }}` and sources with `{{ source('source', 'table') }}`"),
            _ => d.with_help(format!("did you mean {}?", close.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "))),
        };
        if !name.contains('.') && self.input.target.adapter.dialect == crate::adapter::SqlDialect::BigQuery {
            d = d.with_note(format!("BigQuery reads a table by its dataset: `dataset.{name}`"));
        }
        let token = name.rsplit('.').next().unwrap_or(&name).to_string();
        let at = at.map(|(l, c)| (l, c + name.rfind(&token).unwrap_or(0)));
        Ok((why, self.located(d, node, at, &token, sql, "not a relation kiln knows".into())))
    }

    fn unknown_column(
        &self,
        node: &Node,
        (qualifier, name): (Option<&str>, &str),
        in_scope: &[(Option<String>, String)],
        at: Option<(usize, usize)>,
        sql: &str,
        certain: bool,
    ) -> Diagnostic {
        let mut relations: Vec<&str> = in_scope.iter().filter_map(|(r, _)| r.as_deref()).collect();
        relations.sort();
        relations.dedup();
        // `o.x`: only `o` could have had it.
        if let Some(q) = qualifier {
            relations.retain(|r| r.eq_ignore_ascii_case(q));
        }
        let in_scope: Vec<&(Option<String>, String)> =
            in_scope.iter().filter(|(r, _)| qualifier.is_none() || r.as_deref().is_some_and(|r| relations.contains(&r))).collect();
        let within = match relations.as_slice() {
            [] => String::new(),
            [one] => format!(" in `{}`", shown(one)),
            many => format!(" in any of {}", many.iter().map(|r| format!("`{}`", shown(r))).collect::<Vec<_>>().join(", ")),
        };
        let listing: Vec<String> = relations
            .iter()
            .map(|r| {
                let mut cols: Vec<&str> = Vec::new();
                for (_, c) in in_scope.iter().filter(|(q, _)| q.as_deref() == Some(*r)) {
                    if !cols.contains(&c.as_str()) {
                        cols.push(c);
                    }
                }
                let r = shown(r);
                let shown = cols.iter().take(12).copied().collect::<Vec<_>>().join(", ");
                format!("{r}: {shown}{}", if cols.len() > 12 { ", ..." } else { "" })
            })
            .collect();
        let suggestion = did_you_mean(name, in_scope.iter().map(|(_, c)| c.as_str()));
        let token = qualifier.map_or_else(|| name.to_string(), |q| format!("{q}.{name}"));
        let help = match suggestion {
            Some(s) => format!("{s} ({})", listing.join("; ")),
            None => format!("the columns are {}", listing.join("; ")),
        };
        let message = format!("column `{name}` not found{within}");
        let d = if certain {
            Diagnostic::error(Code::UnknownColumn, message)
        } else {
            Diagnostic::warning(Code::UnknownColumn, message)
                .with_note("an input's columns come from a source's YAML, which may not list them all")
        };
        let label = match relations.as_slice() {
            [one] => format!("`{}` has no column `{name}`", shown(one)),
            _ => format!("no input has a column `{name}`"),
        };
        self.located(d.with_help(help), node, at, &token, sql, label)
    }

    /// Points `d` at `token`: in the model's file where the compiled line is found there, else
    /// in the compiled SQL.
    fn located(&self, d: Diagnostic, node: &Node, at: Option<(usize, usize)>, token: &str, sql: &str, text: String) -> Diagnostic {
        let compiled_path = crate::run::artifacts::compiled_path(self.input.project, node);
        let source = node.file.map(|f| &self.input.project.files[f]);
        let Some((line, col)) = at else {
            // The planner gave no position (a `group by` item): the name's first use.
            return match source.and_then(|f| position::whole_word(&f.text, token).map(|p| (f, p))) {
                Some((file, (l, c))) => d.with_label(Label::new(file.source(), l, c, token.chars().count(), text)),
                None => d.with_file(self.display_path(node)),
            }
            .with_note(format!("compiled SQL: {compiled_path}"));
        };
        let in_source = source.and_then(|f| position::in_source(&f.text, sql, line, col, token).map(|p| (f, p)));
        match in_source {
            Some((file, (l, c))) => d
                .with_label(Label::new(file.source(), l, c, token.chars().count(), text))
                .with_note(format!("compiled SQL: {compiled_path}:{line}:{col}")),
            None => d
                .with_label(Label::new(SourceText::new(compiled_path, sql.to_string()), line, col, token.chars().count(), text))
                .with_note(format!("compiled from {}", self.display_path(node))),
        }
    }
}

/// The names of the CTEs of `sql` (lower case).
fn cte_names(sql: &str, dialect: crate::adapter::SqlDialect) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(statements) = sqlparser::parser::Parser::parse_sql(dialect.sqlparser().as_ref(), sql) else { return names };
    struct Ctes<'a>(&'a mut Vec<String>);
    impl sqlparser::ast::Visitor for Ctes<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, query: &sqlparser::ast::Query) -> std::ops::ControlFlow<()> {
            for cte in query.with.iter().flat_map(|w| &w.cte_tables) {
                self.0.push(cte.alias.name.value.to_ascii_lowercase());
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    for s in &statements {
        let _ = sqlparser::ast::Visit::visit(s, &mut Ctes(&mut names));
    }
    names
}

/// A relation as the user wrote it: an inlined ephemeral model (`__dbt__cte__x`) by its name.
fn shown(relation: &str) -> &str {
    relation.strip_prefix("__dbt__cte__").unwrap_or(relation)
}

/// "1 argument", "2 or 3 arguments".
fn arguments(counts: &str) -> String {
    if counts == "1" { "1 argument".into() } else { format!("{counts} arguments") }
}

/// Whether `name` may be a select-list alias used later in the same select (DuckDB resolves
/// those in `where` and in later select items; DataFusion does not).
fn lateral_alias(sql: &str, name: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    ["as ", "as\"", "as`"].iter().any(|kw| {
        lower.match_indices(kw).any(|(i, _)| {
            let rest = lower[i + 2..].trim_start().trim_start_matches(['"', '`']);
            rest.starts_with(&name) && !rest[name.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        })
    })
}

/// Whether `name` may be a BigQuery script variable: `_dbt_max_partition` (declared by
/// dbt-bigquery's `insert_overwrite`), or one a `declare` in the SQL or `sql_header` names.
fn script_variable(node: &Node, sql: &str, name: &str) -> bool {
    let header = node.config.get("sql_header").and_then(|v| v.as_str()).unwrap_or("");
    let declares = |text: &str| {
        let words: Vec<&str> = text.split(|c: char| !c.is_alphanumeric() && c != '_').filter(|w| !w.is_empty()).collect();
        words.windows(2).any(|w| w[0].eq_ignore_ascii_case("declare") && w[1].eq_ignore_ascii_case(name))
    };
    name.eq_ignore_ascii_case("_dbt_max_partition") || declares(sql) || declares(header)
}

/// Whether a name not found is certainly wrong: no column in scope differs from it only by
/// case (DuckDB and BigQuery compare names without case), and its qualifier names an input
/// (else `a.b` may be a field of a struct column `a`).
fn resolvable(qualifier: Option<&str>, name: &str, in_scope: &[(Option<String>, String)]) -> bool {
    let same_but_case = in_scope.iter().any(|(_, c)| c.eq_ignore_ascii_case(name));
    let qualifier_known = qualifier.is_none_or(|q| in_scope.iter().any(|(r, _)| r.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(q))));
    !same_but_case && qualifier_known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateral_aliases_are_not_certain() {
        assert!(lateral_alias("select a + 1 as total from t where total > 0", "total"));
        assert!(lateral_alias("select a + 1 AS \"Total\" from t", "total"));
        assert!(!lateral_alias("select a + 1 as totals from t", "total"));
        assert!(!lateral_alias("select ordr_id from t", "ordr_id"));
    }

    #[test]
    fn case_and_struct_fields_are_not_certain() {
        let scope = vec![(Some("orders".to_string()), "OrderId".to_string()), (Some("orders".to_string()), "amount".to_string())];
        assert!(!resolvable(None, "orderid", &scope));
        assert!(!resolvable(Some("address"), "city", &scope));
        assert!(resolvable(Some("orders"), "ordr_id", &scope));
        assert!(resolvable(None, "ordr_id", &scope));
    }
}
