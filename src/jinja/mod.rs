//! Stage 2: the Jinja environment (minijinja) with dbt's context.
//!
//! One [`JinjaEnv`] per invocation holds every macro of every package as its own template, dbt's
//! built-in macros (`dbt.*` cross-database macros, generic tests, `generate_schema_name`, ...) and
//! the context functions (`ref`, `source`, `config`, `var`, `env_var`, `adapter`, `modules`, ...).
//! Rendering a node takes a [`context::NodeCtx`]; the parse stage reads back what it recorded.
//! This layer never prints: `log()`/`print()` are collected in [`Shared::logs`].

pub mod blocks;
pub mod builtins;
pub mod column;
pub mod context;
pub mod error;
pub mod literals;
pub mod macros;
pub mod modules;
pub mod relation;

use crate::diagnostics::{Code, Diagnostic, Label, SourceText};
use crate::project::profiles::Target;
use crate::project::{FileKind, Project};
use blocks::BlockKind;
use indexmap::IndexMap;
use macros::{INTERNAL, MacroDef, MacroFn, MacroIndex, Namespace};
use minijinja::value::Value;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value as Json;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

/// Converts anything serializable into a template value.
pub fn ser<T: serde::Serialize + ?Sized>(v: &T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

/// A map value with insertion order kept.
pub fn vmap<K: Into<Value>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
    Value::from(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect::<IndexMap<Value, Value>>())
}

/// dbt's built-in macros, written in Jinja (per-dialect variants dispatched by adapter prefix).
const DBT_MACROS: &str = include_str!("dbt_macros.sql");
const DBT_MACROS_PATH: &str = "<kiln>/dbt_macros.sql";

/// Resolves `ref`/`source` in the compile phase. Implemented by the parse stage's manifest.
pub trait Resolver: Send + Sync {
    /// The relation a `ref()` from `from_package` points at, or a message saying why not.
    fn resolve_ref(&self, from_package: &str, package: Option<&str>, name: &str, version: Option<&str>) -> Result<Value, String>;
    fn resolve_source(&self, source: &str, table: &str) -> Result<Value, String>;
    /// dbt's `graph` variable.
    fn graph(&self) -> Value;
}

pub use crate::engine::QueryTable;

/// Runs SQL for `run_query`, `statement` and `adapter.*` during compilation. Until an engine is
/// attached, [`NoEngine`] answers every query with an empty result, as dbt does with
/// `execute = false`.
pub trait QueryRunner: Send + Sync {
    fn run_query(&self, sql: &str) -> Result<QueryTable, String>;
    /// `adapter.get_relation`: the relation if it exists; an error when the warehouse cannot
    /// tell (never taken for "it does not exist").
    fn get_relation(&self, _database: &str, _schema: &str, _identifier: &str) -> Result<Option<relation::Relation>, String> {
        Ok(None)
    }
    /// `adapter.get_columns_in_relation`: (name, data type) pairs, none when the relation does
    /// not exist.
    fn get_columns(&self, _relation: &relation::Relation) -> Result<Vec<(String, String)>, String> {
        Ok(Vec::new())
    }
    /// `adapter.create_schema`.
    fn create_schema(&self, _database: &str, _schema: &str) -> Result<(), String> {
        Ok(())
    }
    /// `adapter.list_schemas`: the schemas of `database`.
    fn list_schemas(&self, _database: &str) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
    /// `adapter.list_relations_without_caching`: (name, `table` or `view`) in `database.schema`.
    fn list_relations(&self, _database: &str, _schema: &str) -> Result<Vec<(String, String)>, String> {
        Ok(Vec::new())
    }
}

