//! Backup sets: ids, manifests, listing, the per-site lock and verification.
//!
//! Layout in the store: `<prefix>/<site>/sets/<set-id>/` holds a set's
//! artifacts and, once complete, its `manifest.json`. A directory without a
//! manifest is an interrupted run: never listed, shown or restored.

mod lock;
pub mod manifest;
pub mod prune;
pub mod retention;

pub use lock::{Fence, LockGuard, LockInfo};
pub use manifest::*;

use crate::exit::{Classify, ExitCode};
use crate::store::{hash_object, Store, StoreError};
use crate::trust::{Signature, TrustError};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("backup set '{id}' does not exist for site '{site}'. Run `wpdr sets list` to see the sets there are.")]
    SetNotFound { id: String, site: String },
    #[error("backup set '{id}' is incomplete (its run was interrupted before the manifest was written) and cannot be used. Pick another from `wpdr sets list`.")]
    SetIncomplete { id: String },
    #[error("site '{site}' has no complete backup set yet. Run `wpdr backup` first.")]
    NoSets { site: String },
    #[error("the manifest of set '{id}' is unreadable: {detail}. The set cannot be trusted; use an earlier one.")]
    ManifestInvalid { id: String, detail: String },
    #[error("set '{id}' uses format version {found}, and this wpdr reads only up to {supported}. Upgrade wpdr to restore it.")]
    UnsupportedFormat {
        id: String,
        found: u32,
        supported: u32,
    },
    #[error("another backup of site '{site}' is running: {holder}. Wait for it, or if it is dead, the lock expires at {expires_at}.")]
    Locked {
        site: String,
        holder: String,
        expires_at: DateTime<Utc>,
    },
    #[error("this run lost its {purpose} lock on site '{site}' ({detail}): it stopped before writing anything more, and nothing it wrote since is part of a set or of the binlog archive. Another run took over after this one stalled (paused, suspended or starved) past its lease; check that one's result.")]
    LockLost {
        site: String,
        purpose: String,
        detail: String,
    },
    #[error("'{id}' is not a valid set id (expected e.g. 20261125T192224Z-3fa1 or 'latest')")]
    BadSetId { id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// A set's manifest signature, beside `manifest.json`.
pub const SIGNATURE: &str = "manifest.sig";

impl Classify for CatalogError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CatalogError::SetNotFound { .. }
            | CatalogError::SetIncomplete { .. }
            | CatalogError::NoSets { .. }
            | CatalogError::BadSetId { .. } => ExitCode::SetNotFound,
            CatalogError::ManifestInvalid { .. } | CatalogError::UnsupportedFormat { .. } => {
                ExitCode::Integrity
            }
            CatalogError::Locked { .. } | CatalogError::LockLost { .. } => ExitCode::Locked,
            CatalogError::Store(e) => e.exit_code(),
            CatalogError::Trust(e) => e.exit_code(),
        }
    }
    fn metric_label(&self) -> &'static str {
        match self {
            CatalogError::SetNotFound { .. } | CatalogError::NoSets { .. } => "set_not_found",
            CatalogError::SetIncomplete { .. } => "set_incomplete",
            CatalogError::ManifestInvalid { .. } => "manifest_invalid",
            CatalogError::UnsupportedFormat { .. } => "unsupported_format",
            CatalogError::Locked { .. } => "locked",
            CatalogError::LockLost { .. } => "lock_lost",
            CatalogError::BadSetId { .. } => "bad_set_id",
            CatalogError::Store(e) => e.metric_label(),
            CatalogError::Trust(e) => e.metric_label(),
        }
    }
}

/// A new set id: UTC time to the second (so ids sort by time) and a random
/// suffix (so two runs in one second cannot collide).
pub fn new_set_id(now: DateTime<Utc>) -> String {
    format!(
        "{}-{:04x}",
        now.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    )
}

/// Checks the shape of a set id before it is used in a store key.
pub fn valid_set_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 21
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes[16] == b'-'
        && bytes[..8].iter().all(u8::is_ascii_digit)
        && bytes[9..15].iter().all(u8::is_ascii_digit)
        && bytes[17..].iter().all(|b| b.is_ascii_hexdigit())
}

