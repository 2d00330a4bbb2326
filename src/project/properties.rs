//! Properties YAML (`version: 2` files): model/seed/snapshot patches, sources, macros, exposures,
//! unit tests. Kept close to the YAML, with positions, so later stages can point at a line.

use super::config::{ConfigMap, merge_one};
use super::render::Render;
use super::yaml::{self, YNode, YValue};
use super::{ProjectFile, yaml_error};
use crate::diagnostics::{Code, Diagnostic, Label, SourceText, did_you_mean};
use serde_json::Value as Json;

/// A data test as written in YAML: `- unique`, `- relationships: {to: ..., field: ...}`, or with
/// `name:`/`test_name:`; interpreted by the parse stage.
#[derive(Clone, Debug)]
pub struct TestSpec {
    pub node: YNode,
    pub file: usize,
}

#[derive(Clone, Debug, Default)]
pub struct ColumnDef {
    pub name: String,
    pub description: String,
    pub data_type: Option<String>,
    pub constraints: Json,
    pub meta: Json,
    pub tags: Vec<String>,
    pub quote: Option<bool>,
    pub tests: Vec<TestSpec>,
    pub line: usize,
}

/// `models:`/`seeds:`/`snapshots:`/`analyses:` entry.
#[derive(Clone, Debug)]
pub struct ResourcePatch {
    pub section: &'static str,
    pub name: String,
    pub file: usize,
    pub line: usize,
    pub col: usize,
    pub description: String,
    pub config: ConfigMap,
    pub columns: Vec<ColumnDef>,
    pub tests: Vec<TestSpec>,
    pub meta: Json,
    pub docs: Json,
    pub latest_version: Option<Json>,
    pub versions: Vec<YNode>,
    /// Model-level `constraints:` (contracts).
    pub constraints: Json,
    /// A snapshot defined in YAML (dbt 1.9): what it snapshots, `ref(...)` or `source(...)`.
    pub relation: Option<String>,
}

#[derive(Clone, Debug)]
pub struct SourceTableDef {
    pub name: String,
    pub line: usize,
    pub identifier: Option<String>,
    pub description: String,
    pub columns: Vec<ColumnDef>,
    pub tests: Vec<TestSpec>,
    pub meta: Json,
    pub tags: Vec<String>,
    pub config: ConfigMap,
    pub quoting: Json,
    pub loaded_at: LoadedAt,
    pub freshness: Json,
    pub external: Json,
}

#[derive(Clone, Debug)]
pub struct SourceDef {
    pub name: String,
    pub file: usize,
    pub line: usize,
    pub description: String,
    pub database: Option<String>,
    pub schema: Option<String>,
    pub loader: String,
    pub meta: Json,
    pub tags: Vec<String>,
    pub config: ConfigMap,
    pub quoting: Json,
    pub loaded_at: LoadedAt,
    pub freshness: Json,
    pub tables: Vec<SourceTableDef>,
}

/// How a source (or one of its tables) says when it was loaded: `loaded_at_field` or
/// `loaded_at_query`, top-level or under `config:` (dbt 1.10).
#[derive(Clone, Debug, Default)]
pub struct LoadedAt {
    pub field: Option<String>,
    /// `loaded_at_field:` is written, even as null: the table opts out of the source's query.
    pub field_present: bool,
    pub query: Option<String>,
    pub line: usize,
}

impl LoadedAt {
    fn read(entry: &YNode, config: &ConfigMap) -> LoadedAt {
        let get = |key: &str| {
            entry.get(key).and_then(YNode::scalar_string).or_else(|| config.get(key).and_then(|v| v.as_str()).map(str::to_string))
        };
        LoadedAt {
            field: get("loaded_at_field"),
            field_present: entry.get("loaded_at_field").is_some() || config.contains_key("loaded_at_field"),
            query: get("loaded_at_query"),
            line: entry.key_node("loaded_at_query").or_else(|| entry.key_node("loaded_at_field")).map_or(entry.line, |k| k.line),
        }
    }
}

#[derive(Clone, Debug)]
pub struct NamedEntry {
    pub name: String,
    pub file: usize,
    pub line: usize,
    pub node: YNode,
}

