//! One mirror run: list both sides and read the last state as three sorted
//! streams, merge them (`plan`), copy with bounded concurrency, and write the
//! new state (and a set's media index) in key order as results come back.
//!
//! Order of safety: copies and the retains that protect overwrites happen as
//! the merge goes; deletions wait until every listing has ended without error
//! and the rails have passed, and each is preceded by a retain. The state is
//! replaced only when the run gets to its end, so a killed run leaves the last
//! state, and the rerun recognises what the killed run already copied
//! (`Step::Adopt`) instead of copying it again.

use super::bucket::{Bucket, MemoryBudget, Tag, META_SHA256, META_SOURCE_ETAG};
use super::copy::{copy_between, CopyRequest};
use super::plan::{plan, Listed, Record, Step, Totals, Version};
use super::records::{RecordReader, RecordWriter};
use super::sealing::{is_sealed, Crypt};
use super::MediaError;
use crate::config::MediaConfig;
use crate::store::{Store, Written};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// How far a mirror or a media restore is, as increments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// Objects found to be part of the job (the source listing or the set's
    /// index, as it streams): the total grows until the listing ends.
    Found(u64),
    /// Objects finished and the bytes they copied.
    Done { objects: u64, bytes: u64 },
}

/// Called as the work goes (cheap; from any task or the planner's thread).
pub type MediaProgress = Arc<dyn Fn(MediaEvent) + Send + Sync>;

/// Bytes all copies in flight may hold at once (mirror and restore alike).
pub(crate) const MEMORY_BUDGET: u64 = 96 << 20;
/// Depth of the channels between listings, merge and copy workers.
pub(crate) const CHANNEL_DEPTH: usize = 2048;
/// Failures listed by name in a report; the count covers the rest.
pub(crate) const LISTED_FAILURES: usize = 50;

/// Where a version lives once it has been retained.
pub fn retained_key(retained_prefix: &str, source_etag: &str, key: &str) -> String {
    format!("{retained_prefix}{source_etag}/{key}")
}

/// The store key of a site's mirror state.
pub fn state_key(site_prefix: &str) -> String {
    format!("{site_prefix}/media/state.jsonl.zst")
}

pub struct Mirror {
    pub cfg: MediaConfig,
    pub source: Bucket,
    pub offsite: Bucket,
    pub store: Arc<Store>,
    pub state_key: String,
    /// Where each run leaves its generation (see [`super::point`]).
    pub site_prefix: String,
    /// Offsite copies are sealed to the store's recipients (`media.encrypt`).
    pub seal: bool,
}

