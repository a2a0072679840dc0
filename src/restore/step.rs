//! The types the executor (`run`) and the steps (`steps/`) share: the
//! context a restore runs with, the environment one step runs in, its error
//! and its log. Neither side reaches into the other.

use super::plan::StepKind;
use super::targets::Targets;
use crate::catalog::{Catalog, Manifest};
use crate::config::Config;
use crate::exit::{Classify, ExitCode};
use crate::mysql::Endpoint;
use crate::secret::Secret;
use crate::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

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

/// Why a step failed, with the exit code the restore ends with.
#[derive(Debug, Clone)]
pub struct StepError {
    pub message: String,
    pub exit: ExitCode,
}

impl StepError {
    pub(crate) fn new(message: impl Into<String>, exit: ExitCode) -> Self {
        StepError {
            message: message.into(),
            exit,
        }
    }
    pub(crate) fn from<E: Classify + std::fmt::Display>(e: E) -> Self {
        StepError::new(e.to_string(), e.exit_code())
    }
}

/// Log lines of one step: kept in the journal, and traced as they come.
#[derive(Clone, Default)]
pub(crate) struct StepLog {
    step: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl StepLog {
    pub(crate) fn new(step: &str) -> Self {
        StepLog {
            step: step.to_string(),
            ..Default::default()
        }
    }

    pub(crate) fn line(&self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!(step = %self.step, "{text}");
        if let Ok(mut l) = self.lines.lock() {
            if l.len() < 200 {
                l.push(text);
            }
        }
    }
    pub(crate) fn take(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// What the executor gives a step: everything it may read, nothing of the
/// executor itself (steps are unit-tested with an environment of their own).
pub(crate) struct StepEnv<'a> {
    pub ctx: &'a RestoreContext,
    pub catalog: &'a Catalog<'a>,
    pub manifest: &'a Manifest,
    pub targets: &'a Targets,
    /// The summaries of the steps done before this one started, by kind
    /// (the checks read what the load verified and what the rewrite changed).
    pub earlier: BTreeMap<StepKind, serde_json::Value>,
    /// The step ran in an earlier attempt: what it left may be replaced.
    pub resumed: bool,
    pub drill: bool,
    pub has_cluster_step: bool,
    /// What the plan restores: checks look only at those components.
    pub kinds: BTreeSet<StepKind>,
    /// A point-in-time restore: the set is the newest before the point,
    /// the load replays the archive to it, the media is as it was then.
    pub pitr: Option<&'a crate::binlog::replay::PitrPlan>,
    /// ... and the mirror generations its media comes from (the journal's).
    pub media_at: Option<&'a crate::media::point::AsOf>,
    pub log: StepLog,
}

impl StepEnv<'_> {
    pub(crate) fn database(&self) -> Result<&(Endpoint, String), StepError> {
        self.targets
            .database
            .as_ref()
            .ok_or_else(|| StepError::new("restore.database is not configured", ExitCode::Config))
    }
}
