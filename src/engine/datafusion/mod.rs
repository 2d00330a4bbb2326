//! The embedded engine: Apache DataFusion over a local warehouse directory.
//!
//! Layout: `<warehouse>/<database>/<schema>/<relation>/`. A table is Parquet data in a version
//! directory `v<N>/` plus `_kiln_table.json` naming the current version; a build writes `v<N+1>/`
//! completely, then renames a new pointer file over the old one. Readers (and a killed build)
//! therefore always see a complete version. A view is `_kiln_view.json` holding its SQL,
//! re-registered when a session opens the warehouse. Parquet is an open format: DuckDB, Spark,
//! Polars and pandas read these tables directly.

pub mod analysis;
pub mod compat;
pub mod lock;
pub mod object_stores;
mod one_key_aggregate;
mod partition_top_k;
pub mod paths;
mod signatures;
mod sorted_window;
mod statements;
mod type_check;
pub mod types;
mod udfs;
pub mod view_memo;

use super::QueryTable;
use super::{Capability, Check, Engine, EngineError, ErrorKind, External, Materialization, RelationName, SeedLoad, Setup};
use crate::adapter::names::quote_ident;
use crate::diagnostics::{Code, Diagnostic};
use crate::project::profiles::Target;
pub use compat::Flavor;
use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::common::TableReference;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::{CsvReadOptions, DataFrame, JsonReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use view_memo::ViewMemo;

const TABLE_POINTER: &str = "_kiln_table.json";
const VIEW_FILE: &str = "_kiln_view.json";

pub struct DataFusionEngine {
    rt: tokio::runtime::Runtime,
    ctx: SessionContext,
    root: PathBuf,
    /// Serializes catalog changes (registering schemas) between threads.
    catalog_lock: Mutex<()>,
    /// Views computed for data tests, and the session that reads them (made on first use).
    memo: Arc<ViewMemo>,
    tests_ctx: std::sync::OnceLock<SessionContext>,
    /// Registered views by key, to plan them again when what they read is replaced.
    views: Mutex<std::collections::HashMap<String, ViewDef>>,
    /// Held by the one process that may change the warehouse (see [`lock`]).
    writer: Option<lock::WriterLock>,
    /// Whether this engine may change its warehouse: with the writer's lock, or in memory
    /// (unit tests). Readers never write or delete anything.
    writes: bool,
    /// Set when the run is cancelled: running queries stop (see [`Engine::cancel_on`]).
    cancel: std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>>,
    /// Databases of other warehouses (the target's `attach`), readable and never written: by
    /// name, the warehouse each comes from.
    attached: Mutex<std::collections::BTreeMap<String, PathBuf>>,
    /// Removals of stale table versions still running (see
    /// [`DataFusionEngine::remove_in_background`]).
    removing: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct ViewDef {
    relation: RelationName,
    sql: String,
    /// Keys of the relations the view reads directly.
    reads: Vec<String>,
}

/// How much memory the embedded engine may use, and where it spills.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemorySettings {
    /// Bytes that queries may hold together; sorts, aggregates and joins spill to disk beyond
    /// it (operators that cannot spill fail with "Resources exhausted"). `None`: no limit.
    pub limit: Option<usize>,
    /// Where spill files go; `None`: the system's temporary directory.
    pub spill_dir: Option<PathBuf>,
}

impl MemorySettings {
    /// From a target: `memory_limit` and `spill_dir` (or, as dbt-duckdb writes them,
    /// `settings: {memory_limit, temp_directory}`); relative directories are under `root`.
    /// Without `memory_limit`, 80% of the machine's memory (or of the container's limit).
    pub fn from_target(settings: &indexmap::IndexMap<String, Json>, root: &Path) -> Result<MemorySettings, String> {
        let get = |key: &str, duckdb: &str| {
            settings.get(key).or_else(|| settings.get("settings").and_then(|s| s.get(duckdb))).filter(|v| !v.is_null()).cloned()
        };
        let limit = match get("memory_limit", "memory_limit") {
            Some(Json::Number(n)) => Some(n.as_u64().ok_or_else(|| format!("`memory_limit: {n}` is not a number of bytes"))? as usize),
            Some(Json::String(text)) => Some(parse_size(&text)?),
            Some(other) => return Err(format!("`memory_limit: {other}` is not a size such as 4GB or 512MiB")),
            None => default_memory_limit(),
        };
        let spill_dir = get("spill_dir", "temp_directory").and_then(|v| v.as_str().map(|d| root.join(d)));
        Ok(MemorySettings { limit, spill_dir })
    }
}

/// `4GB`, `512 MiB`, `1.5gb`, `1000000` (bytes). KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB
/// powers of 1024, as in DuckDB.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (t[..split].trim(), t[split..].trim().to_ascii_lowercase());
    let bad = || format!("`{text}` is not a size such as 4GB, 512MiB or a number of bytes");
    let n: f64 = number.parse().map_err(|_| bad())?;
    let scale: f64 = match unit.as_str() {
        "" | "b" | "bytes" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = n * scale;
    if !(1.0..1e18).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes as usize)
}

/// 80% of the memory this process may use: the cgroup's limit when set, else the machine's.
fn default_memory_limit() -> Option<usize> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let machine = read("/proc/meminfo").and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
        line.split_whitespace().nth(1)?.parse::<usize>().ok().map(|kb| kb * 1024)
    });
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let total = match (machine, cgroup) {
        (Some(m), Some(c)) => m.min(c),
        (m, c) => m.or(c)?,
    };
    Some(total / 10 * 8)
}

/// Rows per row group of the Parquet files of warehouse tables (see `open`).
const ROW_GROUP_ROWS: usize = 1 << 19;

/// Most bytes the view memo of data tests keeps when no memory limit is set.
const MEMO_BUDGET: usize = 128 << 20;

fn df_err(e: impl std::fmt::Display) -> EngineError {
    let mut message = e.to_string();
    if message.contains("Resources exhausted") {
        message.push_str(
            "\nThe query needs more memory than kiln may use: raise --memory-limit (or the target's memory_limit), \
             or reduce the rows a join holds in memory (joins cannot spill to disk: filter or aggregate before joining)",
        );
    }
    let position = message.rfind("Line: ").and_then(|i| {
        let rest = &message[i + 6..];
        let (line, rest) = rest.split_once(", Column: ")?;
        let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Some((line.trim().parse().ok()?, col.parse().ok()?))
    });
    let kind = if message.contains("cancelled: the run was interrupted") { ErrorKind::Cancelled } else { ErrorKind::Query };
    EngineError { message, position, kind }
}

fn io_err(what: &str, e: std::io::Error) -> EngineError {
    EngineError::new(format!("{what}: {e}"))
}

fn table_ref(r: &RelationName) -> TableReference {
    TableReference::full(r.database.as_str(), r.schema.as_str(), r.name.as_str())
}

pub fn quoted(r: &RelationName) -> String {
    format!("{}.{}.{}", quote_ident(&r.database, '"'), quote_ident(&r.schema, '"'), quote_ident(&r.name, '"'))
}

/// How many columns a seed may have (a CSV reader handles wider files, but slowly enough to look
/// like a hang).
const MAX_SEED_COLUMNS: usize = 10_000;

/// How many items one select list may have. DataFusion plans a select list in time quadratic
/// in its length (20,000 columns take seconds); this is also BigQuery's limit on a table.
const MAX_SELECT_ITEMS: usize = 10_000;

/// Parses and plans `sql` in `ctx`, as `SessionContext::sql` does, through [`parse`].
async fn plan(ctx: &SessionContext, sql: &str) -> Result<DataFrame, EngineError> {
    let state = ctx.state();
    let statement = parse(&state, sql)?;
    let plan = state.statement_to_plan(statement).await.map_err(df_err)?;
    ctx.execute_logical_plan(plan).await.map_err(df_err)
}

