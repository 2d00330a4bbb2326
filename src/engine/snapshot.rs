//! SQL for snapshots (SCD type 2), with the semantics of dbt-core's snapshot materialization
//! (`build_snapshot_table`, `snapshot_staging_table`, the `timestamp` and `check` strategies,
//! `hard_deletes`, and dbt-postgres' / dbt-duckdb's `snapshot_merge_sql`): the same change
//! staging, the same `dbt_scd_id` hash, the same treatment of NULLs, deletes and re-inserts.
//!
//! Pure (strings in, strings out), golden-tested. Each engine applies the staged changes its
//! own way: PostgreSQL with dbt-postgres' `update` and `insert` in one transaction, the
//! embedded engine by writing the table's next version from [`merged_table`].

use crate::adapter::names::quote_ident;
use crate::project::typed::{CheckCols, HardDeletes, SnapshotConfig, SnapshotStrategy};

/// Staging columns that are not copied into the snapshot table.
pub fn is_staging_only(column: &str) -> bool {
    let c = column.to_ascii_lowercase();
    c == "dbt_change_type" || c == "dbt_unique_key" || c.strip_prefix("dbt_unique_key_").is_some_and(|n| n.parse::<u32>().is_ok())
}

/// The SQL expressions a project's macros give a snapshot: dbt's `snapshot_get_time()`, and
/// `snapshot_hash_arguments` of [`scd_id_args`] and of [`deleted_scd_id_args`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expressions {
    pub now: String,
    pub scd_id: String,
    pub deleted_scd_id: String,
}

/// What `dbt_scd_id` hashes: the unique key and the version's time.
pub fn scd_id_args(c: &SnapshotConfig, now: &str) -> Vec<String> {
    let mut args = c.unique_key.clone();
    args.push(updated_at(c, now).to_string());
    args
}

/// What the `dbt_scd_id` of a deletion record (`hard_deletes: new_record`) hashes.
pub fn deleted_scd_id_args(c: &SnapshotConfig, now: &str) -> Vec<String> {
    vec![c.columns.scd_id.clone(), now.to_string()]
}

/// Refuses a snapshot whose query lacks a column its config names (`unique_key`, `updated_at`,
/// `check_cols`, when they are plain column names), before anything is written.
pub fn check_columns(c: &SnapshotConfig, source_columns: &[String]) -> Result<(), String> {
    let plain = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut named: Vec<(&str, &str)> = c.unique_key.iter().map(|k| ("unique_key", k.as_str())).collect();
    match &c.strategy {
        SnapshotStrategy::Timestamp { updated_at } => named.push(("updated_at", updated_at)),
        SnapshotStrategy::Check { cols: CheckCols::List(cols), updated_at } => {
            named.extend(cols.iter().map(|col| ("check_cols", col.as_str())));
            named.extend(updated_at.iter().map(|u| ("updated_at", u.as_str())));
        }
        SnapshotStrategy::Check { cols: CheckCols::All, updated_at } => named.extend(updated_at.iter().map(|u| ("updated_at", u.as_str()))),
    }
    for (key, column) in named {
        if plain(column) && !source_columns.iter().any(|s| s.eq_ignore_ascii_case(column)) {
            return Err(format!(
                "`{key}` names `{column}`, which the snapshot's query does not return (its columns: {}); nothing was written",
                source_columns.join(", ")
            ));
        }
    }
    Ok(())
}

/// What the staging query is built from.
pub struct Staging<'a> {
    pub config: &'a SnapshotConfig,
    /// The snapshot's compiled select.
    pub sql: &'a str,
    /// The snapshot table, rendered.
    pub target: &'a str,
    pub exprs: &'a Expressions,
    pub quote: char,
    /// The snapshot table's columns.
    pub target_columns: &'a [String],
    /// The columns of `sql`.
    pub source_columns: &'a [String],
}

