//! One media bucket (the uploads source, the offsite mirror or a restore
//! target) and the byte path between two of them.
//!
//! A copy streams: small objects are read whole into a buffer counted
//! against a shared memory budget, large ones go part by part into a
//! multipart upload, so memory is bounded by the budget whatever the object
//! sizes. Every write sends Content-MD5, so the receiving server checks each
//! byte it stores (the payload itself is not signed: that would hash every
//! byte again on both ends for no further protection); SHA-256 is computed on
//! the way for the media index.

use super::plan::Listed;
use super::MediaError;
use crate::config::S3Config;
use crate::store::s3::{build_client_with, classify, endpoint_label};
use crate::store::StoreError;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use md5::Md5;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// User metadata keys wpdr adds to its copies: the source version and content hash.
pub const META_SOURCE_ETAG: &str = "wpdr-source-etag";
pub const META_SHA256: &str = "wpdr-sha256";

/// CopyObject handles up to 5 GiB; beyond that the copy goes in parts.
const MAX_SINGLE_COPY: u64 = 5 << 30;
const COPY_PART: u64 = 512 << 20;
/// Whole-object attempts when a body breaks mid-stream (requests themselves
/// are retried by the SDK with backoff).
const COPY_ATTEMPTS: u32 = 4;
/// Memory budget permits are counted in KiB.
const PERMIT_BYTES: u64 = 1024;

/// Characters escaped in `x-amz-copy-source` (everything but unreserved and '/').
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// The headers a WordPress upload is served with; all of them travel with a copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub user: BTreeMap<String, String>,
}

/// The served headers of a HEAD or GET response (two SDK types, same accessors).
macro_rules! headers_of {
    ($out:expr) => {
        Headers {
            content_type: $out.content_type().map(str::to_string),
            cache_control: $out.cache_control().map(str::to_string),
            content_disposition: $out.content_disposition().map(str::to_string),
            content_encoding: $out.content_encoding().map(str::to_string),
            content_language: $out.content_language().map(str::to_string),
            user: $out
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        }
    };
}

/// What a HEAD says.
#[derive(Debug, Clone)]
pub struct Head {
    pub size: u64,
    pub etag: String,
    pub headers: Headers,
}

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
}

