//! Stage 7: engines. The [`Engine`] trait is the seam between the runner and a warehouse:
//! DataFusion (embedded, this module's `datafusion`), PostgreSQL and BigQuery plug in beside it
//! without touching the runner. Engines never print; they return data and errors.

#[cfg(feature = "bigquery")]
pub mod bigquery;
#[cfg(feature = "datafusion")]
pub mod datafusion;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "postgres", feature = "bigquery"))]
pub mod seed_csv;
pub mod snapshot;
pub mod sql;

/// Resolves once `flag` is set (a cancelled run), checking every 50 ms.
#[cfg(any(feature = "datafusion", feature = "postgres", feature = "bigquery"))]
pub(crate) async fn cancelled(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    while !flag.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

use crate::diagnostics::{Code, Diagnostic, Label};
use crate::project::profiles::{EngineKind, Target};
use std::fmt;
use std::sync::Arc;

/// What opening an engine needs besides the target (see `run::setup`).
pub struct Setup<'a> {
    pub project_root: &'a std::path::Path,
    /// The invocation's environment: object-store credentials.
    pub env: &'a std::collections::HashMap<String, String>,
    /// The local warehouse's writer lock, for a command that changes it; `None` opens it to read.
    #[cfg(feature = "datafusion")]
    pub writer: Option<datafusion::lock::WriterLock>,
    #[cfg(not(feature = "datafusion"))]
    pub writer: Option<std::convert::Infallible>,
    /// Locations (`s3://bucket/...`) whose object stores must be reachable.
    pub stores: Vec<String>,
    /// Relations that are files.
    pub externals: Vec<External>,
}

/// A relation read from files.
pub struct External {
    pub relation: RelationName,
    pub location: String,
    pub format: Option<String>,
    /// For a source: what it is and where it is declared, for a warning when it cannot be read.
    /// `None` (an `external` model): a missing file is normal before its first build.
    pub declared: Option<(String, Label)>,
}

/// Opens the engine of `target`. Problems that only some nodes meet (an unreachable bucket, a
/// source file that cannot be read, a damaged table) come back as warnings.
#[cfg_attr(not(feature = "datafusion"), allow(unused_variables))]
pub fn open(target: &Target, setup: Setup) -> Result<(Arc<dyn Engine>, Vec<Diagnostic>), Diagnostic> {
    let unavailable = |feature: &str| {
        Diagnostic::error(
            Code::Unsupported,
            format!("target `{}` uses the {} adapter, which this build of kiln cannot run", target.name, target.adapter_type),
        )
        .with_help(format!("build kiln with the `{feature}` feature; `kiln compile` works for every adapter"))
    };
    match target.engine() {
        #[cfg(feature = "datafusion")]
        EngineKind::DataFusion => datafusion::open_target(target, setup).map(|(e, w)| (e as Arc<dyn Engine>, w)),
        #[cfg(feature = "postgres")]
        EngineKind::Postgres => {
            let engine: Arc<dyn Engine> = Arc::new(postgres::open_target(target)?);
            let warnings = unread_files(engine.as_ref(), target, &setup);
            Ok((engine, warnings))
        }
        #[cfg(feature = "bigquery")]
        EngineKind::BigQuery => {
            let engine: Arc<dyn Engine> = Arc::new(bigquery::open_target(target, setup.env)?);
            let warnings = unread_files(engine.as_ref(), target, &setup);
            Ok((engine, warnings))
        }
        #[allow(unreachable_patterns)]
        EngineKind::DataFusion => Err(unavailable("datafusion")),
        #[allow(unreachable_patterns)]
        EngineKind::Postgres => Err(unavailable("postgres")),
        #[allow(unreachable_patterns)]
        EngineKind::BigQuery => Err(unavailable("bigquery")),
    }
}

/// Sources declared as files (`external_location`) on an engine that cannot read files: one
/// warning each, so a project moved from the embedded engine to a warehouse says what changes.
#[cfg_attr(not(any(feature = "postgres", feature = "bigquery")), allow(dead_code))]
fn unread_files(engine: &dyn Engine, target: &Target, setup: &Setup) -> Vec<Diagnostic> {
    if engine.supports(Capability::ExternalSources) {
        return vec![];
    }
    setup
        .externals
        .iter()
        .filter_map(|x| {
            let (what, label) = x.declared.as_ref()?;
            Some(
                Diagnostic::warning(
                    Code::ConfigNotHonoured,
                    format!("{what} is a file ({}), which the {} target cannot read", x.location, target.adapter.name),
                )
                .with_label(label.clone())
                .with_help(format!("models that select from it read the relation {} in the warehouse instead", x.relation)),
            )
        })
        .collect()
}

/// A query's result: column names and rows of JSON values (`run_query`, `statement`, tests).
#[derive(Clone, Debug, Default)]
pub struct QueryTable {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// A fully qualified relation in the engine.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelationName {
    pub database: String,
    pub schema: String,
    pub name: String,
}

