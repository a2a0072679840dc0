//! Full-site restore: runs a plan's steps against one set into one
//! namespace. Control plane only: each step calls the component that owns
//! its data (mysql load, media restore, cluster apply, URL rewrite, cache
//! flush) and this module decides the order, runs independent steps at the
//! same time, bounds each by its timeout, and journals every state change
//! so a killed restore resumes where it stopped.

use super::cache::CacheServer;
use super::journal::{self, Journal, JournalHandle, RunStatus, StepRecord, StepState};
use super::plan::{Plan, Step, StepKind};
use super::{restore_cluster, restore_db, ClusterRestoreOptions};
use crate::catalog::{Catalog, Manifest};
use crate::config::{Config, RestoreTargets, S3Config};
use crate::exit::{Classify, ExitCode};
use crate::media::restore::{restore_set, IndexRef, RestoreOptions as MediaOptions};
use crate::mysql::load::LoadOptions;
use crate::mysql::Endpoint;
use crate::secret::Secret;
use crate::store::Store;
use crate::wordpress::answers::{self, Answer};
use chrono::Utc;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The default plans, built in so a restore needs nothing but the binary;
/// `--plan FILE` reads another.
pub const BUILTIN_PLANS: &[(&str, &str)] = &[
    ("full", include_str!("../../restore/full.yaml")),
    ("drill", include_str!("../../restore/drill.yaml")),
    ("site", include_str!("../../restore/site.yaml")),
    ("db-only", include_str!("../../restore/db-only.yaml")),
    ("media-only", include_str!("../../restore/media-only.yaml")),
];

