//! Object storage for backup sets: one interface, two backends.
//!
//! * [`LocalStore`]: a directory (a mounted volume, or the embedded default).
//! * [`S3Store`]: any S3-compatible service through aws-sdk-s3.
//!
//! Writes go through [`ObjectWriter`], which streams with bounded memory,
//! hashes with SHA-256 as bytes pass, and makes an object visible only when it
//! is finished (rename for local files, multipart completion for S3), so a
//! killed writer never leaves a complete-looking object behind.

mod local;
pub(crate) mod s3;
pub mod zstd_reader;

pub use local::LocalStore;
pub use s3::S3Store;

use crate::config::StoreConfig;
use crate::exit::{Classify, ExitCode};
use bytes::Bytes;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} does not exist in the store")]
    NotFound { key: String },
    #[error("bucket '{bucket}' does not exist. Create it (or fix store.bucket / WPDR_S3_BUCKET).")]
    BucketMissing { bucket: String },
    #[error("the store refused access to bucket '{bucket}': {detail}. Check the S3 access key and its permissions on the bucket.")]
    AccessDenied { bucket: String, detail: String },
    #[error("cannot reach the S3 endpoint {endpoint}: {detail}. Check store.endpoint and that the service is up; retries were exhausted.")]
    Unreachable { endpoint: String, detail: String },
    #[error("store directory {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("S3 {op} of {key} failed: {detail}")]
    S3 {
        op: &'static str,
        key: String,
        detail: String,
    },
}

impl StoreError {
    /// Whether the store refused a write because these credentials may
    /// only read (restore-side keys, a read-only mount): a restore goes on
    /// without the write, never fails on it.
    pub fn is_write_refused(&self) -> bool {
        match self {
            StoreError::AccessDenied { .. } => true,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ),
            _ => false,
        }
    }
}

impl Classify for StoreError {
    fn exit_code(&self) -> ExitCode {
        match self {
            StoreError::AccessDenied { .. } => ExitCode::StoreAuth,
            StoreError::NotFound { .. } => ExitCode::Integrity,
            _ => ExitCode::StoreUnavailable,
        }
    }
    fn metric_label(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => "store_not_found",
            StoreError::BucketMissing { .. } => "store_bucket_missing",
            StoreError::AccessDenied { .. } => "store_access_denied",
            StoreError::Unreachable { .. } => "store_unreachable",
            StoreError::Io { .. } => "store_io",
            StoreError::S3 { .. } => "store_s3",
        }
    }
}

/// The store requests this process made, by kind: what a listing or scan
/// costs is counted, not guessed (the daemon exports them; tests bound them).
pub mod requests {
    use std::sync::atomic::{AtomicU64, Ordering};

    static LIST: AtomicU64 = AtomicU64::new(0);
    static GET: AtomicU64 = AtomicU64::new(0);
    static HEAD: AtomicU64 = AtomicU64::new(0);
    static PUT: AtomicU64 = AtomicU64::new(0);
    static DELETE: AtomicU64 = AtomicU64::new(0);

    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Counts {
        pub list: u64,
        pub get: u64,
        pub head: u64,
        pub put: u64,
        pub delete: u64,
    }

    impl Counts {
        /// The requests made since `earlier` was taken.
        pub fn since(self, earlier: Counts) -> Counts {
            Counts {
                list: self.list - earlier.list,
                get: self.get - earlier.get,
                head: self.head - earlier.head,
                put: self.put - earlier.put,
                delete: self.delete - earlier.delete,
            }
        }

        pub fn total(self) -> u64 {
            self.list + self.get + self.head + self.put + self.delete
        }
    }

    pub fn counts() -> Counts {
        Counts {
            list: LIST.load(Ordering::Relaxed),
            get: GET.load(Ordering::Relaxed),
            head: HEAD.load(Ordering::Relaxed),
            put: PUT.load(Ordering::Relaxed),
            delete: DELETE.load(Ordering::Relaxed),
        }
    }

