//! Retention for the binlog archive: a segment whose every transaction is
//! already inside the oldest remaining set can never be replayed (a
//! point-in-time restore starts from a set and replays only what follows
//! it), so it goes once that set is the oldest. Data whose index was never
//! written (a killed archiver) goes after the grace period. Nothing goes
//! while there is no set: then the archive is all there is.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::archive::{gap_key, list_gaps, set_position};
use super::segment::{self, data_key, index_key};
use super::BinlogError;
use crate::catalog::manifest::Manifest;
use crate::store::Store;

#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct BinlogPruneReport {
    pub segments_deleted: usize,
    pub bytes_freed: u64,
    pub orphans_deleted: usize,
    pub gaps_deleted: usize,
    pub kept_segments: usize,
}

/// `sets` are the sets that remain (after set retention ran).
pub async fn prune(
    store: &Store,
    site_prefix: &str,
    sets: &[Manifest],
    orphan_grace: chrono::Duration,
    dry_run: bool,
) -> Result<BinlogPruneReport, BinlogError> {
    let mut report = BinlogPruneReport::default();
    let segments = segment::list(store, site_prefix).await?;
    // The oldest set with a position bounds what any restore replays.
    let oldest = sets
        .iter()
        .filter_map(|m| Some((super::window::snapshot_time(m), set_position(m)?)))
        .min_by_key(|(t, _)| *t);
    let Some((oldest_time, oldest_pos)) = oldest else {
        report.kept_segments = segments.len();
        return Ok(report);
    };
    for s in &segments {
        if oldest_pos.includes(&s.end) {
            report.segments_deleted += 1;
            report.bytes_freed += s.stored_bytes;
            if !dry_run {
                // Index first: the segment stops existing before its data goes.
                store.delete(&index_key(site_prefix, &s.name)).await?;
                store.delete(&data_key(site_prefix, &s.name)).await?;
            }
        } else {
            report.kept_segments += 1;
        }
    }
    let indexed: std::collections::HashSet<String> = segments
        .iter()
        .map(|s| data_key(site_prefix, &s.name))
        .collect();
    let cutoff: DateTime<Utc> = Utc::now() - orphan_grace;
    for o in store.list(&segment::segments_prefix(site_prefix)).await? {
        if !o.key.ends_with(".binlog.zst") || indexed.contains(&o.key) {
            continue;
        }
        // Names start with the close time: only old orphans, never one being committed.
        let name = o.key.rsplit('/').next().unwrap_or_default();
        let closed = chrono::NaiveDateTime::parse_from_str(
            name.get(..18).unwrap_or_default(),
            "%Y%m%dT%H%M%S%3f",
        )
        .ok()
        .map(|n| n.and_utc());
        if closed.is_some_and(|t| t < cutoff) {
            report.orphans_deleted += 1;
            report.bytes_freed += o.size;
            if !dry_run {
                store.delete(&o.key).await?;
            }
        }
    }
    // A gap before the oldest set no longer limits any restore.
    for g in list_gaps(store, site_prefix).await? {
        if g.detected_at < oldest_time {
            report.gaps_deleted += 1;
            if !dry_run {
                store.delete(&gap_key(site_prefix, g.detected_at)).await?;
            }
        }
    }
    Ok(report)
}
