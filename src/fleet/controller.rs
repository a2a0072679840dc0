//! `wpdr controller`: every round it lists the Sites and the fleet's Jobs,
//! records the Jobs that finished into their Sites' status, asks the
//! planner what starts now and creates those Jobs. Level-triggered: a round
//! needs nothing from the one before it, so a restarted controller (or a
//! newly elected one) carries on from what the cluster and the Sites'
//! status say.
//!
//! Its API calls per round are two lists (Sites, Jobs) plus one call per
//! Job created or finished and one status write per Site that changed; a
//! quiet fleet of 500 sites costs two calls a round. Lists are served from
//! the API server's watch cache (`resourceVersion=0`).

use super::job::{
    config_map, job, resources, JobRequest, JobTemplate, DATABASE_ANNOTATION, DUE_ANNOTATION,
    ENDPOINTS_ANNOTATION, MANAGED_LABEL, MANAGER, SCHEDULE_LABEL, SITE_LABEL,
};
use super::outcome::JobOutcome;
use super::plan::{plan, Limits, PlannedSchedule, PlannedSite, Resources, RunningJob};
use super::site::{Site, SiteStatus};
use crate::exit::{Classify, ExitCode};
use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("Kubernetes API: {doing}: {source}")]
    Api {
        doing: String,
        #[source]
        source: kube::Error,
    },
    #[error("fleet Job template {path}: {problem}")]
    Template { path: String, problem: String },
}

impl Classify for FleetError {
    fn exit_code(&self) -> ExitCode {
        match self {
            FleetError::Api { .. } => ExitCode::Internal,
            FleetError::Template { .. } => ExitCode::Config,
        }
    }
    fn metric_label(&self) -> &'static str {
        match self {
            FleetError::Api { .. } => "kubernetes_api",
            FleetError::Template { .. } => "config",
        }
    }
}

/// What the last round saw, for /metrics.
#[derive(Default, Clone)]
pub struct Snapshot {
    pub sites: Vec<Site>,
    pub round: Round,
    pub rounds: u64,
    pub round_failures: u64,
    pub api_calls: u64,
    pub leader: bool,
    pub last_round: Option<DateTime<Utc>>,
}

/// What one round did, for logs, metrics and the simulation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    pub sites: usize,
    pub running: usize,
    pub started: Vec<String>,
    pub finished: Vec<(String, bool)>,
    /// Due runs held back by a cap.
    pub waiting: usize,
    /// Sites whose spec cannot run (the reason is in their status).
    pub invalid: usize,
    pub api_calls: u64,
}

pub struct Controller {
    client: kube::Client,
    template: JobTemplate,
    limits: Limits,
    calls: AtomicU64,
    /// Plan and report, but create, change and write nothing.
    dry_run: bool,
    /// Each Site's schedules as parsed for its spec's generation: checking
    /// a spec and parsing its crons every round for 500 sites would be the
    /// controller's largest cost.
    parsed: std::sync::Mutex<HashMap<String, (String, Parsed)>>,
    /// What /metrics shows: the last round's Sites and counts.
    snapshot: std::sync::Mutex<Snapshot>,
}

type Parsed = Result<SiteParsed, String>;

/// A Site's spec as the controller uses it, parsed once per generation.
#[derive(Clone)]
struct SiteParsed {
    schedules: Vec<PlannedSchedule>,
    /// The chart's Job template with the site's changes (`spec.job`).
    template: std::sync::Arc<JobTemplate>,
}

/// What a Site's spec is, for the cache: its generation where the API
/// server keeps one, else its content.
fn spec_version(site: &Site) -> String {
    match site.metadata.generation {
        Some(g) => format!("g{g}"),
        None => {
            use sha2::{Digest, Sha256};
            let text = serde_json::to_string(&site.spec).unwrap_or_default();
            format!("{:x}", Sha256::digest(text.as_bytes()))
        }
    }
}

fn is_status_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Whether a Job has finished, and how.
fn finished(job: &Job) -> Option<bool> {
    let status = job.status.as_ref()?;
    if status.succeeded.unwrap_or(0) > 0 {
        return Some(true);
    }
    if status.failed.unwrap_or(0) > 0 {
        return Some(false);
    }
    status.conditions.iter().flatten().find_map(|c| {
        (c.status == "True").then_some(())?;
        match c.type_.as_str() {
            "Complete" => Some(true),
            "Failed" => Some(false),
            _ => None,
        }
    })
}

/// Errors a Site's check writes (as opposed to a run's): `Site ns/name: …`.
fn is_spec_error(e: &str) -> bool {
    e.starts_with("Site ")
}

fn site_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

