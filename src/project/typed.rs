//! Typed node configs: the merged JSON config of a model, seed, snapshot or test read once into
//! the values the run layer uses, with every value of the wrong shape reported. A name kiln
//! does not know (`materialized='tabel'`) is kept as [`Materialized::Custom`] /
//! [`Strategy::Custom`]: the project may define it in a macro; the parse phase decides.

use super::config::{ConfigMap, json_truthy};
use serde_json::Value as Json;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Materialized {
    View,
    Table,
    Incremental,
    Ephemeral,
    /// Files at a location (dbt-duckdb's `external`).
    External,
    MaterializedView,
    Seed,
    Snapshot,
    Test,
    /// A name kiln does not build itself: a project's `{% materialization %}`, or a mistake.
    Custom(String),
}

impl Materialized {
    pub const KNOWN: &[&str] = &["view", "table", "incremental", "ephemeral", "external", "materialized_view", "seed", "snapshot", "test"];

    pub fn parse(name: &str) -> Materialized {
        match name {
            "view" => Materialized::View,
            "table" => Materialized::Table,
            "incremental" => Materialized::Incremental,
            "ephemeral" => Materialized::Ephemeral,
            "external" => Materialized::External,
            "materialized_view" => Materialized::MaterializedView,
            "seed" => Materialized::Seed,
            "snapshot" => Materialized::Snapshot,
            "test" => Materialized::Test,
            other => Materialized::Custom(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Materialized::View => "view",
            Materialized::Table => "table",
            Materialized::Incremental => "incremental",
            Materialized::Ephemeral => "ephemeral",
            Materialized::External => "external",
            Materialized::MaterializedView => "materialized_view",
            Materialized::Seed => "seed",
            Materialized::Snapshot => "snapshot",
            Materialized::Test => "test",
            Materialized::Custom(name) => name,
        }
    }
}

/// dbt's `incremental_strategy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    Append,
    Merge,
    DeleteInsert,
    InsertOverwrite,
    Microbatch,
    /// A project's `get_incremental_<name>_sql` macro, or a mistake.
    Custom(String),
}

impl Strategy {
    pub const KNOWN: &[&str] = &["append", "merge", "delete+insert", "insert_overwrite", "microbatch"];

    pub fn parse(name: &str) -> Strategy {
        match name {
            "append" => Strategy::Append,
            "merge" => Strategy::Merge,
            "delete+insert" => Strategy::DeleteInsert,
            "insert_overwrite" => Strategy::InsertOverwrite,
            "microbatch" => Strategy::Microbatch,
            other => Strategy::Custom(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Strategy::Append => "append",
            Strategy::Merge => "merge",
            Strategy::DeleteInsert => "delete+insert",
            Strategy::InsertOverwrite => "insert_overwrite",
            Strategy::Microbatch => "microbatch",
            Strategy::Custom(name) => name,
        }
    }

    /// What to do about strategy `name` that the target lacks: did-you-mean among the target's
    /// `available` strategies (or their list), or define it.
    pub fn help(name: &str, available: &[&str]) -> String {
        format!("{} (or define the macro `{}`: a custom strategy)", choices(name, available), Strategy::macro_name(name))
    }

    /// The macro a project defines for a strategy of its own (dbt's naming).
    pub fn macro_name(name: &str) -> String {
        format!("get_incremental_{name}_sql")
    }
}

/// dbt's `on_schema_change`: what an incremental run does when the query's columns differ from
/// the table's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SchemaChange {
    /// Keep the table's columns; new ones are dropped.
    #[default]
    Ignore,
    /// Stop with an error naming the differences.
    Fail,
    /// Add new columns (NULL in existing rows); keep removed ones (NULL in new rows).
    AppendNewColumns,
    /// Make the table's columns exactly the query's.
    SyncAllColumns,
}

impl SchemaChange {
    pub const KNOWN: &[&str] = &["ignore", "fail", "append_new_columns", "sync_all_columns"];

    pub fn parse(s: &str) -> Option<SchemaChange> {
        Some(match s {
            "ignore" => SchemaChange::Ignore,
            "fail" => SchemaChange::Fail,
            "append_new_columns" => SchemaChange::AppendNewColumns,
            "sync_all_columns" => SchemaChange::SyncAllColumns,
            _ => return None,
        })
    }
}

