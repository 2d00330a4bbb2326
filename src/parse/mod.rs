//! Stage 3: the parse phase. Every model, seed, snapshot, analysis and test becomes a [`Node`]
//! with its final config; every file is rendered once with `execute = false` to record its
//! `ref()`s, `source()`s, `config()` calls and macros. Relations (`database.schema.alias`) are
//! resolved here, with dbt's `generate_*_name` macros when the project overrides them.

mod generic_tests;

pub use generic_tests::{render_test as generic_tests_render, test_ctx};

use crate::diagnostics::{Code, Diagnostic, Label, SourceText};
use crate::jinja::context::{NodeCtx, NodeInfo, Phase, RefCall};
use crate::jinja::relation::Relation;
use crate::jinja::{JinjaEnv, error::to_diagnostic, ser};
use crate::project::config::{ConfigMap, json_truthy, merge_all, merge_one};
use crate::project::properties::{self, ColumnDef, Properties, ResourcePatch};
use crate::project::typed::{Materialized, NodeConfig, Strategy, choices};
use crate::project::{FileKind, Project, ProjectFile};
use indexmap::IndexMap;
use rayon::prelude::*;
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Model,
    Seed,
    Snapshot,
    Test,
    Analysis,
    Source,
    Exposure,
    UnitTest,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Model => "model",
            ResourceType::Seed => "seed",
            ResourceType::Snapshot => "snapshot",
            ResourceType::Test => "test",
            ResourceType::Analysis => "analysis",
            ResourceType::Source => "source",
            ResourceType::Exposure => "exposure",
            ResourceType::UnitTest => "unit_test",
        }
    }
    pub fn parse(s: &str) -> Option<ResourceType> {
        Some(match s {
            "model" => ResourceType::Model,
            "seed" => ResourceType::Seed,
            "snapshot" => ResourceType::Snapshot,
            "test" | "data_test" => ResourceType::Test,
            "analysis" => ResourceType::Analysis,
            "source" => ResourceType::Source,
            "exposure" => ResourceType::Exposure,
            "unit_test" => ResourceType::UnitTest,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct ColumnInfo {
    pub name: String,
    pub description: String,
    pub data_type: Option<String>,
    pub constraints: Json,
    pub meta: Json,
    pub tags: Vec<String>,
    pub quote: Option<bool>,
}

impl From<&ColumnDef> for ColumnInfo {
    fn from(c: &ColumnDef) -> Self {
        ColumnInfo {
            name: c.name.clone(),
            description: c.description.clone(),
            data_type: c.data_type.clone(),
            constraints: c.constraints.clone(),
            meta: c.meta.clone(),
            tags: c.tags.clone(),
            quote: c.quote,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TestMetadata {
    pub name: String,
    pub namespace: Option<String>,
    pub kwargs: serde_json::Map<String, Json>,
}

/// A model, seed, snapshot, analysis, test or unit test.
#[derive(Clone, Debug)]
pub struct Node {
    pub unique_id: String,
    pub resource_type: ResourceType,
    pub package: String,
    pub name: String,
    /// Index into `Project::files` of the file that defines the node (the YAML file for
    /// generic tests and unit tests).
    pub file: Option<usize>,
    /// 1-based line of the definition in `file`.
    pub line: usize,
    pub original_file_path: String,
    pub path: String,
    pub patch_path: Option<String>,
    pub fqn: Vec<String>,
    pub raw_code: Arc<str>,
    /// Shared between nodes with the same project-level config; copied on write.
    pub config: Arc<ConfigMap>,
    pub unrendered_config: ConfigMap,
    pub description: String,
    pub columns: IndexMap<String, ColumnInfo>,
    pub refs: Vec<RefCall>,
    pub sources: Vec<(String, String)>,
    pub macros: Vec<String>,
    pub database: String,
    pub schema: String,
    pub alias: String,
    /// dbt's file hash: `checksum_name` `sha256` of the file's contents (stripped, as dbt reads
    /// them), `path` (the file's path) for a seed over 1 MiB, `none` (empty) for generic tests.
    pub checksum: String,
    pub checksum_name: &'static str,
    pub test_metadata: Option<TestMetadata>,
    pub column_name: Option<String>,
    /// The node a generic test is attached to.
    pub attached_node: Option<String>,
    /// Extra data: unit test definition, exposure fields.
    pub extra: Json,
}

impl Node {
    pub fn materialized(&self) -> &str {
        self.config.get("materialized").and_then(Json::as_str).unwrap_or("view")
    }
    /// Where an `external` model is written and in which format: `location` (a path relative to
    /// the project, an absolute path or an object-store URL; default `<target-path>/<alias>.<format>`)
    /// and `format` (default `parquet`).
    pub fn external_target(&self, project: &Project) -> (String, String) {
        let format = self.config.get("format").and_then(Json::as_str).unwrap_or("parquet").to_ascii_lowercase();
        let location = match self.config.get("location").and_then(Json::as_str) {
            Some(l) => l.to_string(),
            None => format!("{}/{}.{}", project.config().target_path, self.alias, format),
        };
        let location = if location.contains("://") || location.starts_with('/') {
            location
        } else {
            project.root.join(location).to_string_lossy().into_owned()
        };
        (location, format)
    }

    pub fn is_ephemeral(&self) -> bool {
        self.resource_type == ResourceType::Model && self.materialized() == "ephemeral"
    }
    pub fn tags(&self) -> Vec<&str> {
        self.config.get("tags").and_then(Json::as_array).map(|a| a.iter().filter_map(Json::as_str).collect()).unwrap_or_default()
    }
    pub fn enabled(&self) -> bool {
        json_truthy(self.config.get("enabled")).unwrap_or(true)
    }
    /// Does this node produce a relation other nodes can `ref`?
    pub fn is_refable(&self) -> bool {
        matches!(self.resource_type, ResourceType::Model | ResourceType::Seed | ResourceType::Snapshot)
    }
    pub fn relation(&self, quote: char) -> Relation {
        if self.is_ephemeral() {
            return Relation::cte(&self.name, quote);
        }
        let mut r = Relation::new(&self.database, &self.schema, &self.alias, quote);
        r.kind = match self.materialized() {
            "view" => "view",
            "external" => "external",
            _ => "table",
        }
        .into();
        if let Some(Json::Object(q)) = self.config.get("quoting") {
            for (i, k) in ["database", "schema", "identifier"].iter().enumerate() {
                if let Some(b) = q.get(*k).and_then(Json::as_bool) {
                    r.quoting[i] = b;
                }
            }
        }
        r
    }
    /// The node as dbt's `model` context variable.
    pub fn context_value(&self) -> minijinja::Value {
        ser(&json!({
            "unique_id": self.unique_id,
            "name": self.name,
            "resource_type": self.resource_type.as_str(),
            "package_name": self.package,
            "original_file_path": self.original_file_path,
            "path": self.path,
            "fqn": self.fqn,
            "alias": self.alias,
            "schema": self.schema,
            "database": self.database,
            "config": self.config,
            "tags": self.tags(),
            "description": self.description,
            "columns": self.columns.iter().map(|(k, c)| (k.clone(), json!({"name": c.name, "description": c.description, "data_type": c.data_type, "meta": c.meta, "tags": c.tags}))).collect::<serde_json::Map<_, _>>(),
            "raw_code": &*self.raw_code,
            "raw_sql": &*self.raw_code,
            "language": "sql",
            "version": Json::Null,
        }))
    }
}

#[derive(Clone, Debug)]
pub struct SourceNode {
    pub unique_id: String,
    pub package: String,
    pub source_name: String,
    pub name: String,
    pub identifier: String,
    pub database: String,
    pub schema: String,
    pub file: usize,
    pub line: usize,
    pub fqn: Vec<String>,
    pub description: String,
    pub source_description: String,
    pub loader: String,
    pub columns: IndexMap<String, ColumnInfo>,
    pub meta: Json,
    pub source_meta: Json,
    pub tags: Vec<String>,
    pub config: ConfigMap,
    pub quoting: Json,
    pub loaded_at_field: Option<String>,
    /// A query whose one value is when the source was last loaded (rendered with `this` when
    /// freshness is checked); wins over `loaded_at_field`, as in dbt.
    pub loaded_at_query: Option<String>,
    pub freshness: Json,
    pub external: Json,
}

impl SourceNode {
    pub fn relation(&self, quote: char) -> Relation {
        let mut r = Relation::new(&self.database, &self.schema, &self.identifier, quote);
        if let Json::Object(q) = &self.quoting {
            for (i, k) in ["database", "schema", "identifier"].iter().enumerate() {
                if let Some(b) = q.get(*k).and_then(Json::as_bool) {
                    r.quoting[i] = b;
                }
            }
        }
        r
    }
}

/// Everything the parse phase produced.
#[derive(Debug, Default)]
pub struct Manifest {
    pub nodes: IndexMap<String, Node>,
    pub sources: IndexMap<String, SourceNode>,
    pub exposures: IndexMap<String, Node>,
    pub unit_tests: IndexMap<String, Node>,
    pub disabled: IndexMap<String, Node>,
    pub docs: BTreeMap<String, (String, String)>,
}

impl Manifest {
    pub fn all_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values().chain(self.exposures.values()).chain(self.unit_tests.values())
    }
}

/// Default configs by resource type (dbt's).
fn defaults(rt: ResourceType) -> ConfigMap {
    static CACHE: std::sync::OnceLock<HashMap<ResourceType, ConfigMap>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        [
            ResourceType::Model,
            ResourceType::Seed,
            ResourceType::Snapshot,
            ResourceType::Test,
            ResourceType::Analysis,
            ResourceType::Source,
            ResourceType::Exposure,
            ResourceType::UnitTest,
        ]
        .into_iter()
        .map(|rt| (rt, build_defaults(rt)))
        .collect()
    });
    cache[&rt].clone()
}

fn build_defaults(rt: ResourceType) -> ConfigMap {
    let mut c = ConfigMap::new();
    let materialized = match rt {
        ResourceType::Seed => "seed",
        ResourceType::Snapshot => "snapshot",
        ResourceType::Test => "test",
        _ => "view",
    };
    c.insert("enabled".into(), json!(true));
    c.insert("alias".into(), Json::Null);
    c.insert("schema".into(), Json::Null);
    c.insert("database".into(), Json::Null);
    c.insert("tags".into(), json!([]));
    c.insert("meta".into(), json!({}));
    c.insert("materialized".into(), json!(materialized));
    if rt == ResourceType::Test {
        c.insert("severity".into(), json!("ERROR"));
        c.insert("store_failures".into(), Json::Null);
        c.insert("store_failures_as".into(), Json::Null);
        c.insert("where".into(), Json::Null);
        c.insert("limit".into(), Json::Null);
        c.insert("fail_calc".into(), json!("count(*)"));
        c.insert("warn_if".into(), json!("!= 0"));
        c.insert("error_if".into(), json!("!= 0"));
        return c;
    }
    c.insert("persist_docs".into(), json!({}));
    c.insert("pre-hook".into(), json!([]));
    c.insert("post-hook".into(), json!([]));
    c.insert("quoting".into(), json!({}));
    c.insert("column_types".into(), json!({}));
    c.insert("full_refresh".into(), Json::Null);
    c.insert("unique_key".into(), Json::Null);
    c.insert("on_schema_change".into(), json!("ignore"));
    c.insert("on_configuration_change".into(), json!("apply"));
    c.insert("grants".into(), json!({}));
    c.insert("packages".into(), json!([]));
    c.insert("docs".into(), json!({"show": true, "node_color": null}));
    c.insert("contract".into(), json!({"enforced": false, "alias_types": true}));
    if rt == ResourceType::Model {
        c.insert("access".into(), json!("protected"));
    }
    if rt == ResourceType::Seed {
        c.insert("delimiter".into(), json!(","));
        c.insert("quote_columns".into(), Json::Null);
    }
    c
}

fn section_for(rt: ResourceType) -> &'static str {
    match rt {
        ResourceType::Model => "models",
        ResourceType::Seed => "seeds",
        ResourceType::Snapshot => "snapshots",
        ResourceType::Test => "data_tests",
        ResourceType::Analysis => "analyses",
        ResourceType::Source => "sources",
        ResourceType::Exposure => "exposures",
        ResourceType::UnitTest => "unit_tests",
    }
}

/// Project-level config for a node at `fqn` in `package`: the package's own tree, then the root
/// project's tree (which may configure packages too). Shared (`Arc`) between nodes of the same
/// folder: most nodes never change it, and copying ~25 entries per node was the parse phase's
/// main cost.
pub fn project_config(project: &Project, rt: ResourceType, package: usize, fqn: &[String]) -> Arc<ConfigMap> {
    let section = section_for(rt);
    let pkg = &project.packages[package];
    let path: Vec<&str> = fqn.iter().map(String::as_str).collect();
    let own_tree = if pkg.is_root { None } else { pkg.config.tree(section) };
    let leaf_specific = own_tree.is_some_and(|t| t.has_path(&path)) || project.config().tree(section).is_some_and(|t| t.has_path(&path));
    if leaf_specific || fqn.is_empty() {
        return Arc::new(project_config_uncached(project, rt, package, fqn));
    }
    let key = (section, package, fqn[..fqn.len() - 1].to_vec());
    let mut cache = project.config_cache.lock().unwrap_or_else(|e| e.into_inner());
    cache.entry(key).or_insert_with(|| Arc::new(project_config_uncached(project, rt, package, &fqn[..fqn.len() - 1]))).clone()
}

/// dbt's hash of a node's file: the sha256 of its stripped contents; a seed over 1 MiB is
/// hashed by its path instead, as dbt does (its contents are not read).
fn file_hash(file: &ProjectFile, rt: ResourceType, raw: &str) -> (&'static str, String) {
    match (rt, &file.seed_sha256) {
        (ResourceType::Seed, Some(hash)) => ("sha256", hash.clone()),
        (ResourceType::Seed, None) => ("path", file.original_path.clone()),
        _ => ("sha256", checksum(raw.trim())),
    }
}

/// The project-level configs of a node as written (no defaults, Jinja unrendered): where its
/// `unrendered_config` starts.
fn project_unrendered_config(project: &Project, rt: ResourceType, package: usize, fqn: &[String]) -> ConfigMap {
    apply_trees(project, rt, package, fqn, true, ConfigMap::new())
}

fn project_config_uncached(project: &Project, rt: ResourceType, package: usize, fqn: &[String]) -> ConfigMap {
    apply_trees(project, rt, package, fqn, false, defaults(rt))
}

/// `config` with the `dbt_project.yml` trees of the node's package, then of the root project,
/// applied along `fqn`: as rendered, or (`as_written`) before their Jinja is rendered.
fn apply_trees(project: &Project, rt: ResourceType, package: usize, fqn: &[String], as_written: bool, mut config: ConfigMap) -> ConfigMap {
    fn tree<'a>(c: &'a crate::project::ProjectConfig, section: &str, as_written: bool) -> Option<&'a crate::project::config::ConfigTree> {
        if as_written { c.unrendered_trees.get(section) } else { c.tree(section) }
    }
    let path: Vec<&str> = fqn.iter().map(String::as_str).collect();
    let section = section_for(rt);
    let pkg = &project.packages[package];
    if !pkg.is_root
        && let Some(t) = tree(&pkg.config, section, as_written)
    {
        t.apply(&path, &mut config);
    }
    if let Some(t) = tree(project.config(), section, as_written) {
        t.apply(&path, &mut config);
    }
    config
}

