//! A dbt-bigquery target's settings, typed, and the credentials they name.
//!
//! `method` is dbt-bigquery's: `service-account` (`keyfile`), `service-account-json`
//! (`keyfile_json`), `oauth` (application default credentials: `GOOGLE_APPLICATION_CREDENTIALS`,
//! then gcloud's `application_default_credentials.json`, then the metadata server) and
//! `oauth-secrets` (`token`, or `refresh_token` + `client_id` + `client_secret`). kiln adds
//! `api_endpoint` (or `KILN_BIGQUERY_API_ENDPOINT`) to reach another server, an emulator, and
//! `method: none`, which sends no credentials and is accepted only with `api_endpoint`.

use crate::engine::EngineError;
use indexmap::IndexMap;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::time::Duration;

/// Google's BigQuery REST endpoint.
pub const GOOGLE_ENDPOINT: &str = "https://bigquery.googleapis.com";

/// How kiln authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum Method {
    /// No credentials (an emulator).
    None,
    /// A service account key file.
    ServiceAccount { keyfile: String },
    /// A service account key, inline (`keyfile_json`: a mapping or its JSON text).
    ServiceAccountJson { key: String },
    /// Application default credentials.
    OAuth,
    /// An access token, used as is until it expires.
    Token { token: String },
    /// An OAuth client's refresh token.
    RefreshToken { refresh_token: String, client_id: String, client_secret: String },
}

impl std::fmt::Debug for Method {
    /// Never prints a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Method {
    /// The profile's spelling.
    pub fn name(&self) -> &'static str {
        match self {
            Method::None => "none",
            Method::ServiceAccount { .. } => "service-account",
            Method::ServiceAccountJson { .. } => "service-account-json",
            Method::OAuth => "oauth",
            Method::Token { .. } | Method::RefreshToken { .. } => "oauth-secrets",
        }
    }
}

/// dbt-bigquery's `priority`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Interactive,
    Batch,
}

/// The settings of a `type: bigquery` target.
#[derive(Clone, Debug)]
pub struct Settings {
    pub method: Method,
    /// The project that holds the datasets (`project`, or `database`).
    pub project: String,
    /// The project that runs (and pays for) the jobs; `project` by default.
    pub execution_project: String,
    pub location: Option<String>,
    pub priority: Priority,
    pub maximum_bytes_billed: Option<u64>,
    /// A job still running after this long is cancelled and fails.
    pub job_execution_timeout: Option<Duration>,
    /// How long submitting a job may take before the attempt counts as failed.
    pub job_creation_timeout: Option<Duration>,
    /// Further attempts after a retryable error (rate limits, backend errors).
    pub job_retries: u32,
    /// The REST endpoint, `https://bigquery.googleapis.com` unless `api_endpoint` says otherwise.
    pub endpoint: String,
    /// A service account to act as, with the credentials of an authorized user.
    pub impersonate: Option<String>,
}

