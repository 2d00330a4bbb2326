//! `kiln seed`, `kiln run`, `kiln build` and `kiln show` on the embedded DataFusion engine.

use super::printer::{Paint, Printer};
use super::session::{self, Session, Stop};
use super::{EXIT_OK, EXIT_PROJECT, EXIT_USAGE, GlobalArgs, SelectArgs};
use crate::diagnostics::{Code, Diagnostic, Diagnostics};
use crate::engine::Engine;
use crate::engine::datafusion::lock::{self, WriterLock};
use crate::parse::ResourceType;
use crate::project::profiles::EngineKind;
use crate::project::typed::StaticAnalysis;
use crate::run::runner::{self, Event, Options, Runner, Status};
use serde_json::Value as Json;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Nodes built at once (default: the target's `threads`)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Rebuild incremental models (and reload seeds) from scratch
    #[arg(long)]
    pub full_refresh: bool,
    /// Stop at the first failure
    #[arg(short = 'x', long)]
    pub fail_fast: bool,
    /// Read zero rows from every ref() and source(): builds check SQL and schemas without data
    #[arg(long)]
    pub empty: bool,
    /// Keep the failing rows of every test (unless its `store_failures` config says otherwise) in
    /// a table of the `<schema>_dbt_test__audit` schema
    #[arg(long)]
    pub store_failures: bool,
    /// Also write the results as JUnit XML (one testcase per model, seed, data test, unit test)
    #[arg(long, value_name = "PATH")]
    pub junit_xml: Option<std::path::PathBuf>,
    /// Change nothing: the warehouse validates each model's and test's query and reports the
    /// bytes it would process and its columns (BigQuery dry-run jobs). Seeds are not loaded,
    /// hooks do not run, no artifacts are written
    #[arg(long)]
    pub dry_run: bool,
    /// Microbatch models build their batches from this time on (`2024-01-01` or
    /// `2024-01-01 06:00:00`, UTC) instead of `begin` or their lookback
    #[arg(long, value_name = "TIME")]
    pub event_time_start: Option<String>,
    /// Microbatch models build their batches up to this time (exclusive) instead of now
    #[arg(long, value_name = "TIME")]
    pub event_time_end: Option<String>,
    /// Static analysis before anything runs, in place of the nodes' `static_analysis` configs:
    /// a node it is certain is wrong fails without running (`baseline`); `strict` also warns of
    /// what cannot be typed; `off` skips it
    #[arg(long, value_name = "MODE", value_parser = ["strict", "baseline", "off"])]
    pub static_analysis: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Seed,
    Run,
    Build,
    Test,
    Snapshot,
}

impl Which {
    pub fn as_str(self) -> &'static str {
        match self {
            Which::Seed => "seed",
            Which::Run => "run",
            Which::Build => "build",
            Which::Test => "test",
            Which::Snapshot => "snapshot",
        }
    }
}

/// A command that changes the warehouse: it takes the local warehouse's writer lock.
pub struct Writes<'a> {
    /// What holds the lock, e.g. `kiln build` (other processes are told).
    pub command: &'a str,
    /// Where to say that it waits for another process.
    pub printer: &'a Printer,
}

/// Opens the target's engine, to read or (with `writes`) to change the warehouse; problems
/// with external sources and damaged tables come back as warnings.
pub fn open_engine(s: &Session, writes: Option<Writes>) -> Result<(Arc<dyn Engine>, Vec<Diagnostic>), Diagnostic> {
    let mut setup = crate::run::setup::engine_setup(&s.project, &s.manifest, &s.invocation.env_vars);
    if let Some(w) = &writes
        && s.target.engine() == EngineKind::DataFusion
    {
        setup.writer = Some(writer_lock(s, &warehouse_dir(s), w)?);
    }
    crate::engine::open(&s.target, setup)
}

/// Where the embedded engine keeps the target's warehouse.
pub fn warehouse_dir(s: &Session) -> std::path::PathBuf {
    s.target.warehouse_dir(&s.project.root)
}

