//! The control plane, once. Each job — backup, media sync, binlog archive,
//! prune, verify, restore, drill — is one function here, taking a
//! [`JobContext`] (config, store, a cancellation token, a progress sink) and
//! returning a typed report. The CLI (`commands/`) parses arguments and prints
//! these reports; the daemon schedules them and turns them into metrics; the
//! fleet controller's Jobs run the same functions. What a job does, in what
//! order, is written here and nowhere else; the bytes, rows and objects move
//! in the parts below (`mysql`, `binlog`, `media`, `cluster`, `store`).

pub mod backup;
pub mod binlog_archive;
pub mod binlog_prune;
pub mod media_sync;
pub mod prune;
pub mod restore;
pub mod status;
pub mod verify;

use crate::binlog::BinlogError;
use crate::catalog::{Catalog, CatalogError};
use crate::cluster::ClusterError;
use crate::config::{Config, ConfigError};
use crate::exit::{Classify, ExitCode};
use crate::media::MediaError;
use crate::mysql::MysqlError;
use crate::restore::plan::PlanError;
use crate::restore::run::RunError;
use crate::restore::RestoreError;
use crate::store::{Store, StoreError};
use serde::Deserialize;
use std::future::Future;
use std::sync::Arc;
pub use tokio_util::sync::CancellationToken;

/// The jobs a schedule can run (a daemon's schedule file, a Site's schedule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    Backup,
    Prune,
    VerifyLatest,
    MediaSync,
    /// `wpdr drill` with the built-in drill plan: restore the newest set into
    /// a throw-away namespace, check it, report, tear down.
    Drill,
    /// `wpdr binlog archive`: follows the primary's binary log until the
    /// daemon stops or loses leadership. Give it a frequent cron (every
    /// minute): a tick restarts it if it ended, and is skipped while it runs.
    BinlogArchive,
    /// `wpdr binlog prune`: the archive's retention on its own; what a
    /// shared server archive's workload runs (its sites only renew claims).
    BinlogPrune,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Prune => "prune",
            JobKind::VerifyLatest => "verify-latest",
            JobKind::MediaSync => "media-sync",
            JobKind::Drill => "drill",
            JobKind::BinlogArchive => "binlog-archive",
            JobKind::BinlogPrune => "binlog-prune",
        }
    }
}

/// Runs one scheduled job that ends on its own (everything but the binlog
/// archive, which follows the primary until it is cancelled): what the
/// daemon's schedules and the fleet's Jobs both call.
pub async fn run_scheduled(
    ctx: &JobContext,
    kind: JobKind,
    schedule: &str,
    plan: Option<&str>,
) -> Result<Verdict, JobError> {
    // Each job's future is boxed: together they would make this one
    // future as large as the largest, on a worker thread's small stack.
    match kind {
        JobKind::Backup => Box::pin(backup::backup(ctx, schedule))
            .await
            .map(|m| m.verdict()),
        JobKind::Prune => Box::pin(prune::prune(ctx, false))
            .await
            .map(|r| r.verdict()),
        JobKind::MediaSync => Box::pin(media_sync::sync(ctx, Default::default()))
            .await
            .map(|r| r.verdict()),
        JobKind::VerifyLatest => Box::pin(verify::verify(ctx, "latest", false))
            .await
            .map(|r| r.verdict()),
        JobKind::Drill => {
            let plan = crate::restore::run::load_plan(plan.unwrap_or("drill"))?;
            Box::pin(restore::drill(
                ctx,
                restore::DrillRequest {
                    set: "latest",
                    plan,
                    site_url: None,
                    keep: false,
                    point: None,
                },
            ))
            .await
            .map(|(report, _)| report.verdict())
        }
        JobKind::BinlogArchive => Box::pin(binlog_archive::archive(ctx, Default::default()))
            .await
            .map(|r| r.verdict()),
        JobKind::BinlogPrune => Box::pin(binlog_prune::binlog_prune(ctx, false))
            .await
            .map(|r| r.verdict()),
    }
}

/// Everything a job needs from its caller.
#[derive(Clone)]
pub struct JobContext {
    pub cfg: Config,
    pub store: Arc<Store>,
    /// Cancelled on SIGTERM/SIGINT (CLI), at the end of the daemon's grace
    /// period, or when the daemon loses its Lease. A cancelled job stops
    /// where it is: whatever it wrote is never part of a complete set.
    pub cancel: CancellationToken,
    pub progress: Progress,
}

