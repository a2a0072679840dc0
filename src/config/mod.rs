//! `wpdr.yaml` + environment -> one typed, validated [`Config`].
//!
//! The ground floor of the house: it imports nothing but `exit` and `secret`,
//! and the types a setting resolves to (endpoints, keys, retention counts,
//! cache addresses) live here, so every other module can depend on config
//! and config on none of them. One file per section; the environment-over-file
//! overlay is written once in [`overlay`]. Credentials are read from `*_file`
//! settings (Secrets mounted as files) or from the environment, and are held as
//! [`Secret`](crate::secret::Secret) from the moment they are read.

mod cluster;
mod database;
mod media;
mod overlay;
mod restore;
mod retention;
mod s3;
mod store;
mod trust;

pub use cluster::{ClusterConfig, CustomResourceKind, SealKey};
pub use database::{
    BinlogArchiveConfig, CertificateCheck, DatabaseConfig, Endpoint, TlsConfig, TlsMode, Topology,
};
pub use media::MediaConfig;
pub use overlay::{as_http_url, ByteSize, Env, ProcessEnv};
pub use restore::{CacheKind, CacheServer, ReplicationUser, RestoreTargets, NAMESPACE_PLACEHOLDER};
pub use retention::{BackupConfig, RetentionConfig, RetentionPolicy};
pub use s3::{CaBundle, LockMode, ObjectLock, S3Config, S3Credentials};
pub use store::StoreConfig;
pub use trust::{EncryptionConfig, SigningConfig};

use crate::exit::{Classify, ExitCode};
use overlay::Section;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}. Check the path given to --config.")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}. Fix the YAML; unknown keys are rejected so typos are caught.")]
    Parse { path: PathBuf, message: String },
    #[error("config: {field} (env {env}): {problem}")]
    Invalid {
        field: String,
        env: String,
        problem: String,
    },
    #[error("config: {field}: cannot read credential file {path}: {source}")]
    CredentialFile {
        field: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Classify for ConfigError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Config
    }
    fn metric_label(&self) -> &'static str {
        "config"
    }
}

/// The file format. Everything optional here; defaults and checks live in each section's `resolve`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    site: Option<String>,
    #[serde(default)]
    store: store::RawStore,
    #[serde(default)]
    database: database::RawDatabase,
    #[serde(default)]
    backup: retention::RawBackup,
    #[serde(default)]
    retention: retention::RawRetention,
    #[serde(default)]
    cluster: cluster::RawCluster,
    #[serde(default)]
    media: media::RawMedia,
    #[serde(default)]
    wordpress: RawWordpress,
    #[serde(default)]
    restore: restore::RawRestore,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    encryption: trust::RawEncryption,
    #[serde(default)]
    signing: trust::RawSigning,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    trigger_token_file: Option<PathBuf>,
}

