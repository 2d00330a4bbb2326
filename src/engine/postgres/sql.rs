//! The statements the PostgreSQL engine sends, as pure functions (golden-tested without a
//! server). They follow dbt-postgres: `__dbt_tmp`/`__dbt_backup` names, rename swaps, `drop ...
//! cascade` of the backup, `delete+insert` and `merge` as dbt writes them.

use crate::adapter::names::quote_ident;
use crate::engine::{IncrementalStrategy, SchemaChange};
use serde_json::Value as Json;
use tokio_postgres::types::Type;

fn q(s: &str) -> String {
    quote_ident(s, '"')
}

/// `"schema"."name"`: relations are always named with their schema (PostgreSQL resolves the
/// database from the connection).
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", q(schema), q(name))
}

/// A string literal (`'it''s'`); backslashes are plain characters with standard strings.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// PostgreSQL's identifier limit, in bytes.
const MAX_IDENT: usize = 63;

/// What a relation is, for `alter`/`drop` statements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Table,
    View,
    MaterializedView,
    Foreign,
}

impl Kind {
    pub fn from_relkind(relkind: &str) -> Kind {
        match relkind {
            "v" => Kind::View,
            "m" => Kind::MaterializedView,
            "f" => Kind::Foreign,
            _ => Kind::Table,
        }
    }
    fn keyword(self) -> &'static str {
        match self {
            Kind::Table => "table",
            Kind::View => "view",
            Kind::MaterializedView => "materialized view",
            Kind::Foreign => "foreign table",
        }
    }
}

/// The temporary and backup names of a relation being replaced (dbt-postgres truncates the
/// name so that name and suffix fit in 63 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwapNames {
    pub tmp: String,
    pub backup: String,
}

impl SwapNames {
    pub fn of(name: &str) -> SwapNames {
        let with = |suffix: &str| {
            let mut end = name.len().min(MAX_IDENT - suffix.len());
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}{suffix}", &name[..end])
        };
        SwapNames { tmp: with("__dbt_tmp"), backup: with("__dbt_backup") }
    }
}

pub fn drop(kind: Kind, schema: &str, name: &str) -> String {
    format!("drop {} if exists {} cascade", kind.keyword(), qualified(schema, name))
}

/// Publishes `tmp` as `name` (inside the caller's transaction): the old relation, if any, is
/// renamed to the backup name, the new one takes its place, the backup is dropped. Dependent
/// views of the old relation go with it, as in dbt-postgres; `kiln build` rebuilds them next.
pub fn publish(schema: &str, name: &str, names: &SwapNames, new: Kind, old: Option<Kind>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(old) = old {
        out.push(format!("alter {} {} rename to {}", old.keyword(), qualified(schema, name), q(&names.backup)));
    }
    out.push(format!("alter {} {} rename to {}", new.keyword(), qualified(schema, &names.tmp), q(name)));
    if let Some(old) = old {
        out.push(drop(old, schema, &names.backup));
    }
    out
}

/// The statements of one incremental run: `alter` changes the target's columns
/// (`on_schema_change`), `apply` moves the new rows in; the last one's row count is reported.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IncrementalPlan {
    pub alter: Vec<String>,
    pub apply: Vec<String>,
}

