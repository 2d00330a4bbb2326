//! Statements that change the warehouse: what hooks, `run_query`, `{% call statement() %}` and
//! `adapter.*` methods run (`create table [if not exists]`, `create view`, `insert`, `update`,
//! `delete`, `truncate`, `drop`, `alter table ... rename to`, `create`/`drop schema`).
//! DataFusion would keep their effect in memory only (or refuse them: `DELETE` is "not supported
//! for Base table"), so kiln carries them out on the warehouse: each change writes the table's
//! next version and publishes it atomically, like a model build. Other statements go to
//! DataFusion as they are.

use super::{DataFusionEngine, types};
use crate::adapter::names::quote_ident;
use crate::engine::{Engine, EngineError, Materialization, RelationName};
use sqlparser::ast::{
    AlterTableOperation, AssignmentTarget, CreateTable, Delete, FromTable, Insert, ObjectName, ObjectType, RenameTableNameKind, SchemaName,
    SetExpr, Statement, TableFactor, TableObject, Update,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

impl DataFusionEngine {
    /// Runs `sql` (one or more statements): changes to the warehouse are carried out on it,
    /// anything else goes to DataFusion. `None` when `sql` holds no statement kiln handles
    /// itself (the caller runs it as it is); else the rows the statements changed.
    pub(super) fn run_changes(&self, sql: &str) -> Result<Option<u64>, EngineError> {
        let Ok(statements) = Parser::parse_sql(&GenericDialect {}, sql) else { return Ok(None) };
        if !statements.iter().any(changes_warehouse) {
            return Ok(None);
        }
        self.must_write("a statement in `run_query`, `statement` or a hook")?;
        let mut rows = 0;
        for statement in &statements {
            rows += if changes_warehouse(statement) {
                self.change(statement)?
            } else {
                self.execute_plain(&statement.to_string())?.unwrap_or(0)
            };
        }
        Ok(Some(rows))
    }

    fn change(&self, statement: &Statement) -> Result<u64, EngineError> {
        match statement {
            Statement::CreateTable(create) => self.create_table(create),
            Statement::CreateView(view) => {
                let r = self.relation(&view.name)?;
                if view.if_not_exists && self.describe(&r)?.is_some() {
                    return Ok(0);
                }
                self.materialize(&r, &Materialization::view(view.query.to_string()), &[])?;
                Ok(0)
            }
            Statement::Insert(insert) => self.insert(insert),
            Statement::Delete(delete) => self.delete(delete),
            Statement::Update(update) => self.update(update),
            Statement::Truncate(truncate) => {
                for target in &truncate.table_names {
                    let r = self.relation(&target.name)?;
                    self.rewrite(&r, &format!("select * from {} where false", quoted(&r)))?;
                }
                Ok(0)
            }
            Statement::Drop { object_type: ObjectType::Table | ObjectType::View, if_exists, names, .. } => {
                for name in names {
                    let r = self.relation(name)?;
                    if !self.drop_relation(&r)? && !if_exists {
                        return Err(EngineError::new(format!("cannot drop {}: it does not exist", quoted(&r))));
                    }
                }
                Ok(0)
            }
            Statement::Drop { object_type: ObjectType::Schema, if_exists, names, .. } => {
                for name in names {
                    let (database, schema) = self.schema_of(name)?;
                    if !self.drop_schema(&database, &schema)? && !if_exists {
                        return Err(EngineError::new(format!("cannot drop schema {database}.{schema}: it does not exist")));
                    }
                }
                Ok(0)
            }
            Statement::CreateSchema { schema_name: SchemaName::Simple(name) | SchemaName::NamedAuthorization(name, _), .. } => {
                let (database, schema) = self.schema_of(name)?;
                self.create_schema(&database, &schema)?;
                Ok(0)
            }
            Statement::AlterTable(alter) => {
                let r = self.relation(&alter.name)?;
                for op in &alter.operations {
                    let AlterTableOperation::RenameTable { table_name: RenameTableNameKind::As(new) | RenameTableNameKind::To(new) } = op
                    else {
                        return Err(EngineError::new(format!("`{op}` is not supported on the embedded engine; only `rename to`")));
                    };
                    // A bare new name stays in the table's schema, as in PostgreSQL.
                    let mut to = self.relation(new)?;
                    if new.0.len() == 1 {
                        (to.database, to.schema) = (r.database.clone(), r.schema.clone());
                    }
                    self.rename_relation(&r, &to)?;
                }
                Ok(0)
            }
            _ => Ok(0),
        }
    }

    fn create_table(&self, create: &CreateTable) -> Result<u64, EngineError> {
        let r = self.relation(&create.name)?;
        if self.describe(&r)?.is_some() {
            if create.if_not_exists {
                return Ok(0);
            }
            if !create.or_replace {
                return Err(EngineError::new(format!("table {} already exists", quoted(&r))));
            }
        }
        let sql = match &create.query {
            Some(query) => query.to_string(),
            None if create.columns.is_empty() => return Err(EngineError::new("create table needs columns or `as select`")),
            None => {
                let columns: Vec<String> = create
                    .columns
                    .iter()
                    .map(|c| format!("cast(null as {}) as {}", types::normalize(&c.data_type.to_string()), quote_ident(&c.name.value, '"')))
                    .collect();
                format!("select {} where false", columns.join(", "))
            }
        };
        Ok(self.materialize(&r, &Materialization::table(sql), &[])?.unwrap_or(0))
    }

    fn insert(&self, insert: &Insert) -> Result<u64, EngineError> {
        let TableObject::TableName(name) = &insert.table else {
            return Err(EngineError::new("insert into a table function is not supported on the embedded engine"));
        };
        let r = self.relation(name)?;
        let existing =
            self.describe(&r)?.ok_or_else(|| EngineError::new(format!("cannot insert into {}: it does not exist", quoted(&r))))?;
        let Some(source) = &insert.source else { return Err(EngineError::new("insert without rows or a query")) };
        let targets: Vec<String> = if insert.columns.is_empty() {
            existing.iter().map(|(c, _)| c.clone()).collect()
        } else {
            insert.columns.iter().map(|c| c.to_string().trim_matches('"').to_string()).collect()
        };
        let aliases: Vec<String> = (0..targets.len()).map(|i| format!("kiln_c{i}")).collect();
        let picked: Vec<String> = existing
            .iter()
            .map(|(column, data_type)| {
                let value = targets
                    .iter()
                    .position(|t| t.eq_ignore_ascii_case(column))
                    .map_or("null".to_string(), |i| format!("kiln_new.{}", aliases[i]));
                format!("cast({value} as {data_type}) as {}", quote_ident(column, '"'))
            })
            .collect();
        // VALUES rows are a query too; their columns are named by position.
        let source = match source.body.as_ref() {
            SetExpr::Values(_) => format!("select * from ({source})"),
            _ => source.to_string(),
        };
        let new_rows = format!("select {} from ({source}) as kiln_new({})", picked.join(", "), aliases.join(", "));
        let inserted = self.count(&new_rows)?;
        self.rewrite(&r, &format!("select * from {} union all {new_rows}", quoted(&r)))?;
        Ok(inserted)
    }

    fn delete(&self, delete: &Delete) -> Result<u64, EngineError> {
        let from = match &delete.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
        };
        let [table] = from.as_slice() else { return Err(EngineError::new("delete from one table at a time on the embedded engine")) };
        if delete.using.is_some() || !table.joins.is_empty() {
            return Err(EngineError::new("`delete ... using` is not supported on the embedded engine; use `where ... in (select ...)`"));
        }
        let (r, alias) = self.table_factor(&table.relation)?;
        let cond = delete.selection.as_ref().map_or("true".to_string(), ToString::to_string);
        let deleted = self.count(&format!("select 1 from {} {alias} where {cond}", quoted(&r)))?;
        self.rewrite(&r, &format!("select * from {} {alias} where not coalesce(({cond}), false)", quoted(&r)))?;
        Ok(deleted)
    }

    fn update(&self, update: &Update) -> Result<u64, EngineError> {
        if update.from.is_some() || !update.table.joins.is_empty() {
            return Err(EngineError::new("`update ... from` is not supported on the embedded engine"));
        }
        let (r, alias) = self.table_factor(&update.table.relation)?;
        let existing = self.describe(&r)?.ok_or_else(|| EngineError::new(format!("cannot update {}: it does not exist", quoted(&r))))?;
        let cond = update.selection.as_ref().map_or("true".to_string(), ToString::to_string);
        let mut values = Vec::new();
        for (column, data_type) in &existing {
            let set = update.assignments.iter().find(|a| match &a.target {
                AssignmentTarget::ColumnName(n) => {
                    n.0.last().and_then(|p| p.as_ident()).is_some_and(|i| i.value.eq_ignore_ascii_case(column))
                }
                AssignmentTarget::Tuple(_) => false,
            });
            let q = quote_ident(column, '"');
            values.push(match set {
                Some(a) => format!("cast(case when coalesce(({cond}), false) then {} else {q} end as {data_type}) as {q}", a.value),
                None => q,
            });
        }
        let updated = self.count(&format!("select 1 from {} {alias} where {cond}", quoted(&r)))?;
        self.rewrite(&r, &format!("select {} from {} {alias}", values.join(", "), quoted(&r)))?;
        Ok(updated)
    }

    /// Replaces table `r` with the result of `sql` (which may read `r`).
    fn rewrite(&self, r: &RelationName, sql: &str) -> Result<(), EngineError> {
        if self.describe(r)?.is_none() {
            return Err(EngineError::new(format!("table {} does not exist", quoted(r))));
        }
        self.materialize(r, &Materialization::table(sql), &[]).map(|_| ())
    }

    fn count(&self, sql: &str) -> Result<u64, EngineError> {
        let t = self.query(&format!("select count(*) as n from ({sql}) as kiln_counted"), None)?;
        Ok(t.rows.first().and_then(|r| r.first()).and_then(serde_json::Value::as_u64).unwrap_or(0))
    }

    fn table_factor(&self, factor: &TableFactor) -> Result<(RelationName, String), EngineError> {
        let TableFactor::Table { name, alias, .. } = factor else {
            return Err(EngineError::new("only a table can be changed"));
        };
        Ok((self.relation(name)?, alias.as_ref().map_or(String::new(), |a| format!("as {}", a.name))))
    }

    /// A relation named in SQL: unquoted parts are folded to lower case, as DataFusion does; a
    /// missing database or schema is the target's.
    fn relation(&self, name: &ObjectName) -> Result<RelationName, EngineError> {
        let parts = parts(name)?;
        let (database, schema) = self.defaults();
        Ok(match parts.as_slice() {
            [n] => RelationName { database, schema, name: n.clone() },
            [s, n] => RelationName { database, schema: s.clone(), name: n.clone() },
            [d, s, n] => RelationName { database: d.clone(), schema: s.clone(), name: n.clone() },
            _ => return Err(EngineError::new(format!("`{name}` is not a relation name"))),
        })
    }

    fn schema_of(&self, name: &ObjectName) -> Result<(String, String), EngineError> {
        let parts = parts(name)?;
        let (database, _) = self.defaults();
        match parts.as_slice() {
            [s] => Ok((database, s.clone())),
            [d, s] => Ok((d.clone(), s.clone())),
            _ => Err(EngineError::new(format!("`{name}` is not a schema name"))),
        }
    }

    fn defaults(&self) -> (String, String) {
        let state = self.ctx.state();
        let catalog = &state.config().options().catalog;
        (catalog.default_catalog.clone(), catalog.default_schema.clone())
    }
}

fn parts(name: &ObjectName) -> Result<Vec<String>, EngineError> {
    name.0
        .iter()
        .map(|p| {
            p.as_ident()
                .map(|i| if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() })
                .ok_or_else(|| EngineError::new(format!("`{name}` is not a plain name")))
        })
        .collect()
}

fn quoted(r: &RelationName) -> String {
    format!("{}.{}.{}", quote_ident(&r.database, '"'), quote_ident(&r.schema, '"'), quote_ident(&r.name, '"'))
}

/// Whether kiln carries the statement out on the warehouse (see the module comment).
fn changes_warehouse(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::CreateTable(_)
            | Statement::CreateView(_)
            | Statement::Insert(_)
            | Statement::Delete(_)
            | Statement::Update(_)
            | Statement::Truncate(_)
            | Statement::Drop { object_type: ObjectType::Table | ObjectType::View | ObjectType::Schema, .. }
            | Statement::CreateSchema { .. }
            | Statement::AlterTable(_)
    )
}
