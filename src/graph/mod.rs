//! Stage 4: the dependency graph. Resolves every `ref()`/`source()` to a node (reporting
//! missing ones with file, line and the closest names), finds cycles, and orders nodes
//! deterministically (topological, ties broken by unique id).

pub mod select;
pub mod state;

use crate::diagnostics::{Code, Diagnostic, Label, did_you_mean};
use crate::jinja::context::RefCall;
use crate::parse::{Manifest, Node, ResourceType};
use crate::project::Project;
use petgraph::graph::{DiGraph, NodeIndex};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

/// How `ref()` and `source()` resolve: name -> unique ids, by package.
#[derive(Debug, Default)]
pub struct Lookup {
    /// name -> (package, unique id) of the models, seeds and snapshots of that name, sorted by
    /// package.
    pub by_name: HashMap<String, Vec<(String, String)>>,
    pub disabled: HashMap<String, String>,
    /// (source, table) -> unique ids (one per package).
    pub sources: HashMap<(String, String), Vec<String>>,
    pub root: String,
}

impl Lookup {
    pub fn new(manifest: &Manifest, root: &str) -> Lookup {
        let mut l = Lookup { root: root.to_string(), ..Default::default() };
        for n in manifest.nodes.values().filter(|n| n.is_refable()) {
            l.by_name.entry(n.name.clone()).or_default().push((n.package.clone(), n.unique_id.clone()));
        }
        for v in l.by_name.values_mut() {
            v.sort();
        }
        for n in manifest.disabled.values().filter(|n| n.is_refable()) {
            l.disabled.insert(n.name.clone(), n.unique_id.clone());
        }
        for s in manifest.sources.values() {
            l.sources.entry((s.source_name.clone(), s.name.clone())).or_default().push(s.unique_id.clone());
        }
        for v in l.sources.values_mut() {
            v.sort();
        }
        l
    }

    /// dbt's order: the named package; else the caller's package, the root project, any other
    /// (the first by package name).
    pub fn resolve_ref(&self, from_package: &str, call: &RefCall) -> Option<&String> {
        let candidates = self.by_name.get(&call.name)?;
        let in_package = |package: &str| candidates.iter().find(|(p, _)| p == package).map(|(_, id)| id);
        if let Some(p) = &call.package {
            return in_package(p);
        }
        in_package(from_package).or_else(|| in_package(&self.root)).or_else(|| candidates.first().map(|(_, id)| id))
    }

    pub fn resolve_source(&self, from_package: &str, source: &str, table: &str) -> Option<&String> {
        let ids = self.sources.get(&(source.to_string(), table.to_string()))?;
        ids.iter().find(|id| id.starts_with(&format!("source.{from_package}."))).or_else(|| ids.first())
    }
}

/// The DAG over models, seeds, snapshots, tests, analyses, sources, exposures and unit tests.
#[derive(Debug, Default)]
pub struct Graph {
    pub dag: DiGraph<String, ()>,
    pub index: HashMap<String, NodeIndex>,
    /// Parents of each node (sorted).
    pub parents: BTreeMap<String, Vec<String>>,
    pub children: BTreeMap<String, Vec<String>>,
    /// Topological order; ties broken by unique id.
    pub order: Vec<String>,
}

impl Graph {
    pub fn ancestors(&self, id: &str, depth: Option<usize>) -> BTreeSet<String> {
        self.walk(id, depth, &self.parents)
    }
    pub fn descendants(&self, id: &str, depth: Option<usize>) -> BTreeSet<String> {
        self.walk(id, depth, &self.children)
    }
    fn walk(&self, id: &str, depth: Option<usize>, edges: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut frontier = vec![id.to_string()];
        let mut level = 0;
        while !frontier.is_empty() && depth.is_none_or(|d| level < d) {
            let mut next = Vec::new();
            for n in frontier {
                for p in edges.get(&n).map(Vec::as_slice).unwrap_or(&[]) {
                    if out.insert(p.clone()) {
                        next.push(p.clone());
                    }
                }
            }
            frontier = next;
            level += 1;
        }
        out
    }
}

