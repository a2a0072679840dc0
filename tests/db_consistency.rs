//! Consistency under load: while a backup runs over several connections,
//! writers move amounts between accounts (the sum is constant) and append to a
//! log, recording each commit's GTID. The restored database must keep the sum
//! exactly and hold exactly the log rows committed at the recorded position.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const ACCOUNTS: i64 = 200;
const START_AMOUNT: i64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_database_matches_exactly_the_recorded_point() {
    let svc = Services::get();
    let db = svc.fresh_database("consistency").await;
    let mut c = svc.admin(Some(&db)).await;
    c.query_drop("CREATE TABLE accounts (id INT PRIMARY KEY, amount BIGINT NOT NULL)")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, from_id INT, to_id INT, amount BIGINT, note VARCHAR(64))")
        .await
        .unwrap();
    // Filler so the backup takes long enough for many commits to race it.
    c.query_drop("CREATE TABLE filler (id INT PRIMARY KEY, body VARCHAR(700))")
        .await
        .unwrap();
    c.query_drop("INSERT INTO filler SELECT seq, REPEAT(SHA2(seq, 256), 10) FROM seq_1_to_40000")
        .await
        .unwrap();
    c.query_drop(format!(
        "INSERT INTO accounts SELECT seq, {START_AMOUNT} FROM seq_1_to_{ACCOUNTS}"
    ))
    .await
    .unwrap();
    c.query_drop("ANALYZE TABLE filler, accounts, ledger")
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let stop = stop.clone();
        let svc_port = svc.db_port();
        let (user, pw) = (
            svc.var("WPDR_TEST_DB_USER"),
            svc.var("WPDR_TEST_DB_PASSWORD"),
        );
        let db = db.clone();
        writers.push(tokio::spawn(async move {
            let mut conn = connect(svc_port, &user, &pw, Some(&db)).await;
            let mut committed: Vec<(u64, u64)> = Vec::new(); // (ledger id, gtid seq)
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                i += 7;
                let from = (i % ACCOUNTS as u64) as i64 + 1;
                let to = ((i * 13 + 5) % ACCOUNTS as u64) as i64 + 1;
                let amount = (i % 50) as i64 + 1;
                let mut tx = conn.start_transaction(Default::default()).await.unwrap();
                tx.exec_drop(
                    "UPDATE accounts SET amount = amount - ? WHERE id = ?",
                    (amount, from),
                )
                .await
                .unwrap();
                tx.exec_drop(
                    "UPDATE accounts SET amount = amount + ? WHERE id = ?",
                    (amount, to),
                )
                .await
                .unwrap();
                tx.exec_drop(
                    "INSERT INTO ledger (from_id, to_id, amount, note) VALUES (?, ?, ?, ?)",
                    (from, to, amount, format!("w{w}")),
                )
                .await
                .unwrap();
                let id: u64 = tx
                    .query_first("SELECT LAST_INSERT_ID()")
                    .await
                    .unwrap()
                    .unwrap();
                tx.commit().await.unwrap();
                let gtid: String = conn
                    .query_first("SELECT @@last_gtid")
                    .await
                    .unwrap()
                    .unwrap();
                let seq: u64 = gtid.rsplit('-').next().unwrap().parse().unwrap();
                committed.push((id, seq));
            }
            committed
        }));
    }
    // Let the writers get going, then back up over two connections.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(
        dir.path(),
        &db,
        "  connections: 2\nbackup:\n  chunk_size: 1MiB\n",
    );
    let backup = json(&svc.wpdr(&cfg, &["--output", "json", "backup"]));
    let set = backup["id"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut committed = Vec::new();
    for w in writers {
        committed.extend(w.await.unwrap());
    }

    let show = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "show", &set]));
    let dbm = &show["database"];
    assert_eq!(dbm["consistency"]["connections"], 2);
    assert_eq!(dbm["consistency"]["method"], "backup-stage-block-commit");
    let held = dbm["consistency"]["commits_blocked_ms"].as_f64().unwrap();
    assert!(held >= 0.0);
    let gtid = dbm["gtid_binlog_pos"].as_str().unwrap();
    let snap_seq: u64 = gtid.rsplit('-').next().unwrap().parse().unwrap();
    let before: Vec<u64> = committed
        .iter()
        .filter(|(_, s)| *s <= snap_seq)
        .map(|(id, _)| *id)
        .collect();
    let after = committed.len() - before.len();
    assert!(
        !before.is_empty() && after > 0,
        "the writers must straddle the snapshot ({} before, {after} after)",
        before.len()
    );

    let target = MariaDb::start(&[]);
    let out = svc.restore_db(&cfg, &set, &target, "r", &[]);
    assert_eq!(json(&out)["ok"], true);
    let mut r = target.conn(Some("r")).await;
    let sum: Option<i64> = r
        .query_first("SELECT CAST(SUM(amount) AS SIGNED) FROM accounts")
        .await
        .unwrap();
    assert_eq!(
        sum,
        Some(ACCOUNTS * START_AMOUNT),
        "the sum of the accounts must be constant"
    );
    let mut restored: Vec<u64> = r.query("SELECT id FROM ledger").await.unwrap();
    restored.sort();
    let mut expected = before.clone();
    expected.sort();
    assert_eq!(
        restored, expected,
        "the ledger must hold exactly the rows committed at GTID {gtid}"
    );
    // Replaying the ledger from the start gives exactly the restored balances.
    let balances: Vec<(i64, i64)> = r
        .query("SELECT id, amount FROM accounts ORDER BY id")
        .await
        .unwrap();
    let moves: Vec<(i64, i64, i64)> = r
        .query("SELECT from_id, to_id, amount FROM ledger")
        .await
        .unwrap();
    let mut replay = vec![START_AMOUNT; ACCOUNTS as usize + 1];
    for (f, t, a) in moves {
        replay[f as usize] -= a;
        replay[t as usize] += a;
    }
    for (id, amount) in balances {
        assert_eq!(replay[id as usize], amount, "account {id}");
    }
}
