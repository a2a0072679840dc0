//! The steps against an environment of their own: a local store, a set
//! without data, targets as a test needs them, no executor and no journal.
//! What needs a real database, bucket or cluster is tested in tests/.

use super::*;
use crate::catalog::Catalog;
use crate::config::{CacheKind, CacheServer, Config, Endpoint};
use crate::exit::ExitCode;
use crate::restore::step::{RestoreContext, StepLog};
use crate::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

struct Fake {
    _dir: tempfile::TempDir,
    ctx: RestoreContext,
    manifest: Manifest,
    targets: Targets,
}

async fn fake() -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("site: s\nstore:\n  path: {}\n", dir.path().display());
    let cfg = Config::from_yaml(&yaml, &std::collections::HashMap::new()).unwrap();
    let store = Arc::new(Store::open_site(&cfg, None).await.unwrap());
    let manifest = Manifest::empty_for_tests("20261129T120000Z-abcd", "s");
    Fake {
        _dir: dir,
        ctx: RestoreContext {
            cfg,
            store,
            kube: None,
            cache_password: None,
            create_namespace: true,
        },
        manifest,
        targets: Targets {
            namespace: "restored".into(),
            database: None,
            media: None,
            caches: Vec::new(),
            site_url: None,
        },
    }
}

fn env<'a>(f: &'a Fake, catalog: &'a Catalog<'a>, kinds: &[StepKind]) -> StepEnv<'a> {
    StepEnv {
        ctx: &f.ctx,
        catalog,
        manifest: &f.manifest,
        targets: &f.targets,
        earlier: BTreeMap::new(),
        resumed: false,
        drill: false,
        has_cluster_step: kinds.contains(&StepKind::ClusterObjects),
        kinds: kinds.iter().copied().collect::<BTreeSet<_>>(),
        pitr: None,
        media_at: None,
        log: StepLog::new("t"),
    }
}