pub use crate::adapter::names::{md5_hex, sha256_hex as checksum};

/// The result of parsing.
pub struct Parsed {
    pub manifest: Manifest,
    pub properties: Properties,
}

/// Runs the parse phase over the whole project.
pub fn parse(project: &Project, jinja: &JinjaEnv, diags: &mut Vec<Diagnostic>) -> Parsed {
    parse_with(project, jinja, diags, None)
}

/// Parse-phase renders kept between parses of the same project (watch mode): a node whose file,
/// pre-render config and macros are unchanged is not rendered again. The caller clears it when
/// anything else a render can see changes (vars, target, the set of macro names) and forgets
/// the entries of edited macros ([`RenderCache::forget_macros`]).
#[derive(Default)]
pub struct RenderCache {
    entries: std::sync::Mutex<HashMap<String, CachedRender>>,
    /// Properties files as parsed (their Jinja rendered), by file index: (hash of the path
    /// and text, what the file declares, what was found in it). Forgotten whenever the Jinja
    /// environment is rebuilt.
    properties: std::sync::Mutex<HashMap<usize, (u64, ParsedProperties)>>,
    /// Renders answered from the cache so far.
    pub hits: std::sync::atomic::AtomicUsize,
}

/// What one properties file declares, and what was found in it.
type ParsedProperties = (Properties, Vec<Diagnostic>);