/// BigQuery's `partition_by`, as dbt-bigquery reads it (names lowercased).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionBy {
    pub field: String,
    /// `date` (default), `timestamp`, `datetime` or `int64`.
    pub data_type: String,
    /// `day` (default), `hour`, `month` or `year`.
    pub granularity: String,
    /// An `int64` partitioning's `range`: start, end, interval.
    pub range: Option<(i64, i64, i64)>,
    pub time_ingestion_partitioning: bool,
    pub copy_partitions: bool,
}

/// How the warehouse lays out and labels a table (BigQuery's DDL clauses and `options`). An
/// adapter that does not apply one of them says so at parse time (E118).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TableOptions {
    pub partition_by: Option<PartitionBy>,
    pub cluster_by: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub require_partition_filter: Option<bool>,
    /// A number, as written.
    pub partition_expiration_days: Option<String>,
    /// A number, as written.
    pub hours_to_expiration: Option<String>,
    pub kms_key_name: Option<String>,
}

impl std::fmt::Debug for TableOptions {
    /// Only what is set, so plans of models without options stay short.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("TableOptions");
        if let Some(p) = &self.partition_by {
            d.field("partition_by", p);
        }
        if !self.cluster_by.is_empty() {
            d.field("cluster_by", &self.cluster_by);
        }
        if !self.labels.is_empty() {
            d.field("labels", &self.labels);
        }
        for (name, value) in [
            ("require_partition_filter", self.require_partition_filter.map(|b| b.to_string())),
            ("partition_expiration_days", self.partition_expiration_days.clone()),
            ("hours_to_expiration", self.hours_to_expiration.clone()),
            ("kms_key_name", self.kms_key_name.clone()),
        ] {
            if let Some(v) = value {
                d.field(name, &v);
            }
        }
        d.finish()
    }
}

/// A `microbatch` incremental model's configs (dbt's `event_time`, `batch_size`, `begin`,
/// `lookback`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MicrobatchConfig {
    /// The model's own time column: its batches are windows of it.
    pub event_time: String,
    /// `hour`, `day`, `month` or `year`.
    pub batch_size: String,
    /// Where the first build starts (`2024-01-01` or `2024-01-01 06:00:00`).
    pub begin: String,
    /// Batches before the current one that an incremental run rebuilds too.
    pub lookback: u32,
}

impl MicrobatchConfig {
    pub const BATCH_SIZES: &[&str] = &["hour", "day", "month", "year"];

    /// The configs of a microbatch model, or what is missing or wrong.
    pub fn read(map: &ConfigMap) -> Result<MicrobatchConfig, String> {
        let text = |k: &str| map.get(k).and_then(Json::as_str).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let missing = |k: &str| format!("the `microbatch` strategy needs `{k}`");
        let batch_size = text("batch_size").ok_or_else(|| missing("batch_size"))?.to_ascii_lowercase();
        if !Self::BATCH_SIZES.contains(&batch_size.as_str()) {
            return Err(format!("`batch_size` is `{batch_size}`; {}", choices(&batch_size, Self::BATCH_SIZES)));
        }
        let lookback = match map.get("lookback") {
            None | Some(Json::Null) => 1,
            Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| format!("`lookback` is {v}, not a whole number"))?,
        };
        Ok(MicrobatchConfig {
            event_time: text("event_time").ok_or_else(|| missing("event_time"))?,
            batch_size,
            begin: text("begin").ok_or_else(|| missing("begin"))?,
            lookback,
        })
    }
}

/// Who may read a relation: dbt's `grants` (privilege -> grantees) and dbt-bigquery's
/// `grant_access_to` (datasets, as `(project, dataset)`, a view is authorized in).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub grants: Vec<(String, Vec<String>)>,
    pub grant_access_to: Vec<(String, String)>,
}

impl Access {
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty() && self.grant_access_to.is_empty()
    }
}

