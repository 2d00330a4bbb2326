//! `target/manifest.json` in dbt's manifest schema v12, and compiled SQL under
//! `target/compiled/`. Output is deterministic: maps are sorted, and nothing secret is written.

use crate::compile::Compiled;
use crate::graph::Graph;
use crate::jinja::JinjaEnv;
use crate::parse::{ColumnInfo, Manifest, Node, ResourceType, SourceNode, md5_hex};
use crate::project::Project;
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{Value as Json, json};
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

/// One column of a node or source, as the manifest spells it.
fn column_json(c: &ColumnInfo) -> Json {
    json!({
        "name": c.name,
        "description": c.description,
        "meta": if c.meta.is_object() { c.meta.clone() } else { json!({}) },
        "data_type": c.data_type,
        "constraints": constraints_json(&c.constraints),
        "quote": c.quote,
        "tags": c.tags,
        "granularity": null,
    })
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
    artifact_path(project, node, "compiled")
}

/// Where a node's SQL goes under the target directory (`compiled` or `run`), relative to the
/// project, as dbt lays it out: generic tests under their YAML file's path.
pub fn artifact_path(project: &Project, node: &Node, dir: &str) -> String {
    let target = &project.config().target_path;
    if node.test_metadata.is_some() {
        format!("{target}/{dir}/{}/{}/{}", node.package, node.original_file_path, node.path)
    } else {
        format!("{target}/{dir}/{}/{}", node.package, node.original_file_path)
    }
}

#[derive(Serialize)]
struct Checksum<'a> {
    name: &'static str,
    checksum: &'a str,
}

/// A node's `config` as the manifest schema spells it (hooks as objects, severity upper-case).
struct ConfigOut<'a>(&'a crate::project::config::ConfigMap, ResourceType);

impl Serialize for ConfigOut<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = ser.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            match k.as_str() {
                "pre-hook" | "post-hook" if self.1 != ResourceType::Test => m.serialize_entry(k, &hooks(Some(v)))?,
                "severity" => m.serialize_entry(k, &v.as_str().map(str::to_uppercase))?,
                _ => m.serialize_entry(k, v)?,
            }
        }
        m.end()
    }
}

/// [`ColumnsOut`] as JSON (sources, `kiln ls --output-keys columns`).
pub fn columns_json(declared: &IndexMap<String, ColumnInfo>, inferred: Option<&[(String, String)]>) -> Json {
    serde_json::to_value(ColumnsOut(declared, inferred)).unwrap_or_default()
}

/// A node's columns: those its YAML declares, then those static analysis inferred. A declared
/// column without a `data_type` gets the inferred one; either kind of entry is marked
/// `"inferred": true` where its `data_type` was inferred.
struct ColumnsOut<'a>(&'a IndexMap<String, ColumnInfo>, Option<&'a [(String, String)]>);

impl Serialize for ColumnsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let inferred = self.1.unwrap_or_default();
        let type_of = |name: &str| inferred.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)).map(|(_, t)| t.as_str());
        let mut m = ser.serialize_map(None)?;
        for (k, c) in self.0 {
            let mut entry = column_json(c);
            if c.data_type.is_none()
                && let Some(t) = type_of(&c.name)
            {
                entry["data_type"] = json!(t);
                entry["inferred"] = json!(true);
            }
            m.serialize_entry(k, &entry)?;
        }
        for (name, t) in inferred {
            if !self.0.values().any(|c| c.name.eq_ignore_ascii_case(name)) {
                let entry = json!({
                    "name": name, "description": "", "meta": {}, "data_type": t, "constraints": [], "quote": null,
                    "tags": [], "granularity": null, "inferred": true,
                });
                m.serialize_entry(name, &entry)?;
            }
        }
        m.end()
    }
}

#[derive(Serialize)]
struct RefOut<'a> {
    name: &'a str,
    package: Option<&'a str>,
    version: Option<&'a str>,
}

#[derive(Serialize)]
struct DependsOn<'a> {
    macros: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<&'a [String]>,
}

#[derive(Serialize)]
struct CteOut<'a> {
    id: &'a str,
    sql: std::borrow::Cow<'a, str>,
}

#[derive(Serialize)]
struct Contract {
    enforced: bool,
    alias_types: bool,
    checksum: Option<()>,
}

#[derive(Serialize)]
struct CompiledOut<'a> {
    compiled_path: Option<String>,
    compiled: bool,
    compiled_code: Option<std::borrow::Cow<'a, str>>,
    extra_ctes_injected: bool,
    extra_ctes: Vec<CteOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contract: Option<Contract>,
}

