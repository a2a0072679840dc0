//! The archive's chain: segments (or already-joined runs of them) joined
//! by following each end to the piece that starts there. Shared by the
//! window, the roll-ups and the replay, and depending on none of them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::gtid::GtidPos;
use super::segment::SegmentIndex;

/// An idle archiver's word: every transaction committed before the time
/// is archived, and the chain ends at the position.
pub type Vouch<'a> = (&'a GtidPos, DateTime<Utc>);

/// Consecutive segments, each starting where the one before ended. Also
/// the piece runs are built from: a single segment, or a finished day's
/// runs as its roll-up recorded them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Run {
    pub start: GtidPos,
    pub end: GtidPos,
    pub first_segment: String,
    pub last_segment: String,
    pub segments: usize,
    pub covered_until: DateTime<Utc>,
}

impl Run {
    pub fn of(s: &SegmentIndex) -> Run {
        Run {
            start: s.start.clone(),
            end: s.end.clone(),
            first_segment: s.name.clone(),
            last_segment: s.name.clone(),
            segments: 1,
            covered_until: s.covered_until,
        }
    }
}

/// Splits segments into runs by following the chain; see [`join`].
pub fn runs(segments: &[SegmentIndex], head: Option<Vouch<'_>>) -> Vec<Run> {
    let pieces: Vec<Run> = segments.iter().map(Run::of).collect();
    join(&pieces, head).into_iter().map(|(r, _)| r).collect()
}

/// Joins pieces into runs by following the chain: each piece of a run
/// starts exactly where the one before it ended, so a replay of a run
/// applies every transaction once. Name order only breaks ties: a piece
/// that forks off a chain (the same start as another, e.g. written by a
/// stalled archiver before fencing existed) is left out when a longer
/// continuation exists, and a run starts at every piece whose start is no
/// piece's end (the first, and the first after each gap). Each run comes
/// with the indexes of its pieces in chain order: what a replay applies.
pub fn join(pieces: &[Run], head: Option<Vouch<'_>>) -> Vec<(Run, Vec<usize>)> {
    use std::collections::{HashMap, HashSet};
    let mut by_start: HashMap<&GtidPos, Vec<usize>> = HashMap::new();
    let mut ends: HashSet<&GtidPos> = HashSet::new();
    for (i, p) in pieces.iter().enumerate() {
        by_start.entry(&p.start).or_default().push(i);
        ends.insert(&p.end);
    }
    // At a fork, the piece that reaches furthest (then the newest name).
    let pick = |candidates: &[usize], used: &[bool]| -> Option<usize> {
        candidates
            .iter()
            .copied()
            .filter(|&i| !used[i])
            .max_by(|&a, &b| {
                let (x, y) = (&pieces[a], &pieces[b]);
                let further = match (x.end.includes(&y.end), y.end.includes(&x.end)) {
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ => std::cmp::Ordering::Equal,
                };
                further.then_with(|| x.first_segment.cmp(&y.first_segment))
            })
    };
    let mut roots: Vec<usize> = (0..pieces.len())
        .filter(|&i| !ends.contains(&pieces[i].start))
        .collect();
    roots.sort_by(|&a, &b| pieces[a].first_segment.cmp(&pieces[b].first_segment));
    let mut used = vec![false; pieces.len()];
    let mut out: Vec<(Run, Vec<usize>)> = Vec::new();
    for root in roots {
        if used[root] {
            continue;
        }
        used[root] = true;
        let mut run = pieces[root].clone();
        let mut chain = vec![root];
        while let Some(next) = by_start.get(&run.end).and_then(|c| pick(c, &used)) {
            used[next] = true;
            let p = &pieces[next];
            run.end = p.end.clone();
            run.last_segment = p.last_segment.clone();
            run.segments += p.segments;
            run.covered_until = run.covered_until.max(p.covered_until);
            chain.push(next);
        }
        out.push((run, chain));
    }
    out.sort_by(|a, b| a.0.first_segment.cmp(&b.0.first_segment));
    // The archiver idles at the end of the last run: it vouches for the time since.
    if let Some((position, covered_until)) = head {
        if let Some((r, _)) = out.iter_mut().rev().find(|(r, _)| &r.end == position) {
            r.covered_until = r.covered_until.max(covered_until);
        }
    }
    out
}

/// The run a set's position lies in: the run starts at or before it and
/// ends at or after it.
pub fn run_for<'a>(runs: &'a [Run], pos: &GtidPos) -> Option<&'a Run> {
    runs.iter()
        .rev()
        .find(|r| pos.includes(&r.start) && r.end.includes(pos))
}

/// Where a replay after set `m` starts (None: the set cannot be a base).
pub fn set_position(m: &crate::catalog::SetSummary) -> Option<GtidPos> {
    GtidPos::parse(m.position.as_deref()?).ok()
}
