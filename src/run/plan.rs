//! The build plan of one model: from its typed config, the target's adapter and what the
//! warehouse holds, the steps the runner carries out. Pure (no engine, no Jinja), so every
//! materialization x strategy x adapter is golden-tested (`run/snapshots/`); a new engine or
//! strategy is one new variant with its own snapshots.

use crate::adapter::Adapter;
use crate::diagnostics::Code;
use crate::engine::{IncrementalStrategy, Materialization, RelationName};
use crate::project::typed::{Materialized, NodeConfig, Strategy, choices};

/// What the plan needs to know besides the config.
pub struct Inputs<'a> {
    pub relation: RelationName,
    /// The model's compiled SQL (with its contract applied).
    pub sql: &'a str,
    pub config: &'a NodeConfig,
    pub adapter: &'static Adapter,
    /// The relation exists in the warehouse (an incremental model builds incrementally).
    pub exists: bool,
    /// `--full-refresh` was given.
    pub full_refresh: bool,
    /// An `external` model's location and format.
    pub external: Option<(String, String)>,
    /// Whether the project defines macro `name` (custom strategies).
    pub defines_macro: &'a dyn Fn(&str) -> bool,
    /// The project defines the model's materialization (`{% materialization %}`).
    pub custom_materialization: bool,
    /// A snapshot's time and hashes, rendered from the project's macros.
    pub snapshot: Option<crate::engine::snapshot::Expressions>,
}

/// One step of building a model, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    CreateSchema {
        database: String,
        schema: String,
    },
    PreHooks(usize),
    Materialize(Materialization),
    /// A project's incremental strategy: the new rows go to `temp` (a table), the macro's SQL
    /// merges them into the relation, `temp` is dropped.
    CustomIncremental {
        macro_name: String,
        temp: RelationName,
        unique_key: Vec<String>,
        sql: String,
    },
    /// `grants` and `grant_access_to`, on adapters that honour them.
    Grants {
        is_view: bool,
    },
    PersistDocs {
        relation: bool,
        columns: bool,
        is_view: bool,
    },
    PostHooks(usize),
}

/// Why a model cannot be built on the target: the node fails alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError {
    pub code: Code,
    pub message: String,
    pub help: String,
}

/// The steps that build the model of `inputs`.
pub fn plan(inputs: &Inputs) -> Result<Vec<Step>, PlanError> {
    let materialize = materialization(inputs)?;
    let is_view = matches!(materialize, Step::Materialize(Materialization::View { .. }));
    let c = inputs.config;
    let r = &inputs.relation;
    let mut steps = vec![Step::CreateSchema { database: r.database.clone(), schema: r.schema.clone() }];
    if !c.pre_hook.is_empty() {
        steps.push(Step::PreHooks(c.pre_hook.len()));
    }
    steps.push(materialize);
    let grants = inputs.adapter.honours.contains(&"grants") && !c.access.grants.is_empty();
    let authorized = inputs.adapter.honours.contains(&"grant_access_to") && is_view && !c.access.grant_access_to.is_empty();
    if grants || authorized {
        steps.push(Step::Grants { is_view });
    }
    if c.persist_docs.0 || c.persist_docs.1 {
        steps.push(Step::PersistDocs { relation: c.persist_docs.0, columns: c.persist_docs.1, is_view });
    }
    if !c.post_hook.is_empty() {
        steps.push(Step::PostHooks(c.post_hook.len()));
    }
    Ok(steps)
}

fn materialization(inputs: &Inputs) -> Result<Step, PlanError> {
    let sql = inputs.sql.to_string();
    let adapter = inputs.adapter;
    let m = &inputs.config.materialized;
    if !adapter.supports_materialization(m.as_str()) {
        return Err(not_buildable(m, adapter, inputs.custom_materialization));
    }
    Ok(Step::Materialize(match m {
        Materialized::View => Materialization::View { sql, options: inputs.config.table.clone() },
        Materialized::Table => Materialization::Table { sql, options: inputs.config.table.clone() },
        Materialized::External => {
            let (location, format) = inputs.external.clone().unwrap_or_default();
            Materialization::External { sql, location, format }
        }
        Materialized::Incremental => return incremental(inputs, sql),
        Materialized::Snapshot => match (&inputs.config.snapshot, &inputs.snapshot) {
            (Some(config), Some(exprs)) => Materialization::Snapshot { sql, config: Box::new(config.clone()), exprs: exprs.clone() },
            _ => {
                return Err(PlanError {
                    code: Code::InvalidConfig,
                    message: "the snapshot's configs are incomplete".into(),
                    help: "set `unique_key`, `strategy` and `updated_at` (timestamp) or `check_cols` (check)".into(),
                });
            }
        },
        _ => return Err(not_buildable(m, adapter, inputs.custom_materialization)),
    }))
}

