//! BigQuery statements as dbt-bigquery writes them, and BigQuery's values and types as kiln
//! reads them. Pure (strings and JSON in, strings and JSON out), golden-tested without a server.

use crate::adapter::names::quote_ident;
use crate::engine::seed_csv::Inferred;
use crate::engine::{IncrementalStrategy, RelationName, SchemaChange};
use serde_json::{Value as Json, json};

/// `` `project`.`dataset`.`table` ``.
pub fn relation(r: &RelationName) -> String {
    [&r.database, &r.schema, &r.name].iter().filter(|p| !p.is_empty()).map(|p| quote_ident(p, '`')).collect::<Vec<_>>().join(".")
}

fn q(column: &str) -> String {
    quote_ident(column, '`')
}

/// The model SQL as a statement body: no trailing semicolon.
pub fn body(sql: &str) -> &str {
    sql.trim_end().trim_end_matches(';').trim_end()
}

/// The text before and after the model SQL in the statement that builds `r` (the model's
/// position in it is known, so an error maps back onto the model).
pub fn create(kind: &str, target: &str) -> (String, &'static str) {
    (format!("create or replace {kind} {target} as (\n"), "\n)")
}

/// The scratch table an incremental run stages its new rows in, dropped after 12 hours if a
/// run dies before dropping it (as dbt-bigquery's `__dbt_tmp` tables).
pub fn staging(target: &str) -> (String, &'static str) {
    (
        format!(
            "create or replace table {target} options (expiration_timestamp = timestamp_add(current_timestamp(), interval 12 hour)) as (\n"
        ),
        "\n)",
    )
}

/// What an incremental run does once the new rows are staged: columns to add and drop, then
/// the statement that merges them in.
#[derive(Debug, PartialEq, Eq)]
pub struct Incremental {
    pub alter: Vec<String>,
    pub apply: String,
}

/// dbt-bigquery's incremental statements: `merge` on the unique key (an insert without one),
/// after `on_schema_change` adds or drops columns. `existing` and `incoming` are the
/// (name, type) columns of the table and of the staged rows.
pub fn incremental(
    target: &str,
    source: &str,
    strategy: &IncrementalStrategy,
    existing: &[(String, String)],
    incoming: &[(String, String)],
    on_schema_change: SchemaChange,
) -> Result<Incremental, String> {
    let has = |cols: &[(String, String)], c: &str| cols.iter().any(|(n, _)| n.eq_ignore_ascii_case(c));
    let added: Vec<&(String, String)> = incoming.iter().filter(|(c, _)| !has(existing, c)).collect();
    let removed: Vec<&(String, String)> = existing.iter().filter(|(c, _)| !has(incoming, c)).collect();
    fn names<'a>(cols: &[&'a (String, String)]) -> Vec<&'a str> {
        cols.iter().map(|(c, _)| c.as_str()).collect()
    }
    let mut alter = Vec::new();
    match on_schema_change {
        SchemaChange::Fail if !added.is_empty() || !removed.is_empty() => {
            return Err(format!(
                "the columns of incremental model {target} changed (on_schema_change: fail): added {:?}, removed {:?}; \
                 run with --full-refresh, or set on_schema_change to append_new_columns or sync_all_columns",
                names(&added),
                names(&removed)
            ));
        }
        SchemaChange::AppendNewColumns | SchemaChange::SyncAllColumns => {
            alter.extend(added.iter().map(|(c, t)| format!("alter table {target} add column {} {t}", q(c))));
            if on_schema_change == SchemaChange::SyncAllColumns {
                alter.extend(removed.iter().map(|(c, _)| format!("alter table {target} drop column {}", q(c))));
            }
        }
        SchemaChange::Ignore | SchemaChange::Fail => {}
    }
    // Ignore (and fail, unchanged) writes the columns the table and the new rows share.
    let columns: Vec<String> = match on_schema_change {
        SchemaChange::Ignore | SchemaChange::Fail => existing.iter().filter(|(c, _)| has(incoming, c)).map(|(c, _)| q(c)).collect(),
        _ => incoming.iter().map(|(c, _)| q(c)).collect(),
    };
    let list = columns.join(", ");
    let apply = match strategy {
        IncrementalStrategy::Merge { unique_key } | IncrementalStrategy::DeleteInsert { unique_key } if !unique_key.is_empty() => {
            let on = unique_key
                .iter()
                .map(|k| format!("(DBT_INTERNAL_SOURCE.{c} = DBT_INTERNAL_DEST.{c})", c = q(k)))
                .collect::<Vec<_>>()
                .join(" and ");
            let set = columns.iter().map(|c| format!("{c} = DBT_INTERNAL_SOURCE.{c}")).collect::<Vec<_>>().join(", ");
            format!(
                "merge into {target} as DBT_INTERNAL_DEST\n    using {source} as DBT_INTERNAL_SOURCE\n    on {on}\n    \
                 when matched then update set\n        {set}\n    when not matched then insert\n        ({list})\n    values\n        ({list})"
            )
        }
        _ => format!("insert into {target} ({list})\n    (select {list} from {source})"),
    };
    Ok(Incremental { alter, apply })
}