impl Controller {
    pub fn new(client: kube::Client, template: JobTemplate, limits: Limits) -> Self {
        Controller {
            client,
            template,
            limits,
            calls: AtomicU64::new(0),
            dry_run: false,
            parsed: Default::default(),
            snapshot: Default::default(),
        }
    }

    /// A controller that only says what it would start.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// API calls made since the controller started.
    pub fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn api_err(doing: impl Into<String>) -> impl FnOnce(kube::Error) -> FleetError {
        let doing = doing.into();
        move |source| FleetError::Api { doing, source }
    }

    /// One round at `now` (the simulation passes a virtual clock).
    pub async fn round(&self, now: DateTime<Utc>) -> Result<Round, FleetError> {
        let before = self.api_calls();
        let cached = ListParams::default().match_any();
        self.call();
        let sites = Api::<Site>::all(self.client.clone())
            .list(&cached)
            .await
            .map_err(Self::api_err("list Sites"))?
            .items;
        self.call();
        let jobs = Api::<Job>::all(self.client.clone())
            .list(&cached.clone().labels(&format!("{MANAGED_LABEL}={MANAGER}")))
            .await
            .map_err(Self::api_err("list the fleet's Jobs"))?
            .items;

        let mut round = Round {
            sites: sites.len(),
            ..Round::default()
        };
        let by_key: HashMap<String, &Site> = sites
            .iter()
            .map(|s| {
                (
                    site_key(&s.namespace().unwrap_or_default(), &s.name_any()),
                    s,
                )
            })
            .collect();
        let mut statuses: HashMap<String, (SiteStatus, bool)> = by_key
            .iter()
            .map(|(key, s)| (key.clone(), (s.status.clone().unwrap_or_default(), false)))
            .collect();

        // Sites gone since the last round leave the cache.
        self.parsed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| statuses.contains_key(k));

        // 1. Jobs that finished since their Site last heard.
        let mut running = Vec::new();
        for j in &jobs {
            let ns = j.namespace().unwrap_or_default();
            let labels = j.labels();
            let (Some(site), Some(schedule)) = (labels.get(SITE_LABEL), labels.get(SCHEDULE_LABEL))
            else {
                continue;
            };
            let key = site_key(&ns, site);
            match finished(j) {
                None => running.push(RunningJob {
                    site: key,
                    schedule: schedule.clone(),
                    uses: uses_of(j),
                }),
                Some(ok) => {
                    let Some((status, dirty)) = statuses.get_mut(&key) else {
                        continue; // its Site is gone; Kubernetes removes the Job
                    };
                    let job_name = j.name_any();
                    // Only the attempt its Site started last, not yet recorded
                    // (an older attempt, or one of a schedule since removed, is not).
                    let Some(record) = status
                        .runs
                        .get_mut(schedule)
                        .filter(|r| r.last_job.as_deref() == Some(job_name.as_str()))
                        .filter(|r| r.last_result.is_none())
                    else {
                        continue;
                    };
                    let outcome = self.outcome_of(&ns, &job_name, schedule, ok).await;
                    let at = j
                        .status
                        .as_ref()
                        .and_then(|s| s.completion_time.as_ref())
                        .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
                        .unwrap_or(now);
                    let ok = ok && outcome.ok;
                    record.finished(ok, at, &self.limits);
                    outcome.apply(status);
                    // The Job's message names the variable; the person
                    // reading the Site needs the Secret behind it.
                    if let (Some(err), Some(site)) = (status.last_error.as_mut(), by_key.get(&key))
                    {
                        for (env, r) in site.spec.credentials.env() {
                            if err.contains(env) {
                                err.push_str(&format!(
                                    " [{env} is key {} of Secret {ns}/{}]",
                                    r.key, r.name
                                ));
                            }
                        }
                    }
                    *dirty = true;
                    round.finished.push((key.clone(), ok));
                    tracing::info!(site = %key, schedule = %schedule, job = %job_name, ok, reason = outcome.reason.as_deref().unwrap_or(""), "run finished");
                }
            }
        }
        round.running = running.len();

        // 2. What each Site may run, and with what.
        let mut planned = Vec::new();
        let mut templates: HashMap<String, std::sync::Arc<JobTemplate>> = HashMap::new();
        // In list order: the planner's order among equals stays the API's.
        for s in &sites {
            let key = site_key(&s.namespace().unwrap_or_default(), &s.name_any());
            if s.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some((status, dirty)) = statuses.get_mut(&key) else {
                continue;
            };
            let schedules = match self.schedules_of(&key, s) {
                Ok(parsed) => {
                    templates.insert(key.clone(), parsed.template);
                    parsed.schedules
                }
                Err(msg) => {
                    round.invalid += 1;
                    if status.last_error.as_deref() != Some(msg.as_str())
                        || status.observed_generation != s.metadata.generation
                    {
                        status.last_error = Some(msg);
                        status.observed_generation = s.metadata.generation;
                        *dirty = true;
                    }
                    continue;
                }
            };
            // A spec that was refused and is now fixed: its error goes.
            if status.last_error.as_deref().is_some_and(is_spec_error) {
                status.last_error = None;
                *dirty = true;
            }
            planned.push(PlannedSite {
                key,
                schedules,
                suspend: s.spec.suspend,
                created: s
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
                    .unwrap_or(now),
                runs: status.runs.clone(),
            });
        }

