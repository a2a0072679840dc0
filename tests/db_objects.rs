//! Nothing skipped silently in the snapshot: an object a backup cannot take
//! stops it by name unless `database.skip` names it (the set then lists it);
//! DDL while a backup reads never yields a set whose schema and rows are from
//! different moments; non-transactional tables are read at the snapshot's
//! moment when commits can be held, and flagged when they cannot.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_the_server_cannot_open_stops_the_backup_unless_skipped() {
    let svc = Services::get();
    // A server of our own: its ARCHIVE engine is uninstalled under a table
    // that uses it, as after an upgrade that lost a plugin.
    let server = MariaDb::start(&[]);
    let mut c = server.conn(None).await;
    c.query_drop("CREATE DATABASE shop").await.unwrap();
    c.query_drop("USE shop").await.unwrap();
    c.query_drop("INSTALL SONAME 'ha_archive'").await.unwrap();
    for s in [
        "CREATE TABLE wp_posts (id INT PRIMARY KEY, title TEXT)",
        "INSERT INTO wp_posts VALUES (1, 'kept')",
        "CREATE TABLE old_log (id INT, line TEXT) ENGINE=ARCHIVE",
        "INSERT INTO old_log VALUES (1, 'x')",
        "CREATE TABLE wp_big_cache (id INT PRIMARY KEY, blob_ MEDIUMBLOB)",
        "CREATE VIEW cache_view AS SELECT id FROM wp_big_cache",
    ] {
        c.query_drop(s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    c.query_drop("UNINSTALL SONAME 'ha_archive'").await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url_cfg = |extra: &str| {
        let store = dir.path().join("store");
        let path = dir.path().join(format!("wpdr-{}.yaml", extra.len()));
        std::fs::write(
            &path,
            format!(
                "site: shop\nstore:\n  type: local\n  path: {}\ndatabase:\n  host: 127.0.0.1\n  port: {}\n  user: {TEST_USER}\n  name: shop\n{extra}",
                store.display(),
                server.port
            ),
        )
        .unwrap();
        path
    };
    let env = [("WPDR_DB_PASSWORD", TEST_PASSWORD)];
    let run = |cfg: &std::path::Path, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wpdr"))
            .arg("--config")
            .arg(cfg)
            .args(args)
            .envs(env)
            .env_remove("WPDR_DB_HOST")
            .env_remove("WPDR_DB_PORT")
            .env_remove("WPDR_DB_USER")
            .env_remove("WPDR_DB_NAME")
            .output()
            .unwrap()
    };

    let plain = url_cfg("");
    let out = run(&plain, &["backup"]);
    assert_eq!(out.status.code(), Some(19), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("old_log") && err.contains("database.skip"),
        "{err}"
    );
    let listed = run(&plain, &["--output", "json", "sets", "list"]);
    assert_eq!(
        json(&listed).as_array().map(|a| a.len()),
        Some(0),
        "a refused backup stored a set"
    );
    let _ = svc;

    // Named in database.skip (with a pattern for the cache and its view),
    // the rest is backed up and the set says what it left out.
    let skipping = url_cfg("  skip: [old_log, \"wp_big_*\", cache_view]\n");
    let dry = json(&run(
        &skipping,
        &["--output", "json", "backup", "--dry-run"],
    ));
    let skipped_names: Vec<&str> = dry["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(skipped_names, ["old_log", "wp_big_cache"], "{dry}");
    let set = json(&run(&skipping, &["--output", "json", "backup"]));
    let id = set["id"].as_str().unwrap().to_string();
    let show = json(&run(&skipping, &["--output", "json", "sets", "show", &id]));
    let skipped: Vec<(String, String)> = show["database"]["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_string(),
                s["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        skipped,
        [
            ("table".to_string(), "old_log".to_string()),
            ("table".to_string(), "wp_big_cache".to_string()),
            ("view".to_string(), "cache_view".to_string()),
        ]
    );
    let tables: Vec<&str> = show["database"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["wp_posts"]);
    let text = stdout(&run(&skipping, &["sets", "show", &id]));
    assert!(
        text.contains("SKIPPED    table old_log: database.skip names it"),
        "{text}"
    );
}

/// A table large enough that reading it takes a while, and a small one read
/// after it (chunks go largest first).
async fn big_and_small(svc: &Services, stem: &str) -> String {
    let db = svc.fresh_database(stem).await;
    let mut c = svc.admin(Some(&db)).await;
    for s in [
        "CREATE TABLE big (id INT PRIMARY KEY, body VARCHAR(700))",
        "INSERT INTO big SELECT seq, REPEAT(SHA2(seq, 256), 10) FROM seq_1_to_60000",
        "CREATE TABLE small (id INT PRIMARY KEY, v INT)",
        "INSERT INTO small SELECT seq, seq FROM seq_1_to_100",
        "ANALYZE TABLE big, small",
    ] {
        c.query_drop(s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    db
}

/// Follows a backup's stderr: sends each line that says a snapshot opened
/// (the backup's own log, so the test acts at that moment and not by
/// polling the server) and returns everything the backup printed.
fn follow_snapshots(
    child: &mut std::process::Child,
) -> (
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<String>,
) {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr_pipe)) {
            let Ok(line) = line else { break };
            // The JSON log's message exactly (the restart warning also
            // says "the snapshot opened").
            if line.contains("\"message\":\"snapshot opened\"") {
                let _ = tx.send(line.clone());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    (rx, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alter_during_the_backup_starts_the_snapshot_over() {
    let svc = Services::get();
    let db = big_and_small(&svc, "ddl_once").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.local_config(dir.path(), &db, "backup:\n  chunk_size: 1MiB\n");
    let mut child = svc
        .wpdr_cmd(&cfg, &["--output", "json", "backup"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (opened, reader) = follow_snapshots(&mut child);
    // Rebuild the small table after the snapshot opened and before it is
    // read (it is read last, after the big table's many chunks).
    assert!(
        opened.recv_timeout(Duration::from_secs(60)).is_ok(),
        "the backup never opened a snapshot"
    );
    let mut c = svc.admin(Some(&db)).await;
    c.query_drop("ALTER TABLE small ADD COLUMN added INT NOT NULL DEFAULT 7, ALGORITHM=COPY")
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let err = reader.join().unwrap();
    let set = json(&out);
    assert!(
        err.contains("starting it over"),
        "the ALTER was not noticed: {err}"
    );
    // The set is of one moment: the new column is in its schema and rows.
    let id = set["id"].as_str().unwrap();
    let show = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "show", id]));
    let small = show["database"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "small")
        .unwrap()
        .clone();
    assert_eq!(small["columns"], serde_json::json!(["id", "v", "added"]));
    let target = svc.fresh_database("ddl_once_restored").await;
    let url = format!(
        "mysql://{}@127.0.0.1:{}",
        svc.var("WPDR_TEST_DB_USER"),
        svc.db_port()
    );
    let r = json(
        &svc.wpdr_cmd(
            &cfg,
            &[
                "--output",
                "json",
                "restore",
                "db",
                id,
                "--target",
                &url,
                "--database",
                &target,
                "--force",
            ],
        )
        .env("WPDR_TARGET_PASSWORD", svc.var("WPDR_TEST_DB_PASSWORD"))
        .output()
        .unwrap(),
    );
    assert_eq!(r["ok"], true, "{r}");
    let mut t = svc.admin(Some(&target)).await;
    let sum: Option<i64> = t.query_first("SELECT SUM(added) FROM small").await.unwrap();
    assert_eq!(sum, Some(700));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_that_never_settles_fails_the_backup_and_stores_nothing() {
    let svc = Services::get();
    let db = big_and_small(&svc, "ddl_storm").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.local_config(dir.path(), &db, "backup:\n  chunk_size: 1MiB\n");
    let mut child = svc
        .wpdr_cmd(&cfg, &["backup"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // In every attempt, right as its snapshot opens (the backup's own log
    // says so), the small table (read last) is rebuilt: no attempt can
    // produce a set of one moment.
    let (rx, reader) = follow_snapshots(&mut child);
    let mut c = svc.admin(Some(&db)).await;
    for round in 0..3 {
        let opened = rx.recv_timeout(Duration::from_secs(60));
        assert!(
            opened.is_ok(),
            "attempt {} never opened a snapshot",
            round + 1
        );
        let sql = if round % 2 == 0 {
            "ALTER TABLE small ADD COLUMN churn INT, ALGORITHM=COPY"
        } else {
            "ALTER TABLE small DROP COLUMN churn, ALGORITHM=COPY"
        };
        c.query_drop(sql).await.unwrap();
    }
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(20), "{err}");
    assert!(err.contains("small") && err.contains("Rerun"), "{err}");
    let listed = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "list"]));
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
    // Nothing of the attempts is left in the store either.
    let store = dir.path().join("store");
    let leftovers: Vec<_> = files_under(&store)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/db/"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Writes each id to a MyISAM table and then to an InnoDB table, as a
/// plugin keeping a non-transactional index of its rows would.
async fn myisam_writer(
    svc: &Services,
    db: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let mut c = svc.admin(Some(db)).await;
    tokio::spawn(async move {
        let mut id = 0u64;
        while !stop.load(Ordering::Relaxed) {
            id += 1;
            c.exec_drop("INSERT INTO side_index VALUES (?)", (id,))
                .await
                .unwrap();
            c.exec_drop("INSERT INTO orders VALUES (?)", (id,))
                .await
                .unwrap();
        }
        id
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn myisam_tables_are_read_at_the_snapshot_or_flagged() {
    let svc = Services::get();
    let db = big_and_small(&svc, "myisam").await;
    let mut c = svc.admin(Some(&db)).await;
    c.query_drop("CREATE TABLE side_index (id BIGINT PRIMARY KEY) ENGINE=MyISAM")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE orders (id BIGINT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .unwrap();

    for (connections, consistent) in [(2, true), (1, false)] {
        c.query_drop("TRUNCATE TABLE side_index").await.unwrap();
        c.query_drop("TRUNCATE TABLE orders").await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = myisam_writer(&svc, &db, stop.clone()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = svc.local_config(dir.path(), &db, "backup:\n  chunk_size: 1MiB\n");
        let out = tokio::task::spawn_blocking({
            let svc = Services::get();
            let cfg = cfg.clone();
            move || {
                let mut cmd = svc.wpdr_cmd(&cfg, &["--output", "json", "backup"]);
                cmd.env("WPDR_DB_CONNECTIONS", connections.to_string());
                cmd.output().unwrap()
            }
        })
        .await
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        writer.await.unwrap();
        let id = json(&out)["id"].as_str().unwrap().to_string();
        let show = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "show", &id]));
        let tables = show["database"]["tables"].as_array().unwrap();
        let rows = |name: &str| {
            tables.iter().find(|t| t["name"] == name).unwrap()["rows"]
                .as_u64()
                .unwrap()
        };
        let (side, orders) = (rows("side_index"), rows("orders"));
        let flagged = &show["database"]["consistency"]["not_at_snapshot"];
        if consistent {
            // Read while commits (and MyISAM writes) were held: at most the
            // one id written to MyISAM whose InnoDB insert was waiting.
            assert!(flagged.is_null(), "{flagged}");
            assert!(
                side >= orders && side <= orders + 1,
                "side_index {side} vs orders {orders}: MyISAM not read at the snapshot"
            );
        } else {
            assert_eq!(flagged, &serde_json::json!(["side_index"]));
            let text = stdout(&svc.wpdr(&cfg, &["sets", "show", &id]));
            assert!(text.contains("WARNING    not consistent"), "{text}");
        }
    }
}
