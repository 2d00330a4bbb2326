//! Macros: the index of every macro of every package, the callable that runs one (with dbt's
//! `return()`), package namespaces (`dbt_utils.star(...)`) and `adapter.dispatch`.

use super::context::{MacroScope, NodeCtx, current_package, enter, node_ctx};
use super::error::kiln_error;
use crate::diagnostics::Code;
use minijinja::value::{Enumerator, Object, Value};
use minijinja::{Error, ErrorKind, State};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The package name of dbt's built-in macros.
pub const INTERNAL: &str = "dbt";
const RETURN_TEMP: &str = "__kiln_return";
pub const RETURN_MARKER: &str = "__kiln_return__";

/// One macro (or generic test, as `test_<name>`).
#[derive(Clone, Debug)]
pub struct MacroDef {
    pub package: String,
    pub name: String,
    pub unique_id: String,
    /// Name of its template in the environment.
    pub template: String,
    pub display_path: String,
    pub original_path: String,
    pub line: usize,
    pub args: Vec<String>,
    /// `varargs`/`kwargs` the body uses without declaring them (filled by [`call_macro`]).
    pub implicit: Vec<&'static str>,
    pub source: Arc<str>,
}

/// (caller's package, macro name, namespace) of an `adapter.dispatch` call.
type DispatchKey = (Option<String>, String, Option<String>);

#[derive(Default, Debug)]
pub struct MacroIndex {
    pub packages: HashMap<String, HashMap<String, Arc<MacroDef>>>,
    pub root: String,
    /// `dispatch:` search orders from the root project.
    pub dispatch: HashMap<String, Vec<String>>,
    /// Adapter prefixes for dispatch, most specific first (`postgres`, `default`).
    pub prefixes: Vec<String>,
    /// Custom materializations (`{% materialization name, adapter %}` blocks).
    pub materializations: std::collections::BTreeSet<String>,
    /// Resolved `adapter.dispatch` calls: (caller's package, name, namespace) -> macro.
    pub dispatched: std::sync::RwLock<HashMap<DispatchKey, Arc<MacroDef>>>,
}

impl MacroIndex {
    pub fn get(&self, package: &str, name: &str) -> Option<&Arc<MacroDef>> {
        self.packages.get(package)?.get(name)
    }

    /// dbt's lookup for an unqualified name: the current package, the root project, dbt's own.
    pub fn lookup(&self, current: Option<&str>, name: &str) -> Option<&Arc<MacroDef>> {
        current.and_then(|p| self.get(p, name)).or_else(|| self.get(&self.root, name)).or_else(|| self.get(INTERNAL, name))
    }

    /// Names callable without a namespace from somewhere.
    pub fn all_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.packages.values().flat_map(|m| m.keys().cloned()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// `adapter.dispatch(name, namespace)`: the first `<prefix>__name` along the search order.
    pub fn dispatch(&self, current: Option<&str>, name: &str, namespace: Option<&str>) -> Result<Arc<MacroDef>, String> {
        let key = (current.map(str::to_string), name.to_string(), namespace.map(str::to_string));
        if let Some(found) = self.dispatched.read().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(found);
        }
        let found = self.dispatch_uncached(current, name, namespace)?;
        if let Ok(mut m) = self.dispatched.write() {
            m.insert(key, found.clone());
        }
        Ok(found)
    }

    fn dispatch_uncached(&self, current: Option<&str>, name: &str, namespace: Option<&str>) -> Result<Arc<MacroDef>, String> {
        let search: Vec<Option<String>> = match namespace {
            None => vec![None],
            Some(ns) => match self.dispatch.get(ns) {
                Some(order) => order.iter().cloned().map(Some).collect(),
                // As dbt-core: an installed package (dbt's own included) is searched after the
                // root project, so the project's `duckdb__snapshot_get_time` wins over dbt's.
                None if (ns == INTERNAL || self.packages.contains_key(ns)) && ns != self.root => {
                    vec![Some(self.root.clone()), Some(ns.to_string())]
                }
                None => vec![Some(ns.to_string())],
            },
        };
        let mut tried = Vec::new();
        for package in &search {
            for prefix in &self.prefixes {
                let candidate = format!("{prefix}__{name}");
                let found = match package {
                    None => self.lookup(current, &candidate),
                    Some(p) => self.get(p, &candidate),
                };
                if let Some(m) = found {
                    return Ok(m.clone());
                }
                tried.push(match package {
                    Some(p) => format!("{p}.{candidate}"),
                    None => candidate,
                });
            }
        }
        Err(format!("adapter.dispatch found no implementation of `{name}`; tried {}", tried.join(", ")))
    }
}

