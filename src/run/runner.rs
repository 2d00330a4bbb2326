//! The runner: executes selected seeds and models in dependency order, in parallel (`threads`),
//! on an [`Engine`]. A failed node marks its descendants as skipped; with `fail_fast` the first
//! failure stops scheduling. Models are compiled just before they run, so `is_incremental()` and
//! `run_query` see the warehouse as it is then.

use super::plan::{Inputs, Step};
pub use super::schedule::Unfinished;
use super::schedule::{self, Kind, Ready};
use crate::compile::{self, Compiled};
use crate::diagnostics::{Code, Diagnostic};
use crate::engine::{Engine, EngineError, ErrorKind, Materialization, RelationName, SeedLoad};
use crate::graph::Graph;
use crate::jinja::{JinjaEnv, QueryRunner, QueryTable, Resolver};
use crate::parse::{Manifest, Node, ResourceType};
use crate::project::Project;
use crate::project::config::json_truthy;
use crate::project::typed::{Materialized, NodeConfig, Strategy};
use serde_json::Value as Json;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// A model or seed was built.
    Success,
    Error,
    Skipped,
    /// A test found nothing wrong.
    Pass,
    /// A test failed with `severity: warn` (or within `error_if`): reported, does not gate.
    Warn,
    /// A test failed: its model's descendants are skipped in `kiln build`.
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::Skipped => "skipped",
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
    /// Did the node let its dependents run?
    pub fn ok(self) -> bool {
        matches!(self, Status::Success | Status::Pass | Status::Warn)
    }
}

#[derive(Clone, Debug)]
pub struct NodeResult {
    pub unique_id: String,
    pub status: Status,
    pub message: String,
    pub rows: Option<u64>,
    pub seconds: f64,
    pub started_at: String,
    pub completed_at: String,
    pub thread: usize,
    /// The SQL that ran (models).
    pub compiled: Option<String>,
    pub relation: Option<String>,
    /// Tests: the failing-row count (`fail_calc`).
    pub failures: Option<u64>,
    /// Why the node failed (status `error`).
    pub code: Option<Code>,
    /// The failure as a diagnostic, when it is one (a Jinja error while the node compiled):
    /// `message` is then its one-line message; [`super::results::text`] renders it whole.
    pub diagnostic: Option<Arc<Diagnostic>>,
    /// What the warehouse reported for the node's statements (BigQuery's `bytes_processed`,
    /// `job_id`, ...; a dry run's `columns`), merged into `adapter_response`.
    pub response: Option<serde_json::Map<String, Json>>,
}

/// Progress events for the CLI.
pub enum Event<'a> {
    Started { node: &'a Node, index: usize, total: usize },
    Finished { node: &'a Node, result: &'a NodeResult, index: usize, total: usize },
}

pub struct Options {
    pub threads: usize,
    pub full_refresh: bool,
    pub fail_fast: bool,
    /// `--store-failures`: tests without a `store_failures` config keep their failing rows.
    pub store_failures: bool,
    /// Set (e.g. by Ctrl-C) to stop scheduling: running nodes finish, the rest are skipped.
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
    /// `--dry-run`: models and tests are validated by the warehouse ([`Engine::dry_run`]),
    /// nothing is built, loaded or hooked.
    pub dry_run: bool,
    /// `--event-time-start` / `--event-time-end`: the range microbatch models build.
    pub event_time: (Option<time::OffsetDateTime>, Option<time::OffsetDateTime>),
    /// Nodes static analysis is certain are wrong: each fails with its finding, unrun.
    pub rejected: HashMap<String, Arc<Diagnostic>>,
}

/// `run_query` / `adapter.get_*` answered by the engine.
pub struct EngineQueries(pub Arc<dyn Engine>, pub char);

impl QueryRunner for EngineQueries {
    fn run_query(&self, sql: &str) -> Result<QueryTable, String> {
        self.0.query(sql, None).map_err(|e| e.message)
    }
    fn get_relation(&self, database: &str, schema: &str, identifier: &str) -> Result<Option<crate::jinja::relation::Relation>, String> {
        let r = RelationName { database: database.into(), schema: schema.into(), name: identifier.into() };
        let found = self.0.describe(&r).map_err(|e| e.message)?;
        Ok(found.map(|_| crate::jinja::relation::Relation::new(database, schema, identifier, self.1)))
    }
    fn get_columns(&self, relation: &crate::jinja::relation::Relation) -> Result<Vec<(String, String)>, String> {
        let r = RelationName {
            database: relation.database.clone().unwrap_or_default(),
            schema: relation.schema.clone().unwrap_or_default(),
            name: relation.identifier.clone().unwrap_or_default(),
        };
        Ok(self.0.describe(&r).map_err(|e| e.message)?.unwrap_or_default())
    }
    fn create_schema(&self, database: &str, schema: &str) -> Result<(), String> {
        self.0.create_schema(database, schema).map_err(|e| e.message)
    }
    fn list_relations(&self, database: &str, schema: &str) -> Result<Vec<(String, String)>, String> {
        self.0.list_relations(database, schema).map_err(|e| e.message)
    }
    fn list_schemas(&self, database: &str) -> Result<Vec<String>, String> {
        self.0.list_schemas(database).map_err(|e| e.message)
    }
}