/// `existing`/`incoming`: columns (name, type) of the target and of the new rows in `source`.
pub fn incremental(
    target: &str,
    source: &str,
    strategy: &IncrementalStrategy,
    existing: &[(String, String)],
    incoming: &[(String, String)],
    on_schema_change: SchemaChange,
) -> Result<IncrementalPlan, String> {
    let changes = super::super::sql::ColumnChanges::of(existing, incoming, false);
    changes.check(target, on_schema_change)?;
    let mut plan = IncrementalPlan::default();
    let add = changes.added.iter().map(|(c, t)| format!("alter table {target} add column {} {t}", q(c)));
    match on_schema_change {
        SchemaChange::AppendNewColumns => plan.alter.extend(add),
        SchemaChange::SyncAllColumns => {
            plan.alter.extend(add);
            plan.alter.extend(changes.removed.iter().map(|(c, _)| format!("alter table {target} drop column {}", q(c))));
            plan.alter.extend(
                changes.retyped.iter().map(|(c, t)| format!("alter table {target} alter column {c} type {t} using {c}::{t}", c = q(c))),
            );
        }
        SchemaChange::Ignore | SchemaChange::Fail => {}
    }
    let columns: Vec<String> = changes.written(on_schema_change).into_iter().map(q).collect();
    let list = columns.join(", ");
    let insert = format!("insert into {target} ({list})\n(\n    select {list}\n    from {source}\n)");
    match strategy {
        IncrementalStrategy::Append => plan.apply.push(insert),
        IncrementalStrategy::DeleteInsert { unique_key } => {
            let delete = if let [key] = unique_key.as_slice() {
                format!(
                    "delete from {target}\nwhere ({k}) in (\n    select distinct {k}\n    from {source} as DBT_INTERNAL_SOURCE\n)",
                    k = q(key)
                )
            } else {
                let cond =
                    unique_key.iter().map(|k| format!("{source}.{k} = {target}.{k}", k = q(k))).collect::<Vec<_>>().join("\n    and ");
                format!("delete from {target}\nusing {source}\nwhere (\n    {cond}\n)")
            };
            plan.apply.push(delete);
            plan.apply.push(insert);
        }
        IncrementalStrategy::InsertOverwrite { .. } => return Err("`insert_overwrite` is built on BigQuery only".into()),
        IncrementalStrategy::Merge { unique_key } => {
            let on = unique_key
                .iter()
                .map(|k| format!("DBT_INTERNAL_SOURCE.{k} = DBT_INTERNAL_DEST.{k}", k = q(k)))
                .collect::<Vec<_>>()
                .join(" and ");
            let set = columns.iter().map(|c| format!("{c} = DBT_INTERNAL_SOURCE.{c}")).collect::<Vec<_>>().join(", ");
            let values = columns.iter().map(|c| format!("DBT_INTERNAL_SOURCE.{c}")).collect::<Vec<_>>().join(", ");
            plan.apply.push(format!(
                "merge into {target} as DBT_INTERNAL_DEST\nusing {source} as DBT_INTERNAL_SOURCE\non ({on})\n\
                 when matched then update set\n    {set}\nwhen not matched then insert\n    ({list})\nvalues\n    ({values})"
            ));
        }
    }
    Ok(plan)
}

/// Statements that make `schema.name` an empty table with `columns` before a seed's rows are
/// copied in. A table with the same columns is truncated (views built on it stay, as in dbt);
/// otherwise (or with `--full-refresh`) it is dropped, with what depends on it, and recreated.
pub fn seed_prepare(
    schema: &str,
    name: &str,
    columns: &[(String, String)],
    existing: Option<&(Kind, Vec<(String, String)>)>,
    full_refresh: bool,
) -> Vec<String> {
    let target = qualified(schema, name);
    let same = |have: &[(String, String)]| {
        have.len() == columns.len() && have.iter().zip(columns).all(|((a, at), (b, bt))| a == b && same_type(at, bt))
    };
    match existing {
        Some((Kind::Table, have)) if !full_refresh && same(have) => vec![format!("truncate table {target}")],
        other => {
            let mut out = Vec::new();
            if let Some((kind, _)) = other {
                out.push(drop(*kind, schema, name));
            }
            let cols = columns.iter().map(|(c, t)| format!("{} {t}", q(c))).collect::<Vec<_>>().join(", ");
            out.push(format!("create table {target} ({cols})"));
            out
        }
    }
}

/// `format_type` spells types its own way (`integer`, `timestamp without time zone`); seeds and
/// profiles use the common short names.
fn same_type(a: &str, b: &str) -> bool {
    let norm = |t: &str| {
        let t = t.trim().to_ascii_lowercase();
        match t.as_str() {
            "int" | "int4" => "integer".to_string(),
            "int8" => "bigint".to_string(),
            "int2" => "smallint".to_string(),
            "float8" | "float" => "double precision".to_string(),
            "float4" => "real".to_string(),
            "bool" => "boolean".to_string(),
            "timestamp" => "timestamp without time zone".to_string(),
            "timestamptz" => "timestamp with time zone".to_string(),
            "varchar" => "character varying".to_string(),
            _ => t,
        }
    };
    norm(a) == norm(b)
}

/// A column's type as SQL names it (contracts compare these; `cast(null as int)` and an
/// `integer` column both give `integer`).
pub fn type_name(t: &Type) -> String {
    match *t {
        Type::INT2 => "smallint",
        Type::INT4 => "integer",
        Type::INT8 => "bigint",
        Type::FLOAT4 => "real",
        Type::FLOAT8 => "double precision",
        Type::NUMERIC => "numeric",
        Type::BOOL => "boolean",
        Type::TEXT => "text",
        Type::VARCHAR => "character varying",
        Type::BPCHAR => "character",
        Type::DATE => "date",
        Type::TIMESTAMP => "timestamp without time zone",
        Type::TIMESTAMPTZ => "timestamp with time zone",
        Type::TIME => "time without time zone",
        Type::INTERVAL => "interval",
        _ => return t.name().to_string(),
    }
    .to_string()
}

