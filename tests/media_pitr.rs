//! The media library as it was at a point in time: `restore media
//! --to-time T` brings back, from the mirror's generations, every upload
//! written before T as the version it was then, and nothing written after;
//! prune keeps the generations a point can still use and no more.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

async fn small_site_db(svc: &Services, stem: &str) -> String {
    svc.database_with(
        stem,
        &["CREATE TABLE wp_options (option_id INT PRIMARY KEY)"],
    )
    .await
}

fn sync(svc: &Services, cfg: &std::path::Path) -> serde_json::Value {
    // A test bucket of three keys: one deletion is a third of it.
    json(&svc.wpdr(
        cfg,
        &["--output", "json", "media", "sync", "--confirm-deletes"],
    ))
}

/// Whole seconds apart from what came before and what comes after: a
/// point the source's LastModified (whole seconds) cannot straddle.
async fn point() -> String {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    t
}

async fn contents(s3: &aws_sdk_s3::Client, bucket: &str) -> BTreeMap<String, Vec<u8>> {
    bucket_contents(s3, bucket)
        .await
        .into_iter()
        .map(|(k, (body, ..))| (k, body))
        .collect()
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (format!("wp-content/uploads/{k}"), v.as_bytes().to_vec()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_comes_back_as_it_was_at_the_point_and_prune_keeps_what_points_need() {
    let svc = Services::get();
    let s3 = svc.s3();
    let source = svc.fresh_bucket("ptsrc");
    let offsite = svc.fresh_bucket("ptoff");
    let db = small_site_db(&svc, "mpoint").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(
        dir.path(),
        &db,
        &format!(
            "{}retention:\n  keep_last: 1\n",
            svc.media_yaml(&source, &offsite, "")
        ),
    );
    let up = |k: &str| format!("wp-content/uploads/{k}");
    let del = |key: String| {
        let s3 = s3.clone();
        let source = source.clone();
        async move {
            s3.delete_object()
                .bucket(&source)
                .key(key)
                .send()
                .await
                .unwrap();
        }
    };

    for (k, v) in [("a.jpg", "a1"), ("b.jpg", "b1"), ("e.jpg", "e1")] {
        put_object(&s3, &source, &up(k), v.as_bytes().to_vec()).await;
    }
    assert_eq!(n(&sync(&svc, &cfg), "copied"), 3);
    let early = point().await;
    del(up("e.jpg")).await;
    sync(&svc, &cfg);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put_object(&s3, &source, &up("c.jpg"), b"c1".to_vec()).await;
    put_object(&s3, &source, &up("a.jpg"), b"a2".to_vec()).await;
    sync(&svc, &cfg);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Uploaded before T, first listed after it.
    put_object(&s3, &source, &up("f.jpg"), b"f1".to_vec()).await;
    let t = point().await;
    put_object(&s3, &source, &up("d.jpg"), b"d1".to_vec()).await;
    put_object(&s3, &source, &up("b.jpg"), b"b2".to_vec()).await;
    del(up("c.jpg")).await;
    let last = sync(&svc, &cfg);
    assert!(last["generation"].as_str().is_some(), "{last}");
    // `sets recoverable` says which mirror runs a media point can use.
    let window = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "recoverable"]));
    assert_eq!(window["media"]["runs"], 4, "{window}");
    let text = stdout(&svc.wpdr(&cfg, &["sets", "recoverable"]));
    assert!(text.contains("media: 4 mirror run(s)"), "{text}");

    let restore = |at: &str, bucket: &str| {
        svc.wpdr(
            &cfg,
            &[
                "--output",
                "json",
                "restore",
                "media",
                "--to-time",
                at,
                "--target-bucket",
                bucket,
            ],
        )
    };
    // At T: what was uploaded or replaced before it, as it was then (f
    // only a run after T listed); c (deleted after T) and b's first version
    // (replaced after T) come from the retained area; d and b's second
    // version (after T) are not there; e (deleted before T, and a run saw it
    // gone) is not.
    let target = format!("pt-at-{:08x}", rand::random::<u32>());
    let r = json(&restore(&t, &target));
    assert_eq!(r["failed_total"], 0, "{r}");
    assert_eq!(
        r["as_of"]["known_until"].as_str().map(|s| &s[..19]),
        Some(&t[..19]),
        "{r}"
    );
    assert_eq!(
        contents(&s3, &target).await,
        expect(&[
            ("a.jpg", "a2"),
            ("b.jpg", "b1"),
            ("c.jpg", "c1"),
            ("f.jpg", "f1")
        ])
    );
    // Earlier: the first versions, e included (a run listed it before it went).
    let target = format!("pt-early-{:08x}", rand::random::<u32>());
    let r = json(&restore(&early, &target));
    assert_eq!(r["failed_total"], 0, "{r}");
    assert_eq!(
        contents(&s3, &target).await,
        expect(&[("a.jpg", "a1"), ("b.jpg", "b1"), ("e.jpg", "e1")])
    );
    // Now (no run since): the newest listing, and the report says so.
    let now = point().await;
    let target = format!("pt-now-{:08x}", rand::random::<u32>());
    let r = json(&restore(&now, &target));
    assert_eq!(r["as_of"]["listed_after"], serde_json::Value::Null, "{r}");
    assert_eq!(
        contents(&s3, &target).await,
        expect(&[
            ("a.jpg", "a2"),
            ("b.jpg", "b2"),
            ("d.jpg", "d1"),
            ("f.jpg", "f1")
        ])
    );
    // Before the first run: refused by name, nothing created.
    let target = format!("pt-none-{:08x}", rand::random::<u32>());
    let out = restore("2020-01-01T00:00:00Z", &target);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("no mirror run listed the media before"),
        "{}",
        stderr(&out)
    );
    assert!(s3.head_bucket().bucket(&target).send().await.is_err());

    // Prune, with no set left to restore from: only the newest generation
    // stays, the retained versions it does not name go, and a point before
    // it is refused rather than restored with versions missing.
    let pruned = json(&svc.wpdr(&cfg, &["--output", "json", "prune"]));
    let media = &pruned["media_retained"];
    assert_eq!(media["generations_deleted"], 3, "{pruned}");
    assert_eq!(media["generations_kept"], 1, "{pruned}");
    let out = restore(&t, &format!("pt-gone-{:08x}", rand::random::<u32>()));
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    let r = json(&restore(
        &point().await,
        &format!("pt-after-{:08x}", rand::random::<u32>()),
    ));
    assert_eq!(r["objects"], 4, "{r}");
}

fn n(v: &serde_json::Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}
