//! Push-down to BigQuery: the model SQL runs as BigQuery jobs, kiln only submits them and
//! waits.
//!
//! Materializations are dbt-bigquery's: a view is `create or replace view`, a table `create or
//! replace table ... as`, both atomic in BigQuery (readers see the old relation until the job
//! succeeds, a failed job changes nothing). A table with contract checks is built beside its
//! relation (`<name>__dbt_tmp`), checked, then copied over it. An incremental model stages its
//! new rows in `<name>__dbt_tmp` (expiring after 12 hours), applies `on_schema_change`, then
//! merges them with one `merge` statement. Seeds are load jobs with the CSV uploaded, typed by
//! `column_types` or inference as dbt-bigquery types them.
//!
//! Statements come from the pure functions of [`sql`], golden-tested; [`api`] speaks REST.

pub mod api;
pub mod auth;
pub mod connect;
pub mod sql;

use super::{
    Capability, Check, Engine, EngineError, ErrorKind, IncrementalStrategy, Materialization, QueryTable, RelationName, SchemaChange,
    SeedLoad, TableOptions,
};
use api::{Api, Done};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

/// What the jobs of the node running on this thread reported, summed (dbt-bigquery's
/// `adapter_response`).
#[derive(Default)]
struct Response {
    bytes_processed: u64,
    bytes_billed: u64,
    slot_ms: u64,
    /// The last job's.
    job_id: String,
    location: Option<String>,
    project_id: String,
}

thread_local! {
    static RESPONSE: std::cell::RefCell<Option<Response>> = const { std::cell::RefCell::new(None) };
}

/// Adds a finished job's figures to this thread's [`Response`].
fn record(done: &Done) {
    RESPONSE.with_borrow_mut(|r| {
        let r = r.get_or_insert_with(Response::default);
        r.bytes_processed += done.statistic(&["totalBytesProcessed"]).max(done.statistic(&["query", "totalBytesProcessed"]));
        r.bytes_billed += done.statistic(&["query", "totalBytesBilled"]);
        r.slot_ms += done.statistic(&["totalSlotMs"]);
        r.job_id = done.id().to_string();
        r.location = done.location().map(str::to_string);
        r.project_id = done.job["jobReference"]["projectId"].as_str().unwrap_or_default().to_string();
    });
}

pub struct BigQueryEngine {
    rt: tokio::runtime::Runtime,
    api: Api,
    /// Datasets known to exist.
    datasets: Mutex<BTreeSet<(String, String)>>,
    cancel: OnceLock<Arc<AtomicBool>>,
}

/// Where the model's SQL sits in a statement: the lines before it, to map an error's position
/// back onto the model.
#[derive(Clone, Copy)]
struct Embedded {
    lines_before: usize,
}

impl Embedded {
    fn of(prefix: &str) -> Embedded {
        Embedded { lines_before: prefix.matches('\n').count() }
    }

    /// The position in the model's SQL, or none when the error is outside it.
    fn map(self, mut e: EngineError) -> EngineError {
        e.position = e.position.and_then(|(line, col)| line.checked_sub(self.lines_before).filter(|l| *l > 0).map(|l| (l, col)));
        e
    }
}

