//! `kiln watch`: one build, then, on every save, a rebuild of what the save changed (the changed
//! nodes, everything downstream, and their tests) with a compact report.
//!
//! The loaded project stays in memory between rebuilds ([`session::Reuse`]): only changed files
//! are read again, only nodes whose file, config or macros changed are rendered again, and the
//! Jinja environment is rebuilt only when a macro changed. The engine stays open.

use super::build::{self, Which};
use super::printer::{LogFormat, Printer};
use super::session::{self, Reuse, RunFlags, Session, Stop};
use super::{EXIT_OK, GlobalArgs, SelectArgs};
use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::engine::Engine;
use crate::graph::state;
use crate::jinja::macros::MacroChanges;
use crate::project::typed::StaticAnalysis;
use crate::run::runner::{Options, relation_name};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Nodes built at once (default: the target's `threads`)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Rebuild incremental models (and reload seeds) from scratch in the first build
    #[arg(long)]
    pub full_refresh: bool,
    /// Keep the failing rows of every test, as `kiln build --store-failures`
    #[arg(long)]
    pub store_failures: bool,
    /// On a change, rebuild only the changed nodes and their tests, not what is downstream
    #[arg(long)]
    pub no_downstream: bool,
    /// Skip the first build: read unchanged parents from what the previous build left in the
    /// warehouse, and build at start only the selected models and seeds that have no relation yet
    #[arg(long)]
    pub defer_upstream: bool,
    /// Quiet time after the last file event before a rebuild starts (editors save in bursts)
    #[arg(long, default_value_t = 30, value_name = "MS")]
    pub debounce: u64,
    /// Static analysis before anything runs, in place of the nodes' `static_analysis` configs:
    /// a node it is certain is wrong fails without running (`baseline`); `strict` also warns of
    /// what cannot be typed; `off` skips it
    #[arg(long, value_name = "MODE", value_parser = ["strict", "baseline", "off"])]
    pub static_analysis: Option<String>,
}

/// What reaches the watch loop.
enum Msg {
    /// Files that changed (already filtered to ones that matter).
    Files(Vec<PathBuf>),
    /// `r`: rebuild the whole selection.
    RebuildAll,
    /// `q`, Ctrl-C or SIGTERM.
    Quit,
    /// The watcher failed (e.g. too many watched directories).
    WatchError(String),
}

/// Which paths a rebuild cares about: the resource directories of every package, and the
/// project's own files. `target/`, `dbt_packages/`, `logs/`, the warehouse and dotfiles never
/// trigger one, so kiln's own writes do not retrigger it.
#[derive(Clone, Default)]
struct Scope {
    /// Directories watched recursively.
    dirs: BTreeSet<PathBuf>,
    /// Single files (dbt_project.yml, packages.yml, selectors.yml, profiles.yml).
    files: BTreeSet<PathBuf>,
    /// Never relevant, even inside a watched directory.
    ignored: Vec<PathBuf>,
}

const EXTENSIONS: &[&str] = &["sql", "yml", "yaml", "csv", "md"];

impl Scope {
    fn of(s: &Session) -> Scope {
        let mut scope = Scope::default();
        for pkg in &s.project.packages {
            let c = &pkg.config;
            let lists = [&c.model_paths, &c.seed_paths, &c.macro_paths, &c.test_paths, &c.snapshot_paths, &c.analysis_paths];
            for dir in lists.into_iter().flatten().chain(c.docs_paths.iter().flatten()) {
                scope.dirs.insert(pkg.root.join(dir));
            }
            for f in ["dbt_project.yml", "packages.yml", "dependencies.yml", "selectors.yml", "profiles.yml"] {
                scope.files.insert(pkg.root.join(f));
            }
        }
        if let Some(p) = &s.target.profiles_path {
            scope.files.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
        }
        let root = &s.project.root;
        let config = s.project.config();
        scope.ignored = vec![root.join(&config.target_path), root.join(&config.packages_install_path), root.join("logs")];
        scope
    }