/// Calls a macro by running its template with the caller's context.
pub fn call_macro(state: &mut State, def: &Arc<MacroDef>, args: &[Value]) -> Result<Value, Error> {
    let ctx = node_ctx(state)?;
    if let Some(value) = ctx.overrides.as_ref().and_then(|o| o.macros.get(&def.name)) {
        return Ok(crate::jinja::ser(value));
    }
    ctx.record_macro(&def.unique_id);
    let env = ctx.shared.env.get().cloned().ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "macros are not available yet"))?;
    let _depth = CallDepth::enter(def)?;
    let _current = enter(state.lookup("__kiln").unwrap_or_default());
    // Each macro's template is evaluated once per thread and node context, and its state reused
    // for that context's further calls; a recursive call finds the slot empty and evaluates a
    // fresh one. The state is never reused for another context: evaluating a template encloses
    // the context values its macros name (`this`, `execute`, `model`, ...) in their closures.
    let key = Arc::as_ptr(def) as usize;
    let cached = MACRO_STATES.with(|m| {
        let mut states = m.borrow_mut();
        // A new environment (a reload in `kiln watch`): this thread's states of the old one go,
        // and with them the last references to it.
        if states.env.as_ref().is_none_or(|e| !Arc::ptr_eq(e, &env)) {
            states.by_macro.clear();
            states.env = Some(env.clone());
        }
        states.by_macro.remove(&key)
    });
    let mut captured = match cached.filter(|(owner, _)| Arc::ptr_eq(owner, &ctx)) {
        Some((_, c)) => c,
        None => {
            // SAFETY: the environment outlives every state evaluated from it: `env` (an `Arc`)
            // lives until this function returns, and a state kept in `MACRO_STATES` is cleared
            // before that thread's `states.env`, the other `Arc` of this environment, is
            // replaced or dropped (`MacroStates` drops `by_macro` first).
            let env: &'static minijinja::Environment<'static> = unsafe { &*Arc::as_ptr(&env) };
            env.get_template(&def.template)?.render_captured(Value::from_object(MacroScope { package: def.package.clone() }))?
        }
    };
    let args = implicit_args(def, args);
    let result = captured.with_state_mut(|st| {
        let Some(m) = st.lookup(&def.name) else {
            return Err(Error::new(ErrorKind::InvalidOperation, format!("macro `{}` did not define itself", def.name)));
        };
        let result = match m.call(st, &args) {
            Ok(v) => Ok(v),
            Err(e) => match st.get_temp(RETURN_TEMP) {
                Some(v) if !v.is_undefined() && is_return(&e) => Ok(v),
                _ => Err(e),
            },
        };
        st.set_temp(RETURN_TEMP, Value::UNDEFINED);
        result
    });
    MACRO_STATES.with(|m| {
        let mut states = m.borrow_mut();
        if states.env.as_ref().is_some_and(|e| Arc::ptr_eq(e, &env)) {
            states.by_macro.insert(key, (ctx, captured));
        }
    });
    result
}

/// How deep macro calls may nest on one thread. dbt projects nest a few dozen at most; a
/// recursion with no end would otherwise overflow the stack and abort kiln.
const MAX_CALL_DEPTH: usize = 64;