impl JobContext {
    /// The context a deleting job runs in: with `store.prune_credentials` when
    /// they are set, so the keys of every other job need not be able to delete.
    pub(crate) async fn pruner(&self) -> Result<JobContext, JobError> {
        match &self.cfg.store {
            crate::config::StoreConfig::S3(s3) if s3.prune_credentials.is_some() => {
                let store = Store::open(&self.cfg.store.for_prune())
                    .await
                    .map_err(CatalogError::from)?
                    .with_keys(self.store.keys().clone());
                Ok(JobContext {
                    cfg: self.cfg.clone(),
                    store: Arc::new(store),
                    cancel: self.cancel.clone(),
                    progress: self.progress.clone(),
                })
            }
            _ => Ok(self.clone()),
        }
    }

    pub fn new(cfg: Config, store: Arc<Store>) -> Self {
        JobContext {
            cfg,
            store,
            cancel: CancellationToken::new(),
            progress: Progress::none(),
        }
    }

    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    pub fn catalog(&self) -> Catalog<'_> {
        Catalog::new(&self.store, &self.cfg.site, &self.cfg.site_prefix())
    }

    /// Runs `work` until it finishes or the job is cancelled; a cancelled
    /// job's future is dropped, which aborts its uploads and never writes
    /// the manifest (the commit) of a set.
    pub async fn cancellable<T, E: Into<JobError>>(
        &self,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, JobError> {
        // On the heap: a restore's future is large, and a daemon's worker
        // thread has a small stack.
        let work = Box::pin(work);
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(JobError::Cancelled),
            r = work => r.map_err(Into::into),
        }
    }
}

/// How far a job is. Sinks are cheap to call from any task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressEvent {
    /// The whole job's size in bytes, once it is known.
    Total(u64),
    /// Bytes of data read, written or checked.
    Bytes(u64),
    /// Objects finished, and their bytes.
    Objects { objects: u64, bytes: u64 },
    /// More objects found to belong to the job (its total grows as a
    /// listing streams).
    ObjectsFound(u64),
}

#[derive(Clone, Default)]
pub struct Progress(Option<Arc<dyn Fn(ProgressEvent) + Send + Sync>>);

impl Progress {
    pub fn new(sink: impl Fn(ProgressEvent) + Send + Sync + 'static) -> Self {
        Progress(Some(Arc::new(sink)))
    }

    pub fn none() -> Self {
        Progress(None)
    }

    pub fn emit(&self, event: ProgressEvent) {
        if let Some(sink) = &self.0 {
            sink(event);
        }
    }

    /// The byte counter the database dump and load report to.
    pub fn bytes_sink(&self) -> Arc<dyn Fn(u64) + Send + Sync> {
        let p = self.clone();
        Arc::new(move |n| p.emit(ProgressEvent::Bytes(n)))
    }

    /// What a database dump reports: its estimate as the total (a dump
    /// that starts over sends a new one), SQL bytes as progress.
    pub fn dump_sink(&self) -> crate::mysql::dump::Progress {
        let p = self.clone();
        Arc::new(move |e| {
            p.emit(match e {
                crate::mysql::dump::DumpProgress::Estimate(n) => ProgressEvent::Total(n),
                crate::mysql::dump::DumpProgress::Written(n) => ProgressEvent::Bytes(n),
            })
        })
    }

    /// The object counter the media mirror and restore report to.
    pub fn objects_sink(&self) -> crate::media::mirror::MediaProgress {
        let p = self.clone();
        Arc::new(move |e| {
            p.emit(match e {
                crate::media::mirror::MediaEvent::Found(n) => ProgressEvent::ObjectsFound(n),
                crate::media::mirror::MediaEvent::Done { objects, bytes } => {
                    ProgressEvent::Objects { objects, bytes }
                }
            })
        })
    }
}

/// How a finished job went, for a caller that does not know its report's
/// type: the CLI's exit code, the daemon's metrics, the controller's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub exit: ExitCode,
    /// A stable label a dashboard counts failures by; `None` when it succeeded.
    pub reason: Option<&'static str>,
    pub message: Option<String>,
    /// Bytes and objects the run moved or checked.
    pub bytes: u64,
    pub objects: u64,
}

impl Verdict {
    pub fn ok(bytes: u64, objects: u64) -> Self {
        Verdict {
            exit: ExitCode::Ok,
            reason: None,
            message: None,
            bytes,
            objects,
        }
    }

    pub fn failed(exit: ExitCode, reason: &'static str, message: impl Into<String>) -> Self {
        Verdict {
            exit,
            reason: Some(reason),
            message: Some(message.into()),
            bytes: 0,
            objects: 0,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.reason.is_none()
    }
}

/// Every job's report says how it went.
pub trait JobReport {
    fn verdict(&self) -> Verdict;
}

/// Any part's error, as a job returns it; the exit code and metric label
/// are the part's own.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Mysql(#[from] MysqlError),
    #[error(transparent)]
    Backup(Box<backup::BackupError>),
    #[error(transparent)]
    Binlog(#[from] BinlogError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Cluster(Box<ClusterError>),
    #[error(transparent)]
    Restore(Box<RestoreError>),
    #[error(transparent)]
    Run(Box<RunError>),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("interrupted: the job stopped before it finished; nothing it wrote is part of a complete set")]
    Cancelled,
}

