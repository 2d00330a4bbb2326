//! `kiln parse` and `kiln compile`.

use super::printer::Printer;
use super::session::{self, Session, Stop};
use super::{EXIT_OK, GlobalArgs, SelectArgs};
use crate::analyze;
use crate::compile::{self, Compiled, ManifestResolver, sqlcheck};
use crate::diagnostics::{Code, Diagnostic, Diagnostics, Label, SourceText};
use crate::jinja::Resolver;
use crate::parse::{Node, ResourceType};
use crate::project::typed::StaticAnalysis;
use crate::run::artifacts;
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Compile this SQL (with Jinja) instead of the project's nodes, and print it
    #[arg(long, value_name = "SQL")]
    pub inline: Option<String>,
    /// Skip the SQL syntax check of compiled models
    #[arg(long)]
    pub no_sql_check: bool,
    /// Static analysis of every node, in place of their `static_analysis` configs: `baseline`
    /// reports what is certain, `strict` also what cannot be typed, `off` skips it
    #[arg(long, value_name = "MODE", value_parser = ["strict", "baseline", "off"])]
    pub static_analysis: Option<String>,
    /// Read every source's columns from the target's warehouse (its information_schema) and keep
    /// them in target/source_columns.json, which static analysis then uses, offline, until the
    /// next --introspect
    #[arg(long)]
    pub introspect: bool,
}