pub struct NoEngine;
impl QueryRunner for NoEngine {
    fn run_query(&self, _sql: &str) -> Result<QueryTable, String> {
        Ok(QueryTable::default())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Print,
}

/// Variables: `--vars` over the root project's vars (package-scoped first) over the package's own.
#[derive(Clone, Debug, Default)]
pub struct Vars {
    pub cli: IndexMap<String, Json>,
    pub per_package: HashMap<String, IndexMap<String, Json>>,
}

impl Vars {
    pub fn from_project(project: &Project, cli: IndexMap<String, Json>) -> Vars {
        let package_names: BTreeSet<&str> = project.packages.iter().map(|p| p.name.as_str()).collect();
        let split = |node: &crate::project::yaml::YNode| -> (IndexMap<String, Json>, HashMap<String, IndexMap<String, Json>>) {
            let mut global = IndexMap::new();
            let mut scoped: HashMap<String, IndexMap<String, Json>> = HashMap::new();
            for (k, _, v) in node.entries() {
                if package_names.contains(k) && v.as_map().is_some() {
                    scoped.entry(k.to_string()).or_default().extend(v.entries().map(|(kk, _, vv)| (kk.to_string(), vv.to_json())));
                } else {
                    global.insert(k.to_string(), v.to_json());
                }
            }
            (global, scoped)
        };
        let (root_global, root_scoped) = split(&project.config().vars);
        let mut per_package = HashMap::new();
        for pkg in &project.packages {
            let mut vars = IndexMap::new();
            if !pkg.is_root {
                let (own_global, own_scoped) = split(&pkg.config.vars);
                vars.extend(own_global);
                if let Some(s) = own_scoped.get(&pkg.name) {
                    vars.extend(s.clone());
                }
            }
            vars.extend(root_global.clone());
            if let Some(s) = root_scoped.get(&pkg.name) {
                vars.extend(s.clone());
            }
            per_package.insert(pkg.name.clone(), vars);
        }
        Vars { cli, per_package }
    }

    pub fn get(&self, package: &str, name: &str) -> Option<&Json> {
        self.cli.get(name).or_else(|| self.per_package.get(package).and_then(|v| v.get(name)))
    }
}

/// Everything renders share.
pub struct Shared {
    /// The environment, set once it is built (macros reach it through the render context).
    pub env: std::sync::OnceLock<Arc<Environment<'static>>>,
    pub macros: Arc<MacroIndex>,
    pub target: Target,
    pub target_value: Value,
    pub vars: Vars,
    pub env_vars: HashMap<String, String>,
    /// Secret values seen (profile secrets, `DBT_ENV_SECRET_*`): scrubbed from output.
    pub secrets: Mutex<BTreeSet<String>>,
    pub flags: Value,
    pub invocation_id: String,
    pub run_started_at: Value,
    pub logs: Mutex<Vec<(LogLevel, String)>>,
    pub runner: RwLock<Arc<dyn QueryRunner>>,
    pub docs: HashMap<(String, String), String>,
    pub project_name: String,
    pub empty_graph: Value,
    pub statement_results: Mutex<HashMap<String, Value>>,
    /// `selected_resources`: the unique ids the command selected (set once it has).
    pub selected_resources: RwLock<Value>,
}

impl Shared {
    /// Context variables that are the same for every node.
    pub fn context_value(&self, key: &str) -> Option<Value> {
        Some(match key {
            "target" => self.target_value.clone(),
            "flags" => self.flags.clone(),
            "invocation_id" => Value::from(self.invocation_id.as_str()),
            "run_started_at" => self.run_started_at.clone(),
            "project_name" => Value::from(self.project_name.as_str()),
            "dbt_version" => Value::from(crate::DBT_COMPAT_VERSION),
            "selected_resources" => self.selected_resources.read().unwrap_or_else(|e| e.into_inner()).clone(),
            _ => return None,
        })
    }

    /// Replaces every secret value in `text` with `*****`.
    pub fn scrub<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        scrub(text, secrets.iter())
    }

    pub fn log(&self, level: LogLevel, msg: String) {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).push((level, msg));
    }

    pub fn take_logs(&self) -> Vec<(LogLevel, String)> {
        std::mem::take(&mut *self.logs.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

pub fn scrub<'a, 's>(text: &'a str, secrets: impl Iterator<Item = &'s String>) -> std::borrow::Cow<'a, str> {
    let mut out = std::borrow::Cow::Borrowed(text);
    for s in secrets {
        if !s.is_empty() && out.contains(s.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(s.as_str(), "*****"));
        }
    }
    out
}

/// Settings of a render environment that come from the command line.
#[derive(Clone, Debug, Default)]
pub struct Invocation {
    pub cli_vars: IndexMap<String, Json>,
    pub env_vars: HashMap<String, String>,
    pub full_refresh: bool,
    /// `--empty`: `ref()` and `source()` read zero rows.
    pub empty: bool,
    /// `--fail-fast`.
    pub fail_fast: bool,
    pub which: String,
    pub store_failures: bool,
    pub invocation_id: String,
    /// RFC 3339 time the run started.
    pub run_started_at: String,
}