/// dbt-bigquery's type for an inferred seed column (agate's, through `convert_*_type`).
pub fn seed_type(t: Inferred) -> &'static str {
    match t {
        Inferred::Integer | Inferred::BigInt => "INT64",
        Inferred::Number => "FLOAT64",
        Inferred::Date => "DATE",
        Inferred::Timestamp => "DATETIME",
        Inferred::Boolean => "BOOL",
        Inferred::Empty | Inferred::Text => "STRING",
    }
}

/// The load job configuration of a seed: its CSV with kiln's schema, replacing the table.
pub fn seed_load(r: &RelationName, columns: &[(String, String)], delimiter: u8) -> Json {
    let fields: Vec<Json> = columns.iter().map(|(c, t)| json!({"name": c, "type": t.to_ascii_uppercase(), "mode": "NULLABLE"})).collect();
    json!({
        "destinationTable": {"projectId": r.database, "datasetId": r.schema, "tableId": r.name},
        "schema": {"fields": fields},
        "sourceFormat": "CSV",
        "skipLeadingRows": 1,
        "fieldDelimiter": (delimiter as char).to_string(),
        "allowQuotedNewlines": true,
        "writeDisposition": "WRITE_TRUNCATE",
        "createDisposition": "CREATE_IF_NEEDED",
    })
}

