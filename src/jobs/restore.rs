//! The restore jobs: the database alone (to a point in time, with its
//! replicas), the media library alone, the namespace's objects alone, the
//! whole site by a plan (and its resume), and the drill.

use super::{JobContext, JobError, JobReport, Verdict};
use crate::binlog::replay::{self, PitrPlan, Point, ReplayReport};
use crate::catalog::Manifest;
use crate::config::{ConfigError, S3Config};
use crate::exit::ExitCode;
use crate::media::restore::{IndexRef, MediaRestoreReport, RestoreOptions};
use crate::media::MediaError;
use crate::mysql::load::{LoadOptions, LoadReport};
use crate::mysql::seed::SeedReport;
use crate::mysql::Endpoint;
use crate::restore::drill::DrillReport;
use crate::restore::plan::{Plan, StepKind};
use crate::restore::run::{self, DryRun, RestoreContext, RestoreOutcome, RestoreRequest};
use crate::restore::{pitr, ClusterRestore, ClusterRestoreOptions, RestoreError};
use crate::secret::Secret;
use serde::Serialize;
use std::time::{Duration, Instant};

/// `restore db`: a set (or the newest set before a point) into a server.
#[derive(Debug, Clone)]
pub struct DbRestoreRequest {
    /// A set id or `latest`.
    pub set: String,
    pub target: Endpoint,
    /// The database to restore into; `None`: the set's own name.
    pub database: Option<String>,
    /// Replay the binlog archive up to this point after the set.
    pub point: Option<Point>,
    /// Seeded from the restored primary once it holds everything.
    pub replicas: Vec<Endpoint>,
    /// Who the replicas replicate as (`restore.replication_user`); required
    /// when `replicas` is not empty.
    pub replication: Option<crate::config::ReplicationUser>,
    pub load: LoadOptions,
    pub replica_timeout: Duration,
}

/// What `restore db --dry-run` finds: the set, the target and what would happen.
#[derive(Debug, Clone, Serialize)]
pub struct DbRestorePlan {
    pub dry_run: bool,
    pub set: String,
    pub target: String,
    pub database: String,
    pub target_contents: Option<String>,
    pub would_drop_existing: bool,
    pub refused_without_force: bool,
    pub tables: usize,
    pub rows: u64,
    pub objects: usize,
    pub bytes: u64,
    pub point_in_time: Option<PitrPlan>,
    pub replicas_to_seed: Vec<String>,
}

/// What `restore db` did.
#[derive(Debug, Clone)]
pub struct DbRestoreReport {
    pub set_id: String,
    pub target: String,
    pub seconds: f64,
    pub load: LoadReport,
    pub point_in_time: Option<PitrPlan>,
    /// `None` without a point, or when the load did not match the set.
    pub replayed: Option<ReplayReport>,
    pub replicas: Vec<SeedReport>,
}

impl DbRestoreReport {
    /// The JSON `restore db --output json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        let bad = self.load.mismatches();
        serde_json::json!({
            "set": self.set_id,
            "database": self.load.database,
            "target": self.target,
            "seconds": self.seconds,
            "statements": self.load.statements,
            "phases": self.load.phases,
            "table_times": self.load.table_times,
            "tables": self.load.tables,
            "mismatches": bad.len(),
            "ok": bad.is_empty(),
            "point_in_time": self.point_in_time.as_ref().map(|p| serde_json::json!({
                "point": p.point,
                "set_position": p.base,
                "replayed": self.replayed,
            })),
            "replicas": self.replicas,
        })
    }
}

impl JobReport for DbRestoreReport {
    fn verdict(&self) -> Verdict {
        let bad = self.load.mismatches();
        if bad.is_empty() {
            let rows = self.load.tables.iter().map(|t| t.found_rows).sum();
            Verdict::ok(0, rows)
        } else {
            Verdict::failed(
                ExitCode::RestoreMismatch,
                "restore_mismatch",
                format!("{} table(s) differ from the set", bad.len()),
            )
        }
    }
}

fn database_section(manifest: &Manifest) -> Result<&crate::catalog::DatabaseSection, JobError> {
    manifest.database.as_ref().ok_or_else(|| {
        RestoreError::NoDatabase {
            id: manifest.set_id.clone(),
        }
        .into()
    })
}