struct CachedRender {
    key: u64,
    raw_code: Arc<str>,
    record: crate::jinja::context::Record,
}

impl RenderCache {
    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.properties.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Forgets the renders that called, or may call, an edited macro, and every properties
    /// file (whose values may call any macro).
    pub fn forget_macros(&self, changes: &crate::jinja::macros::MacroChanges) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, c| !changes.touches(&c.raw_code, &c.record.macros));
        self.properties.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn properties_key(file: &ProjectFile) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (&file.display_path, &file.text).hash(&mut h);
        h.finish()
    }

    /// Properties file `i` as parsed last, when its text is the same.
    fn properties(&self, i: usize, file: &ProjectFile) -> Option<ParsedProperties> {
        let parsed = self.properties.lock().unwrap_or_else(|e| e.into_inner());
        parsed.get(&i).filter(|(key, _)| *key == Self::properties_key(file)).map(|(_, p)| p.clone())
    }

    fn put_properties(&self, i: usize, file: &ProjectFile, parsed: &ParsedProperties) {
        self.properties.lock().unwrap_or_else(|e| e.into_inner()).insert(i, (Self::properties_key(file), parsed.clone()));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What a parse render depends on besides macros: the file, the node and its config.
    pub(crate) fn key(node: &Node) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        node.unique_id.hash(&mut h);
        node.original_file_path.hash(&mut h);
        node.raw_code.hash(&mut h);
        serde_json::to_string(&*node.config).unwrap_or_default().hash(&mut h);
        if let Some(t) = &node.test_metadata {
            serde_json::to_string(&t.kwargs).unwrap_or_default().hash(&mut h);
        }
        h.finish()
    }

    pub(crate) fn get(&self, node: &Node, key: u64) -> Option<crate::jinja::context::Record> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let hit = entries.get(&node.unique_id).filter(|c| c.key == key).map(|c| c.record.clone());
        if hit.is_some() {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        hit
    }

    pub(crate) fn put(&self, node: &Node, key: u64, record: &crate::jinja::context::Record) {
        let entry = CachedRender { key, raw_code: node.raw_code.clone(), record: record.clone() };
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).insert(node.unique_id.clone(), entry);
    }
}

