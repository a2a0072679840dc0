//! `database:` — the site's MySQL/MariaDB server, its replicas and the
//! binlog archive's settings; and [`Endpoint`], the address of any server
//! wpdr connects to (the connection itself is `mysql`'s business).

use super::overlay::{ByteSize, Env, Section};
use super::ConfigError;
use crate::secret::Secret;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatabase {
    host: Option<String>,
    port: Option<u16>,
    socket: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    name: Option<String>,
    connections: Option<usize>,
    table_prefix: Option<String>,
    replicas: Option<Vec<String>>,
    read_from: Option<String>,
    max_replica_lag_seconds: Option<u64>,
    fallback_to_primary: Option<bool>,
    skip: Option<Vec<String>>,
    binlog: Option<RawBinlog>,
    tls: Option<RawTls>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    mode: Option<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// How a connection uses TLS, with the names the MariaDB/MySQL clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plain TCP (a socket, or a server on the same host).
    Disabled,
    /// TLS when the server offers it, not verified; plain when it does not.
    #[default]
    Preferred,
    /// TLS or no connection; the certificate is not verified.
    Required,
    /// TLS with a certificate signed by the CA (`ca_file`, else the system roots).
    VerifyCa,
    /// ... and issued for the host connected to.
    VerifyIdentity,
}

/// How far a server's TLS certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateCheck {
    /// Signed by a trusted CA and issued for the host connected to.
    ChainAndName,
    /// Signed by a trusted CA, whatever name it carries.
    Chain,
    /// Any certificate (the connection is encrypted, not authenticated).
    Nothing,
}

impl TlsMode {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().replace('_', "-").as_str() {
            "disabled" | "disable" | "off" => Ok(TlsMode::Disabled),
            "preferred" | "prefer" => Ok(TlsMode::Preferred),
            "required" | "require" => Ok(TlsMode::Required),
            "verify-ca" => Ok(TlsMode::VerifyCa),
            "verify-identity" | "verify-full" => Ok(TlsMode::VerifyIdentity),
            other => Err(format!(
                "'{other}' is not one of disabled, preferred, required, verify-ca, verify-identity"
            )),
        }
    }

    /// How far the server's certificate is checked in this mode; one
    /// mapping for both TLS stacks (the driver's and the row reader's).
    pub fn certificate_check(&self) -> CertificateCheck {
        match self {
            TlsMode::VerifyIdentity => CertificateCheck::ChainAndName,
            TlsMode::VerifyCa => CertificateCheck::Chain,
            TlsMode::Disabled | TlsMode::Preferred | TlsMode::Required => CertificateCheck::Nothing,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            TlsMode::Disabled => "disabled",
            TlsMode::Preferred => "preferred",
            TlsMode::Required => "required",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyIdentity => "verify-identity",
        }
    }
}

/// `database.tls`: one setting for every connection to this site's servers
/// (source, replicas, restore targets, the binlog archive, the replay client).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// PEM CA bundle the server's certificate must chain to (verify modes).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for servers that require them (X509 users).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinlog {
    server_id: Option<u32>,
    segment_seconds: Option<u64>,
    segment_size: Option<ByteSize>,
    archive: Option<String>,
    claim_days: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub host: String,
    pub port: u16,
    pub socket: Option<PathBuf>,
    pub user: String,
    pub password: Secret,
    pub name: String,
    pub connections: usize,
    /// WordPress's `$table_prefix` (`wp_`): where attachments are looked up.
    pub table_prefix: String,
    /// Names (`*` matches any run of characters) of tables, sequences, views,
    /// routines, triggers and events a backup leaves out on purpose; each set
    /// lists what it left out. Anything else a backup cannot take fails it.
    pub skip: Vec<String>,
    pub topology: Topology,
    pub binlog: BinlogArchiveConfig,
    pub tls: TlsConfig,
}

