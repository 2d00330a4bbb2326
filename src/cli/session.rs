//! Loading a project for a command: the options from the command line, [`Session::load`], and
//! its warnings printed.

use super::GlobalArgs;
use super::printer::Printer;
use crate::diagnostics::{Code, Diagnostic, Diagnostics};
use crate::session::{LoadObserver, LoadOptions};
pub use crate::session::{Reuse, RunFlags, Session, Stop, parse_yaml_mapping};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub fn project_dir(global: &GlobalArgs) -> PathBuf {
    global.project_dir.clone().unwrap_or_else(|| PathBuf::from("."))
}

pub fn load(
    global: &GlobalArgs,
    env: &HashMap<String, String>,
    printer: &mut Printer,
    which: &str,
    stop: Stop,
) -> Result<Session, Diagnostics> {
    load_with(global, env, printer, which, stop, RunFlags::default())
}

pub fn load_with(
    global: &GlobalArgs,
    env: &HashMap<String, String>,
    printer: &mut Printer,
    which: &str,
    stop: Stop,
    flags: RunFlags,
) -> Result<Session, Diagnostics> {
    load_reusing(global, env, printer, which, stop, flags, None)
}

/// Loads the project as `global` says, reusing `reuse` (watch mode); prints the warnings and
/// template logs.
pub fn load_reusing(
    global: &GlobalArgs,
    env: &HashMap<String, String>,
    printer: &mut Printer,
    which: &str,
    stop: Stop,
    flags: RunFlags,
    reuse: Option<&mut Reuse>,
) -> Result<Session, Diagnostics> {
    let options = LoadOptions {
        project_dir: project_dir(global),
        profiles_dir: global.profiles_dir.clone(),
        profile: global.profile.clone(),
        target: global.target.clone(),
        vars: global.vars.clone(),
        memory_limit: global.memory_limit.clone(),
        which,
        stop,
        flags,
    };
    let (session, warnings) = Session::load(&options, env, reuse, printer)?;
    for d in warnings.iter() {
        printer.diagnostic(d);
    }
    printer.template_logs(session.jinja.shared.take_logs());
    Ok(session)
}

impl LoadObserver for Printer {
    fn secrets(&mut self, values: Vec<String>) {
        self.add_secrets(values);
    }

    fn phase(&mut self, name: &str) {
        Printer::phase(self, name);
    }
}

/// Prints every diagnostic and a summary; returns exit code 1.
pub fn report(printer: &Printer, diags: &Diagnostics) -> i32 {
    for d in diags.iter() {
        printer.diagnostic(d);
    }
    let n = diags.error_count();
    if n > 0 {
        printer.info(&format!("{n} error{} found", if n == 1 { "" } else { "s" }));
    }
    super::EXIT_PROJECT
}

/// Writes `path` atomically: `write` fills a temp file next to it, which is then renamed over
/// `path`, so readers see the old file or the new one, never half of one.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
    let result = write(&mut w).and_then(|()| std::io::Write::flush(&mut w));
    drop(w);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)
}

/// Applies `--select`/`--exclude`/`--selector`/`--resource-type` (default: the selector marked
/// `default: true` in selectors.yml, else everything).
pub fn selection(session: &Session, args: &super::SelectArgs) -> Result<std::collections::BTreeSet<String>, Diagnostics> {
    use crate::graph::select;
    use crate::parse::ResourceType;
    let mut select_expr = select::parse_cli(&args.select).map_err(Diagnostics::from)?;
    let exclude_expr = select::parse_cli(&args.exclude).map_err(Diagnostics::from)?;
    let selectors_path = session.project.root.join("selectors.yml");
    let selectors = match std::fs::read_to_string(&selectors_path) {
        Ok(text) => select::parse_selectors_file(&text, "selectors.yml").map_err(Diagnostics::from)?,
        Err(_) => Vec::new(),
    };
    if let Some(name) = &args.selector {
        let Some((_, expr, _)) = selectors.iter().find(|(n, _, _)| n == name) else {
            let names: Vec<&str> = selectors.iter().map(|(n, _, _)| n.as_str()).collect();
            return Err(Diagnostic::error(Code::UnknownSelector, format!("selector `{name}` is not defined in selectors.yml"))
                .with_help(crate::diagnostics::did_you_mean(name, names.iter().copied()).unwrap_or_else(|| {
                    if names.is_empty() {
                        "selectors.yml defines no selectors".into()
                    } else {
                        format!("defined selectors: {}", names.join(", "))
                    }
                }))
                .into());
        };
        select_expr = Some(match select_expr {
            Some(e) => select::SelExpr::Intersection(vec![e, expr.clone()]),
            None => expr.clone(),
        });
    } else if select_expr.is_none()
        && let Some((_, expr, _)) = selectors.iter().find(|(_, _, default)| *default)
    {
        select_expr = Some(expr.clone());
    }
    let mut types = Vec::new();
    for t in &args.resource_type {
        match ResourceType::parse(t) {
            Some(rt) => types.push(rt),
            None => {
                return Err(Diagnostic::error(Code::BadSelector, format!("unknown resource type `{t}`"))
                    .with_help("one of: model, seed, snapshot, test, unit_test, source, exposure, analysis")
                    .into());
            }
        }
    }
    let uses_state = [&select_expr, &exclude_expr].into_iter().flatten().any(select::uses_state);
    let state = match (&args.state, uses_state) {
        (Some(dir), true) => Some(state_sets(session, dir)?),
        (None, true) => {
            return Err(Diagnostic::error(
                Code::BadSelector,
                "`state:` selects by comparison with a previous run, and no --state was given",
            )
            .with_help("pass --state DIR, a directory with the manifest.json of that run (kiln's or dbt's), or set DBT_STATE")
            .into());
        }
        _ => None,
    };
    Ok(select::select(&session.manifest, &session.graph, select_expr.as_ref(), exclude_expr.as_ref(), &types, state.as_ref()))
}

