//! `store:` — where backup sets live.

use super::overlay::{normalise_prefix, ByteSize, Env, Section};
use super::s3::{resolve_credentials, resolve_object_lock, resolve_s3, RawS3, S3Config};
use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
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
    ca_file: Option<PathBuf>,
    object_lock: Option<super::s3::RawObjectLock>,
    #[serde(default)]
    prune_credentials: RawPruneCredentials,
}

/// Keys of their own for `prune`, the only job that deletes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPruneCredentials {
    access_key_id: Option<String>,
    access_key_id_file: Option<PathBuf>,
    secret_access_key_file: Option<PathBuf>,
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
    /// The store as `prune` opens it: with `store.prune_credentials` when
    /// set (the backup side's keys need not delete), else as configured.
    pub fn for_prune(&self) -> StoreConfig {
        match self {
            StoreConfig::S3(s3) if s3.prune_credentials.is_some() => {
                let mut s3 = s3.clone();
                s3.credentials = s3.prune_credentials.clone();
                StoreConfig::S3(s3)
            }
            other => other.clone(),
        }
    }

    pub fn prefix(&self) -> &str {
        match self {
            StoreConfig::Local { prefix, .. } => prefix,
            StoreConfig::S3(s3) => &s3.prefix,
        }
    }
}

pub(crate) fn resolve(s: &RawStore, env: &dyn Env) -> Result<StoreConfig, ConfigError> {
    let section = Section::new(env, "store", "WPDR_STORE_");
    let kind_key = section.key("type", "TYPE");
    let kind = kind_key.string(&s.kind)?.unwrap_or_else(|| "local".into());
    let prefix = normalise_prefix(
        &section
            .key("prefix", "PREFIX")
            .string(&s.prefix)?
            .unwrap_or_else(|| "wpdr".into()),
    );
    match kind.as_str() {
        "local" => {
            let path = section
                .key("path", "PATH")
                .path(&s.path)?
                .unwrap_or_else(|| PathBuf::from("wpdr-backups"));
            if s.object_lock.is_some() {
                return Err(section.key("object_lock", "-").invalid(
                    "needs an S3 store whose bucket has Object Lock enabled; a local directory cannot lock objects",
                ));
            }
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
                ca_file: s.ca_file.clone(),
                // Resolved below, with the store's own variables.
                object_lock: None,
            };
            // The bucket's settings keep their historical variables: WPDR_S3_*.
            let mut s3 = resolve_s3(&raw, Section::new(env, "store", "WPDR_S3_"))?;
            s3.prefix = prefix;
            s3.object_lock =
                resolve_object_lock(&s.object_lock, Section::new(env, "store", "WPDR_S3_"))?;
            let p = &s.prune_credentials;
            s3.prune_credentials = resolve_credentials(
                Section::new(env, "store.prune_credentials", "WPDR_S3_PRUNE_"),
                &p.access_key_id,
                &p.access_key_id_file,
                &p.secret_access_key_file,
            )?;
            Ok(StoreConfig::S3(s3))
        }
        other => Err(kind_key.invalid(format!(
            "'{other}' is not a store type; use 'local' or 's3'"
        ))),
    }
}
