//! Access tokens for a target's [`Method`], from yup-oauth2 (gcp-bigquery-client's credential
//! layer). Errors name the credential that failed and where it was looked for, never its value.

use super::connect::Method;
use crate::engine::{EngineError, ErrorKind};
use std::collections::HashMap;
use std::path::PathBuf;
use yup_oauth2::authenticator::DefaultAuthenticator;

/// The scopes dbt-bigquery asks for.
const SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/bigquery",
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/drive",
];

/// Where tokens come from.
pub enum Credentials {
    /// Nothing is sent (`method: none`, an emulator).
    None,
    /// A fixed access token (`oauth-secrets` with `token`).
    Fixed(String),
    /// Tokens fetched and refreshed by yup-oauth2.
    Refreshing(DefaultAuthenticator),
}

fn auth_error(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::of_kind(ErrorKind::Connection, format!("{what}: {e}"))
}

impl Credentials {
    /// Reads the credentials `method` names; `impersonate` acts as that service account with the
    /// credentials of an authorized user (gcloud's, or `oauth-secrets`' refresh token).
    pub async fn open(method: &Method, impersonate: Option<&str>, env: &HashMap<String, String>) -> Result<Credentials, EngineError> {
        let user = match method {
            Method::None => return Ok(Credentials::None),
            Method::Token { token } if impersonate.is_none() => return Ok(Credentials::Fixed(token.clone())),
            Method::ServiceAccount { keyfile } => {
                let key = yup_oauth2::read_service_account_key(keyfile)
                    .await
                    .map_err(|e| auth_error(&format!("cannot read the service account keyfile `{keyfile}`"), e))?;
                return service_account(key, impersonate).await;
            }
            Method::ServiceAccountJson { key } => {
                let key = yup_oauth2::parse_service_account_key(key)
                    .map_err(|e| auth_error("`keyfile_json` is not a service account key", e.kind()))?;
                return service_account(key, impersonate).await;
            }
            Method::RefreshToken { refresh_token, client_id, client_secret } => yup_oauth2::authorized_user::AuthorizedUserSecret {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                refresh_token: refresh_token.clone(),
                key_type: "authorized_user".into(),
            },
            Method::Token { .. } => {
                return Err(EngineError::new(
                    "`impersonate_service_account` needs credentials that can be refreshed; with `oauth-secrets` give `refresh_token`, `client_id` and `client_secret` instead of `token`",
                ));
            }
            Method::OAuth => match application_default(env).await? {
                Adc::User(secret) => secret,
                Adc::ServiceAccount(key) => return service_account(key, impersonate).await,
                Adc::Metadata if impersonate.is_some() => {
                    return Err(EngineError::new(
                        "`impersonate_service_account` with the metadata server's credentials is not supported; run `gcloud auth application-default login` or use a keyfile",
                    ));
                }
                Adc::Metadata => {
                    let opts = yup_oauth2::ApplicationDefaultCredentialsFlowOpts::default();
                    let builder = match yup_oauth2::ApplicationDefaultCredentialsAuthenticator::builder(opts).await {
                        yup_oauth2::authenticator::ApplicationDefaultCredentialsTypes::InstanceMetadata(b) => b,
                        yup_oauth2::authenticator::ApplicationDefaultCredentialsTypes::ServiceAccount(b) => {
                            return built(b.build().await, "application default credentials");
                        }
                    };
                    return built(builder.build().await, "the metadata server's credentials");
                }
            },
        };
        match impersonate {
            Some(email) => built(
                yup_oauth2::ServiceAccountImpersonationAuthenticator::builder(user, email).build().await,
                &format!("impersonating `{email}`"),
            ),
            None => built(yup_oauth2::AuthorizedUserAuthenticator::builder(user).build().await, "the authorized user's credentials"),
        }
    }

    /// A bearer token for the next request, `None` when nothing is sent.
    pub async fn token(&self) -> Result<Option<String>, EngineError> {
        match self {
            Credentials::None => Ok(None),
            Credentials::Fixed(t) => Ok(Some(t.clone())),
            Credentials::Refreshing(auth) => {
                let token = auth.token(SCOPES).await.map_err(|e| auth_error("getting an access token failed", e))?;
                token
                    .token()
                    .map(|t| Some(t.to_string()))
                    .ok_or_else(|| EngineError::of_kind(ErrorKind::Connection, "the token server returned no access token"))
            }
        }
    }
}

async fn service_account(key: yup_oauth2::ServiceAccountKey, impersonate: Option<&str>) -> Result<Credentials, EngineError> {
    if impersonate.is_some() {
        return Err(EngineError::new(
            "`impersonate_service_account` is supported with an authorized user's credentials (`oauth` after `gcloud auth application-default login`, or `oauth-secrets` with a refresh token), not with a service account key; grant the key's account the roles it needs instead",
        ));
    }
    built(yup_oauth2::ServiceAccountAuthenticator::builder(key).build().await, "the service account key")
}

fn built(auth: std::io::Result<DefaultAuthenticator>, what: &str) -> Result<Credentials, EngineError> {
    auth.map(Credentials::Refreshing).map_err(|e| auth_error(&format!("cannot use {what}"), e))
}

/// Application default credentials, looked up as Google's client libraries do.
enum Adc {
    User(yup_oauth2::authorized_user::AuthorizedUserSecret),
    ServiceAccount(yup_oauth2::ServiceAccountKey),
    Metadata,
}

async fn application_default(env: &HashMap<String, String>) -> Result<Adc, EngineError> {
    let explicit = env.get("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()).map(PathBuf::from);
    let gcloud = env
        .get("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| PathBuf::from(h).join(".config/gcloud")))
        .map(|d| d.join("application_default_credentials.json"));
    let path = match (&explicit, gcloud) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) if p.exists() => p,
        _ => return Ok(Adc::Metadata),
    };
    let where_ = if explicit.is_some() { "GOOGLE_APPLICATION_CREDENTIALS" } else { "gcloud's application default credentials" };
    let text = std::fs::read(&path).map_err(|e| auth_error(&format!("cannot read {} ({where_})", path.display()), e))?;
    let kind = serde_json::from_slice::<serde_json::Value>(&text).ok().and_then(|v| v["type"].as_str().map(str::to_string));
    let invalid = |e: &dyn std::fmt::Display| auth_error(&format!("{} ({where_}) is not a credentials file", path.display()), e);
    match kind.as_deref() {
        Some("authorized_user") => serde_json::from_slice(&text).map(Adc::User).map_err(|e| invalid(&e)),
        Some("service_account") => yup_oauth2::parse_service_account_key(&text).map(Adc::ServiceAccount).map_err(|e| invalid(&e.kind())),
        other => Err(invalid(&format!("its type is {other:?}, not authorized_user or service_account"))),
    }
}