/// `daemon:` — what only the scheduling daemon reads.
#[derive(Debug, Clone, Default)]
pub struct DaemonConfig {
    /// Bearer token for `POST /run/<schedule>`; without it, only requests
    /// from the daemon's own host may start a run.
    pub trigger_token: Option<crate::secret::Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWordpress {
    url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub site: String,
    pub store: StoreConfig,
    pub database: DatabaseConfig,
    pub backup: BackupConfig,
    pub retention: RetentionConfig,
    pub cluster: ClusterConfig,
    /// `None` when no media source is configured: sets hold no media index.
    pub media: Option<MediaConfig>,
    /// The live site as wpdr reaches it; its answers are captured at backup.
    pub wordpress_url: Option<String>,
    pub restore: RestoreTargets,
    pub daemon: DaemonConfig,
    pub encryption: EncryptionConfig,
    pub signing: SigningConfig,
}

impl Config {
    /// Loads the optional file, applies the environment and validates.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
        let raw = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                if text.trim().is_empty() {
                    RawConfig::default()
                } else {
                    serde_yaml::from_str(&text).map_err(|e| ConfigError::Parse {
                        path: p.to_path_buf(),
                        message: e.to_string(),
                    })?
                }
            }
            None => RawConfig::default(),
        };
        Self::resolve(raw, env)
    }

    /// Parses YAML text (for tests and embedded configs).
    pub fn from_yaml(text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string(),
        })?;
        Self::resolve(raw, env)
    }

    fn resolve(raw: RawConfig, env: &dyn Env) -> Result<Config, ConfigError> {
        let top = Section::new(env, "", "WPDR_");
        let site_key = top.key("site", "SITE");
        let site = site_key
            .string(&raw.site)?
            .unwrap_or_else(|| "default".into());
        // A site name becomes a path segment in the store: keep it to safe characters.
        let safe = is_safe_name(&site);
        let site = site_key.check(site, safe, |v| {
            format!("'{v}' must be 1-63 characters of letters, digits, '-', '_' or '.'")
        })?;
        let wordpress_url = Section::new(env, "wordpress", "WPDR_WORDPRESS_")
            .key("url", "URL")
            .read(&raw.wordpress.url, as_http_url)?
            .map(|u| u.trim_end_matches('/').to_string());
        let media = media::resolve(&raw.media, env)?;
        let encryption = trust::resolve_encryption(&raw.encryption, env)?;
        if media.as_ref().and_then(|m| m.encrypt) == Some(true) && encryption.recipients.is_empty()
        {
            return Err(overlay::invalid(
                "media.encrypt",
                "WPDR_MEDIA_ENCRYPT",
                "is true but no encryption.recipients are set: add the age recipients the media is sealed to (WPDR_ENCRYPTION_RECIPIENTS), or drop media.encrypt",
            ));
        }
        let database = database::resolve(&raw.database, env)?;
        let restore = restore::resolve(&raw.restore, env)?;
        Ok(Config {
            site,
            store: store::resolve(&raw.store, env)?,
            database,
            backup: retention::resolve_backup(&raw.backup, env)?,
            retention: retention::resolve_retention(&raw.retention, env)?,
            cluster: cluster::resolve(&raw.cluster, env)?,
            media,
            wordpress_url,
            restore,
            daemon: DaemonConfig {
                trigger_token: Section::new(env, "daemon", "WPDR_DAEMON_")
                    .key("trigger_token_file", "TRIGGER_TOKEN")
                    .credential(&raw.daemon.trigger_token_file)?
                    .filter(|t| !t.is_empty()),
            },
            encryption,
            signing: trust::resolve_signing(&raw.signing, env)?,
        })
    }

    /// Where this site's sets live inside the store.
    pub fn site_prefix(&self) -> String {
        self.in_store(&self.site)
    }

    /// Where the binlog archive this site restores from lives: its own,
    /// under the site prefix, or the server-wide one it shares
    /// (`database.binlog.archive`), under `.archives/` — a path no site
    /// can have, as site names never start with '.'.
    pub fn binlog_prefix(&self) -> String {
        match &self.database.binlog.shared {
            Some(name) => self.in_store(&format!(".archives/{name}")),
            None => self.site_prefix(),
        }
    }

    fn in_store(&self, path: &str) -> String {
        let p = self.store.prefix();
        if p.is_empty() {
            path.to_string()
        } else {
            format!("{p}/{path}")
        }
    }
}