impl BigQueryEngine {
    /// Reads the credentials and checks that the execution project answers, so a wrong key or
    /// endpoint is reported before any node runs.
    pub fn open(settings: connect::Settings, env: &std::collections::HashMap<String, String>) -> Result<BigQueryEngine, EngineError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| EngineError::new(format!("starting the engine: {e}")))?;
        let credentials = rt.block_on(auth::Credentials::open(&settings.method, settings.impersonate.as_deref(), env))?;
        let api = Api::new(settings, credentials)?;
        Ok(BigQueryEngine { rt, api, datasets: Mutex::new(BTreeSet::new()), cancel: OnceLock::new() })
    }

    pub fn settings(&self) -> &connect::Settings {
        &self.api.settings
    }

    /// The dataset resource of `project.dataset` (location, access entries).
    pub fn dataset(&self, project: &str, dataset: &str) -> Result<serde_json::Value, EngineError> {
        self.block_on(self.api.dataset(project, dataset))
    }

    /// The table resource of `r` (schema, partitioning, labels), or `None`.
    pub fn table(&self, r: &RelationName) -> Result<Option<serde_json::Value>, EngineError> {
        self.block_on(self.api.table(&r.database, &r.schema, &r.name))
    }

    /// Runs a query job, with the model's SQL at `embedded` for error positions.
    async fn job(&self, sql: &str, embedded: Option<Embedded>) -> Result<Done, EngineError> {
        let configuration = json!({"query": {"query": sql}});
        let done = self.api.run(configuration, self.cancel.get().cloned()).await.map_err(|e| match embedded {
            Some(emb) => emb.map(e),
            None => EngineError { position: None, ..e },
        })?;
        record(&done);
        Ok(done)
    }

    /// Runs `prefix` + the model SQL + `suffix`.
    async fn embedded(&self, prefix: &str, sql: &str, suffix: &str) -> Result<Done, EngineError> {
        self.job(&format!("{prefix}{}{suffix}", sql::body(sql)), Some(Embedded::of(prefix))).await
    }

    async fn columns(&self, r: &RelationName) -> Result<Option<Vec<(String, String)>>, EngineError> {
        Ok(self.api.table(&r.database, &r.schema, &r.name).await?.map(|t| sql::columns(&t["schema"])))
    }

    /// What dbt-bigquery drops before `create or replace`: a relation of the other kind (a view
    /// where a table is built, or the reverse), or a table whose partitioning or clustering
    /// differs from `options` (BigQuery cannot replace those). The build is then not atomic.
    async fn clear_for(&self, r: &RelationName, view: bool, options: &TableOptions) -> Result<(), EngineError> {
        let Some(existing) = self.api.table(&r.database, &r.schema, &r.name).await? else { return Ok(()) };
        let is_view = existing["type"] == "VIEW";
        if view != is_view || !view && !sql::replaceable(&existing, options) {
            let kind = if is_view { "view" } else { "table" };
            self.job(&format!("drop {kind} if exists {}", sql::relation(r)), None).await?;
        }
        Ok(())
    }

    /// Drops a scratch table; a failure leaves it to expire.
    async fn drop_table(&self, target: &str) {
        let _ = self.job(&format!("drop table if exists {target}"), None).await;
    }

    /// Stages the model's rows in `<name>__dbt_tmp` (expiring after 12 hours, laid out as
    /// the table), as dbt-bigquery's incremental runs do; returns the scratch relation.
    async fn stage(&self, r: &RelationName, query: &str, options: &TableOptions) -> Result<RelationName, EngineError> {
        let tmp = RelationName { name: format!("{}__dbt_tmp", r.name), ..r.clone() };
        let (create, suffix) = sql::create_table(&sql::relation(&tmp), options, true).map_err(EngineError::new)?;
        let prefix = format!("{}{create}", sql::declare_max_partition(query, options, &sql::relation(r)));
        self.embedded(&prefix, query, suffix).await?;
        Ok(tmp)
    }

    /// `r` as a table of `query`'s rows, replaced in one statement. With `checks` the rows are
    /// staged and checked first, then copied over `r`; the scratch table is dropped either way.
    async fn build_table(
        &self,
        r: &RelationName,
        query: &str,
        options: &TableOptions,
        checks: &[Check],
    ) -> Result<Option<u64>, EngineError> {
        if checks.is_empty() {
            let (prefix, suffix) = sql::create_table(&sql::relation(r), options, false).map_err(EngineError::new)?;
            self.clear_for(r, false, options).await?;
            return self.embedded(&prefix, query, suffix).await.map(|d| d.rows());
        }
        let tmp = sql::relation(&self.stage(r, query, options).await?);
        let result = async {
            for check in checks {
                let q = check.violations.replace("{relation}", &tmp);
                let done = self.job(&format!("select ({q}) as n"), None).await?;
                let (_, rows) = self.api.rows(&done, Some(1)).await?;
                let n = rows.first().and_then(|row| row["f"][0]["v"].as_str()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                if n > 0 {
                    return Err(EngineError::of_kind(
                        ErrorKind::Violation,
                        format!(
                            "constraint {} is violated by {n} row{}; the previous version of the relation is kept",
                            check.name,
                            if n == 1 { "" } else { "s" }
                        ),
                    ));
                }
            }
            let (prefix, suffix) = sql::create_table(&sql::relation(r), options, false).map_err(EngineError::new)?;
            self.clear_for(r, false, options).await?;
            self.job(&format!("{prefix}select * from {tmp}{suffix}"), None).await.map(|d| d.rows())
        }
        .await;
        self.drop_table(&tmp).await;
        result
    }

    async fn incremental(
        &self,
        r: &RelationName,
        query: &str,
        strategy: &IncrementalStrategy,
        on_schema_change: SchemaChange,
        options: &TableOptions,
    ) -> Result<Option<u64>, EngineError> {
        let target = sql::relation(r);
        let tmp = self.stage(r, query, options).await?;
        let source = sql::relation(&tmp);
        let result = async {
            let incoming = self.columns(&tmp).await?.unwrap_or_default();
            let existing = self.columns(r).await?.ok_or_else(|| EngineError::new(format!("{target} disappeared during the run")))?;
            let t = sql::IncrementalTarget { target: &target, source: &source, options, existing: &existing, incoming: &incoming };
            let plan = sql::incremental(&t, strategy, on_schema_change).map_err(EngineError::new)?;
            for statement in &plan.alter {
                self.job(statement, None).await?;
            }
            self.job(&plan.apply, None).await.map(|d| d.rows())
        }
        .await;
        self.drop_table(&source).await;
        result
    }

    /// A snapshot, as dbt-bigquery runs it: created from dbt's `build_snapshot_table`, then per
    /// run the changes staged in `<name>__dbt_tmp`, new source columns added to the table, and
    /// dbt's `snapshot_merge_sql` (one `merge`) applied.
    async fn snapshot(
        &self,
        r: &RelationName,
        query: &str,
        config: &crate::project::typed::SnapshotConfig,
        exprs: &super::snapshot::Expressions,
        checks: &[Check],
    ) -> Result<Option<u64>, EngineError> {
        use super::snapshot;
        let source_columns: Vec<String> = self.dry(query, "").await?.columns.into_iter().map(|(c, _)| c).collect();
        snapshot::check_columns(config, &source_columns).map_err(EngineError::new)?;
        let target = sql::relation(r);
        let Some(existing) = self.columns(r).await? else {
            let build = snapshot::build_table(config, sql::body(query), exprs);
            return self.build_table(r, &build, &TableOptions::default(), checks).await;
        };
        let target_columns: Vec<String> = existing.into_iter().map(|(c, _)| c).collect();
        let staging = snapshot::staging(&snapshot::Staging {
            config,
            sql: sql::body(query),
            target: &target,
            exprs,
            quote: '`',
            target_columns: &target_columns,
            source_columns: &source_columns,
        });
        let tmp = self.stage(r, &staging, &TableOptions::default()).await?;
        let staged = sql::relation(&tmp);
        let result = async {
            let staging_columns = self.columns(&tmp).await?.unwrap_or_default();
            let (insert, missing) = snapshot::insert_columns(&staging_columns, &target_columns);
            for (column, ty) in missing {
                self.job(&format!("alter table {target} add column {} {ty}", crate::adapter::names::quote_ident(column, '`')), None)
                    .await?;
            }
            self.job(&snapshot::merge_sql(config, &target, &staged, &insert, '`'), None).await.map(|d| d.rows())
        }
        .await;
        self.drop_table(&staged).await;
        result
    }

    /// A dry-run job of `prefix` + `sql`.
    async fn dry(&self, sql: &str, prefix: &str) -> Result<super::DryRun, EngineError> {
        let configuration = json!({"dryRun": true, "query": {"query": format!("{prefix}{}", sql::body(sql))}});
        let done = self.api.run(configuration, None).await.map_err(|e| Embedded::of(prefix).map(e))?;
        Ok(super::DryRun {
            bytes_processed: done.statistic(&["totalBytesProcessed"]).max(done.statistic(&["query", "totalBytesProcessed"])),
            columns: sql::columns(&done.job["statistics"]["query"]["schema"]),
        })
    }

    fn block_on<T>(&self, f: impl Future<Output = Result<T, EngineError>>) -> Result<T, EngineError> {
        self.rt.block_on(f)
    }
}

