//! `--state` and `--defer`: a change built in a dev schema reads its unchanged parents from the
//! relations a production run built, on the embedded engine (two schemas of one warehouse) and
//! on PostgreSQL (`tests/it/postgres.rs`).

use crate::common::*;
use std::path::Path;

/// The project: a seed, `a` over it, `b` over `a`. `profiles` has targets `prod` and `dev`.
pub fn write_project(d: &Path, profiles: &str) {
    write(d, "dbt_project.yml", "name: st\nconfig-version: 2\nprofile: st\n");
    write(d, "profiles.yml", profiles);
    write(d, "seeds/raw.csv", "id\n1\n2\n3\n");
    write(d, "models/a.sql", "select id from {{ ref('raw') }}\n");
    write(d, "models/b.sql", "select count(*) as n from {{ ref('a') }}\n");
}

/// Builds prod, keeps its manifest, changes `b`, and builds only the change in dev with
/// `--defer`: `b` reads `a` from prod; with `a` also in dev, `--defer` reads dev's and
/// `--favor-state` prod's. `rows` runs a query on the target's warehouse.
pub fn check_defer(d: &Path, rows: &dyn Fn(&str) -> Vec<String>) {
    let ok = |args: &[&str]| {
        let out = kiln(d).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "kiln {args:?}:\n{}", stderr(&out));
        stderr(&out)
    };
    ok(&["build", "-t", "prod"]);
    std::fs::create_dir_all(d.join("prod_state")).unwrap();
    std::fs::copy(d.join("target/manifest.json"), d.join("prod_state/manifest.json")).unwrap();
    // `kiln clone` makes prod's `b` readable in dev, without building it.
    let err = ok(&["clone", "-t", "dev", "-s", "b", "--state", "prod_state"]);
    assert!(err.contains("1 of 1 SUCCESS clone dev.b"), "{err}");
    let n: Vec<f64> = rows("select n from dev.b").iter().filter_map(|v| v.parse().ok()).collect();
    assert_eq!(n, [3.0], "dev.b reads prod's b");
    write(d, "models/b.sql", "select count(*) * 10 as n from {{ ref('a') }}\n");
    // Without --defer the change cannot build in dev: `a` is not there.
    let out = kiln(d).args(["build", "-t", "dev", "-s", "state:modified", "--state", "prod_state"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = ok(&["build", "-t", "dev", "-s", "state:modified", "--state", "prod_state", "--defer"]);
    assert!(err.contains("1 of 1 OK") && err.contains("Deferring"), "only b is built: {err}");
    let compiled = std::fs::read_to_string(d.join("target/run/st/models/b.sql")).unwrap();
    assert!(compiled.contains("\"prod\".\"a\""), "b reads prod's a: {compiled}");
    let n: Vec<f64> = rows("select n from dev.b").iter().filter_map(|v| v.parse().ok()).collect();
    assert_eq!(n, [30.0], "b counted prod's a (3 rows) times 10");
    // `a` built in dev too: --defer reads it there, --favor-state reads prod's.
    ok(&["build", "-t", "dev", "-s", "+a"]);
    ok(&["run", "-t", "dev", "-s", "b", "--state", "prod_state", "--defer"]);
    assert!(std::fs::read_to_string(d.join("target/run/st/models/b.sql")).unwrap().contains("\"dev\".\"a\""));
    ok(&["run", "-t", "dev", "-s", "b", "--state", "prod_state", "--defer", "--favor-state"]);
    assert!(std::fs::read_to_string(d.join("target/run/st/models/b.sql")).unwrap().contains("\"prod\".\"a\""));
    // --defer needs --state.
    let out = kiln(d).args(["run", "-t", "dev", "-s", "b", "--defer"]).output().unwrap();
    assert!(out.status.code() == Some(1) && stderr(&out).contains("error[E308]"), "{}", stderr(&out));
}

#[test]
fn defer_reads_unselected_parents_from_the_state_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let target = |schema: &str| format!("    {schema}:\n      type: datafusion\n      path: .kiln/warehouse\n      schema: {schema}\n");
    write_project(d, &format!("st:\n  target: dev\n  outputs:\n{}{}", target("prod"), target("dev")));
    let rows = |sql: &str| -> Vec<String> {
        let out = kiln(d).args(["show", "-t", "dev", "--inline", sql, "-o", "json"]).output().unwrap();
        stdout(&out)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.as_object()?.values().next().map(|x| x.to_string()))
            .collect()
    };
    check_defer(d, &rows);
}