/// [`parse`], reusing (and filling) `cache`.
pub fn parse_with(project: &Project, jinja: &JinjaEnv, diags: &mut Vec<Diagnostic>, cache: Option<&RenderCache>) -> Parsed {
    // Properties files are independent: parsed in parallel, merged in file order.
    let per_file: Vec<(Properties, Vec<Diagnostic>)> = project
        .files
        .par_iter()
        .enumerate()
        .filter(|(_, file)| file.kind == FileKind::Properties)
        .map(|(i, file)| {
            if let Some(parsed) = cache.and_then(|c| c.properties(i, file)) {
                return parsed;
            }
            let (mut props, mut ds) = (Properties::default(), Vec::new());
            let package = &project.packages[file.package].name;
            let render =
                |text: &str| jinja.render_value(text, package).map_err(|e| e.detail().map_or_else(|| e.to_string(), str::to_string));
            properties::parse_file(i, file, Some(&render), &mut props, &mut ds);
            let parsed = (props, ds);
            if let Some(c) = cache {
                c.put_properties(i, file, &parsed);
            }
            parsed
        })
        .collect();
    let mut props = Properties::default();
    for (p, ds) in per_file {
        props.append(p);
        diags.extend(ds);
    }
    let mut manifest = Manifest::default();
    for ((pkg, name), text) in &jinja.shared.docs {
        manifest.docs.insert(format!("doc.{pkg}.{name}"), (name.clone(), text.clone()));
    }

    // Patches by (section, package, name); a name described twice is an error.
    let mut patches: HashMap<(&str, String, &str), &ResourcePatch> = HashMap::new();
    for p in &props.patches {
        let pkg = project.packages[project.files[p.file].package].name.clone();
        if let Some(prev) = patches.insert((p.section, pkg, p.name.as_str()), p) {
            let file = &project.files[p.file];
            diags.push(
                Diagnostic::error(Code::DuplicateResource, format!("`{}` is described twice in properties YAML", p.name))
                    .with_label(Label::new(file.source(), p.line, p.col, p.name.len() + 6, "second description"))
                    .with_note(format!("first described in {}:{}", project.files[prev.file].display_path, prev.line)),
            );
        }
    }

    // Nodes from SQL/CSV files: built, patched from YAML and rendered (parse phase) in
    // parallel, one file at a time; results keep the files' order.
    let per_file: Vec<(Vec<Node>, Vec<Diagnostic>)> = project
        .files
        .par_iter()
        .enumerate()
        .map(|(i, file)| {
            let mut ds = Vec::new();
            let mut nodes = file_nodes(project, i, file, &mut ds);
            if file.kind == FileKind::Properties {
                nodes.extend(props.patches.iter().filter(|p| p.file == i).filter_map(|p| yaml_snapshot(project, i, p)));
            }
            for node in &mut nodes {
                let section = match node.resource_type {
                    ResourceType::Model => Some("models"),
                    ResourceType::Seed => Some("seeds"),
                    ResourceType::Snapshot => Some("snapshots"),
                    ResourceType::Analysis => Some("analyses"),
                    _ => None,
                };
                if let Some(p) = section.and_then(|section| patches.get(&(section, node.package.clone(), node.name.as_str()))) {
                    apply_patch(node, p, project);
                }
                if node.resource_type == ResourceType::Seed {
                    continue;
                }
                let key = cache.map(|_| RenderCache::key(node));
                let record = match (cache, key) {
                    (Some(c), Some(k)) => c.get(node, k),
                    _ => None,
                };
                let record = record.unwrap_or_else(|| {
                    let before = ds.len();
                    let record = render_parse(project, jinja, node, &mut ds);
                    if let (Some(c), Some(k), true) = (cache, key, ds.len() == before) {
                        c.put(node, k, &record);
                    }
                    record
                });
                apply_record(node, record);
            }
            (nodes, ds)
        })
        .collect();
    let mut parsed_nodes = Vec::with_capacity(per_file.iter().map(|(n, _)| n.len()).sum());
    for (nodes, ds) in per_file {
        diags.extend(ds);
        parsed_nodes.extend(nodes);
    }

    // Patches naming nothing.
    let existing: std::collections::HashSet<(&str, &str)> = parsed_nodes.iter().map(|n| (n.package.as_str(), n.name.as_str())).collect();
    for p in &props.patches {
        let pkg = &project.packages[project.files[p.file].package].name;
        if !existing.contains(&(pkg.as_str(), p.name.as_str())) {
            let file = &project.files[p.file];
            let candidates: Vec<&str> = parsed_nodes.iter().map(|n| n.name.as_str()).collect();
            diags.push(
                Diagnostic::warning(
                    Code::PatchTargetMissing,
                    format!(
                        "{} `{}` is described in {} but no such file exists",
                        &p.section[..p.section.len() - 1],
                        p.name,
                        file.display_path
                    ),
                )
                .with_label(Label::new(file.source(), p.line, p.col, 1, "no matching file"))
                .with_help_opt(crate::diagnostics::did_you_mean(&p.name, candidates)),
            );
        }
    }

    // Sources.
    for s in &props.sources {
        let file = &project.files[s.file];
        let package = &project.packages[file.package];
        for t in &s.tables {
            let unique_id = format!("source.{}.{}.{}", package.name, s.name, t.name);
            let mut fqn = vec![package.name.clone()];
            fqn.extend(file.folders().iter().map(|x| x.to_string()));
            fqn.push(s.name.clone());
            fqn.push(t.name.clone());
            let mut config = ConfigMap::new();
            config.insert("enabled".into(), json!(true));
            if let Some(tree) = project.config().tree("sources") {
                tree.apply(&fqn.iter().map(String::as_str).collect::<Vec<_>>(), &mut config);
            }
            merge_all(&mut config, &s.config);
            merge_all(&mut config, &t.config);
            if !json_truthy(config.get("enabled")).unwrap_or(true) {
                continue;
            }
            let mut meta = s.meta.clone();
            if let (Json::Object(m), Json::Object(tm)) = (&mut meta, &t.meta) {
                m.extend(tm.clone());
            }
            let mut quoting = s.quoting.clone();
            if let (Json::Object(q), Json::Object(tq)) = (&mut quoting, &t.quoting) {
                q.extend(tq.clone());
            } else if t.quoting.is_object() {
                quoting = t.quoting.clone();
            }
            let mut tags = s.tags.clone();
            tags.extend(t.tags.iter().cloned());
            let first_table = std::ptr::eq(t, &s.tables[0]);
            for (level, at) in [("table", &t.loaded_at), ("source", &s.loaded_at)] {
                if at.field.is_some() && at.query.is_some() && (level == "table" || first_table) {
                    diags.push(
                        Diagnostic::error(
                            Code::InvalidValue,
                            format!("source `{}.{}` has both loaded_at_field and loaded_at_query at {level} level", s.name, t.name),
                        )
                        .with_label(Label::new(file.source(), at.line, 1, 1, "one of the two"))
                        .with_help("keep one: `loaded_at_field` names a timestamp column, `loaded_at_query` selects one value"),
                    );
                }
            }
            let source = SourceNode {
                unique_id: unique_id.clone(),
                package: package.name.clone(),
                source_name: s.name.clone(),
                name: t.name.clone(),
                identifier: t.identifier.clone().unwrap_or_else(|| t.name.clone()),
                database: s.database.clone().unwrap_or_else(|| jinja.shared.target.database.clone()),
                schema: s.schema.clone().unwrap_or_else(|| s.name.clone()),
                file: s.file,
                line: t.line,
                fqn,
                description: t.description.clone(),
                source_description: s.description.clone(),
                loader: s.loader.clone(),
                columns: t.columns.iter().map(|c| (c.name.clone(), ColumnInfo::from(c))).collect(),
                meta,
                source_meta: s.meta.clone(),
                tags,
                config,
                quoting,
                loaded_at_field: if t.loaded_at.field_present { t.loaded_at.field.clone() } else { s.loaded_at.field.clone() },
                loaded_at_query: match (&t.loaded_at.query, t.loaded_at.field_present) {
                    (Some(q), _) => Some(q.clone()),
                    (None, true) => None,
                    (None, false) => s.loaded_at.query.clone(),
                },
                freshness: if t.freshness.is_null() { s.freshness.clone() } else { t.freshness.clone() },
                external: t.external.clone(),
            };
            if manifest.sources.insert(unique_id.clone(), source).is_some() {
                diags.push(
                    Diagnostic::error(Code::DuplicateResource, format!("source table `{}.{}` is defined twice", s.name, t.name))
                        .with_label(Label::new(file.source(), t.line, 1, 1, "second definition")),
                );
            }
        }
    }

    check_configs(project, jinja, &parsed_nodes, diags);

    // Relations, enabled state, duplicates.
    resolve_relations(project, jinja, &mut parsed_nodes, diags);
    let mut by_name: HashMap<(String, String, ResourceType), String> = HashMap::new();
    for node in parsed_nodes {
        if !node.enabled() {
            manifest.disabled.insert(node.unique_id.clone(), node);
            continue;
        }
        let key = (node.package.clone(), node.name.clone(), if node.is_refable() { ResourceType::Model } else { node.resource_type });
        if let Some(prev) = by_name.get(&key) {
            let prev = &manifest.nodes[prev];
            let file = node.file.map(|f| &project.files[f]);
            let mut d = Diagnostic::error(
                Code::DuplicateResource,
                format!(
                    "two resources are named `{}` in package `{}`: {} and {}",
                    node.name, node.package, prev.original_file_path, node.original_file_path
                ),
            )
            .with_help("rename one of the files (names must be unique within a package, across models, seeds and snapshots)");
            if let Some(f) = file {
                d = d.with_label(Label::new(f.source(), node.line, 1, 1, "second definition"));
            }
            diags.push(d.with_note(format!("first defined in {}", prev.original_file_path)));
            continue;
        }
        by_name.insert(key, node.unique_id.clone());
        manifest.nodes.insert(node.unique_id.clone(), node);
    }

    // Generic tests, exposures, unit tests.
    generic_tests::build(project, jinja, &props, &mut manifest, diags, cache);
    build_exposures(project, jinja, &props, &mut manifest, diags);
    build_unit_tests(project, &props, &mut manifest, diags);
    render_descriptions(project, jinja, &mut manifest, diags);
    manifest.nodes.sort_keys();
    manifest.sources.sort_keys();
    Parsed { manifest, properties: props }
}