    pub(super) fn list() {
        LIST.fetch_add(1, Ordering::Relaxed);
    }
    pub(super) fn get() {
        GET.fetch_add(1, Ordering::Relaxed);
    }
    pub(super) fn head() {
        HEAD.fetch_add(1, Ordering::Relaxed);
    }
    pub(super) fn put() {
        PUT.fetch_add(1, Ordering::Relaxed);
    }
    pub(super) fn delete() {
        DELETE.fetch_add(1, Ordering::Relaxed);
    }
}

/// A listing read a page at a time; see [`Store::pages`].
pub struct Pages<'a> {
    store: &'a Store,
    prefix: &'a str,
    start_after: Option<String>,
    token: Option<String>,
    done: bool,
}

impl Pages<'_> {
    /// The next page, or `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<ObjectMeta>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        requests::list();
        match self.store {
            Store::Local(l) => {
                self.done = true;
                let mut all = l.list(self.prefix).await?;
                if let Some(after) = &self.start_after {
                    all.retain(|o| o.key.as_str() > after.as_str());
                }
                all.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(Some(all))
            }
            Store::S3(s) => {
                let (page, next) = s
                    .list_page(self.prefix, self.start_after.as_deref(), self.token.take())
                    .await?;
                match next {
                    Some(t) => self.token = Some(t),
                    None => self.done = true,
                }
                Ok(Some(page))
            }
        }
    }
}

/// What a listing returns for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// What a finished write produced: the facts a manifest records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

/// The store a command works against.
pub enum Store {
    Local(LocalStore),
    S3(S3Store),
}

impl Store {
    /// Opens the configured store and checks that it is there and usable.
    pub async fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        match cfg {
            StoreConfig::Local { path, .. } => Ok(Store::Local(LocalStore::open(path).await?)),
            StoreConfig::S3(s3) => Ok(Store::S3(S3Store::open(s3).await?)),
        }
    }

    /// Human description, never with credentials.
    pub fn describe(&self) -> String {
        match self {
            Store::Local(l) => format!("local directory {}", l.root().display()),
            Store::S3(s) => s.describe(),
        }
    }

    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<Written, StoreError> {
        let mut w = self.writer(key);
        w.write(&data).await?;
        w.finish().await
    }

    /// Creates `key` only if nothing is there; returns false when it already exists.
    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError> {
        requests::put();
        match self {
            Store::Local(l) => l.put_if_absent(key, data).await,
            Store::S3(s) => s.put_if_absent(key, data).await,
        }
    }

    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, StoreError> {
        let mut r = self.reader(key).await?;
        let mut out = Vec::new();
        while let Some(chunk) = r.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    /// Opens `key` for streaming reads.
    pub async fn reader(&self, key: &str) -> Result<ObjectReader, StoreError> {
        requests::get();
        match self {
            Store::Local(l) => Ok(ObjectReader::Local(l.reader(key).await?)),
            Store::S3(s) => Ok(ObjectReader::S3(s.reader(key).await?)),
        }
    }

    /// Every object under `prefix`, sorted by key (pages come ascending). Paginates for S3.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut pages = self.pages(prefix);
        let mut v = Vec::new();
        while let Some(page) = pages.next().await? {
            v.extend(page);
        }
        Ok(v)
    }

    /// The objects under `prefix` a page at a time (S3: up to 1,000 keys,
    /// ascending; a local directory: one page), for work that need not hold
    /// a whole listing (deleting a prefix, scanning for orphans).
    pub fn pages<'a>(&'a self, prefix: &'a str) -> Pages<'a> {
        self.pages_after(prefix, None)
    }

    /// [`pages`](Self::pages) of only the keys after `start_after`: a
    /// listing of what is newer than a key costs what is newer, not what is older.
    pub fn pages_after<'a>(&'a self, prefix: &'a str, start_after: Option<String>) -> Pages<'a> {
        Pages {
            store: self,
            prefix,
            start_after,
            token: None,
            done: false,
        }
    }

    /// The immediate "sub-directories" of `prefix` (which must end in '/').
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        requests::list();
        let mut v = match self {
            Store::Local(l) => l.list_dirs(prefix).await?,
            Store::S3(s) => s.list(prefix, Some("/")).await?.1,
        };
        v.sort();
        Ok(v)
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        requests::head();
        match self {
            Store::Local(l) => l.head(key).await,
            Store::S3(s) => s.head(key).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        requests::delete();
        match self {
            Store::Local(l) => l.delete(key).await,
            Store::S3(s) => s.delete(key).await,
        }
    }

    /// Deletes everything under `prefix` (which must end in '/'), including, for
    /// a local store, temporary files of writes that never finished. Returns
    /// how many objects went.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let mut deleted = 0;
        let mut pages = self.pages(prefix);
        while let Some(page) = pages.next().await? {
            for o in &page {
                self.delete(&o.key).await?;
            }
            deleted += page.len();
        }
        if let Store::Local(l) = self {
            l.remove_dir(prefix).await?;
        }
        Ok(deleted)
    }

    /// Aborts multipart uploads under `prefix` started before `before`: the
    /// parts a killed writer left behind (they are invisible but cost space).
    pub async fn abort_stale_uploads(
        &self,
        prefix: &str,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, StoreError> {
        match self {
            Store::Local(_) => Ok(0),
            Store::S3(s) => s.abort_stale_uploads(prefix, before).await,
        }
    }

    pub fn writer(&self, key: &str) -> ObjectWriter {
        match self {
            Store::Local(l) => ObjectWriter::new(key, WriterBackend::Local(l.writer(key))),
            Store::S3(s) => ObjectWriter::new(key, WriterBackend::S3(s.writer(key))),
        }
    }
}

