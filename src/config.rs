//! `wpdr.yaml` + environment -> one typed, validated [`Config`].
//!
//! Every setting has a YAML path and an environment variable; the environment
//! wins, so a Kubernetes Secret or ConfigMap can override a file baked into an
//! image. Credentials are read from `*_file` settings (Secrets mounted as files)
//! or from the environment, and are held as [`Secret`] from the moment they are read.

use crate::exit::{Classify, ExitCode};
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::HashMap;
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

/// The file format. Everything optional here; defaults and checks live in [`Config::resolve`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    site: Option<String>,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    backup: RawBackup,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    media: RawMedia,
    #[serde(default)]
    wordpress: RawWordpress,
    #[serde(default)]
    restore: RawRestore,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWordpress {
    url: Option<String>,
}

/// Where the restored components answer. `{namespace}` in any of these is
/// the namespace a restore or drill brings the site back into.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestore {
    database: Option<String>,
    database_password_file: Option<PathBuf>,
    media: Option<RawS3>,
    caches: Option<Vec<String>>,
    site_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMedia {
    source: Option<RawS3>,
    offsite: Option<RawS3>,
    retained_prefix: Option<String>,
    uploads_prefix: Option<String>,
    concurrency: Option<usize>,
    max_deletes: Option<u64>,
    max_delete_percent: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    namespace: Option<String>,
    secrets_key_file: Option<PathBuf>,
    #[serde(default)]
    custom_resources: Vec<CustomResourceKind>,
}

/// A custom resource kind to record with the namespace (e.g. a MariaDB operator's).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomResourceKind {
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The resource's plural name as in its URL (`mariadbs`).
    pub plural: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep_last: Option<usize>,
    keep_daily: Option<usize>,
    keep_weekly: Option<usize>,
    keep_monthly: Option<usize>,
    keep_yearly: Option<usize>,
    incomplete_grace_hours: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(rename = "type")]
    kind: Option<String>,
    path: Option<PathBuf>,
    prefix: Option<String>,
    bucket: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    access_key_id: Option<String>,
    access_key_id_file: Option<PathBuf>,
    secret_access_key_file: Option<PathBuf>,
    part_size: Option<ByteSize>,
    parts_in_flight: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
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
    binlog: Option<RawBinlog>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinlog {
    server_id: Option<u32>,
    segment_seconds: Option<u64>,
    segment_size: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    chunk_size: Option<ByteSize>,
    compression_level: Option<i32>,
    lock_ttl_seconds: Option<u64>,
}

/// Connection settings of one S3 bucket (store, media source, media offsite).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    bucket: Option<String>,
    prefix: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    access_key_id: Option<String>,
    access_key_id_file: Option<PathBuf>,
    secret_access_key_file: Option<PathBuf>,
    part_size: Option<ByteSize>,
    parts_in_flight: Option<usize>,
}

/// A byte count written as an integer or with a unit: `67108864`, `64MiB`, `8 MB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("'{text}' is not a size (use e.g. 64MiB)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => return Err(format!("unknown size unit '{other}' in '{text}'")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("'{text}' is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            N(u64),
            S(String),
        }
        match Either::deserialize(d)? {
            Either::N(n) => Ok(ByteSize(n)),
            Either::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Where backup sets live.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// A local directory (or a mounted volume): the embedded default.
    Local {
        path: PathBuf,
        prefix: String,
    },
    S3(S3Config),
}

impl StoreConfig {
    pub fn prefix(&self) -> &str {
        match self {
            StoreConfig::Local { prefix, .. } => prefix,
            StoreConfig::S3(s3) => &s3.prefix,
        }
    }
}

#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    /// Static keys; `None` means the AWS default chain (env, web identity, IMDS).
    pub credentials: Option<S3Credentials>,
    pub part_size: usize,
    pub parts_in_flight: usize,
}

#[derive(Debug, Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
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

#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub chunk_bytes: u64,
    pub compression_level: i32,
    pub lock_ttl_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct RetentionConfig {
    pub policy: crate::catalog::retention::Policy,
    /// Files of interrupted runs younger than this are left alone.
    pub incomplete_grace_hours: i64,
}

