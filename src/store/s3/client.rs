//! The one S3 client. Every byte wpdr sends to or reads from S3 — backup
//! sets in the store, the media mirror, a restore's target bucket — goes
//! through [`S3Client`]: one SDK configuration (static keys or the AWS
//! default chain, path-style when asked, timeouts), one retry policy (the
//! SDK retries requests with backoff; a body that breaks mid-stream is
//! retried by the caller per [`body_backoff`] up to [`BODY_ATTEMPTS`]), and
//! one mapping of failures to [`StoreError`]s a person can act on.
//! What is copied where, and why, is the callers' business (the store's
//! writer and reader, `media::bucket`).

use crate::config::S3Config;
use crate::store::StoreError;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Attempts at a transfer whose body breaks mid-stream (requests themselves
/// are retried by the SDK).
pub const BODY_ATTEMPTS: u32 = 5;

/// The pause before body attempt `attempt` (1-based) is retried.
pub fn body_backoff(attempt: u32) -> Duration {
    Duration::from_millis(300 * u64::from(attempt))
}

/// Characters escaped in `x-amz-copy-source` (everything but unreserved and '/').
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Who checks the bytes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksums {
    /// The SDK adds a CRC32 to every request and checks responses (the store).
    Sdk,
    /// The caller sends Content-MD5 and hashes the bytes itself (the media
    /// copies): a third checksum would only cost CPU.
    Caller,
}

/// The headers an object is served with; all of them travel with a copy.
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

/// Sets an object's served headers and user metadata on a PUT or a
/// CreateMultipartUpload (two SDK builders, same setters).
macro_rules! with_headers {
    ($req:expr, $headers:expr) => {{
        let h: Option<&Headers> = $headers;
        let d = h.cloned().unwrap_or_default();
        $req.set_content_type(d.content_type)
            .set_cache_control(d.cache_control)
            .set_content_disposition(d.content_disposition)
            .set_content_encoding(d.content_encoding)
            .set_content_language(d.content_language)
            .set_metadata(h.map(|h| h.user.clone().into_iter().collect()))
    }};
}

/// What a HEAD says.
#[derive(Debug, Clone)]
pub struct Head {
    pub size: u64,
    pub etag: String,
    pub headers: Headers,
}

/// One object as a listing shows it (ETag without quotes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub etag: String,
    /// LastModified, in Unix seconds: when this version was written (a
    /// point-in-time media restore keeps the versions written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<i64>,
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct ListPage {
    pub objects: Vec<Listed>,
    /// With a delimiter: the common prefixes ("directories").
    pub prefixes: Vec<String>,
    /// The continuation token of the next page; `None` on the last one.
    pub next: Option<String>,
}

/// An open GET: the object's facts and its body.
pub struct Get {
    /// Bytes in this response (from the range start to the end).
    pub length: Option<u64>,
    pub etag: String,
    pub headers: Headers,
    pub body: ByteStream,
    /// The server sent the object's stored full-object checksum (CRC32,
    /// CRC64, SHA-256, ...), which the SDK checks the body against as it is
    /// read: a broken read fails at its end without an MD5 of our own.
    pub verified: bool,
}

/// An unfinished multipart upload, as ListMultipartUploads reports it.
#[derive(Debug, Clone)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<chrono::DateTime<chrono::Utc>>,
}

/// How a PUT or a multipart upload is written.
#[derive(Debug, Default)]
pub struct PutOptions<'a> {
    pub headers: Option<&'a Headers>,
    /// Content-MD5: the server checks every byte it stores against it.
    pub content_md5: Option<[u8; 16]>,
    /// Object Lock retention: nobody deletes the object before this date.
    pub retain: Option<Retention>,
    /// CRC32 of the body (x-amz-checksum-crc32): the server checks every
    /// byte against it, at a fraction of MD5's cost.
    pub crc32: Option<u32>,
}

/// An Object Lock retention for one write.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub mode: crate::config::LockMode,
    pub until: chrono::DateTime<chrono::Utc>,
}