/// The set to load (and, with a point, the replay plan) and the database
/// it goes into: the request's, else the set's own name.
async fn choose(
    ctx: &JobContext,
    req: &DbRestoreRequest,
) -> Result<(Manifest, Option<PitrPlan>, String), JobError> {
    let catalog = ctx.catalog();
    let (manifest, pitr) = pitr::choose(
        &catalog,
        &ctx.store,
        &ctx.cfg.binlog_prefix(),
        &req.set,
        req.point.as_ref(),
    )
    .await?;
    let database = match &req.database {
        Some(d) => d.clone(),
        None => database_section(&manifest)?.database.clone(),
    };
    Ok((manifest, pitr, database))
}

/// Checks the target and says what a restore would do; changes nothing.
pub async fn plan_database(
    ctx: &JobContext,
    req: &DbRestoreRequest,
) -> Result<DbRestorePlan, JobError> {
    ctx.cancellable(plan_database_inner(ctx, req)).await
}

async fn plan_database_inner(
    ctx: &JobContext,
    req: &DbRestoreRequest,
) -> Result<DbRestorePlan, JobError> {
    let (manifest, pitr, database) = choose(ctx, req).await?;
    let section = database_section(&manifest)?;
    let mut conn = req.target.connect(None).await?;
    let contents = crate::mysql::load::describe_contents(&mut conn, &database).await?;
    Ok(DbRestorePlan {
        dry_run: true,
        set: manifest.set_id.clone(),
        target: req.target.display(),
        database,
        would_drop_existing: contents.is_some() && req.load.force,
        refused_without_force: contents.is_some() && !req.load.force,
        target_contents: contents,
        tables: section.tables.len(),
        rows: section.tables.iter().map(|t| t.rows).sum(),
        objects: section.objects.len(),
        bytes: manifest.total_bytes(),
        point_in_time: pitr,
        replicas_to_seed: req.replicas.iter().map(|r| r.display()).collect(),
    })
}

/// Loads the set and checks every table; with a point, replays the archive
/// up to it; then seeds each replica from the result.
pub async fn restore_database(
    ctx: &JobContext,
    req: &DbRestoreRequest,
) -> Result<DbRestoreReport, JobError> {
    ctx.cancellable(restore_database_inner(ctx, req)).await
}

async fn restore_database_inner(
    ctx: &JobContext,
    req: &DbRestoreRequest,
) -> Result<DbRestoreReport, JobError> {
    let started = Instant::now();
    let catalog = ctx.catalog();
    let (manifest, pitr, database) = choose(ctx, req).await?;
    ctx.progress
        .emit(super::ProgressEvent::Total(manifest.total_bytes()));
    if pitr.is_some() {
        // Before the set is loaded: a restore that cannot replay stops here.
        replay::check_tools(&req.target)?;
    }
    if !req.replicas.is_empty() {
        // Before the set is loaded: the replicas' user must log in to the primary.
        crate::mysql::seed::check_replication_user(&req.target, replication_user(req)?).await?;
    }
    let section = database_section(&manifest)?;
    let load = crate::restore::restore_db(
        &catalog,
        ctx.store.clone(),
        &manifest,
        &req.target,
        &database,
        &req.load,
        ctx.progress.bytes_sink(),
    )
    .await?;
    let matches = load.mismatches().is_empty();
    // The set loaded and matches its manifest: now the transactions after it.
    let replayed = match &pitr {
        Some(plan) if matches => Some(
            pitr::replay(
                &ctx.store,
                &ctx.cfg.binlog_prefix(),
                plan,
                &section.database,
                &req.target,
                &database,
            )
            .await?,
        ),
        _ => None,
    };
    // Replicas last: seeded from the primary as it now is, after any replay.
    let mut replicas = Vec::new();
    if matches {
        for replica in &req.replicas {
            replicas.push(
                crate::mysql::seed::seed_replica(
                    &req.target,
                    &database,
                    replica,
                    replication_user(req)?,
                    &req.load,
                    req.replica_timeout,
                )
                .await?,
            );
        }
    }
    Ok(DbRestoreReport {
        set_id: manifest.set_id.clone(),
        target: req.target.display(),
        seconds: started.elapsed().as_secs_f64(),
        load,
        point_in_time: pitr,
        replayed,
        replicas,
    })
}