/// The expression that stamps a new version: `updated_at`, or the snapshot time.
fn updated_at<'a>(c: &'a SnapshotConfig, now: &'a str) -> &'a str {
    match &c.strategy {
        SnapshotStrategy::Timestamp { updated_at } => updated_at,
        SnapshotStrategy::Check { updated_at, .. } => updated_at.as_deref().unwrap_or(now),
    }
}

/// `dbt_valid_to` of a current row: null, or `dbt_valid_to_current` (typed like `updated_at`).
fn valid_to_current(c: &SnapshotConfig, now: &str) -> String {
    let at = updated_at(c, now);
    format!("coalesce(nullif({at}, {at}), {}) as {}", c.valid_to_current.as_deref().unwrap_or("null"), c.columns.valid_to)
}

/// dbt's `build_snapshot_table`: the first version of the snapshot.
pub fn build_table(c: &SnapshotConfig, sql: &str, e: &Expressions) -> String {
    let m = &c.columns;
    let now = e.now.as_str();
    let at = updated_at(c, now);
    let deleted = if c.hard_deletes == HardDeletes::NewRecord { format!(",\n    'False' as {}", m.is_deleted) } else { String::new() };
    format!(
        "select *,\n    {} as {},\n    {at} as {},\n    {at} as {},\n    {}{deleted}\nfrom (\n{sql}\n) sbq",
        e.scd_id,
        m.scd_id,
        m.updated_at,
        m.valid_from,
        valid_to_current(c, now)
    )
}

fn unique_key_fields(c: &SnapshotConfig) -> String {
    if c.unique_key_is_list {
        c.unique_key.iter().enumerate().map(|(i, k)| format!("{k} as dbt_unique_key_{}", i + 1)).collect::<Vec<_>>().join(", ")
    } else {
        format!("{} as dbt_unique_key", c.unique_key[0])
    }
}

fn unique_key_join(c: &SnapshotConfig, left: &str, right: &str) -> String {
    if c.unique_key_is_list {
        (1..=c.unique_key.len())
            .map(|i| format!("{left}.dbt_unique_key_{i} = {right}.dbt_unique_key_{i}"))
            .collect::<Vec<_>>()
            .join(" and ")
    } else {
        format!("{left}.dbt_unique_key = {right}.dbt_unique_key")
    }
}

fn unique_key_is(c: &SnapshotConfig, alias: &str, null: bool) -> String {
    let column = if c.unique_key_is_list { "dbt_unique_key_1" } else { "dbt_unique_key" };
    format!("{alias}.{column} is {}null", if null { "" } else { "not " })
}

/// The current version of each row: `dbt_valid_to` is null (or `dbt_valid_to_current`).
fn is_current(c: &SnapshotConfig, qualifier: &str) -> String {
    let valid_to = format!("{qualifier}{}", c.columns.valid_to);
    match &c.valid_to_current {
        Some(current) => format!("({valid_to} = {current} or {valid_to} is null)"),
        None => format!("{valid_to} is null"),
    }
}

/// The `check` strategy's columns that the snapshot table has (quoted), and whether a checked
/// column is new (then every row counts as changed, as in dbt).
fn checked_columns(cols: &CheckCols, s: &Staging) -> (Vec<String>, bool) {
    let wanted: Vec<&String> = match cols {
        CheckCols::All => s.source_columns.iter().collect(),
        CheckCols::List(list) => list.iter().collect(),
    };
    let existing = |c: &str| s.target_columns.iter().any(|t| t.eq_ignore_ascii_case(c));
    let added = wanted.iter().any(|c| !existing(c));
    (wanted.into_iter().filter(|c| existing(c)).map(|c| quote_ident(c, s.quote)).collect(), added)
}