fn text(settings: &IndexMap<String, Json>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match settings.get(*k)? {
        Json::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn number(settings: &IndexMap<String, Json>, key: &str) -> Result<Option<u64>, EngineError> {
    match text(settings, &[key]) {
        None => Ok(None),
        Some(t) => t
            .parse::<f64>()
            .ok()
            .filter(|n| *n >= 0.0 && n.fract() == 0.0)
            .map(|n| Some(n as u64))
            .ok_or_else(|| EngineError::new(format!("the target's `{key}` must be a whole number, got `{t}`"))),
    }
}

impl Settings {
    /// Reads a target's settings (dbt-bigquery names). `env` is the invocation's environment
    /// (`KILN_BIGQUERY_API_ENDPOINT`).
    pub fn from_target(settings: &IndexMap<String, Json>, env: &HashMap<String, String>) -> Result<Settings, EngineError> {
        let endpoint =
            text(settings, &["api_endpoint"]).or_else(|| env.get("KILN_BIGQUERY_API_ENDPOINT").filter(|e| !e.is_empty()).cloned());
        let method = method(settings, endpoint.is_some())?;
        let project = text(settings, &["project", "database"])
            .ok_or_else(|| EngineError::new("the target has no `project`; a `type: bigquery` target needs project and dataset"))?;
        let priority = match text(settings, &["priority"]).as_deref().unwrap_or("interactive") {
            "interactive" => Priority::Interactive,
            "batch" => Priority::Batch,
            other => return Err(EngineError::new(format!("unknown priority `{other}`; use interactive or batch"))),
        };
        let seconds = |key| number(settings, key).map(|n| n.filter(|s| *s > 0).map(Duration::from_secs));
        Ok(Settings {
            method,
            execution_project: text(settings, &["execution_project"]).unwrap_or_else(|| project.clone()),
            project,
            location: text(settings, &["location"]),
            priority,
            maximum_bytes_billed: number(settings, "maximum_bytes_billed")?,
            job_execution_timeout: seconds("job_execution_timeout_seconds")?,
            job_creation_timeout: seconds("job_creation_timeout_seconds")?,
            job_retries: number(settings, "job_retries")?.unwrap_or(1) as u32,
            endpoint: endpoint.unwrap_or_else(|| GOOGLE_ENDPOINT.to_string()).trim_end_matches('/').to_string(),
            impersonate: text(settings, &["impersonate_service_account"]),
        })
    }
}

fn method(settings: &IndexMap<String, Json>, has_endpoint: bool) -> Result<Method, EngineError> {
    let missing = |key: &str, method: &str| EngineError::new(format!("`method: {method}` needs `{key}` in the target"));
    let name = text(settings, &["method"]).unwrap_or_else(|| "oauth".into());
    Ok(match name.as_str() {
        "none" if has_endpoint => Method::None,
        "none" => {
            return Err(EngineError::new(
                "`method: none` sends no credentials and is accepted only with `api_endpoint` (an emulator); \
                 use service-account, service-account-json, oauth or oauth-secrets for BigQuery",
            ));
        }
        "service-account" => Method::ServiceAccount { keyfile: text(settings, &["keyfile"]).ok_or_else(|| missing("keyfile", &name))? },
        "service-account-json" => {
            let key = match settings.get("keyfile_json") {
                Some(Json::Object(m)) => Json::Object(m.clone()).to_string(),
                Some(Json::String(s)) if !s.trim().is_empty() => s.clone(),
                _ => return Err(missing("keyfile_json", &name)),
            };
            Method::ServiceAccountJson { key }
        }
        "oauth" => Method::OAuth,
        "oauth-secrets" => match text(settings, &["token"]) {
            Some(token) => Method::Token { token },
            None => {
                let get = |k: &str| text(settings, &[k]).ok_or_else(|| missing(k, &name));
                Method::RefreshToken {
                    refresh_token: get("refresh_token").map_err(|_| {
                        EngineError::new("`method: oauth-secrets` needs `token`, or `refresh_token`, `client_id` and `client_secret`")
                    })?,
                    client_id: get("client_id")?,
                    client_secret: get("client_secret")?,
                }
            }
        },
        other => {
            return Err(EngineError::new(format!(
                "unknown method `{other}`; use service-account, service-account-json, oauth or oauth-secrets (or none with api_endpoint)"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, Json)]) -> IndexMap<String, Json> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn dbt_bigquery_targets_read_as_typed_settings() {
        let env = HashMap::new();
        let s = Settings::from_target(
            &settings(&[
                ("method", "service-account".into()),
                ("keyfile", "/keys/sa.json".into()),
                ("project", "acme".into()),
                ("dataset", "analytics".into()),
                ("execution_project", "acme-billing".into()),
                ("priority", "batch".into()),
                ("maximum_bytes_billed", 1_000_000_000.into()),
                ("job_execution_timeout_seconds", 300.into()),
                ("job_retries", "3".into()),
            ]),
            &env,
        )
        .unwrap();
        assert_eq!(s.method, Method::ServiceAccount { keyfile: "/keys/sa.json".into() });
        assert_eq!((s.project.as_str(), s.execution_project.as_str()), ("acme", "acme-billing"));
        assert_eq!((s.priority, s.maximum_bytes_billed, s.job_retries), (Priority::Batch, Some(1_000_000_000), 3));
        assert_eq!(s.job_execution_timeout, Some(Duration::from_secs(300)));
        assert_eq!(s.endpoint, GOOGLE_ENDPOINT);

        let json = settings(&[
            ("method", "service-account-json".into()),
            ("database", "acme".into()),
            ("keyfile_json", serde_json::json!({"type": "service_account", "private_key": "-----BEGIN"})),
        ]);
        let s = Settings::from_target(&json, &env).unwrap();
        assert!(matches!(&s.method, Method::ServiceAccountJson { key } if key.contains("BEGIN")));
        assert_eq!(format!("{:?}", s.method), "service-account-json", "a key never prints");
        assert_eq!(s.execution_project, "acme");

        let secrets = settings(&[("method", "oauth-secrets".into()), ("project", "p".into()), ("refresh_token", "r".into())]);
        let err = Settings::from_target(&secrets, &env).unwrap_err();
        assert!(err.message.contains("`client_id`"), "{}", err.message);
    }

    #[test]
    fn method_none_needs_an_endpoint() {
        let none = settings(&[("method", "none".into()), ("project", "test-project".into())]);
        let err = Settings::from_target(&none, &HashMap::new()).unwrap_err();
        assert!(err.message.contains("api_endpoint"), "{}", err.message);
        let env = HashMap::from([("KILN_BIGQUERY_API_ENDPOINT".to_string(), "http://127.0.0.1:9050/".to_string())]);
        let s = Settings::from_target(&none, &env).unwrap();
        assert_eq!((s.method.clone(), s.endpoint.as_str()), (Method::None, "http://127.0.0.1:9050"));
        let mut explicit = none.clone();
        explicit.insert("api_endpoint".into(), "http://127.0.0.1:1".into());
        assert_eq!(Settings::from_target(&explicit, &env).unwrap().endpoint, "http://127.0.0.1:1", "the profile wins");
        let bad = settings(&[("method", "none".into()), ("project", "p".into()), ("priority", "urgent".into())]);
        assert!(Settings::from_target(&bad, &env).unwrap_err().message.contains("interactive or batch"));
    }
}