/// The typed config of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub materialized: Materialized,
    /// `None`: the adapter's default.
    pub incremental_strategy: Option<Strategy>,
    pub unique_key: Vec<String>,
    pub on_schema_change: SchemaChange,
    /// `Some(false)` keeps an incremental model incremental under `--full-refresh`.
    pub full_refresh: Option<bool>,
    pub contract_enforced: bool,
    /// `persist_docs`: (relation, columns).
    pub persist_docs: (bool, bool),
    pub table: TableOptions,
    /// `insert_overwrite`'s static `partitions` (SQL literals).
    pub partitions: Vec<String>,
    /// A `microbatch` model's configs, when they are complete.
    pub microbatch: Option<MicrobatchConfig>,
    pub pre_hook: Vec<String>,
    pub post_hook: Vec<String>,
    /// A snapshot's configs (`materialized: snapshot`), when they are complete.
    pub snapshot: Option<SnapshotConfig>,
    pub access: Access,
    pub static_analysis: StaticAnalysis,
}

/// How much static analysis reports for a node (`static_analysis`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StaticAnalysis {
    /// Not analyzed; its columns are unknown to its children.
    Off,
    /// What is certain: a column none of its inputs has, a function its dialect lacks, types
    /// its warehouse does not combine, ...
    #[default]
    Baseline,
    /// Also a warning for each model whose columns cannot be told, with why.
    Strict,
}

impl StaticAnalysis {
    pub const KNOWN: &[&str] = &["strict", "baseline", "off"];

    pub fn parse(value: &str) -> Option<StaticAnalysis> {
        match value.to_ascii_lowercase().as_str() {
            "off" => Some(StaticAnalysis::Off),
            "baseline" => Some(StaticAnalysis::Baseline),
            "strict" => Some(StaticAnalysis::Strict),
            _ => None,
        }
    }

    /// `--static-analysis MODE` (clap has checked the value).
    pub fn parse_flag(value: Option<&str>) -> Option<StaticAnalysis> {
        value.and_then(StaticAnalysis::parse)
    }
}

/// How a snapshot tells that a row changed (dbt's `strategy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotStrategy {
    /// The row's `updated_at` is newer than the snapshot's `dbt_valid_from`.
    Timestamp { updated_at: String },
    /// A checked column differs (NULLs compared as values); `updated_at`, when set, stamps the
    /// new version instead of the snapshot time.
    Check { cols: CheckCols, updated_at: Option<String> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckCols {
    All,
    List(Vec<String>),
}

/// What a snapshot does with a row that is gone from its source (`hard_deletes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HardDeletes {
    Ignore,
    Invalidate,
    NewRecord,
}

/// The names of a snapshot's meta columns (`snapshot_meta_column_names`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaColumns {
    pub valid_from: String,
    pub valid_to: String,
    pub scd_id: String,
    pub updated_at: String,
    pub is_deleted: String,
}

/// A snapshot's configs, read as dbt-core's snapshot materialization reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// SQL expressions (usually column names).
    pub unique_key: Vec<String>,
    /// `unique_key` was written as a list: the staging columns are `dbt_unique_key_1`, ...
    pub unique_key_is_list: bool,
    pub strategy: SnapshotStrategy,
    pub hard_deletes: HardDeletes,
    /// `dbt_valid_to_current`: an SQL expression current rows have as `dbt_valid_to`.
    pub valid_to_current: Option<String>,
    pub columns: MetaColumns,
}