/// What a backup records from Kubernetes.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// The site's namespace; `None`: no cluster objects in sets.
    pub namespace: Option<String>,
    /// Key for sealing Secrets; without it Secrets are skipped (and the set says so).
    pub secrets_key: Option<crate::cluster::seal::SealKey>,
    /// Custom resources recorded and restored along with the built-in kinds.
    pub custom_resources: Vec<CustomResourceKind>,
}

/// The media library: the uploads bucket (MinIO in the cluster) and its offsite mirror.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The bucket WordPress uploads to; `prefix` limits the mirror to part of it.
    pub source: S3Config,
    /// The offsite mirror: same keys as the source, plus the retained area.
    pub offsite: S3Config,
    /// Where overwritten and deleted offsite versions are kept, inside the offsite bucket.
    pub retained_prefix: String,
    /// Key prefix of the uploads directory in the bucket (`wp-content/uploads/`),
    /// used to map `_wp_attached_file` paths to keys.
    pub uploads_prefix: String,
    /// Objects copied at the same time.
    pub concurrency: usize,
    /// A run that would delete more offsite objects than this stops unless confirmed.
    pub max_deletes: u64,
    /// ... or a larger share of the mirror than this (percent).
    pub max_delete_percent: u8,
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
}

/// The text every restore target may hold in place of the namespace name.
pub const NAMESPACE_PLACEHOLDER: &str = "{namespace}";

/// Where a restore puts each component, as templates over `{namespace}`
/// (resolve with [`RestoreTargets::database_url`] and friends).
#[derive(Debug, Clone, Default)]
pub struct RestoreTargets {
    /// `mysql://user@host:port/database`; the password is kept apart.
    pub database: Option<String>,
    pub database_password: Secret,
    pub media: Option<S3Config>,
    /// `redis://[:password@]host:port` or `memcached://host:port`.
    pub caches: Vec<String>,
    pub site_url: Option<String>,
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

/// Source of environment variables; a map in tests, the process environment otherwise.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

fn invalid(field: &str, env: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        env: env.to_string(),
        problem: problem.into(),
    }
}

/// Reads a setting: the environment first, then the file.
fn pick<T: Clone>(
    env: &dyn Env,
    name: &str,
    field: &str,
    file: &Option<T>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    match env.var(name) {
        Some(v) => parse(&v).map(Some).map_err(|p| invalid(field, name, p)),
        None => Ok(file.clone()),
    }
}

fn as_string(v: &str) -> Result<String, String> {
    Ok(v.to_string())
}

fn as_number<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("'{v}' is not a valid number"))
}

/// An http(s) URL, as the site's address.
pub fn as_http_url(v: &str) -> Result<String, String> {
    let u = url::Url::parse(v.trim()).map_err(|e| format!("'{v}' is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!(
            "'{v}' must be an http:// or https:// URL with a host"
        ));
    }
    Ok(v.trim().to_string())
}

fn as_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("'{v}' is not true or false")),
    }
}

fn read_credential(field: &str, path: &Path) -> Result<Secret, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| Secret::new(s.trim_end_matches(['\n', '\r'])))
        .map_err(|source| ConfigError::CredentialFile {
            field: field.to_string(),
            path: path.to_path_buf(),
            source,
        })
}

/// A site name becomes a path segment in the store: keep it to safe characters.
fn check_name(field: &str, env: &str, v: &str) -> Result<(), ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !v.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            env,
            format!("'{v}' must be 1-63 characters of letters, digits, '-', '_' or '.'"),
        ))
    }
}

fn normalise_prefix(p: &str) -> String {
    p.trim_matches('/').to_string()
}

