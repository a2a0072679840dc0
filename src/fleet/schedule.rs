//! A Site's schedules: cron with `H` fields, spread by a stable hash of the
//! site so that 300 sites asking for "nightly" do not all start at 02:00.
//!
//! `H` takes a value from the field's range chosen by a hash of the site's
//! namespace, name, schedule name and the field (Jenkins' syntax):
//! `H` (the whole range), `H(1-5)` (within 1..=5), `H/15` (every 15 from
//! an offset the hash chooses) and `H(0-29)/10`. The same site gets the
//! same times on every controller, after every restart; a field without
//! `H` is pinned. The expanded expression goes through the daemon's cron
//! parser, so a Site's schedule and a schedule file mean the same thing.

use crate::daemon::schedule::{parse_cron, JobKind, NextFn};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// The range `H` draws from, per field (seconds first). Day of month stops at
/// 28 so that every month has the day; day of week is a name (the parser's
/// numbering is not the classic one).
const FIELDS: [(&str, u32, u32); 6] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 28),
    ("month", 1, 12),
    ("day of week", 0, 6),
];
const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// A Site schedule ready to fire.
#[derive(Clone)]
pub struct SiteCron {
    pub name: String,
    pub job: JobKind,
    /// The expression after `H` was expanded: what the site really runs on.
    pub expanded: String,
    pub timezone: chrono_tz::Tz,
    next: NextFn,
}

impl std::fmt::Debug for SiteCron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteCron")
            .field("name", &self.name)
            .field("job", &self.job)
            .field("expanded", &self.expanded)
            .field("timezone", &self.timezone)
            .finish()
    }
}

impl SiteCron {
    /// Parses a Site's schedule for the site `namespace/name`; the error
    /// names the schedule and what is wrong with it.
    pub fn parse(
        site_key: &str,
        name: &str,
        job: &str,
        cron: &str,
        timezone: Option<&str>,
    ) -> Result<SiteCron, String> {
        let job: JobKind = serde_yaml::from_str(job).map_err(|_| {
            format!(
                "schedule {name}: job '{job}' is not one of backup, media-sync, prune, verify-latest, drill"
            )
        })?;
        if matches!(job, JobKind::BinlogArchive | JobKind::BinlogPrune) {
            return Err(format!(
                "schedule {name}: {} is not a per-site job in a fleet (one archive per database server, not one replication stream per site): name the server's shared archive in database.binlog.archive and run it once per server (the chart's `archives`)",
                job.as_str()
            ));
        }
        let zone = timezone.unwrap_or("UTC");
        let timezone: chrono_tz::Tz = zone.parse().map_err(|_| {
            format!("schedule {name}: timezone '{zone}' is not an IANA zone like Europe/Berlin")
        })?;
        let expanded = expand(cron, &format!("{site_key}/{name}"))
            .map_err(|e| format!("schedule {name}: {e}"))?;
        let next = parse_cron(&expanded, timezone).map_err(|e| format!("schedule {name}: {e}"))?;
        Ok(SiteCron {
            name: name.to_string(),
            job,
            expanded,
            timezone,
            next,
        })
    }

    /// The first run time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        crate::daemon::schedule::next_after(&self.next, self.timezone, after)
    }

    /// The newest run time at or before `now`, looking back from `since`
    /// (a run missed several times is owed once: this is the one it owes).
    pub fn latest_due(&self, since: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut due = None;
        // Owed once whatever the gap: a Site created months before the
        // controller needs no walk over every minute since.
        let mut at = since.max(now - chrono::Duration::days(35));
        // Bounded: a per-second cron over a long outage must not spin.
        for _ in 0..100_000 {
            match self.next_after(at) {
                Some(t) if t <= now => {
                    due = Some(t);
                    at = t;
                }
                _ => return due,
            }
        }
        // Still behind after that many: the newest is close to now.
        due
    }
}

/// A number in `0..n` from a stable hash of `key` (SHA-256: the same on
/// every platform and wpdr version, unlike std's hasher).
fn spread(key: &str, n: u32) -> u32 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(n.max(1))) as u32
}

