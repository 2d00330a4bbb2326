//! Push-down to PostgreSQL: the model SQL runs in the server, kiln only sends statements.
//!
//! Every build publishes atomically, as dbt-postgres does it: the new relation is created under
//! `<name>__dbt_tmp`, then, inside one transaction, the old one is renamed to `<name>__dbt_backup`,
//! the new one takes its name and the backup is dropped. Readers see the old relation until the
//! commit; a failure (or a lost connection) rolls everything back, so the old relation stays.
//! Incremental models and seeds run in one transaction too. Seeds are sent with `COPY ... FROM
//! STDIN`, never spliced into SQL text.
//!
//! The statements themselves are built by the pure functions of [`sql`], golden-tested without a
//! server; this module only connects, pools and runs them.

pub mod connect;
pub mod seeds;
pub mod sql;

use super::QueryTable;
use super::{Capability, Check, Engine, EngineError, IncrementalStrategy, Materialization, RelationName, SeedLoad};
use crate::adapter::names::quote_ident;
use connect::{ConnectSettings, Connector};
use std::collections::BTreeSet;
use std::sync::Mutex;
use tokio_postgres::{Client, GenericClient};

pub struct PostgresEngine {
    rt: tokio::runtime::Runtime,
    connector: Connector,
    /// Connections not in use; one per runner thread at most.
    idle: Mutex<Vec<Client>>,
    /// Schemas known to exist (creating one twice at once fails in PostgreSQL).
    schemas: Mutex<BTreeSet<String>>,
    /// Set when the run is cancelled: running statements are cancelled on the server.
    cancel: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Where the model's SQL sits inside a statement, to map an error position back to it.
#[derive(Clone, Copy)]
struct Embedded<'a> {
    /// Characters before the model SQL in the statement.
    offset: usize,
    sql: &'a str,
}

/// A PostgreSQL error as an [`EngineError`]: message, detail and hint, and the position in the
/// model's SQL when the statement embeds it.
fn pg_err(e: &tokio_postgres::Error, embedded: Option<Embedded>) -> EngineError {
    let Some(db) = e.as_db_error() else {
        if e.is_closed() || e.to_string().contains("closed") {
            return EngineError::of_kind(
                super::ErrorKind::Connection,
                format!("the connection to PostgreSQL was lost: {e}; the statement was rolled back"),
            );
        }
        let source = std::error::Error::source(e).map(|s| format!(": {s}")).unwrap_or_default();
        return EngineError::new(format!("{e}{source}"));
    };
    let mut message = db.message().to_string();
    if let Some(d) = db.detail() {
        message.push_str(&format!("\n  detail: {d}"));
    }
    if let Some(h) = db.hint() {
        message.push_str(&format!("\n  hint: {h}"));
    }
    let position = match (db.position(), embedded) {
        (Some(tokio_postgres::error::ErrorPosition::Original(p)), Some(emb)) => {
            let index = (*p as usize).checked_sub(1 + emb.offset);
            index.filter(|i| *i < emb.sql.chars().count()).map(|i| line_col(emb.sql, i))
        }
        _ => None,
    };
    // 57014: cancelled on request (an interrupted run).
    let kind = if db.code().code() == "57014" { super::ErrorKind::Cancelled } else { super::ErrorKind::Query };
    EngineError { message, position, kind }
}

/// 1-based line and column of the character at `index`.
fn line_col(text: &str, index: usize) -> (usize, usize) {
    let before: String = text.chars().take(index).collect();
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The model SQL as a statement body: no trailing semicolon.
fn body(sql: &str) -> &str {
    sql.trim_end().trim_end_matches(';').trim_end()
}

/// Runs one statement that embeds the model SQL (`prefix` + sql + `suffix`); returns the rows
/// it reports.
async fn run_embedded(client: &impl GenericClient, prefix: &str, sql: &str, suffix: &str) -> Result<Option<u64>, EngineError> {
    let statement = format!("{prefix}{sql}{suffix}");
    let emb = Embedded { offset: prefix.chars().count(), sql };
    simple(client, &statement).await.map_err(|e| pg_err(&e, Some(emb)))
}

/// Runs statements with the simple protocol; returns the last statement's row count.
async fn simple(client: &impl GenericClient, sql: &str) -> Result<Option<u64>, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages.iter().rev().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    }))
}

async fn exec(client: &impl GenericClient, sql: &str) -> Result<Option<u64>, EngineError> {
    simple(client, sql).await.map_err(|e| pg_err(&e, None))
}

