//! The media mirror, the per-set index and media restore against Garage
//! (standing in for both MinIO and the offsite S3), through the `wpdr` binary.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Keys WordPress and its users produce that S3 tools get wrong.
fn awkward_keys() -> Vec<String> {
    vec![
        "wp-content/uploads/2024/05/a photo.jpg".into(),
        "wp-content/uploads/2024/05/ünïcødé-日本.png".into(),
        "wp-content/uploads/2024/05/c++ & 100%.pdf".into(),
        "wp-content/uploads/2024/05/empty.txt".into(),
        format!("wp-content/uploads/2024/05/{}.jpg", "l".repeat(900)),
    ]
}

fn body_for(key: &str, version: u8) -> Vec<u8> {
    if key.ends_with("empty.txt") {
        return Vec::new();
    }
    let mut b = format!("{key} v{version} ").into_bytes();
    b.extend((0..(key.len() % 50) * 1000).map(|i| (i % 251) as u8));
    b
}

/// `n` uploads named `wp-content/uploads/<prefix>NNNN.jpg`, version 1 of each.
fn uploads(prefix: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let k = format!("wp-content/uploads/{prefix}{i:04}.jpg");
            let body = body_for(&k, 1);
            (k, body)
        })
        .collect()
}

/// A database with one table: for tests where only the media matter.
async fn small_site_db(svc: &Services, stem: &str) -> String {
    svc.database_with(
        stem,
        &[
            "CREATE TABLE wp_options (option_id INT PRIMARY KEY, option_value TEXT)",
            "INSERT INTO wp_options VALUES (1, 'x')",
        ],
    )
    .await
}

fn sync(svc: &Services, cfg: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["--output", "json", "media", "sync"];
    args.extend_from_slice(extra);
    let out = svc.wpdr(cfg, &args);
    let code = out.status.code().unwrap_or(-1);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("media sync printed no JSON: {}", stderr(&out)));
    (code, v)
}

