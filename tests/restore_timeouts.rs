//! A restore step that overruns its timeout is stopped, and so are its
//! workers: no detached task goes on writing into the database being
//! restored (or dropped) after the step has failed.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_past_its_timeout_leaves_no_worker_writing() {
    let svc = Services::get();
    let db = svc
        .database_with(
            "tmo_src",
            &[
                "CREATE TABLE big (id INT PRIMARY KEY, body VARCHAR(700))",
                "INSERT INTO big SELECT seq, REPEAT(SHA2(seq, 256), 10) FROM seq_1_to_100000",
                "ANALYZE TABLE big",
            ],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let namespace = format!("tmo-{:06x}", rand::random::<u32>() & 0xffffff);
    let cfg = svc.local_restore_config(dir.path(), &db);
    let set = svc.backup(&cfg);
    let plan = dir.path().join("tight.yaml");
    std::fs::write(
        &plan,
        "name: tight\ndescription: a database load with a timeout it cannot meet\nsteps:\n  - id: database-server\n    kind: wait-database\n    timeout_seconds: 60\n  - id: database\n    kind: database-load\n    after: [database-server]\n    timeout_seconds: 1\n",
    )
    .unwrap();
    // In this process, so that a detached worker would still be alive to be seen.
    let (config, store) = svc.open_store(&cfg).await;
    let ctx = wpdr::jobs::JobContext::new(config, std::sync::Arc::new(store));
    let started = Instant::now();
    let outcome = wpdr::jobs::restore::restore_site(
        &ctx,
        wpdr::jobs::restore::SiteRestoreRequest {
            set: &set,
            namespace: &namespace,
            plan: wpdr::restore::run::load_plan(plan.to_str().unwrap()).unwrap(),
            site_url: None,
            create_namespace: false,
            point: None,
        },
    )
    .await
    .unwrap();
    use wpdr::jobs::JobReport;
    assert_eq!(
        outcome.verdict().exit.code(),
        15,
        "{:?}",
        outcome.journal.steps
    );
    assert!(started.elapsed() < Duration::from_secs(60));

    // The step is over, in whichever phase its timeout caught it (loading,
    // building indexes or verifying): no worker may still be running.
    let mut c = svc.admin(None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy: Option<i64> = c
        .query_first(format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{namespace}' AND COMMAND <> 'Sleep'"
        ))
        .await
        .unwrap();
    assert_eq!(busy, Some(0), "sessions still working in {namespace}");
    let loaded: Option<i64> = c
        .query_first(format!("SELECT COUNT(*) FROM `{namespace}`.big"))
        .await
        .unwrap_or(Some(0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later: Option<i64> = c
        .query_first(format!("SELECT COUNT(*) FROM `{namespace}`.big"))
        .await
        .unwrap_or(Some(0));
    assert_eq!(loaded, later, "rows kept arriving after the step timed out");
    let _ = c
        .query_drop(format!("DROP DATABASE IF EXISTS `{namespace}`"))
        .await;
}