/// The writer's lock of the local warehouse at `root`, waiting up to `KILN_LOCK_WAIT` seconds
/// (default 60) for another kiln process that holds it.
fn writer_lock(s: &Session, root: &std::path::Path, writes: &Writes) -> Result<WriterLock, Diagnostic> {
    let wait = s.invocation.env_vars.get(super::env::KILN_LOCK_WAIT).and_then(|v| v.parse::<u64>().ok()).unwrap_or(60);
    let waiting = |busy: &lock::Busy| writes.printer.info(&format!("{busy}; waiting up to {wait} s for it to finish"));
    match WriterLock::acquire(root, writes.command, std::time::Duration::from_secs(wait), &waiting) {
        Ok(Ok(lock)) => Ok(lock),
        Ok(Err(busy)) => Err(Diagnostic::error(Code::WarehouseBusy, busy.to_string()).with_help(
            "one kiln process writes a warehouse at a time (readers such as `kiln show` never wait); run this when it has finished, or set KILN_LOCK_WAIT to wait longer",
        )),
        Err(e) => Err(Diagnostic::error(Code::Io, format!("cannot lock the warehouse {}: {e}", root.display()))),
    }
}

/// How a node is named in progress lines: `schema.alias` for relations, the name for tests.
fn display_name(node: &crate::parse::Node) -> String {
    match node.resource_type {
        ResourceType::Test | ResourceType::UnitTest => node.name.clone(),
        _ => format!("{}.{}", node.schema, node.alias),
    }
}

/// Keeps the node kinds `which` runs.
pub fn retain_runnable(s: &Session, selected: &mut BTreeSet<String>, which: Which) {
    selected.retain(|id| match s.manifest.nodes.get(id).map(|n| n.resource_type) {
        Some(ResourceType::Seed) => matches!(which, Which::Seed | Which::Build),
        Some(ResourceType::Model) => matches!(which, Which::Run | Which::Build),
        Some(ResourceType::Snapshot) => matches!(which, Which::Snapshot | Which::Build),
        Some(ResourceType::Test) => matches!(which, Which::Test | Which::Build),
        Some(_) => false,
        None => s.manifest.unit_tests.contains_key(id) && matches!(which, Which::Test | Which::Build),
    });
}

/// Prints the warnings of opening the engine: about external sources only when `selected`
/// reads them, any other always.
pub fn print_source_warnings(s: &Session, selected: &BTreeSet<String>, warnings: &[Diagnostic], printer: &Printer) {
    let used: BTreeSet<&String> = selected.iter().flat_map(|id| s.graph.parents.get(id).into_iter().flatten()).collect();
    let about = |w: &Diagnostic, src: &crate::parse::SourceNode| w.message.contains(&format!("`{}.{}`", src.source_name, src.name));
    for w in warnings.iter().filter(|w| {
        let sources: Vec<_> = s.manifest.sources.values().filter(|src| about(w, src)).collect();
        sources.is_empty() || sources.iter().any(|src| used.contains(&src.unique_id))
    }) {
        printer.diagnostic(w);
    }
}

/// Prints one finished node: a line (text) or a `node_finished` event (JSON); failures with
/// their message.
pub fn print_event(printer: &Printer, e: Event) {
    if let Event::Started { node, index, total } = e {
        printer.status(&format!("[{index}/{total}] running {} ...", display_name(node)));
    }
    let Event::Finished { node, result, index, total } = e else { return };
    if printer.format == super::printer::LogFormat::Json {
        printer.json_line(&serde_json::json!({
            "event": "node_finished",
            "unique_id": node.unique_id,
            "resource_type": node.resource_type.as_str(),
            "status": result.status.as_str(),
            "code": result.code.map(|c| c.as_str()),
            "file": node.original_file_path,
            "line": node.line,
            "message": crate::run::results::text(result),
            "rows": result.rows,
            "failures": result.failures,
            "execution_time": result.seconds,
            "index": index,
            "total": total,
        }));
        return;
    }
    let what = match node.resource_type {
        ResourceType::Seed => "seed".to_string(),
        ResourceType::Test => "test".to_string(),
        ResourceType::UnitTest => "unit test".to_string(),
        _ => node.materialized().to_string(),
    };
    let (status, paint) = match result.status {
        Status::Success => ("OK", Paint::Green),
        Status::Error => ("ERROR", Paint::Red),
        Status::Skipped => ("SKIP", Paint::Yellow),
        Status::Pass => ("PASS", Paint::Green),
        Status::Warn => ("WARN", Paint::Yellow),
        Status::Fail => ("FAIL", Paint::Red),
    };
    let label = format!("{index} of {total} {} {what:<11} {}", printer.paint(&format!("{status:<5}"), paint), display_name(node));
    let count = result.failures.filter(|_| node.resource_type == ResourceType::Test).map(|n| format!(" {n}")).unwrap_or_default();
    let detail = match result.status {
        Status::Success => format!("[{} in {:.2}s]", result.message, result.seconds),
        Status::Skipped => match result.message.strip_prefix("skipped: ") {
            Some(why) => format!("[SKIP: {why}]"),
            None => "[SKIP]".to_string(),
        },
        Status::Pass => format!("[PASS in {:.2}s]", result.seconds),
        _ => format!("[{status}{count} in {:.2}s]", result.seconds),
    };
    // Colour codes do not count towards the dotted width.
    let dots = 72usize.saturating_sub(format!("{index} of {total} {status:<5} {what:<11} {}", display_name(node)).chars().count());
    printer.info(&format!("{label}{} {detail}", ".".repeat(dots)));
    match result.status {
        Status::Error | Status::Fail => {
            printer.error_coded(result.code, &format!("{} failed:\n{}", node.unique_id, crate::run::results::text(result)))
        }
        Status::Warn => printer.warn(&format!("{}: {}", node.unique_id, result.message)),
        _ => {}
    }
}

