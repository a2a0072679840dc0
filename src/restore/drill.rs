//! DR drills: restore the newest set into a throw-away namespace, run the
//! checks, report RTO (wall time per step and total) and RPO (age of the
//! data restored), keep the report in the store (`<site>/drills/`) for the
//! daemon's metrics, and tear down what the drill created unless kept.
//!
//! Teardown removes only what this drill's journal says it created, and
//! never anything the live site uses (`Targets` refuses those up front).

use super::journal::{Journal, StepState};
use super::plan::StepKind;
use super::run::{self, RestoreContext, RestoreOutcome, RestoreRequest, RunError, Targets};
use crate::catalog::Catalog;
use crate::media::bucket::Bucket;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepTime {
    pub id: String,
    pub kind: StepKind,
    pub state: StepState,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    pub restore_id: String,
    pub site: String,
    pub set_id: String,
    pub namespace: String,
    pub ok: bool,
    pub exit_code: u8,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Wall time of the whole restore, first step to last.
    pub rto_seconds: f64,
    /// Age of the data restored when the drill started (from the point,
    /// for a point-in-time drill).
    pub rpo_seconds: f64,
    /// A point-in-time drill's point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<DateTime<Utc>>,
    pub steps: Vec<StepTime>,
    /// The checks step's findings (tables, media, site answers).
    pub checks: serde_json::Value,
    /// What the teardown removed (empty with --keep).
    pub teardown: Vec<String>,
    pub kept: bool,
    /// The point-in-time window when the drill ran: what a restore could
    /// reach beyond the set itself (None without a readable archive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recoverable: Option<RecoverableAtDrill>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecoverableAtDrill {
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
    /// Age of the newest restorable second: the RPO with the binlog archive.
    pub rpo_seconds: Option<f64>,
    pub open_gaps: usize,
}

impl DrillReport {
    pub fn from_journal(j: &Journal, exit_code: u8, teardown: Vec<String>, kept: bool) -> Self {
        let finished_at = j.finished_at.unwrap_or_else(Utc::now);
        DrillReport {
            restore_id: j.restore_id.clone(),
            site: j.site.clone(),
            set_id: j.set_id.clone(),
            namespace: j.namespace.clone(),
            ok: exit_code == 0,
            exit_code,
            started_at: j.started_at,
            finished_at,
            rto_seconds: (finished_at - j.started_at).num_milliseconds() as f64 / 1000.0,
            rpo_seconds: (j.started_at - j.point.unwrap_or(j.set_taken_at)).num_milliseconds()
                as f64
                / 1000.0,
            point: j.point,
            steps: j
                .ordered_steps()
                .into_iter()
                .map(|(id, s)| StepTime {
                    id: id.to_string(),
                    kind: s.kind,
                    state: s.state,
                    seconds: s.seconds,
                    error: s.error.clone(),
                })
                .collect(),
            checks: j
                .steps
                .values()
                .find(|s| s.kind == StepKind::Checks)
                .map(|s| s.summary.clone())
                .unwrap_or_default(),
            teardown,
            kept,
            recoverable: None,
        }
    }

    /// Prometheus text lines, for a textfile collector or the daemon.
    pub fn metrics(&self) -> String {
        let site = &self.site;
        let mut out = String::new();
        out.push_str("# HELP wpdr_drill_success Whether the newest drill restored and checked the site (1) or not (0).\n# TYPE wpdr_drill_success gauge\n");
        out.push_str(&format!(
            "wpdr_drill_success{{site=\"{site}\"}} {}\n",
            u8::from(self.ok)
        ));
        out.push_str("# HELP wpdr_drill_timestamp_seconds When the newest drill finished.\n# TYPE wpdr_drill_timestamp_seconds gauge\n");
        out.push_str(&format!(
            "wpdr_drill_timestamp_seconds{{site=\"{site}\"}} {}\n",
            self.finished_at.timestamp()
        ));
        out.push_str("# HELP wpdr_drill_rto_seconds Measured wall time of the newest drill's restore.\n# TYPE wpdr_drill_rto_seconds gauge\n");
        out.push_str(&format!(
            "wpdr_drill_rto_seconds{{site=\"{site}\"}} {:.3}\n",
            self.rto_seconds
        ));
        out.push_str("# HELP wpdr_drill_rpo_seconds Age of the data the newest drill restored.\n# TYPE wpdr_drill_rpo_seconds gauge\n");
        out.push_str(&format!(
            "wpdr_drill_rpo_seconds{{site=\"{site}\"}} {:.3}\n",
            self.rpo_seconds
        ));
        out.push_str("# HELP wpdr_drill_step_seconds Wall time of each step of the newest drill.\n# TYPE wpdr_drill_step_seconds gauge\n");
        for s in &self.steps {
            out.push_str(&format!(
                "wpdr_drill_step_seconds{{site=\"{site}\",step=\"{}\"}} {:.3}\n",
                s.id, s.seconds
            ));
        }
        out
    }
}