pub fn parse(global: &GlobalArgs, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    let s = match session::load(global, env, printer, "parse", Stop::Graph) {
        Ok(s) => s,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    write_manifest(&s, &HashMap::new())?;
    printer.info(&format!(
        "Parsed {} in {:.2}s; wrote {}/manifest.json",
        summary(&s, &crate::graph::select::all(&s.manifest)),
        s.started.elapsed().as_secs_f64(),
        s.project.config().target_path
    ));
    std::mem::forget(s); // exiting: skip freeing every node
    Ok(EXIT_OK)
}

/// "3 models, 2 seeds, 5 data tests, 1 source".
pub fn summary(s: &Session, ids: &BTreeSet<String>) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for (rt, label) in [
        ("model", "model"),
        ("seed", "seed"),
        ("snapshot", "snapshot"),
        ("test", "data test"),
        ("unit_test", "unit test"),
        ("analysis", "analysis"),
        ("source", "source"),
        ("exposure", "exposure"),
    ] {
        let n = ids.iter().filter(|id| id.split('.').next() == Some(rt)).count();
        if n > 0 {
            counts.push((label, n));
        }
    }
    let _ = s;
    if counts.is_empty() {
        return "nothing".into();
    }
    counts
        .iter()
        .map(|(l, n)| {
            let plural = if *n == 1 || *l == "analysis" { "" } else { "s" };
            format!("{n} {l}{plural}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn resolver(s: &Session) -> Arc<dyn Resolver> {
    // `graph` is only built when a template can reach it (it names it).
    let uses_graph = s.manifest.nodes.values().any(|n| n.raw_code.contains("graph"))
        || s.jinja.shared.macros.packages.values().flat_map(|m| m.values()).any(|m| m.source.contains("graph"));
    if !uses_graph {
        return Arc::new(ManifestResolver::new(
            &s.manifest,
            s.lookup.clone(),
            s.target.quote_char(),
            Box::new(
                || serde_json::json!({"nodes": {}, "sources": {}, "exposures": {}, "metrics": {}, "groups": {}, "semantic_models": {}, "saved_queries": {}, "macros": {}}),
            ),
        )
        .deferring(&s.deferred, s.target.quote_char())
        .limited(s.invocation.empty));
    }
    let graph_json = {
        let nodes: serde_json::Map<String, serde_json::Value> = s
            .manifest
            .nodes
            .values()
            .map(|n| {
                let mut v = serde_json::json!({
                    "unique_id": n.unique_id, "name": n.name, "resource_type": n.resource_type.as_str(), "package_name": n.package,
                    "original_file_path": n.original_file_path, "path": n.path, "fqn": n.fqn, "tags": n.tags(), "config": n.config,
                    "database": n.database, "schema": n.schema, "alias": n.alias, "description": n.description,
                    "depends_on": {"nodes": s.graph.parents.get(&n.unique_id).cloned().unwrap_or_default(), "macros": n.macros},
                    "raw_code": &*n.raw_code,
                    "columns": n.columns.iter().map(|(k, c)| (k.clone(), serde_json::json!({"name": c.name, "description": c.description, "data_type": c.data_type}))).collect::<serde_json::Map<_, _>>(),
                });
                if let Some(m) = &n.test_metadata {
                    v["test_metadata"] = serde_json::json!({"name": m.name, "namespace": m.namespace, "kwargs": m.kwargs});
                    v["attached_node"] = serde_json::json!(n.attached_node);
                    v["column_name"] = serde_json::json!(n.column_name);
                }
                (n.unique_id.clone(), v)
            })
            .collect();
        let sources: serde_json::Map<String, serde_json::Value> = s
            .manifest
            .sources
            .values()
            .map(|src| {
                (
                    src.unique_id.clone(),
                    serde_json::json!({"unique_id": src.unique_id, "name": src.name, "source_name": src.source_name, "resource_type": "source",
                        "package_name": src.package, "database": src.database, "schema": src.schema, "identifier": src.identifier, "tags": src.tags, "meta": src.meta}),
                )
            })
            .collect();
        let doc = serde_json::json!({"nodes": nodes, "sources": sources, "exposures": {}, "metrics": {}, "groups": {}, "semantic_models": {}, "saved_queries": {}, "macros": {}});
        move || doc.clone()
    };
    Arc::new(
        ManifestResolver::new(&s.manifest, s.lookup.clone(), s.target.quote_char(), Box::new(graph_json))
            .deferring(&s.deferred, s.target.quote_char())
            .limited(s.invocation.empty),
    )
}

/// What `kiln compile` produced: compiled SQL by id, and any problems.
pub struct CompiledProject {
    pub compiled: HashMap<String, Compiled>,
    /// Incremental models compiled with `is_incremental()` true: their SQL as a full refresh
    /// builds them (what their columns are; the incremental SQL reads `{{ this }}`).
    pub full_refresh: HashMap<String, String>,
    pub diagnostics: Diagnostics,
    /// The warehouse answered the queries and introspection of the renders (the local
    /// warehouse of the embedded engine); else they read nothing, and the SQL of a node that
    /// made any is not what a build runs.
    pub queries_answered: bool,
}

/// Compiles `selected`; with `analysis`, also the full-refresh SQL of incremental models
/// compiled for an incremental run (what static analysis plans). With `local_warehouse`, the
/// embedded engine's warehouse answers the renders (see [`attach_local_warehouse`]). The SQL
/// check is part of static analysis ([`analyze_compiled`]), which parses each model once and
/// drops its syntax tree once planned.
pub fn compile_selected(s: &Session, selected: &BTreeSet<String>, analysis: bool, local_warehouse: bool) -> CompiledProject {
    let mut diags = Vec::new();
    let resolver = resolver(s);
    let (exists, queries_answered) = if local_warehouse { attach_local_warehouse(s) } else { (Box::new(|_: &Node| false) as _, false) };
    let is_incremental = |n: &Node| n.materialized() == "incremental" && exists(n);
    let compiled = compile::compile(&s.project, &s.jinja, &s.manifest, &s.graph, &resolver, selected, &is_incremental, &mut diags);
    let full_refresh = compiled
        .par_iter()
        .filter_map(|(id, c)| {
            let node = s.manifest.nodes.get(id).filter(|n| analysis && is_incremental(n))?;
            let rendered = compile::render_node(&s.project, &s.jinja, node, &resolver, false).ok()?;
            Some((id.clone(), compile::inject_ctes(&rendered, &c.extra_ctes)))
        })
        .collect();
    let mut d = Diagnostics(diags);
    d.sort();
    CompiledProject { compiled, full_refresh, diagnostics: d, queries_answered }
}

/// The SQL check of one compiled node: its problems, and its statements when it parsed.
pub fn check_node(s: &Session, selected: &BTreeSet<String>, id: &str, c: &Compiled) -> analyze::Checked {
    let Some(node) = s.manifest.nodes.get(id) else { return (vec![], None) };
    // Models, snapshots and analyses are the user's SQL; generic and singular tests are checked
    // by the engine when they run.
    if (node.is_ephemeral() && !selected.contains(id)) || node.resource_type == ResourceType::Test {
        return (vec![], None);
    }
    let dialect = sqlcheck::dialect_for(&s.target);
    let what = || format!("{} `{}`", node.resource_type.as_str(), node.name);
    let compiled_path = || artifacts::compiled_path(&s.project, node);
    let statements = match sqlcheck::check(dialect.as_ref(), &c.sql, || sqlcheck::Origin {
        compiled_path: compiled_path(),
        model_file: node.file.map_or(node.original_file_path.clone(), |f| s.project.files[f].display_path.clone()),
        what: what(),
    }) {
        Ok(statements) => statements,
        Err(d) => return (vec![d], None),
    };
    let Some(known) = embedded_functions(s) else { return (vec![], Some(statements)) };
    let unknown = sqlcheck::unknown_functions(&statements, known)
        .into_iter()
        .map(|(name, line, col)| {
            Diagnostic::warning(Code::UnknownFunction, format!("{} calls `{name}`, which the embedded engine does not have", what()))
                .with_label(Label::new(
                    SourceText::new(compiled_path(), c.sql.clone()),
                    line,
                    col,
                    name.len(),
                    "not a function of the embedded engine",
                ))
                .with_help("building it will fail; see docs/engine.md for the functions kiln adds and what differs from DuckDB")
        })
        .collect();
    (unknown, Some(statements))
}

/// Static analysis of what [`compile_selected`] compiled (`mode`: `--static-analysis`); with
/// `sql_check`, the SQL check of each node, first (also with `--static-analysis off`).
pub fn analyze_compiled(
    s: &Session,
    selected: &BTreeSet<String>,
    project: &CompiledProject,
    env: &HashMap<String, String>,
    options: (Option<StaticAnalysis>, bool),
) -> analyze::Analysis {
    analyze_with(s, selected, project, env, options, (&[], None))
}

/// [`analyze_compiled`], also inferring the seeds and sources `inputs` (no model may read them).
fn analyze_with(
    s: &Session,
    selected: &BTreeSet<String>,
    project: &CompiledProject,
    env: &HashMap<String, String>,
    (mode, sql_check): (Option<StaticAnalysis>, bool),
    (inputs, memo): (&[String], Option<&analyze::Memo>),
) -> analyze::Analysis {
    let check = |id: &str, c: &Compiled| check_node(s, selected, id, c);
    let warehouse = local_relations(s);
    let source_columns = read_source_columns(s);
    let input = analyze::Input {
        project: &s.project,
        manifest: &s.manifest,
        graph: &s.graph,
        target: &s.target,
        compiled: &project.compiled,
        check: if sql_check { Some(&check) } else { None },
        full_refresh: &project.full_refresh,
        env,
        mode,
        warehouse: warehouse.as_deref(),
        inputs,
        queries_answered: project.queries_answered,
        source_columns: &source_columns,
        memo,
    };
    analyze::analyze(&input)
}

/// Where `kiln compile --introspect` keeps the sources' columns.
fn source_columns_path(s: &Session) -> std::path::PathBuf {
    s.project.target_dir().join("source_columns.json")
}

/// The sources' columns `kiln compile --introspect` read last (none when it never ran, or the
/// file is unreadable).
fn read_source_columns(s: &Session) -> HashMap<String, Vec<(String, String)>> {
    let Ok(text) = std::fs::read_to_string(source_columns_path(s)) else { return HashMap::new() };
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let sources = doc["sources"].as_object().cloned().unwrap_or_default();
    let pair = |c: &serde_json::Value| Some((c["name"].as_str()?.to_string(), c["data_type"].as_str()?.to_string()));
    sources
        .into_iter()
        .filter(|(id, _)| s.manifest.sources.contains_key(id))
        .map(|(id, v)| (id, v["columns"].as_array().map(|cs| cs.iter().filter_map(pair).collect()).unwrap_or_default()))
        .collect()
}

/// `kiln compile --introspect`: every source's columns, read from the target's warehouse once,
/// into target/source_columns.json. A source the warehouse lacks is left out (and said).
#[cfg(feature = "datafusion")]
fn introspect(s: &Session, printer: &Printer) -> Result<(), Diagnostic> {
    let (engine, _) = super::build::open_engine(s, None)?;
    let mut sources = serde_json::Map::new();
    let mut missing = Vec::new();
    for src in s.manifest.sources.values() {
        let r = crate::engine::RelationName { database: src.database.clone(), schema: src.schema.clone(), name: src.identifier.clone() };
        match engine.describe(&r) {
            Ok(Some(columns)) => {
                let columns: Vec<serde_json::Value> = columns.iter().map(|(n, t)| serde_json::json!({"name": n, "data_type": t})).collect();
                sources.insert(
                    src.unique_id.clone(),
                    serde_json::json!({"relation": format!("{}.{}.{}", r.database, r.schema, r.name), "columns": columns}),
                );
            }
            Ok(None) => missing.push(format!("{}.{}", src.source_name, src.name)),
            Err(e) => {
                return Err(Diagnostic::error(
                    Code::Connection,
                    format!("reading the columns of source `{}.{}`: {}", src.source_name, src.name, e.message),
                ));
            }
        }
    }
    let doc = serde_json::json!({"target": s.target.name, "sources": sources});
    let path = source_columns_path(s);
    session::write_atomic_with(&path, |w| serde_json::to_writer_pretty(w, &doc).map_err(std::io::Error::other))
        .map_err(|e| Diagnostic::error(Code::Internal, format!("writing {}: {e}", path.display())))?;
    printer.info(&format!("Read the columns of {} source(s) from the warehouse into {}", sources.len(), path.display()));
    if !missing.is_empty() {
        printer.warn(&format!("the warehouse has no relation for {} source(s): {}", missing.len(), missing.join(", ")));
    }
    Ok(())
}

/// On the embedded engine: whether a relation is in the local warehouse (opened on first use;
/// without a warehouse, nothing is). `None` on other targets.
#[allow(clippy::type_complexity)]
fn local_relations(s: &Session) -> Option<Box<dyn Fn(&crate::engine::RelationName) -> bool + Sync + '_>> {
    #[cfg(feature = "datafusion")]
    if s.target.engine() == crate::adapter::EngineKind::DataFusion {
        let engine = std::sync::OnceLock::new();
        return Some(Box::new(move |r: &crate::engine::RelationName| {
            let engine = engine.get_or_init(|| {
                let dir = super::build::warehouse_dir(s).is_dir();
                dir.then(|| super::build::open_engine(s, None).ok().map(|(e, _)| e)).flatten()
            });
            engine.as_ref().is_some_and(|e| e.describe(r).ok().flatten().is_some())
        }));
    }
    let _ = s;
    None
}

/// Static analysis before `kiln run`, `build` and `watch` build `selected`: their models,
/// snapshots and unit tests are analyzed (with the models they read, for their columns). Prints
/// the warnings; returns the nodes it is certain are wrong, each with its finding, to fail
/// without running. Compile errors are left to the build, which compiles each node again
/// against the warehouse as it is then.
#[cfg(feature = "datafusion")]
pub fn preflight(
    s: &Session,
    selected: &BTreeSet<String>,
    mode: Option<StaticAnalysis>,
    env: &HashMap<String, String>,
    memo: Option<&analyze::Memo>,
    printer: &Printer,
) -> HashMap<String, Arc<Diagnostic>> {
    // Seeds and tests alone (`kiln seed`, `kiln test` without unit tests) have nothing to judge.
    let judged = |id: &String| s.manifest.unit_tests.contains_key(id) || s.manifest.nodes.get(id).is_some_and(analyze::analyzed);
    if mode == Some(StaticAnalysis::Off) || !selected.iter().any(judged) {
        return HashMap::new();
    }
    // Without the warehouse: the build changes what it holds before the nodes that read it run.
    let Some((project, analysis)) = analyze_around(s, selected, (mode, false), env, memo) else { return HashMap::new() };
    let mut rejected = HashMap::new();
    for id in selected {
        for d in analysis.of(id).filter(|d| !d.is_error()) {
            printer.diagnostic(d);
        }
        let mut errors = analysis.certain_errors(id);
        if let Some(first) = errors.next() {
            let more = errors.count();
            let d = if more > 0 {
                first.clone().with_note(format!("and {more} more finding(s): `kiln compile` lists them all"))
            } else {
                first.clone()
            };
            rejected.insert(id.clone(), Arc::new(d));
        }
    }
    if !rejected.is_empty() {
        // Their findings point into their compiled SQL, which the build does not write.
        let shown: HashMap<String, Compiled> = project.compiled.into_iter().filter(|(id, _)| rejected.contains_key(id)).collect();
        if let Err(e) = artifacts::write_compiled(&s.project, &s.jinja, &s.manifest, &shown) {
            printer.warn(&format!("could not write the compiled SQL of the nodes static analysis rejected: {e}"));
        }
        printer.info(&format!(
            "Static analysis is certain {} node(s) would fail: they fail without running, and what depends on them is skipped",
            rejected.len()
        ));
    }
    rejected
}

/// The columns static analysis infers for `selected` (by unique id; known in full only), for
/// `kiln ls --output-keys columns`.
pub fn inferred_columns(s: &Session, selected: &BTreeSet<String>, env: &HashMap<String, String>) -> HashMap<String, Vec<(String, String)>> {
    let Some((_, analysis)) = analyze_around(s, selected, (None, true), env, None) else { return HashMap::new() };
    analysis
        .columns
        .into_iter()
        .filter(|(id, _)| selected.contains(id))
        .filter_map(|(id, c)| match c {
            analyze::Columns::Known { columns, complete: true } => Some((id, columns)),
            _ => None,
        })
        .collect()
}

/// Compiles and analyzes the models, snapshots and analyses of `selected` (and the models its
/// unit tests test), with the models they read; also infers `selected`'s seeds and sources.
/// `None` when there is nothing to analyze.
fn analyze_around(
    s: &Session,
    selected: &BTreeSet<String>,
    (mode, local_warehouse): (Option<StaticAnalysis>, bool),
    env: &HashMap<String, String>,
    memo: Option<&analyze::Memo>,
) -> Option<(CompiledProject, analyze::Analysis)> {
    let planned = |id: &String| s.manifest.nodes.get(id).is_some_and(analyze::analyzed);
    let mut scope: BTreeSet<String> = selected
        .iter()
        .filter(|id| planned(id))
        .cloned()
        .chain(selected.iter().filter_map(|id| s.manifest.unit_tests.get(id)?.attached_node.clone()))
        .collect();
    let inputs: Vec<String> = selected
        .iter()
        .filter(|id| {
            s.manifest.sources.contains_key(*id) || s.manifest.nodes.get(*id).is_some_and(|n| n.resource_type == ResourceType::Seed)
        })
        .cloned()
        .collect();
    if scope.is_empty() && inputs.is_empty() {
        return None;
    }
    let mut stack: Vec<String> = scope.iter().cloned().collect();
    while let Some(id) = stack.pop() {
        for p in s.graph.parents.get(&id).map(Vec::as_slice).unwrap_or_default() {
            if planned(p) && scope.insert(p.clone()) {
                stack.push(p.clone());
            }
        }
    }
    let project = compile_selected(s, &scope, true, local_warehouse);
    let analysis = analyze_with(s, &scope, &project, env, (mode, true), (&inputs, memo));
    Some((project, analysis))
}

/// On the embedded engine the warehouse is local, so compiling reads it as `dbt compile` reads
/// the target: `run_query`, `statement` and `adapter.*` answer from it, and `is_incremental()`
/// is true for an incremental model that was built. Returns whether a node's relation exists
/// (never, without a warehouse), and whether it was attached.
#[allow(clippy::type_complexity)]
fn attach_local_warehouse(s: &Session) -> (Box<dyn Fn(&Node) -> bool + Sync + '_>, bool) {
    #[cfg(feature = "datafusion")]
    if s.target.engine() == crate::adapter::EngineKind::DataFusion
        && super::build::warehouse_dir(s).is_dir()
        && let Ok((engine, _)) = super::build::open_engine(s, None)
    {
        *s.jinja.shared.runner.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(crate::run::runner::EngineQueries(engine.clone(), s.target.quote_char()));
        return (Box::new(move |n: &Node| engine.describe(&crate::run::runner::relation_name(n)).ok().flatten().is_some()), true);
    }
    let _ = s;
    (Box::new(|_| false), false)
}

/// Whether a relation exists in the local warehouse (for `--defer`). kiln compile does not
/// connect to a warehouse target: there nothing counts as built, and every node that is not
/// selected is deferred.
fn built_relations(s: &Session) -> Box<dyn Fn(&crate::engine::RelationName) -> bool + Sync + '_> {
    local_relations(s).unwrap_or_else(|| Box::new(|_| false))
}

/// The functions of the embedded engine, when the target runs on it (listed once).
fn embedded_functions(s: &Session) -> Option<&'static BTreeSet<String>> {
    #[cfg(feature = "datafusion")]
    if s.target.engine() == crate::adapter::EngineKind::DataFusion {
        static NAMES: std::sync::OnceLock<BTreeSet<String>> = std::sync::OnceLock::new();
        return Some(NAMES.get_or_init(crate::engine::datafusion::function_names));
    }
    let _ = s;
    None
}

