//! `wpdr daemon`: runs the jobs of `schedules/` in-cluster.
//!
//! * tokio-cron-scheduler fires each schedule: one run at a time, armed from the
//!   schedule's next occurrence in its time zone (see `schedule`);
//! * a job never overlaps itself: a tick that finds it running is skipped and counted;
//! * a run missed while the daemon was down runs once at start when the schedule says so
//!   (last runs are kept in the store, so a restarted pod knows);
//! * `/healthz`, `/readyz`, `/metrics` and `POST /run/<schedule>` on one port;
//! * SIGTERM stops new runs, lets running ones finish within the grace period,
//!   then abandons them (an abandoned backup never commits a manifest) and exits 0.

pub mod http;
pub mod metrics;
pub mod schedule;

use crate::catalog::Catalog;
use crate::cluster::lease::LeaderElector;
use crate::config::Config;
use crate::exit::{Classify, ExitCode};
use crate::jobs::{self, CancellationToken, JobContext, JobError, Verdict};
use crate::store::Store;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::Response;
use metrics::Metrics;
use schedule::{JobKind, Schedule};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("schedule {file}: {problem}")]
    Schedule { file: PathBuf, problem: String },
    #[error("cannot listen on {addr}: {source}. Pick another --listen address.")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the scheduler failed: {0}")]
    Scheduler(String),
}

impl Classify for DaemonError {
    fn exit_code(&self) -> ExitCode {
        match self {
            DaemonError::Schedule { .. } | DaemonError::Bind { .. } => ExitCode::Config,
            DaemonError::Scheduler(_) => ExitCode::Internal,
        }
    }
    fn metric_label(&self) -> &'static str {
        match self {
            DaemonError::Schedule { .. } => "schedule",
            DaemonError::Bind { .. } => "bind",
            DaemonError::Scheduler(_) => "scheduler",
        }
    }
}

pub struct DaemonOptions {
    pub schedules_dir: PathBuf,
    pub listen: SocketAddr,
    pub grace: Duration,
    /// With several replicas: only the Lease holder runs jobs.
    pub leader: Option<LeaderElector>,
}

/// Last run of a schedule, kept in the store for missed-run detection.
#[derive(Debug, Serialize, Deserialize)]
struct LastRun {
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    ok: bool,
}

pub enum Trigger {
    Started,
    AlreadyRunning,
    Unknown,
    ShuttingDown,
    NotLeader,
}

struct Runner {
    cfg: Config,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    schedules: HashMap<String, Schedule>,
    running: Mutex<HashMap<String, JoinHandle<()>>>,
    shutting_down: AtomicBool,
    ready: AtomicBool,
    /// Always true without leader election.
    leader: AtomicBool,
    /// Cancelled at the end of the shutdown grace period: runs still going
    /// are abandoned (an abandoned backup never commits a manifest).
    abandon: CancellationToken,
    /// The binlog archive's day summaries and live segment indexes already read.
    segment_cache: tokio::sync::Mutex<crate::binlog::rollup::ScanCache>,
}

impl Runner {
    fn state_key(&self, name: &str) -> String {
        format!("{}/daemon/{name}.json", self.cfg.site_prefix())
    }

    async fn last_run(&self, name: &str) -> Option<LastRun> {
        let bytes = self.store.get_bytes(&self.state_key(name)).await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Starts a run of `name` unless one is going or the daemon is stopping.
    fn trigger(self: &Arc<Self>, name: &str, why: &'static str) -> Trigger {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Trigger::ShuttingDown;
        }
        if !self.leader.load(Ordering::SeqCst) {
            tracing::debug!(
                job = name,
                why,
                "not the leader; another replica runs the jobs"
            );
            return Trigger::NotLeader;
        }
        let Some(schedule) = self.schedules.get(name).cloned() else {
            return Trigger::Unknown;
        };
        let mut running = match self.running.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        if running.get(name).is_some_and(|h| !h.is_finished()) {
            self.metrics.with_job(name, |s| s.skipped_overlap += 1);
            if schedule.job == JobKind::BinlogArchive {
                // Expected: the archive runs continuously; the tick only restarts it.
                tracing::debug!(job = name, why, "binlog archive running");
            } else {
                tracing::warn!(
                    job = name,
                    why,
                    "previous run still going; this tick is skipped"
                );
            }
            return Trigger::AlreadyRunning;
        }
        let this = self.clone();
        let handle = tokio::spawn(async move { this.run_once(schedule, why).await });
        running.insert(name.to_string(), handle);
        Trigger::Started
    }

