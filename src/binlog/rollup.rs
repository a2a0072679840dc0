//! Day roll-ups: finding what the archive holds without one request per
//! segment ever written.
//!
//! A segment's index stays its commit and stays where it is. Once a day is
//! over and settled, the archiver also writes that day's indexes as one
//! object (the detail) and then a small summary beside it (the commit of
//! the roll-up): the day's segments joined into runs, the newest segment,
//! and the data objects no index ever committed. A scan of the archive then
//! costs a listing of the roll-ups, the summaries not seen before, and the
//! segments of the days not rolled up yet, so an archive of 100,000
//! segments is read in a few hundred requests and a daemon that looks every
//! 30 s holds one summary per day. A replay reads the detail of only the
//! days it applies.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::chain::{join, Run};
use super::segment::{data_key, index_key, segments_prefix, SegmentIndex, SEGMENT_FORMAT};
use super::BinlogError;
use crate::catalog::Fence;
use crate::store::{ObjectMeta, Store};

pub const ROLLUP_FORMAT: u32 = 1;

/// A day is rolled up only this long after it ended: by then no segment
/// named in it is still on its way (an archiver that lost its lock is
/// fenced within its lease, far shorter), and an archiver never names a
/// segment into a day already rolled up (see [`name_floor`]).
pub const SETTLE_HOURS: i64 = 2;

/// Requests in flight while reading many small objects.
const FETCH_CONCURRENCY: usize = 16;

pub fn rollups_prefix(site_prefix: &str) -> String {
    format!("{site_prefix}/binlog/rollups/")
}

fn day_text(day: NaiveDate) -> String {
    day.format("%Y%m%d").to_string()
}

fn summary_key(site_prefix: &str, day: NaiveDate) -> String {
    format!("{}{}.json", rollups_prefix(site_prefix), day_text(day))
}

fn detail_key(site_prefix: &str, day: NaiveDate, generation: u32) -> String {
    format!(
        "{}{}.{generation}.segments.json.zst",
        rollups_prefix(site_prefix),
        day_text(day)
    )
}

/// The day a segment's name places it in (names start with the close time).
pub fn day_of(name: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(name.get(..8)?, "%Y%m%d").ok()
}

/// The day a key under the roll-ups prefix belongs to, and whether it is a summary.
fn parse_rollup_key(site_prefix: &str, key: &str) -> Option<(NaiveDate, Option<u32>)> {
    let rest = key.strip_prefix(&rollups_prefix(site_prefix))?;
    let day = day_of(rest)?;
    let tail = rest.get(8..)?;
    if tail == ".json" {
        return Some((day, None));
    }
    let generation = tail
        .strip_prefix('.')?
        .strip_suffix(".segments.json.zst")?
        .parse()
        .ok()?;
    Some((day, Some(generation)))
}

/// The key after which the segments of days later than `day` are listed.
fn after_day(site_prefix: &str, day: NaiveDate) -> String {
    // '~' sorts after the 'T' that follows the date in every segment name.
    format!("{}{}~", segments_prefix(site_prefix), day_text(day))
}

/// A data object of a rolled-up day that no index committed (its writer
/// was killed or fenced between the two): prune deletes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Orphan {
    pub key: String,
    pub size: u64,
}

/// One finished day. Written after its detail: its presence commits both.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DaySummary {
    pub format: u32,
    pub day: NaiveDate,
    /// Rises each time prune rewrites the day; names the detail object.
    pub generation: u32,
    pub detail_bytes: u64,
    pub detail_sha256: String,
    pub segments: usize,
    pub stored_bytes: u64,
    /// The day's segments joined into runs: all the window needs.
    pub runs: Vec<Run>,
    /// The day's newest segment by name (where an archiver resumes).
    pub newest: Option<SegmentIndex>,
    pub orphans: Vec<Orphan>,
    pub rolled_at: DateTime<Utc>,
}

