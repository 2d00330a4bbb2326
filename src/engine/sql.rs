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
