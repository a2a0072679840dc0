//! End to end against a real Kubernetes cluster (kind, k3d, ...). It needs
//! KUBECONFIG and is `#[ignore]`d otherwise, so it is reported as ignored,
//! never as passed; scripts/test.sh runs it when KUBECONFIG is set:
//!
//!     KUBECONFIG=~/.kube/config cargo test --test e2e_cluster -- --ignored
//!
//! It deploys a small workload into a fresh namespace, records the inventory
//! and the digest its pod runs, restores into a second namespace pinned to
//! that digest, and deletes both namespaces.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};
use wpdr::cluster::{apply, inventory};

#[tokio::test]
#[ignore = "needs a real cluster: set KUBECONFIG and run with --ignored"]
async fn inventory_and_restore_against_a_real_cluster() {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "set KUBECONFIG to run the e2e suite"
    );
    let client = kube::Client::try_default()
        .await
        .expect("a reachable cluster");
    let suffix = format!("{:06x}", rand::random::<u32>() & 0xffffff);
    let (src, dst) = (format!("wpdr-e2e-{suffix}"), format!("wpdr-e2e-{suffix}-r"));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [&src, &dst] {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces.create(&PostParams::default(), &n).await.unwrap();
    }
    let result = async {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &src);
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "app"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                "template": {"metadata": {"labels": {"app": "app"}},
                    "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.9",
                        "securityContext": {"readOnlyRootFilesystem": true}}]}}}
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &src);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let ready = pods
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .any(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.image_id.contains("sha256:")))
                });
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "the pod never started");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let inv = inventory::collect(&client, &src).await.unwrap();
        let rec = inv.images.iter().find(|r| r.container == "pause").unwrap();
        assert_eq!(rec.digests.len(), 1, "{rec:?}");
        let rewritten = apply::rewrite(inv.objects.clone(), vec![], &inv.images, &src, &dst, &[]);
        apply::apply(&client, &dst, &rewritten.objects, true, &[])
            .await
            .unwrap();
        // A rerun converges (server-side apply).
        apply::apply(&client, &dst, &rewritten.objects, true, &[])
            .await
            .unwrap();
        let restored: Api<Deployment> = Api::namespaced(client.clone(), &dst);
        let image = restored
            .get("app")
            .await
            .unwrap()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers[0]
            .image
            .clone()
            .unwrap();
        assert_eq!(image, format!("registry.k8s.io/pause@{}", rec.digests[0]));
    }
    .await;
    for ns in [&src, &dst] {
        let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    }
    result
}