/// Replicas replicate as a user of their own, never the restore user.
fn replication_user(req: &DbRestoreRequest) -> Result<&crate::config::ReplicationUser, JobError> {
    req.replication.as_ref().ok_or_else(|| {
        JobError::Config(ConfigError::Invalid {
            field: "restore.replication_user".into(),
            env: "WPDR_RESTORE_REPLICATION_USER".into(),
            problem: "is needed to seed replicas: name a user with REPLICATION SLAVE on the restored primary (and its password in restore.replication_password_file / WPDR_RESTORE_REPLICATION_PASSWORD); replicas never replicate as the restore user".into(),
        })
    })
}

/// `restore media`: exactly the set's versions into `target`, every byte checked.
pub async fn restore_media(
    ctx: &JobContext,
    set: &str,
    target: &S3Config,
    opts: &RestoreOptions,
) -> Result<MediaRestoreReport, JobError> {
    ctx.cancellable(async {
        let media = ctx.cfg.media.as_ref().ok_or(MediaError::NotConfigured)?;
        let catalog = ctx.catalog();
        let manifest = catalog.resolve_readable(set).await?;
        if let Some(failed) = manifest.failed_part("media") {
            return Err(MediaError::NotInPartialSet {
                set: manifest.set_id.clone(),
                reason: failed.reason.clone(),
            }
            .into());
        }
        let section = manifest.media.as_ref().ok_or(MediaError::NoIndex)?;
        let index = IndexRef::of(&catalog, &manifest)?.ok_or(MediaError::NoIndex)?;
        Ok::<_, JobError>(
            crate::media::restore::restore_set(
                media,
                &ctx.store,
                &ctx.cfg.site_prefix(),
                &crate::media::restore::IndexSource::Set(index),
                &section.retained_prefix,
                target,
                opts,
                ctx.progress.objects_sink(),
            )
            .await?,
        )
    })
    .await
}

/// `restore media --to-time`: the media as it was at `point`, from the two
/// mirror generations around it (see media::point), every byte checked.
pub async fn restore_media_at(
    ctx: &JobContext,
    point: chrono::DateTime<chrono::Utc>,
    target: &S3Config,
    opts: &RestoreOptions,
) -> Result<MediaRestoreReport, JobError> {
    ctx.cancellable(async {
        let media = ctx.cfg.media.as_ref().ok_or(MediaError::NotConfigured)?;
        let site_prefix = ctx.cfg.site_prefix();
        let as_of = crate::media::point::as_of(&ctx.store, &site_prefix, point).await?;
        if as_of.after.is_none() {
            tracing::warn!(
                point = %point,
                known_until = %as_of.known_until(),
                "no mirror run has listed the source since the point: uploads after the last listing were not mirrored and do not come back"
            );
        }
        Ok::<_, JobError>(
            crate::media::restore::restore_set(
                media,
                &ctx.store,
                &site_prefix,
                &crate::media::restore::IndexSource::AsOf(as_of),
                &media.retained_prefix,
                target,
                opts,
                ctx.progress.objects_sink(),
            )
            .await?,
        )
    })
    .await
}

impl JobReport for MediaRestoreReport {
    fn verdict(&self) -> Verdict {
        if self.failed_total == 0 {
            Verdict::ok(self.copied_bytes, self.copied)
        } else {
            Verdict::failed(
                ExitCode::MediaIncomplete,
                "media_incomplete",
                format!("{} object(s) could not be restored", self.failed_total),
            )
        }
    }
}

/// `restore cluster`: the set's namespace objects, images pinned, into a namespace.
pub async fn restore_cluster(
    ctx: &JobContext,
    set: &str,
    client: &kube::Client,
    opts: &ClusterRestoreOptions<'_>,
) -> Result<ClusterRestore, JobError> {
    ctx.cancellable(async {
        let catalog = ctx.catalog();
        let manifest = catalog.resolve_readable(set).await?;
        Ok::<_, JobError>(crate::restore::restore_cluster(&catalog, &manifest, client, opts).await?)
    })
    .await
}