    async fn run_once(self: Arc<Self>, schedule: Schedule, why: &'static str) {
        let name = schedule.name.clone();
        let started_at = Utc::now();
        self.metrics.with_job(&name, |s| {
            s.runs += 1;
            s.running = true;
            s.last_start = Some(started_at);
        });
        tracing::info!(job = %name, kind = schedule.job.as_str(), why, "run started");
        let verdict = self.execute(&schedule).await;
        let finished_at = Utc::now();
        let seconds = (finished_at - started_at).num_milliseconds() as f64 / 1000.0;
        let ok = verdict.is_ok();
        match verdict.reason {
            None => {
                tracing::info!(job = %name, seconds, bytes = verdict.bytes, objects = verdict.objects, "run succeeded")
            }
            Some(reason) => {
                let message = verdict.message.as_deref().unwrap_or_default();
                tracing::error!(job = %name, seconds, reason, error = %message, "run failed")
            }
        }
        let state = LastRun {
            started_at,
            finished_at,
            ok,
        };
        if let Ok(body) = serde_json::to_vec(&state) {
            if let Err(e) = self
                .store
                .put_bytes(&self.state_key(&name), Bytes::from(body))
                .await
            {
                tracing::warn!(job = %name, error = %e, "could not record the run");
            }
        }
        // The gauges the run changed (newest set, last drill) are read before
        // the run counts as finished, so whoever sees the success sees them.
        self.refresh_newest().await;
        self.metrics.with_job(&name, |s| {
            s.running = false;
            s.last_duration_seconds = seconds;
            s.next_run = schedule.next_after(Utc::now());
            match verdict.reason {
                None => {
                    s.successes += 1;
                    s.last_success = Some(finished_at);
                    s.last_bytes = verdict.bytes;
                    s.last_objects = verdict.objects;
                }
                Some(reason) => *s.failures.entry(reason.to_string()).or_default() += 1,
            }
        });
    }

