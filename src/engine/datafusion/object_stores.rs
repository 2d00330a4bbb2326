//! Object stores for file locations on S3 (and S3-compatible stores such as MinIO), Google Cloud
//! Storage and Azure Blob Storage: `s3://bucket/path`, `gs://bucket/path`, `az://container/path`.
//!
//! Settings come from the target (`s3_endpoint`, `s3_region`, `s3_access_key_id`,
//! `s3_secret_access_key`, `s3_session_token`, `s3_url_style`, `gcs_service_account_path`,
//! `azure_account_name`, `azure_account_key`, `azure_use_emulator`, ...) and from the usual
//! environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`), passed in by the CLI. They are never
//! logged (the secret keys are masked like every profile secret).

use indexmap::IndexMap;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::Arc;

fn setting(settings: &IndexMap<String, Json>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| settings.get(*k)).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
}

/// The store for `url`'s bucket or container, or an error naming what is missing.
pub fn store_for(url: &url::Url, settings: &IndexMap<String, Json>, env: &HashMap<String, String>) -> Result<Arc<dyn ObjectStore>, String> {
    let bucket = url.host_str().ok_or_else(|| format!("{url} names no bucket"))?;
    let env_with = |prefix: &'static str| -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> =
            env.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
        vars.sort();
        vars
    };
    match url.scheme() {
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::new().with_bucket_name(bucket).with_region("us-east-1");
            for (k, v) in env_with("AWS_") {
                if let Ok(key) = k.parse() {
                    b = b.with_config(key, v);
                }
            }
            if let Some(region) = setting(settings, &["s3_region", "region"]) {
                b = b.with_region(region);
            }
            if let Some(id) = setting(settings, &["s3_access_key_id"]) {
                b = b.with_access_key_id(id);
            }
            if let Some(secret) = setting(settings, &["s3_secret_access_key"]) {
                b = b.with_secret_access_key(secret);
            }
            if let Some(token) = setting(settings, &["s3_session_token"]) {
                b = b.with_token(token);
            }
            let endpoint = setting(settings, &["s3_endpoint"]).or_else(|| env.get("AWS_ENDPOINT_URL").cloned());
            if let Some(endpoint) = endpoint {
                let endpoint = if endpoint.contains("://") {
                    endpoint
                } else {
                    let ssl = setting(settings, &["s3_use_ssl"]).is_none_or(|v| v != "false");
                    format!("{}://{endpoint}", if ssl { "https" } else { "http" })
                };
                b = b.with_allow_http(endpoint.starts_with("http://")).with_endpoint(endpoint).with_virtual_hosted_style_request(false);
            }
            if setting(settings, &["s3_url_style"]).as_deref() == Some("path") {
                b = b.with_virtual_hosted_style_request(false);
            }
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>).map_err(|e| format!("S3 store for {bucket}: {e}"))
        }
        "gs" | "gcs" => {
            let mut b = GoogleCloudStorageBuilder::new().with_bucket_name(bucket);
            for (k, v) in env_with("GOOGLE_") {
                if let Ok(key) = k.parse() {
                    b = b.with_config(key, v);
                }
            }
            if let Some(path) = setting(settings, &["gcs_service_account_path", "keyfile"]) {
                b = b.with_service_account_path(path);
            }
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>).map_err(|e| format!("GCS store for {bucket}: {e}"))
        }
        "az" | "azure" | "abfs" | "abfss" => {
            let mut b = MicrosoftAzureBuilder::new().with_container_name(bucket);
            for (k, v) in env_with("AZURE_") {
                if let Ok(key) = k.parse() {
                    b = b.with_config(key, v);
                }
            }
            if let Some(account) = setting(settings, &["azure_account_name"]) {
                b = b.with_account(account);
            }
            if let Some(key) = setting(settings, &["azure_account_key"]) {
                b = b.with_access_key(key);
            }
            if setting(settings, &["azure_use_emulator"]).is_some_and(|v| v == "true") {
                b = b.with_use_emulator(true);
            }
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>).map_err(|e| format!("Azure store for {bucket}: {e}"))
        }
        other => Err(format!("`{other}://` locations are not supported (use s3://, gs://, az:// or a local path)")),
    }
}
