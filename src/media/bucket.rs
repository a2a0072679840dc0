//! One media bucket (the uploads source, the offsite mirror or a restore
//! target) on the one S3 client ([`S3Client`](crate::store::s3::S3Client)):
//! listing, HEAD, server-side copies within it, hashing, and the Object Lock
//! retention its writes carry. The byte path between two buckets is `copy`.

use super::plan::Listed;
use super::MediaError;
use crate::config::S3Config;
use crate::store::s3::client::PutOptions;
pub use crate::store::s3::client::{strip_quotes, Head, Headers, MemoryBudget, Retention};
use crate::store::s3::{Checksums, S3Client};
use crate::store::StoreError;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// User metadata keys wpdr adds to its copies: the source version and content hash.
pub const META_SOURCE_ETAG: &str = "wpdr-source-etag";
pub const META_SHA256: &str = "wpdr-sha256";

/// CopyObject handles up to 5 GiB; beyond that the copy goes in parts.
const MAX_SINGLE_COPY: u64 = 5 << 30;
const COPY_PART: u64 = 512 << 20;

/// What a copy adds to the object's user metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// Record the version read ([`META_SOURCE_ETAG`]) and, when it is known
    /// before the write, the content hash ([`META_SHA256`]): the mirror's copies
    /// describe themselves, so a lost state file costs no re-copy.
    SourceVersion,
    /// Keep the metadata exactly as read (a restore of a mirrored copy).
    Keep,
}

/// The facts of one finished copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub size: u64,
    /// The ETag of the version read (it may be newer than the listing's).
    pub source_etag: String,
    pub dest_etag: String,
    pub sha256: String,
    /// Bytes written at the destination (more than `size` when sealed).
    pub stored_size: u64,
}

/// A media bucket: the one S3 client, checking bytes itself (Content-MD5
/// and SHA-256) rather than through the SDK's CRC32.
#[derive(Clone)]
pub struct Bucket {
    s3: S3Client,
    /// Object Lock for what is written here (the offsite bucket's, if set).
    lock: Option<crate::config::ObjectLock>,
    /// A first listing page slower than this makes the rest parallel.
    cut_after: std::time::Duration,
}

impl Bucket {
    /// Connects and checks the bucket is there and readable.
    pub async fn open(cfg: &S3Config) -> Result<Bucket, StoreError> {
        Ok(Bucket {
            s3: S3Client::open(cfg, Checksums::Caller).await?,
            lock: cfg.object_lock,
            cut_after: super::listing::CUT_AFTER,
        })
    }

    /// Like [`Bucket::open`], creating the bucket when it does not exist (a
    /// restore fills a fresh bucket).
    pub async fn open_or_create(cfg: &S3Config) -> Result<Bucket, StoreError> {
        Ok(Bucket {
            s3: S3Client::open_or_create(cfg, Checksums::Caller).await?,
            lock: cfg.object_lock,
            cut_after: super::listing::CUT_AFTER,
        })
    }

    /// Lists in parallel when a first page takes longer than `d` (zero:
    /// always, past one page). For tests and benchmarks near the server.
    pub fn with_parallel_listing_after(mut self, d: std::time::Duration) -> Self {
        self.cut_after = d;
        self
    }

    /// The retention a write made now carries (none without Object Lock).
    pub fn retention(&self) -> Option<Retention> {
        self.lock.map(|l| Retention {
            mode: l.mode,
            until: chrono::Utc::now() + chrono::Duration::days(i64::from(l.days)),
        })
    }

