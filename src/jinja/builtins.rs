//! dbt's context functions and objects: `ref`, `source`, `config`, `var`, `env_var`,
//! `is_incremental`, `return`, `log`, `print`, `exceptions`, `tojson`/`fromjson`/`toyaml`/
//! `fromyaml`, `zip`, `set`, `local_md5`, `run_query`, `statement`, `load_result`, `adapter`, `api`,
//! `doc`.

use super::context::{Phase, RefCall, node_ctx};
use super::error::kiln_error;
use super::macros::{self, MacroIndex};
use super::relation::{Relation, quote_ident};
use super::{LogLevel, QueryTable};
use crate::diagnostics::Code;
use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};
use serde_json::Value as Json;
use std::sync::Arc;

pub fn register(env: &mut Environment<'static>, index: Arc<MacroIndex>) {
    env.add_function("ref", ref_fn);
    env.add_function("source", source_fn);
    env.add_global("config", Value::from_object(ConfigObj));
    env.add_global("var", Value::from_object(VarObj));
    env.add_function("env_var", env_var);
    env.add_function("is_incremental", is_incremental);
    env.add_function("return", macros::dbt_return);
    env.add_function("log", log);
    env.add_function("print", print);
    env.add_global("exceptions", Value::from_object(Exceptions));
    env.add_function("tojson", tojson);
    env.add_function("fromjson", fromjson);
    env.add_function("toyaml", toyaml);
    env.add_function("fromyaml", fromyaml);
    env.add_function("zip", zip);
    env.add_function("set", set_fn);
    env.add_function("set_strict", set_fn);
    env.add_function("local_md5", local_md5);
    env.add_function("run_query", run_query);
    env.add_function("statement", statement);
    env.add_function("load_result", load_result);
    env.add_function("store_result", |_: Rest<Value>| Value::from(""));
    env.add_function("doc", doc_fn);
    env.add_function("should_store_failures", |state: &State| -> Result<bool, Error> {
        let ctx = node_ctx(state)?;
        Ok(crate::project::config::json_truthy(ctx.config_get("store_failures").as_ref()).unwrap_or(false)
            || ctx.shared.flags.get_attr("STORE_FAILURES").map(|v| v.is_true()).unwrap_or(false))
    });
    env.add_function("should_full_refresh", |state: &State| -> Result<bool, Error> {
        let ctx = node_ctx(state)?;
        Ok(crate::project::config::json_truthy(ctx.config_get("full_refresh").as_ref())
            .unwrap_or_else(|| ctx.shared.flags.get_attr("FULL_REFRESH").map(|v| v.is_true()).unwrap_or(false)))
    });
    // `dict(...)` builds a changeable dict too (`{% set d = dict(a=1) %}{% do d.update(...) %}`).
    env.add_function("dict", |map: Option<Value>, kwargs: Kwargs| -> Result<Value, Error> {
        let mut pairs: Vec<(Value, Value)> = match &map {
            Some(m) if m.kind() == ValueKind::Map => m.try_iter()?.map(|k| (k.clone(), m.get_item(&k).unwrap_or_default())).collect(),
            Some(m) => m.try_iter()?.filter_map(|pair| Some((pair.get_item_by_index(0).ok()?, pair.get_item_by_index(1).ok()?))).collect(),
            None => vec![],
        };
        for key in kwargs.args() {
            pairs.push((Value::from(key), kwargs.peek::<Value>(key)?));
        }
        Ok(super::modules::MutDict::from_pairs(pairs))
    });
    env.add_function("__kiln_list", super::modules::MutList::from_value);
    env.add_function("__kiln_dict", super::modules::MutDict::from_value);
    env.add_global("adapter", Value::from_object(Adapter { index }));
    // dbt's context function, the same as `adapter.load_relation`.
    env.add_function("load_relation", |state: &State, relation: Value| -> Result<Value, Error> {
        let ctx = node_ctx(state)?;
        existing_relation(&ctx, &attr(&relation, "database"), &attr(&relation, "schema"), &attr(&relation, "identifier"))
    });
    env.add_global("api", Value::from_object(Api));
    env.add_global("modules", super::modules::modules_value());
    env.add_global("builtins", crate::jinja::vmap([("ref", Value::from_function(ref_fn)), ("source", Value::from_function(source_fn))]));
    add_type_filters(env);
}

/// dbt's `as_text`, `as_bool`, `as_number` and `as_native` filters (also in `profiles.yml`).
pub fn add_type_filters(env: &mut Environment<'_>) {
    env.add_filter("as_text", |v: Value| v.to_string());
    env.add_filter("as_native", |v: Value| native_filter(v, |_| true));
    env.add_filter("as_bool", |v: Value| native_filter(v, |j| j.is_boolean()));
    env.add_filter("as_number", |v: Value| native_filter(v, Json::is_number));
}

