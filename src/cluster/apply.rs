//! Puts a set's namespace objects into a fresh namespace, pinned to the image
//! digests that ran at backup time.
//!
//! `rewrite` is pure (namespace, hosts, image pins, order) and unit-tested;
//! `apply` sends each object with server-side apply, so a rerun after a kill
//! converges instead of failing on "already exists".

use super::ClusterError;
use crate::catalog::ImageDigest;
use crate::config::CustomResourceKind;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde::Serialize;
use serde_json::Value;

/// Creation order: what others refer to comes first.
const ORDER: &[&str] = &[
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Secret",
    "ConfigMap",
    "PersistentVolumeClaim",
    "Service",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "CronJob",
    "Job",
    "Ingress",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
];

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Pin {
    pub workload: String,
    pub container: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Rewritten {
    pub objects: Vec<Value>,
    pub pins: Vec<Pin>,
    pub warnings: Vec<String>,
}

/// `repo:tag@sha` / `repo:tag` / `repo` -> `repo`
fn repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

fn pod_spec_mut<'a>(kind: &str, obj: &'a mut Value) -> Option<&'a mut Value> {
    let spec = obj.get_mut("spec")?;
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => {
            spec.get_mut("template")?.get_mut("spec")
        }
        "CronJob" => spec
            .get_mut("jobTemplate")?
            .get_mut("spec")?
            .get_mut("template")?
            .get_mut("spec"),
        _ => None,
    }
}

/// Rewrites objects for namespace `ns`: hosts mapped, images pinned, ordered.
pub fn rewrite(
    mut objects: Vec<Value>,
    secrets: Vec<Value>,
    images: &[ImageDigest],
    old_namespace: &str,
    ns: &str,
    host_map: &[(String, String)],
) -> Rewritten {
    let mut out = Rewritten::default();
    objects.extend(secrets);
    for obj in &mut objects {
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        obj["metadata"]["namespace"] = Value::String(ns.to_string());
        if kind == "RoleBinding" {
            if let Some(Value::Array(subjects)) = obj.get_mut("subjects") {
                for s in subjects {
                    if s["namespace"].as_str() == Some(old_namespace) {
                        s["namespace"] = Value::String(ns.to_string());
                    }
                }
            }
        }
        if kind == "Ingress" {
            rewrite_hosts(obj, host_map);
        }
        // In-cluster DNS names embed the namespace (mariadb.shop.svc.cluster.local).
        let old_dns = format!(".{old_namespace}.svc");
        let new_dns = format!(".{ns}.svc");
        if kind == "ConfigMap" {
            if let Some(Value::Object(data)) = obj.get_mut("data") {
                for v in data.values_mut() {
                    replace_in(v, &old_dns, &new_dns);
                }
            }
        }
        let workload = format!("{kind}/{name}");
        if let Some(spec) = pod_spec_mut(&kind, obj) {
            for field in ["containers", "initContainers"] {
                if let Some(Value::Array(containers)) = spec.get_mut(field) {
                    for c in containers {
                        if let Some(Value::Array(env)) = c.get_mut("env") {
                            for e in env {
                                if let Some(v) = e.get_mut("value") {
                                    replace_in(v, &old_dns, &new_dns);
                                }
                            }
                        }
                    }
                }
            }
            for (field, init) in [("containers", false), ("initContainers", true)] {
                let Some(Value::Array(containers)) = spec.get_mut(field) else {
                    continue;
                };
                for c in containers {
                    let cname = c["name"].as_str().unwrap_or("").to_string();
                    let image = c["image"].as_str().unwrap_or("").to_string();
                    if image.contains("@sha256:") {
                        continue;
                    }
                    let rec = images
                        .iter()
                        .find(|r| r.workload == workload && r.container == cname && r.init == init);
                    match rec.map(|r| r.digests.as_slice()) {
                        Some([digest]) => {
                            let to = format!("{}@{digest}", repository(&image));
                            out.pins.push(Pin { workload: workload.clone(), container: cname, from: image, to: to.clone() });
                            c["image"] = Value::String(to);
                        }
                        Some([first, ..]) => {
                            let to = format!("{}@{first}", repository(&image));
                            out.warnings.push(format!(
                                "{workload} container {cname}: replicas ran several digests at backup time; pinned to {first}"
                            ));
                            out.pins.push(Pin { workload: workload.clone(), container: cname, from: image, to: to.clone() });
                            c["image"] = Value::String(to);
                        }
                        _ => out.warnings.push(format!(
                            "{workload} container {cname}: no running pod recorded its digest; {image} is used as written"
                        )),
                    }
                }
            }
        }
    }
    objects.sort_by_key(|o| {
        let kind = o["kind"].as_str().unwrap_or("");
        (
            ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len()),
            o["metadata"]["name"].as_str().unwrap_or("").to_string(),
        )
    });
    out.objects = objects;
    out
}