/// What a scan of the catalog keeps of each set: one line of `sets list`,
/// and all a window, a retention decision or a status needs. Never the
/// table and artifact lists: a site of thousands of tables writes manifests
/// of megabytes, and a scan holds one manifest at a time.
#[derive(Debug, Clone, Serialize)]
pub struct SetSummary {
    pub id: String,
    pub schedule: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub bytes: u64,
    pub artifacts: usize,
    pub tables: usize,
    pub rows: u64,
    /// `part: reason` of each part a partial set lacks; empty when complete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_parts: Vec<String>,
    /// The same parts as the manifest records them.
    #[serde(skip)]
    pub parts_missing: Vec<manifest::FailedPart>,
    /// When the database snapshot was taken.
    pub snapshot_at: DateTime<Utc>,
    /// Where a point-in-time replay after this set starts (None: it cannot be a base).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// Object Lock: no object of the set can be deleted before this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retained_until: Option<DateTime<Utc>>,
}

impl From<&Manifest> for SetSummary {
    fn from(m: &Manifest) -> Self {
        SetSummary {
            id: m.set_id.clone(),
            schedule: m.schedule.clone(),
            started_at: m.started_at,
            finished_at: m.finished_at,
            bytes: m.total_bytes(),
            artifacts: m.artifacts.len(),
            tables: m.database.as_ref().map_or(0, |d| d.tables.len()),
            rows: m
                .database
                .as_ref()
                .map_or(0, |d| d.tables.iter().map(|t| t.rows).sum()),
            failed_parts: m
                .failed_parts
                .iter()
                .map(|p| format!("{}: {}", p.part, p.reason))
                .collect(),
            parts_missing: m.failed_parts.clone(),
            snapshot_at: m.snapshot_time(),
            position: m.replay_position(),
            retained_until: m.retained_until,
        }
    }
}

/// What `verify` found for one artifact.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ArtifactProblem {
    Missing {
        path: String,
    },
    SizeMismatch {
        path: String,
        expected: u64,
        found: u64,
    },
    ChecksumMismatch {
        path: String,
        expected: String,
        found: String,
    },
    /// Stored intact, but it does not open or decompress (`verify --deep`).
    Unreadable {
        path: String,
        detail: String,
    },
}

impl ArtifactProblem {
    /// Compares what was read with what the manifest recorded.
    pub fn check(a: &Artifact, size: u64, sha256: &str) -> Option<ArtifactProblem> {
        if size != a.size {
            Some(ArtifactProblem::SizeMismatch {
                path: a.path.clone(),
                expected: a.size,
                found: size,
            })
        } else if sha256 != a.sha256 {
            Some(ArtifactProblem::ChecksumMismatch {
                path: a.path.clone(),
                expected: a.sha256.clone(),
                found: sha256.to_string(),
            })
        } else {
            None
        }
    }
}

impl std::fmt::Display for ArtifactProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArtifactProblem::Missing { path } => write!(f, "{path}: missing"),
            ArtifactProblem::Unreadable { path, detail } => write!(f, "{path}: {detail}"),
            ArtifactProblem::SizeMismatch {
                path,
                expected,
                found,
            } => write!(f, "{path}: {found} bytes, the manifest says {expected}"),
            ArtifactProblem::ChecksumMismatch {
                path,
                expected,
                found,
            } => write!(f, "{path}: SHA-256 {found}, the manifest says {expected}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub set_id: String,
    pub artifacts_checked: usize,
    pub bytes_checked: u64,
    pub problems: Vec<ArtifactProblem>,
    /// Whether every compressed artifact was also opened and decompressed
    /// to its end (zstd's content checksums checked), not only hashed.
    pub deep: bool,
    /// Who wrote the manifest, as checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::trust::Verdict>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub struct Catalog<'a> {
    store: &'a Store,
    site: String,
    site_prefix: String,
}

