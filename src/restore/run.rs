//! The executor of a full-site restore: runs a plan's steps against one set
//! into one namespace. It decides the order, runs independent steps at the
//! same time, bounds each by its timeout (a step that overruns is dropped,
//! and its work with it), keeps a heartbeat, and journals every state change
//! so a killed restore resumes where it stopped. What each step does lives in
//! `steps/`; what both sides share in `step`.

use super::journal::{self, Journal, JournalHandle, RunStatus, StepRecord, StepState};
use super::plan::{Plan, Step, StepKind};
pub use super::step::RestoreContext;
use super::step::{StepEnv, StepError, StepLog};
use super::steps;
pub use super::targets::Targets;
use crate::binlog::replay::PitrPlan;
use crate::catalog::{Catalog, Manifest};
use crate::config::Config;
use crate::exit::{Classify, ExitCode};
use crate::media::point::AsOf;
use chrono::{DateTime, Utc};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
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
    #[error("set {set} is partial: it has no {part} (it failed at backup: {reason}), which step '{step}' restores. Nothing was touched. Restore this set with a plan without that step (e.g. --plan db-only) and the {part} from an earlier complete set (`wpdr sets list` shows which are complete), or restore an earlier complete set.")]
    PartMissing {
        set: String,
        step: String,
        part: String,
        reason: String,
    },
    #[error("namespace '{0}' is not a valid Kubernetes namespace name (lowercase letters, digits, '-', at most 63)")]
    BadNamespace(String),
    #[error("refusing to restore into {what}: it is the live site's own {what_is}. Point restore.* at the restored components.")]
    TargetIsSource { what: String, what_is: String },
    #[error(transparent)]
    PointInTime(Box<super::RestoreError>),
    #[error("step '{step}': {source}")]
    MediaAtPoint {
        step: String,
        source: Box<crate::media::MediaError>,
    },
}

impl From<super::RestoreError> for RunError {
    fn from(e: super::RestoreError) -> Self {
        RunError::PointInTime(Box::new(e))
    }
}