#[derive(Debug, Clone, Default)]
pub struct MirrorOptions {
    pub dry_run: bool,
    /// Lift the delete count/share rails (never the empty-source one).
    pub confirm_deletes: bool,
    /// Also write the resulting records here (a set's media index).
    pub index_key: Option<String>,
    /// Keys the database refers to, with the post that does: the ones the
    /// mirror does not end up holding are reported as missing.
    pub expected: Option<BTreeMap<String, u64>>,
    /// The media lock's fence: a run that lost its lock deletes nothing and
    /// does not replace the mirror's state.
    pub fence: Option<crate::catalog::Fence>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FailedObject {
    pub key: String,
    pub error: String,
}

pub use crate::catalog::MissingMedia;

#[derive(Debug, Clone, Default, Serialize)]
pub struct MirrorReport {
    pub dry_run: bool,
    pub source: String,
    pub offsite: String,
    pub source_objects: u64,
    pub offsite_objects: u64,
    pub unchanged: u64,
    pub adopted: u64,
    pub copied: u64,
    pub copied_bytes: u64,
    pub retained: u64,
    pub deleted: u64,
    /// Deletions the merge planned (done, or refused by the rails).
    pub planned_deletes: u64,
    pub deletes_refused: Option<String>,
    pub failed_total: u64,
    pub failed: Vec<FailedObject>,
    /// Objects the new state (and index) holds.
    pub indexed_objects: u64,
    pub indexed_bytes: u64,
    pub missing_total: u64,
    pub missing: Vec<MissingMedia>,
    pub seconds: f64,
    /// The generation this run left (the media as of its listing), for
    /// point-in-time restores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    #[serde(skip)]
    pub index: Option<Written>,
}

impl MirrorReport {
    /// Anything a rerun should fix: failed copies or refused deletions.
    pub fn is_complete(&self) -> bool {
        self.failed_total == 0 && self.deletes_refused.is_none()
    }
}

/// What one step produced, in key order.
#[derive(Default)]
struct Outcome {
    record: Option<Record>,
    copied_bytes: u64,
    copied: bool,
    retained: bool,
    adopted: bool,
    delete: Option<Version>,
    failure: Option<FailedObject>,
}

/// `wpdr media sync`: one mirror run under the site's media lock (the
/// mirror's state has one writer at a time; a backup's media step takes the
/// same lock, never the other way round).
pub async fn sync(
    cfg: &crate::config::Config,
    store: Arc<Store>,
    opts: MirrorOptions,
    progress: MediaProgress,
) -> Result<MirrorReport, MediaError> {
    let media = cfg.media.as_ref().ok_or(MediaError::NotConfigured)?;
    let catalog = crate::catalog::Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    let lock = if opts.dry_run {
        None
    } else {
        let mut l = catalog
            .media_lock(cfg.backup.lock_ttl_seconds, "media-sync")
            .await?;
        l.keep_alive(store.clone(), cfg.backup.lock_ttl_seconds);
        Some(l)
    };
    let opts = MirrorOptions {
        fence: lock.as_ref().map(|l| l.fence()),
        ..opts
    };
    let result = match Mirror::open(media, store.clone(), &cfg.site_prefix()).await {
        Ok(m) => m.run(opts, progress).await,
        Err(e) => Err(e),
    };
    if let Some(l) = lock {
        if let Err(e) = l.release(&store).await {
            tracing::warn!(error = %e, "could not release the lock; it expires on its own");
        }
    }
    result
}

impl Mirror {
    pub async fn open(
        cfg: &MediaConfig,
        store: Arc<Store>,
        site_prefix: &str,
    ) -> Result<Mirror, MediaError> {
        Ok(Mirror {
            source: Bucket::open(&cfg.source).await?,
            offsite: Bucket::open(&cfg.offsite).await?,
            seal: cfg.seals(store.keys().seals()),
            cfg: cfg.clone(),
            store,
            state_key: state_key(site_prefix),
            site_prefix: site_prefix.to_string(),
        })
    }

    fn retained(&self, v: &Version) -> String {
        retained_key(&self.cfg.retained_prefix, &v.source_etag, &v.key)
    }