/// A name that becomes one path segment in the store.
pub(crate) fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay::env_of as env;

    #[test]
    fn defaults_are_a_local_store_and_local_database() {
        let c = Config::from_yaml("{}", &env(&[])).unwrap();
        assert!(matches!(c.store, StoreConfig::Local { .. }));
        assert_eq!(c.database.port, 3306);
        assert_eq!(c.database.connections, 2);
        assert_eq!(c.site_prefix(), "wpdr/default");
    }

    #[test]
    fn environment_overrides_file() {
        let c = Config::from_yaml(
            "site: a\ndatabase:\n  port: 3307\n",
            &env(&[("WPDR_SITE", "b"), ("WPDR_DB_PORT", "3310")]),
        )
        .unwrap();
        assert_eq!(c.site, "b");
        assert_eq!(c.database.port, 3310);
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_key_named() {
        let err = Config::from_yaml("databse:\n  port: 1\n", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("databse"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_field_and_env() {
        let err = Config::from_yaml("database:\n  connections: 0\n", &env(&[])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("database.connections") && msg.contains("WPDR_DB_CONNECTIONS"),
            "{msg}"
        );
        let err = Config::from_yaml("{}", &env(&[("WPDR_DB_PORT", "x")])).unwrap_err();
        assert!(err.to_string().contains("database.port"));
        let err = Config::from_yaml("store:\n  type: s3\n", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("store.bucket"));
        let err = Config::from_yaml("site: 'a/b'\n", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("site"));
    }

    #[test]
    fn replicas_make_a_backup_read_from_a_replica_unless_told_otherwise() {
        let c = Config::from_yaml(
            "database:\n  replicas: ['db-1.db:3306', db-2.db]\n",
            &env(&[]),
        )
        .unwrap();
        let t = &c.database.topology;
        assert!(t.read_from_replica && !t.fallback_to_primary);
        assert_eq!(
            t.replicas,
            vec![("db-1.db".to_string(), 3306), ("db-2.db".to_string(), 3306)]
        );
        assert_eq!(t.max_replica_lag_seconds, 300);
        let c = Config::from_yaml(
            "database:\n  replicas: [a:3307]\n",
            &env(&[
                ("WPDR_DB_READ_FROM", "primary"),
                ("WPDR_DB_FALLBACK_TO_PRIMARY", "yes"),
            ]),
        )
        .unwrap();
        assert!(!c.database.topology.read_from_replica && c.database.topology.fallback_to_primary);
        assert!(
            !Config::from_yaml("{}", &env(&[]))
                .unwrap()
                .database
                .topology
                .read_from_replica
        );
        let e = Config::from_yaml("database:\n  read_from: replica\n", &env(&[])).unwrap_err();
        assert!(
            e.to_string().contains("database.replicas names none"),
            "{e}"
        );
        let e = Config::from_yaml("database:\n  replicas: ['a:x']\n", &env(&[])).unwrap_err();
        assert!(e.to_string().contains("'a:x' is not host:port"), "{e}");
    }

    #[test]
    fn restore_targets_are_templates_over_the_namespace() {
        let c = Config::from_yaml(
            "restore:\n  database: mysql://root@db.{namespace}.svc:3306/wordpress\n  media: {bucket: 'up-{namespace}', endpoint: 'http://minio.{namespace}.svc:9000'}\n  caches: ['redis://redis.{namespace}.svc']\n  site_url: http://wp.{namespace}.svc/\n",
            &env(&[("WPDR_RESTORE_DATABASE_PASSWORD", "pw")]),
        )
        .unwrap();
        let m = c.restore.media_for("drill-1").unwrap();
        assert_eq!(m.bucket, "up-drill-1");
        assert_eq!(m.endpoint.as_deref(), Some("http://minio.drill-1.svc:9000"));
        assert_eq!(
            c.restore.site_url.as_deref(),
            Some("http://wp.{namespace}.svc")
        );
        assert!(!format!("{:?}", c.restore).contains("pw\""));
        let e = Config::from_yaml("restore:\n  caches: ['http://x']\n", &env(&[])).unwrap_err();
        assert!(e.to_string().contains("restore.caches"), "{e}");
        let e = Config::from_yaml("restore:\n  site_url: ftp://x\n", &env(&[])).unwrap_err();
        assert!(e.to_string().contains("restore.site_url"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let c = Config::from_yaml(
            "store:\n  type: s3\n  bucket: b\n  access_key_id: GKabc\n",
            &env(&[
                ("WPDR_S3_SECRET_ACCESS_KEY", "topsecretkey"),
                ("WPDR_DB_PASSWORD", "dbpass123"),
            ]),
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("topsecretkey") && !dbg.contains("dbpass123"),
            "{dbg}"
        );
    }

    #[test]
    fn credential_files_are_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let c = Config::from_yaml(
            &format!("database:\n  password_file: {}\n", p.display()),
            &env(&[]),
        )
        .unwrap();
        assert_eq!(c.database.password.expose(), "s3cret");
        let err = Config::from_yaml("database:\n  password_file: /nonexistent/pw\n", &env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("database.password_file"));
    }

    #[test]
    fn media_buckets_resolve_with_their_own_names() {
        let c = Config::from_yaml("{}", &env(&[])).unwrap();
        assert!(c.media.is_none());
        let c = Config::from_yaml(
            "media:\n  source: {bucket: up, endpoint: 'http://minio:9000'}\n  offsite: {bucket: off}\n",
            &env(&[("WPDR_MEDIA_OFFSITE_ENDPOINT", "http://s3.example:9000")]),
        )
        .unwrap();
        let m = c.media.unwrap();
        assert_eq!(
            (m.source.bucket.as_str(), m.offsite.bucket.as_str()),
            ("up", "off")
        );
        assert_eq!(
            m.offsite.endpoint.as_deref(),
            Some("http://s3.example:9000")
        );
        assert_eq!(m.retained_prefix, ".wpdr-retained/");
        let err = Config::from_yaml("media:\n  source: {bucket: up}\n", &env(&[])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("media.offsite.bucket") && msg.contains("WPDR_MEDIA_OFFSITE_BUCKET"),
            "{msg}"
        );
        let err = Config::from_yaml(
            "media:\n  source: {bucket: up}\n  offsite: {bucket: up}\n",
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("source bucket itself"), "{err}");
        let err = Config::from_yaml(
            "media:\n  source: {bucket: up}\n  offsite: {bucket: off}\n  retained_prefix: '/'\n",
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("media.retained_prefix"), "{err}");
    }
}
