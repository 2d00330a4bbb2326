//! `--state DIR`: the project compared with a previous `manifest.json` (kiln's or dbt-core's),
//! for the `state:` selectors. The rules are dbt-core's (`same_contents` and its parts, in
//! `contracts/graph/nodes.py`, and the state selector method):
//!
//! - **body**: the raw code (a seed: its file hash);
//! - **configs**: the configs as written (`unrendered_config`), except `database`, `schema`,
//!   `alias`, `tags` and `group`; a test compares only `severity`, `where`, `limit`,
//!   `fail_calc`, `warn_if`, `error_if`, `store_failures`, `store_failures_as`;
//! - **relation**: `database`, `schema` and `alias` as written;
//! - **persisted_descriptions**: the description (and columns' descriptions) where
//!   `persist_docs` writes them to the warehouse;
//! - **macros**: a macro the node calls, directly or through other macros, is new, gone or changed;
//! - **contract**: an enforced contract's columns, types or constraints changed;
//! - **fqn**: the node moved (counts for `state:modified` only).

use super::manifest_file::{ManifestFile, NodeView};
use crate::graph::select::StateSets;
use serde_json::Value as Json;
use std::collections::BTreeSet;

/// Config keys `state:modified.configs` ignores (dbt's `CompareBehavior.Exclude`).
const NOT_COMPARED: &[&str] = &["database", "schema", "alias", "tags", "group"];

/// The only configs compared for tests (dbt's `TestConfig.same_contents`).
const TEST_MODIFIERS: &[&str] = &["severity", "where", "limit", "fail_calc", "warn_if", "error_if", "store_failures", "store_failures_as"];

/// What differs between `current` and `old`.
pub fn compare(current: &ManifestFile, old: &ManifestFile) -> StateSets {
    let changed_macros = changed_macros(current, old);
    let mut sets = StateSets { old: old.nodes.keys().chain(old.sources.keys()).cloned().collect(), ..Default::default() };
    let entries = current
        .nodes
        .iter()
        .map(|(id, n)| (id, n, old.nodes.get(id)))
        .chain(current.sources.iter().map(|(id, n)| (id, n, old.sources.get(id))));
    for (id, node, previous) in entries {
        let mut aspects = match previous {
            Some(previous) => differences(node, previous),
            None => BTreeSet::new(),
        };
        if calls_changed_macro(current, &node.depends_on.macros, &changed_macros) {
            aspects.insert("macros");
        }
        if !aspects.is_empty() {
            sets.modified.insert(id.clone(), aspects);
        }
    }
    sets
}

/// How `node` differs from its `previous` version.
fn differences(node: &NodeView, previous: &NodeView) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    let is_source = node.resource_type == "source";
    let same_body = match node.resource_type.as_str() {
        // dbt's FileHash equality: an empty (`none`) hash equals nothing.
        "seed" => node.checksum == previous.checksum && node.checksum.name != "none",
        _ => node.raw_code == previous.raw_code,
    };
    if !is_source && !same_body {
        out.insert("body");
    }
    if !same_configs(node, previous) {
        out.insert("configs");
    }
    let relation = |n: &NodeView| -> [Option<Json>; 3] {
        if is_source {
            [n.database.clone().map(Json::from), n.schema.clone().map(Json::from), n.identifier.clone().map(Json::from)]
        } else {
            ["database", "schema", "alias"].map(|k| n.unrendered_config.get(k).cloned())
        }
    };
    if relation(node) != relation(previous) {
        out.insert("relation");
    }
    if !is_source && !same_persisted_descriptions(node, previous) {
        out.insert("persisted_descriptions");
    }
    if node.fqn != previous.fqn {
        out.insert("fqn");
    }
    if !same_contract(node, previous) {
        out.insert("contract");
    }
    out
}

fn same_configs(node: &NodeView, previous: &NodeView) -> bool {
    let (a, b) = if node.resource_type == "source" {
        (&node.config, &previous.config)
    } else {
        (&node.unrendered_config, &previous.unrendered_config)
    };
    let compared = |k: &str| {
        if node.resource_type == "test" { TEST_MODIFIERS.contains(&k) } else { !NOT_COMPARED.contains(&k) }
    };
    a.keys().chain(b.keys()).filter(|k| compared(k)).all(|k| a.get(k) == b.get(k))
}

fn same_persisted_descriptions(node: &NodeView, previous: &NodeView) -> bool {
    let persist = |what: &str| node.config.get("persist_docs").and_then(|p| p.get(what)).is_some_and(truthy);
    if persist("relation") && node.description != previous.description {
        return false;
    }
    let descriptions = |n: &NodeView| n.columns.iter().map(|(k, c)| (k.clone(), c.get("description").cloned())).collect::<Vec<_>>();
    !(persist("columns") && descriptions(node) != descriptions(previous))
}

/// An enforced contract (before or now) whose enforcement or columns changed.
fn same_contract(node: &NodeView, previous: &NodeView) -> bool {
    let enforced = |n: &NodeView| n.contract.get("enforced").is_some_and(truthy);
    if !enforced(previous) && !enforced(node) {
        return true;
    }
    let shape = |n: &NodeView| {
        n.columns
            .iter()
            .map(|(k, c)| (k.to_ascii_lowercase(), c.get("data_type").cloned(), c.get("constraints").cloned()))
            .collect::<Vec<_>>()
    };
    enforced(node) == enforced(previous) && shape(node) == shape(previous)
}

fn truthy(v: &Json) -> bool {
    crate::project::config::json_truthy(Some(v)).unwrap_or(false)
}

/// Macros that are new, gone or whose SQL changed.
fn changed_macros(current: &ManifestFile, old: &ManifestFile) -> BTreeSet<String> {
    let mut changed: BTreeSet<String> = current
        .macros
        .iter()
        .filter(|(id, m)| old.macros.get(*id).is_none_or(|o| o.macro_sql != m.macro_sql))
        .map(|(id, _)| id.clone())
        .collect();
    changed.extend(old.macros.keys().filter(|id| !current.macros.contains_key(*id)).cloned());
    changed
}

/// Whether any of `macros`, or a macro they call, is in `changed`.
fn calls_changed_macro(current: &ManifestFile, macros: &[String], changed: &BTreeSet<String>) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&String> = macros.iter().collect();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if changed.contains(id) {
            return true;
        }
        if let Some(m) = current.macros.get(id) {
            stack.extend(&m.depends_on.macros);
        }
    }
    false
}
