//! BigQuery push-down against a BigQuery emulator on loopback.
//!
//! `KILN_TEST_BQ_ENDPOINT` (`http://127.0.0.1:9050`) names a `bqemulator` server (`.ci/run` starts
//! one). The emulator accepts any project id, so every test builds into a project of its own.
//! In CI it must be set: the tests fail rather than skip.

use crate::common::*;
use kiln::engine::bigquery::BigQueryEngine;
use kiln::engine::bigquery::connect::Settings;
use kiln::engine::{Engine, RelationName, SeedLoad};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Emulator {
    endpoint: String,
}

fn emulator() -> Option<Emulator> {
    peer("KILN_TEST_BQ_ENDPOINT", "the BigQuery emulator test").map(|endpoint| Emulator { endpoint })
}

impl Emulator {
    /// A project id no other test uses.
    fn fresh_project(&self, hint: &str) -> String {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        format!("kiln-{hint}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst)).replace('_', "-")
    }

    fn engine(&self, project: &str) -> BigQueryEngine {
        let settings: indexmap::IndexMap<String, Value> =
            [("method", "none"), ("project", project), ("api_endpoint", self.endpoint.as_str())]
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect();
        let env = HashMap::new();
        BigQueryEngine::open(Settings::from_target(&settings, &env).unwrap(), &env).unwrap_or_else(|e| panic!("emulator: {e}"))
    }

    /// A `profiles.yml` with one bigquery output; the endpoint comes from the environment
    /// (`KILN_BIGQUERY_API_ENDPOINT`), as a CI job would set it.
    fn profiles(&self, profile: &str, project: &str) -> String {
        format!(
            "{profile}:\n  target: bq\n  outputs:\n    bq:\n      type: bigquery\n      method: none\n      project: {project}\n      dataset: analytics\n      threads: 4\n"
        )
    }

    fn kiln(&self, dir: &Path, args: &[&str]) -> std::process::Output {
        kiln(dir).args(args).env("KILN_BIGQUERY_API_ENDPOINT", &self.endpoint).output().expect("kiln runs")
    }

    /// Writes `bq/profiles.yml` for a new project; returns the project and its engine.
    fn target(&self, dir: &Path, profile: &str) -> (String, BigQueryEngine) {
        let project = self.fresh_project(profile);
        write(dir, "bq/profiles.yml", &self.profiles(profile, &project));
        let engine = self.engine(&project);
        (project, engine)
    }
}

fn rows_of(engine: &dyn Engine, project: &str, schema: &str, name: &str) -> Vec<String> {
    let r = RelationName { database: project.into(), schema: schema.into(), name: name.into() };
    engine_rows(engine, &kiln::engine::bigquery::sql::relation(&r))
}

/// Builds `dir` on DataFusion (default target) and on the emulator, then compares every
/// model's and seed's rows.
fn same_rows_on_both_engines(bq: &Emulator, dir: &Path, profile: &str, args: &[&str], prepare: impl Fn(&BigQueryEngine, &str)) {
    let out = run(dir, &["build"]);
    assert_eq!(out.status.code(), Some(0), "DataFusion build:\n{}", stderr(&out));
    let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let df: HashMap<String, String> =
        built_relations(dir).into_iter().map(|(n, s, a)| (n, format!("{}.{}", quoted(&s), quoted(&a)))).collect();
    let (project, engine) = bq.target(dir, profile);
    prepare(&engine, &project);
    let out = bq.kiln(dir, &[&["build", "--profiles-dir", "bq"], args].concat());
    assert_eq!(out.status.code(), Some(0), "BigQuery build:\n{}", stderr(&out));
    let built = built_relations(dir);
    assert!(built.len() >= 5, "{built:?}");
    for (name, schema, alias) in &built {
        let theirs = df.get(name).unwrap_or_else(|| panic!("{name} is not in the DataFusion build: {df:?}"));
        let a = rows_of(&engine, &project, schema, alias);
        assert!(!a.is_empty(), "{name} is empty on BigQuery");
        assert_eq!(a, datafusion_rows(dir, theirs), "{name}: BigQuery and DataFusion rows differ");
    }
}

/// Loads the example project's external CSV source into the warehouse, as an extract step would.
fn load_example_source(engine: &BigQueryEngine, project: &str, dir: &Path) {
    engine.create_schema(project, "shop_exports").unwrap();
    let load = SeedLoad {
        relation: RelationName { database: project.into(), schema: "shop_exports".into(), name: "order_items".into() },
        path: dir.join("data/order_items.csv"),
        delimiter: b',',
        column_types: vec![],
        full_refresh: false,
    };
    assert!(engine.load_seed(&load).unwrap() > 0);
}

#[test]
fn example_project_builds_the_same_rows_on_bigquery_and_datafusion() {
    let Some(bq) = emulator() else { return };
    let tmp = crate::engine::example_project();
    let project = std::sync::OnceLock::new();
    same_rows_on_both_engines(&bq, tmp.path(), "coffee_shop", &[], |e, p| {
        load_example_source(e, p, tmp.path());
        project.get_or_init(|| p.to_string());
    });
    // Failing rows of tests are kept in the audit dataset when asked.
    let out = bq.kiln(tmp.path(), &["test", "--profiles-dir", "bq", "-s", "stg_orders", "--store-failures"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let audit = bq.engine(project.get().unwrap()).list_relations(project.get().unwrap(), "analytics_dbt_test__audit").unwrap();
    assert!(audit.iter().any(|(name, kind)| name.starts_with("unique_stg_orders") && kind == "table"), "{audit:?}");
}

#[test]
fn shop_project_builds_the_same_rows_on_bigquery_and_datafusion() {
    let Some(bq) = emulator() else { return };
    let tmp = temp_project("projects/shop");
    std::fs::remove_dir_all(tmp.path().join("profiles")).unwrap();
    same_rows_on_both_engines(&bq, tmp.path(), "shop", &[], |_, _| {});
}

/// Incremental models partitioned by day, built twice: after each build the table holds exactly
/// the expected rows (`merge` on the key; `insert_overwrite` replacing the partitions the new
/// rows fall in, found through `_dbt_max_partition`, or the static `partitions`).
#[test]
fn partitioned_incremental_models_hold_the_expected_rows_after_each_build() {
    let Some(bq) = emulator() else { return };
    let tmp = temp_project("projects/bqpart");
    let dir = tmp.path();
    let (project, engine) = bq.target(dir, "bqpart");
    let rows = |model: &str| rows_of(&engine, &project, "analytics", model);
    // `by_batch` (microbatch) has a test of its own.
    let out = bq.kiln(dir, &["build", "--profiles-dir", "bq", "--exclude", "by_batch"]);
    assert_eq!(out.status.code(), Some(0), "first build:\n{}", stderr(&out));
    let first = ["1|2024-01-01|10.000000", "2|2024-01-01|20.000000", "3|2024-01-02|30.000000"];
    for model in ["by_key", "overwrite_dynamic", "overwrite_static"] {
        assert_eq!(rows(model), first.map(canon_row), "{model} after the first build");
    }
    let relation = |name: &str| RelationName { database: project.clone(), schema: "analytics".into(), name: name.into() };
    let table = engine.table(&relation("by_key")).unwrap().expect("by_key exists");
    assert_eq!(table["timePartitioning"]["field"], "day", "{table}");

    let out = bq.kiln(dir, &["build", "--profiles-dir", "bq", "--vars", "batch: 2", "--exclude", "by_batch"]);
    assert_eq!(out.status.code(), Some(0), "second build:\n{}", stderr(&out));
    assert!(stderr(&out).contains("MERGE"), "{}", stderr(&out));
    // merge: events 1 and 3 updated in place, 4 added.
    assert_eq!(rows("by_key"), ["1|2024-01-01|12", "2|2024-01-01|20", "3|2024-01-02|31", "4|2024-01-03|40"].map(canon_row));
    // dynamic: the partitions from _dbt_max_partition (2024-01-02) on are replaced by every
    // version of their events; 2024-01-01 is untouched.
    assert_eq!(
        rows("overwrite_dynamic"),
        ["1|2024-01-01|10", "2|2024-01-01|20", "3|2024-01-02|30", "3|2024-01-02|31", "4|2024-01-03|40"].map(canon_row)
    );
    // static: only 2024-01-02 is replaced; the new row of 2024-01-03 is not selected.
    assert_eq!(rows("overwrite_static"), ["1|2024-01-01|10", "2|2024-01-01|20", "3|2024-01-02|30", "3|2024-01-02|31"].map(canon_row));
    for model in ["by_key", "overwrite_dynamic", "overwrite_static"] {
        assert_eq!(engine.describe(&relation(&format!("{model}__dbt_tmp"))).unwrap(), None, "the scratch table of {model} is dropped");
    }
}

/// `a|b|c` with numbers written as the canonical rows write them.
fn canon_row(row: &str) -> String {
    row.split('|')
        .map(|v| if v.contains('-') { v.to_string() } else { canon(&Value::from(v.parse::<f64>().unwrap())) })
        .collect::<Vec<_>>()
        .join("|")
}

/// `kiln build --dry-run` changes nothing (the tables, their rows and the artifacts are as
/// before) and prints each model's bytes and columns and the total.
#[test]
fn dry_run_changes_nothing_and_reports_each_model() {
    let Some(bq) = emulator() else { return };
    let tmp = temp_project("projects/bqpart");
    let dir = tmp.path();
    let (project, engine) = bq.target(dir, "bqpart");
    let out = bq.kiln(dir, &["build", "--profiles-dir", "bq", "--exclude", "by_batch"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run_results = std::fs::read_to_string(dir.join("target/run_results.json")).unwrap();
    let response: Value = serde_json::from_str::<Value>(&run_results).unwrap()["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["unique_id"] == "model.bqpart.by_key")
        .map(|r| r["adapter_response"].clone())
        .unwrap();
    for key in ["bytes_processed", "bytes_billed", "slot_ms", "job_id", "location"] {
        assert!(response.get(key).is_some(), "adapter_response has `{key}`: {response}");
    }
    assert_eq!(response["project_id"], project.as_str(), "{response}");
    let before = engine.list_relations(&project, "analytics").unwrap();
    let rows_before = rows_of(&engine, &project, "analytics", "by_key");
    // A changed seed would be loaded and a changed model rebuilt by a real build.
    std::fs::write(dir.join("seeds/events.csv"), "id,day,occurred_at,amount,batch\n9,2024-02-01,2024-02-01 00:00:00,1,1\n").unwrap();
    let out = bq.kiln(dir, &["build", "--profiles-dir", "bq", "--dry-run", "--vars", "batch: 2", "--exclude", "by_batch"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("Dry run (nothing was changed):"), "{err}");
    for model in ["by_key", "overwrite_dynamic", "overwrite_static"] {
        let line =
            err.lines().find(|l| l.contains(&format!("analytics.{model} "))).unwrap_or_else(|| panic!("no line for {model}:\n{err}"));
        assert!(line.contains("id INT64, day DATE, amount INT64"), "{line}");
    }
    assert!(err.contains("total: 0 B to be processed"), "{err}");
    assert_eq!(engine.list_relations(&project, "analytics").unwrap(), before, "no relation created or dropped");
    assert_eq!(rows_of(&engine, &project, "analytics", "by_key"), rows_before);
    assert_eq!(rows_of(&engine, &project, "analytics", "events").len(), 6, "the seed was not loaded");
    assert_eq!(std::fs::read_to_string(dir.join("target/run_results.json")).unwrap(), run_results, "no artifacts written");

    // A target that cannot dry-run says so.
    let out = run(dir, &["build", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--dry-run needs a warehouse"), "{}", stderr(&out));
}

/// The `adapter` methods macros use read and change BigQuery: relations, columns, listing
/// relations and schemas, creating schemas, dropping, `run_query`. (`rename_relation` runs `alter table ... rename to`, which the
/// emulator runs but its catalog does not record, so it is not checked here.)
#[test]
fn adapter_methods_work_on_bigquery() {
    let Some(bq) = emulator() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: maint\nconfig-version: 2\nprofile: maint\non-run-end:\n  - \"{{ maintain() }}\"\n");
    write(d, "models/m.sql", "select 1 as id, 'a' as name\n");
    write(
        d,
        "macros/maintain.sql",
        r#"{% macro maintain() %}
  {% set db, schema = target.database, target.schema %}
  {% set scratch = api.Relation.create(database=db, schema=schema, identifier='scratch') %}
  {% set moved = api.Relation.create(database=db, schema=schema, identifier='scratch_moved') %}
  {% do adapter.drop_relation(moved) %}
  {% do run_query("create table " ~ scratch ~ " as select 1 as id union all select 2 as id") %}
  {% do run_query("delete from " ~ scratch ~ " where id = 1") %}
  {% do run_query("create table " ~ moved ~ " as select * from " ~ scratch) %}
  {% do adapter.drop_relation(scratch) %}
  {% set listed = adapter.list_relations_without_caching(api.Relation.create(database=db, schema=schema)) | map(attribute='identifier') | list %}
  {% set columns = adapter.get_columns_in_relation(adapter.get_relation(db, schema, 'm')) | map(attribute='name') | list %}
  {% do adapter.create_schema(api.Relation.create(database=db, schema='maint_extra')) %}
  {% set had_schema = adapter.check_schema_exists(db, 'maint_extra') %}
  {% set schemas = adapter.list_schemas(db) | join(' ') %}
  {% do run_query("create or replace table " ~ schema ~ ".maint_log as select 'old gone: " ~ (adapter.get_relation(db, schema, 'scratch') is none) ~ "' as observation union all select 'listed: " ~ (listed | join(' ')) ~ "' union all select 'columns: " ~ (columns | join(' ')) ~ "' union all select 'schemas: " ~ had_schema ~ " " ~ schemas ~ "'") %}
{% endmacro %}
"#,
    );
    let (project, engine) = bq.target(d, "maint");
    let out = bq.kiln(d, &["run", "--profiles-dir", "bq"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = rows_of(&engine, &project, "analytics", "maint_log");
    assert_eq!(
        log,
        ["columns: id name", "listed: m scratch_moved", "old gone: True", "schemas: True analytics maint_extra"],
        "{}",
        stderr(&out)
    );
    assert_eq!(rows_of(&engine, &project, "analytics", "scratch_moved"), ["2.000000"], "the delete persisted");
}

/// Credentials are checked before anything runs and named when they fail; a token never
/// reaches the output or the artifacts.
#[test]
fn credentials_are_named_when_wrong_and_never_printed() {
    let Some(bq) = emulator() else { return };
    let tmp = temp_project("projects/bqpart");
    let d = tmp.path();
    let project = bq.fresh_project("auth");
    let profile = |auth: &str| {
        format!(
            "bqpart:\n  target: bq\n  outputs:\n    bq:\n      type: bigquery\n{auth}      project: {project}\n      dataset: analytics\n"
        )
    };
    write(d, "bq/profiles.yml", &profile("      method: service-account\n      keyfile: /nowhere/key.json\n"));
    let out = bq.kiln(d, &["debug", "--profiles-dir", "bq"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("cannot read the service account keyfile `/nowhere/key.json`"), "{}", stdout(&out));
    write(d, "bq/profiles.yml", &profile("      method: none\n").replace("bigquery\n", "bigquery\n      api_endpoint: \"\"\n"));
    let out = kiln(d).args(["build", "--profiles-dir", "bq"]).output().unwrap();
    assert!(stderr(&out).contains("accepted only with `api_endpoint`"), "{}", stderr(&out));
    // The emulator takes any token: the build runs and the token appears nowhere.
    let token = "ya29.kiln-secret-token-4711";
    write(d, "bq/profiles.yml", &profile(&format!("      method: oauth-secrets\n      token: {token}\n")));
    let out = bq.kiln(d, &["build", "--profiles-dir", "bq", "--log-format", "json", "--exclude", "by_batch"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let debug = bq.kiln(d, &["debug", "--profiles-dir", "bq"]);
    assert!(stdout(&debug).contains("connection:   OK"), "{}", stdout(&debug));
    let everything = format!("{}{}{}{}{}", stdout(&out), stderr(&out), stdout(&debug), stderr(&debug), dump_tree(&d.join("target")));
    assert!(!everything.contains("kiln-secret-token"), "the token leaked");
}

/// A microbatch model partitioned by day: each batch reads only its day of the upstream seed
/// (its `event_time`) and replaces that day's partition; days outside the run's range stay.
#[test]
fn microbatch_model_replaces_only_its_batches() {
    let Some(bq) = emulator() else { return };
    let tmp = temp_project("projects/bqpart");
    let dir = tmp.path();
    let (project, engine) = bq.target(dir, "bqpart");
    let build = |range: [&str; 2], batch: &str| {
        let args = [
            "build",
            "--profiles-dir",
            "bq",
            "-s",
            "events",
            "by_batch",
            "--vars",
            batch,
            "--event-time-start",
            range[0],
            "--event-time-end",
            range[1],
        ];
        let out = bq.kiln(dir, &args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stderr(&out)
    };
    let log = build(["2024-01-01", "2024-01-04"], "batch: 1");
    assert!(log.contains("in 3 batches"), "{log}");
    let rows = || rows_of(&engine, &project, "analytics", "by_batch");
    assert_eq!(rows(), ["1|2024-01-01 08:00:00|10", "2|2024-01-01 09:00:00|20", "3|2024-01-02 10:00:00|30"].map(canon_row));
    // (`partition by timestamp_trunc(occurred_at, day)` runs, but the emulator records
    // partitioning only for a bare column: the DDL is golden-tested in `engine::bigquery::sql`.)

    // The second batch of events changes 2024-01-01 too, but only 2024-01-02 and 2024-01-03
    // are rebuilt: the first day keeps its rows.
    let log = build(["2024-01-02", "2024-01-04"], "batch: 2");
    assert!(log.contains("in 2 batches"), "{log}");
    assert_eq!(
        rows(),
        [
            "1|2024-01-01 08:00:00|10",
            "2|2024-01-01 09:00:00|20",
            "3|2024-01-02 10:00:00|30",
            "3|2024-01-02 11:00:00|31",
            "4|2024-01-03 12:00:00|40"
        ]
        .map(canon_row)
    );
    let out = bq.kiln(
        dir,
        &["build", "--profiles-dir", "bq", "-s", "by_batch", "--event-time-start", "2024-01-05", "--event-time-end", "2024-01-04"],
    );
    assert!(stderr(&out).contains("--event-time-start must be before --event-time-end"), "{}", stderr(&out));
}

/// A model that changes from view to table (and back), or whose table gains partitioning, is
/// rebuilt: what `create or replace` cannot replace is dropped first, as dbt-bigquery does.
#[test]
fn a_model_changing_its_kind_or_layout_is_rebuilt() {
    let Some(bq) = emulator() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: shapes\nconfig-version: 2\nprofile: shapes\n");
    let (project, engine) = bq.target(d, "shapes");
    let relation = RelationName { database: project.clone(), schema: "analytics".into(), name: "m".into() };
    for (config, kind, partitioned) in [
        ("materialized='view'", "VIEW", false),
        ("materialized='table'", "TABLE", false),
        ("materialized='table', partition_by={'field': 'd', 'data_type': 'date'}", "TABLE", true),
        ("materialized='view'", "VIEW", false),
    ] {
        write(d, "models/m.sql", &format!("{{{{ config({config}) }}}}\nselect 1 as id, date '2024-01-01' as d\n"));
        let out = bq.kiln(d, &["run", "--profiles-dir", "bq"]);
        assert_eq!(out.status.code(), Some(0), "{config}: {}", stderr(&out));
        let table = engine.table(&relation).unwrap().expect("m exists");
        assert_eq!(table["type"], kind, "{config}: {table}");
        assert_eq!(table["timePartitioning"]["field"] == "d", partitioned, "{config}: {table}");
        assert_eq!(rows_of(&engine, &project, "analytics", "m"), ["1.000000|2024-01-01"], "{config}");
    }
}

/// `grant_access_to` makes a view an authorized view of the datasets named, once, however
/// often it is built. (`grants` statements are golden-tested: the emulator has no `grant`.)
#[test]
fn grant_access_to_authorizes_the_view_once() {
    let Some(bq) = emulator() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: auth\nconfig-version: 2\nprofile: auth\n");
    let (project, engine) = bq.target(d, "auth");
    engine.create_schema(&project, "shared").unwrap();
    write(
        d,
        "models/v.sql",
        &format!(
            "{{{{ config(materialized='view', grant_access_to=[{{'project': '{project}', 'dataset': 'shared'}}]) }}}}\nselect 1 as id\n"
        ),
    );
    for _ in 0..2 {
        let out = bq.kiln(d, &["run", "--profiles-dir", "bq"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let shared = engine.dataset(&project, "shared").unwrap();
    let views: Vec<&Value> = shared["access"].as_array().unwrap().iter().filter(|a| a.get("view").is_some()).collect();
    assert_eq!(views.len(), 1, "{shared}");
    assert_eq!(views[0]["view"], serde_json::json!({"projectId": project, "datasetId": "analytics", "tableId": "v"}));
}

/// Snapshots (timestamp and check strategies, YAML and block, renamed meta columns,
/// `dbt_valid_to_current`) hold the same rows on BigQuery as on the embedded engine after each
/// batch of source changes, under each `hard_deletes` mode: the first four of the five batches
/// (the fourth adds a source column; after that `alter table ... add column` the emulator's
/// tables API still reports the old columns, which BigQuery does not). With `invalidate` and
/// `new_record` only the first two: in the third a deleted key returns with its old
/// `updated_at`, its new version's hash equals the closed version's, and dbt's `merge` (which
/// dbt-bigquery runs) matches the closed row and inserts nothing, where PostgreSQL and the
/// embedded engine insert separately and add the version. The version hashes are
/// BigQuery's own (`to_hex(md5(concat(...)))`, as dbt-bigquery's), so they are compared as
/// hashes, not as values; the merge that closes versions by them is what the rows check.
#[test]
fn snapshots_hold_the_embedded_engines_rows() {
    use crate::dbt_parity::{SNAPSHOT_BATCHES, SNAPSHOTS, snapshot_project};
    let Some(bq) = emulator() else { return };
    for hd in ["ignore", "invalidate", "new_record"] {
        let (ours, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for d in [ours.path(), local.path()] {
            snapshot_project(d);
        }
        let (project, engine) = bq.target(ours.path(), "snap");
        for (i, batch) in SNAPSHOT_BATCHES.iter().enumerate().take(if hd == "ignore" { 4 } else { 2 }) {
            let vars = format!("{{now: '2030-01-0{} 00:00:00', hd: {hd}}}", i + 1);
            for d in [ours.path(), local.path()] {
                write(d, "seeds/src.csv", batch);
            }
            let out = bq.kiln(ours.path(), &["build", "--full-refresh", "--profiles-dir", "bq", "--vars", &vars]);
            assert_eq!(out.status.code(), Some(0), "BigQuery (batch {i}, {hd}):\n{}", stderr(&out));
            let out = run(local.path(), &["build", "--full-refresh", "--vars", &vars]);
            assert_eq!(out.status.code(), Some(0), "embedded (batch {i}, {hd}):\n{}", stderr(&out));
            for relation in SNAPSHOTS {
                let name = relation.trim_start_matches("snaps.");
                let theirs = hashes_masked(datafusion_rows(local.path(), &format!("snaps.{name}")));
                assert_eq!(hashes_masked(rows_of(&engine, &project, "snaps", name)), theirs, "{relation} after batch {i} ({hd})");
            }
        }
    }
}

/// Rows with each 32-digit hex value (an md5) written as `<md5>`.
fn hashes_masked(rows: Vec<String>) -> Vec<String> {
    let is_md5 = |v: &str| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit());
    let mut out: Vec<String> =
        rows.iter().map(|r| r.split('|').map(|v| if is_md5(v) { "<md5>" } else { v }).collect::<Vec<_>>().join("|")).collect();
    out.sort();
    out
}
