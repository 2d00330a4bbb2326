//! Unit tests (dbt 1.8's `unit_tests:`): a model's SQL run on mocked inputs, locally on
//! DataFusion whatever the target, without building the model's parents.
//!
//! Each input (`ref`, `source`, `this`) becomes an in-memory relation in a scratch DataFusion
//! session, typed like the real parent: its columns and types are inferred by planning the
//! parents' compiled SQL on empty inputs (seeds: from the CSV; sources: from the warehouse or
//! their YAML `data_type`s). Columns a test leaves out are NULL of the right type. The model is
//! compiled with `ref`/`source` pointing at the mocks and the test's `overrides`, and its output,
//! projected on the expected columns, is compared with `expect` as a multiset.

use super::runner::{Failure, Outcome, Runner, Status};
use crate::diagnostics::Code;
use crate::engine::RelationName;
use crate::engine::datafusion::DataFusionEngine;
use crate::graph::Lookup;
use crate::jinja::Resolver;
use crate::jinja::context::{Overrides, RefCall};
use crate::jinja::relation::{Relation, quote_ident};
use crate::parse::{Node, ResourceType};
use crate::project::Project;
use datafusion::arrow::datatypes::SchemaRef;
use minijinja::Value;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const DATABASE: &str = "kiln_unit";
const SCHEMA: &str = "inputs";

/// Inferred schemas of relations, shared by the unit tests of one run.
#[derive(Default)]
pub struct SchemaCache(Mutex<HashMap<String, SchemaRef>>);

/// The mock relation standing for node `id`.
fn stub(id: &str) -> RelationName {
    let name: String = id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    RelationName { database: DATABASE.into(), schema: SCHEMA.into(), name }
}

fn stub_value(id: &str, quote: char) -> Value {
    let r = stub(id);
    Relation::new(&r.database, &r.schema, &r.name, quote).into_value()
}

/// `ref`/`source` resolved to mocks.
struct StubResolver {
    lookup: Arc<Lookup>,
    inner: Arc<dyn Resolver>,
    quote: char,
}

impl Resolver for StubResolver {
    fn resolve_ref(&self, from_package: &str, package: Option<&str>, name: &str, version: Option<&str>) -> Result<Value, String> {
        let call = RefCall { package: package.map(str::to_string), name: name.to_string(), version: version.map(str::to_string) };
        let id = self.lookup.resolve_ref(from_package, &call).ok_or_else(|| format!("`{name}` was not found (ref('{name}'))"))?;
        Ok(stub_value(id, self.quote))
    }
    fn resolve_source(&self, source: &str, table: &str) -> Result<Value, String> {
        let id = self.lookup.resolve_source("", source, table).ok_or_else(|| format!("source `{source}.{table}` was not found"))?;
        Ok(stub_value(id, self.quote))
    }
    fn graph(&self) -> Value {
        self.inner.graph()
    }
}

/// A SQL literal for a YAML/JSON value.
fn literal(v: &Json) -> String {
    match v {
        Json::Null => "NULL".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => format!("'{}'", other.to_string().replace('\'', "''")),
    }
}

/// Rows given in a test, by column name.
type Rows = Vec<Vec<(String, Json)>>;

/// One `given` input or the `expect` block, read into rows (dict, csv) or a query (sql).
enum Data {
    Rows { columns: Vec<String>, rows: Rows },
    Sql(String),
}

fn parse_csv(text: &str) -> Result<Data, String> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let columns: Vec<String> = reader.headers().map_err(|e| format!("bad CSV: {e}"))?.iter().map(str::to_string).collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("bad CSV: {e}"))?;
        rows.push(
            columns
                .iter()
                .zip(record.iter())
                .map(|(c, v)| (c.clone(), if v.is_empty() || v.eq_ignore_ascii_case("null") { Json::Null } else { Json::from(v) }))
                .collect(),
        );
    }
    Ok(Data::Rows { columns, rows })
}

