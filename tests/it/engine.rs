//! The embedded DataFusion engine, end to end: the real binary builds projects in temporary
//! directories, and the tests read the resulting tables back.

use crate::common::*;
use serde_json::Value;
use std::path::Path;

/// A copy of the repository's example project (the root is itself a kiln project).
pub fn example_project() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    for dir in ["models", "seeds", "macros", "data_tests", "data"] {
        copy_dir(&root.join(dir), &tmp.path().join(dir));
    }
    std::fs::copy(root.join("dbt_project.yml"), tmp.path().join("dbt_project.yml")).unwrap();
    tmp
}

/// Rows of a query as JSON objects.
fn query(dir: &Path, sql: &str) -> Vec<Value> {
    let out = run(dir, &["show", "--inline", sql, "--limit", "100000", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "query failed: {sql}\n{}", stderr(&out));
    stdout(&out).lines().map(|l| serde_json::from_str(l).expect("JSON row")).collect()
}

fn scalar(dir: &Path, sql: &str) -> Value {
    let rows = query(dir, sql);
    rows[0].as_object().unwrap().values().next().unwrap().clone()
}

#[test]
fn example_project_builds_and_rebuilds() {
    let tmp = example_project();
    let d = tmp.path();
    let out = run(d, &["build"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("PASS=35 WARN=0 ERROR=0 SKIP=0 TOTAL=35"), "{}", stderr(&out));
    // The SQL that ran, laid out as dbt does: generic tests under their YAML file's path.
    let run_dir = d.join("target/kiln/run/coffee_shop/models/staging");
    assert!(run_dir.join("stg_customers.sql").is_file());
    assert!(run_dir.join("_staging.yml").is_dir(), "tests go in a directory named after their YAML file");
    assert!(
        std::fs::read_dir(run_dir.join("_staging.yml")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("unique_stg_"))
    );
    // Seeds, views over seeds and external files, tables, the ephemeral model inlined.
    assert_eq!(scalar(d, "select count(*) from {{ ref('raw_orders') }}"), 200);
    assert_eq!(
        scalar(d, "select count(*) from {{ ref('stg_order_items') }}"),
        scalar(d, "select count(*) from {{ source('shop_exports', 'order_items') }}")
    );
    assert_eq!(scalar(d, "select count(*) from {{ ref('fct_orders') }}"), 200);
    assert_eq!(scalar(d, "select count(*) from {{ ref('dim_customers') }}"), 50);
    let paid = scalar(d, "select round(sum(amount), 2) from {{ ref('fct_orders') }}");
    let payments = scalar(d, "select round(sum(amount_cents) / 100.0, 2) from {{ ref('raw_payments') }}");
    assert_eq!(paid, payments, "every payment ends up in fct_orders");
    // column_types: order_date was loaded as a date.
    let types = query(d, "select arrow_typeof(order_date) as t from {{ ref('raw_orders') }} limit 1");
    assert_eq!(types[0]["t"], "Date32");
    // A second build in another process sees the first one's tables; the incremental model
    // merges on order_id instead of duplicating.
    let out = run(d, &["build"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(scalar(d, "select count(*) from {{ ref('fct_orders') }}"), 200);
    assert_eq!(scalar(d, "select count(distinct order_id) from {{ ref('fct_orders') }}"), 200);
    let results: Value = serde_json::from_str(&std::fs::read_to_string(d.join("target/kiln/run_results.json")).unwrap()).unwrap();
    assert_eq!(results["metadata"]["dbt_schema_version"], "https://schemas.getdbt.com/dbt/run-results/v6.json");
    assert_eq!(
        results["results"].as_array().unwrap().len(),
        35,
        "4 seeds, 9 models (the ephemeral one is inlined), 21 data tests, 1 unit test"
    );
    assert!(d.join("target/kiln/run/coffee_shop/models/marts/fct_orders.sql").exists());
}

#[test]
fn incremental_strategies_across_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: inc\nconfig-version: 2\n");
    write(d, "seeds/events.csv", "id,v\n1,a\n2,b\n");
    let model = |strategy: &str| {
        format!(
            "{{{{ config(materialized='incremental', unique_key='id', incremental_strategy='{strategy}') }}}}\nselect id, v from {{{{ ref('events') }}}}\n{{% if is_incremental() %}}where id >= (select max(id) from {{{{ this }}}}){{% endif %}}\n"
        )
    };
    write(d, "models/appended.sql", &model("append"));
    write(d, "models/merged.sql", &model("merge"));
    write(d, "models/deleted_inserted.sql", &model("delete+insert"));
    assert_eq!(run(d, &["build"]).status.code(), Some(0));
    write(d, "seeds/events.csv", "id,v\n1,a\n2,B\n3,c\n");
    let out = run(d, &["build"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // append: rows with id >= 2 are added again (2 twice, 3 once).
    assert_eq!(
        query(d, "select id, v from {{ ref('appended') }} order by id, v"),
        serde_json::json!([{"id":1,"v":"a"},{"id":2,"v":"B"},{"id":2,"v":"b"},{"id":3,"v":"c"}]).as_array().unwrap().clone()
    );
    // merge and delete+insert: row 2 is replaced.
    for m in ["merged", "deleted_inserted"] {
        assert_eq!(
            query(d, &format!("select id, v from {{{{ ref('{m}') }}}} order by id")),
            serde_json::json!([{"id":1,"v":"a"},{"id":2,"v":"B"},{"id":3,"v":"c"}]).as_array().unwrap().clone(),
            "{m}"
        );
    }
    // --full-refresh rebuilds from scratch.
    assert_eq!(run(d, &["build", "--full-refresh"]).status.code(), Some(0));
    assert_eq!(scalar(d, "select count(*) from {{ ref('appended') }}"), 3);
}

#[test]
fn failure_skips_descendants_and_keeps_the_previous_table() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: fail\nconfig-version: 2\nmodels:\n  fail:\n    +materialized: table\n");
    write(d, "models/a.sql", "select 1 as id\n");
    write(d, "models/b.sql", "select id, 'first' as version from {{ ref('a') }}\n");
    write(d, "models/c.sql", "select * from {{ ref('b') }}\n");
    write(d, "models/other.sql", "select 2 as id\n");
    assert_eq!(run(d, &["run"]).status.code(), Some(0));
    // b now fails at run time (unknown column): c is skipped, other still runs.
    write(d, "models/b.sql", "select id, no_such_column from {{ ref('a') }}\n");
    let out = run(d, &["run"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("PASS=2 WARN=0 ERROR=1 SKIP=1 TOTAL=4"), "{err}");
    assert!(err.contains("no_such_column"), "{err}");
    // The previous version of b is still there and readable.
    assert_eq!(query(d, "select version from {{ ref('b') }}"), vec![serde_json::json!({"version": "first"})]);
    let results: Value = serde_json::from_str(&std::fs::read_to_string(d.join("target/run_results.json")).unwrap()).unwrap();
    let status: Vec<(&str, &str)> =
        results["results"].as_array().unwrap().iter().map(|r| (r["unique_id"].as_str().unwrap(), r["status"].as_str().unwrap())).collect();
    assert!(status.contains(&("model.fail.b", "error")) && status.contains(&("model.fail.c", "skipped")), "{status:?}");
}

/// Kills `kiln seed` while it writes a new version of a large table, then reads the table: the
/// previous version must be intact.
#[test]
fn killed_build_leaves_previous_version_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: atomic\nconfig-version: 2\n");
    let mut csv = String::from("id,name,amount\n");
    for i in 0..300_000 {
        csv.push_str(&format!("{i},customer_{i},{}.{:02}\n", i % 997, i % 100));
    }
    write(d, "seeds/big.csv", &csv);
    assert_eq!(run(d, &["seed"]).status.code(), Some(0));
    assert_eq!(scalar(d, "select count(*) from {{ ref('big') }}"), 300_000);
    // Second load with different data; kill it as soon as its new version directory appears.
    csv.push_str("300000,late,1.00\n");
    write(d, "seeds/big.csv", &csv);
    let table_dir = d.join(".kiln/warehouse/kiln/main/big");
    let mut child = kiln(d).args(["seed"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let start = std::time::Instant::now();
    let mut killed_mid_write = false;
    while start.elapsed() < std::time::Duration::from_secs(60) {
        if table_dir.join("v2").exists() {
            let _ = child.kill();
            killed_mid_write = std::fs::read_to_string(table_dir.join("_kiln_table.json")).unwrap().contains("\"version\":1");
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let _ = child.wait();
    assert!(killed_mid_write, "the second load was not caught mid-write");
    // The old version is served; a reader deletes nothing, not even the partial version.
    assert_eq!(scalar(d, "select count(*) from {{ ref('big') }}"), 300_000);
    assert!(table_dir.join("v1").exists() && table_dir.join("_kiln_table.json").exists());
    // The next writer replaces the partial version and publishes the new data.
    assert_eq!(run(d, &["seed"]).status.code(), Some(0));
    assert_eq!(scalar(d, "select count(*) from {{ ref('big') }}"), 300_001);
    // A third load: the version before the current one stays for readers that opened earlier,
    // older ones go.
    assert_eq!(run(d, &["seed"]).status.code(), Some(0));
    assert_eq!(versions(&table_dir), ["v2", "v3"]);
}

/// The version directories of a table, in order.
fn versions(table_dir: &Path) -> Vec<String> {
    let mut versions: Vec<String> = std::fs::read_dir(table_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('v'))
        .collect();
    versions.sort();
    versions
}

/// Stale versions are removed after a table is published, off the model's path, and are gone
/// once the engine is dropped; a table dropped and written again at once (its first version is
/// `v1` again) keeps its new version, which a removal still running must not take.
#[test]
fn a_table_dropped_and_written_again_keeps_its_new_version() {
    use kiln::engine::datafusion::{DataFusionEngine, MemorySettings};
    use kiln::engine::{Engine, Materialization, RelationName};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("warehouse");
    let lock = kiln::engine::datafusion::lock::WriterLock::try_acquire(&root, "test").unwrap().expect("free");
    let e = DataFusionEngine::open(&root, "db", "main", &MemorySettings { limit: None, spill_dir: None }, Default::default(), Some(lock))
        .unwrap();
    let t = RelationName { database: "db".into(), schema: "main".into(), name: "t".into() };
    let dir = root.join("db/main/t");
    for round in 0..20 {
        for n in 1..=3 {
            e.materialize(&t, &Materialization::table(format!("select * from range({n})")), &[]).unwrap();
        }
        // Publishing v3 left v1 to be removed; drop the table and write it again as v1.
        e.execute(r#"drop table "db"."main"."t""#).unwrap();
        e.materialize(&t, &Materialization::table("select * from range(7)"), &[]).unwrap();
        let n = e.query(r#"select count(*) from "db"."main"."t""#, None).unwrap().rows[0][0].clone();
        assert_eq!(n, serde_json::json!(7), "round {round}");
        assert!(dir.join("v1/part-0.parquet").is_file(), "round {round}");
    }
    // v2, v3, v4: v1 and v2 go in the background, and dropping the engine waits for them.
    for n in 2..=4 {
        e.materialize(&t, &Materialization::table(format!("select * from range({n})")), &[]).unwrap();
    }
    drop(e);
    assert_eq!(versions(&dir), ["v3", "v4"]);
}

#[test]
fn external_sources_in_csv_parquet_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: ext\nconfig-version: 2\n");
    write(d, "data/people.csv", "id,name\n1,ada\n2,ben\n");
    write(d, "data/events.json", "{\"id\": 1, \"kind\": \"click\"}\n{\"id\": 2, \"kind\": \"view\"}\n{\"id\": 2, \"kind\": \"click\"}\n");
    write(
        d,
        "models/sources.yml",
        "version: 2\nsources:\n  - name: files\n    meta:\n      external_location: \"data/{name}\"\n    tables:\n      - name: people\n        meta:\n          external_location: data/people.csv\n      - name: events\n        config:\n          external_location: data/events.json\n      - name: people_parquet\n        config:\n          external_location: out/people.parquet\n",
    );
    write(
        d,
        "models/joined.sql",
        "{{ config(materialized='table') }}\nselect p.name, count(*) as events from {{ source('files', 'people') }} p join {{ source('files', 'events') }} e on e.id = p.id group by p.name\n",
    );
    let out = run(d, &["run", "-s", "joined"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        query(d, "select name, events from {{ ref('joined') }} order by name"),
        serde_json::json!([{"name":"ada","events":1},{"name":"ben","events":2}]).as_array().unwrap().clone()
    );
    // Parquet: write one with DataFusion itself (COPY), then read it as a source.
    std::fs::create_dir_all(d.join("out")).unwrap();
    let out =
        run(d, &["show", "--inline", "copy (select * from {{ source('files', 'people') }}) to 'out/people.parquet' stored as parquet"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(scalar(d, "select count(*) from {{ source('files', 'people_parquet') }}"), 2);
}

#[test]
fn hooks_run_in_order_with_jinja() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(
        d,
        "dbt_project.yml",
        "name: hooks\nconfig-version: 2\non-run-start:\n  - \"copy (select '{{ target.name }}' as t) to 'run_start.csv' stored as csv\"\non-run-end:\n  - \"copy (select count(*) as n from {{ target.database }}.{{ target.schema }}.a) to 'run_end.csv' stored as csv\"\n",
    );
    write(
        d,
        "models/a.sql",
        "{{ config(materialized='table', pre_hook=\"copy (select 'pre' as phase) to 'pre_{{ this.name }}.csv' stored as csv\", post_hook=[\"copy (select count(*) as n from {{ this }}) to 'post_{{ this.name }}.csv' stored as csv\"]) }}\nselect 1 as id union all select 2\n",
    );
    let out = run(d, &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_else(|_| panic!("{f} was not written"));
    assert_eq!(read("run_start.csv").trim(), "t\ndev");
    assert_eq!(read("pre_a.csv").trim(), "phase\npre");
    assert_eq!(read("post_a.csv").trim(), "n\n2", "post-hooks run after the table exists");
    assert_eq!(read("run_end.csv").trim(), "n\n2");
    // A failing hook fails the model.
    write(d, "models/a.sql", "{{ config(materialized='table', post_hook='select * from no_such_table') }}\nselect 1 as id\n");
    let out = run(d, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("post-hook 1 failed"), "{}", stderr(&out));
}

#[test]
fn on_schema_change_modes() {
    for (mode, expect) in [
        ("ignore", Some(vec!["id", "a"])),
        ("append_new_columns", Some(vec!["id", "a", "b"])),
        ("sync_all_columns", Some(vec!["id", "b"])),
        ("fail", None),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "dbt_project.yml", "name: osc\nconfig-version: 2\n");
        let cfg = format!("{{{{ config(materialized='incremental', unique_key='id', on_schema_change='{mode}') }}}}\n");
        write(d, "models/m.sql", &format!("{cfg}select 1 as id, 'x' as a\n"));
        assert_eq!(run(d, &["run"]).status.code(), Some(0));
        write(d, "models/m.sql", &format!("{cfg}select 2 as id, 'y' as b\n"));
        let out = run(d, &["run"]);
        match expect {
            Some(cols) => {
                assert_eq!(out.status.code(), Some(0), "{mode}: {}", stderr(&out));
                let rows = query(d, "select * from {{ ref('m') }} order by id");
                let got: Vec<&str> = rows[0].as_object().unwrap().keys().map(String::as_str).collect();
                assert_eq!(got, cols, "{mode}");
                assert_eq!(rows.len(), 2, "{mode}: {rows:?}");
            }
            None => {
                assert_eq!(out.status.code(), Some(1), "{mode}");
                assert!(stderr(&out).contains("on_schema_change: fail"), "{}", stderr(&out));
                assert_eq!(scalar(d, "select count(*) from {{ ref('m') }}"), 1, "the table is unchanged");
            }
        }
    }
}

/// Every `dbt.*` cross-database macro, rendered for DataFusion and executed.
#[test]
fn cross_database_macros_run_on_datafusion() {
    let tmp = temp_project("projects/xdb");
    let d = tmp.path();
    let out = run(d, &["build", "--profiles-dir", "profiles"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(d, &["show", "--profiles-dir", "profiles", "-s", "cross_db", "-o", "json"]);
    let row: Value = serde_json::from_str(stdout(&out).lines().next().expect("a row")).unwrap();
    let expect = serde_json::json!({
        "month_start": "2024-03-01T00:00:00", "week_later": "2024-03-22T10:30:00", "month_end": "2024-03-31",
        "label": "O'Brien-a,b,c", "name_hash": "b8263da516a543f09399d4aecdbde4ab", "maybe_int": null, "id_text": "1",
        "id_big": 1, "flag_text": "true", "second_part": "b", "b_position": 3, "semicolons": "a;b;c", "tail": "b,c",
        "csv_length": 5, "literal": "it's", "escaped": "O'Brien",
    });
    for (k, v) in expect.as_object().unwrap() {
        assert_eq!(&row[k], v, "{k}");
    }
    assert!(row["age_days"].as_i64().unwrap() > 900, "datediff in days from 2024-03-15 to now");
    let out = run(d, &["show", "--profiles-dir", "profiles", "-s", "cross_db_aggregates", "-o", "json"]);
    let row: Value = serde_json::from_str(stdout(&out).lines().next().expect("a row")).unwrap();
    assert_eq!(row, serde_json::json!({"id": 1, "names": "O'Brien", "any_csv": "a,b,c", "any_flag": true}));
}

/// Ctrl-C during a build: running nodes finish, the rest are skipped, exit code 130, and
/// every table is either its previous or its new version.
#[test]
fn interrupt_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: intr\nconfig-version: 2\nmodels:\n  intr:\n    +materialized: table\n");
    let mut csv = String::from("id,amount\n");
    for i in 0..400_000 {
        csv.push_str(&format!("{i},{}\n", i % 1000));
    }
    write(d, "seeds/big.csv", &csv);
    for i in 0..5 {
        write(
            d,
            &format!("models/m{i}.sql"),
            &format!("select id % 97 as k, sum(amount) as total from {{{{ ref('big') }}}} group by 1 -- {i}\n"),
        );
    }
    let child =
        kiln(d).args(["build", "--threads", "1"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let seed_dir = d.join(".kiln/warehouse/kiln/main/big");
    let start = std::time::Instant::now();
    while !seed_dir.exists() && start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let results: Value = serde_json::from_str(&std::fs::read_to_string(d.join("target/run_results.json")).unwrap()).unwrap();
    let skipped = results["results"].as_array().unwrap().iter().filter(|r| r["status"] == "skipped").count();
    assert!(skipped >= 1, "models after the interrupt are skipped: {results}");
    // The seed was running when interrupted: its query was cancelled, so it is either complete
    // or not there at all, never partial.
    let out = run(d, &["show", "--inline", "select count(*) as n from {{ ref('big') }}", "-o", "json"]);
    assert!(out.status.code() != Some(0) || stdout(&out).contains("\"n\":400000"), "{}", stdout(&out));
}

/// SIGTERM during a long query ends kiln within seconds with exit 130: the query is cancelled,
/// its table keeps the previous version, and the run's artifacts are written.
#[test]
fn sigterm_cancels_a_long_query() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: term\nconfig-version: 2\nmodels:\n  term:\n    +materialized: table\n");
    write(d, "models/slow.sql", "select 1 as v\n");
    assert_eq!(run(d, &["run"]).status.code(), Some(0));
    write(d, "models/slow.sql", "select sum(value % 7) as v from range(50000000000)\n");
    let child = kiln(d).args(["run"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let (out, took) = terminate_after(child, std::time::Duration::from_millis(3000));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?} after SIGTERM\n{err}");
    assert!(err.contains("cancelled"), "{err}");
    assert_eq!(scalar(d, "select v from {{ ref('slow') }}"), 1, "the previous version");
    let results: Value = serde_json::from_str(&std::fs::read_to_string(d.join("target/run_results.json")).unwrap()).unwrap();
    assert_eq!(results["results"][0]["status"], "error", "{results}");
}

#[test]
fn external_materialization_writes_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: extm\nconfig-version: 2\n");
    write(
        d,
        "models/export.sql",
        "{{ config(materialized='external', location='lake/export.parquet') }}\nselect 1 as id, 'a' as v union all select 2, 'b'\n",
    );
    write(
        d,
        "models/export_csv.sql",
        "{{ config(materialized='external', location='lake/export.csv', format='csv') }}\nselect * from {{ ref('export') }}\n",
    );
    write(d, "models/downstream.sql", "select count(*) as n from {{ ref('export') }}\n");
    let out = run(d, &["run", "-s", "export", "export_csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(d.join("lake/export.parquet").exists());
    assert_eq!(std::fs::read_to_string(d.join("lake/export.csv")).unwrap().lines().count(), 3, "header and two rows");
    // A later process reads the files through ref().
    let out = run(d, &["run", "-s", "downstream"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(scalar(d, "select n from {{ ref('downstream') }}"), 2);
}

#[test]
fn malformed_seed_row_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: badcsv\nconfig-version: 2\n");
    write(d, "seeds/people.csv", "id,name\n1,a\n2,b,extra\n3,c\n");
    let out = run(d, &["seed"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("seeds/people.csv") && err.contains("line 3"), "{err}");
}

#[test]
fn sources_from_globs_and_hive_partitioned_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: globs\nconfig-version: 2\n");
    write(d, "data/parts/part-1.csv", "id\n1\n2\n");
    write(d, "data/parts/part-2.csv", "id\n3\n");
    write(d, "data/parts/ignored.txt", "not csv\n");
    write(d, "data/events/dt=2024-01-01/x.csv", "id,kind\n1,a\n");
    write(d, "data/events/dt=2024-01-02/x.csv", "id,kind\n2,b\n3,c\n");
    write(
        d,
        "models/src.yml",
        "version: 2\nsources:\n  - name: files\n    tables:\n      - name: parts\n        meta: {external_location: \"data/parts/part-*.csv\"}\n      - name: events\n        meta: {external_location: \"data/events/\", format: csv}\n",
    );
    assert_eq!(scalar(d, "select count(*) from {{ source('files', 'parts') }}"), 3);
    assert_eq!(
        query(d, "select dt, count(*) as n from {{ source('files', 'events') }} group by dt order by dt"),
        serde_json::json!([{"dt": "2024-01-01", "n": 1}, {"dt": "2024-01-02", "n": 2}]).as_array().unwrap().clone()
    );
}

/// The functions dbt projects commonly use, with PostgreSQL's results.
#[test]
fn common_dbt_functions_with_postgres_semantics() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: funcs\nconfig-version: 2\n");
    let rows = query(
        d,
        "select md5(1) as md5_int, md5(true) as md5_bool, md5('x') as md5_text, 'abc' ilike 'A%' as ilike, '3'::int + 1 as cast_op, \
         date_part('dow', cast('2024-01-07' as date)) as dow, split_part('a-b', '-', 2) as split, bool_or(x > 1) as any_gt_1, \
         string_agg(cast(x as varchar), ',' order by x) as agg, any_value(x) is not null as has_any, \
         datediff('month', cast('2024-01-31' as date), cast('2024-02-01' as date)) as months, \
         dateadd('day', -1, cast('2024-03-01' as date)) as prev_day, last_day(cast('2024-02-10' as date)) as eom \
         from (values (1), (2)) t(x)",
    );
    assert_eq!(
        rows[0],
        serde_json::json!({
            "md5_int": "c4ca4238a0b923820dcc509a6f75849b", "md5_bool": "b326b5062b2f0e69046810717534cb09",
            "md5_text": "9dd4e461268c8034f5c8564e155c67a6", "ilike": true, "cast_op": 4, "dow": 0, "split": "b",
            "any_gt_1": true, "agg": "1,2", "has_any": true, "months": 1, "prev_day": "2024-02-29T00:00:00", "eom": "2024-02-29",
        })
    );
}

/// Data tests read views through the engine's view memo: each view computed once, and
/// recomputed when anything below it is rebuilt.
#[test]
fn data_tests_share_views_and_see_rebuilds() {
    use kiln::engine::datafusion::{DataFusionEngine, MemorySettings};
    use kiln::engine::{Engine, Materialization, RelationName};
    let tmp = tempfile::tempdir().unwrap();
    let rel = |name: &str| RelationName { database: "db".into(), schema: "main".into(), name: name.into() };
    let table = |sql: &str| Materialization::table(sql);
    let view = |sql: &str| Materialization::view(sql);
    let count = |e: &DataFusionEngine, sql: &str| {
        let answers = e.query_tests(&[sql.to_string(), sql.to_string()]);
        let rows: Vec<Value> = answers.into_iter().map(|a| a.unwrap().rows[0][0].clone()).collect();
        assert_eq!(rows[0], rows[1]);
        // Outside tests too: views read the rebuilt relations below them.
        assert_eq!(e.query(sql, None).unwrap().rows[0][0], rows[0], "{sql}");
        rows[0].as_u64().unwrap()
    };
    for limit in [None, Some(2 << 20)] {
        let root = tmp.path().join(format!("{limit:?}"));
        let lock = kiln::engine::datafusion::lock::WriterLock::try_acquire(&root, "test").unwrap().expect("free");
        let e = DataFusionEngine::open(&root, "db", "main", &MemorySettings { limit, spill_dir: None }, Default::default(), Some(lock))
            .unwrap();
        e.materialize(&rel("t"), &table("select * from (values (1), (2), (3)) as v(id)"), &[]).unwrap();
        e.materialize(&rel("v1"), &view(r#"select id from "db"."main"."t""#), &[]).unwrap();
        e.materialize(&rel("v2"), &view(r#"select id from "db"."main"."v1" where id > 1"#), &[]).unwrap();
        let n = r#"select count(*) as n from "db"."main"."v2""#;
        assert_eq!(count(&e, n), 2);
        let kept = e.view_memo_bytes();
        assert!(kept > 0, "v1 and v2 are kept");
        // 800 KB of rows: over the memo's share of a 2 MB limit, so read without keeping it.
        e.materialize(&rel("big"), &view("select value from range(100000)"), &[]).unwrap();
        assert_eq!(count(&e, r#"select count(*) from "db"."main"."big""#), 100_000);
        if limit.is_some() {
            assert_eq!(e.view_memo_bytes(), kept);
        } else {
            assert!(e.view_memo_bytes() > kept + 800_000);
        }
        // The table under both views is rebuilt: both are computed again.
        e.materialize(&rel("t"), &table("select * from (values (1), (2), (3), (4), (5)) as v(id)"), &[]).unwrap();
        assert_eq!(count(&e, n), 4);
        // The middle view is replaced.
        e.materialize(&rel("v1"), &view(r#"select id + 10 as id from "db"."main"."t""#), &[]).unwrap();
        assert_eq!(count(&e, n), 5);
        assert_eq!(count(&e, r#"select count(*) from "db"."main"."v2" where id = 15"#), 1);
        // A statement of unknown effect forgets everything.
        e.execute(r#"create view "db"."main"."other" as select 1"#).unwrap();
        assert_eq!(e.view_memo_bytes(), 0);
    }
}

/// `--memory-limit` and the target's `memory_limit`: aggregations spill and finish, a join that
/// cannot fit fails with an error saying what to change, and a bad size names the problem.
#[test]
fn memory_limit_spills_or_explains() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: mem\nconfig-version: 2\nprofile: mem\nmodels:\n  +materialized: table\n");
    write(
        d,
        "profiles.yml",
        "mem:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: wh.duckdb\n      settings:\n        memory_limit: 40MB\n        temp_directory: spill\n",
    );
    // About 3 million groups: well over 40 MB of hash table.
    write(d, "models/grouped.sql", "select value % 3000000 as k, count(*) as n from range(6000000) group by 1\n");
    write(d, "models/joined.sql", "select count(*) as n from range(3000000) a join range(3000000) b on a.value = b.value\n");
    let out = run(d, &["build", "-s", "grouped"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(scalar(d, "select count(*) from {{ ref('grouped') }} where n = 2"), 3_000_000);
    assert!(d.join("spill").is_dir(), "the spill directory comes from the profile");
    let out = run(d, &["build", "-s", "joined", "--memory-limit", "8MB"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out) + &stderr(&out);
    assert!(text.contains("Resources exhausted") && text.contains("--memory-limit"), "{text}");
    let out = run(d, &["build", "-s", "grouped", "--memory-limit", "12 XB"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("`12 XB` is not a size") && text.contains("profiles.yml"), "{text}");
}

/// Window functions over sorted partitions (kiln's `SortedWindowExec`): `row_number`, `rank`,
/// `dense_rank` (ties), `ntile`, `lag`/`lead` (NULLs, offsets past the partition), running `sum`,
/// `count`, `min`, `max` over `rows` and `range` frames; the same with partitions split across
/// batches of two rows.
#[test]
fn window_functions_over_sorted_partitions() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: w\nconfig-version: 2\n");
    write(d, "seeds/w.csv", "id,k,t,v\n1,a,1,10\n2,a,2,\n3,a,2,5\n4,a,3,7\n5,b,1,1\n6,c,1,\n7,c,1,3\n8,c,5,2\n");
    write(
        d,
        "macros/explain.sql",
        "{% macro explain(sql) %}{% for row in run_query('explain ' ~ sql).rows %}{{ log(row[1], info=True) }}{% endfor %}{% endmacro %}\n",
    );
    assert_eq!(run(d, &["seed"]).status.code(), Some(0));
    let sql = "select id, \
        row_number() over (partition by k order by t, id) as rn, \
        rank() over (partition by k order by t) as rk, \
        dense_rank() over (partition by k order by t) as drk, \
        lag(v) over (partition by k order by t, id) as lg, \
        lead(v, 2) over (partition by k order by t, id) as ld, \
        sum(v) over (partition by k order by t, id rows between unbounded preceding and current row) as rs, \
        sum(v) over (partition by k order by t) as rsum, \
        count(v) over (partition by k order by t, id) as cnt, \
        min(v) over (partition by k order by t, id) as mn, \
        max(v) over (partition by k order by t, id) as mx, \
        ntile(3) over (partition by k order by t, id) as nt \
        from main.w order by id";
    let expected = [
        "1|1|1|1|null|5|10|10|1|10|10|1",
        "2|2|2|2|10|7|10|15|1|10|10|1",
        "3|3|2|2|null|null|15|15|2|5|10|2",
        "4|4|4|3|5|null|22|22|3|5|10|3",
        "5|1|1|1|null|null|1|1|1|1|1|1",
        "6|1|1|1|null|2|null|3|0|null|null|1",
        "7|2|1|1|null|null|3|3|1|3|3|2",
        "8|3|3|2|3|null|5|5|2|2|3|3",
    ];
    for batch_size in [None, Some("2")] {
        let mut cmd = kiln(d);
        cmd.args(["show", "--inline", sql, "--limit", "100", "-o", "json"]);
        if let Some(n) = batch_size {
            cmd.env("DATAFUSION_EXECUTION_BATCH_SIZE", n);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let rows: Vec<String> = stdout(&out)
            .lines()
            .map(|l| {
                let row: serde_json::Map<String, Value> = serde_json::from_str(l).unwrap();
                row.values().map(|v| v.to_string().trim_matches('"').to_string()).collect::<Vec<_>>().join("|")
            })
            .collect();
        assert_eq!(rows, expected, "batch size {batch_size:?}");
    }
    let out = run(d, &["run-operation", "explain", "--args", &serde_json::json!({ "sql": sql }).to_string()]);
    let plan = stdout(&out) + &stderr(&out);
    assert!(plan.contains("SortedWindowExec") && !plan.contains("WindowAggExec"), "every window runs in one pass:\n{plan}");
    // A running sum kiln does not compute itself (unsigned 64-bit values) stays DataFusion's.
    let sums = "select sum(cast(v as bigint unsigned)) over (partition by k order by t, id rows between unbounded preceding and current row) as s from main.w where v is not null order by id";
    let out = run(d, &["show", "--inline", sums, "--limit", "100", "-o", "json"]);
    let values: Vec<String> = stdout(&out).lines().map(|l| l.replace("{\"s\":", "").replace('}', "")).collect();
    assert_eq!(values, ["10", "15", "22", "1", "3", "5"], "{}", stderr(&out));
}

/// The first rows of each partition (`row_number() ... <= k`, kiln's `PartitionTopKExec`): ties
/// broken by the order keys, NULL partition keys, conjunctions and every spelling of the bound;
/// over many small batches; and, past its memory budget, the sort it falls back to.
#[test]
fn first_rows_per_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: t\nconfig-version: 2\n");
    write(d, "seeds/w.csv", "id,k,v\n1,a,5\n2,a,9\n3,a,9\n4,a,\n5,a,1\n6,b,3\n7,,4\n8,,4\n9,,2\n10,c,7\n");
    write(
        d,
        "macros/explain.sql",
        "{% macro explain(sql, how='') %}{% for row in run_query('explain ' ~ how ~ ' ' ~ sql).rows %}{{ log(row[1], info=True) }}{% endfor %}{% endmacro %}\n",
    );
    assert_eq!(run(d, &["seed"]).status.code(), Some(0));
    let ranked = "(select id, k, row_number() over (partition by k order by v desc nulls last, id) as rn from main.w) r";
    let cases = [
        ("rn <= 2", vec!["2|1", "3|2", "6|1", "7|1", "8|2", "10|1"]),
        ("2 >= rn", vec!["2|1", "3|2", "6|1", "7|1", "8|2", "10|1"]),
        ("rn < 2", vec!["2|1", "6|1", "7|1", "10|1"]),
        ("rn = 1", vec!["2|1", "6|1", "7|1", "10|1"]),
        ("rn <= 2 and id > 2", vec!["3|2", "6|1", "7|1", "8|2", "10|1"]),
        ("rn <= 9", vec!["1|3", "2|1", "3|2", "4|5", "5|4", "6|1", "7|1", "8|2", "9|3", "10|1"]),
    ];
    for (filter, expected) in cases {
        let sql = format!("select id, rn from {ranked} where {filter} order by id");
        for batch_size in ["8192", "2"] {
            let out = kiln(d)
                .args(["show", "--inline", &sql, "--limit", "100", "-o", "json"])
                .env("DATAFUSION_EXECUTION_BATCH_SIZE", batch_size)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            let rows: Vec<String> =
                stdout(&out).lines().map(|l| l.replace("{\"id\":", "").replace(",\"rn\":", "|").replace('}', "")).collect();
            assert_eq!(rows, expected, "where {filter}, batch size {batch_size}");
        }
        let out = run(d, &["run-operation", "explain", "--args", &serde_json::json!({ "sql": sql }).to_string()]);
        assert!((stdout(&out) + &stderr(&out)).contains("PartitionTopKExec: k="), "where {filter} keeps the first rows without a sort");
    }
    // Thousands of partitions (kept rows compacted as batches stream in), and 200,000 partitions
    // of one row under a memory limit whose budget they outgrow: the same rows as DataFusion's
    // own sort and window node (which `rn + 0` leaves in place).
    write(d, "models/many.sql", "select value as id, value % 997 as k, (value * 7919) % 10007 as v from range(200000)");
    assert_eq!(run(d, &["run", "-s", "many"]).status.code(), Some(0));
    for (partition, bound, limit, fell_back) in [("k", "<= 3", "2GB", false), ("id", "= 1", "40MB", true)] {
        let ranked =
            format!("(select id, v, row_number() over (partition by {partition} order by v desc, id) as rn from {{{{ ref('many') }}}}) r");
        let sums = |filter: &str| {
            let sql = format!("select count(*) as n, sum(id) as ids, sum(v) as vs from {ranked} where {filter}");
            let out = kiln(d).args(["show", "--inline", &sql, "-o", "json", "--memory-limit", limit]).output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            stdout(&out)
        };
        assert_eq!(sums(&format!("rn {bound}")), sums(&format!("rn + 0 {bound}")), "partition by {partition}, limit {limit}");
        let sql = format!("select * from {ranked} where rn {bound}").replace("{{ ref('many') }}", "main.many");
        let args = serde_json::json!({ "sql": sql, "how": "analyze" }).to_string();
        let out = run(d, &["run-operation", "explain", "--args", &args, "--memory-limit", limit]);
        let plan = stdout(&out) + &stderr(&out);
        assert!(plan.contains("PartitionTopKExec") && plan.contains("fell_back_to_sort="), "partition by {partition}:\n{plan}");
        assert_eq!(!plan.contains("fell_back_to_sort=0"), fell_back, "partition by {partition}:\n{plan}");
    }
}

#[test]
fn tables_are_written_in_row_groups_that_scan_in_parallel() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: t\nconfig-version: 2\nmodels:\n  t:\n    +materialized: table\n");
    write(d, "models/wide.sql", "select value as id, value % 3 as k from generate_series(1, 600000)\n");
    write(d, "models/small.sql", "select k, count(*) as n, sum(id) as total from {{ ref('wide') }} group by k\n");
    assert_eq!(run(d, &["run"]).status.code(), Some(0));
    let row_groups = |table: &str| -> Vec<i64> {
        let dir = d.join(".kiln/warehouse/kiln/main").join(table);
        let pointer: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("_kiln_table.json")).unwrap()).unwrap();
        let file = std::fs::File::open(dir.join(format!("v{}/part-0.parquet", pointer["version"])).as_path()).unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        reader.metadata().row_groups().iter().map(|g| g.num_rows()).collect()
    };
    // 2^19 rows per group: a 1M-row table is read back on two cores, not one.
    assert_eq!(row_groups("wide"), vec![524_288, 75_712]);
    assert_eq!(row_groups("small"), vec![3]);
    assert_eq!(scalar(d, "select sum(n) from {{ ref('small') }}"), 600_000);
    assert_eq!(scalar(d, "select sum(total) from {{ ref('small') }}"), 180_000_300_000i64);
    // DataFusion's own setting still decides when set.
    let out = kiln(d).args(["run", "-s", "wide"]).env("DATAFUSION_EXECUTION_PARQUET_MAX_ROW_GROUP_SIZE", "250000").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(row_groups("wide"), vec![250_000, 250_000, 100_000]);
}

/// `group by` one text column (kiln's `OneKeyAggregateExec`): the same rows as DataFusion's own
/// aggregation (which a second, redundant key leaves in place) for text short and long enough
/// to leave its view, NULL keys and no rows; past its group limit, the hand-over to
/// DataFusion's; and other key types left to DataFusion. The key is read by its dictionary
/// codes where no aggregate reads it, over row groups of 10,000 rows (a dictionary each), and
/// over text whose dictionary outgrows its page (`wide`: Parquet's writer falls back to plain
/// pages).
#[test]
fn group_by_one_column_as_datafusion_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: t\nconfig-version: 2\nmodels:\n  t:\n    +materialized: table\n");
    write(
        d,
        "macros/explain.sql",
        "{% macro explain(sql) %}{% for row in run_query('explain analyze ' ~ sql).rows %}{{ log(row[1], info=True) }}{% endfor %}{% endmacro %}\n",
    );
    write(
        d,
        "models/keys.sql",
        "select value as id,
            case when value % 11 = 0 then null else concat('k', cast(value % 7 as varchar)) end as short_text,
            case value % 3 when 0 then 'short' when 1 then concat('much longer than a view holds ', cast(value % 4 as varchar)) end as mixed_text,
            cast(value % 5 - 2 as tinyint) as tiny,
            cast(value % 4 as smallint unsigned) as small_unsigned,
            case when value % 13 = 0 then null else value % 9 - 4 end as big,
            arrow_cast(cast(value % 6 as int), 'Date32') as day,
            to_timestamp(1700000000 + (value % 5) * 3600) as at,
            cast((value * 7919) % 60013 as varchar) as scattered,
            case when value % 17 = 0 then null else value % 100 end as v,
            concat(repeat('a text to outgrow a dictionary page ', 4), cast(value % 40000 as varchar)) as wide
        from range(60000)\n",
    );
    let out = kiln(d).arg("run").env("DATAFUSION_EXECUTION_PARQUET_MAX_ROW_GROUP_SIZE", "10000").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = |sql: &str| {
        let out = run(d, &["show", "--inline", sql, "--limit", "100000", "-o", "json"]);
        assert_eq!(out.status.code(), Some(0), "{sql}\n{}", stderr(&out));
        stdout(&out)
    };
    // kiln's own count and BIGINT sum (`partly` is NULL for the group `k3` of `short_text`,
    // where every value is NULL) beside DataFusion's accumulators.
    let aggregates = "count(*) as n, count(v) as nv, count(short_text) as nk, sum(v) as total, \
        sum(case when id % 7 = 3 then null else id end) as partly, sum(tiny) as tiny_total, \
        min(v) as low, max(v) as high, avg(v) as mean";
    // Without an aggregate of the key, a text key is read by its codes.
    let by_code = "count(*) as n, sum(v) as total, max(v) as high, sum(tiny) as tiny_total";
    let keys = ["short_text", "mixed_text", "tiny", "small_unsigned", "big", "day", "at", "scattered", "wide"];
    for (key, aggregates) in keys.iter().flat_map(|k| [(k, aggregates), (k, by_code)]) {
        let ours = format!("select {key}, {aggregates} from main.keys group by {key}");
        let theirs = format!("select {key}, {aggregates} from main.keys group by {key}, {key} is null");
        let ordered = |sql: &str| format!("select * from ({sql}) g order by 1 nulls first");
        assert_eq!(rows(&ordered(&ours)), rows(&ordered(&theirs)), "group by {key}");
        let out = run(d, &["run-operation", "explain", "--args", &serde_json::json!({ "sql": ours }).to_string()]);
        let plan = stdout(&out) + &stderr(&out);
        let text = ["short_text", "mixed_text", "scattered", "wide"].contains(key);
        assert_eq!(plan.contains("OneKeyAggregateExec"), text, "group by {key}:\n{plan}");
        let reads_key = aggregates.contains(&format!("({key})"));
        assert_eq!(plan.contains(&format!("gby=[{key}@")) && plan.contains(" by code]"), text && !reads_key, "group by {key}:\n{plan}");
        // No rows at all: no groups.
        let none = format!("select count(*) as n from (select {key}, count(*) from main.keys where v < 0 group by {key}) g");
        assert_eq!(rows(&none).trim(), r#"{"n":0}"#, "group by {key}");
        // 60,000 distinct keys outgrow the groups one partition keeps: DataFusion takes over.
        if text {
            assert_eq!(!plan.contains("handed_over=0"), ["scattered", "wide"].contains(key), "group by {key}:\n{plan}");
        }
    }
}
