//! Loading a project: project -> profile/target -> Jinja -> parse -> graph, as a library call
//! ([`Session::load`]). The CLI builds the options from its flags and prints what comes back;
//! `kiln watch` reloads through the same call, reusing what did not change ([`Reuse`]).

use crate::diagnostics::{Code, Diagnostic, Diagnostics};
use crate::graph::{self, Graph, Lookup};
use crate::jinja::macros::MacroChanges;
use crate::jinja::{Invocation, JinjaEnv};
use crate::parse::RenderCache;
use crate::parse::{self, Manifest};
use crate::project::FileKind;
use crate::project::Project;
use crate::project::fs::{CachedFs, Fs, OsFs};
use crate::project::profiles::{self, Target};
use crate::project::yaml;
use indexmap::IndexMap;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// A loaded project with everything the commands need.
pub struct Session {
    pub project: Project,
    pub target: Target,
    pub jinja: JinjaEnv,
    pub manifest: Manifest,
    pub lookup: Arc<Lookup>,
    pub graph: Graph,
    pub invocation: Invocation,
    pub started: Instant,
    /// `--defer`: the nodes whose `ref()` resolves to the relation a previous run built
    /// (see `cli::session::defer`), by unique id.
    pub deferred: HashMap<String, crate::engine::RelationName>,
    /// The `--state` run's manifest, read once (see `cli::session::state_manifest`).
    pub state_manifest: std::sync::OnceLock<Arc<crate::run::manifest_file::ManifestFile>>,
}

/// How far to go.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// Project and target only (for `debug`, `clean`, `deps`).
    Target,
    /// Everything up to the graph.
    Graph,
}

/// What to load, from the command line.
#[derive(Clone, Debug)]
pub struct LoadOptions<'a> {
    pub project_dir: PathBuf,
    pub profiles_dir: Option<PathBuf>,
    pub profile: Option<String>,
    pub target: Option<String>,
    /// `--vars`, as YAML or JSON text.
    pub vars: Option<String>,
    /// `--memory-limit`, overriding the target's.
    pub memory_limit: Option<String>,
    /// The command (`flags.WHICH`).
    pub which: &'a str,
    pub stop: Stop,
    pub flags: RunFlags,
}

/// Hears what a load finds out as it goes: secret values to mask in everything printed from
/// then on (also the errors of this load), and the end of each phase (for `--timings`).
pub trait LoadObserver {
    fn secrets(&mut self, values: Vec<String>);
    fn phase(&mut self, name: &str);
}

pub fn parse_vars(text: Option<&str>) -> Result<IndexMap<String, Json>, Diagnostic> {
    parse_yaml_mapping(text, "--vars")
}

/// A command-line mapping (`--vars`, `--args`) written as YAML or JSON.
pub fn parse_yaml_mapping(text: Option<&str>, flag: &str) -> Result<IndexMap<String, Json>, Diagnostic> {
    let Some(text) = text else {
        return Ok(IndexMap::new());
    };
    if text.trim().is_empty() {
        return Ok(IndexMap::new());
    }
    let node = yaml::parse(text).map_err(|e| {
        Diagnostic::error(Code::BadCliVars, format!("{flag} is not valid YAML or JSON: {}", e.message))
            .with_help("pass a mapping, e.g. --vars '{start_date: \"2024-01-01\", limit: 10}'")
    })?;
    match node.to_json() {
        Json::Object(m) => Ok(m.into_iter().collect()),
        Json::Null => Ok(IndexMap::new()),
        other => Err(Diagnostic::error(Code::BadCliVars, format!("{flag} must be a mapping, got `{other}`"))
            .with_help("pass a mapping, e.g. --vars '{key: value}'")),
    }
}

