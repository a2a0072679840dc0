//! The database path: a consistent, parallel logical snapshot into a set, and
//! a parallel load from a set into a fresh server, both verified by per-table
//! row counts and content checksums.

pub mod checksum;
pub mod dump;
pub mod gtid;
pub mod insert;
pub mod load;
pub mod load_data;
pub mod load_order;
pub mod pipeline;
pub(crate) mod row_conn;
pub mod seed;
pub mod sql;
pub mod stream_rewrite;
mod tls;
pub mod topology;
pub mod wire;
mod workers;

use crate::config::{CertificateCheck, TlsMode};
use crate::exit::{Classify, ExitCode};
use mysql_async::prelude::Queryable;
use mysql_async::{ClientIdentity, Conn, OptsBuilder, SslOpts};

#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    #[error("cannot connect to the database at {target}: {detail}. Check database.host/port (WPDR_DB_HOST/WPDR_DB_PORT) and that the server is running.")]
    Unreachable { target: String, detail: String },
    #[error("no secure connection to the database at {target} (database.tls.mode {mode}): {detail}. Check database.tls.ca_file (WPDR_DB_TLS_CA_FILE) names the CA that signed the server's certificate and that the host name matches it, or lower database.tls.mode.")]
    Tls {
        target: String,
        mode: &'static str,
        detail: String,
    },
    #[error("the database at {target} refused user '{user}': {detail}. Check {check}.")]
    AuthFailed {
        target: String,
        user: String,
        detail: String,
        check: &'static str,
    },
    #[error("database '{name}' does not exist on {target}. Check database.name (WPDR_DB_NAME).")]
    UnknownDatabase { name: String, target: String },
    #[error("user '{user}' lacks a privilege wpdr needs: {detail}")]
    Privilege { user: String, detail: String },
    #[error("database error while {doing}: {detail}")]
    Query { doing: String, detail: String },
    #[error("restore target database '{name}' on {target} is not empty ({what}). Restore into an empty database, pick another with --database, or pass --force to drop and recreate it.")]
    TargetNotEmpty {
        name: String,
        target: String,
        what: String,
    },
    #[error("the target's max_allowed_packet is {have} bytes but the set holds a statement of {need} bytes. Raise it on the target (SET GLOBAL max_allowed_packet={need_rounded}; or --max-allowed-packet in the server config) and rerun.")]
    PacketTooSmall {
        have: u64,
        need: u64,
        need_rounded: u64,
    },
    #[error("artifact {path} is unreadable: {detail}. Run `wpdr verify` on the set.")]
    Artifact { path: String, detail: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("compression failed for {path}: {detail}")]
    Compression { path: String, detail: String },
    #[error("database '{database}' holds what wpdr cannot back up: {objects}. Nothing was stored. Fix the object, or add its name to database.skip (WPDR_DB_SKIP) to back up everything else; the set then lists it as skipped.")]
    Unsupported { database: String, objects: String },
    #[error("the schema of {tables} changed while the backup was reading it ({detail}); a set whose tables and rows are from different moments is never written, so nothing was stored. Rerun the backup once the ALTER/DROP/TRUNCATE (often a plugin or WordPress update) has finished.")]
    SchemaChanged { tables: String, detail: String },
    #[error("{detail}")]
    LockLost { detail: String },
    #[error("no replica can be backed up from: {details}. Fix replication, raise database.max_replica_lag_seconds, or allow database.fallback_to_primary.")]
    NoUsableReplica { details: String },
}