/// dbt's recap after a run: every error, failure and warning again, with its file, so the end of
/// a long log says what went wrong.
pub fn print_recap(s: &Session, done: &Executed, printer: &Printer) {
    let (_, warn, error, _) = done.counts();
    if printer.format == super::printer::LogFormat::Json || error + warn == 0 {
        return;
    }
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    printer.info(&format!("\nCompleted with {} and {}:", plural(error, "error"), plural(warn, "warning")));
    for r in done.results.iter().filter(|r| matches!(r.status, Status::Error | Status::Fail | Status::Warn)) {
        let Some(node) = s.manifest.nodes.get(&r.unique_id).or_else(|| s.manifest.unit_tests.get(&r.unique_id)) else { continue };
        let what = if r.status == Status::Warn { "Warning in" } else { "Failure in" };
        let text = format!(
            "{what} {} {} ({})\n  {}",
            node.resource_type.as_str(),
            node.name,
            node.original_file_path,
            crate::run::results::text(r).replace('\n', "\n  ")
        );
        if r.status == Status::Warn { printer.warn(&text) } else { printer.error_coded(r.code, &text) }
    }
}

/// `--event-time-start` / `--event-time-end`, read.
fn event_time_range(args: &RunArgs) -> Result<(Option<time::OffsetDateTime>, Option<time::OffsetDateTime>), Diagnostic> {
    let read = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(crate::run::microbatch::parse_time)
            .transpose()
            .map_err(|m| Diagnostic::error(Code::InvalidValue, format!("--{flag}: {m}")))
    };
    let range = (read("event-time-start", &args.event_time_start)?, read("event-time-end", &args.event_time_end)?);
    if let (Some(start), Some(end)) = range
        && start >= end
    {
        return Err(Diagnostic::error(Code::InvalidValue, "--event-time-start must be before --event-time-end"));
    }
    Ok(range)
}

/// A dry run's report: each model's bytes and columns as the warehouse reports them, and the
/// total (tests are counted in the total).
fn print_dry_run(s: &Session, done: &Executed, printer: &Printer) {
    let mut lines = vec![String::new(), "Dry run (nothing was changed):".to_string()];
    let mut total = 0;
    for r in &done.results {
        let Some(response) = &r.response else { continue };
        let bytes = response.get("bytes_processed").and_then(Json::as_u64).unwrap_or(0);
        total += bytes;
        let Some(node) = s.manifest.nodes.get(&r.unique_id).filter(|n| n.resource_type != ResourceType::Test) else { continue };
        let columns: Vec<String> = response
            .get("columns")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .map(|c| format!("{} {}", c["name"].as_str().unwrap_or(""), c["data_type"].as_str().unwrap_or("")))
            .collect();
        lines.push(format!("  {:<40} {:>10}  ({})", display_name(node), runner::human_bytes(bytes), columns.join(", ")));
    }
    lines.push(format!("  total: {} to be processed", runner::human_bytes(total)));
    if printer.format == super::printer::LogFormat::Json {
        printer.json_line(&serde_json::json!({"event": "dry_run", "bytes_processed": total}));
        return;
    }
    for l in lines {
        printer.info(&l);
    }
}

