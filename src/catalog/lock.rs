//! One backup per site at a time.
//!
//! The lock is an object created with put-if-absent holding who holds it and
//! until when. The holder renews it every third of its TTL; a holder that
//! crashed stops renewing and the lock expires. A holder on this same host
//! whose process is gone is recognised at once, so a rerun after `kill -9`
//! need not wait for the TTL.

use super::CatalogError;
use crate::store::{Store, StoreError};
use bytes::Bytes;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub token: String,
    pub host: String,
    pub pid: u32,
    pub purpose: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl LockInfo {
    fn describe(&self) -> String {
        format!(
            "{} by pid {} on {} since {}",
            self.purpose, self.pid, self.host, self.acquired_at
        )
    }

    /// True when the holder can no longer be running.
    fn is_stale(&self, now: DateTime<Utc>, this_host: &str) -> bool {
        if self.expires_at < now {
            return true;
        }
        self.host == this_host && !process_alive(self.pid)
    }
}

fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    // Signal 0 checks existence without sending anything.
    // SAFETY: kill with signal 0 has no effect on the target process.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn this_host() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Held while a backup runs; renews the lock in the background and releases it on drop.
pub struct LockGuard {
    info: LockInfo,
    key: String,
    stop: Arc<Notify>,
    renewer: Option<JoinHandle<()>>,
    released: bool,
}

impl LockGuard {
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// Releases the lock now (only if it is still ours).
    pub async fn release(mut self, store: &Store) -> Result<(), CatalogError> {
        self.stop.notify_one();
        if let Some(h) = self.renewer.take() {
            let _ = h.await;
        }
        self.released = true;
        if let Ok(b) = store.get_bytes(&self.key).await {
            if let Ok(current) = serde_json::from_slice::<LockInfo>(&b) {
                if current.token == self.info.token {
                    store.delete(&self.key).await?;
                }
            }
        }
        Ok(())
    }