/// A schema field's type in standard SQL spelling (`INT64`, `ARRAY<STRUCT<a INT64>>`), the same
/// name for the same type whichever spelling the API used.
pub fn type_name(field: &Json) -> String {
    let base = match field["type"].as_str().unwrap_or("STRING") {
        "INTEGER" => "INT64".to_string(),
        "FLOAT" => "FLOAT64".to_string(),
        "BOOLEAN" => "BOOL".to_string(),
        "RECORD" | "STRUCT" => {
            let inner: Vec<String> = field["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| format!("{} {}", f["name"].as_str().unwrap_or(""), type_name(f)))
                .collect();
            format!("STRUCT<{}>", inner.join(", "))
        }
        other => other.to_string(),
    };
    if field["mode"] == "REPEATED" { format!("ARRAY<{base}>") } else { base }
}

/// The (name, type) columns of a schema (`{"fields": [...]}`).
pub fn columns(schema: &Json) -> Vec<(String, String)> {
    schema["fields"].as_array().into_iter().flatten().map(|f| (f["name"].as_str().unwrap_or("").to_string(), type_name(f))).collect()
}

/// A result row (`{"f": [{"v": ...}]}`) as JSON values, typed by the schema.
pub fn json_row(fields: &[Json], row: &Json) -> Vec<Json> {
    let cells = row["f"].as_array().map(Vec::as_slice).unwrap_or_default();
    fields.iter().zip(cells).map(|(f, c)| json_cell(f, &c["v"])).collect()
}

fn json_cell(field: &Json, v: &Json) -> Json {
    if v.is_null() {
        return Json::Null;
    }
    if field["mode"] == "REPEATED" {
        let single = json!({"type": field["type"], "fields": field["fields"], "name": field["name"]});
        return Json::Array(v.as_array().into_iter().flatten().map(|item| json_cell(&single, &item["v"])).collect());
    }
    let text = v.as_str().unwrap_or_default();
    match field["type"].as_str().unwrap_or("STRING") {
        "RECORD" | "STRUCT" => {
            let fields = field["fields"].as_array().map(Vec::as_slice).unwrap_or_default();
            let values = json_row(fields, v);
            Json::Object(fields.iter().zip(values).map(|(f, value)| (f["name"].as_str().unwrap_or("").to_string(), value)).collect())
        }
        "INTEGER" | "INT64" => text.parse::<i64>().map_or_else(|_| Json::from(text), Json::from),
        "FLOAT" | "FLOAT64" | "NUMERIC" | "BIGNUMERIC" => number(text),
        "BOOLEAN" | "BOOL" => Json::Bool(text.eq_ignore_ascii_case("true")),
        "TIMESTAMP" => timestamp(text),
        "JSON" => serde_json::from_str(text).unwrap_or_else(|_| Json::from(text)),
        _ => Json::from(text),
    }
}

/// A number as JSON: whole numbers without a point as integers, others as floats, the rest
/// (`NaN`, `Infinity`, digits past f64) as text.
fn number(text: &str) -> Json {
    if !text.contains(['.', 'e', 'E'])
        && let Ok(i) = text.parse::<i64>()
    {
        return Json::from(i);
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Json::from(f),
        _ => Json::from(text),
    }
}

/// A TIMESTAMP (microseconds since the epoch, or seconds as a float in older answers) as
/// `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC.
fn timestamp(text: &str) -> Json {
    let micros = match text.parse::<i64>() {
        Ok(m) => m,
        Err(_) => match text.parse::<f64>() {
            Ok(s) => (s * 1e6).round() as i64,
            Err(_) => return Json::from(text),
        },
    };
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000) else { return Json::from(text) };
    let base = format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", t.year(), t.month() as u8, t.day(), t.hour(), t.minute(), t.second());
    let frac = t.microsecond();
    Json::from(if frac == 0 { base } else { format!("{base}.{}", format!("{frac:06}").trim_end_matches('0')) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(c: &[(&str, &str)]) -> Vec<(String, String)> {
        c.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn statements_golden() {
        let r = RelationName { database: "acme-prod".into(), schema: "analytics".into(), name: "orders".into() };
        let target = relation(&r);
        let tmp = relation(&RelationName { name: "orders__dbt_tmp".into(), ..r.clone() });
        let mut out = String::new();
        let (prefix, suffix) = create("view", &target);
        out.push_str(&format!("-- view\n{prefix}select 1 as id{suffix}\n\n"));
        let (prefix, suffix) = staging(&tmp);
        out.push_str(&format!("-- staged rows\n{prefix}select 1 as id{suffix}\n\n"));
        let (old, new) = (cols(&[("id", "INT64"), ("a", "STRING")]), cols(&[("id", "INT64"), ("b", "NUMERIC")]));
        let merge = IncrementalStrategy::Merge { unique_key: vec!["id".into(), "Day".into()] };
        for (label, strategy, mode) in [
            ("merge, ignore", &merge, SchemaChange::Ignore),
            ("merge, append_new_columns", &merge, SchemaChange::AppendNewColumns),
            ("append, sync_all_columns", &IncrementalStrategy::Append, SchemaChange::SyncAllColumns),
        ] {
            let plan = incremental(&target, &tmp, strategy, &old, &new, mode).unwrap();
            out.push_str(&format!(
                "-- {label}\n{}\n\n",
                plan.alter.iter().chain([&plan.apply]).map(String::as_str).collect::<Vec<_>>().join(";\n")
            ));
        }
        out.push_str(&format!(
            "-- seed load\n{}\n",
            serde_json::to_string_pretty(&seed_load(&r, &cols(&[("id", "int64"), ("at", "DATETIME")]), b';')).unwrap()
        ));
        insta::assert_snapshot!(out);
        let err = incremental(&target, &tmp, &merge, &old, &new, SchemaChange::Fail).unwrap_err();
        assert!(err.contains("added [\"b\"], removed [\"a\"]"), "{err}");
    }

    #[test]
    fn values_and_types_read_as_kiln_reads_them() {
        let schema = json!({"fields": [
            {"name": "id", "type": "INTEGER", "mode": "NULLABLE"},
            {"name": "at", "type": "TIMESTAMP"},
            {"name": "amount", "type": "NUMERIC"},
            {"name": "ok", "type": "BOOLEAN"},
            {"name": "tags", "type": "STRING", "mode": "REPEATED"},
            {"name": "s", "type": "RECORD", "fields": [{"name": "x", "type": "FLOAT"}]},
            {"name": "d", "type": "DATE"},
        ]});
        let row = json!({"f": [{"v": "7"}, {"v": "1704103200500000"}, {"v": "12.50"}, {"v": "true"}, {"v": [{"v": "a"}, {"v": "b"}]}, {"v": {"f": [{"v": "1.5"}]}}, {"v": null}]});
        let fields = schema["fields"].as_array().unwrap();
        assert_eq!(Json::Array(json_row(fields, &row)), json!([7, "2024-01-01 10:00:00.5", 12.5, true, ["a", "b"], {"x": 1.5}, null]));
        assert_eq!(json_cell(&fields[1], &json!("1.7041032E9")), json!("2024-01-01 10:00:00"));
        let types: Vec<String> = columns(&schema).into_iter().map(|(_, t)| t).collect();
        assert_eq!(types, ["INT64", "TIMESTAMP", "NUMERIC", "BOOL", "ARRAY<STRING>", "STRUCT<x FLOAT64>", "DATE"]);
        assert_eq!(relation(&RelationName { database: "p".into(), schema: "d".into(), name: "we`ird".into() }), "`p`.`d`.`we\\`ird`");
    }
}
