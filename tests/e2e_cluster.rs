//! End to end against a real Kubernetes cluster (kind, k3d, ...). It needs
//! KUBECONFIG and is `#[ignore]`d otherwise, so it is reported as ignored,
//! never as passed; scripts/test.sh runs it when KUBECONFIG is set:
//!
//!     KUBECONFIG=~/.kube/config cargo test --test e2e_cluster -- --ignored
//!
//! `inventory_and_restore_against_a_real_cluster` deploys a small workload
//! into a fresh namespace, records the inventory and the digest its pod runs,
//! restores into a second namespace pinned to that digest, and deletes both.
//!
//! `the_whole_site_restores_in_a_real_cluster` runs the README's walkthrough
//! (scripts/kind-demo.sh) on the cluster: a WordPress site with MariaDB and
//! MinIO, wpdr installed by its chart from the image this repository builds,
//! a backup Job and a drill Job that restores every component into a new
//! namespace; it then checks the report and the restored namespace, and
//! removes everything. With WPDR_E2E_KIND_CLUSTER=<name> the image is built
//! and loaded into that kind cluster; otherwise `localhost/wpdr:0.1.0` must
//! already be on the nodes.

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

/// Runs scripts/kind-demo.sh against the current context with `flag`
/// (`WPDR_E2E_KIND_CLUSTER`: load the image into that kind cluster);
/// returns its output and the script's path, for the `--delete` after.
fn walkthrough(flag: &str) -> (std::process::Output, String) {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "set KUBECONFIG to run the e2e suite"
    );
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/scripts/kind-demo.sh");
    let mut demo = std::process::Command::new("bash");
    demo.arg(&script).arg("--use-current-context").arg(flag);
    if let Ok(cluster) = std::env::var("WPDR_E2E_KIND_CLUSTER") {
        demo.env("KIND_CLUSTER", cluster)
            .env("WPDR_LOAD_IMAGE", "1");
    }
    let out = demo.output().expect("bash runs scripts/kind-demo.sh");
    (out, script)
}

#[tokio::test]
#[ignore = "needs a real cluster: set KUBECONFIG and run with --ignored"]
async fn the_whole_site_restores_in_a_real_cluster() {
    let (out, script) = walkthrough("--keep-restored");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cleanup = || {
        let _ = std::process::Command::new("bash")
            .args([script.as_str(), "--delete", "--use-current-context"])
            .status();
    };
    if !out.status.success() {
        cleanup();
        panic!("the walkthrough failed ({}):\n{stderr}", out.status);
    }
    let report: serde_json::Value = match stdout.lines().last().map(serde_json::from_str) {
        Some(Ok(r)) => r,
        _ => {
            cleanup();
            panic!("no drill report as the last line:\n{stdout}\n{stderr}");
        }
    };
    let client = kube::Client::try_default()
        .await
        .expect("a reachable cluster");
    let namespace = report["namespace"].as_str().unwrap_or_default().to_string();
    let restored: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let wordpress = restored.get("wordpress").await;
    cleanup();

    assert_eq!(report["ok"], true, "the drill failed: {report:#}");
    assert_eq!(report["kept"], true);
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["kind"].as_str())
        .collect();
    for kind in [
        "cluster-objects",
        "database-load",
        "media-restore",
        "url-rewrite",
        "checks",
    ] {
        assert!(steps.contains(&kind), "no {kind} step in {steps:?}");
    }
    let checks = &report["checks"];
    assert!(
        checks["tables"]["verified_at_load"].as_u64().unwrap_or(0) > 10,
        "WordPress's tables were not verified: {checks:#}"
    );
    assert_eq!(checks["media"]["objects"], 20, "{checks:#}");
    assert_eq!(checks["media"]["missing"], 0, "{checks:#}");
    assert!(
        !checks["site"]["compared"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "the restored site was not asked: {checks:#}"
    );
    assert_eq!(
        checks["site"]["differences"],
        serde_json::json!([]),
        "the restored site answers differently: {checks:#}"
    );
    assert!(report["rto_seconds"].as_f64().unwrap_or(0.0) > 0.0);
    // The restored WordPress ran pinned to the digest recorded at backup.
    let wordpress = wordpress.expect("the restored namespace has the WordPress Deployment");
    let image = wordpress.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default();
    assert!(
        image.contains("@sha256:"),
        "not pinned to a digest: {image}"
    );
    assert!(
        stderr.contains("PASSED"),
        "the walkthrough's summary did not say PASSED:\n{stderr}"
    );
}

#[tokio::test]
#[ignore = "needs a real cluster: set KUBECONFIG and run with --ignored"]
async fn the_fleet_controller_backs_up_a_site_in_a_real_cluster() {
    let (out, script) = walkthrough("--fleet");
    let _ = std::process::Command::new("bash")
        .args([script.as_str(), "--delete", "--use-current-context"])
        .status();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the fleet walkthrough failed ({}):\n{stderr}",
        out.status
    );
    // The Site's status, as the controller wrote it from the Job's outcome.
    let status: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no Site status as the last line:\n{stdout}\n{stderr}"));
    assert_eq!(
        status["runs"]["nightly"]["lastResult"], "Succeeded",
        "{status:#}"
    );
    assert!(status["newestSet"].is_string(), "{status:#}");
    assert!(status["lastError"].is_null(), "{status:#}");
}
