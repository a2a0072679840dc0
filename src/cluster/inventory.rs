//! The namespace's objects as a restore needs them, and the image digests that run.
//!
//! Objects are read with typed APIs and sanitised: what the cluster assigns
//! (uid, resourceVersion, managedFields, status, clusterIP, nodeName,
//! volumeName, ...) goes, so the objects apply cleanly into a fresh namespace.
//! Secrets are returned apart from everything else: the caller must encrypt
//! them before they are stored. Objects the cluster creates by itself (the
//! default ServiceAccount, `kube-root-ca.crt`, service-account tokens, Jobs
//! and ReplicaSets owned by a CronJob or Deployment) are left out, and so is
//! anything labelled [`EXCLUDE_LABEL`]: wpdr's own objects (the chart labels
//! them) must not come back in a restored namespace, where a copy of the
//! backup CronJobs would write sets of a drill's database as the live site.

use super::ClusterError;
use crate::catalog::ImageDigest;
use crate::config::CustomResourceKind;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub namespace: String,
    /// Sanitised objects, Secrets excluded.
    pub objects: Vec<Value>,
    /// Sanitised Secrets: encrypt before storing.
    #[serde(skip)]
    pub secrets: Vec<Value>,
    pub images: Vec<ImageDigest>,
}

/// Objects with this label set to `"true"` are not recorded (like Velero's
/// `velero.io/exclude-from-backup`).
pub const EXCLUDE_LABEL: &str = "wpdr.io/exclude-from-backup";

fn excluded(labels: &BTreeMap<String, String>) -> bool {
    labels.get(EXCLUDE_LABEL).map(String::as_str) == Some("true")
}

async fn list<K>(client: &Client, ns: &str) -> Result<Vec<K>, ClusterError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|o| !excluded(o.labels()))
                .collect()
        })
        .map_err(|source| ClusterError::Api {
            doing: format!("listing {} in {ns}", K::kind(&())),
            source,
        })
}

fn to_value<K: Serialize + Resource<DynamicType = ()>>(obj: &K) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert(
            "apiVersion".into(),
            Value::String(K::api_version(&()).into_owned()),
        );
        m.insert("kind".into(), Value::String(K::kind(&()).into_owned()));
    }
    v
}

/// Annotations the cluster or kubectl writes, which must not travel.
const DROP_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
];

/// Removes what the cluster assigns, so the object applies into another namespace.
pub fn sanitise(mut v: Value) -> Value {
    let Value::Object(obj) = &mut v else { return v };
    obj.remove("status");
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        for k in [
            "uid",
            "resourceVersion",
            "managedFields",
            "creationTimestamp",
            "generation",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "ownerReferences",
            "namespace",
        ] {
            meta.remove(k);
        }
        if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
            for a in DROP_ANNOTATIONS {
                ann.remove(*a);
            }
            if ann.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(Value::Object(spec)) = obj.get_mut("spec") {
        match kind.as_str() {
            "Service" => {
                for k in ["clusterIP", "clusterIPs", "healthCheckNodePort"] {
                    spec.remove(k);
                }
            }
            "PersistentVolumeClaim" => {
                spec.remove("volumeName");
            }
            _ => {}
        }
        // Pod templates: a scheduled node name never travels.
        if let Some(Value::Object(tspec)) = spec.get_mut("template").and_then(|t| t.get_mut("spec"))
        {
            tspec.remove("nodeName");
        }
    }
    v
}

fn owned_by(meta_owner_kinds: &[String], kinds: &[&str]) -> bool {
    meta_owner_kinds.iter().any(|k| kinds.contains(&k.as_str()))
}

fn owner_kinds<K: Resource>(o: &K) -> Vec<String> {
    o.owner_references()
        .iter()
        .map(|r| r.kind.clone())
        .collect()
}

/// The digest in a container status' imageID (`docker-pullable://repo@sha256:…`).
pub fn digest_of(image_id: &str) -> Option<String> {
    image_id
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .filter(|d| d.starts_with("sha256:"))
}

/// The API resource of a configured custom resource kind.
pub fn api_resource(cr: &CustomResourceKind) -> ApiResource {
    ApiResource {
        group: cr.group.clone(),
        version: cr.version.clone(),
        api_version: format!("{}/{}", cr.group, cr.version),
        kind: cr.kind.clone(),
        plural: cr.plural.clone(),
    }
}