/// Relation kind (`table`, `view`, ...) of `schema.name`, or `None` when it does not exist.
async fn kind_of(client: &impl GenericClient, schema: &str, name: &str) -> Result<Option<sql::Kind>, EngineError> {
    let row = client
        .query_opt(
            "select c.relkind::text from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = $1 and c.relname = $2",
            &[&schema, &name],
        )
        .await
        .map_err(|e| pg_err(&e, None))?;
    Ok(row.map(|r| sql::Kind::from_relkind(&r.get::<_, String>(0))))
}

/// Columns (name, SQL type) of a relation (`regclass` text, e.g. `"s"."t"` or `pg_temp."t"`).
async fn columns_of(client: &impl GenericClient, regclass: &str) -> Result<Vec<(String, String)>, EngineError> {
    let rows = client
        .query(
            "select a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod) from pg_catalog.pg_attribute a \
             where a.attrelid = $1::text::regclass and a.attnum > 0 and not a.attisdropped order by a.attnum",
            &[&regclass],
        )
        .await
        .map_err(|e| pg_err(&e, None))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Constraints added to `<name>__dbt_tmp` got names from it (`x__dbt_tmp_pkey`); once it is
/// published as `<name>` (and the old relation dropped), they are renamed after it (`x_pkey`)
/// where that name is free.
async fn rename_constraints(client: &impl GenericClient, r: &RelationName, tmp: &str) -> Result<(), EngineError> {
    let target = sql::qualified(&r.schema, &r.name);
    let rows = client
        .query(
            "select c.conname::text, exists (select 1 from pg_catalog.pg_constraint o where o.connamespace = c.connamespace \
             and o.conname = replace(c.conname, $2, $3)) or exists (select 1 from pg_catalog.pg_class k \
             where k.relnamespace = c.connamespace and k.relname = replace(c.conname, $2, $3)) \
             from pg_catalog.pg_constraint c where c.conrelid = $1::text::regclass and strpos(c.conname, $2) > 0",
            &[&target, &tmp, &r.name],
        )
        .await
        .map_err(|e| pg_err(&e, None))?;
    for row in rows {
        let (name, taken): (String, bool) = (row.get(0), row.get(1));
        if !taken {
            let new = name.replace(tmp, &r.name);
            exec(client, &format!("alter table {target} rename constraint {} to {}", quote_ident(&name, '"'), quote_ident(&new, '"')))
                .await?;
        }
    }
    Ok(())
}

/// Enforces the contract's constraints on the unpublished relation `staged`: as real
/// constraints of the table (as dbt-postgres creates them), which PostgreSQL validates on the
/// rows, or by counting violations when a check has no DDL.
async fn run_checks(client: &impl GenericClient, staged: &str, checks: &[Check]) -> Result<(), EngineError> {
    for check in checks {
        if let Some(ddl) = &check.ddl {
            exec(client, &ddl.replace("{relation}", staged)).await.map_err(|e| {
                EngineError::of_kind(
                    super::ErrorKind::Violation,
                    format!("constraint {} failed: {}; the previous version of the relation is kept", check.name, e.message),
                )
            })?;
            continue;
        }
        let q = check.violations.replace("{relation}", staged);
        let row = client.query_one(&format!("select ({q})::bigint"), &[]).await.map_err(|e| pg_err(&e, None))?;
        let n: i64 = row.get::<_, Option<i64>>(0).unwrap_or(0);
        if n > 0 {
            return Err(EngineError::of_kind(
                super::ErrorKind::Violation,
                format!(
                    "constraint {} is violated by {n} row{}; the previous version of the relation is kept",
                    check.name,
                    if n == 1 { "" } else { "s" }
                ),
            ));
        }
    }
    Ok(())
}

impl PostgresEngine {
    /// Connects once (so a wrong password or a missing database is reported before any node
    /// runs); later connections are opened as runner threads need them.
    pub fn open(settings: ConnectSettings) -> Result<PostgresEngine, EngineError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| EngineError::new(format!("starting the engine: {e}")))?;
        let connector = Connector::new(settings)?;
        let first = rt.block_on(connector.connect())?;
        Ok(PostgresEngine {
            rt,
            connector,
            idle: Mutex::new(vec![first]),
            schemas: Mutex::new(BTreeSet::new()),
            cancel: std::sync::OnceLock::new(),
        })
    }

    /// The server's version string (`kiln debug`).
    pub fn server_version(&self) -> Result<String, EngineError> {
        self.with_client(async |c| {
            let row = c.query_one("select version()", &[]).await.map_err(|e| pg_err(&e, None))?;
            Ok(row.get(0))
        })
    }

    /// Runs `f` on a pooled connection; a connection that broke is not returned to the pool.
    fn with_client<T>(&self, f: impl AsyncFnOnce(&mut Client) -> Result<T, EngineError>) -> Result<T, EngineError> {
        self.rt.block_on(async {
            let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut client = match pooled {
                Some(c) if !c.is_closed() => c,
                _ => self.connector.connect().await?,
            };
            let token = client.cancel_token();
            let result = {
                let run = f(&mut client);
                tokio::pin!(run);
                match self.cancel.get().cloned() {
                    None => run.await,
                    // Cancelled: the server stops the statement (its transaction rolls back, so
                    // the relation keeps its previous version) and `run` ends with its error.
                    Some(flag) => tokio::select! {
                        result = &mut run => result,
                        () = crate::engine::cancelled(flag) => {
                            self.connector.cancel(&token).await;
                            run.await
                        }
                    },
                }
            };
            if !client.is_closed() {
                self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(client);
            }
            result
        })
    }

    fn quoted(r: &RelationName) -> String {
        sql::qualified(&r.schema, &r.name)
    }

    /// Is `r` in the database this engine is connected to (or in no database in particular)?
    fn in_database(&self, r: &RelationName) -> bool {
        r.database.is_empty() || r.database == self.connector.dbname()
    }

    /// PostgreSQL cannot reach another database from a connection.
    fn check_database(&self, r: &RelationName) -> Result<(), EngineError> {
        let db = self.connector.dbname();
        if !self.in_database(r) {
            return Err(EngineError::new(format!(
                "{r} is in database `{}`, but the target connects to `{db}`; PostgreSQL cannot write across databases (set `database` to `{db}`)",
                r.database
            )));
        }
        Ok(())
    }

    /// Replaces `r` with what `create` (a statement creating `tmp`) builds, atomically.
    fn swap(&self, r: &RelationName, kind: sql::Kind, create: (&str, &str, &str), checks: &[Check]) -> Result<Option<u64>, EngineError> {
        self.check_database(r)?;
        let names = sql::SwapNames::of(&r.name);
        self.with_client(async |c| {
            let tx = c.transaction().await.map_err(|e| pg_err(&e, None))?;
            for leftover in [&names.tmp, &names.backup] {
                if let Some(k) = kind_of(&tx, &r.schema, leftover).await? {
                    exec(&tx, &sql::drop(k, &r.schema, leftover)).await?;
                }
            }
            let (prefix, body, suffix) = create;
            let rows = run_embedded(&tx, prefix, body, suffix).await?;
            run_checks(&tx, &sql::qualified(&r.schema, &names.tmp), checks).await?;
            let old = kind_of(&tx, &r.schema, &r.name).await?;
            exec(&tx, &sql::publish(&r.schema, &r.name, &names, kind, old).join(";\n")).await?;
            if !checks.is_empty() {
                rename_constraints(&tx, r, &names.tmp).await?;
            }
            tx.commit().await.map_err(|e| pg_err(&e, None))?;
            Ok(rows)
        })
    }

    fn incremental(
        &self,
        r: &RelationName,
        query: &str,
        strategy: &IncrementalStrategy,
        on_schema_change: super::SchemaChange,
    ) -> Result<Option<u64>, EngineError> {
        self.check_database(r)?;
        let target = Self::quoted(r);
        let tmp = sql::SwapNames::of(&r.name).tmp;
        self.with_client(async |c| {
            let tx = c.transaction().await.map_err(|e| pg_err(&e, None))?;
            let prefix = format!("create temporary table {} on commit drop as (\n", quote_ident(&tmp, '"'));
            run_embedded(&tx, &prefix, body(query), "\n)").await?;
            let source = format!("pg_temp.{}", quote_ident(&tmp, '"'));
            let incoming = columns_of(&tx, &source).await?;
            let existing = columns_of(&tx, &target).await?;
            let plan = sql::incremental(&target, &source, strategy, &existing, &incoming, on_schema_change).map_err(EngineError::new)?;
            for statement in &plan.alter {
                exec(&tx, statement).await?;
            }
            let mut rows = None;
            for statement in &plan.apply {
                rows = exec(&tx, statement).await?;
            }
            tx.commit().await.map_err(|e| pg_err(&e, None))?;
            Ok(rows)
        })
    }
}

