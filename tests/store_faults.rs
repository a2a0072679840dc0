//! A real fault in the S3 service: Garage is killed (SIGKILL) in the middle
//! of a backup's multipart uploads and restarted a moment later. The SDK's
//! retries with backoff carry the backup through, and the set verifies.
//! This binary restarts the shared dev Garage, so it holds a single test.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_survives_a_restart_of_the_s3_server() {
    let svc = Services::get();
    let dev = svc.var("WPDR_DEV_DIR");
    let db = svc.fresh_database("s3fault").await;
    let mut c = svc.admin(Some(&db)).await;
    c.query_drop("CREATE TABLE wp_uploads (id INT PRIMARY KEY, data LONGBLOB)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO wp_uploads SELECT seq, CONCAT(RANDOM_BYTES(1024), RANDOM_BYTES(1024), RANDOM_BYTES(1024), RANDOM_BYTES(1024)) FROM seq_1_to_12000")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(dir.path(), &db, "");
    let mut child = svc.spawn_wpdr(&cfg, &["--output", "json", "backup"]);
    // Wait until the snapshot is open and data is flowing, then kill the S3 server outright.
    let stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut log = String::new();
        for line in std::io::BufReader::new(stderr_pipe)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("snapshot opened") {
                let _ = tx.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the backup never opened its snapshot");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup finished before the fault; make the data larger"
    );
    unsafe { libc::kill(garage_pid(&dev), libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(800));
    restart_garage(&svc);
    let out = child.wait_with_output().unwrap();
    let log = reader.join().unwrap();
    assert!(
        out.status.success(),
        "backup did not survive the S3 restart:\n{log}"
    );
    let set = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = svc.wpdr(&cfg, &["verify", &set]);
    assert!(v.status.success(), "{}", stdout(&v));
}
