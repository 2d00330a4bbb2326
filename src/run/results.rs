//! `target/run_results.json` in dbt's schema (v6).

use super::runner::{NodeResult, Status};
use serde_json::{Value as Json, json};

pub const RUN_RESULTS_SCHEMA: &str = "https://schemas.getdbt.com/dbt/run-results/v6.json";

/// A result's whole message: its diagnostic rendered as text when it has one.
pub fn text(r: &NodeResult) -> String {
    r.diagnostic.as_deref().map_or_else(|| r.message.clone(), |d| crate::diagnostics::render::human(d, false))
}

/// dbt's `adapter_response`: the message, its code and the rows, with what the warehouse
/// reported (BigQuery's `bytes_processed`, `bytes_billed`, `slot_ms`, `job_id`, `location`,
/// `project_id`).
pub fn adapter_response(r: &NodeResult, scrub: &dyn Fn(&str) -> String) -> Json {
    let mut out = if r.rows.is_some() || r.status == Status::Success {
        let code = r.message.split_whitespace().next().unwrap_or("");
        json!({"_message": scrub(&r.message), "code": code, "rows_affected": r.rows})
    } else {
        json!({})
    };
    if let (Some(map), Some(reported)) = (out.as_object_mut(), &r.response) {
        map.extend(reported.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}

pub fn run_results(results: &[NodeResult], invocation_id: &str, elapsed: f64, args: Json, scrub: &dyn Fn(&str) -> String) -> Json {
    let generated_at = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    json!({
        "metadata": {
            "dbt_schema_version": RUN_RESULTS_SCHEMA,
            "dbt_version": crate::DBT_COMPAT_VERSION,
            "generated_at": generated_at,
            "invocation_id": invocation_id,
            "invocation_started_at": generated_at,
            "env": {},
        },
        "results": results.iter().map(|r| json!({
            "status": r.status.as_str(),
            "timing": [
                {"name": "compile", "started_at": r.started_at, "completed_at": r.started_at},
                {"name": "execute", "started_at": r.started_at, "completed_at": r.completed_at},
            ],
            "thread_id": format!("Thread-{}", r.thread + 1),
            "execution_time": r.seconds,
            "adapter_response": adapter_response(r, scrub),
            "message": if r.status == Status::Pass { Json::Null } else { Json::from(scrub(&text(r))) },
            "failures": r.failures,
            "unique_id": r.unique_id,
            "compiled": r.compiled.is_some(),
            "compiled_code": r.compiled.as_deref().map(scrub),
            "relation_name": r.relation,
            "batch_results": null,
        })).collect::<Vec<_>>(),
        "elapsed_time": elapsed,
        "args": args,
    })
}