/// Renders the Jinja (`{{ doc('name') }}`) in the descriptions of nodes, sources and their
/// columns, as dbt does before it writes the manifest. A missing doc is an error at the file
/// that describes the node.
fn render_descriptions(project: &Project, jinja: &JinjaEnv, manifest: &mut Manifest, diags: &mut Vec<Diagnostic>) {
    let mut render = |text: &mut String, package: &str, file: &str, what: &str| {
        if !text.contains("{{") && !text.contains("{%") {
            return;
        }
        match jinja.render_value(text, package) {
            Ok(rendered) => *text = rendered,
            Err(e) => diags.push(to_diagnostic(&e, &|_| None, &format!("the description of {what}")).with_file(file.to_string())),
        }
    };
    for node in manifest.nodes.values_mut() {
        let file = node
            .patch_path
            .clone()
            .map_or_else(|| node.original_file_path.clone(), |p| p.split_once("://").map_or(p.clone(), |(_, f)| f.to_string()));
        let what = format!("{} `{}`", node.resource_type.as_str(), node.name);
        render(&mut node.description, &node.package, &file, &what);
        for c in node.columns.values_mut() {
            render(&mut c.description, &node.package, &file, &format!("column `{}` of {what}", c.name));
        }
    }
    for src in manifest.sources.values_mut() {
        let file = project.files[src.file].display_path.clone();
        let what = format!("source `{}.{}`", src.source_name, src.name);
        render(&mut src.description, &src.package, &file, &what);
        render(&mut src.source_description, &src.package, &file, &what);
        for c in src.columns.values_mut() {
            render(&mut c.description, &src.package, &file, &format!("column `{}` of {what}", c.name));
        }
    }
}

/// The nodes a file defines (none for macros, properties and generic tests; one per
/// `{% snapshot %}` block).
fn file_nodes(project: &Project, i: usize, file: &ProjectFile, diags: &mut Vec<Diagnostic>) -> Vec<Node> {
    let rt = match file.kind {
        FileKind::Model => ResourceType::Model,
        FileKind::Analysis => ResourceType::Analysis,
        FileKind::Seed => ResourceType::Seed,
        FileKind::Snapshot => ResourceType::Snapshot,
        FileKind::Test if !file.path.starts_with("generic/") && !file.text.contains("{% test") && !file.text.contains("{%- test") => {
            ResourceType::Test
        }
        _ => return vec![],
    };
    let package = &project.packages[file.package].name;
    let fqn = |name: &str| {
        let mut fqn = vec![package.clone()];
        fqn.extend(file.folders().iter().map(|s| s.to_string()));
        fqn.push(name.to_string());
        fqn
    };
    if rt != ResourceType::Snapshot {
        let name = file.stem();
        return vec![new_node(project, i, rt, name, fqn(name), file.text.clone(), 1)];
    }
    match crate::jinja::blocks::find_blocks(&file.text) {
        Ok(blocks) => blocks
            .into_iter()
            .filter(|b| b.kind == crate::jinja::blocks::BlockKind::Snapshot)
            .map(|b| {
                // Keep line numbers: pad the body to its position in the file.
                let padded = format!("{}{}", "\n".repeat(b.line - 1), &file.text[b.body_start..b.body_end]);
                // As dbt: a snapshot's fqn names its file too.
                let mut fqn = fqn(&b.name);
                fqn.insert(fqn.len() - 1, file.stem().to_string());
                new_node(project, i, rt, &b.name, fqn, Arc::from(padded.as_str()), b.line)
            })
            .collect(),
        Err((line, msg)) => {
            diags.push(
                Diagnostic::error(Code::JinjaSyntax, format!("Jinja syntax error in {}: {msg}", file.display_path)).with_label(Label::new(
                    file.source(),
                    line,
                    1,
                    2,
                    "opened here",
                )),
            );
            vec![]
        }
    }
}

