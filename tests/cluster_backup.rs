//! A backup with a namespace configured records the sanitised objects, the
//! Secrets sealed with the configured key, and the image digests that run;
//! `sets show` lists them and `verify` covers the new artifacts.

mod common;

use common::*;
use kube_fake_client::ClientBuilder;
use serde_json::json;
use std::sync::Arc;
use wpdr::catalog::Catalog;
use wpdr::cluster::seal::{open, SealKey};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_records_namespace_objects_sealed_secrets_and_digests() {
    let svc = Services::get();
    let db = svc
        .database_with(
            "clusterbk",
            &[
                "CREATE TABLE t (id INT PRIMARY KEY)",
                "INSERT INTO t VALUES (1)",
            ],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = svc.s3_config(dir.path(), &db, "cluster:\n  namespace: shop\n");
    let key = SealKey::generate();
    let (mut cfg, store) = svc.open_store(&cfg_path).await;
    cfg.cluster.secrets_key = Some(key.clone());
    let kube = fake_shop(None)
        .with_object::<k8s_openapi::api::core::v1::Secret>(serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "shop"}, "type": "Opaque", "stringData": {"password": "top-secret-pw"}
        })).unwrap())
        // A credential kept outside Secrets: named in the set, value never.
        .with_object::<k8s_openapi::api::core::v1::ConfigMap>(serde_json::from_value(json!({
            "metadata": {"name": "wp-env", "namespace": "shop"}, "data": {"SMTP_PASSWORD": "cm-held-pw", "SMTP_HOST": "mail"}
        })).unwrap())
        .build()
        .await
        .unwrap();
    let store = Arc::new(store);
    let m = wpdr::jobs::backup::run_with(
        &cfg,
        store.clone(),
        "manual",
        Arc::new(|_| {}),
        Some(kube.clone()),
    )
    .await
    .unwrap();
    let c = m.cluster.clone().expect("cluster section");
    assert_eq!((c.namespace.as_str(), c.objects, c.secrets), ("shop", 2, 1));
    assert_eq!(
        c.exposed_credentials.len(),
        1,
        "{:?}",
        c.exposed_credentials
    );
    assert_eq!(c.exposed_credentials[0].field, "data.SMTP_PASSWORD");
    assert_eq!(c.images[0].digests, vec!["sha256:feed"]);
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    assert!(catalog.verify(&m, false, &|_| {}).await.unwrap().ok());
    // The sealed Secrets reveal nothing without the key, and open with it.
    let sealed = store
        .get_bytes(&catalog.key(&m.set_id, "cluster/secrets.sealed"))
        .await
        .unwrap();
    assert!(!sealed.windows(13).any(|w| w == b"top-secret-pw"));
    let plain = String::from_utf8(open(&key, &sealed).unwrap()).unwrap();
    assert!(plain.contains("top-secret-pw"));
    assert!(open(&SealKey::generate(), &sealed).is_err());
    let manifest_text = serde_json::to_string(&m).unwrap();
    assert!(!manifest_text.contains("top-secret-pw"));
    // `sets show` lists the digests.
    let shown = ok(&svc.wpdr(&cfg_path, &["sets", "show", &m.set_id]));
    assert!(
        shown.contains("Deployment/wordpress") && shown.contains("sha256:feed"),
        "{shown}"
    );
    assert!(
        shown.contains("CREDENTIALS OUTSIDE SECRETS: 1")
            && shown.contains("ConfigMap/wp-env data.SMTP_PASSWORD")
            && !shown.contains("cm-held-pw"),
        "{shown}"
    );
    assert!(!manifest_text.contains("cm-held-pw"));

    // Restore into a fresh namespace of the same (fake) cluster: objects exist there,
    // the image is pinned to the digest that ran, the Secret is back.
    let opts = |ns: &'static str, key: Option<&'static SealKey>, force: bool, dry: bool| {
        wpdr::restore::ClusterRestoreOptions {
            namespace: ns,
            host_map: &[],
            key,
            skip_secrets: false,
            dry_run: dry,
            force,
            // kube-fake-client cannot model Namespace objects (its router reads
            // /api/v1/namespaces/X as a namespaced prefix); real clusters can.
            create_namespace: false,
        }
    };
    let key_static: &'static SealKey = Box::leak(Box::new(key.clone()));
    let dry = wpdr::restore::restore_cluster(
        &catalog,
        &m,
        &kube,
        &opts("shop-drill", Some(key_static), false, true),
    )
    .await
    .unwrap();
    assert!(dry.dry_run && dry.objects.contains(&"Deployment/wordpress".to_string()));
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(kube.clone(), "shop-drill");
    assert!(
        deployments.get_opt("wordpress").await.unwrap().is_none(),
        "a dry run changes nothing"
    );
    let r = wpdr::restore::restore_cluster(
        &catalog,
        &m,
        &kube,
        &opts("shop-drill", Some(key_static), false, false),
    )
    .await
    .unwrap();
    assert_eq!(r.secrets_restored, 1);
    let d = deployments.get("wordpress").await.unwrap();
    let image = d.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert_eq!(image, "wordpress@sha256:feed");
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(kube.clone(), "shop-drill");
    assert!(secrets.get_opt("db").await.unwrap().is_some());
    // The namespace now runs a site: a second restore is refused unless forced, and a forced rerun converges.
    let err = wpdr::restore::restore_cluster(
        &catalog,
        &m,
        &kube,
        &opts("shop-drill", Some(key_static), false, false),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("already runs"), "{err}");
    wpdr::restore::restore_cluster(
        &catalog,
        &m,
        &kube,
        &opts("shop-drill", Some(key_static), true, false),
    )
    .await
    .unwrap();
    // Without the key, sealed Secrets stop the restore with a clear message.
    let err = wpdr::restore::restore_cluster(
        &catalog,
        &m,
        &kube,
        &opts("shop-other", None, false, false),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("WPDR_SECRETS_KEY"), "{err}");

    // Without a key, Secrets are not stored and the set says so.
    cfg.cluster.secrets_key = None;
    let kube = ClientBuilder::new()
        .with_object::<k8s_openapi::api::core::v1::Secret>(serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "shop"}, "type": "Opaque", "stringData": {"password": "top-secret-pw"}
        })).unwrap())
        .build()
        .await
        .unwrap();
    let m =
        wpdr::jobs::backup::run_with(&cfg, store.clone(), "manual", Arc::new(|_| {}), Some(kube))
            .await
            .unwrap();
    let c = m.cluster.unwrap();
    assert!(c.secrets_artifact.is_none() && c.secrets_skipped.is_some());
}

