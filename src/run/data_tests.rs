//! Data tests: dbt's `get_test_sql` wrapper around a test's query, and how its result becomes
//! pass, warn or fail (`severity`, `fail_calc`, `warn_if`, `error_if`, `limit`).

use super::runner::Status;
use crate::parse::Node;
use crate::project::config::ConfigMap;
use serde_json::Value as Json;

/// A test's judging configs, with dbt's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct TestConfig {
    /// `severity: error` (the default) or `warn`.
    pub error: bool,
    pub fail_calc: String,
    pub warn_if: String,
    pub error_if: String,
    pub limit: Option<u64>,
}

fn text(node: &Node, inline: &ConfigMap, key: &str, default: &str) -> String {
    match setting(node, inline, key, default) {
        Some(Json::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Json::Number(n)) => n.to_string(),
        _ => default.to_string(),
    }
}

/// A config the user set (in properties files or the project) wins over one the test's macro
/// set with `config()`, which wins over dbt's default.
fn setting<'a>(node: &'a Node, inline: &'a ConfigMap, key: &str, default: &str) -> Option<&'a Json> {
    let set = node.config.get(key).filter(|v| !v.is_null());
    let by_user =
        node.unrendered_config.contains_key(key) || set.is_some_and(|v| v.as_str().is_none_or(|s| !s.eq_ignore_ascii_case(default)));
    if by_user { set } else { inline.get(key).or(set) }
}

impl TestConfig {
    /// The test's configs; `inline` holds what `config()` calls in the test's own macro set,
    /// which the project and properties files override (dbt's order).
    pub fn of(node: &Node, inline: &ConfigMap) -> TestConfig {
        TestConfig {
            error: !text(node, inline, "severity", "error").eq_ignore_ascii_case("warn"),
            fail_calc: text(node, inline, "fail_calc", "count(*)"),
            warn_if: text(node, inline, "warn_if", "!= 0"),
            error_if: text(node, inline, "error_if", "!= 0"),
            limit: setting(node, inline, "limit", "").and_then(|l| l.as_u64().or_else(|| l.as_str().and_then(|s| s.trim().parse().ok()))),
        }
    }
}

/// Where a test keeps its failing rows: `Some("table" | "view")`, or `None` when it does not.
/// `store_failures_as` wins over `store_failures`, which wins over `--store-failures`.
pub fn store_as(node: &Node, flag: bool) -> Option<&'static str> {
    match node.config.get("store_failures_as").and_then(Json::as_str) {
        Some("ephemeral") => return None,
        Some("view") => return Some("view"),
        Some("table") => return Some("table"),
        _ => {}
    }
    let store = crate::project::config::json_truthy(node.config.get("store_failures")).unwrap_or(flag);
    store.then_some("table")
}

/// The query that judges a test: one row of `failures`, `should_warn`, `should_error`.
pub fn wrap(main_sql: &str, cfg: &TestConfig) -> String {
    let limit = cfg.limit.map(|l| format!("\n    limit {l}")).unwrap_or_default();
    let calc = &cfg.fail_calc;
    format!(
        "select\n    {calc} as failures,\n    {calc} {warn} as should_warn,\n    {calc} {error} as should_error\nfrom (\n    {sql}{limit}\n) dbt_internal_test",
        warn = cfg.warn_if,
        error = cfg.error_if,
        sql = main_sql.trim().trim_end_matches(';'),
    )
}

fn as_bool(v: &Json) -> bool {
    match v {
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Json::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "t" | "1"),
        _ => false,
    }
}

/// Reads the wrapper's row: (status, failures, message).
pub fn judge(cfg: &TestConfig, columns: &[String], row: Option<&Vec<Json>>) -> (Status, u64, String) {
    let get = |name: &str| {
        let i = columns.iter().position(|c| c.eq_ignore_ascii_case(name))?;
        row?.get(i)
    };
    let failures = get("failures")
        .and_then(|v| {
            v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)).or_else(|| v.as_str().and_then(|s| s.parse::<f64>().ok().map(|f| f as u64)))
        })
        .unwrap_or(0);
    let should_warn = get("should_warn").is_some_and(as_bool);
    let should_error = get("should_error").is_some_and(as_bool);
    let plural = if failures == 1 { "result" } else { "results" };
    if cfg.error && should_error {
        (Status::Fail, failures, format!("Got {failures} {plural}, configured to fail if {}", cfg.error_if))
    } else if should_warn {
        (Status::Warn, failures, format!("Got {failures} {plural}, configured to warn if {}", cfg.warn_if))
    } else {
        // dbt counts failures only for tests that warn or fail.
        (Status::Pass, 0, "PASS".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(error: bool, warn_if: &str, error_if: &str) -> TestConfig {
        TestConfig { error, fail_calc: "count(*)".into(), warn_if: warn_if.into(), error_if: error_if.into(), limit: None }
    }

    fn row(failures: u64, warn: bool, error: bool) -> Vec<Json> {
        vec![Json::from(failures), Json::from(warn), Json::from(error)]
    }

    #[test]
    fn judges_like_dbt() {
        let cols = ["failures".to_string(), "should_warn".into(), "should_error".into()];
        // severity error: error_if decides fail, else warn_if decides warn
        assert_eq!(judge(&cfg(true, "!= 0", "!= 0"), &cols, Some(&row(3, true, true))).0, Status::Fail);
        assert_eq!(judge(&cfg(true, "!= 0", ">10"), &cols, Some(&row(3, true, false))).0, Status::Warn);
        assert_eq!(judge(&cfg(true, "!= 0", "!= 0"), &cols, Some(&row(0, false, false))).0, Status::Pass);
        // severity warn never fails
        assert_eq!(judge(&cfg(false, "!= 0", "!= 0"), &cols, Some(&row(3, true, true))).0, Status::Warn);
        assert_eq!(judge(&cfg(false, ">5", "!= 0"), &cols, Some(&row(3, false, true))).0, Status::Pass);
        // A passing test reports no failures, as dbt writes it, even when rows came back.
        assert_eq!(judge(&cfg(true, ">5", ">5"), &cols, Some(&row(3, false, false))), (Status::Pass, 0, "PASS".into()));
        let (_, n, msg) = judge(&cfg(true, "!= 0", "!= 0"), &cols, Some(&row(1, true, true)));
        assert_eq!((n, msg.as_str()), (1, "Got 1 result, configured to fail if != 0"));
    }

    #[test]
    fn wraps_like_get_test_sql() {
        let mut c = cfg(true, "!= 0", ">= 2");
        c.limit = Some(10);
        let sql = wrap("select * from t where x is null;", &c);
        assert!(sql.contains("count(*) >= 2 as should_error"), "{sql}");
        assert!(sql.contains("select * from t where x is null\n    limit 10\n) dbt_internal_test"), "{sql}");
    }
}