/// Parses `sql` in the session's dialect, refusing a select list longer than
/// [`MAX_SELECT_ITEMS`].
fn parse(state: &datafusion::execution::SessionState, sql: &str) -> Result<datafusion::sql::parser::Statement, EngineError> {
    let statement = state.sql_to_statement(sql, &state.config_options().sql_parser.dialect).map_err(df_err)?;
    if let datafusion::sql::parser::Statement::Statement(inner) = &statement {
        check_select_width(inner)?;
    }
    Ok(statement)
}

fn check_select_width(statement: &datafusion::sql::sqlparser::ast::Statement) -> Result<(), EngineError> {
    use datafusion::sql::sqlparser::ast::{Query, SetExpr, Visit, Visitor};
    use std::ops::ControlFlow;
    /// The first select (of a query or a set operation) listing too many items: its length
    /// and the line and column of its `select`.
    fn widest(body: &SetExpr) -> Option<(usize, usize, usize)> {
        match body {
            SetExpr::Select(select) if select.projection.len() > MAX_SELECT_ITEMS => {
                let start = select.select_token.0.span.start;
                Some((select.projection.len(), start.line as usize, start.column as usize))
            }
            SetExpr::SetOperation { left, right, .. } => widest(left).or_else(|| widest(right)),
            _ => None,
        }
    }
    struct Queries;
    impl Visitor for Queries {
        type Break = (usize, usize, usize);
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Self::Break> {
            widest(&query.body).map_or(ControlFlow::Continue(()), ControlFlow::Break)
        }
    }
    match statement.visit(&mut Queries) {
        ControlFlow::Break((n, line, col)) => Err(EngineError {
            message: format!(
                "this select lists {n} columns; kiln's embedded engine plans at most {MAX_SELECT_ITEMS} in one select \
                 (planning time grows with the square of a select list's length): split the model into narrower ones"
            ),
            position: (line > 0).then_some((line, col)),
            kind: ErrorKind::Query,
        }),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Checks a seed's header before the CSV reader sees it: an empty or duplicate column name, or
/// an absurd number of columns, is named instead of surfacing as a field-count error. Returns
/// the column names.
fn check_seed_header(path: &Path, delimiter: u8) -> Result<Vec<String>, EngineError> {
    let file = std::fs::File::open(path).map_err(|e| io_err("reading the seed", e))?;
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).has_headers(false).from_reader(std::io::BufReader::new(file));
    let mut header = csv::StringRecord::new();
    match reader.read_record(&mut header) {
        Ok(true) => {}
        Ok(false) => return Err(EngineError::new("the seed is empty: it needs a header line with the column names")),
        Err(e) => return Err(EngineError::new(format!("the seed's header line cannot be read: {e}"))),
    }
    if header.len() > MAX_SEED_COLUMNS {
        return Err(EngineError::new(format!("the seed has {} columns; kiln loads at most {MAX_SEED_COLUMNS}", header.len())));
    }
    let mut seen = std::collections::HashMap::new();
    for (i, name) in header.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(EngineError::new(format!("column {} of the seed's header has no name", i + 1)));
        }
        if let Some(first) = seen.insert(name.to_lowercase(), i) {
            return Err(EngineError::new(format!("the seed's header names column `{name}` twice (columns {} and {})", first + 1, i + 1)));
        }
    }
    Ok(header.iter().map(str::to_string).collect())
}

/// The line of the seed file that a CSV error is about. The CSV reader counts lines within the
/// chunk it was reading, so its "line 49225" is not the file's: find the row itself (by the
/// data the error quotes, or by its number of fields).
fn bad_seed_line(path: &Path, delimiter: u8, message: &str) -> Option<u64> {
    let quoted_row = message.split("Row data: '[").nth(1).and_then(|r| r.split("]'").next());
    let wrong_width = message.contains("incorrect number of fields");
    if quoted_row.is_none() && !wrong_width {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    let mut reader =
        csv::ReaderBuilder::new().delimiter(delimiter).has_headers(true).flexible(true).from_reader(std::io::BufReader::new(file));
    let width = reader.headers().ok()?.len();
    for record in reader.records() {
        let record = record.ok()?;
        let line = record.position()?.line();
        match quoted_row {
            Some(row) if record.iter().collect::<Vec<_>>().join(",") == row => return Some(line),
            None if record.len() != width => return Some(line),
            _ => {}
        }
    }
    None
}

/// Writes `path` atomically (temp file + rename).
fn write_atomic(path: &Path, text: &str) -> Result<(), EngineError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| io_err("writing the warehouse", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err("publishing in the warehouse", e))
}

/// The names and aliases of every function the embedded engine has (DataFusion's and kiln's),
/// in lower case.
pub fn function_names() -> std::collections::BTreeSet<String> {
    let ctx = SessionContext::new();
    udfs::register(&ctx);
    let state = compat::install(ctx, Flavor::DuckDb).state();
    let scalar = state.scalar_functions().values().flat_map(|f| std::iter::once(f.name().to_string()).chain(f.aliases().iter().cloned()));
    let aggregate =
        state.aggregate_functions().values().flat_map(|f| std::iter::once(f.name().to_string()).chain(f.aliases().iter().cloned()));
    let window = state.window_functions().values().flat_map(|f| std::iter::once(f.name().to_string()).chain(f.aliases().iter().cloned()));
    scalar.chain(aggregate).chain(window).map(|n| n.to_lowercase()).collect()
}

