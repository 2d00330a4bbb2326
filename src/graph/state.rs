//! What changed between two parses of a project (dbt's `state:modified`, in memory): watch mode
//! rebuilds the changed nodes and what is downstream of them.

use super::Graph;
use crate::jinja::macros::MacroChanges;
use crate::parse::{Manifest, Node, SourceNode};
use crate::project::config::ConfigMap;
use serde_json::Value as Json;
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Nodes (and sources) that did not exist before.
    pub added: BTreeSet<String>,
    /// Nodes (and sources) whose definition changed: SQL or CSV, config, refs, tests' arguments,
    /// column contracts, relation name, or a macro they use.
    pub modified: BTreeSet<String>,
    /// Nodes that are gone (their relations are left in the warehouse, as dbt does).
    pub removed: BTreeSet<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    /// Added and modified nodes: what has to be built again.
    pub fn dirty(&self) -> BTreeSet<String> {
        self.added.union(&self.modified).cloned().collect()
    }
}

/// Compares two manifests of the same project.
pub fn changes(old: &Manifest, new: &Manifest, macros: &MacroChanges) -> Changes {
    use rayon::prelude::*;
    let mut out = Changes::default();
    let previous = |id: &String| old.nodes.get(id).or_else(|| old.unit_tests.get(id));
    let nodes: Vec<(&String, &Node)> = new.nodes.iter().chain(new.unit_tests.iter()).collect();
    let changed: Vec<(&String, bool)> = nodes
        .par_iter()
        .filter_map(|(id, node)| match previous(id) {
            None => Some((*id, true)),
            Some(prev) if !same_state(prev, node) || macros.touches(&node.raw_code, &node.macros) => Some((*id, false)),
            Some(_) => None,
        })
        .collect();
    for (id, added) in changed {
        if added { &mut out.added } else { &mut out.modified }.insert(id.clone());
    }
    let gone = |id: &&String| !new.nodes.contains_key(*id) && !new.unit_tests.contains_key(*id);
    out.removed = old.nodes.keys().chain(old.unit_tests.keys()).filter(gone).cloned().collect();
    for (id, source) in &new.sources {
        match old.sources.get(id) {
            None => {
                out.added.insert(id.clone());
            }
            Some(prev) if !same_source(prev, source) => {
                out.modified.insert(id.clone());
            }
            Some(_) => {}
        }
    }
    out
}

/// What is rebuilt for `dirty` nodes: them, everything downstream (unless `downstream` is
/// false), and the tests of all of it (dbt's eager indirect selection), within `within`.
pub fn rebuild_set(
    manifest: &Manifest,
    graph: &Graph,
    dirty: &BTreeSet<String>,
    downstream: bool,
    within: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut set = dirty.clone();
    if downstream {
        for id in dirty {
            set.extend(graph.descendants(id, None));
        }
    }
    super::select::add_tests(&mut set, manifest, graph);
    set.retain(|id| within.contains(id));
    set
}

/// Whether a node builds the same as before: what it runs and where, not its descriptions.
fn same_state(a: &Node, b: &Node) -> bool {
    // Columns matter to the build through contracts (types, constraints); a description or a
    // test added in YAML does not rebuild the model.
    fn built(n: &Node) -> impl Iterator<Item = (&String, &Option<String>, &Json)> {
        n.columns
            .values()
            .filter(|c| c.data_type.is_some() || c.constraints.as_array().is_some_and(|a| !a.is_empty()))
            .map(|c| (&c.name, &c.data_type, &c.constraints))
    }
    fn test(n: &Node) -> Option<(&String, &Option<String>, &serde_json::Map<String, Json>)> {
        n.test_metadata.as_ref().map(|t| (&t.name, &t.namespace, &t.kwargs))
    }
    a.resource_type == b.resource_type
        && a.raw_code == b.raw_code
        && a.checksum == b.checksum
        && (&a.database, &a.schema, &a.alias) == (&b.database, &b.schema, &b.alias)
        && same_config(&a.config, &b.config)
        && a.refs == b.refs
        && a.sources == b.sources
        && test(a) == test(b)
        && built(a).eq(built(b))
        && a.extra == b.extra
}

/// Equal configs, compared in order first (a reload builds them in the same order), without
/// hashing every key.
fn same_config(a: &Arc<ConfigMap>, b: &Arc<ConfigMap>) -> bool {
    Arc::ptr_eq(a, b) || a.iter().eq(b.iter()) || a == b
}

fn same_source(a: &SourceNode, b: &SourceNode) -> bool {
    (&a.database, &a.schema, &a.identifier) == (&b.database, &b.schema, &b.identifier)
        && (&a.config, &a.meta, &a.external, &a.quoting) == (&b.config, &b.meta, &b.external, &b.quoting)
}
