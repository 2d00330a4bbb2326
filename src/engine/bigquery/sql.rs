//! BigQuery statements as dbt-bigquery writes them, and BigQuery's values and types as kiln
//! reads them. Pure (strings and JSON in, strings and JSON out), golden-tested without a server.

use crate::adapter::names::quote_ident;
use crate::engine::seed_csv::Inferred;
use crate::engine::sql::ColumnChanges;
use crate::engine::{IncrementalStrategy, RelationName, SchemaChange};
use crate::project::typed::{PartitionBy, TableOptions};
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

/// A string literal in BigQuery's syntax.
pub fn literal(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('\'', "\\'").replace('\n', "\\n");
    format!("'{escaped}'")
}

/// The text before and after the model SQL in the statement that builds view `target` (the
/// model's position in it is known, so an error maps back onto the model), with dbt-bigquery's
/// view options (expiry and labels).
pub fn create_view(target: &str, o: &TableOptions) -> (String, &'static str) {
    let mut opts = expiry(o.hours_to_expiration.as_deref()).into_iter().collect::<Vec<_>>();
    opts.extend(labels(o));
    let options = if opts.is_empty() { String::new() } else { format!("options({})\n", opts.join(", ")) };
    (format!("create or replace view {target}\n{options}as (\n"), "\n)")
}

fn expiry(hours: Option<&str>) -> Option<String> {
    hours.map(|h| format!("expiration_timestamp=TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL {h} hour)"))
}

fn labels(o: &TableOptions) -> Option<String> {
    let labels: Vec<String> = o.labels.iter().map(|(k, v)| format!("({}, {})", literal(k), literal(v))).collect();
    (!labels.is_empty()).then(|| format!("labels=[{}]", labels.join(", ")))
}

/// The text before and after the model SQL in the statement that builds table `target` with
/// `o`'s layout, as dbt-bigquery's `create_table_as`; a `temporary` (scratch) table expires
/// after 12 hours.
pub fn create_table(target: &str, o: &TableOptions, temporary: bool) -> Result<(String, &'static str), String> {
    let mut prefix = format!("create or replace table {target}\n");
    if let Some(p) = &o.partition_by {
        if p.time_ingestion_partitioning || p.copy_partitions {
            return Err(
                "`time_ingestion_partitioning` and `copy_partitions` are not built by kiln yet; partition by the column instead".into()
            );
        }
        prefix.push_str(&partition_clause(p));
        prefix.push('\n');
    }
    if !o.cluster_by.is_empty() {
        prefix.push_str(&format!("cluster by {}\n", o.cluster_by.join(", ")));
    }
    let opts = table_options(o, temporary);
    if !opts.is_empty() {
        prefix.push_str(&format!("options({})\n", opts.join(", ")));
    }
    prefix.push_str("as (\n");
    Ok((prefix, "\n)"))
}

/// dbt-bigquery's `is_replaceable`: whether `create or replace table` may replace the table
/// resource `table` (BigQuery refuses to change a table's partitioning or clustering that way).
pub fn replaceable(table: &Json, o: &TableOptions) -> bool {
    let same = |a: &Json, b: &str| a.as_str().is_some_and(|a| a.eq_ignore_ascii_case(b));
    let (time, range) = (&table["timePartitioning"], &table["rangePartitioning"]);
    let partitions = match &o.partition_by {
        None => time.is_null() && range.is_null(),
        Some(p) => match p.range {
            Some((start, end, interval)) if p.data_type == "int64" => {
                let r = &range["range"];
                let n = |v: &Json| v.as_str().and_then(|s| s.parse::<i64>().ok()).or_else(|| v.as_i64());
                same(&range["field"], &p.field)
                    && (n(&r["start"]), n(&r["end"]), n(&r["interval"])) == (Some(start), Some(end), Some(interval))
            }
            _ => same(&time["field"], &p.field) && same(&time["type"], &p.granularity),
        },
    };
    let clustered: Vec<String> =
        table["clustering"]["fields"].as_array().into_iter().flatten().filter_map(|f| f.as_str().map(str::to_ascii_lowercase)).collect();
    partitions && clustered == o.cluster_by.iter().map(|c| c.to_ascii_lowercase()).collect::<Vec<_>>()
}

/// dbt-bigquery's `PartitionConfig.render`: a row's partition, truncated to the granularity
/// unless the field is an `int64` or a `date` by day.
pub fn render_partition(p: &PartitionBy, alias: Option<&str>) -> String {
    let column = alias.map_or_else(|| p.field.clone(), |a| format!("{a}.{}", p.field));
    if truncated(p) { format!("{}_trunc({column}, {})", p.data_type, p.granularity) } else { column }
}