impl DataFusionEngine {
    /// Opens (or creates) the warehouse at `root`. Call [`DataFusionEngine::load_warehouse`]
    /// after registering external sources, so views over them resolve. `writer` is the
    /// warehouse's lock for a process that builds; without it the engine only reads.
    pub fn open(
        root: &Path,
        database: &str,
        schema: &str,
        memory: &MemorySettings,
        flavor: Flavor,
        writer: Option<lock::WriterLock>,
    ) -> Result<DataFusionEngine, EngineError> {
        use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
        use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        std::fs::create_dir_all(root).map_err(|e| io_err(&format!("creating the warehouse {}", root.display()), e))?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .map_err(|e| io_err("starting the engine", e))?;
        let mut config = SessionConfig::from_env()
            .map_err(df_err)?
            .with_default_catalog_and_schema(database, schema)
            .with_create_default_catalog_and_schema(true)
            .with_information_schema(true);
        if std::env::var_os("DATAFUSION_EXECUTION_PARQUET_COMPRESSION").is_none() {
            // zstd level 1 writes a 1M-row table a third faster than DataFusion's level 3, at
            // 20% more bytes; LZ4 and Snappy are no faster and 70% larger.
            config.options_mut().execution.parquet.compression = Some("zstd(1)".into());
        }
        if std::env::var_os("DATAFUSION_EXECUTION_PARQUET_MAX_ROW_GROUP_SIZE").is_none() {
            // Half of DataFusion's 1M rows: a 1M-row table read by the next model decodes on two
            // cores instead of one (a scan and aggregate of it: 10.5 ms -> 6 ms), written as fast.
            config.options_mut().execution.parquet.max_row_group_size = ROW_GROUP_ROWS;
        }
        let mut runtime = RuntimeEnvBuilder::new();
        let mut memo_budget = MEMO_BUDGET;
        if let Some(limit) = memory.limit {
            // Fair among spilling operators; the error names the largest consumers.
            let top = std::num::NonZeroUsize::new(5).unwrap_or(std::num::NonZeroUsize::MIN);
            runtime = runtime.with_memory_pool(Arc::new(TrackConsumersPool::new(FairSpillPool::new(limit), top)));
            memo_budget = memo_budget.min(limit / 8);
        }
        if let Some(dir) = &memory.spill_dir {
            std::fs::create_dir_all(dir).map_err(|e| io_err(&format!("creating the spill directory {}", dir.display()), e))?;
            runtime =
                runtime.with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![dir.clone()])));
        }
        let runtime = runtime.build_arc().map_err(df_err)?;
        let mut engine = Self::with(rt, SessionContext::new_with_config_rt(config, runtime), root.to_path_buf(), memo_budget, flavor);
        engine.writes = writer.is_some();
        engine.writer = writer;
        Ok(engine)
    }

    /// A throwaway in-memory engine (unit tests): one thread, nothing written to disk.
    /// `dialect` is DataFusion's SQL dialect name (`PostgreSQL`, `BigQuery`, `DuckDB`, ...).
    pub fn scratch(database: &str, schema: &str, dialect: &str, flavor: Flavor) -> Result<DataFusionEngine, EngineError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| io_err("starting the engine", e))?;
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(database, schema)
            .with_create_default_catalog_and_schema(true)
            .with_target_partitions(1);
        config.options_mut().sql_parser.dialect = dialect.parse().unwrap_or_default();
        // Planning errors carry where in the SQL they are (static analysis points at them).
        config.options_mut().sql_parser.collect_spans = true;
        let root = std::env::temp_dir().join(format!("kiln-scratch-{}", std::process::id()));
        Ok(Self::with(rt, SessionContext::new_with_config(config), root, MEMO_BUDGET, flavor))
    }

    fn with(rt: tokio::runtime::Runtime, ctx: SessionContext, root: PathBuf, memo_budget: usize, flavor: Flavor) -> DataFusionEngine {
        udfs::register(&ctx);
        let ctx = compat::install(ctx, flavor);
        let state = ctx.state();
        let mut rules = state.physical_optimizers().to_vec();
        rules.push(Arc::new(partition_top_k::PartitionTopKRule));
        rules.push(Arc::new(sorted_window::SortedWindowRule));
        rules.push(Arc::new(one_key_aggregate::OneKeyAggregateRule {
            warehouse: std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone()),
        }));
        let ctx = SessionContext::new_with_state(
            datafusion::execution::SessionStateBuilder::new_from_existing(state).with_physical_optimizer_rules(rules).build(),
        );
        DataFusionEngine {
            rt,
            ctx,
            root,
            catalog_lock: Mutex::new(()),
            memo: Arc::new(ViewMemo::new(memo_budget)),
            tests_ctx: std::sync::OnceLock::new(),
            views: Mutex::default(),
            writer: None,
            writes: true,
            cancel: std::sync::OnceLock::new(),
            attached: Mutex::default(),
            removing: Mutex::default(),
        }
    }

    /// The columns and Arrow types `sql` would return, without running it.
    pub fn query_schema(&self, sql: &str) -> Result<datafusion::arrow::datatypes::SchemaRef, EngineError> {
        let df = self.block(plan(&self.ctx, sql))?;
        Ok(Arc::new(df.schema().as_arrow().clone()))
    }

    /// Registers `sql` as the view `r` (in memory only).
    pub fn register_view(&self, r: &RelationName, sql: &str) -> Result<(), EngineError> {
        self.create_view(r, sql)
    }

    /// Registers an empty table `r` with `schema` (in memory only).
    pub fn register_empty(&self, r: &RelationName, schema: datafusion::arrow::datatypes::SchemaRef) -> Result<(), EngineError> {
        self.ensure_schema(&r.database, &r.schema);
        let table = datafusion::datasource::MemTable::try_new(schema, vec![vec![]]).map_err(df_err)?;
        self.replace_table(r, Arc::new(table))
    }

    /// Registers a seed's CSV as the relation `r` (in memory only, read in place).
    pub fn register_seed(&self, seed: &SeedLoad) -> Result<(), EngineError> {
        self.ensure_schema(&seed.relation.database, &seed.relation.schema);
        let df = self.seed_frame(seed)?;
        self.replace_table(&seed.relation, df.into_view())
    }

    /// Runs `sql`; every cell formatted as text (NULL for nulls), for comparisons and diffs.
    pub fn query_text(&self, sql: &str) -> Result<(Vec<String>, Vec<Vec<String>>), EngineError> {
        use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
        let df = self.block(plan(&self.ctx, sql))?;
        let columns: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
        let batches = self.block(df.collect()).map_err(df_err)?;
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &batches {
            let formatters: Vec<ArrayFormatter> =
                batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options)).collect::<Result<_, _>>().map_err(df_err)?;
            for i in 0..batch.num_rows() {
                rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
            }
        }
        Ok((columns, rows))
    }

    /// A seed's rows: the CSV read in place, `column_types` applied.
    fn seed_frame(&self, seed: &SeedLoad) -> Result<DataFrame, EngineError> {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let header = check_seed_header(&seed.path, seed.delimiter)?;
        let path = seed.path.to_string_lossy().into_owned();
        let options =
            CsvReadOptions::new().has_header(true).delimiter(seed.delimiter).schema_infer_max_records(100_000).file_extension(".csv");
        let typed = |name: &str| seed.column_types.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)).map(|(_, t)| t);
        // A column with a `column_types` entry is read as text and cast, as DuckDB and
        // PostgreSQL read it (`0.1` stays exact on its way to a decimal). When every column has
        // one, nothing is left to infer: the file is read once, not twice.
        let inferred: Vec<(String, DataType)> = if header.iter().all(|n| typed(n).is_some()) {
            header.iter().map(|n| (n.clone(), DataType::Utf8)).collect()
        } else {
            let df = self.block(self.ctx.read_csv(path.clone(), options.clone())).map_err(df_err)?;
            if seed.column_types.is_empty() {
                return Ok(df);
            }
            let fields = df.schema().fields().iter();
            fields.map(|f| (f.name().clone(), if typed(f.name()).is_some() { DataType::Utf8 } else { f.data_type().clone() })).collect()
        };
        let schema = Schema::new(inferred.iter().map(|(n, t)| Field::new(n, t.clone(), true)).collect::<Vec<_>>());
        let df = self.block(self.ctx.read_csv(path, options.schema(&schema))).map_err(df_err)?;
        let fields: Vec<(String, bool)> = inferred.into_iter().map(|(n, t)| (n, t == DataType::Utf8)).collect();
        let mut exprs = Vec::with_capacity(fields.len());
        let quote = self.quote();
        for (n, text) in &fields {
            let q = quote_ident(n, quote);
            let expr = match typed(n) {
                Some(t) => {
                    let t = types::normalize(t);
                    // DuckDB and PostgreSQL read `2021-01-01 00:00` as a timestamp; Arrow's cast
                    // wants the seconds.
                    let value = if *text && t.starts_with("TIMESTAMP") {
                        format!(
                            "case when regexp_like({q}, '^\\s*\\d{{4}}-\\d{{2}}-\\d{{2}}[ T]\\d{{2}}:\\d{{2}}\\s*$') then trim({q}) || ':00' else {q} end"
                        )
                    } else {
                        q
                    };
                    df.parse_sql_expr(&format!("cast({value} as {t})")).map_err(df_err)?.alias(n)
                }
                None => df.parse_sql_expr(&q).map_err(df_err)?,
            };
            exprs.push(expr);
        }
        df.select(exprs).map_err(df_err)
    }

    /// The identifier quote of the session's dialect: a scratch session for a BigQuery target
    /// (unit tests) parses backticks, where `"x"` is a string.
    fn quote(&self) -> char {
        let bigquery = matches!(self.ctx.state().config_options().sql_parser.dialect, datafusion::config::Dialect::BigQuery);
        if bigquery { '`' } else { '"' }
    }

    /// Runs one statement on DataFusion as it is.
    fn execute_plain(&self, sql: &str) -> Result<Option<u64>, EngineError> {
        let df = self.block(plan(&self.ctx, sql))?;
        let batches = self.block_cancellable(df.collect()).map_err(df_err)?;
        Ok(Some(batches.iter().map(|b| b.num_rows() as u64).sum()))
    }

    /// Removes relation `r` from the warehouse; false when there was none. Views reading it are
    /// planned again (and unregistered when they no longer plan).
    fn drop_relation(&self, r: &RelationName) -> Result<bool, EngineError> {
        self.must_write(&format!("dropping {}", table_ref(r)))?;
        self.not_attached(&r.database, &format!("dropping {}", table_ref(r)))?;
        let dir = self.rel_dir(r);
        let known = self.block(self.ctx.table(table_ref(r))).is_ok();
        let stored = dir.join(TABLE_POINTER).exists() || dir.join(VIEW_FILE).exists();
        if !known && !stored {
            return Ok(false);
        }
        if stored {
            self.settle_removals();
            std::fs::remove_dir_all(&dir).map_err(|e| io_err("dropping a relation", e))?;
        }
        self.views.lock().unwrap_or_else(|e| e.into_inner()).remove(&view_memo::key(&r.database, &r.schema, &r.name));
        let _ = self.ctx.deregister_table(table_ref(r));
        self.replaced(r);
        Ok(true)
    }

    /// Drops every relation of a schema, then the schema; false when there was none.
    fn drop_schema(&self, database: &str, schema: &str) -> Result<bool, EngineError> {
        self.must_write(&format!("dropping schema {database}.{schema}"))?;
        self.not_attached(database, &format!("dropping schema {database}.{schema}"))?;
        let Some(provider) = self.ctx.catalog(database).and_then(|c| c.schema(schema)) else { return Ok(false) };
        for name in provider.table_names() {
            self.drop_relation(&RelationName { database: database.into(), schema: schema.into(), name })?;
        }
        if let Some(catalog) = self.ctx.catalog(database) {
            let _ = catalog.deregister_schema(schema, true);
        }
        let dir = self.schema_dir(database, schema);
        if dir.exists() {
            self.settle_removals();
            std::fs::remove_dir_all(&dir).map_err(|e| io_err("dropping a schema", e))?;
        }
        Ok(true)
    }

    /// Renames `from` to `to`: a table is written under its new name, a view re-created; then
    /// the old name is dropped.
    fn rename_relation(&self, from: &RelationName, to: &RelationName) -> Result<(), EngineError> {
        let view = self
            .views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&view_memo::key(&from.database, &from.schema, &from.name))
            .map(|v| v.sql.clone());
        let what = match view {
            Some(sql) => Materialization::view(sql),
            None if self.describe(from)?.is_some() => {
                Materialization::table(format!("select * from {}", table_ref(from).to_quoted_string()))
            }
            None => return Err(EngineError::new(format!("cannot rename {}: it does not exist", table_ref(from)))),
        };
        self.materialize(to, &what, &[])?;
        self.drop_relation(from).map(|_| ())
    }

    /// Where relation `r` lives (see [`paths`]: any name stays inside the warehouse).
    fn rel_dir(&self, r: &RelationName) -> PathBuf {
        self.schema_dir(&r.database, &r.schema).join(paths::encode(&r.name))
    }

    fn schema_dir(&self, database: &str, schema: &str) -> PathBuf {
        self.root.join(paths::encode(database)).join(paths::encode(schema))
    }

    /// Creates the directory of relation `r` (and of its schema and database).
    fn create_rel_dir(&self, r: &RelationName) -> Result<PathBuf, EngineError> {
        let dir = self.create_schema_dir(&r.database, &r.schema)?;
        paths::child(&dir, &r.name, true).map_err(|e| io_err("creating a relation directory", e))
    }

    fn create_schema_dir(&self, database: &str, schema: &str) -> Result<PathBuf, EngineError> {
        self.not_attached(database, &format!("writing to {database}.{schema}"))?;
        let db = paths::child(&self.root, database, true).map_err(|e| io_err("creating a database directory", e))?;
        paths::child(&db, schema, true).map_err(|e| io_err("creating a schema directory", e))
    }

    /// Refuses a change to a database of an attached warehouse.
    fn not_attached(&self, database: &str, what: &str) -> Result<(), EngineError> {
        match self.attached.lock().unwrap_or_else(|e| e.into_inner()).get(database) {
            Some(from) => Err(EngineError::new(format!(
                "{what}: database `{database}` is attached read-only from {}; kiln writes only to the target's own warehouse",
                from.display()
            ))),
            None => Ok(()),
        }
    }

    /// Refuses a change on an engine opened for reading.
    fn must_write(&self, what: &str) -> Result<(), EngineError> {
        if !self.writes {
            return Err(EngineError::new(format!(
                "{what} changes the warehouse, which this command only reads; run it from a model, a hook or `kiln run`"
            )));
        }
        Ok(())
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Runs a query's future to its end, or until the run is cancelled: then the future is
    /// dropped (which stops DataFusion's streams) and the query fails as cancelled.
    fn block_cancellable<T>(&self, f: impl std::future::Future<Output = datafusion::error::Result<T>>) -> datafusion::error::Result<T> {
        let Some(flag) = self.cancel.get().cloned() else { return self.rt.block_on(f) };
        self.rt.block_on(async move {
            tokio::select! {
                result = f => result,
                () = super::cancelled(flag) => Err(datafusion::error::DataFusionError::Execution("cancelled: the run was interrupted".into())),
            }
        })
    }

    fn ensure_schema(&self, database: &str, schema: &str) {
        let _guard = self.catalog_lock.lock().unwrap_or_else(|e| e.into_inner());
        let catalog = match self.ctx.catalog(database) {
            Some(c) => c,
            None => {
                let c: Arc<dyn CatalogProvider> = Arc::new(MemoryCatalogProvider::new());
                self.ctx.register_catalog(database, c.clone());
                c
            }
        };
        if catalog.schema(schema).is_none() {
            let _ = catalog.register_schema(schema, Arc::new(MemorySchemaProvider::new()));
        }
    }

    fn current_version(dir: &Path) -> Option<u64> {
        let text = std::fs::read_to_string(dir.join(TABLE_POINTER)).ok()?;
        serde_json::from_str::<Json>(&text).ok()?.get("version")?.as_u64()
    }

    /// Registers `table` as `r` in place of what was there.
    fn replace_table(&self, r: &RelationName, table: Arc<dyn datafusion::catalog::TableProvider>) -> Result<(), EngineError> {
        self.replace_with(r, || self.ctx.register_table(table_ref(r), table).map(|_| ()).map_err(df_err))
    }

    /// Drops `r` (a table, a source or a view), lets `register` register it anew, then
    /// re-plans the views that read it (see [`DataFusionEngine::replaced`]).
    fn replace_with(&self, r: &RelationName, register: impl FnOnce() -> Result<(), EngineError>) -> Result<(), EngineError> {
        self.views.lock().unwrap_or_else(|e| e.into_inner()).remove(&view_memo::key(&r.database, &r.schema, &r.name));
        let _ = self.ctx.deregister_table(table_ref(r));
        register()?;
        self.replaced(r);
        Ok(())
    }

    /// After `r` was registered anew: the view memo forgets it, and the views reading it
    /// (directly or through other views) are planned again, parents first. A view's plan holds
    /// the tables it read when it was made, so without this it would go on reading the old ones.
    /// A view that no longer plans (a column it reads is gone) is unregistered, so queries on
    /// it fail instead of reading stale data.
    fn replaced(&self, r: &RelationName) {
        let key = view_memo::key(&r.database, &r.schema, &r.name);
        self.memo.invalidate(&key);
        let order: Vec<(String, RelationName, String)> = {
            let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
            let mut affected: Vec<&String> = Vec::new();
            let mut frontier = vec![&key];
            while let Some(k) = frontier.pop() {
                for (v, def) in views.iter() {
                    if def.reads.contains(k) && !affected.contains(&v) {
                        affected.push(v);
                        frontier.push(v);
                    }
                }
            }
            // Parents first: a view waits for the affected views it reads.
            let mut order = Vec::with_capacity(affected.len());
            while !affected.is_empty() {
                let ready: Vec<&String> =
                    affected.iter().copied().filter(|v| !views[*v].reads.iter().any(|p| p != *v && affected.contains(&p))).collect();
                if ready.is_empty() {
                    break; // a cycle cannot be planned anyway
                }
                affected.retain(|v| !ready.contains(v));
                order.extend(ready.into_iter().map(|v| (v.clone(), views[v].relation.clone(), views[v].sql.clone())));
            }
            order
        };
        for (key, relation, sql) in order {
            self.memo.invalidate(&key);
            if self.plan_view(&relation, &sql).is_err() {
                let _ = self.ctx.deregister_table(table_ref(&relation));
                self.views.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            }
        }
    }

    /// Bytes the view memo of data tests holds now.
    pub fn view_memo_bytes(&self) -> usize {
        self.memo.bytes()
    }

    /// The session data tests run in: the same catalog, with views computed once (see
    /// `view_memo`).
    fn tests_ctx(&self) -> &SessionContext {
        self.tests_ctx.get_or_init(|| {
            let state = self.ctx.state();
            let catalogs = view_memo::overlay(state.catalog_list().clone(), self.memo.clone());
            let state = datafusion::execution::SessionStateBuilder::new_from_existing(state).with_catalog_list(catalogs).build();
            SessionContext::new_with_state(state)
        })
    }

    fn register_version(&self, r: &RelationName, dir: &Path, version: u64) -> Result<(), EngineError> {
        self.ensure_schema(&r.database, &r.schema);
        let path = format!("{}/", dir.join(format!("v{version}")).display());
        self.replace_with(r, || self.block(self.ctx.register_parquet(table_ref(r), path, ParquetReadOptions::default())).map_err(df_err))
    }

    /// A snapshot: its first version from dbt's `build_snapshot_table`, then each run writes
    /// the next version of the table with the staged changes applied (see
    /// [`super::snapshot::merged_table`]), published atomically as any table. Returns the
    /// number of inserted versions.
    fn snapshot(
        &self,
        r: &RelationName,
        sql: &str,
        config: &crate::project::typed::SnapshotConfig,
        exprs: &super::snapshot::Expressions,
        checks: &[Check],
    ) -> Result<Option<u64>, EngineError> {
        use super::snapshot;
        let source_columns: Vec<String> = self.query_schema(sql)?.fields().iter().map(|f| f.name().clone()).collect();
        snapshot::check_columns(config, &source_columns).map_err(EngineError::new)?;
        let Some(existing) = self.describe(r)? else {
            let df = self.block(plan(&self.ctx, &snapshot::build_table(config, sql, exprs)))?;
            return self.write_table(r, df, checks).map(Some);
        };
        let target_columns: Vec<String> = existing.into_iter().map(|(c, _)| c).collect();
        let target = quoted(r);
        let staging = snapshot::staging(&snapshot::Staging {
            config,
            sql,
            target: &target,
            exprs,
            quote: '"',
            target_columns: &target_columns,
            source_columns: &source_columns,
        });
        let staging_columns = self.query_columns(&staging)?;
        let merged = snapshot::merged_table(config, &target, &staging, &target_columns, &staging_columns);
        let inserted =
            self.query(&format!("select count(*) from (\n{staging}\n) as kiln_staged where dbt_change_type = 'insert'"), None)?;
        let df = self.block(plan(&self.ctx, &merged))?;
        self.write_table(r, df, checks)?;
        Ok(inserted.rows.first().and_then(|row| row.first()).and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok())))
    }

    /// Registers every table and view of the warehouse. A relation that cannot be opened (a
    /// damaged file) does not stop the others: it is returned, with why, for the caller to
    /// report. Directories kiln did not name are left alone; a reader deletes nothing.
    pub fn load_warehouse(&self) -> Result<Vec<(RelationName, String)>, EngineError> {
        let root = self.root.clone();
        self.load_root(&root, None)
    }

    /// Makes the tables and views of another kiln warehouse readable, never written: each of
    /// its databases under its own name, or, when it holds one database, under `alias` (as
    /// dbt-duckdb's `attach`). Returns the relations that cannot be read, with why.
    pub fn attach(&self, root: &Path, alias: Option<&str>) -> Result<Vec<(RelationName, String)>, EngineError> {
        let databases_in = |dir: &Path| -> std::io::Result<Vec<String>> {
            Ok(std::fs::read_dir(dir)?
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .filter_map(|e| paths::name_of(&e.path()))
                .collect())
        };
        let databases = databases_in(root).map_err(|e| io_err(&format!("reading the attached warehouse {}", root.display()), e))?;
        let rename = match (alias, databases.as_slice()) {
            (Some(alias), [original]) => Some((original.clone(), alias.to_string())),
            (Some(alias), _) => {
                return Err(EngineError::new(format!(
                    "`alias: {alias}` names one database, and {} holds {}: {}",
                    root.display(),
                    databases.len(),
                    databases.join(", ")
                )));
            }
            (None, _) => None,
        };
        let mut own: Vec<String> = databases_in(&self.root).unwrap_or_default();
        own.push(self.ctx.state().config().options().catalog.default_catalog.clone());
        let mut attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        for db in &databases {
            let name = rename.as_ref().map_or(db.clone(), |(_, alias)| alias.clone());
            if own.contains(&name) || attached.contains_key(&name) {
                return Err(EngineError::new(format!(
                    "database `{name}` of {} is already in the target's warehouse or another attached one; set `alias:` to read it under another name",
                    root.display()
                )));
            }
            attached.insert(name, root.to_path_buf());
        }
        drop(attached);
        self.load_root(root, rename.as_ref().map(|(from, to)| (from.as_str(), to.as_str())))
    }

    /// Registers the relations of the warehouse at `root`, renaming database `from` to `to`.
    fn load_root(&self, root: &Path, rename: Option<(&str, &str)>) -> Result<Vec<(RelationName, String)>, EngineError> {
        let own = root == self.root;
        let mut views: Vec<(RelationName, String)> = Vec::new();
        let mut broken = Vec::new();
        let dirs = |p: &Path| -> Vec<(PathBuf, String)> {
            let mut v: Vec<(PathBuf, String)> = std::fs::read_dir(p)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .filter_map(|p| paths::name_of(&p).map(|n| (p, n)))
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        for (db, database) in dirs(root) {
            let database = match rename {
                Some((from, to)) if from == database => to.to_string(),
                _ => database,
            };
            for (schema_dir, schema) in dirs(&db) {
                self.ensure_schema(&database, &schema);
                for (rel, name) in dirs(&schema_dir) {
                    let r = RelationName { database: database.clone(), schema: schema.clone(), name };
                    if let Some(v) = Self::current_version(&rel) {
                        if self.writes && own {
                            Self::remove_old_versions(&rel, v);
                        }
                        if let Err(e) = self.register_version(&r, &rel, v) {
                            broken.push((r, e.message));
                        }
                    } else if let Ok(text) = std::fs::read_to_string(rel.join(VIEW_FILE))
                        && let Some(sql) =
                            serde_json::from_str::<Json>(&text).ok().and_then(|j| j.get("sql").and_then(Json::as_str).map(str::to_string))
                    {
                        views.push((r, sql));
                    }
                }
            }
        }
        // Views may select from views: register until no progress.
        while !views.is_empty() {
            let before = views.len();
            views.retain(|(r, sql)| self.create_view(r, sql).is_err());
            if views.len() == before {
                break; // the rest refer to relations that no longer exist; they stay on disk
            }
        }
        if !own {
            broken.extend(views.into_iter().map(|(r, _)| (r, "a view of an attached warehouse that reads what is not there".to_string())));
        }
        Ok(broken)
    }

    /// Deletes the versions of a table kiln no longer needs: those older than the one before
    /// the current (a reader that opened the warehouse before the last publish still reads
    /// that one), and unpublished ones left by a killed build. Only the writer calls this, and
    /// only in a directory kiln made (it holds the table pointer).
    fn remove_old_versions(dir: &Path, current: u64) {
        Self::stale_versions(dir, current).iter().for_each(|v| {
            let _ = std::fs::remove_dir_all(v);
        });
    }

    /// The version directories of `dir` older than the one before `current`, and any newer
    /// than `current` (partial versions of a killed build). None unless the table is
    /// published.
    fn stale_versions(dir: &Path, current: u64) -> Vec<PathBuf> {
        if !dir.join(TABLE_POINTER).is_file() {
            return vec![];
        }
        let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
        rd.filter_map(Result::ok)
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_prefix('v').and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| v + 1 < current || v > current) && e.path().is_dir()
            })
            .map(|e| e.path())
            .collect()
    }

    /// Removes `stale` (listed when its table was published) on the runtime's blocking pool,
    /// off the model's path: unlinking a version takes about 0.3 ms here. Anything that
    /// creates or deletes version directories first waits for it ([`Self::settle_removals`]);
    /// so does dropping the engine. A process killed first leaves them to the next publish or
    /// load of the warehouse.
    fn remove_in_background(&self, stale: Vec<PathBuf>) {
        if !stale.is_empty() {
            let removal = self.rt.spawn_blocking(move || {
                stale.iter().for_each(|v| {
                    let _ = std::fs::remove_dir_all(v);
                })
            });
            self.removing.lock().unwrap_or_else(|e| e.into_inner()).push(removal);
        }
    }

    /// Waits for the removals still running, so that none removes a directory made after it
    /// (a table dropped and written again gets `v1` again). The lock is held while waiting:
    /// no other thread passes here before they are done.
    fn settle_removals(&self) {
        let mut removing = self.removing.lock().unwrap_or_else(|e| e.into_inner());
        for removal in removing.drain(..) {
            let _ = self.block(removal);
        }
    }

    fn create_view(&self, r: &RelationName, sql: &str) -> Result<(), EngineError> {
        self.plan_view(r, sql)?;
        self.replaced(r);
        Ok(())
    }

    /// Plans `sql` and registers it as the view `r` (without re-planning its readers).
    fn plan_view(&self, r: &RelationName, sql: &str) -> Result<(), EngineError> {
        self.ensure_schema(&r.database, &r.schema);
        let state = self.ctx.state();
        let (plan, reads) = self.block(view_memo::plan(parse(&state, sql)?, &state)).map_err(df_err)?;
        let view = datafusion::catalog::view::ViewTable::new(plan, Some(sql.to_string()));
        let _ = self.ctx.deregister_table(table_ref(r));
        self.ctx.register_table(table_ref(r), Arc::new(view)).map_err(df_err)?;
        let def = ViewDef { relation: r.clone(), sql: sql.to_string(), reads };
        self.views.lock().unwrap_or_else(|e| e.into_inner()).insert(view_memo::key(&r.database, &r.schema, &r.name), def);
        Ok(())
    }

    /// Writes the result of `df` as the next version of `r` and publishes it, unless a check
    /// finds offending rows in it.
    fn write_table(&self, r: &RelationName, df: DataFrame, checks: &[Check]) -> Result<u64, EngineError> {
        self.settle_removals();
        let dir = self.create_rel_dir(r)?;
        let mut next = Self::current_version(&dir).unwrap_or(0) + 1;
        // Skip past partial versions a killed build may have left.
        while dir.join(format!("v{next}")).exists() {
            let _ = std::fs::remove_dir_all(dir.join(format!("v{next}")));
            if dir.join(format!("v{next}")).exists() {
                next += 1;
            } else {
                break;
            }
        }
        let vdir = dir.join(format!("v{next}"));
        std::fs::create_dir_all(&vdir).map_err(|e| io_err("creating a table version", e))?;
        let file = vdir.join("part-0.parquet");
        let df = types::portable(df)?;
        let options = self.writer_options(df.schema());
        let written = self
            .block_cancellable(df.write_parquet(
                &file.to_string_lossy(),
                DataFrameWriteOptions::new().with_single_file_output(true),
                Some(options),
            ))
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&vdir);
                df_err(e)
            })?;
        let rows = count_rows(&written);
        if let Err(e) = self.run_checks(&vdir, checks) {
            let _ = std::fs::remove_dir_all(&vdir);
            return Err(e);
        }
        write_atomic(&dir.join(TABLE_POINTER), &serde_json::json!({"version": next, "format": "parquet"}).to_string())?;
        let _ = std::fs::remove_file(dir.join(VIEW_FILE));
        self.register_version(r, &dir, next)?;
        self.remove_in_background(Self::stale_versions(&dir, next));
        Ok(rows)
    }

    /// How a warehouse table is written: the session's Parquet options, with dictionary encoding
    /// only for text and binary columns. Parquet's writer interns every value of a dictionary
    /// column until the dictionary outgrows a page, so numbers and timestamps (mostly distinct
    /// in fact tables) cost a hash lookup per value before it gives up: 27% of the time of
    /// copying 1M orders. `DATAFUSION_EXECUTION_PARQUET_DICTIONARY_ENABLED` still decides for
    /// every column when set.
    fn writer_options(&self, schema: &datafusion::common::DFSchema) -> datafusion::config::TableParquetOptions {
        use datafusion::arrow::datatypes::DataType;
        let mut options = self.ctx.state_ref().read().default_table_options().parquet;
        if std::env::var_os("DATAFUSION_EXECUTION_PARQUET_DICTIONARY_ENABLED").is_some() {
            return options;
        }
        for field in schema.fields() {
            let text = matches!(
                field.data_type(),
                DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Utf8View
                    | DataType::Binary
                    | DataType::LargeBinary
                    | DataType::BinaryView
                    | DataType::Dictionary(..)
            );
            if !text {
                options.column_specific_options.entry(field.name().clone()).or_default().dictionary_enabled = Some(false);
            }
        }
        options
    }

    /// Runs `checks` against a written, unpublished version.
    fn run_checks(&self, vdir: &Path, checks: &[Check]) -> Result<(), EngineError> {
        if checks.is_empty() {
            return Ok(());
        }
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let staged = format!("__kiln_staged_{}", SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        self.block(self.ctx.register_parquet(staged.as_str(), format!("{}/", vdir.display()), ParquetReadOptions::default()))
            .map_err(df_err)?;
        let result = (|| {
            for check in checks {
                let sql = check.violations.replace("{relation}", &quote_ident(&staged, '"'));
                let t = self.query(&sql, None)?;
                let n = t.rows.first().and_then(|r| r.first()).and_then(Json::as_u64).unwrap_or(0);
                if n > 0 {
                    return Err(EngineError::of_kind(
                        ErrorKind::Violation,
                        format!(
                            "constraint {} is violated by {n} row{}; the previous version of the table is kept",
                            check.name,
                            if n == 1 { "" } else { "s" }
                        ),
                    ));
                }
            }
            Ok(())
        })();
        let _ = self.ctx.deregister_table(staged.as_str());
        result
    }

    /// Makes `scheme://bucket` locations readable (and writable) through `store`.
    pub fn register_object_store(&self, url: &url::Url, store: Arc<dyn object_store::ObjectStore>) {
        self.ctx.register_object_store(url, store);
    }

    /// Registers a source read from files (`external_location`): CSV, Parquet or (ND)JSON,
    /// inferred from the extension unless `format` says otherwise.
    pub fn register_external(&self, r: &RelationName, location: &str, format: Option<&str>) -> Result<(), EngineError> {
        self.ensure_schema(&r.database, &r.schema);
        let lower = location.to_ascii_lowercase();
        let format = format.map(str::to_ascii_lowercase).unwrap_or_else(|| {
            if lower.ends_with(".parquet") || lower.ends_with(".pq") {
                "parquet".into()
            } else if lower.ends_with(".json") || lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
                "json".into()
            } else {
                "csv".into()
            }
        });
        // Hive-style directories (`dt=2024-01-01/...`) expose their keys as text columns.
        let partitions: Vec<(String, datafusion::arrow::datatypes::DataType)> =
            hive_partitions(Path::new(location)).into_iter().map(|k| (k, datafusion::arrow::datatypes::DataType::Utf8)).collect();
        let register = || match format.as_str() {
            "parquet" => self.block(self.ctx.register_parquet(
                table_ref(r),
                location,
                ParquetReadOptions::default().table_partition_cols(partitions),
            )),
            "json" | "ndjson" | "jsonl" => {
                let ext = Path::new(location).extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_else(|| ".json".into());
                self.block(self.ctx.register_json(
                    table_ref(r),
                    location,
                    JsonReadOptions::default().file_extension(&ext).table_partition_cols(partitions),
                ))
            }
            _ => {
                let ext = Path::new(location).extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_else(|| ".csv".into());
                self.block(self.ctx.register_csv(
                    table_ref(r),
                    location,
                    CsvReadOptions::new().has_header(true).file_extension(&ext).table_partition_cols(partitions),
                ))
            }
        };
        self.replace_with(r, || register().map_err(df_err))
    }

    fn query_in(&self, ctx: &SessionContext, sql: &str, limit: Option<usize>) -> Result<QueryTable, EngineError> {
        let mut df = self.block(plan(ctx, sql))?;
        if let Some(n) = limit {
            df = df.limit(0, Some(n)).map_err(df_err)?;
        }
        let schema = df.schema().as_arrow().clone();
        let batches = self.block_cancellable(df.collect()).map_err(df_err)?;
        Self::batches_to_table(&batches, &schema)
    }

    fn batches_to_table(batches: &[RecordBatch], schema: &datafusion::arrow::datatypes::Schema) -> Result<QueryTable, EngineError> {
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut rows = Vec::new();
        for batch in batches {
            let mut buf = Vec::new();
            {
                let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut buf);
                writer.write(batch).map_err(df_err)?;
                writer.finish().map_err(df_err)?;
            }
            let objects: Vec<serde_json::Map<String, Json>> =
                if buf.is_empty() { vec![] } else { serde_json::from_slice(&buf).map_err(|e| EngineError::new(e.to_string()))? };
            for o in objects {
                rows.push(columns.iter().map(|c| o.get(c).cloned().unwrap_or(Json::Null)).collect());
            }
        }
        Ok(QueryTable { columns, rows })
    }
}

