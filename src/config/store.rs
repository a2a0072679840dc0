//! `store:` — where backup sets live.

use super::overlay::{normalise_prefix, ByteSize, Env, Section};
use super::s3::{resolve_s3, RawS3, S3Config};
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
            // The bucket's settings keep their historical variables: WPDR_S3_*.
            let mut s3 = resolve_s3(&raw, Section::new(env, "store", "WPDR_S3_"))?;
            s3.prefix = prefix;
            Ok(StoreConfig::S3(s3))
        }
        other => Err(kind_key.invalid(format!(
            "'{other}' is not a store type; use 'local' or 's3'"
        ))),
    }
}
