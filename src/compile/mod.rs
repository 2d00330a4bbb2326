//! Stage 5: the compile phase. Renders each selected node for the target (`execute = true`,
//! relations resolved), inlines ephemeral models as CTEs the way dbt does, and checks the SQL
//! with sqlparser in the target's dialect.

pub mod sqlcheck;

use crate::diagnostics::{Diagnostic, SourceText};
use crate::graph::{Graph, Lookup};
use crate::jinja::context::{NodeCtx, NodeInfo, Phase, Record, RefCall};
use crate::jinja::error::to_diagnostic;
use crate::jinja::{JinjaEnv, Resolver, ser};
use crate::parse::{Manifest, Node, ResourceType};
use crate::project::Project;
use minijinja::Value;
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

/// Resolves `ref`/`source` against the parsed manifest.
pub struct ManifestResolver {
    relations: HashMap<String, Value>,
    lookup: Arc<Lookup>,
    graph_value: OnceLock<Value>,
    graph_json: Box<dyn Fn() -> serde_json::Value + Send + Sync>,
}

impl ManifestResolver {
    pub fn new(
        manifest: &Manifest,
        lookup: Arc<Lookup>,
        quote: char,
        graph_json: Box<dyn Fn() -> serde_json::Value + Send + Sync>,
    ) -> ManifestResolver {
        let mut relations = HashMap::new();
        for n in manifest.nodes.values().filter(|n| n.is_refable()) {
            relations.insert(n.unique_id.clone(), n.relation(quote).into_value());
        }
        for s in manifest.sources.values() {
            let mut r = s.relation(quote);
            if let Some(loc) =
                s.external.get("location").and_then(|v| v.as_str()).or_else(|| s.meta.get("external_location").and_then(|v| v.as_str()))
            {
                let _ = loc; // external files are registered by the engine under this name
                r.kind = "external".into();
            }
            relations.insert(s.unique_id.clone(), r.into_value());
        }
        ManifestResolver { relations, lookup, graph_value: OnceLock::new(), graph_json }
    }

    /// With `empty` (`--empty`), every `ref()` and `source()` reads zero rows (not ephemeral
    /// models, which are inlined, and not `this`).
    pub fn limited(mut self, empty: bool) -> ManifestResolver {
        if !empty {
            return self;
        }
        for value in self.relations.values_mut() {
            if let Some(r) = value.downcast_object_ref::<crate::jinja::relation::Relation>() {
                let mut r = r.clone();
                r.limit = Some(0);
                *value = r.into_value();
            }
        }
        self
    }

    /// `ref()`s to the nodes of `deferred` resolve to those relations (`--defer`).
    pub fn deferring(mut self, deferred: &HashMap<String, crate::engine::RelationName>, quote: char) -> ManifestResolver {
        for (id, r) in deferred {
            let relation = crate::jinja::relation::Relation::new(&r.database, &r.schema, &r.name, quote);
            self.relations.insert(id.clone(), relation.into_value());
        }
        self
    }
}

impl Resolver for ManifestResolver {
    fn resolve_ref(&self, from_package: &str, package: Option<&str>, name: &str, version: Option<&str>) -> Result<Value, String> {
        let call = RefCall { package: package.map(str::to_string), name: name.to_string(), version: version.map(str::to_string) };
        let id = self.lookup.resolve_ref(from_package, &call).ok_or_else(|| format!("`{name}` was not found (ref('{name}'))"))?;
        self.relations.get(id).cloned().ok_or_else(|| format!("`{name}` has no relation"))
    }
    fn resolve_source(&self, source: &str, table: &str) -> Result<Value, String> {
        let id = self.lookup.resolve_source("", source, table).ok_or_else(|| format!("source `{source}.{table}` was not found"))?;
        self.relations.get(id).cloned().ok_or_else(|| format!("source `{source}.{table}` has no relation"))
    }
    fn graph(&self) -> Value {
        self.graph_value.get_or_init(|| ser(&(self.graph_json)())).clone()
    }
}

/// `ref()` and `source()` in one batch of a microbatch model: relations with an `event_time`
/// read only the batch's window (dbt's `event_time_filter`), the others as they are.
pub struct BatchResolver {
    pub inner: Arc<dyn Resolver>,
    /// Rendered relation -> its `event_time` column.
    pub event_times: Arc<HashMap<String, String>>,
    pub start: String,
    pub end: String,
}

impl BatchResolver {
    fn windowed(&self, value: Value) -> Value {
        let Some(r) = value.downcast_object_ref::<crate::jinja::relation::Relation>() else { return value };
        let Some(field) = self.event_times.get(&r.render()) else { return value };
        let mut r = r.clone();
        r.event_time_filter =
            Some(crate::jinja::relation::EventTimeFilter { field: field.clone(), start: self.start.clone(), end: self.end.clone() });
        r.into_value()
    }
}

