//! The Kubernetes objects of one run: a ConfigMap with the site's wpdr.yaml
//! and a Job that runs `wpdr fleet run-job` with it. Both live in the site's
//! namespace and are owned by the Site (deleting a Site deletes its runs);
//! the Job's credentials come from the site's Secrets by reference, so the
//! controller never reads or copies one.

use super::plan::Resources;
use super::site::{Site, SiteError, SiteSpec};
use crate::cluster::inventory::EXCLUDE_LABEL;
use crate::config::{Config, StoreConfig};
use crate::jobs::JobKind;
use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Labels and annotations the controller finds its Jobs by.
pub const SITE_LABEL: &str = "wpdr.io/site";
pub const SCHEDULE_LABEL: &str = "wpdr.io/schedule";
pub const JOB_LABEL: &str = "wpdr.io/job";
pub const MANAGED_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "wpdr-controller";
pub const DUE_ANNOTATION: &str = "wpdr.io/due";
pub const DATABASE_ANNOTATION: &str = "wpdr.io/database";
pub const ENDPOINTS_ANNOTATION: &str = "wpdr.io/endpoints";
/// Where the site's wpdr.yaml is mounted in the Job.
pub const CONFIG_PATH: &str = "/etc/wpdr/wpdr.yaml";

/// What every Job of the fleet gets from the chart's values.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobTemplate {
    pub image: String,
    #[serde(default = "if_not_present")]
    pub image_pull_policy: String,
    /// The service account the Jobs run as in each site's namespace; none:
    /// the namespace's default, with no API token mounted.
    #[serde(default)]
    pub service_account_name: Option<String>,
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Finished Jobs are removed after this long (their result is already
    /// in the Site's status and the store).
    #[serde(default = "one_day")]
    pub ttl_seconds_after_finished: i32,
    /// A run still going after this long is stopped (the next one retries).
    #[serde(default = "six_hours")]
    pub active_deadline_seconds: i64,
}

fn if_not_present() -> String {
    "IfNotPresent".into()
}
fn one_day() -> i32 {
    86_400
}
fn six_hours() -> i64 {
    6 * 3600
}

impl JobTemplate {
    /// The chart's Job template with this site's changes.
    pub fn for_site(&self, site: &str, spec: &SiteSpec) -> Result<JobTemplate, SiteError> {
        let mut t = self.clone();
        let Some(job) = &spec.job else {
            return Ok(t);
        };
        let bad = |field: &'static str, problem: String| SiteError::Job {
            site: site.to_string(),
            field,
            problem,
        };
        if let Some(sa) = &job.service_account_name {
            let ok = !sa.is_empty()
                && sa.len() <= 253
                && sa
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !ok {
                return Err(bad(
                    "serviceAccountName",
                    format!("'{sa}' is not a service account name (lowercase letters, digits, '-' and '.')"),
                ));
            }
            t.service_account_name = Some(sa.clone());
        }
        if let Some(r) = &job.resources {
            t.resources = Some(serde_json::from_value(r.clone()).map_err(|e| {
                bad(
                    "resources",
                    format!("{e} (give requests and limits as in a container's resources)"),
                )
            })?);
        }
        t.node_selector.extend(job.node_selector.clone());
        for tol in &job.tolerations {
            t.tolerations
                .push(serde_json::from_value(tol.clone()).map_err(|e| {
                    bad(
                        "tolerations",
                        format!("{e} (give Kubernetes tolerations: key, operator, value, effect)"),
                    )
                })?);
        }
        Ok(t)
    }

    pub fn new(image: &str) -> Self {
        JobTemplate {
            image: image.to_string(),
            image_pull_policy: if_not_present(),
            service_account_name: None,
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            ttl_seconds_after_finished: one_day(),
            active_deadline_seconds: six_hours(),
        }
    }
}

