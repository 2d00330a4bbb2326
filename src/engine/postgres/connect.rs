//! Connecting to PostgreSQL from a dbt-postgres target: settings, TLS (rustls, no OpenSSL), the
//! session setup (`search_path`, `role`), retries, and errors that say what went wrong.

use crate::engine::EngineError;
use indexmap::IndexMap;
use serde_json::Value as Json;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// `allow` and `prefer`: TLS when the server offers it, certificate not verified.
    Prefer,
    /// Encrypted, certificate not verified (libpq's `require`).
    Require,
    /// Encrypted, certificate and host name verified (`verify-ca` is verified as `verify-full`).
    Verify,
}

/// The connection settings of a `type: postgres` target.
#[derive(Clone, Debug)]
pub struct ConnectSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    /// `sslrootcert`: a PEM file of trusted roots (verify modes), added to the system's.
    pub sslrootcert: Option<String>,
    pub connect_timeout: Duration,
    pub keepalives_idle: Option<Duration>,
    pub search_path: Option<String>,
    pub role: Option<String>,
    /// Further connection attempts after a failure that may pass (refused, timed out).
    pub retries: u32,
}

fn text(settings: &IndexMap<String, Json>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match settings.get(*k)? {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn number(settings: &IndexMap<String, Json>, key: &str) -> Result<Option<u64>, EngineError> {
    match text(settings, &[key]) {
        None => Ok(None),
        Some(t) => t
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| EngineError::new(format!("the target's `{key}` must be a whole number, got `{t}`"))),
    }
}

impl ConnectSettings {
    /// Reads a target's settings (dbt-postgres names; `database` and `pass` are accepted too).
    pub fn from_target(settings: &IndexMap<String, Json>) -> Result<ConnectSettings, EngineError> {
        let required = |keys: &[&str]| {
            text(settings, keys).ok_or_else(|| {
                EngineError::new(format!("the target has no `{}`; a `type: postgres` target needs host, user, dbname and schema", keys[0]))
            })
        };
        let sslmode = match text(settings, &["sslmode"]).as_deref().unwrap_or("prefer") {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" | "verify-full" => SslMode::Verify,
            other => {
                return Err(EngineError::new(format!(
                    "unknown sslmode `{other}`; use disable, allow, prefer, require, verify-ca or verify-full"
                )));
            }
        };
        let port = number(settings, "port")?.unwrap_or(5432);
        Ok(ConnectSettings {
            host: required(&["host"])?,
            port: u16::try_from(port).map_err(|_| EngineError::new(format!("the target's port {port} is out of range")))?,
            user: required(&["user", "username"])?,
            password: text(settings, &["password", "pass"]),
            dbname: required(&["dbname", "database"])?,
            sslmode,
            sslrootcert: text(settings, &["sslrootcert"]),
            connect_timeout: Duration::from_secs(number(settings, "connect_timeout")?.unwrap_or(10).max(1)),
            keepalives_idle: number(settings, "keepalives_idle")?.filter(|s| *s > 0).map(Duration::from_secs),
            search_path: text(settings, &["search_path"]),
            role: text(settings, &["role"]),
            retries: number(settings, "retries")?.unwrap_or(1) as u32,
        })
    }

    /// The settings as JSON with the password masked (`kiln debug`).
    pub fn public(&self) -> Json {
        serde_json::json!({
            "host": self.host, "port": self.port, "user": self.user, "dbname": self.dbname,
            "password": self.password.as_ref().map(|_| "*****"),
            "sslmode": format!("{:?}", self.sslmode).to_ascii_lowercase(),
            "connect_timeout": self.connect_timeout.as_secs(), "search_path": self.search_path, "role": self.role,
        })
    }

    fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Opens connections with the target's settings.
pub struct Connector {
    settings: ConnectSettings,
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Connector {
    pub fn new(settings: ConnectSettings) -> Result<Connector, EngineError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&settings.host)
            .port(settings.port)
            .user(&settings.user)
            .dbname(&settings.dbname)
            .application_name("kiln")
            .connect_timeout(settings.connect_timeout)
            .ssl_mode(match settings.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                SslMode::Require | SslMode::Verify => tokio_postgres::config::SslMode::Require,
            });
        if let Some(p) = &settings.password {
            config.password(p);
        }
        if let Some(idle) = settings.keepalives_idle {
            config.keepalives(true).keepalives_idle(idle);
        }
        let tls = match settings.sslmode {
            SslMode::Disable => None,
            mode => Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(mode, settings.sslrootcert.as_deref())?)),
        };
        Ok(Connector { settings, config, tls })
    }

    pub fn dbname(&self) -> &str {
        &self.settings.dbname
    }

    /// Asks the server to cancel what the session of `token` is running (`pg_cancel_backend`
    /// over a new connection, as psql's Ctrl-C does).
    pub async fn cancel(&self, token: &tokio_postgres::CancelToken) {
        let _ = match &self.tls {
            Some(tls) => token.cancel_query(tls.clone()).await,
            None => token.cancel_query(tokio_postgres::NoTls).await,
        };
    }

    /// A new session, set up (`search_path`, `role`); transient failures are retried `retries`
    /// times, a second apart.
    pub async fn connect(&self) -> Result<Client, EngineError> {
        let mut attempt = 0;
        loop {
            let result = match &self.tls {
                Some(tls) => self.config.connect(tls.clone()).await.map(|(client, conn)| {
                    tokio::spawn(conn);
                    client
                }),
                None => self.config.connect(tokio_postgres::NoTls).await.map(|(client, conn)| {
                    tokio::spawn(conn);
                    client
                }),
            };
            match result {
                Ok(client) => {
                    let mut setup = Vec::new();
                    if let Some(role) = &self.settings.role {
                        setup.push(format!("set role {}", crate::adapter::names::quote_ident(role, '"')));
                    }
                    if let Some(path) = &self.settings.search_path {
                        setup.push(format!("set search_path to {path}"));
                    }
                    if !setup.is_empty() {
                        client.batch_execute(&setup.join(";\n")).await.map_err(|e| {
                            EngineError::new(format!("connected, but setting up the session failed ({}): {e}", setup.join("; ")))
                        })?;
                    }
                    return Ok(client);
                }
                Err(e) if attempt < self.settings.retries && transient(&e) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(self.explain(&e)),
            }
        }
    }

    /// What a failed connection means, in the user's terms; never the password.
    fn explain(&self, e: &tokio_postgres::Error) -> EngineError {
        let s = &self.settings;
        let at = s.endpoint();
        let message = if let Some(db) = e.as_db_error() {
            match db.code().code() {
                "28P01" => format!(
                    "authentication failed for user `{}` at {at}: the password is wrong; check `password` in profiles.yml (often `{{{{ env_var('PGPASSWORD') }}}}`)",
                    s.user
                ),
                "28000" => format!(
                    "the server at {at} refused user `{}`: {}; check the user name and the server's pg_hba.conf",
                    s.user,
                    db.message()
                ),
                "3D000" => format!(
                    "database `{}` does not exist at {at}; create it (`createdb {}`) or fix `dbname` in profiles.yml",
                    s.dbname, s.dbname
                ),
                "57P03" => format!("the server at {at} is starting up or shutting down; try again in a moment"),
                _ => format!("the server at {at} refused the connection: {}", db.message()),
            }
        } else {
            // The innermost cause says most (`Connection refused`, `failed to lookup address`).
            let innermost = std::iter::successors(std::error::Error::source(e), |s| s.source()).last();
            let detail = innermost.map_or_else(|| e.to_string(), ToString::to_string);
            let text = e.to_string();
            let io = io_kind(e);
            match io {
                Some(std::io::ErrorKind::ConnectionRefused) => {
                    format!(
                        "cannot connect to PostgreSQL at {at}: connection refused; is the server running and listening on that host and port?"
                    )
                }
                _ if io == Some(std::io::ErrorKind::TimedOut) || text.contains("timeout") || detail.contains("timed out") => format!(
                    "cannot connect to PostgreSQL at {at}: no answer within {}s (connect_timeout); check the host, the port and any firewall",
                    s.connect_timeout.as_secs()
                ),
                _ if text.contains("password missing") => format!(
                    "the server at {at} asks user `{}` for a password and the target has none; set `password` in profiles.yml",
                    s.user
                ),
                _ if detail.contains("failed to lookup address") || detail.contains("Name or service not known") => {
                    format!("cannot resolve the host `{}`: {detail}; check `host` in profiles.yml", s.host)
                }
                _ if text.contains("TLS") || text.contains("tls") || detail.contains("certificate") => {
                    format!("TLS with the server at {at} failed ({detail}); check `sslmode` (and `sslrootcert`)")
                }
                _ => format!(
                    "cannot connect to PostgreSQL at {at}: {text}{}",
                    if innermost.is_some() { format!(": {detail}") } else { String::new() }
                ),
            }
        };
        EngineError::of_kind(crate::engine::ErrorKind::Connection, message)
    }
}