pub fn drills_prefix(site_prefix: &str) -> String {
    format!("{}/drills/", site_prefix.trim_end_matches('/'))
}

/// Keeps the report as `drills/<id>.json` and `drills/latest.json`.
pub async fn store_report(
    ctx: &RestoreContext,
    report: &DrillReport,
) -> Result<(), crate::store::StoreError> {
    let prefix = drills_prefix(&ctx.cfg.site_prefix());
    let bytes = Bytes::from(serde_json::to_vec_pretty(report).unwrap_or_default());
    ctx.store
        .put_bytes(
            &format!("{prefix}{}.json", report.restore_id),
            bytes.clone(),
        )
        .await?;
    ctx.store
        .put_bytes(&format!("{prefix}latest.json"), bytes)
        .await?;
    Ok(())
}

/// The newest drill's report, if any.
pub async fn latest_report(store: &crate::store::Store, site_prefix: &str) -> Option<DrillReport> {
    let b = store
        .get_bytes(&format!("{}latest.json", drills_prefix(site_prefix)))
        .await
        .ok()?;
    serde_json::from_slice(&b).ok()
}

/// A namespace name for a drill: `wpdr-drill-` and the restore's time.
pub fn drill_namespace(now: DateTime<Utc>) -> String {
    format!(
        "wpdr-drill-{}-{:04x}",
        now.format("%m%d%H%M%S"),
        rand::random::<u16>()
    )
}

/// A drill fills, and then tears down, what `restore:` names for its
/// namespace. A target that does not vary with the namespace (a fixed
/// database or bucket) would be overwritten by every drill and dropped by its
/// teardown, and a fixed cache would be emptied by every drill (FLUSHALL on
/// whatever Redis it names, the live site's included): refused before
/// anything is touched.
pub fn check_throwaway_targets(
    targets: &crate::config::RestoreTargets,
    plan: &super::plan::Plan,
) -> Result<(), RunError> {
    use crate::config::NAMESPACE_PLACEHOLDER as NS;
    let has = |k: StepKind| plan.steps.iter().any(|s| s.kind == k);
    let fixed = |what: &str, step: &str| RunError::MissingTarget {
        step: step.to_string(),
        what: format!("a per-drill {what}"),
        hint: format!(
            "a drill drops what it restored; put {NS} in restore.{what} so each drill gets its own"
        ),
    };
    if has(StepKind::DatabaseLoad) {
        if let Some(db) = &targets.database {
            if !db.contains(NS) {
                return Err(fixed("database", "database-load"));
            }
        }
    }
    if has(StepKind::MediaRestore) {
        if let Some(m) = &targets.media {
            let per_ns =
                m.bucket.contains(NS) || m.endpoint.as_deref().is_some_and(|e| e.contains(NS));
            if !per_ns {
                return Err(fixed("media", "media-restore"));
            }
        }
    }
    if has(StepKind::CacheFlush) && targets.caches.iter().any(|c| !c.contains(NS)) {
        return Err(fixed("caches", "cache-flush"));
    }
    Ok(())
}

/// Runs a drill: restore, report, teardown.
pub async fn drill(
    ctx: &RestoreContext,
    set: &str,
    plan: super::plan::Plan,
    site_url: Option<&str>,
    keep: bool,
    point: Option<chrono::DateTime<Utc>>,
) -> Result<(DrillReport, RestoreOutcome), RunError> {
    check_throwaway_targets(&ctx.cfg.restore, &plan)?;
    let namespace = drill_namespace(Utc::now());
    let outcome = run::start(
        ctx,
        RestoreRequest {
            set,
            namespace: &namespace,
            plan,
            site_url,
            drill: true,
            point,
        },
    )
    .await?;
    let teardown = if keep {
        Vec::new()
    } else {
        teardown(ctx, &outcome.journal).await
    };
    let mut report = DrillReport::from_journal(&outcome.journal, outcome.exit, teardown, keep);
    report.recoverable = crate::binlog::window::load(&ctx.cfg, &ctx.store)
        .await
        .ok()
        .map(|w| RecoverableAtDrill {
            oldest: w.oldest,
            newest: w.newest,
            rpo_seconds: w
                .newest
                .map(|n| (report.started_at - n).num_milliseconds().max(0) as f64 / 1000.0),
            open_gaps: w.open_gaps,
        });
    match store_report(ctx, &report).await {
        Ok(()) => {}
        // Drills should run with read-only store credentials: the report
        // is then printed (and written with --report/--metrics-file) only.
        Err(e) if e.is_write_refused() => {
            tracing::warn!(error = %e, "the store is read-only for these credentials: the drill report is not kept in the store (use --report or --metrics-file)");
        }
        Err(e) => return Err(e.into()),
    }
    Ok((report, outcome))
}

