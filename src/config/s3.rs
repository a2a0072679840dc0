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
    let key_id = match section
        .key("access_key_id", "ACCESS_KEY_ID")
        .string(&raw.access_key_id)?
    {
        Some(k) => Some(k),
        None => match &raw.access_key_id_file {
            Some(p) => Some(
                super::overlay::read_credential(&section.key("access_key_id_file", "-").field, p)?
                    .expose()
                    .to_string(),
            ),
            None => None,
        },
    };
    let secret_key = section.key("secret_access_key_file", "SECRET_ACCESS_KEY");
    let secret = secret_key.credential(&raw.secret_access_key_file)?;
    let credentials = match (key_id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Some(S3Credentials {
            access_key_id,
            secret_access_key,
        }),
        (None, None) => None,
        (Some(_), None) => return Err(secret_key.invalid(
            "an access key id is set but no secret key: set both, or neither to use the default AWS chain",
        )),
        (None, Some(_)) => {
            return Err(section
                .key("access_key_id", "ACCESS_KEY_ID")
                .invalid("a secret key is set but no access key id: set both, or neither"))
        }
    };
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
    Ok(S3Config {
        bucket,
        prefix: normalise_prefix(&prefix),
        endpoint,
        region,
        path_style,
        credentials,
        part_size: part_size as usize,
        parts_in_flight,
    })
}
