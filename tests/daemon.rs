//! The daemon against the real services: a backup schedule firing every
//! second never overlaps itself (an overlap would fail on the site lock), the
//! metrics tell the truth, a manual trigger works, and SIGTERM drains cleanly.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_second_schedule_never_overlaps_and_sigterm_drains() {
    let svc = Services::get();
    // Large enough that one backup takes longer than a second.
    let db = svc
        .database_with(
            "daemon",
            &[
                "CREATE TABLE wp_posts (ID INT PRIMARY KEY, body LONGTEXT)",
                "INSERT INTO wp_posts SELECT seq, REPEAT(SHA2(seq, 512), 60) FROM seq_1_to_20000",
            ],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(dir.path(), &db, "retention:\n  keep_last: 100\n");
    let sched = dir.path().join("schedules");
    std::fs::create_dir(&sched).unwrap();
    std::fs::write(
        sched.join("backup.yaml"),
        "name: every-second\njob: backup\ncron: \"* * * * * *\"\nrun_missed_on_start: true\n",
    )
    .unwrap();
    std::fs::write(
        sched.join("verify.yaml"),
        "name: verify\njob: verify-latest\ncron: \"0 0 0 1 1 *\"\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = svc.spawn_daemon(&cfg, &sched, port, 60);
    wait_listening(port);
    assert_eq!(http(port, "GET", "/healthz").0, 200);
    // Let it run for a while with a tick every second.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, m) = http(port, "GET", "/metrics");
        if metric(&m, "wpdr_job_successes_total{job=\"every-second\"") >= 3.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 3 backups in 60 s:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (_, m) = http(port, "GET", "/metrics");
    assert!(
        metric(&m, "wpdr_job_skipped_overlap_total{job=\"every-second\"") >= 1.0,
        "backups take > 1 s, so ticks must have been skipped:\n{m}"
    );
    assert!(
        !m.contains("reason=\"locked\""),
        "a run overlapped another:\n{m}"
    );
    assert!(metric(&m, "wpdr_newest_set_age_seconds") >= 0.0);
    assert_eq!(http(port, "GET", "/readyz").0, 200);
    // A manual trigger of another schedule.
    assert_eq!(http(port, "POST", "/run/verify").0, 202);
    assert_eq!(http(port, "POST", "/run/nope").0, 404);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, m) = http(port, "GET", "/metrics");
        if metric(&m, "wpdr_job_successes_total{job=\"verify\"") >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "manual verify did not succeed:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // SIGTERM: exits 0 after draining; everything listed is complete and verifies.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = child.wait().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "daemon exit {status:?}\n{log}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        log.contains("shutdown requested") && log.contains("daemon stopped"),
        "{log}"
    );
    // JSON logs (stderr is not a terminal).
    assert!(
        log.lines()
            .filter(|l| !l.is_empty())
            .all(|l| l.starts_with('{')),
        "{log}"
    );
    let sets = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "list"]));
    let ids: Vec<&str> = sets
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(ids.len() >= 3);
    for id in ids {
        assert!(svc.wpdr(&cfg, &["verify", id]).status.success(), "{id}");
    }
}