/// `--defer` across two warehouses, as dbt-duckdb users keep prod and dev in two files: dev
/// attaches prod's warehouse (`attach: [{path: prod.duckdb}]`, read-only) and reads the
/// unchanged parents there; a write to the attached database is refused and changes nothing.
#[test]
fn defer_reads_parents_from_an_attached_warehouse() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_project(
        d,
        "st:\n  target: dev\n  outputs:\n    prod: {type: duckdb, path: prod.duckdb, schema: main}\n    dev:\n      type: duckdb\n      path: dev.duckdb\n      schema: main\n      attach:\n        - path: prod.duckdb\n",
    );
    let ok = |args: &[&str]| {
        let out = kiln(d).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "kiln {args:?}:\n{}", stderr(&out));
        (stdout(&out), stderr(&out))
    };
    ok(&["build", "-t", "prod"]);
    std::fs::create_dir_all(d.join("prod_state")).unwrap();
    std::fs::copy(d.join("target/manifest.json"), d.join("prod_state/manifest.json")).unwrap();
    write(d, "models/b.sql", "select count(*) * 10 as n from {{ ref('a') }}\n");
    let (_, err) = ok(&["build", "-t", "dev", "-s", "state:modified", "--state", "prod_state", "--defer"]);
    assert!(err.contains("1 of 1 OK"), "only b is built: {err}");
    let compiled = std::fs::read_to_string(d.join("target/run/st/models/b.sql")).unwrap();
    assert!(compiled.contains("\"prod\".\"main\".\"a\""), "b reads prod's a: {compiled}");
    let (rows, _) = ok(&["show", "-t", "dev", "--inline", "select n from dev.main.b", "-o", "json"]);
    assert_eq!(rows.trim(), r#"{"n":30}"#);
    assert!(!d.join("dev.duckdb.kiln/prod").exists(), "nothing of prod is copied into dev's warehouse");
    // The attached warehouse is never written.
    let before = dump_tree(&d.join("prod.duckdb.kiln"));
    write(d, "models/c.sql", "{{ config(database='prod', materialized='table') }}\nselect 1 as id\n");
    let out = kiln(d).args(["run", "-t", "dev", "-s", "c"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("database `prod` is attached read-only from"), "{}", stderr(&out));
    assert_eq!(dump_tree(&d.join("prod.duckdb.kiln")), before);
}

/// `kiln retry` runs exactly what the last build left failed or skipped, with that build's
/// command and flags; with nothing left, it says so.
#[test]
fn retry_runs_what_failed_and_was_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: r\nconfig-version: 2\n");
    write(d, "models/ok.sql", "select 1 as id\n");
    write(d, "models/broken.sql", "select id from {{ ref('ok') }} where nope = 1\n");
    write(d, "models/after.sql", "select * from {{ ref('broken') }}\n");
    write(d, "models/other.sql", "select 2 as id\n");
    let out = kiln(d).args(["build"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // `result:` selects by the statuses of the --state run.
    let ls = |sel: &str| {
        let out = kiln(d).args(["ls", "-s", sel, "--state", "target", "-o", "name"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out).lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(ls("result:error"), ["broken"]);
    assert_eq!(ls("result:skipped"), ["after"]);
    assert_eq!(ls("result:success"), ["ok", "other"]);
    write(d, "models/broken.sql", "select id from {{ ref('ok') }}\n");
    let out = kiln(d).args(["retry", "--log-format", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let mut ran: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "node_finished")
        .filter_map(|e| e["unique_id"].as_str().map(str::to_string))
        .collect();
    ran.sort();
    assert_eq!(ran, ["model.r.after", "model.r.broken"]);
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("target/run_results.json")).unwrap()).unwrap();
    assert_eq!(results["args"]["which"], "build", "the retry records the command it ran");
    let out = kiln(d).args(["retry"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("Nothing to retry"), "{}", stderr(&out));
}

/// `--empty`: every ref() and source() reads zero rows, so a build checks SQL and schemas
/// without data: seeds load, models are built empty with their columns, tests run on them, and
/// `flags.EMPTY` is true.
#[test]
fn empty_builds_read_zero_rows_from_refs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: e\nconfig-version: 2\n");
    write(d, "seeds/raw.csv", "id,name\n1,a\n2,b\n");
    write(d, "models/a.sql", "{{ config(materialized='table') }}\nselect id, name, {{ flags.EMPTY }} as empty from {{ ref('raw') }}\n");
    write(d, "models/s.yml", "version: 2\nmodels:\n  - name: a\n    columns:\n      - name: id\n        data_tests: [not_null]\n");
    let out = kiln(d).args(["build", "--empty"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let compiled = std::fs::read_to_string(d.join("target/run/e/models/a.sql")).unwrap();
    assert!(compiled.contains("(select * from \"kiln\".\"main\".\"raw\" where false limit 0) _dbt_limit_subq_raw"), "{compiled}");
    assert!(compiled.contains("True as empty"), "{compiled}");
    let show = |sql: &str| stdout(&kiln(d).args(["show", "--inline", sql, "-o", "json"]).output().unwrap());
    assert_eq!(show("select count(*) as n from {{ ref('a') }}").trim(), r#"{"n":0}"#);
    assert_eq!(show("select count(*) as n from {{ ref('raw') }}").trim(), r#"{"n":2}"#, "seeds load in full");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("target/run_results.json")).unwrap()).unwrap();
    assert_eq!(results["args"]["empty"], true);
}

/// `kiln run-operation` calls a macro with its keyword arguments and the warehouse attached:
/// its statements change the warehouse, `run_query` returns rows, `log()` is printed; a failing
/// macro is a diagnostic and exit 1.
#[test]
fn run_operation_calls_a_macro_on_the_warehouse() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: o\nconfig-version: 2\n");
    write(d, "models/a.sql", "select 1 as id\n");
    write(
        d,
        "macros/ops.sql",
        "{% macro make(n, label='x') %}\n  {% do run_query('create table main.made as select ' ~ n ~ ' as n, \\'' ~ label ~ '\\' as label') %}\n  {% set rows = run_query('select n from main.made') %}\n  {{ log('made ' ~ rows.columns[0].values()[0], info=True) }}\n{% endmacro %}\n{% macro broken() %}{{ exceptions.raise_compiler_error('no way') }}{% endmacro %}\n",
    );
    let out = kiln(d).args(["run-operation", "make", "--args", "{n: 7, label: seven}"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("made 7"), "{}", stderr(&out));
    let out = kiln(d).args(["show", "--inline", "select n, label from main.made", "-o", "json"]).output().unwrap();
    assert_eq!(stdout(&out).trim(), r#"{"n":7,"label":"seven"}"#, "{}", stderr(&out));
    let out = kiln(d).args(["run-operation", "broken"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("error[E205]") && stderr(&out).contains("no way"), "{}", stderr(&out));
    let out = kiln(d).args(["run-operation", "make", "--args", "[1]"]).output().unwrap();
    assert!(out.status.code() == Some(1) && stderr(&out).contains("--args must be a mapping"), "{}", stderr(&out));
}

/// The `on-run-end` context is dbt's: `results` (status and node of each result), `schemas`,
/// `database_schemas`; `selected_resources` is what the command selected.
#[test]
fn on_run_end_sees_results_schemas_and_the_selection() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(
        d,
        "dbt_project.yml",
        "name: h\nconfig-version: 2\non-run-end:\n  - \"create table main.run_log as select '{{ results | map(attribute='node') | map(attribute='name') | join(',') }}' as names, '{{ results | map(attribute='status') | join(',') }}' as statuses, '{{ schemas | join(',') }}' as schemas, '{{ database_schemas | length }}' as pairs, {{ selected_resources | length }} as selected\"\n",
    );
    write(d, "models/a.sql", "select 1 as id\n");
    write(d, "models/b.sql", "select 2 as id\n");
    let out = kiln(d).args(["run", "-s", "a"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = kiln(d).args(["show", "--inline", "select * from main.run_log", "-o", "json"]).output().unwrap();
    assert_eq!(stdout(&out).trim(), r#"{"names":"a","statuses":"success","schemas":"main","pairs":"1","selected":1}"#, "{}", stderr(&out));
}

/// `source_status:fresher` selects the sources loaded since the `--state` run's freshness check
/// (by the current `target/sources.json`), and `+` what reads them.
#[test]
fn source_status_fresher_selects_newly_loaded_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: f\nconfig-version: 2\nseeds:\n  f:\n    +column_types:\n      loaded_at: timestamp\n");
    write(d, "seeds/a_raw.csv", "id,loaded_at\n1,2026-01-01 00:00:00\n");
    write(d, "seeds/b_raw.csv", "id,loaded_at\n1,2026-01-01 00:00:00\n");
    write(
        d,
        "models/sources.yml",
        "version: 2\nsources:\n  - name: app\n    schema: main\n    loaded_at_field: loaded_at\n    freshness:\n      warn_after: {count: 1, period: day}\n    tables:\n      - {name: a, identifier: a_raw}\n      - {name: b, identifier: b_raw}\n",
    );
    write(d, "models/from_a.sql", "select * from {{ source('app', 'a') }}\n");
    let ok = |args: &[&str]| {
        let out = kiln(d).args(args).output().unwrap();
        assert!(matches!(out.status.code(), Some(0 | 1)) && !stderr(&out).contains("panicked"), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    ok(&["seed"]);
    ok(&["source", "freshness"]);
    ok(&["parse"]);
    std::fs::create_dir_all(d.join("prev")).unwrap();
    for f in ["manifest.json", "sources.json"] {
        std::fs::copy(d.join("target").join(f), d.join("prev").join(f)).unwrap();
    }
    write(d, "seeds/a_raw.csv", "id,loaded_at\n1,2026-01-01 00:00:00\n2,2026-06-01 00:00:00\n");
    ok(&["seed"]);
    ok(&["source", "freshness"]);
    let ls = |sel: &str| ok(&["ls", "-s", sel, "--state", "prev", "-o", "name"]).lines().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(ls("source_status:fresher"), ["app.a"]);
    assert_eq!(ls("source_status:fresher+"), ["app.a", "from_a"]);
}
