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
    let kube = ClientBuilder::new()
        .with_object::<k8s_openapi::api::apps::v1::Deployment>(serde_json::from_value(json!({
            "metadata": {"name": "wordpress", "namespace": "shop", "uid": "d1"},
            "spec": {"selector": {"matchLabels": {"app": "wp"}}, "template": {"metadata": {"labels": {"app": "wp"}},
                "spec": {"containers": [{"name": "php", "image": "wordpress:6.6"}]}}}
        })).unwrap())
        .with_object::<k8s_openapi::api::apps::v1::ReplicaSet>(serde_json::from_value(json!({
            "metadata": {"name": "wordpress-1", "namespace": "shop",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "wordpress", "uid": "d1"}]},
            "spec": {"selector": {"matchLabels": {"app": "wp"}}}
        })).unwrap())
        .with_object::<k8s_openapi::api::core::v1::Pod>(serde_json::from_value(json!({
            "metadata": {"name": "wordpress-1-x", "namespace": "shop",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "wordpress-1", "uid": "r1"}]},
            "spec": {"containers": [{"name": "php", "image": "wordpress:6.6"}]},
            "status": {"containerStatuses": [{"name": "php", "image": "wordpress:6.6", "imageID": "docker-pullable://wordpress@sha256:feed", "ready": true, "restartCount": 0}]}
        })).unwrap())
        .with_object::<k8s_openapi::api::core::v1::Secret>(serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "shop"}, "type": "Opaque", "stringData": {"password": "top-secret-pw"}
        })).unwrap())
        .build()
        .await
        .unwrap();
    let store = Arc::new(store);
    let m = wpdr::backup::run_with(&cfg, store.clone(), "manual", Arc::new(|_| {}), Some(kube))
        .await
        .unwrap();
    let c = m.cluster.clone().expect("cluster section");
    assert_eq!((c.namespace.as_str(), c.objects, c.secrets), ("shop", 1, 1));
    assert_eq!(c.images[0].digests, vec!["sha256:feed"]);
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    assert!(catalog.verify(&m, &|_| {}).await.unwrap().ok());
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

    // Without a key, Secrets are not stored and the set says so.
    cfg.cluster.secrets_key = None;
    let kube = ClientBuilder::new()
        .with_object::<k8s_openapi::api::core::v1::Secret>(serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "shop"}, "type": "Opaque", "stringData": {"password": "top-secret-pw"}
        })).unwrap())
        .build()
        .await
        .unwrap();
    let m = wpdr::backup::run_with(&cfg, store.clone(), "manual", Arc::new(|_| {}), Some(kube))
        .await
        .unwrap();
    let c = m.cluster.unwrap();
    assert!(c.secrets_artifact.is_none() && c.secrets_skipped.is_some());
}