/// The bytes the warehouse processed, when it reports them (BigQuery).
fn print_bytes(done: &Executed, printer: &Printer) {
    let reported: Vec<u64> = done
        .results
        .iter()
        .filter(|r| r.response.as_ref().is_some_and(|m| !m.contains_key("dry_run")))
        .filter_map(|r| r.response.as_ref()?.get("bytes_processed")?.as_u64())
        .collect();
    if !reported.is_empty() {
        printer.info(&format!("Processed {} in the warehouse.", runner::human_bytes(reported.iter().sum())));
    }
}

/// What one execution did.
pub struct Executed {
    pub results: Vec<runner::NodeResult>,
    pub hook_failed: bool,
    pub elapsed: f64,
    /// Planned nodes that never got a result (a bug in kiln: exit 2).
    pub unfinished: Vec<String>,
}

impl Executed {
    /// (passed, warned, failed, skipped)
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let count = |st: &[Status]| self.results.iter().filter(|r| st.contains(&r.status)).count();
        (count(&[Status::Success, Status::Pass]), count(&[Status::Warn]), count(&[Status::Error, Status::Fail]), count(&[Status::Skipped]))
    }
}

/// Runs `selected` on `engine` in dependency order, between the project's on-run-start and
/// on-run-end hooks, printing each node as it finishes.
pub fn execute(s: &Session, engine: &Arc<dyn Engine>, selected: &BTreeSet<String>, options: Options, printer: &Printer) -> Executed {
    *s.jinja.shared.runner.write().unwrap_or_else(|e| e.into_inner()) =
        Arc::new(runner::EngineQueries(engine.clone(), s.target.quote_char()));
    let runner = Runner {
        project: &s.project,
        jinja: &s.jinja,
        manifest: &s.manifest,
        graph: &s.graph,
        resolver: super::compile::resolver(s),
        engine: engine.clone(),
        lookup: s.lookup.clone(),
        options,
        unit_schemas: Default::default(),
    };
    let started = std::time::Instant::now();
    // dbt runs the hooks of every package for seed, run, test, build and snapshot.
    s.jinja.set_selected(selected);
    // A dry run changes nothing: the project's hooks do not run.
    let hooks =
        |key: &str, results: &[runner::NodeResult]| if runner.options.dry_run { vec![] } else { runner.project_hooks(key, results) };
    let mut results = hooks("on-run-start", &[]);
    print_hooks(printer, &results);
    let start_failed = results.iter().any(|r| r.status == Status::Error);
    let mut unfinished = vec![];
    if !start_failed {
        match runner.run(selected, &|e| print_event(printer, e)) {
            Ok(nodes) => results.extend(nodes),
            Err(runner::Unfinished(nodes)) => {
                printer.diagnostic(
                    &Diagnostic::error(
                        Code::Internal,
                        format!("internal error: {} selected node(s) never ran: {}", nodes.len(), nodes.join(", ")),
                    )
                    .with_help("this is a bug in kiln's scheduler; please report it with the project's dbt_project.yml and the command"),
                );
                unfinished = nodes;
            }
        }
    }
    let end = if start_failed { vec![] } else { hooks("on-run-end", &results) };
    print_hooks(printer, &end);
    let hook_failed = start_failed || end.iter().any(|r| r.status == Status::Error);
    results.extend(end);
    Executed { results, hook_failed, elapsed: started.elapsed().as_secs_f64(), unfinished }
}

/// Prints the project hooks' results as dbt does (`1 of 1 OK hook: shop.on-run-start.0`).
fn print_hooks(printer: &Printer, results: &[runner::NodeResult]) {
    for (i, r) in results.iter().enumerate() {
        let name = r.message.strip_suffix(" passed").unwrap_or(&r.unique_id);
        if printer.format == super::printer::LogFormat::Json {
            printer.json_line(
                &serde_json::json!({"event": "hook_finished", "unique_id": r.unique_id, "status": r.status.as_str(), "message": r.message}),
            );
            continue;
        }
        let (status, paint) = if r.status == Status::Success { ("OK", Paint::Green) } else { ("ERROR", Paint::Red) };
        let label = format!("{} of {} {} hook: {name}", i + 1, results.len(), printer.paint(status, paint));
        printer.info(&format!("{label} [{status} in {:.2}s]", r.seconds));
        if r.status == Status::Error {
            printer.error(&r.message);
        }
    }
}