thread_local! {
    /// The macros being called on this thread, outermost first.
    static CALLS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A macro call in progress (see [`MAX_CALL_DEPTH`]).
struct CallDepth;

impl CallDepth {
    fn enter(def: &MacroDef) -> Result<CallDepth, Error> {
        CALLS.with(|c| {
            let mut calls = c.borrow_mut();
            if calls.len() >= MAX_CALL_DEPTH {
                let cycle = calls.iter().rev().take(8).rev().cloned().collect::<Vec<_>>().join(" -> ");
                return Err(kiln_error(
                    Code::JinjaRender,
                    format!(
                        "macro calls nest deeper than {MAX_CALL_DEPTH} (... -> {cycle} -> {}); {} ({}:{}) may call itself without end",
                        def.name, def.name, def.display_path, def.line
                    ),
                    Some("give the recursion a condition that ends it".into()),
                ));
            }
            calls.push(def.name.clone());
            Ok(CallDepth)
        })
    }
}

impl Drop for CallDepth {
    fn drop(&mut self) {
        CALLS.with(|c| {
            c.borrow_mut().pop();
        });
    }
}

/// Jinja's implicit macro parameters: positional arguments beyond the declared ones go to
/// `varargs`, keyword arguments the macro does not declare go to `kwargs` (for the macros whose
/// body uses them).
fn implicit_args(def: &MacroDef, args: &[Value]) -> Vec<Value> {
    if def.implicit.is_empty() {
        return args.to_vec();
    }
    let (mut positional, kwargs) = match args.last().map(|a| minijinja::value::Kwargs::try_from(a.clone())) {
        Some(Ok(kw)) => (args[..args.len() - 1].to_vec(), Some(kw)),
        _ => (args.to_vec(), None),
    };
    let mut known: Vec<(String, Value)> = vec![];
    let mut extra: std::collections::BTreeMap<String, Value> = Default::default();
    for name in kwargs.iter().flat_map(|kw| kw.args().map(str::to_string).collect::<Vec<_>>()) {
        let value = kwargs.as_ref().and_then(|kw| kw.peek::<Value>(&name).ok()).unwrap_or_default();
        if def.args.contains(&name) {
            known.push((name, value));
        } else {
            extra.insert(name, value);
        }
    }
    let varargs = positional.split_off(positional.len().min(def.args.len()));
    if def.implicit.contains(&"varargs") {
        known.push(("varargs".into(), Value::from(varargs)));
    } else {
        positional.extend(varargs);
    }
    if def.implicit.contains(&"kwargs") {
        known.push(("kwargs".into(), Value::from(extra)));
    } else {
        known.extend(extra);
    }
    positional.push(Value::from(minijinja::value::Kwargs::from_iter(known)));
    positional
}

/// One thread's evaluated macro templates, all of one environment.
#[derive(Default)]
struct MacroStates {
    /// By macro, with the node context each was evaluated for (held, so its address cannot be
    /// reused by another context while the entry lives). Declared first: dropped before `env`.
    by_macro: std::collections::HashMap<usize, (Arc<NodeCtx>, minijinja::Captured<'static>)>,
    /// The environment the states borrow from.
    env: Option<Arc<minijinja::Environment<'static>>>,
}

thread_local! {
    static MACRO_STATES: std::cell::RefCell<MacroStates> = std::cell::RefCell::new(MacroStates::default());
}

fn is_return(e: &Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        // (a minijinja error's own message, without formatting the whole error)
        let hit = match err.downcast_ref::<Error>() {
            Some(e) => e.detail().is_some_and(|d| d.contains(RETURN_MARKER)),
            None => err.to_string().contains(RETURN_MARKER),
        };
        if hit {
            return true;
        }
        cur = err.source();
    }
    false
}

/// `return(value)`: ends the macro with a value (not just text), as dbt does.
pub fn dbt_return(state: &mut State, value: Option<Value>) -> Result<Value, Error> {
    state.set_temp(RETURN_TEMP, value.unwrap_or(Value::from(())));
    Err(Error::new(ErrorKind::InvalidOperation, RETURN_MARKER))
}

/// A callable macro value. `package: None` resolves the name at call time from the caller's
/// package (dbt's unqualified lookup).
#[derive(Debug)]
pub struct MacroFn {
    pub name: String,
    pub package: Option<String>,
    pub index: Arc<MacroIndex>,
}

impl MacroFn {
    fn resolve(&self, state: &State) -> Result<Arc<MacroDef>, Error> {
        let found = match &self.package {
            Some(p) => self.index.get(p, &self.name),
            None => self.index.lookup(current_package(state).as_deref(), &self.name),
        };
        found.cloned().ok_or_else(|| {
            kiln_error(
                Code::MissingMacro,
                format!("macro `{}` is not available here", self.name),
                Some(format!("`{}` exists in another package; call it with its namespace, e.g. `package_name.{}()`", self.name, self.name)),
            )
        })
    }
}

impl Object for MacroFn {
    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let def = self.resolve(state)?;
        call_macro(state, &def, args)
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "name" => Some(Value::from(self.name.as_str())),
            "package_name" => self.package.as_deref().map(Value::from),
            _ => None,
        }
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<macro {}>", self.name)
    }
}

/// A package namespace: `dbt_utils`, `dbt`, or the project's own name.
#[derive(Debug)]
pub struct Namespace {
    pub package: String,
    pub index: Arc<MacroIndex>,
}

impl Object for Namespace {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        self.index.get(&self.package, name)?;
        Some(Value::from_object(MacroFn { name: name.to_string(), package: Some(self.package.clone()), index: self.index.clone() }))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut names: Vec<Value> =
            self.index.packages.get(&self.package).map(|m| m.keys().map(|k| Value::from(k.as_str())).collect()).unwrap_or_default();
        names.sort();
        Enumerator::Values(names)
    }
}