/// Renders a profiles.yml or packages.yml value: `env_var()` and `var()` only, as dbt does.
pub fn render_profile_value(text: &str, env: &HashMap<String, String>, vars: &IndexMap<String, Json>) -> Result<String, String> {
    let mut jenv = minijinja::Environment::new();
    crate::jinja::builtins::add_type_filters(&mut jenv);
    let envc = env.clone();
    jenv.add_function("env_var", move |name: String, default: Option<String>| -> Result<String, minijinja::Error> {
        envc.get(&name).cloned().or(default).ok_or_else(|| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, format!("environment variable `{name}` is not set"))
        })
    });
    let varsc = vars.clone();
    jenv.add_function("var", move |name: String, default: Option<minijinja::Value>| -> Result<minijinja::Value, minijinja::Error> {
        varsc
            .get(&name)
            .map(crate::jinja::ser)
            .or(default)
            .ok_or_else(|| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, format!("var `{name}` is not defined")))
    });
    jenv.render_str(text, ()).map_err(|e| e.detail().unwrap_or("render error").to_string())
}

/// Run flags templates can see (`flags.FULL_REFRESH`, `flags.STORE_FAILURES`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunFlags {
    pub full_refresh: bool,
    pub store_failures: bool,
    /// `--empty`: every `ref()` and `source()` reads zero rows.
    pub empty: bool,
    pub fail_fast: bool,
}

/// What a reload keeps from the previous load of the same project (watch mode): file contents,
/// parse-phase renders, and the Jinja environment while no macro, docs block, generic test,
/// project file, profile or var changed.
#[derive(Default)]
pub struct Reuse {
    pub fs: CachedFs,
    pub renders: RenderCache,
    /// The last load read everything anew: the first load, or project files, profile or vars
    /// changed (every node may render differently).
    pub reloaded_everything: bool,
    previous: Option<PreviousEnv>,
}

/// The last Jinja environment built, what it was built from, and whether it built cleanly
/// (only then is it reused).
struct PreviousEnv {
    /// Fingerprint of what renders see besides macros (project files, target, vars).
    context: u64,
    /// Fingerprint of the files the environment is built from.
    macros: u64,
    invocation: Invocation,
    jinja: JinjaEnv,
    clean: bool,
}

/// Hashes what every render can see besides macros: project files, target, vars.
fn context_fingerprint(project: &Project, target: &Target, vars: &IndexMap<String, Json>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for p in &project.packages {
        p.config.source.text.hash(&mut h);
    }
    project.declarations.as_ref().map(|d| d.file.text.clone()).hash(&mut h);
    format!("{target:?}").hash(&mut h);
    serde_json::to_string(vars).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// Hashes the files the Jinja environment is built from (macros, docs, generic tests).
fn macro_fingerprint(project: &Project) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for f in project.files.iter().filter(|f| matches!(f.kind, FileKind::Macro | FileKind::Docs | FileKind::Test)) {
        (&f.display_path, &f.text).hash(&mut h);
    }
    h.finish()
}

impl Session {
    /// Loads the project at `options.project_dir` up to `options.stop`: project, profile and
    /// target, Jinja environment, and (for [`Stop::Graph`]) the manifest and graph. `env` is the
    /// environment snapshot; `reuse` what a previous load of the same project kept (and keeps
    /// what this one made); `observer` hears of secrets and phases. Returns the session and its
    /// warnings, or every error found.
    pub fn load(
        options: &LoadOptions,
        env: &HashMap<String, String>,
        reuse: Option<&mut Reuse>,
        observer: &mut dyn LoadObserver,
    ) -> Result<(Session, Diagnostics), Diagnostics> {
        load(options, env, reuse, observer)
    }
}

