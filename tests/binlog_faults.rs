//! A real fault under the binlog archive: the S3 server (the shared dev
//! Garage) is killed with SIGKILL while orders flow and segments upload, and
//! restarted a moment later. Whatever the archiver did meanwhile (retried,
//! or stopped with a store error), the archive afterwards is one unbroken
//! run with every order exactly once, and a point-in-time restore holds all
//! of them. This binary restarts the shared Garage, so it holds a single test.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use std::process::Stdio;
use std::time::{Duration, Instant};

async fn insert_orders(c: &mut mysql_async::Conn, ids: std::ops::RangeInclusive<u32>) {
    for i in ids {
        c.exec_drop("INSERT INTO shop.orders VALUES (?, 'order')", (i,))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_mid_archive_loses_and_duplicates_nothing() {
    let svc = Services::get();
    let dev = svc.var("WPDR_DEV_DIR");
    let (db, mut c) = orders_server().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "site: s3binlog\nstore:\n  type: s3\n  bucket: {}\n  prefix: test-{:08x}\n  endpoint: {}\n  region: {}\n  access_key_id: {}\ndatabase:\n  host: 127.0.0.1\n  port: {}\n  user: {TEST_USER}\n  name: shop\n  binlog:\n    segment_seconds: 1\n",
        svc.var("WPDR_TEST_S3_BUCKET"),
        rand::random::<u32>(),
        svc.var("WPDR_TEST_S3_ENDPOINT"),
        svc.var("WPDR_TEST_S3_REGION"),
        svc.var("WPDR_TEST_S3_ACCESS_KEY_ID"),
        db.port
    );
    let cfg = dir.path().join("wpdr.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    assert!(wpdr_env(&svc, &cfg, &["backup"], &[]).status.success());

    let log = dir.path().join("archive.log");
    let mut archiver = svc
        .wpdr_cmd(&cfg, &["binlog", "archive"])
        .env("WPDR_DB_PASSWORD", TEST_PASSWORD)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    insert_orders(&mut c, 1..=40).await;
    // The S3 server dies while segments are being written, and orders keep coming.
    unsafe { libc::kill(garage_pid(&dev), libc::SIGKILL) };
    insert_orders(&mut c, 41..=80).await;
    restart_garage(&svc);
    insert_orders(&mut c, 81..=100).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The archiver either rode the outage out or stopped with a store error;
    // stop it (if it runs) and let a fresh one catch up.
    unsafe { libc::kill(archiver.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while archiver.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the archiver ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = wpdr_env(
        &svc,
        &cfg,
        &["--output", "json", "binlog", "archive", "--until-caught-up"],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        std::fs::read_to_string(&log).unwrap()
    );

    let w = json(&recoverable(&svc, &cfg));
    assert_eq!(w["gaps"].as_array().unwrap().len(), 0, "{w}");
    assert_eq!(
        w["runs"].as_array().unwrap().len(),
        1,
        "one unbroken run: {w}"
    );
    let last: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    let target = MariaDb::start(&[]);
    let out = svc.restore_db(&cfg, "latest", &target, "shop_r", &["--to-gtid", &last]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["point_in_time"]["replayed"]["transactions"], 100);
    let mut t = target.conn(None).await;
    let got: Vec<u32> = t
        .query("SELECT id FROM shop_r.orders ORDER BY id")
        .await
        .unwrap();
    assert_eq!(got, (1..=100).collect::<Vec<u32>>());
}