impl Classify for MysqlError {
    fn exit_code(&self) -> ExitCode {
        match self {
            MysqlError::Unreachable { .. } => ExitCode::DatabaseUnreachable,
            MysqlError::Tls { .. } => ExitCode::TlsFailed,
            MysqlError::AuthFailed { .. } | MysqlError::Privilege { .. } => ExitCode::DatabaseAuth,
            MysqlError::UnknownDatabase { .. } => ExitCode::DatabaseUnreachable,
            MysqlError::Query { .. } | MysqlError::PacketTooSmall { .. } => ExitCode::Database,
            MysqlError::TargetNotEmpty { .. } => ExitCode::TargetNotEmpty,
            MysqlError::Artifact { .. } => ExitCode::Integrity,
            MysqlError::Store(e) => e.exit_code(),
            MysqlError::Compression { .. } => ExitCode::Internal,
            MysqlError::NoUsableReplica { .. } => ExitCode::ReplicaUnusable,
            MysqlError::Unsupported { .. } => ExitCode::Unsupported,
            MysqlError::SchemaChanged { .. } => ExitCode::SchemaChanged,
            MysqlError::LockLost { .. } => ExitCode::Locked,
        }
    }
    fn metric_label(&self) -> &'static str {
        match self {
            MysqlError::Unreachable { .. } => "db_unreachable",
            MysqlError::Tls { .. } => "db_tls",
            MysqlError::AuthFailed { .. } => "db_auth",
            MysqlError::UnknownDatabase { .. } => "db_unknown_database",
            MysqlError::Privilege { .. } => "db_privilege",
            MysqlError::Query { .. } => "db_query",
            MysqlError::TargetNotEmpty { .. } => "target_not_empty",
            MysqlError::PacketTooSmall { .. } => "db_packet_too_small",
            MysqlError::Artifact { .. } => "artifact",
            MysqlError::Store(e) => e.metric_label(),
            MysqlError::Compression { .. } => "compression",
            MysqlError::NoUsableReplica { .. } => "replica_unusable",
            MysqlError::Unsupported { .. } => "db_unsupported_object",
            MysqlError::SchemaChanged { .. } => "db_schema_changed",
            MysqlError::LockLost { .. } => "lock_lost",
        }
    }
}

/// The address of a server lives with the config (the ground floor); how to
/// connect to it lives here.
pub use crate::config::Endpoint;

impl Endpoint {
    fn opts(&self, database: Option<&str>) -> OptsBuilder {
        let mut b = OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(if self.password.is_empty() {
                None
            } else {
                Some(self.password.expose().to_string())
            })
            .db_name(database.map(str::to_string))
            .prefer_socket(false)
            .max_allowed_packet(Some(1 << 30))
            .stmt_cache_size(0)
            .wait_timeout(Some(28_800))
            .init(vec!["SET NAMES utf8mb4", "SET time_zone = '+00:00'"]);
        if let Some(s) = &self.socket {
            b = b.socket(Some(s.to_string_lossy().into_owned()));
        }
        b
    }

