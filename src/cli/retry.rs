//! `kiln retry`: runs again what the last seed, run, build or test left failed.

use super::build::{RunArgs, Which, run_selected};
use super::printer::Printer;
use super::session::{self, Stop};
use super::{EXIT_OK, GlobalArgs};
use crate::diagnostics::{Code, Diagnostic, Diagnostics};
use serde_json::Value as Json;
use std::collections::{BTreeSet, HashMap};

#[derive(clap::Args, Debug)]
pub struct RetryArgs {
    /// Nodes built at once (default: as the run being retried, else the target's `threads`)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Stop at the first failure
    #[arg(short = 'x', long)]
    pub fail_fast: bool,
}

/// `kiln retry`: runs again the nodes that errored, failed or were skipped in the last `seed`,
/// `run`, `build` or `test` (from `target/run_results.json`), with its command, selection
/// flags, target and vars (unless given now), as `dbt retry` does.
pub fn run(global: &GlobalArgs, args: &RetryArgs, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    let located = match session::load(global, env, printer, "retry", Stop::Target) {
        Ok(s) => s,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let path = located.project.target_dir().join("run_results.json");
    let unreadable = |why: String| {
        Diagnostics::from(
            Diagnostic::error(Code::StateManifest, format!("nothing to retry: {why}"))
                .with_help("kiln retry runs again what the last `kiln seed`, `run`, `build` or `test` left failed"),
        )
    };
    let doc: Json =
        match std::fs::read_to_string(&path).map_err(|e| e.to_string()).and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string())) {
            Ok(doc) => doc,
            Err(e) => return Ok(session::report(printer, &unreadable(format!("cannot read {}: {e}", path.display())))),
        };
    let previous = &doc["args"];
    let which = match previous["which"].as_str() {
        Some("seed") => Which::Seed,
        Some("run") => Which::Run,
        Some("build") => Which::Build,
        Some("test") => Which::Test,
        Some("snapshot") => Which::Snapshot,
        other => {
            return Ok(session::report(printer, &unreadable(format!("the last run (`{}`) is not one kiln retries", other.unwrap_or("?")))));
        }
    };
    let failed: BTreeSet<String> = doc["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| matches!(r["status"].as_str(), Some("error" | "fail" | "skipped" | "runtime error")))
        .filter_map(|r| r["unique_id"].as_str().map(str::to_string))
        .collect();
    if failed.is_empty() {
        printer.info(&format!("Nothing to retry: the last `kiln {}` left no node failed or skipped", which.as_str()));
        return Ok(EXIT_OK);
    }
    let mut global = global.clone();
    let text = |k: &str| previous[k].as_str().map(str::to_string);
    global.target = global.target.or_else(|| text("target"));
    global.vars = global.vars.or_else(|| text("vars"));
    let run_args = RunArgs {
        select: super::SelectArgs::default(),
        threads: args.threads.or_else(|| previous["threads"].as_u64().map(|t| t as usize)),
        full_refresh: previous["full_refresh"].as_bool().unwrap_or(false),
        fail_fast: args.fail_fast,
        empty: previous["empty"].as_bool().unwrap_or(false),
        store_failures: previous["store_failures"].as_bool().unwrap_or(false),
        junit_xml: None,
        dry_run: false,
        event_time_start: None,
        event_time_end: None,
        static_analysis: None,
    };
    let flags = session::RunFlags {
        full_refresh: run_args.full_refresh,
        store_failures: run_args.store_failures,
        empty: run_args.empty,
        fail_fast: run_args.fail_fast,
    };
    let s = match session::load_with(&global, env, printer, which.as_str(), Stop::Graph, flags) {
        Ok(s) => s,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let selected: BTreeSet<String> =
        failed.into_iter().filter(|id| s.manifest.nodes.contains_key(id) || s.manifest.unit_tests.contains_key(id)).collect();
    printer.info(&format!("Retrying {} node(s) of the last `kiln {}`", selected.len(), which.as_str()));
    run_selected(&global, &run_args, which, s, selected, env, printer)
}
