//! `kiln ls`: list selected nodes.

use super::printer::Printer;
use super::session::{self, Stop};
use super::{EXIT_OK, GlobalArgs, SelectArgs};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// dbt's selector form: `pkg.folder.model`, `source:pkg.src.table`, ...
    Selector,
    /// Node names
    Name,
    /// File paths
    Path,
    /// One JSON object per node
    Json,
}

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value = "selector")]
    pub output: Output,
    /// Keys of each JSON object (with --output json)
    #[arg(long, num_args = 1.., value_name = "KEY")]
    pub output_keys: Vec<String>,
}

pub fn run(global: &GlobalArgs, args: &LsArgs, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    let s = match session::load(global, env, printer, "list", Stop::Graph) {
        Ok(s) => s,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let mut selected = match session::selection(&s, &args.select) {
        Ok(sel) => sel,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    if args.select.defer || args.select.favor_state {
        printer.warn("--defer changes what ref() reads when nodes are built or compiled; kiln ls lists and ignores it");
    }
    // As `dbt ls`: analyses only when asked for by resource type.
    if args.select.resource_type.is_empty() {
        selected.retain(|id| s.manifest.nodes.get(id).is_none_or(|n| n.resource_type != crate::parse::ResourceType::Analysis));
    }
    // Inferred columns, when asked for: static analysis of the selection (and what it reads).
    let wants_columns = args.output == Output::Json && args.output_keys.iter().any(|k| k == "columns");
    let inferred = if wants_columns { super::compile::inferred_columns(&s, &selected, env) } else { HashMap::new() };
    // Only when asked for: dbt's default keys do not include them.
    let with_columns = |mut v: serde_json::Value, id: &str, declared| {
        if wants_columns {
            v["columns"] = crate::run::artifacts::columns_json(declared, inferred.get(id).map(Vec::as_slice));
        }
        v
    };
    let mut lines = Vec::new();
    for id in &selected {
        let line = if let Some(src) = s.manifest.sources.get(id) {
            match args.output {
                Output::Selector => {
                    format!("source:{}.{}.{}", src.package, src.source_name, src.name)
                }
                Output::Name => format!("{}.{}", src.source_name, src.name),
                Output::Path => s.project.files[src.file].original_path.clone(),
                Output::Json => json_line(
                    with_columns(
                        serde_json::json!({"name": src.name, "resource_type": "source", "package_name": src.package, "source_name": src.source_name,
                            "unique_id": src.unique_id, "original_file_path": s.project.files[src.file].original_path, "tags": src.tags, "config": src.config}),
                        id,
                        &src.columns,
                    ),
                    &args.output_keys,
                ),
            }
        } else if let Some(n) = s.manifest.nodes.get(id).or_else(|| s.manifest.exposures.get(id)).or_else(|| s.manifest.unit_tests.get(id))
        {
            match args.output {
                Output::Selector => match n.resource_type {
                    crate::parse::ResourceType::Exposure => format!("exposure:{}", n.fqn.join(".")),
                    crate::parse::ResourceType::UnitTest => {
                        format!("unit_test:{}", n.fqn.join("."))
                    }
                    _ => n.fqn.join("."),
                },
                Output::Name => n.name.clone(),
                Output::Path => n.original_file_path.clone(),
                Output::Json => json_line(
                    with_columns(
                        serde_json::json!({"name": n.name, "resource_type": n.resource_type.as_str(), "package_name": n.package,
                            "original_file_path": n.original_file_path, "unique_id": n.unique_id, "alias": n.alias, "tags": n.tags(),
                            "config": n.config, "depends_on": {"nodes": s.graph.parents.get(id).cloned().unwrap_or_default(), "macros": n.macros}}),
                        id,
                        &n.columns,
                    ),
                    &args.output_keys,
                ),
            }
        } else {
            continue;
        };
        lines.push(line);
    }
    lines.sort();
    for l in &lines {
        if !printer.product(l) {
            break;
        }
    }
    Ok(EXIT_OK)
}

fn json_line(v: serde_json::Value, keys: &[String]) -> String {
    if keys.is_empty() {
        return v.to_string();
    }
    let filtered: serde_json::Map<String, serde_json::Value> =
        keys.iter().filter_map(|k| v.get(k).map(|x| (k.clone(), x.clone()))).collect();
    serde_json::Value::Object(filtered).to_string()
}