/// Writes what a run leaves behind: the executed SQL under target/run/, run_results.json, the
/// manifest with the SQL that ran, and (if asked) JUnit XML.
pub fn write_artifacts(s: &Session, done: &Executed, args: &Json, junit_xml: Option<&std::path::Path>) -> anyhow::Result<()> {
    let name = args["which"].as_str().unwrap_or("build");
    let results = &done.results;
    let target = s.project.target_dir();
    for r in results {
        if let (Some(sql), Some(node)) = (&r.compiled, s.manifest.nodes.get(&r.unique_id)) {
            let path = s.project.root.join(crate::run::artifacts::artifact_path(&s.project, node, "run"));
            let _ = session::write_atomic_with(&path, |w| std::io::Write::write_all(w, s.jinja.shared.scrub(sql).as_bytes()));
        }
    }
    let doc = crate::run::results::run_results(results, &s.invocation.invocation_id, done.elapsed, args.clone(), &|t| {
        s.jinja.shared.scrub(t).into_owned()
    });
    session::write_atomic_with(&target.join("run_results.json"), |w| serde_json::to_writer(w, &doc).map_err(std::io::Error::other))?;
    // The manifest carries the SQL that ran.
    let compiled: HashMap<String, crate::compile::Compiled> = results
        .iter()
        .filter_map(|r| {
            r.compiled.as_ref().map(|sql| {
                (r.unique_id.clone(), crate::compile::Compiled { sql: sql.clone(), rendered: sql.clone(), ..Default::default() })
            })
        })
        .collect();
    super::compile::write_manifest(s, &compiled)?;
    if let Some(path) = junit_xml {
        let path = if path.is_absolute() { path.to_path_buf() } else { s.project.root.join(path) };
        let xml = crate::run::junit::render(name, results, &s.manifest, done.elapsed, &|t| s.jinja.shared.scrub(t).into_owned());
        session::write_atomic_with(&path, |w| std::io::Write::write_all(w, xml.as_bytes()))?;
    }
    Ok(())
}

