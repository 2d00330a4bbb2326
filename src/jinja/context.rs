//! The per-render context: which node is being rendered, in which phase, and what the parse
//! phase records (`ref`, `source`, `config`, macros used). Globals find it through the
//! `__kiln` variable of the render state.

use super::Shared;
use crate::project::config::{ConfigMap, merge_one};
use minijinja::value::{Object, Value};
use minijinja::{Error, ErrorKind, State};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};

/// dbt renders every file twice: once to learn its dependencies and configs (`execute` is false),
/// once to produce SQL for the chosen target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Parse,
    Compile,
}

/// A `ref()` call as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RefCall {
    pub package: Option<String>,
    pub name: String,
    pub version: Option<String>,
}

/// What the parse phase learnt about a node.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub refs: Vec<RefCall>,
    pub sources: Vec<(String, String)>,
    /// Unique ids of the macros the node called.
    pub macros: BTreeSet<String>,
    /// `config()` calls in the file, in order.
    pub inline_config: ConfigMap,
    /// The render read the warehouse (`run_query`, `statement`, `adapter` introspection): its
    /// SQL depends on what the warehouse holds.
    pub queried: bool,
}

/// Identity of the node being rendered.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub unique_id: String,
    pub package: String,
    pub name: String,
    pub resource_type: &'static str,
    pub original_file_path: String,
    pub path: String,
}

/// Things a unit test can override.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub vars: indexmap::IndexMap<String, serde_json::Value>,
    pub env_vars: indexmap::IndexMap<String, String>,
    pub macros: indexmap::IndexMap<String, serde_json::Value>,
}

pub type LazyValue = Arc<dyn Fn() -> Value + Send + Sync>;

/// The root context object of a render.
pub struct NodeCtx {
    pub phase: Phase,
    pub node: NodeInfo,
    /// The effective config. In the parse phase it starts with project + YAML config and grows
    /// with each `config()` call; in the compile phase it is final.
    pub config: Mutex<Arc<ConfigMap>>,
    pub record: Mutex<Record>,
    pub this: Option<Value>,
    pub is_incremental: bool,
    pub overrides: Option<Arc<Overrides>>,
    pub resolver: Option<Arc<dyn super::Resolver>>,
    pub shared: Arc<Shared>,
    /// Extra variables (generic test kwargs, `sql` for hooks, ...).
    pub extra: Vec<(String, Value)>,
    /// A hook is rendered: `DBT_ENV_SECRET_*` may be read (never in a model's SQL or a config
    /// value, which end up in artifacts and warehouse catalogs).
    pub secrets_allowed: bool,
    model_builder: Option<LazyValue>,
    model: OnceLock<Value>,
}

impl std::fmt::Debug for NodeCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCtx").field("node", &self.node.unique_id).field("phase", &self.phase).finish()
    }
}

impl NodeCtx {
    pub fn new(phase: Phase, node: NodeInfo, config: Arc<ConfigMap>, shared: Arc<Shared>) -> NodeCtx {
        NodeCtx {
            phase,
            node,
            config: Mutex::new(config),
            record: Mutex::new(Record::default()),
            this: None,
            is_incremental: false,
            overrides: None,
            resolver: None,
            shared,
            extra: Vec::new(),
            secrets_allowed: false,
            model_builder: None,
            model: OnceLock::new(),
        }
    }

    pub fn with_model(mut self, builder: LazyValue) -> Self {
        self.model_builder = Some(builder);
        self
    }