#[tokio::test]
async fn bad_schedules_are_refused_with_the_file_named() {
    let svc = Services::get();
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(dir.path(), "unused", "");
    let sched = dir.path().join("schedules");
    std::fs::create_dir(&sched).unwrap();
    std::fs::write(
        sched.join("broken.yaml"),
        "name: b\njob: backup\ncron: \"every night\"\n",
    )
    .unwrap();
    let o = svc.wpdr(
        &cfg,
        &[
            "daemon",
            "--schedules",
            sched.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("broken.yaml") && stderr(&o).contains("every night"),
        "{}",
        stderr(&o)
    );
}

/// Two daemon replicas sharing one Lease (kube-fake-client) and the real store:
/// only the leader runs jobs; when it shuts down, the other takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_runs_jobs() {
    use wpdr::cluster::lease::LeaderElector;
    use wpdr::daemon::{run_until, DaemonOptions};
    let svc = Services::get();
    let db = svc.fresh_database("leader").await;
    let mut c = svc.admin(Some(&db)).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t SELECT seq FROM seq_1_to_100")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = svc.s3_config(dir.path(), &db, "");
    let (cfg, store) = svc.open_store(&cfg_path).await;
    let store = std::sync::Arc::new(store);
    let sched = dir.path().join("schedules");
    std::fs::create_dir(&sched).unwrap();
    std::fs::write(
        sched.join("b.yaml"),
        "name: every-second\njob: backup\ncron: \"* * * * * *\"\n",
    )
    .unwrap();
    let kube = kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap();

    let mut stops = Vec::new();
    let mut ports = Vec::new();
    let mut tasks = Vec::new();
    for name in ["pod-a", "pod-b"] {
        let port = free_port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let opts = DaemonOptions {
            schedules_dir: sched.clone(),
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            grace: Duration::from_secs(30),
            leader: Some(LeaderElector::new(
                kube.clone(),
                "wp",
                "wpdr-test",
                name,
                Duration::from_secs(3),
            )),
        };
        tasks.push(tokio::spawn(run_until(
            cfg.clone(),
            store.clone(),
            opts,
            async move {
                let _ = rx.await;
            },
        )));
        stops.push(tx);
        ports.push(port);
        // pod-a starts first and takes the Lease.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (pa, pb) = (ports[0], ports[1]);
    let scrape = |port: u16| {
        let (_, m) = http(port, "GET", "/metrics");
        (
            metric(&m, "wpdr_daemon_leader"),
            metric(&m, "wpdr_job_runs_total{job=\"every-second\""),
        )
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (a_leads, a_runs) = tokio::task::spawn_blocking(move || scrape(pa))
        .await
        .unwrap();
    let (b_leads, b_runs) = tokio::task::spawn_blocking(move || scrape(pb))
        .await
        .unwrap();
    assert_eq!((a_leads, b_leads), (1.0, 0.0));
    assert!(
        a_runs >= 1.0 && b_runs == 0.0,
        "a ran {a_runs}, b ran {b_runs}"
    );
    assert_eq!(
        tokio::task::spawn_blocking(move || http(pb, "POST", "/run/every-second").0)
            .await
            .unwrap(),
        409
    );

    // The leader shuts down and releases the Lease: the other replica takes over.
    let mut stops = stops.into_iter();
    stops.next().unwrap().send(()).unwrap();
    tasks.remove(0).await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (b_leads, b_runs) = tokio::task::spawn_blocking(move || scrape(pb))
            .await
            .unwrap();
        if b_leads == 1.0 && b_runs >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "pod-b never took over");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stops.next().unwrap().send(()).unwrap();
    tasks.remove(0).await.unwrap().unwrap();
}

/// SIGTERM with a backup that outlasts the grace period: the run is abandoned,
/// no complete-looking set appears, and the daemon still exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_longer_than_the_grace_period_is_abandoned_cleanly() {
    let svc = Services::get();
    let db = svc
        .database_with(
            "abandon",
            &[
                "CREATE TABLE wp_posts (ID INT PRIMARY KEY, body LONGBLOB)",
                "INSERT INTO wp_posts SELECT seq, CONCAT(RANDOM_BYTES(1024), RANDOM_BYTES(1024), RANDOM_BYTES(1024), RANDOM_BYTES(1024)) FROM seq_1_to_30000",
            ],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(dir.path(), &db, "");
    let sched = dir.path().join("schedules");
    std::fs::create_dir(&sched).unwrap();
    // Never due by the clock; runs once at start because it was "missed".
    std::fs::write(
        sched.join("b.yaml"),
        "name: once\njob: backup\ncron: \"0 0 0 1 1 *\"\nrun_missed_on_start: true\n",
    )
    .unwrap();
    let port = free_port();
    let child = svc.spawn_daemon(&cfg, &sched, port, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let (_, m) = http(port, "GET", "/metrics");
            if metric(&m, "wpdr_job_running{job=\"once\"") == 1.0 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the missed run never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (status, log) = stop_daemon(child);
    assert!(status.success(), "{log}");
    assert!(
        log.contains("abandoned at the end of the grace period"),
        "{log}"
    );
    let sets = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "list"]));
    assert_eq!(
        sets.as_array().unwrap().len(),
        0,
        "an abandoned backup must not leave a set: {sets}"
    );
}

/// `POST /run/<schedule>` starts a backup: with a trigger token configured it
/// needs the token (a wrong or missing one is refused, 401, and runs
/// nothing); probes and /metrics stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_run_needs_the_trigger_token_when_one_is_set() {
    let svc = Services::get();
    let db = svc.fresh_database("trigger").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(dir.path(), &db, "");
    let sched = dir.path().join("schedules");
    std::fs::create_dir(&sched).unwrap();
    std::fs::write(
        sched.join("b.yaml"),
        "name: nightly\njob: verify-latest\ncron: \"0 0 0 1 1 *\"\n",
    )
    .unwrap();
    let port = free_port();
    let child = svc
        .daemon_cmd(&cfg, &sched, port, 5)
        .env("WPDR_DAEMON_TRIGGER_TOKEN", "tr1gger-t0ken")
        .spawn()
        .unwrap();
    wait_listening(port);
    assert_eq!(http(port, "GET", "/healthz").0, 200);
    assert_eq!(http(port, "GET", "/metrics").0, 200);
    let (status, body) = http(port, "POST", "/run/nightly");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Bearer"), "{body}");
    let wrong = http_with(
        port,
        "POST",
        "/run/nightly",
        "Authorization: Bearer nope\r\n",
    );
    assert_eq!(wrong.0, 401);
    let (_, m) = http(port, "GET", "/metrics");
    assert_eq!(
        metric(&m, "wpdr_job_runs_total{job=\"nightly\""),
        0.0,
        "a refused trigger runs nothing: {m}"
    );
    let ok = http_with(
        port,
        "POST",
        "/run/nightly",
        "Authorization: Bearer tr1gger-t0ken\r\n",
    );
    assert_eq!(ok.0, 202, "{}", ok.1);
    let (status, log) = stop_daemon(child);
    assert!(status.success(), "{status:?} {log}");
    assert!(
        !log.contains("tr1gger-t0ken"),
        "the token must not be logged: {log}"
    );
}
