//! Grandfather-father-son retention: which sets to keep.
//!
//! Like restic's `forget`: the newest `keep_last` sets, then the newest set of
//! each of the newest `keep_daily` days, `keep_weekly` ISO weeks,
//! `keep_monthly` months and `keep_yearly` years (UTC). A set kept by any rule
//! is kept. The newest set is always kept, whatever the policy says.

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use std::collections::BTreeSet;

pub use crate::config::RetentionPolicy as Policy;

/// Why a set is kept (for `prune --dry-run` and its JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub time: DateTime<Utc>,
    pub keep: bool,
    pub reasons: Vec<&'static str>,
}

/// Maps a time to its calendar bucket (day, ISO week, month or year).
type Bucket = fn(&DateTime<Utc>) -> (i32, u32);

/// Decides for each set (any order in; newest first out).
pub fn decide(sets: &[(String, DateTime<Utc>)], policy: &Policy) -> Vec<Decision> {
    let mut sorted: Vec<&(String, DateTime<Utc>)> = sets.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let mut out: Vec<Decision> = sorted
        .iter()
        .map(|(id, time)| Decision {
            id: id.clone(),
            time: *time,
            keep: false,
            reasons: Vec::new(),
        })
        .collect();
    for d in out.iter_mut().take(policy.keep_last) {
        d.reasons.push("last");
    }
    let rules: [(&'static str, usize, Bucket); 4] = [
        ("daily", policy.keep_daily, |t| (t.year(), t.ordinal())),
        ("weekly", policy.keep_weekly, |t| {
            let w = t.iso_week();
            (w.year(), w.week())
        }),
        ("monthly", policy.keep_monthly, |t| (t.year(), t.month())),
        ("yearly", policy.keep_yearly, |t| (t.year(), 0)),
    ];
    for (name, count, bucket) in rules {
        let mut seen = BTreeSet::new();
        for d in out.iter_mut() {
            if seen.len() >= count {
                break;
            }
            // Newest first: the first set met in a bucket is that bucket's newest.
            if seen.insert(bucket(&d.time)) {
                d.reasons.push(name);
            }
        }
    }
    if let Some(newest) = out.first_mut() {
        if newest.reasons.is_empty() {
            newest.reasons.push("newest");
        }
    }
    for d in out.iter_mut() {
        d.keep = !d.reasons.is_empty();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn daily_sets(start: &str, days: i64) -> Vec<(String, DateTime<Utc>)> {
        (0..days)
            .map(|d| {
                let t = at(start) + Duration::days(d);
                (format!("set-{d:04}"), t)
            })
            .collect()
    }

    #[test]
    fn keeps_exactly_the_expected_sets_on_a_calendar() {
        // One nightly set at 02:00 for all of 2026.
        let sets = daily_sets("2026-01-01T02:00:00Z", 365);
        let policy = Policy {
            keep_last: 3,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            keep_yearly: 2,
        };
        let kept: Vec<String> = decide(&sets, &policy)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.time.format("%Y-%m-%d").to_string())
            .collect();
        let expected = vec![
            // last 3 and daily 7: Dec 25..31
            "2026-12-31",
            "2026-12-30",
            "2026-12-29",
            "2026-12-28",
            "2026-12-27",
            "2026-12-26",
            "2026-12-25",
            // weekly 4: newest of ISO weeks 53 (Dec 28-31 -> Dec 31), 52 (-> Dec 27), 51 (-> Dec 20), 50 (-> Dec 13)
            "2026-12-20",
            "2026-12-13",
            // monthly 6: Dec (31), Nov 30, Oct 31, Sep 30, Aug 31, Jul 31
            "2026-11-30",
            "2026-10-31",
            "2026-09-30",
            "2026-08-31",
            "2026-07-31",
            // yearly 2: only 2026 exists -> Dec 31 (already kept)
        ];
        assert_eq!(kept, expected);
    }

    #[test]
    fn the_newest_set_survives_an_empty_policy() {
        let sets = daily_sets("2026-03-01T00:00:00Z", 5);
        let d = decide(&sets, &Policy::default());
        assert_eq!(d.iter().filter(|d| d.keep).count(), 1);
        assert_eq!(d[0].reasons, vec!["newest"]);
        assert!(Policy::default().is_empty());
    }

    proptest! {
        #[test]
        fn newest_always_kept_and_counts_are_bounded(
            offsets in proptest::collection::vec(0i64..(3 * 365 * 24), 1..80),
            last in 0usize..5, daily in 0usize..10, weekly in 0usize..6, monthly in 0usize..6,
        ) {
            let sets: Vec<(String, DateTime<Utc>)> = offsets.iter().enumerate()
                .map(|(i, h)| (format!("s{i:03}"), at("2025-01-01T00:00:00Z") + Duration::hours(*h)))
                .collect();
            let policy = Policy { keep_last: last, keep_daily: daily, keep_weekly: weekly, keep_monthly: monthly, keep_yearly: 0 };
            let d = decide(&sets, &policy);
            prop_assert!(d[0].keep);
            let kept = d.iter().filter(|x| x.keep).count();
            prop_assert!(kept <= (last + daily + weekly + monthly).max(1));
            prop_assert!(kept >= last.min(sets.len()).max(1));
            // Newest first, and every set decided once.
            prop_assert_eq!(d.len(), sets.len());
            prop_assert!(d.windows(2).all(|w| w[0].time >= w[1].time));
        }
    }
}
