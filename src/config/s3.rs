//! The settings of one S3 bucket: the store, the media source, the offsite
//! mirror and a restore's target bucket all read them the same way.

use super::overlay::{normalise_prefix, ByteSize, Section};
use super::ConfigError;
use crate::secret::Secret;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawS3 {
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    pub access_key_id: Option<String>,
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key_file: Option<PathBuf>,
    pub part_size: Option<ByteSize>,
    pub parts_in_flight: Option<usize>,
    pub ca_file: Option<PathBuf>,
    pub object_lock: Option<RawObjectLock>,
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
    /// Every object of a set is written with this retention (S3 Object
    /// Lock): the credentials that write it cannot delete it before then.
    pub object_lock: Option<ObjectLock>,
    /// Keys that may delete, used by `prune` only (`store.prune_credentials`).
    pub prune_credentials: Option<S3Credentials>,
    /// Extra CA certificates an HTTPS endpoint's certificate may chain to.
    pub ca_bundle: Option<CaBundle>,
}

/// A PEM CA bundle, read once when the config is; `Debug` shows its path.
#[derive(Clone)]
pub struct CaBundle(std::sync::Arc<(PathBuf, Vec<u8>)>);

impl CaBundle {
    pub fn path(&self) -> &std::path::Path {
        &self.0 .0
    }
    pub fn pem(&self) -> &[u8] {
        &self.0 .1
    }
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaBundle({})", self.path().display())
    }
}

/// `object_lock: {mode, days}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Deletable before expiry only with s3:BypassGovernanceRetention.
    Governance,
    /// Deletable by nobody, the root account included, before expiry.
    Compliance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawObjectLock {
    mode: Option<String>,
    days: Option<u32>,
}

/// `object_lock:` of `section` (env `<prefix>OBJECT_LOCK_MODE`, `..._DAYS`).
pub(crate) fn resolve_object_lock(
    raw: &Option<RawObjectLock>,
    section: Section,
) -> Result<Option<ObjectLock>, ConfigError> {
    let raw = raw.clone().unwrap_or_default();
    let mode_key = section.key("object_lock.mode", "OBJECT_LOCK_MODE");
    let days_key = section.key("object_lock.days", "OBJECT_LOCK_DAYS");
    let mode = mode_key.string(&raw.mode)?;
    let days = days_key.number(&raw.days)?;
    let (mode, days) = match (mode, days) {
        (None, None) => return Ok(None),
        (Some(m), Some(d)) => (m, d),
        (Some(_), None) => return Err(days_key.invalid("is required with object_lock.mode")),
        (None, Some(_)) => {
            return Err(
                mode_key.invalid("is required with object_lock.days (governance or compliance)")
            )
        }
    };
    let mode = match mode.trim().to_ascii_lowercase().as_str() {
        "governance" => LockMode::Governance,
        "compliance" => LockMode::Compliance,
        other => {
            return Err(mode_key.invalid(format!(
                "'{other}' is not a lock mode; use governance or compliance"
            )))
        }
    };
    let days = days_key.within(days, 1..=36_500)?;
    Ok(Some(ObjectLock { mode, days }))
}

#[derive(Debug, Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

/// A static key pair from `section`'s `access_key_id(_file)` and
/// `secret_access_key(_file)`; `None` when neither is set.
pub(crate) fn resolve_credentials(
    section: Section,
    access_key_id: &Option<String>,
    access_key_id_file: &Option<PathBuf>,
    secret_access_key_file: &Option<PathBuf>,
) -> Result<Option<S3Credentials>, ConfigError> {
    let key_id = match section
        .key("access_key_id", "ACCESS_KEY_ID")
        .string(access_key_id)?
    {
        Some(k) => Some(k),
        None => match access_key_id_file {
            Some(p) => Some(
                super::overlay::read_credential(&section.key("access_key_id_file", "-").field, p)?
                    .expose()
                    .to_string(),
            ),
            None => None,
        },
    };
    let secret_key = section.key("secret_access_key_file", "SECRET_ACCESS_KEY");
    let secret = secret_key.credential(secret_access_key_file)?;
    match (key_id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(S3Credentials {
            access_key_id,
            secret_access_key,
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(secret_key.invalid(
            "an access key id is set but no secret key: set both, or neither to use the default AWS chain",
        )),
        (None, Some(_)) => Err(section
            .key("access_key_id", "ACCESS_KEY_ID")
            .invalid("a secret key is set but no access key id: set both, or neither")),
    }
}

/// `section` is the YAML path (`store`, `media.source`) and its variables
/// start with `env_prefix` (`WPDR_S3_`, `WPDR_MEDIA_SOURCE_`), so every error
/// names the right setting.
pub(crate) fn resolve_s3(raw: &RawS3, section: Section) -> Result<S3Config, ConfigError> {
    let bucket_key = section.key("bucket", "BUCKET");
    let bucket = bucket_key
        .string(&raw.bucket)?
        .ok_or_else(|| bucket_key.invalid("is required"))?;
    let endpoint_key = section.key("endpoint", "ENDPOINT");
    // An empty endpoint (as a Helm value renders it) means AWS.
    let endpoint = endpoint_key
        .string(&raw.endpoint)?
        .filter(|e| !e.trim().is_empty());
    if let Some(e) = &endpoint {
        let parsed = url::Url::parse(e)
            .map_err(|err| endpoint_key.invalid(format!("'{e}' is not a URL: {err}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(endpoint_key.invalid(format!("'{e}' must start with http:// or https://")));
        }
    }
    let region = section
        .key("region", "REGION")
        .string(&raw.region)?
        .unwrap_or_else(|| "us-east-1".into());
    let path_style = section
        .key("path_style", "PATH_STYLE")
        .boolean(&raw.path_style)?
        .unwrap_or(endpoint.is_some());
    let credentials = resolve_credentials(
        section,
        &raw.access_key_id,
        &raw.access_key_id_file,
        &raw.secret_access_key_file,
    )?;
    let part_key = section.key("part_size", "PART_SIZE");
    let part_size = part_key.size(&raw.part_size)?.unwrap_or(8 << 20);
    let part_size = part_key.check(part_size, (5 << 20..=512 << 20).contains(&part_size), |p| {
        format!("{p} bytes is outside 5MiB..512MiB (S3's minimum part is 5MiB)")
    })?;
    let flight_key = section.key("parts_in_flight", "PARTS_IN_FLIGHT");
    let parts_in_flight = flight_key.within(
        flight_key.number(&raw.parts_in_flight)?.unwrap_or(2),
        1..=16,
    )?;
    let prefix = section
        .key("prefix", "PREFIX")
        .string(&raw.prefix)?
        .unwrap_or_default();
    let ca_key = section.key("ca_file", "CA_FILE");
    let ca_bundle = match ca_key.path(&raw.ca_file)? {
        None => None,
        Some(path) => {
            let pem = std::fs::read(&path)
                .map_err(|e| ca_key.invalid(format!("cannot read {}: {e}", path.display())))?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(ca_key.invalid(format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                )));
            }
            Some(CaBundle(std::sync::Arc::new((path, pem))))
        }
    };
    Ok(S3Config {
        ca_bundle,
        bucket,
        prefix: normalise_prefix(&prefix),
        endpoint,
        region,
        path_style,
        credentials,
        part_size: part_size as usize,
        parts_in_flight,
        object_lock: resolve_object_lock(&raw.object_lock, section)?,
        prune_credentials: None,
    })
}