/// dbt 1.9's snapshot defined in YAML (`relation: ref('orders')`): a snapshot node whose SQL
/// is `select * from {{ <relation> }}`, named in its properties file (as dbt does, its path is
/// `<file>/<name>.sql`).
fn yaml_snapshot(project: &Project, file_index: usize, p: &ResourcePatch) -> Option<Node> {
    let relation = p.relation.as_ref()?;
    let file = &project.files[file_index];
    let mut fqn = vec![project.packages[file.package].name.clone()];
    fqn.extend(file.folders().iter().map(|s| s.to_string()));
    fqn.push(p.name.clone());
    let raw = format!("{}select * from {{{{ {relation} }}}}", "\n".repeat(p.line.saturating_sub(1)));
    let mut node = new_node(project, file_index, ResourceType::Snapshot, &p.name, fqn, Arc::from(raw.as_str()), p.line);
    node.path = format!("{}/{}.sql", file.path, p.name);
    Some(node)
}

pub(crate) fn new_node(
    project: &Project,
    file_index: usize,
    rt: ResourceType,
    name: &str,
    fqn: Vec<String>,
    raw: Arc<str>,
    line: usize,
) -> Node {
    let file = &project.files[file_index];
    let package = project.packages[file.package].name.clone();
    let config = project_config(project, rt, file.package, &fqn);
    let (checksum_name, checksum) = file_hash(file, rt, if rt == ResourceType::Snapshot { &file.text } else { &raw });
    let unrendered_config = project_unrendered_config(project, rt, file.package, &fqn);
    Node {
        unique_id: format!("{}.{}.{}", rt.as_str(), package, name),
        resource_type: rt,
        package,
        name: name.to_string(),
        file: Some(file_index),
        line,
        original_file_path: file.original_path.clone(),
        path: file.path.clone(),
        patch_path: None,
        fqn,
        raw_code: raw,
        unrendered_config,
        config,
        description: String::new(),
        columns: IndexMap::new(),
        refs: vec![],
        sources: vec![],
        macros: vec![],
        database: String::new(),
        schema: String::new(),
        alias: String::new(),
        checksum,
        checksum_name,
        test_metadata: None,
        column_name: None,
        attached_node: None,
        extra: Json::Null,
    }
}

fn apply_patch(node: &mut Node, p: &ResourcePatch, project: &Project) {
    merge_all(Arc::make_mut(&mut node.config), &p.config);
    // dbt's unrendered config is updated key by key (a later level's `tags` replace earlier ones).
    node.unrendered_config.extend(p.config.iter().map(|(k, v)| (k.clone(), v.clone())));
    node.description = p.description.clone();
    node.columns = p.columns.iter().map(|c| (c.name.clone(), ColumnInfo::from(c))).collect();
    if !p.constraints.is_null() {
        node.extra = json!({"constraints": p.constraints});
    }
    let file = &project.files[p.file];
    node.patch_path = Some(format!("{}://{}", project.packages[file.package].name, file.original_path));
}

/// Renders a node's file with `execute = false` and records what it used.
/// Renders a node in the parse phase and records what it called (`ref`, `source`, `config`, macros).
fn render_parse(project: &Project, jinja: &JinjaEnv, node: &Node, diags: &mut Vec<Diagnostic>) -> crate::jinja::context::Record {
    let info = NodeInfo {
        unique_id: node.unique_id.clone(),
        package: node.package.clone(),
        name: node.name.clone(),
        resource_type: node.resource_type.as_str(),
        original_file_path: node.original_file_path.clone(),
        path: node.path.clone(),
    };
    let ctx = Arc::new(NodeCtx::new(Phase::Parse, info, node.config.clone(), jinja.shared.clone()));
    let file = node.file.map(|f| &project.files[f]);
    let display = file.map_or(node.original_file_path.clone(), |f| f.display_path.clone());
    let source = crate::jinja::literals::mutable_literals(&node.raw_code).into_owned();
    match jinja.render(&display, &source, ctx.clone()) {
        Ok(_) => {}
        Err(e) => {
            let src = file.map(|f| SourceText::new(f.display_path.clone(), node.raw_code.clone()));
            diags.push(to_diagnostic(
                &e,
                &|p| source_for(project, jinja, p).or_else(|| src.clone().filter(|s| s.path == p)),
                &format!("{} `{}`", node.resource_type.as_str(), node.name),
            ));
        }
    }
    ctx.take_record()
}

fn apply_record(node: &mut Node, record: crate::jinja::context::Record) {
    for (k, v) in &record.inline_config {
        merge_one(Arc::make_mut(&mut node.config), k, v.clone());
        node.unrendered_config.insert(k.clone(), v.clone());
    }
    node.refs = record.refs;
    node.sources = record.sources;
    node.macros = record.macros.into_iter().collect();
}

/// The text of a file by its display path (project files and macro templates).
pub fn source_for(project: &Project, jinja: &JinjaEnv, path: &str) -> Option<SourceText> {
    if let Some(f) = project.files.iter().find(|f| f.display_path == path) {
        return Some(f.source());
    }
    jinja
        .shared
        .macros
        .packages
        .values()
        .flat_map(|m| m.values())
        .find(|m| m.display_path == path)
        .map(|m| {
            SourceText::new(
                path.to_string(),
                if path.starts_with("<kiln>") { Arc::from(include_str!("../jinja/dbt_macros.sql")) } else { m.source.clone() },
            )
        })
        .map(|s| {
            // Macro sources are one block; the file's full text gives correct line numbers.
            project.files.iter().find(|f| f.display_path == s.path).map(|f| f.source()).unwrap_or(s)
        })
}