impl Engine for BigQueryEngine {
    fn name(&self) -> &str {
        "bigquery"
    }

    fn execute(&self, sql: &str) -> Result<Option<u64>, EngineError> {
        self.block_on(async { self.embedded("", sql, "").await.map(|d| d.rows()) })
    }

    fn query(&self, sql: &str, limit: Option<usize>) -> Result<QueryTable, EngineError> {
        self.block_on(async {
            let done = match limit {
                Some(n) => self.embedded("select * from (\n", sql, &format!("\n) limit {n}")).await?,
                None => self.embedded("", sql, "").await?,
            };
            let (schema, rows) = self.api.rows(&done, limit).await?;
            let fields = schema["fields"].as_array().cloned().unwrap_or_default();
            Ok(QueryTable {
                columns: fields.iter().map(|f| f["name"].as_str().unwrap_or("").to_string()).collect(),
                rows: rows.iter().map(|row| sql::json_row(&fields, row)).collect(),
            })
        })
    }

    fn describe(&self, r: &RelationName) -> Result<Option<Vec<(String, String)>>, EngineError> {
        self.block_on(self.columns(r))
    }

    fn list_relations(&self, database: &str, schema: &str) -> Result<Vec<(String, String)>, EngineError> {
        self.block_on(self.api.list_tables(database, schema))
    }