/// Reads a string as dbt's native rendering does (`"5432"` is a number, `"True"` a boolean);
/// fails when the result is not of the kind the filter promises.
fn native_filter(v: Value, wanted: fn(&Json) -> bool) -> Result<Value, Error> {
    let json = match v.as_str() {
        Some(s) => crate::project::render::native(s.to_string()),
        None => to_json(&v),
    };
    if wanted(&json) {
        Ok(crate::jinja::ser(&json))
    } else {
        Err(Error::new(ErrorKind::InvalidOperation, format!("`{v}` is not of the type the filter expects")))
    }
}

pub fn to_json(v: &Value) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

fn quote_char(state: &State) -> char {
    node_ctx(state).map(|c| c.shared.target.quote_char()).unwrap_or('"')
}

fn ref_fn(state: &State, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let ctx = node_ctx(state)?;
    let version =
        kwargs.get::<Option<Value>>("version")?.or(kwargs.get::<Option<Value>>("v")?).filter(|v| !v.is_none()).map(|v| v.to_string());
    let strs: Vec<String> = args.iter().map(|a| a.as_str().map(str::to_string).ok_or(())).collect::<Result<_, _>>().map_err(|_| {
        kiln_error(
            Code::BadRefArgs,
            "ref() takes model names as strings",
            Some("write ref('model_name') or ref('package', 'model_name')".into()),
        )
    })?;
    let (package, name) = match strs.as_slice() {
        [name] => (None, name.clone()),
        [package, name] => (Some(package.clone()), name.clone()),
        _ => {
            return Err(kiln_error(
                Code::BadRefArgs,
                format!("ref() takes 1 or 2 arguments, got {}", strs.len()),
                Some("write ref('model_name') or ref('package', 'model_name')".into()),
            ));
        }
    };
    match (ctx.phase, &ctx.resolver) {
        (Phase::Compile, Some(resolver)) => resolver
            .resolve_ref(&ctx.node.package, package.as_deref(), &name, version.as_deref())
            .map_err(|m| kiln_error(Code::MissingRef, m, None)),
        _ => {
            let call = RefCall { package, name: name.clone(), version };
            let mut record = ctx.record.lock().unwrap_or_else(|e| e.into_inner());
            if !record.refs.contains(&call) {
                record.refs.push(call);
            }
            Ok(Relation::new(&ctx.shared.target.database, &ctx.shared.target.schema, &name, ctx.shared.target.quote_char()).into_value())
        }
    }
}

fn source_fn(state: &State, source: Value, table: Value) -> Result<Value, Error> {
    let ctx = node_ctx(state)?;
    let (Some(source), Some(table)) = (source.as_str(), table.as_str()) else {
        return Err(kiln_error(Code::BadRefArgs, "source() takes two strings", Some("write source('source_name', 'table_name')".into())));
    };
    match (ctx.phase, &ctx.resolver) {
        (Phase::Compile, Some(resolver)) => resolver.resolve_source(source, table).map_err(|m| kiln_error(Code::MissingSource, m, None)),
        _ => {
            let pair = (source.to_string(), table.to_string());
            let mut record = ctx.record.lock().unwrap_or_else(|e| e.into_inner());
            if !record.sources.contains(&pair) {
                record.sources.push(pair);
            }
            Ok(Relation::new(&ctx.shared.target.database, source, table, ctx.shared.target.quote_char()).into_value())
        }
    }
}

#[derive(Debug)]
struct ConfigObj;

