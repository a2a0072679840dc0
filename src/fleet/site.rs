//! The `Site` custom resource: its spec (the site's wpdr configuration,
//! credentials by Secret reference, schedules) and its status (what a fleet
//! view needs without reading the store: newest set, RPO, last drill, gaps,
//! last error). The CRD's schema is generated from these types
//! ([`crd_yaml`]); the chart ships the generated file and a test keeps the
//! two equal.

use super::plan::RunRecord;
use super::schedule::SiteCron;
use crate::config::{Config, ConfigError};
use crate::exit::{Classify, ExitCode};
use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A WordPress site wpdr protects. Namespaced: it lives next to the site,
/// and its Secret references resolve in its namespace only.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "wpdr.io",
    version = "v1alpha1",
    kind = "Site",
    plural = "sites",
    shortname = "wps",
    namespaced,
    status = "SiteStatus",
    printcolumn = r#"{"name":"Newest set","type":"string","priority":1,"jsonPath":".status.newestSet"}"#,
    printcolumn = r#"{"name":"Set age","type":"date","description":"How old the newest complete set is: the RPO without the binlog archive","jsonPath":".status.newestSetTime"}"#,
    printcolumn = r#"{"name":"PITR to","type":"date","description":"The newest second a point-in-time restore reaches","jsonPath":".status.recoverableTo"}"#,
    printcolumn = r#"{"name":"Drill","type":"string","jsonPath":".status.lastDrill.result"}"#,
    printcolumn = r#"{"name":"RTO","type":"integer","jsonPath":".status.lastDrill.rtoSeconds"}"#,
    printcolumn = r#"{"name":"Gaps","type":"integer","jsonPath":".status.openGaps"}"#,
    printcolumn = r#"{"name":"Error","type":"string","priority":1,"jsonPath":".status.lastError"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SiteSpec {
    /// The site's wpdr.yaml as in the README's Configuration, credentials
    /// left out (they come from `credentials`); checked by wpdr when the
    /// site's jobs run, as `wpdr check-config` checks a file.
    #[schemars(schema_with = "free_form")]
    pub config: serde_json::Value,
    /// Every credential the configuration needs, each a key of a Secret in
    /// the site's namespace. Nothing secret is ever copied out of it.
    #[serde(default)]
    pub credentials: SiteCredentials,
    /// When each job runs (as in `schedules/`); a cron without `H` is
    /// pinned, `H` spreads the site over the field's range by a stable hash.
    #[serde(default)]
    pub schedules: Vec<SiteSchedule>,
    /// Stop starting new runs for this site (running ones finish).
    #[serde(default)]
    pub suspend: bool,
    /// What this site's Jobs change in the chart's Job template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<SiteJob>,
}

/// A site's changes to its Jobs' pods (a large site needs more memory, a
/// site's database is reached from some nodes only). The image, the
/// deadline and the security context stay the chart's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteJob {
    /// Run as this service account of the site's namespace. Whoever may
    /// create Sites in a namespace chooses it: grant that as you would
    /// grant creating Jobs there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Requests and limits (a Kubernetes ResourceRequirements), in place of the chart's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub resources: Option<serde_json::Value>,
    /// Added to the chart's node selector (a key given here wins).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Added to the chart's tolerations (Kubernetes Tolerations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "free_form_list")]
    pub tolerations: Vec<serde_json::Value>,
}

/// A key of a Secret in the Site's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// The credentials of a site's jobs, by reference.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteCredentials {
    pub database_password: Option<SecretKeyRef>,
    pub store_access_key_id: Option<SecretKeyRef>,
    pub store_secret_access_key: Option<SecretKeyRef>,
    pub media_source_access_key_id: Option<SecretKeyRef>,
    pub media_source_secret_access_key: Option<SecretKeyRef>,
    pub media_offsite_access_key_id: Option<SecretKeyRef>,
    pub media_offsite_secret_access_key: Option<SecretKeyRef>,
    pub signing_key: Option<SecretKeyRef>,
    pub secrets_key: Option<SecretKeyRef>,
}