    fn list_schemas(&self, database: &str) -> Result<Vec<String>, EngineError> {
        self.block_on(self.api.list_datasets(database))
    }

    fn create_schema(&self, database: &str, schema: &str) -> Result<(), EngineError> {
        let key = (database.to_string(), schema.to_string());
        if self.datasets.lock().unwrap_or_else(|e| e.into_inner()).contains(&key) {
            return Ok(());
        }
        self.block_on(self.api.create_dataset(database, schema))?;
        self.datasets.lock().unwrap_or_else(|e| e.into_inner()).insert(key);
        Ok(())
    }

    fn materialize(&self, r: &RelationName, what: &Materialization, checks: &[Check]) -> Result<Option<u64>, EngineError> {
        let target = sql::relation(r);
        self.block_on(async {
            match what {
                Materialization::View { sql, options } => {
                    self.clear_for(r, true, options).await?;
                    let (prefix, suffix) = sql::create_view(&target, options);
                    self.embedded(&prefix, sql, suffix).await.map(|d| d.rows())
                }
                Materialization::Table { sql, options } => self.build_table(r, sql, options, checks).await,
                Materialization::Incremental { sql, strategy, on_schema_change, options } => {
                    self.incremental(r, sql, strategy, *on_schema_change, options).await
                }
                Materialization::Snapshot { sql, config, exprs } => self.snapshot(r, sql, config, exprs, checks).await,
                Materialization::External { .. } => Err(EngineError::new(
                    "`materialized: external` writes files and needs the embedded DataFusion engine; use `table` on BigQuery",
                )),
            }
        })
    }

    /// The columns BigQuery reports for a dry run of `sql`: nothing runs, nothing is billed.
    fn query_columns(&self, sql: &str) -> Result<Vec<(String, String)>, EngineError> {
        self.dry_run(sql, None).map(|d| d.columns)
    }

    /// A dry-run job: BigQuery validates `sql` (after the `_dbt_max_partition` declaration a
    /// model's build would run) and reports the bytes it would process and its columns;
    /// nothing runs, nothing is billed.
    fn dry_run(&self, sql: &str, model: Option<(&RelationName, &TableOptions)>) -> Result<super::DryRun, EngineError> {
        let prefix = model.map(|(r, options)| sql::declare_max_partition(sql, options, &sql::relation(r))).unwrap_or_default();
        self.block_on(self.dry(sql, &prefix))
    }

    fn take_response(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        let r = RESPONSE.with_borrow_mut(Option::take)?;
        let json = json!({
            "bytes_processed": r.bytes_processed,
            "bytes_billed": r.bytes_billed,
            "slot_ms": r.slot_ms,
            "job_id": r.job_id,
            "location": r.location,
            "project_id": r.project_id,
        });
        json.as_object().cloned()
    }

    fn load_seed(&self, seed: &SeedLoad) -> Result<u64, EngineError> {
        let data = super::seed_csv::read(seed, sql::seed_type)?;
        let load = sql::seed_load(&seed.relation, &data.columns, b',');
        self.block_on(async {
            let r = &seed.relation;
            if let Some(existing) = self.columns(r).await?
                && (seed.full_refresh || !sql::same_columns(&existing, &data.columns))
            {
                self.job(&format!("drop table if exists {}", sql::relation(r)), None).await?;
            }
            let done = self.api.load(load, data.csv).await?;
            record(&done);
            Ok(done.rows().unwrap_or(data.rows))
        })
    }

