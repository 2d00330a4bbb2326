//! `kiln lineage NODE.COLUMN`: where a column comes from (or, with `--downstream`, what it
//! feeds), hop by hop down to seeds and sources, from static analysis of the whole project.

use super::printer::Printer;
use super::session::{self, Stop};
use super::{EXIT_OK, GlobalArgs};
use crate::analyze::{ColumnRead, NodeLineage};
use crate::diagnostics::{Code, Diagnostic, Diagnostics, did_you_mean};
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(clap::Args, Debug)]
pub struct LineageArgs {
    /// The column: `model.column`, `seed.column`, `source_name.table.column`, or a unique id
    /// followed by `.column`
    #[arg(value_name = "NODE.COLUMN")]
    pub column: String,
    /// What the column feeds, instead of where it comes from
    #[arg(long)]
    pub downstream: bool,
    /// Where it comes from (the default)
    #[arg(long, conflicts_with = "downstream")]
    pub upstream: bool,
    /// Output format
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

pub fn run(global: &GlobalArgs, args: &LineageArgs, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    let s = match session::load(global, env, printer, "lineage", Stop::Graph) {
        Ok(s) => s,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let selected: BTreeSet<String> =
        s.manifest.nodes.values().filter(|n| crate::compile::has_sql(n)).map(|n| n.unique_id.clone()).collect();
    s.jinja.set_selected(&selected);
    let project = super::compile::compile_selected(&s, &selected, true, true);
    if project.diagnostics.has_errors() {
        return Ok(session::report(printer, &project.diagnostics));
    }
    let analysis = super::compile::analyze_compiled(&s, &selected, &project, env, (None, true));
    let errors = Diagnostics(analysis.diagnostics.iter().filter(|d| d.is_error()).cloned().collect());
    if errors.has_errors() {
        return Ok(session::report(printer, &errors));
    }
    let names = Names::of(&s.manifest);
    let (node, column) = match names.resolve(&args.column) {
        Ok(found) => found,
        Err(d) => return Ok(session::report(printer, &Diagnostics::from(d))),
    };
    let edges = if args.downstream { reversed(&analysis.lineage) } else { forward(&analysis.lineage) };
    let tree = walk(&edges, &(node, column), &mut Vec::new());
    match args.output {
        Output::Json => {
            printer.product(&serde_json::to_string_pretty(&json(&tree, &names)).unwrap_or_default());
        }
        Output::Text => {
            let mut lines = Vec::new();
            text(&tree, &names, 0, if args.downstream { "->" } else { "<-" }, &mut lines);
            printer.product(&lines.join("\n"));
        }
    }
    Ok(EXIT_OK)
}

/// (node, column) -> the (node, column, how) it reads, or that read it.
type Edges = BTreeMap<(String, String), Vec<(String, String, String)>>;

fn forward(lineage: &BTreeMap<String, NodeLineage>) -> Edges {
    let mut edges = Edges::new();
    for (node, l) in lineage {
        for (column, reads) in &l.columns {
            edges.insert((node.clone(), column.to_lowercase()), reads.iter().map(edge).collect());
        }
    }
    edges
}

fn reversed(lineage: &BTreeMap<String, NodeLineage>) -> Edges {
    let mut edges = Edges::new();
    for (node, l) in lineage {
        for (column, reads) in &l.columns {
            for r in reads {
                let (from, from_column, how) = edge(r);
                edges.entry((from, from_column.to_lowercase())).or_default().push((node.clone(), column.clone(), how));
            }
        }
    }
    edges
}

fn edge(r: &ColumnRead) -> (String, String, String) {
    (r.node.clone(), r.column.clone(), r.how.clone().unwrap_or_default())
}

/// One column and the columns it reads (or feeds), recursively.
struct Tree {
    node: String,
    column: String,
    how: Option<String>,
    next: Vec<Tree>,
}

fn walk(edges: &Edges, (node, column): &(String, String), path: &mut Vec<(String, String)>) -> Tree {
    let key = (node.clone(), column.to_lowercase());
    let mut next = Vec::new();
    if !path.contains(&key) {
        path.push(key.clone());
        for (n, c, how) in edges.get(&key).map(Vec::as_slice).unwrap_or(&[]) {
            let mut child = walk(edges, &(n.clone(), c.clone()), path);
            child.how = Some(how.clone());
            next.push(child);
        }
        path.pop();
    }
    Tree { node: node.clone(), column: column.clone(), how: None, next }
}

fn text(tree: &Tree, names: &Names, depth: usize, arrow: &str, lines: &mut Vec<String>) {
    let name = format!("{}.{}", names.display(&tree.node), tree.column);
    lines.push(match (&tree.how, depth) {
        (Some(how), d) if d > 0 => format!("{}{arrow} {name} ({how})", "  ".repeat(d)),
        _ => name,
    });
    for child in &tree.next {
        text(child, names, depth + 1, arrow, lines);
    }
}

fn json(tree: &Tree, names: &Names) -> serde_json::Value {
    serde_json::json!({
        "node": tree.node,
        "name": names.display(&tree.node),
        "column": tree.column,
        "how": tree.how,
        "next": tree.next.iter().map(|t| json(t, names)).collect::<Vec<_>>(),
    })
}

/// How nodes are named on the command line and in the output.
struct Names {
    /// unique id -> `name` (`source_name.table` for a source)
    display: HashMap<String, String>,
    /// lower-case name -> unique ids
    by_name: HashMap<String, Vec<String>>,
}

impl Names {
    fn of(manifest: &crate::parse::Manifest) -> Names {
        let mut display = HashMap::new();
        for n in manifest.nodes.values().filter(|n| n.is_refable() || crate::compile::has_sql(n)) {
            display.insert(n.unique_id.clone(), n.name.clone());
        }
        for src in manifest.sources.values() {
            display.insert(src.unique_id.clone(), format!("{}.{}", src.source_name, src.name));
        }
        let mut by_name: HashMap<String, Vec<String>> = HashMap::new();
        for (id, name) in &display {
            by_name.entry(name.to_lowercase()).or_default().push(id.clone());
            by_name.entry(id.to_lowercase()).or_default().push(id.clone());
        }
        Names { display, by_name }
    }

    fn display<'a>(&'a self, id: &'a str) -> &'a str {
        self.display.get(id).map_or(id, String::as_str)
    }

    /// `NODE.COLUMN` -> (unique id, column).
    fn resolve(&self, text: &str) -> Result<(String, String), Diagnostic> {
        let Some((node, column)) = text.rsplit_once('.') else {
            return Err(Diagnostic::error(Code::BadSelector, format!("`{text}` is not NODE.COLUMN"))
                .with_help("name a column of a model, seed, snapshot or source: `orders.amount`, `raw.payments.amount`"));
        };
        match self.by_name.get(&node.to_lowercase()).map(Vec::as_slice) {
            Some([one]) => Ok((one.clone(), column.to_string())),
            Some(many) => Err(Diagnostic::error(Code::BadSelector, format!("`{node}` names more than one node"))
                .with_help(format!("use a unique id: {}", many.join(", ")))),
            None => Err(Diagnostic::error(Code::BadSelector, format!("no model, seed, snapshot or source is named `{node}`"))
                .with_help_opt(did_you_mean(node, self.display.values().map(String::as_str)))),
        }
    }
}