/// Partition keys of a Hive-style directory: `dir/a=1/b=x/file` gives `[a, b]`.
fn hive_partitions(dir: &Path) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cur = dir.to_path_buf();
    while cur.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&cur)
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default();
        entries.sort();
        let Some(first) = entries.into_iter().find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains('='))) else { break };
        let name = first.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        keys.push(name.split('=').next().unwrap_or_default().to_string());
        cur = first;
    }
    keys
}

fn count_rows(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .filter_map(|b| {
            b.column(0).as_any().downcast_ref::<datafusion::arrow::array::UInt64Array>().map(|a| a.iter().flatten().sum::<u64>())
        })
        .sum()
}

impl Engine for DataFusionEngine {
    fn name(&self) -> &str {
        "datafusion"
    }

    fn execute(&self, sql: &str) -> Result<Option<u64>, EngineError> {
        // A statement may change any relation.
        self.memo.clear();
        match self.run_changes(sql)? {
            Some(rows) => Ok(Some(rows)),
            None => self.execute_plain(sql),
        }
    }

    fn query(&self, sql: &str, limit: Option<usize>) -> Result<QueryTable, EngineError> {
        // `run_query` and `statement` blocks may change the warehouse too.
        match self.run_changes(sql)? {
            Some(_) => {
                self.memo.clear();
                Ok(QueryTable::default())
            }
            None => self.query_in(&self.ctx, sql, limit),
        }
    }