impl Object for ConfigObj {
    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let ctx = node_ctx(state)?;
        // The parse phase applies `config()` to the node; the compile phase only records it (a
        // generic test's macro may set `fail_calc` there, which the runner honours).
        let set = |key: &str, value: Json| match ctx.phase {
            Phase::Parse => ctx.set_config(key, value),
            Phase::Compile => ctx.record_config(key, value),
        };
        for arg in args {
            if let Ok(kwargs) = Kwargs::try_from(arg.clone()) {
                for key in kwargs.args() {
                    let v: Value = kwargs.get(key)?;
                    set(key, to_json(&v));
                }
            } else if arg.kind() == ValueKind::Map
                && let Json::Object(map) = to_json(arg)
            {
                for (k, v) in map {
                    set(&k, v);
                }
            }
        }
        Ok(Value::from(""))
    }

    fn call_method(self: &Arc<Self>, state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let ctx = node_ctx(state)?;
        let (pos, kwargs): (Vec<&Value>, Option<Kwargs>) = split_kwargs(args);
        let key = pos
            .first()
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::new(ErrorKind::MissingArgument, format!("config.{method}() needs a key")))?;
        let found = ctx.config_get(key).filter(|v| !v.is_null());
        match method {
            "get" => {
                let default = match pos.get(1) {
                    Some(v) => Some((*v).clone()),
                    None => kwargs.as_ref().and_then(|k| k.get::<Option<Value>>("default").ok().flatten()),
                };
                Ok(found.map(|v| crate::jinja::ser(&v)).or(default).unwrap_or(Value::from(())))
            }
            "require" => found.map(|v| crate::jinja::ser(&v)).ok_or_else(|| {
                kiln_error(
                    Code::MissingConfig,
                    format!("config `{key}` is required by {} but is not set", ctx.node.unique_id),
                    Some(format!(
                        "set it with {{{{ config({key}=...) }}}} in the file, `+{key}:` in dbt_project.yml, or `config:` in properties YAML"
                    )),
                )
            }),
            "set" => Ok(Value::from("")),
            "persist_relation_docs" | "persist_column_docs" => Ok(Value::from(false)),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

fn split_kwargs(args: &[Value]) -> (Vec<&Value>, Option<Kwargs>) {
    match args.last().and_then(|a| Kwargs::try_from(a.clone()).ok()) {
        Some(k) => (args[..args.len() - 1].iter().collect(), Some(k)),
        None => (args.iter().collect(), None),
    }
}

#[derive(Debug)]
struct VarObj;

impl VarObj {
    fn lookup(state: &State, name: &str) -> Result<Option<Json>, Error> {
        let ctx = node_ctx(state)?;
        if let Some(v) = ctx.overrides.as_ref().and_then(|o| o.vars.get(name)) {
            return Ok(Some(v.clone()));
        }
        // dbt resolves package-scoped vars by the package of the node being rendered, also
        // inside a package's macros.
        Ok(ctx.shared.vars.get(&ctx.node.package, name).cloned())
    }
}

impl Object for VarObj {
    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let (pos, kwargs) = split_kwargs(args);
        let name = pos
            .first()
            .and_then(|v| v.as_str())
            .ok_or_else(|| kiln_error(Code::BadRefArgs, "var() takes the variable's name as a string", None))?;
        let default = pos.get(1).map(|v| (*v).clone()).or_else(|| kwargs.and_then(|k| k.get::<Option<Value>>("default").ok().flatten()));
        match VarObj::lookup(state, name)? {
            Some(v) => Ok(crate::jinja::ser(&v)),
            None => match default {
                Some(d) => Ok(d),
                None => {
                    let ctx = node_ctx(state)?;
                    Err(kiln_error(
                        Code::MissingVar,
                        format!("required var `{name}` not found (used by {})", ctx.node.unique_id),
                        Some(format!(
                            "define it under `vars:` in dbt_project.yml, pass --vars '{{{name}: ...}}', or give a default: var('{name}', 'default')"
                        )),
                    ))
                }
            },
        }
    }

    fn call_method(self: &Arc<Self>, state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "has_var" => {
                let name = args.first().and_then(|v| v.as_str()).unwrap_or("");
                Ok(Value::from(VarObj::lookup(state, name)?.is_some()))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

fn env_var(state: &State, name: String, default: Option<Value>) -> Result<Value, Error> {
    let ctx = node_ctx(state)?;
    if name.starts_with("DBT_ENV_SECRET_") && !ctx.secrets_allowed {
        return Err(kiln_error(
            Code::SecretEnvVar,
            format!("env_var('{name}'): secret environment variables may be read only in profiles.yml, packages.yml and hooks"),
            Some("a secret in a model's SQL would end up in compiled files, artifacts and the warehouse's catalog; pass it through a profile setting or a hook".into()),
        ));
    }
    let found = ctx.overrides.as_ref().and_then(|o| o.env_vars.get(&name)).or_else(|| ctx.shared.env_vars.get(&name)).cloned();
    match found {
        Some(v) => {
            if name.starts_with("DBT_ENV_SECRET_") && !v.is_empty() {
                ctx.shared.secrets.lock().unwrap_or_else(|e| e.into_inner()).insert(v.clone());
            }
            Ok(Value::from(v))
        }
        None => match default {
            Some(d) if !d.is_undefined() => Ok(d),
            _ => Err(kiln_error(
                Code::MissingEnvVar,
                format!("environment variable `{name}` is not set and env_var() has no default"),
                Some(format!("export {name}=... before running, or write env_var('{name}', 'default')")),
            )),
        },
    }
}

fn is_incremental(state: &State) -> Result<bool, Error> {
    let ctx = node_ctx(state)?;
    if let Some(v) = ctx.overrides.as_ref().and_then(|o| o.macros.get("is_incremental")) {
        return Ok(ctx.phase == Phase::Compile && crate::project::config::json_truthy(Some(v)).unwrap_or(false));
    }
    Ok(ctx.phase == Phase::Compile && ctx.is_incremental)
}

/// A positional or keyword argument (`log(msg, True)` and `log(msg, info=True)`).
fn arg_or_kwarg<T: for<'a> minijinja::value::ArgType<'a, Output = T>>(
    rest: &[Value],
    pos: usize,
    kwargs: &Kwargs,
    name: &str,
) -> Result<Option<T>, Error> {
    match rest.get(pos) {
        Some(v) => T::from_value(Some(v)).map(Some),
        None => kwargs.get::<Option<T>>(name),
    }
}

fn log(state: &State, msg: Value, rest: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let info = arg_or_kwarg::<bool>(&rest, 0, &kwargs, "info")?.unwrap_or(false);
    let ctx = node_ctx(state)?;
    let text = ctx.shared.scrub(&msg.to_string()).into_owned();
    ctx.shared.log(if info { LogLevel::Info } else { LogLevel::Debug }, text);
    Ok(Value::from(""))
}

fn print(state: &State, msg: Value) -> Result<Value, Error> {
    let ctx = node_ctx(state)?;
    let text = ctx.shared.scrub(&msg.to_string()).into_owned();
    ctx.shared.log(LogLevel::Print, text);
    Ok(Value::from(""))
}

#[derive(Debug)]
struct Exceptions;

impl Object for Exceptions {
    fn call_method(self: &Arc<Self>, state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let msg = args.first().map(|v| v.to_string()).unwrap_or_default();
        match method {
            "warn" => {
                let ctx = node_ctx(state)?;
                let text = ctx.shared.scrub(&msg).into_owned();
                ctx.shared.log(LogLevel::Warn, text);
                Ok(Value::from(""))
            }
            "raise_compiler_error"
            | "raise_not_implemented"
            | "raise_database_error"
            | "raise_fail_fast_error"
            | "raise_dependency_error" => Err(kiln_error(Code::CompilerError, msg, None)),
            "column_type_missing" | "missing_config" | "relation_wrong_type" | "warn_snapshot_timestamp_data_types" => {
                Err(kiln_error(Code::CompilerError, format!("{method}: {msg}"), None))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

fn tojson(value: Value, rest: Rest<Value>, kwargs: Kwargs) -> Result<String, Error> {
    let sort_keys = arg_or_kwarg::<bool>(&rest, 0, &kwargs, "sort_keys")?.unwrap_or(false);
    let json = to_json(&value);
    let json = if sort_keys { sort_json(json) } else { json };
    serde_json::to_string(&json).map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))
}

fn sort_json(v: Json) -> Json {
    match v {
        Json::Object(m) => {
            let mut entries: Vec<(String, Json)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(entries.into_iter().map(|(k, v)| (k, sort_json(v))).collect())
        }
        Json::Array(a) => Json::Array(a.into_iter().map(sort_json).collect()),
        other => other,
    }
}

fn fromjson(text: String, rest: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let default = arg_or_kwarg::<Value>(&rest, 0, &kwargs, "default")?;
    match serde_json::from_str::<Json>(&text) {
        Ok(v) => Ok(crate::jinja::ser(&v)),
        Err(e) => default.ok_or_else(|| Error::new(ErrorKind::InvalidOperation, format!("fromjson: {e}"))),
    }
}

fn toyaml(value: Value) -> Result<String, Error> {
    serde_norway::to_string(&to_json(&value)).map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))
}

fn fromyaml(text: String, rest: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let default = arg_or_kwarg::<Value>(&rest, 0, &kwargs, "default")?;
    match crate::project::yaml::parse(&text) {
        Ok(v) => Ok(crate::jinja::ser(&v.to_json())),
        Err(e) => default.ok_or_else(|| Error::new(ErrorKind::InvalidOperation, format!("fromyaml: {}", e.message))),
    }
}

fn zip(args: Rest<Value>) -> Result<Value, Error> {
    let lists: Vec<Vec<Value>> = args.iter().map(|a| a.try_iter().map(|it| it.collect()).unwrap_or_default()).collect();
    let n = lists.iter().map(Vec::len).min().unwrap_or(0);
    Ok(Value::from((0..n).map(|i| Value::from(lists.iter().map(|l| l[i].clone()).collect::<Vec<_>>())).collect::<Vec<_>>()))
}

/// `set(iterable)`: the distinct items, sorted. Python's sets have no order (and compare
/// without one); sorted lists compare equal exactly when the sets would, and iterate the same
/// way on every run.
fn set_fn(value: Value) -> Result<Value, Error> {
    let mut out: Vec<Value> = value.try_iter()?.collect();
    out.sort();
    out.dedup();
    Ok(super::modules::MutList::from_value(Some(Value::from(out))))
}

fn local_md5(text: String) -> String {
    crate::adapter::names::md5_hex(&text)
}

fn run_query(state: &State, sql: String) -> Result<Value, Error> {
    let ctx = node_ctx(state)?;
    if ctx.phase == Phase::Parse {
        return Ok(Value::from(()));
    }
    let runner = ctx.runner();
    let table = runner.run_query(&sql).map_err(|m| kiln_error(Code::JinjaRender, format!("run_query failed: {m}"), None))?;
    Ok(Value::from_object(Table(Arc::new(table))))
}

fn statement(state: &mut State, name: Option<String>, kwargs: Kwargs) -> Result<Value, Error> {
    let fetch = kwargs.get::<Option<bool>>("fetch_result")?.unwrap_or(false);
    let _ = kwargs.get::<Option<Value>>("auto_begin")?;
    let _ = kwargs.get::<Option<Value>>("language")?;
    let caller: Option<Value> = kwargs.get("caller")?;
    let sql = match caller {
        Some(c) => c.call(state, &[])?.to_string(),
        None => String::new(),
    };
    let ctx = node_ctx(state)?;
    if ctx.phase == Phase::Parse {
        return Ok(Value::from(""));
    }
    let runner = ctx.runner();
    let table = runner.run_query(&sql).map_err(|m| kiln_error(Code::JinjaRender, format!("statement failed: {m}"), None))?;
    if let Some(name) = name {
        let table = Arc::new(table);
        let data: Vec<Value> = table.rows.iter().map(|r| Value::from(r.iter().map(crate::jinja::ser).collect::<Vec<_>>())).collect();
        let result = crate::jinja::vmap([
            ("response", crate::jinja::vmap([("code", Value::from("OK")), ("rows_affected", Value::from(table.rows.len()))])),
            ("data", if fetch { Value::from(data) } else { Value::from(Vec::<Value>::new()) }),
            ("table", Value::from_object(Table(table))),
        ]);
        ctx.shared.statement_results.lock().unwrap_or_else(|e| e.into_inner()).insert(format!("{}::{name}", ctx.node.unique_id), result);
    }
    Ok(Value::from(""))
}

fn load_result(state: &State, name: String) -> Result<Value, Error> {
    let ctx = node_ctx(state)?;
    let results = ctx.shared.statement_results.lock().unwrap_or_else(|e| e.into_inner());
    Ok(results.get(&format!("{}::{name}", ctx.node.unique_id)).cloned().unwrap_or(Value::from(())))
}

fn doc_fn(state: &State, args: Rest<String>) -> Result<Value, Error> {
    let ctx = node_ctx(state)?;
    let (package, name) = match args.as_slice() {
        [name] => (None, name.clone()),
        [package, name] => (Some(package.clone()), name.clone()),
        _ => {
            return Err(kiln_error(Code::BadRefArgs, "doc() takes a name (and optionally a package)", None));
        }
    };
    let found = match &package {
        Some(p) => ctx.shared.docs.get(&(p.clone(), name.clone())),
        None => ctx
            .shared
            .docs
            .get(&(ctx.node.package.clone(), name.clone()))
            .or_else(|| ctx.shared.docs.iter().find(|((_, n), _)| *n == name).map(|(_, v)| v)),
    };
    found.map(|s| Value::from(s.as_str())).ok_or_else(|| {
        kiln_error(
            Code::MissingDoc,
            format!("doc `{name}` is not defined"),
            Some(format!("add `{{% docs {name} %}}...{{% enddocs %}}` to a .md file")),
        )
    })
}

/// Agate-like result table for `run_query`.
#[derive(Debug)]
pub struct Table(pub Arc<QueryTable>);

impl Object for Table {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "columns" => Some(Value::from_object(Columns(self.0.clone()))),
            "rows" => Some(Value::from((0..self.0.rows.len()).map(|i| Value::from_object(Row(self.0.clone(), i))).collect::<Vec<_>>())),
            "column_names" => Some(Value::from(self.0.columns.iter().map(|c| Value::from(c.as_str())).collect::<Vec<_>>())),
            _ => None,
        }
    }
    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, _args: &[Value]) -> Result<Value, Error> {
        match method {
            "print_table" | "print_json" => Ok(Value::from("")),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values((0..self.0.rows.len()).map(|i| Value::from_object(Row(self.0.clone(), i))).collect())
    }
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }
}

