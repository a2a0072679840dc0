//! The binary log archive and point-in-time restores, against real MariaDB
//! servers started by the tests: a primary and a replica replicating by
//! GTID, orders written while the archive runs (and while it is killed -9
//! and restarted), restores to a second and to a GTID between two known
//! transactions, a failover the archive follows, and purged logs reported
//! as a gap.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ORDERS: &str = "CREATE TABLE shop.orders (id INT PRIMARY KEY, gtid_seq BIGINT NOT NULL, created DATETIME NOT NULL, note VARCHAR(64))";
/// Close a segment every second, so a few seconds of writes make several.
const FAST_SEGMENTS: &str = "  binlog:\n    segment_seconds: 1\n";

fn spawn_archive(svc: &Services, cfg: &Path, log: &Path) -> Child {
    let mut cmd = svc.wpdr_cmd(cfg, &["binlog", "archive"]);
    cmd.env("WPDR_DB_PASSWORD", TEST_PASSWORD)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    cmd.spawn().unwrap()
}

/// SIGTERM, then the exit status (the archiver closes its segment first).
fn terminate(mut child: Child) -> std::process::ExitStatus {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "the archiver ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Inserts one order per transaction, each recording its own GTID
/// sequence number and the statement's start second, until stopped.
fn order_writer(
    mut c: Conn,
    first_id: u32,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU32>,
) -> tokio::task::JoinHandle<Conn> {
    tokio::spawn(async move {
        let mut id = first_id;
        while !stop.load(Ordering::SeqCst) {
            insert_order(&mut c, id).await;
            id += 1;
            count.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
        c
    })
}

async fn insert_order(c: &mut Conn, id: u32) {
    let pos: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    c.exec_drop(
        "INSERT INTO shop.orders VALUES (?, ?, NOW(), 'order')",
        (id, seq(&pos) + 1),
    )
    .await
    .unwrap();
}

/// Waits (up to a minute) until `query` counts at least `n`; errors count as 0
/// (the replica may not have the table yet).
async fn wait_for_count(c: &mut Conn, query: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while c
        .query_first::<u64, _>(query)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
        < n
    {
        assert!(Instant::now() < deadline, "still fewer than {n}: {query}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Takes a backup and returns its set id.
fn backup(svc: &Services, cfg: &Path) -> String {
    json(&wpdr_env(svc, cfg, &["--output", "json", "backup"], &[]))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn ids(c: &mut Conn, query: &str) -> Vec<u32> {
    c.query(query).await.unwrap()
}

/// The segment indexes in the store, in order.
fn segment_indexes(dir: &Path, site: &str) -> Vec<serde_json::Value> {
    let seg_dir = dir.join("store/wpdr").join(site).join("binlog/segments");
    let mut names: Vec<_> = std::fs::read_dir(&seg_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

/// Every segment starts where the one before ended and transactions never repeat.
fn assert_continuous(segments: &[serde_json::Value]) {
    for w in segments.windows(2) {
        assert_eq!(
            w[1]["start"], w[0]["end"],
            "a hole or overlap between segments: {w:?}"
        );
        assert!(
            w[1]["first_gtid"]["seq"].as_u64() > w[0]["last_gtid"]["seq"].as_u64(),
            "a transaction archived twice: {w:?}"
        );
    }
}

/// The JSON a command printed, whatever its exit code.
fn json_any(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn restores_to_a_second_and_to_a_gtid_exactly_while_orders_flow_and_the_archiver_is_killed() {
    let svc = Services::get();
    let (primary, replica, mut p, mut r) = replicated_pair(ORDERS).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = cluster_config(dir.path(), &primary, &replica, FAST_SEGMENTS);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU32::new(0));
    let writer = order_writer(primary.conn(None).await, 1, stop.clone(), count.clone());
    wait_for_count(&mut r, "SELECT COUNT(*) FROM shop.orders", 50).await;
    // The nightly set, from the replica, while orders keep coming.
    let set = backup(&svc, &cfg);
    let shown = json(&wpdr_env(
        &svc,
        &cfg,
        &["--output", "json", "sets", "show", &set],
        &[],
    ));
    let set_seq = seq(shown["database"]["read_from"]["primary_gtid"]
        .as_str()
        .unwrap());
    assert!(shown["database"]["snapshot_at"].is_string(), "{shown}");

    // The archiver follows, is killed -9 mid-stream, and is started again.
    let log = dir.path().join("archive.log");
    let archiver = spawn_archive(&svc, &cfg, &log);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut archiver = archiver;
    archiver.kill().unwrap();
    archiver.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let archiver = spawn_archive(&svc, &cfg, &dir.path().join("archive2.log"));
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.store(true, Ordering::SeqCst);
    let _ = writer.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = terminate(archiver);
    assert!(
        st.success(),
        "archiver: {st} {}",
        std::fs::read_to_string(dir.path().join("archive2.log")).unwrap()
    );

    let segments = segment_indexes(dir.path(), "cluster");
    assert!(
        segments.len() >= 3,
        "expected several segments, got {}",
        segments.len()
    );
    assert_continuous(&segments);
    let archived: u64 = segments
        .iter()
        .map(|s| s["transactions"].as_u64().unwrap())
        .sum();
    let written_after_set: u64 = p
        .exec_first(
            "SELECT COUNT(*) FROM shop.orders WHERE gtid_seq > ?",
            (set_seq,),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        archived, written_after_set,
        "every transaction after the set archived exactly once"
    );

    // A second in the middle of the orders after the set: some before, some after.
    let seconds: Vec<String> = p
        .exec(
            "SELECT DISTINCT DATE_FORMAT(created, '%Y-%m-%dT%H:%i:%sZ') FROM shop.orders WHERE gtid_seq > ? ORDER BY 1",
            (set_seq,),
        )
        .await
        .unwrap();
    assert!(
        seconds.len() >= 4,
        "orders span too few seconds: {seconds:?}"
    );
    let t = seconds[seconds.len() / 2].clone();
    let rec = recoverable(&svc, &cfg);
    assert_eq!(rec.status.code(), Some(0), "{}", stderr(&rec));
    let w = json(&rec);
    assert_eq!(w["gaps"].as_array().unwrap().len(), 0, "{w}");
    assert_eq!(w["runs"].as_array().unwrap().len(), 1, "{w}");
    assert!(w["newest"].as_str().unwrap() >= t.as_str(), "{w}");

    let target = MariaDb::start(&[]);
    let out = svc.restore_db(&cfg, "latest", &target, "shop_t", &["--to-time", &t]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["set"], set, "{report}");
    let mut tc = target.conn(None).await;
    let expected = ids(
        &mut p,
        &format!(
            "SELECT id FROM shop.orders WHERE created < '{}' ORDER BY id",
            t.trim_end_matches('Z').replace('T', " ")
        ),
    )
    .await;
    let got = ids(&mut tc, "SELECT id FROM shop_t.orders ORDER BY id").await;
    assert_eq!(
        got.len(),
        expected.len(),
        "restored to {t}: {} orders, the primary had {} before it",
        got.len(),
        expected.len()
    );
    assert_eq!(got, expected);
    let after: u64 = p
        .exec_first(
            "SELECT COUNT(*) FROM shop.orders WHERE created >= ?",
            (t.trim_end_matches('Z').replace('T', " "),),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(after > 0, "the point should fall between orders");

    // By GTID: an order in the middle of those after the set.
    let mid: u64 = p
        .exec_first(
            "SELECT gtid_seq FROM shop.orders WHERE gtid_seq > ? ORDER BY gtid_seq LIMIT 1 OFFSET ?",
            (set_seq, written_after_set / 2),
        )
        .await
        .unwrap()
        .unwrap();
    let gtid = format!("0-77-{mid}");
    let out = svc.restore_db(&cfg, "latest", &target, "shop_g", &["--to-gtid", &gtid]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let expected = ids(
        &mut p,
        &format!("SELECT id FROM shop.orders WHERE gtid_seq <= {mid} ORDER BY id"),
    )
    .await;
    let got = ids(&mut tc, "SELECT id FROM shop_g.orders ORDER BY id").await;
    assert_eq!(got, expected, "restored to {gtid}");
    assert_eq!(json(&out)["point_in_time"]["replayed"]["last_gtid"], gtid);

    // Beyond the archive: refused with its own code, saying where the archive ends.
    let out = svc.restore_db(
        &cfg,
        "latest",
        &target,
        "shop_x",
        &["--to-time", "2099-01-01T00:00:00Z"],
    );
    assert_eq!(out.status.code(), Some(18), "{}", stderr(&out));
    assert!(stderr(&out).contains("ends at"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(TEST_PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn the_archive_follows_a_failover_to_the_promoted_replica_without_a_gap() {
    let svc = Services::get();
    let (primary, replica, _p, mut r) = replicated_pair(ORDERS).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = cluster_config(dir.path(), &primary, &replica, FAST_SEGMENTS);
    wait_for_count(
        &mut r,
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='shop'",
        1,
    )
    .await;
    let set = backup(&svc, &cfg);
    let log = dir.path().join("archive.log");
    let archiver = spawn_archive(&svc, &cfg, &log);
    let mut pc = primary.conn(None).await;
    for id in 1..=50 {
        insert_order(&mut pc, id).await;
    }
    wait_for_count(&mut r, "SELECT COUNT(*) FROM shop.orders", 50).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The primary dies; the replica is promoted and takes the next orders.
    drop(pc);
    drop(primary);
    r.query_drop("STOP SLAVE").await.unwrap();
    r.query_drop("RESET SLAVE ALL").await.unwrap();
    r.query_drop("SET GLOBAL read_only = 0").await.unwrap();
    for id in 51..=100 {
        insert_order(&mut r, id).await;
    }
    let last: String = r
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    // The archiver notices, finds the promoted replica and catches up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let head = dir.path().join("store/wpdr/cluster/binlog/head.json");
        let at = std::fs::read(&head)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["position"].as_str().map(str::to_string));
        if at.as_deref() == Some(last.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the archive did not follow the new primary (at {at:?}, want {last}): {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let st = terminate(archiver);
    assert!(st.success(), "{st}");
    let archive_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        archive_log.contains(&format!("127.0.0.1:{}", replica.port)),
        "{archive_log}"
    );

    let segments = segment_indexes(dir.path(), "cluster");
    assert_continuous(&segments);
    let w = json(&recoverable(&svc, &cfg));
    assert_eq!(w["gaps"].as_array().unwrap().len(), 0, "{w}");
    assert_eq!(w["runs"].as_array().unwrap().len(), 1, "{w}");

    // Restored to the new primary's last order (all 100, from both
    // primaries), with two replicas seeded after the replay. The restored
    // primary has the old primary's server id, as a re-created pod would.
    let target = MariaDb::start(&["--binlog-format=ROW"]);
    let replicas = [
        MariaDb::start(&["--server-id=82", "--binlog-format=ROW"]),
        MariaDb::start(&["--server-id=83"]),
    ];
    let urls: Vec<String> = replicas.iter().map(|r| r.url()).collect();
    let target_url = target.url();
    let args = [
        "--output",
        "json",
        "restore",
        "db",
        "latest",
        "--target",
        &target_url,
        "--database",
        "shop_f",
        "--to-gtid",
        &last,
        "--replica",
        &urls[0],
        "--replica",
        &urls[1],
    ];
    // Replicas replicate as a user of their own: without one the restore
    // refuses before touching anything; with one that cannot log in, too.
    let out = svc.wpdr_target(&cfg, &args);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("restore.replication_user"),
        "{}",
        stderr(&out)
    );
    let with_replication = |password: &str| {
        svc.wpdr_cmd(&cfg, &args)
            .env("WPDR_TARGET_PASSWORD", TEST_PASSWORD)
            .env("WPDR_RESTORE_REPLICATION_USER", "repl")
            .env("WPDR_RESTORE_REPLICATION_PASSWORD", password)
            .output()
            .unwrap()
    };
    let mut tc = target.conn(None).await;
    // Kept out of the target's binary log: the fresh primary must have no
    // history of its own for the replay to be logged for its replicas.
    tc.query_drop("SET SESSION sql_log_bin = 0; CREATE USER repl@'%' IDENTIFIED BY 'repl-only-pw'; GRANT REPLICATION SLAVE ON *.* TO repl@'%'; SET SESSION sql_log_bin = 1")
        .await
        .unwrap();
    let out = with_replication("not-its-password");
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("'repl'"), "{}", stderr(&out));
    let loaded: Option<String> = tc
        .query_first(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop_f'",
        )
        .await
        .unwrap();
    assert_eq!(
        loaded, None,
        "the set was loaded before the replication user was checked"
    );
    let out = with_replication("repl-only-pw");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["set"], set);
    assert_eq!(report["replicas"].as_array().unwrap().len(), 2, "{report}");
    for r in report["replicas"].as_array().unwrap() {
        // Seeded after the replay: replication starts at the replayed position.
        assert_eq!(r["seeded_at"], last.as_str(), "{report}");
    }
    let got = ids(&mut tc, "SELECT id FROM shop_f.orders ORDER BY id").await;
    assert_eq!(got, (1..=100).collect::<Vec<u32>>(), "{report}");
    // Each replica holds the replayed orders, and a write on the restored
    // primary reaches it.
    tc.query_drop("INSERT INTO shop_f.orders VALUES (101, 0, NOW(), 'after the restore')")
        .await
        .unwrap();
    for r in &replicas {
        let mut rc = r.conn(None).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = ids(&mut rc, "SELECT id FROM shop_f.orders ORDER BY id").await;
            if got == (1..=101).collect::<Vec<u32>>() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {} holds {} orders, not 101",
                r.port,
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(!stdout(&out).contains(TEST_PASSWORD) && !stderr(&out).contains(TEST_PASSWORD));
    // Each replica's IO thread logs in as the replication user.
    for r in &replicas {
        let mut rc = r.conn(None).await;
        let status: Vec<mysql_async::Row> = rc.query("SHOW SLAVE STATUS").await.unwrap();
        let user: String = status[0].get("Master_User").unwrap();
        assert_eq!(user, "repl");
    }
}

/// FLUSH + PURGE until only the current binary log is left (the server keeps
/// a log until its binlog checkpoint is durable, so the first PURGE may keep it).
async fn purge_all_but_the_current_log(c: &mut Conn) {
    let deadline = Instant::now() + Duration::from_secs(30);
    c.query_drop("FLUSH BINARY LOGS").await.unwrap();
    loop {
        let current: String = c
            .query_first::<mysql_async::Row, _>("SHOW MASTER STATUS")
            .await
            .unwrap()
            .unwrap()
            .get(0)
            .unwrap();
        c.query_drop(format!("PURGE BINARY LOGS TO '{current}'"))
            .await
            .unwrap();
        let logs: Vec<(String, u64)> = c.query("SHOW BINARY LOGS").await.unwrap();
        if logs.len() == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server keeps its old logs: {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A server of the test's own with row-based logging and `shop.orders`.
async fn shop_server() -> (MariaDb, Conn) {
    let db = MariaDb::start(&["--binlog-format=ROW"]);
    let mut c = db.conn(None).await;
    c.query_drop("CREATE DATABASE shop").await.unwrap();
    c.query_drop(ORDERS).await.unwrap();
    (db, c)
}

fn single_config(dir: &Path, db: &MariaDb) -> std::path::PathBuf {
    let yaml = format!(
        "site: single\nstore:\n  type: local\n  path: {}\ndatabase:\n  host: 127.0.0.1\n  port: {}\n  user: {TEST_USER}\n  name: shop\n",
        dir.join("store").display(),
        db.port
    );
    let p = dir.join("wpdr.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_purged_before_they_were_archived_are_reported_as_a_gap() {
    let svc = Services::get();
    let (db, mut c) = shop_server().await;
    for id in 1..=10 {
        insert_order(&mut c, id).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = single_config(dir.path(), &db);
    let catch_up = ["--output", "json", "binlog", "archive", "--until-caught-up"];
    wpdr_env(&svc, &cfg, &["backup"], &[]);
    for id in 11..=15 {
        insert_order(&mut c, id).await;
    }
    let out = wpdr_env(&svc, &cfg, &catch_up, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["transactions"], 5);

    // Orders the archive never saw, then their logs purged.
    for id in 16..=25 {
        insert_order(&mut c, id).await;
    }
    purge_all_but_the_current_log(&mut c).await;
    for id in 26..=28 {
        insert_order(&mut c, id).await;
    }
    let out = wpdr_env(&svc, &cfg, &catch_up, &[]);
    assert_eq!(
        out.status.code(),
        Some(17),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    let report = json_any(&out);
    assert_eq!(report["gaps"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(
        report["transactions"], 3,
        "archiving goes on after the gap: {report}"
    );

    // Reported, never a silently shorter window.
    let rec = recoverable(&svc, &cfg);
    assert_eq!(rec.status.code(), Some(17));
    let w = json_any(&rec);
    assert_eq!(w["open_gaps"], 1, "{w}");
    let text = stdout(&wpdr_env(&svc, &cfg, &["sets", "recoverable"], &[]));
    assert!(
        text.contains("GAP") && text.contains("wpdr backup"),
        "{text}"
    );
    let status = stdout(&wpdr_env(&svc, &cfg, &["status"], &[]));
    assert!(status.contains("GAP"), "{status}");
    let target = MariaDb::start(&[]);
    let last: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    let out = svc.restore_db(&cfg, "latest", &target, "shop_gap", &["--to-gtid", &last]);
    assert_eq!(out.status.code(), Some(18), "{}", stderr(&out));

    // A set after the gap heals the window from there on.
    wpdr_env(&svc, &cfg, &["backup"], &[]);
    let rec = recoverable(&svc, &cfg);
    assert_eq!(rec.status.code(), Some(0), "{}", stdout(&rec));
    for id in 29..=30 {
        insert_order(&mut c, id).await;
    }
    assert_eq!(wpdr_env(&svc, &cfg, &catch_up, &[]).status.code(), Some(0));
    let last: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    let out = svc.restore_db(
        &cfg,
        "latest",
        &target,
        "shop_healed",
        &["--to-gtid", &last],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut tc = target.conn(None).await;
    let got = ids(&mut tc, "SELECT id FROM shop_healed.orders ORDER BY id").await;
    assert_eq!(got, (1..=30).collect::<Vec<u32>>());

    // Without the replay tools nothing is loaded: the error says what to install.
    let url = target.url();
    let out = wpdr_env(
        &svc,
        &cfg,
        &[
            "restore",
            "db",
            "latest",
            "--target",
            &url,
            "--database",
            "shop_tools",
            "--to-gtid",
            &last,
        ],
        &[("WPDR_MARIADB_BINLOG", "/nonexistent/mariadb-binlog")],
    );
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("apt install mariadb-client"),
        "{}",
        stderr(&out)
    );
    let loaded: Option<String> = tc
        .query_first(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop_tools'",
        )
        .await
        .unwrap();
    assert_eq!(loaded, None, "nothing is loaded when the replay cannot run");

    // Retention keeps the newest set: the segments and the gap before it can
    // never be replayed again and go; what follows it stays and still restores.
    let before = segment_indexes(dir.path(), "single").len();
    let out = wpdr_env(
        &svc,
        &cfg,
        &["--output", "json", "prune"],
        &[("WPDR_KEEP_LAST", "1")],
    );
    let pruned = json(&out);
    assert_eq!(pruned["deleted"].as_array().unwrap().len(), 1, "{pruned}");
    let deleted = pruned["binlog"]["segments_deleted"].as_u64().unwrap() as usize;
    assert!(deleted >= 1, "{pruned}");
    assert_eq!(pruned["binlog"]["gaps_deleted"], 1, "{pruned}");
    let after = segment_indexes(dir.path(), "single");
    assert_eq!(after.len(), before - deleted);
    let rec = recoverable(&svc, &cfg);
    assert_eq!(rec.status.code(), Some(0), "{}", stdout(&rec));
    let out = svc.restore_db(
        &cfg,
        "latest",
        &target,
        "shop_pruned",
        &["--to-gtid", &last],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = ids(&mut tc, "SELECT id FROM shop_pruned.orders ORDER BY id").await;
    assert_eq!(got, (1..=30).collect::<Vec<u32>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_based_log_is_refused_with_the_setting_to_change() {
    let svc = Services::get();
    let db = MariaDb::start(&["--binlog-format=MIXED"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = single_config(dir.path(), &db);
    let out = wpdr_env(&svc, &cfg, &["binlog", "archive", "--until-caught-up"], &[]);
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("binlog_format=MIXED") && stderr(&out).contains("binlog_format=ROW"),
        "{}",
        stderr(&out)
    );
    assert!(!dir
        .path()
        .join("store/wpdr/single/binlog/segments")
        .exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_archives_continuously_and_its_metrics_show_the_window() {
    let svc = Services::get();
    let (db, mut c) = shop_server().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = single_config(dir.path(), &db);
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap() + FAST_SEGMENTS).unwrap();
    wpdr_env(&svc, &cfg, &["backup"], &[]);
    let schedules = dir.path().join("schedules");
    std::fs::create_dir_all(&schedules).unwrap();
    std::fs::write(
        schedules.join("binlog.yaml"),
        "name: binlog\njob: binlog-archive\ncron: \"0 * * * * *\"\nrun_missed_on_start: true\n",
    )
    .unwrap();
    let port = free_port();
    let mut daemon = svc
        .wpdr_cmd(
            &cfg,
            &[
                "daemon",
                "--schedules",
                schedules.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--grace-seconds",
                "20",
            ],
        )
        .env("WPDR_DB_PASSWORD", TEST_PASSWORD)
        .env("WPDR_DAEMON_REFRESH_SECONDS", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    wait_listening(port);
    for id in 1..=20 {
        insert_order(&mut c, id).await;
    }
    let written_at = chrono::Utc::now().timestamp() as f64;
    // The window's newest second reaches the last order without any job finishing.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, text) = http(port, "GET", "/metrics");
        if code == 200
            && metric(&text, "wpdr_recoverable_newest_timestamp_seconds") >= written_at
            && metric(&text, "wpdr_binlog_archive_age_seconds") >= 0.0
        {
            assert_eq!(metric(&text, "wpdr_binlog_open_gaps"), 0.0, "{text}");
            assert!(metric(&text, "wpdr_recoverable_oldest_timestamp_seconds") > 0.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the window never reached the last order: {text}\n{}",
            std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    unsafe {
        libc::kill(daemon.id() as i32, libc::SIGTERM);
    }
    let st = daemon.wait().unwrap();
    assert!(st.success(), "{st}");
    let segments = segment_indexes(dir.path(), "single");
    assert_continuous(&segments);
    let archived: u64 = segments
        .iter()
        .map(|s| s["transactions"].as_u64().unwrap())
        .sum();
    assert_eq!(archived, 20, "each order archived once");
    // The lock is released for the next archiver.
    assert_released(&dir.path().join("store/wpdr/single/binlog-lock.json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_replication_slave_is_told_which_grant_is_missing() {
    let svc = Services::get();
    let db = MariaDb::start(&["--binlog-format=ROW"]);
    let mut c = db.conn(None).await;
    c.query_drop("CREATE USER 'reader'@'%' IDENTIFIED BY 'reader-pw-3141'")
        .await
        .unwrap();
    c.query_drop("GRANT SELECT, SLAVE MONITOR, BINLOG MONITOR ON *.* TO 'reader'@'%'")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = single_config(dir.path(), &db);
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&format!("user: {TEST_USER}"), "user: reader"),
    )
    .unwrap();
    let out = wpdr_env(
        &svc,
        &cfg,
        &["binlog", "archive", "--until-caught-up"],
        &[("WPDR_DB_PASSWORD", "reader-pw-3141")],
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("REPLICATION SLAVE") && err.contains("reader"),
        "{err}"
    );
    assert!(!err.contains("reader-pw-3141"), "{err}");
}

const CATCH_UP: [&str; 5] = ["--output", "json", "binlog", "archive", "--until-caught-up"];

/// A row-logging shop with orders 1..=10 in a set and 11..=15 after it.
async fn shop_with_a_set_and_later_orders(
    svc: &Services,
) -> (MariaDb, Conn, tempfile::TempDir, std::path::PathBuf) {
    let (db, mut c) = shop_server().await;
    for id in 1..=10 {
        insert_order(&mut c, id).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = single_config(dir.path(), &db);
    backup(svc, &cfg);
    for id in 11..=15 {
        insert_order(&mut c, id).await;
    }
    (db, c, dir, cfg)
}

/// Recovering a deleted post the way a user would: a point-in-time restore
/// into a new database on the same, archived server. The replayed
/// transactions carry GTIDs the server already has; written to its binary
/// log again they would move its position backwards, and the archive's chain
/// (and any replica) with it. They are applied without being logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_in_time_restore_onto_the_archived_server_never_rewinds_its_history() {
    let svc = Services::get();
    let (db, mut c, _dir, cfg) = shop_with_a_set_and_later_orders(&svc).await;
    let catch_up = CATCH_UP;
    let point: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    for id in 16..=20 {
        insert_order(&mut c, id).await;
    }
    let out = wpdr_env(&svc, &cfg, &catch_up, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();

    let out = svc.restore_db(&cfg, "latest", &db, "shop_restored", &["--to-gtid", &point]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    let replayed = &report["point_in_time"]["replayed"];
    assert_eq!(replayed["transactions"], 5, "{report}");
    assert_eq!(replayed["logged"], false, "{report}");
    assert!(
        replayed["not_logged_because"]
            .as_str()
            .unwrap_or_default()
            .contains("rewind"),
        "{report}"
    );
    let got = ids(&mut c, "SELECT id FROM shop_restored.orders ORDER BY id").await;
    assert_eq!(got, (1..=15).collect::<Vec<u32>>());

    // The server's history did not go back.
    let after: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    assert!(
        seq(&after) >= seq(&before),
        "gtid_binlog_pos went back from {before} to {after}"
    );
    // The archive's chain goes on forward: the next order is archived, no gap.
    insert_order(&mut c, 21).await;
    let out = wpdr_env(&svc, &cfg, &catch_up, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let archived = json(&out);
    assert!(
        archived["gaps"].as_array().unwrap().is_empty(),
        "{archived}"
    );
    let rec = recoverable(&svc, &cfg);
    assert_eq!(rec.status.code(), Some(0), "{}", stdout(&rec));
    let w = json_any(&rec);
    assert_eq!(
        w["runs"].as_array().unwrap().len(),
        1,
        "one unbroken run: {w}"
    );
}

/// A server whose history goes backwards in a domain (old GTIDs logged
/// again, as a replay that logged its transactions did): the archive records
/// a gap and says why; it never chains the lower GTIDs on as a continuation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gtid_sequence_that_goes_backwards_is_recorded_as_a_gap() {
    let svc = Services::get();
    let (_db, mut c, _dir, cfg) = shop_with_a_set_and_later_orders(&svc).await;
    let catch_up = CATCH_UP;
    let out = wpdr_env(&svc, &cfg, &catch_up, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Rewrite history: the next transaction is logged under an old sequence number.
    c.query_drop("SET SESSION gtid_seq_no = 3").await.unwrap();
    c.query_drop("INSERT INTO shop.orders VALUES (16, 3, NOW(), 'rewound')")
        .await
        .unwrap();
    let out = wpdr_env(&svc, &cfg, &catch_up, &[]);
    assert_eq!(
        out.status.code(),
        Some(17),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    let report = json_any(&out);
    let gaps = report["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{report}");
    assert!(
        gaps[0]["detail"].as_str().unwrap().contains("backwards"),
        "{report}"
    );
    // No segment carries the archive back: every segment ends after it starts.
    let rec = recoverable(&svc, &cfg);
    assert_eq!(rec.status.code(), Some(17), "{}", stdout(&rec));
    let w = json_any(&rec);
    for run in w["runs"].as_array().unwrap() {
        assert!(
            seq(run["end"].as_str().unwrap()) >= seq(run["start"].as_str().unwrap()),
            "a run goes backwards: {w}"
        );
    }
    // Following the server by GTID is ambiguous from here (its log holds
    // GTIDs twice): later runs refuse to go on, say what to do, and record
    // nothing more.
    insert_order(&mut c, 17).await;
    let out = wpdr_env(&svc, &cfg, &catch_up, &[]);
    assert_eq!(out.status.code(), Some(17), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stays stopped") && stderr(&out).contains("gtid_strict_mode"),
        "{}",
        stderr(&out)
    );
    let w = json_any(&recoverable(&svc, &cfg));
    assert_eq!(w["gaps"].as_array().unwrap().len(), 1, "{w}");
    // A set taken after the gap is restorable again.
    backup(&svc, &cfg);
    assert_eq!(recoverable(&svc, &cfg).status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_taken_right_after_reset_master_is_a_base_for_point_in_time() {
    let svc = Services::get();
    let (db, mut c) = shop_server().await;
    // A server whose binary log was just reset: no GTID at all yet.
    c.query_drop("RESET MASTER").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = single_config(dir.path(), &db);
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap() + FAST_SEGMENTS).unwrap();
    let out = wpdr_env(&svc, &cfg, &["--output", "json", "backup"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let set = json(&out)["id"].as_str().unwrap().to_string();
    let show = json(&wpdr_env(
        &svc,
        &cfg,
        &["--output", "json", "sets", "show", &set],
        &[],
    ));
    assert!(show["database"]["gtid_binlog_pos"].is_null(), "{show}");
    assert!(show["database"]["binlog"]["file"].is_string(), "{show}");

    // After the reset the server numbers transactions from 0-1-1 again.
    for id in 1..=5u32 {
        c.exec_drop(
            "INSERT INTO shop.orders VALUES (?, ?, NOW(), 'order')",
            (id, id),
        )
        .await
        .unwrap();
    }
    let last: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    // The archive starts at the set's position: the log's very start.
    let out = wpdr_env(
        &svc,
        &cfg,
        &["--output", "json", "binlog", "archive", "--until-caught-up"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let target = MariaDb::start(&[]);
    let out = svc.restore_db(&cfg, &set, &target, "shop_r", &["--to-gtid", &last]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(
        report["point_in_time"]["replayed"]["transactions"], 5,
        "{report}"
    );
    let mut t = target.conn(None).await;
    let n: Option<i64> = t
        .query_first("SELECT COUNT(*) FROM shop_r.orders")
        .await
        .unwrap();
    assert_eq!(n, Some(5));
}
