//! `target/manifest.json` in dbt's manifest schema v12, and compiled SQL under
//! `target/compiled/`. Output is deterministic: maps are sorted, and nothing secret is written.

use crate::compile::Compiled;
use crate::graph::Graph;
use crate::jinja::JinjaEnv;
use crate::parse::{ColumnInfo, Manifest, Node, ResourceType, SourceNode};
use crate::project::Project;
use indexmap::IndexMap;
use serde_json::{Map, Value as Json, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const MANIFEST_SCHEMA: &str = "https://schemas.getdbt.com/dbt/manifest/v12.json";

/// Invocation facts written into `metadata`.
pub struct Meta<'a> {
    pub invocation_id: &'a str,
    pub generated_at: &'a str,
    pub adapter_type: &'a str,
    pub project_name: &'a str,
}

fn md5_hex(s: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn hooks(v: Option<&Json>) -> Json {
    let items = v.and_then(Json::as_array).cloned().unwrap_or_default();
    Json::Array(
        items
            .into_iter()
            .enumerate()
            .map(|(i, h)| match h {
                Json::Object(o) => {
                    let mut o = o;
                    o.entry("transaction").or_insert(json!(true));
                    o.entry("index").or_insert(json!(i));
                    Json::Object(o)
                }
                other => json!({"sql": other.as_str().map_or(other.to_string(), str::to_string), "transaction": true, "index": i}),
            })
            .collect(),
    )
}

/// A node's `config` as the manifest schema spells it.
fn config_json(config: &crate::project::config::ConfigMap, rt: ResourceType) -> Json {
    let mut m = Map::new();
    for (k, v) in config {
        m.insert(k.clone(), v.clone());
    }
    if rt != ResourceType::Test {
        m.insert("pre-hook".into(), hooks(config.get("pre-hook")));
        m.insert("post-hook".into(), hooks(config.get("post-hook")));
    }
    if let Some(Json::String(s)) = m.get("severity").cloned() {
        m.insert("severity".into(), json!(s.to_uppercase()));
    }
    Json::Object(m)
}

fn columns_json(cols: &IndexMap<String, ColumnInfo>) -> Json {
    let mut m = Map::new();
    for (k, c) in cols {
        m.insert(
            k.clone(),
            json!({
                "name": c.name,
                "description": c.description,
                "meta": if c.meta.is_object() { c.meta.clone() } else { json!({}) },
                "data_type": c.data_type,
                "constraints": constraints_json(&c.constraints),
                "quote": c.quote,
                "tags": c.tags,
                "granularity": null,
            }),
        );
    }
    Json::Object(m)
}

fn constraints_json(v: &Json) -> Json {
    Json::Array(
        v.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let mut o = c.as_object().cloned().unwrap_or_default();
                o.entry("name").or_insert(Json::Null);
                o.entry("expression").or_insert(Json::Null);
                o.entry("warn_unenforced").or_insert(json!(true));
                o.entry("warn_unsupported").or_insert(json!(true));
                o.entry("to").or_insert(Json::Null);
                o.entry("to_columns").or_insert(json!([]));
                Json::Object(o)
            })
            .collect(),
    )
}

pub fn compiled_path(project: &Project, node: &Node) -> String {
    let target = &project.config().target_path;
    if node.test_metadata.is_some() {
        format!("{target}/compiled/{}/{}/{}", node.package, node.original_file_path, node.path)
    } else {
        format!("{target}/compiled/{}/{}", node.package, node.original_file_path)
    }
}