/// What the archive holds: finished days by their summaries, the days
/// after them segment by segment.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    /// Ascending by day.
    pub days: Vec<DaySummary>,
    /// Sorted by name; all named after the last rolled-up day.
    pub live: Vec<SegmentIndex>,
}

impl Archive {
    /// The chain's pieces: every day's runs, then every live segment.
    pub fn pieces(&self) -> Vec<Run> {
        self.days
            .iter()
            .flat_map(|d| d.runs.iter().cloned())
            .chain(self.live.iter().map(Run::of))
            .collect()
    }

    /// The newest segment by name: the end an archiver resumes from.
    pub fn newest(&self) -> Option<&SegmentIndex> {
        self.live
            .last()
            .or_else(|| self.days.iter().rev().find_map(|d| d.newest.as_ref()))
    }

    pub fn segment_count(&self) -> usize {
        self.days.iter().map(|d| d.segments).sum::<usize>() + self.live.len()
    }

    pub fn last_day(&self) -> Option<NaiveDate> {
        self.days.last().map(|d| d.day)
    }
}

/// What a long-running reader keeps between scans, so a scan reads only
/// what is new: segment indexes never change once written; a summary is
/// re-read when its size changes (prune rewrites it). A rewrite of the same
/// size left stale in a cache can only still list segments that prune
/// found below every restore's start, which no replay applies.
#[derive(Debug, Default)]
pub struct ScanCache {
    days: BTreeMap<String, (u64, DaySummary)>,
    live: BTreeMap<String, SegmentIndex>,
}

impl ScanCache {
    /// How many day summaries and live segment indexes are held.
    pub fn held(&self) -> (usize, usize) {
        (self.days.len(), self.live.len())
    }
}