/// The S3 settings shared by the store and the media buckets. `field` is the
/// YAML section (`store`, `media.source`) and `envp` the environment prefix
/// (`WPDR_S3`, `WPDR_MEDIA_SOURCE`), so every error names the right setting.
fn resolve_s3(
    raw: &RawS3,
    env: &dyn Env,
    field: &str,
    envp: &str,
) -> Result<S3Config, ConfigError> {
    let bucket = pick(
        env,
        &format!("{envp}_BUCKET"),
        &format!("{field}.bucket"),
        &raw.bucket,
        as_string,
    )?
    .ok_or_else(|| {
        invalid(
            &format!("{field}.bucket"),
            &format!("{envp}_BUCKET"),
            "is required",
        )
    })?;
    // An empty endpoint (as a Helm value renders it) means AWS.
    let endpoint = pick(
        env,
        &format!("{envp}_ENDPOINT"),
        &format!("{field}.endpoint"),
        &raw.endpoint,
        as_string,
    )?
    .filter(|e| !e.trim().is_empty());
    if let Some(e) = &endpoint {
        let parsed = url::Url::parse(e).map_err(|err| {
            invalid(
                &format!("{field}.endpoint"),
                &format!("{envp}_ENDPOINT"),
                format!("'{e}' is not a URL: {err}"),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(
                &format!("{field}.endpoint"),
                &format!("{envp}_ENDPOINT"),
                format!("'{e}' must start with http:// or https://"),
            ));
        }
    }
    let region = pick(
        env,
        &format!("{envp}_REGION"),
        &format!("{field}.region"),
        &raw.region,
        as_string,
    )?
    .unwrap_or_else(|| "us-east-1".into());
    let path_style = pick(
        env,
        &format!("{envp}_PATH_STYLE"),
        &format!("{field}.path_style"),
        &raw.path_style,
        as_bool,
    )?
    .unwrap_or(endpoint.is_some());
    let key_id = match pick(
        env,
        &format!("{envp}_ACCESS_KEY_ID"),
        &format!("{field}.access_key_id"),
        &raw.access_key_id,
        as_string,
    )? {
        Some(k) => Some(k),
        None => match &raw.access_key_id_file {
            Some(p) => Some(
                read_credential(&format!("{field}.access_key_id_file"), p)?
                    .expose()
                    .to_string(),
            ),
            None => None,
        },
    };
    let secret = match env.var(&format!("{envp}_SECRET_ACCESS_KEY")) {
        Some(v) => Some(Secret::new(v)),
        None => {
            let file = pick(
                env,
                &format!("{envp}_SECRET_ACCESS_KEY_FILE"),
                &format!("{field}.secret_access_key_file"),
                &raw.secret_access_key_file,
                |v| Ok(PathBuf::from(v)),
            )?;
            match file {
                Some(p) => Some(read_credential(
                    &format!("{field}.secret_access_key_file"),
                    &p,
                )?),
                None => None,
            }
        }
    };
    let credentials = match (key_id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Some(S3Credentials {
                access_key_id,
                secret_access_key,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    &format!("{field}.secret_access_key_file"),
                    &format!("{envp}_SECRET_ACCESS_KEY"),
                    "an access key id is set but no secret key: set both, or neither to use the default AWS chain",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    &format!("{field}.access_key_id"),
                    &format!("{envp}_ACCESS_KEY_ID"),
                    "a secret key is set but no access key id: set both, or neither",
                ))
            }
        };
    let part_size = pick(
        env,
        &format!("{envp}_PART_SIZE"),
        &format!("{field}.part_size"),
        &raw.part_size,
        ByteSize::parse,
    )?
    .map(|b| b.0)
    .unwrap_or(8 << 20);
    if !(5 << 20..=512 << 20).contains(&part_size) {
        return Err(invalid(
            &format!("{field}.part_size"),
            &format!("{envp}_PART_SIZE"),
            format!("{part_size} bytes is outside 5MiB..512MiB (S3's minimum part is 5MiB)"),
        ));
    }
    let parts_in_flight = pick(
        env,
        &format!("{envp}_PARTS_IN_FLIGHT"),
        &format!("{field}.parts_in_flight"),
        &raw.parts_in_flight,
        as_number,
    )?
    .unwrap_or(2);
    if !(1..=16).contains(&parts_in_flight) {
        return Err(invalid(
            &format!("{field}.parts_in_flight"),
            &format!("{envp}_PARTS_IN_FLIGHT"),
            format!("{parts_in_flight} is outside 1..16"),
        ));
    }
    Ok(S3Config {
        bucket,
        prefix: normalise_prefix(
            &pick(
                env,
                &format!("{envp}_PREFIX"),
                &format!("{field}.prefix"),
                &raw.prefix,
                as_string,
            )?
            .unwrap_or_default(),
        ),
        endpoint,
        region,
        path_style,
        credentials,
        part_size: part_size as usize,
        parts_in_flight,
    })
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
        let site = pick(env, "WPDR_SITE", "site", &raw.site, as_string)?
            .unwrap_or_else(|| "default".into());
        check_name("site", "WPDR_SITE", &site)?;

        let store = Self::resolve_store(&raw.store, env)?;
        let database = Self::resolve_database(&raw.database, env)?;

        let b = &raw.backup;
        let chunk_bytes = pick(
            env,
            "WPDR_CHUNK_SIZE",
            "backup.chunk_size",
            &b.chunk_size,
            ByteSize::parse,
        )?
        .map(|s| s.0)
        .unwrap_or(64 << 20);
        if !(1 << 20..=4 << 30).contains(&chunk_bytes) {
            return Err(invalid(
                "backup.chunk_size",
                "WPDR_CHUNK_SIZE",
                format!("{chunk_bytes} bytes is outside 1MiB..4GiB"),
            ));
        }
        let compression_level = pick(
            env,
            "WPDR_COMPRESSION_LEVEL",
            "backup.compression_level",
            &b.compression_level,
            as_number,
        )?
        // Level 1: a backup competes for CPU with the live site and the
        // database server; SQL text compresses well even at 1 (see BENCHMARKS.md).
        .unwrap_or(1);
        if !(1..=19).contains(&compression_level) {
            return Err(invalid(
                "backup.compression_level",
                "WPDR_COMPRESSION_LEVEL",
                format!("{compression_level} is outside 1..19"),
            ));
        }
        let lock_ttl_seconds = pick(
            env,
            "WPDR_LOCK_TTL_SECONDS",
            "backup.lock_ttl_seconds",
            &b.lock_ttl_seconds,
            as_number,
        )?
        .unwrap_or(120);
        if !(5..=86_400).contains(&lock_ttl_seconds) {
            return Err(invalid(
                "backup.lock_ttl_seconds",
                "WPDR_LOCK_TTL_SECONDS",
                format!("{lock_ttl_seconds} is outside 5..86400"),
            ));
        }
        let r = &raw.retention;
        let keep = |name: &'static str, field: &'static str, v: &Option<usize>| {
            pick(env, name, field, v, as_number).map(|x| x.unwrap_or(0))
        };
        let policy = crate::catalog::retention::Policy {
            keep_last: keep("WPDR_KEEP_LAST", "retention.keep_last", &r.keep_last)?,
            keep_daily: keep("WPDR_KEEP_DAILY", "retention.keep_daily", &r.keep_daily)?,
            keep_weekly: keep("WPDR_KEEP_WEEKLY", "retention.keep_weekly", &r.keep_weekly)?,
            keep_monthly: keep(
                "WPDR_KEEP_MONTHLY",
                "retention.keep_monthly",
                &r.keep_monthly,
            )?,
            keep_yearly: keep("WPDR_KEEP_YEARLY", "retention.keep_yearly", &r.keep_yearly)?,
        };
        let incomplete_grace_hours = pick(
            env,
            "WPDR_INCOMPLETE_GRACE_HOURS",
            "retention.incomplete_grace_hours",
            &r.incomplete_grace_hours,
            as_number,
        )?
        .unwrap_or(24);
        if incomplete_grace_hours < 0 {
            return Err(invalid(
                "retention.incomplete_grace_hours",
                "WPDR_INCOMPLETE_GRACE_HOURS",
                "must not be negative",
            ));
        }
        Ok(Config {
            site,
            store,
            database,
            backup: BackupConfig {
                chunk_bytes,
                compression_level,
                lock_ttl_seconds,
            },
            retention: RetentionConfig {
                policy,
                incomplete_grace_hours,
            },
            cluster: Self::resolve_cluster(&raw.cluster, env)?,
            media: Self::resolve_media(&raw.media, env)?,
            wordpress_url: pick(
                env,
                "WPDR_WORDPRESS_URL",
                "wordpress.url",
                &raw.wordpress.url,
                as_http_url,
            )?
            .map(|u| u.trim_end_matches('/').to_string()),
            restore: Self::resolve_restore(&raw.restore, env)?,
        })
    }

    fn resolve_restore(r: &RawRestore, env: &dyn Env) -> Result<RestoreTargets, ConfigError> {
        // Templates are checked with a sample namespace filled in.
        let sample = |t: &str| RestoreTargets::in_namespace(t, "ns");
        let database = pick(
            env,
            "WPDR_RESTORE_DATABASE",
            "restore.database",
            &r.database,
            as_string,
        )?;
        if let Some(d) = &database {
            crate::mysql::Endpoint::from_url(&sample(d), None)
                .map_err(|p| invalid("restore.database", "WPDR_RESTORE_DATABASE", p))?;
        }
        let database_password = match env.var("WPDR_RESTORE_DATABASE_PASSWORD") {
            Some(p) => Secret::new(p),
            None => match pick(
                env,
                "WPDR_RESTORE_DATABASE_PASSWORD_FILE",
                "restore.database_password_file",
                &r.database_password_file,
                |v| Ok(PathBuf::from(v)),
            )? {
                Some(p) => read_credential("restore.database_password_file", &p)?,
                None => Secret::default(),
            },
        };
        let media = match &r.media {
            Some(raw) => {
                let mut m = resolve_s3(raw, env, "restore.media", "WPDR_RESTORE_MEDIA")?;
                if let Some(e) = &m.endpoint {
                    as_http_url(&sample(e)).map_err(|p| {
                        invalid("restore.media.endpoint", "WPDR_RESTORE_MEDIA_ENDPOINT", p)
                    })?;
                }
                m.prefix = String::new();
                Some(m)
            }
            None => None,
        };
        let caches = pick(
            env,
            "WPDR_RESTORE_CACHES",
            "restore.caches",
            &r.caches,
            |v| {
                Ok(v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect())
            },
        )?
        .unwrap_or_default();
        for c in &caches {
            crate::restore::cache::CacheServer::parse(&sample(c))
                .map_err(|p| invalid("restore.caches", "WPDR_RESTORE_CACHES", p))?;
        }
        let site_url = pick(
            env,
            "WPDR_RESTORE_SITE_URL",
            "restore.site_url",
            &r.site_url,
            as_string,
        )?;
        if let Some(u) = &site_url {
            as_http_url(&sample(u))
                .map_err(|p| invalid("restore.site_url", "WPDR_RESTORE_SITE_URL", p))?;
        }
        Ok(RestoreTargets {
            database,
            database_password,
            media,
            caches,
            site_url: site_url.map(|u| u.trim_end_matches('/').to_string()),
        })
    }

    fn resolve_store(s: &RawStore, env: &dyn Env) -> Result<StoreConfig, ConfigError> {
        let kind = pick(env, "WPDR_STORE_TYPE", "store.type", &s.kind, as_string)?
            .unwrap_or_else(|| "local".into());
        let prefix = normalise_prefix(
            &pick(
                env,
                "WPDR_STORE_PREFIX",
                "store.prefix",
                &s.prefix,
                as_string,
            )?
            .unwrap_or_else(|| "wpdr".into()),
        );
        match kind.as_str() {
            "local" => {
                let path = pick(env, "WPDR_STORE_PATH", "store.path", &s.path, |v| {
                    Ok(PathBuf::from(v))
                })?
                .unwrap_or_else(|| PathBuf::from("wpdr-backups"));
                Ok(StoreConfig::Local { path, prefix })
            }
            "s3" => {
                let raw = RawS3 {
                    bucket: s.bucket.clone(),
                    prefix: None,
                    endpoint: s.endpoint.clone(),
                    region: s.region.clone(),
                    path_style: s.path_style,
                    access_key_id: s.access_key_id.clone(),
                    access_key_id_file: s.access_key_id_file.clone(),
                    secret_access_key_file: s.secret_access_key_file.clone(),
                    part_size: s.part_size,
                    parts_in_flight: s.parts_in_flight,
                };
                let mut s3 = resolve_s3(&raw, env, "store", "WPDR_S3")?;
                s3.prefix = prefix;
                Ok(StoreConfig::S3(s3))
            }
            other => Err(invalid(
                "store.type",
                "WPDR_STORE_TYPE",
                format!("'{other}' is not a store type; use 'local' or 's3'"),
            )),
        }
    }

    fn resolve_cluster(c: &RawCluster, env: &dyn Env) -> Result<ClusterConfig, ConfigError> {
        let namespace = pick(
            env,
            "WPDR_NAMESPACE",
            "cluster.namespace",
            &c.namespace,
            as_string,
        )?;
        let key_text = match env.var("WPDR_SECRETS_KEY") {
            Some(k) => Some(Secret::new(k)),
            None => {
                let file = pick(
                    env,
                    "WPDR_SECRETS_KEY_FILE",
                    "cluster.secrets_key_file",
                    &c.secrets_key_file,
                    |v| Ok(PathBuf::from(v)),
                )?;
                match file {
                    Some(p) => Some(read_credential("cluster.secrets_key_file", &p)?),
                    None => None,
                }
            }
        };
        let secrets_key = match key_text {
            Some(k) => Some(
                crate::cluster::seal::SealKey::from_hex(k.expose()).map_err(|e| {
                    invalid(
                        "cluster.secrets_key_file",
                        "WPDR_SECRETS_KEY",
                        e.to_string(),
                    )
                })?,
            ),
            None => None,
        };
        for cr in &c.custom_resources {
            if [&cr.group, &cr.version, &cr.kind, &cr.plural]
                .iter()
                .any(|f| f.is_empty())
            {
                return Err(invalid(
                    "cluster.custom_resources",
                    "-",
                    "each entry needs group, version, kind and plural",
                ));
            }
        }
        Ok(ClusterConfig {
            namespace,
            secrets_key,
            custom_resources: c.custom_resources.clone(),
        })
    }

    fn resolve_media(m: &RawMedia, env: &dyn Env) -> Result<Option<MediaConfig>, ConfigError> {
        let configured = m.source.is_some() || env.var("WPDR_MEDIA_SOURCE_BUCKET").is_some();
        if !configured {
            if m.offsite.is_some() {
                return Err(invalid(
                    "media.source",
                    "WPDR_MEDIA_SOURCE_BUCKET",
                    "media.offsite is set but media.source is not: name the uploads bucket to mirror",
                ));
            }
            return Ok(None);
        }
        let source = resolve_s3(
            &m.source.clone().unwrap_or_default(),
            env,
            "media.source",
            "WPDR_MEDIA_SOURCE",
        )?;
        let offsite = resolve_s3(
            &m.offsite.clone().unwrap_or_default(),
            env,
            "media.offsite",
            "WPDR_MEDIA_OFFSITE",
        )?;
        if !offsite.prefix.is_empty() {
            return Err(invalid(
                "media.offsite.prefix",
                "WPDR_MEDIA_OFFSITE_PREFIX",
                "the offsite mirror keeps the source's keys unchanged; use a bucket of its own instead of a prefix",
            ));
        }
        if source.bucket == offsite.bucket && source.endpoint == offsite.endpoint {
            return Err(invalid(
                "media.offsite.bucket",
                "WPDR_MEDIA_OFFSITE_BUCKET",
                format!(
                    "'{}' is the source bucket itself: the offsite copy must be another bucket",
                    offsite.bucket
                ),
            ));
        }
        let retained_prefix = pick(
            env,
            "WPDR_MEDIA_RETAINED_PREFIX",
            "media.retained_prefix",
            &m.retained_prefix,
            as_string,
        )?
        .unwrap_or_else(|| ".wpdr-retained/".into());
        if retained_prefix.trim_matches('/').is_empty() {
            return Err(invalid(
                "media.retained_prefix",
                "WPDR_MEDIA_RETAINED_PREFIX",
                "must not be empty: overwritten and deleted versions are kept under it",
            ));
        }
        let retained_prefix = format!("{}/", retained_prefix.trim_matches('/'));
        let uploads_prefix = pick(
            env,
            "WPDR_MEDIA_UPLOADS_PREFIX",
            "media.uploads_prefix",
            &m.uploads_prefix,
            as_string,
        )?
        .unwrap_or_else(|| "wp-content/uploads/".into());
        let uploads_prefix = match uploads_prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let concurrency = pick(
            env,
            "WPDR_MEDIA_CONCURRENCY",
            "media.concurrency",
            &m.concurrency,
            as_number,
        )?
        .unwrap_or(32);
        if !(1..=256).contains(&concurrency) {
            return Err(invalid(
                "media.concurrency",
                "WPDR_MEDIA_CONCURRENCY",
                format!("{concurrency} is outside 1..256"),
            ));
        }
        let max_deletes = pick(
            env,
            "WPDR_MEDIA_MAX_DELETES",
            "media.max_deletes",
            &m.max_deletes,
            as_number,
        )?
        .unwrap_or(1000);
        let max_delete_percent = pick(
            env,
            "WPDR_MEDIA_MAX_DELETE_PERCENT",
            "media.max_delete_percent",
            &m.max_delete_percent,
            as_number,
        )?
        .unwrap_or(10);
        if max_delete_percent > 100 {
            return Err(invalid(
                "media.max_delete_percent",
                "WPDR_MEDIA_MAX_DELETE_PERCENT",
                format!("{max_delete_percent} is over 100"),
            ));
        }
        Ok(Some(MediaConfig {
            source,
            offsite,
            retained_prefix,
            uploads_prefix,
            concurrency,
            max_deletes,
            max_delete_percent,
        }))
    }

    fn resolve_database(d: &RawDatabase, env: &dyn Env) -> Result<DatabaseConfig, ConfigError> {
        let host = pick(env, "WPDR_DB_HOST", "database.host", &d.host, as_string)?
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = pick(env, "WPDR_DB_PORT", "database.port", &d.port, as_number)?.unwrap_or(3306);
        if port == 0 {
            return Err(invalid("database.port", "WPDR_DB_PORT", "0 is not a port"));
        }
        let socket = pick(env, "WPDR_DB_SOCKET", "database.socket", &d.socket, |v| {
            Ok(PathBuf::from(v))
        })?;
        let user = pick(env, "WPDR_DB_USER", "database.user", &d.user, as_string)?
            .unwrap_or_else(|| "root".into());
        let password = match env.var("WPDR_DB_PASSWORD") {
            Some(p) => Secret::new(p),
            None => {
                let file = pick(
                    env,
                    "WPDR_DB_PASSWORD_FILE",
                    "database.password_file",
                    &d.password_file,
                    |v| Ok(PathBuf::from(v)),
                )?;
                match file {
                    Some(p) => read_credential("database.password_file", &p)?,
                    None => Secret::default(),
                }
            }
        };
        let name = pick(env, "WPDR_DB_NAME", "database.name", &d.name, as_string)?
            .unwrap_or_else(|| "wordpress".into());
        if name.is_empty() || name.len() > 64 {
            return Err(invalid(
                "database.name",
                "WPDR_DB_NAME",
                "must be 1-64 characters",
            ));
        }
        let connections = pick(
            env,
            "WPDR_DB_CONNECTIONS",
            "database.connections",
            &d.connections,
            as_number,
        )?
        .unwrap_or(2);
        if !(1..=32).contains(&connections) {
            return Err(invalid(
                "database.connections",
                "WPDR_DB_CONNECTIONS",
                format!("{connections} is outside 1..32"),
            ));
        }
        let table_prefix = pick(
            env,
            "WPDR_DB_TABLE_PREFIX",
            "database.table_prefix",
            &d.table_prefix,
            as_string,
        )?
        .unwrap_or_else(|| "wp_".into());
        if !table_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(invalid(
                "database.table_prefix",
                "WPDR_DB_TABLE_PREFIX",
                format!("'{table_prefix}' may hold only letters, digits and '_' (as WordPress requires)"),
            ));
        }
        let replicas = pick(
            env,
            "WPDR_DB_REPLICAS",
            "database.replicas",
            &d.replicas,
            |v| {
                Ok(v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect())
            },
        )?
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let (h, p) = r.rsplit_once(':').unwrap_or((r.as_str(), "3306"));
            match p.parse::<u16>() {
                Ok(port) if port > 0 && !h.is_empty() => Ok((h.to_string(), port)),
                _ => Err(invalid(
                    "database.replicas",
                    "WPDR_DB_REPLICAS",
                    format!("'{r}' is not host:port"),
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
        let read_from = pick(
            env,
            "WPDR_DB_READ_FROM",
            "database.read_from",
            &d.read_from,
            as_string,
        )?;
        let read_from_replica = match read_from.as_deref() {
            None => !replicas.is_empty(),
            Some("replica") if replicas.is_empty() => {
                return Err(invalid(
                    "database.read_from",
                    "WPDR_DB_READ_FROM",
                    "is 'replica' but database.replicas names none",
                ))
            }
            Some("replica") => true,
            Some("primary") => false,
            Some(other) => {
                return Err(invalid(
                    "database.read_from",
                    "WPDR_DB_READ_FROM",
                    format!("'{other}' is not primary or replica"),
                ))
            }
        };
        let topology = Topology {
            replicas,
            read_from_replica,
            max_replica_lag_seconds: pick(
                env,
                "WPDR_DB_MAX_REPLICA_LAG_SECONDS",
                "database.max_replica_lag_seconds",
                &d.max_replica_lag_seconds,
                as_number,
            )?
            .unwrap_or(300),
            fallback_to_primary: pick(
                env,
                "WPDR_DB_FALLBACK_TO_PRIMARY",
                "database.fallback_to_primary",
                &d.fallback_to_primary,
                as_bool,
            )?
            .unwrap_or(false),
        };
        let b = d.binlog.clone().unwrap_or_default();
        let defaults = BinlogArchiveConfig::default();
        let binlog = BinlogArchiveConfig {
            server_id: pick(
                env,
                "WPDR_BINLOG_SERVER_ID",
                "database.binlog.server_id",
                &b.server_id,
                as_number,
            )?
            .unwrap_or(defaults.server_id),
            segment_seconds: pick(
                env,
                "WPDR_BINLOG_SEGMENT_SECONDS",
                "database.binlog.segment_seconds",
                &b.segment_seconds,
                as_number,
            )?
            .unwrap_or(defaults.segment_seconds),
            segment_bytes: pick(
                env,
                "WPDR_BINLOG_SEGMENT_SIZE",
                "database.binlog.segment_size",
                &b.segment_size,
                ByteSize::parse,
            )?
            .map(|s| s.0)
            .unwrap_or(defaults.segment_bytes),
        };
        if binlog.server_id == 0 {
            return Err(invalid(
                "database.binlog.server_id",
                "WPDR_BINLOG_SERVER_ID",
                "0 is not a valid server id (the server refuses replicas with id 0)",
            ));
        }
        if !(1..=3600).contains(&binlog.segment_seconds) {
            return Err(invalid(
                "database.binlog.segment_seconds",
                "WPDR_BINLOG_SEGMENT_SECONDS",
                format!("{} is outside 1..3600", binlog.segment_seconds),
            ));
        }
        if binlog.segment_bytes < 64 << 10 {
            return Err(invalid(
                "database.binlog.segment_size",
                "WPDR_BINLOG_SEGMENT_SIZE",
                "is below 64 KiB",
            ));
        }
        Ok(DatabaseConfig {
            host,
            port,
            socket,
            user,
            password,
            name,
            connections,
            table_prefix,
            topology,
            binlog,
        })
    }

    /// Where this site's sets live inside the store.
    pub fn site_prefix(&self) -> String {
        let p = self.store.prefix();
        if p.is_empty() {
            self.site.clone()
        } else {
            format!("{p}/{}", self.site)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

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

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(ByteSize::parse("64MiB").unwrap().0, 64 << 20);
        assert_eq!(ByteSize::parse("1000").unwrap().0, 1000);
        assert!(ByteSize::parse("12 parsecs").is_err());
    }
}