    /// The driver's TLS options for this endpoint's `tls`, for a connection
    /// that uses TLS ([`Endpoint::connects_plain`] decides which do).
    fn ssl_opts(&self) -> SslOpts {
        let tls = &self.tls;
        let mut o = SslOpts::default();
        if let Some(ca) = &tls.ca_file {
            o = o
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true);
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            o = o.with_client_identity(Some(ClientIdentity::new(
                cert.clone().into(),
                key.clone().into(),
            )));
        }
        match tls.mode.certificate_check() {
            CertificateCheck::ChainAndName => o,
            CertificateCheck::Chain => o.with_danger_skip_domain_validation(true),
            CertificateCheck::Nothing => o.with_danger_accept_invalid_certs(true),
        }
    }

    /// Whether [`Endpoint::connect`] would connect without TLS: TLS
    /// disabled, a Unix socket, or `preferred` to a server seen to offer none.
    pub(crate) fn connects_plain(&self) -> bool {
        self.tls.mode == TlsMode::Disabled
            || self.socket.is_some()
            || (self.tls.mode == TlsMode::Preferred && known_without_tls(&self.display()))
    }

    pub async fn connect(&self, database: Option<&str>) -> Result<Conn, MysqlError> {
        let preferred = self.tls.mode == TlsMode::Preferred;
        let ssl = (!self.connects_plain()).then(|| self.ssl_opts());
        let tried_tls = ssl.is_some();
        match self.connect_with(database, ssl).await {
            // `preferred`: a server that offers no TLS gets a plain connection
            // (remembered, so the next connection does not try again).
            Err(MysqlError::Tls { .. }) if preferred => {
                tracing::debug!(target = %self.display(), "the server offers no TLS; connecting without");
                remember_without_tls(&self.display());
                self.connect_with(database, None).await
            }
            Err(e) if tried_tls && preferred => {
                if matches!(e, MysqlError::Unreachable { .. }) {
                    if let Ok(c) = self.connect_with(database, None).await {
                        return Ok(c);
                    }
                }
                Err(e)
            }
            // MariaDB answers a plain connection it requires TLS for with
            // "access denied": find out which it is before blaming the password.
            Err(refused @ MysqlError::AuthFailed { .. })
                if self.tls.mode == TlsMode::Disabled && self.socket.is_none() =>
            {
                let probe = SslOpts::default().with_danger_accept_invalid_certs(true);
                match self.connect_with(database, Some(probe)).await {
                    Ok(conn) => {
                        drop(conn);
                        Err(MysqlError::Tls {
                            target: self.display(),
                            mode: self.tls.mode.as_str(),
                            detail: "the server requires TLS (require_secure_transport): the same user and password are accepted over TLS".into(),
                        })
                    }
                    Err(_) => Err(refused),
                }
            }
            other => other,
        }
    }

    async fn connect_with(
        &self,
        database: Option<&str>,
        ssl: Option<SslOpts>,
    ) -> Result<Conn, MysqlError> {
        if ssl.is_some() {
            choose_tls_provider();
        }
        let fut = Conn::new(self.opts(database).ssl_opts(ssl));
        let conn = match tokio::time::timeout(std::time::Duration::from_secs(15), fut).await {
            Ok(r) => r,
            Err(_) => {
                return Err(MysqlError::Unreachable {
                    target: self.display(),
                    detail: "no answer within 15 s".into(),
                })
            }
        };
        conn.map_err(|e| self.classify_connect(e, database))
    }

    fn classify_connect(&self, e: mysql_async::Error, database: Option<&str>) -> MysqlError {
        let tls = |detail: String| MysqlError::Tls {
            target: self.display(),
            mode: self.tls.mode.as_str(),
            detail,
        };
        match &e {
            mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
                tls("the server does not offer TLS".into())
            }
            mysql_async::Error::Io(mysql_async::IoError::Tls(t)) => tls(t.to_string()),
            mysql_async::Error::Io(mysql_async::IoError::Io(io)) if is_tls_failure(io) => {
                tls(tls_detail(io))
            }
            mysql_async::Error::Server(se)
                if se.code == 3159 || se.message.contains("secure transport") =>
            {
                tls(format!("{} (the server requires TLS)", se.message))
            }
            mysql_async::Error::Server(se) => match se.code {
                1045 | 1044 | 1698 => MysqlError::AuthFailed {
                    target: self.display(),
                    user: self.user.clone(),
                    detail: se.message.clone(),
                    check: self.credentials_from,
                },
                1049 => MysqlError::UnknownDatabase {
                    name: database.unwrap_or_default().to_string(),
                    target: self.display(),
                },
                _ => MysqlError::Unreachable {
                    target: self.display(),
                    detail: se.message.clone(),
                },
            },
            _ => MysqlError::Unreachable {
                target: self.display(),
                detail: e.to_string(),
            },
        }
    }
}