/// Resolves database/schema/alias of every node (dbt's `generate_*_name`).
fn resolve_relations(project: &Project, jinja: &JinjaEnv, nodes: &mut [Node], diags: &mut Vec<Diagnostic>) {
    let root = project.name();
    let overridden = |name: &str| jinja.shared.macros.get(root, name).is_some();
    let (custom_schema, custom_alias, custom_db) =
        (overridden("generate_schema_name"), overridden("generate_alias_name"), overridden("generate_database_name"));
    let target = &jinja.shared.target;
    let results: Vec<Result<(String, String, String), Diagnostic>> = nodes
        .par_iter()
        .map(|node| {
            let cfg_str =
                |k: &str| node.config.get(k).and_then(|v| v.as_str().map(str::to_string).or_else(|| (!v.is_null()).then(|| v.to_string())));
            let mut custom = cfg_str("schema");
            if node.resource_type == ResourceType::Test && custom.is_none() {
                custom = Some("dbt_test__audit".to_string());
            }
            let call = |macro_name: &str, arg: Option<String>| -> Result<String, Diagnostic> {
                let info = NodeInfo {
                    unique_id: node.unique_id.clone(),
                    package: root.to_string(),
                    name: node.name.clone(),
                    resource_type: node.resource_type.as_str(),
                    original_file_path: node.original_file_path.clone(),
                    path: node.path.clone(),
                };
                let n = node.clone();
                let ctx = NodeCtx::new(Phase::Parse, info, node.config.clone(), jinja.shared.clone())
                    .with_model(Arc::new(move || n.context_value()));
                let arg = arg.map_or(minijinja::Value::from(()), minijinja::Value::from);
                jinja
                    .call_macro(macro_name, vec![arg, minijinja::Value::from_dyn_object(Arc::new(NodeRef(node.context_value())))], ctx)
                    .map(|v| v.to_string().trim().to_string())
                    .map_err(|e| to_diagnostic(&e, &|p| source_for(project, jinja, p), &format!("{macro_name} for `{}`", node.name)))
            };
            let snapshot_schema = (node.resource_type == ResourceType::Snapshot).then(|| cfg_str("target_schema")).flatten();
            let schema = match snapshot_schema {
                Some(s) => s,
                None if custom_schema => call("generate_schema_name", custom)?,
                None => match custom {
                    None => target.schema.clone(),
                    Some(c) => format!("{}_{}", target.schema, c.trim()),
                },
            };
            // Tests are named by their file (`<short name>.sql`, hashed when long).
            let default_alias = match node.resource_type {
                ResourceType::Test => node.path.rsplit('/').next().and_then(|f| f.strip_suffix(".sql")).unwrap_or(&node.name).to_string(),
                _ => node.name.clone(),
            };
            let alias = if custom_alias {
                call("generate_alias_name", cfg_str("alias"))?
            } else {
                cfg_str("alias").map(|a| a.trim().to_string()).unwrap_or(default_alias)
            };
            let snapshot_db = (node.resource_type == ResourceType::Snapshot).then(|| cfg_str("target_database")).flatten();
            let database = match snapshot_db {
                Some(d) => d,
                None if custom_db => call("generate_database_name", cfg_str("database"))?,
                None => cfg_str("database").unwrap_or_else(|| target.database.clone()),
            };
            Ok((database, schema, alias))
        })
        .collect();
    for (node, r) in nodes.iter_mut().zip(results) {
        match r {
            Ok((d, s, a)) => {
                node.database = d;
                node.schema = s;
                node.alias = a;
            }
            Err(d) => diags.push(d),
        }
    }
}

/// The `node` argument of `generate_*_name` macros.
#[derive(Debug)]
struct NodeRef(minijinja::Value);

impl minijinja::value::Object for NodeRef {
    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        self.0.get_item(key).ok().filter(|v| !v.is_undefined())
    }
    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Values(self.0.try_iter().map(|i| i.collect()).unwrap_or_default())
    }
}

fn build_exposures(project: &Project, jinja: &JinjaEnv, props: &Properties, manifest: &mut Manifest, diags: &mut Vec<Diagnostic>) {
    for e in &props.exposures {
        let file = &project.files[e.file];
        let package = project.packages[file.package].name.clone();
        let info = NodeInfo {
            unique_id: format!("exposure.{package}.{}", e.name),
            package: package.clone(),
            name: e.name.clone(),
            resource_type: "exposure",
            ..Default::default()
        };
        let ctx = Arc::new(NodeCtx::new(Phase::Parse, info, Default::default(), jinja.shared.clone()));
        for dep in e.node.get("depends_on").and_then(|d| d.as_seq()).unwrap_or(&[]) {
            let Some(expr) = dep.as_str() else { continue };
            let result = jinja.env.compile_expression(expr).and_then(|x| x.eval(minijinja::Value::from_dyn_object(ctx.clone())));
            if let Err(err) = result {
                let mut d = to_diagnostic(&err, &|_| None, &format!("exposure `{}`", e.name));
                d.labels.clear();
                diags.push(d.with_label(Label::new(file.source(), dep.line, dep.col, expr.len(), "in this dependency")));
            }
        }
        let record = ctx.take_record();
        let mut fqn = vec![package.clone()];
        fqn.extend(file.folders().iter().map(|s| s.to_string()));
        fqn.push(e.name.clone());
        let mut node = new_node(project, e.file, ResourceType::Exposure, &e.name, fqn, Arc::from(""), e.line);
        node.config = Arc::new(ConfigMap::from_iter([("enabled".to_string(), json!(true))]));
        node.refs = record.refs;
        node.sources = record.sources;
        node.description = e.node.get("description").and_then(|d| d.scalar_string()).unwrap_or_default();
        node.extra = e.node.to_json();
        manifest.exposures.insert(node.unique_id.clone(), node);
    }
}

fn build_unit_tests(project: &Project, props: &Properties, manifest: &mut Manifest, diags: &mut Vec<Diagnostic>) {
    for u in &props.unit_tests {
        let file = &project.files[u.file];
        let package = project.packages[file.package].name.clone();
        let Some(model) = u.node.get("model").and_then(|m| m.scalar_string()) else {
            diags.push(Diagnostic::error(Code::MissingKey, format!("unit test `{}` has no `model`", u.name)).with_label(Label::new(
                file.source(),
                u.line,
                1,
                1,
                "add `model: <model_name>`",
            )));
            continue;
        };
        let target = manifest.nodes.values().find(|n| n.resource_type == ResourceType::Model && n.name == model);
        let Some(target) = target else {
            let m = u.node.get("model").unwrap_or(&u.node);
            let names: Vec<&str> =
                manifest.nodes.values().filter(|n| n.resource_type == ResourceType::Model).map(|n| n.name.as_str()).collect();
            diags.push(
                Diagnostic::error(Code::UnitTestTarget, format!("unit test `{}` tests model `{model}`, which does not exist", u.name))
                    .with_label(Label::new(file.source(), m.line, m.col, model.len(), "no such model"))
                    .with_help_opt(crate::diagnostics::did_you_mean(&model, names)),
            );
            continue;
        };
        let mut fqn = vec![package.clone()];
        fqn.extend(file.folders().iter().map(|s| s.to_string()));
        fqn.push(model.clone());
        fqn.push(u.name.clone());
        let mut node = new_node(project, u.file, ResourceType::UnitTest, &u.name, fqn, Arc::from(""), u.line);
        node.unique_id = format!("unit_test.{package}.{model}.{}", u.name);
        let mut config =
            ConfigMap::from_iter([("enabled".to_string(), json!(true)), ("tags".to_string(), json!([])), ("meta".to_string(), json!({}))]);
        if let Some(c) = u.node.get("config") {
            for (k, _, v) in c.entries() {
                merge_one(&mut config, k, v.to_json());
            }
        }
        node.config = Arc::new(config);
        node.attached_node = Some(target.unique_id.clone());
        node.refs = vec![RefCall { package: None, name: model.clone(), version: None }];
        node.description = u.node.get("description").and_then(|d| d.scalar_string()).unwrap_or_default();
        node.extra = u.node.to_json();
        if node.enabled() {
            manifest.unit_tests.insert(node.unique_id.clone(), node);
        }
    }
}

