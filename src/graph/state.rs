//! What changed between two parses of a project (dbt's `state:modified`, in memory): watch mode
//! rebuilds the changed nodes and what is downstream of them.

use super::Graph;
use crate::jinja::macros::MacroChanges;
use crate::parse::{Manifest, Node, SourceNode};
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

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
    let mut out = Changes::default();
    let old_nodes: std::collections::HashMap<&String, &Node> = old.nodes.iter().chain(old.unit_tests.iter()).collect();
    for (id, node) in new.nodes.iter().chain(new.unit_tests.iter()) {
        let id = id.clone();
        match old_nodes.get(&id) {
            None => {
                out.added.insert(id);
            }
            Some(prev) if node_state(prev) != node_state(node) || macros.touches(&node.raw_code, &node.macros) => {
                out.modified.insert(id);
            }
            Some(_) => {}
        }
    }
    let new_ids: BTreeSet<&String> = new.nodes.keys().chain(new.unit_tests.keys()).collect();
    out.removed = old_nodes.into_keys().filter(|id| !new_ids.contains(id)).cloned().collect();
    for (id, source) in &new.sources {
        match old.sources.get(id) {
            None => {
                out.added.insert(id.clone());
            }
            Some(prev) if source_state(prev) != source_state(source) => {
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

fn node_state(n: &Node) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    n.resource_type.hash(&mut h);
    n.raw_code.hash(&mut h);
    n.checksum.hash(&mut h);
    (&n.database, &n.schema, &n.alias).hash(&mut h);
    serde_json::to_string(&*n.config).unwrap_or_default().hash(&mut h);
    format!("{:?}{:?}", n.refs, n.sources).hash(&mut h);
    if let Some(t) = &n.test_metadata {
        (&t.name, &t.namespace, serde_json::to_string(&t.kwargs).unwrap_or_default()).hash(&mut h);
    }
    // Columns matter to the build through contracts (types, constraints); a description or a
    // test added in YAML does not rebuild the model.
    for c in n.columns.values().filter(|c| c.data_type.is_some() || c.constraints.as_array().is_some_and(|a| !a.is_empty())) {
        (&c.name, &c.data_type, c.constraints.to_string()).hash(&mut h);
    }
    n.extra.to_string().hash(&mut h);
    h.finish()
}

fn source_state(s: &SourceNode) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (&s.database, &s.schema, &s.identifier).hash(&mut h);
    (serde_json::to_string(&s.config).unwrap_or_default(), s.meta.to_string(), s.external.to_string(), s.quoting.to_string()).hash(&mut h);
    h.finish()
}