pub fn strip_quotes(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

#[derive(Clone)]
pub struct Bucket {
    client: Client,
    name: String,
    endpoint: String,
    part_size: usize,
}

impl Bucket {
    async fn new(cfg: &S3Config) -> Bucket {
        Bucket {
            client: build_client_with(cfg, true).await,
            name: cfg.bucket.clone(),
            endpoint: endpoint_label(cfg),
            part_size: cfg.part_size,
        }
    }

    /// Connects and checks the bucket is there and readable.
    pub async fn open(cfg: &S3Config) -> Result<Bucket, StoreError> {
        let b = Bucket::new(cfg).await;
        b.client
            .head_bucket()
            .bucket(&b.name)
            .send()
            .await
            .map_err(|e| b.err(e, "HeadBucket", ""))?;
        Ok(b)
    }

    /// Like [`Bucket::open`], creating the bucket when it does not exist (a
    /// restore fills a fresh bucket).
    pub async fn open_or_create(cfg: &S3Config) -> Result<Bucket, StoreError> {
        match Bucket::open(cfg).await {
            Err(StoreError::BucketMissing { .. }) => {
                let b = Bucket::new(cfg).await;
                let mut create = b.client.create_bucket().bucket(&b.name);
                // Outside us-east-1, AWS (and servers that check it) refuse a
                // bucket without the region as its location constraint.
                if cfg.region != "us-east-1" {
                    create = create.create_bucket_configuration(
                        aws_sdk_s3::types::CreateBucketConfiguration::builder()
                            .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                                cfg.region.as_str(),
                            ))
                            .build(),
                    );
                }
                create
                    .send()
                    .await
                    .map_err(|e| b.err(e, "CreateBucket", ""))?;
                Bucket::open(cfg).await
            }
            other => other,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn describe(&self) -> String {
        format!("s3://{} at {}", self.name, self.endpoint)
    }

    fn err<E>(&self, e: SdkError<E, HttpResponse>, op: &'static str, key: &str) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        classify(e, op, &self.name, &self.endpoint, key)
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
        let mut token: Option<String> = None;
        let mut last: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.name)
                .prefix(prefix)
                .max_keys(1000)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.err(e, "ListObjectsV2", prefix))?;
            for o in out.contents() {
                let Some(key) = o.key() else { continue };
                if let Some(l) = &last {
                    if l.as_bytes() >= key.as_bytes() {
                        return Err(MediaError::ListingOrder {
                            bucket: self.describe(),
                            after: l.clone(),
                            key: key.to_string(),
                        });
                    }
                }
                last = Some(key.to_string());
                if skip.is_some_and(|s| key.starts_with(s)) {
                    continue;
                }
                let listed = Listed {
                    key: key.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: strip_quotes(o.e_tag().unwrap_or("")),
                };
                if tx.send(Ok(listed)).await.is_err() {
                    return Ok(());
                }
            }
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(()),
            }
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<Head>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(Head {
                size: out.content_length().unwrap_or(0).max(0) as u64,
                etag: strip_quotes(out.e_tag().unwrap_or("")),
                headers: headers_of!(out),
            })),
            Err(e) => match self.err(e, "HeadObject", key) {
                StoreError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err(e, "DeleteObject", key))?;
        Ok(())
    }

    /// Empties the bucket and deletes it: for a drill's own throw-away
    /// bucket only (the caller checks it is not a bucket the site uses).
    pub async fn delete_all_and_bucket(&self) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.name)
                .max_keys(1000)
                .send()
                .await
                .map_err(|e| self.err(e, "ListObjectsV2", ""))?;
            let keys: Vec<String> = page
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string))
                .collect();
            if keys.is_empty() {
                break;
            }
            for k in &keys {
                self.delete(k).await?;
                deleted += 1;
            }
        }
        self.client
            .delete_bucket()
            .bucket(&self.name)
            .send()
            .await
            .map_err(|e| self.err(e, "DeleteBucket", ""))?;
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
        let source = format!("{}/{}", self.name, utf8_percent_encode(from, COPY_SOURCE));
        if size <= max_single {
            self.client
                .copy_object()
                .bucket(&self.name)
                .key(to)
                .copy_source(&source)
                .send()
                .await
                .map_err(|e| self.err(e, "CopyObject", from))?;
            return Ok(());
        }
        let head = self.head(from).await?.ok_or_else(|| StoreError::NotFound {
            key: from.to_string(),
        })?;
        let upload = self.create_upload(to, &head.headers).await?;
        let result = async {
            let mut parts = Vec::new();
            let mut offset = 0u64;
            let mut number = 1;
            while offset < size {
                let end = (offset + part).min(size) - 1;
                let out = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.name)
                    .key(to)
                    .upload_id(&upload)
                    .part_number(number)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={offset}-{end}"))
                    .send()
                    .await
                    .map_err(|e| self.err(e, "UploadPartCopy", from))?;
                let r = out.copy_part_result();
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(r.and_then(|r| r.e_tag()).map(str::to_string))
                        .set_checksum_crc32(r.and_then(|r| r.checksum_crc32()).map(str::to_string))
                        .build(),
                );
                offset = end + 1;
                number += 1;
            }
            self.complete_upload(to, &upload, parts).await
        }
        .await;
        if result.is_err() {
            self.abort_upload(to, &upload).await;
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
        let out = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err(e, "GetObject", key))?;
        let mut body = out.body;
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

    async fn create_upload(&self, key: &str, h: &Headers) -> Result<String, StoreError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .set_content_type(h.content_type.clone())
            .set_cache_control(h.cache_control.clone())
            .set_content_disposition(h.content_disposition.clone())
            .set_content_encoding(h.content_encoding.clone())
            .set_content_language(h.content_language.clone())
            .set_metadata(Some(h.user.clone().into_iter().collect()))
            // No checksum algorithm: every part carries Content-MD5 instead.
            .send()
            .await
            .map_err(|e| self.err(e, "CreateMultipartUpload", key))?;
        Ok(out.upload_id().unwrap_or_default().to_string())
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<String, StoreError> {
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err(e, "CompleteMultipartUpload", key))?;
        Ok(strip_quotes(out.e_tag().unwrap_or("")))
    }

    async fn abort_upload(&self, key: &str, upload: &str) {
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload)
            .send()
            .await
        {
            tracing::warn!(key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "could not abort a multipart upload; the bucket's lifecycle or a rerun cleans it");
        }
    }
}