impl Resolver for BatchResolver {
    fn resolve_ref(&self, from_package: &str, package: Option<&str>, name: &str, version: Option<&str>) -> Result<Value, String> {
        self.inner.resolve_ref(from_package, package, name, version).map(|v| self.windowed(v))
    }
    fn resolve_source(&self, source: &str, table: &str) -> Result<Value, String> {
        self.inner.resolve_source(source, table).map(|v| self.windowed(v))
    }
    fn graph(&self) -> Value {
        self.inner.graph()
    }
}

/// Rendered relation -> `event_time` of every model, seed, snapshot and source that sets it.
pub fn event_times(manifest: &Manifest, quote: char) -> HashMap<String, String> {
    let field = |c: &crate::project::config::ConfigMap| c.get("event_time").and_then(|v| v.as_str()).map(str::to_string);
    let nodes = manifest.nodes.values().filter(|n| n.is_refable()).filter_map(|n| Some((n.relation(quote).render(), field(&n.config)?)));
    let sources = manifest.sources.values().filter_map(|s| Some((s.relation(quote).render(), field(&s.config)?)));
    nodes.chain(sources).collect()
}

/// The compiled form of one node.
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    /// SQL with ephemeral CTEs injected (what runs).
    pub sql: String,
    /// SQL as rendered, before injection.
    pub rendered: String,
    /// `(unique_id, "__dbt__cte__x as (...)")` in injection order.
    pub extra_ctes: Vec<(String, String)>,
    /// What `config()` calls set while rendering (a generic test's macro may set `fail_calc`,
    /// `warn_if`, ...).
    pub inline_config: crate::project::config::ConfigMap,
    /// The columns and types static analysis inferred (`None`: not analyzed, or unknown).
    pub columns: Option<Vec<(String, String)>>,
    /// Its render read the warehouse (`run_query`, introspection): the SQL depends on what the
    /// warehouse held then.
    pub queried: bool,
}

/// Which nodes have SQL to compile.
pub fn has_sql(n: &Node) -> bool {
    matches!(n.resource_type, ResourceType::Model | ResourceType::Analysis | ResourceType::Test | ResourceType::Snapshot)
}

pub fn node_ctx(jinja: &JinjaEnv, node: &Node, resolver: &Arc<dyn Resolver>, is_incremental: bool) -> NodeCtx {
    let info = NodeInfo {
        unique_id: node.unique_id.clone(),
        package: node.package.clone(),
        name: node.name.clone(),
        resource_type: node.resource_type.as_str(),
        original_file_path: node.original_file_path.clone(),
        path: node.path.clone(),
    };
    let n = node.clone();
    let mut ctx =
        NodeCtx::new(Phase::Compile, info, node.config.clone(), jinja.shared.clone()).with_model(Arc::new(move || n.context_value()));
    ctx.resolver = Some(resolver.clone());
    ctx.is_incremental = is_incremental;
    if node.is_refable() {
        ctx.this = Some(node.relation(jinja.shared.target.quote_char()).into_value());
    }
    ctx
}

/// Renders one node in the compile phase.
pub fn render_node(
    project: &Project,
    jinja: &JinjaEnv,
    node: &Node,
    resolver: &Arc<dyn Resolver>,
    is_incremental: bool,
) -> Result<String, Diagnostic> {
    render_with(project, jinja, node, node_ctx(jinja, node, resolver, is_incremental))
}

/// Renders one node with a prepared context (unit tests bring their own `this`, resolver and
/// overrides).
pub fn render_with(project: &Project, jinja: &JinjaEnv, node: &Node, ctx: NodeCtx) -> Result<String, Diagnostic> {
    render_recording(project, jinja, node, ctx).map(|(sql, _)| sql)
}

/// [`render_with`], also returning what the render recorded (its `config()` calls, whether
/// it read the warehouse).
fn render_recording(project: &Project, jinja: &JinjaEnv, node: &Node, ctx: NodeCtx) -> Result<(String, Record), Diagnostic> {
    let result = if node.test_metadata.is_some() {
        crate::parse::generic_tests_render(jinja, node, ctx, false)
    } else {
        let display = node.file.map_or(node.original_file_path.clone(), |f| project.files[f].display_path.clone());
        let source = crate::jinja::literals::mutable_literals(&node.raw_code).into_owned();
        let ctx = Arc::new(ctx);
        jinja.render(&display, &source, ctx.clone()).map(|s| (s, ctx.take_record()))
    };
    result.map_err(|e| {
        let raw = node.file.map(|f| SourceText::new(project.files[f].display_path.clone(), node.raw_code.clone()));
        let mut d = to_diagnostic(
            &e,
            &|p| raw.clone().filter(|s| s.path == p).or_else(|| crate::parse::source_for(project, jinja, p)),
            &format!("{} `{}`", node.resource_type.as_str(), node.name),
        );
        if d.labels.is_empty()
            && let Some(f) = node.file
        {
            d = d.with_label(crate::diagnostics::Label::new(project.files[f].source(), node.line, 1, 1, "while compiling this"));
        }
        d
    })
}