/// `--defer`: every refable node that is not `selected` and (without `--favor-state`) whose
/// relation `exists` does not report in this target is read from the relation the `--state`
/// run built, as dbt does: those nodes and their relations (none without `--defer`).
pub fn deferred(
    session: &Session,
    args: &super::SelectArgs,
    selected: &std::collections::BTreeSet<String>,
    exists: &dyn Fn(&crate::engine::RelationName) -> bool,
) -> Result<HashMap<String, crate::engine::RelationName>, Diagnostics> {
    if !args.defer {
        return Ok(HashMap::new());
    }
    let old = state_manifest(session, args.state.as_deref(), "--defer reads relations from a previous run")?;
    Ok(session
        .manifest
        .nodes
        .values()
        .filter(|n| n.is_refable() && !n.is_ephemeral() && !selected.contains(&n.unique_id))
        .filter(|n| {
            args.favor_state
                || !exists(&crate::engine::RelationName { database: n.database.clone(), schema: n.schema.clone(), name: n.alias.clone() })
        })
        .filter_map(|n| Some((n.unique_id.clone(), old.relation(&n.unique_id)?)))
        .collect())
}

/// The manifest of the `--state` run in `dir`, read once per session; `why` says what needs it
/// when no `--state` was given.
pub fn state_manifest(
    session: &Session,
    dir: Option<&Path>,
    why: &str,
) -> Result<std::sync::Arc<crate::run::manifest_file::ManifestFile>, Diagnostics> {
    if let Some(m) = session.state_manifest.get() {
        return Ok(m.clone());
    }
    let Some(dir) = dir else {
        return Err(Diagnostic::error(Code::StateManifest, format!("{why}, and no --state was given"))
            .with_help("pass --state DIR, the target directory of that run (it holds manifest.json), or set DBT_STATE")
            .into());
    };
    let read = crate::run::manifest_file::ManifestFile::read(&dir.join("manifest.json")).map_err(|e| {
        Diagnostics::from(
            Diagnostic::error(Code::StateManifest, e.0)
                .with_help("--state names the target directory of a previous run (it holds manifest.json)"),
        )
    })?;
    Ok(session.state_manifest.get_or_init(|| std::sync::Arc::new(read)).clone())
}

/// Each node's status in a `run_results.json` (empty when there is none).
fn previous_results(path: &Path) -> std::collections::BTreeMap<String, String> {
    let doc: serde_json::Value = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    doc["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["unique_id"].as_str()?.to_string(), r["status"].as_str()?.to_string())))
        .collect()
}

/// dbt's `source_status:fresher`: sources whose newest load in the current `sources.json` is
/// later than in the previous one (or new there), leaving out any that errored now (dbt-core
/// checks only the current results for errors).
fn fresher_sources(previous: &Path, current: &Path) -> std::collections::BTreeSet<String> {
    let loads = |path: &Path| -> (std::collections::BTreeMap<String, String>, std::collections::BTreeSet<String>) {
        let doc: serde_json::Value = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        let mut loaded = std::collections::BTreeMap::new();
        let mut failed = std::collections::BTreeSet::new();
        for r in doc["results"].as_array().into_iter().flatten() {
            let Some(id) = r["unique_id"].as_str() else { continue };
            match r["max_loaded_at"].as_str() {
                Some(at) => loaded.insert(id.to_string(), at.to_string()),
                None => failed.insert(id.to_string()).then_some(String::new()),
            };
        }
        (loaded, failed)
    };
    let ((before, _), (now, failed_now)) = (loads(previous), loads(current));
    now.into_iter()
        .filter(|(id, at)| before.get(id).is_none_or(|was| at > was))
        .map(|(id, _)| id)
        .filter(|id| !failed_now.contains(id))
        .collect()
}

/// What changed between the project and the manifest in `dir`.
fn state_sets(session: &Session, dir: &Path) -> Result<crate::graph::select::StateSets, Diagnostics> {
    use crate::run::manifest_file::ManifestFile;
    let old = state_manifest(session, Some(dir), "`state:` selects by comparison with a previous run")?;
    let mut bytes = Vec::new();
    let meta = crate::run::artifacts::Meta {
        invocation_id: &session.invocation.invocation_id,
        generated_at: &session.invocation.run_started_at,
        adapter_type: &session.target.adapter_type,
        project_name: session.project.name(),
    };
    crate::run::artifacts::write_manifest(
        &mut bytes,
        &session.project,
        &session.jinja,
        &session.manifest,
        &session.graph,
        &HashMap::new(),
        &meta,
    )
    .map_err(|e| Diagnostics::from(Diagnostic::error(Code::Internal, format!("cannot describe the project for --state: {e}"))))?;
    let current = ManifestFile::parse(&String::from_utf8_lossy(&bytes), "the project")
        .map_err(|e| Diagnostics::from(Diagnostic::error(Code::Internal, format!("cannot describe the project for --state: {e}"))))?;
    let mut sets = crate::run::state::compare(&current, &old);
    sets.results = previous_results(&dir.join("run_results.json"));
    sets.fresher = fresher_sources(&dir.join("sources.json"), &session.project.target_dir().join("sources.json"));
    Ok(sets)
}