#[derive(Serialize)]
struct ModelOut<'a> {
    access: &'a Json,
    constraints: [(); 0],
    version: Option<()>,
    latest_version: Option<()>,
    deprecation_date: Option<()>,
    primary_key: [(); 0],
    time_spine: Option<()>,
}

#[derive(Serialize)]
struct TestMetaOut<'a> {
    name: &'a str,
    kwargs: &'a serde_json::Map<String, Json>,
    namespace: Option<&'a str>,
}

#[derive(Serialize)]
struct GenericTestOut<'a> {
    test_metadata: TestMetaOut<'a>,
    column_name: Option<&'a str>,
    file_key_name: String,
    attached_node: Option<&'a str>,
}

/// One node of `nodes`, borrowing from the manifest (no intermediate JSON tree).
#[derive(Serialize)]
struct NodeOut<'a> {
    database: &'a str,
    schema: &'a str,
    name: &'a str,
    resource_type: &'static str,
    package_name: &'a str,
    path: &'a str,
    original_file_path: &'a str,
    unique_id: &'a str,
    fqn: &'a [String],
    alias: &'a str,
    checksum: Checksum<'a>,
    config: ConfigOut<'a>,
    tags: Vec<&'a str>,
    description: &'a str,
    columns: ColumnsOut<'a>,
    meta: Json,
    group: Option<()>,
    docs: Json,
    patch_path: Option<&'a str>,
    build_path: Option<()>,
    unrendered_config: &'a crate::project::config::ConfigMap,
    created_at: f64,
    raw_code: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    root_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    language: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refs: Option<Vec<RefOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sources: Option<&'a [(String, String)]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<[(); 0]>,
    depends_on: DependsOn<'a>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    compiled: Option<CompiledOut<'a>>,
    /// `Some(None)` is written as `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    relation_name: Option<Option<String>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    model: Option<ModelOut<'a>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    generic_test: Option<GenericTestOut<'a>>,
}

static PROTECTED: std::sync::LazyLock<Json> = std::sync::LazyLock::new(|| json!("protected"));

