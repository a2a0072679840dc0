//! Restore of a set's media into a (fresh) bucket: exactly the objects of
//! the set's index, each as the version the set recorded, wherever that
//! version lives offsite now (the mirror's key, or the retained area once the
//! source overwrote or deleted it).
//!
//! Resumable: the target's listing is merged with the index, and an object
//! already there as the right version is not copied again. Verified: every
//! byte copied hashes to the index's SHA-256 before it becomes visible
//! (and the target checks Content-MD5); at the end the target's listing must
//! hold every key of the index at its size, and `deep_verify` re-reads each
//! object and compares its SHA-256.

use super::bucket::{Bucket, MemoryBudget, Tag, META_SHA256, META_SOURCE_ETAG};
use super::copy::{copy_between, CopyRequest};
use super::mirror::{
    retained_key, FailedObject, MediaEvent, MediaProgress, CHANNEL_DEPTH, LISTED_FAILURES,
    MEMORY_BUDGET,
};
use super::plan::{Listed, Record};
use super::point::AsOf;
use super::records::RecordReader;
use super::sealing::Crypt;
use super::MediaError;
use crate::store::Store;
use futures::StreamExt;
use serde::Serialize;
use std::time::Instant;
use tokio::sync::mpsc;

/// Where a set's index is and how to check it.
#[derive(Debug, Clone)]
pub struct IndexRef {
    pub set_id: String,
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

/// What a media restore brings back: a set's index, or the media as of a
/// point in time (two mirror generations merged, see [`super::point`]).
#[derive(Debug, Clone)]
pub enum IndexSource {
    Set(IndexRef),
    AsOf(AsOf),
}

impl IndexSource {
    /// The set id, or `as of <point>`: what the report names.
    pub fn label(&self) -> String {
        match self {
            IndexSource::Set(i) => i.set_id.clone(),
            IndexSource::AsOf(a) => format!("as of {}", a.point.to_rfc3339()),
        }
    }

    /// Streams the records into `tx` from a task; opening happens first,
    /// here, so a damaged or missing index fails before anything is copied.
    async fn spawn_into(
        &self,
        store: &Store,
        tx: mpsc::Sender<Result<Record, MediaError>>,
    ) -> Result<tokio::task::JoinHandle<()>, MediaError> {
        Ok(match self {
            IndexSource::Set(i) => {
                let reader = RecordReader::open_checked(store, &i.key, i.size, &i.sha256).await?;
                tokio::spawn(reader.send_into(tx))
            }
            IndexSource::AsOf(a) => {
                let (before, after) = super::point::open(store, a).await?;
                tokio::spawn(super::point::merge_into(
                    before,
                    after,
                    a.point.timestamp(),
                    tx,
                ))
            }
        })
    }
}

impl IndexRef {
    /// The media index a set holds; `None` when the set has no media
    /// section, `NoIndex` when the section names an artifact the set lacks.
    pub fn of(
        catalog: &crate::catalog::Catalog<'_>,
        manifest: &crate::catalog::Manifest,
    ) -> Result<Option<IndexRef>, MediaError> {
        let Some(section) = manifest.media.as_ref() else {
            return Ok(None);
        };
        let artifact = manifest
            .artifact(&section.index_artifact)
            .ok_or(MediaError::NoIndex)?;
        Ok(Some(IndexRef {
            set_id: manifest.set_id.clone(),
            key: catalog.key(&manifest.set_id, &artifact.path),
            size: artifact.size,
            sha256: artifact.sha256.clone(),
        }))
    }
}

/// Restores a set's media into the bucket `target`: the offsite mirror and
/// the target opened (the target created unless a dry run), then
/// [`MediaRestore::run`] with the mirror's recorded state.
#[allow(clippy::too_many_arguments)]
pub async fn restore_set(
    media: &crate::config::MediaConfig,
    store: &Store,
    site_prefix: &str,
    index: &IndexSource,
    retained_prefix: &str,
    target: &crate::config::S3Config,
    opts: &RestoreOptions,
    progress: MediaProgress,
) -> Result<MediaRestoreReport, MediaError> {
    let offsite = Bucket::open(&media.offsite).await?;
    let target = if opts.dry_run {
        Bucket::open(target).await?
    } else {
        Bucket::open_or_create(target).await?
    };
    let state = super::mirror::state_key(site_prefix);
    MediaRestore {
        store,
        offsite: &offsite,
        target: &target,
        state_key: &state,
        retained_prefix,
    }
    .run(index, opts, progress)
    .await
}

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub dry_run: bool,
    /// Re-read every restored object at the end and compare its SHA-256.
    pub deep_verify: bool,
    pub concurrency: usize,
}