impl SnapshotConfig {
    /// Reads the snapshot configs of `map`; `None` (with the errors) when one is missing or
    /// malformed.
    fn read(map: &ConfigMap, bad: &mut dyn FnMut(&'static str, String, &str)) -> Option<SnapshotConfig> {
        let text = |key: &str| map.get(key).and_then(|v| v.as_str().map(str::to_string));
        let (unique_key, unique_key_is_list) = match map.get("unique_key") {
            Some(Json::String(s)) if !s.trim().is_empty() => (vec![s.clone()], false),
            Some(Json::Array(items)) if !items.is_empty() && items.iter().all(Json::is_string) => {
                (items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect(), true)
            }
            _ => {
                bad(
                    "unique_key",
                    "a snapshot needs `unique_key`: the column (or list of columns) that identifies a row".into(),
                    "add `unique_key: id` (or `unique_key: [a, b]`) to its config",
                );
                return None;
            }
        };
        let updated_at = text("updated_at");
        let strategy = match text("strategy").as_deref() {
            Some("timestamp") => match updated_at {
                Some(updated_at) => SnapshotStrategy::Timestamp { updated_at },
                None => {
                    bad(
                        "updated_at",
                        "a snapshot with `strategy: timestamp` needs `updated_at`: the column that says when a row last changed".into(),
                        "add `updated_at: <timestamp column>`, or use `strategy: check` with `check_cols`",
                    );
                    return None;
                }
            },
            Some("check") => {
                let cols = match map.get("check_cols") {
                    Some(Json::String(s)) if s == "all" => CheckCols::All,
                    Some(Json::Array(items)) if !items.is_empty() && items.iter().all(Json::is_string) => {
                        CheckCols::List(items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect())
                    }
                    other => {
                        let what = other.map_or("missing".to_string(), |v| format!("{v}"));
                        bad(
                            "check_cols",
                            format!("a snapshot with `strategy: check` needs `check_cols` (`all` or a list of columns); it is {what}"),
                            "add `check_cols: all` or `check_cols: [status, amount]`",
                        );
                        return None;
                    }
                };
                SnapshotStrategy::Check { cols, updated_at }
            }
            Some(other) => {
                bad(
                    "strategy",
                    format!("snapshot strategy `{other}` is not `timestamp` or `check`"),
                    "kiln runs dbt's two built-in strategies; a custom `snapshot_<name>_strategy` macro is not run",
                );
                return None;
            }
            None => {
                bad(
                    "strategy",
                    "a snapshot needs `strategy`: `timestamp` or `check`".into(),
                    "add `strategy: timestamp` with `updated_at`, or `strategy: check` with `check_cols`",
                );
                return None;
            }
        };
        let hard_deletes = match (map.get("invalidate_hard_deletes").filter(|v| !v.is_null()), text("hard_deletes").as_deref()) {
            (Some(_), Some(_)) => {
                bad(
                    "hard_deletes",
                    "`invalidate_hard_deletes` and `hard_deletes` are both set".into(),
                    "keep `hard_deletes` (`ignore`, `invalidate` or `new_record`), dbt's newer config",
                );
                return None;
            }
            (Some(v), None) => {
                if json_truthy(Some(v)).unwrap_or(false) {
                    HardDeletes::Invalidate
                } else {
                    HardDeletes::Ignore
                }
            }
            (None, None | Some("ignore")) => HardDeletes::Ignore,
            (None, Some("invalidate")) => HardDeletes::Invalidate,
            (None, Some("new_record")) => HardDeletes::NewRecord,
            (None, Some(other)) => {
                bad("hard_deletes", format!("`hard_deletes` is `{other}`"), &choices(other, &["ignore", "invalidate", "new_record"]));
                return None;
            }
        };
        let names = map.get("snapshot_meta_column_names").and_then(Json::as_object);
        let name = |key: &str| names.and_then(|n| n.get(key)).and_then(Json::as_str).map_or_else(|| key.to_string(), str::to_string);
        Some(SnapshotConfig {
            unique_key,
            unique_key_is_list,
            strategy,
            hard_deletes,
            valid_to_current: text("dbt_valid_to_current"),
            columns: MetaColumns {
                valid_from: name("dbt_valid_from"),
                valid_to: name("dbt_valid_to"),
                scd_id: name("dbt_scd_id"),
                updated_at: name("dbt_updated_at"),
                is_deleted: name("dbt_is_deleted"),
            },
        })
    }
}

/// A config value of the wrong shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeError {
    pub key: &'static str,
    pub message: String,
    pub help: String,
}