/// The columns each `given` of unit test `test` names (rows in `dict` or `csv` format), with
/// the input's unique id (`this`: the model's) and its text, for static analysis. An input
/// that cannot be resolved or read is left out: the test reports it when it runs.
pub fn given_columns(project: &Project, lookup: &Lookup, test: &Node) -> Vec<(String, String, Vec<String>)> {
    let givens = test.extra.get("given").and_then(Json::as_array).map(Vec::as_slice).unwrap_or(&[]);
    givens
        .iter()
        .filter_map(|given| {
            let text = given.get("input").and_then(Json::as_str)?;
            let id = match parse_input(text)? {
                Input::This => test.attached_node.clone()?,
                Input::Ref(call) => lookup.resolve_ref(&test.package, &call)?.clone(),
                Input::Source(s, t) => lookup.resolve_source(&test.package, &s, &t)?.clone(),
            };
            match read_data(project, given, "input").ok()? {
                Data::Rows { columns, .. } => Some((id, text.to_string(), columns)),
                Data::Sql(_) => None,
            }
        })
        .collect()
}

/// The columns unit test `test` expects of its model (rows in `dict` or `csv` format).
pub fn expected_columns(project: &Project, test: &Node) -> Option<Vec<String>> {
    match read_data(project, test.extra.get("expect")?, "expect").ok()? {
        Data::Rows { columns, .. } => Some(columns),
        Data::Sql(_) => None,
    }
}

/// Reads `rows`/`fixture` of a `given` entry or of `expect` in its `format`.
fn read_data(project: &Project, entry: &Json, what: &str) -> Result<Data, String> {
    let format = entry.get("format").and_then(Json::as_str).unwrap_or("dict");
    let text = match (entry.get("rows"), entry.get("fixture").and_then(Json::as_str)) {
        (Some(rows), _) => rows.clone(),
        (None, Some(name)) => Json::String(fixture(project, name, format)?),
        (None, None) => return Err(format!("`{what}` needs `rows` or `fixture`")),
    };
    match (format, text) {
        ("dict", Json::Array(items)) => {
            let mut columns: Vec<String> = Vec::new();
            let mut rows = Vec::new();
            for item in items {
                let Json::Object(map) = item else {
                    return Err(format!("`{what}` rows in dict format are mappings, like `- {{id: 1}}`"));
                };
                for k in map.keys() {
                    if !columns.iter().any(|c| c.eq_ignore_ascii_case(k)) {
                        columns.push(k.clone());
                    }
                }
                rows.push(map.into_iter().collect());
            }
            Ok(Data::Rows { columns, rows })
        }
        ("dict", Json::Null) => Ok(Data::Rows { columns: vec![], rows: vec![] }),
        ("csv", Json::String(s)) => parse_csv(&s),
        ("sql", Json::String(s)) => Ok(Data::Sql(s)),
        (f @ ("dict" | "csv" | "sql"), _) => Err(format!("`{what}` rows do not match `format: {f}`")),
        (f, _) => Err(format!("`{what}` has format `{f}`; use dict, csv or sql")),
    }
}

/// A fixture file: `<test-path>/fixtures/**/<name>.csv` (or `.sql`).
fn fixture(project: &Project, name: &str, format: &str) -> Result<String, String> {
    let ext = if format == "sql" { "sql" } else { "csv" };
    let file = format!("{name}.{ext}");
    for tp in &project.config().test_paths {
        let dir = project.root.join(tp).join("fixtures");
        for entry in walkdir::WalkDir::new(&dir).into_iter().filter_map(Result::ok) {
            if entry.file_type().is_file() && entry.file_name().to_string_lossy() == file {
                return std::fs::read_to_string(entry.path()).map_err(|e| format!("cannot read {}: {e}", entry.path().display()));
            }
        }
    }
    Err(format!("no fixture file `{file}` under {}/fixtures/", project.config().test_paths.join(", ")))
}

/// `ref('x')`, `ref('pkg', 'x')`, `ref('x', v=2)`, `source('s', 't')` or `this`.
enum Input {
    Ref(RefCall),
    Source(String, String),
    This,
}

