//! Retention against a real store: on a synthetic calendar of sets, prune keeps
//! exactly what the policy says, leaves every kept set verifiable, skips a set
//! a restore has pinned, removes interrupted runs only after the grace period,
//! and aborts multipart uploads that killed runs left behind.

mod common;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use common::*;
use wpdr::catalog::{Artifact, Catalog, Manifest, FORMAT_VERSION};

fn id_at(t: DateTime<Utc>, n: u16) -> String {
    format!("{}-{n:04x}", t.format("%Y%m%dT%H%M%SZ"))
}

async fn synthetic_set(catalog: &Catalog<'_>, id: &str, at: DateTime<Utc>) {
    let mut artifacts = Vec::new();
    for name in [
        "db/1-schema-0001-t.sql.zst",
        "db/2-data-0001-00001-t.sql.zst",
    ] {
        let w = catalog
            .store()
            .put_bytes(&catalog.key(id, name), Bytes::from(format!("{id} {name}")))
            .await
            .unwrap();
        artifacts.push(Artifact {
            path: name.into(),
            size: w.size,
            sha256: w.sha256,
        });
    }
    let m = Manifest {
        media: None,
        answers: None,
        format_version: FORMAT_VERSION,
        set_id: id.to_string(),
        site: catalog.site().to_string(),
        schedule: "nightly".into(),
        started_at: at,
        finished_at: at + Duration::minutes(3),
        wpdr_version: "test".into(),
        artifacts,
        database: None,
        cluster: None,
        failed_parts: Vec::new(),
        encryption: None,
        signature: None,
        retained_until: None,
    };
    catalog.commit(&m).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_keeps_exactly_the_policy_and_never_a_referenced_artifact() {
    let svc = Services::get();
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = svc.s3_config(
        dir.path(),
        "unused",
        "retention:\n  keep_last: 2\n  keep_daily: 5\n  keep_weekly: 3\n  keep_monthly: 2\n",
    );
    let (cfg, store) = svc.open_store(&cfg_path).await;
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());

    // 60 nightly sets ending yesterday at 02:00, plus two on the last day.
    let end: DateTime<Utc> = (Utc::now() - Duration::days(1))
        .date_naive()
        .and_hms_opt(2, 0, 0)
        .unwrap()
        .and_utc();
    let mut ids = Vec::new();
    for d in (0..60).rev() {
        let at = end - Duration::days(d);
        let id = id_at(at, d as u16);
        synthetic_set(&catalog, &id, at).await;
        ids.push((id, at));
    }
    for extra in 1..=2 {
        let at = end + Duration::hours(extra * 6);
        let id = id_at(at, 0xf000 + extra as u16);
        synthetic_set(&catalog, &id, at).await;
        ids.push((id, at));
    }
    // What the policy must keep, computed independently of wpdr.
    let mut newest_first = ids.clone();
    newest_first.sort_by_key(|x| std::cmp::Reverse(x.1));
    let mut expect: std::collections::BTreeSet<String> =
        newest_first.iter().take(2).map(|x| x.0.clone()).collect();
    let mut buckets = |key: &dyn Fn(&DateTime<Utc>) -> String, n: usize| {
        let mut seen = Vec::new();
        for (id, t) in &newest_first {
            let k = key(t);
            if seen.len() < n && !seen.contains(&k) {
                seen.push(k);
                expect.insert(id.clone());
            }
        }
    };
    buckets(&|t| t.format("%Y-%m-%d").to_string(), 5);
    buckets(&|t| t.format("%G-W%V").to_string(), 3);
    buckets(&|t| t.format("%Y-%m").to_string(), 2);

    // A restore has pinned one set the policy would drop.
    let doomed = ids
        .iter()
        .find(|(id, _)| !expect.contains(id))
        .unwrap()
        .0
        .clone();
    let pin = catalog.pin(&doomed, "test restore", 1).await.unwrap();

    // An interrupted run from two days ago, and one that may still be running.
    let old_run = id_at(Utc::now() - Duration::days(2), 0xaaaa);
    store
        .put_bytes(
            &catalog.key(&old_run, "db/2-data-0001-00001-t.sql.zst"),
            Bytes::from_static(b"partial"),
        )
        .await
        .unwrap();
    let fresh_run = id_at(Utc::now(), 0xbbbb);
    store
        .put_bytes(
            &catalog.key(&fresh_run, "db/2-data-0001-00001-t.sql.zst"),
            Bytes::from_static(b"partial"),
        )
        .await
        .unwrap();

    // Dry run: reports, deletes nothing.
    let dry = json(&svc.wpdr(&cfg_path, &["--output", "json", "prune", "--dry-run"]));
    let kept: std::collections::BTreeSet<String> = dry["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kept, expect);
    assert_eq!(dry["pinned"], serde_json::json!([doomed]));
    assert_eq!(dry["incomplete_removed"], serde_json::json!([old_run]));
    assert_eq!(
        catalog.summaries().await.unwrap().len(),
        62,
        "a dry run deletes nothing"
    );

    let done = json(&svc.wpdr(&cfg_path, &["--output", "json", "prune"]));
    assert_eq!(
        done["deleted"].as_array().unwrap().len(),
        62 - expect.len() - 1
    );
    let left: std::collections::BTreeSet<String> = catalog
        .summaries()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    let mut expect_left = expect.clone();
    expect_left.insert(doomed.clone());
    assert_eq!(left, expect_left);
    // Every remaining set verifies: no artifact a kept set references was removed.
    for id in &left {
        let m = catalog.load(id).await.unwrap();
        assert!(
            catalog.verify(&m, false, &|_| {}).await.unwrap().ok(),
            "{id}"
        );
    }
    // Deleted sets left nothing behind; the old interrupted run is gone, the fresh one stays.
    for (id, _) in &ids {
        if !left.contains(id) {
            assert!(
                store.list(&catalog.key(id, "")).await.unwrap().is_empty(),
                "{id} left files"
            );
        }
    }
    assert!(store
        .list(&catalog.key(&old_run, ""))
        .await
        .unwrap()
        .is_empty());
    assert!(!store
        .list(&catalog.key(&fresh_run, ""))
        .await
        .unwrap()
        .is_empty());

    // Once the restore is done, the pinned set goes on the next prune.
    pin.release(&catalog).await;
    let again = json(&svc.wpdr(&cfg_path, &["--output", "json", "prune"]));
    assert_eq!(again["deleted"], serde_json::json!([doomed]));

    // Status: the newest set and its age (RPO now), counts, the lock.
    let st = json(&svc.wpdr(&cfg_path, &["--output", "json", "status"]));
    assert_eq!(st["sets"], expect.len());
    assert_eq!(st["newest_set"], newest_first[0].0.as_str());
    let rpo = st["rpo_seconds"].as_i64().unwrap();
    let age = (Utc::now() - newest_first[0].1).num_seconds();
    assert!((rpo - age).abs() <= 5, "rpo {rpo} vs age {age}");
    assert_eq!(st["incomplete_runs"], serde_json::json!([fresh_run]));
    assert!(st["lock"].is_null());
    let text = ok(&svc.wpdr(&cfg_path, &["status"]));
    assert!(
        text.contains(&newest_first[0].0) && text.contains("lock        free"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_aborts_uploads_a_killed_run_left_and_refuses_without_a_policy() {
    let svc = Services::get();
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = svc.s3_config(
        dir.path(),
        "unused",
        "retention:\n  keep_last: 1\n  incomplete_grace_hours: 0\n",
    );
    let (cfg, store) = svc.open_store(&cfg_path).await;
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    // A writer that dies without abort (as under kill -9): its multipart upload stays.
    let mut w = store.writer(&catalog.key(&id_at(Utc::now(), 1), "db/2-data-0001-00001-t.sql.zst"));
    w.write(&vec![7u8; 6 * 1024 * 1024]).await.unwrap();
    std::mem::forget(w);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let done = json(&svc.wpdr(&cfg_path, &["--output", "json", "prune"]));
    assert!(done["uploads_aborted"].as_u64().unwrap() >= 1, "{done}");

    let o = svc
        .wpdr_cmd(&cfg_path, &["prune"])
        .env("WPDR_KEEP_LAST", "0")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("retention"), "{}", stderr(&o));
}