    /// Starts renewing in the background. The store is shared with the task.
    pub fn keep_alive(&mut self, store: Arc<Store>, ttl_seconds: u64) {
        let key = self.key.clone();
        let mut info = self.info.clone();
        let stop = self.stop.clone();
        self.renewer = Some(tokio::spawn(async move {
            let every = Duration::from_secs((ttl_seconds / 3).max(1));
            loop {
                tokio::select! {
                    _ = stop.notified() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                // Renew only while the lock is still ours: after a long stall
                // another run may have taken it over, and must not be clobbered.
                match read_lock(&store, &key).await {
                    Ok(Some(Some(current))) if current.token == info.token => {}
                    Ok(_) => {
                        tracing::error!("the backup lock was taken over by another run; this run's set will not be trusted by it");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read the backup lock to renew it");
                        continue;
                    }
                }
                info.expires_at = Utc::now() + ChronoDuration::seconds(ttl_seconds as i64);
                match serde_json::to_vec(&info) {
                    Ok(body) => {
                        if let Err(e) = store.put_bytes(&key, Bytes::from(body)).await {
                            tracing::warn!(error = %e, "could not renew the backup lock");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not encode the backup lock"),
                }
            }
        }));
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(h) = self.renewer.take() {
            h.abort();
        }
        if !self.released {
            tracing::debug!(key = %self.key, "lock dropped without release; it expires on its own");
        }
    }
}

/// How long an S3 writer waits before reading its lock back. S3-compatible
/// stores do not all honour `If-None-Match` (Garage ignores it), so two runs
/// that both found no lock may both write one; after this pause the last
/// write is visible to both and only its writer goes on.
const S3_SETTLE: Duration = Duration::from_millis(750);

async fn read_lock(store: &Store, key: &str) -> Result<Option<Option<LockInfo>>, StoreError> {
    match store.get_bytes(key).await {
        Ok(b) => Ok(Some(serde_json::from_slice::<LockInfo>(&b).ok())),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) async fn current(store: &Store, key: &str) -> Result<Option<LockInfo>, StoreError> {
    Ok(read_lock(store, key).await?.flatten())
}

pub(super) async fn acquire(
    store: &Store,
    key: &str,
    site: &str,
    ttl_seconds: u64,
    purpose: &str,
) -> Result<LockGuard, CatalogError> {
    let host = this_host();
    for _attempt in 0..3 {
        let now = Utc::now();
        // Look first: a live holder is reported whether or not the store
        // supports conditional writes.
        match read_lock(store, key).await? {
            Some(Some(holder)) if !holder.is_stale(now, &host) => {
                return Err(CatalogError::Locked {
                    site: site.to_string(),
                    holder: holder.describe(),
                    expires_at: holder.expires_at,
                });
            }
            Some(Some(holder)) => {
                tracing::warn!(holder = %holder.describe(), "taking over a stale backup lock");
                store.delete(key).await?;
            }
            Some(None) => {
                tracing::warn!(%key, "removing an unreadable backup lock");
                store.delete(key).await?;
            }
            None => {}
        }
        let info = LockInfo {
            token: format!("{:032x}", rand::random::<u128>()),
            host: host.clone(),
            pid: std::process::id(),
            purpose: purpose.to_string(),
            acquired_at: now,
            expires_at: now + ChronoDuration::seconds(ttl_seconds as i64),
        };
        let body = serde_json::to_vec(&info).map_err(|e| StoreError::S3 {
            op: "encode lock",
            key: key.to_string(),
            detail: e.to_string(),
        })?;
        if !store.put_if_absent(key, Bytes::from(body)).await? {
            continue;
        }
        if matches!(store, Store::S3(_)) {
            tokio::time::sleep(S3_SETTLE).await;
        }
        if let Some(Some(holder)) = read_lock(store, key).await? {
            if holder.token == info.token {
                return Ok(LockGuard {
                    info,
                    key: key.to_string(),
                    stop: Arc::new(Notify::new()),
                    renewer: None,
                    released: false,
                });
            }
        }
    }
    // Lost every race: report whoever holds it now.
    match read_lock(store, key).await? {
        Some(Some(holder)) => Err(CatalogError::Locked {
            site: site.to_string(),
            holder: holder.describe(),
            expires_at: holder.expires_at,
        }),
        _ => Err(CatalogError::Locked {
            site: site.to_string(),
            holder: "a competing run (the lock changed hands while we tried)".into(),
            expires_at: Utc::now(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    #[tokio::test]
    async fn second_holder_is_refused_and_stale_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Local(LocalStore::open(dir.path()).await.unwrap());
        let g = acquire(&store, "s/lock.json", "s", 60, "backup")
            .await
            .unwrap();
        let err = acquire(&store, "s/lock.json", "s", 60, "backup").await;
        assert!(matches!(err, Err(CatalogError::Locked { .. })));
        g.release(&store).await.unwrap();
        let g2 = acquire(&store, "s/lock.json", "s", 60, "backup")
            .await
            .unwrap();
        drop(g2); // not released: the lock stays, held by our live pid

        // An expired lock from a process elsewhere is taken over.
        let stale = LockInfo {
            token: "old".into(),
            host: "elsewhere".into(),
            pid: 1,
            purpose: "backup".into(),
            acquired_at: Utc::now() - ChronoDuration::seconds(600),
            expires_at: Utc::now() - ChronoDuration::seconds(1),
        };
        store
            .put_bytes(
                "s/lock.json",
                Bytes::from(serde_json::to_vec(&stale).unwrap()),
            )
            .await
            .unwrap();
        acquire(&store, "s/lock.json", "s", 60, "backup")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn lock_of_a_dead_local_process_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Local(LocalStore::open(dir.path()).await.unwrap());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = LockInfo {
            token: "dead".into(),
            host: this_host(),
            pid,
            purpose: "backup".into(),
            acquired_at: Utc::now(),
            expires_at: Utc::now() + ChronoDuration::seconds(600),
        };
        store
            .put_bytes(
                "s/lock.json",
                Bytes::from(serde_json::to_vec(&dead).unwrap()),
            )
            .await
            .unwrap();
        acquire(&store, "s/lock.json", "s", 60, "backup")
            .await
            .unwrap();
    }
}