pub fn run(global: &GlobalArgs, args: &RunArgs, which: Which, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    let name = which.as_str();
    let flags = session::RunFlags {
        full_refresh: args.full_refresh,
        store_failures: args.store_failures,
        empty: args.empty,
        fail_fast: args.fail_fast,
    };
    let s = match session::load_with(global, env, printer, name, Stop::Graph, flags) {
        Ok(s) => s,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let selected = match session::selection(&s, &args.select) {
        Ok(sel) => sel,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    run_selected(global, args, which, s, selected, env, printer)
}

/// The arguments of a run as `run_results.json` records them (`args`), which `kiln retry`
/// reads back.
pub(super) fn recorded_args(global: &GlobalArgs, args: &RunArgs, which: Which) -> Json {
    serde_json::json!({
        "which": which.as_str(),
        "select": args.select.select,
        "exclude": args.select.exclude,
        "selector": args.select.selector,
        "resource_type": args.select.resource_type,
        "full_refresh": args.full_refresh,
        "store_failures": args.store_failures,
        "empty": args.empty,
        "threads": args.threads,
        "target": global.target,
        "vars": global.vars,
    })
}

/// Runs `selected` of the loaded session `s` as command `which`.
pub(super) fn run_selected(
    global: &GlobalArgs,
    args: &RunArgs,
    which: Which,
    mut s: Session,
    mut selected: BTreeSet<String>,
    env: &HashMap<String, String>,
    printer: &mut Printer,
) -> anyhow::Result<i32> {
    let name = which.as_str();
    retain_runnable(&s, &mut selected, which);
    let command = format!("kiln {name}");
    let engine = match open_engine(&s, Some(Writes { command: &command, printer })) {
        Ok((e, warnings)) => {
            print_source_warnings(&s, &selected, &warnings, printer);
            e
        }
        Err(d) => return Ok(session::report(printer, &Diagnostics::from(d))),
    };
    if args.dry_run && !engine.supports(crate::engine::Capability::DryRun) {
        let d = Diagnostic::error(
            Code::Unsupported,
            format!("--dry-run needs a warehouse that validates queries without running them; the {} target cannot", s.target.adapter_type),
        )
        .with_help("use a BigQuery target, or `kiln build --empty` to check SQL and schemas on zero rows");
        return Ok(session::report(printer, &Diagnostics::from(d)));
    }
    match session::deferred(&s, &args.select, &selected, &|r| engine.describe(r).ok().flatten().is_some()) {
        Ok(deferred) if deferred.is_empty() => {}
        Ok(deferred) => {
            printer.info(&format!("Deferring {} node(s) that are not selected to the relations of the --state run", deferred.len()));
            s.deferred = deferred;
        }
        Err(d) => return Ok(session::report(printer, &d)),
    }
    let s = s;
    // Ctrl-C or SIGTERM: the first stops scheduling and cancels the running queries (their
    // tables keep their previous version, the rest are skipped, artifacts are written, exit
    // 130); a second one exits at once (a table being written still keeps its previous version).
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    engine.cancel_on(cancel.clone());
    {
        let cancel = cancel.clone();
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, std::sync::atomic::Ordering::SeqCst) {
                std::process::exit(super::EXIT_INTERRUPTED);
            }
            eprintln!("interrupted: stopping the running nodes (their tables keep their previous version); Ctrl-C again to exit at once");
        });
    }
    printer.info(&format!(
        "Running with kiln {} on target `{}` ({}): {}",
        env!("CARGO_PKG_VERSION"),
        s.target.name,
        s.target.adapter_type,
        super::compile::summary(&s, &selected)
    ));
    let event_time = match event_time_range(args) {
        Ok(range) => range,
        Err(d) => return Ok(session::report(printer, &Diagnostics::from(d))),
    };
    printer.phase("open");
    let rejected =
        super::compile::preflight(&s, &selected, StaticAnalysis::parse_flag(args.static_analysis.as_deref()), env, None, printer);
    printer.phase("analyze");
    let options = Options {
        event_time,
        threads: args.threads.unwrap_or(s.target.threads),
        full_refresh: args.full_refresh,
        fail_fast: args.fail_fast,
        store_failures: args.store_failures,
        cancel: cancel.clone(),
        dry_run: args.dry_run,
        rejected,
    };
    let done = execute(&s, &engine, &selected, options, printer);
    if args.dry_run {
        print_dry_run(&s, &done, printer);
    } else {
        write_artifacts(&s, &done, &recorded_args(global, args, which), args.junit_xml.as_deref())?;
    }
    print_recap(&s, &done, printer);
    print_bytes(&done, printer);
    let (pass, warn, error, skip) = done.counts();
    printer.info(&format!(
        "Finished in {:.2}s. PASS={pass} WARN={warn} ERROR={error} SKIP={skip} TOTAL={}",
        done.elapsed,
        done.results.len()
    ));
    if cancel.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(super::EXIT_INTERRUPTED);
    }
    if !done.unfinished.is_empty() {
        return Ok(EXIT_USAGE);
    }
    Ok(if error > 0 || done.hook_failed { EXIT_PROJECT } else { EXIT_OK })
}

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// The model (or seed) to show
    #[arg(short = 's', long = "select", value_name = "NAME")]
    pub select: Option<String>,
    /// A query to run instead (Jinja and ref() allowed)
    #[arg(long, value_name = "SQL")]
    pub inline: Option<String>,
    /// Rows to show
    #[arg(long, default_value_t = 5)]
    pub limit: usize,
    /// Output as a text table or JSON
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: ShowOutput,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowOutput {
    Table,
    Json,
}