/// A node for `--inline` SQL.
pub fn new_node_inline(project: &Project, sql: &str) -> Node {
    Node {
        unique_id: format!("sql_operation.{}.inline_query", project.name()),
        resource_type: ResourceType::Analysis,
        package: project.name().to_string(),
        name: "inline_query".into(),
        file: None,
        line: 1,
        original_file_path: "<inline>".into(),
        path: "inline_query.sql".into(),
        patch_path: None,
        fqn: vec![project.name().to_string(), "inline_query".into()],
        raw_code: Arc::from(sql),
        config: Arc::new(defaults(ResourceType::Analysis)),
        unrendered_config: ConfigMap::new(),
        description: String::new(),
        columns: IndexMap::new(),
        refs: vec![],
        sources: vec![],
        macros: vec![],
        database: String::new(),
        schema: String::new(),
        alias: String::new(),
        checksum: checksum(sql.trim()),
        checksum_name: "sha256",
        test_metadata: None,
        column_name: None,
        attached_node: None,
        extra: Json::Null,
    }
}

/// Checks every enabled node's config once, through its typed form: a value of the wrong shape
/// is an error (E113). A materialization or incremental strategy that neither kiln nor a macro
/// of the project builds on the target is a warning (E116, E117): that node alone fails when it
/// runs, as in dbt. A config the target does not honour is one warning per config (E118).
fn check_configs(project: &Project, jinja: &JinjaEnv, nodes: &[Node], diags: &mut Vec<Diagnostic>) {
    let adapter = jinja.shared.target.adapter;
    let mut unhonoured: BTreeMap<&str, Vec<&Node>> = BTreeMap::new();
    for node in nodes.iter().filter(|n| n.enabled()) {
        let label = |key: &str| -> Option<Label> {
            let file = &project.files[node.file?];
            let at = |text: &str| node.raw_code.find(text).map(|o| crate::diagnostics::line_col(&node.raw_code, o));
            // The line of the key, or (a key that is missing) of the `config(` call.
            let (pos, len, text) = match (at(key), at("config(")) {
                (Some(pos), _) => (pos, key.len(), "set here or in dbt_project.yml / properties YAML"),
                (None, Some(pos)) => (pos, "config".len(), "add it here or in dbt_project.yml / properties YAML"),
                (None, None) => ((node.line, 1), 1, "add it in a config() call or in dbt_project.yml / properties YAML"),
            };
            // A snapshot's raw code is its block, padded to keep lines: show the file's text.
            let source = SourceText::new(file.display_path.clone(), file.text.clone());
            Some(Label::new(source, pos.0, pos.1, len, text))
        };
        let labelled = |d: Diagnostic, key: &str| match label(key) {
            Some(l) => d.with_label(l),
            None => d.with_file(node.original_file_path.clone()),
        };
        let what = format!("{} `{}`", node.resource_type.as_str(), node.name);
        let (config, errors) = NodeConfig::from_map(&node.config);
        for e in errors {
            diags.push(labelled(Diagnostic::error(Code::InvalidConfig, format!("{what}: {}", e.message)).with_help(e.help), e.key));
        }
        for key in crate::adapter::WAREHOUSE_CONFIGS {
            if !adapter.honours.contains(key) && node.config.get(*key).is_some_and(is_set) {
                unhonoured.entry(key).or_default().push(node);
            }
        }
        if node.resource_type != ResourceType::Model {
            continue;
        }
        if let Some(d) = unbuildable_materialization(jinja, &config.materialized, &what) {
            diags.push(labelled(d, "materialized"));
        }
        if let Some(d) = unbuildable_strategy(jinja, &config, &what) {
            diags.push(labelled(d, "incremental_strategy"));
        }
    }
    for (key, nodes) in unhonoured {
        let mut names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let count = names.len();
        names.truncate(5);
        let more = if count > 5 { format!(" and {} more", count - 5) } else { String::new() };
        let honouring = crate::adapter::Adapter::honouring(key);
        let help = if honouring.is_empty() {
            "no target applies it in this version of kiln; it is kept in the manifest".to_string()
        } else {
            format!("targets of type {} apply it; it is kept in the manifest", honouring.join(", "))
        };
        diags.push(
            Diagnostic::warning(
                Code::ConfigNotHonoured,
                format!(
                    "`{key}` is set on {count} node(s) ({}{more}), and the {} target does not apply it",
                    names.join(", "),
                    adapter.name
                ),
            )
            .with_file(nodes[0].original_file_path.clone())
            .with_help(help),
        );
    }
}

/// A warning when the model's materialization is one kiln cannot build on the target.
fn unbuildable_materialization(jinja: &JinjaEnv, m: &Materialized, what: &str) -> Option<Diagnostic> {
    let adapter = jinja.shared.target.adapter;
    if adapter.supports_materialization(m.as_str()) {
        return None;
    }
    let fails = "it fails when it runs; the rest of the project builds";
    let d = match m {
        Materialized::Custom(name) if jinja.shared.macros.materializations.contains(name) => Diagnostic::warning(
            Code::UnknownMaterialization,
            format!("{what} uses the project's materialization `{name}`, which kiln does not run yet: {fails}"),
        )
        .with_help("use a built-in materialization for it (table, view, incremental) until kiln runs custom ones"),
        Materialized::Custom(name) => Diagnostic::warning(
            Code::UnknownMaterialization,
            format!("{what} has materialized `{name}`, which kiln does not know and no macro defines: {fails}"),
        )
        .with_help(choices(name, adapter.materializations)),
        known => Diagnostic::warning(
            Code::UnknownMaterialization,
            format!("{what} is materialized as `{}`, which kiln does not build on the {} target: {fails}", known.as_str(), adapter.name),
        )
        .with_help(choices(known.as_str(), adapter.materializations)),
    };
    Some(d)
}

/// A warning when an incremental model's strategy is neither the target's nor a macro's.
fn unbuildable_strategy(jinja: &JinjaEnv, config: &NodeConfig, what: &str) -> Option<Diagnostic> {
    let adapter = jinja.shared.target.adapter;
    let strategy = config.incremental_strategy.as_ref().filter(|_| config.materialized == Materialized::Incremental)?;
    let name = strategy.as_str();
    if adapter.supports_strategy(name) || jinja.has_macro(&Strategy::macro_name(name)) {
        return None;
    }
    Some(
        Diagnostic::warning(
            Code::UnknownStrategy,
            format!(
                "{what} has incremental_strategy `{name}`, which the {} target does not have and no macro defines: building it incrementally fails (a first build or --full-refresh works)",
                adapter.name
            ),
        )
        .with_help(Strategy::help(name, adapter.incremental_strategies)),
    )
}

/// Whether a config value asks for something: not null, false or empty.
fn is_set(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => o.values().any(is_set),
        Json::Number(_) => true,
    }
}
