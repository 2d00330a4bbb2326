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