fn load(
    options: &LoadOptions,
    env: &HashMap<String, String>,
    mut reuse: Option<&mut Reuse>,
    observer: &mut dyn LoadObserver,
) -> Result<(Session, Diagnostics), Diagnostics> {
    let LoadOptions { which, stop, flags, .. } = *options;
    let started = Instant::now();
    let dir = options.project_dir.clone();
    let root = std::fs::canonicalize(&dir).unwrap_or(dir.clone());
    let os = OsFs;
    let fs: &dyn Fs = match &reuse {
        Some(r) => &r.fs,
        None => &os,
    };
    let (mut project, load_diags) = Project::load(fs, &root)?;
    let mut diags: Vec<Diagnostic> = load_diags.0;
    let cli_vars = parse_vars(options.vars.as_deref()).map_err(Diagnostics::from)?;
    let profile_name = options.profile.clone().or_else(|| project.config().profile.clone()).unwrap_or_else(|| project.name().to_string());
    let home = env.get("HOME").map(PathBuf::from);
    let getenv = |k: &str| env.get(k).cloned();
    let found = profiles::find_profiles_file(fs, options.profiles_dir.as_deref(), &getenv, &root, home.as_deref());
    let render = |s: &str| render_profile_value(s, env, &cli_vars);
    let resolved = profiles::resolve_target(fs, &root, found, &profile_name, options.target.as_deref(), &render).map_err(|d| {
        let mut all = Diagnostics(diags.clone());
        all.push(d);
        all
    })?;
    diags.extend(resolved.warnings);
    let mut target = resolved.target;
    if let Some(limit) = &options.memory_limit {
        target.settings.insert("memory_limit".into(), Json::from(limit.clone()));
    }
    observer.secrets(target.secret_values());
    observer.secrets(env.iter().filter(|(k, _)| k.starts_with("DBT_ENV_SECRET_")).map(|(_, v)| v.clone()).collect());
    let now = time::OffsetDateTime::now_utc();
    let invocation = Invocation {
        cli_vars,
        env_vars: env.clone(),
        full_refresh: flags.full_refresh,
        empty: flags.empty,
        fail_fast: flags.fail_fast,
        which: which.to_string(),
        store_failures: flags.store_failures,
        invocation_id: uuid::Uuid::new_v4().to_string(),
        run_started_at: now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    };
    observer.phase("load");
    let (jinja, invocation) = match reuse.as_deref_mut() {
        None => (JinjaEnv::build(&project, &target, &invocation, &mut diags), invocation),
        Some(r) => {
            let (context, macros) = (context_fingerprint(&project, &target, &invocation.cli_vars), macro_fingerprint(&project));
            let previous = r.previous.take();
            r.reloaded_everything = previous.as_ref().is_none_or(|p| p.context != context);
            match previous {
                Some(p) if p.clean && (p.context, p.macros) == (context, macros) => {
                    let reused = (p.jinja.clone(), p.invocation.clone());
                    r.previous = Some(p);
                    reused
                }
                previous => {
                    let before = diags.len();
                    let jinja = JinjaEnv::build(&project, &target, &invocation, &mut diags);
                    // Renders stay valid while nothing they can see changed; edited macros
                    // invalidate the renders that use them.
                    match &previous {
                        Some(p) if !r.reloaded_everything => {
                            r.renders.forget_macros(&MacroChanges::between(&p.jinja.shared.macros, &jinja.shared.macros))
                        }
                        _ => r.renders.clear(),
                    }
                    let clean = !diags[before..].iter().any(|d| d.severity == crate::diagnostics::Severity::Error);
                    r.previous = Some(PreviousEnv { context, macros, invocation: invocation.clone(), jinja: jinja.clone(), clean });
                    (jinja, invocation)
                }
            }
        }
    };
    render_project_configs(&mut project, &jinja, &mut diags);
    observer.phase("jinja env");
    if matches!(stop, Stop::Target) {
        let mut all = Diagnostics(diags);
        all.sort();
        if all.has_errors() {
            return Err(all);
        }
        let session = Session {
            project,
            target,
            jinja,
            manifest: Manifest::default(),
            lookup: Arc::new(Lookup::default()),
            graph: Graph::default(),
            invocation,
            started,
            deferred: HashMap::new(),
            state_manifest: Default::default(),
        };
        return Ok((session, all));
    }
    let parsed = parse::parse_with(&project, &jinja, &mut diags, reuse.as_deref().map(|r| &r.renders));
    observer.phase("parse");
    let manifest = parsed.manifest;
    let lookup = Arc::new(Lookup::new(&manifest, project.name()));
    let graph = graph::build(&project, &manifest, &lookup, &mut diags);
    observer.phase("graph");
    let mut all = Diagnostics(diags);
    all.sort();
    if all.has_errors() {
        return Err(all);
    }
    let deferred = HashMap::new();
    Ok((
        Session { project, target, jinja, manifest, lookup, graph, invocation, started, deferred, state_manifest: Default::default() },
        all,
    ))
}