#[derive(Debug)]
struct Columns(Arc<QueryTable>);

impl Object for Columns {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let idx = match key.as_str() {
            Some(name) => self.0.columns.iter().position(|c| c == name)?,
            None => {
                let i = key.as_i64()?;
                if i < 0 { (self.0.columns.len() as i64 + i).max(0) as usize } else { i as usize }
            }
        };
        // An empty result (no engine, or no rows) still answers `columns[0].values()`.
        if self.0.columns.is_empty() || idx < self.0.columns.len() { Some(Value::from_object(Column(self.0.clone(), idx))) } else { None }
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values((0..self.0.columns.len()).map(|i| Value::from_object(Column(self.0.clone(), i))).collect())
    }
    /// agate's `MappedSequence`: `columns.items()`, `.keys()`, `.values()`.
    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, _args: &[Value]) -> Result<Value, Error> {
        let column = |i: usize| Value::from_object(Column(self.0.clone(), i));
        let names = &self.0.columns;
        Ok(Value::from(match method {
            "items" => names.iter().enumerate().map(|(i, n)| Value::from(vec![Value::from(n.as_str()), column(i)])).collect::<Vec<_>>(),
            "keys" => names.iter().map(|n| Value::from(n.as_str())).collect(),
            "values" => (0..names.len()).map(column).collect(),
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        }))
    }
}

