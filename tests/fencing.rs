//! Fenced locks, with real pauses: a backup and a binlog archiver are
//! stopped with SIGSTOP past their lock's TTL, another run takes the lock
//! over and finishes, and the paused one is resumed with SIGCONT. The
//! resumed holder must stop without committing anything: no set of its own,
//! no segment in the archive after the takeover, and the other run's work
//! intact.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The lock's TTL in these tests (the smallest the config allows): the
/// lease is three quarters of it.
const TTL: u64 = 5;

fn pause(child: &Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
}

fn resume(child: &Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_paused_past_its_lease_commits_nothing_after_a_takeover() {
    let svc = Services::get();
    let db = svc.fresh_database("fenced").await;
    let mut c = svc.admin(Some(&db)).await;
    for s in [
        "CREATE TABLE big (id INT PRIMARY KEY, body VARCHAR(700))",
        "INSERT INTO big SELECT seq, REPEAT(SHA2(seq, 256), 10) FROM seq_1_to_60000",
        "ANALYZE TABLE big",
    ] {
        c.query_drop(s).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.local_config(
        dir.path(),
        &db,
        &format!("backup:\n  chunk_size: 1MiB\n  lock_ttl_seconds: {TTL}\n"),
    );
    let paused = svc
        .wpdr_cmd(&cfg, &["--output", "json", "backup"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Pause it while it writes chunks.
    let chunks = dir.path().join("store/wpdr/testsite/sets");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let written = files_under(&chunks)
            .iter()
            .filter(|p| p.to_string_lossy().contains("2-data-"))
            .count();
        if written >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the backup wrote no chunk");
        std::thread::sleep(Duration::from_millis(20));
    }
    pause(&paused);
    std::thread::sleep(Duration::from_secs(TTL + 1));

    // Its lock has expired: another backup takes it over and commits.
    let out = svc.wpdr(&cfg, &["--output", "json", "backup"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let winner = json(&out)["id"].as_str().unwrap().to_string();

    resume(&paused);
    let out = paused.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lost its backup lock"),
        "{}",
        stderr(&out)
    );
    let sets = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "list"]));
    let ids: Vec<&str> = sets
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [winner.as_str()]);
    // The winner's set is whole, and the lock was not taken back.
    let v = json(&svc.wpdr(&cfg, &["--output", "json", "verify", &winner]));
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    assert_released(&dir.path().join("store/wpdr/testsite/lock.json"));
}

/// Segment indexes of the archive, as (start, end) positions in name order.
fn segment_indexes(store: &std::path::Path) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = files_under(store)
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().contains("/binlog/segments/")
                && p.extension().is_some_and(|e| e == "json")
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archiver_paused_past_its_lease_adds_nothing_to_the_chain() {
    let svc = Services::get();
    let (db, _setup) = orders_server().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wpdr.yaml");
    std::fs::write(
        &cfg,
        format!(
            "site: fence\nstore:\n  type: local\n  path: {}\ndatabase:\n  host: 127.0.0.1\n  port: {}\n  user: {TEST_USER}\n  name: shop\n  binlog:\n    segment_seconds: 1\nbackup:\n  lock_ttl_seconds: {TTL}\n",
            dir.path().join("store").display(),
            db.port
        ),
    )
    .unwrap();
    assert!(wpdr_env(&svc, &cfg, &["backup"], &[]).status.success());
    let insert = |from: u32, to: u32| {
        let port = db.port;
        async move {
            let mut c = connect(port, TEST_USER, TEST_PASSWORD, Some("shop")).await;
            for i in from..=to {
                c.exec_drop("INSERT INTO orders VALUES (?, 'order')", (i,))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let paused = svc
        .wpdr_cmd(&cfg, &["binlog", "archive"])
        .env("WPDR_DB_PASSWORD", TEST_PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    insert(1, 60).await;
    let store = dir.path().join("store");
    let deadline = Instant::now() + Duration::from_secs(60);
    while segment_indexes(&store).is_empty() {
        assert!(Instant::now() < deadline, "the archiver wrote no segment");
        std::thread::sleep(Duration::from_millis(50));
    }
    pause(&paused);
    // Transactions the paused archiver has read but not committed, and more.
    insert(61, 120).await;
    std::thread::sleep(Duration::from_secs(TTL + 1));
    let before_takeover = segment_indexes(&store).len();

    // Another archiver takes the lock over and catches up.
    let out = wpdr_env(
        &svc,
        &cfg,
        &["--output", "json", "binlog", "archive", "--until-caught-up"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let after_takeover = segment_indexes(&store);
    assert!(after_takeover.len() > before_takeover);

    // The paused one wakes up: it must stop, and write no segment.
    resume(&paused);
    insert(121, 130).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut paused = paused;
    let status = loop {
        if let Some(s) = paused.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the resumed archiver kept running"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(paused.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(9), "{err}");
    assert!(err.contains("lost its"), "{err}");
    let chain = segment_indexes(&store);
    assert_eq!(
        chain.len(),
        after_takeover.len(),
        "the resumed archiver committed a segment"
    );
    // One chain: each segment starts where the one before ended.
    for pair in chain.windows(2) {
        assert_eq!(pair[1]["start"], pair[0]["end"], "{chain:#?}");
    }
    // And every order up to the takeover's catch-up is recoverable once.
    let w = json(&recoverable(&svc, &cfg));
    assert_eq!(w["gaps"].as_array().unwrap().len(), 0, "{w}");
}