    fn query_tests(&self, queries: &[String]) -> Vec<Result<QueryTable, EngineError>> {
        let ctx = self.tests_ctx();
        queries.iter().map(|q| self.query_in(ctx, q, None)).collect()
    }

    fn describe(&self, r: &RelationName) -> Result<Option<Vec<(String, String)>>, EngineError> {
        match self.block(self.ctx.table(table_ref(r))) {
            Ok(df) => Ok(Some(df.schema().fields().iter().map(|f| (f.name().clone(), types::sql_name(f.data_type()))).collect())),
            Err(_) => Ok(None),
        }
    }

    fn create_schema(&self, database: &str, schema: &str) -> Result<(), EngineError> {
        self.must_write("creating a schema")?;
        self.ensure_schema(database, schema);
        self.create_schema_dir(database, schema).map(|_| ())
    }

    fn query_columns(&self, sql: &str) -> Result<Vec<(String, String)>, EngineError> {
        Ok(self.query_schema(sql)?.fields().iter().map(|f| (f.name().clone(), types::sql_name(f.data_type()))).collect())
    }

    fn materialize(&self, r: &RelationName, what: &Materialization, checks: &[Check]) -> Result<Option<u64>, EngineError> {
        self.must_write(&format!("building {}", table_ref(r)))?;
        self.create_schema(&r.database, &r.schema)?;
        match what {
            Materialization::View { sql, .. } => {
                // Planned before anything is replaced: a broken view keeps the working relation.
                self.create_view(r, sql)?;
                let dir = self.create_rel_dir(r)?;
                write_atomic(&dir.join(VIEW_FILE), &serde_json::json!({"sql": sql}).to_string())?;
                if dir.join(TABLE_POINTER).exists() {
                    self.settle_removals();
                    Self::remove_old_versions(&dir, u64::MAX);
                    let _ = std::fs::remove_file(dir.join(TABLE_POINTER));
                }
                Ok(None)
            }
            Materialization::Table { sql, .. } => {
                let df = self.block(plan(&self.ctx, sql))?;
                self.write_table(r, df, checks).map(Some)
            }
            Materialization::External { sql, location, format } => {
                let df = types::portable(self.block(plan(&self.ctx, sql))?)?;
                if location.contains("://") {
                    // One object PUT: readers see the old object or the new one.
                    let opts = DataFrameWriteOptions::new().with_single_file_output(true);
                    let written = match format.as_str() {
                        "parquet" => self.block(df.write_parquet(location, opts, None)),
                        "csv" => self.block(df.write_csv(location, opts, None)),
                        "json" | "ndjson" => self.block(df.write_json(location, opts, None)),
                        other => return Err(EngineError::new(format!("external format `{other}` is not one of parquet, csv, json"))),
                    }
                    .map_err(df_err)?;
                    self.register_external(r, location, Some(format))?;
                    return Ok(Some(count_rows(&written)));
                }
                let path = Path::new(location);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| io_err("creating the external location", e))?;
                }
                // Write next to the target, then rename: readers see the old file or the new one.
                let tmp = path.with_file_name(format!(
                    ".{}.kiln-tmp",
                    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
                ));
                let tmp_str = tmp.to_string_lossy().into_owned();
                let opts = DataFrameWriteOptions::new().with_single_file_output(true);
                let written = match format.as_str() {
                    "parquet" => self.block(df.write_parquet(&tmp_str, opts, None)),
                    "csv" => self.block(df.write_csv(&tmp_str, opts, None)),
                    "json" | "ndjson" => self.block(df.write_json(&tmp_str, opts, None)),
                    other => return Err(EngineError::new(format!("external format `{other}` is not one of parquet, csv, json"))),
                }
                .map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    df_err(e)
                })?;
                std::fs::rename(&tmp, path).map_err(|e| io_err("publishing the external file", e))?;
                self.register_external(r, location, Some(format))?;
                Ok(Some(count_rows(&written)))
            }
            Materialization::Incremental { sql, strategy, on_schema_change, .. } => {
                let Some(existing) = self.describe(r)? else {
                    let df = self.block(plan(&self.ctx, sql))?;
                    return self.write_table(r, df, checks).map(Some);
                };
                let incoming: Vec<String> = self.block(plan(&self.ctx, sql))?.schema().fields().iter().map(|f| f.name().clone()).collect();
                let old: Vec<String> = existing.iter().map(|(c, _)| c.clone()).collect();
                let combined =
                    super::sql::incremental(&quoted(r), sql, strategy, &old, &incoming, *on_schema_change).map_err(EngineError::new)?;
                let new_rows = self
                    .block(async { self.ctx.sql(&format!("select count(*) from ({sql}) as kiln_new")).await?.collect().await })
                    .map_err(df_err)?;
                let df = self.block(plan(&self.ctx, &combined))?;
                self.write_table(r, df, checks)?;
                let n = new_rows
                    .first()
                    .and_then(|b| b.column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().map(|a| a.value(0) as u64));
                Ok(n)
            }
            Materialization::Snapshot { sql, config, exprs } => self.snapshot(r, sql, config, exprs, checks),
        }
    }

    fn load_seed(&self, seed: &SeedLoad) -> Result<u64, EngineError> {
        self.must_write("loading a seed")?;
        self.create_schema(&seed.relation.database, &seed.relation.schema)?;
        let df = self.seed_frame(seed)?;
        self.write_table(&seed.relation, df, &[]).map_err(|e| match bad_seed_line(&seed.path, seed.delimiter, &e.message) {
            Some(line) => {
                // The reader's own line number counts within a chunk: leave it out.
                let chunk_line = regex::Regex::new(r" (for|at) line \d+").expect("static regex");
                EngineError::new(format!("line {line} of the seed: {}", chunk_line.replace_all(&e.message, "")))
            }
            None => e,
        })
    }

    fn cancel_on(&self, flag: Arc<std::sync::atomic::AtomicBool>) {
        let _ = self.cancel.set(flag);
    }

    fn supports(&self, capability: Capability) -> bool {
        matches!(capability, Capability::AtomicPublish | Capability::ExternalSources | Capability::SharedTestWork)
    }
}

