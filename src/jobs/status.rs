//! What the store says about a site: its sets, interrupted runs, the lock,
//! the newest drill, the point-in-time window and unfinished restores. The
//! CLI prints it (`wpdr status`); the fleet controller writes it into a
//! Site's status.

use super::{JobContext, JobError};
use crate::binlog::window::Window;
use crate::catalog::{LockInfo, SetSummary, UnreadableSet};
use crate::restore::drill::DrillReport;
use crate::restore::journal::{Journal, RunStatus};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct Status {
    pub site: String,
    pub store: String,
    /// Complete sets, newest first.
    pub sets: Vec<SetSummary>,
    /// Runs that wrote files but no manifest.
    pub incomplete: Vec<String>,
    /// Sets whose manifest cannot be read (damaged, or from a newer wpdr).
    pub unreadable: Vec<UnreadableSet>,
    pub lock: Option<LockInfo>,
    pub last_drill: Option<DrillReport>,
    pub window: Window,
    /// Restores that did not succeed (failed, interrupted or running).
    pub unfinished_restores: Vec<Journal>,
    pub at: DateTime<Utc>,
}

pub async fn status(ctx: &JobContext) -> Result<Status, JobError> {
    ctx.cancellable(gather(ctx)).await
}

async fn gather(ctx: &JobContext) -> Result<Status, JobError> {
    let catalog = ctx.catalog();
    let prefix = ctx.cfg.site_prefix();
    let scan = catalog.scan().await?;
    let (sets, incomplete, unreadable) = (scan.complete, scan.incomplete, scan.unreadable);
    let lock = catalog.lock_holder().await?;
    let last_drill = crate::restore::drill::latest_report(&ctx.store, &prefix).await;
    let window =
        crate::binlog::window::load_for(&ctx.store, &ctx.cfg.binlog_prefix(), &sets).await?;
    let unfinished_restores = crate::restore::journal::list(&ctx.store, &prefix)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|j| j.status != RunStatus::Succeeded)
        .collect();
    Ok(Status {
        site: ctx.cfg.site.clone(),
        store: ctx.store.describe(),
        sets,
        incomplete,
        unreadable,
        lock,
        last_drill,
        window,
        unfinished_restores,
        at: Utc::now(),
    })
}

impl Status {
    /// Age of the newest set's data (the RPO without the binlog archive).
    pub fn rpo_seconds(&self) -> Option<i64> {
        self.sets
            .first()
            .map(|m| (self.at - m.started_at).num_seconds())
    }

    /// The JSON `wpdr status --output json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        let now = self.at;
        let newest = self.sets.first();
        serde_json::json!({
            "site": self.site,
            "store": self.store,
            "sets": self.sets.len(),
            "bytes": self.sets.iter().map(|m| m.bytes).sum::<u64>(),
            "newest_set": newest.map(|m| m.id.clone()),
            "newest_finished_at": newest.map(|m| m.finished_at),
            "newest_failed_parts": newest.map(|m| m.parts_missing.clone()).unwrap_or_default(),
            "rpo_seconds": self.rpo_seconds(),
            "oldest_set": self.sets.last().map(|m| m.id.clone()),
            "incomplete_runs": self.incomplete,
            "unreadable_sets": self.unreadable,
            "lock": self.lock,
            "last_drill": self.last_drill.as_ref().map(|d| serde_json::json!({
                "restore_id": d.restore_id, "ok": d.ok, "finished_at": d.finished_at,
                "age_seconds": (now - d.finished_at).num_seconds(),
                "rto_seconds": d.rto_seconds, "rpo_seconds": d.rpo_seconds,
            })),
            "unfinished_restores": self.unfinished_restores.iter().map(|j| serde_json::json!({
                "restore_id": j.restore_id, "set": j.set_id, "namespace": j.namespace,
                "status": j.status, "holder": j.holder, "updated_at": j.updated_at,
            })).collect::<Vec<_>>(),
            "recoverable": {
                "oldest": self.window.oldest,
                "newest": self.window.newest,
                "pitr_rpo_seconds": self.window.newest.map(|n| (now - n).num_seconds().max(0)),
                "archive": self.window.archive_head,
                "gaps": self.window.gaps,
                "open_gaps": self.window.open_gaps,
            },
        })
    }
}