    pub async fn run(
        &self,
        opts: MirrorOptions,
        progress: MediaProgress,
    ) -> Result<MirrorReport, MediaError> {
        let started = Instant::now();
        // The generation is named by when the source listing began: every
        // version it records was written by then or during the listing.
        let listed_at = chrono::Utc::now();
        let prefix = self.cfg.source.prefix.clone();
        let (src_tx, src_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (off_tx, off_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (rec_tx, rec_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (step_tx, step_rx) = mpsc::channel::<Step>(CHANNEL_DEPTH);
        let src = self.source.clone();
        let p = prefix.clone();
        let listing_src = tokio::spawn(async move { src.list_into(&p, None, src_tx).await });
        let off = self.offsite.clone();
        let p = prefix.clone();
        let skip = self.cfg.retained_prefix.clone();
        let listing_off = tokio::spawn(async move { off.list_into(&p, Some(&skip), off_tx).await });
        let reading_state = match RecordReader::open(&self.store, &self.state_key).await? {
            Some(r) => tokio::spawn(r.send_into(rec_tx)),
            None => tokio::spawn(async move { drop(rec_tx) }),
        };
        let retained_prefix = self.cfg.retained_prefix.clone();
        // Progress counts source objects as the listing finds them, and
        // deletions (offsite-only keys) as they are planned.
        let found = progress.clone();
        let planner = tokio::task::spawn_blocking(move || {
            plan(
                blocking(src_rx).inspect(|_| found(MediaEvent::Found(1))),
                blocking(off_rx),
                blocking(rec_rx),
                |step| {
                    if let Step::Delete(_) = &step {
                        found(MediaEvent::Found(1));
                    }
                    if let Step::Copy { source, .. } | Step::Adopt { source, .. } = &step {
                        if source.key.starts_with(&retained_prefix) {
                            return Err(MediaError::RetainedPrefixInSource {
                                key: source.key.clone(),
                                prefix: retained_prefix.clone(),
                            });
                        }
                    }
                    step_tx
                        .blocking_send(step)
                        .map_err(|_| MediaError::Stopped("the copy workers ended early".into()))
                },
            )
        });

        let mut writer = if opts.dry_run {
            None
        } else {
            // The state is replaced every run; a set's index is kept. Both
            // stay plain: the next run and prune read them without a key,
            // and they hold what the offsite listing shows anyway (keys,
            // sizes, ETags) plus content hashes; the manifest's signature
            // covers the index's hash.
            let mut writers = vec![
                self.store.writer(&self.state_key),
                self.store
                    .kept_writer(&super::point::generation_key(&self.site_prefix, listed_at)),
            ];
            if let Some(index) = &opts.index_key {
                writers.push(self.store.kept_writer(index));
            }
            Some(RecordWriter::new(writers)?)
        };
        let mut report = MirrorReport {
            dry_run: opts.dry_run,
            source: self.source.describe(),
            offsite: self.offsite.describe(),
            ..Default::default()
        };
        let mut expected = opts.expected.clone();
        let mut deletes: Vec<Version> = Vec::new();
        let budget = MemoryBudget::new(MEMORY_BUDGET);
        let dry_run = opts.dry_run;
        let steps =
            futures::stream::unfold(
                step_rx,
                |mut rx| async move { rx.recv().await.map(|s| (s, rx)) },
            );
        // The stream (and with it the step receiver) is dropped before the
        // planner is awaited, so a planner blocked on a full channel wakes up.
        let write_error = {
            let mut write_error = None;
            // Copies finish in any order (a large original must not hold up
            // the small files behind it); records are written in key order.
            let mut outcomes = std::pin::pin!(steps
                .enumerate()
                .map(|(i, step)| {
                    let work = self.execute(step, dry_run, &budget);
                    async move { (i, work.await) }
                })
                .buffer_unordered(self.cfg.concurrency));
            let mut waiting: BTreeMap<usize, Option<Record>> = BTreeMap::new();
            let mut next = 0usize;
            'results: while let Some((i, o)) = outcomes.next().await {
                progress(MediaEvent::Done {
                    objects: 1,
                    bytes: o.copied_bytes,
                });
                report.copied += u64::from(o.copied);
                report.copied_bytes += o.copied_bytes;
                report.retained += u64::from(o.retained);
                report.adopted += u64::from(o.adopted);
                if let Some(f) = o.failure {
                    report.failed_total += 1;
                    if report.failed.len() < LISTED_FAILURES {
                        report.failed.push(f);
                    }
                }
                deletes.extend(o.delete);
                waiting.insert(i, o.record);
                while let Some(record) = waiting.remove(&next) {
                    next += 1;
                    let Some(r) = record else { continue };
                    report.indexed_objects += 1;
                    report.indexed_bytes += r.size;
                    if let Some(e) = expected.as_mut() {
                        e.remove(&r.key);
                    }
                    if let Some(w) = writer.as_mut() {
                        if let Err(e) = w.push(&r).await {
                            write_error = Some(e);
                            break 'results;
                        }
                    }
                }
            }
            write_error
        };
        let planned = planner
            .await
            .map_err(|e| MediaError::Stopped(format!("the planner failed: {e}")));
        listing_src.abort();
        listing_off.abort();
        reading_state.abort();
        let totals: Totals = match (planned, write_error) {
            (Ok(Ok(t)), None) => t,
            (Ok(Err(e)), _) | (Err(e), _) | (_, Some(e)) => {
                // Keep the last state: nothing half-known replaces it, nothing is deleted.
                if let Some(w) = writer {
                    w.abort().await;
                }
                return Err(e);
            }
        };
        report.source_objects = totals.source_objects;
        report.offsite_objects = totals.offsite_objects;
        report.unchanged = totals.unchanged;
        report.planned_deletes = totals.deletes;
        if dry_run {
            report.copied = totals.copies;
            report.copied_bytes = totals.bytes_to_copy;
            report.adopted = totals.adopt;
        }

        // Deletions: only after complete listings, passing rails, and no failure.
        let check = totals.check(
            self.cfg.max_deletes,
            self.cfg.max_delete_percent,
            opts.confirm_deletes,
        );
        if let Err(refusal) = check {
            report.deletes_refused = Some(refusal.to_string());
        } else if report.failed_total > 0 && !deletes.is_empty() {
            report.deletes_refused = Some(format!(
                "{} deletion(s) postponed because {} object(s) failed to copy; a clean rerun does them",
                deletes.len(),
                report.failed_total
            ));
        } else if !dry_run {
            if let Some(f) = &opts.fence {
                f.confirm(&self.store).await?;
            }
            let mut done = futures::stream::iter(deletes)
                .map(|v| async move {
                    let retained = self.retained(&v);
                    self.offsite.copy_within(&v.key, &retained, v.size).await?;
                    self.offsite.delete(&v.key).await?;
                    Ok::<_, MediaError>(v.key)
                })
                .buffer_unordered(self.cfg.concurrency);
            while let Some(r) = done.next().await {
                match r {
                    Ok(_) => {
                        report.retained += 1;
                        report.deleted += 1;
                    }
                    Err(e) => {
                        report.failed_total += 1;
                        if report.failed.len() < LISTED_FAILURES {
                            report.failed.push(FailedObject {
                                key: "(delete)".into(),
                                error: e.to_string(),
                            });
                        }
                    }
                }
            }
        }

        if let Some(missing) = expected {
            report.missing_total = missing.len() as u64;
            report.missing = missing
                .into_iter()
                .take(LISTED_FAILURES)
                .map(|(key, post_id)| MissingMedia { key, post_id })
                .collect();
        }
        if let Some(w) = writer {
            if let Some(f) = &opts.fence {
                if let Err(e) = f.confirm(&self.store).await {
                    w.abort().await;
                    return Err(e.into());
                }
            }
            let mut written = w.finish().await?.into_iter().skip(1);
            report.generation = written.next().map(|g| g.key);
            report.index = written.next();
        }
        report.seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            copied = report.copied,
            bytes = report.copied_bytes,
            unchanged = report.unchanged,
            retained = report.retained,
            deleted = report.deleted,
            failed = report.failed_total,
            seconds = report.seconds,
            "media mirror finished"
        );
        Ok(report)
    }

    async fn execute(&self, step: Step, dry_run: bool, budget: &MemoryBudget) -> Outcome {
        match step {
            // A plain copy from before encryption was turned on: sealed in
            // place. The plain one is not retained (that would keep the very
            // bytes sealing is meant to protect); the sealed copy is the same
            // version, so older sets restore from it.
            Step::Unchanged(r) if self.seal && r.offsite_size.is_none() && !dry_run => {
                let source = Listed {
                    key: r.key,
                    size: r.size,
                    etag: r.etag,
                    modified: r.modified,
                };
                self.copy_step(source, None, budget).await
            }
            Step::Unchanged(r) => Outcome {
                record: Some(r),
                ..Default::default()
            },
            Step::Delete(v) => Outcome {
                delete: Some(v),
                ..Default::default()
            },
            Step::Adopt { source, .. } | Step::Copy { source, .. } if dry_run => Outcome {
                record: Some(Record {
                    key: source.key,
                    size: source.size,
                    etag: source.etag,
                    offsite_etag: String::new(),
                    sha256: String::new(),
                    offsite_size: None,
                    modified: source.modified,
                }),
                ..Default::default()
            },
            Step::Adopt { source, offsite } => {
                let key = source.key.clone();
                match self.adopt(&source, &offsite, budget).await {
                    Ok(Some(o)) => o,
                    // Not provably this version: copy it, keeping what was there.
                    Ok(None) => {
                        let replaces = Version {
                            key: offsite.key,
                            size: offsite.size,
                            source_etag: offsite.etag.clone(),
                            offsite_etag: offsite.etag,
                        };
                        self.copy_step(source, Some(replaces), budget).await
                    }
                    Err(e) => failed(key, e),
                }
            }
            Step::Copy { source, replaces } => self.copy_step(source, replaces, budget).await,
        }
    }

    /// Retains the version being replaced (if any), then copies.
    async fn copy_step(
        &self,
        source: Listed,
        replaces: Option<Version>,
        budget: &MemoryBudget,
    ) -> Outcome {
        let key = source.key.clone();
        let mut retained = false;
        if let Some(v) = &replaces {
            if let Err(e) = self
                .offsite
                .copy_within(&v.key, &self.retained(v), v.size)
                .await
            {
                return failed(key, e.into());
            }
            retained = true;
        }
        match self.copy(&source, budget).await {
            Ok(r) => Outcome {
                copied_bytes: r.size,
                record: Some(r),
                copied: true,
                retained,
                ..Default::default()
            },
            Err(e) => Outcome {
                retained,
                ..failed(key, e)
            },
        }
    }

    async fn copy(&self, source: &Listed, budget: &MemoryBudget) -> Result<Record, MediaError> {
        let crypt = if self.seal {
            Crypt::Seal(self.store.keys())
        } else {
            Crypt::Plain
        };
        let c = copy_between(CopyRequest {
            src: &self.source,
            src_key: &source.key,
            dst: &self.offsite,
            dst_key: &source.key,
            tag: Tag::SourceVersion,
            crypt,
            expect_sha256: None,
            budget,
        })
        .await?;
        Ok(Record {
            key: source.key.clone(),
            size: c.size,
            etag: c.source_etag,
            offsite_etag: c.dest_etag,
            sha256: c.sha256,
            offsite_size: (self.seal || c.stored_size != c.size).then_some(c.stored_size),
            modified: source.modified,
        })
    }

    /// The offsite object may already be this source version: its ETag is
    /// the source's, or the metadata wpdr wrote on it names the source ETag.
    /// Takes its hash from that metadata or by reading it once. `None`: not
    /// provably the same version.
    async fn adopt(
        &self,
        source: &Listed,
        offsite: &Listed,
        budget: &MemoryBudget,
    ) -> Result<Option<Outcome>, MediaError> {
        let head = self.offsite.head(&offsite.key).await?;
        let Some(head) = head else { return Ok(None) };
        // A plain copy while sealing (or the other way round) is copied anew.
        if is_sealed(&head.headers) != self.seal {
            return Ok(None);
        }
        let names_version = head.etag == offsite.etag
            && head.headers.user.get(META_SOURCE_ETAG) == Some(&source.etag);
        if !names_version && source.etag != offsite.etag {
            return Ok(None);
        }
        let tagged = head
            .headers
            .user
            .get(META_SHA256)
            .filter(|_| names_version)
            .cloned();
        let sha256 = match tagged {
            Some(sha) => sha,
            // Hashing a sealed copy would give the ciphertext's hash.
            None if self.seal => return Ok(None),
            None => {
                let (size, sha) = self.offsite.hash(&offsite.key, budget).await?;
                if size != source.size {
                    // Changed since the listing: copy it properly next run.
                    return Err(MediaError::Transfer {
                        key: source.key.clone(),
                        detail: "the offsite object changed while it was being checked".into(),
                    });
                }
                sha
            }
        };
        Ok(Some(Outcome {
            record: Some(Record {
                key: source.key.clone(),
                size: source.size,
                etag: source.etag.clone(),
                offsite_etag: offsite.etag.clone(),
                sha256,
                offsite_size: self.seal.then_some(offsite.size),
                modified: source.modified,
            }),
            adopted: true,
            ..Default::default()
        }))
    }
}

/// A channel read as a blocking iterator (the merge runs on a blocking thread).
fn blocking<T>(mut rx: mpsc::Receiver<T>) -> impl Iterator<Item = T> {
    std::iter::from_fn(move || rx.blocking_recv())
}

fn failed(key: String, e: MediaError) -> Outcome {
    tracing::warn!(key = %key, error = %e, "media object not copied");
    Outcome {
        failure: Some(FailedObject {
            key,
            error: e.to_string(),
        }),
        ..Default::default()
    }
}