impl PostgresEngine {
    /// A snapshot, as dbt-postgres runs it: created with dbt's `build_snapshot_table` (swapped
    /// in like a table), then per run the changes are staged in a temporary table, new source
    /// columns added, and its `update` and `insert` run, all in one transaction.
    fn snapshot(
        &self,
        r: &RelationName,
        query: &str,
        config: &crate::project::typed::SnapshotConfig,
        exprs: &super::snapshot::Expressions,
        checks: &[Check],
    ) -> Result<Option<u64>, EngineError> {
        use super::snapshot;
        let source_columns: Vec<String> = self.query_columns(query)?.into_iter().map(|(c, _)| c).collect();
        snapshot::check_columns(config, &source_columns).map_err(EngineError::new)?;
        if self.describe(r)?.is_none() {
            let tmp = sql::qualified(&r.schema, &sql::SwapNames::of(&r.name).tmp);
            let build = snapshot::build_table(config, body(query), exprs);
            return self.swap(r, sql::Kind::Table, (&format!("create table {tmp} as (\n"), &build, "\n)"), checks);
        }
        let target = Self::quoted(r);
        let tmp = sql::SwapNames::of(&r.name).tmp;
        self.with_client(async |c| {
            let tx = c.transaction().await.map_err(|e| pg_err(&e, None))?;
            let target_columns: Vec<String> = columns_of(&tx, &target).await?.into_iter().map(|(c, _)| c).collect();
            let staging = snapshot::staging(&snapshot::Staging {
                config,
                sql: body(query),
                target: &target,
                exprs,
                quote: '"',
                target_columns: &target_columns,
                source_columns: &source_columns,
            });
            let prefix = format!("create temporary table {} on commit drop as (\n", quote_ident(&tmp, '"'));
            run_embedded(&tx, &prefix, &staging, "\n)").await?;
            let staged = format!("pg_temp.{}", quote_ident(&tmp, '"'));
            let staging_columns = columns_of(&tx, &staged).await?;
            let (insert, missing) = snapshot::insert_columns(&staging_columns, &target_columns);
            for (column, ty) in missing {
                exec(&tx, &format!("alter table {target} add column {} {ty}", quote_ident(column, '"'))).await?;
            }
            let mut rows = None;
            for statement in snapshot::merge_statements(config, &target, &staged, &insert, '"') {
                rows = exec(&tx, &statement).await?;
            }
            tx.commit().await.map_err(|e| pg_err(&e, None))?;
            Ok(rows)
        })
    }
}

