//! The media library as it was at a point in time.
//!
//! Every mirror run leaves a *generation*: the records of what the offsite
//! mirror held after it, named by the moment its source listing began. Two
//! generations bracket a point T: `before`, the newest listed before T, and
//! `after`, the first listed at or after T. A key's version at T is
//!
//! * `after`'s, when the source wrote that version before T (its
//!   LastModified; T excluded, as a point-in-time database replay stops
//!   before T): it existed at T and still did when `after` listed it;
//! * else `before`'s: it existed when `before` listed it, and was replaced or
//!   deleted after T (the mirror retained that version, where the restore
//!   finds it);
//! * else none: uploaded after T.
//!
//! What no generation can show: a key deleted between `before`'s listing
//! and T still comes back (as the version `before` saw), and a version that
//! lived only between two runs was never mirrored, so `before`'s comes back
//! in its place. So the media of a point is exact to the second for every
//! version a mirror run saw, and to the mirror's schedule for the rest.

use super::plan::Record;
use super::records::RecordReader;
use super::MediaError;
use crate::store::Store;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use tokio::sync::mpsc;

/// Where a site's generations are kept.
pub fn generations_prefix(site_prefix: &str) -> String {
    format!("{site_prefix}/media/generations/")
}

/// Milliseconds: a backup's own mirror run lists within a second of the
/// set's start, and the two must compare in the right order.
const STAMP: &str = "%Y%m%dT%H%M%S%.3fZ";

/// A new generation's key: its listing's start, and a random tag so two
/// runs in one second (a killed run's successor) never share a name.
pub fn generation_key(site_prefix: &str, listed_at: DateTime<Utc>) -> String {
    format!(
        "{}{}-{:04x}.jsonl.zst",
        generations_prefix(site_prefix),
        listed_at.format(STAMP),
        rand::random::<u16>()
    )
}

/// One mirror run's records, and when its source listing began.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    pub key: String,
    pub listed_at: DateTime<Utc>,
}

impl Generation {
    /// From a key under [`generations_prefix`]; `None` for anything else.
    pub fn parse(key: &str) -> Option<Generation> {
        let name = key.rsplit('/').next()?;
        let stamp = name.get(..20)?;
        let at = NaiveDateTime::parse_from_str(stamp, STAMP).ok()?;
        name.ends_with(".jsonl.zst").then(|| Generation {
            key: key.to_string(),
            listed_at: Utc.from_utc_datetime(&at),
        })
    }
}

/// A site's generations, oldest first.
pub async fn list(store: &Store, site_prefix: &str) -> Result<Vec<Generation>, MediaError> {
    let mut gens: Vec<Generation> = store
        .list(&generations_prefix(site_prefix))
        .await?
        .iter()
        .filter_map(|o| Generation::parse(&o.key))
        .collect();
    gens.sort_by(|a, b| a.listed_at.cmp(&b.listed_at).then(a.key.cmp(&b.key)));
    Ok(gens)
}

/// The bracket of `point` among a site's generations.
pub async fn as_of(
    store: &Store,
    site_prefix: &str,
    point: DateTime<Utc>,
) -> Result<AsOf, MediaError> {
    choose(&list(store, site_prefix).await?, point)
}

/// The generations that bracket a point (kept in a restore's journal, so the
/// restore, its checks and a resume all use the same two).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AsOf {
    pub point: DateTime<Utc>,
    pub before: Option<Generation>,
    pub after: Option<Generation>,
}

impl AsOf {
    /// Until when the media is known: the point itself when a generation
    /// listed after it, else the newest listing before it (uploads after
    /// that listing were not mirrored yet).
    pub fn known_until(&self) -> DateTime<Utc> {
        match (&self.after, &self.before) {
            (Some(_), _) => self.point,
            (None, Some(b)) => b.listed_at,
            (None, None) => self.point,
        }
    }
}

/// Picks the bracket of `point` from `gens` (oldest first). A listing
/// before the point is required: without it, versions replaced or deleted
/// since (the ones only an earlier run saw) would be missing without a word
/// — the history before the first kept generation was pruned or never taken.
pub fn choose(gens: &[Generation], point: DateTime<Utc>) -> Result<AsOf, MediaError> {
    let before = gens.iter().rev().find(|g| g.listed_at < point).cloned();
    let after = gens.iter().find(|g| g.listed_at >= point).cloned();
    if before.is_none() {
        return Err(MediaError::NoGeneration {
            point: point.to_rfc3339(),
            first: gens.first().map(|g| g.listed_at.to_rfc3339()),
        });
    }
    Ok(AsOf {
        point,
        before,
        after,
    })
}