#[derive(Debug)]
struct Column(Arc<QueryTable>, usize);

impl Column {
    fn values(&self) -> Vec<Value> {
        self.0.rows.iter().map(|r| r.get(self.1).map(crate::jinja::ser).unwrap_or_default()).collect()
    }
}

impl Object for Column {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if key.as_str() == Some("name") {
            return self.0.columns.get(self.1).map(|c| Value::from(c.as_str()));
        }
        let i = key.as_i64()? as usize;
        self.values().get(i).cloned()
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.values())
    }
    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, _args: &[Value]) -> Result<Value, Error> {
        match method {
            "values" => Ok(Value::from(self.values())),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[derive(Debug)]
struct Row(Arc<QueryTable>, usize);

impl Object for Row {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let row = self.0.rows.get(self.1)?;
        let idx = match key.as_str() {
            Some(name) => self.0.columns.iter().position(|c| c == name)?,
            None => key.as_i64()? as usize,
        };
        row.get(idx).map(crate::jinja::ser)
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.rows.get(self.1).map(|r| r.iter().map(crate::jinja::ser).collect()).unwrap_or_default())
    }
}

#[derive(Debug)]
struct Adapter {
    index: Arc<MacroIndex>,
}

impl Object for Adapter {
    fn call_method(self: &Arc<Self>, state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let (pos, kwargs) = split_kwargs(args);
        let arg = |i: usize, name: &str| -> Option<Value> {
            pos.get(i).map(|v| (*v).clone()).or_else(|| kwargs.as_ref().and_then(|k| k.get::<Option<Value>>(name).ok().flatten()))
        };
        let ctx = node_ctx(state)?;
        match method {
            "dispatch" => {
                let name = arg(0, "macro_name").and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                let namespace = arg(1, "macro_namespace").and_then(|v| v.as_str().map(str::to_string));
                if name.contains('.') {
                    return Err(kiln_error(
                        Code::MissingMacro,
                        format!("adapter.dispatch('{name}'): the macro name must not contain a dot"),
                        Some("pass the package as macro_namespace: adapter.dispatch('name', 'package')".into()),
                    ));
                }
                macros::dispatch(state, &self.index, &name, namespace.as_deref())
            }
            "quote" => Ok(Value::from(quote_ident(
                &arg(0, "identifier").map(|v| v.to_string()).unwrap_or_default(),
                ctx.shared.target.quote_char(),
            ))),
            "quote_as_configured" => Ok(Value::from(quote_ident(
                &arg(0, "identifier").map(|v| v.to_string()).unwrap_or_default(),
                ctx.shared.target.quote_char(),
            ))),
            "quote_seed_column" => {
                let col = arg(0, "column").map(|v| v.to_string()).unwrap_or_default();
                let quote = arg(1, "quote_config").map(|v| v.is_none() || v.is_true()).unwrap_or(true);
                Ok(Value::from(if quote { quote_ident(&col, ctx.shared.target.quote_char()) } else { col }))
            }
            "type" => Ok(Value::from(ctx.shared.target.adapter_type.as_str())),
            "get_relation" | "load_relation" => {
                let (db, schema, id) = if method == "load_relation" {
                    let r = arg(0, "relation").unwrap_or_default();
                    (attr(&r, "database"), attr(&r, "schema"), attr(&r, "identifier"))
                } else {
                    (
                        arg(0, "database").map(|v| v.to_string()).unwrap_or_default(),
                        arg(1, "schema").map(|v| v.to_string()).unwrap_or_default(),
                        arg(2, "identifier").map(|v| v.to_string()).unwrap_or_default(),
                    )
                };
                existing_relation(&ctx, &db, &schema, &id)
            }
            "get_columns_in_relation" => {
                if ctx.phase == Phase::Parse {
                    return Ok(Value::from(Vec::<Value>::new()));
                }
                let r = arg(0, "relation").unwrap_or_default();
                let relation = match r.downcast_object_ref::<Relation>() {
                    Some(rel) => rel.clone(),
                    None => {
                        Relation::new(&attr(&r, "database"), &attr(&r, "schema"), &attr(&r, "identifier"), ctx.shared.target.quote_char())
                    }
                };
                let runner = ctx.runner();
                let columns = runner
                    .get_columns(&relation)
                    .map_err(|m| kiln_error(Code::JinjaRender, format!("adapter.get_columns_in_relation({relation}) failed: {m}"), None))?;
                Ok(Value::from(
                    columns
                        .into_iter()
                        .map(|(n, t)| super::column::Column::new(&n, &t, ctx.shared.target.quote_char()).into_value())
                        .collect::<Vec<_>>(),
                ))
            }
            "check_schema_exists"
            | "already_exists"
            | "list_schemas"
            | "list_relations_without_caching"
            | "list_relations"
            | "get_missing_columns"
            | "create_schema"
            | "drop_relation"
            | "drop_schema"
            | "rename_relation"
            | "truncate_relation" => warehouse_method(&ctx, method, &|i, name| arg(i, name)),
            "standardize_grants_dict" => Ok(Value::from(std::collections::BTreeMap::<String, Value>::new())),
            // dbt's relation cache and transactions: nothing to do, statements run one by one.
            "expand_target_column_types" | "cache_added" | "cache_dropped" | "cache_renamed" | "commit" | "begin" | "add_query" => {
                Ok(Value::from(""))
            }
            "execute" => {
                let sql = arg(0, "sql").map(|v| v.to_string()).unwrap_or_default();
                let runner = ctx.runner();
                let table = match ctx.phase {
                    Phase::Compile => {
                        runner.run_query(&sql).map_err(|m| kiln_error(Code::JinjaRender, format!("adapter.execute failed: {m}"), None))?
                    }
                    Phase::Parse => QueryTable::default(),
                };
                Ok(Value::from(vec![Value::from("OK"), Value::from_object(Table(Arc::new(table)))]))
            }
            _ => Err(Error::new(ErrorKind::UnknownMethod, format!("adapter has no method `{method}`"))),
        }
    }
}