impl Engine for PostgresEngine {
    fn name(&self) -> &str {
        "postgres"
    }

    fn execute(&self, sql: &str) -> Result<Option<u64>, EngineError> {
        self.with_client(async |c| run_embedded(&*c, "", sql, "").await)
    }

    fn query(&self, sql: &str, limit: Option<usize>) -> Result<QueryTable, EngineError> {
        let sql = match limit {
            Some(n) => format!("select * from (\n{}\n) as kiln_limited limit {n}", body(sql)),
            None => sql.to_string(),
        };
        let offset = if limit.is_some() { "select * from (\n".len() } else { 0 };
        self.with_client(async |c| {
            let emb = Embedded { offset, sql: &sql[offset..] };
            // The prepared statement names the column types; the simple protocol returns text,
            // which is then typed as JSON.
            let statement = c.prepare(&sql).await.map_err(|e| pg_err(&e, Some(emb)))?;
            let types: Vec<tokio_postgres::types::Type> = statement.columns().iter().map(|c| c.type_().clone()).collect();
            let messages = c.simple_query(&sql).await.map_err(|e| pg_err(&e, Some(emb)))?;
            let mut table = QueryTable { columns: statement.columns().iter().map(|c| c.name().to_string()).collect(), rows: Vec::new() };
            for m in messages {
                if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
                    table.rows.push((0..row.len()).map(|i| sql::json_cell(row.get(i), types.get(i))).collect());
                }
            }
            Ok(table)
        })
    }

    fn describe(&self, r: &RelationName) -> Result<Option<Vec<(String, String)>>, EngineError> {
        if !self.in_database(r) {
            return Ok(None);
        }
        self.with_client(async |c| match kind_of(&*c, &r.schema, &r.name).await? {
            None => Ok(None),
            Some(_) => columns_of(&*c, &Self::quoted(r)).await.map(Some),
        })
    }

    fn create_schema(&self, database: &str, schema: &str) -> Result<(), EngineError> {
        let mut known = self.schemas.lock().unwrap_or_else(|e| e.into_inner());
        if known.contains(schema) {
            return Ok(());
        }
        self.check_database(&RelationName { database: database.into(), schema: schema.into(), name: String::new() })?;
        self.execute(&format!("create schema if not exists {}", quote_ident(schema, '"')))?;
        known.insert(schema.to_string());
        Ok(())
    }

    fn materialize(&self, r: &RelationName, what: &Materialization, checks: &[Check]) -> Result<Option<u64>, EngineError> {
        let tmp = sql::qualified(&r.schema, &sql::SwapNames::of(&r.name).tmp);
        match what {
            Materialization::View { sql, .. } => {
                let prefix = format!("create view {tmp} as (\n");
                self.swap(r, sql::Kind::View, (&prefix, body(sql), "\n)"), &[])
            }
            Materialization::Table { sql, .. } => {
                let prefix = format!("create table {tmp} as (\n");
                self.swap(r, sql::Kind::Table, (&prefix, body(sql), "\n)"), checks)
            }
            Materialization::Incremental { sql, strategy, on_schema_change, .. } => self.incremental(r, sql, strategy, *on_schema_change),
            Materialization::Snapshot { sql, config, exprs } => self.snapshot(r, sql, config, exprs, checks),
            Materialization::External { .. } => Err(EngineError::new(
                "`materialized: external` writes files and needs the embedded DataFusion engine; use `table` on PostgreSQL",
            )),
        }
    }

    fn query_columns(&self, sql: &str) -> Result<Vec<(String, String)>, EngineError> {
        self.with_client(async |c| {
            let statement = c.prepare(body(sql)).await.map_err(|e| pg_err(&e, Some(Embedded { offset: 0, sql })))?;
            Ok(statement.columns().iter().map(|c| (c.name().to_string(), sql::type_name(c.type_()))).collect())
        })
    }

    fn load_seed(&self, seed: &SeedLoad) -> Result<u64, EngineError> {
        let r = &seed.relation;
        self.check_database(r)?;
        let data = super::seed_csv::read(seed, seeds::type_name)?;
        let target = Self::quoted(r);
        self.with_client(async |c| {
            let tx = c.transaction().await.map_err(|e| pg_err(&e, None))?;
            let existing = match kind_of(&tx, &r.schema, &r.name).await? {
                Some(k) => Some((k, columns_of(&tx, &target).await?)),
                None => None,
            };
            for statement in sql::seed_prepare(&r.schema, &r.name, &data.columns, existing.as_ref(), seed.full_refresh) {
                exec(&tx, &statement).await?;
            }
            let rows = seeds::copy_in(&tx, &target, &data).await.map_err(|e| {
                let mut err = pg_err(&e, None);
                err.message = format!("loading the seed with COPY failed: {}", err.message);
                err
            })?;
            tx.commit().await.map_err(|e| pg_err(&e, None))?;
            Ok(rows)
        })
    }

    /// `comment on`, as dbt-postgres does; the text is a string literal, never spliced raw.
    fn persist_docs(
        &self,
        r: &RelationName,
        is_view: bool,
        description: Option<&str>,
        columns: &[(String, String)],
    ) -> Result<(), EngineError> {
        let target = Self::quoted(r);
        let mut statements = Vec::new();
        if let Some(d) = description {
            statements.push(format!("comment on {} {target} is {}", if is_view { "view" } else { "table" }, sql::literal(d)));
        }
        for (column, d) in columns {
            statements.push(format!("comment on column {target}.{} is {}", quote_ident(column, '"'), sql::literal(d)));
        }
        if statements.is_empty() {
            return Ok(());
        }
        self.execute(&statements.join(";\n")).map(|_| ())
    }

    fn cancel_on(&self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let _ = self.cancel.set(flag);
    }

    fn version(&self) -> Result<String, EngineError> {
        self.server_version()
    }

    fn supports(&self, capability: Capability) -> bool {
        matches!(capability, Capability::AtomicPublish)
    }
}

/// Connects to the PostgreSQL server of `target`; the error says what failed (never the
/// password).
pub fn open_target(target: &crate::project::profiles::Target) -> Result<PostgresEngine, crate::diagnostics::Diagnostic> {
    use crate::diagnostics::{Code, Diagnostic};
    let file = target.profiles_path.as_ref().map_or("profiles.yml".to_string(), |p| p.display().to_string());
    let fail =
        |e: EngineError| Diagnostic::error(Code::Connection, format!("target `{}`: {}", target.name, e.message)).with_file(file.clone());
    let settings = connect::ConnectSettings::from_target(&target.settings).map_err(fail)?;
    PostgresEngine::open(settings).map_err(fail)
}