impl Retention {
    fn mode(&self) -> aws_sdk_s3::types::ObjectLockMode {
        aws_sdk_s3::types::ObjectLockMode::from(self.mode.as_str())
    }
    fn until(&self) -> aws_smithy_types::DateTime {
        aws_smithy_types::DateTime::from_millis(self.until.timestamp_millis())
    }
}

/// Base64 MD5 of zero bytes.
const EMPTY_BODY_MD5: &str = "1B2M2Y8AsgTpgAmY7PhCfg==";

pub fn strip_quotes(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

/// Where a bucket lives, for messages (never with credentials).
pub(crate) fn endpoint_label(cfg: &S3Config) -> String {
    cfg.endpoint
        .clone()
        .unwrap_or_else(|| format!("AWS S3 ({})", cfg.region))
}

/// The SDK client for one configured bucket: static keys or the AWS default
/// chain, path-style when asked, standard retries with backoff, timeouts.
async fn build_client(cfg: &S3Config, checksums: Checksums) -> Result<Client, StoreError> {
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
    if let Some(ca) = &cfg.ca_bundle {
        builder = builder.http_client(https_client_trusting(ca, &endpoint_label(cfg))?);
    }
    if checksums == Checksums::Caller {
        builder = builder
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            );
    }
    Ok(Client::from_conf(builder.build()))
}

/// Whether a GET's response carries a checksum of the whole object, which
/// the SDK validates the body against (a multipart object's part-level
/// checksum, `…-N`, it cannot).
fn full_object_checksum(out: &aws_sdk_s3::operation::get_object::GetObjectOutput) -> bool {
    if matches!(
        out.checksum_type(),
        Some(aws_sdk_s3::types::ChecksumType::Composite)
    ) {
        return false;
    }
    [
        out.checksum_crc32(),
        out.checksum_crc32_c(),
        out.checksum_crc64_nvme(),
        out.checksum_sha1(),
        out.checksum_sha256(),
    ]
    .into_iter()
    .flatten()
    .any(|v| !is_part_level(v))
}

/// `<base64>-<parts>`: a checksum of part checksums.
fn is_part_level(checksum: &str) -> bool {
    checksum
        .rsplit_once('-')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// An HTTPS client that also trusts the CA bundle's certificates (an
/// in-house MinIO or S3 gateway), besides the system's roots.
fn https_client_trusting(
    ca: &crate::config::CaBundle,
    endpoint: &str,
) -> Result<aws_smithy_runtime_api::client::http::SharedHttpClient, StoreError> {
    use aws_smithy_http_client::tls;
    let context = tls::TlsContext::builder()
        .with_trust_store(tls::TrustStore::default().with_pem_certificate(ca.pem().to_vec()))
        .build()
        .map_err(|e| StoreError::Unreachable {
            endpoint: endpoint.to_string(),
            detail: format!("the CA bundle {} cannot be used: {e}", ca.path().display()),
        })?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https())
}