/// What a job kind holds while it runs: the database server it reads (a
/// drill: the one it restores into) and the S3 endpoints it talks to.
pub fn resources(cfg: &Config, kind: JobKind) -> Resources {
    let store = match &cfg.store {
        StoreConfig::Local { path, .. } => format!("local:{}", path.display()),
        StoreConfig::S3(s3) => endpoint(s3),
    };
    let mut endpoints = vec![store];
    let database = match kind {
        JobKind::Backup | JobKind::BinlogArchive => {
            Some(format!("{}:{}", cfg.database.host, cfg.database.port))
        }
        JobKind::Drill => cfg.restore.database.as_deref().map(server_of),
        JobKind::MediaSync | JobKind::Prune | JobKind::VerifyLatest | JobKind::BinlogPrune => None,
    };
    if matches!(kind, JobKind::MediaSync | JobKind::Backup | JobKind::Drill) {
        if let Some(m) = &cfg.media {
            endpoints.push(endpoint(&m.source));
            endpoints.push(endpoint(&m.offsite));
        }
    }
    endpoints.sort();
    endpoints.dedup();
    Resources {
        database,
        endpoints,
    }
}

fn endpoint(s3: &crate::config::S3Config) -> String {
    s3.endpoint
        .clone()
        .unwrap_or_else(|| format!("aws:{}", s3.region))
}

/// `host:port` of a `mysql://user@host:port/db` URL.
fn server_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// A name Kubernetes accepts (63 characters, lowercase) that is the same
/// for the same run: creating it twice (a controller restarted between
/// creating the Job and recording it) finds the first.
pub fn job_name(site: &str, schedule: &str, due: DateTime<Utc>, attempt: u32) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{site}/{schedule}/{}/{attempt}", due.timestamp()));
    let hash: String = digest[..3].iter().map(|b| format!("{b:02x}")).collect();
    let short: String = site.chars().take(24).collect();
    let short = short.trim_end_matches('-');
    format!(
        "{short}-{schedule}-{}-{attempt}-{hash}",
        due.format("%m%d%H%M")
    )
}

fn owner(site: &Site) -> Option<OwnerReference> {
    let meta = site.meta();
    Some(OwnerReference {
        api_version: Site::api_version(&()).to_string(),
        kind: Site::kind(&()).to_string(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

fn labels(site: &Site) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            SITE_LABEL.to_string(),
            site.meta().name.clone().unwrap_or_default(),
        ),
        (MANAGED_LABEL.to_string(), MANAGER.to_string()),
        // A set of the site must not record its own backup Jobs.
        (EXCLUDE_LABEL.to_string(), "true".to_string()),
    ])
}

/// The ConfigMap holding the site's wpdr.yaml (no credential: the Site's
/// check refuses any inline).
pub fn config_map_name(site: &Site) -> String {
    format!(
        "wpdr-site-{}",
        site.meta().name.as_deref().unwrap_or("site")
    )
}

pub fn config_map(site: &Site) -> Result<ConfigMap, serde_yaml::Error> {
    let yaml = serde_yaml::to_string(&site.spec.config)?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(site)),
            namespace: site.meta().namespace.clone(),
            labels: Some(labels(site)),
            owner_references: owner(site).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("wpdr.yaml".to_string(), yaml)])),
        ..Default::default()
    })
}

/// One run's Job.
pub struct JobRequest<'a> {
    pub site: &'a Site,
    pub schedule: &'a str,
    pub kind: JobKind,
    pub due: DateTime<Utc>,
    pub attempt: u32,
    pub uses: &'a Resources,
}