fn truncated(p: &PartitionBy) -> bool {
    !(p.data_type == "int64" || p.data_type == "date" && p.granularity == "day")
}

/// dbt-bigquery's `render_wrapped`: the partition cast to its time type where not truncated.
pub fn render_partition_wrapped(p: &PartitionBy, alias: Option<&str>) -> String {
    let rendered = render_partition(p, alias);
    if ["date", "timestamp", "datetime"].contains(&p.data_type.as_str()) && !truncated(p) {
        format!("{}({rendered})", p.data_type)
    } else {
        rendered
    }
}

/// The clause of dbt-bigquery's `partition_by` macro.
fn partition_clause(p: &PartitionBy) -> String {
    match p.range {
        Some((start, end, interval)) if p.data_type == "int64" => {
            format!("partition by range_bucket({}, generate_array({start}, {end}, {interval}))", p.field)
        }
        _ => format!("partition by {}", render_partition(p, None)),
    }
}

/// dbt-bigquery's `get_table_options`: a scratch table expires after 12 hours and requires no
/// partition filter.
fn table_options(o: &TableOptions, temporary: bool) -> Vec<String> {
    let mut opts: Vec<String> = expiry(if temporary { Some("12") } else { o.hours_to_expiration.as_deref() }).into_iter().collect();
    opts.extend(labels(o));
    if let Some(k) = &o.kms_key_name {
        opts.push(format!("kms_key_name={}", literal(k)));
    }
    if !temporary {
        if let (Some(r), Some(_)) = (o.require_partition_filter, &o.partition_by) {
            opts.push(format!("require_partition_filter={r}"));
        }
        if let Some(d) = &o.partition_expiration_days {
            opts.push(format!("partition_expiration_days={d}"));
        }
    }
    opts
}

/// dbt-bigquery's `declare_dbt_max_partition`: a model that filters on `_dbt_max_partition`
/// gets it declared, as the table's greatest partition value, before its statement.
pub fn declare_max_partition(sql: &str, o: &TableOptions, this: &str) -> String {
    match &o.partition_by {
        Some(p) if sql.contains("_dbt_max_partition") => format!(
            "declare _dbt_max_partition {} default (\n  select max({f}) from {this}\n  where {f} is not null\n);\n",
            p.data_type,
            f = p.field
        ),
        _ => String::new(),
    }
}

/// What an incremental run does once the new rows are staged: columns to add and drop, then
/// the statement (or script) that merges them in.
#[derive(Debug, PartialEq, Eq)]
pub struct Incremental {
    pub alter: Vec<String>,
    pub apply: String,
}

/// The table an incremental run writes to, and what it knows of it.
pub struct IncrementalTarget<'a> {
    pub target: &'a str,
    /// The staged new rows.
    pub source: &'a str,
    pub options: &'a TableOptions,
    /// (name, type) columns of the table and of the staged rows.
    pub existing: &'a [(String, String)],
    pub incoming: &'a [(String, String)],
}

/// dbt-bigquery's incremental statements, after `on_schema_change` adds or drops columns:
/// `merge` on the unique key (an insert without one), or `insert_overwrite`'s merge that
/// deletes the replaced partitions (the static `partitions`, or those the new rows fall in).
pub fn incremental(t: &IncrementalTarget, strategy: &IncrementalStrategy, on_schema_change: SchemaChange) -> Result<Incremental, String> {
    let (target, source) = (t.target, t.source);
    let changes = ColumnChanges::of(t.existing, t.incoming, true);
    changes.check(target, on_schema_change)?;
    let mut alter = Vec::new();
    if matches!(on_schema_change, SchemaChange::AppendNewColumns | SchemaChange::SyncAllColumns) {
        alter.extend(changes.added.iter().map(|(c, ty)| format!("alter table {target} add column {} {ty}", q(c))));
    }
    if on_schema_change == SchemaChange::SyncAllColumns {
        alter.extend(changes.removed.iter().map(|(c, _)| format!("alter table {target} drop column {}", q(c))));
    }
    let list = changes.written(on_schema_change).into_iter().map(q).collect::<Vec<_>>();
    let insert = format!("when not matched then insert\n    ({0})\nvalues\n    ({0})", list.join(", "));
    let apply = match strategy {
        IncrementalStrategy::Merge { unique_key } | IncrementalStrategy::DeleteInsert { unique_key } if !unique_key.is_empty() => {
            let mut on: Vec<String> =
                unique_key.iter().map(|k| format!("(DBT_INTERNAL_SOURCE.{c} = DBT_INTERNAL_DEST.{c})", c = q(k))).collect();
            // dbt-bigquery's `predicate_for_avoid_require_partition_filter`.
            if let (Some(true), Some(p)) = (t.options.require_partition_filter, &t.options.partition_by) {
                on.insert(0, format!("(`DBT_INTERNAL_DEST`.{f} is null or `DBT_INTERNAL_DEST`.{f} is not null)", f = q(&p.field)));
            }
            let set = list.iter().map(|c| format!("{c} = DBT_INTERNAL_SOURCE.{c}")).collect::<Vec<_>>().join(", ");
            format!(
                "merge into {target} as DBT_INTERNAL_DEST\nusing (select * from {source}) as DBT_INTERNAL_SOURCE\non {}\nwhen matched then update set\n    {set}\n{insert}",
                on.join(" and ")
            )
        }
        IncrementalStrategy::InsertOverwrite { partitions } => insert_overwrite(t, partitions, &insert)?,
        _ => format!("insert into {target} ({0})\n    (select {0} from {source})", list.join(", ")),
    };
    Ok(Incremental { alter, apply })
}