/// A shared bound on the bytes all copies in flight hold at once.
pub struct MemoryBudget {
    permits: Semaphore,
    total: u32,
}

impl MemoryBudget {
    pub fn new(bytes: u64) -> Self {
        let total = (bytes / PERMIT_BYTES).clamp(1, u64::from(u32::MAX >> 4)) as u32;
        MemoryBudget {
            permits: Semaphore::new(total as usize),
            total,
        }
    }

    /// Waits until `bytes` fit; a request larger than the whole budget takes all of it.
    async fn take(&self, bytes: u64) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let want = bytes.div_ceil(PERMIT_BYTES).clamp(1, u64::from(self.total)) as u32;
        // The semaphore is never closed, so this only fails if that changes.
        self.permits.acquire_many(want).await.ok()
    }
}

/// Copies `src_key` of `src` to `dst_key` of `dst` with its headers, tagged
/// as `tag` says. With `expect_sha256`, the bytes read must hash to
/// it or the copy fails before anything becomes visible at the destination.
pub async fn copy_between(
    src: &Bucket,
    src_key: &str,
    dst: &Bucket,
    dst_key: &str,
    tag: Tag,
    expect_sha256: Option<&str>,
    budget: &MemoryBudget,
) -> Result<Copied, MediaError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match copy_once(src, src_key, dst, dst_key, tag, expect_sha256, budget).await {
            Ok(c) => return Ok(c),
            Err(e) if attempt < COPY_ATTEMPTS && e.is_transient() => {
                tracing::warn!(key = src_key, attempt, error = %e, "copy failed, retrying");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn copy_once(
    src: &Bucket,
    src_key: &str,
    dst: &Bucket,
    dst_key: &str,
    tag: Tag,
    expect_sha256: Option<&str>,
    budget: &MemoryBudget,
) -> Result<Copied, MediaError> {
    let out = src
        .client
        .get_object()
        .bucket(&src.name)
        .key(src_key)
        .send()
        .await
        .map_err(|e| src.err(e, "GetObject", src_key))?;
    let size = out.content_length().unwrap_or(0).max(0) as u64;
    let source_etag = strip_quotes(out.e_tag().unwrap_or(""));
    let mut headers = headers_of!(out);
    if tag == Tag::SourceVersion {
        headers
            .user
            .insert(META_SOURCE_ETAG.to_string(), source_etag.clone());
        // Only a buffered object's hash is known before its write begins.
        headers.user.remove(META_SHA256);
    }
    let mut body = out.body;
    let part_size = dst.part_size as u64;
    let broken = |detail: String| MediaError::Transfer {
        key: src_key.to_string(),
        detail,
    };
    let mut sha = Sha256::new();
    let mut whole_md5 = Md5::new();

    if size <= part_size {
        let _permit = budget.take(size).await;
        let mut buf = BytesMut::with_capacity(size as usize);
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| broken(format!("reading the body: {e}")))?
        {
            buf.extend_from_slice(&chunk);
        }
        if buf.len() as u64 != size {
            return Err(broken(format!(
                "the body ended at {} of {size} bytes",
                buf.len()
            )));
        }
        sha.update(&buf);
        whole_md5.update(&buf);
        let sha256 = hex::encode(sha.finalize());
        check_sha(src_key, expect_sha256, &sha256)?;
        let md5 = whole_md5.finalize();
        check_source_md5(src_key, &source_etag, &md5)?;
        if tag == Tag::SourceVersion {
            headers.user.insert(META_SHA256.to_string(), sha256.clone());
        }
        let h = &headers;
        let put = dst
            .client
            .put_object()
            .bucket(&dst.name)
            .key(dst_key)
            .content_md5(aws_smithy_types::base64::encode(md5))
            .set_content_type(h.content_type.clone())
            .set_cache_control(h.cache_control.clone())
            .set_content_disposition(h.content_disposition.clone())
            .set_content_encoding(h.content_encoding.clone())
            .set_content_language(h.content_language.clone())
            .set_metadata(Some(h.user.clone().into_iter().collect()))
            .body(ByteStream::from(buf.freeze()))
            // Content-MD5 already protects the body end to end; signing it
            // would hash every byte once more on both sides.
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| dst.err(e, "PutObject", dst_key))?;
        return Ok(Copied {
            size,
            source_etag,
            dest_etag: strip_quotes(put.e_tag().unwrap_or("")),
            sha256,
        });
    }

    // Large object: one part in memory at a time, the upload aborted on any failure.
    let upload = dst.create_upload(dst_key, &headers).await?;
    let result = async {
        let mut parts = Vec::new();
        let mut number = 1;
        let mut done = 0u64;
        let mut pending = BytesMut::new();
        let mut ended = false;
        while !ended {
            let want = part_size.min(size - done);
            let permit = budget.take(want).await;
            pending.reserve(want as usize);
            while (pending.len() as u64) < want {
                match body
                    .try_next()
                    .await
                    .map_err(|e| broken(format!("reading the body: {e}")))?
                {
                    Some(chunk) => pending.extend_from_slice(&chunk),
                    None => break,
                }
            }
            if (pending.len() as u64) < want {
                return Err(broken(format!(
                    "the body ended at {} of {size} bytes",
                    done + pending.len() as u64
                )));
            }
            // A chunk may overrun the part; the rest starts the next one.
            let rest = pending.split_off(want as usize);
            let part: Bytes = std::mem::replace(&mut pending, rest).freeze();
            sha.update(&part);
            whole_md5.update(&part);
            let part_md5 = Md5::digest(&part);
            done += part.len() as u64;
            ended = done >= size;
            let out = dst
                .client
                .upload_part()
                .bucket(&dst.name)
                .key(dst_key)
                .upload_id(&upload)
                .part_number(number)
                .content_md5(aws_smithy_types::base64::encode(part_md5))
                .body(ByteStream::from(part))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| dst.err(e, "UploadPart", dst_key))?;
            drop(permit);
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                    .build(),
            );
            number += 1;
        }
        let sha256 = hex::encode(sha.finalize());
        check_sha(src_key, expect_sha256, &sha256)?;
        check_source_md5(src_key, &source_etag, &whole_md5.finalize())?;
        let dest_etag = dst.complete_upload(dst_key, &upload, parts).await?;
        Ok::<_, MediaError>((sha256, dest_etag))
    }
    .await;
    match result {
        Ok((sha256, dest_etag)) => Ok(Copied {
            size,
            source_etag,
            dest_etag,
            sha256,
        }),
        Err(e) => {
            dst.abort_upload(dst_key, &upload).await;
            Err(e)
        }
    }
}