/// dbt's `row_changed` expression of the strategy, between `snapshotted_data` and `source_data`.
fn row_changed(s: &Staging) -> String {
    let c = s.config;
    match &c.strategy {
        SnapshotStrategy::Timestamp { updated_at } => format!("(snapshotted_data.{} < source_data.{updated_at})", c.columns.valid_from),
        SnapshotStrategy::Check { cols, .. } => {
            let (columns, added) = checked_columns(cols, s);
            if added {
                return "(TRUE)".into();
            }
            let one = |col: &String| {
                format!(
                    "snapshotted_data.{col} != source_data.{col} or ((snapshotted_data.{col} is null and not source_data.{col} is null) or (not snapshotted_data.{col} is null and source_data.{col} is null))"
                )
            };
            format!("({})", columns.iter().map(one).collect::<Vec<_>>().join(" or "))
        }
    }
}

/// dbt's `snapshot_staging_table`: one row per change, `dbt_change_type` `insert`, `update` or
/// `delete`, with the values the snapshot table takes.
pub fn staging(s: &Staging) -> String {
    let c = s.config;
    let m = &c.columns;
    let (now, keys) = (s.exprs.now.as_str(), unique_key_fields(c));
    let at = updated_at(c, now);
    let new_record = c.hard_deletes == HardDeletes::NewRecord;
    let tracks_deletes = c.hard_deletes != HardDeletes::Ignore;
    let was_deleted = if new_record { format!(" or snapshotted_data.{} = 'True'", m.is_deleted) } else { String::new() };
    let changed = row_changed(s);
    let join = unique_key_join(c, "snapshotted_data", "source_data");
    let mut ctes = vec![
        format!("snapshot_query as (\n{}\n)", s.sql),
        format!("snapshotted_data as (\n    select *, {keys}\n    from {}\n    where {}\n)", s.target, is_current(c, "")),
        format!(
            "insertions_source_data as (\n    select *, {keys},\n        {at} as {},\n        {at} as {},\n        {},\n        {} as {}\n    from snapshot_query\n)",
            m.updated_at,
            m.valid_from,
            valid_to_current(c, now),
            s.exprs.scd_id,
            m.scd_id
        ),
        format!(
            "updates_source_data as (\n    select *, {keys},\n        {at} as {},\n        {at} as {},\n        {at} as {}\n    from snapshot_query\n)",
            m.updated_at, m.valid_from, m.valid_to
        ),
    ];
    if tracks_deletes {
        ctes.push(format!("deletes_source_data as (\n    select *, {keys}\n    from snapshot_query\n)"));
    }
    let not_deleted_flag = if new_record { format!(",\n        'False' as {}", m.is_deleted) } else { String::new() };
    ctes.push(format!(
        "insertions as (\n    select\n        'insert' as dbt_change_type,\n        source_data.*{not_deleted_flag}\n    from insertions_source_data as source_data\n    left outer join snapshotted_data\n        on {join}\n    where {}\n        or ({} and ({changed}{was_deleted}))\n)",
        unique_key_is(c, "snapshotted_data", true),
        unique_key_is(c, "snapshotted_data", false),
    ));
    let keep_flag = if new_record { format!(",\n        snapshotted_data.{}", m.is_deleted) } else { String::new() };
    ctes.push(format!(
        "updates as (\n    select\n        'update' as dbt_change_type,\n        source_data.*,\n        snapshotted_data.{}{keep_flag}\n    from updates_source_data as source_data\n    join snapshotted_data\n        on {join}\n    where ({changed}{was_deleted})\n)",
        m.scd_id
    ));
    // A deleted row whose latest version already says so is left alone (new_record).
    let latest_is_deleted = format!("snapshotted_data.{} = 'True' and {}", m.is_deleted, is_current(c, "snapshotted_data."));
    if tracks_deletes {
        let skip_deleted = if new_record { format!("\n        and not ({latest_is_deleted})") } else { String::new() };
        ctes.push(format!(
            "deletes as (\n    select\n        'delete' as dbt_change_type,\n        source_data.*,\n        {now} as {},\n        {now} as {},\n        {now} as {},\n        snapshotted_data.{}{keep_flag}\n    from snapshotted_data\n    left join deletes_source_data as source_data\n        on {join}\n    where {}{skip_deleted}\n)",
            m.valid_from,
            m.updated_at,
            m.valid_to,
            m.scd_id,
            unique_key_is(c, "source_data", true),
        ));
    }
    if new_record {
        let snapshotted = |col: &str| s.target_columns.iter().any(|t| t == col);
        let mut columns: Vec<String> = s
            .source_columns
            .iter()
            .map(|col| format!("{}.{}", if snapshotted(col) { "snapshotted_data" } else { "source_data" }, quote_ident(col, s.quote)))
            .collect();
        if c.unique_key_is_list {
            columns.extend(c.unique_key.iter().enumerate().map(|(i, k)| format!("snapshotted_data.{k} as dbt_unique_key_{}", i + 1)));
        } else {
            columns.push("snapshotted_data.dbt_unique_key as dbt_unique_key".into());
        }
        ctes.push(format!(
            "deletion_records as (\n    select\n        'insert' as dbt_change_type,\n        {},\n        {now} as {},\n        {now} as {},\n        snapshotted_data.{} as {},\n        {} as {},\n        'True' as {}\n    from snapshotted_data\n    left join deletes_source_data as source_data\n        on {join}\n    where {}\n        and not ({latest_is_deleted})\n)",
            columns.join(",\n        "),
            m.valid_from,
            m.updated_at,
            m.valid_to,
            m.valid_to,
            s.exprs.deleted_scd_id,
            m.scd_id,
            m.is_deleted,
            unique_key_is(c, "source_data", true),
        ));
    }
    let mut parts = vec!["select * from insertions", "select * from updates"];
    if tracks_deletes {
        parts.push("select * from deletes");
    }
    if new_record {
        parts.push("select * from deletion_records");
    }
    format!("with {}\n{}", ctes.join(",\n"), parts.join("\nunion all\n"))
}