impl NodeConfig {
    /// Reads `map`; every value of the wrong shape is reported and replaced by its default.
    pub fn from_map(map: &ConfigMap) -> (NodeConfig, Vec<ShapeError>) {
        let mut errors = Vec::new();
        let mut bad = |key: &'static str, message: String, help: &str| {
            errors.push(ShapeError { key, message, help: help.to_string() });
        };
        let text = |key: &'static str, bad: &mut dyn FnMut(&'static str, String, &str)| match map.get(key) {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(s.clone()),
            Some(v) => {
                bad(key, format!("`{key}` is {v}, not a name"), "write it as a string");
                None
            }
        };
        let materialized = text("materialized", &mut bad).map_or(Materialized::View, |m| Materialized::parse(&m));
        let incremental_strategy = text("incremental_strategy", &mut bad).map(|s| Strategy::parse(&s));
        let on_schema_change = match text("on_schema_change", &mut bad) {
            None => SchemaChange::Ignore,
            Some(s) => SchemaChange::parse(&s).unwrap_or_else(|| {
                bad("on_schema_change", format!("`on_schema_change` is `{s}`"), &choices(&s, SchemaChange::KNOWN));
                SchemaChange::Ignore
            }),
        };
        let unique_key = names(map.get("unique_key")).unwrap_or_else(|v| {
            bad(
                "unique_key",
                format!("`unique_key` is {v}, not a column name or a list of them"),
                "write `unique_key: id` or `unique_key: [a, b]`",
            );
            vec![]
        });
        let cluster_by = names(map.get("cluster_by")).unwrap_or_else(|v| {
            bad("cluster_by", format!("`cluster_by` is {v}, not a column name or a list of them"), "write `cluster_by: [a, b]`");
            vec![]
        });
        let partition_by = match map.get("partition_by") {
            None | Some(Json::Null) => None,
            Some(v) => partition_by(v).or_else(|| {
                bad(
                    "partition_by",
                    format!("`partition_by` is {v}, not a partition spec"),
                    "write `partition_by: {field: created_at, data_type: timestamp, granularity: day}` (an int64 field needs `range: {start: 0, end: 100, interval: 10}`)",
                );
                None
            }),
        };
        let labels = match map.get("labels") {
            None | Some(Json::Null) => vec![],
            Some(Json::Object(o)) => o.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect(),
            Some(v) => {
                bad("labels", format!("`labels` is {v}, not a mapping"), "write `labels: {team: finance}`");
                vec![]
            }
        };
        let number = |key: &'static str, bad: &mut dyn FnMut(&'static str, String, &str)| match map.get(key) {
            None | Some(Json::Null) => None,
            Some(Json::Number(n)) => Some(n.to_string()),
            Some(Json::String(s)) if s.trim().parse::<f64>().is_ok() => Some(s.trim().to_string()),
            Some(v) => {
                bad(key, format!("`{key}` is {v}, not a number"), "write a number, e.g. `7`");
                None
            }
        };
        let table = TableOptions {
            partition_by,
            cluster_by,
            labels,
            require_partition_filter: json_truthy(map.get("require_partition_filter")),
            partition_expiration_days: number("partition_expiration_days", &mut bad),
            hours_to_expiration: number("hours_to_expiration", &mut bad),
            kms_key_name: text("kms_key_name", &mut bad),
        };
        let partitions = match map.get("partitions") {
            None | Some(Json::Null) => vec![],
            Some(Json::Array(items)) => items.iter().map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string)).collect(),
            Some(v) => {
                bad("partitions", format!("`partitions` is {v}, not a list"), "write `partitions: [\"date('2024-01-01')\"]`");
                vec![]
            }
        };
        let full_refresh = match map.get("full_refresh") {
            None | Some(Json::Null) => None,
            Some(Json::Bool(b)) => Some(*b),
            Some(v) => {
                bad("full_refresh", format!("`full_refresh` is {v}, not true or false"), "write `full_refresh: false` (or true)");
                None
            }
        };
        let contract_enforced = match map.get("contract") {
            None | Some(Json::Null) => false,
            Some(Json::Object(c)) => json_truthy(c.get("enforced")).unwrap_or(false),
            Some(v) => {
                bad("contract", format!("`contract` is {v}, not a mapping"), "write `contract: {enforced: true}`");
                false
            }
        };
        let persist_docs = match map.get("persist_docs") {
            None | Some(Json::Null) => (false, false),
            Some(Json::Object(p)) => (json_truthy(p.get("relation")).unwrap_or(false), json_truthy(p.get("columns")).unwrap_or(false)),
            Some(v) => {
                bad(
                    "persist_docs",
                    format!("`persist_docs` is {v}, not a mapping"),
                    "write `persist_docs: {relation: true, columns: true}`",
                );
                (false, false)
            }
        };
        let snapshot = if materialized == Materialized::Snapshot { SnapshotConfig::read(map, &mut bad) } else { None };
        let grants = match map.get("grants") {
            None | Some(Json::Null) => vec![],
            Some(Json::Object(o)) => o
                .iter()
                .filter_map(|(privilege, v)| {
                    let grantees = names(Some(v)).unwrap_or_else(|v| {
                        bad("grants", format!("the grantees of `{privilege}` are {v}, not names"), "write `grants: {select: [reporter]}`");
                        vec![]
                    });
                    (!grantees.is_empty()).then(|| (privilege.clone(), grantees))
                })
                .collect(),
            Some(v) => {
                bad("grants", format!("`grants` is {v}, not a mapping"), "write `grants: {select: [reporter]}`");
                vec![]
            }
        };
        let grant_access_to = match map.get("grant_access_to") {
            None | Some(Json::Null) => vec![],
            Some(Json::Array(items)) => items
                .iter()
                .filter_map(|i| {
                    let part = |k: &str| i.get(k).and_then(Json::as_str).map(str::to_string);
                    let target = part("project").zip(part("dataset"));
                    if target.is_none() {
                        bad("grant_access_to", format!("{i} is not a dataset"), "write `grant_access_to: [{project: p, dataset: d}]`");
                    }
                    target
                })
                .collect(),
            Some(v) => {
                bad(
                    "grant_access_to",
                    format!("`grant_access_to` is {v}, not a list"),
                    "write `grant_access_to: [{project: p, dataset: d}]`",
                );
                vec![]
            }
        };
        let microbatch = match incremental_strategy {
            Some(Strategy::Microbatch) if materialized == Materialized::Incremental => MicrobatchConfig::read(map)
                .map_err(|m| {
                    bad(
                        "incremental_strategy",
                        m,
                        "a microbatch model needs `event_time`, `batch_size` (hour, day, month, year) and `begin`",
                    )
                })
                .ok(),
            _ => None,
        };
        let static_analysis = match text("static_analysis", &mut bad) {
            None => StaticAnalysis::Baseline,
            Some(v) => StaticAnalysis::parse(&v).unwrap_or_else(|| {
                bad("static_analysis", format!("`static_analysis` is `{v}`"), &choices(&v, StaticAnalysis::KNOWN));
                StaticAnalysis::Baseline
            }),
        };
        let config = NodeConfig {
            static_analysis,
            snapshot,
            materialized,
            incremental_strategy,
            unique_key,
            on_schema_change,
            full_refresh,
            contract_enforced,
            persist_docs,
            table,
            partitions,
            microbatch,
            access: Access { grants, grant_access_to },
            pre_hook: hooks(map.get("pre-hook")),
            post_hook: hooks(map.get("post-hook")),
        };
        (config, errors)
    }
}

