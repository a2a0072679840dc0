//! The namespace inventory against kube-fake-client: a realistic WordPress
//! namespace (PHP Deployment mid-rollout, MariaDB StatefulSet, Redis, MinIO,
//! Ingress, ConfigMaps, Secrets, PVCs) is read, sanitised, and joined with the
//! digests its pods actually run.

use kube_fake_client::ClientBuilder;
use serde_json::{json, Value};
use wpdr::cluster::inventory::{collect, EXCLUDE_LABEL};

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
        .with_object::<k8s_openapi::api::apps::v1::Deployment>(obj(json!({
            "metadata": {"name": "redis", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "redis"}},
                "template": {"metadata": {"labels": {"app": "redis"}}, "spec": {"containers": [{"name": "redis", "image": "redis:7.4"}]}}}
        })))
        .with_object::<k8s_openapi::api::apps::v1::StatefulSet>(obj(json!({
            "metadata": {"name": "minio", "namespace": "shop"},
            "spec": {"serviceName": "minio", "selector": {"matchLabels": {"app": "minio"}},
                "template": {"metadata": {"labels": {"app": "minio"}}, "spec": {"containers": [{"name": "minio", "image": "minio/minio:RELEASE.2025-01-01T00-00-00Z"}]}}}
        })))
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
        // wpdr's own objects (the chart labels each one): a restored
        // namespace must not get a copy of the backup jobs.
        .with_object::<k8s_openapi::api::batch::v1::CronJob>(obj(json!({
            "metadata": {"name": "wpdr-nightly-backup", "namespace": "shop", "labels": {EXCLUDE_LABEL: "true"}},
            "spec": {"schedule": "15 2 * * *", "jobTemplate": {"spec": {"template": {
                "metadata": {"labels": {EXCLUDE_LABEL: "true"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "wpdr", "image": "ghcr.io/wpdr/wpdr:0.1.0"}]}}}}}
        })))
        .with_object::<k8s_openapi::api::core::v1::ConfigMap>(obj(json!({"metadata": {"name": "wpdr", "namespace": "shop", "labels": {EXCLUDE_LABEL: "true"}}, "data": {"wpdr.yaml": "site: shop"}})))
        .with_object::<k8s_openapi::api::rbac::v1::Role>(obj(json!({"metadata": {"name": "wpdr", "namespace": "shop", "labels": {EXCLUDE_LABEL: "true"}}, "rules": []})))
        .with_object::<k8s_openapi::api::core::v1::Secret>(obj(json!({"metadata": {"name": "wpdr-credentials", "namespace": "shop", "labels": {EXCLUDE_LABEL: "true"}}, "stringData": {"db-password": "x"}, "type": "Opaque"})))
        .with_object({
            let mut p = pod("wpdr-daemon-1", "ReplicaSet", "wpdr-7f", &[("wpdr", "ghcr.io/wpdr/wpdr:0.1.0", "docker-pullable://ghcr.io/wpdr/wpdr@sha256:eeee")]);
            p.metadata.labels = Some([(EXCLUDE_LABEL.to_string(), "true".to_string())].into());
            p
        })
        // Only "true" excludes.
        .with_object::<k8s_openapi::api::core::v1::ConfigMap>(obj(json!({"metadata": {"name": "wp-theme", "namespace": "shop", "labels": {EXCLUDE_LABEL: "false"}}, "data": {"THEME": "twentytwentyfour"}})))
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
            "ConfigMap/wp-theme",
            "Deployment/redis",
            "Deployment/wordpress",
            "Ingress/wordpress",
            "PersistentVolumeClaim/minio-data",
            "Service/wordpress",
            "ServiceAccount/wordpress",
            "StatefulSet/mariadb",
            "StatefulSet/minio",
        ],
        "cluster-created objects (kube-root-ca.crt, the default SA, ReplicaSets, Pods) and wpdr's own are left out"
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

    assert!(
        inv.images.iter().all(|r| r.container != "wpdr"),
        "wpdr's own pods are not recorded: {:?}",
        inv.images
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

/// Custom resources named in the config (a MariaDB operator's) are recorded,
/// sanitised, and applied back into a new namespace.
#[tokio::test]
async fn custom_resources_are_recorded_and_applied() {
    use kube::api::{Api, DynamicObject, PostParams};
    use wpdr::config::CustomResourceKind;
    let client = ClientBuilder::new()
        .with_resource::<MariaDbKind>()
        .build()
        .await
        .unwrap();
    let cr = CustomResourceKind {
        group: "k8s.mariadb.com".into(),
        version: "v1alpha1".into(),
        kind: "MariaDB".into(),
        plural: "mariadbs".into(),
    };
    let ar = wpdr::cluster::inventory::api_resource(&cr);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "shop", &ar);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "k8s.mariadb.com/v1alpha1", "kind": "MariaDB",
        "metadata": {"name": "mariadb", "namespace": "shop", "uid": "u-1"},
        "spec": {"replicas": 3, "replication": {"enabled": true}},
        "status": {"currentPrimary": "mariadb-0"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();

    let inv = wpdr::cluster::inventory::collect_with(&client, "shop", std::slice::from_ref(&cr))
        .await
        .unwrap();
    let m = inv
        .objects
        .iter()
        .find(|o| o["kind"] == "MariaDB")
        .expect("the custom resource is recorded");
    assert_eq!(m["spec"]["replicas"], 3);
    assert!(m.get("status").is_none() && m["metadata"].get("uid").is_none());

    let rewritten =
        wpdr::cluster::apply::rewrite(inv.objects.clone(), vec![], &[], "shop", "shop-drill", &[]);
    wpdr::cluster::apply::apply(
        &client,
        "shop-drill",
        &rewritten.objects,
        false,
        std::slice::from_ref(&cr),
    )
    .await
    .unwrap();
    let restored: Api<DynamicObject> = Api::namespaced_with(client.clone(), "shop-drill", &ar);
    let back = restored.get("mariadb").await.unwrap();
    assert_eq!(back.data["spec"]["replication"]["enabled"], true);
    // Without the kind recorded, applying it is refused clearly.
    let err = wpdr::cluster::apply::apply(&client, "shop-x", &rewritten.objects, false, &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("MariaDB"), "{err}");
}

/// Registers the operator's kind with the fake API server (it only routes known kinds).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct MariaDbKind {
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
}

impl kube::Resource for MariaDbKind {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;
    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "MariaDB".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "k8s.mariadb.com".into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1alpha1".into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "mariadbs".into()
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}