/// An incremental model: a table on its first build or a full refresh (where `full_refresh`
/// config is not false), otherwise its strategy. As in dbt, the strategy matters (and an
/// unknown one fails) only on the incremental path.
fn incremental(inputs: &Inputs, sql: String) -> Result<Step, PlanError> {
    let c = inputs.config;
    let full_refresh = inputs.full_refresh && c.full_refresh != Some(false) || c.full_refresh == Some(true);
    if full_refresh || !inputs.exists {
        return Ok(Step::Materialize(Materialization::Table { sql, options: c.table.clone() }));
    }
    let adapter = inputs.adapter;
    let strategy = c.incremental_strategy.clone().unwrap_or_else(|| Strategy::parse(adapter.default_incremental_strategy));
    let unique_key = c.unique_key.clone();
    let on_schema_change = c.on_schema_change;
    let options = c.table.clone();
    let builtin = |strategy| {
        Ok(Step::Materialize(Materialization::Incremental { sql: sql.clone(), strategy, on_schema_change, options: options.clone() }))
    };
    match &strategy {
        Strategy::Custom(name) if (inputs.defines_macro)(&Strategy::macro_name(name)) => {
            let r = &inputs.relation;
            let temp = RelationName { name: format!("{}__dbt_tmp", r.name), ..r.clone() };
            Ok(Step::CustomIncremental { macro_name: Strategy::macro_name(name), temp, unique_key, sql })
        }
        s if !adapter.supports_strategy(s.as_str()) => Err(PlanError {
            code: Code::NotBuildable,
            message: format!("incremental_strategy `{}` is not supported on the {} target", s.as_str(), adapter.name),
            help: Strategy::help(s.as_str(), adapter.incremental_strategies),
        }),
        Strategy::Append => builtin(IncrementalStrategy::Append),
        Strategy::Merge | Strategy::DeleteInsert if unique_key.is_empty() => builtin(IncrementalStrategy::Append),
        Strategy::Merge => builtin(IncrementalStrategy::Merge { unique_key }),
        Strategy::DeleteInsert => builtin(IncrementalStrategy::DeleteInsert { unique_key }),
        Strategy::InsertOverwrite if c.table.partition_by.is_none() => Err(PlanError {
            code: Code::InvalidConfig,
            message: "the `insert_overwrite` strategy replaces partitions, and the model has no `partition_by`".into(),
            help: "set `partition_by: {field: ..., data_type: date}`, or use `incremental_strategy: merge`".into(),
        }),
        Strategy::InsertOverwrite => builtin(IncrementalStrategy::InsertOverwrite { partitions: c.partitions.clone() }),
        // One batch of a microbatch model (the runner cuts them), written as dbt-bigquery
        // writes it: the partitions of the batch's rows replaced.
        Strategy::Microbatch => match (&c.table.partition_by, &c.microbatch) {
            (None, _) => Err(PlanError {
                code: Code::InvalidConfig,
                message: "the `microbatch` strategy replaces each batch's partitions, and the model has no `partition_by`".into(),
                help: "set `partition_by: {field: ..., data_type: timestamp, granularity: day}` with the granularity of `batch_size`"
                    .into(),
            }),
            (_, None) => Err(PlanError {
                code: Code::InvalidConfig,
                message: "the microbatch configs are incomplete".into(),
                help: "set `event_time`, `batch_size` (hour, day, month or year) and `begin`".into(),
            }),
            (Some(p), Some(m)) if p.granularity != m.batch_size => Err(PlanError {
                code: Code::InvalidConfig,
                message: format!(
                    "`partition_by`'s granularity is `{}` and `batch_size` is `{}`: a batch must be whole partitions",
                    p.granularity, m.batch_size
                ),
                help: format!("set `partition_by.granularity: {}` (or `batch_size: {}`)", m.batch_size, p.granularity),
            }),
            _ => builtin(IncrementalStrategy::InsertOverwrite { partitions: vec![] }),
        },
        s => Err(PlanError {
            code: Code::NotBuildable,
            message: format!("incremental_strategy `{}` is not built by kiln yet", s.as_str()),
            help: Strategy::help(s.as_str(), adapter.incremental_strategies),
        }),
    }
}