/// The columns a staged change writes into the snapshot table, and those the table lacks
/// (added to it first, as dbt's `create_columns` does). Names compare case-insensitively.
pub fn insert_columns<'a>(staging_columns: &'a [(String, String)], target_columns: &[String]) -> (Vec<&'a str>, Vec<(&'a str, &'a str)>) {
    let insert: Vec<&str> = staging_columns.iter().map(|(c, _)| c.as_str()).filter(|c| !is_staging_only(c)).collect();
    let missing = staging_columns
        .iter()
        .filter(|(c, _)| !is_staging_only(c) && !target_columns.iter().any(|t| t.eq_ignore_ascii_case(c)))
        .map(|(c, t)| (c.as_str(), t.as_str()))
        .collect();
    (insert, missing)
}

/// dbt-postgres' (and dbt-duckdb's) `snapshot_merge_sql`: close the versions that changed or
/// were deleted, then insert the new versions, from the staging table `staged`.
pub fn merge_statements(c: &SnapshotConfig, target: &str, staged: &str, insert: &[&str], quote: char) -> Vec<String> {
    let m = &c.columns;
    let current = match &c.valid_to_current {
        Some(current) => format!("({target}.{v} = {current} or {target}.{v} is null)", v = m.valid_to),
        None => format!("{target}.{} is null", m.valid_to),
    };
    let columns: Vec<String> = insert.iter().map(|col| quote_ident(col, quote)).collect();
    vec![
        format!(
            "update {target}\nset {v} = kiln_staged.{v}\nfrom {staged} as kiln_staged\nwhere kiln_staged.{scd}::text = {target}.{scd}::text\n  and kiln_staged.dbt_change_type::text in ('update'::text, 'delete'::text)\n  and {current}",
            v = m.valid_to,
            scd = m.scd_id
        ),
        format!(
            "insert into {target} ({})\nselect {}\nfrom {staged} as kiln_staged\nwhere kiln_staged.dbt_change_type::text = 'insert'::text",
            columns.join(", "),
            columns.iter().map(|col| format!("kiln_staged.{col}")).collect::<Vec<_>>().join(", ")
        ),
    ]
}