impl Classify for RunError {
    fn exit_code(&self) -> ExitCode {
        match self {
            RunError::Catalog(e) => e.exit_code(),
            RunError::Journal(_) => ExitCode::StoreUnavailable,
            RunError::UnknownRestore { .. } => ExitCode::SetNotFound,
            RunError::AlreadyDone { .. } => ExitCode::Ok,
            RunError::StillRunning { .. } => ExitCode::Locked,
            RunError::PartMissing { .. } => ExitCode::Partial,
            RunError::BadId { .. }
            | RunError::MissingTarget { .. }
            | RunError::BadNamespace(_)
            | RunError::TargetIsSource { .. } => ExitCode::Config,
            RunError::PointInTime(e) => e.exit_code(),
            RunError::MediaAtPoint { source, .. } => source.exit_code(),
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
            RunError::PartMissing { .. } => "set_partial",
            RunError::BadNamespace(_) => "bad_namespace",
            RunError::TargetIsSource { .. } => "target_is_source",
            RunError::PointInTime(e) => e.metric_label(),
            RunError::MediaAtPoint { source, .. } => source.metric_label(),
        }
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
    /// A point-in-time restore: the point and what is replayed after the set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<crate::binlog::replay::PitrPlan>,
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
    /// Restore the site as it was at this moment (see [`StepEnv::pitr`]).
    pub point: Option<DateTime<Utc>>,
}

/// The set to restore: the named one, or with a point the newest set before
/// it (a named set must be before it) and the replay plan from it.
async fn resolve(
    ctx: &RestoreContext,
    catalog: &Catalog<'_>,
    set: &str,
    point: Option<DateTime<Utc>>,
) -> Result<(Manifest, Option<PitrPlan>), RunError> {
    let point = point.map(crate::binlog::replay::Point::Time);
    let archive = ctx.cfg.binlog_prefix();
    Ok(super::pitr::choose(catalog, &ctx.store, &archive, set, point.as_ref()).await?)
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

/// Refuses targets that are the live site's own database or buckets: a
/// restore (and a drill's teardown) must never write over the source.
/// Servers are compared by the addresses their names resolve to (so
/// `localhost` is `127.0.0.1`), and the live database's replicas count as
/// the live database too (written to, they would diverge from the primary).
async fn check_not_source(targets: &Targets, cfg: &Config) -> Result<(), RunError> {
    if let Some((e, db)) = &targets.database {
        let live = &cfg.database;
        let mut servers = vec![(live.host.clone(), live.port, "database")];
        servers.extend(
            live.topology
                .replicas
                .iter()
                .map(|(h, p)| (h.clone(), *p, "database replica")),
        );
        for (host, port, what_is) in servers {
            if *db == live.name && same_server((&e.host, e.port), (&host, port)).await {
                return Err(RunError::TargetIsSource {
                    what: format!("database '{db}' on {}", e.display()),
                    what_is: format!("{what_is} ({host}:{port})"),
                });
            }
        }
    }
    if let (Some(t), Some(m)) = (&targets.media, &cfg.media) {
        for (b, what) in [
            (&m.source, "uploads bucket"),
            (&m.offsite, "offsite mirror"),
        ] {
            if t.bucket == b.bucket && same_endpoint(&t.endpoint, &b.endpoint).await {
                return Err(RunError::TargetIsSource {
                    what: format!("bucket '{}'", t.bucket),
                    what_is: what.into(),
                });
            }
        }
    }
    Ok(())
}

/// The `ip:port` addresses a server name resolves to; the name itself
/// (lowercased) when it does not resolve within a few seconds.
async fn addresses(host: &str, port: u16) -> BTreeSet<String> {
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(Duration::from_secs(5), lookup).await {
        Ok(Ok(found)) => found.map(|a| a.to_string()).collect(),
        _ => BTreeSet::from([format!("{}:{port}", host.to_ascii_lowercase())]),
    }
}

async fn same_server(a: (&str, u16), b: (&str, u16)) -> bool {
    if a.1 != b.1 {
        return false;
    }
    a.0.eq_ignore_ascii_case(b.0)
        || !addresses(a.0, a.1)
            .await
            .is_disjoint(&addresses(b.0, b.1).await)
}

/// Two S3 endpoints (`None`: AWS) that reach the same server.
async fn same_endpoint(a: &Option<String>, b: &Option<String>) -> bool {
    let host_port = |e: &str| {
        url::Url::parse(e).ok().and_then(|u| {
            let port = u.port_or_known_default()?;
            Some((u.host_str()?.to_string(), port))
        })
    };
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => match (host_port(x), host_port(y)) {
            (Some((hx, px)), Some((hy, py))) => same_server((&hx, px), (&hy, py)).await,
            _ => x == y,
        },
        _ => false,
    }
}

/// Every step's configuration present before anything is touched.
async fn check_targets(
    plan: &Plan,
    targets: &Targets,
    manifest: &Manifest,
    ctx: &RestoreContext,
    pitr: Option<&PitrPlan>,
) -> Vec<RunError> {
    let mut problems = Vec::new();
    // A partial set says which parts it lacks; a step that restores one of
    // them could only fail half-way.
    for s in &plan.steps {
        let part = match s.kind {
            StepKind::MediaRestore => "media",
            StepKind::ClusterObjects => "cluster",
            _ => continue,
        };
        if let Some(failed) = manifest.failed_part(part) {
            problems.push(RunError::PartMissing {
                set: manifest.set_id.clone(),
                step: s.id.clone(),
                part: part.into(),
                reason: failed.reason.clone(),
            });
        }
    }
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
    if let Err(e) = check_not_source(targets, &ctx.cfg).await {
        problems.push(e);
    }
    // A point-in-time load replays with mariadb-binlog | mariadb.
    if let (Some(_), Some((endpoint, _))) = (pitr, &targets.database) {
        if plan.steps.iter().any(|s| s.kind == StepKind::DatabaseLoad) {
            if let Err(e) = crate::binlog::replay::check_tools(endpoint) {
                problems.push(RunError::from(super::RestoreError::from(e)));
            }
        }
    }
    problems
}

/// The mirror generations a point-in-time restore's media step takes, chosen
/// once (see [`Journal::media_at`]); `None` without a point or a media step.
async fn media_bracket(
    plan: &Plan,
    ctx: &RestoreContext,
    pitr: Option<&PitrPlan>,
) -> Result<Option<AsOf>, RunError> {
    let Some(t) = pitr.and_then(|p| p.target.time()) else {
        return Ok(None);
    };
    let Some(step) = plan.steps.iter().find(|s| s.kind == StepKind::MediaRestore) else {
        return Ok(None);
    };
    crate::media::point::as_of(&ctx.store, &ctx.cfg.site_prefix(), t)
        .await
        .map(Some)
        .map_err(|source| RunError::MediaAtPoint {
            step: step.id.clone(),
            source: Box::new(source),
        })
}

/// Prints nothing, writes nothing: the plan as it would run.
pub async fn dry_run(ctx: &RestoreContext, req: RestoreRequest<'_>) -> Result<DryRun, RunError> {
    check_namespace(req.namespace)?;
    let catalog = Catalog::new(&ctx.store, &ctx.cfg.site, &ctx.cfg.site_prefix());
    let (manifest, pitr) = resolve(ctx, &catalog, req.set, req.point).await?;
    let targets = Targets::resolve(&ctx.cfg, &manifest, req.namespace, req.site_url);
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
                touches: steps::touches(&targets, s.kind, &manifest),
                last_seconds: last.get(&s.id).copied(),
            });
        }
    }
    let mut problems: Vec<String> =
        check_targets(&req.plan, &targets, &manifest, ctx, pitr.as_ref())
            .await
            .iter()
            .map(|e| e.to_string())
            .collect();
    if let Err(e) = media_bracket(&req.plan, ctx, pitr.as_ref()).await {
        problems.push(e.to_string());
    }
    Ok(DryRun {
        set_id: manifest.set_id.clone(),
        point_in_time: pitr,
        namespace: req.namespace.to_string(),
        plan: req.plan.name.clone(),
        site_url: targets.site_url.clone(),
        steps,
        problems,
    })
}