/// Failures another attempt may get past.
fn transient(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        return db.code().code() == "57P03";
    }
    matches!(
        io_kind(e),
        Some(
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::ConnectionAborted
        )
    ) || e.to_string().contains("timeout")
}

/// The kind of the I/O error under a connection failure, if one is.
fn io_kind(e: &tokio_postgres::Error) -> Option<std::io::ErrorKind> {
    std::iter::successors(std::error::Error::source(e), |s| s.source())
        .find_map(|s| s.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
}

fn tls_config(mode: SslMode, rootcert: Option<&str>) -> Result<rustls::ClientConfig, EngineError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| EngineError::new(format!("TLS setup: {e}")))?;
    if mode != SslMode::Verify {
        return Ok(builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider))).with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = rootcert {
        let pem = std::fs::read(path).map_err(|e| EngineError::new(format!("cannot read sslrootcert {path}: {e}")))?;
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| EngineError::new(format!("sslrootcert {path} is not a PEM certificate file: {e}")))?;
            roots.add(cert).map_err(|e| EngineError::new(format!("sslrootcert {path}: {e}")))?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// libpq's `require`: encrypted, but any certificate is accepted (signatures are still checked).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_a_dbt_postgres_target() {
        let settings: IndexMap<String, Json> = serde_json::from_str(
            r#"{"type":"postgres","host":"db","port":"6543","user":"u","password":"hunter2","dbname":"shop","schema":"s","sslmode":"require","search_path":"a,b","retries":3}"#,
        )
        .unwrap();
        let s = ConnectSettings::from_target(&settings).unwrap();
        assert_eq!((s.host.as_str(), s.port, s.sslmode, s.retries), ("db", 6543, SslMode::Require, 3));
        assert!(!s.public().to_string().contains("hunter2"));
        let mut bad = settings.clone();
        bad.shift_remove("host");
        assert!(ConnectSettings::from_target(&bad).unwrap_err().message.contains("no `host`"));
        bad.insert("host".into(), Json::from("db"));
        bad.insert("sslmode".into(), Json::from("sometimes"));
        assert!(ConnectSettings::from_target(&bad).unwrap_err().message.contains("unknown sslmode"));
    }
}