        // 3. Start what the planner says.
        let decided = plan(now, &planned, &running, &self.limits);
        round.waiting = decided.waiting.len();
        let planned_by_key: HashMap<&str, &PlannedSite> =
            planned.iter().map(|p| (p.key.as_str(), p)).collect();
        for start in decided.starts {
            let (Some(site), Some((status, dirty))) =
                (by_key.get(&start.site), statuses.get_mut(&start.site))
            else {
                continue;
            };
            let Some(template) = templates.get(&start.site) else {
                continue;
            };
            let Some(cron) = planned_by_key
                .get(start.site.as_str())
                .and_then(|p| p.schedules.iter().find(|s| s.cron.name == start.schedule))
            else {
                continue;
            };
            let ns = site.namespace().unwrap_or_default();
            if self.dry_run {
                round.started.push(format!(
                    "{} {} (due {})",
                    start.site, start.schedule, start.due
                ));
                continue;
            }
            if status.observed_generation != site.metadata.generation
                || !status.runs.values().any(|r| r.last_job.is_some())
            {
                self.write_config(site).await?;
                status.observed_generation = site.metadata.generation;
                *dirty = true;
            }
            let attempt = status.runs.get(&start.schedule).map_or(0, |r| r.failures);
            let manifest = job(
                &JobRequest {
                    site,
                    schedule: &start.schedule,
                    kind: cron.cron.job,
                    due: start.due,
                    attempt,
                    uses: &start.uses,
                },
                template,
            );
            let name = manifest.metadata.name.clone().unwrap_or_default();
            self.call();
            match Api::<Job>::namespaced(self.client.clone(), &ns)
                .create(&PostParams::default(), &manifest)
                .await
            {
                Ok(_) => {}
                // Created by an earlier round that did not get to record it.
                Err(e) if is_status_code(&e, 409) => {}
                Err(e) => return Err(Self::api_err(format!("create Job {ns}/{name}"))(e)),
            }
            status
                .runs
                .entry(start.schedule.clone())
                .or_default()
                .started(start.due, &name);
            *dirty = true;
            tracing::info!(site = %start.site, schedule = %start.schedule, job = %name, due = %start.due, retry = start.retry, "run started");
            round.started.push(start.site.clone());
        }