/// How `wpdr binlog archive` follows the primary's binary log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogArchiveConfig {
    /// The server id the archiver registers with; unique among the primary's replicas.
    pub server_id: u32,
    /// A segment is closed at least this often while transactions arrive (the RPO bound).
    pub segment_seconds: u64,
    /// ... or once it holds this many bytes of events.
    pub segment_bytes: u64,
    /// The name of a server-wide archive this site shares with the other
    /// sites on its database server (one replication stream per server, not
    /// per site). `None`: the site's own archive under its prefix.
    pub shared: Option<String>,
    /// How long a site's claim on a shared archive's segments holds without
    /// being renewed (each backup and prune renews it): a deleted site stops
    /// holding segments back after this.
    pub claim_days: u64,
}

impl Default for BinlogArchiveConfig {
    fn default() -> Self {
        BinlogArchiveConfig {
            server_id: 4_031_000_001,
            segment_seconds: 30,
            segment_bytes: 16 << 20,
            shared: None,
            claim_days: 35,
        }
    }
}

/// Where a backup reads the database from in a primary/replica cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// `host:port` of each replica (same user and password as the primary).
    pub replicas: Vec<(String, u16)>,
    /// Read from the healthiest replica (the default when replicas are named).
    pub read_from_replica: bool,
    /// A replica further behind than this is not used.
    pub max_replica_lag_seconds: u64,
    /// With no usable replica, back up from the primary instead of refusing.
    pub fallback_to_primary: bool,
}

/// Where and how to connect to one server. Built from config or from a `mysql://` URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub socket: Option<PathBuf>,
    pub user: String,
    pub password: Secret,
    pub tls: TlsConfig,
    /// Where the user and password of this endpoint are set, for the
    /// message of a refused login (the source's config, a target's URL and
    /// WPDR_TARGET_PASSWORD, the replication user).
    pub credentials_from: &'static str,
}

impl Endpoint {
    pub const FROM_DATABASE_CONFIG: &'static str =
        "database.user and the password (WPDR_DB_PASSWORD or database.password_file)";
    pub const FROM_TARGET_URL: &'static str =
        "the user in the target URL and the password (WPDR_TARGET_PASSWORD or restore.database_password_file)";
    pub const FROM_REPLICATION_USER: &'static str =
        "restore.replication_user and its password (restore.replication_password_file)";
}

impl Endpoint {
    pub fn from_config(c: &DatabaseConfig) -> Self {
        Endpoint {
            host: c.host.clone(),
            port: c.port,
            socket: c.socket.clone(),
            user: c.user.clone(),
            password: c.password.clone(),
            tls: c.tls.clone(),
            credentials_from: Self::FROM_DATABASE_CONFIG,
        }
    }

