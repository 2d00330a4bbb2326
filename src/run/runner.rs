//! The runner: executes selected seeds and models in dependency order, in parallel (`threads`),
//! on an [`Engine`]. A failed node marks its descendants as skipped; with `fail_fast` the first
//! failure stops scheduling. Models are compiled just before they run, so `is_incremental()` and
//! `run_query` see the warehouse as it is then.

use crate::compile::{self, Compiled};
use crate::engine::{Engine, IncrementalStrategy, Materialization, RelationName, SchemaChange, SeedLoad};
use crate::graph::Graph;
use crate::jinja::{JinjaEnv, QueryRunner, QueryTable, Resolver};
use crate::parse::{Manifest, Node, ResourceType};
use crate::project::Project;
use crate::project::config::json_truthy;
use serde_json::Value as Json;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    Error,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::Skipped => "skipped",
        }
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
    /// Set (e.g. by Ctrl-C) to stop scheduling: running nodes finish, the rest are skipped.
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
}

/// `run_query` / `adapter.get_*` answered by the engine.
pub struct EngineQueries(pub Arc<dyn Engine>, pub char);

impl QueryRunner for EngineQueries {
    fn run_query(&self, sql: &str) -> Result<QueryTable, String> {
        self.0.query(sql, None).map_err(|e| e.message)
    }
    fn get_relation(&self, database: &str, schema: &str, identifier: &str) -> Option<crate::jinja::relation::Relation> {
        let r = RelationName { database: database.into(), schema: schema.into(), name: identifier.into() };
        self.0.describe(&r).ok().flatten().map(|_| crate::jinja::relation::Relation::new(database, schema, identifier, self.1))
    }
    fn get_columns(&self, relation: &crate::jinja::relation::Relation) -> Vec<(String, String)> {
        let r = RelationName {
            database: relation.database.clone().unwrap_or_default(),
            schema: relation.schema.clone().unwrap_or_default(),
            name: relation.identifier.clone().unwrap_or_default(),
        };
        self.0.describe(&r).ok().flatten().unwrap_or_default()
    }
}

pub fn relation_name(node: &Node) -> RelationName {
    RelationName { database: node.database.clone(), schema: node.schema.clone(), name: node.alias.clone() }
}

fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The nodes this run executes (seeds and non-ephemeral models among `selected`) and, for each,
/// the executed nodes it waits for (through ephemeral models too).
fn plan(manifest: &Manifest, graph: &Graph, selected: &BTreeSet<String>) -> (Vec<String>, HashMap<String, Vec<String>>) {
    let runs = |n: &Node| matches!(n.resource_type, ResourceType::Seed) || (n.resource_type == ResourceType::Model && !n.is_ephemeral());
    let order: Vec<String> =
        graph.order.iter().filter(|id| selected.contains(*id) && manifest.nodes.get(*id).is_some_and(runs)).cloned().collect();
    let in_run: BTreeSet<&String> = order.iter().collect();
    let mut deps = HashMap::new();
    for id in &order {
        let mut found = BTreeSet::new();
        let mut stack: Vec<&String> = graph.parents.get(id).map(|p| p.iter().collect()).unwrap_or_default();
        let mut seen = BTreeSet::new();
        while let Some(p) = stack.pop() {
            if !seen.insert(p) {
                continue;
            }
            if in_run.contains(p) {
                found.insert(p.clone());
            } else if manifest.nodes.get(p).is_some_and(Node::is_ephemeral) {
                stack.extend(graph.parents.get(p).map(|v| v.iter()).into_iter().flatten());
            }
        }
        deps.insert(id.clone(), found.into_iter().collect());
    }
    (order, deps)
}

pub struct Runner<'a> {
    pub project: &'a Project,
    pub jinja: &'a JinjaEnv,
    pub manifest: &'a Manifest,
    pub graph: &'a Graph,
    pub resolver: Arc<dyn Resolver>,
    pub engine: Arc<dyn Engine>,
    pub options: Options,
}

struct Queue {
    ready: VecDeque<String>,
    waiting: HashMap<String, usize>,
    results: HashMap<String, NodeResult>,
    running: usize,
    started: usize,
    stop: bool,
}

