//! One binlog archive per database server, shared by the sites on it: one
//! replication stream however many sites the server holds, each site's
//! point-in-time restore replaying only its own database's transactions
//! from it, and the archive's prune keeping what any site's live claim
//! needs (a lapsed claim holding nothing back). Against a MariaDB server
//! started by the test, with two sites' databases on it.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::path::{Path, PathBuf};

const ARCHIVE: &str = "db1";

fn config(dir: &Path, db: &MariaDb, site: &str, database: &str, extra: &str) -> PathBuf {
    let yaml = format!(
        "site: {site}\nstore:\n  type: local\n  path: {}\ndatabase:\n  host: 127.0.0.1\n  port: {}\n  user: {TEST_USER}\n  name: {database}\n  binlog:\n    archive: {ARCHIVE}\n    segment_seconds: 1\nretention:\n  keep_last: 1\n{extra}",
        dir.join("store").display(),
        db.port
    );
    let p = dir.join(format!("{site}.yaml"));
    std::fs::write(&p, yaml).unwrap();
    p
}

async fn insert(c: &mut Conn, database: &str, ids: std::ops::RangeInclusive<u32>) {
    for id in ids {
        c.exec_drop(
            format!("INSERT INTO {database}.orders VALUES (?, 'order')"),
            (id,),
        )
        .await
        .unwrap();
    }
}

async fn position(c: &mut Conn) -> String {
    c.query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap()
}

async fn ids(c: &mut Conn, table: &str) -> Vec<u32> {
    c.query(format!("SELECT id FROM {table} ORDER BY id"))
        .await
        .unwrap()
}