fn parse_input(text: &str) -> Option<Input> {
    let t = text.trim();
    if t == "this" {
        return Some(Input::This);
    }
    let (func, rest) = t.split_once('(')?;
    let args = rest.trim_end().strip_suffix(')')?;
    let mut positional = Vec::new();
    let mut version = None;
    for arg in args.split(',') {
        let arg = arg.trim();
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (Some(k.trim()), v.trim()),
            None => (None, arg),
        };
        let value = value.trim_matches(|c| c == '\'' || c == '"').to_string();
        match key {
            Some("v" | "version") => version = Some(value),
            Some(_) => return None,
            None => positional.push(value),
        }
    }
    match (func.trim(), positional.as_slice()) {
        ("ref", [name]) => Some(Input::Ref(RefCall { package: None, name: name.clone(), version })),
        ("ref", [package, name]) => Some(Input::Ref(RefCall { package: Some(package.clone()), name: name.clone(), version })),
        ("source", [source, table]) => Some(Input::Source(source.clone(), table.clone())),
        _ => None,
    }
}

impl Runner<'_> {
    pub(super) fn unit_test(&self, node: &Node) -> Outcome {
        match self.unit_test_inner(node) {
            Ok(o) => o,
            Err(message) => Outcome::error(Failure::new(Code::UnitTestError, format!("unit test `{}`: {message}", node.name))),
        }
    }

    fn unit_test_inner(&self, test: &Node) -> Result<Outcome, String> {
        let def = &test.extra;
        let model_id = test.attached_node.as_deref().ok_or("no model")?;
        let model = self.manifest.nodes.get(model_id).ok_or("the model is missing")?;
        let target = &self.jinja.shared.target;
        let quote = target.quote_char();
        // Two sessions: one where the test runs on its mocks, one where parents' schemas are
        // inferred (on empty relations that must not replace the mocks).
        let (dialect, flavor) = (target.adapter.dialect.datafusion_name(), target.adapter.semantics);
        let scratch = DataFusionEngine::scratch(DATABASE, SCHEMA, dialect, flavor).map_err(|e| e.message)?;
        let infer = DataFusionEngine::scratch(DATABASE, SCHEMA, dialect, flavor).map_err(|e| e.message)?;
        let resolver: Arc<dyn Resolver> = Arc::new(StubResolver { lookup: self.lookup.clone(), inner: self.resolver.clone(), quote });

        // Inputs.
        let mut mocked: Vec<String> = Vec::new();
        let mut this_input = false;
        for given in def.get("given").and_then(Json::as_array).map(Vec::as_slice).unwrap_or(&[]) {
            let text = given.get("input").and_then(Json::as_str).ok_or("a `given` entry has no `input`")?;
            let id = match parse_input(text)
                .ok_or_else(|| format!("cannot read the input `{text}`: use ref('model'), source('source', 'table') or this"))?
            {
                Input::This => {
                    this_input = true;
                    "this".to_string()
                }
                Input::Ref(call) => self
                    .lookup
                    .resolve_ref(&test.package, &call)
                    .cloned()
                    .ok_or_else(|| format!("the input `{text}` names no model, seed or snapshot"))?,
                Input::Source(s, t) => self
                    .lookup
                    .resolve_source(&test.package, &s, &t)
                    .cloned()
                    .ok_or_else(|| format!("the input `{text}` names no source"))?,
            };
            if id != "this" && !self.graph.parents.get(model_id).is_some_and(|p| p.contains(&id)) {
                return Err(format!("the input `{text}` is not used by model `{}`", model.name));
            }
            let schema =
                if id == "this" { Some(self.schema_of(&infer, model_id, &resolver)?) } else { self.input_schema(&infer, &id, &resolver)? };
            let data = read_data(self.project, given, "input")?;
            let sql = match data {
                Data::Sql(sql) => sql,
                Data::Rows { columns, rows } => rows_sql(&scratch, quote, schema.as_ref(), &columns, &rows)?,
            };
            scratch.register_view(&stub(&id), &sql).map_err(|e| format!("the input `{text}`: {}", e.message))?;
            mocked.push(id);
        }
        // Parents not given: seeds are read as they are; anything else must be mocked.
        for p in self.graph.parents.get(model_id).map(Vec::as_slice).unwrap_or(&[]) {
            if mocked.contains(p) {
                continue;
            }
            match self.manifest.nodes.get(p) {
                Some(seed) if seed.resource_type == ResourceType::Seed => {
                    let mut load = self.seed_load(seed).map_err(|f| f.message)?;
                    load.relation = stub(p);
                    scratch.register_seed(&load).map_err(|e| e.message)?;
                }
                _ => {
                    let call = match (self.manifest.nodes.get(p), self.manifest.sources.get(p)) {
                        (Some(n), _) => format!("ref('{}')", n.name),
                        (_, Some(s)) => format!("source('{}', '{}')", s.source_name, s.name),
                        _ => p.clone(),
                    };
                    return Err(format!(
                        "model `{}` reads {call}, which the test does not give; add `- input: {call}` under `given` (`rows: []` for an empty input)",
                        model.name
                    ));
                }
            }
        }

        // The model, compiled on the mocks with the test's overrides.
        let overrides = def.get("overrides");
        let section = |k: &str| overrides.and_then(|o| o.get(k)).and_then(Json::as_object).cloned().unwrap_or_default();
        let mut ctx = crate::compile::node_ctx(self.jinja, model, &resolver, false);
        ctx.overrides = Some(Arc::new(Overrides {
            vars: section("vars").into_iter().collect(),
            env_vars: section("env_vars").into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect(),
            macros: section("macros").into_iter().collect(),
        }));
        if this_input {
            ctx.this = Some(stub_value("this", quote));
        }
        let sql =
            crate::compile::render_with(self.project, self.jinja, model, ctx).map_err(|d| crate::diagnostics::render::human(&d, false))?;
        let actual_schema =
            scratch.query_schema(&sql).map_err(|e| format!("model `{}` does not run on the inputs: {}\n{sql}", model.name, e.message))?;

        // Expected rows, typed like the model's output.
        let expect = def.get("expect").ok_or("no `expect`")?;
        let expected = read_data(self.project, expect, "expect")?;
        let expected_sql = match &expected {
            Data::Sql(sql) => sql.clone(),
            Data::Rows { columns, rows } => {
                for c in columns {
                    if actual_schema.fields().iter().all(|f| !f.name().eq_ignore_ascii_case(c)) {
                        let have: Vec<&str> = actual_schema.fields().iter().map(|f| f.name().as_str()).collect();
                        return Err(format!(
                            "the expected column `{c}` is not in the output of model `{}` (it has: {})",
                            model.name,
                            have.join(", ")
                        ));
                    }
                }
                // Only the expected columns, typed like the output.
                let fields: Vec<_> = columns
                    .iter()
                    .filter_map(|c| actual_schema.fields().iter().find(|f| f.name().eq_ignore_ascii_case(c)))
                    .map(|f| {
                        f.as_ref().clone().with_name(columns.iter().find(|c| f.name().eq_ignore_ascii_case(c)).cloned().unwrap_or_default())
                    })
                    .collect();
                rows_sql(&scratch, quote, Some(&Arc::new(datafusion::arrow::datatypes::Schema::new(fields))), columns, rows)?
            }
        };
        let (expected_columns, expected_rows) =
            scratch.query_text(&expected_sql).map_err(|e| format!("the expected rows: {}", e.message))?;
        let columns = match &expected {
            Data::Rows { rows, .. } if rows.is_empty() => actual_schema.fields().iter().map(|f| f.name().clone()).collect(),
            _ => expected_columns,
        };
        let projection: Vec<String> = columns
            .iter()
            .map(|c| {
                let name =
                    actual_schema.fields().iter().find(|f| f.name().eq_ignore_ascii_case(c)).map_or(c.as_str(), |f| f.name().as_str());
                quote_ident(name, quote)
            })
            .collect();
        let actual_sql = format!("select {} from ({sql}) as kiln_unit_actual", projection.join(", "));
        let (_, actual_rows) =
            scratch.query_text(&actual_sql).map_err(|e| format!("model `{}` failed on the inputs: {}", model.name, e.message))?;
        let mut outcome = Outcome::with(Status::Error, String::new());
        outcome.compiled = Some(sql);
        let expected_rows = if matches!(&expected, Data::Rows { rows, .. } if rows.is_empty()) { vec![] } else { expected_rows };
        match diff(&columns, &expected_rows, &actual_rows) {
            None => {
                outcome.status = Status::Pass;
                outcome.failures = Some(0);
                outcome.message = "PASS".into();
            }
            Some(d) => {
                outcome.status = Status::Fail;
                outcome.failures = Some(1);
                outcome.message = format!("actual differs from expected:\n\n{d}");
            }
        }
        Ok(outcome)
    }

    /// The schema of a direct input: known (`Some`) or, for a source without types, `None`
    /// (the given rows decide).
    fn input_schema(&self, scratch: &DataFusionEngine, id: &str, resolver: &Arc<dyn Resolver>) -> Result<Option<SchemaRef>, String> {
        match self.manifest.sources.get(id) {
            Some(_) => self.source_schema(scratch, id),
            None => self.schema_of(scratch, id, resolver).map(Some),
        }
    }

    fn source_schema(&self, scratch: &DataFusionEngine, id: &str) -> Result<Option<SchemaRef>, String> {
        let src = &self.manifest.sources[id];
        let r = RelationName { database: src.database.clone(), schema: src.schema.clone(), name: src.identifier.clone() };
        let columns: Vec<(String, String)> = match self.engine.describe(&r) {
            Ok(Some(cols)) => cols,
            _ => {
                let typed: Vec<(String, String)> =
                    src.columns.values().filter_map(|c| Some((c.name.clone(), c.data_type.clone()?))).collect();
                if typed.is_empty() {
                    return Ok(None);
                }
                typed
            }
        };
        let mut fields = Vec::new();
        for (name, t) in columns {
            let dt = match crate::engine::datafusion::types::parse(&t) {
                Some(dt) => dt,
                None => scratch
                    .query_schema(&format!("select cast(null as {}) as c", crate::engine::datafusion::types::normalize(&t)))
                    .map_err(|e| format!("source `{}.{}` column `{name}` has type `{t}`: {}", src.source_name, src.name, e.message))?
                    .field(0)
                    .data_type()
                    .clone(),
            };
            fields.push(datafusion::arrow::datatypes::Field::new(name, dt, true));
        }
        Ok(Some(Arc::new(datafusion::arrow::datatypes::Schema::new(fields))))
    }

    /// The columns and types of model, seed or snapshot `id`, inferred without its data.
    fn schema_of(&self, scratch: &DataFusionEngine, id: &str, resolver: &Arc<dyn Resolver>) -> Result<SchemaRef, String> {
        if let Some(s) = self.unit_schemas.0.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Ok(s.clone());
        }
        let node = self.manifest.nodes.get(id).ok_or_else(|| format!("`{id}` is not a model, seed or snapshot"))?;
        let schema = if node.resource_type == ResourceType::Seed {
            let mut load = self.seed_load(node).map_err(|f| f.message)?;
            load.relation = stub(id);
            scratch.register_seed(&load).map_err(|e| format!("seed `{}`: {}", node.name, e.message))?;
            let r = &load.relation;
            let relation = Relation::new(&r.database, &r.schema, &r.name, self.jinja.shared.target.quote_char()).render();
            scratch.query_schema(&format!("select * from {relation}")).map_err(|e| e.message)?
        } else {
            for p in self.graph.parents.get(id).map(Vec::as_slice).unwrap_or(&[]) {
                let s = match self.manifest.sources.get(p) {
                    Some(src) => self.source_schema(scratch, p)?.ok_or_else(|| {
                        format!(
                            "cannot tell the columns of source `{}.{}` (read by `{}`): give its columns a `data_type` in YAML, build it, or mock `{}` too",
                            src.source_name, src.name, node.name, node.name
                        )
                    })?,
                    None => self.schema_of(scratch, p, resolver)?,
                };
                scratch.register_empty(&stub(p), s).map_err(|e| e.message)?;
            }
            let ctx = crate::compile::node_ctx(self.jinja, node, resolver, false);
            let sql = crate::compile::render_with(self.project, self.jinja, node, ctx)
                .map_err(|d| crate::diagnostics::render::human(&d, false))?;
            scratch.query_schema(&sql).map_err(|e| format!("cannot tell the columns of `{}` from its SQL: {}", node.name, e.message))?
        };
        self.unit_schemas.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), schema.clone());
        Ok(schema)
    }
}

