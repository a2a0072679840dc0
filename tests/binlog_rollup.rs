//! The binlog archive over months, on Garage: finished days rolled up so a
//! reader costs a request per day, not per segment; the window and every
//! PITR plan the same as from the segments themselves; prune deleting
//! whole and partial days and finishing what an interrupted prune left.

mod common;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use common::*;
use futures::stream::{self, StreamExt};
use wpdr::binlog::gtid::{Gtid, GtidPos};
use wpdr::binlog::replay::{plan, Point};
use wpdr::binlog::rollup::{self, ScanCache};
use wpdr::binlog::segment::{data_key, index_key, SegmentIndex};
use wpdr::binlog::window;
use wpdr::catalog::manifest::Manifest;
use wpdr::catalog::SetSummary;
use wpdr::store::{requests, Store};

/// Segments as the archiver writes them: `per_day` a day, each holding 3
/// transactions after the one before (the first after `seq`), and
/// `gap_after` segments skipping 5 transactions (the chain breaks there).
async fn generate(
    store: &Store,
    prefix: &str,
    days: &[NaiveDate],
    per_day: usize,
    gap_after: Option<usize>,
    mut seq: u64,
) -> Vec<SegmentIndex> {
    let mut out = Vec::new();
    for day in days {
        let midnight = day.and_hms_opt(0, 0, 0).unwrap().and_utc();
        for i in 0..per_day {
            if gap_after == Some(out.len()) {
                seq += 5;
            }
            let closed = midnight + Duration::seconds(60 + (i as i64) * (80_000 / per_day as i64));
            let g = |s| Gtid {
                domain: 0,
                server: 1,
                seq: s,
            };
            out.push(SegmentIndex {
                format: 1,
                name: format!("{}-0-1-{}", closed.format("%Y%m%dT%H%M%S%3fZ"), seq + 1),
                server: "db:3306".into(),
                start: GtidPos::parse(&format!("0-1-{seq}")).unwrap(),
                end: GtidPos::parse(&format!("0-1-{}", seq + 3)).unwrap(),
                first_gtid: g(seq + 1),
                last_gtid: g(seq + 3),
                transactions: 3,
                first_commit: closed - Duration::seconds(30),
                last_commit: closed - Duration::seconds(10),
                covered_until: closed - Duration::seconds(5),
                raw_bytes: 300,
                stored_bytes: 1,
                sha256: String::new(),
                closed_at: closed,
            });
            seq += 3;
        }
    }
    stream::iter(out.clone())
        .map(|s| async move {
            store
                .put_bytes(&data_key(prefix, &s.name), vec![b'x'].into())
                .await
                .unwrap();
            store
                .put_bytes(
                    &index_key(prefix, &s.name),
                    serde_json::to_vec(&s).unwrap().into(),
                )
                .await
                .unwrap();
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    out
}

/// A set whose snapshot at `at` holds every transaction up to `pos`.
fn set_at(id: &str, at: DateTime<Utc>, pos: &GtidPos) -> SetSummary {
    let m: Manifest = serde_json::from_value(serde_json::json!({
        "format_version": 1, "set_id": id, "site": "testsite", "schedule": "manual",
        "started_at": at, "finished_at": at, "wpdr_version": "test", "artifacts": [],
        "database": {
            "server_version": "10.11", "database": "wp", "source": "db:3306",
            "default_charset": "", "default_collation": "",
            "consistency": {"method": "single-connection", "connections": 1, "commits_blocked_ms": 0.0},
            "binlog": null, "gtid_binlog_pos": pos.to_string(), "max_statement_bytes": 0,
            "tables": [], "objects": [], "raw_bytes": 0, "snapshot_at": at
        }
    }))
    .unwrap();
    SetSummary::from(&m)
}

fn days_back(from: i64, to: i64) -> Vec<NaiveDate> {
    let today = Utc::now().date_naive();
    (to..=from)
        .rev()
        .map(|n| today - Duration::days(n))
        .collect()
}

/// A store on Garage under a fresh site prefix (the directory holds its config).
async fn site_store() -> (tempfile::TempDir, Store, String) {
    let svc = Services::get();
    let dir = tempfile::tempdir().unwrap();
    let (cfg, store) = svc
        .open_store(&svc.s3_config(dir.path(), "unused", ""))
        .await;
    let prefix = cfg.site_prefix();
    (dir, store, prefix)
}

async fn scan(store: &Store, prefix: &str) -> rollup::Archive {
    rollup::scan(store, prefix, &mut ScanCache::default())
        .await
        .unwrap()
}

/// Prunes (for real) with one set at `floor`'s end, no grace for orphans.
async fn prune_to(
    store: &Store,
    prefix: &str,
    floor: &SegmentIndex,
    dry_run: bool,
) -> wpdr::binlog::prune::BinlogPruneReport {
    let sets = vec![set_at("s", floor.closed_at, &floor.end)];
    wpdr::binlog::prune::prune(store, prefix, &sets, Duration::zero(), None, dry_run)
        .await
        .unwrap()
}

async fn keys(store: &Store, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolled_up_archive_reads_a_summary_per_day_and_answers_the_same() {
    let (_dir, store, prefix) = site_store().await;
    // 30 finished days of 60 segments (a gap on day 12), and today's 40.
    let mut segments = generate(
        &store,
        &prefix,
        &days_back(32, 3),
        60,
        Some(12 * 60 + 7),
        100,
    )
    .await;
    // Today's chain continues the last day's.
    let last = segments.last().unwrap().last_gtid.seq;
    segments.extend(generate(&store, &prefix, &days_back(0, 0), 40, None, last).await);
    let set_day = segments[15 * 60].clone();
    let sets = vec![
        set_at("newer", set_day.closed_at, &set_day.end),
        set_at("older", segments[100].closed_at, &segments[100].end),
    ];
    let target = segments[20 * 60 + 13].last_commit + Duration::seconds(1);
    let before = window::load_for(&store, &prefix, &sets).await.unwrap();
    let plan_before = plan(&store, &prefix, &sets, None, &Point::Time(target))
        .await
        .unwrap();
    assert_eq!(
        before.runs.len(),
        2,
        "the gap splits the archive: {:?}",
        before.runs
    );
    assert_eq!(plan_before.set_id, "newer");

    let report = rollup::roll_up(&store, &prefix, Utc::now(), None)
        .await
        .unwrap();
    assert_eq!(
        (report.days, report.segments, report.orphans),
        (30, 1800, 0)
    );
    assert_eq!(
        rollup::roll_up(&store, &prefix, Utc::now(), None)
            .await
            .unwrap()
            .days,
        0,
        "a second roll-up finds nothing to do"
    );

    // The same window and the same plan, for a request per day.
    let was = requests::counts();
    let after = window::load_for(&store, &prefix, &sets).await.unwrap();
    let cost = requests::counts().since(was);
    assert_eq!(after.runs, before.runs);
    assert_eq!(after.ranges, before.ranges);
    assert!(
        cost.get <= 30 + 40 + 2 && cost.list <= 4,
        "30 summaries, 40 live indexes, head and gaps; not 1,840 indexes: {cost:?}"
    );
    let was = requests::counts();
    let plan_after = plan(&store, &prefix, &sets, None, &Point::Time(target))
        .await
        .unwrap();
    let cost = requests::counts().since(was);
    assert_eq!(plan_after.segments, plan_before.segments);
    assert!(!plan_after.segments.is_empty());
    assert!(
        cost.get <= 30 + 40 + 2 + 19,
        "the details of the days from the set's on: {cost:?}"
    );

    // A daemon's scans read what is new only; it holds a summary per day.
    let mut cache = ScanCache::default();
    window::load_cached(&store, &prefix, &sets, &mut cache)
        .await
        .unwrap();
    assert_eq!(cache.held(), (30, 40));
    let was = requests::counts();
    let again = window::load_cached(&store, &prefix, &sets, &mut cache)
        .await
        .unwrap();
    let cost = requests::counts().since(was);
    assert_eq!(again.runs, before.runs);
    assert!(
        cost.get <= 2,
        "only the head and gaps are read again: {cost:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prune_takes_whole_and_partial_days_and_finishes_an_interrupted_one() {
    let (_dir, store, prefix) = site_store().await;
    let days = days_back(12, 3);
    let segments = generate(&store, &prefix, &days, 20, None, 100).await;
    // A data object whose index was never written, on the second day.
    let orphan = data_key(
        &prefix,
        &format!("{}T120000000Z-0-1-9", days[1].format("%Y%m%d")),
    );
    store.put_bytes(&orphan, vec![b'x'].into()).await.unwrap();
    let report = rollup::roll_up(&store, &prefix, Utc::now(), None)
        .await
        .unwrap();
    assert_eq!((report.days, report.orphans), (10, 1));
    // With every day rolled up, an archiver resumes from the newest summary.
    let archive = scan(&store, &prefix).await;
    assert!(archive.live.is_empty());
    assert_eq!(archive.newest().unwrap(), segments.last().unwrap());

    // The oldest set sits in the middle of the sixth day.
    let floor = &segments[5 * 20 + 10];
    let sets = vec![set_at("s", floor.closed_at, &floor.end)];
    let dry = prune_to(&store, &prefix, floor, true).await;
    assert_eq!((dry.segments_deleted, dry.orphans_deleted), (111, 1));
    assert_eq!(
        keys(&store, &prefix).await.len(),
        2 * 200 + 1 + 20,
        "a dry run deletes nothing"
    );
    let done = prune_to(&store, &prefix, floor, false).await;
    assert_eq!(done, dry);
    assert_eq!(done.kept_segments, 200 - 111);
    let left = keys(&store, &format!("{prefix}/binlog/segments/")).await;
    assert_eq!(left.len(), 2 * 89);
    assert!(!left.contains(&orphan));
    for s in &segments[..111] {
        assert!(
            !left.contains(&index_key(&prefix, &s.name)),
            "{} kept",
            s.name
        );
    }
    let archive = scan(&store, &prefix).await;
    assert_eq!(archive.days.len(), 5, "five whole days went");
    assert_eq!(
        (archive.days[0].generation, archive.days[0].segments),
        (1, 9)
    );
    assert_eq!(
        rollup::segments(&store, &prefix, &archive, None)
            .await
            .unwrap(),
        segments[111..].to_vec()
    );
    // A point after the set is still reached through the rewritten day.
    let target = segments[150].last_commit + Duration::seconds(1);
    let p = plan(&store, &prefix, &sets, None, &Point::Time(target))
        .await
        .unwrap();
    assert_eq!(p.segments.first().unwrap(), &segments[111].name);

    // A prune stopped after deleting a day's summary (it goes first) is
    // finished by the next: the day's segments and detail go.
    let seventh = archive.days[1].clone();
    let rollups = format!("{prefix}/binlog/rollups/");
    let summary = format!("{rollups}{}.json", seventh.day.format("%Y%m%d"));
    store.delete(&summary).await.unwrap();
    // And a rewrite that stopped before its summary left a newer detail.
    let stray = format!(
        "{rollups}{}.7.segments.json.zst",
        archive.days[2].day.format("%Y%m%d")
    );
    store.put_bytes(&stray, vec![0u8; 8].into()).await.unwrap();
    prune_to(&store, &prefix, &segments[6 * 20 + 19], false).await;
    let left = keys(&store, &format!("{prefix}/binlog/")).await;
    for s in &segments[111..140] {
        assert!(
            !left.contains(&data_key(&prefix, &s.name)),
            "{} kept",
            s.name
        );
    }
    assert!(!left.contains(&stray));
    assert!(!left
        .iter()
        .any(|k| k.starts_with(&format!("{rollups}{}", seventh.day.format("%Y%m%d")))));
    let archive = scan(&store, &prefix).await;
    assert_eq!(archive.segment_count(), 60);
    assert_eq!(
        rollup::segments(&store, &prefix, &archive, None)
            .await
            .unwrap(),
        segments[140..].to_vec()
    );

    // A set past every segment: all go, and the newest day stays as an
    // empty summary, so no archiver rolls up again what is being deleted.
    let last = prune_to(&store, &prefix, segments.last().unwrap(), false).await;
    assert_eq!((last.segments_deleted, last.kept_segments), (60, 0));
    assert!(keys(&store, &format!("{prefix}/binlog/segments/"))
        .await
        .is_empty());
    let archive = scan(&store, &prefix).await;
    assert_eq!(archive.days.len(), 1);
    assert_eq!(
        (archive.days[0].day, archive.days[0].segments),
        (days[9], 0)
    );
    assert_eq!(
        keys(&store, &rollups).await.len(),
        2,
        "its summary and empty detail"
    );
    assert_eq!(
        rollup::roll_up(&store, &prefix, Utc::now(), None)
            .await
            .unwrap()
            .days,
        0
    );
}

/// Not a test but the measurement behind docs/BENCHMARKS.md (run by
/// bench/archive-scale.sh): WPDR_SCALE_SEGMENTS segments (100,000 by
/// default) over as many days as 300 a day make, rolled up; then the time
/// of a window, of a PITR plan, and the resident memory of a daemon's
/// repeated scans. Prints; asserts only what must hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: bench/archive-scale.sh runs it"]
async fn scale_an_archive_of_many_segments() {
    let n: usize = std::env::var("WPDR_SCALE_SEGMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let (_dir, store, prefix) = site_store().await;
    let per_day = 300;
    let ndays = n.div_ceil(per_day) as i64;
    let t = std::time::Instant::now();
    let segments = generate(
        &store,
        &prefix,
        &days_back(ndays + 2, 3),
        per_day,
        None,
        100,
    )
    .await;
    let last = segments.last().unwrap().last_gtid.seq;
    let mut all = segments;
    all.extend(generate(&store, &prefix, &days_back(0, 0), per_day, None, last).await);
    println!(
        "generated {} segments ({} objects) in {:.1?}",
        all.len(),
        2 * all.len(),
        t.elapsed()
    );
    let set = &all[all.len() / 2];
    let sets = vec![set_at("s", set.closed_at, &set.end)];
    let target = all[all.len() * 3 / 4].last_commit + Duration::seconds(1);

    let timed = |label: &str, t: std::time::Instant, was: requests::Counts| {
        println!(
            "{label}: {:.2?}, requests {:?}",
            t.elapsed(),
            requests::counts().since(was)
        );
    };
    let (t, was) = (std::time::Instant::now(), requests::counts());
    let w = window::load_for(&store, &prefix, &sets).await.unwrap();
    timed("window before roll-up", t, was);
    let (t, was) = (std::time::Instant::now(), requests::counts());
    let r = rollup::roll_up(&store, &prefix, Utc::now(), None)
        .await
        .unwrap();
    timed(&format!("roll-up of {} days", r.days), t, was);
    let (t, was) = (std::time::Instant::now(), requests::counts());
    let w2 = window::load_for(&store, &prefix, &sets).await.unwrap();
    timed("window after roll-up (sets recoverable)", t, was);
    assert_eq!(w.runs, w2.runs);
    let (t, was) = (std::time::Instant::now(), requests::counts());
    let p = plan(&store, &prefix, &sets, None, &Point::Time(target))
        .await
        .unwrap();
    timed(
        &format!("PITR plan of {} segments", p.segments.len()),
        t,
        was,
    );

    let rss = || {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        statm
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 4096
            / (1 << 20)
    };
    let mut cache = ScanCache::default();
    window::load_cached(&store, &prefix, &sets, &mut cache)
        .await
        .unwrap();
    let first = rss();
    for _ in 0..20 {
        window::load_cached(&store, &prefix, &sets, &mut cache)
            .await
            .unwrap();
    }
    println!(
        "daemon scans: RSS {first} MiB after the first, {} MiB after 20 more; cache holds {:?} (days, live segments)",
        rss(),
        cache.held()
    );
    store.delete_prefix(&format!("{prefix}/")).await.unwrap();
}