fn replace_in(v: &mut Value, from: &str, to: &str) {
    if let Value::String(text) = v {
        if text.contains(from) {
            *text = text.replace(from, to);
        }
    }
}

fn rewrite_hosts(ingress: &mut Value, host_map: &[(String, String)]) {
    let map = |h: &str| -> Option<String> {
        host_map
            .iter()
            .find(|(from, _)| from == h)
            .map(|(_, to)| to.clone())
    };
    if let Some(Value::Array(rules)) = ingress.pointer_mut("/spec/rules") {
        for r in rules {
            if let Some(new) = r["host"].as_str().and_then(map) {
                r["host"] = Value::String(new);
            }
        }
    }
    if let Some(Value::Array(tls)) = ingress.pointer_mut("/spec/tls") {
        for t in tls {
            if let Some(Value::Array(hosts)) = t.get_mut("hosts") {
                for h in hosts {
                    if let Some(new) = h.as_str().and_then(map) {
                        *h = Value::String(new);
                    }
                }
            }
        }
    }
}

fn api_err(doing: String, source: kube::Error) -> ClusterError {
    ClusterError::Api { doing, source }
}

/// Refuses a namespace that already runs workloads unless `force`.
pub async fn check_target(client: &Client, ns: &str, force: bool) -> Result<(), ClusterError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let n = deployments
        .list(&ListParams::default())
        .await
        .map_err(|e| api_err(format!("listing Deployments in {ns}"), e))?
        .items
        .len()
        + statefulsets
            .list(&ListParams::default())
            .await
            .map_err(|e| api_err(format!("listing StatefulSets in {ns}"), e))?
            .items
            .len();
    if n > 0 && !force {
        return Err(ClusterError::NamespaceOccupied {
            namespace: ns.to_string(),
            workloads: n,
        });
    }
    Ok(())
}

/// Creates the namespace if it does not exist (a 409 means it does).
async fn ensure_namespace(client: &Client, ns: &str) -> Result<(), ClusterError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let nsobj: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}
    }))
    .map_err(|e| ClusterError::Invalid {
        object: ns.to_string(),
        detail: e.to_string(),
    })?;
    // Create, not apply: a namespace needs no fields of ours, and creating it
    // is allowed to a role that may not patch namespaces.
    match namespaces.create(&PostParams::default(), &nsobj).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(api_err(format!("creating namespace {ns}"), e)),
    }
    Ok(())
}

macro_rules! apply_typed {
    ($client:expr, $ns:expr, $name:expr, $label:expr, $value:expr, $pp:expr, $t:ty) => {{
        let obj: $t = serde_json::from_value($value).map_err(|e| ClusterError::Invalid {
            object: $label.clone(),
            detail: e.to_string(),
        })?;
        let api: Api<$t> = Api::namespaced($client.clone(), $ns);
        api.patch(&$name, $pp, &Patch::Apply(&obj))
            .await
            .map(|_| ())
            .map_err(|e| api_err(format!("applying {}", $label), e))
    }};
}