pub fn write_manifest(s: &Session, compiled: &HashMap<String, Compiled>) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let meta = artifacts::Meta {
        invocation_id: &s.invocation.invocation_id,
        generated_at: &now,
        adapter_type: &s.target.adapter_type,
        project_name: s.project.name(),
    };
    session::write_atomic_with(&s.project.target_dir().join("manifest.json"), |w| {
        artifacts::write_manifest(w, &s.project, &s.jinja, &s.manifest, &s.graph, compiled, &meta)
    })?;
    Ok(())
}

/// `target/lineage.json`: `{"nodes": {unique_id: lineage}}`, sorted by id.
fn write_lineage(s: &Session, lineage: &std::collections::BTreeMap<String, analyze::NodeLineage>) -> std::io::Result<()> {
    #[derive(serde::Serialize)]
    struct File<'a> {
        nodes: &'a std::collections::BTreeMap<String, analyze::NodeLineage>,
    }
    session::write_atomic_with(&s.project.target_dir().join("lineage.json"), |w| {
        serde_json::to_writer(w, &File { nodes: lineage }).map_err(std::io::Error::other)
    })
}

pub fn run(global: &GlobalArgs, args: &CompileArgs, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    let mut s = match session::load(global, env, printer, "compile", Stop::Graph) {
        Ok(s) => s,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    if let Some(sql) = &args.inline {
        return inline(&s, sql, printer);
    }
    let selected = match session::selection(&s, &args.select) {
        Ok(sel) => sel,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    s.jinja.set_selected(&selected);
    let deferred = session::deferred(&s, &args.select, &selected, &*built_relations(&s));
    match deferred {
        Ok(deferred) => s.deferred = deferred,
        Err(d) => return Ok(session::report(printer, &d)),
    }
    #[cfg(feature = "datafusion")]
    if args.introspect
        && let Err(d) = introspect(&s, printer)
    {
        return Ok(session::report(printer, &Diagnostics::from(d)));
    }
    printer.phase("select");
    let mode = StaticAnalysis::parse_flag(args.static_analysis.as_deref());
    let mut project = compile_selected(&s, &selected, mode != Some(StaticAnalysis::Off), true);
    let mut diags = std::mem::take(&mut project.diagnostics);
    printer.phase("compile");
    printer.template_logs(s.jinja.shared.take_logs());
    if diags.has_errors() {
        return Ok(session::report(printer, &diags));
    }
    // Static analysis (which runs the SQL check, also when it plans nothing) runs while the
    // compiled files are written; the manifest carries the columns it inferred.
    let (written, analysis) = rayon::join(
        || artifacts::write_compiled(&s.project, &s.jinja, &s.manifest, &project.compiled),
        || analyze_compiled(&s, &selected, &project, env, (mode, !args.no_sql_check)),
    );
    let written = written?;
    printer.phase("analyze");
    let mut compiled = project.compiled;
    for (id, columns) in analysis.columns {
        if let (Some(c), analyze::Columns::Known { columns, complete: true }) = (compiled.get_mut(&id), columns) {
            c.columns = Some(columns);
        }
    }
    let (manifest, lineage) = rayon::join(
        || write_manifest(&s, &compiled),
        || match mode {
            Some(StaticAnalysis::Off) => Ok(()),
            _ => write_lineage(&s, &analysis.lineage),
        },
    );
    manifest?;
    lineage?;
    printer.phase("write");
    // The artifacts are written either way: a finding (a syntax error too) points into the
    // compiled SQL.
    diags.0.extend(analysis.diagnostics);
    diags.sort();
    if diags.has_errors() {
        return Ok(session::report(printer, &diags));
    }
    for d in diags.iter() {
        printer.diagnostic(d);
    }
    // One selected node with SQL: print it, as `dbt compile -s model` does.
    let with_sql: Vec<&Node> = selected
        .iter()
        .filter_map(|id| s.manifest.nodes.get(id))
        .filter(|n| compile::has_sql(n) && n.resource_type != ResourceType::Test)
        .collect();
    if !args.select.select.is_empty()
        && with_sql.len() == 1
        && let Some(c) = compiled.get(&with_sql[0].unique_id)
    {
        printer.product(&c.sql);
    }
    printer.info(&format!(
        "Compiled {} in {:.2}s; wrote {written} files under {}/compiled and {}/manifest.json",
        summary(&s, &selected.iter().filter(|id| compiled.contains_key(*id)).cloned().collect()),
        s.started.elapsed().as_secs_f64(),
        s.project.config().target_path,
        s.project.config().target_path,
    ));
    // The process is about to exit: freeing every node would only cost time.
    std::mem::forget(compiled);
    std::mem::forget(s);
    Ok(EXIT_OK)
}

fn inline(s: &Session, sql: &str, printer: &Printer) -> anyhow::Result<i32> {
    let mut node = crate::parse::new_node_inline(&s.project, sql);
    let root_pkg = s.project.name().to_string();
    node.package = root_pkg;
    let resolver = resolver(s);
    // Parse phase first, so refs in the inline SQL resolve (and missing ones are reported).
    match compile::render_node(&s.project, &s.jinja, &node, &resolver, false) {
        Ok(out) => {
            printer.product(&out);
            Ok(EXIT_OK)
        }
        Err(d) => Ok(session::report(printer, &Diagnostics::from(d))),
    }
}