    fn relevant(&self, path: &Path) -> bool {
        if self.files.contains(path) {
            return true;
        }
        let Some(dir) = self.dirs.iter().find(|d| path.starts_with(d)) else { return false };
        let rel = path.strip_prefix(dir).unwrap_or(path);
        let hidden = rel.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        // A directory created or moved in may hold files that matter (files of a removed
        // directory have events of their own).
        let dir = ext.is_empty() && path.is_dir();
        !hidden && (dir || EXTENSIONS.contains(&ext)) && !self.ignored.iter().any(|i| path.starts_with(i))
    }

    /// What to hand to the watcher: existing resource directories (recursive) and the
    /// directories holding the single files (not recursive).
    fn watch_points(&self) -> Vec<(PathBuf, notify::RecursiveMode)> {
        let mut out: Vec<(PathBuf, notify::RecursiveMode)> =
            self.dirs.iter().filter(|d| d.is_dir()).map(|d| (d.clone(), notify::RecursiveMode::Recursive)).collect();
        let parents: BTreeSet<PathBuf> = self.files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        out.extend(parents.into_iter().filter(|d| d.is_dir()).map(|d| (d, notify::RecursiveMode::NonRecursive)));
        out
    }
}

/// The file watcher and the scope it filters with.
struct Watcher {
    inner: notify::RecommendedWatcher,
    scope: Arc<std::sync::RwLock<Scope>>,
    watched: BTreeSet<PathBuf>,
}

impl Watcher {
    fn start(tx: mpsc::Sender<Msg>, building: Arc<AtomicBool>, cancel: Arc<AtomicBool>) -> notify::Result<Watcher> {
        let scope: Arc<std::sync::RwLock<Scope>> = Arc::default();
        let filter = scope.clone();
        let inner = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(event) => {
                if matches!(event.kind, notify::EventKind::Access(_)) {
                    return;
                }
                let scope = filter.read().unwrap_or_else(|e| e.into_inner());
                let paths: Vec<PathBuf> = event.paths.into_iter().filter(|p| scope.relevant(p)).collect();
                if !paths.is_empty() {
                    // A save during a rebuild cancels it: running nodes finish, the rest wait
                    // for the next rebuild, which covers both changes.
                    if building.load(Ordering::SeqCst) {
                        cancel.store(true, Ordering::SeqCst);
                    }
                    let _ = tx.send(Msg::Files(paths));
                }
            }
            Err(e) => {
                let _ = tx.send(Msg::WatchError(e.to_string()));
            }
        })?;
        Ok(Watcher { inner, scope, watched: BTreeSet::new() })
    }

    /// Watches what `scope` names (new resource directories included).
    fn update(&mut self, scope: Scope) -> notify::Result<()> {
        use notify::Watcher as _;
        for (dir, mode) in scope.watch_points() {
            if self.watched.insert(dir.clone()) {
                self.inner.watch(&dir, mode)?;
            }
        }
        *self.scope.write().unwrap_or_else(|e| e.into_inner()) = scope;
        Ok(())
    }
}

/// Keys on the terminal: `q` quits, `r` rebuilds everything. On a terminal, keys act at once
/// (no Enter needed; the terminal is restored on exit); otherwise stdin is read by lines.
mod keys {
    use super::Msg;
    use std::io::Read;
    use std::sync::mpsc;

    #[cfg(unix)]
    static SAVED: std::sync::Mutex<Option<libc::termios>> = std::sync::Mutex::new(None);

    /// Puts a terminal stdin into non-canonical, no-echo mode (Ctrl-C still signals).
    #[cfg(unix)]
    fn raw() -> bool {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return false;
        }
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed, then filled, termios.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return false;
            }
            *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
            t.c_lflag &= !(libc::ICANON | libc::ECHO);
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            libc::tcsetattr(0, libc::TCSANOW, &t) == 0
        }
    }

    #[cfg(not(unix))]
    fn raw() -> bool {
        false
    }

    /// Gives the terminal its settings back.
    pub fn restore() {
        #[cfg(unix)]
        if let Some(t) = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // SAFETY: restores the termios read in `raw`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }

    pub fn listen(tx: mpsc::Sender<Msg>) {
        let raw = raw();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut byte = [0u8; 1];
            let mut line = String::new();
            while let Ok(1) = stdin.read(&mut byte) {
                let c = byte[0] as char;
                let word = if raw {
                    c.to_string()
                } else if c == '\n' {
                    std::mem::take(&mut line)
                } else {
                    line.push(c);
                    continue;
                };
                let msg = match word.trim() {
                    "q" | "Q" | "quit" => Msg::Quit,
                    "r" | "R" => Msg::RebuildAll,
                    _ => continue,
                };
                if tx.send(msg).is_err() {
                    break;
                }
            }
        });
    }
}

