//! dbt's node selection grammar: `model`, `+model`, `2+model`, `model+`, `model+1`, `@model`,
//! wildcards, methods (`tag:`, `path:`, `file:`, `fqn:`, `package:`, `config.<key>:`,
//! `resource_type:`, `source:`, `test_type:`, `test_name:`, `exposure:`), space = union,
//! comma = intersection, `--exclude`, `--resource-type`, and YAML selectors (`selectors.yml`).

use super::Graph;
use crate::diagnostics::{Code, Diagnostic, Label, SourceText, did_you_mean};
use crate::parse::{Manifest, Node, ResourceType};
use crate::project::yaml::{self, YNode, YValue};
use globset::GlobBuilder;
use std::collections::BTreeSet;

const METHODS: &[&str] = &[
    "fqn",
    "tag",
    "path",
    "file",
    "package",
    "config",
    "resource_type",
    "source",
    "test_type",
    "test_name",
    "exposure",
    "unit_test",
    "state",
    "result",
    "source_status",
    "group",
    "access",
    "version",
    "semantic_model",
    "metric",
    "saved_query",
];

/// The values of `state:`.
const STATE_VALUES: &[&str] = &[
    "new",
    "old",
    "modified",
    "unmodified",
    "modified.body",
    "modified.configs",
    "modified.relation",
    "modified.persisted_descriptions",
    "modified.macros",
    "modified.contract",
];

/// The values of `result:` (a node's status in the `--state` run's `run_results.json`).
const RESULT_VALUES: &[&str] = &["success", "error", "fail", "warn", "pass", "skipped"];

/// What changed against a previous manifest (`--state`), for `state:` selectors, and the
/// statuses of that run's `run_results.json`, for `result:`.
#[derive(Clone, Debug, Default)]
pub struct StateSets {
    /// Ids in the previous manifest.
    pub old: BTreeSet<String>,
    /// Ids whose contents differ (new ones too), with each way they differ (`body`, `configs`,
    /// `relation`, `persisted_descriptions`, `macros`, `contract`, or `fqn`).
    pub modified: std::collections::BTreeMap<String, BTreeSet<&'static str>>,
    /// Status of each node in the previous run's results (none without `run_results.json`).
    pub results: std::collections::BTreeMap<String, String>,
    /// Sources loaded more recently than in the previous run's `sources.json`, by the current
    /// `target/sources.json` (`source_status:fresher`).
    pub fresher: BTreeSet<String>,
}

impl StateSets {
    /// Whether `id` matches `state:<value>`, with dbt's rules: a new node is modified in
    /// every way except `macros`, which compares the macros it calls.
    fn matches(&self, id: &str, value: &str) -> bool {
        let is_new = !self.old.contains(id);
        let aspects = self.modified.get(id);
        match value {
            "new" => is_new,
            "old" => !is_new,
            "modified" => is_new || aspects.is_some(),
            "unmodified" => !is_new && aspects.is_none(),
            "modified.macros" => aspects.is_some_and(|a| a.contains("macros")),
            other => {
                let aspect = other.trim_start_matches("modified.");
                is_new || aspects.is_some_and(|a| a.contains(aspect))
            }
        }
    }
}