fn node_out<'a>(
    project: &Project,
    jinja: &'a JinjaEnv,
    node: &'a Node,
    compiled: Option<&'a Compiled>,
    parents: &'a [String],
) -> NodeOut<'a> {
    let quote = jinja.shared.target.quote_char();
    let rt = node.resource_type;
    let scrub = |s: &'a str| jinja.shared.scrub(s);
    let is_seed = rt == ResourceType::Seed;
    let has_sql = matches!(rt, ResourceType::Model | ResourceType::Snapshot | ResourceType::Analysis | ResourceType::Test);
    let relation_name = match rt {
        ResourceType::Model | ResourceType::Snapshot => Some((!node.is_ephemeral()).then(|| node.relation(quote).render())),
        ResourceType::Test => Some(None),
        _ => None,
    };
    NodeOut {
        database: &node.database,
        schema: &node.schema,
        name: &node.name,
        resource_type: rt.as_str(),
        package_name: &node.package,
        path: &node.path,
        original_file_path: &node.original_file_path,
        unique_id: &node.unique_id,
        fqn: &node.fqn,
        alias: &node.alias,
        checksum: Checksum { name: node.checksum_name, checksum: &node.checksum },
        config: ConfigOut(&node.config, rt),
        tags: node.tags(),
        description: &node.description,
        columns: ColumnsOut(&node.columns, compiled.and_then(|c| c.columns.as_deref())),
        meta: node.config.get("meta").cloned().unwrap_or_else(|| json!({})),
        group: None,
        docs: node.config.get("docs").cloned().filter(Json::is_object).unwrap_or_else(|| json!({"show": true, "node_color": null})),
        patch_path: node.patch_path.as_deref(),
        build_path: None,
        unrendered_config: &node.unrendered_config,
        created_at: 0.0,
        // dbt keeps a file's contents stripped, and a snapshot block's body as written.
        raw_code: match rt {
            ResourceType::Seed => "".into(),
            ResourceType::Snapshot => scrub(&node.raw_code),
            _ => scrub(node.raw_code.trim()),
        },
        root_path: is_seed.then(|| project.root.to_string_lossy().into_owned()),
        language: (!is_seed).then_some("sql"),
        refs: (!is_seed).then(|| {
            node.refs.iter().map(|r| RefOut { name: &r.name, package: r.package.as_deref(), version: r.version.as_deref() }).collect()
        }),
        sources: (!is_seed).then_some(node.sources.as_slice()),
        metrics: (!is_seed).then_some([]),
        depends_on: DependsOn { macros: &node.macros, nodes: (!is_seed).then_some(parents) },
        compiled: has_sql.then(|| CompiledOut {
            compiled_path: compiled.map(|_| compiled_path(project, node)),
            compiled: compiled.is_some(),
            compiled_code: compiled.map(|c| scrub(&c.sql)),
            extra_ctes_injected: compiled.is_some(),
            extra_ctes: compiled.map(|c| c.extra_ctes.iter().map(|(id, sql)| CteOut { id, sql: scrub(sql) }).collect()).unwrap_or_default(),
            contract: (rt != ResourceType::Test).then(|| Contract {
                enforced: node.config.get("contract").and_then(|c| c.get("enforced")).and_then(Json::as_bool).unwrap_or(false),
                alias_types: true,
                checksum: None,
            }),
        }),
        relation_name,
        model: (rt == ResourceType::Model).then(|| ModelOut {
            access: node.config.get("access").unwrap_or(&PROTECTED),
            constraints: [],
            version: None,
            latest_version: None,
            deprecation_date: None,
            primary_key: [],
            time_spine: None,
        }),
        generic_test: node.test_metadata.as_ref().map(|meta| GenericTestOut {
            test_metadata: TestMetaOut { name: &meta.name, kwargs: &meta.kwargs, namespace: meta.namespace.as_deref() },
            column_name: node.column_name.as_deref(),
            file_key_name: node
                .patch_path
                .clone()
                .unwrap_or_else(|| format!("models.{}", node.attached_node.as_deref().unwrap_or("").rsplit('.').next().unwrap_or(""))),
            attached_node: node.attached_node.as_deref(),
        }),
    }
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
        "loaded_at_query": s.loaded_at_query,
        "freshness": if s.freshness.is_object() { s.freshness.clone() } else { json!({"warn_after": {"count": null, "period": null}, "error_after": {"count": null, "period": null}, "filter": null}) },
        "external": if s.external.is_object() { s.external.clone() } else { Json::Null },
        "description": s.description,
        "columns": columns_json(&s.columns, None),
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
            let parents = parents_of(id);
            let v = node_out(project, jinja, n, compiled.get(*id), &parents);
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
    let disabled: BTreeMap<String, Json> = manifest
        .disabled
        .values()
        .map(|n| (n.unique_id.clone(), json!([serde_json::to_value(node_out(project, jinja, n, None, &[])).unwrap_or_default()])))
        .collect();
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
    let empty = BTreeMap::<String, Json>::new();
    write_field(&mut w, "macros", &macros)?;
    write_field(&mut w, "docs", &docs)?;
    write_field(&mut w, "exposures", &exposures)?;
    for key in ["metrics", "groups", "selectors"] {
        write_field(&mut w, key, &empty)?;
    }
    write_field(&mut w, "disabled", &disabled)?;
    // The graph's own sorted maps, written as they are.
    write_field(&mut w, "parent_map", &graph.parents)?;
    write_field(&mut w, "child_map", &graph.children)?;
    for key in ["group_map", "saved_queries", "semantic_models"] {
        write_field(&mut w, key, &empty)?;
    }
    write_field(&mut w, "unit_tests", &unit_tests)?;
    w.write_all(b"}")?;
    w.flush()
}

/// `,"key":<json>`.
fn write_field<W: std::io::Write>(w: &mut W, key: &str, value: &impl Serialize) -> std::io::Result<()> {
    write!(w, ",\"{key}\":")?;
    serde_json::to_writer(w, value).map_err(std::io::Error::other)
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
    let items: Vec<(PathBuf, std::borrow::Cow<str>)> = compiled
        .par_iter()
        .filter_map(|(id, c)| {
            manifest
                .nodes
                .get(id)
                .filter(|n| !n.is_ephemeral())
                .map(|n| (project.root.join(compiled_path(project, n)), jinja.shared.scrub(&c.sql)))
        })
        .collect();
    let mut dirs: Vec<&Path> = items.iter().filter_map(|(p, _)| p.parent()).collect();
    dirs.sort_unstable_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    dirs.dedup();
    let mut new_dirs = std::collections::HashSet::new();
    for d in dirs {
        if !d.is_dir() {
            std::fs::create_dir_all(d)?;
            new_dirs.insert(d);
        }
    }
    // In a new directory every file is new: written at once. Elsewhere an unchanged file is
    // left alone (rewriting costs more than comparing, and editors and file watchers see no
    // change).
    items.par_iter().try_for_each(|(path, sql)| {
        if path.parent().is_some_and(|d| new_dirs.contains(d)) {
            return std::fs::write(path, sql.as_bytes());
        }
        match std::fs::read(path) {
            Ok(old) if old == sql.as_bytes() => Ok(()),
            _ => std::fs::write(path, sql.as_bytes()),
        }
    })?;
    Ok(items.len())
}