/// dbt-bigquery's `bq_insert_overwrite_sql`: a merge that inserts every new row and deletes
/// the target's rows in the replaced partitions. Dynamic partitions are gathered into
/// `dbt_partitions_for_replacement` first (as `set x = (select array_agg(...) ... where x is
/// not null)`: the same values as dbt-bigquery's `select as struct ... ignore nulls` form).
fn insert_overwrite(t: &IncrementalTarget, partitions: &[String], insert: &str) -> Result<String, String> {
    let p = t.options.partition_by.as_ref().ok_or("the `insert_overwrite` strategy needs `partition_by`")?;
    let dest = render_partition_wrapped(p, Some("DBT_INTERNAL_DEST"));
    let merge = |predicate: String| {
        format!(
            "merge into {} as DBT_INTERNAL_DEST\nusing (select * from {}) as DBT_INTERNAL_SOURCE\non FALSE\nwhen not matched by source\n    and {predicate}\n    then delete\n{insert}",
            t.target, t.source
        )
    };
    if !partitions.is_empty() {
        return Ok(merge(format!("{dest} in ({})", partitions.join(", "))));
    }
    let partition = render_partition_wrapped(p, None);
    Ok(format!(
        "declare dbt_partitions_for_replacement array<{}>;\nset dbt_partitions_for_replacement = (\n    select array_agg(distinct {partition})\n    from {}\n    where {partition} is not null\n);\n{}",
        p.data_type,
        t.source,
        merge(format!("{dest} in unnest(dbt_partitions_for_replacement)"))
    ))
}

/// dbt-bigquery's `get_show_grant_sql`: the grants on `r` other than the current user's, from
/// the `INFORMATION_SCHEMA` of its dataset's `location`.
pub fn show_grants(r: &RelationName, location: &str) -> String {
    format!(
        "select privilege_type, grantee\nfrom {}.{}.INFORMATION_SCHEMA.OBJECT_PRIVILEGES\nwhere object_schema = {}\n  and object_name = {}\n  and split(grantee, ':')[offset(1)] != session_user()",
        q(&r.database),
        q(&format!("region-{}", location.to_ascii_lowercase())),
        literal(&r.schema),
        literal(&r.name)
    )
}