pub fn show(global: &GlobalArgs, args: &ShowArgs, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    let s = match session::load(global, env, printer, "show", Stop::Graph) {
        Ok(s) => s,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let engine = match open_engine(&s, None) {
        Ok((e, _)) => e,
        Err(d) => return Ok(session::report(printer, &Diagnostics::from(d))),
    };
    let resolver = super::compile::resolver(&s);
    // `run_query` and `adapter.*` in what is shown reach the warehouse.
    *s.jinja.shared.runner.write().unwrap_or_else(|e| e.into_inner()) =
        Arc::new(runner::EngineQueries(engine.clone(), s.target.quote_char()));
    let sql = match (&args.inline, &args.select) {
        (Some(sql), _) => {
            let node = crate::parse::new_node_inline(&s.project, sql);
            match crate::compile::render_node(&s.project, &s.jinja, &node, &resolver, false) {
                Ok(sql) => sql,
                Err(d) => return Ok(session::report(printer, &Diagnostics::from(d))),
            }
        }
        (None, Some(name)) => {
            let call = crate::jinja::context::RefCall { package: None, name: name.clone(), version: None };
            match s.lookup.resolve_ref(s.project.name(), &call).and_then(|id| s.manifest.nodes.get(id)) {
                // As `dbt show`: the model's SQL as it is now (edited, never built or ephemeral),
                // run against its parents.
                Some(node) if node.resource_type == ResourceType::Model => match current_sql(&s, &engine, &resolver, node) {
                    Ok(sql) => sql,
                    Err(d) => return Ok(session::report(printer, &d)),
                },
                Some(node) => format!("select * from {}", node.relation(s.target.quote_char()).render()),
                None => {
                    printer.diagnostic(&Diagnostic::error(Code::MissingRef, format!("no model, seed or snapshot named `{name}`")));
                    return Ok(EXIT_PROJECT);
                }
            }
        }
        (None, None) => {
            printer.diagnostic(&Diagnostic::error(Code::BadSelector, "kiln show needs -s MODEL or --inline SQL"));
            return Ok(EXIT_USAGE);
        }
    };
    let table = match engine.query(&sql, Some(args.limit)) {
        Ok(t) => t,
        Err(e) => {
            printer.diagnostic(&Diagnostic::error(Code::SqlSyntax, format!("query failed: {e}")).with_note(sql));
            return Ok(EXIT_PROJECT);
        }
    };
    match args.output {
        ShowOutput::Json => {
            for row in &table.rows {
                let obj: serde_json::Map<String, Json> = table.columns.iter().cloned().zip(row.iter().cloned()).collect();
                printer.product_json(&Json::Object(obj));
            }
        }
        ShowOutput::Table => {
            for line in text_table(&table.columns, &table.rows) {
                if !printer.product(&line) {
                    break;
                }
            }
        }
    }
    Ok(EXIT_OK)
}

/// A model's SQL compiled now, with its ephemeral parents inlined.
fn current_sql(
    s: &Session,
    engine: &Arc<dyn Engine>,
    resolver: &Arc<dyn crate::jinja::Resolver>,
    node: &crate::parse::Node,
) -> Result<String, Diagnostics> {
    let selected: BTreeSet<String> = [node.unique_id.clone()].into();
    let exists =
        |n: &crate::parse::Node| n.materialized() == "incremental" && engine.describe(&runner::relation_name(n)).ok().flatten().is_some();
    let mut diags = Vec::new();
    let mut compiled = crate::compile::compile(&s.project, &s.jinja, &s.manifest, &s.graph, resolver, &selected, &exists, &mut diags);
    if !diags.is_empty() {
        return Err(Diagnostics(diags));
    }
    compiled
        .remove(&node.unique_id)
        .map(|c| c.sql)
        .ok_or_else(|| Diagnostic::error(Code::Internal, format!("`{}` did not compile", node.name)).into())
}

fn cell(v: &Json) -> String {
    match v {
        Json::Null => "NULL".into(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A plain-text table: header, separator, rows.
pub fn text_table(columns: &[String], rows: &[Vec<Json>]) -> Vec<String> {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(cell).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r.get(i).map_or(0, |s| s.chars().count())).max().unwrap_or(0).max(c.chars().count()))
        .collect();
    let fmt_row = |vals: Vec<&str>| -> String {
        vals.iter().enumerate().map(|(i, v)| format!("{v:<w$}", w = widths[i])).collect::<Vec<_>>().join(" | ").trim_end().to_string()
    };
    let mut out = vec![fmt_row(columns.iter().map(String::as_str).collect())];
    out.push(widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-"));
    for r in &cells {
        out.push(fmt_row(r.iter().map(String::as_str).collect()));
    }
    out
}