/// Where in a node's file a `ref('name')`/`source('a', 'b')` call is, for diagnostics.
fn call_position(node: &Node, needle_name: &str, func: &str) -> Option<(usize, usize, usize)> {
    let text = &node.raw_code;
    let mut search = 0;
    while let Some(pos) = text[search..].find(func) {
        let start = search + pos;
        let after = &text[start + func.len()..];
        let close = after.find(')').unwrap_or(after.len());
        if after.trim_start().starts_with('(') && after[..close].contains(&format!("'{needle_name}'"))
            || after[..close].contains(&format!("\"{needle_name}\""))
        {
            let (line, col) = crate::diagnostics::line_col(text, start);
            return Some((line, col, func.len() + close + 1));
        }
        search = start + func.len();
    }
    None
}

fn node_label(project: &Project, node: &Node, needle: &str, func: &str, text: &str) -> Option<Label> {
    let file = &project.files[node.file?];
    if node.raw_code.is_empty() || file.kind == crate::project::FileKind::Properties {
        return Some(Label::new(file.source(), node.line, 1, 1, text));
    }
    let (line, col, len) = call_position(node, needle, func).unwrap_or((node.line, 1, 1));
    Some(Label::new(crate::diagnostics::SourceText::new(file.display_path.clone(), node.raw_code.clone()), line, col, len, text))
}

