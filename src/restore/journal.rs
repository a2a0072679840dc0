//! The restore journal: one JSON document per restore in the backup store
//! (`<site>/restores/<restore-id>.json`), rewritten whole after every step
//! changes state. It is what `--resume` reads (every step not `done` runs
//! again, nothing `done` is redone), what a failed restore shows (each
//! step's error and log), and where the next `--dry-run` finds how long each
//! step took last time. The store, not the new namespace: the namespace may
//! be what failed, and the store is what survives the outage.

use super::plan::{Plan, StepKind};
use crate::store::{Store, StoreError};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Failed,
    /// Not run because a step it waits for failed.
    Blocked,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub kind: StepKind,
    pub state: StepState,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Wall time of the run that finished it (the RTO share of this step).
    pub seconds: f64,
    /// How many times the step was started (more than one after a resume).
    pub runs: u32,
    /// What the step did (counts, names), for the report and later steps.
    #[serde(default)]
    pub summary: serde_json::Value,
    pub error: Option<String>,
    pub exit_code: Option<u8>,
    /// The step's own log lines, kept with a failure so it explains itself.
    #[serde(default)]
    pub log: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub restore_id: String,
    pub site: String,
    pub set_id: String,
    /// When the set's data was taken (for the RPO).
    pub set_taken_at: DateTime<Utc>,
    pub namespace: String,
    /// The address the restored site is given (rewritten into the data).
    pub site_url: Option<String>,
    pub drill: bool,
    /// A point-in-time restore's point: the database replayed to it, the
    /// media as it was then (a resume restores to the same point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<DateTime<Utc>>,
    /// With a point and a media step: the mirror generations chosen at the
    /// start, which the media step, the checks and a resume all use (a
    /// mirror run finishing mid-restore must not change what is checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_at: Option<crate::media::point::AsOf>,
    pub plan: Plan,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: RunStatus,
    /// Which process runs it now, e.g. `pid 4242 on node-3`.
    pub holder: String,
    pub runs: u32,
    pub steps: BTreeMap<String, StepRecord>,
}

impl Journal {
    pub fn step(&self, id: &str) -> Option<&StepRecord> {
        self.steps.get(id)
    }

    /// Steps in the plan's order.
    pub fn ordered_steps(&self) -> Vec<(&str, &StepRecord)> {
        self.plan
            .steps
            .iter()
            .filter_map(|s| self.steps.get(&s.id).map(|r| (s.id.as_str(), r)))
            .collect()
    }

    /// Wall time from the first start to the end (the measured RTO).
    pub fn total_seconds(&self) -> Option<f64> {
        self.finished_at
            .map(|f| (f - self.started_at).num_milliseconds() as f64 / 1000.0)
    }
}

pub fn journal_key(site_prefix: &str, restore_id: &str) -> String {
    format!(
        "{}/restores/{restore_id}.json",
        site_prefix.trim_end_matches('/')
    )
}

pub fn restores_prefix(site_prefix: &str) -> String {
    format!("{}/restores/", site_prefix.trim_end_matches('/'))
}

/// A restore id: sortable by time, unique enough for one site.
pub fn new_restore_id(now: DateTime<Utc>) -> String {
    format!(
        "r{}-{:04x}",
        now.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    )
}

pub fn valid_restore_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The journal of one running restore, written through on every change.
pub struct JournalHandle {
    store: Arc<Store>,
    key: String,
    inner: tokio::sync::Mutex<Journal>,
    /// Where the journal is kept once the store refused to take it
    /// (read-only credentials): on this machine, so `--resume` works here.
    local: tokio::sync::Mutex<Option<PathBuf>>,
}