/// A streaming read of one object.
pub enum ObjectReader {
    Local(local::LocalReader),
    S3(s3::S3Reader),
}

impl ObjectReader {
    /// The next piece of the object, `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        match self {
            ObjectReader::Local(r) => r.next_chunk().await,
            ObjectReader::S3(r) => r.next_chunk().await,
        }
    }
}

enum WriterBackend {
    Local(local::LocalWriter),
    S3(s3::S3Writer),
}

/// Streams one object into the store, hashing as it goes. Nothing is visible
/// under `key` until [`ObjectWriter::finish`] returns; dropping or aborting
/// the writer leaves no object (for S3 the multipart upload is aborted).
pub struct ObjectWriter {
    key: String,
    hasher: Sha256,
    size: u64,
    backend: WriterBackend,
}

impl ObjectWriter {
    fn new(key: &str, backend: WriterBackend) -> Self {
        ObjectWriter {
            key: key.to_string(),
            hasher: Sha256::new(),
            size: 0,
            backend,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        match &mut self.backend {
            WriterBackend::Local(w) => w.write(data).await,
            WriterBackend::S3(w) => w.write(data).await,
        }
    }

    pub async fn finish(self) -> Result<Written, StoreError> {
        requests::put();
        let sha256 = hex::encode(self.hasher.finalize());
        match self.backend {
            WriterBackend::Local(w) => w.finish().await?,
            WriterBackend::S3(w) => w.finish().await?,
        }
        Ok(Written {
            key: self.key,
            size: self.size,
            sha256,
        })
    }

    pub async fn abort(self) {
        match self.backend {
            WriterBackend::Local(w) => w.abort().await,
            WriterBackend::S3(w) => w.abort().await,
        }
    }
}

/// SHA-256 and size of a whole object, read as a stream.
pub async fn hash_object(store: &Store, key: &str) -> Result<(u64, String), StoreError> {
    let mut r = store.reader(key).await?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(c) = r.next_chunk().await? {
        n += c.len() as u64;
        h.update(&c);
    }
    Ok((n, hex::encode(h.finalize())))
}
