//! `restore:` — where a restore or drill puts each component, as templates
//! over `{namespace}`; and [`CacheServer`], the address of a cache to flush.

use super::overlay::{as_http_url, Env, Section};
use super::s3::{resolve_s3, RawS3, S3Config};
use super::{ConfigError, Endpoint};
use crate::secret::Secret;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRestore {
    database: Option<String>,
    database_password_file: Option<PathBuf>,
    replication_user: Option<String>,
    replication_password_file: Option<PathBuf>,
    media: Option<RawS3>,
    caches: Option<Vec<String>>,
    site_url: Option<String>,
}

/// The text every restore target may hold in place of the namespace name.
pub const NAMESPACE_PLACEHOLDER: &str = "{namespace}";

/// Where a restore puts each component, as templates over `{namespace}`
/// (resolve with [`RestoreTargets::in_namespace`] and friends).
#[derive(Debug, Clone, Default)]
pub struct RestoreTargets {
    /// `mysql://user@host:port/database`; the password is kept apart.
    pub database: Option<String>,
    pub database_password: Secret,
    /// The user re-seeded replicas replicate as (REPLICATION SLAVE on the
    /// restored primary): never the restore user, whose rights are far wider.
    pub replication: Option<ReplicationUser>,
    pub media: Option<S3Config>,
    /// `redis://[:password@]host:port` or `memcached://host:port`.
    pub caches: Vec<String>,
    pub site_url: Option<String>,
}

/// `restore.replication_user` and its password.
#[derive(Debug, Clone)]
pub struct ReplicationUser {
    pub user: String,
    pub password: Secret,
}

impl RestoreTargets {
    pub fn in_namespace(template: &str, namespace: &str) -> String {
        template.replace(NAMESPACE_PLACEHOLDER, namespace)
    }

    /// The media target for `namespace`: bucket and endpoint filled in.
    pub fn media_for(&self, namespace: &str) -> Option<S3Config> {
        self.media.as_ref().map(|m| {
            let mut m = m.clone();
            m.bucket = Self::in_namespace(&m.bucket, namespace);
            m.endpoint = m.endpoint.map(|e| Self::in_namespace(&e, namespace));
            m
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    Redis,
    Memcached,
}

/// One cache server, `redis://host:port[/db]` or `memcached://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheServer {
    pub kind: CacheKind,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for CacheServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.kind {
            CacheKind::Redis => "redis",
            CacheKind::Memcached => "memcached",
        };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl CacheServer {
    pub fn parse(text: &str) -> Result<CacheServer, String> {
        let u = url::Url::parse(text.trim()).map_err(|e| {
            format!("'{text}' is not a cache URL (redis://host:port or memcached://host:port): {e}")
        })?;
        let kind = match u.scheme() {
            "redis" => CacheKind::Redis,
            "memcached" => CacheKind::Memcached,
            other => {
                return Err(format!(
                    "'{text}': scheme {other} is not redis:// or memcached://"
                ))
            }
        };
        if !u.username().is_empty() || u.password().is_some() {
            return Err(format!(
                "'{}' holds credentials: put the Redis password in WPDR_RESTORE_CACHE_PASSWORD instead",
                u.host_str().unwrap_or("?")
            ));
        }
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("'{text}' names no host"))?
            .to_string();
        let port = u.port().unwrap_or(match kind {
            CacheKind::Redis => 6379,
            CacheKind::Memcached => 11211,
        });
        Ok(CacheServer { kind, host, port })
    }
}

pub(crate) fn resolve(r: &RawRestore, env: &dyn Env) -> Result<RestoreTargets, ConfigError> {
    let s = Section::new(env, "restore", "WPDR_RESTORE_");
    // Templates are checked with a sample namespace filled in.
    let sample = |t: &str| RestoreTargets::in_namespace(t, "ns");
    let db_key = s.key("database", "DATABASE");
    let database = db_key.string(&r.database)?;
    if let Some(d) = &database {
        Endpoint::from_url(&sample(d), None, &Default::default()).map_err(|p| db_key.invalid(p))?;
    }
    let database_password = s
        .key("database_password_file", "DATABASE_PASSWORD")
        .credential(&r.database_password_file)?
        .unwrap_or_default();
    let media = match &r.media {
        Some(raw) => {
            let media_section = Section::new(env, "restore.media", "WPDR_RESTORE_MEDIA_");
            let mut m = resolve_s3(raw, media_section)?;
            if let Some(e) = &m.endpoint {
                as_http_url(&sample(e))
                    .map_err(|p| media_section.key("endpoint", "ENDPOINT").invalid(p))?;
            }
            m.prefix = String::new();
            Some(m)
        }
        None => None,
    };
    let caches_key = s.key("caches", "CACHES");
    let caches = caches_key.list(&r.caches)?;
    for c in &caches {
        CacheServer::parse(&sample(c)).map_err(|p| caches_key.invalid(p))?;
    }
    let url_key = s.key("site_url", "SITE_URL");
    let site_url = url_key.string(&r.site_url)?;
    if let Some(u) = &site_url {
        as_http_url(&sample(u)).map_err(|p| url_key.invalid(p))?;
    }
    let replication_user = s
        .key("replication_user", "REPLICATION_USER")
        .string(&r.replication_user)?;
    let replication_password = s
        .key("replication_password_file", "REPLICATION_PASSWORD")
        .credential(&r.replication_password_file)?;
    let replication = match (replication_user, replication_password) {
        (Some(user), Some(password)) => Some(ReplicationUser { user, password }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(s
                .key("replication_password_file", "REPLICATION_PASSWORD")
                .invalid("restore.replication_user is set but its password is not"))
        }
        (None, Some(_)) => {
            return Err(s
                .key("replication_user", "REPLICATION_USER")
                .invalid("a replication password is set but no replication user"))
        }
    };
    Ok(RestoreTargets {
        replication,
        database,
        database_password,
        media,
        caches,
        site_url: site_url.map(|u| u.trim_end_matches('/').to_string()),
    })
}
