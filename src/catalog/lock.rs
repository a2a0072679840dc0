//! One backup per site at a time.
//!
//! The lock is an object created with put-if-absent holding who holds it and
//! until when. The holder renews it every third of its TTL; a holder that
//! crashed stops renewing and the lock expires. A holder on this same host
//! whose process is gone is recognised at once, so a rerun after `kill -9`
//! need not wait for the TTL.
//!
//! Fencing: a holder that stalls (SIGSTOP, a suspended VM, a starved node)
//! past its lease may be taken over while it cannot notice. Every holder
//! carries a [`Fence`]: its lease on the local monotonic clock (three
//! quarters of the TTL from the last renewal that started in time) and a
//! flag the renewer sets when it finds the lock taken. Writers check it
//! before each write and confirm it against the store before each commit,
//! so a holder that wakes up after losing its lock stops without committing
//! anything; its renewer never writes the lock back once the lease ran out.
//! On a local store every read-check-write of the lock runs under an
//! exclusive `flock`, so a takeover is atomic there.

use super::CatalogError;
use crate::store::{Store, StoreError};
use bytes::Bytes;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    /// Set when the holder let go: the lock object stays (the writing
    /// side's credentials may not delete), marked free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<DateTime<Utc>>,
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
        if self.released_at.is_some() || self.expires_at < now {
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

/// A holder's proof that its lock is still its own; see the module docs.
#[derive(Clone)]
pub struct Fence {
    state: Arc<FenceState>,
}

struct FenceState {
    site: String,
    purpose: String,
    key: String,
    token: String,
    ttl: Duration,
    lease_until: Mutex<Instant>,
    /// Why the lock was lost, once it was (the first reason found).
    why_lost: Mutex<Option<String>>,
}

impl Fence {
    fn new(info: &LockInfo, key: &str, site: &str, ttl_seconds: u64, started: Instant) -> Fence {
        let ttl = Duration::from_secs(ttl_seconds);
        Fence {
            state: Arc::new(FenceState {
                site: site.to_string(),
                purpose: info.purpose.clone(),
                key: key.to_string(),
                token: info.token.clone(),
                ttl,
                lease_until: Mutex::new(started + lease(ttl)),
                why_lost: Mutex::new(None),
            }),
        }
    }

    /// The reason the lock was lost, if it was.
    fn why_lost(&self) -> Option<String> {
        match self.state.why_lost.lock() {
            Ok(w) => w.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Records that the lock is lost (the first reason stays) and returns
    /// the error writers report.
    fn lose(&self, why: impl Into<String>) -> CatalogError {
        let why = match self.state.why_lost.lock() {
            Ok(mut w) => w.get_or_insert(why.into()).clone(),
            Err(p) => p.into_inner().get_or_insert(why.into()).clone(),
        };
        CatalogError::LockLost {
            site: self.state.site.clone(),
            purpose: self.state.purpose.clone(),
            detail: why,
        }
    }

    fn lease_until(&self) -> Instant {
        match self.state.lease_until.lock() {
            Ok(l) => *l,
            Err(p) => *p.into_inner(),
        }
    }

    fn extend(&self, from: Instant) {
        if let Ok(mut l) = self.state.lease_until.lock() {
            *l = (*l).max(from + lease(self.state.ttl));
        }
    }

    /// Whether this holder may still write: not taken over as far as the
    /// renewer knows, and the lease not run out on the local clock. Cheap:
    /// called before each write.
    pub fn check(&self) -> Result<(), CatalogError> {
        if let Some(why) = self.why_lost() {
            return Err(self.lose(why));
        }
        let now = Instant::now();
        let until = self.lease_until();
        if now >= until {
            return Err(self.lose(format!(
                "its lease ran out {:.1}s ago without a renewal: the process was stalled",
                (now - until).as_secs_f64()
            )));
        }
        Ok(())
    }

    /// [`check`](Self::check), then the lock object itself read back: still
    /// this holder's token. Called right before a commit.
    pub async fn confirm(&self, store: &Store) -> Result<(), CatalogError> {
        self.check()?;
        match read_lock(store, &self.state.key).await? {
            Some(Some(current)) if current.token == self.state.token => self.check(),
            Some(Some(other)) => Err(self.lose(format!("taken over: {}", other.describe()))),
            _ => Err(self.lose("the lock object is gone")),
        }
    }
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("key", &self.state.key)
            .field("purpose", &self.state.purpose)
            .field("lost", &self.why_lost())
            .finish()
    }
}

/// How long after a renewal started a holder still trusts its lock: three
/// quarters of the TTL, so that it stops writing well before another run,
/// reading the lock's wall-clock expiry, may take over.
fn lease(ttl: Duration) -> Duration {
    ttl * 3 / 4
}

/// Held while a backup runs; renews the lock in the background and releases it on drop.
pub struct LockGuard {
    info: LockInfo,
    key: String,
    fence: Fence,
    stop: Arc<Notify>,
    renewer: Option<JoinHandle<()>>,
    released: bool,
}

impl LockGuard {
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// The fence writers check before each write and confirm before a commit.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Releases the lock now (only if it is still ours) by marking it
    /// free: a release needs no delete permission.
    pub async fn release(mut self, store: &Store) -> Result<(), CatalogError> {
        self.stop.notify_one();
        if let Some(h) = self.renewer.take() {
            let _ = h.await;
        }
        self.released = true;
        let key = self.key.clone();
        let token = self.info.token.clone();
        with_local_mutex(store, &key, || async {
            if let Ok(b) = store.get_bytes(&key).await {
                if let Ok(mut current) = serde_json::from_slice::<LockInfo>(&b) {
                    if current.token == token {
                        current.released_at = Some(Utc::now());
                        store.put_bytes(&key, encode(&key, &current)?).await?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Starts renewing in the background. The store is shared with the task.
    pub fn keep_alive(&mut self, store: Arc<Store>, ttl_seconds: u64) {
        let key = self.key.clone();
        let mut info = self.info.clone();
        let stop = self.stop.clone();
        let fence = self.fence.clone();
        self.renewer = Some(tokio::spawn(async move {
            let every = Duration::from_secs((ttl_seconds / 3).max(1));
            loop {
                tokio::select! {
                    _ = stop.notified() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let started = Instant::now();
                // After a stall past the lease another run may hold the lock
                // (or be taking it): never write it back, stop trusting it.
                if let Err(e) = fence.check() {
                    tracing::error!(error = %e, "the lock's lease ran out; this run stops writing");
                    return;
                }
                let renewed = with_local_mutex(&store, &key, || async {
                    match read_lock(&store, &key).await? {
                        Some(Some(current)) if current.token == info.token => {}
                        Some(Some(other)) => {
                            return Ok(Renewal::TakenBy(other.describe()));
                        }
                        _ => return Ok(Renewal::TakenBy("nobody (the lock is gone)".into())),
                    }
                    info.expires_at = Utc::now() + ChronoDuration::seconds(ttl_seconds as i64);
                    store.put_bytes(&key, encode(&key, &info)?).await?;
                    Ok(Renewal::Renewed)
                })
                .await;
                match renewed {
                    Ok(Renewal::Renewed) => fence.extend(started),
                    Ok(Renewal::TakenBy(holder)) => {
                        tracing::error!(%holder, "the lock was taken over by another run; this run stops writing and commits nothing more");
                        let _ = fence.lose(format!("taken over: {holder}"));
                        return;
                    }
                    Err(e) => {
                        // The lease runs out on its own if this keeps failing.
                        tracing::warn!(error = %e, "could not renew the lock");
                    }
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

enum Renewal {
    Renewed,
    TakenBy(String),
}

/// Runs `f` holding an exclusive `flock` on `<key>.mutex` when the store is
/// a local directory (every lock read-check-write there is then atomic); on
/// S3 it just runs `f`.
async fn with_local_mutex<T, F, Fut>(store: &Store, key: &str, f: F) -> Result<T, CatalogError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, CatalogError>>,
{
    let Some(local) = store.local() else {
        return f().await;
    };
    let path = local.root().join(format!("{key}.mutex"));
    let mutex = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        // SAFETY: flock on a descriptor this function owns.
        let r = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(file)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))
    .and_then(|r| r)
    .map_err(|e| StoreError::Io {
        path: local.root().join(key),
        source: e,
    })?;
    let result = f().await;
    // Closing the descriptor releases the flock.
    drop(mutex);
    result
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

/// The lock's holder, if it is held (a released lock is no holder).
pub(super) async fn current(store: &Store, key: &str) -> Result<Option<LockInfo>, StoreError> {
    Ok(read_lock(store, key)
        .await?
        .flatten()
        .filter(|l| l.released_at.is_none()))
}

fn encode(key: &str, info: &LockInfo) -> Result<Bytes, StoreError> {
    serde_json::to_vec(info)
        .map(Bytes::from)
        .map_err(|e| StoreError::S3 {
            op: "encode lock",
            key: key.to_string(),
            detail: e.to_string(),
        })
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
        let started = Instant::now();
        let attempt = with_local_mutex(store, key, || {
            try_acquire(store, key, site, ttl_seconds, purpose, &host, started)
        })
        .await?;
        if let Some(guard) = attempt {
            return Ok(guard);
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

/// One attempt: `Ok(None)` when another run won a race for the lock.
async fn try_acquire(
    store: &Store,
    key: &str,
    site: &str,
    ttl_seconds: u64,
    purpose: &str,
    host: &str,
    started: Instant,
) -> Result<Option<LockGuard>, CatalogError> {
    {
        let now = Utc::now();
        // Look first: a live holder is reported whether or not the store
        // supports conditional writes.
        // A free, stale or unreadable lock is overwritten (never deleted:
        // the writing side may hold no delete permission); the read-back
        // below settles a race between two takers.
        let existing = read_lock(store, key).await?;
        match &existing {
            Some(Some(holder)) if !holder.is_stale(now, host) => {
                return Err(CatalogError::Locked {
                    site: site.to_string(),
                    holder: holder.describe(),
                    expires_at: holder.expires_at,
                });
            }
            Some(Some(holder)) if holder.released_at.is_none() => {
                tracing::warn!(holder = %holder.describe(), "taking over a stale backup lock");
            }
            Some(None) => tracing::warn!(%key, "replacing an unreadable backup lock"),
            Some(Some(_)) | None => {}
        }
        let info = LockInfo {
            token: format!("{:032x}", rand::random::<u128>()),
            host: host.to_string(),
            pid: std::process::id(),
            purpose: purpose.to_string(),
            acquired_at: now,
            expires_at: now + ChronoDuration::seconds(ttl_seconds as i64),
            released_at: None,
        };
        let body = encode(key, &info)?;
        if existing.is_some() {
            store.put_bytes(key, body).await?;
        } else if !store.put_if_absent(key, body).await? {
            return Ok(None);
        }
        if store.local().is_none() {
            tokio::time::sleep(S3_SETTLE).await;
        }
        if let Some(Some(holder)) = read_lock(store, key).await? {
            if holder.token == info.token {
                let fence = Fence::new(&info, key, site, ttl_seconds, started);
                return Ok(Some(LockGuard {
                    info,
                    key: key.to_string(),
                    fence,
                    stop: Arc::new(Notify::new()),
                    renewer: None,
                    released: false,
                }));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    #[tokio::test]
    async fn a_holder_past_its_lease_is_fenced_and_its_release_spares_the_new_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::from(LocalStore::open(dir.path()).await.unwrap());
        let a = acquire(&store, "s/lock.json", "s", 1, "backup")
            .await
            .unwrap();
        let fence = a.fence();
        fence.check().unwrap();
        fence.confirm(&store).await.unwrap();
        // No renewal (a stall): the lease runs out before the lock expires.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(matches!(fence.check(), Err(CatalogError::LockLost { .. })));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let b = acquire(&store, "s/lock.json", "s", 60, "backup")
            .await
            .unwrap();
        let err = fence.confirm(&store).await.unwrap_err().to_string();
        assert!(err.contains("lost its backup lock"), "{err}");
        a.release(&store).await.unwrap();
        let now = current(&store, "s/lock.json").await.unwrap().unwrap();
        assert_eq!(now.token, b.info().token);
    }

    /// A stall blocks the whole process (here: the runtime's only thread),
    /// renewer included; once it runs again it must not write the lock back.
    #[tokio::test(flavor = "current_thread")]
    async fn a_renewer_that_wakes_after_its_lease_never_writes_the_lock_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::from(LocalStore::open(dir.path()).await.unwrap()));
        let mut a = acquire(&store, "s/lock.json", "s", 2, "backup")
            .await
            .unwrap();
        a.keep_alive(store.clone(), 2);
        let fence = a.fence();
        std::thread::sleep(Duration::from_millis(2300));
        let b = acquire(&store, "s/lock.json", "s", 60, "backup")
            .await
            .unwrap();
        // The renewer's timer is long due: let it run.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = current(&store, "s/lock.json").await.unwrap().unwrap();
        assert_eq!(
            now.token,
            b.info().token,
            "the stale renewer wrote its lock back"
        );
        assert!(fence.check().is_err());
    }

    #[tokio::test]
    async fn second_holder_is_refused_and_stale_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::from(LocalStore::open(dir.path()).await.unwrap());
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
            released_at: None,
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
        let store = Store::from(LocalStore::open(dir.path()).await.unwrap());
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
            released_at: None,
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