async fn list_custom(
    client: &Client,
    ns: &str,
    cr: &CustomResourceKind,
) -> Result<Vec<Value>, ClusterError> {
    let ar = api_resource(cr);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let items = api
        .list(&ListParams::default())
        .await
        .map_err(|source| ClusterError::Api {
            doing: format!("listing {} in {ns}", cr.kind),
            source,
        })?
        .items;
    Ok(items
        .iter()
        .filter(|o| !excluded(o.labels()))
        .map(|o| {
            let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
                m.insert("kind".into(), Value::String(ar.kind.clone()));
            }
            v
        })
        .collect())
}

/// Names that hold credentials by convention (matched on the upper-cased
/// name); `*_FILE` / `*_PATH` names point at a mounted file instead.
const CREDENTIAL_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
    "ACCESS_KEY",
    "AUTH_KEY",
    "SALT",
    "CREDENTIAL",
];

fn looks_like_credential(name: &str) -> bool {
    let n = name.to_ascii_uppercase().replace(['-', '.'], "_");
    !n.ends_with("_FILE") && !n.ends_with("_PATH") && CREDENTIAL_WORDS.iter().any(|w| n.contains(w))
}

/// wp-config.php kept in a ConfigMap: its `define()`s of the password and salts.
fn holds_wp_config_secret(text: &str) -> bool {
    let t = text.to_ascii_uppercase();
    t.contains("DEFINE")
        && [
            "'DB_PASSWORD'",
            "\"DB_PASSWORD\"",
            "'AUTH_KEY'",
            "\"AUTH_KEY\"",
        ]
        .iter()
        .any(|k| t.contains(k))
}

/// Credentials in the sanitised objects that are not in Secrets: ConfigMap
/// keys named like one (or a wp-config.php with its password), and literal
/// `env` values of containers named like one (`valueFrom` is fine).
pub fn exposed_credentials(objects: &[Value]) -> Vec<crate::catalog::ExposedCredential> {
    let mut out = Vec::new();
    for o in objects {
        let object = format!(
            "{}/{}",
            o["kind"].as_str().unwrap_or("?"),
            o["metadata"]["name"].as_str().unwrap_or("?")
        );
        if o["kind"] == "ConfigMap" {
            if let Some(data) = o["data"].as_object() {
                for (k, v) in data {
                    let text = v.as_str().unwrap_or_default();
                    if !text.is_empty()
                        && (looks_like_credential(k) || holds_wp_config_secret(text))
                    {
                        out.push(crate::catalog::ExposedCredential {
                            object: object.clone(),
                            field: format!("data.{k}"),
                        });
                    }
                }
            }
            continue;
        }
        literal_env(&o["spec"], &object, &mut out);
    }
    out
}

/// Walks a spec for containers (any depth: pod templates, job templates)
/// and reports their literal credential `env` values.
fn literal_env(v: &Value, object: &str, out: &mut Vec<crate::catalog::ExposedCredential>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "containers" || k == "initContainers" {
                    for c in child.as_array().into_iter().flatten() {
                        let container = c["name"].as_str().unwrap_or("?");
                        for e in c["env"].as_array().into_iter().flatten() {
                            let name = e["name"].as_str().unwrap_or_default();
                            let literal = e["value"].as_str().is_some_and(|s| !s.is_empty());
                            if literal && looks_like_credential(name) {
                                out.push(crate::catalog::ExposedCredential {
                                    object: object.to_string(),
                                    field: format!("container {container} env {name}"),
                                });
                            }
                        }
                    }
                } else {
                    literal_env(child, object, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| literal_env(c, object, out)),
        _ => {}
    }
}

/// Reads the namespace: the built-in kinds and the custom resources named in the config.
pub async fn collect(client: &Client, ns: &str) -> Result<Inventory, ClusterError> {
    collect_with(client, ns, &[]).await
}