#[derive(Clone, Debug, Default)]
pub struct Properties {
    pub patches: Vec<ResourcePatch>,
    pub sources: Vec<SourceDef>,
    pub macros: Vec<NamedEntry>,
    pub exposures: Vec<NamedEntry>,
    pub unit_tests: Vec<NamedEntry>,
}

impl Properties {
    /// Appends `other` (a later file's entries) after this one's.
    pub fn append(&mut self, mut other: Properties) {
        self.patches.append(&mut other.patches);
        self.sources.append(&mut other.sources);
        self.macros.append(&mut other.macros);
        self.exposures.append(&mut other.exposures);
        self.unit_tests.append(&mut other.unit_tests);
    }
}

const TOP_KEYS: &[&str] = &[
    "version",
    "models",
    "sources",
    "seeds",
    "snapshots",
    "macros",
    "exposures",
    "analyses",
    "unit_tests",
    "metrics",
    "semantic_models",
    "saved_queries",
    "groups",
    "data_tests",
    "functions",
];
/// A snapshot's keys: a model's, and `relation` (dbt 1.9's snapshots defined in YAML).
const SNAPSHOT_KEYS: &[&str] = &["name", "description", "config", "columns", "tests", "data_tests", "docs", "meta", "tags", "relation"];

const MODEL_KEYS: &[&str] = &[
    "name",
    "description",
    "config",
    "columns",
    "tests",
    "data_tests",
    "docs",
    "meta",
    "tags",
    "versions",
    "latest_version",
    "access",
    "group",
    "constraints",
    "deprecation_date",
    "time_spine",
    "columns",
    "freshness",
];
const COLUMN_KEYS: &[&str] = &[
    "name",
    "description",
    "data_type",
    "constraints",
    "tests",
    "data_tests",
    "meta",
    "tags",
    "quote",
    "policy_tags",
    "granularity",
    "config",
    "docs",
];
const SOURCE_KEYS: &[&str] = &[
    "name",
    "description",
    "database",
    "schema",
    "loader",
    "loaded_at_field",
    "loaded_at_query",
    "meta",
    "tags",
    "config",
    "overrides",
    "freshness",
    "quoting",
    "tables",
    "catalog",
];
const TABLE_KEYS: &[&str] = &[
    "name",
    "identifier",
    "description",
    "columns",
    "tests",
    "data_tests",
    "meta",
    "tags",
    "config",
    "loaded_at_field",
    "loaded_at_query",
    "freshness",
    "quoting",
    "external",
    "docs",
];