impl<'a> Catalog<'a> {
    pub fn new(store: &'a Store, site: &str, site_prefix: &str) -> Self {
        Catalog {
            store,
            site: site.to_string(),
            site_prefix: site_prefix.trim_end_matches('/').to_string(),
        }
    }

    pub fn store(&self) -> &Store {
        self.store
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    pub fn sets_prefix(&self) -> String {
        format!("{}/sets/", self.site_prefix)
    }

    /// The store key of a file inside a set.
    pub fn key(&self, set_id: &str, path: &str) -> String {
        format!("{}{set_id}/{path}", self.sets_prefix())
    }

    fn lock_key(&self) -> String {
        format!("{}/lock.json", self.site_prefix)
    }

    /// Takes the site's media lock: one writer of the mirror's state at a
    /// time (media sync, a backup's media step, media prune), apart from the
    /// backup lock so a long mirror never holds a database backup up.
    pub async fn media_lock(
        &self,
        ttl_seconds: u64,
        purpose: &str,
    ) -> Result<LockGuard, CatalogError> {
        self.named_lock("media-lock.json", ttl_seconds, purpose)
            .await
    }

    /// Takes the per-site backup lock; see [`lock`] for how a dead holder is detected.
    pub async fn lock(&self, ttl_seconds: u64, purpose: &str) -> Result<LockGuard, CatalogError> {
        lock::acquire(
            self.store,
            &self.lock_key(),
            &self.site,
            ttl_seconds,
            purpose,
        )
        .await
    }

    /// Takes another of the site's locks (`name` under the site prefix), for
    /// work that must run once per site but not exclude backups.
    pub async fn named_lock(
        &self,
        name: &str,
        ttl_seconds: u64,
        purpose: &str,
    ) -> Result<LockGuard, CatalogError> {
        lock::acquire(
            self.store,
            &format!("{}/{name}", self.site_prefix),
            &self.site,
            ttl_seconds,
            purpose,
        )
        .await
    }

    /// Who holds the site's lock now, if anyone (expired locks included, marked by their time).
    pub async fn lock_holder(&self) -> Result<Option<LockInfo>, CatalogError> {
        Ok(lock::current(self.store, &self.lock_key()).await?)
    }

    /// Ids of every set directory, complete or not, oldest first.
    async fn set_dirs(&self) -> Result<Vec<String>, CatalogError> {
        let prefix = self.sets_prefix();
        let dirs = self.store.list_dirs(&prefix).await?;
        let mut ids: Vec<String> = dirs
            .iter()
            .filter_map(|d| d.strip_prefix(&prefix))
            .map(|d| d.trim_end_matches('/').to_string())
            .filter(|d| valid_set_id(d))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Complete sets' summaries, newest first. A set without a manifest is
    /// skipped, and so is one whose manifest cannot be read (logged; `scan`
    /// names them).
    pub async fn summaries(&self) -> Result<Vec<SetSummary>, CatalogError> {
        Ok(self.scan().await?.complete)
    }

    /// Complete sets' whole manifests, newest first, for work that needs
    /// every set's contents; they are read and handed to `each` one at a
    /// time, never all held.
    pub async fn for_each_set(&self, mut each: impl FnMut(Manifest)) -> Result<(), CatalogError> {
        for id in self.set_dirs().await?.into_iter().rev() {
            match self.read(&id).await {
                Ok((m, _)) => each(m),
                Err(CatalogError::SetIncomplete { .. })
                | Err(CatalogError::ManifestInvalid { .. })
                | Err(CatalogError::UnsupportedFormat { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The newest complete set's manifest.
    pub async fn newest(&self) -> Result<Option<Manifest>, CatalogError> {
        Ok(self.newest_read().await?.map(|(m, _)| m))
    }

    /// [`newest`](Self::newest) with the manifest's bytes, for checking its
    /// signature without reading it again.
    async fn newest_read(&self) -> Result<Option<(Manifest, Bytes)>, CatalogError> {
        for id in self.set_dirs().await?.into_iter().rev() {
            match self.read(&id).await {
                Ok(read) => return Ok(Some(read)),
                Err(CatalogError::SetIncomplete { .. })
                | Err(CatalogError::ManifestInvalid { .. })
                | Err(CatalogError::UnsupportedFormat { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// One pass over the set directories, a manifest at a time. One
    /// unreadable manifest (damaged, or written by a newer wpdr) never hides
    /// the others: it is reported and skipped, and nothing deletes what it
    /// cannot read.
    pub async fn scan(&self) -> Result<Scan, CatalogError> {
        let mut scan = Scan::default();
        for id in self.set_dirs().await?.into_iter().rev() {
            match self.read(&id).await {
                Ok((m, _)) => scan.complete.push(SetSummary::from(&m)),
                Err(CatalogError::SetIncomplete { .. }) => scan.incomplete.push(id),
                Err(
                    e @ (CatalogError::ManifestInvalid { .. }
                    | CatalogError::UnsupportedFormat { .. }),
                ) => {
                    tracing::warn!(set = %id, error = %e, "skipping a set whose manifest cannot be read");
                    scan.unreadable.push(UnreadableSet {
                        id,
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        scan.incomplete.reverse();
        Ok(scan)
    }

    /// Ids of set directories that never got a manifest (interrupted runs).
    pub async fn incomplete(&self) -> Result<Vec<String>, CatalogError> {
        let mut out = Vec::new();
        for id in self.set_dirs().await? {
            if self
                .store
                .head(&self.key(&id, "manifest.json"))
                .await?
                .is_none()
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Resolves `latest` or an id to a complete set's manifest, its
    /// signature checked (see [`load`](Self::load)).
    pub async fn resolve(&self, id: &str) -> Result<Manifest, CatalogError> {
        if id == "latest" {
            let (m, bytes) = self
                .newest_read()
                .await?
                .ok_or_else(|| CatalogError::NoSets {
                    site: self.site.clone(),
                })?;
            return self.verified(m, &bytes).await;
        }
        if !valid_set_id(id) {
            return Err(CatalogError::BadSetId { id: id.to_string() });
        }
        self.load(id).await
    }

    /// A set about to be read back (a restore, a drill, a replay, a deep
    /// verify): resolved, its signature checked, and refused before any
    /// target is touched when no identity held opens it (the error names
    /// the recipients it was sealed to).
    pub async fn resolve_readable(&self, id: &str) -> Result<Manifest, CatalogError> {
        let m = self.resolve(id).await?;
        self.check_readable(&m)?;
        Ok(m)
    }

    /// Whether the identities held open `m`'s artifacts.
    pub fn check_readable(&self, m: &Manifest) -> Result<(), CatalogError> {
        self.store
            .keys()
            .check_can_open(&format!("set '{}'", m.set_id), m.recipients())?;
        Ok(())
    }

    /// A set's manifest for work that trusts it (restore, verify, a
    /// drill): its signature is checked against the pinned verifying keys,
    /// and the verdict is in [`Manifest::signature`]. With keys pinned, an
    /// unsigned or badly signed set is refused here.
    pub async fn load(&self, id: &str) -> Result<Manifest, CatalogError> {
        let (m, bytes) = self.read(id).await?;
        self.verified(m, &bytes).await
    }

    /// `m` (read as `bytes`) with its signature's verdict, or the refusal.
    async fn verified(&self, mut m: Manifest, bytes: &[u8]) -> Result<Manifest, CatalogError> {
        let set_id = m.set_id.clone();
        let id = set_id.as_str();
        let signature = match self.store.get_bytes(&self.key(id, SIGNATURE)).await {
            Ok(b) => Some(serde_json::from_slice::<Signature>(&b).map_err(|e| {
                TrustError::BadSignature {
                    what: format!("the signature of set '{id}'"),
                    detail: format!("it is unreadable ({e})"),
                }
            })?),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let verdict = self.store.keys().verifiers().verify(
            &format!("the manifest of set '{id}'"),
            bytes,
            signature.as_ref(),
        )?;
        m.signature = Some(verdict);
        Ok(m)
    }

    /// A manifest as stored, unchecked by signature: for listing and
    /// retention, which restore nothing.
    async fn read(&self, id: &str) -> Result<(Manifest, Bytes), CatalogError> {
        let key = self.key(id, "manifest.json");
        let bytes = match self.store.get_bytes(&key).await {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => {
                let any = self.store.list(&self.key(id, "")).await?;
                return Err(if any.is_empty() {
                    CatalogError::SetNotFound {
                        id: id.to_string(),
                        site: self.site.clone(),
                    }
                } else {
                    CatalogError::SetIncomplete { id: id.to_string() }
                });
            }
            Err(e) => return Err(e.into()),
        };
        #[derive(serde::Deserialize)]
        struct VersionOnly {
            format_version: u32,
        }
        let v: VersionOnly =
            serde_json::from_slice(&bytes).map_err(|e| CatalogError::ManifestInvalid {
                id: id.to_string(),
                detail: e.to_string(),
            })?;
        if v.format_version > FORMAT_VERSION {
            return Err(CatalogError::UnsupportedFormat {
                id: id.to_string(),
                found: v.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| CatalogError::ManifestInvalid {
                id: id.to_string(),
                detail: e.to_string(),
            })?;
        if m.set_id != id {
            return Err(CatalogError::ManifestInvalid {
                id: id.to_string(),
                detail: format!("it names set '{}'", m.set_id),
            });
        }
        Ok((m, bytes))
    }

    /// Writes the manifest: the last write of a backup, which makes the set
    /// exist. With a signing key its signature is written first, so a set
    /// never appears unsigned because a run died between the two.
    pub async fn commit(&self, manifest: &Manifest) -> Result<(), CatalogError> {
        let json =
            serde_json::to_vec_pretty(manifest).map_err(|e| CatalogError::ManifestInvalid {
                id: manifest.set_id.clone(),
                detail: e.to_string(),
            })?;
        if let Some(signer) = self.store.keys().signer() {
            let sig = serde_json::to_vec_pretty(&signer.sign(&json)).map_err(|e| {
                CatalogError::ManifestInvalid {
                    id: manifest.set_id.clone(),
                    detail: e.to_string(),
                }
            })?;
            self.store
                .put_kept(&self.key(&manifest.set_id, SIGNATURE), Bytes::from(sig))
                .await?;
        }
        self.store
            .put_kept(
                &self.key(&manifest.set_id, "manifest.json"),
                Bytes::from(json),
            )
            .await?;
        Ok(())
    }

    /// Re-reads every artifact and compares size and SHA-256 with the
    /// manifest; `deep` also opens (decrypts) and decompresses each
    /// compressed one to its end, which needs the identity of a sealed set.
    pub async fn verify(
        &self,
        manifest: &Manifest,
        deep: bool,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<VerifyReport, CatalogError> {
        if deep {
            self.check_readable(manifest)?;
        }
        let mut problems = Vec::new();
        let mut bytes_checked = 0u64;
        for a in &manifest.artifacts {
            let key = self.key(&manifest.set_id, &a.path);
            let read = if deep && a.path.ends_with(".zst") {
                read_through(self.store, &key, a).await
            } else {
                hash_object(self.store, &key)
                    .await
                    .map(|(size, sha)| (size, ArtifactProblem::check(a, size, &sha)))
            };
            match read {
                Ok((size, problem)) => {
                    bytes_checked += size;
                    progress(size);
                    problems.extend(problem);
                }
                Err(StoreError::NotFound { .. }) => problems.push(ArtifactProblem::Missing {
                    path: a.path.clone(),
                }),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(VerifyReport {
            set_id: manifest.set_id.clone(),
            artifacts_checked: manifest.artifacts.len(),
            bytes_checked,
            problems,
            deep,
            signature: manifest.signature.clone(),
        })
    }
}

/// Reads one compressed artifact to its end the way a restore does:
/// opened, hashed as stored, decompressed with its frame checksums.
async fn read_through(
    store: &Store,
    key: &str,
    a: &Artifact,
) -> Result<(u64, Option<ArtifactProblem>), StoreError> {
    use crate::store::zstd_reader::{ZstdReadError, ZstdReader};
    let unreadable = |detail: String| ArtifactProblem::Unreadable {
        path: a.path.clone(),
        detail,
    };
    let mut r = match ZstdReader::open(store, key, Some((a.size, a.sha256.clone()))).await {
        Ok(r) => r,
        Err(ZstdReadError::Store(e)) => return Err(e),
        Err(ZstdReadError::Corrupt(d)) => return Ok((0, Some(unreadable(d)))),
    };
    loop {
        match r.next_into(|_| Ok(())).await {
            Ok(true) => {}
            Ok(false) => return Ok((a.size, None)),
            Err(ZstdReadError::Store(StoreError::Trust(t))) => {
                return Ok((r.compressed_read, Some(unreadable(t.to_string()))))
            }
            Err(ZstdReadError::Store(e)) => return Err(e),
            Err(ZstdReadError::Corrupt(d)) => return Ok((r.compressed_read, Some(unreadable(d)))),
        }
    }
}

/// What one pass over a site's set directories found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Complete sets, newest first.
    pub complete: Vec<SetSummary>,
    /// Runs that wrote files but no manifest, oldest first.
    pub incomplete: Vec<String>,
    /// Sets whose manifest is there but cannot be read, newest first.
    pub unreadable: Vec<UnreadableSet>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct UnreadableSet {
    pub id: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test]
    async fn an_unreadable_manifest_is_skipped_and_named_never_blocking_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::StoreConfig::Local {
            path: dir.path().to_path_buf(),
            prefix: "wpdr".into(),
        };
        let store = Store::open(&cfg).await.unwrap();
        let catalog = Catalog::new(&store, "s", "wpdr/s");
        let good = "20261101T000000Z-aaaa";
        let manifest = Manifest::empty_for_tests(good, "s");
        catalog.commit(&manifest).await.unwrap();
        let put = |id: &str, body: &'static str| {
            let key = catalog.key(id, "manifest.json");
            let store = &store;
            async move { store.put_bytes(&key, Bytes::from(body)).await.unwrap() }
        };
        put("20261102T000000Z-bbbb", "{ not json").await;
        put("20261103T000000Z-cccc", r#"{"format_version": 999}"#).await;
        let scan = catalog.scan().await.unwrap();
        assert_eq!(scan.complete.len(), 1);
        assert_eq!(scan.complete[0].id, good);
        let ids: Vec<&str> = scan.unreadable.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["20261103T000000Z-cccc", "20261102T000000Z-bbbb"]);
        assert!(
            scan.unreadable[0].reason.contains("999"),
            "{:?}",
            scan.unreadable
        );
        // `latest` is the newest set that can be read.
        assert_eq!(catalog.resolve("latest").await.unwrap().set_id, good);
        // Naming a bad one still says what is wrong with it.
        let e = catalog.resolve("20261102T000000Z-bbbb").await.unwrap_err();
        assert!(matches!(e, CatalogError::ManifestInvalid { .. }), "{e}");
    }

    #[test]
    fn new_ids_are_valid_and_sort_by_time() {
        let a = new_set_id("2026-01-02T03:04:05Z".parse().unwrap());
        let b = new_set_id("2026-01-02T03:04:06Z".parse().unwrap());
        assert!(valid_set_id(&a) && valid_set_id(&b), "{a} {b}");
        assert!(a < b);
    }

    #[test]
    fn bad_ids_are_rejected() {
        for bad in [
            "",
            "latest",
            "../../etc",
            "20261125T192224Z-zzzz",
            "20261125T192224Z-3fa1/x",
        ] {
            assert!(!valid_set_id(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn ids_sort_like_their_times(a in 0i64..4_000_000_000, b in 0i64..4_000_000_000) {
            let ta = DateTime::from_timestamp(a, 0).unwrap();
            let tb = DateTime::from_timestamp(b, 0).unwrap();
            let (ia, ib) = (new_set_id(ta), new_set_id(tb));
            if a < b { prop_assert!(ia < ib); }
            prop_assert!(valid_set_id(&ia));
        }
    }
}