fn node_json(project: &Project, jinja: &JinjaEnv, node: &Node, compiled: Option<&Compiled>, parents: &[String]) -> Json {
    let quote = jinja.shared.target.quote_char();
    let relation_name = (node.is_refable() && !node.is_ephemeral()).then(|| node.relation(quote).render());
    let scrub = |s: &str| jinja.shared.scrub(s).into_owned();
    let mut o = json!({
        "database": node.database,
        "schema": node.schema,
        "name": node.name,
        "resource_type": node.resource_type.as_str(),
        "package_name": node.package,
        "path": node.path,
        "original_file_path": node.original_file_path,
        "unique_id": node.unique_id,
        "fqn": node.fqn,
        "alias": node.alias,
        "checksum": {"name": "sha256", "checksum": node.checksum},
        "config": config_json(&node.config, node.resource_type),
        "tags": node.tags(),
        "description": node.description,
        "columns": columns_json(&node.columns),
        "meta": node.config.get("meta").cloned().unwrap_or(json!({})),
        "group": null,
        "docs": node.config.get("docs").cloned().filter(Json::is_object).unwrap_or(json!({"show": true, "node_color": null})),
        "patch_path": node.patch_path,
        "build_path": null,
        "unrendered_config": Json::Object(node.unrendered_config.clone().into_iter().collect()),
        "created_at": 0.0,
        "raw_code": scrub(&node.raw_code),
        "language": "sql",
        "refs": node.refs.iter().map(|r| json!({"name": r.name, "package": r.package, "version": r.version})).collect::<Vec<_>>(),
        "sources": node.sources.iter().map(|(s, t)| json!([s, t])).collect::<Vec<_>>(),
        "metrics": [],
        "depends_on": {"macros": node.macros, "nodes": parents},
    });
    let m = o.as_object_mut().expect("object");
    if node.resource_type == ResourceType::Seed {
        m.insert("root_path".into(), json!(project.root.to_string_lossy()));
        m.insert("depends_on".into(), json!({"macros": node.macros}));
        for k in ["refs", "sources", "metrics", "language"] {
            m.remove(k);
        }
        m.insert("raw_code".into(), json!(""));
        return o;
    }
    if matches!(node.resource_type, ResourceType::Model | ResourceType::Snapshot | ResourceType::Analysis | ResourceType::Test) {
        m.insert("compiled_path".into(), compiled.map_or(Json::Null, |_| json!(compiled_path(project, node))));
        m.insert("compiled".into(), json!(compiled.is_some()));
        m.insert("compiled_code".into(), compiled.map_or(Json::Null, |c| json!(scrub(&c.sql))));
        m.insert("extra_ctes_injected".into(), json!(compiled.is_some()));
        m.insert(
            "extra_ctes".into(),
            json!(
                compiled
                    .map(|c| c.extra_ctes.iter().map(|(id, sql)| json!({"id": id, "sql": scrub(sql)})).collect::<Vec<_>>())
                    .unwrap_or_default()
            ),
        );
        m.insert("contract".into(), json!({"enforced": node.config.get("contract").and_then(|c| c.get("enforced")).and_then(Json::as_bool).unwrap_or(false), "alias_types": true, "checksum": null}));
    }
    if node.resource_type == ResourceType::Model {
        m.insert("relation_name".into(), json!(relation_name));
        m.insert("access".into(), node.config.get("access").cloned().unwrap_or(json!("protected")));
        m.insert("constraints".into(), json!([]));
        m.insert("version".into(), Json::Null);
        m.insert("latest_version".into(), Json::Null);
        m.insert("deprecation_date".into(), Json::Null);
        m.insert("primary_key".into(), json!([]));
        m.insert("time_spine".into(), Json::Null);
    }
    if node.resource_type == ResourceType::Snapshot {
        m.insert("relation_name".into(), json!(relation_name));
    }
    if node.resource_type == ResourceType::Test {
        m.remove("contract");
        m.insert("relation_name".into(), Json::Null);
        if let Some(meta) = &node.test_metadata {
            m.insert("test_metadata".into(), json!({"name": meta.name, "kwargs": meta.kwargs, "namespace": meta.namespace}));
            m.insert("column_name".into(), json!(node.column_name));
            let file_key = node
                .patch_path
                .clone()
                .unwrap_or_else(|| format!("models.{}", node.attached_node.as_deref().unwrap_or("").rsplit('.').next().unwrap_or("")));
            m.insert("file_key_name".into(), json!(file_key));
            m.insert("attached_node".into(), json!(node.attached_node));
        }
    }
    o
}

fn source_json(s: &SourceNode, jinja: &JinjaEnv, project: &Project) -> Json {
    let file = &project.files[s.file];
    json!({
        "database": s.database,
        "schema": s.schema,
        "name": s.name,
        "resource_type": "source",
        "package_name": s.package,
        "path": file.original_path,
        "original_file_path": file.original_path,
        "unique_id": s.unique_id,
        "fqn": s.fqn,
        "source_name": s.source_name,
        "source_description": s.source_description,
        "loader": s.loader,
        "identifier": s.identifier,
        "quoting": {"database": null, "schema": null, "identifier": null, "column": null},
        "loaded_at_field": s.loaded_at_field,
        "freshness": if s.freshness.is_object() { s.freshness.clone() } else { json!({"warn_after": {"count": null, "period": null}, "error_after": {"count": null, "period": null}, "filter": null}) },
        "external": if s.external.is_object() { s.external.clone() } else { Json::Null },
        "description": s.description,
        "columns": columns_json(&s.columns),
        "meta": s.meta,
        "source_meta": s.source_meta,
        "tags": s.tags,
        "config": {"enabled": true},
        "patch_path": null,
        "unrendered_config": {},
        "relation_name": s.relation(jinja.shared.target.quote_char()).render(),
        "created_at": 0.0,
    })
}

