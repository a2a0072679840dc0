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
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinlog {
    server_id: Option<u32>,
    segment_seconds: Option<u64>,
    segment_size: Option<ByteSize>,
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
}

impl Default for BinlogArchiveConfig {
    fn default() -> Self {
        BinlogArchiveConfig {
            server_id: 4_031_000_001,
            segment_seconds: 30,
            segment_bytes: 16 << 20,
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
}

impl Endpoint {
    pub fn from_config(c: &DatabaseConfig) -> Self {
        Endpoint {
            host: c.host.clone(),
            port: c.port,
            socket: c.socket.clone(),
            user: c.user.clone(),
            password: c.password.clone(),
        }
    }

    /// Parses `mysql://user[:password]@host[:port][/database]`; returns the database too.
    /// The password may also come from `WPDR_TARGET_PASSWORD` so it stays off the command line.
    pub fn from_url(
        text: &str,
        env_password: Option<String>,
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
        let password = match (u.password(), env_password) {
            (Some(p), _) => Secret::new(decode(p)?),
            (None, Some(p)) => Secret::new(p),
            (None, None) => Secret::default(),
        };
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
    Ok(BinlogArchiveConfig {
        server_id,
        segment_seconds,
        segment_bytes,
    })
}