/// The directory a journal goes to when the store is read-only:
/// `WPDR_JOURNAL_DIR`, else `wpdr-journals` in the temp directory.
pub fn local_dir() -> PathBuf {
    std::env::var_os("WPDR_JOURNAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("wpdr-journals"))
}

fn local_path(key: &str) -> PathBuf {
    local_dir().join(key.replace('/', "_"))
}

impl JournalHandle {
    pub fn new(store: Arc<Store>, site_prefix: &str, journal: Journal) -> Self {
        JournalHandle {
            key: journal_key(site_prefix, &journal.restore_id),
            store,
            inner: tokio::sync::Mutex::new(journal),
            local: tokio::sync::Mutex::new(None),
        }
    }

    pub async fn load(
        store: &Store,
        site_prefix: &str,
        restore_id: &str,
    ) -> Result<Option<Journal>, StoreError> {
        let key = journal_key(site_prefix, restore_id);
        // Kept locally when the store was read-only for the run.
        let local = local_path(&key);
        if let Ok(b) = tokio::fs::read(&local).await {
            if let Ok(j) = serde_json::from_slice(&b) {
                return Ok(Some(j));
            }
        }
        match store.get_bytes(&key).await {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StoreError::Io {
                    path: key.clone().into(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the restore journal is not valid JSON: {e}"),
                    ),
                }),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Changes the journal and writes it before returning, so what the
    /// store holds is never behind what was reported.
    pub async fn update(&self, f: impl FnOnce(&mut Journal)) -> Result<Journal, StoreError> {
        let mut j = self.inner.lock().await;
        f(&mut j);
        j.updated_at = Utc::now();
        let bytes = serde_json::to_vec_pretty(&*j).unwrap_or_default();
        let mut local = self.local.lock().await;
        if local.is_none() {
            match self
                .store
                .put_bytes(&self.key, Bytes::from(bytes.clone()))
                .await
            {
                Ok(_) => return Ok(j.clone()),
                Err(e) if e.is_write_refused() => {
                    let path = local_path(&self.key);
                    tracing::warn!(error = %e, journal = %path.display(), "the store is read-only for these credentials: the restore journal is kept on this machine (`restore --resume` works from here)");
                    *local = Some(path);
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(path) = local.as_ref() {
            let write = async {
                if let Some(dir) = path.parent() {
                    // Journals name databases, buckets and namespaces: this user's only.
                    let mut b = tokio::fs::DirBuilder::new();
                    b.recursive(true).mode(0o700);
                    b.create(dir).await?;
                }
                let tmp = path.with_extension("tmp");
                tokio::fs::write(&tmp, &bytes).await?;
                tokio::fs::rename(&tmp, path).await
            };
            write.await.map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(j.clone())
    }

    pub async fn snapshot(&self) -> Journal {
        self.inner.lock().await.clone()
    }
}

/// The journals of this site, newest first (unreadable ones skipped).
pub async fn list(store: &Store, site_prefix: &str) -> Result<Vec<Journal>, StoreError> {
    let mut objects = store.list(&restores_prefix(site_prefix)).await?;
    objects.sort_by(|a, b| b.key.cmp(&a.key));
    let mut out = Vec::new();
    for o in objects.iter().filter(|o| o.key.ends_with(".json")) {
        if let Ok(b) = store.get_bytes(&o.key).await {
            if let Ok(j) = serde_json::from_slice::<Journal>(&b) {
                out.push(j);
            }
        }
    }
    Ok(out)
}

/// How long each step of the newest successful run of `plan_name` took.
pub fn last_durations(journals: &[Journal], plan_name: &str) -> BTreeMap<String, f64> {
    journals
        .iter()
        .find(|j| j.plan.name == plan_name && j.status == RunStatus::Succeeded)
        .map(|j| {
            j.steps
                .iter()
                .map(|(id, s)| (id.clone(), s.seconds))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_ids_sort_by_time_and_validate() {
        let a = new_restore_id("2026-11-26T01:00:00Z".parse().unwrap());
        let b = new_restore_id("2026-11-26T02:00:00Z".parse().unwrap());
        assert!(a < b && valid_restore_id(&a), "{a} {b}");
        assert!(!valid_restore_id("../etc"));
        assert!(!valid_restore_id(""));
    }
}