struct Ctx<'a> {
    file: usize,
    source: SourceText,
    diags: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn check_keys(&mut self, node: &YNode, allowed: &[&str], what: &str) {
        for (key, key_node, _) in node.entries() {
            if !allowed.contains(&key) {
                self.diags.push(
                    Diagnostic::error(Code::UnknownKey, format!("unknown key `{key}` in {what}"))
                        .with_label(Label::new(
                            self.source.clone(),
                            key_node.line,
                            key_node.col,
                            key.chars().count(),
                            "not a known property",
                        ))
                        .with_help(
                            did_you_mean(key, allowed.iter().copied()).unwrap_or_else(|| format!("known keys: {}", allowed.join(", "))),
                        ),
                );
            }
        }
    }

    fn invalid(&mut self, node: &YNode, message: impl Into<String>, label: impl Into<String>) {
        self.diags.push(Diagnostic::error(Code::InvalidValue, message).with_label(Label::new(
            self.source.clone(),
            node.line,
            node.col,
            1,
            label,
        )));
    }

    fn list<'n>(&mut self, node: Option<&'n YNode>, what: &str) -> &'n [YNode] {
        match node {
            None => &[],
            Some(n) if n.is_null() => &[],
            Some(n) => match n.as_seq() {
                Some(s) => s,
                None => {
                    self.invalid(n, format!("`{what}` must be a list"), format!("found {}", n.kind()));
                    &[]
                }
            },
        }
    }

    fn name(&mut self, entry: &YNode, what: &str) -> Option<String> {
        if entry.as_map().is_none() {
            self.invalid(entry, format!("each entry of `{what}` must be a mapping with a `name`"), format!("found {}", entry.kind()));
            return None;
        }
        let name = entry.get("name").and_then(YNode::scalar_string);
        if name.is_none() {
            self.diags.push(Diagnostic::error(Code::MissingKey, format!("an entry of `{what}` has no `name`")).with_label(Label::new(
                self.source.clone(),
                entry.line,
                entry.col,
                1,
                "`name:` missing",
            )));
        }
        name
    }

    fn config(&mut self, node: Option<&YNode>) -> ConfigMap {
        let mut map = ConfigMap::new();
        if let Some(node) = node {
            match &node.value {
                YValue::Map(_) => {
                    for (k, _, v) in node.entries() {
                        merge_one(&mut map, k, v.to_json());
                    }
                }
                YValue::Null => {}
                _ => self.invalid(node, "`config` must be a mapping", format!("found {}", node.kind())),
            }
        }
        map
    }

    fn tests(&mut self, node: &YNode) -> Vec<TestSpec> {
        let mut out = Vec::new();
        for key in ["data_tests", "tests"] {
            for t in self.list(node.get(key), key).to_vec() {
                out.push(TestSpec { node: t, file: self.file });
            }
        }
        out
    }

    fn columns(&mut self, node: &YNode) -> Vec<ColumnDef> {
        let mut out = Vec::new();
        for c in self.list(node.get("columns"), "columns").to_vec() {
            let Some(name) = self.name(&c, "columns") else {
                continue;
            };
            self.check_keys(&c, COLUMN_KEYS, &format!("column `{name}`"));
            let tests = self.tests(&c);
            let mut tags = strings(c.get("tags"));
            if let Some(cfg) = c.get("config") {
                tags.extend(strings(cfg.get("tags")));
            }
            out.push(ColumnDef {
                name,
                description: text(c.get("description")),
                data_type: c.get("data_type").and_then(YNode::scalar_string),
                constraints: c.get("constraints").map_or(Json::Array(vec![]), YNode::to_json),
                meta: c
                    .get("meta")
                    .or_else(|| c.get("config").and_then(|x| x.get("meta")))
                    .map_or(Json::Object(Default::default()), YNode::to_json),
                tags,
                quote: c.get("quote").and_then(YNode::as_bool),
                tests,
                line: c.line,
            });
        }
        out
    }
}

fn text(node: Option<&YNode>) -> String {
    node.and_then(YNode::scalar_string).unwrap_or_default()
}

fn strings(node: Option<&YNode>) -> Vec<String> {
    match node {
        Some(n) => match n.as_seq() {
            Some(items) => items.iter().filter_map(YNode::scalar_string).collect(),
            None => n.scalar_string().into_iter().collect(),
        },
        None => vec![],
    }
}

