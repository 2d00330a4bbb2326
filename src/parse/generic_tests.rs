//! Generic data tests declared in properties YAML (`not_null`, `unique`, `accepted_values`,
//! `relationships`, custom and package tests) become test nodes, named as dbt names them.

use super::{Manifest, Node, ResourceType, TestMetadata, md5_hex, new_node};
use crate::diagnostics::{Code, Diagnostic, Label};
use crate::jinja::JinjaEnv;
use crate::jinja::context::{NodeCtx, NodeInfo, Phase};
use crate::jinja::error::to_diagnostic;
use crate::jinja::modules::MutList;
use crate::jinja::relation::quote_ident;
use crate::project::Project;
use crate::project::config::{ConfigMap, merge_one};
use crate::project::properties::{Properties, TestSpec};
use crate::project::yaml::{YNode, YValue};
use minijinja::Value;
use rayon::prelude::*;
use serde_json::{Map, Value as Json, json};
use std::sync::Arc;

/// Test arguments that are configs, not macro arguments.
const CONFIG_ARGS: &[&str] = &[
    "severity",
    "tags",
    "enabled",
    "where",
    "limit",
    "warn_if",
    "error_if",
    "fail_calc",
    "store_failures",
    "store_failures_as",
    "meta",
    "alias",
    "database",
    "schema",
];

/// The parsed form of one YAML test entry.
struct Spec {
    name: String,
    namespace: Option<String>,
    args: Map<String, Json>,
    config: ConfigMap,
    custom_name: Option<String>,
}

fn parse_spec(node: &YNode) -> Result<Spec, String> {
    let (full_name, body): (String, Option<&YNode>) = match &node.value {
        YValue::Str(s) => (s.clone(), None),
        YValue::Map(entries) => {
            if let Some(t) = node.get("test_name").and_then(YNode::scalar_string) {
                (t, Some(node))
            } else if entries.len() == 1 {
                let (k, v) = &entries[0];
                (k.scalar_string().ok_or("a test name must be a string")?, Some(v))
            } else {
                return Err("a test must be a name or a mapping with one key (the test's name)".into());
            }
        }
        _ => {
            return Err(format!("a test must be a name or a mapping, found {}", node.kind()));
        }
    };
    let (namespace, name) = match full_name.split_once('.') {
        Some((ns, n)) => (Some(ns.to_string()), n.to_string()),
        None => (None, full_name.clone()),
    };
    let mut spec = Spec { name, namespace, args: Map::new(), config: ConfigMap::new(), custom_name: None };
    if let Some(body) = body {
        for (k, _, v) in body.entries() {
            match k {
                "test_name" => {}
                "name" => spec.custom_name = v.scalar_string(),
                "config" => {
                    for (ck, _, cv) in v.entries() {
                        merge_one(&mut spec.config, ck, cv.to_json());
                    }
                }
                "arguments" => {
                    for (ak, _, av) in v.entries() {
                        spec.args.insert(ak.to_string(), av.to_json());
                    }
                }
                _ if CONFIG_ARGS.contains(&k) => merge_one(&mut spec.config, k, v.to_json()),
                _ => {
                    spec.args.insert(k.to_string(), v.to_json());
                }
            }
        }
    }
    Ok(spec)
}

