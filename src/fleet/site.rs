//! The `Site` custom resource: its spec (the site's wpdr configuration,
//! credentials by Secret reference, schedules) and its status (what a fleet
//! view needs without reading the store: newest set, RPO, last drill, gaps,
//! last error). The CRD's schema is generated from these types
//! ([`crd_yaml`]); the chart ships the generated file and a test keeps the
//! two equal.

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    printcolumn = r#"{"name":"Newest set","type":"string","jsonPath":".status.newestSet"}"#,
    printcolumn = r#"{"name":"RPO","type":"integer","description":"Seconds since the newest complete set (or the archive's newest point)","jsonPath":".status.rpoSeconds"}"#,
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
    /// backup, media-sync, binlog-archive, prune, verify-latest or drill.
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
    /// When it was taken (RFC 3339).
    pub newest_set_time: Option<String>,
    /// Seconds of data a restore now would lose: since the newest set, or
    /// since the binlog archive's newest point when it is current.
    pub rpo_seconds: Option<i64>,
    /// Oldest and newest moment a point-in-time restore can reach (RFC 3339).
    pub recoverable_from: Option<String>,
    pub recoverable_to: Option<String>,
    pub open_gaps: Option<i64>,
    pub last_drill: Option<DrillStatus>,
    /// The last failed run's job and reason, cleared by its next success.
    pub last_error: Option<String>,
    /// The generation of the spec this status describes.
    pub observed_generation: Option<i64>,
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

/// Any JSON object: the configuration's own schema is wpdr's (checked when
/// the site's jobs load it), kept whole by the API server.
fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
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
            ["Newest set", "RPO", "Drill", "RTO", "Gaps", "Error", "Age"]
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