/// Starts a restore: journal first, then the steps.
pub async fn start(
    ctx: &RestoreContext,
    req: RestoreRequest<'_>,
) -> Result<RestoreOutcome, RunError> {
    check_namespace(req.namespace)?;
    let catalog = Catalog::new(&ctx.store, &ctx.cfg.site, &ctx.cfg.site_prefix());
    let (manifest, pitr) = resolve(ctx, &catalog, req.set, req.point).await?;
    let targets = Targets::resolve(&ctx.cfg, &manifest, req.namespace, req.site_url);
    if let Some(e) = check_targets(&req.plan, &targets, &manifest, ctx, pitr.as_ref())
        .await
        .into_iter()
        .next()
    {
        return Err(e);
    }
    let media_at = media_bracket(&req.plan, ctx, pitr.as_ref()).await?;
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
        point: req.point,
        media_at,
        plan: req.plan,
        started_at: now,
        updated_at: now,
        finished_at: None,
        status: RunStatus::Running,
        holder: holder(),
        runs: 0,
        steps,
    };
    tracing::info!(restore = %j.restore_id, set = %j.set_id, namespace = %j.namespace, plan = %j.plan.name, point = j.point.map(tracing::field::display), "restore started");
    let handle = Arc::new(JournalHandle::new(
        ctx.store.clone(),
        &ctx.cfg.site_prefix(),
        j,
    ));
    execute(ctx, &catalog, &manifest, &targets, pitr.as_ref(), handle).await
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
    // The journal's set, and with a point the same replay to it.
    let (manifest, pitr) = resolve(ctx, &catalog, &j.set_id, j.point).await?;
    let targets = Targets::resolve(&ctx.cfg, &manifest, &j.namespace, j.site_url.as_deref());
    if let Some(e) = check_targets(&j.plan, &targets, &manifest, ctx, pitr.as_ref())
        .await
        .into_iter()
        .next()
    {
        return Err(e);
    }
    let mut j = j;
    if j.media_at.is_none() {
        j.media_at = media_bracket(&j.plan, ctx, pitr.as_ref()).await?;
    }
    tracing::info!(restore = %j.restore_id, set = %j.set_id, previous_holder = %j.holder, "restore resumed");
    let handle = Arc::new(JournalHandle::new(ctx.store.clone(), &prefix, j));
    execute(ctx, &catalog, &manifest, &targets, pitr.as_ref(), handle).await
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
    pitr: Option<&PitrPlan>,
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
    let result = execute_steps(ctx, catalog, manifest, targets, pitr, &journal).await;
    heartbeat.abort();
    result
}