/// Writes the manifest document to `w`. Nodes, sources and macros are serialized in parallel,
/// one entry at a time, so the whole document is never held as a JSON tree.
pub fn write_manifest<W: std::io::Write>(
    mut w: W,
    project: &Project,
    jinja: &JinjaEnv,
    manifest: &Manifest,
    graph: &Graph,
    compiled: &HashMap<String, Compiled>,
    meta: &Meta,
) -> std::io::Result<()> {
    use rayon::prelude::*;
    let empty: Vec<String> = Vec::new();
    let parents_of = |id: &str| graph.parents.get(id).unwrap_or(&empty).clone();
    let mut node_ids: Vec<&String> = manifest.nodes.keys().collect();
    node_ids.sort();
    let nodes: Vec<(String, Vec<u8>)> = node_ids
        .par_iter()
        .map(|id| {
            let n = &manifest.nodes[*id];
            let v = node_json(project, jinja, n, compiled.get(*id), &parents_of(id));
            ((*id).clone(), serde_json::to_vec(&v).unwrap_or_default())
        })
        .collect();
    let mut source_ids: Vec<&String> = manifest.sources.keys().collect();
    source_ids.sort();
    let sources: Vec<(String, Vec<u8>)> = source_ids
        .par_iter()
        .map(|id| ((*id).clone(), serde_json::to_vec(&source_json(&manifest.sources[*id], jinja, project)).unwrap_or_default()))
        .collect();
    let mut macros = BTreeMap::new();
    for (pkg, ms) in &jinja.shared.macros.packages {
        for m in ms.values() {
            macros.insert(
                m.unique_id.clone(),
                json!({
                    "name": m.name,
                    "resource_type": "macro",
                    "package_name": pkg,
                    "path": m.original_path,
                    "original_file_path": m.original_path,
                    "unique_id": m.unique_id,
                    "macro_sql": &*m.source,
                    "depends_on": {"macros": []},
                    "description": "",
                    "meta": {},
                    "docs": {"show": true, "node_color": null},
                    "patch_path": null,
                    "arguments": [],
                    "created_at": 0.0,
                    "supported_languages": null,
                }),
            );
        }
    }
    let exposures: BTreeMap<String, Json> = manifest
        .exposures
        .values()
        .map(|e| {
            let x = &e.extra;
            let owner = x.get("owner").cloned().unwrap_or(json!({}));
            (
                e.unique_id.clone(),
                json!({
                    "name": e.name,
                    "resource_type": "exposure",
                    "package_name": e.package,
                    "path": e.path,
                    "original_file_path": e.original_file_path,
                    "unique_id": e.unique_id,
                    "fqn": e.fqn,
                    "type": x.get("type").cloned().unwrap_or(json!("dashboard")),
                    "owner": {"email": owner.get("email").cloned().unwrap_or(Json::Null), "name": owner.get("name").cloned().unwrap_or(Json::Null)},
                    "description": e.description,
                    "label": x.get("label").cloned().unwrap_or(Json::Null),
                    "maturity": x.get("maturity").cloned().unwrap_or(Json::Null),
                    "meta": x.get("meta").cloned().unwrap_or(json!({})),
                    "tags": x.get("tags").cloned().unwrap_or(json!([])),
                    "config": {"enabled": true},
                    "unrendered_config": {},
                    "url": x.get("url").cloned().unwrap_or(Json::Null),
                    "depends_on": {"macros": [], "nodes": parents_of(&e.unique_id)},
                    "refs": e.refs.iter().map(|r| json!({"name": r.name, "package": r.package, "version": r.version})).collect::<Vec<_>>(),
                    "sources": e.sources.iter().map(|(s, t)| json!([s, t])).collect::<Vec<_>>(),
                    "metrics": [],
                    "created_at": 0.0,
                }),
            )
        })
        .collect();
    let unit_tests: BTreeMap<String, Json> = manifest
        .unit_tests
        .values()
        .map(|u| {
            let x = &u.extra;
            let model = x.get("model").cloned().unwrap_or(Json::Null);
            let target = u.attached_node.as_ref().and_then(|id| manifest.nodes.get(id));
            (
                u.unique_id.clone(),
                json!({
                    "model": model,
                    "given": x.get("given").cloned().unwrap_or(json!([])).as_array().cloned().unwrap_or_default().into_iter().map(|g| json!({
                        "input": g.get("input").cloned().unwrap_or(Json::Null),
                        "rows": g.get("rows").cloned().unwrap_or(Json::Null),
                        "format": g.get("format").cloned().unwrap_or(json!("dict")),
                        "fixture": g.get("fixture").cloned().unwrap_or(Json::Null),
                    })).collect::<Vec<_>>(),
                    "expect": {
                        "rows": x.get("expect").and_then(|e| e.get("rows")).cloned().unwrap_or(Json::Null),
                        "format": x.get("expect").and_then(|e| e.get("format")).cloned().unwrap_or(json!("dict")),
                        "fixture": x.get("expect").and_then(|e| e.get("fixture")).cloned().unwrap_or(Json::Null),
                    },
                    "name": u.name,
                    "resource_type": "unit_test",
                    "package_name": u.package,
                    "path": u.path,
                    "original_file_path": u.original_file_path,
                    "unique_id": u.unique_id,
                    "fqn": u.fqn,
                    "description": u.description,
                    "overrides": x.get("overrides").cloned().unwrap_or(Json::Null),
                    "depends_on": {"macros": [], "nodes": parents_of(&u.unique_id)},
                    "config": {"tags": u.tags(), "meta": u.config.get("meta").cloned().unwrap_or(json!({})), "enabled": true},
                    "checksum": u.checksum,
                    "schema": target.map(|t| t.schema.clone()),
                    "created_at": 0.0,
                    "versions": null,
                    "version": null,
                }),
            )
        })
        .collect();
    let docs: BTreeMap<String, Json> = manifest
        .docs
        .iter()
        .map(|(id, (name, text))| {
            let package = id.split('.').nth(1).unwrap_or("");
            (id.clone(), json!({"name": name, "resource_type": "doc", "package_name": package, "path": "", "original_file_path": "", "unique_id": id, "block_contents": text}))
        })
        .collect();
    let mut parent_map = BTreeMap::new();
    let mut child_map = BTreeMap::new();
    for (id, ps) in &graph.parents {
        parent_map.insert(id.clone(), json!(ps));
    }
    for (id, cs) in &graph.children {
        child_map.insert(id.clone(), json!(cs));
    }
    let disabled: BTreeMap<String, Json> =
        manifest.disabled.values().map(|n| (n.unique_id.clone(), json!([node_json(project, jinja, n, None, &[])]))).collect();
    let metadata = json!({
        "dbt_schema_version": MANIFEST_SCHEMA,
        "dbt_version": crate::DBT_COMPAT_VERSION,
        "generated_at": meta.generated_at,
        "invocation_id": meta.invocation_id,
        "invocation_started_at": meta.generated_at,
        "env": {},
        "project_name": meta.project_name,
        "project_id": md5_hex(meta.project_name),
        "user_id": null,
        "send_anonymous_usage_stats": false,
        "adapter_type": meta.adapter_type,
        "quoting": {"database": true, "schema": true, "identifier": true, "column": null},
    });
    let to_io = |e: serde_json::Error| std::io::Error::other(e);
    w.write_all(b"{\"metadata\":")?;
    serde_json::to_writer(&mut w, &metadata).map_err(to_io)?;
    write_entries(&mut w, "nodes", &nodes)?;
    write_entries(&mut w, "sources", &sources)?;
    for (key, value) in [
        ("macros", json!(macros)),
        ("docs", json!(docs)),
        ("exposures", json!(exposures)),
        ("metrics", json!({})),
        ("groups", json!({})),
        ("selectors", json!({})),
        ("disabled", json!(disabled)),
        ("parent_map", json!(parent_map)),
        ("child_map", json!(child_map)),
        ("group_map", json!({})),
        ("saved_queries", json!({})),
        ("semantic_models", json!({})),
        ("unit_tests", json!(unit_tests)),
    ] {
        write!(w, ",\"{key}\":")?;
        serde_json::to_writer(&mut w, &value).map_err(to_io)?;
    }
    w.write_all(b"}")?;
    w.flush()
}