/// Builds the graph, reporting unresolvable references and cycles.
pub fn build(project: &Project, manifest: &Manifest, lookup: &Lookup, diags: &mut Vec<Diagnostic>) -> Graph {
    let mut g = Graph::default();
    let mut ids: Vec<&String> =
        manifest.nodes.keys().chain(manifest.sources.keys()).chain(manifest.exposures.keys()).chain(manifest.unit_tests.keys()).collect();
    ids.sort();
    for id in ids {
        let ix = g.dag.add_node(id.clone());
        g.index.insert(id.clone(), ix);
        g.children.insert(id.clone(), Vec::new());
    }
    // Sources have no parents; every other node's are set below.
    for id in manifest.sources.keys() {
        g.parents.insert(id.clone(), Vec::new());
    }
    let refable_names: Vec<&str> = {
        let mut v: Vec<&str> = lookup.by_name.keys().map(String::as_str).collect();
        v.sort();
        v
    };
    for node in manifest.all_nodes() {
        let mut parents: BTreeSet<String> = BTreeSet::new();
        let mut self_ref = false;
        for call in &node.refs {
            match lookup.resolve_ref(&node.package, call) {
                // Self-references are cycles too (reported once per node).
                Some(id) if *id == node.unique_id => {
                    if self_ref {
                        continue;
                    }
                    self_ref = true;
                    let mut d = Diagnostic::error(Code::Cycle, format!("`{}` refers to itself", node.name))
                        .with_help("a model cannot select from itself; for incremental models use {{ this }}");
                    if let Some(l) = node_label(project, node, &node.name, "ref", "self-reference") {
                        d = d.with_label(l);
                    }
                    diags.push(d);
                }
                Some(id) => {
                    parents.insert(id.clone());
                }
                None => {
                    let shown = match &call.package {
                        Some(p) => format!("{p}.{}", call.name),
                        None => call.name.clone(),
                    };
                    let (code, msg, help) = match lookup.disabled.get(&call.name) {
                        Some(dis) => (
                            Code::DisabledRef,
                            format!("{} `{}` depends on `{shown}`, which is disabled", node.resource_type.as_str(), node.name),
                            Some(format!("enable {dis} (`enabled: true`) or remove the ref")),
                        ),
                        None => (
                            Code::MissingRef,
                            format!("{} `{}` depends on `{shown}`, which was not found", node.resource_type.as_str(), node.name),
                            did_you_mean(&call.name, refable_names.iter().copied())
                                .or_else(|| Some("check the name; models, seeds and snapshots can be ref()'d".into())),
                        ),
                    };
                    let mut d = Diagnostic::error(code, msg).with_help_opt(help);
                    if let Some(l) = node_label(project, node, &call.name, "ref", &format!("no model, seed or snapshot named `{shown}`")) {
                        d = d.with_label(l);
                    }
                    diags.push(d);
                }
            }
        }
        for (source, table) in &node.sources {
            match lookup.resolve_source(&node.package, source, table) {
                Some(id) => {
                    parents.insert(id.clone());
                }
                None => {
                    let known: Vec<String> = lookup.sources.keys().map(|(s, t)| format!("{s}.{t}")).collect();
                    let mut known_sorted = known.clone();
                    known_sorted.sort();
                    let mut d = Diagnostic::error(
                        Code::MissingSource,
                        format!(
                            "{} `{}` depends on source `{source}.{table}`, which was not found",
                            node.resource_type.as_str(),
                            node.name
                        ),
                    )
                    .with_help(
                        did_you_mean(&format!("{source}.{table}"), known_sorted.iter().map(String::as_str)).unwrap_or_else(|| {
                            format!(
                                "declare it in a properties file:\n  sources:\n    - name: {source}\n      tables:\n        - name: {table}"
                            )
                        }),
                    );
                    if let Some(l) = node_label(project, node, table, "source", &format!("no source table `{source}.{table}`")) {
                        d = d.with_label(l);
                    }
                    diags.push(d);
                }
            }
        }
        if node.resource_type == ResourceType::UnitTest
            && let Some(m) = &node.attached_node
        {
            parents.insert(m.clone());
        }
        let ix = g.index[&node.unique_id];
        for p in &parents {
            if let Some(&pix) = g.index.get(p) {
                g.dag.add_edge(pix, ix, ());
                if let Some(c) = g.children.get_mut(p) {
                    c.push(node.unique_id.clone())
                }
            }
        }
        g.parents.insert(node.unique_id.clone(), parents.into_iter().collect());
    }
    for c in g.children.values_mut() {
        c.sort();
        c.dedup();
    }
    // Kahn's algorithm with a min-heap: deterministic order.
    let mut indegree: HashMap<&str, usize> = g.parents.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
    let mut heap: BinaryHeap<Reverse<&str>> = indegree.iter().filter(|(_, d)| **d == 0).map(|(k, _)| Reverse(*k)).collect();
    while let Some(Reverse(id)) = heap.pop() {
        g.order.push(id.to_string());
        for c in &g.children[id] {
            let d = indegree.get_mut(c.as_str()).expect("child is a node");
            *d -= 1;
            if *d == 0 {
                heap.push(Reverse(c.as_str()));
            }
        }
    }
    if g.order.len() < g.index.len() {
        for cycle in find_cycles(&g) {
            let names: Vec<String> = cycle.iter().map(|id| short_name(id)).collect();
            let mut d = Diagnostic::error(Code::Cycle, format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]))
                .with_help("break the cycle: one of these models must not ref() the next");
            for (i, id) in cycle.iter().enumerate() {
                let Some(node) = manifest.nodes.get(id) else {
                    continue;
                };
                let next = &cycle[(i + 1) % cycle.len()];
                let next_node = manifest.nodes.get(next);
                // Label the ref in `next` that points back at `node`.
                if let Some(n) = next_node
                    && let Some(l) = node_label(project, n, &node.name, "ref", &format!("{} depends on {}", n.name, node.name))
                {
                    d = d.with_label(l);
                }
            }
            diags.push(d);
        }
    }
    g
}

fn short_name(id: &str) -> String {
    id.splitn(3, '.').nth(2).unwrap_or(id).to_string()
}

/// Strongly connected components with more than one node, each as an ordered cycle.
fn find_cycles(g: &Graph) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for scc in petgraph::algo::tarjan_scc(&g.dag) {
        if scc.len() < 2 {
            continue;
        }
        let members: BTreeSet<String> = scc.iter().map(|ix| g.dag[*ix].clone()).collect();
        // Walk from the smallest id along edges inside the component.
        let start = members.iter().next().expect("non-empty").clone();
        let mut cycle = vec![start.clone()];
        let mut cur = start.clone();
        loop {
            let next = g.children[&cur].iter().find(|c| members.contains(*c) && (!cycle.contains(c) || **c == start));
            match next {
                Some(n) if *n == start => break,
                Some(n) => {
                    cycle.push(n.clone());
                    cur = n.clone();
                }
                None => break,
            }
        }
        out.push(cycle);
    }
    out.sort();
    out
}
