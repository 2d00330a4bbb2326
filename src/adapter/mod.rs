//! What differs between warehouses, in one place. Each adapter type kiln knows (`type:` in a
//! profile) has one [`Adapter`] description: its names, identifier quoting, SQL dialect,
//! `adapter.dispatch` order, type names, incremental strategies, materializations, the configs
//! only some warehouses honour, and its profile keys. A target resolves its description once
//! ([`lookup`]); every other layer asks it instead of matching on adapter names (a test fails
//! when such a match appears outside `src/adapter/` and `src/engine/`).
//!
//! Adding a warehouse is one description here, one folder under `src/engine/` and one arm in
//! `engine::open`.

pub mod functions;
pub mod names;

use sqlparser::dialect::{BigQueryDialect, Dialect, DuckDbDialect, GenericDialect, PostgreSqlDialect};

/// Which engine builds a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// The embedded DataFusion warehouse under the project.
    DataFusion,
    Postgres,
    BigQuery,
}

/// Whose semantics the embedded engine follows for a target where they differ (integer
/// division, `avg` of decimals, literal types): DuckDB's for `type: duckdb`, PostgreSQL's
/// otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Semantics {
    #[default]
    Postgres,
    DuckDb,
}

/// The SQL dialect an adapter's SQL is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlDialect {
    Generic,
    Postgres,
    DuckDb,
    BigQuery,
}

impl SqlDialect {
    /// sqlparser's dialect, for checking compiled SQL.
    pub fn sqlparser(self) -> Box<dyn Dialect + Send + Sync> {
        match self {
            SqlDialect::Generic => Box::new(GenericDialect {}),
            SqlDialect::Postgres => Box::new(PostgreSqlDialect {}),
            SqlDialect::DuckDb => Box::new(DuckDbDialect {}),
            SqlDialect::BigQuery => Box::new(BigQueryDialect {}),
        }
    }

    /// Whether the embedded engine reads this SQL in the dialect it was checked in (so what
    /// the check parsed can be planned as it is). DuckDB SQL is checked with DuckDB's dialect
    /// and read as the generic one (see [`SqlDialect::datafusion_name`]).
    pub fn planned_as_checked(self) -> bool {
        !matches!(self, SqlDialect::DuckDb)
    }

    /// Whether the warehouse refuses to compare or combine text with numbers, dates or
    /// booleans (and numbers with dates or booleans) without a cast, where the embedded engine
    /// casts: static analysis reports those (E707).
    pub fn strict_types(self) -> bool {
        matches!(self, SqlDialect::Postgres | SqlDialect::BigQuery)
    }

    /// Whether a string literal takes the type it is used as (PostgreSQL's `unknown`), rather
    /// than being text cast only to dates and times (BigQuery).
    pub fn string_literals_untyped(self) -> bool {
        !matches!(self, SqlDialect::BigQuery)
    }

    /// DataFusion's name of the dialect in which the embedded engine reads this SQL (unit
    /// tests run a warehouse's SQL on a scratch DataFusion session). DuckDB SQL is read as the
    /// generic dialect, as the embedded engine reads it when it builds: sqlparser's DuckDB
    /// dialect takes `coalesce(kind = 'x', false)` for a named argument.
    pub fn datafusion_name(self) -> &'static str {
        match self {
            SqlDialect::Generic | SqlDialect::DuckDb => "Generic",
            SqlDialect::Postgres => "PostgreSQL",
            SqlDialect::BigQuery => "BigQuery",
        }
    }
}

/// One adapter type.
#[derive(Debug, PartialEq, Eq)]
pub struct Adapter {
    /// The `type:` name, as `target.type` reports it.
    pub name: &'static str,
    /// Other `type:` values that select this description.
    pub aliases: &'static [&'static str],
    /// The warehouse's name in messages ("PostgreSQL").
    pub display: &'static str,
    pub engine: EngineKind,
    pub semantics: Semantics,
    pub dialect: SqlDialect,
    /// Quotes identifiers.
    pub quote: char,
    /// `adapter.dispatch` prefixes, most specific first (`default` is always last).
    pub dispatch: &'static [&'static str],
    /// `api.Column.translate_type`: upper-case portable name -> this warehouse's name.
    pub type_names: &'static [(&'static str, &'static str)],
    /// `api.Column.string_type(n)` is sized (`character varying(n)`) rather than one name.
    pub string_type: Option<&'static str>,
    /// The `incremental_strategy` of an incremental model with a `unique_key` that names none.
    pub default_incremental_strategy: &'static str,
    pub incremental_strategies: &'static [&'static str],
    pub materializations: &'static [&'static str],
    /// Configs that mean something only on some warehouses, and whether this one honours them.
    pub honours: &'static [&'static str],
    /// Profile keys naming the database, then the schema (first found wins).
    pub database_keys: &'static [&'static str],
    pub schema_keys: &'static [&'static str],
    /// Database and schema when the profile names none (`None`: the profile must name it).
    pub default_database: Option<&'static str>,
    pub default_schema: Option<&'static str>,
    /// `adapter.drop_relation` drops a table or view `cascade` (BigQuery has no such clause).
    pub drop_cascade: bool,
}