pub async fn collect_with(
    client: &Client,
    ns: &str,
    custom: &[CustomResourceKind],
) -> Result<Inventory, ClusterError> {
    let mut objects = Vec::new();
    let deployments: Vec<Deployment> = list(client, ns).await?;
    let statefulsets: Vec<StatefulSet> = list(client, ns).await?;
    let daemonsets: Vec<DaemonSet> = list(client, ns).await?;
    let cronjobs: Vec<CronJob> = list(client, ns).await?;
    let jobs: Vec<Job> = list(client, ns).await?;
    objects.extend(deployments.iter().map(to_value));
    objects.extend(statefulsets.iter().map(to_value));
    objects.extend(daemonsets.iter().map(to_value));
    objects.extend(cronjobs.iter().map(to_value));
    objects.extend(
        jobs.iter()
            .filter(|j| !owned_by(&owner_kinds(*j), &["CronJob"]))
            .map(to_value),
    );
    objects.extend(list::<Service>(client, ns).await?.iter().map(to_value));
    objects.extend(list::<Ingress>(client, ns).await?.iter().map(to_value));
    objects.extend(
        list::<ConfigMap>(client, ns)
            .await?
            .iter()
            .filter(|c| c.name_any() != "kube-root-ca.crt")
            .map(to_value),
    );
    objects.extend(
        list::<ServiceAccount>(client, ns)
            .await?
            .iter()
            .filter(|s| s.name_any() != "default")
            .map(to_value),
    );
    objects.extend(list::<Role>(client, ns).await?.iter().map(to_value));
    objects.extend(list::<RoleBinding>(client, ns).await?.iter().map(to_value));
    objects.extend(
        list::<PersistentVolumeClaim>(client, ns)
            .await?
            .iter()
            .map(to_value),
    );
    objects.extend(
        list::<HorizontalPodAutoscaler>(client, ns)
            .await?
            .iter()
            .map(to_value),
    );
    objects.extend(
        list::<PodDisruptionBudget>(client, ns)
            .await?
            .iter()
            .map(to_value),
    );
    objects.extend(
        list::<NetworkPolicy>(client, ns)
            .await?
            .iter()
            .map(to_value),
    );
    for cr in custom {
        objects.extend(list_custom(client, ns, cr).await?);
    }
    let secrets: Vec<Value> = list::<Secret>(client, ns)
        .await?
        .iter()
        .filter(|s| s.type_.as_deref() != Some("kubernetes.io/service-account-token"))
        .map(|s| sanitise(to_value(s)))
        .collect();
    let mut objects: Vec<Value> = objects.into_iter().map(sanitise).collect();
    objects.sort_by_key(|v| {
        (
            v["kind"].as_str().unwrap_or("").to_string(),
            v["metadata"]["name"].as_str().unwrap_or("").to_string(),
        )
    });

    let replicasets: Vec<ReplicaSet> = list(client, ns).await?;
    let pods: Vec<Pod> = list(client, ns).await?;
    let images = image_records(
        &deployments,
        &statefulsets,
        &daemonsets,
        &cronjobs,
        &jobs,
        &replicasets,
        &pods,
    );
    Ok(Inventory {
        namespace: ns.to_string(),
        objects,
        secrets,
        images,
    })
}

