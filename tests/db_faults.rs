//! Faults: `kill -9` of wpdr at many points of a backup never leaves a
//! complete-looking set, earlier sets still verify, and the next backup
//! succeeds. Bad input and broken services get clear messages and distinct
//! exit codes.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use std::time::Duration;

async fn small_site(svc: &Services, rows: u32) -> String {
    let db = svc.fresh_database("faults").await;
    let mut c = svc.admin(Some(&db)).await;
    c.query_drop("CREATE TABLE wp_posts (ID INT PRIMARY KEY, post_content LONGTEXT)")
        .await
        .unwrap();
    c.query_drop(format!(
        "INSERT INTO wp_posts SELECT seq, REPEAT(CONCAT(SHA2(seq, 512), 'x'), 30) FROM seq_1_to_{rows}"
    ))
    .await
    .unwrap();
    if rows > 1000 {
        // Incompressible uploads-like data: its artifact is large enough for S3
        // multipart (5 MiB parts), so kills also land mid multipart upload.
        c.query_drop("CREATE TABLE wp_blobs (id INT PRIMARY KEY, data LONGBLOB)")
            .await
            .unwrap();
        c.query_drop(
            "INSERT INTO wp_blobs SELECT seq, CONCAT(RANDOM_BYTES(1024), RANDOM_BYTES(1024), RANDOM_BYTES(1024), RANDOM_BYTES(1024)) FROM seq_1_to_4000",
        )
        .await
        .unwrap();
    }
    c.query_drop("ANALYZE TABLE wp_posts").await.unwrap();
    db
}

