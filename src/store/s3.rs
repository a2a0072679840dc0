//! S3 backend (aws-sdk-s3). Path-style addressing and a custom endpoint make
//! it work with MinIO and Garage as well as AWS.
//!
//! Memory is bounded: a writer holds at most `part_size x (parts_in_flight + 1)`
//! bytes. Transient faults (5xx, throttling, timeouts, dropped connections)
//! are retried by the SDK's standard retry with exponential backoff; a read
//! that breaks mid-body resumes with a ranged GET from the last byte received.

use super::{ObjectMeta, StoreError};
use crate::config::S3Config;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::task::JoinSet;

/// How many times a broken GET body is resumed before giving up.
const READ_RESUMES: u32 = 5;

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    endpoint: String,
    part_size: usize,
    parts_in_flight: usize,
}

/// An S3 client for one configured bucket: static keys or the AWS default
/// chain, path-style when asked, standard retries with backoff, timeouts.
pub(crate) async fn build_client(cfg: &S3Config) -> Client {
    build_client_with(cfg, false).await
}

/// With `own_checksums`, the SDK adds no CRC32 of its own to requests and
/// checks none on responses: for callers that send Content-MD5 and hash the
/// bytes themselves (the media copies), where a third checksum only costs CPU.
pub(crate) async fn build_client_with(cfg: &S3Config, own_checksums: bool) -> Client {
    let mut builder = match &cfg.credentials {
        Some(creds) => aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(Credentials::new(
                creds.access_key_id.clone(),
                creds.secret_access_key.expose().to_string(),
                None,
                None,
                "wpdr-config",
            )),
        None => {
            let shared = aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(cfg.region.clone()))
                .load()
                .await;
            aws_sdk_s3::config::Builder::from(&shared)
        }
    };
    builder = builder
        .region(Region::new(cfg.region.clone()))
        .force_path_style(cfg.path_style)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(6)
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(10)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(300))
                .build(),
        );
    if let Some(ep) = &cfg.endpoint {
        builder = builder.endpoint_url(ep);
    }
    if own_checksums {
        builder = builder
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            );
    }
    Client::from_conf(builder.build())
}

/// Where a bucket lives, for messages (never with credentials).
pub(crate) fn endpoint_label(cfg: &S3Config) -> String {
    cfg.endpoint
        .clone()
        .unwrap_or_else(|| format!("AWS S3 ({})", cfg.region))
}

/// Maps an SDK failure to a store error a person can act on.
pub(crate) fn classify<E>(
    err: SdkError<E, HttpResponse>,
    op: &'static str,
    bucket: &str,
    endpoint: &str,
    key: &str,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = match &err {
        SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
        _ => None,
    };
    match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            return StoreError::Unreachable {
                endpoint: endpoint.to_string(),
                detail: format!("{op}: {}", aws_sdk_s3::error::DisplayErrorContext(&err)),
            }
        }
        _ => {}
    }
    let code = err.code().unwrap_or("").to_string();
    let message = err.message().unwrap_or("").to_string();
    match (code.as_str(), status) {
        ("NoSuchBucket", _) => StoreError::BucketMissing {
            bucket: bucket.to_string(),
        },
        ("NoSuchKey", _) | (_, Some(404)) if op != "HeadBucket" => StoreError::NotFound {
            key: key.to_string(),
        },
        (_, Some(404)) => StoreError::BucketMissing {
            bucket: bucket.to_string(),
        },
        ("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "Forbidden", _)
        | (_, Some(403)) => StoreError::AccessDenied {
            bucket: bucket.to_string(),
            detail: if code.is_empty() {
                "HTTP 403".into()
            } else {
                format!("{code}: {message}")
            },
        },
        _ => StoreError::S3 {
            op,
            key: key.to_string(),
            detail: if code.is_empty() {
                format!("{}", aws_sdk_s3::error::DisplayErrorContext(&err))
            } else {
                format!("{code}: {message}")
            },
        },
    }
}

impl S3Store {
    pub async fn open(cfg: &S3Config) -> Result<Self, StoreError> {
        let client = build_client(cfg).await;
        let store = S3Store {
            client,
            bucket: cfg.bucket.clone(),
            endpoint: endpoint_label(cfg),
            part_size: cfg.part_size,
            parts_in_flight: cfg.parts_in_flight,
        };
        store
            .client
            .head_bucket()
            .bucket(&store.bucket)
            .send()
            .await
            .map_err(|e| store.err(e, "HeadBucket", ""))?;
        Ok(store)
    }