/// Opens the warehouse of `target` (a DataFusion adapter) and registers what `setup` names:
/// object stores, then files read as relations, then the warehouse's tables.
/// The target's `attach` list (dbt-duckdb's setting): other kiln warehouses, read-only, each
/// `{path, alias}` (`path` a warehouse directory, or a `.duckdb` path as a target's `path`).
fn attach_warehouses(
    engine: &DataFusionEngine,
    target: &Target,
    project_root: &Path,
    file: &str,
) -> Result<Vec<(RelationName, String)>, Diagnostic> {
    let mut broken = Vec::new();
    let Some(entries) = target.settings.get("attach") else { return Ok(broken) };
    let bad = |message: String| {
        Diagnostic::error(Code::BadProfile, format!("target `{}`: {message}", target.name))
            .with_file(file.to_string())
            .with_help("write `attach:` as a list of `{path: <another warehouse or .duckdb path>, alias: <database name>}`")
    };
    for entry in entries.as_array().ok_or_else(|| bad("`attach` must be a list".into()))? {
        let path = entry.get("path").and_then(Json::as_str).ok_or_else(|| bad(format!("an `attach` entry has no `path`: {entry}")))?;
        if let Some(kind) = entry.get("type").and_then(Json::as_str).filter(|t| *t != "duckdb") {
            return Err(bad(format!("`attach` of `{path}` has `type: {kind}`; the embedded engine attaches kiln warehouses only")));
        }
        let mut other = target.clone();
        other.settings.insert("path".into(), Json::from(path));
        let root = other.warehouse_dir(project_root);
        let alias = entry.get("alias").and_then(Json::as_str);
        broken.extend(engine.attach(&root, alias).map_err(|e| bad(format!("cannot attach {path}: {e}")))?);
    }
    Ok(broken)
}

