//! The steps of a restore plan, one file per kind; [`run`] dispatches by
//! kind. Each step calls the part that owns its data (mysql load, media
//! restore, cluster apply, URL rewrite, cache flush) and returns a summary
//! for the journal; the executor (`run`) decides when.

mod cache_flush;
mod checks;
mod cluster_objects;
mod database_load;
mod media_restore;
mod url_rewrite;
mod wait_application;
mod wait_database;

use super::plan::{Step, StepKind};
use super::step::{StepEnv, StepError};
use super::targets::Targets;
use crate::catalog::Manifest;

/// Runs one step.
pub(crate) async fn run(step: &Step, env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    match step.kind {
        StepKind::ClusterObjects => cluster_objects::run(env).await,
        StepKind::WaitDatabase => wait_database::run(env).await,
        StepKind::DatabaseLoad => database_load::run(env).await,
        StepKind::MediaRestore => media_restore::run(env).await,
        StepKind::UrlRewrite => url_rewrite::run(env).await,
        StepKind::CacheFlush => cache_flush::run(env, step.timeout_seconds).await,
        StepKind::WaitApplication => wait_application::run(env).await,
        StepKind::Checks => checks::run(env).await,
    }
}

/// What each kind of step will touch, in words (for a dry run).
pub fn touches(targets: &Targets, kind: StepKind, manifest: &Manifest) -> String {
    let db = || {
        targets
            .database
            .as_ref()
            .map(|(e, d)| format!("database '{d}' on {}", e.display()))
            .unwrap_or_else(|| "NO restore.database CONFIGURED".into())
    };
    match kind {
        StepKind::ClusterObjects => format!(
            "namespace {}: {} objects, images pinned to {} recorded digests",
            targets.namespace,
            manifest.cluster.as_ref().map(|c| c.objects).unwrap_or(0),
            manifest
                .cluster
                .as_ref()
                .map(|c| c.images.len())
                .unwrap_or(0)
        ),
        StepKind::WaitDatabase => format!("connects to {}", db()),
        StepKind::DatabaseLoad => format!(
            "{}: {} tables, {} rows",
            db(),
            manifest
                .database
                .as_ref()
                .map(|d| d.tables.len())
                .unwrap_or(0),
            manifest
                .database
                .as_ref()
                .map(|d| d.tables.iter().map(|t| t.rows).sum::<u64>())
                .unwrap_or(0)
        ),
        StepKind::MediaRestore => format!(
            "bucket {}: {} objects, {} bytes",
            targets
                .media
                .as_ref()
                .map(|m| format!(
                    "'{}' at {}",
                    m.bucket,
                    m.endpoint.as_deref().unwrap_or("AWS")
                ))
                .unwrap_or_else(|| "NO restore.media CONFIGURED".into()),
            manifest.media.as_ref().map(|m| m.objects).unwrap_or(0),
            manifest.media.as_ref().map(|m| m.bytes).unwrap_or(0)
        ),
        StepKind::UrlRewrite => match &targets.site_url {
            Some(u) => format!("{}: the site's address becomes {u}", db()),
            None => "nothing (no --site-url or restore.site_url)".into(),
        },
        StepKind::CacheFlush => {
            if targets.caches.is_empty() {
                "nothing (no restore.caches)".into()
            } else {
                targets
                    .caches
                    .iter()
                    .map(|c| format!("flushes {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        }
        StepKind::WaitApplication => format!(
            "waits for workloads in {}{}",
            targets.namespace,
            targets
                .site_url
                .as_ref()
                .map(|u| format!(" and for {u} to answer"))
                .unwrap_or_default()
        ),
        StepKind::Checks => format!(
            "reads {} back: table rows and checksums, media present, site answers{}",
            db(),
            if manifest
                .answers
                .as_ref()
                .and_then(|a| a.answers_artifact.as_ref())
                .is_some()
            {
                ""
            } else {
                " (none captured in this set)"
            }
        ),
    }
}

#[cfg(test)]
mod tests;
