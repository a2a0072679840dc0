//! The recoverable window: which seconds a point-in-time restore can reach.
//! A set reaches from its snapshot to the end of the unbroken run of
//! segments that starts at or before its GTID position; a gap ends a run,
//! and the next run is reachable only from a set taken after the gap.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::archive::{list_gaps, read_head};
use super::archive::{set_position, GapRecord, Head};
use super::gtid::GtidPos;
use super::segment;
use super::segment::SegmentIndex;
use super::BinlogError;
use crate::catalog::manifest::Manifest;
use crate::catalog::Catalog;
use crate::store::Store;

/// Consecutive segments, each starting where the one before ended.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Run {
    pub start: GtidPos,
    pub end: GtidPos,
    pub first_segment: String,
    pub last_segment: String,
    pub segments: usize,
    pub covered_until: DateTime<Utc>,
}

/// One stretch of restorable time, rooted at one set.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Range {
    pub set_id: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Window {
    /// The oldest and newest restorable second (None without any set).
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
    pub ranges: Vec<Range>,
    pub runs: Vec<Run>,
    pub gaps: Vec<GapRecord>,
    /// Gaps no set taken after them has healed yet: points after them are
    /// reachable only once a new set exists.
    pub open_gaps: usize,
    pub archive_head: Option<Head>,
}

/// Splits segments (sorted by name) into runs.
pub fn runs(segments: &[SegmentIndex], head: Option<&Head>) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for s in segments {
        match out.last_mut() {
            Some(r) if r.end == s.start => {
                r.end = s.end.clone();
                r.last_segment = s.name.clone();
                r.segments += 1;
                r.covered_until = r.covered_until.max(s.covered_until);
            }
            _ => out.push(Run {
                start: s.start.clone(),
                end: s.end.clone(),
                first_segment: s.name.clone(),
                last_segment: s.name.clone(),
                segments: 1,
                covered_until: s.covered_until,
            }),
        }
    }
    // The archiver idles at the end of the last run: it vouches for the time since.
    if let (Some(h), Some(r)) = (head, out.last_mut()) {
        if h.position == r.end {
            r.covered_until = r.covered_until.max(h.covered_until);
        }
    }
    out
}

/// When a set's snapshot was taken (older sets lack `snapshot_at`: their
/// finish time bounds it).
pub fn snapshot_time(m: &Manifest) -> DateTime<Utc> {
    m.database
        .as_ref()
        .and_then(|d| d.snapshot_at)
        .unwrap_or(m.finished_at)
}

/// The run a set's position lies in: the run starts at or before it and
/// ends at or after it.
pub fn run_for<'a>(runs: &'a [Run], pos: &GtidPos) -> Option<&'a Run> {
    runs.iter()
        .rev()
        .find(|r| pos.includes(&r.start) && r.end.includes(pos))
}

pub fn compute(
    sets: &[Manifest],
    segments: &[SegmentIndex],
    gaps: Vec<GapRecord>,
    head: Option<Head>,
) -> Window {
    let runs = runs(segments, head.as_ref());
    let mut ranges = Vec::new();
    for m in sets {
        let Some(pos) = set_position(m) else { continue };
        let from = snapshot_time(m);
        let to = match run_for(&runs, &pos) {
            Some(r) if r.covered_until > from => r.covered_until,
            _ => from,
        };
        ranges.push(Range {
            set_id: m.set_id.clone(),
            from,
            to,
        });
    }
    let open_gaps = gaps
        .iter()
        .filter(|g| !sets.iter().any(|m| snapshot_time(m) >= g.detected_at))
        .count();
    Window {
        oldest: ranges.iter().map(|r| r.from).min(),
        newest: ranges.iter().map(|r| r.to).max(),
        ranges,
        runs,
        gaps,
        open_gaps,
        archive_head: head,
    }
}

/// Reads the sets, segments, gaps and archive head of a site and computes its window.
pub async fn load(store: &Store, site: &str, site_prefix: &str) -> Result<Window, BinlogError> {
    let sets = Catalog::new(store, site, site_prefix).list().await?;
    load_for(store, site_prefix, &sets).await
}

/// The window over sets already read.
pub async fn load_for(
    store: &Store,
    site_prefix: &str,
    sets: &[Manifest],
) -> Result<Window, BinlogError> {
    load_cached(store, site_prefix, sets, &mut Default::default()).await
}

/// [`load_for`] with a cache of segment indexes kept between calls.
pub async fn load_cached(
    store: &Store,
    site_prefix: &str,
    sets: &[Manifest],
    cache: &mut std::collections::BTreeMap<String, SegmentIndex>,
) -> Result<Window, BinlogError> {
    let segments = segment::list_cached(store, site_prefix, cache).await?;
    let gaps = list_gaps(store, site_prefix).await?;
    let head = read_head(store, site_prefix).await?;
    Ok(compute(sets, &segments, gaps, head))
}
