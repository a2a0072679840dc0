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
use crate::trust::{Keys, Sealer, TrustError, AGE_MAGIC};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};

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
    #[error(transparent)]
    Trust(TrustError),
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
            StoreError::Trust(t) => t.exit_code(),
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
            StoreError::Trust(t) => t.metric_label(),
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
        match &self.store.backend {
            Backend::Local(l) => {
                self.done = true;
                let mut all = l.list(self.prefix).await?;
                if let Some(after) = &self.start_after {
                    all.retain(|o| o.key.as_str() > after.as_str());
                }
                all.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(Some(all))
            }
            Backend::S3(s) => {
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

/// The store a command works against: a backend, and the keys that seal
/// what is written through [`Store::sealed_writer`] and open what is read.
pub struct Store {
    backend: Backend,
    keys: Keys,
}

enum Backend {
    Local(LocalStore),
    S3(S3Store),
}

impl From<LocalStore> for Store {
    fn from(l: LocalStore) -> Self {
        Store {
            backend: Backend::Local(l),
            keys: Keys::default(),
        }
    }
}

impl From<S3Store> for Store {
    fn from(s: S3Store) -> Self {
        Store {
            backend: Backend::S3(s),
            keys: Keys::default(),
        }
    }
}

impl Store {
    /// Opens the configured store and checks that it is there and usable.
    pub async fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        match cfg {
            StoreConfig::Local { path, .. } => Ok(LocalStore::open(path).await?.into()),
            StoreConfig::S3(s3) => Ok(S3Store::open(s3).await?.into()),
        }
    }

    /// The site's store with the keys its configuration names (recipients,
    /// signing key, pinned verifying keys; the identity file, which
    /// `identity` overrides).
    pub async fn open_site(
        cfg: &crate::config::Config,
        identity: Option<&std::path::Path>,
    ) -> Result<Store, StoreError> {
        let keys = Keys::from_config(&cfg.encryption, &cfg.signing, identity)
            .map_err(StoreError::Trust)?;
        Ok(Self::open(&cfg.store).await?.with_keys(keys))
    }

    /// This store, sealing and opening with `keys`.
    pub fn with_keys(mut self, keys: Keys) -> Self {
        self.keys = keys;
        self
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The local directory behind this store, if it is one.
    pub fn local(&self) -> Option<&LocalStore> {
        match &self.backend {
            Backend::Local(l) => Some(l),
            Backend::S3(_) => None,
        }
    }

    /// Human description, never with credentials.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(l) => format!("local directory {}", l.root().display()),
            Backend::S3(s) => s.describe(),
        }
    }

    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<Written, StoreError> {
        let mut w = self.writer(key);
        w.write(&data).await?;
        w.finish().await
    }

    /// [`put_bytes`](Self::put_bytes) through a [`kept_writer`](Self::kept_writer).
    pub async fn put_kept(&self, key: &str, data: Bytes) -> Result<Written, StoreError> {
        let mut w = self.kept_writer(key);
        w.write(&data).await?;
        w.finish().await
    }

    /// [`put_bytes`](Self::put_bytes) through a [`sealed_writer`](Self::sealed_writer).
    pub async fn put_sealed(&self, key: &str, data: Bytes) -> Result<Written, StoreError> {
        let mut w = self.sealed_writer(key)?;
        w.write(&data).await?;
        w.finish().await
    }

    /// Creates `key` only if nothing is there; returns false when it already exists.
    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError> {
        requests::put();
        match &self.backend {
            Backend::Local(l) => l.put_if_absent(key, data).await,
            Backend::S3(s) => s.put_if_absent(key, data).await,
        }
    }

    /// The whole object, opened (decrypted) if it is sealed.
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, StoreError> {
        Ok(self.get_with_digest(key).await?.0)
    }

    /// [`get_bytes`](Self::get_bytes), with the size and SHA-256 of the
    /// object as stored: what to compare with a manifest or an index.
    pub async fn get_with_digest(&self, key: &str) -> Result<(Bytes, (u64, String)), StoreError> {
        let mut r = self.reader(key).await?;
        let mut out = Vec::new();
        while let Some(chunk) = r.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok((Bytes::from(out), r.stored()))
    }

    /// Opens `key` for streaming reads. A sealed object (an age file) is
    /// decrypted with the store's identities as it streams; a plain one is
    /// passed through. Either way [`ObjectReader::stored`] gives the size
    /// and SHA-256 of the bytes as stored, which is what manifests record.
    pub async fn reader(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let mut raw = self.raw_reader(key).await?;
        let mut head = Vec::new();
        while head.len() < AGE_MAGIC.len() {
            match raw.next_chunk().await? {
                Some(c) => head.extend_from_slice(&c),
                None => break,
            }
        }
        if !head.starts_with(AGE_MAGIC) {
            return Ok(raw.with_pending(head));
        }
        let failure = Arc::new(Mutex::new(None));
        let stored = raw.stored.clone();
        let first = futures::stream::once(std::future::ready(Ok(Bytes::from(head))));
        let rest = futures::stream::try_unfold(raw, |mut r| async move {
            Ok::<_, StoreError>(r.next_chunk().await?.map(|c| (c, r)))
        });
        let seen = failure.clone();
        let source = first
            .chain(rest)
            .map_err(move |e: StoreError| {
                let io = std::io::Error::other(e.to_string());
                if let Ok(mut slot) = seen.lock() {
                    *slot = Some(e);
                }
                io
            })
            .boxed()
            .into_async_read();
        let opened = self.keys.open_stream(key, source).await.map_err(|e| {
            match failure.lock().ok().and_then(|mut s| s.take()) {
                Some(store_error) => store_error,
                None => StoreError::Trust(e),
            }
        })?;
        Ok(ObjectReader {
            source: Source::Sealed {
                stream: Box::pin(opened),
                failure,
            },
            pending: None,
            stored,
            key: key.to_string(),
        })
    }

    /// Opens `key` for reading its bytes exactly as stored (sealed or not):
    /// for hashing against a manifest without any key.
    pub async fn raw_reader(&self, key: &str) -> Result<ObjectReader, StoreError> {
        requests::get();
        let source = match &self.backend {
            Backend::Local(l) => Source::Local(l.reader(key).await?),
            Backend::S3(s) => Source::S3(s.reader(key).await?),
        };
        Ok(ObjectReader {
            source,
            pending: None,
            stored: Arc::default(),
            key: key.to_string(),
        })
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
        let mut v = match &self.backend {
            Backend::Local(l) => l.list_dirs(prefix).await?,
            Backend::S3(s) => s.list(prefix, Some("/")).await?.1,
        };
        v.sort();
        Ok(v)
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        requests::head();
        match &self.backend {
            Backend::Local(l) => l.head(key).await,
            Backend::S3(s) => s.head(key).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        requests::delete();
        match &self.backend {
            Backend::Local(l) => l.delete(key).await,
            Backend::S3(s) => s.delete(key).await,
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
        if let Backend::Local(l) = &self.backend {
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
        match &self.backend {
            Backend::Local(_) => Ok(0),
            Backend::S3(s) => s.abort_stale_uploads(prefix, before).await,
        }
    }

    /// A writer that stores bytes as given, under no retention: for what
    /// changes or may go (locks, state, reports).
    pub fn writer(&self, key: &str) -> ObjectWriter {
        self.make_writer(key, false)
    }

    /// A writer for what a set or the archive keeps and needs no key to
    /// read (manifests, signatures, segment indexes): plain, and under the
    /// store's Object Lock retention when one is configured.
    pub fn kept_writer(&self, key: &str) -> ObjectWriter {
        self.make_writer(key, true)
    }

    /// A writer for what holds site data: sealed to the store's recipients
    /// (plain when none are configured) and kept like
    /// [`kept_writer`](Self::kept_writer).
    pub fn sealed_writer(&self, key: &str) -> Result<ObjectWriter, StoreError> {
        let sealer = self.keys.sealer(key).map_err(StoreError::Trust)?;
        let mut w = self.make_writer(key, true);
        w.sealer = sealer;
        Ok(w)
    }

    fn make_writer(&self, key: &str, kept: bool) -> ObjectWriter {
        let backend = match &self.backend {
            Backend::Local(l) => WriterBackend::Local(l.writer(key)),
            Backend::S3(s) => {
                WriterBackend::S3(s.writer(key, kept.then(|| s.retention()).flatten()))
            }
        };
        ObjectWriter::new(key, backend, None)
    }

    /// Until when an object written now is kept (Object Lock), if it is.
    pub fn retained_until(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match &self.backend {
            Backend::S3(s) => s.retention().map(|r| r.until),
            Backend::Local(_) => None,
        }
    }

    /// The Object Lock the store writes under, if any.
    pub fn object_lock(&self) -> Option<crate::config::ObjectLock> {
        match &self.backend {
            Backend::S3(s) => s.object_lock(),
            Backend::Local(_) => None,
        }
    }
}

/// Size and SHA-256 of an object's bytes as stored, counted as they arrive.
#[derive(Default)]
struct StoredDigest {
    size: u64,
    hasher: Sha256,
}

enum Source {
    Local(local::LocalReader),
    S3(s3::S3Reader),
    Sealed {
        stream: std::pin::Pin<Box<dyn futures::io::AsyncRead + Send>>,
        /// The store error behind a failed read, kept whole (the age
        /// reader sees only an io::Error).
        failure: Arc<Mutex<Option<StoreError>>>,
    },
}

/// A streaming read of one object.
pub struct ObjectReader {
    source: Source,
    /// Bytes read ahead to tell a sealed object from a plain one.
    pending: Option<Bytes>,
    stored: Arc<Mutex<StoredDigest>>,
    key: String,
}

impl ObjectReader {
    fn with_pending(mut self, head: Vec<u8>) -> Self {
        if !head.is_empty() {
            self.pending = Some(Bytes::from(head));
        }
        self
    }

    /// The next piece of the object, `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        if let Some(p) = self.pending.take() {
            return Ok(Some(p));
        }
        let chunk = match &mut self.source {
            Source::Local(r) => r.next_chunk().await?,
            Source::S3(r) => r.next_chunk().await?,
            Source::Sealed { stream, failure } => {
                use futures::io::AsyncReadExt;
                let mut buf = vec![0u8; 64 * 1024];
                let n = stream.read(&mut buf).await.map_err(|e| {
                    match failure.lock().ok().and_then(|mut s| s.take()) {
                        Some(store_error) => store_error,
                        None => StoreError::Trust(crate::trust::TrustError::Decrypt {
                            what: self.key.clone(),
                            detail: e.to_string(),
                        }),
                    }
                })?;
                if n == 0 {
                    return Ok(None);
                }
                buf.truncate(n);
                return Ok(Some(Bytes::from(buf)));
            }
        };
        if let Some(c) = &chunk {
            if let Ok(mut d) = self.stored.lock() {
                d.size += c.len() as u64;
                d.hasher.update(c);
            }
        }
        Ok(chunk)
    }

    /// Size and SHA-256 of the bytes as stored that were read so far (the
    /// whole object once `next_chunk` returned `None`).
    pub fn stored(&self) -> (u64, String) {
        match self.stored.lock() {
            Ok(d) => (d.size, hex::encode(d.hasher.clone().finalize())),
            Err(_) => (0, String::new()),
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
/// A sealing writer encrypts first: size and hash are of what is stored.
pub struct ObjectWriter {
    key: String,
    hasher: Sha256,
    size: u64,
    backend: WriterBackend,
    sealer: Option<Sealer>,
}

impl ObjectWriter {
    fn new(key: &str, backend: WriterBackend, sealer: Option<Sealer>) -> Self {
        ObjectWriter {
            key: key.to_string(),
            hasher: Sha256::new(),
            size: 0,
            backend,
            sealer,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        match &mut self.sealer {
            Some(s) => {
                let sealed = s.seal(data).map_err(StoreError::Trust)?;
                self.store(&sealed).await
            }
            None => self.store(data).await,
        }
    }

    async fn store(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        self.hasher.update(data);
        self.size += data.len() as u64;
        match &mut self.backend {
            WriterBackend::Local(w) => w.write(data).await,
            WriterBackend::S3(w) => w.write(data).await,
        }
    }

    pub async fn finish(mut self) -> Result<Written, StoreError> {
        if let Some(s) = self.sealer.take() {
            let last = s.finish().map_err(StoreError::Trust)?;
            self.store(&last).await?;
        }
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
/// Needs no key: a sealed object is hashed as stored.
pub async fn hash_object(store: &Store, key: &str) -> Result<(u64, String), StoreError> {
    let mut r = store.raw_reader(key).await?;
    while r.next_chunk().await?.is_some() {}
    Ok(r.stored())
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::x25519;

    async fn sealed_store(dir: &std::path::Path, identity: bool) -> (Store, x25519::Identity) {
        let id = x25519::Identity::generate();
        let mut keys = Keys::new(vec![id.to_public()]);
        if identity {
            keys = keys.with_identities(vec![id.clone()]);
        }
        let store = Store::from(LocalStore::open(dir).await.unwrap()).with_keys(keys);
        (store, id)
    }

    #[tokio::test]
    async fn sealed_objects_open_through_the_same_reader_and_hash_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = sealed_store(dir.path(), true).await;
        let text: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let compressed = zstd::encode_all(text.as_slice(), 1).unwrap();
        let mut w = store.sealed_writer("s/a.zst").unwrap();
        for piece in compressed.chunks(10_000) {
            w.write(piece).await.unwrap();
        }
        let written = w.finish().await.unwrap();
        let raw = std::fs::read(dir.path().join("s/a.zst")).unwrap();
        assert!(raw.starts_with(AGE_MAGIC));
        assert_eq!(
            hash_object(&store, "s/a.zst").await.unwrap(),
            (written.size, written.sha256.clone())
        );
        // Opened transparently; the stored digest is what the manifest recorded.
        let (opened, stored) = store.get_with_digest("s/a.zst").await.unwrap();
        assert_eq!(opened.as_ref(), compressed.as_slice());
        assert_eq!(stored, (written.size, written.sha256.clone()));
        let mut r =
            zstd_reader::ZstdReader::open(&store, "s/a.zst", Some((written.size, written.sha256)))
                .await
                .unwrap();
        let mut out = Vec::new();
        while r
            .next_into(|b| {
                out.extend_from_slice(b);
                Ok(())
            })
            .await
            .unwrap()
        {}
        assert_eq!(out, text);
        // Plain objects pass through untouched.
        store
            .put_bytes("s/plain.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(
            store.get_bytes("s/plain.json").await.unwrap().as_ref(),
            b"{}"
        );
    }

    #[tokio::test]
    async fn without_the_identity_a_sealed_object_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = sealed_store(dir.path(), false).await;
        store
            .put_sealed("s/rows.sql.zst", Bytes::from_static(b"INSERT"))
            .await
            .unwrap();
        let e = store.get_bytes("s/rows.sql.zst").await.unwrap_err();
        assert!(
            matches!(e, StoreError::Trust(TrustError::IdentityMissing { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("s/rows.sql.zst"), "{e}");
        assert_eq!(e.exit_code(), ExitCode::KeyRequired);
    }
}
