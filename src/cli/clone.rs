//! `kiln clone`: a previous run's relations, readable in the target.

use super::build::{Executed, Writes, open_engine, write_artifacts};
use super::printer::Printer;
use super::session::{self, Stop};
use super::{EXIT_OK, EXIT_PROJECT, GlobalArgs};
use crate::diagnostics::{Code, Diagnostics};
use crate::run::runner::{self, Status};
use std::collections::HashMap;

#[derive(clap::Args, Debug)]
pub struct CloneArgs {
    #[command(flatten)]
    pub select: super::SelectArgs,
    /// Replace relations that already exist in the target
    #[arg(long)]
    pub full_refresh: bool,
}

/// `kiln clone --state DIR`: makes each selected model, seed and snapshot of the state run
/// readable in the target, as a view of the state's relation (dbt-postgres' clone; on the
/// embedded engine a view reads the same files, nothing is copied). A relation that exists in
/// the target is kept unless `--full-refresh`.
pub fn run(global: &GlobalArgs, args: &CloneArgs, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    let s = match session::load(global, env, printer, "clone", Stop::Graph) {
        Ok(s) => s,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let mut selected = match session::selection(&s, &args.select) {
        Ok(sel) => sel,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    selected.retain(|id| s.manifest.nodes.get(id).is_some_and(|n| n.is_refable() && !n.is_ephemeral()));
    let engine = match open_engine(&s, Some(Writes { command: "kiln clone", printer })) {
        Ok((e, _)) => e,
        Err(d) => return Ok(session::report(printer, &Diagnostics::from(d))),
    };
    let state = match session::state_manifest(&s, args.select.state.as_deref(), "kiln clone copies the relations of a previous run") {
        Ok(m) => m,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let started = std::time::Instant::now();
    let quote = s.target.quote_char();
    let total = selected.len();
    let mut results = Vec::new();
    for (i, id) in selected.iter().enumerate() {
        let node = &s.manifest.nodes[id];
        let here = runner::relation_name(node);
        let (status, message) = match state.relation(id).as_ref() {
            None => (Status::Skipped, "not in the --state run".to_string()),
            Some(_) if !args.full_refresh && engine.describe(&here).ok().flatten().is_some() => {
                (Status::Success, "exists in the target; kept (--full-refresh replaces it)".to_string())
            }
            Some(there) if *there == here => (Status::Success, "the state's relation is the target's".to_string()),
            Some(there) => {
                let from = crate::jinja::relation::Relation::new(&there.database, &there.schema, &there.name, quote).render();
                let view = crate::engine::Materialization::view(format!("select * from {from}"));
                match engine.create_schema(&here.database, &here.schema).and_then(|_| engine.materialize(&here, &view, &[])) {
                    Ok(_) => (Status::Success, format!("CLONE of {from}")),
                    Err(e) => (Status::Error, e.message),
                }
            }
        };
        printer.info(&format!("{} of {total} {} clone {}.{}", i + 1, status.as_str().to_uppercase(), node.schema, node.alias));
        if status == Status::Error {
            printer.error_coded(Some(Code::QueryFailed), &format!("{id} failed:\n{message}"));
        }
        let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        results.push(runner::NodeResult {
            unique_id: id.clone(),
            status,
            message,
            rows: None,
            seconds: 0.0,
            started_at: now.clone(),
            completed_at: now,
            thread: 0,
            compiled: None,
            relation: Some(node.relation(quote).render()),
            failures: None,
            code: (status == Status::Error).then_some(Code::QueryFailed),
            diagnostic: None,
            response: None,
        });
    }
    let done = Executed { results, hook_failed: false, elapsed: started.elapsed().as_secs_f64(), unfinished: vec![] };
    write_artifacts(&s, &done, &serde_json::json!({"which": "clone"}), None)?;
    let (pass, _, error, skip) = done.counts();
    printer.info(&format!("Finished in {:.2}s. PASS={pass} ERROR={error} SKIP={skip} TOTAL={total}", done.elapsed));
    Ok(if error > 0 { EXIT_PROJECT } else { EXIT_OK })
}