/// The cluster part failing (here: no Kubernetes client could be made)
/// costs only itself: the database is committed, the set says what it
/// lacks, and the verdict is partial (exit 21).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_cluster_inventory_leaves_a_partial_set_with_its_database() {
    let svc = Services::get();
    let db = svc
        .database_with(
            "clusterpartial",
            &[
                "CREATE TABLE t (id INT PRIMARY KEY)",
                "INSERT INTO t VALUES (1), (2)",
            ],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = svc.local_config(dir.path(), &db, "cluster:\n  namespace: shop\n");
    let (cfg, store) = svc.open_store(&cfg_path).await;
    let store = Arc::new(store);
    let m = wpdr::jobs::backup::run_with(&cfg, store.clone(), "manual", Arc::new(|_| {}), None)
        .await
        .unwrap();
    assert!(m.cluster.is_none());
    assert_eq!(m.failed_parts.len(), 1);
    assert_eq!(m.failed_parts[0].part, "cluster");
    assert!(m.failed_parts[0].reason.contains("Kubernetes client"));
    assert_eq!(m.database.as_ref().unwrap().tables[0].rows, 2);
    use wpdr::jobs::JobReport;
    assert_eq!(m.verdict().exit.code(), 21);
    // It is committed: listed, and restorable with a plan that needs no cluster.
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    assert_eq!(catalog.summaries().await.unwrap()[0].id, m.set_id);
    // A plan with the cluster step is refused before anything is touched.
    let out = svc.wpdr(
        &cfg_path,
        &[
            "restore",
            &m.set_id,
            "--namespace",
            "shop-restored",
            "--dry-run",
        ],
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("partial"), "{text}");
}