fn check_sha(key: &str, expected: Option<&str>, found: &str) -> Result<(), MediaError> {
    match expected {
        Some(want) if !want.is_empty() && want != found => Err(MediaError::Checksum {
            key: key.to_string(),
            expected: want.to_string(),
            found: found.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A single-part ETag is the content's MD5: a cheap end-to-end check of the read.
fn check_source_md5(key: &str, etag: &str, md5: &[u8]) -> Result<(), MediaError> {
    let looks_md5 = etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit());
    let found = hex::encode(md5);
    if looks_md5 && !etag.eq_ignore_ascii_case(&found) {
        return Err(MediaError::Transfer {
            key: key.to_string(),
            detail: format!("the bytes read have MD5 {found} but the object's ETag is {etag}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_escapes_what_s3_needs() {
        let k = "2024/05/a b+c%d ü.jpg";
        assert_eq!(
            utf8_percent_encode(k, COPY_SOURCE).to_string(),
            "2024/05/a%20b%2Bc%25d%20%C3%BC.jpg"
        );
    }

    #[test]
    fn md5_etags_are_checked_and_multipart_ones_skipped() {
        let md5 = Md5::digest(b"hello");
        let good = hex::encode(md5);
        assert!(check_source_md5("k", &good, &md5).is_ok());
        assert!(check_source_md5("k", "0123456789abcdef0123456789abcdef", &md5).is_err());
        assert!(check_source_md5("k", "abc-3", &md5).is_ok());
    }
}