/// Whether `expr` uses `state:` or `result:` (which need `--state`).
pub fn uses_state(expr: &SelExpr) -> bool {
    match expr {
        SelExpr::Atom(c) => matches!(c.method.as_str(), "state" | "result" | "source_status"),
        SelExpr::Union(items) | SelExpr::Intersection(items) => items.iter().any(uses_state),
        SelExpr::Difference(a, b) => uses_state(a) || uses_state(b),
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Criterion {
    pub method: String,
    pub value: String,
    /// `+x` / `n+x`: Some(None) = all ancestors, Some(Some(n)) = n levels.
    pub parents: Option<Option<usize>>,
    pub children: Option<Option<usize>>,
    /// `@x`: x, its descendants, and their ancestors.
    pub childrens_parents: bool,
    /// Whether tests of selected nodes are added (dbt's `eager` indirect selection).
    pub indirect: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SelExpr {
    Atom(Criterion),
    Union(Vec<SelExpr>),
    Intersection(Vec<SelExpr>),
    Difference(Box<SelExpr>, Box<SelExpr>),
}

fn bad(msg: impl Into<String>, help: impl Into<String>) -> Diagnostic {
    Diagnostic::error(Code::BadSelector, msg).with_help(help.into())
}

/// Parses one selector atom like `2+tag:finance+` or `@orders`.
pub fn parse_atom(raw: &str) -> Result<Criterion, Diagnostic> {
    let mut s = raw.trim();
    let mut c =
        Criterion { method: "fqn".into(), value: String::new(), parents: None, children: None, childrens_parents: false, indirect: true };
    if let Some(rest) = s.strip_prefix('@') {
        c.childrens_parents = true;
        s = rest;
    }
    // Leading `n+` or `+`.
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    if s[digits.len()..].starts_with('+') {
        c.parents = Some(if digits.is_empty() { None } else { digits.parse().ok() });
        s = &s[digits.len() + 1..];
    }
    // Trailing `+` or `+n`.
    let trailing_digits: String = s.chars().rev().take_while(char::is_ascii_digit).collect();
    let body_end = s.len() - trailing_digits.len();
    if s[..body_end].ends_with('+') {
        let n: String = trailing_digits.chars().rev().collect();
        c.children = Some(if n.is_empty() { None } else { n.parse().ok() });
        s = &s[..body_end - 1];
    }
    if c.childrens_parents && (c.parents.is_some() || c.children.is_some()) {
        return Err(bad(format!("selector `{raw}` combines `@` with `+`"), "use either `@model` or `+model+`"));
    }
    if s.is_empty() {
        return Err(bad(format!("selector `{raw}` names nothing"), "write a model name or a method, e.g. `tag:nightly`"));
    }
    match s.split_once(':') {
        Some((method, value)) if !method.contains('/') && !method.contains('\\') => {
            let base = method.split('.').next().unwrap_or(method);
            if !METHODS.contains(&base) {
                return Err(bad(
                    format!("unknown selector method `{method}` in `{raw}`"),
                    did_you_mean(base, METHODS.iter().copied()).unwrap_or_else(|| format!("methods: {}", METHODS.join(", "))),
                ));
            }
            if base == "source_status" && value != "fresher" {
                return Err(bad(
                    format!("`source_status:{value}` in `{raw}` is not a source status selector"),
                    "write `source_status:fresher`",
                ));
            }
            if base == "result" && !RESULT_VALUES.contains(&value) {
                return Err(bad(
                    format!("`result:{value}` in `{raw}` is not a result selector"),
                    did_you_mean(value, RESULT_VALUES.iter().copied()).unwrap_or_else(|| format!("one of: {}", RESULT_VALUES.join(", "))),
                ));
            }
            if base == "state" && !STATE_VALUES.contains(&value) {
                return Err(bad(
                    format!("`state:{value}` in `{raw}` is not a state selector"),
                    did_you_mean(value, STATE_VALUES.iter().copied()).unwrap_or_else(|| format!("one of: {}", STATE_VALUES.join(", "))),
                ));
            }
            c.method = method.to_string();
            c.value = value.to_string();
        }
        _ => {
            let looks_like_path =
                s.contains('/') || s.contains('\\') || s.ends_with(".sql") || s.ends_with(".csv") || s.ends_with(".yml") || s == ".";
            c.method = if looks_like_path { if s.contains('/') || s == "." { "path" } else { "file" } } else { "fqn" }.to_string();
            c.value = s.to_string();
        }
    }
    Ok(c)
}

/// `--select a b,c` (each argument may hold several space-separated selectors).
pub fn parse_cli(args: &[String]) -> Result<Option<SelExpr>, Diagnostic> {
    let mut union = Vec::new();
    for arg in args {
        for token in arg.split_whitespace() {
            let parts: Vec<SelExpr> =
                token.split(',').filter(|p| !p.is_empty()).map(|p| parse_atom(p).map(SelExpr::Atom)).collect::<Result<_, _>>()?;
            union.push(if parts.len() == 1 { parts.into_iter().next().expect("one") } else { SelExpr::Intersection(parts) });
        }
    }
    Ok(if union.is_empty() { None } else { Some(SelExpr::Union(union)) })
}

/// `selectors.yml`: every selector by name.
pub fn parse_selectors_file(text: &str, path: &str) -> Result<Vec<(String, SelExpr, bool)>, Diagnostic> {
    let source = SourceText::new(path, text);
    let doc = yaml::parse(text).map_err(|e| crate::project::yaml_error(&source, &e))?;
    let mut out = Vec::new();
    for entry in doc.get("selectors").and_then(YNode::as_seq).unwrap_or(&[]) {
        let name = entry.get("name").and_then(YNode::scalar_string).ok_or_else(|| {
            Diagnostic::error(Code::BadSelector, "a selector in selectors.yml has no `name`").with_label(Label::new(
                source.clone(),
                entry.line,
                entry.col,
                1,
                "here",
            ))
        })?;
        let def = entry.get("definition").ok_or_else(|| {
            Diagnostic::error(Code::BadSelector, format!("selector `{name}` has no `definition`")).with_label(Label::new(
                source.clone(),
                entry.line,
                entry.col,
                1,
                "here",
            ))
        })?;
        let expr = selector_def(def).map_err(|d| {
            if d.labels.is_empty() { d.with_label(Label::new(source.clone(), def.line, def.col, 1, "in this definition")) } else { d }
        })?;
        out.push((name, expr, entry.get("default").and_then(YNode::as_bool).unwrap_or(false)));
    }
    Ok(out)
}

fn selector_def(node: &YNode) -> Result<SelExpr, Diagnostic> {
    match &node.value {
        YValue::Str(s) => Ok(parse_cli(std::slice::from_ref(s))?.unwrap_or(SelExpr::Union(vec![]))),
        YValue::Map(_) => {
            if let Some(items) = node.get("union") {
                return list(items).map(|v| union_with_excludes(v, items));
            }
            if let Some(items) = node.get("intersection") {
                return list(items).map(|v| SelExpr::Intersection(v.into_iter().map(|(e, _)| e).collect()));
            }
            let method = node.get("method").and_then(YNode::scalar_string).ok_or_else(|| {
                bad("a selector definition needs `method` and `value` (or union/intersection)", "e.g. {method: tag, value: nightly}")
            })?;
            let value = node.get("value").and_then(YNode::scalar_string).unwrap_or_default();
            let mut c = parse_atom(&format!("{method}:{value}"))?;
            let flag = |k: &str| node.get(k).and_then(YNode::as_bool).unwrap_or(false);
            let depth = |k: &str| node.get(k).and_then(|v| if let YValue::Int(i) = v.value { Some(i as usize) } else { None });
            if flag("parents") {
                c.parents = Some(depth("parents_depth"));
            }
            if flag("children") {
                c.children = Some(depth("children_depth"));
            }
            c.childrens_parents = flag("childrens_parents");
            if let Some(ind) = node.get("indirect_selection").and_then(YNode::scalar_string) {
                c.indirect = ind != "empty";
            }
            Ok(SelExpr::Atom(c))
        }
        _ => Err(bad("a selector definition must be a string or a mapping", "see dbt's YAML selectors")),
    }
}

fn list(node: &YNode) -> Result<Vec<(SelExpr, bool)>, Diagnostic> {
    node.as_seq()
        .unwrap_or(&[])
        .iter()
        .map(|item| match item.get("exclude") {
            Some(ex) => list(ex).map(|v| (union_with_excludes(v, ex), true)),
            None => selector_def(item).map(|e| (e, false)),
        })
        .collect()
}

fn union_with_excludes(items: Vec<(SelExpr, bool)>, _node: &YNode) -> SelExpr {
    let (ex, inc): (Vec<_>, Vec<_>) = items.into_iter().partition(|(_, is_ex)| *is_ex);
    let inc = SelExpr::Union(inc.into_iter().map(|(e, _)| e).collect());
    if ex.is_empty() { inc } else { SelExpr::Difference(Box::new(inc), Box::new(SelExpr::Union(ex.into_iter().map(|(e, _)| e).collect()))) }
}

/// A uniform view of anything selectable.
struct Candidate<'a> {
    id: &'a str,
    resource_type: ResourceType,
    name: &'a str,
    package: &'a str,
    fqn: &'a [String],
    tags: Vec<&'a str>,
    path: &'a str,
    config: Option<&'a crate::project::config::ConfigMap>,
    source_name: Option<&'a str>,
    node: Option<&'a Node>,
    state: Option<&'a StateSets>,
}

fn candidates<'a>(manifest: &'a Manifest, state: Option<&'a StateSets>) -> Vec<Candidate<'a>> {
    let mut out: Vec<Candidate> = manifest
        .all_nodes()
        .map(|n| Candidate {
            id: &n.unique_id,
            resource_type: n.resource_type,
            name: &n.name,
            package: &n.package,
            fqn: &n.fqn,
            tags: n.tags(),
            path: &n.original_file_path,
            config: Some(&n.config),
            source_name: None,
            node: Some(n),
            state,
        })
        .collect();
    out.extend(manifest.sources.values().map(|s| {
        Candidate {
            id: &s.unique_id,
            resource_type: ResourceType::Source,
            name: &s.name,
            package: &s.package,
            fqn: &s.fqn,
            tags: s
                .tags
                .iter()
                .map(String::as_str)
                .chain(s.config.get("tags").and_then(|t| t.as_array()).into_iter().flatten().filter_map(|t| t.as_str()))
                .collect(),
            path: "",
            config: Some(&s.config),
            source_name: Some(&s.source_name),
            node: None,
            state,
        }
    }));
    out
}

fn glob_match(pattern: &str, text: &str) -> bool {
    if !pattern.contains(['*', '?', '[']) {
        return pattern == text;
    }
    GlobBuilder::new(pattern).literal_separator(false).build().map(|g| g.compile_matcher().is_match(text)).unwrap_or(false)
}

fn fqn_match(selector: &str, fqn: &[String]) -> bool {
    if let Some(last) = fqn.last()
        && glob_match(selector, last)
    {
        return true;
    }
    let parts: Vec<&str> = selector.split('.').collect();
    let flat: Vec<&str> = fqn.iter().flat_map(|s| s.split('.')).collect();
    let prefix_match = |flat: &[&str]| -> bool {
        if flat.len() < parts.len() {
            return false;
        }
        for (i, p) in parts.iter().enumerate() {
            if p.contains(['*', '?', '[']) {
                return glob_match(&parts[i..].join("."), &flat[i..].join("."));
            }
            if flat[i] != *p {
                return false;
            }
        }
        true
    };
    prefix_match(&flat) || (flat.len() > 1 && prefix_match(&flat[1..]))
}

fn matches(c: &Criterion, cand: &Candidate) -> bool {
    let v = c.value.as_str();
    let (base, key) = c.method.split_once('.').map_or((c.method.as_str(), None), |(b, k)| (b, Some(k)));
    match base {
        "fqn" => fqn_match(v, cand.fqn),
        "tag" => cand.tags.iter().any(|t| glob_match(v, t)),
        "path" => {
            let v = v.trim_end_matches('/');
            v == "." || cand.path == v || cand.path.starts_with(&format!("{v}/")) || glob_match(v, cand.path)
        }
        "file" => {
            let file = cand.path.rsplit('/').next().unwrap_or("");
            glob_match(v, file) || file.rsplit_once('.').is_some_and(|(stem, _)| glob_match(v, stem))
        }
        "package" => glob_match(v, cand.package) || (v == "this" && cand.fqn.first().map(String::as_str) == Some(cand.package)),
        "config" => {
            let Some(key) = key else { return false };
            match cand.config.and_then(|c| c.get(key)) {
                Some(serde_json::Value::Array(a)) => a.iter().any(|x| x.as_str().map_or(*x == v, |s| glob_match(v, s))),
                Some(serde_json::Value::String(s)) => glob_match(v, s),
                Some(other) => other.to_string().eq_ignore_ascii_case(v),
                None => false,
            }
        }
        "resource_type" => cand.resource_type.as_str() == v || (v == "test" && cand.resource_type == ResourceType::Test),
        "source" => {
            let Some(src) = cand.source_name else {
                return false;
            };
            let parts: Vec<&str> = v.split('.').collect();
            match parts.as_slice() {
                [s] => glob_match(s, src),
                [s, t] => glob_match(s, src) && glob_match(t, cand.name),
                [p, s, t] => glob_match(p, cand.package) && glob_match(s, src) && glob_match(t, cand.name),
                _ => false,
            }
        }
        "exposure" => cand.resource_type == ResourceType::Exposure && glob_match(v, cand.name),
        "unit_test" => cand.resource_type == ResourceType::UnitTest && (glob_match(v, cand.name) || fqn_match(v, cand.fqn)),
        "test_type" => match cand.node {
            Some(n) if n.resource_type == ResourceType::Test => match v {
                "generic" | "data" => n.test_metadata.is_some(),
                "singular" => n.test_metadata.is_none(),
                "unit" => false,
                _ => false,
            },
            Some(n) if n.resource_type == ResourceType::UnitTest => v == "unit",
            _ => false,
        },
        "test_name" => cand.node.and_then(|n| n.test_metadata.as_ref()).is_some_and(|m| glob_match(v, &m.name)),
        "state" => cand.state.is_some_and(|st| st.matches(cand.id, &c.value)),
        "result" => cand.state.and_then(|st| st.results.get(cand.id)).is_some_and(|status| *status == c.value),
        "source_status" => cand.state.is_some_and(|st| st.fresher.contains(cand.id)),
        "group" | "access" | "version" => cand.config.and_then(|c| c.get(base)).and_then(|x| x.as_str()).is_some_and(|s| glob_match(v, s)),
        _ => false,
    }
}

/// Evaluates an expression to the set of selected unique ids (with graph operators applied and,
/// when `indirect`, the tests of selected nodes added).
pub fn evaluate(expr: &SelExpr, manifest: &Manifest, graph: &Graph) -> BTreeSet<String> {
    evaluate_with(expr, manifest, graph, None)
}

/// [`evaluate`], with what changed against a previous manifest for `state:` selectors.
pub fn evaluate_with(expr: &SelExpr, manifest: &Manifest, graph: &Graph, state: Option<&StateSets>) -> BTreeSet<String> {
    let cands = candidates(manifest, state);
    eval(expr, &cands, manifest, graph)
}

fn eval(expr: &SelExpr, cands: &[Candidate], manifest: &Manifest, graph: &Graph) -> BTreeSet<String> {
    match expr {
        SelExpr::Atom(c) => {
            let mut base: BTreeSet<String> = cands.iter().filter(|cand| matches(c, cand)).map(|cand| cand.id.to_string()).collect();
            let roots: Vec<String> = base.iter().cloned().collect();
            for id in &roots {
                if let Some(d) = c.parents {
                    base.extend(graph.ancestors(id, d));
                }
                if let Some(d) = c.children {
                    base.extend(graph.descendants(id, d));
                }
                if c.childrens_parents {
                    let desc = graph.descendants(id, None);
                    for x in &desc {
                        base.extend(graph.ancestors(x, None));
                    }
                    base.extend(desc);
                    base.extend(graph.ancestors(id, None));
                }
            }
            if c.indirect {
                add_tests(&mut base, manifest, graph);
            }
            base
        }
        SelExpr::Union(items) => items.iter().flat_map(|e| eval(e, cands, manifest, graph)).collect(),
        SelExpr::Intersection(items) => {
            let mut it = items.iter().map(|e| eval(e, cands, manifest, graph));
            let first = it.next().unwrap_or_default();
            it.fold(first, |acc, s| acc.intersection(&s).cloned().collect())
        }
        SelExpr::Difference(a, b) => {
            let b = eval(b, cands, manifest, graph);
            eval(a, cands, manifest, graph).difference(&b).cloned().collect()
        }
    }
}

/// dbt's `eager` indirect selection: a test is selected when any node it tests is.
pub fn add_tests(selected: &mut BTreeSet<String>, manifest: &Manifest, graph: &Graph) {
    let mut add = Vec::new();
    for id in selected.iter() {
        for child in graph.children.get(id).map(Vec::as_slice).unwrap_or(&[]) {
            let is_test =
                manifest.nodes.get(child).is_some_and(|n| n.resource_type == ResourceType::Test) || manifest.unit_tests.contains_key(child);
            if is_test {
                add.push(child.clone());
            }
        }
    }
    selected.extend(add);
}

/// Everything selectable (the default selection of `ls`, `compile`, ...).
pub fn all(manifest: &Manifest) -> BTreeSet<String> {
    candidates(manifest, None).into_iter().map(|c| c.id.to_string()).collect()
}

/// Applies `--select`, `--exclude`, `--selector`, `--resource-type`.
pub fn select(
    manifest: &Manifest,
    graph: &Graph,
    select: Option<&SelExpr>,
    exclude: Option<&SelExpr>,
    resource_types: &[ResourceType],
    state: Option<&StateSets>,
) -> BTreeSet<String> {
    let mut set = match select {
        Some(e) => evaluate_with(e, manifest, graph, state),
        None => all(manifest),
    };
    if let Some(e) = exclude {
        // Excluding a node excludes its tests too (`dbt test --exclude orders` runs no test of
        // `orders`).
        let out = evaluate_with(e, manifest, graph, state);
        set = set.difference(&out).cloned().collect();
    }
    if !resource_types.is_empty() {
        let rt_of = |id: &str| -> Option<ResourceType> { id.split('.').next().and_then(ResourceType::parse) };
        set.retain(|id| rt_of(id).is_some_and(|rt| resource_types.contains(&rt)));
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoms() {
        let c = parse_atom("2+tag:finance+").unwrap();
        assert_eq!((c.method.as_str(), c.value.as_str(), c.parents, c.children), ("tag", "finance", Some(Some(2)), Some(None)));
        let c = parse_atom("+fct_orders").unwrap();
        assert_eq!((c.method.as_str(), c.parents, c.children), ("fqn", Some(None), None));
        let c = parse_atom("@orders").unwrap();
        assert!(c.childrens_parents);
        let c = parse_atom("models/staging").unwrap();
        assert_eq!(c.method, "path");
        let c = parse_atom("config.materialized:table").unwrap();
        assert_eq!((c.method.as_str(), c.value.as_str()), ("config.materialized", "table"));
        assert!(parse_atom("tags:x").is_err());
        assert_eq!(parse_atom("orders+1").unwrap().children, Some(Some(1)));
    }

    #[test]
    fn fqn_matching() {
        let fqn: Vec<String> = ["shop", "staging", "stg_orders"].iter().map(|s| s.to_string()).collect();
        assert!(fqn_match("stg_orders", &fqn));
        assert!(fqn_match("staging", &fqn));
        assert!(fqn_match("shop.staging", &fqn));
        assert!(fqn_match("stg_*", &fqn));
        assert!(fqn_match("shop.staging.*", &fqn));
        assert!(!fqn_match("marts", &fqn));
    }

    /// A small project, parsed: seeds `raw` -> `stg` (tag nightly, a view) -> `fct` (a table,
    /// tag finance) -> `rpt`; `other` beside them; a `not_null` test on `stg`, a source.
    fn project() -> (tempfile::TempDir, Manifest, Graph) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let write = |p: &str, text: &str| {
            std::fs::create_dir_all(d.join(p).parent().unwrap()).unwrap();
            std::fs::write(d.join(p), text).unwrap();
        };
        write("dbt_project.yml", "name: p\nconfig-version: 2\nmodels:\n  p:\n    marts:\n      +materialized: table\n");
        write("seeds/raw.csv", "id\n1\n");
        write(
            "models/staging/stg.sql",
            "{{ config(tags=['nightly']) }}\nselect * from {{ ref('raw') }} join {{ source('app', 'users') }} using (id)",
        );
        write(
            "models/staging/stg.yml",
            "version: 2\nmodels:\n  - name: stg\n    columns:\n      - name: id\n        data_tests: [not_null]\nsources:\n  - name: app\n    tables:\n      - name: users\n",
        );
        write("models/marts/fct.sql", "{{ config(tags=['finance']) }}\nselect * from {{ ref('stg') }}");
        write("models/marts/rpt.sql", "select * from {{ ref('fct') }}");
        write("models/other.sql", "select 1 as x");
        let mut diags = Vec::new();
        let (project, _) = crate::project::Project::load(&crate::project::fs::OsFs, d).unwrap_or_else(|d| panic!("{d:?}"));
        let target = crate::project::profiles::Target::builtin("p");
        let jinja = crate::jinja::JinjaEnv::build(&project, &target, &Default::default(), &mut diags);
        let manifest = crate::parse::parse(&project, &jinja, &mut diags).manifest;
        let lookup = super::super::Lookup::new(&manifest, project.name());
        let graph = super::super::build(&project, &manifest, &lookup, &mut diags);
        assert!(diags.iter().all(|d| d.severity != crate::diagnostics::Severity::Error), "{diags:?}");
        (dir, manifest, graph)
    }

    /// Short names of what `--select` and `--exclude` select (tests as `test:<name>`).
    fn names(m: &Manifest, g: &Graph, select: &[&str], exclude: &[&str]) -> Vec<String> {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let sel = parse_cli(&args(select)).unwrap();
        let exc = parse_cli(&args(exclude)).unwrap();
        let mut out: Vec<String> = super::select(m, g, sel.as_ref(), exc.as_ref(), &[], None)
            .into_iter()
            .map(|id| {
                if id.starts_with("test.") {
                    let name = id.split('.').nth(2).unwrap_or_default();
                    format!("test:{}", name.split("_stg").next().unwrap_or_default())
                } else {
                    id.rsplit('.').next().unwrap_or_default().to_string()
                }
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn graph_operators_methods_and_set_operations() {
        let (_dir, m, g) = project();
        let n = |sel: &[&str], exc: &[&str]| names(&m, &g, sel, exc);
        assert_eq!(n(&["stg"], &[]), ["stg", "test:not_null"], "a model and its tests (eager)");
        assert_eq!(n(&["stg+"], &[]), ["fct", "rpt", "stg", "test:not_null"]);
        assert_eq!(n(&["stg+1"], &[]), ["fct", "stg", "test:not_null"]);
        assert_eq!(n(&["+fct"], &[]), ["fct", "raw", "stg", "test:not_null", "users"]);
        assert_eq!(n(&["1+fct"], &[]), ["fct", "stg", "test:not_null"]);
        assert_eq!(n(&["@stg"], &[]), ["fct", "raw", "rpt", "stg", "test:not_null", "users"]);
        assert_eq!(n(&["tag:nightly", "tag:finance"], &[]), ["fct", "stg", "test:not_null"], "space is a union");
        assert_eq!(n(&["stg+,tag:finance"], &[]), ["fct"], "comma is an intersection");
        assert_eq!(n(&["stg+"], &["rpt"]), ["fct", "stg", "test:not_null"]);
        assert_eq!(n(&["stg"], &["stg"]), Vec::<String>::new(), "excluding a model excludes its tests");
        assert_eq!(n(&["config.materialized:table"], &[]), ["fct", "rpt"]);
        assert_eq!(n(&["path:models/marts"], &[]), ["fct", "rpt"]);
        assert_eq!(n(&["models/staging"], &[]), ["stg", "test:not_null"]);
        assert_eq!(n(&["resource_type:seed"], &[]), ["raw"]);
        assert_eq!(n(&["source:app+1"], &[]), ["stg", "test:not_null", "users"]);
        assert_eq!(n(&["test_type:generic"], &[]), ["test:not_null"]);
        assert_eq!(n(&["p.marts.*"], &[]), ["fct", "rpt"]);
        assert_eq!(n(&["package:p"], &[]), ["fct", "other", "raw", "rpt", "stg", "test:not_null", "users"]);
        assert_eq!(n(&["resource_type:model"], &["tag:finance", "other"]), ["rpt", "stg", "test:not_null"]);
    }

    #[test]
    fn yaml_selectors() {
        let (_dir, m, g) = project();
        let text = "selectors:\n  - name: marts_but_rpt\n    default: true\n    definition:\n      union:\n        - method: path\n          value: models/marts\n        - exclude:\n            - method: fqn\n              value: rpt\n  - name: nightly_up\n    definition:\n      method: tag\n      value: nightly\n      parents: true\n      indirect_selection: empty\n";
        let selectors = parse_selectors_file(text, "selectors.yml").unwrap();
        let by = |name: &str| {
            let (_, expr, default) = selectors.iter().find(|(n, _, _)| n == name).unwrap();
            let mut ids: Vec<String> = evaluate(expr, &m, &g).into_iter().collect();
            ids.sort();
            (ids, *default)
        };
        assert_eq!(by("marts_but_rpt"), (vec!["model.p.fct".to_string()], true));
        assert_eq!(by("nightly_up").0, ["model.p.stg", "seed.p.raw", "source.p.app.users"], "no tests: indirect_selection empty");
        let err = parse_selectors_file("selectors:\n  - name: x\n", "selectors.yml").unwrap_err();
        assert_eq!((err.code, err.labels[0].line), (Code::BadSelector, 2));
    }
}