/// The rule of the module docs for one key: `after`'s version if written
/// before the point, else `before`'s.
pub fn version_at(before: Option<Record>, after: Option<Record>, point: i64) -> Option<Record> {
    match after {
        Some(a) if a.modified.is_some_and(|m| m < point) => Some(a),
        _ => before,
    }
}

/// Opens the two generations of `as_of` (before anything is spawned, so a
/// missing one fails the restore at once).
pub async fn open(
    store: &Store,
    as_of: &AsOf,
) -> Result<(Option<RecordReader>, Option<RecordReader>), MediaError> {
    Ok((
        open_generation(store, as_of.before.as_ref()).await?,
        open_generation(store, as_of.after.as_ref()).await?,
    ))
}

async fn open_generation(
    store: &Store,
    g: Option<&Generation>,
) -> Result<Option<RecordReader>, MediaError> {
    let Some(g) = g else { return Ok(None) };
    let reader = RecordReader::open(store, &g.key)
        .await?
        .ok_or_else(|| MediaError::Records {
            key: g.key.clone(),
            detail: "the generation was listed but cannot be read".into(),
        })?;
    Ok(Some(reader))
}

/// Streams the media at `point` (Unix seconds) in key order into `tx`, as
/// a set's index streams: the two generations merged by [`version_at`].
pub async fn merge_into(
    mut before: Option<RecordReader>,
    mut after: Option<RecordReader>,
    point: i64,
    tx: mpsc::Sender<Result<Record, MediaError>>,
) {
    let result = async {
        let mut b = next(&mut before).await?;
        let mut a = next(&mut after).await?;
        loop {
            let (take_b, take_a) = match (&b, &a) {
                (None, None) => break,
                (Some(_), None) => (true, false),
                (None, Some(_)) => (false, true),
                (Some(x), Some(y)) => match x.key.as_bytes().cmp(y.key.as_bytes()) {
                    std::cmp::Ordering::Less => (true, false),
                    std::cmp::Ordering::Greater => (false, true),
                    std::cmp::Ordering::Equal => (true, true),
                },
            };
            let bv = if take_b { b.take() } else { None };
            let av = if take_a { a.take() } else { None };
            if let Some(r) = version_at(bv, av, point) {
                if tx.send(Ok(r)).await.is_err() {
                    return Ok(());
                }
            }
            if take_b {
                b = next(&mut before).await?;
            }
            if take_a {
                a = next(&mut after).await?;
            }
        }
        Ok::<(), MediaError>(())
    }
    .await;
    if let Err(e) = result {
        let _ = tx.send(Err(e)).await;
    }
}