/// `,"key":{"id":<json>,...}` from pre-serialized entries (sorted by id).
fn write_entries<W: std::io::Write>(w: &mut W, key: &str, entries: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    write!(w, ",\"{key}\":{{")?;
    for (i, (id, bytes)) in entries.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        serde_json::to_writer(&mut *w, id).map_err(std::io::Error::other)?;
        w.write_all(b":")?;
        w.write_all(bytes)?;
    }
    w.write_all(b"}")
}

/// Writes compiled SQL files; returns how many were written.
pub fn write_compiled(
    project: &Project,
    jinja: &JinjaEnv,
    manifest: &Manifest,
    compiled: &HashMap<String, Compiled>,
) -> std::io::Result<usize> {
    use rayon::prelude::*;
    let items: Vec<(PathBuf, String)> = compiled
        .iter()
        .filter_map(|(id, c)| {
            manifest
                .nodes
                .get(id)
                .filter(|n| !n.is_ephemeral())
                .map(|n| (project.root.join(compiled_path(project, n)), jinja.shared.scrub(&c.sql).into_owned()))
        })
        .collect();
    let mut dirs: Vec<&Path> = items.iter().filter_map(|(p, _)| p.parent()).collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        std::fs::create_dir_all(d)?;
    }
    // Unchanged files are left alone: rewriting costs more than comparing, and editors and
    // file watchers see no spurious change.
    items.par_iter().try_for_each(|(path, sql)| match std::fs::read(path) {
        Ok(old) if old == sql.as_bytes() => Ok(()),
        _ => std::fs::write(path, sql),
    })?;
    Ok(items.len())
}