/// Configs that only some warehouses honour: a node that sets one on a target whose adapter
/// does not list it in [`Adapter::honours`] gets a warning.
pub const WAREHOUSE_CONFIGS: &[&str] = &[
    "grants",
    "sql_header",
    "partition_by",
    "cluster_by",
    "indexes",
    "unlogged",
    "labels",
    "persist_docs",
    "transient",
    "copy_grants",
    "require_partition_filter",
    "partition_expiration_days",
    "hours_to_expiration",
    "kms_key_name",
    "grant_access_to",
    "partitions",
];

const DEFAULT_TYPE_NAMES: &[(&str, &str)] = &[("STRING", "TEXT")];

/// kiln's own embedded engine.
const DATAFUSION: Adapter = Adapter {
    name: "datafusion",
    aliases: &[],
    display: "embedded DataFusion",
    engine: EngineKind::DataFusion,
    semantics: Semantics::Postgres,
    dialect: SqlDialect::Generic,
    quote: '"',
    // kiln's embedded SQL is closest to PostgreSQL's.
    dispatch: &["datafusion", "postgres"],
    type_names: &[("STRING", "VARCHAR"), ("FLOAT", "DOUBLE")],
    string_type: None,
    default_incremental_strategy: "merge",
    incremental_strategies: &["append", "merge", "delete+insert"],
    materializations: &["view", "table", "incremental", "ephemeral", "external", "seed", "test", "snapshot"],
    honours: &[],
    database_keys: &["database", "dbname"],
    schema_keys: &["schema"],
    default_database: Some("kiln"),
    default_schema: Some("main"),
    drop_cascade: true,
};

const POSTGRES: Adapter = Adapter {
    name: "postgres",
    aliases: &["postgresql"],
    display: "PostgreSQL",
    engine: EngineKind::Postgres,
    semantics: Semantics::Postgres,
    dialect: SqlDialect::Postgres,
    quote: '"',
    dispatch: &["postgres"],
    type_names: DEFAULT_TYPE_NAMES,
    string_type: None,
    // dbt-postgres' default with a unique key.
    default_incremental_strategy: "delete+insert",
    incremental_strategies: &["append", "merge", "delete+insert"],
    materializations: &["view", "table", "incremental", "ephemeral", "seed", "test", "snapshot"],
    honours: &["persist_docs"],
    database_keys: &["dbname", "database"],
    schema_keys: &["schema"],
    default_database: None,
    default_schema: None,
    drop_cascade: true,
};

/// Every adapter type kiln knows.
pub static ADAPTERS: &[Adapter] = &[
    DATAFUSION,
    // dbt-duckdb projects, on the embedded engine with DuckDB's semantics.
    Adapter {
        name: "duckdb",
        display: "embedded DataFusion (DuckDB semantics)",
        semantics: Semantics::DuckDb,
        dialect: SqlDialect::DuckDb,
        // As dbt-duckdb: its own variants, then dbt's defaults.
        dispatch: &["duckdb"],
        type_names: DEFAULT_TYPE_NAMES,
        ..DATAFUSION
    },
    POSTGRES,
    Adapter { name: "redshift", aliases: &[], display: "Redshift (as PostgreSQL)", dispatch: &["redshift", "postgres"], ..POSTGRES },
    Adapter {
        name: "bigquery",
        aliases: &[],
        display: "BigQuery",
        engine: EngineKind::BigQuery,
        semantics: Semantics::Postgres,
        dialect: SqlDialect::BigQuery,
        quote: '`',
        dispatch: &["bigquery"],
        type_names: &[("STRING", "STRING"), ("TIMESTAMP", "TIMESTAMP"), ("FLOAT", "FLOAT64"), ("INTEGER", "INT64")],
        string_type: Some("STRING"),
        default_incremental_strategy: "merge",
        incremental_strategies: &["merge", "insert_overwrite", "microbatch"],
        materializations: &["view", "table", "incremental", "ephemeral", "seed", "test", "snapshot"],
        honours: &[
            "partition_by",
            "cluster_by",
            "labels",
            "persist_docs",
            "require_partition_filter",
            "partition_expiration_days",
            "hours_to_expiration",
            "kms_key_name",
            "partitions",
            "grants",
            "grant_access_to",
        ],
        database_keys: &["project", "database"],
        schema_keys: &["dataset", "schema"],
        default_database: None,
        default_schema: None,
        drop_cascade: false,
    },
];