/// Renders a hook of `node` (Jinja, with `this` the node's relation).
pub fn render_hook(jinja: &JinjaEnv, node: &Node, resolver: &Arc<dyn Resolver>, hook: &str) -> Result<String, Diagnostic> {
    let mut ctx = node_ctx(jinja, node, resolver, false);
    ctx.secrets_allowed = true;
    jinja
        .render(&format!("<hook of {}>", node.name), hook, Arc::new(ctx))
        .map_err(|e| to_diagnostic(&e, &|_| None, &format!("a hook of `{}`", node.name)))
}

/// The SQL of a project's incremental strategy: its `macro_name` (`get_incremental_<name>_sql`)
/// called with dbt's `arg_dict` (target and temp relation, unique key, the target's columns).
#[allow(clippy::too_many_arguments)] // dbt's arg_dict, field by field
pub fn call_strategy_macro(
    jinja: &JinjaEnv,
    node: &Node,
    resolver: &Arc<dyn Resolver>,
    macro_name: &str,
    target: &crate::engine::RelationName,
    temp: &crate::engine::RelationName,
    unique_key: &[String],
    columns: &[(String, String)],
    quote: char,
) -> Result<String, Diagnostic> {
    use crate::jinja::{column::Column, relation::Relation};
    use minijinja::Value;
    let relation = |r: &crate::engine::RelationName| Relation::new(&r.database, &r.schema, &r.name, quote).into_value();
    let unique_key = match unique_key {
        [] => Value::from(()),
        [one] => Value::from(one.as_str()),
        many => Value::from(many.to_vec()),
    };
    let arg_dict: std::collections::BTreeMap<&str, Value> = [
        ("target_relation", relation(target)),
        ("temp_relation", relation(temp)),
        ("unique_key", unique_key),
        ("dest_columns", Value::from(columns.iter().map(|(n, t)| Column::new(n, t, quote).into_value()).collect::<Vec<_>>())),
        ("incremental_predicates", Value::from(())),
    ]
    .into();
    let ctx = node_ctx(jinja, node, resolver, true);
    jinja
        .call_macro(macro_name, vec![Value::from(arg_dict)], ctx)
        .map(|v| v.to_string())
        .map_err(|e| to_diagnostic(&e, &|_| None, &format!("`{macro_name}` of `{}`", node.name)))
}

/// Compiles `selected` (plus the ephemeral models they inline), in parallel.
#[allow(clippy::too_many_arguments)] // independent borrows of the pipeline's stages
pub fn compile(
    project: &Project,
    jinja: &JinjaEnv,
    manifest: &Manifest,
    graph: &Graph,
    resolver: &Arc<dyn Resolver>,
    selected: &BTreeSet<String>,
    is_incremental: &(dyn Fn(&Node) -> bool + Sync),
    diags: &mut Vec<Diagnostic>,
) -> HashMap<String, Compiled> {
    // Ephemeral ancestors are needed to inline them.
    let mut wanted: BTreeSet<&str> = selected.iter().map(String::as_str).collect();
    let mut stack: Vec<&str> = wanted.iter().copied().collect();
    while let Some(id) = stack.pop() {
        for p in graph.parents.get(id).map(Vec::as_slice).unwrap_or(&[]) {
            if manifest.nodes.get(p).is_some_and(Node::is_ephemeral) && wanted.insert(p) {
                stack.push(p);
            }
        }
    }
    let nodes: Vec<&Node> = wanted.iter().filter_map(|id| manifest.nodes.get(*id)).filter(|n| has_sql(n)).collect();
    let rendered: Vec<(String, Result<Compiled, Diagnostic>)> = nodes
        .par_iter()
        .map(|n| {
            let ctx = node_ctx(jinja, n, resolver, is_incremental(n));
            let compiled = render_recording(project, jinja, n, ctx).map(|(sql, record)| Compiled {
                rendered: sql.clone(),
                sql,
                extra_ctes: vec![],
                inline_config: record.inline_config,
                columns: None,
                queried: record.queried,
            });
            (n.unique_id.clone(), compiled)
        })
        .collect();
    let mut out: HashMap<String, Compiled> = HashMap::with_capacity(rendered.len());
    for (id, r) in rendered {
        match r {
            Ok(c) => {
                out.insert(id, c);
            }
            Err(d) => diags.push(d),
        }
    }
    // Inject ephemeral CTEs (into nodes with an ephemeral parent).
    let ids: Vec<String> = out
        .keys()
        .filter(|id| graph.parents.get(*id).is_some_and(|ps| ps.iter().any(|p| manifest.nodes.get(p).is_some_and(Node::is_ephemeral))))
        .cloned()
        .collect();
    let mut cte_cache: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for id in ids {
        let ctes = ephemeral_ctes(&id, manifest, graph, &out, &mut cte_cache);
        if !ctes.is_empty() {
            let c = out.get_mut(&id).expect("compiled");
            c.sql = inject_ctes(&c.rendered, &ctes);
            c.extra_ctes = ctes;
        }
    }
    out
}

