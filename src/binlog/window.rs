//! The recoverable window: which seconds a point-in-time restore can reach.
//! A set reaches from its snapshot to the end of the unbroken run of
//! segments that starts at or before its GTID position; a gap ends a run,
//! and the next run is reachable only from a set taken after the gap.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::archive::{list_gaps, read_head};
use super::archive::{GapRecord, Head};
pub use super::chain::{join, run_for, runs, set_position, Run};
use super::rollup::{self, ScanCache};
use super::BinlogError;
use crate::catalog::{Catalog, SetSummary};
use crate::store::Store;

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

/// The window from the archive's pieces (see [`Archive::pieces`](super::rollup::Archive::pieces)).
pub fn compute(
    sets: &[SetSummary],
    pieces: &[Run],
    gaps: Vec<GapRecord>,
    head: Option<Head>,
) -> Window {
    let runs: Vec<Run> = join(pieces, head.as_ref().map(Head::vouch))
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    let mut ranges = Vec::new();
    for m in sets {
        let Some(pos) = &set_position(m) else {
            continue;
        };
        let from = m.snapshot_at;
        let to = match run_for(&runs, pos) {
            Some(r) if r.covered_until > from => r.covered_until,
            _ => from,
        };
        ranges.push(Range {
            set_id: m.id.clone(),
            from,
            to,
        });
    }
    let open_gaps = gaps
        .iter()
        .filter(|g| !sets.iter().any(|m| m.snapshot_at >= g.detected_at))
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

/// Reads a site's sets and the segments, gaps and head of the archive it
/// restores from (its own, or the shared one of its server), and computes
/// its window.
pub async fn load(cfg: &crate::config::Config, store: &Store) -> Result<Window, BinlogError> {
    let sets = Catalog::new(store, &cfg.site, &cfg.site_prefix())
        .summaries()
        .await?;
    load_for(store, &cfg.binlog_prefix(), &sets).await
}

/// The window over sets already read.
pub async fn load_for(
    store: &Store,
    site_prefix: &str,
    sets: &[SetSummary],
) -> Result<Window, BinlogError> {
    load_cached(store, site_prefix, sets, &mut Default::default()).await
}

/// [`load_for`] with what was read kept between calls (a daemon's).
pub async fn load_cached(
    store: &Store,
    site_prefix: &str,
    sets: &[SetSummary],
    cache: &mut ScanCache,
) -> Result<Window, BinlogError> {
    let archive = rollup::scan(store, site_prefix, cache).await?;
    let gaps = list_gaps(store, site_prefix).await?;
    let head = read_head(store, site_prefix).await?;
    Ok(compute(sets, &archive.pieces(), gaps, head))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binlog::gtid::{Gtid, GtidPos};
    use crate::binlog::segment::SegmentIndex;

    fn seg(name: &str, start: &str, end: &str, covered: i64) -> SegmentIndex {
        let t = DateTime::from_timestamp(covered, 0).unwrap();
        let g = Gtid::parse(end).unwrap();
        SegmentIndex {
            format: 1,
            name: name.into(),
            server: "db:3306".into(),
            start: GtidPos::parse(start).unwrap(),
            end: GtidPos::parse(end).unwrap(),
            first_gtid: g,
            last_gtid: g,
            transactions: 1,
            first_commit: t,
            last_commit: t,
            covered_until: t,
            raw_bytes: 1,
            stored_bytes: 1,
            sha256: String::new(),
            closed_at: t,
        }
    }

    /// The first run's segments in chain order.
    fn chain_names(segments: &[SegmentIndex]) -> Vec<String> {
        let pieces: Vec<Run> = segments.iter().map(Run::of).collect();
        join(&pieces, None)[0]
            .1
            .iter()
            .map(|&i| segments[i].name.clone())
            .collect()
    }

    proptest::proptest! {
        /// Joining each day's runs (what a roll-up records) gives the same
        /// runs as joining every segment: the window read from summaries is
        /// the window.
        #[test]
        fn days_joined_give_the_runs_of_their_segments(
            steps in proptest::collection::vec((1u64..5, proptest::bool::weighted(0.1), 0usize..3), 1..60)
        ) {
            let mut segments = Vec::new();
            let (mut seq, mut day) = (10u64, 0usize);
            for (i, (len, gap, next_day)) in steps.into_iter().enumerate() {
                if gap {
                    seq += 7;
                }
                day += next_day;
                let start = format!("0-1-{seq}");
                seq += len;
                segments.push(seg(&format!("{day:03}-{i:03}"), &start, &format!("0-1-{seq}"), (seq * 10) as i64));
            }
            let whole = runs(&segments, None);
            let mut pieces = Vec::new();
            for d in 0..=day {
                let of_day: Vec<SegmentIndex> = segments
                    .iter()
                    .filter(|s| s.name.starts_with(&format!("{d:03}-")))
                    .cloned()
                    .collect();
                pieces.extend(runs(&of_day, None));
            }
            proptest::prop_assert_eq!(join(&pieces, None).into_iter().map(|(r, _)| r).collect::<Vec<_>>(), whole);
        }
    }

    #[test]
    fn runs_follow_the_chain_not_the_names() {
        // "b2" forks off at b's start (a stalled writer) and is named between
        // the others; the chain a -> b -> c is what a replay applies.
        let segments = vec![
            seg("1-a", "0-1-10", "0-1-20", 100),
            seg("2-b", "0-1-20", "0-1-30", 200),
            seg("3-b2", "0-1-20", "0-1-25", 210),
            seg("4-c", "0-1-30", "0-1-40", 300),
        ];
        let r = runs(&segments, None);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(chain_names(&segments), ["1-a", "2-b", "4-c"]);
        assert_eq!(r[0].end, GtidPos::parse("0-1-40").unwrap());
        // Names out of order do not matter either.
        let mut shuffled = segments.clone();
        shuffled.reverse();
        assert_eq!(chain_names(&shuffled), ["1-a", "2-b", "4-c"]);
    }

    #[test]
    fn a_gap_splits_the_archive_into_runs() {
        let segments = vec![
            seg("a", "0-1-10", "0-1-20", 100),
            seg("b", "0-1-20", "0-1-30", 200),
            // 31..39 never archived
            seg("c", "0-1-40", "0-2-50", 300),
            seg("d", "0-2-50", "0-2-60", 400),
        ];
        let r = runs(&segments, None);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].segments, r[0].covered_until.timestamp()), (2, 200));
        assert_eq!(r[1].start, GtidPos::parse("0-1-40").unwrap());
        // A set inside the first run reaches its end, not past the gap.
        let p = GtidPos::parse("0-1-25").unwrap();
        assert_eq!(run_for(&r, &p).unwrap().first_segment, "a");
        assert!(run_for(&r, &GtidPos::parse("0-1-35").unwrap()).is_none());
        assert_eq!(
            run_for(&r, &GtidPos::parse("0-2-55").unwrap())
                .unwrap()
                .first_segment,
            "c"
        );
        // The idle archiver at the end of the last run vouches for later seconds.
        let head = Head {
            server: "db:3306".into(),
            position: GtidPos::parse("0-2-60").unwrap(),
            covered_until: DateTime::from_timestamp(900, 0).unwrap(),
            updated_at: DateTime::from_timestamp(900, 0).unwrap(),
            host: "h".into(),
            pid: 1,
        };
        assert_eq!(
            runs(&segments, Some(head.vouch()))[1]
                .covered_until
                .timestamp(),
            900
        );
        let stale = Head {
            position: GtidPos::parse("0-2-55").unwrap(),
            ..head
        };
        assert_eq!(
            runs(&segments, Some(stale.vouch()))[1]
                .covered_until
                .timestamp(),
            400
        );
    }
}