/// The description of `type:` value `name`, or `None` for a type kiln cannot build.
pub fn lookup(name: &str) -> Option<&'static Adapter> {
    ADAPTERS.iter().find(|a| a.name == name || a.aliases.contains(&name))
}

/// The built-in target's adapter: the embedded engine.
pub fn embedded() -> &'static Adapter {
    &ADAPTERS[0]
}

impl Adapter {
    /// `adapter.dispatch` prefixes, most specific first, ending with `default`.
    pub fn dispatch_chain(&self) -> Vec<String> {
        self.dispatch.iter().copied().chain(["default"]).map(str::to_string).collect()
    }

    /// `api.Column.translate_type`: dbt's portable type names for this warehouse (dbt
    /// translates only `string` by default; BigQuery has its own labels; the embedded engine
    /// spells text `VARCHAR` and keeps PostgreSQL's double-precision `float`).
    pub fn translate_type(&self, dtype: &str) -> String {
        let upper = dtype.to_ascii_uppercase();
        self.type_names.iter().find(|(from, _)| *from == upper).map_or_else(|| dtype.to_string(), |(_, to)| to.to_string())
    }

    /// `api.Column.string_type(size)`.
    pub fn string_type(&self, size: &str) -> String {
        self.string_type.map_or_else(|| format!("character varying({size})"), str::to_string)
    }

    pub fn supports_materialization(&self, name: &str) -> bool {
        self.materializations.contains(&name)
    }

    pub fn supports_strategy(&self, name: &str) -> bool {
        self.incremental_strategies.contains(&name)
    }

    /// The adapters that honour warehouse config `key`, for a warning on one that does not.
    pub fn honouring(key: &str) -> Vec<&'static str> {
        ADAPTERS.iter().filter(|a| a.honours.contains(&key)).map(|a| a.name).collect()
    }

    /// Every `type:` value kiln accepts, for an error on another one.
    pub fn known_types() -> Vec<&'static str> {
        ADAPTERS.iter().flat_map(|a| std::iter::once(a.name).chain(a.aliases.iter().copied())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_resolve_to_one_description() {
        assert_eq!(lookup("postgresql").map(|a| a.name), Some("postgres"));
        assert_eq!(lookup("duckdb").map(|a| a.semantics), Some(Semantics::DuckDb));
        assert_eq!(lookup("snowflake"), None);
        let mut names = Adapter::known_types();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Adapter::known_types().len(), "a type name belongs to one adapter");
    }

    #[test]
    fn dispatch_types_and_strategies() {
        assert_eq!(lookup("redshift").unwrap().dispatch_chain(), ["redshift", "postgres", "default"]);
        assert_eq!(embedded().dispatch_chain(), ["datafusion", "postgres", "default"]);
        let bq = lookup("bigquery").unwrap();
        assert_eq!(bq.translate_type("integer"), "INT64");
        assert_eq!(bq.string_type("10"), "STRING");
        assert_eq!(lookup("postgres").unwrap().translate_type("string"), "TEXT");
        assert_eq!(embedded().translate_type("numeric(10,2)"), "numeric(10,2)");
        assert!(!lookup("postgres").unwrap().supports_strategy("insert_overwrite"));
        assert_eq!(Adapter::honouring("persist_docs"), ["postgres", "redshift", "bigquery"]);
        assert_eq!(Adapter::honouring("partition_by"), ["bigquery"]);
        assert_eq!(Adapter::honouring("grants"), ["bigquery"]);
        for a in ADAPTERS {
            assert!(a.supports_strategy(a.default_incremental_strategy), "{}", a.name);
            assert!(a.honours.iter().all(|c| WAREHOUSE_CONFIGS.contains(c)), "{}", a.name);
        }
    }

    /// Adapter knowledge stays here and in the engines: no other file of `src/` matches on an
    /// adapter's name (a `feature = "..."` attribute names a Cargo feature, not an adapter).
    #[test]
    fn no_adapter_name_is_matched_outside_the_adapter_and_engine_layers() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let names: Vec<String> =
            Adapter::known_types().into_iter().chain(["snowflake", "databricks", "spark", "trino"]).map(|n| format!("\"{n}\"")).collect();
        let mut found = Vec::new();
        for entry in walkdir::WalkDir::new(&src).into_iter().filter_map(Result::ok) {
            let path = entry.path();
            let rel = path.strip_prefix(&src).unwrap_or(path);
            if path.extension().is_none_or(|x| x != "rs") || rel.starts_with("adapter") || rel.starts_with("engine") {
                continue;
            }
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for (i, line) in text.lines().enumerate() {
                let line = line.replace("feature = \"", "");
                if let Some(name) = names.iter().find(|n| line.contains(n.as_str())) {
                    found.push(format!("src/{}:{}: {name}", rel.display(), i + 1));
                }
            }
        }
        assert!(found.is_empty(), "ask `crate::adapter` instead of matching on adapter names:\n{}", found.join("\n"));
    }
}