/// dbt's `apply_grants` with dbt-bigquery's `grant`/`revoke`: what `config` grants and
/// `current` lacks is granted, what `current` has and `config` no longer names is revoked
/// (revokes first). Privileges and grantees compare case-insensitively, as dbt's
/// `diff_of_two_dicts`.
pub fn grant_statements(target: &str, kind: &str, config: &[(String, Vec<String>)], current: &[(String, String)]) -> Vec<String> {
    let lower = |s: &str| s.to_lowercase();
    let has = |privilege: &str, grantee: &str, set: &[(String, String)]| {
        set.iter().any(|(p, g)| lower(p) == lower(privilege) && lower(g) == lower(grantee))
    };
    let wanted: Vec<(String, String)> = config.iter().flat_map(|(p, gs)| gs.iter().map(|g| (p.clone(), g.clone()))).collect();
    let grouped = |pairs: Vec<&(String, String)>| {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (p, g) in pairs {
            match out.iter_mut().find(|(q, _)| lower(q) == lower(p)) {
                Some((_, gs)) => gs.push(g.clone()),
                None => out.push((p.clone(), vec![g.clone()])),
            }
        }
        out
    };
    let dcl = |verb: &str, to: &str, (privilege, grantees): (String, Vec<String>)| {
        format!("{verb} `{privilege}` on {kind} {target} {to} \"{}\"", grantees.join("\", \""))
    };
    let revoke = grouped(current.iter().filter(|(p, g)| !has(p, g, &wanted)).collect());
    let grant = grouped(wanted.iter().filter(|(p, g)| !has(p, g, current)).collect());
    revoke.into_iter().map(|x| dcl("revoke", "from", x)).chain(grant.into_iter().map(|x| dcl("grant", "to", x))).collect()
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

/// A type name as BigQuery reports it in a schema (`integer` -> `INT64`, `float` -> `FLOAT64`,
/// `boolean` -> `BOOL`), to compare a seed's configured types with a table's.
pub fn standard_type(name: &str) -> String {
    type_name(&json!({"type": name.trim().to_ascii_uppercase()}))
}

/// Whether a seed with `columns` can be loaded over a table with `existing` (same names and
/// types, in order) with `WRITE_TRUNCATE`; otherwise the table is dropped first, as
/// dbt-bigquery's `reset_csv_table` does.
pub fn same_columns(existing: &[(String, String)], columns: &[(String, String)]) -> bool {
    existing.len() == columns.len()
        && existing.iter().zip(columns).all(|((a, at), (b, bt))| a.eq_ignore_ascii_case(b) && standard_type(at) == standard_type(bt))
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

    fn partitioned(data_type: &str, granularity: &str) -> TableOptions {
        let range = (data_type == "int64").then_some((0, 1000, 10));
        let partition_by = PartitionBy {
            field: "at".into(),
            data_type: data_type.into(),
            granularity: granularity.into(),
            range,
            time_ingestion_partitioning: false,
            copy_partitions: false,
        };
        TableOptions { partition_by: Some(partition_by), ..TableOptions::default() }
    }

    #[test]
    fn statements_golden() {
        let r = RelationName { database: "acme-prod".into(), schema: "analytics".into(), name: "orders".into() };
        let target = relation(&r);
        let tmp = relation(&RelationName { name: "orders__dbt_tmp".into(), ..r.clone() });
        let mut out = String::new();
        let (prefix, suffix) = create_view(&target, &TableOptions::default());
        out.push_str(&format!("-- view\n{prefix}select 1 as id{suffix}\n\n"));
        let options = TableOptions {
            cluster_by: vec!["customer_id".into(), "status".into()],
            labels: vec![("team".into(), "finance".into()), ("cost-center".into(), "it's".into())],
            require_partition_filter: Some(true),
            partition_expiration_days: Some("90".into()),
            hours_to_expiration: Some("24".into()),
            kms_key_name: Some("projects/p/locations/us/keyRings/r/cryptoKeys/k".into()),
            ..partitioned("timestamp", "day")
        };
        let (prefix, suffix) = create_view(&target, &options);
        out.push_str(&format!("-- view with labels and expiry\n{prefix}select 1 as id{suffix}\n\n"));
        for (label, o, temporary) in [
            ("table, every option", &options, false),
            ("staged rows of the same model", &options, true),
            ("date by day", &partitioned("date", "day"), false),
            ("datetime by month", &partitioned("datetime", "month"), false),
            ("int64 range", &partitioned("int64", "day"), false),
        ] {
            let (prefix, suffix) = create_table(&target, o, temporary).unwrap();
            out.push_str(&format!("-- {label}\n{prefix}select 1 as id{suffix}\n\n"));
        }
        out.push_str(&format!("-- _dbt_max_partition\n{}\n", declare_max_partition("where at > _dbt_max_partition", &options, &target)));
        let (old, new) =
            (cols(&[("id", "INT64"), ("a", "STRING"), ("at", "DATE")]), cols(&[("id", "INT64"), ("b", "NUMERIC"), ("at", "DATE")]));
        let merge = IncrementalStrategy::Merge { unique_key: vec!["id".into(), "Day".into()] };
        let dynamic = IncrementalStrategy::InsertOverwrite { partitions: vec![] };
        let fixed = IncrementalStrategy::InsertOverwrite { partitions: vec!["date('2024-01-01')".into(), "date('2024-01-02')".into()] };
        let by_day = partitioned("date", "day");
        for (label, strategy, mode, o) in [
            ("merge, ignore", &merge, SchemaChange::Ignore, &TableOptions::default()),
            ("merge, append_new_columns, require_partition_filter", &merge, SchemaChange::AppendNewColumns, &options),
            ("append, sync_all_columns", &IncrementalStrategy::Append, SchemaChange::SyncAllColumns, &TableOptions::default()),
            ("insert_overwrite, dynamic", &dynamic, SchemaChange::Ignore, &by_day),
            ("insert_overwrite, static", &fixed, SchemaChange::Ignore, &by_day),
            ("insert_overwrite, dynamic, timestamp by day", &dynamic, SchemaChange::Ignore, &options),
        ] {
            let t = IncrementalTarget { target: &target, source: &tmp, options: o, existing: &old, incoming: &new };
            let plan = incremental(&t, strategy, mode).unwrap();
            out.push_str(&format!(
                "-- {label}\n{}\n\n",
                plan.alter.iter().chain([&plan.apply]).map(String::as_str).collect::<Vec<_>>().join(";\n")
            ));
        }
        out.push_str(&format!(
            "-- seed load\n{}\n",
            serde_json::to_string_pretty(&seed_load(&r, &cols(&[("id", "int64"), ("at", "DATETIME")]), b';')).unwrap()
        ));
        let grants = vec![
            ("roles/bigquery.dataViewer".to_string(), vec!["user:ana@acme.com".to_string(), "group:bi@acme.com".to_string()]),
            ("roles/bigquery.dataEditor".to_string(), vec!["serviceAccount:etl@acme.iam.gserviceaccount.com".to_string()]),
        ];
        let current = vec![
            ("roles/bigquery.dataViewer".to_string(), "user:ANA@acme.com".to_string()),
            ("roles/bigquery.dataViewer".to_string(), "user:bob@acme.com".to_string()),
        ];
        out.push_str(&format!(
            "\n-- grants on a table that had some\n{};\n",
            grant_statements(&target, "table", &grants, &current).join(";\n")
        ));
        out.push_str(&format!("\n-- the grants they are read from\n{}\n", show_grants(&r, "EU")));
        insta::assert_snapshot!(out);
        let again = grant_statements(&target, "view", &grants[..1], &current[..1]);
        let expected = "grant `roles/bigquery.dataViewer` on view `acme-prod`.`analytics`.`orders` to \"group:bi@acme.com\"";
        assert_eq!(again, [expected], "ana has it already");
        let t = IncrementalTarget { target: &target, source: &tmp, options: &TableOptions::default(), existing: &old, incoming: &new };
        let err = incremental(&t, &merge, SchemaChange::Fail).unwrap_err();
        assert!(err.contains("added [\"b\"], removed [\"a\"]"), "{err}");
        assert!(incremental(&t, &dynamic, SchemaChange::Ignore).unwrap_err().contains("partition_by"));
        let ingestion = TableOptions {
            partition_by: Some(PartitionBy { time_ingestion_partitioning: true, ..partitioned("date", "day").partition_by.unwrap() }),
            ..TableOptions::default()
        };
        assert!(create_table(&target, &ingestion, false).unwrap_err().contains("not built by kiln yet"));
    }

    #[test]
    fn a_table_laid_out_otherwise_is_not_replaceable() {
        let by_day = partitioned("date", "day");
        let table = json!({"timePartitioning": {"type": "DAY", "field": "at"}});
        assert!(replaceable(&table, &by_day));
        assert!(!replaceable(&table, &TableOptions::default()), "partitioning dropped");
        assert!(!replaceable(&json!({}), &by_day), "partitioning added");
        assert!(!replaceable(&table, &partitioned("timestamp", "month")), "granularity changed");
        let clustered = TableOptions { cluster_by: vec!["Id".into()], ..by_day.clone() };
        assert!(!replaceable(&table, &clustered), "clustering added");
        assert!(replaceable(&json!({"timePartitioning": {"type": "DAY", "field": "at"}, "clustering": {"fields": ["id"]}}), &clustered));
        let ranged = json!({"rangePartitioning": {"field": "at", "range": {"start": "0", "end": "1000", "interval": "10"}}});
        assert!(replaceable(&ranged, &partitioned("int64", "day")));
        assert!(replaceable(&json!({"type": "TABLE"}), &TableOptions::default()));
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
        let table = cols(&[("id", "INT64"), ("at", "TIMESTAMP")]);
        assert!(same_columns(&table, &cols(&[("ID", "integer"), ("at", "timestamp")])));
        assert!(!same_columns(&table, &cols(&[("id", "INT64"), ("at", "DATETIME")])), "a type changed");
        assert!(!same_columns(&table, &cols(&[("id", "INT64"), ("at", "TIMESTAMP"), ("note", "STRING")])), "a column was added");
    }
}
