//! Golden tests: compiled SQL of dbt-style projects, per dialect, snapshotted.

use crate::common::*;

fn compile(project: &str, args: &[&str]) -> (tempfile::TempDir, String) {
    let tmp = temp_project(&format!("projects/{project}"));
    let mut argv = vec!["compile"];
    argv.extend_from_slice(args);
    let out = run(tmp.path(), &argv);
    assert_eq!(out.status.code(), Some(0), "compile failed:\n{}", stderr(&out));
    let tree = dump_tree(&tmp.path().join("target/compiled"));
    (tmp, tree)
}

#[test]
fn shop_compiles_for_datafusion() {
    let (_tmp, tree) = compile("shop", &["--profiles-dir", "profiles"]);
    insta::assert_snapshot!("shop_datafusion", tree);
}

#[test]
fn shop_compiles_for_postgres() {
    let (_tmp, tree) = compile("shop", &["--profiles-dir", "profiles", "-t", "pg"]);
    insta::assert_snapshot!("shop_postgres", tree);
}

#[test]
fn shop_compiles_for_bigquery() {
    let (_tmp, tree) = compile("shop", &["--profiles-dir", "profiles", "-t", "bq"]);
    insta::assert_snapshot!("shop_bigquery", tree);
}

#[test]
fn events_compiles_with_ephemerals_inlined() {
    let (tmp, tree) = compile("events", &[]);
    // Ephemeral models are inlined, never written on their own.
    assert!(!tree.contains("---- events/models/intermediate/"), "ephemeral models must not be written");
    let activity = std::fs::read_to_string(tmp.path().join("target/compiled/events/models/marts/user_activity.sql")).unwrap();
    let first = activity.find("__dbt__cte__int_events_typed as (").expect("int_events_typed inlined");
    let second = activity.find("__dbt__cte__int_user_sessions as (").expect("int_user_sessions inlined");
    assert!(first < second, "an ephemeral's own ephemeral parents come first");
    assert_eq!(activity.matches("__dbt__cte__int_events_typed as (").count(), 1, "each CTE once");
    insta::assert_snapshot!("events_datafusion", tree);
}

#[test]
fn manifest_follows_dbt_schema() {
    let (tmp, _) = compile("shop", &["--profiles-dir", "profiles", "-t", "pg"]);
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("target/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["metadata"]["dbt_schema_version"], "https://schemas.getdbt.com/dbt/manifest/v12.json");
    assert_eq!(m["metadata"]["adapter_type"], "postgres");
    let orders = &m["nodes"]["model.shop.orders"];
    assert_eq!(orders["relation_name"], "\"shop\".\"analytics_marts\".\"orders\"");
    assert_eq!(orders["config"]["materialized"], "table");
    assert_eq!(orders["config"]["tags"], serde_json::json!(["finance", "daily"]));
    assert_eq!(m["parent_map"]["model.shop.orders"], serde_json::json!(["model.shop.stg_orders", "model.shop.stg_payments"]));
    assert!(m["child_map"]["model.shop.stg_orders"].as_array().unwrap().contains(&serde_json::json!("model.shop.orders")));
    let test = m["nodes"].as_object().unwrap().values().find(|n| n["name"] == "not_null_orders_order_id").expect("generic test");
    assert_eq!(test["test_metadata"]["name"], "not_null");
    assert_eq!(test["attached_node"], "model.shop.orders");
    assert!(m["macros"]["macro.dbt_utils.generate_surrogate_key"].is_object());
    // The password of the pg target never reaches an artifact.
    let text = std::fs::read_to_string(tmp.path().join("target/manifest.json")).unwrap();
    assert!(!text.contains("not-a-real-password"));
}

/// Validates manifest.json with the `dbt-artifacts-parser` package (the reader orchestrators
/// use). `KILN_TEST_PYTHON` names a Python with it installed; `.ci/run` sets it up.
#[test]
fn manifest_is_read_by_dbt_artifacts_parser() {
    let Some(python) = peer("KILN_TEST_PYTHON", "dbt-artifacts-parser validation") else { return };
    for (project, args) in [("shop", vec!["--profiles-dir", "profiles"]), ("events", vec![])] {
        let (tmp, _) = compile(project, &args);
        let script = "import json,sys\nfrom dbt_artifacts_parser.parser import parse_manifest\nm=parse_manifest(json.load(open(sys.argv[1])))\nprint(type(m).__name__, len(m.nodes))";
        let out = std::process::Command::new(&python)
            .arg("-c")
            .arg(script)
            .arg(tmp.path().join("target/manifest.json"))
            .output()
            .expect("python runs");
        assert!(out.status.success(), "{project}: dbt-artifacts-parser rejected manifest.json:\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("ManifestV12"), "{}", String::from_utf8_lossy(&out.stdout));
    }
}

/// Every `dbt.*` cross-database macro, rendered for each dialect; `compile` also checks that the
/// result parses in that dialect.
#[test]
fn cross_database_macros_per_dialect() {
    for target in ["df", "duck", "pg", "bq"] {
        let (_tmp, tree) = compile("xdb", &["--profiles-dir", "profiles", "-t", target]);
        insta::assert_snapshot!(format!("xdb_{target}"), tree);
    }
}