/// A list of names: a string, or a list of strings (`Err` with the value otherwise).
fn names(v: Option<&Json>) -> Result<Vec<String>, String> {
    match v {
        None | Some(Json::Null) => Ok(vec![]),
        Some(Json::String(s)) => Ok(vec![s.clone()]),
        Some(Json::Array(items)) => items.iter().map(|i| i.as_str().map(str::to_string).ok_or_else(|| i.to_string())).collect(),
        Some(other) => Err(other.to_string()),
    }
}

fn partition_by(v: &Json) -> Option<PartitionBy> {
    let o = v.as_object()?;
    let text = |k: &str| o.get(k).and_then(Json::as_str).map(str::to_ascii_lowercase);
    let data_type = text("data_type").unwrap_or_else(|| "date".into());
    let range = match o.get("range") {
        Some(r) => {
            let n = |k: &str| r.get(k).and_then(|v| v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()));
            Some((n("start")?, n("end")?, n("interval")?))
        }
        None => None,
    };
    if data_type == "int64" && range.is_none() || !["date", "timestamp", "datetime", "int64"].contains(&data_type.as_str()) {
        return None;
    }
    Some(PartitionBy {
        field: o.get("field").and_then(Json::as_str)?.to_string(),
        data_type,
        granularity: text("granularity").unwrap_or_else(|| "day".into()),
        range,
        time_ingestion_partitioning: json_truthy(o.get("time_ingestion_partitioning")).unwrap_or(false),
        copy_partitions: json_truthy(o.get("copy_partitions")).unwrap_or(false),
    })
}

/// Hook SQL in order: strings, or `{sql: ...}` mappings.
fn hooks(v: Option<&Json>) -> Vec<String> {
    let one = |h: &Json| match h {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("sql").and_then(Json::as_str).map(str::to_string),
        _ => None,
    };
    match v {
        Some(Json::Array(items)) => items.iter().filter_map(one).collect(),
        Some(h) => one(h).into_iter().collect(),
        None => vec![],
    }
}