/// Maps an SDK failure to a store error a person can act on.
fn classify<E>(
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

/// One bucket, with the operations wpdr uses on it.
#[derive(Clone)]
pub struct S3Client {
    client: Client,
    bucket: String,
    endpoint: String,
    region: String,
    part_size: usize,
    parts_in_flight: usize,
}

impl S3Client {
    /// A client for the bucket, not yet checked.
    pub async fn new(cfg: &S3Config, checksums: Checksums) -> Result<S3Client, StoreError> {
        Ok(S3Client {
            client: build_client(cfg, checksums).await?,
            bucket: cfg.bucket.clone(),
            endpoint: endpoint_label(cfg),
            region: cfg.region.clone(),
            part_size: cfg.part_size,
            parts_in_flight: cfg.parts_in_flight,
        })
    }

    /// Connects and checks the bucket is there and readable.
    pub async fn open(cfg: &S3Config, checksums: Checksums) -> Result<S3Client, StoreError> {
        let c = S3Client::new(cfg, checksums).await?;
        c.client
            .head_bucket()
            .bucket(&c.bucket)
            .send()
            .await
            .map_err(|e| c.err(e, "HeadBucket", ""))?;
        Ok(c)
    }

    /// Like [`S3Client::open`], creating the bucket when it does not exist
    /// (a restore fills a fresh bucket).
    pub async fn open_or_create(
        cfg: &S3Config,
        checksums: Checksums,
    ) -> Result<S3Client, StoreError> {
        match S3Client::open(cfg, checksums).await {
            Err(StoreError::BucketMissing { .. }) => {
                let c = S3Client::new(cfg, checksums).await?;
                c.create_bucket().await?;
                S3Client::open(cfg, checksums).await
            }
            other => other,
        }
    }

    async fn create_bucket(&self) -> Result<(), StoreError> {
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        // Outside us-east-1, AWS (and servers that check it) refuse a
        // bucket without the region as its location constraint.
        if self.region != "us-east-1" {
            create = create.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        self.region.as_str(),
                    ))
                    .build(),
            );
        }
        create
            .send()
            .await
            .map_err(|e| self.err(e, "CreateBucket", ""))?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.bucket
    }

    pub fn describe(&self) -> String {
        format!("s3://{} at {}", self.bucket, self.endpoint)
    }

    /// The configured multipart part size, and how many parts a writer keeps in flight.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    pub fn parts_in_flight(&self) -> usize {
        self.parts_in_flight
    }

    fn err<E>(&self, e: SdkError<E, HttpResponse>, op: &'static str, key: &str) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        classify(e, op, &self.bucket, &self.endpoint, key)
    }

    pub async fn head(&self, key: &str) -> Result<Option<Head>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
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
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err(e, "DeleteObject", key))?;
        Ok(())
    }

    /// Deletes every version of `key` (and its delete markers): in a
    /// versioned bucket (every Object Lock bucket is one) a plain delete
    /// only hides an object. A version still under retention is refused by
    /// the server, and that refusal is returned.
    pub async fn delete_versions(&self, key: &str) -> Result<usize, StoreError> {
        let mut deleted = 0;
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.err(e, "ListObjectVersions", key))?;
            let versions = page
                .versions()
                .iter()
                .filter(|v| v.key() == Some(key))
                .map(|v| v.version_id().map(String::from));
            let markers = page
                .delete_markers()
                .iter()
                .filter(|m| m.key() == Some(key))
                .map(|m| m.version_id().map(String::from));
            for version in versions.chain(markers).collect::<Vec<_>>() {
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .set_version_id(version)
                    .send()
                    .await
                    .map_err(|e| self.err(e, "DeleteObject (version)", key))?;
                deleted += 1;
            }
            if page.is_truncated() != Some(true) {
                return Ok(deleted);
            }
            key_marker = page.next_key_marker().map(String::from);
            version_marker = page.next_version_id_marker().map(String::from);
        }
    }

    /// Whether the bucket has Object Lock enabled (`None`: the server
    /// does not say, e.g. it does not implement Object Lock).
    pub async fn object_lock_enabled(&self) -> Result<Option<bool>, StoreError> {
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    .is_some_and(|e| e.as_str() == "Enabled"),
            )),
            Err(e) => match self.err(e, "GetObjectLockConfiguration", "") {
                StoreError::AccessDenied { .. } => Err(StoreError::AccessDenied {
                    bucket: self.bucket.clone(),
                    detail: "may not read its Object Lock configuration (s3:GetBucketObjectLockConfiguration)".into(),
                }),
                StoreError::NotFound { .. } => Ok(Some(false)),
                StoreError::S3 { detail, .. }
                    if detail.contains("ObjectLockConfigurationNotFound") =>
                {
                    Ok(Some(false))
                }
                StoreError::S3 { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    pub async fn delete_bucket(&self) -> Result<(), StoreError> {
        self.client
            .delete_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| self.err(e, "DeleteBucket", ""))?;
        Ok(())
    }

    /// One page (up to 1,000 keys, ascending) of the listing under `prefix`.
    pub async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        token: Option<String>,
    ) -> Result<ListPage, StoreError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(1000)
            .set_delimiter(delimiter.map(str::to_string))
            .set_start_after(start_after.map(str::to_string))
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| self.err(e, "ListObjectsV2", prefix))?;
        Ok(ListPage {
            objects: out
                .contents()
                .iter()
                .filter_map(|o| {
                    o.key().map(|k| Listed {
                        key: k.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        etag: strip_quotes(o.e_tag().unwrap_or("")),
                        modified: o.last_modified().map(|t| t.secs()),
                    })
                })
                .collect(),
            prefixes: out
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_string))
                .collect(),
            next: match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => Some(t.to_string()),
                _ => None,
            },
        })
    }

    /// Opens a GET of `key` from byte `from` on.
    pub async fn get(&self, key: &str, from: u64) -> Result<Get, StoreError> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if from > 0 {
            req = req.range(format!("bytes={from}-"));
        } else {
            // The stored checksum, if the object has one: the SDK validates
            // the body against it (explicitly enabled, whatever the client's
            // response-validation setting).
            req = req.checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled);
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.err(e, "GetObject", key))?;
        Ok(Get {
            length: out.content_length().map(|n| n.max(0) as u64),
            etag: strip_quotes(out.e_tag().unwrap_or("")),
            headers: headers_of!(out),
            verified: from == 0 && full_object_checksum(&out),
            body: out.body,
        })
    }

    /// One PUT; returns the new object's ETag. With Content-MD5 the body is
    /// not signed as well: the MD5 already protects it end to end, and
    /// signing would hash every byte once more on both sides.
    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        opts: &PutOptions<'_>,
    ) -> Result<String, StoreError> {
        let req = with_headers!(
            self.client.put_object().bucket(&self.bucket).key(key),
            opts.headers
        )
        .set_content_md5(opts.content_md5.map(aws_smithy_types::base64::encode))
        .set_checksum_crc32(
            opts.crc32
                .map(|c| aws_smithy_types::base64::encode(c.to_be_bytes())),
        )
        .set_object_lock_mode(opts.retain.map(|r| r.mode()))
        .set_object_lock_retain_until_date(opts.retain.map(|r| r.until()))
        .body(ByteStream::from(body));
        let out = if opts.content_md5.is_some() || opts.crc32.is_some() {
            req.customize().disable_payload_signing().send().await
        } else {
            req.send().await
        }
        .map_err(|e| self.err(e, "PutObject", key))?;
        Ok(strip_quotes(out.e_tag().unwrap_or("")))
    }

    /// A PUT that succeeds only when no object has the key; `false` when one has.
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

    /// Server-side copy of a whole object (up to 5 GiB) inside this bucket, metadata included.
    pub async fn copy_object(
        &self,
        from: &str,
        to: &str,
        retain: Option<Retention>,
    ) -> Result<(), StoreError> {
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(self.copy_source(from))
            .set_object_lock_mode(retain.map(|r| r.mode()))
            .set_object_lock_retain_until_date(retain.map(|r| r.until()))
            .customize()
            .mutate_request(move |req| {
                // A write under Object Lock must carry Content-MD5 (servers
                // ask it of copies too): that of the copy request's empty body.
                if retain.is_some() {
                    req.headers_mut().insert("Content-MD5", EMPTY_BODY_MD5);
                }
            })
            .send()
            .await
            .map_err(|e| self.err(e, "CopyObject", from))?;
        Ok(())
    }

    fn copy_source(&self, key: &str) -> String {
        format!("{}/{}", self.bucket, utf8_percent_encode(key, COPY_SOURCE))
    }

    /// Starts a multipart upload. Without Content-MD5 per part the SDK's
    /// CRC32 is declared, so the server keeps and checks it (Garage rejects
    /// the completion otherwise).
    pub async fn create_upload(
        &self,
        key: &str,
        opts: &PutOptions<'_>,
        part_md5: bool,
    ) -> Result<String, StoreError> {
        let out = with_headers!(
            self.client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key),
            opts.headers
        )
        .set_checksum_algorithm((!part_md5).then_some(ChecksumAlgorithm::Crc32))
        .set_object_lock_mode(opts.retain.map(|r| r.mode()))
        .set_object_lock_retain_until_date(opts.retain.map(|r| r.until()))
        .send()
        .await
        .map_err(|e| self.err(e, "CreateMultipartUpload", key))?;
        Ok(out.upload_id().unwrap_or_default().to_string())
    }

    /// Uploads part `number`; with `md5`, sent as Content-MD5 and unsigned.
    pub async fn upload_part(
        &self,
        key: &str,
        upload: &str,
        number: i32,
        body: Bytes,
        md5: Option<[u8; 16]>,
    ) -> Result<CompletedPart, StoreError> {
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .part_number(number)
            .set_content_md5(md5.map(aws_smithy_types::base64::encode))
            .body(ByteStream::from(body));
        let out = if md5.is_some() {
            req.customize().disable_payload_signing().send().await
        } else {
            req.send().await
        }
        .map_err(|e| self.err(e, "UploadPart", key))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
            .set_checksum_crc32_c(out.checksum_crc32_c().map(str::to_string))
            .set_checksum_crc64_nvme(out.checksum_crc64_nvme().map(str::to_string))
            .set_checksum_sha1(out.checksum_sha1().map(str::to_string))
            .set_checksum_sha256(out.checksum_sha256().map(str::to_string))
            .build())
    }

    /// Copies bytes `range` (inclusive) of `from` in this bucket as part `number`.
    pub async fn upload_part_copy(
        &self,
        from: &str,
        to: &str,
        upload: &str,
        number: i32,
        range: (u64, u64),
    ) -> Result<CompletedPart, StoreError> {
        let out = self
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(to)
            .upload_id(upload)
            .part_number(number)
            .copy_source(self.copy_source(from))
            .copy_source_range(format!("bytes={}-{}", range.0, range.1))
            .send()
            .await
            .map_err(|e| self.err(e, "UploadPartCopy", from))?;
        let r = out.copy_part_result();
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(r.and_then(|r| r.e_tag()).map(str::to_string))
            .set_checksum_crc32(r.and_then(|r| r.checksum_crc32()).map(str::to_string))
            .build())
    }

    /// Completes an upload from its parts (in any order); returns the ETag.
    pub async fn complete_upload(
        &self,
        key: &str,
        upload: &str,
        mut parts: Vec<CompletedPart>,
    ) -> Result<String, StoreError> {
        parts.sort_by_key(|p| p.part_number());
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
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

    /// Aborts an upload; a failure is only logged (the bucket's lifecycle
    /// rules or the next prune remove what is left).
    pub async fn abort_upload(&self, key: &str, upload: &str) {
        if let Err(e) = self.try_abort_upload(key, upload).await {
            tracing::warn!(key, error = %e, "could not abort a multipart upload; the bucket's lifecycle or a later prune removes it");
        }
    }

    pub async fn try_abort_upload(&self, key: &str, upload: &str) -> Result<(), StoreError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .send()
            .await
            .map_err(|e| self.err(e, "AbortMultipartUpload", key))?;
        Ok(())
    }

    /// Aborts an upload from a destructor: in the background, best effort.
    pub fn abort_upload_detached(&self, key: &str, upload: String) {
        let this = self.clone();
        let key = key.to_string();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = this.try_abort_upload(&key, &upload).await;
            });
        }
    }

    /// Every unfinished multipart upload under `prefix`.
    pub async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, StoreError> {
        let mut all = Vec::new();
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
                if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                    all.push(PendingUpload {
                        key: key.to_string(),
                        upload_id: id.to_string(),
                        initiated: u
                            .initiated()
                            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0)),
                    });
                }
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_string);
            id_marker = out.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(all)
    }
}

