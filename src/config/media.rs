//! `media:` — the uploads bucket (MinIO in the cluster) and its offsite mirror.

use super::overlay::{Env, Section};
use super::s3::{resolve_s3, RawS3, S3Config};
use super::ConfigError;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMedia {
    source: Option<RawS3>,
    offsite: Option<RawS3>,
    retained_prefix: Option<String>,
    uploads_prefix: Option<String>,
    concurrency: Option<usize>,
    max_deletes: Option<u64>,
    max_delete_percent: Option<u8>,
    encrypt: Option<bool>,
}

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
    /// Seal the offsite copies to `encryption.recipients`. `None`: yes when
    /// recipients are set. `false` keeps a plain mirror that can serve the
    /// site on its own (and is readable by whoever holds the offsite key).
    pub encrypt: Option<bool>,
}

impl MediaConfig {
    /// Whether the offsite copies are sealed, given whether the store seals.
    pub fn seals(&self, recipients_set: bool) -> bool {
        recipients_set && self.encrypt.unwrap_or(true)
    }
}

pub(crate) fn resolve(m: &RawMedia, env: &dyn Env) -> Result<Option<MediaConfig>, ConfigError> {
    let s = Section::new(env, "media", "WPDR_MEDIA_");
    let source_bucket = s.key("source", "SOURCE_BUCKET");
    let configured = m.source.is_some() || env.var(&source_bucket.var).is_some();
    if !configured {
        if m.offsite.is_some() {
            return Err(source_bucket.invalid(
                "media.offsite is set but media.source is not: name the uploads bucket to mirror",
            ));
        }
        return Ok(None);
    }
    let source = resolve_s3(
        &m.source.clone().unwrap_or_default(),
        Section::new(env, "media.source", "WPDR_MEDIA_SOURCE_"),
    )?;
    let offsite_section = Section::new(env, "media.offsite", "WPDR_MEDIA_OFFSITE_");
    // With `object_lock`, every copy and retained version offsite is
    // written with a retention date.
    let offsite = resolve_s3(&m.offsite.clone().unwrap_or_default(), offsite_section)?;
    if !offsite.prefix.is_empty() {
        return Err(offsite_section.key("prefix", "PREFIX").invalid(
            "the offsite mirror keeps the source's keys unchanged; use a bucket of its own instead of a prefix",
        ));
    }
    if source.bucket == offsite.bucket && source.endpoint == offsite.endpoint {
        return Err(offsite_section.key("bucket", "BUCKET").invalid(format!(
            "'{}' is the source bucket itself: the offsite copy must be another bucket",
            offsite.bucket
        )));
    }
    let retained_key = s.key("retained_prefix", "RETAINED_PREFIX");
    let retained_prefix = retained_key
        .string(&m.retained_prefix)?
        .unwrap_or_else(|| ".wpdr-retained/".into());
    let retained_prefix = retained_key.check(
        retained_prefix.trim_matches('/').to_string(),
        !retained_prefix.trim_matches('/').is_empty(),
        |_| "must not be empty: overwritten and deleted versions are kept under it".into(),
    )? + "/";
    let uploads_prefix = s
        .key("uploads_prefix", "UPLOADS_PREFIX")
        .string(&m.uploads_prefix)?
        .unwrap_or_else(|| "wp-content/uploads/".into());
    let uploads_prefix = match uploads_prefix.trim_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    let conc_key = s.key("concurrency", "CONCURRENCY");
    let concurrency = conc_key.within(conc_key.number(&m.concurrency)?.unwrap_or(32), 1..=256)?;
    let max_deletes = s
        .key("max_deletes", "MAX_DELETES")
        .number(&m.max_deletes)?
        .unwrap_or(1000);
    let pct_key = s.key("max_delete_percent", "MAX_DELETE_PERCENT");
    let max_delete_percent = pct_key.number(&m.max_delete_percent)?.unwrap_or(10);
    let max_delete_percent = pct_key.check(max_delete_percent, max_delete_percent <= 100, |p| {
        format!("{p} is over 100")
    })?;
    let encrypt = s.key("encrypt", "ENCRYPT").boolean(&m.encrypt)?;
    Ok(Some(MediaConfig {
        encrypt,
        source,
        offsite,
        retained_prefix,
        uploads_prefix,
        concurrency,
        max_deletes,
        max_delete_percent,
    }))
}