#[derive(Clone)]
pub struct JinjaEnv {
    pub env: Arc<Environment<'static>>,
    pub shared: Arc<Shared>,
    /// Sources of the templates rendered by [`JinjaEnv::render_shared`], by `name::hash`; the
    /// environment's loader reads them, so each is compiled once per process.
    sources: Arc<RwLock<HashMap<String, String>>>,
}

impl JinjaEnv {
    /// Builds the environment: every macro of every package, dbt's macros, the globals.
    pub fn build(project: &Project, target: &Target, inv: &Invocation, diags: &mut Vec<Diagnostic>) -> JinjaEnv {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_recursion_limit(500);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(modules::unknown_method);

        let mut index = MacroIndex { root: project.name().to_string(), ..Default::default() };
        index.prefixes = target.adapter.dispatch_chain();
        for d in &project.config().dispatch {
            index.dispatch.insert(d.macro_namespace.clone(), d.search_order.clone());
        }
        let mut docs = HashMap::new();
        let mut templates: Vec<(String, String)> = Vec::new();
        let mut add_file = |package: &str,
                            display: &str,
                            original: &str,
                            text: &Arc<str>,
                            index: &mut MacroIndex,
                            diags: &mut Vec<Diagnostic>,
                            docs: &mut HashMap<(String, String), String>| {
            let found = match blocks::find_blocks(text) {
                Ok(b) => b,
                Err((line, msg)) => {
                    diags.push(
                        Diagnostic::error(Code::JinjaSyntax, format!("Jinja syntax error in {display}: {msg}")).with_label(Label::new(
                            SourceText::new(display, text.clone()),
                            line,
                            1,
                            2,
                            "opened here",
                        )),
                    );
                    return;
                }
            };
            for block in found {
                match block.kind {
                    BlockKind::Macro | BlockKind::Test => {
                        let name = if block.kind == BlockKind::Test { format!("test_{}", block.name) } else { block.name.clone() };
                        let template = format!("{display}::{name}");
                        let def = MacroDef {
                            package: package.to_string(),
                            unique_id: format!("macro.{package}.{name}"),
                            name: name.clone(),
                            template: template.clone(),
                            display_path: display.to_string(),
                            original_path: original.to_string(),
                            line: block.line,
                            args: block.args.clone(),
                            implicit: blocks::implicit_params(text, &block),
                            source: Arc::from(&text[block.start..block.end]),
                        };
                        let pkg = index.packages.entry(package.to_string()).or_default();
                        if let Some(prev) = pkg.get(&name) {
                            if package != INTERNAL {
                                diags.push(
                                    Diagnostic::error(
                                        Code::DuplicateMacro,
                                        format!("macro `{name}` is defined twice in package `{package}`"),
                                    )
                                    .with_label(Label::new(SourceText::new(display, text.clone()), block.line, 1, 2, "second definition"))
                                    .with_note(format!("first defined in {}:{}", prev.display_path, prev.line))
                                    .with_help("rename or remove one of them"),
                                );
                            }
                            continue;
                        }
                        pkg.insert(name, Arc::new(def));
                        templates.push((template, literals::mutable_literals(&blocks::block_template(text, &block)).into_owned()));
                    }
                    BlockKind::Docs => {
                        docs.insert((package.to_string(), block.name.clone()), text[block.body_start..block.body_end].trim().to_string());
                    }
                    BlockKind::Materialization => {
                        index.materializations.insert(block.name.trim_end_matches(',').to_string());
                    }
                    BlockKind::Snapshot => {}
                }
            }
        };
        let internal: Arc<str> = Arc::from(DBT_MACROS);
        add_file(INTERNAL, DBT_MACROS_PATH, DBT_MACROS_PATH, &internal, &mut index, diags, &mut docs);
        for file in &project.files {
            let generic_test_dir = file.kind == FileKind::Test
                && (file.path.starts_with("generic/") || file.text.contains("{% test") || file.text.contains("{%- test"));
            if matches!(file.kind, FileKind::Macro | FileKind::Docs) || generic_test_dir {
                let pkg = &project.packages[file.package].name;
                add_file(pkg, &file.display_path, &file.original_path, &file.text, &mut index, diags, &mut docs);
            }
        }
        for (name, source) in templates {
            if let Err(e) = env.add_template_owned(name.clone(), source) {
                let file = error::template_file(&name).to_string();
                let text =
                    project.files.iter().find(|f| f.display_path == file).map(|f| f.text.clone()).unwrap_or_else(|| internal.clone());
                let src = SourceText::new(file.clone(), text);
                diags.push(error::to_diagnostic(&e, &|p| (p == file).then(|| src.clone()), &format!("macro file {file}")));
            }
        }
        let index = Arc::new(index);

        // Unqualified macro names resolve at call time; namespaces resolve a fixed package.
        for name in index.all_names() {
            env.add_global(name.clone(), Value::from_object(MacroFn { name, package: None, index: index.clone() }));
        }
        for package in index.packages.keys() {
            env.add_global(package.clone(), Value::from_object(Namespace { package: package.clone(), index: index.clone() }));
        }
        builtins::register(&mut env, index.clone());

        let mut public = target.public_settings();
        public.insert("name".into(), Json::from(target.name.as_str()));
        public.insert("target_name".into(), Json::from(target.name.as_str()));
        public.insert("profile_name".into(), Json::from(target.profile_name.as_str()));
        public.insert("type".into(), Json::from(target.adapter_type.as_str()));
        public.insert("database".into(), Json::from(target.database.as_str()));
        public.insert("schema".into(), Json::from(target.schema.as_str()));
        public.insert("threads".into(), Json::from(target.threads));
        // The adapter's own names too: `target.dbname`, `target.project`, `target.dataset`.
        for (keys, value) in [(target.adapter.database_keys, &target.database), (target.adapter.schema_keys, &target.schema)] {
            for k in keys {
                public.entry(k.to_string()).or_insert(Json::from(value.as_str()));
            }
        }
        let mut secrets: BTreeSet<String> = target.secret_values().into_iter().collect();
        for (k, v) in &inv.env_vars {
            if k.starts_with("DBT_ENV_SECRET_") && !v.is_empty() {
                secrets.insert(v.clone());
            }
        }
        let flags = crate::jinja::vmap([
            ("FULL_REFRESH", Value::from(inv.full_refresh)),
            ("STORE_FAILURES", Value::from(inv.store_failures)),
            ("WHICH", Value::from(inv.which.as_str())),
            ("FAIL_FAST", Value::from(inv.fail_fast)),
            ("USE_COLORS", Value::from(false)),
            ("EMPTY", Value::from(inv.empty)),
        ]);
        let shared = Shared {
            env: std::sync::OnceLock::new(),
            macros: index,
            target_value: crate::jinja::ser(&public),
            target: target.clone(),
            vars: Vars::from_project(project, inv.cli_vars.clone()),
            env_vars: inv.env_vars.clone(),
            secrets: Mutex::new(secrets),
            flags,
            invocation_id: inv.invocation_id.clone(),
            run_started_at: modules::datetime_value(&inv.run_started_at),
            logs: Mutex::new(Vec::new()),
            runner: RwLock::new(Arc::new(NoEngine)),
            docs,
            project_name: project.name().to_string(),
            empty_graph: crate::jinja::vmap(
                ["nodes", "sources", "macros", "exposures", "metrics", "groups", "semantic_models", "saved_queries"]
                    .map(|k| (k, Value::from(std::collections::BTreeMap::<String, Value>::new()))),
            ),
            statement_results: Mutex::new(HashMap::new()),
            selected_resources: RwLock::new(Value::from(Vec::<Value>::new())),
        };
        let sources: Arc<RwLock<HashMap<String, String>>> = Arc::default();
        let loader_sources = sources.clone();
        env.set_loader(move |name| Ok(loader_sources.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()));
        let env = Arc::new(env);
        let _ = shared.env.set(env.clone());
        JinjaEnv { env, shared: Arc::new(shared), sources }
    }