/// Renders the Jinja in every package's `dbt_project.yml` config trees (`+enabled: "{{ var(...) }}"`),
/// as dbt does when it loads a project.
fn render_project_configs(project: &mut Project, jinja: &JinjaEnv, diags: &mut Vec<Diagnostic>) {
    for package in &mut project.packages {
        let name = package.name.clone();
        let render = |text: &str| jinja.render_value(text, &name).map_err(|e| e.detail().map_or_else(|| e.to_string(), str::to_string));
        let mut errors = vec![];
        for (section, tree) in package.config.trees.iter_mut() {
            crate::project::render::render_tree(tree, section, &render, &mut errors);
        }
        for e in errors {
            diags.push(
                Diagnostic::error(Code::JinjaRender, format!("cannot render `{}` in dbt_project.yml: {}", e.path, e.message))
                    .with_file(package.config.source.path.clone())
                    .with_help("config values are rendered with `target`, `var()` and `env_var()` when the project loads"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// A reload renders again only what an edit can have changed.
    #[test]
    fn reloads_render_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let write = |p: &str, text: &str| {
            std::fs::create_dir_all(d.join(p).parent().unwrap()).unwrap();
            std::fs::write(d.join(p), text).unwrap();
        };
        write("dbt_project.yml", "name: p\nconfig-version: 2\nvars:\n  v: 1\n");
        write("macros/m.sql", "{% macro m() %}1{% endmacro %}\n{% macro other() %}2{% endmacro %}\n");
        write("models/a.sql", "select {{ m() }} as x");
        write("models/b.sql", "select {{ var('v') }} as y");
        write("models/c.sql", "select * from {{ ref('b') }}");
        struct Quiet;
        impl LoadObserver for Quiet {
            fn secrets(&mut self, _: Vec<String>) {}
            fn phase(&mut self, _: &str) {}
        }
        let options = LoadOptions {
            project_dir: d.to_path_buf(),
            profiles_dir: None,
            profile: None,
            target: None,
            vars: None,
            memory_limit: None,
            which: "build",
            stop: Stop::Graph,
            flags: RunFlags::default(),
        };
        let env = HashMap::new();
        let mut reuse = Reuse::default();
        let load = |reuse: &mut Reuse| {
            let before = reuse.renders.hits.load(Ordering::Relaxed);
            let (s, _) = Session::load(&options, &env, Some(reuse), &mut Quiet).unwrap();
            (s, reuse.renders.hits.load(Ordering::Relaxed) - before)
        };
        let (s, hits) = load(&mut reuse);
        assert_eq!((hits, reuse.renders.len(), reuse.reloaded_everything), (0, 3, true));
        assert_eq!(s.manifest.nodes["model.p.a"].macros, ["macro.p.m"]);

        // Nothing changed: every render and the Jinja environment are reused.
        let (s2, hits) = load(&mut reuse);
        assert_eq!((hits, reuse.reloaded_everything), (3, false));
        assert!(Arc::ptr_eq(&s.jinja.shared, &s2.jinja.shared));

        // A model: only it is rendered again.
        write("models/c.sql", "select y from {{ ref('b') }}");
        let (_, hits) = load(&mut reuse);
        assert_eq!(hits, 2);

        // A macro: only its caller is rendered again, with a new environment.
        write("macros/m.sql", "{% macro m() %}10{% endmacro %}\n{% macro other() %}2{% endmacro %}\n");
        let (s3, hits) = load(&mut reuse);
        assert_eq!(hits, 2);
        assert!(!Arc::ptr_eq(&s2.jinja.shared, &s3.jinja.shared));

        // A var: everything is rendered again.
        write("dbt_project.yml", "name: p\nconfig-version: 2\nvars:\n  v: 2\n");
        let (_, hits) = load(&mut reuse);
        assert_eq!((hits, reuse.reloaded_everything), (0, true));
    }
}