/// Which mirror runs a point-in-time media restore merged.
#[derive(Debug, Clone, Serialize)]
pub struct AsOfReport {
    pub point: chrono::DateTime<chrono::Utc>,
    /// The newest listing before the point, and the first at or after it.
    pub listed_before: Option<chrono::DateTime<chrono::Utc>>,
    pub listed_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Uploads before this moment are in; with no listing after the point,
    /// that is the last listing (later uploads were never mirrored).
    pub known_until: chrono::DateTime<chrono::Utc>,
}

impl From<&AsOf> for AsOfReport {
    fn from(a: &AsOf) -> Self {
        AsOfReport {
            point: a.point,
            listed_before: a.before.as_ref().map(|g| g.listed_at),
            listed_after: a.after.as_ref().map(|g| g.listed_at),
            known_until: a.known_until(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MediaRestoreReport {
    pub set_id: String,
    /// Set for a point-in-time restore: the generations merged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<AsOfReport>,
    pub target: String,
    pub dry_run: bool,
    pub objects: u64,
    pub bytes: u64,
    pub copied: u64,
    pub copied_bytes: u64,
    pub already_present: u64,
    pub from_retained: u64,
    pub failed_total: u64,
    pub failed: Vec<FailedObject>,
    /// Keys in the target that the set does not hold (the target was not fresh).
    pub extra_in_target: u64,
    pub verified_objects: u64,
    pub deep_verified: bool,
    pub seconds: f64,
}

/// A sorted stream read one key at a time, for merging against the index.
struct Cursor<T> {
    rx: mpsc::Receiver<Result<T, MediaError>>,
    head: Option<T>,
    ended: bool,
}

impl<T> Cursor<T> {
    fn new(rx: mpsc::Receiver<Result<T, MediaError>>) -> Self {
        Cursor {
            rx,
            head: None,
            ended: false,
        }
    }

    async fn fill(&mut self) -> Result<(), MediaError> {
        if self.head.is_none() && !self.ended {
            match self.rx.recv().await {
                Some(Ok(v)) => self.head = Some(v),
                Some(Err(e)) => return Err(e),
                None => self.ended = true,
            }
        }
        Ok(())
    }

    /// The item at `key`, dropping smaller ones (handed to `skipped`).
    async fn seek(
        &mut self,
        key: &str,
        name: impl Fn(&T) -> &str,
        mut skipped: impl FnMut(T),
    ) -> Result<Option<T>, MediaError> {
        loop {
            self.fill().await?;
            let Some(h) = &self.head else { return Ok(None) };
            match name(h).as_bytes().cmp(key.as_bytes()) {
                std::cmp::Ordering::Less => {
                    if let Some(v) = self.head.take() {
                        skipped(v);
                    }
                }
                std::cmp::Ordering::Equal => return Ok(self.head.take()),
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
    }

    async fn drain(&mut self, mut skipped: impl FnMut(T)) -> Result<(), MediaError> {
        loop {
            self.fill().await?;
            match self.head.take() {
                Some(v) => skipped(v),
                None => return Ok(()),
            }
        }
    }
}

struct Job {
    record: Record,
    /// Offsite keys to try, most likely first.
    locations: Vec<String>,
    /// The target already has an object of the right size under this key.
    present: Option<Listed>,
}

enum Done {
    Present,
    Copied { bytes: u64, retained: bool },
    Failed(FailedObject),
}

pub struct MediaRestore<'a> {
    pub store: &'a Store,
    pub offsite: &'a Bucket,
    pub target: &'a Bucket,
    /// The mirror's current state: tells whether a version is still at its key.
    pub state_key: &'a str,
    pub retained_prefix: &'a str,
}

impl MediaRestore<'_> {
    pub async fn run(
        &self,
        index: &IndexSource,
        opts: &RestoreOptions,
        progress: MediaProgress,
    ) -> Result<MediaRestoreReport, MediaError> {
        let started = Instant::now();
        let mut report = MediaRestoreReport {
            set_id: index.label(),
            as_of: match index {
                IndexSource::AsOf(a) => Some(AsOfReport::from(a)),
                IndexSource::Set(_) => None,
            },
            target: self.target.describe(),
            dry_run: opts.dry_run,
            ..Default::default()
        };
        let (idx_tx, idx_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (state_tx, state_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (tgt_tx, tgt_rx) = mpsc::channel(CHANNEL_DEPTH);
        let tasks = [
            index.spawn_into(self.store, idx_tx).await?,
            match RecordReader::open(self.store, self.state_key).await? {
                Some(r) => tokio::spawn(r.send_into(state_tx)),
                None => tokio::spawn(async move { drop(state_tx) }),
            },
            {
                let t = self.target.clone();
                tokio::spawn(async move { t.list_into("", None, tgt_tx).await })
            },
        ];
        let mut index_rx = Cursor::new(idx_rx);
        let mut state = Cursor::new(state_rx);
        let mut target = Cursor::new(tgt_rx);

        // Jobs are produced by merging the three streams and consumed with
        // bounded concurrency; the merge itself runs as the stream is polled.
        let (job_tx, job_rx) = mpsc::channel::<Job>(CHANNEL_DEPTH);
        let retained_prefix = self.retained_prefix.to_string();
        let found = progress.clone();
        let merge = async move {
            let mut extra = 0u64;
            loop {
                index_rx.fill().await?;
                let Some(r) = index_rx.head.take() else { break };
                found(MediaEvent::Found(1));
                let current = state.seek(&r.key, |s: &Record| &s.key, |_| {}).await?;
                let present = target
                    .seek(&r.key, |l: &Listed| &l.key, |_| extra += 1)
                    .await?
                    .filter(|l| l.size == r.size);
                let plain = r.key.clone();
                let retained = retained_key(&retained_prefix, &r.etag, &r.key);
                let at_key = current.is_some_and(|c| c.etag == r.etag && c.size == r.size);
                let locations = if at_key {
                    vec![plain, retained]
                } else {
                    vec![retained, plain]
                };
                let job = Job {
                    record: r,
                    locations,
                    present,
                };
                if job_tx.send(job).await.is_err() {
                    break;
                }
            }
            target.drain(|_| extra += 1).await?;
            Ok::<u64, MediaError>(extra)
        };
        let budget = MemoryBudget::new(MEMORY_BUDGET);
        // poll_fn rather than unfold over an async block: the latter's
        // higher-ranked type keeps callers' futures from being provably Send.
        let mut job_rx = job_rx;
        let jobs = futures::stream::poll_fn(move |cx| job_rx.poll_recv(cx));
        let work = async {
            let mut outcomes = std::pin::pin!(jobs
                .map(|job| {
                    let size = job.record.size;
                    let budget = &budget;
                    async move { (size, self.restore_one(job, opts.dry_run, budget).await) }
                })
                .buffer_unordered(opts.concurrency.max(1)));
            let mut r = MediaRestoreReport::default();
            while let Some((size, done)) = outcomes.next().await {
                r.objects += 1;
                r.bytes += size;
                match done {
                    Done::Present => {
                        r.already_present += 1;
                        progress(MediaEvent::Done {
                            objects: 1,
                            bytes: 0,
                        });
                    }
                    Done::Copied { bytes, retained } => {
                        r.copied += 1;
                        r.copied_bytes += bytes;
                        r.from_retained += u64::from(retained);
                        progress(MediaEvent::Done { objects: 1, bytes });
                    }
                    Done::Failed(f) => {
                        r.failed_total += 1;
                        if r.failed.len() < LISTED_FAILURES {
                            r.failed.push(f);
                        }
                        progress(MediaEvent::Done {
                            objects: 1,
                            bytes: 0,
                        });
                    }
                }
            }
            r
        };
        let (merged, counted) = tokio::join!(merge, work);
        for t in tasks {
            t.abort();
        }
        let extra = merged?;
        report.objects = counted.objects;
        report.bytes = counted.bytes;
        report.copied = counted.copied;
        report.copied_bytes = counted.copied_bytes;
        report.already_present = counted.already_present;
        report.from_retained = counted.from_retained;
        report.failed_total = counted.failed_total;
        report.failed = counted.failed;
        report.extra_in_target = extra;
        if report.failed_total > 0 {
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        if !opts.dry_run {
            report.verified_objects = self.verify(index, opts, &budget).await?;
            report.deep_verified = opts.deep_verify;
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    async fn restore_one(&self, job: Job, dry_run: bool, budget: &MemoryBudget) -> Done {
        let r = &job.record;
        if let Some(t) = &job.present {
            if self.is_same_version(t, r).await {
                return Done::Present;
            }
        }
        if dry_run {
            return Done::Copied {
                bytes: r.size,
                retained: job.locations.first().is_some_and(|l| l != &r.key),
            };
        }
        let mut last_error = None;
        for loc in &job.locations {
            match copy_between(CopyRequest {
                src: self.offsite,
                src_key: loc,
                dst: self.target,
                dst_key: &r.key,
                tag: Tag::Keep,
                crypt: Crypt::Open(self.store.keys()),
                expect_sha256: Some(&r.sha256),
                budget,
            })
            .await
            {
                Ok(c) => {
                    return Done::Copied {
                        bytes: c.size,
                        retained: loc != &r.key,
                    }
                }
                // Not there, or another version there: try the other place.
                Err(e) => last_error = Some(e),
            }
        }
        Done::Failed(FailedObject {
            key: r.key.clone(),
            error: match last_error {
                Some(e) => format!("no offsite copy of this version could be restored: {e}"),
                None => "no location to restore from".into(),
            },
        })
    }

    /// A target object of the right size is this version when its ETag is the
    /// source's (plain uploads) or its metadata names the version and hash.
    async fn is_same_version(&self, t: &Listed, r: &Record) -> bool {
        if t.etag == r.etag {
            return true;
        }
        match self.target.head(&t.key).await {
            Ok(Some(h)) => {
                h.headers.user.get(META_SOURCE_ETAG) == Some(&r.etag)
                    && h.headers
                        .user
                        .get(META_SHA256)
                        .is_none_or(|s| s == &r.sha256)
            }
            _ => false,
        }
    }

    /// Every key of the index is in the target at its size (and, deep, with its SHA-256).
    async fn verify(
        &self,
        index: &IndexSource,
        opts: &RestoreOptions,
        budget: &MemoryBudget,
    ) -> Result<u64, MediaError> {
        let (idx_tx, idx_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (tgt_tx, tgt_rx) = mpsc::channel(CHANNEL_DEPTH);
        let a = index.spawn_into(self.store, idx_tx).await?;
        let t = self.target.clone();
        let b = tokio::spawn(async move { t.list_into("", None, tgt_tx).await });
        let mut idx = Cursor::new(idx_rx);
        let mut target = Cursor::new(tgt_rx);
        let mut problems = Vec::new();
        let mut checked = 0u64;
        let mut deep = Vec::new();
        loop {
            idx.fill().await?;
            let Some(r) = idx.head.take() else { break };
            match target.seek(&r.key, |l: &Listed| &l.key, |_| {}).await? {
                Some(l) if l.size == r.size => {
                    checked += 1;
                    if opts.deep_verify {
                        deep.push(r);
                    }
                }
                Some(l) => problems.push(format!(
                    "{}: {} bytes, the set says {}",
                    r.key, l.size, r.size
                )),
                None => problems.push(format!("{}: missing", r.key)),
            }
        }
        a.abort();
        b.abort();
        let mut hashed = futures::stream::iter(deep)
            .map(|r| async move {
                let (_, sha) = self.target.hash(&r.key, budget).await?;
                Ok::<_, MediaError>((r, sha))
            })
            .buffer_unordered(opts.concurrency.max(1));
        while let Some(res) = hashed.next().await {
            let (r, sha) = res?;
            if sha != r.sha256 && !r.sha256.is_empty() {
                problems.push(format!(
                    "{}: SHA-256 {sha}, the set says {}",
                    r.key, r.sha256
                ));
            }
        }
        if let Some(first) = problems.first() {
            return Err(MediaError::RestoreMismatch {
                bucket: self.target.describe(),
                problems: problems.len(),
                first: first.clone(),
            });
        }
        Ok(checked)
    }
}