/// A query giving `rows`: every column of `schema` (NULL where a row leaves it out) cast to its
/// type, then given columns the schema does not know. Identifiers are quoted with the target's
/// `quote` (the scratch session parses the target's dialect).
fn rows_sql(scratch: &DataFusionEngine, quote: char, schema: Option<&SchemaRef>, given: &[String], rows: &Rows) -> Result<String, String> {
    let mut columns: Vec<(String, Option<String>)> = match schema {
        Some(s) => s.fields().iter().map(|f| (f.name().clone(), Some(f.data_type().to_string()))).collect(),
        None => vec![],
    };
    for g in given {
        if !columns.iter().any(|(c, _)| c.eq_ignore_ascii_case(g)) {
            columns.push((g.clone(), None));
        }
    }
    let select = |row: Option<&Vec<(String, Json)>>| -> String {
        let cells: Vec<String> = columns
            .iter()
            .map(|(c, t)| {
                let v = row.and_then(|r| r.iter().find(|(k, _)| k.eq_ignore_ascii_case(c))).map(|(_, v)| v).unwrap_or(&Json::Null);
                let value = match t {
                    Some(t) => format!("arrow_cast({}, '{t}')", literal(v)),
                    None => literal(v),
                };
                format!("{value} as {}", quote_ident(c, quote))
            })
            .collect();
        format!("select {}", cells.join(", "))
    };
    let sql = if rows.is_empty() {
        format!("{} where false", select(None))
    } else {
        rows.iter().map(|r| select(Some(r))).collect::<Vec<_>>().join("\nunion all\n")
    };
    // Check the values convert (a clear error instead of one at comparison time).
    scratch
        .query_text(&format!("select count(*) from ({sql}) as kiln_check"))
        .map_err(|e| format!("the rows do not fit the columns' types: {}", e.message))?;
    Ok(sql)
}

