//! Retention of the retained area: the offsite versions the mirror kept
//! aside when the source overwrote or deleted them. A version goes only when
//! no remaining set's media index refers to it — the mirror never removes
//! one, and a damaged index stops the pruning rather than freeing what it
//! might have referenced.

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
    let result = prune_locked(&catalog, media, dry_run, going).await;
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
    if candidates.is_empty() {
        return Ok(report);
    }
    // Each set's media index artifact (a manifest at a time, none held).
    let mut indexes = Vec::new();
    catalog
        .for_each_set(|m| {
            if going.contains(&m.set_id) {
                return;
            }
            let Some(section) = &m.media else { return };
            if let Some(artifact) = m.artifact(&section.index_artifact) {
                indexes.push((catalog.key(&m.set_id, &artifact.path), artifact.clone()));
            }
        })
        .await?;
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