async fn execute_steps(
    ctx: &RestoreContext,
    catalog: &Catalog<'_>,
    manifest: &Manifest,
    targets: &Targets,
    pitr: Option<&PitrPlan>,
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
    let media_at = j.media_at.clone();
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
                let log = StepLog::new(&step.id);
                let now = journal
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
                let earlier = now
                    .steps
                    .values()
                    .filter(|s| s.state == StepState::Done)
                    .map(|s| (s.kind, s.summary.clone()))
                    .collect();
                let env = StepEnv {
                    ctx,
                    catalog,
                    manifest,
                    targets,
                    earlier,
                    resumed: ran_before.contains(&step.id),
                    drill: j.drill,
                    has_cluster_step: plan
                        .steps
                        .iter()
                        .any(|s| s.kind == StepKind::ClusterObjects),
                    kinds: plan.steps.iter().map(|s| s.kind).collect(),
                    pitr,
                    media_at: media_at.as_ref(),
                    log: log.clone(),
                };
                let step = step.clone();
                running.push(async move {
                    let t0 = Instant::now();
                    let res = match tokio::time::timeout(
                        Duration::from_secs(step.timeout_seconds),
                        steps::run(&step, &env),
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

/// The per-step wall times of a finished journal, in plan order.
pub fn step_seconds(j: &Journal) -> BTreeMap<String, f64> {
    j.steps
        .iter()
        .map(|(id, s)| (id.clone(), s.seconds))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;

    fn config() -> Config {
        Config::from_yaml(
            "database:\n  host: 127.0.0.1\n  port: 3307\n  name: wordpress\n  replicas: ['db-replica.invalid:3306']\nmedia:\n  source: {bucket: up, endpoint: 'http://127.0.0.1:3900'}\n  offsite: {bucket: off, endpoint: 'http://s3.example.invalid'}\n",
            &std::collections::HashMap::new(),
        )
        .unwrap()
    }

    fn targets(database: Option<(&str, &str)>, media: Option<(&str, &str)>) -> Targets {
        let mut media_cfg = config().media.unwrap().source;
        Targets {
            namespace: "restored".into(),
            database: database.map(|(url, db)| {
                (
                    Endpoint::from_url(url, None, &Default::default())
                        .unwrap()
                        .0,
                    db.to_string(),
                )
            }),
            media: media.map(|(bucket, endpoint)| {
                media_cfg.bucket = bucket.into();
                media_cfg.endpoint = Some(endpoint.into());
                media_cfg
            }),
            caches: Vec::new(),
            site_url: None,
        }
    }

    #[tokio::test]
    async fn the_live_database_is_recognised_by_address_and_on_its_replicas() {
        let cfg = config();
        // `localhost` is the live 127.0.0.1: refused, though the names differ.
        let t = targets(Some(("mysql://root@localhost:3307", "wordpress")), None);
        let e = check_not_source(&t, &cfg).await.unwrap_err().to_string();
        assert!(e.contains("wordpress"), "{e}");
        // A replica of the live database is the live database too.
        let t = targets(
            Some(("mysql://root@db-replica.invalid:3306", "wordpress")),
            None,
        );
        let e = check_not_source(&t, &cfg).await.unwrap_err().to_string();
        assert!(e.contains("replica"), "{e}");
        // Another database on the same server, or the same name elsewhere, is fine.
        let t = targets(Some(("mysql://root@localhost:3307", "wp_restored")), None);
        assert!(check_not_source(&t, &cfg).await.is_ok());
        let t = targets(Some(("mysql://root@127.0.0.1:3308", "wordpress")), None);
        assert!(check_not_source(&t, &cfg).await.is_ok());
    }

    #[tokio::test]
    async fn the_live_buckets_are_recognised_by_endpoint_address() {
        let cfg = config();
        let t = targets(None, Some(("up", "http://localhost:3900")));
        let e = check_not_source(&t, &cfg).await.unwrap_err().to_string();
        assert!(e.contains("uploads bucket"), "{e}");
        let t = targets(None, Some(("off", "http://S3.example.invalid:80")));
        let e = check_not_source(&t, &cfg).await.unwrap_err().to_string();
        assert!(e.contains("offsite mirror"), "{e}");
        let t = targets(None, Some(("up-restored", "http://localhost:3900")));
        assert!(check_not_source(&t, &cfg).await.is_ok());
    }
}