/// The wall clock for report lines (local time where the platform says it).
fn clock() -> String {
    #[cfg(unix)]
    {
        // SAFETY: localtime_r writes into the zeroed tm it is given.
        unsafe {
            let now = libc::time(std::ptr::null_mut());
            let mut tm: libc::tm = std::mem::zeroed();
            if !libc::localtime_r(&now, &mut tm).is_null() {
                return format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec);
            }
        }
    }
    let now = time::OffsetDateTime::now_utc();
    format!("{:02}:{:02}:{:02} UTC", now.hour(), now.minute(), now.second())
}

/// Files as the user names them: relative to the project.
fn shown(root: &Path, paths: &BTreeSet<PathBuf>) -> Vec<String> {
    paths.iter().map(|p| p.strip_prefix(root).unwrap_or(p).to_string_lossy().replace('\\', "/")).collect()
}

struct Loop<'a> {
    global: &'a GlobalArgs,
    args: &'a WatchArgs,
    env: &'a HashMap<String, String>,
    reuse: Reuse,
    /// What static analysis found before each rebuild, for the next.
    analyzed: crate::analyze::Memo,
    /// The artifacts of the last rebuild, being written.
    artifacts: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    cancel: Arc<AtomicBool>,
    building: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
}

impl Drop for Loop<'_> {
    /// However watching ends, the last artifacts are whole on disk before kiln exits.
    fn drop(&mut self) {
        if let Some(writing) = self.artifacts.take() {
            let _ = writing.join();
        }
    }
}

impl Loop<'_> {
    fn load(&mut self, printer: &mut Printer) -> Result<Arc<Session>, Diagnostics> {
        let flags = RunFlags { store_failures: self.args.store_failures, ..RunFlags::default() };
        session::load_reusing(self.global, self.env, printer, "build", Stop::Graph, flags, Some(&mut self.reuse)).map(Arc::new)
    }

    /// Waits for the artifacts of the last rebuild to be written, and says if they were not.
    fn finish_artifacts(&mut self, printer: &Printer) {
        match self.artifacts.take().map(std::thread::JoinHandle::join) {
            Some(Ok(Err(e))) => printer.warn(&format!("could not write artifacts: {e:#}")),
            Some(Err(_)) => printer.warn("could not write artifacts: the writer stopped"),
            Some(Ok(Ok(()))) | None => {}
        }
    }

    /// The watched selection: `--select`/`--exclude` as `kiln build` reads them.
    fn within(&self, s: &Session) -> Result<BTreeSet<String>, Diagnostics> {
        let mut selected = session::selection(s, &self.args.select)?;
        build::retain_runnable(s, &mut selected, Which::Build);
        Ok(selected)
    }

    /// Builds `nodes` and reports; returns whether it was cancelled by a newer change.
    fn build(
        &mut self,
        s: &Arc<Session>,
        engine: &Arc<dyn Engine>,
        nodes: &BTreeSet<String>,
        full_refresh: bool,
        printer: &Printer,
    ) -> bool {
        self.cancel.store(false, Ordering::SeqCst);
        self.building.store(true, Ordering::SeqCst);
        let options = Options {
            threads: self.args.threads.unwrap_or(s.target.threads),
            full_refresh,
            fail_fast: false,
            store_failures: self.args.store_failures,
            cancel: self.cancel.clone(),
            dry_run: false,
            event_time: (None, None),
            rejected: super::compile::preflight(
                s,
                nodes,
                StaticAnalysis::parse_flag(self.args.static_analysis.as_deref()),
                self.env,
                Some(&self.analyzed),
                printer,
            ),
        };
        let done = build::execute(s, engine, nodes, options, printer);
        self.building.store(false, Ordering::SeqCst);
        let cancelled = self.cancel.swap(false, Ordering::SeqCst);
        let (pass, warn, error, skip) = done.counts();
        if printer.format == LogFormat::Json {
            printer.json_line(&serde_json::json!({
                "event": "build_finished",
                "elapsed": done.elapsed,
                "pass": pass, "warn": warn, "error": error, "skip": skip,
                "total": done.results.len(),
                "cancelled": cancelled,
            }));
        } else {
            let how = if cancelled { "cancelled by a newer change" } else { "watching for changes (q to quit, r to rebuild all)" };
            printer.info(&format!(
                "{} built {} node{} in {:.2}s: PASS={pass} WARN={warn} ERROR={error} SKIP={skip} · {how}",
                clock(),
                done.results.len(),
                if done.results.len() == 1 { "" } else { "s" },
                done.elapsed
            ));
        }
        // Artifacts after the report, off the loop: they delay neither it nor the next save.
        // One write at a time, in order.
        self.finish_artifacts(printer);
        let s = s.clone();
        self.artifacts = Some(std::thread::spawn(move || build::write_artifacts(&s, &done, &serde_json::json!({"which": "build"}), None)));
        cancelled
    }
}

