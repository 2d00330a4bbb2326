//! `Relation`: what `ref()`, `source()` and `this` return. Renders as a fully qualified, quoted
//! name in the target's dialect (`"db"."schema"."table"` or `` `project`.`dataset`.`table` ``).

use minijinja::value::{Enumerator, Kwargs, Object, Value};
use minijinja::{Error, ErrorKind, State};
use std::fmt;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    pub database: Option<String>,
    pub schema: Option<String>,
    pub identifier: Option<String>,
    /// `table`, `view`, `cte`, `external`, ... (dbt's `RelationType`).
    pub kind: String,
    pub quote: char,
    /// Per-part quoting: database, schema, identifier.
    pub quoting: [bool; 3],
    pub include: [bool; 3],
    /// Ephemeral models render as their CTE name.
    pub cte_name: Option<String>,
    /// `--empty`: in SQL the relation reads at most this many rows (dbt's `render_limited`).
    pub limit: Option<usize>,
    /// A microbatch reads only the rows of its window (dbt's `event_time_filter`).
    pub event_time_filter: Option<EventTimeFilter>,
}

/// Rows whose `field` is in [`start`, `end`), timestamps as dbt writes them
/// (`2024-01-01 00:00:00+00:00`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTimeFilter {
    pub field: String,
    pub start: String,
    pub end: String,
}

impl Relation {
    pub fn new(database: &str, schema: &str, identifier: &str, quote: char) -> Relation {
        Relation {
            database: Some(database.to_string()),
            schema: Some(schema.to_string()),
            identifier: Some(identifier.to_string()),
            kind: "table".into(),
            quote,
            quoting: [true; 3],
            include: [true; 3],
            cte_name: None,
            limit: None,
            event_time_filter: None,
        }
    }

    /// How the relation reads in SQL: its name, or with a limit or an event-time window a
    /// subquery (aliased, except on BigQuery, which needs no alias), as dbt's `render_limited`.
    pub fn render_limited(&self) -> String {
        if self.cte_name.is_some() {
            return self.render();
        }
        let alias = |namespace: &str| {
            if self.quote == '`' { String::new() } else { format!(" _dbt_{namespace}_subq_{}", self.identifier.as_deref().unwrap_or("")) }
        };
        let window = self.event_time_filter.as_ref().map(|f| format!("{} >= '{}' and {} < '{}'", f.field, f.start, f.field, f.end));
        match (self.limit, window) {
            (None, None) => self.render(),
            (None, Some(w)) => format!("(select * from {} where {w}){}", self.render(), alias("et_filter")),
            (Some(0), _) => format!("(select * from {} where false limit 0){}", self.render(), alias("limit")),
            (Some(n), None) => format!("(select * from {} limit {n}){}", self.render(), alias("limit")),
            (Some(n), Some(w)) => format!("(select * from {} where {w} limit {n}){}", self.render(), alias("limit")),
        }
    }

    pub fn cte(name: &str, quote: char) -> Relation {
        let mut r = Relation::new("", "", name, quote);
        r.kind = "cte".into();
        r.cte_name = Some(format!("__dbt__cte__{name}"));
        r
    }

    pub fn quote_ident(&self, s: &str) -> String {
        quote_ident(s, self.quote)
    }

    pub fn render(&self) -> String {
        if let Some(cte) = &self.cte_name {
            return cte.clone();
        }
        let parts = [&self.database, &self.schema, &self.identifier];
        let mut out = String::with_capacity(parts.iter().map(|p| p.as_ref().map_or(0, |p| p.len() + 3)).sum());
        for (i, part) in parts.iter().enumerate() {
            if let Some(p) = part
                && self.include[i]
                && !p.is_empty()
            {
                if !out.is_empty() {
                    out.push('.');
                }
                if self.quoting[i] {
                    push_quoted(&mut out, p, self.quote);
                } else {
                    out.push_str(p);
                }
            }
        }
        out
    }

    pub fn into_value(self) -> Value {
        Value::from_object(self)
    }
}

pub use crate::adapter::names::{push_quoted, quote_ident};

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

fn opt(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::from(()), |s| Value::from(s.as_str()))
}

