//! Model contracts (`contract: {enforced: true}`): the model's columns and types must be the
//! ones its YAML declares, and its constraints must hold, before the new version is published.
//!
//! Types are compared the way dbt does it: both the query's columns and the declared types
//! (`cast(null as <data_type>)`) are asked of the engine, so `int` and `integer` agree and
//! `integer` and `bigint` do not. Constraints (`not_null`, `unique`, `primary_key`, `check`,
//! `foreign_key`) become [`Check`]s the engine runs on the written, unpublished table; views
//! are checked for columns only, as in dbt.

use crate::engine::{Check, Engine};
use crate::jinja::relation::quote_ident;
use crate::parse::Node;
use serde_json::Value as Json;

/// What building a contracted model needs: the SQL with columns in contract order, and the
/// checks its table must pass.
pub struct Enforced {
    pub sql: String,
    pub checks: Vec<Check>,
}

/// Compares the model's query with its contract; `Err` carries dbt's mismatch table.
/// `render` turns `ref('x')` (a foreign key's `to`) into a relation.
pub fn enforce(
    engine: &dyn Engine,
    node: &Node,
    sql: &str,
    quote: char,
    render: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Enforced, String> {
    if node.columns.is_empty() {
        return Err(format!(
            "model `{}` has an enforced contract but declares no columns; list every column with its `data_type` in the model's YAML",
            node.name
        ));
    }
    let untyped: Vec<&str> = node.columns.values().filter(|c| c.data_type.is_none()).map(|c| c.name.as_str()).collect();
    if !untyped.is_empty() {
        return Err(format!(
            "model `{}` has an enforced contract, but these columns have no `data_type`: {}; give every column a data_type",
            node.name,
            untyped.join(", ")
        ));
    }
    let actual = engine.query_columns(sql).map_err(|e| e.message)?;
    let declared_sql = node
        .columns
        .values()
        .map(|c| format!("cast(null as {}) as {}", c.data_type.as_deref().unwrap_or_default(), quote_ident(&c.name, quote)))
        .collect::<Vec<_>>()
        .join(", ");
    let declared = engine
        .query_columns(&format!("select {declared_sql}"))
        .map_err(|e| format!("the contract of model `{}` names a type the engine does not know: {}", node.name, e.message))?;
    // (column, type in the SQL, type in the contract, reason)
    let mut mismatches: Vec<[String; 4]> = Vec::new();
    for ((name, contract_type), col) in declared.iter().zip(node.columns.values()) {
        match actual.iter().find(|(a, _)| a.eq_ignore_ascii_case(name)) {
            None => mismatches.push([col.name.clone(), String::new(), contract_type.clone(), "missing in definition".into()]),
            Some((_, t)) if !crate::jinja::column::same_type(t, contract_type) => {
                mismatches.push([col.name.clone(), t.clone(), contract_type.clone(), "data type mismatch".into()])
            }
            Some(_) => {}
        }
    }
    for (name, t) in &actual {
        if !declared.iter().any(|(d, _)| d.eq_ignore_ascii_case(name)) {
            mismatches.push([name.clone(), t.clone(), String::new(), "missing in contract".into()]);
        }
    }
    if !mismatches.is_empty() {
        let header = ["column_name", "definition_type", "contract_type", "mismatch_reason"].map(String::from);
        let widths: Vec<usize> = (0..4).map(|i| mismatches.iter().chain([&header]).map(|r| r[i].len()).max().unwrap_or(0)).collect();
        let line =
            |r: &[String; 4]| format!("| {} |", r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join(" | "));
        let mut table = vec![line(&header), format!("| {} |", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join(" | "))];
        table.extend(mismatches.iter().map(line));
        return Err(format!(
            "model `{}` has an enforced contract that failed; the previous version of its relation is kept.\n\
             Make the name, data_type and number of columns in the contract match the model's SQL:\n\n{}",
            node.name,
            table.join("\n")
        ));
    }
    // Columns in contract order, named as the contract names them.
    let projection: Vec<String> = node
        .columns
        .values()
        .map(|c| {
            let actual_name = actual.iter().find(|(a, _)| a.eq_ignore_ascii_case(&c.name)).map_or(c.name.as_str(), |(a, _)| a.as_str());
            if actual_name == c.name {
                quote_ident(&c.name, quote)
            } else {
                format!("{} as {}", quote_ident(actual_name, quote), quote_ident(&c.name, quote))
            }
        })
        .collect();
    let sql = format!("select {} from (\n{}\n) as model_subq", projection.join(", "), sql.trim().trim_end_matches(';'));
    let mut checks = Vec::new();
    for col in node.columns.values() {
        for c in col.constraints.as_array().map(Vec::as_slice).unwrap_or(&[]) {
            checks.extend(constraint_checks(c, std::slice::from_ref(&col.name), quote, render)?);
        }
    }
    for c in node.extra.get("constraints").and_then(Json::as_array).map(Vec::as_slice).unwrap_or(&[]) {
        let columns: Vec<String> = c
            .get("columns")
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        checks.extend(constraint_checks(c, &columns, quote, render)?);
    }
    Ok(Enforced { sql, checks })
}

fn constraint_checks(
    c: &Json,
    columns: &[String],
    quote: char,
    render: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Vec<Check>, String> {
    let kind = c.get("type").and_then(Json::as_str).unwrap_or("");
    let cols: Vec<String> = columns.iter().map(|c| quote_ident(c, quote)).collect();
    let on = columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
    let not_null = || Check {
        name: format!("not_null on {on}"),
        ddl: Some(format!(
            "alter table {{relation}} {}",
            cols.iter().map(|c| format!("alter column {c} set not null")).collect::<Vec<_>>().join(", ")
        )),
        violations: format!(
            "select count(*) from {{relation}} where {}",
            cols.iter().map(|c| format!("{c} is null")).collect::<Vec<_>>().join(" or ")
        ),
    };
    let unique = |name: &str| Check {
        name: format!("{name} on {on}"),
        ddl: Some(format!("alter table {{relation}} add {} ({})", name.replace('_', " "), cols.join(", "))),
        violations: format!(
            "select count(*) from (select {list} from {{relation}} where {nn} group by {list} having count(*) > 1) as dups",
            list = cols.join(", "),
            nn = cols.iter().map(|c| format!("{c} is not null")).collect::<Vec<_>>().join(" and ")
        ),
    };
    Ok(match kind {
        "not_null" => vec![not_null()],
        "unique" => vec![unique("unique")],
        "primary_key" => vec![not_null(), unique("primary_key")],
        "check" => {
            let expr = c.get("expression").and_then(Json::as_str).ok_or("a `check` constraint needs an `expression`")?;
            vec![Check {
                name: format!("check `{expr}`"),
                violations: format!("select count(*) from {{relation}} where not ({expr})"),
                ddl: Some(format!("alter table {{relation}} add check ({expr})")),
            }]
        }
        "foreign_key" => {
            // dbt 1.9: `to: ref('x')`, `to_columns: [id]`; before: `expression: "x (id)"`.
            let (to, to_columns) = match (c.get("to").and_then(Json::as_str), c.get("expression").and_then(Json::as_str)) {
                (Some(to), _) => {
                    let to_columns: Vec<String> = c
                        .get("to_columns")
                        .and_then(Json::as_array)
                        .map(|a| a.iter().filter_map(|v| v.as_str().map(|s| quote_ident(s, quote))).collect())
                        .unwrap_or_default();
                    (render(&format!("{{{{ {to} }}}}"))?, to_columns)
                }
                (None, Some(expr)) => {
                    let (rel, rest) =
                        expr.split_once('(').ok_or_else(|| format!("cannot read the foreign key `{expr}`: write `table (column)`"))?;
                    (rel.trim().to_string(), rest.trim_end_matches(')').split(',').map(|s| s.trim().to_string()).collect())
                }
                _ => return Err("a `foreign_key` constraint needs `to` and `to_columns`".into()),
            };
            if to_columns.len() != cols.len() {
                return Err(format!("the foreign key on {on} names {} referenced columns for {} columns", to_columns.len(), cols.len()));
            }
            let matches = cols.iter().zip(&to_columns).map(|(a, b)| format!("p.{b} = c.{a}")).collect::<Vec<_>>().join(" and ");
            let present = cols.iter().map(|a| format!("c.{a} is not null")).collect::<Vec<_>>().join(" and ");
            vec![Check {
                name: format!("foreign_key on {on} referencing {to}"),
                violations: format!(
                    "select count(*) from {{relation}} as c where {present} and not exists (select 1 from {to} as p where {matches})"
                ),
                ddl: Some(format!(
                    "alter table {{relation}} add foreign key ({}) references {to} ({})",
                    cols.join(", "),
                    to_columns.join(", ")
                )),
            }]
        }
        other => return Err(format!("unknown constraint type `{other}`; use not_null, unique, primary_key, check or foreign_key")),
    })
}
