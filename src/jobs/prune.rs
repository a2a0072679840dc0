//! The prune job, in one order for every caller: the sets the retention
//! policy lets go, then the retained media versions only those sets referred
//! to, then the binlog segments no remaining set can replay.

use super::{JobContext, JobError, JobReport, Verdict};
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
    pub binlog: BinlogPruneReport,
}

/// Runs with `store.prune_credentials` when they are set: the only job
/// that deletes, so the keys of every other job need not be able to.
pub async fn prune(ctx: &JobContext, dry_run: bool) -> Result<PruneJobReport, JobError> {
    let pruner = match &ctx.cfg.store {
        crate::config::StoreConfig::S3(s3) if s3.prune_credentials.is_some() => {
            let store = crate::store::Store::open(&ctx.cfg.store.for_prune())
                .await
                .map_err(crate::catalog::CatalogError::from)?
                .with_keys(ctx.store.keys().clone());
            JobContext {
                cfg: ctx.cfg.clone(),
                store: std::sync::Arc::new(store),
                cancel: ctx.cancel.clone(),
                progress: ctx.progress.clone(),
            }
        }
        _ => ctx.clone(),
    };
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
    let binlog = crate::binlog::prune::prune(
        &ctx.store,
        &cfg.site_prefix(),
        &remaining,
        grace,
        cfg.retention.pitr_days,
        dry_run,
    )
    .await?;
    Ok(PruneJobReport {
        sets,
        media_retained,
        binlog,
    })
}

impl JobReport for PruneJobReport {
    fn verdict(&self) -> Verdict {
        let media = self.media_retained.as_ref();
        Verdict::ok(
            self.sets.bytes_freed + self.binlog.bytes_freed + media.map_or(0, |m| m.bytes_freed),
            (self.sets.deleted.len() + self.binlog.segments_deleted + self.binlog.orphans_deleted)
                as u64
                + media.map_or(0, |m| m.deleted),
        )
    }
}