fn set_ids(svc: &Services, cfg: &std::path::Path) -> Vec<String> {
    json(&svc.wpdr(cfg, &["--output", "json", "sets", "list"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_many_points_never_yields_a_complete_looking_set() {
    let svc = Services::get();
    let db = small_site(&svc, 20_000).await;
    let dir = tempfile::tempdir().unwrap();
    // Small chunks and S3 multipart so a kill lands mid-upload as well as mid-read.
    let cfg = svc.s3_config(dir.path(), &db, "backup:\n  chunk_size: 32MiB\n");
    let first = svc.backup(&cfg);

    let delays_ms = [5u64, 20, 50, 80, 120, 180, 250, 350, 500, 700, 1000];
    let mut killed_mid_run = 0;
    for d in delays_ms {
        let mut child = svc
            .wpdr_cmd(&cfg, &["--output", "json", "backup"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(d));
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            // SIGKILL: no destructor, no cleanup, no lock release.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            killed_mid_run += 1;
        }
        let _ = child.wait();
        // Only complete sets are listed, and each of them verifies.
        for id in set_ids(&svc, &cfg) {
            let v = svc.wpdr(&cfg, &["--output", "json", "verify", &id]);
            assert!(
                v.status.success(),
                "set {id} listed but does not verify after a kill at {d} ms: {}",
                stdout(&v)
            );
        }
    }
    assert!(
        killed_mid_run >= 5,
        "too few kills landed mid-run ({killed_mid_run}); the backup is too quick for this test"
    );
    let v = svc.wpdr(&cfg, &["verify", &first]);
    assert!(
        v.status.success(),
        "the first set must still verify: {}",
        stdout(&v)
    );

    // The killed runs' directories exist but are not sets: show refuses them clearly.
    let store_dirs = list_set_dirs(&svc, &cfg).await;
    let listed = set_ids(&svc, &cfg);
    let incomplete: Vec<&String> = store_dirs.iter().filter(|d| !listed.contains(d)).collect();
    for id in incomplete.iter().take(3) {
        let o = svc.wpdr(&cfg, &["sets", "show", id]);
        assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
        assert!(stderr(&o).contains("incomplete"), "{}", stderr(&o));
    }

    // The next backup succeeds at once: the dead holder's lock is recognised.
    let next = svc.backup(&cfg);
    assert!(svc.wpdr(&cfg, &["verify", &next]).status.success());
    assert_eq!(set_ids(&svc, &cfg)[0], next, "newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_backup_with_exit_130_and_no_set() {
    let svc = Services::get();
    let db = small_site(&svc, 20_000).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(dir.path(), &db, "backup:\n  chunk_size: 32MiB\n");
    let first = svc.backup(&cfg);
    let mut stopped_mid_run = 0;
    for d in [300u64, 600, 900] {
        let mut child = svc.spawn_wpdr(&cfg, &["--output", "json", "backup"]);
        std::thread::sleep(Duration::from_millis(d));
        if child.try_wait().unwrap().is_some() {
            continue;
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        if out.status.code() == Some(0) {
            continue; // it finished as the signal arrived
        }
        stopped_mid_run += 1;
        assert_eq!(
            out.status.code(),
            Some(130),
            "a backup stopped by SIGTERM exits 130: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
        assert_eq!(
            set_ids(&svc, &cfg),
            vec![first.clone()],
            "an interrupted backup leaves no set"
        );
    }
    assert!(
        stopped_mid_run >= 1,
        "no SIGTERM landed mid-run; the backup is too quick for this test"
    );
    // The next backup runs at once and the first set still verifies.
    let next = svc.backup(&cfg);
    assert!(svc.wpdr(&cfg, &["verify", &next]).status.success());
    assert!(svc.wpdr(&cfg, &["verify", &first]).status.success());
}

/// Set directories present in the store, complete or not (read via a helper config's listing).
async fn list_set_dirs(svc: &Services, cfg: &std::path::Path) -> Vec<String> {
    let (config, store) = svc.open_store(cfg).await;
    let prefix = format!("{}/sets/", config.site_prefix());
    store
        .list_dirs(&prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            d.trim_start_matches(&prefix)
                .trim_end_matches('/')
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_backup_is_refused_while_one_holds_the_lock() {
    let svc = Services::get();
    let db = small_site(&svc, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(dir.path(), &db, "");
    // Hold the site's lock as a running backup would (a live process: this one).
    let (config, store) = svc.open_store(&cfg).await;
    let catalog = wpdr::catalog::Catalog::new(&store, &config.site, &config.site_prefix());
    let guard = catalog.lock(120, "backup").await.unwrap();
    let o = svc.wpdr(&cfg, &["backup"]);
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    assert!(stderr(&o).contains("another backup"), "{}", stderr(&o));
    assert!(set_ids(&svc, &cfg).is_empty());
    guard.release(&store).await.unwrap();
    let o = svc.wpdr(&cfg, &["backup"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_broken_services_get_distinct_exit_codes() {
    let svc = Services::get();
    let db = small_site(&svc, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(dir.path(), &db, "");

    // Unreachable database: 4.
    let o = svc
        .wpdr_cmd(&cfg, &["backup"])
        .env("WPDR_DB_PORT", free_port().to_string())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot connect to the database"),
        "{}",
        stderr(&o)
    );

    // Wrong password: 5, and the password never appears.
    let o = svc
        .wpdr_cmd(&cfg, &["backup"])
        .env("WPDR_DB_PASSWORD", "wrong-password-xyz")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("refused user"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("wrong-password-xyz"));

    // Unknown database: 4 with the name.
    let o = svc
        .wpdr_cmd(&cfg, &["backup"])
        .env("WPDR_DB_NAME", "no_such_db_here")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("no_such_db_here"), "{}", stderr(&o));

    // Missing bucket: 6.
    let o = svc
        .wpdr_cmd(&cfg, &["sets", "list"])
        .env("WPDR_S3_BUCKET", "no-such-bucket-wpdr")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-bucket-wpdr"), "{}", stderr(&o));

    // Wrong S3 secret: 13, and the secret never appears.
    let o = svc
        .wpdr_cmd(&cfg, &["sets", "list"])
        .env(
            "WPDR_S3_SECRET_ACCESS_KEY",
            "0000000000000000000000000000000000000000000000000000000000000000",
        )
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(13), "{}", stderr(&o));

    // S3 endpoint down: 6.
    let o = svc
        .wpdr_cmd(&cfg, &["sets", "list"])
        .env(
            "WPDR_S3_ENDPOINT",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));

    // Bad config: 3, naming the field.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "site: x\ndatabase:\n  conections: 2\n").unwrap();
    let o = svc.wpdr(&bad, &["sets", "list"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("conections"), "{}", stderr(&o));
    std::fs::write(&bad, "database:\n  connections: 0\n").unwrap();
    let o = svc.wpdr(&bad, &["sets", "list"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("database.connections"),
        "{}",
        stderr(&o)
    );
    let o = svc.wpdr(&dir.path().join("missing.yaml"), &["sets", "list"]);
    assert_eq!(o.status.code(), Some(3));

    // Unknown set id: 7. Malformed set id: 7.
    let o = svc.wpdr(&cfg, &["sets", "show", "20200101T000000Z-abcd"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    let o = svc.wpdr(&cfg, &["verify", "../../etc"]);
    assert_eq!(o.status.code(), Some(7));
    // No sets yet: `latest` says so.
    let o = svc.wpdr(&cfg, &["sets", "show", "latest"]);
    assert_eq!(o.status.code(), Some(7));

    // Usage error: 2.
    let o = svc.wpdr(&cfg, &["restore", "db"]);
    assert_eq!(o.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_or_altered_artifacts_are_named_by_verify_and_stop_a_restore() {
    let svc = Services::get();
    let db = small_site(&svc, 3000).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.local_config(dir.path(), &db, "backup:\n  chunk_size: 1MiB\n");
    let good = svc.backup(&cfg);
    let bad = svc.backup(&cfg);
    let set_dir = dir.path().join("store/wpdr/testsite/sets").join(&bad);
    let mut data: Vec<_> = std::fs::read_dir(set_dir.join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("2-data")
        })
        .collect();
    data.sort();
    // Truncate one data artifact.
    let victim = &data[0];
    let bytes = std::fs::read(victim).unwrap();
    std::fs::write(victim, &bytes[..bytes.len() / 2]).unwrap();
    let victim_name = victim.file_name().unwrap().to_string_lossy().into_owned();

    let o = svc.wpdr(&cfg, &["verify", &bad]);
    assert_eq!(o.status.code(), Some(8), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&victim_name) && stdout(&o).contains("truncated"),
        "{}",
        stdout(&o)
    );
    let target = MariaDb::start(&[]);
    let o = svc.wpdr_target(
        &cfg,
        &[
            "restore",
            "db",
            &bad,
            "--target",
            &target.url(),
            "--database",
            "t1",
        ],
    );
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    assert!(stderr(&o).contains(&victim_name), "{}", stderr(&o));

    // Alter one byte (same size): verify names it, a restore refuses it as
    // damaged whether the garbage it decompresses to fails as SQL, loads, or
    // breaks the zstd stream. Several places, since each byte lands differently.
    for (i, at) in [bytes.len() / 4, bytes.len() / 2, bytes.len() * 3 / 4]
        .into_iter()
        .enumerate()
    {
        let mut altered = bytes.clone();
        altered[at] ^= 0x55;
        std::fs::write(victim, &altered).unwrap();
        let v = json_any(&svc.wpdr(&cfg, &["--output", "json", "verify", &bad]));
        assert_eq!(v["problems"][0]["status"], "checksum_mismatch");
        assert!(v["problems"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with(&victim_name));
        let o = svc.wpdr_target(
            &cfg,
            &[
                "restore",
                "db",
                &bad,
                "--target",
                &target.url(),
                "--database",
                &format!("t2_{i}"),
            ],
        );
        assert_eq!(o.status.code(), Some(8), "byte {at}: {}", stderr(&o));
        assert!(stderr(&o).contains(&victim_name), "{}", stderr(&o));
    }
    // Deterministically the case where the damage reaches the server first:
    // a well-formed stream whose SQL fails. The artifact's checksum is the
    // cause to report (exit 8), not the server's complaint (exit 12).
    let replaced = zstd::encode_all(&b"SELECT `no such column`;\n"[..], 3).unwrap();
    std::fs::write(victim, &replaced).unwrap();
    let o = svc.wpdr_target(
        &cfg,
        &[
            "restore",
            "db",
            &bad,
            "--target",
            &target.url(),
            "--database",
            "t2_sql",
        ],
    );
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    assert!(stderr(&o).contains(&victim_name), "{}", stderr(&o));

    // A missing artifact is named too; the earlier set is untouched and restores.
    std::fs::remove_file(victim).unwrap();
    let v = json_any(&svc.wpdr(&cfg, &["--output", "json", "verify", &bad]));
    assert_eq!(v["problems"][0]["status"], "missing");
    assert!(svc.wpdr(&cfg, &["verify", &good]).status.success());
    let o = svc.restore_db(&cfg, &good, &target, "t3", &[]);
    assert_eq!(json(&o)["ok"], true);
}

/// JSON from stdout regardless of the exit status.
fn json_any(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_checks_the_target_packet_size_first() {
    let svc = Services::get();
    let db = svc.fresh_database("packet").await;
    let mut c = svc.admin(Some(&db)).await;
    c.query_drop("CREATE TABLE big (id INT PRIMARY KEY, b LONGBLOB)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO big VALUES (1, REPEAT('x', 3000000))")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.local_config(dir.path(), &db, "");
    let set = svc.backup(&cfg);
    let target = MariaDb::start(&["--max-allowed-packet=1M"]);
    let o = svc.wpdr_target(&cfg, &["restore", "db", &set, "--target", &target.url()]);
    assert_eq!(o.status.code(), Some(12), "{}", stderr(&o));
    assert!(stderr(&o).contains("max_allowed_packet"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unreadable_manifest_never_blocks_list_status_prune_or_latest() {
    let svc = Services::get();
    let db = small_site(&svc, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(dir.path(), &db, "retention:\n  keep_last: 5\n");
    let good = svc.backup(&cfg);
    // A newer set whose manifest is damaged, and one from a future wpdr.
    let (config, store) = svc.open_store(&cfg).await;
    for (id, body) in [
        ("29991231T000000Z-dead", "{ damaged"),
        ("29991230T000000Z-beef", "{\"format_version\": 99}"),
    ] {
        let key = format!("{}/sets/{id}/manifest.json", config.site_prefix());
        store
            .put_bytes(&key, bytes::Bytes::from_static(body.as_bytes()))
            .await
            .unwrap();
    }
    let list = svc.wpdr(&cfg, &["sets", "list"]);
    assert_eq!(list.status.code(), Some(0), "{}", stderr(&list));
    assert!(stdout(&list).contains(&good), "{}", stdout(&list));
    assert!(
        stdout(&list).contains("UNREADABLE 29991231T000000Z-dead"),
        "{}",
        stdout(&list)
    );
    let status = svc.wpdr(&cfg, &["--output", "json", "status"]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let s = json(&status);
    assert_eq!(s["newest_set"], good.as_str(), "{s}");
    assert_eq!(s["unreadable_sets"].as_array().unwrap().len(), 2, "{s}");
    let prune = svc.wpdr(&cfg, &["prune", "--dry-run"]);
    assert_eq!(prune.status.code(), Some(0), "{}", stderr(&prune));
    let verify = svc.wpdr(&cfg, &["verify", "latest"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    // Named directly, the damaged set says what is wrong (exit 8).
    let show = svc.wpdr(&cfg, &["sets", "show", "29991231T000000Z-dead"]);
    assert_eq!(show.status.code(), Some(8), "{}", stderr(&show));
    // Nothing deletes what it cannot read: both are still there after a prune.
    assert_eq!(svc.wpdr(&cfg, &["prune"]).status.code(), Some(0));
    let again = json(&svc.wpdr(&cfg, &["--output", "json", "status"]));
    assert_eq!(again["unreadable_sets"].as_array().unwrap().len(), 2);
}
