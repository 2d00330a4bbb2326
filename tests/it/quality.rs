//! Data tests, unit tests and contracts end to end: `kiln build` and `kiln test` on the quality
//! project, whose tests pass, warn and fail on purpose.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn results(dir: &Path) -> BTreeMap<String, Value> {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("target/run_results.json")).unwrap()).unwrap();
    doc["results"].as_array().unwrap().iter().map(|r| (r["unique_id"].as_str().unwrap().to_string(), r.clone())).collect()
}

/// The result whose unique id starts with `prefix` (generic tests end with a hash).
fn result<'a>(all: &'a BTreeMap<String, Value>, prefix: &str) -> &'a Value {
    let found: Vec<&Value> = all.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).collect();
    assert_eq!(found.len(), 1, "{prefix}: {:?}", all.keys().collect::<Vec<_>>());
    found[0]
}

fn status(all: &BTreeMap<String, Value>, prefix: &str) -> String {
    result(all, prefix)["status"].as_str().unwrap().to_string()
}

fn show(dir: &Path, sql: &str) -> String {
    let out = run(dir, &["show", "--inline", sql, "--limit", "100", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn build_runs_tests_in_order_and_gates_descendants() {
    let tmp = temp_project("projects/quality");
    let d = tmp.path();
    let out = run(d, &["build", "--junit-xml", "target/junit.xml"]);
    assert_eq!(out.status.code(), Some(1), "an error-severity failure exits 1:\n{}", stderr(&out));
    let r = results(d);
    // Passing tests of every kind: generic, custom generic, model-level, singular, seed, source.
    for p in [
        "test.quality.unique_stg_customers_customer_id.",
        "test.quality.relationships_stg_orders_customer_id__customer_id__ref_stg_customers_.",
        "test.quality.accepted_values_stg_orders_customer_id__False__1__2__3__9.",
        "test.quality.is_positive_stg_orders_amount.",
        "test.quality.has_rows_customer_revenue_.",
        "test.quality.assert_no_future_orders",
        "test.quality.unique_customers_customer_id.",
        "test.quality.source_unique_raw_payments_payment_id.",
        "unit_test.quality.customer_revenue.revenue_from_dict",
    ] {
        assert_eq!(status(&r, p), "pass", "{p}");
    }
    // `where` hides the duplicate order 14 (status placed) from the unique test.
    assert_eq!(result(&r, "test.quality.unique_stg_orders_order_id.")["failures"], 0);
    // severity: warn, warn_if/error_if, fail_calc and limit.
    assert_eq!(status(&r, "test.quality.not_null_stg_customers_email."), "warn");
    let tier = result(&r, "test.quality.accepted_values_stg_customers_tier__");
    assert_eq!((tier["status"].as_str(), tier["failures"].as_u64()), (Some("warn"), Some(1)), "1 failure: warn_if >0, error_if >1");
    let calc = result(&r, "test.quality.assert_orders_per_customer");
    assert_eq!((calc["status"].as_str(), calc["failures"].as_u64()), (Some("warn"), Some(6)), "fail_calc sum(n) = 6 orders");
    assert_eq!(result(&r, "test.quality.email_present_limited.")["failures"], 1);
    // A warning does not gate: customer_revenue (below stg_customers) was built.
    assert_eq!(status(&r, "model.quality.customer_revenue"), "success");
    // An error-severity failure skips what is downstream, unit tests included.
    let dup = result(&r, "test.quality.unique_order_audit_order_id.");
    assert_eq!((dup["status"].as_str(), dup["failures"].as_u64()), (Some("fail"), Some(1)));
    assert!(dup["message"].as_str().unwrap().contains("Got 1 result, configured to fail if != 0"), "{dup}");
    for p in [
        "model.quality.order_audit_summary",
        "test.quality.not_null_order_audit_summary_status.",
        "unit_test.quality.order_audit_summary.summary_counts_wrongly",
    ] {
        assert_eq!(status(&r, p), "skipped", "{p}");
    }
    // Disabled tests do not run.
    assert!(!r.keys().any(|k| k.contains("status_is_known_disabled")));
    // store_failures (with an alias) keeps the failing rows in the audit schema; store_failures_as: view too.
    assert!(show(d, "select * from main_dbt_test__audit.duplicate_order_ids").contains("\"unique_field\":14"));
    assert_eq!(
        result(&r, "test.quality.unique_order_audit_order_id.")["relation_name"],
        "\"kiln\".\"main_dbt_test__audit\".\"duplicate_order_ids\""
    );
    assert!(d.join(".kiln/warehouse/kiln/main_dbt_test__audit/not_null_order_audit_status/_kiln_view.json").exists());
    // Tests run after their model: every test finished after the model it tests started.
    let stderr = stderr(&out);
    let pos = |s: &str| stderr.find(s).unwrap_or_else(|| panic!("{s} not in\n{stderr}"));
    assert!(pos("main.order_audit...") < pos("unique_order_audit_order_id"));
    // JUnit: one testcase per node, a failure with the count, skipped nodes.
    let xml = std::fs::read_to_string(d.join("target/junit.xml")).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), r.len());
    assert!(xml.contains("<failure type=\"fail\" message=\"Got 1 result, configured to fail if != 0\">failures: 1"), "{xml}");
    assert!(xml.contains("name=\"order_audit_summary\" file=\"models/order_audit_summary.sql\""), "{xml}");
    assert!(xml.contains("<skipped message=\"skipped: upstream test `unique_order_audit_order_id` failed\""), "{xml}");
    assert!(xml.contains("<system-out>WARN: Got 1 result, configured to warn if != 0</system-out>"), "{xml}");
}

#[test]
fn test_command_selects_by_tag_and_resource_type() {
    let tmp = temp_project("projects/quality");
    let d = tmp.path();
    let out = run(d, &["build", "--exclude", "order_audit+"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // tag:finance: one generic test, one singular test, one unit test.
    let out = run(d, &["test", "-s", "tag:finance"]);
    assert_eq!(out.status.code(), Some(0), "warnings only:\n{}", stderr(&out));
    let r = results(d);
    assert_eq!(r.len(), 3, "{:?}", r.keys());
    assert_eq!(status(&r, "test.quality.accepted_values_stg_orders_status__completed__returned__placed."), "pass");
    assert_eq!(status(&r, "test.quality.assert_orders_per_customer"), "warn");
    assert_eq!(status(&r, "unit_test.quality.customer_revenue.revenue_from_csv_and_fixture"), "pass");
    // Unit tests only: the wrong one fails with a row diff.
    let out = run(d, &["test", "--resource-type", "unit_test"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = results(d);
    assert_eq!(r.len(), 6);
    assert!(r.keys().all(|k| k.starts_with("unit_test.")));
    assert_eq!(status(&r, "unit_test.quality.order_audit_summary.summary_counts_wrongly"), "fail");
    let err = stderr(&out);
    assert!(err.contains("actual differs from expected") && err.contains("- | placed | 3") && err.contains("+ | placed | 2"), "{err}");
    for name in [
        "revenue_from_dict",
        "revenue_from_csv_and_fixture",
        "region_from_env_override",
        "vip_from_sql_with_var_override",
        "incremental_keeps_only_new_orders",
    ] {
        let id = r.keys().find(|k| k.ends_with(name)).unwrap();
        assert_eq!(r[id]["status"], "pass", "{name}: {}", r[id]["message"]);
    }
}

#[test]
fn store_failures_flag_keeps_failing_rows_of_any_test() {
    let tmp = temp_project("projects/quality");
    let d = tmp.path();
    let out = run(d, &["build", "-s", "customers", "orders", "stg_customers", "stg_orders", "--exclude", "test_type:unit"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(d, &["test", "-s", "stg_customers", "--store-failures"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = show(d, "select * from main_dbt_test__audit.not_null_stg_customers_email");
    assert!(rows.contains("\"name\":\"Bob\""), "the whole failing row is kept: {rows}");
    assert!(
        stderr(&out).contains("See the failing rows: select * from \"kiln\".\"main_dbt_test__audit\".\"not_null_stg_customers_email\"")
    );
}

/// Unit tests that cannot run say why, naming what to fix.
#[test]
fn unit_test_mistakes_are_clear_errors() {
    let tmp = temp_project("projects/quality");
    let d = tmp.path();
    std::fs::write(
        d.join("models/more_unit_tests.yml"),
        "version: 2\nunit_tests:\n\
         - name: missing_input\n  model: customer_revenue\n  given:\n    - input: ref('stg_orders')\n      rows: []\n  expect:\n    rows: []\n\
         - name: unknown_column\n  model: vip_customers\n  given:\n    - input: ref('customer_revenue')\n      rows: [{customer_id: 1, revenue: 500}]\n  expect:\n    rows: [{client: 1}]\n\
         - name: no_fixture\n  model: vip_customers\n  given:\n    - input: ref('customer_revenue')\n      format: csv\n      fixture: nowhere\n  expect:\n    rows: []\n\
         - name: bad_value\n  model: vip_customers\n  given:\n    - input: ref('customer_revenue')\n      rows: [{revenue: lots}]\n  expect:\n    rows: []\n",
    )
    .unwrap();
    let out = run(d, &["test", "-s", "missing_input", "unknown_column", "no_fixture", "bad_value"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = results(d);
    let message = |name: &str| {
        let id = r.keys().find(|k| k.ends_with(name)).unwrap_or_else(|| panic!("{name} did not run: {:?}", r.keys()));
        assert_eq!(r[id]["status"], "error");
        r[id]["message"].as_str().unwrap().to_string()
    };
    assert!(
        message("missing_input").contains("reads ref('stg_customers'), which the test does not give; add `- input: ref('stg_customers')`")
    );
    // Static analysis finds the expected column the model lacks before the test runs.
    assert!(message("unknown_column").contains("unit test `unknown_column` expects a column `client`, which its model does not return"));
    assert!(message("no_fixture").contains("no fixture file `nowhere.csv` under tests/fixtures/"));
    assert!(message("bad_value").contains("the rows do not fit the columns' types"));
    // Without static analysis, the test itself says so when it runs.
    let out = run(d, &["test", "-s", "unknown_column", "--static-analysis", "off"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = results(d);
    let id = r.keys().find(|k| k.ends_with("unknown_column")).expect("ran");
    let text = r[id]["message"].as_str().unwrap_or_default();
    assert!(
        text.contains("the expected column `client` is not in the output of model `vip_customers` (it has: customer_id, name, revenue)"),
        "{text}"
    );
}

const CONTRACT_MODEL: &str = "select customer_id, name, cast(revenue as double) as revenue from {{ ref('customer_revenue') }}\n";

fn contract_yaml(columns: &str) -> String {
    format!("version: 2\nmodels:\n  - name: contracted\n    config:\n      contract: {{enforced: true}}\n    columns:\n{columns}")
}

const GOOD_COLUMNS: &str = "      - {name: revenue, data_type: double, constraints: [{type: check, expression: \"revenue > 0\"}]}\n      - {name: customer_id, data_type: bigint, constraints: [{type: primary_key}, {type: foreign_key, to: \"ref('stg_customers')\", to_columns: [customer_id]}]}\n      - {name: name, data_type: varchar}\n";

#[test]
fn contracts_check_columns_and_constraints_and_keep_the_previous_table() {
    let tmp = temp_project("projects/quality");
    let d = tmp.path();
    std::fs::write(d.join("models/contracted.sql"), CONTRACT_MODEL).unwrap();
    std::fs::write(d.join("models/contract.yml"), contract_yaml(GOOD_COLUMNS)).unwrap();
    let out = run(d, &["build", "-s", "+contracted", "vip_customers", "--exclude", "test_type:data", "test_type:unit"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Built in contract order.
    let before = show(d, "select * from contracted order by customer_id");
    assert!(before.starts_with("{\"revenue\":120.5,\"customer_id\":1,\"name\":\"Ada\"}"), "{before}");
    let cases = [
        (
            "wrong type",
            GOOD_COLUMNS.replace("data_type: bigint", "data_type: integer"),
            "| customer_id | BIGINT          | INTEGER       | data type mismatch",
        ),
        (
            "missing column",
            GOOD_COLUMNS
                .replace("{name: name, data_type: varchar}", "{name: name, data_type: varchar}\n      - {name: email, data_type: varchar}"),
            "| email       |                 | VARCHAR       | missing in definition",
        ),
        (
            "extra column",
            GOOD_COLUMNS.replace("      - {name: name, data_type: varchar}\n", ""),
            "| name        | VARCHAR         |               | missing in contract",
        ),
        (
            "no data_type",
            GOOD_COLUMNS.replace("{name: name, data_type: varchar}", "{name: name}"),
            "these columns have no `data_type`: name",
        ),
        ("check", GOOD_COLUMNS.replace("revenue > 0", "revenue > 100"), "constraint check `revenue > 100` is violated by 1 row"),
        (
            "foreign key",
            GOOD_COLUMNS.replace("ref('stg_customers')", "ref('vip_customers')"),
            "constraint foreign_key on `customer_id` referencing",
        ),
    ];
    // Static analysis finds a contract that differs in names or types before the build runs.
    std::fs::write(d.join("models/contract.yml"), contract_yaml(&cases[0].1)).unwrap();
    let out = run(d, &["run", "-s", "contracted"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("`customer_id` is BIGINT in the model's SQL, integer in the contract"), "{}", stderr(&out));
    assert_eq!(show(d, "select * from contracted order by customer_id"), before, "the previous table stays");
    // The build's own checks, as dbt's.
    for (what, columns, expected) in cases {
        std::fs::write(d.join("models/contract.yml"), contract_yaml(&columns)).unwrap();
        let out = run(d, &["run", "-s", "contracted", "--static-analysis", "off"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{what}: expected `{expected}` in\n{}", stderr(&out));
        assert_eq!(show(d, "select * from contracted order by customer_id"), before, "{what}: the previous table stays");
    }
}

#[test]
fn testing_unbuilt_models_says_to_build_first() {
    let tmp = temp_project("projects/quality");
    let out = run(tmp.path(), &["test", "-s", "stg_customers", "--exclude", "test_type:unit"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("table 'kiln.main.stg_customers' not found"), "{err}");
    assert!(err.contains("help: build what the test reads first"), "{err}");
}