impl fmt::Display for RelationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.database, self.schema, self.name)
    }
}

/// How an incremental model merges new rows into the existing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncrementalStrategy {
    Append,
    /// Rows whose key matches a new row are updated, the others inserted (dbt's `merge`).
    Merge {
        unique_key: Vec<String>,
    },
    /// Rows whose key matches a new row are deleted, then the new rows inserted (dbt's
    /// `delete+insert`). The same result as `Merge` when keys are unique.
    DeleteInsert {
        unique_key: Vec<String>,
    },
    /// The partitions the new rows fall in (or the static `partitions`) are replaced by them
    /// (dbt-bigquery's `insert_overwrite`; needs `partition_by`).
    InsertOverwrite {
        partitions: Vec<String>,
    },
}

/// What to build.
#[derive(Clone, Debug, PartialEq)]
pub enum Materialization {
    /// `options`: labels and expiry, where the warehouse has them (BigQuery).
    View {
        sql: String,
        options: TableOptions,
    },
    /// `options` lay the table out where the warehouse can (BigQuery's partitioning).
    Table {
        sql: String,
        options: TableOptions,
    },
    Incremental {
        sql: String,
        strategy: IncrementalStrategy,
        on_schema_change: SchemaChange,
        options: TableOptions,
    },
    /// Files at `location` (`parquet`, `csv` or `json`), readable as the relation afterwards.
    External {
        sql: String,
        location: String,
        format: String,
    },
    /// A snapshot: created from `sql` on its first run, then the changes `sql` shows are
    /// recorded as new versions (see [`snapshot`]), with the time and hashes of `exprs`.
    Snapshot {
        sql: String,
        config: Box<crate::project::typed::SnapshotConfig>,
        exprs: snapshot::Expressions,
    },
}

pub use crate::project::typed::{SchemaChange, TableOptions};

impl Materialization {
    /// A view without warehouse options.
    pub fn view(sql: impl Into<String>) -> Materialization {
        Materialization::View { sql: sql.into(), options: TableOptions::default() }
    }

    /// A table without warehouse options.
    pub fn table(sql: impl Into<String>) -> Materialization {
        Materialization::Table { sql: sql.into(), options: TableOptions::default() }
    }
}

/// An engine error: the message, for SQL errors where in the SQL (1-based line, column), and
/// what kind of failure it is.
#[derive(Clone, Debug)]
pub struct EngineError {
    pub message: String,
    pub position: Option<(usize, usize)>,
    pub kind: ErrorKind,
}

/// What kind of failure an [`EngineError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ErrorKind {
    /// The warehouse rejected or failed a statement.
    #[default]
    Query,
    /// A new table version breaks a contract constraint (it is not published).
    Violation,
    /// The connection to the warehouse was lost or could not be made.
    Connection,
    /// The run was interrupted and the statement cancelled.
    Cancelled,
}

impl EngineError {
    pub fn new(message: impl Into<String>) -> Self {
        EngineError { message: message.into(), position: None, kind: ErrorKind::Query }
    }

    pub fn of_kind(kind: ErrorKind, message: impl Into<String>) -> Self {
        EngineError { kind, ..EngineError::new(message) }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Optional abilities; every one defaults to unsupported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// `materialize` publishes atomically: a failure leaves the previous relation intact.
    AtomicPublish,
    /// Sources can be files (CSV, Parquet, JSON) read in place.
    ExternalSources,
    /// [`Engine::dry_run`] validates a query in the warehouse without running it.
    DryRun,
    /// [`Engine::query_tests`] shares work between the data tests of one model.
    SharedTestWork,
}

/// What a dry run of a query reports: the bytes it would read and the columns it returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DryRun {
    pub bytes_processed: u64,
    pub columns: Vec<(String, String)>,
}

/// A condition a new table version must meet before it is published (contract constraints):
/// `violations` counts the offending rows, with `{relation}` standing for the new version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What is checked, for the error: "not_null on `id`".
    pub name: String,
    pub violations: String,
    /// The constraint as DDL (`alter table {relation} add primary key ("id")`), for engines
    /// that enforce constraints themselves: they add it to the new table instead of counting.
    pub ddl: Option<String>,
}

/// Data seed: a CSV file to load as a table.
#[derive(Clone, Debug)]
pub struct SeedLoad {
    pub relation: RelationName,
    pub path: std::path::PathBuf,
    pub delimiter: u8,
    /// Column -> SQL type, overriding inference.
    pub column_types: Vec<(String, String)>,
    /// `--full-refresh`: drop and recreate the table even when its columns are unchanged.
    pub full_refresh: bool,
}

/// The warehouse seen by the runner. Every method is blocking and may be called from several
/// threads at once.
pub trait Engine: Send + Sync {
    /// The adapter name (`datafusion`, `postgres`, ...).
    fn name(&self) -> &str;

    /// Runs one statement (DDL, DML, hooks); returns the rows affected when known.
    fn execute(&self, sql: &str) -> Result<Option<u64>, EngineError>;