    fn err<E>(&self, e: SdkError<E, HttpResponse>, op: &'static str, key: &str) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        classify(e, op, &self.bucket, &self.endpoint, key)
    }

    pub fn describe(&self) -> String {
        format!("s3://{} at {}", self.bucket, self.endpoint)
    }

    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError> {
        let res = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from(data))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(se))
                if matches!(se.raw().status().as_u16(), 412 | 409)
                    || se.err().code() == Some("PreconditionFailed") =>
            {
                Ok(false)
            }
            Err(e) => Err(self.err(e, "PutObject", key)),
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
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
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err(e, "DeleteObject", key))?;
        Ok(())
    }

    /// Lists with pagination. With a delimiter, also returns the common prefixes.
    pub async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<(Vec<ObjectMeta>, Vec<String>), StoreError> {
        let mut objects = Vec::new();
        let mut dirs = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .max_keys(1000);
            if let Some(d) = delimiter {
                req = req.delimiter(d);
            }
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let out = req
                .send()
                .await
                .map_err(|e| self.err(e, "ListObjectsV2", prefix))?;
            for o in out.contents() {
                if let Some(k) = o.key() {
                    objects.push(ObjectMeta {
                        key: k.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            for p in out.common_prefixes() {
                if let Some(p) = p.prefix() {
                    dirs.push(p.to_string());
                }
            }
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok((objects, dirs))
    }

    pub async fn abort_stale_uploads(
        &self,
        prefix: &str,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, StoreError> {
        let mut aborted = 0;
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.err(e, "ListMultipartUploads", prefix))?;
            for u in out.uploads() {
                let started = u
                    .initiated()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0));
                let stale = started.is_some_and(|t| t < before);
                if let (true, Some(key), Some(id)) = (stale, u.key(), u.upload_id()) {
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await
                        .map_err(|e| self.err(e, "AbortMultipartUpload", key))?;
                    aborted += 1;
                }
            }
            if out.is_truncated() == Some(true) {
                key_marker = out.next_key_marker().map(str::to_string);
                id_marker = out.next_upload_id_marker().map(str::to_string);
                if key_marker.is_none() {
                    break;
                }
            } else {
                break;
            }
        }
        Ok(aborted)
    }

    pub async fn reader(&self, key: &str) -> Result<S3Reader, StoreError> {
        let mut r = S3Reader {
            store: self.clone(),
            key: key.to_string(),
            offset: 0,
            total: None,
            body: None,
            resumes: 0,
        };
        r.open().await?;
        Ok(r)
    }

    pub fn writer(&self, key: &str) -> S3Writer {
        S3Writer {
            store: self.clone(),
            key: key.to_string(),
            buffer: BytesMut::new(),
            upload_id: None,
            next_part: 1,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            finished: false,
        }
    }
}

pub struct S3Reader {
    store: S3Store,
    key: String,
    offset: u64,
    total: Option<u64>,
    body: Option<ByteStream>,
    resumes: u32,
}

impl S3Reader {
    async fn open(&mut self) -> Result<(), StoreError> {
        let mut req = self
            .store
            .client
            .get_object()
            .bucket(&self.store.bucket)
            .key(&self.key);
        if self.offset > 0 {
            req = req.range(format!("bytes={}-", self.offset));
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.store.err(e, "GetObject", &self.key))?;
        if self.total.is_none() {
            self.total = out.content_length().map(|n| n.max(0) as u64);
        }
        self.body = Some(out.body);
        Ok(())
    }

    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        loop {
            if self.total == Some(self.offset) {
                return Ok(None);
            }
            let Some(body) = self.body.as_mut() else {
                return Ok(None);
            };
            match body.try_next().await {
                Ok(Some(b)) => {
                    self.offset += b.len() as u64;
                    return Ok(Some(b));
                }
                Ok(None) => match self.total {
                    Some(t) if t > self.offset => {
                        // The body ended early: resume from where it stopped.
                        self.resume(format!("body ended at {} of {t} bytes", self.offset))
                            .await?;
                    }
                    _ => return Ok(None),
                },
                Err(e) => self.resume(e.to_string()).await?,
            }
        }
    }

    async fn resume(&mut self, why: String) -> Result<(), StoreError> {
        self.resumes += 1;
        if self.resumes > READ_RESUMES {
            return Err(StoreError::S3 {
                op: "GetObject",
                key: self.key.clone(),
                detail: format!("read failed {READ_RESUMES} times, last: {why}"),
            });
        }
        tracing::warn!(key = %self.key, offset = self.offset, %why, "resuming broken read");
        tokio::time::sleep(Duration::from_millis(200 * u64::from(self.resumes))).await;
        self.open().await
    }
}