pub fn open_target(target: &Target, setup: Setup) -> Result<(Arc<DataFusionEngine>, Vec<Diagnostic>), Diagnostic> {
    let mut warnings = Vec::new();
    let root = target.warehouse_dir(setup.project_root);
    let file = target.profiles_path.as_ref().map_or("profiles.yml".to_string(), |p| p.display().to_string());
    let memory = MemorySettings::from_target(&target.settings, setup.project_root).map_err(|e| {
        Diagnostic::error(Code::BadProfile, format!("target `{}`: {e}", target.name))
            .with_file(file.clone())
            .with_help("write memory_limit as a size such as 4GB or 512MiB (or pass --memory-limit)")
    })?;
    let engine = DataFusionEngine::open(&root, &target.database, &target.schema, &memory, target.adapter.semantics, setup.writer)
        .map_err(|e| Diagnostic::error(Code::Io, format!("cannot open the warehouse {}: {e}", root.display())))?;
    let mut registered = std::collections::BTreeSet::new();
    for location in &setup.stores {
        let Ok(url) = url::Url::parse(location) else { continue };
        let key = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
        let Ok(bucket) = url::Url::parse(&key) else { continue };
        if !registered.insert(key.clone()) {
            continue;
        }
        match object_stores::store_for(&url, &target.settings, setup.env) {
            Ok(store) => engine.register_object_store(&bucket, store),
            Err(e) => warnings.push(Diagnostic::warning(Code::Io, format!("cannot reach {key}: {e}")).with_help(
                "set the store's endpoint and credentials in the target (s3_endpoint, s3_access_key_id, ...) or the environment (AWS_*, GOOGLE_*, AZURE_*)",
            )),
        }
    }
    for external in setup.externals {
        let External { relation, location, format, declared } = external;
        match declared {
            // A missing file is not fatal here: only models that read the source fail, with the
            // engine's message naming the relation.
            Some((what, label)) => {
                if let Err(e) = engine.register_external(&relation, &location, format.as_deref()) {
                    warnings.push(
                        Diagnostic::warning(Code::Io, format!("cannot read {what} from {location}: {e}"))
                            .with_label(label)
                            .with_help("check that the file exists and `external_location` (with `{name}`) points at it"),
                    );
                }
            }
            // Before its first build an external model's file does not exist yet; it is
            // registered when written.
            None if location.contains("://") || Path::new(&location).exists() => {
                let _ = engine.register_external(&relation, &location, format.as_deref());
            }
            None => {}
        }
    }
    // Attached first: views of this warehouse may read them.
    let mut broken = attach_warehouses(&engine, target, setup.project_root, &file)?;
    broken.extend(
        engine.load_warehouse().map_err(|e| Diagnostic::error(Code::Io, format!("cannot load the warehouse {}: {e}", root.display())))?,
    );
    for (r, why) in broken {
        warnings.push(
            Diagnostic::warning(Code::Io, format!("table {}.{}.{} cannot be read and is left out: {why}", r.database, r.schema, r.name))
                .with_help("rebuild it (`kiln run -s <model>`); the rest of the warehouse is unaffected"),
        );
    }
    Ok((Arc::new(engine), warnings))
}