/// One scheduled job of a site.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteSchedule {
    pub name: String,
    /// backup, media-sync, prune, verify-latest or drill.
    pub job: String,
    /// Six fields, seconds first; `H` in a field: spread by the site's hash.
    pub cron: String,
    pub timezone: Option<String>,
}

/// What the fleet view shows for a site, written by the controller after
/// each run (kept short: the store holds the details).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteStatus {
    /// Id of the newest complete set.
    pub newest_set: Option<String>,
    /// When its snapshot was taken (RFC 3339): a restore now loses what
    /// came after (kubectl shows its age). No seconds count is stored: it
    /// would be stale the moment it was written.
    pub newest_set_time: Option<String>,
    /// Oldest and newest moment a point-in-time restore can reach (RFC 3339).
    pub recoverable_from: Option<String>,
    pub recoverable_to: Option<String>,
    pub open_gaps: Option<i64>,
    pub last_drill: Option<DrillStatus>,
    /// The last failed run's job and reason, cleared by its next success.
    pub last_error: Option<String>,
    /// The generation of the spec this status describes.
    pub observed_generation: Option<i64>,
    /// Each schedule's runs, by schedule name: what a restarted controller
    /// needs to know what already ran.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runs: BTreeMap<String, RunRecord>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillStatus {
    /// Passed or Failed.
    pub result: String,
    pub at: String,
    pub rto_seconds: Option<i64>,
    pub rpo_seconds: Option<i64>,
}

/// Why a Site cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("Site {site}: spec.config.{path} holds a credential inline, readable by anyone who can read Sites; put it in a Secret of the site's namespace and name it in spec.credentials.{instead}")]
    InlineCredential {
        site: String,
        path: String,
        instead: &'static str,
    },
    #[error("Site {site}: spec.config.{path} names a file, but a site's Job mounts none; give the value in spec.credentials (a Secret key) instead")]
    File { site: String, path: String },
    #[error("Site {site}: spec.config.{path}: the identity that opens the sets must never be in the cluster (see the README's Threat model); only the restore side holds it")]
    Identity { site: String, path: String },
    #[error("Site {site}: spec.schedules: {problem}")]
    Schedule { site: String, problem: String },
    #[error("Site {site}: spec.job.{field}: {problem}")]
    Job {
        site: String,
        field: &'static str,
        problem: String,
    },
    #[error("Site {site}: {source}")]
    Config {
        site: String,
        #[source]
        source: ConfigError,
    },
}

impl Classify for SiteError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Config
    }
    fn metric_label(&self) -> &'static str {
        "site"
    }
}

impl SiteCredentials {
    /// Each credential given, with the environment variable wpdr reads it
    /// from: a site's Job gets it as `env: valueFrom: secretKeyRef`.
    pub fn env(&self) -> Vec<(&'static str, &SecretKeyRef)> {
        [
            ("WPDR_DB_PASSWORD", &self.database_password),
            ("WPDR_S3_ACCESS_KEY_ID", &self.store_access_key_id),
            ("WPDR_S3_SECRET_ACCESS_KEY", &self.store_secret_access_key),
            (
                "WPDR_MEDIA_SOURCE_ACCESS_KEY_ID",
                &self.media_source_access_key_id,
            ),
            (
                "WPDR_MEDIA_SOURCE_SECRET_ACCESS_KEY",
                &self.media_source_secret_access_key,
            ),
            (
                "WPDR_MEDIA_OFFSITE_ACCESS_KEY_ID",
                &self.media_offsite_access_key_id,
            ),
            (
                "WPDR_MEDIA_OFFSITE_SECRET_ACCESS_KEY",
                &self.media_offsite_secret_access_key,
            ),
            ("WPDR_SIGNING_KEY", &self.signing_key),
            ("WPDR_SECRETS_KEY", &self.secrets_key),
        ]
        .into_iter()
        .filter_map(|(env, r)| r.as_ref().map(|r| (env, r)))
        .collect()
    }
}