    /// Runs the schedule's job (the same function the CLI runs) and says how it went.
    async fn execute(&self, schedule: &Schedule) -> Verdict {
        let ctx = JobContext::new(self.cfg.clone(), self.store.clone())
            .with_cancel(self.abandon.child_token());
        let result: Result<Verdict, JobError> = match schedule.job {
            JobKind::BinlogArchive => {
                // The archive runs until told to stop: on SIGTERM, and when
                // another replica becomes the leader.
                let stop = ctx.cancel.clone();
                let watch = async {
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if self.shutting_down.load(Ordering::SeqCst)
                            || !self.leader.load(Ordering::SeqCst)
                        {
                            stop.cancel();
                        }
                    }
                };
                tokio::select! {
                    r = jobs::run_scheduled(&ctx, JobKind::BinlogArchive, &schedule.name, None) => r,
                    _ = watch => unreachable!("the watch loop never ends"),
                }
            }
            kind => jobs::run_scheduled(&ctx, kind, &schedule.name, schedule.plan.as_deref()).await,
        };
        result.unwrap_or_else(|e| Verdict::from(&e))
    }

    /// Runs once each schedule whose run was missed while no daemon led.
    async fn run_missed(self: &Arc<Self>) {
        let now = Utc::now();
        let mut due: Vec<Schedule> = self
            .schedules
            .values()
            .filter(|s| s.run_missed_on_start)
            .cloned()
            .collect();
        due.sort_by(|a, b| a.name.cmp(&b.name));
        for s in due {
            let last = self.last_run(&s.name).await.map(|l| l.started_at);
            if s.missed(last, now) {
                tracing::info!(job = %s.name, last = last.map(tracing::field::display), "a run was missed while the daemon was down; running it now");
                self.trigger(&s.name, "missed");
            }
        }
    }

    async fn refresh_newest(&self) {
        let catalog = Catalog::new(&self.store, &self.cfg.site, &self.cfg.site_prefix());
        match catalog.summaries().await {
            Ok(sets) => {
                self.metrics
                    .set_newest_set(sets.first().map(|m| m.started_at));
                self.metrics
                    .set_newest_missing_parts(sets.first().map_or(0, |m| m.failed_parts.len()));
                let drill =
                    crate::restore::drill::latest_report(&self.store, &self.cfg.site_prefix())
                        .await
                        .map(|r| metrics::LastDrill {
                            finished_at: r.finished_at,
                            ok: r.ok,
                            rto_seconds: r.rto_seconds,
                            rpo_seconds: r.rpo_seconds,
                        });
                self.metrics.set_last_drill(drill);
                let mut cache = self.segment_cache.lock().await;
                match crate::binlog::window::load_cached(
                    &self.store,
                    &self.cfg.binlog_prefix(),
                    &sets,
                    &mut cache,
                )
                .await
                {
                    Ok(w) => self.metrics.set_recoverable(metrics::Recoverable {
                        oldest: w.oldest,
                        newest: w.newest,
                        gaps: w.gaps.len(),
                        open_gaps: w.open_gaps,
                        archive_updated_at: w.archive_head.map(|h| h.updated_at),
                    }),
                    Err(e) => tracing::warn!(error = %e, "cannot read the binlog archive"),
                }
                self.ready.store(true, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list sets");
                self.ready.store(false, Ordering::SeqCst);
            }
        }
    }

    /// Who may start a run by hand: the holder of the trigger token when
    /// one is configured, else only a caller on this host (the port also
    /// serves probes and /metrics, which stay open).
    fn may_trigger(&self, req: &http::Request) -> bool {
        match &self.cfg.daemon.trigger_token {
            Some(token) => req
                .bearer
                .as_deref()
                .is_some_and(|b| constant_time_eq(b.as_bytes(), token.expose().as_bytes())),
            None => req.peer.ip().is_loopback(),
        }
    }

    async fn respond(self: Arc<Self>, req: http::Request) -> Response {
        let (method, path) = (req.method.clone(), req.path.clone());
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => Response::text(200, "ok\n"),
            ("GET", "/readyz") => {
                if self.ready.load(Ordering::SeqCst) && !self.shutting_down.load(Ordering::SeqCst) {
                    Response::text(200, "ready\n")
                } else {
                    Response::text(503, "not ready\n")
                }
            }
            ("GET", "/metrics") => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: format!(
                    "{}# HELP wpdr_daemon_leader 1 when this replica runs the jobs.\n# TYPE wpdr_daemon_leader gauge\nwpdr_daemon_leader{{}} {}\n",
                    self.metrics
                        .render(Utc::now(), self.shutting_down.load(Ordering::SeqCst)),
                    u8::from(self.leader.load(Ordering::SeqCst))
                ),
            },
            ("GET", "/jobs") => Response {
                status: 200,
                content_type: "application/json",
                body: serde_json::to_string_pretty(&self.metrics.snapshot()).unwrap_or_default(),
            },
            ("POST", p) if p.starts_with("/run/") && !self.may_trigger(&req) => Response::text(
                401,
                "a manual run needs Authorization: Bearer <token> (daemon.trigger_token_file / WPDR_DAEMON_TRIGGER_TOKEN), or, with no token configured, a request from this host\n",
            ),
            ("POST", p) if p.starts_with("/run/") => {
                match self.trigger(&p["/run/".len()..], "manual") {
                    Trigger::Started => Response::text(202, "started\n"),
                    Trigger::AlreadyRunning => Response::text(409, "already running\n"),
                    Trigger::Unknown => Response::text(404, "no such schedule\n"),
                    Trigger::ShuttingDown => Response::text(503, "shutting down\n"),
                Trigger::NotLeader => Response::text(409, "not the leader; ask the replica holding the Lease\n"),
                }
            }
            (_, "/healthz" | "/readyz" | "/metrics" | "/jobs") => {
                Response::text(405, "method not allowed\n")
            }
            _ => Response::text(404, "not found\n"),
        }
    }

    /// Waits for running jobs up to `grace`, then abandons what is left.
    async fn drain(&self, grace: Duration) {
        let handles: Vec<(String, JoinHandle<()>)> = match self.running.lock() {
            Ok(mut r) => r.drain().collect(),
            Err(p) => p.into_inner().drain().collect(),
        };
        let deadline = tokio::time::Instant::now() + grace;
        for (name, mut h) in handles {
            if h.is_finished() {
                continue;
            }
            tracing::info!(job = %name, "waiting for the running job to finish");
            match tokio::time::timeout_at(deadline, &mut h).await {
                Ok(_) => tracing::info!(job = %name, "finished before shutdown"),
                Err(_) => {
                    // Cancelling drops the run's futures, which aborts its uploads;
                    // the manifest, written last, is never written, so no partial
                    // set appears. A run that does not stop within seconds is aborted.
                    self.abandon.cancel();
                    if tokio::time::timeout(Duration::from_secs(5), &mut h)
                        .await
                        .is_err()
                    {
                        h.abort();
                        let _ = h.await;
                    }
                    tracing::warn!(job = %name, "abandoned at the end of the grace period; its set is incomplete and never listed");
                }
            }
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT. Returns once every run has drained.
pub async fn run(cfg: Config, store: Arc<Store>, opts: DaemonOptions) -> Result<(), DaemonError> {
    run_until(cfg, store, opts, shutdown_signal()).await
}

/// Runs the daemon until `shutdown` completes (tests use this in-process).
pub async fn run_until(
    cfg: Config,
    store: Arc<Store>,
    opts: DaemonOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let schedules = Schedule::load_dir(&opts.schedules_dir)?;
    if schedules.is_empty() {
        return Err(DaemonError::Schedule {
            file: opts.schedules_dir.clone(),
            problem: "no enabled schedules (*.yaml) found".into(),
        });
    }
    // Every schedule has its metrics before /metrics answers, so a scrape never
    // sees a daemon without its jobs.
    let metrics = Arc::new(Metrics::default());
    let now = Utc::now();
    for s in &schedules {
        metrics.with_job(&s.name, |m| {
            m.kind = s.job.as_str().to_string();
            m.next_run = s.next_after(now);
        });
    }
    let runner = Arc::new(Runner {
        cfg,
        store,
        metrics: metrics.clone(),
        schedules: schedules
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect(),
        running: Mutex::new(HashMap::new()),
        shutting_down: AtomicBool::new(false),
        ready: AtomicBool::new(false),
        leader: AtomicBool::new(opts.leader.is_none()),
        abandon: CancellationToken::new(),
        segment_cache: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: opts.listen,
            source,
        })?;
    let http_runner = runner.clone();
    let server = tokio::spawn(http::serve(
        listener,
        Arc::new(move |req| http_runner.clone().respond(req)),
    ));
    runner.refresh_newest().await;
    // The window moves while the binlog archive runs, with no job finishing:
    // refresh what /metrics reports from the store every half minute.
    let refresher = {
        let r = runner.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(refresh_every()).await;
                r.refresh_newest().await;
            }
        })
    };

    let mut scheduler = JobScheduler::new()
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    for s in &schedules {
        arm(&scheduler, runner.clone(), s.clone(), Utc::now()).await?;
        tracing::info!(job = %s.name, kind = s.job.as_str(), cron = %s.cron, timezone = %s.timezone, next = s.next_after(now).map(tracing::field::display), "scheduled");
    }
    let leader = opts.leader.map(Arc::new);
    let elector_task = match &leader {
        None => {
            runner.run_missed().await;
            None
        }
        Some(elector) => Some(tokio::spawn(keep_leading(runner.clone(), elector.clone()))),
    };
    scheduler
        .start()
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    tracing::info!(listen = %opts.listen, schedules = schedules.len(), "daemon running");

    shutdown.await;
    tracing::info!(
        grace_seconds = opts.grace.as_secs(),
        "shutdown requested: no new runs"
    );
    runner.shutting_down.store(true, Ordering::SeqCst);
    if let Err(e) = scheduler.shutdown().await {
        tracing::warn!(error = %e, "scheduler shutdown");
    }
    refresher.abort();
    runner.drain(opts.grace).await;
    if let Some(t) = elector_task {
        t.abort();
    }
    if let Some(elector) = &leader {
        if let Err(e) = elector.release().await {
            tracing::warn!(error = %e, "could not release the Lease; it expires on its own");
        }
    }
    server.abort();
    tracing::info!("daemon stopped");
    Ok(())
}