/// The handshake failed in rustls (an unknown issuer, a wrong name, an
/// expired certificate), as opposed to the network.
fn is_tls_failure(io: &std::io::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = io
        .get_ref()
        .map(|e| e as &(dyn std::error::Error + 'static));
    while let Some(e) = source {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        source = e.source();
    }
    false
}

fn tls_detail(io: &std::io::Error) -> String {
    let text = io.to_string();
    if text.contains("UnknownIssuer") {
        format!("{text}: the server's certificate is not signed by the CA given")
    } else if text.contains("NotValidForName") {
        format!("{text}: the certificate is not issued for this host name")
    } else {
        text
    }
}

/// Servers (`host:port`) seen to offer no TLS, so `preferred` connects to
/// them plain at once for the rest of the process.
static WITHOUT_TLS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn known_without_tls(server: &str) -> bool {
    WITHOUT_TLS
        .lock()
        .is_ok_and(|seen| seen.iter().any(|s| s == server))
}

fn remember_without_tls(server: &str) {
    if let Ok(mut seen) = WITHOUT_TLS.lock() {
        if !seen.iter().any(|s| s == server) {
            seen.push(server.to_string());
        }
    }
}

/// rustls needs one process-wide crypto provider; the SDKs link a second,
/// so it must be named (ring, the one mysql_async is built with).
fn choose_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Already installed by someone else: theirs is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Wraps a driver error with what we were doing.
pub(crate) fn query_err(doing: impl Into<String>, e: mysql_async::Error) -> MysqlError {
    let doing = doing.into();
    match &e {
        mysql_async::Error::Server(se) if matches!(se.code, 1227 | 1142 | 1044 | 1143) => {
            MysqlError::Privilege {
                user: String::new(),
                detail: format!("{doing}: {}", se.message),
            }
        }
        _ => MysqlError::Query {
            doing,
            detail: e.to_string(),
        },
    }
}

/// Runs a statement, naming it in the error.
pub(crate) async fn exec(conn: &mut Conn, sql: &str) -> Result<(), MysqlError> {
    conn.query_drop(sql).await.map_err(|e| query_err(sql, e))
}

/// The server's version string, e.g. `10.11.19-MariaDB-0+deb12u1`.
pub async fn server_version(conn: &mut Conn) -> Result<String, MysqlError> {
    let v: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| query_err("reading the server version", e))?;
    Ok(v.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsConfig;

    #[test]
    fn target_urls_parse_refuse_passwords_and_carry_tls_options() {
        let none = TlsConfig::default();
        let (e, db) = Endpoint::from_url(
            "mysql://wp@db.example:3307/site2",
            Some("p@ss".into()),
            &none,
        )
        .unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.user.as_str()),
            ("db.example", 3307, "wp")
        );
        assert_eq!(e.password.expose(), "p@ss");
        assert_eq!(db.as_deref(), Some("site2"));
        assert!(!format!("{e:?}").contains("p@ss"));
        assert!(!e.display().contains("p@ss"));
        // A password in the URL is refused, and the message does not repeat it.
        let err = Endpoint::from_url("mysql://wp:s3cr3t@db.example/x", None, &none).unwrap_err();
        assert!(
            err.contains("WPDR_TARGET_PASSWORD") && !err.contains("s3cr3t"),
            "{err}"
        );
        let (e, db) = Endpoint::from_url("mysql://127.0.0.1", Some("envpw".into()), &none).unwrap();
        assert_eq!(
            (e.port, e.user.as_str(), e.password.expose()),
            (3306, "root", "envpw")
        );
        assert!(db.is_none());
        assert!(Endpoint::from_url("postgres://x", None, &none).is_err());
        // TLS: the config's unless the URL says otherwise.
        let pinned = TlsConfig {
            mode: TlsMode::VerifyIdentity,
            ca_file: Some("/ca.pem".into()),
            ..Default::default()
        };
        let (e, _) = Endpoint::from_url("mysql://h/db", None, &pinned).unwrap();
        assert_eq!(e.tls, pinned);
        let (e, _) = Endpoint::from_url("mysql://h/db?ssl-mode=required", None, &pinned).unwrap();
        assert_eq!(e.tls.mode, TlsMode::Required);
        assert!(Endpoint::from_url("mysql://h/db?ssl-mode=maybe", None, &none).is_err());
        assert!(Endpoint::from_url("mysql://h/db?sslrootcert=x", None, &none).is_err());
    }

    #[test]
    fn the_replay_client_gets_the_matching_tls_options() {
        use crate::binlog::replay::client_tls_args;
        let mut tls = TlsConfig::default();
        assert!(client_tls_args(&tls).is_empty());
        tls.mode = TlsMode::Disabled;
        assert_eq!(client_tls_args(&tls), vec!["--skip-ssl"]);
        tls.mode = TlsMode::VerifyIdentity;
        tls.ca_file = Some("/ca.pem".into());
        assert_eq!(
            client_tls_args(&tls),
            vec!["--ssl", "--ssl-verify-server-cert", "--ssl-ca=/ca.pem"]
        );
    }
}