/// dbt's default `snapshot_merge_sql` (dbt-bigquery's): one `merge` that closes the versions
/// that changed or were deleted and inserts the new ones, from the staging table `staged`.
pub fn merge_sql(c: &SnapshotConfig, target: &str, staged: &str, insert: &[&str], quote: char) -> String {
    let m = &c.columns;
    let current = match &c.valid_to_current {
        Some(current) => format!("(DBT_INTERNAL_DEST.{v} = {current} or DBT_INTERNAL_DEST.{v} is null)", v = m.valid_to),
        None => format!("DBT_INTERNAL_DEST.{} is null", m.valid_to),
    };
    let columns = insert.iter().map(|col| quote_ident(col, quote)).collect::<Vec<_>>().join(", ");
    format!(
        "merge into {target} as DBT_INTERNAL_DEST\nusing {staged} as DBT_INTERNAL_SOURCE\non DBT_INTERNAL_SOURCE.{scd} = DBT_INTERNAL_DEST.{scd}\n\
         when matched\n  and {current}\n  and DBT_INTERNAL_SOURCE.dbt_change_type in ('update', 'delete')\n    then update\n    set {v} = DBT_INTERNAL_SOURCE.{v}\n\
         when not matched\n  and DBT_INTERNAL_SOURCE.dbt_change_type = 'insert'\n    then insert ({columns})\n    values ({columns})",
        scd = m.scd_id,
        v = m.valid_to
    )
}