/// What a site restore or drill needs beyond the job context: a Kubernetes
/// client when the plan touches the cluster (its absence is then reported
/// by the restore as a missing target, with what to do), the cache password.
pub async fn restore_context(
    ctx: &JobContext,
    plan: Option<&Plan>,
    create_namespace: bool,
) -> RestoreContext {
    let needs_kube = plan
        .map(|p| p.steps.iter().any(|s| s.kind == StepKind::ClusterObjects))
        .unwrap_or(true);
    let kube = if needs_kube {
        kube::Client::try_default().await.ok()
    } else {
        None
    };
    RestoreContext {
        cfg: ctx.cfg.clone(),
        store: ctx.store.clone(),
        kube,
        cache_password: std::env::var("WPDR_RESTORE_CACHE_PASSWORD")
            .ok()
            .map(Secret::new),
        create_namespace,
    }
}

/// A whole-site restore by a plan.
pub struct SiteRestoreRequest<'a> {
    pub set: &'a str,
    pub namespace: &'a str,
    pub plan: Plan,
    pub site_url: Option<&'a str>,
    pub create_namespace: bool,
    /// The site as it was at this moment: the newest set before it, the
    /// database replayed to it, the media as of it.
    pub point: Option<chrono::DateTime<chrono::Utc>>,
}

impl<'a> SiteRestoreRequest<'a> {
    /// The executor's request, and the context it runs in.
    async fn prepare(self, ctx: &JobContext) -> (RestoreContext, RestoreRequest<'a>) {
        let rctx = restore_context(ctx, Some(&self.plan), self.create_namespace).await;
        let req = RestoreRequest {
            set: self.set,
            namespace: self.namespace,
            plan: self.plan,
            site_url: self.site_url,
            drill: false,
            point: self.point,
        };
        (rctx, req)
    }
}

pub async fn plan_site(ctx: &JobContext, req: SiteRestoreRequest<'_>) -> Result<DryRun, JobError> {
    let (rctx, req) = req.prepare(ctx).await;
    ctx.cancellable(run::dry_run(&rctx, req)).await
}

pub async fn restore_site(
    ctx: &JobContext,
    req: SiteRestoreRequest<'_>,
) -> Result<RestoreOutcome, JobError> {
    let (rctx, req) = req.prepare(ctx).await;
    ctx.cancellable(run::start(&rctx, req)).await
}

/// Resumes a restore from its journal: every step not done, none that is.
pub async fn resume_site(
    ctx: &JobContext,
    restore_id: &str,
    force: bool,
    create_namespace: bool,
) -> Result<RestoreOutcome, JobError> {
    let rctx = restore_context(ctx, None, create_namespace).await;
    ctx.cancellable(run::resume(&rctx, restore_id, force)).await
}

impl JobReport for RestoreOutcome {
    fn verdict(&self) -> Verdict {
        if self.ok {
            Verdict::ok(0, self.journal.steps.len() as u64)
        } else {
            Verdict::failed(
                ExitCode::from_code(self.exit),
                "restore_failed",
                format!("restore {} failed", self.journal.restore_id),
            )
        }
    }
}

/// A drill: the set restored into a throw-away namespace, checked, reported, torn down.
pub struct DrillRequest<'a> {
    /// A set id or `latest`.
    pub set: &'a str,
    pub plan: Plan,
    pub site_url: Option<&'a str>,
    /// Leave what the drill created (for a look at it).
    pub keep: bool,
    /// Drill a point-in-time restore to this moment instead of a set.
    pub point: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn drill(
    ctx: &JobContext,
    req: DrillRequest<'_>,
) -> Result<(DrillReport, RestoreOutcome), JobError> {
    let rctx = restore_context(ctx, Some(&req.plan), true).await;
    ctx.cancellable(crate::restore::drill::drill(
        &rctx,
        req.set,
        req.plan,
        req.site_url,
        req.keep,
        req.point,
    ))
    .await
}

impl JobReport for DrillReport {
    fn verdict(&self) -> Verdict {
        if self.ok {
            return Verdict::ok(0, self.steps.len() as u64);
        }
        let failed = self
            .steps
            .iter()
            .find(|s| s.error.is_some())
            .map(|s| format!("step {}: {}", s.id, s.error.clone().unwrap_or_default()))
            .unwrap_or_default();
        Verdict::failed(
            ExitCode::from_code(self.exit_code),
            "drill_failed",
            format!("drill {} failed: {failed}", self.restore_id),
        )
    }
}