/// Joins workload specs (the image as written) with pod statuses (the digest that runs).
fn image_records(
    deployments: &[Deployment],
    statefulsets: &[StatefulSet],
    daemonsets: &[DaemonSet],
    cronjobs: &[CronJob],
    jobs: &[Job],
    replicasets: &[ReplicaSet],
    pods: &[Pod],
) -> Vec<ImageDigest> {
    // workload id -> (container, init) -> image as written
    let mut written: BTreeMap<String, BTreeMap<(String, bool), String>> = BTreeMap::new();
    let mut add = |id: String, spec: Option<&k8s_openapi::api::core::v1::PodSpec>| {
        let Some(spec) = spec else { return };
        let entry = written.entry(id).or_default();
        for c in &spec.containers {
            entry.insert((c.name.clone(), false), c.image.clone().unwrap_or_default());
        }
        for c in spec.init_containers.iter().flatten() {
            entry.insert((c.name.clone(), true), c.image.clone().unwrap_or_default());
        }
    };
    for d in deployments {
        add(
            format!("Deployment/{}", d.name_any()),
            d.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        );
    }
    for s in statefulsets {
        add(
            format!("StatefulSet/{}", s.name_any()),
            s.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        );
    }
    for d in daemonsets {
        add(
            format!("DaemonSet/{}", d.name_any()),
            d.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        );
    }
    for c in cronjobs {
        add(
            format!("CronJob/{}", c.name_any()),
            c.spec
                .as_ref()
                .and_then(|s| s.job_template.spec.as_ref())
                .and_then(|s| s.template.spec.as_ref()),
        );
    }
    for j in jobs
        .iter()
        .filter(|j| !owned_by(&owner_kinds(*j), &["CronJob"]))
    {
        add(
            format!("Job/{}", j.name_any()),
            j.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        );
    }
    // Owner chains: Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob.
    let rs_owner: BTreeMap<String, String> = replicasets
        .iter()
        .filter_map(|rs| {
            rs.owner_references()
                .iter()
                .find(|o| o.kind == "Deployment")
                .map(|o| (rs.name_any(), format!("Deployment/{}", o.name)))
        })
        .collect();
    let job_owner: BTreeMap<String, String> = jobs
        .iter()
        .filter_map(|j| {
            j.owner_references()
                .iter()
                .find(|o| o.kind == "CronJob")
                .map(|o| (j.name_any(), format!("CronJob/{}", o.name)))
        })
        .collect();
    let mut running: BTreeMap<(String, String, bool), BTreeSet<String>> = BTreeMap::new();
    for p in pods {
        let Some(owner) = p.owner_references().first().cloned() else {
            continue;
        };
        let workload = match owner.kind.as_str() {
            "ReplicaSet" => rs_owner.get(&owner.name).cloned(),
            "Job" => Some(
                job_owner
                    .get(&owner.name)
                    .cloned()
                    .unwrap_or(format!("Job/{}", owner.name)),
            ),
            "StatefulSet" | "DaemonSet" => Some(format!("{}/{}", owner.kind, owner.name)),
            _ => None,
        };
        let Some(workload) = workload else { continue };
        let Some(status) = &p.status else { continue };
        for (statuses, init) in [
            (&status.container_statuses, false),
            (&status.init_container_statuses, true),
        ] {
            for cs in statuses.iter().flatten() {
                if let Some(d) = digest_of(&cs.image_id) {
                    running
                        .entry((workload.clone(), cs.name.clone(), init))
                        .or_default()
                        .insert(d);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (workload, containers) in &written {
        for ((container, init), image) in containers {
            let digests: Vec<String> = running
                .get(&(workload.clone(), container.clone(), *init))
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            out.push(ImageDigest {
                workload: workload.clone(),
                container: container.clone(),
                init: *init,
                image: image.clone(),
                replicas_disagree: digests.len() > 1,
                digests,
                tag_ambiguous: false,
            });
        }
    }
    // The same reference running as different digests anywhere in the namespace.
    let mut by_image: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &out {
        by_image
            .entry(r.image.clone())
            .or_default()
            .extend(r.digests.iter().cloned());
    }
    for r in &mut out {
        r.tag_ambiguous =
            !r.image.contains("@sha256:") && by_image.get(&r.image).is_some_and(|d| d.len() > 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_come_from_image_ids() {
        assert_eq!(
            digest_of("docker-pullable://wordpress@sha256:abc").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(digest_of("docker.io/library/redis:7").as_deref(), None);
    }

    #[test]
    fn credentials_outside_secrets_are_named_and_their_values_never() {
        let objects = vec![
            serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "wp-env"},
                "data": {"WORDPRESS_DB_PASSWORD": "hunter2", "WORDPRESS_DB_HOST": "db",
                         "DB_PASSWORD_FILE": "/run/secrets/db", "EMPTY_TOKEN": ""}}),
            serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "wp-config"},
                "data": {"wp-config.php": "<?php define( 'DB_PASSWORD', 'hunter2' );"}}),
            serde_json::json!({"kind": "CronJob", "metadata": {"name": "cron"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {
                "initContainers": [{"name": "init", "env": [{"name": "api-key", "value": "k"}]}],
                "containers": [{"name": "wp", "env": [
                    {"name": "STRIPE_SECRET", "value": "sk_live"},
                    {"name": "SMTP_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "p"}}},
                    {"name": "WP_DEBUG", "value": "1"}]}]}}}}}}),
        ];
        let found = exposed_credentials(&objects);
        let fields: Vec<String> = found
            .iter()
            .map(|e| format!("{} {}", e.object, e.field))
            .collect();
        assert_eq!(
            fields,
            vec![
                "ConfigMap/wp-env data.WORDPRESS_DB_PASSWORD",
                "ConfigMap/wp-config data.wp-config.php",
                "CronJob/cron container wp env STRIPE_SECRET",
                "CronJob/cron container init env api-key",
            ]
        );
        assert!(
            !format!("{found:?}").contains("hunter2") && !format!("{found:?}").contains("sk_live")
        );
    }

    #[test]
    fn sanitise_removes_cluster_assigned_fields() {
        let v = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "wp", "namespace": "shop", "uid": "u", "resourceVersion": "9",
                         "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"}},
            "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]},
            "status": {"loadBalancer": {}}
        });
        let s = sanitise(v);
        assert_eq!(
            s,
            serde_json::json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "wp", "annotations": {"keep": "me"}},
                "spec": {"ports": [{"port": 80}]}
            })
        );
    }
}
