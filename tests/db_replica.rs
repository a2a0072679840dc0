//! Backups from a replica of a primary/replica cluster, against two real
//! MariaDB servers started by the test (GTID replication): the set holds
//! exactly the primary's transactions up to the GTID it records while writes
//! flow, a stopped replica is refused with its problem named (exit 16), and
//! falling back to the primary is explicit and recorded.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_from_the_replica_holds_exactly_the_primary_up_to_its_recorded_gtid() {
    let svc = Services::get();
    let (primary, replica, mut p, mut r) = replicated_pair(
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, gtid_seq BIGINT NOT NULL, note VARCHAR(64))",
    )
    .await;
    // Orders keep coming while the backup runs; each row records its own GTID.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut c = primary.conn(Some("shop")).await;
        tokio::spawn(async move {
            let mut id = 0u32;
            while !stop.load(Ordering::SeqCst) || id < 300 {
                id += 1;
                let next: String = c
                    .query_first("SELECT @@gtid_binlog_pos")
                    .await
                    .unwrap()
                    .unwrap();
                // One transaction per order: its GTID is the next sequence number.
                c.exec_drop(
                    "INSERT INTO orders VALUES (?, ?, 'order')",
                    (id, seq(&next) + 1),
                )
                .await
                .unwrap();
            }
            id
        })
    };
    // Let the replica catch up with a first batch.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n: Option<u64> = r
            .query_first("SELECT COUNT(*) FROM shop.orders")
            .await
            .unwrap_or(None);
        if n.unwrap_or(0) >= 100 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica does not replicate"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = cluster_config(dir.path(), &primary, &replica, "");
    let out = wpdr_env(&svc, &cfg, &["--output", "json", "backup"], &[]);
    let set = json(&out)["id"].as_str().unwrap().to_string();
    stop.store(true, Ordering::SeqCst);
    let written = writer.await.unwrap();
    let shown = json(&wpdr_env(
        &svc,
        &cfg,
        &["--output", "json", "sets", "show", &set],
        &[],
    ));
    let read_from = &shown["database"]["read_from"];
    assert_eq!(read_from["role"], "replica", "{shown}");
    assert_eq!(read_from["server"], format!("127.0.0.1:{}", replica.port));
    let at = seq(read_from["primary_gtid"].as_str().unwrap());

    // Restored: exactly the orders whose GTID is at or before the recorded one.
    let target = MariaDb::start(&[]);
    let url = target.url();
    let o = wpdr_env(
        &svc,
        &cfg,
        &[
            "--output",
            "json",
            "restore",
            "db",
            &set,
            "--target",
            &url,
            "--database",
            "shop_r",
        ],
        &[],
    );
    assert_eq!(json(&o)["ok"], true);
    let mut t = target.conn(Some("shop_r")).await;
    let (n, max_seq): (u64, Option<u64>) = t
        .query_first("SELECT COUNT(*), MAX(gtid_seq) FROM orders")
        .await
        .unwrap()
        .unwrap();
    let expected: u64 = p
        .exec_first(
            "SELECT COUNT(*) FROM shop.orders WHERE gtid_seq <= ?",
            (at,),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        n > 0 && u64::from(written) > n,
        "the backup should fall between writes: {n} of {written}"
    );
    assert_eq!(
        n, expected,
        "restored {n} orders, the primary had {expected} at GTID seq {at}"
    );
    assert_eq!(
        max_seq,
        Some(at),
        "the newest restored order is the recorded GTID's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_is_refused_unless_falling_back_to_the_primary_is_allowed() {
    let svc = Services::get();
    let (primary, replica, _p, mut r) =
        replicated_pair("CREATE TABLE shop.t (id INT PRIMARY KEY)").await;
    r.query_drop("STOP SLAVE SQL_THREAD").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = cluster_config(dir.path(), &primary, &replica, "");
    let out = wpdr_env(&svc, &cfg, &["backup"], &[]);
    assert_eq!(out.status.code(), Some(16), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("127.0.0.1:{}", replica.port)) && err.contains("SQL thread stopped"),
        "{err}"
    );
    assert!(!err.contains(TEST_PASSWORD), "{err}");
    // Allowed to fall back: the set is taken from the primary and says why.
    let out = wpdr_env(
        &svc,
        &cfg,
        &["--output", "json", "backup"],
        &[("WPDR_DB_FALLBACK_TO_PRIMARY", "true")],
    );
    let set = json(&out)["id"].as_str().unwrap().to_string();
    let shown = json(&wpdr_env(
        &svc,
        &cfg,
        &["--output", "json", "sets", "show", &set],
        &[],
    ));
    let read_from = &shown["database"]["read_from"];
    assert_eq!(read_from["role"], "primary", "{shown}");
    assert!(
        read_from["fallback_reason"]
            .as_str()
            .unwrap()
            .contains("stopped"),
        "{shown}"
    );
    // An unreachable replica is named too.
    let dead = free_port();
    let cfg2 = dir.path().join("dead.yaml");
    std::fs::write(
        &cfg2,
        std::fs::read_to_string(&cfg).unwrap().replace(
            &format!("127.0.0.1:{}'", replica.port),
            &format!("127.0.0.1:{dead}'"),
        ),
    )
    .unwrap();
    let out = wpdr_env(&svc, &cfg2, &["backup"], &[]);
    assert_eq!(out.status.code(), Some(16), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{dead}")),
        "{}",
        stderr(&out)
    );
}