/// Creates the namespace (unless told it exists already) and
/// server-side-applies every object, in order.
pub async fn apply(
    client: &Client,
    ns: &str,
    objects: &[Value],
    create_namespace: bool,
    custom: &[CustomResourceKind],
) -> Result<Vec<String>, ClusterError> {
    let pp = PatchParams::apply("wpdr").force();
    if create_namespace {
        ensure_namespace(client, ns).await?;
    }
    let mut applied = Vec::new();
    for v in objects {
        let kind = v["kind"].as_str().unwrap_or("").to_string();
        let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
        let label = format!("{kind}/{name}");
        let value = v.clone();
        match kind.as_str() {
            "ServiceAccount" => apply_typed!(client, ns, name, label, value, &pp, ServiceAccount),
            "Role" => apply_typed!(client, ns, name, label, value, &pp, Role),
            "RoleBinding" => apply_typed!(client, ns, name, label, value, &pp, RoleBinding),
            "Secret" => apply_typed!(client, ns, name, label, value, &pp, Secret),
            "ConfigMap" => apply_typed!(client, ns, name, label, value, &pp, ConfigMap),
            "PersistentVolumeClaim" => {
                apply_typed!(client, ns, name, label, value, &pp, PersistentVolumeClaim)
            }
            "Service" => apply_typed!(client, ns, name, label, value, &pp, Service),
            "Deployment" => apply_typed!(client, ns, name, label, value, &pp, Deployment),
            "StatefulSet" => apply_typed!(client, ns, name, label, value, &pp, StatefulSet),
            "DaemonSet" => apply_typed!(client, ns, name, label, value, &pp, DaemonSet),
            "CronJob" => apply_typed!(client, ns, name, label, value, &pp, CronJob),
            "Job" => apply_typed!(client, ns, name, label, value, &pp, Job),
            "Ingress" => apply_typed!(client, ns, name, label, value, &pp, Ingress),
            "HorizontalPodAutoscaler" => {
                apply_typed!(client, ns, name, label, value, &pp, HorizontalPodAutoscaler)
            }
            "PodDisruptionBudget" => {
                apply_typed!(client, ns, name, label, value, &pp, PodDisruptionBudget)
            }
            "NetworkPolicy" => apply_typed!(client, ns, name, label, value, &pp, NetworkPolicy),
            other => match custom.iter().find(|c| {
                c.kind == other
                    && v["apiVersion"].as_str() == Some(format!("{}/{}", c.group, c.version).as_str())
            }) {
                Some(cr) => {
                    let ar = super::inventory::api_resource(cr);
                    let obj: DynamicObject = serde_json::from_value(value).map_err(|e| {
                        ClusterError::Invalid {
                            object: label.clone(),
                            detail: e.to_string(),
                        }
                    })?;
                    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
                    api.patch(&name, &pp, &Patch::Apply(&obj))
                        .await
                        .map(|_| ())
                        .map_err(|e| api_err(format!("applying {label}"), e))
                }
                None => Err(ClusterError::Invalid {
                    object: label.clone(),
                    detail: format!("kind {other} is neither built in nor a custom resource recorded in the set"),
                }),
            },
        }?;
        // Name only: the objects may hold Secret data.
        applied.push(label);
    }
    Ok(applied)
}

/// What a workload still lacks: its desired replicas (default 1) ready on
/// its current generation; `None` when it has them.
fn not_ready(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    want: Option<i32>,
    observed_generation: Option<i64>,
    ready: Option<i32>,
) -> Option<String> {
    let want = want.unwrap_or(1);
    let ready = ready.unwrap_or(0);
    let current = observed_generation.unwrap_or(0) >= meta.generation.unwrap_or(0);
    (!current || ready < want).then(|| {
        format!(
            "{kind}/{} {ready}/{want} ready",
            meta.name.as_deref().unwrap_or("?")
        )
    })
}