/// Python's `str()` of a YAML value, as dbt's test names use it.
fn py_str(v: &Json) -> String {
    match v {
        Json::Null => "None".into(),
        Json::Bool(b) => if *b { "True" } else { "False" }.into(),
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// dbt's `construct_config`: a test's config as the `{{ config(...) }}` call its raw code ends
/// with (strings in double quotes, other values as Python prints them), or nothing.
fn config_call(config: &ConfigMap) -> String {
    if config.is_empty() {
        return String::new();
    }
    let args: Vec<String> = config
        .iter()
        .map(|(k, v)| match v {
            Json::String(s) => format!("{k}=\"{}\"", s.replace('"', "\\\"")),
            Json::Array(_) | Json::Object(_) => {
                let mut repr = String::new();
                write_py_repr(&mut repr, v);
                format!("{k}={repr}")
            }
            leaf => format!("{k}={}", py_str(leaf)),
        })
        .collect();
    format!("{{{{ config({}) }}}}", args.join(","))
}

/// dbt's `synthesize_generic_test_names`: (short name, full name).
pub fn synthesize_names(test_type: &str, target_name: &str, args: &Map<String, Json>) -> (String, String) {
    let mut keys: Vec<&String> = args.keys().filter(|k| *k != "model").collect();
    keys.sort();
    let mut flat = Vec::new();
    for k in keys {
        match &args[k] {
            Json::Object(m) => flat.extend(m.values().map(py_str)),
            Json::Array(a) => flat.extend(a.iter().map(py_str)),
            other => flat.push(py_str(other)),
        }
    }
    let clean: Vec<String> = flat.iter().map(|a| collapse_invalid(a)).collect();
    let unique = clean.join("__");
    let identifier = format!("{test_type}_{target_name}");
    // Always `_`-joined, so a test without arguments ends with `_` (as in dbt).
    let full = format!("{identifier}_{unique}");
    if full.len() >= 64 {
        let trunc: String = identifier.chars().take(30).collect();
        (format!("{trunc}_{}", md5_hex(&full)), full)
    } else {
        (full.clone(), full)
    }
}

/// Python's `re.sub("[^0-9a-zA-Z_]+", "_", s)`: each run of other characters becomes one `_`.
fn collapse_invalid(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_run = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    out
}

/// What a test is attached to.
enum Target<'a> {
    Model(&'a Node),
    Source { source: String, table: String, package: String },
}

/// The column a test is declared on, and its `quote:`.
type Column<'a> = Option<(&'a str, Option<bool>)>;

struct Pending {
    spec_file: usize,
    line: usize,
    col: usize,
    node: Node,
}

/// One test entry of a properties file, as a test node (not yet rendered).
fn build_one(project: &Project, jinja: &JinjaEnv, target: &Target, column: Column, spec: &TestSpec) -> Result<Pending, Diagnostic> {
    let file = &project.files[spec.file];
    let parsed = match parse_spec(&spec.node) {
        Ok(s) => s,
        Err(msg) => {
            return Err(Diagnostic::error(Code::InvalidValue, format!("invalid test in {}: {msg}", file.display_path))
                .with_label(Label::new(file.source(), spec.node.line, spec.node.col, 1, "this test")));
        }
    };
    let macro_name = format!("test_{}", parsed.name);
    let (target_name, package, attached, model_arg) = match target {
        Target::Model(n) => {
            (n.name.clone(), n.package.clone(), Some(n.unique_id.clone()), format!("{{{{ get_where_subquery(ref('{}')) }}}}", n.name))
        }
        Target::Source { source, table, package, .. } => {
            (format!("{source}_{table}"), package.clone(), None, format!("{{{{ get_where_subquery(source('{source}', '{table}')) }}}}"))
        }
    };
    let exists = match &parsed.namespace {
        Some(ns) => jinja.shared.macros.get(ns, &macro_name).is_some(),
        None => jinja.shared.macros.lookup(Some(&package), &macro_name).is_some(),
    };
    if !exists {
        let known: Vec<String> =
            jinja.shared.macros.all_names().into_iter().filter_map(|n| n.strip_prefix("test_").map(str::to_string)).collect();
        let node_at = match &spec.node.value {
            YValue::Map(m) => &m[0].0,
            _ => &spec.node,
        };
        let full = parsed.namespace.as_ref().map_or(parsed.name.clone(), |ns| format!("{ns}.{}", parsed.name));
        return Err(
                Diagnostic::error(Code::UnknownTest, format!("test `{full}` does not exist"))
                    .with_label(Label::new(file.source(), node_at.line, node_at.col, full.len(), "no generic test with this name"))
                    .with_help(crate::diagnostics::did_you_mean(&parsed.name, known.iter().map(String::as_str)).unwrap_or_else(|| {
                        "built-in tests are not_null, unique, accepted_values and relationships; custom ones are `{% test name(model, column_name) %}` blocks in tests/generic/ or macros/".into()
                    })),
            );
    }
    let mut args = parsed.args.clone();
    if let Some((col, quote)) = column {
        let col_value = if quote == Some(true) { quote_ident(col, jinja.shared.target.quote_char()) } else { col.to_string() };
        args.insert("column_name".into(), json!(col_value));
    }
    let test_type = match &parsed.namespace {
        Some(ns) => format!("{ns}_{}", parsed.name),
        None => parsed.name.clone(),
    };
    let test_type = if matches!(target, Target::Source { .. }) { format!("source_{test_type}") } else { test_type };
    let (short, full) = match &parsed.custom_name {
        Some(n) => (n.clone(), n.clone()),
        None => synthesize_names(&test_type, &target_name, &args),
    };
    let mut kwargs = args.clone();
    kwargs.insert("model".into(), json!(model_arg));
    // dbt: md5(name + repr(test_metadata with every leaf as str, keys sorted))[-10:]
    // (the repr of {"kwargs": .., "name": .., "namespace": ..}, keys in order)
    let mut hash_input = format!("{full}{{'kwargs': ");
    write_py_dict(&mut hash_input, &kwargs);
    hash_input.push_str(", 'name': ");
    push_py_quoted(&mut hash_input, &parsed.name);
    hash_input.push_str(", 'namespace': ");
    push_py_quoted(&mut hash_input, parsed.namespace.as_deref().unwrap_or("None"));
    hash_input.push('}');
    let hash = &md5_hex(&hash_input)[22..];
    let project_pkg = project.packages[file.package].name.clone();
    let mut fqn = vec![project_pkg.clone()];
    fqn.extend(file.folders().iter().map(|s| s.to_string()));
    fqn.push(full.clone());
    // dbt's test config: the YAML's, and the hashed name as alias when the full one is too long.
    let mut test_config = parsed.config.clone();
    if short != full && !test_config.contains_key("alias") {
        test_config.insert("alias".into(), json!(short));
    }
    let raw = match &parsed.namespace {
        Some(ns) => format!("{{{{ {ns}.{macro_name}(**_dbt_generic_test_kwargs) }}}}{}", config_call(&test_config)),
        None => format!("{{{{ {macro_name}(**_dbt_generic_test_kwargs) }}}}{}", config_call(&test_config)),
    };
    // The name is the full one; the alias and compiled file use the short (hashed) one.
    let mut node = new_node(project, spec.file, ResourceType::Test, &full, fqn.clone(), Arc::from(raw.as_str()), spec.node.line);
    node.unique_id = format!("test.{project_pkg}.{full}.{hash}");
    for (k, v) in &parsed.config {
        merge_one(Arc::make_mut(&mut node.config), k, v.clone());
    }
    node.unrendered_config.extend(test_config);
    // (The config is shared between the tests of a folder: copied only when it changes.)
    if let Some(Json::String(s)) = node.config.get("severity")
        && *s != s.to_uppercase()
    {
        let upper = s.to_uppercase();
        Arc::make_mut(&mut node.config).insert("severity".into(), json!(upper));
    }
    node.path = format!("{short}.sql");
    // dbt gives generic tests an empty file hash (`{"name": "none", "checksum": ""}`).
    node.checksum = String::new();
    node.checksum_name = "none";
    node.column_name = column.map(|(c, _)| c.to_string());
    node.attached_node = attached;
    match target {
        Target::Model(n) => node.refs.push(crate::jinja::context::RefCall { package: None, name: n.name.clone(), version: None }),
        Target::Source { source, table, .. } => node.sources.push((source.clone(), table.clone())),
    }
    node.test_metadata = Some(TestMetadata { name: parsed.name.clone(), namespace: parsed.namespace.clone(), kwargs });
    Ok(Pending { spec_file: spec.file, line: spec.node.line, col: spec.node.col, node })
}

pub(super) fn build(
    project: &Project,
    jinja: &JinjaEnv,
    props: &Properties,
    manifest: &mut Manifest,
    diags: &mut Vec<Diagnostic>,
    cache: Option<&super::RenderCache>,
) {
    // Test entries in file order; each is built and rendered (parse phase) in parallel.
    let mut entries: Vec<(Target, Column, &TestSpec)> = Vec::new();

    let by_key: std::collections::HashMap<(ResourceType, &str, &str), &Node> =
        manifest.nodes.values().map(|n| ((n.resource_type, n.package.as_str(), n.name.as_str()), n)).collect();
    for patch in &props.patches {
        let pkg = &project.packages[project.files[patch.file].package].name;
        let rt = match patch.section {
            "models" => ResourceType::Model,
            "seeds" => ResourceType::Seed,
            "snapshots" => ResourceType::Snapshot,
            _ => continue,
        };
        let Some(target) = by_key.get(&(rt, pkg.as_str(), patch.name.as_str())).copied() else {
            continue;
        };
        for spec in &patch.tests {
            entries.push((Target::Model(target), None, spec));
        }
        for col in &patch.columns {
            for spec in &col.tests {
                entries.push((Target::Model(target), Some((&col.name, col.quote)), spec));
            }
        }
    }
    for s in &props.sources {
        let pkg = project.packages[project.files[s.file].package].name.clone();
        for t in &s.tables {
            let unique_id = format!("source.{pkg}.{}.{}", s.name, t.name);
            if !manifest.sources.contains_key(&unique_id) {
                continue;
            }
            let target = || Target::Source { source: s.name.clone(), table: t.name.clone(), package: pkg.clone() };
            for spec in &t.tests {
                entries.push((target(), None, spec));
            }
            for col in &t.columns {
                for spec in &col.tests {
                    entries.push((target(), Some((&col.name, col.quote)), spec));
                }
            }
        }
    }

    // Parse phase of each test: its arguments are evaluated (recording `to: ref('x')`); the test
    // macro itself is rendered in the compile phase, where its errors are reported.
    let rendered: Vec<(Option<Pending>, Vec<Diagnostic>)> = entries
        .into_par_iter()
        .map(|(target, column, spec)| {
            let mut p = match build_one(project, jinja, &target, column, spec) {
                Ok(p) => p,
                Err(d) => return (None, vec![d]),
            };
            let mut ds = Vec::new();
            let key = cache.map(|_| super::RenderCache::key(&p.node));
            let cached = cache.zip(key).and_then(|(c, k)| c.get(&p.node, k));
            let result = cached.map(Ok).unwrap_or_else(|| {
                let record = render_test(jinja, &p.node, test_ctx(jinja, &p.node, Phase::Parse, None), true).map(|(_, r)| r);
                if let (Some(c), Some(k), Ok(r)) = (cache, key, &record) {
                    c.put(&p.node, k, r);
                }
                record
            });
            match result {
                Ok(record) => {
                    for r in record.refs {
                        if !p.node.refs.contains(&r) {
                            p.node.refs.push(r);
                        }
                    }
                    for s in record.sources {
                        if !p.node.sources.contains(&s) {
                            p.node.sources.push(s);
                        }
                    }
                    let mut macros: Vec<String> = record.macros.into_iter().collect();
                    if let Some(meta) = &p.node.test_metadata {
                        let name = format!("test_{}", meta.name);
                        let def = match &meta.namespace {
                            Some(ns) => jinja.shared.macros.get(ns, &name),
                            None => jinja.shared.macros.lookup(Some(&p.node.package), &name),
                        };
                        macros.extend(def.map(|d| d.unique_id.clone()));
                        macros.push("macro.dbt.get_where_subquery".into());
                    }
                    macros.sort();
                    macros.dedup();
                    p.node.macros = macros;
                }
                Err(e) => {
                    let file = &project.files[p.spec_file];
                    let mut d = to_diagnostic(&e, &|path| super::source_for(project, jinja, path), &format!("test `{}`", p.node.name));
                    if d.labels.is_empty() || d.labels[0].source.path.starts_with("<") {
                        d.labels.clear();
                        d = d.with_label(Label::new(file.source(), p.line, p.col, 1, "in this test"));
                    } else {
                        d = d.with_note(format!("while rendering the test defined at {}:{}", file.display_path, p.line));
                    }
                    ds.push(d);
                }
            }
            (Some(p), ds)
        })
        .collect();
    let (mut nodes, mut places) = (Vec::with_capacity(rendered.len()), Vec::with_capacity(rendered.len()));
    for (p, ds) in rendered {
        diags.extend(ds);
        if let Some(p) = p
            && p.node.enabled()
        {
            places.push((p.spec_file, p.line, p.col));
            nodes.push(p.node);
        }
    }
    // Where failing rows are stored (`<schema>_dbt_test__audit.<alias>`).
    super::resolve_relations(project, jinja, &mut nodes, diags);
    for (node, (spec_file, line, col)) in nodes.into_iter().zip(places) {
        let p = Pending { spec_file, line, col, node };
        if let Some(prev) = manifest.nodes.get(&p.node.unique_id) {
            let file = &project.files[p.spec_file];
            diags.push(
                Diagnostic::error(Code::DuplicateResource, format!("test `{}` is defined twice", p.node.name))
                    .with_label(Label::new(file.source(), p.line, p.col, 1, "duplicate test"))
                    .with_note(format!("also defined at {}:{}", prev.original_file_path, prev.line))
                    .with_help("give one of them a distinct `name:`"),
            );
            continue;
        }
        manifest.nodes.insert(p.node.unique_id.clone(), p.node);
    }
}

/// Python's `repr` of dbt's "hashable metadata": mappings with sorted keys, lists, and every
/// other value as its `str()` (so `None` is `'None'`, `true` is `'True'`).
fn write_py_repr(out: &mut String, v: &Json) {
    match v {
        Json::Object(m) => write_py_dict(out, m),
        Json::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py_repr(out, v);
            }
            out.push(']');
        }
        Json::String(s) => push_py_quoted(out, s),
        leaf => push_py_quoted(out, &py_str(leaf)),
    }
}