/// Replaces every `H` field of a six-field cron by its value for `key`.
pub fn expand(cron: &str, key: &str) -> Result<String, String> {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return Err(format!(
            "'{cron}' has {} fields; a schedule has six, seconds first (sec min hour dom month dow), e.g. \"0 H H(1-5) * * *\"",
            fields.len()
        ));
    }
    let mut out = Vec::with_capacity(fields.len());
    for (i, (field, &(what, min, max))) in fields.iter().zip(FIELDS.iter()).enumerate() {
        if !field.starts_with('H') {
            out.push(field.to_string());
            continue;
        }
        let bad = |why: &str| format!("'{field}' ({what}): {why}");
        let (range, step) = match field[1..].split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad("the step after '/' must be a positive number"))?;
                (r, Some(step))
            }
            None => (&field[1..], None),
        };
        let (lo, hi) = if range.is_empty() {
            (min, max)
        } else {
            let inner = range
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| bad("write H, H(a-b), H/n or H(a-b)/n"))?;
            let (a, b) = inner
                .split_once('-')
                .ok_or_else(|| bad("a range is two numbers, H(a-b)"))?;
            let parse = |s: &str| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|_| bad("a range is two numbers, H(a-b)"))
            };
            (parse(a)?, parse(b)?)
        };
        if lo > hi || lo < min || hi > max {
            return Err(bad(&format!("the range must lie within {min}-{max}")));
        }
        let width = hi - lo + 1;
        let key = format!("{key}/{i}");
        let value = match step {
            None => {
                let v = lo + spread(&key, width);
                if i == 5 {
                    WEEKDAYS[v as usize].to_string()
                } else {
                    v.to_string()
                }
            }
            Some(step) => {
                if i == 5 {
                    return Err(bad("a step is not supported for the day of week"));
                }
                let start = lo + spread(&key, step.min(width));
                format!("{start}-{hi}/{step}")
            }
        };
        out.push(value);
    }
    Ok(out.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn h_spreads_sites_and_stays_put_for_each() {
        let a = expand("0 H H(1-4) * * *", "shop/shop/nightly").unwrap();
        assert_eq!(a, expand("0 H H(1-4) * * *", "shop/shop/nightly").unwrap());
        // 400 sites in a four-hour window: each hour gets about a quarter,
        // and they take most of the 240 minutes (a uniform draw fills ~81 %).
        let all: Vec<String> = (0..400)
            .map(|i| expand("0 H H(1-4) * * *", &format!("ns{i}/site/nightly")).unwrap())
            .collect();
        for hour in 1..=4 {
            let n = all
                .iter()
                .filter(|e| e.ends_with(&format!(" {hour} * * *")))
                .count();
            assert!((70..=130).contains(&n), "hour {hour}: {n} of 400");
        }
        let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
        assert!(distinct.len() > 170, "{}", distinct.len());
        let pinned = expand("0 30 2 * * *", "x").unwrap();
        assert_eq!(pinned, "0 30 2 * * *");
    }

    #[test]
    fn bad_h_fields_are_named() {
        for (cron, want) in [
            ("0 H 2 * *", "six"),
            ("0 H(5-2) 2 * * *", "within 0-59"),
            ("0 H(0-70) 2 * * *", "within 0-59"),
            ("0 H/0 * * * *", "positive"),
            ("0 Hx * * * *", "H(a-b)"),
            ("0 0 0 * * H/2", "day of week"),
        ] {
            let e = expand(cron, "k").unwrap_err();
            assert!(e.contains(want), "{cron}: {e}");
        }
        for job in ["binlog-archive", "binlog-prune"] {
            let e = SiteCron::parse("a/b", "n", job, "0 * * * * *", None).unwrap_err();
            assert!(e.contains("one archive per database server"), "{e}");
            assert!(e.contains("database.binlog.archive"), "{e}");
        }
        let e = SiteCron::parse("a/b", "n", "bakup", "0 * * * * *", None).unwrap_err();
        assert!(e.contains("'bakup'"), "{e}");
        let e =
            SiteCron::parse("a/b", "n", "backup", "0 0 2 * * *", Some("Mars/Base")).unwrap_err();
        assert!(e.contains("Mars/Base"), "{e}");
    }

    #[test]
    fn a_run_missed_many_times_is_owed_once() {
        let c = SiteCron::parse("a/b", "n", "backup", "0 0 2 * * *", None).unwrap();
        // Down from Monday noon to Thursday noon: three 02:00 runs missed, owed once (Thursday's).
        let due = c.latest_due(at("2026-11-23T12:00:00Z"), at("2026-11-26T12:00:00Z"));
        assert_eq!(due, Some(at("2026-11-26T02:00:00Z")));
        assert_eq!(
            c.latest_due(at("2026-11-26T02:00:00Z"), at("2026-11-26T12:00:00Z")),
            None
        );
    }

    proptest! {
        /// Every expansion is a valid cron whose H fields lie in their range.
        #[test]
        fn expansions_parse_and_stay_in_range(
            key in "[a-z0-9-]{1,20}/[a-z0-9-]{1,20}/[a-z]{1,8}",
            lo in 0u32..24, span in 0u32..24, step in 1u32..30,
        ) {
            let hi = (lo + span).min(23);
            for cron in [
                format!("H H H({lo}-{hi}) * * *"),
                format!("0 H/{step} H({lo}-{hi})/{} * * *", step.min(12)),
                "0 H H H H H".to_string(),
            ] {
                let expanded = expand(&cron, &key).unwrap();
                let fields: Vec<&str> = expanded.split(' ').collect();
                if let Ok(hour) = fields[2].parse::<u32>() {
                    if cron.contains(&format!("H({lo}-{hi}) ")) {
                        prop_assert!((lo..=hi).contains(&hour), "{expanded}");
                    }
                }
                prop_assert!(parse_cron(&expanded, chrono_tz::UTC).is_ok(), "{cron} -> {expanded}");
            }
        }
    }
}
