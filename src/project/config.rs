//! Node configs: dbt's hierarchical `models:`/`seeds:`/... trees in `dbt_project.yml`, and the
//! merge rules that combine them with properties YAML and in-file `config()` calls.
//!
//! Precedence (lowest first): package's own `dbt_project.yml`, the root project's tree for that
//! package, properties YAML `config:`, `config()` in the file. `tags` and hooks accumulate, `meta`,
//! `docs`, `grants` and `persist_docs` merge key by key, everything else overrides.

use super::yaml::{YNode, YValue};
use crate::diagnostics::{Code, Diagnostic, Label, SourceText, closest};
use indexmap::IndexMap;
use serde_json::Value as Json;

pub type ConfigMap = IndexMap<String, Json>;

/// Config keys dbt (and its common adapters) understand. Anything else given with `+` is kept
/// as a custom config (dbt allows those) but a near-miss of a known key is flagged.
pub const KNOWN_CONFIGS: &[&str] = &[
    "enabled",
    "tags",
    "pre-hook",
    "post-hook",
    "database",
    "schema",
    "alias",
    "materialized",
    "incremental_strategy",
    "unique_key",
    "on_schema_change",
    "on_configuration_change",
    "sql_header",
    "persist_docs",
    "full_refresh",
    "meta",
    "docs",
    "contract",
    "grants",
    "quoting",
    "column_types",
    "quote_columns",
    "delimiter",
    "strategy",
    "updated_at",
    "check_cols",
    "target_schema",
    "target_database",
    "snapshot_meta_column_names",
    "hard_deletes",
    "invalidate_hard_deletes",
    "dbt_valid_to_current",
    "severity",
    "error_if",
    "warn_if",
    "where",
    "limit",
    "fail_calc",
    "store_failures",
    "store_failures_as",
    "access",
    "group",
    "event_time",
    "batch_size",
    "lookback",
    "begin",
    "concurrent_batches",
    "partition_by",
    "cluster_by",
    "location",
    "format",
    "options",
    "packages",
    "indexes",
    "unlogged",
    "labels",
    "kms_key_name",
    "hours_to_expiration",
    "require_partition_filter",
    "partition_expiration_days",
    "external_location",
    "plugin",
    "incremental_predicates",
    "merge_update_columns",
    "merge_exclude_columns",
    "predicates",
    "freshness",
    "loaded_at_field",
    "loaded_at_query",
    "identifier",
    "copy_grants",
    "transient",
    "file_format",
    "partitions",
    "write_format",
    "glue_register",
    "submission_method",
    "python_version",
    "unique_id",
    "meta_columns",
    "version",
    "deprecation_date",
    "latest_version",
    "description",
    "catalog",
    "table_format",
    "dbt_valid_to",
    "snapshot_name",
    "loaded_at_query",
    "static_analysis",
];

/// Keys whose values accumulate instead of overriding.
fn merge_behavior(key: &str) -> Merge {
    match key {
        "tags" | "pre-hook" | "post-hook" => Merge::Append,
        "meta" | "docs" | "grants" | "persist_docs" | "contract" | "quoting" | "column_types" => Merge::Update,
        _ => Merge::Replace,
    }
}

enum Merge {
    Append,
    Update,
    Replace,
}

/// `pre_hook` and `pre-hook` mean the same thing; dbt's manifest spells them with a dash.
pub fn normalize_key(key: &str) -> &str {
    match key {
        "pre_hook" => "pre-hook",
        "post_hook" => "post-hook",
        "materialization" => "materialized",
        other => other,
    }
}

/// Normalizes a value on the way in: `tags: x` becomes a list, hooks become lists of strings.
fn normalize_value(key: &str, value: Json) -> Json {
    match key {
        "tags" | "pre-hook" | "post-hook" => match value {
            Json::Array(_) => value,
            Json::Null => Json::Array(vec![]),
            other => Json::Array(vec![other]),
        },
        _ => value,
    }
}

/// Merges one config value into `into` by dbt's rules.
pub fn merge_one(into: &mut ConfigMap, key: &str, value: Json) {
    let key = normalize_key(key);
    let value = normalize_value(key, value);
    match (merge_behavior(key), into.get_mut(key)) {
        (Merge::Append, Some(Json::Array(existing))) => {
            if let Json::Array(new) = value {
                for item in new {
                    if key != "tags" || !existing.contains(&item) {
                        existing.push(item);
                    }
                }
            }
        }
        (Merge::Update, Some(Json::Object(existing))) => {
            if let Json::Object(new) = value {
                for (k, v) in new {
                    existing.insert(k, v);
                }
            } else {
                *existing = serde_json::Map::new();
                into.insert(key.to_string(), value);
            }
        }
        _ => {
            into.insert(key.to_string(), value);
        }
    }
}

pub fn merge_all(into: &mut ConfigMap, from: &ConfigMap) {
    for (k, v) in from {
        merge_one(into, k, v.clone());
    }
}

/// One level of a `models:` (or `seeds:`, ...) tree: its `+configs` and its sub-folders.
#[derive(Clone, Debug, Default)]
pub struct ConfigTree {
    pub configs: ConfigMap,
    pub children: IndexMap<String, ConfigTree>,
}

