//! BigQuery's REST API (v2): jobs, their results, tables, datasets and load uploads. Every call
//! is async and returns an [`EngineError`] that says what BigQuery answered: the reason, the
//! message, the position in the SQL (`at [line:col]`) and whether it is worth retrying.
//!
//! A job is submitted with an id kiln chooses (so a retried submission cannot run twice and a
//! cancelled run can cancel it), then awaited with `getQueryResults`' long poll: BigQuery holds
//! the request until the job ends or 10 s pass, so no fixed sleep slows short queries down.

use super::auth::Credentials;
use super::connect::{Priority, Settings};
use crate::engine::{EngineError, ErrorKind};
use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a request may go unanswered (a long poll gets its own length on top).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Api {
    http: reqwest::Client,
    credentials: Credentials,
    pub settings: Settings,
}

/// A finished job: its resource (`status`, `statistics`, `jobReference`).
pub struct Done {
    pub job: Json,
}

impl Done {
    pub fn id(&self) -> &str {
        self.job["jobReference"]["jobId"].as_str().unwrap_or_default()
    }

    pub fn location(&self) -> Option<&str> {
        self.job["jobReference"]["location"].as_str()
    }

    /// A job statistic (a number as text in the API), 0 when absent.
    pub fn statistic(&self, path: &[&str]) -> u64 {
        let mut v = &self.job["statistics"];
        for key in path {
            v = &v[*key];
        }
        v.as_str().and_then(|n| n.parse().ok()).or_else(|| v.as_u64()).unwrap_or(0)
    }

    /// Rows changed by a DML statement, or written by a load job.
    pub fn rows(&self) -> Option<u64> {
        let s = &self.job["statistics"];
        [&s["query"]["numDmlAffectedRows"], &s["load"]["outputRows"]].iter().find_map(|v| v.as_str().and_then(|n| n.parse().ok()))
    }
}

/// An error BigQuery returned: the first `reason`, the message and the HTTP status.
fn bigquery_error(status: u16, body: &Json) -> EngineError {
    let e = if body["error"].is_object() { &body["error"] } else { body };
    let reason = e["errors"][0]["reason"].as_str().or_else(|| e["reason"].as_str()).unwrap_or("");
    let message = e["message"].as_str().unwrap_or("no message").to_string();
    classify(status, reason, message)
}

/// Reasons after which the same request may pass (dbt-bigquery retries these too).
const RETRYABLE: &[&str] = &["rateLimitExceeded", "backendError", "internalError", "jobRateLimitExceeded"];

/// Turns BigQuery's answer into an [`EngineError`]: auth and quota failures say so, SQL errors
/// keep their position.
pub fn classify(status: u16, reason: &str, message: String) -> EngineError {
    let retryable = RETRYABLE.contains(&reason) || matches!(status, 429 | 500 | 502 | 503 | 504);
    let (kind, message) = match (status, reason) {
        (401, _) | (_, "authError" | "unauthorized") => (
            ErrorKind::Connection,
            format!("BigQuery refused the credentials ({message}); check the target's `method` and its key or token"),
        ),
        (403, "accessDenied") | (_, "accessDenied") => (ErrorKind::Query, format!("access denied: {message}")),
        (_, "quotaExceeded") => (ErrorKind::Query, format!("a BigQuery quota was exceeded: {message}")),
        (_, "bytesBilledLimitExceeded") => {
            (ErrorKind::Query, format!("{message} (the target's `maximum_bytes_billed` stopped the query; raise it or select less)"))
        }
        (_, "stopped") => (ErrorKind::Cancelled, format!("the job was cancelled: {message}")),
        _ if retryable => (
            ErrorKind::Connection,
            format!("BigQuery is unavailable ({reason}{}): {message}", if status > 0 { format!(", HTTP {status}") } else { String::new() }),
        ),
        _ => (ErrorKind::Query, message),
    };
    EngineError { position: sql_position(&message), message, kind }
}