/// Keys of the configuration that hold a credential, and where it goes instead.
const INLINE_CREDENTIALS: &[(&str, &str)] = &[
    ("password", "databasePassword"),
    (
        "secret_access_key",
        "storeSecretAccessKey / mediaSourceSecretAccessKey / mediaOffsiteSecretAccessKey",
    ),
];

/// File settings a Job can still use: public material mounted from a ConfigMap.
const PUBLIC_FILES: &[&str] = &["ca_file", "recipients_file"];

impl SiteSpec {
    /// Checks the site as its Jobs will load it, before any Job is made: no
    /// credential inline, no file a Job would not have, no identity, and
    /// the configuration valid for wpdr with the referenced credentials
    /// present (their values are not read: stand-ins take their place).
    pub fn check(&self, site: &str) -> Result<Config, SiteError> {
        walk(&self.config, "", &mut |path, key| {
            let at = || path.trim_start_matches('.').to_string();
            if key == "identity_file" {
                return Err(SiteError::Identity {
                    site: site.to_string(),
                    path: at(),
                });
            }
            if let Some((_, instead)) = INLINE_CREDENTIALS.iter().find(|(k, _)| *k == key) {
                return Err(SiteError::InlineCredential {
                    site: site.to_string(),
                    path: at(),
                    instead,
                });
            }
            if key.ends_with("_file") && !PUBLIC_FILES.contains(&key) {
                return Err(SiteError::File {
                    site: site.to_string(),
                    path: at(),
                });
            }
            Ok(())
        })?;
        self.crons(site)?;
        // Key material is parsed when loaded: its stand-in would not be a
        // key, so only the plain credentials stand in for the check.
        let env: HashMap<String, String> = self
            .credentials
            .env()
            .into_iter()
            .filter(|(name, _)| !matches!(*name, "WPDR_SIGNING_KEY" | "WPDR_SECRETS_KEY"))
            .map(|(name, _)| (name.to_string(), "stand-in".to_string()))
            .collect();
        // Public files (a CA bundle) are mounted into the Job, not here:
        // the Job's own load checks them.
        let mut config = self.config.clone();
        drop_keys(&mut config, PUBLIC_FILES);
        let text = serde_yaml::to_string(&config).map_err(|e| SiteError::Config {
            site: site.to_string(),
            source: ConfigError::Parse {
                path: "spec.config".into(),
                message: e.to_string(),
            },
        })?;
        Config::from_yaml(&text, &env).map_err(|source| SiteError::Config {
            site: site.to_string(),
            source,
        })
    }
}

impl SiteSpec {
    /// The site's schedules with their `H` fields expanded for this site
    /// (`namespace/name`); names must be unique.
    pub fn crons(&self, site: &str) -> Result<Vec<SiteCron>, SiteError> {
        let bad = |problem: String| SiteError::Schedule {
            site: site.to_string(),
            problem,
        };
        let mut out: Vec<SiteCron> = Vec::new();
        for s in &self.schedules {
            if !s
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                || s.name.is_empty()
                || s.name.len() > 20
            {
                return Err(bad(format!(
                    "name '{}' must be 1-20 lowercase letters, digits or '-' (it becomes part of Job names)",
                    s.name
                )));
            }
            if out.iter().any(|o| o.name == s.name) {
                return Err(bad(format!("name '{}' is used twice", s.name)));
            }
            out.push(
                SiteCron::parse(site, &s.name, &s.job, &s.cron, s.timezone.as_deref())
                    .map_err(bad)?,
            );
        }
        Ok(out)
    }
}

/// Removes these keys from every object in `v`.
fn drop_keys(v: &mut serde_json::Value, keys: &[&str]) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !keys.contains(&k.as_str()));
            map.values_mut().for_each(|c| drop_keys(c, keys));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|c| drop_keys(c, keys)),
        _ => {}
    }
}