fn damaged(key: &str, detail: String) -> BinlogError {
    BinlogError::Damaged {
        key: key.to_string(),
        detail,
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    key: &str,
) -> Result<T, BinlogError> {
    let bytes = store.get_bytes(key).await?;
    serde_json::from_slice(&bytes).map_err(|e| damaged(key, format!("unreadable: {e}")))
}

async fn read_index(store: &Store, key: &str) -> Result<SegmentIndex, BinlogError> {
    let index: SegmentIndex = read_json(store, key).await?;
    if index.format != SEGMENT_FORMAT {
        return Err(damaged(
            key,
            format!(
                "format {} is not {SEGMENT_FORMAT}; use the wpdr version that wrote it",
                index.format
            ),
        ));
    }
    Ok(index)
}

/// The segment indexes under `keys`, several requests in flight.
async fn read_indexes(
    store: &Store,
    keys: Vec<String>,
) -> Result<Vec<(String, SegmentIndex)>, BinlogError> {
    stream::iter(keys)
        .map(|key| async move {
            let index = read_index(store, &key).await?;
            Ok::<_, BinlogError>((key, index))
        })
        .buffer_unordered(FETCH_CONCURRENCY)
        .try_collect()
        .await
}

async fn read_summary(store: &Store, key: &str) -> Result<DaySummary, BinlogError> {
    let s: DaySummary = read_json(store, key).await?;
    if s.format != ROLLUP_FORMAT {
        return Err(damaged(
            key,
            format!(
                "roll-up format {} is not {ROLLUP_FORMAT}; use the wpdr version that wrote it",
                s.format
            ),
        ));
    }
    Ok(s)
}

/// Reads what the archive holds; see the module documentation for the cost.
pub async fn scan(
    store: &Store,
    site_prefix: &str,
    cache: &mut ScanCache,
) -> Result<Archive, BinlogError> {
    let prefix = rollups_prefix(site_prefix);
    let mut listed: Vec<ObjectMeta> = Vec::new();
    let mut pages = store.pages(&prefix);
    while let Some(page) = pages.next().await? {
        listed.extend(
            page.into_iter()
                .filter(|o| matches!(parse_rollup_key(site_prefix, &o.key), Some((_, None)))),
        );
    }
    let unseen: Vec<ObjectMeta> = listed
        .iter()
        .filter(|o| cache.days.get(&o.key).map(|(size, _)| *size) != Some(o.size))
        .cloned()
        .collect();
    let fetched: Vec<(ObjectMeta, DaySummary)> = stream::iter(unseen)
        .map(|o| async move {
            let s = read_summary(store, &o.key).await?;
            Ok::<_, BinlogError>((o, s))
        })
        .buffer_unordered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;
    for (o, s) in fetched {
        cache.days.insert(o.key, (o.size, s));
    }
    let keep: BTreeSet<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    cache.days.retain(|k, _| keep.contains(k.as_str()));
    // Summary keys sort by day.
    let days: Vec<DaySummary> = cache.days.values().map(|(_, s)| s.clone()).collect();
    let start_after = days.last().map(|d| after_day(site_prefix, d.day));
    let live = live_indexes(store, site_prefix, start_after, &mut cache.live).await?;
    Ok(Archive { days, live })
}

/// The committed segment indexes after `start_after`, sorted by name,
/// reading only those not in `cache`.
async fn live_indexes(
    store: &Store,
    site_prefix: &str,
    start_after: Option<String>,
    cache: &mut BTreeMap<String, SegmentIndex>,
) -> Result<Vec<SegmentIndex>, BinlogError> {
    let prefix = segments_prefix(site_prefix);
    let mut seen = BTreeSet::new();
    let mut pages = store.pages_after(&prefix, start_after);
    while let Some(page) = pages.next().await? {
        let unseen: Vec<String> = page
            .into_iter()
            .filter(|o| o.key.ends_with(".json"))
            .filter_map(|o| {
                let new = !cache.contains_key(&o.key);
                seen.insert(o.key.clone());
                new.then_some(o.key)
            })
            .collect();
        cache.extend(read_indexes(store, unseen).await?);
    }
    cache.retain(|k, _| seen.contains(k));
    let mut out: Vec<SegmentIndex> = cache.values().cloned().collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A day's segment indexes, checked against the summary that names them.
pub async fn read_detail(
    store: &Store,
    site_prefix: &str,
    day: &DaySummary,
) -> Result<Vec<SegmentIndex>, BinlogError> {
    let key = detail_key(site_prefix, day.day, day.generation);
    let (bytes, (size, sha)) = store.get_with_digest(&key).await?;
    if size != day.detail_bytes || sha != day.detail_sha256 {
        return Err(damaged(
            &key,
            format!(
                "{size} bytes with SHA-256 {sha}; its summary recorded {} bytes with {}",
                day.detail_bytes, day.detail_sha256
            ),
        ));
    }
    decode_detail(&key, &bytes)
}

/// A detail object's segment indexes (zstd-compressed JSON).
fn decode_detail(key: &str, bytes: &[u8]) -> Result<Vec<SegmentIndex>, BinlogError> {
    let json =
        zstd::stream::decode_all(bytes).map_err(|e| damaged(key, format!("not zstd: {e}")))?;
    serde_json::from_slice(&json).map_err(|e| damaged(key, format!("unreadable: {e}")))
}

/// Every segment index of the days from `from_day` on (all days with
/// `None`) and every live one, sorted by name.
pub async fn segments(
    store: &Store,
    site_prefix: &str,
    archive: &Archive,
    from_day: Option<NaiveDate>,
) -> Result<Vec<SegmentIndex>, BinlogError> {
    // Owned, not borrowed from `archive`: a stream of closures over
    // references is not provably Send for every lifetime, and a
    // point-in-time drill runs this inside a task the daemon spawns.
    let wanted: Vec<DaySummary> = archive
        .days
        .iter()
        .filter(|d| d.segments > 0 && from_day.is_none_or(|f| d.day >= f))
        .cloned()
        .collect();
    let details: Vec<Vec<SegmentIndex>> = stream::iter(wanted)
        .map(|d| async move { read_detail(store, site_prefix, &d).await })
        .buffered(FETCH_CONCURRENCY / 2)
        .try_collect()
        .await?;
    let mut out: Vec<SegmentIndex> = details.into_iter().flatten().collect();
    out.extend(archive.live.iter().cloned());
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Every segment index of the archive, sorted by name.
pub async fn all_segments(
    store: &Store,
    site_prefix: &str,
) -> Result<Vec<SegmentIndex>, BinlogError> {
    let archive = scan(store, site_prefix, &mut ScanCache::default()).await?;
    segments(store, site_prefix, &archive, None).await
}

/// The earliest close time an archiver may name a new segment with: never
/// inside a day already rolled up, whatever its clock says.
pub fn name_floor(last_rolled: Option<NaiveDate>) -> DateTime<Utc> {
    last_rolled
        .and_then(|d| d.succ_opt())
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or_default()
}

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct RollupReport {
    pub days: usize,
    pub segments: usize,
    pub orphans: usize,
    /// The newest day rolled up after this call.
    pub last_day: Option<NaiveDate>,
}

/// Writes one day's detail then its summary (with the fence checked before
/// and confirmed before the commit).
async fn write_day(
    store: &Store,
    site_prefix: &str,
    day: NaiveDate,
    generation: u32,
    mut segments: Vec<SegmentIndex>,
    orphans: Vec<Orphan>,
    fence: Option<&Fence>,
) -> Result<DaySummary, BinlogError> {
    segments.sort_by(|a, b| a.name.cmp(&b.name));
    let key = detail_key(site_prefix, day, generation);
    let json = serde_json::to_vec(&segments).map_err(|e| damaged(&key, e.to_string()))?;
    let detail = zstd::bulk::compress(&json, 3).map_err(|e| damaged(&key, e.to_string()))?;
    if let Some(f) = fence {
        f.check()?;
    }
    let written = store.put_kept(&key, detail.into()).await?;
    let runs = join(&segments.iter().map(Run::of).collect::<Vec<_>>(), None)
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    let summary = DaySummary {
        format: ROLLUP_FORMAT,
        day,
        generation,
        detail_bytes: written.size,
        detail_sha256: written.sha256,
        segments: segments.len(),
        stored_bytes: segments.iter().map(|s| s.stored_bytes).sum(),
        runs,
        newest: segments.last().cloned(),
        orphans,
        rolled_at: Utc::now(),
    };
    let skey = summary_key(site_prefix, day);
    let body = serde_json::to_vec_pretty(&summary).map_err(|e| damaged(&skey, e.to_string()))?;
    if let Some(f) = fence {
        f.confirm(store).await?;
    }
    store.put_bytes(&skey, body.into()).await?;
    Ok(summary)
}

/// Rolls up every settled day not rolled up yet, oldest first, so a crash
/// leaves the earlier days rolled up and the rest for the next call. Only
/// the archiver calls it, holding the archive lock (`fence`). Memory holds
/// one day's keys and indexes.
pub async fn roll_up(
    store: &Store,
    site_prefix: &str,
    now: DateTime<Utc>,
    fence: Option<&Fence>,
) -> Result<RollupReport, BinlogError> {
    let mut last_day: Option<NaiveDate> = None;
    let prefix = rollups_prefix(site_prefix);
    let mut pages = store.pages(&prefix);
    while let Some(page) = pages.next().await? {
        for o in page {
            if let Some((day, None)) = parse_rollup_key(site_prefix, &o.key) {
                last_day = last_day.max(Some(day));
            }
        }
    }
    let mut report = RollupReport {
        last_day,
        ..Default::default()
    };
    // Days before this one are over and settled.
    let settled_before = (now - chrono::Duration::hours(SETTLE_HOURS)).date_naive();
    let segments = segments_prefix(site_prefix);
    let start_after = last_day.map(|d| after_day(site_prefix, d));
    let mut pages = store.pages_after(&segments, start_after);
    let mut current: Option<(NaiveDate, Vec<ObjectMeta>)> = None;
    'pages: while let Some(page) = pages.next().await? {
        for o in page {
            let Some(day) = o.key.strip_prefix(&segments).and_then(day_of) else {
                continue;
            };
            if day >= settled_before {
                break 'pages;
            }
            match &mut current {
                Some((d, objects)) if *d == day => objects.push(o),
                _ => {
                    if let Some((d, objects)) = current.replace((day, vec![o])) {
                        roll_up_day(store, site_prefix, d, objects, fence, &mut report).await?;
                    }
                }
            }
        }
    }
    if let Some((d, objects)) = current {
        roll_up_day(store, site_prefix, d, objects, fence, &mut report).await?;
    }
    Ok(report)
}

async fn roll_up_day(
    store: &Store,
    site_prefix: &str,
    day: NaiveDate,
    objects: Vec<ObjectMeta>,
    fence: Option<&Fence>,
    report: &mut RollupReport,
) -> Result<(), BinlogError> {
    let index_keys: Vec<String> = objects
        .iter()
        .filter(|o| o.key.ends_with(".json"))
        .map(|o| o.key.clone())
        .collect();
    let indexes: Vec<SegmentIndex> = read_indexes(store, index_keys)
        .await?
        .into_iter()
        .map(|(_, index)| index)
        .collect();
    let committed: BTreeSet<String> = indexes
        .iter()
        .map(|s| data_key(site_prefix, &s.name))
        .collect();
    let orphans: Vec<Orphan> = objects
        .into_iter()
        .filter(|o| o.key.ends_with(".binlog.zst") && !committed.contains(&o.key))
        .map(|o| Orphan {
            key: o.key,
            size: o.size,
        })
        .collect();
    report.days += 1;
    report.segments += indexes.len();
    report.orphans += orphans.len();
    report.last_day = Some(day);
    write_day(store, site_prefix, day, 0, indexes, orphans, fence).await?;
    tracing::info!(day = %day, "binlog archive day rolled up");
    Ok(())
}

/// What prune did to the rolled-up days.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DayPrune {
    pub segments_deleted: usize,
    pub orphans_deleted: usize,
    pub bytes_freed: u64,
    pub days_deleted: usize,
    pub days_rewritten: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct DayPruneOptions {
    /// The day's orphans are past the grace period.
    pub orphans_due: bool,
    /// The newest rolled-up day (kept as an empty summary when emptied).
    pub newest: bool,
    pub dry_run: bool,
}

/// Deletes the segments of a rolled-up day that `gone` selects, and its
/// orphans when `orphans_due`. A day left empty goes, summary first (so
/// the day stops existing before its objects do), except the newest
/// rolled-up day (`newest`): it stays as an empty summary, so the days
/// rolled up never seem to end earlier than they did (an archiver would
/// roll that day up again from segments being deleted). Otherwise the day
/// is rewritten under the next generation before its old detail goes.
pub async fn prune_day(
    store: &Store,
    site_prefix: &str,
    day: &DaySummary,
    gone: impl Fn(&SegmentIndex) -> bool,
    how: DayPruneOptions,
    out: &mut DayPrune,
) -> Result<(), BinlogError> {
    let DayPruneOptions {
        orphans_due,
        newest,
        dry_run,
    } = how;
    let detail = if day.segments > 0 {
        read_detail(store, site_prefix, day).await?
    } else {
        Vec::new()
    };
    let (deleted, kept): (Vec<SegmentIndex>, Vec<SegmentIndex>) =
        detail.into_iter().partition(|s| gone(s));
    let orphans: &[Orphan] = if orphans_due { &day.orphans } else { &[] };
    let empty_after = kept.is_empty() && (orphans_due || day.orphans.is_empty());
    let changed = !deleted.is_empty() || !orphans.is_empty();
    let goes = empty_after && !newest;
    if !changed && !goes {
        return Ok(());
    }
    out.segments_deleted += deleted.len();
    out.orphans_deleted += orphans.len();
    out.bytes_freed += deleted.iter().map(|s| s.stored_bytes).sum::<u64>()
        + orphans.iter().map(|o| o.size).sum::<u64>();
    if goes {
        out.days_deleted += 1;
    } else {
        out.days_rewritten += 1;
    }
    if dry_run {
        return Ok(());
    }
    if goes {
        store.delete(&summary_key(site_prefix, day.day)).await?;
    } else {
        let left: Vec<Orphan> = if orphans_due {
            Vec::new()
        } else {
            day.orphans.clone()
        };
        write_day(
            store,
            site_prefix,
            day.day,
            day.generation + 1,
            kept,
            left,
            None,
        )
        .await?;
    }
    for s in &deleted {
        // Index first: the segment stops existing before its data goes.
        store.delete(&index_key(site_prefix, &s.name)).await?;
        store.delete(&data_key(site_prefix, &s.name)).await?;
    }
    for o in orphans {
        store.delete(&o.key).await?;
    }
    store
        .delete(&detail_key(site_prefix, day.day, day.generation))
        .await?;
    Ok(())
}

/// Detail objects no summary names: a rewrite or a roll-up that stopped
/// between its two writes. Those of days after the last summary may be a
/// roll-up in progress and are left alone; a day before it whose summary
/// is gone was being deleted, and its segments go with the detail.
pub async fn stray_details(
    store: &Store,
    site_prefix: &str,
    archive: &Archive,
) -> Result<Vec<(NaiveDate, String)>, BinlogError> {
    let by_day: BTreeMap<NaiveDate, u32> =
        archive.days.iter().map(|d| (d.day, d.generation)).collect();
    let last = archive.last_day();
    let prefix = rollups_prefix(site_prefix);
    let mut out = Vec::new();
    let mut pages = store.pages(&prefix);
    while let Some(page) = pages.next().await? {
        for o in page {
            let Some((day, Some(generation))) = parse_rollup_key(site_prefix, &o.key) else {
                continue;
            };
            let stray = match by_day.get(&day) {
                Some(&g) => g != generation,
                None => last.is_some_and(|l| day < l),
            };
            if stray {
                out.push((day, o.key));
            }
        }
    }
    Ok(out)
}

/// Finishes deleting a day whose summary went first: its segments, then the detail.
pub async fn finish_stray(
    store: &Store,
    site_prefix: &str,
    archive: &Archive,
    day: NaiveDate,
    key: &str,
) -> Result<usize, BinlogError> {
    let mut deleted = 0;
    if !archive.days.iter().any(|d| d.day == day) {
        let segments = decode_detail(key, &store.get_bytes(key).await?)?;
        for s in &segments {
            store.delete(&index_key(site_prefix, &s.name)).await?;
            store.delete(&data_key(site_prefix, &s.name)).await?;
            deleted += 1;
        }
    }
    store.delete(key).await?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_keys_name_their_day_and_generation() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 29).unwrap();
        assert_eq!(parse_rollup_key("s", &summary_key("s", d)), Some((d, None)));
        assert_eq!(
            parse_rollup_key("s", &detail_key("s", d, 7)),
            Some((d, Some(7)))
        );
        assert_eq!(parse_rollup_key("s", "s/binlog/rollups/junk"), None);
        // The live listing of the days after a rolled-up day starts past every
        // segment of that day and before every segment of the next.
        let after = after_day("s", d);
        assert!(format!("{}20261129T235959999Z-0-1-5.json", segments_prefix("s")) < after);
        assert!(format!("{}20261130T000000000Z-0-1-6.json", segments_prefix("s")) > after);
        assert_eq!(
            name_floor(Some(d)).to_rfc3339(),
            "2026-11-30T00:00:00+00:00"
        );
    }
}
