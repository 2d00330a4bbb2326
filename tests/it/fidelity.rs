//! Regressions from real dbt projects (issue 15): what kiln got silently wrong. Where dbt
//! defines the behaviour, `dbt_parity` compares with dbt itself; these tests pin down kiln's
//! side without a Python peer.

use crate::common::*;
use serde_json::Value;
use std::path::Path;

fn run_results(dir: &Path) -> Vec<Value> {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("target/run_results.json")).unwrap()).unwrap();
    doc["results"].as_array().unwrap().clone()
}

/// `kiln init && kiln build`: every node of the template ends with a result. The template's
/// relationships test (customers -> stg_customers) used to deadlock the scheduler: `customers`
/// and its tests never ran, and kiln exited 0.
#[test]
fn init_template_builds_every_node() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(run(tmp.path(), &["init", "shop"]).status.code(), Some(0));
    let d = tmp.path().join("shop");
    let listed = stdout(&run(&d, &["ls", "--resource-type", "model", "seed", "test", "unit_test"]));
    let expected = listed.lines().filter(|l| !l.trim().is_empty()).count();
    let out = run(&d, &["build"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let results = run_results(&d);
    let ephemeral = stdout(&run(&d, &["ls", "-s", "config.materialized:ephemeral"])).lines().filter(|l| !l.is_empty()).count();
    assert_eq!(results.len(), expected - ephemeral, "every selected node has a result:\n{err}");
    assert!(err.contains(&format!("TOTAL={}", results.len())), "{err}");
    assert!(results.iter().any(|r| r["unique_id"] == "model.shop.customers" && r["status"] == "success"), "{results:?}");
}

/// Failures are errors in the log (not warnings), a SKIP names the failed node at the root, and
/// the run ends with a recap; FORCE_COLOR colours the status words.
#[test]
fn failures_are_errors_skips_name_their_cause_and_a_recap_ends_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("models")).unwrap();
    std::fs::write(d.join("dbt_project.yml"), "name: recap\nconfig-version: 2\n").unwrap();
    std::fs::write(d.join("models/a.sql"), "select 1 as id union all select 1\n").unwrap();
    std::fs::write(d.join("models/b.sql"), "select * from {{ ref('a') }}\n").unwrap();
    std::fs::write(d.join("models/c.sql"), "select * from {{ ref('b') }}\n").unwrap();
    std::fs::write(
        d.join("models/schema.yml"),
        "version: 2\nmodels:\n  - name: a\n    columns:\n      - name: id\n        data_tests: [unique]\n",
    )
    .unwrap();
    let out = run(d, &["build"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error: test.recap.unique_a_id"), "a failure is marked as an error:\n{err}");
    assert!(!err.contains("warning: test.recap.unique_a_id"), "{err}");
    // c is skipped because b was, and b because the test failed: both name the test.
    assert_eq!(err.matches("[SKIP: upstream test `unique_a_id` failed]").count(), 2, "{err}");
    let recap = err.split("Completed with 1 error and 0 warnings:").nth(1).unwrap_or_else(|| panic!("no recap:\n{err}"));
    assert!(recap.contains("Failure in test unique_a_id (models/schema.yml)"), "{recap}");
    let coloured = kiln(d).arg("build").env_remove("NO_COLOR").env("FORCE_COLOR", "1").output().unwrap();
    let err = stderr(&coloured);
    assert!(err.contains("\x1b[1;31mFAIL "), "FORCE_COLOR colours the status:\n{err}");
    assert!(err.contains("\x1b[32mOK   \x1b[0m"), "{err}");
}

/// Jinja in YAML values is rendered when the project loads, as dbt does: `+enabled` from a var
/// (a boolean, so `--vars` turns seeds on), a source's `schema` from `target`, a source's
/// `external_location` from `env_var`, and dbt's type filters in `profiles.yml`.
#[test]
fn jinja_in_yaml_values_is_rendered_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for dir in ["seeds", "models", "data"] {
        std::fs::create_dir_all(d.join(dir)).unwrap();
    }
    std::fs::write(
        d.join("dbt_project.yml"),
        "name: yj\nconfig-version: 2\nseeds:\n  yj:\n    +enabled: \"{{ var('load_source_data', false) }}\"\nmodels:\n  yj:\n    +materialized: table\n",
    )
    .unwrap();
    std::fs::write(d.join("profiles.yml"), "yj:\n  target: dev\n  outputs:\n    dev:\n      type: datafusion\n      schema: main\n      threads: \"{{ env_var('YJ_THREADS', '3') | as_number }}\"\n").unwrap();
    std::fs::write(d.join("seeds/s.csv"), "id\n1\n2\n").unwrap();
    std::fs::write(d.join("data/x.csv"), "id\n1\n2\n3\n").unwrap();
    std::fs::write(d.join("data/y.csv"), "id\n1\n").unwrap();
    std::fs::write(
        d.join("models/sources.yml"),
        "version: 2\nsources:\n  - name: raw\n    schema: \"{{ target.schema }}_raw\"\n    tables:\n      - name: x\n        meta:\n          external_location: \"{{ env_var('X_PATH', 'data/x.csv') }}\"\n",
    )
    .unwrap();
    std::fs::write(d.join("models/m.sql"), "select * from {{ source('raw', 'x') }}\n").unwrap();
    let ls = |vars: &str| stdout(&kiln(d).args(["ls", "--profiles-dir", ".", "--vars", vars]).output().unwrap());
    assert!(!ls("{}").contains("yj.s"), "the seed is disabled by default");
    assert!(ls("{load_source_data: true}").contains("yj.s"), "--vars enables it");
    let out = kiln(d).args(["build", "--profiles-dir", ".", "--vars", "{load_source_data: true}"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(d.join("target/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["sources"]["source.yj.raw.x"]["schema"], "main_raw");
    // Rebuilds `m` with `env`, then counts its rows.
    let count = |env: &[(&str, &str)]| -> String {
        let out = kiln(d).args(["run", "--profiles-dir", ".", "-s", "m"]).envs(env.iter().copied()).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(
            &kiln(d)
                .args(["show", "--profiles-dir", ".", "--inline", "select count(*) as n from {{ ref('m') }}", "-o", "json"])
                .output()
                .unwrap(),
        )
    };
    assert!(count(&[]).contains("\"n\":3"), "the default location");
    assert!(count(&[("X_PATH", "data/y.csv")]).contains("\"n\":1"), "the location from the environment");
    let debug = kiln(d).args(["debug", "--profiles-dir", "."]).output().unwrap();
    let debug = stdout(&debug) + &stderr(&debug);
    assert!(debug.contains("threads: 3"), "as_number in profiles.yml:\n{debug}");
}

/// Snapshots in YAML (dbt 1.9) and in `{% snapshot %}` blocks run in `build`, in DAG order:
/// after what they read, before the models that `ref()` them, with their tests; their fqn and
/// path are dbt's.
#[test]
fn yaml_and_block_snapshots_build_in_dag_order() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: snap\nconfig-version: 2\n");
    write(d, "models/src.sql", "select 1 as id, cast('2024-01-01' as timestamp) as updated_at\n");
    write(d, "models/after.sql", "select count(*) as n from {{ ref('src_snapshot') }} join {{ ref('legacy_snap') }} using (id)\n");
    write(
        d,
        "snapshots/snaps.yml",
        "snapshots:\n  - name: src_snapshot\n    relation: ref('src')\n    config:\n      schema: snaps\n      unique_key: id\n      strategy: timestamp\n      updated_at: updated_at\n    columns:\n      - name: id\n        tests: [not_null]\n",
    );
    write(
        d,
        "snapshots/legacy.sql",
        "{% snapshot legacy_snap %}\n{{ config(target_schema='snaps', unique_key='id', strategy='check', check_cols='all') }}\nselect * from {{ ref('src') }}\n{% endsnapshot %}\n",
    );
    let out = kiln(d).args(["build", "--threads", "1", "--log-format", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let order: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "node_finished" && e["status"] != "skipped")
        .filter_map(|e| e["unique_id"].as_str().map(str::to_string))
        .collect();
    let at = |id: &str| order.iter().position(|o| o == id).unwrap_or_else(|| panic!("{id} did not run: {order:?}"));
    assert!(
        at("model.snap.src") < at("snapshot.snap.src_snapshot") && at("snapshot.snap.src_snapshot") < at("model.snap.after"),
        "{order:?}"
    );
    assert!(at("snapshot.snap.legacy_snap") < at("model.snap.after"), "{order:?}");
    assert!(order.iter().any(|o| o.starts_with("test.snap.not_null_src_snapshot_id")), "{order:?}");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("target/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["nodes"]["snapshot.snap.legacy_snap"]["fqn"], serde_json::json!(["snap", "legacy", "legacy_snap"]));
    assert_eq!(manifest["nodes"]["snapshot.snap.src_snapshot"]["fqn"], serde_json::json!(["snap", "src_snapshot"]));
    assert_eq!(manifest["nodes"]["snapshot.snap.src_snapshot"]["path"], "snaps.yml/src_snapshot.sql");
    assert_eq!(manifest["nodes"]["snapshot.snap.src_snapshot"]["schema"], "main_snaps");
    let out = run(d, &["show", "--inline", "select n from {{ ref('after') }}", "-o", "json"]);
    assert_eq!(stdout(&out).trim(), r#"{"n":1}"#, "{}", stderr(&out));
}

/// A snapshot whose query lacks a column its config names fails alone, says which, and writes
/// nothing: `check_cols` naming a missing column, a source that lost the unique key column.
#[test]
fn snapshots_refuse_columns_their_query_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: bad\nconfig-version: 2\n");
    write(d, "models/src.sql", "select 1 as id, 'a' as status\n");
    let snapshot = |check_cols: &str| {
        write(
            d,
            "snapshots/s.sql",
            &format!(
                "{{% snapshot s %}}\n{{{{ config(target_schema='snaps', unique_key='id', strategy='check', check_cols={check_cols}) }}}}\nselect * from {{{{ ref('src') }}}}\n{{% endsnapshot %}}\n"
            ),
        );
    };
    snapshot("['status', 'nope']");
    let out = run(d, &["build"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("`check_cols` names `nope`, which the snapshot's query does not return (its columns: id, status)"), "{err}");
    assert!(run(d, &["show", "--inline", "select * from snaps.s"]).status.code() == Some(1), "nothing was written");
    snapshot("['status']");
    assert_eq!(run(d, &["build"]).status.code(), Some(0));
    write(d, "models/src.sql", "select 1 as key, 'b' as status\n");
    let out = run(d, &["build"]);
    let err = stderr(&out);
    assert!(out.status.code() == Some(1) && err.contains("`unique_key` names `id`"), "{err}");
    let out = run(d, &["show", "--inline", "select status from snaps.s", "-o", "json"]);
    assert_eq!(stdout(&out).trim(), r#"{"status":"a"}"#, "the snapshot is as it was");
}

/// A dbt command kiln lacks says so (exit 2), instead of suggesting a similar command.
#[test]
fn dbt_commands_kiln_lacks_say_not_supported_yet() {
    let tmp = tempfile::tempdir().unwrap();
    let cmd = "docs";
    let out = run(tmp.path(), &[cmd]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
    assert!(err.contains(&format!("`kiln {cmd}` is not supported yet")) && err.contains("docs/compatibility.md"), "{cmd}: {err}");
    assert!(!err.contains("similar subcommand"), "{cmd}: {err}");
}

/// On a `type: duckdb` target, comparing a DATE with a text column is an error, as in DuckDB
/// (a text literal is still cast); on other targets it is allowed, as in PostgreSQL.
#[test]
fn duckdb_targets_refuse_comparing_dates_with_text_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("dbt_project.yml"), "name: dq\nconfig-version: 2\nprofile: dq\n").unwrap();
    std::fs::write(
        d.join("profiles.yml"),
        "dq:\n  target: duck\n  outputs:\n    duck:\n      type: duckdb\n      path: dq.duckdb\n      schema: main\n    plain:\n      type: datafusion\n      schema: main\n",
    )
    .unwrap();
    let show = |target: &str, sql: &str| kiln(d).args(["show", "--profiles-dir", ".", "-t", target, "--inline", sql]).output().unwrap();
    let column = "select d = s as same from (select current_date as d, '2020-01-01' as s) t";
    let out = show("duck", column);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("Cannot compare values of type DATE and type VARCHAR"), "{}", stderr(&out));
    assert_eq!(show("duck", "select current_date = '2020-01-01' as same").status.code(), Some(0), "a literal is cast");
    assert_eq!(show("plain", column).status.code(), Some(0), "PostgreSQL semantics elsewhere");
    // A `varchar` contract accepts text built with `||` (Utf8View in DataFusion).
    std::fs::create_dir_all(d.join("models")).unwrap();
    std::fs::write(d.join("models/named.sql"), "{{ config(materialized='table') }}\nselect 'a' || 'b' as name, cast(1 as integer) as id\n")
        .unwrap();
    std::fs::write(
        d.join("models/named.yml"),
        "version: 2\nmodels:\n  - name: named\n    config:\n      contract: {enforced: true}\n    columns:\n      - {name: name, data_type: varchar}\n      - {name: id, data_type: integer}\n",
    )
    .unwrap();
    for target in ["duck", "plain"] {
        let out = kiln(d).args(["run", "--profiles-dir", ".", "-t", target]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{target}: {}", stderr(&out));
    }
}

/// A materialization or incremental strategy kiln cannot build is a warning at parse (file,
/// line, did-you-mean); only those nodes fail when they run, with a run-time code in the JSON
/// events, and the rest of the project builds. A strategy the project defines as a macro is
/// used. (`tests/it/postgres.rs` runs the same project on PostgreSQL.)
#[test]
fn unbuildable_configs_fail_only_their_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_unbuildable_project(d);
    check_unbuildable_project(d, "datafusion");
}

/// The project of [`unbuildable_configs_fail_only_their_nodes`].
pub fn write_unbuildable_project(d: &std::path::Path) {
    write(d, "dbt_project.yml", "name: inc\nconfig-version: 2\nprofile: inc\n");
    write(d, "models/tabled.sql", "{{ config(materialized='tabel') }}\nselect 1 as id\n");
    write(
        d,
        "models/overwritten.sql",
        "{{ config(materialized='incremental', incremental_strategy='insert_overwrite') }}\nselect 1 as id\n",
    );
    write(d, "models/fine.sql", "{{ config(grants={'select': ['reporter']}) }}\nselect 1 as id\n");
    write(d, "models/after_fine.sql", "{{ config(persist_docs={'relation': true}) }}\nselect * from {{ ref('fine') }}\n");
    write(
        d,
        "macros/insert_new.sql",
        "{% macro get_incremental_insert_new_sql(arg_dict) %}\n  insert into {{ arg_dict['target_relation'] }} select * from {{ arg_dict['temp_relation'] }}\n  where {{ arg_dict['unique_key'] }} not in (select {{ arg_dict['unique_key'] }} from {{ arg_dict['target_relation'] }})\n{% endmacro %}\n",
    );
    write(
        d,
        "models/kept.sql",
        "{{ config(materialized='incremental', incremental_strategy='insert_new', unique_key='id') }}\nselect 1 as id, 'a' as v\n",
    );
}

/// Checks the project of [`write_unbuildable_project`] on its target, whose adapter is `adapter`.
pub fn check_unbuildable_project(d: &std::path::Path, adapter: &str) {
    let with = |cmd: &[&str]| kiln(d).args(cmd).output().unwrap();
    let out = with(&["parse"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("warning[E116]") && err.contains("--> models/tabled.sql:1:11") && err.contains("did you mean `table`?"), "{err}");
    assert!(err.contains("warning[E117]") && err.contains("--> models/overwritten.sql:1:39"), "{err}");
    assert!(err.contains(&format!("which the {adapter} target does not have")), "{err}");
    assert!(!err.contains("kept.sql"), "a strategy the project defines is no warning: {err}");
    // Configs the target does not apply: one warning each, naming the nodes.
    assert!(
        err.contains(&format!("warning[E118]: `grants` is set on 1 node(s) (fine), and the {adapter} target does not apply it")),
        "{err}"
    );
    let persist_docs = format!("`persist_docs` is set on 1 node(s) (after_fine), and the {adapter} target");
    assert_eq!(err.contains(&persist_docs), adapter != "postgres", "PostgreSQL applies persist_docs: {err}");
    assert_eq!(with(&["build"]).status.code(), Some(1), "`tabel` fails");
    // The second build is incremental: `overwritten` fails too, `kept` runs the project's macro.
    write(
        d,
        "models/kept.sql",
        "{{ config(materialized='incremental', incremental_strategy='insert_new', unique_key='id') }}\nselect 1 as id, 'b' as v union all select 2, 'c'\n",
    );
    let out = with(&["build", "--log-format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let events: Vec<serde_json::Value> = stdout(&out).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let finished = |name: &str| {
        events
            .iter()
            .find(|e| e["event"] == "node_finished" && e["unique_id"] == format!("model.inc.{name}"))
            .unwrap_or_else(|| panic!("no result for {name}: {}", stdout(&out)))
            .clone()
    };
    for name in ["fine", "after_fine", "kept"] {
        assert_eq!(finished(name)["status"], "success", "{}", finished(name));
    }
    for (name, file) in [("tabled", "models/tabled.sql"), ("overwritten", "models/overwritten.sql")] {
        let e = finished(name);
        assert_eq!((e["status"].as_str(), e["code"].as_str(), e["file"].as_str()), (Some("error"), Some("E605"), Some(file)), "{e}");
    }
    let out = with(&["show", "--inline", "select id, v from {{ ref('kept') }} order by id", "-o", "json"]);
    let rows: Vec<serde_json::Value> = stdout(&out).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(rows, [serde_json::json!({"id": 1, "v": "a"}), serde_json::json!({"id": 2, "v": "c"})], "the macro inserts only new keys");
}

/// The warehouse's Parquet files carry types other engines read as such: pyarrow and DuckDB see
/// timestamps (also second-precision ones), dates, decimals, text, booleans and numbers.
#[test]
fn warehouse_parquet_reads_back_with_its_types_in_pyarrow_and_duckdb() {
    let Some(python) = peer("KILN_TEST_PYTHON", "the Parquet type test") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("models")).unwrap();
    std::fs::write(d.join("dbt_project.yml"), "name: pq\nconfig-version: 2\nmodels:\n  pq:\n    +materialized: table\n").unwrap();
    std::fs::write(
        d.join("models/typed.sql"),
        "select to_timestamp_seconds(86400) as ts_seconds, to_timestamp_millis(1000) as ts_millis, \
         cast('2024-01-02 03:04:05' as timestamp) as ts, cast('2024-01-02' as date) as d, \
         cast(12.34 as decimal(10, 2)) as amount, 'text' as label, true as flag, 1.5 as ratio, cast(7 as bigint) as n\n",
    )
    .unwrap();
    let out = run(d, &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let file = walkdir::WalkDir::new(d.join(".kiln/warehouse"))
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "parquet") && e.path().to_string_lossy().contains("typed"))
        .expect("the table's Parquet file")
        .into_path();
    let script = "import sys, pyarrow.parquet as pq, duckdb\n\
        schema = pq.read_schema(sys.argv[1])\n\
        for f in schema: print('pyarrow', f.name, f.type)\n\
        for name, kind, *_ in duckdb.sql(\"describe select * from read_parquet('\" + sys.argv[1] + \"')\").fetchall(): print('duckdb', name, kind)\n";
    let out = std::process::Command::new(python).arg("-c").arg(script).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let types = String::from_utf8_lossy(&out.stdout).into_owned();
    for expected in [
        "pyarrow ts_seconds timestamp[ms]",
        "pyarrow ts_millis timestamp[ms]",
        "pyarrow d date32[day]",
        "pyarrow amount decimal128(10, 2)",
        "pyarrow flag bool",
        "pyarrow n int64",
        "duckdb ts_seconds TIMESTAMP",
        "duckdb ts TIMESTAMP",
        "duckdb d DATE",
        "duckdb amount DECIMAL(10,2)",
        "duckdb label VARCHAR",
    ] {
        assert!(types.lines().any(|l| l.starts_with(expected)), "`{expected}` not in\n{types}");
    }
}

/// `kiln show -s MODEL` runs the model's SQL as it is now, as `dbt show` does: after an edit
/// (without a build), for a model never built, and for an ephemeral one.
#[test]
fn show_runs_the_current_sql_of_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("models")).unwrap();
    std::fs::write(d.join("dbt_project.yml"), "name: sh\nconfig-version: 2\nmodels:\n  sh:\n    +materialized: table\n").unwrap();
    std::fs::write(d.join("models/base.sql"), "select 1 as id union all select 2\n").unwrap();
    std::fs::write(d.join("models/eph.sql"), "{{ config(materialized='ephemeral') }}\nselect id * 10 as id from {{ ref('base') }}\n")
        .unwrap();
    std::fs::write(d.join("models/top.sql"), "select max(id) as top from {{ ref('eph') }}\n").unwrap();
    assert_eq!(run(d, &["run", "-s", "base"]).status.code(), Some(0));
    let show = |name: &str| {
        let out = run(d, &["show", "-s", name, "-o", "json"]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        stdout(&out)
    };
    assert!(show("top").contains("\"top\":20"), "never built, through an ephemeral parent");
    assert!(show("eph").contains("\"id\":10"), "an ephemeral model");
    std::fs::write(d.join("models/base.sql"), "select 5 as id\n").unwrap();
    assert!(show("base").contains("\"id\":5"), "the edited SQL, not the built table");
}

/// Jinja as dbt's Python Jinja runs it, as macro packages use it: lists and dicts that change
/// (also inside dicts and from `dict()`), Jinja's implicit `varargs`/`kwargs`, `set()` compared
/// without order, context values (`this`) inside macros seen per model.
#[test]
fn jinja_behaves_as_dbts_python_jinja() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("macros")).unwrap();
    std::fs::create_dir_all(d.join("models")).unwrap();
    std::fs::write(d.join("dbt_project.yml"), "name: jj\nconfig-version: 2\n").unwrap();
    std::fs::write(
        d.join("macros/helpers.sql"),
        "{% macro collect(first) %}{{ return([first] + (varargs | list) + [kwargs.get('last', 'none')]) }}{% endmacro %}\n\
         {% macro me() %}{{ this.identifier }}{% endmacro %}\n",
    )
    .unwrap();
    for m in ["a", "b", "c"] {
        std::fs::write(d.join(format!("models/{m}.sql")), "select '{{ me() }}' as name\n").unwrap();
    }
    let template = "{% set groups = {} %}{% for k in ['x', 'y', 'x'] %}{% if k not in groups %}{% do groups.update({k: []}) %}{% endif %}{% do groups[k].append(loop.index) %}{% endfor %}\
        {% set d = dict(a=1) %}{% do d.update({'b': 2}) %}\
        select '{{ groups['x'] | join('-') }}' as xs, '{{ d | list | join(',') }}' as keys, \
        '{{ collect(1, 2, 3, last=4) | join(',') }}' as args, {{ set(['b', 'a']) == set(['a', 'b', 'a']) }} as same";
    let out = run(d, &["compile", "--inline", template]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sql = stdout(&out);
    for expected in ["'1-3' as xs", "'a,b' as keys", "'1,2,3,4' as args", "True as same"] {
        assert!(sql.contains(expected), "`{expected}` not in {sql}");
    }
    let out = run(d, &["compile"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for m in ["a", "b", "c"] {
        let compiled = std::fs::read_to_string(d.join(format!("target/compiled/jj/models/{m}.sql"))).unwrap();
        assert!(compiled.contains(&format!("'{m}' as name")), "{m}: {compiled}");
    }
}

/// `kiln compile` warns about functions the embedded engine lacks (a DuckDB project's
/// `epoch_ms`), at the call, and still compiles.
#[test]
fn compile_warns_about_functions_the_engine_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("models")).unwrap();
    std::fs::write(d.join("dbt_project.yml"), "name: fx\nconfig-version: 2\nprofile: fx\n").unwrap();
    std::fs::write(d.join("profiles.yml"), "fx:\n  target: duck\n  outputs:\n    duck:\n      type: duckdb\n      path: fx.duckdb\n")
        .unwrap();
    std::fs::write(d.join("models/ok.sql"), "select upper('a') as a, strftime(current_date, '%Y') as y, mod(7, 2) as m\n").unwrap();
    std::fs::write(d.join("models/duckish.sql"), "select 1 as id,\n  epoch_ms(now()) as at\n").unwrap();
    let out = kiln(d).args(["compile", "--profiles-dir", "."]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("warning[E403]: model `duckish` calls `epoch_ms`"), "{err}");
    assert!(err.contains("target/compiled/fx/models/duckish.sql:2:3"), "{err}");
    assert_eq!(err.matches("E403").count(), 1, "only the unknown function: {err}");
}

/// On the embedded engine `kiln compile` reads the local warehouse, as `dbt compile` reads the
/// target: introspective queries see the data, and `is_incremental()` is true once built.
#[test]
fn compile_reads_the_local_warehouse() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("models")).unwrap();
    std::fs::write(d.join("dbt_project.yml"), "name: cw\nconfig-version: 2\n").unwrap();
    std::fs::write(d.join("models/kinds.sql"), "{{ config(materialized='table') }}\nselect 'red' as kind union all select 'blue'\n")
        .unwrap();
    std::fs::write(
        d.join("models/pivot.sql"),
        "{% set kinds = run_query('select kind from ' ~ ref('kinds') ~ ' order by kind') %}\
         select {% if execute %}{% for k in kinds.columns[0].values() %}'{{ k }}' as {{ k }}, {% endfor %}{% endif %}1 as n\
         {% if is_incremental() %} where 1 = 1 {% endif %}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("models/inc.sql"),
        "{{ config(materialized='incremental') }}\nselect 1 as id{% if is_incremental() %} where false{% endif %}\n",
    )
    .unwrap();
    let compiled = |name: &str| {
        let out = run(d, &["compile", "-s", name]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out)
    };
    assert!(!compiled("inc").contains("where false"), "nothing built yet");
    assert_eq!(run(d, &["run"]).status.code(), Some(0));
    assert!(compiled("pivot").contains("'blue' as blue, 'red' as red"), "{}", compiled("pivot"));
    assert!(compiled("inc").contains("where false"), "is_incremental() once built");
}

/// Every package's `on-run-start`/`on-run-end` hooks run, as dbt orders them (packages by
/// name, the root project last), each an `operation` result.
#[test]
fn hooks_of_packages_run_before_the_root_projects() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let write = |path: &str, text: &str| write(d, path, text);
    write(
        "dbt_project.yml",
        "name: root\nconfig-version: 2\non-run-start:\n  - \"create table if not exists {{ target.schema }}.hook_log (who varchar, step integer)\"\n  - \"insert into {{ target.schema }}.hook_log values ('root', 2)\"\n",
    );
    write("packages.yml", "packages:\n  - local: pkg\n");
    write(
        "pkg/dbt_project.yml",
        "name: helper\nconfig-version: 2\non-run-start:\n  - \"create table if not exists {{ target.schema }}.hook_log (who varchar, step integer)\"\n  - \"insert into {{ target.schema }}.hook_log values ('helper', 1)\"\n",
    );
    write("models/m.sql", "select 1 as id\n");
    let out = run(d, &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ids: Vec<String> =
        run_results(d).iter().map(|r| r["unique_id"].as_str().unwrap().to_string()).filter(|id| id.starts_with("operation.")).collect();
    assert_eq!(
        ids,
        [
            "operation.helper.helper-on-run-start-0",
            "operation.helper.helper-on-run-start-1",
            "operation.root.root-on-run-start-0",
            "operation.root.root-on-run-start-1"
        ]
    );
    let log = stdout(&run(d, &["show", "--inline", "select who from main.hook_log order by step", "-o", "json"]));
    assert_eq!(log.lines().collect::<Vec<_>>(), [r#"{"who":"helper"}"#, r#"{"who":"root"}"#]);
}