/// Parses one properties file into `out`.
/// Reads one properties file into `out`; `render` renders the Jinja in its values first (see
/// [`super::render`]).
pub fn parse_file(file_index: usize, file: &ProjectFile, render: Option<Render>, out: &mut Properties, diags: &mut Vec<Diagnostic>) {
    let source = file.source();
    let mut doc = match yaml::parse(&file.text) {
        Ok(d) => d,
        Err(e) => {
            diags.push(yaml_error(&source, &e));
            return;
        }
    };
    if doc.is_null() {
        return;
    }
    if let Some(render) = render {
        let mut errors = vec![];
        super::render::render_properties(&mut doc, render, &mut errors);
        for e in errors {
            diags.push(
                Diagnostic::error(Code::JinjaRender, format!("cannot render `{}`: {}", e.path, e.message))
                    .with_label(Label::new(source.clone(), e.line, e.col, 1, "this value"))
                    .with_help("dbt renders properties values with `target`, `var()` and `env_var()` when it loads the project"),
            );
        }
    }
    let mut cx = Ctx { file: file_index, source: source.clone(), diags };
    if doc.as_map().is_none() {
        cx.invalid(&doc, format!("{} must be a mapping of `models:`, `sources:`, ...", file.display_path), format!("found {}", doc.kind()));
        return;
    }
    cx.check_keys(&doc, TOP_KEYS, "a properties file");
    if let Some(v) = doc.get("version")
        && !matches!(v.value, YValue::Int(2))
        && v.as_str() != Some("2")
    {
        cx.diags.push(
            Diagnostic::error(
                Code::PropertiesVersion,
                format!("properties file has `version: {}`; only version 2 exists", v.scalar_string().unwrap_or_default()),
            )
            .with_label(Label::new(source.clone(), v.line, v.col, 1, "expected `2`"))
            .with_help("write `version: 2` (or remove the line)"),
        );
        return;
    }
    for section in ["models", "seeds", "snapshots", "analyses"] {
        let section: &'static str = section;
        for entry in cx.list(doc.get(section), section).to_vec() {
            let Some(name) = cx.name(&entry, section) else {
                continue;
            };
            let allowed: &[&str] = if section == "snapshots" { SNAPSHOT_KEYS } else { MODEL_KEYS };
            cx.check_keys(&entry, allowed, &format!("{} `{name}`", &section[..section.len() - 1]));
            let relation = if section == "snapshots" { entry.get("relation").and_then(YNode::scalar_string) } else { None };
            let mut config = cx.config(entry.get("config"));
            for k in ["tags", "meta", "docs", "access", "group"] {
                if let Some(v) = entry.get(k) {
                    let mut top = ConfigMap::new();
                    merge_one(&mut top, k, v.to_json());
                    for (kk, vv) in top {
                        if !config.contains_key(&kk) || k == "tags" || k == "meta" {
                            merge_one(&mut config, &kk, vv);
                        }
                    }
                }
            }
            let columns = cx.columns(&entry);
            let tests = cx.tests(&entry);
            out.patches.push(ResourcePatch {
                section,
                name,
                file: file_index,
                line: entry.line,
                col: entry.col,
                description: text(entry.get("description")),
                config,
                columns,
                tests,
                meta: entry.get("meta").map_or(Json::Object(Default::default()), YNode::to_json),
                docs: entry.get("docs").map_or(Json::Null, YNode::to_json),
                latest_version: entry.get("latest_version").map(YNode::to_json),
                versions: cx.list(entry.get("versions"), "versions").to_vec(),
                constraints: entry.get("constraints").map_or(Json::Null, YNode::to_json),
                relation,
            });
        }
    }
    for entry in cx.list(doc.get("sources"), "sources").to_vec() {
        let Some(name) = cx.name(&entry, "sources") else {
            continue;
        };
        cx.check_keys(&entry, SOURCE_KEYS, &format!("source `{name}`"));
        let config = cx.config(entry.get("config"));
        let loaded_at = LoadedAt::read(&entry, &config);
        let mut tables = Vec::new();
        for t in cx.list(entry.get("tables"), "tables").to_vec() {
            let Some(tname) = cx.name(&t, "tables") else {
                continue;
            };
            cx.check_keys(&t, TABLE_KEYS, &format!("source table `{name}.{tname}`"));
            let tconfig = cx.config(t.get("config"));
            let loaded_at = LoadedAt::read(&t, &tconfig);
            tables.push(SourceTableDef {
                identifier: t.get("identifier").and_then(YNode::scalar_string),
                description: text(t.get("description")),
                columns: cx.columns(&t),
                tests: cx.tests(&t),
                meta: t.get("meta").map_or(Json::Object(Default::default()), YNode::to_json),
                tags: strings(t.get("tags")),
                config: tconfig,
                quoting: t.get("quoting").map_or(Json::Null, YNode::to_json),
                loaded_at,
                freshness: t.get("freshness").map_or(Json::Null, YNode::to_json),
                external: t.get("external").map_or(Json::Null, YNode::to_json),
                name: tname,
                line: t.line,
            });
        }
        out.sources.push(SourceDef {
            file: file_index,
            line: entry.line,
            description: text(entry.get("description")),
            database: entry.get("database").and_then(YNode::scalar_string),
            schema: entry.get("schema").and_then(YNode::scalar_string),
            loader: text(entry.get("loader")),
            meta: entry.get("meta").map_or(Json::Object(Default::default()), YNode::to_json),
            tags: strings(entry.get("tags")),
            config,
            quoting: entry.get("quoting").map_or(Json::Null, YNode::to_json),
            loaded_at,
            freshness: entry.get("freshness").map_or(Json::Null, YNode::to_json),
            tables,
            name,
        });
    }
    for (section, target) in [("macros", 0), ("exposures", 1), ("unit_tests", 2)] {
        for entry in cx.list(doc.get(section), section).to_vec() {
            let Some(name) = cx.name(&entry, section) else {
                continue;
            };
            let e = NamedEntry { name, file: file_index, line: entry.line, node: entry };
            match target {
                0 => out.macros.push(e),
                1 => out.exposures.push(e),
                _ => out.unit_tests.push(e),
            }
        }
    }
}