/// Adds the schedule's next run after `after` to the scheduler as a one-shot;
/// when it fires, it triggers the run and arms the one after. The time comes
/// from [`Schedule::next_after`] (the expression tokio-cron-scheduler parsed,
/// in the zone's offset at that instant), so firing and `next_run` agree.
fn arm<'a>(
    scheduler: &'a JobScheduler,
    runner: Arc<Runner>,
    schedule: Schedule,
    after: DateTime<Utc>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), DaemonError>> + Send + 'a>> {
    Box::pin(async move {
        let Some(at) = schedule.next_after(after) else {
            tracing::warn!(job = %schedule.name, cron = %schedule.cron, "the schedule has no future run");
            return Ok(());
        };
        // The scheduler stores whole seconds from now, rounded down: round
        // the wait up so a run never fires before its second.
        let wait_ms = (at - Utc::now()).num_milliseconds().max(0) as u64;
        let instant = std::time::Instant::now() + Duration::from_secs(wait_ms.div_ceil(1000));
        let job = Job::new_one_shot_at_instant_async(instant, move |_id, sched| {
            let runner = runner.clone();
            let schedule = schedule.clone();
            Box::pin(async move {
                runner.trigger(&schedule.name, "schedule");
                if runner.shutting_down.load(Ordering::SeqCst) {
                    return;
                }
                if let Err(e) = arm(&sched, runner.clone(), schedule.clone(), at).await {
                    tracing::error!(job = %schedule.name, error = %e, "cannot arm the next run");
                }
            })
        })
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
        scheduler
            .add(job)
            .await
            .map(|_| ())
            .map_err(|e| DaemonError::Scheduler(e.to_string()))
    })
}