    /// Table and column descriptions, as dbt-bigquery's `persist_docs` sets them.
    fn persist_docs(
        &self,
        r: &RelationName,
        is_view: bool,
        description: Option<&str>,
        columns: &[(String, String)],
    ) -> Result<(), EngineError> {
        let target = sql::relation(r);
        let mut statements = Vec::new();
        if let Some(d) = description {
            statements.push(format!(
                "alter {} {target} set options (description = {})",
                if is_view { "view" } else { "table" },
                sql::literal(d)
            ));
        }
        if !is_view {
            for (column, d) in columns {
                statements.push(format!(
                    "alter table {target} alter column {} set options (description = {})",
                    crate::adapter::names::quote_ident(column, '`'),
                    sql::literal(d)
                ));
            }
        }
        self.block_on(async {
            for s in &statements {
                self.job(s, None).await?;
            }
            Ok(())
        })
    }

    /// dbt-bigquery's grants: `grant`/`revoke` statements for the difference between the config
    /// and the relation's grants (read from `INFORMATION_SCHEMA.OBJECT_PRIVILEGES` when it
    /// existed before), and `grant_access_to` as access entries of the datasets named.
    fn apply_grants(
        &self,
        r: &RelationName,
        is_view: bool,
        access: &crate::project::typed::Access,
        existed: bool,
    ) -> Result<(), EngineError> {
        self.block_on(async {
            if is_view {
                let view = json!({"projectId": r.database, "datasetId": r.schema, "tableId": r.name});
                for (project, dataset) in &access.grant_access_to {
                    self.api.authorize_view(view.clone(), project, dataset).await?;
                }
            }
            if access.grants.is_empty() {
                return Ok(());
            }
            let mut current = Vec::new();
            if existed {
                let dataset = self.api.dataset(&r.database, &r.schema).await?;
                let location = dataset["location"].as_str().or(self.api.settings.location.as_deref()).unwrap_or("US");
                let done = self.job(&sql::show_grants(r, location), None).await?;
                let (_, rows) = self.api.rows(&done, None).await?;
                let cell = |row: &serde_json::Value, i: usize| row["f"][i]["v"].as_str().unwrap_or_default().to_string();
                current = rows.iter().map(|row| (cell(row, 0), cell(row, 1))).collect();
            }
            let kind = if is_view { "view" } else { "table" };
            for statement in sql::grant_statements(&sql::relation(r), kind, &access.grants, &current) {
                self.job(&statement, None).await?;
            }
            Ok(())
        })
    }

    fn cancel_on(&self, flag: Arc<AtomicBool>) {
        let _ = self.cancel.set(flag);
    }

    /// Checks that the credentials work: a trivial query job in the execution project.
    fn version(&self) -> Result<String, EngineError> {
        self.block_on(async {
            self.job("select 1", None).await?;
            let s = &self.api.settings;
            Ok(format!("BigQuery at {} (project {}, jobs in {}, auth: {})", s.endpoint, s.project, s.execution_project, s.method.name()))
        })
    }

    fn supports(&self, capability: Capability) -> bool {
        matches!(capability, Capability::AtomicPublish | Capability::DryRun)
    }
}

/// Opens the BigQuery engine of `target`; the error says what failed (never a secret).
pub fn open_target(
    target: &crate::project::profiles::Target,
    env: &std::collections::HashMap<String, String>,
) -> Result<BigQueryEngine, crate::diagnostics::Diagnostic> {
    use crate::diagnostics::{Code, Diagnostic};
    let file = target.profiles_path.as_ref().map_or("profiles.yml".to_string(), |p| p.display().to_string());
    let fail =
        |e: EngineError| Diagnostic::error(Code::Connection, format!("target `{}`: {}", target.name, e.message)).with_file(file.clone());
    let settings = connect::Settings::from_target(&target.settings, env).map_err(fail)?;
    BigQueryEngine::open(settings, env).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BigQuery's `at [line:col]` in a statement that wraps the model maps onto the model's
    /// SQL; a position in the wrapper is dropped rather than pointed at the wrong line.
    #[test]
    fn error_positions_map_onto_the_model() {
        let (prefix, _) = sql::create_table("`p`.`d`.`t`", &TableOptions::default(), false).unwrap();
        let emb = Embedded::of(&prefix);
        let e = api::classify(400, "invalidQuery", "Unrecognized name: ordr_id at [3:12]".into());
        assert_eq!(emb.map(e).position, Some((1, 12)));
        let e = api::classify(400, "invalidQuery", "Syntax error at [1:1]".into());
        assert_eq!(emb.map(e).position, None);
    }
}