impl Object for Relation {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(match key.as_str()? {
            "database" | "project" => opt(&self.database),
            "schema" | "dataset" => opt(&self.schema),
            "identifier" | "name" | "table" => opt(&self.identifier),
            "type" => Value::from(self.kind.as_str()),
            "is_table" => Value::from(self.kind == "table"),
            "is_view" => Value::from(self.kind == "view"),
            "is_cte" => Value::from(self.kind == "cte"),
            "is_materialized_view" => Value::from(self.kind == "materialized_view"),
            "quote_character" => Value::from(self.quote.to_string()),
            // What macro packages test to tell a relation from a string (dbt_utils' `_is_relation`).
            "metadata" => crate::jinja::vmap([("type", Value::from("BaseRelation"))]),
            "quote_policy" | "include_policy" => {
                let flags = if key.as_str() == Some("quote_policy") { self.quoting } else { self.include };
                crate::jinja::vmap([
                    ("database", Value::from(flags[0])),
                    ("schema", Value::from(flags[1])),
                    ("identifier", Value::from(flags[2])),
                ])
            }
            "path" => crate::jinja::vmap([
                ("database", opt(&self.database)),
                ("schema", opt(&self.schema)),
                ("identifier", opt(&self.identifier)),
            ]),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["database", "schema", "identifier", "name", "type"])
    }

    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, name: &str, args: &[Value]) -> Result<Value, Error> {
        let kwargs = args.iter().rev().find_map(|a| Kwargs::try_from(a.clone()).ok());
        let get_bool = |k: &str| kwargs.as_ref().and_then(|kw| kw.get::<Option<bool>>(k).ok().flatten());
        let get_str = |k: &str| kwargs.as_ref().and_then(|kw| kw.get::<Option<String>>(k).ok().flatten());
        let mut r = (**self).clone();
        match name {
            "render" => Ok(Value::from(Relation::render(self))),
            // dbt relations are dataclasses that macros read like dicts: `relation.get('metadata', {})`.
            "get" => {
                let key = args.first().cloned().unwrap_or_default();
                let default = args.get(1).cloned().unwrap_or(Value::from(()));
                Ok(self.get_value(&key).unwrap_or(default))
            }
            "include" | "quote" => {
                let target = if name == "include" { &mut r.include } else { &mut r.quoting };
                for (i, k) in ["database", "schema", "identifier"].iter().enumerate() {
                    if let Some(b) = get_bool(k) {
                        target[i] = b;
                    }
                }
                Ok(r.into_value())
            }
            "replace_path" | "incorporate" => {
                let mut set = |k: &str, v: Option<String>| match k {
                    "database" => r.database = v,
                    "schema" => r.schema = v,
                    "identifier" => r.identifier = v,
                    _ => {}
                };
                if let Some(kw) = &kwargs {
                    for k in ["database", "schema", "identifier"] {
                        if kw.has(k) {
                            set(k, kw.get::<Option<String>>(k).ok().flatten());
                        }
                    }
                    if let Ok(Some(path)) = kw.get::<Option<Value>>("path") {
                        for k in ["database", "schema", "identifier"] {
                            if let Ok(v) = path.get_attr(k)
                                && !v.is_undefined()
                            {
                                set(k, v.as_str().map(str::to_string));
                            }
                        }
                    }
                }
                if let Some(t) = get_str("type") {
                    r.kind = t;
                }
                Ok(r.into_value())
            }
            "without_identifier" => {
                r.include[2] = false;
                Ok(r.into_value())
            }
            "without_quotes" => {
                r.quoting = [false; 3];
                Ok(r.into_value())
            }
            _ => Err(Error::new(ErrorKind::UnknownMethod, format!("Relation has no method `{name}`"))),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result
    where
        Self: Sized + 'static,
    {
        f.write_str(&self.render_limited())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_per_dialect() {
        assert_eq!(Relation::new("db", "s", "t", '"').render(), r#""db"."s"."t""#);
        assert_eq!(Relation::new("p", "d", "t", '`').render(), "`p`.`d`.`t`");
        assert_eq!(Relation::new("db", "s", "we\"ird", '"').render(), r#""db"."s"."we""ird""#);
        assert_eq!(Relation::cte("eph", '"').render(), "__dbt__cte__eph");
        assert_eq!(quote_ident("we`ird", '`'), r"`we\`ird`");
        let mut r = Relation::new("db", "s", "t", '"');
        r.include = [false, true, true];
        r.quoting = [true, false, true];
        assert_eq!(r.render(), r#"s."t""#);
    }
}