    /// The warehouse, for a query or an introspection; the render is recorded as one that
    /// read it.
    pub fn runner(&self) -> Arc<dyn super::QueryRunner> {
        self.record.lock().unwrap_or_else(|e| e.into_inner()).queried = true;
        self.shared.runner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn take_record(&self) -> Record {
        std::mem::take(&mut *self.record.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn config_get(&self, key: &str) -> Option<serde_json::Value> {
        let key = crate::project::config::normalize_key(key);
        self.config.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    pub fn set_config(&self, key: &str, value: serde_json::Value) {
        self.record_config(key, value.clone());
        merge_one(Arc::make_mut(&mut self.config.lock().unwrap_or_else(|e| e.into_inner())), key, value);
    }

    /// Records a `config()` call without changing what the render sees.
    pub fn record_config(&self, key: &str, value: serde_json::Value) {
        merge_one(&mut self.record.lock().unwrap_or_else(|e| e.into_inner()).inline_config, key, value);
    }

    pub fn record_macro(&self, unique_id: &str) {
        if self.phase == Phase::Parse {
            let mut record = self.record.lock().unwrap_or_else(|e| e.into_inner());
            if !record.macros.contains(unique_id) {
                record.macros.insert(unique_id.to_string());
            }
        }
    }

    fn model_value(&self) -> Value {
        self.model
            .get_or_init(|| match &self.model_builder {
                Some(b) => b(),
                None => crate::jinja::vmap([
                    ("unique_id", Value::from(self.node.unique_id.as_str())),
                    ("name", Value::from(self.node.name.as_str())),
                    ("resource_type", Value::from(self.node.resource_type)),
                    ("package_name", Value::from(self.node.package.as_str())),
                    ("original_file_path", Value::from(self.node.original_file_path.as_str())),
                    ("path", Value::from(self.node.path.as_str())),
                ]),
            })
            .clone()
    }
}

impl Object for NodeCtx {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        Some(match key {
            "__kiln" => Value::from_dyn_object(self.clone()),
            "__kiln_pkg" => Value::from(self.node.package.as_str()),
            "execute" => Value::from(self.phase == Phase::Compile),
            "this" => match &self.this {
                Some(t) => t.clone(),
                None => super::relation::Relation::new(
                    &self.shared.target.database,
                    &self.shared.target.schema,
                    &self.node.name,
                    self.shared.target.quote_char(),
                )
                .into_value(),
            },
            "model" => self.model_value(),
            "graph" => match (&self.resolver, self.phase) {
                (Some(r), Phase::Compile) => r.graph(),
                _ => self.shared.empty_graph.clone(),
            },
            _ => {
                if let Some((_, v)) = self.extra.iter().find(|(k, _)| k == key) {
                    return Some(v.clone());
                }
                return self.shared.context_value(key);
            }
        })
    }
}

thread_local! {
    /// The node contexts of the macro calls running on this thread, innermost last. Macro
    /// templates are evaluated once per thread and reused, so their root context looks the
    /// caller up here instead of holding it.
    static CURRENT: std::cell::RefCell<Vec<Value>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Makes `ctx` the current node context until the guard drops.
pub fn enter(ctx: Value) -> CurrentGuard {
    CURRENT.with(|c| c.borrow_mut().push(ctx));
    CurrentGuard(())
}

pub struct CurrentGuard(());

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| {
            c.borrow_mut().pop();
        });
    }
}

fn current() -> Option<Value> {
    CURRENT.with(|c| c.borrow().last().cloned())
}

/// Root context of a macro's template: the current caller's context, seen from the macro's
/// package.
#[derive(Debug)]
pub struct MacroScope {
    pub package: String,
}

impl Object for MacroScope {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }
    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        if key == "__kiln_pkg" {
            return Some(Value::from(self.package.as_str()));
        }
        current()?.get_attr(key).ok().filter(|v| !v.is_undefined())
    }
}

/// The node context of the current render.
pub fn node_ctx(state: &State) -> Result<Arc<NodeCtx>, Error> {
    state
        .lookup("__kiln")
        .and_then(|v| v.downcast_object::<NodeCtx>())
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "this function is only available while rendering a node"))
}

/// The package whose namespace unqualified macro names resolve in.
pub fn current_package(state: &State) -> Option<String> {
    state.lookup("__kiln_pkg").and_then(|v| v.as_str().map(str::to_string))
}
