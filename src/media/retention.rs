//! Retention of the retained area: the offsite versions the mirror kept
//! aside when the source overwrote or deleted them. A version goes only when
//! no remaining set's media index and no kept generation refers to it — the
//! mirror never removes one, and a damaged index stops the pruning rather
//! than freeing what it might have referenced.
//!
//! Generations (the mirror runs' records, see [`super::point`]) are kept
//! while a point-in-time restore can use them: from the oldest remaining
//! set on, plus the newest one before it (the bracket of a point just after
//! that set); the newest generation is always kept.

use super::bucket::Bucket;
use super::records::RecordReader;
use super::MediaError;
use crate::catalog::Catalog;
use crate::config::Config;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RetainedReport {
    pub dry_run: bool,
    /// Retained versions found.
    pub versions: u64,
    /// Still referenced by a set, kept.
    pub referenced: u64,
    /// Removed (or, in a dry run, that would be).
    pub deleted: u64,
    pub bytes_freed: u64,
    /// Unreferenced, but still under Object Lock retention: kept for now.
    pub locked: u64,
    /// Mirror generations kept (they can bracket a point-in-time restore).
    pub generations_kept: u64,
    /// Older generations removed (or, in a dry run, that would be).
    pub generations_deleted: u64,
}

/// Deletes retained versions no set refers to, counting the sets in
/// `going` as gone (a dry run of prune has not deleted them yet). Takes the
/// site's backup lock and its media lock (the mirror retains under it).
pub async fn prune_retained(
    cfg: &Config,
    store: Arc<crate::store::Store>,
    dry_run: bool,
    going: &[String],
) -> Result<RetainedReport, MediaError> {
    let media = cfg.media.as_ref().ok_or(MediaError::NotConfigured)?;
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    // Both locks: no backup commits a set that refers to a retained version
    // and no mirror run retains one while the unreferenced ones go.
    let mut locks = Vec::new();
    if !dry_run {
        locks.push(
            catalog
                .lock(cfg.backup.lock_ttl_seconds, "prune-media")
                .await?,
        );
        match catalog
            .media_lock(cfg.backup.lock_ttl_seconds, "prune-media")
            .await
        {
            Ok(l) => locks.push(l),
            Err(e) => {
                release_all(locks, &store).await;
                return Err(e.into());
            }
        }
    }
    let result = prune_locked(&catalog, media, &cfg.site_prefix(), dry_run, going).await;
    release_all(locks, &store).await;
    result
}

async fn release_all(locks: Vec<crate::catalog::LockGuard>, store: &crate::store::Store) {
    for l in locks {
        if let Err(e) = l.release(store).await {
            tracing::warn!(error = %e, "could not release the lock; it expires on its own");
        }
    }
}

async fn prune_locked(
    catalog: &Catalog<'_>,
    media: &crate::config::MediaConfig,
    site_prefix: &str,
    dry_run: bool,
    going: &[String],
) -> Result<RetainedReport, MediaError> {
    let offsite = Bucket::open(&media.offsite).await?;
    let prefix = media.retained_prefix.clone();
    let mut report = RetainedReport {
        dry_run,
        ..Default::default()
    };
    // Candidates: (key, source ETag) -> (retained key, size).
    let mut candidates: HashMap<(String, String), (String, u64)> = HashMap::new();
    let (tx, mut rx) = mpsc::channel(1024);
    let lister = {
        let b = offsite.clone();
        let p = prefix.clone();
        tokio::spawn(async move { b.list_into(&p, None, tx).await })
    };
    while let Some(item) = rx.recv().await {
        let l = item?;
        let Some((etag, key)) = l.key[prefix.len()..].split_once('/') else {
            continue;
        };
        report.versions += 1;
        candidates.insert((key.to_string(), etag.to_string()), (l.key.clone(), l.size));
    }
    let _ = lister.await;
    // Each set's media index artifact (a manifest at a time, none held).
    let mut indexes = Vec::new();
    let mut oldest_set: Option<chrono::DateTime<chrono::Utc>> = None;
    catalog
        .for_each_set(|m| {
            if going.contains(&m.set_id) {
                return;
            }
            oldest_set = Some(oldest_set.map_or(m.started_at, |o| o.min(m.started_at)));
            let Some(section) = &m.media else { return };
            if let Some(artifact) = m.artifact(&section.index_artifact) {
                indexes.push((catalog.key(&m.set_id, &artifact.path), artifact.clone()));
            }
        })
        .await?;
    let kept = prune_generations(
        catalog.store(),
        site_prefix,
        oldest_set,
        dry_run,
        &mut report,
    )
    .await?;
    if candidates.is_empty() {
        return Ok(report);
    }
    for g in kept {
        let Some(mut records) = RecordReader::open(catalog.store(), &g.key).await? else {
            continue;
        };
        while let Some(r) = records.next().await? {
            if candidates.remove(&(r.key, r.etag)).is_some() {
                report.referenced += 1;
            }
        }
    }
    for (key, artifact) in indexes {
        let mut index =
            RecordReader::open_checked(catalog.store(), &key, artifact.size, &artifact.sha256)
                .await?;
        while let Some(r) = index.next().await? {
            if candidates.remove(&(r.key, r.etag)).is_some() {
                report.referenced += 1;
            }
        }
    }
    for (retained_key, size) in candidates.into_values() {
        if !dry_run {
            if !offsite.delete_expired(&retained_key).await? {
                // Object Lock keeps it until its date; a later prune deletes it.
                report.locked += 1;
                continue;
            }
            tracing::info!(key = %retained_key, "pruned a retained media version no set refers to");
        }
        report.deleted += 1;
        report.bytes_freed += size;
    }
    Ok(report)
}