fn step(kind: StepKind, timeout_seconds: u64) -> Step {
    Step {
        id: "t".into(),
        kind,
        after: Vec::new(),
        timeout_seconds,
    }
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn closed_database() -> (Endpoint, String) {
    let (e, _) = Endpoint::from_url(
        &format!("mysql://root@127.0.0.1:{}", closed_port()),
        None,
        &Default::default(),
    )
    .unwrap();
    (e, "wp".into())
}

#[tokio::test]
async fn steps_without_their_target_stop_with_a_config_error_naming_it() {
    let f = fake().await;
    let catalog = Catalog::new(&f.ctx.store, "s", &f.ctx.cfg.site_prefix());
    let e = env(&f, &catalog, &[StepKind::ClusterObjects]);
    for (kind, names) in [
        (StepKind::ClusterObjects, "KUBECONFIG"),
        (StepKind::WaitDatabase, "restore.database"),
        (StepKind::DatabaseLoad, "restore.database"),
    ] {
        let err = run(&step(kind, 5), &e).await.unwrap_err();
        assert_eq!(err.exit, ExitCode::Config, "{kind:?}: {}", err.message);
        assert!(err.message.contains(names), "{kind:?}: {}", err.message);
    }
}

#[tokio::test]
async fn steps_with_nothing_to_do_say_so_and_succeed() {
    let f = fake().await;
    let catalog = Catalog::new(&f.ctx.store, "s", &f.ctx.cfg.site_prefix());
    let e = env(&f, &catalog, &[]);
    let r = run(&step(StepKind::UrlRewrite, 5), &e).await.unwrap();
    assert_eq!(r["rewritten"], false);
    let r = run(&step(StepKind::CacheFlush, 5), &e).await.unwrap();
    assert_eq!(r["flushed"], serde_json::json!([]));
    let r = run(&step(StepKind::WaitApplication, 5), &e).await.unwrap();
    assert_eq!(r["waited"], serde_json::json!([]));
    let r = run(&step(StepKind::MediaRestore, 5), &e).await.unwrap();
    assert_eq!(r["objects"], 0);
    // Checks of a plan that restored nothing compare nothing, and pass.
    run(&step(StepKind::Checks, 5), &e).await.unwrap();
    let log = e.log.take();
    assert!(
        log.iter().any(|l| l.contains("nothing to flush")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.contains("no media")), "{log:?}");
}

#[tokio::test]
async fn a_database_not_up_yet_is_waited_for_not_failed() {
    let mut f = fake().await;
    f.targets.database = Some(closed_database());
    let catalog = Catalog::new(&f.ctx.store, "s", &f.ctx.cfg.site_prefix());
    let e = env(&f, &catalog, &[]);
    // The executor's timeout bounds the wait; here, the test's own.
    let waited = tokio::time::timeout(
        std::time::Duration::from_millis(2500),
        run(&step(StepKind::WaitDatabase, 60), &e),
    )
    .await;
    assert!(
        waited.is_err(),
        "a closed port must be waited for: {waited:?}"
    );
    let log = e.log.take();
    assert!(log.iter().any(|l| l.starts_with("not ready")), "{log:?}");
    // Each distinct state is logged once, not once a second.
    assert_eq!(log.len(), 1, "{log:?}");
}

#[tokio::test]
async fn a_cache_that_does_not_answer_fails_the_flush_naming_it() {
    let mut f = fake().await;
    f.targets.caches = vec![CacheServer {
        kind: CacheKind::Redis,
        host: "127.0.0.1".into(),
        port: closed_port(),
    }];
    let catalog = Catalog::new(&f.ctx.store, "s", &f.ctx.cfg.site_prefix());
    let e = env(&f, &catalog, &[]);
    let err = run(&step(StepKind::CacheFlush, 1), &e).await.unwrap_err();
    assert!(err.message.contains("127.0.0.1"), "{}", err.message);
}

#[tokio::test]
async fn a_set_with_media_but_no_index_artifact_is_an_integrity_failure() {
    let mut f = fake().await;
    f.manifest.media = Some(
        serde_json::from_value(serde_json::json!({
            "source": "s3://up at x", "offsite": "s3://off at x",
            "retained_prefix": ".wpdr-retained/", "index_artifact": "media/index.jsonl.zst",
            "objects": 1, "bytes": 1, "copied": 0, "copied_bytes": 0, "retained": 0, "deleted": 0,
            "not_mirrored_total": 0, "missing_total": 0,
        }))
        .unwrap(),
    );
    let catalog = Catalog::new(&f.ctx.store, "s", &f.ctx.cfg.site_prefix());
    let e = env(&f, &catalog, &[StepKind::MediaRestore]);
    let err = run(&step(StepKind::MediaRestore, 5), &e).await.unwrap_err();
    assert_eq!(err.exit, ExitCode::Integrity, "{}", err.message);
    assert!(
        err.message.contains("media/index.jsonl.zst"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn checks_read_the_restored_database_again() {
    // After a planned load the checks re-read every table from the target:
    // a target that went away fails them, naming it.
    let mut f = fake().await;
    f.manifest.database = Some(
        serde_json::from_value(serde_json::json!({
            "database": "wp", "source": "x", "server_version": "10.11",
            "default_charset": "utf8mb4", "default_collation": "utf8mb4_general_ci",
            "consistency": {"method": "m", "connections": 1, "commits_blocked_ms": 0.0},
            "binlog": null, "gtid_binlog_pos": null, "max_statement_bytes": 1048576,
            "raw_bytes": 0,
            "tables": [
                {"name": "a", "engine": "InnoDB", "columns": ["id"], "primary_key": ["id"], "rows": 1, "checksum": "0", "schema_artifact": "a.sql.zst", "data_artifacts": []},
                {"name": "b", "engine": "InnoDB", "columns": ["id"], "primary_key": ["id"], "rows": 1, "checksum": "0", "schema_artifact": "b.sql.zst", "data_artifacts": []}
            ],
            "objects": []
        }))
        .unwrap(),
    );
    f.targets.database = Some(closed_database());
    let catalog = Catalog::new(&f.ctx.store, "s", &f.ctx.cfg.site_prefix());
    let mut e = env(&f, &catalog, &[StepKind::DatabaseLoad]);
    e.earlier
        .insert(StepKind::DatabaseLoad, serde_json::json!({"tables": 1}));
    let err = run(&step(StepKind::Checks, 5), &e).await.unwrap_err();
    assert_eq!(err.exit, ExitCode::DatabaseUnreachable, "{}", err.message);
    let (target, _) = f.targets.database.as_ref().unwrap();
    assert!(err.message.contains(&target.display()), "{}", err.message);
}

#[tokio::test]
async fn touches_says_what_each_step_will_change() {
    let mut f = fake().await;
    assert!(touches(&f.targets, StepKind::DatabaseLoad, &f.manifest)
        .contains("NO restore.database CONFIGURED"));
    assert!(touches(&f.targets, StepKind::UrlRewrite, &f.manifest).starts_with("nothing"));
    f.targets.site_url = Some("https://restored.example".into());
    f.targets.database = Some(closed_database());
    let t = touches(&f.targets, StepKind::UrlRewrite, &f.manifest);
    assert!(
        t.contains("https://restored.example") && t.contains("database 'wp'"),
        "{t}"
    );
    assert!(touches(&f.targets, StepKind::ClusterObjects, &f.manifest).contains("restored"));
}