impl ConfigTree {
    /// Builds a tree, reporting keys that are neither a config nor a folder.
    pub fn from_yaml(node: &YNode, source: &SourceText, section: &str, diags: &mut Vec<Diagnostic>) -> ConfigTree {
        let mut tree = ConfigTree::default();
        for (key, key_node, value) in node.entries() {
            if let Some(config) = key.strip_prefix('+') {
                let config = normalize_key(config);
                if !KNOWN_CONFIGS.contains(&config)
                    && let Some(help) = plus_hint(config)
                {
                    diags.push(
                        Diagnostic::warning(Code::UnknownKey, format!("unknown config `+{config}` in `{section}`"))
                            .with_label(Label::new(source.clone(), key_node.line, key_node.col, key.len(), "kept as a custom config"))
                            .with_help(help),
                    );
                }
                merge_one(&mut tree.configs, config, value.to_json());
            } else if KNOWN_CONFIGS.contains(&normalize_key(key)) && !matches!(value.value, YValue::Map(_))
                || matches!(key, "meta" | "docs" | "persist_docs" | "contract" | "grants" | "column_types" | "quoting")
                    && matches!(value.value, YValue::Map(_))
                    && value.entries().all(|(k, _, _)| !k.starts_with('+'))
            {
                merge_one(&mut tree.configs, key, value.to_json());
            } else if matches!(value.value, YValue::Map(_)) || value.is_null() {
                let child = ConfigTree::from_yaml(value, source, section, diags);
                tree.children.insert(key.to_string(), child);
            } else {
                let hint = plus_hint(normalize_key(key))
                    .unwrap_or_else(|| format!("configs start with `+` (e.g. `+{key}:`); folders hold a mapping"));
                diags.push(
                    Diagnostic::error(Code::UnknownKey, format!("`{key}` in `{section}` is neither a known config nor a folder"))
                        .with_label(Label::new(source.clone(), key_node.line, key_node.col, key.len(), "unknown config"))
                        .with_help(hint),
                );
            }
        }
        tree
    }

    /// Whether the tree has a node for the whole of `path` (a config aimed at one file).
    pub fn has_path(&self, path: &[&str]) -> bool {
        match path.split_first() {
            None => true,
            Some((first, rest)) => self.children.get(*first).is_some_and(|c| c.has_path(rest)),
        }
    }

    /// Applies the configs along `path` (package, folders..., file name) onto `into`.
    pub fn apply(&self, path: &[&str], into: &mut ConfigMap) {
        merge_all(into, &self.configs);
        if let Some((first, rest)) = path.split_first()
            && let Some(child) = self.children.get(*first)
        {
            child.apply(rest, into);
        }
    }
}

/// "did you mean `+materialized`?" for a near-miss of a known config key.
fn plus_hint(key: &str) -> Option<String> {
    let found = closest(key, KNOWN_CONFIGS.iter().copied());
    (!found.is_empty()).then(|| {
        let list: Vec<String> = found.iter().map(|c| format!("`+{c}`")).collect();
        format!("did you mean {}?", list.join(", "))
    })
}

/// Reads a config value as a bool the way dbt does (`"true"` strings included).
pub fn json_truthy(v: Option<&Json>) -> Option<bool> {
    match v? {
        Json::Bool(b) => Some(*b),
        Json::String(s) => Some(matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "1")),
        Json::Null => None,
        Json::Number(n) => Some(n.as_f64() != Some(0.0)),
        _ => Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::yaml;

    #[test]
    fn hierarchy_and_merge_rules() {
        let src =
            "my_project:\n  +materialized: view\n  +tags: [a]\n  staging:\n    +materialized: table\n    +tags: b\n    +meta: {owner: x}\n";
        let node = yaml::parse(src).unwrap();
        let mut diags = vec![];
        let tree = ConfigTree::from_yaml(&node, &SourceText::new("dbt_project.yml", src), "models", &mut diags);
        assert!(diags.is_empty());
        let mut cfg = ConfigMap::new();
        tree.apply(&["my_project", "staging", "stg_a"], &mut cfg);
        assert_eq!(cfg["materialized"], "table");
        assert_eq!(cfg["tags"], serde_json::json!(["a", "b"]));
        merge_one(&mut cfg, "meta", serde_json::json!({"team": "y"}));
        assert_eq!(cfg["meta"], serde_json::json!({"owner": "x", "team": "y"}));
        let mut other = ConfigMap::new();
        tree.apply(&["my_project", "marts", "m"], &mut other);
        assert_eq!(other["materialized"], "view");
    }

    #[test]
    fn misspelled_config_is_reported() {
        let src = "p:\n  materialised: table\n";
        let node = yaml::parse(src).unwrap();
        let mut diags = vec![];
        ConfigTree::from_yaml(&node, &SourceText::new("dbt_project.yml", src), "models", &mut diags);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].labels[0].line, 2);
        assert!(diags[0].help.as_deref().unwrap().contains("+materialized"), "{:?}", diags[0].help);
    }
}