/// Removes what the drill's steps created: the namespace, the restored
/// database, the restored bucket. Each removal is reported, failures too
/// (a failed teardown leaves things to clean by hand, never the source).
pub async fn teardown(ctx: &RestoreContext, j: &Journal) -> Vec<String> {
    let catalog = Catalog::new(&ctx.store, &ctx.cfg.site, &ctx.cfg.site_prefix());
    let Ok(manifest) = catalog.load(&j.set_id).await else {
        return vec![format!("set {} unreadable: nothing torn down", j.set_id)];
    };
    let targets = Targets::resolve(&ctx.cfg, &manifest, &j.namespace, j.site_url.as_deref());
    let ran = |kind: StepKind| j.steps.values().any(|s| s.kind == kind && s.runs > 0);
    let mut done = Vec::new();
    if ran(StepKind::DatabaseLoad) {
        if let Some((endpoint, db)) = &targets.database {
            let r = async {
                let mut c = endpoint.connect(None).await.map_err(|e| e.to_string())?;
                c.query_drop(format!(
                    "DROP DATABASE IF EXISTS `{}`",
                    db.replace('`', "``")
                ))
                .await
                .map_err(|e| e.to_string())
            }
            .await;
            done.push(match r {
                Ok(()) => format!("dropped database '{db}' on {}", endpoint.display()),
                Err(e) => format!("FAILED to drop database '{db}': {e}"),
            });
        }
    }
    if ran(StepKind::MediaRestore) {
        if let Some(cfg) = &targets.media {
            let r = async {
                let b = Bucket::open(cfg).await.map_err(|e| e.to_string())?;
                b.delete_all_and_bucket().await.map_err(|e| e.to_string())
            }
            .await;
            done.push(match r {
                Ok(n) => format!("deleted bucket '{}' ({n} objects)", cfg.bucket),
                Err(e) => format!("FAILED to delete bucket '{}': {e}", cfg.bucket),
            });
        }
    }
    if ran(StepKind::ClusterObjects) {
        if let Some(client) = &ctx.kube {
            let api: kube::Api<k8s_openapi::api::core::v1::Namespace> =
                kube::Api::all(client.clone());
            done.push(match api.delete(&j.namespace, &Default::default()).await {
                Ok(_) => format!("deleted namespace {}", j.namespace),
                Err(e) => format!("FAILED to delete namespace {}: {e}", j.namespace),
            });
        }
    }
    for d in &done {
        tracing::info!("drill teardown: {d}");
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RestoreTargets};
    use std::collections::HashMap;

    fn targets(yaml: &str) -> RestoreTargets {
        Config::from_yaml(yaml, &HashMap::<String, String>::new())
            .unwrap()
            .restore
    }

    #[test]
    fn a_drill_refuses_targets_that_do_not_vary_with_its_namespace() {
        let plan = crate::restore::run::load_plan("site").unwrap();
        let per_ns = targets(
            "restore:\n  database: mysql://root@db.{namespace}.svc/wordpress\n  media: {bucket: uploads, endpoint: 'http://minio.{namespace}.svc:9000'}\n",
        );
        assert!(check_throwaway_targets(&per_ns, &plan).is_ok());
        let fixed_db = targets("restore:\n  database: mysql://root@staging-db/wordpress\n");
        let e = check_throwaway_targets(&fixed_db, &plan)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("restore.database") && e.contains("{namespace}"),
            "{e}"
        );
        let fixed_bucket = targets(
            "restore:\n  database: mysql://root@h/wp_{namespace}\n  media: {bucket: uploads, endpoint: 'http://minio:9000'}\n",
        );
        let e = check_throwaway_targets(&fixed_bucket, &plan)
            .unwrap_err()
            .to_string();
        assert!(e.contains("restore.media"), "{e}");
        // A plan without the media step does not care about the bucket.
        let db_only = crate::restore::run::load_plan("db-only").unwrap();
        assert!(check_throwaway_targets(&fixed_bucket, &db_only).is_ok());
        // A fixed cache would be flushed by every drill: the live site's Redis, say.
        let fixed_cache = targets(
            "restore:\n  database: mysql://root@h/wp_{namespace}\n  caches: ['redis://redis.{namespace}.svc', 'redis://redis.shop.svc:6379']\n",
        );
        let e = check_throwaway_targets(&fixed_cache, &plan)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("restore.caches") && e.contains("cache-flush"),
            "{e}"
        );
        let per_ns_cache = targets(
            "restore:\n  database: mysql://root@h/wp_{namespace}\n  caches: ['redis://redis.{namespace}.svc']\n",
        );
        assert!(check_throwaway_targets(&per_ns_cache, &plan).is_ok());
    }
}
