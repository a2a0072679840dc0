//! Retention for the binlog archive: a segment whose every transaction is
//! already inside the oldest remaining set can never be replayed (a
//! point-in-time restore starts from a set and replays only what follows
//! it), so it goes once that set is the oldest. Data whose index was never
//! written (a killed archiver) goes after the grace period. Nothing goes
//! while there is no set: then the archive is all there is, nor while
//! Object Lock still retains it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::archive::{gap_key, list_gaps};
use super::rollup;
use super::segment::{self, data_key, index_key, SegmentIndex};
use super::BinlogError;
use crate::catalog::SetSummary;
use crate::store::Store;

#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct BinlogPruneReport {
    pub segments_deleted: usize,
    pub bytes_freed: u64,
    pub orphans_deleted: usize,
    pub gaps_deleted: usize,
    pub kept_segments: usize,
}

/// The set every kept point-in-time restore starts from or after: the oldest
/// set with a position, or with a PITR window of `pitr_days`, the newest set
/// taken at or before its start (points in the window are reached from it
/// or from later sets; older sets stay restorable as they are).
pub fn replay_floor(
    sets: &[SetSummary],
    now: DateTime<Utc>,
    pitr_days: Option<u64>,
) -> Option<(DateTime<Utc>, super::gtid::GtidPos)> {
    let mut positioned: Vec<(DateTime<Utc>, super::gtid::GtidPos)> = sets
        .iter()
        .filter_map(|m| Some((m.snapshot_at, super::chain::set_position(m)?)))
        .collect();
    positioned.sort_by_key(|(t, _)| *t);
    let oldest = positioned.first().cloned();
    match pitr_days {
        None => oldest,
        Some(days) => {
            let window_start = now - chrono::Duration::days(days as i64);
            positioned
                .iter()
                .rev()
                .find(|(t, _)| *t <= window_start)
                .cloned()
                .or(oldest)
        }
    }
}

/// A point some kept restore may replay from: its set's snapshot time and
/// GTID position.
pub type Floor = (DateTime<Utc>, super::gtid::GtidPos);

/// `sets` are the sets that remain (after set retention ran): a site's own
/// archive keeps what the oldest kept restore replays.
pub async fn prune(
    store: &Store,
    site_prefix: &str,
    sets: &[SetSummary],
    orphan_grace: chrono::Duration,
    pitr_days: Option<u64>,
    dry_run: bool,
) -> Result<BinlogPruneReport, BinlogError> {
    let floors: Vec<Floor> = replay_floor(sets, Utc::now(), pitr_days)
        .into_iter()
        .collect();
    prune_below(store, site_prefix, &floors, orphan_grace, dry_run).await
}