/// A built-in plan by name, or a plan file.
pub fn load_plan(name_or_file: &str) -> Result<Plan, super::plan::PlanError> {
    match BUILTIN_PLANS.iter().find(|(n, _)| *n == name_or_file) {
        Some((n, text)) => Plan::parse(text, std::path::Path::new(&format!("restore/{n}.yaml"))),
        None => Plan::load(std::path::Path::new(name_or_file)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("restore journal: {0}")]
    Journal(#[from] crate::store::StoreError),
    #[error("restore {id} is not in the store ({key}): check the id (`wpdr restores list`)")]
    UnknownRestore { id: String, key: String },
    #[error("restore {id} already succeeded: nothing to resume")]
    AlreadyDone { id: String },
    #[error("restore {id} is still running ({holder}, journal written {seconds}s ago): wait for it, or pass --force if that process is gone")]
    StillRunning {
        id: String,
        holder: String,
        seconds: i64,
    },
    #[error("'{id}' is not a restore id")]
    BadId { id: String },
    #[error("{what} is needed by step '{step}' but not configured: {hint}")]
    MissingTarget {
        step: String,
        what: String,
        hint: String,
    },
    #[error("namespace '{0}' is not a valid Kubernetes namespace name (lowercase letters, digits, '-', at most 63)")]
    BadNamespace(String),
    #[error("refusing to restore into {what}: it is the live site's own {what_is}. Point restore.* at the restored components.")]
    TargetIsSource { what: String, what_is: String },
}

impl Classify for RunError {
    fn exit_code(&self) -> ExitCode {
        match self {
            RunError::Catalog(e) => e.exit_code(),
            RunError::Journal(_) => ExitCode::StoreUnavailable,
            RunError::UnknownRestore { .. } => ExitCode::SetNotFound,
            RunError::AlreadyDone { .. } => ExitCode::Ok,
            RunError::StillRunning { .. } => ExitCode::Locked,
            RunError::BadId { .. }
            | RunError::MissingTarget { .. }
            | RunError::BadNamespace(_)
            | RunError::TargetIsSource { .. } => ExitCode::Config,
        }
    }
    fn metric_label(&self) -> &'static str {
        match self {
            RunError::Catalog(e) => e.metric_label(),
            RunError::Journal(_) => "journal",
            RunError::UnknownRestore { .. } => "unknown_restore",
            RunError::AlreadyDone { .. } => "already_done",
            RunError::StillRunning { .. } => "restore_running",
            RunError::BadId { .. } => "bad_restore_id",
            RunError::MissingTarget { .. } => "missing_target",
            RunError::BadNamespace(_) => "bad_namespace",
            RunError::TargetIsSource { .. } => "target_is_source",
        }
    }
}

/// What a restore runs with: configuration, store, and a Kubernetes client
/// when the plan touches the cluster.
pub struct RestoreContext {
    pub cfg: Config,
    pub store: Arc<Store>,
    pub kube: Option<kube::Client>,
    /// Redis AUTH for the cache-flush step.
    pub cache_password: Option<Secret>,
    /// False when the namespace is created elsewhere (GitOps, or a role
    /// that may not create namespaces): objects go into it as it is.
    pub create_namespace: bool,
}

/// The restored components' addresses for one namespace.
#[derive(Clone)]
pub struct Targets {
    pub namespace: String,
    pub database: Option<(Endpoint, String)>,
    pub media: Option<S3Config>,
    pub caches: Vec<CacheServer>,
    /// Where the restored site answers, and the address rewritten into its data.
    pub site_url: Option<String>,
}

impl Targets {
    pub fn resolve(
        targets: &RestoreTargets,
        manifest: &Manifest,
        namespace: &str,
        site_url: Option<&str>,
    ) -> Targets {
        let ns = |t: &str| RestoreTargets::in_namespace(t, namespace);
        let database = targets.database.as_ref().and_then(|t| {
            let password =
                Some(targets.database_password.expose().to_string()).filter(|p| !p.is_empty());
            Endpoint::from_url(&ns(t), password).ok().map(|(e, db)| {
                let name = db
                    .or_else(|| manifest.database.as_ref().map(|d| d.database.clone()))
                    .unwrap_or_else(|| "wordpress".into());
                (e, name)
            })
        });
        Targets {
            namespace: namespace.to_string(),
            database,
            media: targets.media_for(namespace),
            caches: targets
                .caches
                .iter()
                .filter_map(|c| CacheServer::parse(&ns(c)).ok())
                .collect(),
            site_url: site_url
                .map(str::to_string)
                .or_else(|| targets.site_url.as_deref().map(ns))
                .map(|u| u.trim_end_matches('/').to_string()),
        }
    }

    /// Refuses targets that are the live site's own database or buckets: a
    /// restore (and a drill's teardown) must never write over the source.
    fn check_not_source(&self, cfg: &Config) -> Result<(), RunError> {
        if let Some((e, db)) = &self.database {
            let live = &cfg.database;
            if e.host == live.host && e.port == live.port && *db == live.name {
                return Err(RunError::TargetIsSource {
                    what: format!("database '{db}' on {}", e.display()),
                    what_is: "database".into(),
                });
            }
        }
        if let (Some(t), Some(m)) = (&self.media, &cfg.media) {
            for (b, what) in [
                (&m.source, "uploads bucket"),
                (&m.offsite, "offsite mirror"),
            ] {
                if t.bucket == b.bucket && t.endpoint == b.endpoint {
                    return Err(RunError::TargetIsSource {
                        what: format!("bucket '{}'", t.bucket),
                        what_is: what.into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// What each kind of step will touch, in words.
    pub fn touches(&self, kind: StepKind, manifest: &Manifest) -> String {
        let db = || {
            self.database
                .as_ref()
                .map(|(e, d)| format!("database '{d}' on {}", e.display()))
                .unwrap_or_else(|| "NO restore.database CONFIGURED".into())
        };
        match kind {
            StepKind::ClusterObjects => format!(
                "namespace {}: {} objects, images pinned to {} recorded digests",
                self.namespace,
                manifest.cluster.as_ref().map(|c| c.objects).unwrap_or(0),
                manifest
                    .cluster
                    .as_ref()
                    .map(|c| c.images.len())
                    .unwrap_or(0)
            ),
            StepKind::WaitDatabase => format!("connects to {}", db()),
            StepKind::DatabaseLoad => format!(
                "{}: {} tables, {} rows",
                db(),
                manifest
                    .database
                    .as_ref()
                    .map(|d| d.tables.len())
                    .unwrap_or(0),
                manifest
                    .database
                    .as_ref()
                    .map(|d| d.tables.iter().map(|t| t.rows).sum::<u64>())
                    .unwrap_or(0)
            ),
            StepKind::MediaRestore => format!(
                "bucket {}: {} objects, {} bytes",
                self.media
                    .as_ref()
                    .map(|m| format!(
                        "'{}' at {}",
                        m.bucket,
                        m.endpoint.as_deref().unwrap_or("AWS")
                    ))
                    .unwrap_or_else(|| "NO restore.media CONFIGURED".into()),
                manifest.media.as_ref().map(|m| m.objects).unwrap_or(0),
                manifest.media.as_ref().map(|m| m.bytes).unwrap_or(0)
            ),
            StepKind::UrlRewrite => match &self.site_url {
                Some(u) => format!("{}: the site's address becomes {u}", db()),
                None => "nothing (no --site-url or restore.site_url)".into(),
            },
            StepKind::CacheFlush => {
                if self.caches.is_empty() {
                    "nothing (no restore.caches)".into()
                } else {
                    self.caches
                        .iter()
                        .map(|c| format!("flushes {c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            }
            StepKind::WaitApplication => format!(
                "waits for workloads in {}{}",
                self.namespace,
                self.site_url
                    .as_ref()
                    .map(|u| format!(" and for {u} to answer"))
                    .unwrap_or_default()
            ),
            StepKind::Checks => format!(
                "reads {} back: table rows and checksums, media present, site answers{}",
                db(),
                if manifest
                    .answers
                    .as_ref()
                    .and_then(|a| a.answers_artifact.as_ref())
                    .is_some()
                {
                    ""
                } else {
                    " (none captured in this set)"
                }
            ),
        }
    }
}

/// Why a step failed, with the exit code the restore ends with.
#[derive(Debug, Clone)]
pub struct StepError {
    pub message: String,
    pub exit: ExitCode,
}

impl StepError {
    fn new(message: impl Into<String>, exit: ExitCode) -> Self {
        StepError {
            message: message.into(),
            exit,
        }
    }
    fn from<E: Classify + std::fmt::Display>(e: E) -> Self {
        StepError::new(e.to_string(), e.exit_code())
    }
}

/// Log lines of one step: kept in the journal, and traced as they come.
#[derive(Clone, Default)]
struct StepLog {
    step: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl StepLog {
    fn line(&self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!(step = %self.step, "{text}");
        if let Ok(mut l) = self.lines.lock() {
            if l.len() < 200 {
                l.push(text);
            }
        }
    }
    fn take(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// What a finished (or stopped) restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreOutcome {
    pub journal: Journal,
    pub ok: bool,
    /// The failing step's exit code when not ok.
    pub exit: u8,
}

/// One line of a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub stage: usize,
    pub id: String,
    pub kind: StepKind,
    pub after: Vec<String>,
    pub timeout_seconds: u64,
    pub touches: String,
    pub last_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub set_id: String,
    pub namespace: String,
    pub plan: String,
    pub site_url: Option<String>,
    pub steps: Vec<PlannedStep>,
    pub problems: Vec<String>,
}

pub struct RestoreRequest<'a> {
    pub set: &'a str,
    pub namespace: &'a str,
    pub plan: Plan,
    pub site_url: Option<&'a str>,
    pub drill: bool,
}

fn check_namespace(ns: &str) -> Result<(), RunError> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(RunError::BadNamespace(ns.to_string()))
    }
}

/// Every step's configuration present before anything is touched.
fn check_targets(plan: &Plan, targets: &Targets, ctx: &RestoreContext) -> Vec<RunError> {
    let mut problems = Vec::new();
    let missing = |step: &Step, what: &str, hint: &str| RunError::MissingTarget {
        step: step.id.clone(),
        what: what.into(),
        hint: hint.into(),
    };
    for s in &plan.steps {
        match s.kind {
            StepKind::ClusterObjects if ctx.kube.is_none() => problems.push(missing(
                s,
                "a Kubernetes client",
                "set KUBECONFIG or run in a pod, or use a plan without cluster-objects (--plan site)",
            )),
            StepKind::WaitDatabase | StepKind::DatabaseLoad | StepKind::UrlRewrite
                if targets.database.is_none() =>
            {
                problems.push(missing(
                    s,
                    "restore.database",
                    "set restore.database (e.g. mysql://root@mariadb.{namespace}.svc:3306/wordpress) and WPDR_RESTORE_DATABASE_PASSWORD",
                ))
            }
            StepKind::MediaRestore if targets.media.is_none() => problems.push(missing(
                s,
                "restore.media",
                "set restore.media (bucket and endpoint of the restored MinIO)",
            )),
            _ => {}
        }
    }
    if let Err(e) = targets.check_not_source(&ctx.cfg) {
        problems.push(e);
    }
    problems
}

/// Prints nothing, writes nothing: the plan as it would run.
pub async fn dry_run(ctx: &RestoreContext, req: RestoreRequest<'_>) -> Result<DryRun, RunError> {
    check_namespace(req.namespace)?;
    let catalog = Catalog::new(&ctx.store, &ctx.cfg.site, &ctx.cfg.site_prefix());
    let manifest = catalog.resolve(req.set).await?;
    let targets = Targets::resolve(&ctx.cfg.restore, &manifest, req.namespace, req.site_url);
    let journals = journal::list(&ctx.store, &ctx.cfg.site_prefix()).await?;
    let last = journal::last_durations(&journals, &req.plan.name);
    let stages = req.plan.stages().unwrap_or_default();
    let mut steps = Vec::new();
    for (i, stage) in stages.iter().enumerate() {
        for s in stage {
            steps.push(PlannedStep {
                stage: i + 1,
                id: s.id.clone(),
                kind: s.kind,
                after: s.after.clone(),
                timeout_seconds: s.timeout_seconds,
                touches: targets.touches(s.kind, &manifest),
                last_seconds: last.get(&s.id).copied(),
            });
        }
    }
    Ok(DryRun {
        set_id: manifest.set_id.clone(),
        namespace: req.namespace.to_string(),
        plan: req.plan.name.clone(),
        site_url: targets.site_url.clone(),
        steps,
        problems: check_targets(&req.plan, &targets, ctx)
            .iter()
            .map(|e| e.to_string())
            .collect(),
    })
}

/// Starts a restore: journal first, then the steps.
pub async fn start(
    ctx: &RestoreContext,
    req: RestoreRequest<'_>,
) -> Result<RestoreOutcome, RunError> {
    check_namespace(req.namespace)?;
    let catalog = Catalog::new(&ctx.store, &ctx.cfg.site, &ctx.cfg.site_prefix());
    let manifest = catalog.resolve(req.set).await?;
    let targets = Targets::resolve(&ctx.cfg.restore, &manifest, req.namespace, req.site_url);
    if let Some(e) = check_targets(&req.plan, &targets, ctx).into_iter().next() {
        return Err(e);
    }
    let now = Utc::now();
    let steps = req
        .plan
        .steps
        .iter()
        .map(|s| {
            (
                s.id.clone(),
                StepRecord {
                    kind: s.kind,
                    state: StepState::Pending,
                    started_at: None,
                    finished_at: None,
                    seconds: 0.0,
                    runs: 0,
                    summary: serde_json::Value::Null,
                    error: None,
                    exit_code: None,
                    log: Vec::new(),
                },
            )
        })
        .collect();
    let j = Journal {
        restore_id: journal::new_restore_id(now),
        site: ctx.cfg.site.clone(),
        set_id: manifest.set_id.clone(),
        set_taken_at: manifest.started_at,
        namespace: req.namespace.to_string(),
        site_url: req.site_url.map(str::to_string),
        drill: req.drill,
        plan: req.plan,
        started_at: now,
        updated_at: now,
        finished_at: None,
        status: RunStatus::Running,
        holder: holder(),
        runs: 0,
        steps,
    };
    tracing::info!(restore = %j.restore_id, set = %j.set_id, namespace = %j.namespace, plan = %j.plan.name, "restore started");
    let handle = Arc::new(JournalHandle::new(
        ctx.store.clone(),
        &ctx.cfg.site_prefix(),
        j,
    ));
    execute(ctx, &catalog, &manifest, &targets, handle).await
}

/// Resumes a stopped restore: every step not done runs again.
pub async fn resume(
    ctx: &RestoreContext,
    restore_id: &str,
    force: bool,
) -> Result<RestoreOutcome, RunError> {
    if !journal::valid_restore_id(restore_id) {
        return Err(RunError::BadId {
            id: restore_id.into(),
        });
    }
    let prefix = ctx.cfg.site_prefix();
    let j = JournalHandle::load(&ctx.store, &prefix, restore_id)
        .await?
        .ok_or_else(|| RunError::UnknownRestore {
            id: restore_id.into(),
            key: journal::journal_key(&prefix, restore_id),
        })?;
    if j.status == RunStatus::Succeeded {
        return Err(RunError::AlreadyDone {
            id: restore_id.into(),
        });
    }
    if j.status == RunStatus::Running && !force {
        let quiet = (Utc::now() - j.updated_at).num_seconds();
        if quiet < STALE_AFTER.as_secs() as i64 && !holder_is_gone(&j.holder) {
            return Err(RunError::StillRunning {
                id: restore_id.into(),
                holder: j.holder.clone(),
                seconds: quiet,
            });
        }
    }
    let catalog = Catalog::new(&ctx.store, &ctx.cfg.site, &prefix);
    let manifest = catalog.load(&j.set_id).await?;
    let targets = Targets::resolve(
        &ctx.cfg.restore,
        &manifest,
        &j.namespace,
        j.site_url.as_deref(),
    );
    if let Some(e) = check_targets(&j.plan, &targets, ctx).into_iter().next() {
        return Err(e);
    }
    tracing::info!(restore = %j.restore_id, set = %j.set_id, previous_holder = %j.holder, "restore resumed");
    let handle = Arc::new(JournalHandle::new(ctx.store.clone(), &prefix, j));
    execute(ctx, &catalog, &manifest, &targets, handle).await
}

/// How often a running restore touches its journal.
const HEARTBEAT: Duration = Duration::from_secs(20);
/// A running journal untouched this long has lost its process.
const STALE_AFTER: Duration = Duration::from_secs(90);

/// True when the journal's holder is a process on this host that no longer
/// exists (killed, crashed): its restore can be resumed at once.
fn holder_is_gone(holder: &str) -> bool {
    let Some((pid, host)) = holder
        .strip_prefix("pid ")
        .and_then(|r| r.split_once(" on "))
    else {
        return false;
    };
    let this_host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    if host != this_host || pid <= 0 {
        return false;
    }
    // Signal 0 checks existence; ESRCH means no such process.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    !alive
}

fn holder() -> String {
    format!(
        "pid {} on {}",
        std::process::id(),
        hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "?".into())
    )
}

/// Runs every step not yet done, each once all it waits for are done,
/// independent ones at the same time. A failure starts nothing new; steps
/// already running finish and are journaled.
async fn execute(
    ctx: &RestoreContext,
    catalog: &Catalog<'_>,
    manifest: &Manifest,
    targets: &Targets,
    journal: Arc<JournalHandle>,
) -> Result<RestoreOutcome, RunError> {
    // A heartbeat in the journal while this process runs it, so a resume
    // elsewhere can tell a live restore from one whose process is gone.
    let heartbeat = {
        let journal = journal.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if let Err(e) = journal.update(|_| {}).await {
                    tracing::warn!(error = %e, "could not write the restore journal's heartbeat");
                }
            }
        })
    };
    let result = execute_steps(ctx, catalog, manifest, targets, &journal).await;
    heartbeat.abort();
    result
}

async fn execute_steps(
    ctx: &RestoreContext,
    catalog: &Catalog<'_>,
    manifest: &Manifest,
    targets: &Targets,
    journal: &JournalHandle,
) -> Result<RestoreOutcome, RunError> {
    let pin = catalog.pin(&manifest.set_id, "full restore", 24).await?;
    let j = journal
        .update(|j| {
            j.runs += 1;
            j.status = RunStatus::Running;
            j.holder = holder();
            j.finished_at = None;
        })
        .await?;
    let plan = j.plan.clone();
    let mut done: BTreeSet<String> = j
        .steps
        .iter()
        .filter(|(_, s)| s.state == StepState::Done)
        .map(|(id, _)| id.clone())
        .collect();
    // Steps that ran before (and may have left something behind to replace).
    let ran_before: BTreeSet<String> = j
        .steps
        .iter()
        .filter(|(_, s)| s.runs > 0)
        .map(|(id, _)| id.clone())
        .collect();
    let mut started: BTreeSet<String> = done.clone();
    let mut failed: Option<(String, StepError)> = None;
    let mut running = FuturesUnordered::new();
    loop {
        if failed.is_none() {
            for step in &plan.steps {
                if started.contains(&step.id) || !step.after.iter().all(|d| done.contains(d)) {
                    continue;
                }
                started.insert(step.id.clone());
                let log = StepLog {
                    step: step.id.clone(),
                    ..Default::default()
                };
                journal
                    .update(|j| {
                        if let Some(r) = j.steps.get_mut(&step.id) {
                            r.state = StepState::Running;
                            r.started_at = Some(Utc::now());
                            r.runs += 1;
                            r.error = None;
                            r.exit_code = None;
                        }
                    })
                    .await?;
                let env = StepEnv {
                    ctx,
                    catalog,
                    manifest,
                    targets,
                    journal,
                    resumed: ran_before.contains(&step.id),
                    drill: j.drill,
                    has_cluster_step: plan
                        .steps
                        .iter()
                        .any(|s| s.kind == StepKind::ClusterObjects),
                    kinds: plan.steps.iter().map(|s| s.kind).collect(),
                    log: log.clone(),
                };
                let step = step.clone();
                running.push(async move {
                    let t0 = Instant::now();
                    let res = match tokio::time::timeout(
                        Duration::from_secs(step.timeout_seconds),
                        run_step(&step, &env),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(StepError::new(
                            format!(
                                "did not finish within its timeout of {}s{}",
                                step.timeout_seconds,
                                log.take()
                                    .last()
                                    .map(|l| format!(" (last: {l})"))
                                    .unwrap_or_default()
                            ),
                            ExitCode::Timeout,
                        )),
                    };
                    (step, res, t0.elapsed().as_secs_f64(), log)
                });
            }
        }
        let Some((step, res, seconds, log)) = running.next().await else {
            break;
        };
        let lines = log.take();
        match res {
            Ok(summary) => {
                tracing::info!(step = %step.id, seconds, "step done");
                done.insert(step.id.clone());
                journal
                    .update(|j| {
                        if let Some(r) = j.steps.get_mut(&step.id) {
                            r.state = StepState::Done;
                            r.finished_at = Some(Utc::now());
                            r.seconds = seconds;
                            r.summary = summary;
                            r.log = lines;
                        }
                    })
                    .await?;
            }
            Err(e) => {
                tracing::error!(step = %step.id, error = %e.message, "step failed");
                journal
                    .update(|j| {
                        if let Some(r) = j.steps.get_mut(&step.id) {
                            r.state = StepState::Failed;
                            r.finished_at = Some(Utc::now());
                            r.seconds = seconds;
                            r.error = Some(e.message.clone());
                            r.exit_code = Some(e.exit.code());
                            r.log = lines;
                        }
                    })
                    .await?;
                failed.get_or_insert((step.id.clone(), e));
            }
        }
    }
    let ok = failed.is_none();
    let j = journal
        .update(|j| {
            for r in j.steps.values_mut() {
                if r.state == StepState::Pending && !ok {
                    r.state = StepState::Blocked;
                }
            }
            j.status = if ok {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            };
            j.finished_at = Some(Utc::now());
        })
        .await?;
    pin.release(catalog).await;
    tracing::info!(restore = %j.restore_id, ok, seconds = j.total_seconds().unwrap_or(0.0), "restore finished");
    Ok(RestoreOutcome {
        ok,
        exit: failed.map(|(_, e)| e.exit.code()).unwrap_or(0),
        journal: j,
    })
}

struct StepEnv<'a> {
    ctx: &'a RestoreContext,
    catalog: &'a Catalog<'a>,
    manifest: &'a Manifest,
    targets: &'a Targets,
    journal: &'a JournalHandle,
    /// The step ran in an earlier attempt: what it left may be replaced.
    resumed: bool,
    drill: bool,
    has_cluster_step: bool,
    /// What the plan restores: checks look only at those components.
    kinds: BTreeSet<StepKind>,
    log: StepLog,
}

impl StepEnv<'_> {
    fn database(&self) -> Result<&(Endpoint, String), StepError> {
        self.targets
            .database
            .as_ref()
            .ok_or_else(|| StepError::new("restore.database is not configured", ExitCode::Config))
    }
}

async fn run_step(step: &Step, env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    match step.kind {
        StepKind::ClusterObjects => cluster_objects(env).await,
        StepKind::WaitDatabase => wait_database(env).await,
        StepKind::DatabaseLoad => database_load(env).await,
        StepKind::MediaRestore => media_restore(env).await,
        StepKind::UrlRewrite => url_rewrite(env).await,
        StepKind::CacheFlush => cache_flush(env, step.timeout_seconds).await,
        StepKind::WaitApplication => wait_application(env).await,
        StepKind::Checks => checks(env).await,
    }
}

async fn cluster_objects(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    let client =
        env.ctx.kube.as_ref().ok_or_else(|| {
            StepError::new("no Kubernetes client (set KUBECONFIG)", ExitCode::Config)
        })?;
    let opts = ClusterRestoreOptions {
        namespace: &env.targets.namespace,
        host_map: &[],
        key: env.ctx.cfg.cluster.secrets_key.as_ref(),
        skip_secrets: false,
        dry_run: false,
        // Our own earlier attempt may have applied some objects already.
        force: env.resumed,
        create_namespace: env.ctx.create_namespace,
    };
    let r = restore_cluster(env.catalog, env.manifest, client, &opts)
        .await
        .map_err(StepError::from)?;
    for o in &r.objects {
        env.log.line(format!("applied {o}"));
    }
    for p in &r.pins {
        env.log.line(format!(
            "pinned {} {}: {} -> {}",
            p.workload, p.container, p.from, p.to
        ));
    }
    for w in &r.warnings {
        env.log.line(format!("warning: {w}"));
    }
    Ok(json!({
        "objects": r.objects.len(),
        "pins": r.pins.len(),
        "secrets": r.secrets_restored,
        "warnings": r.warnings,
    }))
}

async fn wait_database(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    let (endpoint, _) = env.database()?;
    let t0 = Instant::now();
    let mut last = String::new();
    loop {
        match endpoint.connect(None).await {
            Ok(mut c) => {
                let version: Option<String> =
                    c.query_first("SELECT VERSION()").await.ok().flatten();
                let _ = c.disconnect().await;
                env.log.line(format!(
                    "{} accepts connections ({})",
                    endpoint.display(),
                    version.as_deref().unwrap_or("?")
                ));
                return Ok(
                    json!({"server": endpoint.display(), "version": version, "waited_seconds": t0.elapsed().as_secs_f64()}),
                );
            }
            Err(e) => {
                // Credentials refused will not get better by waiting.
                if e.exit_code() == ExitCode::DatabaseAuth {
                    return Err(StepError::from(e));
                }
                let now = e.to_string();
                if now != last {
                    env.log.line(format!("not ready: {now}"));
                    last = now;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn database_load(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    let (endpoint, database) = env.database()?;
    let opts = LoadOptions {
        connections: env.ctx.cfg.database.connections,
        // A database this restore started loading before is its own to replace.
        force: env.resumed,
        defer_indexes: true,
    };
    if env.resumed {
        env.log.line(format!(
            "an earlier attempt started this load: '{database}' is dropped and loaded again"
        ));
    }
    let report = restore_db(
        env.catalog,
        env.ctx.store.clone(),
        env.manifest,
        endpoint,
        database,
        &opts,
        Arc::new(|_| {}),
    )
    .await
    .map_err(StepError::from)?;
    let bad = report.mismatches();
    for t in &bad {
        env.log.line(format!(
            "MISMATCH {}: rows {} (expected {}), checksum {} (expected {})",
            t.table, t.found_rows, t.expected_rows, t.found_checksum, t.expected_checksum
        ));
    }
    let rows: u64 = report.tables.iter().map(|t| t.found_rows).sum();
    env.log.line(format!(
        "loaded {} tables, {rows} rows into '{database}' on {}",
        report.tables.len(),
        endpoint.display()
    ));
    if !bad.is_empty() {
        return Err(StepError::new(
            format!(
                "{} table(s) differ from the set after loading: {}",
                bad.len(),
                bad.iter()
                    .map(|t| t.table.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ExitCode::RestoreMismatch,
        ));
    }
    Ok(json!({
        "database": database,
        "tables": report.tables.len(),
        "rows": rows,
        "statements": report.statements,
        "objects": report.objects_created,
    }))
}

async fn run_media_restore(
    env: &StepEnv<'_>,
    dry_run: bool,
    deep_verify: bool,
) -> Result<Option<crate::media::restore::MediaRestoreReport>, StepError> {
    let Some(section) = env.manifest.media.as_ref() else {
        return Ok(None);
    };
    let index = IndexRef::of(env.catalog, env.manifest)
        .map_err(|_| {
            StepError::new(
                format!("the set lists no artifact {}", section.index_artifact),
                ExitCode::Integrity,
            )
        })?
        .ok_or_else(|| StepError::new("the set holds no media index", ExitCode::Integrity))?;
    let media = env.ctx.cfg.media.as_ref().ok_or_else(|| {
        StepError::new(
            "the set holds media but media.offsite is not configured: it is where the media is read from",
            ExitCode::Config,
        )
    })?;
    let target_cfg = env
        .targets
        .media
        .as_ref()
        .ok_or_else(|| StepError::new("restore.media is not configured", ExitCode::Config))?;
    let report = restore_set(
        media,
        &env.ctx.store,
        &env.ctx.cfg.site_prefix(),
        &index,
        &section.retained_prefix,
        target_cfg,
        &MediaOptions {
            dry_run,
            deep_verify,
            concurrency: media.concurrency,
        },
        Arc::new(|_, _| {}),
    )
    .await
    .map_err(StepError::from)?;
    Ok(Some(report))
}

async fn media_restore(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    // A drill re-reads every object: proving the copy is the point of a drill.
    let Some(report) = run_media_restore(env, false, env.drill).await? else {
        env.log.line("the set holds no media: nothing to restore");
        return Ok(json!({"objects": 0}));
    };
    for f in &report.failed {
        env.log.line(format!("FAILED {}: {}", f.key, f.error));
    }
    env.log.line(format!(
        "{} objects into {}: {} copied ({} from retained versions), {} already there, {} failed",
        report.objects,
        report.target,
        report.copied,
        report.from_retained,
        report.already_present,
        report.failed_total
    ));
    if report.failed_total > 0 {
        return Err(StepError::new(
            format!(
                "{} of {} media objects could not be restored (first: {})",
                report.failed_total,
                report.objects,
                report
                    .failed
                    .first()
                    .map(|f| format!("{}: {}", f.key, f.error))
                    .unwrap_or_default()
            ),
            ExitCode::MediaIncomplete,
        ));
    }
    Ok(serde_json::to_value(&report).unwrap_or_default())
}

async fn url_rewrite(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    let Some(new) = env.targets.site_url.as_deref() else {
        env.log
            .line("no --site-url and no restore.site_url: the site keeps its address");
        return Ok(json!({"rewritten": false}));
    };
    let (endpoint, database) = env.database()?;
    let prefix = &env.ctx.cfg.database.table_prefix;
    let mut c = endpoint
        .connect(Some(database))
        .await
        .map_err(StepError::from)?;
    let q = format!(
        "SELECT option_value FROM `{prefix}options` WHERE option_name IN ('home', 'siteurl') ORDER BY option_name = 'home' DESC"
    );
    let olds: Vec<String> = c.query(q).await.map_err(|e| {
        StepError::new(
            format!("reading home/siteurl from {prefix}options: {e}"),
            ExitCode::Database,
        )
    })?;
    let _ = c.disconnect().await;
    let mut seen = BTreeSet::new();
    let mut tables = BTreeSet::new();
    let mut changed = 0u64;
    let mut unparseable = 0u64;
    for old in olds {
        let old = old.trim_end_matches('/').to_string();
        if old.is_empty() || old == new || !seen.insert(old.clone()) {
            continue;
        }
        let r = crate::wordpress::search_replace::rewrite_database(
            endpoint, database, &old, new, false,
        )
        .await
        .map_err(StepError::from)?;
        env.log.line(format!(
            "{old} -> {new}: {} rows changed, {} could not be parsed (left as they were)",
            r.rows_changed, r.rows_unparseable
        ));
        for col in &r.columns {
            if col.changed > 0 {
                tables.insert(col.table.clone());
            }
            for row in &col.unparseable_rows {
                env.log
                    .line(format!("UNPARSEABLE {}.{} {row}", col.table, col.column));
            }
        }
        changed += r.rows_changed;
        unparseable += r.rows_unparseable;
    }
    Ok(json!({
        "rewritten": true,
        "from": seen.into_iter().collect::<Vec<_>>(),
        "to": new,
        "rows_changed": changed,
        "rows_unparseable": unparseable,
        "tables": tables,
    }))
}

async fn cache_flush(
    env: &StepEnv<'_>,
    timeout_seconds: u64,
) -> Result<serde_json::Value, StepError> {
    let mut flushed = Vec::new();
    for c in &env.targets.caches {
        c.flush(
            env.ctx.cache_password.as_ref(),
            Duration::from_secs(timeout_seconds),
        )
        .await
        .map_err(|e| StepError::new(e.to_string(), ExitCode::Internal))?;
        env.log.line(format!("flushed {c}: it starts cold"));
        flushed.push(c.to_string());
    }
    if flushed.is_empty() {
        env.log
            .line("no restore.caches configured: nothing to flush");
    }
    Ok(json!({ "flushed": flushed }))
}

/// WordPress answers with this (and status 500) while its database is not there.
const DB_ERROR_PAGE: &str = "Error establishing a database connection";

async fn wait_application(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    let mut waited = Vec::new();
    if let (Some(client), true) = (env.ctx.kube.as_ref(), env.has_cluster_step) {
        let ready = crate::cluster::apply::wait_ready(client, &env.targets.namespace, |line| {
            env.log.line(line)
        })
        .await
        .map_err(StepError::from)?;
        waited.push(format!(
            "{ready} workload(s) ready in {}",
            env.targets.namespace
        ));
    }
    if let Some(url) = &env.targets.site_url {
        let client =
            answers::client().map_err(|e| StepError::new(e.to_string(), ExitCode::Internal))?;
        let mut last = String::new();
        loop {
            let now = match client.get(format!("{url}/")).send().await {
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    if status.as_u16() < 500 && !body.contains(DB_ERROR_PAGE) {
                        env.log.line(format!("{url}/ answers {status}"));
                        break;
                    }
                    format!(
                        "{url}/ answers {status}{}",
                        if body.contains(DB_ERROR_PAGE) {
                            " (no database connection)"
                        } else {
                            ""
                        }
                    )
                }
                Err(e) => format!("{url}/: {e}"),
            };
            if now != last {
                env.log.line(format!("not ready: {now}"));
                last = now;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        waited.push(format!("{url} answers"));
    }
    if waited.is_empty() {
        env.log
            .line("no cluster and no site URL: nothing to wait for");
    }
    Ok(json!({ "waited": waited }))
}

/// Reads what the set captured of the live site.
async fn captured_answers(env: &StepEnv<'_>) -> Result<Option<Vec<Answer>>, StepError> {
    let Some(path) = env
        .manifest
        .answers
        .as_ref()
        .and_then(|a| a.answers_artifact.clone())
    else {
        return Ok(None);
    };
    let bytes = super::read_artifact(env.catalog, env.manifest, &path)
        .await
        .map_err(StepError::from)?;
    let json = zstd::decode_all(bytes.as_slice())
        .map_err(|e| StepError::new(format!("{path}: {e}"), ExitCode::Integrity))?;
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|e| StepError::new(format!("{path}: {e}"), ExitCode::Integrity))
}

async fn checks(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    let mut failures: Vec<(String, ExitCode)> = Vec::new();
    let mut report = serde_json::Map::new();

    // Tables: the load compared every table with the set (rows + checksums)
    // before anything else touched the database, and fails on a difference.
    // Read again now, after the URL rewrite and the running site (WordPress
    // writes options and transients as it serves), a difference is reported
    // as what changed since the load, not as a failed restore.
    let restores_database = env.kinds.contains(&StepKind::DatabaseLoad);
    if let (true, Some(section), Some((endpoint, database))) = (
        restores_database,
        env.manifest.database.as_ref(),
        env.targets.database.as_ref(),
    ) {
        let journal = env.journal.snapshot().await;
        let summary_of = |kind: StepKind| {
            journal
                .steps
                .values()
                .filter(|s| s.kind == kind && s.state == StepState::Done)
                .map(|s| s.summary.clone())
                .next()
        };
        let verified = summary_of(StepKind::DatabaseLoad)
            .and_then(|s| s["tables"].as_u64())
            .unwrap_or(0);
        if verified != section.tables.len() as u64 {
            failures.push((
                format!(
                    "the database load verified {verified} of the set's {} tables",
                    section.tables.len()
                ),
                ExitCode::RestoreMismatch,
            ));
        }
        let rewritten: BTreeSet<String> = summary_of(StepKind::UrlRewrite)
            .and_then(|s| s["tables"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        let mut conns = Vec::new();
        for _ in 0..env.ctx.cfg.database.connections.max(1) {
            conns.push(
                endpoint
                    .connect(Some(database))
                    .await
                    .map_err(StepError::from)?,
            );
        }
        let found = crate::mysql::load::verify_tables(conns, &section.tables)
            .await
            .map_err(StepError::from)?;
        let mut changed = Vec::new();
        for t in found.iter().filter(|t| !t.ok()) {
            let why = if rewritten.contains(&t.table) {
                "URL rewrite"
            } else {
                "the running site"
            };
            env.log.line(format!(
                "table {} changed since the load ({why}): rows {} (set: {})",
                t.table, t.found_rows, t.expected_rows
            ));
            changed.push(t.table.clone());
        }
        env.log.line(format!(
            "tables: {verified} verified equal to the set at load (rows + checksums); {} changed since by the URL rewrite or the running site",
            changed.len()
        ));
        report.insert(
            "tables".into(),
            json!({"verified_at_load": verified, "changed_since_load": changed, "rewritten": rewritten}),
        );
    }

    // Media: every object of the set in the target, as the set's version.
    if env.kinds.contains(&StepKind::MediaRestore)
        && env.manifest.media.is_some()
        && env.targets.media.is_some()
    {
        if let Some(r) = run_media_restore(env, true, false).await? {
            let missing = r.copied + r.failed_total;
            env.log.line(format!(
                "media: {} objects in the set, {} present as the set's version, {missing} missing or different",
                r.objects, r.already_present
            ));
            if missing > 0 {
                failures.push((
                    format!("{missing} media object(s) of the set are missing or differ in the restored bucket"),
                    ExitCode::MediaIncomplete,
                ));
            }
            report.insert(
                "media".into(),
                json!({"objects": r.objects, "present": r.already_present, "missing": missing}),
            );
        }
    }

    // The site: the same answers as the live site gave at backup.
    let answers = if restores_database {
        captured_answers(env).await?
    } else {
        None
    };
    match (answers, &env.targets.site_url) {
        (Some(expected), Some(url)) => {
            let (served, not_served): (Vec<Answer>, Vec<Answer>) = expected
                .into_iter()
                .partition(|a| !(a.name == "upload" && a.status != 200));
            for a in &not_served {
                env.log.line(format!(
                    "upload {} was not served by the site at backup ({}): checked in the media bucket instead",
                    a.path, a.status
                ));
            }
            let diffs = answers::compare(url, &served)
                .await
                .map_err(|e| StepError::new(e.to_string(), ExitCode::RestoreMismatch))?;
            for d in &diffs {
                env.log
                    .line(format!("site {} {}: {}", d.name, d.path, d.detail));
            }
            env.log.line(format!(
                "site: {} answers compared with the backup's, {} differ",
                served.len(),
                diffs.len()
            ));
            if !diffs.is_empty() {
                failures.push((
                    format!(
                        "the restored site answers differently: {}",
                        diffs
                            .iter()
                            .map(|d| format!("{} {}", d.name, d.path))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    ExitCode::RestoreMismatch,
                ));
            }
            report.insert(
                "site".into(),
                json!({"compared": served.iter().map(|a| format!("{} {}", a.name, a.path)).collect::<Vec<_>>(), "differences": diffs}),
            );
        }
        (None, _) => env
            .log
            .line("site: the set holds no captured answers (wordpress.url was not set at backup)"),
        (Some(_), None) => env
            .log
            .line("site: no --site-url or restore.site_url to ask the restored site at"),
    }
    if let Some((first, exit)) = failures.first() {
        let all: Vec<&str> = failures.iter().map(|(m, _)| m.as_str()).collect();
        return Err(StepError::new(
            if all.len() > 1 {
                all.join("; ")
            } else {
                first.clone()
            },
            *exit,
        ));
    }
    Ok(serde_json::Value::Object(report))
}

/// The per-step wall times of a finished journal, in plan order.
pub fn step_seconds(j: &Journal) -> BTreeMap<String, f64> {
    j.steps
        .iter()
        .map(|(id, s)| (id.clone(), s.seconds))
        .collect()
}
