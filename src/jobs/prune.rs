//! The prune job, in one order for every caller: the sets the retention
//! policy lets go, then the retained media versions only those sets referred
//! to, then the binlog segments no remaining set can replay.

use super::{JobContext, JobError, JobReport, Verdict};
use crate::binlog::claim::ClaimReport;
use crate::binlog::prune::BinlogPruneReport;
use crate::catalog::prune::PruneReport;
use crate::config::ConfigError;
use crate::media::retention::RetainedReport;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct PruneJobReport {
    #[serde(flatten)]
    pub sets: PruneReport,
    /// `None` when no media is configured.
    pub media_retained: Option<RetainedReport>,
    /// The site's own binlog archive, pruned. `None` when the site shares a
    /// server's archive: its claim is renewed instead, and the archive's own
    /// `wpdr binlog prune` deletes what no site's claim needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binlog: Option<BinlogPruneReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_claim: Option<ClaimReport>,
}

/// Runs with `store.prune_credentials` when they are set: the only job
/// that deletes, so the keys of every other job need not be able to.
pub async fn prune(ctx: &JobContext, dry_run: bool) -> Result<PruneJobReport, JobError> {
    let pruner = ctx.pruner().await?;
    pruner.cancellable(prune_all(&pruner, dry_run)).await
}

async fn prune_all(ctx: &JobContext, dry_run: bool) -> Result<PruneJobReport, JobError> {
    let cfg = &ctx.cfg;
    if cfg.retention.policy.is_empty() {
        return Err(ConfigError::Invalid {
            field: "retention".into(),
            env: "WPDR_KEEP_LAST".into(),
            problem: "no retention policy is configured, so prune would keep only the newest set. Set retention.keep_last/keep_daily/... first".into(),
        }
        .into());
    }
    let grace = chrono::Duration::hours(cfg.retention.incomplete_grace_hours);
    let catalog = ctx.catalog();
    let sets = catalog
        .prune(
            ctx.store.clone(),
            &cfg.retention.policy,
            grace,
            cfg.backup.lock_ttl_seconds,
            dry_run,
        )
        .await?;
    let media_retained = match &cfg.media {
        Some(_) => Some(
            crate::media::retention::prune_retained(cfg, ctx.store.clone(), dry_run, &sets.deleted)
                .await?,
        ),
        None => None,
    };
    // The sets that remain (a dry run deleted nothing: leave out what it would).
    let remaining: Vec<_> = catalog
        .summaries()
        .await?
        .into_iter()
        .filter(|m| !sets.deleted.contains(&m.id))
        .collect();
    let (binlog, archive_claim) = match &cfg.database.binlog.shared {
        None => (
            Some(super::binlog_prune::site_archive(ctx, &remaining, dry_run).await?),
            None,
        ),
        Some(archive) => (
            None,
            Some(super::binlog_prune::renew_claim(ctx, archive, &remaining, dry_run).await?),
        ),
    };
    Ok(PruneJobReport {
        sets,
        media_retained,
        binlog,
        archive_claim,
    })
}

impl JobReport for PruneJobReport {
    fn verdict(&self) -> Verdict {
        let media = self.media_retained.as_ref();
        let binlog = self.binlog.clone().unwrap_or_default();
        Verdict::ok(
            self.sets.bytes_freed + binlog.bytes_freed + media.map_or(0, |m| m.bytes_freed),
            (self.sets.deleted.len() + binlog.segments_deleted + binlog.orphans_deleted) as u64
                + media.map_or(0, |m| m.deleted),
        )
    }
}