/// Removes the generations no point-in-time restore can use (see the
/// module docs) and returns the ones kept. One still under the store's
/// Object Lock stays until a later prune.
async fn prune_generations(
    store: &crate::store::Store,
    site_prefix: &str,
    oldest_set: Option<chrono::DateTime<chrono::Utc>>,
    dry_run: bool,
    report: &mut RetainedReport,
) -> Result<Vec<super::point::Generation>, MediaError> {
    let gens = super::point::list(store, site_prefix).await?;
    let newest = gens.len().saturating_sub(1);
    // The newest generation before the oldest set brackets points just after it.
    let first_kept = match oldest_set {
        Some(t) => gens.iter().rposition(|g| g.listed_at < t).unwrap_or(0),
        None => newest,
    };
    let lock = store.object_lock().map_or(chrono::Duration::zero(), |l| {
        chrono::Duration::days(i64::from(l.days)) + chrono::Duration::hours(1)
    });
    let now = chrono::Utc::now();
    let mut kept = Vec::new();
    for (i, g) in gens.into_iter().enumerate() {
        if i >= first_kept {
            kept.push(g);
            continue;
        }
        if g.listed_at + lock > now {
            kept.push(g);
            continue;
        }
        if !dry_run {
            store.delete(&g.key).await?;
            tracing::info!(generation = %g.key, "pruned a media generation older than every set");
        }
        report.generations_deleted += 1;
    }
    report.generations_kept = kept.len() as u64;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::point::{generation_key, list};
    use crate::store::{LocalStore, Store};
    use chrono::{DateTime, Utc};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[tokio::test]
    async fn generations_are_kept_from_the_one_before_the_oldest_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::from(LocalStore::open(dir.path()).await.unwrap());
        let hours = ["01", "02", "03", "04", "05"];
        for h in hours {
            let key = generation_key("wpdr/s", at(&format!("2026-11-30T{h}:00:00Z")));
            store.put_kept(&key, bytes::Bytes::new()).await.unwrap();
        }
        let listed = |gens: Vec<crate::media::point::Generation>| -> Vec<String> {
            gens.iter()
                .map(|g| g.listed_at.format("%H").to_string())
                .collect()
        };
        // Oldest set at 03:30: 03:00 brackets points just after it.
        let mut report = RetainedReport::default();
        let dry = prune_generations(
            &store,
            "wpdr/s",
            Some(at("2026-11-30T03:30:00Z")),
            true,
            &mut report,
        )
        .await
        .unwrap();
        assert_eq!(listed(dry), ["03", "04", "05"]);
        assert_eq!(
            (report.generations_kept, report.generations_deleted),
            (3, 2)
        );
        assert_eq!(
            list(&store, "wpdr/s").await.unwrap().len(),
            5,
            "a dry run deletes nothing"
        );
        let mut report = RetainedReport::default();
        prune_generations(
            &store,
            "wpdr/s",
            Some(at("2026-11-30T03:30:00Z")),
            false,
            &mut report,
        )
        .await
        .unwrap();
        assert_eq!(
            listed(list(&store, "wpdr/s").await.unwrap()),
            ["03", "04", "05"]
        );
        // A set older than every generation keeps them all; no set keeps the newest.
        let mut report = RetainedReport::default();
        let kept = prune_generations(
            &store,
            "wpdr/s",
            Some(at("2026-11-30T00:00:00Z")),
            true,
            &mut report,
        )
        .await
        .unwrap();
        assert_eq!(listed(kept), ["03", "04", "05"]);
        let kept = prune_generations(&store, "wpdr/s", None, false, &mut report)
            .await
            .unwrap();
        assert_eq!(listed(kept), ["05"]);
        assert_eq!(listed(list(&store, "wpdr/s").await.unwrap()), ["05"]);
    }
}
