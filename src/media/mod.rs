//! Media library: the offsite mirror of the uploads bucket, the per-set media
//! index, and restore of the media as of any set.
//!
//! * `plan`: the pure decision of what a mirror run does with each key.
//! * `bucket`: one bucket's operations.
//! * `copy`: the byte path between two buckets, checked end to end.
//! * `sealing`: the pieces of that path when offsite copies are sealed (age).
//! * `records`: the sorted record streams (mirror state, set index) in the store.
//! * `mirror`: a mirror run (control plane: listing, planning, copying, rails).
//! * `restore`: fill a fresh bucket with exactly a set's objects.
//! * `attachments`: which keys the WordPress database refers to.

pub mod attachments;
pub mod bucket;
pub mod copy;
pub mod listing;
pub mod mirror;
pub mod plan;
pub mod point;
pub mod records;
pub mod restore;
pub mod retention;
pub mod sealing;

use crate::exit::{Classify, ExitCode};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("media: {0}")]
    Store(#[from] StoreError),
    #[error("copying {key}: {detail}")]
    Transfer { key: String, detail: String },
    #[error("{key}: content has SHA-256 {found}, the index says {expected}: the stored copy is damaged or is another version")]
    Checksum {
        key: String,
        expected: String,
        found: String,
    },
    #[error("{bucket} listed '{key}' after '{after}': listings must be sorted for the mirror to be safe, so nothing was changed. Is this an S3-compatible server?")]
    ListingOrder {
        bucket: String,
        after: String,
        key: String,
    },
    #[error("the source bucket has '{key}' under the retained prefix '{prefix}' the mirror keeps old versions in: set media.retained_prefix to a prefix the site does not use")]
    RetainedPrefixInSource { key: String, prefix: String },
    #[error("media record file {key} is damaged: {detail}")]
    Records { key: String, detail: String },
    #[error("the mirror stopped: {0}")]
    Stopped(String),
    #[error("{failed} object(s) could not be copied (first: {first}); the rest of the run finished and a rerun retries them")]
    Incomplete { failed: usize, first: String },
    #[error("this set holds no media index (it was taken without media configured)")]
    NoIndex,
    #[error("set {set} is partial: its media failed at backup ({reason}). Restore the media of an earlier complete set (`wpdr sets list` shows which are complete): the mirror keeps every version.")]
    NotInPartialSet { set: String, reason: String },
    #[error(
        "the restore into {bucket} does not match the set: {problems} problem(s), first: {first}"
    )]
    RestoreMismatch {
        bucket: String,
        problems: usize,
        first: String,
    },
    #[error("no mirror run listed the media before {point} (the oldest kept listing is {}): the media of that moment is not known. Choose a later point, or restore a set's media (`restore media <set>`)", first.as_deref().unwrap_or("none: no media sync or backup with media has run"))]
    NoGeneration {
        point: String,
        first: Option<String>,
    },
    #[error("no media is configured: set media.source and media.offsite (or WPDR_MEDIA_SOURCE_BUCKET and WPDR_MEDIA_OFFSITE_BUCKET)")]
    NotConfigured,
    #[error("reading WordPress attachments: {0}")]
    Attachments(String),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("media: {0}")]
    Trust(#[from] crate::trust::TrustError),
}

impl MediaError {
    /// Worth another whole-object attempt: a broken body, not a refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            MediaError::Transfer { .. } => true,
            MediaError::Store(e) => {
                matches!(e, StoreError::Unreachable { .. } | StoreError::S3 { .. })
            }
            _ => false,
        }
    }
}

impl Classify for MediaError {
    fn exit_code(&self) -> ExitCode {
        match self {
            MediaError::Store(e) => e.exit_code(),
            MediaError::Catalog(e) => e.exit_code(),
            MediaError::Trust(e) => e.exit_code(),
            MediaError::Checksum { .. } | MediaError::Records { .. } => ExitCode::Integrity,
            MediaError::NoIndex | MediaError::NoGeneration { .. } => ExitCode::SetNotFound,
            MediaError::NotInPartialSet { .. } => ExitCode::Partial,
            MediaError::RestoreMismatch { .. } => ExitCode::RestoreMismatch,
            MediaError::NotConfigured | MediaError::RetainedPrefixInSource { .. } => {
                ExitCode::Config
            }
            MediaError::Stopped(_) => ExitCode::Internal,
            MediaError::Incomplete { .. } => ExitCode::MediaIncomplete,
            MediaError::Attachments(_) => ExitCode::Database,
            MediaError::Transfer { .. } | MediaError::ListingOrder { .. } => {
                ExitCode::StoreUnavailable
            }
        }
    }
    fn metric_label(&self) -> &'static str {
        match self {
            MediaError::Store(e) => e.metric_label(),
            MediaError::Catalog(e) => e.metric_label(),
            MediaError::Trust(e) => e.metric_label(),
            MediaError::Transfer { .. } => "media_transfer",
            MediaError::Checksum { .. } => "media_checksum",
            MediaError::ListingOrder { .. } => "media_listing_order",
            MediaError::RetainedPrefixInSource { .. } => "media_retained_prefix",
            MediaError::Records { .. } => "media_records",
            MediaError::Stopped(_) => "media_stopped",
            MediaError::Incomplete { .. } => "media_incomplete",
            MediaError::NoIndex => "media_no_index",
            MediaError::NoGeneration { .. } => "media_no_generation",
            MediaError::NotInPartialSet { .. } => "set_partial",
            MediaError::RestoreMismatch { .. } => "media_restore_mismatch",
            MediaError::NotConfigured => "media_not_configured",
            MediaError::Attachments(_) => "media_attachments",
        }
    }
}