async fn next(r: &mut Option<RecordReader>) -> Result<Option<Record>, MediaError> {
    match r {
        Some(r) => r.next().await,
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn gen(s: &str) -> Generation {
        Generation::parse(&generation_key("wpdr/site", at(s))).unwrap()
    }

    #[test]
    fn keys_parse_back_and_foreign_keys_do_not() {
        let g = gen("2026-11-30T08:00:05Z");
        assert_eq!(g.listed_at, at("2026-11-30T08:00:05Z"));
        assert!(g
            .key
            .starts_with("wpdr/site/media/generations/20261130T080005.000Z-"));
        assert_eq!(
            Generation::parse("wpdr/site/media/generations/notes.txt"),
            None
        );
        assert_eq!(
            Generation::parse("wpdr/site/media/generations/20261130T0800"),
            None
        );
    }

    #[test]
    fn the_bracket_is_the_last_listing_before_and_the_first_at_or_after() {
        let gens = [
            gen("2026-11-30T08:00:00Z"),
            gen("2026-11-30T09:00:00Z"),
            gen("2026-11-30T10:00:00Z"),
        ];
        let c = choose(&gens, at("2026-11-30T09:30:00Z")).unwrap();
        assert_eq!(c.before.unwrap().listed_at, at("2026-11-30T09:00:00Z"));
        assert_eq!(c.after.unwrap().listed_at, at("2026-11-30T10:00:00Z"));
        // Exactly at a listing: that listing is the one after.
        let c = choose(&gens, at("2026-11-30T09:00:00Z")).unwrap();
        assert_eq!(c.after.unwrap().listed_at, at("2026-11-30T09:00:00Z"));
        // Past the newest: known until the newest listing only.
        let c = choose(&gens, at("2026-11-30T11:00:00Z")).unwrap();
        assert_eq!(c.after, None);
        assert_eq!(c.known_until(), at("2026-11-30T10:00:00Z"));
        assert!(matches!(
            choose(&[], at("2026-11-30T11:00:00Z")),
            Err(MediaError::NoGeneration { .. })
        ));
        // Before the first listing: refused, not restored with what is missing.
        let e = choose(&gens, at("2026-11-30T07:00:00Z"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("2026-11-30T08:00:00+00:00"), "{e}");
    }

    /// One key's history: versions (etag, written at, deleted at).
    #[derive(Debug, Clone)]
    struct History(Vec<(u64, i64, Option<i64>)>);

    fn live_at(h: &History, t: i64) -> Option<u64> {
        h.0.iter()
            .filter(|(_, w, d)| *w <= t && d.is_none_or(|d| d > t))
            .map(|(e, _, _)| *e)
            .next_back()
    }

    fn record(key: &str, etag: u64, written: i64) -> Record {
        Record {
            key: key.into(),
            size: 1,
            etag: etag.to_string(),
            offsite_etag: String::new(),
            sha256: String::new(),
            offsite_size: None,
            modified: Some(written),
        }
    }

    fn snapshot(hist: &BTreeMap<String, History>, t: i64) -> BTreeMap<String, Record> {
        hist.iter()
            .filter_map(|(k, h)| {
                let e = live_at(h, t)?;
                let w = h.0.iter().find(|(x, _, _)| *x == e).map(|v| v.1)?;
                Some((k.clone(), record(k, e, w)))
            })
            .collect()
    }

    fn histories() -> impl Strategy<Value = BTreeMap<String, History>> {
        // Per key: up to 3 versions, each written at an increasing time and
        // possibly deleted before the next one is written.
        proptest::collection::btree_map(
            "[a-e]{1,2}",
            proptest::collection::vec((1i64..40, proptest::option::of(1i64..40)), 1..4),
            0..12,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(k, steps)| {
                    let mut t = 0;
                    let mut versions = Vec::new();
                    for (i, (gap, del)) in steps.into_iter().enumerate() {
                        t += gap;
                        // The previous version ends when this one is written.
                        if let Some(last) = versions.last_mut() {
                            let (_, _, d): &mut (u64, i64, Option<i64>) = last;
                            *d = Some(d.map_or(t, |d| d.min(t)));
                        }
                        let deleted = del.map(|d| t + d);
                        versions.push((i as u64 + 1, t, deleted));
                        if let Some(d) = deleted {
                            t = d;
                        }
                    }
                    (k, History(versions))
                })
                .collect()
        })
    }

    proptest! {
        /// Against any history: every version a listing saw is exact to the
        /// second; the only error is a key whose state at the point no
        /// listing saw (deleted, or replaced by a version replaced again
        /// before the next listing), which comes back as `before` saw it.
        #[test]
        fn the_merge_gives_each_key_its_version_at_the_point(
            hist in histories(),
            listings in proptest::collection::btree_set(0i64..200, 1..4),
            point in 0i64..200,
        ) {
            let listings: Vec<i64> = listings.into_iter().collect();
            let before_t = listings.iter().rev().find(|&&l| l < point).copied();
            let after_t = listings.iter().find(|&&l| l >= point).copied();
            let before = before_t.map(|t| snapshot(&hist, t)).unwrap_or_default();
            let after = after_t.map(|t| snapshot(&hist, t)).unwrap_or_default();
            let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
            for key in keys {
                let got = version_at(before.get(key).cloned(), after.get(key).cloned(), point)
                    .map(|r| r.etag.parse::<u64>().unwrap());
                // Before the point: what was live in its previous second.
                let truth = live_at(&hist[key], point - 1);
                if after_t.is_none() {
                    // Nothing listed after the point: as of the last listing.
                    prop_assert_eq!(got, before_t.and_then(|t| live_at(&hist[key], t)));
                } else if got != truth {
                    let seen = |t: Option<i64>| t.and_then(|t| live_at(&hist[key], t));
                    prop_assert!(truth.is_none() || (truth != seen(before_t) && truth != seen(after_t)),
                        "{key}: {got:?} instead of {truth:?}, which a listing saw");
                    prop_assert_eq!(got, seen(before_t));
                }
            }
        }
    }
}
