//! Applying retention: what `wpdr prune` deletes, in an order that is safe at
//! every step.
//!
//! * The per-site lock is held, so no backup writes while prune runs.
//! * A set's manifest goes first: from that moment the set is incomplete and
//!   invisible, so a prune killed halfway never leaves a complete-looking set
//!   with missing artifacts; the rest of it is removed as an incomplete set.
//! * Interrupted runs' directories and multipart uploads go only when older
//!   than a grace period, so a slow backup whose lock expired is not robbed.
//! * A set pinned by a running restore is never deleted.
//! * The newest set is always kept (see `retention`).

use super::retention::{decide, Decision, Policy};
use super::{Catalog, CatalogError, Fence};
use crate::store::StoreError;
use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub decisions: Vec<Decision>,
    /// Sets deleted (or that would be, in a dry run).
    pub deleted: Vec<String>,
    /// Sets the policy would delete but a restore has pinned.
    pub pinned: Vec<String>,
    /// Sets the policy would delete but Object Lock still retains: kept
    /// until the date, deleted by a prune after it.
    pub retained: Vec<RetainedSet>,
    /// Directories of interrupted runs removed.
    pub incomplete_removed: Vec<String>,
    pub bytes_freed: u64,
    pub uploads_aborted: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetainedSet {
    pub id: String,
    pub until: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Pin {
    purpose: String,
    expires_at: DateTime<Utc>,
}

/// Held while a set is being read (a restore); prune leaves the set alone.
pub struct PinGuard {
    /// `None` when the store is read-only for these credentials.
    key: Option<String>,
}

impl PinGuard {
    pub async fn release(self, catalog: &Catalog<'_>) {
        let Some(key) = self.key else { return };
        if let Err(e) = catalog.store().delete(&key).await {
            tracing::warn!(error = %e, "could not remove a restore pin; it expires on its own");
        }
    }
}

/// The UTC time a set id starts with.
pub fn set_time(id: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(id.get(..16)?, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

impl Catalog<'_> {
    fn pins_prefix(&self, set_id: &str) -> String {
        format!("{}/pins/{set_id}/", self.site_prefix)
    }

    /// Marks a set as in use for `hours`, so prune will not delete it.
    pub async fn pin(
        &self,
        set_id: &str,
        purpose: &str,
        hours: i64,
    ) -> Result<PinGuard, CatalogError> {
        let key = format!(
            "{}{:016x}.json",
            self.pins_prefix(set_id),
            rand::random::<u64>()
        );
        let pin = Pin {
            purpose: purpose.to_string(),
            expires_at: Utc::now() + Duration::hours(hours),
        };
        let body = serde_json::to_vec(&pin).map_err(|e| CatalogError::ManifestInvalid {
            id: set_id.to_string(),
            detail: e.to_string(),
        })?;
        match self.store.put_bytes(&key, Bytes::from(body)).await {
            Ok(_) => Ok(PinGuard { key: Some(key) }),
            // A restore with read-only credentials (as it should run) cannot
            // pin: it goes on, and says what that means.
            Err(e) if e.is_write_refused() => {
                tracing::warn!(set = %set_id, error = %e, "the store is read-only for these credentials: set not pinned; keep prune from running until this {purpose} is done");
                Ok(PinGuard { key: None })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn pinned(&self, set_id: &str, now: DateTime<Utc>) -> Result<bool, CatalogError> {
        for o in self.store.list(&self.pins_prefix(set_id)).await? {
            let live = match self.store.get_bytes(&o.key).await {
                Ok(b) => serde_json::from_slice::<Pin>(&b)
                    .map(|p| p.expires_at > now)
                    .unwrap_or(false),
                Err(StoreError::NotFound { .. }) => false,
                Err(e) => return Err(e.into()),
            };
            if live {
                return Ok(true);
            }
            // An expired pin is litter: remove it.
            self.store.delete(&o.key).await?;
        }
        Ok(false)
    }

    /// Applies `policy`; with `dry_run` only reports. `shared` is the same
    /// store as the catalog's, for the lock's renewer.
    pub async fn prune(
        &self,
        shared: std::sync::Arc<crate::store::Store>,
        policy: &Policy,
        incomplete_grace: Duration,
        lock_ttl_seconds: u64,
        dry_run: bool,
    ) -> Result<PruneReport, CatalogError> {
        let lock = if dry_run {
            None
        } else {
            let mut l = self.lock(lock_ttl_seconds, "prune").await?;
            l.keep_alive(shared, lock_ttl_seconds);
            Some(l)
        };
        let fence = lock.as_ref().map(|l| l.fence());
        let result = self
            .prune_locked(policy, incomplete_grace, dry_run, fence.as_ref())
            .await;
        if let Some(lock) = lock {
            if let Err(e) = lock.release(self.store).await {
                tracing::warn!(error = %e, "could not release the lock after prune");
            }
        }
        result
    }

    async fn prune_locked(
        &self,
        policy: &Policy,
        incomplete_grace: Duration,
        dry_run: bool,
        fence: Option<&Fence>,
    ) -> Result<PruneReport, CatalogError> {
        let now = Utc::now();
        let summaries = self.summaries().await?;
        let sets: Vec<(String, DateTime<Utc>)> = summaries
            .iter()
            .map(|m| (m.id.clone(), m.started_at))
            .collect();
        let decisions = decide(&sets, policy);
        let mut report = PruneReport {
            dry_run,
            decisions: decisions.clone(),
            deleted: Vec::new(),
            pinned: Vec::new(),
            retained: Vec::new(),
            incomplete_removed: Vec::new(),
            bytes_freed: 0,
            uploads_aborted: 0,
        };
        for d in decisions.iter().filter(|d| !d.keep) {
            if self.pinned(&d.id, now).await? {
                report.pinned.push(d.id.clone());
                continue;
            }
            let summary = summaries.iter().find(|m| m.id == d.id);
            if let Some(until) = summary.and_then(|m| m.retained_until).filter(|u| *u > now) {
                report.retained.push(RetainedSet {
                    id: d.id.clone(),
                    until,
                });
                continue;
            }
            let bytes = summary.map_or(0, |m| m.bytes);
            if let Some(f) = fence {
                // A prune that lost its lock deletes nothing more.
                f.confirm(self.store).await?;
            }
            if !dry_run {
                // The commit goes first: the set stops existing before its parts do.
                self.store.delete(&self.key(&d.id, "manifest.json")).await?;
                self.store.delete_prefix(&self.key(&d.id, "")).await?;
                tracing::info!(set = %d.id, bytes, "pruned");
            }
            report.bytes_freed += bytes;
            report.deleted.push(d.id.clone());
        }
        let cutoff = now - incomplete_grace;
        // An interrupted run's files are retained from when they were written.
        let lock_days = self.store.object_lock().map_or(Duration::zero(), |l| {
            Duration::days(i64::from(l.days)) + Duration::hours(1)
        });
        for id in self.incomplete().await? {
            if set_time(&id).is_some_and(|t| t < cutoff && t + lock_days < now)
                && !self.pinned(&id, now).await?
            {
                if let Some(f) = fence {
                    f.confirm(self.store).await?;
                }
                if !dry_run {
                    self.store.delete_prefix(&self.key(&id, "")).await?;
                    tracing::info!(set = %id, "removed an interrupted run's files");
                }
                report.incomplete_removed.push(id);
            }
        }
        if !dry_run {
            report.uploads_aborted = self
                .store
                .abort_stale_uploads(&self.sets_prefix(), cutoff)
                .await?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_times_parse_from_ids() {
        let t = set_time("20261125T195445Z-09c9").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-25T19:54:45+00:00");
        assert!(set_time("garbage").is_none());
    }
}