impl Runner<'_> {
    pub fn run(&self, selected: &BTreeSet<String>, on_event: &(dyn Fn(Event) + Sync)) -> Vec<NodeResult> {
        let (order, deps) = plan(self.manifest, self.graph, selected);
        let total = order.len();
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        for (id, ds) in &deps {
            for d in ds {
                children.entry(d.as_str()).or_default().push(id.as_str());
            }
        }
        let queue = Mutex::new(Queue {
            ready: order.iter().filter(|id| deps[*id].is_empty()).cloned().collect(),
            waiting: deps.iter().map(|(k, v)| (k.clone(), v.len())).collect(),
            results: HashMap::new(),
            running: 0,
            started: 0,
            stop: false,
        });
        let cv = Condvar::new();
        let threads = self.options.threads.clamp(1, 64).min(total.max(1));
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let (queue, cv, children, deps) = (&queue, &cv, &children, &deps);
                scope.spawn(move || {
                    loop {
                        let (id, index) = {
                            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                            loop {
                                if let Some(id) = q.ready.pop_front() {
                                    q.running += 1;
                                    q.started += 1;
                                    let index = q.started;
                                    break (id, index);
                                }
                                if q.running == 0 {
                                    // nothing ready and nothing running: done
                                    return;
                                }
                                q = cv.wait(q).unwrap_or_else(|e| e.into_inner());
                            }
                        };
                        let node = &self.manifest.nodes[&id];
                        on_event(Event::Started { node, index, total });
                        let result = {
                            let q = queue.lock().unwrap_or_else(|e| e.into_inner());
                            let failed_parent =
                                deps[&id].iter().find(|d| q.results.get(*d).is_some_and(|r| r.status != Status::Success)).cloned();
                            let stop = q.stop;
                            drop(q);
                            let cancelled = self.options.cancel.load(std::sync::atomic::Ordering::SeqCst);
                            match (failed_parent, stop, cancelled) {
                                (Some(p), _, _) => self.skipped(
                                    node,
                                    thread,
                                    format!(
                                        "skipped: {} did not succeed",
                                        self.manifest.nodes.get(&p).map_or(p.as_str(), |n| n.name.as_str())
                                    ),
                                ),
                                (None, _, true) => self.skipped(node, thread, "skipped: the run was interrupted".into()),
                                (None, true, false) => self.skipped(node, thread, "skipped: --fail-fast stopped the run".into()),
                                (None, false, false) => self.execute(node, thread),
                            }
                        };
                        on_event(Event::Finished { node, result: &result, index, total });
                        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                        if result.status == Status::Error && self.options.fail_fast {
                            q.stop = true;
                        }
                        q.results.insert(id.clone(), result);
                        q.running -= 1;
                        for c in children.get(id.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
                            if let Some(w) = q.waiting.get_mut(*c) {
                                *w -= 1;
                                if *w == 0 {
                                    q.ready.push_back((*c).to_string());
                                }
                            }
                        }
                        cv.notify_all();
                    }
                });
            }
        });
        let mut q = queue.into_inner().unwrap_or_else(|e| e.into_inner());
        order.iter().filter_map(|id| q.results.remove(id)).collect()
    }

    fn skipped(&self, node: &Node, thread: usize, message: String) -> NodeResult {
        let t = now();
        NodeResult {
            unique_id: node.unique_id.clone(),
            status: Status::Skipped,
            message,
            rows: None,
            seconds: 0.0,
            started_at: t.clone(),
            completed_at: t,
            thread,
            compiled: None,
            relation: None,
        }
    }

    fn execute(&self, node: &Node, thread: usize) -> NodeResult {
        let started_at = now();
        let start = Instant::now();
        let (outcome, compiled) = match node.resource_type {
            ResourceType::Seed => (self.seed(node), None),
            _ => match self.compile(node) {
                Ok(c) => {
                    let r = self.model(node, &c.sql);
                    (r, Some(c.sql))
                }
                Err(message) => (Err(message), None),
            },
        };
        let (status, message, rows) = match outcome {
            Ok((msg, rows)) => (Status::Success, msg, rows),
            Err(msg) => (Status::Error, msg, None),
        };
        NodeResult {
            unique_id: node.unique_id.clone(),
            status,
            message,
            rows,
            seconds: start.elapsed().as_secs_f64(),
            started_at,
            completed_at: now(),
            thread,
            compiled,
            relation: Some(node.relation(self.jinja.shared.target.quote_char()).render()),
        }
    }

    fn is_incremental(&self, node: &Node) -> bool {
        node.materialized() == "incremental"
            && !(self.options.full_refresh || json_truthy(node.config.get("full_refresh")).unwrap_or(false))
            && self.engine.describe(&relation_name(node)).ok().flatten().is_some()
    }

    fn compile(&self, node: &Node) -> Result<Compiled, String> {
        let mut diags = Vec::new();
        let selected: BTreeSet<String> = [node.unique_id.clone()].into();
        let mut out = compile::compile(
            self.project,
            self.jinja,
            self.manifest,
            self.graph,
            &self.resolver,
            &selected,
            &|n| self.is_incremental(n),
            &mut diags,
        );
        if let Some(d) = diags.first() {
            return Err(crate::diagnostics::render::human(d, false));
        }
        out.remove(&node.unique_id).ok_or_else(|| "the model did not compile".to_string())
    }

    /// Renders and runs a node's `pre-hook`s or `post-hook`s (with `this` the node's relation).
    fn hooks(&self, node: &Node, key: &str) -> Result<(), String> {
        let hooks = node.config.get(key).and_then(Json::as_array).cloned().unwrap_or_default();
        for (i, hook) in hooks.iter().enumerate() {
            let template = match hook {
                Json::String(s) => s.clone(),
                Json::Object(o) => o.get("sql").and_then(Json::as_str).unwrap_or("").to_string(),
                _ => continue,
            };
            let sql = compile::render_hook(self.jinja, node, &self.resolver, &template)
                .map_err(|d| crate::diagnostics::render::human(&d, false))?;
            if sql.trim().is_empty() {
                continue;
            }
            self.engine.execute(&sql).map_err(|e| format!("{key} {} failed: {}\n{sql}", i + 1, e.message))?;
        }
        Ok(())
    }

    /// Runs `on-run-start` or `on-run-end` of the root project.
    pub fn project_hooks(&self, hooks: &[String]) -> Result<usize, String> {
        let mut ran = 0;
        for hook in hooks {
            let sql = self.jinja.render_value(hook, self.project.name()).map_err(|e| format!("cannot render the hook `{hook}`: {e}"))?;
            if sql.trim().is_empty() {
                continue;
            }
            self.engine.execute(&sql).map_err(|e| format!("hook failed: {}\n{sql}", e.message))?;
            ran += 1;
        }
        Ok(ran)
    }

    fn seed(&self, node: &Node) -> Result<(String, Option<u64>), String> {
        let file = node.file.map(|f| &self.project.files[f]).ok_or("a seed without a file")?;
        let column_types: Vec<(String, String)> = node
            .config
            .get("column_types")
            .and_then(Json::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_string))).collect())
            .unwrap_or_default();
        let delimiter = node.config.get("delimiter").and_then(Json::as_str).and_then(|d| d.bytes().next()).unwrap_or(b',');
        let load = SeedLoad { relation: relation_name(node), path: file.abs_path.clone(), delimiter, column_types };
        let rows = self.engine.load_seed(&load).map_err(|e| format!("{} ({})", e.message, file.display_path))?;
        Ok((format!("INSERT {rows}"), Some(rows)))
    }

    fn model(&self, node: &Node, sql: &str) -> Result<(String, Option<u64>), String> {
        let relation = relation_name(node);
        let what = match node.materialized() {
            "view" => Materialization::View { sql: sql.to_string() },
            "table" => Materialization::Table { sql: sql.to_string() },
            "incremental" => {
                let strategy = node.config.get("incremental_strategy").and_then(Json::as_str).unwrap_or("merge");
                let unique_key: Vec<String> = match node.config.get("unique_key") {
                    Some(Json::String(k)) => vec![k.clone()],
                    Some(Json::Array(a)) => a.iter().filter_map(|k| k.as_str().map(str::to_string)).collect(),
                    _ => vec![],
                };
                let strategy = if strategy == "append" || unique_key.is_empty() {
                    IncrementalStrategy::Append
                } else {
                    IncrementalStrategy::Merge { unique_key }
                };
                if self.options.full_refresh || !self.is_incremental(node) {
                    Materialization::Table { sql: sql.to_string() }
                } else {
                    let on_schema_change =
                        SchemaChange::parse(node.config.get("on_schema_change").and_then(Json::as_str).unwrap_or("ignore"));
                    Materialization::Incremental { sql: sql.to_string(), strategy, on_schema_change }
                }
            }
            "external" => {
                let (location, format) = node.external_target(self.project);
                Materialization::External { sql: sql.to_string(), location, format }
            }
            other => return Err(format!("materialization `{other}` is not supported by the {} engine yet", self.engine.name())),
        };
        self.hooks(node, "pre-hook")?;
        let rows = self.engine.materialize(&relation, &what).map_err(|e| e.message)?;
        self.hooks(node, "post-hook")?;
        let verb = match what {
            Materialization::View { .. } => "CREATE VIEW".to_string(),
            Materialization::Table { .. } => format!("SELECT {}", rows.unwrap_or(0)),
            Materialization::Incremental { .. } => format!("MERGE {}", rows.unwrap_or(0)),
            Materialization::External { .. } => format!("WRITE {}", rows.unwrap_or(0)),
        };
        Ok((verb, rows))
    }
}