/// A text cell from the simple protocol as JSON, typed by the column's type.
pub fn json_cell(text: Option<&str>, t: Option<&Type>) -> Json {
    let Some(text) = text else { return Json::Null };
    match t {
        Some(&Type::INT2 | &Type::INT4 | &Type::INT8 | &Type::OID) => text.parse::<i64>().map_or_else(|_| Json::from(text), Json::from),
        Some(&Type::FLOAT4 | &Type::FLOAT8 | &Type::NUMERIC) => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => {
                if !text.contains(['.', 'e', 'E'])
                    && let Ok(i) = text.parse::<i64>()
                {
                    Json::from(i)
                } else {
                    Json::from(f)
                }
            }
            _ => Json::from(text),
        },
        Some(&Type::BOOL) => Json::Bool(text == "t"),
        Some(&Type::JSON | &Type::JSONB) => serde_json::from_str(text).unwrap_or_else(|_| Json::from(text)),
        _ => Json::from(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(c: &[(&str, &str)]) -> Vec<(String, String)> {
        c.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn statements_golden() {
        let mut out = String::new();
        let names = SwapNames::of("Orders");
        out.push_str("-- table replacing a view\n");
        out.push_str(&publish("Sales", "Orders", &names, Kind::Table, Some(Kind::View)).join(";\n"));
        out.push_str("\n\n-- first build\n");
        out.push_str(&publish("s", "Orders", &names, Kind::View, None).join(";\n"));
        let (old, new) = (cols(&[("id", "integer"), ("a", "text")]), cols(&[("id", "integer"), ("b", "numeric")]));
        for (label, strategy, mode) in [
            ("append, ignore", IncrementalStrategy::Append, SchemaChange::Ignore),
            (
                "delete+insert on one key, append_new_columns",
                IncrementalStrategy::DeleteInsert { unique_key: vec!["id".into()] },
                SchemaChange::AppendNewColumns,
            ),
            (
                "delete+insert on two keys, ignore",
                IncrementalStrategy::DeleteInsert { unique_key: vec!["id".into(), "Day".into()] },
                SchemaChange::Ignore,
            ),
            ("merge, sync_all_columns", IncrementalStrategy::Merge { unique_key: vec!["id".into()] }, SchemaChange::SyncAllColumns),
        ] {
            let plan = incremental("\"s\".\"t\"", "pg_temp.\"t__dbt_tmp\"", &strategy, &old, &new, mode).unwrap();
            out.push_str(&format!("\n\n-- {label}\n{}", plan.alter.iter().chain(&plan.apply).cloned().collect::<Vec<_>>().join(";\n")));
        }
        out.push_str("\n\n-- seed over a table with other columns\n");
        let existing = (Kind::Table, cols(&[("id", "integer")]));
        out.push_str(&seed_prepare("s", "raw", &cols(&[("id", "bigint"), ("name", "text")]), Some(&existing), false).join(";\n"));
        insta::assert_snapshot!(out);
    }

    #[test]
    fn schema_change_fail_names_the_columns() {
        let (old, new) = (cols(&[("id", "integer"), ("a", "text")]), cols(&[("id", "bigint"), ("a", "text")]));
        let err = incremental("t", "s", &IncrementalStrategy::Append, &old, &new, SchemaChange::Fail).unwrap_err();
        assert!(err.contains("type changed [\"id\"]"), "{err}");
        assert!(incremental("t", "s", &IncrementalStrategy::Append, &old, &old, SchemaChange::Fail).is_ok());
    }

    #[test]
    fn seeds_with_the_same_columns_are_truncated() {
        let columns = cols(&[("id", "integer"), ("at", "timestamp")]);
        let existing = (Kind::Table, cols(&[("id", "integer"), ("at", "timestamp without time zone")]));
        assert_eq!(seed_prepare("s", "t", &columns, Some(&existing), false), vec!["truncate table \"s\".\"t\"".to_string()]);
        assert_eq!(seed_prepare("s", "t", &columns, Some(&existing), true)[0], "drop table if exists \"s\".\"t\" cascade");
    }

    #[test]
    fn long_names_fit_in_63_bytes() {
        let n = SwapNames::of(&"x".repeat(70));
        assert_eq!(n.backup.len(), 63);
        assert!(n.backup.ends_with("__dbt_backup") && n.tmp.ends_with("__dbt_tmp"));
    }

    #[test]
    fn cells_are_typed() {
        assert_eq!(json_cell(Some("42"), Some(&Type::INT8)), Json::from(42));
        assert_eq!(json_cell(Some("1.50"), Some(&Type::NUMERIC)), Json::from(1.5));
        assert_eq!(json_cell(Some("t"), Some(&Type::BOOL)), Json::Bool(true));
        assert_eq!(json_cell(Some("2024-01-01"), Some(&Type::DATE)), Json::from("2024-01-01"));
        assert_eq!(json_cell(None, Some(&Type::TEXT)), Json::Null);
    }
}
