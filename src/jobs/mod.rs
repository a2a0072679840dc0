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
use std::future::Future;
use std::sync::Arc;
pub use tokio_util::sync::CancellationToken;

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

    /// The object counter the media mirror and restore report to.
    pub fn objects_sink(&self) -> crate::media::mirror::MediaProgress {
        let p = self.clone();
        Arc::new(move |objects, bytes| p.emit(ProgressEvent::Objects { objects, bytes }))
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