/// `adapter.dispatch(...)` result.
pub fn dispatch(state: &State, index: &Arc<MacroIndex>, name: &str, namespace: Option<&str>) -> Result<Value, Error> {
    let def = index.dispatch(current_package(state).as_deref(), name, namespace).map_err(|msg| {
        kiln_error(Code::MissingMacro, msg, Some(format!("define `default__{name}` (or an adapter-specific variant) in your macros")))
    })?;
    Ok(Value::from_object(MacroFn { name: def.name.clone(), package: Some(def.package.clone()), index: index.clone() }))
}

/// Which macros an edit changed, between two builds of the environment (watch mode).
#[derive(Debug, Default)]
pub struct MacroChanges {
    /// Macros were added, removed or renamed: lookups may resolve differently anywhere.
    pub all: bool,
    /// Unique ids of the edited macros and of every macro whose source names one of them.
    pub ids: BTreeSet<String>,
    /// Their names.
    pub names: BTreeSet<String>,
}

impl MacroChanges {
    pub fn between(old: &MacroIndex, new: &MacroIndex) -> MacroChanges {
        let ids = |index: &MacroIndex| -> BTreeSet<String> {
            index.packages.values().flat_map(|m| m.values()).map(|d| d.unique_id.clone()).collect()
        };
        if ids(old) != ids(new) || old.dispatch != new.dispatch || old.materializations != new.materializations {
            return MacroChanges { all: true, ..Default::default() };
        }
        let mut changes = MacroChanges::default();
        let all: Vec<&Arc<MacroDef>> = new.packages.values().flat_map(|m| m.values()).collect();
        for def in &all {
            if old.get(&def.package, &def.name).is_none_or(|o| o.source != def.source) {
                changes.ids.insert(def.unique_id.clone());
                changes.names.insert(def.name.clone());
            }
        }
        // A macro that calls an edited one renders differently too.
        loop {
            let before = changes.ids.len();
            for def in &all {
                if !changes.ids.contains(&def.unique_id) && changes.names.iter().any(|n| mentions(&def.source, n)) {
                    changes.ids.insert(def.unique_id.clone());
                    changes.names.insert(def.name.clone());
                }
            }
            if changes.ids.len() == before {
                break;
            }
        }
        changes
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.ids.is_empty()
    }

    /// Does a template that called `called` (recorded at parse time) or whose text is `raw`
    /// depend on an edited macro? The text check catches calls the parse render did not reach
    /// (inside `{% if execute %}` or `is_incremental()`).
    pub fn touches<'a>(&self, raw: &str, called: impl IntoIterator<Item = &'a String>) -> bool {
        self.all || called.into_iter().any(|id| self.ids.contains(id)) || self.names.iter().any(|n| mentions(raw, n))
    }
}

/// Does `text` contain `name` as a whole identifier?
fn mentions(text: &str, name: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(name)
        .any(|(i, _)| !text[..i].chars().next_back().is_some_and(ident) && !text[i + name.len()..].chars().next().is_some_and(ident))
}

#[cfg(test)]
mod change_tests {
    use super::*;

    fn index(macros: &[(&str, &str)]) -> MacroIndex {
        let mut index = MacroIndex { root: "p".into(), ..Default::default() };
        for (name, source) in macros {
            let def = MacroDef {
                package: "p".into(),
                unique_id: format!("macro.p.{name}"),
                name: name.to_string(),
                template: String::new(),
                display_path: String::new(),
                original_path: String::new(),
                line: 1,
                args: vec![],
                implicit: vec![],
                source: Arc::from(*source),
            };
            index.packages.entry("p".into()).or_default().insert(name.to_string(), Arc::new(def));
        }
        index
    }

    #[test]
    fn an_edit_reaches_the_macros_that_call_it() {
        let old = index(&[("a", "x"), ("b", "{{ a() }}"), ("c", "{{ b() }}"), ("ab", "y")]);
        let new = index(&[("a", "x2"), ("b", "{{ a() }}"), ("c", "{{ b() }}"), ("ab", "y")]);
        let ch = MacroChanges::between(&old, &new);
        assert!(!ch.all);
        assert_eq!(ch.ids.iter().map(String::as_str).collect::<Vec<_>>(), ["macro.p.a", "macro.p.b", "macro.p.c"]);
        assert!(ch.touches("select {{ c() }}", []));
        assert!(!ch.touches("select {{ ab() }}, a_b", []), "`ab` and `a_b` are other names");
        assert!(ch.touches("select 1", &["macro.p.b".to_string()]));
        assert!(MacroChanges::between(&new, &new).is_empty());
        let renamed = index(&[("a2", "x2"), ("b", "{{ a() }}"), ("c", "{{ b() }}"), ("ab", "y")]);
        assert!(MacroChanges::between(&new, &renamed).all);
    }
}