fn not_buildable(m: &Materialized, adapter: &Adapter, custom: bool) -> PlanError {
    let name = m.as_str();
    PlanError {
        code: Code::NotBuildable,
        message: if custom {
            format!("materialization `{name}` is the project's own, and kiln does not run custom materializations yet")
        } else if Materialized::KNOWN.contains(&name) {
            format!("materialization `{name}` is not built by kiln on the {} target yet", adapter.name)
        } else {
            format!("materialization `{name}` is not one kiln knows, and no macro of the project defines it")
        },
        help: choices(m.as_str(), adapter.materializations),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::ADAPTERS;
    use std::fmt::Write;

    fn config(materialized: &str, strategy: Option<&str>) -> NodeConfig {
        let mut map = crate::project::config::ConfigMap::new();
        map.insert("materialized".into(), materialized.into());
        if let Some(s) = strategy {
            map.insert("incremental_strategy".into(), s.into());
        }
        map.insert("unique_key".into(), "id".into());
        map.insert("on_schema_change".into(), "append_new_columns".into());
        map.insert("post-hook".into(), serde_json::json!(["grant select on {{ this }} to reporter"]));
        map.insert("persist_docs".into(), serde_json::json!({"relation": true}));
        if materialized == "snapshot" {
            map.insert("strategy".into(), "check".into());
            map.insert("check_cols".into(), "all".into());
        }
        NodeConfig::from_map(&map).0
    }

    fn render(steps: &Result<Vec<Step>, PlanError>) -> String {
        match steps {
            Ok(steps) => steps.iter().map(|s| format!("  {s:?}\n")).collect(),
            Err(e) => format!("  error {}: {}\n    help: {}\n", e.code, e.message, e.help),
        }
    }

    /// Every materialization x strategy x adapter, on a first build and on an incremental one.
    #[test]
    fn plans_of_every_materialization_strategy_and_adapter() {
        let materializations = ["view", "table", "incremental", "external", "snapshot", "materialized_view", "tabel"];
        let exprs = crate::engine::snapshot::Expressions {
            now: "NOW".into(),
            scd_id: "HASH(id, NOW)".into(),
            deleted_scd_id: "HASH(dbt_scd_id, NOW)".into(),
        };
        let strategies =
            [None, Some("append"), Some("merge"), Some("delete+insert"), Some("insert_overwrite"), Some("mrege"), Some("custom")];
        let defines = |name: &str| name == "get_incremental_custom_sql";
        for adapter in ADAPTERS {
            let mut out = String::new();
            for m in materializations {
                let strategies: &[Option<&str>] = if m == "incremental" { &strategies } else { &[None] };
                for strategy in strategies {
                    let config = config(m, *strategy);
                    for exists in if m == "incremental" { &[false, true][..] } else { &[false][..] } {
                        let inputs = Inputs {
                            relation: RelationName { database: "db".into(), schema: "s".into(), name: "m".into() },
                            sql: "select 1 as id",
                            config: &config,
                            adapter,
                            exists: *exists,
                            full_refresh: false,
                            external: (m == "external").then(|| ("out/m.parquet".to_string(), "parquet".to_string())),
                            defines_macro: &defines,
                            custom_materialization: false,
                            snapshot: (m == "snapshot").then(|| exprs.clone()),
                        };
                        let _ = writeln!(out, "{m} strategy={} exists={exists}:", strategy.unwrap_or("(default)"));
                        out.push_str(&render(&plan(&inputs)));
                    }
                }
            }
            insta::assert_snapshot!(format!("plan_{}", adapter.name), out);
        }
    }

    #[test]
    fn full_refresh_rebuilds_unless_the_model_says_not_to() {
        let mut c = config("incremental", Some("merge"));
        let inputs = |c: &NodeConfig| {
            plan(&Inputs {
                relation: RelationName { database: "db".into(), schema: "s".into(), name: "m".into() },
                sql: "select 1 as id",
                config: c,
                adapter: crate::adapter::embedded(),
                exists: true,
                full_refresh: true,
                external: None,
                defines_macro: &|_| false,
                custom_materialization: false,
                snapshot: None,
            })
            .unwrap()
        };
        assert!(inputs(&c).iter().any(|s| matches!(s, Step::Materialize(Materialization::Table { .. }))));
        c.full_refresh = Some(false);
        assert!(inputs(&c).iter().any(|s| matches!(s, Step::Materialize(Materialization::Incremental { .. }))));
    }
}
