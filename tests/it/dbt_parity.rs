//! Compiled SQL parity with dbt itself: dbt-core 1.10 with dbt-duckdb compiles the golden
//! projects, kiln compiles them with the same DuckDB profile, and every compiled file must be
//! the same SQL (whitespace aside). `KILN_TEST_DBT` names the `dbt` executable; `.ci/run`
//! installs it from PyPI.

use crate::common::*;
use std::path::Path;

fn normalize(sql: &str) -> String {
    let collapsed = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.replace("( ", "(").replace(" )", ")")
}

fn files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn parity(project: &str, target: &str, profiles: &str) {
    let Some(dbt) = std::env::var_os("KILN_TEST_DBT") else {
        assert!(std::env::var_os("CI").is_none(), "KILN_TEST_DBT must be set in CI (see .ci/run)");
        eprintln!("KILN_TEST_DBT not set: skipping the dbt parity test outside CI");
        return;
    };
    let tmp = temp_project(&format!("projects/{project}"));
    let d = tmp.path();
    std::fs::write(d.join("profiles/profiles.yml"), profiles).unwrap();
    let dbt_run = |args: &[&str]| {
        let out = std::process::Command::new(&dbt)
            .args(args)
            .args(["--profiles-dir", "profiles", "--target", target])
            .current_dir(d)
            .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
            .output()
            .expect("dbt runs");
        assert!(out.status.success(), "dbt {args:?} failed:\n{}", String::from_utf8_lossy(&out.stdout));
    };
    if d.join("packages.yml").exists() {
        dbt_run(&["deps"]);
    }
    dbt_run(&["compile"]);
    std::fs::rename(d.join("target"), d.join("dbt-target")).unwrap();
    let out = run(d, &["compile", "--profiles-dir", "profiles", "--target", target]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dbt_dir = d.join("dbt-target/compiled").join(project);
    let kiln_dir = d.join("target/compiled").join(project);
    let dbt_files = files(&dbt_dir);
    assert!(dbt_files.len() >= 3, "dbt compiled too little: {dbt_files:?}");
    let mut mismatches = Vec::new();
    for f in &dbt_files {
        let theirs = normalize(&std::fs::read_to_string(dbt_dir.join(f)).unwrap());
        match std::fs::read_to_string(kiln_dir.join(f)) {
            Ok(ours) if normalize(&ours) == theirs => {}
            Ok(ours) => mismatches.push(format!("{f}\n  dbt : {theirs}\n  kiln: {}", normalize(&ours))),
            Err(_) => mismatches.push(format!("{f}: not written by kiln")),
        }
    }
    assert!(mismatches.is_empty(), "{} of {} files differ from dbt:\n{}", mismatches.len(), dbt_files.len(), mismatches.join("\n"));
}

const SHOP_DUCKDB: &str =
    "shop:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: shop.duckdb\n      schema: main\n      threads: 2\n";

#[test]
fn shop_compiles_like_dbt_duckdb() {
    parity("shop", "dev", SHOP_DUCKDB);
}

#[test]
fn cross_database_macros_compile_like_dbt_duckdb() {
    parity("xdb", "duck", "xdb:\n  target: duck\n  outputs:\n    duck:\n      type: duckdb\n      path: warehouse.duckdb\n");
}