/// Opens the target's engine, printing warnings about sources the selection reads.
/// Opens the engine for writing; `cancel` (a newer change, Ctrl-C) stops its running queries.
fn open(s: &Session, within: &BTreeSet<String>, cancel: &Arc<AtomicBool>, printer: &Printer) -> Result<Arc<dyn Engine>, Diagnostic> {
    let (engine, warnings) = build::open_engine(s, Some(build::Writes { command: "kiln watch", printer }))?;
    build::print_source_warnings(s, within, &warnings, printer);
    engine.cancel_on(cancel.clone());
    Ok(engine)
}

fn event(printer: &Printer, json: serde_json::Value, text: &str) {
    if printer.format == LogFormat::Json {
        printer.json_line(&json);
    } else {
        printer.info(text);
    }
}

pub fn run(global: &GlobalArgs, args: &WatchArgs, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    if args.select.defer || args.select.favor_state {
        printer.diagnostic(
            &crate::diagnostics::Diagnostic::error(crate::diagnostics::Code::Unsupported, "kiln watch does not take --defer yet")
                .with_help("use --defer-upstream to read unchanged parents from what the last build left in the warehouse"),
        );
        return Ok(super::EXIT_USAGE);
    }
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut lp = Loop {
        global,
        args,
        env,
        reuse: Reuse::default(),
        analyzed: Default::default(),
        artifacts: None,
        cancel: Arc::new(AtomicBool::new(false)),
        building: Arc::new(AtomicBool::new(false)),
        quit: Arc::new(AtomicBool::new(false)),
    };
    // Ctrl-C or SIGTERM: stop scheduling (running nodes finish and publish atomically), then exit
    // 0; a second one exits at once with 130.
    {
        let (quit, cancel, tx) = (lp.quit.clone(), lp.cancel.clone(), tx.clone());
        let _ = ctrlc::set_handler(move || {
            if quit.swap(true, Ordering::SeqCst) {
                keys::restore();
                std::process::exit(super::EXIT_INTERRUPTED);
            }
            cancel.store(true, Ordering::SeqCst);
            let _ = tx.send(Msg::Quit);
        });
    }
    let mut watcher = Watcher::start(tx.clone(), lp.building.clone(), lp.cancel.clone())?;
    let code = watch(&mut lp, &mut watcher, &tx, &rx, printer);
    keys::restore();
    code
}