pub fn relation_name(node: &Node) -> RelationName {
    RelationName { database: node.database.clone(), schema: node.schema.clone(), name: node.alias.clone() }
}

/// How seed `node` is loaded: its file, `delimiter` and `column_types`.
pub fn seed_load(project: &Project, node: &Node, full_refresh: bool) -> Result<SeedLoad, Failure> {
    let file = node.file.map(|f| &project.files[f]).ok_or_else(|| Failure::new(Code::Internal, "a seed without a file"))?;
    let column_types: Vec<(String, String)> = node
        .config
        .get("column_types")
        .and_then(Json::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_string))).collect())
        .unwrap_or_default();
    let delimiter = node.config.get("delimiter").and_then(Json::as_str).and_then(|d| d.bytes().next()).unwrap_or(b',');
    Ok(SeedLoad { relation: relation_name(node), path: file.abs_path.clone(), delimiter, column_types, full_refresh })
}

fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The outcome of a data test from its judging query's answer.
fn judged(node: &Node, cfg: &super::data_tests::TestConfig, answer: Result<QueryTable, crate::engine::EngineError>) -> Outcome {
    match answer {
        Ok(t) => {
            let (status, failures, message) = super::data_tests::judge(cfg, &t.columns, t.rows.first());
            Outcome { failures: Some(failures), ..Outcome::with(status, message) }
        }
        Err(e) => Outcome::error(Failure::engine(&e, test_error(node, &e))),
    }
}

fn finish(node: &Node, outcome: Outcome, started_at: String, seconds: f64, thread: usize) -> NodeResult {
    NodeResult { unique_id: node.unique_id.clone(), ..finish_named(outcome, started_at, seconds, thread) }
}

/// A result without its unique id yet.
fn finish_named(outcome: Outcome, started_at: String, seconds: f64, thread: usize) -> NodeResult {
    NodeResult {
        unique_id: String::new(),
        status: outcome.status,
        message: outcome.message,
        rows: outcome.rows,
        seconds,
        started_at,
        completed_at: now(),
        thread,
        compiled: outcome.compiled,
        relation: outcome.relation,
        failures: outcome.failures,
        code: outcome.code,
        diagnostic: outcome.diagnostic,
        response: outcome.response,
    }
}

/// A test's query failed: the message, where the test is defined (a generic test's properties
/// file and line), and a hint when a relation is missing (usually never built).
fn test_error(node: &Node, e: &EngineError) -> String {
    let mut message = format!("{}\n  --> {}:{} (where the test is defined)", e.message, node.original_file_path, node.line);
    if e.message.contains("not found") {
        message.push_str("\n  = help: build what the test reads first (`kiln build`, or `kiln run -s <model>`)");
    } else if e.message.contains("No field named") {
        message.push_str("\n  = help: check the column name in the test's arguments against the model's columns");
    }
    message
}

/// An engine error in a model's SQL: the message and, when the engine says where, the line of
/// the compiled SQL with a caret under the spot, naming the model's file and where the whole
/// statement was written (`run_path`; `None` in a dry run, which writes nothing).
fn sql_error(node: &Node, run_path: Option<&str>, sql: &str, e: &crate::engine::EngineError) -> String {
    // A parse error at the end of the statement has no position: it is after the last token.
    let at_end = || {
        let trimmed = sql.trim_end();
        let line = trimmed.lines().count().max(1);
        (line, trimmed.lines().last().map_or(0, |l| l.chars().count()) + 1)
    };
    let position = e.position.or_else(|| (e.message.contains("found: EOF") || e.message.contains("end of input")).then(at_end));
    let Some((line, col)) = position else {
        let whole = run_path.map(|p| format!(" (the compiled SQL is in {p})")).unwrap_or_default();
        return format!("{}\n  --> {}{whole}", e.message, node.original_file_path);
    };
    let Some(text) = sql.lines().nth(line.saturating_sub(1)) else { return e.message.clone() };
    let (text, col) = clip(text, col);
    let pad = " ".repeat(line.to_string().len());
    let caret = format!("{}^", " ".repeat(col.saturating_sub(1)));
    let whole = run_path.map(|p| format!("; the whole statement is in {p}")).unwrap_or_default();
    format!(
        "{}\n{pad}--> {} (compiled SQL, line {line}, column {col}{whole})\n{pad} |\n{line} | {text}\n{pad} | {caret}",
        e.message, node.original_file_path
    )
}

/// Bytes as BigQuery's console shows them: `0 B`, `12.3 KB`, `4.56 GB` (powers of 1024).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.2} {}", UNITS[unit]) }
}

/// At most 100 characters of `line` around the 1-based column `col` (`...` where cut), and
/// the column in what is shown.
fn clip(line: &str, col: usize) -> (String, usize) {
    const WIDTH: usize = 100;
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= WIDTH {
        return (line.to_string(), col);
    }
    let start = col.saturating_sub(WIDTH / 2).min(chars.len() - WIDTH);
    let mut shown: String = chars[start..start + WIDTH].iter().collect();
    if start + WIDTH < chars.len() {
        shown.push_str("...");
    }
    if start > 0 {
        return (format!("...{shown}"), col - start + 3);
    }
    (shown, col)
}