    /// Renders `source` (named after its file) with `ctx` as the root context.
    pub fn render(&self, name: &str, source: &str, ctx: Arc<context::NodeCtx>) -> Result<String, minijinja::Error> {
        self.env.template_from_named_str(name, source)?.render(Value::from_dyn_object(ctx))
    }

    /// [`JinjaEnv::render`] for a source that many nodes share (a generic test's call of its
    /// macro): compiled once and kept for the process. (Keeping every model's template too
    /// saved another 2% of compile time but cost 100 MB at 10,000 models.)
    pub fn render_shared(&self, name: &str, source: &str, ctx: Arc<context::NodeCtx>) -> Result<String, minijinja::Error> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut h);
        // `::` ends the file part of a template name (see `error::template_file`).
        let key = format!("{name}::{:016x}{:x}", h.finish(), source.len());
        let known = self.sources.read().unwrap_or_else(|e| e.into_inner()).contains_key(&key);
        if !known {
            self.sources.write().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_insert_with(|| source.to_string());
        }
        self.env.get_template(&key)?.render(Value::from_dyn_object(ctx))
    }

    /// Renders a config value (`dbt_project.yml`, `profiles.yml`) that contains Jinja, with
    /// `var`/`env_var`/`target` available.
    pub fn render_value(&self, text: &str, package: &str) -> Result<String, minijinja::Error> {
        self.render_in(context::Phase::Parse, text, package, false)
    }

    /// Renders a project hook (`on-run-start`/`on-run-end`): as a config value, but with
    /// `execute` true, so `run_query`, `statement` and `adapter.*` reach the warehouse.
    /// Renders an `on-run-start`/`on-run-end` hook of `package`; `extra` adds context
    /// variables (`results`, `schemas`, `database_schemas` for `on-run-end`).
    pub fn render_project_hook(&self, text: &str, package: &str, extra: Vec<(String, Value)>) -> Result<String, minijinja::Error> {
        let mut ctx = self.project_ctx(context::Phase::Compile, package, true);
        ctx.extra = extra;
        self.render("<config>", text, Arc::new(ctx))
    }

    /// Renders a source's `loaded_at_query` when its freshness is checked: `this` is the
    /// source's relation, and `run_query`/`adapter.*` reach the warehouse.
    pub fn render_for_relation(&self, text: &str, package: &str, this: relation::Relation) -> Result<String, minijinja::Error> {
        let mut ctx = self.project_ctx(context::Phase::Compile, package, false);
        ctx.this = Some(this.into_value());
        self.render("<loaded_at_query>", text, Arc::new(ctx))
    }

    fn render_in(&self, phase: context::Phase, text: &str, package: &str, secrets_allowed: bool) -> Result<String, minijinja::Error> {
        self.render("<config>", text, Arc::new(self.project_ctx(phase, package, secrets_allowed)))
    }

    fn project_ctx(&self, phase: context::Phase, package: &str, secrets_allowed: bool) -> context::NodeCtx {
        let mut ctx = context::NodeCtx::new(
            phase,
            context::NodeInfo { package: package.to_string(), name: "config".into(), resource_type: "config", ..Default::default() },
            Default::default(),
            self.shared.clone(),
        );
        ctx.secrets_allowed = secrets_allowed;
        ctx
    }

    /// Sets `selected_resources` for the templates rendered from now on.
    pub fn set_selected(&self, ids: &std::collections::BTreeSet<String>) {
        *self.shared.selected_resources.write().unwrap_or_else(|e| e.into_inner()) =
            Value::from(ids.iter().map(|id| Value::from(id.as_str())).collect::<Vec<_>>());
    }

    /// Whether a macro `name` is callable without a namespace (the root project's, or dbt's).
    pub fn has_macro(&self, name: &str) -> bool {
        self.shared.macros.lookup(None, name).is_some()
    }

    /// Calls a macro by (unqualified) name from `ctx`'s package, e.g. a project's own
    /// `generate_schema_name`, and returns its value.
    pub fn call_macro(&self, name: &str, args: Vec<Value>, mut ctx: context::NodeCtx) -> Result<Value, minijinja::Error> {
        ctx.extra.push(("__args".into(), Value::from(args)));
        let source = format!("{{% set __kiln_result = {name}(*__args) %}}");
        let template = self.env.template_from_named_str("<call>", &source)?;
        let captured = template.render_captured(Value::from_object(ctx))?;
        Ok(captured.state().lookup("__kiln_result").unwrap_or_default())
    }
}
