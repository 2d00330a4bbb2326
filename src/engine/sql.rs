//! SQL generation for materializations: pure (strings in, strings out), so it is golden-tested
//! without a database. Identifiers are always quoted.

use super::{IncrementalStrategy, SchemaChange};
use crate::adapter::names::quote_ident;

/// The query whose result replaces an incremental table: the existing rows that stay, plus the
/// new rows, over the columns `on_schema_change` decides. `existing`/`incoming` are the column
/// names of the table and of the model's query.
pub fn incremental(
    target: &str,
    new_sql: &str,
    strategy: &IncrementalStrategy,
    existing: &[String],
    incoming: &[String],
    on_schema_change: SchemaChange,
) -> Result<String, String> {
    let added: Vec<&String> = incoming.iter().filter(|c| !existing.contains(c)).collect();
    let removed: Vec<&String> = existing.iter().filter(|c| !incoming.contains(c)).collect();
    let columns: Vec<&String> = match on_schema_change {
        SchemaChange::Fail if !added.is_empty() || !removed.is_empty() => {
            return Err(format!(
                "the columns of incremental model {target} changed (on_schema_change: fail): added {added:?}, removed {removed:?}; \
                 run with --full-refresh, or set on_schema_change to append_new_columns or sync_all_columns"
            ));
        }
        SchemaChange::Ignore | SchemaChange::Fail => existing.iter().collect(),
        SchemaChange::AppendNewColumns => existing.iter().chain(added.iter().copied()).collect(),
        SchemaChange::SyncAllColumns => incoming.iter().collect(),
    };
    let pick = |have: &[String], alias: &str| -> String {
        columns
            .iter()
            .map(|c| if have.contains(c) { format!("{alias}.{}", quote_ident(c, '"')) } else { format!("null as {}", quote_ident(c, '"')) })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (old_cols, new_cols) = (pick(existing, "kiln_old"), pick(incoming, "kiln_new"));
    Ok(match strategy {
        IncrementalStrategy::Append => {
            format!("select {old_cols} from {target} as kiln_old\nunion all\nselect {new_cols} from ({new_sql}) as kiln_new")
        }
        IncrementalStrategy::InsertOverwrite { .. } => return Err("`insert_overwrite` is built on BigQuery only".into()),
        IncrementalStrategy::Merge { unique_key } | IncrementalStrategy::DeleteInsert { unique_key } => {
            let cond = unique_key
                .iter()
                .map(|k| format!("kiln_new.{q} = kiln_old.{q}", q = quote_ident(k, '"')))
                .collect::<Vec<_>>()
                .join(" and ");
            format!(
                "select {old_cols} from {target} as kiln_old\nwhere not exists (select 1 from ({new_sql}) as kiln_new where {cond})\nunion all\nselect {new_cols} from ({new_sql}) as kiln_new"
            )
        }
    })
}

/// How the columns (name, type) of an incremental run's new rows differ from its table's.
pub struct ColumnChanges<'a> {
    pub added: Vec<&'a (String, String)>,
    pub removed: Vec<&'a (String, String)>,
    /// Columns of both whose type differs.
    pub retyped: Vec<&'a (String, String)>,
    existing: &'a [(String, String)],
    incoming: &'a [(String, String)],
}

fn names<'a>(v: &[&'a (String, String)]) -> Vec<&'a str> {
    v.iter().map(|(c, _)| c.as_str()).collect()
}

impl<'a> ColumnChanges<'a> {
    /// Names compare as the warehouse compares them: `fold` ignores case (BigQuery).
    pub fn of(existing: &'a [(String, String)], incoming: &'a [(String, String)], fold: bool) -> ColumnChanges<'a> {
        let same = move |a: &str, b: &str| if fold { a.eq_ignore_ascii_case(b) } else { a == b };
        let has = |cols: &[(String, String)], name: &str| cols.iter().any(|(c, _)| same(c, name));
        ColumnChanges {
            added: incoming.iter().filter(|(c, _)| !has(existing, c)).collect(),
            removed: existing.iter().filter(|(c, _)| !has(incoming, c)).collect(),
            retyped: incoming.iter().filter(|(c, t)| existing.iter().any(|(e, et)| same(e, c) && et != t)).collect(),
            existing,
            incoming,
        }
    }

    /// `on_schema_change: fail` with changed columns: the error.
    pub fn check(&self, target: &str, mode: SchemaChange) -> Result<(), String> {
        if mode != SchemaChange::Fail || self.added.is_empty() && self.removed.is_empty() && self.retyped.is_empty() {
            return Ok(());
        }
        Err(format!(
            "the columns of incremental model {target} changed (on_schema_change: fail): added {:?}, removed {:?}, type changed {:?}; \
             run with --full-refresh, or set on_schema_change to append_new_columns or sync_all_columns",
            names(&self.added),
            names(&self.removed),
            names(&self.retyped)
        ))
    }

    /// The columns written once `mode` has changed the table: all the new rows' columns when
    /// columns are added, else those the table and the new rows share (in the table's order).
    pub fn written(&self, mode: SchemaChange) -> Vec<&'a str> {
        match mode {
            SchemaChange::AppendNewColumns | SchemaChange::SyncAllColumns => self.incoming.iter().map(|(c, _)| c.as_str()).collect(),
            SchemaChange::Ignore | SchemaChange::Fail => {
                let removed = names(&self.removed);
                self.existing.iter().map(|(c, _)| c.as_str()).filter(|c| !removed.contains(c)).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn incremental_sql_golden() {
        let (old, new) = (cols(&["id", "a"]), cols(&["id", "b"]));
        let merge = IncrementalStrategy::Merge { unique_key: cols(&["id", "Day"]) };
        let mut out = String::new();
        for (label, strategy, mode) in [
            ("append, ignore", &IncrementalStrategy::Append, SchemaChange::Ignore),
            ("merge, append_new_columns", &merge, SchemaChange::AppendNewColumns),
            ("merge, sync_all_columns", &merge, SchemaChange::SyncAllColumns),
        ] {
            out.push_str(&format!(
                "-- {label}\n{}\n\n",
                incremental("\"db\".\"s\".\"t\"", "select 2 as id", strategy, &old, &new, mode).unwrap()
            ));
        }
        insta::assert_snapshot!(out);
        let err = incremental("t", "select 1", &IncrementalStrategy::Append, &old, &new, SchemaChange::Fail).unwrap_err();
        assert!(err.contains("added [\"b\"], removed [\"a\"]"), "{err}");
        assert!(incremental("t", "select 1", &IncrementalStrategy::Append, &old, &old, SchemaChange::Fail).is_ok());
    }
}