/// The CTEs node `id` needs, ancestors first (dbt's `_recursively_prepend_ctes`).
fn ephemeral_ctes(
    id: &str,
    manifest: &Manifest,
    graph: &Graph,
    compiled: &HashMap<String, Compiled>,
    cache: &mut HashMap<String, Vec<(String, String)>>,
) -> Vec<(String, String)> {
    if let Some(c) = cache.get(id) {
        return c.clone();
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for p in graph.parents.get(id).map(Vec::as_slice).unwrap_or(&[]) {
        let Some(parent) = manifest.nodes.get(p) else {
            continue;
        };
        if !parent.is_ephemeral() {
            continue;
        }
        for cte in ephemeral_ctes(p, manifest, graph, compiled, cache) {
            if !out.iter().any(|(i, _)| *i == cte.0) {
                out.push(cte);
            }
        }
        if let Some(c) = compiled.get(p)
            && !out.iter().any(|(i, _)| i == p)
        {
            out.push((p.clone(), format!("__dbt__cte__{} as (\n{}\n)", parent.name, c.rendered.trim())));
        }
    }
    cache.insert(id.to_string(), out.clone());
    out
}

/// Puts CTEs at the front of `sql`, merging with an existing `WITH` as dbt does.
pub fn inject_ctes(sql: &str, ctes: &[(String, String)]) -> String {
    if ctes.is_empty() {
        return sql.to_string();
    }
    let joined = ctes.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>().join(", ");
    let start = skip_trivia(sql);
    let rest = &sql[start..];
    if let Some(after_with) = strip_keyword(rest, "with") {
        let (kw_end, body) = match strip_keyword(after_with.trim_start(), "recursive") {
            Some(b) => (sql.len() - b.len(), b),
            None => (sql.len() - after_with.len(), after_with),
        };
        format!("{} {joined}, {}", &sql[..kw_end], body.trim_start())
    } else {
        format!("{}with {joined}\n{}", &sql[..start], rest)
    }
}

/// Whether `sql` holds nothing but whitespace and comments.
pub fn is_blank(sql: &str) -> bool {
    skip_trivia(sql) >= sql.len()
}

/// Skips leading whitespace and SQL comments.
fn skip_trivia(sql: &str) -> usize {
    let mut i = 0;
    let b = sql.as_bytes();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if sql[i..].starts_with("--") {
            i = sql[i..].find('\n').map_or(sql.len(), |p| i + p + 1);
        } else if sql[i..].starts_with("/*") {
            i = sql[i..].find("*/").map_or(sql.len(), |p| i + p + 2);
        } else {
            return i;
        }
    }
}

fn strip_keyword<'a>(s: &'a str, kw: &str) -> Option<&'a str> {
    let head = s.get(..kw.len())?;
    if head.eq_ignore_ascii_case(kw) && s[kw.len()..].starts_with(|c: char| c.is_whitespace()) { Some(&s[kw.len()..]) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injects_ctes_like_dbt() {
        let ctes = vec![("model.p.e".to_string(), "__dbt__cte__e as (\nselect 1\n)".to_string())];
        assert_eq!(inject_ctes("select * from __dbt__cte__e", &ctes), "with __dbt__cte__e as (\nselect 1\n)\nselect * from __dbt__cte__e");
        assert_eq!(
            inject_ctes("-- c\nWITH a as (select 1) select * from a", &ctes),
            "-- c\nWITH __dbt__cte__e as (\nselect 1\n), a as (select 1) select * from a"
        );
        assert_eq!(
            inject_ctes("with recursive r as (select 1) select 1", &ctes),
            "with recursive __dbt__cte__e as (\nselect 1\n), r as (select 1) select 1"
        );
    }
}
