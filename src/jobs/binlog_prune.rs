//! `wpdr binlog prune`: the binlog archive's retention on its own. A site's
//! own archive keeps what its oldest kept restore replays (the same step
//! `wpdr prune` ends with); a shared, server-wide archive keeps what any
//! site's live claim needs (see [`crate::binlog::claim`]), so one run on
//! the archive's own schedule serves every site on the server.

use chrono::Utc;
use serde::Serialize;

use super::{JobContext, JobError, JobReport, Verdict};
use crate::binlog::claim::{self, Claim, ClaimReport};
use crate::binlog::prune::{BinlogPruneReport, Floor};
use crate::catalog::{Catalog, SetSummary};

/// Keeps two prunes of one archive (a site's and the archive's own, or two
/// daemons) from rewriting the same day's roll-up at once.
const PRUNE_LOCK_NAME: &str = "binlog-prune-lock.json";

#[derive(Debug, Clone, Serialize)]
pub struct BinlogPruneJobReport {
    /// Where the archive is in the store.
    pub archive: String,
    /// The archive is shared by the sites on a server (`database.binlog.archive`).
    pub shared: bool,
    /// The live claims whose floors decided what stays (shared archives).
    pub claims: Vec<Claim>,
    /// Claims that lapsed without renewal: their sites hold nothing back any
    /// more (their claims are deleted, unless a dry run).
    pub lapsed: Vec<Claim>,
    #[serde(flatten)]
    pub pruned: BinlogPruneReport,
}

impl JobReport for BinlogPruneJobReport {
    fn verdict(&self) -> Verdict {
        Verdict::ok(
            self.pruned.bytes_freed,
            (self.pruned.segments_deleted + self.pruned.orphans_deleted) as u64,
        )
    }
}

/// Runs with `store.prune_credentials` when they are set, like `wpdr prune`.
pub async fn binlog_prune(
    ctx: &JobContext,
    dry_run: bool,
) -> Result<BinlogPruneJobReport, JobError> {
    let pruner = ctx.pruner().await?;
    pruner.cancellable(prune_archive(&pruner, dry_run)).await
}

async fn prune_archive(ctx: &JobContext, dry_run: bool) -> Result<BinlogPruneJobReport, JobError> {
    let cfg = &ctx.cfg;
    let prefix = cfg.binlog_prefix();
    if cfg.database.binlog.shared.is_none() {
        let sets = ctx.catalog().summaries().await?;
        let pruned = site_archive(ctx, &sets, dry_run).await?;
        return Ok(BinlogPruneJobReport {
            archive: prefix,
            shared: false,
            claims: Vec::new(),
            lapsed: Vec::new(),
            pruned,
        });
    }
    let now = Utc::now();
    let (claims, lapsed): (Vec<Claim>, Vec<Claim>) = claim::list(&ctx.store, &prefix)
        .await?
        .into_iter()
        .partition(|c| c.holds_at(now));
    let floors: Vec<Floor> = claims.iter().map(Claim::floor).collect();
    let pruned = locked(ctx, dry_run, async {
        let grace = chrono::Duration::hours(cfg.retention.incomplete_grace_hours);
        let pruned =
            crate::binlog::prune::prune_below(&ctx.store, &prefix, &floors, grace, dry_run).await?;
        if !dry_run {
            for c in &lapsed {
                tracing::warn!(site = %c.site, holds_until = %c.holds_until, "a claim on the shared binlog archive lapsed without renewal; the site holds no segments back any more");
                ctx.store.delete(&claim::claim_key(&prefix, &c.site)).await?;
            }
        }
        Ok(pruned)
    })
    .await?;
    Ok(BinlogPruneJobReport {
        archive: prefix,
        shared: true,
        claims,
        lapsed,
        pruned,
    })
}

/// The site's own archive, pruned to what the `remaining` sets replay.
pub(crate) async fn site_archive(
    ctx: &JobContext,
    remaining: &[SetSummary],
    dry_run: bool,
) -> Result<BinlogPruneReport, JobError> {
    let cfg = &ctx.cfg;
    let grace = chrono::Duration::hours(cfg.retention.incomplete_grace_hours);
    locked(ctx, dry_run, async {
        Ok(crate::binlog::prune::prune(
            &ctx.store,
            &cfg.binlog_prefix(),
            remaining,
            grace,
            cfg.retention.pitr_days,
            dry_run,
        )
        .await?)
    })
    .await
}

/// Writes the site's claim on the shared archive it names, from the sets it
/// keeps (after a prune) or has (after a backup).
pub(crate) async fn renew_claim(
    ctx: &JobContext,
    archive: &str,
    sets: &[crate::catalog::SetSummary],
    dry_run: bool,
) -> Result<ClaimReport, JobError> {
    let cfg = &ctx.cfg;
    Ok(crate::binlog::claim::renew(
        &ctx.store,
        archive,
        &cfg.binlog_prefix(),
        &cfg.site,
        sets,
        cfg.retention.pitr_days,
        cfg.database.binlog.claim_days,
        dry_run,
    )
    .await?)
}

/// Runs `work` holding the archive's prune lock (a dry run writes nothing,
/// so it takes no lock).
async fn locked<T>(
    ctx: &JobContext,
    dry_run: bool,
    work: impl std::future::Future<Output = Result<T, JobError>>,
) -> Result<T, JobError> {
    if dry_run {
        return work.await;
    }
    let cfg = &ctx.cfg;
    let prefix = cfg.binlog_prefix();
    let lock = Catalog::new(&ctx.store, &cfg.site, &prefix)
        .named_lock(PRUNE_LOCK_NAME, cfg.backup.lock_ttl_seconds, "binlog prune")
        .await?;
    let result = work.await;
    let _ = lock.release(&ctx.store).await;
    result
}