    /// Deletes `key`; in a locked bucket every version of it, or `Ok(false)`
    /// when a version is still retained (left for a later prune).
    pub async fn delete_expired(&self, key: &str) -> Result<bool, StoreError> {
        if self.lock.is_none() {
            self.s3.delete(key).await?;
            return Ok(true);
        }
        match self.s3.delete_versions(key).await {
            Ok(_) => Ok(true),
            Err(StoreError::AccessDenied { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn name(&self) -> &str {
        self.s3.name()
    }

    pub(crate) fn s3(&self) -> &S3Client {
        &self.s3
    }

    pub fn describe(&self) -> String {
        self.s3.describe()
    }

    pub async fn head(&self, key: &str) -> Result<Option<Head>, StoreError> {
        self.s3.head(key).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.s3.delete(key).await
    }

    /// Streams the listing under `prefix` into `tx`, page by page, skipping
    /// keys under `skip` (the retained area). Fails, rather than going on,
    /// when the server's order is not strictly ascending: the mirror's merge
    /// depends on it.
    pub async fn list_into(
        &self,
        prefix: &str,
        skip: Option<&str>,
        tx: mpsc::Sender<Result<Listed, MediaError>>,
    ) {
        if let Err(e) = self.list_pages(prefix, skip, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    }

    async fn list_pages(
        &self,
        prefix: &str,
        skip: Option<&str>,
        tx: &mpsc::Sender<Result<Listed, MediaError>>,
    ) -> Result<(), MediaError> {
        // Listed in parallel, delivered in order (see `listing`); checked here.
        let (inner_tx, mut inner_rx) = mpsc::channel(1000);
        let s3 = self.s3.clone();
        let under = prefix.to_string();
        let cut_after = self.cut_after;
        let lister = tokio::spawn(async move {
            if let Err(e) = super::listing::list_ordered(&s3, &under, cut_after, &inner_tx).await {
                let _ = inner_tx.send(Err(e)).await;
            }
        });
        let mut last: Option<String> = None;
        while let Some(listed) = inner_rx.recv().await {
            let listed = listed?;
            if let Some(l) = &last {
                if l.as_bytes() >= listed.key.as_bytes() {
                    return Err(MediaError::ListingOrder {
                        bucket: self.describe(),
                        after: l.clone(),
                        key: listed.key,
                    });
                }
            }
            last = Some(listed.key.clone());
            if skip.is_some_and(|s| listed.key.starts_with(s)) {
                continue;
            }
            if tx.send(Ok(listed)).await.is_err() {
                lister.abort();
                return Ok(());
            }
        }
        let _ = lister.await;
        Ok(())
    }

    /// Empties the bucket and deletes it: for a drill's own throw-away
    /// bucket only (the caller checks it is not a bucket the site uses).
    pub async fn delete_all_and_bucket(&self) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        loop {
            let page = self.s3.list_page("", None, None, None).await?;
            if page.objects.is_empty() {
                break;
            }
            for o in &page.objects {
                self.s3.delete(&o.key).await?;
                deleted += 1;
            }
        }
        self.s3.delete_bucket().await?;
        Ok(deleted)
    }

    /// Server-side copy inside this bucket, metadata included (how a version
    /// is retained: no bytes travel through wpdr).
    pub async fn copy_within(&self, from: &str, to: &str, size: u64) -> Result<(), StoreError> {
        self.copy_within_parts(from, to, size, MAX_SINGLE_COPY, COPY_PART)
            .await
    }

    /// [`Bucket::copy_within`] with the thresholds given (tests use small ones).
    pub async fn copy_within_parts(
        &self,
        from: &str,
        to: &str,
        size: u64,
        max_single: u64,
        part: u64,
    ) -> Result<(), StoreError> {
        if size <= max_single {
            return self.s3.copy_object(from, to, self.retention()).await;
        }
        let head = self.head(from).await?.ok_or_else(|| StoreError::NotFound {
            key: from.to_string(),
        })?;
        let opts = PutOptions {
            headers: Some(&head.headers),
            retain: self.retention(),
            ..Default::default()
        };
        // Parts copied server-side carry no Content-MD5: no checksum declared.
        let upload = self.s3.create_upload(to, &opts, true).await?;
        let result = async {
            let mut parts = Vec::new();
            let mut offset = 0u64;
            let mut number = 1;
            while offset < size {
                let end = (offset + part).min(size) - 1;
                parts.push(
                    self.s3
                        .upload_part_copy(from, to, &upload, number, (offset, end))
                        .await?,
                );
                offset = end + 1;
                number += 1;
            }
            self.s3.complete_upload(to, &upload, parts).await
        }
        .await;
        if result.is_err() {
            self.s3.abort_upload(to, &upload).await;
        }
        result.map(|_| ())
    }

    /// Reads the object once: its size and SHA-256.
    pub async fn hash(
        &self,
        key: &str,
        budget: &MemoryBudget,
    ) -> Result<(u64, String), MediaError> {
        let _permit = budget.take(1 << 20).await;
        let mut body = self.s3.get(key, 0).await?.body;
        let mut sha = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(|e| MediaError::Transfer {
            key: key.to_string(),
            detail: format!("reading the body: {e}"),
        })? {
            n += chunk.len() as u64;
            sha.update(&chunk);
        }
        Ok((n, hex::encode(sha.finalize())))
    }
}