/// The next version of the snapshot table on an engine without `update`: every row of the
/// table, with `dbt_valid_to` closed where the merge would close it, followed by the inserted
/// versions. Columns keep the table's order; new ones follow (null in the old rows).
pub fn merged_table(
    c: &SnapshotConfig,
    target: &str,
    staging_sql: &str,
    target_columns: &[String],
    staging_columns: &[(String, String)],
) -> String {
    let m = &c.columns;
    let (insert, missing) = insert_columns(staging_columns, target_columns);
    let q = |col: &str| quote_ident(col, '"');
    let is_valid_to = |col: &str| col.eq_ignore_ascii_case(&m.valid_to);
    let mut kept: Vec<String> = target_columns
        .iter()
        .map(|col| {
            if is_valid_to(col) {
                format!("case when kiln_closed.kiln_scd_id is not null then kiln_closed.kiln_valid_to else kiln_old.{0} end as {0}", q(col))
            } else {
                format!("kiln_old.{}", q(col))
            }
        })
        .collect();
    kept.extend(missing.iter().map(|(col, ty)| format!("cast(null as {ty}) as {}", q(col))));
    let all: Vec<&str> = target_columns.iter().map(String::as_str).chain(missing.iter().map(|(col, _)| *col)).collect();
    let inserted: Vec<String> = all
        .iter()
        .map(|col| match insert.iter().find(|i| i.eq_ignore_ascii_case(col)) {
            Some(i) => format!("kiln_staged.{} as {}", q(i), q(col)),
            None => format!("null as {}", q(col)),
        })
        .collect();
    let current = match &c.valid_to_current {
        Some(current) => format!("(kiln_old.{v} = {current} or kiln_old.{v} is null)", v = m.valid_to),
        None => format!("kiln_old.{} is null", m.valid_to),
    };
    format!(
        "with kiln_staged as (\n{staging_sql}\n),\nkiln_closed as (\n    select cast({scd} as varchar) as kiln_scd_id, max({v}) as kiln_valid_to\n    from kiln_staged\n    where dbt_change_type in ('update', 'delete')\n    group by cast({scd} as varchar)\n)\nselect {}\nfrom {target} as kiln_old\nleft join kiln_closed\n    on kiln_closed.kiln_scd_id = cast(kiln_old.{scd} as varchar) and {current}\nunion all\nselect {}\nfrom kiln_staged\nwhere dbt_change_type = 'insert'",
        kept.join(",\n    "),
        inserted.join(",\n    "),
        scd = m.scd_id,
        v = m.valid_to,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::typed::MetaColumns;

    fn config(strategy: SnapshotStrategy, hard_deletes: HardDeletes, list: bool) -> SnapshotConfig {
        SnapshotConfig {
            unique_key: if list { vec!["id".into(), "region".into()] } else { vec!["id".into()] },
            unique_key_is_list: list,
            strategy,
            hard_deletes,
            valid_to_current: None,
            columns: MetaColumns {
                valid_from: "dbt_valid_from".into(),
                valid_to: "dbt_valid_to".into(),
                scd_id: "dbt_scd_id".into(),
                updated_at: "dbt_updated_at".into(),
                is_deleted: "dbt_is_deleted".into(),
            },
        }
    }

    /// The SQL of every strategy and `hard_deletes` mode, as golden files.
    #[test]
    fn snapshot_sql_golden() {
        let target =
            ["id", "region", "status", "updated_at", "dbt_scd_id", "dbt_updated_at", "dbt_valid_from", "dbt_valid_to"].map(String::from);
        let source = ["id", "region", "status", "updated_at", "amount"].map(String::from);
        let cases = [
            ("timestamp", config(SnapshotStrategy::Timestamp { updated_at: "updated_at".into() }, HardDeletes::Ignore, false)),
            (
                "check_all_invalidate",
                config(SnapshotStrategy::Check { cols: CheckCols::All, updated_at: None }, HardDeletes::Invalidate, false),
            ),
            (
                "check_list_new_record",
                config(
                    SnapshotStrategy::Check { cols: CheckCols::List(vec!["status".into()]), updated_at: None },
                    HardDeletes::NewRecord,
                    true,
                ),
            ),
        ];
        let mut out = String::new();
        for (name, c) in &cases {
            let hash = |args: Vec<String>| format!("HASH({})", args.join(", "));
            let exprs =
                Expressions { now: "NOW".into(), scd_id: hash(scd_id_args(c, "NOW")), deleted_scd_id: hash(deleted_scd_id_args(c, "NOW")) };
            let s = Staging {
                config: c,
                sql: "select * from src",
                target: "\"snap\"",
                exprs: &exprs,
                quote: '"',
                target_columns: &target,
                source_columns: &source,
            };
            out.push_str(&format!("-- {name}: first build\n{}\n\n-- {name}: staging\n{}\n\n", build_table(c, s.sql, &exprs), staging(&s)));
        }
        let c = &cases[0].1;
        let staging_columns: Vec<(String, String)> =
            ["dbt_change_type", "id", "status", "amount", "dbt_unique_key", "dbt_scd_id", "dbt_valid_to"]
                .iter()
                .map(|n| (n.to_string(), "VARCHAR".to_string()))
                .collect();
        let target: Vec<String> = ["id", "status", "dbt_scd_id", "dbt_valid_to"].map(String::from).to_vec();
        out.push_str(&format!(
            "-- merged table (embedded engine)\n{}\n\n",
            merged_table(c, "\"snap\"", "<staging>", &target, &staging_columns)
        ));
        let (insert, missing) = insert_columns(&staging_columns, &target);
        assert_eq!(missing, [("amount", "VARCHAR")]);
        out.push_str(&format!(
            "-- merge statements (PostgreSQL)\n{}\n",
            merge_statements(c, "\"snap\"", "\"snap__dbt_tmp\"", &insert, '"').join(";\n")
        ));
        out.push_str(&format!("\n-- merge (BigQuery)\n{}\n", merge_sql(c, "`p`.`s`.`snap`", "`p`.`s`.`snap__dbt_tmp`", &insert, '`')));
        insta::assert_snapshot!(out);
    }
}