/// The `adapter` methods that read or change the warehouse, as SQL both engines run (the
/// embedded engine carries out DDL on its warehouse). The parse phase changes nothing and finds
/// nothing, as in dbt.
fn warehouse_method(ctx: &super::context::NodeCtx, method: &str, arg: &dyn Fn(usize, &str) -> Option<Value>) -> Result<Value, Error> {
    let runner = ctx.runner();
    let text = |i: usize, name: &str| arg(i, name).map(|v| v.to_string()).unwrap_or_default();
    let quote = |s: &str| quote_ident(s, ctx.shared.target.quote_char());
    let relation = |i: usize, name: &str| -> Result<Value, Error> {
        arg(i, name)
            .filter(|v| !v.is_none() && !v.is_undefined())
            .ok_or_else(|| kiln_error(Code::JinjaRender, format!("adapter.{method} needs a relation (`{name}`)"), None))
    };
    let run = |sql: String| -> Result<QueryTable, Error> {
        if ctx.phase == Phase::Parse {
            return Ok(QueryTable::default());
        }
        runner.run_query(&sql).map_err(|m| kiln_error(Code::JinjaRender, format!("adapter.{method} failed: {m}\n{sql}"), None))
    };
    let schemas = |database: &str| -> Result<Vec<String>, Error> {
        if ctx.phase == Phase::Parse {
            return Ok(vec![]);
        }
        runner.list_schemas(database).map_err(|m| kiln_error(Code::JinjaRender, format!("adapter.{method} failed: {m}"), None))
    };
    let kind = |r: &Value| match attr(r, "type").as_str() {
        "view" => "view",
        _ => "table",
    };
    Ok(match method {
        "drop_relation" => {
            let r = relation(0, "relation")?;
            let cascade = if ctx.shared.target.adapter.drop_cascade { " cascade" } else { "" };
            run(format!("drop {} if exists {r}{cascade}", kind(&r)))?;
            Value::from("")
        }
        "truncate_relation" => {
            run(format!("truncate table {}", relation(0, "relation")?))?;
            Value::from("")
        }
        "rename_relation" => {
            let (from, to) = (relation(0, "from_relation")?, relation(1, "to_relation")?);
            run(format!("alter table {from} rename to {}", quote(&attr(&to, "identifier"))))?;
            Value::from("")
        }
        "create_schema" | "drop_schema" => {
            let r = relation(0, "relation")?;
            let schema = quote(&attr(&r, "schema"));
            if method == "create_schema" {
                if ctx.phase == Phase::Compile {
                    runner
                        .create_schema(&attr(&r, "database"), &attr(&r, "schema"))
                        .map_err(|m| kiln_error(Code::JinjaRender, format!("adapter.create_schema failed: {m}"), None))?;
                }
            } else {
                run(format!("drop schema if exists {schema} cascade"))?;
            }
            Value::from("")
        }
        "check_schema_exists" => {
            let schema = text(1, "schema");
            Value::from(schemas(&text(0, "database"))?.contains(&schema))
        }
        "already_exists" => {
            let found = existing_relation(ctx, &ctx.shared.target.database, &text(0, "schema"), &text(1, "name"))?;
            Value::from(!found.is_none())
        }
        "list_relations_without_caching" | "list_relations" => {
            let (database, schema) = match arg(0, "schema_relation") {
                Some(r) if method == "list_relations_without_caching" => (attr(&r, "database"), attr(&r, "schema")),
                _ => (text(0, "database"), text(1, "schema")),
            };
            let found = match ctx.phase {
                Phase::Parse => vec![],
                Phase::Compile => runner
                    .list_relations(&database, &schema)
                    .map_err(|m| kiln_error(Code::JinjaRender, format!("adapter.{method} failed: {m}"), None))?,
            };
            let quote_char = ctx.shared.target.quote_char();
            let relations: Vec<Value> = found
                .into_iter()
                .map(|(name, kind)| {
                    let mut r = Relation::new(&database, &schema, &name, quote_char);
                    r.kind = kind;
                    r.into_value()
                })
                .collect();
            Value::from(relations)
        }
        "list_schemas" => Value::from(schemas(&text(0, "database"))?.into_iter().map(Value::from).collect::<Vec<_>>()),
        "get_missing_columns" => {
            let (from, to) = (relation(0, "from_relation")?, relation(1, "to_relation")?);
            let columns = |v: &Value| -> Result<Vec<(String, String)>, Error> {
                let Some(r) = v.downcast_object_ref::<Relation>() else { return Ok(vec![]) };
                runner.get_columns(r).map_err(|m| kiln_error(Code::JinjaRender, format!("adapter.get_missing_columns failed: {m}"), None))
            };
            let present: Vec<String> = columns(&to)?.into_iter().map(|(n, _)| n.to_lowercase()).collect();
            let missing: Vec<Value> = columns(&from)?
                .into_iter()
                .filter(|(n, _)| !present.contains(&n.to_lowercase()))
                .map(|(n, t)| super::column::Column::new(&n, &t, ctx.shared.target.quote_char()).into_value())
                .collect();
            Value::from(missing)
        }
        _ => return Err(Error::new(ErrorKind::UnknownMethod, format!("adapter has no method `{method}`"))),
    })
}