/// The parts' largest errors are boxed: a job's `Result` stays small.
macro_rules! boxed_from {
    ($($variant:ident($ty:ty)),*) => {$(
        impl From<$ty> for JobError {
            fn from(e: $ty) -> Self {
                JobError::$variant(Box::new(e))
            }
        }
    )*};
}
boxed_from!(
    Backup(backup::BackupError),
    Cluster(ClusterError),
    Restore(RestoreError),
    Run(RunError)
);

impl JobError {
    fn inner(&self) -> Option<&dyn Classify> {
        Some(match self {
            JobError::Config(e) => e,
            JobError::Store(e) => e,
            JobError::Catalog(e) => e,
            JobError::Mysql(e) => e,
            JobError::Backup(e) => e.as_ref(),
            JobError::Binlog(e) => e,
            JobError::Media(e) => e,
            JobError::Cluster(e) => e.as_ref(),
            JobError::Restore(e) => e.as_ref(),
            JobError::Run(e) => e.as_ref(),
            JobError::Plan(e) => e,
            JobError::Cancelled => return None,
        })
    }
}

impl Classify for JobError {
    fn exit_code(&self) -> ExitCode {
        self.inner()
            .map_or(ExitCode::Interrupted, |e| e.exit_code())
    }
    fn metric_label(&self) -> &'static str {
        self.inner().map_or("cancelled", |e| e.metric_label())
    }
}

impl From<&JobError> for Verdict {
    fn from(e: &JobError) -> Self {
        Verdict::failed(e.exit_code(), e.metric_label(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    async fn context() -> (tempfile::TempDir, JobContext) {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!("store:\n  path: {}\n", dir.path().display());
        let cfg = Config::from_yaml(&yaml, &std::collections::HashMap::new()).unwrap();
        let store = Arc::new(Store::open_site(&cfg, None).await.unwrap());
        (dir, JobContext::new(cfg, store))
    }

    /// Sets its flag when dropped: the work was abandoned, not left running.
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_cancelled_job_drops_its_work_and_says_interrupted() {
        let (_dir, ctx) = context().await;
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        let cancel = ctx.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            cancel.cancel();
        });
        let r: Result<(), JobError> = ctx
            .cancellable(async move {
                let _guard = guard;
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                Ok::<_, StoreError>(())
            })
            .await;
        let e = r.unwrap_err();
        assert!(matches!(e, JobError::Cancelled));
        assert!(dropped.load(Ordering::SeqCst), "the work must be dropped");
        let v = Verdict::from(&e);
        assert_eq!(
            (v.exit, v.reason),
            (ExitCode::Interrupted, Some("cancelled"))
        );
    }

    #[tokio::test]
    async fn a_part_error_keeps_its_own_exit_code_and_label() {
        let (_dir, ctx) = context().await;
        let r: Result<(), JobError> = ctx
            .cancellable(async { Err(StoreError::NotFound { key: "k".into() }) })
            .await;
        let e = r.unwrap_err();
        let inner = StoreError::NotFound { key: "k".into() };
        assert_eq!(e.exit_code(), inner.exit_code());
        assert_eq!(e.metric_label(), inner.metric_label());
        // A job on an empty store: verify names the missing set.
        let e = verify::verify(&ctx, "latest", false).await.unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::SetNotFound, "{e}");
    }

    #[test]
    fn progress_sinks_forward_to_the_one_callback() {
        let bytes = Arc::new(AtomicU64::new(0));
        let objects = Arc::new(AtomicU64::new(0));
        let (b, o) = (bytes.clone(), objects.clone());
        let p = Progress::new(move |e| match e {
            ProgressEvent::Bytes(n) => {
                b.fetch_add(n, Ordering::SeqCst);
            }
            ProgressEvent::Objects { objects, bytes } => {
                o.fetch_add(objects, Ordering::SeqCst);
                b.fetch_add(bytes, Ordering::SeqCst);
            }
            ProgressEvent::Total(_) | ProgressEvent::ObjectsFound(_) => {}
        });
        p.bytes_sink()(10);
        p.objects_sink()(crate::media::mirror::MediaEvent::Done {
            objects: 2,
            bytes: 5,
        });
        assert_eq!(bytes.load(Ordering::SeqCst), 15);
        assert_eq!(objects.load(Ordering::SeqCst), 2);
        Progress::none().bytes_sink()(1); // no callback: nothing happens
    }

    #[test]
    fn exit_codes_round_trip_through_their_numbers() {
        for c in ExitCode::ALL {
            assert_eq!(ExitCode::from_code(c.code()), c);
        }
        assert_eq!(ExitCode::from_code(99), ExitCode::Internal);
    }
}