fn run_ok(svc: &Services, cfg: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let out = wpdr_env(svc, cfg, &all, &[]);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    json(&out)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    files_under(&dir.join("store/wpdr/.archives/db1/binlog"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".binlog.zst"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_share_one_archive_and_its_prune_keeps_what_either_needs() {
    let svc = Services::get();
    let db = MariaDb::start(&["--binlog-format=ROW"]);
    let mut c = db.conn(None).await;
    for d in ["shop_a", "shop_b"] {
        c.query_drop(format!("CREATE DATABASE {d}")).await.unwrap();
        c.query_drop(format!(
            "CREATE TABLE {d}.orders (id INT PRIMARY KEY, note VARCHAR(64))"
        ))
        .await
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    // The server's archive: a config of its own (a replication user, no site
    // of its own), naming the archive the sites name.
    let server = config(dir.path(), &db, "db1-archive", "mysql", "");
    let site_a = config(dir.path(), &db, "a", "shop_a", "");
    let site_b = config(dir.path(), &db, "b", "shop_b", "");
    let catch_up = ["binlog", "archive", "--until-caught-up"];

    // One stream per server, whoever asks: while the server's archiver runs,
    // a site's own attempt to archive finds the shared archive's lock held.
    let mut running = svc.wpdr_cmd(&server, &["binlog", "archive"]);
    let mut running = running
        .env("WPDR_DB_PASSWORD", TEST_PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let head = dir.path().join("store/wpdr/.archives/db1/binlog/head.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !head.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the archiver wrote no head"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = wpdr_env(&svc, &site_a, &catch_up, &[]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    unsafe {
        libc::kill(running.id() as i32, libc::SIGTERM);
    }
    assert!(running.wait().unwrap().success());

    run_ok(&svc, &server, &catch_up);
    insert(&mut c, "shop_a", 1..=10).await;
    insert(&mut c, "shop_b", 1..=10).await;
    let first_a = run_ok(&svc, &site_a, &["backup"]);
    run_ok(&svc, &site_b, &["backup"]);
    // Each backup claimed what its set may replay.
    let claims = dir.path().join("store/wpdr/.archives/db1/binlog/claims");
    for site in ["a", "b"] {
        let claim: serde_json::Value =
            serde_json::from_slice(&std::fs::read(claims.join(format!("{site}.json"))).unwrap())
                .unwrap();
        assert_eq!(claim["site"], site, "{claim}");
    }

    insert(&mut c, "shop_a", 11..=15).await;
    insert(&mut c, "shop_b", 11..=13).await;
    let a_point = position(&mut c).await;
    insert(&mut c, "shop_a", 16..=20).await;
    insert(&mut c, "shop_b", 14..=20).await;
    let b_point = position(&mut c).await;
    insert(&mut c, "shop_b", 21..=25).await;
    // One stream for the server: one archiver, one archive.
    let archived = run_ok(&svc, &server, &catch_up);
    assert!(
        archived["transactions"].as_u64().unwrap() >= 40,
        "{archived}"
    );
    assert!(!segments(dir.path()).is_empty());
    for site in ["a", "b"] {
        assert!(
            files_under(&dir.path().join("store/wpdr").join(site).join("binlog")).is_empty(),
            "site {site} has no archive of its own"
        );
    }

    // Each site restores to its own point from the shared archive, with its
    // own database's transactions only.
    let out = svc.restore_db(
        &site_a,
        "latest",
        &db,
        "a_restored",
        &["--to-gtid", &a_point],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["point_in_time"]["replayed"]["transactions"], 5);
    assert_eq!(
        ids(&mut c, "a_restored.orders").await,
        (1..=15).collect::<Vec<_>>()
    );
    let out = svc.restore_db(
        &site_b,
        "latest",
        &db,
        "b_restored",
        &["--to-gtid", &b_point],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["point_in_time"]["replayed"]["transactions"], 10);
    assert_eq!(
        ids(&mut c, "b_restored.orders").await,
        (1..=20).collect::<Vec<_>>()
    );
    let tables: Vec<String> = c
        .query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'a_restored'")
        .await
        .unwrap();
    assert_eq!(tables, vec!["orders".to_string()]);
    // Both windows reach the archive's head.
    for cfg in [&site_a, &site_b] {
        let w = json(&recoverable(&svc, cfg));
        assert_eq!(w["runs"].as_array().unwrap().len(), 1, "{w}");
    }

    // Site a moves on: a second set, and its prune lets its first go and
    // renews its claim; it deletes no segment (the archive is not its own).
    insert(&mut c, "shop_a", 21..=22).await;
    let second_a = run_ok(&svc, &site_a, &["backup"]);
    let pruned = run_ok(&svc, &site_a, &["prune"]);
    assert_eq!(pruned["deleted"][0], first_a["id"], "{pruned}");
    assert!(pruned.get("binlog").is_none(), "{pruned}");
    let claim = &pruned["archive_claim"]["claim"];
    assert_eq!(claim["site"], "a", "{pruned}");
    assert_eq!(
        claim["floor_position"], second_a["position"],
        "the claim starts at a's only set: {pruned}"
    );
    insert(&mut c, "shop_a", 23..=25).await;
    run_ok(&svc, &server, &catch_up);
    let before = segments(dir.path()).len();

    // The archive's prune: b's claim still reaches back to b's first set,
    // so nothing goes.
    let kept = run_ok(&svc, &server, &["binlog", "prune"]);
    assert_eq!(kept["shared"], true, "{kept}");
    assert_eq!(kept["claims"].as_array().unwrap().len(), 2, "{kept}");
    assert_eq!(kept["segments_deleted"], 0, "{kept}");
    assert_eq!(segments(dir.path()).len(), before);

    // b's claim lapses (its site was deleted and stopped renewing it).
    let b_claim = claims.join("b.json");
    let mut lapsed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&b_claim).unwrap()).unwrap();
    lapsed["holds_until"] = serde_json::json!("2020-01-01T00:00:00Z");
    std::fs::write(&b_claim, serde_json::to_vec(&lapsed).unwrap()).unwrap();
    let dry = run_ok(&svc, &server, &["binlog", "prune", "--dry-run"]);
    let would = dry["segments_deleted"].as_u64().unwrap();
    assert!(
        would > 0,
        "segments before a's set go once only a claims: {dry}"
    );
    assert_eq!(dry["lapsed"][0]["site"], "b", "{dry}");
    assert_eq!(
        segments(dir.path()).len(),
        before,
        "a dry run deletes nothing"
    );
    assert!(b_claim.exists());
    let done = run_ok(&svc, &server, &["binlog", "prune"]);
    assert_eq!(done["segments_deleted"].as_u64().unwrap(), would, "{done}");
    assert_eq!(segments(dir.path()).len() as u64, before as u64 - would);
    assert!(!b_claim.exists(), "a lapsed claim is removed");

    // What a's claim holds is still there: a restores past its set.
    let a_now = position(&mut c).await;
    let out = svc.restore_db(&site_a, "latest", &db, "a_again", &["--to-gtid", &a_now]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        ids(&mut c, "a_again.orders").await,
        (1..=25).collect::<Vec<_>>()
    );
}

#[test]
fn an_archive_name_that_is_no_path_segment_is_refused_with_the_setting() {
    let svc = Services::get();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wpdr.yaml");
    std::fs::write(
        &cfg,
        format!(
            "site: a\nstore:\n  type: local\n  path: {}\ndatabase:\n  binlog:\n    archive: ../b\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = wpdr_env(&svc, &cfg, &["binlog", "prune", "--dry-run"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("database.binlog.archive"), "{err}");
    assert!(err.contains("'../b'"), "{err}");
}
