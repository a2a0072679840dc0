//! The namespace inventory against kube-fake-client: a realistic WordPress
//! namespace (PHP Deployment mid-rollout, MariaDB StatefulSet, Redis, MinIO,
//! Ingress, ConfigMaps, Secrets, PVCs) is read, sanitised, and joined with the
//! digests its pods actually run.

use kube_fake_client::ClientBuilder;
use serde_json::{json, Value};
use wpdr::cluster::inventory::collect;

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn pod(
    name: &str,
    owner_kind: &str,
    owner: &str,
    containers: &[(&str, &str, &str)],
) -> k8s_openapi::api::core::v1::Pod {
    obj(json!({
        "metadata": {"name": name, "namespace": "shop",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner, "uid": "x"}]},
        "spec": {"nodeName": "node-1", "containers": containers.iter().map(|(n, img, _)| json!({"name": n, "image": img})).collect::<Vec<_>>()},
        "status": {"containerStatuses": containers.iter().map(|(n, img, id)| json!({
            "name": n, "image": img, "imageID": id, "ready": true, "restartCount": 0
        })).collect::<Vec<_>>()}
    }))
}

#[tokio::test]
async fn inventory_of_a_wordpress_namespace() {
    let wp_template = json!({
        "metadata": {"labels": {"app": "wordpress"}},
        "spec": {
            "containers": [{"name": "php", "image": "wordpress:6.6-php8.3-fpm",
                "securityContext": {"readOnlyRootFilesystem": true}}],
            "initContainers": [{"name": "migrate", "image": "registry.example/wp-migrate@sha256:1111"}]
        }
    });
    let client = ClientBuilder::new()
        .with_object::<k8s_openapi::api::apps::v1::Deployment>(obj(json!({
            "metadata": {"name": "wordpress", "namespace": "shop", "uid": "d1", "resourceVersion": "41",
                "annotations": {"deployment.kubernetes.io/revision": "7"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "wordpress"}}, "template": wp_template},
            "status": {"replicas": 2}
        })))
        .with_object::<k8s_openapi::api::apps::v1::ReplicaSet>(obj(json!({
            "metadata": {"name": "wordpress-7d9", "namespace": "shop",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "wordpress", "uid": "d1"}]},
            "spec": {"selector": {"matchLabels": {"app": "wordpress"}}}
        })))
        .with_object(pod("wordpress-7d9-a", "ReplicaSet", "wordpress-7d9", &[("php", "wordpress:6.6-php8.3-fpm", "docker-pullable://wordpress@sha256:aaaa")]))
        // A rollout in progress: the second replica runs another digest for the same tag.
        .with_object(pod("wordpress-7d9-b", "ReplicaSet", "wordpress-7d9", &[("php", "wordpress:6.6-php8.3-fpm", "docker-pullable://wordpress@sha256:bbbb")]))
        .with_object::<k8s_openapi::api::apps::v1::StatefulSet>(obj(json!({
            "metadata": {"name": "mariadb", "namespace": "shop"},
            "spec": {"serviceName": "mariadb", "replicas": 2, "selector": {"matchLabels": {"app": "mariadb"}},
                "template": {"metadata": {"labels": {"app": "mariadb"}}, "spec": {"containers": [{"name": "mariadb", "image": "mariadb:11.4"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}}]}
        })))
        .with_object(pod("mariadb-0", "StatefulSet", "mariadb", &[("mariadb", "mariadb:11.4", "docker-pullable://mariadb@sha256:cccc")]))
        .with_object(pod("mariadb-1", "StatefulSet", "mariadb", &[("mariadb", "mariadb:11.4", "docker-pullable://mariadb@sha256:cccc")]))
        .with_object::<k8s_openapi::api::core::v1::Service>(obj(json!({
            "metadata": {"name": "wordpress", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12"], "selector": {"app": "wordpress"}, "ports": [{"port": 80}]}
        })))
        .with_object::<k8s_openapi::api::networking::v1::Ingress>(obj(json!({
            "metadata": {"name": "wordpress", "namespace": "shop"},
            "spec": {"rules": [{"host": "shop.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "wordpress", "port": {"number": 80}}}}]}}]}
        })))
        .with_object::<k8s_openapi::api::core::v1::ConfigMap>(obj(json!({"metadata": {"name": "wp-config", "namespace": "shop"}, "data": {"WP_HOME": "https://shop.example.com"}})))
        .with_object::<k8s_openapi::api::core::v1::ConfigMap>(obj(json!({"metadata": {"name": "kube-root-ca.crt", "namespace": "shop"}, "data": {"ca.crt": "x"}})))
        .with_object::<k8s_openapi::api::core::v1::Secret>(obj(json!({"metadata": {"name": "mariadb-credentials", "namespace": "shop"}, "stringData": {"password": "s3cr3t"}, "type": "Opaque"})))
        .with_object::<k8s_openapi::api::core::v1::Secret>(obj(json!({"metadata": {"name": "default-token-x", "namespace": "shop"}, "type": "kubernetes.io/service-account-token"})))
        .with_object::<k8s_openapi::api::core::v1::ServiceAccount>(obj(json!({"metadata": {"name": "default", "namespace": "shop"}})))
        .with_object::<k8s_openapi::api::core::v1::ServiceAccount>(obj(json!({"metadata": {"name": "wordpress", "namespace": "shop"}})))
        .with_object::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(obj(json!({
            "metadata": {"name": "minio-data", "namespace": "shop", "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pvc-123", "resources": {"requests": {"storage": "50Gi"}}}
        })))
        .build()
        .await
        .unwrap();

    let inv = collect(&client, "shop").await.unwrap();
    let names: Vec<String> = inv
        .objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            "ConfigMap/wp-config",
            "Deployment/wordpress",
            "Ingress/wordpress",
            "PersistentVolumeClaim/minio-data",
            "Service/wordpress",
            "ServiceAccount/wordpress",
            "StatefulSet/mariadb",
        ],
        "cluster-created objects (kube-root-ca.crt, the default SA, ReplicaSets, Pods) are left out"
    );
    let text = serde_json::to_string(&inv.objects).unwrap();
    for gone in [
        "resourceVersion",
        "\"uid\"",
        "10.96.0.12",
        "pvc-123",
        "deployment.kubernetes.io/revision",
        "bind-completed",
        "\"status\"",
        "\"namespace\"",
    ] {
        assert!(
            !text.contains(gone),
            "{gone} must be sanitised away: {text}"
        );
    }
    assert!(text.contains("readOnlyRootFilesystem"));
    // Secrets are apart (to be encrypted), and never in the plain objects.
    assert_eq!(inv.secrets.len(), 1);
    assert_eq!(inv.secrets[0]["metadata"]["name"], "mariadb-credentials");
    assert!(
        !text.contains("s3cr3t")
            && !serde_json::to_string(&inv)
                .unwrap()
                .contains("mariadb-credentials")
    );

    let php = inv.images.iter().find(|r| r.container == "php").unwrap();
    assert_eq!(php.workload, "Deployment/wordpress");
    assert_eq!(php.image, "wordpress:6.6-php8.3-fpm");
    assert_eq!(php.digests, vec!["sha256:aaaa", "sha256:bbbb"]);
    assert!(php.replicas_disagree && php.tag_ambiguous);
    let migrate = inv
        .images
        .iter()
        .find(|r| r.container == "migrate")
        .unwrap();
    assert!(migrate.init && !migrate.tag_ambiguous);
    let db = inv
        .images
        .iter()
        .find(|r| r.container == "mariadb")
        .unwrap();
    assert_eq!(
        (db.digests.clone(), db.replicas_disagree),
        (vec!["sha256:cccc".to_string()], false)
    );
}