/// Waits until every Deployment and StatefulSet in `ns` runs its desired
/// replicas as ready on its current generation; `log` hears each change of
/// what is still missing. The caller bounds the wait.
pub async fn wait_ready(
    client: &Client,
    ns: &str,
    log: impl Fn(String),
) -> Result<usize, ClusterError> {
    let api_err = |doing: &str, source: kube::Error| ClusterError::Api {
        doing: format!("{doing} in {ns}"),
        source,
    };
    let mut last = String::new();
    loop {
        let mut waiting = Vec::new();
        let mut total = 0;
        let deployments = Api::<Deployment>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| api_err("listing Deployments", e))?;
        for d in &deployments.items {
            total += 1;
            let st = d.status.clone().unwrap_or_default();
            waiting.extend(not_ready(
                "Deployment",
                &d.metadata,
                d.spec.as_ref().and_then(|s| s.replicas),
                st.observed_generation,
                st.ready_replicas,
            ));
        }
        let sets = Api::<StatefulSet>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| api_err("listing StatefulSets", e))?;
        for s in &sets.items {
            total += 1;
            let st = s.status.clone().unwrap_or_default();
            waiting.extend(not_ready(
                "StatefulSet",
                &s.metadata,
                s.spec.as_ref().and_then(|s| s.replicas),
                st.observed_generation,
                st.ready_replicas,
            ));
        }
        if waiting.is_empty() {
            log(format!("{total} workload(s) ready in {ns}"));
            return Ok(total);
        }
        let now = format!("waiting for {}", waiting.join(", "));
        if now != last {
            log(now.clone());
            last = now;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repositories_lose_tags_and_digests_but_not_ports() {
        assert_eq!(repository("wordpress:6.6"), "wordpress");
        assert_eq!(
            repository("registry:5000/team/wp:6.6@sha256:ab"),
            "registry:5000/team/wp"
        );
        assert_eq!(repository("registry:5000/team/wp"), "registry:5000/team/wp");
    }

    #[test]
    fn rewrites_namespace_hosts_pins_and_order() {
        let objects = vec![
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "wp"},
                   "spec": {"rules": [{"host": "shop.example.com"}], "tls": [{"hosts": ["shop.example.com"]}]}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "wordpress"},
                   "spec": {"template": {"spec": {"containers": [{"name": "php", "image": "wordpress:6.6",
                       "env": [{"name": "CACHE", "value": "redis.shop.svc:6379"}]}]}}}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rb"},
                   "subjects": [{"kind": "ServiceAccount", "name": "wp", "namespace": "shop"}]}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                   "data": {"DB_HOST": "mariadb.shop.svc.cluster.local", "OTHER": "shop"}}),
        ];
        let images = vec![ImageDigest {
            workload: "Deployment/wordpress".into(),
            container: "php".into(),
            init: false,
            image: "wordpress:6.6".into(),
            digests: vec!["sha256:feed".into()],
            replicas_disagree: false,
            tag_ambiguous: false,
        }];
        let r = rewrite(
            objects,
            vec![],
            &images,
            "shop",
            "drill-1",
            &[("shop.example.com".into(), "drill.example.com".into())],
        );
        let kinds: Vec<&str> = r
            .objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            vec!["RoleBinding", "ConfigMap", "Deployment", "Ingress"]
        );
        assert!(r
            .objects
            .iter()
            .all(|o| o["metadata"]["namespace"] == "drill-1"));
        assert_eq!(r.objects[0]["subjects"][0]["namespace"], "drill-1");
        assert_eq!(
            r.objects[1]["data"]["DB_HOST"],
            "mariadb.drill-1.svc.cluster.local"
        );
        assert_eq!(
            r.objects[1]["data"]["OTHER"], "shop",
            "only DNS names are rewritten"
        );
        let php = &r.objects[2]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(php["image"], "wordpress@sha256:feed");
        assert_eq!(php["env"][0]["value"], "redis.drill-1.svc:6379");
        assert_eq!(
            r.objects[3]["spec"]["rules"][0]["host"],
            "drill.example.com"
        );
        assert_eq!(
            r.objects[3]["spec"]["tls"][0]["hosts"][0],
            "drill.example.com"
        );
        assert_eq!(r.pins.len(), 1);
    }
}