pub fn job(req: &JobRequest<'_>, template: &JobTemplate) -> Job {
    let site = req.site;
    let site_name = site.meta().name.clone().unwrap_or_default();
    let mut labels = labels(site);
    labels.insert(SCHEDULE_LABEL.into(), req.schedule.to_string());
    labels.insert(JOB_LABEL.into(), req.kind.as_str().to_string());
    let mut annotations = BTreeMap::from([(DUE_ANNOTATION.to_string(), req.due.to_rfc3339())]);
    if let Some(db) = &req.uses.database {
        annotations.insert(DATABASE_ANNOTATION.into(), db.clone());
    }
    annotations.insert(ENDPOINTS_ANNOTATION.into(), req.uses.endpoints.join(","));
    let env: Vec<EnvVar> = site
        .spec
        .credentials
        .env()
        .into_iter()
        .map(|(name, r)| EnvVar {
            name: name.to_string(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .chain([EnvVar {
            name: "WPDR_LOG_FORMAT".into(),
            value: Some("json".into()),
            ..Default::default()
        }])
        .collect();
    let container = Container {
        name: "wpdr".into(),
        image: Some(template.image.clone()),
        image_pull_policy: Some(template.image_pull_policy.clone()),
        args: Some(
            [
                "fleet",
                "run-job",
                "--config",
                CONFIG_PATH,
                "--job",
                req.kind.as_str(),
                "--schedule",
                req.schedule,
                "--outcome-file",
                "/dev/termination-log",
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(env),
        resources: template.resources.clone(),
        termination_message_path: Some("/dev/termination-log".into()),
        termination_message_policy: Some("File".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: "/etc/wpdr".into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let pod = PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: template.service_account_name.clone(),
        // Backups need no API token unless the site records its namespace's
        // objects (then the template names an account that may read them).
        automount_service_account_token: Some(template.service_account_name.is_some()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        node_selector: (!template.node_selector.is_empty()).then(|| template.node_selector.clone()),
        tolerations: (!template.tolerations.is_empty()).then(|| template.tolerations.clone()),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: config_map_name(site),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&site_name, req.schedule, req.due, req.attempt)),
            namespace: site.meta().namespace.clone(),
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            owner_references: owner(site).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // The controller retries with its own backoff and records each
            // attempt; Kubernetes' retries would hide them.
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(template.ttl_seconds_after_finished),
            active_deadline_seconds: Some(template.active_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::site::{SecretKeyRef, SiteCredentials, SiteSpec};

    fn site() -> Site {
        let mut s = Site::new(
            "shop",
            SiteSpec {
                config: serde_yaml::from_str(
                    "site: shop\nstore: {type: s3, bucket: b, endpoint: 'http://minio:9000'}\ndatabase: {host: db1, port: 3306, user: wpdr, name: wp}",
                )
                .unwrap(),
                credentials: SiteCredentials {
                    database_password: Some(SecretKeyRef {
                        name: "shop-db".into(),
                        key: "password".into(),
                    }),
                    ..Default::default()
                },
                schedules: vec![],
                suspend: false,
                job: None,
            },
        );
        s.metadata.namespace = Some("shop-ns".into());
        s.metadata.uid = Some("uid-1".into());
        s
    }

    fn nightly_due() -> DateTime<Utc> {
        "2026-11-30T02:17:00Z".parse().unwrap()
    }

    /// The first attempt of the site's nightly backup due at [`nightly_due`].
    fn nightly_backup(site: &Site, uses: &Resources, template: &JobTemplate) -> Job {
        job(
            &JobRequest {
                site,
                schedule: "nightly",
                kind: JobKind::Backup,
                due: nightly_due(),
                attempt: 0,
                uses,
            },
            template,
        )
    }

    #[test]
    fn a_site_changes_its_jobs_resources_placement_and_account_but_not_the_rest() {
        let mut base = JobTemplate::new("registry.example/wpdr@sha256:abc");
        base.node_selector.insert("pool".into(), "backup".into());
        base.node_selector.insert("zone".into(), "a".into());
        let mut site = site();
        site.spec.job = Some(
            serde_yaml::from_str(
                "serviceAccountName: shop-backup\nresources: {requests: {memory: 1Gi}, limits: {memory: 2Gi}}\nnodeSelector: {zone: b}\ntolerations: [{key: dedicated, operator: Equal, value: db, effect: NoSchedule}]",
            )
            .unwrap(),
        );
        let t = base.for_site("shop-ns/shop", &site.spec).unwrap();
        assert_eq!(t.image, base.image, "the image stays the chart's");
        assert_eq!(t.active_deadline_seconds, base.active_deadline_seconds);
        assert_eq!(t.service_account_name.as_deref(), Some("shop-backup"));
        let mem = |r: &Option<
            BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| {
            r.as_ref()
                .and_then(|m| m.get("memory"))
                .map(|q| q.0.clone())
        };
        let res = t.resources.clone().unwrap();
        assert_eq!(mem(&res.limits).as_deref(), Some("2Gi"));
        assert_eq!(t.node_selector["pool"], "backup");
        assert_eq!(t.node_selector["zone"], "b", "the site's key wins");
        assert_eq!(t.tolerations[0].key.as_deref(), Some("dedicated"));
        // In the Job: the site's account, its token mounted (it was asked for).
        let cfg = site.spec.check("shop-ns/shop").unwrap();
        let uses = resources(&cfg, JobKind::Backup);
        let j = nightly_backup(&site, &uses, &t);
        let yaml = serde_yaml::to_string(&j).unwrap();
        for want in [
            "serviceAccountName: shop-backup",
            "memory: 2Gi",
            "zone: b",
            "key: dedicated",
        ] {
            assert!(yaml.contains(want), "{want} missing in\n{yaml}");
        }
        // What is not a Kubernetes value is refused, naming the field.
        for (bad, field) in [
            ("resources: {limits: {memory: [1]}}", "spec.job.resources"),
            (
                "tolerations: [{key: 1, operator: [x]}]",
                "spec.job.tolerations",
            ),
            (
                "serviceAccountName: Shop_Backup",
                "spec.job.serviceAccountName",
            ),
        ] {
            site.spec.job = Some(serde_yaml::from_str(bad).unwrap());
            let e = base
                .for_site("shop-ns/shop", &site.spec)
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }

    #[test]
    fn a_job_takes_credentials_by_reference_and_runs_locked_down() {
        let site = site();
        let cfg = site.spec.check("shop-ns/shop").unwrap();
        let uses = resources(&cfg, JobKind::Backup);
        assert_eq!(uses.database.as_deref(), Some("db1:3306"));
        assert_eq!(uses.endpoints, ["http://minio:9000"]);
        let due = nightly_due();
        let template = JobTemplate::new("registry.example/wpdr@sha256:abc");
        let job = nightly_backup(&site, &uses, &template);
        let name = job.metadata.name.clone().unwrap();
        assert!(
            name.len() <= 63 && name.starts_with("shop-nightly-11300217-0-"),
            "{name}"
        );
        assert_eq!(name, job_name("shop", "nightly", due, 0));
        assert_ne!(name, job_name("shop", "nightly", due, 1));
        assert_eq!(job.metadata.namespace.as_deref(), Some("shop-ns"));
        assert_eq!(
            job.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-1"
        );
        let yaml = serde_yaml::to_string(&job).unwrap();
        for want in [
            "secretKeyRef",
            "name: shop-db",
            "WPDR_DB_PASSWORD",
            "backoffLimit: 0",
            "readOnlyRootFilesystem: true",
            "runAsNonRoot: true",
            "wpdr.io/exclude-from-backup: 'true'",
            "automountServiceAccountToken: false",
            "- run-job",
        ] {
            assert!(yaml.contains(want), "{want} missing in\n{yaml}");
        }
        let cm = config_map(&site).unwrap();
        let text = &cm.data.unwrap()["wpdr.yaml"];
        assert!(text.contains("db1") && !text.contains("password"), "{text}");
        // A long site name still makes a valid name.
        let long = job_name(&"a".repeat(80), "media-sync-hourly", due, 12);
        assert!(long.len() <= 63, "{long}");
        assert_eq!(
            server_of("mysql://restore@staging-db:3307/wp"),
            "staging-db:3307"
        );
    }
}