    /// Parses `mysql://user@host[:port][/database]`; returns the database too.
    /// The password comes from `WPDR_TARGET_PASSWORD` (or the config's
    /// file): one inside the URL is refused, because URLs end up in shell
    /// history, process lists and logs. TLS is `database.tls`'s unless the
    /// URL says otherwise (`?ssl-mode=verify-identity&ssl-ca=/ca.pem`).
    pub fn from_url(
        text: &str,
        env_password: Option<String>,
        tls: &TlsConfig,
    ) -> Result<(Self, Option<String>), String> {
        let u = url::Url::parse(text)
            .map_err(|e| format!("not a URL ({e}); expected mysql://user@host:port/database"))?;
        if !matches!(u.scheme(), "mysql" | "mariadb") {
            return Err(format!(
                "scheme '{}' is not mysql:// or mariadb://",
                u.scheme()
            ));
        }
        let host = u.host_str().ok_or("the URL has no host")?.to_string();
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| "the URL has invalid percent-encoding".to_string())
        };
        let user = if u.username().is_empty() {
            "root".to_string()
        } else {
            decode(u.username())?
        };
        if u.password().is_some() {
            return Err("the URL holds a password: remove it and give the password in WPDR_TARGET_PASSWORD (or database.password_file / WPDR_DB_PASSWORD for the source), so it stays out of shell history, process lists and logs".into());
        }
        let password = env_password.map(Secret::new).unwrap_or_default();
        let mut tls = tls.clone();
        for (k, v) in u.query_pairs() {
            match k.as_ref() {
                "ssl-mode" | "sslmode" | "tls" => tls.mode = TlsMode::parse(&v)?,
                "ssl-ca" => tls.ca_file = Some(PathBuf::from(v.as_ref())),
                "ssl-cert" => tls.cert_file = Some(PathBuf::from(v.as_ref())),
                "ssl-key" => tls.key_file = Some(PathBuf::from(v.as_ref())),
                other => {
                    return Err(format!(
                        "unknown URL option '{other}': the options are ssl-mode, ssl-ca, ssl-cert, ssl-key"
                    ))
                }
            }
        }

        let db = u.path().trim_start_matches('/');
        let db = if db.is_empty() {
            None
        } else {
            Some(decode(db)?)
        };
        Ok((
            Endpoint {
                host,
                port: u.port().unwrap_or(3306),
                socket: None,
                user,
                password,
                tls,
                credentials_from: Self::FROM_TARGET_URL,
            },
            db,
        ))
    }

    /// `host:port` for messages and manifests (never credentials).
    pub fn display(&self) -> String {
        match &self.socket {
            Some(s) => format!("socket {}", s.display()),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

pub(crate) fn resolve(d: &RawDatabase, env: &dyn Env) -> Result<DatabaseConfig, ConfigError> {
    let s = Section::new(env, "database", "WPDR_DB_");
    let host = s
        .key("host", "HOST")
        .string(&d.host)?
        .unwrap_or_else(|| "127.0.0.1".into());
    let port_key = s.key("port", "PORT");
    let port = port_key.number(&d.port)?.unwrap_or(3306);
    let port = port_key.check(port, port != 0, |_| "0 is not a port".into())?;
    let socket = s.key("socket", "SOCKET").path(&d.socket)?;
    let user = s
        .key("user", "USER")
        .string(&d.user)?
        .unwrap_or_else(|| "root".into());
    let password = s
        .key("password_file", "PASSWORD")
        .credential(&d.password_file)?
        .unwrap_or_default();
    let name_key = s.key("name", "NAME");
    let name = name_key
        .string(&d.name)?
        .unwrap_or_else(|| "wordpress".into());
    let name = name_key.check(name.clone(), !name.is_empty() && name.len() <= 64, |_| {
        "must be 1-64 characters".into()
    })?;
    let conn_key = s.key("connections", "CONNECTIONS");
    let connections = conn_key.within(conn_key.number(&d.connections)?.unwrap_or(2), 1..=32)?;
    let prefix_key = s.key("table_prefix", "TABLE_PREFIX");
    let table_prefix = prefix_key
        .string(&d.table_prefix)?
        .unwrap_or_else(|| "wp_".into());
    let valid = table_prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_');
    let table_prefix = prefix_key.check(table_prefix, valid, |p| {
        format!("'{p}' may hold only letters, digits and '_' (as WordPress requires)")
    })?;
    let replicas_key = s.key("replicas", "REPLICAS");
    let replicas = replicas_key
        .list(&d.replicas)?
        .iter()
        .map(|r| {
            let (h, p) = r.rsplit_once(':').unwrap_or((r.as_str(), "3306"));
            match p.parse::<u16>() {
                Ok(port) if port > 0 && !h.is_empty() => Ok((h.to_string(), port)),
                _ => Err(replicas_key.invalid(format!("'{r}' is not host:port"))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let read_from_key = s.key("read_from", "READ_FROM");
    let read_from_replica = match read_from_key.string(&d.read_from)?.as_deref() {
        None => !replicas.is_empty(),
        Some("replica") if replicas.is_empty() => {
            return Err(read_from_key.invalid("is 'replica' but database.replicas names none"))
        }
        Some("replica") => true,
        Some("primary") => false,
        Some(other) => {
            return Err(read_from_key.invalid(format!("'{other}' is not primary or replica")))
        }
    };
    let topology = Topology {
        replicas,
        read_from_replica,
        max_replica_lag_seconds: s
            .key("max_replica_lag_seconds", "MAX_REPLICA_LAG_SECONDS")
            .number(&d.max_replica_lag_seconds)?
            .unwrap_or(300),
        fallback_to_primary: s
            .key("fallback_to_primary", "FALLBACK_TO_PRIMARY")
            .boolean(&d.fallback_to_primary)?
            .unwrap_or(false),
    };
    let skip_key = s.key("skip", "SKIP");
    let skip = skip_key.list(&d.skip)?;
    if let Some(bad) = skip.iter().find(|p| p.chars().all(|c| c == '*')) {
        return Err(skip_key.invalid(format!(
            "'{bad}' would skip every object: a backup of nothing is not a backup"
        )));
    }
    Ok(DatabaseConfig {
        host,
        skip,
        port,
        socket,
        user,
        password,
        name,
        connections,
        table_prefix,
        topology,
        binlog: resolve_binlog(&d.binlog.clone().unwrap_or_default(), env)?,
        tls: resolve_tls(&d.tls.clone().unwrap_or_default(), env)?,
    })
}

fn resolve_tls(t: &RawTls, env: &dyn Env) -> Result<TlsConfig, ConfigError> {
    let s = Section::new(env, "database.tls", "WPDR_DB_TLS_");
    let mode = s
        .key("mode", "MODE")
        .read(&t.mode, |v| Ok(v.to_string()))?
        .map(|m| TlsMode::parse(&m).map_err(|p| s.key("mode", "MODE").invalid(p)))
        .transpose()?
        .unwrap_or_default();
    let file =
        |name: &str, var: &str, raw: &Option<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
            let key = s.key(name, var);
            match key.path(raw)? {
                Some(p) if !p.is_file() => {
                    Err(key.invalid(format!("{} is not a readable file", p.display())))
                }
                other => Ok(other),
            }
        };
    let ca_file = file("ca_file", "CA_FILE", &t.ca_file)?;
    let cert_file = file("cert_file", "CERT_FILE", &t.cert_file)?;
    let key_file = file("key_file", "KEY_FILE", &t.key_file)?;
    if cert_file.is_some() != key_file.is_some() {
        return Err(s.key("cert_file", "CERT_FILE").invalid(
            "a client certificate needs its key (database.tls.key_file) and the other way round",
        ));
    }
    if mode == TlsMode::Disabled && (ca_file.is_some() || cert_file.is_some()) {
        return Err(s.key("mode", "MODE").invalid(
            "is disabled but a CA or client certificate is given: set mode to verify-identity (or drop the files)",
        ));
    }
    Ok(TlsConfig {
        mode,
        ca_file,
        cert_file,
        key_file,
    })
}

fn resolve_binlog(b: &RawBinlog, env: &dyn Env) -> Result<BinlogArchiveConfig, ConfigError> {
    let s = Section::new(env, "database.binlog", "WPDR_BINLOG_");
    let defaults = BinlogArchiveConfig::default();
    let id_key = s.key("server_id", "SERVER_ID");
    let server_id = id_key.number(&b.server_id)?.unwrap_or(defaults.server_id);
    let server_id = id_key.check(server_id, server_id != 0, |_| {
        "0 is not a valid server id (the server refuses replicas with id 0)".into()
    })?;
    let seconds_key = s.key("segment_seconds", "SEGMENT_SECONDS");
    let segment_seconds = seconds_key.within(
        seconds_key
            .number(&b.segment_seconds)?
            .unwrap_or(defaults.segment_seconds),
        1..=3600,
    )?;
    let size_key = s.key("segment_size", "SEGMENT_SIZE");
    let segment_bytes = size_key
        .size(&b.segment_size)?
        .unwrap_or(defaults.segment_bytes);
    let segment_bytes = size_key.check(segment_bytes, segment_bytes >= 64 << 10, |_| {
        "is below 64 KiB".into()
    })?;
    let archive_key = s.key("archive", "ARCHIVE");
    let shared = match archive_key.string(&b.archive)? {
        Some(name) => Some(archive_key.check(name.clone(), super::is_safe_name(&name), |v| {
            format!("'{v}' must be 1-63 characters of letters, digits, '-', '_' or '.', not starting with '.' (it names a path in the store)")
        })?),
        None => None,
    };
    let claim_key = s.key("claim_days", "CLAIM_DAYS");
    let claim_days = claim_key.within(
        claim_key
            .number(&b.claim_days)?
            .unwrap_or(defaults.claim_days),
        1..=3650,
    )?;
    Ok(BinlogArchiveConfig {
        server_id,
        segment_seconds,
        segment_bytes,
        shared,
        claim_days,
    })
}