fn watch(
    lp: &mut Loop,
    watcher: &mut Watcher,
    tx: &mpsc::Sender<Msg>,
    rx: &mpsc::Receiver<Msg>,
    printer: &mut Printer,
) -> anyhow::Result<i32> {
    keys::listen(tx.clone());
    // The first load: a broken project is reported, then watched until it loads.
    let mut session = loop {
        match lp.load(printer) {
            Ok(s) => break s,
            Err(d) => {
                session::report(printer, &d);
                // Watch what the project names so far, at least dbt_project.yml.
                let root = std::fs::canonicalize(session::project_dir(lp.global)).unwrap_or_else(|_| session::project_dir(lp.global));
                if !root.join("dbt_project.yml").is_file() {
                    return Ok(super::EXIT_PROJECT);
                }
                let mut scope = Scope::default();
                for dir in ["models", "seeds", "macros", "tests", "snapshots", "analyses"] {
                    scope.dirs.insert(root.join(dir));
                }
                scope.files.insert(root.join("dbt_project.yml"));
                watcher.update(scope)?;
                event(printer, serde_json::json!({"event": "waiting", "reason": "the project has errors"}), "waiting for a fix ...");
                match wait(rx, Duration::from_millis(lp.args.debounce)) {
                    Some(Change::Quit) | None => return Ok(EXIT_OK),
                    Some(Change::Files(files)) => lp.reuse.fs.invalidate(files.iter().map(PathBuf::as_path)),
                    Some(Change::All) => {}
                }
            }
        }
    };
    watcher.update(Scope::of(&session))?;
    let mut within = match lp.within(&session) {
        Ok(w) => w,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let mut engine = match open(&session, &within, &lp.cancel, printer) {
        Ok(e) => e,
        Err(d) => return Ok(session::report(printer, &Diagnostics::from(d))),
    };
    let summary = super::compile::summary(&session, &within);
    event(
        printer,
        serde_json::json!({
            "event": "watch_started",
            "target": session.target.name,
            "adapter_type": session.target.adapter_type,
            "selected": within.len(),
        }),
        &format!(
            "kiln watch · target `{}` ({}) · {summary} · {} · q or Ctrl-C to stop",
            session.target.name,
            session.target.adapter_type,
            clock()
        ),
    );
    // The first build: everything selected, or with --defer-upstream only what has no relation.
    let first: BTreeSet<String> = if lp.args.defer_upstream {
        within
            .iter()
            .filter(|id| {
                session.manifest.nodes.get(*id).is_some_and(|n| {
                    matches!(n.resource_type, crate::parse::ResourceType::Model | crate::parse::ResourceType::Seed)
                        && !n.is_ephemeral()
                        && engine.describe(&relation_name(n)).ok().flatten().is_none()
                })
            })
            .cloned()
            .collect()
    } else {
        within.clone()
    };
    let mut pending: BTreeSet<String> = BTreeSet::new();
    if !first.is_empty() && !lp.quit.load(Ordering::SeqCst) {
        event(
            printer,
            serde_json::json!({"event": "build_started", "reason": "start", "files": [], "nodes": first.len()}),
            &format!("{} building {} node{}", clock(), first.len(), if first.len() == 1 { "" } else { "s" }),
        );
        if lp.build(&session, &engine, &first, lp.args.full_refresh, printer) {
            pending = first;
        }
    } else {
        event(
            printer,
            serde_json::json!({"event": "build_finished", "elapsed": 0.0, "total": 0, "cancelled": false}),
            "watching for changes",
        );
    }
    // Whether the last reload failed: the next one that loads says the errors are gone, even
    // when the project is back to what was last built (nothing to rebuild).
    let mut broken = false;
    // Each turn: wait for a change, reload what it touched, rebuild what it changed.
    loop {
        if lp.quit.load(Ordering::SeqCst) {
            break;
        }
        // After a cancelled rebuild, `pending` joins the change that cancelled it.
        let (files, all) = match wait(rx, Duration::from_millis(lp.args.debounce)) {
            Some(Change::Quit) | None => break,
            Some(Change::Files(f)) => (f, false),
            Some(Change::All) => (BTreeSet::new(), true),
        };
        let started = Instant::now();
        lp.reuse.fs.invalidate(files.iter().map(PathBuf::as_path));
        let names = shown(&session.project.root, &files);
        let next = match lp.load(printer) {
            Ok(s) => s,
            Err(d) => {
                event(
                    printer,
                    serde_json::json!({"event": "change", "files": names}),
                    &format!("{} change: {}", clock(), names.join(", ")),
                );
                session::report(printer, &d);
                event(
                    printer,
                    serde_json::json!({"event": "build_finished", "elapsed": started.elapsed().as_secs_f64(), "total": 0, "error": d.error_count(), "cancelled": false, "parse_error": true}),
                    &format!("{} the project has errors; nothing was rebuilt · watching for a fix", clock()),
                );
                broken = true;
                continue;
            }
        };
        let fixed = std::mem::take(&mut broken);
        let everything = lp.reuse.reloaded_everything;
        let macros = if Arc::ptr_eq(&session.jinja.shared, &next.jinja.shared) {
            MacroChanges::default()
        } else {
            MacroChanges::between(&session.jinja.shared.macros, &next.jinja.shared.macros)
        };
        let mut changes = state::changes(&session.manifest, &next.manifest, &macros);
        // Seeds are not read at parse time (the engine reads them): a saved CSV is a changed seed.
        for node in next.manifest.nodes.values().filter(|n| n.resource_type == crate::parse::ResourceType::Seed) {
            if node.file.is_some_and(|f| files.contains(&next.project.files[f].abs_path)) && !changes.added.contains(&node.unique_id) {
                changes.modified.insert(node.unique_id.clone());
            }
        }
        let new_within = match lp.within(&next) {
            Ok(w) => w,
            Err(d) => {
                session::report(printer, &d);
                continue;
            }
        };
        // Project files or the profile changed: the target may be another one, and every node
        // may render differently.
        let sources_changed = changes.dirty().iter().chain(&changes.removed).any(|id| id.starts_with("source."));
        if everything || sources_changed {
            match open(&next, &new_within, &lp.cancel, printer) {
                Ok(e) => engine = e,
                Err(d) => {
                    session::report(printer, &Diagnostics::from(d));
                    continue;
                }
            }
        }
        let mut dirty = if everything || all { new_within.clone() } else { changes.dirty() };
        // Nodes that just entered the selection (a new file under `path:`) are built too.
        dirty.extend(new_within.difference(&within).cloned());
        dirty.extend(std::mem::take(&mut pending).into_iter().filter(|id| new_within.contains(id)));
        let nodes = state::rebuild_set(&next.manifest, &next.graph, &dirty, !lp.args.no_downstream, &new_within);
        watcher.update(Scope::of(&next))?;
        // The last session is large (every node, the graph): freed after the rebuild's report.
        let previous = std::mem::replace(&mut session, next);
        within = new_within;
        // A directory event or an edit that changes no node (a description, a comment in YAML):
        // nothing to say on the terminal.
        if printer.format == LogFormat::Text && nodes.is_empty() && changes.is_empty() && !fixed {
            continue;
        }
        event(
            printer,
            serde_json::json!({
                "event": "build_started",
                "reason": if all { "rebuild_all" } else { "change" },
                "files": names,
                "modified": changes.modified,
                "added": changes.added,
                "removed": changes.removed,
                "nodes": nodes.len(),
                "fixed": fixed,
            }),
            &format!(
                "{} change: {}{} → {} node{}",
                clock(),
                if all { "rebuild all".to_string() } else { names.join(", ") },
                if changes.removed.is_empty() {
                    String::new()
                } else {
                    format!(" (removed {})", changes.removed.iter().map(String::as_str).collect::<Vec<_>>().join(", "))
                },
                nodes.len(),
                if nodes.len() == 1 { "" } else { "s" }
            ),
        );
        if nodes.is_empty() {
            let what = if fixed { "the errors are fixed; the project is as last built, nothing to rebuild" } else { "nothing to rebuild" };
            event(
                printer,
                serde_json::json!({"event": "build_finished", "elapsed": started.elapsed().as_secs_f64(), "total": 0, "cancelled": false, "fixed": fixed}),
                &format!("{} {what} · watching for changes", clock()),
            );
            continue;
        }
        snapshot_note(&session, &nodes, printer);
        if lp.build(&session, &engine, &nodes, false, printer) && !lp.quit.load(Ordering::SeqCst) {
            pending = dirty;
        }
        drop(previous);
    }
    lp.finish_artifacts(printer);
    event(printer, serde_json::json!({"event": "watch_stopped"}), "stopped watching");
    Ok(EXIT_OK)
}

/// A rebuilt snapshot records the source as it is now: say that its history is not replayed.
fn snapshot_note(s: &Session, nodes: &BTreeSet<String>, printer: &Printer) {
    let names: Vec<&str> = nodes
        .iter()
        .filter_map(|id| s.manifest.nodes.get(id))
        .filter(|n| n.resource_type == crate::parse::ResourceType::Snapshot)
        .map(|n| n.name.as_str())
        .collect();
    if !names.is_empty() {
        let text = format!(
            "note: snapshot {} records its source as it is now; a snapshot is history, and an edit does not replay it",
            names.join(", ")
        );
        event(printer, serde_json::json!({"event": "snapshot_note", "snapshots": names, "message": text}), &text);
    }
}

enum Change {
    Files(BTreeSet<PathBuf>),
    All,
    Quit,
}

/// Waits for the next change and gathers the burst it belongs to: events until `quiet` passes
/// without one (at most a second, so a steady stream of writes cannot starve a rebuild).
fn wait(rx: &mpsc::Receiver<Msg>, quiet: Duration) -> Option<Change> {
    let mut files = BTreeSet::new();
    let mut all = false;
    let first = rx.recv().ok()?;
    let mut take = |m: Msg, files: &mut BTreeSet<PathBuf>| -> Result<(), ()> {
        match m {
            Msg::Files(f) => files.extend(f),
            Msg::RebuildAll => all = true,
            Msg::Quit => return Err(()),
            Msg::WatchError(e) => eprintln!("warning: file watching: {e}"),
        }
        Ok(())
    };
    if take(first, &mut files).is_err() {
        return Some(Change::Quit);
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).min(quiet);
        match rx.recv_timeout(left) {
            Ok(m) => {
                if take(m, &mut files).is_err() {
                    return Some(Change::Quit);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    if all {
        return Some(Change::All);
    }
    if files.is_empty() {
        // Only a watcher warning: keep waiting.
        return wait(rx, quiet);
    }
    Some(Change::Files(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_ignores_kilns_own_writes_and_editor_files() {
        let root = PathBuf::from("/p");
        let mut scope = Scope::default();
        scope.dirs.insert(root.join("models"));
        scope.dirs.insert(root.join("seeds"));
        scope.files.insert(root.join("dbt_project.yml"));
        scope.ignored = vec![root.join("target"), root.join("dbt_packages"), root.join("logs")];
        for yes in ["models/a.sql", "models/sub/schema.yml", "seeds/s.csv", "dbt_project.yml"] {
            assert!(scope.relevant(&root.join(yes)), "{yes}");
        }
        for no in [
            "target/run_results.json",
            "models/.a.sql.swp",
            "models/a.sql~",
            "models/.hidden/a.sql",
            ".kiln/warehouse/main/a/part.parquet",
            "logs/dbt.log",
            "README.md",
            "models/4913",
            "models/sedX1b2c3",
        ] {
            assert!(!scope.relevant(&root.join(no)), "{no}");
        }
    }

    #[test]
    fn a_burst_of_events_is_one_change() {
        let (tx, rx) = mpsc::channel();
        for p in ["a.sql", "a.sql", "b.sql"] {
            tx.send(Msg::Files(vec![PathBuf::from(p)])).unwrap();
        }
        match wait(&rx, Duration::from_millis(20)) {
            Some(Change::Files(f)) => assert_eq!(f.len(), 2),
            _ => panic!("expected one change of two files"),
        }
        tx.send(Msg::Files(vec![PathBuf::from("a.sql")])).unwrap();
        tx.send(Msg::Quit).unwrap();
        assert!(matches!(wait(&rx, Duration::from_millis(20)), Some(Change::Quit)));
    }
}