/// "did you mean" or the list of allowed values.
pub fn choices(value: &str, allowed: &[&str]) -> String {
    crate::diagnostics::did_you_mean(value, allowed.iter().copied()).unwrap_or_else(|| format!("use one of: {}", allowed.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(yaml: serde_json::Value) -> (NodeConfig, Vec<ShapeError>) {
        NodeConfig::from_map(&yaml.as_object().unwrap().clone().into_iter().collect())
    }

    #[test]
    fn reads_known_values() {
        let (c, errors) = read(serde_json::json!({
            "materialized": "incremental", "incremental_strategy": "delete+insert", "unique_key": ["a", "b"],
            "on_schema_change": "sync_all_columns", "full_refresh": false, "contract": {"enforced": true},
            "partition_by": {"field": "d", "granularity": "day"}, "cluster_by": "c", "post-hook": ["select 1", {"sql": "select 2"}],
        }));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.materialized, Materialized::Incremental);
        assert_eq!(c.incremental_strategy, Some(Strategy::DeleteInsert));
        assert_eq!(c.unique_key, ["a", "b"]);
        assert_eq!(c.on_schema_change, SchemaChange::SyncAllColumns);
        assert_eq!(c.full_refresh, Some(false));
        assert!(c.contract_enforced);
        assert_eq!(c.table.partition_by.as_ref().unwrap().data_type, "date");
        assert_eq!(c.table.cluster_by, ["c"]);
        assert_eq!(c.post_hook, ["select 1", "select 2"]);
        let (c, errors) = read(serde_json::json!({
            "partition_by": {"field": "n", "data_type": "INT64", "range": {"start": 0, "end": "100", "interval": 10}},
            "labels": {"team": "finance", "tier": 1}, "require_partition_filter": true, "partition_expiration_days": 7,
            "hours_to_expiration": "6", "partitions": ["date('2024-01-01')"],
        }));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.table.partition_by.as_ref().map(|p| (p.data_type.as_str(), p.range)), Some(("int64", Some((0, 100, 10)))));
        assert_eq!(c.table.labels, [("team".to_string(), "finance".to_string()), ("tier".to_string(), "1".to_string())]);
        assert_eq!((c.table.require_partition_filter, c.table.partition_expiration_days.as_deref()), (Some(true), Some("7")));
        assert_eq!(c.partitions, ["date('2024-01-01')"]);
        let (c, errors) = read(serde_json::json!({
            "grants": {"roles/bigquery.dataViewer": "user:a@x.com", "roles/bigquery.dataEditor": ["group:b@x.com", "user:c@x.com"], "select": []},
            "grant_access_to": [{"project": "p", "dataset": "shared"}],
        }));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.access.grants.len(), 2, "a privilege without grantees grants nothing");
        assert_eq!(c.access.grants[1].1, ["group:b@x.com", "user:c@x.com"]);
        assert_eq!(c.access.grant_access_to, [("p".to_string(), "shared".to_string())]);
        assert_eq!(format!("{:?}", TableOptions::default()), "TableOptions");
        let (c, _) = read(serde_json::json!({"materialized": "tabel", "incremental_strategy": "mrege"}));
        assert_eq!(c.materialized, Materialized::Custom("tabel".into()));
        assert_eq!(c.incremental_strategy, Some(Strategy::Custom("mrege".into())));
    }

    #[test]
    fn reports_every_value_of_the_wrong_shape() {
        let (c, errors) = read(serde_json::json!({
            "unique_key": 5, "on_schema_change": "sometimes", "partition_by": "d", "full_refresh": "no",
            "materialized": ["table"], "contract": true, "cluster_by": [1], "labels": ["a"], "hours_to_expiration": "soon",
        }));
        let keys: Vec<&str> = errors.iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            [
                "materialized",
                "on_schema_change",
                "unique_key",
                "cluster_by",
                "partition_by",
                "labels",
                "hours_to_expiration",
                "full_refresh",
                "contract"
            ]
        );
        assert!(errors[1].help.contains("use one of"), "{:?}", errors[1]);
        assert_eq!(c.materialized, Materialized::View);
        let (_, errors) = read(serde_json::json!({"partition_by": {"field": "n", "data_type": "int64"}}));
        assert_eq!(errors.iter().map(|e| e.key).collect::<Vec<_>>(), ["partition_by"], "int64 needs a range");
    }
}