/// `None` when `expected` and `actual` are the same multiset; otherwise a table of the rows
/// that differ (`-` expected only, `+` actual only) and those that match.
fn diff(columns: &[String], expected: &[Vec<String>], actual: &[Vec<String>]) -> Option<String> {
    let mut left: Vec<&Vec<String>> = actual.iter().collect();
    let mut missing: Vec<&Vec<String>> = Vec::new();
    let mut matched: Vec<&Vec<String>> = Vec::new();
    for e in expected {
        match left.iter().position(|a| *a == e) {
            Some(i) => matched.push(left.remove(i)),
            None => missing.push(e),
        }
    }
    if missing.is_empty() && left.is_empty() {
        return None;
    }
    let mut lines: Vec<(char, &Vec<String>)> = missing.iter().map(|r| ('-', *r)).collect();
    lines.extend(left.iter().map(|r| ('+', *r)));
    lines.extend(matched.iter().map(|r| (' ', *r)));
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| lines.iter().map(|(_, r)| r.get(i).map_or(0, String::len)).max().unwrap_or(0).max(columns[i].len()))
        .collect();
    let fmt = |mark: char, cells: &[String]| -> String {
        let body: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0))).collect();
        format!("{mark} | {}", body.join(" | ")).trim_end().to_string()
    };
    let mut out = vec![fmt(' ', columns), format!("--+-{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-"))];
    let shown = lines.len().min(50);
    out.extend(lines[..shown].iter().map(|(m, r)| fmt(*m, r)));
    if lines.len() > shown {
        out.push(format!("  ... {} more rows", lines.len() - shown));
    }
    out.push(format!("(- expected but not produced: {}, + produced but not expected: {})", missing.len(), left.len()));
    Some(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inputs() {
        assert!(matches!(parse_input("ref('orders')"), Some(Input::Ref(RefCall { package: None, ref name, .. })) if name == "orders"));
        assert!(
            matches!(parse_input("ref(\"pkg\", \"m\", v=2)"), Some(Input::Ref(RefCall { package: Some(_), version: Some(ref v), .. })) if v == "2")
        );
        assert!(matches!(parse_input(" source('raw', 'orders') "), Some(Input::Source(s, t)) if s == "raw" && t == "orders"));
        assert!(matches!(parse_input("this"), Some(Input::This)));
        assert!(parse_input("orders").is_none());
    }

    #[test]
    fn diffs_multisets() {
        let cols = vec!["id".to_string(), "n".to_string()];
        let r = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
        assert!(diff(&cols, &[r("1", "a"), r("1", "a")], &[r("1", "a"), r("1", "a")]).is_none());
        let d = diff(&cols, &[r("1", "a"), r("1", "a")], &[r("1", "a"), r("2", "b")]).expect("differs");
        assert!(d.contains("- | 1  | a") && d.contains("+ | 2  | b"), "{d}");
    }
}