/// Deletes what no floor needs: a segment goes only when every floor is
/// past its end (a shared archive has one floor per site claiming it).
/// With no floor nothing goes: then the archive is all there is. Reads the
/// rolled-up days' summaries, the detail of only the days that may lose
/// segments, and lists only the days not rolled up.
pub async fn prune_below(
    store: &Store,
    site_prefix: &str,
    floors: &[Floor],
    orphan_grace: chrono::Duration,
    dry_run: bool,
) -> Result<BinlogPruneReport, BinlogError> {
    let mut report = BinlogPruneReport::default();
    let archive = rollup::scan(store, site_prefix, &mut rollup::ScanCache::default()).await?;
    let Some(oldest_time) = floors.iter().map(|(t, _)| *t).min() else {
        report.kept_segments = archive.segment_count();
        return Ok(report);
    };
    let past_every_floor =
        |p: &super::gtid::GtidPos| floors.iter().all(|(_, floor)| floor.includes(p));
    // Under Object Lock a segment is kept (and reported kept) until its
    // retention ends, even when no restore needs it any more.
    let lock_days = store
        .object_lock()
        .map(|l| chrono::Duration::days(i64::from(l.days)) + chrono::Duration::hours(1));
    let retained = |closed: DateTime<Utc>| lock_days.is_some_and(|d| closed + d > Utc::now());
    let gone = |s: &SegmentIndex| past_every_floor(&s.end) && !retained(s.closed_at);
    let cutoff: DateTime<Utc> = Utc::now() - orphan_grace;
    // First what an interrupted prune or roll-up left.
    if !dry_run {
        for (day, key) in rollup::stray_details(store, site_prefix, &archive).await? {
            report.segments_deleted +=
                rollup::finish_stray(store, site_prefix, &archive, day, &key).await?;
        }
    }
    // Days that may hold segments below the floor: any run starting at or
    // before it, and every day up to the day after the floor's snapshot (an
    // archiver catching up names old transactions by the day it closed them).
    let floor_day = oldest_time.date_naive() + chrono::Duration::days(1);
    let mut days = rollup::DayPrune::default();
    let newest_day = archive.last_day();
    for d in &archive.days {
        let orphans_due = !d.orphans.is_empty() && rollup::name_floor(Some(d.day)) < cutoff;
        let may_lose = d.day <= floor_day
            || d.segments == 0
            || d.runs.iter().any(|r| past_every_floor(&r.start));
        if may_lose || orphans_due {
            let how = rollup::DayPruneOptions {
                orphans_due,
                newest: Some(d.day) == newest_day,
                dry_run,
            };
            rollup::prune_day(store, site_prefix, d, gone, how, &mut days).await?;
        }
    }
    report.segments_deleted += days.segments_deleted;
    report.orphans_deleted += days.orphans_deleted;
    report.bytes_freed += days.bytes_freed;
    report.kept_segments = archive.segment_count() - days.segments_deleted;
    for s in &archive.live {
        if gone(s) {
            report.segments_deleted += 1;
            report.kept_segments -= 1;
            report.bytes_freed += s.stored_bytes;
            if !dry_run {
                // Index first: the segment stops existing before its data goes.
                store.delete(&index_key(site_prefix, &s.name)).await?;
                store.delete(&data_key(site_prefix, &s.name)).await?;
            }
        }
    }
    // Orphans of the days not rolled up (a roll-up records its day's own).
    let indexed: std::collections::HashSet<String> = archive
        .live
        .iter()
        .map(|s| data_key(site_prefix, &s.name))
        .collect();
    let prefix = segment::segments_prefix(site_prefix);
    let start_after = archive
        .last_day()
        .map(|d| segment::data_key(site_prefix, &format!("{}~", d.format("%Y%m%d"))));
    let mut pages = store.pages_after(&prefix, start_after);
    while let Some(page) = pages.next().await? {
        for o in page {
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
            if closed.is_some_and(|t| t < cutoff && !retained(t)) {
                report.orphans_deleted += 1;
                report.bytes_freed += o.size;
                if !dry_run {
                    store.delete(&o.key).await?;
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set_at(id: &str, t: DateTime<Utc>, gtid: &str) -> SetSummary {
        let mut m = crate::catalog::Manifest::empty_for_tests(id, "s");
        m.started_at = t;
        m.finished_at = t;
        let mut db: crate::catalog::DatabaseSection =
            serde_json::from_value(serde_json::json!({
                "server_version": "10.11", "database": "wp", "source": "db:3306",
                "default_charset": "", "default_collation": "",
                "consistency": {"method": "single-connection", "connections": 1, "commits_blocked_ms": 0.0},
                "binlog": null, "gtid_binlog_pos": gtid, "max_statement_bytes": 0,
                "tables": [], "objects": [], "raw_bytes": 0
            }))
            .unwrap();
        db.snapshot_at = Some(t);
        m.database = Some(db);
        SetSummary::from(&m)
    }

    #[test]
    fn a_pitr_window_lets_segments_go_that_only_an_old_set_would_replay() {
        let now = DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let day = chrono::Duration::days(1);
        let sets = vec![
            set_at("yearly", now - day * 300, "0-1-100"),
            set_at("weekly", now - day * 10, "0-1-5000"),
            set_at("daily", now - day * 2, "0-1-9000"),
        ];
        // Without a window the yearly set keeps everything after it.
        assert_eq!(
            replay_floor(&sets, now, None).unwrap().1.to_string(),
            "0-1-100"
        );
        // With 7 days: the newest set before the window's start is the floor.
        assert_eq!(
            replay_floor(&sets, now, Some(7)).unwrap().1.to_string(),
            "0-1-5000"
        );
        // A window older than every set: the oldest set.
        assert_eq!(
            replay_floor(&sets, now, Some(400)).unwrap().1.to_string(),
            "0-1-100"
        );
        assert!(replay_floor(&[], now, Some(7)).is_none());
    }
}