fn n(v: &serde_json::Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

/// Source contents minus the retained area, for comparing the mirror with its source.
fn without_retained<T: Clone>(m: &BTreeMap<String, T>) -> BTreeMap<String, T> {
    m.iter()
        .filter(|(k, _)| !k.starts_with(".wpdr-retained/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mirror_keeps_keys_headers_and_every_overwritten_or_deleted_version() {
    let svc = Services::get();
    let s3 = svc.s3();
    let source = svc.fresh_bucket("msrc");
    let offsite = svc.fresh_bucket("moff");
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(
        dir.path(),
        "unused",
        &svc.media_yaml(
            &source,
            &offsite,
            "  max_deletes: 2\n  max_delete_percent: 50\n",
        ),
    );
    let mut keys = awkward_keys();
    // Larger than the 5 MiB part size: goes through a multipart upload.
    keys.push("wp-content/uploads/2024/05/video.mp4".into());
    for k in &keys {
        let body = if k.ends_with(".mp4") {
            (0..12 << 20).map(|i| (i % 253) as u8).collect()
        } else {
            body_for(k, 1)
        };
        put_object(&s3, &source, k, body).await;
    }

    let (code, dry) = sync(&svc, &cfg, &["--dry-run"]);
    assert_eq!(code, 0, "{dry}");
    assert_eq!(n(&dry, "copied"), keys.len() as u64);
    assert!(
        bucket_contents(&s3, &offsite).await.is_empty(),
        "a dry run wrote"
    );

    let (code, first) = sync(&svc, &cfg, &[]);
    assert_eq!(code, 0, "{first}");
    assert_eq!(n(&first, "copied"), keys.len() as u64);
    let src = bucket_contents(&s3, &source).await;
    let off = bucket_contents(&s3, &offsite).await;
    assert_eq!(src.len(), off.len());
    for (k, (body, ct, cc, meta)) in &src {
        let (obody, oct, occ, ometa) = &off[k];
        assert!(obody == body, "{k}: content differs");
        assert_eq!((oct, occ), (ct, cc), "{k}: headers differ");
        assert_eq!(
            ometa.get("origin"),
            meta.get("origin"),
            "{k}: metadata lost"
        );
        assert!(ometa.contains_key("wpdr-source-etag"), "{k}: {ometa:?}");
    }

    // An unreachable source stops the run before anything offsite changes.
    let dead_dir = tempfile::tempdir().unwrap();
    let dead = svc.s3_config(
        dead_dir.path(),
        "unused",
        &svc.media_yaml(&source, &offsite, "").replacen(
            &svc.var("WPDR_TEST_S3_ENDPOINT"),
            &format!("http://127.0.0.1:{}", free_port()),
            1,
        ),
    );
    let before = bucket_contents(&s3, &offsite).await;
    let out = svc.wpdr(&dead, &["media", "sync", "--confirm-deletes"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
    assert_eq!(bucket_contents(&s3, &offsite).await.len(), before.len());

    // A lost state file (another store prefix) costs no copy: every offsite
    // object, the multipart one included, is recognised from its metadata.
    let lost_dir = tempfile::tempdir().unwrap();
    let lost = svc.s3_config(
        lost_dir.path(),
        "unused",
        &svc.media_yaml(&source, &offsite, ""),
    );
    let (code, adopted) = sync(&svc, &lost, &[]);
    assert_eq!(code, 0, "{adopted}");
    assert_eq!(
        (
            n(&adopted, "adopted"),
            n(&adopted, "copied"),
            n(&adopted, "retained")
        ),
        (keys.len() as u64, 0, 0),
        "{adopted}"
    );

    // Nothing changed: nothing copied.
    let (_, again) = sync(&svc, &cfg, &[]);
    assert_eq!(
        (n(&again, "copied"), n(&again, "unchanged")),
        (0, keys.len() as u64),
        "{again}"
    );

    // Overwrite one upload and delete another at the source.
    let changed = &keys[0];
    let deleted = &keys[3];
    put_object(&s3, &source, changed, body_for(changed, 2)).await;
    s3.delete_object()
        .bucket(&source)
        .key(deleted)
        .send()
        .await
        .unwrap();
    let (code, third) = sync(&svc, &cfg, &[]);
    assert_eq!(code, 0, "{third}");
    assert_eq!(
        (
            n(&third, "copied"),
            n(&third, "retained"),
            n(&third, "deleted")
        ),
        (1, 2, 1),
        "{third}"
    );
    let off = bucket_contents(&s3, &offsite).await;
    assert_eq!(off[changed].0, body_for(changed, 2));
    assert!(!off.contains_key(deleted));
    let retained: Vec<_> = off
        .iter()
        .filter(|(k, _)| k.starts_with(".wpdr-retained/"))
        .collect();
    assert_eq!(retained.len(), 2, "{:?}", off.keys().collect::<Vec<_>>());
    assert!(retained
        .iter()
        .any(|(k, v)| k.ends_with(changed.as_str()) && v.0 == body_for(changed, 1)));
    assert!(retained
        .iter()
        .any(|(k, v)| k.ends_with(deleted.as_str()) && v.0 == body_for(deleted, 1)));
    assert_eq!(
        without_retained(&off).keys().collect::<Vec<_>>(),
        bucket_contents(&s3, &source)
            .await
            .keys()
            .collect::<Vec<_>>()
    );

    // Deleting more than the rails allow stops the deletions, loudly.
    for k in &keys[1..3] {
        s3.delete_object()
            .bucket(&source)
            .key(k)
            .send()
            .await
            .unwrap();
    }
    s3.delete_object()
        .bucket(&source)
        .key(&keys[4])
        .send()
        .await
        .unwrap();
    let (code, refused) = sync(&svc, &cfg, &[]);
    assert_eq!(code, 14, "{refused}");
    assert!(refused["deletes_refused"]
        .as_str()
        .unwrap()
        .contains("media.max_deletes"));
    assert_eq!(n(&refused, "deleted"), 0);
    let (code, confirmed) = sync(&svc, &cfg, &["--confirm-deletes"]);
    assert_eq!(code, 0, "{confirmed}");
    assert_eq!(n(&confirmed, "deleted"), 3);

    // An empty source never empties the mirror, even when confirmed.
    for k in bucket_contents(&s3, &source).await.keys() {
        s3.delete_object()
            .bucket(&source)
            .key(k)
            .send()
            .await
            .unwrap();
    }
    let before = bucket_contents(&s3, &offsite).await.len();
    let (code, empty) = sync(&svc, &cfg, &["--confirm-deletes"]);
    assert_eq!(code, 14, "{empty}");
    assert!(empty["deletes_refused"]
        .as_str()
        .unwrap()
        .contains("listed no objects"));
    assert_eq!(bucket_contents(&s3, &offsite).await.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sets_index_their_media_and_restore_brings_back_each_sets_versions() {
    let svc = Services::get();
    let s3 = svc.s3();
    let source = svc.fresh_bucket("isrc");
    let offsite = svc.fresh_bucket("ioff");
    let db = svc
        .database_with(
            "media",
            &[
                "CREATE TABLE wp_postmeta (meta_id BIGINT AUTO_INCREMENT PRIMARY KEY, post_id BIGINT, meta_key VARCHAR(255), meta_value LONGTEXT)",
                "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (10, '_wp_attached_file', '2024/05/a photo.jpg'), (11, '_wp_attached_file', '2024/05/gone.jpg'), (10, '_wp_attachment_metadata', 'a:2:{s:4:\"file\";s:19:\"2024/05/a photo.jpg\";s:5:\"sizes\";a:1:{s:9:\"thumbnail\";a:1:{s:4:\"file\";s:19:\"a photo-150x150.jpg\";}}}')",
            ],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(dir.path(), &db, &svc.media_yaml(&source, &offsite, ""));
    let photo = "wp-content/uploads/2024/05/a photo.jpg".to_string();
    let mut keys = awkward_keys();
    // Over 100 MiB: streamed in parts both ways.
    let big = "wp-content/uploads/2024/05/original.tiff".to_string();
    keys.push(big.clone());
    let big_body: Vec<u8> = (0..(101usize << 20)).map(|i| (i * 7 % 256) as u8).collect();
    for k in &keys {
        let body = if k == &big {
            big_body.clone()
        } else {
            body_for(k, 1)
        };
        put_object(&s3, &source, k, body).await;
    }
    // Enough small files that a restore can be killed half way.
    put_objects(&s3, &source, uploads("2023/01/thumb-", 300)).await;
    let set1 = svc.backup(&cfg);
    let show = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "show", &set1]));
    let media = &show["media"];
    assert_eq!(n(media, "objects"), keys.len() as u64 + 300, "{media}");
    // The database names two uploads the bucket lacks: the thumbnail and gone.jpg.
    assert_eq!(n(media, "missing_total"), 2, "{media}");
    let missing: Vec<&str> = media["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert!(missing.contains(&"wp-content/uploads/2024/05/gone.jpg"));
    assert!(missing.contains(&"wp-content/uploads/2024/05/a photo-150x150.jpg"));
    let text = stdout(&svc.wpdr(&cfg, &["sets", "show", &set1]));
    assert!(text.contains("MISSING MEDIA: 2"), "{text}");

    // The source changes after set 1: an overwrite and a delete.
    put_object(&s3, &source, &photo, body_for(&photo, 2)).await;
    s3.delete_object()
        .bucket(&source)
        .key(&keys[1])
        .send()
        .await
        .unwrap();
    let set2 = svc.backup(&cfg);

    // Restoring set 1 brings the versions of set 1, from the retained area.
    let target1 = format!("restored-{:08x}", rand::random::<u32>());
    let mut restore = svc
        .wpdr_cmd(
            &cfg,
            &[
                "--output",
                "json",
                "restore",
                "media",
                &set1,
                "--target-bucket",
                &target1,
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it part way (once the target exists and holds something).
    wait_for_objects(&s3, &target1, 20).await;
    let _ = restore.kill();
    let _ = restore.wait();
    let out = svc.wpdr(
        &cfg,
        &[
            "--output",
            "json",
            "restore",
            "media",
            &set1,
            "--target-bucket",
            &target1,
            "--deep-verify",
        ],
    );
    let r = json(&out);
    assert!(out.status.success(), "{r}");
    assert!(
        n(&r, "already_present") > 0,
        "the rerun copied everything again: {r}"
    );
    assert_eq!(n(&r, "objects"), keys.len() as u64 + 300);
    assert!(r["deep_verified"].as_bool().unwrap());
    assert!(n(&r, "from_retained") >= 1, "{r}");
    let restored = bucket_contents(&s3, &target1).await;
    assert_eq!(restored.len(), keys.len() + 300);
    assert_eq!(restored[&photo].0, body_for(&photo, 1), "set 1's version");
    assert_eq!(
        restored[&keys[1]].0,
        body_for(&keys[1], 1),
        "deleted since set 1"
    );
    assert!(restored[&big].0 == big_body, "the 101 MiB object differs");
    assert_eq!(restored[&photo].1.as_deref(), Some("image/jpeg"));
    assert_eq!(
        restored[&photo].3.get("origin").map(String::as_str),
        Some("wordpress")
    );

    // Set 2 holds the new version and not the deleted key.
    let target2 = format!("restored-{:08x}", rand::random::<u32>());
    let out = svc.wpdr(
        &cfg,
        &["restore", "media", &set2, "--target-bucket", &target2],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = bucket_contents(&s3, &target2).await;
    assert_eq!(restored[&photo].0, body_for(&photo, 2));
    assert!(!restored.contains_key(&keys[1]));

    // An object removed from the offsite mirror behind wpdr's back fails the restore, by name.
    let target3 = format!("restored-{:08x}", rand::random::<u32>());
    s3.delete_object()
        .bucket(&offsite)
        .key(&keys[2])
        .send()
        .await
        .unwrap();
    let out = svc.wpdr(
        &cfg,
        &["restore", "media", &set2, "--target-bucket", &target3],
    );
    assert_eq!(out.status.code(), Some(14), "{}", stdout(&out));
    assert!(stdout(&out).contains("FAILED"), "{}", stdout(&out));
    assert!(stdout(&out).contains("c++ & 100%.pdf"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_mirror_leaves_a_consistent_mirror_and_the_rerun_finishes() {
    let svc = Services::get();
    let s3 = svc.s3();
    let source = svc.fresh_bucket("ksrc");
    let offsite = svc.fresh_bucket("koff");
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(
        dir.path(),
        "unused",
        &svc.media_yaml(&source, &offsite, "  concurrency: 4\n"),
    );
    put_objects(&s3, &source, uploads("2022/", 400)).await;
    let mut child = svc
        .wpdr_cmd(&cfg, &["media", "sync"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_objects(&s3, &offsite, 30).await;
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let src = bucket_contents(&s3, &source).await;
    let off = bucket_contents(&s3, &offsite).await;
    assert!(
        off.len() < src.len(),
        "the kill came too late to test anything"
    );
    for (k, v) in &off {
        assert!(
            src[k].0 == v.0,
            "{k}: a partial or wrong object is visible offsite"
        );
    }
    // The rerun recognises what the killed run copied and copies only the rest.
    let (code, rerun) = sync(&svc, &cfg, &[]);
    assert_eq!(code, 0, "{rerun}");
    assert_eq!(n(&rerun, "adopted"), off.len() as u64, "{rerun}");
    assert_eq!(n(&rerun, "copied"), (src.len() - off.len()) as u64);
    assert_eq!(n(&rerun, "retained"), 0);
    let off = bucket_contents(&s3, &offsite).await;
    assert_eq!(
        off.keys().collect::<Vec<_>>(),
        src.keys().collect::<Vec<_>>()
    );
    let (_, last) = sync(&svc, &cfg, &[]);
    assert_eq!(n(&last, "unchanged"), src.len() as u64, "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_killed_during_its_media_step_leaves_no_set() {
    let svc = Services::get();
    let s3 = svc.s3();
    let source = svc.fresh_bucket("bsrc");
    let offsite = svc.fresh_bucket("boff");
    let db = small_site_db(&svc, "mkill").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(
        dir.path(),
        &db,
        &svc.media_yaml(&source, &offsite, "  concurrency: 2\n"),
    );
    put_objects(&s3, &source, uploads("2020/", 300)).await;
    let mut child = svc
        .wpdr_cmd(&cfg, &["backup"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_objects(&s3, &offsite, 20).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup finished before the kill"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let sets = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "list"]));
    assert_eq!(sets.as_array().map(Vec::len), Some(0), "{sets}");
    // The next backup completes and indexes every object.
    let set = svc.backup(&cfg);
    let show = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "show", &set]));
    assert_eq!(show["media"]["objects"].as_u64(), Some(300), "{show}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prune_removes_retained_versions_only_when_no_set_refers_to_them() {
    let svc = Services::get();
    let s3 = svc.s3();
    let source = svc.fresh_bucket("psrc");
    let offsite = svc.fresh_bucket("poff");
    let db = small_site_db(&svc, "mprune").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(dir.path(), &db, &svc.media_yaml(&source, &offsite, ""));
    let key = "wp-content/uploads/2024/01/header.jpg";
    put_object(
        &s3,
        &source,
        "wp-content/uploads/2024/01/other.jpg",
        b"other".to_vec(),
    )
    .await;
    let mut sets = Vec::new();
    for v in 1..=3u8 {
        put_object(&s3, &source, key, body_for(key, v)).await;
        sets.push(svc.backup(&cfg));
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    let retained = |m: &BTreeMap<String, TestObject>| {
        m.iter()
            .filter(|(k, _)| k.starts_with(".wpdr-retained/"))
            .map(|(_, v)| v.0.clone())
            .collect::<Vec<_>>()
    };
    let off = bucket_contents(&s3, &offsite).await;
    let mut kept = retained(&off);
    kept.sort();
    let mut want = vec![body_for(key, 1), body_for(key, 2)];
    want.sort();
    assert_eq!(kept, want, "versions 1 and 2 are retained");

    let prune = |keep: &str, dry: bool| {
        let mut args = vec!["--output", "json", "prune"];
        if dry {
            args.push("--dry-run");
        }
        let out = svc
            .wpdr_cmd(&cfg, &args)
            .env("WPDR_KEEP_LAST", keep)
            .output()
            .unwrap();
        json(&out)
    };
    // Keep the two newest sets: set 1 goes, but version 1 stays: the mirror
    // run of set 1 is the last listing before set 2, which a point-in-time
    // restore just after set 2 needs (its generation names version 1).
    let dry = prune("2", true);
    assert_eq!(dry["media_retained"]["deleted"].as_u64(), Some(0), "{dry}");
    let r = prune("2", false);
    assert_eq!(r["deleted"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(
        (
            r["media_retained"]["deleted"].as_u64(),
            r["media_retained"]["referenced"].as_u64(),
            r["media_retained"]["generations_kept"].as_u64(),
        ),
        (Some(0), Some(2), Some(3)),
        "{r}"
    );
    // Keep one: set 2 goes, and with it set 1's generation and version 1
    // only (set 2's run is now the listing before the oldest set).
    let dry = prune("1", true);
    assert_eq!(dry["media_retained"]["deleted"].as_u64(), Some(1), "{dry}");
    assert_eq!(
        retained(&bucket_contents(&s3, &offsite).await).len(),
        2,
        "a dry run deleted"
    );
    let r = prune("1", false);
    assert_eq!(r["deleted"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(
        (
            r["media_retained"]["deleted"].as_u64(),
            r["media_retained"]["referenced"].as_u64(),
            r["media_retained"]["generations_deleted"].as_u64(),
        ),
        (Some(1), Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(
        retained(&bucket_contents(&s3, &offsite).await),
        vec![body_for(key, 2)]
    );
    // The newest set restores its version; the current objects were never touched.
    let target = format!("restored-{:08x}", rand::random::<u32>());
    let out = svc.wpdr(
        &cfg,
        &["restore", "media", &sets[2], "--target-bucket", &target],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(bucket_contents(&s3, &target).await[key].0, body_for(key, 3));
    let off = bucket_contents(&s3, &offsite).await;
    assert_eq!(off[key].0, body_for(key, 3));
    assert!(off.contains_key("wp-content/uploads/2024/01/other.jpg"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_media_part_costs_only_itself_and_the_set_says_so() {
    let svc = Services::get();
    let s3 = svc.s3();
    let source = svc.fresh_bucket("ptsrc");
    let offsite = svc.fresh_bucket("ptoff");
    let db = small_site_db(&svc, "mpartial").await;
    put_objects(&s3, &source, uploads("2021/", 5)).await;
    let raw = |o: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", stdout(o), stderr(o)))
    };

    // An offsite outage (its bucket is gone): the database is still backed
    // up and committed; the set says media failed and why; exit 21.
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.local_config(
        dir.path(),
        &db,
        &svc.media_yaml(&source, "wpdr-offsite-that-is-gone", ""),
    );
    let out = svc.wpdr(&cfg, &["--output", "json", "backup"]);
    assert_eq!(out.status.code(), Some(21), "{}", stderr(&out));
    let summary = raw(&out);
    let id = summary["id"].as_str().unwrap().to_string();
    assert!(
        summary["failed_parts"][0]
            .as_str()
            .unwrap()
            .starts_with("media: "),
        "{summary}"
    );
    assert!(summary["tables"].as_u64().unwrap() > 0);
    let show = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "show", &id]));
    assert_eq!(show["failed_parts"][0]["part"], "media");
    assert!(show["media"].is_null());
    let list = stdout(&svc.wpdr(&cfg, &["sets", "list"]));
    assert!(list.contains("PARTIAL (no media)"), "{list}");
    let status = json(&svc.wpdr(&cfg, &["--output", "json", "status"]));
    assert_eq!(
        status["newest_failed_parts"][0]["part"], "media",
        "{status}"
    );
    // Its media cannot be restored from it, and the error says why and what to do.
    let out = svc.wpdr(
        &cfg,
        &["restore", "media", &id, "--target-bucket", "never-created"],
    );
    assert_eq!(out.status.code(), Some(21), "{}", stderr(&out));
    assert!(stderr(&out).contains("is partial"), "{}", stderr(&out));
    // Its database restores.
    let target = MariaDb::start(&[]);
    let r = json(&svc.restore_db(&cfg, &id, &target, "from_partial", &[]));
    assert_eq!(r["ok"], true, "{r}");

    // A media sync holding the media lock (a long first mirror): the backup
    // does not wait for it; the set goes without media, partial.
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.local_config(dir.path(), &db, &svc.media_yaml(&source, &offsite, ""));
    let lock = dir.path().join("store/wpdr/testsite/media-lock.json");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let now = chrono::Utc::now();
    std::fs::write(
        &lock,
        serde_json::json!({
            "token": "held-by-the-test",
            "host": hostname::get().unwrap().to_string_lossy(),
            "pid": std::process::id(),
            "purpose": "media-sync",
            "acquired_at": now,
            "expires_at": now + chrono::Duration::hours(1),
        })
        .to_string(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = svc.wpdr(&cfg, &["--output", "json", "backup"]);
    assert_eq!(out.status.code(), Some(21), "{}", stderr(&out));
    let summary = raw(&out);
    let reason = summary["failed_parts"][0].as_str().unwrap().to_string();
    assert!(reason.contains("media-sync"), "{reason}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    // Once the sync is done, the next backup is complete.
    std::fs::remove_file(&lock).unwrap();
    let out = svc.wpdr(&cfg, &["--output", "json", "backup"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(raw(&out).get("failed_parts").is_none());
}