    /// Runs a query and returns its rows (at most `limit`).
    fn query(&self, sql: &str, limit: Option<usize>) -> Result<QueryTable, EngineError>;

    /// Columns (name, type) of a relation, or `None` when it does not exist.
    fn describe(&self, relation: &RelationName) -> Result<Option<Vec<(String, String)>>, EngineError>;

    /// Creates the schema if it does not exist.
    fn create_schema(&self, database: &str, schema: &str) -> Result<(), EngineError>;

    /// Builds `relation`; returns the rows written when known. A table that fails one of
    /// `checks` is not published (the previous version stays).
    fn materialize(&self, relation: &RelationName, what: &Materialization, checks: &[Check]) -> Result<Option<u64>, EngineError>;

    /// The columns (name, type) `sql` returns, without running it. Types are named so that
    /// the same type always gets the same name (contracts compare them).
    fn query_columns(&self, sql: &str) -> Result<Vec<(String, String)>, EngineError>;

    /// Runs data tests' queries. An engine may share work between them and with later tests
    /// of the run (the embedded engine computes a view once, see `view_memo`); by default each
    /// query runs on its own.
    fn query_tests(&self, queries: &[String]) -> Vec<Result<QueryTable, EngineError>> {
        queries.iter().map(|q| self.query(q, None)).collect()
    }

    /// Loads a seed, replacing the table; returns the rows loaded.
    fn load_seed(&self, seed: &SeedLoad) -> Result<u64, EngineError>;

    /// Writes descriptions (`persist_docs`) where the warehouse keeps them; by default nowhere.
    fn persist_docs(
        &self,
        relation: &RelationName,
        is_view: bool,
        description: Option<&str>,
        columns: &[(String, String)],
    ) -> Result<(), EngineError> {
        let _ = (relation, is_view, description, columns);
        Ok(())
    }

    /// Applies `access` to the relation just built: `grants` (revoking those the warehouse has
    /// and the config no longer names, when `existed`) and, for a view, `grant_access_to`.
    /// Only engines whose adapter honours these configs are asked.
    fn apply_grants(
        &self,
        relation: &RelationName,
        is_view: bool,
        access: &crate::project::typed::Access,
        existed: bool,
    ) -> Result<(), EngineError> {
        let _ = (relation, is_view, access, existed);
        Err(EngineError::new(format!("the {} engine does not apply grants", self.name())))
    }

    /// The warehouse's version, for `kiln debug` (a round trip to a server).
    fn version(&self) -> Result<String, EngineError> {
        Ok(self.name().to_string())
    }

    fn supports(&self, _capability: Capability) -> bool {
        false
    }

    /// Relations (name, `table` or `view`) in `database.schema`, by name
    /// (`adapter.list_relations_without_caching`); by default from `information_schema`.
    fn list_relations(&self, database: &str, schema: &str) -> Result<Vec<(String, String)>, EngineError> {
        let sql = format!(
            "select table_name, table_type from information_schema.tables where table_catalog = '{}' and table_schema = '{}' order by table_name",
            database.replace('\'', "''"),
            schema.replace('\'', "''")
        );
        let t = self.query(&sql, None)?;
        Ok(t.rows
            .iter()
            .filter_map(|row| {
                let kind = if row.get(1).and_then(|t| t.as_str()).is_some_and(|t| t.contains("VIEW")) { "view" } else { "table" };
                Some((row.first()?.as_str()?.to_string(), kind.to_string()))
            })
            .collect())
    }

    /// The schemas of `database`, by name (`adapter.list_schemas`, `check_schema_exists`); by
    /// default from `information_schema`.
    fn list_schemas(&self, database: &str) -> Result<Vec<String>, EngineError> {
        let sql = format!(
            "select distinct schema_name from information_schema.schemata where catalog_name = '{}' order by 1",
            database.replace('\'', "''")
        );
        Ok(self.query(&sql, None)?.rows.iter().filter_map(|r| r.first()?.as_str().map(str::to_string)).collect())
    }

    /// Validates `sql` in the warehouse without running it ([`Capability::DryRun`]); `model`
    /// is the relation the query builds and its options, as the build would use them.
    fn dry_run(&self, sql: &str, model: Option<(&RelationName, &TableOptions)>) -> Result<DryRun, EngineError> {
        let _ = (sql, model);
        Err(EngineError::new(format!("the {} engine cannot dry-run queries", self.name())))
    }

    /// What the warehouse reported for the statements this thread ran since the last call
    /// (dbt's `adapter_response` fields: `bytes_processed`, `job_id`, ...), then forgets it.
    fn take_response(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        None
    }

    /// From now on, stop running queries soon after `flag` is set (Ctrl-C, SIGTERM, a newer
    /// change in `kiln watch`): they fail as cancelled and publish nothing. By default queries
    /// run to their end.
    fn cancel_on(&self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let _ = flag;
    }
}