/// Why a node failed: its code and dbt's message text, and the diagnostic when it is one.
#[derive(Clone, Debug)]
pub struct Failure {
    pub code: Code,
    pub message: String,
    pub diagnostic: Option<Arc<Diagnostic>>,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into(), diagnostic: None }
    }

    /// An engine error, with `message` in place of the engine's text.
    pub fn engine(e: &EngineError, message: String) -> Failure {
        let code = match e.kind {
            ErrorKind::Query => Code::QueryFailed,
            ErrorKind::Violation => Code::ContractViolation,
            ErrorKind::Connection => Code::ConnectionLost,
            ErrorKind::Cancelled => Code::Cancelled,
        };
        Failure::new(code, message)
    }
}

impl From<Diagnostic> for Failure {
    fn from(d: Diagnostic) -> Failure {
        Failure { code: d.code, message: d.message.clone(), diagnostic: Some(Arc::new(d)) }
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Failure {
        let message = e.message.clone();
        Failure::engine(&e, message)
    }
}

/// What executing one node gave.
pub(super) struct Outcome {
    pub status: Status,
    pub message: String,
    pub rows: Option<u64>,
    pub failures: Option<u64>,
    pub compiled: Option<String>,
    pub relation: Option<String>,
    pub code: Option<Code>,
    pub diagnostic: Option<Arc<Diagnostic>>,
    pub response: Option<serde_json::Map<String, Json>>,
}

impl Outcome {
    pub fn error(f: Failure) -> Outcome {
        Outcome { code: Some(f.code), diagnostic: f.diagnostic, ..Outcome::with(Status::Error, f.message) }
    }

    pub fn with(status: Status, message: String) -> Outcome {
        Outcome {
            status,
            message,
            rows: None,
            failures: None,
            compiled: None,
            relation: None,
            code: None,
            diagnostic: None,
            response: None,
        }
    }
}

impl From<Result<(String, Option<u64>), Failure>> for Outcome {
    fn from(r: Result<(String, Option<u64>), Failure>) -> Outcome {
        match r {
            Ok((message, rows)) => Outcome { rows, ..Outcome::with(Status::Success, message) },
            Err(f) => Outcome::error(f),
        }
    }
}

pub struct Runner<'a> {
    pub project: &'a Project,
    pub jinja: &'a JinjaEnv,
    pub manifest: &'a Manifest,
    pub graph: &'a Graph,
    pub resolver: Arc<dyn Resolver>,
    pub engine: Arc<dyn Engine>,
    pub lookup: Arc<crate::graph::Lookup>,
    pub options: Options,
    /// Column types of relations, inferred for unit tests.
    pub unit_schemas: super::unit::SchemaCache,
}

