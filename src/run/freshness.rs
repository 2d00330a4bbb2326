//! `source freshness`: how long ago each source was loaded (the newest `loaded_at_field`, or
//! the value of `loaded_at_query`),
//! judged against its `warn_after`/`error_after`, and `target/sources.json` in dbt's schema
//! (v3). The rules are dbt-core's (`FreshnessThreshold.status`, `collect_freshness`).

use serde_json::{Value as Json, json};

pub const SOURCES_SCHEMA: &str = "https://schemas.getdbt.com/dbt/sources/v3.json";

/// A source's freshness status, as dbt names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    Pass,
    Warn,
    Error,
    RuntimeError,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Pass => "pass",
            Freshness::Warn => "warn",
            Freshness::Error => "error",
            Freshness::RuntimeError => "runtime error",
        }
    }
}

/// Whether a source has freshness criteria (dbt's `has_freshness`): a `warn_after` or an
/// `error_after` with both `count` and `period`.
pub fn has_criteria(freshness: &Json) -> bool {
    ["warn_after", "error_after"].iter().any(|k| threshold_seconds(&freshness[*k]).is_some())
}

/// `{count, period}` in seconds (`period`: minute, hour or day).
fn threshold_seconds(t: &Json) -> Option<f64> {
    let count = t["count"].as_f64()?;
    let unit = match t["period"].as_str()? {
        "minute" => 60.0,
        "hour" => 3600.0,
        "day" => 86400.0,
        _ => return None,
    };
    Some(count * unit)
}

/// dbt's `FreshnessThreshold.status`: error when older than `error_after`, else warn when
/// older than `warn_after`, else pass.
pub fn status(criteria: &Json, age_seconds: f64) -> Freshness {
    let exceeded = |k: &str| threshold_seconds(&criteria[k]).is_some_and(|limit| age_seconds > limit);
    if exceeded("error_after") {
        Freshness::Error
    } else if exceeded("warn_after") {
        Freshness::Warn
    } else {
        Freshness::Pass
    }
}

/// dbt's `collect_freshness` query, with the age in seconds computed by the warehouse (a
/// timestamp without a time zone counts as UTC, as dbt takes it).
pub fn query(relation: &str, loaded_at_field: &str, filter: Option<&str>) -> String {
    let filter = filter.map(|f| format!("\nwhere {f}")).unwrap_or_default();
    format!(
        "select\n  max({loaded_at_field}) as max_loaded_at,\n  current_timestamp as snapshotted_at,\n  \
         extract(epoch from current_timestamp) - extract(epoch from max({loaded_at_field})) as age\nfrom {relation}{filter}"
    )
}

/// dbt's `collect_freshness_custom_sql` for a `loaded_at_query` (rendered), with the age
/// computed as [`query`] does.
pub fn custom_query(loaded_at_query: &str) -> String {
    format!(
        "with source_query as (\n    {loaded_at_query}\n)\nselect\n  (select * from source_query) as max_loaded_at,\n  \
         current_timestamp as snapshotted_at,\n  \
         extract(epoch from current_timestamp) - extract(epoch from (select * from source_query)) as age"
    )
}

/// One source's result for `sources.json`.
pub struct SourceResult {
    pub unique_id: String,
    pub status: Freshness,
    /// (max_loaded_at, snapshotted_at, age in seconds), or the error.
    pub outcome: Result<(String, String, f64), String>,
    pub criteria: Json,
    pub seconds: f64,
    pub thread: usize,
}

/// `target/sources.json` (dbt's schema v3).
pub fn sources_json(results: &[SourceResult], invocation_id: &str, generated_at: &str, elapsed: f64) -> Json {
    let results: Vec<Json> = results
        .iter()
        .map(|r| match &r.outcome {
            Ok((max_loaded_at, snapshotted_at, age)) => json!({
                "unique_id": r.unique_id,
                "max_loaded_at": max_loaded_at,
                "snapshotted_at": snapshotted_at,
                "max_loaded_at_time_ago_in_s": age,
                "status": r.status.as_str(),
                "criteria": criteria(&r.criteria),
                "adapter_response": {},
                "timing": [],
                "thread_id": format!("Thread-{}", r.thread + 1),
                "execution_time": r.seconds,
            }),
            Err(error) => json!({"unique_id": r.unique_id, "error": error, "status": r.status.as_str()}),
        })
        .collect();
    json!({
        "metadata": {
            "dbt_schema_version": SOURCES_SCHEMA,
            "dbt_version": crate::DBT_COMPAT_VERSION,
            "generated_at": generated_at,
            "invocation_id": invocation_id,
            "invocation_started_at": generated_at,
            "env": {},
        },
        "results": results,
        "elapsed_time": elapsed,
    })
}

/// The criteria as dbt writes them: both thresholds (null fields when unset) and the filter.
fn criteria(c: &Json) -> Json {
    let time = |t: &Json| json!({"count": t.get("count").cloned().unwrap_or(Json::Null), "period": t.get("period").cloned().unwrap_or(Json::Null)});
    json!({"warn_after": time(&c["warn_after"]), "error_after": time(&c["error_after"]), "filter": c.get("filter").cloned().unwrap_or(Json::Null)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_as_dbt() {
        let c = json!({"warn_after": {"count": 1, "period": "hour"}, "error_after": {"count": 1, "period": "day"}});
        assert_eq!(status(&c, 60.0), Freshness::Pass);
        assert_eq!(status(&c, 3600.0), Freshness::Pass, "exceeded means strictly older");
        assert_eq!(status(&c, 3601.0), Freshness::Warn);
        assert_eq!(status(&c, 90000.0), Freshness::Error);
        assert!(has_criteria(&c));
        assert!(!has_criteria(&json!({"warn_after": {"count": 1}})), "a threshold needs a period");
        assert!(!has_criteria(&Json::Null));
    }
}