/// Memory budget permits are counted in KiB.
const PERMIT_BYTES: u64 = 1024;

/// A shared bound on the bytes all transfers in flight hold at once.
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
    pub async fn take(&self, bytes: u64) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let want = bytes.div_ceil(PERMIT_BYTES).clamp(1, u64::from(self.total)) as u32;
        // The semaphore is never closed, so this only fails if that changes.
        self.permits.acquire_many(want).await.ok()
    }
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

    #[tokio::test]
    async fn the_memory_budget_bounds_what_is_held_at_once() {
        let budget = MemoryBudget::new(10 * 1024);
        let a = budget.take(6 * 1024).await;
        assert!(a.is_some());
        // 6 KiB more does not fit while the first 6 KiB are held.
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.take(6 * 1024)).await;
        assert!(waiting.is_err());
        drop(a);
        assert!(budget.take(6 * 1024).await.is_some());
        // More than the whole budget takes all of it rather than waiting forever.
        assert!(budget.take(1 << 30).await.is_some());
    }

    /// Serves every request one GetObject answer: `body`, announcing
    /// `crc32` as the object's stored checksum.
    async fn serve_object(body: &'static [u8], crc32: u32) -> String {
        use md5::Digest;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut req = vec![0u8; 8192];
                let _ = sock.read(&mut req).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"{}\"\r\nx-amz-checksum-crc32: {}\r\nx-amz-checksum-type: FULL_OBJECT\r\nConnection: close\r\n\r\n",
                    body.len(),
                    hex::encode(md5::Md5::digest(body)),
                    aws_smithy_types::base64::encode(crc32.to_be_bytes())
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body).await;
            }
        });
        format!("http://{addr}")
    }

    fn config(endpoint: String) -> S3Config {
        S3Config {
            bucket: "b".into(),
            prefix: String::new(),
            endpoint: Some(endpoint),
            region: "garage".into(),
            path_style: true,
            credentials: Some(crate::config::S3Credentials {
                access_key_id: "k".into(),
                secret_access_key: crate::secret::Secret::new("s".to_string()),
            }),
            part_size: 5 << 20,
            parts_in_flight: 1,
            object_lock: None,
            prune_credentials: None,
            ca_bundle: None,
        }
    }

    async fn read_all(get: Get) -> Result<Vec<u8>, String> {
        get.body
            .collect()
            .await
            .map(|b| b.into_bytes().to_vec())
            .map_err(|e| {
                // The reason is at the end of the chain ("streaming error" on top).
                let mut text = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    text.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                text
            })
    }

    /// The media copies skip their own MD5 when a GET is `verified`: the
    /// SDK must then really check the body against the stored checksum.
    #[tokio::test]
    async fn a_stored_checksum_is_checked_against_the_body_read() {
        let body: &'static [u8] = b"the uploaded image";
        for checksums in [Checksums::Caller, Checksums::Sdk] {
            let good = serve_object(body, crc32fast::hash(body)).await;
            let c = S3Client::new(&config(good), checksums).await.unwrap();
            let got = c.get("k", 0).await.unwrap();
            assert!(got.verified);
            assert_eq!(read_all(got).await.unwrap(), body);
            let bad = serve_object(body, crc32fast::hash(b"another image")).await;
            let c = S3Client::new(&config(bad), checksums).await.unwrap();
            let got = c.get("k", 0).await.unwrap();
            assert!(got.verified);
            let err = read_all(got).await.unwrap_err();
            assert!(err.to_lowercase().contains("checksum"), "{err}");
        }
    }

    #[test]
    fn part_level_checksums_are_not_full_object_ones() {
        assert!(is_part_level("mOP34g==-3"));
        assert!(!is_part_level("mOP34g=="));
        assert!(!is_part_level("a-b"));
    }

    #[test]
    fn body_retries_back_off() {
        assert!(body_backoff(2) > body_backoff(1));
        const { assert!(BODY_ATTEMPTS >= 2) };
    }
}