/// The relation if the warehouse has it (`none` in the parse phase, as in dbt).
fn existing_relation(ctx: &super::context::NodeCtx, database: &str, schema: &str, identifier: &str) -> Result<Value, Error> {
    if ctx.phase == Phase::Parse {
        return Ok(Value::from(()));
    }
    let runner = ctx.runner();
    let found = runner
        .get_relation(database, schema, identifier)
        .map_err(|m| kiln_error(Code::JinjaRender, format!("cannot tell whether {database}.{schema}.{identifier} exists: {m}"), None))?;
    Ok(found.map_or(Value::from(()), Relation::into_value))
}

fn attr(v: &Value, name: &str) -> String {
    v.get_attr(name).ok().filter(|x| !x.is_undefined() && !x.is_none()).map(|x| x.to_string()).unwrap_or_default()
}

#[derive(Debug)]
struct Api;

impl Object for Api {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "Relation" => Some(Value::from_object(RelationFactory)),
            "Column" => Some(Value::from_object(ColumnFactory)),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct RelationFactory;

impl Object for RelationFactory {
    fn call_method(self: &Arc<Self>, state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let (_, kwargs) = split_kwargs(args);
        let get = |k: &str| kwargs.as_ref().and_then(|kw| kw.get::<Option<String>>(k).ok().flatten());
        match method {
            "create" => {
                let mut r = Relation::new(
                    &get("database").unwrap_or_default(),
                    &get("schema").unwrap_or_default(),
                    &get("identifier").unwrap_or_default(),
                    quote_char(state),
                );
                if let Some(t) = get("type") {
                    r.kind = t;
                }
                for (i, k) in ["database", "schema", "identifier"].iter().enumerate() {
                    if get(k).is_none() {
                        r.include[i] = false;
                    }
                }
                Ok(r.into_value())
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[derive(Debug)]
struct ColumnFactory;

impl Object for ColumnFactory {
    fn call_method(self: &Arc<Self>, state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let adapter = node_ctx(state).map_or(crate::adapter::embedded(), |c| c.shared.target.adapter);
        let s = |i: usize| args.get(i).map(|v| v.to_string()).unwrap_or_default();
        match method {
            "translate_type" => Ok(Value::from(adapter.translate_type(&s(0)))),
            "create" => Ok(super::column::Column::new(&s(0), &adapter.translate_type(&s(1)), quote_char(state)).into_value()),
            "numeric_type" => Ok(Value::from(match (args.get(1), args.get(2)) {
                (Some(p), Some(sc)) if !p.is_none() && !sc.is_none() => {
                    format!("{}({p},{sc})", s(0))
                }
                _ => s(0),
            })),
            "string_type" => Ok(Value::from(adapter.string_type(&s(0)))),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}