impl Runner<'_> {
    /// Runs the selected nodes in dependency order (see [`schedule`]). Every planned node ends
    /// with one result; a plan that cannot finish is an error naming its nodes.
    pub fn run(&self, selected: &BTreeSet<String>, on_event: &(dyn Fn(Event) + Sync)) -> Result<Vec<NodeResult>, Unfinished> {
        let plan = schedule::plan(self.graph, selected, &|id| self.kind(id));
        // Data tests of one model run together (one unit of work): the engine can then compute
        // a view once for all of them.
        let groups = self.test_batches(&plan.order);
        let plan = plan.batched(groups);
        let total = plan.order.len();
        let started = AtomicUsize::new(0);
        let execute = |ready: &Ready| -> Vec<NodeResult> {
            let nodes: Vec<&Node> = ready.members.iter().map(|i| self.node(i)).collect();
            let first = started.fetch_add(nodes.len(), Ordering::SeqCst) + 1;
            for (i, node) in nodes.iter().enumerate() {
                on_event(Event::Started { node, index: first + i, total });
            }
            match self.skip_reason(ready) {
                Some(message) => nodes.iter().map(|n| self.skipped(n, ready.thread, message.clone())).collect(),
                None if nodes.len() > 1 => self.data_test_batch(&nodes, ready.thread),
                None => vec![self.execute(nodes[0], ready.thread)],
            }
        };
        let finished = |r: &NodeResult, index: usize| on_event(Event::Finished { node: self.node(&r.unique_id), result: r, index, total });
        schedule::run(&plan, self.options.threads, self.options.fail_fast, &execute, &finished)
    }

    /// What the plan needs to know of a node.
    fn kind(&self, id: &str) -> Kind {
        if let Some(u) = self.manifest.unit_tests.get(id) {
            return u.attached_node.clone().map_or(Kind::Other, |model| Kind::UnitTest { model });
        }
        match self.manifest.nodes.get(id) {
            Some(n) if n.resource_type == ResourceType::Seed => Kind::Relation,
            Some(n) if n.resource_type == ResourceType::Test => Kind::Test,
            Some(n) if n.resource_type == ResourceType::Model && n.is_ephemeral() => Kind::Ephemeral,
            Some(n) if matches!(n.resource_type, ResourceType::Model | ResourceType::Snapshot) => Kind::Relation,
            _ => Kind::Other,
        }
    }

    /// Why a unit does not run: a failed dependency (named at the root), `--fail-fast`, Ctrl-C.
    fn skip_reason(&self, ready: &Ready) -> Option<String> {
        if let Some((root, status)) = ready.blocked_by {
            let node = self.node(root);
            let what = match node.resource_type {
                ResourceType::Test => "test",
                ResourceType::UnitTest => "unit test",
                ResourceType::Seed => "seed",
                ResourceType::Snapshot => "snapshot",
                _ => "model",
            };
            let how = if status == Status::Fail { "failed" } else { "errored" };
            return Some(format!("skipped: upstream {what} `{}` {how}", node.name));
        }
        if self.options.cancel.load(Ordering::SeqCst) {
            return Some("skipped: the run was interrupted".into());
        }
        ready.stopped.then(|| "skipped: --fail-fast stopped the run".into())
    }

    /// Groups of two or more data tests that read only the same model and keep no failing
    /// rows, by their first member.
    fn test_batches(&self, order: &[String]) -> Vec<Vec<String>> {
        if !self.engine.supports(crate::engine::Capability::SharedTestWork) || self.options.dry_run {
            return vec![];
        }
        let mut by_model: HashMap<&str, Vec<String>> = HashMap::new();
        for id in order {
            let Some(n) = self.manifest.nodes.get(id) else { continue };
            if n.resource_type != ResourceType::Test || super::data_tests::store_as(n, self.options.store_failures).is_some() {
                continue;
            }
            if let [only] = self.graph.parents.get(id).map(Vec::as_slice).unwrap_or(&[])
                && self.manifest.nodes.get(only).is_some_and(|m| m.is_refable() && !m.is_ephemeral())
            {
                by_model.entry(only.as_str()).or_default().push(id.clone());
            }
        }
        by_model.into_values().filter(|m| m.len() > 1).collect()
    }

    /// Runs data tests of one model together (see [`Engine::query_tests`]).
    fn data_test_batch(&self, nodes: &[&Node], thread: usize) -> Vec<NodeResult> {
        let started_at = now();
        let start = Instant::now();
        let compiled: Vec<Result<Compiled, Failure>> = nodes.iter().map(|n| self.compile(n)).collect();
        let no_config = Default::default();
        let cfgs: Vec<super::data_tests::TestConfig> = nodes
            .iter()
            .zip(&compiled)
            .map(|(n, c)| super::data_tests::TestConfig::of(n, c.as_ref().map_or(&no_config, |c| &c.inline_config)))
            .collect();
        let queries: Vec<String> = compiled
            .iter()
            .zip(&cfgs)
            .map(|(c, cfg)| c.as_ref().map(|c| super::data_tests::wrap(&c.sql, cfg)).unwrap_or_default())
            .collect();
        let answers = self.engine.query_tests(&queries);
        let seconds = start.elapsed().as_secs_f64() / nodes.len() as f64;
        nodes
            .iter()
            .zip(compiled)
            .zip(cfgs.iter().zip(answers))
            .map(|((node, compiled), (cfg, answer))| {
                let outcome = match compiled {
                    Err(f) => Outcome::error(f),
                    Ok(c) => Outcome { compiled: Some(c.sql), ..judged(node, cfg, answer) },
                };
                finish(node, outcome, started_at.clone(), seconds, thread)
            })
            .collect()
    }

    fn node(&self, id: &str) -> &Node {
        self.manifest.nodes.get(id).or_else(|| self.manifest.unit_tests.get(id)).expect("planned nodes exist")
    }

    fn skipped(&self, node: &Node, thread: usize, message: String) -> NodeResult {
        finish(node, Outcome::with(Status::Skipped, message), now(), 0.0, thread)
    }

    fn execute(&self, node: &Node, thread: usize) -> NodeResult {
        let started_at = now();
        let start = Instant::now();
        // What an earlier node left unclaimed on this thread (a compile-time `run_query`).
        let _ = self.engine.take_response();
        let mut outcome =
            if self.options.dry_run && node.resource_type != ResourceType::UnitTest { self.dry_run(node) } else { self.build(node) };
        if outcome.response.is_none() {
            outcome.response = self.engine.take_response();
        }
        finish(node, outcome, started_at, start.elapsed().as_secs_f64(), thread)
    }

    /// A dry run of a node: its query validated by the warehouse, which reports the bytes it
    /// would process and its columns. Seeds are not loaded.
    fn dry_run(&self, node: &Node) -> Outcome {
        if node.resource_type == ResourceType::Seed {
            return Outcome::with(Status::Success, "DRY RUN (seeds are not loaded)".into());
        }
        let compiled = match self.compile(node) {
            Ok(c) => c,
            Err(f) => return Outcome::error(f),
        };
        let (query, options) = if node.resource_type == ResourceType::Test {
            (super::data_tests::wrap(&compiled.sql, &super::data_tests::TestConfig::of(node, &compiled.inline_config)), None)
        } else {
            (compiled.sql.clone(), Some(NodeConfig::from_map(&node.config).0.table))
        };
        let relation = relation_name(node);
        let mut outcome = match self.engine.dry_run(&query, options.as_ref().map(|o| (&relation, o))) {
            Ok(d) => {
                let columns: Vec<Json> = d.columns.iter().map(|(c, t)| serde_json::json!({"name": c, "data_type": t})).collect();
                let response = serde_json::json!({"dry_run": true, "bytes_processed": d.bytes_processed, "columns": columns});
                Outcome {
                    response: response.as_object().cloned(),
                    ..Outcome::with(Status::Success, format!("DRY RUN {}", human_bytes(d.bytes_processed)))
                }
            }
            Err(e) => Outcome::error(Failure::engine(&e, sql_error(node, None, &query, &e))),
        };
        outcome.compiled = Some(compiled.sql);
        outcome
    }

    fn build(&self, node: &Node) -> Outcome {
        if let Some(d) = self.options.rejected.get(&node.unique_id) {
            return Outcome::error(Failure { code: d.code, message: d.message.clone(), diagnostic: Some(d.clone()) });
        }
        match node.resource_type {
            ResourceType::Seed => {
                Outcome { relation: Some(node.relation(self.jinja.shared.target.quote_char()).render()), ..Outcome::from(self.seed(node)) }
            }
            ResourceType::UnitTest => self.unit_test(node),
            ResourceType::Model if self.is_microbatch(node) => {
                Outcome { relation: Some(node.relation(self.jinja.shared.target.quote_char()).render()), ..self.microbatch(node) }
            }
            _ => match self.compile(node) {
                Ok(c) if node.resource_type == ResourceType::Test => self.data_test(node, c.sql, &c.inline_config),
                Ok(c) => {
                    let mut o = Outcome::from(self.model(node, &c.sql, self.options.full_refresh));
                    o.compiled = Some(c.sql);
                    o.relation = Some(node.relation(self.jinja.shared.target.quote_char()).render());
                    o
                }
                Err(f) => Outcome::error(f),
            },
        }
    }

    /// Runs a data test: stores its failing rows when configured, then judges the count.
    fn data_test(&self, node: &Node, sql: String, inline_config: &crate::project::config::ConfigMap) -> Outcome {
        let cfg = super::data_tests::TestConfig::of(node, inline_config);
        let (main, stored) = match super::data_tests::store_as(node, self.options.store_failures) {
            Some(kind) => {
                let r = relation_name(node);
                let what = if kind == "view" { Materialization::view(sql.clone()) } else { Materialization::table(sql.clone()) };
                if let Err(e) = self.engine.create_schema(&r.database, &r.schema).and_then(|_| self.engine.materialize(&r, &what, &[])) {
                    return Outcome { compiled: Some(sql), ..Outcome::error(e.into()) };
                }
                let rendered = node.relation(self.jinja.shared.target.quote_char()).render();
                (format!("select * from {rendered}"), Some(rendered))
            }
            None => (sql.clone(), None),
        };
        let query = super::data_tests::wrap(&main, &cfg);
        let answer = if stored.is_some() {
            self.engine.query(&query, None)
        } else {
            self.engine.query_tests(&[query]).pop().unwrap_or_else(|| Err(EngineError::new("the engine returned no answer")))
        };
        let mut outcome = judged(node, &cfg, answer);
        if let (Some(r), Status::Fail | Status::Warn) = (&stored, outcome.status) {
            outcome.message = format!("{}\n  See the failing rows: select * from {r}", outcome.message);
        }
        outcome.relation = stored;
        outcome.compiled = Some(sql);
        outcome
    }

    /// `persist_docs`: the model's and its columns' descriptions as comments in the warehouse.
    fn persist_docs(&self, node: &Node, relation: &RelationName, (rel, cols): (bool, bool), is_view: bool) -> Result<(), Failure> {
        let description = Some(node.description.as_str()).filter(|d| rel && !d.is_empty());
        let columns: Vec<(String, String)> = if cols {
            node.columns.values().filter(|c| !c.description.is_empty()).map(|c| (c.name.clone(), c.description.clone())).collect()
        } else {
            vec![]
        };
        self.engine.persist_docs(relation, is_view, description, &columns).map_err(|e| {
            let message = format!("persist_docs: {}", e.message);
            Failure::engine(&e, message)
        })
    }

    /// Whether an incremental model builds incrementally: it exists and no full refresh applies
    /// (a model's `full_refresh` config overrides `--full-refresh`, as in dbt).
    fn is_incremental(&self, node: &Node) -> bool {
        self.is_incremental_with(node, self.options.full_refresh)
    }

    fn is_incremental_with(&self, node: &Node, full_refresh: bool) -> bool {
        let (config, _) = NodeConfig::from_map(&node.config);
        config.materialized == Materialized::Incremental
            && !config.full_refresh.unwrap_or(full_refresh)
            && self.engine.describe(&relation_name(node)).ok().flatten().is_some()
    }

    fn compile(&self, node: &Node) -> Result<Compiled, Failure> {
        self.compile_with(node, &self.resolver)
    }

    /// Compiles `node` with `ref()` and `source()` answered by `resolver`.
    fn compile_with(&self, node: &Node, resolver: &Arc<dyn Resolver>) -> Result<Compiled, Failure> {
        let mut diags = Vec::new();
        let selected: BTreeSet<String> = [node.unique_id.clone()].into();
        let mut out = compile::compile(
            self.project,
            self.jinja,
            self.manifest,
            self.graph,
            resolver,
            &selected,
            &|n| self.is_incremental(n),
            &mut diags,
        );
        if let Some(d) = diags.first() {
            return Err(Failure::from(d.clone()));
        }
        let compiled = out.remove(&node.unique_id).ok_or_else(|| Failure::new(Code::Internal, "the model did not compile"))?;
        if compile::is_blank(&compiled.sql) && node.resource_type != ResourceType::Test {
            let what = format!("{} `{}` compiles to empty SQL", node.resource_type.as_str(), node.name);
            return Err(Failure::from(
                Diagnostic::error(Code::EmptyModel, what)
                    .with_file(node.original_file_path.clone())
                    .with_help("a model must contain a select statement; to switch it off use `{{ config(enabled=false) }}`"),
            ));
        }
        Ok(compiled)
    }

    /// Renders and runs a node's `pre-hook`s or `post-hook`s (with `this` the node's relation).
    fn hooks(&self, node: &Node, key: &str, hooks: &[String]) -> Result<(), Failure> {
        for (i, template) in hooks.iter().enumerate() {
            let sql = compile::render_hook(self.jinja, node, &self.resolver, template).map_err(Failure::from)?;
            if sql.trim().is_empty() {
                continue;
            }
            self.engine.execute(&sql).map_err(|e| hook_failure(&e, format!("{key} {} failed: {}\n{sql}", i + 1, e.message)))?;
        }
        Ok(())
    }

    /// Runs the `on-run-start` or `on-run-end` hooks (`which`) of every package, in dbt's order
    /// (packages by name, the root project last), one `operation` result each, as dbt reports
    /// them; stops at the first that fails.
    pub fn project_hooks(&self, which: &str, results: &[NodeResult]) -> Vec<NodeResult> {
        let mut packages: Vec<&crate::project::Package> = self.project.packages.iter().collect();
        packages.sort_by_key(|p| (p.is_root, p.name.clone()));
        let mut out = Vec::new();
        for package in packages {
            let hooks = if which == "on-run-start" { &package.config.on_run_start } else { &package.config.on_run_end };
            for (i, hook) in hooks.iter().enumerate() {
                let result = self.project_hook(&package.name, which, i, hook, results);
                let failed = result.status == Status::Error;
                out.push(result);
                if failed {
                    return out;
                }
            }
        }
        out
    }

    fn project_hook(&self, package: &str, which: &str, i: usize, hook: &str, results: &[NodeResult]) -> NodeResult {
        let (started_at, start) = (now(), Instant::now());
        let name = format!("{package}.{which}.{i}");
        let sql = self
            .jinja
            .render_project_hook(hook, package, if which == "on-run-end" { self.run_end_context(results) } else { vec![] })
            .map_err(|e| Failure::new(Code::HookFailed, format!("cannot render {name} `{hook}`: {e}")));
        let ran = sql.clone().and_then(|sql| match sql.trim() {
            "" => Ok(()),
            _ => self.engine.execute(&sql).map(|_| ()).map_err(|e| hook_failure(&e, format!("{name} failed: {}\n{sql}", e.message))),
        });
        let outcome = match ran {
            Ok(()) => Outcome { failures: Some(0), ..Outcome::with(Status::Success, format!("{name} passed")) },
            Err(f) => Outcome::error(f),
        };
        NodeResult {
            unique_id: format!("operation.{package}.{package}-{which}-{i}"),
            compiled: sql.ok(),
            ..finish_named(outcome, started_at, start.elapsed().as_secs_f64(), 0)
        }
    }

    /// dbt's `on-run-end` context: `results` (each with `status`, `message`, `failures`,
    /// `execution_time`, `thread_id`, `adapter_response` and the `node`), and the `schemas` and
    /// `database_schemas` of the relations the run built.
    fn run_end_context(&self, results: &[NodeResult]) -> Vec<(String, minijinja::Value)> {
        let ran: Vec<(&NodeResult, &Node)> = results.iter().filter_map(|r| Some((r, self.manifest.nodes.get(&r.unique_id)?))).collect();
        let values: Vec<Json> = ran
            .iter()
            .map(|(r, n)| {
                serde_json::json!({
                    "status": r.status.as_str(),
                    "message": r.message,
                    "failures": r.failures,
                    "execution_time": r.seconds,
                    "thread_id": format!("Thread-{}", r.thread + 1),
                    "adapter_response": super::results::adapter_response(r, &|t| t.to_string()),
                    "node": {
                        "unique_id": n.unique_id, "name": n.name, "resource_type": n.resource_type.as_str(),
                        "package_name": n.package, "original_file_path": n.original_file_path,
                        "database": n.database, "schema": n.schema, "alias": n.alias,
                        "config": &*n.config, "tags": n.tags(),
                    },
                })
            })
            .collect();
        let built: BTreeSet<(&str, &str)> =
            ran.iter().filter(|(_, n)| n.is_refable()).map(|(_, n)| (n.database.as_str(), n.schema.as_str())).collect();
        let schemas: BTreeSet<&str> = built.iter().map(|(_, s)| *s).collect();
        let database_schemas: Vec<Json> = built.iter().map(|(d, s)| serde_json::json!([d, s])).collect();
        vec![
            ("results".into(), crate::jinja::ser(&Json::from(values))),
            ("schemas".into(), crate::jinja::ser(&serde_json::json!(schemas))),
            ("database_schemas".into(), crate::jinja::ser(&Json::from(database_schemas))),
        ]
    }

    pub(super) fn seed_load(&self, node: &Node) -> Result<SeedLoad, Failure> {
        let full_refresh = self.options.full_refresh || json_truthy(node.config.get("full_refresh")).unwrap_or(false);
        seed_load(self.project, node, full_refresh)
    }

    fn seed(&self, node: &Node) -> Result<(String, Option<u64>), Failure> {
        let load = self.seed_load(node)?;
        self.engine.create_schema(&load.relation.database, &load.relation.schema)?;
        let rows = self.engine.load_seed(&load).map_err(|e| {
            let message = format!("{} ({})", e.message, load.path.display());
            Failure::engine(&e, message)
        })?;
        Ok((format!("INSERT {rows}"), Some(rows)))
    }

    /// Builds a model: its contract applied to the SQL, then the steps of its build plan.
    /// Whether `node` is a `microbatch` incremental model on a target that builds them.
    fn is_microbatch(&self, node: &Node) -> bool {
        let text = |key: &str| node.config.get(key).and_then(Json::as_str);
        text("incremental_strategy") == Some(Strategy::Microbatch.as_str())
            && text("materialized") == Some(Materialized::Incremental.as_str())
            && self.jinja.shared.target.adapter.supports_strategy("microbatch")
    }

    /// A microbatch model: compiled and written batch by batch, each reading its window of
    /// the upstream relations that have an `event_time`. The first batch of a first build (or
    /// a full refresh) creates the table; the others replace their window. A failed batch
    /// stops the model; the batches before it stay written.
    fn microbatch(&self, node: &Node) -> Outcome {
        let (node_config, _) = NodeConfig::from_map(&node.config);
        let Some(config) = node_config.microbatch else {
            return Outcome::error(Failure::new(
                Code::InvalidConfig,
                "the microbatch configs are incomplete\n  = help: set `event_time`, `batch_size` (hour, day, month or year) and `begin`",
            ));
        };
        let full_refresh = self.options.full_refresh && node_config.full_refresh != Some(false);
        let now = time::OffsetDateTime::now_utc();
        let batches = match super::microbatch::batches(&config, self.is_incremental(node), now, self.options.event_time) {
            Ok(b) => b,
            Err(m) => return Outcome::error(Failure::new(Code::InvalidConfig, m)),
        };
        let event_times = Arc::new(compile::event_times(self.manifest, self.jinja.shared.target.quote_char()));
        let (mut rows, mut sql) = (0, None);
        for (i, batch) in batches.iter().enumerate() {
            let (start, end) = (super::microbatch::sql_time(batch.start), super::microbatch::sql_time(batch.end));
            let resolver: Arc<dyn Resolver> = Arc::new(compile::BatchResolver {
                inner: self.resolver.clone(),
                event_times: event_times.clone(),
                start: start.clone(),
                end: end.clone(),
            });
            let built = self.compile_with(node, &resolver).and_then(|c| {
                let written = self.model(node, &c.sql, full_refresh && i == 0);
                sql = Some(c.sql);
                written
            });
            match built {
                Ok((_, n)) => rows += n.unwrap_or(0),
                Err(f) => {
                    let message = format!(
                        "batch {} of {} ({start} to {end}) failed; the {i} before it are written:\n{}",
                        i + 1,
                        batches.len(),
                        f.message
                    );
                    return Outcome { compiled: sql, ..Outcome::error(Failure { message, ..f }) };
                }
            }
        }
        let plural = if batches.len() == 1 { "" } else { "es" };
        Outcome {
            rows: Some(rows),
            compiled: sql,
            ..Outcome::with(Status::Success, format!("MERGE {rows} in {} batch{plural}", batches.len()))
        }
    }

    fn model(&self, node: &Node, sql: &str, full_refresh: bool) -> Result<(String, Option<u64>), Failure> {
        let (config, _) = NodeConfig::from_map(&node.config);
        let (sql, checks) = if config.contract_enforced {
            let render = |text: &str| {
                compile::render_hook(self.jinja, node, &self.resolver, text).map_err(|d| crate::diagnostics::render::human(&d, false))
            };
            let e = super::contracts::enforce(self.engine.as_ref(), node, sql, self.jinja.shared.target.quote_char(), &render)
                .map_err(|m| Failure::new(Code::ContractViolation, m))?;
            (e.sql, e.checks)
        } else {
            (sql.to_string(), vec![])
        };
        let relation = relation_name(node);
        let materialized = config.materialized.clone();
        let inputs = Inputs {
            relation: relation.clone(),
            sql: &sql,
            config: &config,
            adapter: self.jinja.shared.target.adapter,
            exists: materialized == Materialized::Incremental && self.is_incremental_with(node, full_refresh),
            full_refresh,
            external: (materialized == Materialized::External).then(|| node.external_target(self.project)),
            defines_macro: &|name| self.jinja.has_macro(name),
            custom_materialization: self.jinja.shared.macros.materializations.contains(materialized.as_str()),
            snapshot: config.snapshot.as_ref().map(|c| self.snapshot_exprs(node, c)).transpose()?,
        };
        let steps = super::plan::plan(&inputs).map_err(|e| Failure::new(e.code, format!("{}\n  = help: {}", e.message, e.help)))?;
        let run_path = super::artifacts::artifact_path(self.project, node, "run");
        // Grants the relation had before are compared with the config (and revoked if gone).
        let existed = !config.access.grants.is_empty() && self.engine.describe(&relation)?.is_some();
        let mut verb = (String::new(), None);
        for step in steps {
            match step {
                Step::CreateSchema { database, schema } => self.engine.create_schema(&database, &schema)?,
                Step::PreHooks(_) => self.hooks(node, "pre-hook", &config.pre_hook)?,
                Step::PostHooks(_) => self.hooks(node, "post-hook", &config.post_hook)?,
                Step::PersistDocs { relation: rel, columns, is_view } => self.persist_docs(node, &relation, (rel, columns), is_view)?,
                Step::Grants { is_view } => self.engine.apply_grants(&relation, is_view, &config.access, existed).map_err(|e| {
                    let message = format!("grants: {}", e.message);
                    Failure::engine(&e, message)
                })?,
                Step::Materialize(what) => {
                    let rows = self.engine.materialize(&relation, &what, &checks).map_err(|e| {
                        let message = sql_error(node, Some(&run_path), &sql, &e);
                        Failure::engine(&e, message)
                    })?;
                    verb = (verb_of(&what, rows), rows);
                }
                Step::CustomIncremental { macro_name, temp, unique_key, sql } => {
                    let rows = self.custom_incremental(node, &relation, &macro_name, &temp, &unique_key, &sql)?;
                    verb = (format!("MERGE {}", rows.unwrap_or(0)), rows);
                }
            }
        }
        Ok(verb)
    }

    /// A snapshot's time and row hashes, from dbt's `snapshot_get_time()` and
    /// `snapshot_hash_arguments` (which a project may override).
    fn snapshot_exprs(
        &self,
        node: &Node,
        c: &crate::project::typed::SnapshotConfig,
    ) -> Result<crate::engine::snapshot::Expressions, Failure> {
        use crate::engine::snapshot::{Expressions, deleted_scd_id_args, scd_id_args};
        let call = |name: &str, args: Vec<minijinja::Value>| {
            let ctx = compile::node_ctx(self.jinja, node, &self.resolver, false);
            self.jinja
                .call_macro(name, args, ctx)
                .map(|v| v.to_string().trim().to_string())
                .map_err(|e| Failure::new(Code::JinjaRender, format!("{name}() for snapshot `{}`: {e}", node.name)))
        };
        let now = call("snapshot_get_time", vec![])?;
        let hash = |args: Vec<String>| call("snapshot_hash_arguments", vec![minijinja::Value::from(args)]);
        Ok(Expressions { scd_id: hash(scd_id_args(c, &now))?, deleted_scd_id: hash(deleted_scd_id_args(c, &now))?, now })
    }

    /// A project's incremental strategy (dbt's `get_incremental_<name>_sql`): the new rows are
    /// written to `temp`, the macro's SQL (given dbt's `arg_dict`) runs, `temp` is dropped.
    fn custom_incremental(
        &self,
        node: &Node,
        relation: &RelationName,
        macro_name: &str,
        temp: &RelationName,
        unique_key: &[String],
        sql: &str,
    ) -> Result<Option<u64>, Failure> {
        let rows = self.engine.materialize(temp, &Materialization::table(sql), &[])?;
        let quote = self.jinja.shared.target.quote_char();
        let result = (|| {
            let columns = self.engine.describe(relation)?.unwrap_or_default();
            let sql =
                compile::call_strategy_macro(self.jinja, node, &self.resolver, macro_name, relation, temp, unique_key, &columns, quote)
                    .map_err(Failure::from)?;
            self.engine.execute(&sql).map_err(|e| {
                let message = format!("{macro_name} failed: {}\n{sql}", e.message);
                Failure::engine(&e, message)
            })
        })();
        let temp_sql = crate::jinja::relation::Relation::new(&temp.database, &temp.schema, &temp.name, quote).render();
        let _ = self.engine.execute(&format!("drop table if exists {temp_sql}"));
        result.map(|_| rows)
    }
}

/// The status text of a materialization, as dbt's adapters report it.
fn verb_of(what: &Materialization, rows: Option<u64>) -> String {
    match what {
        Materialization::View { .. } => "CREATE VIEW".to_string(),
        Materialization::Table { .. } => format!("SELECT {}", rows.unwrap_or(0)),
        Materialization::Incremental { .. } => format!("MERGE {}", rows.unwrap_or(0)),
        Materialization::External { .. } => format!("WRITE {}", rows.unwrap_or(0)),
        Materialization::Snapshot { .. } => format!("INSERT {}", rows.unwrap_or(0)),
    }
}

/// A failed hook: an interrupted or lost connection keeps its code.
fn hook_failure(e: &EngineError, message: String) -> Failure {
    match e.kind {
        ErrorKind::Query | ErrorKind::Violation => Failure::new(Code::HookFailed, message),
        _ => Failure::engine(e, message),
    }
}