        // 4. Write what changed.
        let mut statuses_written = HashMap::new();
        for (key, (status, dirty)) in statuses {
            if !dirty || self.dry_run {
                statuses_written.insert(key, status);
                continue;
            }
            let Some(site) = by_key.get(&key) else {
                continue;
            };
            let ns = site.namespace().unwrap_or_default();
            self.call();
            let patch = serde_json::json!({ "status": status });
            match Api::<Site>::namespaced(self.client.clone(), &ns)
                .patch_status(
                    &site.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                // Deleted since the list: nothing left to report to.
                Err(e) if is_status_code(&e, 404) => {}
                Err(e) => return Err(Self::api_err(format!("write the status of Site {key}"))(e)),
            }
            statuses_written.insert(key, status);
        }
        round.api_calls = self.api_calls() - before;
        self.remember(&round, sites, &statuses_written, now);
        Ok(round)
    }

    fn remember(
        &self,
        round: &Round,
        mut sites: Vec<Site>,
        statuses: &HashMap<String, SiteStatus>,
        now: DateTime<Utc>,
    ) {
        for s in &mut sites {
            let key = site_key(&s.namespace().unwrap_or_default(), &s.name_any());
            if let Some(st) = statuses.get(&key) {
                s.status = Some(st.clone());
            }
        }
        let mut snap = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        snap.sites = sites;
        snap.round = round.clone();
        snap.rounds += 1;
        snap.api_calls = self.api_calls();
        snap.last_round = Some(now);
    }

    /// What the last round saw (for /metrics), with the calls made since.
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        snap.api_calls = self.api_calls();
        snap
    }

    fn note(&self, leader: bool, failed: bool) {
        let mut snap = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        snap.leader = leader;
        if failed {
            snap.round_failures += 1;
        }
    }

    /// The Site's schedules and what each holds, or why it cannot run;
    /// parsed once per spec.
    fn schedules_of(&self, key: &str, site: &Site) -> Parsed {
        let version = spec_version(site);
        let mut cache = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, parsed)) = cache.get(key) {
            if *v == version {
                return parsed.clone();
            }
        }
        let parsed = site
            .spec
            .check(key)
            .and_then(|cfg| {
                let schedules = site
                    .spec
                    .crons(key)?
                    .into_iter()
                    .map(|c| PlannedSchedule {
                        uses: resources(&cfg, c.job),
                        cron: c,
                    })
                    .collect();
                let template = std::sync::Arc::new(self.template.for_site(key, &site.spec)?);
                Ok(SiteParsed {
                    schedules,
                    template,
                })
            })
            .map_err(|e| e.to_string());
        cache.insert(key.to_string(), (version, parsed.clone()));
        parsed
    }

    /// The site's wpdr.yaml as its Jobs mount it.
    async fn write_config(&self, site: &Site) -> Result<(), FleetError> {
        let ns = site.namespace().unwrap_or_default();
        let cm = config_map(site).map_err(|e| FleetError::Template {
            path: format!("Site {ns}/{}", site.name_any()),
            problem: e.to_string(),
        })?;
        let name = cm.metadata.name.clone().unwrap_or_default();
        let api = Api::<ConfigMap>::namespaced(self.client.clone(), &ns);
        self.call();
        match api.create(&PostParams::default(), &cm).await {
            Ok(_) => Ok(()),
            Err(e) if is_status_code(&e, 409) => {
                self.call();
                let patch = serde_json::json!({ "data": cm.data });
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
                    .map_err(Self::api_err(format!("update ConfigMap {ns}/{name}")))
            }
            Err(e) => Err(Self::api_err(format!("create ConfigMap {ns}/{name}"))(e)),
        }
    }

    /// The Job's own report from its Pod's termination message; a Job that
    /// left none (killed, out of memory, image not pulled, past its
    /// deadline) is reported by what Kubernetes says.
    async fn outcome_of(&self, ns: &str, job: &str, schedule: &str, ok: bool) -> JobOutcome {
        self.call();
        let pods = Api::<Pod>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default().labels(&format!("job-name={job}")))
            .await;
        let message = pods.ok().and_then(|pods| {
            pods.items.iter().find_map(|p| {
                p.status
                    .as_ref()?
                    .container_statuses
                    .iter()
                    .flatten()
                    .find_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
            })
        });
        match message.as_deref().and_then(JobOutcome::parse) {
            Some(o) => o,
            None => JobOutcome {
                job: String::new(),
                schedule: schedule.to_string(),
                ok,
                exit: if ok { 0 } else { ExitCode::Internal.code() },
                reason: (!ok).then(|| "job_failed".to_string()),
                message: (!ok).then(|| {
                    format!(
                        "Job {ns}/{job} failed without a report (killed, out of memory, past its deadline or its image not pulled): see `kubectl -n {ns} describe job {job}`"
                    )
                }),
                finished_at: Utc::now(),
                site: None,
            },
        }
    }
}

/// What a running Job holds, from its annotations (so the caps count Jobs
/// a previous controller started).
fn uses_of(j: &Job) -> Resources {
    let a = j.annotations();
    Resources {
        database: a.get(DATABASE_ANNOTATION).cloned(),
        endpoints: a
            .get(ENDPOINTS_ANNOTATION)
            .map(|e| {
                e.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The occurrence a Job ran for.
pub fn due_of(j: &Job) -> Option<DateTime<Utc>> {
    j.annotations()
        .get(DUE_ANNOTATION)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// How the controller runs.
pub struct RunOptions {
    pub every: std::time::Duration,
    /// With several replicas, only the Lease holder plans and starts Jobs.
    pub leader: Option<crate::cluster::lease::LeaderElector>,
}

/// Runs rounds until `shutdown` completes. A round that fails (the API
/// server unreachable) is logged and the next one tries again: Jobs already
/// started run on without the controller.
pub async fn run_until(
    controller: &Controller,
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let leading = match &opts.leader {
            None => true,
            Some(l) => match l.try_acquire_or_renew().await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot confirm the Lease; no round this time");
                    false
                }
            },
        };
        controller.note(leading, false);
        if leading {
            match controller.round(Utc::now()).await {
                Ok(r) => tracing::info!(
                    sites = r.sites,
                    running = r.running,
                    started = r.started.len(),
                    finished = r.finished.len(),
                    waiting = r.waiting,
                    invalid = r.invalid,
                    api_calls = r.api_calls,
                    "round"
                ),
                Err(e) => {
                    controller.note(true, true);
                    tracing::error!(error = %e, "round failed; trying again next round")
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(opts.every) => {}
        }
    }
    if let Some(l) = &opts.leader {
        if let Err(e) = l.release().await {
            tracing::warn!(error = %e, "could not release the Lease; it expires on its own");
        }
    }
}