type PartResult = Result<CompletedPart, StoreError>;

pub struct S3Writer {
    store: S3Store,
    key: String,
    buffer: BytesMut,
    upload_id: Option<String>,
    next_part: i32,
    in_flight: JoinSet<PartResult>,
    done: Vec<CompletedPart>,
    finished: bool,
}

impl S3Writer {
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        let part = self.store.part_size;
        while !data.is_empty() {
            let room = part - self.buffer.len();
            let take = room.min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == part {
                let full = self.buffer.split().freeze();
                self.buffer.reserve(part);
                self.send_part(full).await?;
            }
        }
        Ok(())
    }

    async fn send_part(&mut self, body: Bytes) -> Result<(), StoreError> {
        if self.upload_id.is_none() {
            let out = self
                .store
                .client
                .create_multipart_upload()
                .bucket(&self.store.bucket)
                .key(&self.key)
                // The SDK sends a CRC32 with every part; declaring it here makes the
                // server keep and check it (Garage rejects the completion otherwise).
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .send()
                .await
                .map_err(|e| self.store.err(e, "CreateMultipartUpload", &self.key))?;
            self.upload_id = out.upload_id().map(str::to_string);
        }
        while self.in_flight.len() >= self.store.parts_in_flight {
            self.collect_one().await?;
        }
        let number = self.next_part;
        self.next_part += 1;
        let store = self.store.clone();
        let key = self.key.clone();
        let upload_id = self.upload_id.clone().unwrap_or_default();
        self.in_flight.spawn(async move {
            let out = store
                .client
                .upload_part()
                .bucket(&store.bucket)
                .key(&key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| store.err(e, "UploadPart", &key))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                .set_checksum_crc32_c(out.checksum_crc32_c().map(str::to_string))
                .set_checksum_crc64_nvme(out.checksum_crc64_nvme().map(str::to_string))
                .set_checksum_sha1(out.checksum_sha1().map(str::to_string))
                .set_checksum_sha256(out.checksum_sha256().map(str::to_string))
                .build())
        });
        Ok(())
    }

    async fn collect_one(&mut self) -> Result<(), StoreError> {
        if let Some(res) = self.in_flight.join_next().await {
            let part = res.map_err(|e| StoreError::S3 {
                op: "UploadPart",
                key: self.key.clone(),
                detail: format!("upload task failed: {e}"),
            })??;
            self.done.push(part);
        }
        Ok(())
    }

    pub async fn finish(mut self) -> Result<(), StoreError> {
        let result = self.finish_inner().await;
        if result.is_err() {
            self.abort_inner().await;
        }
        self.finished = true;
        result
    }

    async fn finish_inner(&mut self) -> Result<(), StoreError> {
        if self.upload_id.is_none() {
            // Small object: one PUT.
            let body = self.buffer.split().freeze();
            self.store
                .client
                .put_object()
                .bucket(&self.store.bucket)
                .key(&self.key)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| self.store.err(e, "PutObject", &self.key))?;
            return Ok(());
        }
        if !self.buffer.is_empty() {
            let last = self.buffer.split().freeze();
            self.send_part(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        self.done.sort_by_key(|p| p.part_number());
        let parts = std::mem::take(&mut self.done);
        self.store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(self.upload_id.clone().unwrap_or_default())
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.store.err(e, "CompleteMultipartUpload", &self.key))?;
        self.upload_id = None;
        Ok(())
    }

    async fn abort_inner(&mut self) {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        if let Some(id) = self.upload_id.take() {
            if let Err(e) = self
                .store
                .client
                .abort_multipart_upload()
                .bucket(&self.store.bucket)
                .key(&self.key)
                .upload_id(id)
                .send()
                .await
            {
                tracing::warn!(key = %self.key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "could not abort multipart upload; a later prune removes it");
            }
        }
    }

    pub async fn abort(mut self) {
        self.abort_inner().await;
        self.finished = true;
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.in_flight.abort_all();
        if let Some(id) = self.upload_id.take() {
            // Dropped without finish (an error or cancellation upstream): abort in the background.
            let client = self.store.client.clone();
            let bucket = self.store.bucket.clone();
            let key = self.key.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = client
                        .abort_multipart_upload()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await;
                });
            }
        }
    }
}