/// Renews (or tries to take) the Lease for as long as the daemon runs. A
/// replica that cannot confirm its lease stops starting runs at once.
async fn keep_leading(runner: Arc<Runner>, elector: Arc<LeaderElector>) {
    loop {
        let leading = match elector.try_acquire_or_renew().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot confirm the Lease; not starting runs");
                false
            }
        };
        let was = runner.leader.swap(leading, Ordering::SeqCst);
        if leading && !was {
            tracing::info!(identity = elector.identity(), "became the leader");
            runner.run_missed().await;
        } else if !leading && was {
            tracing::warn!(
                identity = elector.identity(),
                "lost the Lease: no new runs on this replica"
            );
        }
        tokio::time::sleep(elector.renew_every()).await;
    }
}

/// How often /metrics' store-derived values are re-read
/// (WPDR_DAEMON_REFRESH_SECONDS, default 30).
fn refresh_every() -> std::time::Duration {
    let secs = std::env::var("WPDR_DAEMON_REFRESH_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(30);
    std::time::Duration::from_secs(secs)
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
    shutdown_signal().await
}

/// SIGTERM or Ctrl-C, with the handlers installed now rather than when the
/// future is first polled: a signal that arrives while the daemon is still
/// starting (its port already open) drains it instead of killing it.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, int) {
                (Some(mut term), Some(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (Some(mut term), None) => {
                    term.recv().await;
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