/// Calls `visit(path, key)` for every key of every object in `v`.
fn walk(
    v: &serde_json::Value,
    path: &str,
    visit: &mut dyn FnMut(&str, &str) -> Result<(), SiteError>,
) -> Result<(), SiteError> {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                let here = format!("{path}.{k}");
                visit(&here, k)?;
                walk(child, &here, visit)?;
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, &format!("{path}[{i}]"), visit)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Any JSON object: the configuration's own schema is wpdr's (checked when
/// the site's jobs load it), kept whole by the API server.
fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

fn free_form_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// The CustomResourceDefinition, as the chart ships it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let crd = Site::crd();
    Ok(format!(
        "# Generated by `wpdr fleet crd` from src/fleet/site.rs: do not edit.\n{}",
        serde_yaml::to_string(&crd)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_reads_from_yaml_with_credentials_by_reference() {
        let site: Site = serde_yaml::from_str(
            r#"
apiVersion: wpdr.io/v1alpha1
kind: Site
metadata: {name: shop, namespace: shop}
spec:
  config:
    site: shop
    store: {type: s3, bucket: backups}
    database: {host: mariadb, user: wpdr, name: wordpress}
  credentials:
    databasePassword: {name: shop-db, key: password}
  schedules:
    - {name: nightly, job: backup, cron: "0 H 2 * * *"}
"#,
        )
        .expect("a valid Site");
        assert_eq!(site.spec.config["store"]["bucket"], "backups");
        assert_eq!(
            site.spec.credentials.database_password,
            Some(SecretKeyRef {
                name: "shop-db".into(),
                key: "password".into()
            })
        );
        assert!(!site.spec.suspend);
        assert_eq!(site.spec.schedules[0].cron, "0 H 2 * * *");
    }

    fn spec(config: &str) -> SiteSpec {
        SiteSpec {
            config: serde_yaml::from_str(config).unwrap(),
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
        }
    }

    #[test]
    fn a_site_is_checked_as_its_jobs_will_load_it() {
        let ok = spec("site: shop\nstore: {type: s3, bucket: b, ca_file: /etc/ca/minio.pem}\ndatabase: {host: db, user: wpdr, name: wp}");
        let cfg = ok.check("shop/shop").expect("a valid site");
        assert_eq!(cfg.site, "shop");
        assert_eq!(
            ok.credentials.env(),
            vec![(
                "WPDR_DB_PASSWORD",
                ok.credentials.database_password.as_ref().unwrap()
            )]
        );
        for (config, want) in [
            (
                "database: {host: db, password: hunter2}",
                "database.password holds a credential inline",
            ),
            (
                "store: {type: s3, bucket: b, secret_access_key: x}",
                "store.secret_access_key holds a credential inline",
            ),
            (
                "media: {source: {bucket: a, secret_access_key_file: /s}}",
                "media.source.secret_access_key_file names a file",
            ),
            (
                "encryption: {identity_file: /k}",
                "must never be in the cluster",
            ),
            ("store: {type: s3, bukket: b}", "bukket"),
        ] {
            let err = spec(config).check("shop/shop").unwrap_err().to_string();
            assert!(
                err.contains(want) && err.starts_with("Site shop/shop"),
                "{config}: {err}"
            );
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn the_crd_has_the_fleet_columns_and_a_status_subresource() {
        let crd = Site::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("sites.wpdr.io"));
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert!(v
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some());
        let columns: Vec<&str> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Newest set",
                "Set age",
                "PITR to",
                "Drill",
                "RTO",
                "Gaps",
                "Error",
                "Age"
            ]
        );
        let yaml = crd_yaml().unwrap();
        assert!(
            yaml.contains("x-kubernetes-preserve-unknown-fields: true"),
            "{yaml}"
        );
    }

    #[test]
    fn the_chart_ships_the_generated_crd() {
        let shipped = include_str!("../../charts/wpdr/crds/sites.wpdr.io.yaml");
        assert!(
            shipped == crd_yaml().unwrap(),
            "charts/wpdr/crds/sites.wpdr.io.yaml is stale: regenerate it with \
             `wpdr fleet crd > charts/wpdr/crds/sites.wpdr.io.yaml`"
        );
    }
}