/// Python's `repr` of a dict (keys sorted).
fn write_py_dict(out: &mut String, m: &Map<String, Json>) {
    let mut entries: Vec<(&String, &Json)> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_py_quoted(out, k);
        out.push_str(": ");
        write_py_repr(out, v);
    }
    out.push('}');
}

/// Python's `repr` of a string.
fn push_py_quoted(out: &mut String, s: &str) {
    use std::fmt::Write;
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.reserve(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// The render context of a generic test.
pub fn test_ctx(jinja: &JinjaEnv, node: &Node, phase: Phase, resolver: Option<Arc<dyn crate::jinja::Resolver>>) -> NodeCtx {
    let info = NodeInfo {
        unique_id: node.unique_id.clone(),
        package: node.package.clone(),
        name: node.name.clone(),
        resource_type: "test",
        original_file_path: node.original_file_path.clone(),
        path: node.path.clone(),
    };
    let mut ctx = NodeCtx::new(phase, info, node.config.clone(), jinja.shared.clone());
    ctx.resolver = resolver;
    ctx
}

/// Renders a generic test: its arguments first (dbt renders every string argument, wrapping
/// `ref(...)`-like values in `{{ }}`), then its macro call.
pub fn render_test(
    jinja: &JinjaEnv,
    node: &Node,
    ctx: NodeCtx,
    args_only: bool,
) -> Result<(String, crate::jinja::context::Record), minijinja::Error> {
    let Some(meta) = &node.test_metadata else {
        let ctx = Arc::new(ctx);
        let out = jinja.render(&node.original_file_path, &node.raw_code, ctx.clone())?;
        return Ok((out, ctx.take_record()));
    };
    let ctx = Arc::new(ctx);
    let root = Value::from_dyn_object(ctx.clone());
    let mut kwargs: Vec<(String, Value)> = Vec::new();
    for (k, v) in &meta.kwargs {
        if args_only && k == "model" {
            continue; // its ref/source is recorded when the test is built
        }
        // A list argument can be changed by the test's macro, as in dbt (`cols.append(c)`).
        let value = render_arg(jinja, k, v, &root)?;
        let value = if value.downcast_object_ref::<Vec<Value>>().is_some() { MutList::from_value(Some(value)) } else { value };
        kwargs.push((k.clone(), value));
    }
    let record = ctx.take_record();
    if args_only {
        return Ok((String::new(), record));
    }
    let mut inner = Arc::try_unwrap(ctx).unwrap_or_else(|arc| {
        let mut c = NodeCtx::new(arc.phase, arc.node.clone(), arc.config.lock().map(|c| c.clone()).unwrap_or_default(), arc.shared.clone());
        c.resolver = arc.resolver.clone();
        c
    });
    inner.extra.push(("_dbt_generic_test_kwargs".into(), crate::jinja::vmap(kwargs)));
    let inner = Arc::new(inner);
    let out = jinja.render_shared("<generic test>", &node.raw_code, inner.clone())?;
    let mut rec2 = inner.take_record();
    let mut all = record;
    all.refs.append(&mut rec2.refs);
    all.sources.append(&mut rec2.sources);
    all.macros.append(&mut rec2.macros);
    for (k, v) in rec2.inline_config {
        crate::project::config::merge_one(&mut all.inline_config, &k, v);
    }
    Ok((out, all))
}

/// `{{ expr }}` with nothing around it.
fn single_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then(|| inner.trim().trim_start_matches('-').trim_end_matches('-'))
}

fn render_arg(jinja: &JinjaEnv, key: &str, v: &Json, root: &Value) -> Result<Value, minijinja::Error> {
    static FUNC: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let func = FUNC.get_or_init(|| regex::Regex::new(r"^\s*(env_var|ref|var|source|doc)\s*\(.+\)\s*$").expect("static regex"));
    Ok(match v {
        Json::String(s) if key != "column_name" => {
            if func.is_match(s) {
                jinja.env.compile_expression(s)?.eval(root.clone())?
            } else if let Some(expr) = single_expression(s) {
                // dbt renders arguments natively: `"{{ var('list') }}"` stays a list.
                jinja.env.compile_expression(expr)?.eval(root.clone())?
            } else if s.contains("{{") || s.contains("{%") {
                let t = jinja.env.template_from_str(s)?;
                let out = t.render(root.clone())?;
                Value::from(out)
            } else {
                Value::from(s.as_str())
            }
        }
        Json::Array(items) => Value::from(items.iter().map(|i| render_arg(jinja, "", i, root)).collect::<Result<Vec<_>, _>>()?),
        Json::Object(m) => {
            let mut out = Vec::new();
            for (k, i) in m {
                out.push((k.clone(), render_arg(jinja, k, i, root)?));
            }
            crate::jinja::vmap(out)
        }
        other => crate::jinja::ser(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbt_test_names() {
        let mut args = Map::new();
        args.insert("column_name".into(), json!("order_id"));
        assert_eq!(synthesize_names("not_null", "orders", &args).0, "not_null_orders_order_id");
        args.insert("column_name".into(), json!("status"));
        args.insert("values".into(), json!(["placed", "shipped"]));
        assert_eq!(synthesize_names("accepted_values", "orders", &args).0, "accepted_values_orders_status__placed__shipped");
        args.insert("values".into(), json!(["placed", "shipped", "completed", "return_pending", "returned"]));
        let (short, full) = synthesize_names("accepted_values", "orders", &args);
        assert_eq!(full, "accepted_values_orders_status__placed__shipped__completed__return_pending__returned");
        assert_eq!(short, "accepted_values_orders_1ce6ab157c285f7cd2ac656013faf758");
        let mut rel = Map::new();
        rel.insert("column_name".into(), json!("customer_id"));
        rel.insert("to".into(), json!("ref('customers')"));
        rel.insert("field".into(), json!("customer_id"));
        assert_eq!(synthesize_names("relationships", "orders", &rel).0, "relationships_orders_customer_id__customer_id__ref_customers_");
    }
}