fn is_retryable(e: &EngineError) -> bool {
    e.kind == ErrorKind::Connection && e.message.starts_with("BigQuery is unavailable")
}

/// BigQuery's `at [line:column]` in an error message (1-based).
pub fn sql_position(message: &str) -> Option<(usize, usize)> {
    let start = message.rfind("at [")? + 4;
    let (line, rest) = message[start..].split_once(':')?;
    let col = rest.split(']').next()?;
    Some((line.trim().parse().ok()?, col.trim().parse().ok()?))
}

impl Api {
    pub fn new(settings: Settings, credentials: Credentials) -> Result<Api, EngineError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| EngineError::new(format!("starting the HTTP client: {e}")))?;
        Ok(Api { http, credentials, settings })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/bigquery/v2/projects/{}/{path}", self.settings.endpoint, self.settings.execution_project)
    }

    /// Sends one request (given up after two minutes without an answer); retries (with
    /// backoff) what BigQuery says may pass, up to `job_retries` times.
    async fn call(&self, method: reqwest::Method, url: &str, query: &[(&str, String)], body: Option<&Json>) -> Result<Json, EngineError> {
        self.call_timed(method, url, query, body, REQUEST_TIMEOUT).await
    }

    /// [`Api::call`] with its own timeout: `job_creation_timeout_seconds` for a job's
    /// submission, the poll's length and a margin for a long poll.
    async fn call_timed(
        &self,
        method: reqwest::Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<&Json>,
        timeout: Duration,
    ) -> Result<Json, EngineError> {
        let mut attempt = 0;
        loop {
            let result = self.call_once(method.clone(), url, query, body, timeout).await;
            match result {
                Err(e) if is_retryable(&e) && attempt < self.settings.job_retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500 << attempt.min(6))).await;
                }
                other => return other,
            }
        }
    }

    async fn call_once(
        &self,
        method: reqwest::Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<&Json>,
        timeout: Duration,
    ) -> Result<Json, EngineError> {
        let mut request = self.http.request(method, url).query(query).timeout(timeout);
        if let Some(token) = self.credentials.token().await? {
            request = request.bearer_auth(token);
        }
        if let Some(b) = body {
            request = request.header("content-type", "application/json").body(b.to_string());
        }
        self.answer(request).await
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<Json, EngineError> {
        let response = request.send().await.map_err(|e| {
            let what = if e.is_timeout() { "timed out" } else { "failed" };
            EngineError::of_kind(
                ErrorKind::Connection,
                format!(
                    "BigQuery is unavailable (request {what}): {} at {}",
                    std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string()),
                    self.settings.endpoint
                ),
            )
        })?;
        let status = response.status().as_u16();
        let text =
            response.text().await.map_err(|e| EngineError::of_kind(ErrorKind::Connection, format!("reading BigQuery's answer: {e}")))?;
        let body: Json =
            serde_json::from_str(&text).unwrap_or_else(|_| json!({"error": {"message": text.chars().take(300).collect::<String>()}}));
        if status >= 400 { Err(bigquery_error(status, &body)) } else { Ok(body) }
    }

    /// Runs a job with `configuration` until it ends; fails with the job's error. A job that
    /// fails with a retryable error (a backend error, a rate limit) runs again as a new job, up
    /// to `job_retries` times. `cancel`, once set, cancels the job in BigQuery.
    pub async fn run(&self, configuration: Json, cancel: Option<Arc<AtomicBool>>) -> Result<Done, EngineError> {
        let mut attempt = 0;
        loop {
            match self.attempt(configuration.clone(), cancel.clone()).await? {
                Err(e) if is_retryable(&e) && attempt < self.settings.job_retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500 << attempt.min(6))).await;
                }
                finished => return finished,
            }
        }
    }

    /// Submits one job and waits for it: `Err` when BigQuery could not be asked (requests are
    /// retried with the same job id, so the job never runs twice), `Ok(Err)` when the job ran
    /// and failed.
    async fn attempt(&self, mut configuration: Json, cancel: Option<Arc<AtomicBool>>) -> Result<Result<Done, EngineError>, EngineError> {
        if let Some(query) = configuration.get_mut("query") {
            query["useLegacySql"] = json!(false);
            if self.settings.priority == Priority::Batch {
                query["priority"] = json!("BATCH");
            }
            if let Some(max) = self.settings.maximum_bytes_billed {
                query["maximumBytesBilled"] = json!(max.to_string());
            }
        }
        if let Some(t) = self.settings.job_execution_timeout {
            configuration["jobTimeoutMs"] = json!(t.as_millis().to_string());
        }
        let id = format!("kiln_{}", uuid::Uuid::new_v4().simple());
        let mut reference = json!({"projectId": self.settings.execution_project, "jobId": id});
        if let Some(l) = &self.settings.location {
            reference["location"] = json!(l);
        }
        let job = json!({"jobReference": reference, "configuration": configuration});
        let timeout = self.settings.job_creation_timeout.unwrap_or(REQUEST_TIMEOUT);
        let inserted = match self.call_timed(reqwest::Method::POST, &self.url("jobs"), &[], Some(&job), timeout).await {
            // A retried submission that had reached BigQuery: the job exists, wait for it.
            Err(e) if e.message.contains("Already Exists") => self.get_job(&id, self.settings.location.as_deref()).await?,
            other => other?,
        };
        let done = Done { job: inserted };
        let finished = self.wait(done, cancel).await?;
        Ok(match finished.job["status"].get("errorResult") {
            Some(e) if e.is_object() => {
                Err(classify(0, e["reason"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or("the job failed").to_string()))
            }
            _ => Ok(finished),
        })
    }

    async fn wait(&self, mut done: Done, cancel: Option<Arc<AtomicBool>>) -> Result<Done, EngineError> {
        while done.job["status"]["state"] != "DONE" {
            if cancel.as_ref().is_some_and(|c| c.load(Ordering::SeqCst)) {
                self.cancel(&done).await;
                return Err(EngineError::of_kind(
                    ErrorKind::Cancelled,
                    format!("the run was interrupted; job {} was cancelled", done.id()),
                ));
            }
            let id = done.id().to_string();
            let location = done.location().map(str::to_string);
            let poll = self.results_page(&id, location.as_deref(), Some(0), None, 10_000);
            let polled = match cancel.clone() {
                None => poll.await?,
                Some(flag) => tokio::select! {
                    r = poll => r?,
                    () = crate::engine::cancelled(flag) => continue,
                },
            };
            if polled["jobComplete"] == true {
                done = Done { job: self.get_job(&id, location.as_deref()).await? };
            }
        }
        Ok(done)
    }

    async fn get_job(&self, id: &str, location: Option<&str>) -> Result<Json, EngineError> {
        let query: Vec<(&str, String)> = location.map(|l| ("location", l.to_string())).into_iter().collect();
        self.call(reqwest::Method::GET, &self.url(&format!("jobs/{id}")), &query, None).await
    }

    /// Asks BigQuery to stop the job; a failure to ask is not an error of the run.
    pub async fn cancel(&self, done: &Done) {
        let query: Vec<(&str, String)> = done.location().map(|l| ("location", l.to_string())).into_iter().collect();
        let _ =
            self.call_once(reqwest::Method::POST, &self.url(&format!("jobs/{}/cancel", done.id())), &query, None, REQUEST_TIMEOUT).await;
    }

    /// One page of a query job's results (`getQueryResults`), timestamps as microseconds.
    pub async fn results_page(
        &self,
        id: &str,
        location: Option<&str>,
        max: Option<usize>,
        page: Option<&str>,
        timeout_ms: u64,
    ) -> Result<Json, EngineError> {
        let mut query = vec![("timeoutMs", timeout_ms.to_string()), ("formatOptions.useInt64Timestamp", "true".to_string())];
        query.extend(location.map(|l| ("location", l.to_string())));
        query.extend(max.map(|m| ("maxResults", m.to_string())));
        query.extend(page.map(|p| ("pageToken", p.to_string())));
        let timeout = Duration::from_millis(timeout_ms) + REQUEST_TIMEOUT;
        self.call_timed(reqwest::Method::GET, &self.url(&format!("queries/{id}")), &query, None, timeout).await
    }

    /// The schema and rows of a finished query job, at most `limit` rows.
    pub async fn rows(&self, done: &Done, limit: Option<usize>) -> Result<(Json, Vec<Json>), EngineError> {
        let mut rows = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let want = limit.map(|l| l.saturating_sub(rows.len()));
            let answer = self.results_page(done.id(), done.location(), want, page.as_deref(), 10_000).await?;
            rows.extend(answer["rows"].as_array().cloned().unwrap_or_default());
            page = answer["pageToken"].as_str().map(str::to_string);
            if page.is_none() || limit.is_some_and(|l| rows.len() >= l) {
                return Ok((answer["schema"].clone(), rows));
            }
        }
    }

    /// The table resource of `project.dataset.table`, or `None` when it does not exist.
    pub async fn table(&self, project: &str, dataset: &str, table: &str) -> Result<Option<Json>, EngineError> {
        let url = format!("{}/bigquery/v2/projects/{project}/datasets/{dataset}/tables/{table}", self.settings.endpoint);
        match self.call(reqwest::Method::GET, &url, &[], None).await {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.message.starts_with("Not found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The datasets of `project`, by name.
    pub async fn list_datasets(&self, project: &str) -> Result<Vec<String>, EngineError> {
        let url = format!("{}/bigquery/v2/projects/{project}/datasets", self.settings.endpoint);
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let query: Vec<(&str, String)> = page.iter().map(|p| ("pageToken", p.clone())).collect();
            let answer = self.call(reqwest::Method::GET, &url, &query, None).await?;
            out.extend(
                answer["datasets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d["datasetReference"]["datasetId"].as_str().map(str::to_string)),
            );
            page = answer["nextPageToken"].as_str().map(str::to_string);
            if page.is_none() {
                out.sort();
                return Ok(out);
            }
        }
    }

    /// (name, `table` or `view`) of every relation in `project.dataset`, by name; none when
    /// the dataset does not exist.
    pub async fn list_tables(&self, project: &str, dataset: &str) -> Result<Vec<(String, String)>, EngineError> {
        let url = format!("{}/bigquery/v2/projects/{project}/datasets/{dataset}/tables", self.settings.endpoint);
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let query: Vec<(&str, String)> = page.iter().map(|p| ("pageToken", p.clone())).collect();
            let answer = match self.call(reqwest::Method::GET, &url, &query, None).await {
                Err(e) if e.message.starts_with("Not found") => return Ok(vec![]),
                other => other?,
            };
            for t in answer["tables"].as_array().into_iter().flatten() {
                let kind = if matches!(t["type"].as_str(), Some("VIEW" | "MATERIALIZED_VIEW")) { "view" } else { "table" };
                out.push((t["tableReference"]["tableId"].as_str().unwrap_or_default().to_string(), kind.to_string()));
            }
            page = answer["nextPageToken"].as_str().map(str::to_string);
            if page.is_none() {
                out.sort();
                return Ok(out);
            }
        }
    }

    /// The dataset resource of `project.dataset`.
    pub async fn dataset(&self, project: &str, dataset: &str) -> Result<Json, EngineError> {
        let url = format!("{}/bigquery/v2/projects/{project}/datasets/{dataset}", self.settings.endpoint);
        self.call(reqwest::Method::GET, &url, &[], None).await
    }

    /// Authorizes view `view` (project, dataset, table) in `project.dataset` (an access entry),
    /// unless it is already; dbt-bigquery's `grant_access_to`.
    pub async fn authorize_view(&self, view: Json, project: &str, dataset: &str) -> Result<(), EngineError> {
        let current = self.dataset(project, dataset).await?;
        let mut access = current["access"].as_array().cloned().unwrap_or_default();
        if access.iter().any(|a| a["view"] == view) {
            return Ok(());
        }
        access.push(json!({"view": view}));
        let url = format!("{}/bigquery/v2/projects/{project}/datasets/{dataset}", self.settings.endpoint);
        self.call(reqwest::Method::PATCH, &url, &[], Some(&json!({"access": access}))).await.map(|_| ())
    }

    /// Creates the dataset unless it exists (in the target's `location`).
    pub async fn create_dataset(&self, project: &str, dataset: &str) -> Result<(), EngineError> {
        let url = format!("{}/bigquery/v2/projects/{project}/datasets", self.settings.endpoint);
        let mut body = json!({"datasetReference": {"projectId": project, "datasetId": dataset}});
        if let Some(l) = &self.settings.location {
            body["location"] = json!(l);
        }
        match self.call(reqwest::Method::POST, &url, &[], Some(&body)).await {
            Err(e) if e.message.contains("Already Exists") || e.message.contains("already exists") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// A load job whose data is uploaded with it (`uploadType=multipart`).
    pub async fn load(&self, load: Json, data: Vec<u8>) -> Result<Done, EngineError> {
        let mut reference =
            json!({"projectId": self.settings.execution_project, "jobId": format!("kiln_{}", uuid::Uuid::new_v4().simple())});
        if let Some(l) = &self.settings.location {
            reference["location"] = json!(l);
        }
        let meta = json!({"jobReference": reference, "configuration": {"load": load}});
        let boundary = format!("kiln_{}", uuid::Uuid::new_v4().simple());
        let mut body = format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
        body.extend_from_slice(&data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let url = format!("{}/upload/bigquery/v2/projects/{}/jobs", self.settings.endpoint, self.settings.execution_project);
        let mut request = self
            .http
            .post(url)
            .query(&[("uploadType", "multipart")])
            .header("content-type", format!("multipart/related; boundary={boundary}"))
            .body(body);
        if let Some(token) = self.credentials.token().await? {
            request = request.bearer_auth(token);
        }
        let done = self.wait(Done { job: self.answer(request).await? }, None).await?;
        match done.job["status"].get("errorResult") {
            Some(e) if e.is_object() => {
                let detail: Vec<String> = done.job["status"]["errors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["message"].as_str().map(str::to_string))
                    .take(5)
                    .collect();
                Err(EngineError::new(format!(
                    "the load job failed: {}{}",
                    e["message"].as_str().unwrap_or(""),
                    if detail.len() > 1 { format!("\n  {}", detail.join("\n  ")) } else { String::new() }
                )))
            }
            _ => Ok(done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_bigquery_answered() {
        let e = classify(400, "invalidQuery", "Unrecognized name: ordr_id; Did you mean order_id? at [14:12]".into());
        assert_eq!((e.kind, e.position), (ErrorKind::Query, Some((14, 12))));
        let e = bigquery_error(
            403,
            &json!({"error": {"code": 403, "message": "Quota exceeded: Your project exceeded quota for concurrent queries", "errors": [{"reason": "quotaExceeded"}]}}),
        );
        assert!(
            e.message.starts_with("a BigQuery quota was exceeded: Quota exceeded: Your project exceeded quota for concurrent queries"),
            "{}",
            e.message
        );
        let e = bigquery_error(
            401,
            &json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "errors": [{"reason": "authError"}]}}),
        );
        assert_eq!(e.kind, ErrorKind::Connection);
        assert!(e.message.contains("refused the credentials"), "{}", e.message);
        let e = bigquery_error(503, &json!({"error": {"message": "Service unavailable", "errors": [{"reason": "backendError"}]}}));
        assert!(is_retryable(&e), "{}", e.message);
        assert!(!is_retryable(&classify(400, "invalidQuery", "Syntax error".into())));
        assert_eq!(sql_position("Syntax error: Unexpected end of script at [3:1]"), Some((3, 1)));
        assert_eq!(sql_position("no position"), None);
    }
}
